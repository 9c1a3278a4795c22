//! One debug session: DAP requests in, gdb/MI commands and host-link calls out, DAP responses
//! and events back.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hv_link::{ChannelName, LinkAddr, LinkClient, PartitionInfo, PartitionState, VcpuState};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::gdb::{Gdb, GdbError, GdbEvent};
use crate::mi::{self, AsyncKind, MiValue, StreamKind};
use crate::protocol::Outbox;
use crate::target::{self, GdbPort, Launched, RunLine, TargetError};
use crate::{DapOptions, base64};

/// Errors of a request, shown to the user in VS Code.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Bad or missing arguments.
    #[error("{0}")]
    Args(String),
    /// gdb failed.
    #[error(transparent)]
    Gdb(#[from] GdbError),
    /// The system or the host link failed.
    #[error(transparent)]
    Target(Box<TargetError>),
    /// A request that needs a target before launch/attach.
    #[error("not debugging yet: launch or attach first")]
    NotStarted,
    /// A request that needs a stopped target.
    #[error("the target is running: pause it first")]
    Running,
}

impl From<TargetError> for SessionError {
    fn from(e: TargetError) -> Self {
        SessionError::Target(Box::new(e))
    }
}

type Result<T, E = SessionError> = std::result::Result<T, E>;

/// `launch` and `attach` arguments (documented in the crate's README).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StartArgs {
    system: Option<String>,
    partition: Option<String>,
    vcpu: Option<u32>,
    link: Option<String>,
    hv_path: Option<String>,
    gdb_path: Option<String>,
    cwd: Option<String>,
    #[serde(default)]
    stop_on_entry: bool,
}

/// What a `variablesReference` stands for.
#[derive(Debug, Clone)]
enum VarRef {
    Locals { thread: i64, level: i64 },
    Registers { thread: i64, level: i64 },
    Globals { thread: i64, level: i64 },
    Device { thread: i64 },
    Object { name: String, eval: String },
}

/// Input of the session loop.
#[derive(Debug)]
pub(crate) enum Input {
    Request(Value),
    Gdb(GdbEvent),
    Line(RunLine),
    Link(LinkEvent),
    ClientGone,
}

/// From the control connection's notification thread.
#[derive(Debug)]
pub(crate) enum LinkEvent {
    StateChanged(String, PartitionState, Option<String>),
    Closed,
}

/// A guest client blocked on a device model, from `partitions.list`.
#[derive(Debug, Clone)]
struct Blocked {
    partition: String,
    vcpu: u32,
    device: String,
}

/// A breakpoint kind, for the `stopped` reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BpKind {
    Source,
    Function,
    Instruction,
    Data,
}

/// One of the breakpoint sets DAP replaces as a whole.
#[derive(Debug)]
enum BpSet {
    /// The source breakpoints of one file.
    Source(String),
    Function,
    Instruction,
}

/// A set request's breakpoints, each with its gdb location (or why it has none).
fn requested(
    args: &Value,
    location: impl Fn(&Value) -> std::result::Result<String, String>,
) -> Vec<(Value, std::result::Result<String, String>)> {
    args["breakpoints"]
        .as_array()
        .map(|bps| bps.iter().map(|bp| (bp.clone(), location(bp))).collect())
        .unwrap_or_default()
}

#[derive(Debug, Clone)]
struct BpInfo {
    kind: BpKind,
    log_message: Option<String>,
}

/// The debug session's state.
pub(crate) struct Session {
    out: Outbox,
    opts: DapOptions,
    gdb_tx: mpsc::UnboundedSender<GdbEvent>,
    line_tx: mpsc::UnboundedSender<RunLine>,
    link_tx: mpsc::UnboundedSender<LinkEvent>,
    gdb_rx: mpsc::UnboundedReceiver<GdbEvent>,
    gdb: Option<Arc<Gdb>>,
    link: Option<Arc<LinkClient>>,
    launch_path: Option<PathBuf>,
    internal_results: Option<MiValue>,
    launched: Option<Launched>,
    gdb_port: Option<GdbPort>,
    partition: String,
    vcpu: Option<u32>,
    vcpu_count: u32,
    stop_on_entry: bool,
    running: bool,
    terminated: bool,
    /// Set while the adapter itself interrupted gdb (to change breakpoints): that stop is not
    /// reported.
    internal_stop: bool,
    pub(crate) done: bool,
    /// configurationDone came: stops before it (gdb's initial stop on connect) are not
    /// reported.
    configured: bool,
    refs: HashMap<i64, VarRef>,
    frames: HashMap<i64, (i64, i64)>,
    next_id: i64,
    varobjs: Vec<String>,
    stale_varobjs: Vec<String>,
    register_names: Vec<String>,
    globals: Option<Vec<String>>,
    source_bps: HashMap<String, Vec<u64>>,
    function_bps: Vec<u64>,
    instruction_bps: Vec<u64>,
    data_bps: Vec<u64>,
    bps: HashMap<u64, BpInfo>,
    blocked: Vec<Blocked>,
    /// gdb's console text not yet ended by a newline.
    gdb_text: String,
    /// An interrupt the adapter sent may still stop the guest after the next resume.
    stale_interrupt: bool,
    /// `partitions.list` asked for when a step started.
    prefetch: Option<tokio::task::JoinHandle<Result<Vec<PartitionInfo>, hv_link::ClientError>>>,
    /// The last resuming command (repeated after a refused watchpoint is dropped).
    last_resume: String,
    last_thread: i64,
    threads: Vec<Value>,
}

/// The register order of the Registers scope: these first, then the rest as gdb lists them.
const FIRST_REGISTERS: &[&str] = &[
    "rip", "eflags", "rsp", "rbp", "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10",
    "r11", "r12", "r13", "r14", "r15", "cr0", "cr2", "cr3", "cr4", "cr8", "efer", "fs_base",
    "gs_base", "cs", "ss", "ds", "es", "fs", "gs",
];

/// gdb's name `eflags` is the 64-bit RFLAGS on x86_64; the scope shows it as `rflags`.
fn display_register(name: &str) -> &str {
    if name == "eflags" { "rflags" } else { name }
}

fn gdb_register(name: &str) -> &str {
    if name == "rflags" { "eflags" } else { name }
}

fn parse_u64(text: &str) -> Option<u64> {
    let t = text.trim();
    if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16).ok()
    } else {
        t.parse().ok()
    }
}

fn int_arg(args: &Value, name: &str) -> Option<i64> {
    args.get(name).and_then(Value::as_i64)
}

fn str_field<'a>(v: &'a MiValue, name: &str) -> &'a str {
    v.str(name).unwrap_or("")
}

fn num_field(v: &MiValue, name: &str) -> i64 {
    v.str(name).and_then(|s| s.parse().ok()).unwrap_or(0)
}

impl Session {
    pub(crate) fn new(
        out: Outbox,
        opts: DapOptions,
        line_tx: mpsc::UnboundedSender<RunLine>,
        link_tx: mpsc::UnboundedSender<LinkEvent>,
    ) -> Session {
        let (gdb_tx, gdb_rx) = mpsc::unbounded_channel();
        Session {
            out,
            opts,
            gdb_tx,
            line_tx,
            link_tx,
            gdb_rx,
            gdb: None,
            link: None,
            launch_path: None,
            internal_results: None,
            launched: None,
            gdb_port: None,
            partition: String::new(),
            vcpu: None,
            vcpu_count: 0,
            stop_on_entry: false,
            running: false,
            terminated: false,
            internal_stop: false,
            done: false,
            configured: false,
            refs: HashMap::new(),
            frames: HashMap::new(),
            next_id: 1,
            varobjs: Vec::new(),
            stale_varobjs: Vec::new(),
            register_names: Vec::new(),
            globals: None,
            source_bps: HashMap::new(),
            function_bps: Vec::new(),
            instruction_bps: Vec::new(),
            data_bps: Vec::new(),
            bps: HashMap::new(),
            blocked: Vec::new(),
            gdb_text: String::new(),
            last_resume: "-exec-continue".into(),
            stale_interrupt: false,
            prefetch: None,
            last_thread: 1,
            threads: Vec::new(),
        }
    }

    fn gdb(&self) -> Result<Arc<Gdb>> {
        self.gdb.clone().ok_or(SessionError::NotStarted)
    }

    fn stopped(&self) -> Result<Arc<Gdb>> {
        let gdb = self.gdb()?;
        if self.running {
            return Err(SessionError::Running);
        }
        Ok(gdb)
    }

    fn new_ref(&mut self, r: VarRef) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        self.refs.insert(id, r);
        id
    }

    /// Forget what belonged to the last stop (frame ids, variable references, var objects).
    fn forget_stop(&mut self) {
        self.refs.clear();
        self.frames.clear();
        self.stale_varobjs.append(&mut self.varobjs);
    }

    /// Handles one request; errors become error responses.
    pub(crate) async fn handle(&mut self, request: Value) {
        let command = request["command"].as_str().unwrap_or("").to_owned();
        let args = request.get("arguments").cloned().unwrap_or(Value::Null);
        let result = self.dispatch(&command, &args, &request).await;
        match result {
            Ok(Some(body)) => self.out.ok(&request, body),
            Ok(None) => {}
            Err(e) => self.out.error(&request, &e.to_string()),
        }
    }

    async fn dispatch(
        &mut self,
        command: &str,
        args: &Value,
        request: &Value,
    ) -> Result<Option<Value>> {
        let body = match command {
            "initialize" => capabilities(),
            "launch" => {
                if let Err(e) = self.start(args, true).await {
                    self.abort_start().await;
                    return Err(e);
                }
                self.out.ok(request, json!({}));
                self.out.event("initialized", json!({}));
                return Ok(None);
            }
            "attach" => {
                if let Err(e) = self.start(args, false).await {
                    self.abort_start().await;
                    return Err(e);
                }
                self.out.ok(request, json!({}));
                self.out.event("initialized", json!({}));
                return Ok(None);
            }
            "configurationDone" => {
                self.configured = true;
                self.out.ok(request, json!({}));
                if self.stop_on_entry {
                    self.out.event(
                        "stopped",
                        json!({"reason": "entry", "threadId": self.last_thread, "allThreadsStopped": true}),
                    );
                } else {
                    self.resume("-exec-continue").await?;
                }
                return Ok(None);
            }
            "setBreakpoints" => self.set_breakpoints(args).await?,
            "setFunctionBreakpoints" => self.set_function_breakpoints(args).await?,
            "setInstructionBreakpoints" => self.set_instruction_breakpoints(args).await?,
            "dataBreakpointInfo" => self.data_breakpoint_info(args).await?,
            "setDataBreakpoints" => self.set_data_breakpoints(args).await?,
            "setExceptionBreakpoints" => json!({}),
            "threads" => self.threads().await?,
            "stackTrace" => self.stack_trace(args).await?,
            "scopes" => self.scopes(args)?,
            "variables" => self.variables(args).await?,
            "setVariable" => self.set_variable(args).await?,
            "evaluate" => self.evaluate(args).await?,
            "continue" => {
                self.resume("-exec-continue").await?;
                json!({"allThreadsContinued": true})
            }
            "next" | "stepIn" | "stepOut" => {
                // Who waits on a device does not change while this partition steps (a model
                // stopped in its handler keeps its client waiting): ask the link now, in
                // parallel with the step, not after it.
                if let Some(link) = self.link.clone() {
                    self.prefetch = Some(tokio::task::spawn_blocking(move || link.partitions()));
                }
                let thread = int_arg(args, "threadId").unwrap_or(self.last_thread);
                let instruction = args["granularity"] == "instruction";
                let mi = match (command, instruction) {
                    ("next", false) => "-exec-next",
                    ("next", true) => "-exec-next-instruction",
                    ("stepIn", false) => "-exec-step",
                    ("stepIn", true) => "-exec-step-instruction",
                    _ => "-exec-finish",
                };
                self.resume(&format!("{mi} --thread {thread}")).await?;
                json!({})
            }
            "pause" => {
                let gdb = self.gdb()?;
                self.stale_interrupt = false;
                if self.running {
                    gdb.cmd("-exec-interrupt").await?;
                }
                json!({})
            }
            "disassemble" => self.disassemble(args).await?,
            "readMemory" => self.read_memory(args).await?,
            "writeMemory" => self.write_memory(args).await?,
            "restart" => self.restart().await?,
            "terminate" => {
                self.out.ok(request, json!({}));
                self.finish().await;
                return Ok(None);
            }
            "disconnect" => {
                // A launched system always ends with its session (its output is piped to
                // this adapter); use attach to leave a system running.
                self.finish().await;
                self.out.ok(request, json!({}));
                self.done = true;
                return Ok(None);
            }
            other => {
                return Err(SessionError::Args(format!(
                    "hv dap does not support the request `{other}`"
                )));
            }
        };
        Ok(Some(body))
    }

    /// `launch` / `attach`: validate, reach the system, start gdb and connect it to the guest.
    async fn start(&mut self, args: &Value, launch: bool) -> Result<()> {
        if self.gdb.is_some() {
            return Err(SessionError::Args(
                "this session is already debugging".into(),
            ));
        }
        let a: StartArgs = serde_json::from_value(args.clone())
            .map_err(|e| SessionError::Args(format!("bad launch/attach arguments: {e}")))?;
        let cwd = a.cwd.as_ref().map(PathBuf::from);
        let hv = a
            .hv_path
            .as_ref()
            .map(PathBuf::from)
            .unwrap_or_else(|| self.opts.hv_path.clone());
        let gdb_path = a
            .gdb_path
            .clone()
            .unwrap_or_else(|| self.opts.gdb_path.clone());
        let partition_arg = a.partition.clone();

        // Check what can be checked before anything starts.
        let mut config_partitions: Option<Vec<(String, u32)>> = None;
        if launch {
            let Some(system) = &a.system else {
                return Err(SessionError::Args(
                    "launch needs `system`: the path of a system description (TOML)".into(),
                ));
            };
            let mut path = PathBuf::from(system);
            if path.is_relative()
                && let Some(cwd) = &cwd
            {
                path = cwd.join(path);
            }
            if !path.is_file() {
                return Err(TargetError::NoDescription(path).into());
            }
            let config = match hv_config::SystemConfig::load(&path) {
                Ok(c) => c,
                Err(hv_config::ConfigError::Invalid(d)) => {
                    return Err(SessionError::Args(format!(
                        "{} is not a valid system description ({}):\n{}",
                        path.display(),
                        d.summary(),
                        d.render()
                    )));
                }
                Err(e) => {
                    return Err(SessionError::Args(format!(
                        "cannot load {}: {e}",
                        path.display()
                    )));
                }
            };
            let parts: Vec<(String, u32)> = config
                .partitions
                .iter()
                .map(|p| (p.name.clone(), p.vcpus))
                .collect();
            check_target(&parts, partition_arg.as_deref(), a.vcpu)?;
            config_partitions = Some(parts);
            self.launch_path = Some(path);
        }
        let mut timing: Vec<(&str, Instant)> = vec![("", Instant::now())];
        let gdb = Arc::new(Gdb::spawn(Path::new(&gdb_path), self.gdb_tx.clone())?);
        timing.push(("gdb_start", Instant::now()));
        self.gdb = Some(gdb.clone());

        // Reach the system.
        let addr: LinkAddr = if launch {
            let system = self.launch_path.clone().unwrap_or_default();
            let link = a.link.clone();
            let lines = self.line_tx.clone();
            self.out.output(
                "console",
                &format!(
                    "hv dap: starting {} run {}\n",
                    hv.display(),
                    system.display()
                ),
            );
            let launched = blocking(move || {
                Launched::start(
                    &hv,
                    &system,
                    link.as_deref(),
                    Duration::from_secs(120),
                    lines,
                )
            })
            .await?;
            let addr = launched.addr.clone();
            self.launched = Some(launched);
            addr
        } else {
            let link = a.link.clone();
            blocking(move || target::resolve_link(link.as_deref())).await?
        };
        timing.push((
            if launch { "system_up" } else { "find_link" },
            Instant::now(),
        ));
        let a2 = addr.clone();
        let client = Arc::new(blocking(move || target::connect(&a2)).await?);
        let c = client.clone();
        let partitions = blocking(move || target::partitions(&c)).await?;
        let parts: Vec<(String, u32)> = partitions
            .iter()
            .map(|p| (p.name.clone(), p.vcpus.len() as u32))
            .collect();
        if config_partitions.is_none() {
            check_target(&parts, partition_arg.as_deref(), a.vcpu)?;
        }
        let name = partition_arg.unwrap_or_default();
        let Some(info) = partitions.iter().find(|p| p.name == name) else {
            return Err(SessionError::Args(format!(
                "the running system has no partition `{name}`; partitions: {}",
                names(&parts)
            )));
        };
        self.partition = name.clone();
        self.vcpu = a.vcpu;
        self.vcpu_count = info.vcpus.len() as u32;
        self.stop_on_entry = a.stop_on_entry;
        let image = info.image.clone();
        self.subscribe(client.clone());
        self.link = Some(client.clone());
        if !launch {
            let c = client.clone();
            let p = name.clone();
            let lines = self.line_tx.clone();
            if let Err(e) = blocking(move || target::forward_console(&c, &p, lines)).await {
                self.out
                    .output("console", &format!("hv dap: no console lines: {e}\n"));
            }
        }

        // gdb on a private port that carries its bytes to the guest's gdb channel.
        let channel = match a.vcpu {
            Some(j) => ChannelName::gdb_vcpu(name.clone(), j),
            None => ChannelName::gdb(name.clone()),
        };
        let a3 = addr.clone();
        let port = blocking(move || GdbPort::open(&a3, &channel)).await?;
        let port_no = port.port;
        self.gdb_port = Some(port);
        timing.push(("host_link_and_channel", Instant::now()));
        for setting in [
            "-gdb-set mi-async on",
            "-gdb-set pagination off",
            "-gdb-set confirm off",
            "-gdb-set breakpoint pending off",
            "-gdb-set remotetimeout 30",
            "-gdb-set print object off",
        ] {
            gdb.cmd(setting).await?;
        }
        gdb.cmd(&format!("-file-exec-and-symbols {}", mi::quote(&image)))
            .await?;
        gdb.cmd(&format!("-target-select remote 127.0.0.1:{port_no}"))
            .await?;
        self.running = false;
        let names = gdb.cmd("-data-list-register-names").await?;
        self.register_names = names
            .results
            .get("register-names")
            .map(|l| {
                l.items()
                    .iter()
                    .filter_map(|v| v.as_str())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        self.refresh_threads().await;
        timing.push(("gdb_attach", Instant::now()));
        let parts: Vec<String> = timing
            .windows(2)
            .map(|w| format!("{} {} ms", w[1].0, (w[1].1 - w[0].1).as_millis()))
            .collect();
        self.out
            .output("console", &format!("hv dap: timing {}\n", parts.join(", ")));
        let target = match a.vcpu {
            Some(j) => format!("{name} vCPU {j}"),
            None => format!("{name} ({} vCPUs)", self.vcpu_count),
        };
        self.out.output(
            "console",
            &format!("hv dap: debugging {target} on {addr} ({image})\n"),
        );
        Ok(())
    }

    /// Forwards the control connection's notifications to the session loop.
    fn subscribe(&self, client: Arc<LinkClient>) {
        let tx = self.link_tx.clone();
        let notifications = client.notifications().clone();
        let c = client.clone();
        std::thread::spawn(move || {
            if c.subscribe_events().is_ok() {
                while let Ok(n) = notifications.recv() {
                    if let Some(Ok(p)) =
                        hv_link::client::parse_event::<hv_link::control::PartitionStateChanged>(&n)
                        && tx
                            .send(LinkEvent::StateChanged(p.partition, p.state, p.detail))
                            .is_err()
                    {
                        return;
                    }
                }
            } else {
                while notifications.recv().is_ok() {}
            }
            let _ = tx.send(LinkEvent::Closed);
        });
    }

    async fn refresh_threads(&mut self) {
        let Ok(gdb) = self.gdb() else { return };
        let Ok(out) = gdb.cmd("-thread-info").await else {
            return;
        };
        let mut threads = Vec::new();
        for t in out
            .results
            .get("threads")
            .map(|l| l.items())
            .unwrap_or_default()
        {
            let id = num_field(t, "id");
            let vcpu = match self.vcpu {
                Some(j) => j as i64,
                None => id - 1,
            };
            threads.push(json!({"id": id, "name": format!("{} vCPU {vcpu}", self.partition)}));
        }
        if let Some(cur) = out
            .results
            .str("current-thread-id")
            .and_then(|s| s.parse().ok())
        {
            self.last_thread = cur;
        } else if let Some(first) = threads.first() {
            self.last_thread = first["id"].as_i64().unwrap_or(1);
        }
        if !threads.is_empty() {
            self.threads = threads;
        }
    }

    async fn threads(&mut self) -> Result<Value> {
        if !self.running && self.gdb.is_some() {
            self.refresh_threads().await;
        }
        Ok(json!({"threads": self.threads}))
    }

    /// Sends a resuming command; on a refused watchpoint, drops the data breakpoints, says why
    /// and resumes without them.
    async fn resume(&mut self, command: &str) -> Result<()> {
        let gdb = self.stopped()?;
        self.forget_stop();
        self.last_resume = command.to_owned();
        match gdb.cmd(command).await {
            Ok(_) => {
                self.running = true;
                Ok(())
            }
            Err(GdbError::Command(msg)) if self.resume_failed(&msg).await => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// A resume that gdb could not do (refused with the command, or given up after its
    /// `^running`). A refused watchpoint is dropped, marked unverified with the reason, and the
    /// resume repeated without it; returns whether that happened.
    async fn resume_failed(&mut self, msg: &str) -> bool {
        self.running = false;
        let Ok(gdb) = self.gdb() else { return false };
        if !msg.contains("watchpoint") || self.data_bps.is_empty() {
            return false;
        }
        let dropped = std::mem::take(&mut self.data_bps);
        let list: Vec<String> = dropped.iter().map(u64::to_string).collect();
        let _ = gdb.cmd(&format!("-break-delete {}", list.join(" "))).await;
        let first = msg
            .lines()
            .find(|l| l.contains("watchpoint"))
            .unwrap_or("")
            .trim();
        let message = format!(
            "this host cannot set the data breakpoint ({first}): x86 has four debug registers per vCPU shared with hardware breakpoints, a watchpoint covers 1, 2, 4 or 8 aligned bytes, and some KVMs never raise data breakpoints (`hv doctor` tells)"
        );
        for n in dropped {
            self.bps.remove(&n);
            self.out.event(
                "breakpoint",
                json!({"reason": "changed", "breakpoint": {"id": n, "verified": false, "message": message}}),
            );
        }
        self.out
            .output("important", &format!("hv dap: {message}\n"));
        let command = self.last_resume.clone();
        match gdb.cmd(&command).await {
            Ok(_) => {
                self.running = true;
                true
            }
            Err(_) => false,
        }
    }

    /// Before a breakpoint change: a running target is interrupted (gdb cannot change a
    /// running remote target in all-stop mode); returns whether it was.
    async fn pause_for_change(&mut self) -> Result<bool> {
        let gdb = self.gdb()?;
        if !self.running {
            return Ok(false);
        }
        self.internal_stop = true;
        self.internal_results = None;
        if let Err(e) = gdb.cmd("-exec-interrupt").await {
            self.internal_stop = false;
            return Err(e.into());
        }
        while self.running {
            let event = tokio::time::timeout(Duration::from_secs(120), self.gdb_rx.recv()).await;
            match event {
                Ok(Some(ev)) => Box::pin(self.on_gdb_event(ev)).await,
                _ => break,
            }
        }
        self.internal_stop = false;
        // A real stop (a breakpoint) that came before the interrupt leaves the interrupt
        // pending: its stop, after the next resume, is not the user's pause.
        self.stale_interrupt = self
            .internal_results
            .as_ref()
            .is_some_and(|r| !is_interrupt(r));
        Ok(!self.running)
    }

    /// After a breakpoint change: resume what [`pause_for_change`](Self::pause_for_change)
    /// interrupted, or report the real stop (a breakpoint) that came first.
    async fn resume_after_change(&mut self, paused: bool) {
        if !paused {
            return;
        }
        let results = self.internal_results.take();
        // A stop on a breakpoint that this change deleted is not reported.
        let real = results.as_ref().is_some_and(|r| {
            !is_interrupt(r)
                && (r.str("reason") != Some("breakpoint-hit")
                    || r.str("bkptno")
                        .and_then(|b| b.parse::<u64>().ok())
                        .is_some_and(|n| self.bps.contains_key(&n)))
        });
        match results {
            Some(r) if real => self.on_stopped(r).await,
            _ => {
                if let Err(e) = self.resume("-exec-continue").await {
                    self.out
                        .output("important", &format!("hv dap: cannot resume: {e}\n"));
                }
            }
        }
    }

    /// The next gdb event, for the session loop.
    pub(crate) async fn next_gdb_event(&mut self) -> Option<GdbEvent> {
        self.gdb_rx.recv().await
    }

    async fn set_breakpoints(&mut self, args: &Value) -> Result<Value> {
        self.gdb()?;
        let path = args["source"]["path"].as_str().unwrap_or("").to_owned();
        if path.is_empty() {
            return Err(SessionError::Args(
                "setBreakpoints needs source.path".into(),
            ));
        }
        let wanted = requested(args, |bp| {
            Ok(mi::quote(&format!(
                "{path}:{}",
                bp["line"].as_i64().unwrap_or(0)
            )))
        });
        self.replace_bps(BpSet::Source(path), wanted, BpKind::Source)
            .await
    }

    async fn set_function_breakpoints(&mut self, args: &Value) -> Result<Value> {
        let wanted = requested(args, |bp| Ok(mi::quote(bp["name"].as_str().unwrap_or(""))));
        self.replace_bps(BpSet::Function, wanted, BpKind::Function)
            .await
    }

    async fn set_instruction_breakpoints(&mut self, args: &Value) -> Result<Value> {
        let wanted = requested(args, |bp| {
            let reference = bp["instructionReference"].as_str().unwrap_or("");
            let addr = parse_u64(reference).ok_or(format!("not an address: {reference}"))?;
            let addr = addr.wrapping_add_signed(bp["offset"].as_i64().unwrap_or(0));
            Ok(format!("*{addr:#x}"))
        });
        self.replace_bps(BpSet::Instruction, wanted, BpKind::Instruction)
            .await
    }

    /// Replaces one set of breakpoints with `wanted` (each DAP breakpoint with its gdb location,
    /// or why it has none: answered unverified), pausing a running target around the change.
    async fn replace_bps(
        &mut self,
        set: BpSet,
        wanted: Vec<(Value, std::result::Result<String, String>)>,
        kind: BpKind,
    ) -> Result<Value> {
        let gdb = self.gdb()?;
        let paused = self.pause_for_change().await?;
        let old = match &set {
            BpSet::Source(path) => self.source_bps.remove(path).unwrap_or_default(),
            BpSet::Function => std::mem::take(&mut self.function_bps),
            BpSet::Instruction => std::mem::take(&mut self.instruction_bps),
        };
        self.delete_bps(&gdb, &old).await;
        let mut numbers = Vec::new();
        let mut out = Vec::new();
        for (bp, location) in wanted {
            let r = match location {
                Ok(location) => self.insert_bp(&gdb, &bp, &location, kind).await,
                Err(message) => json!({"verified": false, "message": message}),
            };
            if let Some(n) = r["id"].as_u64() {
                numbers.push(n);
            }
            out.push(r);
        }
        match set {
            BpSet::Source(path) => {
                self.source_bps.insert(path, numbers);
            }
            BpSet::Function => self.function_bps = numbers,
            BpSet::Instruction => self.instruction_bps = numbers,
        }
        self.resume_after_change(paused).await;
        Ok(json!({"breakpoints": out}))
    }

    async fn delete_bps(&mut self, gdb: &Gdb, numbers: &[u64]) {
        if numbers.is_empty() {
            return;
        }
        for n in numbers {
            self.bps.remove(n);
        }
        let list: Vec<String> = numbers.iter().map(u64::to_string).collect();
        if let Err(e) = gdb.cmd(&format!("-break-delete {}", list.join(" "))).await {
            tracing::debug!("hv dap: -break-delete: {e}");
        }
    }

    /// `-break-insert` with the DAP breakpoint's condition, hit count and log message; returns
    /// the DAP `Breakpoint`.
    async fn insert_bp(&mut self, gdb: &Gdb, bp: &Value, location: &str, kind: BpKind) -> Value {
        let mut command = String::from("-break-insert");
        if let Some(c) = bp["condition"].as_str().filter(|c| !c.trim().is_empty()) {
            command.push_str(&format!(" -c {}", mi::quote(c)));
        }
        if let Some(h) = bp["hitCondition"].as_str().filter(|h| !h.trim().is_empty()) {
            let count = h.trim().trim_start_matches(">=").trim();
            match count.parse::<u64>() {
                Ok(n) if n >= 1 => command.push_str(&format!(" -i {}", n - 1)),
                _ => {
                    return json!({"verified": false, "message": format!("hitCondition {h:?}: give a number N (stop from the N-th hit on)")});
                }
            }
        }
        command.push(' ');
        command.push_str(location);
        match gdb.cmd(&command).await {
            Ok(out) => {
                let Some(b) = out.results.get("bkpt") else {
                    return json!({"verified": false, "message": "gdb gave no breakpoint"});
                };
                let number = num_field(b, "number") as u64;
                let log_message = bp["logMessage"].as_str().map(str::to_owned);
                self.bps.insert(number, BpInfo { kind, log_message });
                let mut r = json!({"id": number, "verified": true});
                if let Some(line) = b.str("line").and_then(|l| l.parse::<i64>().ok()) {
                    r["line"] = json!(line);
                }
                if let Some(path) = b.str("fullname") {
                    r["source"] = json!({"path": path, "name": file_name(path)});
                }
                if let Some(addr) = b.str("addr") {
                    r["instructionReference"] = json!(addr);
                }
                r
            }
            Err(e) => json!({"verified": false, "message": e.to_string()}),
        }
    }

    async fn data_breakpoint_info(&mut self, args: &Value) -> Result<Value> {
        let name = args["name"].as_str().unwrap_or("").to_owned();
        let expression = match int_arg(args, "variablesReference")
            .filter(|r| *r > 0)
            .and_then(|r| self.refs.get(&r).cloned())
        {
            Some(VarRef::Object { eval, .. }) => {
                // A field of an expanded object: the parent's expression plus the field.
                if eval.ends_with('*') || eval.is_empty() {
                    name.clone()
                } else {
                    format!("({eval}).{name}")
                }
            }
            Some(VarRef::Registers { .. }) => {
                return Ok(
                    json!({"dataId": null, "description": "a register cannot be watched: data breakpoints watch memory"}),
                );
            }
            _ => name.clone(),
        };
        let gdb = self.stopped()?;
        match gdb
            .cmd(&format!(
                "-data-evaluate-expression {}",
                mi::quote(&format!("sizeof({expression})"))
            ))
            .await
        {
            Ok(out) => {
                let size = out.results.str("value").and_then(parse_u64).unwrap_or(0);
                if ![1, 2, 4, 8].contains(&size) {
                    return Ok(
                        json!({"dataId": null, "description": format!("{expression} is {size} bytes: an x86 watchpoint covers 1, 2, 4 or 8 bytes; watch one field")}),
                    );
                }
                Ok(json!({
                    "dataId": expression,
                    "description": format!("{expression} ({size} bytes; no read-only watchpoints on x86: read becomes read/write)"),
                    "accessTypes": ["write", "readWrite"],
                    "canPersist": true,
                }))
            }
            Err(e) => Ok(
                json!({"dataId": null, "description": format!("cannot watch {expression}: {e}")}),
            ),
        }
    }

    async fn set_data_breakpoints(&mut self, args: &Value) -> Result<Value> {
        let gdb = self.gdb()?;
        let old = std::mem::take(&mut self.data_bps);
        let list = args["breakpoints"].as_array().cloned().unwrap_or_default();
        let paused = if old.is_empty() && list.is_empty() {
            false
        } else {
            self.pause_for_change().await?
        };
        self.delete_bps(&gdb, &old).await;
        let mut out = Vec::new();
        for bp in list {
            let expr = bp["dataId"].as_str().unwrap_or("").to_owned();
            let flag = match bp["accessType"].as_str() {
                Some("read") | Some("readWrite") => "-a ",
                _ => "",
            };
            let command = format!("-break-watch {flag}{}", mi::quote(&expr));
            match gdb.cmd(&command).await {
                Ok(r) => {
                    let wpt = r
                        .results
                        .get("wpt")
                        .or_else(|| r.results.get("hw-awpt"))
                        .or_else(|| r.results.get("hw-rwpt"));
                    let number = wpt.map(|w| num_field(w, "number")).unwrap_or(0) as u64;
                    self.data_bps.push(number);
                    self.bps.insert(
                        number,
                        BpInfo {
                            kind: BpKind::Data,
                            log_message: None,
                        },
                    );
                    out.push(json!({"id": number, "verified": true, "message": format!("hardware watchpoint on {expr}")}));
                }
                Err(e) => out.push(json!({"verified": false, "message": e.to_string()})),
            }
        }
        self.resume_after_change(paused).await;
        Ok(json!({"breakpoints": out}))
    }

    async fn stack_trace(&mut self, args: &Value) -> Result<Value> {
        let gdb = self.stopped()?;
        let thread = int_arg(args, "threadId").unwrap_or(self.last_thread);
        let start = int_arg(args, "startFrame").unwrap_or(0).max(0);
        let levels = int_arg(args, "levels").unwrap_or(0);
        let mut command = format!("-stack-list-frames --thread {thread}");
        if levels > 0 {
            command.push_str(&format!(" {start} {}", start + levels - 1));
        }
        let out = gdb.cmd(&command).await?;
        let mut frames = Vec::new();
        for f in out
            .results
            .get("stack")
            .map(|s| s.items())
            .unwrap_or_default()
        {
            let level = num_field(f, "level");
            if level < start {
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            self.frames.insert(id, (thread, level));
            let addr = str_field(f, "addr");
            let func = f.str("func").unwrap_or("??");
            let mut frame = json!({
                "id": id,
                "name": func,
                "line": 0,
                "column": 0,
                "instructionPointerReference": addr,
            });
            if let Some(path) = f.str("fullname") {
                frame["source"] = json!({"name": file_name(path), "path": path});
                frame["line"] = json!(num_field(f, "line"));
                frame["column"] = json!(1);
            } else {
                frame["name"] = json!(format!("{func} ({addr})"));
                frame["presentationHint"] = json!("subtle");
            }
            frames.push(frame);
        }
        let total = frames.len() as i64 + start;
        Ok(json!({"stackFrames": frames, "totalFrames": total}))
    }

    fn frame_of(&self, args: &Value) -> (i64, i64) {
        int_arg(args, "frameId")
            .and_then(|id| self.frames.get(&id).copied())
            .unwrap_or((self.last_thread, 0))
    }

    fn scopes(&mut self, args: &Value) -> Result<Value> {
        let (thread, level) = self.frame_of(args);
        let locals = self.new_ref(VarRef::Locals { thread, level });
        let registers = self.new_ref(VarRef::Registers { thread, level });
        let globals = self.new_ref(VarRef::Globals { thread, level });
        let mut scopes = vec![
            json!({"name": "Locals", "presentationHint": "locals", "variablesReference": locals, "expensive": false}),
            json!({"name": "Globals", "variablesReference": globals, "expensive": true}),
            json!({"name": "Registers", "presentationHint": "registers", "variablesReference": registers, "expensive": false}),
        ];
        if !self.blocked.is_empty() {
            let device = self.new_ref(VarRef::Device { thread });
            scopes.insert(
                0,
                json!({"name": "Device request", "variablesReference": device, "expensive": false}),
            );
        }
        Ok(json!({"scopes": scopes}))
    }

    /// A var object for `expression` in `(thread, level)`, as a DAP variable.
    async fn var_create(
        &mut self,
        gdb: &Gdb,
        thread: i64,
        level: i64,
        name: &str,
        expression: &str,
    ) -> Result<Value, GdbError> {
        let out = gdb
            .cmd(&format!(
                "-var-create --thread {thread} --frame {level} - * {}",
                mi::quote(expression)
            ))
            .await?;
        let r = &out.results;
        let var = str_field(r, "name").to_owned();
        self.varobjs.push(var.clone());
        Ok(self.variable(name, &var, expression, r))
    }

    fn variable(&mut self, name: &str, var: &str, eval: &str, r: &MiValue) -> Value {
        let numchild = num_field(r, "numchild");
        let dynamic = r.str("dynamic") == Some("1") && r.str("has_more") == Some("1");
        let reference = if numchild > 0 || dynamic {
            self.new_ref(VarRef::Object {
                name: var.to_owned(),
                eval: eval.to_owned(),
            })
        } else {
            0
        };
        let mut v = json!({
            "name": name,
            "value": r.str("value").unwrap_or(""),
            "type": r.str("type").unwrap_or(""),
            "variablesReference": reference,
            "evaluateName": eval,
        });
        if let Some(addr) = r
            .str("value")
            .and_then(|v| v.split_whitespace().next())
            .filter(|v| v.starts_with("0x"))
        {
            v["memoryReference"] = json!(addr);
        }
        v
    }

    async fn drop_stale_varobjs(&mut self, gdb: &Gdb) {
        for v in std::mem::take(&mut self.stale_varobjs) {
            let _ = gdb.cmd(&format!("-var-delete {v}")).await;
        }
    }

    async fn variables(&mut self, args: &Value) -> Result<Value> {
        let gdb = self.stopped()?;
        self.drop_stale_varobjs(&gdb).await;
        let reference = int_arg(args, "variablesReference").unwrap_or(0);
        let Some(r) = self.refs.get(&reference).cloned() else {
            return Ok(json!({"variables": []}));
        };
        let mut vars = Vec::new();
        match r {
            VarRef::Locals { thread, level } => {
                let out = gdb
                    .cmd(&format!(
                        "-stack-list-variables --thread {thread} --frame {level} --no-values"
                    ))
                    .await?;
                for v in out
                    .results
                    .get("variables")
                    .map(|l| l.items())
                    .unwrap_or_default()
                {
                    let name = str_field(v, "name").to_owned();
                    match self.var_create(&gdb, thread, level, &name, &name).await {
                        Ok(var) => vars.push(var),
                        Err(e) => vars.push(json!({"name": name, "value": format!("<{e}>"), "variablesReference": 0})),
                    }
                }
            }
            VarRef::Globals { thread, level } => {
                let names = self.global_names(&gdb).await;
                for name in names {
                    if let Ok(var) = self.var_create(&gdb, thread, level, &name, &name).await {
                        vars.push(var);
                    }
                }
            }
            VarRef::Registers { thread, level } => {
                let out = gdb
                    .cmd(&format!(
                        "-data-list-register-values --thread {thread} --frame {level} --skip-unavailable x"
                    ))
                    .await?;
                let mut values: HashMap<String, String> = HashMap::new();
                for v in out
                    .results
                    .get("register-values")
                    .map(|l| l.items())
                    .unwrap_or_default()
                {
                    let n = num_field(v, "number") as usize;
                    if let Some(name) = self.register_names.get(n).filter(|n| !n.is_empty()) {
                        values.insert(name.clone(), str_field(v, "value").to_owned());
                    }
                }
                let mut order: Vec<&str> = FIRST_REGISTERS
                    .iter()
                    .copied()
                    .filter(|n| values.contains_key(*n))
                    .collect();
                for n in &self.register_names {
                    if values.contains_key(n) && !FIRST_REGISTERS.contains(&n.as_str()) {
                        order.push(n);
                    }
                }
                for n in order {
                    vars.push(json!({
                        "name": display_register(n),
                        "value": values[n],
                        "variablesReference": 0,
                        "evaluateName": format!("${n}"),
                    }));
                }
            }
            VarRef::Device { thread } => {
                for b in self.blocked.clone() {
                    vars.push(json!({"name": "client", "value": format!("{} vCPU {}", b.partition, b.vcpu), "variablesReference": 0}));
                    vars.push(
                        json!({"name": "device", "value": b.device, "variablesReference": 0}),
                    );
                }
                // The request the handler serves: `req` in the first frame that has one.
                for level in 0..8 {
                    let probe = gdb
                        .cmd(&format!(
                            "-data-evaluate-expression --thread {thread} --frame {level} {}",
                            mi::quote("req->offset")
                        ))
                        .await;
                    if probe.is_err() {
                        continue;
                    }
                    let mut fields = Vec::new();
                    for f in ["is_write", "size", "offset", "value", "client_vcpu", "id"] {
                        let v = gdb
                            .cmd(&format!(
                                "-data-evaluate-expression --thread {thread} --frame {level} {}",
                                mi::quote(&format!("req->{f}"))
                            ))
                            .await
                            .ok()
                            .and_then(|o| o.results.str("value").map(str::to_owned))
                            .unwrap_or_default();
                        fields.push(v);
                    }
                    let write = fields[0] != "0";
                    let offset = parse_u64(&fields[2]).unwrap_or(0);
                    let value = parse_u64(&fields[3]).unwrap_or(0);
                    let access = if write {
                        format!(
                            "write of {} bytes at offset {offset:#x}, value {value:#x}",
                            fields[1]
                        )
                    } else {
                        format!("read of {} bytes at offset {offset:#x}", fields[1])
                    };
                    vars.push(json!({"name": "access", "value": access, "variablesReference": 0}));
                    if let Ok(mut v) = self
                        .var_create(&gdb, thread, level, "request", "*req")
                        .await
                    {
                        v["evaluateName"] = json!("*req");
                        vars.push(v);
                    }
                    break;
                }
            }
            VarRef::Object { name, eval } => {
                let out = gdb
                    .cmd(&format!("-var-list-children --all-values {name}"))
                    .await?;
                let pointer =
                    out.results.str("type").unwrap_or("").ends_with('*') || eval.starts_with('*');
                for c in out
                    .results
                    .get("children")
                    .map(|l| l.items())
                    .unwrap_or_default()
                {
                    let child = str_field(c, "name").to_owned();
                    let exp = str_field(c, "exp").to_owned();
                    let child_eval = if exp.starts_with('*') || exp.parse::<i64>().is_ok() {
                        if exp.parse::<i64>().is_ok() {
                            format!("({eval})[{exp}]")
                        } else {
                            exp.clone()
                        }
                    } else if pointer || self.is_pointer(&gdb, &name).await {
                        format!("({eval})->{exp}")
                    } else {
                        format!("({eval}).{exp}")
                    };
                    vars.push(self.variable(&exp, &child, &child_eval, c));
                }
            }
        }
        Ok(json!({"variables": vars}))
    }

    async fn is_pointer(&self, gdb: &Gdb, var: &str) -> bool {
        gdb.cmd(&format!("-var-info-type {var}"))
            .await
            .ok()
            .and_then(|o| o.results.str("type").map(|t| t.trim_end().ends_with('*')))
            .unwrap_or(false)
    }

    /// Global variables with debug info (`-symbol-info-variables`), cached.
    async fn global_names(&mut self, gdb: &Gdb) -> Vec<String> {
        if let Some(g) = &self.globals {
            return g.clone();
        }
        let mut names = Vec::new();
        if let Ok(out) = gdb.cmd("-symbol-info-variables").await {
            let debug = out
                .results
                .get("symbols")
                .and_then(|s| s.get("debug"))
                .map(|d| d.items())
                .unwrap_or_default();
            for file in debug {
                for s in file.get("symbols").map(|l| l.items()).unwrap_or_default() {
                    if let Some(n) = s.str("name")
                        && !names.iter().any(|x| x == n)
                    {
                        names.push(n.to_owned());
                    }
                }
            }
        }
        names.sort();
        names.truncate(256);
        self.globals = Some(names.clone());
        names
    }

    async fn set_variable(&mut self, args: &Value) -> Result<Value> {
        let gdb = self.stopped()?;
        let reference = int_arg(args, "variablesReference").unwrap_or(0);
        let name = args["name"].as_str().unwrap_or("");
        let value = args["value"].as_str().unwrap_or("");
        let r = self.refs.get(&reference).cloned();
        let expression = match r {
            Some(VarRef::Registers { thread, level }) => {
                let out = gdb
                    .cmd(&format!(
                        "-data-evaluate-expression --thread {thread} --frame {level} {}",
                        mi::quote(&format!("${}={value}", gdb_register(name)))
                    ))
                    .await?;
                return Ok(json!({"value": out.results.str("value").unwrap_or(value)}));
            }
            Some(VarRef::Object { ref eval, .. }) => {
                format!("({eval}).{name}")
            }
            _ => name.to_owned(),
        };
        let (thread, level) = match r {
            Some(VarRef::Locals { thread, level }) | Some(VarRef::Globals { thread, level }) => {
                (thread, level)
            }
            _ => (self.last_thread, 0),
        };
        // Assign through a fresh var object (works for fields, pointers' targets and globals).
        let target = match self.refs.get(&reference) {
            Some(VarRef::Object { name: parent, .. }) => {
                let parent = parent.clone();
                let children = gdb.cmd(&format!("-var-list-children {parent}")).await?;
                children
                    .results
                    .get("children")
                    .map(|l| l.items())
                    .unwrap_or_default()
                    .into_iter()
                    .find(|c| c.str("exp") == Some(name))
                    .and_then(|c| c.str("name").map(str::to_owned))
            }
            _ => None,
        };
        let var = match target {
            Some(v) => v,
            None => {
                let out = gdb
                    .cmd(&format!(
                        "-var-create --thread {thread} --frame {level} - * {}",
                        mi::quote(&expression)
                    ))
                    .await?;
                let v = str_field(&out.results, "name").to_owned();
                self.varobjs.push(v.clone());
                v
            }
        };
        let out = gdb
            .cmd(&format!("-var-assign {var} {}", mi::quote(value)))
            .await?;
        Ok(json!({"value": out.results.str("value").unwrap_or(value)}))
    }

    async fn evaluate(&mut self, args: &Value) -> Result<Value> {
        let gdb = self.gdb()?;
        let expression = args["expression"].as_str().unwrap_or("").trim().to_owned();
        let context = args["context"].as_str().unwrap_or("repl");
        if context == "repl" {
            if expression.starts_with("monitor ") || expression == "monitor" {
                let text = gdb.console(&expression).await?;
                return Ok(json!({"result": text.trim_end(), "variablesReference": 0}));
            }
            if let Some(cli) = expression.strip_prefix("-exec ") {
                let text = gdb.console(cli).await?;
                return Ok(json!({"result": text.trim_end(), "variablesReference": 0}));
            }
        }
        if self.running {
            return Err(SessionError::Running);
        }
        self.drop_stale_varobjs(&gdb).await;
        let (thread, level) = self.frame_of(args);
        let v = self
            .var_create(&gdb, thread, level, &expression, &expression)
            .await?;
        let mut body = json!({
            "result": v["value"],
            "type": v["type"],
            "variablesReference": v["variablesReference"],
        });
        if let Some(m) = v.get("memoryReference") {
            body["memoryReference"] = m.clone();
        }
        Ok(body)
    }

    async fn read_memory(&mut self, args: &Value) -> Result<Value> {
        let gdb = self.stopped()?;
        let reference = args["memoryReference"].as_str().unwrap_or("");
        let base = parse_u64(reference)
            .ok_or_else(|| SessionError::Args(format!("not an address: {reference}")))?;
        let addr = base.wrapping_add_signed(args["offset"].as_i64().unwrap_or(0));
        let count = args["count"].as_u64().unwrap_or(0).min(1 << 20);
        if count == 0 {
            return Ok(json!({"address": format!("{addr:#x}"), "data": ""}));
        }
        match gdb
            .cmd(&format!("-data-read-memory-bytes {addr:#x} {count}"))
            .await
        {
            Ok(out) => {
                let mut data = Vec::new();
                for block in out
                    .results
                    .get("memory")
                    .map(|l| l.items())
                    .unwrap_or_default()
                {
                    let begin = block.str("begin").and_then(parse_u64).unwrap_or(addr);
                    if begin != addr + data.len() as u64 {
                        break;
                    }
                    data.extend(hex_bytes(block.str("contents").unwrap_or("")));
                }
                let unreadable = count - data.len() as u64;
                Ok(json!({
                    "address": format!("{addr:#x}"),
                    "data": base64::encode(&data),
                    "unreadableBytes": unreadable,
                }))
            }
            Err(_) => Ok(json!({"address": format!("{addr:#x}"), "unreadableBytes": count})),
        }
    }

    async fn write_memory(&mut self, args: &Value) -> Result<Value> {
        let gdb = self.stopped()?;
        let reference = args["memoryReference"].as_str().unwrap_or("");
        let base = parse_u64(reference)
            .ok_or_else(|| SessionError::Args(format!("not an address: {reference}")))?;
        let addr = base.wrapping_add_signed(args["offset"].as_i64().unwrap_or(0));
        let data = base64::decode(args["data"].as_str().unwrap_or(""))
            .map_err(|e| SessionError::Args(e.to_string()))?;
        let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
        if !data.is_empty() {
            gdb.cmd(&format!("-data-write-memory-bytes {addr:#x} {hex}"))
                .await?;
        }
        Ok(json!({"bytesWritten": data.len()}))
    }

    async fn disassemble(&mut self, args: &Value) -> Result<Value> {
        let gdb = self.stopped()?;
        let reference = args["memoryReference"].as_str().unwrap_or("");
        let base = parse_u64(reference)
            .ok_or_else(|| SessionError::Args(format!("not an address: {reference}")))?
            .wrapping_add_signed(args["offset"].as_i64().unwrap_or(0));
        let skip = args["instructionOffset"].as_i64().unwrap_or(0);
        let count = args["instructionCount"]
            .as_i64()
            .unwrap_or(0)
            .clamp(0, 4096);
        // Decode from well before `base` (x86 decoding resynchronises within a few
        // instructions) to well after, then pick the window around `base`.
        let before = if skip < 0 {
            (-skip) as u64 * 16 + 64
        } else {
            0
        };
        let after = (skip.max(0) + count) as u64 * 16 + 16;
        let start = base.saturating_sub(before);
        let end = base.saturating_add(after);
        let insns = match gdb
            .cmd(&format!("-data-disassemble -s {start:#x} -e {end:#x} -- 5"))
            .await
        {
            Ok(out) => parse_disassembly(&out.results),
            Err(_) => Vec::new(),
        };
        let at = insns.iter().position(|i| i.0 >= base);
        let mut result = Vec::new();
        for k in 0..count {
            let index = at.map(|a| a as i64 + skip + k);
            match index
                .filter(|i| *i >= 0)
                .and_then(|i| insns.get(i as usize))
            {
                Some((_, v)) => result.push(v.clone()),
                None => {
                    let addr = base.wrapping_add_signed(skip + k);
                    result.push(json!({"address": format!("{addr:#x}"), "instruction": "??", "presentationHint": "invalid"}));
                }
            }
        }
        Ok(json!({"instructions": result}))
    }

    async fn restart(&mut self) -> Result<Value> {
        let gdb = self.gdb()?;
        self.pause_for_change().await?;
        self.internal_results = None;
        let reply = gdb.console("monitor reset").await?;
        if let Err(e) = gdb.console("maintenance flush register-cache").await {
            tracing::debug!("hv dap: flush register-cache: {e}");
        }
        self.out
            .output("console", &format!("hv dap: {}\n", reply.trim_end()));
        self.forget_stop();
        if self.stop_on_entry {
            self.out.event(
                "stopped",
                json!({"reason": "entry", "threadId": self.last_thread, "allThreadsStopped": true, "description": "reset"}),
            );
        } else {
            self.resume("-exec-continue").await?;
        }
        Ok(json!({}))
    }

    /// Undoes a failed launch/attach, so that another can follow.
    async fn abort_start(&mut self) {
        if let Some(gdb) = self.gdb.take() {
            gdb.kill();
        }
        if let Some(port) = self.gdb_port.take() {
            port.shutdown();
        }
        if let Some(mut launched) = self.launched.take() {
            let _ = tokio::task::spawn_blocking(move || launched.stop()).await;
        }
        if let Some(link) = self.link.take() {
            link.shutdown();
        }
        self.launch_path = None;
    }

    /// Ends the session: detach gdb (the guest runs on) and stop a launched system.
    pub(crate) async fn finish(&mut self) {
        if self.gdb.is_some() && self.running && self.link.is_some() {
            // gdb detaches a stopped target only (all-stop remote).
            let _ = tokio::time::timeout(Duration::from_secs(20), self.pause_for_change()).await;
        }
        if let Some(gdb) = self.gdb.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), gdb.cmd("-target-detach")).await;
            let _ = tokio::time::timeout(Duration::from_secs(5), gdb.cmd("-gdb-exit")).await;
            gdb.kill();
        }
        if let Some(port) = self.gdb_port.take() {
            port.shutdown();
        }
        if let Some(mut launched) = self.launched.take() {
            let _ = tokio::task::spawn_blocking(move || launched.stop()).await;
        }
        if let Some(link) = self.link.take() {
            link.shutdown();
        }
        if !self.terminated {
            self.terminated = true;
            self.out.event("terminated", json!({}));
        }
    }

    /// Reacts to gdb's asynchronous records.
    pub(crate) async fn on_gdb_event(&mut self, event: GdbEvent) {
        match event {
            GdbEvent::Async {
                kind: AsyncKind::Exec,
                class,
                results,
            } => match class.as_str() {
                "running" => {
                    let was = self.running;
                    self.running = true;
                    if !was && !self.internal_stop {
                        self.out.event(
                            "continued",
                            json!({"threadId": self.last_thread, "allThreadsContinued": true}),
                        );
                    }
                }
                "stopped" => self.on_stopped(results).await,
                _ => {}
            },
            GdbEvent::Async {
                kind: AsyncKind::Notify,
                class,
                results,
            } => match class.as_str() {
                "thread-created" | "thread-exited" => {
                    let id = num_field(&results, "id");
                    let reason = if class == "thread-created" {
                        "started"
                    } else {
                        "exited"
                    };
                    self.out
                        .event("thread", json!({"reason": reason, "threadId": id}));
                }
                "thread-group-exited" if self.gdb.is_some() && !self.terminated => {
                    self.out.output(
                        "important",
                        "hv dap: the gdb connection to the guest closed\n",
                    );
                }
                _ => {}
            },
            GdbEvent::Async { .. } => {}
            GdbEvent::Stream(kind, text) => {
                // gdb's own report of a stop arrives in pieces: pass on whole lines.
                let category = match kind {
                    StreamKind::Log => "stderr",
                    _ => "console",
                };
                self.gdb_text.push_str(&text);
                while let Some(i) = self.gdb_text.find('\n') {
                    let line: String = self.gdb_text.drain(..=i).collect();
                    if !line.trim().is_empty() {
                        self.out.output(category, &line);
                    }
                }
            }
            GdbEvent::CommandFailed { msg, log } => {
                let text = format!("{log}{msg}");
                if !self.resume_failed(&text).await {
                    self.out
                        .output("important", &format!("hv dap: gdb: {}\n", text.trim_end()));
                    self.out.event(
                        "stopped",
                        json!({"reason": "pause", "threadId": self.last_thread, "allThreadsStopped": true,
                               "description": format!("gdb could not resume the guest: {msg}")}),
                    );
                }
            }
            GdbEvent::Exited => {
                if self.gdb.is_some() && !self.terminated {
                    self.out.output("important", "hv dap: gdb exited\n");
                    self.gdb = None;
                    self.finish().await;
                }
            }
        }
    }

    async fn on_stopped(&mut self, results: MiValue) {
        self.running = false;
        let reason = results.str("reason").unwrap_or("").to_owned();
        let thread = results
            .str("thread-id")
            .and_then(|t| t.parse().ok())
            .unwrap_or(self.last_thread);
        self.last_thread = thread;
        if self.internal_stop {
            self.internal_results = Some(results);
            return;
        }
        if !self.configured {
            return;
        }
        if self.stale_interrupt && is_interrupt(&results) {
            self.stale_interrupt = false;
            if let Err(e) = self.resume("-exec-continue").await {
                self.out
                    .output("important", &format!("hv dap: cannot resume: {e}\n"));
            }
            return;
        }
        if reason.starts_with("exited") {
            self.out.output("important", "hv dap: the guest is gone\n");
            self.finish().await;
            return;
        }
        let bkptno = results.str("bkptno").and_then(|b| b.parse::<u64>().ok());
        // Logpoints print and go on.
        if reason == "breakpoint-hit"
            && let Some(msg) = bkptno
                .and_then(|n| self.bps.get(&n))
                .and_then(|b| b.log_message.clone())
        {
            let text = self.interpolate(&msg, thread).await;
            self.out.output("console", &format!("{text}\n"));
            if let Err(e) = self.resume("-exec-continue").await {
                self.out.output(
                    "important",
                    &format!("hv dap: cannot continue after a logpoint: {e}\n"),
                );
            }
            return;
        }
        let signal = results.str("signal-name").unwrap_or("");
        let (dap_reason, mut description) = match reason.as_str() {
            "breakpoint-hit" => {
                let kind = bkptno.and_then(|n| self.bps.get(&n)).map(|b| b.kind);
                let r = match kind {
                    Some(BpKind::Function) => "function breakpoint",
                    Some(BpKind::Instruction) => "instruction breakpoint",
                    _ => "breakpoint",
                };
                (r, format!("Paused on {r}"))
            }
            "watchpoint-trigger" | "access-watchpoint-trigger" | "read-watchpoint-trigger" => {
                let exp = results
                    .get("wpt")
                    .or_else(|| results.get("hw-awpt"))
                    .or_else(|| results.get("hw-rwpt"))
                    .and_then(|w| w.str("exp"))
                    .unwrap_or("")
                    .to_owned();
                let value = results
                    .get("value")
                    .and_then(|v| v.str("new").or_else(|| v.str("value")))
                    .map(|v| format!(" = {v}"))
                    .unwrap_or_default();
                (
                    "data breakpoint",
                    format!("Paused on data breakpoint: {exp}{value}"),
                )
            }
            "end-stepping-range" | "function-finished" | "location-reached" => {
                ("step", "Paused after step".to_owned())
            }
            "signal-received" if signal == "SIGINT" || signal == "0" || signal == "SIGTRAP" => {
                ("pause", "Paused".to_owned())
            }
            "signal-received" => ("exception", format!("Guest crashed ({signal})")),
            _ => ("pause", "Paused".to_owned()),
        };
        // What the host link knows: who waits on a device, why a partition crashed.
        let mut text = None;
        let prefetched = match self.prefetch.take() {
            Some(h) if dap_reason != "exception" => h.await.ok().and_then(Result::ok),
            _ => None,
        };
        let parts = match (prefetched, self.link.clone()) {
            (Some(parts), _) => Some(parts),
            (None, Some(link)) => tokio::task::spawn_blocking(move || link.partitions())
                .await
                .ok()
                .and_then(Result::ok),
            (None, None) => None,
        };
        if let Some(parts) = parts {
            self.blocked = blocked_clients(&parts);
            if dap_reason == "exception"
                && let Some(p) = parts.iter().find(|p| p.name == self.partition)
                && let PartitionState::Crashed { reason } = &p.state
            {
                description = format!("Guest crashed: {reason}");
                text = Some(reason.clone());
            }
        }
        if !self.blocked.is_empty() {
            let who: Vec<String> = self
                .blocked
                .iter()
                .map(|b| {
                    format!(
                        "{} vCPU {} waits on device {}",
                        b.partition, b.vcpu, b.device
                    )
                })
                .collect();
            description = format!("{description} — {}", who.join(", "));
        }
        let mut body = json!({
            "reason": dap_reason,
            "description": description,
            "threadId": thread,
            "allThreadsStopped": true,
            "preserveFocusHint": false,
        });
        if let Some(n) = bkptno {
            body["hitBreakpointIds"] = json!([n]);
        }
        if let Some(t) = text {
            body["text"] = json!(t);
        }
        self.out.event("stopped", body);
    }

    /// `{expression}` in a log message, evaluated in the stopped thread.
    async fn interpolate(&self, message: &str, thread: i64) -> String {
        let Ok(gdb) = self.gdb() else {
            return message.to_owned();
        };
        let mut out = String::new();
        let mut rest = message;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let Some(close) = rest[open..].find('}') else {
                out.push_str(&rest[open..]);
                return out;
            };
            let expr = &rest[open + 1..open + close];
            let value = gdb
                .cmd(&format!(
                    "-data-evaluate-expression --thread {thread} --frame 0 {}",
                    mi::quote(expr)
                ))
                .await
                .map(|o| o.results.str("value").unwrap_or("").to_owned())
                .unwrap_or_else(|e| format!("<{e}>"));
            out.push_str(&value);
            rest = &rest[open + close + 1..];
        }
        out.push_str(rest);
        out
    }

    /// A host-link notification or the link's end.
    pub(crate) async fn on_link_event(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::StateChanged(partition, state, detail) => {
                if partition == self.partition && !self.terminated {
                    let detail = detail.map(|d| format!(" ({d})")).unwrap_or_default();
                    if state.is_terminal() || matches!(state, PartitionState::Paused) {
                        self.out.output(
                            "console",
                            &format!("hv dap: partition {partition} is {state}{detail}\n"),
                        );
                    }
                }
            }
            LinkEvent::Closed => {
                if !self.terminated && self.link.is_some() {
                    self.out.output(
                        "important",
                        "hv dap: the system's host link closed (the system stopped or crashed); ending the session\n",
                    );
                    self.link = None;
                    self.finish().await;
                }
            }
        }
    }
}

/// A stop caused by an interrupt (`-exec-interrupt`), not by the guest or a breakpoint.
fn is_interrupt(r: &MiValue) -> bool {
    let reason = r.str("reason").unwrap_or("");
    let signal = r.str("signal-name").unwrap_or("");
    reason.is_empty() || (reason == "signal-received" && matches!(signal, "SIGINT" | "0"))
}

/// Runs a blocking host-link call off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, TargetError> + Send + 'static,
) -> Result<T, TargetError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(TargetError::Io {
            what: "a host-link task failed",
            source: std::io::Error::other(e.to_string()),
        })
    })
}

/// Which (partition, vCPU) wait on a device model.
fn blocked_clients(parts: &[PartitionInfo]) -> Vec<Blocked> {
    let mut out = Vec::new();
    for p in parts {
        for v in &p.vcpus {
            if v.state == VcpuState::BlockedOnDevice {
                out.push(Blocked {
                    partition: p.name.clone(),
                    vcpu: v.index,
                    device: v.device.clone().unwrap_or_else(|| "?".into()),
                });
            }
        }
    }
    out
}

fn names(parts: &[(String, u32)]) -> String {
    parts
        .iter()
        .map(|(n, c)| format!("{n} ({c} vCPU{})", if *c == 1 { "" } else { "s" }))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks `partition` and `vcpu` against the system's partitions (name, vCPU count).
fn check_target(parts: &[(String, u32)], partition: Option<&str>, vcpu: Option<u32>) -> Result<()> {
    let Some(name) = partition else {
        return Err(SessionError::Args(format!(
            "give `partition`: the partition to debug; this system has {}",
            names(parts)
        )));
    };
    let Some((_, count)) = parts.iter().find(|(n, _)| n == name) else {
        return Err(SessionError::Args(format!(
            "unknown partition `{name}`; this system has {}",
            names(parts)
        )));
    };
    if let Some(j) = vcpu
        && j >= *count
    {
        return Err(SessionError::Args(format!(
            "vCPU {j} is out of range: partition `{name}` has {count} vCPU{} (0..={})",
            if *count == 1 { "" } else { "s" },
            count.saturating_sub(1)
        )));
    }
    Ok(())
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn hex_bytes(text: &str) -> Vec<u8> {
    text.as_bytes()
        .chunks(2)
        .filter_map(|c| std::str::from_utf8(c).ok())
        .filter_map(|s| u8::from_str_radix(s, 16).ok())
        .collect()
}

/// `-data-disassemble` output (with or without source lines) as (address, DAP instruction),
/// sorted by address.
fn parse_disassembly(results: &MiValue) -> Vec<(u64, Value)> {
    let mut out = Vec::new();
    let mut push = |insn: &MiValue, source: Option<(&str, i64)>| {
        let Some(addr) = insn.str("address").and_then(parse_u64) else {
            return;
        };
        let mut v = json!({
            "address": format!("{addr:#x}"),
            "instruction": insn.str("inst").unwrap_or(""),
            "instructionBytes": insn.str("opcodes").unwrap_or(""),
        });
        if let Some(f) = insn.str("func-name") {
            v["symbol"] = json!(format!("{f}+{}", insn.str("offset").unwrap_or("0")));
        }
        if let Some((path, line)) = source {
            v["location"] = json!({"name": file_name(path), "path": path});
            v["line"] = json!(line);
        }
        out.push((addr, v));
    };
    for item in results
        .get("asm_insns")
        .map(|l| l.items())
        .unwrap_or_default()
    {
        if let Some(lines) = item.get("line_asm_insn") {
            let path = item.str("fullname");
            let line = num_field(item, "line");
            for insn in lines.items() {
                push(insn, path.map(|p| (p, line)));
            }
        } else {
            push(item, None);
        }
    }
    out.sort_by_key(|(a, _)| *a);
    out.dedup_by_key(|(a, _)| *a);
    out
}

/// What the adapter supports, honestly.
fn capabilities() -> Value {
    json!({
        "supportsConfigurationDoneRequest": true,
        "supportsFunctionBreakpoints": true,
        "supportsConditionalBreakpoints": true,
        "supportsHitConditionalBreakpoints": true,
        "supportsLogPoints": true,
        "supportsInstructionBreakpoints": true,
        "supportsDataBreakpoints": true,
        "supportsEvaluateForHovers": true,
        "supportsSetVariable": true,
        "supportsRestartRequest": true,
        "supportsTerminateRequest": true,
        "supportTerminateDebuggee": false,
        "supportsDisassembleRequest": true,
        "supportsReadMemoryRequest": true,
        "supportsWriteMemoryRequest": true,
        "supportsSteppingGranularity": true,
        "supportsValueFormattingOptions": false,
        "supportsStepBack": false,
        "supportsGotoTargetsRequest": false,
        "supportsCompletionsRequest": false,
        "supportsExceptionInfoRequest": false,
        "exceptionBreakpointFilters": [],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_checks_name_the_valid_choices() {
        let parts = vec![("control".to_owned(), 1), ("worker".to_owned(), 2)];
        let e = check_target(&parts, Some("nope"), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown partition `nope`"), "{e}");
        assert!(e.contains("control (1 vCPU), worker (2 vCPUs)"), "{e}");
        let e = check_target(&parts, Some("worker"), Some(2))
            .unwrap_err()
            .to_string();
        assert!(e.contains("vCPU 2 is out of range"), "{e}");
        assert!(e.contains("0..=1"), "{e}");
        assert!(check_target(&parts, Some("worker"), Some(1)).is_ok());
        assert!(check_target(&parts, None, None).is_err());
    }

    #[test]
    fn disassembly_with_and_without_source() {
        let line = r#"^done,asm_insns=[src_and_asm_line={line="73",file="a.c",fullname="/g/a.c",line_asm_insn=[{address="0x1004",func-name="f",offset="4",opcodes="90",inst="nop"},{address="0x1000",func-name="f",offset="0",opcodes="55",inst="push   %rbp"}]}]"#;
        let crate::mi::MiRecord::Result { results, .. } = crate::mi::parse_line(line).unwrap()
        else {
            panic!()
        };
        let d = parse_disassembly(&results);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].0, 0x1000);
        assert_eq!(d[0].1["location"]["path"], "/g/a.c");
        assert_eq!(d[1].1["symbol"], "f+4");
        let line = r#"^done,asm_insns=[{address="0x2000",inst="ret"}]"#;
        let crate::mi::MiRecord::Result { results, .. } = crate::mi::parse_line(line).unwrap()
        else {
            panic!()
        };
        assert_eq!(parse_disassembly(&results)[0].1["instruction"], "ret");
    }

    #[test]
    fn numbers_and_hex() {
        assert_eq!(parse_u64("0x10"), Some(16));
        assert_eq!(parse_u64("12"), Some(12));
        assert_eq!(parse_u64("x"), None);
        assert_eq!(hex_bytes("0aff"), vec![0x0a, 0xff]);
        assert_eq!(display_register("eflags"), "rflags");
        assert_eq!(gdb_register("rflags"), "eflags");
    }
}
