//! Runs tests/perfetto/check.py (Perfetto's own schema, from the `perfetto` and `protobuf`
//! Python packages that `.ci/run` installs) on a protobuf export.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// The checker's summary of `file` (tracks, slices by name, instants, flows; see check.py), or
/// `None` after one loud line when python3 or its packages are missing. Fails the test when the
/// checker rejects the file.
pub fn check(file: &Path) -> Option<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/perfetto/check.py");
    let out = match Command::new("python3").arg(&script).arg(file).output() {
        Ok(out) => out,
        Err(e) => {
            eprintln!(
                "SKIPPED the Perfetto protobuf check: python3 cannot run ({e}); .ci/run installs it"
            );
            return None;
        }
    };
    if out.status.code() == Some(2) {
        eprintln!(
            "SKIPPED the Perfetto protobuf check: {} (pip install --user perfetto protobuf; .ci/run does)",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return None;
    }
    assert!(
        out.status.success(),
        "tests/perfetto/check.py rejects {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("the checker's JSON summary"))
}
