//! Large synthetic traces for tests and benchmarks, laid out like recorded ones.
//!
//! [`write`] simulates a small system — `control` (2 vCPUs, a device-model client and IPC sender),
//! `telemetry` (1 vCPU, IPC receiver), `uart-model` (1 vCPU, a device model) and `worker`
//! (4 vCPUs with schedule windows) — and writes its records the way the debug agent's drainer
//! does: in rounds, each round a batch with every vCPU's records of that stretch of time. The
//! records nest as on a real system: guest time between entry and exit; halts, schedule windows
//! and debugger stops outside the guest; interrupts raised and injected before an entry and ended
//! with an EOI hypercall; device-model requests from an MMIO exit through the model's take and
//! answer to the client's reply; IPC sends with their receive on the other partition. Every
//! slice that opens also closes, and the output is the same for the same seed.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::Write;

use hv_link::trace::{
    MAX_BATCH_RECORDS, RecordKind, TraceChannel, TraceClock, TraceEndpoint, TraceError,
    TraceHeader, TracePartition, TraceRecord, TraceWriter,
};

/// How big a trace to make.
#[derive(Debug, Clone, Copy)]
pub struct SynthOptions {
    /// Records to write, at least (the last iterations are completed, so a few more).
    pub events: u64,
    /// Seed of the pseudo-random choices.
    pub seed: u64,
}

/// The system the generator simulates.
pub fn header() -> TraceHeader {
    let partition = |id: u32, name: &str, vcpus| TracePartition {
        id,
        name: name.into(),
        vcpus,
        image: format!("synthetic/{name}.elf"),
    };
    TraceHeader {
        system: "synthetic".into(),
        clock: TraceClock {
            tsc_khz: 2_000_000,
            epoch_unix_ns: 1_700_000_000_000_000_000,
        },
        partitions: vec![
            partition(0, "control", 2),
            partition(1, "telemetry", 1),
            partition(2, "uart-model", 1),
            partition(3, "worker", 4),
        ],
        // Control's channel 1 is telemetry's channel 1 (what their IPC records carry).
        channels: vec![TraceChannel {
            name: "telemetry".into(),
            endpoints: vec![
                TraceEndpoint {
                    partition: 0,
                    channel: 1,
                },
                TraceEndpoint {
                    partition: 1,
                    channel: 1,
                },
            ],
        }],
    }
}

/// What a vCPU does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Device-model client, IPC sender.
    Control,
    /// IPC receiver with a periodic timer.
    Telemetry,
    /// The device model: mostly halted, takes and answers requests.
    Model,
    /// Compute with schedule windows.
    Worker,
}

/// The model's lane and the IPC receiver's lane (indices into the lanes).
const TELEMETRY_LANE: usize = 2;
const MODEL_LANE: usize = 3;
/// Simulated time per drain round.
const ROUND_NS: u64 = 1_000_000;

struct Lane {
    partition: u32,
    vcpu: u16,
    role: Role,
    /// Where this vCPU's own timeline is.
    t: u64,
    iterations: u64,
    /// Injected interrupts waiting for their EOI.
    in_service: Vec<u64>,
    /// Records not yet written, earliest first (own and those other vCPUs caused here).
    pending: BinaryHeap<Reverse<Pending>>,
}

/// A record waiting to be written, ordered by (timestamp, sequence number).
#[derive(Debug, Clone, Copy)]
struct Pending(u64, u64, TraceRecord);

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.0, self.1) == (other.0, other.1)
    }
}

impl Eq for Pending {}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.0, self.1).cmp(&(other.0, other.1))
    }
}

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }

    /// True with probability `1/n`.
    fn one_in(&mut self, n: u64) -> bool {
        self.next().is_multiple_of(n)
    }
}

struct Sim {
    lanes: Vec<Lane>,
    rng: Rng,
    /// Sequence number: keeps the order of records with equal timestamps.
    seq: u64,
    next_request: u64,
    generated: u64,
    /// When the last IPC message is received (the channel is FIFO: messages arrive in order).
    last_received: u64,
}

impl Sim {
    fn push(&mut self, lane: usize, t: u64, kind: RecordKind, a: u64, b: u64) {
        let l = &mut self.lanes[lane];
        let r = TraceRecord {
            timestamp: t,
            kind: kind as u16,
            vcpu: l.vcpu,
            partition: l.partition,
            a,
            b,
        };
        self.seq += 1;
        l.pending.push(Reverse(Pending(t, self.seq, r)));
        self.generated += 1;
    }

    /// One guest entry and what its exit leads to, on `lane`'s own timeline.
    fn iterate(&mut self, i: usize) {
        use RecordKind::*;
        let role = self.lanes[i].role;
        let mut t = self.lanes[i].t;
        self.lanes[i].iterations += 1;
        let iteration = self.lanes[i].iterations;
        if role == Role::Worker && iteration.is_multiple_of(64) {
            self.push(i, t, ScheduleOut, 0, 0);
            t += self.rng.range(50_000, 150_000);
            self.push(i, t, ScheduleIn, 0, 0);
            t += 200;
        }
        if self.rng.one_in(20_000) {
            self.push(i, t, DebugStop, 0, 0);
            t += self.rng.range(1_000_000, 3_000_000);
            self.push(i, t, DebugResume, 0, 0);
            t += 200;
        }
        self.push(i, t, VmEntry, 0, 0);
        t += self.rng.range(1_000, 20_000);
        let rip = 0x10_0000 + self.rng.range(0, 0x4000);
        let choice = self.rng.range(0, 100);
        match role {
            Role::Control if choice < 25 => {
                // An MMIO access to the UART: a device-model request.
                self.push(i, t, VmExit, 6, rip);
                let offset = self.rng.range(0, 8);
                self.push(i, t + 100, DeviceAccess, 0xfe00_0000 + offset, (1 << 1) | 1);
                let id = self.next_request;
                self.next_request += 1;
                let request = t + 300;
                self.push(i, request, ModelRequest, id, offset);
                let take = request + self.rng.range(1_000, 4_000);
                self.push(MODEL_LANE, take, ModelReceive, id, offset);
                let answer = take + self.rng.range(500, 3_000);
                self.push(MODEL_LANE, answer, ModelRespond, id, 0x41);
                let reply = answer + self.rng.range(300, 1_000);
                self.push(i, reply, ModelReply, id, reply - request);
                t = reply + 200;
            }
            Role::Control if choice < 40 && self.lanes[i].vcpu == 0 => {
                // IPC to telemetry, from one vCPU (so messages are sent in time order).
                self.push(i, t, VmExit, 3, rip);
                let len = self.rng.range(8, 256);
                self.push(i, t + 200, IpcSend, 1, len);
                self.push(i, t + 300, Hypercall, 9, 0);
                let received = (t + self.rng.range(2_000, 20_000)).max(self.last_received + 100);
                self.last_received = received;
                self.push(TELEMETRY_LANE, received, IpcReceive, 1, len);
                t += 500;
            }
            _ if choice < 55 && !self.lanes[i].in_service.is_empty() => {
                // The guest ends its interrupt.
                self.push(i, t, VmExit, 3, rip);
                let vector = self.lanes[i].in_service.pop().unwrap_or(32);
                self.push(i, t + 100, IrqEoi, vector, 0);
                self.push(i, t + 150, Hypercall, 5, 0);
                t += 300;
            }
            _ if choice < 70 || role == Role::Model => {
                // Idle: halt until an interrupt.
                self.push(i, t, VmExit, 5, rip);
                self.push(i, t + 100, Halt, 0, 0);
                let idle = match role {
                    Role::Model => self.rng.range(2_000, 20_000),
                    _ => self.rng.range(10_000, 200_000),
                };
                if self.rng.one_in(2_000) {
                    // The debugger stops the halted vCPU for a while (nested in the halt).
                    self.push(i, t + 100 + idle / 3, DebugStop, 0, 0);
                    self.push(i, t + 100 + 2 * idle / 3, DebugResume, 0, 0);
                }
                t += 100 + idle;
                self.push(i, t, Wake, 0, 0);
                let vector = if role == Role::Telemetry { 48 } else { 32 };
                self.push(i, t + 100, IrqRaise, vector, t.saturating_sub(500));
                self.push(i, t + 100, IrqInject, vector, 0);
                self.lanes[i].in_service.push(vector);
                t += 200;
            }
            _ if choice < 80 => {
                self.push(i, t, VmExit, 2, rip);
                let port = 0x3f8 + self.rng.range(0, 8);
                self.push(i, t + 100, DeviceAccess, port, (1 << 1) | (choice & 1));
                t += 400;
            }
            _ if choice < 85 => {
                self.push(i, t, VmExit, 3, rip);
                let id = self.rng.range(1, 8);
                self.push(i, t + 100, Marker, id, iteration);
                self.push(i, t + 150, Hypercall, 12, 0);
                t += 300;
            }
            _ => {
                self.push(i, t, VmExit, 3, rip);
                self.push(i, t + 100, Hypercall, 14, 0);
                t += 300;
            }
        }
        self.lanes[i].t = t;
    }
}

/// Writes a synthetic trace of at least `options.events` records to `out`; returns how many.
pub fn write<W: Write>(out: W, options: SynthOptions) -> Result<u64, TraceError> {
    let header = header();
    let mut writer = TraceWriter::new(out, &header)?;
    let mut sim = Sim {
        lanes: Vec::new(),
        rng: Rng(options.seed),
        seq: 0,
        next_request: 1,
        generated: 0,
        last_received: 0,
    };
    for p in &header.partitions {
        let role = match p.name.as_str() {
            "control" => Role::Control,
            "telemetry" => Role::Telemetry,
            "uart-model" => Role::Model,
            _ => Role::Worker,
        };
        for v in 0..p.vcpus {
            sim.lanes.push(Lane {
                partition: p.id,
                vcpu: v as u16,
                role,
                t: 1_000 + u64::from(v) * 37,
                iterations: 0,
                in_service: Vec::new(),
                pending: BinaryHeap::new(),
            });
        }
    }
    debug_assert_eq!(sim.lanes[MODEL_LANE].role, Role::Model);
    debug_assert_eq!(sim.lanes[TELEMETRY_LANE].role, Role::Telemetry);
    for i in 0..sim.lanes.len() {
        let t = sim.lanes[i].t;
        sim.push(i, t, RecordKind::StateChange, 1, 0);
        sim.lanes[i].t += 100;
    }
    let mut written = 0u64;
    let mut batch: Vec<TraceRecord> = Vec::new();
    let mut round_end = ROUND_NS;
    loop {
        let done = sim.generated >= options.events;
        if !done {
            for i in 0..sim.lanes.len() {
                while sim.lanes[i].t < round_end {
                    sim.iterate(i);
                }
            }
            round_end += ROUND_NS;
        }
        // Nothing earlier than every vCPU's own time can still be made (other vCPUs' effects
        // come after their cause): that much of each vCPU is written, as the drainer would.
        let safe = if done {
            u64::MAX
        } else {
            sim.lanes.iter().map(|l| l.t).min().unwrap_or(0)
        };
        batch.clear();
        for lane in &mut sim.lanes {
            while let Some(&Reverse(Pending(t, _, r))) = lane.pending.peek() {
                if t >= safe {
                    break;
                }
                lane.pending.pop();
                batch.push(r);
            }
        }
        for part in batch.chunks(MAX_BATCH_RECORDS) {
            writer.write_batch(part)?;
        }
        written += batch.len() as u64;
        if done {
            break;
        }
    }
    writer.finish()?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Trace;
    use std::collections::HashMap;

    #[test]
    fn traces_are_complete_nested_and_reproducible() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.hvt");
        let n = write(
            std::fs::File::create(&path).unwrap(),
            SynthOptions {
                events: 50_000,
                seed: 7,
            },
        )
        .unwrap();
        assert!((50_000..60_000).contains(&n), "{n}");
        let again = write(
            Vec::new(),
            SynthOptions {
                events: 50_000,
                seed: 7,
            },
        )
        .unwrap();
        assert_eq!(again, n);
        let trace = Trace::open(&path).unwrap();
        assert_eq!(trace.records.len() as u64, n);
        // Every vCPU's slices open and close in turn, and each request has its four records.
        let mut open: HashMap<(u32, u16), Vec<RecordKind>> = HashMap::new();
        let mut requests: HashMap<u64, Vec<RecordKind>> = HashMap::new();
        let mut kinds: HashMap<RecordKind, u64> = HashMap::new();
        for r in &trace.records {
            use RecordKind::*;
            let kind = r.kind().unwrap();
            *kinds.entry(kind).or_default() += 1;
            let stack = open.entry((r.partition, r.vcpu)).or_default();
            let closes = match kind {
                VmExit => Some(VmEntry),
                Wake => Some(Halt),
                ScheduleIn => Some(ScheduleOut),
                DebugResume => Some(DebugStop),
                ModelReply => Some(ModelRequest),
                _ => None,
            };
            match kind {
                VmEntry | Halt | ScheduleOut | DebugStop | ModelRequest => stack.push(kind),
                _ => {}
            }
            if let Some(opener) = closes {
                assert_eq!(stack.pop(), Some(opener), "{r:?}");
            }
            if matches!(
                kind,
                ModelRequest | ModelReceive | ModelRespond | ModelReply
            ) {
                requests.entry(r.a).or_default().push(kind);
            }
        }
        assert!(open.values().all(Vec::is_empty));
        assert_eq!(open.len(), 8, "every vCPU has records");
        assert!(!requests.is_empty());
        use RecordKind::*;
        for seq in requests.values() {
            assert_eq!(seq, &[ModelRequest, ModelReceive, ModelRespond, ModelReply]);
        }
        for k in [
            IrqRaise,
            IrqInject,
            IrqEoi,
            Hypercall,
            IpcSend,
            IpcReceive,
            DeviceAccess,
            Marker,
            ScheduleOut,
        ] {
            assert!(kinds.get(&k).copied().unwrap_or(0) > 0, "{k:?}");
        }
        assert_eq!(kinds[&IpcSend], kinds[&IpcReceive]);
    }
}
