//! The versioned handshake: the first frame each way on channel 0, before any JSON-RPC.
//!
//! Client → server: `{"type":"hello","protocol":"hv-link","version":1,"client":…,
//! "capabilities":[…],"token":…}`. Server → client: `{"type":"welcome",…}` or
//! `{"type":"refused","reason":…,"message":…}`, after which the server closes the connection.
//! The frame header and these three messages are frozen across protocol versions.

use serde::{Deserialize, Serialize};

use crate::channel::ChannelId;
use crate::transport::{Connection, TransportError};

/// Protocol name carried in hello and welcome.
pub const PROTOCOL_NAME: &str = "hv-link";
/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// The oldest protocol version this crate accepts.
pub const MIN_PROTOCOL_VERSION: u32 = 1;

/// Capability names exchanged in the handshake. Unknown names are ignored; the welcome lists
/// the intersection of what both sides offered.
pub mod caps {
    /// `control` methods `partition.*`, `partitions.list`, `system.info`.
    pub const CONTROL: &str = "control";
    /// `gdb:<partition>` channels.
    pub const GDB: &str = "gdb";
    /// `gdb:<partition>.<vcpu>` channels.
    pub const GDB_VCPU: &str = "gdb.vcpu";
    /// `console:<partition>` channels.
    pub const CONSOLE: &str = "console";
    /// The `trace` channel and `trace.start`/`trace.stop`.
    pub const TRACE: &str = "trace";
    /// `events.subscribe` and `partition.state_changed`.
    pub const EVENTS: &str = "events";
    /// Every capability defined by protocol v1.
    pub const ALL: &[&str] = &[CONTROL, GDB, GDB_VCPU, CONSOLE, TRACE, EVENTS];
}

/// A failed handshake (the connection is to be closed).
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The two sides have no protocol version in common.
    #[error(
        "protocol version mismatch: client speaks v{client}, server supports v{server_min}..=v{server_max}"
    )]
    WrongVersion {
        /// Version in the hello.
        client: u32,
        /// Oldest version the server accepts.
        server_min: u32,
        /// Newest version the server accepts.
        server_max: u32,
    },
    /// The server requires a token and the hello's was missing or wrong.
    #[error("bad or missing token (for tcp links, read it from the server's token file)")]
    BadToken,
    /// The server refused for another reason.
    #[error("server refused the connection: {message}")]
    Refused {
        /// The server's explanation.
        message: String,
    },
    /// The peer closed the connection during the handshake.
    #[error("connection closed during the handshake")]
    Closed,
    /// No handshake message within the timeout.
    #[error("timed out waiting for the handshake")]
    TimedOut,
    /// Not a valid handshake message (or not an hv-link peer).
    #[error("malformed handshake: {0}")]
    Malformed(String),
    /// Transport failure (including malformed frames).
    #[error(transparent)]
    Transport(TransportError),
}

impl From<TransportError> for HandshakeError {
    fn from(e: TransportError) -> Self {
        match e {
            TransportError::TimedOut => HandshakeError::TimedOut,
            TransportError::Closed => HandshakeError::Closed,
            e => HandshakeError::Transport(e),
        }
    }
}

/// Client → server, first frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Always [`PROTOCOL_NAME`].
    pub protocol: String,
    /// Protocol version the client speaks.
    pub version: u32,
    /// Client name for logs and ownership messages (e.g. `gdb-bridge`).
    pub client: String,
    /// Capabilities the client wants.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Token (required on TCP links).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl Hello {
    /// A v[`PROTOCOL_VERSION`] hello asking for every capability, without token.
    pub fn new(client: impl Into<String>) -> Self {
        Self {
            protocol: PROTOCOL_NAME.to_owned(),
            version: PROTOCOL_VERSION,
            client: client.into(),
            capabilities: caps::ALL.iter().map(|c| (*c).to_owned()).collect(),
            token: None,
        }
    }

    /// With a token.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }
}

/// Server → client when accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// Always [`PROTOCOL_NAME`].
    pub protocol: String,
    /// The version both sides will speak.
    pub version: u32,
    /// Server name and version (e.g. `hvdk-debug-agent 0.1.0`).
    pub server: String,
    /// Name of the running system.
    pub system: String,
    /// Capabilities granted (the intersection).
    #[serde(default)]
    pub capabilities: Vec<String>,
}

impl Welcome {
    /// True if the capability was granted.
    pub fn has(&self, cap: &str) -> bool {
        self.capabilities.iter().any(|c| c == cap)
    }
}

/// Why a server refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalReason {
    /// No common protocol version.
    VersionMismatch,
    /// Missing or wrong token.
    BadToken,
    /// The first frame was not a well-formed hello (e.g. a member of the wrong JSON type).
    MalformedHello,
    /// Anything else (unknown reasons from newer servers map here too).
    #[serde(other)]
    Other,
}

/// Server → client when refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// Machine-readable reason.
    pub reason: RefusalReason,
    /// Human-readable explanation.
    pub message: String,
    /// Oldest version the server accepts (with `version_mismatch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_version: Option<u32>,
    /// Newest version the server accepts (with `version_mismatch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_version: Option<u32>,
}

/// Any handshake message, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HandshakeMessage {
    /// Client → server.
    Hello(Hello),
    /// Server → client, accepted.
    Welcome(Welcome),
    /// Server → client, refused.
    Refused(Refusal),
}

impl HandshakeMessage {
    /// Parse a handshake frame payload.
    pub fn parse(payload: &[u8]) -> Result<Self, HandshakeError> {
        let m: HandshakeMessage = serde_json::from_slice(payload).map_err(|e| {
            HandshakeError::Malformed(bad_hello_member(payload).unwrap_or_else(|| {
                format!("not a handshake message ({e}); is the peer an hv-link endpoint?")
            }))
        })?;
        let protocol = match &m {
            HandshakeMessage::Hello(h) => Some(&h.protocol),
            HandshakeMessage::Welcome(w) => Some(&w.protocol),
            HandshakeMessage::Refused(_) => None,
        };
        if let Some(p) = protocol
            && p != PROTOCOL_NAME
        {
            return Err(HandshakeError::Malformed(format!(
                "peer speaks protocol {p:?}, not {PROTOCOL_NAME:?}"
            )));
        }
        Ok(m)
    }

    /// JSON bytes for the frame payload.
    pub fn to_vec(&self) -> Vec<u8> {
        // Plain strings, integers and lists: serialisation cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// For a hello whose member has the wrong JSON type (`"token": 5`), which member and what it
/// must be; serde's own message for an internally tagged enum names neither.
fn bad_hello_member(payload: &[u8]) -> Option<String> {
    use serde_json::Value;
    let Ok(Value::Object(hello)) = serde_json::from_slice::<Value>(payload) else {
        return None;
    };
    if hello.get("type").and_then(Value::as_str) != Some("hello") {
        return None;
    }
    let kind = |v: &Value| match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    /// A member: its name, what it must be, whether it is required, and the check.
    type Member = (&'static str, &'static str, bool, fn(&Value) -> bool);
    let string: fn(&Value) -> bool = Value::is_string;
    let version: fn(&Value) -> bool = |v| v.as_u64().is_some_and(|n| u32::try_from(n).is_ok());
    let strings: fn(&Value) -> bool =
        |v| v.as_array().is_some_and(|a| a.iter().all(Value::is_string));
    let members: [Member; 5] = [
        ("protocol", "a string", true, string),
        ("version", "an integer in 0..=4294967295", true, version),
        ("client", "a string", true, string),
        ("capabilities", "an array of strings", false, strings),
        ("token", "a string", false, string),
    ];
    for (name, want, required, ok) in members {
        match hello.get(name) {
            None if required => return Some(format!("malformed hello: `{name}` is missing")),
            None => {}
            Some(Value::Null) if !required => {}
            Some(v) if !ok(v) => {
                return Some(format!(
                    "malformed hello: `{name}` must be {want}, not {}",
                    kind(v)
                ));
            }
            Some(_) => {}
        }
    }
    None
}

/// A refusal for a first frame that is not a usable hello.
pub fn malformed_hello_refusal(message: &str) -> Refusal {
    Refusal {
        reason: RefusalReason::MalformedHello,
        message: message.to_owned(),
        min_version: None,
        max_version: None,
    }
}

/// Sans-IO server side of the whole handshake: the first frame's payload in, the welcome to
/// send, or the refusal to send and the error to report. Every failure has a refusal, so a
/// client always learns why it was turned away.
pub fn answer_hello(
    payload: &[u8],
    policy: &HandshakePolicy,
) -> Result<(Hello, Welcome), (Refusal, HandshakeError)> {
    let malformed = |m: String| (malformed_hello_refusal(&m), HandshakeError::Malformed(m));
    let hello = match HandshakeMessage::parse(payload) {
        Ok(HandshakeMessage::Hello(h)) => h,
        Ok(_) => return Err(malformed("expected a hello from the client".into())),
        Err(HandshakeError::Malformed(m)) => return Err(malformed(m)),
        Err(e) => return Err(malformed(e.to_string())),
    };
    let welcome = evaluate_hello(&hello, policy)?;
    Ok((hello, welcome))
}

/// What a server checks a hello against.
#[derive(Debug, Clone)]
pub struct HandshakePolicy {
    /// Server name and version for the welcome.
    pub server: String,
    /// System name for the welcome.
    pub system: String,
    /// Capabilities the server offers.
    pub capabilities: Vec<String>,
    /// Token the client must present (`None`: no token needed).
    pub token: Option<String>,
}

/// Compare two secrets without an early exit on the first difference.
pub fn tokens_match(expected: &str, given: &str) -> bool {
    let (a, b) = (expected.as_bytes(), given.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Sans-IO server decision: the welcome to send, or the refusal to send and the error to
/// report.
pub fn evaluate_hello(
    hello: &Hello,
    policy: &HandshakePolicy,
) -> Result<Welcome, (Refusal, HandshakeError)> {
    if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&hello.version) {
        let err = HandshakeError::WrongVersion {
            client: hello.version,
            server_min: MIN_PROTOCOL_VERSION,
            server_max: PROTOCOL_VERSION,
        };
        return Err((
            Refusal {
                reason: RefusalReason::VersionMismatch,
                message: err.to_string(),
                min_version: Some(MIN_PROTOCOL_VERSION),
                max_version: Some(PROTOCOL_VERSION),
            },
            err,
        ));
    }
    if let Some(expected) = &policy.token {
        let ok = hello
            .token
            .as_deref()
            .is_some_and(|t| tokens_match(expected, t));
        if !ok {
            let message = if hello.token.is_none() {
                "this link requires a token; none was given"
            } else {
                "wrong token"
            };
            return Err((
                Refusal {
                    reason: RefusalReason::BadToken,
                    message: message.to_owned(),
                    min_version: None,
                    max_version: None,
                },
                HandshakeError::BadToken,
            ));
        }
    }
    let capabilities = policy
        .capabilities
        .iter()
        .filter(|c| hello.capabilities.contains(c))
        .cloned()
        .collect();
    Ok(Welcome {
        protocol: PROTOCOL_NAME.to_owned(),
        version: hello.version,
        server: policy.server.clone(),
        system: policy.system.clone(),
        capabilities,
    })
}

/// Sans-IO client decision on the server's reply to `hello`.
pub fn evaluate_reply(hello: &Hello, reply: HandshakeMessage) -> Result<Welcome, HandshakeError> {
    match reply {
        HandshakeMessage::Welcome(w) if w.version == hello.version => Ok(w),
        HandshakeMessage::Welcome(w) => Err(HandshakeError::Malformed(format!(
            "server answered with version {} to a v{} hello",
            w.version, hello.version
        ))),
        HandshakeMessage::Refused(r) => Err(match r.reason {
            RefusalReason::VersionMismatch => HandshakeError::WrongVersion {
                client: hello.version,
                server_min: r.min_version.unwrap_or(0),
                server_max: r.max_version.unwrap_or(0),
            },
            RefusalReason::BadToken => HandshakeError::BadToken,
            RefusalReason::MalformedHello | RefusalReason::Other => {
                HandshakeError::Refused { message: r.message }
            }
        }),
        HandshakeMessage::Hello(_) => Err(HandshakeError::Malformed(
            "server sent a hello (two clients connected to each other?)".into(),
        )),
    }
}

/// Receive the first frame, which must be on channel 0.
pub(crate) fn recv_handshake(conn: &mut Connection) -> Result<HandshakeMessage, HandshakeError> {
    let frame = conn.recv_frame()?.ok_or(HandshakeError::Closed)?;
    if frame.channel != ChannelId::CONTROL {
        return Err(HandshakeError::Malformed(format!(
            "first frame is on channel {}, expected 0",
            frame.channel
        )));
    }
    HandshakeMessage::parse(&frame.payload)
}

/// Client side over a connection: send `hello`, wait (at most `timeout`) for the reply.
pub fn client_handshake(
    conn: &mut Connection,
    hello: &Hello,
    timeout: Option<std::time::Duration>,
) -> Result<Welcome, HandshakeError> {
    conn.set_read_timeout(timeout)?;
    conn.send_frame(
        ChannelId::CONTROL,
        &HandshakeMessage::Hello(hello.clone()).to_vec(),
    )?;
    let reply = recv_handshake(conn)?;
    conn.set_read_timeout(None)?;
    evaluate_reply(hello, reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(token: Option<&str>) -> HandshakePolicy {
        HandshakePolicy {
            server: "test-agent 0.1.0".into(),
            system: "demo".into(),
            capabilities: vec!["gdb".into(), "console".into(), "trace".into()],
            token: token.map(str::to_owned),
        }
    }

    #[test]
    fn hello_and_welcome_json_are_exact() {
        let h = Hello {
            capabilities: vec!["gdb".into()],
            ..Hello::new("gdb-bridge")
        }
        .with_token("abc");
        assert_eq!(
            String::from_utf8(HandshakeMessage::Hello(h.clone()).to_vec()).unwrap(),
            r#"{"type":"hello","protocol":"hv-link","version":1,"client":"gdb-bridge","capabilities":["gdb"],"token":"abc"}"#
        );
        let w = evaluate_hello(&h, &policy(Some("abc"))).unwrap();
        assert_eq!(
            String::from_utf8(HandshakeMessage::Welcome(w.clone()).to_vec()).unwrap(),
            r#"{"type":"welcome","protocol":"hv-link","version":1,"server":"test-agent 0.1.0","system":"demo","capabilities":["gdb"]}"#
        );
        assert!(w.has("gdb") && !w.has("trace"));
        assert_eq!(
            HandshakeMessage::parse(&HandshakeMessage::Welcome(w.clone()).to_vec()).unwrap(),
            HandshakeMessage::Welcome(w)
        );
    }

    #[test]
    fn refusals() {
        let mut h = Hello::new("x");
        h.version = 99;
        let (r, e) = evaluate_hello(&h, &policy(None)).unwrap_err();
        assert!(matches!(
            e,
            HandshakeError::WrongVersion {
                client: 99,
                server_min: 1,
                server_max: 1
            }
        ));
        assert_eq!(
            String::from_utf8(HandshakeMessage::Refused(r.clone()).to_vec()).unwrap(),
            r#"{"type":"refused","reason":"version_mismatch","message":"protocol version mismatch: client speaks v99, server supports v1..=v1","min_version":1,"max_version":1}"#
        );
        assert!(matches!(
            evaluate_reply(&h, HandshakeMessage::Refused(r)),
            Err(HandshakeError::WrongVersion { client: 99, .. })
        ));

        let h = Hello::new("x");
        let (r, e) = evaluate_hello(&h, &policy(Some("secret"))).unwrap_err();
        assert!(matches!(e, HandshakeError::BadToken));
        assert_eq!(r.reason, RefusalReason::BadToken);
        assert!(r.message.contains("requires a token"));
        let (r, _) =
            evaluate_hello(&h.clone().with_token("secreT"), &policy(Some("secret"))).unwrap_err();
        assert_eq!(r.message, "wrong token");
        assert!(evaluate_hello(&h.clone().with_token("secret"), &policy(Some("secret"))).is_ok());
        // A token given where none is needed is ignored.
        assert!(evaluate_hello(&h.with_token("x"), &policy(None)).is_ok());

        // Unknown reasons from a newer server.
        let m = HandshakeMessage::parse(
            br#"{"type":"refused","reason":"too_many_clients","message":"busy"}"#,
        )
        .unwrap();
        assert!(
            matches!(evaluate_reply(&Hello::new("x"), m), Err(HandshakeError::Refused { message }) if message == "busy")
        );
    }

    #[test]
    fn malformed_handshakes() {
        for bad in [
            &b""[..],
            b"{}",
            b"null",
            br#"{"type":"hello"}"#,
            br#"{"type":"hello","protocol":"other","version":1,"client":"x"}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"system.info"}"#,
            b"\xff\xfe",
        ] {
            assert!(
                matches!(
                    HandshakeMessage::parse(bad),
                    Err(HandshakeError::Malformed(_))
                ),
                "{bad:?}"
            );
        }
        // Capabilities and token may be absent.
        let m = HandshakeMessage::parse(
            br#"{"type":"hello","protocol":"hv-link","version":1,"client":"x"}"#,
        )
        .unwrap();
        assert!(
            matches!(m, HandshakeMessage::Hello(Hello { ref capabilities, token: None, .. }) if capabilities.is_empty())
        );
        let w = Welcome {
            protocol: PROTOCOL_NAME.into(),
            version: 2,
            server: "s".into(),
            system: "d".into(),
            capabilities: vec![],
        };
        assert!(matches!(
            evaluate_reply(&Hello::new("x"), HandshakeMessage::Welcome(w)),
            Err(HandshakeError::Malformed(_))
        ));
        assert!(
            tokens_match("abc", "abc") && !tokens_match("abc", "abd") && !tokens_match("abc", "ab")
        );
    }

    #[test]
    fn a_hello_member_of_the_wrong_type_is_refused_by_name() {
        let hello = |member: &str| {
            format!(r#"{{"type":"hello","protocol":"hv-link","version":1,"client":"x",{member}}}"#)
        };
        for (member, says) in [
            (r#""token":5"#, "`token` must be a string, not a number"),
            (r#""token":["a"]"#, "`token` must be a string, not an array"),
            (r#""token":{}"#, "`token` must be a string, not an object"),
            (r#""token":true"#, "`token` must be a string, not a boolean"),
            (
                r#""capabilities":"gdb""#,
                "`capabilities` must be an array of strings",
            ),
            (
                r#""capabilities":[1]"#,
                "`capabilities` must be an array of strings",
            ),
            (r#""x":1,"version":"1""#, "`version` must be an integer"),
        ] {
            // (A repeated member: the last one counts.)
            let payload = hello(member);
            for token in [None, Some("secret")] {
                let (refusal, error) =
                    answer_hello(payload.as_bytes(), &policy(token)).unwrap_err();
                assert_eq!(refusal.reason, RefusalReason::MalformedHello, "{member}");
                assert!(
                    refusal.message.contains(says),
                    "{member}: {}",
                    refusal.message
                );
                assert!(matches!(error, HandshakeError::Malformed(m) if m == refusal.message));
                // The client shows the server's words.
                let reply = HandshakeMessage::parse(&HandshakeMessage::Refused(refusal).to_vec());
                assert!(matches!(
                    evaluate_reply(&Hello::new("x"), reply.unwrap()),
                    Err(HandshakeError::Refused { message }) if message.contains(says)
                ));
            }
        }
        // Not a hello at all, and a welcome from a client: refused too.
        for payload in [&b"\xff"[..], b"{}", br#"{"type":"welcome"}"#] {
            let (refusal, _) = answer_hello(payload, &policy(None)).unwrap_err();
            assert_eq!(refusal.reason, RefusalReason::MalformedHello);
        }
        // A null token is an absent one.
        assert!(answer_hello(hello(r#""token":null"#).as_bytes(), &policy(None)).is_ok());
    }
}
