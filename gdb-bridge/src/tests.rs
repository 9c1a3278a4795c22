//! Tests of the bridge against a fake agent built from hv-link's server helpers (no KVM):
//! port plan and table, forwarding both ways, refusals, busy ports, link loss.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use hv_link::control::{
    ChannelCloseParams, ChannelClosed, ChannelClosedParams, ChannelOpenParams, ChannelOpenResult,
};
use hv_link::rpc::Message;
use hv_link::server::{ClientId, send_error, send_event, send_result};
use hv_link::{
    ChannelClaims, ChannelId, ChannelName, ChannelTable, LinkAddr, Listener, PartitionInfo,
    PartitionState, RpcError, ServerConfig, VcpuInfo, VcpuState, accept_handshake,
};

use super::forward::{PacketCounter, error_packet, gdb_packet};
use super::*;

/// Safety net for reads in tests (no assertion depends on it).
const GUARD: Duration = Duration::from_secs(60);

fn info(name: &str, vcpus: u32) -> PartitionInfo {
    PartitionInfo {
        id: 0,
        name: name.into(),
        state: PartitionState::Running,
        vcpus: (0..vcpus)
            .map(|index| VcpuInfo {
                index,
                state: VcpuState::Running,
                device: None,
            })
            .collect(),
        image: format!("/g/{name}.elf"),
    }
}

#[test]
fn port_plan_and_table_are_stable() {
    let parts = [info("control", 1), info("telemetry", 1), info("worker", 2)];
    let plan = port_plan(&parts, 3333).unwrap();
    let ports: Vec<(Option<u32>, u16)> = plan.iter().map(|e| (e.vcpu, e.port)).collect();
    assert_eq!(
        ports,
        [
            (None, 3333),
            (Some(0), 3433),
            (None, 3334),
            (Some(0), 3449),
            (None, 3335),
            (Some(0), 3465),
            (Some(1), 3466)
        ]
    );
    assert_eq!(
        format_port_table(&plan),
        "partition  vcpu  port   image\n\
         control    all   3333   /g/control.elf\n\
         control    0     3433   /g/control.elf\n\
         telemetry  all   3334   /g/telemetry.elf\n\
         telemetry  0     3449   /g/telemetry.elf\n\
         worker     all   3335   /g/worker.elf\n\
         worker     0     3465   /g/worker.elf\n\
         worker     1     3466   /g/worker.elf\n"
    );
    assert_eq!(plan[6].channel(), ChannelName::gdb_vcpu("worker", 1));
    assert_eq!(plan[0].describe(), "gdb for partition control");
    assert_eq!(partition_port(65535, 1), None);
    assert_eq!(vcpu_port(65400, 2, 0), Some(65532));
    assert_eq!(vcpu_port(65440, 2, 0), None);
    let e = port_plan(&parts, 65436).unwrap_err();
    assert!(e.to_string().contains("vCPU 0 of partition control"), "{e}");
    let e = port_plan(&[info("big", 17)], 3333).unwrap_err();
    assert!(e.to_string().contains("17 vCPUs"), "{e}");
}

#[test]
fn gdb_packets_and_errors() {
    assert_eq!(gdb_packet(b"OK"), b"$OK#9a");
    assert_eq!(error_packet("a#b$c}d*e\u{e9}"), gdb_packet(b"E.a?b?c?d?e?"));
    let mut c = PacketCounter::default();
    assert_eq!(c.feed(b"+$qSupported:multiprocess+#c"), 0);
    assert_eq!(c.feed(b"6"), 1);
    assert_eq!(c.feed(b"+\x03$?#3f$g#67-"), 2);
}

/// What the fake agent saw.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Opened(ChannelName),
    Closed(ChannelName),
}

struct FakeAgent {
    addr: LinkAddr,
    seen: Receiver<Seen>,
    /// The writer of every open connection, by connection number.
    stop: Arc<Mutex<HashMap<u64, hv_link::FrameWriter>>>,
    _dir: tempfile::TempDir,
    _listener_thread: std::thread::JoinHandle<()>,
}

impl FakeAgent {
    /// Serves partitions `control` (1 vCPU) and `worker` (2 vCPUs); gdb data is echoed
    /// upper-cased; `claims` may be pre-loaded by another "client".
    fn start(claims: ChannelClaims) -> FakeAgent {
        let dir = tempfile::tempdir().unwrap();
        let addr = LinkAddr::Unix(dir.path().join("fake.sock"));
        let listener = Listener::bind(&addr).unwrap();
        let (tx, seen) = crossbeam_channel::unbounded();
        let stop: Arc<Mutex<HashMap<u64, hv_link::FrameWriter>>> = Arc::default();
        let writers = stop.clone();
        let t = std::thread::spawn(move || {
            let cfg = ServerConfig::new("fake", "fake-system");
            for number in 0u64.. {
                let Ok(mut conn) = listener.accept() else {
                    return;
                };
                let Ok(acc) = accept_handshake(&mut conn, &cfg) else {
                    return;
                };
                writers
                    .lock()
                    .unwrap()
                    .insert(number, conn.writer().clone());
                let claims = claims.clone();
                let tx = tx.clone();
                let writers = writers.clone();
                std::thread::spawn(move || {
                    serve(conn, ChannelTable::new(&acc, claims), &tx);
                    // Closed: forget its writer (and its file descriptor).
                    writers.lock().unwrap().remove(&number);
                });
            }
        });
        FakeAgent {
            addr,
            seen,
            stop,
            _dir: dir,
            _listener_thread: t,
        }
    }

    /// Drop every connection (as if the hypervisor stopped).
    fn kill_links(&self) {
        for w in self.stop.lock().unwrap().values() {
            w.shutdown();
        }
    }
}

fn serve(conn: hv_link::Connection, mut table: ChannelTable, seen: &Sender<Seen>) {
    let (mut reader, w) = conn.split();
    while let Ok(Some(f)) = reader.recv_frame() {
        if f.channel != ChannelId::CONTROL {
            if f.payload.windows(3).any(|w| w == b"$D#") {
                // Like the agent on gdb's detach: OK, let the guest go, then say so.
                w.send_frame(f.channel, b"+$OK#9a").unwrap();
                if let Ok(name) = table.close(f.channel) {
                    seen.send(Seen::Closed(name)).unwrap();
                    let reason = "gdb detached".to_owned();
                    let params = ChannelClosedParams {
                        id: f.channel,
                        reason,
                    };
                    send_event::<ChannelClosed>(&w, &params).unwrap();
                }
                continue;
            }
            w.send_frame(f.channel, &f.payload.to_ascii_uppercase())
                .unwrap();
            continue;
        }
        let (id, method, params) = match Message::parse(&f.payload) {
            Ok(Message::Request(r)) => (Some(r.id), r.method, r.params),
            Ok(Message::Notification(n)) => (None, n.method, n.params),
            _ => continue,
        };
        match method.as_str() {
            "partitions.list" => {
                send_result(
                    &w,
                    id.as_ref().unwrap(),
                    &[info("control", 1), info("worker", 2)],
                )
                .unwrap();
            }
            "channel.open" => {
                let p: ChannelOpenParams = serde_json::from_value(params).unwrap();
                match table.open(p.name.clone()) {
                    Ok(c) => {
                        seen.send(Seen::Opened(p.name)).unwrap();
                        send_result(&w, id.as_ref().unwrap(), &ChannelOpenResult { id: c })
                            .unwrap();
                    }
                    Err(e) => send_error(&w, id.as_ref().unwrap(), &e).unwrap(),
                }
            }
            "channel.close" => {
                let p: ChannelCloseParams = serde_json::from_value(params).unwrap();
                if let Ok(name) = table.close(p.id) {
                    seen.send(Seen::Closed(name)).unwrap();
                }
                if let Some(id) = id {
                    send_result(&w, &id, &()).unwrap();
                }
            }
            m => {
                if let Some(id) = id {
                    send_error(&w, &id, &RpcError::method_not_found(m)).unwrap();
                }
            }
        }
    }
}

/// A base port whose whole plan (2 partitions, 3 vCPUs) is free right now.
fn free_base() -> u16 {
    // Different candidates for every call, so tests running in parallel do not pick the same.
    static CALLS: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let seed = (std::process::id() as u16)
        .wrapping_mul(31)
        .wrapping_add(call.wrapping_mul(7919));
    for i in 0..200u16 {
        let base = 20000 + seed.wrapping_add(i.wrapping_mul(211)) % 40000;
        let plan = port_plan(&[info("control", 1), info("worker", 2)], base).unwrap();
        if plan
            .iter()
            .all(|e| TcpListener::bind((Ipv4Addr::LOCALHOST, e.port)).is_ok())
        {
            return base;
        }
    }
    panic!("no free base port");
}

fn start_bridge(addr: &LinkAddr) -> (Bridge, Receiver<BridgeEvent>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let events: EventSink = Arc::new(move |e: &BridgeEvent| {
        let _ = tx.send(e.clone());
    });
    loop {
        let options = BridgeOptions {
            events: Some(events.clone()),
            ..BridgeOptions::default()
        };
        match Bridge::start(addr, free_base(), options) {
            Ok(b) => return (b, rx),
            // Someone took a port between the check and the bind: try another base.
            Err(BridgeError::PortInUse { .. }) => continue,
            Err(e) => panic!("{e}"),
        }
    }
}

fn port_of(bridge: &Bridge, partition: &str, vcpu: Option<u32>) -> u16 {
    bridge
        .ports()
        .iter()
        .find(|e| e.partition == partition && e.vcpu == vcpu)
        .unwrap()
        .port
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    s.set_read_timeout(Some(GUARD)).unwrap();
    s
}

/// Reads from a refused gdb connection until the bridge hangs up.
fn refused_reply(mut s: TcpStream) -> String {
    s.write_all(b"+$qSupported:multiprocess+#c6").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn forwards_both_ways_and_closes_the_channel_when_gdb_leaves() {
    let agent = FakeAgent::start(ChannelClaims::new());
    let (bridge, events) = start_bridge(&agent.addr);
    assert_eq!(bridge.system(), "fake-system");
    assert_eq!(bridge.ports().len(), 5);
    assert!(bridge.port_table().starts_with("partition  vcpu  port"));

    let port = port_of(&bridge, "worker", Some(1));
    let mut gdb = connect(port);
    assert_eq!(
        agent.seen.recv_timeout(GUARD).unwrap(),
        Seen::Opened(ChannelName::gdb_vcpu("worker", 1))
    );
    assert!(
        matches!(events.recv_timeout(GUARD).unwrap(), BridgeEvent::Attached { port: p, .. } if p == port)
    );
    // A large burst comes back intact, in order.
    let big: Vec<u8> = (0..200_000u32)
        .map(|i| b"abcdefgh"[i as usize % 8])
        .collect();
    let mut w = gdb.try_clone().unwrap();
    let expect = big.to_ascii_uppercase();
    let writer = std::thread::spawn(move || w.write_all(&big).unwrap());
    let mut back = vec![0u8; expect.len()];
    gdb.read_exact(&mut back).unwrap();
    writer.join().unwrap();
    assert!(back == expect);

    // The same guest through another port of this bridge: refused with the reason.
    let reply = refused_reply(connect(port_of(&bridge, "worker", None)));
    assert!(reply.starts_with("+$E."), "{reply}");
    assert!(
        reply.contains("already being debugged through port"),
        "{reply}"
    );
    assert!(matches!(
        events.recv_timeout(GUARD).unwrap(),
        BridgeEvent::Refused { .. }
    ));
    // Another guest is independent.
    let other = connect(port_of(&bridge, "control", None));
    assert_eq!(
        agent.seen.recv_timeout(GUARD).unwrap(),
        Seen::Opened(ChannelName::gdb("control"))
    );

    // gdb leaves; the bridge hangs up once the channel is closed.
    let hang_up = |mut s: TcpStream| {
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
    };
    hang_up(gdb);
    assert_eq!(
        agent.seen.recv_timeout(GUARD).unwrap(),
        Seen::Closed(ChannelName::gdb_vcpu("worker", 1))
    );
    hang_up(other);
    assert_eq!(
        agent.seen.recv_timeout(GUARD).unwrap(),
        Seen::Closed(ChannelName::gdb("control"))
    );

    // When gdb sees the hang-up, the guest is already free: reconnecting at once works.
    for _ in 0..20 {
        let mut s = connect(port);
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
        assert!(matches!(
            agent.seen.recv_timeout(GUARD).unwrap(),
            Seen::Opened(_)
        ));
        assert!(matches!(
            agent.seen.recv_timeout(GUARD).unwrap(),
            Seen::Closed(_)
        ));
    }
    bridge.shutdown();
}

#[test]
fn a_gdb_that_detaches_can_reattach_at_once() {
    let agent = FakeAgent::start(ChannelClaims::new());
    let (bridge, events) = start_bridge(&agent.addr);
    for port in [
        port_of(&bridge, "worker", None),
        port_of(&bridge, "worker", Some(1)),
    ] {
        // The agent ends each session on gdb's `D`; the bridge hangs up after releasing the
        // guest, so a gdb that reconnects the moment it sees the hang-up is never refused.
        for cycle in 0..100 {
            let mut s = connect(port);
            s.write_all(b"$D#44").unwrap();
            let mut back = Vec::new();
            s.read_to_end(&mut back).unwrap();
            let back = String::from_utf8_lossy(&back);
            assert_eq!(back, "+$OK#9a", "cycle {cycle}: {back}");
            assert!(matches!(
                agent.seen.recv_timeout(GUARD).unwrap(),
                Seen::Opened(_)
            ));
            assert!(matches!(
                agent.seen.recv_timeout(GUARD).unwrap(),
                Seen::Closed(_)
            ));
        }
    }
    assert!(
        !events
            .try_iter()
            .any(|e| matches!(e, BridgeEvent::Refused { .. })),
        "a reconnect was refused"
    );
    bridge.shutdown();
}

/// A stable in-process fuzz loop over the real bridge: sessions of random gdb bytes, each
/// ended at a random point by the agent (gdb's `D`) or by gdb (a hang-up), each followed at
/// once by the next connection to the same guest, which must never be refused (the bridge once
/// hung up before releasing the guest). `HVDK_FUZZ_ITERATIONS` (default 300),
/// `HVDK_FUZZ_SECONDS` (a time limit for long local runs) and `HVDK_FUZZ_SEED` set the run; the
/// seed and the iterations done are printed.
#[test]
fn random_sessions_with_immediate_reconnects_are_never_refused() {
    let seconds: Option<u64> = std::env::var("HVDK_FUZZ_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok());
    let deadline = seconds.map(|s| std::time::Instant::now() + Duration::from_secs(s));
    // With a time limit alone, as many as fit in it.
    let iterations: u64 = std::env::var("HVDK_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if seconds.is_some() { u64::MAX } else { 300 });
    let seed: u64 = std::env::var("HVDK_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| u64::from(std::process::id()) | 1);
    eprintln!("bridge reconnect fuzz: seed {seed}, up to {iterations} iterations");
    let mut x = seed;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let agent = FakeAgent::start(ChannelClaims::new());
    let (bridge, events) = start_bridge(&agent.addr);
    let ports = [
        port_of(&bridge, "worker", None),
        port_of(&bridge, "worker", Some(1)),
        port_of(&bridge, "control", None),
    ];
    let pieces: [&[u8]; 6] = [b"$g#67", b"$m0,4#fd", b"+", b"-", b"\x03", b"$?#3f"];
    let open_files = || std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
    let mut files_at_start = None;
    let mut done = 0;
    for i in 0..iterations {
        if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            break;
        }
        done += 1;
        if i == 20 {
            files_at_start = Some(open_files());
        }
        let port = ports[(next() % 3) as usize];
        let mut s = connect(port);
        let mut sent = Vec::new();
        for _ in 0..next() % 6 {
            if next() % 2 == 0 {
                sent.extend_from_slice(pieces[(next() % 6) as usize]);
            } else {
                // Random bytes, without `$` (a `$D#` would end the session mid-stream).
                sent.extend(
                    (0..next() % 40)
                        .map(|_| (next() as u8).max(1))
                        .filter(|b| *b != b'$'),
                );
            }
        }
        if !sent.is_empty() {
            s.write_all(&sent).unwrap();
        }
        let by_agent = next() % 2 == 0;
        if by_agent {
            s.write_all(b"$D#44").unwrap();
        } else {
            s.shutdown(std::net::Shutdown::Write).unwrap();
        }
        let mut back = Vec::new();
        s.read_to_end(&mut back).unwrap();
        if by_agent {
            assert!(
                back.ends_with(b"+$OK#9a"),
                "iteration {i} (seed {seed}): {:?}",
                String::from_utf8_lossy(&back)
            );
        }
        assert!(
            !back.windows(3).any(|w| w == b"$E."),
            "iteration {i} (seed {seed}): refused: {:?}",
            String::from_utf8_lossy(&back)
        );
        if let Some(e) = events
            .try_iter()
            .find(|e| matches!(e, BridgeEvent::Refused { .. }))
        {
            panic!("iteration {i} (seed {seed}): {e}");
        }
    }
    eprintln!("bridge reconnect fuzz: {done} iterations, none refused");
    // Nothing leaks a file descriptor per session (a long run once ran out of them).
    if let Some(start) = files_at_start {
        let settled = wait_until_files(|| open_files() <= start + 16);
        assert!(
            settled,
            "open files grew from {start} to {} over {done} sessions",
            open_files()
        );
    }
    bridge.shutdown();
}

/// Polls `f` for a while (threads of closed sessions end asynchronously).
fn wait_until_files(f: impl Fn() -> bool) -> bool {
    for _ in 0..200 {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

#[test]
fn bridge_corpus_then_reconnect_at_once() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 6,
        "{} has {} files",
        dir.display(),
        files.len()
    );
    let agent = FakeAgent::start(ChannelClaims::new());
    let (bridge, events) = start_bridge(&agent.addr);
    let port = port_of(&bridge, "worker", Some(1));
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let input = std::fs::read(&path).unwrap();
        let mut s = connect(port);
        s.write_all(&input).unwrap();
        if name.starts_with("gdb_ends_") {
            s.shutdown(std::net::Shutdown::Write).unwrap();
        }
        let mut back = Vec::new();
        s.read_to_end(&mut back).unwrap();
        for again in 0..3 {
            let mut s = connect(port);
            s.shutdown(std::net::Shutdown::Write).unwrap();
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).unwrap();
            assert!(
                rest.is_empty(),
                "{name}, reconnect {again}: {:?}",
                String::from_utf8_lossy(&rest)
            );
        }
        if let Some(e) = events
            .try_iter()
            .find(|e| matches!(e, BridgeEvent::Refused { .. }))
        {
            panic!("{name}: {e}");
        }
    }
    bridge.shutdown();
}

#[test]
fn a_guest_owned_by_another_client_is_refused_with_its_name() {
    let claims = ChannelClaims::new();
    let mut other = ChannelTable::new(
        &hv_link::Accepted {
            client_id: ClientId::next(),
            hello: hv_link::Hello::new("vscode-hv-dap"),
            welcome: hv_link::Welcome {
                protocol: "hv-link".into(),
                version: 1,
                server: "fake".into(),
                system: "fake-system".into(),
                capabilities: vec![],
            },
        },
        claims.clone(),
    );
    other.open(ChannelName::gdb("control")).unwrap();
    let agent = FakeAgent::start(claims);
    let (bridge, events) = start_bridge(&agent.addr);
    let reply = refused_reply(connect(port_of(&bridge, "control", Some(0))));
    assert!(
        reply.contains("owned by another client (vscode-hv-dap)"),
        "{reply}"
    );
    match events.recv_timeout(GUARD).unwrap() {
        BridgeEvent::Refused { reason, .. } => {
            assert!(reason.contains("vscode-hv-dap"), "{reason}")
        }
        e => panic!("{e:?}"),
    }
    bridge.shutdown();
}

#[test]
fn a_taken_port_is_named() {
    let agent = FakeAgent::start(ChannelClaims::new());
    let base = free_base();
    let _squatter = TcpListener::bind((Ipv4Addr::LOCALHOST, base + 116)).unwrap();
    let e = Bridge::start(&agent.addr, base, BridgeOptions::default()).unwrap_err();
    assert!(
        matches!(e, BridgeError::PortInUse { port, .. } if port == base + 116),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(
        text.contains(&format!("port {}", base + 116))
            && text.contains("vCPU 0 of partition worker"),
        "{text}"
    );
    // Nothing stays bound after the failure.
    assert!(TcpListener::bind((Ipv4Addr::LOCALHOST, base)).is_ok());
}

#[test]
fn no_agent_is_a_connect_error() {
    let dir = tempfile::tempdir().unwrap();
    let e = Bridge::start(
        &LinkAddr::Unix(dir.path().join("none.sock")),
        3333,
        BridgeOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(e, BridgeError::Connect { .. }), "{e:?}");
    assert!(e.to_string().contains("none.sock"), "{e}");
}

#[test]
fn losing_the_link_hangs_up_on_gdb_and_is_reported() {
    let agent = FakeAgent::start(ChannelClaims::new());
    let (bridge, events) = start_bridge(&agent.addr);
    let mut gdb = connect(port_of(&bridge, "control", None));
    assert!(matches!(
        agent.seen.recv_timeout(GUARD).unwrap(),
        Seen::Opened(_)
    ));
    // Attached: the bridge has the agent's answer (the link is not cut mid-open).
    assert!(matches!(
        events.recv_timeout(GUARD).unwrap(),
        BridgeEvent::Attached { .. }
    ));
    let closed = bridge.link_closed();
    agent.kill_links();
    let mut rest = Vec::new();
    let _ = gdb.read_to_end(&mut rest);
    assert!(closed.recv().is_err(), "disconnects, never receives");
    bridge.wait();
    let all: Vec<BridgeEvent> = events.try_iter().collect();
    assert!(all.contains(&BridgeEvent::LinkClosed), "{all:?}");
    // New debuggers are turned away clearly.
    let reply = refused_reply(connect(port_of(&bridge, "worker", None)));
    assert!(reply.contains("host link is closed"), "{reply}");
    bridge.shutdown();
}

#[test]
fn a_serial_link_is_refused_clearly() {
    let link = LinkAddr::Serial("/dev/pts/7".into());
    let e = Bridge::start(&link, 3333, BridgeOptions::default()).unwrap_err();
    assert!(matches!(e, BridgeError::SerialLink(_)), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("serial:/dev/pts/7") && text.contains("unix: or tcp:"),
        "{text}"
    );
}
