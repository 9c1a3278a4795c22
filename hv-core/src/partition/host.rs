//! The partition's side of its seams: how its vCPU threads see it ([`VcpuHost`]), how a served
//! device's request queue sees it as client or model ([`DeviceEnd`]), and where its guests'
//! port and MMIO accesses go ([`DeviceAccess`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Partition;
use crate::devmodel::DeviceEnd;
use crate::lifecycle::PartitionLifecycle;
use crate::vcpu::{
    DebugExit, DebugReport, DeviceAccess, HypercallOutcome, StopRegisters, VcpuHost, VcpuRegisters,
    VcpuShared, VcpuThreadState,
};

/// How the vCPU threads see their partition.
impl VcpuHost for Partition {
    fn lifecycle_park(&self) -> Option<VcpuThreadState> {
        self.parked_state()
    }

    fn in_window(&self) -> bool {
        Partition::in_window(self)
    }

    fn is_shutting_down(&self) -> bool {
        Partition::is_shutting_down(self)
    }

    fn vcpu_parked(&self) {
        self.notify_parked();
    }

    fn crashed(&self, vcpu: u32, reason: String, registers: Option<VcpuRegisters>) {
        self.crash(vcpu, reason, registers);
    }

    fn exited(&self, code: i64) {
        self.exit(code);
    }

    fn debug_exit(
        &self,
        vcpu: &VcpuShared,
        exit: DebugExit,
        registers: StopRegisters,
    ) -> Option<DebugReport> {
        Partition::debug_exit(self, vcpu, exit, registers)
    }

    fn warn(&self, message: String) {
        Partition::warn(self, message);
    }

    #[inline]
    fn now_ns(&self) -> u64 {
        self.clock.now_ns()
    }

    fn interrupt_injected(&self) {
        self.stats.irqs_injected.fetch_add(1, Ordering::Relaxed);
    }

    fn read_guest(&self, addr: u64, buf: &mut [u8]) -> bool {
        self.read_memory(addr, buf).is_ok()
    }

    fn memory_size(&self) -> u64 {
        self.config.memory
    }

    fn hypercall(
        &self,
        vcpu: &Arc<VcpuShared>,
        nr: u64,
        args: [u64; 4],
        stamp: u64,
    ) -> HypercallOutcome {
        Partition::hypercall(self, vcpu, nr, args, stamp)
    }

    fn take_device_request(&self, vcpu: &VcpuShared, buf: u64) -> i64 {
        Partition::take_device_request(self, vcpu, buf)
    }
}

/// How a served device's request queue sees its client and its model.
impl DeviceEnd for Partition {
    fn lifecycle(&self) -> PartitionLifecycle {
        self.state()
    }

    fn debug_stopped(&self) -> bool {
        self.vcpus
            .iter()
            .any(|v| v.state() == VcpuThreadState::DebugStopped)
    }

    fn uptime_ns(&self) -> u64 {
        Partition::uptime_ns(self)
    }

    fn is_shutting_down(&self) -> bool {
        Partition::is_shutting_down(self)
    }

    fn warn(&self, message: String) {
        Partition::warn(self, message);
    }
}

impl DeviceAccess for Partition {
    fn pio_read(&self, port: u16, data: &mut [u8]) {
        if !self.pio.read(u64::from(port), data, 0xff) {
            self.unmapped("port read", u64::from(port), data.len());
        }
    }
    fn pio_write(&self, port: u16, data: &[u8]) {
        if !self.pio.write(u64::from(port), data) {
            self.unmapped("port write", u64::from(port), data.len());
        }
    }
    fn mmio_read(&self, addr: u64, data: &mut [u8]) {
        if !self.mmio.read(addr, data, 0) {
            self.unmapped("MMIO read", addr, data.len());
        }
    }
    fn mmio_write(&self, addr: u64, data: &[u8]) {
        if !self.mmio.write(addr, data) {
            self.unmapped("MMIO write", addr, data.len());
        }
    }
}
