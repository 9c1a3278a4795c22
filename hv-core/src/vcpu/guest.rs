//! Entering and leaving the guest: interrupt injection (and taking back an injection KVM still
//! holds), one `KVM_RUN` and the accounting and tracing of its exit, hypercalls (registers in,
//! the partition's answer out), MMIO completion, debug exits, and register access.

use std::sync::atomic::Ordering;

use kvm_bindings::kvm_regs;
use kvm_ioctls::SyncReg;

use super::runner::{RunState, VcpuRunner};
use super::state::bump;
use super::{
    DebugControl, DebugExit, EXIT_REASONS, ExitAction, HypercallOutcome, MmioAccess, StopRegisters,
    VcpuError, VcpuRegisters, handle_exit, reset_vcpu,
};
use crate::kvm_ext;
use crate::trace::TraceKind;

/// The port or MMIO access (address, size in bytes, is-write) that caused the last exit, if it
/// was one; hypercalls are not device accesses.
fn device_access(run: &kvm_bindings::kvm_run) -> Option<(u64, u32, bool)> {
    match run.exit_reason {
        kvm_bindings::KVM_EXIT_IO => {
            // SAFETY: KVM fills the `io` member of the union for KVM_EXIT_IO.
            let io = unsafe { run.__bindgen_anon_1.io };
            (io.port != crate::layout::HYPERCALL_PORT).then_some((
                u64::from(io.port),
                u32::from(io.size) * io.count,
                io.direction == kvm_bindings::KVM_EXIT_IO_OUT as u8,
            ))
        }
        kvm_bindings::KVM_EXIT_MMIO => {
            // SAFETY: KVM fills the `mmio` member of the union for KVM_EXIT_MMIO.
            let mmio = unsafe { run.__bindgen_anon_1.mmio };
            Some((mmio.phys_addr, mmio.len, mmio.is_write != 0))
        }
        _ => None,
    }
}

impl VcpuRunner {
    /// Injects the next deliverable interrupt if the guest can take it, or asks KVM to exit as
    /// soon as it can.
    pub(super) fn prepare_interrupts(&mut self) {
        if self.debug.single_step {
            // A step executes the next instruction, not an interrupt handler (as in QEMU);
            // pending interrupts wait for the debugger to continue.
            self.fd.get_kvm_run().request_interrupt_window = 0;
            return;
        }
        let (ready, if_flag) = {
            let run = self.fd.get_kvm_run();
            (run.ready_for_interrupt_injection != 0, run.if_flag != 0)
        };
        let mut irq = self.shared.irq();
        let mut want_window = false;
        if let Some(vector) = irq.deliverable() {
            if ready && if_flag {
                match kvm_ext::inject_interrupt(&self.fd, vector) {
                    Ok(()) => {
                        let raised = irq.raised_at(vector);
                        irq.injected(vector);
                        drop(irq);
                        self.unconfirmed_injection = Some(vector);
                        let stats = &self.shared.stats;
                        bump(&stats.irqs_injected);
                        bump(&stats.irqs_by_vector[usize::from(vector)]);
                        self.host.interrupt_injected();
                        // Stamped now (rings stay in time order), both with one clock read;
                        // b carries the raise time.
                        let ring = &self.shared.trace;
                        if ring.wants(TraceKind::IrqRaise) || ring.wants(TraceKind::IrqInject) {
                            let now = self.host.now_ns();
                            self.trace_at(now, TraceKind::IrqRaise, u64::from(vector), raised);
                            self.trace_at(now, TraceKind::IrqInject, u64::from(vector), 0);
                        }
                    }
                    Err(_) => want_window = true,
                }
            } else {
                want_window = true;
            }
        }
        self.fd.get_kvm_run().request_interrupt_window = u8::from(want_window);
    }

    /// Takes back an injected interrupt that KVM still holds undelivered, so that it is pending
    /// again in our controller (and injected at the next entry that can take it) instead of
    /// staying in service forever: a halted vCPU would otherwise wait for it without end, and a
    /// single step would deliver it with the trap flag set.
    ///
    /// Costs one `KVM_GET_VCPU_EVENTS`, and only while the guest has not yet ended the last
    /// injected vector with an EOI.
    pub(super) fn reclaim_held_interrupt(&mut self) {
        let Some(vector) = self.unconfirmed_injection.take() else {
            return;
        };
        if !self.shared.irq().is_in_service(vector) {
            return;
        }
        let Ok(mut events) = self.fd.get_vcpu_events() else {
            return;
        };
        if events.interrupt.injected == 0 || events.interrupt.soft != 0 {
            return;
        }
        let held = events.interrupt.nr;
        events.interrupt.injected = 0;
        match self.fd.set_vcpu_events(&events) {
            Ok(()) => {
                self.shared.irq().withdraw(held);
                self.trace(TraceKind::IrqWithdraw, u64::from(held), 0);
            }
            Err(e) => self.host.warn(format!(
                "vCPU {}: cannot take back undelivered interrupt {held}: {e}",
                self.shared.index
            )),
        }
    }

    pub(super) fn enter_guest(&mut self) {
        self.apply_pending_debug();
        self.prepare_interrupts();
        let step_from = if self.debug.single_step {
            self.read_gprs().ok().map(|r| r.rip)
        } else {
            None
        };
        let start = self.host.now_ns();
        self.trace_at(start, TraceKind::VmEntry, 0, 0);
        let exit = self.fd.run();
        // Guest time ends when KVM_RUN returns, before any device work (which may block).
        let end = self.host.now_ns();
        self.exit_stamp = Some(end);
        let action = handle_exit(exit, &*self.host);
        self.fd.set_kvm_immediate_exit(0);
        let reason = self.fd.get_kvm_run().exit_reason;
        let stats = &self.shared.stats;
        bump(&stats.exits);
        bump(&stats.exits_by_reason[(reason as usize).min(EXIT_REASONS - 1)]);
        stats.guest_ns.store(
            stats.guest_ns.load(Ordering::Relaxed) + end.saturating_sub(start),
            Ordering::Relaxed,
        );
        if self.shared.trace.wants(TraceKind::VmExit) {
            let reason = u64::from(reason);
            let rip = if self.synced.regs {
                self.fd.sync_regs().regs.rip
            } else {
                0
            };
            self.trace_at(end, TraceKind::VmExit, reason, rip);
        }
        if self.shared.trace.wants(TraceKind::DeviceAccess)
            && let Some((addr, size, write)) = device_access(self.fd.get_kvm_run())
        {
            self.trace_at(
                end,
                TraceKind::DeviceAccess,
                addr,
                (u64::from(size) << 1) | u64::from(write),
            );
        }
        // KVM folds the single-step trap of an instruction that exits to user space (port I/O,
        // the hypercall, hlt) into that exit: no debug exit follows, so the step ends here.
        let step_folded = self.debug.single_step
            && matches!(
                self.fd.get_kvm_run().exit_reason,
                kvm_bindings::KVM_EXIT_IO | kvm_bindings::KVM_EXIT_HLT
            );
        match action {
            ExitAction::Resume | ExitAction::Interrupted => {}
            ExitAction::Mmio(access) => self.mmio(access),
            ExitAction::Hypercall => self.hypercall(),
            ExitAction::Halt if std::mem::take(&mut self.stale_halt_exit) => {
                // The halt of a `hlt` that was stepped (and already waited for, below): the
                // guest is past it, so this exit is not a halt of the guest's.
            }
            ExitAction::Halt => {
                self.run = RunState::Halted;
                self.trace(TraceKind::Halt, 0, 0);
            }
            ExitAction::Debug(event) => {
                if let Some(rip) = step_from
                    && event.exception == 1
                    && self.is_hlt_at(rip)
                {
                    // The step executed `hlt`: the guest waits for an interrupt, as it would
                    // where KVM folds the step into the halt exit.
                    self.run = RunState::Halted;
                    self.stale_halt_exit = true;
                    self.trace(TraceKind::Halt, 0, 0);
                }
                self.report_debug_exit(event);
            }
            ExitAction::Crash(reason) => self.crash(reason),
        }
        if step_folded {
            let pc = self.read_gprs().map(|r| r.rip).unwrap_or(0);
            self.report_debug_exit(DebugExit {
                exception: 1,
                pc,
                dr6: 1 << 14,
                dr7: 0,
            });
        }
        self.exit_stamp = None;
    }

    /// Handles the hypercall the guest just made: its registers in, the partition's answer
    /// (`VcpuHost::hypercall`) out in rax, or a halt, an exit or a request wait.
    pub(super) fn hypercall(&mut self) {
        let regs = match self.read_gprs() {
            Ok(regs) => regs,
            Err(e) => return self.crash(format!("cannot read registers for a hypercall: {e}")),
        };
        let nr = regs.rax & 0xffff_ffff;
        let args = [regs.rdi, regs.rsi, regs.rdx, regs.r10];
        self.shared.stats.hypercalls.fetch_add(1, Ordering::Relaxed);
        let stamp = match self.exit_stamp {
            Some(t) => t,
            None => self.host.now_ns(),
        };
        let rax = match self.host.hypercall(&self.shared, nr, args, stamp) {
            HypercallOutcome::Return(value) => value,
            HypercallOutcome::Idle => {
                self.run = RunState::Halted;
                self.trace(TraceKind::Halt, 0, 0);
                0
            }
            HypercallOutcome::Exit(code) => {
                self.host.exited(code);
                code
            }
            HypercallOutcome::WaitRequest(buf) => {
                // The result is written when the wait ends.
                self.run = RunState::AwaitingRequest(buf);
                return;
            }
        };
        self.trace(TraceKind::Hypercall, nr, rax as u64);
        if let Err(e) = self.write_rax(rax as u64) {
            self.crash(format!("cannot write a hypercall result: {e}"));
        }
    }

    /// Hands a debug exit to the partition's debugger; with none attached (it left while this
    /// vCPU was stepping or at a breakpoint), drops the debug controls so that no step or
    /// breakpoint traps again with nobody to answer it.
    pub(super) fn report_debug_exit(&mut self, exit: DebugExit) {
        // Free with synced registers: the stop reply's rip, rsp and rbp and the paging state for
        // gdb's memory reads come from here.
        let registers = StopRegisters {
            gprs: self.read_gprs().ok(),
            sregs: self.synced_sregs.then(|| self.fd.sync_regs().sregs),
        };
        match self.host.debug_exit(&self.shared, exit, registers) {
            Some(report) => {
                // Sent when this vCPU parks for the stop (an earlier one, if any, first).
                if let Some(earlier) = self.debug_report.replace(report) {
                    earlier();
                }
            }
            None if self.debug.is_active() => {
                if let Err(e) = self.set_debug(DebugControl::default(), false) {
                    self.host.warn(format!("vCPU {}: {e}", self.shared.index));
                }
            }
            None => {}
        }
    }

    /// Whether the instruction at guest-virtual `rip` is `hlt` (translated by KVM with the guest's
    /// own page tables).
    pub(super) fn is_hlt_at(&self, rip: u64) -> bool {
        const HLT: u8 = 0xf4;
        let Ok(translation) = self.fd.translate_gva(rip) else {
            return false;
        };
        let mut byte = [0u8; 1];
        translation.valid != 0
            && self
                .host
                .read_guest(translation.physical_address, &mut byte)
            && byte[0] == HLT
    }

    /// Carries out an MMIO access after the exit was accounted for; read data goes back to KVM,
    /// which completes the guest's instruction on the next entry.
    pub(super) fn mmio(&mut self, access: MmioAccess) {
        if let Some(data) = access.perform(&*self.host) {
            let run = self.fd.get_kvm_run();
            // SAFETY: the last exit was KVM_EXIT_MMIO, whose `mmio` member KVM reads the data
            // of a read from when it re-enters the guest; `len` is at most its 8 bytes.
            unsafe {
                run.__bindgen_anon_1.mmio.data[..access.len].copy_from_slice(&data[..access.len])
            };
        }
    }

    pub(super) fn crash(&mut self, reason: String) {
        let registers = self.read_registers().ok();
        self.host.crashed(self.shared.index, reason, registers);
    }

    pub(super) fn read_gprs(&mut self) -> Result<kvm_regs, VcpuError> {
        if self.synced.regs {
            Ok(self.fd.sync_regs().regs)
        } else {
            self.fd.get_regs().map_err(|source| VcpuError::Kvm {
                what: "KVM_GET_REGS",
                source,
            })
        }
    }

    pub(super) fn write_rax(&mut self, rax: u64) -> Result<(), VcpuError> {
        if self.synced.regs {
            self.fd.sync_regs_mut().regs.rax = rax;
            self.fd.set_sync_dirty_reg(SyncReg::Register);
            Ok(())
        } else {
            let mut regs = self.read_gprs()?;
            regs.rax = rax;
            self.fd.set_regs(&regs).map_err(|source| VcpuError::Kvm {
                what: "KVM_SET_REGS",
                source,
            })
        }
    }

    /// Reads all registers (from the vCPU thread).
    pub fn read_registers(&mut self) -> Result<VcpuRegisters, VcpuError> {
        let kvm_err = |what| move |source| VcpuError::Kvm { what, source };
        Ok(VcpuRegisters {
            regs: self.fd.get_regs().map_err(kvm_err("KVM_GET_REGS"))?,
            sregs: self.fd.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?,
            fpu: self.fd.get_fpu().map_err(kvm_err("KVM_GET_FPU"))?,
        })
    }

    /// Writes all registers (from the vCPU thread).
    pub fn write_registers(&mut self, registers: &VcpuRegisters) -> Result<(), VcpuError> {
        let kvm_err = |what| move |source| VcpuError::Kvm { what, source };
        self.fd
            .set_sregs(&registers.sregs)
            .map_err(kvm_err("KVM_SET_SREGS"))?;
        self.fd
            .set_fpu(&registers.fpu)
            .map_err(kvm_err("KVM_SET_FPU"))?;
        self.fd
            .set_regs(&registers.regs)
            .map_err(kvm_err("KVM_SET_REGS"))?;
        self.registers_set(registers.regs);
        Ok(())
    }

    /// After a KVM_SET_REGS: the synced copy in `kvm_run` shows the new registers, and a pending
    /// dirty copy (say a hypercall's result) must not overwrite them on the next entry.
    pub(super) fn registers_set(&mut self, regs: kvm_regs) {
        if self.synced.regs {
            self.fd.clear_sync_dirty_reg(SyncReg::Register);
            self.fd.sync_regs_mut().regs = regs;
        }
    }

    /// Puts this vCPU back at its entry state (partition reset).
    pub fn reset(&mut self, entry: u64) -> Result<(), VcpuError> {
        // Neither a halt nor a request wait of the old guest carries over to the new one.
        self.run = RunState::Runnable;
        // reset_vcpu clears KVM's event queue, and the controller is reset below.
        self.unconfirmed_injection = None;
        let debug = self.debug;
        if debug.single_step {
            let _ = self.set_debug(
                DebugControl {
                    single_step: false,
                    ..debug
                },
                false,
            );
        }
        self.shared.irq().reset();
        let regs = reset_vcpu(&self.fd, entry, self.host.memory_size(), self.shared.index)?;
        self.registers_set(regs);
        Ok(())
    }
}
