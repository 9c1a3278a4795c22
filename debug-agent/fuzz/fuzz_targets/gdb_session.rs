//! Fuzz target: arbitrary bytes on a gdb channel, through gdbstub's state machine and our
//! target over the in-memory fake guest (no KVM), as the partition target and as each per-vCPU
//! target, on a host that traps int3 and on one that does not (the same replay as the corpus
//! test, so a crash file can go into tests/corpus/gdb as it is).
//! Checks: no panic (the fake panics if the target passes a vCPU it does not control), the
//! stub's output is acks and well-formed packets, and the end of the session (a dropped
//! connection, or the stub's own end) leaves every vCPU running with no debug controls.
#![no_main]

use debug_agent::gdb::fake::{FakeGuest, check_stub_output};
use debug_agent::gdb::replay;
use hv_core::probe::DebugCaps;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    for scope in [None, Some(0), Some(1)] {
        for sw_breakpoints in [true, false] {
            let caps = DebugCaps {
                sw_breakpoints,
                data_watchpoints: sw_breakpoints,
            };
            let guest = FakeGuest::new("fuzz", 2, caps);
            let r = replay(guest.clone(), scope, input);
            if let Err(e) = check_stub_output(&r.output) {
                panic!("scope {scope:?}, int3 traps {sw_breakpoints}: malformed stub output: {e}");
            }
            assert!(
                guest.released(),
                "scope {scope:?}, int3 traps {sw_breakpoints}: a vCPU was left stopped or with debug controls"
            );
        }
    }
});
