//! The VS Code extension in a real, headless VS Code (code-server 1.139 in Debian's Chromium):
//! runs vscode-extension/test/run-vscode-tests.sh, which packages and installs the .vsix, opens
//! this repository and drives the UI and VS Code's extension-test hook — a debug session on the
//! demo's device model through the real `hv dap`, the live Partitions view, the `hv lsp` client,
//! "hv: Open Trace" (a recording of the demo in the trace viewer's webview, a rip to its source).
//! Without the toolchain (vscode-extension/scripts/install-toolchain.sh, which `.ci/run` runs)
//! the test prints one SKIPPED line; on CI (`CI` set) a missing toolchain is a failure.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Safety net for the whole run (guests may run emulated here); no assertion is about speed.
const GUARD: Duration = Duration::from_secs(25 * 60);

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The toolchain's cache directory, as install-toolchain.sh chooses it.
fn cache_dir() -> PathBuf {
    match std::env::var_os("HVDK_VSCODE_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/hvdk-vscode")
        }
    }
}

/// Why the toolchain cannot run, if it cannot.
fn missing_toolchain() -> Option<String> {
    let cache = cache_dir();
    let needed = [
        (cache.join("env.sh"), "the toolchain's env.sh"),
        (cache.join("cs/bin/code-server"), "code-server"),
        (cache.join("nodebin/node"), "Node 24"),
        (
            repo().join("vscode-extension/node_modules/playwright-core"),
            "the extension's npm packages",
        ),
        (
            PathBuf::from("/usr/lib/chromium/chromium"),
            "Debian's chromium",
        ),
    ];
    let missing: Vec<String> = needed
        .iter()
        .filter(|(path, _)| !path.exists())
        .map(|(path, what)| format!("{what} ({})", path.display()))
        .collect();
    (!missing.is_empty()).then(|| missing.join(", "))
}

#[test]
fn extension_in_real_vscode() {
    if let Some(missing) = missing_toolchain() {
        let msg = format!(
            "the VS Code toolchain is not installed: missing {missing}; run vscode-extension/scripts/install-toolchain.sh"
        );
        if std::env::var_os("CI").is_some() {
            panic!("{msg} (.ci/run installs it; on CI this test must run)");
        }
        eprintln!("SKIPPED extension_in_real_vscode: {msg}");
        return;
    }
    let kvm = hv_core::kvm_available();
    if !kvm {
        eprintln!(
            "SKIPPED extension_in_real_vscode (debug sessions on the demo): /dev/kvm is missing or not accessible; tests that boot guests need KVM (packaging, install, the Partitions view and the language server still run)"
        );
    }
    let out = repo().join("target/vscode");
    std::fs::create_dir_all(&out).expect("create target/vscode");
    let log_path = out.join("test.log");
    let log = std::fs::File::create(&log_path).expect("create target/vscode/test.log");
    let start = Instant::now();
    let mut child = Command::new("bash")
        .arg(repo().join("vscode-extension/test/run-vscode-tests.sh"))
        .env("HVDK_TEST_HV", env!("CARGO_BIN_EXE_hv"))
        .env("HVDK_TEST_KVM", if kvm { "1" } else { "0" })
        .env(
            "HVDK_TEST_KVM_REASON",
            "/dev/kvm is missing or not accessible",
        )
        .env("HVDK_VSCODE_OUT", &out)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone log"))
        .stderr(log)
        .process_group(0)
        .spawn()
        .expect("start run-vscode-tests.sh");
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for run-vscode-tests.sh") {
            break Some(status);
        }
        if start.elapsed() > GUARD {
            // SAFETY: kill(2) on the process group this test created for the script.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGTERM) };
            std::thread::sleep(Duration::from_secs(3));
            // SAFETY: as above.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let mut text = String::new();
    std::fs::File::open(&log_path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .expect("read target/vscode/test.log");
    eprintln!("{text}");
    eprintln!(
        "extension_in_real_vscode: {} s (log {}, screenshots in {})",
        start.elapsed().as_secs(),
        log_path.display(),
        out.display()
    );
    let status = status.unwrap_or_else(|| panic!("run-vscode-tests.sh did not end in {GUARD:?}"));
    assert!(
        status.success(),
        "run-vscode-tests.sh failed ({status}): see the log above"
    );
    if kvm {
        assert!(
            out.join("stop.png").exists() && out.join("partitions.png").exists(),
            "the UI part wrote no stop.png / partitions.png"
        );
    }
}
