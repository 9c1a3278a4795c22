//! Every system description in `examples/` is valid: no errors and no warnings.
//!
//! The guest images are not checked here (they are built by the `guests` crate, which hv-config
//! does not depend on); `tests/hypervisor.rs` checks the examples again against the built images.

use std::path::{Path, PathBuf};

use hv_config::{ConfigError, ParseOptions, SystemConfig};

fn examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    paths
}

#[test]
fn every_example_is_valid() {
    let paths = examples();
    let names: Vec<String> = paths
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n == "demo.toml"),
        "examples/demo.toml is missing: {names:?}"
    );
    let options = ParseOptions {
        // The examples must not warn on a 2-CPU machine such as CI's.
        host_cpus: Some(2),
        check_images: false,
    };
    for path in &paths {
        match SystemConfig::load_with(path, &options) {
            Ok(system) => {
                assert!(
                    system.warnings.is_empty(),
                    "{}:\n{}",
                    path.display(),
                    system.warnings.render()
                );
                assert!(!system.partitions.is_empty(), "{}", path.display());
                for partition in &system.partitions {
                    // Relative paths resolve against examples/; an absolute one is not portable.
                    assert!(
                        partition.image.starts_with(path.parent().unwrap()),
                        "{}: image {} is not relative to examples/",
                        path.display(),
                        partition.image.display()
                    );
                }
            }
            Err(ConfigError::Invalid(diags)) => {
                panic!("{} is invalid:\n{}", path.display(), diags.render())
            }
            Err(e) => panic!("{}: {e}", path.display()),
        }
    }
}
