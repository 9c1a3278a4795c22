//! vCPU threads: each vCPU runs on its own host thread as an explicit state machine (running,
//! halted, parked for a pause / schedule window / debugger, crashed, exited). Other threads reach a
//! vCPU only through its `VcpuShared` (interrupt lines, requests, jobs) — never through a lock on
//! the partition or the system — so stopping one partition can never stall another.
//!
//! - `state.rs`: what a vCPU's thread is doing as seen from outside ([`VcpuThreadState`]) and
//!   its counters.
//! - `shared.rs`: [`VcpuShared`], the thread-safe face (interrupt controller, stop requests,
//!   jobs run on the vCPU thread, trace ring).
//! - `runner.rs`: [`VcpuRunner`], the thread itself: the run loop's explicit states, parks and
//!   waits; `guest.rs`: entering and leaving the guest (injection, the exit path, hypercalls).
//! - `host.rs`: [`VcpuHost`], all the runner knows of its partition.
//! - `exit.rs`: a KVM exit to an [`ExitAction`], a plain function; `debug.rs`: debug controls.

mod debug;
mod exit;
mod guest;
mod host;
mod runner;
mod shared;
mod state;

pub use debug::{DebugControl, HwBreakpoint, HwKind};
pub use exit::{DebugExit, DeviceAccess, ExitAction, MmioAccess, handle_exit};
pub use host::{DebugReport, HypercallOutcome, VcpuHost};
pub use runner::VcpuRunner;
pub use shared::VcpuShared;
pub use state::{EXIT_REASONS, VcpuCounters, VcpuThreadState};

use std::sync::Arc;

use kvm_bindings::{KVM_MAX_CPUID_ENTRIES, kvm_fpu, kvm_regs, kvm_sregs};
use kvm_ioctls::{Kvm, VcpuFd};

use crate::boot;

thread_local! {
    /// The vCPU whose thread this is (set for the life of a vCPU thread).
    static CURRENT: std::cell::RefCell<Option<Arc<VcpuShared>>> = const { std::cell::RefCell::new(None) };
}

/// The vCPU of the calling thread, when it is a vCPU thread (devices use it to trace and to show
/// that the vCPU is blocked).
pub fn current() -> Option<Arc<VcpuShared>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Errors of vCPU control requests.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    /// The vCPU thread did not answer in time (it may be blocked on a device model).
    #[error("vCPU {0} did not answer in time")]
    Timeout(u32),
    /// The vCPU thread is gone.
    #[error("vCPU {0} is not running")]
    Gone(u32),
    /// A KVM call failed.
    #[error("KVM refused {what}: {source}")]
    Kvm {
        /// Which call.
        what: &'static str,
        /// The errno.
        #[source]
        source: vmm_sys_util::errno::Error,
    },
}

/// A vCPU's architectural register state.
#[derive(Debug, Clone, Copy, Default)]
pub struct VcpuRegisters {
    /// General-purpose registers, rip and rflags.
    pub regs: kvm_regs,
    /// Segment, control and descriptor-table registers, EFER.
    pub sregs: kvm_sregs,
    /// x87 and SSE state.
    pub fpu: kvm_fpu,
}

/// Which registers KVM can hand back in `kvm_run` at every exit (`KVM_CAP_SYNC_REGS`), so that
/// reading them costs no ioctl.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncedRegisters {
    /// General-purpose registers, rip and rflags.
    pub regs: bool,
    /// Segment, control and descriptor-table registers.
    pub sregs: bool,
}

impl SyncedRegisters {
    /// From the capability's value (a mask of `KVM_SYNC_X86_*`; 0 without the capability).
    pub fn from_mask(mask: i32) -> SyncedRegisters {
        let mask = mask.max(0) as u32;
        SyncedRegisters {
            regs: mask & kvm_bindings::KVM_SYNC_X86_REGS != 0,
            sregs: mask & kvm_bindings::KVM_SYNC_X86_SREGS != 0,
        }
    }
}

/// The registers a vCPU thread had at hand when it stopped for a debugger (from `kvm_run`
/// where KVM syncs them), so that a stop reply and the memory reads that follow it need no
/// round trip to the stopped vCPU's thread.
#[derive(Debug, Clone, Copy, Default)]
pub struct StopRegisters {
    /// General-purpose registers, rip and rflags.
    pub gprs: Option<kvm_regs>,
    /// Segment, control and descriptor-table registers (paging state).
    pub sregs: Option<kvm_sregs>,
}

/// Sets up a fresh vCPU fd: CPUID and the long-mode entry state.
pub fn init_vcpu(
    kvm: &Kvm,
    fd: &VcpuFd,
    entry: u64,
    memory: u64,
    index: u32,
) -> Result<(), VcpuError> {
    let kvm_err = |what| move |source| VcpuError::Kvm { what, source };
    let cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
    fd.set_cpuid2(&cpuid).map_err(kvm_err("KVM_SET_CPUID2"))?;
    reset_vcpu(fd, entry, memory, index).map(drop)
}

/// Puts a vCPU back at its entry state; returns the general registers it set.
pub fn reset_vcpu(fd: &VcpuFd, entry: u64, memory: u64, index: u32) -> Result<kvm_regs, VcpuError> {
    boot::enter_long_mode(fd, entry, memory, index)
        .map_err(|(what, source)| VcpuError::Kvm { what, source })
}
