//! Benchmark: trace exports at scale. For synthetic traces of 1 M and 10 M records (`hv trace
//! synth`, a simulated 4-partition system laid out like a recorded trace), the time, throughput
//! (records/s), peak memory (the child's rusage) and output size of `hv trace export` in each
//! format, against the peer measured in the same run: `hv trace stats` on the same file, one
//! pass over the records. Goal: every exporter within 2x of that pass, memory flat (≤ 200 MiB)
//! whatever the length.
//!
//! Each command runs `TRACE_SCALE_ROUNDS` times (default 3), the peer and the exporters taking
//! turns in each round; the best wall time and the CPU time (user + system) of that run are
//! shown — on a shared machine the CPU time is the steadier of the two.
//!
//! Run: `cargo bench --bench trace_scale` (sizes: `TRACE_SCALE_EVENTS=1000000,10000000`, the
//! default; files go to a temporary directory, about 1 GiB at 10 M).

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

/// One run of a command.
#[derive(Debug, Clone, Copy)]
struct Run {
    /// Wall time, s.
    wall: f64,
    /// User + system CPU time, s.
    cpu: f64,
    /// Peak RSS, bytes.
    rss: u64,
}

/// Runs `hv ARGS` (stdout discarded).
fn run(args: &[&OsStr]) -> Run {
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
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Run {
        wall: secs,
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
        rss: usage.ru_maxrss as u64 * 1024,
    }
}

/// The best of `rounds` runs (by wall time).
fn best(runs: &[Run]) -> Run {
    *runs
        .iter()
        .min_by(|a, b| a.wall.total_cmp(&b.wall))
        .expect("at least one round")
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn bench(dir: &Path, events: u64, rounds: usize) {
    let file = dir.join(format!("synth-{events}.hvt"));
    let synth = run(&[
        "trace".as_ref(),
        "synth".as_ref(),
        "--events".as_ref(),
        events.to_string().as_ref(),
        "-o".as_ref(),
        file.as_os_str(),
    ]);
    let size = std::fs::metadata(&file).expect("synthetic trace").len();
    println!(
        "\n{events} records: {:.0} MiB trace, generated in {:.2} s; best of {rounds} runs each",
        mib(size),
        synth.wall
    );
    const FORMATS: [&str; 3] = ["csv", "perfetto-json", "perfetto-proto"];
    let mut stats_runs = Vec::new();
    let mut export_runs: Vec<Vec<Run>> = vec![Vec::new(); FORMATS.len()];
    let mut out_sizes = [0u64; FORMATS.len()];
    for _ in 0..rounds {
        stats_runs.push(run(&["trace".as_ref(), "stats".as_ref(), file.as_os_str()]));
        for (i, format) in FORMATS.iter().enumerate() {
            let out = dir.join(format!("out.{format}"));
            export_runs[i].push(run(&[
                "trace".as_ref(),
                "export".as_ref(),
                file.as_os_str(),
                "--format".as_ref(),
                format.as_ref(),
                "-o".as_ref(),
                out.as_os_str(),
            ]));
            out_sizes[i] = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
            let _ = std::fs::remove_file(&out);
        }
    }
    println!(
        "{:<16} {:>8} {:>8} {:>12} {:>9} {:>8} {:>10} {:>9}",
        "", "wall s", "cpu s", "records/s", "peak MiB", "out MiB", "vs stats", "(cpu)"
    );
    let peer = best(&stats_runs);
    let row = |name: &str, r: Run, out: Option<u64>| {
        println!(
            "{name:<16} {:>8.2} {:>8.2} {:>12.0} {:>9.1} {:>8} {:>9.2}x {:>8.2}x",
            r.wall,
            r.cpu,
            events as f64 / r.wall,
            mib(r.rss),
            out.map_or("-".to_owned(), |b| format!("{:.0}", mib(b))),
            r.wall / peer.wall,
            r.cpu / peer.cpu
        );
    };
    row("stats (peer)", peer, None);
    let mut worst: f64 = 0.0;
    let mut peak: u64 = peer.rss;
    for (i, format) in FORMATS.iter().enumerate() {
        let r = best(&export_runs[i]);
        worst = worst.max(r.wall / peer.wall);
        peak = peak.max(export_runs[i].iter().map(|r| r.rss).max().unwrap_or(0));
        row(format, r, Some(out_sizes[i]));
    }
    println!(
        "worst exporter / stats: {worst:.2}x wall (goal <= 2x); peak memory {:.1} MiB (goal <= 200 MiB)",
        mib(peak)
    );
    let _ = std::fs::remove_file(&file);
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken from the command line.
    let sizes: Vec<u64> = std::env::var("TRACE_SCALE_EVENTS")
        .unwrap_or_else(|_| "1000000,10000000".to_owned())
        .split(',')
        .map(|s| s.trim().parse().expect("TRACE_SCALE_EVENTS: numbers"))
        .collect();
    let rounds: usize = std::env::var("TRACE_SCALE_ROUNDS")
        .ok()
        .map_or(3, |r| r.parse().expect("TRACE_SCALE_ROUNDS: a number"));
    let dir = tempfile::tempdir().expect("temporary directory");
    for events in sizes {
        bench(dir.path(), events, rounds.max(1));
    }
}
