//! `hv trace`: `record FILE` subscribes to a running system's `trace` channel, switches tracing
//! on, and writes what arrives to a trace file (hv-link's trace format) until the duration ends
//! or Ctrl-C; `stats FILE` prints its analyses; `export FILE` converts it for Perfetto or to CSV;
//! `view FILE` serves a web timeline of it on 127.0.0.1 until Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use crossbeam_channel::select;
use hv_link::control::{TraceStart, TraceStartParams, TraceStop};
use hv_link::trace::{Chunk, LOST_ON_LINK, RecordKind, TraceWriter, decode_chunk};
use hv_link::{ChannelName, LinkClient};

/// `hv trace` subcommands.
#[derive(Debug, Args)]
pub struct TraceArgs {
    #[command(subcommand)]
    command: TraceCommand,
}

#[derive(Debug, Subcommand)]
enum TraceCommand {
    /// Record a running system's trace to FILE.
    Record(RecordArgs),
    /// Analyse a trace file: CPU per vCPU, exit reasons, hypercalls, IRQ latency and jitter,
    /// device-model latency, lost records.
    Stats(StatsArgs),
    /// Convert a trace file for Perfetto (ui.perfetto.dev, chrome://tracing) or to CSV.
    Export(ExportArgs),
    /// Show a trace file as a web timeline (tracks per vCPU, zoom, pan, search, details),
    /// served on 127.0.0.1 until Ctrl-C.
    View(ViewArgs),
}

/// Options of `hv trace view`.
#[derive(Debug, Args)]
struct ViewArgs {
    /// The trace file (from `hv trace record`).
    file: PathBuf,
    /// The port to serve on, on 127.0.0.1 (0: any free port; the URL is printed).
    #[arg(long, default_value_t = 0)]
    port: u16,
}

/// Options of `hv trace stats`.
#[derive(Debug, Args)]
struct StatsArgs {
    /// The trace file (from `hv trace record`).
    file: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ExportFormat {
    /// Perfetto's JSON trace-event format (also chrome://tracing).
    Perfetto,
    /// One line per record.
    Csv,
}

/// Options of `hv trace export`.
#[derive(Debug, Args)]
struct ExportArgs {
    /// The trace file (from `hv trace record`).
    file: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "perfetto")]
    format: ExportFormat,
    /// Where to write (`-`: standard output). Default: FILE with `.json` or `.csv` appended.
    #[arg(long, short, value_name = "OUT")]
    output: Option<PathBuf>,
}

/// Options of `hv trace record`.
#[derive(Debug, Args)]
struct RecordArgs {
    /// The trace file to write.
    file: PathBuf,
    /// The running system: its link or its name (default: the only one running).
    #[arg(long, value_name = "LINK")]
    connect: Option<String>,
    /// Stop after this many seconds (default: at Ctrl-C).
    #[arg(long, value_name = "S", value_parser = super::run::parse_seconds)]
    duration: Option<Duration>,
    /// Event classes: exits, irq, hypercall, sched, device, ipc, marker, all (default: all).
    #[arg(long, value_delimiter = ',')]
    classes: Option<Vec<String>>,
    /// Only these partitions (default: all).
    #[arg(long, value_delimiter = ',')]
    partitions: Option<Vec<String>>,
}

/// Runs `hv trace`.
pub fn trace(args: TraceArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        TraceCommand::Record(r) => record(r),
        TraceCommand::Stats(s) => stats(s),
        TraceCommand::Export(e) => export(e),
        TraceCommand::View(v) => view(v),
    }
}

fn view(args: ViewArgs) -> anyhow::Result<ExitCode> {
    // Before any thread starts, so that every thread blocks SIGINT/SIGTERM.
    let signals = super::run::termination_signal()?;
    let trace = trace_viewer::Trace::open(&args.file)?;
    let addr = std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, args.port));
    let viewer = trace_viewer::serve::Viewer::start(&trace, addr)?;
    eprintln!(
        "hv: trace viewer for {} at {} ; Ctrl-C stops",
        trace.header.system,
        viewer.url()
    );
    let _ = signals.recv();
    viewer.shutdown();
    Ok(ExitCode::SUCCESS)
}

fn stats(args: StatsArgs) -> anyhow::Result<ExitCode> {
    let trace = trace_viewer::Trace::open(&args.file)?;
    let stats = trace_viewer::stats::Stats::compute(&trace);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
    } else {
        print!("{}", stats.render());
    }
    Ok(ExitCode::SUCCESS)
}

fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let trace = trace_viewer::Trace::open(&args.file)?;
    let extension = match args.format {
        ExportFormat::Perfetto => "json",
        ExportFormat::Csv => "csv",
    };
    let output = args.output.unwrap_or_else(|| {
        let mut name = args.file.clone().into_os_string();
        name.push(format!(".{extension}"));
        name.into()
    });
    let write = |out: &mut dyn std::io::Write| -> std::io::Result<()> {
        let mut out = std::io::BufWriter::new(out);
        match args.format {
            ExportFormat::Perfetto => trace_viewer::export::perfetto(&trace, &mut out),
            ExportFormat::Csv => trace_viewer::export::csv(&trace, &mut out),
        }
    };
    if output.as_os_str() == "-" {
        write(&mut std::io::stdout().lock()).context("write to standard output")?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut file =
        std::fs::File::create(&output).with_context(|| format!("create {}", output.display()))?;
    write(&mut file).with_context(|| format!("write {}", output.display()))?;
    eprintln!(
        "hv: {} records of {} written to {}{}",
        trace.records.len(),
        trace.header.system,
        output.display(),
        if args.format == ExportFormat::Perfetto {
            "; open it at https://ui.perfetto.dev (Open trace file) or in chrome://tracing"
        } else {
            ""
        }
    );
    Ok(ExitCode::SUCCESS)
}

fn record(args: RecordArgs) -> anyhow::Result<ExitCode> {
    let signals = super::run::termination_signal()?;
    let link = super::gdb_bridge::resolve(args.connect.as_deref())?;
    let client =
        LinkClient::connect(&link, "hv-trace").with_context(|| format!("connect {link}"))?;
    let channel = client
        .open_channel(&ChannelName::Trace)
        .context("open the trace channel")?;
    let first = channel.recv().context("read the trace header")?;
    let Chunk::Header(header) = decode_chunk(&first).context("trace header")?.0 else {
        bail!("the trace channel did not start with a header");
    };
    let file = std::fs::File::create(&args.file)
        .with_context(|| format!("create {}", args.file.display()))?;
    let mut writer = TraceWriter::new(std::io::BufWriter::new(file), &header)?;
    client
        .call_typed::<TraceStart>(&TraceStartParams {
            partitions: args.partitions,
            classes: args.classes,
        })
        .context("trace.start")?;
    eprintln!(
        "hv: recording the trace of {} to {} ({}); Ctrl-C stops",
        header.system,
        args.file.display(),
        args.duration.map_or("until Ctrl-C".to_owned(), |d| format!(
            "for {} s",
            d.as_secs_f64()
        ))
    );
    let end = args.duration.and_then(|d| Instant::now().checked_add(d));
    let (mut records, mut lost_ring, mut lost_link) = (0u64, 0u64, 0u64);
    let mut count = |payload: &[u8], writer: &mut TraceWriter<_>| -> anyhow::Result<()> {
        if let (Chunk::Batch(batch), _) = decode_chunk(payload)? {
            for r in &batch {
                match r.kind() {
                    Some(RecordKind::Lost) if r.b == LOST_ON_LINK => lost_link += r.a,
                    Some(RecordKind::Lost) => lost_ring += r.a,
                    _ => records += 1,
                }
            }
            writer.write_chunk(payload)?;
        }
        Ok(())
    };
    loop {
        let wait = end.map_or(Duration::from_secs(3600), |e| {
            e.saturating_duration_since(Instant::now())
        });
        select! {
            recv(channel.receiver()) -> p => match p {
                Ok(payload) => count(&payload, &mut writer)?,
                Err(_) => {
                    eprintln!("hv: the link closed");
                    break;
                }
            },
            recv(signals) -> _ => break,
            default(wait) => {
                if end.is_some_and(|e| Instant::now() >= e) {
                    break;
                }
            }
        }
    }
    let _ = client.call_typed::<TraceStop>(&());
    // What the agent drained before the stop is on its way: take what arrives shortly.
    while let Ok(payload) = channel.receiver().recv_timeout(Duration::from_millis(100)) {
        count(&payload, &mut writer)?;
    }
    writer.finish()?;
    eprintln!(
        "hv: {records} records written to {}; lost: {lost_ring} in the hypervisor's rings, {lost_link} on the link",
        args.file.display()
    );
    Ok(ExitCode::SUCCESS)
}
