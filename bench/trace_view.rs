//! Benchmark: `hv trace view` on synthetic traces of 1 M and 10 M records (trace_viewer::synth):
//! open-to-first-picture (the process started until the page's first data, `/api/meta` and the
//! whole trace's `/api/range`, is answered), with the index built (first open) and reused (later
//! opens); the frame time of pan/zoom range questions at random places and zooms (the page asks
//! one per settled view); the server's peak memory (VmHWM); the page's own frame time (drawing a
//! settled view in headless Chromium, trace-viewer/web/test/frames.mjs, when Chromium and
//! playwright-core are here). The peer, measured in the same run on the same file, is
//! `hv trace stats` (one pass over the records).
//!
//! Run: `cargo bench --bench trace_view` (goals on 10 M records: first picture ≤ 2 s with the
//! index reused; frames ≤ 16 ms; server ≤ 300 MiB). `HV_BENCH_EVENTS=1000000` runs one size.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

const HV: &str = env!("CARGO_BIN_EXE_hv");
/// The page's plot is about this wide; it asks for its view plus half a view on each side.
const PX: u32 = 2400;
const FRAMES: usize = 300;

struct Server(Child, SocketAddr);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(file: &Path) -> Server {
    let mut child = Command::new(HV)
        .args(["trace", "view"])
        .arg(file)
        .args(["--port", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hv trace view");
    let stderr = BufReader::new(child.stderr.take().expect("stderr"));
    // Killed and waited for however this ends.
    let mut server = Server(child, SocketAddr::from(([127, 0, 0, 1], 0)));
    for line in stderr.lines().map_while(Result::ok) {
        if let Some(at) = line.find("http://") {
            let url = line[at + 7..].split(['/', ' ']).next().unwrap_or_default();
            server.1 = url.parse().expect("an address in the URL");
            return server;
        }
    }
    panic!("hv trace view printed no URL");
}

/// GETs `path`; the body.
fn get(addr: SocketAddr, path: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).expect("read");
    let at = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    assert!(
        answer[9..12] == *b"200",
        "{path}: {}",
        String::from_utf8_lossy(&answer[..at])
    );
    answer.split_off(at + 4)
}

fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Seconds from starting the viewer to the first picture's data; the server, still running.
fn first_picture(file: &Path) -> (f64, Server, f64) {
    let t = Instant::now();
    let server = start(file);
    let meta: serde_json::Value = serde_json::from_slice(&get(server.1, "/api/meta")).unwrap();
    let duration = meta["duration_us"].as_f64().unwrap();
    get(
        server.1,
        &format!("/api/range?from=0&to={duration}&px={PX}"),
    );
    (t.elapsed().as_secs_f64(), server, duration)
}

/// A small deterministic generator (xorshift) for the frames' places.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn run(events: u64) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("synthetic.hvt");
    let t = Instant::now();
    let out = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
    let written =
        trace_viewer::synth::write(out, trace_viewer::synth::SynthOptions { events, seed: 12 })
            .expect("write the synthetic trace");
    let size = std::fs::metadata(&file).unwrap().len();
    println!(
        "\n{written} records ({:.0} MiB) generated in {:.1} s",
        size as f64 / (1 << 20) as f64,
        t.elapsed().as_secs_f64()
    );

    // The peer: one pass over the records.
    let t = Instant::now();
    let stats = Command::new(HV)
        .args(["trace", "stats"])
        .arg(&file)
        .stdout(Stdio::null())
        .status()
        .expect("hv trace stats");
    assert!(stats.success());
    let peer = t.elapsed().as_secs_f64();

    let (cold, server, _) = first_picture(&file);
    let cold_rss = peak_rss_mib(server.0.id());
    drop(server);
    let index_size =
        std::fs::metadata(dir.path().join("synthetic.hvt.hvti")).map_or(0, |m| m.len());
    let (warm, server, duration) = first_picture(&file);

    // Frames: a view of a random span (whole trace down to 20 µs, log-uniform) at a random place;
    // the question the page asks for it.
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut times = Vec::with_capacity(FRAMES);
    let mut bytes = 0usize;
    for _ in 0..FRAMES {
        let span = duration * (20.0 / duration).powf(rng.next());
        let start = rng.next() * (duration - span);
        let (from, to) = (
            (start - span / 2.0).max(0.0),
            (start + span * 1.5).min(duration),
        );
        let t = Instant::now();
        bytes += get(server.1, &format!("/api/range?from={from}&to={to}&px={PX}")).len();
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    // The page: its own frame time when it draws a settled view (headless Chromium, if here).
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("trace-viewer/web");
    let page_frames = if Path::new("/usr/bin/chromium").exists()
        && web.join("node_modules/playwright-core").exists()
    {
        let url = format!("http://{}/", server.1);
        let out = Command::new("node")
            .arg("test/frames.mjs")
            .arg(&url)
            .current_dir(&web)
            .output()
            .expect("run node test/frames.mjs");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("frame "))
            .map(|l| {
                let f: Vec<&str> = l.splitn(4, ' ').collect();
                format!(
                    "\n  {:>10} zoom: median {} ms, worst {} ms ({})",
                    f[0], f[1], f[2], f[3]
                )
            })
            .collect::<String>()
    } else {
        " (skipped: needs /usr/bin/chromium and npm ci --prefix trace-viewer/web)".to_owned()
    };
    let rss = peak_rss_mib(server.0.id());
    let (median, p95, worst) = (
        percentile(&mut times, 0.5),
        percentile(&mut times, 0.95),
        percentile(&mut times, 1.0),
    );
    println!(
        "peer `hv trace stats`: {peer:.2} s\n\
         first picture, index built:  {cold:.2} s ({:.2}x the peer; index {:.0} MiB; peak RSS {cold_rss:.0} MiB)\n\
         first picture, index reused: {warm:.3} s ({:.3}x the peer)\n\
         frames ({FRAMES} range questions, {PX} px): median {median:.2} ms, p95 {p95:.2} ms, worst {worst:.2} ms; {:.0} KiB per answer\n\
         server peak RSS after the frames: {rss:.0} MiB\n\
         page frames (drawing a settled view in headless Chromium, 1400 px):{page_frames}",
        cold / peer,
        index_size as f64 / (1 << 20) as f64,
        warm / peer,
        bytes as f64 / FRAMES as f64 / 1024.0,
    );
}

fn main() {
    // `cargo bench` passes --bench; nothing else is taken.
    let sizes: Vec<u64> = match std::env::var("HV_BENCH_EVENTS") {
        Ok(v) => vec![v.parse().expect("HV_BENCH_EVENTS: a number of records")],
        Err(_) => vec![1_000_000, 10_000_000],
    };
    println!("hv trace view: open-to-first-picture and frame time against `hv trace stats`");
    for events in sizes {
        run(events);
    }
}
