//! `hv lsp` diagnostics latency on a large description (64 partitions, 256 channels): from a
//! `didChange` to its `publishDiagnostics`, against the peer — `hv run`'s own validation of the
//! same text (`SystemConfig::parse_with`, the same checks without the protocol).

#[path = "../tests/lsp/client.rs"]
mod client;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use client::{Lsp, repo, uri};

const PARTITIONS: usize = 64;
/// Each partition is an endpoint of 8 channels (the most it may have): 64 * 8 / 2.
const CHANNELS: usize = 256;
const ROUNDS: usize = 40;

/// A valid description: partition i and i ^ m share a channel with doorbell 48 + m, m in 1..=8,
/// so every partition has 8 channels with 8 different vectors.
fn large_description(image: &Path) -> String {
    let mut text = String::from("[system]\nname = \"large\"\n");
    for i in 0..PARTITIONS {
        text.push_str(&format!(
            "\n[[partition]]\nname = \"p{i}\"\nimage = \"{}\"\nmemory = \"16M\"\n",
            image.display()
        ));
    }
    let mut channels = 0;
    for m in 1..=8usize {
        for i in 0..PARTITIONS {
            let j = i ^ m;
            if i < j {
                text.push_str(&format!(
                    "\n[[channel]]\nname = \"c{i}-{j}\"\nendpoints = [\"p{i}\", \"p{j}\"]\nsize = \"16K\"\nvector = {}\n",
                    47 + m
                ));
                channels += 1;
            }
        }
    }
    assert_eq!(channels, CHANNELS);
    text
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let image = repo().join("target/guests/control.elf");
    if !image.exists() {
        println!(
            "SKIPPED lsp bench: {} is missing (cargo build builds it)",
            image.display()
        );
        return;
    }
    let path = repo().join("examples/large.hv.toml");
    let text = large_description(&image);
    println!(
        "description: {PARTITIONS} partitions, {CHANNELS} channels, {} lines, {} KiB",
        text.lines().count(),
        text.len() / 1024
    );

    // Peer: hv run's validation, in process.
    let options = hv_config::ParseOptions::default();
    let system = hv_config::SystemConfig::parse_with(&text, &path, &options)
        .unwrap_or_else(|e| panic!("the generated description is invalid:\n{e}"));
    assert_eq!(system.channels.len(), CHANNELS);
    let peer = median(
        (0..ROUNDS)
            .map(|_| {
                let start = Instant::now();
                let _ = hv_config::SystemConfig::parse_with(&text, &path, &options);
                start.elapsed()
            })
            .collect(),
    );

    // hv lsp: a change, and its diagnostics, over stdio.
    let mut lsp = Lsp::start(json!({ "debounceMs": 0 }));
    let doc = uri(&path);
    lsp.open(&doc, &text);
    assert!(
        lsp.diagnostics(&doc, 1).is_empty(),
        "the description is valid"
    );
    let mut version = 1;
    let mut samples = Vec::new();
    for round in 0..ROUNDS {
        version += 1;
        // Alternate a valid edit and one with an error, so both paths are timed.
        let edited = if round % 2 == 0 {
            text.replacen("memory = \"16M\"", "memory = \"32M\"", 1)
        } else {
            text.replacen("vector = 48", "vector = 36", 1)
        };
        let start = Instant::now();
        lsp.change(&doc, version, &edited);
        let diagnostics = lsp.diagnostics(&doc, version);
        samples.push(start.elapsed());
        assert_eq!(diagnostics.is_empty(), round % 2 == 0);
    }
    let lsp_latency = median(samples);
    assert!(lsp.stop().success());

    println!(
        "hv run validation (peer)            {:>8.2} ms",
        peer.as_secs_f64() * 1e3
    );
    println!(
        "hv lsp didChange -> diagnostics     {:>8.2} ms   ({:.2}x the peer; target <= 20 ms)",
        lsp_latency.as_secs_f64() * 1e3,
        lsp_latency.as_secs_f64() / peer.as_secs_f64()
    );
}
