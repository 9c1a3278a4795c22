//! Byte offsets to LSP positions (UTF-16 columns) and back, and applying an editor's changes.
//!
//! Every conversion clamps: a position past the end of a line or of the text, or inside a
//! character, lands on the nearest character boundary before it; nothing here can panic on what a
//! client sends.

use std::ops::Range;

use tower_lsp_server::ls_types::{Position, Range as LspRange, TextDocumentContentChangeEvent};

/// Line starts of one text, for converting between byte offsets and [`Position`]s.
#[derive(Debug, Clone)]
pub struct LineIndex {
    line_starts: Vec<usize>,
}

impl LineIndex {
    /// Indexes `text`.
    pub fn new(text: &str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self { line_starts }
    }

    /// The position of byte `offset` (clamped into `text`).
    pub fn position(&self, text: &str, offset: usize) -> Position {
        let offset = floor_boundary(text, offset);
        let line = self.line_starts.partition_point(|&s| s <= offset) - 1;
        let start = self.line_starts[line];
        let character = text[start..offset].encode_utf16().count();
        Position::new(to_u32(line), to_u32(character))
    }

    /// The LSP range of bytes `span`.
    pub fn range(&self, text: &str, span: &Range<usize>) -> LspRange {
        LspRange::new(
            self.position(text, span.start),
            self.position(text, span.end.max(span.start)),
        )
    }

    /// The byte offset of `position`: past the end of its line means the line's end (before its
    /// newline), past the last line means the end of the text.
    pub fn offset(&self, text: &str, position: Position) -> usize {
        let Some(&start) = self.line_starts.get(position.line as usize) else {
            return text.len();
        };
        let end = self
            .line_starts
            .get(position.line as usize + 1)
            .map_or(text.len(), |&next| next - 1);
        let line = &text[start..end];
        let mut units = 0usize;
        for (i, c) in line.char_indices() {
            if units >= position.character as usize {
                return start + i;
            }
            units += c.len_utf16();
        }
        end
    }

    /// The byte range of `range`, start never after end.
    pub fn span(&self, text: &str, range: LspRange) -> Range<usize> {
        let start = self.offset(text, range.start);
        let end = self.offset(text, range.end);
        start.min(end)..end.max(start)
    }

    /// The line (0-based) containing byte `offset`.
    pub fn line_of(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&s| s <= offset) - 1
    }

    /// The byte range of line `line` without its line break (empty past the end).
    pub fn line_span(&self, text: &str, line: usize) -> Range<usize> {
        let Some(&start) = self.line_starts.get(line) else {
            return text.len()..text.len();
        };
        let end = self
            .line_starts
            .get(line + 1)
            .map_or(text.len(), |&next| next - 1);
        let end = if text[start..end].ends_with('\r') {
            end - 1
        } else {
            end
        };
        start..end
    }

    /// Number of lines (a text ending in a newline has an empty last line).
    pub fn line_count(&self) -> usize {
        self.line_starts.len()
    }
}

/// Applies one `textDocument/didChange` content change to `text`: a whole new text, or a range
/// replaced (clamped into the text).
pub fn apply_change(text: &mut String, change: TextDocumentContentChangeEvent) {
    match change.range {
        None => *text = change.text,
        Some(range) => {
            let span = LineIndex::new(text).span(text, range);
            text.replace_range(span, &change.text);
        }
    }
}

/// The largest character boundary of `text` at or before `offset`.
pub fn floor_boundary(text: &str, offset: usize) -> usize {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_utf16_units() {
        let text = "a = 1\nnäme = \"😀x\"\n";
        let index = LineIndex::new(text);
        let x = text.find('x').unwrap();
        assert_eq!(index.position(text, x), Position::new(1, 10));
        assert_eq!(index.offset(text, Position::new(1, 10)), x);
        assert_eq!(index.position(text, 0), Position::new(0, 0));
        assert_eq!(index.position(text, text.len()), Position::new(2, 0));
        // Inside the emoji: the offset lands before it.
        let emoji = text.find('😀').unwrap();
        assert_eq!(index.position(text, emoji + 2), index.position(text, emoji));
    }

    #[test]
    fn out_of_range_positions_are_clamped() {
        let text = "ab\ncd";
        let index = LineIndex::new(text);
        assert_eq!(index.offset(text, Position::new(0, 99)), 2);
        assert_eq!(index.offset(text, Position::new(7, 0)), text.len());
        let span = index.span(
            text,
            LspRange::new(Position::new(1, 1), Position::new(0, 1)),
        );
        assert_eq!(span, 1..4);
        assert_eq!(index.line_span(text, 0), 0..2);
        assert_eq!(index.line_span(text, 9), 5..5);
    }

    #[test]
    fn changes_apply_in_order() {
        let mut text = String::from("name = \"a\"\n");
        apply_change(
            &mut text,
            TextDocumentContentChangeEvent {
                range: Some(LspRange::new(Position::new(0, 8), Position::new(0, 9))),
                range_length: None,
                text: "control".into(),
            },
        );
        assert_eq!(text, "name = \"control\"\n");
        apply_change(
            &mut text,
            TextDocumentContentChangeEvent {
                range: Some(LspRange::new(Position::new(5, 0), Position::new(9, 9))),
                range_length: None,
                text: "x".into(),
            },
        );
        assert_eq!(text, "name = \"control\"\nx");
        apply_change(
            &mut text,
            TextDocumentContentChangeEvent {
                range: None,
                range_length: None,
                text: "new".into(),
            },
        );
        assert_eq!(text, "new");
    }
}
