//! `hv run` as a child process on a private link, for end-to-end tests: its stdout lines (the
//! guests' `[<partition>] …` lines) and its stderr log are collected; dropping it stops hv.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hv_link::LinkAddr;

use super::wait_until;

/// How long hv may take to come up, and a waited-for line to appear.
const PATIENCE: Duration = Duration::from_secs(120);

/// A running `hv run --no-console` (stopped with SIGTERM on drop).
pub struct HvRun {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    log: Arc<Mutex<String>>,
    link: LinkAddr,
    base: Option<u16>,
    dir: tempfile::TempDir,
}

impl HvRun {
    /// Runs `system` with the gdb bridge on a free base port for partitions of `vcpus[k]` vCPUs
    /// (see [`super::free_gdb_base`]); returns once the port table is printed.
    pub fn with_bridge(system: &Path, vcpus: &[u16]) -> HvRun {
        let base = super::free_gdb_base(vcpus);
        let hv = HvRun::spawn(system, &["--gdb-port", &base.to_string()], Some(base));
        let port = base.to_string();
        assert!(
            wait_until(PATIENCE, || hv.log.lock().unwrap().contains(&port)),
            "no port table from hv run:\n{}",
            hv.log()
        );
        hv
    }

    /// Runs `system` without the gdb bridge; returns once its host link answers.
    pub fn without_bridge(system: &Path) -> HvRun {
        let hv = HvRun::spawn(system, &["--no-gdb-bridge"], None);
        assert!(
            wait_until(PATIENCE, || hv_link::connect(&hv.link).is_ok()),
            "hv run's host link never came up:\n{}",
            hv.log()
        );
        hv
    }

    fn spawn(system: &Path, args: &[&str], base: Option<u16>) -> HvRun {
        let dir = tempfile::tempdir().unwrap();
        let link = LinkAddr::Unix(dir.path().join("link.sock"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_hv"))
            .arg("run")
            .arg(system)
            .args(["--no-console", "--link", &link.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start hv run");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        HvRun {
            child,
            lines,
            log,
            link,
            base,
            dir,
        }
    }

    /// The gdb bridge's base port (partition k on base+k).
    pub fn base(&self) -> u16 {
        self.base
            .expect("hv run was started without the gdb bridge")
    }

    /// The host link.
    pub fn link(&self) -> &LinkAddr {
        &self.link
    }

    /// A private directory that lives as long as hv (for marker files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// hv's stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// hv's stdout lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// How many stdout lines start with `prefix` (e.g. `[control]`).
    pub fn count(&self, prefix: &str) -> usize {
        let lines = self.lines.lock().unwrap();
        lines.iter().filter(|l| l.starts_with(prefix)).count()
    }

    /// Waits until `prefix` has printed `n` lines in all.
    pub fn wait_count(&self, prefix: &str, n: usize) {
        assert!(
            wait_until(PATIENCE, || self.count(prefix) >= n),
            "{prefix} printed {} lines, expected {n}; output:\n{}",
            self.count(prefix),
            self.lines.lock().unwrap().join("\n")
        );
    }

    /// Waits until `prefix` prints `more` lines beyond what it has printed now.
    pub fn prints_on(&self, prefix: &str, more: usize) {
        self.wait_count(prefix, self.count(prefix) + more);
    }

    /// Stops hv (SIGTERM) and waits for it.
    pub fn stop(&mut self) {
        // SAFETY: kill only sends a signal to our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Drop for HvRun {
    fn drop(&mut self) {
        self.stop();
    }
}
