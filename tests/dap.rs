//! End-to-end tests of `hv dap`: the real `hv` binary over stdio, driven by a DAP client written
//! in this test (Content-Length framed JSON, as VS Code speaks it), with real gdb and real guests
//! of the demo system.

mod common;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use common::hv_run::HvRun;
use common::{kvm_lock, kvm_or_skip, wait_until};
use hv_link::{LinkClient, PartitionInfo, VcpuState};
use serde_json::{Value, json};

/// Deadline for one answer or event; generous because guests run emulated on slow hosts. A
/// test that hits it fails instead of hanging; no assertion is about how long things take.
const PATIENCE: Duration = Duration::from_secs(300);

fn demo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo.toml")
}

/// A DAP client talking to `hv dap` over its stdin/stdout.
struct Dap {
    child: Child,
    stdin: ChildStdin,
    rx: Receiver<Value>,
    seq: i64,
    /// Events received and not yet taken by `wait_event`.
    events: VecDeque<Value>,
    /// Every `output` event's text, in order.
    output: Vec<String>,
}

impl Dap {
    fn start() -> Dap {
        Self::start_with(|_| {})
    }

    /// Starts `hv dap` with its command adjusted by `configure` (environment, arguments).
    fn start_with(configure: impl FnOnce(&mut Command)) -> Dap {
        let mut command = Command::new(env!("CARGO_BIN_EXE_hv"));
        command.arg("dap");
        configure(&mut command);
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start hv dap");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            loop {
                let mut length = None;
                loop {
                    let mut line = String::new();
                    if stdout.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let line = line.trim_end();
                    if line.is_empty() {
                        break;
                    }
                    if let Some(v) = line.strip_prefix("Content-Length:") {
                        length = v.trim().parse::<usize>().ok();
                    }
                }
                let mut body = vec![0u8; length.expect("Content-Length")];
                if stdout.read_exact(&mut body).is_err() {
                    return;
                }
                let message: Value = serde_json::from_slice(&body).expect("adapter sent JSON");
                if tx.send(message).is_err() {
                    return;
                }
            }
        });
        Dap {
            child,
            stdin,
            rx,
            seq: 1,
            events: VecDeque::new(),
            output: Vec::new(),
        }
    }

    fn send(&mut self, command: &str, arguments: Value) -> i64 {
        let seq = self.seq;
        self.seq += 1;
        let body = serde_json::to_vec(&json!({
            "seq": seq, "type": "request", "command": command, "arguments": arguments
        }))
        .unwrap();
        write!(self.stdin, "Content-Length: {}\r\n\r\n", body.len()).unwrap();
        self.stdin.write_all(&body).unwrap();
        self.stdin.flush().unwrap();
        seq
    }

    fn next_message(&mut self, what: &str) -> Value {
        match self.rx.recv_timeout(PATIENCE) {
            Ok(m) => {
                if m["type"] == "event" {
                    if m["event"] == "output" {
                        self.output
                            .push(m["body"]["output"].as_str().unwrap_or("").to_owned());
                    }
                    self.events.push_back(m.clone());
                }
                m
            }
            Err(RecvTimeoutError::Timeout) => panic!(
                "no {what} from hv dap after {PATIENCE:?}; output so far:\n{}",
                self.output.join("")
            ),
            Err(RecvTimeoutError::Disconnected) => panic!(
                "hv dap closed its stdout while waiting for {what}; output:\n{}",
                self.output.join("")
            ),
        }
    }

    /// Sends a request and returns its response (success or not).
    fn request(&mut self, command: &str, arguments: Value) -> Value {
        let seq = self.send(command, arguments);
        loop {
            let m = self.next_message(command);
            if m["type"] == "response" && m["request_seq"] == seq {
                return m;
            }
        }
    }

    /// Sends a request that must succeed; returns its body.
    fn ok(&mut self, command: &str, arguments: Value) -> Value {
        let r = self.request(command, arguments);
        assert_eq!(r["success"], true, "{command} failed: {r}");
        r["body"].clone()
    }

    /// Sends a request that must fail; returns its message.
    fn fails(&mut self, command: &str, arguments: Value) -> String {
        let r = self.request(command, arguments);
        assert_eq!(r["success"], false, "{command} should fail: {r}");
        r["message"].as_str().unwrap_or("").to_owned()
    }

    /// The next event called `name` (earlier events of other names stay queued).
    fn wait_event(&mut self, name: &str) -> Value {
        loop {
            if let Some(i) = self.events.iter().position(|e| e["event"] == name) {
                return self.events.remove(i).unwrap()["body"].clone();
            }
            self.next_message(name);
        }
    }

    /// The next event with one of `names`: (name, body).
    fn wait_any(&mut self, names: &[&str]) -> (String, Value) {
        loop {
            if let Some(i) = self
                .events
                .iter()
                .position(|e| names.iter().any(|n| e["event"] == *n))
            {
                let e = self.events.remove(i).unwrap();
                return (e["event"].as_str().unwrap().to_owned(), e["body"].clone());
            }
            self.next_message(names[0]);
        }
    }

    /// Reads whatever arrived so far without waiting.
    fn drain(&mut self) {
        while let Ok(m) = self.rx.try_recv() {
            if m["type"] == "event" {
                if m["event"] == "output" {
                    self.output
                        .push(m["body"]["output"].as_str().unwrap_or("").to_owned());
                }
                self.events.push_back(m);
            }
        }
    }

    fn initialize(&mut self) -> Value {
        self.ok(
            "initialize",
            json!({"adapterID": "hv", "clientID": "hv-test", "linesStartAt1": true,
                   "columnsStartAt1": true, "pathFormat": "path"}),
        )
    }

    /// Waits for the adapter to exit.
    fn wait_exit(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("hv dap did not exit");
    }
}

impl Drop for Dap {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn partitions(client: &LinkClient) -> Vec<PartitionInfo> {
    client.partitions().expect("partitions.list")
}

fn vcpu_state(parts: &[PartitionInfo], partition: &str, vcpu: usize) -> VcpuState {
    parts
        .iter()
        .find(|p| p.name == partition)
        .map(|p| p.vcpus[vcpu].state)
        .expect("partition in the list")
}

/// Named variables of a `variables` response.
fn vars(body: &Value) -> Vec<Value> {
    body["variables"].as_array().cloned().unwrap_or_default()
}

fn var<'a>(list: &'a [Value], name: &str) -> &'a Value {
    list.iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no variable {name} in {list:?}"))
}

fn scope(scopes: &Value, name: &str) -> i64 {
    scopes["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no scope {name}: {scopes}"))["variablesReference"]
        .as_i64()
        .unwrap()
}

#[test]
fn device_model_breakpoint_step_inspect_and_disconnect() {
    if !kvm_or_skip("device_model_breakpoint_step_inspect_and_disconnect") {
        return;
    }
    let _kvm = kvm_lock();
    let hv = HvRun::without_bridge(&demo());
    hv.wait_count("[sensor-model] sensor-model: sample #", 1);
    let link = LinkClient::connect(hv.link(), "dap-test").expect("test's link client");

    let mut dap = Dap::start();
    let caps = dap.initialize();
    for cap in [
        "supportsConfigurationDoneRequest",
        "supportsFunctionBreakpoints",
        "supportsDataBreakpoints",
        "supportsDisassembleRequest",
        "supportsReadMemoryRequest",
        "supportsSteppingGranularity",
    ] {
        assert_eq!(caps[cap], true, "{cap}: {caps}");
    }
    dap.ok(
        "attach",
        json!({"type": "hv", "request": "attach", "partition": "sensor-model", "link": hv.link().to_string()}),
    );
    dap.wait_event("initialized");
    let bps = dap.ok(
        "setFunctionBreakpoints",
        json!({"breakpoints": [{"name": "sensor_write_ctrl"}]}),
    );
    let bp = &bps["breakpoints"][0];
    assert_eq!(bp["verified"], true, "{bps}");
    let bp_line = bp["line"].as_i64().expect("breakpoint line");
    dap.ok("configurationDone", json!({}));

    // control writes CTRL once a second: the model stops in its handler.
    let stopped = dap.wait_event("stopped");
    assert_eq!(stopped["reason"], "function breakpoint", "{stopped}");
    let description = stopped["description"].as_str().unwrap_or("");
    assert!(
        description.contains("control vCPU 0 waits on device sensor"),
        "{stopped}"
    );
    let thread = stopped["threadId"].as_i64().unwrap();
    let threads = dap.ok("threads", json!({}));
    assert_eq!(
        threads["threads"][0]["name"], "sensor-model vCPU 0",
        "{threads}"
    );

    // While the model is stopped: control waits on the device, the others run on (worker
    // prints every second; telemetry only prints what control sends, so it is quiet now).
    let parts = partitions(&link);
    assert_eq!(
        vcpu_state(&parts, "control", 0),
        VcpuState::BlockedOnDevice,
        "{parts:?}"
    );
    assert_eq!(
        vcpu_state(&parts, "sensor-model", 0),
        VcpuState::StoppedInDebugger,
        "{parts:?}"
    );
    let worker = hv.count("[worker]");

    let stack = dap.ok("stackTrace", json!({"threadId": thread}));
    let top = &stack["stackFrames"][0];
    let path = top["source"]["path"].as_str().unwrap_or("");
    assert!(
        Path::new(path).is_absolute() && path.ends_with("guests/demo/sensor_model.c"),
        "{top}"
    );
    assert_eq!(top["name"], "sensor_write_ctrl", "{top}");
    assert_eq!(top["line"].as_i64(), Some(bp_line), "{top}");
    let frame = top["id"].as_i64().unwrap();

    let offset = dap.ok(
        "evaluate",
        json!({"expression": "req->offset", "frameId": frame, "context": "watch"}),
    );
    assert_eq!(offset["result"], "12", "{offset}");

    let scopes = dap.ok("scopes", json!({"frameId": frame}));
    let device = vars(&dap.ok(
        "variables",
        json!({"variablesReference": scope(&scopes, "Device request")}),
    ));
    assert_eq!(var(&device, "client")["value"], "control vCPU 0");
    assert_eq!(var(&device, "device")["value"], "sensor");
    assert!(
        var(&device, "access")["value"]
            .as_str()
            .unwrap()
            .contains("write of 4 bytes at offset 0xc"),
        "{device:?}"
    );
    let locals = vars(&dap.ok(
        "variables",
        json!({"variablesReference": scope(&scopes, "Locals")}),
    ));
    let req = var(&locals, "req");
    let req_ref = req["variablesReference"].as_i64().unwrap();
    assert!(req_ref > 0, "a pointer to a struct expands: {req}");
    let fields = vars(&dap.ok("variables", json!({"variablesReference": req_ref})));
    assert_eq!(var(&fields, "offset")["value"], "12", "{fields:?}");
    let registers = vars(&dap.ok(
        "variables",
        json!({"variablesReference": scope(&scopes, "Registers")}),
    ));
    for reg in [
        "rip", "rflags", "cr0", "cr3", "cr4", "efer", "fs_base", "gs_base",
    ] {
        var(&registers, reg);
    }
    let rip = var(&registers, "rip")["value"].as_str().unwrap().to_owned();

    let monitor = dap.ok(
        "evaluate",
        json!({"expression": "monitor partitions", "context": "repl"}),
    );
    assert!(
        monitor["result"]
            .as_str()
            .unwrap()
            .contains("blocked-on-device"),
        "{monitor}"
    );

    let memory = dap.ok("readMemory", json!({"memoryReference": rip, "count": 16}));
    assert_eq!(memory["data"].as_str().map(str::len), Some(24), "{memory}");
    assert_eq!(memory["unreadableBytes"], 0, "{memory}");
    let disassembly = dap.ok(
        "disassemble",
        json!({"memoryReference": rip, "instructionOffset": -2, "instructionCount": 5}),
    );
    let insns = disassembly["instructions"].as_array().unwrap();
    assert_eq!(insns.len(), 5, "{disassembly}");
    assert_eq!(
        u64::from_str_radix(
            insns[2]["address"]
                .as_str()
                .unwrap()
                .trim_start_matches("0x"),
            16
        )
        .unwrap(),
        u64::from_str_radix(rip.trim_start_matches("0x"), 16).unwrap(),
        "{disassembly}"
    );
    assert!(
        insns
            .iter()
            .all(|i| !i["instruction"].as_str().unwrap().is_empty()),
        "{disassembly}"
    );
    // Instruction breakpoints: an address is set, a reference that is none is answered
    // unverified with why; an empty set clears them.
    let bps = dap.ok(
        "setInstructionBreakpoints",
        json!({"breakpoints": [{"instructionReference": insns[4]["address"]}, {"instructionReference": "nope"}]}),
    );
    assert_eq!(bps["breakpoints"][0]["verified"], true, "{bps}");
    assert_eq!(bps["breakpoints"][1]["verified"], false, "{bps}");
    assert!(
        bps["breakpoints"][1]["message"]
            .as_str()
            .is_some_and(|m| m.contains("not an address: nope")),
        "{bps}"
    );
    let cleared = dap.ok("setInstructionBreakpoints", json!({"breakpoints": []}));
    assert_eq!(cleared["breakpoints"], json!([]), "{cleared}");

    // The other partitions kept printing while the model was stopped.
    hv.wait_count("[worker]", worker + 1);
    let parts = partitions(&link);
    assert_eq!(
        vcpu_state(&parts, "control", 0),
        VcpuState::BlockedOnDevice,
        "still waiting: {parts:?}"
    );

    // `next` moves one line on, in the same handler.
    dap.ok("next", json!({"threadId": thread}));
    let stopped = dap.wait_event("stopped");
    assert_eq!(stopped["reason"], "step", "{stopped}");
    let stack = dap.ok("stackTrace", json!({"threadId": thread, "levels": 1}));
    let top = &stack["stackFrames"][0];
    assert_eq!(top["name"], "sensor_write_ctrl", "{top}");
    let line = top["line"].as_i64().unwrap();
    assert!(line > bp_line, "next moved from {bp_line} to {line}");
    let source = std::fs::read_to_string(path).unwrap();
    let text = source.lines().nth(line as usize - 1).unwrap_or("");
    assert!(
        text.contains("if (value & SENSOR_CTRL_START)"),
        "next stopped at line {line}: {text}"
    );

    // Disconnect: the model runs on, control gets its answer and goes on.
    let samples = hv.count("[sensor-model] sensor-model: sample #");
    dap.ok("disconnect", json!({"terminateDebuggee": false}));
    dap.wait_exit();
    hv.wait_count("[sensor-model] sensor-model: sample #", samples + 2);
    assert!(
        wait_until(PATIENCE, || {
            let parts = partitions(&link);
            vcpu_state(&parts, "sensor-model", 0) != VcpuState::StoppedInDebugger
        }),
        "the model still stopped after disconnect"
    );
    let control = hv.count("[control]");
    hv.wait_count("[control]", control + 1);
}

#[test]
fn launch_logpoint_condition_set_variable_and_terminate() {
    if !kvm_or_skip("launch_logpoint_condition_set_variable_and_terminate") {
        return;
    }
    let _kvm = kvm_lock();
    let control_c = Path::new(env!("CARGO_MANIFEST_DIR")).join("guests/demo/control.c");
    let source = std::fs::read_to_string(&control_c).unwrap();
    let tick_line = source
        .lines()
        .position(|l| l.trim() == "control_ticks++;")
        .expect("control_ticks++ in control.c") as i64
        + 1;

    let mut dap = Dap::start();
    dap.initialize();
    dap.ok(
        "launch",
        json!({"type": "hv", "request": "launch", "system": demo(), "partition": "control"}),
    );
    dap.wait_event("initialized");
    let src = json!({"path": control_c});
    let set = dap.ok(
        "setBreakpoints",
        json!({"source": src, "breakpoints": [{"line": tick_line, "logMessage": "tick {control_ticks}"}]}),
    );
    assert_eq!(set["breakpoints"][0]["verified"], true, "{set}");
    dap.ok("configurationDone", json!({}));

    // The logpoint prints and the guest goes on (no stopped event).
    let mut ticks = Vec::new();
    while ticks.len() < 2 {
        let out = dap.wait_event("output");
        if let Some(n) = out["output"]
            .as_str()
            .and_then(|t| t.strip_prefix("tick "))
            .and_then(|t| t.trim().parse::<u64>().ok())
        {
            ticks.push(n);
        }
    }
    assert!(ticks[1] > ticks[0], "{ticks:?}");
    assert!(
        !dap.events.iter().any(|e| e["event"] == "stopped"),
        "a logpoint does not stop"
    );

    // Replace it while the guest runs: a conditional breakpoint.
    let target = ticks[1] + 3;
    let set = dap.ok(
        "setBreakpoints",
        json!({"source": src, "breakpoints": [{"line": tick_line, "condition": format!("control_ticks >= {target}")}]}),
    );
    assert_eq!(set["breakpoints"][0]["verified"], true, "{set}");
    let stopped = dap.wait_event("stopped");
    assert_eq!(stopped["reason"], "breakpoint", "{stopped}");
    let thread = stopped["threadId"].as_i64().unwrap();
    let stack = dap.ok("stackTrace", json!({"threadId": thread}));
    let frame = stack["stackFrames"][0]["id"].as_i64().unwrap();
    assert_eq!(stack["stackFrames"][0]["line"], tick_line, "{stack}");
    let value = dap.ok(
        "evaluate",
        json!({"expression": "control_ticks", "frameId": frame, "context": "hover"}),
    );
    let now: u64 = value["result"].as_str().unwrap().parse().unwrap();
    assert!(now >= target, "condition honoured: {now} < {target}");

    // setVariable on a global.
    let scopes = dap.ok("scopes", json!({"frameId": frame}));
    let globals = scope(&scopes, "Globals");
    let list = vars(&dap.ok("variables", json!({"variablesReference": globals})));
    var(&list, "control_ticks");
    let set = dap.ok(
        "setVariable",
        json!({"variablesReference": globals, "name": "control_ticks", "value": "7"}),
    );
    assert_eq!(set["value"], "7", "{set}");
    let value = dap.ok(
        "evaluate",
        json!({"expression": "control_ticks", "frameId": frame, "context": "watch"}),
    );
    assert_eq!(value["result"], "7", "{value}");

    // Instruction stepping moves by one instruction.
    let before = dap.ok("stackTrace", json!({"threadId": thread, "levels": 1}))["stackFrames"][0]
        ["instructionPointerReference"]
        .clone();
    dap.ok(
        "stepIn",
        json!({"threadId": thread, "granularity": "instruction"}),
    );
    assert_eq!(dap.wait_event("stopped")["reason"], "step");
    let after = dap.ok("stackTrace", json!({"threadId": thread, "levels": 1}))["stackFrames"][0]
        ["instructionPointerReference"]
        .clone();
    assert_ne!(before, after, "stepi moved");
    dap.ok("setBreakpoints", json!({"source": src, "breakpoints": []}));

    // A data breakpoint on the global: it stops on the write, or, on a host whose KVM cannot
    // raise data breakpoints, it is marked unverified with the reason and the guest runs on.
    let info = dap.ok(
        "dataBreakpointInfo",
        json!({"name": "control_ticks", "variablesReference": globals}),
    );
    assert_eq!(info["dataId"], "control_ticks", "{info}");
    let too_big = dap.ok(
        "dataBreakpointInfo",
        json!({"name": "console_line", "variablesReference": globals}),
    );
    assert!(too_big["dataId"].is_null(), "{too_big}");
    assert!(
        too_big["description"]
            .as_str()
            .unwrap()
            .contains("1, 2, 4 or 8 bytes"),
        "{too_big}"
    );
    let set = dap.ok(
        "setDataBreakpoints",
        json!({"breakpoints": [{"dataId": "control_ticks", "accessType": "write"}]}),
    );
    assert_eq!(set["breakpoints"][0]["verified"], true, "{set}");
    dap.ok("continue", json!({"threadId": thread}));
    let (event, body) = dap.wait_any(&["stopped", "breakpoint"]);
    if event == "stopped" {
        assert_eq!(body["reason"], "data breakpoint", "{body}");
    } else {
        assert_eq!(body["breakpoint"]["verified"], false, "{body}");
        assert!(
            body["breakpoint"]["message"]
                .as_str()
                .unwrap()
                .contains("cannot set the data breakpoint"),
            "{body}"
        );
        dap.ok("pause", json!({"threadId": thread}));
        assert_eq!(dap.wait_event("stopped")["reason"], "pause");
    }
    dap.ok("setDataBreakpoints", json!({"breakpoints": []}));

    // Every partition's lines reach the Debug Console.
    dap.drain();
    assert!(
        dap.output.iter().any(|l| l.starts_with("[telemetry]")),
        "{:?}",
        dap.output
    );
    dap.ok("setBreakpoints", json!({"source": src, "breakpoints": []}));
    dap.ok("continue", json!({"threadId": thread}));
    dap.ok("terminate", json!({}));
    dap.wait_event("terminated");
    dap.ok("disconnect", json!({}));
    dap.wait_exit();
}

#[test]
fn a_guest_crash_is_an_exception_and_restart_resets_it() {
    if !kvm_or_skip("a_guest_crash_is_an_exception_and_restart_resets_it") {
        return;
    }
    let _kvm = kvm_lock();
    let system = common::system_file(
        r#"
[[partition]]
name = "crasher"
image = "{guests}/crasher.elf"

# keeps the system running after the crash
[[partition]]
name = "spin"
image = "{guests}/spin.elf"
"#,
    );
    let mut dap = Dap::start();
    dap.initialize();
    dap.ok(
        "launch",
        json!({"type": "hv", "request": "launch", "system": system.path, "partition": "crasher"}),
    );
    dap.wait_event("initialized");
    dap.ok("configurationDone", json!({}));
    // The guest triple-faults at once; the stub reports it when gdb resumes it.
    let stopped = dap.wait_event("stopped");
    assert_eq!(stopped["reason"], "exception", "{stopped}");
    assert!(
        stopped["description"]
            .as_str()
            .unwrap()
            .contains("Guest crashed: triple fault"),
        "{stopped}"
    );
    let thread = stopped["threadId"].as_i64().unwrap();
    let stack = dap.ok("stackTrace", json!({"threadId": thread}));
    assert_eq!(stack["stackFrames"][0]["name"], "crash", "{stack}");

    // restart: the partition is reset and stops at its entry (the breakpoint set meanwhile
    // then stops it before it crashes again).
    dap.ok(
        "setFunctionBreakpoints",
        json!({"breakpoints": [{"name": "crash"}]}),
    );
    dap.ok("restart", json!({}));
    let stopped = dap.wait_event("stopped");
    assert_eq!(stopped["reason"], "function breakpoint", "{stopped}");
    let stack = dap.ok("stackTrace", json!({"threadId": thread}));
    assert_eq!(stack["stackFrames"][0]["name"], "crash", "{stack}");
    assert_eq!(stack["stackFrames"][1]["name"], "hv_main", "{stack}");
    dap.ok("terminate", json!({}));
    dap.wait_event("terminated");
    dap.ok("disconnect", json!({}));
    dap.wait_exit();
}

#[test]
fn vcpu_session_stops_one_vcpu_and_ends_when_the_link_goes() {
    if !kvm_or_skip("vcpu_session_stops_one_vcpu_and_ends_when_the_link_goes") {
        return;
    }
    let _kvm = kvm_lock();
    let mut hv = HvRun::without_bridge(&demo());
    hv.wait_count("[worker]", 1);
    let link = LinkClient::connect(hv.link(), "dap-test").expect("test's link client");

    let mut dap = Dap::start();
    dap.initialize();
    dap.ok(
        "attach",
        json!({"type": "hv", "request": "attach", "partition": "worker", "vcpu": 1, "link": hv.link().to_string()}),
    );
    dap.wait_event("initialized");
    dap.ok("configurationDone", json!({}));
    dap.ok("pause", json!({"threadId": 1}));
    let stopped = dap.wait_event("stopped");
    assert_eq!(stopped["reason"], "pause", "{stopped}");
    let threads = dap.ok("threads", json!({}));
    let list = threads["threads"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{threads}");
    assert_eq!(list[0]["name"], "worker vCPU 1", "{threads}");
    // vCPU 1 is stopped; its sibling runs on.
    let parts = partitions(&link);
    assert_eq!(
        vcpu_state(&parts, "worker", 1),
        VcpuState::StoppedInDebugger,
        "{parts:?}"
    );
    assert_ne!(
        vcpu_state(&parts, "worker", 0),
        VcpuState::StoppedInDebugger,
        "{parts:?}"
    );
    let stack = dap.ok("stackTrace", json!({"threadId": list[0]["id"]}));
    assert!(
        stack["stackFrames"]
            .as_array()
            .is_some_and(|f| !f.is_empty()),
        "{stack}"
    );

    // The system goes away mid-session: a message, then terminated.
    drop(link);
    hv.stop();
    dap.wait_event("terminated");
    dap.drain();
    assert!(
        dap.output
            .iter()
            .any(|l| l.contains("host link closed")
                || l.contains("gdb connection to the guest closed")),
        "{:?}",
        dap.output
    );
    dap.ok("disconnect", json!({}));
    dap.wait_exit();
}

/// Bad launch/attach arguments get clear error responses; none needs KVM.
#[test]
fn bad_input_gets_clear_errors() {
    let mut dap = Dap::start();
    dap.initialize();
    let launch = |extra: Value| {
        let mut args = json!({"type": "hv", "request": "launch"});
        for (k, v) in extra.as_object().unwrap() {
            args[k] = v.clone();
        }
        args
    };
    let e = dap.fails("launch", launch(json!({"partition": "control"})));
    assert!(e.contains("launch needs `system`"), "{e}");
    let e = dap.fails(
        "launch",
        launch(json!({"system": "/nonexistent/system.toml", "partition": "control"})),
    );
    assert!(
        e.contains("no system description at /nonexistent/system.toml"),
        "{e}"
    );
    let e = dap.fails(
        "launch",
        launch(json!({"system": demo(), "partition": "sensor"})),
    );
    assert!(e.contains("unknown partition `sensor`"), "{e}");
    assert!(
        e.contains("control (1 vCPU), telemetry (1 vCPU), worker (2 vCPUs), sensor-model (1 vCPU)"),
        "{e}"
    );
    let e = dap.fails(
        "launch",
        launch(json!({"system": demo(), "partition": "worker", "vcpu": 2})),
    );
    assert!(e.contains("vCPU 2 is out of range"), "{e}");
    let e = dap.fails(
        "launch",
        launch(json!({"system": demo(), "partition": "control", "gdbPath": "/nonexistent/gdb"})),
    );
    assert!(e.contains("install Debian's `gdb` package"), "{e}");
    let e = dap.fails(
        "attach",
        json!({"partition": "control", "link": "unix:/nonexistent/hv.sock"}),
    );
    assert!(
        e.contains("cannot connect to the system's host link unix:/nonexistent/hv.sock"),
        "{e}"
    );
    let e = dap.fails(
        "attach",
        json!({"partition": "control", "link": "no-such-system-here"}),
    );
    assert!(e.contains("start one with `hv run`"), "{e}");
    let e = dap.fails("stackTrace", json!({"threadId": 1}));
    assert!(e.contains("launch or attach first"), "{e}");
    let e = dap.fails("gotoTargets", json!({}));
    assert!(e.contains("does not support"), "{e}");
    dap.ok("disconnect", json!({}));
    dap.wait_exit();
}

/// `HV_DAP_LOG` (or `--log`) keeps the session's DAP messages; a log that cannot be opened is a
/// warning, never a dead adapter. No KVM needed.
#[test]
fn the_session_log_has_every_message_and_a_bad_log_path_is_only_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("hv-dap.log");
    let mut dap = Dap::start_with(|c| {
        c.env("HV_DAP_LOG", &log);
    });
    dap.initialize();
    let e = dap.fails("launch", json!({"type": "hv", "request": "launch"}));
    dap.ok("disconnect", json!({}));
    dap.wait_exit();
    let text = std::fs::read_to_string(&log).expect("the log was written");
    assert!(
        text.lines()
            .any(|l| l.contains("dap> ") && l.contains(r#""command":"initialize""#)),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("dap< ") && l.contains("launch needs `system`")),
        "the error response {e:?} is not in the log:\n{text}"
    );

    let mut dap = Dap::start_with(|c| {
        c.args(["--log", "/nonexistent/dir/hv-dap.log"]);
    });
    dap.initialize();
    dap.ok("disconnect", json!({}));
    dap.wait_exit();
}

/// `hv dap --port 0` serves DAP on 127.0.0.1 (for debugging the adapter); no KVM needed.
#[test]
fn port_mode_serves_dap_on_localhost() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hv"))
        .args(["dap", "--port", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hv dap --port 0");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let port: u16 = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let body =
        br#"{"seq":1,"type":"request","command":"initialize","arguments":{"adapterID":"hv"}}"#;
    write!(stream, "Content-Length: {}\r\n\r\n", body.len()).unwrap();
    stream.write_all(body).unwrap();
    let mut reader = BufReader::new(stream);
    let mut header = String::new();
    reader.read_line(&mut header).unwrap();
    let length: usize = header
        .trim()
        .trim_start_matches("Content-Length:")
        .trim()
        .parse()
        .unwrap();
    let mut blank = String::new();
    reader.read_line(&mut blank).unwrap();
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).unwrap();
    let response: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(response["command"], "initialize", "{response}");
    assert_eq!(response["success"], true, "{response}");
    let _ = child.kill();
    let _ = child.wait();
}
