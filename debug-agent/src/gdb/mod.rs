//! GDB stubs: a `GdbSession` runs gdbstub's state machine for one partition (a multi-thread
//! target whose threads are its vCPUs) or one vCPU (a single-thread target that stops only that
//! vCPU), fed with raw GDB remote bytes from a host-link channel.
//!
//! The session owns a thread. Bytes from the link go in with [`GdbSession::input`]; bytes for
//! gdb come out through the [`GdbOutput`] callback. Closing the session (detach, dropped
//! connection) removes breakpoints and, by default, lets the guest run on. A session can also
//! end on its own (gdb sends `D` or `k`, the partition exits, or gdbstub rejects the bytes, e.g.
//! a packet larger than [`PACKET_SIZE`]); it then cleans up the same way and tells its owner
//! through the [`GdbEnded`] callback of [`GdbSession::start_notifying`].

mod arch;
pub mod fake;
mod handle;
mod monitor;
mod target;

pub use arch::{HvRegisters, HvX86_64, TARGET_XML};
pub use handle::{GuestHandle, LivePartition};
pub use target::{PartitionTarget, Stop};

use std::collections::VecDeque;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, select};
use gdbstub::common::Signal;
use gdbstub::conn::Connection;
use gdbstub::stub::state_machine::GdbStubStateMachine;
use gdbstub::stub::{DisconnectReason, GdbStubBuilder, GdbStubError};
use hv_core::Partition;

use arch::HvRegId;

/// Where a session's outgoing bytes go; returns false once the peer is gone.
pub type GdbOutput = Box<dyn FnMut(&[u8]) -> bool + Send>;

/// Called once, from the session thread, after a session ended on its own (not through
/// [`GdbSession::close`]) and the guest was detached; the argument says why.
pub type GdbEnded = Box<dyn FnOnce(String) + Send>;

/// The packet size we offer gdb (large, so memory moves in few packets).
pub const PACKET_SIZE: usize = 0x20000;

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
    input: Sender<Vec<u8>>,
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
    #[error("cannot start the gdb session thread: {0}")]
    Thread(#[from] std::io::Error),
}

impl GdbSession {
    /// Starts a session; `all` is every partition of the system (for `monitor partitions`).
    pub fn start(
        partition: Arc<Partition>,
        all: Arc<[Arc<Partition>]>,
        vcpu: Option<u32>,
        output: GdbOutput,
        options: GdbSessionOptions,
    ) -> Result<GdbSession, GdbSessionError> {
        Self::start_notifying(partition, all, vcpu, output, options, Box::new(|_| {}))
    }

    /// Like [`start`](Self::start), and calls `ended` if the session ends on its own.
    pub fn start_notifying(
        partition: Arc<Partition>,
        all: Arc<[Arc<Partition>]>,
        vcpu: Option<u32>,
        output: GdbOutput,
        options: GdbSessionOptions,
        ended: GdbEnded,
    ) -> Result<GdbSession, GdbSessionError> {
        if let Some(v) = vcpu
            && v as usize >= partition.vcpus.len()
        {
            return Err(GdbSessionError::NoSuchVcpu {
                partition: partition.name.clone(),
                vcpu: v,
            });
        }
        let (input_tx, input_rx) = crossbeam_channel::unbounded();
        let name = match vcpu {
            Some(v) => format!("gdb-{}.{v}", partition.name),
            None => format!("gdb-{}", partition.name),
        };
        let thread = std::thread::Builder::new().name(name).spawn(move || {
            if let Some(reason) = run_session(partition, all, vcpu, output, input_rx, options) {
                ended(reason);
            }
        })?;
        Ok(GdbSession {
            input: input_tx,
            thread: Some(thread),
        })
    }

    /// Feeds bytes that arrived from gdb.
    pub fn input(&self, bytes: &[u8]) {
        let _ = self.input.send(bytes.to_vec());
    }

    /// Ends the session (the connection or channel is gone) and waits for its cleanup.
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let (dead, _) = crossbeam_channel::bounded(0);
        self.input = dead;
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

/// gdbstub's connection: buffers a packet and hands it to the output at flush.
struct LinkConnection {
    buffer: Vec<u8>,
    output: GdbOutput,
    alive: bool,
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

/// Pulls the next input byte, blocking; None when the input side is closed.
fn next_byte(pending: &mut VecDeque<u8>, input: &Receiver<Vec<u8>>) -> Option<u8> {
    loop {
        if let Some(b) = pending.pop_front() {
            return Some(b);
        }
        pending.extend(input.recv().ok()?);
    }
}

/// How [`drive`] ended.
#[derive(Debug, PartialEq, Eq)]
enum Ending {
    /// The input side was closed ([`GdbSession::close`]): the owner knows.
    Closed,
    /// The session ended on its own, for this reason.
    Ended(String),
}

/// Runs one session to its end; Some(reason) when it ended on its own.
fn run_session(
    partition: Arc<Partition>,
    all: Arc<[Arc<Partition>]>,
    vcpu: Option<u32>,
    output: GdbOutput,
    input: Receiver<Vec<u8>>,
    options: GdbSessionOptions,
) -> Option<String> {
    let (events_tx, events) = crossbeam_channel::unbounded();
    partition.attach_debugger(vcpu, events_tx);
    let mut target = PartitionTarget::new(partition.clone(), all, vcpu);
    // gdb expects a stopped target on attach.
    target.stop_all();
    let connection = LinkConnection {
        buffer: Vec::with_capacity(PACKET_SIZE),
        output,
        alive: true,
    };
    // A bug in the stub or the target must not leave the guest stopped: a panic ends the
    // session like an error, and the detach below still runs.
    let driven = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        drive(&mut target, connection, &input, &events)
    }));
    let ending = match driven {
        Ok(Ok(ending)) => ending,
        Ok(Err(e)) => Ending::Ended(format!("gdb session error: {e}")),
        Err(_) => Ending::Ended("gdb session error: internal error (panic)".to_owned()),
    };
    // Whatever the ending, stop reading: bytes still queued are for a session that is over.
    drop(input);
    if let Ending::Ended(reason) = &ending {
        tracing::info!(partition = %partition.name, vcpu, "gdb session ended: {reason}");
    }
    partition.detach_debugger(vcpu);
    target.detach();
    if options.resume_on_detach {
        target.release_all();
    }
    match ending {
        Ending::Closed => None,
        Ending::Ended(reason) => Some(reason),
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
/// `input` as everything gdb sends, then closes the input as a dropped connection would; the
/// target is detached and released at the end, as in a real session. Returns what the stub
/// sent and how the session ended. Debug events never come (the handle has no vCPU threads);
/// the partition's state is polled as in a real session.
pub fn replay<H: GuestHandle>(handle: H, scope: Option<u32>, input: &[u8]) -> Replay {
    let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = sent.clone();
    let connection = LinkConnection {
        buffer: Vec::new(),
        output: Box::new(move |bytes| {
            sink.lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(bytes);
            true
        }),
        alive: true,
    };
    let (input_tx, input_rx) = crossbeam_channel::unbounded();
    let _ = input_tx.send(input.to_vec());
    drop(input_tx);
    // Kept open (and silent) for the whole run, as a real partition's would be.
    let (_events_tx, events) = crossbeam_channel::unbounded();
    let mut target = PartitionTarget::with_handle(handle, scope);
    target.stop_all();
    let ended = match drive(&mut target, connection, &input_rx, &events) {
        Ok(Ending::Closed) => None,
        Ok(Ending::Ended(reason)) => Some(reason),
        Err(e) => Some(format!("gdb session error: {e}")),
    };
    target.detach();
    target.release_all();
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

fn drive<H: GuestHandle>(
    target: &mut PartitionTarget<H>,
    connection: LinkConnection,
    input: &Receiver<Vec<u8>>,
    events: &Receiver<hv_core::partition::DebugStopEvent>,
) -> Result<Ending, String> {
    // A borrowed buffer: gdbstub grows an owned one without bound when a "packet" never ends;
    // with this one such input is a packet-buffer overflow that ends the session.
    let mut packet_buffer = vec![0u8; PACKET_SIZE];
    let stub = GdbStubBuilder::new(connection)
        .with_packet_buffer(&mut packet_buffer)
        .build()
        .map_err(|e| e.to_string())?;
    let mut machine = stub
        .run_state_machine(target)
        .map_err(|e: GdbStubError<_, _>| e.to_string())?;
    let mut pending = VecDeque::new();
    loop {
        machine = match machine {
            GdbStubStateMachine::Idle(gdb) => {
                let Some(byte) = next_byte(&mut pending, input) else {
                    return Ok(Ending::Closed);
                };
                gdb.incoming_data(target, byte).map_err(|e| e.to_string())?
            }
            GdbStubStateMachine::Running(gdb) => {
                if let Some(byte) = pending.pop_front() {
                    gdb.incoming_data(target, byte).map_err(|e| e.to_string())?
                } else {
                    let mut stop = None;
                    select! {
                        recv(input) -> bytes => match bytes {
                            Ok(bytes) => pending.extend(bytes),
                            Err(_) => return Ok(Ending::Closed),
                        },
                        recv(events) -> event => {
                            if let Ok(event) = event {
                                stop = target.on_debug_event(event);
                            }
                        },
                        default(Duration::from_millis(100)) => stop = target.poll_state(),
                    }
                    match stop {
                        Some(stop) => report(gdb, target, stop)?,
                        None => GdbStubStateMachine::Running(gdb),
                    }
                }
            }
            GdbStubStateMachine::CtrlCInterrupt(gdb) => {
                target.stop_all();
                let first = target.vcpus()[0];
                let stop = Stop::Signal(first, Signal::SIGINT);
                let reason_multi = stop.multi_reason();
                let reason_single = stop.single_reason();
                if target.scope.is_some() {
                    gdb.interrupt_handled(target, Some(reason_single))
                } else {
                    gdb.interrupt_handled(target, Some(reason_multi))
                }
                .map_err(|e| e.to_string())?
            }
            GdbStubStateMachine::Disconnected(gdb) => {
                return Ok(Ending::Ended(disconnect_reason(gdb.get_reason())));
            }
        };
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
