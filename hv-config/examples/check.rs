//! Checks system descriptions and prints every diagnostic: `cargo run -p hv-config --example check -- FILE...`.

use std::path::Path;
use std::process::ExitCode;

use hv_config::{ConfigError, SystemConfig};

fn main() -> ExitCode {
    let mut failed = false;
    for arg in std::env::args().skip(1) {
        match SystemConfig::load(Path::new(&arg)) {
            Ok(system) => {
                print!("{}", system.warnings.render());
                println!(
                    "{arg}: ok: system `{}`, {} partition(s), {} channel(s), {} device(s), {}",
                    system.name,
                    system.partitions.len(),
                    system.channels.len(),
                    system.devices.len(),
                    system.warnings.summary()
                );
            }
            Err(ConfigError::Invalid(diags)) => {
                failed = true;
                print!("{}", diags.render());
                println!("{arg}: {}", diags.summary());
            }
            Err(e) => {
                failed = true;
                eprintln!("{e}");
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
