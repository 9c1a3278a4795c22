//! A running system: built from a system description (one KVM VM per partition, IPC channels
//! and device models wired between them; the steps are in `builder`), it starts the vCPU threads
//! and the scheduler, and shuts it all down.

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use hv_config::SystemConfig;
use kvm_ioctls::{Kvm, VcpuFd, VmFd};

use crate::clock::Clock;
use crate::events::{EventFilter, EventHub, SystemEvent};
use crate::kvm_ext;
use crate::partition::{Partition, PartitionHandle};
use crate::scheduler::{Scheduler, WindowEdge};
use crate::vcpu::{SyncedRegisters, VcpuRunner};

pub use crate::builder::{KVM_TSS_ADDR, SystemError, TRACE_CAPACITY, open_kvm};

/// A built (and, after `start`, running) system.
pub struct System {
    /// The description it was built from.
    pub config: SystemConfig,
    partitions: Vec<Arc<Partition>>,
    events: Arc<EventHub>,
    clock: Arc<Clock>,
    threads: Vec<JoinHandle<()>>,
    pending_vcpus: Vec<(Arc<Partition>, Vec<VcpuFd>)>,
    scheduler: Mutex<Option<Scheduler>>,
    sync_regs: SyncedRegisters,
    _vms: Vec<VmFd>,
    _kvm: Kvm,
}

impl std::fmt::Debug for System {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("System")
            .field("name", &self.config.name)
            .field("partitions", &self.partitions)
            .finish()
    }
}

impl System {
    /// Builds every partition: VMs, memory, images loaded, vCPUs at their entry. Nothing runs yet
    /// (the steps are in [`crate::builder`]).
    pub fn new(config: SystemConfig) -> Result<System, SystemError> {
        let built = crate::builder::build(&config)?;
        Ok(System {
            config,
            partitions: built.partitions,
            events: built.events,
            clock: built.clock,
            threads: Vec::new(),
            pending_vcpus: built.pending_vcpus,
            scheduler: Mutex::new(None),
            sync_regs: built.sync_regs,
            _vms: built.vms,
            _kvm: built.kvm,
        })
    }

    /// Starts every vCPU thread and the scheduler, and runs the partitions marked `autostart`.
    pub fn start(&mut self) -> Result<(), SystemError> {
        for (partition, fds) in std::mem::take(&mut self.pending_vcpus) {
            for (fd, shared) in fds.into_iter().zip(partition.vcpus.clone()) {
                let pin = partition
                    .config
                    .cpus
                    .as_ref()
                    .filter(|cpus| !cpus.is_empty())
                    .map(|cpus| cpus[shared.index as usize % cpus.len()]);
                let runner = VcpuRunner::new(fd, shared.clone(), partition.clone(), self.sync_regs);
                let name = format!("{}-vcpu{}", partition.name, shared.index);
                let partition_for_thread = partition.clone();
                self.threads
                    .push(std::thread::Builder::new().name(name).spawn(move || {
                        if let Some(cpu) = pin
                            && let Err(e) = kvm_ext::pin_current_thread(cpu)
                        {
                            partition_for_thread.warn(format!("cannot pin to host CPU {cpu}: {e}"));
                        }
                        runner.run();
                    })?);
            }
        }
        if let Some(schedule) = &self.config.schedule {
            let scheduler =
                Scheduler::start(schedule, self.partitions.clone(), self.clock.clone())?;
            *self.scheduler.lock().unwrap_or_else(|p| p.into_inner()) = Some(scheduler);
        }
        for partition in &self.partitions {
            if partition.config.autostart {
                partition.resume()?;
            }
        }
        Ok(())
    }

    /// A handle on every partition, in description order (what tools hold).
    pub fn handles(&self) -> Vec<PartitionHandle> {
        self.partitions
            .iter()
            .cloned()
            .map(PartitionHandle::from)
            .collect()
    }

    /// A handle on the partition called `name`.
    pub fn handle(&self, name: &str) -> Option<PartitionHandle> {
        self.partition(name).cloned().map(PartitionHandle::from)
    }

    /// The partition called `name`.
    pub(crate) fn partition(&self, name: &str) -> Option<&Arc<Partition>> {
        self.partitions.iter().find(|p| p.name == name)
    }

    /// A new event subscription (console lines, state changes, warnings).
    pub fn subscribe(&self, capacity: usize) -> crossbeam_channel::Receiver<SystemEvent> {
        self.events.subscribe(capacity)
    }

    /// A subscription to the events `wanted` accepts only (see [`EventHub::subscribe_to`]).
    pub fn subscribe_to(
        &self,
        capacity: usize,
        wanted: EventFilter,
    ) -> crossbeam_channel::Receiver<SystemEvent> {
        self.events.subscribe_to(capacity, wanted)
    }

    /// The trace clock.
    pub fn clock(&self) -> &Arc<Clock> {
        &self.clock
    }

    /// Recent schedule window edges (empty without a schedule).
    pub fn schedule_log(&self) -> Vec<WindowEdge> {
        self.scheduler
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(Scheduler::log)
            .unwrap_or_default()
    }

    /// Image paths, for symbolising and for debuggers.
    pub fn image_paths(&self) -> Vec<PathBuf> {
        self.partitions
            .iter()
            .map(|p| p.image_path().to_owned())
            .collect()
    }

    /// Stops every vCPU and helper thread.
    pub fn shutdown(&mut self) {
        self.scheduler
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        for partition in &self.partitions {
            partition.shut_down();
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for System {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Whether this process can use KVM (for tests that must skip loudly where it cannot).
pub fn kvm_available() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map(|f| f.as_raw_fd() >= 0)
        .unwrap_or(false)
}

/// For tests and benchmarks that boot guests: true when KVM is usable; otherwise prints one loud
/// `SKIPPED <test>: …` line and the caller returns early.
pub fn kvm_or_skip(test: &str) -> bool {
    if kvm_available() {
        return true;
    }
    eprintln!(
        "SKIPPED {test}: /dev/kvm is missing or not accessible; tests that boot guests need KVM"
    );
    false
}
