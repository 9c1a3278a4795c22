//! Completion: table headers, the keys valid at the cursor, and values where they are known
//! (partition names, booleans, sizes, free vectors and MMIO addresses, schedule windows, guest
//! images under the workspace's `target/guests/` and files).

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};

use hv_config::{docs, layout, raw};
use tower_lsp_server::ls_types::{
    CompletionItem, CompletionItemKind, CompletionTextEdit, Documentation, MarkupContent,
    MarkupKind, TextEdit,
};

use crate::context::{On, header_path, keys_in_table, spot};
use crate::server::Parsed;

/// Most file names offered from one directory.
const MAX_FILES: usize = 200;

/// The tables a description may have: header, dotted path, whether it may appear only once.
const HEADERS: &[(&str, &str, bool)] = &[
    ("[system]", "system", true),
    ("[agent]", "agent", true),
    ("[[partition]]", "partition", false),
    ("[[channel]]", "channel", false),
    ("[[device]]", "device", false),
    ("[schedule]", "schedule", true),
    ("[[schedule.window]]", "schedule.window", false),
];

/// Completion items at byte `offset` of `parsed`; `roots` are the workspace folders.
pub(crate) fn complete(parsed: &Parsed, offset: usize, roots: &[PathBuf]) -> Vec<CompletionItem> {
    let text = parsed.text.as_str();
    let spot = spot(text, &parsed.index, offset);
    let offset = offset.min(text.len());
    let mut out = Completions {
        parsed,
        items: Vec::new(),
    };
    match &spot.on {
        On::Header { span } => out.headers(span),
        On::Key {
            keys,
            span,
            has_value,
        } => {
            let (allowed, path): (&[&str], String) = match (spot.table.as_str(), keys.as_slice()) {
                ("device", [range]) if range == "mmio" || range == "grants" => {
                    (raw::RANGE_KEYS, format!("device.{range}"))
                }
                (table, []) => (table_keys(table), table.to_owned()),
                _ => (&[], String::new()),
            };
            let typed = &text[span.clone()];
            let written = if keys.is_empty() {
                keys_in_table(text, &parsed.index, spot.header)
            } else {
                Vec::new()
            };
            for key in allowed {
                if written.iter().any(|w| w == key && w != typed) {
                    continue;
                }
                let doc = docs::key(&path, key).or_else(|| docs::key("device", &keys.join(".")));
                let insert = if *has_value {
                    (*key).to_owned()
                } else {
                    format!("{key} = ")
                };
                let mut item = out.item(key, CompletionItemKind::PROPERTY, span.clone(), insert);
                if let Some(doc) = doc {
                    item.detail = Some(format!("{} (default: {})", doc.ty, doc.default));
                    item.documentation = Some(markdown(doc.meaning));
                }
                out.items.push(item);
            }
        }
        On::Value { keys, span, string } => {
            let key = keys.join(".");
            out.values(&spot.table, &key, span, *string, offset, roots);
        }
        On::Nothing => {}
    }
    out.items
}

/// The keys of the table at dotted `path`.
fn table_keys(path: &str) -> &'static [&'static str] {
    match path {
        "system" => raw::SYSTEM_KEYS,
        "agent" => raw::AGENT_KEYS,
        "partition" => raw::PARTITION_KEYS,
        "channel" => raw::CHANNEL_KEYS,
        "device" => raw::DEVICE_KEYS,
        "schedule" => &["major_frame_us"],
        "schedule.window" => raw::WINDOW_KEYS,
        _ => &[],
    }
}

fn markdown(text: &str) -> Documentation {
    Documentation::MarkupContent(MarkupContent {
        kind: MarkupKind::Markdown,
        value: text.to_owned(),
    })
}

struct Completions<'p> {
    parsed: &'p Parsed,
    items: Vec<CompletionItem>,
}

impl Completions<'_> {
    /// An item that replaces `span` with `insert`.
    fn item(
        &self,
        label: &str,
        kind: CompletionItemKind,
        span: Range<usize>,
        insert: String,
    ) -> CompletionItem {
        let range = self.parsed.index.range(&self.parsed.text, &span);
        CompletionItem {
            label: label.to_owned(),
            kind: Some(kind),
            sort_text: Some(format!("{:04}", self.items.len())),
            text_edit: Some(CompletionTextEdit::Edit(TextEdit::new(range, insert))),
            ..CompletionItem::default()
        }
    }

    fn headers(&mut self, span: &Range<usize>) {
        let text = self.parsed.text.as_str();
        let present: BTreeSet<String> = text.lines().filter_map(header_path).collect();
        for (header, path, once) in HEADERS {
            if *once && present.contains(*path) {
                continue;
            }
            let mut item = self.item(
                header,
                CompletionItemKind::MODULE,
                span.clone(),
                (*header).to_owned(),
            );
            if let Some(doc) = docs::table(path) {
                item.detail = Some(doc.cardinality.to_owned());
                item.documentation = Some(markdown(&doc.intro));
            }
            self.items.push(item);
        }
    }

    /// A string value: inside a string, its contents are replaced; elsewhere, the quoted value.
    fn string_value(
        &mut self,
        value: &str,
        kind: CompletionItemKind,
        span: &Range<usize>,
        string: Option<usize>,
    ) {
        let text = self.parsed.text.as_str();
        let (range, insert) = match string {
            Some(content) => {
                let quote = text[content - 1..content].to_owned();
                let closed = span.end > content && text[..span.end].ends_with(quote.as_str());
                let end = if closed { span.end - 1 } else { span.end };
                let insert = if closed {
                    value.to_owned()
                } else {
                    format!("{value}{quote}")
                };
                (content..end, insert)
            }
            None => (span.clone(), format!("\"{value}\"")),
        };
        let item = self.item(value, kind, range, insert);
        self.items.push(item);
    }

    /// A value written as is (numbers, booleans, inline tables).
    fn plain_value(&mut self, value: &str, span: &Range<usize>) {
        let item = self.item(
            value,
            CompletionItemKind::VALUE,
            span.clone(),
            value.to_owned(),
        );
        self.items.push(item);
    }

    fn values(
        &mut self,
        table: &str,
        key: &str,
        span: &Range<usize>,
        string: Option<usize>,
        offset: usize,
        roots: &[PathBuf],
    ) {
        let model = &self.parsed.model;
        match (table, key) {
            ("device", "partition" | "served_by")
            | ("schedule.window", "partition")
            | ("channel", "endpoints") => {
                let names: Vec<String> = model
                    .partition_names()
                    .into_iter()
                    .map(str::to_owned)
                    .collect();
                for name in names {
                    self.string_value(&name, CompletionItemKind::ENUM_MEMBER, span, string);
                }
            }
            ("partition", "autostart") | ("agent", "resume_on_detach") => {
                for b in ["true", "false"] {
                    self.plain_value(b, span);
                }
            }
            ("partition", "memory") => {
                for size in [
                    "2M", "4M", "8M", "16M", "32M", "64M", "128M", "256M", "512M", "1G",
                ] {
                    self.string_value(size, CompletionItemKind::VALUE, span, string);
                }
            }
            ("channel", "size") | ("device", "mmio.size" | "grants.size") => {
                for size in ["4K", "16K", "64K", "256K", "1M", "4M", "16M"] {
                    self.string_value(size, CompletionItemKind::VALUE, span, string);
                }
            }
            ("partition", "vcpus") => {
                for n in ["1", "2", "4"] {
                    self.plain_value(n, span);
                }
            }
            ("channel", "vector") | ("device", "irq" | "request_vector") => {
                for v in free_vectors(&model.raw, key) {
                    self.plain_value(&v.to_string(), span);
                }
            }
            ("device", "mmio") if string.is_none() => {
                let base = free_mmio(&model.raw, offset);
                self.plain_value(&format!("{{ base = {base:#x}, size = 0x1000 }}"), span);
            }
            ("device", "grants") if string.is_none() => {
                self.plain_value("[{ base = 0x200000, size = 0x1000 }]", span);
            }
            ("device", "timeout_ms") => self.plain_value("100", span),
            ("schedule", "major_frame_us") => self.plain_value("10000", span),
            ("schedule.window", "start_us") => {
                let end = model
                    .raw
                    .schedule
                    .iter()
                    .flat_map(|s| &s.windows)
                    .filter(|w| w.span.start < offset)
                    .filter_map(|w| {
                        Some(w.start_us.as_ref()?.get_ref() + w.duration_us.as_ref()?.get_ref())
                    })
                    .max()
                    .unwrap_or(0);
                self.plain_value(&end.to_string(), span);
            }
            ("schedule.window", "duration_us") => {
                let schedule = model.raw.schedule.as_ref();
                let major = schedule
                    .and_then(|s| s.major_frame_us.as_ref())
                    .map(|m| *m.get_ref());
                let start = schedule
                    .and_then(|s| s.windows.iter().rev().find(|w| w.span.start < offset))
                    .and_then(|w| w.start_us.as_ref())
                    .map_or(0, |s| *s.get_ref());
                if let Some(major) = major.filter(|&m| m > start) {
                    self.plain_value(&(major - start).to_string(), span);
                }
            }
            ("agent", "link") => {
                let name = model
                    .raw
                    .system
                    .as_ref()
                    .and_then(|s| s.name.as_ref())
                    .map_or("system".to_owned(), |n| n.get_ref().clone());
                for link in [
                    format!("unix:/tmp/hvdk-{name}.sock"),
                    "tcp:127.0.0.1:4444".to_owned(),
                    "pty".to_owned(),
                ] {
                    self.string_value(&link, CompletionItemKind::VALUE, span, string);
                }
            }
            ("agent", "gdb_base_port") => self.plain_value("3333", span),
            ("partition", "image") | ("agent", "token_file") => {
                self.paths(key == "image", span, string, roots);
            }
            _ => {}
        }
    }

    /// Paths relative to the description: guest images under `target/guests/` of the workspace
    /// (for `image`), and the entries of the directory typed so far.
    fn paths(
        &mut self,
        images: bool,
        span: &Range<usize>,
        string: Option<usize>,
        roots: &[PathBuf],
    ) {
        let parsed = self.parsed;
        let text = parsed.text.as_str();
        let dir = match parsed.path.as_deref().and_then(Path::parent) {
            Some(dir) => dir.to_path_buf(),
            None => match roots.first() {
                Some(root) => root.clone(),
                None => return,
            },
        };
        let mut offered: BTreeSet<String> = BTreeSet::new();
        if images {
            let mut bases: Vec<PathBuf> = roots.to_vec();
            bases.extend(dir.ancestors().map(Path::to_path_buf));
            for base in bases {
                let guests = base.join("target/guests");
                for (name, is_dir) in entries(&guests) {
                    if !is_dir && name.ends_with(".elf") {
                        let path = relative(&dir, &guests.join(&name));
                        offered.insert(path.to_string_lossy().into_owned());
                    }
                }
            }
        }
        let typed = match string {
            Some(content) => &text[content..span.end.max(content)],
            None => "",
        };
        let typed = typed.trim_end_matches(['"', '\'']);
        let typed_dir = typed.rfind('/').map_or("", |i| &typed[..=i]);
        for (name, is_dir) in entries(&dir.join(typed_dir)) {
            if name.starts_with('.') {
                continue;
            }
            let suffix = if is_dir { "/" } else { "" };
            offered.insert(format!("{typed_dir}{name}{suffix}"));
        }
        for path in offered {
            let kind = if path.ends_with('/') {
                CompletionItemKind::FOLDER
            } else {
                CompletionItemKind::FILE
            };
            self.string_value(&path, kind, span, string);
        }
    }
}

/// `(name, is a directory)` of the entries of `dir`, sorted, at most [`MAX_FILES`].
fn entries(dir: &Path) -> Vec<(String, bool)> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, bool)> = read
        .flatten()
        .take(MAX_FILES)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            Some((name, is_dir))
        })
        .collect();
    out.sort();
    out
}

/// `to` relative to the directory `from` (`../target/guests/a.elf`).
fn relative(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<Component<'_>> = from.components().collect();
    let to: Vec<Component<'_>> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut path = PathBuf::new();
    for _ in common..from.len() {
        path.push("..");
    }
    for c in &to[common..] {
        path.push(c);
    }
    path
}

/// Vectors not used yet anywhere in the description (a few, lowest first), starting with the
/// key's default when it is free.
fn free_vectors(raw: &hv_config::RawDocument, key: &str) -> Vec<u64> {
    let mut used: BTreeSet<u64> = BTreeSet::new();
    used.insert(u64::from(layout::UART_VECTOR));
    for c in &raw.channels {
        used.insert(
            c.vector
                .as_ref()
                .map_or(u64::from(layout::DEFAULT_CHANNEL_VECTOR), |v| *v.get_ref()),
        );
    }
    for d in &raw.devices {
        used.extend(d.irq.as_ref().map(|v| *v.get_ref()));
        if key != "request_vector" {
            used.insert(
                d.request_vector
                    .as_ref()
                    .map_or(u64::from(layout::DEFAULT_REQUEST_VECTOR), |v| *v.get_ref()),
            );
        }
    }
    let default = match key {
        "vector" => Some(u64::from(layout::DEFAULT_CHANNEL_VECTOR)),
        "request_vector" => Some(u64::from(layout::DEFAULT_REQUEST_VECTOR)),
        _ => None,
    };
    let mut out: Vec<u64> = default.filter(|v| !used.contains(v)).into_iter().collect();
    out.extend(
        (40..=255)
            .filter(|v| !used.contains(v) && Some(*v) != default)
            .take(4),
    );
    out
}

/// A page-aligned MMIO base, from `0xD000_0000` up, free among the devices of the client of
/// the device at `offset`.
fn free_mmio(raw: &hv_config::RawDocument, offset: usize) -> u64 {
    let client = raw
        .devices
        .iter()
        .rev()
        .find(|d| d.span.start < offset)
        .and_then(|d| d.partition.as_ref())
        .map(|p| p.get_ref().clone());
    let taken: Vec<(u64, u64)> = raw
        .devices
        .iter()
        .filter(|d| d.partition.as_ref().map(|p| p.get_ref()) == client.as_ref())
        .filter_map(|d| {
            d.mmio
                .as_ref()
                .map(|m| (*m.get_ref().base.get_ref(), *m.get_ref().size.get_ref()))
        })
        .collect();
    let mut base: u64 = 0xD000_0000;
    while base < layout::IDENTITY_MAPPED
        && taken
            .iter()
            .any(|&(b, s)| base < b.saturating_add(s) && b < base + layout::PAGE_SIZE)
    {
        base += layout::PAGE_SIZE;
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::Parsed;

    fn items(marked: &str) -> Vec<(String, String)> {
        let offset = marked.find('|').unwrap();
        let text = marked.replacen('|', "", 1);
        let parsed = Parsed::new(text, 0, Some(PathBuf::from("/nonexistent/sys.toml")));
        complete(&parsed, offset, &[])
            .into_iter()
            .map(|i| {
                let Some(CompletionTextEdit::Edit(edit)) = i.text_edit else {
                    panic!("an edit")
                };
                (i.label, edit.new_text)
            })
            .collect()
    }

    fn labels(marked: &str) -> Vec<String> {
        items(marked).into_iter().map(|(l, _)| l).collect()
    }

    const PARTS: &str = "[[partition]]\nname = \"a\"\nimage = \"a.elf\"\n[[partition]]\nname = \"b\"\nimage = \"b.elf\"\n";

    #[test]
    fn keys_not_written_yet() {
        assert_eq!(
            labels("[[partition]]\nname = \"a\"\n|"),
            ["image", "memory", "vcpus", "cpus", "autostart"]
        );
        assert_eq!(
            items("[agent]\nli|")[0],
            ("link".to_owned(), "link = ".to_owned())
        );
        assert_eq!(
            labels("[[device]]\nmmio = { base = 1, s|"),
            ["base", "size"]
        );
        assert_eq!(
            items("[schedule]\nmajor|_frame_us = 1")[0].1,
            "major_frame_us"
        );
    }

    #[test]
    fn headers_not_written_yet() {
        let l = labels("[system]\nname = \"x\"\n[|");
        assert!(!l.contains(&"[system]".to_owned()));
        assert!(l.contains(&"[[partition]]".to_owned()) && l.contains(&"[agent]".to_owned()));
    }

    #[test]
    fn partition_names_quoted_as_needed() {
        let text = format!("{PARTS}[[device]]\nserved_by = |");
        assert_eq!(
            items(&text),
            [("a".into(), "\"a\"".into()), ("b".into(), "\"b\"".into())]
        );
        let text = format!("{PARTS}[[device]]\nserved_by = \"|");
        assert_eq!(items(&text)[0].1, "a\"");
        let text = format!("{PARTS}[[device]]\nserved_by = \"|\"");
        assert_eq!(items(&text)[0].1, "a");
        let text = format!("{PARTS}[[channel]]\nendpoints = [\"a\", \"|\"]");
        assert_eq!(labels(&text), ["a", "b"]);
    }

    #[test]
    fn values_that_are_known() {
        assert_eq!(labels("[[partition]]\nautostart = |"), ["true", "false"]);
        let text = "[[channel]]\nvector = 48\n[[device]]\nirq = 40\n[[channel]]\nvector = |";
        assert_eq!(labels(text), ["41", "42", "43", "44"]);
        let text = "[[device]]\npartition = \"a\"\nmmio = { base = 0xD000_0000, size = 0x2000 }\n[[device]]\npartition = \"a\"\nmmio = |";
        assert_eq!(labels(text), ["{ base = 0xd0002000, size = 0x1000 }"]);
        let text = "[schedule]\nmajor_frame_us = 100\n[[schedule.window]]\npartition = \"a\"\nstart_us = 0\nduration_us = 30\n[[schedule.window]]\nstart_us = |";
        assert_eq!(labels(text), ["30"]);
        let text =
            "[schedule]\nmajor_frame_us = 100\n[[schedule.window]]\nstart_us = 30\nduration_us = |";
        assert_eq!(labels(text), ["70"]);
    }

    #[test]
    fn image_paths_from_target_guests() {
        let ws = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(ws.path().join("target/guests")).unwrap();
        std::fs::create_dir_all(ws.path().join("examples")).unwrap();
        std::fs::write(ws.path().join("target/guests/control.elf"), b"").unwrap();
        std::fs::write(ws.path().join("target/guests/notes.txt"), b"").unwrap();
        let text = "[[partition]]\nimage = \"\"".to_owned();
        let offset = text.len() - 1;
        let parsed = Parsed::new(text, 0, Some(ws.path().join("examples/sys.toml")));
        let labels: Vec<String> = complete(&parsed, offset, &[ws.path().to_path_buf()])
            .into_iter()
            .map(|i| i.label)
            .collect();
        assert_eq!(labels, ["../target/guests/control.elf"]);
        let text = "[[partition]]\nimage = \"../target/\"".to_owned();
        let offset = text.len() - 1;
        let parsed = Parsed::new(text, 0, Some(ws.path().join("examples/sys.toml")));
        let labels: Vec<String> = complete(&parsed, offset, &[])
            .into_iter()
            .map(|i| i.label)
            .collect();
        assert_eq!(
            labels,
            ["../target/guests/", "../target/guests/control.elf"]
        );
    }

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative(Path::new("/ws/examples"), Path::new("/ws/target/a.elf")),
            Path::new("../target/a.elf")
        );
        assert_eq!(
            relative(Path::new("/ws"), Path::new("/ws/a.elf")),
            Path::new("a.elf")
        );
    }
}
