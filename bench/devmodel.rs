//! Benchmark: one device access round trip through a device-model partition (the `sensor` served
//! by `sensor-model`) against one access to a built-in device (the UART, emulated in Rust), both
//! timed by the same guest (`dmbench`) in the same run. Prints µs per access and the ratio.
//!
//! Run: `cargo bench --bench devmodel`.

use std::time::Duration;

use hv_core::SystemEvent;

fn main() {
    if !hv_core::kvm_available() {
        eprintln!("SKIPPED devmodel benchmark: /dev/kvm is missing or not accessible");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dmbench.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[[partition]]
name = "dmbench"
image = "{}"

[[partition]]
name = "sensor-model"
image = "{}"

[[device]]
name = "sensor"
partition = "dmbench"
mmio = {{ base = 0xD000_0000, size = 0x1000 }}
irq = 40
served_by = "sensor-model"
timeout_ms = 1000
grants = [{{ base = 0xE00000, size = 0x1000 }}]
"#,
            guests::image("dmbench").display(),
            guests::image("sensor-model").display()
        ),
    )
    .unwrap();
    let config = hv_config::SystemConfig::load(&path).unwrap();
    let mut system = hv_core::System::new(config).unwrap();
    let events = system.subscribe(4096);
    system.start().unwrap();
    let line = loop {
        match events.recv_timeout(Duration::from_secs(120)) {
            Ok(SystemEvent::ConsoleLine { line, .. }) if line.starts_with("dmbench: model") => {
                break line;
            }
            Ok(_) => {}
            Err(e) => panic!("no result from dmbench: {e}"),
        }
    };
    system.shutdown();
    let number = |after: &str| -> f64 {
        line.split(after)
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap()
            .parse()
            .unwrap()
    };
    let (model, builtin) = (number("model "), number("builtin "));
    println!("devmodel_access_us {:.1}", model / 1000.0);
    println!("builtin_access_us {:.1}", builtin / 1000.0);
    println!(
        "devmodel_ratio {:.1} (model partition round trip / built-in device)",
        model / builtin
    );
}
