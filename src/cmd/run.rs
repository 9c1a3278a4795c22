//! `hv run`: build a system from its description, run it, print guest consoles as
//! `[<partition>] <line>`, and stop cleanly on Ctrl-C, a time limit, or when no partition is left
//! running. While it runs, the debug agent serves the host link and an in-process gdb bridge
//! gives every guest and vCPU a TCP port for gdb (the port table goes to stderr).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use debug_agent::{Agent, AgentOptions};
use gdb_bridge::{Bridge, BridgeOptions};
use hv_config::{ConfigError, SystemConfig};
use hv_core::{PartitionLifecycle, System, SystemEvent};
use hv_link::LinkAddr;

/// The demo system, run when no description is given.
pub const DEMO_SYSTEM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/demo.toml");

/// Options of `hv run`.
#[derive(Debug, Args, Default)]
#[command(after_long_help = RUN_AFTER_HELP)]
pub struct RunArgs {
    /// System description (TOML). Default: the demo system (examples/demo.toml).
    pub system: Option<PathBuf>,
    /// Stop after this many seconds (fractions allowed), e.g. `--time-limit 2.5`.
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub time_limit: Option<Duration>,
    /// Do not print guest console output (state changes and errors are still printed).
    #[arg(long, short)]
    pub quiet: bool,
    /// Serve the host link on ADDR instead of the description's `[agent] link` (default: a Unix
    /// socket named after the system in the per-user runtime directory).
    ///
    /// ADDR is `unix:<path>` (its directory must exist), `tcp:127.0.0.1:<port>` (clients need
    /// the token written to the token file) or `pty` (a pseudo-terminal; its path is printed).
    #[arg(long, value_name = "ADDR")]
    pub link: Option<String>,
    /// First TCP port of the gdb bridge: partition k (in description order) on BASE+k, vCPU j of
    /// partition k alone on BASE+100+16k+j. Default: the description's `[agent] gdb_base_port`
    /// (3333). Every one of these ports must be at most 65535.
    #[arg(long, value_name = "BASE", value_parser = clap::value_parser!(u16).range(1..))]
    pub gdb_port: Option<u16>,
    /// Do not start the in-process gdb bridge (the host link still runs; `hv gdb-bridge` can
    /// bridge later).
    #[arg(long)]
    pub no_gdb_bridge: bool,
    /// Do not open the terminal console (`hv console`), which otherwise replaces the printed
    /// guest output when stdout is a terminal.
    #[arg(long)]
    pub no_console: bool,
}

/// A duration option (`--time-limit`): seconds, fractions allowed, not negative.
pub(crate) fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    Duration::try_from_secs_f64(seconds)
        .map_err(|_| format!("`{text}`: give a finite number of seconds, 0 or more"))
}

const RUN_AFTER_HELP: &str = "\
Debugging:
  The debug agent serves the host link while the system runs (path printed at start).
  Unless --no-gdb-bridge, the gdb bridge listens on 127.0.0.1 and prints its port table:

    partition  vcpu  port   image
    control    all   3333   .../target/guests/control.elf
    control    0     3433   .../target/guests/control.elf

  Attach with: gdb target/guests/control.elf -ex 'target remote :3333'
  A guest stops while gdb is attached; it runs on when gdb detaches or disconnects.

  When the link address or the gdb port was chosen explicitly (--link, --gdb-port, or
  [agent] link in the description) and cannot be used, hv run fails; with the defaults it
  warns and runs without it (e.g. when another instance of the same system is running).
  hv creates no directory for an explicit unix: link (only its own runtime directory for
  the default one): a missing directory is an error. A gdb port plan beyond 65535 is an
  error before anything starts.

Exit status:
  0  the run ended (time limit, Ctrl-C, console closed, every partition done) and no partition
     crashed or exited with a nonzero code
  1  the system could not be loaded or started (the error says why)
  2  bad command line
  3  a partition crashed or exited with a nonzero code during the run (even if it was reset
     afterwards); the summary line names it";

/// Exit status of a run in which a partition crashed or exited with a nonzero code.
const GUEST_FAILED: u8 = 3;

/// Blocks SIGINT/SIGTERM in every thread and returns a receiver that fires when one arrives.
pub(crate) fn termination_signal() -> anyhow::Result<crossbeam_channel::Receiver<i32>> {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it; pthread_sigmask only
    // reads it. Blocking before any thread starts makes every later thread inherit the mask.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            bail!("cannot block SIGINT");
        }
        set
    };
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut signal = 0;
            // SAFETY: `set` is an initialised sigset_t and `signal` a valid out pointer.
            if unsafe { libc::sigwait(&set, &mut signal) } == 0 {
                let _ = tx.send(signal);
            }
        })?;
    Ok(rx)
}

/// Loads a description, printing every diagnostic on failure.
pub fn load_config(path: &std::path::Path) -> anyhow::Result<SystemConfig> {
    match SystemConfig::load(path) {
        Ok(config) => {
            if !config.warnings.is_empty() {
                eprint!("{}", config.warnings.render());
            }
            Ok(config)
        }
        Err(ConfigError::Invalid(diagnostics)) => {
            eprint!("{}", diagnostics.render());
            bail!(
                "{} is not a valid system description ({})",
                path.display(),
                diagnostics.summary()
            )
        }
        Err(e) => Err(e).context("cannot load the system description"),
    }
}

/// Runs `hv run`: start the system and its debugging, follow its events until the run ends,
/// stop everything, report.
pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let path = args.system.unwrap_or_else(|| PathBuf::from(DEMO_SYSTEM));
    let config = load_config(&path)?;
    if let Some(base) = args.gdb_port
        && !args.no_gdb_bridge
    {
        check_gdb_port_plan(base, &config)?;
    }
    let signals = termination_signal()?;
    let names: Vec<String> = config.partitions.iter().map(|p| p.name.clone()).collect();
    let started = Instant::now();
    let (mut system, events) = start_system(config, &names)?;
    // The console takes the terminal when there is one; what would be printed meanwhile goes to
    // its event log instead.
    let want_console = !args.no_console && std::io::stdout().is_terminal();
    let (notes_tx, notes_rx) = crossbeam_channel::unbounded::<String>();
    let debugging = start_debugging(
        &system,
        &args.link,
        args.gdb_port,
        args.no_gdb_bridge,
        bridge_event_sink(want_console, &notes_tx),
    );
    let (agent, bridge) = match debugging {
        Ok(d) => d,
        Err(e) => {
            system.shutdown();
            return Err(e);
        }
    };
    let console = match &agent {
        Some(agent) if want_console => {
            Some(open_console(agent, bridge.as_ref(), notes_rx, &notes_tx)?)
        }
        _ => None,
    };
    // stderr would scribble over the console; its event log shows state changes instead.
    let mut outcome = Outcome::new(
        &names,
        args.quiet || console.is_some(),
        console.is_none(),
        &notes_tx,
    );
    // A limit too far to represent never comes.
    let deadline = args.time_limit.and_then(|d| started.checked_add(d));
    let reason = follow_until_end(
        &events,
        &signals,
        console.as_ref().map(|c| c.done()),
        deadline,
        &mut outcome,
    );
    drop(console);
    // Debuggers first: their guests resume before the system stops.
    drop(bridge);
    drop(agent);
    system.shutdown();
    outcome.finish(&events, &system);
    print_summary(&system, started, reason);
    Ok(exit_status(&outcome.failed_names()))
}

/// Builds and starts the system, subscribed to its events before anything runs, and says on
/// stderr what runs.
fn start_system(
    config: SystemConfig,
    names: &[String],
) -> anyhow::Result<(System, crossbeam_channel::Receiver<SystemEvent>)> {
    let mut system = System::new(config).context("cannot build the system")?;
    let events = system.subscribe_to(65_536, Box::new(Outcome::takes));
    system.start().context("cannot start the system")?;
    eprintln!(
        "hv: running {} ({} partition{}: {}); Ctrl-C stops",
        system.config.name,
        names.len(),
        if names.len() == 1 { "" } else { "s" },
        names.join(", ")
    );
    Ok((system, events))
}

/// Where the gdb bridge's events (connections, disconnections) go: the console's event log
/// when it has the terminal, else stderr.
fn bridge_event_sink(
    to_console: bool,
    notes: &crossbeam_channel::Sender<String>,
) -> gdb_bridge::EventSink {
    if to_console {
        let notes = notes.clone();
        Arc::new(move |e: &gdb_bridge::BridgeEvent| {
            let _ = notes.send(e.to_string());
        })
    } else {
        Arc::new(|e: &gdb_bridge::BridgeEvent| eprintln!("hv: {e}"))
    }
}

/// Opens the terminal console on the agent's link; the bridge's gdb ports (which it would
/// otherwise have printed on stderr) are its first notes.
fn open_console(
    agent: &Agent,
    bridge: Option<&Bridge>,
    notes_rx: crossbeam_channel::Receiver<String>,
    notes: &crossbeam_channel::Sender<String>,
) -> anyhow::Result<super::console::EmbeddedConsole> {
    let console = super::console::EmbeddedConsole::start(
        agent.local_addr().clone(),
        agent.token().map(str::to_owned),
        notes_rx,
    )?;
    for entry in bridge.map_or(&[][..], |b| b.ports()) {
        let who = match entry.vcpu {
            None => entry.partition.clone(),
            Some(j) => format!("{} vCPU {j}", entry.partition),
        };
        let _ = notes.send(format!("gdb: {who} on :{}", entry.port));
    }
    Ok(console)
}

/// Follows the system's events into `outcome` until the run ends: no partition left running,
/// Ctrl-C (or SIGTERM), the console closed, or the deadline. Returns why it ended.
fn follow_until_end(
    events: &crossbeam_channel::Receiver<SystemEvent>,
    signals: &crossbeam_channel::Receiver<i32>,
    console_done: Option<&crossbeam_channel::Receiver<()>>,
    deadline: Option<Instant>,
    outcome: &mut Outcome<'_>,
) -> &'static str {
    let never = crossbeam_channel::never();
    let console_done = console_done.unwrap_or(&never);
    loop {
        let timeout = deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(3600));
        crossbeam_channel::select! {
            recv(events) -> event => match event {
                Ok(event) => {
                    if outcome.take(event) && !outcome.any_running() {
                        return "no partition is left running";
                    }
                }
                Err(_) => return "event stream closed",
            },
            recv(signals) -> _ => return "interrupted",
            recv(console_done) -> _ => return "console closed",
            default(timeout) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return "time limit reached";
                }
            }
        }
    }
}

/// The closing line on stderr: how long the run took, why it ended, every partition's state.
fn print_summary(system: &System, started: Instant, reason: &str) {
    let _ = std::io::stdout().flush();
    let summary: Vec<String> = system
        .handles()
        .iter()
        .map(|p| format!("{} {}", p.name(), p.state().name()))
        .collect();
    eprintln!(
        "hv: stopped after {:.1} s ({reason}): {}",
        started.elapsed().as_secs_f64(),
        summary.join(", ")
    );
}

/// Success, or [`GUEST_FAILED`] naming the partitions that failed during the run.
fn exit_status(failed: &[&str]) -> ExitCode {
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "hv: exit status {GUEST_FAILED}: crashed or exited with a nonzero code: {}",
            failed.join(", ")
        );
        ExitCode::from(GUEST_FAILED)
    }
}

/// A crash, or an exit with a nonzero code.
fn is_failure(state: &PartitionLifecycle) -> bool {
    matches!(state, PartitionLifecycle::Crashed(_))
        || matches!(state, PartitionLifecycle::Exited(code) if *code != 0)
}

/// What `hv run` learnt from the system's events: each partition's state as the events tell it
/// (in order with the console lines before it), and the failures of the run.
struct Outcome<'a> {
    names: &'a [String],
    /// The last state each partition's events gave.
    states: Vec<PartitionLifecycle>,
    /// The first failing state of each partition during the run (a reset does not clear it).
    failed: Vec<Option<PartitionLifecycle>>,
    /// The failure was printed on stderr.
    told: Vec<bool>,
    /// Guest lines are not printed.
    quiet: bool,
    /// State changes and warnings go to stderr (else, warnings to the console's event log).
    report: bool,
    notes: &'a crossbeam_channel::Sender<String>,
}

impl<'a> Outcome<'a> {
    /// Nothing learnt yet: every partition created, none failed.
    fn new(
        names: &'a [String],
        quiet: bool,
        report: bool,
        notes: &'a crossbeam_channel::Sender<String>,
    ) -> Outcome<'a> {
        Outcome {
            names,
            states: vec![PartitionLifecycle::Created; names.len()],
            failed: vec![None; names.len()],
            told: vec![false; names.len()],
            quiet,
            report,
            notes,
        }
    }

    /// The events [`take`](Self::take) uses: console bytes and debugger stops (thousands a
    /// second under a debugger) are left out, so they never wake the main loop.
    fn takes(event: &SystemEvent) -> bool {
        !matches!(
            event,
            SystemEvent::ConsoleOutput { .. } | SystemEvent::Debugger { .. }
        )
    }

    /// Takes one event; true when it changed a partition's state.
    fn take(&mut self, event: SystemEvent) -> bool {
        match event {
            SystemEvent::ConsoleLine { partition, line } => {
                if !self.quiet {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "[{}] {}", self.names[partition], line);
                }
                false
            }
            SystemEvent::StateChanged { partition, state } => {
                if is_failure(&state) && self.failed[partition].is_none() {
                    self.fail(partition, state.clone());
                } else if matches!(state, PartitionLifecycle::Exited(_)) && self.report {
                    eprintln!("hv: partition {} {}", self.names[partition], state);
                }
                self.states[partition] = state;
                true
            }
            SystemEvent::Warning { partition, message } => {
                let text = format!("warning: {}: {}", self.names[partition], message);
                if self.report {
                    eprintln!("hv: {text}");
                } else {
                    let _ = self.notes.send(text);
                }
                false
            }
            SystemEvent::ConsoleOutput { .. } | SystemEvent::Debugger { .. } => false,
        }
    }

    /// Notes a failure and prints it with its detail (the crash report) on stderr, unless the
    /// console has the terminal (then it is printed when the run ends).
    fn fail(&mut self, partition: usize, state: PartitionLifecycle) {
        if self.report {
            eprintln!("hv: partition {} {}", self.names[partition], state);
            self.told[partition] = true;
        }
        self.failed[partition] = Some(state);
    }

    /// Whether some partition may still run (by the events so far).
    fn any_running(&self) -> bool {
        self.states.iter().any(|s| {
            matches!(
                s,
                PartitionLifecycle::Running
                    | PartitionLifecycle::Paused
                    | PartitionLifecycle::Created
            )
        })
    }

    /// After the system stopped: takes the events still queued (every vCPU thread has ended, so
    /// what they published is all there: lines printed and crashes just before the end are part
    /// of the run too), counts a failure the subscription lost from the final states, and tells
    /// again the failures the console showed, now that the terminal is back.
    fn finish(&mut self, events: &crossbeam_channel::Receiver<SystemEvent>, system: &System) {
        self.report = true;
        for event in events.try_iter() {
            self.take(event);
        }
        // A state change the subscription lost (it holds 65536 events) still counts.
        for (i, p) in system.handles().iter().enumerate() {
            if self.failed[i].is_none() && is_failure(&p.state()) {
                self.fail(i, p.state());
            }
        }
        for (i, failed) in self.failed.iter().enumerate() {
            if let Some(state) = failed.as_ref().filter(|_| !self.told[i]) {
                eprintln!("hv: partition {} {}", self.names[i], state);
            }
        }
    }

    /// The partitions that failed during the run, in description order.
    fn failed_names(&self) -> Vec<&'a str> {
        self.names
            .iter()
            .zip(&self.failed)
            .filter(|(_, failed)| failed.is_some())
            .map(|(name, _)| name.as_str())
            .collect()
    }
}

/// `--gdb-port BASE` must leave room for every partition's and vCPU's port (checked before
/// anything starts, as the description's `gdb_base_port` is).
fn check_gdb_port_plan(base: u16, config: &SystemConfig) -> anyhow::Result<()> {
    let vcpus: Vec<u32> = config.partitions.iter().map(|p| p.vcpus).collect();
    let top = hv_config::gdb_port_plan_top(base, &vcpus);
    if top <= u64::from(u16::MAX) {
        return Ok(());
    }
    let highest = u64::from(u16::MAX) + u64::from(base) - top;
    bail!(
        "--gdb-port {base}: the gdb port plan of {} needs ports {base}..={top}, beyond 65535 (partition k on BASE+k, its vCPU j on BASE+100+16k+j); use a base port of at most {highest}",
        config.name
    )
}

/// Starts the debug agent and, unless disabled, the in-process gdb bridge, and prints where
/// they listen. Failures of explicitly requested addresses are errors; failures with defaults
/// are warnings (the system runs without them).
fn start_debugging(
    system: &System,
    link: &Option<String>,
    gdb_port: Option<u16>,
    no_gdb_bridge: bool,
    bridge_events: gdb_bridge::EventSink,
) -> anyhow::Result<(Option<Agent>, Option<Bridge>)> {
    let config = &system.config.agent;
    let explicit_link = link.is_some() || config.link.is_some();
    let options = AgentOptions {
        link: match link {
            Some(text) => Some(
                text.parse::<LinkAddr>()
                    .with_context(|| format!("bad --link {text:?}"))?,
            ),
            None => None,
        },
        ..AgentOptions::default()
    };
    let agent = match Agent::start(system, config, options) {
        Ok(a) => a,
        Err(e) if !explicit_link => {
            eprintln!(
                "hv: warning: no host link (debugging and host tools unavailable): {:#}",
                anyhow::Error::new(e)
            );
            return Ok((None, None));
        }
        Err(e) => return Err(anyhow::Error::new(e).context("cannot start the debug agent")),
    };
    eprintln!("hv: host link: {}", agent.local_addr());
    if let Some(file) = agent.token_file() {
        eprintln!("hv: host link token file: {}", file.display());
    }
    if no_gdb_bridge {
        return Ok((Some(agent), None));
    }
    if let LinkAddr::Serial(_) = agent.local_addr() {
        eprintln!(
            "hv: no gdb bridge on the serial link {}: it carries one connection, and the bridge needs one per gdb session (use a unix: or tcp: link for gdb)",
            agent.local_addr()
        );
        return Ok((Some(agent), None));
    }
    let base = gdb_port.unwrap_or(config.gdb_base_port);
    let options = BridgeOptions {
        token: agent.token().map(str::to_owned),
        events: Some(bridge_events),
        // Beside the agent: gdb's bytes go straight into the stub, not through the link.
        in_process: Some(Arc::new(AgentGdb(agent.local_gdb()))),
        ..BridgeOptions::default()
    };
    match Bridge::start(agent.local_addr(), base, options) {
        Ok(bridge) => {
            print_port_table(&bridge);
            Ok((Some(agent), Some(bridge)))
        }
        Err(e) if gdb_port.is_none() => {
            eprintln!(
                "hv: warning: no gdb bridge: {:#} (use --gdb-port BASE, or `hv gdb-bridge --base-port BASE` later)",
                anyhow::Error::new(e)
            );
            Ok((Some(agent), None))
        }
        Err(e) => Err(anyhow::Error::new(e).context("cannot start the gdb bridge")),
    }
}

/// Prints the bridge's port table and how to attach, to stderr.
pub(crate) fn print_port_table(bridge: &Bridge) {
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "{}", bridge.port_table());
    if let Some(first) = bridge.ports().first() {
        let _ = writeln!(
            err,
            "hv: attach with: gdb {} -ex 'target remote :{}'",
            first.image, first.port
        );
    }
}

/// The debug agent's in-process gdb sessions, for the bridge of `hv run`.
struct AgentGdb(debug_agent::gdb::LocalGdb);

impl gdb_bridge::InProcessGdb for AgentGdb {
    fn open(
        &self,
        channel: &hv_link::ChannelName,
        client_name: &str,
        to_gdb: gdb_bridge::ToGdb,
        ended: gdb_bridge::SessionEnded,
    ) -> Result<Box<dyn gdb_bridge::InProcessSession>, String> {
        match self.0.open(channel, client_name, to_gdb, ended) {
            Ok(session) => Ok(Box::new(AgentGdbSession(session))),
            Err(e) => Err(e.message),
        }
    }
}

struct AgentGdbSession(debug_agent::gdb::LocalGdbSession);

impl gdb_bridge::InProcessSession for AgentGdbSession {
    fn input(&self, bytes: &[u8]) {
        self.0.input(bytes);
    }

    fn close(self: Box<Self>) {
        self.0.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_limits_are_checked() {
        assert_eq!(parse_seconds("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_seconds("0"), Ok(Duration::ZERO));
        for bad in ["-1", "inf", "NaN", "1e300"] {
            let e = parse_seconds(bad).unwrap_err();
            assert!(e.contains("finite number of seconds"), "{bad}: {e}");
        }
        assert!(parse_seconds("soon").unwrap_err().contains("not a number"));
    }

    #[test]
    fn the_outcome_keeps_failures_and_ends_with_the_last_running_partition() {
        let names = vec!["a".to_owned(), "b".to_owned()];
        let (notes, notes_rx) = crossbeam_channel::unbounded();
        // As with the console on the terminal: nothing printed, warnings to its notes.
        let mut outcome = Outcome::new(&names, true, false, &notes);
        let changed = |partition, state| SystemEvent::StateChanged { partition, state };
        assert!(outcome.take(changed(0, PartitionLifecycle::Running)));
        assert!(outcome.take(changed(1, PartitionLifecycle::Exited(2))));
        assert!(outcome.any_running());
        // A reset does not clear the failure.
        assert!(outcome.take(changed(1, PartitionLifecycle::Running)));
        assert!(outcome.take(changed(1, PartitionLifecycle::Exited(0))));
        assert!(outcome.take(changed(0, PartitionLifecycle::Exited(0))));
        assert!(!outcome.any_running());
        assert_eq!(outcome.failed_names(), ["b"]);
        let warning = SystemEvent::Warning {
            partition: 0,
            message: "unmapped port 0x80".into(),
        };
        assert!(!outcome.take(warning));
        assert_eq!(
            notes_rx.try_recv().unwrap(),
            "warning: a: unmapped port 0x80"
        );
    }
}
