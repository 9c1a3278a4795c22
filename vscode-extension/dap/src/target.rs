//! The system side of a session: finding and connecting to a host link, starting `hv run` for
//! `launch`, a private 127.0.0.1 port that carries gdb's bytes to the guest's `gdb:` channel,
//! and the partition's console lines.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hv_link::{ChannelName, ClientError, ClientOptions, LinkAddr, LinkClient, PartitionInfo};
use tokio::sync::mpsc;

/// Errors reaching the system or the guest.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// `link` is neither an address nor a system name.
    #[error(
        "`link` {0:?} is not a host-link address (unix:<path>, tcp:127.0.0.1:<port>) or a system name"
    )]
    BadLink(String),
    /// No system found (or several) in the runtime directory.
    #[error("{0}; start one with `hv run`, or give `link` in the attach configuration")]
    NoSystem(String),
    /// The link did not answer.
    #[error("cannot connect to the system's host link {addr}: {source}")]
    Connect {
        /// The address.
        addr: LinkAddr,
        /// Why.
        source: ClientError,
    },
    /// A control call failed.
    #[error("the host link refused {what}: {source}")]
    Call {
        /// What was asked.
        what: String,
        /// Why.
        source: ClientError,
    },
    /// The guest's gdb channel could not be opened (e.g. another debugger owns it).
    #[error("cannot debug {channel}: {source}")]
    Channel {
        /// The channel.
        channel: ChannelName,
        /// Why.
        source: ClientError,
    },
    /// The system description does not exist.
    #[error("no system description at {0} (`system` in the launch configuration)")]
    NoDescription(PathBuf),
    /// `hv run` could not be started.
    #[error("cannot start {hv} run")]
    Spawn {
        /// The `hv` binary.
        hv: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `hv run` exited before its host link answered.
    #[error("`hv run {system}` stopped before its host link came up:\n{log}")]
    RunFailed {
        /// The description.
        system: String,
        /// What it printed on stderr.
        log: String,
    },
    /// A local socket or thread failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Name this adapter gives itself on the link (shown as a gdb channel's owner).
pub fn client_name() -> String {
    format!("hv-dap[{}]", std::process::id())
}

/// The link to use: `link` as an address or a system name, else the only system running for
/// this user (the way `hv console` finds it).
pub fn resolve_link(link: Option<&str>) -> Result<LinkAddr, TargetError> {
    if let Some(text) = link {
        if let Ok(addr) = text.parse::<LinkAddr>() {
            return Ok(addr);
        }
        if hv_link::transport::validate_system_name(text).is_ok() {
            return hv_link::transport::find_system(Some(text))
                .map_err(|e| TargetError::NoSystem(e.to_string()));
        }
        return Err(TargetError::BadLink(text.to_owned()));
    }
    hv_link::transport::find_system(None).map_err(|e| TargetError::NoSystem(e.to_string()))
}

/// Connects a control client to `addr`.
pub fn connect(addr: &LinkAddr) -> Result<LinkClient, TargetError> {
    LinkClient::connect_with(addr, ClientOptions::new(client_name())).map_err(|source| {
        TargetError::Connect {
            addr: addr.clone(),
            source,
        }
    })
}

/// `partitions.list`.
pub fn partitions(client: &LinkClient) -> Result<Vec<PartitionInfo>, TargetError> {
    client.partitions().map_err(|source| TargetError::Call {
        what: "partitions.list".into(),
        source,
    })
}

/// A system started by `launch`: `hv run --no-console` on a private link.
pub struct Launched {
    child: Child,
    dir: PathBuf,
    /// The link it serves.
    pub addr: LinkAddr,
}

impl std::fmt::Debug for Launched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Launched")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// A line printed by a launched system: (`stdout`|`stderr`, text).
pub type RunLine = (&'static str, String);

impl Launched {
    /// Starts `hv run --no-console --no-gdb-bridge` on `system` and waits (up to `wait`) until
    /// its host link answers. Its output lines go to `lines`.
    pub fn start(
        hv: &Path,
        system: &Path,
        link: Option<&str>,
        wait: Duration,
        lines: mpsc::UnboundedSender<RunLine>,
    ) -> Result<Launched, TargetError> {
        static LAUNCHES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = LAUNCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("hv-dap-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|source| TargetError::Io {
            what: "cannot create a temporary directory",
            source,
        })?;
        let addr = match link {
            Some(text) => text
                .parse::<LinkAddr>()
                .map_err(|_| TargetError::BadLink(text.to_owned()))?,
            None => LinkAddr::Unix(dir.join("link.sock")),
        };
        let mut child = Command::new(hv)
            .arg("run")
            .arg(system)
            .args(["--no-console", "--no-gdb-bridge", "--link"])
            .arg(addr.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| TargetError::Spawn {
                hv: hv.to_owned(),
                source,
            })?;
        let log = Arc::new(std::sync::Mutex::new(String::new()));
        if let Some(out) = child.stdout.take() {
            let tx = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let _ = tx.send(("stdout", line));
                }
            });
        }
        if let Some(err) = child.stderr.take() {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    if let Ok(mut l) = log.lock() {
                        l.push_str(&line);
                        l.push('\n');
                    }
                    let _ = lines.send(("stderr", line));
                }
            });
        }
        let mut launched = Launched { child, dir, addr };
        let deadline = Instant::now() + wait;
        loop {
            if let Ok(Some(_)) = launched.child.try_wait() {
                // Let the stderr reader catch up with the last lines.
                std::thread::sleep(Duration::from_millis(200));
                let log = log.lock().map(|l| l.clone()).unwrap_or_default();
                return Err(TargetError::RunFailed {
                    system: system.display().to_string(),
                    log,
                });
            }
            if hv_link::connect(&launched.addr).is_ok() {
                return Ok(launched);
            }
            if Instant::now() > deadline {
                let log = log.lock().map(|l| l.clone()).unwrap_or_default();
                launched.stop();
                return Err(TargetError::RunFailed {
                    system: system.display().to_string(),
                    log: format!("{log}(no host link after {wait:?})"),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the system (SIGTERM, like Ctrl-C) and waits for it.
    pub fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) with a pid of our own child that has not been reaped yet.
            unsafe {
                libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if !matches!(self.child.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A private 127.0.0.1 port whose one connection is forwarded to a guest's `gdb:` channel on
/// its own host-link connection.
pub struct GdbPort {
    /// The port gdb connects to.
    pub port: u16,
    client: Arc<LinkClient>,
}

impl std::fmt::Debug for GdbPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GdbPort")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl GdbPort {
    /// Opens `channel` on a new connection to `addr` (so it fails now, with the agent's
    /// reason, if another debugger owns the guest) and listens for gdb.
    pub fn open(addr: &LinkAddr, channel: &ChannelName) -> Result<GdbPort, TargetError> {
        let client = Arc::new(connect(addr)?);
        let handle = client
            .open_channel(channel)
            .map_err(|source| TargetError::Channel {
                channel: channel.clone(),
                source,
            })?;
        let listener =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|source| TargetError::Io {
                what: "cannot listen on 127.0.0.1",
                source,
            })?;
        let port = listener
            .local_addr()
            .map_err(|source| TargetError::Io {
                what: "cannot read the local port",
                source,
            })?
            .port();
        let keep = client.clone();
        std::thread::Builder::new()
            .name("hv-dap-gdb-in".into())
            .spawn(move || {
                let _client = keep;
                let Ok((stream, _)) = listener.accept() else {
                    return;
                };
                drop(listener);
                let _ = stream.set_nodelay(true);
                let Ok(mut to_gdb) = stream.try_clone() else {
                    return;
                };
                let rx = handle.receiver().clone();
                let out = std::thread::spawn(move || {
                    while let Ok(data) = rx.recv() {
                        if to_gdb.write_all(&data).is_err() {
                            break;
                        }
                    }
                    // The channel closed (link lost, partition reset): hang up on gdb.
                    let _ = to_gdb.shutdown(Shutdown::Both);
                });
                let sender = handle.sender();
                let mut from_gdb = stream;
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match from_gdb.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if sender.send(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
                // gdb went: close the channel and wait for the agent (it detaches and resumes
                // the guest).
                let _ = handle.close();
                let _ = from_gdb.shutdown(Shutdown::Both);
                let _ = out.join();
            })
            .map_err(|source| TargetError::Io {
                what: "cannot start a thread",
                source,
            })?;
        Ok(GdbPort { port, client })
    }

    /// Drops the link connection (gdb sees the port close).
    pub fn shutdown(&self) {
        self.client.shutdown();
    }
}

/// Forwards the console lines of `partition` to `lines` until the channel closes.
pub fn forward_console(
    client: &LinkClient,
    partition: &str,
    lines: mpsc::UnboundedSender<RunLine>,
) -> Result<(), TargetError> {
    let channel = ChannelName::console(partition);
    let handle = client
        .open_channel(&channel)
        .map_err(|source| TargetError::Channel {
            channel: channel.clone(),
            source,
        })?;
    let name = partition.to_owned();
    std::thread::Builder::new()
        .name("hv-dap-console".into())
        .spawn(move || {
            let mut pending = Vec::new();
            while let Ok(data) = handle.recv() {
                pending.extend_from_slice(&data);
                while let Some(i) = pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=i).collect();
                    let text = String::from_utf8_lossy(&line);
                    let text = text.trim_end_matches(['\r', '\n']);
                    if lines.send(("stdout", format!("[{name}] {text}"))).is_err() {
                        return;
                    }
                }
            }
        })
        .map_err(|source| TargetError::Io {
            what: "cannot start a thread",
            source,
        })?;
    Ok(())
}
