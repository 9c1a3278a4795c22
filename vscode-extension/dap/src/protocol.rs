//! DAP wire format: `Content-Length` framed JSON messages, read from and written to a byte
//! stream. Messages stay `serde_json::Value`s; the session reads the fields it uses.

use serde_json::{Value, json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// Largest message accepted from the client.
pub const MAX_MESSAGE: usize = 64 << 20;

/// Errors reading DAP messages.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The stream failed.
    #[error("reading the DAP stream failed")]
    Io(#[from] std::io::Error),
    /// A header block without a usable `Content-Length`.
    #[error("DAP message without a valid Content-Length header")]
    NoLength,
    /// A message larger than [`MAX_MESSAGE`].
    #[error("DAP message of {0} bytes is too large")]
    TooLarge(usize),
    /// The body is not JSON.
    #[error("DAP message is not JSON")]
    Json(#[from] serde_json::Error),
}

/// Reads the next message; `Ok(None)` at the end of the stream.
pub async fn read_message<R: AsyncBufRead + Unpin>(
    reader: &mut R,
) -> Result<Option<Value>, ProtocolError> {
    let mut length: Option<usize> = None;
    let mut headers = 0;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(None);
        }
        let header = line.trim_end_matches(['\r', '\n']);
        if header.is_empty() {
            if headers > 0 {
                break;
            }
            continue;
        }
        headers += 1;
        if let Some((name, value)) = header.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            length = Some(value.trim().parse().map_err(|_| ProtocolError::NoLength)?);
        }
    }
    let length = length.ok_or(ProtocolError::NoLength)?;
    if length > MAX_MESSAGE {
        return Err(ProtocolError::TooLarge(length));
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).await?;
    Ok(Some(serde_json::from_slice(&body)?))
}

/// Writes one message with its header.
pub async fn write_message<W: AsyncWrite + Unpin>(
    writer: &mut W,
    message: &Value,
) -> std::io::Result<()> {
    let body = serde_json::to_vec(message)?;
    writer
        .write_all(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes())
        .await?;
    writer.write_all(&body).await?;
    writer.flush().await
}

/// Sends responses and events to the client in order, numbering them.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::UnboundedSender<Value>,
}

impl Outbox {
    /// An outbox whose messages a writer task takes from the receiver.
    pub fn new() -> (Outbox, mpsc::UnboundedReceiver<Value>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Outbox { tx }, rx)
    }

    /// Sends an event.
    pub fn event(&self, event: &str, body: Value) {
        let _ = self
            .tx
            .send(json!({"type": "event", "event": event, "body": body}));
    }

    /// Sends a successful response to `request`.
    pub fn ok(&self, request: &Value, body: Value) {
        let _ = self.tx.send(json!({
            "type": "response",
            "request_seq": request["seq"],
            "command": request["command"],
            "success": true,
            "body": body,
        }));
    }

    /// Sends an error response to `request`; VS Code shows `message` to the user.
    pub fn error(&self, request: &Value, message: &str) {
        let _ = self.tx.send(json!({
            "type": "response",
            "request_seq": request["seq"],
            "command": request["command"],
            "success": false,
            "message": message,
            "body": {"error": {"id": 1, "format": message.replace('{', "(").replace('}', ")"), "showUser": true}},
        }));
    }

    /// Ends the writer after the messages sent so far (other clones may still exist).
    pub fn close(&self) {
        let _ = self.tx.send(Value::Null);
    }

    /// Sends an `output` event to the Debug Console.
    pub fn output(&self, category: &str, text: &str) {
        self.event("output", json!({"category": category, "output": text}));
    }
}

/// Writes the outbox's messages to `writer`, numbering them, until every sender is gone or
/// [`Outbox::close`].
pub async fn write_all<W: AsyncWrite + Unpin>(
    mut rx: mpsc::UnboundedReceiver<Value>,
    mut writer: W,
) -> std::io::Result<()> {
    let mut seq = 1u64;
    while let Some(mut message) = rx.recv().await {
        if message.is_null() {
            break;
        }
        message["seq"] = json!(seq);
        seq += 1;
        tracing::debug!("dap< {message}");
        write_message(&mut writer, &message).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_framed_messages_and_rejects_bad_ones() {
        let data = b"Content-Length: 13\r\n\r\n{\"seq\":1,\"a\":}";
        let mut r = &data[..];
        assert!(matches!(
            read_message(&mut r).await,
            Err(ProtocolError::Json(_))
        ));
        let data = b"Content-Length: 8\r\n\r\n{\"a\":1}\nContent-Length: 2\r\n\r\n{}";
        let mut r = &data[..];
        // The first body is 8 bytes: `{"a":1}` and a newline, which JSON allows.
        assert_eq!(read_message(&mut r).await.unwrap(), Some(json!({"a":1})));
        assert_eq!(read_message(&mut r).await.unwrap(), Some(json!({})));
        assert_eq!(read_message(&mut r).await.unwrap(), None);
        let mut r = &b"X-Other: 1\r\n\r\n"[..];
        assert!(matches!(
            read_message(&mut r).await,
            Err(ProtocolError::NoLength)
        ));
        let mut r = &b"Content-Length: 99999999999\r\n\r\n"[..];
        assert!(matches!(
            read_message(&mut r).await,
            Err(ProtocolError::TooLarge(_))
        ));
    }

    #[tokio::test]
    async fn writes_numbered_messages() {
        let (outbox, rx) = Outbox::new();
        outbox.event("initialized", json!({}));
        drop(outbox);
        let mut buf = Vec::new();
        write_all(rx, &mut buf).await.unwrap();
        let mut r = &buf[..];
        let m = read_message(&mut r).await.unwrap().unwrap();
        assert_eq!(m["seq"], 1);
        assert_eq!(m["event"], "initialized");
    }
}
