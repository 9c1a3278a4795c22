//! Hover: a key's or a table's documentation, read from `CONFIG.md` (the one copy), and on a
//! memory-related key (`memory`, `vcpus`, `mmio`, `grants`) the partition's guest-physical layout.

use std::fmt::Write as _;
use std::ops::Range;

use hv_config::docs;
use hv_config::layout::{
    DEFAULT_CHANNEL_SIZE, DEFAULT_CHANNEL_VECTOR, DEFAULT_MEMORY, IDENTITY_MAPPED, IMAGE_BASE,
    IPC_BASE, IPC_END, VCPU_STACK_SIZE, place_ipc_windows,
};
use hv_config::raw::RawPartition;

use crate::context::{On, header_path, spot};
use crate::model::{Model, NameKind};
use crate::navigate::bytes;
use crate::server::Parsed;

/// Markdown for what is at byte `offset`, and the span it is about.
pub(crate) fn hover(parsed: &Parsed, offset: usize) -> Option<(String, Range<usize>)> {
    let text = parsed.text.as_str();
    let spot = spot(text, &parsed.index, offset);
    let model = &parsed.model;
    match spot.on {
        On::Header { span } => {
            let line = &text[span.clone()];
            let table = docs::table(&header_path(line)?)?;
            let end = span.start + line.trim_end().len();
            Some((table_doc(table), span.start..end))
        }
        On::Key { keys, span, .. } => {
            let mut path = keys;
            path.push(text[span.clone()].trim_matches(['"', '\'']).to_owned());
            Some((key_hover(model, &spot.table, &path, offset)?, span))
        }
        On::Value { keys, span, .. } => {
            let mut markdown = String::new();
            if let Some(o) = model.at(offset).filter(|o| o.kind == NameKind::Partition) {
                let p = model.partition(&o.name)?;
                markdown = format!("{}\n\n---\n\n", partition_summary(p, &o.name));
            }
            markdown.push_str(&key_hover(model, &spot.table, &keys, offset)?);
            Some((markdown, span))
        }
        On::Nothing => None,
    }
}

/// The documentation of the key at `path` (`["memory"]`, `["mmio", "base"]`) of `table`, with
/// the layout for memory-related keys.
fn key_hover(model: &Model, table: &str, path: &[String], offset: usize) -> Option<String> {
    let key = path.first()?;
    let doc = docs::key(table, key)?;
    let header = docs::table(table).map_or("", |t| t.header);
    let mut out = format!("**`{key}`** in `{header}` · {}", doc.ty);
    if doc.default != "required" {
        let _ = write!(out, " · default {}", doc.default);
    } else {
        out.push_str(" · required");
    }
    let _ = write!(out, "\n\n{}", doc.meaning);
    let partition = match (table, key.as_str()) {
        ("partition", "memory" | "vcpus") => model
            .raw
            .partitions
            .iter()
            .rev()
            .find(|p| p.span.start < offset)
            .cloned(),
        ("device", "mmio" | "grants") => model
            .raw
            .devices
            .iter()
            .rev()
            .find(|d| d.span.start < offset)
            .and_then(|d| d.partition.as_ref())
            .and_then(|name| model.partition(name.get_ref()))
            .cloned(),
        _ => None,
    };
    if let Some(p) = partition {
        let _ = write!(out, "\n\n---\n\n{}", layout(model, &p));
    }
    Some(out)
}

fn table_doc(table: &docs::TableDoc) -> String {
    let mut out = format!("**`{}`** {}", table.header, table.cardinality);
    if !table.intro.is_empty() {
        let _ = write!(out, "\n\n{}", table.intro);
    }
    let keys: Vec<String> = table.keys.iter().map(|k| format!("`{}`", k.key)).collect();
    let _ = write!(out, "\n\nKeys: {}", keys.join(", "));
    out
}

fn partition_summary(p: &RawPartition, name: &str) -> String {
    let memory = p.memory.as_ref().map_or(DEFAULT_MEMORY, |m| *m.get_ref());
    let vcpus = p.vcpus.as_ref().map_or(1, |v| *v.get_ref());
    let mut out = format!(
        "partition `{name}`: {} of RAM, {vcpus} vCPU{}",
        bytes(memory),
        if vcpus == 1 { "" } else { "s" }
    );
    if let Some(image) = &p.image {
        let _ = write!(out, ", image `{}`", image.get_ref());
    }
    out
}

/// The guest-physical map of partition `p` as a Markdown table: boot structures, image area,
/// stacks, its devices' MMIO and its IPC windows, and the free ranges between.
pub(crate) fn layout(model: &Model, p: &RawPartition) -> String {
    let name = p.name.as_ref().map_or("?", |n| n.get_ref().as_str());
    let memory = p.memory.as_ref().map_or(DEFAULT_MEMORY, |m| *m.get_ref());
    let vcpus = p.vcpus.as_ref().map_or(1, |v| *v.get_ref());
    let stacks = vcpus.saturating_mul(VCPU_STACK_SIZE);
    let mut regions: Vec<(u64, u64, String)> = vec![(
        0,
        IMAGE_BASE.min(memory),
        "boot structures (GDT, TSS, boot info, page tables)".to_owned(),
    )];
    let stack_base = memory.saturating_sub(stacks).max(IMAGE_BASE.min(memory));
    if stack_base > IMAGE_BASE {
        regions.push((
            IMAGE_BASE,
            stack_base,
            "image (the ELF's loadable segments)".to_owned(),
        ));
    }
    regions.push((
        stack_base,
        memory,
        format!("vCPU stacks ({vcpus} × 64 KiB, vCPU 0 at the top)"),
    ));
    for d in &model.raw.devices {
        let client = d.partition.as_ref().map(|c| c.get_ref().as_str());
        let (Some(mmio), true) = (&d.mmio, client == Some(name)) else {
            continue;
        };
        let base = *mmio.get_ref().base.get_ref();
        let size = *mmio.get_ref().size.get_ref();
        let device = d.name.as_ref().map_or("?", |n| n.get_ref().as_str());
        let mut what = format!("device `{device}` (MMIO");
        if let Some(model) = &d.served_by {
            let _ = write!(what, ", served by `{}`", model.get_ref());
        }
        what.push(')');
        regions.push((base, base.saturating_add(size), what));
    }
    let channels = model.raw.channels.iter().enumerate().filter(|(_, c)| {
        c.endpoints
            .iter()
            .flat_map(|e| e.get_ref())
            .any(|e| e.get_ref() == name)
    });
    let sizes: Vec<(usize, u64)> = channels
        .map(|(i, c)| {
            (
                i,
                c.size
                    .as_ref()
                    .map_or(DEFAULT_CHANNEL_SIZE, |s| *s.get_ref()),
            )
        })
        .collect();
    for (i, gpa, size) in place_ipc_windows(sizes) {
        let c = &model.raw.channels[i];
        let channel = c.name.as_ref().map_or("?", |n| n.get_ref().as_str());
        let vector = c
            .vector
            .as_ref()
            .map_or(u64::from(DEFAULT_CHANNEL_VECTOR), |v| *v.get_ref());
        regions.push((
            gpa,
            gpa.saturating_add(size),
            format!("channel `{channel}` (IPC window, doorbell vector {vector})"),
        ));
    }
    regions.sort_by_key(|r| (r.0, r.1));
    // The free ranges between, above RAM: MMIO space, and the rest of the IPC area.
    let mut rows = Vec::new();
    let mut cursor = 0u64;
    for (start, end, what) in regions {
        if start > cursor && cursor >= memory {
            free_rows(cursor, start, &mut rows);
        }
        rows.push((start, end, what));
        cursor = cursor.max(end);
    }
    if cursor < IDENTITY_MAPPED {
        free_rows(cursor.max(memory), IDENTITY_MAPPED, &mut rows);
    }
    let mut out = format!(
        "**Guest-physical layout of partition `{name}`** ({} of RAM, {vcpus} vCPU{})\n\n| range | what |\n|---|---|\n",
        bytes(memory),
        if vcpus == 1 { "" } else { "s" }
    );
    for (start, end, what) in rows {
        let _ = writeln!(out, "| `{start:#x}..{end:#x}` | {what} |");
    }
    out
}

/// Rows for the free range `start..end`, split at the IPC area.
fn free_rows(start: u64, end: u64, rows: &mut Vec<(u64, u64, String)>) {
    let cuts = [start, IPC_BASE, IPC_END, end];
    for pair in cuts.windows(2) {
        let (a, b) = (pair[0].max(start), pair[1].min(end));
        if a < b {
            let what = if a >= IPC_BASE && b <= IPC_END {
                "IPC area, unused"
            } else {
                "free (device MMIO)"
            };
            rows.push((a, b, what.to_owned()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[[partition]]\nname = \"control\"\nimage = \"c.elf\"\nmemory = \"16M\"\n\n[[partition]]\nname = \"telemetry\"\nimage = \"t.elf\"\nvcpus = 2\n\n[[channel]]\nname = \"telemetry\"\nendpoints = [\"control\", \"telemetry\"]\n\n[[device]]\nname = \"sensor\"\npartition = \"control\"\nserved_by = \"telemetry\"\nmmio = { base = 0xD000_0000, size = 0x1000 }\n";

    fn hover_at(needle: &str, skip: usize) -> (String, String) {
        let parsed = Parsed::new(TEXT.to_owned(), 0, None);
        let offset = TEXT.find(needle).unwrap() + skip;
        let (markdown, span) = hover(&parsed, offset).expect("a hover");
        (markdown, TEXT[span].to_owned())
    }

    #[test]
    fn key_documentation_comes_from_config_md() {
        let (markdown, span) = hover_at("image", 1);
        assert_eq!(span, "image");
        assert!(markdown.contains(docs::key("partition", "image").unwrap().meaning));
        assert!(markdown.contains("required"));
        let (markdown, _) = hover_at("[[device]]", 3);
        assert!(markdown.contains(&docs::table("device").unwrap().intro));
    }

    #[test]
    fn memory_shows_the_layout() {
        let (markdown, span) = hover_at("\"16M\"", 2);
        assert_eq!(span, "\"16M\"");
        for row in [
            "| `0x0..0x100000` | boot structures",
            "| `0x100000..0xff0000` | image",
            "| `0xff0000..0x1000000` | vCPU stacks (1 × 64 KiB",
            "| `0x1000000..0x80000000` | free (device MMIO) |",
            "| `0x80000000..0x80010000` | channel `telemetry` (IPC window, doorbell vector 48) |",
            "| `0x80010000..0x90000000` | IPC area, unused |",
            "| `0x90000000..0xd0000000` | free (device MMIO) |",
            "| `0xd0000000..0xd0001000` | device `sensor` (MMIO, served by `telemetry`) |",
            "| `0xd0001000..0x100000000` | free (device MMIO) |",
        ] {
            assert!(markdown.contains(row), "{row} in\n{markdown}");
        }
        let (markdown, _) = hover_at("vcpus", 0);
        assert!(
            markdown.contains("partition `telemetry`** (16 MiB of RAM, 2 vCPUs)"),
            "{markdown}"
        );
        let (markdown, _) = hover_at("0xD000", 4);
        assert!(markdown.contains("partition `control`"), "{markdown}");
    }

    #[test]
    fn a_partition_reference_summarises_the_partition() {
        let (markdown, span) = hover_at("served_by = \"telemetry\"", 15);
        assert_eq!(span, "\"telemetry\"");
        assert!(
            markdown.starts_with("partition `telemetry`: 16 MiB of RAM, 2 vCPUs, image `t.elf`"),
            "{markdown}"
        );
    }

    #[test]
    fn nothing_on_blank_lines_and_garbage() {
        let parsed = Parsed::new("\u{0}[[\n=\"\n{".to_owned(), 0, None);
        for offset in 0..parsed.text.len() + 2 {
            let _ = hover(&parsed, offset);
        }
        let parsed = Parsed::new(TEXT.to_owned(), 0, None);
        assert!(hover(&parsed, TEXT.find("\n\n").unwrap() + 1).is_none());
    }
}
