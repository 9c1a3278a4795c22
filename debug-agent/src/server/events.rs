//! Fan-out of system events to connections: console output to the clients that opened
//! `console:<p>`, state changes to the clients that called `events.subscribe`.
//!
//! One dispatcher thread reads the agent's subscription and hands each event to every
//! interested connection's bounded queue without blocking (a full queue drops and counts).
//! Each connection has a pump thread that writes its queue to the link, batching what is
//! queued into one write, so a slow client only slows itself.

use std::sync::atomic::{AtomicU64, Ordering};
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

/// One connection's subscription.
pub(crate) struct Sink {
    tx: Sender<Outbound>,
    interest: Mutex<Interest>,
    dropped: AtomicU64,
    client: String,
}

impl Sink {
    /// A sink and the receiver its pump drains.
    pub(crate) fn new(client: &str, capacity: usize) -> (Arc<Sink>, Receiver<Outbound>) {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        let sink = Arc::new(Sink {
            tx,
            interest: Mutex::default(),
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
    }

    /// Stop streaming on `channel`.
    pub(crate) fn remove_console(&self, channel: ChannelId) {
        self.interest().consoles.retain(|(_, c)| *c != channel);
    }

    /// Turn `partition.state_changed` notifications on or off.
    pub(crate) fn set_events(&self, on: bool) {
        self.interest().events = on;
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

/// Every live connection's sink.
#[derive(Default)]
pub(crate) struct Sinks {
    list: Mutex<Vec<Arc<Sink>>>,
}

impl Sinks {
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
                let params = StateChangedParams {
                    partition: p.name.clone(),
                    state: link_partition_state(&state),
                    detail: state_detail(&state),
                };
                let Ok(bytes) = event_bytes::<PartitionStateChanged>(&params) else {
                    continue;
                };
                let payload: Arc<[u8]> = bytes.into();
                for sink in shared.sinks.lock().iter() {
                    if sink.interest().events {
                        sink.offer(ChannelId::CONTROL, &payload);
                    }
                }
            }
            SystemEvent::ConsoleLine { .. } | SystemEvent::Warning { .. } => {}
        }
    }
}

/// A connection's pump thread: writes queued frames, batching whatever is already queued.
pub(crate) fn pump(rx: &Receiver<Outbound>, writer: &FrameWriter) {
    let mut batch = FrameEncoder::with_capacity(BATCH_BYTES);
    while let Ok(first) = rx.recv() {
        batch.clear();
        let _ = batch.push(first.channel, &first.payload);
        while batch.as_bytes().len() < BATCH_BYTES {
            match rx.try_recv() {
                Ok(next) => {
                    let _ = batch.push(next.channel, &next.payload);
                }
                Err(_) => break,
            }
        }
        if writer.send_batch(&batch).is_err() {
            return;
        }
    }
}
