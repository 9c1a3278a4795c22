//! End-to-end tests of para-virtual devices served by a device-model partition: the demo's
//! `control` drives the `sensor` served by `sensor-model`, on real KVM partitions.

mod common;

use std::time::{Duration, Instant};

use common::{boot, kvm_lock, kvm_or_skip, wait_until};
use hv_core::trace::{TraceKind, TraceRecord, class};
use hv_core::{PartitionLifecycle, System, SystemEvent};

/// Control and telemetry (worker left out to keep the host quiet) with the demo's sensor served
/// by guest image `model`.
fn system(model: &str) -> String {
    format!(
        "{}{}",
        common::CONTROL_AND_TELEMETRY,
        common::sensor_model(model)
    )
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

/// Starts recording device-model traffic on every vCPU of `partition`.
fn trace_devices(system: &System, partition: &str) {
    for vcpu in system.handle(partition).unwrap().vcpus() {
        vcpu.trace.set_classes(class::DEVICE | class::EXITS);
    }
}

/// Stops recording on `partition` and returns what its vCPUs recorded.
fn drain_trace(system: &System, partition: &str) -> Vec<TraceRecord> {
    let mut records = Vec::new();
    for vcpu in system.handle(partition).unwrap().vcpus() {
        vcpu.trace.set_classes(0);
        vcpu.trace.drain(&mut records);
    }
    records
}

/// Waits for a warning of `partition` containing every one of `needles`; returns its message.
fn wait_for_warning(
    system: &System,
    events: &crossbeam_channel::Receiver<SystemEvent>,
    partition: &str,
    needles: &[&str],
    timeout: Duration,
) -> String {
    let id = system.handle(partition).unwrap().id();
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match events.recv_timeout(left) {
            Ok(SystemEvent::Warning {
                partition: p,
                message,
            }) if p == id => {
                if needles.iter().all(|n| message.contains(n)) {
                    return message;
                }
                seen.push(message);
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    panic!("no warning of {partition} with {needles:?}; saw {seen:?}");
}

/// The `b` (reason) of every `ModelBusError` record.
fn bus_error_reasons(records: &[TraceRecord]) -> Vec<u64> {
    records
        .iter()
        .filter(|r| r.kind == TraceKind::ModelBusError as u16)
        .map(|r| r.b)
        .collect()
}

/// Records of `kind` as (id, b, timestamp).
fn of_kind(records: &[TraceRecord], kind: TraceKind) -> Vec<(u64, u64, u64)> {
    records
        .iter()
        .filter(|r| r.kind == kind as u16)
        .map(|r| (r.a, r.b, r.timestamp))
        .collect()
}

/// Checks the device-model records of a client and its model, both traced from before the
/// client's first request until after its last reply; returns the (id, latency) of the complete
/// pairs.
fn check_model_trace(client: &[TraceRecord], model: &[TraceRecord]) -> Vec<(u64, u64)> {
    use TraceKind::*;
    let is_model_kind = |r: &&TraceRecord| {
        [
            ModelRequest,
            ModelReply,
            ModelBusError,
            ModelReceive,
            ModelRespond,
        ]
        .iter()
        .any(|k| r.kind == *k as u16)
    };
    // The client's vCPU blocks on each access: its records alternate request, reply (tracing may
    // have started during an access and stopped during another).
    let mut sequence: Vec<&TraceRecord> = client.iter().filter(is_model_kind).collect();
    if sequence
        .first()
        .is_some_and(|r| r.kind == ModelReply as u16)
    {
        sequence.remove(0);
    }
    if sequence
        .last()
        .is_some_and(|r| r.kind == ModelRequest as u16)
    {
        sequence.pop();
    }
    let mut pairs = Vec::new();
    for pair in sequence.chunks(2) {
        let [request, reply] = pair else {
            panic!("unpaired client records: {pair:?}");
        };
        assert_eq!(request.kind, ModelRequest as u16, "{pair:?}");
        assert_eq!(reply.kind, ModelReply as u16, "{pair:?}");
        assert_eq!(request.a, reply.a, "a reply answers its request");
        assert!(reply.timestamp >= request.timestamp, "{pair:?}");
        assert!(
            reply.b > 0 && reply.b < 1_000_000_000,
            "latency {} ns",
            reply.b
        );
        pairs.push((request.a, reply.b));
    }
    // The model records what it took and answered, with its own kinds only.
    assert!(
        model
            .iter()
            .filter(is_model_kind)
            .all(|r| r.kind == ModelReceive as u16 || r.kind == ModelRespond as u16),
        "client kinds on the model's vCPU"
    );
    let received = of_kind(model, ModelReceive);
    let responded = of_kind(model, ModelRespond);
    let requests = of_kind(client, ModelRequest);
    for (id, _) in &pairs {
        let request = requests.iter().find(|r| r.0 == *id).unwrap();
        let receive = received.iter().find(|r| r.0 == *id);
        let respond = responded.iter().find(|r| r.0 == *id);
        let (Some(receive), Some(respond)) = (receive, respond) else {
            panic!("request {id:#x} not received and answered by the model: {model:?}");
        };
        assert_eq!(
            receive.1, request.1,
            "the model saw the offset the client used"
        );
        assert!(receive.2 <= respond.2, "received before answered");
    }
    pairs
}

#[test]
fn control_reads_exactly_the_samples_the_model_produces() {
    if !kvm_or_skip("control_reads_exactly_the_samples_the_model_produces") {
        return;
    }
    let _kvm = kvm_lock();
    let (system, consoles, _file) = boot(&system("sensor-model"));
    // The model's vCPU first, so that it records every request the client records.
    trace_devices(&system, "sensor-model");
    trace_devices(&system, "control");
    consoles.wait_for("control", "sensor sample #3 =", Duration::from_secs(30));
    let client_trace = drain_trace(&system, "control");
    let model_trace = drain_trace(&system, "sensor-model");
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
    // Traced: one request/reply pair per access (CTRL write and read-back, STATUS, DATA per
    // sample), each received and answered by the model, with a positive latency.
    let pairs = check_model_trace(&client_trace, &model_trace);
    assert!(pairs.len() >= 8, "{} traced accesses", pairs.len());
    assert!(bus_error_reasons(&client_trace).is_empty());
    // The model's answers to DATA reads are the samples control printed.
    let data: Vec<u32> = of_kind(&model_trace, TraceKind::ModelReceive)
        .iter()
        .filter(|r| r.1 == 0x8)
        .filter_map(|r| {
            let respond = of_kind(&model_trace, TraceKind::ModelRespond);
            respond.iter().find(|a| a.0 == r.0).map(|a| a.1 as u32)
        })
        .collect();
    let printed: Vec<u32> = control.iter().map(|(_, v)| *v).collect();
    assert!(
        !data.is_empty() && printed.windows(data.len()).any(|w| w == data),
        "traced DATA replies {data:?}, printed {printed:?}"
    );
    // The sensor interrupt (vector 40 in common::SENSOR_MODEL) arrived, once per sample control read
    // (control reads STATUS and DATA only after it); the 1 kHz timer has a vector of its own.
    let control_partition = system.handle("control").unwrap();
    let control_vcpu = &control_partition.vcpus()[0];
    let sensor_irqs =
        control_vcpu.stats.irqs_by_vector[40].load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        sensor_irqs >= control.len() as u64,
        "{sensor_irqs} sensor interrupts for {} samples",
        control.len()
    );
    // Grants: the model's copy outside them was refused.
    consoles.wait_for(
        "sensor-model",
        "grant check passed (a copy outside the grant is refused)",
        Duration::from_secs(5),
    );
}

#[test]
fn an_idle_model_sleeps_in_its_request_wait() {
    if !kvm_or_skip("an_idle_model_sleeps_in_its_request_wait") {
        return;
    }
    let _kvm = kvm_lock();
    let (system, consoles, _file) = boot(&system("sensor-model"));
    let model = system.handle("sensor-model").unwrap();
    let vcpu = &model.vcpus()[0];
    vcpu.trace.set_classes(class::HYPERCALL | class::IRQ);
    consoles.wait_for("control", "sensor sample #2 =", Duration::from_secs(30));
    vcpu.trace.set_classes(0);
    let mut records = Vec::new();
    vcpu.trace.drain(&mut records);
    // hv_dm_serve takes each request in one HV_DM_REPLY_WAIT, with no doorbell interrupt.
    let waits = records
        .iter()
        .filter(|r| r.kind == TraceKind::Hypercall as u16 && r.a == 21 && r.b == 1)
        .count();
    assert!(waits >= 4, "{waits} requests taken by HV_DM_REPLY_WAIT");
    assert!(
        !records
            .iter()
            .any(|r| r.kind == TraceKind::IrqInject as u16 && r.a == 33),
        "the doorbell was injected"
    );
    let exits = || vcpu.stats.exits.load(std::sync::atomic::Ordering::Relaxed);
    // control reads the sensor about once a second: between its reads the model waits in
    // HV_DM_REPLY_WAIT, halted and without exits. Its doorbell vector stays disabled, so the
    // doorbell left pending must not wake it (a wait that returned at once would exit in a loop).
    let mut quiet = 0;
    for _ in 0..40 {
        let before = exits();
        std::thread::sleep(Duration::from_millis(50));
        let state = vcpu.state();
        if exits() == before && state == hv_core::VcpuThreadState::Halted {
            quiet += 1;
        }
    }
    assert!(
        quiet >= 10,
        "the model was idle in only {quiet} of 40 windows of 50 ms"
    );
    let served = model.device_requests_served();
    assert!(served >= 3, "served {served}");
}

#[test]
fn a_hung_model_gives_bus_errors_and_a_restart_restores_service() {
    if !kvm_or_skip("a_hung_model_gives_bus_errors_and_a_restart_restores_service") {
        return;
    }
    let _kvm = kvm_lock();
    let (system, consoles, _file) = boot(&system("sensor-model"));
    let events = system.subscribe(1 << 16);
    consoles.wait_for("control", "sensor sample #1 =", Duration::from_secs(30));
    trace_devices(&system, "control");
    let model = system.handle("sensor-model").unwrap();
    model.pause().unwrap(); // a model that never answers
    consoles.wait_for("control", "sensor bus error", Duration::from_secs(30));
    // Logged, naming the device and the reason, and traced as a timeout.
    wait_for_warning(
        &system,
        &events,
        "control",
        &["device sensor: bus error", "did not reply within 100ms"],
        Duration::from_secs(10),
    );
    let records = drain_trace(&system, "control");
    let reasons = bus_error_reasons(&records);
    assert!(reasons.contains(&1), "a timeout was traced: {reasons:?}");
    // Time blocked on the model is not guest time: no VmEntry..VmExit span holds a 100 ms wait.
    let mut entered = None;
    let mut longest = 0;
    for r in &records {
        if r.kind == TraceKind::VmEntry as u16 {
            entered = Some(r.timestamp);
        } else if r.kind == TraceKind::VmExit as u16
            && let Some(t) = entered.take()
        {
            longest = longest.max(r.timestamp - t);
        }
    }
    assert!(
        longest > 0 && longest < 100_000_000,
        "longest guest span {longest} ns"
    );
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
    let events = system.subscribe(1 << 16);
    trace_devices(&system, "control");
    let model = system.handle("sensor-model").unwrap();
    assert!(wait_until(Duration::from_secs(10), || matches!(
        model.state(),
        PartitionLifecycle::Crashed(_)
    )));
    consoles.wait_for("control", "sensor bus error", Duration::from_secs(30));
    // control's first conversion (after 1 s) certainly finds the model crashed.
    consoles.wait_for("control", "uptime 1 s", Duration::from_secs(30));
    wait_for_warning(
        &system,
        &events,
        "control",
        &["device sensor: bus error", "model crashed"],
        Duration::from_secs(10),
    );
    consoles.wait_for("control", "uptime 2 s", Duration::from_secs(30));
    consoles.wait_for("telemetry", "#2 ticks", Duration::from_secs(10));
    let reasons = bus_error_reasons(&drain_trace(&system, "control"));
    assert!(
        reasons.contains(&2),
        "a crashed model was traced: {reasons:?}"
    );
}

#[test]
fn a_model_replying_garbage_gives_bus_errors_warnings_and_traces() {
    if !kvm_or_skip("a_model_replying_garbage_gives_bus_errors_warnings_and_traces") {
        return;
    }
    let _kvm = kvm_lock();
    let (system, consoles, _file) = boot(&system("badreply"));
    let events = system.subscribe(1 << 16);
    trace_devices(&system, "control");
    // Well-formed replies still work (the ID read), a reply nobody waits for is refused.
    consoles.wait_for(
        "sensor-model",
        "reply to an unknown id refused (error -5)",
        Duration::from_secs(30),
    );
    consoles.wait_for(
        "control",
        "control: sensor id 0x53454e53",
        Duration::from_secs(30),
    );
    // The first conversion: the CTRL write and its read-back get status 12345; the read
    // returns all ones, which control reports.
    consoles.wait_for("sensor-model", "status 12345", Duration::from_secs(30));
    consoles.wait_for("control", "sensor bus error", Duration::from_secs(30));
    let warning = wait_for_warning(
        &system,
        &events,
        "control",
        &[
            "device sensor: bus error",
            "model replied with status 12345",
        ],
        Duration::from_secs(10),
    );
    assert!(
        warning.contains("offset 0xc"),
        "names the access: {warning}"
    );
    let reasons = bus_error_reasons(&drain_trace(&system, "control"));
    assert!(
        !reasons.is_empty() && reasons.iter().all(|r| *r == 3),
        "bad replies traced as reason 3: {reasons:?}"
    );
    // Nothing else is disturbed: the model serves on, control keeps running.
    assert_eq!(
        system.handle("sensor-model").unwrap().state(),
        PartitionLifecycle::Running
    );
    consoles.wait_for("control", "uptime 2 s", Duration::from_secs(30));
    let lines = consoles.lines("control");
    assert!(
        !lines.iter().any(|l| l.contains("sensor sample #")),
        "no sample from a garbage model: {lines:?}"
    );
}
