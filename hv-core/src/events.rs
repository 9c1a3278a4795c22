//! System events (console output, partition state changes, debugger stops, warnings) fanned out to any number of
//! subscribers. Publishing never blocks: a subscriber that does not keep up loses events, counted.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::lifecycle::PartitionLifecycle;

/// Something that happened in the system.
#[derive(Debug, Clone, PartialEq)]
pub enum SystemEvent {
    /// Raw console bytes from a partition.
    ConsoleOutput {
        /// Partition index.
        partition: usize,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// One complete console line (without the newline).
    ConsoleLine {
        /// Partition index.
        partition: usize,
        /// The text.
        line: String,
    },
    /// A partition changed state.
    StateChanged {
        /// Partition index.
        partition: usize,
        /// The new state.
        state: PartitionLifecycle,
    },
    /// A debugger stopped the partition or one of its vCPUs (attach, breakpoint, watchpoint;
    /// not single steps), or let it go (detach).
    Debugger {
        /// Partition index.
        partition: usize,
        /// True for a stop, false when the debugger let the guest run on.
        stopped: bool,
        /// What happened, e.g. `breakpoint on vCPU 0 at 0x101234`.
        detail: String,
    },
    /// Something odd but survivable (rate-limited by the publisher).
    Warning {
        /// Partition index.
        partition: usize,
        /// What happened.
        message: String,
    },
}

/// Which events a subscriber takes (called by the publishing thread, which must not block).
pub type EventFilter = Box<dyn Fn(&SystemEvent) -> bool + Send + Sync>;

/// One subscription: where its events go, the most it may hold undelivered, which it takes.
struct Subscriber {
    tx: Sender<SystemEvent>,
    capacity: usize,
    wanted: EventFilter,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

/// Fan-out of `SystemEvent`s.
#[derive(Debug, Default)]
pub struct EventHub {
    subscribers: Mutex<Vec<Subscriber>>,
    dropped: AtomicU64,
}

impl EventHub {
    /// A new subscription holding up to `capacity` undelivered events. Memory grows with the
    /// events actually queued, not with `capacity` (a bounded channel would allocate every slot
    /// up front: 7.5 MiB for 65,536 events).
    pub fn subscribe(&self, capacity: usize) -> Receiver<SystemEvent> {
        self.subscribe_to(capacity, Box::new(|_| true))
    }

    /// A subscription to the events `wanted` accepts only: the others are not queued and do
    /// not wake the subscriber (say a main loop that ignores console bytes and debugger stops,
    /// which come by the thousand per second).
    pub fn subscribe_to(&self, capacity: usize, wanted: EventFilter) -> Receiver<SystemEvent> {
        let (tx, rx) = crossbeam_channel::unbounded();
        self.subscribers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Subscriber {
                tx,
                capacity,
                wanted,
            });
        rx
    }

    /// Sends `event` to every live subscriber without blocking.
    pub fn publish(&self, event: SystemEvent) {
        let mut subscribers = self.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        subscribers.retain(
            |Subscriber {
                 tx,
                 capacity,
                 wanted,
             }| {
                if !wanted(&event) {
                    // (A gone subscriber is forgotten at the next event it takes.)
                    return true;
                }
                // Only publishers (under this lock) add to the queue, so it cannot grow past the
                // check; the receiver may only shrink it.
                if tx.len() >= *capacity {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    return true;
                }
                match tx.try_send(event.clone()) {
                    Ok(()) => true,
                    Err(TrySendError::Full(_)) => {
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                        true
                    }
                    Err(TrySendError::Disconnected(_)) => false,
                }
            },
        );
    }

    /// Events dropped because a subscriber was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(n: usize) -> SystemEvent {
        SystemEvent::ConsoleLine {
            partition: 0,
            line: format!("line {n}"),
        }
    }

    #[test]
    fn a_full_subscriber_loses_events_counted_and_the_others_do_not() {
        let hub = EventHub::default();
        let slow = hub.subscribe(2);
        let fast = hub.subscribe(100);
        for n in 0..5 {
            hub.publish(line(n));
        }
        assert_eq!(slow.try_iter().collect::<Vec<_>>(), vec![line(0), line(1)]);
        assert_eq!(fast.try_iter().count(), 5);
        assert_eq!(hub.dropped(), 3);
        // Drained: it takes events again.
        hub.publish(line(5));
        assert_eq!(slow.try_recv().ok(), Some(line(5)));
    }

    #[test]
    fn a_subscriber_takes_only_the_events_it_wants() {
        let hub = EventHub::default();
        let lines = hub.subscribe_to(
            8,
            Box::new(|e| matches!(e, SystemEvent::ConsoleLine { .. })),
        );
        let all = hub.subscribe(8);
        let stop = SystemEvent::Debugger {
            partition: 0,
            stopped: true,
            detail: "breakpoint".into(),
        };
        hub.publish(stop.clone());
        hub.publish(line(1));
        assert_eq!(lines.try_iter().collect::<Vec<_>>(), vec![line(1)]);
        assert_eq!(all.try_iter().collect::<Vec<_>>(), vec![stop, line(1)]);
        assert_eq!(hub.dropped(), 0);
    }

    #[test]
    fn a_dropped_receiver_is_forgotten() {
        let hub = EventHub::default();
        drop(hub.subscribe(4));
        hub.publish(line(0));
        assert!(hub.subscribers.lock().unwrap().is_empty());
        assert_eq!(hub.dropped(), 0);
    }
}
