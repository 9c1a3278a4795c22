//! Problems found in a system description, with source positions, rendered like a compiler would.

use std::fmt;
use std::ops::Range;

use codespan_reporting::diagnostic::{Diagnostic as CsDiagnostic, Label};
use codespan_reporting::files::SimpleFile;
use codespan_reporting::term::{self, termcolor::Ansi};

/// How bad a [`Diagnostic`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The description cannot be used.
    Error,
    /// The description works but probably not as intended.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One problem, anchored at a byte range of the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// One-line summary.
    pub message: String,
    /// Byte range in the source the problem is about.
    pub span: Range<usize>,
    /// 1-based line of `span.start`.
    pub line: usize,
    /// 1-based column (in characters) of `span.start`.
    pub column: usize,
    /// Short text shown under the primary span.
    pub label: String,
    /// Extra explanations and suggestions ("did you mean ...").
    pub notes: Vec<String>,
    /// Secondary spans with their labels (e.g. "first defined here").
    pub related: Vec<(Range<usize>, String)>,
}

impl Diagnostic {
    /// A new error at `span`; `line`/`column` are filled in by [`Diagnostics::push`].
    pub fn error(span: Range<usize>, message: impl Into<String>) -> Self {
        Self::new(Severity::Error, span, message)
    }

    /// A new warning at `span`; `line`/`column` are filled in by [`Diagnostics::push`].
    pub fn warning(span: Range<usize>, message: impl Into<String>) -> Self {
        Self::new(Severity::Warning, span, message)
    }

    fn new(severity: Severity, span: Range<usize>, message: impl Into<String>) -> Self {
        Self {
            severity,
            message: message.into(),
            span,
            line: 0,
            column: 0,
            label: String::new(),
            notes: Vec::new(),
            related: Vec::new(),
        }
    }

    /// Sets the primary label.
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    /// Adds a note.
    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }

    /// Adds a note if there is one.
    pub fn with_optional_note(mut self, note: Option<String>) -> Self {
        self.notes.extend(note);
        self
    }

    /// Adds a secondary span with its label.
    pub fn with_related(mut self, span: Range<usize>, label: impl Into<String>) -> Self {
        self.related.push((span, label.into()));
        self
    }

    /// Sets the primary label, in place.
    pub(crate) fn label(&mut self, label: impl Into<String>) -> &mut Self {
        self.label = label.into();
        self
    }

    /// Adds a note, in place.
    pub(crate) fn note(&mut self, note: impl Into<String>) -> &mut Self {
        self.notes.push(note.into());
        self
    }

    /// Adds a note if there is one, in place.
    pub(crate) fn optional_note(&mut self, note: Option<String>) -> &mut Self {
        self.notes.extend(note);
        self
    }

    /// Adds a secondary span, in place.
    pub(crate) fn related(&mut self, span: Range<usize>, label: impl Into<String>) -> &mut Self {
        self.related.push((span, label.into()));
        self
    }

    /// True for [`Severity::Error`].
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// Every problem found in one source file, errors and warnings, in source order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostics {
    file_name: String,
    source: String,
    /// Byte offset of the start of each line of `source`, so locating a diagnostic is a binary
    /// search, not a scan (a huge garbage file can have a diagnostic per line).
    line_starts: Vec<usize>,
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// An empty set for `source`, which is shown as `file_name` in rendered output.
    pub fn new(file_name: impl Into<String>, source: impl Into<String>) -> Self {
        let source = source.into();
        let line_starts = std::iter::once(0)
            .chain(source.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self {
            file_name: file_name.into(),
            source,
            line_starts,
            items: Vec::new(),
        }
    }

    /// Adds a diagnostic, clamping its spans into the source and computing its line and column.
    pub fn push(&mut self, mut diagnostic: Diagnostic) {
        self.locate(&mut diagnostic);
        self.items.push(diagnostic);
    }

    /// Adds a diagnostic and returns it for adding labels and notes; [`Diagnostics::finish`]
    /// re-locates it afterwards.
    pub(crate) fn push_mut(&mut self, diagnostic: Diagnostic) -> &mut Diagnostic {
        self.push(diagnostic);
        let last = self.items.len() - 1;
        &mut self.items[last]
    }

    /// Re-clamps and re-locates every diagnostic, then sorts by position (stable, so problems at
    /// one place keep their order).
    pub(crate) fn finish(&mut self) {
        let mut items = std::mem::take(&mut self.items);
        for d in &mut items {
            self.locate(d);
        }
        items.sort_by_key(|d| d.span.start);
        self.items = items;
    }

    /// Replaces the file name shown in rendered output.
    pub fn set_file_name(&mut self, file_name: impl Into<String>) {
        self.file_name = file_name.into();
    }

    /// Moves every diagnostic of `other` (which must be about the same source) into `self`.
    pub fn extend(&mut self, other: Diagnostics) {
        for d in other.items {
            self.push(d);
        }
    }

    /// Keeps only the diagnostics for which `keep` is true.
    pub fn retain(&mut self, keep: impl FnMut(&Diagnostic) -> bool) {
        self.items.retain(keep);
    }

    fn locate(&self, diagnostic: &mut Diagnostic) {
        diagnostic.span = self.clamp(&diagnostic.span);
        for (span, _) in &mut diagnostic.related {
            *span = self.clamp(span);
        }
        let (line, column) = self.line_column(diagnostic.span.start);
        diagnostic.line = line;
        diagnostic.column = column;
    }

    /// The diagnostics, in source order once parsing is done.
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.items.iter()
    }

    /// True if any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.items.iter().any(Diagnostic::is_error)
    }

    /// Number of errors.
    pub fn error_count(&self) -> usize {
        self.items.iter().filter(|d| d.is_error()).count()
    }

    /// Number of warnings.
    pub fn warning_count(&self) -> usize {
        self.items.len() - self.error_count()
    }

    /// Number of diagnostics.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True if there are no diagnostics at all.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The file name used in rendered output.
    pub fn file_name(&self) -> &str {
        &self.file_name
    }

    /// The source text the spans refer to.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders every diagnostic (`file:line:col`, source snippet, labels, notes) as plain text.
    pub fn render(&self) -> String {
        let file = SimpleFile::new(self.file_name.as_str(), self.source.as_str());
        let config = term::Config::default();
        let mut out = String::new();
        for diagnostic in &self.items {
            if term::emit_to_string(&mut out, &config, &file, &to_codespan(diagnostic)).is_err() {
                out.push_str(&fallback(&self.file_name, diagnostic));
            }
        }
        out
    }

    /// Like [`Diagnostics::render`], with ANSI colour escapes for a terminal.
    pub fn render_colored(&self) -> String {
        let file = SimpleFile::new(self.file_name.as_str(), self.source.as_str());
        let config = term::Config::default();
        let mut out = String::new();
        for diagnostic in &self.items {
            let mut writer = Ansi::new(Vec::new());
            match term::emit_to_write_style(&mut writer, &config, &file, &to_codespan(diagnostic)) {
                Ok(()) => out.push_str(&String::from_utf8_lossy(&writer.into_inner())),
                Err(_) => out.push_str(&fallback(&self.file_name, diagnostic)),
            }
        }
        out
    }

    /// "2 errors, 1 warning" style summary.
    pub fn summary(&self) -> String {
        fn plural(n: usize, word: &str) -> String {
            format!("{n} {word}{}", if n == 1 { "" } else { "s" })
        }
        format!(
            "{}, {}",
            plural(self.error_count(), "error"),
            plural(self.warning_count(), "warning")
        )
    }

    fn clamp(&self, span: &Range<usize>) -> Range<usize> {
        let floor = |mut i: usize| {
            i = i.min(self.source.len());
            while !self.source.is_char_boundary(i) {
                i -= 1;
            }
            i
        };
        let start = floor(span.start);
        let end = floor(span.end).max(start);
        start..end
    }

    fn line_column(&self, offset: usize) -> (usize, usize) {
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let line_start = self.line_starts[line - 1];
        (line, self.source[line_start..offset].chars().count() + 1)
    }
}

impl<'a> IntoIterator for &'a Diagnostics {
    type Item = &'a Diagnostic;
    type IntoIter = std::slice::Iter<'a, Diagnostic>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.render())?;
        write!(f, "{}: {}", self.file_name, self.summary())
    }
}

fn to_codespan(diagnostic: &Diagnostic) -> CsDiagnostic<()> {
    let base = match diagnostic.severity {
        Severity::Error => CsDiagnostic::error(),
        Severity::Warning => CsDiagnostic::warning(),
    };
    let mut labels =
        vec![Label::primary((), diagnostic.span.clone()).with_message(&diagnostic.label)];
    labels.extend(
        diagnostic
            .related
            .iter()
            .map(|(span, text)| Label::secondary((), span.clone()).with_message(text)),
    );
    base.with_message(&diagnostic.message)
        .with_labels(labels)
        .with_notes(diagnostic.notes.clone())
}

/// Used only if codespan cannot render (it never should: spans are clamped).
fn fallback(file_name: &str, d: &Diagnostic) -> String {
    let mut out = format!(
        "{}: {}:{}:{}: {}\n",
        d.severity, file_name, d.line, d.column, d.message
    );
    for note in &d.notes {
        out.push_str(&format!("  = {note}\n"));
    }
    out
}

/// The candidate closest to `name` by edit distance, if it is close enough to be a likely typo.
pub fn suggest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    /// Longer names are no typo of a key or a name (at most 31 characters), and the edit
    /// distance costs their length squared.
    const LONGEST: usize = 64;
    let name = name.to_lowercase();
    let length = name.chars().count();
    if length > LONGEST {
        return None;
    }
    let limit = (length / 3).max(1);
    candidates
        .into_iter()
        .filter(|c| c.chars().count().abs_diff(length) <= limit)
        .map(|c| (edit_distance(&name, &c.to_lowercase()), c))
        .filter(|&(d, _)| d <= limit)
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// Levenshtein distance counting adjacent transpositions as one edit.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_find_typos_only() {
        let names = ["control", "telemetry", "sensor-model"];
        assert_eq!(suggest("contrl", names), Some("control"));
        assert_eq!(suggest("telemetyr", names), Some("telemetry"));
        assert_eq!(suggest("Control", names), Some("control"));
        assert_eq!(suggest("gpu", names), None);
        let long = "x".repeat(100_000);
        assert_eq!(suggest(&long, [long.as_str()]), None);
        assert_eq!(edit_distance("ab", "ba"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let mut diags = Diagnostics::new("x.toml", "a = 1\nnäme = 2\n");
        diags.push(Diagnostic::error(13..14, "bad").with_label("here"));
        let d = diags.iter().next().unwrap();
        assert_eq!((d.line, d.column), (2, 7));
        diags.push(Diagnostic::warning(0..1, "first"));
        assert_eq!(diags.iter().nth(1).unwrap().line, 1);
        assert!(diags.has_errors());
        assert_eq!(diags.summary(), "1 error, 1 warning");
        diags.push(Diagnostic::warning(6..6, "line start"));
        assert_eq!(
            diags.iter().nth(2).map(|d| (d.line, d.column)),
            Some((2, 1))
        );
        diags.push(Diagnostic::warning(99..99, "end"));
        assert_eq!(
            diags.iter().nth(3).map(|d| (d.line, d.column)),
            Some((3, 1))
        );
    }

    #[test]
    fn spans_are_clamped_to_char_boundaries() {
        let mut diags = Diagnostics::new("x.toml", "é");
        diags.push(
            Diagnostic::error(1..99, "inside a character")
                .with_related(Range { start: 7, end: 3 }, "odd"),
        );
        let d = diags.iter().next().unwrap();
        assert_eq!(d.span, 0..2);
        assert_eq!(d.related[0].0, 2..2);
        assert!(diags.render().contains("inside a character"));
    }

    #[test]
    fn render_shows_location_snippet_labels_and_notes() {
        let mut diags = Diagnostics::new("sys.toml", "[system]\nname = \"x\"\n");
        diags.push(
            Diagnostic::error(16..19, "bad name")
                .with_label("this one")
                .with_note("try another")
                .with_related(0..8, "in here"),
        );
        let plain = diags.render();
        assert!(plain.contains("error: bad name"), "{plain}");
        assert!(plain.contains("sys.toml:2:8"), "{plain}");
        assert!(plain.contains("name = \"x\""), "{plain}");
        assert!(
            plain.contains("this one") && plain.contains("in here"),
            "{plain}"
        );
        assert!(plain.contains("= try another"), "{plain}");
        assert!(!plain.contains('\u{1b}'));
        let colored = diags.render_colored();
        assert!(colored.contains('\u{1b}'));
        assert!(colored.contains("bad name"));
    }
}
