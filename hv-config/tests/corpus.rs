//! The description corpus (`tests/corpus/*.toml`): each file's first line says whether it
//! must validate (`# expect ok`) or fail with one error at a position
//! (`# expect error LINE:COL: MESSAGE`).

use std::path::{Path, PathBuf};

use hv_config::{ConfigError, ParseOptions, SystemConfig};

#[test]
fn corpus_descriptions_are_judged_as_their_first_line_says() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 5,
        "{} has {} files",
        dir.display(),
        files.len()
    );
    let options = ParseOptions {
        host_cpus: Some(64),
        check_images: false,
    };
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let source = std::fs::read_to_string(&path).unwrap();
        let expect = source.lines().next().unwrap_or_default();
        let result = SystemConfig::parse_with(&source, &path, &options);
        if expect == "# expect ok" {
            if let Err(ConfigError::Invalid(d)) = &result {
                panic!("{name}: refused:\n{}", d.render());
            }
            assert!(result.is_ok(), "{name}: {result:?}");
            continue;
        }
        let Some((position, message)) = expect
            .strip_prefix("# expect error ")
            .and_then(|e| e.split_once(": "))
        else {
            panic!("{name}: the first line must be `# expect ok` or `# expect error L:C: MESSAGE`");
        };
        let Err(ConfigError::Invalid(diags)) = result else {
            panic!("{name}: accepted, expected {message:?}");
        };
        let found = diags
            .iter()
            .any(|d| d.message == message && format!("{}:{}", d.line, d.column) == position);
        assert!(
            found,
            "{name}: no {message:?} at {position} in:\n{}",
            diags.render()
        );
        assert!(
            diags.render().contains(&format!("{name}:{position}")),
            "{name}: the rendering lacks {position}:\n{}",
            diags.render()
        );
    }
}
