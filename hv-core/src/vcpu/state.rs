//! What a vCPU is doing as seen from outside, and its counters.

use std::sync::atomic::{AtomicU64, Ordering};

/// What a vCPU's thread is doing, as seen from outside (the hypervisor's view; the host link
/// reports it as `hv_link::control::VcpuState`, which folds some of these together).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum VcpuThreadState {
    /// Thread not started yet.
    Created = 0,
    /// Running guest code (or handling an exit).
    Running = 1,
    /// Halted, waiting for an interrupt.
    Halted = 2,
    /// Parked because its partition is paused (or being reset).
    Paused = 3,
    /// Parked outside its partition's schedule window.
    OutOfWindow = 4,
    /// Stopped by the debugger.
    DebugStopped = 5,
    /// Parked because its partition crashed.
    Crashed = 6,
    /// Parked because its partition exited.
    Exited = 7,
    /// Waiting for a device model's reply.
    BlockedOnDevice = 8,
    /// The thread has ended (system shutdown).
    Gone = 9,
}

impl VcpuThreadState {
    pub(super) fn from_u8(v: u8) -> VcpuThreadState {
        use VcpuThreadState::*;
        [
            Created,
            Running,
            Halted,
            Paused,
            OutOfWindow,
            DebugStopped,
            Crashed,
            Exited,
            BlockedOnDevice,
            Gone,
        ]
        .get(usize::from(v))
        .copied()
        .unwrap_or(Gone)
    }

    /// A short lowercase name (`running`, `halted`, ...).
    pub fn name(self) -> &'static str {
        use VcpuThreadState::*;
        match self {
            Created => "created",
            Running => "running",
            Halted => "halted",
            Paused => "paused",
            OutOfWindow => "out-of-window",
            DebugStopped => "debug-stopped",
            Crashed => "crashed",
            Exited => "exited",
            BlockedOnDevice => "blocked-on-device",
            Gone => "gone",
        }
    }

    /// True while the vCPU is parked and will not run guest code until released.
    pub fn is_parked(self) -> bool {
        use VcpuThreadState::*;
        matches!(
            self,
            Created | Paused | OutOfWindow | DebugStopped | Crashed | Exited | Gone
        )
    }
}

/// Size of [`VcpuCounters::exits_by_reason`]: KVM exit reasons at or above it count in the last slot.
pub const EXIT_REASONS: usize = 64;

/// Adds one to a counter that only the calling thread writes (no locked instruction).
#[inline]
pub(super) fn bump(counter: &AtomicU64) {
    counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

/// Live per-vCPU counters (written by the vCPU thread, read by anyone); the host link's
/// snapshot of them is `hv_link::control::VcpuStats`.
#[derive(Debug)]
pub struct VcpuCounters {
    /// VM exits by KVM exit reason (`KVM_EXIT_*`; reasons >= `EXIT_REASONS - 1` share the last).
    pub exits_by_reason: [AtomicU64; EXIT_REASONS],
    /// Interrupts injected, by vector.
    pub irqs_by_vector: [AtomicU64; 256],
    /// VM exits.
    pub exits: AtomicU64,
    /// Hypercalls.
    pub hypercalls: AtomicU64,
    /// Interrupts raised for this vCPU.
    pub irqs_raised: AtomicU64,
    /// Interrupts injected.
    pub irqs_injected: AtomicU64,
    /// Nanoseconds spent inside KVM_RUN.
    pub guest_ns: AtomicU64,
}

impl Default for VcpuCounters {
    fn default() -> Self {
        VcpuCounters {
            exits_by_reason: std::array::from_fn(|_| AtomicU64::new(0)),
            irqs_by_vector: std::array::from_fn(|_| AtomicU64::new(0)),
            exits: AtomicU64::new(0),
            hypercalls: AtomicU64::new(0),
            irqs_raised: AtomicU64::new(0),
            irqs_injected: AtomicU64::new(0),
            guest_ns: AtomicU64::new(0),
        }
    }
}
