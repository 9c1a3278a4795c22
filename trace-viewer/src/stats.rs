//! Analyses of a trace: CPU per vCPU (guest, halted), exit reasons, hypercalls, interrupt latency
//! (raise→inject, inject→EOI) and period jitter per vector, device-model latency per partition,
//! and lost records. [`Stats::compute`] does them all in one pass; [`Stats::render`] prints them.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use hv_link::trace::{
    IrqLatencies, IrqLatency, RecordKind, TraceHeader, TraceRecord, exit_reason_name,
    hypercall_name, vcpu_state_name,
};
use serde::Serialize;

use crate::stream::TraceStream;
use crate::{Trace, ViewerError};

/// Everything `hv trace stats` reports.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    /// System name.
    pub system: String,
    /// Last minus first timestamp.
    pub duration_ns: u64,
    /// Records in the trace (`Lost` markers excluded).
    pub records: u64,
    /// Records the hypervisor or the link dropped (the sum of the `Lost` markers).
    pub lost: u64,
    /// Per partition (its vCPUs summed), in partition order.
    pub partitions: Vec<PartitionStats>,
    /// Per vCPU, in partition and vCPU order.
    pub vcpus: Vec<VcpuStats>,
    /// Per partition and vector, in that order.
    pub irqs: Vec<IrqStats>,
    /// Per client partition with device-model traffic.
    pub devices: Vec<DeviceStats>,
}

/// One partition: the sums over its vCPUs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PartitionStats {
    /// Partition name.
    pub partition: String,
    /// vCPUs with records.
    pub vcpus: u32,
    /// Time inside KVM_RUN, all vCPUs.
    pub guest_ns: u64,
    /// Time halted, all vCPUs.
    pub halted_ns: u64,
    /// VM exits.
    pub exits: u64,
    /// Hypercalls.
    pub hypercalls: u64,
}

/// One vCPU.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VcpuStats {
    /// Partition name.
    pub partition: String,
    /// vCPU index.
    pub vcpu: u16,
    /// Time inside KVM_RUN (entry to exit).
    pub guest_ns: u64,
    /// Time halted (halt to wake).
    pub halted_ns: u64,
    /// VM entries.
    pub entries: u64,
    /// Exits by reason name.
    pub exits: BTreeMap<String, u64>,
    /// Hypercalls by name.
    pub hypercalls: BTreeMap<String, u64>,
    /// State changes by new state (the states at the recording's start are not changes).
    pub states: BTreeMap<String, u64>,
}

/// One interrupt vector of one partition.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IrqStats {
    /// Partition name.
    pub partition: String,
    /// Vector.
    pub vector: u8,
    /// From the raise to the injection.
    pub raise_to_inject: Summary,
    /// From the injection to the guest's EOI.
    pub inject_to_eoi: Summary,
    /// Between two injections on one vCPU (a periodic timer's period).
    pub period: Summary,
    /// How far periods stray from their median (|period - median|): the period's jitter.
    pub jitter: Summary,
}

/// Device-model traffic of one client partition.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeviceStats {
    /// Client partition name.
    pub partition: String,
    /// Requests queued.
    pub requests: u64,
    /// Bus errors instead of replies.
    pub bus_errors: u64,
    /// From the access to the model's reply.
    pub latency: Summary,
}

/// A distribution of durations.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// Largest.
    pub max_ns: u64,
    /// Power-of-two buckets: (upper bound in ns, samples in `(bound/2, bound]`), empty ones left
    /// out.
    pub histogram: Vec<(u64, u64)>,
}

impl Summary {
    /// The summary of `samples` (any order).
    pub fn of(mut samples: Vec<u64>) -> Summary {
        if samples.is_empty() {
            return Summary::default();
        }
        samples.sort_unstable();
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        let mut buckets: BTreeMap<u64, u64> = BTreeMap::new();
        for &s in &samples {
            *buckets.entry(s.max(1).next_power_of_two()).or_default() += 1;
        }
        Summary {
            count: samples.len() as u64,
            p50_ns: at(0.5),
            p99_ns: at(0.99),
            max_ns: samples[samples.len() - 1],
            histogram: buckets.into_iter().collect(),
        }
    }
}

#[derive(Default)]
struct VcpuTally {
    stats: VcpuStats,
    entered_at: Option<u64>,
    halted_at: Option<u64>,
    /// Whether the state this vCPU was in when the trace began is known (see
    /// [`crate::export::initial_slices`]).
    lead_done: bool,
}

#[derive(Default)]
struct IrqTally {
    raise_to_inject: Vec<u64>,
    inject_to_eoi: Vec<u64>,
    periods: Vec<u64>,
    last_inject: HashMap<u16, u64>,
}

impl Stats {
    /// Analyses `trace` in one pass over its records.
    pub fn compute(trace: &Trace) -> Stats {
        Stats::of_records(&trace.header, trace.records.iter().copied())
    }

    /// Analyses a trace file in one pass over its records, read in time order as it goes (memory
    /// does not grow with the number of records, only with the samples kept for percentiles).
    pub fn compute_stream(stream: &TraceStream) -> Result<Stats, ViewerError> {
        let mut records = stream.records();
        let stats = Stats::of_records(stream.header(), &mut records);
        records.finish()?;
        Ok(stats)
    }

    /// Analyses `records` (in time order) of a trace with `header`.
    pub fn of_records(header: &TraceHeader, input: impl IntoIterator<Item = TraceRecord>) -> Stats {
        let mut vcpus: BTreeMap<(u32, u16), VcpuTally> = BTreeMap::new();
        let mut irqs: BTreeMap<(u32, u8), IrqTally> = BTreeMap::new();
        let mut devices: BTreeMap<u32, (DeviceStats, Vec<u64>)> = BTreeMap::new();
        let mut latencies = IrqLatencies::default();
        let (mut records, mut lost) = (0, 0);
        let (mut first, mut last) = (u64::MAX, 0);
        for r in input {
            let r = &r;
            first = first.min(r.timestamp);
            last = last.max(r.timestamp);
            if let Some(sample) = latencies.feed(r) {
                let irq = irqs.entry((sample.partition, sample.vector)).or_default();
                match sample.what {
                    IrqLatency::RaiseToInject => irq.raise_to_inject.push(sample.ns),
                    IrqLatency::InjectToEoi => irq.inject_to_eoi.push(sample.ns),
                }
            }
            let vcpu = vcpus.entry((r.partition, r.vcpu)).or_default();
            let Some(kind) = r.kind() else {
                records += 1;
                continue;
            };
            if !vcpu.lead_done && crate::export::ends_lead(r) {
                // The vCPU was halted or in the guest from the trace's first timestamp: its state
                // at the recording's start says so, or its first slice record ends that slice.
                vcpu.lead_done = true;
                let initial = crate::export::initial_slices(std::slice::from_ref(r));
                match initial.first().map(|(_, s)| *s) {
                    Some(crate::export::HALTED) => vcpu.halted_at = Some(first),
                    Some(crate::export::GUEST) => vcpu.entered_at = Some(first),
                    _ => {}
                }
            }
            if kind == RecordKind::Lost {
                lost += r.a;
                // What was open may have ended among the lost records.
                vcpu.entered_at = None;
                vcpu.halted_at = None;
                continue;
            }
            records += 1;
            let s = &mut vcpu.stats;
            match kind {
                RecordKind::VmEntry => {
                    s.entries += 1;
                    vcpu.entered_at = Some(r.timestamp);
                }
                RecordKind::VmExit => {
                    if let Some(t) = vcpu.entered_at.take() {
                        s.guest_ns += r.timestamp.saturating_sub(t);
                    }
                    *s.exits.entry(exit_reason_name(r.a).to_owned()).or_default() += 1;
                }
                RecordKind::Halt => vcpu.halted_at = Some(r.timestamp),
                RecordKind::Wake => {
                    if let Some(t) = vcpu.halted_at.take() {
                        s.halted_ns += r.timestamp.saturating_sub(t);
                    }
                }
                RecordKind::Hypercall => {
                    let name =
                        hypercall_name(r.a).map_or_else(|| format!("#{}", r.a), str::to_owned);
                    *s.hypercalls.entry(name).or_default() += 1;
                }
                RecordKind::StateChange if r.is_state_at_start() => {}
                RecordKind::StateChange => {
                    *s.states.entry(vcpu_state_name(r.a).to_owned()).or_default() += 1;
                }
                RecordKind::IrqInject => {
                    let irq = irqs.entry((r.partition, r.a as u8)).or_default();
                    if let Some(last) = irq.last_inject.insert(r.vcpu, r.timestamp) {
                        irq.periods.push(r.timestamp.saturating_sub(last));
                    }
                }
                RecordKind::ModelRequest => devices.entry(r.partition).or_default().0.requests += 1,
                RecordKind::ModelReply => devices.entry(r.partition).or_default().1.push(r.b),
                RecordKind::ModelBusError => {
                    devices.entry(r.partition).or_default().0.bus_errors += 1;
                }
                _ => {}
            }
        }
        let name = |id: u32| {
            header
                .partitions
                .iter()
                .find(|p| p.id == id)
                .map_or("?", |p| p.name.as_str())
                .to_owned()
        };
        let first = first.min(last);
        let vcpus: Vec<(u32, VcpuStats)> = vcpus
            .into_iter()
            .map(|((p, v), state)| {
                // Still in the guest or halted at the end: counted up to the last timestamp.
                let upto = |since: Option<u64>| since.map_or(0, |t| last.saturating_sub(t));
                let stats = VcpuStats {
                    partition: name(p),
                    vcpu: v,
                    guest_ns: state.stats.guest_ns + upto(state.entered_at),
                    halted_ns: state.stats.halted_ns + upto(state.halted_at),
                    ..state.stats
                };
                (p, stats)
            })
            .collect();
        let mut partitions: BTreeMap<u32, PartitionStats> = BTreeMap::new();
        for (p, v) in &vcpus {
            let sum = partitions.entry(*p).or_insert_with(|| PartitionStats {
                partition: v.partition.clone(),
                ..PartitionStats::default()
            });
            sum.vcpus += 1;
            sum.guest_ns += v.guest_ns;
            sum.halted_ns += v.halted_ns;
            sum.exits += v.exits.values().sum::<u64>();
            sum.hypercalls += v.hypercalls.values().sum::<u64>();
        }
        Stats {
            system: header.system.clone(),
            duration_ns: last - first,
            records,
            lost,
            partitions: partitions.into_values().collect(),
            vcpus: vcpus.into_iter().map(|(_, v)| v).collect(),
            irqs: irqs
                .into_iter()
                .map(|((p, vector), irq)| {
                    let period = Summary::of(irq.periods.clone());
                    let jitter = irq
                        .periods
                        .iter()
                        .map(|&t| t.abs_diff(period.p50_ns))
                        .collect();
                    IrqStats {
                        partition: name(p),
                        vector,
                        raise_to_inject: Summary::of(irq.raise_to_inject),
                        inject_to_eoi: Summary::of(irq.inject_to_eoi),
                        period,
                        jitter: Summary::of(jitter),
                    }
                })
                .collect(),
            devices: devices
                .into_iter()
                .map(|(p, (stats, latencies))| DeviceStats {
                    partition: name(p),
                    latency: Summary::of(latencies),
                    ..stats
                })
                .collect(),
        }
    }

    /// The report as text, for a terminal.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let secs = self.duration_ns as f64 / 1e9;
        let _ = writeln!(
            out,
            "{}: {:.3} s, {} records, {} lost",
            self.system, secs, self.records, self.lost
        );
        let pct = |ns: u64| {
            if self.duration_ns == 0 {
                0.0
            } else {
                100.0 * ns as f64 / self.duration_ns as f64
            }
        };
        let _ = writeln!(
            out,
            "\npartition        vCPUs   guest   halted    exits  hypercalls   (% of one CPU)"
        );
        for p in &self.partitions {
            let _ = writeln!(
                out,
                "{:<16} {:>5} {:>6.1}% {:>7.1}% {:>8} {:>11}",
                p.partition,
                p.vcpus,
                pct(p.guest_ns),
                pct(p.halted_ns),
                p.exits,
                p.hypercalls
            );
        }
        let _ = writeln!(
            out,
            "\nvCPU                guest   halted  entries  exits (by reason); hypercalls"
        );
        for v in &self.vcpus {
            let join = |m: &BTreeMap<String, u64>| {
                m.iter()
                    .map(|(k, n)| format!("{k} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = writeln!(
                out,
                "{:<16} {:>6.1}% {:>7.1}% {:>8}  {}{}{}",
                format!("{}.{}", v.partition, v.vcpu),
                pct(v.guest_ns),
                pct(v.halted_ns),
                v.entries,
                join(&v.exits),
                if v.hypercalls.is_empty() { "" } else { "; " },
                join(&v.hypercalls)
            );
        }
        if !self.irqs.is_empty() {
            let _ = writeln!(
                out,
                "\nIRQ (partition vector)  count   raise->inject p50/p99/max   inject->EOI p50/p99   period p50, jitter p99"
            );
            for i in &self.irqs {
                let r = &i.raise_to_inject;
                let _ = writeln!(
                    out,
                    "{:<16} {:>6} {:>6}   {:>9} {:>9} {:>9}   {:>9} {:>9}   {:>9}, {:>9}",
                    i.partition,
                    i.vector,
                    r.count,
                    us(r.p50_ns),
                    us(r.p99_ns),
                    us(r.max_ns),
                    us(i.inject_to_eoi.p50_ns),
                    us(i.inject_to_eoi.p99_ns),
                    us(i.period.p50_ns),
                    us(i.jitter.p99_ns)
                );
                if !r.histogram.is_empty() {
                    let _ = writeln!(out, "{:<23}raise->inject {}", "", histogram(&r.histogram));
                }
            }
        }
        if !self.devices.is_empty() {
            let _ = writeln!(
                out,
                "\ndevice-model clients  requests  bus errors  latency p50/p99/max"
            );
            for d in &self.devices {
                let _ = writeln!(
                    out,
                    "{:<20} {:>9} {:>11}  {} {} {}",
                    d.partition,
                    d.requests,
                    d.bus_errors,
                    us(d.latency.p50_ns),
                    us(d.latency.p99_ns),
                    us(d.latency.max_ns)
                );
            }
        }
        out
    }
}

/// ns as µs with one decimal.
fn us(ns: u64) -> String {
    format!("{:.1}us", ns as f64 / 1e3)
}

/// `<=1us 3 | <=2us 10 | ...`
fn histogram(buckets: &[(u64, u64)]) -> String {
    buckets
        .iter()
        .map(|(bound, n)| format!("<={} {n}", us(*bound)))
        .collect::<Vec<_>>()
        .join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{header, rec};
    use RecordKind::*;

    #[test]
    fn summaries_pick_percentiles_and_power_of_two_buckets() {
        let s = Summary::of((1..=100).collect());
        assert_eq!((s.count, s.p50_ns, s.p99_ns, s.max_ns), (100, 51, 99, 100));
        assert_eq!(s.histogram.first(), Some(&(1, 1)));
        assert_eq!(s.histogram.last(), Some(&(128, 36)));
        assert_eq!(s.histogram.iter().map(|b| b.1).sum::<u64>(), 100);
        assert_eq!(Summary::of(Vec::new()).count, 0);
    }

    #[test]
    fn a_vcpu_halted_at_recording_start_counts_halted_from_the_first_timestamp() {
        use hv_link::trace::STATE_AT_START;
        let trace = Trace::new(
            header(),
            vec![
                rec(1000, 0, 0, VmEntry, 0, 0),
                rec(1100, 1, 1, StateChange, 2, STATE_AT_START),
                rec(1100, 1, 0, StateChange, 1, STATE_AT_START),
                rec(3000, 0, 0, VmExit, 5, 0),
                rec(4000, 1, 1, Wake, 0, 0),
                rec(4500, 1, 0, VmExit, 5, 0),
                rec(5000, 1, 1, StateChange, 4, 0),
            ],
        );
        let stats = Stats::compute(&trace);
        let v = |p: &str, i: u16| {
            stats
                .vcpus
                .iter()
                .find(|v| v.partition == p && v.vcpu == i)
                .unwrap()
        };
        assert_eq!(v("b", 1).halted_ns, 3000, "halted from the first timestamp");
        assert_eq!(
            v("b", 0).halted_ns,
            0,
            "running at start: its wake ends nothing"
        );
        assert_eq!(v("a", 0).guest_ns, 2000);
        assert_eq!(
            v("b", 1).states.iter().collect::<Vec<_>>(),
            [(&"out_of_window".to_owned(), &1)],
            "the state at start is not a change"
        );
    }

    #[test]
    fn guest_time_exits_irqs_and_device_latency() {
        let trace = Trace::new(
            header(),
            vec![
                rec(0, 0, 0, VmEntry, 0, 0),
                rec(600, 0, 0, VmExit, 2, 0x1000),
                rec(600, 0, 0, Hypercall, 5, 0),
                rec(700, 0, 0, Halt, 0, 0),
                rec(900, 0, 0, Wake, 0, 0),
                // vector 32 raised at 850, injected at 900 and 1900, EOI 100 after each
                rec(900, 0, 0, IrqRaise, 32, 850),
                rec(900, 0, 0, IrqInject, 32, 0),
                rec(1000, 0, 0, IrqEoi, 32, 0),
                rec(1900, 0, 0, IrqRaise, 32, 1880),
                rec(1900, 0, 0, IrqInject, 32, 0),
                rec(2000, 0, 0, IrqEoi, 32, 0),
                // a device access of b's vCPU 1 answered after 300 ns, another a bus error
                rec(100, 1, 1, ModelRequest, 1, 0),
                rec(400, 1, 1, ModelReply, 1, 300),
                rec(500, 1, 1, ModelRequest, 2, 0),
                rec(600, 1, 1, ModelBusError, 2, 1),
                rec(650, 1, 1, Lost, 4, 0),
                rec(700, 1, 1, VmExit, 6, 0),
            ],
        );
        let s = Stats::compute(&trace);
        assert_eq!(s.duration_ns, 2000);
        assert_eq!(s.lost, 4);
        assert_eq!(s.records, 16);
        let a = &s.vcpus[0];
        assert_eq!((a.partition.as_str(), a.vcpu), ("a", 0));
        assert_eq!((a.guest_ns, a.halted_ns, a.entries), (600, 200, 1));
        assert_eq!(a.exits.get("io"), Some(&1));
        assert_eq!(a.hypercalls.get("HV_IRQ_EOI"), Some(&1));
        assert_eq!(s.partitions.len(), 2);
        let pa = &s.partitions[0];
        assert_eq!(
            (pa.partition.as_str(), pa.vcpus, pa.guest_ns),
            ("a", 1, 600)
        );
        assert_eq!((pa.exits, pa.hypercalls), (1, 1));
        let b = &s.vcpus[1];
        assert_eq!((b.partition.as_str(), b.vcpu), ("b", 1));
        assert_eq!(b.guest_ns, 0, "an exit without its entry adds no time");
        assert_eq!(b.exits.get("mmio"), Some(&1));
        let irq = &s.irqs[0];
        assert_eq!((irq.partition.as_str(), irq.vector), ("a", 32));
        assert_eq!(irq.raise_to_inject.count, 2);
        assert_eq!(irq.raise_to_inject.max_ns, 50);
        assert_eq!(irq.inject_to_eoi.p50_ns, 100);
        assert_eq!((irq.period.count, irq.period.p50_ns), (1, 1000));
        let d = &s.devices[0];
        assert_eq!(
            (d.partition.as_str(), d.requests, d.bus_errors),
            ("b", 2, 1)
        );
        assert_eq!(d.latency.max_ns, 300);
        let text = s.render();
        assert!(
            text.starts_with("test: 0.000 s, 16 records, 4 lost"),
            "{text}"
        );
        assert!(text.contains("a.0"), "{text}");
        assert!(text.contains("HV_IRQ_EOI 1"), "{text}");
        assert!(text.contains("raise->inject <="), "{text}");
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["vcpus"][0]["guest_ns"], 600);
    }
}
