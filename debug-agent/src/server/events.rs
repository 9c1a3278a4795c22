//! Fan-out of system events to connections: console output to the clients that opened
//! `console:<p>`, state changes to the clients that called `events.subscribe`.
//!
//! One dispatcher thread reads the agent's subscription and hands each event to every
//! interested connection's bounded queue without blocking (a full queue drops and counts).
//! Each connection has a pump thread that writes its queue to the link, batching what is
//! queued into one write, so a slow client only slows itself.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crossbeam_channel::{Receiver, Sender, TrySendError, select};
use hv_core::SystemEvent;
use hv_link::control::{PartitionStateChanged, StateChangedParams, event_bytes};
use hv_link::{ChannelId, FrameEncoder, FrameWriter};

use super::Shared;
use super::control::{link_partition_state, state_detail};

/// Bytes batched into one write by a pump.
const BATCH_BYTES: usize = 64 * 1024;

/// A frame queued for one connection.
pub(crate) struct Outbound {
    channel: ChannelId,
    payload: Arc<[u8]>,
}

#[derive(Default)]
struct Interest {
    /// (partition index, console channel id).
    consoles: Vec<(usize, ChannelId)>,
    events: bool,
}

/// How many connections listen for each kind of event, kept by their sinks: the agent's
/// subscription takes only what someone listens for, so a debugger's stops and a chatty
/// guest's output do not wake the dispatcher for nobody.
#[derive(Debug, Default)]
pub(crate) struct Listening {
    /// Sinks with `partition.state_changed` notifications on.
    events: AtomicUsize,
    /// Console channels open, over all sinks.
    consoles: AtomicUsize,
}

impl Listening {
    /// Whether the dispatcher has anyone to hand `event` to.
    pub(crate) fn wants(&self, event: &SystemEvent) -> bool {
        match event {
            SystemEvent::ConsoleOutput { .. } => self.consoles.load(Ordering::Relaxed) > 0,
            SystemEvent::StateChanged { .. } | SystemEvent::Debugger { .. } => {
                self.events.load(Ordering::Relaxed) > 0
            }
            SystemEvent::ConsoleLine { .. } | SystemEvent::Warning { .. } => false,
        }
    }
}

/// One connection's subscription.
pub(crate) struct Sink {
    tx: Sender<Outbound>,
    interest: Mutex<Interest>,
    listening: Arc<Listening>,
    dropped: AtomicU64,
    client: String,
}

impl Sink {
    /// A sink counted in `listening`, and the receiver its pump drains.
    pub(crate) fn new(
        client: &str,
        capacity: usize,
        listening: Arc<Listening>,
    ) -> (Arc<Sink>, Receiver<Outbound>) {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        let sink = Arc::new(Sink {
            tx,
            interest: Mutex::default(),
            listening,
            dropped: AtomicU64::new(0),
            client: client.to_owned(),
        });
        (sink, rx)
    }

    fn interest(&self) -> MutexGuard<'_, Interest> {
        self.interest.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Start streaming partition `partition`'s console on `channel`.
    pub(crate) fn add_console(&self, partition: usize, channel: ChannelId) {
        self.interest().consoles.push((partition, channel));
        self.listening.consoles.fetch_add(1, Ordering::Relaxed);
    }

    /// Stop streaming on `channel`.
    pub(crate) fn remove_console(&self, channel: ChannelId) {
        let mut interest = self.interest();
        let before = interest.consoles.len();
        interest.consoles.retain(|(_, c)| *c != channel);
        let removed = before - interest.consoles.len();
        self.listening
            .consoles
            .fetch_sub(removed, Ordering::Relaxed);
    }

    /// Turn `partition.state_changed` notifications on or off.
    pub(crate) fn set_events(&self, on: bool) {
        let mut interest = self.interest();
        if interest.events != on {
            interest.events = on;
            if on {
                self.listening.events.fetch_add(1, Ordering::Relaxed);
            } else {
                self.listening.events.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    fn offer(&self, channel: ChannelId, payload: &Arc<[u8]>) {
        match self.tx.try_send(Outbound {
            channel,
            payload: payload.clone(),
        }) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => {
                if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(
                        client = %self.client,
                        "client does not keep up with console/event output; dropping (counted)"
                    );
                }
            }
        }
    }

    /// Frames dropped because the queue was full.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        // What the connection still listened for when it went.
        self.set_events(false);
        let consoles = self.interest().consoles.len();
        self.listening
            .consoles
            .fetch_sub(consoles, Ordering::Relaxed);
    }
}

/// Every live connection's sink.
#[derive(Default)]
pub(crate) struct Sinks {
    list: Mutex<Vec<Arc<Sink>>>,
    listening: Arc<Listening>,
}

impl Sinks {
    /// Sinks counted in `listening`.
    pub(crate) fn new(listening: Arc<Listening>) -> Sinks {
        Sinks {
            list: Mutex::default(),
            listening,
        }
    }

    /// What the sinks listen for.
    pub(crate) fn listening(&self) -> &Arc<Listening> {
        &self.listening
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Arc<Sink>>> {
        self.list.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn add(&self, sink: Arc<Sink>) {
        self.lock().push(sink);
    }

    pub(crate) fn remove(&self, sink: &Arc<Sink>) {
        self.lock().retain(|s| !Arc::ptr_eq(s, sink));
    }
}

/// The dispatcher thread: until `stop` disconnects.
pub(crate) fn dispatch(shared: &Shared, events: &Receiver<SystemEvent>, stop: &Receiver<()>) {
    loop {
        let event = select! {
            recv(events) -> e => match e {
                Ok(e) => e,
                Err(_) => return,
            },
            recv(stop) -> _ => return,
        };
        match event {
            SystemEvent::ConsoleOutput { partition, bytes } => {
                let sinks = shared.sinks.lock();
                let mut payload: Option<Arc<[u8]>> = None;
                for sink in sinks.iter() {
                    let channels: Vec<ChannelId> = sink
                        .interest()
                        .consoles
                        .iter()
                        .filter(|(p, _)| *p == partition)
                        .map(|(_, c)| *c)
                        .collect();
                    for channel in channels {
                        let payload = payload.get_or_insert_with(|| bytes.as_slice().into());
                        sink.offer(channel, payload);
                    }
                }
            }
            SystemEvent::StateChanged { partition, state } => {
                let Some(p) = shared.partitions.get(partition) else {
                    continue;
                };
                notify_state(
                    shared,
                    StateChangedParams {
                        partition: p.name().to_owned(),
                        state: link_partition_state(&state),
                        detail: state_detail(&state),
                    },
                );
            }
            // A debugger stop or release is a state change to clients: stopped_in_debugger with
            // what stopped it, or the partition's own state again.
            SystemEvent::Debugger {
                partition,
                stopped,
                detail,
            } => {
                let Some(p) = shared.partitions.get(partition) else {
                    continue;
                };
                let state = if stopped {
                    hv_link::PartitionState::StoppedInDebugger
                } else {
                    link_partition_state(&p.state())
                };
                notify_state(
                    shared,
                    StateChangedParams {
                        partition: p.name().to_owned(),
                        state,
                        detail: Some(detail),
                    },
                );
            }
            SystemEvent::ConsoleLine { .. } | SystemEvent::Warning { .. } => {}
        }
    }
}

/// Sends a `partition.state_changed` notification to every client that subscribed to events.
fn notify_state(shared: &Shared, params: StateChangedParams) {
    let Ok(bytes) = event_bytes::<PartitionStateChanged>(&params) else {
        return;
    };
    let payload: Arc<[u8]> = bytes.into();
    for sink in shared.sinks.lock().iter() {
        if sink.interest().events {
            sink.offer(ChannelId::CONTROL, &payload);
        }
    }
}

/// A connection's pump thread: writes queued frames, batching whatever is already queued into
/// one write and merging consecutive console bytes for the same channel into one frame (the
/// UART produces one event per byte).
pub(crate) fn pump(rx: &Receiver<Outbound>, writer: &FrameWriter) {
    let mut batch = FrameEncoder::with_capacity(BATCH_BYTES);
    // Data not yet framed: consecutive payloads of one data channel.
    let mut pending: Option<(ChannelId, Vec<u8>)> = None;
    while let Ok(first) = rx.recv() {
        batch.clear();
        let mut next = Some(first);
        while let Some(out) = next.take() {
            match &mut pending {
                Some((channel, data))
                    if *channel == out.channel && out.channel != ChannelId::CONTROL =>
                {
                    data.extend_from_slice(&out.payload);
                }
                _ => {
                    if let Some((channel, data)) = pending.take() {
                        push_data(&mut batch, channel, &data);
                    }
                    if out.channel == ChannelId::CONTROL {
                        let _ = batch.push(out.channel, &out.payload);
                    } else {
                        pending = Some((out.channel, out.payload.to_vec()));
                    }
                }
            }
            let buffered = batch.as_bytes().len() + pending.as_ref().map_or(0, |(_, d)| d.len());
            if buffered < BATCH_BYTES {
                next = rx.try_recv().ok();
            }
        }
        if let Some((channel, data)) = pending.take() {
            push_data(&mut batch, channel, &data);
        }
        if writer.send_batch(&batch).is_err() {
            return;
        }
    }
}

/// Frames `data` on `channel`, split at the payload limit.
fn push_data(batch: &mut FrameEncoder, channel: ChannelId, data: &[u8]) {
    for chunk in data.chunks(hv_link::MAX_PAYLOAD as usize) {
        let _ = batch.push(channel, chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pump_merges_console_bytes_and_keeps_order() {
        let tmp = tempfile::tempdir().unwrap();
        let addr = hv_link::LinkAddr::Unix(tmp.path().join("p.sock"));
        let listener = hv_link::Listener::bind(&addr).unwrap();
        let mut client = hv_link::connect(&addr).unwrap();
        let server = listener.accept().unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        let out = |channel: u32, payload: &[u8]| Outbound {
            channel: ChannelId(channel),
            payload: payload.into(),
        };
        for b in b"hello" {
            tx.send(out(1, &[*b])).unwrap();
        }
        tx.send(out(0, b"{}")).unwrap();
        tx.send(out(0, b"[]")).unwrap();
        tx.send(out(1, b"!")).unwrap();
        tx.send(out(2, b"x")).unwrap();
        tx.send(out(1, b"?")).unwrap();
        drop(tx);
        pump(&rx, server.writer());
        drop(server);
        let mut frames = Vec::new();
        while let Some(f) = client.recv_frame().unwrap() {
            frames.push((f.channel.0, String::from_utf8(f.payload).unwrap()));
        }
        let expect = [
            (1, "hello"),
            (0, "{}"),
            (0, "[]"),
            (1, "!"),
            (2, "x"),
            (1, "?"),
        ];
        let expect: Vec<(u32, String)> = expect.iter().map(|(c, s)| (*c, s.to_string())).collect();
        assert_eq!(frames, expect);
    }

    fn console_output() -> SystemEvent {
        SystemEvent::ConsoleOutput {
            partition: 0,
            bytes: b"x".to_vec(),
        }
    }

    fn stop() -> SystemEvent {
        SystemEvent::Debugger {
            partition: 0,
            stopped: true,
            detail: "breakpoint".into(),
        }
    }

    #[test]
    fn the_subscription_takes_what_some_connection_listens_for() {
        let listening = Arc::new(Listening::default());
        let wants = |e: SystemEvent| listening.wants(&e);
        assert!(!wants(console_output()) && !wants(stop()));
        let (a, _qa) = Sink::new("a", 4, listening.clone());
        let (b, _qb) = Sink::new("b", 4, listening.clone());
        a.set_events(true);
        a.set_events(true);
        assert!(wants(stop()) && !wants(console_output()));
        a.set_events(false);
        assert!(!wants(stop()));
        b.add_console(0, ChannelId(3));
        b.add_console(1, ChannelId(4));
        b.remove_console(ChannelId(3));
        assert!(wants(console_output()));
        b.set_events(true);
        // A connection that goes takes what it listened for with it.
        drop(b);
        assert!(!wants(console_output()) && !wants(stop()));
        drop(a);
        assert_eq!(listening.events.load(Ordering::Relaxed), 0);
        assert_eq!(listening.consoles.load(Ordering::Relaxed), 0);
        assert!(!wants(SystemEvent::ConsoleLine {
            partition: 0,
            line: "x".into()
        }));
    }
}
