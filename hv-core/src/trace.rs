//! Per-vCPU trace rings: fixed-size records written by one vCPU thread (the only producer) and
//! drained by one consumer, lock-free. Recording never blocks: when the ring is full the record is
//! dropped and counted, and the count is written as a `Lost` record as soon as there is room, so
//! that produced = delivered + lost, exactly.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

/// Record kinds, event classes and the record itself are the host link's (hv-link's trace
/// format), so that what the rings hold is what the `trace` channel and trace files carry.
pub use hv_link::trace::{RecordKind as TraceKind, TraceRecord, class};

/// A single-producer single-consumer ring of trace records.
pub struct TraceRing {
    slots: Box<[UnsafeCell<TraceRecord>]>,
    mask: u64,
    /// Enabled `class` bits.
    mask_classes: AtomicU32,
    /// What the producer writes, on cache lines of its own: the consumer's reads and writes
    /// never take them from the producer's core, nor the producer's the consumer's.
    producer: CachePadded<ProducerSide>,
    /// Next slot the consumer reads (only the consumer stores it).
    tail: CachePadded<AtomicU64>,
}

/// The producer's counters.
#[derive(Default)]
struct ProducerSide {
    /// Next slot the producer writes (only the producer stores it).
    head: AtomicU64,
    /// The consumer's `tail` as the producer last read it: room is known without reading the
    /// consumer's cache line until the ring looks full.
    tail_seen: AtomicU64,
    /// Records dropped and not yet reported by a `Lost` record (added to by the producer, taken
    /// by whoever writes the `Lost` record: the producer, or the consumer via
    /// [`take_unreported`](TraceRing::take_unreported)).
    unreported: AtomicU64,
    /// `Lost` records written (so that the records offered are `head - lost_markers + lost`,
    /// with no counter to bump on the common path).
    lost_markers: AtomicU64,
    /// All records ever dropped.
    lost: AtomicU64,
}

// SAFETY: slots are written only by the single producer at indices in [tail+cap, head) that the
// consumer does not read, and read only by the single consumer at indices in [tail, head) that the
// producer has published with a release store of `head`; the `produce`/`drain` contracts below
// forbid a second producer or consumer.
unsafe impl Sync for TraceRing {}

impl std::fmt::Debug for TraceRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceRing")
            .field("capacity", &self.slots.len())
            .field("produced", &self.produced())
            .field("lost", &self.lost())
            .finish()
    }
}

impl TraceRing {
    /// A ring of `capacity` records (rounded up to a power of two), with all classes disabled.
    pub fn new(capacity: usize) -> TraceRing {
        let capacity = capacity.next_power_of_two().max(2);
        TraceRing {
            slots: (0..capacity)
                .map(|_| UnsafeCell::new(TraceRecord::default()))
                .collect(),
            mask: capacity as u64 - 1,
            mask_classes: AtomicU32::new(0),
            producer: CachePadded::default(),
            tail: CachePadded::new(AtomicU64::new(0)),
        }
    }

    /// Sets the enabled classes.
    pub fn set_classes(&self, classes: u32) {
        self.mask_classes.store(classes, Ordering::Relaxed);
    }

    /// The enabled classes.
    pub fn classes(&self) -> u32 {
        self.mask_classes.load(Ordering::Relaxed)
    }

    /// Whether records of `kind` are being recorded.
    #[inline]
    pub fn wants(&self, kind: TraceKind) -> bool {
        self.mask_classes.load(Ordering::Relaxed) & kind.class() != 0
    }

    /// Appends a record. Must only be called from the ring's one producer thread.
    #[inline]
    pub fn produce(&self, record: TraceRecord) {
        let p = &*self.producer;
        let head = p.head.load(Ordering::Relaxed);
        let capacity = self.mask + 1;
        let unreported = p.unreported.load(Ordering::Relaxed);
        let needed = if unreported > 0 { 2 } else { 1 };
        if head - p.tail_seen.load(Ordering::Relaxed) + needed > capacity {
            // Looks full: see how far the consumer got. (Slots below a tail read with Acquire
            // are free for good, so a stale `tail_seen` is only ever too cautious.)
            let tail = self.tail.load(Ordering::Acquire);
            p.tail_seen.store(tail, Ordering::Relaxed);
            if head - tail + needed > capacity {
                // Drop path only: an atomic add, because the consumer may take the count
                // meanwhile.
                p.unreported.fetch_add(1, Ordering::Relaxed);
                p.lost
                    .store(p.lost.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
                return;
            }
        }
        let mut head = head;
        if unreported > 0 {
            // The consumer may have taken (part of) it since the load above: report what is left.
            let count = p.unreported.swap(0, Ordering::Relaxed);
            if count > 0 {
                self.write_slot(
                    head,
                    TraceRecord {
                        kind: TraceKind::Lost as u16,
                        a: count,
                        ..record
                    },
                );
                head += 1;
                // Only the producer writes it: no locked instruction needed.
                p.lost_markers.store(
                    p.lost_markers.load(Ordering::Relaxed) + 1,
                    Ordering::Relaxed,
                );
            }
        }
        self.write_slot(head, record);
        p.head.store(head + 1, Ordering::Release);
    }

    #[inline]
    fn write_slot(&self, index: u64, record: TraceRecord) {
        let slot = &self.slots[(index & self.mask) as usize];
        // SAFETY: only the producer writes, and this slot is outside [tail, head) so the consumer
        // is not reading it (checked by the capacity test in `produce`).
        unsafe { slot.get().write(record) };
    }

    /// Moves every published record to `out`. Must only be called from one consumer at a time.
    pub fn drain(&self, out: &mut Vec<TraceRecord>) -> usize {
        let tail = self.tail.load(Ordering::Relaxed);
        let head = self.producer.head.load(Ordering::Acquire);
        for index in tail..head {
            let slot = &self.slots[(index & self.mask) as usize];
            // SAFETY: [tail, head) was published by the producer's release store of `head`, and
            // the producer does not write these slots until we advance `tail` below.
            out.push(unsafe { slot.get().read() });
        }
        self.tail.store(head, Ordering::Release);
        (head - tail) as usize
    }

    /// Takes the count of dropped records that no `Lost` record in the ring reports yet, so that
    /// the consumer can report them itself (a producer that went quiet after an overflow would
    /// otherwise never write its `Lost` record). Only from the ring's one consumer.
    pub fn take_unreported(&self) -> u64 {
        let unreported = &self.producer.unreported;
        // Read first: the drainer asks every round, and a write would take the producer's
        // cache line each time.
        if unreported.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        unreported.swap(0, Ordering::Relaxed)
    }

    /// Records published and not drained yet (a snapshot).
    pub fn len(&self) -> usize {
        let tail = self.tail.load(Ordering::Acquire);
        (self
            .producer
            .head
            .load(Ordering::Acquire)
            .saturating_sub(tail)) as usize
    }

    /// Whether nothing waits to be drained (a snapshot).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Capacity in records.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Records offered so far (delivered + lost + still queued + `Lost` markers excluded).
    pub fn produced(&self) -> u64 {
        let p = &*self.producer;
        // Lost first: a record dropped meanwhile then shows in neither, not in both.
        let lost = p.lost.load(Ordering::Relaxed);
        let markers = p.lost_markers.load(Ordering::Relaxed);
        p.head.load(Ordering::Relaxed) - markers + lost
    }

    /// Records dropped so far.
    pub fn lost(&self) -> u64 {
        self.producer.lost.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn marker(value: u64) -> TraceRecord {
        TraceRecord {
            kind: TraceKind::Marker as u16,
            a: 7,
            b: value,
            ..Default::default()
        }
    }

    #[test]
    fn records_come_out_in_order() {
        let ring = TraceRing::new(8);
        for i in 0..5 {
            ring.produce(marker(i));
        }
        let mut out = Vec::new();
        assert_eq!(ring.drain(&mut out), 5);
        assert_eq!(out.iter().map(|r| r.b).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
    }

    #[test]
    fn overflow_is_counted_and_reported_once_there_is_room() {
        let ring = TraceRing::new(4);
        for i in 0..10 {
            ring.produce(marker(i));
        }
        let mut out = Vec::new();
        ring.drain(&mut out);
        assert_eq!(out.len(), 4);
        ring.produce(marker(10));
        ring.drain(&mut out);
        let lost: u64 = out
            .iter()
            .filter(|r| r.kind == TraceKind::Lost as u16)
            .map(|r| r.a)
            .sum();
        let delivered = out
            .iter()
            .filter(|r| r.kind == TraceKind::Marker as u16)
            .count() as u64;
        assert_eq!(lost, 6);
        assert_eq!(ring.lost(), lost);
        assert_eq!(delivered + lost, ring.produced());
    }

    #[test]
    fn the_consumer_can_take_a_quiet_producers_lost_count() {
        let ring = TraceRing::new(4);
        for i in 0..9 {
            ring.produce(marker(i));
        }
        let mut out = Vec::new();
        ring.drain(&mut out);
        assert_eq!(out.len(), 4);
        assert_eq!(ring.take_unreported(), 5);
        assert_eq!(ring.take_unreported(), 0);
        ring.produce(marker(9));
        ring.drain(&mut out);
        assert_eq!(out.len(), 5, "no Lost record for a count already taken");
        assert_eq!(ring.lost(), 5);
        assert_eq!(4 + 5 + 1, ring.produced());
    }

    #[test]
    fn a_consumer_taking_lost_counts_meanwhile_still_accounts_exactly() {
        let ring = Arc::new(TraceRing::new(64));
        let producer = {
            let ring = ring.clone();
            std::thread::spawn(move || {
                for i in 0..300_000 {
                    ring.produce(marker(i));
                }
            })
        };
        let (mut out, mut taken) = (Vec::new(), 0);
        loop {
            let done = producer.is_finished();
            ring.drain(&mut out);
            taken += ring.take_unreported();
            if done {
                break;
            }
        }
        ring.drain(&mut out);
        taken += ring.take_unreported();
        let in_ring: u64 = out
            .iter()
            .filter(|r| r.kind == TraceKind::Lost as u16)
            .map(|r| r.a)
            .sum();
        let delivered = out
            .iter()
            .filter(|r| r.kind == TraceKind::Marker as u16)
            .count() as u64;
        assert!(
            out.iter()
                .all(|r| r.kind != TraceKind::Lost as u16 || r.a > 0)
        );
        assert_eq!(in_ring + taken, ring.lost());
        assert_eq!(delivered + ring.lost(), ring.produced());
    }

    #[test]
    fn concurrent_producer_and_consumer_account_exactly() {
        let ring = Arc::new(TraceRing::new(256));
        let producer = {
            let ring = ring.clone();
            std::thread::spawn(move || {
                for i in 0..200_000 {
                    ring.produce(marker(i));
                }
            })
        };
        let mut out = Vec::new();
        let mut last = None;
        loop {
            let done = producer.is_finished();
            let start = out.len();
            ring.drain(&mut out);
            for r in &out[start..] {
                if r.kind == TraceKind::Marker as u16 {
                    assert!(last.is_none_or(|l| r.b > l), "order kept");
                    last = Some(r.b);
                }
            }
            if done {
                break;
            }
        }
        ring.produce(marker(u64::MAX)); // flushes a pending Lost count
        ring.drain(&mut out);
        let lost: u64 = out
            .iter()
            .filter(|r| r.kind == TraceKind::Lost as u16)
            .map(|r| r.a)
            .sum();
        let delivered = out
            .iter()
            .filter(|r| r.kind == TraceKind::Marker as u16)
            .count() as u64;
        assert_eq!(delivered + lost, ring.produced());
        assert_eq!(lost, ring.lost());
    }
}
