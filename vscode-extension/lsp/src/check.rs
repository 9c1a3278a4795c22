//! One check of a description: hv-config's diagnostics as LSP diagnostics, the "did you mean"
//! quick fixes, and the name model of the same text.

use std::path::Path;

use hv_config::{Analysis, ParseOptions, Severity};
use tower_lsp_server::ls_types::{
    Diagnostic, DiagnosticRelatedInformation, DiagnosticSeverity, Location, NumberOrString,
    Range as LspRange, Uri,
};

use crate::model::Model;
use crate::text::LineIndex;

/// Most diagnostics published for one file (only garbage has more); the rest are dropped.
pub const MAX_DIAGNOSTICS: usize = 1000;
/// The `source` of every diagnostic.
pub const SOURCE: &str = "hv";

/// A replacement named by a diagnostic's note ("did you mean `x`?", "try `x`").
#[derive(Debug, Clone, PartialEq)]
pub struct Fix {
    /// What the quick fix is called.
    pub title: String,
    /// The text replaced.
    pub range: LspRange,
    /// The text put in its place.
    pub new_text: String,
    /// The diagnostic it fixes.
    pub diagnostic: Diagnostic,
}

/// Everything one check learned.
#[derive(Debug, Clone, Default)]
pub struct Check {
    /// Errors and warnings, in source order.
    pub diagnostics: Vec<Diagnostic>,
    /// Quick fixes.
    pub fixes: Vec<Fix>,
    /// Names and their occurrences.
    pub model: Model,
}

/// Checks `text` (the description at `path`, published as `uri`) exactly as `hv run` would.
pub fn check(text: &str, path: &Path, uri: &Uri, check_images: bool) -> Check {
    let options = ParseOptions {
        check_images,
        ..ParseOptions::default()
    };
    let Analysis {
        raw, diagnostics, ..
    } = hv_config::analyze(text, path, &options);
    let index = LineIndex::new(text);
    let mut out = Check {
        model: Model::new(raw.unwrap_or_default(), text),
        ..Check::default()
    };
    for d in diagnostics.iter().take(MAX_DIAGNOSTICS) {
        let range = index.range(text, &d.span);
        let message = message(d);
        let related: Vec<DiagnosticRelatedInformation> = d
            .related
            .iter()
            .map(|(span, label)| DiagnosticRelatedInformation {
                location: Location::new(uri.clone(), index.range(text, span)),
                message: label.clone(),
            })
            .collect();
        let diagnostic = Diagnostic {
            range,
            severity: Some(match d.severity {
                Severity::Error => DiagnosticSeverity::ERROR,
                Severity::Warning => DiagnosticSeverity::WARNING,
            }),
            code: None::<NumberOrString>,
            source: Some(SOURCE.to_owned()),
            message,
            related_information: (!related.is_empty()).then_some(related),
            ..Diagnostic::default()
        };
        for note in &d.notes {
            if let Some(name) = replacement(note) {
                let written = text.get(d.span.clone()).unwrap_or("");
                out.fixes.push(Fix {
                    title: format!("Replace with `{name}`"),
                    range,
                    new_text: requote(written, name),
                    diagnostic: diagnostic.clone(),
                });
            }
        }
        out.diagnostics.push(diagnostic);
    }
    out
}

/// The text an editor shows for `d`, as `hv run` prints it without the snippet: the message,
/// then the label under the span unless the message already says it, then each note.
pub fn message(d: &hv_config::Diagnostic) -> String {
    let mut lines = vec![d.message.as_str()];
    let label = d.label.trim();
    if !label.is_empty() && !d.message.to_lowercase().contains(&label.to_lowercase()) {
        lines.push(label);
    }
    lines.extend(d.notes.iter().map(String::as_str));
    lines.join("\n")
}

/// The name a note suggests: `did you mean `x`?` or `try `x``.
pub fn replacement(note: &str) -> Option<&str> {
    let name = note
        .strip_prefix("did you mean `")
        .and_then(|r| r.strip_suffix("`?"))
        .or_else(|| note.strip_prefix("try `").and_then(|r| r.strip_suffix('`')))?;
    (!name.is_empty() && !name.contains('`')).then_some(name)
}

/// `name` quoted like `written` is (a bare key stays bare).
fn requote(written: &str, name: &str) -> String {
    for quote in ["\"", "'"] {
        if written.len() >= 2 && written.starts_with(quote) && written.ends_with(quote) {
            return format!("{quote}{name}{quote}");
        }
    }
    name.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;
    use tower_lsp_server::ls_types::Position;

    fn run(text: &str) -> Check {
        let uri = Uri::from_str("file:///ws/sys.toml").unwrap();
        check(text, Path::new("/ws/sys.toml"), &uri, false)
    }

    #[test]
    fn messages_ranges_and_fixes() {
        let text = "[[partition]]\nname = \"control\"\nimage = \"c.elf\"\nvcpu = 2\n\n[[channel]]\nname = \"t\"\nendpoints = [\"contrl\", \"control\"]\n";
        let c = run(text);
        let messages: Vec<&str> = c.diagnostics.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "unknown key `vcpu` in [[partition]]\ndid you mean `vcpus`?",
                "unknown partition `contrl`\nendpoint names no partition\ndid you mean `control`?",
            ]
        );
        let key = &c.diagnostics[0];
        assert_eq!(
            key.range,
            LspRange::new(Position::new(3, 0), Position::new(3, 4))
        );
        assert_eq!(key.severity, Some(DiagnosticSeverity::ERROR));
        assert_eq!(key.source.as_deref(), Some("hv"));
        let fixes: Vec<(&str, LspRange)> = c
            .fixes
            .iter()
            .map(|f| (f.new_text.as_str(), f.range))
            .collect();
        assert_eq!(
            fixes,
            [
                ("vcpus", key.range),
                (
                    "\"control\"",
                    LspRange::new(Position::new(7, 13), Position::new(7, 21))
                ),
            ]
        );
        assert_eq!(c.model.partition_names(), ["control"]);
    }

    #[test]
    fn related_information_points_at_the_other_side() {
        let text = "[[partition]]\nname = \"a\"\nimage = \"a.elf\"\n[[partition]]\nname = \"a\"\nimage = \"b.elf\"\n";
        let c = run(text);
        let dup = &c.diagnostics[0];
        assert_eq!(
            dup.message,
            "duplicate partition name `a`\ndefined again here"
        );
        assert_eq!(
            dup.range,
            LspRange::new(Position::new(4, 7), Position::new(4, 10))
        );
        let related = dup.related_information.as_ref().unwrap();
        assert_eq!(related[0].message, "first defined here");
        assert_eq!(
            related[0].location.range,
            LspRange::new(Position::new(1, 7), Position::new(1, 10))
        );
    }

    #[test]
    fn labels_that_add_something_are_kept() {
        let text = "[[partition]]\nname = \"a\"\nimage = \"a.elf\"\nmemory = \"4G\"\n";
        assert_eq!(
            run(text).diagnostics[0].message,
            "`memory` (4G) is out of range\nexpected 2M..=1G"
        );
    }

    #[test]
    fn notes_that_name_a_replacement() {
        assert_eq!(replacement("did you mean `vcpus`?"), Some("vcpus"));
        assert_eq!(replacement("try `my_name`"), Some("my_name"));
        assert_eq!(replacement("expected one of: `a`, `b`"), None);
        assert_eq!(requote("'x'", "y"), "'y'");
        assert_eq!(requote("x", "y"), "y");
    }

    #[test]
    fn deep_nesting_is_checked_without_overflowing_the_stack() {
        for n in [1_000usize, 30_000] {
            for (open, close) in [("[", "]"), ("{a=", "}")] {
                let closed = format!("x = {}{}\n", open.repeat(n), close.repeat(n));
                assert!(!run(&closed).diagnostics.is_empty());
                let unclosed = format!("x = {}\n", open.repeat(n));
                assert!(!run(&unclosed).diagnostics.is_empty());
            }
        }
    }

    #[test]
    fn garbage_is_checked_without_panicking() {
        for text in [
            "\u{0}\u{1}\u{fffd}[[",
            "[[partition]]\nname = \"",
            "=\n=\n[\n",
            "",
        ] {
            let c = run(text);
            assert!(c.diagnostics.len() <= MAX_DIAGNOSTICS);
        }
        let many = "x = 1\n".repeat(5000);
        assert_eq!(run(&many).diagnostics.len(), MAX_DIAGNOSTICS);
    }
}
