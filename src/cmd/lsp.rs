//! `hv lsp`: the language server for system descriptions, on stdin/stdout.

use std::process::ExitCode;

/// Serves LSP on stdin/stdout until the editor says `exit` or closes the pipe.
pub fn lsp() -> anyhow::Result<ExitCode> {
    hv_lsp::run_stdio()?;
    Ok(ExitCode::SUCCESS)
}
