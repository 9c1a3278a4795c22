//! Fuzz target: gdb's `M`/`X` writes and `qSupported` variants, made from the input, through
//! gdbstub's state machine and our target over the in-memory fake guest. Checks what gdbstub
//! alone got wrong: a write whose data disagrees with its declared length gets an `E` reply
//! and changes no memory, one that agrees writes exactly its data, and a `qSupported` with
//! any (or no) well-formed feature list gets a reply without ending the session.
#![no_main]

use debug_agent::gdb::fake::{FAKE_MEMORY, FakeGuest, check_stub_output};
use debug_agent::gdb::replay;
use hv_core::probe::DebugCaps;
use libfuzzer_sys::fuzz_target;

fn packet(body: &[u8]) -> Vec<u8> {
    let sum = body.iter().fold(0u8, |a, b| a.wrapping_add(*b));
    let mut p = vec![b'$'];
    p.extend_from_slice(body);
    p.extend(format!("#{sum:02x}").into_bytes());
    p
}

/// Reply bodies in order.
fn replies(output: &[u8]) -> Vec<Vec<u8>> {
    output
        .split(|&b| b == b'$')
        .skip(1)
        .map(|p| p.split(|&b| b == b'#').next().unwrap_or_default().to_vec())
        .collect()
}

fuzz_target!(|input: &[u8]| {
    if input.len() < 6 {
        return;
    }
    let (head, data) = input.split_at(6);
    let binary = head[0] & 1 == 1;
    let scope = [None, Some(0), Some(1)][usize::from(head[0] >> 1) % 3];
    let qsupported: &[u8] = match (head[0] >> 3) % 4 {
        0 => b"qSupported",
        1 => b"qSupported:",
        2 => b"qSupported:multiprocess-",
        _ => b"qSupported:swbreak+;hwbreak+;xmlRegisters=i386",
    };
    // Mostly inside guest memory, sometimes across or beyond its end.
    let addr =
        u64::from(u32::from_le_bytes([head[1], head[2], head[3], 0])) % (FAKE_MEMORY as u64 + 64);
    let declared = match head[4] {
        0xff => data.len(),
        n => usize::from(n) % 80,
    };
    let declared_text = if head[5] & 1 == 1 {
        format!("{declared:X}")
    } else {
        format!("{declared:x}")
    };
    let mut write = format!(
        "{}{addr:x},{declared_text}:",
        if binary { 'X' } else { 'M' }
    )
    .into_bytes();
    if binary {
        for &b in data {
            if matches!(b, b'#' | b'$' | b'}' | b'*') {
                write.extend([b'}', b ^ 0x20]);
            } else {
                write.push(b);
            }
        }
    } else {
        write.extend(data.iter().flat_map(|b| format!("{b:02x}").into_bytes()));
    }
    let mut session = packet(qsupported);
    session.extend(packet(b"?"));
    session.extend(packet(&write));
    session.extend(packet(qsupported));

    let caps = DebugCaps {
        sw_breakpoints: true,
        data_watchpoints: true,
    };
    let guest = FakeGuest::new("fuzz", 2, caps);
    let before = guest.memory();
    let r = replay(guest.clone(), scope, &session);
    if let Err(e) = check_stub_output(&r.output) {
        panic!("malformed stub output: {e}");
    }
    assert_eq!(
        r.ended,
        None,
        "the session ended: {:?}",
        String::from_utf8_lossy(&r.output)
    );
    let replies = replies(&r.output);
    assert_eq!(replies.len(), 4, "{:?}", String::from_utf8_lossy(&r.output));
    assert!(replies[0].starts_with(b"PacketSize=") && replies[3].starts_with(b"PacketSize="));
    let after = guest.memory();
    let start = addr as usize;
    let fits = start + data.len() <= FAKE_MEMORY;
    if declared == data.len() && fits {
        assert_eq!(replies[2], b"OK");
        assert_eq!(&after[start..start + data.len()], data);
        assert_eq!(after[..start], before[..start]);
        assert_eq!(after[start + data.len()..], before[start + data.len()..]);
    } else if declared != data.len() {
        assert!(
            replies[2].starts_with(b"E"),
            "{:?}",
            String::from_utf8_lossy(&replies[2])
        );
        assert!(after == before, "a refused write changed guest memory");
    }
    assert!(
        guest.released(),
        "a vCPU was left stopped or with debug controls"
    );
});
