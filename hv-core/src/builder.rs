//! Building a system from its description, one step per function: IPC channels and served
//! devices, then per partition its guest memory, device buses, boot info and the `Partition`
//! itself (none of which needs KVM), then the KVM side (a VM, its memory slots, vCPU fds), and
//! last the device-model wiring between partitions.

use std::sync::{Arc, Mutex};

use hv_config::{PartitionConfig, SystemConfig};
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
use crate::devmodel::{DeviceEnd, ServedDevice, ServedMmio};
use crate::events::EventHub;
use crate::ipc::{IpcChannel, IpcError};
use crate::irq::IrqLine;
use crate::kvm_ext;
use crate::layout::{UART_PORT, UART_PORT_COUNT, UART_VECTOR, VCPU_STACK_SIZE};
use crate::loader::{GuestImage, LoadError};
use crate::partition::{IpcEndpoint, Partition, PartitionError, PartitionParts};
use crate::vcpu::{SyncedRegisters, VcpuError, VcpuShared, init_vcpu};

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

/// A built system before its threads start: what `System::new` keeps.
pub(crate) struct Built {
    pub partitions: Vec<Arc<Partition>>,
    pub pending_vcpus: Vec<(Arc<Partition>, Vec<VcpuFd>)>,
    pub events: Arc<EventHub>,
    pub clock: Arc<Clock>,
    pub sync_regs: SyncedRegisters,
    pub vms: Vec<VmFd>,
    pub kvm: Kvm,
}

fn kvm_err(what: impl Into<String>) -> impl FnOnce(vmm_sys_util::errno::Error) -> SystemError {
    let what = what.into();
    move |source| SystemError::Kvm { what, source }
}

/// Builds every partition: VMs, memory, images loaded, vCPUs at their entry. Nothing runs yet.
pub(crate) fn build(config: &SystemConfig) -> Result<Built, SystemError> {
    kvm_ext::install_kick_handler().map_err(kvm_err("installing the kick signal handler"))?;
    let kvm = open_kvm()?;
    let sync_regs = SyncedRegisters::from_mask(kvm.check_extension_int(Cap::SyncRegs));
    let clock = Arc::new(Clock::shared().clone());
    let events = Arc::new(EventHub::default());
    let channels = ipc_channels(config)?;
    let devices = served_devices(config);

    let mut partitions = Vec::new();
    let mut pending_vcpus = Vec::new();
    let mut vms = Vec::new();
    for (id, pc) in config.partitions.iter().enumerate() {
        let load_limit = pc.memory - u64::from(pc.vcpus) * VCPU_STACK_SIZE;
        let image =
            GuestImage::from_file(&pc.image, load_limit).map_err(|source| SystemError::Image {
                partition: pc.name.clone(),
                source,
            })?;
        let vm = kvm.create_vm().map_err(kvm_err("creating a VM"))?;
        vm.set_tss_address(KVM_TSS_ADDR as usize)
            .map_err(kvm_err("setting the TSS address"))?;
        let partition = Arc::new(assemble_partition(
            config, id, &channels, &devices, image, &events, &clock,
        )?);
        map_guest_memory(&vm, &partition.memory, &pc.name)?;
        partition.load()?;
        let fds = create_vcpus(&kvm, &vm, &partition)?;
        pending_vcpus.push((partition.clone(), fds));
        partitions.push(partition);
        vms.push(vm);
    }
    connect_served_devices(config, &devices, &partitions);
    Ok(Built {
        partitions,
        pending_vcpus,
        events,
        clock,
        sync_regs,
        vms,
        kvm,
    })
}

/// The description's IPC channels, in channel order.
pub(crate) fn ipc_channels(config: &SystemConfig) -> Result<Vec<Arc<IpcChannel>>, SystemError> {
    Ok(config
        .channels
        .iter()
        .map(|c| IpcChannel::new(&c.name, c.size).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?)
}

/// Devices served by model partitions, in description order, numbered per model.
pub(crate) fn served_devices(config: &SystemConfig) -> Vec<Arc<ServedDevice>> {
    config
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
        .collect()
}

/// Partition `id` of `config` with everything but KVM: memory, vCPU shared states, buses, the
/// UART and console, IPC endpoints (doorbells connected), served devices and boot info. Not
/// loaded yet (`Partition::load`).
pub(crate) fn assemble_partition(
    config: &SystemConfig,
    id: usize,
    channels: &[Arc<IpcChannel>],
    devices: &[Arc<ServedDevice>],
    image: GuestImage,
    events: &Arc<EventHub>,
    clock: &Arc<Clock>,
) -> Result<Partition, SystemError> {
    let pc = &config.partitions[id];
    let (memory, endpoints) = guest_memory(config, pc, channels)?;
    let vcpus: Vec<Arc<VcpuShared>> = (0..pc.vcpus)
        .map(|i| Arc::new(VcpuShared::new(id, i, TRACE_CAPACITY)))
        .collect();
    let console = Arc::new(Console::new(id, events.clone()));
    let uart = Arc::new(Mutex::new(Uart::new(
        console.clone(),
        IrqLine::new(vcpus[0].clone(), UART_VECTOR),
    )));
    let buses = device_buses(config, pc, devices, &uart)?;
    for (channel_index, endpoint) in &endpoints {
        let vector = config.channels[*channel_index].vector;
        endpoint
            .channel
            .connect(endpoint.endpoint, IrqLine::new(vcpus[0].clone(), vector));
    }
    let boot_info = boot_info(config, id, &endpoints, buses.boot_devices);
    Ok(Partition::new(
        id,
        pc.clone(),
        PartitionParts {
            memory,
            vcpus,
            pio: buses.pio,
            mmio: buses.mmio,
            uart,
            console,
            ipc: endpoints.into_iter().map(|(_, e)| e).collect(),
            served: buses.served,
            image,
            boot_info,
            in_window: config.schedule.is_none(),
        },
        events.clone(),
        clock.clone(),
    )?)
}

/// A partition's guest memory: RAM at 0, then its IPC windows (each channel's shared memory
/// mapped at the address the description's layout gives it), with the endpoints they make.
fn guest_memory(
    config: &SystemConfig,
    pc: &PartitionConfig,
    channels: &[Arc<IpcChannel>],
) -> Result<(GuestMemoryMmap, Vec<(usize, IpcEndpoint)>), SystemError> {
    let perr = |reason: String| SystemError::Memory {
        partition: pc.name.clone(),
        reason,
    };
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
    Ok((memory, endpoints))
}

/// A partition's buses and the devices on them, with the boot-info rows of its devices.
struct Buses {
    pio: Bus,
    mmio: Bus,
    served: Vec<Arc<ServedDevice>>,
    boot_devices: Vec<BootDeviceInfo>,
}

/// The UART on the port bus; the devices this partition is a client of on the MMIO bus; the
/// devices it serves as a model. Boot-info rows: client devices first, then served ones.
fn device_buses(
    config: &SystemConfig,
    pc: &PartitionConfig,
    devices: &[Arc<ServedDevice>],
    uart: &Arc<Mutex<Uart>>,
) -> Result<Buses, SystemError> {
    let perr = |reason: String| SystemError::Memory {
        partition: pc.name.clone(),
        reason,
    };
    let mut pio = Bus::default();
    pio.insert(
        u64::from(UART_PORT),
        u64::from(UART_PORT_COUNT),
        uart.clone(),
    )
    .map_err(|e| perr(e.to_string()))?;
    let mut mmio = Bus::default();
    let mut boot_devices = Vec::new();
    for (dc, device) in config.devices.iter().zip(devices) {
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
        .zip(devices)
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
    Ok(Buses {
        pio,
        mmio,
        served,
        boot_devices,
    })
}

/// The boot-info block partition `id` reads at entry.
fn boot_info(
    config: &SystemConfig,
    id: usize,
    endpoints: &[(usize, IpcEndpoint)],
    boot_devices: Vec<BootDeviceInfo>,
) -> BootInfo {
    let pc = &config.partitions[id];
    let mut info = BootInfo {
        partition_id: id as u32,
        vcpu_count: pc.vcpus,
        memory_size: pc.memory,
        name: boot::name_field(&pc.name),
        ipc_count: endpoints.len().min(boot::MAX_IPC) as u32,
        device_count: boot_devices.len().min(boot::MAX_DEVICES) as u32,
        ..BootInfo::default()
    };
    for (slot, device) in boot_devices.into_iter().take(boot::MAX_DEVICES).enumerate() {
        info.devices[slot] = device;
    }
    for (number, (channel_index, endpoint)) in endpoints.iter().enumerate().take(boot::MAX_IPC) {
        let cc = &config.channels[*channel_index];
        info.ipc[number] = BootIpcInfo {
            name: boot::name_field(&cc.name),
            shm_addr: endpoint.gpa,
            shm_size: cc.size,
            channel: number as u32,
            doorbell: u32::from(cc.vector),
            endpoint: endpoint.endpoint as u32,
            reserved: 0,
        };
    }
    info
}

/// Registers every region of `memory` with the VM as a memory slot.
fn map_guest_memory(vm: &VmFd, memory: &GuestMemoryMmap, name: &str) -> Result<(), SystemError> {
    for (slot, region) in memory.iter().enumerate() {
        let host =
            memory
                .get_host_address(region.start_addr())
                .map_err(|e| SystemError::Memory {
                    partition: name.to_owned(),
                    reason: e.to_string(),
                })?;
        let mem_region = kvm_userspace_memory_region {
            slot: slot as u32,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
            flags: 0,
        };
        // SAFETY: the region is a live mapping owned by `memory`, which the partition keeps for as
        // long as the VM exists (the VM fd is dropped with the System, after the partitions' vCPU
        // threads have ended).
        unsafe { vm.set_user_memory_region(mem_region) }
            .map_err(kvm_err(format!("mapping guest memory of {name}")))?;
    }
    Ok(())
}

/// The partition's vCPU fds, each with CPUID set and at the image's entry.
fn create_vcpus(kvm: &Kvm, vm: &VmFd, partition: &Partition) -> Result<Vec<VcpuFd>, SystemError> {
    let pc = &partition.config;
    (0..pc.vcpus)
        .map(|i| {
            let fd = vm
                .create_vcpu(u64::from(i))
                .map_err(kvm_err(format!("creating vCPU {i} of {}", pc.name)))?;
            init_vcpu(kvm, &fd, partition.entry(), pc.memory, i).map_err(|source| {
                SystemError::Vcpu {
                    partition: pc.name.clone(),
                    source,
                }
            })?;
            Ok(fd)
        })
        .collect()
}

/// Wires each served device to its client (MMIO, interrupt) and its model (doorbell).
pub(crate) fn connect_served_devices(
    config: &SystemConfig,
    devices: &[Arc<ServedDevice>],
    partitions: &[Arc<Partition>],
) {
    for (dc, device) in config.devices.iter().zip(devices) {
        let find = |name: &str| partitions.iter().find(|p| p.name == name);
        let (Some(client), Some(model)) =
            (find(&dc.partition), dc.served_by.as_deref().and_then(find))
        else {
            continue;
        };
        let (client_end, model_end): (Arc<dyn DeviceEnd>, Arc<dyn DeviceEnd>) =
            (client.clone(), model.clone());
        device.connect(
            Arc::downgrade(&client_end),
            client.memory.clone(),
            dc.irq.map(|v| IrqLine::new(client.vcpus[0].clone(), v)),
            Arc::downgrade(&model_end),
            IrqLine::new(model.vcpus[0].clone(), dc.request_vector),
        );
    }
}

/// Every partition of the description in `toml`, built as [`build`] does but without KVM (no
/// VM, no vCPU threads; guest images are not read, each partition's image is empty and enters
/// at `IMAGE_BASE`): for unit tests of what the partitions do for their guests.
#[cfg(test)]
pub(crate) fn partitions_without_kvm(toml: &str) -> Vec<Arc<Partition>> {
    let options = hv_config::ParseOptions {
        host_cpus: Some(64),
        check_images: false,
    };
    let config = SystemConfig::parse_with(toml, std::path::Path::new("test.toml"), &options)
        .expect("a valid description");
    let clock = Arc::new(Clock::shared().clone());
    let events = Arc::new(EventHub::default());
    let channels = ipc_channels(&config).expect("IPC channels");
    let devices = served_devices(&config);
    let partitions: Vec<Arc<Partition>> = (0..config.partitions.len())
        .map(|id| {
            let image = GuestImage {
                path: config.partitions[id].image.clone(),
                entry: crate::layout::IMAGE_BASE,
                segments: Vec::new(),
            };
            let partition =
                assemble_partition(&config, id, &channels, &devices, image, &events, &clock)
                    .expect("a partition");
            Arc::new(partition)
        })
        .collect();
    connect_served_devices(&config, &devices, &partitions);
    partitions
}
