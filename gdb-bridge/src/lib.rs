//! gdb-bridge: gives stock gdb (or lldb) a local TCP port per guest and per vCPU, and forwards
//! the GDB remote bytes over the hypervisor's host link.
//!
//! [`Bridge::start`] connects to the link as an ordinary hv-link client, lists the partitions
//! and listens on 127.0.0.1:
//!
//! - partition `k` (0-based, in system-description order) on `BASE + k` — a multi-thread
//!   target whose threads are the partition's vCPUs;
//! - vCPU `j` of partition `k` alone on `BASE + 100 + 16·k + j` — a single-thread target that
//!   stops only that vCPU.
//!
//! Each accepted TCP connection opens the matching `gdb:<partition>` or
//! `gdb:<partition>.<vcpu>` channel and forwards bytes both ways until either side closes.
//! When gdb disconnects, the channel is closed and the agent detaches (the guest runs on).
//! When the channel is refused (another debugger owns the guest), gdb is answered with GDB
//! remote error replies (`E.<message>`) that it prints, and the connection is closed.
//!
//! The port table ([`format_port_table`]) is stable: a header `partition  vcpu  port  image`,
//! then per partition one line with vcpu `all` followed by one line per vCPU, columns
//! separated by at least two spaces.
//!
//! In the hypervisor's own process (`hv run`), [`BridgeOptions::in_process`] hands each
//! session to the debug agent directly ([`InProcessGdb`]): gdb's bytes go into the stub on the
//! connection's thread and the stub writes its replies to gdb itself, with no host-link frame,
//! socket or thread between them. The link still lists the partitions, and the agent applies
//! the same ownership rules to both paths.
//!
//! Depends on hv-link only (no KVM): it builds and runs on any host.

mod forward;

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crossbeam_channel::Receiver;
use hv_link::handshake::caps;
use hv_link::transport::{default_token_path, read_token_file};
use hv_link::{
    ChannelName, ClientError, ClientOptions, Hello, LinkAddr, LinkClient, PartitionInfo,
};

/// The default base port (a system description's `[agent] gdb_base_port` default).
pub const DEFAULT_BASE_PORT: u16 = hv_config::DEFAULT_GDB_BASE_PORT;
/// Offset of the first per-vCPU port from the base port.
pub const VCPU_PORT_OFFSET: u16 = 100;
/// Ports reserved per partition for its vCPUs.
pub const VCPU_PORTS_PER_PARTITION: u16 = 16;

/// Errors starting a bridge.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The link could not be reached or the handshake failed.
    #[error("cannot connect to the hypervisor at {addr}")]
    Connect {
        /// The link address.
        addr: LinkAddr,
        /// Why.
        #[source]
        source: ClientError,
    },
    /// The link is a serial line, which carries one connection; the bridge needs one per gdb
    /// session.
    #[error(
        "the gdb bridge cannot use the serial link {0}: a serial line carries one connection and the bridge needs one per gdb session; give the hypervisor a unix: or tcp: link for gdb"
    )]
    SerialLink(LinkAddr),
    /// `partitions.list` failed.
    #[error("cannot list the partitions")]
    List(#[source] ClientError),
    /// A port the bridge needs is taken.
    #[error("port {port} ({what}) is already in use on 127.0.0.1; choose another base port")]
    PortInUse {
        /// The port.
        port: u16,
        /// What it was for, e.g. `gdb for partition control`.
        what: String,
    },
    /// A port could not be bound for another reason.
    #[error("cannot listen on 127.0.0.1:{port} ({what})")]
    Bind {
        /// The port.
        port: u16,
        /// What it was for.
        what: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The port plan does not fit below 65536 (or a partition has too many vCPUs).
    #[error(
        "no port for {what} with base port {base}: it would be beyond 65535; choose a lower base port"
    )]
    PortOutOfRange {
        /// The base port.
        base: u16,
        /// What needed the port.
        what: String,
    },
    /// A partition index or vCPU count the port plan cannot express.
    #[error("{what}: the port plan has room for {limit}")]
    TooMany {
        /// What overflowed.
        what: String,
        /// The limit.
        limit: u16,
    },
    /// A bridge thread could not be started.
    #[error("cannot start a bridge thread")]
    Thread(#[from] io::Error),
}

/// One listening port: which guest (or vCPU) it debugs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortEntry {
    /// Partition name.
    pub partition: String,
    /// `None`: the whole partition; `Some(j)`: vCPU `j` alone.
    pub vcpu: Option<u32>,
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// The partition's ELF image (give it to gdb for symbols).
    pub image: String,
}

impl PortEntry {
    /// The host-link channel this port forwards to.
    pub fn channel(&self) -> ChannelName {
        match self.vcpu {
            None => ChannelName::gdb(self.partition.clone()),
            Some(v) => ChannelName::gdb_vcpu(self.partition.clone(), v),
        }
    }

    /// `gdb for partition control` / `gdb for vCPU 1 of partition worker`.
    pub fn describe(&self) -> String {
        match self.vcpu {
            None => format!("gdb for partition {}", self.partition),
            Some(v) => format!("gdb for vCPU {v} of partition {}", self.partition),
        }
    }
}

/// Port of partition `k`: `base + k` (`None` past 65535).
pub fn partition_port(base: u16, k: usize) -> Option<u16> {
    u16::try_from(k).ok().and_then(|k| base.checked_add(k))
}

/// Port of vCPU `j` of partition `k`: `base + 100 + 16·k + j` (`None` past 65535).
pub fn vcpu_port(base: u16, k: usize, j: u32) -> Option<u16> {
    let off = u32::from(VCPU_PORT_OFFSET)
        + u32::from(VCPU_PORTS_PER_PARTITION) * u32::try_from(k).ok()?
        + j;
    u16::try_from(u32::from(base) + off).ok()
}

/// The ports for `partitions` (in description order) from `base`: each partition, then each
/// of its vCPUs.
pub fn port_plan(partitions: &[PartitionInfo], base: u16) -> Result<Vec<PortEntry>, BridgeError> {
    if partitions.len() > usize::from(VCPU_PORT_OFFSET) {
        return Err(BridgeError::TooMany {
            what: format!("{} partitions", partitions.len()),
            limit: VCPU_PORT_OFFSET,
        });
    }
    let mut plan = Vec::new();
    for (k, p) in partitions.iter().enumerate() {
        let whole = PortEntry {
            partition: p.name.clone(),
            vcpu: None,
            port: 0,
            image: p.image.clone(),
        };
        let port = partition_port(base, k).ok_or_else(|| BridgeError::PortOutOfRange {
            base,
            what: whole.describe(),
        })?;
        plan.push(PortEntry { port, ..whole });
        if p.vcpus.len() > usize::from(VCPU_PORTS_PER_PARTITION) {
            return Err(BridgeError::TooMany {
                what: format!("partition {} with {} vCPUs", p.name, p.vcpus.len()),
                limit: VCPU_PORTS_PER_PARTITION,
            });
        }
        for v in &p.vcpus {
            let entry = PortEntry {
                partition: p.name.clone(),
                vcpu: Some(v.index),
                port: 0,
                image: p.image.clone(),
            };
            let port = (v.index < u32::from(VCPU_PORTS_PER_PARTITION))
                .then(|| vcpu_port(base, k, v.index))
                .flatten()
                .ok_or_else(|| BridgeError::PortOutOfRange {
                    base,
                    what: entry.describe(),
                })?;
            plan.push(PortEntry { port, ..entry });
        }
    }
    Ok(plan)
}

/// The port table: `partition  vcpu  port  image`, one line per entry, `all` for the whole
/// partition; each line ends with a newline.
pub fn format_port_table(entries: &[PortEntry]) -> String {
    let vcpu = |e: &PortEntry| e.vcpu.map_or_else(|| "all".to_owned(), |v| v.to_string());
    let w_part = entries
        .iter()
        .map(|e| e.partition.len())
        .max()
        .unwrap_or(0)
        .max("partition".len());
    let w_vcpu = entries
        .iter()
        .map(|e| vcpu(e).len())
        .max()
        .unwrap_or(0)
        .max("vcpu".len());
    let w_port = "port".len().max(5);
    let mut out = format!(
        "{:<w_part$}  {:<w_vcpu$}  {:<w_port$}  image\n",
        "partition", "vcpu", "port"
    );
    for e in entries {
        out.push_str(&format!(
            "{:<w_part$}  {:<w_vcpu$}  {:<w_port$}  {}\n",
            e.partition,
            vcpu(e),
            e.port,
            e.image
        ));
    }
    out
}

/// Something that happened on a bridge port (for the user's log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BridgeEvent {
    /// A debugger connected and its channel opened.
    Attached {
        /// Local port.
        port: u16,
        /// Channel opened.
        channel: ChannelName,
        /// The debugger's address.
        peer: Option<SocketAddr>,
    },
    /// A debugger disconnected (the channel is closed; the agent resumed the guest).
    Detached {
        /// Local port.
        port: u16,
        /// Channel closed.
        channel: ChannelName,
        /// The debugger's address.
        peer: Option<SocketAddr>,
    },
    /// A debugger was turned away (the guest is owned by another debugger, or the link is gone).
    Refused {
        /// Local port.
        port: u16,
        /// Channel asked for.
        channel: ChannelName,
        /// The debugger's address.
        peer: Option<SocketAddr>,
        /// Why (also sent to gdb as an `E.` reply).
        reason: String,
    },
    /// The host link closed (hypervisor stopped); the bridge forwards nothing more.
    LinkClosed,
}

impl std::fmt::Display for BridgeEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let from = |p: &Option<SocketAddr>| p.map(|a| format!(" from {a}")).unwrap_or_default();
        match self {
            BridgeEvent::Attached {
                port,
                channel,
                peer,
            } => {
                write!(f, "gdb attached to {channel} on port {port}{}", from(peer))
            }
            BridgeEvent::Detached {
                port,
                channel,
                peer,
            } => {
                write!(
                    f,
                    "gdb detached from {channel} on port {port}{}",
                    from(peer)
                )
            }
            BridgeEvent::Refused {
                port,
                channel,
                peer,
                reason,
            } => write!(
                f,
                "refused gdb{} on port {port} ({channel}): {reason}",
                from(peer)
            ),
            BridgeEvent::LinkClosed => f.write_str("the host link closed; no more forwarding"),
        }
    }
}

/// Receives [`BridgeEvent`]s (called from bridge threads).
pub type EventSink = Arc<dyn Fn(&BridgeEvent) + Send + Sync>;

/// gdb's replies, one call per reply; returns false once gdb is gone.
pub type ToGdb = Box<dyn FnMut(&[u8]) -> bool + Send>;

/// Called once if a session ends on its own (gdb's `D` or `k`, the partition exited, a packet
/// the stub rejects), after the guest was let go; the argument says why.
pub type SessionEnded = Box<dyn FnOnce(String) + Send>;

/// Opens gdb sessions in the hypervisor's own process, for a bridge that runs beside the debug
/// agent (`hv run`): gdb's bytes go straight into the stub and its replies straight to gdb,
/// without the host link. The link still serves everything else (partition list, ownership
/// across clients).
pub trait InProcessGdb: Send + Sync {
    /// Opens a session on `channel` (a `gdb:` channel name) for client `client_name`, or says
    /// why not (the guest is owned by another debugger, unknown partition or vCPU).
    fn open(
        &self,
        channel: &ChannelName,
        client_name: &str,
        to_gdb: ToGdb,
        ended: SessionEnded,
    ) -> Result<Box<dyn InProcessSession>, String>;
}

/// One session opened by [`InProcessGdb::open`].
pub trait InProcessSession: Send {
    /// Bytes from gdb, handled before this returns (replies go out through `to_gdb`), except
    /// the stop of a running target, which comes later.
    fn input(&self, bytes: &[u8]);
    /// Detaches (the guest runs on) and releases the guest; returns when that is done.
    fn close(self: Box<Self>);
}

/// Knobs of [`Bridge::start`].
#[derive(Clone)]
pub struct BridgeOptions {
    /// Client name in the hello (shown to other clients as a channel's owner).
    pub client_name: String,
    /// Token for a TCP link (else read from `token_file` or hv-link's default token path).
    pub token: Option<String>,
    /// Token file for a TCP link.
    pub token_file: Option<PathBuf>,
    /// Where events go (default: `tracing` at info level).
    pub events: Option<EventSink>,
    /// Sessions opened in this process instead of over the link (the bridge of `hv run`).
    pub in_process: Option<Arc<dyn InProcessGdb>>,
}

impl std::fmt::Debug for BridgeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeOptions")
            .field("client_name", &self.client_name)
            .field("token_file", &self.token_file)
            .finish_non_exhaustive()
    }
}

impl Default for BridgeOptions {
    fn default() -> Self {
        BridgeOptions {
            client_name: format!("gdb-bridge[{}]", std::process::id()),
            token: None,
            token_file: None,
            events: None,
            in_process: None,
        }
    }
}

/// State shared by the accept threads and the forwarding threads.
pub(crate) struct Shared {
    pub(crate) client: LinkClient,
    /// Where each gdb session opens its own connection, and the hello it sends.
    pub(crate) link: LinkAddr,
    pub(crate) hello: Hello,
    /// Sessions opened in this process, when the bridge runs beside the agent.
    pub(crate) in_process: Option<Arc<dyn InProcessGdb>>,
    events: Option<EventSink>,
    pub(crate) stopping: AtomicBool,
    /// Channels this bridge has open, and who holds them.
    pub(crate) attached: Mutex<HashMap<ChannelName, forward::Holder>>,
    /// Signalled whenever a channel leaves `attached`.
    pub(crate) detached: Condvar,
    conns: Mutex<Vec<forward::ConnEntry>>,
}

impl Shared {
    pub(crate) fn emit(&self, event: &BridgeEvent) {
        match &self.events {
            Some(sink) => sink(event),
            None => tracing::info!("gdb-bridge: {event}"),
        }
    }

    pub(crate) fn attached(&self) -> MutexGuard<'_, HashMap<ChannelName, forward::Holder>> {
        self.attached.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn conns(&self) -> MutexGuard<'_, Vec<forward::ConnEntry>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running bridge. Dropping it shuts it down like [`Bridge::shutdown`].
pub struct Bridge {
    shared: Arc<Shared>,
    system: String,
    link: LinkAddr,
    ports: Vec<PortEntry>,
    accept: Vec<JoinHandle<()>>,
    monitor: Option<JoinHandle<()>>,
    closed: Receiver<()>,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("system", &self.system)
            .field("link", &self.link)
            .field("ports", &self.ports)
            .finish_non_exhaustive()
    }
}

fn bind(entry: &PortEntry) -> Result<TcpListener, BridgeError> {
    let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, entry.port);
    TcpListener::bind(addr).map_err(|source| {
        if source.kind() == io::ErrorKind::AddrInUse {
            BridgeError::PortInUse {
                port: entry.port,
                what: entry.describe(),
            }
        } else {
            BridgeError::Bind {
                port: entry.port,
                what: entry.describe(),
                source,
            }
        }
    })
}

impl Bridge {
    /// Connects to `link`, lists the partitions and listens on every port of the plan
    /// ([`port_plan`]) from `base_port`. Fails, naming the port, if any port is taken.
    pub fn start(
        link: &LinkAddr,
        base_port: u16,
        options: BridgeOptions,
    ) -> Result<Bridge, BridgeError> {
        if let LinkAddr::Serial(_) = link {
            return Err(BridgeError::SerialLink(link.clone()));
        }
        let token = match (&options.token, link) {
            (Some(t), _) => Some(t.clone()),
            (None, LinkAddr::Tcp(a)) => {
                let path = options
                    .token_file
                    .clone()
                    .unwrap_or_else(|| default_token_path(a.port()));
                let token = read_token_file(&path).map_err(|e| BridgeError::Connect {
                    addr: link.clone(),
                    source: ClientError::Transport(e),
                })?;
                Some(token)
            }
            (None, _) => None,
        };
        let capabilities: Vec<String> = [caps::CONTROL, caps::GDB, caps::GDB_VCPU]
            .map(String::from)
            .to_vec();
        let client_options = ClientOptions {
            token: token.clone(),
            capabilities: capabilities.clone(),
            ..ClientOptions::new(options.client_name.clone())
        };
        let hello = Hello {
            capabilities,
            token,
            ..Hello::new(options.client_name.clone())
        };
        let client = LinkClient::connect_with(link, client_options).map_err(|source| {
            BridgeError::Connect {
                addr: link.clone(),
                source,
            }
        })?;
        let partitions = client.partitions().map_err(BridgeError::List)?;
        let ports = port_plan(&partitions, base_port)?;
        let listeners = ports.iter().map(bind).collect::<Result<Vec<_>, _>>()?;
        let system = client.welcome().system.clone();
        let notifications = client.notifications().clone();
        let shared = Arc::new(Shared {
            client,
            link: link.clone(),
            hello,
            in_process: options.in_process,
            events: options.events,
            stopping: AtomicBool::new(false),
            attached: Mutex::default(),
            detached: Condvar::new(),
            conns: Mutex::default(),
        });
        // The monitor drains notifications; when the link closes their sender is dropped.
        let (closed_tx, closed) = crossbeam_channel::bounded::<()>(0);
        let s = shared.clone();
        let monitor = std::thread::Builder::new()
            .name("gdb-bridge-link".into())
            .spawn(move || {
                while notifications.recv().is_ok() {}
                if !s.stopping.load(Ordering::SeqCst) {
                    s.emit(&BridgeEvent::LinkClosed);
                }
                drop(closed_tx);
            })?;
        let mut bridge = Bridge {
            shared,
            system,
            link: link.clone(),
            ports: ports.clone(),
            accept: Vec::new(),
            monitor: Some(monitor),
            closed,
        };
        for (entry, listener) in ports.into_iter().zip(listeners) {
            let s = bridge.shared.clone();
            let t = std::thread::Builder::new()
                .name(format!("gdb-bridge-{}", entry.port))
                .spawn(move || accept_loop(&s, &entry, &listener))?;
            bridge.accept.push(t);
        }
        Ok(bridge)
    }

    /// The ports, in table order.
    pub fn ports(&self) -> &[PortEntry] {
        &self.ports
    }

    /// The port table ([`format_port_table`]).
    pub fn port_table(&self) -> String {
        format_port_table(&self.ports)
    }

    /// Name of the system on the other side of the link.
    pub fn system(&self) -> &str {
        &self.system
    }

    /// The link the bridge is connected to.
    pub fn link(&self) -> &LinkAddr {
        &self.link
    }

    /// A receiver that disconnects when the host link closes (it never receives a value);
    /// use it in `crossbeam_channel::select!` next to other events.
    pub fn link_closed(&self) -> Receiver<()> {
        self.closed.clone()
    }

    /// Blocks until the host link closes.
    pub fn wait(&self) {
        let _ = self.closed.recv();
    }

    /// Stops listening, closes every forwarded connection (their channels close; the agent
    /// resumes the guests) and disconnects from the link.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if self.shared.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        for entry in &self.ports {
            // Wake the accept loop; it sees `stopping` and ends.
            let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, entry.port));
        }
        for t in self.accept.drain(..) {
            let _ = t.join();
        }
        let conns = std::mem::take(&mut *self.shared.conns());
        for c in &conns {
            c.stop();
        }
        for c in conns {
            c.join();
        }
        // Closing the link ends the monitor (the notification sender goes with the router).
        self.shared.client.shutdown();
        if let Some(m) = self.monitor.take() {
            let _ = m.join();
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(shared: &Arc<Shared>, entry: &PortEntry, listener: &TcpListener) {
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(port = entry.port, "gdb-bridge: accept failed: {e}");
                // Not the data path: back off so a persistent error (EMFILE) does not spin.
                std::thread::sleep(std::time::Duration::from_millis(100));
                continue;
            }
        };
        let mut conns = shared.conns();
        conns.retain(|c| !c.is_finished());
        match forward::ConnEntry::spawn(shared.clone(), entry.clone(), stream) {
            Ok(c) => conns.push(c),
            Err(e) => tracing::warn!(
                port = entry.port,
                "gdb-bridge: cannot start a connection thread: {e}"
            ),
        }
    }
}

#[cfg(test)]
mod tests;
