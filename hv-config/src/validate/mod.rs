//! Semantic checks on a [`RawDocument`]: names, references, memory layout, vectors, schedule,
//! agent link, host CPUs and guest images. Reports every problem, then builds the [`SystemConfig`].
//!
//! One `Validator` collects the diagnostics; its checks are split by concern: `agent` (system
//! name, link, gdb ports), `memory` (partitions, RAM, boot-info limits), `channels`, `devices`
//! (MMIO, grants, vector conflicts), `schedule` and `images`. This file holds the order they run
//! in, the checked values they share (`Part`, `Chan`, `Dev`) and the checks of names, references
//! and vectors that all of them use.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::diagnostics::{Diagnostic, Diagnostics, suggest};
use crate::image;
use crate::layout::{self, PAGE_SIZE};
use crate::raw::{RawChannel, RawDevice, RawDocument, RawPartition, RawRange, Spanned};
use crate::{
    AgentConfig, ChannelConfig, DeviceConfig, MemoryRange, ParseOptions, PartitionConfig,
    ScheduleConfig, SystemConfig, WindowConfig,
};

mod agent;
mod channels;
mod devices;
mod images;
mod memory;
mod schedule;

pub(crate) use images::check_images;

/// Longest partition, channel or device name.
pub const MAX_NAME_LEN: usize = 31;
/// Built-in (Rust) device models a `[[device]]` without `served_by` may name. None exist yet.
pub const BUILTIN_DEVICES: &[&str] = &[];
/// Default first GDB port.
pub const DEFAULT_GDB_BASE_PORT: u16 = 3333;
/// Offset of the first per-vCPU GDB port from the base port.
pub const GDB_VCPU_PORT_OFFSET: u32 = 100;
/// Per-vCPU GDB ports reserved per partition.
pub const GDB_VCPU_PORTS_PER_PARTITION: u32 = 16;

/// The highest TCP port of the gdb bridge's port plan with base port `base` for partitions
/// with `vcpus[k]` vCPUs: partition k is on `base + k`, its vCPU j alone on
/// `base + 100 + 16k + j`. The plan fits when this is at most 65535.
pub fn gdb_port_plan_top(base: u16, vcpus: &[u32]) -> u64 {
    let base = u64::from(base);
    let per_partition = vcpus.len().saturating_sub(1) as u64;
    let per_vcpu = vcpus.iter().enumerate().map(|(k, &n)| {
        u64::from(GDB_VCPU_PORT_OFFSET)
            + u64::from(GDB_VCPU_PORTS_PER_PARTITION) * k as u64
            + u64::from(n.max(1) - 1)
    });
    base + per_vcpu.max().unwrap_or(0).max(per_partition)
}
/// Longest `unix:` socket path (`sun_path` holds 108 bytes including the NUL).
const MAX_UNIX_PATH: usize = 107;

/// Checks `raw` (read from `path`), reporting into `diags`; returns the best-effort result, which
/// is only meaningful if `diags` has no errors.
pub(crate) fn validate(
    raw: &RawDocument,
    path: &Path,
    options: &ParseOptions,
    diags: &mut Diagnostics,
) -> SystemConfig {
    let mut v = Validator {
        diags,
        base_dir: base_dir(path),
        options,
    };
    let name = v.system_name(raw, path);
    let agent = v.agent(raw);
    let parts = v.partitions(&raw.partitions);
    v.gdb_port_plan(raw, &parts, agent.gdb_base_port);
    let index: HashMap<&str, usize> = first_definitions(parts.iter().map(|p| p.name));
    let lookup = Lookup {
        index: &index,
        names: parts
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.name.map(|n| (i, n.get_ref().as_str())))
            .filter(|&(i, n)| index.get(n) == Some(&i))
            .map(|(_, n)| n)
            .collect(),
    };
    let channels = v.channels(&raw.channels, &lookup);
    let devices = v.devices(&raw.devices, &parts, &lookup);
    v.boot_info_limits(&parts, &channels, &devices);
    v.mmio_overlaps(&devices);
    v.vector_conflicts(&parts, &channels, &devices);
    let schedule = v.schedule(raw, &parts, &lookup);
    if !parts.is_empty() && parts.iter().all(|p| !p.autostart) {
        let first = &parts[0];
        v.diags.push(
            Diagnostic::warning(first.anchor(), "no partition starts automatically")
                .with_label("every partition has `autostart = false`")
                .with_note(
                    "the system will sit idle until a partition is started from a host tool",
                ),
        );
    }
    if raw.partitions.is_empty() {
        v.diags.push(
            Diagnostic::error(0..0, "the system has no partitions")
                .with_label("expected at least one [[partition]]")
                .with_note("add a [[partition]] table with `name` and `image`"),
        );
    }

    SystemConfig {
        source_path: absolute(path),
        name,
        partitions: parts.iter().map(Part::config).collect(),
        channels: channels.iter().map(Chan::config).collect(),
        devices: devices.iter().map(Dev::config).collect(),
        schedule,
        agent,
        warnings: Diagnostics::new(path.display().to_string(), ""),
    }
}

/// Partition names in declaration order and where the first definition of each is.
struct Lookup<'a> {
    index: &'a HashMap<&'a str, usize>,
    names: Vec<&'a str>,
}

/// A partition with its checked values (`None` where the value was invalid).
struct Part<'r> {
    raw: &'r RawPartition,
    name: Option<&'r Spanned<String>>,
    image: PathBuf,
    memory: Option<u64>,
    vcpus: Option<u32>,
    cpus: Option<Vec<usize>>,
    autostart: bool,
}

impl Part<'_> {
    fn anchor(&self) -> Range<usize> {
        self.name.map_or(self.raw.span.clone(), Spanned::span)
    }

    fn label(&self) -> String {
        self.name
            .map_or_else(|| "?".into(), |n| n.get_ref().clone())
    }

    fn config(&self) -> PartitionConfig {
        PartitionConfig {
            name: self.label(),
            image: self.image.clone(),
            memory: self.memory.unwrap_or(layout::DEFAULT_MEMORY),
            vcpus: self.vcpus.unwrap_or(1),
            cpus: self.cpus.clone(),
            autostart: self.autostart,
        }
    }
}

/// A channel with its checked values.
struct Chan<'r> {
    raw: &'r RawChannel,
    name: String,
    /// Partition indices of both endpoints, if both resolve and differ.
    ends: Option<[usize; 2]>,
    endpoint_names: [String; 2],
    size: u64,
    vector: Option<u8>,
}

impl Chan<'_> {
    fn anchor(&self) -> Range<usize> {
        self.raw
            .name
            .as_ref()
            .map_or(self.raw.span.clone(), Spanned::span)
    }

    fn config(&self) -> ChannelConfig {
        ChannelConfig {
            name: self.name.clone(),
            endpoints: self.endpoint_names.clone(),
            size: self.size,
            vector: self.vector.unwrap_or(layout::DEFAULT_CHANNEL_VECTOR),
        }
    }
}

/// A device with its checked values.
struct Dev<'r> {
    raw: &'r RawDevice,
    name: String,
    client: Option<usize>,
    model: Option<usize>,
    mmio: Option<(u64, u64)>,
    irq: Option<u8>,
    request_vector: Option<u8>,
    timeout_ms: u64,
    grants: Vec<MemoryRange>,
}

impl Dev<'_> {
    fn anchor(&self) -> Range<usize> {
        self.raw
            .name
            .as_ref()
            .map_or(self.raw.span.clone(), Spanned::span)
    }

    fn config(&self) -> DeviceConfig {
        let (mmio_base, mmio_size) = self.mmio.unwrap_or_default();
        DeviceConfig {
            name: self.name.clone(),
            partition: self
                .raw
                .partition
                .as_ref()
                .map(|p| p.get_ref().clone())
                .unwrap_or_default(),
            mmio_base,
            mmio_size,
            irq: self.irq,
            served_by: self.raw.served_by.as_ref().map(|s| s.get_ref().clone()),
            request_vector: self
                .request_vector
                .unwrap_or(layout::DEFAULT_REQUEST_VECTOR),
            timeout_ms: self.timeout_ms,
            grants: self.grants.clone(),
        }
    }
}

/// One use of an interrupt vector inside a partition.
struct VectorUse {
    vector: u8,
    span: Range<usize>,
    what: String,
    is_request: bool,
}

struct Validator<'d> {
    diags: &'d mut Diagnostics,
    base_dir: PathBuf,
    options: &'d ParseOptions,
}

impl Validator<'_> {
    pub(super) fn error(
        &mut self,
        span: Range<usize>,
        message: impl Into<String>,
    ) -> &mut Diagnostic {
        self.push(Diagnostic::error(span, message))
    }

    pub(super) fn warning(
        &mut self,
        span: Range<usize>,
        message: impl Into<String>,
    ) -> &mut Diagnostic {
        self.push(Diagnostic::warning(span, message))
    }

    pub(super) fn push(&mut self, diagnostic: Diagnostic) -> &mut Diagnostic {
        self.diags.push_mut(diagnostic)
    }

    /// Reports invalid characters or length in a partition, channel or device name.
    pub(super) fn check_name(&mut self, kind: &str, name: &Spanned<String>) {
        let text = name.get_ref();
        let problem = if text.is_empty() {
            Some("is empty".to_owned())
        } else if text.len() > MAX_NAME_LEN {
            Some(format!("is longer than {MAX_NAME_LEN} characters"))
        } else {
            text.chars()
                .find(|&c| !valid_name_char(c))
                .map(|c| format!("contains {c:?}"))
        };
        if let Some(problem) = problem {
            let fixed: String = text
                .to_lowercase()
                .chars()
                .map(|c| if valid_name_char(c) { c } else { '_' })
                .take(MAX_NAME_LEN)
                .collect();
            let hint = (!fixed.is_empty()).then(|| format!("try `{fixed}`"));
            self.error(name.span(), format!("{kind} name `{text}` {problem}"))
                .label("invalid name")
                .note(format!(
                    "names are 1 to {MAX_NAME_LEN} characters of `a-z`, `0-9`, `_` and `-`"
                ))
                .optional_note(hint);
        }
    }

    /// Reports every name defined again after its first definition.
    pub(super) fn duplicates<'a>(
        &mut self,
        kind: &str,
        names: impl Iterator<Item = Option<&'a Spanned<String>>>,
    ) {
        let mut first: HashMap<&str, Range<usize>> = HashMap::new();
        for name in names.flatten() {
            match first.get(name.get_ref().as_str()) {
                Some(span) => {
                    let span = span.clone();
                    self.error(
                        name.span(),
                        format!("duplicate {kind} name `{}`", name.get_ref()),
                    )
                    .label("defined again here")
                    .related(span, "first defined here");
                }
                None => {
                    first.insert(name.get_ref(), name.span());
                }
            }
        }
    }

    /// Resolves a partition reference, reporting unknown names with a "did you mean".
    pub(super) fn resolve(
        &mut self,
        lookup: &Lookup<'_>,
        name: &Spanned<String>,
        role: &str,
    ) -> Option<usize> {
        if let Some(&i) = lookup.index.get(name.get_ref().as_str()) {
            return Some(i);
        }
        let note = match suggest(name.get_ref(), lookup.names.iter().copied()) {
            Some(close) => format!("did you mean `{close}`?"),
            None if lookup.names.is_empty() => "no partitions are defined".to_owned(),
            None => format!(
                "defined partitions: {}",
                crate::raw::quoted_list(&lookup.names)
            ),
        };
        self.error(
            name.span(),
            format!("unknown partition `{}`", name.get_ref()),
        )
        .label(format!("{role} names no partition"))
        .note(note);
        None
    }

    /// Checks a vector value: 32..=255 and not the UART's.
    pub(super) fn vector(&mut self, v: &Spanned<u64>, key: &str) -> Option<u8> {
        let n = *v.get_ref();
        let problem = match u8::try_from(n) {
            Err(_) => Some((
                format!("`{key}` = {n} is not an interrupt vector"),
                "expected 32..=255",
            )),
            Ok(x) if x < layout::FIRST_VECTOR => Some((
                format!("`{key}` = {n} is a CPU exception vector"),
                "vectors 0..=31 are reserved for exceptions; expected 32..=255",
            )),
            Ok(layout::UART_VECTOR) => Some((
                format!("`{key}` = {n} is reserved for the UART"),
                "vector 36 is the UART's; pick another",
            )),
            Ok(_) => None,
        };
        match problem {
            Some((message, label)) => {
                self.error(v.span(), message).label(label);
                None
            }
            None => u8::try_from(n).ok(),
        }
    }
}

fn first_definitions<'a>(
    names: impl Iterator<Item = Option<&'a Spanned<String>>>,
) -> HashMap<&'a str, usize> {
    let mut index = HashMap::new();
    for (i, name) in names.enumerate() {
        if let Some(name) = name {
            index.entry(name.get_ref().as_str()).or_insert(i);
        }
    }
    index
}

fn valid_name_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'
}

/// The directory relative paths in the description are resolved against.
fn base_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => absolute(dir),
        _ => absolute(Path::new(".")),
    }
}

/// `path` made absolute against the current directory (not canonicalized: symlinks stay).
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// `16M`-style rendering of a byte count.
pub(crate) fn human(bytes: u64) -> String {
    for (shift, suffix) in [(30, "G"), (20, "M"), (10, "K")] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{suffix}", bytes >> shift);
        }
    }
    format!("{bytes} bytes")
}

/// Number of host CPUs: one more than the highest online CPU (from sysfs), else the number of
/// CPUs this process may run on.
pub fn host_cpu_count() -> usize {
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").ok();
    online
        .as_deref()
        .and_then(parse_cpu_list)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Parses a sysfs CPU list such as `0-3,6,8-9` into one more than its highest CPU.
fn parse_cpu_list(text: &str) -> Option<usize> {
    text.trim()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|part| {
            part.rsplit('-')
                .next()
                .and_then(|n| n.trim().parse::<usize>().ok())
        })
        .try_fold(0usize, |max, n| Some(max.max(n? + 1)))
        .filter(|&n| n > 0)
}

#[cfg(test)]
mod tests;
