//! `hv trace`: `record FILE` subscribes to a running system's `trace` channel, switches tracing
//! on, and writes what arrives to a trace file (hv-link's trace format) until the duration ends
//! or Ctrl-C; `stats FILE` prints its analyses; `export FILE` converts it for Perfetto (protobuf
//! or JSON) or to CSV (both stream: memory stays flat whatever the trace length);
//! `view FILE` serves a web timeline of it on 127.0.0.1 until Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use crossbeam_channel::select;
use hv_link::control::{TraceStart, TraceStartParams, TraceStop};
use hv_link::trace::{Chunk, LOST_ON_LINK, RecordKind, TraceHeader, TraceWriter, decode_chunk};
use hv_link::{ChannelHandle, ChannelName, LinkClient};

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
    /// Convert a trace file for Perfetto (ui.perfetto.dev; JSON also for chrome://tracing) or
    /// to CSV.
    Export(ExportArgs),
    /// Write a synthetic trace (a simulated 4-partition system) of about N records, for tests
    /// and benchmarks.
    #[command(hide = true)]
    Synth(SynthArgs),
    /// Show a trace file (or, with --live, a running system's trace as it arrives) as a web
    /// timeline (tracks per vCPU, zoom, pan, search, details, interrupt latency), served on
    /// 127.0.0.1 until Ctrl-C.
    View(ViewArgs),
}

/// Options of `hv trace view`.
#[derive(Debug, Args)]
struct ViewArgs {
    /// The trace file (from `hv trace record`); an index of it is kept beside it (FILE.hvti).
    #[arg(required_unless_present = "live", conflicts_with = "live")]
    file: Option<PathBuf>,
    /// Follow a running system instead: its trace is shown as it arrives, and the page's Save
    /// button writes what arrived to a trace file in --save-dir.
    #[arg(long)]
    live: bool,
    /// With --live: the running system, its link or its name (default: the only one running).
    #[arg(long, value_name = "LINK", alias = "link", requires = "live")]
    connect: Option<String>,
    /// With --live: where Save writes (default: the current directory).
    #[arg(long, value_name = "DIR", requires = "live")]
    save_dir: Option<PathBuf>,
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
    /// Perfetto's protobuf trace (`.perfetto-trace`): smaller and faster to load in
    /// ui.perfetto.dev.
    PerfettoProto,
    /// The JSON trace-event format (`.json`): ui.perfetto.dev and chrome://tracing.
    #[value(alias = "perfetto")]
    PerfettoJson,
    /// One line per record (`.csv`).
    Csv,
}

impl From<ExportFormat> for trace_viewer::export::Format {
    fn from(f: ExportFormat) -> Self {
        match f {
            ExportFormat::PerfettoProto => Self::PerfettoProto,
            ExportFormat::PerfettoJson => Self::PerfettoJson,
            ExportFormat::Csv => Self::Csv,
        }
    }
}

/// Options of `hv trace export`.
#[derive(Debug, Args)]
struct ExportArgs {
    /// The trace file (from `hv trace record`).
    file: PathBuf,
    /// Output format. Default: from OUT's extension (`.perfetto-trace`/`.pftrace`, `.json`,
    /// `.csv`), else perfetto-proto.
    #[arg(long, value_enum)]
    format: Option<ExportFormat>,
    /// Where to write (`-`: standard output). Default: FILE with the format's extension
    /// appended.
    #[arg(long, short, value_name = "OUT")]
    output: Option<PathBuf>,
}

/// Options of `hv trace synth`.
#[derive(Debug, Args)]
struct SynthArgs {
    /// Records to write (at least).
    #[arg(long, value_name = "N")]
    events: u64,
    /// Seed of the simulation's choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The trace file to write.
    #[arg(long, short, value_name = "FILE")]
    output: PathBuf,
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
        TraceCommand::Synth(s) => synth(s),
        TraceCommand::View(v) => view(v),
    }
}

fn view(args: ViewArgs) -> anyhow::Result<ExitCode> {
    // Before any thread starts, so that every thread blocks SIGINT/SIGTERM.
    let signals = super::run::termination_signal()?;
    let Some(file) = args.file.clone() else {
        return view_live(args, &signals);
    };
    let started = Instant::now();
    let (index, origin) = trace_viewer::index::Index::open_or_build(&file)?;
    let meta = index.meta();
    let how = match &origin {
        trace_viewer::index::Origin::Cached => "index reused".to_owned(),
        trace_viewer::index::Origin::Built => "index built".to_owned(),
        trace_viewer::index::Origin::Rebuilt(why) => format!("index rebuilt ({why})"),
    };
    eprintln!(
        "hv: {} records, {} items on {} tracks; {how} in {:.2} s: {}",
        meta.records,
        meta.items,
        meta.tracks.len(),
        started.elapsed().as_secs_f64(),
        index.path().display()
    );
    let system = meta.header.system.clone();
    let addr = std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, args.port));
    let viewer = trace_viewer::serve::Viewer::start(index, addr)?;
    eprintln!(
        "hv: trace viewer for {system} at {} ; Ctrl-C stops",
        viewer.url()
    );
    let _ = signals.recv();
    viewer.shutdown();
    Ok(ExitCode::SUCCESS)
}

/// Items held per vCPU by a live view (about 14 MiB each).
const LIVE_ITEMS_PER_VCPU: usize = 1 << 18;

/// `hv trace view --live`: subscribes to the running system's trace, feeds a live trace that the
/// viewer serves, and records every chunk to a file that Save copies.
fn view_live(
    args: ViewArgs,
    signals: &crossbeam_channel::Receiver<i32>,
) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    use std::sync::{Arc, Mutex, RwLock};

    let TraceFeed {
        client,
        channel,
        header,
        header_chunk: first,
    } = open_trace_channel(args.connect.as_deref(), "hv-trace-view")?;
    let save_dir = match args.save_dir {
        Some(dir) => dir,
        None => std::env::current_dir().context("the current directory")?,
    };
    // Everything received, as a trace file (the chunks back to back), for Save to copy: a
    // temporary file unlinked at once, so that nothing is left behind however the viewer ends.
    let recording = std::env::temp_dir().join(format!("hv-live-{}.hvt", std::process::id()));
    let mut file = std::fs::File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&recording)
        .with_context(|| format!("create {}", recording.display()))?;
    let _ = std::fs::remove_file(&recording);
    file.write_all(&first).context("write the live recording")?;
    let writer = Arc::new(Mutex::new(std::io::BufWriter::new(file)));
    let live = Arc::new(RwLock::new(trace_viewer::live::LiveTrace::new(
        header.clone(),
        LIVE_ITEMS_PER_VCPU,
    )));
    client
        .call_typed::<TraceStart>(&TraceStartParams {
            partitions: None,
            classes: None,
        })
        .context("trace.start")?;
    let receiver = channel.receiver().clone();
    let (feed_live, feed_writer) = (Arc::clone(&live), Arc::clone(&writer));
    std::thread::Builder::new()
        .name("trace-view-live".into())
        .spawn(move || {
            while let Ok(payload) = receiver.recv() {
                if let Ok((Chunk::Batch(batch), _)) = decode_chunk(&payload) {
                    if let Ok(mut live) = feed_live.write() {
                        live.push(&batch);
                    }
                    if let Ok(mut w) = feed_writer.lock() {
                        let _ = w.write_all(&payload);
                    }
                }
            }
        })
        .context("start the live trace's thread")?;
    let system = header.system.clone();
    let save_writer = Arc::clone(&writer);
    let save: trace_viewer::serve::SaveFn = Box::new(move || {
        use std::os::unix::fs::FileExt;
        // Whole chunks only: the feeding thread waits while this copies.
        let mut w = save_writer
            .lock()
            .map_err(|_| "the recording's writer failed".to_owned())?;
        w.flush()
            .map_err(|e| format!("flush the live recording: {e}"))?;
        let from = w.get_ref();
        let len = from
            .metadata()
            .map_err(|e| format!("the live recording: {e}"))?
            .len();
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let to = save_dir.join(format!("{system}-{unix}.hvt"));
        let write = |e: std::io::Error| format!("write {}: {e}", to.display());
        let mut out = std::io::BufWriter::new(std::fs::File::create(&to).map_err(write)?);
        let mut buf = vec![0; 1 << 20];
        let mut at = 0;
        while at < len {
            let n = from
                .read_at(&mut buf, at)
                .map_err(|e| format!("read the live recording: {e}"))?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n]).map_err(write)?;
            at += n as u64;
        }
        out.flush().map_err(write)?;
        Ok(to)
    });
    let addr = std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, args.port));
    let viewer = trace_viewer::serve::Viewer::start_live(live, save, addr)?;
    eprintln!(
        "hv: live trace viewer for {} at {} ; Ctrl-C stops",
        header.system,
        viewer.url()
    );
    let _ = signals.recv();
    let _ = client.call_typed::<TraceStop>(&());
    viewer.shutdown();
    drop(channel);
    Ok(ExitCode::SUCCESS)
}

fn stats(args: StatsArgs) -> anyhow::Result<ExitCode> {
    let trace = trace_viewer::stream::TraceStream::open(&args.file)?;
    let stats = trace_viewer::stats::Stats::compute_stream(&trace)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
    } else {
        print!("{}", stats.render());
    }
    Ok(ExitCode::SUCCESS)
}

fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    use trace_viewer::export::Format;
    let format: Format = match (args.format, &args.output) {
        (Some(f), _) => f.into(),
        (None, Some(out)) if out.as_os_str() != "-" => {
            Format::from_path(out).unwrap_or(Format::PerfettoProto)
        }
        _ => Format::PerfettoProto,
    };
    let trace = trace_viewer::stream::TraceStream::open(&args.file)?;
    let output = args.output.unwrap_or_else(|| {
        let mut name = args.file.clone().into_os_string();
        name.push(format!(".{}", format.extension()));
        name.into()
    });
    if output.as_os_str() == "-" {
        let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
        trace_viewer::export::write(&trace, format, &mut out)
            .context("export to standard output")?;
        return Ok(ExitCode::SUCCESS);
    }
    let file =
        std::fs::File::create(&output).with_context(|| format!("create {}", output.display()))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 16, file);
    let records = trace_viewer::export::write(&trace, format, &mut out)
        .with_context(|| format!("export to {}", output.display()))?;
    eprintln!(
        "hv: {records} records of {} written to {}{}",
        trace.header().system,
        output.display(),
        match format {
            Format::PerfettoProto => "; open it at https://ui.perfetto.dev (Open trace file)",
            Format::PerfettoJson => {
                "; open it at https://ui.perfetto.dev (Open trace file) or in chrome://tracing"
            }
            Format::Csv => "",
        }
    );
    Ok(ExitCode::SUCCESS)
}

fn synth(args: SynthArgs) -> anyhow::Result<ExitCode> {
    let file = std::fs::File::create(&args.output)
        .with_context(|| format!("create {}", args.output.display()))?;
    let records = trace_viewer::synth::write(
        std::io::BufWriter::with_capacity(1 << 20, file),
        trace_viewer::synth::SynthOptions {
            events: args.events,
            seed: args.seed,
        },
    )
    .with_context(|| format!("write {}", args.output.display()))?;
    eprintln!(
        "hv: {records} synthetic records written to {}",
        args.output.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// A running system's trace channel, open, with the header that started it.
struct TraceFeed {
    client: LinkClient,
    channel: ChannelHandle,
    header: TraceHeader,
    /// The header chunk as it came (a recording starts with it).
    header_chunk: Vec<u8>,
}

/// Connects to a running system (`connect`: its link or name, default the only one) as
/// `client_name`, opens its trace channel and reads the header that starts it.
fn open_trace_channel(connect: Option<&str>, client_name: &str) -> anyhow::Result<TraceFeed> {
    let link = super::gdb_bridge::resolve(connect)?;
    let client =
        LinkClient::connect(&link, client_name).with_context(|| format!("connect {link}"))?;
    let channel = client
        .open_channel(&ChannelName::Trace)
        .context("open the trace channel")?;
    let header_chunk = channel.recv().context("read the trace header")?;
    let Chunk::Header(header) = decode_chunk(&header_chunk).context("trace header")?.0 else {
        bail!("the trace channel did not start with a header");
    };
    Ok(TraceFeed {
        client,
        channel,
        header,
        header_chunk,
    })
}

fn record(args: RecordArgs) -> anyhow::Result<ExitCode> {
    let signals = super::run::termination_signal()?;
    let TraceFeed {
        client,
        channel,
        header,
        ..
    } = open_trace_channel(args.connect.as_deref(), "hv-trace")?;
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
    // What the agent drained before the stop is on its way: take what arrives shortly. Bounded
    // as a whole: another client (the console, VS Code's Partitions view) may keep the rings
    // recording, and its batches would keep coming.
    let drained_by = Instant::now() + Duration::from_millis(300);
    while let Some(left) = drained_by.checked_duration_since(Instant::now()) {
        match channel.receiver().recv_timeout(left) {
            Ok(payload) => count(&payload, &mut writer)?,
            Err(_) => break,
        }
    }
    writer.finish()?;
    eprintln!(
        "hv: {records} records written to {}; lost: {lost_ring} in the hypervisor's rings, {lost_link} on the link",
        args.file.display()
    );
    Ok(ExitCode::SUCCESS)
}
