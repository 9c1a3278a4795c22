//! Which files are system descriptions: the rule of the README ("Which files"), and the settings
//! that steer it.

use std::path::{Path, PathBuf};

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use serde_json::Value;

/// The default `systemFiles` globs (the VS Code setting `hvdk.systemFiles` has the same default).
pub const DEFAULT_SYSTEM_FILES: &[&str] = &["**/examples/*.toml", "**/*.hv.toml"];
/// The default quiet time after a change before a file is checked again.
pub const DEFAULT_DEBOUNCE_MS: u64 = 150;
/// File names that are never system descriptions.
const NEVER: &[&str] = &["Cargo.toml", "Cargo.lock"];

/// Why a setting was not taken.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// A `systemFiles` entry is not a glob.
    #[error("`systemFiles` entry {glob:?} is not a glob")]
    BadGlob {
        /// The entry.
        glob: String,
        /// What is wrong with it.
        #[source]
        source: globset::Error,
    },
}

/// The server's settings (`initializationOptions`, `workspace/didChangeConfiguration`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Globs of system descriptions; `!glob` excludes.
    pub system_files: Vec<String>,
    /// Quiet time after a change before checking, in milliseconds.
    pub debounce_ms: u64,
    /// Check the guest images as `hv run` does.
    pub check_images: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            system_files: DEFAULT_SYSTEM_FILES.iter().map(|s| s.to_string()).collect(),
            debounce_ms: DEFAULT_DEBOUNCE_MS,
            check_images: true,
        }
    }
}

impl Settings {
    /// These settings with the keys of `value` applied: the object itself, or nested under
    /// `hvdk` (as VS Code sends its section). Unknown keys and ill-typed values are ignored.
    pub fn updated(&self, value: &Value) -> Settings {
        let mut next = self.clone();
        let object = value.get("hvdk").unwrap_or(value);
        if let Some(globs) = object.get("systemFiles").and_then(Value::as_array) {
            next.system_files = globs
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect();
        }
        if let Some(ms) = object.get("debounceMs").and_then(Value::as_u64) {
            next.debounce_ms = ms.min(10_000);
        }
        if let Some(check) = object.get("checkImages").and_then(Value::as_bool) {
            next.check_images = check;
        }
        next
    }
}

/// The compiled file rule.
#[derive(Debug, Clone)]
pub struct FileRule {
    include: GlobSet,
    exclude: GlobSet,
    roots: Vec<PathBuf>,
}

impl FileRule {
    /// The rule for `globs` (see [`Settings::system_files`]) in a workspace with `roots`. Bad
    /// globs are left out and reported.
    pub fn new(globs: &[String], roots: Vec<PathBuf>) -> (FileRule, Vec<FilesError>) {
        let mut include = GlobSetBuilder::new();
        let mut exclude = GlobSetBuilder::new();
        let mut errors = Vec::new();
        for glob in globs {
            let (set, pattern) = match glob.strip_prefix('!') {
                Some(pattern) => (&mut exclude, pattern),
                None => (&mut include, glob.as_str()),
            };
            match compile(pattern) {
                Ok(g) => {
                    set.add(g);
                }
                Err(source) => errors.push(FilesError::BadGlob {
                    glob: glob.clone(),
                    source,
                }),
            }
        }
        let empty = || GlobSet::empty();
        let rule = FileRule {
            include: include.build().unwrap_or_else(|_| empty()),
            exclude: exclude.build().unwrap_or_else(|_| empty()),
            roots,
        };
        (rule, errors)
    }

    /// True if the document at `path` (`None` for an unsaved document) with `text` is a system
    /// description.
    pub fn is_description(&self, path: Option<&Path>, text: &str) -> bool {
        if let Some(path) = path {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if NEVER.contains(&name) {
                return false;
            }
            let relative: Vec<&Path> = self
                .roots
                .iter()
                .filter_map(|root| path.strip_prefix(root).ok())
                .collect();
            let matches =
                |set: &GlobSet| set.is_match(path) || relative.iter().any(|r| set.is_match(r));
            if matches(&self.exclude) {
                return false;
            }
            if matches(&self.include) {
                return true;
            }
            if path.extension().is_some_and(|e| e != "toml") {
                return false;
            }
        }
        has_system_table(text)
    }
}

fn compile(pattern: &str) -> Result<Glob, globset::Error> {
    GlobBuilder::new(pattern).literal_separator(true).build()
}

/// True if a line of `text` is the `[system]` table header (spaces and a comment may follow).
pub fn has_system_table(text: &str) -> bool {
    text.lines().any(|line| {
        line.trim_start()
            .strip_prefix("[system]")
            .is_some_and(|rest| {
                let rest = rest.trim_start();
                rest.is_empty() || rest.starts_with('#')
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(globs: &[&str]) -> FileRule {
        let globs: Vec<String> = globs.iter().map(|s| s.to_string()).collect();
        let (rule, errors) = FileRule::new(&globs, vec![PathBuf::from("/ws")]);
        assert!(errors.is_empty(), "{errors:?}");
        rule
    }

    #[test]
    fn the_rule() {
        let r = rule(DEFAULT_SYSTEM_FILES);
        let yes = |p: &str, t: &str| r.is_description(Some(Path::new(p)), t);
        assert!(yes("/ws/examples/demo.toml", ""));
        assert!(yes("/elsewhere/examples/demo.toml", ""));
        assert!(yes("/ws/sys/board.hv.toml", ""));
        assert!(!yes("/ws/other.toml", "[package]\nname = \"x\"\n"));
        assert!(yes(
            "/ws/other.toml",
            "# mine\n  [system] # here\nname = \"x\"\n"
        ));
        assert!(!yes("/ws/other.toml", "[systems]\n"));
        assert!(!yes("/ws/examples/Cargo.toml", "[system]\n"));
        assert!(!yes("/ws/Cargo.toml", "[system]\n"));
        assert!(!yes("/ws/notes.md", "[system]\n"));
        assert!(r.is_description(None, "[system]\n"));
        assert!(!r.is_description(None, "[[partition]]\n"));
    }

    #[test]
    fn negated_globs_exclude_and_globs_are_relative_to_roots() {
        let r = rule(&["sys/*.toml", "!**/fixtures/**"]);
        let yes = |p: &str, t: &str| r.is_description(Some(Path::new(p)), t);
        assert!(yes("/ws/sys/a.toml", ""));
        assert!(!yes("/ws/sys/deeper/a.toml", ""));
        assert!(!yes("/ws/fixtures/a.toml", "[system]\n"));
        let (_, errors) = FileRule::new(&["a[".to_owned()], Vec::new());
        assert_eq!(errors.len(), 1);
    }

    #[test]
    fn settings_from_the_client() {
        let s = Settings::default().updated(&json!({
            "hvdk": { "systemFiles": ["x/*.toml"], "debounceMs": 5, "hvPath": "/bin/hv" }
        }));
        assert_eq!(s.system_files, ["x/*.toml"]);
        assert_eq!(s.debounce_ms, 5);
        let s = s.updated(&json!({ "checkImages": false, "debounceMs": "soon" }));
        assert!(!s.check_images);
        assert_eq!(s.debounce_ms, 5);
        let s = s.updated(&json!(null));
        assert_eq!(s.system_files, ["x/*.toml"]);
    }
}
