//! Schema layer: TOML text to spanned raw structs, reporting syntax errors, unknown keys and wrong types.
//!
//! Nothing here knows what values mean; [`crate::analyze`] checks that. Every value keeps its byte
//! span so diagnostics (and a language server: hover, go to definition) can point at it.

use std::ops::Range;

use toml::de::{DeTable, DeValue};

pub use toml::Spanned;

use crate::diagnostics::{Diagnostic, Diagnostics, suggest};

/// The whole description as written, before validation. Absent keys are `None`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RawDocument {
    /// Top-level keys as written (for hover and completion).
    pub keys: Vec<Spanned<String>>,
    /// `[system]`.
    pub system: Option<RawSystem>,
    /// `[agent]`.
    pub agent: Option<RawAgent>,
    /// `[[partition]]` entries in declaration order.
    pub partitions: Vec<RawPartition>,
    /// `[[channel]]` entries in declaration order.
    pub channels: Vec<RawChannel>,
    /// `[[device]]` entries in declaration order.
    pub devices: Vec<RawDevice>,
    /// `[schedule]`.
    pub schedule: Option<RawSchedule>,
}

/// `[system]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RawSystem {
    /// Span of the table header (or inline table).
    pub span: Range<usize>,
    /// Keys as written.
    pub keys: Vec<Spanned<String>>,
    /// `name`.
    pub name: Option<Spanned<String>>,
}

/// `[agent]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RawAgent {
    /// Span of the table header (or inline table).
    pub span: Range<usize>,
    /// Keys as written.
    pub keys: Vec<Spanned<String>>,
    /// `link`.
    pub link: Option<Spanned<String>>,
    /// `token_file`.
    pub token_file: Option<Spanned<String>>,
    /// `gdb_base_port`.
    pub gdb_base_port: Option<Spanned<u64>>,
    /// `resume_on_detach`.
    pub resume_on_detach: Option<Spanned<bool>>,
}

/// One `[[partition]]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RawPartition {
    /// Span of the table header (or inline table).
    pub span: Range<usize>,
    /// Keys as written.
    pub keys: Vec<Spanned<String>>,
    /// `name`.
    pub name: Option<Spanned<String>>,
    /// `image`, as written (not yet resolved).
    pub image: Option<Spanned<String>>,
    /// `memory` in bytes (suffixes already applied).
    pub memory: Option<Spanned<u64>>,
    /// `vcpus`.
    pub vcpus: Option<Spanned<u64>>,
    /// `cpus`: the array and each element.
    pub cpus: Option<Spanned<Vec<Spanned<u64>>>>,
    /// `autostart`.
    pub autostart: Option<Spanned<bool>>,
}

/// One `[[channel]]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RawChannel {
    /// Span of the table header (or inline table).
    pub span: Range<usize>,
    /// Keys as written.
    pub keys: Vec<Spanned<String>>,
    /// `name`.
    pub name: Option<Spanned<String>>,
    /// `endpoints`: the array and each partition name.
    pub endpoints: Option<Spanned<Vec<Spanned<String>>>>,
    /// `size` in bytes.
    pub size: Option<Spanned<u64>>,
    /// `vector`.
    pub vector: Option<Spanned<u64>>,
}

/// One `[[device]]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RawDevice {
    /// Span of the table header (or inline table).
    pub span: Range<usize>,
    /// Keys as written.
    pub keys: Vec<Spanned<String>>,
    /// `name`.
    pub name: Option<Spanned<String>>,
    /// `partition` (the client).
    pub partition: Option<Spanned<String>>,
    /// `mmio = { base, size }`.
    pub mmio: Option<Spanned<RawRange>>,
    /// `irq`.
    pub irq: Option<Spanned<u64>>,
    /// `served_by`.
    pub served_by: Option<Spanned<String>>,
    /// `request_vector`.
    pub request_vector: Option<Spanned<u64>>,
    /// `timeout_ms`.
    pub timeout_ms: Option<Spanned<u64>>,
    /// `grants`: the array and each window.
    pub grants: Option<Spanned<Vec<Spanned<RawRange>>>>,
}

/// A `{ base = ..., size = ... }` inline table as written; both keys were present and well typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRange {
    /// `base`.
    pub base: Spanned<u64>,
    /// `size` in bytes.
    pub size: Spanned<u64>,
}

/// `[schedule]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RawSchedule {
    /// Span of the table header (or inline table).
    pub span: Range<usize>,
    /// Keys as written.
    pub keys: Vec<Spanned<String>>,
    /// `major_frame_us`.
    pub major_frame_us: Option<Spanned<u64>>,
    /// `[[schedule.window]]` entries in declaration order.
    pub windows: Vec<RawWindow>,
}

/// One `[[schedule.window]]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RawWindow {
    /// Span of the table header (or inline table).
    pub span: Range<usize>,
    /// Keys as written.
    pub keys: Vec<Spanned<String>>,
    /// `partition`.
    pub partition: Option<Spanned<String>>,
    /// `start_us`.
    pub start_us: Option<Spanned<u64>>,
    /// `duration_us`.
    pub duration_us: Option<Spanned<u64>>,
}

/// Keys allowed at the top level.
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "system",
    "agent",
    "partition",
    "channel",
    "device",
    "schedule",
];
/// Keys allowed in `[system]`.
pub const SYSTEM_KEYS: &[&str] = &["name"];
/// Keys allowed in `[agent]`.
pub const AGENT_KEYS: &[&str] = &["link", "token_file", "gdb_base_port", "resume_on_detach"];
/// Keys allowed in `[[partition]]`.
pub const PARTITION_KEYS: &[&str] = &["name", "image", "memory", "vcpus", "cpus", "autostart"];
/// Keys allowed in `[[channel]]`.
pub const CHANNEL_KEYS: &[&str] = &["name", "endpoints", "size", "vector"];
/// Keys allowed in `[[device]]`.
pub const DEVICE_KEYS: &[&str] = &[
    "name",
    "partition",
    "mmio",
    "irq",
    "served_by",
    "request_vector",
    "timeout_ms",
    "grants",
];
/// Keys allowed in a `{ base, size }` range.
pub const RANGE_KEYS: &[&str] = &["base", "size"];
/// Keys allowed in `[schedule]`.
pub const SCHEDULE_KEYS: &[&str] = &["major_frame_us", "window"];
/// Keys allowed in `[[schedule.window]]`.
pub const WINDOW_KEYS: &[&str] = &["partition", "start_us", "duration_us"];

/// Parses TOML text into a [`RawDocument`], reporting syntax errors, unknown keys, missing required
/// keys and wrongly typed values (all of them, not just the first). Meaning is not checked.
///
/// If there are syntax errors, only they are reported (schema problems in a recovered tree are
/// mostly their echoes), but the document still holds everything that could be recovered. It is
/// `None` only if nothing could be.
pub fn parse_document(source: &str) -> (Option<RawDocument>, Diagnostics) {
    let mut diags = Diagnostics::new("<input>", source);
    let (doc, _) = read_document(source, &mut diags);
    diags.finish();
    (doc, diags)
}

/// Like [`parse_document`], reporting into `diags`; also returns whether there were syntax errors.
pub(crate) fn read_document(source: &str, diags: &mut Diagnostics) -> (Option<RawDocument>, bool) {
    let (root, errors) = DeTable::parse_recoverable(source);
    let syntax_errors = !errors.is_empty();
    for error in &errors {
        let span = error.span().unwrap_or(0..0);
        let mut message = error.message().trim().to_owned();
        if let Some(key) = source
            .get(span.clone())
            .filter(|_| message == "duplicate key")
        {
            message = format!("duplicate key `{key}`");
        }
        diags.push(Diagnostic::error(span, format!("TOML syntax: {message}")).with_label("here"));
    }
    let root = root.into_inner();
    if syntax_errors && root.is_empty() {
        return (None, true);
    }
    if syntax_errors {
        // Schema problems in a recovered tree are mostly follow-on errors of the syntax error
        // (a broken header moves its keys elsewhere): read the document, drop what it reports.
        let mut scratch = Diagnostics::new("", source);
        let doc = Reader {
            diags: &mut scratch,
        }
        .document(&root);
        return (Some(doc), true);
    }
    (Some(Reader { diags }.document(&root)), false)
}

type Value<'i> = Spanned<DeValue<'i>>;

struct Reader<'d> {
    diags: &'d mut Diagnostics,
}

/// One TOML table being read: reports unknown keys once, then hands out typed fields.
struct Fields<'t, 'i> {
    table: &'t DeTable<'i>,
    span: Range<usize>,
    section: &'static str,
}

impl<'t, 'i> Fields<'t, 'i> {
    fn get(&self, key: &str) -> Option<&'t Value<'i>> {
        self.table.get(key)
    }
}

impl Reader<'_> {
    fn document(&mut self, root: &DeTable<'_>) -> RawDocument {
        let fields = self.fields(root, 0..0, "the top level", TOP_LEVEL_KEYS);
        let mut doc = RawDocument {
            keys: sorted_keys(root),
            ..RawDocument::default()
        };
        if let Some(value) = fields.get("system") {
            doc.system = self.section(value, "system").map(|(t, span)| {
                let f = self.fields(t, span.clone(), "[system]", SYSTEM_KEYS);
                RawSystem {
                    span,
                    keys: sorted_keys(t),
                    name: self.string(&f, "name"),
                }
            });
        }
        if let Some(value) = fields.get("agent") {
            doc.agent = self
                .section(value, "agent")
                .map(|(t, span)| self.agent(t, span));
        }
        if let Some(value) = fields.get("partition") {
            doc.partitions = self
                .array_of_tables(value, "partition")
                .into_iter()
                .map(|(t, span)| self.partition(t, span))
                .collect();
        }
        if let Some(value) = fields.get("channel") {
            doc.channels = self
                .array_of_tables(value, "channel")
                .into_iter()
                .map(|(t, span)| self.channel(t, span))
                .collect();
        }
        if let Some(value) = fields.get("device") {
            doc.devices = self
                .array_of_tables(value, "device")
                .into_iter()
                .map(|(t, span)| self.device(t, span))
                .collect();
        }
        if let Some(value) = fields.get("schedule") {
            doc.schedule = self
                .section(value, "schedule")
                .map(|(t, span)| self.schedule(t, span));
        }
        doc
    }

    fn agent(&mut self, t: &DeTable<'_>, span: Range<usize>) -> RawAgent {
        let f = self.fields(t, span.clone(), "[agent]", AGENT_KEYS);
        RawAgent {
            span,
            keys: sorted_keys(t),
            link: self.string(&f, "link"),
            token_file: self.string(&f, "token_file"),
            gdb_base_port: self.integer(&f, "gdb_base_port"),
            resume_on_detach: self.boolean(&f, "resume_on_detach"),
        }
    }

    fn partition(&mut self, t: &DeTable<'_>, span: Range<usize>) -> RawPartition {
        let f = self.fields(t, span.clone(), "[[partition]]", PARTITION_KEYS);
        let raw = RawPartition {
            span,
            keys: sorted_keys(t),
            name: self.string(&f, "name"),
            image: self.string(&f, "image"),
            memory: self.size(&f, "memory"),
            vcpus: self.integer(&f, "vcpus"),
            cpus: self.array(&f, "cpus", "an integer", |r, v| {
                r.integer_value("each `cpus` entry", v)
            }),
            autostart: self.boolean(&f, "autostart"),
        };
        self.require(&f, &["name", "image"]);
        raw
    }

    fn channel(&mut self, t: &DeTable<'_>, span: Range<usize>) -> RawChannel {
        let f = self.fields(t, span.clone(), "[[channel]]", CHANNEL_KEYS);
        let raw = RawChannel {
            span,
            keys: sorted_keys(t),
            name: self.string(&f, "name"),
            endpoints: self.array(&f, "endpoints", "a partition name", |r, v| {
                r.string_value("each `endpoints` entry", v)
            }),
            size: self.size(&f, "size"),
            vector: self.integer(&f, "vector"),
        };
        self.require(&f, &["name", "endpoints"]);
        raw
    }

    fn device(&mut self, t: &DeTable<'_>, span: Range<usize>) -> RawDevice {
        let f = self.fields(t, span.clone(), "[[device]]", DEVICE_KEYS);
        let raw = RawDevice {
            span,
            keys: sorted_keys(t),
            name: self.string(&f, "name"),
            partition: self.string(&f, "partition"),
            mmio: f.get("mmio").and_then(|v| self.range_value("`mmio`", v)),
            irq: self.integer(&f, "irq"),
            served_by: self.string(&f, "served_by"),
            request_vector: self.integer(&f, "request_vector"),
            timeout_ms: self.integer(&f, "timeout_ms"),
            grants: self.array(&f, "grants", "a `{ base, size }` table", |r, v| {
                r.range_value("each `grants` entry", v)
            }),
        };
        self.require(&f, &["name", "partition", "mmio"]);
        raw
    }

    fn schedule(&mut self, t: &DeTable<'_>, span: Range<usize>) -> RawSchedule {
        let f = self.fields(t, span.clone(), "[schedule]", SCHEDULE_KEYS);
        let windows = f
            .get("window")
            .map(|value| {
                self.array_of_tables(value, "window")
                    .into_iter()
                    .map(|(t, span)| {
                        let f = self.fields(t, span.clone(), "[[schedule.window]]", WINDOW_KEYS);
                        let raw = RawWindow {
                            span,
                            keys: sorted_keys(t),
                            partition: self.string(&f, "partition"),
                            start_us: self.integer(&f, "start_us"),
                            duration_us: self.integer(&f, "duration_us"),
                        };
                        self.require(&f, &["partition", "start_us", "duration_us"]);
                        raw
                    })
                    .collect()
            })
            .unwrap_or_default();
        let raw = RawSchedule {
            span,
            keys: sorted_keys(t),
            major_frame_us: self.integer(&f, "major_frame_us"),
            windows,
        };
        self.require(&f, &["major_frame_us"]);
        raw
    }

    /// Wraps `table`, reporting every key not in `known` (with a "did you mean").
    fn fields<'t, 'i>(
        &mut self,
        table: &'t DeTable<'i>,
        span: Range<usize>,
        section: &'static str,
        known: &[&str],
    ) -> Fields<'t, 'i> {
        for key in sorted_keys(table) {
            if known.contains(&key.get_ref().as_str()) {
                continue;
            }
            let note = match suggest(key.get_ref(), known.iter().copied()) {
                Some(close) => format!("did you mean `{close}`?"),
                None => format!("expected one of: {}", quoted_list(known)),
            };
            self.diags.push(
                Diagnostic::error(
                    key.span(),
                    format!("unknown key `{}` in {section}", key.get_ref()),
                )
                .with_label("unknown key")
                .with_note(note),
            );
        }
        Fields {
            table,
            span,
            section,
        }
    }

    /// Reports each of `keys` that is absent from `f`.
    fn require(&mut self, f: &Fields<'_, '_>, keys: &[&str]) {
        for key in keys {
            if f.get(key).is_none() {
                self.diags.push(
                    Diagnostic::error(
                        f.span.clone(),
                        format!("missing required key `{key}` in {}", f.section),
                    )
                    .with_label(format!("this {} has no `{key}`", f.section)),
                );
            }
        }
    }

    /// A single table such as `[agent]`.
    fn section<'t, 'i>(
        &mut self,
        value: &'t Value<'i>,
        key: &str,
    ) -> Option<(&'t DeTable<'i>, Range<usize>)> {
        match value.get_ref() {
            DeValue::Table(t) => Some((t, value.span())),
            other => {
                self.type_error(&format!("`{key}`"), value.span(), "a table", other);
                None
            }
        }
    }

    /// An array of tables such as `[[partition]]`; a single `[partition]` table is reported and
    /// then read as if it were one entry.
    fn array_of_tables<'t, 'i>(
        &mut self,
        value: &'t Value<'i>,
        key: &str,
    ) -> Vec<(&'t DeTable<'i>, Range<usize>)> {
        match value.get_ref() {
            DeValue::Array(items) => items
                .iter()
                .filter_map(|item| match item.get_ref() {
                    DeValue::Table(t) => Some((t, item.span())),
                    other => {
                        self.type_error(
                            &format!("each `{key}` entry"),
                            item.span(),
                            "a table",
                            other,
                        );
                        None
                    }
                })
                .collect(),
            DeValue::Table(t) => {
                self.diags.push(
                    Diagnostic::error(value.span(), format!("`{key}` must be an array of tables"))
                        .with_label("a single table")
                        .with_note(format!(
                            "write `[[{key}]]` (double brackets) for each entry"
                        )),
                );
                vec![(t, value.span())]
            }
            other => {
                self.type_error(
                    &format!("`{key}`"),
                    value.span(),
                    "an array of tables",
                    other,
                );
                Vec::new()
            }
        }
    }

    fn string(&mut self, f: &Fields<'_, '_>, key: &str) -> Option<Spanned<String>> {
        f.get(key)
            .and_then(|v| self.string_value(&format!("`{key}`"), v))
    }

    fn integer(&mut self, f: &Fields<'_, '_>, key: &str) -> Option<Spanned<u64>> {
        f.get(key)
            .and_then(|v| self.integer_value(&format!("`{key}`"), v))
    }

    fn size(&mut self, f: &Fields<'_, '_>, key: &str) -> Option<Spanned<u64>> {
        f.get(key)
            .and_then(|v| self.size_value(&format!("`{key}`"), v))
    }

    fn boolean(&mut self, f: &Fields<'_, '_>, key: &str) -> Option<Spanned<bool>> {
        let value = f.get(key)?;
        match value.get_ref() {
            DeValue::Boolean(b) => Some(Spanned::new(value.span(), *b)),
            other => {
                self.type_error(
                    &format!("`{key}`"),
                    value.span(),
                    "`true` or `false`",
                    other,
                );
                None
            }
        }
    }

    /// An array whose elements are read by `element`; bad elements are reported and left out.
    fn array<T>(
        &mut self,
        f: &Fields<'_, '_>,
        key: &str,
        what: &str,
        mut element: impl FnMut(&mut Self, &Value<'_>) -> Option<T>,
    ) -> Option<Spanned<Vec<T>>> {
        let value = f.get(key)?;
        match value.get_ref() {
            DeValue::Array(items) => {
                let items = items
                    .iter()
                    .filter_map(|item| element(self, item))
                    .collect();
                Some(Spanned::new(value.span(), items))
            }
            other => {
                self.type_error(
                    &format!("`{key}`"),
                    value.span(),
                    &format!("an array of {what}s"),
                    other,
                );
                None
            }
        }
    }

    fn string_value(&mut self, subject: &str, value: &Value<'_>) -> Option<Spanned<String>> {
        match value.get_ref() {
            DeValue::String(s) => Some(Spanned::new(value.span(), s.to_string())),
            other => {
                self.type_error(subject, value.span(), "a string", other);
                None
            }
        }
    }

    fn integer_value(&mut self, subject: &str, value: &Value<'_>) -> Option<Spanned<u64>> {
        match value.get_ref() {
            DeValue::Integer(i) => match u64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => Some(Spanned::new(value.span(), n)),
                Err(_) => {
                    let negative = i.as_str().starts_with('-');
                    let message = if negative {
                        format!("{subject} must not be negative")
                    } else {
                        format!("{subject} is too large")
                    };
                    self.diags.push(
                        Diagnostic::error(value.span(), message)
                            .with_label("expected a non-negative integer"),
                    );
                    None
                }
            },
            other => {
                self.type_error(subject, value.span(), "an integer", other);
                None
            }
        }
    }

    /// Bytes: an integer, or a string such as `"64K"`, `"16M"`, `"1G"` (see [`parse_size`]).
    fn size_value(&mut self, subject: &str, value: &Value<'_>) -> Option<Spanned<u64>> {
        match value.get_ref() {
            DeValue::Integer(_) => self.integer_value(subject, value),
            DeValue::String(s) => match parse_size(s) {
                Ok(n) => Some(Spanned::new(value.span(), n)),
                Err(problem) => {
                    self.diags.push(
                        Diagnostic::error(value.span(), format!("invalid size for {subject}: {problem}"))
                            .with_label("not a size")
                            .with_note("write bytes as an integer, or a string with a K, M or G suffix (powers of 1024), e.g. \"64K\" or \"16M\""),
                    );
                    None
                }
            },
            other => {
                self.type_error(
                    subject,
                    value.span(),
                    "a size (integer or string like \"16M\")",
                    other,
                );
                None
            }
        }
    }

    /// `{ base = ..., size = ... }`.
    fn range_value(&mut self, subject: &str, value: &Value<'_>) -> Option<Spanned<RawRange>> {
        let DeValue::Table(t) = value.get_ref() else {
            self.type_error(
                subject,
                value.span(),
                "a `{ base = ..., size = ... }` table",
                value.get_ref(),
            );
            return None;
        };
        let section = if subject == "`mmio`" {
            "`mmio`"
        } else {
            "a grant"
        };
        let f = self.fields(t, value.span(), section, RANGE_KEYS);
        let base = self.integer(&f, "base");
        let size = self.size(&f, "size");
        self.require(&f, &["base", "size"]);
        Some(Spanned::new(
            value.span(),
            RawRange {
                base: base?,
                size: size?,
            },
        ))
    }

    fn type_error(
        &mut self,
        subject: &str,
        span: Range<usize>,
        expected: &str,
        found: &DeValue<'_>,
    ) {
        self.diags.push(
            Diagnostic::error(
                span,
                format!(
                    "{subject} must be {expected}, found {}",
                    with_article(found.type_str())
                ),
            )
            .with_label(format!("expected {expected}")),
        );
    }
}

/// Parses a size: decimal digits (`_` allowed) with an optional `K`, `M` or `G` suffix
/// (case-insensitive, optionally followed by `iB`), meaning powers of 1024.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let digits_end = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '_'))
        .unwrap_or(trimmed.len());
    let (digits, suffix) = trimmed.split_at(digits_end);
    let digits: String = digits.chars().filter(|&c| c != '_').collect();
    if digits.is_empty() {
        return Err(format!("\"{text}\" does not start with a number"));
    }
    let shift = match suffix.trim_start().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        _ => return Err(format!("unknown suffix \"{}\"", suffix.trim_start())),
    };
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("\"{text}\" is too large"))?;
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("\"{text}\" is too large"))
}

fn sorted_keys(table: &DeTable<'_>) -> Vec<Spanned<String>> {
    let mut keys: Vec<_> = table
        .iter()
        .map(|(k, _)| Spanned::new(k.span(), k.get_ref().to_string()))
        .collect();
    keys.sort_by_key(|k| k.span().start);
    keys
}

fn with_article(type_name: &str) -> String {
    match type_name.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => format!("an {type_name}"),
        _ => format!("a {type_name}"),
    }
}

/// `a, b, c` with each name in backticks.
pub(crate) fn quoted_list<'a>(names: impl IntoIterator<Item = &'a &'a str>) -> String {
    names
        .into_iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(diags: &Diagnostics) -> Vec<String> {
        diags.iter().map(|d| d.message.clone()).collect()
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("16M"), Ok(16 << 20));
        assert_eq!(parse_size("16 MiB"), Ok(16 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("1_024K"), Ok(1 << 20));
        assert!(parse_size("M").is_err());
        assert!(parse_size("16Q").is_err());
        assert!(parse_size("-1M").is_err());
        assert!(parse_size("99999999999999999999").is_err());
        assert!(parse_size("99999999999G").is_err());
    }

    #[test]
    fn reads_spans_and_values() {
        let src = "[[partition]]\nname = \"a\"\nimage = \"a.elf\"\nmemory = \"2M\"\ncpus = [0, 0x1]\n\n[[device]]\nname = \"d\"\npartition = \"a\"\nmmio = { base = 0xD000_0000, size = \"4K\" }\n";
        let (doc, diags) = parse_document(src);
        assert!(diags.is_empty(), "{}", diags.render());
        let doc = doc.unwrap();
        let p = &doc.partitions[0];
        assert_eq!(p.span, 0..13);
        let name = p.name.as_ref().unwrap();
        assert_eq!(&src[name.span()], "\"a\"");
        assert_eq!(*p.memory.as_ref().unwrap().get_ref(), 2 << 20);
        let cpus: Vec<u64> = p
            .cpus
            .as_ref()
            .unwrap()
            .get_ref()
            .iter()
            .map(|c| *c.get_ref())
            .collect();
        assert_eq!(cpus, [0, 1]);
        let keys: Vec<&str> = p.keys.iter().map(|k| k.get_ref().as_str()).collect();
        assert_eq!(keys, ["name", "image", "memory", "cpus"]);
        let mmio = doc.devices[0].mmio.as_ref().unwrap().get_ref();
        assert_eq!(*mmio.base.get_ref(), 0xD000_0000);
        assert_eq!(*mmio.size.get_ref(), 0x1000);
    }

    #[test]
    fn reports_every_schema_problem() {
        let src = "[[partition]]\nnmae = \"a\"\nvcpus = \"two\"\nmemory = -5\n[agent]\nresume_on_detach = 1\n[bogus]\n";
        let (doc, diags) = parse_document(src);
        assert!(doc.is_some());
        let messages = messages(&diags);
        assert_eq!(
            messages,
            [
                "missing required key `name` in [[partition]]",
                "missing required key `image` in [[partition]]",
                "unknown key `nmae` in [[partition]]",
                "`vcpus` must be an integer, found a string",
                "`memory` must not be negative",
                "`resume_on_detach` must be `true` or `false`, found an integer",
                "unknown key `bogus` in the top level",
            ],
            "{}",
            diags.render()
        );
        let unknown = diags.iter().find(|d| d.message.contains("nmae")).unwrap();
        assert_eq!(unknown.notes, ["did you mean `name`?"]);
        assert_eq!((unknown.line, unknown.column), (2, 1));
    }

    #[test]
    fn single_table_instead_of_array_is_reported_and_still_read() {
        let (doc, diags) = parse_document("[partition]\nname = \"a\"\nimage = \"x\"\n");
        assert_eq!(messages(&diags), ["`partition` must be an array of tables"]);
        assert_eq!(doc.unwrap().partitions.len(), 1);
    }

    #[test]
    fn syntax_errors_are_recovered_from() {
        let (doc, diags) = parse_document("[system\nname = \"x\"\n");
        assert!(diags.has_errors());
        assert!(
            diags.iter().all(|d| d.message.starts_with("TOML syntax:")),
            "{}",
            diags.render()
        );
        let _ = doc;
        let (doc, diags) = parse_document("a = 1\na = 2\n");
        assert!(doc.is_some());
        assert!(messages(&diags).contains(&"TOML syntax: duplicate key `a`".to_owned()));
    }
}
