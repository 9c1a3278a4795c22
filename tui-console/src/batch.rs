//! Batch mode, like `xentop -b`: print snapshots of the partitions table and interrupt
//! statistics as JSON lines or CSV rows, at an interval, a number of times.

use std::io::Write;
use std::str::FromStr;
use std::time::{Duration, Instant};

use hv_link::control::{TraceStart, TraceStartParams, TraceStop};
use hv_link::{ChannelHandle, ChannelName, ClientError, LinkClient};

use crate::activity::{TraceAnalyzer, events_from_chunk};
use crate::app::fill_latency;
use crate::collector::sample;
use crate::model::{Snapshot, SnapshotBuilder};

/// Batch mode failures.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The link failed.
    #[error("host link")]
    Link(#[from] ClientError),
    /// Writing the output failed (e.g. a closed pipe).
    #[error("cannot write the output")]
    Io(#[from] std::io::Error),
    /// A snapshot could not be encoded.
    #[error("cannot encode a snapshot")]
    Json(#[from] serde_json::Error),
}

/// Output format of batch mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchFormat {
    /// One JSON object (a [`Snapshot`]) per line.
    Json,
    /// CSV: a header, then one row per partition and one per interrupt vector per snapshot.
    Csv,
}

impl FromStr for BatchFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "json" => Ok(BatchFormat::Json),
            "csv" => Ok(BatchFormat::Csv),
            other => Err(format!("unknown format {other:?}: expected json or csv")),
        }
    }
}

/// Batch mode settings.
#[derive(Debug, Clone)]
pub struct BatchOptions {
    /// Output format.
    pub format: BatchFormat,
    /// Time between snapshots (the first one comes one interval after a baseline sample, so
    /// that every snapshot has rates).
    pub interval: Duration,
    /// Number of snapshots (`None`: until the link closes or the output fails).
    pub count: Option<u64>,
}

/// The CSV header line.
pub const CSV_HEADER: &str = "kind,seq,elapsed_ms,partition,state,vcpus,cpu_pct,exits_per_s,irqs_per_s,hypercalls_per_s,lost_records,vector,irq_per_s,irq_total";

fn num(v: Option<f64>) -> String {
    v.map_or_else(String::new, |x| format!("{x:.2}"))
}

fn field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// The CSV rows of one snapshot (no header).
pub fn csv_rows(s: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    for p in &s.partitions {
        out.push(format!(
            "partition,{},{},{},{},{},{},{},{},{},{},,,",
            s.seq,
            s.elapsed_ms,
            field(&p.name),
            field(&p.state_text),
            p.vcpus.len(),
            num(p.cpu_pct),
            num(p.exits_per_s),
            num(p.irqs_per_s),
            num(p.hypercalls_per_s),
            p.lost_records.map_or_else(String::new, |n| n.to_string()),
        ));
    }
    for i in &s.interrupts {
        out.push(format!(
            "irq,{},{},{},,,,,,,,{},{},{}",
            s.seq,
            s.elapsed_ms,
            field(&i.partition),
            i.vector,
            num(i.per_s),
            i.total
        ));
    }
    out
}

/// Writes one snapshot in `format`.
pub fn write_snapshot(
    out: &mut dyn Write,
    format: BatchFormat,
    s: &Snapshot,
) -> Result<(), BatchError> {
    match format {
        BatchFormat::Json => writeln!(out, "{}", serde_json::to_string(s)?)?,
        BatchFormat::Csv => {
            for row in csv_rows(s) {
                writeln!(out, "{row}")?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// Runs batch mode on a connected client.
pub fn run(
    client: &LinkClient,
    opts: &BatchOptions,
    out: &mut dyn Write,
) -> Result<(), BatchError> {
    let mut builder = SnapshotBuilder::new(client.welcome().system.clone());
    let mut stats = true;
    if opts.format == BatchFormat::Csv {
        writeln!(out, "{CSV_HEADER}")?;
    }
    // Interrupt latency comes from the trace, as in the interactive console: follow it (an
    // agent without a trace channel leaves latency null).
    let trace = follow_trace(client);
    let mut analyzer = TraceAnalyzer::default();
    // Baseline for the rates; it is not printed.
    builder.build(sample(client, &mut stats)?);
    let mut printed = 0;
    while opts.count.is_none_or(|n| printed < n) {
        let deadline = Instant::now() + opts.interval;
        match &trace {
            Some(channel) => {
                while let Ok(chunk) = channel.receiver().recv_deadline(deadline) {
                    analyzer.feed(&events_from_chunk(&chunk));
                    if Instant::now() >= deadline {
                        break;
                    }
                }
            }
            None => std::thread::sleep(opts.interval),
        }
        let mut s = builder.build(sample(client, &mut stats)?);
        fill_latency(&mut s, &analyzer);
        s.seq = printed;
        write_snapshot(out, opts.format, &s)?;
        printed += 1;
    }
    if trace.is_some() {
        let _ = client.call_typed::<TraceStop>(&());
    }
    Ok(())
}

/// Opens the `trace` channel and starts the trace; None where the agent cannot.
fn follow_trace(client: &LinkClient) -> Option<ChannelHandle> {
    let channel = client.open_channel(&ChannelName::Trace).ok()?;
    client
        .call_typed::<TraceStart>(&TraceStartParams::default())
        .ok()?;
    Some(channel)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::tests::demo_snapshot;

    #[test]
    fn json_and_csv_lines() {
        let s = demo_snapshot();
        let mut out = Vec::new();
        write_snapshot(&mut out, BatchFormat::Json, &s).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 1);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["system"], "demo");
        assert_eq!(v["partitions"][2]["name"], "worker");
        assert_eq!(v["partitions"][2]["state"], "paused");
        assert_eq!(v["partitions"][2]["vcpus"][1]["state"], "paused");
        assert!(v["partitions"][0]["cpu_pct"].is_null());

        let rows = csv_rows(&s);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0], "partition,0,0,control,running,1,,,,,,,,");
        let cols = CSV_HEADER.split(',').count();
        assert!(
            rows.iter().all(|r| r.split(',').count() == cols),
            "{rows:?}"
        );
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!("csv".parse::<BatchFormat>(), Ok(BatchFormat::Csv));
        assert!("xml".parse::<BatchFormat>().is_err());
    }
}
