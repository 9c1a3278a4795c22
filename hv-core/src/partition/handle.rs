//! [`PartitionHandle`]: what a tool holds on a partition — its state, lifecycle control, vCPU
//! handles, guest memory, statistics (its own, its timer's, its served devices'), console
//! input, trace rings and debugger control, with typed errors — and nothing of the parts inside
//! (memory map, buses, UART, timer, IPC endpoints). The debug agent, `hv run`, the end-to-end
//! tests and the benches see partitions only through it.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{DebugSink, Partition, PartitionCounters, PartitionError};
use crate::lifecycle::PartitionLifecycle;
use crate::timer::TimerStats;
use crate::vcpu::VcpuShared;

/// A cheap, cloneable handle on one partition of a running system.
#[derive(Clone)]
pub struct PartitionHandle {
    partition: Arc<Partition>,
}

impl std::fmt::Debug for PartitionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.partition.fmt(f)
    }
}

impl From<Arc<Partition>> for PartitionHandle {
    fn from(partition: Arc<Partition>) -> Self {
        PartitionHandle { partition }
    }
}

impl PartitionHandle {
    /// Index in the system description (the partition id of trace records and the link).
    pub fn id(&self) -> usize {
        self.partition.id
    }

    /// Name from the system description.
    pub fn name(&self) -> &str {
        &self.partition.name
    }

    /// The guest image's path.
    pub fn image_path(&self) -> &Path {
        self.partition.image_path()
    }

    /// Lifecycle state.
    pub fn state(&self) -> PartitionLifecycle {
        self.partition.state()
    }

    /// Nanoseconds since the partition (re)started.
    pub fn uptime_ns(&self) -> u64 {
        self.partition.uptime_ns()
    }

    /// Starts or continues the partition.
    pub fn resume(&self) -> Result<(), PartitionError> {
        self.partition.resume()
    }

    /// Parks every vCPU (waits until they are parked).
    pub fn pause(&self) -> Result<(), PartitionError> {
        self.partition.pause()
    }

    /// Reloads the image and restarts the partition.
    pub fn reset(&self) -> Result<(), PartitionError> {
        self.partition.reset()
    }

    /// Number of vCPUs.
    pub fn vcpu_count(&self) -> u32 {
        self.partition.vcpus.len() as u32
    }

    /// vCPU `index`'s handle: its state, counters, trace ring, interrupts, registers and stops.
    pub fn vcpu(&self, index: u32) -> Result<&Arc<VcpuShared>, PartitionError> {
        self.partition.vcpu(index)
    }

    /// Every vCPU's handle, by index.
    pub fn vcpus(&self) -> &[Arc<VcpuShared>] {
        &self.partition.vcpus
    }

    /// Raises interrupt `vector` on vCPU `vcpu`.
    pub fn raise(&self, vcpu: u32, vector: u8) -> Result<(), PartitionError> {
        self.vcpu(vcpu)?.raise(vector);
        Ok(())
    }

    /// Reads guest-physical memory (all of `buf` or an error).
    pub fn read_memory(&self, addr: u64, buf: &mut [u8]) -> Result<(), PartitionError> {
        self.partition.read_memory(addr, buf)
    }

    /// Writes guest-physical memory (all of `buf` or an error).
    pub fn write_memory(&self, addr: u64, buf: &[u8]) -> Result<(), PartitionError> {
        self.partition.write_memory(addr, buf)
    }

    /// The partition's counters.
    pub fn stats(&self) -> &PartitionCounters {
        &self.partition.stats
    }

    /// The virtual timer's counters (deadlines fired, periods coalesced).
    pub fn timer_stats(&self) -> &TimerStats {
        self.partition.timer.stats()
    }

    /// Device requests this partition has answered as a device model, over all the devices it
    /// serves (0 when it serves none).
    pub fn device_requests_served(&self) -> u64 {
        self.partition
            .served
            .iter()
            .map(|device| device.served.load(Ordering::Relaxed))
            .sum()
    }

    /// Sends host input to the guest's UART; returns how many bytes fit.
    pub fn console_input(&self, bytes: &[u8]) -> usize {
        self.partition.console_input(bytes)
    }

    /// Host input the guest's UART holds and the guest has not read yet, oldest first.
    pub fn console_input_pending(&self) -> Vec<u8> {
        let uart = self.partition.uart.lock();
        uart.unwrap_or_else(|p| p.into_inner()).0.state().in_buffer
    }

    /// Attaches a debugger to the whole partition (`scope` None) or one vCPU: its debug exits go
    /// to `sink`.
    pub fn attach_debugger(&self, scope: Option<u32>, sink: DebugSink) {
        self.partition.attach_debugger(scope, sink);
    }

    /// Detaches the debugger of `scope`.
    pub fn detach_debugger(&self, scope: Option<u32>) {
        self.partition.detach_debugger(scope);
    }

    /// Waits until the listed vCPUs are parked (or gone); false on timeout.
    pub fn wait_vcpus_parked(&self, vcpus: &[u32], timeout: Duration) -> bool {
        self.partition.wait_vcpus_parked(vcpus, timeout)
    }

    /// Waits until every vCPU is parked (or gone); false on timeout.
    pub fn wait_parked(&self, timeout: Duration) -> bool {
        self.partition.wait_parked(timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::partitions_without_kvm;

    #[test]
    fn a_handle_reaches_memory_and_vcpus_with_typed_errors() {
        let partitions = partitions_without_kvm(
            "[[partition]]\nname = \"p\"\nimage = \"p.elf\"\nvcpus = 2\nautostart = false\n",
        );
        let handle = PartitionHandle::from(partitions[0].clone());
        assert_eq!(
            (handle.id(), handle.name(), handle.vcpu_count()),
            (0, "p", 2)
        );
        assert_eq!(handle.state(), PartitionLifecycle::Created);
        handle.write_memory(0x20_0000, b"abc").unwrap();
        let mut back = [0u8; 3];
        handle.read_memory(0x20_0000, &mut back).unwrap();
        assert_eq!(&back, b"abc");
        assert!(matches!(
            handle.read_memory(0x7000_0000, &mut back),
            Err(PartitionError::Memory {
                addr: 0x7000_0000,
                len: 3,
                ..
            })
        ));
        handle.raise(1, 40).unwrap();
        assert!(handle.vcpus()[1].irq().is_pending(40));
        assert!(matches!(
            handle.raise(2, 40),
            Err(PartitionError::NoSuchVcpu { index: 2, .. })
        ));
        assert_eq!(handle.vcpu(1).unwrap().index, 1);
        assert_eq!(handle.console_input(b"hi"), 2);
        assert_eq!(handle.console_input_pending(), b"hi");
        assert_eq!(handle.device_requests_served(), 0);
        assert_eq!(handle.timer_stats().fired.load(Ordering::Relaxed), 0);
    }
}
