//! hv-core: the hvdk partitioning hypervisor on Linux KVM (x86_64).
//!
//! A [`System`] is built from a system description ([`hv_config::SystemConfig`]): each partition
//! is its own KVM VM with its own memory ([`partition`]), vCPU threads ([`vcpu`]), UART and device
//! bus ([`bus`], [`console`]), virtual timer ([`timer`]) and IPC endpoints ([`ipc`]). Guests talk
//! to the hypervisor through the hypercall ABI in [`hypercall`]. Interrupts are injected from user
//! space ([`irq`]) so every raise, injection and EOI is observable; every vCPU writes its own trace
//! ring ([`trace`]). Tools (the debug agent, `hv run`, tests and benches) control partitions and
//! vCPUs through [`PartitionHandle`] and [`VcpuShared`], never through a lock over the whole
//! system; the partition itself (`partition::Partition`, the bundle of a VM's parts: memory,
//! buses, UART, timer, IPC endpoints) is private to this crate, for the builder, the vCPU
//! threads and the unit tests.

pub mod boot;
mod builder;
pub mod bus;
pub mod clock;
pub mod console;
pub mod devmodel;
pub mod events;
pub mod hypercall;
pub mod ipc;
pub mod irq;
pub mod kvm_ext;
pub mod layout;
pub mod lifecycle;
pub mod loader;
pub mod partition;
pub mod poll;
pub mod probe;
pub mod scheduler;
pub mod system;
pub mod timer;
pub mod trace;
pub mod vcpu;

pub use events::SystemEvent;
pub use partition::{CrashReport, PartitionError, PartitionHandle, PartitionLifecycle};
pub use system::{System, SystemError, kvm_available, kvm_or_skip};
pub use vcpu::{VcpuError, VcpuRegisters, VcpuShared, VcpuThreadState};
