//! System events (console output, partition state changes, debugger stops, warnings) fanned out to any number of
//! subscribers. Publishing never blocks: a subscriber that does not keep up loses events, counted.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::partition::PartitionState;

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
        state: PartitionState,
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

/// Fan-out of `SystemEvent`s.
#[derive(Debug, Default)]
pub struct EventHub {
    subscribers: Mutex<Vec<Sender<SystemEvent>>>,
    dropped: AtomicU64,
}

impl EventHub {
    /// A new subscription holding up to `capacity` undelivered events.
    pub fn subscribe(&self, capacity: usize) -> Receiver<SystemEvent> {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        self.subscribers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(tx);
        rx
    }

    /// Sends `event` to every live subscriber without blocking.
    pub fn publish(&self, event: SystemEvent) {
        let mut subscribers = self.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        subscribers.retain(|tx| match tx.try_send(event.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        });
    }

    /// Events dropped because a subscriber was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}
