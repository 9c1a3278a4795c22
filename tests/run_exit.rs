//! End-to-end tests of how `hv run` ends: every partition crashed, a crash beside an exit, an
//! exit with a nonzero code, a clean exit, Ctrl-C (SIGINT) and the time limit. Each checks the
//! exit status (3 when a partition crashed or exited nonzero), the crash detail line and that
//! every line the guests printed reached stdout, including a last line without a newline.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{kvm_lock, kvm_or_skip};

const CRASHER: &str = r#"
[[partition]]
name = "crasher"
image = "{guests}/crasher.elf"
"#;

/// A partition running `exiter`, which exits with the number its name ends in.
fn exiter(name: &str) -> String {
    format!("\n[[partition]]\nname = \"{name}\"\nimage = \"{{guests}}/exiter.elf\"\n")
}

const SPIN: &str = r#"
[[partition]]
name = "spin"
image = "{guests}/spin.elf"
"#;

/// `hv run` on `toml` without a gdb bridge, plus `extra` arguments.
fn hv_run(file: &common::SystemFile, extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hv"));
    command
        .args(["run", file.path.to_str().unwrap(), "--no-gdb-bridge"])
        .args(extra)
        .stdin(Stdio::null());
    command
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The crash of `crasher`: its line on stdout and the detail line with the registers.
fn assert_crash_reported(out: &Output) {
    let (so, se) = (stdout(out), stderr(out));
    assert!(
        so.lines().any(|l| l == "[crasher] crasher: about to crash"),
        "stdout:\n{so}\nstderr:\n{se}"
    );
    assert!(
        se.lines().any(|l| l
            .starts_with("hv: partition crasher crashed: triple fault on vCPU 0 (rip=0x")),
        "no crash detail line:\n{se}"
    );
    assert!(
        se.contains("crashed or exited with a nonzero code: crasher"),
        "{se}"
    );
    assert_eq!(out.status.code(), Some(3), "{se}");
}

/// Every line `exiter` printed as partition `name`, which exited with `code`.
fn assert_exiter_lines(out: &Output, name: &str, code: i64) {
    let so = stdout(out);
    let mut expected: Vec<String> = (1..=40)
        .map(|i| format!("[{name}] exiter: line {i} of 40"))
        .collect();
    expected.push(format!("[{name}] exiter: exit {code}"));
    let got: Vec<&str> = so
        .lines()
        .filter(|l| l.starts_with(&format!("[{name}] ")))
        .collect();
    assert_eq!(got, expected, "stderr:\n{}", stderr(out));
    let se = stderr(out);
    assert!(
        se.contains(&format!("hv: partition {name} exited with code {code}")),
        "{se}"
    );
}

#[test]
fn every_partition_crashed_ends_with_status_3_and_the_crash_detail() {
    if !kvm_or_skip("every_partition_crashed_ends_with_status_3_and_the_crash_detail") {
        return;
    }
    let _kvm = kvm_lock();
    let file = common::system_file(CRASHER);
    // The crash used to race the end of the run: exit 0 and lost lines in most runs.
    for round in 0..3 {
        let out = hv_run(&file, &[]).output().expect("run hv");
        assert_crash_reported(&out);
        let se = stderr(&out);
        assert!(
            se.contains("(no partition is left running)"),
            "round {round}: {se}"
        );
        assert!(
            se.contains("hv: running system (1 partition: crasher)"),
            "round {round}: {se}"
        );
    }
}

#[test]
fn a_crash_beside_a_clean_exit_ends_with_status_3() {
    if !kvm_or_skip("a_crash_beside_a_clean_exit_ends_with_status_3") {
        return;
    }
    let _kvm = kvm_lock();
    let file = common::system_file(&format!("{CRASHER}{}", exiter("exiter")));
    let out = hv_run(&file, &[]).output().expect("run hv");
    assert_crash_reported(&out);
    assert_exiter_lines(&out, "exiter", 0);
    assert!(
        stderr(&out).contains("crashed or exited with a nonzero code: crasher\n"),
        "only the crasher failed:\n{}",
        stderr(&out)
    );
}

#[test]
fn an_exit_with_a_nonzero_code_ends_with_status_3_and_a_clean_one_with_0() {
    if !kvm_or_skip("an_exit_with_a_nonzero_code_ends_with_status_3_and_a_clean_one_with_0") {
        return;
    }
    let _kvm = kvm_lock();
    let file = common::system_file(&exiter("exiter-5"));
    let out = hv_run(&file, &[]).output().expect("run hv");
    assert_exiter_lines(&out, "exiter-5", 5);
    let se = stderr(&out);
    assert!(
        se.contains("crashed or exited with a nonzero code: exiter-5"),
        "{se}"
    );
    assert_eq!(out.status.code(), Some(3), "{se}");

    let file = common::system_file(&exiter("exiter"));
    let out = hv_run(&file, &[]).output().expect("run hv");
    assert_exiter_lines(&out, "exiter", 0);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn the_time_limit_ends_with_status_3_after_a_crash() {
    if !kvm_or_skip("the_time_limit_ends_with_status_3_after_a_crash") {
        return;
    }
    let _kvm = kvm_lock();
    let file = common::system_file(&format!("{CRASHER}{SPIN}"));
    let out = hv_run(&file, &["--time-limit", "3"])
        .output()
        .expect("run hv");
    assert_crash_reported(&out);
    assert!(
        stdout(&out).contains("[spin] spin: ready"),
        "{}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains("(time limit reached)"),
        "{}",
        stderr(&out)
    );
}

/// Runs `toml` until `ready` appears on stderr, then sends SIGINT; returns the output.
fn interrupted(file: &common::SystemFile, ready: &str) -> Output {
    let mut child = hv_run(file, &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run hv");
    let mut out_pipe = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = out_pipe.read_to_end(&mut text);
        text
    });
    let err_pipe = child.stderr.take().unwrap();
    let (seen_tx, seen_rx) = mpsc::channel();
    let needle = ready.to_owned();
    let err_reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        for line in BufReader::new(err_pipe).lines().map_while(Result::ok) {
            if line.contains(&needle) {
                let _ = seen_tx.send(());
            }
            text.extend_from_slice(line.as_bytes());
            text.push(b'\n');
        }
        text
    });
    let seen = seen_rx.recv_timeout(Duration::from_secs(300));
    // SAFETY: kill only sends a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().expect("wait for hv");
    let out = Output {
        status,
        stdout: reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    };
    assert!(seen.is_ok(), "never saw {ready:?}:\n{}", stderr(&out));
    out
}

#[test]
fn ctrl_c_ends_with_status_3_after_a_crash_and_0_without() {
    if !kvm_or_skip("ctrl_c_ends_with_status_3_after_a_crash_and_0_without") {
        return;
    }
    let _kvm = kvm_lock();
    let file = common::system_file(&format!("{CRASHER}{SPIN}"));
    let out = interrupted(&file, "hv: partition crasher crashed");
    assert_crash_reported(&out);
    assert!(stderr(&out).contains("(interrupted)"), "{}", stderr(&out));

    let file = common::system_file(&format!("{SPIN}{}", exiter("exiter")));
    let out = interrupted(&file, "hv: partition exiter exited");
    assert_exiter_lines(&out, "exiter", 0);
    assert!(stderr(&out).contains("(interrupted)"), "{}", stderr(&out));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}
