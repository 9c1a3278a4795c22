//! Trace-driven views: per-vCPU activity (what the CPU timeline shows per tick) and interrupt
//! latency percentiles, computed from trace events.
//!
//! [`TraceEvent`] is the console's own small view of a trace record, so that this analysis does
//! not depend on the wire encoding; the `trace` channel's chunks are decoded by `hv_link::trace`
//! (the one decoder of the format) and converted into it here.

use std::collections::{BTreeMap, HashMap, VecDeque};

use hv_link::trace::{Chunk, RecordKind, TraceRecord, decode_chunk, vcpu_state_name};

use crate::app::CpuActivity;
use crate::model::Latency;

/// Latency samples kept per vector.
pub const LATENCY_WINDOW: usize = 4096;

/// What happened, as far as the console cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceEventKind {
    /// Entered the guest.
    VmEntry,
    /// Left the guest.
    VmExit,
    /// An interrupt raised at `raised_ns` is being injected now.
    IrqRaise {
        /// Vector.
        vector: u8,
        /// When it was raised (trace clock).
        raised_ns: u64,
    },
    /// An interrupt was injected.
    IrqInject {
        /// Vector.
        vector: u8,
    },
    /// The guest ended an interrupt.
    IrqEoi {
        /// Vector.
        vector: u8,
    },
    /// The vCPU's schedule window opened.
    ScheduleIn,
    /// The vCPU's schedule window closed.
    ScheduleOut,
    /// Halted waiting for an interrupt.
    Halt,
    /// Woke from a halt.
    Wake,
    /// Stopped for the debugger.
    DebugStop,
    /// Resumed after a debugger stop.
    DebugResume,
    /// Changed state (parked, unparked, blocked on a device model, …).
    State(CpuActivity),
    /// Records were lost.
    Lost(u64),
    /// Anything else (counted, not shown).
    Other,
}

/// One trace event of one vCPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceEvent {
    /// Trace clock, ns.
    pub ts_ns: u64,
    /// Partition id.
    pub partition: u32,
    /// vCPU index.
    pub vcpu: u16,
    /// What happened.
    pub kind: TraceEventKind,
}

const KINDS: usize = 8;

fn slot(a: CpuActivity) -> usize {
    match a {
        CpuActivity::Running => 0,
        CpuActivity::InHypervisor => 1,
        CpuActivity::Halted => 2,
        CpuActivity::Blocked => 3,
        CpuActivity::OutOfWindow => 4,
        CpuActivity::Paused => 5,
        CpuActivity::Debugger => 6,
        CpuActivity::Stopped => 7,
    }
}

const BY_SLOT: [CpuActivity; KINDS] = [
    CpuActivity::Running,
    CpuActivity::InHypervisor,
    CpuActivity::Halted,
    CpuActivity::Blocked,
    CpuActivity::OutOfWindow,
    CpuActivity::Paused,
    CpuActivity::Debugger,
    CpuActivity::Stopped,
];

#[derive(Debug, Clone)]
struct VcpuActivity {
    current: CpuActivity,
    since_ns: u64,
    acc: [u64; KINDS],
    events: u64,
}

impl VcpuActivity {
    fn switch(&mut self, ts: u64, to: CpuActivity) {
        if ts > self.since_ns {
            self.acc[slot(self.current)] += ts - self.since_ns;
            self.since_ns = ts;
        }
        self.current = to;
        self.events += 1;
    }

    /// The activity that took most time since the last call (the current one if no time
    /// passed in the trace).
    fn take(&mut self) -> CpuActivity {
        let best = self
            .acc
            .iter()
            .enumerate()
            .max_by_key(|(_, t)| **t)
            .filter(|(_, t)| **t > 0)
            .map_or(self.current, |(i, _)| BY_SLOT[i]);
        self.acc = [0; KINDS];
        best
    }
}

/// Accumulates trace events into per-vCPU activity and per-vector latency.
#[derive(Debug, Clone, Default)]
pub struct TraceAnalyzer {
    vcpus: BTreeMap<(u32, u16), VcpuActivity>,
    raise_to_inject: HashMap<(u32, u8), VecDeque<u64>>,
    raise_to_eoi: HashMap<(u32, u8), VecDeque<u64>>,
    /// When the interrupt in service on a vCPU was raised, by vector.
    raised_at: HashMap<(u32, u16, u8), u64>,
    /// Records reported lost so far.
    pub lost: u64,
    /// Events seen so far.
    pub events: u64,
}

fn push_sample(map: &mut HashMap<(u32, u8), VecDeque<u64>>, key: (u32, u8), v: u64) {
    let q = map.entry(key).or_default();
    q.push_back(v);
    if q.len() > LATENCY_WINDOW {
        q.pop_front();
    }
}

impl TraceAnalyzer {
    /// Feeds events (in time order per vCPU).
    pub fn feed(&mut self, events: &[TraceEvent]) {
        for e in events {
            self.events += 1;
            let key = (e.partition, e.vcpu);
            let to = match e.kind {
                TraceEventKind::VmEntry => Some(CpuActivity::Running),
                TraceEventKind::VmExit
                | TraceEventKind::Wake
                | TraceEventKind::ScheduleIn
                | TraceEventKind::DebugResume => Some(CpuActivity::InHypervisor),
                TraceEventKind::Halt => Some(CpuActivity::Halted),
                TraceEventKind::ScheduleOut => Some(CpuActivity::OutOfWindow),
                TraceEventKind::DebugStop => Some(CpuActivity::Debugger),
                TraceEventKind::State(a) => Some(a),
                TraceEventKind::IrqRaise { vector, raised_ns } => {
                    self.raised_at
                        .insert((e.partition, e.vcpu, vector), raised_ns);
                    push_sample(
                        &mut self.raise_to_inject,
                        (e.partition, vector),
                        e.ts_ns.saturating_sub(raised_ns),
                    );
                    None
                }
                TraceEventKind::IrqInject { .. } => None,
                TraceEventKind::IrqEoi { vector } => {
                    if let Some(t) = self.raised_at.remove(&(e.partition, e.vcpu, vector)) {
                        push_sample(
                            &mut self.raise_to_eoi,
                            (e.partition, vector),
                            e.ts_ns.saturating_sub(t),
                        );
                    }
                    None
                }
                TraceEventKind::Lost(n) => {
                    self.lost += n;
                    None
                }
                TraceEventKind::Other => None,
            };
            let v = self.vcpus.entry(key).or_insert(VcpuActivity {
                current: CpuActivity::InHypervisor,
                since_ns: e.ts_ns,
                acc: [0; KINDS],
                events: 0,
            });
            match to {
                Some(a) => v.switch(e.ts_ns, a),
                None => {
                    let cur = v.current;
                    v.switch(e.ts_ns, cur);
                }
            }
        }
    }

    /// True when some trace event of partition `partition`'s vCPU `vcpu` was seen.
    pub fn has(&self, partition: u32, vcpu: u16) -> bool {
        self.vcpus.contains_key(&(partition, vcpu))
    }

    /// The dominant activity of a vCPU since the last call (one timeline column).
    pub fn take_activity(&mut self, partition: u32, vcpu: u16) -> Option<CpuActivity> {
        self.vcpus
            .get_mut(&(partition, vcpu))
            .map(VcpuActivity::take)
    }

    /// Raise-to-injection latency of a vector over the last [`LATENCY_WINDOW`] interrupts.
    pub fn raise_latency(&self, partition: u32, vector: u8) -> Option<Latency> {
        let mut v: Vec<u64> = self
            .raise_to_inject
            .get(&(partition, vector))?
            .iter()
            .copied()
            .collect();
        Latency::from_samples(&mut v)
    }

    /// Raise-to-EOI time (until the guest's handler ended the interrupt) of a vector over the
    /// last [`LATENCY_WINDOW`] interrupts.
    pub fn eoi_latency(&self, partition: u32, vector: u8) -> Option<Latency> {
        let mut v: Vec<u64> = self
            .raise_to_eoi
            .get(&(partition, vector))?
            .iter()
            .copied()
            .collect();
        Latency::from_samples(&mut v)
    }
}

/// The console's view of one trace record (kinds and state codes are `hv_link::trace`'s).
pub fn event_from_record(record: &TraceRecord) -> TraceEvent {
    let (a, b) = (record.a, record.b);
    let vector = a as u8;
    let kind = match record.kind() {
        Some(RecordKind::VmEntry) => TraceEventKind::VmEntry,
        Some(RecordKind::VmExit) => TraceEventKind::VmExit,
        Some(RecordKind::IrqRaise) => TraceEventKind::IrqRaise {
            vector,
            raised_ns: b,
        },
        Some(RecordKind::IrqInject) => TraceEventKind::IrqInject { vector },
        Some(RecordKind::IrqEoi) => TraceEventKind::IrqEoi { vector },
        Some(RecordKind::ScheduleIn) => TraceEventKind::ScheduleIn,
        Some(RecordKind::ScheduleOut) => TraceEventKind::ScheduleOut,
        Some(RecordKind::Halt) => TraceEventKind::Halt,
        Some(RecordKind::Wake) => TraceEventKind::Wake,
        Some(RecordKind::DebugStop) => TraceEventKind::DebugStop,
        Some(RecordKind::DebugResume) => TraceEventKind::DebugResume,
        Some(RecordKind::StateChange) => TraceEventKind::State(match vcpu_state_name(a) {
            // Running again, but in the hypervisor until the next VmEntry.
            "running" => CpuActivity::InHypervisor,
            "halted" => CpuActivity::Halted,
            "paused" => CpuActivity::Paused,
            "out_of_window" => CpuActivity::OutOfWindow,
            "debug_stopped" => CpuActivity::Debugger,
            "blocked_on_device" => CpuActivity::Blocked,
            _ => CpuActivity::Stopped,
        }),
        Some(RecordKind::Lost) => TraceEventKind::Lost(a),
        _ => TraceEventKind::Other,
    };
    TraceEvent {
        ts_ns: record.timestamp,
        partition: record.partition,
        vcpu: record.vcpu,
        kind,
    }
}

/// The events of one `trace` channel chunk (decoded by `hv_link::trace`): a batch gives its
/// records, anything else (the header, a malformed chunk) none.
pub fn events_from_chunk(chunk: &[u8]) -> Vec<TraceEvent> {
    match decode_chunk(chunk) {
        Ok((Chunk::Batch(records), used)) if used == chunk.len() => {
            records.iter().map(event_from_record).collect()
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(timestamp: u64, kind: u16, vcpu: u16, partition: u32, a: u64, b: u64) -> TraceRecord {
        TraceRecord {
            timestamp,
            kind,
            vcpu,
            partition,
            a,
            b,
        }
    }

    #[test]
    fn batch_chunks_decode() {
        let records = [
            record(5, RecordKind::IrqRaise as u16, 1, 2, 32, 1),
            record(6, RecordKind::StateChange as u16, 0, 2, 8, 0),
            record(7, 99, 0, 0, 0, 0),
        ];
        let chunk = hv_link::trace::encode_batch(&records);
        let ev = events_from_chunk(&chunk);
        assert_eq!(ev.len(), 3);
        assert_eq!(
            ev[0],
            TraceEvent {
                ts_ns: 5,
                partition: 2,
                vcpu: 1,
                kind: TraceEventKind::IrqRaise {
                    vector: 32,
                    raised_ns: 1
                }
            }
        );
        assert_eq!(ev[1].kind, TraceEventKind::State(CpuActivity::Blocked));
        assert_eq!(ev[2].kind, TraceEventKind::Other);
        // A header or a truncated batch gives nothing.
        assert!(events_from_chunk(b"HVTH\x04\0\0\0\x01\0\0\0").is_empty());
        assert!(events_from_chunk(&chunk[..chunk.len() - 1]).is_empty());
    }

    #[test]
    fn every_state_code_maps_to_an_activity() {
        let state = |code| {
            event_from_record(&record(0, RecordKind::StateChange as u16, 0, 0, code, 0)).kind
        };
        use CpuActivity::*;
        let expected = [
            Stopped,
            InHypervisor,
            Halted,
            Paused,
            OutOfWindow,
            Debugger,
            Stopped,
            Stopped,
            Blocked,
            Stopped,
        ];
        for (code, activity) in expected.into_iter().enumerate() {
            assert_eq!(
                state(code as u64),
                TraceEventKind::State(activity),
                "{code}"
            );
        }
    }

    fn ev(ts_ns: u64, vcpu: u16, kind: TraceEventKind) -> TraceEvent {
        TraceEvent {
            ts_ns,
            partition: 0,
            vcpu,
            kind,
        }
    }

    #[test]
    fn dominant_activity_per_tick() {
        let mut t = TraceAnalyzer::default();
        use TraceEventKind::*;
        t.feed(&[
            ev(0, 0, VmEntry),
            ev(70, 0, VmExit),
            ev(75, 0, Halt),
            ev(100, 0, Wake),
        ]);
        assert_eq!(t.take_activity(0, 0), Some(CpuActivity::Running));
        t.feed(&[ev(110, 0, Halt), ev(200, 0, Wake)]);
        assert_eq!(t.take_activity(0, 0), Some(CpuActivity::Halted));
        // No time passed: the current activity.
        assert_eq!(t.take_activity(0, 0), Some(CpuActivity::InHypervisor));
        t.feed(&[
            ev(200, 1, ScheduleOut),
            ev(900, 1, ScheduleIn),
            ev(901, 1, DebugStop),
        ]);
        assert_eq!(t.take_activity(0, 1), Some(CpuActivity::OutOfWindow));
        assert_eq!(t.take_activity(0, 1), Some(CpuActivity::Debugger));
        t.feed(&[
            ev(1000, 1, State(CpuActivity::Blocked)),
            ev(3000, 1, State(CpuActivity::Running)),
        ]);
        assert_eq!(t.take_activity(0, 1), Some(CpuActivity::Blocked));
        assert_eq!(t.take_activity(0, 2), None);
        assert!(t.has(0, 1) && !t.has(1, 0));
    }

    #[test]
    fn irq_latencies() {
        let mut t = TraceAnalyzer::default();
        use TraceEventKind::*;
        for i in 0..100u64 {
            let base = i * 1_000_000;
            t.feed(&[
                ev(
                    base + 1000 + i,
                    0,
                    IrqRaise {
                        vector: 32,
                        raised_ns: base,
                    },
                ),
                ev(base + 1000 + i, 0, IrqInject { vector: 32 }),
                ev(base + 6000 + i, 0, IrqEoi { vector: 32 }),
            ]);
        }
        t.feed(&[ev(0, 0, Lost(5))]);
        let l = t.raise_latency(0, 32).unwrap();
        assert_eq!((l.p50_ns, l.p99_ns, l.max_ns), (1049, 1098, 1099));
        let e = t.eoi_latency(0, 32).unwrap();
        assert_eq!((e.p50_ns, e.max_ns), (6049, 6099));
        assert_eq!(t.raise_latency(0, 33), None);
        assert_eq!(t.lost, 5);
    }
}
