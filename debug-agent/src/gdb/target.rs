//! The gdbstub target: one partition seen as a multi-thread target (threads are its vCPUs), or
//! one vCPU of it as a single-thread target that stops only that vCPU.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use gdbstub::common::{Signal, Tid};
use gdbstub::stub::{BaseStopReason, MultiThreadStopReason};
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::base::multithread::{
    MultiThreadBase, MultiThreadResume, MultiThreadResumeOps, MultiThreadSchedulerLocking,
    MultiThreadSchedulerLockingOps, MultiThreadSingleStep, MultiThreadSingleStepOps,
};
use gdbstub::target::ext::base::singlethread::{
    SingleThreadBase, SingleThreadResume, SingleThreadResumeOps, SingleThreadSingleStep,
    SingleThreadSingleStepOps,
};
use gdbstub::target::ext::breakpoints::{
    Breakpoints, BreakpointsOps, HwBreakpoint as GdbHwBreakpoint, HwBreakpointOps, HwWatchpoint,
    HwWatchpointOps, SwBreakpoint, SwBreakpointOps, WatchKind,
};
use gdbstub::target::{Target, TargetError, TargetResult};
use hv_core::partition::DebugStopEvent;
use hv_core::vcpu::{DebugControl, HwBreakpoint, HwKind, StopRegisters};
use hv_core::{PartitionLifecycle, VcpuRegisters, VcpuThreadState};

use super::arch::{HvRegisters, HvX86_64};
use super::filter::DeclaredWrite;
use super::handle::{GuestHandle, LivePartition};
use crate::pagewalk::{PagingState, translate};

/// How long a stop request waits for vCPUs to park.
pub(super) const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors that end a gdb session.
#[derive(Debug, thiserror::Error)]
pub enum TargetFault {
    /// A vCPU stopped answering.
    #[error(transparent)]
    Vcpu(#[from] hv_core::VcpuError),
}

/// A resume action gdb asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Continue,
    Step,
}

/// A stop to report, in target-neutral form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Single step done.
    Step(u32),
    /// Software breakpoint.
    SwBreak(u32),
    /// Hardware breakpoint.
    HwBreak(u32),
    /// Watchpoint.
    Watch(u32, WatchKind, u64),
    /// Stopped by a signal (Ctrl-C: SIGINT; crash: SIGSEGV).
    Signal(u32, Signal),
    /// The partition exited.
    Exited(u8),
}

impl Stop {
    /// Converts a stop to gdbstub's multi-thread form.
    pub fn multi_reason(self) -> MultiThreadStopReason<u64> {
        match self {
            Stop::Step(v) => BaseStopReason::SignalWithThread {
                tid: tid(v),
                signal: Signal::SIGTRAP,
            },
            Stop::SwBreak(v) => BaseStopReason::SwBreak(tid(v)),
            Stop::HwBreak(v) => BaseStopReason::HwBreak(tid(v)),
            Stop::Watch(v, kind, addr) => BaseStopReason::Watch {
                tid: tid(v),
                kind,
                addr,
            },
            Stop::Signal(v, signal) => BaseStopReason::SignalWithThread {
                tid: tid(v),
                signal,
            },
            Stop::Exited(code) => BaseStopReason::Exited(code),
        }
    }

    /// Converts a stop to gdbstub's single-thread form.
    pub fn single_reason(self) -> BaseStopReason<(), u64> {
        match self {
            Stop::Step(_) => BaseStopReason::DoneStep,
            Stop::SwBreak(_) => BaseStopReason::SwBreak(()),
            Stop::HwBreak(_) => BaseStopReason::HwBreak(()),
            Stop::Watch(_, kind, addr) => BaseStopReason::Watch {
                tid: (),
                kind,
                addr,
            },
            Stop::Signal(_, signal) => BaseStopReason::Signal(signal),
            Stop::Exited(code) => BaseStopReason::Exited(code),
        }
    }

    /// The vCPU a stop belongs to.
    pub fn vcpu(self) -> Option<u32> {
        match self {
            Stop::Step(v) | Stop::SwBreak(v) | Stop::HwBreak(v) | Stop::Signal(v, _) => Some(v),
            Stop::Watch(v, _, _) => Some(v),
            Stop::Exited(_) => None,
        }
    }
}

/// One partition (or one vCPU of it) as a gdb target, over a [`GuestHandle`] (by default the
/// real partition).
pub struct PartitionTarget<H: GuestHandle = LivePartition> {
    pub(super) partition: H,
    /// Some(i): a single-thread target for vCPU i only.
    pub(super) scope: Option<u32>,
    /// Patched int3 addresses and the bytes they replaced.
    sw_breakpoints: BTreeMap<u64, u8>,
    /// Software breakpoints kept in debug registers instead: on hosts whose KVM cannot trap
    /// `int3` (see `hv_core::probe`), and always for a per-vCPU target (see
    /// [`sw_in_debug_registers`]).
    emulated_sw: std::collections::BTreeSet<u64>,
    caps: hv_core::probe::DebugCaps,
    hw: [Option<HwBreakpoint>; 4],
    actions: HashMap<u32, Action>,
    /// gdb asked that threads without an action stay stopped (`set scheduler-locking on`).
    scheduler_lock: bool,
    cache: HashMap<u32, VcpuRegisters>,
    /// Registers that came with each stopped vCPU's debug stop (the stop reply's expedited
    /// registers, the paging state of memory reads: no round trip to the vCPU thread); until
    /// the next resume.
    stop_registers: HashMap<u32, StopRegisters>,
    /// The number of each vCPU's latest resume ([`GuestHandle::resume`]).
    resumed: HashMap<u32, u64>,
    reported_crash: bool,
    /// What the `M`/`X` packet being handled declares it writes (set by the session).
    pub(super) declared_write: DeclaredWrite,
}

/// Whether a debug stop is the completion of a single step (a #DB with no debug register hit):
/// see [`PartitionTarget::on_debug_event`].
pub(crate) fn is_step(event: &DebugStopEvent) -> bool {
    event.exit.exception == 1 && event.exit.dr6 & 0xf == 0
}

fn tid(vcpu: u32) -> Tid {
    NonZeroUsize::new(vcpu as usize + 1).unwrap_or(NonZeroUsize::MIN)
}

fn vcpu_of(tid: Tid) -> u32 {
    (tid.get() - 1) as u32
}

impl PartitionTarget<LivePartition> {
    /// A target for `partition` (all its vCPUs, or only `scope`); `all` is every partition of
    /// the system (for `monitor partitions`).
    pub fn new(
        partition: hv_core::PartitionHandle,
        all: Arc<[hv_core::PartitionHandle]>,
        scope: Option<u32>,
    ) -> Self {
        Self::with_handle(LivePartition { partition, all }, scope)
    }
}

impl<H: GuestHandle> PartitionTarget<H> {
    /// A target over any [`GuestHandle`] (all its vCPUs, or only `scope`, which must be one of
    /// them).
    pub fn with_handle(partition: H, scope: Option<u32>) -> Self {
        PartitionTarget {
            caps: partition.debug_caps(),
            partition,
            scope,
            sw_breakpoints: BTreeMap::new(),
            emulated_sw: Default::default(),
            hw: [None; 4],
            actions: HashMap::new(),
            scheduler_lock: false,
            cache: HashMap::new(),
            stop_registers: HashMap::new(),
            resumed: HashMap::new(),
            reported_crash: false,
            declared_write: DeclaredWrite::None,
        }
    }

    /// The vCPUs this target controls.
    pub fn vcpus(&self) -> Vec<u32> {
        match self.scope {
            Some(v) => vec![v],
            None => (0..self.partition.vcpu_count()).collect(),
        }
    }

    /// Stops every vCPU of this target and waits until they are parked.
    pub fn stop_all(&mut self) {
        for v in self.vcpus() {
            self.partition.request_stop(v);
        }
        self.partition.wait_parked(&self.vcpus(), STOP_TIMEOUT);
        self.cache.clear();
    }

    fn registers(&mut self, vcpu: u32) -> Result<VcpuRegisters, TargetError<TargetFault>> {
        if let Some(r) = self.cache.get(&vcpu) {
            return Ok(*r);
        }
        if !self.controls(vcpu) {
            return Err(TargetError::NonFatal);
        }
        let r = self
            .partition
            .registers(vcpu)
            .map_err(|_| TargetError::NonFatal)?;
        self.cache.insert(vcpu, r);
        Ok(r)
    }

    fn paging(&mut self, vcpu: u32) -> Result<PagingState, TargetError<TargetFault>> {
        let s = match self.stop_registers.get(&vcpu).and_then(|r| r.sregs) {
            Some(sregs) => sregs,
            None => self.registers(vcpu)?.sregs,
        };
        Ok(PagingState {
            cr0: s.cr0,
            cr3: s.cr3,
            cr4: s.cr4,
            efer: s.efer,
        })
    }

    /// Reads guest-virtual memory as `vcpu` sees it; returns how many bytes could be read.
    fn read_virtual(
        &mut self,
        vcpu: u32,
        start: u64,
        data: &mut [u8],
    ) -> TargetResult<usize, Self> {
        let paging = self.paging(vcpu)?;
        let partition = &self.partition;
        let mut done = 0;
        while done < data.len() {
            let va = start.wrapping_add(done as u64);
            let Ok(t) = translate(paging, va, |pa| {
                let mut b = [0u8; 8];
                partition
                    .read_memory(pa, &mut b)
                    .ok()
                    .map(|()| u64::from_le_bytes(b))
            }) else {
                break;
            };
            let n = (t.remaining as usize).min(data.len() - done);
            if partition
                .read_memory(t.phys, &mut data[done..done + n])
                .is_err()
            {
                break;
            }
            done += n;
        }
        if done == 0 && !data.is_empty() {
            return Err(TargetError::Errno(14)); // EFAULT
        }
        Ok(done)
    }

    /// gdb's `M`/`X` write: `M addr,2:11223344` must not write 4 bytes (gdbstub passes the
    /// data whatever the packet's length says), so a mismatch is EINVAL and nothing is written.
    fn write_declared(&mut self, vcpu: u32, start: u64, data: &[u8]) -> TargetResult<(), Self> {
        if !std::mem::take(&mut self.declared_write).allows(data.len()) {
            return Err(TargetError::Errno(22));
        }
        self.write_virtual(vcpu, start, data)
    }

    fn write_virtual(&mut self, vcpu: u32, start: u64, data: &[u8]) -> TargetResult<(), Self> {
        let paging = self.paging(vcpu)?;
        let partition = &self.partition;
        let mut done = 0;
        while done < data.len() {
            let va = start.wrapping_add(done as u64);
            let t = translate(paging, va, |pa| {
                let mut b = [0u8; 8];
                partition
                    .read_memory(pa, &mut b)
                    .ok()
                    .map(|()| u64::from_le_bytes(b))
            })
            .map_err(|_| TargetError::Errno(14))?;
            let n = (t.remaining as usize).min(data.len() - done);
            partition
                .write_memory(t.phys, &data[done..done + n])
                .map_err(|_| TargetError::Errno(14))?;
            done += n;
        }
        Ok(())
    }

    fn first_vcpu(&self) -> u32 {
        self.scope.unwrap_or(0)
    }

    fn debug_control(&self, step: bool) -> DebugControl {
        DebugControl {
            single_step: step,
            sw_breakpoints: !self.sw_breakpoints.is_empty(),
            hw: self.hw,
        }
    }

    /// Applies the pending resume actions. vCPUs without an action continue (gdbstub's contract),
    /// unless scheduler locking keeps them stopped.
    fn apply_resume(&mut self) -> Result<(), TargetFault> {
        self.cache.clear();
        self.stop_registers.clear();
        if !self.scheduler_lock {
            for v in self.vcpus() {
                self.actions.entry(v).or_insert(Action::Continue);
            }
        }
        let actions: Vec<(u32, Action)> = self.actions.drain().collect();
        for (vcpu, action) in actions {
            let number = self
                .partition
                .resume(vcpu, self.debug_control(action == Action::Step));
            self.resumed.insert(vcpu, number);
        }
        Ok(())
    }

    /// Makes every vCPU of this target forget the debugger and run (detach).
    pub fn detach(&mut self) {
        let breakpoints: Vec<u64> = self.sw_breakpoints.keys().copied().collect();
        for addr in breakpoints {
            self.remove_sw(addr);
        }
        self.hw = [None; 4];
        self.emulated_sw.clear();
        for v in self.vcpus() {
            self.partition.set_debug(v, DebugControl::default());
        }
    }

    /// Releases every vCPU of this target.
    pub fn release_all(&mut self) {
        self.cache.clear();
        self.stop_registers.clear();
        for v in self.vcpus() {
            self.partition.release_stop(v);
        }
    }

    /// Whether `vcpu` is one of this target's vCPUs.
    fn controls(&self, vcpu: u32) -> bool {
        match self.scope {
            Some(v) => v == vcpu,
            None => vcpu < self.partition.vcpu_count(),
        }
    }

    fn remove_sw(&mut self, addr: u64) -> bool {
        let Some(original) = self.sw_breakpoints.remove(&addr) else {
            return false;
        };
        let vcpu = self.first_vcpu();
        self.write_virtual(vcpu, addr, &[original]).is_ok()
    }

    /// Whether `event` completes a step of an earlier resume than the vCPU's latest: a step an
    /// interrupt stop superseded, whose event was already on its way when the interrupt's
    /// stop drained the queue. Reporting it would be a stray SIGTRAP at a pc gdb did not
    /// step from.
    pub(crate) fn is_superseded_step(&self, event: &DebugStopEvent) -> bool {
        is_step(event) && self.resumed_since(event)
    }

    /// Whether the vCPU of `event` was resumed after the run that produced it.
    fn resumed_since(&self, event: &DebugStopEvent) -> bool {
        self.resumed
            .get(&event.vcpu)
            .is_some_and(|&latest| event.resume < latest)
    }

    /// Decides what a debug exit means. None: not for the debugger (the guest's own int3,
    /// re-injected, or the completion of a superseded step), keep running.
    pub fn on_debug_event(&mut self, event: DebugStopEvent) -> Option<Stop> {
        if self.is_superseded_step(&event) {
            return None;
        }
        let vcpu = event.vcpu;
        let exit = event.exit;
        let stop = match exit.exception {
            3 if !self.sw_breakpoints.contains_key(&exit.pc) => {
                // The guest's own int3: give it back.
                let _ = self.partition.reinject_breakpoint(vcpu);
                self.partition.release_stop(vcpu);
                return None;
            }
            3 => Stop::SwBreak(vcpu),
            _ => {
                let hit = (0..4).find(|slot| exit.dr6 & (1 << slot) != 0);
                match hit.and_then(|slot| self.hw[slot]) {
                    Some(bp)
                        if bp.kind == HwKind::Execute && self.emulated_sw.contains(&bp.addr) =>
                    {
                        Stop::SwBreak(vcpu)
                    }
                    Some(bp) if bp.kind == HwKind::Execute => Stop::HwBreak(vcpu),
                    Some(bp) => Stop::Watch(
                        vcpu,
                        if bp.kind == HwKind::Write {
                            WatchKind::Write
                        } else {
                            WatchKind::ReadWrite
                        },
                        bp.addr,
                    ),
                    None => Stop::Step(vcpu),
                }
            }
        };
        // All-stop: the other vCPUs of this target stop too before gdb hears of it. (Their
        // debug controls are set again at the next resume.)
        self.stop_all();
        // The registers of the stop, unless the vCPU ran again since (a stop that came while
        // the target was stopped, reported at the next resume).
        if !self.resumed_since(&event) {
            self.stop_registers.insert(vcpu, event.registers);
        }
        Some(stop)
    }

    /// Checks for a crash or exit of the partition while running.
    pub fn poll_state(&mut self) -> Option<Stop> {
        match self.partition.state() {
            PartitionLifecycle::Exited(code) => Some(Stop::Exited(code as u8)),
            PartitionLifecycle::Crashed(report) if !self.reported_crash => {
                if self.scope.is_some_and(|v| v != report.vcpu) {
                    return None;
                }
                self.reported_crash = true;
                self.cache.clear();
                Some(Stop::Signal(report.vcpu, Signal::SIGSEGV))
            }
            _ => None,
        }
    }

    /// Expedited registers (rbp, rsp, rip) of `vcpu` for a stop reply.
    pub fn expedited(&mut self, vcpu: u32) -> Vec<(usize, [u8; 8])> {
        let gprs = match self.stop_registers.get(&vcpu).and_then(|r| r.gprs) {
            Some(gprs) => gprs,
            None => match self.registers(vcpu) {
                Ok(r) => r.regs,
                Err(_) => return Vec::new(),
            },
        };
        vec![
            (super::arch::REG_RBP, gprs.rbp.to_le_bytes()),
            (super::arch::REG_RSP, gprs.rsp.to_le_bytes()),
            (super::arch::REG_RIP, gprs.rip.to_le_bytes()),
        ]
    }

    fn read_regs(&mut self, vcpu: u32, regs: &mut HvRegisters) -> TargetResult<(), Self> {
        *regs = HvRegisters::from_kvm(&self.registers(vcpu)?);
        Ok(())
    }

    fn write_regs(&mut self, vcpu: u32, regs: &HvRegisters) -> TargetResult<(), Self> {
        let mut kvm = self.registers(vcpu)?;
        regs.to_kvm(&mut kvm);
        self.partition
            .set_registers(vcpu, kvm)
            .map_err(|_| TargetError::NonFatal)?;
        self.cache.insert(vcpu, kvm);
        // The registers the stop came with are no longer the vCPU's.
        self.stop_registers.remove(&vcpu);
        Ok(())
    }

    /// Lines of `monitor partitions`.
    pub fn partitions_report(&self) -> Vec<String> {
        self.partition.partitions_report()
    }

    /// Whether `vcpu` is parked (for tests and monitor output).
    pub fn vcpu_state(&self, vcpu: u32) -> Option<VcpuThreadState> {
        (vcpu < self.partition.vcpu_count()).then(|| self.partition.vcpu_state(vcpu))
    }
}

impl<H: GuestHandle> Target for PartitionTarget<H> {
    type Arch = HvX86_64;
    type Error = TargetFault;

    fn base_ops(&mut self) -> BaseOps<'_, Self::Arch, Self::Error> {
        if self.scope.is_some() {
            BaseOps::SingleThread(self)
        } else {
            BaseOps::MultiThread(self)
        }
    }

    fn support_breakpoints(&mut self) -> Option<BreakpointsOps<'_, Self>> {
        Some(self)
    }

    fn support_monitor_cmd(
        &mut self,
    ) -> Option<gdbstub::target::ext::monitor_cmd::MonitorCmdOps<'_, Self>> {
        Some(self)
    }

    fn guard_rail_implicit_sw_breakpoints(&self) -> bool {
        true
    }
}

impl<H: GuestHandle> MultiThreadBase for PartitionTarget<H> {
    fn read_registers(&mut self, regs: &mut HvRegisters, tid: Tid) -> TargetResult<(), Self> {
        self.read_regs(vcpu_of(tid), regs)
    }

    fn write_registers(&mut self, regs: &HvRegisters, tid: Tid) -> TargetResult<(), Self> {
        self.write_regs(vcpu_of(tid), regs)
    }

    fn read_addrs(&mut self, start: u64, data: &mut [u8], tid: Tid) -> TargetResult<usize, Self> {
        self.read_virtual(vcpu_of(tid), start, data)
    }

    fn write_addrs(&mut self, start: u64, data: &[u8], tid: Tid) -> TargetResult<(), Self> {
        self.write_declared(vcpu_of(tid), start, data)
    }

    fn list_active_threads(
        &mut self,
        register_thread: &mut dyn FnMut(Tid),
    ) -> Result<(), Self::Error> {
        for v in self.vcpus() {
            register_thread(tid(v));
        }
        Ok(())
    }

    fn support_resume(&mut self) -> Option<MultiThreadResumeOps<'_, Self>> {
        Some(self)
    }
}

impl<H: GuestHandle> MultiThreadResume for PartitionTarget<H> {
    fn resume(&mut self) -> Result<(), Self::Error> {
        self.apply_resume()
    }

    fn clear_resume_actions(&mut self) -> Result<(), Self::Error> {
        self.actions.clear();
        self.scheduler_lock = false;
        Ok(())
    }

    fn set_resume_action_continue(
        &mut self,
        tid: Tid,
        _signal: Option<Signal>,
    ) -> Result<(), Self::Error> {
        // A thread that is not ours (gdb only sends listed ones) gets no action.
        if self.controls(vcpu_of(tid)) {
            self.actions.insert(vcpu_of(tid), Action::Continue);
        }
        Ok(())
    }

    fn support_single_step(&mut self) -> Option<MultiThreadSingleStepOps<'_, Self>> {
        Some(self)
    }

    fn support_scheduler_locking(&mut self) -> Option<MultiThreadSchedulerLockingOps<'_, Self>> {
        Some(self)
    }
}

impl<H: GuestHandle> MultiThreadSingleStep for PartitionTarget<H> {
    fn set_resume_action_step(
        &mut self,
        tid: Tid,
        _signal: Option<Signal>,
    ) -> Result<(), Self::Error> {
        if self.controls(vcpu_of(tid)) {
            self.actions.insert(vcpu_of(tid), Action::Step);
        }
        Ok(())
    }
}

impl<H: GuestHandle> MultiThreadSchedulerLocking for PartitionTarget<H> {
    fn set_resume_action_scheduler_lock(&mut self) -> Result<(), Self::Error> {
        self.scheduler_lock = true;
        Ok(())
    }
}

impl<H: GuestHandle> SingleThreadBase for PartitionTarget<H> {
    fn read_registers(&mut self, regs: &mut HvRegisters) -> TargetResult<(), Self> {
        let v = self.first_vcpu();
        self.read_regs(v, regs)
    }

    fn write_registers(&mut self, regs: &HvRegisters) -> TargetResult<(), Self> {
        let v = self.first_vcpu();
        self.write_regs(v, regs)
    }

    fn read_addrs(&mut self, start: u64, data: &mut [u8]) -> TargetResult<usize, Self> {
        let v = self.first_vcpu();
        self.read_virtual(v, start, data)
    }

    fn write_addrs(&mut self, start: u64, data: &[u8]) -> TargetResult<(), Self> {
        let v = self.first_vcpu();
        self.write_declared(v, start, data)
    }

    fn support_resume(&mut self) -> Option<SingleThreadResumeOps<'_, Self>> {
        Some(self)
    }
}

impl<H: GuestHandle> SingleThreadResume for PartitionTarget<H> {
    fn resume(&mut self, _signal: Option<Signal>) -> Result<(), Self::Error> {
        self.actions.insert(self.first_vcpu(), Action::Continue);
        self.apply_resume()
    }

    fn support_single_step(&mut self) -> Option<SingleThreadSingleStepOps<'_, Self>> {
        Some(self)
    }
}

impl<H: GuestHandle> SingleThreadSingleStep for PartitionTarget<H> {
    fn step(&mut self, _signal: Option<Signal>) -> Result<(), Self::Error> {
        self.actions.insert(self.first_vcpu(), Action::Step);
        self.apply_resume()
    }
}

impl<H: GuestHandle> Breakpoints for PartitionTarget<H> {
    fn support_sw_breakpoint(&mut self) -> Option<SwBreakpointOps<'_, Self>> {
        Some(self)
    }
    fn support_hw_breakpoint(&mut self) -> Option<HwBreakpointOps<'_, Self>> {
        Some(self)
    }
    fn support_hw_watchpoint(&mut self) -> Option<HwWatchpointOps<'_, Self>> {
        Some(self)
    }
}

impl<H: GuestHandle> SwBreakpoint for PartitionTarget<H> {
    fn add_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        if sw_in_debug_registers(self.caps, self.scope) {
            let added = self.emulated_sw.contains(&addr)
                || self.add_hw(HwBreakpoint {
                    addr,
                    kind: HwKind::Execute,
                    len: 1,
                });
            if added {
                self.emulated_sw.insert(addr);
            }
            return Ok(added);
        }
        if self.sw_breakpoints.contains_key(&addr) {
            return Ok(true);
        }
        let vcpu = self.first_vcpu();
        let mut original = [0u8];
        if self.read_virtual(vcpu, addr, &mut original).is_err() {
            return Ok(false);
        }
        self.write_virtual(vcpu, addr, &[0xcc])?;
        self.sw_breakpoints.insert(addr, original[0]);
        Ok(true)
    }

    fn remove_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        if self.emulated_sw.remove(&addr) {
            return Ok(self.remove_hw(HwBreakpoint {
                addr,
                kind: HwKind::Execute,
                len: 1,
            }));
        }
        Ok(self.remove_sw(addr))
    }
}

/// Whether gdb's software breakpoints go into debug registers instead of patching `int3` into
/// guest memory.
///
/// A per-vCPU target (`scope` is Some) always uses debug registers: guest memory is shared by
/// every vCPU of the partition, but only the scoped vCPU traps `int3` (KVM_GUESTDBG_USE_SW_BP is
/// per vCPU), so a sibling executing a patched `int3` would take a #BP inside the guest; and two
/// per-vCPU sessions would restore each other's patched bytes. Debug registers are per vCPU, so
/// such a breakpoint stops only the scoped vCPU and leaves memory untouched (at the cost of the
/// four debug-address registers being shared with hardware breakpoints and watchpoints).
fn sw_in_debug_registers(caps: hv_core::probe::DebugCaps, scope: Option<u32>) -> bool {
    scope.is_some() || !caps.sw_breakpoints
}

impl<H: GuestHandle> PartitionTarget<H> {
    fn add_hw(&mut self, bp: HwBreakpoint) -> bool {
        if self.hw.contains(&Some(bp)) {
            return true;
        }
        match self.hw.iter_mut().find(|slot| slot.is_none()) {
            Some(slot) => {
                *slot = Some(bp);
                true
            }
            None => false, // x86 has four debug-address registers
        }
    }

    fn remove_hw(&mut self, bp: HwBreakpoint) -> bool {
        match self.hw.iter_mut().find(|slot| **slot == Some(bp)) {
            Some(slot) => {
                *slot = None;
                true
            }
            None => false,
        }
    }
}

impl<H: GuestHandle> GdbHwBreakpoint for PartitionTarget<H> {
    fn add_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        Ok(self.add_hw(HwBreakpoint {
            addr,
            kind: HwKind::Execute,
            len: 1,
        }))
    }

    fn remove_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        Ok(self.remove_hw(HwBreakpoint {
            addr,
            kind: HwKind::Execute,
            len: 1,
        }))
    }
}

/// x86 watches only naturally aligned 1, 2, 4 or 8 bytes, and cannot watch reads alone.
fn watch(addr: u64, len: u64, kind: WatchKind) -> Option<HwBreakpoint> {
    let kind = match kind {
        WatchKind::Write => HwKind::Write,
        WatchKind::Read | WatchKind::ReadWrite => HwKind::ReadWrite,
    };
    (matches!(len, 1 | 2 | 4 | 8) && addr.is_multiple_of(len)).then_some(HwBreakpoint {
        addr,
        kind,
        len: len as u8,
    })
}

impl<H: GuestHandle> HwWatchpoint for PartitionTarget<H> {
    fn add_hw_watchpoint(
        &mut self,
        addr: u64,
        len: u64,
        kind: WatchKind,
    ) -> TargetResult<bool, Self> {
        // Refused where the host never raises data breakpoints: gdb then says so instead of
        // waiting forever.
        Ok(self.caps.data_watchpoints && watch(addr, len, kind).is_some_and(|bp| self.add_hw(bp)))
    }

    fn remove_hw_watchpoint(
        &mut self,
        addr: u64,
        len: u64,
        kind: WatchKind,
    ) -> TargetResult<bool, Self> {
        Ok(watch(addr, len, kind).is_some_and(|bp| self.remove_hw(bp)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchpoints_follow_x86_rules() {
        assert!(watch(0x1000, 8, WatchKind::Write).is_some());
        assert!(watch(0x1004, 8, WatchKind::Write).is_none(), "unaligned");
        assert!(watch(0x1000, 3, WatchKind::Write).is_none(), "odd length");
        assert_eq!(
            watch(0x1000, 4, WatchKind::Read).unwrap().kind,
            HwKind::ReadWrite,
            "no read-only watch on x86"
        );
    }

    #[test]
    fn per_vcpu_targets_never_patch_shared_memory() {
        let trapping = hv_core::probe::DebugCaps {
            sw_breakpoints: true,
            data_watchpoints: true,
        };
        let not_trapping = hv_core::probe::DebugCaps {
            sw_breakpoints: false,
            data_watchpoints: false,
        };
        assert!(!sw_in_debug_registers(trapping, None), "partition: int3");
        assert!(
            sw_in_debug_registers(not_trapping, None),
            "partition: emulated"
        );
        assert!(
            sw_in_debug_registers(trapping, Some(1)),
            "vCPU: debug registers"
        );
        assert!(
            sw_in_debug_registers(not_trapping, Some(0)),
            "vCPU: debug registers"
        );
    }

    #[test]
    fn thread_ids_are_vcpu_plus_one() {
        assert_eq!(tid(0).get(), 1);
        assert_eq!(vcpu_of(tid(5)), 5);
    }
}
