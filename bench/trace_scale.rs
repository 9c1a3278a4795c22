//! Benchmark: trace exports at scale. For synthetic traces of 1 M and 10 M records (`hv trace
//! synth`, a simulated 4-partition system laid out like a recorded trace), the time, throughput
//! (records/s), peak memory (the child's rusage) and output size of `hv trace export` in each
//! format, against the peer measured in the same run: `hv trace stats` on the same file, one
//! pass over the records. Goal: every exporter within 2x of that pass, memory flat (≤ 200 MiB)
//! whatever the length.
//!
//! Run: `cargo bench --bench trace_scale` (sizes: `TRACE_SCALE_EVENTS=1000000,10000000`, the
//! default; files go to a temporary directory, about 1 GiB at 10 M).

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

/// Time, peak RSS (bytes) of `hv ARGS` (stdout discarded).
fn run(args: &[&OsStr]) -> (f64, u64) {
    let start = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_hv"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run hv");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: `rusage` is plain integers, for which all-zero bytes are a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child; `status` and `usage` are valid for writes. The child is
    // reaped here (std's `Child` is not waited on afterwards).
    let got = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(got, pid, "wait4: {}", std::io::Error::last_os_error());
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "hv {args:?} failed"
    );
    drop(child);
    (secs, usage.ru_maxrss as u64 * 1024)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn bench(dir: &Path, events: u64) {
    let file = dir.join(format!("synth-{events}.hvt"));
    let (secs, _) = run(&[
        "trace".as_ref(),
        "synth".as_ref(),
        "--events".as_ref(),
        events.to_string().as_ref(),
        "-o".as_ref(),
        file.as_os_str(),
    ]);
    let size = std::fs::metadata(&file).expect("synthetic trace").len();
    println!(
        "\n{events} records: {:.0} MiB trace, generated in {secs:.2} s",
        mib(size)
    );
    println!(
        "{:<16} {:>8} {:>12} {:>10} {:>10} {:>9}",
        "", "time s", "records/s", "peak MiB", "out MiB", "vs stats"
    );
    let (stats_secs, stats_rss) = run(&["trace".as_ref(), "stats".as_ref(), file.as_os_str()]);
    println!(
        "{:<16} {stats_secs:>8.2} {:>12.0} {:>10.1} {:>10} {:>9}",
        "stats (peer)",
        events as f64 / stats_secs,
        mib(stats_rss),
        "-",
        "1.00x"
    );
    let mut worst: f64 = 0.0;
    for format in ["csv", "perfetto-json", "perfetto-proto"] {
        let out = dir.join(format!("out.{format}"));
        let (secs, rss) = run(&[
            "trace".as_ref(),
            "export".as_ref(),
            file.as_os_str(),
            "--format".as_ref(),
            format.as_ref(),
            "-o".as_ref(),
            out.as_os_str(),
        ]);
        let out_size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
        let _ = std::fs::remove_file(&out);
        let ratio = secs / stats_secs;
        worst = worst.max(ratio);
        println!(
            "{format:<16} {secs:>8.2} {:>12.0} {:>10.1} {:>10.0} {ratio:>8.2}x",
            events as f64 / secs,
            mib(rss),
            mib(out_size)
        );
    }
    println!("worst exporter / stats: {worst:.2}x (goal <= 2x); peak memory goal <= 200 MiB");
    let _ = std::fs::remove_file(&file);
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken from the command line.
    let sizes: Vec<u64> = std::env::var("TRACE_SCALE_EVENTS")
        .unwrap_or_else(|_| "1000000,10000000".to_owned())
        .split(',')
        .map(|s| s.trim().parse().expect("TRACE_SCALE_EVENTS: numbers"))
        .collect();
    let dir = tempfile::tempdir().expect("temporary directory");
    for events in sizes {
        bench(dir.path(), events);
    }
}
