//! The console's data layer: raw samples from the link, and snapshots with rates computed from
//! the deltas between two samples.
//!
//! A [`RawSample`] is what one poll of the host link gives: `partitions.list` always, and the
//! cumulative counters of `partitions.stats` when the agent offers that method. The
//! [`SnapshotBuilder`] turns successive samples into [`Snapshot`]s (the partitions table and the
//! interrupt statistics) that the UI draws and batch mode prints. Without counters the rates are
//! `None` and shown as `-`.

use std::collections::BTreeMap;
use std::time::Instant;

use hv_link::{PartitionInfo, VcpuState};
use serde::Serialize;
use serde_json::Value;

/// Cumulative counters of one vCPU, from `partitions.stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VcpuCounters {
    /// vCPU index.
    pub index: u32,
    /// Time spent in the guest, ns.
    pub guest_ns: u64,
    /// VM exits.
    pub exits: u64,
    /// Hypercalls.
    pub hypercalls: u64,
}

/// Cumulative counters of one partition, from `partitions.stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PartitionCounters {
    /// Partition name.
    pub partition: String,
    /// Time spent in the guest, summed over vCPUs, ns.
    pub guest_ns: u64,
    /// VM exits.
    pub exits: u64,
    /// VM exits by reason name.
    pub exits_by_reason: BTreeMap<String, u64>,
    /// Interrupts injected, by vector.
    pub irqs_by_vector: BTreeMap<u8, u64>,
    /// Hypercalls.
    pub hypercalls: u64,
    /// Trace records lost (ring full).
    pub lost_records: u64,
    /// Per-vCPU counters.
    pub vcpus: Vec<VcpuCounters>,
}

/// One `partitions.stats` result: counters and the hypervisor's clock when they were read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StatsSample {
    /// Monotonic hypervisor time of the sample, ns (0 when the agent gives none).
    pub timestamp_ns: u64,
    /// Counters per partition.
    pub partitions: Vec<PartitionCounters>,
}

fn u64_of(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// A `{name: count}` object or a `[[key, count]]` / `[{vector|reason, count}]` list.
fn count_map(v: Option<&Value>) -> Vec<(String, u64)> {
    match v {
        Some(Value::Object(m)) => m
            .iter()
            .filter_map(|(k, n)| Some((k.clone(), n.as_u64()?)))
            .collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|item| match item {
                Value::Array(pair) if pair.len() == 2 => {
                    let key = match &pair[0] {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    Some((key, pair[1].as_u64()?))
                }
                Value::Object(o) => {
                    let key = ["vector", "reason", "name", "key"]
                        .iter()
                        .find_map(|k| o.get(*k))
                        .map(|k| match k {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        })?;
                    let count = ["count", "value", "n"]
                        .iter()
                        .find_map(|k| o.get(*k))
                        .and_then(Value::as_u64)?;
                    Some((key, count))
                }
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

impl StatsSample {
    /// Reads a `partitions.stats` result leniently: either `{timestamp_ns, partitions: [..]}` or
    /// a bare list; partitions named by `partition` or `name`; totals summed from the vCPUs
    /// where the partition gives none. `None` if the shape is not recognisable at all.
    pub fn from_json(v: &Value) -> Option<StatsSample> {
        let (list, ts) = match v {
            Value::Array(list) => (list, 0),
            Value::Object(_) => (v.get("partitions")?.as_array()?, u64_of(v, "timestamp_ns")),
            _ => return None,
        };
        let mut timestamp_ns = ts;
        let mut partitions = Vec::new();
        for p in list {
            let name = p
                .get("partition")
                .or_else(|| p.get("name"))
                .and_then(Value::as_str)?;
            if timestamp_ns == 0 {
                timestamp_ns = u64_of(p, "timestamp_ns");
            }
            let vcpus: Vec<VcpuCounters> = p
                .get("vcpus")
                .and_then(Value::as_array)
                .map(|vs| {
                    vs.iter()
                        .enumerate()
                        .map(|(i, v)| VcpuCounters {
                            index: v
                                .get("index")
                                .or_else(|| v.get("vcpu"))
                                .and_then(Value::as_u64)
                                .map_or(i as u32, |x| x as u32),
                            guest_ns: u64_of(v, "guest_ns"),
                            exits: u64_of(v, "exits"),
                            hypercalls: u64_of(v, "hypercalls"),
                        })
                        .collect()
                })
                .unwrap_or_default();
            let sum = |f: fn(&VcpuCounters) -> u64| vcpus.iter().map(f).sum::<u64>();
            let or_sum = |key: &str, f: fn(&VcpuCounters) -> u64| match p.get(key) {
                Some(x) => x.as_u64().unwrap_or(0),
                None => sum(f),
            };
            // Maps given per partition, else summed over the vCPUs' maps.
            let vcpu_values: Vec<&Value> = p
                .get("vcpus")
                .and_then(Value::as_array)
                .map(|vs| vs.iter().collect())
                .unwrap_or_default();
            let merged = |key: &str| -> Vec<(String, u64)> {
                match p.get(key) {
                    Some(m) => count_map(Some(m)),
                    None => vcpu_values
                        .iter()
                        .flat_map(|v| count_map(v.get(key)))
                        .collect(),
                }
            };
            let mut exits_by_reason = BTreeMap::new();
            for (k, n) in merged("exits_by_reason") {
                *exits_by_reason.entry(k).or_insert(0) += n;
            }
            let mut irqs_by_vector = BTreeMap::new();
            for (k, n) in merged("irqs_by_vector") {
                if let Ok(vector) = k.trim_matches('"').parse::<u8>() {
                    *irqs_by_vector.entry(vector).or_insert(0) += n;
                }
            }
            partitions.push(PartitionCounters {
                partition: name.to_owned(),
                guest_ns: or_sum("guest_ns", |v| v.guest_ns),
                exits: or_sum("exits", |v| v.exits),
                hypercalls: or_sum("hypercalls", |v| v.hypercalls),
                lost_records: u64_of(p, "lost_records"),
                exits_by_reason,
                irqs_by_vector,
                vcpus,
            });
        }
        Some(StatsSample {
            timestamp_ns,
            partitions,
        })
    }

    fn get(&self, partition: &str) -> Option<&PartitionCounters> {
        self.partitions.iter().find(|p| p.partition == partition)
    }
}

/// What one poll of the link gave.
#[derive(Debug, Clone)]
pub struct RawSample {
    /// `partitions.list`.
    pub partitions: Vec<PartitionInfo>,
    /// `partitions.stats`, when the agent has it.
    pub stats: Option<StatsSample>,
    /// When the sample was taken (host clock).
    pub taken_at: Instant,
}

/// One vCPU in a [`PartitionRow`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VcpuRow {
    /// vCPU index.
    pub index: u32,
    /// Its state.
    pub state: VcpuState,
    /// With `blocked_on_device`: the device whose model it waits for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Share of one host CPU spent in the guest since the last sample, percent.
    pub cpu_pct: Option<f64>,
}

/// A partition's state with its detail, and which vCPUs wait for a device model
/// (`running, blocked on sensor`; `running, vCPU 1 blocked on sensor` with several vCPUs).
fn state_text(info: &PartitionInfo) -> String {
    let mut text = info.state.to_string();
    for v in &info.vcpus {
        if v.state == VcpuState::BlockedOnDevice {
            let device = v.device.as_deref().unwrap_or("a device");
            if info.vcpus.len() == 1 {
                text.push_str(&format!(", blocked on {device}"));
            } else {
                text.push_str(&format!(", vCPU {} blocked on {device}", v.index));
            }
        }
    }
    text
}

/// One line of the partitions table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartitionRow {
    /// Numeric partition id.
    pub id: u32,
    /// Partition name.
    pub name: String,
    /// State kind (`running`, `paused`, `stopped_in_debugger`, …).
    pub state: String,
    /// State with its detail (`crashed (triple fault)`).
    pub state_text: String,
    /// vCPUs.
    pub vcpus: Vec<VcpuRow>,
    /// Guest time since the last sample in percent of one host CPU, summed over vCPUs (as in
    /// top and xentop: up to 100 × vCPUs).
    pub cpu_pct: Option<f64>,
    /// VM exits per second.
    pub exits_per_s: Option<f64>,
    /// Interrupts injected per second (all vectors).
    pub irqs_per_s: Option<f64>,
    /// Hypercalls per second.
    pub hypercalls_per_s: Option<f64>,
    /// Trace records lost so far.
    pub lost_records: Option<u64>,
}

/// Latency percentiles of one interrupt vector, from trace records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Latency {
    /// Median, ns.
    pub p50_ns: u64,
    /// 99th percentile, ns.
    pub p99_ns: u64,
    /// Maximum, ns.
    pub max_ns: u64,
}

impl Latency {
    /// Percentiles (nearest rank) of `samples`; `None` when empty.
    pub fn from_samples(samples: &mut [u64]) -> Option<Latency> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let rank = |q: f64| {
            let r = (q * samples.len() as f64).ceil() as usize;
            samples[r.clamp(1, samples.len()) - 1]
        };
        Some(Latency {
            p50_ns: rank(0.50),
            p99_ns: rank(0.99),
            max_ns: samples[samples.len() - 1],
        })
    }
}

/// Interrupt statistics of one vector of one partition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IrqRow {
    /// Partition name.
    pub partition: String,
    /// Vector.
    pub vector: u8,
    /// Injections per second since the last sample.
    pub per_s: Option<f64>,
    /// Injections so far.
    pub total: u64,
    /// Raise-to-injection latency, when trace data is available.
    pub latency: Option<Latency>,
    /// Raise-to-EOI latency (until the guest's handler ended it), when trace data is available.
    pub eoi_latency: Option<Latency>,
}

/// What the console shows at one moment: the partitions table and interrupt statistics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    /// Sequence number (0, 1, …) since the collector started.
    pub seq: u64,
    /// Milliseconds since the first sample.
    pub elapsed_ms: u64,
    /// System name.
    pub system: String,
    /// True when the rates come from `partitions.stats` counters.
    pub stats: bool,
    /// True when the counters were read for this snapshot (false: states only, rates carried
    /// forward).
    #[serde(skip)]
    pub fresh_counters: bool,
    /// Partitions in id order.
    pub partitions: Vec<PartitionRow>,
    /// Interrupt vectors, by partition then vector.
    pub interrupts: Vec<IrqRow>,
}

impl Snapshot {
    /// The row of partition `name`.
    pub fn partition(&self, name: &str) -> Option<&PartitionRow> {
        self.partitions.iter().find(|p| p.name == name)
    }
}

/// Turns successive [`RawSample`]s into [`Snapshot`]s.
#[derive(Debug, Default)]
pub struct SnapshotBuilder {
    system: String,
    seq: u64,
    first: Option<Instant>,
    prev: Option<(StatsSample, Instant)>,
    last: Option<Snapshot>,
}

fn rate(now: u64, before: u64, secs: f64) -> Option<f64> {
    (secs > 0.0).then(|| now.saturating_sub(before) as f64 / secs)
}

impl SnapshotBuilder {
    /// A builder for system `system`.
    pub fn new(system: impl Into<String>) -> Self {
        Self {
            system: system.into(),
            ..Self::default()
        }
    }

    /// Forget the previous counters (after a reconnect: the agent's counters may have restarted).
    pub fn reset_rates(&mut self) {
        self.prev = None;
    }

    /// The snapshot for `sample`, with rates against the previous sample's counters.
    pub fn build(&mut self, sample: RawSample) -> Snapshot {
        let first = *self.first.get_or_insert(sample.taken_at);
        let seq = self.seq;
        self.seq += 1;
        let prev = self.prev.take();
        let secs = match (&sample.stats, &prev) {
            (Some(now), Some((before, _))) if now.timestamp_ns > before.timestamp_ns => {
                Some((now.timestamp_ns - before.timestamp_ns) as f64 / 1e9)
            }
            (Some(_), Some((_, at))) => {
                Some(sample.taken_at.saturating_duration_since(*at).as_secs_f64())
            }
            _ => None,
        };
        let mut partitions: Vec<PartitionRow> = Vec::new();
        let mut interrupts = Vec::new();
        let mut infos = sample.partitions;
        infos.sort_by_key(|p| p.id);
        for info in infos {
            let now = sample.stats.as_ref().and_then(|s| s.get(&info.name));
            let before = prev.as_ref().and_then(|(s, _)| s.get(&info.name));
            let pair = match (now, before, secs) {
                (Some(n), Some(b), Some(s)) if s > 0.0 => Some((n, b, s)),
                _ => None,
            };
            let vcpus = info
                .vcpus
                .iter()
                .map(|v| VcpuRow {
                    index: v.index,
                    device: v.device.clone(),
                    state: v.state,
                    cpu_pct: pair.and_then(|(n, b, s)| {
                        let nv = n.vcpus.iter().find(|c| c.index == v.index)?;
                        let bv = b.vcpus.iter().find(|c| c.index == v.index)?;
                        // guest_ns grows at exits: clamp the burst a long guest run gives.
                        let pct = nv.guest_ns.saturating_sub(bv.guest_ns) as f64 / (s * 1e7);
                        Some(pct.min(100.0))
                    }),
                })
                .collect();
            if let Some(n) = now {
                for (&vector, &total) in &n.irqs_by_vector {
                    let per_s = pair.and_then(|(_, b, s)| {
                        rate(
                            total,
                            b.irqs_by_vector.get(&vector).copied().unwrap_or(0),
                            s,
                        )
                    });
                    interrupts.push(IrqRow {
                        partition: info.name.clone(),
                        vector,
                        per_s,
                        total,
                        latency: None,
                        eoi_latency: None,
                    });
                }
            }
            let irq_total = |c: &PartitionCounters| c.irqs_by_vector.values().sum::<u64>();
            partitions.push(PartitionRow {
                id: info.id,
                state: info.state.kind().to_owned(),
                state_text: state_text(&info),
                name: info.name.clone(),
                vcpus,
                cpu_pct: pair.map(|(n, b, s)| {
                    let pct = n.guest_ns.saturating_sub(b.guest_ns) as f64 / (s * 1e7);
                    pct.min(100.0 * info.vcpus.len().max(1) as f64)
                }),
                exits_per_s: pair.and_then(|(n, b, s)| rate(n.exits, b.exits, s)),
                irqs_per_s: pair.and_then(|(n, b, s)| rate(irq_total(n), irq_total(b), s)),
                hypercalls_per_s: pair.and_then(|(n, b, s)| rate(n.hypercalls, b.hypercalls, s)),
                lost_records: now.map(|n| n.lost_records),
            });
        }
        let stats = sample.stats.is_some();
        if let Some(s) = sample.stats {
            self.prev = Some((s, sample.taken_at));
        }
        let snapshot = Snapshot {
            seq,
            elapsed_ms: sample.taken_at.saturating_duration_since(first).as_millis() as u64,
            system: self.system.clone(),
            stats,
            fresh_counters: stats,
            partitions,
            interrupts,
        };
        self.last = Some(snapshot.clone());
        snapshot
    }

    /// A snapshot with fresh states from `partitions.list` alone, carrying the rates of the
    /// last snapshot forward (so that vCPU states can be sampled more often than counters).
    pub fn build_states(&mut self, partitions: Vec<PartitionInfo>, taken_at: Instant) -> Snapshot {
        let Some(last) = self.last.clone() else {
            return self.build(RawSample {
                partitions,
                stats: None,
                taken_at,
            });
        };
        let first = *self.first.get_or_insert(taken_at);
        let seq = self.seq;
        self.seq += 1;
        let mut infos = partitions;
        infos.sort_by_key(|p| p.id);
        let rows = infos
            .into_iter()
            .map(|info| {
                let old = last.partition(&info.name);
                PartitionRow {
                    id: info.id,
                    state: info.state.kind().to_owned(),
                    state_text: state_text(&info),
                    vcpus: info
                        .vcpus
                        .iter()
                        .map(|v| VcpuRow {
                            index: v.index,
                            device: v.device.clone(),
                            state: v.state,
                            cpu_pct: old
                                .and_then(|o| o.vcpus.iter().find(|x| x.index == v.index))
                                .and_then(|x| x.cpu_pct),
                        })
                        .collect(),
                    cpu_pct: old.and_then(|o| o.cpu_pct),
                    exits_per_s: old.and_then(|o| o.exits_per_s),
                    irqs_per_s: old.and_then(|o| o.irqs_per_s),
                    hypercalls_per_s: old.and_then(|o| o.hypercalls_per_s),
                    lost_records: old.and_then(|o| o.lost_records),
                    name: info.name,
                }
            })
            .collect();
        let snapshot = Snapshot {
            seq,
            elapsed_ms: taken_at.saturating_duration_since(first).as_millis() as u64,
            system: self.system.clone(),
            stats: last.stats,
            fresh_counters: false,
            partitions: rows,
            interrupts: last.interrupts.clone(),
        };
        self.last = Some(snapshot.clone());
        snapshot
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use hv_link::{PartitionState, VcpuInfo};
    use serde_json::json;
    use std::time::Duration;

    pub(crate) fn info(
        id: u32,
        name: &str,
        state: PartitionState,
        vcpus: &[VcpuState],
    ) -> PartitionInfo {
        PartitionInfo {
            id,
            name: name.into(),
            state,
            vcpus: vcpus
                .iter()
                .enumerate()
                .map(|(i, s)| VcpuInfo {
                    index: i as u32,
                    state: *s,
                    device: (*s == VcpuState::BlockedOnDevice).then(|| "sensor".into()),
                })
                .collect(),
            image: format!("{name}.elf"),
        }
    }

    fn stats(ts: u64, guest_ns: u64, exits: u64, timer: u64) -> Value {
        json!({
            "timestamp_ns": ts,
            "partitions": [{
                "partition": "control",
                "vcpus": [{"index": 0, "guest_ns": guest_ns, "exits": exits, "hypercalls": exits / 2}],
                "exits_by_reason": {"io": exits},
                "irqs_by_vector": {"32": timer, "40": 1},
                "lost_records": 3
            }]
        })
    }

    #[test]
    fn stats_parse_leniently() {
        let s = StatsSample::from_json(&stats(5, 100, 10, 7)).unwrap();
        assert_eq!(s.timestamp_ns, 5);
        let p = &s.partitions[0];
        assert_eq!((p.guest_ns, p.exits, p.hypercalls), (100, 10, 5));
        assert_eq!(p.irqs_by_vector[&32], 7);
        assert_eq!(p.lost_records, 3);
        // A bare list, `name`, vector lists.
        let s = StatsSample::from_json(&json!([{
            "name": "w", "guest_ns": 9, "timestamp_ns": 8,
            "irqs_by_vector": [{"vector": 48, "count": 2}, [33, 4]]
        }]))
        .unwrap();
        assert_eq!(s.timestamp_ns, 8);
        assert_eq!(s.partitions[0].guest_ns, 9);
        assert_eq!(s.partitions[0].irqs_by_vector[&48], 2);
        assert_eq!(s.partitions[0].irqs_by_vector[&33], 4);
        assert!(StatsSample::from_json(&json!("nope")).is_none());
        // The agent's shape: maps per vCPU, `name`, partition totals partly absent.
        let s = StatsSample::from_json(&json!({
            "timestamp_ns": 77,
            "partitions": [{
                "id": 2, "name": "worker", "state": {"kind": "running"},
                "hypercalls": 5, "irqs_injected": 7, "unmapped_accesses": 0, "lost_records": 1,
                "vcpus": [
                    {"index": 0, "state": "running", "guest_ns": 10, "exits": 3,
                     "exits_by_reason": {"2": 3}, "irqs_by_vector": {"32": 4}, "hypercalls": 2},
                    {"index": 1, "state": "halted", "guest_ns": 20, "exits": 4,
                     "exits_by_reason": {"2": 1, "5": 3}, "irqs_by_vector": {"32": 1, "48": 2},
                     "hypercalls": 3}
                ]
            }]
        }))
        .unwrap();
        let p = &s.partitions[0];
        assert_eq!(
            (p.guest_ns, p.exits, p.hypercalls, p.lost_records),
            (30, 7, 5, 1)
        );
        assert_eq!(p.irqs_by_vector[&32], 5);
        assert_eq!(p.irqs_by_vector[&48], 2);
        assert_eq!(p.exits_by_reason["2"], 4);
        assert_eq!(p.vcpus[1].guest_ns, 20);
    }

    #[test]
    fn rates_from_deltas() {
        let t0 = Instant::now();
        let list = vec![info(
            0,
            "control",
            PartitionState::Running,
            &[VcpuState::Running],
        )];
        let mut b = SnapshotBuilder::new("demo");
        let s0 = b.build(RawSample {
            partitions: list.clone(),
            stats: StatsSample::from_json(&stats(1_000_000_000, 0, 0, 0)),
            taken_at: t0,
        });
        assert_eq!(s0.partitions[0].cpu_pct, None);
        assert_eq!(s0.interrupts[0].per_s, None);
        // Half a second of hypervisor time later: 250 ms in the guest = 50 %.
        let s1 = b.build(RawSample {
            partitions: list.clone(),
            stats: StatsSample::from_json(&stats(1_500_000_000, 250_000_000, 1000, 500)),
            taken_at: t0 + Duration::from_millis(700),
        });
        let row = &s1.partitions[0];
        assert_eq!(s1.seq, 1);
        assert_eq!(s1.elapsed_ms, 700);
        assert!((row.cpu_pct.unwrap() - 50.0).abs() < 1e-9);
        assert!((row.vcpus[0].cpu_pct.unwrap() - 50.0).abs() < 1e-9);
        assert!((row.exits_per_s.unwrap() - 2000.0).abs() < 1e-9);
        assert!((row.hypercalls_per_s.unwrap() - 1000.0).abs() < 1e-9);
        assert!((row.irqs_per_s.unwrap() - 1000.0).abs() < 1e-9);
        assert_eq!(row.lost_records, Some(3));
        let timer = s1.interrupts.iter().find(|i| i.vector == 32).unwrap();
        assert!((timer.per_s.unwrap() - 1000.0).abs() < 1e-9);
        assert_eq!(timer.total, 500);
    }

    #[test]
    fn state_only_samples_carry_rates_forward() {
        let t0 = Instant::now();
        let mut b = SnapshotBuilder::new("demo");
        let running = vec![info(
            0,
            "control",
            PartitionState::Running,
            &[VcpuState::Running],
        )];
        b.build(RawSample {
            partitions: running.clone(),
            stats: StatsSample::from_json(&stats(1_000_000_000, 0, 0, 0)),
            taken_at: t0,
        });
        b.build(RawSample {
            partitions: running,
            stats: StatsSample::from_json(&stats(2_000_000_000, 100_000_000, 10, 1000)),
            taken_at: t0 + Duration::from_secs(1),
        });
        let paused = vec![info(
            0,
            "control",
            PartitionState::Paused,
            &[VcpuState::Paused],
        )];
        let s = b.build_states(paused, t0 + Duration::from_millis(1100));
        assert_eq!(s.seq, 2);
        assert_eq!(s.elapsed_ms, 1100);
        assert_eq!(s.partitions[0].state, "paused");
        assert_eq!(s.partitions[0].vcpus[0].state, VcpuState::Paused);
        assert!((s.partitions[0].cpu_pct.unwrap() - 10.0).abs() < 1e-9);
        assert!((s.partitions[0].vcpus[0].cpu_pct.unwrap() - 10.0).abs() < 1e-9);
        assert_eq!(s.interrupts.len(), 2);
        assert!(s.stats);
        // Before any full sample: no rates.
        let mut fresh = SnapshotBuilder::new("demo");
        let s = fresh.build_states(
            vec![info(
                0,
                "control",
                PartitionState::Running,
                &[VcpuState::Halted],
            )],
            t0,
        );
        assert_eq!(s.partitions[0].cpu_pct, None);
    }

    #[test]
    fn without_stats_rates_are_absent() {
        let mut b = SnapshotBuilder::new("demo");
        let list = vec![
            info(
                1,
                "worker",
                PartitionState::Paused,
                &[VcpuState::Paused, VcpuState::Paused],
            ),
            info(0, "control", PartitionState::Running, &[VcpuState::Halted]),
        ];
        for _ in 0..2 {
            let s = b.build(RawSample {
                partitions: list.clone(),
                stats: None,
                taken_at: Instant::now(),
            });
            assert!(!s.stats);
            assert_eq!(s.partitions[0].name, "control");
            assert_eq!(s.partitions[1].state, "paused");
            assert!(s.partitions.iter().all(|p| p.cpu_pct.is_none()));
            assert!(s.interrupts.is_empty());
        }
    }

    #[test]
    fn latency_percentiles() {
        let mut v: Vec<u64> = (1..=100).rev().collect();
        let l = Latency::from_samples(&mut v).unwrap();
        assert_eq!((l.p50_ns, l.p99_ns, l.max_ns), (50, 99, 100));
        assert_eq!(Latency::from_samples(&mut []), None);
    }
}
