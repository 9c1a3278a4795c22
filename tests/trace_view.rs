//! End-to-end tests of `hv trace view` (no KVM needed): synthetic trace files are served by the
//! real binary on a free port.
//!
//! - A small trace: trace-viewer/web/test/view.test.mjs drives the page in headless Chromium
//!   (playwright-core): tracks, drawing, search, selection, zoom and pan; then SIGINT stops it.
//! - A trace of a million records (trace_viewer::synth): the server's range answers are checked
//!   against a full pass over the records (item counts per track over the whole trace, exact
//!   items in windows, a bounded number of drawables at every zoom), its peak memory (VmHWM,
//!   read by the test) stays under a generous bound, and the index is reused by a second viewer;
//!   then trace-viewer/web/test/large.test.mjs zooms the page from the whole trace to one exit
//!   and back, searches and selects.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use hv_link::trace::{
    RecordKind, TraceHeader, TracePartition, TraceReader, TraceRecord, TraceWriter,
};

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
    start_viewer_noting(file).0
}

/// Starts `hv trace view FILE --port 0`: it with its URL, and the lines it printed before.
fn start_viewer_noting(file: &Path) -> ((KillOnDrop, String), Vec<String>) {
    start_viewer_with(&[file.as_os_str()])
}

/// Starts `hv trace view ARGS --port 0`: it with its URL, and the lines it printed before.
fn start_viewer_with(args: &[&std::ffi::OsStr]) -> ((KillOnDrop, String), Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hv"))
        .args(["trace", "view"])
        .args(args)
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
                        (line.starts_with("hv: trace viewer for ")
                            || line.starts_with("hv: live trace viewer for "))
                            && line.contains(" at http://127.0.0.1:"),
                        "{line}"
                    );
                    assert!(line.ends_with("; Ctrl-C stops"), "{line}");
                    let url = line[at..].split_whitespace().next().unwrap_or_default();
                    return ((child, url.to_owned()), seen);
                }
                seen.push(line);
            }
            Err(_) => panic!("hv trace view printed no URL; its stderr: {seen:?}"),
        }
    }
}

/// What the browser tests need and is missing here (none: run them).
fn browser_missing() -> Vec<String> {
    let playwright = web_dir().join("node_modules/playwright-core");
    [
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
    .collect()
}

#[test]
fn trace_view_page_works_in_headless_chromium() {
    let missing = browser_missing();
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
    run_browser_script("test/view.test.mjs", &[&url]);

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

/// Runs `node SCRIPT ARGS...` in trace-viewer/web and fails the test when it fails.
fn run_browser_script(script: &str, args: &[&str]) {
    let started = Instant::now();
    let mut node = Command::new("node")
        .arg(script)
        .args(args)
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
        "node {script} took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    match status {
        Some(s) if s.success() => eprint!("{out}"),
        Some(s) => panic!("the browser test failed ({s}):\n{out}{err}"),
        None => panic!("the browser test did not finish in {GUARD:?}:\n{out}{err}"),
    }
    assert!(out.contains("all checks passed"), "{out}{err}");
}

// ---- a large trace ----------------------------------------------------------------------------

/// Records in the large trace.
const LARGE: u64 = 1_000_000;
/// The server's peak memory bound on it (the goal is 300 MiB on 10 M records).
const MAX_RSS_MIB: u64 = 300;

/// One item of the full pass: start, end (ns), name.
type RefItem = (u64, u64, String);

/// The items of every vCPU by a plain pass over all records in time order, the way the viewer
/// documents them: slices from entry to exit, halt to wake, debugger stop to resume, schedule
/// out to in, device request to reply or bus error (a `Lost` record drops what is open);
/// every other record an instant, named as the Perfetto export names it.
fn full_pass(file: &Path) -> (TraceHeader, HashMap<(u32, u16), Vec<RefItem>>) {
    let mut reader =
        TraceReader::new(std::io::BufReader::new(std::fs::File::open(file).unwrap())).unwrap();
    let mut records = Vec::new();
    while let Some(batch) = reader.next_batch().unwrap() {
        records.extend(batch);
    }
    records.sort_by_key(|r| r.timestamp);
    let mut open: HashMap<(u32, u16, &str), u64> = HashMap::new();
    let mut items: HashMap<(u32, u16), Vec<RefItem>> = HashMap::new();
    for r in &records {
        use RecordKind::*;
        let Some(kind) = r.kind() else { continue };
        let (t, key) = (r.timestamp, (r.partition, r.vcpu));
        let slice = match kind {
            VmEntry | VmExit => "guest",
            Halt | Wake => "halted",
            DebugStop | DebugResume => "stopped in debugger",
            ScheduleOut | ScheduleIn => "outside schedule window",
            ModelRequest | ModelReply | ModelBusError => "blocked on device",
            _ => "",
        };
        let list = items.entry(key).or_default();
        match kind {
            VmEntry | Halt | DebugStop | ScheduleOut | ModelRequest => {
                open.insert((r.partition, r.vcpu, slice), t);
            }
            VmExit | Wake | DebugResume | ScheduleIn | ModelReply | ModelBusError => {
                if let Some(start) = open.remove(&(r.partition, r.vcpu, slice)) {
                    list.push((start, t, slice.to_owned()));
                }
            }
            _ => {
                if kind == Lost {
                    open.retain(|(p, v, _), _| (*p, *v) != key);
                }
                let name = match kind {
                    IrqRaise => format!("raise {}", r.a),
                    IrqInject => format!("inject {}", r.a),
                    IrqEoi => format!("EOI {}", r.a),
                    IrqWithdraw => format!("withdraw {}", r.a),
                    Hypercall => hv_link::trace::hypercall_name(r.a)
                        .map_or_else(|| format!("hypercall {}", r.a), str::to_owned),
                    DeviceAccess => {
                        format!("{} {:#x}", if r.b & 1 == 1 { "write" } else { "read" }, r.a)
                    }
                    IpcSend => format!("IPC send {}", r.a),
                    IpcReceive => format!("IPC receive {}", r.a),
                    Marker => format!("marker {}", r.a),
                    StateChange => format!("state {}", hv_link::trace::vcpu_state_name(r.a)),
                    ModelReceive => format!("take request {}", r.a),
                    ModelRespond => format!("answer request {}", r.a),
                    Lost => format!("lost {}", r.a),
                    other => format!("{other:?}"),
                };
                list.push((t, t, name));
            }
        }
    }
    for list in items.values_mut() {
        list.sort_by_key(|i| i.0);
    }
    (reader.header().clone(), items)
}

/// GETs `path` from the viewer: the JSON body of a 200.
fn get_json(addr: SocketAddr, path: &str) -> serde_json::Value {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(GUARD)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read the answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    assert!(
        head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
        "{path}: {head}\n{body}"
    );
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// The process's peak resident memory in MiB (VmHWM).
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM in /proc/PID/status")
        / 1024
}

#[test]
fn a_million_records_answer_as_a_full_pass_in_bounded_memory_and_in_the_browser() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("large.hvt");
    let out = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
    let options = trace_viewer::synth::SynthOptions {
        events: LARGE,
        seed: 7,
    };
    trace_viewer::synth::write(out, options).expect("write the synthetic trace");
    let (header, reference) = full_pass(&file);

    let ((viewer, url), printed) = start_viewer_noting(&file);
    assert!(
        printed.iter().any(|l| l.contains("index built")),
        "{printed:?}"
    );
    let addr: SocketAddr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .expect("an address in the URL");
    let meta = get_json(addr, "/api/meta");
    assert_eq!(meta["system"], header.system);
    let tracks: Vec<(u32, u16)> = meta["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["partition"].as_u64().unwrap() as u32,
                t["vcpu"].as_u64().unwrap() as u16,
            )
        })
        .collect();
    let want: usize = header.partitions.iter().map(|p| p.vcpus as usize).sum();
    assert_eq!(tracks.len(), want);
    let refs: Vec<&[RefItem]> = tracks
        .iter()
        .map(|k| reference.get(k).map_or(&[][..], Vec::as_slice))
        .collect();
    let total: usize = refs.iter().map(|r| r.len()).sum();
    assert_eq!(meta["items"].as_u64(), Some(total as u64));
    let base = refs
        .iter()
        .filter_map(|r| r.first())
        .map(|i| i.0)
        .min()
        .unwrap();
    let end = refs
        .iter()
        .flat_map(|r| r.iter())
        .map(|i| i.1)
        .max()
        .unwrap();
    let duration = meta["duration_us"].as_f64().unwrap();
    assert_eq!(duration, (end - base) as f64 / 1e3);

    // The whole trace: per-column summaries whose counts add up to the full pass's.
    for px in [1200u64, 333] {
        let whole = get_json(addr, &format!("/api/range?from=0&to={duration}&px={px}"));
        for (t, answer) in whole["tracks"].as_array().unwrap().iter().enumerate() {
            let columns = answer["columns"].as_array().expect("a summary");
            assert!(columns.len() as u64 <= px);
            let sum: u64 = columns.iter().map(|c| c[1].as_u64().unwrap()).sum();
            assert_eq!(sum, refs[t].len() as u64, "track {t} at {px} px");
        }
    }
    // Windows of every size: exact answers list what the full pass has there; every answer is
    // bounded by the columns asked for.
    let mut exact_windows = 0;
    for (k, span_us) in [2.0, 20.0, 200.0, 2_000.0, 20_000.0, duration / 3.0]
        .into_iter()
        .enumerate()
    {
        let from = (duration - span_us) * (k as f64 + 0.5) / 7.0;
        let to = from + span_us;
        let px = 1000;
        let r = get_json(addr, &format!("/api/range?from={from}&to={to}&px={px}"));
        let (from_ns, to_ns) = (base + (from * 1e3) as u64, base + (to * 1e3) as u64);
        for (t, answer) in r["tracks"].as_array().unwrap().iter().enumerate() {
            if let Some(items) = answer["items"].as_array() {
                exact_windows += 1;
                assert!(items.len() <= 500, "{} items for {px} px", items.len());
                let want: Vec<(f64, String)> = refs[t]
                    .iter()
                    .filter(|i| i.1 >= from_ns && i.0 <= to_ns)
                    .map(|i| ((i.0 - base) as f64 / 1e3, i.2.clone()))
                    .collect();
                let got: Vec<(f64, String)> = items
                    .iter()
                    .map(|i| {
                        (
                            i["s"].as_f64().unwrap(),
                            i["n"].as_str().unwrap().to_owned(),
                        )
                    })
                    .collect();
                assert_eq!(got, want, "track {t}, window {from}..{to} µs");
            } else {
                let columns = answer["columns"].as_array().expect("items or columns");
                assert!(columns.len() <= px);
            }
        }
    }
    assert!(
        exact_windows >= tracks.len() * 3,
        "{exact_windows} exact answers"
    );

    // Search counts what the full pass counts.
    let needle = "ipc send";
    let matches = refs
        .iter()
        .flat_map(|r| r.iter())
        .filter(|i| i.2.to_lowercase().contains(needle))
        .count();
    assert!(matches > 0);
    let found = get_json(addr, "/api/search?q=IPC%20send&after=-1");
    assert_eq!(found["total"].as_u64(), Some(matches as u64));

    // The page, when a browser is here.
    let missing = browser_missing();
    if missing.is_empty() {
        run_browser_script(
            "test/large.test.mjs",
            &[&url, &total.to_string(), "IPC send", &matches.to_string()],
        );
    } else {
        eprintln!(
            "SKIPPED the browser part: missing {}",
            missing.join(" and ")
        );
    }
    let rss = peak_rss_mib(viewer.0.id());
    eprintln!("hv trace view peak RSS: {rss} MiB");
    assert!(rss <= MAX_RSS_MIB, "the viewer peaked at {rss} MiB");
    drop(viewer);

    // A second viewer reuses the index.
    let ((_again, _), printed) = start_viewer_noting(&file);
    assert!(
        printed.iter().any(|l| l.contains("index reused")),
        "{printed:?}"
    );
}

// ---- live ------------------------------------------------------------------------------------

/// POSTs to `path` with the given headers: status and body.
fn post(addr: SocketAddr, path: &str, headers: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(GUARD)).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 0\r\n{headers}\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read the answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status");
    (status, body.to_owned())
}

#[test]
fn the_live_view_follows_a_running_system_and_saves_it() {
    if !Path::new("/dev/kvm").exists() {
        eprintln!("SKIPPED the_live_view_follows_a_running_system_and_saves_it: no /dev/kvm");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("link.sock");
    let link = format!("unix:{}", socket.display());
    // The demo system, long enough for the test; killed when the test ends.
    let run = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_hv"))
            .args([
                "run",
                "--quiet",
                "--no-gdb-bridge",
                "--time-limit",
                "300",
                "--link",
            ])
            .arg(&link)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start hv run"),
    );
    let deadline = Instant::now() + GUARD;
    while !socket.exists() {
        assert!(Instant::now() < deadline, "hv run made no link socket");
        std::thread::sleep(Duration::from_millis(50));
    }
    let ((viewer, url), _) = start_viewer_with(&[
        "--live".as_ref(),
        "--connect".as_ref(),
        link.as_ref(),
        "--save-dir".as_ref(),
        dir.path().as_os_str(),
    ]);
    let addr: SocketAddr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .expect("an address in the URL");

    // Records arrive and the trace grows.
    let items = |m: &serde_json::Value| m["items"].as_u64().unwrap_or(0);
    let first = loop {
        let m = get_json(addr, "/api/meta");
        assert_eq!(m["live"], true);
        if items(&m) > 100 {
            break m;
        }
        assert!(Instant::now() < deadline, "no records arrived: {m}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(first["system"], "demo");
    let grown = loop {
        let m = get_json(addr, "/api/meta");
        if items(&m) > items(&first) && m["duration_us"].as_f64() > first["duration_us"].as_f64() {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "the live trace did not grow: {first} then {m}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let duration = grown["duration_us"].as_f64().unwrap();
    let whole = get_json(addr, &format!("/api/range?from=0&to={duration}&px=800"));
    let tracks = whole["tracks"].as_array().unwrap();
    assert_eq!(tracks.len(), grown["tracks"].as_array().unwrap().len());
    let drawn: usize = tracks
        .iter()
        .map(|t| {
            t["items"]
                .as_array()
                .or_else(|| t["columns"].as_array())
                .map_or(0, Vec::len)
        })
        .sum();
    assert!(drawn > 0, "{whole}");

    // A guest slice's rip is a source line of its partition's ELF (DWARF).
    let found = get_json(addr, "/api/search?q=guest&after=-1");
    let track = found["match"]["track"].as_u64().expect("a guest slice") as usize;
    let rip = found["match"]["item"]["a"]["rip"]
        .as_str()
        .unwrap()
        .to_owned();
    let partition = grown["tracks"][track]["partition"].as_u64().unwrap();
    let src = get_json(
        addr,
        &format!("/api/source?partition={partition}&rip={rip}"),
    );
    let file = src["file"]
        .as_str()
        .unwrap_or_else(|| panic!("{rip}: {src}"));
    assert!(
        [".c", ".S", ".s", ".h"].iter().any(|e| file.ends_with(e))
            && src["line"].as_u64() > Some(0),
        "{rip}: {src}"
    );
    eprintln!("{rip} of partition {partition}: {file}:{}", src["line"]);

    // Save: refused without its header (a page of another origin cannot send it), then a trace
    // file that opens.
    let (status, body) = post(addr, "/api/save", "");
    assert_eq!(status, 403, "{body}");
    let (status, body) = post(addr, "/api/save", "X-Hv-Save: 1\r\n");
    assert_eq!(status, 200, "{body}");
    let saved: serde_json::Value = serde_json::from_str(&body).unwrap();
    let saved = PathBuf::from(saved["path"].as_str().unwrap());
    assert!(saved.starts_with(dir.path()), "{}", saved.display());
    let (index, _) = trace_viewer::index::Index::open_or_build(&saved).expect("the saved trace");
    assert!(index.meta().records > 0);
    assert_eq!(index.meta().header.system, "demo");

    let missing = browser_missing();
    if missing.is_empty() {
        run_browser_script("test/live.test.mjs", &[&url]);
    } else {
        eprintln!(
            "SKIPPED the browser part: missing {}",
            missing.join(" and ")
        );
    }
    // Its recording is a temporary file unlinked at once: nothing to leave behind.
    let recording = std::env::temp_dir().join(format!("hv-live-{}.hvt", viewer.0.id()));
    assert!(!recording.exists(), "{} is visible", recording.display());
    // Ctrl-C stops it.
    let mut viewer = viewer;
    let killed = Command::new("kill")
        .args(["-INT", &viewer.0.id().to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
    let status = loop {
        if let Some(status) = viewer.0.try_wait().expect("wait for hv") {
            break status;
        }
        assert!(
            Instant::now() < deadline + GUARD,
            "hv trace view --live ignored SIGINT"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    drop(run);
}
