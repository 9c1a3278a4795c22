//! Fuzz target: arbitrary bytes through `FrameDecoder` in input-chosen splits, plus handshake and JSON-RPC parsing of control payloads.
#![no_main]

use hv_link::frame::{Frame, FrameDecoder, FrameError, MAX_PAYLOAD};
use hv_link::{ChannelId, handshake::HandshakeMessage, rpc::Message};
use libfuzzer_sys::fuzz_target;

fn decode(input: &[u8], step: usize) -> (Vec<Frame>, Option<FrameError>) {
    let mut dec = FrameDecoder::new();
    let mut out = Vec::new();
    for chunk in input.chunks(step.max(1)) {
        dec.push(chunk);
        loop {
            match dec.next_frame_ref() {
                Ok(Some(f)) => {
                    assert!(f.payload.len() <= MAX_PAYLOAD as usize);
                    out.push(f.to_owned());
                }
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, dec.finish().err())
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let whole = decode(input, input.len());
    let split = decode(input, usize::from(first % 64) + 1);
    // The outcome must not depend on how the bytes were split.
    assert_eq!(whole, split);
    for f in &whole.0 {
        if f.channel == ChannelId::CONTROL {
            let _ = HandshakeMessage::parse(&f.payload);
            let _ = Message::parse(&f.payload);
        }
    }
});
