//! Exporters: [`perfetto`] writes the JSON trace-event format that Perfetto (ui.perfetto.dev) and
//! chrome://tracing open, [`csv`] one line per record.
//!
//! In the Perfetto export a partition is a process and a vCPU a thread. A vCPU's track shows
//! slices for its time in the guest (entry to exit, with the exit reason), halted, stopped in the
//! debugger, outside its schedule window and blocked on a device model; interrupts, hypercalls,
//! device accesses, IPC, markers and state changes are instants on it, and each device-model
//! request is a flow from the client's access through the model and back.

use std::collections::HashMap;
use std::io::{self, Write};

use hv_link::trace::{
    RecordKind, TraceRecord, bus_error_reason_name, exit_reason_name, hypercall_name,
    vcpu_state_name,
};
use serde_json::{Value, json};

use crate::Trace;

/// Writes `trace` as a JSON trace-event file.
pub fn perfetto(trace: &Trace, out: &mut impl Write) -> io::Result<()> {
    let base = trace.span().0;
    let ts = |t: u64| t.saturating_sub(base) as f64 / 1e3;
    let mut events: Vec<Value> = Vec::new();
    for p in &trace.header.partitions {
        let pid = p.id + 1;
        events.push(json!({"ph": "M", "name": "process_name", "pid": pid,
            "args": {"name": p.name}}));
        events.push(json!({"ph": "M", "name": "process_sort_index", "pid": pid,
            "args": {"sort_index": p.id}}));
        for v in 0..p.vcpus {
            events.push(
                json!({"ph": "M", "name": "thread_name", "pid": pid, "tid": v + 1,
                "args": {"name": format!("vCPU {v}")}}),
            );
        }
    }
    // Open slices per (partition, vCPU, slice kind): start time and args.
    let mut open: HashMap<(u32, u16, &'static str), (u64, Value)> = HashMap::new();
    for r in &trace.records {
        let (pid, tid) = (r.partition + 1, u32::from(r.vcpu) + 1);
        let key = |name| (r.partition, r.vcpu, name);
        let mut close = |name: &'static str, events: &mut Vec<Value>, extra: Value| {
            if let Some((start, mut args)) = open.remove(&key(name)) {
                merge(&mut args, extra);
                events.push(json!({"ph": "X", "name": name, "cat": "vcpu", "pid": pid,
                    "tid": tid, "ts": ts(start), "dur": ts(r.timestamp) - ts(start),
                    "args": args}));
            }
        };
        let instant = |name: String, cat: &str, args: Value| {
            json!({"ph": "i", "s": "t", "name": name, "cat": cat, "pid": pid, "tid": tid,
                "ts": ts(r.timestamp), "args": args})
        };
        let Some(kind) = r.kind() else {
            continue;
        };
        match kind {
            RecordKind::VmEntry => {
                open.insert(key(GUEST), (r.timestamp, json!({})));
            }
            RecordKind::VmExit => close(
                GUEST,
                &mut events,
                json!({"exit": exit_reason_name(r.a), "rip": format!("{:#x}", r.b)}),
            ),
            RecordKind::Halt => {
                open.insert(key(HALTED), (r.timestamp, json!({})));
            }
            RecordKind::Wake => close(HALTED, &mut events, json!({})),
            RecordKind::DebugStop => {
                open.insert(key(DEBUGGER), (r.timestamp, json!({})));
            }
            RecordKind::DebugResume => close(DEBUGGER, &mut events, json!({})),
            RecordKind::ScheduleOut => {
                open.insert(key(OUT_OF_WINDOW), (r.timestamp, json!({})));
            }
            RecordKind::ScheduleIn => close(OUT_OF_WINDOW, &mut events, json!({})),
            RecordKind::ModelRequest => {
                open.insert(
                    key(BLOCKED),
                    (
                        r.timestamp,
                        json!({"request": r.a, "offset": format!("{:#x}", r.b)}),
                    ),
                );
                events.push(flow("s", r, r.a, ts(r.timestamp)));
            }
            RecordKind::ModelReply => {
                close(BLOCKED, &mut events, json!({"latency_ns": r.b}));
                events.push(flow("f", r, r.a, ts(r.timestamp)));
            }
            RecordKind::ModelBusError => {
                close(
                    BLOCKED,
                    &mut events,
                    json!({"bus_error": bus_error_reason_name(r.b)}),
                );
                events.push(flow("f", r, r.a, ts(r.timestamp)));
            }
            RecordKind::ModelReceive => {
                events.push(instant(
                    format!("take request {}", r.a),
                    "device",
                    json!({"offset": format!("{:#x}", r.b)}),
                ));
                events.push(flow("t", r, r.a, ts(r.timestamp)));
            }
            RecordKind::ModelRespond => {
                events.push(instant(
                    format!("answer request {}", r.a),
                    "device",
                    json!({"value": format!("{:#x}", r.b)}),
                ));
                events.push(flow("t", r, r.a, ts(r.timestamp)));
            }
            RecordKind::Lost => {
                // What was open may have ended among the lost records.
                open.retain(|(p, v, _), _| (*p, *v) != (r.partition, r.vcpu));
                events.push(instant(
                    format!("lost {}", r.a),
                    "lost",
                    json!({"count": r.a}),
                ));
            }
            other => {
                let (name, cat, args) = describe(other, r);
                events.push(instant(name, cat, args));
            }
        }
    }
    let doc = json!({
        "displayTimeUnit": "ns",
        "otherData": {"system": trace.header.system, "tsc_khz": trace.header.clock.tsc_khz,
            "epoch_unix_ns": trace.header.clock.epoch_unix_ns},
        "traceEvents": events,
    });
    serde_json::to_writer(&mut *out, &doc).map_err(io::Error::other)?;
    out.flush()
}

const GUEST: &str = "guest";
const HALTED: &str = "halted";
const DEBUGGER: &str = "stopped in debugger";
const OUT_OF_WINDOW: &str = "outside schedule window";
const BLOCKED: &str = "blocked on device";

fn merge(into: &mut Value, extra: Value) {
    if let (Some(into), Value::Object(extra)) = (into.as_object_mut(), extra) {
        into.extend(extra);
    }
}

/// A flow event (`s` start, `t` step, `f` end) of device-model request `id`.
fn flow(ph: &str, r: &TraceRecord, id: u64, ts: f64) -> Value {
    let mut e = json!({"ph": ph, "name": "device request", "cat": "device", "id": id,
        "pid": r.partition + 1, "tid": u32::from(r.vcpu) + 1, "ts": ts});
    if ph == "f" {
        e["bp"] = json!("e");
    }
    e
}

/// Name, category and arguments of an instant record.
fn describe(kind: RecordKind, r: &TraceRecord) -> (String, &'static str, Value) {
    match kind {
        RecordKind::IrqRaise => (format!("raise {}", r.a), "irq", json!({"vector": r.a})),
        RecordKind::IrqInject => (format!("inject {}", r.a), "irq", json!({"vector": r.a})),
        RecordKind::IrqEoi => (format!("EOI {}", r.a), "irq", json!({"vector": r.a})),
        RecordKind::Hypercall => (
            hypercall_name(r.a).map_or_else(|| format!("hypercall {}", r.a), str::to_owned),
            "hypercall",
            json!({"nr": r.a, "result": r.b as i64}),
        ),
        RecordKind::DeviceAccess => (
            format!("{} {:#x}", if r.b & 1 == 1 { "write" } else { "read" }, r.a),
            "device",
            json!({"size": r.b >> 1}),
        ),
        RecordKind::IpcSend => (format!("IPC send {}", r.a), "ipc", json!({"len": r.b})),
        RecordKind::IpcReceive => (format!("IPC receive {}", r.a), "ipc", json!({"len": r.b})),
        RecordKind::Marker => (format!("marker {}", r.a), "marker", json!({"value": r.b})),
        RecordKind::StateChange => (format!("state {}", vcpu_state_name(r.a)), "vcpu", json!({})),
        other => (format!("{other:?}"), "other", json!({"a": r.a, "b": r.b})),
    }
}

/// Writes one CSV line per record: time (ns from the first record), partition, vCPU, kind, the
/// two payload words and, where there is one, what they mean.
pub fn csv(trace: &Trace, out: &mut impl Write) -> io::Result<()> {
    let base = trace.span().0;
    writeln!(out, "time_ns,partition,vcpu,kind,a,b,detail")?;
    for r in &trace.records {
        let kind = r
            .kind()
            .map_or_else(|| format!("kind{}", r.kind), |k| format!("{k:?}"));
        let detail = match r.kind() {
            Some(RecordKind::VmExit) => exit_reason_name(r.a).to_owned(),
            Some(RecordKind::Hypercall) => hypercall_name(r.a).unwrap_or("").to_owned(),
            Some(RecordKind::StateChange) => vcpu_state_name(r.a).to_owned(),
            Some(RecordKind::ModelBusError) => bus_error_reason_name(r.b).to_owned(),
            _ => String::new(),
        };
        writeln!(
            out,
            "{},{},{},{kind},{},{},{detail}",
            r.timestamp.saturating_sub(base),
            trace.partition_name(r.partition).unwrap_or("?"),
            r.vcpu,
            r.a,
            r.b
        )?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{header, rec};
    use RecordKind::*;

    fn sample() -> Trace {
        Trace::new(
            header(),
            vec![
                rec(1000, 0, 0, VmEntry, 0, 0),
                rec(3000, 0, 0, VmExit, 6, 0xd0),
                rec(3100, 0, 0, ModelRequest, 7, 8),
                rec(3200, 1, 0, ModelReceive, 7, 8),
                rec(3300, 1, 0, ModelRespond, 7, 42),
                rec(3400, 0, 0, ModelReply, 7, 300),
                rec(3500, 0, 0, Hypercall, 21, 1),
                rec(3600, 1, 1, Halt, 0, 0),
                rec(3700, 1, 1, Lost, 2, 0),
                rec(3800, 1, 1, Wake, 0, 0),
            ],
        )
    }

    #[test]
    fn perfetto_export_has_tracks_slices_instants_and_flows() {
        let mut out = Vec::new();
        perfetto(&sample(), &mut out).unwrap();
        let doc: Value = serde_json::from_slice(&out).unwrap();
        let events = doc["traceEvents"].as_array().unwrap();
        let find = |ph: &str, name: &str| {
            events
                .iter()
                .filter(|e| e["ph"] == ph && e["name"] == name)
                .collect::<Vec<_>>()
        };
        assert_eq!(find("M", "process_name").len(), 2);
        assert_eq!(find("M", "thread_name").len(), 3);
        let guest = find("X", "guest");
        assert_eq!(guest.len(), 1);
        assert_eq!(guest[0]["ts"], 0.0);
        assert_eq!(guest[0]["dur"], 2.0);
        assert_eq!(guest[0]["args"]["exit"], "mmio");
        let blocked = find("X", "blocked on device");
        assert_eq!(blocked[0]["args"]["latency_ns"], 300);
        assert_eq!(find("i", "HV_DM_REPLY_WAIT").len(), 1);
        let flows: Vec<&str> = events
            .iter()
            .filter(|e| e["id"] == 7)
            .map(|e| e["ph"].as_str().unwrap())
            .collect();
        assert_eq!(flows, ["s", "t", "t", "f"]);
        // The halt's wake came after lost records: no slice is made up for it.
        assert!(find("X", "halted").is_empty());
        assert_eq!(find("i", "lost 2").len(), 1);
        assert_eq!(doc["otherData"]["system"], "test");
    }

    #[test]
    fn csv_has_a_line_per_record_with_names() {
        let mut out = Vec::new();
        csv(&sample(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 11);
        assert_eq!(lines[0], "time_ns,partition,vcpu,kind,a,b,detail");
        assert_eq!(lines[2], "2000,a,0,VmExit,6,208,mmio");
        assert_eq!(lines[7], "2500,a,0,Hypercall,21,1,HV_DM_REPLY_WAIT");
    }
}
