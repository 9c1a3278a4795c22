//! gdbstub and our target over the in-memory fake guest (no KVM): the gdb channel corpus,
//! session endings, and software breakpoints of per-vCPU targets.

use std::path::PathBuf;

use hv_core::probe::DebugCaps;

use super::fake::{FAKE_ENTRY, FakeGuest, check_stub_output};
use super::{PACKET_SIZE, Replay, replay};

const TRAPPING: DebugCaps = DebugCaps {
    sw_breakpoints: true,
    data_watchpoints: true,
};
const NOT_TRAPPING: DebugCaps = DebugCaps {
    sw_breakpoints: false,
    data_watchpoints: false,
};

fn pkt(body: &str) -> Vec<u8> {
    let sum = body.bytes().fold(0u8, |a, b| a.wrapping_add(b));
    format!("${body}#{sum:02x}").into_bytes()
}

fn session(packets: &[&str]) -> Vec<u8> {
    packets.iter().flat_map(|p| pkt(p)).collect()
}

/// Replays `input` on a fresh 2-vCPU fake and checks what must hold for any input.
fn run(input: &[u8], scope: Option<u32>, caps: DebugCaps, what: &str) -> (Replay, FakeGuest) {
    let guest = FakeGuest::new("fake", 2, caps);
    let r = replay(guest.clone(), scope, input);
    if let Err(e) = check_stub_output(&r.output) {
        panic!(
            "{what}: malformed stub output ({e}): {:?}",
            String::from_utf8_lossy(&r.output)
        );
    }
    assert!(
        guest.released(),
        "{what}: a vCPU is still stopped or has debug controls after the session"
    );
    (r, guest)
}

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus/gdb");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
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

#[test]
fn corpus_replays_without_panics() {
    let files = corpus();
    assert!(
        files.len() >= 15,
        "tests/corpus/gdb has {} files",
        files.len()
    );
    for (name, input) in &files {
        for scope in [None, Some(0), Some(1)] {
            for caps in [TRAPPING, NOT_TRAPPING] {
                let what = format!(
                    "{name} (scope {scope:?}, int3 traps: {})",
                    caps.sw_breakpoints
                );
                let (r, guest) = run(input, scope, caps, &what);
                if name.starts_with("err_") {
                    assert!(
                        r.ended
                            .as_deref()
                            .is_some_and(|e| e.starts_with("gdb session error")),
                        "{what}: {:?}",
                        r.ended
                    );
                }
                if name.starts_with("session_") {
                    assert!(r.ended.is_some(), "{what}: the session did not end");
                }
                if name.starts_with("alive_") {
                    assert_eq!(r.ended, None, "{what}: the session ended");
                }
                if name.starts_with("nowrite_") {
                    assert!(
                        guest.memory() == FakeGuest::new("fake", 2, caps).memory(),
                        "{what}: guest memory changed"
                    );
                }
            }
        }
    }
}

#[test]
fn sessions_end_with_a_reason() {
    let (r, _) = run(&session(&["?", "D"]), None, TRAPPING, "detach");
    assert_eq!(r.ended.as_deref(), Some("gdb detached"));
    assert!(r.output.windows(3).any(|w| w == b"$OK"), "OK to D");
    let (r, _) = run(&session(&["?", "k"]), Some(1), TRAPPING, "kill");
    assert_eq!(r.ended.as_deref(), Some("gdb killed the session"));
    // A "packet" longer than the buffer is an error, not unbounded memory.
    let mut overflow = b"$m".to_vec();
    overflow.extend(std::iter::repeat_n(b'A', PACKET_SIZE + 1));
    let (r, _) = run(&overflow, None, TRAPPING, "overflow");
    assert!(r.ended.is_some_and(|e| e.contains("error")));
    // Input that runs out: the session was still going (the owner closed it).
    let (r, _) = run(&session(&["?", "g"]), None, TRAPPING, "cut");
    assert_eq!(r.ended, None);
}

/// Reads the byte at the entry point through the stub after setting a breakpoint there.
fn byte_at_entry_with_breakpoint(scope: Option<u32>, caps: DebugCaps) -> (String, FakeGuest) {
    let z0 = format!("Z0,{FAKE_ENTRY:x},1");
    let m = format!("m{FAKE_ENTRY:x},1");
    let (r, guest) = run(&session(&[&z0, &m]), scope, caps, "breakpoint");
    let out = String::from_utf8_lossy(&r.output).into_owned();
    // Replies in order: OK to Z0, then the byte.
    let byte = out
        .split('$')
        .nth(2)
        .and_then(|p| p.split('#').next())
        .unwrap_or_default()
        .to_owned();
    (byte, guest)
}

#[test]
fn per_vcpu_targets_never_patch_int3_into_shared_memory() {
    let original = FakeGuest::new("fake", 2, TRAPPING).memory()[FAKE_ENTRY as usize];
    let original = format!("{original:02x}");
    // The partition target on an int3-trapping host patches memory (and restores it).
    let (byte, guest) = byte_at_entry_with_breakpoint(None, TRAPPING);
    assert_eq!(byte, "cc");
    assert_eq!(
        guest.memory()[FAKE_ENTRY as usize],
        0x90,
        "restored at detach"
    );
    // A per-vCPU target never does: its siblings share the memory but do not trap int3.
    for caps in [TRAPPING, NOT_TRAPPING] {
        for scope in [Some(0), Some(1)] {
            let (byte, _) = byte_at_entry_with_breakpoint(scope, caps);
            assert_eq!(byte, original, "scope {scope:?} patched guest memory");
        }
    }
}

#[test]
fn a_per_vcpu_breakpoint_is_a_debug_register_of_that_vcpu_only() {
    for caps in [TRAPPING, NOT_TRAPPING] {
        let z0 = format!("Z0,{FAKE_ENTRY:x},1");
        let (_, guest) = run(&session(&[&z0, "c"]), Some(1), caps, "continue");
        let log = guest.debug_log();
        // The resume: vCPU 1 gets DR0 = the breakpoint and no int3 trapping.
        let resumed = log.iter().find(|(v, d)| *v == 1 && d.is_active());
        let Some((_, d)) = resumed else {
            panic!("vCPU 1 never got debug controls: {log:?}")
        };
        assert!(
            !d.sw_breakpoints,
            "nothing is patched, so int3 is not trapped"
        );
        assert_eq!(
            d.hw.iter().flatten().next().map(|bp| bp.addr),
            Some(FAKE_ENTRY)
        );
        assert!(log.iter().all(|(v, _)| *v == 1), "vCPU 0 touched: {log:?}");
    }
}

/// The reply packets' bodies, in order.
fn replies(output: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(output)
        .split('$')
        .skip(1)
        .map(|p| p.split('#').next().unwrap_or_default().to_owned())
        .collect()
}

/// `X` data as gdb sends it: binary with `#$}*` escaped.
fn x_packet(addr: u64, declared: usize, data: &[u8]) -> Vec<u8> {
    let mut body = format!("X{addr:x},{declared:x}:").into_bytes();
    for &b in data {
        if matches!(b, b'#' | b'$' | b'}' | b'*') {
            body.extend([b'}', b ^ 0x20]);
        } else {
            body.push(b);
        }
    }
    let sum = body.iter().fold(0u8, |a, b| a.wrapping_add(*b));
    let mut p = vec![b'$'];
    p.extend(body);
    p.extend(format!("#{sum:02x}").into_bytes());
    p
}

#[test]
fn writes_whose_length_disagrees_with_their_data_are_refused_and_write_nothing() {
    let at = 0x8000u64;
    let hex = |b: &[u8]| b.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let data = [0x11u8, 0x22, 0x33, 0x44, b'#', b'}'];
    for scope in [None, Some(0), Some(1)] {
        for declared in [0usize, 1, 2, 5, 6, 7, 50] {
            let m = pkt(&format!("M{at:x},{declared:x}:{}", hex(&data)));
            let x = x_packet(at, declared, &data);
            for (kind, packet) in [("M", m), ("X", x)] {
                let what = format!("{kind} declaring {declared} with 6 bytes (scope {scope:?})");
                let before = FakeGuest::new("fake", 2, TRAPPING).memory();
                let (r, guest) = run(&packet, scope, TRAPPING, &what);
                let reply = replies(&r.output);
                assert_eq!(r.ended, None, "{what}: the session ended");
                if declared == data.len() {
                    assert_eq!(reply, ["OK"], "{what}");
                    assert_eq!(guest.memory()[at as usize..at as usize + 6], data, "{what}");
                } else {
                    assert!(
                        reply.len() == 1 && reply[0].starts_with('E'),
                        "{what}: {reply:?}"
                    );
                    assert!(guest.memory() == before, "{what}: guest memory changed");
                }
            }
        }
    }
    // gdb's probe for X support, and a write after a refused one, still work.
    let mut input = x_packet(at, 0, &[]);
    input.extend(pkt(&format!("M{at:x},2:aabbccdd")));
    input.extend(pkt(&format!("M{at:x},2:aabb")));
    let (r, guest) = run(&input, None, NOT_TRAPPING, "probe");
    assert_eq!(replies(&r.output), ["OK", "E16", "OK"]);
    assert_eq!(
        guest.memory()[at as usize..at as usize + 3],
        [0xaa, 0xbb, 0]
    );
}

#[test]
fn a_bare_qsupported_gets_a_normal_reply() {
    for body in ["qSupported", "qSupported:"] {
        for scope in [None, Some(1)] {
            let (r, _) = run(&session(&[body, "?", "g"]), scope, TRAPPING, body);
            assert_eq!(r.ended, None, "{body}: the session ended");
            let reply = replies(&r.output);
            assert_eq!(reply.len(), 3, "{body}: {reply:?}");
            assert!(reply[0].starts_with("PacketSize="), "{body}: {reply:?}");
            assert!(!reply[1].starts_with('E') && !reply[2].starts_with('E'));
        }
    }
}

#[test]
fn gdbs_handshake_is_answered_before_the_attach_stop_and_the_first_target_packet_waits_for_it() {
    use std::sync::{Arc, Mutex};

    use super::target::PartitionTarget;
    use super::{Driver, LinkConnection, Stops};

    let guest = FakeGuest::new("fake", 2, TRAPPING);
    let sent = Arc::new(Mutex::new(Vec::new()));
    let sink = sent.clone();
    let connection = LinkConnection::new(Box::new(move |bytes| {
        sink.lock().unwrap().extend_from_slice(bytes);
        true
    }));
    let mut driver = Driver::new(
        PartitionTarget::with_handle(guest.clone(), None),
        connection,
        Stops::new().0,
    );
    let replies = |sent: &Mutex<Vec<u8>>| {
        String::from_utf8_lossy(&std::mem::take(&mut *sent.lock().unwrap())).into_owned()
    };
    // What gdb sends first, as it connects: answered with the guest still running.
    driver.input(&session(&[
        "qSupported:multiprocess+;xmlRegisters=i386",
        "vMustReplyEmpty",
        "QStartNoAckMode",
    ]));
    let handshake = replies(&sent);
    assert!(handshake.contains("PacketSize="), "{handshake}");
    assert!(!guest.stopped(0) && !guest.stopped(1));
    // Then the stop reason: the target stops first.
    driver.input(&pkt("?"));
    assert!(guest.stopped(0) && guest.stopped(1));
    assert!(replies(&sent).contains("$T05"));
    driver.finish(true);
    assert!(guest.released());
}

#[test]
fn a_stop_goes_to_the_thread_feeding_gdb_while_it_waits_else_to_the_session_thread() {
    use hv_core::partition::DebugStopEvent;
    use hv_core::vcpu::{DebugExit, StopRegisters};

    use super::Stops;

    let stop = |vcpu| DebugStopEvent {
        vcpu,
        exit: DebugExit {
            exception: 1,
            pc: 0x1000,
            dr6: 1 << 14,
            dr7: 0,
        },
        registers: StopRegisters::default(),
        resume: 1,
    };
    let (stops, sink) = Stops::new();
    sink(stop(0));
    stops.route_to_input(true);
    sink(stop(1));
    stops.route_to_input(false);
    sink(stop(2));
    let vcpus = |rx: &crossbeam_channel::Receiver<DebugStopEvent>| {
        rx.try_iter().map(|e| e.vcpu).collect::<Vec<_>>()
    };
    assert_eq!(vcpus(&stops.to_input), [1]);
    assert_eq!(vcpus(&stops.to_session), [0, 2]);
    // Both queues end with the sink (the partition dropped it: detached or replaced).
    sink(stop(3));
    drop(sink);
    assert_eq!(stops.queued().map(|e| e.vcpu).collect::<Vec<_>>(), [3]);
    assert!(stops.to_session.recv().is_err() && stops.to_input.recv().is_err());
}
