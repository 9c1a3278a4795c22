//! JSON-RPC 2.0 envelopes for the control channel: requests, notifications, responses, errors.
//!
//! One JSON-RPC message per frame on channel 0; batches (JSON arrays) are not used in v1.
//! Encoding writes members in a fixed order (`jsonrpc`, `id`, `method`, `params` / `result`,
//! `error`) and omits `params` when it would be `null`.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::channel::ChannelName;

/// The `jsonrpc` member every message carries.
pub const JSONRPC_VERSION: &str = "2.0";

/// JSON-RPC error codes: the standard ones and hv-link's (in the implementation-defined
/// server-error range -32000..=-32099).
pub mod codes {
    /// Invalid JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// JSON that is not a valid request object.
    pub const INVALID_REQUEST: i64 = -32600;
    /// No such method.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// Params missing or of the wrong shape.
    pub const INVALID_PARAMS: i64 = -32602;
    /// Server-side failure.
    pub const INTERNAL_ERROR: i64 = -32603;
    /// No partition of that name.
    pub const UNKNOWN_PARTITION: i64 = -32001;
    /// No vCPU of that index in the partition.
    pub const UNKNOWN_VCPU: i64 = -32002;
    /// The gdb channel is owned by another client.
    pub const CHANNEL_OWNED: i64 = -32003;
    /// Bad channel name, or no open channel of that id on this connection.
    pub const UNKNOWN_CHANNEL: i64 = -32004;
    /// The operation does not apply in the partition's current state (e.g. resume a running one).
    pub const INVALID_STATE: i64 = -32005;
    /// The server lacks the capability the request needs (e.g. no trace support).
    pub const NOT_SUPPORTED: i64 = -32006;
}

/// A JSON-RPC error object (`{"code", "message", "data"?}`); also what a failed call returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{message} (code {code})")]
pub struct RpcError {
    /// Error code, see [`codes`].
    pub code: i64,
    /// Human-readable message.
    pub message: String,
    /// Optional structured details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl RpcError {
    /// An error with `code` and `message`.
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// Attach structured details.
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    /// -32700 parse error.
    pub fn parse_error(detail: impl std::fmt::Display) -> Self {
        Self::new(codes::PARSE_ERROR, format!("parse error: {detail}"))
    }

    /// -32600 invalid request.
    pub fn invalid_request(detail: impl std::fmt::Display) -> Self {
        Self::new(codes::INVALID_REQUEST, format!("invalid request: {detail}"))
    }

    /// -32601 method not found.
    pub fn method_not_found(method: &str) -> Self {
        Self::new(
            codes::METHOD_NOT_FOUND,
            format!("method not found: {method}"),
        )
    }

    /// -32602 invalid params.
    pub fn invalid_params(detail: impl std::fmt::Display) -> Self {
        Self::new(codes::INVALID_PARAMS, format!("invalid params: {detail}"))
    }

    /// -32603 internal error.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Self::new(codes::INTERNAL_ERROR, format!("internal error: {detail}"))
    }

    /// Unknown partition.
    pub fn unknown_partition(partition: &str) -> Self {
        Self::new(
            codes::UNKNOWN_PARTITION,
            format!("unknown partition: {partition}"),
        )
        .with_data(serde_json::json!({ "partition": partition }))
    }

    /// Unknown vCPU of a partition.
    pub fn unknown_vcpu(partition: &str, vcpu: u32) -> Self {
        Self::new(
            codes::UNKNOWN_VCPU,
            format!("partition {partition} has no vCPU {vcpu}"),
        )
        .with_data(serde_json::json!({ "partition": partition, "vcpu": vcpu }))
    }

    /// A gdb channel already owned by another client (`owner`: that client's name).
    pub fn channel_owned(name: &ChannelName, owner: &str) -> Self {
        Self::new(
            codes::CHANNEL_OWNED,
            format!("channel {name} is owned by another client ({owner})"),
        )
        .with_data(serde_json::json!({ "channel": name.to_string(), "owner": owner }))
    }

    /// Unknown channel name or id.
    pub fn unknown_channel(what: impl std::fmt::Display) -> Self {
        Self::new(codes::UNKNOWN_CHANNEL, format!("unknown channel: {what}"))
    }

    /// Operation not valid in the current state.
    pub fn invalid_state(detail: impl std::fmt::Display) -> Self {
        Self::new(codes::INVALID_STATE, detail.to_string())
    }

    /// Capability not supported by this server.
    pub fn not_supported(detail: impl std::fmt::Display) -> Self {
        Self::new(codes::NOT_SUPPORTED, format!("not supported: {detail}"))
    }
}

/// A request id: a number, a string, or `null` (only in error responses to unparsable requests).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RequestId {
    /// Numeric id (what [`LinkClient`](crate::client::LinkClient) uses).
    Number(i64),
    /// String id.
    String(String),
    /// `null`.
    Null,
}

impl From<i64> for RequestId {
    fn from(n: i64) -> Self {
        Self::Number(n)
    }
}

impl RequestId {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Null => Some(Self::Null),
            Value::String(s) => Some(Self::String(s.clone())),
            Value::Number(n) => n.as_i64().map(Self::Number),
            _ => None,
        }
    }
}

/// A call that expects a response.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Id echoed by the response.
    pub id: RequestId,
    /// Method name, e.g. `partition.pause`.
    pub method: String,
    /// Params (`Null` when absent).
    pub params: Value,
}

/// A message that expects no response.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// Method name, e.g. `partition.state_changed`.
    pub method: String,
    /// Params (`Null` when absent).
    pub params: Value,
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// The request's id (`Null` if it could not be read).
    pub id: RequestId,
    /// `result` or `error`.
    pub outcome: Result<Value, RpcError>,
}

/// Any control-channel message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// Has `method` and `id`.
    Request(Request),
    /// Has `method`, no `id`.
    Notification(Notification),
    /// Has `result` or `error`.
    Response(Response),
}

/// Decode params into `T`; a missing `params` or an empty `{}`/`[]` also decodes as `()`-like
/// types. Fails with -32602.
pub fn decode_params<T: DeserializeOwned>(params: &Value) -> Result<T, RpcError> {
    match T::deserialize(params) {
        Ok(t) => Ok(t),
        Err(e) => {
            let empty = match params {
                Value::Object(m) => m.is_empty(),
                Value::Array(a) => a.is_empty(),
                _ => false,
            };
            if empty && let Ok(t) = T::deserialize(&Value::Null) {
                return Ok(t);
            }
            Err(RpcError::invalid_params(e))
        }
    }
}

impl Request {
    /// Params decoded as `T` (see [`decode_params`]).
    pub fn params_as<T: DeserializeOwned>(&self) -> Result<T, RpcError> {
        decode_params(&self.params)
    }

    /// The request as JSON bytes.
    pub fn to_vec(&self) -> Vec<u8> {
        encode_request(&self.id, &self.method, &self.params).unwrap_or_default()
    }
}

impl Notification {
    /// Params decoded as `T` (see [`decode_params`]).
    pub fn params_as<T: DeserializeOwned>(&self) -> Result<T, RpcError> {
        decode_params(&self.params)
    }

    /// The notification as JSON bytes.
    pub fn to_vec(&self) -> Vec<u8> {
        encode_notification(&self.method, &self.params).unwrap_or_default()
    }
}

impl Response {
    /// A success response.
    pub fn ok(id: RequestId, result: Value) -> Self {
        Self {
            id,
            outcome: Ok(result),
        }
    }

    /// An error response.
    pub fn error(id: RequestId, error: RpcError) -> Self {
        Self {
            id,
            outcome: Err(error),
        }
    }

    /// The response as JSON bytes.
    pub fn to_vec(&self) -> Vec<u8> {
        match &self.outcome {
            Ok(v) => encode_result(&self.id, v),
            Err(e) => Ok(encode_error(&self.id, e)),
        }
        .unwrap_or_default()
    }
}

fn push_json<T: Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) -> Result<(), serde_json::Error> {
    serde_json::to_writer(&mut *out, v)
}

fn open(out: &mut Vec<u8>) {
    out.extend_from_slice(br#"{"jsonrpc":"2.0""#);
}

/// Encode `params` after a `,"params":` key, dropping the key again when they are `null`.
fn push_params<P: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    params: &P,
) -> Result<(), serde_json::Error> {
    let mark = out.len();
    out.extend_from_slice(br#","params":"#);
    let start = out.len();
    push_json(out, params)?;
    if &out[start..] == b"null" {
        out.truncate(mark);
    }
    Ok(())
}

/// Encode a request: `{"jsonrpc":"2.0","id":…,"method":…,"params":…}` (no `params` if null).
pub fn encode_request<P: Serialize + ?Sized>(
    id: &RequestId,
    method: &str,
    params: &P,
) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::with_capacity(64);
    open(&mut out);
    out.extend_from_slice(br#","id":"#);
    push_json(&mut out, id)?;
    out.extend_from_slice(br#","method":"#);
    push_json(&mut out, method)?;
    push_params(&mut out, params)?;
    out.push(b'}');
    Ok(out)
}

/// Encode a notification: `{"jsonrpc":"2.0","method":…,"params":…}` (no `params` if null).
pub fn encode_notification<P: Serialize + ?Sized>(
    method: &str,
    params: &P,
) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::with_capacity(64);
    open(&mut out);
    out.extend_from_slice(br#","method":"#);
    push_json(&mut out, method)?;
    push_params(&mut out, params)?;
    out.push(b'}');
    Ok(out)
}

/// Encode a success response: `{"jsonrpc":"2.0","id":…,"result":…}`.
pub fn encode_result<R: Serialize + ?Sized>(
    id: &RequestId,
    result: &R,
) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::with_capacity(64);
    open(&mut out);
    out.extend_from_slice(br#","id":"#);
    push_json(&mut out, id)?;
    out.extend_from_slice(br#","result":"#);
    push_json(&mut out, result)?;
    out.push(b'}');
    Ok(out)
}

/// Encode an error response: `{"jsonrpc":"2.0","id":…,"error":{"code":…,"message":…}}`.
pub fn encode_error(id: &RequestId, error: &RpcError) -> Vec<u8> {
    let mut out = Vec::with_capacity(96);
    open(&mut out);
    out.extend_from_slice(br#","id":"#);
    // Serialising an id or an RpcError (strings, integers, a Value) cannot fail.
    let _ = push_json(&mut out, id);
    out.extend_from_slice(br#","error":"#);
    let _ = push_json(&mut out, error);
    out.push(b'}');
    out
}

impl Message {
    /// Parse one message. On failure returns the error [`Response`] to send back
    /// (id `null` when the id could not be read).
    pub fn parse(bytes: &[u8]) -> Result<Message, Response> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| Response::error(RequestId::Null, RpcError::parse_error(e)))?;
        let Value::Object(mut obj) = value else {
            let what = if value.is_array() {
                "batches are not supported"
            } else {
                "not a JSON object"
            };
            return Err(Response::error(
                RequestId::Null,
                RpcError::invalid_request(what),
            ));
        };
        let id = match obj.get("id") {
            None => None,
            Some(v) => match RequestId::from_value(v) {
                Some(id) => Some(id),
                None => {
                    return Err(Response::error(
                        RequestId::Null,
                        RpcError::invalid_request("id must be an integer, a string or null"),
                    ));
                }
            },
        };
        let bad = |id: &Option<RequestId>, why: &str| {
            Response::error(
                id.clone().unwrap_or(RequestId::Null),
                RpcError::invalid_request(why),
            )
        };
        if obj.get("jsonrpc").and_then(Value::as_str) != Some(JSONRPC_VERSION) {
            return Err(bad(&id, r#"missing "jsonrpc":"2.0""#));
        }
        if let Some(method) = obj.remove("method") {
            let Value::String(method) = method else {
                return Err(bad(&id, "method must be a string"));
            };
            let params = obj.remove("params").unwrap_or(Value::Null);
            if !matches!(params, Value::Null | Value::Object(_) | Value::Array(_)) {
                return Err(bad(&id, "params must be an object or an array"));
            }
            return Ok(match id {
                Some(id) => Message::Request(Request { id, method, params }),
                None => Message::Notification(Notification { method, params }),
            });
        }
        let Some(id) = id else {
            return Err(bad(&id, "neither a request (method) nor a response (id)"));
        };
        parse_outcome(&mut obj)
            .map(|outcome| {
                Message::Response(Response {
                    id: id.clone(),
                    outcome,
                })
            })
            .map_err(|why| bad(&Some(id), why))
    }

    /// The message as JSON bytes.
    pub fn to_vec(&self) -> Vec<u8> {
        match self {
            Message::Request(r) => r.to_vec(),
            Message::Notification(n) => n.to_vec(),
            Message::Response(r) => r.to_vec(),
        }
    }
}

fn parse_outcome(obj: &mut Map<String, Value>) -> Result<Result<Value, RpcError>, &'static str> {
    match (obj.remove("result"), obj.remove("error")) {
        (Some(r), None) => Ok(Ok(r)),
        (None, Some(e)) => serde_json::from_value::<RpcError>(e)
            .map(Err)
            .map_err(|_| "error must be {code, message, data?}"),
        (Some(_), Some(_)) => Err("response has both result and error"),
        (None, None) => Err("response has neither result nor error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn s(b: Vec<u8>) -> String {
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn exact_request_notification_response_json() {
        let id = RequestId::Number(1);
        assert_eq!(
            s(encode_request(&id, "system.info", &()).unwrap()),
            r#"{"jsonrpc":"2.0","id":1,"method":"system.info"}"#
        );
        assert_eq!(
            s(encode_request(
                &RequestId::String("a".into()),
                "partition.pause",
                &json!({"partition": "ctl"})
            )
            .unwrap()),
            r#"{"jsonrpc":"2.0","id":"a","method":"partition.pause","params":{"partition":"ctl"}}"#
        );
        assert_eq!(
            s(encode_notification("events.ping", &json!([1, 2])).unwrap()),
            r#"{"jsonrpc":"2.0","method":"events.ping","params":[1,2]}"#
        );
        assert_eq!(
            s(encode_result(&id, &()).unwrap()),
            r#"{"jsonrpc":"2.0","id":1,"result":null}"#
        );
        assert_eq!(
            s(encode_error(
                &RequestId::Null,
                &RpcError::new(codes::PARSE_ERROR, "bad")
            )),
            r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"bad"}}"#
        );
        assert_eq!(
            s(Response::error(RequestId::Number(3), RpcError::unknown_partition("x")).to_vec()),
            r#"{"jsonrpc":"2.0","id":3,"error":{"code":-32001,"message":"unknown partition: x","data":{"partition":"x"}}}"#
        );
    }

    #[test]
    fn parse_classifies_messages() {
        let m = Message::parse(br#"{"jsonrpc":"2.0","id":7,"method":"partitions.list"}"#).unwrap();
        assert_eq!(
            m,
            Message::Request(Request {
                id: RequestId::Number(7),
                method: "partitions.list".into(),
                params: Value::Null
            })
        );
        let m = Message::parse(br#"{"jsonrpc":"2.0","method":"x","params":{"a":1}}"#).unwrap();
        assert!(matches!(m, Message::Notification(ref n) if n.params == json!({"a":1})));
        let m = Message::parse(br#"{"jsonrpc":"2.0","id":"q","result":null}"#).unwrap();
        assert_eq!(
            m,
            Message::Response(Response::ok(RequestId::String("q".into()), Value::Null))
        );
        let m = Message::parse(
            br#"{"jsonrpc":"2.0","id":2,"error":{"code":-32003,"message":"owned"}}"#,
        )
        .unwrap();
        assert!(matches!(
            m,
            Message::Response(Response {
                outcome: Err(RpcError { code: -32003, .. }),
                ..
            })
        ));
        // Round trip through to_vec.
        for m in [
            Message::Request(Request {
                id: 5.into(),
                method: "m".into(),
                params: json!({"k": [1]}),
            }),
            Message::Notification(Notification {
                method: "n".into(),
                params: Value::Null,
            }),
            Message::Response(Response::error(5.into(), RpcError::method_not_found("zz"))),
        ] {
            assert_eq!(Message::parse(&m.to_vec()).unwrap(), m);
        }
    }

    #[test]
    fn parse_errors_carry_codes_and_ids() {
        let code = |b: &[u8]| {
            let r = Message::parse(b).unwrap_err();
            (r.id, r.outcome.unwrap_err().code)
        };
        assert_eq!(code(b"{"), (RequestId::Null, codes::PARSE_ERROR));
        assert_eq!(code(b"[]"), (RequestId::Null, codes::INVALID_REQUEST));
        assert_eq!(code(b"3"), (RequestId::Null, codes::INVALID_REQUEST));
        assert_eq!(
            code(br#"{"id":1,"method":"x"}"#),
            (1.into(), codes::INVALID_REQUEST)
        );
        assert_eq!(
            code(br#"{"jsonrpc":"1.0","id":1,"method":"x"}"#),
            (1.into(), codes::INVALID_REQUEST)
        );
        assert_eq!(
            code(br#"{"jsonrpc":"2.0","id":1.5,"method":"x"}"#),
            (RequestId::Null, codes::INVALID_REQUEST)
        );
        assert_eq!(
            code(br#"{"jsonrpc":"2.0","id":1,"method":3}"#),
            (1.into(), codes::INVALID_REQUEST)
        );
        assert_eq!(
            code(br#"{"jsonrpc":"2.0","id":1,"method":"x","params":3}"#),
            (1.into(), codes::INVALID_REQUEST)
        );
        assert_eq!(
            code(br#"{"jsonrpc":"2.0","id":1}"#),
            (1.into(), codes::INVALID_REQUEST)
        );
        assert_eq!(
            code(br#"{"jsonrpc":"2.0","id":1,"result":1,"error":{"code":1,"message":""}}"#),
            (1.into(), codes::INVALID_REQUEST)
        );
        assert_eq!(
            code(br#"{"jsonrpc":"2.0","id":1,"error":{"code":"x"}}"#),
            (1.into(), codes::INVALID_REQUEST)
        );
        assert_eq!(
            code(br#"{"jsonrpc":"2.0"}"#),
            (RequestId::Null, codes::INVALID_REQUEST)
        );
    }

    #[test]
    fn params_decoding_is_lenient_for_empty() {
        #[derive(Deserialize, Debug, PartialEq)]
        struct P {
            partition: String,
        }
        assert_eq!(decode_params::<()>(&Value::Null), Ok(()));
        assert_eq!(decode_params::<()>(&json!({})), Ok(()));
        assert_eq!(decode_params::<()>(&json!([])), Ok(()));
        assert_eq!(
            decode_params::<P>(&json!({"partition":"a"})),
            Ok(P {
                partition: "a".into()
            })
        );
        assert_eq!(
            decode_params::<P>(&json!({})).unwrap_err().code,
            codes::INVALID_PARAMS
        );
        assert_eq!(
            decode_params::<P>(&Value::Null).unwrap_err().code,
            codes::INVALID_PARAMS
        );
    }
}
