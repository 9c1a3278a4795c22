//! `hv doctor`: checks that this machine can run hvdk and says what to do about each failure.

use std::process::{Command, ExitCode};

use kvm_ioctls::Cap;

struct Check {
    name: String,
    ok: bool,
    required: bool,
    detail: String,
}

fn check(name: &str, required: bool, result: Result<String, String>) -> Check {
    let (ok, detail) = match result {
        Ok(detail) => (true, detail),
        Err(detail) => (false, detail),
    };
    Check {
        name: name.to_owned(),
        ok,
        required,
        detail,
    }
}

fn tool_version(tool: &str, fix: &str) -> Result<String, String> {
    match Command::new(tool).arg("--version").output() {
        Ok(out) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .to_owned()),
        Ok(out) => Err(format!("`{tool} --version` failed ({}); {fix}", out.status)),
        Err(e) => Err(format!("{tool} not found ({e}); {fix}")),
    }
}

fn kvm_checks() -> Vec<Check> {
    let kvm = match hv_core::system::open_kvm() {
        Ok(kvm) => kvm,
        Err(e) => return vec![check("/dev/kvm", true, Err(e.to_string()))],
    };
    let mut checks = vec![check(
        "/dev/kvm",
        true,
        if kvm.get_api_version() == 12 {
            Ok("open, KVM API version 12".into())
        } else {
            Err(format!(
                "unexpected KVM API version {}",
                kvm.get_api_version()
            ))
        },
    )];
    let caps: [(Cap, &str, bool, &str); 6] = [
        (Cap::UserMemory, "KVM_CAP_USER_MEMORY", true, "guest memory"),
        (
            Cap::SetTssAddr,
            "KVM_CAP_SET_TSS_ADDR",
            true,
            "x86 boot state",
        ),
        (
            Cap::ImmediateExit,
            "KVM_CAP_IMMEDIATE_EXIT",
            true,
            "kicking vCPUs without losing a kick",
        ),
        (Cap::ExtCpuid, "KVM_CAP_EXT_CPUID", true, "CPUID for SSE"),
        (
            Cap::SyncRegs,
            "KVM_CAP_SYNC_REGS",
            false,
            "fast hypercalls (slower fallback otherwise)",
        ),
        (
            Cap::SetGuestDebug,
            "KVM_CAP_SET_GUEST_DEBUG",
            false,
            "breakpoints and single step",
        ),
    ];
    for (cap, name, required, why) in caps {
        checks.push(check(
            name,
            required,
            if kvm.check_extension(cap) {
                Ok(format!("available ({why})"))
            } else {
                Err(format!(
                    "missing: needed for {why}; use a newer host kernel"
                ))
            },
        ));
    }
    let vm = kvm
        .create_vm()
        .map_err(|e| format!("cannot create a VM: {e}"))
        .and_then(|vm| {
            vm.create_vcpu(0)
                .map(|_| "a VM and a vCPU were created".to_owned())
                .map_err(|e| format!("cannot create a vCPU: {e}"))
        });
    checks.push(check("VM creation", true, vm));
    let caps = hv_core::probe::debug_caps();
    checks.push(check(
        "software breakpoints",
        false,
        if caps.sw_breakpoints {
            Ok("int3 traps to the debugger".into())
        } else {
            Err(
                "this KVM cannot trap int3: gdb breakpoints use the 4 debug registers instead"
                    .into(),
            )
        },
    ));
    checks.push(check(
        "data watchpoints",
        false,
        if caps.data_watchpoints {
            Ok("debug-register watchpoints fire".into())
        } else {
            Err("this KVM never raises data breakpoints: gdb `watch` is refused".into())
        },
    ));
    checks.push(guest_execution_check());
    checks
}

/// Whether guest code runs natively; not required, but it sets every guest's speed.
fn guest_execution_check() -> Check {
    let backend = hv_core::probe::kvm_backend().unwrap_or("unknown KVM module");
    let result = match hv_core::probe::guest_instruction_ns() {
        None => Err(format!("{backend}: the probe guest did not run")),
        Some(ns) if ns < EMULATED_NS => Ok(format!(
            "native ({backend}, about {ns:.0} ns per guest instruction)"
        )),
        Some(ns) => Err(format!(
            "{backend} emulates every guest instruction, about {ns:.0} ns each: guests run \
             hundreds of times slower than natively{}",
            if backend == "kvm_pvm" {
                " (PVM runs only PVM-aware guests natively, and hvdk's guests are not)"
            } else {
                ""
            }
        )),
    };
    check("guest execution", false, result)
}

/// Above this many ns per instruction the host is emulating (native is a few ns, emulation ~1 µs).
const EMULATED_NS: f64 = 100.0;

/// Runs every check, prints one line each, and fails when a required one fails.
pub fn doctor() -> anyhow::Result<ExitCode> {
    let mut checks = kvm_checks();
    checks.push(check(
        "gcc",
        true,
        tool_version(
            "gcc",
            "install it (Debian: apt-get install gcc) to build the guests",
        ),
    ));
    checks.push(check(
        "gdb",
        false,
        tool_version(
            "gdb",
            "install it (Debian: apt-get install gdb) to debug guests",
        ),
    ));
    let missing: Vec<&str> = guests::GUEST_NAMES
        .iter()
        .copied()
        .filter(|name| !guests::image(name).exists())
        .collect();
    checks.push(check(
        "guest images",
        true,
        if missing.is_empty() {
            Ok(format!(
                "{} images in {}",
                guests::GUEST_NAMES.len(),
                guests::GUESTS_DIR
            ))
        } else {
            Err(format!(
                "missing {} in {}; run `cargo build --release`",
                missing.join(", "),
                guests::GUESTS_DIR
            ))
        },
    ));

    let mut failed = 0;
    for c in &checks {
        let mark = match (c.ok, c.required) {
            (true, _) => "ok  ",
            (false, true) => "FAIL",
            (false, false) => "warn",
        };
        println!("{mark} {:<24} {}", c.name, c.detail);
        if !c.ok && c.required {
            failed += 1;
        }
    }
    if failed == 0 {
        println!("hv doctor: this machine can run hvdk");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("hv doctor: {failed} required check(s) failed; see the lines marked FAIL");
        Ok(ExitCode::FAILURE)
    }
}
