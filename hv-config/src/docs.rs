//! The key reference of `CONFIG.md`, read from the file itself, so that tools (the language
//! server's hover) show the one copy of the documentation.
//!
//! Each `## `[table]`` (or `### `[[table]]``) section of `CONFIG.md` becomes a [`TableDoc`]: the
//! paragraphs before its `| key | type | default | meaning |` table, and one [`KeyDoc`] per row.
//! A test checks that the rows name exactly the keys the parser accepts.

use std::sync::OnceLock;

/// The reference, as written.
const CONFIG_MD: &str = include_str!("../CONFIG.md");

/// One key of a table, a row of its `| key | type | default | meaning |` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDoc {
    /// The key, without backticks.
    pub key: &'static str,
    /// The type column (Markdown).
    pub ty: &'static str,
    /// The default column (Markdown); `required` for required keys.
    pub default: &'static str,
    /// The meaning column (Markdown).
    pub meaning: &'static str,
}

/// One table of the description (`[agent]`, `[[partition]]`, `[[schedule.window]]`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDoc {
    /// Dotted path of the table: `system`, `partition`, `schedule.window`, ...
    pub path: &'static str,
    /// The header as written in a description: `[system]`, `[[partition]]`, ...
    pub header: &'static str,
    /// The section heading after the header, e.g. `(one or more)`; may be empty.
    pub cardinality: &'static str,
    /// The paragraphs between the heading and the key table (Markdown); may be empty.
    pub intro: String,
    /// The keys, in the order of the reference.
    pub keys: Vec<KeyDoc>,
}

impl TableDoc {
    /// The documentation of `key` in this table.
    pub fn key(&self, key: &str) -> Option<&KeyDoc> {
        self.keys.iter().find(|k| k.key == key)
    }
}

/// Every table of the reference, in its order.
pub fn tables() -> &'static [TableDoc] {
    static TABLES: OnceLock<Vec<TableDoc>> = OnceLock::new();
    TABLES.get_or_init(|| parse(CONFIG_MD))
}

/// The table at dotted `path` (`partition`, `schedule.window`, ...).
pub fn table(path: &str) -> Option<&'static TableDoc> {
    tables().iter().find(|t| t.path == path)
}

/// The documentation of `key` in the table at `path`.
pub fn key(path: &str, key: &str) -> Option<&'static KeyDoc> {
    table(path)?.key(key)
}

/// Reads the table sections of a reference written like `CONFIG.md`.
fn parse(text: &'static str) -> Vec<TableDoc> {
    let mut tables: Vec<TableDoc> = Vec::new();
    let mut current: Option<TableDoc> = None;
    // Where in the current section: before, in or after its key table.
    let (mut in_keys, mut after_keys) = (false, false);
    for line in text.lines() {
        if line.starts_with('#') {
            tables.extend(current.take());
            (in_keys, after_keys) = (false, false);
            current = table_heading(line);
            continue;
        }
        let Some(table) = current.as_mut() else {
            continue;
        };
        if let Some(row) = line.strip_prefix('|') {
            let cells: Vec<&'static str> = row
                .trim_end_matches('|')
                .split('|')
                .map(str::trim)
                .collect();
            if cells.first() == Some(&"key") {
                in_keys = true;
            } else if in_keys && cells.len() == 4 && !cells[0].starts_with("---") {
                table.keys.push(KeyDoc {
                    key: cells[0].trim_matches('`'),
                    ty: cells[1],
                    default: cells[2],
                    meaning: cells[3],
                });
            }
        } else if in_keys {
            (in_keys, after_keys) = (false, true);
        } else if !after_keys && (!table.intro.is_empty() || !line.trim().is_empty()) {
            table.intro.push_str(line);
            table.intro.push('\n');
        }
    }
    tables.extend(current);
    for table in &mut tables {
        let intro = table.intro.trim_end().to_owned();
        table.intro = intro;
    }
    tables
}

/// `## `[[partition]]` (one or more)` to an empty [`TableDoc`]; `None` for other headings.
fn table_heading(line: &'static str) -> Option<TableDoc> {
    let rest = line.trim_start_matches('#').trim();
    let rest = rest.strip_prefix('`')?;
    let (header, after) = rest.split_once('`')?;
    let path = header.trim_start_matches('[').trim_end_matches(']');
    if !header.starts_with('[') || path.is_empty() {
        return None;
    }
    Some(TableDoc {
        path,
        header,
        cardinality: after.trim(),
        intro: String::new(),
        keys: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw;

    #[test]
    fn the_reference_documents_exactly_the_keys_the_parser_accepts() {
        let expected: &[(&str, &[&str])] = &[
            ("system", raw::SYSTEM_KEYS),
            ("agent", raw::AGENT_KEYS),
            ("partition", raw::PARTITION_KEYS),
            ("channel", raw::CHANNEL_KEYS),
            ("device", raw::DEVICE_KEYS),
            ("schedule", raw::SCHEDULE_KEYS),
            ("schedule.window", raw::WINDOW_KEYS),
        ];
        let paths: Vec<&str> = tables().iter().map(|t| t.path).collect();
        assert_eq!(
            paths,
            expected.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
            "CONFIG.md's table sections"
        );
        for (path, keys) in expected {
            let documented: Vec<&str> = table(path).unwrap().keys.iter().map(|k| k.key).collect();
            assert_eq!(&documented, keys, "keys of [{path}] in CONFIG.md");
        }
        for top in raw::TOP_LEVEL_KEYS {
            assert!(table(top).is_some(), "CONFIG.md has no section for `{top}`");
        }
    }

    #[test]
    fn rows_and_intros_are_read() {
        let memory = key("partition", "memory").unwrap();
        assert_eq!(memory.ty, "size");
        assert_eq!(memory.default, "`\"16M\"`");
        assert!(memory.meaning.starts_with("RAM size"), "{}", memory.meaning);
        let partition = table("partition").unwrap();
        assert_eq!(partition.header, "[[partition]]");
        assert_eq!(partition.cardinality, "(one or more)");
        assert!(partition.intro.starts_with("Each partition is a guest"));
        let window = table("schedule.window").unwrap();
        assert_eq!(window.header, "[[schedule.window]]");
        assert!(window.intro.is_empty(), "{:?}", window.intro);
        let channel = table("channel").unwrap();
        assert!(
            !channel.intro.contains("Where windows appear"),
            "{}",
            channel.intro
        );
        assert_eq!(key("agent", "nope"), None);
    }
}
