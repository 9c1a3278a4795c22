//! End-to-end test of `hv trace view`: a synthetic trace file (no KVM needed) is served by the
//! real binary on a free port, and trace-viewer/web/test/view.test.mjs drives the page in
//! headless Chromium (playwright-core): tracks, drawing, search, selection, zoom and pan; then
//! SIGINT stops the viewer.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hv_link::trace::{RecordKind, TraceHeader, TracePartition, TraceRecord, TraceWriter};

/// Safety net for the server's start and the browser run; no assertion is about speed.
const GUARD: Duration = Duration::from_secs(180);

const CHROMIUM: &str = "/usr/bin/chromium";

fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("trace-viewer/web")
}

/// Kills the child when the test ends, however it ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rec(t: u64, partition: u32, vcpu: u16, kind: RecordKind, a: u64, b: u64) -> TraceRecord {
    TraceRecord {
        timestamp: t,
        kind: kind as u16,
        vcpu,
        partition,
        a,
        b,
    }
}

/// System `viewtest`: `alpha` (1 vCPU) and `beta` (2 vCPUs), 1 ms of 100 µs periods on each
/// vCPU (80 µs in the guest, then halted), and IRQ 32 raised, injected and EOId on alpha and
/// beta's vCPU 0 every period.
fn write_trace(path: &Path) {
    let header = TraceHeader {
        system: "viewtest".into(),
        partitions: vec![
            TracePartition {
                id: 0,
                name: "alpha".into(),
                vcpus: 1,
                image: "alpha.elf".into(),
            },
            TracePartition {
                id: 1,
                name: "beta".into(),
                vcpus: 2,
                image: "beta.elf".into(),
            },
        ],
        ..TraceHeader::default()
    };
    let mut records = Vec::new();
    for (partition, vcpu) in [(0, 0), (1, 0), (1, 1)] {
        for period in 0..10u64 {
            let t = 1_000_000 + period * 100_000 + u64::from(vcpu) * 3_000;
            records.push(rec(t, partition, vcpu, RecordKind::VmEntry, 0, 0));
            if vcpu == 0 {
                records.push(rec(
                    t + 5_000,
                    partition,
                    0,
                    RecordKind::IrqRaise,
                    32,
                    t + 4_000,
                ));
                records.push(rec(t + 6_000, partition, 0, RecordKind::IrqInject, 32, 0));
                records.push(rec(t + 9_000, partition, 0, RecordKind::IrqEoi, 32, 0));
            }
            records.push(rec(
                t + 80_000,
                partition,
                vcpu,
                RecordKind::VmExit,
                12,
                0x1000,
            ));
            records.push(rec(t + 80_000, partition, vcpu, RecordKind::Halt, 0, 0));
            records.push(rec(t + 99_000, partition, vcpu, RecordKind::Wake, 0, 0));
        }
    }
    // One device-model request after the periods: beta vCPU 1's access, served by alpha.
    records.extend([
        rec(2_100_000, 1, 1, RecordKind::ModelRequest, 7, 8),
        rec(2_110_000, 0, 0, RecordKind::ModelReceive, 7, 8),
        rec(2_130_000, 0, 0, RecordKind::ModelRespond, 7, 42),
        rec(2_140_000, 1, 1, RecordKind::ModelReply, 7, 40_000),
    ]);
    records.sort_by_key(|r| r.timestamp);
    let file = std::fs::File::create(path).expect("create the trace file");
    let mut writer = TraceWriter::new(file, &header).expect("write the header");
    writer.write_batch(&records).expect("write the records");
    writer.finish().expect("finish the trace file");
}

/// Starts `hv trace view FILE --port 0` and returns it with the URL it printed.
fn start_viewer(file: &Path) -> (KillOnDrop, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hv"))
        .args(["trace", "view"])
        .arg(file)
        .args(["--port", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hv trace view");
    let stderr = child.stderr.take().expect("piped stderr");
    let child = KillOnDrop(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[hv] {line}");
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + GUARD;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(at) = line.find("http://") {
                    assert!(
                        line.starts_with("hv: trace viewer for viewtest at http://127.0.0.1:"),
                        "{line}"
                    );
                    assert!(line.ends_with("; Ctrl-C stops"), "{line}");
                    let url = line[at..].split_whitespace().next().unwrap_or_default();
                    return (child, url.to_owned());
                }
                seen.push(line);
            }
            Err(_) => panic!("hv trace view printed no URL; its stderr: {seen:?}"),
        }
    }
}

#[test]
fn trace_view_page_works_in_headless_chromium() {
    let script = web_dir().join("test/view.test.mjs");
    let playwright = web_dir().join("node_modules/playwright-core");
    let missing: Vec<String> = [
        (!Path::new(CHROMIUM).exists()).then(|| format!("{CHROMIUM} (apt-get install chromium)")),
        (!playwright.exists()).then(|| {
            format!(
                "{} (npm ci --prefix trace-viewer/web)",
                playwright.display()
            )
        }),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !missing.is_empty() {
        eprintln!(
            "SKIPPED trace_view_page_works_in_headless_chromium: missing {}",
            missing.join(" and ")
        );
        return;
    }

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("view.hvt");
    write_trace(&file);
    let (viewer, url) = start_viewer(&file);

    let started = Instant::now();
    let mut node = Command::new("node")
        .arg(&script)
        .arg(&url)
        .current_dir(web_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run node (is Node.js installed?)");
    // Read both pipes on threads so that neither can fill up and stall the test.
    let pipe = |r: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut text);
            }
            text
        })
    };
    let out = pipe(node.stdout.take().map(|s| Box::new(s) as _));
    let err = pipe(node.stderr.take().map(|s| Box::new(s) as _));
    let status = loop {
        if let Some(status) = node.try_wait().expect("wait for node") {
            break Some(status);
        }
        if started.elapsed() > GUARD {
            let _ = node.kill();
            let _ = node.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    eprintln!(
        "node test/view.test.mjs took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    match status {
        Some(s) if s.success() => eprint!("{out}"),
        Some(s) => panic!("the browser test failed ({s}):\n{out}{err}"),
        None => panic!("the browser test did not finish in {GUARD:?}:\n{out}{err}"),
    }
    assert!(out.contains("all checks passed"), "{out}{err}");

    // Ctrl-C stops the viewer, and it exits successfully.
    let mut viewer = viewer;
    let killed = Command::new("kill")
        .args(["-INT", &viewer.0.id().to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
    let stopped = Instant::now();
    let status = loop {
        if let Some(status) = viewer.0.try_wait().expect("wait for hv") {
            break status;
        }
        assert!(stopped.elapsed() < GUARD, "hv trace view ignored SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "hv trace view after SIGINT: {status}");
}
