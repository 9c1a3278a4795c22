//! Semantic checks on a [`RawDocument`]: names, references, memory layout, vectors, schedule,
//! agent link, host CPUs and guest images. Reports every problem, then builds the [`SystemConfig`].

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
    fn error(&mut self, span: Range<usize>, message: impl Into<String>) -> &mut Diagnostic {
        self.push(Diagnostic::error(span, message))
    }

    fn warning(&mut self, span: Range<usize>, message: impl Into<String>) -> &mut Diagnostic {
        self.push(Diagnostic::warning(span, message))
    }

    fn push(&mut self, diagnostic: Diagnostic) -> &mut Diagnostic {
        self.diags.push_mut(diagnostic)
    }

    fn system_name(&mut self, raw: &RawDocument, path: &Path) -> String {
        if let Some(name) = raw.system.as_ref().and_then(|s| s.name.as_ref()) {
            let text = name.get_ref();
            let bad = text
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')));
            if text.is_empty() || text.len() > 63 || bad.is_some() {
                self.error(name.span(), "invalid system name")
                    .label("not a valid system name")
                    .note(
                        "system names are 1 to 63 characters of letters, digits, `_`, `-` and `.`",
                    );
            }
            return text.clone();
        }
        match path.file_stem().map(|s| s.to_string_lossy().into_owned()) {
            Some(stem) if !stem.is_empty() => stem,
            _ => "system".into(),
        }
    }

    fn agent(&mut self, raw: &RawDocument) -> AgentConfig {
        let Some(agent) = raw.agent.as_ref() else {
            return AgentConfig::default();
        };
        let mut is_tcp = false;
        if let Some(link) = &agent.link {
            is_tcp = link.get_ref().starts_with("tcp:");
            self.link(link);
        }
        let token_file = agent.token_file.as_ref().map(|t| {
            if t.get_ref().is_empty() {
                self.error(t.span(), "`token_file` is empty")
                    .label("expected a path");
            }
            if !is_tcp {
                self.warning(t.span(), "`token_file` is only used with a `tcp:` link")
                    .label("ignored");
            }
            absolute(&self.base_dir.join(t.get_ref()))
        });
        let mut gdb_base_port = DEFAULT_GDB_BASE_PORT;
        if let Some(port) = &agent.gdb_base_port {
            match u16::try_from(*port.get_ref()) {
                Ok(0) | Err(_) => {
                    self.error(
                        port.span(),
                        format!("GDB port {} is out of range", port.get_ref()),
                    )
                    .label("expected 1..=65535");
                }
                Ok(p) => {
                    if p < 1024 {
                        self.warning(port.span(), format!("GDB port {p} is a privileged port"))
                            .label("below 1024")
                            .note("binding it needs root or CAP_NET_BIND_SERVICE");
                    }
                    gdb_base_port = p;
                }
            }
        }
        AgentConfig {
            link: agent.link.as_ref().map(|l| l.get_ref().clone()),
            token_file,
            gdb_base_port,
            resume_on_detach: agent.resume_on_detach.as_ref().is_none_or(|r| *r.get_ref()),
        }
    }

    /// An explicit `gdb_base_port` must leave room for every partition's and vCPU's port.
    fn gdb_port_plan(&mut self, raw: &RawDocument, parts: &[Part], base: u16) {
        let Some(port) = raw.agent.as_ref().and_then(|a| a.gdb_base_port.as_ref()) else {
            return;
        };
        if u64::from(base) != *port.get_ref() || parts.is_empty() {
            return; // out of range: reported already
        }
        let vcpus: Vec<u32> = parts.iter().map(|p| p.vcpus.unwrap_or(1)).collect();
        let top = gdb_port_plan_top(base, &vcpus);
        if top <= u64::from(u16::MAX) {
            return;
        }
        let span = top - u64::from(base);
        let n = parts.len();
        let d = self
            .error(
                port.span(),
                format!("GDB port plan does not fit: it needs ports {base}..={top}"),
            )
            .label(format!(
                "{n} partition{} need{} {} ports above the base",
                if n == 1 { "" } else { "s" },
                if n == 1 { "s" } else { "" },
                span
            ))
            .note(
                "partition k is on BASE+k and its vCPU j alone on BASE+100+16k+j; every port must be at most 65535",
            );
        if let Some(highest) = u64::from(u16::MAX).checked_sub(span).filter(|h| *h >= 1) {
            d.note(format!(
                "for this system, use a base port of at most {highest}"
            ));
        }
    }

    fn link(&mut self, link: &Spanned<String>) {
        let text = link.get_ref();
        const FORMS: &str =
            "the link is \"unix:<socket path>\", \"tcp:127.0.0.1:<port>\" or \"pty\"";
        if text == "pty" {
            return;
        }
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                self.error(link.span(), "`unix:` link has no socket path")
                    .label("expected \"unix:<path>\"");
            } else if path.len() > MAX_UNIX_PATH {
                self.error(link.span(), "unix socket path is too long")
                    .label(format!("{} bytes", path.len()))
                    .note(format!("socket paths are limited to {MAX_UNIX_PATH} bytes"));
            }
            return;
        }
        if let Some(addr) = text.strip_prefix("tcp:") {
            match addr.parse::<SocketAddr>() {
                Err(_) => {
                    self.error(link.span(), format!("invalid TCP address `{addr}`"))
                        .label("expected <ip>:<port>")
                        .note("write e.g. \"tcp:127.0.0.1:4000\"");
                }
                Ok(sock) if sock.port() == 0 => {
                    self.error(link.span(), "TCP link port must not be 0")
                        .label("port 0");
                }
                Ok(sock) if !sock.ip().is_loopback() => {
                    self.error(link.span(), "TCP link must listen on a loopback address")
                        .label(format!("{} is not loopback", sock.ip()))
                        .note("the host link exposes guest memory and control; use 127.0.0.1 and an SSH tunnel for remote access");
                }
                Ok(_) => {}
            }
            return;
        }
        self.error(link.span(), format!("unknown link `{text}`"))
            .label("not a link address")
            .note(FORMS);
    }

    fn partitions<'r>(&mut self, raw: &'r [RawPartition]) -> Vec<Part<'r>> {
        self.duplicates("partition", raw.iter().map(|p| p.name.as_ref()));
        let host_cpus = self.options.host_cpus.unwrap_or_else(host_cpu_count);
        raw.iter()
            .map(|p| {
                if let Some(name) = &p.name {
                    self.check_name("partition", name);
                }
                let image = p.image.as_ref().map_or_else(PathBuf::new, |i| {
                    if i.get_ref().is_empty() {
                        self.error(i.span(), "`image` is empty").label("expected a path to an ELF file");
                    }
                    absolute(&self.base_dir.join(i.get_ref()))
                });
                let memory = match &p.memory {
                    None => Some(layout::DEFAULT_MEMORY),
                    Some(m) => self.memory(m),
                };
                let vcpus = match &p.vcpus {
                    None => Some(1),
                    Some(v) => match u32::try_from(*v.get_ref()) {
                        Ok(n @ 1..=layout::MAX_VCPUS) => Some(n),
                        _ => {
                            self.error(v.span(), format!("`vcpus` = {} is out of range", v.get_ref()))
                                .label(format!("expected 1..={}", layout::MAX_VCPUS));
                            None
                        }
                    },
                };
                let cpus = p.cpus.as_ref().map(|cpus| {
                    if cpus.get_ref().is_empty() {
                        self.error(cpus.span(), "`cpus` is empty")
                            .label("expected at least one host CPU")
                            .note("leave `cpus` out to let the vCPU threads float");
                    }
                    cpus.get_ref()
                        .iter()
                        .map(|c| {
                            let cpu = usize::try_from(*c.get_ref()).unwrap_or(usize::MAX);
                            if cpu >= host_cpus {
                                self.warning(c.span(), format!("host CPU {} does not exist on this machine", c.get_ref()))
                                    .label(format!("this host has {host_cpus} CPUs (0..={})", host_cpus.saturating_sub(1)))
                                    .note("pinning to it will fail here; it may exist on the target machine");
                            }
                            cpu
                        })
                        .collect()
                });
                Part {
                    raw: p,
                    name: p.name.as_ref(),
                    image,
                    memory,
                    vcpus,
                    cpus,
                    autostart: p.autostart.as_ref().is_none_or(|a| *a.get_ref()),
                }
            })
            .collect()
    }

    fn memory(&mut self, m: &Spanned<u64>) -> Option<u64> {
        let bytes = *m.get_ref();
        if !bytes.is_multiple_of(PAGE_SIZE) {
            self.error(
                m.span(),
                format!("`memory` ({bytes} bytes) is not a multiple of 4 KiB"),
            )
            .label("not page aligned");
            None
        } else if !(layout::MIN_MEMORY..=layout::MAX_MEMORY).contains(&bytes) {
            self.error(
                m.span(),
                format!("`memory` ({}) is out of range", human(bytes)),
            )
            .label("expected 2M..=1G");
            None
        } else {
            Some(bytes)
        }
    }

    /// Reports invalid characters or length in a partition, channel or device name.
    fn check_name(&mut self, kind: &str, name: &Spanned<String>) {
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
    fn duplicates<'a>(
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
    fn resolve(
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
    fn vector(&mut self, v: &Spanned<u64>, key: &str) -> Option<u8> {
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

    fn channels<'r>(&mut self, raw: &'r [RawChannel], lookup: &Lookup<'_>) -> Vec<Chan<'r>> {
        self.duplicates("channel", raw.iter().map(|c| c.name.as_ref()));
        raw.iter()
            .map(|c| {
                if let Some(name) = &c.name {
                    self.check_name("channel", name);
                }
                let mut endpoint_names = [String::new(), String::new()];
                let mut ends = None;
                if let Some(endpoints) = &c.endpoints {
                    let list = endpoints.get_ref();
                    let resolved: Vec<Option<usize>> = list
                        .iter()
                        .map(|e| self.resolve(lookup, e, "endpoint"))
                        .collect();
                    if list.len() != 2 {
                        self.error(
                            endpoints.span(),
                            format!("a channel has exactly two endpoints, not {}", list.len()),
                        )
                        .label("expected [\"<partition>\", \"<partition>\"]");
                    } else if list[0].get_ref() == list[1].get_ref() {
                        self.error(
                            list[1].span(),
                            format!(
                                "channel connects partition `{}` to itself",
                                list[0].get_ref()
                            ),
                        )
                        .label("same as the first endpoint")
                        .related(list[0].span(), "first endpoint")
                        .note("the two endpoints must be different partitions");
                    } else if let [Some(a), Some(b)] = resolved[..] {
                        ends = Some([a, b]);
                    }
                    for (slot, e) in endpoint_names.iter_mut().zip(list) {
                        slot.clone_from(e.get_ref());
                    }
                }
                let size = match &c.size {
                    None => layout::DEFAULT_CHANNEL_SIZE,
                    Some(s) => {
                        let bytes = *s.get_ref();
                        if !bytes.is_multiple_of(PAGE_SIZE) {
                            self.error(
                                s.span(),
                                format!(
                                    "channel `size` ({bytes} bytes) is not a multiple of 4 KiB"
                                ),
                            )
                            .label("not page aligned");
                        } else if !(layout::MIN_CHANNEL_SIZE..=layout::MAX_CHANNEL_SIZE)
                            .contains(&bytes)
                        {
                            self.error(
                                s.span(),
                                format!("channel `size` ({}) is out of range", human(bytes)),
                            )
                            .label("expected 4K..=16M");
                        }
                        bytes
                    }
                };
                let vector = match &c.vector {
                    None => Some(layout::DEFAULT_CHANNEL_VECTOR),
                    Some(v) => self.vector(v, "vector"),
                };
                Chan {
                    raw: c,
                    name: c
                        .name
                        .as_ref()
                        .map(|n| n.get_ref().clone())
                        .unwrap_or_default(),
                    ends,
                    endpoint_names,
                    size,
                    vector,
                }
            })
            .collect()
    }

    fn devices<'r>(
        &mut self,
        raw: &'r [RawDevice],
        parts: &[Part<'_>],
        lookup: &Lookup<'_>,
    ) -> Vec<Dev<'r>> {
        self.duplicates("device", raw.iter().map(|d| d.name.as_ref()));
        raw.iter()
            .map(|d| {
                if let Some(name) = &d.name {
                    self.check_name("device", name);
                }
                let client = d.partition.as_ref().and_then(|p| self.resolve(lookup, p, "`partition`"));
                let model = d.served_by.as_ref().and_then(|s| {
                    let model = self.resolve(lookup, s, "`served_by`")?;
                    if Some(model) == client {
                        self.error(s.span(), format!("device is served by its own client `{}`", s.get_ref()))
                            .label("same partition as `partition`")
                            .note("a device model must run in a different partition than the device's client");
                        return None;
                    }
                    Some(model)
                });
                if d.served_by.is_none() {
                    let name = d.name.as_ref().map_or("", |n| n.get_ref().as_str());
                    if !BUILTIN_DEVICES.contains(&name) {
                        let span = d.name.as_ref().map_or(d.span.clone(), Spanned::span);
                        self.error(span, format!("device `{name}` has no `served_by` and is not a built-in device"))
                            .label("no model serves this device")
                            .note("set `served_by` to the device-model partition that implements it (there are no built-in devices yet)");
                    }
                }
                let client_memory = client.and_then(|c| parts[c].memory);
                let mmio = d.mmio.as_ref().and_then(|m| self.mmio(m, client_memory));
                let irq = d.irq.as_ref().and_then(|v| self.vector(v, "irq"));
                let request_vector = match &d.request_vector {
                    None => Some(layout::DEFAULT_REQUEST_VECTOR),
                    Some(v) => self.vector(v, "request_vector"),
                };
                let timeout_ms = match &d.timeout_ms {
                    None => layout::DEFAULT_TIMEOUT_MS,
                    Some(t) => {
                        if *t.get_ref() == 0 {
                            self.error(t.span(), "`timeout_ms` must be at least 1")
                                .label("a zero timeout fails every access");
                        }
                        *t.get_ref()
                    }
                };
                let grants = d
                    .grants
                    .as_ref()
                    .map(|g| {
                        g.get_ref()
                            .iter()
                            .map(|grant| {
                                self.grant(grant, client_memory);
                                MemoryRange {
                                    base: *grant.get_ref().base.get_ref(),
                                    size: *grant.get_ref().size.get_ref(),
                                }
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                Dev {
                    raw: d,
                    name: d.name.as_ref().map(|n| n.get_ref().clone()).unwrap_or_default(),
                    client,
                    model,
                    mmio,
                    irq,
                    request_vector,
                    timeout_ms,
                    grants,
                }
            })
            .collect()
    }

    /// Checks one MMIO range against alignment, RAM, the IPC area and the 4 GiB identity map.
    fn mmio(&mut self, m: &Spanned<RawRange>, memory: Option<u64>) -> Option<(u64, u64)> {
        let RawRange { base, size } = m.get_ref();
        let (b, s) = (*base.get_ref(), *size.get_ref());
        let mut ok = true;
        if !b.is_multiple_of(PAGE_SIZE) {
            self.error(
                base.span(),
                format!("MMIO base {b:#x} is not 4 KiB aligned"),
            )
            .label("not page aligned");
            ok = false;
        }
        if s == 0 || !s.is_multiple_of(PAGE_SIZE) {
            self.error(
                size.span(),
                format!("MMIO size {s:#x} is not a non-zero multiple of 4 KiB"),
            )
            .label("expected a multiple of 0x1000");
            ok = false;
        }
        let end = b.checked_add(s).filter(|&e| e <= layout::IDENTITY_MAPPED);
        let Some(end) = end else {
            self.error(m.span(), format!("MMIO range at {b:#x} extends beyond 4 GiB"))
                .label(format!("ends at {:#x}", u128::from(b) + u128::from(s)))
                .note("the boot page tables identity-map only 0..4 GiB; MMIO must end at or below 0x1_0000_0000");
            return None;
        };
        if let Some(memory) = memory.filter(|&mem| b < mem) {
            self.error(
                m.span(),
                format!("MMIO range {b:#x}..{end:#x} overlaps the partition's RAM"),
            )
            .label(format!("RAM is 0x0..{memory:#x}"))
            .note("MMIO ranges must lie above RAM, in [memory, 4 GiB)");
            ok = false;
        }
        if b < layout::IPC_END && end > layout::IPC_BASE {
            self.error(m.span(), format!("MMIO range {b:#x}..{end:#x} overlaps the IPC area"))
                .label(format!("IPC area is {:#x}..{:#x}", layout::IPC_BASE, layout::IPC_END))
                .note("channel windows are mapped there; move the device below 0x8000_0000 or to 0x9000_0000 or above");
            ok = false;
        }
        ok.then_some((b, s))
    }

    fn grant(&mut self, grant: &Spanned<RawRange>, memory: Option<u64>) {
        let RawRange { base, size } = grant.get_ref();
        let (b, s) = (*base.get_ref(), *size.get_ref());
        if s == 0 {
            self.error(size.span(), "grant size must not be zero")
                .label("empty grant");
            return;
        }
        let Some(memory) = memory else { return };
        if b.checked_add(s).is_none_or(|end| end > memory) {
            self.error(
                grant.span(),
                format!(
                    "grant {b:#x}..{:#x} lies outside the client's RAM",
                    u128::from(b) + u128::from(s)
                ),
            )
            .label(format!("RAM is 0x0..{memory:#x}"))
            .note("grants are windows of the client's RAM the device model may copy to and from");
        }
    }

    /// Channels and devices a partition has beyond what its boot-info block can list: the guest
    /// would never see them. Devices count in hv-core's boot-info order: those the partition is
    /// the client of, then those it serves, each in declaration order.
    fn boot_info_limits(&mut self, parts: &[Part<'_>], channels: &[Chan<'_>], devices: &[Dev<'_>]) {
        const MAX_CHANNELS: usize = layout::MAX_CHANNELS_PER_PARTITION;
        const MAX_DEVICES: usize = layout::MAX_DEVICES_PER_PARTITION;
        for (p, part) in parts.iter().enumerate() {
            let mine = channels.iter().filter_map(|c| {
                let end = c.ends?.iter().position(|&e| e == p)?;
                let list = c.raw.endpoints.as_ref()?.get_ref();
                Some((c, list.get(end)?.span()))
            });
            for (number, (c, span)) in mine.enumerate().skip(MAX_CHANNELS) {
                self.error(
                    span,
                    format!(
                        "partition `{}` has more than {MAX_CHANNELS} IPC channels",
                        part.label()
                    ),
                )
                .label(format!("channel `{}` is channel number {} of `{}`", c.name, number + 1, part.label()))
                .related(part.anchor(), "this partition")
                .note(format!(
                    "a partition's boot info lists at most {MAX_CHANNELS} channels (HV_MAX_IPC); the guest could not find this one"
                ));
            }

            let as_client = devices
                .iter()
                .filter(|d| d.client == Some(p))
                .filter_map(|d| Some((d, d.raw.partition.as_ref()?.span(), "its client")));
            let as_model = devices
                .iter()
                .filter(|d| d.model == Some(p))
                .filter_map(|d| Some((d, d.raw.served_by.as_ref()?.span(), "serving it")));
            for (number, (d, span, role)) in as_client.chain(as_model).enumerate().skip(MAX_DEVICES)
            {
                self.error(
                    span,
                    format!(
                        "partition `{}` has more than {MAX_DEVICES} devices",
                        part.label()
                    ),
                )
                .label(format!("device `{}` is device number {} of `{}` ({role})", d.name, number + 1, part.label()))
                .related(part.anchor(), "this partition")
                .note(format!(
                    "a partition's boot info lists at most {MAX_DEVICES} devices (HV_MAX_DEVICES), counting the devices it is the client of first, then those it serves; the guest could not find this one"
                ));
            }
        }
    }

    /// Devices of one client whose MMIO ranges overlap.
    fn mmio_overlaps(&mut self, devices: &[Dev<'_>]) {
        for (i, d) in devices.iter().enumerate() {
            let (Some(client), Some((base, size))) = (d.client, d.mmio) else {
                continue;
            };
            let earlier = devices[..i].iter().find(|e| {
                e.client == Some(client)
                    && e.mmio
                        .is_some_and(|(eb, es)| base < eb + es && eb < base + size)
            });
            if let Some(e) = earlier {
                let span = d
                    .raw
                    .mmio
                    .as_ref()
                    .map_or_else(|| d.anchor(), Spanned::span);
                let other = e
                    .raw
                    .mmio
                    .as_ref()
                    .map_or_else(|| e.anchor(), Spanned::span);
                self.error(
                    span,
                    format!(
                        "MMIO range of device `{}` overlaps device `{}`",
                        d.name, e.name
                    ),
                )
                .label(format!("{base:#x}..{:#x}", base + size))
                .related(other, format!("`{}` is mapped here", e.name))
                .note("devices of one partition must not share MMIO addresses");
            }
        }
    }

    /// Two sources using one vector in one partition (request vectors of devices served by the
    /// same model may share: the model has one request queue).
    fn vector_conflicts(&mut self, parts: &[Part<'_>], channels: &[Chan<'_>], devices: &[Dev<'_>]) {
        let mut uses: Vec<Vec<VectorUse>> = parts.iter().map(|_| Vec::new()).collect();
        for c in channels {
            let (Some(ends), Some(vector)) = (c.ends, c.vector) else {
                continue;
            };
            let span = c
                .raw
                .vector
                .as_ref()
                .map_or_else(|| c.anchor(), Spanned::span);
            let default = if c.raw.vector.is_none() {
                " (default vector)"
            } else {
                ""
            };
            for p in ends {
                uses[p].push(VectorUse {
                    vector,
                    span: span.clone(),
                    what: format!("doorbell of channel `{}`{default}", c.name),
                    is_request: false,
                });
            }
        }
        for d in devices {
            if let (Some(client), Some(irq), Some(raw)) = (d.client, d.irq, &d.raw.irq) {
                uses[client].push(VectorUse {
                    vector: irq,
                    span: raw.span(),
                    what: format!("interrupt of device `{}`", d.name),
                    is_request: false,
                });
            }
            if let (Some(model), Some(vector)) = (d.model, d.request_vector) {
                let default = if d.raw.request_vector.is_none() {
                    " (default vector)"
                } else {
                    ""
                };
                uses[model].push(VectorUse {
                    vector,
                    span: d
                        .raw
                        .request_vector
                        .as_ref()
                        .map_or_else(|| d.anchor(), Spanned::span),
                    what: format!("request vector of device `{}`{default}", d.name),
                    is_request: true,
                });
            }
        }
        for (p, list) in uses.iter().enumerate() {
            for (i, u) in list.iter().enumerate() {
                let clash = list[..i]
                    .iter()
                    .find(|e| e.vector == u.vector && !(e.is_request && u.is_request));
                if let Some(e) = clash {
                    self.error(
                        u.span.clone(),
                        format!(
                            "vector {} is used twice in partition `{}`",
                            u.vector,
                            parts[p].label()
                        ),
                    )
                    .label(u.what.clone())
                    .related(e.span.clone(), format!("also used by the {}", e.what))
                    .note("each interrupt source of a partition needs its own vector");
                }
            }
        }
    }

    fn schedule(
        &mut self,
        raw: &RawDocument,
        parts: &[Part<'_>],
        lookup: &Lookup<'_>,
    ) -> Option<ScheduleConfig> {
        let sched = raw.schedule.as_ref()?;
        let major = sched.major_frame_us.as_ref().map(|m| {
            if *m.get_ref() == 0 {
                self.error(m.span(), "`major_frame_us` must not be zero")
                    .label("empty major frame");
            }
            *m.get_ref()
        });
        if sched.windows.is_empty() {
            self.error(sched.span.clone(), "the schedule has no windows")
                .label("no [[schedule.window]] follows")
                .note("add a [[schedule.window]] with `partition`, `start_us` and `duration_us` for each partition");
        }
        let mut checked: Vec<(usize, u64, u64, Range<usize>)> = Vec::new();
        let mut scheduled = vec![false; parts.len()];
        for w in &sched.windows {
            let part = w
                .partition
                .as_ref()
                .and_then(|p| self.resolve(lookup, p, "window"));
            if let Some(p) = part {
                scheduled[p] = true;
            }
            let (Some(start), Some(duration)) = (&w.start_us, &w.duration_us) else {
                continue;
            };
            let (s, d) = (*start.get_ref(), *duration.get_ref());
            if d == 0 {
                self.error(duration.span(), "schedule window has zero duration")
                    .label("`duration_us` = 0")
                    .note("remove the window or give it a duration");
                continue;
            }
            let end = s.saturating_add(d);
            if let Some(major) = major.filter(|&m| m > 0 && end > m) {
                let span = sched
                    .major_frame_us
                    .as_ref()
                    .map_or(sched.span.clone(), Spanned::span);
                self.error(
                    duration.span(),
                    format!("schedule window ends at {end} µs, after the major frame"),
                )
                .label(format!("{s} + {d} > {major}"))
                .related(span, format!("the major frame is {major} µs"));
                continue;
            }
            if let Some(p) = part {
                let overlap = checked
                    .iter()
                    .find(|(q, qs, qe, _)| *q == p && s < *qe && *qs < end);
                if let Some((_, qs, qe, qspan)) = overlap {
                    let qspan = qspan.clone();
                    self.error(
                        start.span(),
                        format!(
                            "schedule windows of partition `{}` overlap",
                            parts[p].label()
                        ),
                    )
                    .label(format!("{s}..{end} µs"))
                    .related(qspan, format!("overlaps this window ({qs}..{qe} µs)"))
                    .note("merge the windows or make them disjoint");
                }
                checked.push((p, s, end, start.span()));
            }
        }
        for (p, part) in parts.iter().enumerate() {
            let first_of_name = part
                .name
                .is_some_and(|n| lookup.index.get(n.get_ref().as_str()) == Some(&p));
            if !scheduled[p] && first_of_name {
                self.warning(
                    part.anchor(),
                    format!(
                        "partition `{}` has no schedule window; it never runs",
                        part.label()
                    ),
                )
                .label("not in [schedule]")
                .related(sched.span.clone(), "the schedule");
            }
        }
        Some(ScheduleConfig {
            major_frame_us: major.unwrap_or_default(),
            windows: sched
                .windows
                .iter()
                .map(|w| WindowConfig {
                    partition: w
                        .partition
                        .as_ref()
                        .map(|p| p.get_ref().clone())
                        .unwrap_or_default(),
                    start_us: w.start_us.as_ref().map_or(0, |s| *s.get_ref()),
                    duration_us: w.duration_us.as_ref().map_or(0, |d| *d.get_ref()),
                })
                .collect(),
        })
    }
}

/// Checks every partition's image file (existence, ELF64 x86_64 executable, segment placement).
pub(crate) fn check_images(raw: &RawDocument, config: &SystemConfig, diags: &mut Diagnostics) {
    for (p, part) in raw.partitions.iter().zip(&config.partitions) {
        let Some(written) = p.image.as_ref().filter(|i| !i.get_ref().is_empty()) else {
            continue;
        };
        let layout_window = valid_window(p, part);
        let problems = match image::read_image(&part.image) {
            Err(e) => vec![e],
            Ok(info) => match layout_window {
                Some((low, high)) => image::check_layout(&info, low, high),
                None => Vec::new(),
            },
        };
        for problem in problems {
            let mut d = Diagnostic::error(written.span(), problem.to_string())
                .with_label(format!("image of partition `{}`", part.name));
            if let image::ImageError::Read(io) = &problem {
                d = d.with_note(io.to_string());
            }
            if let image::ImageError::SegmentOutside { .. } = &problem {
                d = d.with_note(format!(
                    "partition `{}` has {} of RAM and {} vCPU stack(s) of 64 KiB at the top",
                    part.name,
                    human(part.memory),
                    part.vcpus
                ));
            }
            diags.push(
                d.with_optional_note(problem.hint().map(str::to_owned))
                    .with_note(format!("resolved to {}", part.image.display())),
            );
        }
    }
}

/// The image window of a partition, if its `memory` and `vcpus` were valid.
fn valid_window(raw: &RawPartition, part: &PartitionConfig) -> Option<(u64, u64)> {
    let memory_ok = raw.memory.as_ref().is_none_or(|m| {
        let m = *m.get_ref();
        m.is_multiple_of(PAGE_SIZE) && (layout::MIN_MEMORY..=layout::MAX_MEMORY).contains(&m)
    });
    let vcpus_ok = raw
        .vcpus
        .as_ref()
        .is_none_or(|v| (1..=u64::from(layout::MAX_VCPUS)).contains(v.get_ref()));
    if !(memory_ok && vcpus_ok) {
        return None;
    }
    Some(
        layout::image_window(part.memory, part.vcpus)
            .unwrap_or((layout::IMAGE_BASE, layout::IMAGE_BASE)),
    )
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
mod tests {
    use super::*;
    use crate::image::test_elf::{self, Seg};
    use crate::tests::{Fixture, expect};

    /// Two valid partitions, `control` and `model`, on lines 1..=7; tests append from line 8.
    const TWO: &str = "[[partition]]\nname = \"control\"\nimage = \"guest.elf\"\n\n[[partition]]\nname = \"model\"\nimage = \"guest.elf\"\n";

    fn with_two(rest: &str) -> String {
        format!("{TWO}{rest}")
    }

    #[test]
    fn syntax_error() {
        let fx = Fixture::new();
        let diags = fx.errors(&with_two("[[channel]\nname = \"c\"\n"));
        expect(
            &diags,
            "TOML syntax: unclosed array table, expected `]`",
            8,
            11,
        );
        assert_eq!(diags.len(), 1, "only the syntax error:\n{}", diags.render());
    }

    #[test]
    fn unknown_key() {
        let fx = Fixture::new();
        let src = with_two(
            "[[channel]]\nname = \"c\"\nendpoints = [\"control\", \"model\"]\nvectr = 50\n",
        );
        let diags = fx.errors(&src);
        let i = expect(&diags, "unknown key `vectr` in [[channel]]", 11, 1);
        assert_eq!(
            diags.iter().nth(i).unwrap().notes,
            ["did you mean `vector`?"]
        );
        let diags = fx.errors("[[partition]]\nname = \"a\"\nimage = \"guest.elf\"\nwhatever = 1\n");
        let i = expect(&diags, "unknown key `whatever` in [[partition]]", 4, 1);
        assert!(
            diags.iter().nth(i).unwrap().notes[0].starts_with("expected one of: `name`, `image`")
        );
    }

    #[test]
    fn wrong_types() {
        let fx = Fixture::new();
        let src =
            with_two("[[channel]]\nname = \"c\"\nendpoints = [\"control\", 7]\nvector = \"48\"\n");
        let diags = fx.errors(&src);
        expect(
            &diags,
            "each `endpoints` entry must be a string, found an integer",
            10,
            25,
        );
        expect(
            &diags,
            "`vector` must be an integer, found a string",
            11,
            10,
        );
        let diags = fx.errors("partition = 3\n");
        expect(
            &diags,
            "`partition` must be an array of tables, found an integer",
            1,
            13,
        );
    }

    #[test]
    fn missing_required_key() {
        let fx = Fixture::new();
        let diags = fx.errors("[[partition]]\nname = \"a\"\n");
        expect(
            &diags,
            "missing required key `image` in [[partition]]",
            1,
            1,
        );
    }

    #[test]
    fn bad_sizes() {
        let fx = Fixture::new();
        let src = "[[partition]]\nname = \"a\"\nimage = \"guest.elf\"\nmemory = \"16Q\"\n\
                   [[partition]]\nname = \"b\"\nimage = \"guest.elf\"\nmemory = 4097\n\
                   [[partition]]\nname = \"c\"\nimage = \"guest.elf\"\nmemory = \"4G\"\n\
                   [[channel]]\nname = \"x\"\nendpoints = [\"a\", \"b\"]\nsize = \"32M\"\nvector = 50\n\
                   [[channel]]\nname = \"y\"\nendpoints = [\"a\", \"c\"]\nsize = 6000\nvector = 51\n";
        let diags = fx.errors(src);
        expect(
            &diags,
            "invalid size for `memory`: unknown suffix \"Q\"",
            4,
            10,
        );
        expect(
            &diags,
            "`memory` (4097 bytes) is not a multiple of 4 KiB",
            8,
            10,
        );
        expect(&diags, "`memory` (4G) is out of range", 12, 10);
        expect(&diags, "channel `size` (32M) is out of range", 16, 8);
        expect(
            &diags,
            "channel `size` (6000 bytes) is not a multiple of 4 KiB",
            21,
            8,
        );
    }

    #[test]
    fn vcpus_out_of_range() {
        let fx = Fixture::new();
        let diags = fx.errors("[[partition]]\nname = \"a\"\nimage = \"guest.elf\"\nvcpus = 17\n");
        expect(&diags, "`vcpus` = 17 is out of range", 4, 9);
    }

    #[test]
    fn invalid_names() {
        let fx = Fixture::new();
        let diags = fx.errors("[system]\nname = \"my demo\"\n[[partition]]\nname = \"Control\"\nimage = \"guest.elf\"\n");
        expect(&diags, "invalid system name", 2, 8);
        let i = expect(&diags, "partition name `Control` contains 'C'", 4, 8);
        assert!(
            diags
                .iter()
                .nth(i)
                .unwrap()
                .notes
                .contains(&"try `control`".to_owned())
        );
        let long = "x".repeat(32);
        let diags = fx.errors(&format!(
            "[[partition]]\nname = \"{long}\"\nimage = \"guest.elf\"\n"
        ));
        expect(
            &diags,
            &format!("partition name `{long}` is longer than 31 characters"),
            2,
            8,
        );
    }

    #[test]
    fn duplicate_names() {
        let fx = Fixture::new();
        let src = with_two(
            "[[partition]]\nname = \"model\"\nimage = \"guest.elf\"\n\
             [[channel]]\nname = \"c\"\nendpoints = [\"control\", \"model\"]\n\
             [[channel]]\nname = \"c\"\nendpoints = [\"control\", \"model\"]\nvector = 49\n\
             [[device]]\nname = \"d\"\npartition = \"control\"\nserved_by = \"model\"\nmmio = { base = 0xD000_0000, size = 0x1000 }\n\
             [[device]]\nname = \"d\"\npartition = \"control\"\nserved_by = \"model\"\nmmio = { base = 0xD000_1000, size = 0x1000 }\n",
        );
        let diags = fx.errors(&src);
        let i = expect(&diags, "duplicate partition name `model`", 9, 8);
        let d = diags.iter().nth(i).unwrap();
        assert_eq!(d.related.len(), 1);
        assert_eq!(&src[d.related[0].0.clone()], "\"model\"");
        assert!(diags.render().contains("first defined here"));
        expect(&diags, "duplicate channel name `c`", 15, 8);
        expect(&diags, "duplicate device name `d`", 24, 8);
    }

    #[test]
    fn unknown_references_suggest_close_names() {
        let fx = Fixture::new();
        let src = with_two(
            "[[channel]]\nname = \"c\"\nendpoints = [\"contrl\", \"model\"]\n\
             [[device]]\nname = \"d\"\npartition = \"modle\"\nserved_by = \"sensor\"\nmmio = { base = 0xD000_0000, size = 0x1000 }\n\
             [schedule]\nmajor_frame_us = 100\n[[schedule.window]]\npartition = \"Control\"\nstart_us = 0\nduration_us = 10\n",
        );
        let diags = fx.errors(&src);
        let note = |i: usize| diags.iter().nth(i).unwrap().notes.clone();
        let i = expect(&diags, "unknown partition `contrl`", 10, 14);
        assert_eq!(note(i), ["did you mean `control`?"]);
        let i = expect(&diags, "unknown partition `modle`", 13, 13);
        assert_eq!(note(i), ["did you mean `model`?"]);
        let i = expect(&diags, "unknown partition `sensor`", 14, 13);
        assert_eq!(note(i), ["defined partitions: `control`, `model`"]);
        let i = expect(&diags, "unknown partition `Control`", 19, 13);
        assert_eq!(note(i), ["did you mean `control`?"]);
    }

    #[test]
    fn channel_endpoints() {
        let fx = Fixture::new();
        let src = with_two(
            "[[channel]]\nname = \"self\"\nendpoints = [\"control\", \"control\"]\n\
             [[channel]]\nname = \"three\"\nendpoints = [\"control\", \"model\", \"model\"]\nvector = 49\n",
        );
        let diags = fx.errors(&src);
        expect(
            &diags,
            "channel connects partition `control` to itself",
            10,
            25,
        );
        expect(&diags, "a channel has exactly two endpoints, not 3", 13, 13);
    }

    #[test]
    fn device_served_by_its_client() {
        let fx = Fixture::new();
        let src = with_two(
            "[[device]]\nname = \"d\"\npartition = \"control\"\nserved_by = \"control\"\nmmio = { base = 0xD000_0000, size = 0x1000 }\n",
        );
        let diags = fx.errors(&src);
        expect(
            &diags,
            "device is served by its own client `control`",
            11,
            13,
        );
    }

    #[test]
    fn device_without_a_model() {
        let fx = Fixture::new();
        let src = with_two(
            "[[device]]\nname = \"uart2\"\npartition = \"control\"\nmmio = { base = 0xD000_0000, size = 0x1000 }\n",
        );
        let diags = fx.errors(&src);
        expect(
            &diags,
            "device `uart2` has no `served_by` and is not a built-in device",
            9,
            8,
        );
    }

    fn device(name: &str, mmio: &str, extra: &str) -> String {
        format!(
            "[[device]]\nname = \"{name}\"\npartition = \"control\"\nserved_by = \"model\"\nmmio = {mmio}\n{extra}"
        )
    }

    #[test]
    fn mmio_placement() {
        let fx = Fixture::new();
        let src = with_two(
            &[
                device("ram", "{ base = 0x100000, size = 0x1000 }", ""),
                device("ipc", "{ base = 0x8000_0000, size = 0x1000 }", ""),
                device("high", "{ base = 0xFFFF_F000, size = 0x2000 }", ""),
                device("odd", "{ base = 0xD000_0800, size = 0x800 }", ""),
            ]
            .concat(),
        );
        let diags = fx.errors(&src);
        expect(
            &diags,
            "MMIO range 0x100000..0x101000 overlaps the partition's RAM",
            12,
            8,
        );
        expect(
            &diags,
            "MMIO range 0x80000000..0x80001000 overlaps the IPC area",
            17,
            8,
        );
        expect(
            &diags,
            "MMIO range at 0xfffff000 extends beyond 4 GiB",
            22,
            8,
        );
        expect(&diags, "MMIO base 0xd0000800 is not 4 KiB aligned", 27, 17);
        expect(
            &diags,
            "MMIO size 0x800 is not a non-zero multiple of 4 KiB",
            27,
            37,
        );
    }

    #[test]
    fn overlapping_mmio_in_one_partition() {
        let fx = Fixture::new();
        let src = with_two(
            &[
                device("a", "{ base = 0xD000_0000, size = 0x2000 }", ""),
                device("b", "{ base = 0xD000_1000, size = 0x1000 }", ""),
            ]
            .concat(),
        );
        let diags = fx.errors(&src);
        let i = expect(
            &diags,
            "MMIO range of device `b` overlaps device `a`",
            17,
            8,
        );
        assert_eq!(
            diags.iter().nth(i).unwrap().related[0].1,
            "`a` is mapped here"
        );
        assert_eq!(
            diags.len(),
            1,
            "shared default request vectors are fine:\n{}",
            diags.render()
        );
    }

    #[test]
    fn grants_outside_client_ram() {
        let fx = Fixture::new();
        let src = with_two(&device(
            "d",
            "{ base = 0xD000_0000, size = 0x1000 }",
            "grants = [{ base = 0x1000, size = 0x1000 }, { base = 0xFFF000, size = 0x2000 }]\n",
        ));
        let diags = fx.errors(&src);
        expect(
            &diags,
            "grant 0xfff000..0x1001000 lies outside the client's RAM",
            13,
            45,
        );
        assert_eq!(diags.len(), 1, "{}", diags.render());
    }

    #[test]
    fn vector_ranges() {
        let fx = Fixture::new();
        let src = with_two(
            &[
                device("a", "{ base = 0xD000_0000, size = 0x1000 }", "irq = 36\n"),
                device(
                    "b",
                    "{ base = 0xD000_1000, size = 0x1000 }",
                    "irq = 20\nrequest_vector = 300\n",
                ),
            ]
            .concat(),
        );
        let diags = fx.errors(&src);
        expect(&diags, "`irq` = 36 is reserved for the UART", 13, 7);
        expect(&diags, "`irq` = 20 is a CPU exception vector", 19, 7);
        expect(
            &diags,
            "`request_vector` = 300 is not an interrupt vector",
            20,
            18,
        );
    }

    #[test]
    fn vector_conflicts_in_one_partition() {
        let fx = Fixture::new();
        // control: channel c1's default 48 and device a's irq 48; c2's default 48 clashes too.
        // model: device a's request vector 40 and device m's irq 40.
        let src = with_two(
            &[
                "[[channel]]\nname = \"c1\"\nendpoints = [\"control\", \"model\"]\n",
                "[[channel]]\nname = \"c2\"\nendpoints = [\"model\", \"control\"]\n",
                &device(
                    "a",
                    "{ base = 0xD000_0000, size = 0x1000 }",
                    "irq = 48\nrequest_vector = 40\n",
                ),
                "[[device]]\nname = \"m\"\npartition = \"model\"\nserved_by = \"control\"\n",
                "mmio = { base = 0xD000_0000, size = 0x1000 }\nirq = 40\nrequest_vector = 41\n",
            ]
            .concat(),
        );
        let diags = fx.errors(&src);
        let conflicts: Vec<_> = diags
            .iter()
            .filter(|d| d.message.starts_with("vector "))
            .collect();
        assert_eq!(conflicts.len(), 4, "{}", diags.render());
        expect(
            &diags,
            "vector 48 is used twice in partition `control`",
            12,
            8,
        );
        expect(
            &diags,
            "vector 48 is used twice in partition `model`",
            12,
            8,
        );
        let irq48 = diags
            .iter()
            .find(|d| d.line == 19 && d.message == "vector 48 is used twice in partition `control`")
            .expect("device irq clash");
        assert_eq!(irq48.column, 7);
        assert!(
            irq48.related[0]
                .1
                .contains("doorbell of channel `c1` (default vector)")
        );
        let m40 = diags
            .iter()
            .find(|d| d.message == "vector 40 is used twice in partition `model`")
            .unwrap();
        assert_eq!((m40.line, m40.column), (26, 7));
        assert!(m40.related[0].1.contains("request vector of device `a`"));
    }

    #[test]
    fn schedule_problems() {
        let fx = Fixture::new();
        let src = with_two(
            "[schedule]\nmajor_frame_us = 1000\n\
             [[schedule.window]]\npartition = \"control\"\nstart_us = 0\nduration_us = 400\n\
             [[schedule.window]]\npartition = \"control\"\nstart_us = 300\nduration_us = 200\n\
             [[schedule.window]]\npartition = \"model\"\nstart_us = 500\nduration_us = 0\n\
             [[schedule.window]]\npartition = \"model\"\nstart_us = 900\nduration_us = 200\n",
        );
        let diags = fx.errors(&src);
        expect(
            &diags,
            "schedule windows of partition `control` overlap",
            16,
            12,
        );
        expect(&diags, "schedule window has zero duration", 21, 15);
        let i = expect(
            &diags,
            "schedule window ends at 1100 µs, after the major frame",
            25,
            15,
        );
        assert_eq!(
            diags.iter().nth(i).unwrap().related[0].1,
            "the major frame is 1000 µs"
        );
        let diags = fx.errors(&with_two("[schedule]\nmajor_frame_us = 0\n"));
        expect(&diags, "`major_frame_us` must not be zero", 9, 18);
        expect(&diags, "the schedule has no windows", 8, 1);
    }

    #[test]
    fn unscheduled_partition_is_a_warning() {
        let fx = Fixture::new();
        let src = with_two(
            "[schedule]\nmajor_frame_us = 1000\n[[schedule.window]]\npartition = \"control\"\nstart_us = 0\nduration_us = 1000\n",
        );
        let warnings = fx.warnings(&src);
        expect(
            &warnings,
            "partition `model` has no schedule window; it never runs",
            6,
            8,
        );
        assert_eq!(warnings.len(), 1);
    }

    #[test]
    fn cpus_beyond_host_are_a_warning_and_empty_cpus_an_error() {
        let fx = Fixture::new();
        let warnings =
            fx.warnings("[[partition]]\nname = \"a\"\nimage = \"guest.elf\"\ncpus = [3, 4]\n");
        let i = expect(
            &warnings,
            "host CPU 4 does not exist on this machine",
            4,
            12,
        );
        assert_eq!(
            warnings.iter().nth(i).unwrap().label,
            "this host has 4 CPUs (0..=3)"
        );
        let diags = fx.errors("[[partition]]\nname = \"a\"\nimage = \"guest.elf\"\ncpus = []\n");
        expect(&diags, "`cpus` is empty", 4, 8);
    }

    #[test]
    fn no_partitions() {
        let fx = Fixture::new();
        let diags = fx.errors("# nothing here\n");
        expect(&diags, "the system has no partitions", 1, 1);
    }

    #[test]
    fn nothing_autostarts_is_a_warning() {
        let fx = Fixture::new();
        let warnings =
            fx.warnings("[[partition]]\nname = \"a\"\nimage = \"guest.elf\"\nautostart = false\n");
        expect(&warnings, "no partition starts automatically", 2, 8);
    }

    /// `count` channels between `control` and `model` (5 lines each, from line 8), each with
    /// its own vector.
    fn channels(count: usize, size: &str) -> String {
        (0..count)
            .map(|i| format!("[[channel]]\nname = \"c{i}\"\nendpoints = [\"control\", \"model\"]\nsize = \"{size}\"\nvector = {}\n", 50 + i))
            .collect()
    }

    #[test]
    fn eight_largest_channels_fit_in_the_ipc_area() {
        let fx = Fixture::new();
        let sys = fx
            .parse(&with_two(&channels(
                layout::MAX_CHANNELS_PER_PARTITION,
                "16M",
            )))
            .unwrap_or_else(|e| panic!("{e}"));
        let windows = sys.ipc_windows("control");
        assert_eq!(windows.len(), 8);
        let (_, last, size) = windows[7];
        assert!(layout::ipc_fits(last, size), "{last:#x} + {size:#x}");
    }

    #[test]
    fn too_many_channels_for_the_boot_info() {
        let fx = Fixture::new();
        let diags = fx.errors(&with_two(&channels(10, "64K")));
        // Channel c8 (lines 48..=52) is the 9th of both partitions; c9 (53..=57) the 10th.
        let i = expect(
            &diags,
            "partition `control` has more than 8 IPC channels",
            50,
            14,
        );
        let d = diags.iter().nth(i).unwrap();
        assert_eq!(d.label, "channel `c8` is channel number 9 of `control`");
        assert_eq!(d.related[0].1, "this partition");
        assert!(
            d.notes[0].contains("at most 8 channels (HV_MAX_IPC)"),
            "{:?}",
            d.notes
        );
        expect(
            &diags,
            "partition `model` has more than 8 IPC channels",
            50,
            25,
        );
        assert!(
            diags
                .iter()
                .any(|d| d.line == 55 && d.label.contains("`c9` is channel number 10"))
        );
        assert_eq!(diags.len(), 4, "{}", diags.render());
    }

    #[test]
    fn too_many_devices_for_the_boot_info() {
        let fx = Fixture::new();
        // Devices 0..=4 (6 lines each, from line 8): client `model`, served by `control`;
        // devices 5..=8: client `control`, served by `model`. Each partition has 9 devices, and
        // its 9th in boot-info order (clients first, then served) is the last one it serves.
        let src: String = (0..9)
            .map(|i| {
                let (client, model) = if i < 5 { ("model", "control") } else { ("control", "model") };
                format!(
                    "[[device]]\nname = \"d{i}\"\npartition = \"{client}\"\nserved_by = \"{model}\"\nmmio = {{ base = {:#x}, size = 0x1000 }}\nrequest_vector = {}\n",
                    0xD000_0000u64 + i * 0x1000,
                    if i < 5 { 40 } else { 41 },
                )
            })
            .collect();
        let diags = fx.errors(&with_two(&src));
        // d4 is on lines 32..=37, d8 on lines 56..=61.
        let i = expect(
            &diags,
            "partition `control` has more than 8 devices",
            35,
            13,
        );
        let d = diags.iter().nth(i).unwrap();
        assert_eq!(
            d.label,
            "device `d4` is device number 9 of `control` (serving it)"
        );
        assert!(
            d.notes[0].contains("at most 8 devices (HV_MAX_DEVICES)"),
            "{:?}",
            d.notes
        );
        let i = expect(&diags, "partition `model` has more than 8 devices", 59, 13);
        assert_eq!(
            diags.iter().nth(i).unwrap().label,
            "device `d8` is device number 9 of `model` (serving it)"
        );
        assert_eq!(diags.len(), 2, "{}", diags.render());

        // Eight devices of one client are fine.
        let src: String = (0..8)
            .map(|i| {
                device(
                    &format!("d{i}"),
                    &format!(
                        "{{ base = {:#x}, size = 0x1000 }}",
                        0xD000_0000u64 + i * 0x1000
                    ),
                    "",
                )
            })
            .collect();
        fx.parse(&with_two(&src)).unwrap_or_else(|e| panic!("{e}"));
        let src: String = (0..9)
            .map(|i| {
                device(
                    &format!("d{i}"),
                    &format!(
                        "{{ base = {:#x}, size = 0x1000 }}",
                        0xD000_0000u64 + i * 0x1000
                    ),
                    "",
                )
            })
            .collect();
        let diags = fx.errors(&with_two(&src));
        // The 9th device (lines 48..=52) is one too many for its client and for its model.
        let i = expect(
            &diags,
            "partition `control` has more than 8 devices",
            50,
            13,
        );
        assert_eq!(
            diags.iter().nth(i).unwrap().label,
            "device `d8` is device number 9 of `control` (its client)"
        );
        expect(&diags, "partition `model` has more than 8 devices", 51, 13);
        assert_eq!(diags.len(), 2, "{}", diags.render());
    }

    #[test]
    fn agent_settings() {
        let fx = Fixture::new();
        let part = "[[partition]]\nname = \"a\"\nimage = \"guest.elf\"\n";
        let sys = fx
            .parse(&format!("[agent]\nlink = \"tcp:127.0.0.1:4000\"\ntoken_file = \"token\"\ngdb_base_port = 5000\nresume_on_detach = false\n{part}"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(sys.agent.link.as_deref(), Some("tcp:127.0.0.1:4000"));
        assert_eq!(sys.agent.token_file, Some(fx.dir().join("token")));
        assert_eq!(sys.agent.gdb_base_port, 5000);
        assert!(!sys.agent.resume_on_detach);
        assert!(
            fx.parse(&format!("[agent]\nlink = \"pty\"\n{part}"))
                .is_ok()
        );

        let diags = fx.errors(&format!(
            "[agent]\nlink = \"tcp:10.0.0.1:4000\"\ngdb_base_port = 70000\n{part}"
        ));
        expect(&diags, "TCP link must listen on a loopback address", 2, 8);
        expect(&diags, "GDB port 70000 is out of range", 3, 17);
        let diags = fx.errors(&format!("[agent]\nlink = \"serial:/dev/ttyS0\"\n{part}"));
        expect(&diags, "unknown link `serial:/dev/ttyS0`", 2, 8);
        let diags = fx.errors(&format!("[agent]\nlink = \"tcp:localhost:4000\"\n{part}"));
        expect(&diags, "invalid TCP address `localhost:4000`", 2, 8);
        let diags = fx.errors(&format!("[agent]\nlink = \"unix:\"\n{part}"));
        expect(&diags, "`unix:` link has no socket path", 2, 8);
        let warnings = fx.warnings(&format!(
            "[agent]\nlink = \"unix:/tmp/x.sock\"\ntoken_file = \"t\"\ngdb_base_port = 80\n{part}"
        ));
        expect(
            &warnings,
            "`token_file` is only used with a `tcp:` link",
            3,
            14,
        );
        expect(&warnings, "GDB port 80 is a privileged port", 4, 17);
    }

    #[test]
    fn the_whole_gdb_port_plan_must_fit() {
        let fx = Fixture::new();
        let part = |name: &str, vcpus: u32| {
            format!("[[partition]]\nname = \"{name}\"\nimage = \"guest.elf\"\nvcpus = {vcpus}\n")
        };
        let two = format!("{}{}", part("a", 1), part("b", 2));
        // a: 1 vCPU, b: 2 vCPUs -> top port BASE+100+16+1 = BASE+117.
        assert_eq!(gdb_port_plan_top(3333, &[1, 2]), 3333 + 117);
        assert_eq!(gdb_port_plan_top(1, &[]), 1);
        assert_eq!(gdb_port_plan_top(65535, &[16]), 65535 + 115);
        for base in [65535, 65419, 65500] {
            let diags = fx.errors(&format!("[agent]\ngdb_base_port = {base}\n{two}"));
            let top = base + 117;
            let i = expect(
                &diags,
                &format!("GDB port plan does not fit: it needs ports {base}..={top}"),
                2,
                17,
            );
            let d = diags.iter().nth(i).unwrap();
            assert_eq!(d.label, "2 partitions need 117 ports above the base");
            assert!(
                d.notes
                    .iter()
                    .any(|n| n.contains("base port of at most 65418")),
                "{}",
                diags.render()
            );
            assert_eq!(diags.error_count(), 1, "{}", diags.render());
        }
        // The highest base that fits is fine; so is the default.
        assert!(
            fx.parse(&format!("[agent]\ngdb_base_port = 65418\n{two}"))
                .is_ok()
        );
        assert!(fx.parse(&two).is_ok());
        // One partition alone on the last port still needs its vCPU port.
        let diags = fx.errors(&format!("[agent]\ngdb_base_port = 65535\n{}", part("a", 1)));
        expect(
            &diags,
            "GDB port plan does not fit: it needs ports 65535..=65635",
            2,
            17,
        );
    }

    #[test]
    fn token_file_empty() {
        let fx = Fixture::new();
        let diags = fx.errors(
            "[agent]\nlink = \"tcp:127.0.0.1:4000\"\ntoken_file = \"\"\n[[partition]]\nname = \"a\"\nimage = \"guest.elf\"\n",
        );
        expect(&diags, "`token_file` is empty", 3, 14);
        assert_eq!(diags.error_count(), 1, "{}", diags.render());
    }

    #[test]
    fn unix_socket_path_too_long() {
        let fx = Fixture::new();
        let path = format!("/tmp/{}", "s".repeat(MAX_UNIX_PATH - 4));
        let diags = fx.errors(&format!(
            "[agent]\nlink = \"unix:{path}\"\n[[partition]]\nname = \"a\"\nimage = \"guest.elf\"\n"
        ));
        let i = expect(&diags, "unix socket path is too long", 2, 8);
        let d = diags.iter().nth(i).unwrap();
        assert_eq!(d.label, "108 bytes");
        assert_eq!(d.notes, ["socket paths are limited to 107 bytes"]);
        // One byte shorter is the longest path that fits.
        fx.parse(&format!(
            "[agent]\nlink = \"unix:{}\"\n[[partition]]\nname = \"a\"\nimage = \"guest.elf\"\n",
            &path[..MAX_UNIX_PATH]
        ))
        .unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn tcp_port_zero() {
        let fx = Fixture::new();
        let diags = fx.errors(
            "[agent]\nlink = \"tcp:127.0.0.1:0\"\n[[partition]]\nname = \"a\"\nimage = \"guest.elf\"\n",
        );
        expect(&diags, "TCP link port must not be 0", 2, 8);
        assert_eq!(diags.len(), 1, "{}", diags.render());
    }

    #[test]
    fn image_empty() {
        let fx = Fixture::new();
        let diags = fx.errors("[[partition]]\nname = \"a\"\nimage = \"\"\n");
        let i = expect(&diags, "`image` is empty", 3, 9);
        assert_eq!(
            diags.iter().nth(i).unwrap().label,
            "expected a path to an ELF file"
        );
        assert_eq!(
            diags.len(),
            1,
            "not also an image-file error:\n{}",
            diags.render()
        );
    }

    #[test]
    fn timeout_ms_zero() {
        let fx = Fixture::new();
        let src = with_two(&device(
            "d",
            "{ base = 0xD000_0000, size = 0x1000 }",
            "timeout_ms = 0\n",
        ));
        let diags = fx.errors(&src);
        let i = expect(&diags, "`timeout_ms` must be at least 1", 13, 14);
        assert_eq!(
            diags.iter().nth(i).unwrap().label,
            "a zero timeout fails every access"
        );
        assert_eq!(diags.len(), 1, "{}", diags.render());
    }

    #[test]
    fn grant_size_zero() {
        let fx = Fixture::new();
        let src = with_two(&device(
            "d",
            "{ base = 0xD000_0000, size = 0x1000 }",
            "grants = [{ base = 0x1000, size = 0 }]\n",
        ));
        let diags = fx.errors(&src);
        let i = expect(&diags, "grant size must not be zero", 13, 35);
        assert_eq!(diags.iter().nth(i).unwrap().label, "empty grant");
        assert_eq!(diags.len(), 1, "{}", diags.render());
    }

    #[test]
    fn image_file_too_large() {
        let fx = Fixture::new();
        // A sparse file: no disk space is used, and the size check comes before any read.
        let path = fx.dir().join("huge.elf");
        std::fs::File::create(&path)
            .and_then(|f| f.set_len(image::MAX_IMAGE_FILE + 1))
            .expect("sparse file");
        let diags = fx.errors("[[partition]]\nname = \"a\"\nimage = \"huge.elf\"\n");
        expect(
            &diags,
            &format!(
                "image file is too large ({} bytes)",
                image::MAX_IMAGE_FILE + 1
            ),
            3,
            9,
        );
        assert_eq!(diags.len(), 1, "{}", diags.render());
    }

    #[test]
    fn image_big_endian() {
        let mut elf = test_elf::executable_at(0x10_0000);
        elf[5] = 2; // e_ident[EI_DATA] = ELFDATA2MSB
        let diags = image_diags("be.elf", &elf, "");
        let i = expect(&diags, "image is a big-endian ELF file", 3, 9);
        assert!(
            diags.iter().nth(i).unwrap().notes[0].contains("ELF64 x86_64 executable"),
            "{}",
            diags.render()
        );
    }

    #[test]
    fn image_unreadable() {
        let fx = Fixture::new();
        // A symlink loop cannot be read even by root.
        std::os::unix::fs::symlink("loop.elf", fx.dir().join("loop.elf")).expect("symlink");
        let diags = fx.errors("[[partition]]\nname = \"a\"\nimage = \"loop.elf\"\n");
        let i = expect(&diags, "cannot read image", 3, 9);
        let notes = &diags.iter().nth(i).unwrap().notes;
        assert!(notes[0].contains("symbolic links"), "{notes:?}");

        // A file without read permission, where permissions apply (not to root).
        use std::os::unix::fs::PermissionsExt;
        let path = fx.dir().join("locked.elf");
        std::fs::write(&path, test_elf::executable_at(0x10_0000)).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).expect("chmod");
        if std::fs::File::open(&path).is_ok() {
            eprintln!("image_unreadable: running with CAP_DAC_OVERRIDE, mode 0o000 part skipped");
            return;
        }
        let diags = fx.errors("[[partition]]\nname = \"a\"\nimage = \"locked.elf\"\n");
        let i = expect(&diags, "cannot read image", 3, 9);
        let notes = &diags.iter().nth(i).unwrap().notes;
        assert!(notes[0].contains("Permission denied"), "{notes:?}");
    }

    /// One partition whose image is `name`, written with `bytes` (line 3 holds `image`).
    fn image_diags(name: &str, bytes: &[u8], extra: &str) -> Diagnostics {
        let fx = Fixture::new();
        fx.write(name, bytes);
        fx.errors(&format!(
            "[[partition]]\nname = \"a\"\nimage = \"{name}\"\n{extra}"
        ))
    }

    #[test]
    fn image_missing() {
        let fx = Fixture::new();
        let diags =
            fx.errors("[[partition]]\nname = \"a\"\nimage = \"../target/guests/nope.elf\"\n");
        let i = expect(&diags, "image does not exist", 3, 9);
        let notes = &diags.iter().nth(i).unwrap().notes;
        assert!(
            notes.last().unwrap().starts_with("resolved to /"),
            "{notes:?}"
        );
        let diags = fx.errors("[[partition]]\nname = \"a\"\nimage = \".\"\n");
        expect(&diags, "image is not a regular file", 3, 9);
    }

    #[test]
    fn image_not_elf() {
        let diags = image_diags("guest.bin", b"\x55\x48\x89\xe5", "");
        expect(&diags, "image is not an ELF file", 3, 9);
    }

    #[test]
    fn image_not_elf64_x86_64_executable() {
        let seg = [Seg {
            addr: 0x10_0000,
            memsz: 0x1000,
            filesz: 0x10,
        }];
        let diags = image_diags("a.elf", &test_elf::build(1, 3, 2, 0x10_0000, &seg), "");
        expect(&diags, "image is not a 64-bit ELF file", 3, 9);
        let diags = image_diags("a.elf", &test_elf::build(2, 183, 2, 0x10_0000, &seg), "");
        expect(
            &diags,
            "image is built for ELF machine 183, not x86_64",
            3,
            9,
        );
        let diags = image_diags("a.elf", &test_elf::build(2, 62, 3, 0x10_0000, &seg), "");
        expect(
            &diags,
            "image is position-independent (ET_DYN), not a fixed-address executable",
            3,
            9,
        );
        let diags = image_diags("a.elf", &test_elf::build(2, 62, 1, 0x10_0000, &seg), "");
        expect(&diags, "image is not an executable (ELF type 1)", 3, 9);
    }

    #[test]
    fn image_segments_outside_the_image_area() {
        let low = test_elf::executable_at(0xF_0000);
        let diags = image_diags("low.elf", &low, "");
        expect(
            &diags,
            "image segment 0 at 0xf0000..0xf1000 lies outside the image area 0x100000..0xff0000",
            3,
            9,
        );
        // 2 MiB with 16 vCPUs leaves no room at all; 4 MiB with 2 vCPUs ends at 0x3e0000.
        let diags = image_diags(
            "a.elf",
            &test_elf::executable_at(0x10_0000),
            "memory = \"2M\"\nvcpus = 16\n",
        );
        expect(
            &diags,
            "image segment 0 at 0x100000..0x101000 lies outside the image area 0x100000..0x100000",
            3,
            9,
        );
        let big = test_elf::build(
            2,
            62,
            2,
            0x10_0000,
            &[Seg {
                addr: 0x10_0000,
                memsz: 0x30_0000,
                filesz: 0x10,
            }],
        );
        let diags = image_diags("big.elf", &big, "memory = \"4M\"\nvcpus = 2\n");
        expect(
            &diags,
            "image segment 0 at 0x100000..0x400000 lies outside the image area 0x100000..0x3e0000",
            3,
            9,
        );
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-3\n"), Some(4));
        assert_eq!(parse_cpu_list("0,2,8-9"), Some(10));
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("x"), None);
        assert!(host_cpu_count() >= 1);
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(16 << 20), "16M");
        assert_eq!(human(1 << 30), "1G");
        assert_eq!(human(4096), "4K");
        assert_eq!(human(4097), "4097 bytes");
    }
}
