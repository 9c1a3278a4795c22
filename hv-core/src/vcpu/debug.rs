//! Debugger support on the vCPU thread: guest-debug control (software breakpoints, hardware
//! breakpoints and watchpoints in the debug registers, single step) and #BP re-injection.

use std::sync::atomic::Ordering;

use kvm_bindings::{
    KVM_GUESTDBG_BLOCKIRQ, KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_INJECT_BP, KVM_GUESTDBG_SINGLESTEP,
    KVM_GUESTDBG_USE_HW_BP, KVM_GUESTDBG_USE_SW_BP, kvm_guest_debug,
};
use kvm_ioctls::SyncReg;

use super::{VcpuError, VcpuRunner, VcpuShared};

/// What a hardware breakpoint slot watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HwKind {
    /// Instruction fetch (a hardware breakpoint).
    Execute,
    /// Data writes.
    Write,
    /// Data reads or writes (x86 has no read-only watchpoint).
    ReadWrite,
}

/// One debug-register slot (x86 has four: DR0..DR3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HwBreakpoint {
    /// Linear address.
    pub addr: u64,
    /// What triggers it.
    pub kind: HwKind,
    /// 1, 2, 4 or 8 bytes (must be 1 for `Execute`; the address must be aligned to the length).
    pub len: u8,
}

/// The debugger's view of one vCPU's debug controls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DebugControl {
    /// Trap after the next instruction.
    pub single_step: bool,
    /// Exit on `int3` (the debugger has patched breakpoints into guest memory).
    pub sw_breakpoints: bool,
    /// DR0..DR3.
    pub hw: [Option<HwBreakpoint>; 4],
}

impl DebugControl {
    /// Whether any debugging is on.
    pub fn is_active(&self) -> bool {
        self.single_step || self.sw_breakpoints || self.hw.iter().any(Option::is_some)
    }

    /// The `KVM_SET_GUEST_DEBUG` argument for this control.
    pub fn to_kvm(&self) -> kvm_guest_debug {
        let mut dbg = kvm_guest_debug::default();
        if !self.is_active() {
            return dbg;
        }
        dbg.control = KVM_GUESTDBG_ENABLE;
        if self.single_step {
            dbg.control |= KVM_GUESTDBG_SINGLESTEP;
        }
        if self.sw_breakpoints {
            dbg.control |= KVM_GUESTDBG_USE_SW_BP;
        }
        let mut dr7: u64 = 0;
        for (slot, bp) in self.hw.iter().enumerate() {
            let Some(bp) = bp else { continue };
            dbg.arch.debugreg[slot] = bp.addr;
            let rw = match bp.kind {
                HwKind::Execute => 0b00,
                HwKind::Write => 0b01,
                HwKind::ReadWrite => 0b11,
            };
            let len = match (bp.kind, bp.len) {
                (HwKind::Execute, _) | (_, 1) => 0b00,
                (_, 2) => 0b01,
                (_, 8) => 0b10,
                _ => 0b11,
            };
            dr7 |= 1 << (slot * 2); // local enable
            dr7 |= (rw | (len << 2)) << (16 + slot * 4);
        }
        if dr7 != 0 {
            dbg.control |= KVM_GUESTDBG_USE_HW_BP;
            dr7 |= 1 << 9; // GE: exact data breakpoints
        }
        dbg.arch.debugreg[7] = dr7;
        dbg
    }
}

impl VcpuShared {
    /// Sets this vCPU's debug controls; the vCPU thread applies them before it next enters the
    /// guest (no round trip: stepping is latency-bound).
    pub fn set_debug(&self, control: DebugControl) {
        *self.pending_debug.lock().unwrap_or_else(|p| p.into_inner()) = Some(control);
        self.kick();
    }

    /// Queues a #BP for the guest (an `int3` that was the guest's own, not the debugger's).
    pub fn reinject_breakpoint(&self) -> Result<(), VcpuError> {
        self.run_job(|runner| {
            let control = runner.debug;
            runner.set_debug(control, true)
        })?
    }
}

impl VcpuRunner {
    /// Applies debug controls set from another thread since the last entry, and notes the
    /// resume this entry runs under: every resume counted so far. Read under the lock a resume
    /// counts itself under, so that a step's stop carries the number of the resume whose
    /// controls it ran with, whether or not the vCPU parked in between (a release can come
    /// while the vCPU is still on its way to the park, or parked for another reason, a reset).
    pub(super) fn apply_pending_debug(&mut self) {
        let pending = {
            let mut pending = self
                .shared
                .pending_debug
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let resume = self.shared.resumes.load(Ordering::SeqCst);
            self.shared.resumed_as.store(resume, Ordering::SeqCst);
            pending.take()
        };
        // Unchanged controls (a run of steps) cost no KVM_SET_GUEST_DEBUG.
        if let Some(control) = pending
            && control != self.debug
            && let Err(e) = self.set_debug(control, false)
        {
            self.host.warn(format!("vCPU {}: {e}", self.shared.index));
        }
    }

    pub(super) fn set_debug(
        &mut self,
        control: DebugControl,
        inject_bp: bool,
    ) -> Result<(), VcpuError> {
        let mut dbg = control.to_kvm();
        // A step executes the next instruction, not an interrupt handler: KVM must not deliver
        // an event it holds during the step either (it would push rflags with the trap flag
        // set, and the guest's `iret` would later raise a #DB the guest never asked for).
        if control.single_step && crate::probe::guest_debug_flags() & KVM_GUESTDBG_BLOCKIRQ != 0 {
            dbg.control |= KVM_GUESTDBG_BLOCKIRQ;
        }
        if inject_bp {
            dbg.control |= KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_INJECT_BP;
        }
        self.fd
            .set_guest_debug(&dbg)
            .map_err(|source| VcpuError::Kvm {
                what: "KVM_SET_GUEST_DEBUG",
                source,
            })?;
        self.debug = control;
        let sync_sregs = self.synced.sregs && control.is_active();
        if sync_sregs != self.synced_sregs {
            if sync_sregs {
                self.fd.set_sync_valid_reg(SyncReg::SystemRegister);
            } else {
                self.fd.clear_sync_valid_reg(SyncReg::SystemRegister);
            }
            self.synced_sregs = sync_sregs;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inactive_control_disables_guest_debug() {
        assert_eq!(DebugControl::default().to_kvm().control, 0);
    }

    #[test]
    fn dr7_encodes_each_slot() {
        let mut control = DebugControl {
            sw_breakpoints: true,
            ..Default::default()
        };
        control.hw[0] = Some(HwBreakpoint {
            addr: 0x10_1000,
            kind: HwKind::Execute,
            len: 1,
        });
        control.hw[2] = Some(HwBreakpoint {
            addr: 0x10_2008,
            kind: HwKind::Write,
            len: 8,
        });
        let dbg = control.to_kvm();
        assert_eq!(
            dbg.control,
            KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_SW_BP | KVM_GUESTDBG_USE_HW_BP
        );
        assert_eq!(dbg.arch.debugreg[0], 0x10_1000);
        assert_eq!(dbg.arch.debugreg[2], 0x10_2008);
        let dr7 = dbg.arch.debugreg[7];
        assert_eq!(dr7 & 0b11_0011, 0b01_0001, "L0 and L2 enabled");
        assert_eq!((dr7 >> 16) & 0xf, 0, "slot 0: execute, length 1");
        assert_eq!((dr7 >> 24) & 0xf, 0b1001, "slot 2: write, length 8");
        assert_ne!(dr7 & (1 << 9), 0);
    }

    #[test]
    fn single_step_sets_its_flag() {
        let control = DebugControl {
            single_step: true,
            ..Default::default()
        };
        assert_eq!(
            control.to_kvm().control,
            KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP
        );
    }
}
