//! Probes of what this host's KVM really does, by running a few instructions in a scratch VM:
//! some hosts (nested, paravirtualised KVM such as PVM) advertise guest debugging but fail on
//! `int3` with an internal error, or never raise data breakpoints, and some emulate every guest
//! instruction. The debug agent picks its breakpoint strategy from the answer; `hv doctor` reports
//! all of it.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Instant;

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

/// A one-vCPU VM with `code` at IMAGE_BASE in hv-core's long-mode boot state. Field order is
/// drop order: the vCPU and the VM go before the memory they map.
struct ScratchVm {
    vcpu: kvm_ioctls::VcpuFd,
    _vm: kvm_ioctls::VmFd,
    _memory: GuestMemoryMmap,
}

const SCRATCH_MEMORY: u64 = 4 << 20;

fn scratch_vm(code: &[u8]) -> Option<ScratchVm> {
    let kvm = Kvm::new().ok()?;
    let vm = kvm.create_vm().ok()?;
    let memory: GuestMemoryMmap =
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), SCRATCH_MEMORY as usize)]).ok()?;
    crate::boot::write_boot_tables(&memory).ok()?;
    memory.write_slice(code, GuestAddress(IMAGE_BASE)).ok()?;
    let region = kvm_userspace_memory_region {
        slot: 0,
        guest_phys_addr: 0,
        memory_size: SCRATCH_MEMORY,
        userspace_addr: memory.get_host_address(GuestAddress(0)).ok()? as u64,
        flags: 0,
    };
    // SAFETY: the region stays mapped until `memory` is dropped, which ScratchVm's field order
    // puts after the VM and its vCPU.
    unsafe { vm.set_user_memory_region(region) }.ok()?;
    let vcpu = vm.create_vcpu(0).ok()?;
    crate::boot::enter_long_mode(&vcpu, IMAGE_BASE, SCRATCH_MEMORY, 0).ok()?;
    Some(ScratchVm {
        vcpu,
        _vm: vm,
        _memory: memory,
    })
}

/// Runs `code` at IMAGE_BASE in long mode; true when the first exit is a debug exit.
fn run_probe(code: &[u8], control: u32, watch: u64) -> bool {
    let attempt = || -> Option<bool> {
        let mut scratch = scratch_vm(code)?;
        let mut dbg = kvm_guest_debug {
            control: KVM_GUESTDBG_ENABLE | control,
            ..Default::default()
        };
        if watch != 0 {
            dbg.arch.debugreg[0] = watch;
            dbg.arch.debugreg[7] = 1 | (0b01 << 16) | (1 << 9); // L0, write, 1 byte, GE
        }
        scratch.vcpu.set_guest_debug(&dbg).ok()?;
        Some(matches!(scratch.vcpu.run(), Ok(VcpuExit::Debug(_))))
    };
    attempt().unwrap_or(false)
}

/// The `KVM_GUESTDBG_*` flags this host's `KVM_SET_GUEST_DEBUG` accepts
/// (`KVM_CAP_SET_GUEST_DEBUG2`; 0 where KVM does not say or is unusable).
pub fn guest_debug_flags() -> u32 {
    static FLAGS: OnceLock<u32> = OnceLock::new();
    *FLAGS.get_or_init(|| {
        Kvm::new()
            .map(|kvm| {
                kvm.check_extension_raw(libc::c_ulong::from(kvm_bindings::KVM_CAP_SET_GUEST_DEBUG2))
                    .max(0) as u32
            })
            .unwrap_or(0)
    })
}

/// The kernel module that implements KVM on this host (`kvm_intel`, `kvm_amd`, `kvm_pvm`), when
/// sysfs tells.
pub fn kvm_backend() -> Option<&'static str> {
    ["kvm_intel", "kvm_amd", "kvm_pvm"]
        .into_iter()
        .find(|module| Path::new("/sys/module").join(module).exists())
}

/// Nanoseconds one guest instruction takes, from two `out` loops that differ by `NOPS` `nop`s
/// (the exit cost cancels out): a few ns where KVM runs the guest natively, about a microsecond
/// where the host emulates every instruction (KVM on PVM, for guests that are not PVM-aware).
/// None when KVM is unusable. For reporting only: it is a timing, and timings here are noisy.
pub fn guest_instruction_ns() -> Option<f64> {
    const NOPS: usize = 256;
    const ROUNDS: u32 = 64;
    let time = |nops: usize| -> Option<f64> {
        // nop × n ; out 0xE0, al ; jmp back to the first nop
        let mut code = vec![0x90; nops];
        code.extend_from_slice(&[0xe6, HYPERCALL_PORT as u8, 0xe9]);
        let back = -(code.len() as i32 + 4);
        code.extend_from_slice(&back.to_le_bytes());
        let mut scratch = scratch_vm(&code)?;
        let mut best = f64::MAX;
        for _ in 0..4 {
            let start = Instant::now();
            for _ in 0..ROUNDS {
                if !matches!(scratch.vcpu.run(), Ok(VcpuExit::IoOut(..))) {
                    return None;
                }
            }
            best = best.min(start.elapsed().as_nanos() as f64 / f64::from(ROUNDS));
        }
        Some(best)
    };
    let (short, long) = (time(0)?, time(NOPS)?);
    Some(((long - short) / NOPS as f64).max(0.0))
}

#[cfg(test)]
mod tests {
    #[test]
    fn probing_never_panics_and_is_stable() {
        let first = super::debug_caps();
        assert_eq!(first, super::debug_caps());
        eprintln!("debug capabilities of this host: {first:?}");
    }

    #[test]
    fn instruction_probe_runs_its_loop() {
        if !crate::kvm_available() {
            eprintln!("SKIPPED instruction_probe_runs_its_loop: /dev/kvm is missing");
            return;
        }
        // Some(_) means both loops ran to their `out` exits 256 times (a wrong jump offset
        // would crash the scratch guest instead).
        let ns = super::guest_instruction_ns().expect("the probe loops exit at their out");
        eprintln!(
            "guest instruction: {ns:.1} ns on {:?}",
            super::kvm_backend()
        );
    }
}
