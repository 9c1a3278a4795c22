//! End-to-end tests of the host link: the debug agent in a real hypervisor with real guests,
//! several hv-link clients at once, gdb channel ownership, control, consoles, a corpus of
//! malformed input, the gdb bridge (in process and through the `hv` binary) and stock gdb.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{boot, kvm_lock, kvm_or_skip};
use debug_agent::{Agent, AgentOptions};
use gdb_bridge::{Bridge, BridgeError, BridgeOptions};
use hv_core::System;
use hv_link::client::parse_event;
use hv_link::control::PartitionStateChanged;
use hv_link::handshake::{HandshakeMessage, Hello};
use hv_link::rpc::codes;
use hv_link::{
    ChannelHandle, ChannelId, ChannelName, ClientOptions, Frame, FrameDecoder, LinkClient, Message,
    PartitionState, VcpuState,
};

/// Safety net for blocking reads and waits; no assertion is about how long anything takes.
const GUARD: Duration = Duration::from_secs(120);

/// The control/telemetry pair, as system `linktest`.
fn pair() -> String {
    format!(
        "[system]\nname = \"linktest\"\n{}",
        common::CONTROL_AND_TELEMETRY
    )
}

fn start_agent(system: &System, dir: &Path) -> Agent {
    let config = hv_config::AgentConfig {
        link: Some(format!("unix:{}", dir.join("link.sock").display())),
        ..system.config.agent.clone()
    };
    Agent::start(system, &config, AgentOptions::default()).expect("start the agent")
}

fn client(agent: &Agent, name: &str) -> LinkClient {
    let options = ClientOptions {
        call_timeout: Some(GUARD),
        ..ClientOptions::new(name)
    };
    LinkClient::connect_with(agent.local_addr(), options).expect("connect")
}

/// True once `bytes` holds a whole `$...#xx` packet.
fn complete_packet(bytes: &[u8]) -> bool {
    let Some(start) = bytes.iter().position(|&b| b == b'$') else {
        return false;
    };
    bytes[start..]
        .iter()
        .position(|&b| b == b'#')
        .is_some_and(|h| start + h + 3 <= bytes.len())
}

/// Sends `?` on a gdb channel and returns the reply (a stop packet).
fn gdb_stop_reason(gdb: &ChannelHandle) -> String {
    gdb.send(b"$?#3f").unwrap();
    let mut reply = Vec::new();
    while !complete_packet(&reply) {
        reply.extend(gdb.receiver().recv_timeout(GUARD).expect("gdb reply"));
    }
    String::from_utf8_lossy(&reply).into_owned()
}

#[test]
fn two_clients_at_once_and_one_owner_per_gdb_channel() {
    if !kvm_or_skip("two_clients_at_once_and_one_owner_per_gdb_channel") {
        return;
    }
    let _kvm = kvm_lock();
    let (system, _consoles, _file) = boot(&pair());
    let tmp = tempfile::tempdir().unwrap();
    let agent = start_agent(&system, tmp.path());
    let a = client(&agent, "tool-a");
    let b = client(&agent, "tool-b");

    for c in [&a, &b] {
        let list = c.partitions().unwrap();
        let names: Vec<&str> = list.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["control", "telemetry"]);
        for (i, p) in list.iter().enumerate() {
            assert_eq!(p.id as usize, i);
            assert_eq!(p.state, PartitionState::Running);
            assert_eq!(p.vcpus.len(), 1);
            assert_eq!(p.vcpus[0].index, 0);
            assert!(p.image.ends_with(&format!("{}.elf", p.name)), "{}", p.image);
        }
    }
    assert_eq!(a.system_info().unwrap().system, "linktest");

    let gdb = a.open_channel(&ChannelName::gdb("control")).unwrap();
    for name in [
        ChannelName::gdb("control"),
        ChannelName::gdb_vcpu("control", 0),
    ] {
        let e = b.open_channel(&name).unwrap_err();
        assert_eq!(e.rpc_code(), Some(codes::CHANNEL_OWNED), "{e}");
        assert!(
            e.to_string().contains("owned by another client (tool-a)"),
            "{e}"
        );
        let hv_link::ClientError::Rpc { error, .. } = e else {
            unreachable!()
        };
        assert_eq!(error.data.unwrap()["owner"], "tool-a");
    }
    // The other partition is free for the second client at the same time.
    let other = b.open_channel(&ChannelName::gdb("telemetry")).unwrap();
    let stop = gdb_stop_reason(&gdb);
    assert!(stop.contains("$T") || stop.contains("$S"), "{stop}");
    assert!(gdb_stop_reason(&other).contains('$'));
    let list = b.partitions().unwrap();
    assert_eq!(list[0].state, PartitionState::StoppedInDebugger);
    assert_eq!(list[0].vcpus[0].state, VcpuState::StoppedInDebugger);
    other.close().unwrap();

    // Close: the claim goes away with the reply.
    gdb.close().unwrap();
    let again = b
        .open_channel(&ChannelName::gdb_vcpu("control", 0))
        .unwrap();
    again.close().unwrap();
    drop((a, b));
    agent.shutdown();
    assert!(!tmp.path().join("link.sock").exists());
}

#[test]
fn pause_resume_reset_and_state_events_through_control() {
    if !kvm_or_skip("pause_resume_reset_and_state_events_through_control") {
        return;
    }
    let _kvm = kvm_lock();
    let (system, consoles, _file) = boot(&pair());
    let tmp = tempfile::tempdir().unwrap();
    let agent = start_agent(&system, tmp.path());
    let c = client(&agent, "console-tool");
    let watcher = client(&agent, "watcher");
    watcher.subscribe_events().unwrap();
    let events = watcher.notifications().clone();
    let next_state = || {
        let n = events.recv_timeout(GUARD).expect("a state change");
        let p = parse_event::<PartitionStateChanged>(&n)
            .expect("state_changed")
            .unwrap();
        (p.partition, p.state)
    };

    c.pause("control").unwrap();
    assert_eq!(next_state(), ("control".to_owned(), PartitionState::Paused));
    let list = c.partitions().unwrap();
    assert_eq!(list[0].state, PartitionState::Paused);
    assert_eq!(list[0].vcpus[0].state, VcpuState::Paused);
    assert_eq!(
        list[1].state,
        PartitionState::Running,
        "only control is paused"
    );
    assert_eq!(
        c.pause("control").err().map(|e| e.to_string()),
        None,
        "pausing twice is fine"
    );

    c.resume("control").unwrap();
    assert_eq!(
        next_state(),
        ("control".to_owned(), PartitionState::Running)
    );
    let seen = consoles.lines("control").len();
    consoles.wait_count("control", seen + 1, GUARD);

    c.reset("telemetry").unwrap();
    assert_eq!(
        next_state(),
        ("telemetry".to_owned(), PartitionState::Running)
    );
    consoles.wait_for("telemetry", "listening on channel", GUARD);

    c.inject_irq("control", 0, 200).unwrap();
    assert_eq!(
        c.inject_irq("control", 1, 200).unwrap_err().rpc_code(),
        Some(codes::UNKNOWN_VCPU)
    );
    assert_eq!(
        c.inject_irq("control", 0, 14).unwrap_err().rpc_code(),
        Some(codes::INVALID_PARAMS)
    );
    assert_eq!(
        c.pause("nope").unwrap_err().rpc_code(),
        Some(codes::UNKNOWN_PARTITION)
    );
    drop((c, watcher));
    agent.shutdown();
}

#[test]
fn console_channel_streams_output_and_feeds_the_uart() {
    if !kvm_or_skip("console_channel_streams_output_and_feeds_the_uart") {
        return;
    }
    let _kvm = kvm_lock();
    let (system, _consoles, _file) = boot(&pair());
    let tmp = tempfile::tempdir().unwrap();
    let agent = start_agent(&system, tmp.path());
    let c = client(&agent, "console-tool");
    let console = c.open_channel(&ChannelName::console("control")).unwrap();
    let mut out = Vec::new();
    while !String::from_utf8_lossy(&out).contains("control: uptime") {
        out.extend(
            console
                .receiver()
                .recv_timeout(GUARD)
                .expect("console output"),
        );
    }
    // Output of the other partition does not leak into this channel.
    assert!(!String::from_utf8_lossy(&out).contains("telemetry:"));

    let uart_fifo = || system.handle("control").unwrap().console_input_pending();
    let before = uart_fifo();
    console.send(b"hello").unwrap();
    // Frames of one connection are handled in order: once this answers, the input is in.
    c.system_info().unwrap();
    let after = uart_fifo();
    assert_eq!(
        after[before.len()..],
        *b"hello",
        "the guest's UART receive FIFO holds the input"
    );

    console.close().unwrap();
    drop(c);
    agent.shutdown();
}

/// Handshake by hand on a raw stream.
fn raw_handshake(s: &mut UnixStream) {
    let hello = HandshakeMessage::Hello(Hello::new("corpus")).to_vec();
    s.write_all(&Frame::new(ChannelId::CONTROL, hello).encode().unwrap())
        .unwrap();
    let mut dec = FrameDecoder::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(f) = dec.next_frame().unwrap() {
            assert!(matches!(
                HandshakeMessage::parse(&f.payload),
                Ok(HandshakeMessage::Welcome(_))
            ));
            // The agent sends nothing else before a request, so nothing is left over.
            return;
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "agent closed during the handshake");
        dec.push(&buf[..n]);
    }
}

/// Sends `input` (after a handshake when `post`), half-closes, and returns what the agent sent
/// until it closed the connection.
fn replay(sock: &Path, input: Vec<u8>, post: bool) -> Vec<Frame> {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(GUARD)).unwrap();
    if post {
        raw_handshake(&mut s);
    }
    let mut w = s.try_clone().unwrap();
    // Write from another thread: the agent may answer while we write, or close early.
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(&input);
        let _ = w.shutdown(Shutdown::Write);
    });
    let mut bytes = Vec::new();
    let r = s.read_to_end(&mut bytes);
    assert!(
        !matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut),
        "the agent neither answered nor closed"
    );
    writer.join().unwrap();
    let mut dec = FrameDecoder::new();
    dec.push(&bytes);
    let mut frames = Vec::new();
    while let Ok(Some(f)) = dec.next_frame() {
        frames.push(f);
    }
    frames
}

fn corpus(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

fn says_malformed(frames: &[Frame]) -> bool {
    frames.iter().any(|f| {
        matches!(Message::parse(&f.payload), Ok(Message::Response(r))
            if r.outcome.as_ref().is_err_and(|e| e.message.contains("malformed frame")))
    })
}

#[test]
fn malformed_link_input_closes_only_that_connection() {
    if !kvm_or_skip("malformed_link_input_closes_only_that_connection") {
        return;
    }
    let _kvm = kvm_lock();
    let (system, consoles, _file) = boot(&pair());
    let tmp = tempfile::tempdir().unwrap();
    let agent = start_agent(&system, tmp.path());
    let sock = tmp.path().join("link.sock");
    let bystander = client(&agent, "bystander");
    let console = bystander
        .open_channel(&ChannelName::console("telemetry"))
        .unwrap();

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ours = corpus(&root.join("tests/corpus"));
    assert!(ours.len() >= 20, "tests/corpus has {} files", ours.len());
    for (name, input) in &ours {
        let post = name.starts_with("post_");
        let frames = replay(&sock, input.clone(), post);
        if name.starts_with("pre_refused_") {
            assert!(
                frames.iter().any(|f| matches!(
                    HandshakeMessage::parse(&f.payload),
                    Ok(HandshakeMessage::Refused(r)) if !r.message.is_empty()
                )),
                "{name}: no refusal before the close: {frames:?}"
            );
        }
        if name.starts_with("post_err_") {
            assert!(
                says_malformed(&frames),
                "{name}: no 'malformed frame' error before the close: {frames:?}"
            );
        }
        if name.starts_with("post_ok_") {
            assert!(
                !says_malformed(&frames),
                "{name}: valid frames reported as malformed"
            );
            // Each ends with request 99: answered, so the connection survived all before it.
            let answered = frames.iter().any(|f| {
                f.channel == ChannelId::CONTROL
                    && matches!(Message::parse(&f.payload), Ok(Message::Response(r))
                        if r.id == hv_link::RequestId::Number(99) && r.outcome.is_ok())
            });
            assert!(answered, "{name}: the final request got no answer");
        }
    }
    for (name, input) in corpus(&root.join("hv-link/tests/corpus")) {
        for post in [false, true] {
            let frames = replay(&sock, input.clone(), post);
            if post && name.starts_with("err_") {
                assert!(says_malformed(&frames), "hv-link {name}: {frames:?}");
            }
        }
    }
    // Random bytes (seeded) after a handshake, a few hundred connections.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..200 {
        let len = 1 + (i * 37) % 700;
        let mut input: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        if i % 2 == 0 && input.len() >= 4 {
            input[..4].copy_from_slice(&[0xA5, 0x4C, 0, 0]);
        }
        replay(&sock, input, i % 3 != 0);
    }
    assert!(agent.malformed_connections() > 0);

    // The bystander is still served, the guests still run, and no gdb channel is left owned
    // (connections that attached gdb and then broke have detached).
    assert_eq!(bystander.partitions().unwrap().len(), 2);
    let seen = consoles.lines("control").len();
    consoles.wait_count("control", seen + 2, GUARD);
    let mut out = Vec::new();
    while !String::from_utf8_lossy(&out).contains("telemetry: #") {
        out.extend(
            console
                .receiver()
                .recv_timeout(GUARD)
                .expect("bystander console"),
        );
    }
    for name in ["control", "telemetry"] {
        bystander
            .open_channel(&ChannelName::gdb(name))
            .unwrap()
            .close()
            .unwrap();
    }
    for p in system.handles() {
        assert_eq!(
            p.state(),
            hv_core::PartitionLifecycle::Running,
            "{}",
            p.name()
        );
    }
    drop(console);
    drop(bystander);
    agent.shutdown();
}

/// Waits for the agent's `channel.closed` notice for `id`; returns its reason.
fn channel_closed_reason(c: &LinkClient, id: ChannelId) -> String {
    loop {
        let n = c
            .notifications()
            .recv_timeout(GUARD)
            .expect("no channel.closed notice from the agent");
        if let Some(Ok(p)) = parse_event::<hv_link::control::ChannelClosed>(&n)
            && p.id == id
        {
            return p.reason;
        }
    }
}

#[test]
fn a_gdb_session_ending_on_its_own_closes_its_channel_with_a_notice() {
    if !kvm_or_skip("a_gdb_session_ending_on_its_own_closes_its_channel_with_a_notice") {
        return;
    }
    let _kvm = kvm_lock();
    let (system, consoles, _file) = boot(&pair());
    let tmp = tempfile::tempdir().unwrap();
    let agent = start_agent(&system, tmp.path());
    let owner = client(&agent, "owner");
    let other = client(&agent, "other");
    let mut overflow = b"$m".to_vec();
    overflow.extend(std::iter::repeat_n(
        b'A',
        debug_agent::gdb::PACKET_SIZE + 16,
    ));
    let cases: [(&str, Vec<u8>, &str); 5] = [
        ("detach", b"$D#44".to_vec(), "gdb detached"),
        ("kill", b"$k#6b".to_vec(), "gdb killed the session"),
        ("packet overflow", overflow, "gdb session error"),
        ("bad header", b"xyz".to_vec(), "gdb session error"),
        ("bad checksum", b"$g#00".to_vec(), "gdb session error"),
    ];
    for (what, bytes, expected) in cases {
        for name in [
            ChannelName::gdb("control"),
            ChannelName::gdb_vcpu("control", 0),
        ] {
            let gdb = owner.open_channel(&name).unwrap();
            let stop = gdb_stop_reason(&gdb);
            assert!(stop.contains("$T") || stop.contains("$S"), "{what}: {stop}");
            gdb.send(&bytes).unwrap();
            let reason = channel_closed_reason(&owner, gdb.id());
            assert!(reason.contains(expected), "{what} on {name}: {reason:?}");
            // The client's channel ends (after any last reply, e.g. `OK` to `D`).
            let mut last = Vec::new();
            while let Ok(b) = gdb.receiver().recv_timeout(GUARD) {
                last.extend(b);
            }
            if what == "detach" {
                assert!(last.windows(3).any(|w| w == b"$OK"), "{what}: {last:?}");
            }
            // Bytes for the ended channel are dropped without harm.
            gdb.send(b"$?#3f").unwrap();
            // The claim is gone: another client gets the guest at once, and so does the owner.
            other.open_channel(&name).unwrap().close().unwrap();
            let again = owner.open_channel(&name).unwrap();
            assert!(gdb_stop_reason(&again).contains('$'), "{what}: re-attach");
            again.close().unwrap();
            drop(gdb);
            // Detached: the guest runs on.
            let seen = consoles.lines("control").len();
            consoles.wait_count("control", seen + 1, GUARD);
        }
    }
    assert_eq!(owner.partitions().unwrap().len(), 2, "owner still served");
    drop((owner, other));
    agent.shutdown();
}

#[test]
fn gdb_channel_corpus_on_a_real_guest() {
    if !kvm_or_skip("gdb_channel_corpus_on_a_real_guest") {
        return;
    }
    let _kvm = kvm_lock();
    let (system, consoles, _file) = boot(&pair());
    let tmp = tempfile::tempdir().unwrap();
    let agent = start_agent(&system, tmp.path());
    let owner = client(&agent, "corpus");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = corpus(&root.join("tests/corpus/gdb"));
    assert!(
        files.len() >= 15,
        "tests/corpus/gdb has {} files",
        files.len()
    );
    for (name, input) in &files {
        for channel in [
            ChannelName::gdb("control"),
            ChannelName::gdb_vcpu("control", 0),
        ] {
            let gdb = owner.open_channel(&channel).unwrap();
            let id = gdb.id();
            gdb.send(input).unwrap();
            // Closing waits for the session to take every byte sent before (and to detach);
            // a session that ended on its own has said so first.
            let _ = gdb.close();
            let mut ended = None;
            while let Ok(n) = owner.notifications().try_recv() {
                if let Some(Ok(p)) = parse_event::<hv_link::control::ChannelClosed>(&n)
                    && p.id == id
                {
                    ended = Some(p.reason);
                }
            }
            if name.starts_with("err_") || name.starts_with("session_") {
                assert!(
                    ended.is_some(),
                    "{name} on {channel}: no channel.closed notice"
                );
            }
            if name.starts_with("err_") {
                assert!(
                    ended
                        .as_deref()
                        .is_some_and(|r| r.starts_with("gdb session error")),
                    "{name} on {channel}: {ended:?}"
                );
            }
            // Detached either way: the vCPU is not left stopped for a debugger that is gone.
            let vcpu = system.handles()[0].vcpus()[0].clone();
            assert!(
                common::wait_until(Duration::from_secs(10), || vcpu.state()
                    != hv_core::VcpuThreadState::DebugStopped),
                "{name} on {channel}: the vCPU stays stopped after the session"
            );
        }
    }
    // The hypervisor and the agent are fine, the other guest never stopped, and the debugged
    // one (which the corpus may have written garbage into) runs again after a reset.
    assert_eq!(owner.partitions().unwrap().len(), 2);
    // telemetry only prints what control sends, and the corpus may have broken control: check
    // that telemetry itself was never stopped, then that both print again after control's reset.
    let telemetry = system.handles()[1].clone();
    assert_eq!(telemetry.state(), hv_core::PartitionLifecycle::Running);
    assert!(
        telemetry
            .vcpus()
            .iter()
            .all(|v| v.state() != hv_core::VcpuThreadState::DebugStopped)
    );
    owner.reset("control").unwrap();
    let seen = consoles.lines("control").len();
    consoles.wait_count("control", seen + 2, GUARD);
    let seen = consoles.lines("telemetry").len();
    consoles.wait_count("telemetry", seen + 1, GUARD);
    owner
        .open_channel(&ChannelName::gdb("control"))
        .unwrap()
        .close()
        .unwrap();
    drop(owner);
    agent.shutdown();
}

fn tcp(port: u16) -> TcpStream {
    let s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    s.set_read_timeout(Some(GUARD)).unwrap();
    s
}

/// Sends `?` over a raw gdb TCP connection and returns the reply packet text.
fn tcp_stop_reason(s: &mut TcpStream) -> String {
    s.write_all(b"+$?#3f").unwrap();
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while !complete_packet(&reply) {
        let n = s.read(&mut buf).expect("gdb reply");
        assert!(
            n > 0,
            "bridge hung up: {:?}",
            String::from_utf8_lossy(&reply)
        );
        reply.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&reply).into_owned()
}

#[test]
fn garbage_gdb_bytes_through_the_bridge_hurt_nothing() {
    if !kvm_or_skip("garbage_gdb_bytes_through_the_bridge_hurt_nothing") {
        return;
    }
    let _kvm = kvm_lock();
    let (system, consoles, _file) = boot(&pair());
    let tmp = tempfile::tempdir().unwrap();
    let agent = start_agent(&system, tmp.path());
    let bridge = loop {
        match Bridge::start(
            agent.local_addr(),
            common::free_gdb_base(&[1, 1]),
            BridgeOptions::default(),
        ) {
            Ok(b) => break b,
            Err(BridgeError::PortInUse { .. }) => continue,
            Err(e) => panic!("{e}"),
        }
    };
    let port = bridge.ports()[0].port;
    assert_eq!(bridge.ports()[0].partition, "control");

    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut garbage: Vec<u8> = Vec::new();
    for i in 0..4000u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        match i % 5 {
            0 => garbage
                .extend_from_slice(format!("$m{:x},{:x}#{:02x}", x, x >> 40, x as u8).as_bytes()),
            1 => garbage.extend_from_slice(b"$vCont;c#a8\x03"),
            2 => garbage.extend_from_slice(&x.to_le_bytes()),
            3 => garbage.extend_from_slice(b"}}}}*#$"),
            _ => garbage.push(b"+-$#"[(x % 4) as usize]),
        }
    }
    garbage.extend(std::iter::repeat_n(b'A', 300_000));
    for round in 0..3 {
        let mut s = tcp(if round == 2 {
            bridge.ports()[1].port
        } else {
            port
        });
        let mut w = s.try_clone().unwrap();
        let g = garbage.clone();
        let writer = std::thread::spawn(move || {
            let _ = w.write_all(&g);
            let _ = w.shutdown(Shutdown::Write);
        });
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
        writer.join().unwrap();
    }
    // A well-behaved debugger is served afterwards, and the guests still run.
    let mut s = tcp(port);
    let stop = tcp_stop_reason(&mut s);
    assert!(stop.contains("$T") || stop.contains("$S"), "{stop}");
    drop(s);
    let seen = consoles.lines("control").len();
    consoles.wait_count("control", seen + 2, GUARD);
    let c = client(&agent, "checker");
    assert!(c.partitions().unwrap().iter().all(
        |p| p.state == PartitionState::Running || p.state == PartitionState::StoppedInDebugger
    ));
    drop(c);
    bridge.shutdown();
    agent.shutdown();
}

/// Kills a child process on drop (a failing test must not leave `hv` running).
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `hv <args>` with stderr read line by line on a thread.
fn spawn_hv(args: &[&str], env: &[(&str, &Path)]) -> (Reaper, crossbeam_channel::Receiver<String>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hv"));
    cmd.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn hv");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (Reaper(child), rx)
}

/// Collects stderr lines up to and including the first one containing `needle`.
fn lines_until(rx: &crossbeam_channel::Receiver<String>, needle: &str) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        match rx.recv_timeout(GUARD) {
            Ok(line) => {
                let done = line.contains(needle);
                lines.push(line);
                if done {
                    return lines;
                }
            }
            Err(_) => panic!(
                "hv never printed {needle:?}; it printed:\n{}",
                lines.join("\n")
            ),
        }
    }
}

fn gdb_available() -> bool {
    Command::new("gdb")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn gdb_batch(port: u16, image: &str) -> (String, String) {
    let out = Command::new("gdb")
        .args([
            "-batch",
            "-nx",
            "-ex",
            &format!("target remote :{port}"),
            "-ex",
            "info registers rip",
            image,
        ])
        .output()
        .expect("run gdb");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn hv_run_serves_the_link_and_stock_gdb_reads_rip_through_the_bridge() {
    if !kvm_or_skip("hv_run_serves_the_link_and_stock_gdb_reads_rip_through_the_bridge") {
        return;
    }
    if !gdb_available() {
        eprintln!(
            "SKIPPED hv_run_serves_the_link_and_stock_gdb_reads_rip_through_the_bridge: gdb is not installed"
        );
        return;
    }
    let _kvm = kvm_lock();
    let file = common::system_file(&pair());
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("hv.sock");
    let link = format!("unix:{}", sock.display());
    let base = common::free_gdb_base(&[1, 1]);
    let base_s = base.to_string();
    let (mut hv, hv_err) = spawn_hv(
        &[
            "run",
            file.path.to_str().unwrap(),
            "--quiet",
            "--link",
            &link,
            "--gdb-port",
            &base_s,
        ],
        &[],
    );
    let printed = lines_until(&hv_err, "hv: attach with:");
    assert!(
        printed
            .iter()
            .any(|l| l == &format!("hv: host link: {link}")),
        "{printed:#?}"
    );
    let header = printed
        .iter()
        .position(|l| l.starts_with("partition"))
        .expect("port table");
    assert_eq!(printed[header], "partition  vcpu  port   image");
    let rows: Vec<String> = printed[header + 1..header + 5]
        .iter()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    let image = |name: &str| format!("{}/{name}.elf", guests::GUESTS_DIR);
    assert_eq!(
        rows,
        [
            format!("control all {} {}", base, image("control")),
            format!("control 0 {} {}", base + 100, image("control")),
            format!("telemetry all {} {}", base + 1, image("telemetry")),
            format!("telemetry 0 {} {}", base + 116, image("telemetry")),
        ]
    );

    // Stock gdb through the in-process bridge.
    let (out, err) = gdb_batch(base, &image("control"));
    assert!(
        out.contains("rip") && out.contains("0x"),
        "gdb printed:\n{out}\n{err}"
    );
    let (out, err) = gdb_batch(base + 116, &image("telemetry"));
    assert!(out.contains("rip"), "gdb printed:\n{out}\n{err}");

    // A second bridge (`hv gdb-bridge`) is a second client: a guest debugged through the first
    // is refused through the second, naming the owner.
    let base2 = common::free_gdb_base(&[1, 1]);
    let (_bridge2, bridge2_err) = spawn_hv(
        &[
            "gdb-bridge",
            "--connect",
            &link,
            "--base-port",
            &base2.to_string(),
        ],
        &[],
    );
    let printed2 = lines_until(&bridge2_err, "hv: attach with:");
    assert!(
        printed2
            .iter()
            .any(|l| l.contains("gdb bridge for system linktest")),
        "{printed2:#?}"
    );
    let mut holder = tcp(base);
    assert!(tcp_stop_reason(&mut holder).contains('$'));
    let (out, err) = gdb_batch(base2, &image("control"));
    let owner = format!("owned by another client (gdb-bridge[{}])", hv.0.id());
    assert!(err.contains(&owner), "gdb printed:\n{out}\n{err}");
    drop(holder);
    // The other guest through the second bridge works at the same time.
    let (out, err) = gdb_batch(base2 + 1, &image("telemetry"));
    assert!(out.contains("rip"), "gdb printed:\n{out}\n{err}");

    // Ctrl-C: hv stops cleanly and removes the socket; the second bridge notices and exits.
    // SAFETY: kill(2) on our own child's pid with a valid signal number.
    assert_eq!(unsafe { libc::kill(hv.0.id() as i32, libc::SIGINT) }, 0);
    let status = hv.0.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(!sock.exists(), "socket file removed");
    lines_until(&bridge2_err, "the system's host link closed");
}

#[test]
fn hv_gdb_bridge_says_which_systems_are_running() {
    let tmp = tempfile::tempdir().unwrap();
    let runtime = tmp.path().join("rt");
    std::fs::create_dir(&runtime).unwrap();
    let env = [("XDG_RUNTIME_DIR", runtime.as_path())];
    let dir = runtime.join("hvdk");
    let run = |args: &[&str]| {
        let (mut child, err) = spawn_hv(args, &env);
        let status = child.0.wait().unwrap();
        let text: Vec<String> = err.iter().collect();
        (status.success(), text.join("\n"))
    };
    let (ok, text) = run(&["gdb-bridge"]);
    assert!(!ok);
    assert!(text.contains("no hvdk system is running"), "{text}");
    assert!(text.contains(&dir.display().to_string()), "{text}");

    hv_link::transport::ensure_private_dir(&dir).unwrap();
    let _alpha = std::os::unix::net::UnixListener::bind(dir.join("alpha.sock")).unwrap();
    let _beta = std::os::unix::net::UnixListener::bind(dir.join("beta.sock")).unwrap();
    let (ok, text) = run(&["gdb-bridge"]);
    assert!(!ok);
    assert!(text.contains("several hvdk systems are running"), "{text}");
    assert!(
        text.contains("alpha") && text.contains("beta") && text.contains("--connect"),
        "{text}"
    );

    let (ok, text) = run(&["gdb-bridge", "--connect", "gamma"]);
    assert!(!ok);
    assert!(text.contains("gamma"), "{text}");
    let (ok, text) = run(&["gdb-bridge", "--connect", "tcp:nowhere"]);
    assert!(!ok);
    assert!(text.contains("--connect"), "{text}");
}
