//! Hover: key and table documentation from `CONFIG.md`, and a partition's memory layout.

use std::ops::Range;

use crate::server::Parsed;

/// Markdown for what is at byte `offset`, and the span it is about.
pub(crate) fn hover(parsed: &Parsed, offset: usize) -> Option<(String, Range<usize>)> {
    let _ = (parsed, offset);
    None
}
