//! A blocking host-tool client: connect + handshake, JSON-RPC calls with ids, channels, and a
//! router thread that hands each channel's data and the notifications to crossbeam receivers.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use serde::Serialize;
use serde_json::Value;

use crate::channel::{ChannelId, ChannelName};
use crate::control::{
    ChannelClose, ChannelCloseParams, ChannelClosed, ChannelClosedParams, ChannelOpen,
    ChannelOpenParams, ChannelOpenResult, Event, EventsSubscribe, InjectIrqParams, Method,
    PartitionInfo, PartitionInjectIrq, PartitionParams, PartitionPause, PartitionReset,
    PartitionResume, PartitionsList, SystemInfo, SystemInfoMethod,
};
use crate::handshake::{HandshakeError, Hello, Welcome, caps, client_handshake};
use crate::rpc::{
    Message, Notification, RequestId, RpcError, encode_error, encode_notification, encode_request,
};
use crate::transport::{
    Connection, FrameReader, FrameWriter, LinkAddr, TransportError, connect, default_token_path,
    read_token_file,
};

/// Default limit for a call's response.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Default limit for the server's handshake reply.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Client failures.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Could not connect, or the link broke.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The handshake failed (wrong version, bad token, …).
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// The server answered the call with an error.
    #[error("{method}: {error}")]
    Rpc {
        /// The method called.
        method: String,
        /// The server's error.
        #[source]
        error: RpcError,
    },
    /// The result (or our params) did not have the expected shape.
    #[error("{method}: bad JSON")]
    Json {
        /// The method called.
        method: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// No response within the call timeout.
    #[error("{method}: no response within {timeout:?}")]
    TimedOut {
        /// The method called.
        method: String,
        /// The limit.
        timeout: Duration,
    },
    /// The connection is gone.
    #[error("link closed: {reason}")]
    Closed {
        /// Why (end of stream, malformed frame, shutdown, …).
        reason: String,
    },
}

impl ClientError {
    /// The JSON-RPC error code, when the server answered with an error.
    pub fn rpc_code(&self) -> Option<i64> {
        match self {
            ClientError::Rpc { error, .. } => Some(error.code),
            _ => None,
        }
    }
}

/// How to connect.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Name sent in the hello (shown in logs and "owned by" errors).
    pub client_name: String,
    /// Capabilities to ask for (default: all).
    pub capabilities: Vec<String>,
    /// Token to present. For `tcp:` addresses without one, the token is read from
    /// `token_file`, else from [`default_token_path`] of the port.
    pub token: Option<String>,
    /// Token file to read for `tcp:` addresses.
    pub token_file: Option<PathBuf>,
    /// Limit for the handshake reply (`None`: forever).
    pub handshake_timeout: Option<Duration>,
    /// Limit for each call's response (`None`: forever).
    pub call_timeout: Option<Duration>,
}

impl ClientOptions {
    /// Defaults for a client called `client_name`.
    pub fn new(client_name: impl Into<String>) -> Self {
        Self {
            client_name: client_name.into(),
            capabilities: caps::ALL.iter().map(|c| (*c).to_owned()).collect(),
            token: None,
            token_file: None,
            handshake_timeout: Some(DEFAULT_HANDSHAKE_TIMEOUT),
            call_timeout: Some(DEFAULT_CALL_TIMEOUT),
        }
    }
}

struct Pending {
    tx: Sender<CallReply>,
    opens_channel: bool,
}

struct CallReply {
    outcome: Result<Value, RpcError>,
    channel: Option<Receiver<Vec<u8>>>,
}

#[derive(Default)]
struct State {
    pending: HashMap<i64, Pending>,
    channels: HashMap<ChannelId, Sender<Vec<u8>>>,
    closed: Option<String>,
}

struct Inner {
    writer: FrameWriter,
    state: Mutex<State>,
    next_id: AtomicI64,
    call_timeout: Option<Duration>,
    dropped_frames: AtomicU64,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn closed_error(&self) -> ClientError {
        let reason = self
            .lock()
            .closed
            .clone()
            .unwrap_or_else(|| "connection closed".into());
        ClientError::Closed { reason }
    }

    fn call_raw<P: Serialize + ?Sized>(
        &self,
        method: &str,
        params: &P,
        opens_channel: bool,
    ) -> Result<CallReply, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let bytes = encode_request(&RequestId::Number(id), method, params).map_err(|source| {
            ClientError::Json {
                method: method.to_owned(),
                source,
            }
        })?;
        let (tx, rx) = crossbeam_channel::bounded(1);
        {
            let mut st = self.lock();
            if let Some(reason) = &st.closed {
                return Err(ClientError::Closed {
                    reason: reason.clone(),
                });
            }
            st.pending.insert(id, Pending { tx, opens_channel });
        }
        if let Err(e) = self.writer.send_frame(ChannelId::CONTROL, &bytes) {
            self.lock().pending.remove(&id);
            return Err(match e {
                TransportError::Closed => self.closed_error(),
                e => e.into(),
            });
        }
        let reply = match self.call_timeout {
            Some(t) => rx.recv_timeout(t),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match reply {
            Ok(r) => Ok(r),
            Err(RecvTimeoutError::Timeout) => {
                self.lock().pending.remove(&id);
                Err(ClientError::TimedOut {
                    method: method.to_owned(),
                    timeout: self.call_timeout.unwrap_or_default(),
                })
            }
            Err(RecvTimeoutError::Disconnected) => Err(self.closed_error()),
        }
    }

    fn call_value<P: Serialize + ?Sized>(
        &self,
        method: &str,
        params: &P,
    ) -> Result<Value, ClientError> {
        self.call_raw(method, params, false)?
            .outcome
            .map_err(|error| ClientError::Rpc {
                method: method.to_owned(),
                error,
            })
    }
}

/// A connected, handshaken host-link client. Share it between threads by reference or `Arc`.
pub struct LinkClient {
    inner: Arc<Inner>,
    welcome: Welcome,
    notifications: Receiver<Notification>,
    router: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for LinkClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkClient")
            .field("welcome", &self.welcome)
            .finish_non_exhaustive()
    }
}

impl LinkClient {
    /// Connect to `addr` and handshake as `client_name` with default options.
    pub fn connect(addr: &LinkAddr, client_name: &str) -> Result<Self, ClientError> {
        Self::connect_with(addr, ClientOptions::new(client_name))
    }

    /// Connect to `addr` and handshake with `opts`.
    pub fn connect_with(addr: &LinkAddr, opts: ClientOptions) -> Result<Self, ClientError> {
        let token = match (&opts.token, addr) {
            (Some(t), _) => Some(t.clone()),
            (None, LinkAddr::Tcp(a)) => {
                let path = opts
                    .token_file
                    .clone()
                    .unwrap_or_else(|| default_token_path(a.port()));
                Some(read_token_file(&path)?)
            }
            (None, _) => None,
        };
        let mut conn = connect(addr)?;
        let hello = Hello {
            capabilities: opts.capabilities.clone(),
            token,
            ..Hello::new(opts.client_name.clone())
        };
        let welcome = client_handshake(&mut conn, &hello, opts.handshake_timeout)?;
        Ok(Self::from_connection(conn, welcome, opts.call_timeout))
    }

    /// Start the router on a connection whose handshake is done.
    pub fn from_connection(
        conn: Connection,
        welcome: Welcome,
        call_timeout: Option<Duration>,
    ) -> Self {
        let (reader, writer) = conn.split();
        let inner = Arc::new(Inner {
            writer,
            state: Mutex::new(State::default()),
            next_id: AtomicI64::new(1),
            call_timeout,
            dropped_frames: AtomicU64::new(0),
        });
        let (ntx, nrx) = crossbeam_channel::unbounded();
        let r_inner = inner.clone();
        let router = std::thread::Builder::new()
            .name("hv-link-router".into())
            .spawn(move || route(reader, &r_inner, &ntx))
            .ok();
        if router.is_none() {
            inner.lock().closed = Some("could not start the router thread".into());
        }
        Self {
            inner,
            welcome,
            notifications: nrx,
            router,
        }
    }

    /// The server's welcome (system name, negotiated version and capabilities).
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// Server notifications (`partition.state_changed`, `channel.closed`, …), in arrival
    /// order. The receiver may be cloned; each notification goes to one receiver.
    pub fn notifications(&self) -> &Receiver<Notification> {
        &self.notifications
    }

    /// True until the link closes.
    pub fn is_connected(&self) -> bool {
        self.inner.lock().closed.is_none() && !self.inner.writer.is_closed()
    }

    /// Frames received on channels with no open handle (dropped).
    pub fn dropped_frames(&self) -> u64 {
        self.inner.dropped_frames.load(Ordering::Relaxed)
    }

    /// Call `method` with JSON `params` (`Value::Null`: none) and wait for its result.
    pub fn call(&self, method: &str, params: Value) -> Result<Value, ClientError> {
        self.inner.call_value(method, &params)
    }

    /// Call method `M` with typed params and result.
    pub fn call_typed<M: Method>(&self, params: &M::Params) -> Result<M::Result, ClientError> {
        let v = self.inner.call_value(M::NAME, params)?;
        serde_json::from_value(v).map_err(|source| ClientError::Json {
            method: M::NAME.to_owned(),
            source,
        })
    }

    /// Send a notification (no response).
    pub fn notify(&self, method: &str, params: Value) -> Result<(), ClientError> {
        let bytes = encode_notification(method, &params).map_err(|source| ClientError::Json {
            method: method.to_owned(),
            source,
        })?;
        Ok(self.inner.writer.send_frame(ChannelId::CONTROL, &bytes)?)
    }

    /// Open channel `name`; its data arrives on the handle's receiver.
    pub fn open_channel(&self, name: &ChannelName) -> Result<ChannelHandle, ClientError> {
        let params = ChannelOpenParams { name: name.clone() };
        let reply = self.inner.call_raw(ChannelOpen::NAME, &params, true)?;
        let v = reply.outcome.map_err(|error| ClientError::Rpc {
            method: ChannelOpen::NAME.to_owned(),
            error,
        })?;
        let res: ChannelOpenResult =
            serde_json::from_value(v).map_err(|source| ClientError::Json {
                method: ChannelOpen::NAME.to_owned(),
                source,
            })?;
        let rx = reply.channel.ok_or_else(|| self.inner.closed_error())?;
        Ok(ChannelHandle {
            id: res.id,
            name: name.clone(),
            rx,
            inner: self.inner.clone(),
            closed: false,
        })
    }

    /// `system.info`.
    pub fn system_info(&self) -> Result<SystemInfo, ClientError> {
        self.call_typed::<SystemInfoMethod>(&())
    }

    /// `partitions.list`.
    pub fn partitions(&self) -> Result<Vec<PartitionInfo>, ClientError> {
        self.call_typed::<PartitionsList>(&())
    }

    /// `partition.pause`.
    pub fn pause(&self, partition: &str) -> Result<(), ClientError> {
        self.call_typed::<PartitionPause>(&PartitionParams {
            partition: partition.into(),
        })
    }

    /// `partition.resume`.
    pub fn resume(&self, partition: &str) -> Result<(), ClientError> {
        self.call_typed::<PartitionResume>(&PartitionParams {
            partition: partition.into(),
        })
    }

    /// `partition.reset`.
    pub fn reset(&self, partition: &str) -> Result<(), ClientError> {
        self.call_typed::<PartitionReset>(&PartitionParams {
            partition: partition.into(),
        })
    }

    /// `partition.inject_irq`.
    pub fn inject_irq(&self, partition: &str, vcpu: u32, vector: u8) -> Result<(), ClientError> {
        self.call_typed::<PartitionInjectIrq>(&InjectIrqParams {
            partition: partition.into(),
            vcpu,
            vector,
        })
    }

    /// `events.subscribe`: state changes then arrive on [`notifications`](Self::notifications).
    pub fn subscribe_events(&self) -> Result<(), ClientError> {
        self.call_typed::<EventsSubscribe>(&())
    }

    /// Close the link now (also done on drop).
    pub fn close(self) {}

    /// Close the link now from a shared reference (e.g. through an `Arc` held by several
    /// threads): pending and later calls fail with [`ClientError::Closed`], channel receivers
    /// and the notification receiver disconnect once the router has stopped.
    pub fn shutdown(&self) {
        self.inner.writer.shutdown();
    }
}

impl Drop for LinkClient {
    fn drop(&mut self) {
        self.inner.writer.shutdown();
        if let Some(h) = self.router.take() {
            let _ = h.join();
        }
    }
}

/// Decode a notification as event `E`; `None` if it is another method.
pub fn parse_event<E: Event>(n: &Notification) -> Option<Result<E::Params, RpcError>> {
    (n.method == E::NAME).then(|| n.params_as::<E::Params>())
}

/// An open channel: send bytes, receive the server's bytes. Dropping it closes the channel
/// (a `channel.close` notification is sent without waiting).
pub struct ChannelHandle {
    id: ChannelId,
    name: ChannelName,
    rx: Receiver<Vec<u8>>,
    inner: Arc<Inner>,
    closed: bool,
}

impl std::fmt::Debug for ChannelHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelHandle")
            .field("id", &self.id)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ChannelHandle {
    /// The numeric id in frame headers.
    pub fn id(&self) -> ChannelId {
        self.id
    }

    /// The channel's name.
    pub fn name(&self) -> &ChannelName {
        &self.name
    }

    /// Send bytes (split into frames of at most `MAX_PAYLOAD`).
    pub fn send(&self, data: &[u8]) -> Result<(), ClientError> {
        Ok(self.inner.writer.send_chunked(self.id, data)?)
    }

    /// A cloneable sender for another thread.
    pub fn sender(&self) -> ChannelSender {
        ChannelSender {
            id: self.id,
            writer: self.inner.writer.clone(),
        }
    }

    /// Data frames from the server, one `Vec` per frame. Disconnected once the channel or the
    /// link is closed. Use with `recv`, `recv_timeout` or `crossbeam_channel::select!`.
    pub fn receiver(&self) -> &Receiver<Vec<u8>> {
        &self.rx
    }

    /// Wait for the next data frame.
    pub fn recv(&self) -> Result<Vec<u8>, ClientError> {
        self.rx
            .recv()
            .map_err(|_| match self.inner.lock().closed.clone() {
                Some(reason) => ClientError::Closed { reason },
                None => ClientError::Closed {
                    reason: format!("channel {} closed", self.name),
                },
            })
    }

    /// `channel.close` and wait for the server's answer.
    pub fn close(mut self) -> Result<(), ClientError> {
        self.closed = true;
        self.inner.lock().channels.remove(&self.id);
        self.inner
            .call_value(ChannelClose::NAME, &ChannelCloseParams { id: self.id })
            .map(|_| ())
    }
}

impl Drop for ChannelHandle {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        let live = {
            let mut st = self.inner.lock();
            st.channels.remove(&self.id);
            st.closed.is_none()
        };
        if live
            && let Ok(b) =
                encode_notification(ChannelClose::NAME, &ChannelCloseParams { id: self.id })
        {
            let _ = self.inner.writer.send_frame(ChannelId::CONTROL, &b);
        }
    }
}

/// Sends on one channel; cheap to clone, usable from any thread.
#[derive(Debug, Clone)]
pub struct ChannelSender {
    id: ChannelId,
    writer: FrameWriter,
}

impl ChannelSender {
    /// The channel id.
    pub fn id(&self) -> ChannelId {
        self.id
    }

    /// Send bytes (split into frames as needed).
    pub fn send(&self, data: &[u8]) -> Result<(), ClientError> {
        Ok(self.writer.send_chunked(self.id, data)?)
    }
}

/// The router thread: reads every frame and dispatches it.
fn route(mut reader: FrameReader, inner: &Inner, notifications: &Sender<Notification>) {
    let reason = loop {
        let frame = match reader.recv_frame_ref() {
            Ok(Some(f)) => f,
            Ok(None) => break "the server closed the connection".to_owned(),
            Err(TransportError::Io { .. }) if inner.writer.is_closed() => {
                break "closed by this client".to_owned();
            }
            Err(e) => break e.to_string(),
        };
        if frame.channel == ChannelId::CONTROL {
            route_control(frame.payload, inner, notifications);
        } else {
            let st = inner.lock();
            match st.channels.get(&frame.channel) {
                Some(tx) => {
                    let _ = tx.send(frame.payload.to_vec());
                }
                None => {
                    inner.dropped_frames.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    };
    let reason = if inner.writer.is_closed() && reason.contains("server closed") {
        "closed by this client".to_owned()
    } else {
        reason
    };
    let mut st = inner.lock();
    st.closed = Some(reason);
    st.pending.clear();
    st.channels.clear();
}

fn route_control(payload: &[u8], inner: &Inner, notifications: &Sender<Notification>) {
    match Message::parse(payload) {
        Ok(Message::Response(resp)) => {
            let RequestId::Number(id) = resp.id else {
                return;
            };
            let mut st = inner.lock();
            let Some(p) = st.pending.remove(&id) else {
                return;
            };
            let mut channel = None;
            if p.opens_channel
                && let Ok(v) = &resp.outcome
                && let Ok(r) = serde_json::from_value::<ChannelOpenResult>(v.clone())
            {
                // Register before handing back the reply, so no data frame is lost.
                let (tx, rx) = crossbeam_channel::unbounded();
                st.channels.insert(r.id, tx);
                channel = Some(rx);
            }
            let _ = p.tx.send(CallReply {
                outcome: resp.outcome,
                channel,
            });
        }
        Ok(Message::Notification(n)) => {
            if let Some(Ok(ChannelClosedParams { id, .. })) = parse_event::<ChannelClosed>(&n) {
                inner.lock().channels.remove(&id);
            }
            let _ = notifications.send(n);
        }
        Ok(Message::Request(req)) => {
            let _ = inner.writer.send_frame(
                ChannelId::CONTROL,
                &encode_error(&req.id, &RpcError::method_not_found(&req.method)),
            );
        }
        Err(_) => {
            // A malformed message from the server: nothing to answer; ignore it.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{
        PartitionState, PartitionStateChanged, StateChangedParams, VcpuInfo, VcpuState,
    };
    use crate::rpc::{Request, codes};
    use crate::server::{
        ChannelClaims, ChannelTable, ServerConfig, accept_handshake, send_error, send_event,
        send_result,
    };
    use crate::transport::{BindOptions, Listener};
    use serde_json::json;
    use std::thread;

    /// A tiny fake agent: serves one client with a few methods, echoes channel data
    /// uppercased, and streams 3 frames on `trace` after it is opened.
    fn fake_agent(l: Listener, claims: ChannelClaims) -> thread::JoinHandle<()> {
        thread::spawn(move || {
            let cfg = ServerConfig::for_listener(&l, "fake-agent 0.1", "demo");
            let mut conn = l.accept().unwrap();
            let acc = accept_handshake(&mut conn, &cfg).unwrap();
            let mut table = ChannelTable::new(&acc, claims);
            let w = conn.writer().clone();
            while let Ok(Some(f)) = conn.recv_frame() {
                if f.channel != ChannelId::CONTROL {
                    let up = f.payload.to_ascii_uppercase();
                    w.send_frame(f.channel, &up).unwrap();
                    continue;
                }
                let req = match Message::parse(&f.payload) {
                    Ok(Message::Request(r)) => r,
                    Ok(Message::Notification(n)) if n.method == ChannelClose::NAME => {
                        let p: ChannelCloseParams = n.params_as().unwrap();
                        let _ = table.close(p.id);
                        continue;
                    }
                    Ok(_) => continue,
                    Err(resp) => {
                        w.send_frame(ChannelId::CONTROL, &resp.to_vec()).unwrap();
                        continue;
                    }
                };
                handle(&w, &mut table, &req);
            }
        })
    }

    fn handle(w: &FrameWriter, table: &mut ChannelTable, req: &Request) {
        let known = |p: &str| p == "ctl" || p == "tel";
        match req.method.as_str() {
            "system.info" => send_result(
                w,
                &req.id,
                &SystemInfo {
                    system: "demo".into(),
                    version: "0.1.0".into(),
                },
            )
            .unwrap(),
            "partitions.list" => send_result(
                w,
                &req.id,
                &[PartitionInfo {
                    id: 0,
                    name: "ctl".into(),
                    state: PartitionState::Running,
                    vcpus: vec![VcpuInfo {
                        index: 0,
                        state: VcpuState::Running,
                        device: None,
                    }],
                    image: "ctl.elf".into(),
                }],
            )
            .unwrap(),
            "partition.pause" => match req.params_as::<PartitionParams>() {
                Ok(p) if known(&p.partition) => {
                    send_result(w, &req.id, &()).unwrap();
                    send_event::<PartitionStateChanged>(
                        w,
                        &StateChangedParams {
                            partition: p.partition,
                            state: PartitionState::Paused,
                            detail: None,
                        },
                    )
                    .unwrap();
                }
                Ok(p) => {
                    send_error(w, &req.id, &RpcError::unknown_partition(&p.partition)).unwrap()
                }
                Err(e) => send_error(w, &req.id, &e).unwrap(),
            },
            "channel.open" => {
                let r = req.params_as::<ChannelOpenParams>().and_then(|p| {
                    if p.name.partition().is_some_and(|x| !known(x)) {
                        return Err(RpcError::unknown_partition(
                            p.name.partition().unwrap_or(""),
                        ));
                    }
                    let trace = p.name == ChannelName::Trace;
                    let id = table.open(p.name)?;
                    Ok((id, trace))
                });
                match r {
                    Ok((id, trace)) => {
                        send_result(w, &req.id, &ChannelOpenResult { id }).unwrap();
                        if trace {
                            let mut enc = crate::frame::FrameEncoder::new();
                            for i in 0..3u8 {
                                enc.push(id, &[i; 8]).unwrap();
                            }
                            w.send_batch(&enc).unwrap();
                        }
                    }
                    Err(e) => send_error(w, &req.id, &e).unwrap(),
                }
            }
            "channel.close" => match req
                .params_as::<ChannelCloseParams>()
                .and_then(|p| table.close(p.id))
            {
                Ok(_) => send_result(w, &req.id, &()).unwrap(),
                Err(e) => send_error(w, &req.id, &e).unwrap(),
            },
            "test.slow" => {}
            "test.kick" => {
                send_result(w, &req.id, &()).unwrap();
                let id = table.iter().next().map(|(id, _)| id).unwrap();
                table.close(id).unwrap();
                send_event::<ChannelClosed>(
                    w,
                    &ChannelClosedParams {
                        id,
                        reason: "partition reset".into(),
                    },
                )
                .unwrap();
            }
            "test.bye" => {
                send_result(w, &req.id, &()).unwrap();
                w.shutdown();
            }
            m => send_error(w, &req.id, &RpcError::method_not_found(m)).unwrap(),
        }
    }

    fn opts(name: &str) -> ClientOptions {
        ClientOptions {
            call_timeout: Some(Duration::from_secs(5)),
            ..ClientOptions::new(name)
        }
    }

    #[test]
    fn client_end_to_end_over_unix() {
        let tmp = tempfile::tempdir().unwrap();
        let addr = LinkAddr::Unix(tmp.path().join("demo.sock"));
        let claims = ChannelClaims::new();
        let agent = fake_agent(Listener::bind(&addr).unwrap(), claims.clone());
        let c = LinkClient::connect_with(&addr, opts("test-tool")).unwrap();
        assert_eq!(c.welcome().system, "demo");
        assert_eq!(c.system_info().unwrap().system, "demo");
        assert_eq!(c.partitions().unwrap()[0].name, "ctl");
        assert_eq!(
            c.call("system.info", Value::Null).unwrap()["version"],
            "0.1.0"
        );

        // Errors carry codes.
        let e = c.pause("nope").unwrap_err();
        assert_eq!(e.rpc_code(), Some(codes::UNKNOWN_PARTITION));
        assert!(e.to_string().contains("unknown partition: nope"), "{e}");
        assert_eq!(
            c.call("no.such", Value::Null).unwrap_err().rpc_code(),
            Some(codes::METHOD_NOT_FOUND)
        );
        assert_eq!(
            c.call("partition.pause", json!({"x": 1}))
                .unwrap_err()
                .rpc_code(),
            Some(codes::INVALID_PARAMS)
        );

        // Notifications.
        c.pause("ctl").unwrap();
        let n = c
            .notifications()
            .recv_timeout(Duration::from_secs(5))
            .unwrap();
        let p = parse_event::<PartitionStateChanged>(&n).unwrap().unwrap();
        assert_eq!(p.state, PartitionState::Paused);

        // Channels: data from several threads, concurrent calls.
        let gdb = c.open_channel(&ChannelName::gdb("ctl")).unwrap();
        let con = c.open_channel(&ChannelName::console("tel")).unwrap();
        assert_ne!(gdb.id(), con.id());
        let s = gdb.sender();
        let t = thread::spawn(move || {
            for _ in 0..50 {
                s.send(b"$g#67").unwrap();
            }
        });
        con.send(b"hello").unwrap();
        for _ in 0..10 {
            c.system_info().unwrap();
        }
        t.join().unwrap();
        for _ in 0..50 {
            assert_eq!(gdb.recv().unwrap(), b"$G#67");
        }
        assert_eq!(
            con.receiver().recv_timeout(Duration::from_secs(5)).unwrap(),
            b"HELLO"
        );
        assert_eq!(
            claims.owner(&ChannelName::gdb("ctl")).as_deref(),
            Some("test-tool")
        );
        assert_eq!(
            c.open_channel(&ChannelName::gdb_vcpu("ctl", 0))
                .unwrap_err()
                .rpc_code(),
            Some(codes::CHANNEL_OWNED)
        );
        assert_eq!(
            c.open_channel(&ChannelName::gdb("zzz"))
                .unwrap_err()
                .rpc_code(),
            Some(codes::UNKNOWN_PARTITION)
        );
        gdb.close().unwrap();
        assert!(claims.owner(&ChannelName::gdb("ctl")).is_none());

        // Trace data sent right after the open response is not lost.
        let tr = c.open_channel(&ChannelName::Trace).unwrap();
        for i in 0..3u8 {
            assert_eq!(tr.recv().unwrap(), [i; 8]);
        }
        drop(tr); // fire-and-forget close

        // Server-side close of a channel: its receiver disconnects.
        c.call("test.kick", Value::Null).unwrap();
        let n = c
            .notifications()
            .recv_timeout(Duration::from_secs(5))
            .unwrap();
        assert_eq!(n.method, "channel.closed");
        assert!(con.recv().is_err());

        // Server goes away: pending and later calls fail with Closed.
        c.call("test.bye", Value::Null).unwrap();
        agent.join().unwrap();
        let e = c.system_info().unwrap_err();
        assert!(
            matches!(e, ClientError::Closed { .. } | ClientError::Transport(_)),
            "{e:?}"
        );
        assert!(!c.is_connected());
    }

    #[test]
    fn shutdown_through_a_shared_reference() {
        let tmp = tempfile::tempdir().unwrap();
        let addr = LinkAddr::Unix(tmp.path().join("s.sock"));
        let agent = fake_agent(Listener::bind(&addr).unwrap(), ChannelClaims::new());
        let c = Arc::new(LinkClient::connect_with(&addr, opts("shared")).unwrap());
        let ch = c.open_channel(&ChannelName::console("ctl")).unwrap();
        let notifications = c.notifications().clone();
        let other = c.clone();
        thread::spawn(move || other.shutdown()).join().unwrap();
        // Everything that waits on the link ends: notifications, channel data, calls.
        assert!(notifications.recv().is_err());
        assert!(ch.recv().is_err());
        assert!(matches!(
            c.system_info(),
            Err(ClientError::Closed { .. } | ClientError::Transport(_))
        ));
        assert!(!c.is_connected());
        agent.join().unwrap();
    }

    #[test]
    fn client_timeouts_and_tcp_token() {
        let tmp = tempfile::tempdir().unwrap();
        let tf = tmp.path().join("tcp.token");
        let l = Listener::bind_with(
            &"tcp:127.0.0.1:0".parse().unwrap(),
            &BindOptions {
                token_file: Some(tf.clone()),
            },
        )
        .unwrap();
        let addr = l.local_addr().clone();
        let agent = fake_agent(l, ChannelClaims::new());
        // No token file given and none at the default path for this port: clear error.
        let e = LinkClient::connect_with(
            &addr,
            ClientOptions {
                token_file: Some(tmp.path().join("missing")),
                ..opts("t")
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("read token file"), "{e}");
        let c = LinkClient::connect_with(
            &addr,
            ClientOptions {
                token_file: Some(tf),
                call_timeout: Some(Duration::from_millis(100)),
                ..opts("t")
            },
        )
        .unwrap();
        assert!(matches!(
            c.call("test.slow", Value::Null),
            Err(ClientError::TimedOut { .. })
        ));
        assert_eq!(c.system_info().unwrap().version, "0.1.0");
        // Shutdown through a shared reference: later calls fail with Closed.
        let c = Arc::new(c);
        c.shutdown();
        assert!(matches!(c.system_info(), Err(ClientError::Closed { .. })));
        assert!(!c.is_connected());
        drop(c);
        agent.join().unwrap();
    }
}
