//! The byte streams under a connection: Unix socket, TCP socket, or a pty / serial line.

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// One end of a link: a socket or a tty file descriptor.
#[derive(Debug)]
pub(crate) enum Stream {
    /// With its read timeout, shared by every clone as the socket option is (kept here so
    /// that a blocking read costs no `getsockopt`).
    Unix(UnixStream, Arc<ReadTimeout>),
    Tcp(TcpStream),
    Serial(SerialStream),
}

/// A Unix socket's read timeout in milliseconds for `poll` (-1: none).
#[derive(Debug)]
pub(crate) struct ReadTimeout(std::sync::atomic::AtomicI32);

impl Stream {
    /// A Unix socket with no read timeout (as accepted or connected).
    pub(crate) fn unix(s: UnixStream) -> Stream {
        Stream::Unix(
            s,
            Arc::new(ReadTimeout(std::sync::atomic::AtomicI32::new(-1))),
        )
    }

    pub(crate) fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Unix(s, t) => Stream::Unix(s.try_clone()?, t.clone()),
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Serial(s) => Stream::Serial(s.clone()),
        })
    }

    pub(crate) fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s, cached) => {
                s.set_read_timeout(t)?;
                let ms = t.map_or(-1, |d| d.as_millis().clamp(1, i32::MAX as u128) as i32);
                cached.0.store(ms, Ordering::Relaxed);
                Ok(())
            }
            Stream::Tcp(s) => s.set_read_timeout(t),
            Stream::Serial(s) => {
                s.shared.read_timeout_ms.store(
                    t.map_or(0, |d| d.as_millis().clamp(1, i32::MAX as u128) as u64),
                    Ordering::Relaxed,
                );
                Ok(())
            }
        }
    }

    /// The socket's descriptor (None for a serial line).
    pub(crate) fn socket_fd(&self) -> Option<RawFd> {
        match self {
            Stream::Unix(s, _) => Some(s.as_raw_fd()),
            Stream::Tcp(s) => Some(s.as_raw_fd()),
            Stream::Serial(_) => None,
        }
    }

    /// Unblock readers and writers on every clone; later I/O fails or reads end of stream.
    pub(crate) fn shutdown(&self) {
        match self {
            Stream::Unix(s, _) => {
                let _ = s.shutdown(Shutdown::Both);
            }
            Stream::Tcp(s) => {
                let _ = s.shutdown(Shutdown::Both);
            }
            Stream::Serial(s) => s.shutdown(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s, t) => read_unix(s, t, buf),
            Stream::Tcp(s) => s.read(buf),
            Stream::Serial(s) => s.read(buf),
        }
    }
}

/// Waits (no timeout) until `a` or `b` is readable or hung up; their `revents`.
pub(crate) fn poll_both(a: RawFd, b: RawFd) -> io::Result<(libc::c_short, libc::c_short)> {
    loop {
        let mut fds = [
            libc::pollfd {
                fd: a,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: b,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a valid array of two pollfd structs for the duration of the call.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if r < 0 {
            let e = last_err();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        return Ok((fds[0].revents, fds[1].revents));
    }
}

/// The user id of the process at the other end of a Unix stream socket (`SO_PEERCRED`).
pub(crate) fn peer_uid(s: &UnixStream) -> io::Result<u32> {
    // SAFETY: ucred is plain data; zeroed is a valid value to be overwritten.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes and `len` holds the size of `cred`.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r < 0 { Err(last_err()) } else { Ok(cred.uid) }
}

/// This process's effective user id.
pub(crate) fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// One `recv(MSG_DONTWAIT)` on a socket: `WouldBlock` when nothing is there.
pub(crate) struct NonBlocking(pub(crate) RawFd);

impl Read for NonBlocking {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes; the descriptor is open (owned
        // by the reader that made this adapter for one call).
        let n = unsafe {
            libc::recv(
                self.0,
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            Err(last_err())
        } else {
            Ok(n as usize)
        }
    }
}

/// Reads a Unix stream socket, waiting in `poll(POLLIN)` rather than in `recv`.
///
/// A reader blocked in `recv` on a Unix stream socket is also woken each time its peer
/// consumes data this socket sent (the kernel's write-space wakeup is not filtered for
/// readers), so a request/reply exchange costs two spurious context switches; `poll` waits
/// only for what it asked for. The socket's read timeout (as set through
/// [`Stream::set_read_timeout`]) still applies.
fn read_unix(s: &UnixStream, timeout: &ReadTimeout, buf: &mut [u8]) -> io::Result<usize> {
    let fd = s.as_raw_fd();
    loop {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = last_err();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) => {}
            _ => return Err(e),
        }
        let timeout = timeout.0.load(Ordering::Relaxed);
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid pollfd for the duration of the call.
        let r = unsafe { libc::poll(&mut pfd, 1, timeout) };
        if r < 0 {
            let e = last_err();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r == 0 {
            return Err(io::Error::from(io::ErrorKind::WouldBlock));
        }
        // Readable, hung up or in error: the next recv says which.
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s, _) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
            Stream::Serial(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Unix(s, _) => s.flush(),
            Stream::Tcp(s) => s.flush(),
            Stream::Serial(_) => Ok(()),
        }
    }
}

/// Marks a pty listener busy while a connection on it is alive.
#[derive(Debug, Default)]
pub(crate) struct Busy {
    busy: Mutex<bool>,
    cv: Condvar,
}

impl Busy {
    /// Wait until idle, then mark busy; the token marks idle again when dropped.
    pub(crate) fn acquire(self: &Arc<Self>) -> BusyToken {
        let mut b = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        while *b {
            b = self.cv.wait(b).unwrap_or_else(|p| p.into_inner());
        }
        *b = true;
        BusyToken(self.clone())
    }
}

/// Held by a pty connection; releases the listener on drop.
#[derive(Debug)]
pub(crate) struct BusyToken(Arc<Busy>);

impl Drop for BusyToken {
    fn drop(&mut self) {
        *self.0.busy.lock().unwrap_or_else(|p| p.into_inner()) = false;
        self.0.cv.notify_all();
    }
}

#[derive(Debug)]
struct SerialShared {
    fd: OwnedFd,
    wake_r: OwnedFd,
    wake_w: OwnedFd,
    shut: AtomicBool,
    /// 0 = no timeout.
    read_timeout_ms: AtomicU64,
    _busy: Option<BusyToken>,
}

/// A tty (pty master, pty slave or serial device) in non-blocking mode, driven by `poll` so
/// that `shutdown` can wake a blocked reader or writer.
#[derive(Debug, Clone)]
pub(crate) struct SerialStream {
    shared: Arc<SerialShared>,
}

fn last_err() -> io::Error {
    io::Error::last_os_error()
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 { Err(last_err()) } else { Ok(r) }
}

/// Put a tty into raw 8-bit mode (no echo, no line editing, no signals, no CR/LF mangling).
pub(crate) fn set_raw(fd: RawFd) -> io::Result<()> {
    // SAFETY: termios is plain old data; zeroed is a valid value and tcgetattr overwrites it.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is an open descriptor owned by the caller; `t` is a valid out-pointer.
    cvt(unsafe { libc::tcgetattr(fd, &mut t) })?;
    // SAFETY: `t` is a valid, initialised termios.
    unsafe { libc::cfmakeraw(&mut t) };
    t.c_cflag |= libc::CLOCAL | libc::CREAD;
    t.c_cc[libc::VMIN] = 1;
    t.c_cc[libc::VTIME] = 0;
    // SAFETY: `fd` is open; `t` is a valid termios.
    cvt(unsafe { libc::tcsetattr(fd, libc::TCSANOW, &t) })?;
    Ok(())
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL on an open descriptor have no memory-safety requirements.
    let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) })?;
    Ok(())
}

fn poll2(
    fd: RawFd,
    events: libc::c_short,
    wake: RawFd,
    timeout_ms: libc::c_int,
) -> io::Result<(libc::c_short, bool)> {
    loop {
        let mut fds = [
            libc::pollfd {
                fd,
                events,
                revents: 0,
            },
            libc::pollfd {
                fd: wake,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a valid array of 2 pollfd structs for the duration of the call.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout_ms) };
        if r < 0 {
            let e = last_err();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r == 0 {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "read timed out"));
        }
        return Ok((fds[0].revents, fds[1].revents != 0));
    }
}

impl SerialStream {
    /// Wrap an open tty descriptor (switched to non-blocking here).
    pub(crate) fn new(fd: OwnedFd, busy: Option<BusyToken>) -> io::Result<Self> {
        set_nonblocking(fd.as_raw_fd())?;
        let mut p = [0 as libc::c_int; 2];
        // SAFETY: `p` is a valid out-array of two ints.
        cvt(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) })?;
        // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
        let (wake_r, wake_w) = unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) };
        Ok(Self {
            shared: Arc::new(SerialShared {
                fd,
                wake_r,
                wake_w,
                shut: AtomicBool::new(false),
                read_timeout_ms: AtomicU64::new(0),
                _busy: busy,
            }),
        })
    }

    /// Open a tty device path (e.g. a pty slave `/dev/pts/N` or `/dev/ttyS0`) in raw mode.
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
            .open(path)?;
        let fd = OwnedFd::from(file);
        // SAFETY: isatty only inspects the open descriptor.
        if unsafe { libc::isatty(fd.as_raw_fd()) } == 1 {
            set_raw(fd.as_raw_fd())?;
        }
        Self::new(fd, None)
    }

    fn shutdown(&self) {
        if !self.shared.shut.swap(true, Ordering::SeqCst) {
            // SAFETY: writes one byte from a valid buffer to our own pipe.
            let _ =
                unsafe { libc::write(self.shared.wake_w.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
        }
    }

    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let fd = self.shared.fd.as_raw_fd();
        loop {
            if self.shared.shut.load(Ordering::SeqCst) || buf.is_empty() {
                return Ok(0);
            }
            let t = self.shared.read_timeout_ms.load(Ordering::Relaxed);
            let timeout = if t == 0 { -1 } else { t as libc::c_int };
            let (rev, woken) = poll2(fd, libc::POLLIN, self.shared.wake_r.as_raw_fd(), timeout)?;
            if woken {
                return Ok(0);
            }
            if rev & libc::POLLNVAL != 0 {
                return Err(io::Error::from_raw_os_error(libc::EBADF));
            }
            // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = last_err();
            match e.raw_os_error() {
                // EIO: the other side of the pty is closed: end of stream.
                Some(libc::EIO) => return Ok(0),
                Some(libc::EAGAIN) | Some(libc::EINTR) => {
                    if rev & (libc::POLLHUP | libc::POLLERR) != 0 {
                        return Ok(0);
                    }
                }
                _ => return Err(e),
            }
        }
    }

    fn write(&self, buf: &[u8]) -> io::Result<usize> {
        let fd = self.shared.fd.as_raw_fd();
        let closed = || io::Error::new(io::ErrorKind::BrokenPipe, "serial line closed");
        loop {
            if self.shared.shut.load(Ordering::SeqCst) {
                return Err(closed());
            }
            let (rev, woken) = poll2(fd, libc::POLLOUT, self.shared.wake_r.as_raw_fd(), -1)?;
            if woken {
                return Err(closed());
            }
            if rev & libc::POLLNVAL != 0 {
                return Err(io::Error::from_raw_os_error(libc::EBADF));
            }
            // SAFETY: `buf` is valid for reads of `buf.len()` bytes.
            let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = last_err();
            match e.raw_os_error() {
                Some(libc::EIO) => return Err(closed()),
                Some(libc::EAGAIN) | Some(libc::EINTR) => {
                    if rev & libc::POLLOUT == 0 && rev & (libc::POLLHUP | libc::POLLERR) != 0 {
                        return Err(closed());
                    }
                }
                _ => return Err(e),
            }
        }
    }
}

/// A pty master opened by a server; connections are made on it one at a time.
#[derive(Debug)]
pub(crate) struct PtyMaster {
    fd: OwnedFd,
    slave_path: std::path::PathBuf,
    busy: Arc<Busy>,
}

impl PtyMaster {
    /// `posix_openpt` + `grantpt` + `unlockpt`, raw mode, and the slave's path.
    pub(crate) fn open() -> io::Result<Self> {
        // SAFETY: posix_openpt has no memory-safety preconditions.
        let raw =
            cvt(unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) })?;
        // SAFETY: `raw` was just returned by posix_openpt and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: `fd` is an open pty master.
        cvt(unsafe { libc::grantpt(fd.as_raw_fd()) })?;
        // SAFETY: as above.
        cvt(unsafe { libc::unlockpt(fd.as_raw_fd()) })?;
        let mut name = [0 as libc::c_char; 128];
        // SAFETY: `name` is a valid buffer of the given length.
        let r = unsafe { libc::ptsname_r(fd.as_raw_fd(), name.as_mut_ptr(), name.len()) };
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        // SAFETY: ptsname_r succeeded, so `name` holds a NUL-terminated string.
        let cstr = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) };
        let slave_path = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(cstr.to_bytes()));
        // Raw mode set through the master applies to the slave too (Linux shares termios), so
        // no echo or line editing happens even before a client configures its end.
        set_raw(fd.as_raw_fd())?;
        set_nonblocking(fd.as_raw_fd())?;
        Ok(Self {
            fd,
            slave_path,
            busy: Arc::new(Busy::default()),
        })
    }

    pub(crate) fn slave_path(&self) -> &Path {
        &self.slave_path
    }

    /// Wait until no connection uses the pty and the slave side is not hung up (a client has
    /// it open, or nobody ever opened it), then hand out a stream on the master.
    pub(crate) fn accept(&self) -> io::Result<SerialStream> {
        let token = self.busy.acquire();
        loop {
            let mut p = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: `p` is a valid pollfd for the duration of the call.
            let r = unsafe { libc::poll(&mut p, 1, 0) };
            if r < 0 {
                let e = last_err();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if p.revents & libc::POLLHUP == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: F_DUPFD_CLOEXEC on an open descriptor returns a new descriptor we own.
        let dup = cvt(unsafe { libc::fcntl(self.fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) })?;
        // SAFETY: `dup` is a fresh descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(dup) };
        SerialStream::new(fd, Some(token))
    }
}
