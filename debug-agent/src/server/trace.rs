//! Trace streaming: `trace.start` / `trace.stop`, `partitions.stats`, and the `trace` channel.
//!
//! One drainer thread empties every vCPU's trace ring every [`DRAIN_PERIOD`] and encodes what it
//! found into record batches (hv-link's trace format); while nothing is traced and nobody
//! subscribes it sleeps until that changes. Each `trace` channel subscriber has a
//! bounded queue of batches and a writer thread; when the queue is full the batch is dropped for
//! that subscriber only and the records are counted per vCPU, then reported at the head of its
//! next batch as `Lost` records with `b = LOST_ON_LINK`. The drainer never waits for a
//! subscriber, and the vCPUs never wait for the drainer: produced = delivered + lost, exactly,
//! per subscriber, for the records produced while it was subscribed.
//!
//! Beside the rings, a side path: when a recording starts (`trace.start`, a `trace` channel
//! opening) the agent notes every traced vCPU's current state as a `StateChange` record with
//! `b = STATE_AT_START`, stamped with one clock read (the rings accept records only from their
//! vCPU's thread); the drainer puts these at the head of its next batch.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError, select};
use hv_core::PartitionHandle;
use hv_core::clock::Clock;
use hv_link::control::{PartitionStats, PartitionsStats, TraceStartParams, VcpuStats};
use hv_link::trace::{
    LOST_IN_RING, LOST_ON_LINK, MAX_BATCH_RECORDS, RecordKind, STATE_AT_START, TraceChannel,
    TraceClock, TraceEndpoint, TraceHeader, TracePartition, TraceRecord, class, class_bits,
    encode_batch_into, encode_header,
};
use hv_link::{ChannelId, FrameEncoder, FrameWriter, RpcError};

use super::Shared;
use super::control::{find, link_partition_state, link_vcpu_state, normalize};

/// How often the drainer empties the rings.
pub(crate) const DRAIN_PERIOD: Duration = Duration::from_millis(2);
/// Batches queued per subscriber before new ones are dropped (counted).
const QUEUE_BATCHES: usize = 256;
/// Bytes merged into one write by a subscriber's writer.
const WRITE_BYTES: usize = 1 << 20;

/// One `trace` channel subscriber.
pub(crate) struct Subscriber {
    tx: Sender<Arc<[u8]>>,
    /// Records dropped for this subscriber and not yet reported, by (partition, vCPU).
    unreported: Mutex<BTreeMap<(u32, u16), u64>>,
    /// Records dropped for this subscriber in all.
    lost: AtomicU64,
    /// Shared with the writer thread (which must not hold `tx`, so that it ends once the
    /// subscriber is dropped).
    closed: Arc<AtomicBool>,
}

impl Subscriber {
    /// Stops the stream (queued batches are discarded).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Records dropped for this subscriber so far.
    pub(crate) fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    fn unreported(&self) -> MutexGuard<'_, BTreeMap<(u32, u16), u64>> {
        self.unreported.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Every subscriber of every connection, and what each connection asked to be traced.
#[derive(Default)]
pub(crate) struct TraceHub {
    subscribers: Mutex<Vec<Arc<Subscriber>>>,
    /// Per requester (a connection): enabled classes per partition index. The rings record the
    /// union, so one tool's `trace.stop` never cuts off another tool's trace.
    requests: Mutex<BTreeMap<u64, Vec<u32>>>,
    next_requester: AtomicU64,
    /// Records of the side path (vCPU states at a recording's start) for the drainer's next
    /// batch.
    side: Mutex<Vec<TraceRecord>>,
    /// Wakes an idle drainer (a subscriber or a recording started).
    work: Work,
}

/// A one-slot wake-up: signals that coalesce until the waiter takes them.
struct Work {
    tx: Sender<()>,
    rx: Receiver<()>,
}

impl Default for Work {
    fn default() -> Self {
        let (tx, rx) = crossbeam_channel::bounded(1);
        Work { tx, rx }
    }
}

impl TraceHub {
    fn lock(&self) -> MutexGuard<'_, Vec<Arc<Subscriber>>> {
        self.subscribers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Subscribes `channel` on `writer`: registers the subscriber (from now on it gets every
    /// record, queued), calls `opened` (which sends the open reply), sends the header, then
    /// starts the subscriber's writer. So a client that has the reply misses nothing.
    pub(crate) fn subscribe(
        &self,
        header: &[u8],
        channel: ChannelId,
        writer: &FrameWriter,
        opened: impl FnOnce(),
    ) -> std::io::Result<Arc<Subscriber>> {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE_BATCHES);
        let sub = Arc::new(Subscriber {
            tx,
            unreported: Mutex::default(),
            lost: AtomicU64::new(0),
            closed: Arc::new(AtomicBool::new(false)),
        });
        self.lock().push(sub.clone());
        self.wake_drainer();
        opened();
        // The header goes before every batch: the writer that sends them starts after it.
        let _ = writer.send_frame(channel, header);
        let (closed, w) = (sub.closed.clone(), writer.clone());
        let spawned = std::thread::Builder::new()
            .name("agent-trace-tx".into())
            .spawn(move || write_loop(&closed, &rx, channel, &w));
        if let Err(e) = spawned {
            self.unsubscribe(&sub);
            return Err(e);
        }
        Ok(sub)
    }

    /// Notes the current state of every vCPU whose `sched` class is on, as `StateChange`
    /// records with `b = STATE_AT_START` stamped now, for the drainer's next batch: where a
    /// recording starts, its readers know each vCPU's state before the vCPU's own first record.
    pub(crate) fn note_start_states(&self, partitions: &[PartitionHandle]) {
        let now = Clock::shared().now_ns();
        let mut side = self.side.lock().unwrap_or_else(|p| p.into_inner());
        for p in partitions {
            for v in p.vcpus() {
                if v.trace.classes() & class::SCHED != 0 {
                    side.push(start_state(
                        now,
                        p.id() as u32,
                        v.index as u16,
                        v.state() as u64,
                    ));
                }
            }
        }
        drop(side);
        self.wake_drainer();
    }

    /// Whether nothing is traced, queued or subscribed: the drainer has nothing to do.
    fn is_idle(&self) -> bool {
        self.lock().is_empty()
            && self
                .requests
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty()
            && self
                .side
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty()
    }

    fn wake_drainer(&self) {
        let _ = self.work.tx.try_send(());
    }

    /// Takes the side path's records into `out`.
    fn take_side(&self, out: &mut Vec<TraceRecord>) {
        out.append(&mut self.side.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Ends a subscription.
    pub(crate) fn unsubscribe(&self, sub: &Arc<Subscriber>) {
        sub.close();
        self.lock().retain(|s| !Arc::ptr_eq(s, sub));
    }

    /// A new requester id for [`start`] and [`stop`] (one per connection).
    pub(crate) fn new_requester(&self) -> u64 {
        self.next_requester.fetch_add(1, Ordering::Relaxed)
    }

    /// Changes what `requester` asks for, then sets every ring to the union of all requests.
    fn request(
        &self,
        partitions: &[PartitionHandle],
        requester: u64,
        change: impl FnOnce(&mut Vec<u32>),
    ) {
        let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        let mine = requests
            .entry(requester)
            .or_insert_with(|| vec![0; partitions.len()]);
        change(mine);
        requests.retain(|_, classes| classes.iter().any(|&c| c != 0));
        for (i, p) in partitions.iter().enumerate() {
            let union = requests.values().fold(0, |acc, classes| acc | classes[i]);
            for v in p.vcpus() {
                v.trace.set_classes(union);
            }
        }
        drop(requests);
        self.wake_drainer();
    }
}

/// The record saying that vCPU `vcpu` of `partition` is in state `state` (hv-core's vCPU state
/// code, as `StateChange` carries it) at `timestamp`, when a recording starts.
fn start_state(timestamp: u64, partition: u32, vcpu: u16, state: u64) -> TraceRecord {
    TraceRecord {
        timestamp,
        kind: RecordKind::StateChange as u16,
        vcpu,
        partition,
        a: state,
        b: STATE_AT_START,
    }
}

/// A subscriber's writer: merges queued batches into one write, one frame each. Ends when the
/// subscriber is dropped (queue disconnected), closed, or the link fails.
fn write_loop(closed: &AtomicBool, rx: &Receiver<Arc<[u8]>>, channel: ChannelId, w: &FrameWriter) {
    let mut out = FrameEncoder::with_capacity(WRITE_BYTES);
    while let Ok(first) = rx.recv() {
        out.clear();
        let _ = out.push(channel, &first);
        while out.as_bytes().len() < WRITE_BYTES {
            match rx.try_recv() {
                Ok(next) => {
                    let _ = out.push(channel, &next);
                }
                Err(_) => break,
            }
        }
        if closed.load(Ordering::Acquire) || w.send_batch(&out).is_err() {
            return;
        }
    }
}

/// The IPC channels of a system description and the endpoints each joins, with each
/// endpoint's channel number in its partition (its place among the partition's channels in
/// description order, as the hypervisor numbers them), for the trace header.
pub(crate) fn channels(config: &hv_config::SystemConfig) -> Vec<TraceChannel> {
    let ids: HashMap<&str, u32> = config
        .partitions
        .iter()
        .enumerate()
        .map(|(i, p)| (p.name.as_str(), i as u32))
        .collect();
    let mut numbered: HashMap<&str, u64> = HashMap::new();
    config
        .channels
        .iter()
        .map(|c| TraceChannel {
            name: c.name.clone(),
            endpoints: c
                .endpoints
                .iter()
                .filter_map(|e| {
                    let number = numbered.entry(e.as_str()).or_default();
                    let channel = *number;
                    *number += 1;
                    Some(TraceEndpoint {
                        partition: *ids.get(e.as_str())?,
                        channel,
                    })
                })
                .collect(),
        })
        .collect()
}

/// The header every new `trace` channel starts with.
pub(crate) fn header(
    system: &str,
    partitions: &[PartitionHandle],
    channels: Vec<TraceChannel>,
) -> Vec<u8> {
    let clock = Clock::shared();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    encode_header(&TraceHeader {
        system: system.to_owned(),
        clock: TraceClock {
            tsc_khz: clock.tsc_khz(),
            epoch_unix_ns: now.saturating_sub(clock.now_ns()),
        },
        partitions: partitions
            .iter()
            .map(|p| TracePartition {
                id: p.id() as u32,
                name: p.name().to_owned(),
                vcpus: p.vcpus().len() as u32,
                image: normalize(p.image_path()).display().to_string(),
            })
            .collect(),
        channels,
    })
}

/// The drainer thread: until `stop` disconnects.
pub(crate) fn drain_loop(shared: &Shared, stop: &Receiver<()>) {
    let mut drainer = Drainer::default();
    let hub = &shared.trace;
    loop {
        drainer.drain_once(&shared.partitions, hub);
        if hub.is_idle() {
            // Nothing is traced and nobody listens: one more round discards what a vCPU wrote
            // as its classes went off, then sleep until a recording or a subscriber starts
            // (no wake-ups every period for nothing, e.g. while a debugger steps).
            drainer.drain_once(&shared.partitions, hub);
            select! {
                recv(stop) -> _ => return,
                recv(hub.work.rx) -> _ => {}
            }
        } else {
            match stop.recv_timeout(DRAIN_PERIOD) {
                Err(RecvTimeoutError::Timeout) => {}
                _ => return,
            }
        }
    }
}

/// The drainer's buffers (kept between rounds).
#[derive(Default)]
pub(crate) struct Drainer {
    records: Vec<TraceRecord>,
    encoded: Vec<u8>,
}

impl Drainer {
    /// Empties every ring once and offers the records to every subscriber.
    pub(crate) fn drain_once(&mut self, partitions: &[PartitionHandle], hub: &TraceHub) {
        self.records.clear();
        hub.take_side(&mut self.records);
        for p in partitions {
            for v in p.vcpus() {
                v.trace.drain(&mut self.records);
                let quiet_lost = v.trace.take_unreported();
                if quiet_lost > 0 {
                    self.records.push(TraceRecord {
                        timestamp: Clock::shared().now_ns(),
                        kind: RecordKind::Lost as u16,
                        vcpu: v.index as u16,
                        partition: p.id() as u32,
                        a: quiet_lost,
                        b: LOST_IN_RING,
                    });
                }
            }
        }
        let subscribers = hub.lock().clone();
        for batch in self.records.chunks(MAX_BATCH_RECORDS) {
            let mut shared_chunk: Option<Arc<[u8]>> = None;
            for sub in &subscribers {
                offer(sub, batch, &mut shared_chunk, &mut self.encoded);
            }
        }
        if self.records.is_empty() {
            // Quiet rings: still report a subscriber's losses as soon as its queue has room.
            for sub in &subscribers {
                if !sub.unreported().is_empty() {
                    offer(sub, &[], &mut None, &mut self.encoded);
                }
            }
        }
    }
}

/// Queues `batch` for `sub` without waiting: with its unreported losses in front, or dropped
/// and counted when its queue is full.
fn offer(
    sub: &Subscriber,
    batch: &[TraceRecord],
    shared_chunk: &mut Option<Arc<[u8]>>,
    scratch: &mut Vec<u8>,
) {
    if sub.closed.load(Ordering::Acquire) {
        return;
    }
    if sub.tx.is_full() {
        return drop_batch(sub, batch);
    }
    let mut unreported = sub.unreported();
    if batch.is_empty() && unreported.is_empty() {
        return;
    }
    let chunk = if unreported.is_empty() {
        shared_chunk
            .get_or_insert_with(|| {
                scratch.clear();
                encode_batch_into(batch, scratch);
                scratch.as_slice().into()
            })
            .clone()
    } else {
        let now = Clock::shared().now_ns();
        let mut records: Vec<TraceRecord> = unreported
            .iter()
            .map(|(&(partition, vcpu), &count)| TraceRecord {
                timestamp: now,
                kind: RecordKind::Lost as u16,
                vcpu,
                partition,
                a: count,
                b: LOST_ON_LINK,
            })
            .collect();
        records.extend_from_slice(batch);
        // One chunk (one frame): at most MAX_BATCH_RECORDS plus one record per vCPU, far below
        // the frame limit.
        let mut bytes = Vec::new();
        encode_batch_into(&records, &mut bytes);
        bytes.into()
    };
    match sub.tx.try_send(chunk) {
        Ok(()) => unreported.clear(),
        Err(TrySendError::Full(_)) => {
            drop(unreported);
            drop_batch(sub, batch);
        }
        Err(TrySendError::Disconnected(_)) => {}
    }
}

fn drop_batch(sub: &Subscriber, batch: &[TraceRecord]) {
    let mut unreported = sub.unreported();
    let mut total = 0;
    // A vCPU's state at a recording's start comes from no ring: not counted (see
    // `note_start_states`).
    for r in batch.iter().filter(|r| !r.is_state_at_start()) {
        // A `Lost` record stands for `a` records.
        let n = if r.kind == RecordKind::Lost as u16 {
            r.a
        } else {
            1
        };
        *unreported.entry((r.partition, r.vcpu)).or_default() += n;
        total += n;
    }
    sub.lost.fetch_add(total, Ordering::Relaxed);
}

/// `trace.start` from `requester`: turns the given classes (all when absent) on for the given
/// partitions (all when absent), replacing what it asked for those partitions before.
pub(crate) fn start(
    shared: &Shared,
    requester: u64,
    params: &TraceStartParams,
) -> Result<(), RpcError> {
    let bits = match &params.classes {
        Some(names) => class_bits(names).map_err(|name| {
            RpcError::invalid_params(format!(
                "unknown trace class {name:?} (known: exits, irq, hypercall, sched, device, ipc, marker, all)"
            ))
        })?,
        None => hv_link::trace::class::ALL,
    };
    let targets: Vec<usize> = match &params.partitions {
        Some(names) => names
            .iter()
            .map(|n| {
                let p = find(shared, n)?;
                Ok(shared
                    .partitions
                    .iter()
                    .position(|q| q.id() == p.id())
                    .unwrap_or(0))
            })
            .collect::<Result<_, _>>()?,
        None => (0..shared.partitions.len()).collect(),
    };
    shared.trace.request(&shared.partitions, requester, |mine| {
        for i in targets {
            mine[i] = bits;
        }
    });
    // After the classes are on: a record a vCPU writes from now on comes after its state here.
    shared.trace.note_start_states(&shared.partitions);
    Ok(())
}

/// `trace.stop` from `requester` (also when its connection ends): withdraws everything it asked
/// for; classes other requesters still want stay on. Records already produced still stream.
pub(crate) fn stop(shared: &Shared, requester: u64) {
    shared
        .trace
        .request(&shared.partitions, requester, |mine| mine.fill(0));
}

/// `partitions.stats`.
pub(crate) fn stats(shared: &Shared) -> PartitionsStats {
    let timestamp_ns = Clock::shared().now_ns();
    let partitions = shared
        .partitions
        .iter()
        .map(|p| {
            let vcpus: Vec<VcpuStats> = p
                .vcpus()
                .iter()
                .map(|v| {
                    let s = &v.stats;
                    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
                    VcpuStats {
                        index: v.index,
                        state: link_vcpu_state(v.state()),
                        guest_ns: load(&s.guest_ns),
                        exits: load(&s.exits),
                        exits_by_reason: nonzero(&s.exits_by_reason)
                            .map(|(i, n)| (i as u32, n))
                            .collect(),
                        irqs_raised: load(&s.irqs_raised),
                        irqs_injected: load(&s.irqs_injected),
                        irqs_by_vector: nonzero(&s.irqs_by_vector)
                            .map(|(i, n)| (i as u8, n))
                            .collect(),
                        hypercalls: load(&s.hypercalls),
                        trace_produced: v.trace.produced(),
                        lost_records: v.trace.lost(),
                    }
                })
                .collect();
            PartitionStats {
                id: p.id() as u32,
                name: p.name().to_owned(),
                state: link_partition_state(&p.state()),
                hypercalls: p.stats().hypercalls.load(Ordering::Relaxed),
                irqs_injected: p.stats().irqs_injected.load(Ordering::Relaxed),
                unmapped_accesses: p.stats().unmapped_accesses.load(Ordering::Relaxed),
                lost_records: vcpus.iter().map(|v| v.lost_records).sum(),
                vcpus,
            }
        })
        .collect();
    PartitionsStats {
        timestamp_ns,
        partitions,
    }
}

fn nonzero(counters: &[AtomicU64]) -> impl Iterator<Item = (usize, u64)> + '_ {
    counters
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .enumerate()
        .filter(|(_, n)| *n > 0)
}

/// Per-connection subscriptions, by channel.
pub(crate) type Subscriptions = HashMap<ChannelId, Arc<Subscriber>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn marker(i: u64) -> TraceRecord {
        TraceRecord {
            kind: RecordKind::Marker as u16,
            partition: 1,
            vcpu: 0,
            a: 0,
            b: i,
            timestamp: i,
        }
    }

    #[test]
    fn channel_ends_are_numbered_per_partition_in_description_order() {
        let toml = r#"
[system]
name = "t"
[[partition]]
name = "a"
image = "a.elf"
[[partition]]
name = "b"
image = "b.elf"
[[partition]]
name = "c"
image = "c.elf"
[[channel]]
name = "ab"
endpoints = ["a", "b"]
[[channel]]
name = "ca"
endpoints = ["c", "a"]
vector = 49
"#;
        let options = hv_config::ParseOptions {
            check_images: false,
            ..Default::default()
        };
        let config =
            hv_config::SystemConfig::parse_with(toml, std::path::Path::new("t.toml"), &options)
                .unwrap();
        let got: Vec<(String, Vec<(u32, u64)>)> = channels(&config)
            .into_iter()
            .map(|c| {
                let ends = c
                    .endpoints
                    .iter()
                    .map(|e| (e.partition, e.channel))
                    .collect();
                (c.name, ends)
            })
            .collect();
        assert_eq!(
            got,
            [
                ("ab".to_owned(), vec![(0, 0), (1, 0)]),
                ("ca".to_owned(), vec![(2, 0), (0, 1)]),
            ]
        );
    }

    #[test]
    fn start_states_go_at_the_head_of_the_next_batch_and_are_not_counted_when_dropped() {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let sub = Arc::new(Subscriber {
            tx,
            unreported: Mutex::default(),
            lost: AtomicU64::new(0),
            closed: Arc::default(),
        });
        let hub = TraceHub::default();
        hub.lock().push(sub.clone());
        let halted = start_state(50, 1, 0, 2);
        hub.side.lock().unwrap().push(halted);
        let mut drainer = Drainer::default();
        drainer.drain_once(&[], &hub);
        let (hv_link::trace::Chunk::Batch(got), _) =
            hv_link::trace::decode_chunk(&rx.recv().unwrap()).unwrap()
        else {
            panic!("a batch")
        };
        assert_eq!(got, [halted]);
        assert!(got[0].is_state_at_start());
        assert!(hub.side.lock().unwrap().is_empty(), "taken once");
        // A full queue: the marker is lost and counted, the start state is not a ring's record.
        offer(&sub, &[marker(1)], &mut None, &mut Vec::new());
        offer(&sub, &[halted, marker(2)], &mut None, &mut Vec::new());
        assert_eq!(sub.lost(), 1);
    }

    #[test]
    fn the_drainer_is_idle_only_with_nothing_traced_queued_or_subscribed_and_is_woken_out_of_it() {
        let hub = TraceHub::default();
        assert!(hub.is_idle());
        assert!(hub.work.rx.try_recv().is_err(), "no wake-up for nothing");
        // A recording (classes requested), even with nobody subscribed yet: rings fill.
        hub.request(&[], 1, |classes| classes.push(class::SCHED));
        assert!(!hub.is_idle());
        assert!(hub.work.rx.try_recv().is_ok(), "woken by the request");
        hub.request(&[], 1, Vec::clear);
        assert!(hub.is_idle());
        // Wake-ups coalesce: one waiting, however many changes.
        hub.side.lock().unwrap().push(marker(1));
        assert!(!hub.is_idle(), "side records still to deliver");
        hub.wake_drainer();
        hub.wake_drainer();
        assert!(hub.work.rx.try_recv().is_ok());
        assert!(hub.work.rx.try_recv().is_err());
        hub.side.lock().unwrap().clear();
        let (tx, _rx) = crossbeam_channel::bounded(1);
        hub.lock().push(Arc::new(Subscriber {
            tx,
            unreported: Mutex::default(),
            lost: AtomicU64::new(0),
            closed: Arc::default(),
        }));
        assert!(!hub.is_idle(), "a subscriber");
    }

    #[test]
    fn a_full_queue_drops_counts_and_reports_losses_first() {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let sub = Subscriber {
            tx,
            unreported: Mutex::default(),
            lost: AtomicU64::new(0),
            closed: Arc::default(),
        };
        let mut scratch = Vec::new();
        let batch: Vec<TraceRecord> = (0..3).map(marker).collect();
        offer(&sub, &batch, &mut None, &mut scratch);
        // Queue full: the next batch (with a ring Lost record standing for 5) is dropped.
        let mut second: Vec<TraceRecord> = (3..5).map(marker).collect();
        second.push(TraceRecord {
            kind: RecordKind::Lost as u16,
            a: 5,
            ..marker(0)
        });
        offer(&sub, &second, &mut None, &mut scratch);
        assert_eq!(sub.lost(), 7);
        let first = rx.recv().unwrap();
        let (hv_link::trace::Chunk::Batch(got), _) = hv_link::trace::decode_chunk(&first).unwrap()
        else {
            panic!("a batch")
        };
        assert_eq!(got, batch);
        offer(&sub, &[marker(9)], &mut None, &mut scratch);
        let third = rx.recv().unwrap();
        let (hv_link::trace::Chunk::Batch(got), _) = hv_link::trace::decode_chunk(&third).unwrap()
        else {
            panic!("a batch")
        };
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].kind, RecordKind::Lost as u16);
        assert_eq!((got[0].partition, got[0].vcpu, got[0].a), (1, 0, 7));
        assert_eq!(got[0].b, LOST_ON_LINK);
        assert_eq!(got[1], marker(9));
        assert!(sub.unreported().is_empty());
        // Losses are reported even when nothing else follows.
        offer(&sub, &[marker(10)], &mut None, &mut scratch);
        offer(&sub, &second, &mut None, &mut scratch);
        offer(&sub, &[], &mut None, &mut scratch);
        assert_eq!(sub.lost(), 14);
        rx.recv().unwrap();
        offer(&sub, &[], &mut None, &mut scratch);
        let (hv_link::trace::Chunk::Batch(got), _) =
            hv_link::trace::decode_chunk(&rx.recv().unwrap()).unwrap()
        else {
            panic!("a batch")
        };
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].a, got[0].b), (7, LOST_ON_LINK));
        offer(&sub, &[], &mut None, &mut scratch);
        assert!(rx.is_empty(), "nothing to report, nothing sent");
    }
}
