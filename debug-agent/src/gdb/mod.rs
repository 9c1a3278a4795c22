//! GDB stubs: a `GdbSession` runs gdbstub's state machine for one partition (a multi-thread
//! target whose threads are its vCPUs) or one vCPU (a single-thread target that stops only that
//! vCPU), fed with raw GDB remote bytes from a host-link channel.
//!
//! Bytes from the link go in with [`GdbSession::input`] and are handled right there, on the
//! caller's thread (the link connection's reader): a packet for a stopped target (registers,
//! memory, breakpoints, resume) costs no hand-off to another thread, and after a resume that
//! thread waits a little ([`STOP_WAIT`]) for the stop and reports it itself (a step, a breakpoint
//! near by: the stopped vCPU hands its event straight to it). Bytes for gdb come out through the
//! [`GdbOutput`] callback, one call per reply. The session also owns a thread that waits for
//! what happens while the target runs longer (a vCPU's debug stop, the partition crashing or
//! exiting) and reports it. Closing the session (detach, dropped connection) removes
//! breakpoints and, by default, lets the guest run on. A session can also end on its own (gdb
//! sends `D` or `k`, the partition exits, or gdbstub rejects the bytes, e.g. a packet larger
//! than [`PACKET_SIZE`]); it then cleans up the same way and tells its owner through the
//! [`GdbEnded`] callback of [`GdbSession::start_notifying`].

mod arch;
pub mod fake;
mod filter;
mod handle;
mod local;
mod monitor;
mod target;

pub use arch::{HvRegisters, HvX86_64, TARGET_XML};
pub use handle::{GuestHandle, LivePartition};
pub use local::{LocalGdb, LocalGdbSession};
pub use target::{PartitionTarget, Stop};

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, select};
use gdbstub::common::Signal;
use gdbstub::conn::Connection;
use gdbstub::stub::state_machine::GdbStubStateMachine;
use gdbstub::stub::{DisconnectReason, GdbStubBuilder, GdbStubError};
use hv_core::PartitionHandle;
use hv_core::partition::{DebugSink, DebugStopEvent};

use arch::HvRegId;
use filter::{PacketFilter, Pass};

/// Where a session's outgoing bytes go; returns false once the peer is gone.
pub type GdbOutput = Box<dyn FnMut(&[u8]) -> bool + Send>;

/// Called once, from the session thread, after a session ended on its own (not through
/// [`GdbSession::close`]) and the guest was detached; the argument says why.
pub type GdbEnded = Box<dyn FnOnce(String) + Send>;

/// The packet size we offer gdb (large, so memory moves in few packets).
pub const PACKET_SIZE: usize = 0x20000;

/// How often the partition's state (crash, exit) is checked while the target runs.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How long the thread that fed a resume waits for its stop before leaving it to the session
/// thread (gdb's Ctrl-C waits as long at most).
pub const STOP_WAIT: Duration = Duration::from_millis(2);

/// Session options.
#[derive(Debug, Clone, Copy)]
pub struct GdbSessionOptions {
    /// Let the guest run on when gdb detaches or the connection drops.
    pub resume_on_detach: bool,
}

impl Default for GdbSessionOptions {
    fn default() -> Self {
        GdbSessionOptions {
            resume_on_detach: true,
        }
    }
}

/// A running gdb session on one partition or one vCPU.
pub struct GdbSession {
    driver: Arc<Mutex<Driver<LivePartition>>>,
    stops: Stops,
    /// Dropped to close the session: the session thread then cleans up and ends.
    wake: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for GdbSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GdbSession").finish_non_exhaustive()
    }
}

/// Errors starting a session.
#[derive(Debug, thiserror::Error)]
pub enum GdbSessionError {
    /// No such vCPU.
    #[error("partition {partition} has no vCPU {vcpu}")]
    NoSuchVcpu {
        /// Partition name.
        partition: String,
        /// Requested vCPU.
        vcpu: u32,
    },
    /// The session thread could not start.
    #[error("cannot start the gdb session thread")]
    Thread(#[from] std::io::Error),
}

impl GdbSession {
    /// Starts a session; `all` is every partition of the system (for `monitor partitions`).
    pub fn start(
        partition: PartitionHandle,
        all: Arc<[PartitionHandle]>,
        vcpu: Option<u32>,
        output: GdbOutput,
        options: GdbSessionOptions,
    ) -> Result<GdbSession, GdbSessionError> {
        Self::start_notifying(partition, all, vcpu, output, options, Box::new(|_| {}))
    }

    /// Like [`start`](Self::start), and calls `ended` if the session ends on its own.
    pub fn start_notifying(
        partition: PartitionHandle,
        all: Arc<[PartitionHandle]>,
        vcpu: Option<u32>,
        output: GdbOutput,
        options: GdbSessionOptions,
        ended: GdbEnded,
    ) -> Result<GdbSession, GdbSessionError> {
        if let Some(v) = vcpu
            && v as usize >= partition.vcpus().len()
        {
            return Err(GdbSessionError::NoSuchVcpu {
                partition: partition.name().to_owned(),
                vcpu: v,
            });
        }
        let name = match vcpu {
            Some(v) => format!("gdb-{}.{v}", partition.name()),
            None => format!("gdb-{}", partition.name()),
        };
        let (stops, sink) = Stops::new();
        partition.attach_debugger(vcpu, sink);
        let target = PartitionTarget::new(partition.clone(), all, vcpu);
        let driver = Arc::new(Mutex::new(Driver::new(
            target,
            LinkConnection::new(output),
            stops.clone(),
        )));
        let events = stops.to_session.clone();
        let (wake_tx, wake_rx) = crossbeam_channel::bounded(1);
        let waiter = driver.clone();
        let owner = partition.clone();
        let spawned = std::thread::Builder::new().name(name).spawn(move || {
            stop_on_attach(&partition, vcpu);
            let reason = wait(&waiter, &wake_rx, events);
            // Whatever the ending: no more input is taken, the guest is let go.
            partition.detach_debugger(vcpu);
            lock(&waiter).finish(options.resume_on_detach);
            if let Some(reason) = reason {
                tracing::info!(partition = %partition.name(), vcpu, "gdb session ended: {reason}");
                ended(reason);
            }
        });
        let thread = match spawned {
            Ok(t) => t,
            Err(e) => {
                // Nothing was stopped or changed yet.
                owner.detach_debugger(vcpu);
                return Err(e.into());
            }
        };
        Ok(GdbSession {
            driver,
            stops,
            wake: Some(wake_tx),
            thread: Some(thread),
        })
    }

    /// Feeds bytes that arrived from gdb; they are handled before this returns (replies go
    /// out through the output). A resume's stop is reported from here too if it comes within
    /// [`STOP_WAIT`], else later by the session thread.
    pub fn input(&self, bytes: &[u8]) {
        self.stops.route_to_input(true);
        let (ended, running) = {
            let mut d = lock(&self.driver);
            guarded(&mut d, |d| d.input(bytes));
            (d.ending.is_some(), d.is_running())
        };
        let first = if running && !ended {
            self.stops.to_input.recv_timeout(STOP_WAIT).ok()
        } else {
            None
        };
        self.stops.route_to_input(false);
        // With the route switched back, nothing more arrives here: take what did (most packets
        // bring none, and cost no second lock of the session).
        let mut arrived = first
            .into_iter()
            .chain(self.stops.to_input.try_iter())
            .peekable();
        let ended = if arrived.peek().is_some() {
            let mut d = lock(&self.driver);
            for event in arrived {
                guarded(&mut d, |d| d.event(event));
            }
            d.ending.is_some()
        } else {
            ended
        };
        if ended && let Some(wake) = &self.wake {
            let _ = wake.try_send(());
        }
    }

    /// Ends the session (the connection or channel is gone) and waits for its cleanup.
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.wake = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for GdbSession {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn lock<H: GuestHandle>(driver: &Mutex<Driver<H>>) -> MutexGuard<'_, Driver<H>> {
    driver.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `f` on the driver; a panic in the stub or the target ends the session like an error
/// (and the guest is still detached), it never leaves the guest stopped.
fn guarded<H: GuestHandle>(driver: &mut Driver<H>, f: impl FnOnce(&mut Driver<H>)) {
    if catch_unwind(AssertUnwindSafe(|| f(&mut *driver))).is_err() {
        driver.end("gdb session error: internal error (panic)".to_owned());
    }
}

/// A session's debug stops. The stopped vCPU hands its event (on its own thread, once parked) to
/// the thread feeding gdb's packets while one does ([`GdbSession::input`], which then waits a
/// little for a resume's stop and reports it without waking anybody), else to the session thread.
#[derive(Clone)]
struct Stops {
    /// Whether stops go to `to_input` now. Held while a stop is routed, so that once it is
    /// switched off no stop can still arrive there unseen.
    to_input_now: Arc<Mutex<bool>>,
    to_input: Receiver<DebugStopEvent>,
    to_session: Receiver<DebugStopEvent>,
}

impl Stops {
    /// The queues, and the sink that fills them (for `attach_debugger`). When the partition
    /// drops the sink (the session detached, or another debugger of its scope replaced it),
    /// both queues disconnect.
    fn new() -> (Stops, DebugSink) {
        let (input_tx, to_input) = crossbeam_channel::unbounded();
        let (session_tx, to_session) = crossbeam_channel::unbounded();
        let to_input_now = Arc::new(Mutex::new(false));
        let route = to_input_now.clone();
        let sink: DebugSink = Arc::new(move |event| {
            let to_input = route.lock().unwrap_or_else(|p| p.into_inner());
            let tx = if *to_input { &input_tx } else { &session_tx };
            let _ = tx.send(event);
        });
        let stops = Stops {
            to_input_now,
            to_input,
            to_session,
        };
        (stops, sink)
    }

    fn route_to_input(&self, on: bool) {
        *self.to_input_now.lock().unwrap_or_else(|p| p.into_inner()) = on;
    }

    /// Every stop queued so far, on either side.
    fn queued(&self) -> impl Iterator<Item = DebugStopEvent> + '_ {
        self.to_input.try_iter().chain(self.to_session.try_iter())
    }
}

/// gdb expects a stopped target on attach: asks the session's vCPUs to stop and waits for
/// them without holding the session, so gdb's first packets are answered meanwhile (the first
/// packet that needs the target waits for the same stop, `Driver::start`).
fn stop_on_attach(partition: &PartitionHandle, scope: Option<u32>) {
    let vcpus: Vec<u32> = match scope {
        Some(v) => vec![v],
        None => (0..partition.vcpus().len() as u32).collect(),
    };
    for &v in &vcpus {
        if let Ok(vcpu) = partition.vcpu(v) {
            vcpu.request_stop();
        }
    }
    partition.wait_vcpus_parked(&vcpus, target::STOP_TIMEOUT);
}

/// The session thread: notes the attach stop done, then reports what happens while the target
/// runs, until the session ends (Some(reason)) or is closed (None).
fn wait(
    driver: &Mutex<Driver<LivePartition>>,
    wake: &Receiver<()>,
    mut events: Receiver<DebugStopEvent>,
) -> Option<String> {
    guarded(&mut lock(driver), |d| d.start());
    loop {
        if let Some(reason) = lock(driver).ending.clone() {
            return Some(reason);
        }
        select! {
            recv(wake) -> m => if m.is_err() {
                return None;
            },
            recv(events) -> event => match event {
                Ok(event) => guarded(&mut lock(driver), |d| d.event(event)),
                // The partition dropped our sink (another debugger of the same scope).
                Err(_) => events = crossbeam_channel::never(),
            },
            default(POLL_INTERVAL) => guarded(&mut lock(driver), |d| d.poll()),
        }
    }
}

/// gdbstub's connection: buffers a packet and hands it to the output at flush.
struct LinkConnection {
    buffer: Vec<u8>,
    output: GdbOutput,
    alive: bool,
}

impl LinkConnection {
    fn new(output: GdbOutput) -> Self {
        LinkConnection {
            buffer: Vec::with_capacity(PACKET_SIZE),
            output,
            alive: true,
        }
    }
}

impl Connection for LinkConnection {
    type Error = &'static str;

    fn write(&mut self, byte: u8) -> Result<(), Self::Error> {
        self.buffer.push(byte);
        Ok(())
    }

    fn write_all(&mut self, bytes: &[u8]) -> Result<(), Self::Error> {
        self.buffer.extend_from_slice(bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        if !self.buffer.is_empty() {
            self.alive = (self.output)(&self.buffer) && self.alive;
            self.buffer.clear();
        }
        if self.alive {
            Ok(())
        } else {
            Err("gdb connection closed")
        }
    }
}

type Machine<H> = GdbStubStateMachine<'static, PartitionTarget<H>, LinkConnection>;

/// gdbstub's state machine with its target: fed by whichever thread has news (the link reader
/// with gdb's bytes, the session thread with a stop), one at a time.
struct Driver<H: GuestHandle> {
    /// None once the session is over.
    machine: Option<Machine<H>>,
    target: PartitionTarget<H>,
    filter: PacketFilter,
    /// The stop on attach was done.
    started: bool,
    /// Debug stops that came while the target was stopped: reported at the next resume.
    pending: VecDeque<DebugStopEvent>,
    /// The session's debug stops (shared with the threads that report them), drained when an
    /// interrupt stop supersedes the steps still in flight.
    stops: Stops,
    /// Why the session ended on its own.
    ending: Option<String>,
}

impl<H: GuestHandle> Driver<H> {
    fn new(target: PartitionTarget<H>, connection: LinkConnection, stops: Stops) -> Self {
        let mut driver = Driver {
            machine: None,
            target,
            filter: PacketFilter::new(PACKET_SIZE),
            started: false,
            pending: VecDeque::new(),
            stops,
            ending: None,
        };
        let machine = GdbStubBuilder::new(connection)
            .packet_buffer_size(PACKET_SIZE)
            .build()
            .map_err(|e| e.to_string())
            .and_then(|stub| {
                stub.run_state_machine(&mut driver.target)
                    .map_err(|e: GdbStubError<_, _>| e.to_string())
            });
        match machine {
            Ok(m) => driver.machine = Some(m),
            Err(e) => driver.end(format!("gdb session error: {e}")),
        }
        driver
    }

    /// gdb expects a stopped target on attach: stops it, once, before anything else.
    fn start(&mut self) {
        if !self.started {
            self.started = true;
            self.target.stop_all();
        }
    }

    fn end(&mut self, reason: String) {
        self.machine = None;
        self.ending.get_or_insert(reason);
    }

    fn input(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            if self.machine.is_none() {
                return;
            }
            if let Err(e) = self.feed(byte) {
                self.end(format!("gdb session error: {e}"));
            }
        }
    }

    fn feed(&mut self, byte: u8) -> Result<(), String> {
        // gdb's first packets (what the stub supports) are answered at once; the first one
        // that may look at the target waits for the attach stop. Under heavy load a park can
        // outlast gdb's wait for the ack of its first packet, and gdb then sends it again
        // (and takes the second reply for the answer to its next packet).
        if self.filter.next_byte_ends_packet_for_target() {
            self.start();
        }
        let pass = self.filter.push(byte)?;
        // gdbstub ignores the length an M or X packet declares: the target compares it with
        // the data it is handed.
        self.target.declared_write = self.filter.declared_write();
        match pass {
            Pass::Byte(byte) => self.pump(byte),
            Pass::Held => Ok(()),
            Pass::Bytes(bytes) => bytes.into_iter().try_for_each(|b| self.pump(b)),
        }
    }

    fn pump(&mut self, byte: u8) -> Result<(), String> {
        let next = match self.machine.take() {
            Some(GdbStubStateMachine::Idle(gdb)) => gdb.incoming_data(&mut self.target, byte),
            Some(GdbStubStateMachine::Running(gdb)) => gdb.incoming_data(&mut self.target, byte),
            // `settle` never leaves the machine in another state.
            Some(other) => Ok(other),
            None => return Ok(()),
        };
        self.settle(next.map_err(|e| e.to_string())?)
    }

    fn is_running(&self) -> bool {
        matches!(self.machine, Some(GdbStubStateMachine::Running(_)))
    }

    /// A debug stop of a vCPU.
    fn event(&mut self, event: DebugStopEvent) {
        if !self.is_running() && target::is_step(&event) {
            // gdb already has a stop for the resume that began this step (an interrupt, or
            // another vCPU's breakpoint): reporting it at the next resume would be a stray
            // SIGTRAP at a pc gdb did not step from.
            return;
        }
        self.pending.push_back(event);
        if self.is_running()
            && let Some(machine) = self.machine.take()
            && let Err(e) = self.settle(machine)
        {
            self.end(format!("gdb session error: {e}"));
        }
    }

    /// While running: reports a crash or exit of the partition.
    fn poll(&mut self) {
        if !self.is_running() {
            return;
        }
        let Some(stop) = self.target.poll_state() else {
            return;
        };
        let Some(GdbStubStateMachine::Running(gdb)) = self.machine.take() else {
            return;
        };
        let settled = report(gdb, &mut self.target, stop).and_then(|m| self.settle(m));
        if let Err(e) = settled {
            self.end(format!("gdb session error: {e}"));
        }
    }

    /// Takes the machine to a state that waits for input (Idle, or Running with no stop
    /// pending): handles Ctrl-C, reports pending stops, notes a disconnect.
    fn settle(&mut self, mut machine: Machine<H>) -> Result<(), String> {
        loop {
            machine = match machine {
                GdbStubStateMachine::CtrlCInterrupt(gdb) => {
                    self.target.stop_all();
                    self.drop_superseded_steps();
                    let first = self.target.vcpus()[0];
                    let stop = Stop::Signal(first, Signal::SIGINT);
                    if self.target.scope.is_some() {
                        gdb.interrupt_handled(&mut self.target, Some(stop.single_reason()))
                    } else {
                        gdb.interrupt_handled(&mut self.target, Some(stop.multi_reason()))
                    }
                    .map_err(|e| e.to_string())?
                }
                GdbStubStateMachine::Disconnected(gdb) => {
                    self.end(disconnect_reason(gdb.get_reason()));
                    return Ok(());
                }
                GdbStubStateMachine::Running(gdb) => {
                    let Some(event) = self.pending.pop_front() else {
                        self.machine = Some(GdbStubStateMachine::Running(gdb));
                        return Ok(());
                    };
                    match self.target.on_debug_event(event) {
                        Some(stop) => report(gdb, &mut self.target, stop)?,
                        None => GdbStubStateMachine::Running(gdb),
                    }
                }
                idle => {
                    self.machine = Some(idle);
                    return Ok(());
                }
            };
        }
    }

    /// After an interrupt stopped every vCPU: the completions of steps still in flight (sent
    /// before their vCPUs parked, so already queued) are not reported at the next resume.
    fn drop_superseded_steps(&mut self) {
        self.pending.extend(self.stops.queued());
        self.pending.retain(|e| !target::is_step(e));
    }

    /// The session is over: no more input; breakpoints and debug controls go, and the guest
    /// runs on if `resume`.
    fn finish(&mut self, resume: bool) {
        self.machine = None;
        self.target.detach();
        if resume {
            self.target.release_all();
        }
    }
}

/// What [`replay`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    /// Everything the stub sent to gdb.
    pub output: Vec<u8>,
    /// Why the session ended on its own; None when it was still going when the input ran out.
    pub ended: Option<String>,
}

/// Runs a whole session over `handle` (a [`fake::FakeGuest`] in tests and fuzzing) with
/// `input` as everything gdb sends, then closes it as a dropped connection would; the
/// target is detached and released at the end, as in a real session. Returns what the stub
/// sent and how the session ended. Debug events never come (the handle has no vCPU threads).
pub fn replay<H: GuestHandle>(handle: H, scope: Option<u32>, input: &[u8]) -> Replay {
    let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = sent.clone();
    let connection = LinkConnection::new(Box::new(move |bytes| {
        sink.lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(bytes);
        true
    }));
    let mut driver = Driver::new(
        PartitionTarget::with_handle(handle, scope),
        connection,
        Stops::new().0,
    );
    driver.start();
    driver.input(input);
    let ended = driver.ending.clone();
    driver.finish(true);
    let output = std::mem::take(&mut *sent.lock().unwrap_or_else(|p| p.into_inner()));
    Replay { output, ended }
}

fn disconnect_reason(reason: DisconnectReason) -> String {
    match reason {
        DisconnectReason::Disconnect => "gdb detached".to_owned(),
        DisconnectReason::Kill => "gdb killed the session".to_owned(),
        DisconnectReason::TargetExited(code) => format!("the partition exited with code {code}"),
        DisconnectReason::TargetTerminated(signal) => {
            format!("the partition was terminated ({signal})")
        }
    }
}

type Running<'a, H> = gdbstub::stub::state_machine::GdbStubStateMachineInner<
    'a,
    gdbstub::stub::state_machine::state::Running,
    PartitionTarget<H>,
    LinkConnection,
>;

fn report<'a, H: GuestHandle>(
    gdb: Running<'a, H>,
    target: &mut PartitionTarget<H>,
    stop: Stop,
) -> Result<GdbStubStateMachine<'a, PartitionTarget<H>, LinkConnection>, String> {
    let expedited = stop.vcpu().map(|v| target.expedited(v)).unwrap_or_default();
    let mut regs = expedited
        .iter()
        .map(|(id, bytes)| (HvRegId(*id), &bytes[..]));
    let next = if target.scope.is_some() {
        gdb.report_stop_with_regs(target, stop.single_reason(), &mut regs)
    } else {
        gdb.report_stop_with_regs(target, stop.multi_reason(), &mut regs)
    };
    next.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests;
