//! The narrow interface between the gdb target and the hypervisor: what a [`PartitionTarget`]
//! needs from a partition. [`LivePartition`] is the real one (hv-core's partition and its vCPU
//! threads); [`FakeGuest`](super::fake::FakeGuest) is an in-memory one for tests and fuzzing
//! without KVM.
//!
//! [`PartitionTarget`]: super::PartitionTarget

use std::sync::Arc;
use std::time::Duration;

use hv_core::probe::DebugCaps;
use hv_core::vcpu::DebugControl;
use hv_core::{
    PartitionError, PartitionHandle, PartitionLifecycle, VcpuRegisters, VcpuThreadState,
};

/// One partition as the gdb target sees it. vCPU indexes are `0..vcpu_count()`; the target
/// never passes others. Failures are hv-core's typed [`PartitionError`] (a vCPU's own failure is
/// its `Vcpu` variant, with the [`VcpuError`](hv_core::VcpuError) as its source).
pub trait GuestHandle: Send + 'static {
    /// The partition's name.
    fn name(&self) -> &str;
    /// Number of vCPUs.
    fn vcpu_count(&self) -> u32;
    /// The partition's state.
    fn state(&self) -> PartitionLifecycle;
    /// A vCPU's state.
    fn vcpu_state(&self, vcpu: u32) -> VcpuThreadState;
    /// What guest debugging works on this host.
    fn debug_caps(&self) -> DebugCaps;
    /// Asks a vCPU to stop for the debugger (returns at once).
    fn request_stop(&self, vcpu: u32);
    /// Lets a vCPU stopped for the debugger run again.
    fn release_stop(&self, vcpu: u32);
    /// Waits until the listed vCPUs are parked; false on timeout.
    fn wait_parked(&self, vcpus: &[u32], timeout: Duration) -> bool;
    /// A vCPU's registers.
    fn registers(&self, vcpu: u32) -> Result<VcpuRegisters, PartitionError>;
    /// Writes a vCPU's registers.
    fn set_registers(&self, vcpu: u32, registers: VcpuRegisters) -> Result<(), PartitionError>;
    /// Sets a vCPU's debug controls (applied before it next enters the guest).
    fn set_debug(&self, vcpu: u32, control: DebugControl);
    /// Sets a vCPU's debug controls and lets it run (a continue or a step); returns the
    /// resume's number, which the debug stops of this run carry ([`DebugStopEvent::resume`]).
    ///
    /// [`DebugStopEvent::resume`]: hv_core::partition::DebugStopEvent::resume
    fn resume(&self, vcpu: u32, control: DebugControl) -> u64;
    /// Gives a `#BP` that was the guest's own back to the guest.
    fn reinject_breakpoint(&self, vcpu: u32) -> Result<(), PartitionError>;
    /// Reads guest-physical memory (all of `buf` or an error).
    fn read_memory(&self, addr: u64, buf: &mut [u8]) -> Result<(), PartitionError>;
    /// Writes guest-physical memory (all of `buf` or an error).
    fn write_memory(&self, addr: u64, buf: &[u8]) -> Result<(), PartitionError>;
    /// Reloads the image and restarts the partition (every vCPU released).
    fn reset(&self) -> Result<(), PartitionError>;
    /// Raises interrupt `vector` on `vcpu` (any index: an unknown one is an error).
    fn raise(&self, vcpu: u32, vector: u8) -> Result<(), PartitionError>;
    /// Lines of `monitor partitions`: every partition of the system.
    fn partitions_report(&self) -> Vec<String>;
}

/// A real partition of a running system, with every partition of the system (for
/// `monitor partitions`): a thin adapter over hv-core's [`PartitionHandle`].
#[derive(Debug, Clone)]
pub struct LivePartition {
    /// The partition.
    pub partition: PartitionHandle,
    /// Every partition of the system.
    pub all: Arc<[PartitionHandle]>,
}

impl LivePartition {
    /// A vCPU request's failure as a failure of this partition.
    fn vcpu_error(&self, source: hv_core::VcpuError) -> PartitionError {
        PartitionError::Vcpu {
            name: self.partition.name().to_owned(),
            source,
        }
    }
}

impl GuestHandle for LivePartition {
    fn name(&self) -> &str {
        self.partition.name()
    }

    fn vcpu_count(&self) -> u32 {
        self.partition.vcpu_count()
    }

    fn state(&self) -> PartitionLifecycle {
        self.partition.state()
    }

    fn vcpu_state(&self, vcpu: u32) -> VcpuThreadState {
        self.partition
            .vcpu(vcpu)
            .map_or(VcpuThreadState::Gone, |v| v.state())
    }

    fn debug_caps(&self) -> DebugCaps {
        hv_core::probe::debug_caps()
    }

    fn request_stop(&self, vcpu: u32) {
        if let Ok(v) = self.partition.vcpu(vcpu) {
            v.request_stop();
        }
    }

    fn release_stop(&self, vcpu: u32) {
        if let Ok(v) = self.partition.vcpu(vcpu) {
            v.release_stop();
        }
    }

    fn wait_parked(&self, vcpus: &[u32], timeout: Duration) -> bool {
        self.partition.wait_vcpus_parked(vcpus, timeout)
    }

    fn registers(&self, vcpu: u32) -> Result<VcpuRegisters, PartitionError> {
        let v = self.partition.vcpu(vcpu)?;
        v.registers().map_err(|e| self.vcpu_error(e))
    }

    fn set_registers(&self, vcpu: u32, registers: VcpuRegisters) -> Result<(), PartitionError> {
        let v = self.partition.vcpu(vcpu)?;
        v.set_registers(registers).map_err(|e| self.vcpu_error(e))
    }

    fn set_debug(&self, vcpu: u32, control: DebugControl) {
        if let Ok(v) = self.partition.vcpu(vcpu) {
            v.set_debug(control);
        }
    }

    fn resume(&self, vcpu: u32, control: DebugControl) -> u64 {
        // One kick: setting the controls and releasing separately kicked twice, and the second
        // kick often found the vCPU already running (a wasted KVM_RUN round trip).
        match self.partition.vcpu(vcpu) {
            Ok(v) => v.resume_with(control),
            Err(_) => 0,
        }
    }

    fn reinject_breakpoint(&self, vcpu: u32) -> Result<(), PartitionError> {
        let v = self.partition.vcpu(vcpu)?;
        v.reinject_breakpoint().map_err(|e| self.vcpu_error(e))
    }

    fn read_memory(&self, addr: u64, buf: &mut [u8]) -> Result<(), PartitionError> {
        self.partition.read_memory(addr, buf)
    }

    fn write_memory(&self, addr: u64, buf: &[u8]) -> Result<(), PartitionError> {
        self.partition.write_memory(addr, buf)
    }

    fn reset(&self) -> Result<(), PartitionError> {
        self.partition.reset()
    }

    fn raise(&self, vcpu: u32, vector: u8) -> Result<(), PartitionError> {
        self.partition.raise(vcpu, vector)
    }

    fn partitions_report(&self) -> Vec<String> {
        self.all
            .iter()
            .map(|p| {
                let vcpus: Vec<String> = p
                    .vcpus()
                    .iter()
                    .map(|v| format!("{}:{}", v.index, v.state().name()))
                    .collect();
                format!(
                    "{:<3} {:<16} {:<10} vcpus {}",
                    p.id(),
                    p.name(),
                    p.state().name(),
                    vcpus.join(" ")
                )
            })
            .collect()
    }
}
