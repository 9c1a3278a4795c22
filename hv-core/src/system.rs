//! A running system: builds every partition of a system description (one KVM VM each), wires IPC
//! channels between them, starts vCPU threads and the scheduler, and shuts it all down.

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use hv_config::SystemConfig;
use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Cap, Kvm, VcpuFd, VmFd};
use vm_memory::{
    FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap, MmapRegion,
};

use crate::boot::{self, BootDeviceInfo, BootInfo, BootIpcInfo};
use crate::bus::Bus;
use crate::clock::Clock;
use crate::console::{Console, Uart};
use crate::devmodel::{ServedDevice, ServedMmio};
use crate::events::{EventHub, SystemEvent};
use crate::ipc::{IpcChannel, IpcError};
use crate::kvm_ext;
use crate::layout::{UART_PORT, UART_PORT_COUNT, UART_VECTOR, VCPU_STACK_SIZE};
use crate::loader::{GuestImage, LoadError};
use crate::partition::{IpcEndpoint, Partition, PartitionError, PartitionParts};
use crate::scheduler::{Scheduler, WindowEdge};
use crate::vcpu::{IrqLine, VcpuError, VcpuRunner, VcpuShared, init_vcpu};

/// Where KVM wants its three-page TSS area (outside RAM, inside the identity map; system
/// descriptions must not place MMIO there).
pub const KVM_TSS_ADDR: u64 = 0xfffb_d000;
/// Trace records per vCPU ring.
pub const TRACE_CAPACITY: usize = 1 << 16;

/// Errors while building or starting a system.
#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    /// /dev/kvm is missing.
    #[error(
        "/dev/kvm does not exist: this machine has no KVM. Enable virtualization (VT-x/AMD-V) in the firmware, load the kvm_intel or kvm_amd module, or, inside a VM, enable nested virtualization"
    )]
    NoKvm,
    /// /dev/kvm is there but not ours.
    #[error(
        "permission denied opening /dev/kvm: add your user to the kvm group (sudo usermod -aG kvm $USER, then log in again) or run as root"
    )]
    KvmPermission,
    /// Another failure opening or using KVM.
    #[error("KVM: {what}")]
    Kvm {
        /// What we were doing.
        what: String,
        /// The errno.
        #[source]
        source: vmm_sys_util::errno::Error,
    },
    /// A guest image could not be loaded.
    #[error("partition {partition}")]
    Image {
        /// Partition name.
        partition: String,
        /// Why.
        #[source]
        source: LoadError,
    },
    /// Guest memory could not be created.
    #[error("partition {partition}: cannot create guest memory: {reason}")]
    Memory {
        /// Partition name.
        partition: String,
        /// Why.
        reason: String,
    },
    /// An IPC channel could not be created.
    #[error(transparent)]
    Ipc(#[from] IpcError),
    /// A partition could not be set up.
    #[error(transparent)]
    Partition(#[from] PartitionError),
    /// A vCPU could not be set up.
    #[error("partition {partition}")]
    Vcpu {
        /// Partition name.
        partition: String,
        /// Why.
        #[source]
        source: VcpuError,
    },
    /// A host thread could not be started.
    #[error("cannot start a thread")]
    Thread(#[from] std::io::Error),
}

fn kvm_err(what: impl Into<String>) -> impl FnOnce(vmm_sys_util::errno::Error) -> SystemError {
    let what = what.into();
    move |source| SystemError::Kvm { what, source }
}

/// Opens /dev/kvm with an actionable error.
pub fn open_kvm() -> Result<Kvm, SystemError> {
    Kvm::new().map_err(|e| match e.errno() {
        libc::ENOENT => SystemError::NoKvm,
        libc::EACCES | libc::EPERM => SystemError::KvmPermission,
        _ => SystemError::Kvm {
            what: "opening /dev/kvm".into(),
            source: e,
        },
    })
}

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
    sync_regs: bool,
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
    /// Builds every partition: VMs, memory, images loaded, vCPUs at their entry. Nothing runs yet.
    pub fn new(config: SystemConfig) -> Result<System, SystemError> {
        kvm_ext::install_kick_handler().map_err(kvm_err("installing the kick signal handler"))?;
        let kvm = open_kvm()?;
        let sync_regs = kvm.check_extension(Cap::SyncRegs);
        let clock = Arc::new(Clock::shared().clone());
        let events = Arc::new(EventHub::default());

        let channels = config
            .channels
            .iter()
            .map(|c| IpcChannel::new(&c.name, c.size).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;

        // Devices served by model partitions: numbered per model in description order.
        let devices: Vec<Arc<ServedDevice>> = config
            .devices
            .iter()
            .map(|d| {
                let number = config
                    .devices
                    .iter()
                    .filter(|o| o.served_by == d.served_by)
                    .position(|o| o.name == d.name)
                    .unwrap_or(0);
                Arc::new(ServedDevice::new(d, number as u32))
            })
            .collect();

        let mut partitions = Vec::new();
        let mut pending_vcpus = Vec::new();
        let mut vms = Vec::new();
        for (id, pc) in config.partitions.iter().enumerate() {
            let perr = |reason: String| SystemError::Memory {
                partition: pc.name.clone(),
                reason,
            };
            let load_limit = pc.memory - u64::from(pc.vcpus) * VCPU_STACK_SIZE;
            let image = GuestImage::from_file(&pc.image, load_limit).map_err(|source| {
                SystemError::Image {
                    partition: pc.name.clone(),
                    source,
                }
            })?;
            let vm = kvm.create_vm().map_err(kvm_err("creating a VM"))?;
            vm.set_tss_address(KVM_TSS_ADDR as usize)
                .map_err(kvm_err("setting the TSS address"))?;

            // Memory: RAM at 0, then this partition's IPC windows.
            let ram = MmapRegion::new(pc.memory as usize).map_err(|e| perr(e.to_string()))?;
            let mut regions =
                vec![GuestRegionMmap::new(ram, GuestAddress(0)).ok_or_else(|| perr("RAM".into()))?];
            let mut endpoints = Vec::new();
            for (channel_index, gpa, size) in config.ipc_windows(&pc.name) {
                let channel = channels[channel_index].clone();
                let file = channel.shm.try_clone().map_err(|e| perr(e.to_string()))?;
                let window = MmapRegion::from_file(FileOffset::new(file, 0), size as usize)
                    .map_err(|e| perr(e.to_string()))?;
                regions.push(
                    GuestRegionMmap::new(window, GuestAddress(gpa))
                        .ok_or_else(|| perr(format!("IPC window at {gpa:#x}")))?,
                );
                let endpoint = usize::from(config.channels[channel_index].endpoints[1] == pc.name);
                endpoints.push((
                    channel_index,
                    IpcEndpoint {
                        channel,
                        endpoint,
                        gpa,
                    },
                ));
            }
            let memory = GuestMemoryMmap::from_regions(regions).map_err(|e| perr(e.to_string()))?;
            for (slot, region) in memory.iter().enumerate() {
                let host = memory
                    .get_host_address(region.start_addr())
                    .map_err(|e| perr(e.to_string()))?;
                let mem_region = kvm_userspace_memory_region {
                    slot: slot as u32,
                    guest_phys_addr: region.start_addr().0,
                    memory_size: region.len(),
                    userspace_addr: host as u64,
                    flags: 0,
                };
                // SAFETY: the region is a live mapping owned by `memory`, which the partition keeps
                // for as long as the VM exists (the VM fd is dropped with the System, after the
                // partitions' vCPU threads have ended).
                unsafe { vm.set_user_memory_region(mem_region) }
                    .map_err(kvm_err(format!("mapping guest memory of {}", pc.name)))?;
            }

            let vcpus: Vec<Arc<VcpuShared>> = (0..pc.vcpus)
                .map(|i| Arc::new(VcpuShared::new(id, i, TRACE_CAPACITY)))
                .collect();
            let console = Arc::new(Console::new(id, events.clone()));
            let uart = Arc::new(Mutex::new(Uart::new(
                console.clone(),
                IrqLine::new(vcpus[0].clone(), UART_VECTOR),
            )));
            let mut pio = Bus::default();
            pio.insert(
                u64::from(UART_PORT),
                u64::from(UART_PORT_COUNT),
                uart.clone(),
            )
            .map_err(|e| perr(e.to_string()))?;
            let mut mmio = Bus::default();
            let mut boot_devices = Vec::new();
            for (dc, device) in config.devices.iter().zip(&devices) {
                if dc.partition == pc.name {
                    mmio.insert(
                        dc.mmio_base,
                        dc.mmio_size,
                        Arc::new(Mutex::new(ServedMmio(device.clone()))),
                    )
                    .map_err(|e| perr(format!("device {}: {e}", dc.name)))?;
                    boot_devices.push(BootDeviceInfo {
                        name: boot::name_field(&dc.name),
                        mmio_base: dc.mmio_base,
                        mmio_size: dc.mmio_size,
                        device: boot_devices.len() as u32,
                        vector: dc.irq.map_or(0, u32::from),
                        is_model: 0,
                        reserved: 0,
                    });
                }
            }
            let served: Vec<Arc<ServedDevice>> = config
                .devices
                .iter()
                .zip(&devices)
                .filter(|(dc, _)| dc.served_by.as_deref() == Some(pc.name.as_str()))
                .map(|(dc, device)| {
                    boot_devices.push(BootDeviceInfo {
                        name: boot::name_field(&dc.name),
                        mmio_base: dc.mmio_base,
                        mmio_size: dc.mmio_size,
                        device: device.model_number,
                        vector: u32::from(dc.request_vector),
                        is_model: 1,
                        reserved: 0,
                    });
                    device.clone()
                })
                .collect();

            let mut boot_info = BootInfo {
                partition_id: id as u32,
                vcpu_count: pc.vcpus,
                memory_size: pc.memory,
                name: boot::name_field(&pc.name),
                ipc_count: endpoints.len().min(boot::MAX_IPC) as u32,
                device_count: boot_devices.len().min(boot::MAX_DEVICES) as u32,
                ..BootInfo::default()
            };
            for (slot, info) in boot_devices.into_iter().take(boot::MAX_DEVICES).enumerate() {
                boot_info.devices[slot] = info;
            }
            for (number, (channel_index, endpoint)) in
                endpoints.iter().enumerate().take(boot::MAX_IPC)
            {
                let cc = &config.channels[*channel_index];
                endpoint
                    .channel
                    .connect(endpoint.endpoint, IrqLine::new(vcpus[0].clone(), cc.vector));
                boot_info.ipc[number] = BootIpcInfo {
                    name: boot::name_field(&cc.name),
                    shm_addr: endpoint.gpa,
                    shm_size: cc.size,
                    channel: number as u32,
                    doorbell: u32::from(cc.vector),
                    endpoint: endpoint.endpoint as u32,
                    reserved: 0,
                };
            }

            let partition = Arc::new(Partition::new(
                id,
                pc.clone(),
                PartitionParts {
                    memory,
                    vcpus: vcpus.clone(),
                    pio,
                    mmio,
                    uart,
                    console,
                    ipc: endpoints.into_iter().map(|(_, e)| e).collect(),
                    served,
                    image,
                    boot_info,
                    in_window: config.schedule.is_none(),
                },
                events.clone(),
                clock.clone(),
            )?);
            partition.load()?;
            let mut fds = Vec::new();
            for i in 0..pc.vcpus {
                let fd = vm
                    .create_vcpu(u64::from(i))
                    .map_err(kvm_err(format!("creating vCPU {i} of {}", pc.name)))?;
                init_vcpu(&kvm, &fd, partition.entry(), pc.memory, i).map_err(|source| {
                    SystemError::Vcpu {
                        partition: pc.name.clone(),
                        source,
                    }
                })?;
                fds.push(fd);
            }
            pending_vcpus.push((partition.clone(), fds));
            partitions.push(partition);
            vms.push(vm);
        }

        for (dc, device) in config.devices.iter().zip(&devices) {
            let find = |name: &str| partitions.iter().find(|p: &&Arc<Partition>| p.name == name);
            let (Some(client), Some(model)) =
                (find(&dc.partition), dc.served_by.as_deref().and_then(find))
            else {
                continue;
            };
            device.connect(
                client,
                dc.irq.map(|v| IrqLine::new(client.vcpus[0].clone(), v)),
                model,
                IrqLine::new(model.vcpus[0].clone(), dc.request_vector),
            );
        }

        Ok(System {
            config,
            partitions,
            events,
            clock,
            threads: Vec::new(),
            pending_vcpus,
            scheduler: Mutex::new(None),
            sync_regs,
            _vms: vms,
            _kvm: kvm,
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

    /// All partitions, in description order.
    pub fn partitions(&self) -> &[Arc<Partition>] {
        &self.partitions
    }

    /// The partition called `name`.
    pub fn partition(&self, name: &str) -> Option<&Arc<Partition>> {
        self.partitions.iter().find(|p| p.name == name)
    }

    /// A new event subscription (console lines, state changes, warnings).
    pub fn subscribe(&self, capacity: usize) -> crossbeam_channel::Receiver<SystemEvent> {
        self.events.subscribe(capacity)
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
