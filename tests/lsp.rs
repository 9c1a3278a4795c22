//! `hv lsp` end to end: the real binary over stdio, driven by a JSON-RPC LSP client written here
//! (Content-Length framing), on `examples/demo.toml` and broken variants of it. No KVM needed.

use std::path::PathBuf;

use serde_json::{Value, json};

#[path = "lsp/client.rs"]
mod client;

use client::{Lsp, repo, uri};

fn demo_path() -> PathBuf {
    repo().join("examples/demo.toml")
}

fn demo() -> String {
    std::fs::read_to_string(demo_path()).unwrap()
}

/// The 0-based (line, UTF-16 column) of byte `offset` of `text`.
fn position(text: &str, offset: usize) -> (u64, u64) {
    let before = &text[..offset];
    let line = before.matches('\n').count();
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    (line as u64, before[start..].encode_utf16().count() as u64)
}

fn lsp_position(text: &str, offset: usize) -> Value {
    let (line, character) = position(text, offset);
    json!({ "line": line, "character": character })
}

fn lsp_range(text: &str, start: usize, end: usize) -> Value {
    json!({ "start": lsp_position(text, start), "end": lsp_position(text, end) })
}

/// Byte offset of the `nth` (0-based) occurrence of `needle`, plus `skip`.
fn find(text: &str, needle: &str, nth: usize, skip: usize) -> usize {
    text.match_indices(needle)
        .nth(nth)
        .unwrap_or_else(|| panic!("no {nth}th {needle:?}"))
        .0
        + skip
}

fn text_position(uri: &str, text: &str, offset: usize) -> Value {
    json!({ "textDocument": { "uri": uri }, "position": lsp_position(text, offset) })
}

/// The demo with three mistakes: a misspelt key, a misspelt endpoint, and a second device on
/// the sensor's MMIO range.
fn broken_demo() -> String {
    demo()
        .replacen(
            "memory = \"16M\"\nvcpus = 1\n\n[[partition]]\nname = \"worker\"",
            "memory = \"16M\"\nvcpu = 1\n\n[[partition]]\nname = \"worker\"",
            1,
        )
        .replacen(
            "endpoints = [\"control\", \"telemetry\"]",
            "endpoints = [\"control\", \"telemetri\"]",
            1,
        )
        + "\n[[device]]\nname = \"shadow\"\npartition = \"control\"\nmmio = { base = 0xD000_0000, size = 0x1000 }\nserved_by = \"sensor-model\"\n"
}

#[test]
fn demo_is_clean_and_a_broken_demo_gets_hv_runs_diagnostics_at_their_ranges() {
    let mut lsp = Lsp::start(json!({ "debounceMs": 0 }));
    let uri = uri(&demo_path());
    let text = demo();
    lsp.open(&uri, &text);
    assert_eq!(
        lsp.diagnostics(&uri, 1),
        Vec::<Value>::new(),
        "the demo is valid"
    );

    let broken = broken_demo();
    lsp.change(&uri, 2, &broken);
    let diagnostics = lsp.diagnostics(&uri, 2);
    let summary: Vec<(String, Value, i64)> = diagnostics
        .iter()
        .map(|d| {
            (
                d["message"].as_str().unwrap().to_owned(),
                d["range"].clone(),
                d["severity"].as_i64().unwrap(),
            )
        })
        .collect();
    let vcpu = find(&broken, "vcpu = 1", 0, 0);
    let telemetri = find(&broken, "\"telemetri\"", 0, 0);
    let shadow_mmio = find(&broken, "{ base = 0xD000_0000", 1, 0);
    let sensor_mmio = find(&broken, "{ base = 0xD000_0000", 0, 0);
    let mmio_len = "{ base = 0xD000_0000, size = 0x1000 }".len();
    assert_eq!(
        summary,
        [
            (
                "unknown key `vcpu` in [[partition]]\ndid you mean `vcpus`?".to_owned(),
                lsp_range(&broken, vcpu, vcpu + 4),
                1
            ),
            (
                "unknown partition `telemetri`\nendpoint names no partition\ndid you mean `telemetry`?".to_owned(),
                lsp_range(&broken, telemetri, telemetri + 11),
                1
            ),
            (
                "MMIO range of device `shadow` overlaps device `sensor`\n0xd0000000..0xd0001000\ndevices of one partition must not share MMIO addresses".to_owned(),
                lsp_range(&broken, shadow_mmio, shadow_mmio + mmio_len),
                1
            ),
        ]
    );
    let related = &diagnostics[2]["relatedInformation"][0];
    assert_eq!(related["message"], "`sensor` is mapped here");
    assert_eq!(related["location"]["uri"], uri.as_str());
    assert_eq!(
        related["location"]["range"],
        lsp_range(&broken, sensor_mmio, sensor_mmio + mmio_len)
    );
    assert!(diagnostics.iter().all(|d| d["source"] == "hv"));

    // Exactly hv-config's checks: the same messages (with their notes) at the same places.
    let analysis = hv_config::analyze(&broken, &demo_path(), &hv_config::ParseOptions::default());
    let expected: Vec<(String, Value)> = analysis
        .diagnostics
        .iter()
        .map(|d| {
            // The message, the label unless the message says it, the notes.
            let mut message = d.message.clone();
            if !d.message.to_lowercase().contains(&d.label.to_lowercase()) {
                message = format!("{message}\n{}", d.label);
            }
            for note in &d.notes {
                message = format!("{message}\n{note}");
            }
            (message, lsp_range(&broken, d.span.start, d.span.end))
        })
        .collect();
    let got: Vec<(String, Value)> = summary
        .iter()
        .map(|(m, r, _)| (m.clone(), r.clone()))
        .collect();
    assert_eq!(got, expected);

    // The "did you mean" is a quick fix; applying both fixes leaves only the overlap.
    let mut fixed = broken.clone();
    for (diagnostic, replacement) in [
        (&diagnostics[1], "\"telemetry\""),
        (&diagnostics[0], "vcpus"),
    ] {
        let actions = lsp.request(
            "textDocument/codeAction",
            json!({
                "textDocument": { "uri": uri },
                "range": diagnostic["range"],
                "context": { "diagnostics": [diagnostic] },
            }),
        );
        let actions = actions.as_array().expect("quick fixes");
        assert_eq!(actions.len(), 1, "{actions:?}");
        assert_eq!(actions[0]["kind"], "quickfix");
        let edit = &actions[0]["edit"]["changes"][uri.as_str()][0];
        assert_eq!(edit["newText"], replacement);
        assert_eq!(edit["range"], diagnostic["range"]);
        let start = &edit["range"]["start"];
        let line_start = fixed
            .split_inclusive('\n')
            .take(start["line"].as_u64().unwrap() as usize)
            .map(str::len)
            .sum::<usize>();
        let from = line_start + start["character"].as_u64().unwrap() as usize;
        let end = &edit["range"]["end"];
        let to = line_start + end["character"].as_u64().unwrap() as usize;
        fixed.replace_range(from..to, replacement);
    }
    lsp.change(&uri, 3, &fixed);
    let left: Vec<Value> = lsp
        .diagnostics(&uri, 3)
        .iter()
        .map(|d| d["message"].clone())
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(
        left[0]
            .as_str()
            .unwrap()
            .starts_with("MMIO range of device `shadow`")
    );

    // Syntax errors are reported alone, at their place.
    lsp.change(&uri, 4, "[system\nname = \"x\"\n");
    let syntax = lsp.diagnostics(&uri, 4);
    assert!(!syntax.is_empty());
    assert!(
        syntax
            .iter()
            .all(|d| d["message"].as_str().unwrap().starts_with("TOML syntax:"))
    );
    assert!(lsp.stop().success());
}

#[test]
fn cargo_toml_and_other_toml_files_are_left_alone() {
    let mut lsp = Lsp::start(json!({ "debounceMs": 0 }));
    let cargo = uri(&repo().join("Cargo.toml"));
    lsp.open(
        &cargo,
        &std::fs::read_to_string(repo().join("Cargo.toml")).unwrap(),
    );
    let other = uri(&repo().join("notes/other.toml"));
    lsp.open(&other, "[package]\nname = 1\n");
    // An unsaved file with a `[system]` table is a description.
    let untitled = "untitled:Untitled-1";
    lsp.open(untitled, "[system]\nname = \"x\"\nbogus = 1\n");
    let diagnostics = lsp.diagnostics(untitled, 1);
    assert!(diagnostics.iter().any(|d| {
        d["message"]
            .as_str()
            .unwrap()
            .starts_with("unknown key `bogus` in [system]")
    }));
    for uri in [&cargo, &other] {
        let at =
            json!({ "textDocument": { "uri": uri }, "position": { "line": 0, "character": 1 } });
        assert_eq!(lsp.request("textDocument/hover", at.clone()), Value::Null);
        assert_eq!(lsp.request("textDocument/completion", at), Value::Null);
        assert_eq!(
            lsp.request(
                "textDocument/documentSymbol",
                json!({ "textDocument": { "uri": uri } })
            ),
            Value::Null
        );
    }
    // A request after the checks were scheduled: had Cargo.toml been checked, its diagnostics
    // would have been published before this answer.
    lsp.request(
        "textDocument/documentSymbol",
        json!({ "textDocument": { "uri": untitled } }),
    );
    let published: Vec<&Value> = lsp
        .notifications
        .iter()
        .filter(|n| n["params"]["uri"] == cargo.as_str() || n["params"]["uri"] == other.as_str())
        .collect();
    assert!(published.is_empty(), "{published:?}");
    // The setting turns a file into a description.
    lsp.notify(
        "workspace/didChangeConfiguration",
        json!({ "settings": { "hvdk": { "systemFiles": ["notes/*.toml"] } } }),
    );
    let diagnostics = lsp.diagnostics(&other, 1);
    assert!(
        diagnostics.iter().any(|d| d["message"]
            .as_str()
            .unwrap()
            .starts_with("unknown key `package`")),
        "{diagnostics:?}"
    );
    assert!(lsp.stop().success());
}

#[test]
fn completion_hover_definition_references_rename_and_symbols_on_the_demo() {
    let mut lsp = Lsp::start(json!({ "debounceMs": 0 }));
    let uri = uri(&demo_path());
    let text = demo();
    lsp.open(&uri, &text);
    lsp.diagnostics(&uri, 1);

    // Definition: from a reference to the partition's name.
    let endpoint = find(&text, "\"telemetry\"]", 0, 1);
    let definition = lsp.request(
        "textDocument/definition",
        text_position(&uri, &text, endpoint + 2),
    );
    let def = find(&text, "name = \"telemetry\"", 0, 8);
    assert_eq!(
        definition,
        json!([{ "uri": uri, "range": lsp_range(&text, def, def + 9) }])
    );

    // References of `control`: its name, the channel endpoint, the device's client.
    let references = lsp.request(
        "textDocument/references",
        json!({
            "textDocument": { "uri": uri },
            "position": lsp_position(&text, find(&text, "partition = \"control\"", 0, 14)),
            "context": { "includeDeclaration": true },
        }),
    );
    let lines: Vec<u64> = references
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["range"]["start"]["line"].as_u64().unwrap())
        .collect();
    let line_of = |needle: &str| position(&text, find(&text, needle, 0, 0)).0;
    assert_eq!(
        lines,
        [
            line_of("name = \"control\""),
            line_of("endpoints = [\"control\""),
            line_of("partition = \"control\"")
        ]
    );

    // Rename `sensor-model` from its `served_by` reference.
    let served_by = find(&text, "served_by = \"sensor-model\"", 0, 14);
    let prepared = lsp.request(
        "textDocument/prepareRename",
        text_position(&uri, &text, served_by),
    );
    assert_eq!(prepared["placeholder"], "sensor-model");
    let mut params = text_position(&uri, &text, served_by);
    params["newName"] = json!("model");
    let edit = lsp.request("textDocument/rename", params.clone());
    let edits = edit["changes"][uri.as_str()].as_array().unwrap();
    assert_eq!(edits.len(), 2);
    assert!(edits.iter().all(|e| e["newText"] == "model"));
    params["newName"] = json!("Bad Name");
    let refused = lsp.request_raw("textDocument/rename", params);
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a valid partition name")
    );

    // Outline.
    let symbols = lsp.request(
        "textDocument/documentSymbol",
        json!({ "textDocument": { "uri": uri } }),
    );
    let names: Vec<&str> = symbols
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "control",
            "telemetry",
            "worker",
            "sensor-model",
            "telemetry",
            "sensor"
        ]
    );
    assert_eq!(symbols[2]["detail"], "32 MiB, 2 vCPUs");

    // Hover on a key: CONFIG.md's row.
    let hover = lsp.request(
        "textDocument/hover",
        text_position(&uri, &text, find(&text, "memory", 0, 2)),
    );
    let markdown = hover["contents"]["value"].as_str().unwrap();
    let row = hv_config::docs::key("partition", "memory").unwrap();
    assert!(markdown.contains(row.meaning), "{markdown}");
    // On a memory value: the partition's layout.
    let hover = lsp.request(
        "textDocument/hover",
        text_position(&uri, &text, find(&text, "\"32M\"", 0, 2)),
    );
    let markdown = hover["contents"]["value"].as_str().unwrap();
    for expected in ["`worker`", "0x100000", "vCPU stacks", "0x2000000"] {
        assert!(markdown.contains(expected), "{expected} in {markdown}");
    }
    // On the device's MMIO: the client's layout, with the device and the IPC window in it.
    let hover = lsp.request(
        "textDocument/hover",
        text_position(&uri, &text, find(&text, "base = 0xD000_0000", 0, 10)),
    );
    let markdown = hover["contents"]["value"].as_str().unwrap();
    for expected in [
        "`control`",
        "device `sensor`",
        "0xd0000000",
        "channel `telemetry`",
        "0x80000000",
    ] {
        assert!(markdown.contains(expected), "{expected} in {markdown}");
    }

    // Completion: keys of the table at the cursor, and partition names for `served_by`.
    let mut edited = text.replacen("memory = \"32M\"\n", "memory = \"32M\"\n\n", 1);
    let blank = find(
        &edited,
        "memory = \"32M\"\n\n",
        0,
        "memory = \"32M\"\n".len(),
    );
    lsp.change(&uri, 2, &edited);
    let items = lsp.request(
        "textDocument/completion",
        text_position(&uri, &edited, blank),
    );
    assert_eq!(
        labels(&items),
        ["cpus", "autostart"],
        "the keys `worker` has not written yet"
    );

    edited = text.replacen("served_by = \"sensor-model\"", "served_by = \"", 1);
    let cursor = find(&edited, "served_by = \"", 0, 13);
    lsp.change(&uri, 3, &edited);
    let items = lsp.request(
        "textDocument/completion",
        text_position(&uri, &edited, cursor),
    );
    assert_eq!(
        labels(&items),
        ["control", "telemetry", "worker", "sensor-model"]
    );

    edited = format!("{text}\n[");
    lsp.change(&uri, 4, &edited);
    let items = lsp.request(
        "textDocument/completion",
        text_position(&uri, &edited, edited.len()),
    );
    let labels = labels(&items);
    assert!(
        labels.contains(&"[[partition]]".to_owned())
            && labels.contains(&"[[schedule.window]]".to_owned()),
        "{labels:?}"
    );
    assert!(
        !labels.contains(&"[system]".to_owned()),
        "the demo has [system] already: {labels:?}"
    );

    assert!(lsp.stop().success());
}

fn labels(items: &Value) -> Vec<String> {
    let list = items.get("items").unwrap_or(items);
    list.as_array()
        .unwrap_or_else(|| panic!("completion items: {items}"))
        .iter()
        .map(|i| i["label"].as_str().unwrap().to_owned())
        .collect()
}

/// A small deterministic generator (xorshift), so a failure replays.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn text(&mut self, len: usize, pieces: &[&str]) -> String {
        let mut out = String::new();
        while out.len() < len {
            match self.below(4) {
                0 => out.push_str(pieces[self.below(pieces.len() as u64) as usize]),
                1 => out.push(char::from_u32(self.below(0x80) as u32).unwrap()),
                2 => out.push(char::from_u32(self.below(0x2_0000) as u32).unwrap_or('\u{fffd}')),
                _ => out.push_str(
                    ["\n", " ", "\"", "[", "]", "=", "{", "}", ",", "'''", "\\"]
                        [self.below(11) as usize],
                ),
            }
        }
        out
    }
}

#[test]
fn random_edits_binary_and_huge_text_leave_the_server_answering() {
    let mut lsp = Lsp::start(json!({ "debounceMs": 5 }));
    let uri = uri(&repo().join("examples/lsp-fuzz.toml"));
    let demo = demo();
    let pieces: Vec<&str> = demo.split_inclusive(['\n', ' ', '"']).collect();
    let mut random = Random(0x9e37_79b9_7f4a_7c15);
    lsp.open(&uri, &demo);
    let mut version = 1;
    let mut lines = demo.lines().count() as u64;
    for round in 0..300 {
        version += 1;
        let change = if round % 3 == 0 {
            let len = random.below(400) as usize;
            json!({ "text": random.text(len, &pieces) })
        } else {
            // A ranged edit, sometimes past the end of the text or backwards.
            let (a, b) = (random.below(lines + 3), random.below(lines + 3));
            let len = random.below(40) as usize;
            json!({
                "range": {
                    "start": { "line": a, "character": random.below(90) },
                    "end": { "line": b, "character": random.below(90) },
                },
                "text": random.text(len, &pieces),
            })
        };
        if let Some(text) = change.get("text").and_then(Value::as_str) {
            lines = lines.max(text.lines().count() as u64);
        }
        lsp.notify(
            "textDocument/didChange",
            json!({ "textDocument": { "uri": uri, "version": version }, "contentChanges": [change] }),
        );
        if round % 25 == 0 {
            let at = json!({ "textDocument": { "uri": uri }, "position": { "line": random.below(lines), "character": random.below(40) } });
            for method in [
                "textDocument/hover",
                "textDocument/completion",
                "textDocument/definition",
                "textDocument/documentSymbol",
            ] {
                let response = lsp.request_raw(method, at.clone());
                assert!(response.get("error").is_none(), "{method}: {response}");
            }
        }
    }
    // Binary-looking text, then a huge one (several MB of repeated, half-broken tables).
    version += 1;
    lsp.change(
        &uri,
        version,
        "\u{0}\u{1}\u{7f}ELF\u{2}\u{1}\u{1}\u{fffd}\u{fffd}[[\u{0}]]==\"\n\u{10ffff}",
    );
    assert!(!lsp.diagnostics(&uri, version).is_empty());
    version += 1;
    let huge = format!(
        "[system]\n{}",
        "[[partition]]\nname = \"p\"\nimage = 'x'\nmemroy = 1\n[[channel]\n".repeat(60_000)
    );
    lsp.change(&uri, version, &huge);
    let diagnostics = lsp.diagnostics(&uri, version);
    assert!(!diagnostics.is_empty() && diagnostics.len() <= 1000);
    let at =
        json!({ "textDocument": { "uri": uri }, "position": { "line": 200_000, "character": 3 } });
    assert!(
        lsp.request_raw("textDocument/hover", at)
            .get("error")
            .is_none()
    );

    // Still checking: back to the demo, the diagnostics of this very version come.
    version += 1;
    lsp.change(&uri, version, &demo.replacen("vcpus = 2", "vcpus = 99", 1));
    let diagnostics = lsp.diagnostics(&uri, version);
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    assert!(
        diagnostics[0]["message"]
            .as_str()
            .unwrap()
            .contains("vcpus")
    );

    let symbols = lsp.request(
        "textDocument/documentSymbol",
        json!({ "textDocument": { "uri": uri } }),
    );
    assert!(symbols.is_array());
    assert!(lsp.stop().success());
}

#[test]
fn shutdown_is_answered_while_a_huge_text_is_checked() {
    let mut lsp = Lsp::start(json!({ "debounceMs": 0 }));
    let uri = uri(&repo().join("examples/lsp-huge.toml"));
    let huge = "[[partition]]\nname = \"p\"\nimage = 'x'\nmemroy = 1\n".repeat(100_000);
    lsp.open(&uri, &huge);
    // No waiting for the check: shutdown and exit must end the server anyway.
    assert!(lsp.stop().success());
}

#[test]
fn hv_lsp_accepts_the_stdio_flag_some_clients_add() {
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_hv"))
        .args(["lsp", "--stdio"])
        .stdin(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "EOF on stdin ends the server: {status}");
}

#[test]
fn a_guest_image_built_after_opening_is_checked_again() {
    let mut lsp = Lsp::start(json!({ "debounceMs": 0 }));
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("guest.elf");
    let path = dir.path().join("sys.hv.toml");
    let doc = uri(&path);
    lsp.open(
        &doc,
        "[[partition]]\nname = \"guest\"\nimage = \"guest.elf\"\n",
    );
    let missing = lsp.diagnostics(&doc, 1);
    assert_eq!(missing.len(), 1, "{missing:?}");
    assert!(
        missing[0]["message"]
            .as_str()
            .unwrap()
            .contains("guest.elf"),
        "{missing:?}"
    );
    // The server asked to be told about *.elf files.
    let registration = lsp.wait_for("client/registerCapability");
    assert_eq!(
        registration["params"]["registrations"][0]["registerOptions"]["watchers"][0]["globPattern"],
        "**/*.elf"
    );
    std::fs::copy(repo().join("target/guests/control.elf"), &image).unwrap();
    lsp.notify(
        "workspace/didChangeWatchedFiles",
        json!({ "changes": [{ "uri": uri(&image), "type": 1 }] }),
    );
    assert_eq!(lsp.diagnostics(&doc, 1), Vec::<Value>::new());
    assert!(lsp.stop().success());
}
