//! The host-link server inside the hypervisor process.
//!
//! [`Agent::start`] binds the system's link (by default hv-link's Unix socket for the system
//! name, mode 0600; or loopback TCP with a token file; or a pty) and serves any number of host
//! tools at once, one thread per connection. Per connection, after the handshake:
//!
//! - channel 0 is the JSON-RPC control service (`system.info`, `partitions.list`,
//!   `partition.pause|resume|reset|inject_irq`, `channel.open|close`,
//!   `events.subscribe|unsubscribe`);
//! - each `gdb:<p>` / `gdb:<p>.<vcpu>` channel drives one [`GdbSession`](crate::gdb::GdbSession),
//!   owned by one client at a time across all connections; closing the channel or dropping the
//!   connection detaches (breakpoints removed, guest resumed unless configured otherwise);
//! - each `console:<p>` channel streams that partition's console output to the client, and the
//!   client's bytes go to the partition's UART;
//! - each `trace` channel streams trace record batches (a header first; see `server/trace.rs`
//!   and hv-link's `trace` module); `trace.start|stop` switch recording, `partitions.stats` reads the
//!   counters.
//!
//! A malformed or oversized frame, a bad token or a wrong protocol version closes that one
//! connection (with a JSON-RPC error or a handshake refusal saying why); the hypervisor and
//! the other clients are not affected. [`Agent::shutdown`] stops the listener, detaches every
//! gdb session and removes the socket file.

mod connection;
mod control;
mod events;
mod trace;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use hv_config::AgentConfig;
use hv_core::{PartitionHandle, System, SystemEvent};
use hv_link::transport::BindOptions;
use hv_link::{
    ChannelClaims, Connection, FrameWriter, LinkAddr, Listener, ServerConfig, TransportError,
};

use crate::gdb::GdbSessionOptions;

pub use control::{link_partition_state, link_vcpu_state};

/// Capacity of the agent's subscription to system events.
const EVENT_CAPACITY: usize = 1 << 16;

/// Errors starting the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The configured link address does not parse.
    #[error("bad agent link address {addr:?} in the system description")]
    BadLink {
        /// The address as written.
        addr: String,
        /// Why it was rejected.
        #[source]
        source: TransportError,
    },
    /// No default socket path for this system name.
    #[error("no default link path for system {system:?}")]
    DefaultPath {
        /// The system name.
        system: String,
        /// Why.
        #[source]
        source: TransportError,
    },
    /// The link could not be bound (socket in use, port taken, bad directory, ...).
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: LinkAddr,
        /// Why.
        #[source]
        source: TransportError,
    },
    /// A server thread could not be started.
    #[error("cannot start a debug agent thread")]
    Thread(#[from] std::io::Error),
}

/// Knobs of [`Agent::start`] beyond the system description's `[agent]` table.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// Link address overriding `[agent] link` (e.g. `hv run --link`).
    pub link: Option<LinkAddr>,
    /// Server name and version sent in the welcome.
    pub server_name: String,
    /// How long a new client has to send its hello (`None`: forever).
    pub handshake_timeout: Option<Duration>,
    /// Console and event frames queued per client before new ones are dropped (counted).
    pub queue_capacity: usize,
}

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions {
            link: None,
            server_name: concat!("hvdk-debug-agent ", env!("CARGO_PKG_VERSION")).to_owned(),
            handshake_timeout: Some(hv_link::server::DEFAULT_HANDSHAKE_TIMEOUT),
            queue_capacity: 4096,
        }
    }
}

/// State shared by the accept loop, the event dispatcher and every connection.
pub(crate) struct Shared {
    pub(crate) system: String,
    pub(crate) partitions: Arc<[PartitionHandle]>,
    pub(crate) server: ServerConfig,
    pub(crate) claims: ChannelClaims,
    pub(crate) sinks: events::Sinks,
    pub(crate) trace: trace::TraceHub,
    /// The `trace` channel header (encoded once).
    pub(crate) trace_header: Vec<u8>,
    pub(crate) gdb_options: GdbSessionOptions,
    pub(crate) queue_capacity: usize,
    conns: Mutex<Registry>,
    pub(crate) malformed: AtomicU64,
}

impl Shared {
    pub(crate) fn partition(&self, name: &str) -> Option<&PartitionHandle> {
        self.partitions.iter().find(|p| p.name() == name)
    }
}

#[derive(Default)]
struct Registry {
    stopping: bool,
    next: u64,
    live: Vec<ConnEntry>,
}

struct ConnEntry {
    writer: FrameWriter,
    thread: JoinHandle<()>,
}

/// The running host-link server. Dropping it shuts it down like [`Agent::shutdown`].
pub struct Agent {
    local: LinkAddr,
    token: Option<String>,
    token_file: Option<PathBuf>,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
    dispatcher: Option<JoinHandle<()>>,
    drainer: Option<JoinHandle<()>>,
    stop: Option<Sender<()>>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("system", &self.shared.system)
            .field("link", &self.local)
            .finish_non_exhaustive()
    }
}

/// The address the agent listens on for `system` given `config` and `options`: the override,
/// else `[agent] link`, else hv-link's default Unix socket for the system name.
pub fn link_addr(
    system: &str,
    config: &AgentConfig,
    options: &AgentOptions,
) -> Result<LinkAddr, AgentError> {
    if let Some(addr) = &options.link {
        return Ok(addr.clone());
    }
    match &config.link {
        Some(text) => text.parse().map_err(|source| AgentError::BadLink {
            addr: text.clone(),
            source,
        }),
        None => hv_link::default_link_path(system)
            .map(LinkAddr::Unix)
            .map_err(|source| AgentError::DefaultPath {
                system: system.to_owned(),
                source,
            }),
    }
}

impl Agent {
    /// Binds the link for `system` and starts serving. Call after `System::new` (before or
    /// after `System::start`); the agent keeps handles to the partitions, not to `system`.
    pub fn start(
        system: &System,
        config: &AgentConfig,
        options: AgentOptions,
    ) -> Result<Agent, AgentError> {
        let listening = Arc::new(events::Listening::default());
        let wanted = listening.clone();
        let events =
            system.subscribe_to(EVENT_CAPACITY, Box::new(move |event| wanted.wants(event)));
        let channels = trace::channels(&system.config);
        Agent::start_with(
            &system.config.name,
            system.handles(),
            (events, listening),
            config,
            options,
            channels,
        )
    }

    /// Like [`start`](Self::start) from the parts of a system: its name, its partitions in
    /// description order and a subscription to its events.
    pub fn start_parts(
        system: &str,
        partitions: Vec<PartitionHandle>,
        events: Receiver<SystemEvent>,
        config: &AgentConfig,
        options: AgentOptions,
    ) -> Result<Agent, AgentError> {
        let listening = Arc::new(events::Listening::default());
        Agent::start_with(
            system,
            partitions,
            (events, listening),
            config,
            options,
            Vec::new(),
        )
    }

    /// [`start_parts`](Self::start_parts) with the IPC channels for the trace header; the
    /// events come with the counts of listeners their subscription may filter on.
    fn start_with(
        system: &str,
        partitions: Vec<PartitionHandle>,
        (events, listening): (Receiver<SystemEvent>, Arc<events::Listening>),
        config: &AgentConfig,
        options: AgentOptions,
        channels: Vec<hv_link::trace::TraceChannel>,
    ) -> Result<Agent, AgentError> {
        let addr = link_addr(system, config, &options)?;
        let bind = BindOptions {
            token_file: config.token_file.clone(),
        };
        let listener = Listener::bind_with(&addr, &bind).map_err(|source| AgentError::Bind {
            addr: addr.clone(),
            source,
        })?;
        let local = listener.local_addr().clone();
        let token = listener.token().map(str::to_owned);
        let token_file = listener.token_file().map(|p| p.to_owned());
        let mut server = ServerConfig::for_listener(&listener, options.server_name.clone(), system);
        server.handshake_timeout = options.handshake_timeout;
        let trace_header = trace::header(system, &partitions, channels);
        let shared = Arc::new(Shared {
            system: system.to_owned(),
            partitions: partitions.into(),
            server,
            claims: ChannelClaims::new(),
            sinks: events::Sinks::new(listening),
            trace: trace::TraceHub::default(),
            trace_header,
            gdb_options: GdbSessionOptions {
                resume_on_detach: config.resume_on_detach,
            },
            queue_capacity: options.queue_capacity.max(1),
            conns: Mutex::default(),
            malformed: AtomicU64::new(0),
        });
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(0);
        let drain_stop = stop_rx.clone();
        let s = shared.clone();
        let dispatcher = std::thread::Builder::new()
            .name("agent-events".into())
            .spawn(move || events::dispatch(&s, &events, &stop_rx))?;
        let s = shared.clone();
        let drainer = std::thread::Builder::new()
            .name("agent-trace".into())
            .spawn(move || trace::drain_loop(&s, &drain_stop));
        let drainer = match drainer {
            Ok(d) => d,
            Err(e) => {
                drop(stop_tx);
                let _ = dispatcher.join();
                return Err(e.into());
            }
        };
        let s = shared.clone();
        let accept = std::thread::Builder::new()
            .name("agent-accept".into())
            .spawn(move || accept_loop(&s, &listener));
        let accept = match accept {
            Ok(a) => a,
            Err(e) => {
                drop(stop_tx);
                let _ = dispatcher.join();
                let _ = drainer.join();
                return Err(e.into());
            }
        };
        tracing::info!(system, link = %local, "debug agent listening");
        Ok(Agent {
            local,
            token,
            token_file,
            shared,
            accept: Some(accept),
            dispatcher: Some(dispatcher),
            drainer: Some(drainer),
            stop: Some(stop_tx),
        })
    }

    /// Where the agent listens: `unix:<path>`, `tcp:127.0.0.1:<port>` (the real port when 0
    /// was asked for) or `serial:<pty slave path>`.
    pub fn local_addr(&self) -> &LinkAddr {
        &self.local
    }

    /// The token TCP clients must present (`None` for Unix sockets and ptys).
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The file the TCP token was written to (mode 0600).
    pub fn token_file(&self) -> Option<&std::path::Path> {
        self.token_file.as_deref()
    }

    /// Number of client connections currently open (including ones still in the handshake).
    pub fn clients(&self) -> usize {
        let reg = self.shared.conns.lock().unwrap_or_else(|p| p.into_inner());
        reg.live.iter().filter(|c| !c.thread.is_finished()).count()
    }

    /// Connections closed so far because of malformed frames.
    pub fn malformed_connections(&self) -> u64 {
        self.shared.malformed.load(Ordering::Relaxed)
    }

    /// Opens gdb sessions in this process without the host link, for the gdb bridge of
    /// `hv run`; they share the link's ownership rules (one debugger per guest).
    pub fn local_gdb(&self) -> crate::gdb::LocalGdb {
        crate::gdb::LocalGdb {
            partitions: self.shared.partitions.clone(),
            claims: self.shared.claims.clone(),
            options: self.shared.gdb_options,
        }
    }

    /// Stops accepting, closes every connection (gdb sessions detach; guests resume when
    /// `resume_on_detach`), and removes the socket file. Returns when all threads are done.
    pub fn shutdown(mut self) {
        self.stop_all();
    }

    fn stop_all(&mut self) {
        let Some(accept) = self.accept.take() else {
            return;
        };
        let live = {
            let mut reg = self.shared.conns.lock().unwrap_or_else(|p| p.into_inner());
            reg.stopping = true;
            std::mem::take(&mut reg.live)
        };
        for c in &live {
            c.writer.shutdown();
        }
        for c in live {
            let _ = c.thread.join();
        }
        // Wake the accept loop with a connection of our own; keep it open until the loop has
        // seen it (a pty listener only notices an open slave).
        let waker = wake(&self.local);
        if waker.is_some() || accept.is_finished() {
            let _ = accept.join();
        } else {
            tracing::warn!(link = %self.local, "cannot wake the accept loop; leaving it behind");
        }
        drop(waker);
        drop(self.stop.take());
        if let Some(d) = self.dispatcher.take() {
            let _ = d.join();
        }
        if let Some(d) = self.drainer.take() {
            let _ = d.join();
        }
        tracing::info!(system = %self.shared.system, "debug agent stopped");
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// Connects to our own listener so that a blocked `accept` returns.
fn wake(addr: &LinkAddr) -> Option<Connection> {
    hv_link::connect(addr).ok()
}

fn accept_loop(shared: &Arc<Shared>, listener: &Listener) {
    loop {
        let conn = match listener.accept() {
            Ok(c) => c,
            Err(e) => {
                if shared
                    .conns
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .stopping
                {
                    return;
                }
                tracing::warn!("debug agent: accept failed: {e}");
                // Not the data path: back off so a persistent error (EMFILE) does not spin; a
                // refused peer is not an error of ours, and the next client must not wait.
                if !matches!(e, hv_link::TransportError::PeerNotAllowed { .. }) {
                    std::thread::sleep(Duration::from_millis(100));
                }
                continue;
            }
        };
        let mut reg = shared.conns.lock().unwrap_or_else(|p| p.into_inner());
        if reg.stopping {
            return;
        }
        reg.live.retain(|c| !c.thread.is_finished());
        reg.next += 1;
        let writer = conn.writer().clone();
        let s = shared.clone();
        let name = format!("agent-conn{}", reg.next);
        match std::thread::Builder::new()
            .name(name)
            .spawn(move || connection::serve(&s, conn))
        {
            Ok(thread) => reg.live.push(ConnEntry { writer, thread }),
            Err(e) => {
                writer.shutdown();
                tracing::warn!("debug agent: cannot start a connection thread: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests;
