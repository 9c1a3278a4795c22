//! Peak memory of `hv trace export` (every format) and `hv trace stats` on a synthetic trace
//! larger than the bound: measured from the exporting process's own rusage (`wait4`). In a test
//! binary of its own, so that the harness process stays small (a child's peak includes what its
//! parent had mapped when it was spawned; the test checks that this is little).

use std::process::Command;

fn hv() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hv"))
}

/// This process's own peak resident memory in bytes (VmHWM).
fn own_peak() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status");
    kib * 1024
}

/// Peak resident memory of `hv ARGS` in bytes (from the rusage `wait4` returns).
fn peak_rss(args: &[&std::ffi::OsStr]) -> u64 {
    let child = hv()
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run hv");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: `rusage` is plain integers, for which all-zero bytes are a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; the child is reaped here (std's `Child` is not waited on afterwards).
    let got = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(got, pid, "wait4: {}", std::io::Error::last_os_error());
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "hv {args:?} failed ({status:#x})"
    );
    drop(child);
    // ru_maxrss is in KiB on Linux.
    usage.ru_maxrss as u64 * 1024
}

#[test]
fn exports_and_stats_stream_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("synth.hvt");
    let synth: Vec<&std::ffi::OsStr> = vec![
        "trace".as_ref(),
        "synth".as_ref(),
        "--events".as_ref(),
        "2000000".as_ref(),
        "-o".as_ref(),
        file.as_os_str(),
    ];
    peak_rss(&synth);
    let size = std::fs::metadata(&file).unwrap().len();
    // Far above what streaming needs (about 10 MiB), below what holding the records would.
    let bound = (size * 3 / 4).min(200 << 20);
    let mut report = Vec::new();
    for (name, args) in [
        ("stats", vec!["trace", "stats"]),
        ("csv", vec!["trace", "export", "--format", "csv"]),
        (
            "perfetto-json",
            vec!["trace", "export", "--format", "perfetto-json"],
        ),
        (
            "perfetto-proto",
            vec!["trace", "export", "--format", "perfetto-proto"],
        ),
    ] {
        let out = dir.path().join(format!("out.{name}"));
        let mut argv: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
        argv.push(file.as_os_str());
        if name != "stats" {
            argv.push("-o".as_ref());
            argv.push(out.as_os_str());
        }
        let parent = own_peak();
        assert!(
            parent < bound / 4,
            "the test process itself peaked at {} MiB",
            parent >> 20
        );
        let rss = peak_rss(&argv);
        report.push(format!("{name}: {} MiB", rss >> 20));
        assert!(
            rss < bound,
            "{name} peaked at {} MiB on a {} MiB trace (bound {} MiB)",
            rss >> 20,
            size >> 20,
            bound >> 20
        );
    }
    eprintln!(
        "peak RSS on a {} MiB trace: {}",
        size >> 20,
        report.join(", ")
    );
}
