//! Blocking transports: addresses, listeners, connections split into a reader and a writer.
//!
//! Addresses: `unix:<path>` (default), `tcp:127.0.0.1:<port>` (loopback only, token required),
//! `pty` (server: allocate a pty pair; clients open the slave with `serial:<path>`).

mod paths;
mod stream;

use std::fmt;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use paths::{
    RUNTIME_SUBDIR, RunningSystem, SOCKET_EXT, default_link_addr, default_link_path,
    default_token_path, ensure_private_dir, find_system, find_system_in, generate_token,
    list_systems, list_systems_in, read_token_file, runtime_dir, validate_system_name,
    write_token_file,
};
use stream::{PtyMaster, SerialStream, Stream};

use crate::channel::ChannelId;
use crate::frame::{
    Frame, FrameDecoder, FrameEncoder, FrameError, FrameHeader, FrameRef, MAX_PAYLOAD, checked_len,
};

/// Transport failures: bad addresses, refused binds, I/O errors, malformed frames.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The address string does not parse.
    #[error("bad link address {addr:?}: {reason}")]
    BadAddress {
        /// The rejected string.
        addr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// TCP listeners bind loopback addresses only.
    #[error("refusing to listen on {addr}: the TCP link listens on loopback addresses only")]
    NotLoopback {
        /// The rejected address.
        addr: SocketAddr,
    },
    /// A live server already owns the Unix socket path.
    #[error("{}: another system is already serving on this socket", path.display())]
    AddressInUse {
        /// The socket path.
        path: PathBuf,
    },
    /// The path exists and is not a socket (left alone).
    #[error("{}: exists and is not a socket; not replacing it", path.display())]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// The operation does not apply to this kind of address (e.g. `connect` to `pty`).
    #[error("cannot {op} {addr}: {hint}")]
    Unsupported {
        /// `bind` or `connect`.
        op: &'static str,
        /// The address.
        addr: String,
        /// What to use instead.
        hint: &'static str,
    },
    /// The system name cannot be used in a socket file name.
    #[error(
        "bad system name {name:?}: use 1-64 characters from [A-Za-z0-9_.-], not starting with '.' or '-'"
    )]
    BadSystemName {
        /// The name.
        name: String,
    },
    /// The directory of an explicit Unix socket path does not exist (only the runtime
    /// directory is created).
    #[error(
        "{}: no such directory for the link socket (hv creates only its runtime directory; create it or choose another path)",
        dir.display()
    )]
    NoSocketDirectory {
        /// The missing directory.
        dir: PathBuf,
    },
    /// The runtime directory is not private to this user.
    #[error("insecure runtime directory {}: {reason}", path.display())]
    InsecureDirectory {
        /// The directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// No live link socket was found.
    #[error("no hvdk system is running (no live socket in {})", dir.display())]
    NoSystemRunning {
        /// Directory searched.
        dir: PathBuf,
    },
    /// No live link socket for that system name.
    #[error("system {name:?} is not running (no live {name}.sock in {})", dir.display())]
    SystemNotRunning {
        /// The name asked for.
        name: String,
        /// Directory searched.
        dir: PathBuf,
    },
    /// More than one system is running and none was named.
    #[error("several hvdk systems are running ({}); name one", names.join(", "))]
    AmbiguousSystem {
        /// Their names.
        names: Vec<String>,
    },
    /// A Unix-socket peer runs as another user (neither this process's user nor root); its
    /// connection was closed. The socket file is 0600, so this only happens when someone made it
    /// wider (or in the moment between `bind` and `chmod`).
    #[error("refused a connection from user {uid}: only user {allowed} (or root) may connect")]
    PeerNotAllowed {
        /// The peer's user id.
        uid: u32,
        /// This process's effective user id.
        allowed: u32,
    },
    /// The peer sent a malformed frame (close the connection).
    #[error("malformed frame from peer: {0}")]
    Frame(#[from] FrameError),
    /// A payload too large to send.
    #[error("cannot send: {0}")]
    Oversized(FrameError),
    /// No data within the read timeout.
    #[error("timed out waiting for the peer")]
    TimedOut,
    /// The connection was shut down, or an earlier write failed.
    #[error("connection closed")]
    Closed,
    /// An operating-system error. Its message includes the OS error, which is therefore not also
    /// its source (an error chain would say it twice).
    #[error("{context}: {error}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        error: io::Error,
    },
}

pub(crate) fn io_err(context: impl Into<String>, error: io::Error) -> TransportError {
    TransportError::Io {
        context: context.into(),
        error,
    }
}

/// Where a link is: parsed from and printed as `unix:<path>`, `tcp:<ip>:<port>`, `pty`,
/// `serial:<path>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LinkAddr {
    /// A Unix stream socket (the default; a bare absolute or `./` path also parses as this).
    Unix(PathBuf),
    /// TCP on a loopback address (`tcp:localhost:<port>` parses as 127.0.0.1).
    Tcp(SocketAddr),
    /// Server only: allocate a new pty pair; its slave path is the listener's local address.
    Pty,
    /// Client only: open a tty path as a raw serial line (`serial:<path>` or `pty:<path>`).
    Serial(PathBuf),
}

impl fmt::Display for LinkAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkAddr::Unix(p) => write!(f, "unix:{}", p.display()),
            LinkAddr::Tcp(a) => write!(f, "tcp:{a}"),
            LinkAddr::Pty => f.write_str("pty"),
            LinkAddr::Serial(p) => write!(f, "serial:{}", p.display()),
        }
    }
}

impl FromStr for LinkAddr {
    type Err = TransportError;

    fn from_str(s: &str) -> Result<Self, TransportError> {
        let bad = |reason: &str| TransportError::BadAddress {
            addr: s.to_owned(),
            reason: reason.to_owned(),
        };
        let path = |p: &str| {
            if p.is_empty() {
                Err(bad("empty path"))
            } else {
                Ok(PathBuf::from(p))
            }
        };
        if s == "pty" {
            return Ok(LinkAddr::Pty);
        }
        if let Some(p) = s.strip_prefix("unix:") {
            return path(p).map(LinkAddr::Unix);
        }
        if let Some(p) = s.strip_prefix("serial:").or_else(|| s.strip_prefix("pty:")) {
            return path(p).map(LinkAddr::Serial);
        }
        if let Some(rest) = s.strip_prefix("tcp:") {
            if let Ok(a) = rest.parse::<SocketAddr>() {
                return Ok(LinkAddr::Tcp(a));
            }
            if let Some(port) = rest.strip_prefix("localhost:") {
                let port: u16 = port.parse().map_err(|_| bad("bad port number"))?;
                return Ok(LinkAddr::Tcp(SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::LOCALHOST),
                    port,
                )));
            }
            return Err(bad(
                "expected tcp:<ip>:<port>, e.g. tcp:127.0.0.1:4567 or tcp:[::1]:4567",
            ));
        }
        if s.starts_with('/') || s.starts_with("./") || s.starts_with("../") {
            return Ok(LinkAddr::Unix(PathBuf::from(s)));
        }
        Err(bad(
            "expected unix:<path>, tcp:127.0.0.1:<port>, pty, or serial:<path>",
        ))
    }
}

/// The reading half of a connection: owns the decoder.
#[derive(Debug)]
pub struct FrameReader {
    stream: Stream,
    decoder: FrameDecoder,
    eof: bool,
}

impl FrameReader {
    fn new(stream: Stream) -> Self {
        Self {
            stream,
            decoder: FrameDecoder::new(),
            eof: false,
        }
    }

    /// Read until a whole frame is buffered (`true`) or the peer closed cleanly (`false`).
    fn fill(&mut self) -> Result<bool, TransportError> {
        loop {
            if self.decoder.has_frame()? {
                return Ok(true);
            }
            if self.eof {
                self.decoder.finish()?;
                return Ok(false);
            }
            match self.decoder.read_from(&mut self.stream) {
                Ok(0) => self.eof = true,
                Ok(_) => {}
                Err(e) => match e.kind() {
                    io::ErrorKind::Interrupted => {}
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                        return Err(TransportError::TimedOut);
                    }
                    _ => return Err(io_err("read from link", e)),
                },
            }
        }
    }

    /// The next frame; `Ok(None)` when the peer closed the stream between frames.
    pub fn recv_frame(&mut self) -> Result<Option<Frame>, TransportError> {
        Ok(self.recv_frame_ref()?.map(|f| f.to_owned()))
    }

    /// The next frame borrowed from the reader's buffer (no payload copy).
    pub fn recv_frame_ref(&mut self) -> Result<Option<FrameRef<'_>>, TransportError> {
        if !self.fill()? {
            return Ok(None);
        }
        Ok(self.decoder.next_frame_ref()?)
    }

    /// The descriptor to `poll` for readability, for a socket link (None for a serial line,
    /// whose reads are driven by its own poll loop): with [`try_recv_frame_ref`] a caller can
    /// wait on the link and another descriptor in one thread.
    ///
    /// [`try_recv_frame_ref`]: Self::try_recv_frame_ref
    pub fn pollable_fd(&self) -> Option<std::os::fd::RawFd> {
        self.stream.socket_fd()
    }

    /// Waits until `other` or this link (a buffered frame counts) is readable, or either hung
    /// up; returns (other, link). Socket links only (see [`pollable_fd`](Self::pollable_fd)):
    /// on a serial line it reports the link ready at once.
    pub fn wait_readable_with(
        &mut self,
        other: std::os::fd::RawFd,
    ) -> Result<(bool, bool), TransportError> {
        if self.eof || self.decoder.has_frame()? {
            return Ok((false, true));
        }
        let Some(link) = self.stream.socket_fd() else {
            return Ok((false, true));
        };
        stream::poll_both(other, link)
            .map(|(a, b)| (a != 0, b != 0))
            .map_err(|e| io_err("poll", e))
    }

    /// The next frame if one is buffered or arrives with one non-blocking read (socket links;
    /// on a serial line this blocks like [`recv_frame_ref`](Self::recv_frame_ref)).
    pub fn try_recv_frame_ref(&mut self) -> Result<TryRecv<'_>, TransportError> {
        if !self.decoder.has_frame()? {
            if !self.eof {
                let read = match self.stream.socket_fd() {
                    Some(fd) => self.decoder.read_from(&mut stream::NonBlocking(fd)),
                    None => self.decoder.read_from(&mut self.stream),
                };
                match read {
                    Ok(0) => self.eof = true,
                    Ok(_) => {}
                    Err(e) => match e.kind() {
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => {
                            return Ok(TryRecv::Empty);
                        }
                        _ => return Err(io_err("read from link", e)),
                    },
                }
            }
            if !self.decoder.has_frame()? {
                if self.eof {
                    self.decoder.finish()?;
                    return Ok(TryRecv::Closed);
                }
                return Ok(TryRecv::Empty);
            }
        }
        Ok(match self.decoder.next_frame_ref()? {
            Some(f) => TryRecv::Frame(f),
            None => TryRecv::Empty,
        })
    }

    /// Limit how long `recv_frame` blocks (`None` = forever); a timeout gives
    /// [`TransportError::TimedOut`] and keeps any partial frame buffered.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> Result<(), TransportError> {
        self.stream
            .set_read_timeout(timeout)
            .map_err(|e| io_err("set read timeout", e))
    }
}

/// What [`FrameReader::try_recv_frame_ref`] found.
#[derive(Debug)]
pub enum TryRecv<'a> {
    /// A whole frame.
    Frame(FrameRef<'a>),
    /// No whole frame yet.
    Empty,
    /// The peer closed the stream between frames.
    Closed,
}

#[derive(Debug)]
struct WriterInner {
    out: Mutex<WriterState>,
    /// A clone used only to shut the stream down without taking the lock.
    control: Stream,
    broken: AtomicBool,
}

#[derive(Debug)]
struct WriterState {
    stream: Stream,
    buf: Vec<u8>,
}

/// The writing half of a connection. Cheap to clone; every clone writes whole frames
/// atomically with respect to the others, so any thread may send on any channel.
#[derive(Debug, Clone)]
pub struct FrameWriter {
    inner: Arc<WriterInner>,
}

/// Payloads up to this size are copied next to their header and written with one call.
const COALESCE_LIMIT: usize = 64 * 1024;

impl FrameWriter {
    fn new(stream: Stream) -> io::Result<Self> {
        let control = stream.try_clone()?;
        Ok(Self {
            inner: Arc::new(WriterInner {
                out: Mutex::new(WriterState {
                    stream,
                    buf: Vec::with_capacity(4096),
                }),
                control,
                broken: AtomicBool::new(false),
            }),
        })
    }

    fn with_stream(
        &self,
        f: impl FnOnce(&mut WriterState) -> io::Result<()>,
    ) -> Result<(), TransportError> {
        if self.inner.broken.load(Ordering::SeqCst) {
            return Err(TransportError::Closed);
        }
        let mut st = self.inner.out.lock().unwrap_or_else(|p| p.into_inner());
        if self.inner.broken.load(Ordering::SeqCst) {
            return Err(TransportError::Closed);
        }
        let r = f(&mut st).and_then(|()| st.stream.flush());
        r.map_err(|e| {
            // A partly written frame would desynchronise the stream: no more writes.
            self.inner.broken.store(true, Ordering::SeqCst);
            io_err("write to link", e)
        })
    }

    /// Send one frame.
    pub fn send_frame(&self, channel: ChannelId, payload: &[u8]) -> Result<(), TransportError> {
        let len = checked_len(payload.len(), MAX_PAYLOAD).map_err(TransportError::Oversized)?;
        let header = FrameHeader::new(channel, len).encode();
        self.with_stream(|st| {
            if payload.len() <= COALESCE_LIMIT {
                st.buf.clear();
                st.buf.extend_from_slice(&header);
                st.buf.extend_from_slice(payload);
                let WriterState { stream, buf } = st;
                stream.write_all(buf)
            } else {
                st.stream.write_all(&header)?;
                st.stream.write_all(payload)
            }
        })
    }

    /// Send every frame buffered in `batch` with one write (the batch is left untouched).
    pub fn send_batch(&self, batch: &FrameEncoder) -> Result<(), TransportError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.with_stream(|st| st.stream.write_all(batch.as_bytes()))
    }

    /// Send `data` on `channel`, split into as many frames as needed.
    pub fn send_chunked(&self, channel: ChannelId, data: &[u8]) -> Result<(), TransportError> {
        if data.is_empty() {
            return self.send_frame(channel, data);
        }
        for chunk in data.chunks(MAX_PAYLOAD as usize) {
            self.send_frame(channel, chunk)?;
        }
        Ok(())
    }

    /// Shut the connection down in both directions: blocked reads on the peer half end, and
    /// later sends fail with [`TransportError::Closed`].
    pub fn shutdown(&self) {
        self.inner.broken.store(true, Ordering::SeqCst);
        self.inner.control.shutdown();
    }

    /// True after [`shutdown`](Self::shutdown) or a failed write.
    pub fn is_closed(&self) -> bool {
        self.inner.broken.load(Ordering::SeqCst)
    }
}

/// One link connection (either side). Split it to read and write from different threads.
#[derive(Debug)]
pub struct Connection {
    reader: FrameReader,
    writer: FrameWriter,
    peer: String,
}

impl Connection {
    fn from_stream(stream: Stream, peer: String) -> Result<Self, TransportError> {
        let rd = stream.try_clone().map_err(|e| io_err("clone stream", e))?;
        let writer = FrameWriter::new(stream).map_err(|e| io_err("clone stream", e))?;
        Ok(Self {
            reader: FrameReader::new(rd),
            writer,
            peer,
        })
    }

    /// Connect to `addr` (see [`connect`]).
    pub fn connect(addr: &LinkAddr) -> Result<Self, TransportError> {
        let ctx = || format!("connect to {addr}");
        match addr {
            LinkAddr::Unix(p) => {
                let s = UnixStream::connect(p).map_err(|e| io_err(ctx(), e))?;
                Self::from_stream(Stream::unix(s), addr.to_string())
            }
            LinkAddr::Tcp(a) => {
                let s = TcpStream::connect(a).map_err(|e| io_err(ctx(), e))?;
                let _ = s.set_nodelay(true);
                Self::from_stream(Stream::Tcp(s), addr.to_string())
            }
            LinkAddr::Serial(p) => {
                let s = SerialStream::open(p).map_err(|e| io_err(ctx(), e))?;
                Self::from_stream(Stream::Serial(s), addr.to_string())
            }
            LinkAddr::Pty => Err(TransportError::Unsupported {
                op: "connect",
                addr: addr.to_string(),
                hint: "connect to the pty's slave path with serial:<path>",
            }),
        }
    }

    /// Who is on the other side (for logs): `unix:<path>`, `tcp:<addr>`, `serial:<path>`.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// Send one frame.
    pub fn send_frame(&self, channel: ChannelId, payload: &[u8]) -> Result<(), TransportError> {
        self.writer.send_frame(channel, payload)
    }

    /// Receive one frame; `Ok(None)` on a clean close.
    pub fn recv_frame(&mut self) -> Result<Option<Frame>, TransportError> {
        self.reader.recv_frame()
    }

    /// Limit how long `recv_frame` blocks (`None` = forever).
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> Result<(), TransportError> {
        self.reader.set_read_timeout(timeout)
    }

    /// The writing half (clone it for other threads).
    pub fn writer(&self) -> &FrameWriter {
        &self.writer
    }

    /// The reading half.
    pub fn reader(&mut self) -> &mut FrameReader {
        &mut self.reader
    }

    /// Split into the reading and writing halves.
    pub fn split(self) -> (FrameReader, FrameWriter) {
        (self.reader, self.writer)
    }

    /// Shut down both directions (see [`FrameWriter::shutdown`]).
    pub fn shutdown(&self) {
        self.writer.shutdown();
    }
}

/// Connect to a link address.
pub fn connect(addr: &LinkAddr) -> Result<Connection, TransportError> {
    Connection::connect(addr)
}

/// Options for [`Listener::bind_with`].
#[derive(Debug, Clone, Default)]
pub struct BindOptions {
    /// Where a TCP listener writes its token (default: [`default_token_path`] of its port).
    pub token_file: Option<PathBuf>,
}

#[derive(Debug)]
enum ListenerKind {
    Unix {
        listener: UnixListener,
        path: PathBuf,
        /// (dev, ino) of the socket file we created, so drop removes only ours.
        id: (u64, u64),
    },
    Tcp {
        listener: TcpListener,
        token_file: PathBuf,
    },
    Pty(PtyMaster),
}

/// A bound server endpoint. Unix sockets and token files are removed when it is dropped.
#[derive(Debug)]
pub struct Listener {
    kind: ListenerKind,
    local: LinkAddr,
    token: Option<String>,
}

impl Listener {
    /// Bind `addr` with default options.
    pub fn bind(addr: &LinkAddr) -> Result<Self, TransportError> {
        Self::bind_with(addr, &BindOptions::default())
    }

    /// Bind `addr`.
    ///
    /// - `unix:<path>`: creates the socket mode 0600. Its directory must exist
    ///   ([`TransportError::NoSocketDirectory`]), except the runtime directory, which is
    ///   created mode 0700: an explicit path is used as given, never invented. A stale socket
    ///   file is replaced; a live one is [`TransportError::AddressInUse`].
    /// - `tcp:<loopback ip>:<port>` (port 0 = any): generates a random token and writes it,
    ///   mode 0600, to the token file; clients must present it in their hello.
    /// - `pty`: allocates a pty pair in raw mode; [`local_addr`](Self::local_addr) is the
    ///   slave path, to print for the user. One connection at a time.
    pub fn bind_with(addr: &LinkAddr, opts: &BindOptions) -> Result<Self, TransportError> {
        match addr {
            LinkAddr::Unix(path) => Self::bind_unix(path),
            LinkAddr::Tcp(a) => Self::bind_tcp(*a, opts),
            LinkAddr::Pty => {
                let m = PtyMaster::open().map_err(|e| io_err("open pty", e))?;
                let local = LinkAddr::Serial(m.slave_path().to_owned());
                Ok(Self {
                    kind: ListenerKind::Pty(m),
                    local,
                    token: None,
                })
            }
            LinkAddr::Serial(_) => Err(TransportError::Unsupported {
                op: "listen on",
                addr: addr.to_string(),
                hint: "a server listens on `pty` (it opens the pair itself)",
            }),
        }
    }

    fn bind_unix(path: &Path) -> Result<Self, TransportError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            if parent == runtime_dir() {
                ensure_private_dir(parent)?;
            } else if !parent.is_dir() {
                return Err(TransportError::NoSocketDirectory {
                    dir: parent.to_owned(),
                });
            }
        }
        if let Ok(md) = std::fs::symlink_metadata(path) {
            if !md.file_type().is_socket() {
                return Err(TransportError::NotASocket {
                    path: path.to_owned(),
                });
            }
            if UnixStream::connect(path).is_ok() {
                return Err(TransportError::AddressInUse {
                    path: path.to_owned(),
                });
            }
            std::fs::remove_file(path)
                .map_err(|e| io_err(format!("remove stale socket {}", path.display()), e))?;
        }
        let listener =
            UnixListener::bind(path).map_err(|e| io_err(format!("bind {}", path.display()), e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| io_err(format!("chmod {}", path.display()), e))?;
        let md = std::fs::symlink_metadata(path)
            .map_err(|e| io_err(format!("stat {}", path.display()), e))?;
        Ok(Self {
            kind: ListenerKind::Unix {
                listener,
                path: path.to_owned(),
                id: (md.dev(), md.ino()),
            },
            local: LinkAddr::Unix(path.to_owned()),
            token: None,
        })
    }

    fn bind_tcp(addr: SocketAddr, opts: &BindOptions) -> Result<Self, TransportError> {
        if !addr.ip().is_loopback() {
            return Err(TransportError::NotLoopback { addr });
        }
        let listener =
            TcpListener::bind(addr).map_err(|e| io_err(format!("bind tcp:{addr}"), e))?;
        let local = listener
            .local_addr()
            .map_err(|e| io_err("local address", e))?;
        let token = generate_token()?;
        let token_file = opts
            .token_file
            .clone()
            .unwrap_or_else(|| default_token_path(local.port()));
        write_token_file(&token_file, &token)?;
        Ok(Self {
            kind: ListenerKind::Tcp {
                listener,
                token_file,
            },
            local: LinkAddr::Tcp(local),
            token: Some(token),
        })
    }

    /// The bound address: the real port for `tcp:…:0`, `serial:<slave path>` for `pty`.
    pub fn local_addr(&self) -> &LinkAddr {
        &self.local
    }

    /// The token clients must present (TCP listeners), else `None`.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Where the token was written (TCP listeners).
    pub fn token_file(&self) -> Option<&Path> {
        match &self.kind {
            ListenerKind::Tcp { token_file, .. } => Some(token_file),
            _ => None,
        }
    }

    /// Wait for the next connection. For `pty`, waits until the previous connection is
    /// dropped and a client has (re)opened the slave.
    pub fn accept(&self) -> Result<Connection, TransportError> {
        match &self.kind {
            ListenerKind::Unix { listener, path, .. } => {
                let (s, _) = listener.accept().map_err(|e| io_err("accept", e))?;
                let uid = stream::peer_uid(&s).map_err(|e| io_err("SO_PEERCRED", e))?;
                let allowed = stream::effective_uid();
                if uid != allowed && uid != 0 {
                    return Err(TransportError::PeerNotAllowed { uid, allowed });
                }
                Connection::from_stream(Stream::unix(s), format!("unix:{}", path.display()))
            }
            ListenerKind::Tcp { listener, .. } => {
                let (s, peer) = listener.accept().map_err(|e| io_err("accept", e))?;
                let _ = s.set_nodelay(true);
                Connection::from_stream(Stream::Tcp(s), format!("tcp:{peer}"))
            }
            ListenerKind::Pty(m) => {
                let s = m.accept().map_err(|e| io_err("accept on pty", e))?;
                Connection::from_stream(Stream::Serial(s), self.local.to_string())
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        match &self.kind {
            ListenerKind::Unix { path, id, .. } => {
                if let Ok(md) = std::fs::symlink_metadata(path)
                    && (md.dev(), md.ino()) == *id
                {
                    let _ = std::fs::remove_file(path);
                }
            }
            ListenerKind::Tcp { token_file, .. } => {
                let _ = std::fs::remove_file(token_file);
            }
            ListenerKind::Pty(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::thread;

    #[test]
    fn address_parsing_and_printing() {
        let ok = [
            ("unix:/run/x.sock", LinkAddr::Unix("/run/x.sock".into())),
            ("/run/x.sock", LinkAddr::Unix("/run/x.sock".into())),
            ("./x.sock", LinkAddr::Unix("./x.sock".into())),
            (
                "tcp:127.0.0.1:4567",
                LinkAddr::Tcp("127.0.0.1:4567".parse().unwrap()),
            ),
            ("tcp:[::1]:80", LinkAddr::Tcp("[::1]:80".parse().unwrap())),
            (
                "tcp:localhost:9",
                LinkAddr::Tcp("127.0.0.1:9".parse().unwrap()),
            ),
            ("pty", LinkAddr::Pty),
            ("serial:/dev/pts/3", LinkAddr::Serial("/dev/pts/3".into())),
            ("pty:/dev/pts/3", LinkAddr::Serial("/dev/pts/3".into())),
        ];
        for (s, a) in ok {
            assert_eq!(s.parse::<LinkAddr>().unwrap(), a, "{s}");
            let printed = a.to_string();
            assert_eq!(printed.parse::<LinkAddr>().unwrap(), a, "{printed}");
        }
        assert_eq!(LinkAddr::Unix("/a".into()).to_string(), "unix:/a");
        for bad in [
            "",
            "unix:",
            "tcp:",
            "tcp:127.0.0.1",
            "tcp:host:1",
            "tcp:localhost:x",
            "serial:",
            "ws://x",
            "x.sock",
        ] {
            assert!(
                matches!(
                    bad.parse::<LinkAddr>(),
                    Err(TransportError::BadAddress { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn unix_peers_of_another_user_are_refused() {
        use std::os::unix::process::CommandExt;
        if stream::effective_uid() != 0 {
            eprintln!(
                "SKIPPED unix_peers_of_another_user_are_refused: needs root to connect as another user"
            );
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = tmp.path().join("sys.sock");
        let l = Listener::bind(&LinkAddr::Unix(path.clone())).unwrap();
        // As if someone had widened the socket's mode: the kernel lets user 65534 connect.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let path_for_child = path.clone();
        let stranger = thread::spawn(move || {
            std::process::Command::new("python3")
                .args(["-c", "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); print(len(s.recv(1)))"])
                .arg(&path_for_child)
                .uid(65534)
                .gid(65534)
                .output()
                .unwrap()
        });
        match l.accept() {
            Err(TransportError::PeerNotAllowed { uid, allowed }) => {
                assert_eq!((uid, allowed), (65534, 0));
            }
            Err(e) => panic!("{e}"),
            Ok(c) => panic!("accepted {}", c.peer()),
        }
        let out = stranger.join().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "0",
            "closed at once"
        );
        // Our own user still gets in.
        let local = l.local_addr().clone();
        let client = thread::spawn(move || connect(&local).unwrap());
        let server = l.accept().unwrap();
        exercise(l, server, client.join().unwrap());
    }

    fn pair_over(addr: &LinkAddr) -> (Listener, Connection, Connection) {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let token_file =
            std::env::temp_dir().join(format!("hv-link-test-{}-{n}.token", std::process::id()));
        let opts = BindOptions {
            token_file: Some(token_file),
        };
        let l = Listener::bind_with(addr, &opts).unwrap();
        let local = l.local_addr().clone();
        let client = thread::spawn(move || connect(&local).unwrap());
        let server = l.accept().unwrap();
        let client = client.join().unwrap();
        (l, server, client) // the listener's drop removes the token file
    }

    /// Exchange frames both ways; at the end drop the server side (connection and listener: a
    /// pty slave sees end of stream only once the master is closed).
    fn exercise(l: Listener, mut server: Connection, client: Connection) {
        // Sent from another thread: a big frame does not fit in the socket / pty buffers.
        let big = vec![7u8; 300_000];
        let w = client.writer().clone();
        let big2 = big.clone();
        let t = thread::spawn(move || {
            w.send_frame(ChannelId::CONTROL, b"hello").unwrap();
            w.send_frame(ChannelId(3), &big2).unwrap();
        });
        assert_eq!(
            server.recv_frame().unwrap(),
            Some(Frame::new(ChannelId::CONTROL, b"hello".to_vec()))
        );
        assert_eq!(
            server.recv_frame().unwrap(),
            Some(Frame::new(ChannelId(3), big))
        );
        t.join().unwrap();
        // Writer from another thread while this thread reads.
        let (mut rd, wr) = client.split();
        let w2 = wr.clone();
        let t = thread::spawn(move || {
            let mut enc = FrameEncoder::new();
            for i in 0..1000u32 {
                enc.push(ChannelId(5), &i.to_le_bytes()).unwrap();
            }
            w2.send_batch(&enc).unwrap();
        });
        for i in 0..1000u32 {
            let f = server.recv_frame().unwrap().unwrap();
            assert_eq!(f.payload, i.to_le_bytes());
        }
        t.join().unwrap();
        server.send_frame(ChannelId(9), b"back").unwrap();
        assert_eq!(rd.recv_frame().unwrap().unwrap().payload, b"back");
        // Timeout, then clean close.
        rd.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        assert!(matches!(rd.recv_frame(), Err(TransportError::TimedOut)));
        drop(server);
        drop(l);
        rd.set_read_timeout(None).unwrap();
        assert!(matches!(rd.recv_frame(), Ok(None)));
    }

    #[test]
    fn unix_socket_round_trip_and_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("sys.sock");
        let (l, server, client) = pair_over(&LinkAddr::Unix(path.clone()));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(l.token().is_none());
        // A second server on the same live path is refused.
        assert!(matches!(
            Listener::bind(&LinkAddr::Unix(path.clone())),
            Err(TransportError::AddressInUse { .. })
        ));
        exercise(l, server, client);
        assert!(!path.exists(), "socket removed on drop");
        // A stale socket file is replaced.
        drop(UnixListener::bind(&path).unwrap());
        let l = Listener::bind(&LinkAddr::Unix(path.clone())).unwrap();
        drop(l);
        // A regular file is not.
        std::fs::write(&path, "x").unwrap();
        assert!(matches!(
            Listener::bind(&LinkAddr::Unix(path.clone())),
            Err(TransportError::NotASocket { .. })
        ));
    }

    #[test]
    fn unix_link_path_corpus() {
        let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/unix_link_paths.txt");
        let text = std::fs::read_to_string(&corpus).unwrap();
        let cases: Vec<(&str, &str)> = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| l.split_once(' ').unwrap())
            .collect();
        assert!(
            cases.len() >= 8,
            "{} has {} cases",
            corpus.display(),
            cases.len()
        );
        for (expect, sock) in cases {
            let tmp = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(tmp.path().join("a/b")).unwrap();
            std::fs::write(tmp.path().join("file"), "x").unwrap();
            let dirs = |root: &Path| {
                let mut all = Vec::new();
                let mut todo = vec![root.to_owned()];
                while let Some(d) = todo.pop() {
                    for e in std::fs::read_dir(&d).unwrap() {
                        let e = e.unwrap();
                        if e.file_type().unwrap().is_dir() {
                            all.push(e.path());
                            todo.push(e.path());
                        }
                    }
                }
                all.sort();
                all
            };
            let before = dirs(tmp.path());
            let result = Listener::bind(&LinkAddr::Unix(tmp.path().join(sock)));
            assert_eq!(dirs(tmp.path()), before, "{sock}: a directory was created");
            match (expect, &result) {
                ("ok", Ok(_))
                | ("missing", Err(TransportError::NoSocketDirectory { .. }))
                | ("refused", Err(_)) => {}
                _ => panic!("{sock}: expected {expect}, got {:?}", result.err()),
            }
            assert!(
                expect != "refused"
                    || !matches!(result, Err(TransportError::NoSocketDirectory { .. })),
                "{sock}"
            );
        }
    }

    #[test]
    fn unix_socket_in_missing_dir_is_an_error_and_creates_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        for sock in ["rt/demo.sock", "a/b/c/demo.sock", "file/x.sock"] {
            std::fs::write(tmp.path().join("file"), "not a directory").unwrap();
            let path = tmp.path().join(sock);
            let e = Listener::bind(&LinkAddr::Unix(path.clone())).unwrap_err();
            assert!(
                matches!(&e, TransportError::NoSocketDirectory { dir } if Some(dir.as_path()) == path.parent()),
                "{sock}: {e}"
            );
            assert!(e.to_string().contains("no such directory"), "{e}");
        }
        let mut left: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        left.sort();
        assert_eq!(left, ["file"], "bind created something");
        // A relative path in the current directory has an empty parent: fine.
        assert!(matches!(
            Listener::bind(&LinkAddr::Unix("no-such-dir/x.sock".into())),
            Err(TransportError::NoSocketDirectory { .. })
        ));
    }

    #[test]
    fn tcp_loopback_round_trip_with_token_file() {
        let (l, server, client) = pair_over(&"tcp:127.0.0.1:0".parse().unwrap());
        let LinkAddr::Tcp(a) = l.local_addr() else {
            panic!()
        };
        assert_ne!(a.port(), 0);
        let tf = l.token_file().unwrap().to_owned();
        assert_eq!(
            std::fs::metadata(&tf).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(read_token_file(&tf).unwrap(), l.token().unwrap());
        assert!(server.peer().starts_with("tcp:127.0.0.1:"));
        exercise(l, server, client);
        assert!(!tf.exists(), "token file removed on drop");
    }

    #[test]
    fn tcp_refuses_non_loopback() {
        for a in ["tcp:0.0.0.0:0", "tcp:[::]:0", "tcp:192.0.2.1:0"] {
            assert!(
                matches!(
                    Listener::bind(&a.parse().unwrap()),
                    Err(TransportError::NotLoopback { .. })
                ),
                "{a}"
            );
        }
        assert!(matches!(
            connect(&LinkAddr::Pty),
            Err(TransportError::Unsupported { .. })
        ));
        assert!(matches!(
            Listener::bind(&LinkAddr::Serial("/dev/null".into())),
            Err(TransportError::Unsupported { .. })
        ));
    }

    #[test]
    fn pty_round_trip_and_reconnect() {
        let l = Listener::bind(&LinkAddr::Pty).unwrap();
        let LinkAddr::Serial(slave) = l.local_addr().clone() else {
            panic!()
        };
        assert!(slave.starts_with("/dev/pts"), "{slave:?}");
        let addr = l.local_addr().clone();
        // First session: the client closes the slave, the server reads end of stream.
        {
            let c = connect(&addr).unwrap();
            let mut s = l.accept().unwrap();
            c.send_frame(ChannelId(1), b"first").unwrap();
            assert_eq!(s.recv_frame().unwrap().unwrap().payload, b"first");
            drop(c);
            assert!(matches!(s.recv_frame(), Ok(None)));
        }
        // Second session on the same pty, once the first connection is gone.
        let client = connect(&addr).unwrap();
        let server = l.accept().unwrap();
        exercise(l, server, client);
    }

    #[test]
    fn shutdown_unblocks_a_reader() {
        for addr in [LinkAddr::Pty, "tcp:127.0.0.1:0".parse().unwrap()] {
            let (_l, server, client) = if addr == LinkAddr::Pty {
                let l = Listener::bind(&addr).unwrap();
                let c = connect(l.local_addr()).unwrap();
                let s = l.accept().unwrap();
                (l, s, c)
            } else {
                pair_over(&addr)
            };
            let (mut rd, wr) = server.split();
            let t = thread::spawn(move || rd.recv_frame());
            thread::sleep(Duration::from_millis(50));
            wr.shutdown();
            let r = t.join().unwrap();
            assert!(matches!(r, Ok(None) | Err(_)), "{r:?}");
            assert!(matches!(
                wr.send_frame(ChannelId(1), b"x"),
                Err(TransportError::Closed)
            ));
            assert!(wr.is_closed());
            drop(client);
        }
    }

    #[test]
    fn malformed_bytes_from_peer_are_a_frame_error() {
        let tmp = tempfile::tempdir().unwrap();
        let l = Listener::bind(&LinkAddr::Unix(tmp.path().join("m.sock"))).unwrap();
        let mut raw = UnixStream::connect(tmp.path().join("m.sock")).unwrap();
        let mut server = l.accept().unwrap();
        raw.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        assert!(matches!(
            server.recv_frame(),
            Err(TransportError::Frame(FrameError::BadMagic { .. }))
        ));
        // Truncated frame then close.
        let mut raw = UnixStream::connect(tmp.path().join("m.sock")).unwrap();
        let mut server = l.accept().unwrap();
        raw.write_all(&FrameHeader::new(ChannelId(1), 10).encode())
            .unwrap();
        raw.write_all(b"abc").unwrap();
        drop(raw);
        assert!(matches!(
            server.recv_frame(),
            Err(TransportError::Frame(FrameError::Truncated {
                buffered: 15
            }))
        ));
        assert!(matches!(
            server.send_frame(ChannelId(1), &vec![0; MAX_PAYLOAD as usize + 1]),
            Err(TransportError::Oversized(_))
        ));
    }
}
