//! The gdb remote protocol by hand through the real bridge of a real `hv run`: packets stock
//! gdb never sends but a careless or hostile client does (writes whose data disagrees with
//! their declared length, a bare `qSupported`), detach/reattach cycles back to back, and one
//! debugger per guest across the bridge's in-process sessions and the link's `gdb:` channels.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::Duration;

use common::hv_run::HvRun;
use common::{kvm_lock, kvm_or_skip, system_file};

/// Safety net for reads (no assertion depends on it).
const GUARD: Duration = Duration::from_secs(60);

/// `hv run` of control and telemetry with the gdb bridge (the description file lives as long as
/// the pair).
fn start() -> (HvRun, common::SystemFile) {
    let system = system_file(common::CONTROL_AND_TELEMETRY);
    let hv = HvRun::with_bridge(&system.path, &[1, 1]);
    (hv, system)
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
    let (hv, _system) = start();
    let ports = [hv.base(), hv.base() + 100];
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
    let (hv, _system) = start();
    let mut gdb = Gdb::connect(hv.base());
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
    let (hv, _system) = start();
    let client = hv_link::LinkClient::connect(hv.link(), "other-debugger").unwrap();
    let control = hv_link::ChannelName::gdb("control");
    // gdb on the bridge's port (a session inside hv) owns control: a link client is refused,
    // for the partition and for its vCPU, and told who owns it.
    let mut gdb = Gdb::connect(hv.base());
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
    let mut refused = Gdb::connect(hv.base() + 100);
    let reply = refused.ask(b"?");
    assert!(
        reply.starts_with("E.") && reply.contains("other-debugger"),
        "{reply}"
    );
    channel.close().unwrap();
    let mut gdb = Gdb::connect(hv.base());
    assert!(gdb.ask(b"?").starts_with('T'));
    gdb.detach();
    hv.prints_on("[control]", 2);
}

#[test]
fn an_interrupt_during_a_step_leaves_no_stray_stop_for_the_next_resume() {
    if !kvm_or_skip("an_interrupt_during_a_step_leaves_no_stray_stop_for_the_next_resume") {
        return;
    }
    let _kvm = kvm_lock();
    let (hv, _system) = start();
    let mut gdb = Gdb::connect(hv.base());
    assert!(gdb.ask(b"?").starts_with('T'));
    for round in 0..20 {
        // A step and an interrupt at once: gdb hears one stop (the interrupt's, or the step's
        // if it won the race) ...
        let mut both = packet(b"vCont;s:p1.1");
        both.push(0x03);
        gdb.s.write_all(&both).unwrap();
        let first = gdb.reply();
        assert!(first.starts_with('T'), "round {round}: {first}");
        // ... and the next resume runs until the next interrupt: the step that the interrupt
        // superseded is not reported then as a stray SIGTRAP.
        gdb.s.write_all(&packet(b"vCont;c")).unwrap();
        gdb.s.write_all(&[0x03]).unwrap();
        let next = gdb.reply();
        assert!(
            next.starts_with("T02"),
            "round {round}: after {first}, the resume was answered by {next}"
        );
    }
    gdb.detach();
    hv.prints_on("[control]", 2);
}
