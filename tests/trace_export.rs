//! `hv trace export` and `hv trace stats` on synthetic traces (`hv trace synth`, a simulated
//! 4-partition system laid out like a recorded trace): every format checked against the
//! records (slice, instant and flow counts, nesting, time order), the Perfetto protobuf output
//! decoded by Perfetto's own schema (tests/perfetto/check.py, with the `perfetto` and `protobuf`
//! Python packages that `.ci/run` installs). Peak memory: tests/trace_export_memory.rs.

mod perfetto;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use hv_link::trace::RecordKind;
use serde_json::Value;

fn hv() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hv"))
}

/// Runs `hv ARGS`, failing the test with its stderr when it fails; returns stdout.
fn hv_ok(args: &[&std::ffi::OsStr]) -> String {
    let out = hv().args(args).output().expect("run hv");
    assert!(
        out.status.success(),
        "hv {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn synth(dir: &Path, events: u64) -> PathBuf {
    let path = dir.join(format!("synth-{events}.hvt"));
    hv_ok(&[
        "trace".as_ref(),
        "synth".as_ref(),
        "--events".as_ref(),
        events.to_string().as_ref(),
        "-o".as_ref(),
        path.as_os_str(),
    ]);
    path
}

fn export(file: &Path, format: &str, out: &Path) {
    hv_ok(&[
        "trace".as_ref(),
        "export".as_ref(),
        file.as_os_str(),
        "--format".as_ref(),
        format.as_ref(),
        "-o".as_ref(),
        out.as_os_str(),
    ]);
}

/// What the records say the exports must show.
#[derive(Debug, Default)]
struct Expected {
    records: u64,
    kinds: HashMap<RecordKind, u64>,
}

impl Expected {
    fn of(file: &Path) -> Expected {
        let trace = trace_viewer::Trace::open(file).unwrap();
        let mut e = Expected {
            records: trace.records.len() as u64,
            ..Expected::default()
        };
        for r in &trace.records {
            *e.kinds.entry(r.kind().unwrap()).or_default() += 1;
        }
        e
    }

    fn n(&self, k: RecordKind) -> u64 {
        self.kinds.get(&k).copied().unwrap_or(0)
    }

    /// Slices by name (the synthetic trace closes every slice it opens).
    fn slices(&self) -> BTreeMap<String, u64> {
        use RecordKind::*;
        [
            ("guest", VmEntry),
            ("halted", Halt),
            ("blocked on device", ModelRequest),
            ("outside schedule window", ScheduleOut),
            ("stopped in debugger", DebugStop),
        ]
        .into_iter()
        .filter(|(_, k)| self.n(*k) > 0)
        .map(|(name, k)| (name.to_owned(), self.n(k)))
        .collect()
    }

    /// Records shown as instants (everything but slice boundaries).
    fn instants(&self) -> u64 {
        use RecordKind::*;
        let boundaries: u64 = [
            VmEntry,
            VmExit,
            Halt,
            Wake,
            DebugStop,
            DebugResume,
            ScheduleOut,
            ScheduleIn,
            ModelRequest,
            ModelReply,
            ModelBusError,
        ]
        .iter()
        .map(|k| self.n(*k))
        .sum();
        self.records - boundaries
    }
}

#[test]
fn every_export_of_a_synthetic_trace_agrees_with_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let file = synth(dir.path(), 150_000);
    let want = Expected::of(&file);
    assert!(want.records >= 150_000);
    let requests = want.n(RecordKind::ModelRequest);
    assert!(requests > 100 && want.n(RecordKind::IpcSend) > 100);

    // CSV: one line per record, in time order across vCPUs.
    let csv_path = dir.path().join("t.csv");
    export(&file, "csv", &csv_path);
    let csv = std::fs::read_to_string(&csv_path).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("time_ns,partition,vcpu,kind,a,b,detail"));
    let mut last = 0u64;
    let mut rows = 0u64;
    let mut exits = 0u64;
    for line in lines {
        let mut cols = line.split(',');
        let t: u64 = cols.next().unwrap().parse().unwrap();
        assert!(t >= last, "time goes back at {line}");
        last = t;
        rows += 1;
        exits += u64::from(cols.nth(2) == Some("VmExit"));
    }
    assert_eq!(rows, want.records);
    assert_eq!(exits, want.n(RecordKind::VmExit));

    // JSON: complete slices per name, nested per track; instants; flows of 4 events each.
    let json_path = dir.path().join("t.json");
    export(&file, "perfetto-json", &json_path);
    let doc: Value = serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    let events = doc["traceEvents"].as_array().unwrap();
    let mut slices: BTreeMap<String, u64> = BTreeMap::new();
    let mut per_track: HashMap<(u64, u64), Vec<(u64, u64)>> = HashMap::new();
    let mut phases: HashMap<String, u64> = HashMap::new();
    let us = |v: &Value| (v.as_f64().unwrap() * 1000.0).round() as u64;
    for e in events {
        let ph = e["ph"].as_str().unwrap().to_owned();
        if ph == "X" {
            *slices
                .entry(e["name"].as_str().unwrap().to_owned())
                .or_default() += 1;
            let key = (e["pid"].as_u64().unwrap(), e["tid"].as_u64().unwrap());
            let start = us(&e["ts"]);
            per_track
                .entry(key)
                .or_default()
                .push((start, start + us(&e["dur"])));
        }
        *phases.entry(ph).or_default() += 1;
    }
    assert_eq!(slices, want.slices());
    for (track, mut spans) in per_track {
        // Outer first at equal starts; then each slice lies inside or after the open ones.
        spans.sort_by_key(|&(s, e)| (s, std::cmp::Reverse(e)));
        let mut open: Vec<u64> = Vec::new();
        for (s, e) in spans {
            while open.last().is_some_and(|&end| end <= s) {
                open.pop();
            }
            if let Some(&end) = open.last() {
                assert!(e <= end, "slices cross on {track:?} at {s}");
            }
            open.push(e);
        }
    }
    assert_eq!(phases["i"], want.instants());
    assert_eq!(phases["s"], requests);
    assert_eq!(phases["t"], 2 * requests);
    assert_eq!(phases["f"], requests);
    assert_eq!(
        phases["M"],
        4 * 2 + 8,
        "process name and order, thread names"
    );
    // IPC: a flow from each send to its receive (the header's channels join control's channel 1
    // and telemetry's), paired in order: same length, forward in time, sender to receiver.
    let sends = want.n(RecordKind::IpcSend);
    assert_eq!(sends, want.n(RecordKind::IpcReceive));
    let mut ipc: HashMap<String, (Option<&Value>, Option<&Value>)> = HashMap::new();
    for e in events.iter().filter(|e| e["bind_id"].is_string()) {
        let id = e["bind_id"].as_str().unwrap().to_owned();
        let end = ipc.entry(id).or_default();
        if e["flow_out"] == true {
            assert!(
                e["name"] == "IPC send 1" && end.0.replace(e).is_none(),
                "{e}"
            );
        } else {
            assert!(e["flow_in"] == true && e["name"] == "IPC receive 1", "{e}");
            assert!(end.1.replace(e).is_none(), "{e}");
        }
    }
    assert_eq!(ipc.len() as u64, sends);
    for (send, receive) in ipc.values() {
        let (send, receive) = (send.expect("a send"), receive.expect("a receive"));
        assert_eq!(send["args"]["len"], receive["args"]["len"]);
        assert!(us(&send["ts"]) < us(&receive["ts"]));
        assert_eq!(
            (send["pid"].as_u64(), receive["pid"].as_u64()),
            (Some(1), Some(2))
        );
    }

    // Protobuf, decoded with Perfetto's schema.
    let proto_path = dir.path().join("t.perfetto-trace");
    hv_ok(&[
        "trace".as_ref(),
        "export".as_ref(),
        file.as_os_str(),
        "-o".as_ref(),
        proto_path.as_os_str(),
    ]);
    let proto_len = std::fs::metadata(&proto_path).unwrap().len();
    let json_len = std::fs::metadata(&json_path).unwrap().len();
    assert!(
        proto_len * 2 < json_len,
        "protobuf {proto_len} bytes vs JSON {json_len}"
    );
    let Some(summary) = perfetto::check(&proto_path) else {
        return;
    };
    let got: BTreeMap<String, u64> = serde_json::from_value(summary["slices"].clone()).unwrap();
    assert_eq!(got, want.slices());
    assert_eq!(summary["open_at_end"], serde_json::json!({}));
    assert_eq!(
        summary["process_tracks"],
        serde_json::json!(["control", "telemetry", "uart-model", "worker"])
    );
    assert_eq!(summary["thread_tracks"], 8);
    let instants: u64 = summary["instants"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    // Each reply is also an instant (it ends the request's flow).
    assert_eq!(instants, want.instants() + requests);
    assert_eq!(summary["instants"]["take request"], requests);
    // Device requests (4 events each) and IPC messages (send and receive).
    assert_eq!(summary["flows"], requests + sends);
    assert_eq!(summary["flows_ended"], requests + sends);
    assert_eq!(
        summary["flow_lengths"],
        serde_json::json!({"4": requests, "2": sends})
    );
    let depth = summary["max_depth"].as_u64().unwrap();
    assert!((1..=2).contains(&depth), "{summary}");
}
