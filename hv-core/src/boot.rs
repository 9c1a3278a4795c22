//! Boot CPU state for a guest: long mode at the ELF entry, with a GDT, TSS and identity page
//! tables written into guest memory, SSE enabled, a stack and a boot-info block.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};
use vm_memory::{ByteValued, Bytes, GuestAddress, GuestMemoryBackend};

use crate::layout::{
    BOOT_INFO_ADDR, GDT_ADDR, IDENTITY_MAPPED, PD_ADDR, PDPT_ADDR, PML4_ADDR, TSS_ADDR,
    vcpu_stack_top,
};

/// Errors while writing boot structures.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// Guest memory refused a write (partition RAM too small for the boot structures).
    #[error("cannot write boot structures into guest memory")]
    Memory(#[from] vm_memory::GuestMemoryError),
}

/// GDT selectors.
pub const CODE_SELECTOR: u16 = 0x08;
/// Data/stack selector.
pub const DATA_SELECTOR: u16 = 0x10;
/// Task register selector.
pub const TSS_SELECTOR: u16 = 0x18;

const X86_CR0_PE: u64 = 1 << 0;
const X86_CR0_MP: u64 = 1 << 1;
const X86_CR0_ET: u64 = 1 << 4;
const X86_CR0_NE: u64 = 1 << 5;
const X86_CR0_WP: u64 = 1 << 16;
const X86_CR0_PG: u64 = 1 << 31;
const X86_CR4_PAE: u64 = 1 << 5;
const X86_CR4_OSFXSR: u64 = 1 << 9;
const X86_CR4_OSXMMEXCPT: u64 = 1 << 10;
const EFER_SCE: u64 = 1 << 0;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;

const PAGE_PRESENT: u64 = 1 << 0;
const PAGE_WRITABLE: u64 = 1 << 1;
const PAGE_HUGE: u64 = 1 << 7;

/// Packs a GDT entry from flags, base and limit (the x86 descriptor layout).
fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((u64::from(base) & 0xff00_0000) << 32)
        | ((u64::from(flags) & 0x0000_f0ff) << 40)
        | ((u64::from(limit) & 0x000f_0000) << 32)
        | ((u64::from(base) & 0x00ff_ffff) << 16)
        | (u64::from(limit) & 0x0000_ffff)
}

/// The segment register value a descriptor loads, as KVM wants it.
fn segment_from_entry(entry: u64, selector: u16) -> kvm_segment {
    let flag = |bit: u32| ((entry >> bit) & 1) as u8;
    kvm_segment {
        base: ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000),
        limit: {
            let raw = ((entry & 0xffff) | ((entry >> 32) & 0xf_0000)) as u32;
            if flag(55) == 1 {
                (raw << 12) | 0xfff
            } else {
                raw
            }
        },
        selector,
        type_: ((entry >> 40) & 0xf) as u8,
        present: flag(47),
        dpl: ((entry >> 45) & 0x3) as u8,
        db: flag(54),
        s: flag(44),
        l: flag(53),
        g: flag(55),
        avl: flag(52),
        unusable: if flag(47) == 1 { 0 } else { 1 },
        padding: 0,
    }
}

/// The boot GDT: null, 64-bit code, data, and a 16-byte 64-bit TSS descriptor.
pub fn gdt_table() -> [u64; 5] {
    [
        0,
        gdt_entry(0xa09b, 0, 0xfffff), // code: present, ring 0, execute/read, long mode, 4 KiB granular
        gdt_entry(0xc093, 0, 0xfffff), // data: present, ring 0, read/write, 32-bit, 4 KiB granular
        gdt_entry(0x008b, TSS_ADDR as u32, 0x67), // 64-bit TSS (busy), low half
        TSS_ADDR >> 32,                // TSS descriptor high half (base bits 63..32)
    ]
}

/// Writes the GDT, TSS and identity page tables (0..4 GiB, 2 MiB pages) into guest memory.
pub fn write_boot_tables<M: GuestMemoryBackend>(mem: &M) -> Result<(), BootError> {
    for (i, entry) in gdt_table().iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(GDT_ADDR + 8 * i as u64))?;
    }
    mem.write_slice(&[0u8; 104], GuestAddress(TSS_ADDR))?;
    // I/O map base beyond the TSS limit: no I/O permission bitmap.
    mem.write_obj(104u16, GuestAddress(TSS_ADDR + 102))?;

    mem.write_obj(
        PDPT_ADDR | PAGE_PRESENT | PAGE_WRITABLE,
        GuestAddress(PML4_ADDR),
    )?;
    let directories = IDENTITY_MAPPED >> 30;
    for pd in 0..directories {
        let pd_addr = PD_ADDR + pd * 0x1000;
        mem.write_obj(
            pd_addr | PAGE_PRESENT | PAGE_WRITABLE,
            GuestAddress(PDPT_ADDR + pd * 8),
        )?;
        let entries: Vec<u8> = (0..512u64)
            .flat_map(|i| {
                let phys = (pd << 30) | (i << 21);
                (phys | PAGE_PRESENT | PAGE_WRITABLE | PAGE_HUGE).to_le_bytes()
            })
            .collect();
        mem.write_slice(&entries, GuestAddress(pd_addr))?;
    }
    Ok(())
}

/// Applies long-mode boot state to `sregs` (as read from a fresh vCPU).
pub fn long_mode_sregs(sregs: &mut kvm_sregs) {
    let gdt = gdt_table();
    let code = segment_from_entry(gdt[1], CODE_SELECTOR);
    let data = segment_from_entry(gdt[2], DATA_SELECTOR);
    let mut tss = segment_from_entry(gdt[3], TSS_SELECTOR);
    tss.base = TSS_ADDR;

    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = (std::mem::size_of_val(&gdt) - 1) as u16;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
    sregs.ldt = kvm_segment {
        unusable: 1,
        type_: 2,
        present: 1,
        ..Default::default()
    };

    sregs.cr0 = X86_CR0_PE | X86_CR0_MP | X86_CR0_ET | X86_CR0_NE | X86_CR0_WP | X86_CR0_PG;
    sregs.cr3 = PML4_ADDR;
    sregs.cr4 = X86_CR4_PAE | X86_CR4_OSFXSR | X86_CR4_OSXMMEXCPT;
    sregs.efer = EFER_LME | EFER_LMA | EFER_SCE | EFER_NXE;
    sregs.cr8 = 0;
    sregs.apic_base = 0;
}

/// General-purpose registers at entry: rip = ELF entry, rdi = boot info, rsi = vCPU index,
/// rsp = top of this vCPU's stack, interrupts disabled.
pub fn entry_regs(entry: u64, memory: u64, vcpu_index: u32) -> kvm_regs {
    kvm_regs {
        rip: entry,
        rsp: vcpu_stack_top(memory, vcpu_index),
        rbp: 0,
        rdi: BOOT_INFO_ADDR,
        rsi: u64::from(vcpu_index),
        rflags: 0x2,
        ..Default::default()
    }
}

/// FPU/SSE state at entry: default control word and MXCSR.
pub fn entry_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

/// Maximum IPC channels described in the boot info (hv-config rejects descriptions with more).
pub const MAX_IPC: usize = hv_config::layout::MAX_CHANNELS_PER_PARTITION;
/// Maximum devices described in the boot info (hv-config rejects descriptions with more).
pub const MAX_DEVICES: usize = hv_config::layout::MAX_DEVICES_PER_PARTITION;
/// Length of names in the boot info (with the terminating NUL).
pub const NAME_LEN: usize = 32;
/// `"HVDKBOOT"` little-endian.
pub const BOOT_MAGIC: u64 = 0x544F_4F42_4B44_5648;
/// Boot-info layout version.
pub const BOOT_VERSION: u32 = 1;

/// `struct hv_ipc_info` of `hv_abi.h`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct BootIpcInfo {
    /// Channel name, NUL-terminated.
    pub name: [u8; NAME_LEN],
    /// Guest-physical base of the shared window.
    pub shm_addr: u64,
    /// Size of the shared window.
    pub shm_size: u64,
    /// Channel number for the IPC hypercalls.
    pub channel: u32,
    /// Doorbell vector raised in this partition.
    pub doorbell: u32,
    /// 0 or 1: which endpoint this partition is.
    pub endpoint: u32,
    /// Zero.
    pub reserved: u32,
}

/// `struct hv_device_info` of `hv_abi.h`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct BootDeviceInfo {
    /// Device name, NUL-terminated.
    pub name: [u8; NAME_LEN],
    /// MMIO base in the client.
    pub mmio_base: u64,
    /// MMIO size.
    pub mmio_size: u64,
    /// Device number for the device-model hypercalls.
    pub device: u32,
    /// Client: the device IRQ vector; model: the request doorbell vector.
    pub vector: u32,
    /// 1 when this partition serves the device.
    pub is_model: u32,
    /// Zero.
    pub reserved: u32,
}

/// `struct hv_boot_info` of `hv_abi.h`, written at `BOOT_INFO_ADDR`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BootInfo {
    /// `BOOT_MAGIC`.
    pub magic: u64,
    /// `BOOT_VERSION`.
    pub version: u32,
    /// Index of the partition in the system description.
    pub partition_id: u32,
    /// vCPUs in this partition.
    pub vcpu_count: u32,
    /// Valid entries of `ipc`.
    pub ipc_count: u32,
    /// RAM size in bytes.
    pub memory_size: u64,
    /// Partition name, NUL-terminated.
    pub name: [u8; NAME_LEN],
    /// Valid entries of `devices`.
    pub device_count: u32,
    /// Zero.
    pub reserved: u32,
    /// IPC channels of this partition.
    pub ipc: [BootIpcInfo; MAX_IPC],
    /// Devices of this partition.
    pub devices: [BootDeviceInfo; MAX_DEVICES],
}

impl Default for BootInfo {
    fn default() -> Self {
        BootInfo {
            magic: BOOT_MAGIC,
            version: BOOT_VERSION,
            partition_id: 0,
            vcpu_count: 0,
            ipc_count: 0,
            memory_size: 0,
            name: [0; NAME_LEN],
            device_count: 0,
            reserved: 0,
            ipc: [BootIpcInfo::default(); MAX_IPC],
            devices: [BootDeviceInfo::default(); MAX_DEVICES],
        }
    }
}

// SAFETY: plain repr(C) data made only of integers and byte arrays; every bit pattern is valid.
unsafe impl ByteValued for BootInfo {}

/// Copies `name` into a fixed NUL-terminated field (truncated to fit).
pub fn name_field(name: &str) -> [u8; NAME_LEN] {
    let mut field = [0u8; NAME_LEN];
    let len = name.len().min(NAME_LEN - 1);
    field[..len].copy_from_slice(&name.as_bytes()[..len]);
    field
}

/// Writes the boot-info block.
pub fn write_boot_info<M: GuestMemoryBackend>(mem: &M, info: &BootInfo) -> Result<(), BootError> {
    mem.write_obj(*info, GuestAddress(BOOT_INFO_ADDR))?;
    Ok(())
}

/// Puts a vCPU fd at the long-mode entry state (segments, paging, registers for vCPU `index`
/// of a partition with `memory` bytes of RAM, SSE) and forgets pending events; returns the
/// general registers it set, or the ioctl that failed and why.
pub fn enter_long_mode(
    fd: &kvm_ioctls::VcpuFd,
    entry: u64,
    memory: u64,
    index: u32,
) -> Result<kvm_regs, (&'static str, vmm_sys_util::errno::Error)> {
    let mut sregs = fd.get_sregs().map_err(|e| ("KVM_GET_SREGS", e))?;
    long_mode_sregs(&mut sregs);
    fd.set_sregs(&sregs).map_err(|e| ("KVM_SET_SREGS", e))?;
    let regs = entry_regs(entry, memory, index);
    fd.set_regs(&regs).map_err(|e| ("KVM_SET_REGS", e))?;
    fd.set_fpu(&entry_fpu()).map_err(|e| ("KVM_SET_FPU", e))?;
    // Forget a pending exception or interrupt from before a crash; best effort.
    let _ = fd.set_vcpu_events(&kvm_bindings::kvm_vcpu_events::default());
    let _ = fd.set_mp_state(kvm_bindings::kvm_mp_state {
        mp_state: kvm_bindings::KVM_MP_STATE_RUNNABLE,
    });
    Ok(regs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap()
    }

    /// Walks the tables we wrote the way the MMU would, for one virtual address.
    fn translate(mem: &GuestMemoryMmap, va: u64) -> u64 {
        let pml4e: u64 = mem
            .read_obj(GuestAddress(PML4_ADDR + ((va >> 39) & 0x1ff) * 8))
            .unwrap();
        assert_eq!(pml4e & PAGE_PRESENT, PAGE_PRESENT);
        let pdpte: u64 = mem
            .read_obj(GuestAddress((pml4e & !0xfff) + ((va >> 30) & 0x1ff) * 8))
            .unwrap();
        assert_eq!(pdpte & PAGE_PRESENT, PAGE_PRESENT);
        let pde: u64 = mem
            .read_obj(GuestAddress((pdpte & !0xfff) + ((va >> 21) & 0x1ff) * 8))
            .unwrap();
        assert_eq!(pde & (PAGE_PRESENT | PAGE_HUGE), PAGE_PRESENT | PAGE_HUGE);
        (pde & !0x1f_ffff) | (va & 0x1f_ffff)
    }

    #[test]
    fn page_tables_identity_map_four_gib() {
        let mem = memory();
        write_boot_tables(&mem).unwrap();
        for va in [
            0u64,
            0x10_0000,
            0x1234_5678,
            IPC_PROBE,
            0xd000_0000,
            IDENTITY_MAPPED - 1,
        ] {
            assert_eq!(translate(&mem, va), va, "va {va:#x}");
        }
    }
    const IPC_PROBE: u64 = crate::layout::IPC_BASE + 0x1234;

    #[test]
    fn gdt_read_back_matches_segments() {
        let mem = memory();
        write_boot_tables(&mem).unwrap();
        let mut sregs = kvm_sregs::default();
        long_mode_sregs(&mut sregs);
        let code: u64 = mem.read_obj(GuestAddress(GDT_ADDR + 8)).unwrap();
        let data: u64 = mem.read_obj(GuestAddress(GDT_ADDR + 16)).unwrap();
        assert_eq!(segment_from_entry(code, CODE_SELECTOR), sregs.cs);
        assert_eq!(segment_from_entry(data, DATA_SELECTOR), sregs.ss);
        assert_eq!(sregs.cs.l, 1, "code segment is 64-bit");
        assert_eq!(sregs.cs.db, 0, "L and D/B must not both be set");
        assert_eq!(sregs.cs.type_, 0xb);
        assert_eq!(sregs.tr.type_, 0xb, "busy 64-bit TSS");
        assert_eq!(sregs.tr.base, TSS_ADDR);
        assert_eq!(u64::from(sregs.gdt.limit) + 1, 5 * 8);
        assert_eq!(sregs.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_eq!(
            sregs.cr0 & (X86_CR0_PE | X86_CR0_PG),
            X86_CR0_PE | X86_CR0_PG
        );
        assert_ne!(sregs.cr4 & X86_CR4_OSFXSR, 0, "SSE enabled");
        assert_eq!(sregs.cr3, PML4_ADDR);
    }

    #[test]
    fn boot_info_layout_matches_the_c_header() {
        // offsets of struct hv_boot_info as gcc lays it out (see hv_abi.h)
        assert_eq!(std::mem::size_of::<BootIpcInfo>(), 64);
        assert_eq!(std::mem::size_of::<BootDeviceInfo>(), 64);
        assert_eq!(std::mem::offset_of!(BootInfo, name), 32);
        assert_eq!(std::mem::offset_of!(BootInfo, ipc), 72);
        assert_eq!(std::mem::offset_of!(BootInfo, devices), 72 + 8 * 64);
        assert!(std::mem::size_of::<BootInfo>() as u64 <= crate::layout::BOOT_INFO_SIZE);
    }

    #[test]
    fn entry_registers_follow_the_boot_contract() {
        let regs = entry_regs(0x10_1000, 16 << 20, 1);
        assert_eq!(regs.rip, 0x10_1000);
        assert_eq!(regs.rdi, BOOT_INFO_ADDR);
        assert_eq!(regs.rsi, 1);
        assert_eq!(regs.rsp, (16 << 20) - 0x1_0000);
        assert_eq!(regs.rflags & (1 << 9), 0, "interrupts disabled");
    }
}
