//! End-to-end tests of `hv console` against the real demo system: batch mode (JSON and CSV) and
//! the interactive console driven in tmux (pause and resume a partition and see it; focus vs
//! typing; debugger stops in the event log).

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use common::{kvm_lock, kvm_or_skip, wait_until};
use serde_json::Value;

/// Generous guard for waits (the machine has 2 cores and the demo keeps them busy).
const GUARD: Duration = Duration::from_secs(60);

const DEMO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/demo.toml");

/// A running `hv run examples/demo.toml` with its link in a temporary directory.
struct Demo {
    child: Child,
    dir: tempfile::TempDir,
    /// Everything `hv run` printed to stderr (for failure messages).
    log: std::sync::Arc<std::sync::Mutex<String>>,
    /// The gdb bridge's base port (control's port).
    gdb_port: u16,
}

impl Demo {
    fn start() -> Demo {
        Demo::start_in(tempfile::tempdir().unwrap())
    }

    /// Starts the demo with its link at `<dir>/l.sock`.
    fn start_in(dir: tempfile::TempDir) -> Demo {
        let link = dir.path().join("l.sock");
        let gdb_port = common::free_gdb_base(&[1, 1, 2, 1]);
        let mut child = Command::new(env!("CARGO_BIN_EXE_hv"))
            .args(["run", DEMO, "--quiet", "--gdb-port"])
            .arg(gdb_port.to_string())
            .arg("--link")
            .arg(format!("unix:{}", link.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start hv run");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        let stderr_log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let all = stderr_log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut all = all.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
                drop(all);
                let _ = tx.send(line);
            }
        });
        let mut log = String::new();
        loop {
            match rx.recv_timeout(GUARD) {
                Ok(line) => {
                    let ready = line.contains("host link:");
                    log.push_str(&line);
                    log.push('\n');
                    if ready {
                        break;
                    }
                }
                Err(_) => panic!("hv run never reported its host link:\n{log}"),
            }
        }
        Demo {
            child,
            dir,
            log: stderr_log,
            gdb_port,
        }
    }

    /// What `hv run` printed to stderr so far, and whether it is still running.
    fn report(&mut self) -> String {
        let status = match self.child.try_wait() {
            Ok(Some(s)) => format!("hv run ended: {s}"),
            _ => "hv run is running".to_owned(),
        };
        format!("{status}; its stderr:\n{}", self.log.lock().unwrap())
    }

    fn link(&self) -> String {
        format!("unix:{}", self.dir.path().join("l.sock").display())
    }
}

impl Demo {
    /// Stops the system and hands back its directory (for a restart at the same link path).
    fn stop(mut self) -> tempfile::TempDir {
        self.terminate();
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }

    fn terminate(&mut self) {
        // SAFETY: kill only sends a signal to our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        self.terminate();
    }
}

fn hv_console(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hv"))
        .arg("console")
        .args(args)
        .output()
        .expect("run hv console")
}

/// The demo's partitions with their vCPU counts.
const PARTITIONS: &[(&str, usize)] = &[
    ("control", 1),
    ("telemetry", 1),
    ("worker", 2),
    ("sensor-model", 1),
];

#[test]
fn batch_json_shows_every_partition() {
    if !kvm_or_skip("batch_json_shows_every_partition") {
        return;
    }
    let _kvm = kvm_lock();
    let demo = Demo::start();
    let link = demo.link();
    let out = hv_console(&[
        "--batch",
        "--format",
        "json",
        "--connect",
        &link,
        "--interval",
        "500",
        "--count",
        "3",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "hv console failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let snaps: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect();
    assert_eq!(snaps.len(), 3, "{stdout}");
    let mut last_ms = 0;
    for (i, s) in snaps.iter().enumerate() {
        assert_eq!(s["seq"], i as u64);
        assert_eq!(s["system"], "demo");
        let ms = s["elapsed_ms"].as_u64().unwrap();
        assert!(ms > last_ms, "elapsed_ms must grow: {stdout}");
        last_ms = ms;
        let parts = s["partitions"].as_array().unwrap();
        for (name, vcpus) in PARTITIONS {
            let p = parts
                .iter()
                .find(|p| p["name"] == *name)
                .unwrap_or_else(|| panic!("{name} missing from {s}"));
            assert_eq!(p["state"], "running", "{name}: {p}");
            assert_eq!(p["vcpus"].as_array().unwrap().len(), *vcpus, "{p}");
            for v in p["vcpus"].as_array().unwrap() {
                let st = v["state"].as_str().unwrap();
                assert!(["running", "halted"].contains(&st), "{name}: {v}");
            }
            if s["stats"] == true {
                let cpu = p["cpu_pct"].as_f64().unwrap();
                assert!(
                    (0.0..=100.0 * *vcpus as f64).contains(&cpu),
                    "{name}: CPU % {cpu}"
                );
            }
        }
    }
    // With counters: control's 1 kHz timer (vector 32) is seen at a plausible rate over the run.
    if snaps[0]["stats"] == true {
        let total = |s: &Value| {
            s["interrupts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["partition"] == "control" && i["vector"] == 32)
                .and_then(|i| i["total"].as_u64())
                .unwrap_or_else(|| panic!("no timer vector for control in {s}"))
        };
        let secs = (snaps[2]["elapsed_ms"].as_u64().unwrap()
            - snaps[0]["elapsed_ms"].as_u64().unwrap()) as f64
            / 1000.0;
        let rate = (total(&snaps[2]) - total(&snaps[0])) as f64 / secs;
        eprintln!("control timer rate over {secs:.2} s: {rate:.0}/s (configured 1000/s)");
        assert!((500.0..=1500.0).contains(&rate), "timer rate {rate}/s");
        // Batch mode follows the trace for the latency, as the interactive console does.
        let last = snaps.last().unwrap();
        let timer = last["interrupts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["partition"] == "control" && i["vector"] == 32)
            .unwrap();
        assert!(
            timer["latency"]["p99_ns"].as_u64().is_some(),
            "no latency for control's timer: {timer}"
        );
    } else {
        eprintln!("NOTE: the agent has no partitions.stats; rates not checked");
    }

    // CSV: a header, then one row per partition (and per vector) of each snapshot.
    let out = hv_console(&[
        "--batch",
        "--format",
        "csv",
        "--connect",
        &link,
        "--interval",
        "200",
        "--count",
        "1",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let mut lines = text.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("kind,seq,elapsed_ms,partition,state")
    );
    let rows: Vec<&str> = lines.filter(|l| l.starts_with("partition,")).collect();
    assert_eq!(rows.len(), PARTITIONS.len(), "{text}");
    assert!(rows[0].starts_with("partition,0,"), "{text}");
    assert!(
        rows.iter().any(|r| r.contains(",worker,running,2,")),
        "{text}"
    );
}

#[test]
fn without_a_running_system_it_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hv"))
        .args(["console", "--batch", "--count", "1"])
        .env("XDG_RUNTIME_DIR", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no hvdk system is running"), "{err}");
    // Interactive mode needs a terminal.
    let out = Command::new(env!("CARGO_BIN_EXE_hv"))
        .args(["console", "--connect", "unix:/nonexistent/l.sock"])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a terminal"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A tmux session running a command; killed on drop.
struct Tmux {
    name: String,
}

impl Tmux {
    fn available() -> bool {
        Command::new("tmux")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    fn start(cmd: &str, dir: &Path) -> Tmux {
        Tmux::start_sized(cmd, dir, 120)
    }

    /// A session `width` columns wide (40 rows).
    fn start_sized(cmd: &str, dir: &Path, width: u16) -> Tmux {
        static NEXT: AtomicU16 = AtomicU16::new(0);
        let name = format!(
            "hvc-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        // A tmux server per session (-L): one test's last kill-session never races another's
        // new-session on a shared server.
        let status = Command::new("tmux")
            .args([
                "-L",
                &name,
                "new-session",
                "-d",
                "-s",
                &name,
                "-x",
                &width.to_string(),
                "-y",
                "40",
            ])
            .arg(cmd)
            .current_dir(dir)
            .env_remove("TMUX")
            .status()
            .expect("tmux new-session");
        assert!(status.success());
        Tmux { name }
    }

    fn capture(&self) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.name, "capture-pane", "-p", "-t", &self.name])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &str) {
        let status = Command::new("tmux")
            .args(["-L", &self.name, "send-keys", "-t", &self.name, keys])
            .status()
            .expect("tmux send-keys");
        assert!(status.success());
    }

    /// The partitions-table row of `name` on screen, if shown.
    fn row(&self, name: &str) -> Option<String> {
        self.capture()
            .lines()
            .find(|l| l.contains(&format!(" {name} ")) && l.starts_with('│'))
            .map(str::to_owned)
    }

    fn wait_row(&self, name: &str, needle: &str) {
        assert!(
            wait_until(GUARD, || self.row(name).is_some_and(|r| r.contains(needle))),
            "the {name} row never showed {needle:?}; screen:\n{}",
            self.capture()
        );
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.name, "kill-server"])
            .status();
    }
}

#[test]
fn tmux_console_pauses_and_resumes_a_partition() {
    if !kvm_or_skip("tmux_console_pauses_and_resumes_a_partition") {
        return;
    }
    if !Tmux::available() {
        eprintln!(
            "SKIPPED tmux_console_pauses_and_resumes_a_partition: tmux is not installed (apt-get install tmux)"
        );
        return;
    }
    let _kvm = kvm_lock();
    let demo = Demo::start();
    let hv: PathBuf = env!("CARGO_BIN_EXE_hv").into();
    let cmd = format!(
        "{} console --connect {} --interval 200; sleep 30",
        hv.display(),
        demo.link()
    );
    let tmux = Tmux::start(&cmd, demo.dir.path());
    tmux.wait_row("control", "running");
    assert!(tmux.capture().contains("hv console — demo"));
    // control is the first row and selected: p pauses it, r resumes it.
    tmux.keys("p");
    tmux.wait_row("control", "paused");
    tmux.wait_row("telemetry", "running");
    tmux.keys("r");
    tmux.wait_row("control", "running");
    // The event log shows the state changes; ? opens the help; q quits.
    assert!(
        wait_until(GUARD, || tmux.capture().contains("control: paused")),
        "{}",
        tmux.capture()
    );
    // t records the trace into the working directory; t again saves it.
    tmux.keys("t");
    assert!(
        wait_until(GUARD, || tmux.capture().contains("● REC hv-trace-demo-")),
        "{}",
        tmux.capture()
    );
    tmux.keys("t");
    assert!(
        wait_until(GUARD, || tmux.capture().contains("trace saved to")),
        "{}",
        tmux.capture()
    );
    let traces: Vec<PathBuf> = std::fs::read_dir(demo.dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "hvt"))
        .collect();
    assert_eq!(traces.len(), 1, "{traces:?}");
    let bytes = std::fs::read(&traces[0]).unwrap();
    assert_eq!(
        &bytes[..4],
        b"HVTH",
        "a trace file starts with its header chunk"
    );
    tmux.keys("?");
    assert!(
        wait_until(GUARD, || tmux.capture().contains("Keys")),
        "{}",
        tmux.capture()
    );
    // Any key closes the help (wait for it: Escape followed at once by q reads as Alt-q).
    tmux.keys("Escape");
    assert!(
        wait_until(GUARD, || !tmux.capture().contains("Keys")),
        "{}",
        tmux.capture()
    );
    tmux.keys("q");
    assert!(
        wait_until(GUARD, || !tmux.capture().contains("hv console — demo")),
        "q did not quit:\n{}",
        tmux.capture()
    );
}

#[test]
fn tmux_console_keeps_focus_and_typing_apart_and_logs_debugger_stops() {
    let test = "tmux_console_keeps_focus_and_typing_apart_and_logs_debugger_stops";
    if !kvm_or_skip(test) {
        return;
    }
    if !Tmux::available() {
        eprintln!("SKIPPED {test}: tmux is not installed (apt-get install tmux)");
        return;
    }
    let _kvm = kvm_lock();
    let demo = Demo::start();
    let hv: PathBuf = env!("CARGO_BIN_EXE_hv").into();
    let cmd = format!(
        "{} console --connect {} --interval 200; sleep 30",
        hv.display(),
        demo.link()
    );
    // Wide enough for the event log's lines to fit unwrapped.
    let tmux = Tmux::start_sized(&cmd, demo.dir.path(), 240);
    tmux.wait_row("control", "running");
    let shows = |needle: &str| {
        assert!(
            wait_until(GUARD, || tmux.capture().contains(needle)),
            "never showed {needle:?}:\n{}",
            tmux.capture()
        );
    };
    // Tab into the console pane focuses it; it does not type.
    for _ in 0..3 {
        tmux.keys("Tab");
    }
    shows("Console: control (c to type) ◆");
    shows("c/Enter type into guest");
    // j and k scroll, and q still quits later: nothing of it went to the guest.
    tmux.keys("j");
    tmux.keys("k");
    // c starts typing; the footer and the title say so; Esc stops it.
    tmux.keys("c");
    shows("TYPING → guest, Esc stops");
    shows("typing into control's UART");
    tmux.keys("Escape");
    shows("Console: control (c to type) ◆");
    // A debugger stop reaches the event log: gdb attaches, stops at a breakpoint, detaches.
    let gdb = Command::new("gdb")
        .args(["-nx", "-batch"])
        .args(["-ex", &format!("target remote :{}", demo.gdb_port)])
        .args(["-ex", "break on_tick", "-ex", "continue", "-ex", "detach"])
        .arg(guests::image("control"))
        .stdin(Stdio::null())
        .output()
        .expect("run gdb");
    let gdb_out = String::from_utf8_lossy(&gdb.stdout);
    assert!(
        gdb_out.contains("on_tick"),
        "gdb did not stop in on_tick:\n{gdb_out}"
    );
    shows("control: stopped in debugger (debugger attached to the partition)");
    // `break` uses int3, or a debug register where KVM cannot trap int3.
    shows("control: stopped in debugger (breakpoint");
    shows("control: running (debugger detached from the partition)");
    // Out of the typing mode, q quits.
    tmux.keys("q");
    assert!(
        wait_until(GUARD, || !tmux.capture().contains("hv console — demo")),
        "q did not quit:\n{}",
        tmux.capture()
    );
}

#[test]
fn tmux_console_survives_a_restart_of_the_system() {
    if !kvm_or_skip("tmux_console_survives_a_restart_of_the_system") {
        return;
    }
    if !Tmux::available() {
        eprintln!(
            "SKIPPED tmux_console_survives_a_restart_of_the_system: tmux is not installed (apt-get install tmux)"
        );
        return;
    }
    let _kvm = kvm_lock();
    let mut demo = Demo::start();
    let link = demo.link();
    let hv: PathBuf = env!("CARGO_BIN_EXE_hv").into();
    let cmd = format!(
        "{} console --connect {link} --interval 200; sleep 30",
        hv.display()
    );
    let tmux = Tmux::start(&cmd, Path::new("/"));
    assert!(
        wait_until(GUARD, || tmux
            .row("worker")
            .is_some_and(|r| r.contains("running"))),
        "{}\n{}",
        tmux.capture(),
        demo.report()
    );
    // The system goes away: the console says so and keeps retrying.
    let dir = demo.stop();
    assert!(
        wait_until(GUARD, || tmux.capture().contains("LINK DOWN")),
        "{}",
        tmux.capture()
    );
    // A new instance on the same link: the console reconnects by itself.
    let mut demo = Demo::start_in(dir);
    assert!(
        wait_until(GUARD, || {
            let screen = tmux.capture();
            screen.contains("link up again") && !screen.contains("LINK DOWN")
        }),
        "{}\n{}",
        tmux.capture(),
        demo.report()
    );
    tmux.wait_row("control", "running");
}

#[test]
fn tmux_hv_run_opens_the_console_with_its_gdb_ports() {
    if !kvm_or_skip("tmux_hv_run_opens_the_console_with_its_gdb_ports") {
        return;
    }
    if !Tmux::available() {
        eprintln!(
            "SKIPPED tmux_hv_run_opens_the_console_with_its_gdb_ports: tmux is not installed (apt-get install tmux)"
        );
        return;
    }
    let _kvm = kvm_lock();
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_gdb_base(&[1, 1, 2, 1]);
    let hv: PathBuf = env!("CARGO_BIN_EXE_hv").into();
    // On a terminal, `hv run` shows the console instead of printing guest lines.
    let cmd = format!(
        "{} run {DEMO} --gdb-port {port} --link unix:{}/l.sock; sleep 30",
        hv.display(),
        dir.path().display()
    );
    let tmux = Tmux::start(&cmd, dir.path());
    tmux.wait_row("sensor-model", "running");
    // The console follows the trace live: interrupt latencies (from IRQ raise/inject records).
    assert!(
        wait_until(GUARD, || {
            let screen = tmux.capture();
            screen.contains("LIVE TRACE") && screen.contains("p99")
        }),
        "no live trace:\n{}",
        tmux.capture()
    );
    // The port table would be hidden by the console: its event log shows it.
    let line = format!("gdb: control on :{port}");
    assert!(
        wait_until(GUARD, || tmux.capture().contains(&line)),
        "{}",
        tmux.capture()
    );
    // q closes the console and stops the system (back to the shell's sleep).
    tmux.keys("q");
    assert!(
        wait_until(GUARD, || !tmux.capture().contains("Partitions")),
        "q did not end hv run:\n{}",
        tmux.capture()
    );
    assert!(
        wait_until(GUARD, || std::fs::metadata(dir.path().join("l.sock"))
            .is_err()),
        "the host link of the stopped system is still there"
    );
}
