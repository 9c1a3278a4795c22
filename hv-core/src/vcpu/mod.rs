//! vCPU threads: each vCPU runs on its own host thread as an explicit state machine (running,
//! halted, parked for a pause / schedule window / debugger, crashed, exited). Other threads reach a
//! vCPU only through its `VcpuShared` (interrupt lines, requests, jobs) — never through a lock on
//! the partition or the system — so stopping one partition can never stall another.

mod debug;
mod exit;
mod hypercalls;

pub use debug::{DebugControl, HwBreakpoint, HwKind};
pub use exit::{DebugExit, DeviceAccess, ExitAction, MmioAccess, handle_exit};

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use kvm_bindings::{
    KVM_MAX_CPUID_ENTRIES, KVM_MP_STATE_RUNNABLE, kvm_fpu, kvm_mp_state, kvm_regs, kvm_sregs,
    kvm_vcpu_events,
};
use kvm_ioctls::{Kvm, SyncReg, VcpuFd};

use crate::boot;
use crate::irq::{InterruptTarget, IrqController};
use crate::kvm_ext;
use crate::partition::Partition;
use crate::poll::PollWindow;
use crate::trace::{TraceKind, TraceRecord, TraceRing};

/// What a vCPU is doing, as seen from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum VcpuState {
    /// Thread not started yet.
    Created = 0,
    /// Running guest code (or handling an exit).
    Running = 1,
    /// Halted, waiting for an interrupt.
    Halted = 2,
    /// Parked because its partition is paused (or being reset).
    Paused = 3,
    /// Parked outside its partition's schedule window.
    OutOfWindow = 4,
    /// Stopped by the debugger.
    DebugStopped = 5,
    /// Parked because its partition crashed.
    Crashed = 6,
    /// Parked because its partition exited.
    Exited = 7,
    /// Waiting for a device model's reply.
    BlockedOnDevice = 8,
    /// The thread has ended (system shutdown).
    Gone = 9,
}

impl VcpuState {
    fn from_u8(v: u8) -> VcpuState {
        use VcpuState::*;
        [
            Created,
            Running,
            Halted,
            Paused,
            OutOfWindow,
            DebugStopped,
            Crashed,
            Exited,
            BlockedOnDevice,
            Gone,
        ]
        .get(usize::from(v))
        .copied()
        .unwrap_or(Gone)
    }

    /// A short lowercase name (`running`, `halted`, ...).
    pub fn name(self) -> &'static str {
        use VcpuState::*;
        match self {
            Created => "created",
            Running => "running",
            Halted => "halted",
            Paused => "paused",
            OutOfWindow => "out-of-window",
            DebugStopped => "debug-stopped",
            Crashed => "crashed",
            Exited => "exited",
            BlockedOnDevice => "blocked-on-device",
            Gone => "gone",
        }
    }

    /// True while the vCPU is parked and will not run guest code until released.
    pub fn is_parked(self) -> bool {
        use VcpuState::*;
        matches!(
            self,
            Created | Paused | OutOfWindow | DebugStopped | Crashed | Exited | Gone
        )
    }
}

/// Size of [`VcpuStats::exits_by_reason`]: KVM exit reasons at or above it count in the last slot.
pub const EXIT_REASONS: usize = 64;

/// Adds one to a counter that only the calling thread writes (no locked instruction).
#[inline]
fn bump(counter: &AtomicU64) {
    counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

/// Per-vCPU counters (written by the vCPU thread, read by anyone).
#[derive(Debug)]
pub struct VcpuStats {
    /// VM exits by KVM exit reason (`KVM_EXIT_*`; reasons >= `EXIT_REASONS - 1` share the last).
    pub exits_by_reason: [AtomicU64; EXIT_REASONS],
    /// Interrupts injected, by vector.
    pub irqs_by_vector: [AtomicU64; 256],
    /// VM exits.
    pub exits: AtomicU64,
    /// Hypercalls.
    pub hypercalls: AtomicU64,
    /// Interrupts raised for this vCPU.
    pub irqs_raised: AtomicU64,
    /// Interrupts injected.
    pub irqs_injected: AtomicU64,
    /// Nanoseconds spent inside KVM_RUN.
    pub guest_ns: AtomicU64,
}

impl Default for VcpuStats {
    fn default() -> Self {
        VcpuStats {
            exits_by_reason: std::array::from_fn(|_| AtomicU64::new(0)),
            irqs_by_vector: std::array::from_fn(|_| AtomicU64::new(0)),
            exits: AtomicU64::new(0),
            hypercalls: AtomicU64::new(0),
            irqs_raised: AtomicU64::new(0),
            irqs_injected: AtomicU64::new(0),
            guest_ns: AtomicU64::new(0),
        }
    }
}

thread_local! {
    /// The vCPU whose thread this is (set for the life of a vCPU thread).
    static CURRENT: std::cell::RefCell<Option<Arc<VcpuShared>>> = const { std::cell::RefCell::new(None) };
}

/// The vCPU of the calling thread, when it is a vCPU thread (devices use it to trace and to show
/// that the vCPU is blocked).
pub fn current() -> Option<Arc<VcpuShared>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// A job run on the vCPU thread with access to its KVM state.
type VcpuJob = Box<dyn FnOnce(&mut VcpuRunner) + Send>;

/// The thread-safe face of a vCPU: interrupt controller, requests, jobs, state, trace ring.
pub struct VcpuShared {
    /// Partition index.
    pub partition: usize,
    /// vCPU index inside the partition.
    pub index: u32,
    irq: Mutex<IrqController>,
    wake: Mutex<()>,
    wake_cond: Condvar,
    /// Counts kicks, so that a halted vCPU can spin on it before it sleeps.
    kicks: AtomicU64,
    /// Set while the vCPU waits in `HV_DM_REPLY_WAIT` for a device request.
    awaiting_request: AtomicBool,
    /// pthread id and `kvm_run` address while the thread is inside its run loop.
    runner: Mutex<Option<(libc::pthread_t, usize)>>,
    jobs_tx: Sender<VcpuJob>,
    jobs_rx: Receiver<VcpuJob>,
    stop_requested: AtomicBool,
    pending_debug: Mutex<Option<DebugControl>>,
    /// Registers captured when the vCPU parked for the debugger (valid until it runs again).
    stopped_registers: Mutex<Option<VcpuRegisters>>,
    state: AtomicU8,
    /// The served device whose model this vCPU waits for (while `BlockedOnDevice`).
    blocked_on: Mutex<Option<Arc<str>>>,
    /// This vCPU's trace ring (the vCPU thread is its only producer).
    pub trace: TraceRing,
    /// Counters.
    pub stats: VcpuStats,
}

impl std::fmt::Debug for VcpuShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VcpuShared")
            .field("partition", &self.partition)
            .field("index", &self.index)
            .field("state", &self.state())
            .finish()
    }
}

/// Errors of vCPU control requests.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    /// The vCPU thread did not answer in time (it may be blocked on a device model).
    #[error("vCPU {0} did not answer in time")]
    Timeout(u32),
    /// The vCPU thread is gone.
    #[error("vCPU {0} is not running")]
    Gone(u32),
    /// A KVM call failed.
    #[error("KVM refused {what}: {source}")]
    Kvm {
        /// Which call.
        what: &'static str,
        /// The errno.
        #[source]
        source: vmm_sys_util::errno::Error,
    },
}

/// How long a control request waits for the vCPU thread.
const JOB_TIMEOUT: Duration = Duration::from_secs(5);

impl VcpuShared {
    /// A vCPU's shared state with a trace ring of `trace_capacity` records.
    pub fn new(partition: usize, index: u32, trace_capacity: usize) -> VcpuShared {
        let (jobs_tx, jobs_rx) = crossbeam_channel::unbounded();
        VcpuShared {
            partition,
            index,
            irq: Mutex::default(),
            wake: Mutex::new(()),
            wake_cond: Condvar::new(),
            kicks: AtomicU64::new(0),
            awaiting_request: AtomicBool::new(false),
            runner: Mutex::new(None),
            jobs_tx,
            jobs_rx,
            stop_requested: AtomicBool::new(false),
            pending_debug: Mutex::new(None),
            stopped_registers: Mutex::new(None),
            state: AtomicU8::new(VcpuState::Created as u8),
            blocked_on: Mutex::new(None),
            trace: TraceRing::new(trace_capacity),
            stats: VcpuStats::default(),
        }
    }

    /// Current state.
    pub fn state(&self) -> VcpuState {
        VcpuState::from_u8(self.state.load(Ordering::Acquire))
    }

    fn set_state(&self, state: VcpuState) {
        self.state.store(state as u8, Ordering::Release);
        // Pairs with the fence in `kick`: a vCPU that leaves a parked state sees every request
        // made by a kicker that still saw it parked (and so only woke it).
        std::sync::atomic::fence(Ordering::SeqCst);
    }

    fn irq(&self) -> MutexGuard<'_, IrqController> {
        self.irq.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Raises `vector` on this vCPU (from any thread).
    pub fn raise(&self, vector: u8) {
        self.stats.irqs_raised.fetch_add(1, Ordering::Relaxed);
        let now = crate::clock::Clock::shared().now_ns();
        let fresh = self.irq().raise_at(vector, now);
        if fresh {
            self.kick();
        }
    }

    /// Makes the vCPU thread look at its requests now: wakes it if it waits, and forces it out of
    /// `KVM_RUN` if it is in the guest.
    pub fn kick(&self) {
        self.kicks.fetch_add(1, Ordering::SeqCst);
        {
            let _guard = self.wake.lock().unwrap_or_else(|p| p.into_inner());
            self.wake_cond.notify_all();
        }
        // A parked or halted vCPU looks at its requests before it next enters the guest, so
        // waking it is enough: no signal, and no `immediate_exit` that would turn its next
        // KVM_RUN into a wasted round trip. Nor does the vCPU's own thread need one (it is not
        // in KVM_RUN).
        std::sync::atomic::fence(Ordering::SeqCst);
        let state = self.state();
        if state.is_parked() || state == VcpuState::Halted {
            return;
        }
        let runner = self.runner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((thread, run)) = *runner
            && thread != kvm_ext::current_thread()
        {
            // SAFETY: `run` is the address of this vCPU's mmap'ed `kvm_run`, published by the vCPU
            // thread and withdrawn (under this same lock) before the mapping is dropped; writing
            // the one-byte `immediate_exit` flag is how KVM expects to be kicked.
            unsafe {
                std::ptr::addr_of_mut!((*(run as *mut kvm_bindings::kvm_run)).immediate_exit)
                    .write_volatile(1);
            }
            kvm_ext::kick_thread(thread);
        }
    }

    /// Asks the vCPU to stop for the debugger (`resume_from_debug` releases it).
    pub fn request_stop(&self) {
        // Already requested: whoever asked first kicked it.
        if !self.stop_requested.swap(true, Ordering::SeqCst) {
            self.kick();
        }
    }

    /// Sets the debug controls and releases a debugger stop, with one kick (a resume or a step).
    pub fn resume_with(&self, control: DebugControl) {
        *self.pending_debug.lock().unwrap_or_else(|p| p.into_inner()) = Some(control);
        self.stop_requested.store(false, Ordering::SeqCst);
        self.kick();
    }

    /// Releases a debugger stop.
    pub fn release_stop(&self) {
        self.stop_requested.store(false, Ordering::SeqCst);
        self.kick();
    }

    /// Whether a debugger stop is requested.
    pub fn stop_requested(&self) -> bool {
        self.stop_requested.load(Ordering::Acquire)
    }

    /// Runs `job` on the vCPU thread and returns its result.
    pub(crate) fn run_job<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut VcpuRunner) -> T + Send + 'static,
    ) -> Result<T, VcpuError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.jobs_tx
            .send(Box::new(move |runner| {
                let _ = tx.send(job(runner));
            }))
            .map_err(|_| VcpuError::Gone(self.index))?;
        self.kick();
        rx.recv_timeout(JOB_TIMEOUT).map_err(|e| match e {
            crossbeam_channel::RecvTimeoutError::Timeout => VcpuError::Timeout(self.index),
            crossbeam_channel::RecvTimeoutError::Disconnected => VcpuError::Gone(self.index),
        })
    }

    /// Reads all registers (on the vCPU thread; while it is stopped for the debugger, once per
    /// stop: later reads are answered from that snapshot without waking the vCPU thread).
    pub fn registers(&self) -> Result<VcpuRegisters, VcpuError> {
        if let Some(r) = *self
            .stopped_registers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
        {
            return Ok(r);
        }
        self.run_job(|runner| {
            let registers = runner.read_registers()?;
            if runner.shared.state() == VcpuState::DebugStopped {
                // Cleared on the vCPU thread when it leaves the stop, so never stale.
                *runner
                    .shared
                    .stopped_registers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(registers);
            }
            Ok(registers)
        })?
    }

    /// Writes all registers.
    pub fn set_registers(&self, registers: VcpuRegisters) -> Result<(), VcpuError> {
        self.run_job(move |runner| {
            runner.write_registers(&registers)?;
            let mut snapshot = runner
                .shared
                .stopped_registers
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if snapshot.is_some() {
                *snapshot = Some(registers);
            }
            Ok(())
        })?
    }

    /// Puts the vCPU back at `entry` (its partition must be parked).
    pub(crate) fn reset(&self, entry: u64) -> Result<(), VcpuError> {
        self.run_job(move |runner| runner.reset(entry))?
    }

    /// Runs an arbitrary KVM job on the vCPU thread (debug-register and guest-debug control).
    pub fn with_fd<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut VcpuFd) -> T + Send + 'static,
    ) -> Result<T, VcpuError> {
        self.run_job(move |runner| job(&mut runner.fd))
    }

    fn has_jobs(&self) -> bool {
        !self.jobs_rx.is_empty()
    }

    /// Records a trace event; only from this vCPU's own thread (the ring's one producer).
    pub(crate) fn trace_here(&self, kind: TraceKind, a: u64, b: u64) {
        if self.trace.wants(kind) {
            self.trace.produce(TraceRecord {
                timestamp: crate::clock::Clock::shared().now_ns(),
                kind: kind as u16,
                vcpu: self.index as u16,
                partition: self.partition as u32,
                a,
                b,
            });
        }
    }

    /// Marks the vCPU blocked on the model of `device` (or, with `None`, running again), and
    /// traces the change; only from this vCPU's own thread.
    pub(crate) fn set_blocked(&self, device: Option<&Arc<str>>) {
        let state = if device.is_some() {
            VcpuState::BlockedOnDevice
        } else {
            VcpuState::Running
        };
        *self.blocked_on.lock().unwrap_or_else(|p| p.into_inner()) = device.cloned();
        self.trace_here(TraceKind::StateChange, state as u64, 0);
        self.set_state(state);
    }

    /// The device whose model this vCPU is waiting for, if it is.
    pub fn blocked_on(&self) -> Option<Arc<str>> {
        if self.state() != VcpuState::BlockedOnDevice {
            return None;
        }
        self.blocked_on
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl InterruptTarget for VcpuShared {
    fn raise(&self, vector: u8) {
        VcpuShared::raise(self, vector);
    }

    fn lower(&self, vector: u8) -> bool {
        self.irq().lower(vector)
    }

    fn is_pending(&self, vector: u8) -> bool {
        self.irq().is_pending(vector)
    }

    fn wake_request_waiter(&self) {
        if self.awaiting_request.load(Ordering::SeqCst) {
            self.kick();
        }
    }

    fn name(&self) -> String {
        format!("p{}.v{}", self.partition, self.index)
    }
}

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

/// A vCPU's architectural register state.
#[derive(Debug, Clone, Copy, Default)]
pub struct VcpuRegisters {
    /// General-purpose registers, rip and rflags.
    pub regs: kvm_regs,
    /// Segment, control and descriptor-table registers, EFER.
    pub sregs: kvm_sregs,
    /// x87 and SSE state.
    pub fpu: kvm_fpu,
}

/// Sets up a fresh vCPU fd: CPUID and the long-mode entry state.
pub fn init_vcpu(
    kvm: &Kvm,
    fd: &VcpuFd,
    entry: u64,
    memory: u64,
    index: u32,
) -> Result<(), VcpuError> {
    let kvm_err = |what| move |source| VcpuError::Kvm { what, source };
    let cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
    fd.set_cpuid2(&cpuid).map_err(kvm_err("KVM_SET_CPUID2"))?;
    reset_vcpu(fd, entry, memory, index).map(drop)
}

/// Puts a vCPU back at its entry state; returns the general registers it set.
pub fn reset_vcpu(fd: &VcpuFd, entry: u64, memory: u64, index: u32) -> Result<kvm_regs, VcpuError> {
    let kvm_err = |what| move |source| VcpuError::Kvm { what, source };
    let mut sregs = fd.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?;
    boot::long_mode_sregs(&mut sregs);
    fd.set_sregs(&sregs).map_err(kvm_err("KVM_SET_SREGS"))?;
    let regs = boot::entry_regs(entry, memory, index);
    fd.set_regs(&regs).map_err(kvm_err("KVM_SET_REGS"))?;
    fd.set_fpu(&boot::entry_fpu())
        .map_err(kvm_err("KVM_SET_FPU"))?;
    // Forget a pending exception or interrupt from before a crash; best effort.
    let _ = fd.set_vcpu_events(&kvm_vcpu_events::default());
    let _ = fd.set_mp_state(kvm_mp_state {
        mp_state: KVM_MP_STATE_RUNNABLE,
    });
    Ok(regs)
}

/// The vCPU thread's own state: the KVM fd and what only this thread touches.
pub struct VcpuRunner {
    fd: VcpuFd,
    shared: Arc<VcpuShared>,
    partition: Arc<Partition>,
    halted: bool,
    sync_regs: bool,
    debug: DebugControl,
    /// How long a halt spins before it sleeps.
    halt_poll: PollWindow,
    /// The guest buffer of an `HV_DM_REPLY_WAIT` that waits for a request.
    dm_wait: Option<u64>,
    /// The vector last injected with `KVM_INTERRUPT`, until it is known that the guest took it:
    /// until then KVM may still hold it (an entry cancelled by a kick, or a guest that could not
    /// take it yet and halted first).
    unconfirmed_injection: Option<u8>,
    /// A single step executed `hlt` and KVM reported the step, not the halt: its emulator still
    /// holds the halt request and turns the next suitable exit into a stale `KVM_EXIT_HLT` (one
    /// instruction later, wherever that is — possibly inside an interrupt handler with IF=0).
    stale_halt_exit: bool,
    /// While an exit is handled (no waits in between): its time, which stamps every record of
    /// that exit, so an exit costs one clock read however many records it writes.
    exit_stamp: Option<u64>,
}

impl VcpuRunner {
    /// Prepares the runner; `sync_regs` when KVM_CAP_SYNC_REGS is available.
    pub fn new(
        mut fd: VcpuFd,
        shared: Arc<VcpuShared>,
        partition: Arc<Partition>,
        sync_regs: bool,
    ) -> VcpuRunner {
        if sync_regs {
            fd.set_sync_valid_reg(SyncReg::Register);
        }
        VcpuRunner {
            fd,
            shared,
            partition,
            halted: false,
            sync_regs,
            debug: DebugControl::default(),
            halt_poll: PollWindow::default(),
            dm_wait: None,
            unconfirmed_injection: None,
            stale_halt_exit: false,
            exit_stamp: None,
        }
    }

    /// Records an event: stamped with the time of the exit being handled (one clock read per
    /// exit for all its records), or with the time now outside exit handling.
    #[inline]
    fn trace(&self, kind: TraceKind, a: u64, b: u64) {
        if self.shared.trace.wants(kind) {
            let timestamp = match self.exit_stamp {
                Some(t) => t,
                None => self.partition.clock.now_ns(),
            };
            self.trace_at(timestamp, kind, a, b);
        }
    }

    /// Records with a timestamp the caller already read (saves a clock read on the exit path).
    #[inline]
    fn trace_at(&self, timestamp: u64, kind: TraceKind, a: u64, b: u64) {
        let ring = &self.shared.trace;
        if ring.wants(kind) {
            ring.produce(TraceRecord {
                timestamp,
                kind: kind as u16,
                vcpu: self.shared.index as u16,
                partition: self.shared.partition as u32,
                a,
                b,
            });
        }
    }

    /// The thread body: runs until the system shuts down.
    pub fn run(mut self) {
        CURRENT.with(|c| *c.borrow_mut() = Some(self.shared.clone()));
        let run_addr = self.fd.get_kvm_run() as *mut kvm_bindings::kvm_run as usize;
        *self.shared.runner.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((kvm_ext::current_thread(), run_addr));
        self.shared.set_state(VcpuState::Running);
        loop {
            self.serve_jobs();
            if self.partition.is_shutting_down() {
                break;
            }
            let park = self.park_reason();
            if park.is_some() || self.halted || self.dm_wait.is_some() {
                // The guest will not run for a while: an interrupt KVM still holds would wait
                // with it, in service for us and never delivered.
                self.reclaim_held_interrupt();
            }
            if let Some(state) = park {
                self.park(state);
                continue;
            }
            // Back to the checks above after either wait: a kicker that saw this vCPU halted
            // only woke it (see `kick`), so a request it made must be seen before the guest runs.
            if let Some(buf) = self.dm_wait.take() {
                self.wait_for_request(buf);
                continue;
            }
            if self.halted {
                self.wait_for_interrupt();
                continue;
            }
            self.enter_guest();
        }
        *self.shared.runner.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.shared.set_state(VcpuState::Gone);
        self.partition.notify_parked();
    }

    fn serve_jobs(&mut self) {
        while let Ok(job) = self.shared.jobs_rx.try_recv() {
            job(self);
        }
    }

    fn park_reason(&self) -> Option<VcpuState> {
        let partition = &self.partition;
        if let Some(state) = partition.parked_state() {
            return Some(state);
        }
        if self.shared.stop_requested() {
            return Some(VcpuState::DebugStopped);
        }
        if !partition.in_window() {
            return Some(VcpuState::OutOfWindow);
        }
        None
    }

    fn park(&mut self, state: VcpuState) {
        match state {
            VcpuState::OutOfWindow => self.trace(TraceKind::ScheduleOut, 0, 0),
            VcpuState::DebugStopped => self.trace(TraceKind::DebugStop, 0, 0),
            _ => {}
        }
        self.trace(TraceKind::StateChange, state as u64, 0);
        self.shared.set_state(state);
        self.partition.notify_parked();
        // Jobs (a debugger's register and debug-register requests) are served here, parked: the
        // vCPU does not leave and re-enter its parked state for each.
        let shared = self.shared.clone();
        loop {
            {
                let mut guard = shared.wake.lock().unwrap_or_else(|p| p.into_inner());
                while !shared.has_jobs()
                    && !self.partition.is_shutting_down()
                    && self.park_reason() == Some(state)
                {
                    guard = shared
                        .wake_cond
                        .wait(guard)
                        .unwrap_or_else(|p| p.into_inner());
                }
            }
            if self.partition.is_shutting_down() || self.park_reason() != Some(state) {
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
                VcpuState::OutOfWindow => self.trace(TraceKind::ScheduleIn, 0, 0),
                VcpuState::DebugStopped => self.trace(TraceKind::DebugResume, 0, 0),
                _ => {}
            }
            let next = if self.halted {
                VcpuState::Halted
            } else {
                VcpuState::Running
            };
            self.trace(TraceKind::StateChange, next as u64, 0);
            self.shared.set_state(next);
            self.partition.notify_parked();
        }
    }

    /// Waits while halted until an interrupt is due (the vCPU is then running again) or something
    /// else needs the loop's attention.
    ///
    /// Spins first for the adaptive halt-poll window (see [`crate::poll`]): every reason to wake
    /// comes with a kick, so a change of the kick count ends the spin.
    fn wait_for_interrupt(&mut self) {
        self.shared.set_state(VcpuState::Halted);
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
                self.halted = false;
                self.shared.set_state(VcpuState::Running);
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
        let mut result = self.dm_receive(buf);
        if result == 0 && !done_waiting(self) {
            self.shared.set_state(VcpuState::Halted);
            self.trace(TraceKind::Halt, 0, 0);
            self.halt_poll
                .spin_until(|| shared.kicks.load(Ordering::SeqCst) != kicks);
            let mut guard = shared.wake.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                result = self.dm_receive(buf);
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
            self.shared.set_state(VcpuState::Running);
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
        self.shared.has_jobs() || self.partition.is_shutting_down() || self.park_reason().is_some()
    }

    /// Injects the next deliverable interrupt if the guest can take it, or asks KVM to exit as
    /// soon as it can.
    fn prepare_interrupts(&mut self) {
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
                        self.partition
                            .stats
                            .irqs_injected
                            .fetch_add(1, Ordering::Relaxed);
                        // Stamped now (rings stay in time order), both with one clock read;
                        // b carries the raise time.
                        let ring = &self.shared.trace;
                        if ring.wants(TraceKind::IrqRaise) || ring.wants(TraceKind::IrqInject) {
                            let now = self.partition.clock.now_ns();
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
    fn reclaim_held_interrupt(&mut self) {
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
            Err(e) => self.partition.warn(format!(
                "vCPU {}: cannot take back undelivered interrupt {held}: {e}",
                self.shared.index
            )),
        }
    }

    fn enter_guest(&mut self) {
        self.apply_pending_debug();
        self.prepare_interrupts();
        let step_from = if self.debug.single_step {
            self.read_gprs().ok().map(|r| r.rip)
        } else {
            None
        };
        let start = self.partition.clock.now_ns();
        self.trace_at(start, TraceKind::VmEntry, 0, 0);
        let exit = self.fd.run();
        // Guest time ends when KVM_RUN returns, before any device work (which may block).
        let end = self.partition.clock.now_ns();
        self.exit_stamp = Some(end);
        let action = handle_exit(exit, &*self.partition);
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
            let rip = if self.sync_regs {
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
                self.halted = true;
                self.trace(TraceKind::Halt, 0, 0);
            }
            ExitAction::Debug(event) => {
                if let Some(rip) = step_from
                    && event.exception == 1
                    && self.is_hlt_at(rip)
                {
                    // The step executed `hlt`: the guest waits for an interrupt, as it would
                    // where KVM folds the step into the halt exit.
                    self.halted = true;
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

    /// Hands a debug exit to the partition's debugger; with none attached (it left while this
    /// vCPU was stepping or at a breakpoint), drops the debug controls so that no step or
    /// breakpoint traps again with nobody to answer it.
    fn report_debug_exit(&mut self, exit: DebugExit) {
        if !self.partition.debug_exit(&self.shared, exit)
            && self.debug.is_active()
            && let Err(e) = self.set_debug(DebugControl::default(), false)
        {
            self.partition
                .warn(format!("vCPU {}: {e}", self.shared.index));
        }
    }

    /// Whether the instruction at guest-virtual `rip` is `hlt` (translated by KVM with the guest's
    /// own page tables).
    fn is_hlt_at(&self, rip: u64) -> bool {
        const HLT: u8 = 0xf4;
        let Ok(translation) = self.fd.translate_gva(rip) else {
            return false;
        };
        let mut byte = [0u8; 1];
        translation.valid != 0
            && self
                .partition
                .read_memory(translation.physical_address, &mut byte)
                .is_ok()
            && byte[0] == HLT
    }

    /// Carries out an MMIO access after the exit was accounted for; read data goes back to KVM,
    /// which completes the guest's instruction on the next entry.
    fn mmio(&mut self, access: MmioAccess) {
        if let Some(data) = access.perform(&*self.partition) {
            let run = self.fd.get_kvm_run();
            // SAFETY: the last exit was KVM_EXIT_MMIO, whose `mmio` member KVM reads the data
            // of a read from when it re-enters the guest; `len` is at most its 8 bytes.
            unsafe {
                run.__bindgen_anon_1.mmio.data[..access.len].copy_from_slice(&data[..access.len])
            };
        }
    }

    fn crash(&mut self, reason: String) {
        let registers = self.read_registers().ok();
        self.partition.crash(self.shared.index, reason, registers);
    }

    fn read_gprs(&mut self) -> Result<kvm_regs, VcpuError> {
        if self.sync_regs {
            Ok(self.fd.sync_regs().regs)
        } else {
            self.fd.get_regs().map_err(|source| VcpuError::Kvm {
                what: "KVM_GET_REGS",
                source,
            })
        }
    }

    fn write_rax(&mut self, rax: u64) -> Result<(), VcpuError> {
        if self.sync_regs {
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
    fn registers_set(&mut self, regs: kvm_regs) {
        if self.sync_regs {
            self.fd.clear_sync_dirty_reg(SyncReg::Register);
            self.fd.sync_regs_mut().regs = regs;
        }
    }

    /// Puts this vCPU back at its entry state (partition reset).
    pub fn reset(&mut self, entry: u64) -> Result<(), VcpuError> {
        self.halted = false;
        // A request wait of the old guest must not answer the new one.
        self.dm_wait = None;
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
        let regs = reset_vcpu(
            &self.fd,
            entry,
            self.partition.config.memory,
            self.shared.index,
        )?;
        self.registers_set(regs);
        Ok(())
    }
}
