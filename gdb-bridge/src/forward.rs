//! One gdb TCP connection: open its session — a `gdb:` channel of the link, or in process
//! beside the agent — and forward bytes both ways (over the link: one frame per TCP read, one
//! TCP write per frame, one thread polling both sides), close it when gdb goes; or turn gdb
//! away with `E.<reason>` replies when the guest is not available.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hv_link::client::parse_event;
use hv_link::control::{
    ChannelClose, ChannelCloseParams, ChannelClosed, ChannelOpen, ChannelOpenParams,
    ChannelOpenResult, request_bytes,
};
use hv_link::handshake::client_handshake;
use hv_link::rpc::RequestId;
use hv_link::{ChannelId, ChannelName, FrameReader, FrameWriter, Message};

use crate::{BridgeEvent, PortEntry, Shared};

/// Bytes read from gdb per frame at most.
const READ_CHUNK: usize = 64 * 1024;
/// How long a refused gdb may stay silent before the bridge hangs up.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Packets answered with the error before hanging up on a refused gdb.
const REFUSE_PACKETS: usize = 8;
/// Limit for the agent's answers (handshake, `channel.open`) and for writes to gdb.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A forwarding connection, for shutdown.
pub(crate) struct ConnEntry {
    stream: TcpStream,
    thread: JoinHandle<()>,
}

impl ConnEntry {
    pub(crate) fn spawn(
        shared: Arc<Shared>,
        entry: PortEntry,
        stream: TcpStream,
    ) -> io::Result<ConnEntry> {
        let control = stream.try_clone()?;
        let thread = std::thread::Builder::new()
            .name(format!("gdb-bridge-conn-{}", entry.port))
            .spawn(move || serve(&shared, &entry, stream))?;
        Ok(ConnEntry {
            stream: control,
            thread,
        })
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Hang up on gdb; the connection's threads then close the channel and end.
    pub(crate) fn stop(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    pub(crate) fn join(self) {
        let _ = self.thread.join();
    }
}

/// Who holds a channel of this bridge.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Holder {
    port: u16,
    peer: Option<SocketAddr>,
    /// Its session is over and the channel is being released.
    closing: bool,
}

/// How long a new gdb waits for the previous holder of its guest to let go before it is
/// refused: a debugger that just left (gdb's `D`, or its hang-up) may reconnect before its old
/// connection has noticed the end. A holder that is already closing is waited for up to
/// [`CALL_TIMEOUT`] (its `channel.close` answer).
const HANDOVER_GRACE: Duration = Duration::from_secs(1);

/// Reserve `channel` for this connection unless this bridge already debugs the same guest.
fn reserve(
    shared: &Shared,
    channel: &ChannelName,
    port: u16,
    peer: Option<SocketAddr>,
) -> Result<(), String> {
    let start = Instant::now();
    let mut attached = shared.attached();
    while let Some((name, holder)) = attached.iter().find(|(n, _)| n.conflicts_with(channel)) {
        let limit = if holder.closing {
            CALL_TIMEOUT
        } else {
            HANDOVER_GRACE
        };
        let Some(left) = limit.checked_sub(start.elapsed()).filter(|d| !d.is_zero()) else {
            let who = holder
                .peer
                .map(|a| format!(" by gdb at {a}"))
                .unwrap_or_default();
            return Err(format!(
                "{channel} is not available: {name} is already being debugged through port {}{who}; one debugger per guest",
                holder.port
            ));
        };
        attached = shared
            .detached
            .wait_timeout(attached, left)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
    attached.insert(
        channel.clone(),
        Holder {
            port,
            peer,
            closing: false,
        },
    );
    Ok(())
}

/// The end of a connection's hold on its channel.
struct Release<'a> {
    shared: &'a Shared,
    channel: &'a ChannelName,
}

impl Release<'_> {
    /// The session is over; the channel goes soon (a new gdb for the guest waits for it).
    fn closing(&self) {
        if let Some(h) = self.shared.attached().get_mut(self.channel) {
            h.closing = true;
        }
    }

    /// The agent has let the guest go: the channel is free for the next gdb.
    fn released(self) {
        self.shared.attached().remove(self.channel);
        self.shared.detached.notify_all();
    }
}

fn serve(shared: &Arc<Shared>, entry: &PortEntry, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let peer = stream.peer_addr().ok();
    let channel = entry.channel();
    let refused = |reason: String, stream: TcpStream| {
        shared.emit(&BridgeEvent::Refused {
            port: entry.port,
            channel: channel.clone(),
            peer,
            reason: reason.clone(),
        });
        refuse_gdb(stream, &reason);
    };
    if let Err(reason) = reserve(shared, &channel, entry.port, peer) {
        return refused(reason, stream);
    }
    let opened = if !shared.client.is_connected() {
        Err("the hypervisor's host link is closed".to_owned())
    } else if let Some(local) = &shared.in_process {
        open_in_process(shared, local.as_ref(), &channel, &stream).map(Opened::InProcess)
    } else {
        open_session(shared, &channel).map(Opened::Link)
    };
    let release = Release {
        shared,
        channel: &channel,
    };
    let opened = match opened {
        Ok(s) => s,
        Err(reason) => {
            release.released();
            return refused(reason, stream);
        }
    };
    shared.emit(&BridgeEvent::Attached {
        port: entry.port,
        channel: channel.clone(),
        peer,
    });
    match opened {
        Opened::Link(session) => forward(session, stream, release),
        Opened::InProcess(session) => forward_in_process(session, stream, release),
    }
    shared.emit(&BridgeEvent::Detached {
        port: entry.port,
        channel,
        peer,
    });
}

/// A session, over the link or in this process.
enum Opened {
    Link(Session),
    InProcess(InProcessLink),
}

/// A session opened in this process ([`crate::InProcessGdb`]).
struct InProcessLink {
    session: Box<dyn crate::InProcessSession>,
    /// Set when the session ended on its own (before gdb's socket is shut for reading).
    ended: Arc<AtomicBool>,
}

fn open_in_process(
    shared: &Shared,
    local: &dyn crate::InProcessGdb,
    channel: &ChannelName,
    stream: &TcpStream,
) -> Result<InProcessLink, String> {
    let clone = || {
        stream
            .try_clone()
            .map_err(|e| format!("cannot clone the gdb socket: {e}"))
    };
    let mut to_gdb = clone()?;
    let _ = to_gdb.set_write_timeout(Some(CALL_TIMEOUT));
    let reader = clone()?;
    let ended = Arc::new(AtomicBool::new(false));
    let flag = ended.clone();
    let session = local.open(
        channel,
        &shared.hello.client,
        Box::new(move |bytes| to_gdb.write_all(bytes).is_ok()),
        // Wakes the forwarding thread, which releases the guest and then hangs up.
        Box::new(move |_| {
            flag.store(true, Ordering::SeqCst);
            let _ = reader.shutdown(Shutdown::Read);
        }),
    )?;
    Ok(InProcessLink { session, ended })
}

/// [`forward`] for a session in this process: gdb's bytes go into the stub on this thread, and
/// the stub writes its replies to gdb itself. When either side ends: detach, release, and only
/// then hang up on gdb (which may reconnect at once).
fn forward_in_process(link: InProcessLink, mut from_gdb: TcpStream, release: Release<'_>) {
    let mut buf = vec![0u8; READ_CHUNK];
    while !link.ended.load(Ordering::SeqCst) {
        match from_gdb.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => link.session.input(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    release.closing();
    link.session.close();
    release.released();
    let _ = from_gdb.shutdown(Shutdown::Both);
}

/// A gdb channel on its own host-link connection: its reader thread writes gdb's replies
/// straight to the TCP socket (no hand-off through a shared router), and one slow debugger
/// cannot hold up another.
struct Session {
    reader: FrameReader,
    writer: FrameWriter,
    id: ChannelId,
}

/// Request ids on a session connection.
const OPEN_ID: i64 = 1;
const CLOSE_ID: i64 = 2;

fn open_session(shared: &Shared, channel: &ChannelName) -> Result<Session, String> {
    let closed = |e: &dyn std::fmt::Display| format!("the hypervisor's host link is closed ({e})");
    let mut conn = hv_link::connect(&shared.link).map_err(|e| closed(&e))?;
    client_handshake(&mut conn, &shared.hello, Some(CALL_TIMEOUT)).map_err(|e| e.to_string())?;
    let params = ChannelOpenParams {
        name: channel.clone(),
    };
    let request = request_bytes::<ChannelOpen>(&RequestId::Number(OPEN_ID), &params)
        .map_err(|e| e.to_string())?;
    conn.send_frame(ChannelId::CONTROL, &request)
        .map_err(|e| closed(&e))?;
    conn.set_read_timeout(Some(CALL_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let id = loop {
        let frame = conn
            .recv_frame()
            .map_err(|e| closed(&e))?
            .ok_or_else(|| closed(&"end of stream"))?;
        if frame.channel != ChannelId::CONTROL {
            continue;
        }
        if let Ok(Message::Response(r)) = Message::parse(&frame.payload)
            && r.id == RequestId::Number(OPEN_ID)
        {
            let result = r.outcome.map_err(|e| e.message)?;
            let opened: ChannelOpenResult =
                serde_json::from_value(result).map_err(|e| e.to_string())?;
            break opened.id;
        }
    };
    conn.set_read_timeout(None).map_err(|e| e.to_string())?;
    let (reader, writer) = conn.split();
    Ok(Session { reader, writer, id })
}

/// Forward until gdb or the channel closes; then close the channel (waiting for the agent to
/// detach), release it, and only then hang up on gdb: a debugger that sees the hang-up may
/// reconnect at once and find the guest free.
fn forward(session: Session, from_gdb: TcpStream, release: Release<'_>) {
    // `Bridge::start` refuses serial links, so every session is on a socket.
    if session.reader.pollable_fd().is_none() {
        tracing::warn!("gdb-bridge: a session on a link that cannot be polled; closing it");
        session.writer.shutdown();
        release.released();
        return;
    }
    forward_polled(session, from_gdb, release)
}

/// What to do after a frame from the link.
enum Next {
    Go,
    /// The agent or the link ended the session.
    Ended,
}

/// Why forwarding stopped.
enum Stopped {
    /// gdb hung up (or its socket failed): the channel is still open.
    Gdb,
    /// The agent ended the session (after letting the guest go) or the link was lost.
    Agent,
}

/// [`forward`] for a socket link: one thread waits on gdb's socket and the link together
/// (`poll`), so neither direction needs a thread of its own.
fn forward_polled(session: Session, from_gdb: TcpStream, release: Release<'_>) {
    let Session {
        mut reader,
        writer,
        id,
    } = session;
    let _ = from_gdb.set_write_timeout(Some(CALL_TIMEOUT));
    let to_gdb = match from_gdb.try_clone() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("gdb-bridge: cannot clone the gdb socket: {e}");
            writer.shutdown();
            release.released();
            return;
        }
    };
    let mut to_gdb = ToGdbSocket {
        stream: to_gdb,
        alive: true,
        id,
    };
    let stopped = pump(&mut reader, &writer, &from_gdb, &mut to_gdb);
    release.closing();
    if let Stopped::Gdb = stopped {
        // gdb is gone: close and wait for the answer (the agent has detached when it comes).
        let close =
            request_bytes::<ChannelClose>(&RequestId::Number(CLOSE_ID), &ChannelCloseParams { id });
        if close
            .map(|b| writer.send_frame(ChannelId::CONTROL, &b))
            .is_ok()
        {
            // Until the answer, the end of the link, or an error.
            while let Ok(Some(frame)) = reader.recv_frame_ref() {
                if let Next::Ended = to_gdb.on_frame(frame) {
                    break;
                }
            }
        }
    }
    // Release, then hang up on gdb, which may reconnect the moment it sees the hang-up.
    writer.shutdown();
    release.released();
    let _ = from_gdb.shutdown(Shutdown::Both);
}

/// Where the agent's frames go: gdb's bytes to gdb's socket (while gdb is there); the end of
/// the session ends forwarding.
struct ToGdbSocket {
    stream: TcpStream,
    alive: bool,
    id: ChannelId,
}

impl ToGdbSocket {
    fn on_frame(&mut self, frame: hv_link::FrameRef<'_>) -> Next {
        if frame.channel == self.id {
            if self.alive && self.stream.write_all(frame.payload).is_err() {
                self.alive = false;
            }
        } else if frame.channel == ChannelId::CONTROL && ends_session(frame.payload, self.id) {
            return Next::Ended;
        }
        Next::Go
    }
}

/// Copies both ways until one side ends.
fn pump(
    reader: &mut FrameReader,
    writer: &FrameWriter,
    mut from_gdb: &TcpStream,
    to_gdb: &mut ToGdbSocket,
) -> Stopped {
    use std::os::fd::AsRawFd;
    let mut buf = vec![0u8; READ_CHUNK];
    while let Ok((gdb_ready, link_ready)) = reader.wait_readable_with(from_gdb.as_raw_fd()) {
        if link_ready {
            loop {
                match reader.try_recv_frame_ref() {
                    Ok(hv_link::TryRecv::Frame(f)) => {
                        if let Next::Ended = to_gdb.on_frame(f) {
                            return Stopped::Agent;
                        }
                    }
                    Ok(hv_link::TryRecv::Empty) => break,
                    Ok(hv_link::TryRecv::Closed) | Err(_) => return Stopped::Agent,
                }
            }
        }
        if !gdb_ready {
            continue;
        }
        let n = match from_gdb.read(&mut buf) {
            Ok(0) => return Stopped::Gdb,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Stopped::Gdb,
        };
        if writer.send_frame(to_gdb.id, &buf[..n]).is_err() {
            return Stopped::Gdb;
        }
    }
    Stopped::Agent
}

/// True for the answer to our `channel.close`, or a `channel.closed` notification for `id`.
fn ends_session(payload: &[u8], id: ChannelId) -> bool {
    match Message::parse(payload) {
        Ok(Message::Response(r)) => r.id == RequestId::Number(CLOSE_ID),
        Ok(Message::Notification(n)) => {
            parse_event::<ChannelClosed>(&n).is_some_and(|p| p.is_ok_and(|p| p.id == id))
        }
        _ => false,
    }
}

/// `$<payload>#<checksum>`.
pub(crate) fn gdb_packet(payload: &[u8]) -> Vec<u8> {
    let sum = payload.iter().fold(0u8, |a, b| a.wrapping_add(*b));
    let mut p = Vec::with_capacity(payload.len() + 4);
    p.push(b'$');
    p.extend_from_slice(payload);
    p.extend_from_slice(format!("#{sum:02x}").as_bytes());
    p
}

/// The `E.<text>` error reply gdb prints ("Remote failure reply: E.<text>"), with the
/// characters the remote protocol reserves replaced.
pub(crate) fn error_packet(reason: &str) -> Vec<u8> {
    let text: String = reason
        .chars()
        .map(|c| match c {
            '$' | '#' | '}' | '*' => '?',
            c if c.is_ascii_graphic() || c == ' ' => c,
            _ => '?',
        })
        .collect();
    gdb_packet(format!("E.{text}").as_bytes())
}

/// Counts complete packets (`$…#xx`) in a byte stream; acks, nacks and Ctrl-C are skipped.
#[derive(Debug, Default)]
pub(crate) struct PacketCounter {
    state: Scan,
}

#[derive(Debug, Default, Clone, Copy)]
enum Scan {
    #[default]
    Idle,
    Body,
    Sum(u8),
}

impl PacketCounter {
    /// Feeds bytes; returns how many packets completed.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> usize {
        let mut done = 0;
        for &b in bytes {
            self.state = match (self.state, b) {
                (Scan::Idle, b'$') => Scan::Body,
                (Scan::Idle, _) => Scan::Idle,
                (Scan::Body, b'#') => Scan::Sum(0),
                (Scan::Body, _) => Scan::Body,
                (Scan::Sum(0), _) => Scan::Sum(1),
                (Scan::Sum(_), _) => {
                    done += 1;
                    Scan::Idle
                }
            };
        }
        done
    }
}

/// Answer every packet gdb sends with `E.<reason>` (gdb prints it), then hang up.
fn refuse_gdb(mut stream: TcpStream, reason: &str) {
    let _ = stream.set_read_timeout(Some(REFUSE_TIMEOUT));
    let reply = {
        let mut r = b"+".to_vec();
        r.extend_from_slice(&error_packet(reason));
        r
    };
    let mut counter = PacketCounter::default();
    let mut answered = 0;
    let mut buf = [0u8; 4096];
    while answered < REFUSE_PACKETS {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for _ in 0..counter.feed(&buf[..n]) {
            if stream.write_all(&reply).is_err() {
                return;
            }
            answered += 1;
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
}
