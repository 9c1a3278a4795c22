//! End-to-end debugging with stock gdb (batch mode) through the gdb bridge and the host link of
//! a real `hv run`, on real guests built from source.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::hv_run::HvRun;
use common::{kvm_lock, kvm_or_skip, system_file, wait_until};

const DEMO: &str = r#"
[[partition]]
name = "control"
image = "{guests}/control.elf"

[[partition]]
name = "telemetry"
image = "{guests}/telemetry.elf"

[[partition]]
name = "worker"
image = "{guests}/worker.elf"
memory = "32M"
vcpus = 2

[[channel]]
name = "telemetry"
endpoints = ["control", "telemetry"]
"#;

/// `hv run` of `toml` with the gdb bridge (the description file lives as long as the pair).
fn start(toml: &str) -> (HvRun, common::SystemFile) {
    let system = system_file(toml);
    // The demo's plan (4 partitions, worker with 2 vCPUs) covers every system started here.
    let hv = HvRun::with_bridge(&system.path, &[1, 1, 2, 1]);
    (hv, system)
}

/// Runs gdb in batch mode on `elf` with `commands` against `port`; returns its output.
fn gdb(elf: &str, port: u16, commands: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("cmds.gdb");
    std::fs::write(
        &script,
        format!(
            "set pagination off\nset confirm off\nset debug remote 1\ntarget remote 127.0.0.1:{port}\n{commands}\n"
        ),
    )
    .unwrap();
    // A stop that never comes must fail the test, not hang it; gdb's remote log (`set debug
    // remote 1`, in the output shown on failure) then tells which packet went unanswered.
    let out = Command::new("timeout")
        .args(["--kill-after=5", "120", "gdb", "-nx", "-batch", "-x"])
        .arg(&script)
        .arg(guests::image(elf))
        .stdin(Stdio::null())
        .output()
        .expect("run gdb");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(out.status.code(), Some(124), "gdb timed out:\n{text}");
    text
}

fn touch(path: &Path) -> String {
    format!("shell touch {}", path.display())
}

#[test]
fn break_step_and_inspect_a_c_guest() {
    if !kvm_or_skip("break_step_and_inspect_a_c_guest") {
        return;
    }
    let _kvm = kvm_lock();
    let (hv, _system) = start(DEMO);
    hv.wait_count("[control]", 1);
    let out = gdb(
        "control",
        hv.base(),
        "break on_tick\ncontinue\nbacktrace\nprint control_ticks\nnext\nstepi\nfinish\n\
         delete\nbreak control.c:36\ncontinue\ninfo locals\nprint msg.seq\nstep\n\
         info registers rip rsp fs_base gs_base cr0 cr3 cr4 efer\nx/2xg 0x100000\n\
         monitor partitions\ndetach",
    );
    assert!(out.contains("Breakpoint 1, on_tick"), "{out}");
    // next leaves the handler for its caller's next line; stepi moves within that line.
    assert!(
        out.lines()
            .any(|l| l.starts_with("hv_dispatch (") && l.ends_with("irq.c:125")),
        "next: {out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("0x") && l.contains("\t125\t")),
        "stepi: {out}"
    );
    assert!(
        out.contains(" hv_main (boot="),
        "backtrace reaches hv_main: {out}"
    );
    assert!(
        out.contains("hv_isr_body () at"),
        "finish returns to the interrupt stub: {out}"
    );
    assert!(
        out.contains("Breakpoint 2, send_telemetry"),
        "file:line breakpoint: {out}"
    );
    assert!(out.contains("msg = {"), "locals: {out}");
    assert!(
        out.contains("hv_printf") || out.contains("control.c:37"),
        "step: {out}"
    );
    for reg in ["fs_base", "gs_base", "cr3 ", "cr0", "cr4", "efer"] {
        assert!(out.contains(reg), "register {reg}: {out}");
    }
    assert!(out.contains("0x9000"), "cr3 is the boot page table: {out}");
    assert!(
        out.contains("<_start>:"),
        "memory by virtual address: {out}"
    );
    assert!(
        out.contains("control") && out.contains("debug-stopped"),
        "{out}"
    );
    // Detached: the guest runs on.
    let before = hv.count("[control]");
    hv.wait_count("[control]", before + 1);
}

#[test]
fn hbreak_unmapped_memory_and_monitor_commands() {
    if !kvm_or_skip("hbreak_unmapped_memory_and_monitor_commands") {
        return;
    }
    let _kvm = kvm_lock();
    let (hv, _system) = start(DEMO);
    hv.wait_count("[control]", 1);
    let out = gdb(
        "control",
        hv.base(),
        // The unmapped read comes last: its error ends gdb's script (and the session with it).
        "hbreak on_tick\ncontinue\ninfo breakpoints\ndelete\n\
         monitor irq 7\nmonitor irq 32 9\nmonitor irq 32\nmonitor state\nmonitor bogus\n\
         monitor reset\nmaintenance flush register-cache\ninfo registers rip\nx/xg 0x7f0000000000",
    );
    assert!(out.contains("Hardware assisted breakpoint 1 at"), "{out}");
    assert!(out.contains("Breakpoint 1, on_tick"), "hbreak hit: {out}");
    assert!(out.contains("hw breakpoint"), "info breakpoints: {out}");
    // The page walk finds no mapping: gdb gets an error, not zeros.
    assert!(
        out.contains("Cannot access memory at address 0x7f0000000000"),
        "{out}"
    );
    assert!(
        out.contains("usage: monitor irq VECTOR [VCPU] (VECTOR 32..255)"),
        "{out}"
    );
    assert!(
        out.contains("raised vector 32 on vCPU 0 of control"),
        "{out}"
    );
    assert!(!out.contains("raised vector 32 on vCPU 9"), "{out}");
    assert!(
        out.contains("control: running, vcpus 0:debug-stopped"),
        "monitor state: {out}"
    );
    assert!(out.contains("unknown command \"bogus\""), "{out}");
    assert!(
        out.contains("control reset; stopped at its entry point"),
        "{out}"
    );
    assert!(
        out.contains("<_start>"),
        "rip at the entry point after reset: {out}"
    );
    // gdb gone after the reset: control boots again and runs on.
    let boots = || hv.count("[control] control: partition 0");
    assert!(
        wait_until(Duration::from_secs(20), || boots() >= 2),
        "control did not boot again: {} boot lines",
        boots()
    );
}

#[test]
fn a_stopped_partition_does_not_stop_the_others() {
    if !kvm_or_skip("a_stopped_partition_does_not_stop_the_others") {
        return;
    }
    let _kvm = kvm_lock();
    let (hv, _system) = start(DEMO);
    hv.wait_count("[worker]", 3);
    let (stopped, release) = (hv.dir().join("stopped"), hv.dir().join("release"));
    let script = format!(
        "break on_tick\ncontinue\n{}\nshell while [ ! -e {} ]; do sleep 0.05; done\ndetach",
        touch(&stopped),
        release.display()
    );
    let handle = {
        let base = hv.base();
        std::thread::spawn(move || gdb("control", base, &script))
    };
    if !wait_until(Duration::from_secs(60), || {
        stopped.exists() || handle.is_finished()
    }) {
        panic!("breakpoint not hit within 60 s");
    }
    if !stopped.exists() {
        // gdb ended before the stop: its output says why.
        panic!("breakpoint not hit; gdb:\n{}", handle.join().unwrap());
    }
    let (control, worker) = (hv.count("[control]"), hv.count("[worker]"));
    hv.wait_count("[worker]", worker + 2);
    assert_eq!(
        hv.count("[control]"),
        control,
        "control printed while stopped in gdb"
    );
    std::fs::write(&release, b"").unwrap();
    let out = handle.join().unwrap();
    assert!(out.contains("Breakpoint 1, on_tick"), "{out}");
    hv.wait_count("[control]", control + 1);
}

#[test]
fn smp_threads_and_a_single_vcpu_port() {
    if !kvm_or_skip("smp_threads_and_a_single_vcpu_port") {
        return;
    }
    let _kvm = kvm_lock();
    let (hv, _system) = start(DEMO);
    hv.wait_count("[worker]", 2);
    let worker_port = hv.base() + 2;
    let out = gdb(
        "worker",
        worker_port,
        "info threads\nthread 2\nbacktrace 1\ndetach",
    );
    assert!(
        out.contains("Thread 1.1") && out.contains("Thread 1.2"),
        "{out}"
    );
    assert!(out.contains("Switching to thread 2 (Thread 1.2)"), "{out}");

    // vCPU 1 of worker alone (partition 2): it stays put while vCPU 0 runs on. (After the
    // compute phase, whose blocks alternate between the vCPUs; then each vCPU ticks on its own.)
    hv.wait_count("[worker] worker: 2 vCPUs ran", 1);
    let vcpu1_port = hv.base() + 100 + 16 * 2 + 1;
    let out = gdb(
        "worker",
        vcpu1_port,
        "print worker_ticks[1]\nprint worker_ticks[0]\nshell sleep 1.5\n\
         print worker_ticks[1]\nprint worker_ticks[0]\nmonitor partitions\ndetach",
    );
    let values: Vec<u64> = out
        .lines()
        .filter_map(|l| l.strip_prefix('$').and_then(|l| l.split(" = ").nth(1)))
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    assert_eq!(values.len(), 4, "{out}");
    assert_eq!(values[0], values[2], "the stopped vCPU advanced: {out}");
    assert!(values[3] > values[1], "its sibling did not advance: {out}");
    assert!(
        out.contains("0:running") || out.contains("0:halted"),
        "{out}"
    );
    assert!(out.contains("1:debug-stopped"), "{out}");
}

#[test]
fn per_vcpu_breakpoints_leave_siblings_and_other_sessions_alone() {
    if !kvm_or_skip("per_vcpu_breakpoints_leave_siblings_and_other_sessions_alone") {
        return;
    }
    let _kvm = kvm_lock();
    let (hv, _system) = start(DEMO);
    // Idle phase: both vCPUs call compute_block once a second; vCPU 0 prints a line each time.
    hv.wait_count("[worker] worker: idle", 1);
    let (stopped, release) = (hv.dir().join("stopped"), hv.dir().join("release"));
    let vcpu_port = |v: u16| hv.base() + 100 + 16 * 2 + v;
    // vCPU 1 alone stops at compute_block, waits, then continues to hit it again: its
    // breakpoint must survive another per-vCPU session setting and deleting the same one.
    let script = format!(
        "break compute_block\ncontinue\n{}\nshell while [ ! -e {} ]; do sleep 0.05; done\n\
         continue\ndetach",
        touch(&stopped),
        release.display()
    );
    let port1 = vcpu_port(1);
    let handle = std::thread::spawn(move || gdb("worker", port1, &script));
    assert!(
        wait_until(Duration::from_secs(30), || stopped.exists()),
        "breakpoint on vCPU 1 not hit"
    );
    // vCPU 0 runs compute_block at the same address: it neither stops nor takes a #BP (a
    // patched int3 it does not trap would crash the guest); its idle lines keep coming.
    let idle = hv.count("[worker] worker: idle");
    hv.wait_count("[worker] worker: idle", idle + 2);
    // A second per-vCPU session on vCPU 0: same breakpoint, hit, deleted, detached.
    let out0 = gdb(
        "worker",
        vcpu_port(0),
        "break compute_block\ncontinue\ndelete\ndetach",
    );
    assert!(out0.contains("Breakpoint 1, compute_block"), "{out0}");
    std::fs::write(&release, b"").unwrap();
    let out1 = handle.join().unwrap();
    assert_eq!(
        out1.matches("Breakpoint 1, compute_block").count(),
        2,
        "vCPU 1's breakpoint lost after the other session: {out1}"
    );
    let idle = hv.count("[worker] worker: idle");
    hv.wait_count("[worker] worker: idle", idle + 1);
}

#[test]
fn ctrl_c_stops_and_killed_gdb_leaves_the_guest_running() {
    if !kvm_or_skip("ctrl_c_stops_and_killed_gdb_leaves_the_guest_running") {
        return;
    }
    let _kvm = kvm_lock();
    let (hv, _system) = start(DEMO);
    hv.wait_count("[control]", 1);
    let out = gdb(
        "control",
        hv.base(),
        "python import os, signal, threading; threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGINT)).start()\n\
         continue\ninfo registers rip\ndetach",
    );
    assert!(out.contains("SIGINT"), "{out}");
    assert!(out.contains("rip"), "{out}");

    // gdb killed while the guest runs: the guest keeps running and the port is reusable.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("run.gdb");
    std::fs::write(
        &script,
        format!("target remote 127.0.0.1:{}\ncontinue\n", hv.base()),
    )
    .unwrap();
    let mut gdb_child = Command::new("gdb")
        .args(["-nx", "-batch", "-x"])
        .arg(&script)
        .arg(guests::image("control"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    gdb_child.kill().unwrap();
    let _ = gdb_child.wait();
    let before = hv.count("[control]");
    hv.wait_count("[control]", before + 2);
    let out = gdb("control", hv.base(), "info registers rip\ndetach");
    assert!(out.contains("rip"), "port not reusable: {out}");
}

#[test]
fn watchpoints_fire_or_are_refused_clearly() {
    if !kvm_or_skip("watchpoints_fire_or_are_refused_clearly") {
        return;
    }
    let _kvm = kvm_lock();
    let (hv, _system) = start(DEMO);
    hv.wait_count("[control]", 1);
    let out = gdb("control", hv.base(), "watch control_seq\ncontinue\ndetach");
    if hv_core::probe::debug_caps().data_watchpoints {
        assert!(out.contains("Hardware watchpoint 1: control_seq"), "{out}");
        assert!(out.contains("New value"), "{out}");
    } else {
        // This host's KVM never raises data breakpoints: the stub refuses them up front.
        assert!(
            out.contains("Could not insert hardware watchpoint"),
            "{out}"
        );
    }
}

/// The source line of the first statement in the sensor model's CTRL handler's conversion.
fn sensor_line() -> usize {
    let source = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/guests/demo/sensor_model.c"
    ))
    .unwrap();
    source
        .lines()
        .position(|l| l.contains("uint32_t n = s->samples + 1;"))
        .expect("conversion line")
        + 1
}

#[test]
fn step_through_the_device_model_when_the_client_touches_its_device() {
    if !kvm_or_skip("step_through_the_device_model_when_the_client_touches_its_device") {
        return;
    }
    let _kvm = kvm_lock();
    let (hv, _system) = start(&format!("{DEMO}{}", common::sensor_model("sensor-model")));
    hv.wait_count("[control] control: sensor sample #1", 1);
    let (stopped, release) = (hv.dir().join("stopped"), hv.dir().join("release"));
    let script = format!(
        "break sensor_write_ctrl\ncontinue\nnext\nnext\nprint req->offset\nprint value\n\
         monitor partitions\n{}\nshell while [ ! -e {} ]; do sleep 0.05; done\nfinish\n\
         delete\nbreak sensor_model.c:{}\ncontinue\nprint n\ndetach",
        touch(&stopped),
        release.display(),
        sensor_line()
    );
    let model_port = hv.base() + 3;
    let handle = std::thread::spawn(move || gdb("sensor-model", model_port, &script));
    assert!(
        wait_until(Duration::from_secs(30), || stopped.exists()),
        "breakpoint not hit"
    );
    // The model is stopped in gdb: control waits on its device (no bus error), the others run.
    let (errors, worker) = (
        hv.count("[control] control: sensor bus error"),
        hv.count("[worker]"),
    );
    hv.wait_count("[worker]", worker + 2);
    std::fs::write(&release, b"").unwrap();
    let out = handle.join().unwrap();
    assert!(out.contains("Breakpoint 1, sensor_write_ctrl"), "{out}");
    assert!(
        out.contains("$1 = 12"),
        "the request's offset is CTRL: {out}"
    );
    assert!(out.contains("$2 = 1"), "the value written: {out}");
    assert!(
        out.contains("control ") && out.contains("0:blocked-on-device"),
        "{out}"
    );
    assert!(out.contains("1:") || out.contains("worker"), "{out}");
    assert!(
        out.contains("Run till exit from") || out.contains("dm_answer ("),
        "finish: {out}"
    );
    assert!(
        out.contains("Breakpoint 2, sensor_write_ctrl"),
        "file:line breakpoint: {out}"
    );
    assert!(out.contains("$3 = "), "{out}");
    // Continuing lets control proceed, without a bus error for the time the model was stopped.
    let samples = hv.count("[control] control: sensor sample");
    hv.wait_count("[control] control: sensor sample", samples + 1);
    assert_eq!(
        hv.count("[control] control: sensor bus error"),
        errors,
        "bus error while debugging"
    );
}

/// How a stepping debugger leaves the guest in [`stepping_across_sti_hlt_never_leaves_the_guest_stuck`].
#[derive(Debug, Clone, Copy)]
enum Leave {
    /// `continue`, then gdb is ended while the guest runs.
    Continue,
    /// `detach`.
    Detach,
    /// `disconnect`: the connection closes without a detach packet.
    Disconnect,
    /// gdb is killed with SIGKILL in the middle of a long `stepi`.
    KillWhileStepping,
    /// `monitor reset` (the guest restarts, stopped at its entry), a few steps, then `detach`.
    ResetThenDetach,
}

/// Steps control (a 1 kHz timer guest whose idle loop is `sti; hlt`) across its idle loop and
/// timer interrupts, leaves in one of the ways a debugger can, and checks that the guest runs on
/// with its interrupts delivered: each way several times, since the freeze this guards against
/// was a race that a few steps could miss.
#[test]
fn stepping_across_sti_hlt_never_leaves_the_guest_stuck() {
    if !kvm_or_skip("stepping_across_sti_hlt_never_leaves_the_guest_stuck") {
        return;
    }
    let _kvm = kvm_lock();
    let (hv, _system) = start(DEMO);
    hv.wait_count("[control] control: uptime", 1);
    const ROUNDS: usize = 3;
    let ways = [
        Leave::Continue,
        Leave::Detach,
        Leave::Disconnect,
        Leave::KillWhileStepping,
        Leave::ResetThenDetach,
    ];
    for round in 0..ROUNDS {
        for way in ways {
            let marker = hv.dir().join(format!("stepping-{round}-{way:?}"));
            // 40 single steps cover the idle loop's `sti; hlt` several times, with timer
            // interrupts raised meanwhile (and one more raised from gdb).
            let steps = "monitor irq 32\nstepi 40\nx/i $pc";
            let leave = match way {
                Leave::Continue => format!("{}\ncontinue", touch(&marker)),
                Leave::Detach => "detach".to_owned(),
                Leave::Disconnect => "disconnect".to_owned(),
                Leave::ResetThenDetach => "monitor reset\nstepi 5\ndetach".to_owned(),
                Leave::KillWhileStepping => format!("{}\nstepi 1000000", touch(&marker)),
            };
            let script = format!("{steps}\n{leave}");
            let uptime_before = hv.count("[control] control: uptime");
            match way {
                Leave::Detach | Leave::Disconnect | Leave::ResetThenDetach => {
                    let out = gdb("control", hv.base(), &script);
                    assert!(out.contains("=> 0x"), "{way:?}: gdb did not step:\n{out}");
                }
                Leave::Continue | Leave::KillWhileStepping => {
                    let mut child = spawn_gdb("control", hv.base(), &script);
                    assert!(
                        wait_until(Duration::from_secs(60), || marker.exists()),
                        "{way:?}: gdb never got through its steps"
                    );
                    if matches!(way, Leave::KillWhileStepping) {
                        // Let it step a while first.
                        std::thread::sleep(Duration::from_millis(300));
                    }
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
            // Each uptime line takes 1000 timer interrupts: two more prove they are delivered.
            assert!(
                wait_until(Duration::from_secs(30), || hv
                    .count("[control] control: uptime")
                    >= uptime_before + 2),
                "round {round}, {way:?}: control stuck after stepping ({} uptime lines, {uptime_before} before)",
                hv.count("[control] control: uptime")
            );
        }
    }
    let lines = hv.lines();
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("exception") || l.contains("exited with code")),
        "a debug trap reached the guest: {:?}",
        lines
            .iter()
            .filter(|l| l.contains("exception"))
            .collect::<Vec<_>>()
    );
}

/// Starts gdb in batch mode on `elf` with `commands` against `port`, in the background.
fn spawn_gdb(elf: &str, port: u16, commands: &str) -> Child {
    let script = std::env::temp_dir().join(format!("hv-gdb-{}-{port}.gdb", std::process::id()));
    std::fs::write(
        &script,
        format!(
            "set pagination off\nset confirm off\ntarget remote 127.0.0.1:{port}\n{commands}\n"
        ),
    )
    .unwrap();
    Command::new("gdb")
        .args(["-nx", "-batch", "-x"])
        .arg(&script)
        .arg(guests::image(elf))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run gdb")
}
