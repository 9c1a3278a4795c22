//! hv-dap: the Debug Adapter Protocol server behind `hv dap`.
//!
//! VS Code (or any DAP client) talks DAP to this adapter over stdio ([`serve_stdio`]) or a
//! 127.0.0.1 TCP port ([`serve_tcp`]). The adapter drives a stock gdb through gdb/MI
//! ([`gdb`], [`mi`]) against the hypervisor's gdb stub for one partition or one vCPU, reached
//! through a private 127.0.0.1 port forwarded to the host link's `gdb:` channel ([`target`]).
//! The host link's control channel gives partition states (who is blocked on a device model),
//! console lines and the end of the system. Depends on hv-link and hv-config, never on hv-core.

pub mod base64;
pub mod gdb;
pub mod mi;
pub mod protocol;
mod session;
pub mod target;

use std::path::PathBuf;

use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tokio::sync::mpsc;

use crate::session::{Input, Session};

pub use session::SessionError;

/// Errors serving DAP.
#[derive(Debug, thiserror::Error)]
pub enum DapError {
    /// The tokio runtime could not start.
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    /// The `--port` listener failed.
    #[error("cannot listen on 127.0.0.1:{port}")]
    Listen {
        /// The port.
        port: u16,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Writing to the client failed.
    #[error("writing to the DAP client failed")]
    Write(#[source] std::io::Error),
}

/// Settings of the adapter process.
#[derive(Debug, Clone)]
pub struct DapOptions {
    /// The `hv` binary that `launch` runs (`hvPath` overrides it).
    pub hv_path: PathBuf,
    /// The gdb to drive (`gdbPath` overrides it).
    pub gdb_path: String,
}

impl Default for DapOptions {
    fn default() -> Self {
        DapOptions {
            hv_path: PathBuf::from("hv"),
            gdb_path: "gdb".into(),
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, DapError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(DapError::Runtime)
}

/// Serves one DAP session on stdin/stdout until the client disconnects.
pub fn serve_stdio(opts: DapOptions) -> Result<(), DapError> {
    let rt = runtime()?;
    let result = rt.block_on(serve(tokio::io::stdin(), tokio::io::stdout(), opts));
    // A read of stdin may still be blocked in the blocking pool: do not wait for it.
    rt.shutdown_background();
    result
}

/// Listens on 127.0.0.1:`port` and serves DAP sessions one after another (for debugging the
/// adapter: VS Code's `debugServer` setting). `ready` is called with the bound port.
pub fn serve_tcp(port: u16, opts: DapOptions, ready: impl FnOnce(u16)) -> Result<(), DapError> {
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port))
            .await
            .map_err(|source| DapError::Listen { port, source })?;
        let bound = listener.local_addr().map(|a| a.port()).unwrap_or(port);
        ready(bound);
        loop {
            let (stream, _) = listener
                .accept()
                .await
                .map_err(|source| DapError::Listen { port, source })?;
            let (r, w) = stream.into_split();
            if let Err(e) = serve(r, w, opts.clone()).await {
                tracing::warn!("hv dap: session ended: {e}");
            }
        }
    })
}

/// Serves one DAP session on a byte stream pair.
pub async fn serve<R, W>(reader: R, writer: W, opts: DapOptions) -> Result<(), DapError>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (out, out_rx) = protocol::Outbox::new();
    let writer_task = tokio::spawn(protocol::write_all(out_rx, writer));
    let (req_tx, mut req_rx) = mpsc::unbounded_channel();
    let err_out = out.clone();
    tokio::spawn(async move {
        let mut reader = BufReader::new(reader);
        loop {
            match protocol::read_message(&mut reader).await {
                Ok(Some(m)) => {
                    tracing::debug!("dap> {m}");
                    if req_tx.send(Some(m)).is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(protocol::ProtocolError::Json(e)) => {
                    err_out.output(
                        "stderr",
                        &format!("hv dap: ignored a message that is not JSON: {e}\n"),
                    );
                }
                Err(e) => {
                    err_out.output("stderr", &format!("hv dap: {e}\n"));
                    break;
                }
            }
        }
        let _ = req_tx.send(None);
    });
    let (line_tx, mut line_rx) = mpsc::unbounded_channel();
    let (link_tx, mut link_rx) = mpsc::unbounded_channel();
    let mut session = Session::new(out.clone(), opts, line_tx, link_tx);
    loop {
        let input = tokio::select! {
            r = req_rx.recv() => match r.flatten() {
                Some(m) => Input::Request(m),
                None => Input::ClientGone,
            },
            Some(e) = session.next_gdb_event() => Input::Gdb(e),
            Some(l) = line_rx.recv() => Input::Line(l),
            Some(e) = link_rx.recv() => Input::Link(e),
        };
        match input {
            Input::Request(m) => {
                if m["type"] == "request" {
                    session.handle(m).await;
                }
            }
            Input::Gdb(e) => session.on_gdb_event(e).await,
            Input::Line((stream, line)) => {
                let category = if stream == "stderr" {
                    "console"
                } else {
                    "stdout"
                };
                out.output(category, &format!("{line}\n"));
            }
            Input::Link(e) => session.on_link_event(e).await,
            Input::ClientGone => {
                session.finish().await;
                break;
            }
        }
        if session.done {
            break;
        }
    }
    drop(session);
    out.close();
    match writer_task.await {
        Ok(Err(e)) => Err(DapError::Write(e)),
        _ => Ok(()),
    }
}
