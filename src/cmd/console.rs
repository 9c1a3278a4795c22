//! `hv console`: the terminal console of a running system (partitions, CPU and interrupt
//! timelines, guest consoles, control), or with `--batch` snapshots as JSON lines or CSV.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use hv_link::LinkClient;
use tui_console::CollectorOptions;
use tui_console::batch::{self, BatchFormat, BatchOptions};

/// Options of `hv console`.
#[derive(Debug, Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct ConsoleArgs {
    /// The running system: its host link (`unix:<path>`, `tcp:127.0.0.1:<port>`,
    /// `serial:<path>`) or its name. Default: the only system running for this user.
    #[arg(long, value_name = "LINK")]
    pub connect: Option<String>,
    /// Token file of a `tcp:` link (default: the hypervisor's token file for that port).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Print snapshots instead of the interactive console (like `xentop -b`).
    #[arg(long, short)]
    pub batch: bool,
    /// Batch output: `json` (one object per line) or `csv`.
    #[arg(
        long,
        value_name = "FORMAT",
        default_value = "json",
        requires = "batch"
    )]
    pub format: BatchFormat,
    /// Milliseconds between samples.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub interval: u64,
    /// Batch mode: stop after N snapshots (default: until the system stops).
    #[arg(long, short = 'n', value_name = "N", requires = "batch")]
    pub count: Option<u64>,
}

const AFTER_HELP: &str = "\
Interactive keys: p pause, r resume, R reset (asks), i inject an IRQ, t start/stop recording
the trace to hv-trace-<system>-<time>.hvt, L stop/start following the trace live (on by
default), c type into the selected guest's console (Enter too, in the console pane; Esc stops
typing; focusing the pane alone does not type), Tab / arrows / hjkl move, PgUp/PgDn scroll,
mouse selects, ? help, q quits. The footer lists the keys of the focused pane.

Batch mode prints one JSON object per snapshot and line (partitions with state, vCPU states,
CPU %, exits/s, IRQs/s, hypercalls/s, lost trace records; interrupts per vector), or CSV rows
(kind partition|irq). Rates need the agent's partitions.stats; without it they are null/empty.

    hv console --batch --format csv --interval 500 --count 10";

/// Runs `hv console`.
pub fn console(args: ConsoleArgs) -> anyhow::Result<ExitCode> {
    let addr = super::gdb_bridge::resolve(args.connect.as_deref())?;
    let interval = Duration::from_millis(args.interval.max(10));
    let mut opts = CollectorOptions::new(addr.clone());
    opts.interval = interval;
    opts.client.token_file = args.token_file;
    if args.batch {
        let client = LinkClient::connect_with(&addr, opts.client)
            .with_context(|| format!("cannot connect to {addr}"))?;
        let batch_opts = BatchOptions {
            format: args.format,
            interval,
            count: args.count,
        };
        let mut out = std::io::stdout().lock();
        batch::run(&client, &batch_opts, &mut out).context("batch mode stopped")?;
        return Ok(ExitCode::SUCCESS);
    }
    if !std::io::stdout().is_terminal() {
        bail!("stdout is not a terminal: run `hv console` in a terminal, or use --batch");
    }
    tui_console::term::run(opts).context("console failed")?;
    Ok(ExitCode::SUCCESS)
}

/// The console running on its own thread inside another command (`hv run`).
pub(crate) struct EmbeddedConsole {
    stop: Option<crossbeam_channel::Sender<()>>,
    done: crossbeam_channel::Receiver<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EmbeddedConsole {
    /// Starts the interactive console on `addr` (with the link's token, if any); lines sent to
    /// `notes` appear in its event log.
    pub(crate) fn start(
        addr: hv_link::LinkAddr,
        token: Option<String>,
        notes: crossbeam_channel::Receiver<String>,
    ) -> anyhow::Result<EmbeddedConsole> {
        let mut opts = CollectorOptions::new(addr);
        opts.client.token = token;
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(1);
        let thread = std::thread::Builder::new()
            .name("hv-console".into())
            .spawn(move || {
                if let Err(e) = tui_console::term::run_until(opts, &stop_rx, &notes) {
                    eprintln!("hv: console failed: {e}");
                }
                let _ = done_tx.send(());
            })?;
        Ok(EmbeddedConsole {
            stop: Some(stop_tx),
            done: done_rx,
            thread: Some(thread),
        })
    }

    /// Fires when the user quit the console.
    pub(crate) fn done(&self) -> &crossbeam_channel::Receiver<()> {
        &self.done
    }
}

impl Drop for EmbeddedConsole {
    /// Closes the console (restoring the terminal) and waits for it.
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
