//! The collector thread: polls the host link, builds snapshots, forwards state-change events and
//! console bytes, carries out the UI's commands, and reconnects when the link drops.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};
use hv_link::client::parse_event;
use hv_link::control::{
    PartitionStateChanged, StateChangedParams, TraceStart, TraceStartParams, TraceStop,
};
use hv_link::rpc::codes;
use hv_link::{ChannelHandle, ChannelName, ClientError, ClientOptions, LinkAddr, LinkClient};
use serde_json::Value;

use crate::activity::events_from_chunk;
use crate::model::{RawSample, Snapshot, SnapshotBuilder, StatsSample};

/// Period of state-only samples (`partitions.list`) between counter samples.
pub const STATE_TICK: Duration = Duration::from_millis(100);

/// The control method giving cumulative counters (optional on the agent side).
pub const STATS_METHOD: &str = "partitions.stats";

/// A request from the UI to the collector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `partition.pause`.
    Pause(String),
    /// `partition.resume`.
    Resume(String),
    /// `partition.reset`.
    Reset(String),
    /// `partition.inject_irq`.
    InjectIrq {
        /// Partition name.
        partition: String,
        /// vCPU index.
        vcpu: u32,
        /// Vector.
        vector: u8,
    },
    /// Bytes typed for the guest's UART (on the watched console).
    ConsoleInput(Vec<u8>),
    /// Follow this partition's console (closing the previous one).
    WatchConsole(String),
    /// Follow the trace live (timeline and IRQ latency from records), and record it to a file
    /// when one is given: opens the `trace` channel, writes its chunks (the trace file format)
    /// and turns tracing on (all partitions and classes; the setting is system-wide).
    StartTrace(Option<PathBuf>),
    /// Stop following: turns tracing off (system-wide) and closes the file.
    StopTrace,
}

impl Command {
    /// Short human description ("pause control").
    pub fn describe(&self) -> String {
        match self {
            Command::Pause(p) => format!("pause {p}"),
            Command::Resume(p) => format!("resume {p}"),
            Command::Reset(p) => format!("reset {p}"),
            Command::InjectIrq {
                partition,
                vcpu,
                vector,
            } => format!("inject IRQ {vector} into {partition} vCPU {vcpu}"),
            Command::ConsoleInput(b) => format!("console input ({} bytes)", b.len()),
            Command::WatchConsole(p) => format!("watch console of {p}"),
            Command::StartTrace(Some(p)) => format!("record trace to {}", p.display()),
            Command::StartTrace(None) => "live trace".into(),
            Command::StopTrace => "stop trace".into(),
        }
    }
}

/// News from the collector to the UI.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// The link is up.
    Connected {
        /// System name from the handshake.
        system: String,
        /// Link address.
        addr: String,
    },
    /// A fresh snapshot.
    Snapshot(Snapshot),
    /// A `partition.state_changed` notification.
    StateChanged(StateChangedParams),
    /// Output of the watched console.
    Console {
        /// Partition name.
        partition: String,
        /// Raw UART bytes.
        bytes: Vec<u8>,
    },
    /// A command finished (`error` is `None` on success).
    CommandDone {
        /// What was done (see [`Command::describe`]).
        what: String,
        /// The failure, if any.
        error: Option<String>,
    },
    /// Trace events from the `trace` channel.
    Trace(Vec<crate::activity::TraceEvent>),
    /// The link is down (or could not be made); the collector retries.
    LinkDown {
        /// Why.
        reason: String,
    },
}

/// How the collector connects and polls.
#[derive(Debug, Clone)]
pub struct CollectorOptions {
    /// Link address.
    pub addr: LinkAddr,
    /// Client options (name, token, timeouts).
    pub client: ClientOptions,
    /// Time between samples.
    pub interval: Duration,
    /// Time between reconnection attempts.
    pub retry: Duration,
}

impl CollectorOptions {
    /// Defaults for `addr`: client name `hv-console`, a sample every 500 ms, a retry every second.
    pub fn new(addr: LinkAddr) -> Self {
        Self {
            addr,
            client: ClientOptions {
                call_timeout: Some(Duration::from_secs(5)),
                ..ClientOptions::new("hv-console")
            },
            interval: Duration::from_millis(500),
            retry: Duration::from_secs(1),
        }
    }
}

/// Takes one sample: `partitions.list`, and `partitions.stats` while `stats_supported` (cleared
/// when the agent does not know the method).
pub fn sample(client: &LinkClient, stats_supported: &mut bool) -> Result<RawSample, ClientError> {
    let partitions = client.partitions()?;
    let mut stats = None;
    if *stats_supported {
        match client.call(STATS_METHOD, Value::Null) {
            Ok(v) => stats = StatsSample::from_json(&v),
            Err(e)
                if matches!(
                    e.rpc_code(),
                    Some(codes::METHOD_NOT_FOUND | codes::NOT_SUPPORTED)
                ) =>
            {
                *stats_supported = false;
            }
            Err(e @ ClientError::Rpc { .. }) | Err(e @ ClientError::Json { .. }) => {
                // A bad answer to an optional method: go on without counters this time.
                let _ = e;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(RawSample {
        partitions,
        stats,
        taken_at: Instant::now(),
    })
}

/// The running collector thread. Dropping it stops the thread (it finishes in the background).
#[derive(Debug)]
pub struct Collector {
    commands: Sender<Command>,
    updates: Receiver<Update>,
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Collector {
    /// Starts collecting from `opts.addr`.
    pub fn start(opts: CollectorOptions) -> std::io::Result<Collector> {
        let (ctx, crx) = crossbeam_channel::unbounded();
        let (utx, urx) = crossbeam_channel::unbounded();
        let (stx, srx) = crossbeam_channel::bounded(0);
        let thread = std::thread::Builder::new()
            .name("hv-console-collector".into())
            .spawn(move || run(&opts, &crx, &utx, &srx))?;
        Ok(Collector {
            commands: ctx,
            updates: urx,
            stop: Some(stx),
            thread: Some(thread),
        })
    }

    /// Queues a command.
    pub fn send(&self, cmd: Command) {
        let _ = self.commands.send(cmd);
    }

    /// Updates, in order.
    pub fn updates(&self) -> &Receiver<Update> {
        &self.updates
    }

    /// Stops the thread and waits for it.
    pub fn stop(mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.take();
    }
}

enum Exit {
    Stop,
    LinkDown(String),
}

fn run(
    opts: &CollectorOptions,
    commands: &Receiver<Command>,
    updates: &Sender<Update>,
    stop: &Receiver<()>,
) {
    let mut watched: Option<String> = None;
    let mut last_reason = String::new();
    loop {
        match LinkClient::connect_with(&opts.addr, opts.client.clone()) {
            Ok(client) => {
                last_reason.clear();
                let _ = updates.send(Update::Connected {
                    system: client.welcome().system.clone(),
                    addr: opts.addr.to_string(),
                });
                match serve(opts, &client, commands, updates, stop, &mut watched) {
                    Exit::Stop => {
                        client.shutdown();
                        return;
                    }
                    Exit::LinkDown(reason) => {
                        let _ = updates.send(Update::LinkDown {
                            reason: reason.clone(),
                        });
                        last_reason = reason;
                    }
                }
            }
            Err(e) => {
                let reason = e.to_string();
                if reason != last_reason {
                    let _ = updates.send(Update::LinkDown {
                        reason: reason.clone(),
                    });
                    last_reason = reason;
                }
            }
        }
        // Wait before retrying; commands meanwhile fail at once, console watches are kept.
        let deadline = Instant::now() + opts.retry;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            select! {
                recv(stop) -> _ => return,
                recv(commands) -> c => match c {
                    Ok(Command::WatchConsole(p)) => watched = Some(p),
                    Ok(cmd) => {
                        let _ = updates.send(Update::CommandDone {
                            what: cmd.describe(),
                            error: Some("the link is down".into()),
                        });
                    }
                    Err(_) => return,
                },
                default(left) => {}
            }
        }
    }
}

/// A trace recording in progress.
struct Recording {
    path: Option<PathBuf>,
    file: Option<BufWriter<File>>,
    bytes: u64,
    channel: ChannelHandle,
}

impl Recording {
    fn start(client: &LinkClient, path: Option<PathBuf>) -> Result<Recording, String> {
        let file = match &path {
            Some(p) => Some(BufWriter::new(
                File::create(p).map_err(|e| format!("create {}: {e}", p.display()))?,
            )),
            None => None,
        };
        let channel = client
            .open_channel(&ChannelName::Trace)
            .map_err(|e| e.to_string())?;
        client
            .call_typed::<TraceStart>(&TraceStartParams::default())
            .map_err(|e| e.to_string())?;
        Ok(Recording {
            path,
            file,
            bytes: 0,
            channel,
        })
    }

    /// Appends one chunk (a frame of the `trace` channel) to the file, if any.
    fn write(&mut self, chunk: &[u8]) -> Result<(), String> {
        self.bytes += chunk.len() as u64;
        match (&mut self.file, &self.path) {
            (Some(f), Some(p)) => f
                .write_all(chunk)
                .map_err(|e| format!("write {}: {e}", p.display())),
            _ => Ok(()),
        }
    }

    fn finish(mut self, client: &LinkClient) -> String {
        let _ = client.call_typed::<TraceStop>(&());
        // Chunks already in flight.
        while let Ok(chunk) = self.channel.receiver().try_recv() {
            if self.write(&chunk).is_err() {
                break;
            }
        }
        match (self.file.as_mut(), &self.path) {
            (Some(f), Some(p)) => {
                let _ = f.flush();
                format!("trace saved to {} ({} bytes)", p.display(), self.bytes)
            }
            _ => format!("live trace stopped ({} bytes)", self.bytes),
        }
    }
}

fn open_console(client: &LinkClient, partition: &str) -> Option<ChannelHandle> {
    client.open_channel(&ChannelName::console(partition)).ok()
}

fn serve(
    opts: &CollectorOptions,
    client: &LinkClient,
    commands: &Receiver<Command>,
    updates: &Sender<Update>,
    stop: &Receiver<()>,
    watched: &mut Option<String>,
) -> Exit {
    let _ = client.subscribe_events();
    let mut builder = SnapshotBuilder::new(client.welcome().system.clone());
    let mut stats_supported = true;
    let mut console = watched.as_deref().and_then(|p| open_console(client, p));
    let mut recording: Option<Recording> = None;
    let never = crossbeam_channel::never();
    // vCPU states at up to 10 Hz (the timeline's tick), counters every `interval`.
    let ticker = crossbeam_channel::tick(opts.interval.min(STATE_TICK));
    let mut next_full = Instant::now();
    let mut poll = |builder: &mut SnapshotBuilder| -> Result<(), ClientError> {
        let now = Instant::now();
        let snapshot = if now >= next_full {
            next_full = now + opts.interval;
            builder.build(sample(client, &mut stats_supported)?)
        } else {
            builder.build_states(client.partitions()?, now)
        };
        let _ = updates.send(Update::Snapshot(snapshot));
        Ok(())
    };
    if let Err(e) = poll(&mut builder) {
        return Exit::LinkDown(e.to_string());
    }
    loop {
        let console_rx = console.as_ref().map_or(&never, |c| c.receiver());
        let trace_rx = recording.as_ref().map_or(&never, |r| r.channel.receiver());
        select! {
            recv(trace_rx) -> chunk => {
                let failure = match chunk {
                    Ok(chunk) => {
                        let events = events_from_chunk(&chunk);
                        if !events.is_empty() {
                            let _ = updates.send(Update::Trace(events));
                        }
                        recording.as_mut().and_then(|r| r.write(&chunk).err())
                    }
                    Err(_) => Some("the trace channel closed".to_owned()),
                };
                if let Some(error) = failure
                    && let Some(r) = recording.take()
                {
                    let saved = r.finish(client);
                    let _ = updates.send(Update::CommandDone {
                        what: format!("recording stopped: {error}; {saved}"),
                        error: Some(error),
                    });
                }
            }
            recv(stop) -> _ => {
                if let Some(r) = recording.take() {
                    r.finish(client);
                }
                return Exit::Stop;
            }
            recv(ticker) -> _ => {
                if let Err(e) = poll(&mut builder) {
                    return Exit::LinkDown(e.to_string());
                }
            }
            recv(client.notifications()) -> n => match n {
                Ok(n) => {
                    if let Some(Ok(p)) = parse_event::<PartitionStateChanged>(&n) {
                        let reset = watched.as_deref() == Some(p.partition.as_str());
                        let _ = updates.send(Update::StateChanged(p));
                        if reset && console.is_none() {
                            console = watched.as_deref().and_then(|w| open_console(client, w));
                        }
                    }
                }
                Err(_) => return Exit::LinkDown(closed_reason(client)),
            },
            recv(console_rx) -> data => match data {
                Ok(bytes) => {
                    if let Some(p) = watched.clone() {
                        let _ = updates.send(Update::Console { partition: p, bytes });
                    }
                }
                Err(_) => {
                    // Closed by the server (e.g. partition reset): reopen on the next state change.
                    console = None;
                    if !client.is_connected() {
                        return Exit::LinkDown(closed_reason(client));
                    }
                }
            },
            recv(commands) -> c => {
                let Ok(cmd) = c else { return Exit::Stop };
                let what = cmd.describe();
                let result = match cmd {
                    Command::Pause(p) => client.pause(&p),
                    Command::Resume(p) => client.resume(&p),
                    Command::Reset(p) => client.reset(&p),
                    Command::InjectIrq { partition, vcpu, vector } => {
                        client.inject_irq(&partition, vcpu, vector)
                    }
                    Command::ConsoleInput(bytes) => match &console {
                        Some(c) => c.send(&bytes).map(|_| ()),
                        None => {
                            if let Some(w) = watched.as_deref() {
                                console = open_console(client, w);
                            }
                            match &console {
                                Some(c) => c.send(&bytes),
                                None => Err(ClientError::Closed { reason: "no console channel".into() }),
                            }
                        }
                    },
                    Command::StartTrace(path) => {
                        if let Some(r) = recording.take() {
                            // Saving a file is news; switching from live following is not.
                            let to_file = r.path.is_some();
                            let saved = r.finish(client);
                            if to_file {
                                let _ = updates.send(Update::CommandDone { what: saved, error: None });
                            }
                        }
                        match Recording::start(client, path) {
                            Ok(r) => {
                                recording = Some(r);
                                Ok(())
                            }
                            Err(e) => {
                                let _ = updates.send(Update::CommandDone { what, error: Some(e) });
                                continue;
                            }
                        }
                    }
                    Command::StopTrace => {
                        let saved = recording
                            .take()
                            .map_or_else(|| "not recording".to_owned(), |r| r.finish(client));
                        let _ = updates.send(Update::CommandDone { what: saved, error: None });
                        continue;
                    }
                    Command::WatchConsole(p) => {
                        if watched.as_deref() != Some(p.as_str()) || console.is_none() {
                            drop(console.take());
                            console = open_console(client, &p);
                            *watched = Some(p);
                        }
                        continue;
                    }
                };
                if matches!(result, Err(ClientError::Closed { .. } | ClientError::Transport(_))) {
                    return Exit::LinkDown(closed_reason(client));
                }
                if !what.starts_with("console input") || result.is_err() {
                    let _ = updates.send(Update::CommandDone {
                        what,
                        error: result.err().map(|e| e.to_string()),
                    });
                }
            }
        }
    }
}

fn closed_reason(client: &LinkClient) -> String {
    match client.system_info() {
        Err(e) => e.to_string(),
        Ok(_) => "the link closed".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_describe_themselves() {
        assert_eq!(Command::Pause("control".into()).describe(), "pause control");
        assert_eq!(
            Command::InjectIrq {
                partition: "worker".into(),
                vcpu: 1,
                vector: 48
            }
            .describe(),
            "inject IRQ 48 into worker vCPU 1"
        );
    }

    /// A fake agent for one connection: `partitions.list` (one partition), no
    /// `partitions.stats`, `partition.pause` with its notification, `console:` channels that
    /// greet with a line and echo input.
    fn fake_agent(l: hv_link::Listener) -> std::thread::JoinHandle<()> {
        use hv_link::control::{
            ChannelOpenParams, ChannelOpenResult, PartitionParams, PartitionState, VcpuInfo,
            VcpuState,
        };
        use hv_link::rpc::{Message, RpcError};
        use hv_link::server::{
            ChannelClaims, ChannelTable, ServerConfig, accept_handshake, send_error, send_event,
            send_result,
        };
        std::thread::spawn(move || {
            let cfg = ServerConfig::for_listener(&l, "fake-agent", "demo");
            let mut conn = l.accept().unwrap();
            let acc = accept_handshake(&mut conn, &cfg).unwrap();
            let mut table = ChannelTable::new(&acc, ChannelClaims::new());
            let w = conn.writer().clone();
            while let Ok(Some(f)) = conn.recv_frame() {
                if f.channel != hv_link::ChannelId::CONTROL {
                    w.send_frame(f.channel, &f.payload).unwrap();
                    continue;
                }
                let Ok(Message::Request(req)) = Message::parse(&f.payload) else {
                    continue;
                };
                match req.method.as_str() {
                    "partitions.list" => send_result(
                        &w,
                        &req.id,
                        &[hv_link::PartitionInfo {
                            id: 0,
                            name: "ctl".into(),
                            state: PartitionState::Running,
                            vcpus: vec![VcpuInfo {
                                index: 0,
                                state: VcpuState::Halted,
                                device: None,
                            }],
                            image: "ctl.elf".into(),
                        }],
                    )
                    .unwrap(),
                    "events.subscribe" => send_result(&w, &req.id, &()).unwrap(),
                    "partition.pause" => {
                        let p: PartitionParams = req.params_as().unwrap();
                        send_result(&w, &req.id, &()).unwrap();
                        send_event::<PartitionStateChanged>(
                            &w,
                            &StateChangedParams {
                                partition: p.partition,
                                state: PartitionState::Paused,
                                detail: None,
                            },
                        )
                        .unwrap();
                    }
                    "channel.open" => {
                        let p: ChannelOpenParams = req.params_as().unwrap();
                        let id = table.open(p.name).unwrap();
                        send_result(&w, &req.id, &ChannelOpenResult { id }).unwrap();
                        w.send_frame(id, b"hello\n").unwrap();
                    }
                    m => send_error(&w, &req.id, &RpcError::method_not_found(m)).unwrap(),
                }
            }
        })
    }

    #[test]
    fn collects_snapshots_and_carries_out_commands() {
        let tmp = tempfile::tempdir().unwrap();
        let addr = LinkAddr::Unix(tmp.path().join("a.sock"));
        let agent = fake_agent(hv_link::Listener::bind(&addr).unwrap());
        let mut opts = CollectorOptions::new(addr);
        opts.interval = Duration::from_millis(20);
        let c = Collector::start(opts).unwrap();
        let next = |pred: &dyn Fn(&Update) -> bool| loop {
            let u = c.updates().recv().unwrap();
            if pred(&u) {
                return u;
            }
        };
        let u = next(&|u| matches!(u, Update::Connected { .. }));
        assert!(matches!(u, Update::Connected { system, .. } if system == "demo"));
        let Update::Snapshot(s) = next(&|u| matches!(u, Update::Snapshot(_))) else {
            unreachable!()
        };
        assert_eq!(s.partitions[0].name, "ctl");
        assert!(!s.stats, "the fake agent has no partitions.stats");
        c.send(Command::Pause("ctl".into()));
        let u = next(&|u| matches!(u, Update::CommandDone { .. }));
        assert_eq!(
            u,
            Update::CommandDone {
                what: "pause ctl".into(),
                error: None
            }
        );
        let u = next(&|u| matches!(u, Update::StateChanged(_)));
        assert!(matches!(u, Update::StateChanged(p) if p.state == hv_link::PartitionState::Paused));
        c.send(Command::WatchConsole("ctl".into()));
        c.send(Command::ConsoleInput(b"typed".to_vec()));
        let mut seen = Vec::new();
        while !seen.ends_with(b"typed") {
            if let Update::Console { partition, bytes } =
                next(&|u| matches!(u, Update::Console { .. }))
            {
                assert_eq!(partition, "ctl");
                seen.extend(bytes);
            }
        }
        assert_eq!(seen, b"hello\ntyped");
        c.stop();
        agent.join().unwrap();
    }

    #[test]
    fn a_missing_system_reports_link_down_and_stops() {
        let tmp = tempfile::tempdir().unwrap();
        let mut opts = CollectorOptions::new(LinkAddr::Unix(tmp.path().join("none.sock")));
        opts.retry = Duration::from_millis(20);
        let c = Collector::start(opts).unwrap();
        match c.updates().recv().unwrap() {
            Update::LinkDown { reason } => assert!(!reason.is_empty()),
            other => panic!("{other:?}"),
        }
        c.send(Command::Pause("x".into()));
        // The command fails while the link is down (after at most one retry period).
        loop {
            if let Update::CommandDone { what, error } = c.updates().recv().unwrap() {
                assert_eq!(what, "pause x");
                assert_eq!(error.as_deref(), Some("the link is down"));
                break;
            }
        }
        c.stop();
    }
}
