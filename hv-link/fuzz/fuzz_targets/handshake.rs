//! Fuzz target: a client's first frame payload through the server side of the handshake
//! (`answer_hello`, what `accept_handshake` runs), with and without a required token. Checks:
//! no panic; every failure carries a refusal with a message that reaches the client as an
//! error (a token of the wrong JSON type was once closed without one); a welcome only for a
//! payload that parses as a hv-link hello.
#![no_main]

use hv_link::handshake::{
    HandshakeMessage, HandshakePolicy, Hello, answer_hello, caps, evaluate_reply,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|payload: &[u8]| {
    for token in [None, Some("secret")] {
        let policy = HandshakePolicy {
            server: "fuzz".into(),
            system: "fuzz".into(),
            capabilities: caps::ALL.iter().map(|c| (*c).to_owned()).collect(),
            token: token.map(str::to_owned),
        };
        match answer_hello(payload, &policy) {
            Ok((hello, welcome)) => {
                assert!(matches!(
                    HandshakeMessage::parse(payload),
                    Ok(HandshakeMessage::Hello(h)) if h == hello
                ));
                assert_eq!(welcome.version, hello.version);
                assert!(
                    welcome
                        .capabilities
                        .iter()
                        .all(|c| hello.capabilities.contains(c))
                );
            }
            Err((refusal, _error)) => {
                assert!(!refusal.message.is_empty());
                let sent = HandshakeMessage::Refused(refusal).to_vec();
                let back = HandshakeMessage::parse(&sent).expect("a refusal parses");
                assert!(evaluate_reply(&Hello::new("client"), back).is_err());
            }
        }
    }
});
