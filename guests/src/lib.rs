//! The hvdk guests: a small C SDK for bare-metal guests of the hvdk hypervisor, demo guests and
//! test guests, all built by this crate's build script with the machine's gcc.
//!
//! Each guest is a standalone x86_64 ELF executable linked at `HV_IMAGE_BASE` (0x100000), with
//! full DWARF debug information (`-Og -g3 -gdwarf-5`). The images are not in git: `cargo build`
//! writes them to `<target dir>/guests/<name>.elf` ([`GUESTS_DIR`]); use [`image`] to get the
//! path of one. The guest ABI (hypercall numbers, boot info layout) is `sdk/include/hv_abi.h`
//! ([`ABI_HEADER`]); see `guests/README.md` for the boot contract and how to write a guest.

use std::path::{Path, PathBuf};

/// Directory holding the built guest images (`<target dir>/guests`), fixed at build time.
pub const GUESTS_DIR: &str = env!("HV_GUESTS_DIR");

/// The guest SDK sources (`crt0.S`, `link.ld`, `include/`, `src/`).
pub const SDK_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/sdk");

/// The ABI contract between guests and the hypervisor (`hv_abi.h`); hv-core's tests parse it.
pub const ABI_HEADER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/sdk/include/hv_abi.h");

/// Names of all guests this crate builds, demo guests first. `image(name)` is each one's ELF.
///
/// - `control`, `telemetry`, `worker`: the demo system (control sends telemetry to telemetry over
///   channel "telemetry"; worker computes on 2 vCPUs).
/// - `sensor-model`: the device-model partition serving control's para-virtual device "sensor"
///   (`served_by = "sensor-model"` in the system description; registers in `demo/sensor.h`).
/// - `hypercalls` (+ `echo` on channel "loop"): checks every non-device-model hypercall.
/// - `crasher`: triple-faults on purpose.
/// - `random`: a hostile guest doing 100,000 random hypercalls, port and MMIO accesses.
/// - `spin`, `hcbench`, `marker`, `dmbench`: benchmark loads (debugger, hypercall, trace
///   markers, device-model round trips).
/// - `badreply`: a device model serving "sensor" that answers everything but ID reads with a
///   garbage status (the client must get bus errors).
/// - `exiter`: prints 40 lines and an unterminated one, then exits with the code its partition's
///   name ends in (`exiter-3`: 3).
pub const GUEST_NAMES: &[&str] = &[
    "control",
    "telemetry",
    "worker",
    "sensor-model",
    "hypercalls",
    "echo",
    "crasher",
    "random",
    "spin",
    "hcbench",
    "marker",
    "dmbench",
    "badreply",
    "exiter",
];

/// What a guest expects from its partition, for writing system descriptions and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestInfo {
    /// The guest's name (as in [`GUEST_NAMES`]).
    pub name: &'static str,
    /// Number of vCPUs the guest is written for (extra vCPUs park in `cli; hlt`).
    pub vcpus: u32,
    /// IPC channels it looks up by name in the boot info.
    pub channels: &'static [&'static str],
    /// Whether it ends on its own; `Some(code)` is the expected HV_EXIT code.
    pub exit_code: Option<i64>,
    /// One-line description.
    pub description: &'static str,
}

/// Per-guest expectations, in the order of [`GUEST_NAMES`].
pub const GUESTS: &[GuestInfo] = &[
    GuestInfo {
        name: "control",
        vcpus: 1,
        channels: &["telemetry"],
        exit_code: None,
        description: "1 kHz timer; every second prints its uptime and sends telemetry",
    },
    GuestInfo {
        name: "telemetry",
        vcpus: 1,
        channels: &["telemetry"],
        exit_code: None,
        description: "receives and prints control's telemetry messages",
    },
    GuestInfo {
        name: "worker",
        vcpus: 2,
        channels: &[],
        exit_code: None,
        description: "counts primes on 2 vCPUs, then idles on a 100 Hz timer",
    },
    GuestInfo {
        name: "sensor-model",
        vcpus: 1,
        channels: &[],
        exit_code: None,
        description: "device model serving the para-virtual `sensor` device that control drives",
    },
    GuestInfo {
        name: "hypercalls",
        vcpus: 1,
        channels: &["loop"],
        exit_code: Some(0),
        description: "checks every non-DM hypercall; needs `echo` on channel \"loop\"",
    },
    GuestInfo {
        name: "echo",
        vcpus: 1,
        channels: &["loop"],
        exit_code: None,
        description: "sends every message received on channel \"loop\" back",
    },
    GuestInfo {
        name: "crasher",
        vcpus: 1,
        channels: &[],
        exit_code: None,
        description: "prints a line, then triple-faults (the hypervisor reports a shutdown)",
    },
    GuestInfo {
        name: "random",
        vcpus: 1,
        channels: &[],
        exit_code: Some(0),
        description: "100,000 random hypercalls, port I/O and MMIO accesses",
    },
    GuestInfo {
        name: "spin",
        vcpus: 1,
        channels: &[],
        exit_code: None,
        description: "spins in spin_loop incrementing spin_counter (debugger benchmarks)",
    },
    GuestInfo {
        name: "hcbench",
        vcpus: 1,
        channels: &[],
        exit_code: None,
        description: "HV_PARTITION_INFO in a loop, a trace marker (1, i) every 2^20 calls",
    },
    GuestInfo {
        name: "marker",
        vcpus: 1,
        channels: &[],
        exit_code: None,
        description: "HV_TRACE_MARKER(7, seq) as fast as possible",
    },
    GuestInfo {
        name: "dmbench",
        vcpus: 1,
        channels: &[],
        exit_code: Some(0),
        description: "times sensor (device-model) reads against UART (built-in) reads",
    },
    GuestInfo {
        name: "badreply",
        vcpus: 1,
        channels: &[],
        exit_code: None,
        description: "device model for `sensor` replying with a garbage status (bus errors)",
    },
    GuestInfo {
        name: "exiter",
        vcpus: 1,
        channels: &[],
        exit_code: Some(0),
        description: "prints 40 lines and an unterminated one, exits with its name's -N code",
    },
];

/// Errors from [`find_image`].
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// The name is not one of [`GUEST_NAMES`].
    #[error("unknown guest `{0}` (known guests: {list})", list = GUEST_NAMES.join(", "))]
    Unknown(String),
    /// The guest exists but its image has not been built (or was deleted).
    #[error("guest image {} is missing; run `cargo build -p guests`", .0.display())]
    Missing(PathBuf),
}

/// Path of the ELF image of guest `name`: `<GUESTS_DIR>/<name>.elf`. It does not check that the
/// guest exists; see [`find_image`] for that.
pub fn image(name: &str) -> PathBuf {
    Path::new(GUESTS_DIR).join(format!("{name}.elf"))
}

/// Like [`image`], but checks that `name` is a known guest and that its image exists.
pub fn find_image(name: &str) -> Result<PathBuf, GuestError> {
    if !GUEST_NAMES.contains(&name) {
        return Err(GuestError::Unknown(name.to_string()));
    }
    let path = image(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(GuestError::Missing(path))
    }
}

/// The expectations of guest `name`, if it is one of ours.
pub fn info(name: &str) -> Option<&'static GuestInfo> {
    GUESTS.iter().find(|g| g.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn every_guest_is_built_as_elf64_x86_64_executable() {
        for name in GUEST_NAMES {
            let bytes = fs::read(find_image(name).unwrap()).unwrap();
            assert_eq!(&bytes[..4], b"\x7fELF", "{name}");
            assert_eq!(bytes[4], 2, "{name}: ELFCLASS64");
            assert_eq!(bytes[5], 1, "{name}: little endian");
            assert_eq!(
                u16::from_le_bytes([bytes[16], bytes[17]]),
                2,
                "{name}: ET_EXEC"
            );
            assert_eq!(
                u16::from_le_bytes([bytes[18], bytes[19]]),
                62,
                "{name}: EM_X86_64"
            );
            let entry = u64::from_le_bytes(bytes[24..32].try_into().unwrap());
            assert!(
                (0x100000..0x200000).contains(&entry),
                "{name}: entry {entry:#x}"
            );
        }
    }

    #[test]
    fn guest_tables_agree_with_the_sources() {
        let names: Vec<&str> = GUESTS.iter().map(|g| g.name).collect();
        assert_eq!(names, GUEST_NAMES);
        let mut sources = Vec::new();
        for dir in ["demo", "test"] {
            for entry in fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(dir)).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "c") {
                    // `demo/sensor_model.c` builds the guest `sensor-model`.
                    sources.push(
                        path.file_stem()
                            .unwrap()
                            .to_string_lossy()
                            .replace('_', "-"),
                    );
                }
            }
        }
        sources.sort();
        let mut expected: Vec<String> = GUEST_NAMES.iter().map(|s| s.to_string()).collect();
        expected.sort();
        assert_eq!(sources, expected);
    }

    #[test]
    fn unknown_guest_is_an_error() {
        assert!(matches!(find_image("nope"), Err(GuestError::Unknown(_))));
        assert!(info("worker").is_some_and(|g| g.vcpus == 2));
    }

    #[test]
    fn abi_header_is_there() {
        let text = fs::read_to_string(ABI_HEADER).unwrap();
        assert!(text.contains("#define HV_HYPERCALL_PORT 0xE0"));
    }
}
