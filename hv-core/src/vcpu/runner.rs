//! The vCPU thread: its run loop as an explicit state machine ([`RunState`] plus a park decided
//! by [`park_reason`], turned into one [`Step`] by [`next_step`]), parks, halts and
//! device-request waits (entering the guest is in `guest.rs`). It knows its partition only as a
//! [`VcpuHost`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use kvm_ioctls::{SyncReg, VcpuFd};

use super::{
    CURRENT, DebugControl, DebugReport, SyncedRegisters, VcpuHost, VcpuShared, VcpuThreadState,
};
use crate::kvm_ext;
use crate::poll::PollWindow;
use crate::trace::TraceKind;

/// What the guest of a vCPU that is not parked is doing, as the run loop keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RunState {
    /// It runs: the loop enters the guest.
    Runnable,
    /// It executed `hlt` (or `HV_IDLE`): the loop waits for an interrupt.
    Halted,
    /// It waits in `HV_DM_REPLY_WAIT` for a device request, to be written to this guest buffer.
    AwaitingRequest(u64),
}

/// The run loop's next step, decided from the host's and the vCPU's state (see [`next_step`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The system shuts down: the thread ends.
    End,
    /// Park in this state until released.
    Park(VcpuThreadState),
    /// Wait for a device request into this buffer.
    WaitRequest(u64),
    /// Wait for an interrupt.
    WaitInterrupt,
    /// Run the guest until its next exit.
    Enter,
}

/// The run loop's decision: shutdown first, then a park (lifecycle, debugger, schedule), then
/// whatever the guest waits for, else the guest runs.
fn next_step(shutting_down: bool, park: Option<VcpuThreadState>, run: RunState) -> Step {
    if shutting_down {
        return Step::End;
    }
    if let Some(state) = park {
        return Step::Park(state);
    }
    match run {
        RunState::Runnable => Step::Enter,
        RunState::Halted => Step::WaitInterrupt,
        RunState::AwaitingRequest(buf) => Step::WaitRequest(buf),
    }
}

/// Where a vCPU must park now, if anywhere: its partition's lifecycle (paused, crashed, exited)
/// before a debugger's stop, before the schedule window.
fn park_reason(host: &dyn VcpuHost, vcpu: &VcpuShared) -> Option<VcpuThreadState> {
    if let Some(state) = host.lifecycle_park() {
        return Some(state);
    }
    if vcpu.stop_requested() {
        return Some(VcpuThreadState::DebugStopped);
    }
    if !host.in_window() {
        return Some(VcpuThreadState::OutOfWindow);
    }
    None
}

/// The vCPU thread's own state: the KVM fd and what only this thread touches. It knows its
/// partition only as a [`VcpuHost`].
pub struct VcpuRunner {
    pub(super) fd: VcpuFd,
    pub(super) shared: Arc<VcpuShared>,
    pub(super) host: Arc<dyn VcpuHost>,
    pub(super) run: RunState,
    /// Which registers KVM hands back in `kvm_run` (general-purpose ones always when it can;
    /// system registers while the vCPU is being debugged).
    pub(super) synced: SyncedRegisters,
    /// System registers are synced now (while debug controls are active: a debug stop then
    /// carries the paging state; no cost on other exits).
    pub(super) synced_sregs: bool,
    pub(super) debug: DebugControl,
    /// How long a halt spins before it sleeps.
    pub(super) halt_poll: PollWindow,
    /// The vector last injected with `KVM_INTERRUPT`, until it is known that the guest took it:
    /// until then KVM may still hold it (an entry cancelled by a kick, or a guest that could not
    /// take it yet and halted first).
    pub(super) unconfirmed_injection: Option<u8>,
    /// A single step executed `hlt` and KVM reported the step, not the halt: its emulator still
    /// holds the halt request and turns the next suitable exit into a stale `KVM_EXIT_HLT` (one
    /// instruction later, wherever that is — possibly inside an interrupt handler with IF=0).
    pub(super) stale_halt_exit: bool,
    /// While an exit is handled (no waits in between): its time, which stamps every record of
    /// that exit, so an exit costs one clock read however many records it writes.
    pub(super) exit_stamp: Option<u64>,
    /// A debug stop for the debugger, sent once this vCPU has parked (see [`DebugReport`]).
    pub(super) debug_report: Option<DebugReport>,
}

impl VcpuRunner {
    /// Prepares the runner; `synced`: what KVM_CAP_SYNC_REGS offers.
    pub fn new(
        mut fd: VcpuFd,
        shared: Arc<VcpuShared>,
        host: Arc<dyn VcpuHost>,
        synced: SyncedRegisters,
    ) -> VcpuRunner {
        if synced.regs {
            fd.set_sync_valid_reg(SyncReg::Register);
        }
        VcpuRunner {
            fd,
            shared,
            host,
            run: RunState::Runnable,
            synced,
            synced_sregs: false,
            debug: DebugControl::default(),
            halt_poll: PollWindow::default(),
            unconfirmed_injection: None,
            stale_halt_exit: false,
            exit_stamp: None,
            debug_report: None,
        }
    }

    /// Records an event: stamped with the time of the exit being handled (one clock read per
    /// exit for all its records), or with the time now outside exit handling.
    #[inline]
    pub(super) fn trace(&self, kind: TraceKind, a: u64, b: u64) {
        if self.shared.trace.wants(kind) {
            let timestamp = match self.exit_stamp {
                Some(t) => t,
                None => self.host.now_ns(),
            };
            self.trace_at(timestamp, kind, a, b);
        }
    }

    /// Records with a timestamp the caller already read (saves a clock read on the exit path).
    #[inline]
    pub(super) fn trace_at(&self, timestamp: u64, kind: TraceKind, a: u64, b: u64) {
        self.shared.trace_at(timestamp, kind, a, b);
    }

    /// The thread body: runs until the system shuts down.
    pub fn run(mut self) {
        CURRENT.with(|c| *c.borrow_mut() = Some(self.shared.clone()));
        let run_addr = self.fd.get_kvm_run() as *mut kvm_bindings::kvm_run as usize;
        *self.shared.runner.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((kvm_ext::current_thread(), run_addr));
        self.shared.set_state(VcpuThreadState::Running);
        loop {
            self.serve_jobs();
            let step = next_step(self.host.is_shutting_down(), self.park_reason(), self.run);
            if !matches!(step, Step::End | Step::Enter) {
                // The guest will not run for a while: an interrupt KVM still holds would wait
                // with it, in service for us and never delivered.
                self.reclaim_held_interrupt();
            }
            // Back to the top after every wait: a kicker that saw this vCPU halted only woke it
            // (see `kick`), so a request it made must be seen before the guest runs.
            if !matches!(step, Step::Park(_)) {
                // Released before it parked (or shutting down): the debugger still hears of it.
                self.send_debug_report();
            }
            match step {
                Step::End => break,
                Step::Park(state) => self.park(state),
                Step::WaitRequest(buf) => {
                    self.run = RunState::Runnable;
                    self.wait_for_request(buf);
                }
                Step::WaitInterrupt => self.wait_for_interrupt(),
                Step::Enter => self.enter_guest(),
            }
        }
        *self.shared.runner.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.shared.set_state(VcpuThreadState::Gone);
        self.host.vcpu_parked();
    }

    fn serve_jobs(&mut self) {
        while let Ok(job) = self.shared.jobs_rx.try_recv() {
            job(self);
        }
    }

    fn send_debug_report(&mut self) {
        if let Some(report) = self.debug_report.take() {
            report();
        }
    }

    fn park_reason(&self) -> Option<VcpuThreadState> {
        park_reason(&*self.host, &self.shared)
    }

    fn park(&mut self, state: VcpuThreadState) {
        match state {
            VcpuThreadState::OutOfWindow => self.trace(TraceKind::ScheduleOut, 0, 0),
            VcpuThreadState::DebugStopped => self.trace(TraceKind::DebugStop, 0, 0),
            _ => {}
        }
        self.trace(TraceKind::StateChange, state as u64, 0);
        self.shared.set_state(state);
        self.host.vcpu_parked();
        self.send_debug_report();
        // Jobs (a debugger's register and debug-register requests) are served here, parked: the
        // vCPU does not leave and re-enter its parked state for each.
        let shared = self.shared.clone();
        loop {
            {
                let mut guard = shared.wake.lock().unwrap_or_else(|p| p.into_inner());
                while !shared.has_jobs()
                    && !self.host.is_shutting_down()
                    && self.park_reason() == Some(state)
                {
                    guard = shared
                        .wake_cond
                        .wait(guard)
                        .unwrap_or_else(|p| p.into_inner());
                }
            }
            if self.host.is_shutting_down() || self.park_reason() != Some(state) {
                break;
            }
            self.serve_jobs();
        }
        if self.park_reason() != Some(state) {
            *self
                .shared
                .stopped_registers
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = None;
            match state {
                VcpuThreadState::OutOfWindow => self.trace(TraceKind::ScheduleIn, 0, 0),
                VcpuThreadState::DebugStopped => self.trace(TraceKind::DebugResume, 0, 0),
                _ => {}
            }
            let next = if self.run == RunState::Halted {
                VcpuThreadState::Halted
            } else {
                VcpuThreadState::Running
            };
            self.trace(TraceKind::StateChange, next as u64, 0);
            self.shared.set_state(next);
            self.host.vcpu_parked();
        }
    }

    /// Waits while halted until an interrupt is due (the vCPU is then running again) or something
    /// else needs the loop's attention.
    ///
    /// Spins first for the adaptive halt-poll window (see [`crate::poll`]): every reason to wake
    /// comes with a kick, so a change of the kick count ends the spin.
    fn wait_for_interrupt(&mut self) {
        self.shared.set_state(VcpuThreadState::Halted);
        let shared = self.shared.clone();
        let halted_at = Instant::now();
        let kicks = shared.kicks.load(Ordering::SeqCst);
        if !self.wake_reason() {
            self.halt_poll
                .spin_until(|| shared.kicks.load(Ordering::SeqCst) != kicks);
        }
        let mut guard = shared.wake.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if shared.irq().deliverable().is_some() {
                self.run = RunState::Runnable;
                self.shared.set_state(VcpuThreadState::Running);
                drop(guard);
                self.trace(TraceKind::Wake, 0, 0);
                break;
            }
            if self.work_reason() {
                break;
            }
            guard = shared
                .wake_cond
                .wait(guard)
                .unwrap_or_else(|p| p.into_inner());
        }
        self.halt_poll.record(halted_at.elapsed());
    }

    /// Ends an `HV_DM_REPLY_WAIT`: waits (halted, spinning first like a halt) until a request
    /// for one of this partition's devices is queued, then writes it to `buf` and returns 1 to
    /// the guest; returns 0 instead when an interrupt is due or the loop has other work first
    /// (the guest calls again).
    fn wait_for_request(&mut self, buf: u64) {
        let shared = self.shared.clone();
        let started = Instant::now();
        let kicks = shared.kicks.load(Ordering::SeqCst);
        // Before the first look at the queues: a client that queues after it sees the flag.
        shared.awaiting_request.store(true, Ordering::SeqCst);
        // With interrupts off in the guest, a pending interrupt is no reason to return.
        let takes_interrupts = self.fd.get_kvm_run().if_flag != 0;
        let done_waiting = |runner: &Self| {
            if takes_interrupts {
                runner.wake_reason()
            } else {
                runner.work_reason()
            }
        };
        let mut result = self.host.take_device_request(&self.shared, buf);
        if result == 0 && !done_waiting(self) {
            self.shared.set_state(VcpuThreadState::Halted);
            self.trace(TraceKind::Halt, 0, 0);
            self.halt_poll
                .spin_until(|| shared.kicks.load(Ordering::SeqCst) != kicks);
            let mut guard = shared.wake.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                result = self.host.take_device_request(&self.shared, buf);
                if result != 0 || done_waiting(self) {
                    break;
                }
                guard = shared
                    .wake_cond
                    .wait(guard)
                    .unwrap_or_else(|p| p.into_inner());
            }
            drop(guard);
            self.halt_poll.record(started.elapsed());
            self.shared.set_state(VcpuThreadState::Running);
            self.trace(TraceKind::Wake, 0, 0);
        }
        shared.awaiting_request.store(false, Ordering::SeqCst);
        self.trace(
            TraceKind::Hypercall,
            crate::hypercall::Hypercall::DmReplyWait as u64,
            result as u64,
        );
        if let Err(e) = self.write_rax(result as u64) {
            self.crash(format!("cannot write a hypercall result: {e}"));
        }
    }

    /// Whether a halted vCPU must leave its wait: an interrupt to take or other work.
    fn wake_reason(&self) -> bool {
        self.shared.irq().deliverable().is_some() || self.work_reason()
    }

    /// Whether the run loop has work before the guest runs on: jobs, shutdown, a park.
    fn work_reason(&self) -> bool {
        self.shared.has_jobs() || self.host.is_shutting_down() || self.park_reason().is_some()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::vcpu::{DebugExit, DeviceAccess, HypercallOutcome, StopRegisters, VcpuRegisters};

    /// A stand-in partition: the lifecycle park and the schedule window are set by the test.
    #[derive(Default)]
    struct StandIn {
        lifecycle: Mutex<Option<VcpuThreadState>>,
        out_of_window: AtomicBool,
    }

    impl DeviceAccess for StandIn {
        fn pio_read(&self, _: u16, _: &mut [u8]) {}
        fn pio_write(&self, _: u16, _: &[u8]) {}
        fn mmio_read(&self, _: u64, _: &mut [u8]) {}
        fn mmio_write(&self, _: u64, _: &[u8]) {}
    }

    impl VcpuHost for StandIn {
        fn lifecycle_park(&self) -> Option<VcpuThreadState> {
            *self.lifecycle.lock().unwrap()
        }
        fn in_window(&self) -> bool {
            !self.out_of_window.load(Ordering::SeqCst)
        }
        fn is_shutting_down(&self) -> bool {
            false
        }
        fn vcpu_parked(&self) {}
        fn crashed(&self, _: u32, _: String, _: Option<VcpuRegisters>) {}
        fn exited(&self, _: i64) {}
        fn debug_exit(
            &self,
            _: &VcpuShared,
            _: DebugExit,
            _: StopRegisters,
        ) -> Option<DebugReport> {
            None
        }
        fn warn(&self, _: String) {}
        fn now_ns(&self) -> u64 {
            0
        }
        fn interrupt_injected(&self) {}
        fn read_guest(&self, _: u64, _: &mut [u8]) -> bool {
            false
        }
        fn memory_size(&self) -> u64 {
            0
        }
        fn hypercall(&self, _: &Arc<VcpuShared>, _: u64, _: [u64; 4], _: u64) -> HypercallOutcome {
            HypercallOutcome::Return(0)
        }
        fn take_device_request(&self, _: &VcpuShared, _: u64) -> i64 {
            0
        }
    }

    #[test]
    fn a_park_comes_before_any_wait_and_shutdown_before_all() {
        use RunState::*;
        use VcpuThreadState::{OutOfWindow, Paused};
        assert_eq!(next_step(false, None, Runnable), Step::Enter);
        assert_eq!(next_step(false, None, Halted), Step::WaitInterrupt);
        assert_eq!(
            next_step(false, None, AwaitingRequest(0x2000)),
            Step::WaitRequest(0x2000)
        );
        for run in [Runnable, Halted, AwaitingRequest(1)] {
            assert_eq!(next_step(false, Some(Paused), run), Step::Park(Paused));
            assert_eq!(
                next_step(false, Some(OutOfWindow), run),
                Step::Park(OutOfWindow)
            );
            assert_eq!(next_step(true, Some(Paused), run), Step::End);
            assert_eq!(next_step(true, None, run), Step::End);
        }
    }

    #[test]
    fn the_lifecycle_parks_before_the_debugger_and_the_debugger_before_the_schedule() {
        let host = StandIn::default();
        let vcpu = VcpuShared::new(0, 0, 16);
        assert_eq!(park_reason(&host, &vcpu), None);
        host.out_of_window.store(true, Ordering::SeqCst);
        assert_eq!(
            park_reason(&host, &vcpu),
            Some(VcpuThreadState::OutOfWindow)
        );
        vcpu.request_stop();
        assert_eq!(
            park_reason(&host, &vcpu),
            Some(VcpuThreadState::DebugStopped)
        );
        for state in [
            VcpuThreadState::Paused,
            VcpuThreadState::Crashed,
            VcpuThreadState::Exited,
        ] {
            *host.lifecycle.lock().unwrap() = Some(state);
            assert_eq!(park_reason(&host, &vcpu), Some(state));
        }
        *host.lifecycle.lock().unwrap() = None;
        vcpu.release_stop();
        host.out_of_window.store(false, Ordering::SeqCst);
        assert_eq!(park_reason(&host, &vcpu), None);
    }

    #[test]
    fn records_carry_the_callers_stamp_and_a_raise_is_left_pending_for_the_loop() {
        let vcpu = VcpuShared::new(3, 1, 16);
        vcpu.trace.set_classes(crate::trace::class::ALL);
        vcpu.trace_at(42, TraceKind::Marker, 1, 2);
        let mut records = Vec::new();
        vcpu.trace.drain(&mut records);
        assert_eq!(records.len(), 1);
        let r = records[0];
        assert_eq!(
            (r.timestamp, r.partition, r.vcpu, r.a, r.b),
            (42, 3, 1, 1, 2)
        );
        // Created (parked): a raise only wakes, and the vector is pending for the loop.
        vcpu.raise(40);
        assert!(vcpu.irq().is_pending(40));
        assert!(vcpu.kicks.load(Ordering::SeqCst) >= 1);
    }
}
