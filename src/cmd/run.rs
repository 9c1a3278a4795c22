//! `hv run`: build a system from its description, run it, print guest consoles as
//! `[<partition>] <line>`, and stop cleanly on Ctrl-C, a time limit, or when no partition is left
//! running.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use hv_config::{ConfigError, SystemConfig};
use hv_core::{PartitionState, System, SystemEvent};

/// The demo system, run when no description is given.
pub const DEMO_SYSTEM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/demo.toml");

/// Options of `hv run`.
#[derive(Debug, Args, Default)]
pub struct RunArgs {
    /// System description (TOML). Default: the demo system (examples/demo.toml).
    pub system: Option<PathBuf>,
    /// Stop after this many seconds (fractions allowed), e.g. `--time-limit 2.5`.
    #[arg(long, value_name = "SECONDS")]
    pub time_limit: Option<f64>,
    /// Do not print guest console output (state changes and errors are still printed).
    #[arg(long, short)]
    pub quiet: bool,
}

/// Blocks SIGINT/SIGTERM in every thread and returns a receiver that fires when one arrives.
fn termination_signal() -> anyhow::Result<crossbeam_channel::Receiver<i32>> {
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

/// Runs `hv run`.
pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let path = args.system.unwrap_or_else(|| PathBuf::from(DEMO_SYSTEM));
    let config = load_config(&path)?;
    let signals = termination_signal()?;
    let names: Vec<String> = config.partitions.iter().map(|p| p.name.clone()).collect();
    let started = Instant::now();
    let mut system = System::new(config).context("cannot build the system")?;
    let events = system.subscribe(65_536);
    system.start().context("cannot start the system")?;
    eprintln!(
        "hv: running {} ({} partitions: {}); Ctrl-C stops",
        system.config.name,
        names.len(),
        names.join(", ")
    );

    let deadline = args
        .time_limit
        .map(|s| started + Duration::from_secs_f64(s.max(0.0)));
    let stdout = std::io::stdout();
    let reason = loop {
        let timeout = deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(3600));
        crossbeam_channel::select! {
            recv(events) -> event => match event {
                Ok(SystemEvent::ConsoleLine { partition, line }) => {
                    if !args.quiet {
                        let mut out = stdout.lock();
                        let _ = writeln!(out, "[{}] {}", names[partition], line);
                    }
                }
                Ok(SystemEvent::StateChanged { partition, state }) => {
                    match &state {
                        PartitionState::Crashed(_) | PartitionState::Exited(_) => {
                            eprintln!("hv: partition {} {}", names[partition], state);
                        }
                        _ => {}
                    }
                    let running = system.partitions().iter().any(|p| {
                        matches!(p.state(), PartitionState::Running | PartitionState::Paused | PartitionState::Created)
                    });
                    if !running {
                        break "no partition is left running";
                    }
                }
                Ok(SystemEvent::Warning { partition, message }) => {
                    eprintln!("hv: warning: {}: {}", names[partition], message);
                }
                Ok(SystemEvent::ConsoleOutput { .. }) => {}
                Err(_) => break "event stream closed",
            },
            recv(signals) -> _ => break "interrupted",
            default(timeout) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break "time limit reached";
                }
            }
        }
    };
    let _ = std::io::stdout().flush();
    system.shutdown();
    let summary: Vec<String> = system
        .partitions()
        .iter()
        .map(|p| format!("{} {}", p.name, p.state().name()))
        .collect();
    eprintln!(
        "hv: stopped after {:.1} s ({reason}): {}",
        started.elapsed().as_secs_f64(),
        summary.join(", ")
    );
    Ok(ExitCode::SUCCESS)
}
