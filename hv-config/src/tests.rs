//! Whole-pipeline tests: a full valid description, many problems at once, and a no-panic fuzz run.

use std::path::{Path, PathBuf};

use crate::image::test_elf;
use crate::{ConfigError, Diagnostics, ParseOptions, Severity, SystemConfig, analyze, layout};

/// A temporary directory holding `guest.elf` (a valid image at 0x100000) and, once written,
/// `system.toml`.
pub(crate) struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("guest.elf"),
            test_elf::executable_at(0x10_0000),
        )
        .expect("write guest.elf");
        Self { dir }
    }

    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn toml_path(&self) -> PathBuf {
        self.dir.path().join("system.toml")
    }

    /// Writes `bytes` as `name` in the fixture directory.
    pub(crate) fn write(&self, name: &str, bytes: &[u8]) {
        std::fs::write(self.dir.path().join(name), bytes).expect("write fixture file");
    }

    pub(crate) fn options() -> ParseOptions {
        ParseOptions {
            host_cpus: Some(4),
            check_images: true,
        }
    }

    pub(crate) fn parse(&self, source: &str) -> Result<SystemConfig, ConfigError> {
        SystemConfig::parse_with(source, &self.toml_path(), &Self::options())
    }

    /// The diagnostics of a description that must fail.
    pub(crate) fn errors(&self, source: &str) -> Diagnostics {
        match self.parse(source) {
            Err(ConfigError::Invalid(diags)) => diags,
            Err(other) => panic!("unexpected error: {other}"),
            Ok(config) => panic!("expected errors, got {config:#?}"),
        }
    }

    /// The warnings of a description that must load.
    pub(crate) fn warnings(&self, source: &str) -> Diagnostics {
        match self.parse(source) {
            Ok(config) => config.warnings,
            Err(e) => panic!("expected success, got:\n{e}"),
        }
    }
}

/// Asserts that `diags` holds a diagnostic with exactly `message` at `line:column`, that its
/// rendering shows `file:line:column` and the source line, and returns its index.
#[track_caller]
pub(crate) fn expect(diags: &Diagnostics, message: &str, line: usize, column: usize) -> usize {
    let rendered = diags.render();
    let Some(index) = diags.iter().position(|d| d.message == message) else {
        panic!("no diagnostic {message:?} in:\n{rendered}");
    };
    let d = diags.iter().nth(index).unwrap();
    assert_eq!(
        (d.line, d.column),
        (line, column),
        "position of {message:?} in:\n{rendered}"
    );
    let location = format!("{}:{line}:{column}", diags.file_name());
    assert!(
        rendered.contains(&location),
        "{location} not in:\n{rendered}"
    );
    let source_line = diags.source().lines().nth(line - 1).unwrap_or("");
    assert!(
        rendered.contains(source_line.trim_end()),
        "snippet {source_line:?} not in:\n{rendered}"
    );
    index
}

/// The full example of `CONFIG.md`, with images pointing at the fixture's `guest.elf`.
const FULL_EXAMPLE: &str = r#"
[system]
name = "demo"

[agent]
link = "unix:/tmp/hvdk-demo.sock"
gdb_base_port = 3333
resume_on_detach = true

[[partition]]
name = "control"
image = "guest.elf"
memory = "16M"
vcpus = 2
cpus = [0, 1]

[[partition]]
name = "telemetry"
image = "./guest.elf"
memory = 8388608
autostart = false

[[partition]]
name = "sensor-model"
image = "guest.elf"
memory = "4M"

[[channel]]
name = "telemetry"
endpoints = ["control", "telemetry"]
size = "64K"
vector = 48

[[channel]]
name = "commands"
endpoints = ["telemetry", "control"]
size = "8K"
vector = 49

[[device]]
name = "sensor"
partition = "control"
mmio = { base = 0xD000_0000, size = 0x1000 }
irq = 40
served_by = "sensor-model"
request_vector = 33
timeout_ms = 100
grants = [{ base = 0x200000, size = 0x1000 }]

[schedule]
major_frame_us = 10000

[[schedule.window]]
partition = "control"
start_us = 0
duration_us = 4000

[[schedule.window]]
partition = "telemetry"
start_us = 4000
duration_us = 3000

[[schedule.window]]
partition = "sensor-model"
start_us = 7000
duration_us = 3000
"#;

#[test]
fn full_example_parses() {
    let fx = Fixture::new();
    let sys = fx.parse(FULL_EXAMPLE).unwrap_or_else(|e| panic!("{e}"));
    assert!(sys.warnings.is_empty(), "{}", sys.warnings.render());
    assert_eq!(sys.name, "demo");
    assert_eq!(sys.source_path, fx.toml_path());
    assert_eq!(sys.agent.link.as_deref(), Some("unix:/tmp/hvdk-demo.sock"));
    assert_eq!(sys.agent.gdb_base_port, 3333);
    assert!(sys.agent.resume_on_detach);
    assert_eq!(sys.agent.token_file, None);

    let names: Vec<&str> = sys.partitions.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["control", "telemetry", "sensor-model"]);
    let control = sys.partition("control").unwrap();
    assert_eq!(control.image, fx.dir().join("guest.elf"));
    assert!(control.image.is_absolute());
    assert_eq!((control.memory, control.vcpus), (16 << 20, 2));
    assert_eq!(control.cpus, Some(vec![0, 1]));
    assert!(control.autostart);
    let telemetry = sys.partition("telemetry").unwrap();
    assert_eq!(
        (telemetry.memory, telemetry.vcpus, telemetry.autostart),
        (8 << 20, 1, false)
    );
    assert_eq!(telemetry.cpus, None);
    assert!(telemetry.image.ends_with("guest.elf"));
    assert_eq!(sys.partition_index("sensor-model"), Some(2));
    assert!(sys.partition("nope").is_none());

    let commands = sys.channel("commands").unwrap();
    assert_eq!(
        commands.endpoints,
        ["telemetry".to_owned(), "control".to_owned()]
    );
    assert_eq!((commands.size, commands.vector), (8 << 10, 49));

    let sensor = sys.device("sensor").unwrap();
    assert_eq!(sensor.partition, "control");
    assert_eq!((sensor.mmio_base, sensor.mmio_size), (0xD000_0000, 0x1000));
    assert_eq!(sensor.irq, Some(40));
    assert_eq!(sensor.served_by.as_deref(), Some("sensor-model"));
    assert_eq!((sensor.request_vector, sensor.timeout_ms), (33, 100));
    assert_eq!(
        sensor.grants,
        [crate::MemoryRange {
            base: 0x20_0000,
            size: 0x1000
        }]
    );

    let schedule = sys.schedule.as_ref().unwrap();
    assert_eq!(schedule.major_frame_us, 10_000);
    assert_eq!(schedule.windows.len(), 3);
    assert_eq!(schedule.windows[1].partition, "telemetry");
    assert_eq!(
        (
            schedule.windows[1].start_us,
            schedule.windows[1].duration_us
        ),
        (4000, 3000)
    );

    let control_ipc = sys.ipc_windows("control");
    assert_eq!(
        control_ipc,
        [
            (0, layout::IPC_BASE, 64 << 10),
            (1, layout::IPC_BASE + (64 << 10), 8 << 10)
        ]
    );
    assert_eq!(sys.ipc_windows("telemetry"), control_ipc);
    assert!(sys.ipc_windows("sensor-model").is_empty());
}

#[test]
fn reference_example_is_valid() {
    let doc = include_str!("../CONFIG.md");
    let start = doc.find("```toml\n").expect("CONFIG.md has a toml example") + "```toml\n".len();
    let example = &doc[start..start + doc[start..].find("```").expect("closed block")];
    let fx = Fixture::new();
    let guests = fx.dir().join("target/guests");
    std::fs::create_dir_all(&guests).unwrap();
    std::fs::create_dir_all(fx.dir().join("examples")).unwrap();
    for name in ["control", "telemetry", "sensor-model"] {
        std::fs::write(
            guests.join(format!("{name}.elf")),
            test_elf::executable_at(0x10_0000),
        )
        .unwrap();
    }
    let path = fx.dir().join("examples/demo.toml");
    let sys = SystemConfig::parse_with(example, &path, &Fixture::options())
        .unwrap_or_else(|e| panic!("CONFIG.md example:\n{e}"));
    assert!(sys.warnings.is_empty(), "{}", sys.warnings.render());
    assert_eq!(sys.partitions.len(), 3);
    assert!(
        sys.partitions[0]
            .image
            .ends_with("examples/../target/guests/control.elf")
    );
}

#[test]
fn defaults_apply() {
    let fx = Fixture::new();
    let src = "[[partition]]\nname = \"solo\"\nimage = \"guest.elf\"\n";
    let sys = fx.parse(src).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sys.name, "system", "file stem of system.toml");
    let p = &sys.partitions[0];
    assert_eq!(
        (p.memory, p.vcpus, p.autostart, p.cpus.clone()),
        (16 << 20, 1, true, None)
    );
    assert_eq!(sys.agent, crate::AgentConfig::default());
    assert_eq!(sys.agent.gdb_base_port, 3333);
    assert!(sys.schedule.is_none());
    let src = format!(
        "{src}[[partition]]\nname = \"peer\"\nimage = \"guest.elf\"\n[[channel]]\nname = \"c\"\nendpoints = [\"solo\", \"peer\"]\n"
    );
    let sys = fx.parse(&src).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (sys.channels[0].size, sys.channels[0].vector),
        (64 << 10, 48)
    );
}

#[test]
fn several_problems_are_reported_together() {
    let fx = Fixture::new();
    let src = r#"[[partition]]
name = "control"
image = "guest.elf"
memory = "3M"
vcpus = 0
colour = "blue"

[[partition]]
name = "control"
image = "missing.elf"

[[channel]]
name = "loop"
endpoints = ["control", "contrl"]
vector = 36

[schedule]
major_frame_us = 1000
[[schedule.window]]
partition = "control"
start_us = 500
duration_us = 600
"#;
    let diags = fx.errors(src);
    let messages: Vec<&str> = diags.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "`vcpus` = 0 is out of range",
            "unknown key `colour` in [[partition]]",
            "duplicate partition name `control`",
            "image does not exist",
            "unknown partition `contrl`",
            "`vector` = 36 is reserved for the UART",
            "schedule window ends at 1100 µs, after the major frame",
        ],
        "{}",
        diags.render()
    );
    // "3M" is fine: 3 MiB is a multiple of 4 KiB within 2M..=1G.
    assert_eq!(diags.error_count(), 7);
    let rendered = diags.render();
    for line in [
        "system.toml:5:9",
        "system.toml:6:1",
        "system.toml:9:8",
        "system.toml:14:25",
    ] {
        assert!(rendered.contains(line), "{line} missing from:\n{rendered}");
    }
    let display = ConfigError::Invalid(diags).to_string();
    assert!(display.ends_with("7 errors, 0 warnings"), "{display}");
}

#[test]
fn warnings_do_not_fail_and_are_kept() {
    let fx = Fixture::new();
    let src = "[[partition]]\nname = \"a\"\nimage = \"guest.elf\"\ncpus = [0, 64]\n";
    let warnings = fx.warnings(src);
    assert_eq!(warnings.len(), 1);
    assert!(!warnings.has_errors());
    let w = warnings.iter().next().unwrap();
    assert_eq!(w.severity, Severity::Warning);
    assert!(warnings.render().starts_with("warning: "));
}

#[test]
fn load_reads_files_and_reports_read_and_encoding_errors() {
    let fx = Fixture::new();
    fx.write(
        "system.toml",
        b"[[partition]]\nname = \"a\"\nimage = \"guest.elf\"\n",
    );
    let sys = SystemConfig::load_with(&fx.toml_path(), &Fixture::options()).unwrap();
    assert_eq!(sys.partitions[0].image, fx.dir().join("guest.elf"));

    let missing = fx.dir().join("nope.toml");
    let err = SystemConfig::load(&missing).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(err.to_string().contains("nope.toml"), "{err}");

    fx.write("bad.toml", b"[system]\nname = \"\xff\"\n");
    let Err(ConfigError::Invalid(diags)) = SystemConfig::load(&fx.dir().join("bad.toml")) else {
        panic!("expected an encoding error");
    };
    expect(&diags, "the file is not valid UTF-8", 2, 9);
}

#[test]
fn relative_description_paths_resolve_against_their_directory() {
    let fx = Fixture::new();
    let nested = fx.dir().join("sub");
    std::fs::create_dir(&nested).unwrap();
    let src = "[[partition]]\nname = \"a\"\nimage = \"../guest.elf\"\n";
    let sys = SystemConfig::parse_with(src, &nested.join("x.toml"), &Fixture::options()).unwrap();
    assert!(sys.partitions[0].image.is_absolute());
    assert!(sys.partitions[0].image.exists());
    assert_eq!(sys.name, "x");
}

#[test]
fn analysis_keeps_spans_for_tools() {
    let fx = Fixture::new();
    let analysis = analyze(FULL_EXAMPLE, &fx.toml_path(), &Fixture::options());
    assert!(analysis.config.is_some());
    let raw = analysis.raw.unwrap();
    let endpoint = &raw.channels[0].endpoints.as_ref().unwrap().get_ref()[0];
    assert_eq!(&FULL_EXAMPLE[endpoint.span()], "\"control\"");
    let served_by = raw.devices[0].served_by.as_ref().unwrap();
    assert_eq!(served_by.get_ref(), "sensor-model");
}

/// A real image built by gcc, if the machine has gcc (the hand-built images cover the rest).
#[test]
fn gcc_built_image_is_accepted() {
    let fx = Fixture::new();
    fx.write(
        "g.c",
        b"void _start(void) { for (;;) __asm__ volatile(\"hlt\"); }\n",
    );
    let gcc = |link: &str, out: &str| {
        std::process::Command::new("gcc")
            .args(["-nostdlib", "-static", "-no-pie", link, "-o", out, "g.c"])
            .current_dir(fx.dir())
            .output()
    };
    match gcc("-Wl,-Ttext-segment=0x100000", "g.elf") {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            eprintln!(
                "SKIP gcc_built_image_is_accepted: gcc failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            return;
        }
        Err(e) => {
            eprintln!("SKIP gcc_built_image_is_accepted: gcc not runnable: {e}");
            return;
        }
    }
    let src = "[[partition]]\nname = \"g\"\nimage = \"g.elf\"\n";
    fx.parse(src).unwrap_or_else(|e| panic!("{e}"));
    let src = "[[partition]]\nname = \"g\"\nimage = \"g.elf\"\nmemory = \"2M\"\nvcpus = 16\n";
    let diags = fx.errors(src);
    assert!(
        diags.iter().any(|d| d.message.starts_with("image segment")),
        "{}",
        diags.render()
    );

    // `-Ttext` alone makes ld map the ELF headers one page below the text: below IMAGE_BASE.
    let built = gcc("-Wl,-Ttext=0x100000", "low.elf").expect("gcc ran before");
    assert!(built.status.success());
    let diags = fx.errors("[[partition]]\nname = \"g\"\nimage = \"low.elf\"\n");
    let d = diags
        .iter()
        .find(|d| d.message.contains("at 0xff000.."))
        .expect("header segment");
    assert!(
        d.notes.iter().any(|n| n.contains("-Ttext-segment")),
        "{}",
        diags.render()
    );
}

/// A deterministic xorshift generator, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const TOKENS: &[&str] = &[
    "[",
    "]",
    "[[",
    "]]",
    "=",
    "\"",
    "'",
    "\n",
    "0x",
    "-1",
    "0",
    "36",
    "255",
    "256",
    "99999999999999999999",
    "\"16M\"",
    "\"4K\"",
    "{",
    "}",
    ",",
    "é",
    "日本",
    "\u{0}",
    "#",
    ".",
    "inf",
    "nan",
    "1e999",
    "true",
    "1979-05-27",
    "partition",
    "name",
    "channel",
    "device",
    "[schedule]",
    "[[schedule.window]]",
    "[[partition]]",
    "[[device]]",
    "[[channel]]",
    "[agent]",
    "mmio = { base = 0x0, size = 0x0 }",
    "grants = [{ base = 0, size = 99999999999999 }]",
    "endpoints = [\"control\", \"control\"]",
    "image = \"/dev/zero\"",
    "image = \"/\"",
    "link = \"tcp:[::1]:0\"",
    "cpus = []",
    "\"\"\"",
    "'''",
    "\\u00e9",
    " ",
    "\t",
    "\r\n",
];

/// Values and keys for mutations that keep the TOML well-formed, to reach the deeper checks.
const VALUES: &[&str] = &[
    "0",
    "1",
    "2",
    "16",
    "17",
    "36",
    "48",
    "255",
    "256",
    "-1",
    "4000",
    "0xD000_0000",
    "0xFFFF_F000",
    "18446744073709551615",
    "1.5",
    "true",
    "false",
    "\"16M\"",
    "\"2M\"",
    "\"1G\"",
    "\"4K\"",
    "\"x\"",
    "\"\"",
    "\"control\"",
    "\"telemetry\"",
    "\"sensor-model\"",
    "\"guest.elf\"",
    "\"/dev/null\"",
    "\"tcp:127.0.0.1:0\"",
    "\"pty\"",
    "[]",
    "[0, 99]",
    "[\"control\", \"control\"]",
    "[\"control\", \"telemetry\", \"x\"]",
    "{ base = 0x8000_0000, size = 0x1000 }",
    "{ base = 0x1000 }",
    "[{ base = 0, size = 0 }]",
    "[{ base = 0xFFF000, size = 0x2000 }]",
];

fn mutate_lines(rng: &mut Rng, input: &str) -> String {
    let keys: Vec<&str> = [
        crate::raw::PARTITION_KEYS,
        crate::raw::CHANNEL_KEYS,
        crate::raw::DEVICE_KEYS,
        crate::raw::WINDOW_KEYS,
        crate::raw::AGENT_KEYS,
    ]
    .concat();
    let mut lines: Vec<String> = input.lines().map(str::to_owned).collect();
    for _ in 0..=rng.below(3) {
        let at = rng.below(lines.len());
        match rng.below(4) {
            0 => {
                lines.remove(at);
            }
            1 | 2 => {
                if let Some((key, _)) = lines[at].split_once(" = ") {
                    lines[at] = format!("{key} = {}", VALUES[rng.below(VALUES.len())]);
                }
            }
            _ => {
                if let Some((_, value)) = lines[at].split_once(" = ") {
                    lines[at] = format!("{} = {value}", keys[rng.below(keys.len())]);
                }
            }
        }
    }
    lines.join("\n")
}

fn mutate(rng: &mut Rng, input: &str) -> String {
    let mut chars: Vec<char> = input.chars().collect();
    for _ in 0..=rng.below(5) {
        let at = rng.below(chars.len() + 1);
        match rng.below(5) {
            0 => {
                let end = (at + rng.below(40)).min(chars.len());
                chars.drain(at..end);
            }
            1 | 2 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                chars.splice(at..at, token.chars());
            }
            3 => {
                if at < chars.len() {
                    chars[at] = char::from(32 + rng.below(95) as u8);
                }
            }
            _ => {
                let end = (at + rng.below(200)).min(chars.len());
                let copy: Vec<char> = chars[at..end].to_vec();
                let to = rng.below(chars.len() + 1);
                chars.splice(to..to, copy);
            }
        }
    }
    chars.into_iter().collect()
}

#[test]
fn random_and_mutated_inputs_never_panic() {
    let fx = Fixture::new();
    let path = fx.toml_path();
    let options = Fixture::options();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut failures = 0;
    let mut outcomes = [0usize; 3];
    for round in 0..3000 {
        let input = match round % 10 {
            9 => (0..rng.below(30))
                .map(|_| TOKENS[rng.below(TOKENS.len())])
                .collect(),
            0..=4 => mutate_lines(&mut rng, FULL_EXAMPLE),
            _ => mutate(&mut rng, FULL_EXAMPLE),
        };
        let outcome = std::panic::catch_unwind(|| {
            let (_, diags) = crate::parse_document(&input);
            let _ = diags.render();
            match SystemConfig::parse_with(&input, &path, &options) {
                Ok(sys) => {
                    for p in &sys.partitions {
                        let _ = sys.ipc_windows(&p.name);
                    }
                    let _ = sys.warnings.render();
                    0
                }
                Err(ConfigError::Invalid(d)) => {
                    let _ = (d.render_colored(), d.to_string());
                    if d.iter().all(|x| x.message.starts_with("TOML syntax")) {
                        1
                    } else {
                        2
                    }
                }
                Err(e) => panic!("unexpected {e}"),
            }
        });
        match outcome {
            Ok(kind) => outcomes[kind] += 1,
            Err(_) => {
                failures += 1;
                eprintln!("panicked on input #{round}: {input:?}");
            }
        }
    }
    assert_eq!(failures, 0);
    // The mutations must reach every layer: valid, syntax errors only, deeper errors.
    eprintln!("valid / syntax errors / other errors: {outcomes:?}");
    assert!(outcomes.iter().all(|&n| n >= 100), "{outcomes:?}");
}
