//! Benchmark: the terminal console's own CPU use while it redraws at 10 Hz and samples a system of
//! 8 partitions, measured against its peer in the same run, batch mode polling at the same rate
//! (same link traffic, no drawing). The console runs for real, in a tmux pane.
//!
//! Run: `cargo bench --bench console` (goal: the console ≤ 5% of one core). Needs /dev/kvm and
//! tmux; says so and exits otherwise.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(10);
const HV: &str = env!("CARGO_BIN_EXE_hv");

/// CPU seconds (user + system) used so far by process `pid`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime is the 12th, stime 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

/// Share of one core that `pid` used over `WINDOW`, in percent.
fn measure(pid: u32) -> f64 {
    let (c0, t0) = (cpu_seconds(pid), Instant::now());
    std::thread::sleep(WINDOW);
    (cpu_seconds(pid) - c0) / t0.elapsed().as_secs_f64() * 100.0
}

struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    if std::fs::File::open("/dev/kvm").is_err() {
        println!("console bench skipped: /dev/kvm is missing or not accessible");
        return;
    }
    if Command::new("tmux").arg("-V").output().is_err() {
        println!("console bench skipped: tmux is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // 8 partitions: pairs of echo guests on their own channels (they idle in hlt).
    let mut toml = String::from("[system]\nname = \"bench8\"\n");
    for i in 0..8 {
        toml.push_str(&format!(
            "[[partition]]\nname = \"p{i}\"\nimage = \"{}/echo.elf\"\nmemory = \"16M\"\nvcpus = 1\n",
            guests::GUESTS_DIR
        ));
    }
    for pair in 0..4 {
        toml.push_str(&format!(
            "[[channel]]\nname = \"loop{pair}\"\nendpoints = [\"p{}\", \"p{}\"]\nsize = \"64K\"\nvector = 48\n",
            2 * pair,
            2 * pair + 1
        ));
    }
    let system = dir.path().join("bench8.toml");
    std::fs::write(&system, toml).unwrap();
    let link = format!("unix:{}", dir.path().join("l.sock").display());
    let mut run = Command::new(HV)
        .args(["run", "--quiet", "--no-gdb-bridge", "--link", &link])
        .arg(&system)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hv run");
    let stderr = BufReader::new(run.stderr.take().unwrap());
    let _run = Reaper(run);
    for line in stderr.lines().map_while(Result::ok) {
        if line.contains("host link:") {
            break;
        }
    }

    let check = Command::new(HV)
        .args([
            "console",
            "--batch",
            "--count",
            "1",
            "--interval",
            "100",
            "--connect",
            &link,
        ])
        .output()
        .expect("batch mode");
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(
        text.contains("\"name\":\"p7\"") && !text.contains("crashed") && !text.contains("exited"),
        "the 8-partition system is not running: {text}"
    );

    // The console, for real, in a 160x48 tmux pane.
    let session = format!("hv-console-bench-{}", std::process::id());
    let ok = Command::new("tmux")
        .args(["new-session", "-d", "-s", &session, "-x", "160", "-y", "48"])
        .arg(format!(
            "exec {HV} console --connect {link} --interval 1000"
        ))
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "tmux new-session failed");
    let pid_text = Command::new("tmux")
        .args(["display-message", "-p", "-t", &session, "#{pane_pid}"])
        .output()
        .unwrap();
    let pid: u32 = String::from_utf8_lossy(&pid_text.stdout)
        .trim()
        .parse()
        .expect("pane pid");
    std::thread::sleep(Duration::from_secs(2));
    let console = measure(pid);
    let _ = Command::new("tmux")
        .args(["kill-session", "-t", &session])
        .status();

    // The peer: batch mode sampling at 10 Hz (the console's state rate), printing to nowhere.
    let batch = Command::new(HV)
        .args([
            "console",
            "--batch",
            "--interval",
            "100",
            "--connect",
            &link,
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("start batch mode");
    let batch = Reaper(batch);
    std::thread::sleep(Duration::from_secs(2));
    let peer = measure(batch.0.id());

    println!(
        "console at 10 Hz, 8 partitions: {console:.2}% of one core (goal <= 5%); \
         batch mode polling at 10 Hz: {peer:.2}%; ratio console/batch {:.2}",
        console / peer.max(0.01)
    );
}
