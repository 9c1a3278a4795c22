//! Fuzz target: `unix:` link paths made from the input, bound under a fresh temporary
//! directory. Checks: binding never creates a directory (an explicit link in a missing
//! directory once created it silently); it succeeds exactly when the socket's directory
//! exists (a path that fits `sun_path` and names nothing yet).
#![no_main]

use std::path::{Path, PathBuf};

use hv_link::{LinkAddr, Listener, TransportError};
use libfuzzer_sys::fuzz_target;

/// Every directory under `root`.
fn dirs(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.push(e.path());
                todo.push(e.path());
            }
        }
    }
    out.sort();
    out
}

fuzz_target!(|input: &[u8]| {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // The first bytes make some directories (and a file) that exist; the rest is the path.
    let (made, path) = input.split_at(input.len().min(3));
    let names = ["a", "b", "a/b", "c/d"];
    for (i, &m) in made.iter().enumerate() {
        let _ = std::fs::create_dir_all(root.join(names[(usize::from(m) + i) % names.len()]));
    }
    let _ = std::fs::write(root.join("file"), b"x");
    let text: String = path
        .iter()
        .map(|&b| match b % 8 {
            0 => '/',
            1 => 'a',
            2 => 'b',
            3 => 'c',
            4 => 'd',
            5 => '.',
            6 => 's',
            _ => ['f', 'i', 'l', 'e'][usize::from(b / 8) % 4],
        })
        .collect();
    if text.is_empty() || text.ends_with('/') {
        return;
    }
    let sock = root.join(text.trim_start_matches('/'));
    let before = dirs(root);
    let parent_exists = sock.parent().is_some_and(Path::is_dir);
    let result = Listener::bind(&LinkAddr::Unix(sock.clone()));
    assert_eq!(
        dirs(root),
        before,
        "bind {} created a directory",
        sock.display()
    );
    match result {
        Ok(_) => assert!(parent_exists, "{}", sock.display()),
        Err(TransportError::NoSocketDirectory { dir }) => {
            assert!(!parent_exists && Some(dir.as_path()) == sock.parent());
        }
        Err(_) => {} // too long, exists and is not a socket, ...
    }
});
