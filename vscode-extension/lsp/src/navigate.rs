//! Go to definition, find references, rename and the outline (document symbols).

use std::ops::Range;

use hv_config::MAX_NAME_LEN;
use tower_lsp_server::ls_types::{DocumentSymbol, Range as LspRange, SymbolKind};

use crate::model::{Model, NameKind, Occurrence};
use crate::text::LineIndex;

/// Why a rename was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenameError {
    /// Only partitions are renamed (their names are referred to across the description).
    #[error("only partition names can be renamed here")]
    NotAPartition,
    /// The new name breaks the naming rules.
    #[error(
        "`{0}` is not a valid partition name: 1 to {MAX_NAME_LEN} characters of `a-z`, `0-9`, `_` and `-`"
    )]
    InvalidName(String),
    /// Another partition already has the new name.
    #[error("a partition named `{0}` already exists")]
    Taken(String),
}

/// The definitions of the name at `offset` (a definition answers itself).
pub fn definitions(model: &Model, offset: usize) -> Vec<Range<usize>> {
    let Some(at) = model.at(offset) else {
        return Vec::new();
    };
    model
        .occurrences_of(at.kind, &at.name)
        .filter(|o| o.definition)
        .map(|o| o.span.clone())
        .collect()
}

/// Every occurrence of the name at `offset`; definitions only if `include_declaration`.
pub fn references(model: &Model, offset: usize, include_declaration: bool) -> Vec<Range<usize>> {
    let Some(at) = model.at(offset) else {
        return Vec::new();
    };
    model
        .occurrences_of(at.kind, &at.name)
        .filter(|o| include_declaration || !o.definition)
        .map(|o| o.span.clone())
        .collect()
}

/// The partition name at `offset` that a rename would change.
pub fn rename_target(model: &Model, offset: usize) -> Result<&Occurrence, RenameError> {
    model
        .at(offset)
        .filter(|o| o.kind == NameKind::Partition)
        .ok_or(RenameError::NotAPartition)
}

/// The spans to replace with `new_name` to rename the partition at `offset`.
pub fn rename(
    model: &Model,
    offset: usize,
    new_name: &str,
) -> Result<Vec<Range<usize>>, RenameError> {
    let target = rename_target(model, offset)?;
    let valid = !new_name.is_empty()
        && new_name.len() <= MAX_NAME_LEN
        && new_name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !valid {
        return Err(RenameError::InvalidName(new_name.to_owned()));
    }
    if new_name != target.name && model.partition(new_name).is_some() {
        return Err(RenameError::Taken(new_name.to_owned()));
    }
    Ok(model
        .occurrences_of(NameKind::Partition, &target.name)
        .map(|o| o.span.clone())
        .collect())
}

/// The outline: partitions, channels, devices, and the schedule with its windows.
#[allow(deprecated)] // `DocumentSymbol::deprecated` must be written to build the struct.
pub fn symbols(model: &Model, text: &str, index: &LineIndex) -> Vec<DocumentSymbol> {
    let raw = &model.raw;
    let symbol = |name: String,
                  detail: Option<String>,
                  kind: SymbolKind,
                  header: &Range<usize>,
                  spans: &[Range<usize>],
                  selection: Option<Range<usize>>,
                  children: Option<Vec<DocumentSymbol>>| {
        let selection = selection.unwrap_or_else(|| header.clone());
        let start = spans
            .iter()
            .chain([header, &selection])
            .map(|s| s.start)
            .min()
            .unwrap_or(0);
        let end = spans
            .iter()
            .chain([header, &selection])
            .map(|s| s.end)
            .max()
            .unwrap_or(0);
        DocumentSymbol {
            name: if name.is_empty() {
                "?".to_owned()
            } else {
                name
            },
            detail,
            kind,
            tags: None,
            deprecated: None,
            range: index.range(text, &(start..end)),
            selection_range: index.range(text, &selection),
            children,
        }
    };
    let name_of = |name: &Option<hv_config::Spanned<String>>, what: &str| {
        name.as_ref().map_or_else(
            || format!("({what} without a name)"),
            |n| n.get_ref().clone(),
        )
    };
    let name_span = |name: &Option<hv_config::Spanned<String>>| name.as_ref().map(|n| n.span());
    let mut out = Vec::new();
    for p in &raw.partitions {
        let memory = p
            .memory
            .as_ref()
            .map(|m| *m.get_ref())
            .unwrap_or(hv_config::layout::DEFAULT_MEMORY);
        let vcpus = p.vcpus.as_ref().map_or(1, |v| *v.get_ref());
        let detail = format!(
            "{}, {vcpus} vCPU{}",
            bytes(memory),
            if vcpus == 1 { "" } else { "s" }
        );
        let spans = spans_of(
            &p.keys,
            [
                p.name.as_ref().map(|v| v.span()),
                p.image.as_ref().map(|v| v.span()),
                p.memory.as_ref().map(|v| v.span()),
                p.vcpus.as_ref().map(|v| v.span()),
                p.cpus.as_ref().map(|v| v.span()),
                p.autostart.as_ref().map(|v| v.span()),
            ],
        );
        out.push(symbol(
            name_of(&p.name, "partition"),
            Some(detail),
            SymbolKind::MODULE,
            &p.span,
            &spans,
            name_span(&p.name),
            None,
        ));
    }
    for c in &raw.channels {
        let ends: Vec<&str> = c
            .endpoints
            .iter()
            .flat_map(|e| e.get_ref())
            .map(|e| e.get_ref().as_str())
            .collect();
        let spans = spans_of(
            &c.keys,
            [
                c.name.as_ref().map(|v| v.span()),
                c.endpoints.as_ref().map(|v| v.span()),
                c.size.as_ref().map(|v| v.span()),
                c.vector.as_ref().map(|v| v.span()),
            ],
        );
        out.push(symbol(
            name_of(&c.name, "channel"),
            Some(format!("channel {}", ends.join(" ↔ "))),
            SymbolKind::INTERFACE,
            &c.span,
            &spans,
            name_span(&c.name),
            None,
        ));
    }
    for d in &raw.devices {
        let mut detail = format!(
            "device of {}",
            d.partition.as_ref().map_or("?", |p| p.get_ref())
        );
        if let Some(model) = &d.served_by {
            detail.push_str(&format!(", served by {}", model.get_ref()));
        }
        let spans = spans_of(
            &d.keys,
            [
                d.name.as_ref().map(|v| v.span()),
                d.partition.as_ref().map(|v| v.span()),
                d.mmio.as_ref().map(|v| v.span()),
                d.irq.as_ref().map(|v| v.span()),
                d.served_by.as_ref().map(|v| v.span()),
                d.request_vector.as_ref().map(|v| v.span()),
                d.timeout_ms.as_ref().map(|v| v.span()),
                d.grants.as_ref().map(|v| v.span()),
            ],
        );
        out.push(symbol(
            name_of(&d.name, "device"),
            Some(detail),
            SymbolKind::OBJECT,
            &d.span,
            &spans,
            name_span(&d.name),
            None,
        ));
    }
    if let Some(s) = &raw.schedule {
        let windows: Vec<DocumentSymbol> = s
            .windows
            .iter()
            .map(|w| {
                let start = w.start_us.as_ref().map(|v| *v.get_ref());
                let duration = w.duration_us.as_ref().map(|v| *v.get_ref());
                let detail = match (start, duration) {
                    (Some(s), Some(d)) => Some(format!("{s}..{} µs", s.saturating_add(d))),
                    _ => None,
                };
                let spans = spans_of(
                    &w.keys,
                    [
                        w.partition.as_ref().map(|v| v.span()),
                        w.start_us.as_ref().map(|v| v.span()),
                        w.duration_us.as_ref().map(|v| v.span()),
                    ],
                );
                symbol(
                    name_of(&w.partition, "window"),
                    detail,
                    SymbolKind::EVENT,
                    &w.span,
                    &spans,
                    name_span(&w.partition),
                    None,
                )
            })
            .collect();
        let detail = s
            .major_frame_us
            .as_ref()
            .map(|m| format!("major frame {} µs", m.get_ref()));
        let mut spans: Vec<Range<usize>> =
            spans_of(&s.keys, [s.major_frame_us.as_ref().map(|v| v.span())]);
        spans.extend(s.windows.iter().map(|w| w.span.clone()));
        let child_spans: Vec<Range<usize>> = s
            .windows
            .iter()
            .flat_map(|w| {
                spans_of(
                    &w.keys,
                    [
                        w.partition.as_ref().map(|v| v.span()),
                        w.start_us.as_ref().map(|v| v.span()),
                        w.duration_us.as_ref().map(|v| v.span()),
                    ],
                )
            })
            .collect();
        spans.extend(child_spans);
        out.push(symbol(
            "schedule".to_owned(),
            detail,
            SymbolKind::NAMESPACE,
            &s.span,
            &spans,
            None,
            Some(windows),
        ));
    }
    out.sort_by_key(|s| (s.range.start.line, s.range.start.character));
    out
}

/// The spans of a table's keys and of its values.
fn spans_of<const N: usize>(
    keys: &[hv_config::Spanned<String>],
    values: [Option<Range<usize>>; N],
) -> Vec<Range<usize>> {
    keys.iter()
        .map(|k| k.span())
        .chain(values.into_iter().flatten())
        .collect()
}

/// `16 MiB`, `64 KiB`, `4097 bytes`.
pub fn bytes(n: u64) -> String {
    for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if n >= 1 << shift && n.is_multiple_of(1 << shift) {
            return format!("{} {unit}", n >> shift);
        }
    }
    format!("{n} bytes")
}

/// An LSP range for each span.
pub fn ranges(text: &str, index: &LineIndex, spans: &[Range<usize>]) -> Vec<LspRange> {
    spans.iter().map(|s| index.range(text, s)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[[partition]]\nname = \"a\"\nimage = \"a.elf\"\n\n[[partition]]\nname = \"b\"\nimage = \"b.elf\"\nmemory = \"32M\"\nvcpus = 2\n\n[[channel]]\nname = \"ab\"\nendpoints = [\"a\", \"b\"]\n\n[[device]]\nname = \"d\"\npartition = \"a\"\nserved_by = \"b\"\nmmio = { base = 0xD000_0000, size = 0x1000 }\n\n[schedule]\nmajor_frame_us = 100\n\n[[schedule.window]]\npartition = \"a\"\nstart_us = 0\nduration_us = 50\n";

    fn model() -> Model {
        Model::new(hv_config::parse_document(TEXT).0.unwrap(), TEXT)
    }

    fn texts(spans: &[Range<usize>]) -> Vec<(usize, &'static str)> {
        spans.iter().map(|s| (s.start, &TEXT[s.clone()])).collect()
    }

    #[test]
    fn definition_and_references() {
        let m = model();
        let served_by = TEXT.find("served_by = \"b\"").unwrap() + 13;
        let def = definitions(&m, served_by);
        assert_eq!(texts(&def), [(TEXT.find("\"b\"").unwrap() + 1, "b")]);
        let refs = references(&m, served_by, false);
        assert_eq!(refs.len(), 2);
        assert_eq!(references(&m, served_by, true).len(), 3);
        assert!(definitions(&m, 0).is_empty());
    }

    #[test]
    fn rename_a_partition() {
        let m = model();
        let at = TEXT.find("name = \"a\"").unwrap() + 8;
        let spans = rename(&m, at, "alpha").unwrap();
        assert_eq!(spans.len(), 4);
        assert!(spans.iter().all(|s| &TEXT[s.clone()] == "a"));
        assert_eq!(
            rename(&m, at, "Alpha"),
            Err(RenameError::InvalidName("Alpha".into()))
        );
        assert_eq!(rename(&m, at, "b"), Err(RenameError::Taken("b".into())));
        let channel = TEXT.find("\"ab\"").unwrap() + 1;
        assert_eq!(rename(&m, channel, "x"), Err(RenameError::NotAPartition));
    }

    #[test]
    fn outline() {
        let m = model();
        let index = LineIndex::new(TEXT);
        let symbols = symbols(&m, TEXT, &index);
        let names: Vec<(&str, SymbolKind)> =
            symbols.iter().map(|s| (s.name.as_str(), s.kind)).collect();
        assert_eq!(
            names,
            [
                ("a", SymbolKind::MODULE),
                ("b", SymbolKind::MODULE),
                ("ab", SymbolKind::INTERFACE),
                ("d", SymbolKind::OBJECT),
                ("schedule", SymbolKind::NAMESPACE)
            ]
        );
        assert_eq!(symbols[1].detail.as_deref(), Some("32 MiB, 2 vCPUs"));
        assert_eq!(symbols[1].range.start.line, 4);
        assert_eq!(symbols[1].range.end.line, 8);
        let windows = symbols[4].children.as_ref().unwrap();
        assert_eq!(windows[0].detail.as_deref(), Some("0..50 µs"));
        for s in symbols.iter().chain(windows) {
            assert!(
                s.range.start <= s.selection_range.start && s.selection_range.end <= s.range.end
            );
        }
    }
}
