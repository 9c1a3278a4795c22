//! One client connection: handshake, then a read loop routing each frame — control requests
//! to the JSON-RPC service, `gdb:` data to its session, `console:` data to the partition's UART.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use hv_core::PartitionHandle;
use hv_link::control::{
    ChannelClose, ChannelCloseParams, ChannelClosed, ChannelClosedParams, ChannelOpen,
    ChannelOpenParams, ChannelOpenResult, EventsSubscribe, EventsUnsubscribe, InjectIrqParams,
    Method, PartitionInjectIrq, PartitionParams, PartitionPause, PartitionReset, PartitionResume,
    PartitionsList, PartitionsStatsMethod, SystemInfoMethod, TraceStart, TraceStartParams,
    TraceStop,
};
use hv_link::rpc::{Message, Request, RequestId, codes};
use hv_link::server::{Accepted, send_error, send_event, send_result};
use hv_link::{
    ChannelId, ChannelName, ChannelTable, Connection, FrameReader, FrameWriter, RpcError,
    TransportError, accept_handshake,
};
use serde_json::Value;

use super::Shared;
use super::control::{self, Lifecycle};
use super::events::{self, Sink};
use super::trace;
use crate::gdb::{GdbEnded, GdbOutput, GdbSession};

/// Serves one accepted connection until it ends.
pub(crate) fn serve(shared: &Arc<Shared>, mut conn: Connection) {
    let peer = conn.peer().to_owned();
    let accepted = match accept_handshake(&mut conn, &shared.server) {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(%peer, "debug agent: handshake failed, connection closed: {e}");
            return;
        }
    };
    let client = accepted.hello.client.clone();
    tracing::info!(%peer, %client, "debug agent: client connected");
    let (reader, writer) = conn.split();
    let (sink, queue) = Sink::new(
        &client,
        shared.queue_capacity,
        shared.sinks.listening().clone(),
    );
    let pump_writer = writer.clone();
    let pump = std::thread::Builder::new()
        .name("agent-pump".into())
        .spawn(move || events::pump(&queue, &pump_writer));
    let pump = match pump {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(%client, "debug agent: cannot start a pump thread: {e}");
            writer.shutdown();
            return;
        }
    };
    shared.sinks.add(sink.clone());
    let mut state = ConnState {
        shared: shared.clone(),
        table: Arc::new(Mutex::new(ChannelTable::new(
            &accepted,
            shared.claims.clone(),
        ))),
        accepted,
        writer: writer.clone(),
        sink: sink.clone(),
        sessions: HashMap::new(),
        consoles: HashMap::new(),
        traces: HashMap::new(),
        tracer: shared.trace.new_requester(),
        unknown_frames: 0,
        console_overflow: 0,
    };
    let end = state.run(reader);
    state.close_all();
    writer.shutdown();
    shared.sinks.remove(&sink);
    let dropped = sink.dropped();
    drop(sink);
    drop(state);
    let _ = pump.join();
    match end {
        End::Clean => tracing::info!(%peer, %client, dropped, "debug agent: client disconnected"),
        End::Error(e) => {
            tracing::warn!(%peer, %client, dropped, "debug agent: connection closed: {e}")
        }
    }
}

enum End {
    Clean,
    Error(String),
}

struct ConnState {
    shared: Arc<Shared>,
    accepted: Accepted,
    /// Shared with the gdb sessions: one that ends on its own closes its channel itself.
    table: Arc<Mutex<ChannelTable>>,
    writer: FrameWriter,
    sink: Arc<Sink>,
    sessions: HashMap<ChannelId, GdbSession>,
    consoles: HashMap<ChannelId, PartitionHandle>,
    traces: trace::Subscriptions,
    /// This connection's id for `trace.start`/`trace.stop` (undone when it closes).
    tracer: u64,
    unknown_frames: u64,
    console_overflow: u64,
}

impl ConnState {
    fn run(&mut self, mut reader: FrameReader) -> End {
        loop {
            let frame = match reader.recv_frame_ref() {
                Ok(Some(f)) => f,
                Ok(None) => return End::Clean,
                Err(TransportError::Frame(e)) => {
                    self.shared
                        .malformed
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let message = format!("malformed frame: {e}; closing the connection");
                    // Tell the client why before closing (id null: it answers no request).
                    let _ = send_error(
                        &self.writer,
                        &RequestId::Null,
                        &RpcError::new(codes::INVALID_REQUEST, message.clone()),
                    );
                    return End::Error(message);
                }
                Err(_) if self.writer.is_closed() => return End::Clean,
                Err(e) => return End::Error(e.to_string()),
            };
            if frame.channel == ChannelId::CONTROL {
                self.on_control(frame.payload);
            } else if let Some(session) = self.sessions.get(&frame.channel) {
                if self.table().name(frame.channel).is_some() {
                    session.input(frame.payload);
                } else {
                    // The session ended on its own and closed its channel: reap it.
                    self.reap_ended();
                    self.unknown_frames += 1;
                }
            } else if let Some(partition) = self.consoles.get(&frame.channel) {
                let taken = partition.console_input(frame.payload);
                if taken < frame.payload.len() {
                    self.console_overflow += (frame.payload.len() - taken) as u64;
                    tracing::debug!(
                        partition = %partition.name(),
                        lost = frame.payload.len() - taken,
                        "console input: the guest's UART receive FIFO is full"
                    );
                }
            } else {
                // Data for a channel that is not (or no longer) open: dropped.
                self.unknown_frames += 1;
            }
        }
    }

    fn table(&self) -> MutexGuard<'_, ChannelTable> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops the sessions that ended on its own (their channel is already closed).
    fn reap_ended(&mut self) {
        let ended: Vec<ChannelId> = {
            let table = self.table();
            self.sessions
                .keys()
                .filter(|c| table.name(**c).is_none())
                .copied()
                .collect()
        };
        for channel in ended {
            if let Some(session) = self.sessions.remove(&channel) {
                // Its thread has detached already; this only joins it.
                session.close();
            }
        }
    }

    /// What a gdb session on `channel` does when it ends on its own: release the channel (and
    /// its claim) and tell the client why with a `channel.closed` notice.
    fn on_session_end(&self, channel: ChannelId) -> GdbEnded {
        let table = self.table.clone();
        let writer = self.writer.clone();
        let client = self.accepted.hello.client.clone();
        Box::new(move |reason| {
            let name = table
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .close(channel);
            // Err: the client closed the channel at the same moment; it knows.
            if let Ok(name) = name {
                tracing::info!(%client, %name, %reason, "debug agent: gdb session ended");
                let _ = send_event::<ChannelClosed>(
                    &writer,
                    &ChannelClosedParams {
                        id: channel,
                        reason,
                    },
                );
            }
        })
    }

    fn on_control(&mut self, payload: &[u8]) {
        match Message::parse(payload) {
            Ok(Message::Request(req)) => self.on_request(&req),
            Ok(Message::Notification(n)) => {
                // hv-link clients close channels fire-and-forget with a notification.
                if n.method == ChannelClose::NAME
                    && let Ok(p) = n.params_as::<ChannelCloseParams>()
                {
                    let _ = self.close_channel(p.id);
                }
            }
            Ok(Message::Response(_)) => {}
            Err(response) => {
                let _ = self
                    .writer
                    .send_frame(ChannelId::CONTROL, &response.to_vec());
            }
        }
    }

    fn reply<T: serde::Serialize>(&self, id: &RequestId, result: Result<T, RpcError>) {
        let _ = match result {
            Ok(v) => send_result(&self.writer, id, &v),
            Err(e) => send_error(&self.writer, id, &e),
        };
    }

    fn on_request(&mut self, req: &Request) {
        let shared = self.shared.clone();
        let id = &req.id;
        match req.method.as_str() {
            SystemInfoMethod::NAME => self.reply(id, Ok(control::system_info(&shared))),
            PartitionsList::NAME => self.reply(id, Ok(control::partitions_list(&shared))),
            PartitionPause::NAME | PartitionResume::NAME | PartitionReset::NAME => {
                let op = match req.method.as_str() {
                    PartitionPause::NAME => Lifecycle::Pause,
                    PartitionResume::NAME => Lifecycle::Resume,
                    _ => Lifecycle::Reset,
                };
                let r = req
                    .params_as::<PartitionParams>()
                    .and_then(|p| control::lifecycle(&shared, &p, op));
                self.reply(id, r);
            }
            PartitionInjectIrq::NAME => {
                let r = req
                    .params_as::<InjectIrqParams>()
                    .and_then(|p| control::inject_irq(&shared, &p));
                self.reply(id, r);
            }
            ChannelOpen::NAME => match req.params_as::<ChannelOpenParams>() {
                Ok(p) => self.open_channel(id, p.name),
                Err(e) => self.reply::<()>(id, Err(e)),
            },
            ChannelClose::NAME => {
                let r = req
                    .params_as::<ChannelCloseParams>()
                    .and_then(|p| self.close_channel(p.id));
                self.reply(id, r);
            }
            EventsSubscribe::NAME => {
                self.sink.set_events(true);
                self.reply(id, Ok(Value::Null));
            }
            EventsUnsubscribe::NAME => {
                self.sink.set_events(false);
                self.reply(id, Ok(Value::Null));
            }
            TraceStart::NAME => {
                let r = req
                    .params_as::<Option<TraceStartParams>>()
                    .and_then(|p| trace::start(&shared, self.tracer, &p.unwrap_or_default()));
                self.reply(id, r);
            }
            TraceStop::NAME => {
                trace::stop(&shared, self.tracer);
                self.reply(id, Ok(Value::Null));
            }
            PartitionsStatsMethod::NAME => self.reply(id, Ok(trace::stats(&shared))),
            other => self.reply::<()>(id, Err(RpcError::method_not_found(other))),
        }
    }

    /// `channel.open`: replies itself, so that console data starts only after the reply.
    fn open_channel(&mut self, id: &RequestId, name: ChannelName) {
        let shared = self.shared.clone();
        let partition = match name.partition().map(|p| control::find(&shared, p)) {
            Some(Ok(p)) => Some(p.clone()),
            Some(Err(e)) => return self.reply::<()>(id, Err(e)),
            None => None,
        };
        match (&name, partition) {
            (ChannelName::Gdb { vcpu, .. }, Some(p)) => {
                if let Some(v) = *vcpu
                    && v as usize >= p.vcpus().len()
                {
                    return self.reply::<()>(id, Err(RpcError::unknown_vcpu(p.name(), v)));
                }
                self.reap_ended();
                let channel = match self.table().open(name.clone()) {
                    Ok(c) => c,
                    Err(e) => return self.reply::<()>(id, Err(e)),
                };
                let writer = self.writer.clone();
                // One frame (one write) per gdbstub flush.
                let output: GdbOutput =
                    Box::new(move |bytes| writer.send_chunked(channel, bytes).is_ok());
                match GdbSession::start_notifying(
                    p,
                    shared.partitions.clone(),
                    *vcpu,
                    output,
                    shared.gdb_options,
                    self.on_session_end(channel),
                ) {
                    Ok(session) => {
                        self.sessions.insert(channel, session);
                        tracing::info!(client = %self.accepted.hello.client, %name, "debug agent: gdb attached");
                        self.reply(id, Ok(ChannelOpenResult { id: channel }));
                    }
                    Err(e) => {
                        let _ = self.table().close(channel);
                        self.reply::<()>(id, Err(RpcError::internal(e)));
                    }
                }
            }
            (ChannelName::Console { .. }, Some(p)) => {
                let channel = match self.table().open(name.clone()) {
                    Ok(c) => c,
                    Err(e) => return self.reply::<()>(id, Err(e)),
                };
                self.consoles.insert(channel, p.clone());
                self.reply(id, Ok(ChannelOpenResult { id: channel }));
                self.sink.add_console(p.id(), channel);
            }
            (ChannelName::Trace, _) => {
                let channel = match self.table().open(name.clone()) {
                    Ok(c) => c,
                    Err(e) => return self.reply::<()>(id, Err(e)),
                };
                // Subscribed before the reply (nothing produced after it is missed); the header
                // and the batches follow the reply.
                let subscribed =
                    shared
                        .trace
                        .subscribe(&shared.trace_header, channel, &self.writer, || {
                            self.reply(id, Ok(ChannelOpenResult { id: channel }))
                        });
                match subscribed {
                    Ok(sub) => {
                        self.traces.insert(channel, sub);
                        // Where this recording starts, if anything is traced already.
                        shared.trace.note_start_states(&shared.partitions);
                    }
                    Err(e) => {
                        tracing::warn!("debug agent: cannot start a trace writer: {e}");
                        let _ = self.table().close(channel);
                    }
                }
            }
            // `control` (always channel 0): the table explains.
            _ => {
                let r = self.table().open(name).map(|c| ChannelOpenResult { id: c });
                self.reply(id, r);
            }
        }
    }

    /// `channel.close`: detaches a gdb session (guest resumes) before releasing ownership.
    fn close_channel(&mut self, channel: ChannelId) -> Result<Value, RpcError> {
        let name = self.table().name(channel).cloned();
        let Some(name) = name else {
            // A gdb session that ended on its own has closed its channel already.
            self.reap_ended();
            return Err(RpcError::unknown_channel(format!(
                "no open channel with id {channel}"
            )));
        };
        if let Some(session) = self.sessions.remove(&channel) {
            // Not under the table lock: a session ending on its own at this moment takes it.
            session.close();
            tracing::info!(client = %self.accepted.hello.client, %name, "debug agent: gdb detached");
            // It may have closed the channel itself meanwhile (and sent channel.closed).
            let _ = self.table().close(channel);
            return Ok(Value::Null);
        }
        if self.consoles.remove(&channel).is_some() {
            self.sink.remove_console(channel);
        }
        if let Some(sub) = self.traces.remove(&channel) {
            self.shared.trace.unsubscribe(&sub);
            tracing::debug!(lost = sub.lost(), "debug agent: trace channel closed");
        }
        self.table().close(channel)?;
        Ok(Value::Null)
    }

    /// Connection gone: detach every gdb session, then release the channels.
    fn close_all(&mut self) {
        for (channel, session) in self.sessions.drain() {
            session.close();
            tracing::info!(
                client = %self.accepted.hello.client,
                channel = %channel,
                "debug agent: gdb detached (connection closed)"
            );
        }
        for channel in self.consoles.keys() {
            self.sink.remove_console(*channel);
        }
        self.consoles.clear();
        for (_, sub) in self.traces.drain() {
            self.shared.trace.unsubscribe(&sub);
        }
        trace::stop(&self.shared, self.tracer);
        let mut table = self.table();
        let open: Vec<ChannelId> = table.iter().map(|(c, _)| c).collect();
        for channel in open {
            let _ = table.close(channel);
        }
        drop(table);
        if self.unknown_frames > 0 || self.console_overflow > 0 {
            tracing::debug!(
                client = %self.accepted.hello.client,
                unknown_frames = self.unknown_frames,
                console_overflow = self.console_overflow,
                "debug agent: connection statistics"
            );
        }
    }
}
