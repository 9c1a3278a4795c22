//! `hv lsp`: the language server for hvdk system descriptions (diagnostics, quick fixes,
//! completion, hover, go to definition, references, rename, outline) over stdio.
//!
//! The checks are hv-config's, unchanged: an editor shows exactly what `hv run` would print.
//! Which files are descriptions, and the settings, are in the crate's README.

pub mod check;
mod complete;
mod context;
pub mod files;
mod hover;
pub mod model;
pub mod navigate;
mod server;
pub mod text;

use std::io;
use std::time::Duration;

use tower_lsp_server::{LspService, Server};

pub use server::Backend;

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum LspError {
    /// The async runtime could not be started.
    #[error("cannot start the language server's runtime")]
    Runtime(#[source] io::Error),
}

/// Serves LSP on stdin/stdout until the client sends `exit` or closes stdin.
pub fn run_stdio() -> Result<(), LspError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(LspError::Runtime)?;
    runtime.block_on(async {
        let (service, socket) = LspService::new(Backend::new);
        Server::new(tokio::io::stdin(), tokio::io::stdout(), socket)
            .concurrency_level(1)
            .serve(service)
            .await;
    });
    // A check of a huge text may still be running on the blocking pool: don't wait for it.
    runtime.shutdown_timeout(Duration::from_millis(100));
    Ok(())
}
