//! End-to-end tests of para-virtual devices served by a device-model partition: the demo's
//! `control` drives the `sensor` served by `sensor-model`, on real KVM partitions.

mod common;

use std::time::Duration;

use common::{boot, kvm_lock, kvm_or_skip, wait_until};
use hv_core::PartitionState;

/// The demo's control, telemetry and sensor model (worker left out to keep the host quiet);
/// `{model}` is the image serving the sensor.
const SENSOR_SYSTEM: &str = r#"
[[partition]]
name = "control"
image = "{guests}/control.elf"

[[partition]]
name = "telemetry"
image = "{guests}/telemetry.elf"

[[partition]]
name = "sensor-model"
image = "{guests}/{model}.elf"

[[channel]]
name = "telemetry"
endpoints = ["control", "telemetry"]

[[device]]
name = "sensor"
partition = "control"
mmio = { base = 0xD000_0000, size = 0x1000 }
irq = 40
served_by = "sensor-model"
request_vector = 33
timeout_ms = 100
grants = [{ base = 0xE00000, size = 0x1000 }]
"#;

fn system(model: &str) -> String {
    SENSOR_SYSTEM.replace("{model}", model)
}

/// `(n, v)` pairs of lines `<prefix>#n = v`.
fn samples(lines: &[String], prefix: &str) -> Vec<(u32, u32)> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix(prefix))
        .filter_map(|rest| {
            let (n, v) = rest.split_once(" = ")?;
            Some((n.parse().ok()?, v.parse().ok()?))
        })
        .collect()
}

#[test]
fn control_reads_exactly_the_samples_the_model_produces() {
    if !kvm_or_skip("control_reads_exactly_the_samples_the_model_produces") {
        return;
    }
    let _kvm = kvm_lock();
    let (system, consoles, _file) = boot(&system("sensor-model"));
    consoles.wait_for("control", "sensor sample #3 =", Duration::from_secs(30));
    let model = samples(&consoles.lines("sensor-model"), "sensor-model: sample #");
    let control = samples(&consoles.lines("control"), "control: sensor sample #");
    assert!(control.len() >= 3);
    assert_eq!(
        control[..],
        model[..control.len()],
        "control read what the model produced"
    );
    for (n, v) in &control {
        assert_eq!(*v, (n * 37 + 11) % 1000, "deterministic sequence");
    }
    let lines = consoles.lines("control");
    assert!(
        lines.contains(&"control: sensor id 0x53454e53".to_owned()),
        "{lines:?}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("mismatch") || l.contains("not ready")),
        "{lines:?}"
    );
    // The sensor interrupt arrived (control counts it before reading DATA).
    let control_vcpu = &system.partition("control").unwrap().vcpus[0];
    assert!(
        control_vcpu
            .stats
            .irqs_injected
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    // Grants: the model's copy outside them was refused.
    consoles.wait_for(
        "sensor-model",
        "copy outside grant refused (error -6)",
        Duration::from_secs(5),
    );
}

#[test]
fn a_hung_model_gives_bus_errors_and_a_restart_restores_service() {
    if !kvm_or_skip("a_hung_model_gives_bus_errors_and_a_restart_restores_service") {
        return;
    }
    let _kvm = kvm_lock();
    let (system, consoles, _file) = boot(&system("sensor-model"));
    consoles.wait_for("control", "sensor sample #1 =", Duration::from_secs(30));
    let model = system.partition("sensor-model").unwrap();
    model.pause().unwrap(); // a model that never answers
    consoles.wait_for("control", "sensor bus error", Duration::from_secs(30));
    // control keeps running: its uptime lines go on.
    let uptime = |c: &common::Consoles| {
        c.lines("control")
            .iter()
            .filter(|l| l.contains("uptime"))
            .count()
    };
    let before = uptime(&consoles);
    assert!(wait_until(Duration::from_secs(10), || uptime(&consoles) >= before + 2));
    consoles.wait_for("telemetry", "ticks=", Duration::from_secs(5));

    model.reset().unwrap(); // restarting the model partition restores service
    let served = consoles.lines("sensor-model").len();
    consoles.wait_count("sensor-model", served + 2, Duration::from_secs(30));
    let read = samples(&consoles.lines("control"), "control: sensor sample #").len();
    assert!(wait_until(Duration::from_secs(30), || {
        samples(&consoles.lines("control"), "control: sensor sample #").len() > read
    }));
}

#[test]
fn a_crashed_model_gives_bus_errors_and_nothing_else_hangs() {
    if !kvm_or_skip("a_crashed_model_gives_bus_errors_and_nothing_else_hangs") {
        return;
    }
    let _kvm = kvm_lock();
    let (system, consoles, _file) = boot(&system("crasher"));
    let model = system.partition("sensor-model").unwrap();
    assert!(wait_until(Duration::from_secs(10), || matches!(
        model.state(),
        PartitionState::Crashed(_)
    )));
    consoles.wait_for("control", "sensor bus error", Duration::from_secs(30));
    consoles.wait_for("control", "uptime 2 s", Duration::from_secs(30));
    consoles.wait_for("telemetry", "#2 ticks", Duration::from_secs(10));
}
