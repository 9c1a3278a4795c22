//! Server-side helpers for the debug agent: handshake acceptance with token check, gdb
//! channel ownership across clients, per-connection channel tables, and reply helpers.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::channel::{ChannelId, ChannelName};
use crate::control::Event;
use crate::handshake::{
    HandshakeError, HandshakeMessage, HandshakePolicy, Hello, Welcome, answer_hello, caps,
    malformed_hello_refusal,
};
use crate::rpc::{RequestId, RpcError, encode_error, encode_notification, encode_result};
use crate::transport::{Connection, FrameWriter, Listener, TransportError};

/// Default time a client has to send its hello.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How a server answers hellos.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Server name and version for the welcome (e.g. `hvdk-debug-agent 0.1.0`).
    pub server: String,
    /// Name of the running system.
    pub system: String,
    /// Capabilities offered (default: all of [`caps::ALL`]).
    pub capabilities: Vec<String>,
    /// Token clients must present (`None`: none needed).
    pub token: Option<String>,
    /// How long to wait for the hello (`None`: forever).
    pub handshake_timeout: Option<Duration>,
}

impl ServerConfig {
    /// Every capability, no token, [`DEFAULT_HANDSHAKE_TIMEOUT`].
    pub fn new(server: impl Into<String>, system: impl Into<String>) -> Self {
        Self {
            server: server.into(),
            system: system.into(),
            capabilities: caps::ALL.iter().map(|c| (*c).to_owned()).collect(),
            token: None,
            handshake_timeout: Some(DEFAULT_HANDSHAKE_TIMEOUT),
        }
    }

    /// Like [`new`](Self::new), requiring the listener's token if it has one (TCP).
    pub fn for_listener(
        listener: &Listener,
        server: impl Into<String>,
        system: impl Into<String>,
    ) -> Self {
        Self {
            token: listener.token().map(str::to_owned),
            ..Self::new(server, system)
        }
    }

    fn policy(&self) -> HandshakePolicy {
        HandshakePolicy {
            server: self.server.clone(),
            system: self.system.clone(),
            capabilities: self.capabilities.clone(),
            token: self.token.clone(),
        }
    }
}

/// Identifies one accepted connection (unique within the process).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub u64);

impl ClientId {
    /// A fresh id.
    pub fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        ClientId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// A client that passed the handshake.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// Fresh id for ownership bookkeeping.
    pub client_id: ClientId,
    /// What the client sent.
    pub hello: Hello,
    /// What was answered (negotiated version and capabilities).
    pub welcome: Welcome,
}

/// Run the server side of the handshake on a fresh connection: wait for the hello (with the
/// configured timeout), check version and token, answer welcome or refusal. On any error the
/// connection has been shut down (after sending the refusal, if any).
pub fn accept_handshake(
    conn: &mut Connection,
    cfg: &ServerConfig,
) -> Result<Accepted, HandshakeError> {
    let r = accept_inner(conn, cfg);
    if r.is_err() {
        conn.shutdown();
    }
    r
}

fn accept_inner(conn: &mut Connection, cfg: &ServerConfig) -> Result<Accepted, HandshakeError> {
    conn.set_read_timeout(cfg.handshake_timeout)?;
    let frame = conn.recv_frame()?.ok_or(HandshakeError::Closed)?;
    let answer = if frame.channel == ChannelId::CONTROL {
        answer_hello(&frame.payload, &cfg.policy())
    } else {
        let m = format!("first frame is on channel {}, expected 0", frame.channel);
        Err((malformed_hello_refusal(&m), HandshakeError::Malformed(m)))
    };
    match answer {
        Ok((hello, welcome)) => {
            conn.send_frame(
                ChannelId::CONTROL,
                &HandshakeMessage::Welcome(welcome.clone()).to_vec(),
            )?;
            conn.set_read_timeout(None)?;
            Ok(Accepted {
                client_id: ClientId::next(),
                hello,
                welcome,
            })
        }
        Err((refusal, err)) => {
            // Best effort: the client may already be gone.
            let _ = conn.send_frame(
                ChannelId::CONTROL,
                &HandshakeMessage::Refused(refusal).to_vec(),
            );
            Err(err)
        }
    }
}

/// Send a success response for request `id` on the control channel.
pub fn send_result<R: Serialize + ?Sized>(
    writer: &FrameWriter,
    id: &RequestId,
    result: &R,
) -> Result<(), TransportError> {
    match encode_result(id, result) {
        Ok(bytes) => writer.send_frame(ChannelId::CONTROL, &bytes),
        Err(e) => send_error(writer, id, &RpcError::internal(e)),
    }
}

/// Send an error response for request `id` on the control channel.
pub fn send_error(
    writer: &FrameWriter,
    id: &RequestId,
    error: &RpcError,
) -> Result<(), TransportError> {
    writer.send_frame(ChannelId::CONTROL, &encode_error(id, error))
}

/// Send event `E` as a notification on the control channel.
pub fn send_event<E: Event>(
    writer: &FrameWriter,
    params: &E::Params,
) -> Result<(), TransportError> {
    let bytes = encode_notification(E::NAME, params).map_err(|e| TransportError::Io {
        context: "encode event".into(),
        error: e.into(),
    })?;
    writer.send_frame(ChannelId::CONTROL, &bytes)
}

#[derive(Debug, Default)]
struct ClaimsInner {
    owners: HashMap<ChannelName, (ClientId, String)>,
}

/// Which client owns which gdb channel, shared by all connections of a server.
///
/// `gdb:<p>` conflicts with `gdb:<p>` and every `gdb:<p>.<n>`; `gdb:<p>.<n>` conflicts with
/// `gdb:<p>` and `gdb:<p>.<n>`. Other channel kinds are not exclusive.
#[derive(Debug, Clone, Default)]
pub struct ChannelClaims {
    inner: Arc<Mutex<ClaimsInner>>,
}

/// An ownership claim; released when dropped.
#[derive(Debug)]
pub struct ClaimGuard {
    claim: Option<(ChannelClaims, ChannelName, ClientId)>,
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if let Some((claims, name, client)) = self.claim.take() {
            let mut g = claims.inner.lock().unwrap_or_else(|p| p.into_inner());
            if g.owners.get(&name).is_some_and(|(c, _)| *c == client) {
                g.owners.remove(&name);
            }
        }
    }
}

impl ChannelClaims {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Claim `name` for `client` (whose hello name is `client_name`). Fails with
    /// [`codes::CHANNEL_OWNED`](crate::rpc::codes::CHANNEL_OWNED) if a conflicting gdb
    /// channel is owned by anyone, including this client.
    pub fn claim(
        &self,
        name: &ChannelName,
        client: ClientId,
        client_name: &str,
    ) -> Result<ClaimGuard, RpcError> {
        if !name.is_exclusive() {
            return Ok(ClaimGuard { claim: None });
        }
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, (_, owner))) = g.owners.iter().find(|(n, _)| n.conflicts_with(name)) {
            return Err(RpcError::channel_owned(name, owner));
        }
        g.owners
            .insert(name.clone(), (client, client_name.to_owned()));
        Ok(ClaimGuard {
            claim: Some((self.clone(), name.clone(), client)),
        })
    }

    /// The client name owning `name`, if any.
    pub fn owner(&self, name: &ChannelName) -> Option<String> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.owners.get(name).map(|(_, n)| n.clone())
    }
}

/// One open channel of a connection.
#[derive(Debug)]
pub struct OpenChannel {
    /// Its name.
    pub name: ChannelName,
    _claim: ClaimGuard,
}

/// The channels one connection has open: id allocation (never 0, not reused within the
/// connection) and ownership claims, released on close or when the table is dropped.
#[derive(Debug)]
pub struct ChannelTable {
    client: ClientId,
    client_name: String,
    claims: ChannelClaims,
    next: u32,
    open: BTreeMap<ChannelId, OpenChannel>,
}

impl ChannelTable {
    /// A table for one accepted client.
    pub fn new(accepted: &Accepted, claims: ChannelClaims) -> Self {
        Self {
            client: accepted.client_id,
            client_name: accepted.hello.client.clone(),
            claims,
            next: 1,
            open: BTreeMap::new(),
        }
    }

    /// Open `name` (after the caller checked that its partition and vCPU exist): claims gdb
    /// channels and allocates an id. `control` cannot be opened (it is always channel 0).
    pub fn open(&mut self, name: ChannelName) -> Result<ChannelId, RpcError> {
        if name == ChannelName::Control {
            return Err(RpcError::unknown_channel("control is always channel 0"));
        }
        if let Some(id) = self.id_of(&name) {
            return Err(RpcError::new(
                crate::rpc::codes::CHANNEL_OWNED,
                format!("channel {name} is already open on this connection as id {id}"),
            ));
        }
        let claim = self.claims.claim(&name, self.client, &self.client_name)?;
        if self.next == 0 {
            return Err(RpcError::internal("channel ids exhausted"));
        }
        let id = ChannelId(self.next);
        self.next = self.next.wrapping_add(1);
        self.open.insert(
            id,
            OpenChannel {
                name,
                _claim: claim,
            },
        );
        Ok(id)
    }

    /// Close channel `id`, releasing its claim; returns its name.
    pub fn close(&mut self, id: ChannelId) -> Result<ChannelName, RpcError> {
        self.open
            .remove(&id)
            .map(|c| c.name)
            .ok_or_else(|| RpcError::unknown_channel(format!("no open channel with id {id}")))
    }

    /// Name of open channel `id`.
    pub fn name(&self, id: ChannelId) -> Option<&ChannelName> {
        self.open.get(&id).map(|c| &c.name)
    }

    /// Id of the open channel called `name`.
    pub fn id_of(&self, name: &ChannelName) -> Option<ChannelId> {
        self.open
            .iter()
            .find(|(_, c)| &c.name == name)
            .map(|(id, _)| *id)
    }

    /// Open channels in id order.
    pub fn iter(&self) -> impl Iterator<Item = (ChannelId, &ChannelName)> {
        self.open.iter().map(|(id, c)| (*id, &c.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::{Hello, PROTOCOL_VERSION, client_handshake};
    use crate::transport::{BindOptions, LinkAddr, Listener, connect, read_token_file};
    use std::thread;

    fn accepted(name: &str) -> Accepted {
        Accepted {
            client_id: ClientId::next(),
            hello: Hello::new(name),
            welcome: Welcome {
                protocol: "hv-link".into(),
                version: 1,
                server: "s".into(),
                system: "d".into(),
                capabilities: vec![],
            },
        }
    }

    #[test]
    fn gdb_ownership_rules() {
        let claims = ChannelClaims::new();
        let mut a = ChannelTable::new(&accepted("bridge-a"), claims.clone());
        let mut b = ChannelTable::new(&accepted("bridge-b"), claims.clone());
        let ga = a.open(ChannelName::gdb("ctl")).unwrap();
        assert_eq!(ga, ChannelId(1));
        let e = b.open(ChannelName::gdb("ctl")).unwrap_err();
        assert_eq!(e.code, crate::rpc::codes::CHANNEL_OWNED);
        assert!(e.message.contains("bridge-a"), "{}", e.message);
        assert!(b.open(ChannelName::gdb_vcpu("ctl", 0)).is_err());
        assert!(
            a.open(ChannelName::gdb("ctl")).is_err(),
            "twice on one connection"
        );
        // Other partitions and non-exclusive channels are free.
        let gb = b.open(ChannelName::gdb_vcpu("tel", 1)).unwrap();
        assert!(a.open(ChannelName::gdb_vcpu("tel", 0)).is_ok());
        assert!(a.open(ChannelName::gdb("tel")).is_err());
        assert!(b.open(ChannelName::console("ctl")).is_ok());
        assert!(a.open(ChannelName::console("ctl")).is_ok());
        assert!(a.open(ChannelName::Trace).is_ok());
        assert!(a.open(ChannelName::Control).is_err());
        assert_eq!(
            claims.owner(&ChannelName::gdb("ctl")).as_deref(),
            Some("bridge-a")
        );
        // Closing releases; ids are not reused.
        assert_eq!(a.close(ga).unwrap(), ChannelName::gdb("ctl"));
        assert_eq!(
            a.close(ga).unwrap_err().code,
            crate::rpc::codes::UNKNOWN_CHANNEL
        );
        let again = b.open(ChannelName::gdb("ctl")).unwrap();
        assert_ne!(again, gb);
        assert_eq!(b.name(again), Some(&ChannelName::gdb("ctl")));
        // Dropping a table (connection gone) releases everything it held.
        drop(b);
        assert!(claims.owner(&ChannelName::gdb("ctl")).is_none());
        assert!(a.open(ChannelName::gdb("ctl")).is_ok());
        assert_eq!(a.iter().count(), 4);
    }

    /// Run `accept_handshake` on a listener in a thread and a client handshake against it.
    fn handshake_over(
        l: Listener,
        cfg: ServerConfig,
        hello: Hello,
    ) -> (
        Result<Accepted, HandshakeError>,
        Result<Welcome, HandshakeError>,
    ) {
        let addr = l.local_addr().clone();
        let server = thread::spawn(move || {
            let mut c = l.accept().unwrap();
            let r = accept_handshake(&mut c, &cfg);
            if r.is_ok() {
                // Keep talking after a welcome: echo one frame.
                let f = c.recv_frame().unwrap().unwrap();
                c.send_frame(f.channel, &f.payload).unwrap();
            }
            r
        });
        let mut conn = connect(&addr).unwrap();
        let w = client_handshake(&mut conn, &hello, Some(Duration::from_secs(5)));
        if w.is_ok() {
            conn.send_frame(ChannelId(0), b"{}").unwrap();
            assert_eq!(conn.recv_frame().unwrap().unwrap().payload, b"{}");
        } else {
            // Refused: the server closed the connection.
            assert!(matches!(conn.recv_frame(), Ok(None) | Err(_)));
        }
        (server.join().unwrap(), w)
    }

    #[test]
    fn handshake_over_unix_socket() {
        let tmp = tempfile::tempdir().unwrap();
        let addr = LinkAddr::Unix(tmp.path().join("demo.sock"));
        let cfg = ServerConfig::new("agent 0.1.0", "demo");

        let (s, c) = handshake_over(
            Listener::bind(&addr).unwrap(),
            cfg.clone(),
            Hello::new("tui"),
        );
        let (s, c) = (s.unwrap(), c.unwrap());
        assert_eq!(s.hello.client, "tui");
        assert_eq!(c.system, "demo");
        assert_eq!(c.version, PROTOCOL_VERSION);
        assert_eq!(c.capabilities.len(), caps::ALL.len());

        let mut old = Hello::new("old-tool");
        old.version = 0;
        let (s, c) = handshake_over(Listener::bind(&addr).unwrap(), cfg.clone(), old);
        assert!(matches!(
            s,
            Err(HandshakeError::WrongVersion { client: 0, .. })
        ));
        let e = c.unwrap_err();
        assert!(matches!(
            e,
            HandshakeError::WrongVersion {
                client: 0,
                server_min: 1,
                server_max: 1
            }
        ));
        assert_eq!(
            e.to_string(),
            "protocol version mismatch: client speaks v0, server supports v1..=v1"
        );

        let tok = ServerConfig {
            token: Some("s3cret".into()),
            ..cfg
        };
        let (s, c) = handshake_over(
            Listener::bind(&addr).unwrap(),
            tok.clone(),
            Hello::new("x").with_token("nope"),
        );
        assert!(matches!(s, Err(HandshakeError::BadToken)));
        assert!(matches!(c, Err(HandshakeError::BadToken)));
        let (s, c) = handshake_over(
            Listener::bind(&addr).unwrap(),
            tok,
            Hello::new("x").with_token("s3cret"),
        );
        assert!(s.is_ok() && c.is_ok());
    }

    #[test]
    fn handshake_over_tcp_loopback_with_token_file() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = BindOptions {
            token_file: Some(tmp.path().join("tcp.token")),
        };
        let bind = || Listener::bind_with(&"tcp:127.0.0.1:0".parse().unwrap(), &opts).unwrap();

        let l = bind();
        let token = read_token_file(l.token_file().unwrap()).unwrap();
        let cfg = ServerConfig::for_listener(&l, "agent", "demo");
        assert!(cfg.token.is_some());
        let (s, c) = handshake_over(l, cfg, Hello::new("gdb-bridge").with_token(token));
        assert!(s.is_ok(), "{s:?}");
        assert_eq!(c.unwrap().server, "agent");

        let l = bind();
        let cfg = ServerConfig::for_listener(&l, "agent", "demo");
        let (s, c) = handshake_over(l, cfg, Hello::new("gdb-bridge"));
        assert!(matches!(s, Err(HandshakeError::BadToken)));
        let e = c.unwrap_err();
        assert!(matches!(e, HandshakeError::BadToken));
        assert!(e.to_string().contains("token"));

        let l = bind();
        let token = l.token().unwrap().to_owned();
        let cfg = ServerConfig::for_listener(&l, "agent", "demo");
        let mut h = Hello::new("future-tool").with_token(token);
        h.version = 2;
        let (s, c) = handshake_over(l, cfg, h);
        assert!(matches!(
            s,
            Err(HandshakeError::WrongVersion { client: 2, .. })
        ));
        assert!(matches!(
            c,
            Err(HandshakeError::WrongVersion { client: 2, .. })
        ));
    }

    /// Replays `tests/corpus/handshake/*.bin` (what a client sends first) through
    /// [`accept_handshake`] on a real socket: `refused_*` must get a `refused` message saying
    /// why before the close (a token of the wrong JSON type once got a silent close),
    /// `welcome_*` a welcome.
    #[test]
    fn handshake_corpus_gets_a_welcome_or_a_refusal_saying_why() {
        use std::io::{Read, Write};
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/handshake");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "bin"))
            .collect();
        files.sort();
        assert!(
            files.len() >= 10,
            "{} has {} files",
            dir.display(),
            files.len()
        );
        let tmp = tempfile::tempdir().unwrap();
        let sock = tmp.path().join("h.sock");
        let l = Listener::bind(&LinkAddr::Unix(sock.clone())).unwrap();
        let cfg = ServerConfig {
            handshake_timeout: Some(Duration::from_secs(60)),
            ..ServerConfig::new("a", "d")
        };
        for path in files {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let mut raw = std::os::unix::net::UnixStream::connect(&sock).unwrap();
            raw.write_all(&std::fs::read(&path).unwrap()).unwrap();
            let mut conn = l.accept().unwrap();
            let result = accept_handshake(&mut conn, &cfg);
            if result.is_ok() {
                conn.shutdown();
            }
            drop(conn);
            let mut sent = Vec::new();
            raw.read_to_end(&mut sent).unwrap();
            let mut dec = crate::FrameDecoder::new();
            dec.push(&sent);
            let reply = dec.next_frame().unwrap().map(|f| {
                assert_eq!(f.channel, ChannelId::CONTROL, "{name}");
                HandshakeMessage::parse(&f.payload).unwrap()
            });
            match (name.split('_').next(), reply) {
                (Some("refused"), Some(HandshakeMessage::Refused(r))) => {
                    assert!(result.is_err(), "{name}");
                    assert!(!r.message.is_empty(), "{name}");
                }
                (Some("welcome"), Some(HandshakeMessage::Welcome(_))) => {
                    assert!(result.is_ok(), "{name}");
                }
                (_, reply) => panic!("{name}: the server answered {reply:?} ({result:?})"),
            }
        }
    }

    #[test]
    fn server_handshake_timeouts_and_garbage() {
        let tmp = tempfile::tempdir().unwrap();
        let l = Listener::bind(&LinkAddr::Unix(tmp.path().join("t.sock"))).unwrap();
        let cfg = ServerConfig {
            handshake_timeout: Some(Duration::from_millis(100)),
            ..ServerConfig::new("a", "d")
        };
        // Silent client.
        let _c = connect(l.local_addr()).unwrap();
        let mut s = l.accept().unwrap();
        assert!(matches!(
            accept_handshake(&mut s, &cfg),
            Err(HandshakeError::TimedOut)
        ));
        // Client that closes at once (e.g. a liveness probe).
        drop(connect(l.local_addr()).unwrap());
        let mut s = l.accept().unwrap();
        assert!(matches!(
            accept_handshake(&mut s, &cfg),
            Err(HandshakeError::Closed)
        ));
        // A JSON-RPC request instead of a hello.
        let c = connect(l.local_addr()).unwrap();
        c.send_frame(
            ChannelId(0),
            br#"{"jsonrpc":"2.0","id":1,"method":"system.info"}"#,
        )
        .unwrap();
        let mut s = l.accept().unwrap();
        assert!(matches!(
            accept_handshake(&mut s, &cfg),
            Err(HandshakeError::Malformed(_))
        ));
        // Garbage bytes.
        let mut raw = std::os::unix::net::UnixStream::connect(tmp.path().join("t.sock")).unwrap();
        std::io::Write::write_all(&mut raw, b"+$g#67").unwrap();
        let mut s = l.accept().unwrap();
        assert!(matches!(
            accept_handshake(&mut s, &cfg),
            Err(HandshakeError::Transport(TransportError::Frame(_)))
        ));
        // Hello on the wrong channel.
        let c = connect(l.local_addr()).unwrap();
        c.send_frame(
            ChannelId(3),
            &HandshakeMessage::Hello(Hello::new("x")).to_vec(),
        )
        .unwrap();
        let mut s = l.accept().unwrap();
        assert!(
            matches!(accept_handshake(&mut s, &cfg), Err(HandshakeError::Malformed(m)) if m.contains("channel 3"))
        );
    }
}
