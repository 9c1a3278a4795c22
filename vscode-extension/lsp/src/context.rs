//! Where the cursor is, read from the text around it: the table, the key, inside which inline
//! table or array, on a key or in a value. Works on half-typed text that is not TOML yet, which
//! is what completion sees.

use std::ops::Range;

use crate::text::{LineIndex, floor_boundary};

/// What the cursor is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Spot {
    /// Dotted path of the table the line belongs to: empty at the top level, `partition`,
    /// `schedule.window`, ...
    pub table: String,
    /// Byte offset of that table's header line (`None` at the top level).
    pub header: Option<usize>,
    /// What on the line.
    pub on: On,
}

/// The part of a line the cursor is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum On {
    /// A table header (`[agent]`, `[[partition]]`); `span` is the header as typed so far, from
    /// its first `[`.
    Header { span: Range<usize> },
    /// A key: `keys` are the enclosing keys (`["mmio"]` inside `mmio = { … }`, empty for a
    /// table's own keys); `span` is the key as typed (empty between keys); `has_value` is true if
    /// an `=` follows on the line.
    Key {
        keys: Vec<String>,
        span: Range<usize>,
        has_value: bool,
    },
    /// A value of the key path `keys` (`["served_by"]`, `["mmio", "base"]`): `span` is the
    /// value or array item the cursor is on, `string` the start of that string's contents if it
    /// is one.
    Value {
        keys: Vec<String>,
        span: Range<usize>,
        string: Option<usize>,
    },
    /// Nothing useful (a comment, a multi-line construct).
    Nothing,
}

/// The spot at byte `offset` of `text`.
pub(crate) fn spot(text: &str, index: &LineIndex, offset: usize) -> Spot {
    let offset = floor_boundary(text, offset);
    let line_no = index.line_of(offset);
    let line = index.line_span(text, line_no);
    let offset = offset.min(line.end);
    let (table, header) = table_at(text, index, line_no);
    let on = on_line(&text[line.clone()], offset - line.start, line.start);
    Spot { table, header, on }
}

/// The table whose body holds line `line_no`: the nearest header above it.
fn table_at(text: &str, index: &LineIndex, line_no: usize) -> (String, Option<usize>) {
    for n in (0..line_no).rev() {
        let span = index.line_span(text, n);
        if let Some(path) = header_path(&text[span.clone()]) {
            return (path, Some(span.start));
        }
    }
    (String::new(), None)
}

/// `[[schedule.window]]` (spaces, quotes and a comment allowed) to `schedule.window`.
pub(crate) fn header_path(line: &str) -> Option<String> {
    let line = line.trim_start();
    if !line.starts_with('[') {
        return None;
    }
    let inner = line.trim_start_matches('[');
    let end = inner.find(']').unwrap_or(inner.len());
    Some(
        inner[..end]
            .split('.')
            .map(|part| part.trim().trim_matches(['"', '\'']))
            .collect::<Vec<_>>()
            .join("."),
    )
}

/// One lexical piece of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    /// A bare word (key or value).
    Word,
    /// A string; `content` is where its contents start.
    Str { content: usize },
    /// One of `= { } [ ] ,`.
    Punct(u8),
}

/// Splits a line into pieces (absolute spans); stops at a comment.
fn tokens(line: &str, base: usize) -> Vec<(Tok, Range<usize>)> {
    let bytes = line.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b' ' | b'\t' | b'\r' => i += 1,
            b'#' => break,
            b'=' | b'{' | b'}' | b'[' | b']' | b',' => {
                out.push((Tok::Punct(c), base + i..base + i + 1));
                i += 1;
            }
            b'"' | b'\'' => {
                let start = i;
                i += 1;
                while i < bytes.len() && bytes[i] != c {
                    if c == b'"' && bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i = (i + 1).min(bytes.len());
                out.push((
                    Tok::Str {
                        content: base + start + 1,
                    },
                    base + start..base + i,
                ));
            }
            _ => {
                let start = i;
                while i < bytes.len()
                    && !matches!(
                        bytes[i],
                        b' ' | b'\t'
                            | b'\r'
                            | b'#'
                            | b'='
                            | b'{'
                            | b'}'
                            | b'['
                            | b']'
                            | b','
                            | b'"'
                            | b'\''
                    )
                {
                    i += 1;
                }
                out.push((Tok::Word, base + start..base + i));
            }
        }
    }
    out
}

/// An open `{` or `[` (or the line itself) while walking a line.
#[derive(Debug, Clone)]
struct Frame {
    /// `{` frames and the line take keys; `[` frames hold values.
    table: bool,
    /// The key being written or whose value follows (tables only).
    key: String,
    /// Where that key is.
    key_span: Option<Range<usize>>,
    /// True until the `=` of the current pair.
    expecting_key: bool,
}

impl Frame {
    fn table() -> Frame {
        Frame {
            table: true,
            key: String::new(),
            key_span: None,
            expecting_key: true,
        }
    }
}

/// What the cursor at `at` (relative to `line`, which starts at byte `base`) is on.
fn on_line(line: &str, at: usize, base: usize) -> On {
    let cursor = base + at;
    let tokens = tokens(line, base);
    if let Some((Tok::Punct(b'['), first)) = tokens.first() {
        return On::Header {
            span: first.start..(base + line.trim_end().len()).max(cursor),
        };
    }
    let mut frames = vec![Frame::table()];
    let keys_of = |frames: &[Frame]| -> Vec<String> {
        frames
            .iter()
            .filter(|f| f.table && !f.expecting_key)
            .map(|f| f.key.clone())
            .collect()
    };
    for (i, (tok, span)) in tokens.iter().enumerate() {
        let touches = span.start <= cursor && cursor <= span.end;
        let is_word = matches!(tok, Tok::Word | Tok::Str { .. });
        if span.start >= cursor && !(touches && is_word) {
            break;
        }
        let top = frames.last_mut().expect("the line's frame is never popped");
        if touches && is_word {
            let string = match tok {
                Tok::Str { content } => Some(*content),
                _ => None,
            };
            if top.table && top.expecting_key {
                let keys = keys_of(&frames);
                let has_value = tokens[i + 1..]
                    .iter()
                    .any(|(t, _)| matches!(t, Tok::Punct(b'=')));
                return On::Key {
                    keys,
                    span: span.clone(),
                    has_value,
                };
            }
            return On::Value {
                keys: keys_of(&frames),
                span: span.clone(),
                string: string.filter(|&c| c <= cursor),
            };
        }
        match tok {
            Tok::Word | Tok::Str { .. } if top.table && top.expecting_key => {
                let text = match tok {
                    Tok::Str { content } => line
                        [content - base..(span.end - base).max(content - base)]
                        .trim_end_matches(['"', '\'']),
                    _ => &line[span.start - base..span.end - base],
                };
                top.key.push_str(text);
                top.key_span = Some(
                    top.key_span
                        .clone()
                        .map_or(span.clone(), |k| k.start..span.end),
                );
            }
            Tok::Punct(b'=') if top.table => top.expecting_key = false,
            Tok::Punct(b',') if top.table => {
                top.expecting_key = true;
                top.key.clear();
                top.key_span = None;
            }
            Tok::Punct(b'{') => frames.push(Frame::table()),
            Tok::Punct(b'[') => frames.push(Frame {
                table: false,
                ..Frame::table()
            }),
            Tok::Punct(b'}' | b']') if frames.len() > 1 => {
                frames.pop();
            }
            _ => {}
        }
    }
    let top = frames.last().expect("the line's frame is never popped");
    if top.table && top.expecting_key {
        if top.key.is_empty() {
            return On::Key {
                keys: keys_of(&frames),
                span: cursor..cursor,
                has_value: tokens
                    .iter()
                    .any(|(t, s)| s.start >= cursor && matches!(t, Tok::Punct(b'='))),
            };
        }
        // Typed a key and a space: still on it.
        return On::Nothing;
    }
    On::Value {
        keys: keys_of(&frames),
        span: cursor..cursor,
        string: None,
    }
}

/// The keys written in the table whose header line starts at `header` (or at the top level),
/// one per line, up to the next header.
pub(crate) fn keys_in_table(text: &str, index: &LineIndex, header: Option<usize>) -> Vec<String> {
    let first = header.map_or(0, |h| index.line_of(h) + 1);
    let mut keys = Vec::new();
    for n in first..index.line_count() {
        let line = &text[index.line_span(text, n)];
        if header_path(line).is_some() {
            break;
        }
        if let Some((key, _)) = line.split_once('=') {
            let key = key.trim().trim_matches(['"', '\'']);
            if !key.is_empty() && !key.starts_with('#') {
                keys.push(key.to_owned());
            }
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spot at the `|` of `marked` (which is removed).
    fn at(marked: &str) -> (Spot, String) {
        let offset = marked.find('|').unwrap();
        let text = marked.replacen('|', "", 1);
        let index = LineIndex::new(&text);
        (spot(&text, &index, offset), text)
    }

    fn keys(k: &[&str]) -> Vec<String> {
        k.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn tables_and_headers() {
        let (s, _) = at("[system]\nname = \"x\"\n[[schedule . window]]\n|");
        assert_eq!((s.table.as_str(), s.header), ("schedule.window", Some(20)));
        assert!(matches!(s.on, On::Key { .. }));
        let (s, _) = at("a = 1\n[[part|");
        assert_eq!(s.table, "");
        assert_eq!(s.on, On::Header { span: 6..12 });
    }

    #[test]
    fn keys_and_values() {
        let (s, _) = at("[[partition]]\nmem|");
        assert_eq!(
            s.on,
            On::Key {
                keys: vec![],
                span: 14..17,
                has_value: false
            }
        );
        let (s, _) = at("[[partition]]\nme|mory = 1");
        assert!(matches!(
            s.on,
            On::Key {
                has_value: true,
                ..
            }
        ));
        let (s, _) = at("[[device]]\nserved_by = \"sen|");
        assert_eq!(
            s.on,
            On::Value {
                keys: keys(&["served_by"]),
                span: 23..27,
                string: Some(24)
            }
        );
        let (s, _) = at("[[device]]\nserved_by = |");
        assert_eq!(
            s.on,
            On::Value {
                keys: keys(&["served_by"]),
                span: 23..23,
                string: None
            }
        );
        let (s, _) = at("[[channel]]\nendpoints = [\"control\", \"te|\"]");
        assert!(
            matches!(s.on, On::Value { ref keys, string: Some(_), .. } if keys == &["endpoints"])
        );
    }

    #[test]
    fn inline_tables() {
        let (s, _) = at("[[device]]\nmmio = { base = 0x1000, si|");
        assert!(matches!(s.on, On::Key { ref keys, .. } if keys == &["mmio"]));
        let (s, _) = at("[[device]]\nmmio = { base = 0x1|000, size = 1 }");
        assert!(matches!(s.on, On::Value { ref keys, .. } if keys == &["mmio", "base"]));
        let (s, _) = at("[[device]]\ngrants = [{ base = 1, size = 2 }, { |");
        assert!(matches!(s.on, On::Key { ref keys, .. } if keys == &["grants"]));
        let (s, _) = at("[[device]]\nmmio = { base = 1, size = 2 } # a comment |");
        assert!(matches!(s.on, On::Value { .. } | On::Nothing));
    }

    #[test]
    fn keys_already_written() {
        let text =
            "[[partition]]\nname = \"a\"\n# memory = 1\nvcpus=2\n[[partition]]\nimage = \"x\"\n";
        let index = LineIndex::new(text);
        assert_eq!(keys_in_table(text, &index, Some(0)), ["name", "vcpus"]);
        assert!(keys_in_table(text, &index, None).is_empty());
    }

    #[test]
    fn any_text_is_read_without_panicking() {
        for text in [
            "\"",
            "'",
            "[",
            "]]]",
            "={[,",
            "a = \"\\",
            "é = 'ü",
            "\u{0}[[\u{0}",
            "x = [{[{",
        ] {
            let index = LineIndex::new(text);
            for offset in 0..=text.len() + 1 {
                let _ = spot(text, &index, offset);
            }
        }
    }
}
