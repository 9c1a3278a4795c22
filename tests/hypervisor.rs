//! End-to-end tests of the hypervisor with real KVM partitions and real guests built from source.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use common::{Consoles, boot, kvm_lock, kvm_or_skip, wait_until};
use hv_core::trace::{TraceKind, TraceRecord, class};
use hv_core::{PartitionLifecycle, VcpuThreadState};

const DEMO_PAIR: &str = common::CONTROL_AND_TELEMETRY;

/// Guest output of `hv run`, grouped by partition.
fn run_hv(args: &[&str]) -> (BTreeMap<String, Vec<String>>, String, bool) {
    let out = Command::new(env!("CARGO_BIN_EXE_hv"))
        .args(args)
        .output()
        .expect("run hv");
    let mut lines: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some((name, text)) = line.strip_prefix('[').and_then(|l| l.split_once("] ")) {
            lines
                .entry(name.to_owned())
                .or_default()
                .push(text.to_owned());
        }
    }
    (
        lines,
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.success(),
    )
}

/// Primes in each block of 10,000 numbers below 200,000, as the worker counts them.
const WORKER_PRIMES: [u32; 20] = [
    1229, 1033, 983, 958, 930, 924, 878, 902, 876, 879, 861, 848, 858, 851, 838, 835, 814, 845,
    828, 814,
];

#[test]
fn demo_console_output_is_exact() {
    if !kvm_or_skip("demo_console_output_is_exact") {
        return;
    }
    let _kvm = kvm_lock();
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/demo.toml");
    let (lines, stderr, ok) = run_hv(&["run", demo, "--time-limit", "3.6"]);
    assert!(ok, "hv run failed: {stderr}");
    // The sensor driver's lines are checked in tests/devices.rs.
    let control: Vec<&String> = lines["control"]
        .iter()
        .filter(|l| !l.starts_with("control: sensor"))
        .collect();
    assert_eq!(
        control[..5],
        [
            "control: partition 0, 1 vCPU, 16 MiB, channel telemetry",
            "control: uptime 1 s, 1000 ticks",
            "control: sent telemetry #1",
            "control: uptime 2 s, 2000 ticks",
            "control: sent telemetry #2",
        ],
        "stderr: {stderr}"
    );
    assert_eq!(
        lines["telemetry"][..3],
        [
            "telemetry: partition 1, listening on channel telemetry (doorbell 48)",
            "telemetry: #1 ticks=1000 uptime=1 s",
            "telemetry: #2 ticks=2000 uptime=2 s",
        ]
    );
    // The worker prints its blocks in order, as many as it got through in the time limit (its
    // summary and IPI lines are checked in smp_worker_uses_both_vcpus).
    let worker = &lines["worker"];
    assert_eq!(worker[0], "worker: partition 2, 2 vCPU, 20 blocks of 10000");
    assert!(worker.len() > 1, "no worker block printed");
    for (block, line) in worker[1..].iter().take(WORKER_PRIMES.len()).enumerate() {
        assert_eq!(
            *line,
            format!(
                "worker: vcpu {} block {block} primes {}",
                block % 2,
                WORKER_PRIMES[block]
            )
        );
    }
    assert!(stderr.contains("time limit reached"), "{stderr}");
}

/// The vector and period control programs (`DEMO_TIMER_VECTOR`, `DEMO_TICK_NS` in demo.h).
const DEMO_TIMER_VECTOR: usize = 32;
const DEMO_TICK_NS: u64 = 1_000_000;

/// One reading of a partition's timer bookkeeping and of its virtual clock (`HV_TIME_NS`).
struct TimerReading {
    /// Timer periods accounted for: deadlines that raised the vector plus those coalesced.
    periods: u64,
    /// Deadlines that raised the vector.
    fired: u64,
    /// Timer-vector interrupts injected into vCPU 0.
    delivered: u64,
    /// The partition's uptime, as the guest reads it with HV_TIME_NS.
    uptime_ns: u64,
}

/// Reads the timer's counters on both sides of the clock, retrying until at most one period
/// passed in between, so `periods` is the count at `uptime_ns` to within one period however
/// this thread is scheduled.
fn read_timer(partition: &hv_core::PartitionHandle) -> TimerReading {
    use std::sync::atomic::Ordering::Relaxed;
    let stats = partition.timer_stats();
    let periods = || stats.fired.load(Relaxed) + stats.missed.load(Relaxed);
    for _ in 0..1000 {
        let delivered = partition.vcpus()[0].stats.irqs_by_vector[DEMO_TIMER_VECTOR].load(Relaxed);
        let fired = stats.fired.load(Relaxed);
        let before = periods();
        let uptime_ns = partition.uptime_ns();
        if periods() - before <= 1 {
            return TimerReading {
                periods: before,
                fired,
                delivered,
                uptime_ns,
            };
        }
    }
    panic!("the timer counters never held still across a clock read");
}

/// Counted, not timed: the timer's own bookkeeping (deadlines fired plus deadlines coalesced
/// because the host was late) must account for exactly one period per millisecond of the
/// partition's virtual time, and the guest's tick count must match what was delivered. A loaded
/// host delays and coalesces ticks but cannot change these counts; a timer at the wrong rate does.
#[test]
fn timer_interrupts_arrive_at_the_configured_rate() {
    if !kvm_or_skip("timer_interrupts_arrive_at_the_configured_rate") {
        return;
    }
    let _kvm = kvm_lock();
    let (system, consoles, _file) = boot(DEMO_PAIR);
    consoles.wait_for("control", "uptime 1 s,", Duration::from_secs(10));
    let control = system.handle("control").unwrap();
    let start = read_timer(&control);
    // control prints this line once its handler has counted 3000 ticks.
    consoles.wait_for("control", "uptime 3 s, 3000 ticks", Duration::from_secs(30));
    let end = read_timer(&control);

    let periods = end.periods - start.periods;
    let expected = (end.uptime_ns - start.uptime_ns) / DEMO_TICK_NS;
    assert!(
        periods.abs_diff(expected) <= expected / 20 + 2,
        "{periods} timer periods accounted in {expected} ms of partition time (1 kHz timer)"
    );
    // Every tick the guest counted was delivered, and every delivery was a timer deadline
    // (control takes no other interrupt on this vector; the +1 is a raise not yet counted).
    assert!(end.delivered >= 3000, "{} ticks delivered", end.delivered);
    assert!(
        end.delivered <= end.fired + 1,
        "{} ticks delivered but only {} fired",
        end.delivered,
        end.fired
    );
    assert!(end.periods >= end.fired && start.periods <= end.periods);
}

#[test]
fn ipc_messages_make_the_round_trip() {
    if !kvm_or_skip("ipc_messages_make_the_round_trip") {
        return;
    }
    let _kvm = kvm_lock();
    let (system, consoles, _file) = boot(
        r#"
[[partition]]
name = "hypercalls"
image = "{guests}/hypercalls.elf"

[[partition]]
name = "echo"
image = "{guests}/echo.elf"

[[channel]]
name = "loop"
endpoints = ["hypercalls", "echo"]
"#,
    );
    let hypercalls = system.handle("hypercalls").unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || matches!(
            hypercalls.state(),
            PartitionLifecycle::Exited(_)
        )),
        "hypercalls guest did not finish: {:?}",
        consoles.lines("hypercalls")
    );
    // The verdict is the last line; its console event may trail the state change.
    assert!(
        wait_until(Duration::from_secs(10), || consoles
            .lines("hypercalls")
            .last()
            .is_some_and(
                |l| l == "hypercalls: all ok" || l.ends_with(" failed")
            )),
        "no verdict: {:?}",
        consoles.lines("hypercalls")
    );
    let lines = consoles.lines("hypercalls");
    let failures: Vec<&String> = lines.iter().filter(|l| l.contains("FAIL")).collect();
    assert!(failures.is_empty(), "{failures:#?}");
    for check in [
        "IPC_SEND",
        "IPC_RECEIVE",
        "IPC_ECHO",
        "IPC_DOORBELL",
        "TIMER_PERIODIC",
        "SEND_IPI",
        "IDLE",
    ] {
        assert!(
            lines
                .iter()
                .any(|l| l == &format!("hypercalls: ok {check}")),
            "missing ok {check}"
        );
    }
    assert_eq!(lines.last().unwrap(), "hypercalls: all ok");
    assert_eq!(hypercalls.state(), PartitionLifecycle::Exited(0));
}

#[test]
fn smp_worker_uses_both_vcpus() {
    if !kvm_or_skip("smp_worker_uses_both_vcpus") {
        return;
    }
    let _kvm = kvm_lock();
    let (system, consoles, _file) = boot(
        r#"
[[partition]]
name = "worker"
image = "{guests}/worker.elf"
memory = "32M"
vcpus = 2
"#,
    );
    let line = consoles.wait_for("worker", "vCPUs ran", Duration::from_secs(60));
    assert_eq!(
        line,
        "worker: 2 vCPUs ran, progress 10 10, 17984 primes below 200000"
    );
    assert_eq!(WORKER_PRIMES.iter().sum::<u32>(), 17984);
    let lines = consoles.lines("worker");
    for (block, primes) in WORKER_PRIMES.iter().enumerate() {
        assert_eq!(
            lines[1 + block],
            format!("worker: vcpu {} block {block} primes {primes}", block % 2)
        );
    }
    let worker = system.handle("worker").unwrap();
    for vcpu in worker.vcpus() {
        assert!(
            vcpu.stats
                .guest_ns
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0
        );
    }

    // IPIs: vCPU 0 pings vCPU 1, whose handler answers; the guest sees the answer and the
    // hypervisor injected the vector into each vCPU.
    let answer = consoles.wait_for("worker", "an ipi", Duration::from_secs(30));
    assert_eq!(answer, "worker: vcpu 1 answered an ipi");
    let lines = consoles.lines("worker");
    let ran = lines.iter().position(|l| *l == line).unwrap();
    assert_eq!(lines[ran + 1], answer, "the answer follows the summary");
    const WORKER_IPI_VECTOR: usize = 34;
    let injected = |vcpu: usize, vector: usize| {
        worker.vcpus()[vcpu].stats.irqs_by_vector[vector].load(std::sync::atomic::Ordering::Relaxed)
    };
    assert!(
        injected(1, WORKER_IPI_VECTOR) >= 1,
        "ping not injected into vCPU 1"
    );
    assert!(
        injected(0, WORKER_IPI_VECTOR) >= 1,
        "answer not injected into vCPU 0"
    );
    // vCPU 0 owns the partition's timer and relays each tick to vCPU 1 by IPI: vCPU 1 takes
    // timer-vector interrupts although it never programs the timer.
    consoles.wait_for("worker", "idle 1 s,", Duration::from_secs(30));
    assert!(
        injected(1, DEMO_TIMER_VECTOR) > 0,
        "no tick relayed to vCPU 1"
    );
}

/// Open intervals of each partition's windows, from the scheduler's edge log.
fn windows(edges: &[hv_core::scheduler::WindowEdge]) -> BTreeMap<usize, Vec<(u64, u64)>> {
    let mut open: BTreeMap<usize, u64> = BTreeMap::new();
    let mut out: BTreeMap<usize, Vec<(u64, u64)>> = BTreeMap::new();
    for edge in edges {
        if edge.open {
            open.insert(edge.partition, edge.at_ns);
        } else if let Some(start) = open.remove(&edge.partition) {
            out.entry(edge.partition)
                .or_default()
                .push((start, edge.at_ns));
        }
    }
    out
}

#[test]
fn time_partitioned_schedule_keeps_vcpus_inside_their_windows() {
    if !kvm_or_skip("time_partitioned_schedule_keeps_vcpus_inside_their_windows") {
        return;
    }
    let _kvm = kvm_lock();
    let file = common::system_file(&format!(
        "{DEMO_PAIR}{}",
        r#"
[schedule]
major_frame_us = 20000

[[schedule.window]]
partition = "control"
start_us = 0
duration_us = 8000

[[schedule.window]]
partition = "telemetry"
start_us = 10000
duration_us = 6000
"#
    ));
    let mut system = hv_core::System::new(common::load(&file.path)).unwrap();
    for partition in system.handles() {
        for vcpu in partition.vcpus() {
            vcpu.trace.set_classes(class::EXITS | class::SCHED);
        }
    }
    let consoles = Consoles::collect(&system);
    system.start().unwrap();
    consoles.wait_for("control", "uptime 1 s", Duration::from_secs(20));
    let mut records: Vec<TraceRecord> = Vec::new();
    for partition in system.handles() {
        for vcpu in partition.vcpus() {
            vcpu.trace.set_classes(0);
            vcpu.trace.drain(&mut records);
        }
    }
    // One snapshot of the log for the windows and the edges: a second, later one could end with
    // the close of a window that was still open (so missing from `windows`) in the first.
    let log = system.schedule_log();
    let windows = windows(&log);
    assert!(
        windows[&0].len() > 20 && windows[&1].len() > 20,
        "windows ran: {windows:?}"
    );
    // Edges are stamped before the flag flips, so no entry can precede its window's opening.
    // A vCPU that checked its window just before it closed may still enter a moment later; a
    // host stall of half the gap between control's windows (12 ms) would be needed to look like
    // a violation, which is what this check catches.
    const CLOSE_SLACK: u64 = 6_000_000;
    let (first_edge, last_edge) = (log.first().unwrap().at_ns, log.last().unwrap().at_ns);
    let mut checked = 0;
    for record in records
        .iter()
        .filter(|r| r.timestamp > first_edge && r.timestamp < last_edge)
        .filter(|r| r.kind == TraceKind::VmEntry as u16)
    {
        let inside = windows[&(record.partition as usize)]
            .iter()
            .any(|(open, close)| {
                record.timestamp >= *open && record.timestamp <= close + CLOSE_SLACK
            });
        if !inside {
            let own = &windows[&(record.partition as usize)];
            let before = own.iter().rev().find(|(open, _)| *open <= record.timestamp);
            panic!(
                "VM entry outside a window: {record:?}; the last window before it {before:?} \
                 closed {:?} ns earlier (slack {CLOSE_SLACK})",
                before.map(|(_, close)| record.timestamp.saturating_sub(*close))
            );
        }
        checked += 1;
    }
    assert!(checked > 100, "only {checked} VM entries checked");
    let schedule_outs = records
        .iter()
        .filter(|r| r.kind == TraceKind::ScheduleOut as u16)
        .count();
    assert!(
        schedule_outs > 20,
        "vCPUs were parked {schedule_outs} times"
    );
}

#[test]
fn a_crashing_guest_is_marked_crashed_and_the_others_keep_running() {
    if !kvm_or_skip("a_crashing_guest_is_marked_crashed_and_the_others_keep_running") {
        return;
    }
    let _kvm = kvm_lock();
    let (system, consoles, _file) = boot(&format!(
        "{DEMO_PAIR}{}",
        r#"
[[partition]]
name = "crasher"
image = "{guests}/crasher.elf"
"#
    ));
    let crasher = system.handle("crasher").unwrap();
    assert!(wait_until(Duration::from_secs(10), || matches!(
        crasher.state(),
        PartitionLifecycle::Crashed(_)
    )));
    let PartitionLifecycle::Crashed(report) = crasher.state() else {
        unreachable!()
    };
    assert_eq!(report.reason, "triple fault");
    assert!(
        report.registers.is_some_and(|r| r.rip >= 0x10_0000),
        "{report}"
    );
    assert!(crasher.vcpus()[0].state() == VcpuThreadState::Crashed);
    let before = consoles.lines("control").len();
    consoles.wait_count("control", before + 2, Duration::from_secs(10));
    consoles.wait_for("telemetry", "#2 ticks", Duration::from_secs(10));

    // Reset brings it back (and it crashes again, as it should).
    crasher.reset().unwrap();
    assert!(wait_until(Duration::from_secs(10), || {
        consoles
            .lines("crasher")
            .iter()
            .filter(|l| l.contains("about to crash"))
            .count()
            == 2
    }));
    assert!(wait_until(Duration::from_secs(10), || matches!(
        crasher.state(),
        PartitionLifecycle::Crashed(_)
    )));
}

#[test]
fn pause_and_resume_stop_only_that_partition() {
    if !kvm_or_skip("pause_and_resume_stop_only_that_partition") {
        return;
    }
    let _kvm = kvm_lock();
    let (system, consoles, _file) = boot(&format!(
        "{DEMO_PAIR}{}",
        r#"
[[partition]]
name = "worker"
image = "{guests}/worker.elf"
memory = "32M"
vcpus = 2
"#
    ));
    consoles.wait_for("control", "uptime 1 s", Duration::from_secs(10));
    let control = system.handle("control").unwrap();
    control.pause().unwrap();
    assert_eq!(control.state(), PartitionLifecycle::Paused);
    assert_eq!(control.vcpus()[0].state(), VcpuThreadState::Paused);
    // Console lines reach the collector in the order they were published: once worker has
    // printed after the pause, every line control printed before it has been collected.
    let worker_lines = consoles.lines("worker").len();
    consoles.wait_count("worker", worker_lines + 1, Duration::from_secs(20));
    let control_lines = consoles.lines("control").len();
    let worker_lines = consoles.lines("worker").len();
    consoles.wait_count("worker", worker_lines + 2, Duration::from_secs(20));
    assert_eq!(
        consoles.lines("control").len(),
        control_lines,
        "paused partition printed"
    );
    control.resume().unwrap();
    consoles.wait_count("control", control_lines + 1, Duration::from_secs(10));
}

#[test]
fn reset_in_the_middle_of_hypercalls_starts_the_guest_afresh() {
    if !kvm_or_skip("reset_in_the_middle_of_hypercalls_starts_the_guest_afresh") {
        return;
    }
    let _kvm = kvm_lock();
    // hcbench makes hypercalls back to back, so a reset nearly always lands right after one,
    // while the hypercall's result still waits in the synced registers for the next entry.
    let (system, consoles, _file) = boot(
        r#"
[[partition]]
name = "hcbench"
image = "{guests}/hcbench.elf"
"#,
    );
    consoles.wait_count("hcbench", 1, Duration::from_secs(10));
    let partition = system.handle("hcbench").unwrap();
    for round in 2..=60 {
        partition.reset().unwrap();
        // Back at its entry: it prints its first line again (not on at the old rip).
        let lines = consoles.wait_count("hcbench", round, Duration::from_secs(10));
        assert!(
            lines.iter().all(|l| l == "hcbench: ready"),
            "round {round}: {lines:?}"
        );
    }
}

#[test]
fn a_hostile_guest_runs_100000_random_operations_without_harm() {
    if !kvm_or_skip("a_hostile_guest_runs_100000_random_operations_without_harm") {
        return;
    }
    let _kvm = kvm_lock();
    let (system, consoles, _file) = boot(&format!(
        "{DEMO_PAIR}{}",
        r#"
[[partition]]
name = "random"
image = "{guests}/random.elf"
"#
    ));
    let random = system.handle("random").unwrap();
    consoles.wait_for("random", "100000 operations done", Duration::from_secs(240));
    assert!(wait_until(Duration::from_secs(5), || random.state()
        == PartitionLifecycle::Exited(0)));
    // The others are unaffected: control still ticks and telemetry still receives.
    let control = consoles.lines("control").len();
    consoles.wait_count("control", control + 2, Duration::from_secs(10));
    let telemetry = consoles.lines("telemetry").len();
    consoles.wait_count("telemetry", telemetry + 1, Duration::from_secs(10));
    let lines = consoles.lines("control");
    let seconds: Vec<&String> = lines.iter().filter(|l| l.contains("uptime")).collect();
    for (i, line) in seconds.iter().enumerate() {
        assert_eq!(
            **line,
            format!("control: uptime {} s, {} ticks", i + 1, (i + 1) * 1000)
        );
    }
}

#[test]
fn bad_system_descriptions_get_diagnostics_not_panics() {
    let file = common::system_file(
        r#"
[[partition]]
name = "a"
image = "{guests}/control.elf"

[[partition]]
name = "a"
image = "/nonexistent/x.elf"

[[channel]]
name = "c"
endpoints = ["a", "b"]
"#,
    );
    let path = file.path.to_str().unwrap();
    let (_, stderr, ok) = run_hv(&["run", path]);
    assert!(!ok);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("system.toml:7:8"), "{stderr}");
    assert!(stderr.contains("duplicate"), "{stderr}");
    assert!(stderr.contains("/nonexistent/x.elf"), "{stderr}");
    assert!(stderr.contains("\"b\""), "{stderr}");
    assert!(
        stderr.contains("not a valid system description"),
        "{stderr}"
    );
}

#[test]
fn hv_run_exits_with_status_3_when_a_partition_crashed() {
    if !kvm_or_skip("hv_run_exits_with_status_3_when_a_partition_crashed") {
        return;
    }
    let file = common::system_file(&format!(
        "{DEMO_PAIR}{}",
        r#"
[[partition]]
name = "crasher"
image = "{guests}/crasher.elf"
"#
    ));
    let out = Command::new(env!("CARGO_BIN_EXE_hv"))
        .args([
            "run",
            file.path.to_str().unwrap(),
            "--quiet",
            "--no-gdb-bridge",
        ])
        .args(["--time-limit", "2"])
        .output()
        .expect("run hv");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("crashed or exited with a nonzero code: crasher"),
        "{stderr}"
    );
    assert!(stderr.contains("time limit reached"), "{stderr}");
}

#[test]
fn images_that_are_not_guests_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let not_elf = dir.path().join("not.elf");
    std::fs::write(&not_elf, b"#!/bin/sh\necho hi\n").unwrap();
    let big = dir.path().join("big.elf");
    std::fs::copy(guests::image("control"), &big).unwrap();
    for (image, memory, expect) in [
        (not_elf.to_str().unwrap(), "16M", "ELF"),
        ("/bin/true", "16M", "executable"),
        (big.to_str().unwrap(), "2M", "stack"),
    ] {
        let file = common::system_file(&format!(
            "[[partition]]\nname = \"p\"\nimage = \"{image}\"\nmemory = \"{memory}\"\nvcpus = 16\n"
        ));
        let (_, stderr, ok) = run_hv(&["run", file.path.to_str().unwrap()]);
        assert!(!ok, "{image} was accepted");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(
            stderr.to_lowercase().contains(&expect.to_lowercase()),
            "{image}: {stderr}"
        );
    }
}

/// Every `examples/*.toml` loads without errors or warnings against the guest images this build
/// made (hv-config's own test checks everything but the images).
#[test]
fn every_example_is_valid_with_the_built_guests() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        // The examples name `../target/guests`; the images are wherever this build put them.
        let text = std::fs::read_to_string(&path).unwrap();
        let text = text.replace("../target/guests", guests::GUESTS_DIR);
        let options = hv_config::ParseOptions {
            host_cpus: Some(2),
            check_images: true,
        };
        match hv_config::SystemConfig::parse_with(&text, &path, &options) {
            Ok(system) => assert!(
                system.warnings.is_empty(),
                "{}:\n{}",
                path.display(),
                system.warnings.render()
            ),
            Err(e) => panic!("{} is invalid:\n{e}", path.display()),
        }
        checked.push(path.file_name().unwrap().to_string_lossy().into_owned());
    }
    checked.sort();
    assert!(
        checked.len() >= 2 && checked.contains(&"demo.toml".to_owned()),
        "{checked:?}"
    );
}

/// `examples/timeslice.toml` runs the demo's guests, the sensor model included: control reads
/// its first sensor sample under the time-partitioned schedule.
#[test]
fn the_timeslice_example_runs_every_demo_guest_with_the_sensor() {
    if !kvm_or_skip("the_timeslice_example_runs_every_demo_guest_with_the_sensor") {
        return;
    }
    let _kvm = kvm_lock();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/timeslice.toml"
    ))
    .unwrap()
    .replace("../target/guests", "{guests}");
    let (_system, consoles, _file) = boot(&text);
    // Emulated guests under a schedule are slow: a generous guard, no timing asserted.
    consoles.wait_for(
        "control",
        "control: sensor sample #1 = 48",
        Duration::from_secs(300),
    );
    assert!(
        !consoles
            .lines("control")
            .iter()
            .any(|l| l.contains("no sensor") || l.contains("bus error")),
        "{:?}",
        consoles.lines("control")
    );
}

#[test]
fn doctor_reports_every_check_and_passes_on_a_kvm_host() {
    if !kvm_or_skip("doctor_reports_every_check_and_passes_on_a_kvm_host") {
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_hv"))
        .arg("doctor")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for name in [
        "/dev/kvm",
        "KVM_CAP_SYNC_REGS",
        "VM creation",
        "software breakpoints",
        "data watchpoints",
        "guest execution",
        "gcc",
        "gdb",
        "guest images",
    ] {
        assert!(
            text.lines().any(
                |line| (line.starts_with("ok   ") || line.starts_with("warn "))
                    && line[5..].starts_with(name)
            ),
            "no ok/warn line for {name}:\n{text}"
        );
    }
    assert!(
        text.contains("hv doctor: this machine can run hvdk"),
        "{text}"
    );
}
