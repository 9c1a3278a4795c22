//! Probes of what this host's KVM really does for debuggers, by running two instructions in a
//! scratch VM: some hosts (nested, paravirtualised KVM such as PVM) advertise guest debugging but
//! fail on `int3` with an internal error, or never raise data breakpoints. The debug agent picks
//! its breakpoint strategy from the answer.

use std::sync::OnceLock;

use kvm_bindings::{
    KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_USE_HW_BP, KVM_GUESTDBG_USE_SW_BP, kvm_guest_debug,
    kvm_userspace_memory_region,
};
use kvm_ioctls::{Kvm, VcpuExit};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use crate::layout::{HYPERCALL_PORT, IMAGE_BASE};

/// What guest debugging works on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DebugCaps {
    /// `int3` with `KVM_GUESTDBG_USE_SW_BP` reports a debug exit.
    pub sw_breakpoints: bool,
    /// A data write hits a debug-register watchpoint.
    pub data_watchpoints: bool,
}

/// The probed capabilities (probed once per process; all false when KVM is unusable).
pub fn debug_caps() -> DebugCaps {
    static CAPS: OnceLock<DebugCaps> = OnceLock::new();
    *CAPS.get_or_init(|| DebugCaps {
        sw_breakpoints: run_probe(&[0xcc], KVM_GUESTDBG_USE_SW_BP, 0),
        // mov [0x200000], al ; out 0xE0, al
        data_watchpoints: run_probe(
            &[
                0x88,
                0x04,
                0x25,
                0x00,
                0x00,
                0x20,
                0x00,
                0xe6,
                HYPERCALL_PORT as u8,
            ],
            KVM_GUESTDBG_USE_HW_BP,
            0x20_0000,
        ),
    })
}

/// Runs `code` at IMAGE_BASE in long mode; true when the first exit is a debug exit.
fn run_probe(code: &[u8], control: u32, watch: u64) -> bool {
    let attempt = || -> Option<bool> {
        let kvm = Kvm::new().ok()?;
        let vm = kvm.create_vm().ok()?;
        let memory: GuestMemoryMmap =
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).ok()?;
        crate::boot::write_boot_tables(&memory).ok()?;
        memory.write_slice(code, GuestAddress(IMAGE_BASE)).ok()?;
        let region = kvm_userspace_memory_region {
            slot: 0,
            guest_phys_addr: 0,
            memory_size: 4 << 20,
            userspace_addr: memory.get_host_address(GuestAddress(0)).ok()? as u64,
            flags: 0,
        };
        // SAFETY: the region stays mapped until `memory` is dropped, which happens after the VM
        // and its vCPU are dropped explicitly below.
        unsafe { vm.set_user_memory_region(region) }.ok()?;
        let mut vcpu = vm.create_vcpu(0).ok()?;
        crate::vcpu::reset_vcpu(&vcpu, IMAGE_BASE, 4 << 20, 0).ok()?;
        let mut dbg = kvm_guest_debug {
            control: KVM_GUESTDBG_ENABLE | control,
            ..Default::default()
        };
        if watch != 0 {
            dbg.arch.debugreg[0] = watch;
            dbg.arch.debugreg[7] = 1 | (0b01 << 16) | (1 << 9); // L0, write, 1 byte, GE
        }
        vcpu.set_guest_debug(&dbg).ok()?;
        let hit = matches!(vcpu.run(), Ok(VcpuExit::Debug(_)));
        drop(vcpu);
        drop(vm);
        drop(memory);
        Some(hit)
    };
    attempt().unwrap_or(false)
}

#[cfg(test)]
mod tests {
    #[test]
    fn probing_never_panics_and_is_stable() {
        let first = super::debug_caps();
        assert_eq!(first, super::debug_caps());
        eprintln!("debug capabilities of this host: {first:?}");
    }
}
