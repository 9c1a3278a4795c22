//! Shared helpers for the end-to-end tests: KVM gating, system descriptions with real guest
//! images, and a console collector for running systems.
#![allow(dead_code)]

pub mod hv_run;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hv_config::SystemConfig;
use hv_core::{System, SystemEvent};

/// `control` and `telemetry` of the demo, joined by the `telemetry` channel (`{guests}` is
/// replaced by `system_file`).
#[allow(dead_code)] // not every test binary boots this pair
pub const CONTROL_AND_TELEMETRY: &str = r#"
[[partition]]
name = "control"
image = "{guests}/control.elf"

[[partition]]
name = "telemetry"
image = "{guests}/telemetry.elf"

[[channel]]
name = "telemetry"
endpoints = ["control", "telemetry"]
"#;

/// The demo's sensor model partition and the `sensor` device it serves to `control`, to append
/// to a description that has `control`; `{model}` is the image serving the sensor (`{guests}` is
/// replaced by `system_file`).
pub const SENSOR_MODEL: &str = r#"
[[partition]]
name = "sensor-model"
image = "{guests}/{model}.elf"

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

/// [`SENSOR_MODEL`] served by guest image `model` (`sensor-model` is the demo's).
pub fn sensor_model(model: &str) -> String {
    SENSOR_MODEL.replace("{model}", model)
}

/// True when /dev/kvm is usable; otherwise prints one loud line and the test returns early.
pub use hv_core::kvm_or_skip;

/// Serialises guest-booting tests inside one test binary (this machine has 2 cores; parallel
/// systems would only measure each other).
pub fn kvm_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// A system description written to a temporary directory; `{guests}` in `toml` becomes the
/// directory holding the built guest images.
pub struct SystemFile {
    _dir: tempfile::TempDir,
    /// Path of the TOML file.
    pub path: PathBuf,
}

/// Writes `toml` (with `{guests}` expanded) to a temporary file.
pub fn system_file(toml: &str) -> SystemFile {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("system.toml");
    std::fs::write(&path, toml.replace("{guests}", guests::GUESTS_DIR)).expect("write toml");
    SystemFile { _dir: dir, path }
}

/// Loads a description or panics with its rendered diagnostics.
pub fn load(path: &Path) -> SystemConfig {
    match SystemConfig::load(path) {
        Ok(config) => config,
        Err(hv_config::ConfigError::Invalid(d)) => panic!("invalid test system:\n{}", d.render()),
        Err(e) => panic!("{e}"),
    }
}

/// Lines by partition name, with a condition variable signalled on every new line.
type LineStore = (Mutex<HashMap<String, Vec<String>>>, Condvar);

/// Console lines of a running system, by partition name, collected on a background thread.
#[derive(Clone, Default)]
pub struct Consoles {
    inner: Arc<LineStore>,
}

impl Consoles {
    /// Starts collecting from `system`.
    pub fn collect(system: &System) -> Consoles {
        let consoles = Consoles::default();
        let names: Vec<String> = system
            .handles()
            .iter()
            .map(|p| p.name().to_owned())
            .collect();
        let events = system.subscribe(1 << 20);
        let inner = consoles.inner.clone();
        std::thread::spawn(move || {
            for event in events {
                if let SystemEvent::ConsoleLine { partition, line } = event {
                    let (lines, cond) = &*inner;
                    lines
                        .lock()
                        .unwrap()
                        .entry(names[partition].clone())
                        .or_default()
                        .push(line);
                    cond.notify_all();
                }
            }
        });
        consoles
    }

    /// Lines printed by `partition` so far.
    pub fn lines(&self, partition: &str) -> Vec<String> {
        self.inner
            .0
            .lock()
            .unwrap()
            .get(partition)
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until `partition` printed a line containing `needle`; returns that line.
    pub fn wait_for(&self, partition: &str, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let (lines, cond) = &*self.inner;
        let mut guard = lines.lock().unwrap();
        loop {
            if let Some(line) = guard
                .get(partition)
                .and_then(|l| l.iter().find(|l| l.contains(needle)))
            {
                return line.clone();
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "{partition} did not print {needle:?} within {timeout:?}; it printed:\n{}",
                guard
                    .get(partition)
                    .map(|l| l.join("\n"))
                    .unwrap_or_default()
            );
            guard = cond.wait_timeout(guard, deadline - now).unwrap().0;
        }
    }

    /// Waits until `partition` has printed at least `count` lines.
    pub fn wait_count(&self, partition: &str, count: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let (lines, cond) = &*self.inner;
        let mut guard = lines.lock().unwrap();
        loop {
            let have = guard.get(partition).map_or(0, Vec::len);
            if have >= count {
                return guard[partition].clone();
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "{partition} printed {have} of {count} lines within {timeout:?}"
            );
            guard = cond.wait_timeout(guard, deadline - now).unwrap().0;
        }
    }
}

/// Builds and starts a system from TOML; returns it with its console collector.
pub fn boot(toml: &str) -> (System, Consoles, SystemFile) {
    let file = system_file(toml);
    let mut system = System::new(load(&file.path)).expect("build system");
    let consoles = Consoles::collect(&system);
    system.start().expect("start system");
    (system, consoles, file)
}

/// Waits until `f` is true or the timeout passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}

/// A gdb base port whose whole port plan is free right now, for a system whose partitions have
/// `vcpus[k]` vCPUs each: partition k on BASE+k, vCPU j of it on BASE+100+16k+j (the bridge's
/// documented plan). Candidates lie below Linux's ephemeral range (32768 up), so outgoing
/// connections of other processes cannot take them meanwhile, and differ per call and process.
#[allow(dead_code)] // not every test binary starts a gdb bridge
pub fn free_gdb_base(vcpus: &[u16]) -> u16 {
    use std::net::{Ipv4Addr, TcpListener};
    use std::sync::atomic::{AtomicU32, Ordering};
    static CALLS: AtomicU32 = AtomicU32::new(0);
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    let seed = std::process::id() % 1000 * 37 + call * 7919;
    for i in 0..500u32 {
        let base = (16_000 + (seed + i * 401) % 16_000) as u16;
        let mut ports: Vec<u16> = (0..vcpus.len() as u16).map(|k| base + k).collect();
        for (k, &n) in vcpus.iter().enumerate() {
            ports.extend((0..n).map(|j| base + 100 + 16 * k as u16 + j));
        }
        if ports
            .iter()
            .all(|p| TcpListener::bind((Ipv4Addr::LOCALHOST, *p)).is_ok())
        {
            return base;
        }
    }
    panic!("no free range of gdb ports");
}
