//! The thread-safe face of a vCPU: what any thread may do to it (raise interrupts, kick it,
//! request a debugger stop, run a job on its thread) without a lock on its partition.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use kvm_ioctls::VcpuFd;

use super::{DebugControl, VcpuCounters, VcpuError, VcpuRegisters, VcpuRunner, VcpuThreadState};
use crate::irq::{InterruptTarget, IrqController};
use crate::kvm_ext;
use crate::trace::{TraceKind, TraceRecord, TraceRing};

/// A job run on the vCPU thread with access to its KVM state.
type VcpuJob = Box<dyn FnOnce(&mut VcpuRunner) + Send>;

/// The thread-safe face of a vCPU: interrupt controller, requests, jobs, state, trace ring.
pub struct VcpuShared {
    /// Partition index.
    pub partition: usize,
    /// vCPU index inside the partition.
    pub index: u32,
    pub(super) irq: Mutex<IrqController>,
    pub(super) wake: Mutex<()>,
    pub(super) wake_cond: Condvar,
    /// Counts kicks, so that a halted vCPU can spin on it before it sleeps.
    pub(super) kicks: AtomicU64,
    /// Set while the vCPU waits in `HV_DM_REPLY_WAIT` for a device request.
    pub(super) awaiting_request: AtomicBool,
    /// pthread id and `kvm_run` address while the thread is inside its run loop.
    pub(super) runner: Mutex<Option<(libc::pthread_t, usize)>>,
    pub(super) jobs_tx: Sender<VcpuJob>,
    pub(super) jobs_rx: Receiver<VcpuJob>,
    pub(super) stop_requested: AtomicBool,
    /// Debugger resumes so far (`resume_with`, `release_stop`).
    pub(super) resumes: AtomicU64,
    /// The count of `resumes` when the vCPU last entered the guest (read under the
    /// `pending_debug` lock, which every resume counts itself under with its controls): its
    /// debug stops carry it, so a debugger can tell the completion of an earlier resume's step
    /// from the current one.
    pub(super) resumed_as: AtomicU64,
    pub(super) pending_debug: Mutex<Option<DebugControl>>,
    /// Registers captured when the vCPU parked for the debugger (valid until it runs again).
    pub(super) stopped_registers: Mutex<Option<VcpuRegisters>>,
    pub(super) state: AtomicU8,
    /// The served device whose model this vCPU waits for (while `BlockedOnDevice`).
    pub(super) blocked_on: Mutex<Option<Arc<str>>>,
    /// This vCPU's trace ring (the vCPU thread is its only producer).
    pub trace: TraceRing,
    /// Counters.
    pub stats: VcpuCounters,
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
            resumes: AtomicU64::new(0),
            resumed_as: AtomicU64::new(0),
            pending_debug: Mutex::new(None),
            stopped_registers: Mutex::new(None),
            state: AtomicU8::new(VcpuThreadState::Created as u8),
            blocked_on: Mutex::new(None),
            trace: TraceRing::new(trace_capacity),
            stats: VcpuCounters::default(),
        }
    }

    /// Current state.
    pub fn state(&self) -> VcpuThreadState {
        VcpuThreadState::from_u8(self.state.load(Ordering::Acquire))
    }

    pub(super) fn set_state(&self, state: VcpuThreadState) {
        self.state.store(state as u8, Ordering::Release);
        // Pairs with the fence in `kick`: a vCPU that leaves a parked state sees every request
        // made by a kicker that still saw it parked (and so only woke it).
        std::sync::atomic::fence(Ordering::SeqCst);
    }

    /// The interrupt controller (hypercalls enable, disable and end vectors through it).
    pub(crate) fn irq(&self) -> MutexGuard<'_, IrqController> {
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
        // Taking the lock orders this kick after a waiter's last look at its requests (it then
        // waits, and the notify reaches it); notifying after the lock is released spares the
        // woken thread a block on it (a futex round trip per kick).
        drop(self.wake.lock().unwrap_or_else(|p| p.into_inner()));
        self.wake_cond.notify_all();
        // A parked or halted vCPU looks at its requests before it next enters the guest, so
        // waking it is enough: no signal, and no `immediate_exit` that would turn its next
        // KVM_RUN into a wasted round trip. Nor does the vCPU's own thread need one (it is not
        // in KVM_RUN).
        std::sync::atomic::fence(Ordering::SeqCst);
        let state = self.state();
        if state.is_parked() || state == VcpuThreadState::Halted {
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
    /// Returns the resume's number, which the vCPU's next debug stops carry
    /// ([`resumed_as`](Self::resumed_as)).
    pub fn resume_with(&self, control: DebugControl) -> u64 {
        self.release(Some(control))
    }

    /// Releases a debugger stop; returns the resume's number.
    pub fn release_stop(&self) -> u64 {
        self.release(None)
    }

    fn release(&self, control: Option<DebugControl>) -> u64 {
        let number = {
            let mut pending = self.pending_debug.lock().unwrap_or_else(|p| p.into_inner());
            if control.is_some() {
                *pending = control;
            }
            self.resumes.fetch_add(1, Ordering::SeqCst) + 1
        };
        self.stop_requested.store(false, Ordering::SeqCst);
        self.kick();
        number
    }

    /// The number of the latest resume counted when the vCPU last entered the guest (0: none
    /// yet).
    pub fn resumed_as(&self) -> u64 {
        self.resumed_as.load(Ordering::SeqCst)
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
            if runner.shared.state() == VcpuThreadState::DebugStopped {
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

    pub(super) fn has_jobs(&self) -> bool {
        !self.jobs_rx.is_empty()
    }

    /// Records a trace event; only from this vCPU's own thread (the ring's one producer).
    pub(crate) fn trace_here(&self, kind: TraceKind, a: u64, b: u64) {
        if self.trace.wants(kind) {
            self.trace_at(crate::clock::Clock::shared().now_ns(), kind, a, b);
        }
    }

    /// Records a trace event with a timestamp the caller read; only from this vCPU's own thread.
    #[inline]
    pub(crate) fn trace_at(&self, timestamp: u64, kind: TraceKind, a: u64, b: u64) {
        if self.trace.wants(kind) {
            self.trace.produce(TraceRecord {
                timestamp,
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
            VcpuThreadState::BlockedOnDevice
        } else {
            VcpuThreadState::Running
        };
        *self.blocked_on.lock().unwrap_or_else(|p| p.into_inner()) = device.cloned();
        self.trace_here(TraceKind::StateChange, state as u64, 0);
        self.set_state(state);
    }

    /// The device whose model this vCPU is waiting for, if it is.
    pub fn blocked_on(&self) -> Option<Arc<str>> {
        if self.state() != VcpuThreadState::BlockedOnDevice {
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
