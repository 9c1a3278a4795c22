//! Tests of the host-link server over real sockets: handshake, control errors, malformed
//! input, several clients, TCP tokens, shutdown; and, where /dev/kvm exists, gdb and console
//! channels on a real partition.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use hv_config::AgentConfig;
use hv_core::{SystemEvent, kvm_or_skip};
use hv_link::client::parse_event;
use hv_link::control::PartitionStateChanged;
use hv_link::handshake::{HandshakeMessage, Hello, client_handshake};
use hv_link::rpc::codes;
use hv_link::{
    ChannelId, ChannelName, ClientError, ClientOptions, Frame, LinkAddr, LinkClient, Message,
    Response,
};
use serde_json::{Value, json};

use super::{Agent, AgentOptions};

/// Safety net for reads in tests (no assertion depends on it).
const GUARD: Duration = Duration::from_secs(60);

fn opts(name: &str) -> ClientOptions {
    ClientOptions {
        call_timeout: Some(GUARD),
        ..ClientOptions::new(name)
    }
}

/// An agent with no partitions on a Unix socket in `dir` (needs no KVM).
fn empty_agent(dir: &Path) -> (Agent, crossbeam_channel::Sender<SystemEvent>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let config = AgentConfig {
        link: Some(format!("unix:{}", dir.join("t.sock").display())),
        ..AgentConfig::default()
    };
    let agent =
        Agent::start_parts("test", Vec::new(), rx, &config, AgentOptions::default()).unwrap();
    (agent, tx)
}

/// Connects a raw Unix stream and performs the handshake by hand.
fn raw_client(addr: &LinkAddr) -> UnixStream {
    let LinkAddr::Unix(path) = addr else {
        panic!("{addr}")
    };
    let mut s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(GUARD)).unwrap();
    let hello = HandshakeMessage::Hello(Hello::new("raw")).to_vec();
    s.write_all(&Frame::new(ChannelId::CONTROL, hello).encode().unwrap())
        .unwrap();
    let mut dec = hv_link::FrameDecoder::new();
    let frame = read_frame(&mut s, &mut dec).expect("welcome");
    assert!(matches!(
        HandshakeMessage::parse(&frame.payload),
        Ok(HandshakeMessage::Welcome(_))
    ));
    s
}

fn read_frame(s: &mut UnixStream, dec: &mut hv_link::FrameDecoder) -> Option<Frame> {
    loop {
        if let Some(f) = dec.next_frame().unwrap() {
            return Some(f);
        }
        if dec.read_from(s).unwrap() == 0 {
            return None;
        }
    }
}

/// Reads until the agent closes the stream; returns the frames it sent.
fn read_to_end(s: &mut UnixStream) -> Vec<Frame> {
    let mut bytes = Vec::new();
    let _ = s.read_to_end(&mut bytes);
    let mut dec = hv_link::FrameDecoder::new();
    dec.push(&bytes);
    let mut out = Vec::new();
    while let Ok(Some(f)) = dec.next_frame() {
        out.push(f);
    }
    out
}

#[test]
fn control_service_answers_and_reports_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let (agent, _events) = empty_agent(tmp.path());
    let sock = tmp.path().join("t.sock");
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let c = LinkClient::connect_with(agent.local_addr(), opts("tool")).unwrap();
    assert_eq!(c.welcome().system, "test");
    assert!(c.welcome().has("trace"), "trace is offered");
    let info = c.system_info().unwrap();
    assert_eq!(
        (info.system.as_str(), info.version.as_str()),
        ("test", env!("CARGO_PKG_VERSION"))
    );
    assert!(c.partitions().unwrap().is_empty());
    let code = |e: ClientError| e.rpc_code();
    assert_eq!(
        code(c.pause("nope").unwrap_err()),
        Some(codes::UNKNOWN_PARTITION)
    );
    assert_eq!(
        code(c.resume("nope").unwrap_err()),
        Some(codes::UNKNOWN_PARTITION)
    );
    assert_eq!(
        code(c.reset("nope").unwrap_err()),
        Some(codes::UNKNOWN_PARTITION)
    );
    assert_eq!(
        code(c.inject_irq("nope", 0, 40).unwrap_err()),
        Some(codes::UNKNOWN_PARTITION)
    );
    assert_eq!(
        code(c.call("no.such", Value::Null).unwrap_err()),
        Some(codes::METHOD_NOT_FOUND)
    );
    assert_eq!(
        code(c.call("partition.pause", json!({"x": 1})).unwrap_err()),
        Some(codes::INVALID_PARAMS)
    );
    assert_eq!(
        code(
            c.call("channel.open", json!({"name": "gdb:bad name"}))
                .unwrap_err()
        ),
        Some(codes::INVALID_PARAMS)
    );
    assert_eq!(
        code(c.open_channel(&ChannelName::gdb("ghost")).unwrap_err()),
        Some(codes::UNKNOWN_PARTITION)
    );
    assert_eq!(
        code(c.open_channel(&ChannelName::console("ghost")).unwrap_err()),
        Some(codes::UNKNOWN_PARTITION)
    );
    let tr = c.open_channel(&ChannelName::Trace).unwrap();
    match hv_link::trace::decode_chunk(&tr.recv().unwrap()).unwrap().0 {
        hv_link::trace::Chunk::Header(h) => {
            assert_eq!(h.system, "test");
            assert!(h.partitions.is_empty());
            assert!(h.clock.tsc_khz > 0);
        }
        other => panic!("the header first, got {other:?}"),
    }
    tr.close().unwrap();
    c.call("trace.start", json!({})).unwrap();
    c.call("trace.start", Value::Null).unwrap();
    c.call("trace.stop", Value::Null).unwrap();
    assert_eq!(
        code(
            c.call("trace.start", json!({"classes": ["nope"]}))
                .unwrap_err()
        ),
        Some(codes::INVALID_PARAMS)
    );
    assert_eq!(
        code(
            c.call("trace.start", json!({"partitions": ["ghost"]}))
                .unwrap_err()
        ),
        Some(codes::UNKNOWN_PARTITION)
    );
    let stats = c
        .call_typed::<hv_link::control::PartitionsStatsMethod>(&())
        .unwrap();
    assert!(stats.partitions.is_empty());
    assert_eq!(
        code(c.call("channel.close", json!({"id": 9})).unwrap_err()),
        Some(codes::UNKNOWN_CHANNEL)
    );
    c.subscribe_events().unwrap();
    c.call("events.unsubscribe", Value::Null).unwrap();
    assert_eq!(agent.clients(), 1);
    drop(c);
    agent.shutdown();
    assert!(!sock.exists(), "socket file removed on shutdown");
}

#[test]
fn malformed_frames_close_only_that_connection() {
    let tmp = tempfile::tempdir().unwrap();
    let (agent, _events) = empty_agent(tmp.path());
    let addr = agent.local_addr().clone();
    let bystander = LinkClient::connect_with(&addr, opts("bystander")).unwrap();

    // Bad magic after a good handshake: a JSON-RPC error saying why, then the close.
    let mut s = raw_client(&addr);
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let frames = read_to_end(&mut s);
    let last = frames.last().expect("an error before the close");
    let Ok(Message::Response(r)) = Message::parse(&last.payload) else {
        panic!("{last:?}")
    };
    let e = r.outcome.unwrap_err();
    assert!(
        e.message.contains("malformed frame") && e.message.contains("magic"),
        "{e:?}"
    );

    // Oversized length.
    let mut s = raw_client(&addr);
    let mut h = hv_link::frame::FrameHeader::new(ChannelId(1), 0).encode();
    h[8..12].copy_from_slice(&(hv_link::MAX_PAYLOAD + 1).to_le_bytes());
    s.write_all(&h).unwrap();
    let frames = read_to_end(&mut s);
    let text = String::from_utf8_lossy(&frames.last().unwrap().payload).into_owned();
    assert!(text.contains("exceeds the maximum"), "{text}");

    // Invalid JSON-RPC inside valid frames keeps the connection and gets error responses.
    let mut s = raw_client(&addr);
    let mut dec = hv_link::FrameDecoder::new();
    for bad in [
        &b"{"[..],
        b"[]",
        b"{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":\"x\"}",
        b"\xff\xfe",
    ] {
        s.write_all(
            &Frame::new(ChannelId::CONTROL, bad.to_vec())
                .encode()
                .unwrap(),
        )
        .unwrap();
        let f = read_frame(&mut s, &mut dec).expect("error response");
        assert!(matches!(
            Message::parse(&f.payload),
            Ok(Message::Response(Response {
                outcome: Err(_),
                ..
            }))
        ));
    }
    // Data on a channel that is not open is dropped; the connection stays up.
    s.write_all(
        &Frame::new(ChannelId(77), b"$g#67".to_vec())
            .encode()
            .unwrap(),
    )
    .unwrap();
    let req = br#"{"jsonrpc":"2.0","id":5,"method":"system.info"}"#;
    s.write_all(
        &Frame::new(ChannelId::CONTROL, req.to_vec())
            .encode()
            .unwrap(),
    )
    .unwrap();
    let f = read_frame(&mut s, &mut dec).unwrap();
    assert!(String::from_utf8_lossy(&f.payload).contains(r#""system":"test""#));
    drop(s);

    // Garbage before any hello, a wrong version and a hello on the wrong channel.
    let LinkAddr::Unix(path) = &addr else {
        unreachable!()
    };
    let mut s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(GUARD)).unwrap();
    s.write_all(b"+$qSupported#37").unwrap();
    assert!(read_to_end(&mut s).is_empty());
    let mut old = Hello::new("old");
    old.version = 99;
    let mut conn = hv_link::connect(&addr).unwrap();
    let e = client_handshake(&mut conn, &old, Some(GUARD)).unwrap_err();
    assert!(e.to_string().contains("version mismatch"), "{e}");
    let mut s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(GUARD)).unwrap();
    let hello = HandshakeMessage::Hello(Hello::new("x")).to_vec();
    s.write_all(&Frame::new(ChannelId(3), hello).encode().unwrap())
        .unwrap();
    // Refused with the reason (a frame the peer can read), then closed.
    let frames = read_to_end(&mut s);
    assert!(
        matches!(&frames[..], [f] if f.channel == ChannelId::CONTROL && matches!(
            HandshakeMessage::parse(&f.payload),
            Ok(HandshakeMessage::Refused(r)) if r.message.contains("channel 3"))),
        "{frames:?}"
    );

    assert!(agent.malformed_connections() >= 2);
    assert_eq!(bystander.system_info().unwrap().system, "test");
    agent.shutdown();
    // The bystander learns that the agent is gone.
    assert!(matches!(
        bystander.system_info(),
        Err(ClientError::Closed { .. } | ClientError::Transport(_))
    ));
}

#[test]
fn many_clients_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (agent, _events) = empty_agent(tmp.path());
    let addr = agent.local_addr().clone();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let c = LinkClient::connect_with(&addr, opts(&format!("c{i}"))).unwrap();
                for _ in 0..20 {
                    assert_eq!(c.system_info().unwrap().system, "test");
                }
                c
            })
        })
        .collect();
    let clients: Vec<LinkClient> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(agent.clients(), 8);
    drop(clients);
    agent.shutdown();
}

#[test]
fn tcp_link_requires_the_token() {
    let tmp = tempfile::tempdir().unwrap();
    let token_file = tmp.path().join("link.token");
    let config = AgentConfig {
        link: Some("tcp:127.0.0.1:0".into()),
        token_file: Some(token_file.clone()),
        ..AgentConfig::default()
    };
    let (_tx, rx) = crossbeam_channel::unbounded();
    let agent =
        Agent::start_parts("tcp-test", Vec::new(), rx, &config, AgentOptions::default()).unwrap();
    let LinkAddr::Tcp(sa) = agent.local_addr().clone() else {
        panic!()
    };
    assert_ne!(sa.port(), 0);
    assert_eq!(agent.token_file(), Some(token_file.as_path()));
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let bad = ClientOptions {
        token: Some("wrong".into()),
        ..opts("intruder")
    };
    let e = LinkClient::connect_with(agent.local_addr(), bad).unwrap_err();
    assert!(e.to_string().contains("token"), "{e}");
    let good = ClientOptions {
        token_file: Some(token_file.clone()),
        ..opts("tool")
    };
    let c = LinkClient::connect_with(agent.local_addr(), good).unwrap();
    assert_eq!(c.system_info().unwrap().system, "tcp-test");
    drop(c);
    agent.shutdown();
    assert!(!token_file.exists(), "token file removed on shutdown");
}

#[test]
fn a_bad_link_address_is_a_clear_error() {
    let (_tx, rx) = crossbeam_channel::unbounded();
    let config = AgentConfig {
        link: Some("carrier-pigeon".into()),
        ..AgentConfig::default()
    };
    let e = Agent::start_parts(
        "x",
        Vec::new(),
        rx.clone(),
        &config,
        AgentOptions::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("carrier-pigeon"), "{e}");
    let config = AgentConfig {
        link: Some("tcp:0.0.0.0:0".into()),
        ..AgentConfig::default()
    };
    let e = Agent::start_parts(
        "x",
        Vec::new(),
        rx.clone(),
        &config,
        AgentOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(e, super::AgentError::Bind { .. }), "{e:?}");
    // A second agent on a live socket.
    let tmp = tempfile::tempdir().unwrap();
    let (first, _) = empty_agent(tmp.path());
    let config = AgentConfig {
        link: Some(first.local_addr().to_string()),
        ..AgentConfig::default()
    };
    let e = Agent::start_parts("x", Vec::new(), rx, &config, AgentOptions::default()).unwrap_err();
    let text = format!("{e}: {}", std::error::Error::source(&e).unwrap());
    assert!(text.contains("already serving"), "{text}");
}

#[test]
fn pty_link_serves_and_shuts_down() {
    let (_tx, rx) = crossbeam_channel::unbounded();
    let config = AgentConfig {
        link: Some("pty".into()),
        ..AgentConfig::default()
    };
    let agent =
        Agent::start_parts("pty-test", Vec::new(), rx, &config, AgentOptions::default()).unwrap();
    let LinkAddr::Serial(slave) = agent.local_addr().clone() else {
        panic!()
    };
    assert!(slave.starts_with("/dev/pts"), "{slave:?}");
    let c = LinkClient::connect_with(agent.local_addr(), opts("serial-tool")).unwrap();
    assert_eq!(c.system_info().unwrap().system, "pty-test");
    drop(c);
    agent.shutdown();
}

// ---- with a real partition (needs /dev/kvm) ----

fn boot_control(dir: &Path) -> hv_core::System {
    let toml = format!(
        "[system]\nname = \"agent-test\"\n[[partition]]\nname = \"control\"\nimage = \"{}/control.elf\"\n",
        guests::GUESTS_DIR
    );
    let path = dir.join("system.toml");
    std::fs::write(&path, toml).unwrap();
    let config = hv_config::SystemConfig::load(&path).unwrap();
    let mut system = hv_core::System::new(config).unwrap();
    system.start().unwrap();
    system
}

/// `boot_control` with an agent on a Unix socket in `dir`.
fn control_with_agent(dir: &Path) -> (hv_core::System, Agent) {
    let system = boot_control(dir);
    let config = AgentConfig {
        link: Some(format!("unix:{}", dir.join("a.sock").display())),
        ..AgentConfig::default()
    };
    let agent = Agent::start(&system, &config, AgentOptions::default()).unwrap();
    (system, agent)
}

#[test]
fn gdb_and_console_channels_on_a_real_partition() {
    if !kvm_or_skip("gdb_and_console_channels_on_a_real_partition") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (system, agent) = control_with_agent(tmp.path());
    let a = LinkClient::connect_with(agent.local_addr(), opts("tool-a")).unwrap();
    let b = LinkClient::connect_with(agent.local_addr(), opts("tool-b")).unwrap();

    let list = b.partitions().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].name, "control");
    assert_eq!(list[0].vcpus.len(), 1);
    assert!(list[0].image.ends_with("control.elf"));
    assert_eq!(
        b.open_channel(&ChannelName::gdb_vcpu("control", 5))
            .unwrap_err()
            .rpc_code(),
        Some(codes::UNKNOWN_VCPU)
    );
    assert_eq!(
        b.inject_irq("control", 0, 3).unwrap_err().rpc_code(),
        Some(codes::INVALID_PARAMS)
    );
    b.inject_irq("control", 0, 200).unwrap();

    // Console: output arrives.
    let console = b.open_channel(&ChannelName::console("control")).unwrap();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("control: uptime") {
        seen.extend(
            console
                .receiver()
                .recv_timeout(GUARD)
                .expect("console output"),
        );
    }

    // gdb: A owns it, B is told who.
    let gdb = a.open_channel(&ChannelName::gdb("control")).unwrap();
    let e = b
        .open_channel(&ChannelName::gdb_vcpu("control", 0))
        .unwrap_err();
    assert_eq!(e.rpc_code(), Some(codes::CHANNEL_OWNED));
    assert!(e.to_string().contains("tool-a"), "{e}");
    gdb.send(b"$?#3f").unwrap();
    let mut reply = Vec::new();
    while !complete_packet(&reply) {
        reply.extend(gdb.receiver().recv_timeout(GUARD).expect("gdb reply"));
    }
    let text = String::from_utf8_lossy(&reply).into_owned();
    assert!(text.contains("$T") || text.contains("$S"), "{text}");
    // Closing detaches and releases ownership before the reply: B may take over at once.
    gdb.close().unwrap();
    let gdb_b = b
        .open_channel(&ChannelName::gdb_vcpu("control", 0))
        .unwrap();
    drop(gdb_b);
    // A dropped connection also detaches.
    let gdb = a
        .open_channel(&ChannelName::gdb("control"))
        .unwrap_or_else(|e| {
            // B's fire-and-forget close may still be in flight.
            assert_eq!(e.rpc_code(), Some(codes::CHANNEL_OWNED));
            retry_open(&a, &ChannelName::gdb("control"))
        });
    drop(gdb);
    drop(a);
    let gdb_b = retry_open(&b, &ChannelName::gdb("control"));
    gdb_b.close().unwrap();
    let events = b.notifications().clone();
    b.subscribe_events().unwrap();
    b.pause("control").unwrap();
    // The debugger's attach and detach above are announced too (stopped in the debugger, then
    // running) and may arrive after the subscription: skip them; a missing pause times out.
    let p = loop {
        let n = events.recv_timeout(GUARD).unwrap();
        let p = parse_event::<PartitionStateChanged>(&n).unwrap().unwrap();
        if p.detail.is_none() || p.state.kind() == "paused" {
            break p;
        }
    };
    assert_eq!(
        (p.partition.as_str(), p.state.kind()),
        ("control", "paused")
    );
    b.resume("control").unwrap();
    assert_eq!(
        b.partitions().unwrap()[0].state,
        hv_link::PartitionState::Running
    );
    drop(console);
    drop(b);
    agent.shutdown();
    drop(system);
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

/// Opens `name`, retrying while another connection's asynchronous detach releases it.
fn retry_open(c: &LinkClient, name: &ChannelName) -> hv_link::ChannelHandle {
    loop {
        match c.open_channel(name) {
            Ok(h) => return h,
            Err(e) if e.rpc_code() == Some(codes::CHANNEL_OWNED) => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn trace_requests_of_several_tools_add_up() {
    if !kvm_or_skip("trace_requests_of_several_tools_add_up") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (system, agent) = control_with_agent(tmp.path());
    let classes = || system.handles()[0].vcpus()[0].trace.classes();
    let a = LinkClient::connect_with(agent.local_addr(), opts("tool-a")).unwrap();
    let b = LinkClient::connect_with(agent.local_addr(), opts("tool-b")).unwrap();
    use hv_core::trace::class;
    a.call("trace.start", json!({"classes": ["irq"]})).unwrap();
    b.call("trace.start", json!({"classes": ["sched"]}))
        .unwrap();
    assert_eq!(classes(), class::IRQ | class::SCHED);
    // One tool stopping leaves the other's classes on.
    b.call("trace.stop", Value::Null).unwrap();
    assert_eq!(classes(), class::IRQ);
    // A new start replaces that tool's own request.
    a.call("trace.start", json!({"classes": ["marker"]}))
        .unwrap();
    assert_eq!(classes(), class::MARKER);
    b.call("trace.start", json!({"partitions": ["control"]}))
        .unwrap();
    assert_eq!(classes(), class::ALL);
    // A connection that goes away withdraws its request.
    drop(b);
    assert!(
        wait_for(|| classes() == class::MARKER),
        "classes {:#x}",
        classes()
    );
    drop(a);
    assert!(wait_for(|| classes() == 0), "classes {:#x}", classes());
    agent.shutdown();
    drop(system);
}

/// Polls `f` for up to 10 s (connection teardown happens on the agent's threads).
fn wait_for(f: impl Fn() -> bool) -> bool {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    f()
}
