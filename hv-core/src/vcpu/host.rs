//! The seam between a vCPU thread and its partition: what the run loop asks of the partition
//! ([`VcpuHost`]) and what a hypercall asks of the run loop ([`HypercallOutcome`]).
//!
//! The vCPU loop knows its partition only through this trait, so the loop's decisions are
//! testable with a stand-in host, and a second backend (an emulated CPU, another hypervisor)
//! would drive the same partition through the same calls.

use std::sync::Arc;

use super::{DebugExit, DeviceAccess, StopRegisters, VcpuRegisters, VcpuShared, VcpuThreadState};

/// A debug stop on its way to the debugger. The vCPU sends it (calls it) only once it has
/// parked, so that the debugger, woken by it, finds the vCPU stopped already instead of
/// waiting for it to park (a sleep and a wake-up on every breakpoint hit and step).
pub type DebugReport = Box<dyn FnOnce() + Send>;

/// What a hypercall asks of the vCPU loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HypercallOutcome {
    /// Return this value in rax.
    Return(i64),
    /// Halt until an interrupt is due, then return 0.
    Idle,
    /// The partition ends with this code.
    Exit(i64),
    /// Wait for a device request, to be written to this guest buffer; the result (1, or 0 when
    /// the wait ends for an interrupt or other work) is returned then.
    WaitRequest(u64),
}

/// What a vCPU thread needs from its partition, and nothing more.
pub trait VcpuHost: DeviceAccess + Send + Sync {
    /// The parked state the partition's lifecycle holds its vCPUs in (paused, crashed, exited),
    /// or `None` when they may run.
    fn lifecycle_park(&self) -> Option<VcpuThreadState>;
    /// Whether the schedule lets the partition run now.
    fn in_window(&self) -> bool;
    /// Whether the system is shutting down (the vCPU thread ends).
    fn is_shutting_down(&self) -> bool;
    /// A vCPU of the partition parked or left a parked state (wakes control requests waiting
    /// for it).
    fn vcpu_parked(&self);
    /// The guest cannot go on: the partition crashes.
    fn crashed(&self, vcpu: u32, reason: String, registers: Option<VcpuRegisters>);
    /// The guest called `HV_EXIT`.
    fn exited(&self, code: i64);
    /// A debug exit for the partition's debugger, with the registers the vCPU thread had at
    /// hand: requests the vCPU's debugger stop and returns the report for the debugger, which
    /// the vCPU sends once it has parked; None when no debugger wants it.
    fn debug_exit(
        &self,
        vcpu: &VcpuShared,
        exit: DebugExit,
        registers: StopRegisters,
    ) -> Option<DebugReport>;
    /// A warning for the event log.
    fn warn(&self, message: String);
    /// The trace clock, in ns.
    fn now_ns(&self) -> u64;
    /// An interrupt was injected into one of the partition's vCPUs (partition statistics).
    fn interrupt_injected(&self);
    /// Reads guest-physical memory; false where there is none.
    fn read_guest(&self, addr: u64, buf: &mut [u8]) -> bool;
    /// RAM size (where vCPU stacks start, for a vCPU reset).
    fn memory_size(&self) -> u64;
    /// Answers hypercall `nr` with `args` made by `vcpu`; `stamp` is the time of its exit, which
    /// stamps the trace records the call writes.
    fn hypercall(
        &self,
        vcpu: &Arc<VcpuShared>,
        nr: u64,
        args: [u64; 4],
        stamp: u64,
    ) -> HypercallOutcome;
    /// `HV_DM_RECEIVE` for `vcpu`: the next device request for this partition as a model into
    /// guest buffer `buf`: 1, 0 when none is pending, or an error code.
    fn take_device_request(&self, vcpu: &VcpuShared, buf: u64) -> i64;
}
