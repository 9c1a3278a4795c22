//! Builds the C guests (SDK + demo + test guests) with the machine's gcc.
//!
//! The guests are standalone bare-metal ELF executables, not libraries linked into Rust, so this
//! drives gcc directly: the SDK sources are compiled once to objects in OUT_DIR, then each guest
//! is compiled and linked against them with `sdk/link.ld`. Every ELF is copied (atomically) to
//! `<target dir>/guests/<name>.elf`; `HV_GUESTS_DIR` tells the crate where that is.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// (guest name, source file relative to the crate). Keep in sync with `GUEST_NAMES` in lib.rs
/// (a unit test checks).
const GUESTS: &[(&str, &str)] = &[
    ("control", "demo/control.c"),
    ("telemetry", "demo/telemetry.c"),
    ("worker", "demo/worker.c"),
    ("sensor-model", "demo/sensor_model.c"),
    ("hypercalls", "test/hypercalls.c"),
    ("echo", "test/echo.c"),
    ("crasher", "test/crasher.c"),
    ("random", "test/random.c"),
    ("spin", "test/spin.c"),
    ("hcbench", "test/hcbench.c"),
    ("marker", "test/marker.c"),
    ("dmbench", "test/dmbench.c"),
    ("badreply", "test/badreply.c"),
    ("exiter", "test/exiter.c"),
];

/// Flags for every compilation (C and assembly).
const CFLAGS: &[&str] = &[
    "-m64",
    "-ffreestanding",
    "-fno-pic",
    "-fno-pie",
    "-fno-stack-protector",
    "-fno-omit-frame-pointer",
    "-fno-asynchronous-unwind-tables",
    "-fcf-protection=none",
    "-mno-red-zone",
    // Integer-only guests: no SSE/x87 code, so the interrupt stubs need not save that state, and
    // the guests also run where KVM emulates guest instructions (e.g. kvm-pvm), which cannot
    // execute many SSE instructions.
    "-mgeneral-regs-only",
    "-Og",
    "-g3",
    "-gdwarf-5",
    "-std=gnu11",
    "-Wall",
    "-Wextra",
    "-Werror",
];

/// Extra flags for linking a guest.
const LDFLAGS: &[&str] = &[
    "-no-pie",
    "-static",
    "-nostdlib",
    "-Wl,--build-id=none",
    "-Wl,-z,noexecstack",
    "-Wl,--fatal-warnings",
];

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    // OUT_DIR = <target>/<profile>/build/<pkg>-<hash>/out
    let target_dir = out_dir
        .ancestors()
        .nth(4)
        .unwrap_or_else(|| panic!("unexpected OUT_DIR layout: {}", out_dir.display()));
    let guests_dir = target_dir.join("guests");
    fs::create_dir_all(&guests_dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", guests_dir.display()));

    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=HV_GUEST_CC");
    for dir in ["sdk", "demo", "test"] {
        rerun_if_changed_tree(&manifest_dir.join(dir));
    }
    println!("cargo:rustc-env=HV_GUESTS_DIR={}", guests_dir.display());

    let cc: OsString = env::var_os("HV_GUEST_CC").unwrap_or_else(|| "gcc".into());
    let sdk = manifest_dir.join("sdk");
    let include = sdk.join("include");
    let link_script = sdk.join("link.ld");

    // SDK objects: the boot stub first, then sdk/src/*.{c,S} in name order.
    let mut sdk_sources = vec![sdk.join("crt0.S")];
    let mut srcs: Vec<PathBuf> = fs::read_dir(sdk.join("src"))
        .expect("read sdk/src")
        .map(|e| e.expect("read sdk/src entry").path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("c" | "S")))
        .collect();
    srcs.sort();
    sdk_sources.extend(srcs);

    let obj_dir = out_dir.join("sdk");
    fs::create_dir_all(&obj_dir).expect("create OUT_DIR/sdk");
    let mut sdk_objects = Vec::new();
    for src in &sdk_sources {
        let file = src.file_name().unwrap().to_string_lossy().replace('.', "_");
        let obj = obj_dir.join(format!("{file}.o"));
        let mut cmd = Command::new(&cc);
        cmd.args(CFLAGS)
            .arg("-I")
            .arg(&include)
            .arg("-c")
            .arg(src)
            .arg("-o")
            .arg(&obj);
        run_gcc(cmd, &format!("SDK source {}", src.display()));
        sdk_objects.push(obj);
    }

    for (name, source) in GUESTS {
        let src = manifest_dir.join(source);
        let built = out_dir.join(format!("{name}.elf"));
        let mut cmd = Command::new(&cc);
        cmd.args(CFLAGS)
            .args(LDFLAGS)
            .arg("-I")
            .arg(&include)
            .arg(format!("-Wl,-T,{}", link_script.display()))
            .arg("-o")
            .arg(&built)
            .arg(&src)
            .args(&sdk_objects);
        run_gcc(cmd, &format!("guest `{name}` ({source})"));
        install(&built, &guests_dir.join(format!("{name}.elf")));
    }
}

/// Runs gcc; on failure stops the build with gcc's own message.
fn run_gcc(mut cmd: Command, what: &str) {
    let output = cmd.output().unwrap_or_else(|e| {
        panic!(
            "cannot run {:?} for {what}: {e}\n(the guests crate needs gcc to build its C guests; \
             set HV_GUEST_CC to use another compiler)",
            cmd.get_program()
        )
    });
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        panic!(
            "gcc failed on {what} ({}):\n{stderr}\ncommand: {cmd:?}",
            output.status
        );
    }
    // With -Werror a successful run is normally silent; pass anything else on as cargo warnings.
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        println!("cargo:warning={what}: {line}");
    }
}

/// Copies `from` to `to` through a temporary file and a rename, so readers never see a partial
/// image (a debug and a release build may install into the same directory).
fn install(from: &Path, to: &Path) {
    let tmp = to.with_extension(format!("elf.tmp{}", std::process::id()));
    fs::copy(from, &tmp).unwrap_or_else(|e| panic!("cannot write {}: {e}", tmp.display()));
    fs::rename(&tmp, to).unwrap_or_else(|e| panic!("cannot install {}: {e}", to.display()));
}

/// `cargo:rerun-if-changed` for a directory and every file below it.
fn rerun_if_changed_tree(dir: &Path) {
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut entries: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(_) => return,
    };
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rerun_if_changed_tree(&path);
        } else {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}
