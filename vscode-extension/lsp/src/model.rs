//! What a description defines and where it refers to it: partition, channel and device names,
//! for go to definition, references, rename, symbols and completion.

use std::ops::Range;

use hv_config::RawDocument;
use hv_config::raw::RawPartition;

/// The kind of a named thing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NameKind {
    /// A `[[partition]]`.
    Partition,
    /// A `[[channel]]`.
    Channel,
    /// A `[[device]]`.
    Device,
}

impl NameKind {
    /// `partition`, `channel` or `device`.
    pub fn word(self) -> &'static str {
        match self {
            NameKind::Partition => "partition",
            NameKind::Channel => "channel",
            NameKind::Device => "device",
        }
    }
}

/// One occurrence of a name: its definition (`name = "..."`) or a reference to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occurrence {
    /// What it names.
    pub kind: NameKind,
    /// The name.
    pub name: String,
    /// The string's bytes without its quotes.
    pub span: Range<usize>,
    /// True for the `name` key of the definition.
    pub definition: bool,
}

/// The names of one description and every place they occur, in source order.
#[derive(Debug, Clone, Default)]
pub struct Model {
    /// The spanned document (empty if the text was not TOML at all).
    pub raw: RawDocument,
    /// Every definition and reference.
    pub occurrences: Vec<Occurrence>,
}

impl Model {
    /// Reads the names of `raw`, whose spans are into `text`.
    pub fn new(raw: RawDocument, text: &str) -> Model {
        let mut occurrences = Vec::new();
        let mut add = |kind, value: &Option<hv_config::Spanned<String>>, definition| {
            if let Some(value) = value {
                occurrences.push(Occurrence {
                    kind,
                    name: value.get_ref().clone(),
                    span: unquoted(text, value.span()),
                    definition,
                });
            }
        };
        for p in &raw.partitions {
            add(NameKind::Partition, &p.name, true);
        }
        for c in &raw.channels {
            add(NameKind::Channel, &c.name, true);
            for end in c.endpoints.iter().flat_map(|e| e.get_ref()) {
                add(NameKind::Partition, &Some(end.clone()), false);
            }
        }
        for d in &raw.devices {
            add(NameKind::Device, &d.name, true);
            add(NameKind::Partition, &d.partition, false);
            add(NameKind::Partition, &d.served_by, false);
        }
        for w in raw.schedule.iter().flat_map(|s| &s.windows) {
            add(NameKind::Partition, &w.partition, false);
        }
        occurrences.sort_by_key(|o| o.span.start);
        Model { raw, occurrences }
    }

    /// The occurrence whose name contains byte `offset` (its ends included).
    pub fn at(&self, offset: usize) -> Option<&Occurrence> {
        self.occurrences
            .iter()
            .find(|o| o.span.start <= offset && offset <= o.span.end)
    }

    /// Every occurrence of `name` as a `kind`, definitions included.
    pub fn occurrences_of<'a>(
        &'a self,
        kind: NameKind,
        name: &'a str,
    ) -> impl Iterator<Item = &'a Occurrence> + 'a {
        self.occurrences
            .iter()
            .filter(move |o| o.kind == kind && o.name == name)
    }

    /// The names of the partitions, in declaration order, without duplicates.
    pub fn partition_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for p in &self.raw.partitions {
            if let Some(name) = &p.name
                && !names.contains(&name.get_ref().as_str())
            {
                names.push(name.get_ref());
            }
        }
        names
    }

    /// The partition named `name`, first definition.
    pub fn partition(&self, name: &str) -> Option<&RawPartition> {
        self.raw
            .partitions
            .iter()
            .find(|p| p.name.as_ref().is_some_and(|n| n.get_ref() == name))
    }
}

/// The span of a string value without its quotes (`"x"`, `'x'`, `"""x"""`); other spans as they
/// are.
pub fn unquoted(text: &str, span: Range<usize>) -> Range<usize> {
    let Some(written) = text.get(span.clone()) else {
        return span;
    };
    for quote in ["\"\"\"", "'''", "\"", "'"] {
        if written.len() >= 2 * quote.len()
            && written.starts_with(quote)
            && written.ends_with(quote)
        {
            return span.start + quote.len()..span.end - quote.len();
        }
    }
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"[[partition]]
name = "control"
image = "c.elf"

[[partition]]
name = 'model'
image = "m.elf"

[[channel]]
name = "link"
endpoints = ["control", "model"]

[[device]]
name = "sensor"
partition = "control"
served_by = "model"
mmio = { base = 0xD000_0000, size = 0x1000 }

[schedule]
major_frame_us = 10
[[schedule.window]]
partition = "control"
start_us = 0
duration_us = 5
"#;

    fn model() -> Model {
        let (raw, _) = hv_config::parse_document(TEXT);
        Model::new(raw.unwrap(), TEXT)
    }

    #[test]
    fn definitions_and_references_in_source_order() {
        let m = model();
        let control: Vec<(usize, bool)> = m
            .occurrences_of(NameKind::Partition, "control")
            .map(|o| (o.span.start, o.definition))
            .collect();
        assert_eq!(control.len(), 4);
        assert!(control[0].1 && control[1..].iter().all(|(_, d)| !d));
        for o in m.occurrences_of(NameKind::Partition, "control") {
            assert_eq!(&TEXT[o.span.clone()], "control");
        }
        let model_def = m
            .occurrences_of(NameKind::Partition, "model")
            .next()
            .unwrap();
        assert_eq!(&TEXT[model_def.span.clone()], "model");
        assert_eq!(m.occurrences_of(NameKind::Channel, "link").count(), 1);
        assert_eq!(m.occurrences_of(NameKind::Device, "sensor").count(), 1);
        assert_eq!(m.partition_names(), ["control", "model"]);
    }

    #[test]
    fn occurrence_at_an_offset() {
        let m = model();
        let at = TEXT.find("served_by = \"model\"").unwrap() + 13;
        let o = m.at(at).unwrap();
        assert_eq!(
            (o.kind, o.name.as_str(), o.definition),
            (NameKind::Partition, "model", false)
        );
        assert!(m.at(0).is_none());
    }

    #[test]
    fn quotes_are_stripped() {
        assert_eq!(unquoted("\"ab\"", 0..4), 1..3);
        assert_eq!(unquoted("'''ab'''", 0..8), 3..5);
        assert_eq!(unquoted("\"", 0..1), 0..1);
        assert_eq!(unquoted("x", 0..9), 0..9);
    }
}
