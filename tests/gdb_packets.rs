//! The gdb remote protocol by hand through the real bridge of a real `hv run`: packets stock
//! gdb never sends but a careless or hostile client does (writes whose data disagrees with
//! their declared length, a bare `qSupported`), detach/reattach cycles back to back, and one
//! debugger per guest across the bridge's in-process sessions and the link's `gdb:` channels.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{kvm_lock, kvm_or_skip, system_file, wait_until};

/// Safety net for reads (no assertion depends on it).
const GUARD: Duration = Duration::from_secs(60);

/// A running `hv run` (killed on drop) with its gdb base port and console lines.
struct Hv {
    child: Child,
    base: u16,
    link: hv_link::LinkAddr,
    lines: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
    _system: common::SystemFile,
}

impl Hv {
    fn start() -> Hv {
        let system = system_file(common::CONTROL_AND_TELEMETRY);
        let dir = tempfile::tempdir().unwrap();
        let base = common::free_gdb_base(&[1, 1]);
        let link = hv_link::LinkAddr::Unix(dir.path().join("link.sock"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_hv"))
            .args(["run", system.path.to_str().unwrap(), "--no-console"])
            .args(["--gdb-port", &base.to_string(), "--link"])
            .arg(link.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start hv run");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let hv = Hv {
            child,
            base,
            link,
            lines,
            _dir: dir,
            _system: system,
        };
        let port = base.to_string();
        assert!(
            wait_until(GUARD, || log.lock().unwrap().contains(&port)),
            "no port table from hv run:\n{}",
            log.lock().unwrap()
        );
        hv
    }

    fn count(&self, prefix: &str) -> usize {
        let lines = self.lines.lock().unwrap();
        lines.iter().filter(|l| l.starts_with(prefix)).count()
    }

    /// Waits until `prefix` has printed `more` lines beyond what it had printed.
    fn prints_on(&self, prefix: &str, more: usize) {
        let seen = self.count(prefix);
        assert!(
            wait_until(GUARD, || self.count(prefix) >= seen + more),
            "{prefix} stopped printing"
        );
    }
}

impl Drop for Hv {
    fn drop(&mut self) {
        // SAFETY: kill only sends a signal to our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn packet(body: &[u8]) -> Vec<u8> {
    let sum = body.iter().fold(0u8, |a, b| a.wrapping_add(*b));
    let mut p = vec![b'$'];
    p.extend_from_slice(body);
    p.extend(format!("#{sum:02x}").into_bytes());
    p
}

/// A raw gdb connection to one port.
struct Gdb {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Gdb {
    fn connect(port: u16) -> Gdb {
        let s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
        s.set_read_timeout(Some(GUARD)).unwrap();
        Gdb { s, buf: Vec::new() }
    }

    /// Sends `body` as a packet and returns the reply's body (acks skipped).
    fn ask(&mut self, body: &[u8]) -> String {
        self.s.write_all(&packet(body)).unwrap();
        self.reply()
    }

    fn reply(&mut self) -> String {
        loop {
            if let Some(start) = self.buf.iter().position(|&b| b == b'$')
                && let Some(hash) = self.buf[start..].iter().position(|&b| b == b'#')
                && self.buf.len() >= start + hash + 3
            {
                let body = String::from_utf8_lossy(&self.buf[start + 1..start + hash]).into_owned();
                self.buf.drain(..start + hash + 3);
                return body;
            }
            let mut chunk = [0u8; 4096];
            let n = self.s.read(&mut chunk).expect("a reply from the stub");
            assert!(
                n > 0,
                "the bridge hung up: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Detaches and waits for the bridge to hang up.
    fn detach(mut self) {
        assert_eq!(self.ask(b"D"), "OK");
        let mut rest = Vec::new();
        let _ = self.s.read_to_end(&mut rest);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn detach_and_reattach_back_to_back_is_never_refused() {
    if !kvm_or_skip("detach_and_reattach_back_to_back_is_never_refused") {
        return;
    }
    let _kvm = kvm_lock();
    let hv = Hv::start();
    let ports = [hv.base, hv.base + 100];
    for cycle in 0..80 {
        let port = ports[cycle % 2];
        let mut gdb = Gdb::connect(port);
        let stop = gdb.ask(b"?");
        assert!(
            stop.starts_with('T') || stop.starts_with('S'),
            "cycle {cycle} on port {port}: {stop}"
        );
        gdb.detach();
    }
    // The guest runs on.
    hv.prints_on("[control]", 2);
}

#[test]
fn writes_whose_length_disagrees_with_their_data_are_refused() {
    if !kvm_or_skip("writes_whose_length_disagrees_with_their_data_are_refused") {
        return;
    }
    let _kvm = kvm_lock();
    let hv = Hv::start();
    let mut gdb = Gdb::connect(hv.base);
    // A bare qSupported (no features) gets the normal reply; the session goes on.
    assert!(gdb.ask(b"qSupported").starts_with("PacketSize="));
    gdb.ask(b"?");
    // control's code at its load address, written back as it is where a write is valid.
    let at = 0x100000u64;
    let original = gdb.ask(format!("m{at:x},8").as_bytes());
    assert_eq!(original.len(), 16, "{original}");
    let cc = hex(&[0xcc; 8]);
    for bad in [
        format!("M{at:x},2:{cc}"),
        format!("M{at:x},1:{cc}"),
        format!("M{at:x},8:{}", &cc[..8]),
    ] {
        let reply = gdb.ask(bad.as_bytes());
        assert!(reply.starts_with('E'), "{bad}: {reply}");
    }
    let mut x = format!("X{at:x},2:").into_bytes();
    x.extend_from_slice(&[0xcc; 4]);
    assert!(gdb.ask(&x).starts_with('E'));
    assert_eq!(
        gdb.ask(format!("m{at:x},8").as_bytes()),
        original,
        "memory changed"
    );
    // Writes that agree are done (the same bytes: the guest is not disturbed).
    let good = format!("M{at:x},8:{original}");
    assert_eq!(gdb.ask(good.as_bytes()), "OK");
    let mut x = format!("X{at:x},0:").into_bytes();
    assert_eq!(gdb.ask(&x), "OK");
    x = format!("X{at:x},8:").into_bytes();
    let bytes: Vec<u8> = (0..8)
        .map(|i| u8::from_str_radix(&original[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    for b in bytes {
        if matches!(b, b'#' | b'$' | b'}' | b'*') {
            x.extend([b'}', b ^ 0x20]);
        } else {
            x.push(b);
        }
    }
    assert_eq!(gdb.ask(&x), "OK");
    assert_eq!(gdb.ask(format!("m{at:x},8").as_bytes()), original);
    gdb.detach();
    hv.prints_on("[control]", 2);
}

#[test]
fn one_debugger_per_guest_across_the_bridge_and_link_clients() {
    if !kvm_or_skip("one_debugger_per_guest_across_the_bridge_and_link_clients") {
        return;
    }
    let _kvm = kvm_lock();
    let hv = Hv::start();
    let client = hv_link::LinkClient::connect(&hv.link, "other-debugger").unwrap();
    let control = hv_link::ChannelName::gdb("control");
    // gdb on the bridge's port (a session inside hv) owns control: a link client is refused,
    // for the partition and for its vCPU, and told who owns it.
    let mut gdb = Gdb::connect(hv.base);
    assert!(gdb.ask(b"?").starts_with('T'));
    for name in [
        control.clone(),
        hv_link::ChannelName::gdb_vcpu("control", 0),
    ] {
        let refused = client.open_channel(&name).unwrap_err();
        assert_eq!(
            refused.rpc_code(),
            Some(hv_link::rpc::codes::CHANNEL_OWNED),
            "{name}: {refused}"
        );
        assert!(refused.to_string().contains("gdb-bridge"), "{refused}");
    }
    gdb.detach();
    // Released: now the link client takes control, and gdb on the bridge is turned away with
    // a reply it prints, naming the owner.
    let channel = client.open_channel(&control).unwrap();
    let mut refused = Gdb::connect(hv.base + 100);
    let reply = refused.ask(b"?");
    assert!(
        reply.starts_with("E.") && reply.contains("other-debugger"),
        "{reply}"
    );
    channel.close().unwrap();
    let mut gdb = Gdb::connect(hv.base);
    assert!(gdb.ask(b"?").starts_with('T'));
    gdb.detach();
    hv.prints_on("[control]", 2);
}
