//! End-to-end trace streaming: a guest floods trace markers while the demo control/telemetry
//! pair runs; a real hv-link client subscribed to the `trace` channel receives the header and
//! the batches; once the flood is paused and tracing stopped, every ring's produced count equals
//! the records delivered plus the records reported lost, exactly.

mod common;
mod perfetto;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{boot, kvm_lock, kvm_or_skip};
use debug_agent::{Agent, AgentOptions};
use hv_link::control::{
    ChannelOpen, ChannelOpenParams, PartitionsStatsMethod, TraceStart, TraceStartParams, TraceStop,
    request_bytes,
};
use hv_link::handshake::{Hello, client_handshake};
use hv_link::rpc::RequestId;
use hv_link::trace::{Chunk, LOST_ON_LINK, RecordKind, decode_chunk};
use hv_link::{ChannelId, ChannelName, ClientOptions, Connection, LinkAddr, LinkClient};

/// Safety net for blocking reads; no assertion is about how long anything takes.
const GUARD: Duration = Duration::from_secs(120);

/// The control/telemetry pair and the marker flood guest, as system `tracetest`.
fn flood() -> String {
    format!(
        "[system]\nname = \"tracetest\"\n{}\n[[partition]]\nname = \"marker\"\nimage = \"{{guests}}/marker.elf\"\n",
        common::CONTROL_AND_TELEMETRY
    )
}

/// What one subscriber has seen, per (partition, vCPU).
#[derive(Default, Debug)]
struct Seen {
    delivered: BTreeMap<(u32, u16), u64>,
    lost_in_ring: BTreeMap<(u32, u16), u64>,
    lost_on_link: BTreeMap<(u32, u16), u64>,
    markers: u64,
    last_marker: Option<u64>,
    irq_latencies: u64,
    latencies: hv_link::trace::IrqLatencies,
    eoi_latencies: u64,
    /// vCPUs' states at the recording's start (the agent's, not a ring's records).
    start_states: BTreeMap<(u32, u16), u64>,
}

impl Seen {
    fn add(&mut self, payload: &[u8]) {
        let (Chunk::Batch(records), used) = decode_chunk(payload).expect("a valid chunk") else {
            panic!("only batches after the header");
        };
        assert_eq!(used, payload.len(), "one chunk per frame");
        for r in records {
            if let Some(s) = self.latencies.feed(&r)
                && s.what == hv_link::trace::IrqLatency::InjectToEoi
            {
                self.eoi_latencies += 1;
            }
            let key = (r.partition, r.vcpu);
            if r.is_state_at_start() {
                *self.start_states.entry(key).or_default() += 1;
                continue;
            }
            match r.kind() {
                Some(RecordKind::Lost) if r.b == LOST_ON_LINK => {
                    *self.lost_on_link.entry(key).or_default() += r.a
                }
                Some(RecordKind::Lost) => *self.lost_in_ring.entry(key).or_default() += r.a,
                kind => {
                    *self.delivered.entry(key).or_default() += 1;
                    if kind == Some(RecordKind::Marker) {
                        self.markers += 1;
                        assert_eq!(r.a, 7, "the marker guest's id");
                        if let Some(last) = self.last_marker {
                            assert!(r.b > last, "markers arrive in order");
                        }
                        self.last_marker = Some(r.b);
                    }
                    if kind == Some(RecordKind::IrqRaise) {
                        assert!(r.b <= r.timestamp, "raised before injected");
                        self.irq_latencies += 1;
                    }
                }
            }
        }
    }

    fn accounted(&self, key: (u32, u16)) -> u64 {
        let get = |m: &BTreeMap<(u32, u16), u64>| m.get(&key).copied().unwrap_or(0);
        get(&self.delivered) + get(&self.lost_in_ring) + get(&self.lost_on_link)
    }
}

/// A subscriber that opens the `trace` channel and then does not read (until told to). Returns
/// once the channel is open, so that it sees every record produced from then on.
fn slow_subscriber(addr: &LinkAddr) -> (Connection, ChannelId) {
    let mut conn = hv_link::connect(addr).expect("connect");
    client_handshake(&mut conn, &Hello::new("slow"), Some(GUARD)).expect("handshake");
    let open = request_bytes::<ChannelOpen>(
        &RequestId::Number(1),
        &ChannelOpenParams {
            name: ChannelName::Trace,
        },
    )
    .unwrap();
    conn.send_frame(ChannelId::CONTROL, &open).unwrap();
    conn.set_read_timeout(Some(GUARD)).unwrap();
    let frame = conn.recv_frame().expect("read").expect("open link");
    assert_eq!(frame.channel, ChannelId::CONTROL, "the open reply first");
    let reply: serde_json::Value = serde_json::from_slice(&frame.payload).unwrap();
    let channel = ChannelId(reply["result"]["id"].as_u64().expect("a channel id") as u32);
    (conn, channel)
}

#[test]
fn trace_flood_is_accounted_exactly_and_others_run_on() {
    if !kvm_or_skip("trace_flood_is_accounted_exactly_and_others_run_on") {
        return;
    }
    let _lock = kvm_lock();
    let (system, consoles, _file) = boot(&flood());
    let dir = tempfile::tempdir().unwrap();
    let options = AgentOptions {
        link: Some(LinkAddr::Unix(dir.path().join("link.sock"))),
        ..Default::default()
    };
    let agent = Agent::start(&system, &system.config.agent, options).expect("agent");
    let client = LinkClient::connect_with(
        agent.local_addr(),
        ClientOptions {
            call_timeout: Some(GUARD),
            ..ClientOptions::new("trace-test")
        },
    )
    .expect("connect");
    assert!(client.welcome().has("trace"));

    let trace = client.open_channel(&ChannelName::Trace).expect("trace");
    let first = trace.receiver().recv_timeout(GUARD).expect("header");
    let Chunk::Header(header) = decode_chunk(&first).expect("header").0 else {
        panic!("the header comes first");
    };
    let names: Vec<&str> = header.partitions.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["control", "telemetry", "marker"]);
    assert!(header.partitions[2].image.ends_with("marker.elf"));
    assert!(header.clock.tsc_khz > 0);
    let marker_id = header.partitions[2].id;
    let (mut slow, slow_channel) = slow_subscriber(agent.local_addr());

    client
        .call_typed::<TraceStart>(&TraceStartParams {
            partitions: Some(vec!["marker".into()]),
            classes: Some(vec!["marker".into()]),
        })
        .unwrap();
    client
        .call_typed::<TraceStart>(&TraceStartParams {
            partitions: Some(vec!["control".into()]),
            classes: Some(vec!["irq".into(), "sched".into()]),
        })
        .unwrap();

    let mut seen = Seen::default();
    // Flood until plenty of markers went through and control printed a fresh uptime line.
    while seen.markers < 200_000 {
        seen.add(&trace.receiver().recv_timeout(GUARD).expect("a batch"));
    }
    let uptime = |lines: &[String]| {
        lines
            .iter()
            .filter(|l| l.contains("control: uptime"))
            .count()
    };
    let before = uptime(&consoles.lines("control"));
    loop {
        // Keep draining meanwhile, like any subscriber would.
        while let Ok(batch) = trace.receiver().try_recv() {
            seen.add(&batch);
        }
        let have = consoles.lines("control").len();
        let lines = consoles.wait_count("control", have + 1, GUARD);
        if uptime(&lines) > before {
            break;
        }
    }

    client.pause("marker").unwrap();
    client.call_typed::<TraceStop>(&()).unwrap();

    // Every ring: produced = delivered + lost, exactly (read until the counts meet).
    let rings = |stats: &hv_link::control::PartitionsStats| -> BTreeMap<(u32, u16), u64> {
        stats
            .partitions
            .iter()
            .flat_map(|p| {
                p.vcpus
                    .iter()
                    .map(move |v| ((p.id, v.index as u16), v.trace_produced))
            })
            .collect()
    };
    let mut stats = client.call_typed::<PartitionsStatsMethod>(&()).unwrap();
    loop {
        let produced = rings(&stats);
        if produced.iter().all(|(k, n)| seen.accounted(*k) == *n) {
            break;
        }
        for (k, n) in &produced {
            assert!(
                seen.accounted(*k) <= *n,
                "{k:?}: more delivered than produced"
            );
        }
        seen.add(&trace.receiver().recv_timeout(GUARD).expect("a batch"));
        stats = client.call_typed::<PartitionsStatsMethod>(&()).unwrap();
    }
    let produced = rings(&stats);
    let marker_ring = (marker_id, 0);
    assert!(produced[&marker_ring] >= 200_000);
    let ring_lost: u64 = stats.partitions.iter().map(|p| p.lost_records).sum();
    assert_eq!(ring_lost, seen.lost_in_ring.values().sum::<u64>());
    assert!(seen.irq_latencies > 0, "control's timer interrupts traced");
    // The one vCPU with its sched class on had its state noted where its recording started.
    assert_eq!(
        seen.start_states,
        BTreeMap::from([((header.partitions[0].id, 0), 1)]),
        "one state at start, for control's vCPU"
    );
    assert!(seen.eoi_latencies > 0, "inject→EOI pairs found");
    let control = &stats.partitions[0];
    assert!(control.vcpus[0].exits > 0 && control.vcpus[0].guest_ns > 0);
    // The counters are read one by one while control runs (1 kHz), so one snapshot can fall
    // between the two increments of an injection or an exit: the totals must agree in a
    // snapshot taken between them, which comes at once (control is mostly halted).
    let agrees = |s: &hv_link::control::PartitionsStats| {
        let v = &s.partitions[0].vcpus[0];
        v.irqs_by_vector.values().sum::<u64>() == v.irqs_injected
            && v.exits_by_reason.values().sum::<u64>() == v.exits
    };
    let mut consistent = agrees(&stats);
    for _ in 0..100 {
        if consistent {
            break;
        }
        consistent = agrees(&client.call_typed::<PartitionsStatsMethod>(&()).unwrap());
    }
    assert!(
        consistent,
        "per-vector interrupts and per-reason exits never add up to their totals: {:?}",
        control.vcpus[0]
    );
    eprintln!(
        "trace flood: produced {:?}, delivered {:?}, lost in rings {:?}, lost on the link {:?}",
        produced, seen.delivered, seen.lost_in_ring, seen.lost_on_link
    );

    // The subscriber that did not read lost records on the link, counted exactly.
    let mut slow_seen = Seen::default();
    let mut header_seen = false;
    while !produced.iter().all(|(k, n)| slow_seen.accounted(*k) == *n) {
        let frame = match slow.recv_frame() {
            Ok(f) => f.expect("open link"),
            Err(e) => panic!(
                "read: {e}; produced {produced:?}; the slow subscriber accounted {:?} (delivered {:?}, lost in rings {:?}, on the link {:?})",
                produced
                    .keys()
                    .map(|k| (*k, slow_seen.accounted(*k)))
                    .collect::<Vec<_>>(),
                slow_seen.delivered,
                slow_seen.lost_in_ring,
                slow_seen.lost_on_link
            ),
        };
        assert_eq!(
            frame.channel, slow_channel,
            "only trace data after the open reply"
        );
        if !header_seen {
            assert!(matches!(
                decode_chunk(&frame.payload).unwrap().0,
                Chunk::Header(_)
            ));
            header_seen = true;
            continue;
        }
        slow_seen.add(&frame.payload);
    }
    let slow_lost: u64 = slow_seen.lost_on_link.values().sum();
    eprintln!(
        "slow subscriber: delivered {:?}, lost on the link {:?}",
        slow_seen.delivered, slow_seen.lost_on_link
    );
    assert!(
        slow_lost > 0,
        "the subscriber that did not read lost records"
    );
    drop(trace);
    client.shutdown();
    agent.shutdown();
}

#[test]
fn hv_trace_record_writes_a_readable_trace_file() {
    if !kvm_or_skip("hv_trace_record_writes_a_readable_trace_file") {
        return;
    }
    let _lock = kvm_lock();
    let (system, _consoles, _file) = boot(&flood());
    let dir = tempfile::tempdir().unwrap();
    let options = AgentOptions {
        link: Some(LinkAddr::Unix(dir.path().join("link.sock"))),
        ..Default::default()
    };
    let agent = Agent::start(&system, &system.config.agent, options).expect("agent");
    let out = dir.path().join("flood.hvtrace");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_hv"))
        .args(["trace", "record"])
        .arg(&out)
        .arg("--connect")
        .arg(agent.local_addr().to_string())
        .args([
            "--duration",
            "1",
            "--classes",
            "marker",
            "--partitions",
            "marker",
        ])
        .status()
        .expect("run hv trace record");
    assert!(status.success());
    let mut reader =
        hv_link::trace::TraceReader::new(std::fs::File::open(&out).unwrap()).expect("header");
    assert_eq!(reader.header().system, "tracetest");
    assert_eq!(reader.header().partitions.len(), 3);
    let mut seen = Seen::default();
    while let Some(batch) = reader.next_batch().expect("whole batches") {
        seen.add(&hv_link::trace::encode_batch(&batch));
    }
    assert!(seen.markers > 0, "markers recorded");
    assert_eq!(seen.delivered.keys().collect::<Vec<_>>(), [&(2, 0)]);
    agent.shutdown();
}

/// Runs `hv` with `args`; its stdout, after checking that it succeeded.
fn hv_ok(args: &[&std::ffi::OsStr]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hv"))
        .args(args)
        .output()
        .expect("run hv");
    assert!(
        out.status.success(),
        "hv {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_recorded_trace_gives_stats_a_perfetto_export_and_csv() {
    if !kvm_or_skip("a_recorded_trace_gives_stats_a_perfetto_export_and_csv") {
        return;
    }
    let _lock = kvm_lock();
    let (system, consoles, _file) = boot(common::CONTROL_AND_TELEMETRY);
    consoles.wait_for("control", "uptime 1 s", Duration::from_secs(30));
    let dir = tempfile::tempdir().unwrap();
    let options = AgentOptions {
        link: Some(LinkAddr::Unix(dir.path().join("link.sock"))),
        ..Default::default()
    };
    let agent = Agent::start(&system, &system.config.agent, options).expect("agent");
    let file = dir.path().join("demo.hvt");
    let link = agent.local_addr().to_string();
    hv_ok(&[
        "trace".as_ref(),
        "record".as_ref(),
        file.as_os_str(),
        "--connect".as_ref(),
        link.as_ref(),
        "--duration".as_ref(),
        "3".as_ref(),
    ]);
    agent.shutdown();

    // stats: every vCPU, control's timer with its period, as JSON and as text.
    let stats: serde_json::Value = serde_json::from_str(&hv_ok(&[
        "trace".as_ref(),
        "stats".as_ref(),
        file.as_os_str(),
        "--json".as_ref(),
    ]))
    .unwrap();
    let vcpus = stats["vcpus"].as_array().unwrap();
    let control = vcpus
        .iter()
        .find(|v| v["partition"] == "control")
        .expect("control's vCPU");
    assert!(control["entries"].as_u64().unwrap() > 100, "{control}");
    assert!(control["exits"]["hlt"].as_u64().unwrap() > 100, "{control}");
    assert!(control["hypercalls"]["HV_IRQ_EOI"].as_u64().unwrap() > 100);
    assert!(control["guest_ns"].as_u64().unwrap() > 0);
    let timer = stats["irqs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["partition"] == "control" && i["vector"] == 32)
        .expect("control's timer vector");
    assert!(timer["period"]["count"].as_u64().unwrap() > 100, "{timer}");
    assert!(timer["raise_to_inject"]["p50_ns"].as_u64().unwrap() > 0);
    let text = hv_ok(&["trace".as_ref(), "stats".as_ref(), file.as_os_str()]);
    assert!(text.contains(" records, "), "{text}");
    assert!(text.contains("control.0"), "{text}");

    // Perfetto: named tracks, guest slices that nest properly per vCPU, IRQ instants.
    let json_path = dir.path().join("demo.json");
    hv_ok(&[
        "trace".as_ref(),
        "export".as_ref(),
        file.as_os_str(),
        "-o".as_ref(),
        json_path.as_os_str(),
    ]);
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    let events = doc["traceEvents"].as_array().unwrap();
    let control_pid = events
        .iter()
        .find(|e| e["name"] == "process_name" && e["args"]["name"] == "control")
        .map(|e| e["pid"].clone())
        .expect("a process for control");
    let mut slices: BTreeMap<(u64, u64), Vec<(f64, f64)>> = BTreeMap::new();
    for e in events.iter().filter(|e| e["ph"] == "X") {
        let (ts, dur) = (e["ts"].as_f64().unwrap(), e["dur"].as_f64().unwrap());
        assert!(dur >= 0.0 && ts >= 0.0, "{e}");
        let key = (e["pid"].as_u64().unwrap(), e["tid"].as_u64().unwrap());
        slices.entry(key).or_default().push((ts, ts + dur));
    }
    for (track, spans) in &mut slices {
        spans.sort_by(|a, b| a.0.total_cmp(&b.0));
        for pair in spans.windows(2) {
            assert!(
                pair[1].0 >= pair[0].1 - 1e-6,
                "slices overlap on {track:?}: {pair:?}"
            );
        }
    }
    let guest_slices = events
        .iter()
        .filter(|e| e["ph"] == "X" && e["name"] == "guest" && e["pid"] == control_pid)
        .count();
    assert!(
        guest_slices > 100,
        "{guest_slices} guest slices for control"
    );
    assert!(
        events
            .iter()
            .any(|e| e["ph"] == "i" && e["name"] == "inject 32" && e["pid"] == control_pid),
        "timer injections"
    );

    // Perfetto's protobuf format (the default), decoded with Perfetto's own schema: the same
    // vCPU tracks, slices that nest, flows that start and end.
    let proto_path = dir.path().join("demo.perfetto-trace");
    hv_ok(&[
        "trace".as_ref(),
        "export".as_ref(),
        file.as_os_str(),
        "-o".as_ref(),
        proto_path.as_os_str(),
    ]);
    if let Some(summary) = perfetto::check(&proto_path) {
        let processes = summary["process_tracks"].as_array().unwrap();
        assert!(processes.iter().any(|p| p == "control"), "{summary}");
        let guest = summary["slices"]["guest"].as_u64().unwrap_or(0);
        let json_guest = events
            .iter()
            .filter(|e| e["ph"] == "X" && e["name"] == "guest")
            .count() as u64;
        // The protobuf also ends slices cut by lost records, which the JSON leaves out.
        assert!(guest >= json_guest && guest > 100, "{summary}");
        assert!(summary["flows"].as_u64() >= summary["flows_ended"].as_u64());
    }

    // CSV: a header and one line per record.
    let csv = hv_ok(&[
        "trace".as_ref(),
        "export".as_ref(),
        file.as_os_str(),
        "--format".as_ref(),
        "csv".as_ref(),
        "-o".as_ref(),
        "-".as_ref(),
    ]);
    let records = stats["records"].as_u64().unwrap() + {
        // Lost markers are lines of their own.
        csv.lines().filter(|l| l.contains(",Lost,")).count() as u64
    };
    assert_eq!(csv.lines().count() as u64, records + 1);
    assert!(csv.starts_with("time_ns,partition,vcpu,kind,a,b,detail\n"));

    // IPC: the header says which endpoints the demo's channel joins (channel 0 of control and of
    // telemetry), and the export draws a flow from each of control's sends (one a second) to
    // telemetry's receive of it.
    let header = hv_link::trace::TraceReader::new(std::fs::File::open(&file).unwrap())
        .unwrap()
        .header()
        .clone();
    let ends: Vec<(u32, u64)> = header.channels[0]
        .endpoints
        .iter()
        .map(|e| (e.partition, e.channel))
        .collect();
    assert_eq!(header.channels[0].name, "telemetry");
    assert_eq!(ends, [(0, 0), (1, 0)]);
    let bound = |dir: &str| -> BTreeMap<String, &serde_json::Value> {
        events
            .iter()
            .filter(|e| e[dir] == true)
            .map(|e| (e["bind_id"].as_str().unwrap().to_owned(), e))
            .collect()
    };
    let (sends, receives) = (bound("flow_out"), bound("flow_in"));
    assert!(!receives.is_empty(), "a message received within 3 s");
    for (id, receive) in &receives {
        let send = sends.get(id).expect("each receive's flow begins at a send");
        assert_eq!(send["name"], "IPC send 0");
        assert_eq!(send["pid"], control_pid);
        assert_eq!(receive["name"], "IPC receive 0");
        assert_ne!(receive["pid"], control_pid);
        assert_eq!(send["args"]["len"], receive["args"]["len"]);
        assert!(send["ts"].as_f64() <= receive["ts"].as_f64());
    }

    // Each vCPU's state when the recording started is in the trace; a vCPU halted then (and
    // not seen halting or waking before it) shows a halted slice from the trace's first
    // timestamp in the export, instead of a blank track.
    const SLICE_KINDS: [&str; 12] = [
        "VmEntry",
        "VmExit",
        "Halt",
        "Wake",
        "ScheduleIn",
        "ScheduleOut",
        "DebugStop",
        "DebugResume",
        "ModelRequest",
        "ModelReply",
        "ModelBusError",
        "Lost",
    ];
    // (partition, vCPU) -> the state at start, and whether it came before any slice record.
    let mut starts: BTreeMap<(String, u64), (String, bool)> = BTreeMap::new();
    let mut sliced: std::collections::BTreeSet<(String, u64)> = Default::default();
    for line in csv.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let key = (f[1].to_owned(), f[2].parse::<u64>().unwrap());
        if f[3] == "StateChange" && f[5] == "1" {
            let first = !sliced.contains(&key);
            assert!(
                starts.insert(key, (f[6].to_owned(), first)).is_none(),
                "one state at start per vCPU: {line}"
            );
        } else if SLICE_KINDS.contains(&f[3]) {
            sliced.insert(key);
        }
    }
    let vcpus: Vec<(String, u64)> = stats["vcpus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["partition"].as_str().unwrap().to_owned(),
                v["vcpu"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        starts.keys().cloned().collect::<Vec<_>>(),
        vcpus,
        "a state at start for every vCPU"
    );
    for ((partition, vcpu), (state, first)) in &starts {
        eprintln!("state at start: {partition}.{vcpu} {state} (before its slices: {first})");
        if state != "halted" || !first {
            continue;
        }
        let pid = events
            .iter()
            .find(|e| e["name"] == "process_name" && e["args"]["name"] == partition.as_str())
            .map(|e| e["pid"].clone())
            .unwrap();
        assert!(
            events.iter().any(|e| e["ph"] == "X"
                && e["name"] == "halted"
                && e["pid"] == pid
                && e["tid"] == vcpu + 1
                && e["ts"] == 0.0
                && e["args"]["began_before_trace"] == 1),
            "{partition}.{vcpu} halted from the start"
        );
    }
}
