//! `hv run` refuses what it cannot honour: a gdb port plan that does not fit below 65536
//! (from `--gdb-port` or the description's `gdb_base_port`) before anything starts, and an
//! explicit `unix:` link whose directory does not exist (no directory is created); and errors
//! name their cause once.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{kvm_lock, kvm_or_skip, system_file};

/// `control` (1 vCPU) and `worker` (2 vCPUs): the plan's top port is BASE+100+16+1.
const PAIR: &str = r#"
[[partition]]
name = "control"
image = "{guests}/control.elf"

[[partition]]
name = "worker"
image = "{guests}/worker.elf"
memory = "32M"
vcpus = 2
"#;

fn hv(args: &[&str]) -> Output {
    Command::new("timeout")
        .args(["--kill-after=5", "120"])
        .arg(env!("CARGO_BIN_EXE_hv"))
        .args(args)
        .output()
        .expect("run hv")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_gdb_port_plan_beyond_65535_is_refused_before_anything_starts() {
    // Host-only: both refusals come before the system is built (no KVM needed).
    let system = system_file(PAIR);
    let path = system.path.to_str().unwrap();
    for base in ["65535", "65419"] {
        let out = hv(&["run", path, "--no-console", "--gdb-port", base]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "--gdb-port {base}: {err}");
        assert!(
            err.contains(&format!("--gdb-port {base}: the gdb port plan"))
                && err.contains("use a base port of at most 65418"),
            "{err}"
        );
        assert!(!err.contains("hv: running"), "the system started: {err}");
    }
    let out = hv(&["run", path, "--no-console", "--gdb-port", "0"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    let toml = format!("[agent]\ngdb_base_port = 65535\n{PAIR}");
    let system = system_file(&toml);
    let out = hv(&["run", system.path.to_str().unwrap(), "--no-console"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("GDB port plan does not fit: it needs ports 65535..=65652")
            && err.contains("system.toml:2:17"),
        "{err}"
    );
}

#[test]
fn an_explicit_link_in_a_missing_directory_fails_and_creates_nothing() {
    if !kvm_or_skip("an_explicit_link_in_a_missing_directory_fails_and_creates_nothing") {
        return;
    }
    let _kvm = kvm_lock();
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no/such/dir");
    let link = format!("unix:{}", missing.join("x.sock").display());
    let base = common::free_gdb_base(&[1, 2]).to_string();
    let system = system_file(PAIR);
    let from_flag = hv(&[
        "run",
        system.path.to_str().unwrap(),
        "--no-console",
        "--time-limit",
        "30",
        "--gdb-port",
        &base,
        "--link",
        &link,
    ]);
    let toml = format!("[agent]\nlink = \"{link}\"\ngdb_base_port = {base}\n{PAIR}");
    let described = system_file(&toml);
    let from_description = hv(&[
        "run",
        described.path.to_str().unwrap(),
        "--no-console",
        "--time-limit",
        "30",
    ]);
    for (how, out) in [("--link", from_flag), ("[agent] link", from_description)] {
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{how}: {err}");
        assert!(
            err.contains("cannot start the debug agent") && err.contains("no such directory"),
            "{how}: {err}"
        );
        assert!(
            !exists(&tmp.path().join("no")),
            "{how}: a directory was created"
        );
    }
}

fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// An error names its cause once: `{e:#}` chains must not repeat the OS error (it was printed
/// twice for a missing link socket).
#[test]
fn errors_name_their_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let link = format!("unix:{}", dir.path().join("nope.sock").display());
    let trace = dir.path().join("t.hvt");
    let trace = trace.to_str().unwrap();
    for args in [
        vec!["console", "--connect", &link, "--batch"],
        vec![
            "trace",
            "record",
            trace,
            "--connect",
            &link,
            "--duration",
            "1",
        ],
        vec!["gdb-bridge", "--connect", &link],
    ] {
        let out = hv(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(
            err.matches("No such file or directory").count(),
            1,
            "{args:?}: {err}"
        );
    }
}
