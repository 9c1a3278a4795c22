//! One gdb TCP connection: open its `gdb:` channel, forward bytes both ways (one thread per
//! direction, one frame per TCP read, one TCP write per frame), close the channel when gdb
//! goes; or turn gdb away with `E.<reason>` replies when the channel is refused.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use hv_link::{ChannelHandle, ChannelName, ClientError};

use crate::{BridgeEvent, PortEntry, Shared};

/// Bytes read from gdb per frame at most.
const READ_CHUNK: usize = 64 * 1024;
/// How long a refused gdb may stay silent before the bridge hangs up.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Packets answered with the error before hanging up on a refused gdb.
const REFUSE_PACKETS: usize = 8;

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

fn conflicts(a: &ChannelName, b: &ChannelName) -> bool {
    match (a, b) {
        (
            ChannelName::Gdb {
                partition: pa,
                vcpu: va,
            },
            ChannelName::Gdb {
                partition: pb,
                vcpu: vb,
            },
        ) => pa == pb && (va.is_none() || vb.is_none() || va == vb),
        _ => false,
    }
}

/// Reserve `channel` for this connection unless this bridge already debugs the same guest.
fn reserve(
    shared: &Shared,
    channel: &ChannelName,
    port: u16,
    peer: Option<SocketAddr>,
) -> Result<(), String> {
    let mut attached = shared.attached();
    if let Some((name, (p, who))) = attached.iter().find(|(n, _)| conflicts(n, channel)) {
        let who = who.map(|a| format!(" by gdb at {a}")).unwrap_or_default();
        return Err(format!(
            "{channel} is not available: {name} is already being debugged through port {p}{who}; one debugger per guest"
        ));
    }
    attached.insert(channel.clone(), (port, peer));
    Ok(())
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
    let handle = match shared.client.open_channel(&channel) {
        Ok(h) => h,
        Err(e) => {
            shared.attached().remove(&channel);
            let reason = match e {
                ClientError::Rpc { error, .. } => error.message,
                ClientError::Closed { .. } | ClientError::Transport(_) => {
                    format!("the hypervisor's host link is closed ({e})")
                }
                other => other.to_string(),
            };
            return refused(reason, stream);
        }
    };
    shared.emit(&BridgeEvent::Attached {
        port: entry.port,
        channel: channel.clone(),
        peer,
    });
    forward(handle, stream, || {
        shared.attached().remove(&channel);
    });
    shared.emit(&BridgeEvent::Detached {
        port: entry.port,
        channel,
        peer,
    });
}

/// Forward until gdb or the channel closes; then close the channel (waiting for the agent to
/// detach), call `released`, and only then hang up on gdb: a debugger that sees the hang-up
/// may reconnect at once and find the guest free.
fn forward(handle: ChannelHandle, mut from_gdb: TcpStream, released: impl FnOnce()) {
    let rx = handle.receiver().clone();
    let closing = Arc::new(AtomicBool::new(false));
    let to_gdb = from_gdb.try_clone();
    let down_closing = closing.clone();
    let down = to_gdb.and_then(|mut to_gdb| {
        std::thread::Builder::new()
            .name("gdb-bridge-down".into())
            .spawn(move || {
                while let Ok(data) = rx.recv() {
                    if to_gdb.write_all(&data).is_err() {
                        break;
                    }
                }
                // Closed by the agent or the link (not by us): hang up so the reading side
                // ends too.
                if !down_closing.load(Ordering::SeqCst) {
                    let _ = to_gdb.shutdown(Shutdown::Both);
                }
            })
    });
    let down = match down {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!("gdb-bridge: cannot start a forwarding thread: {e}");
            let _ = handle.close();
            released();
            return;
        }
    };
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match from_gdb.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if handle.send(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    closing.store(true, Ordering::SeqCst);
    let _ = handle.close();
    released();
    let _ = from_gdb.shutdown(Shutdown::Both);
    let _ = down.join();
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
