//! Guest-physical memory layout of every partition: the one place these addresses live.
//!
//! The same numbers appear in `guests/sdk/include/hv_abi.h`; a unit test checks that they agree.
//! The addresses and vectors the system description is also checked against (image base, stacks,
//! IPC area, identity map, UART and first guest vector) are `hv_config::layout`'s, re-exported
//! here, so each is written once.

pub use hv_config::layout::{
    FIRST_VECTOR, IDENTITY_MAPPED, IMAGE_BASE, IPC_BASE, IPC_END, UART_VECTOR, VCPU_STACK_SIZE,
};

/// The GDT the VMM writes for the boot CPU state (null, code64, data, 64-bit TSS).
pub const GDT_ADDR: u64 = 0x1000;
/// A 104-byte TSS the GDT's TSS descriptor points at.
pub const TSS_ADDR: u64 = 0x1800;
/// The boot-info block (`struct hv_boot_info`); `rdi` points here at entry.
pub const BOOT_INFO_ADDR: u64 = 0x2000;
/// Size reserved for the boot-info block.
pub const BOOT_INFO_SIZE: u64 = 0x1000;
/// Level-4 page table; the PDPT follows at +0x1000 and four page directories after it.
pub const PML4_ADDR: u64 = 0x9000;
/// The page-directory-pointer table.
pub const PDPT_ADDR: u64 = PML4_ADDR + 0x1000;
/// The first of four page directories, identity-mapping 0..4 GiB with 2 MiB pages.
pub const PD_ADDR: u64 = PDPT_ADDR + 0x1000;
/// The hypercall I/O port (`out %eax, $0xE0`).
pub const HYPERCALL_PORT: u16 = 0xE0;
/// The 16550 UART's I/O base (COM1).
pub const UART_PORT: u16 = 0x3F8;
/// Number of I/O ports the UART decodes.
pub const UART_PORT_COUNT: u16 = 8;

/// Top of vCPU `index`'s stack in a partition with `memory` bytes of RAM.
pub fn vcpu_stack_top(memory: u64, index: u32) -> u64 {
    memory - u64::from(index) * VCPU_STACK_SIZE
}

// The boot structures do not overlap and fit below the image (checked at compile time).
const _: () = assert!(PD_ADDR + 4 * 0x1000 <= IMAGE_BASE);
const _: () = assert!(BOOT_INFO_ADDR + BOOT_INFO_SIZE <= PML4_ADDR);
const _: () = assert!(TSS_ADDR + 104 <= BOOT_INFO_ADDR);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacks_grow_down_from_top_of_ram() {
        assert_eq!(vcpu_stack_top(16 << 20, 0), 16 << 20);
        assert_eq!(vcpu_stack_top(16 << 20, 1), (16 << 20) - 0x1_0000);
    }
}
