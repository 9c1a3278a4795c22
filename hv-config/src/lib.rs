//! The hvdk system description: TOML types, parsing with source spans, and validation.
//!
//! A system description names the partitions (guests) to run, the IPC channels between them,
//! para-virtual devices and the device-model partitions serving them, an optional
//! time-partitioned schedule, and the debug agent's settings. Every key is documented in
//! [`reference`](mod@reference) (the crate's `CONFIG.md`).
//!
//! ```no_run
//! use hv_config::SystemConfig;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let system = SystemConfig::load("examples/demo.toml".as_ref())?;
//! for warning in system.warnings.iter() {
//!     eprintln!("{}:{}: {}", warning.line, warning.column, warning.message);
//! }
//! for (channel, gpa, size) in system.ipc_windows("control") {
//!     println!("{} at {gpa:#x} ({size} bytes)", system.channels[channel].name);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Loading reads the file, parses it and checks everything (names, references, memory layout,
//! interrupt vectors, schedule, guest images), reporting every problem at once as
//! [`Diagnostics`] with `file:line:col` and a source snippet. Warnings never make loading fail;
//! they are kept in [`SystemConfig::warnings`]. A language server can use [`analyze`] to get the
//! spanned [`RawDocument`] (for hover and go to definition) and the diagnostics in one pass.

pub mod diagnostics;
pub mod docs;
pub mod image;
pub mod layout;
pub mod raw;
mod validate;

use std::io;
use std::path::{Path, PathBuf};

pub use diagnostics::{Diagnostic, Diagnostics, Severity, suggest};
pub use raw::{RawDocument, Spanned, parse_document, parse_size};
pub use validate::{
    BUILTIN_DEVICES, DEFAULT_GDB_BASE_PORT, GDB_VCPU_PORT_OFFSET, GDB_VCPU_PORTS_PER_PARTITION,
    MAX_NAME_LEN, gdb_port_plan_top, host_cpu_count,
};

/// The key-by-key reference of the system description format (`CONFIG.md`).
pub mod reference {
    #![doc = include_str!("../CONFIG.md")]
}

/// Why a system description could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read system description {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// The description has errors; every error (and warning) found, rendered by `Display`.
    #[error("{0}")]
    Invalid(Diagnostics),
}

/// A checked system description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemConfig {
    /// Absolute path of the description file (or of the path given to [`SystemConfig::parse`]).
    pub source_path: PathBuf,
    /// `[system] name`, or the file stem when absent.
    pub name: String,
    /// `[[partition]]` entries, in declaration order.
    pub partitions: Vec<PartitionConfig>,
    /// `[[channel]]` entries, in declaration order.
    pub channels: Vec<ChannelConfig>,
    /// `[[device]]` entries, in declaration order.
    pub devices: Vec<DeviceConfig>,
    /// `[schedule]`, if the system is time-partitioned.
    pub schedule: Option<ScheduleConfig>,
    /// `[agent]`, with defaults when absent.
    pub agent: AgentConfig,
    /// Warnings found while checking (never errors).
    pub warnings: Diagnostics,
}

/// One guest partition (`[[partition]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionConfig {
    /// `name`: 1 to 31 characters of `a-z`, `0-9`, `_`, `-`; unique among partitions.
    pub name: String,
    /// `image`: the guest ELF file, resolved against the description's directory; absolute.
    pub image: PathBuf,
    /// `memory`: RAM in bytes; a multiple of 4 KiB in 2 MiB..=1 GiB. Default 16 MiB.
    pub memory: u64,
    /// `vcpus`: 1..=16. Default 1.
    pub vcpus: u32,
    /// `cpus`: host CPUs to pin to; vCPU i runs on `cpus[i % cpus.len()]`. Default: not pinned.
    pub cpus: Option<Vec<usize>>,
    /// `autostart`: start the partition when the system starts. Default true.
    pub autostart: bool,
}

/// An IPC channel (`[[channel]]`): a shared window mapped into two partitions plus a doorbell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelConfig {
    /// `name`: same rules as partition names; unique among channels.
    pub name: String,
    /// `endpoints`: the two (different) partitions it connects.
    pub endpoints: [String; 2],
    /// `size`: window size in bytes; a multiple of 4 KiB in 4 KiB..=16 MiB. Default 64 KiB.
    pub size: u64,
    /// `vector`: doorbell vector raised in the receiving partition. Default 48.
    pub vector: u8,
}

/// A para-virtual MMIO device (`[[device]]`) in a client partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceConfig {
    /// `name`: same rules as partition names; unique among devices.
    pub name: String,
    /// `partition`: the client partition whose accesses the device sees.
    pub partition: String,
    /// `mmio.base`: guest-physical base, 4 KiB aligned, in `[memory, 4 GiB)` outside the IPC area.
    pub mmio_base: u64,
    /// `mmio.size`: bytes, a non-zero multiple of 4 KiB.
    pub mmio_size: u64,
    /// `irq`: vector raised in the client, if the device interrupts.
    pub irq: Option<u8>,
    /// `served_by`: the device-model partition serving the device.
    pub served_by: Option<String>,
    /// `request_vector`: raised in the model partition when a request is queued (a model that
    /// waits in `HV_DM_REPLY_WAIT`, as the SDK's `hv_dm_serve` does, needs no doorbell and keeps
    /// it disabled). Default 33.
    pub request_vector: u8,
    /// `timeout_ms`: how long the client waits for the model before a bus error. Default 100.
    pub timeout_ms: u64,
    /// `grants`: client RAM windows the model may copy to and from. Default none.
    pub grants: Vec<MemoryRange>,
}

/// A guest-physical range `[base, base + size)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MemoryRange {
    /// First byte.
    pub base: u64,
    /// Length in bytes.
    pub size: u64,
}

/// A time-partitioned schedule (`[schedule]`), repeated every major frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleConfig {
    /// `major_frame_us`: length of one schedule cycle in microseconds.
    pub major_frame_us: u64,
    /// `[[schedule.window]]` entries, in declaration order.
    pub windows: Vec<WindowConfig>,
}

/// A window of the schedule (`[[schedule.window]]`) in which one partition may run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowConfig {
    /// `partition`: the partition that runs in this window.
    pub partition: String,
    /// `start_us`: offset from the start of the major frame.
    pub start_us: u64,
    /// `duration_us`: length; the window ends at or before the end of the major frame.
    pub duration_us: u64,
}

/// Debug agent settings (`[agent]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// `link`: `"unix:<path>"`, `"tcp:<loopback ip>:<port>"` or `"pty"`; `None` means the
    /// hypervisor's default (a Unix socket).
    pub link: Option<String>,
    /// `token_file`: file holding the TCP link's token, resolved against the description's
    /// directory; absolute.
    pub token_file: Option<PathBuf>,
    /// `gdb_base_port`: first TCP port the GDB bridge hands out. Default 3333.
    pub gdb_base_port: u16,
    /// `resume_on_detach`: resume a stopped guest when its debugger detaches. Default true.
    pub resume_on_detach: bool,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            link: None,
            token_file: None,
            gdb_base_port: DEFAULT_GDB_BASE_PORT,
            resume_on_detach: true,
        }
    }
}

/// Knobs for checks that depend on the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseOptions {
    /// Host CPU count for the `cpus` check; `None` detects it ([`host_cpu_count`]).
    pub host_cpus: Option<usize>,
    /// Read and check each partition's image file.
    pub check_images: bool,
}

impl Default for ParseOptions {
    fn default() -> Self {
        Self {
            host_cpus: None,
            check_images: true,
        }
    }
}

/// Everything learned from one source text: for tools that want the spans as well as the result.
#[derive(Debug, Clone)]
pub struct Analysis {
    /// The spanned document, unless the text was unreadable TOML.
    pub raw: Option<RawDocument>,
    /// The checked system, if there were no errors (its `warnings` duplicate those below).
    pub config: Option<SystemConfig>,
    /// Every error and warning, in source order.
    pub diagnostics: Diagnostics,
}

/// Parses and checks `source` (the description at `path`) and keeps all intermediate results.
///
/// Syntax errors stop checking at the schema level (unknown keys, types): meaning is only checked
/// once the TOML is well-formed, to avoid follow-on errors from guessed recoveries.
pub fn analyze(source: &str, path: &Path, options: &ParseOptions) -> Analysis {
    let mut diagnostics = Diagnostics::new(path.display().to_string(), source);
    let (raw, syntax_errors) = raw::read_document(source, &mut diagnostics);
    let mut config = None;
    if let Some(raw) = raw.as_ref().filter(|_| !syntax_errors) {
        let system = validate::validate(raw, path, options, &mut diagnostics);
        if options.check_images {
            validate::check_images(raw, &system, &mut diagnostics);
        }
        config = Some(system);
    }
    diagnostics.finish();
    let config = config.filter(|_| !diagnostics.has_errors()).map(|mut c| {
        let mut warnings = diagnostics.clone();
        warnings.retain(|d| !d.is_error());
        c.warnings = warnings;
        c
    });
    Analysis {
        raw,
        config,
        diagnostics,
    }
}

impl SystemConfig {
    /// Reads, parses and checks the description at `path`.
    pub fn load(path: &Path) -> Result<SystemConfig, ConfigError> {
        Self::load_with(path, &ParseOptions::default())
    }

    /// [`SystemConfig::load`] with explicit options.
    pub fn load_with(path: &Path, options: &ParseOptions) -> Result<SystemConfig, ConfigError> {
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        match String::from_utf8(bytes) {
            Ok(source) => Self::parse_with(&source, path, options),
            Err(e) => {
                let at = e.utf8_error().valid_up_to();
                let source = String::from_utf8_lossy(e.as_bytes()).into_owned();
                let mut diags = Diagnostics::new(path.display().to_string(), source);
                diags.push(
                    Diagnostic::error(at..at, "the file is not valid UTF-8")
                        .with_label("invalid byte sequence here")
                        .with_note("TOML files must be UTF-8"),
                );
                Err(ConfigError::Invalid(diags))
            }
        }
    }

    /// Parses and checks `source`; `path` is where it came from: relative image paths are
    /// resolved against its directory, its stem is the default system name, and messages show it.
    pub fn parse(source: &str, path: &Path) -> Result<SystemConfig, ConfigError> {
        Self::parse_with(source, path, &ParseOptions::default())
    }

    /// [`SystemConfig::parse`] with explicit options.
    pub fn parse_with(
        source: &str,
        path: &Path,
        options: &ParseOptions,
    ) -> Result<SystemConfig, ConfigError> {
        let analysis = analyze(source, path, options);
        analysis
            .config
            .ok_or(ConfigError::Invalid(analysis.diagnostics))
    }

    /// The partition named `name`.
    pub fn partition(&self, name: &str) -> Option<&PartitionConfig> {
        self.partitions.iter().find(|p| p.name == name)
    }

    /// Index of the partition named `name` in [`SystemConfig::partitions`].
    pub fn partition_index(&self, name: &str) -> Option<usize> {
        self.partitions.iter().position(|p| p.name == name)
    }

    /// The channel named `name`.
    pub fn channel(&self, name: &str) -> Option<&ChannelConfig> {
        self.channels.iter().find(|c| c.name == name)
    }

    /// The device named `name`.
    pub fn device(&self, name: &str) -> Option<&DeviceConfig> {
        self.devices.iter().find(|d| d.name == name)
    }

    /// Where the IPC windows of `partition` are mapped in its guest-physical space:
    /// `(index into channels, guest-physical address, size)` for each channel the partition is an
    /// endpoint of, in channel declaration order, placed consecutively from
    /// [`layout::IPC_BASE`] with each slot rounded up to 4 KiB. Empty for an unknown partition.
    pub fn ipc_windows(&self, partition: &str) -> Vec<(usize, u64, u64)> {
        layout::place_ipc_windows(
            self.channels
                .iter()
                .enumerate()
                .filter(|(_, c)| c.endpoints.iter().any(|e| e == partition))
                .map(|(i, c)| (i, c.size)),
        )
    }
}

#[cfg(test)]
mod tests;
