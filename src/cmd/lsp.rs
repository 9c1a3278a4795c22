//! `hv lsp`: the language server for system descriptions, on stdin/stdout.

use std::process::ExitCode;

use clap::Args;

/// `hv lsp` takes no options; `--stdio`, which some LSP clients add, is accepted and means the
/// default.
#[derive(Debug, Args)]
pub struct LspArgs {
    /// Speak LSP on stdin/stdout (the only transport; accepted for clients that pass it).
    #[arg(long, hide = true)]
    stdio: bool,
}

/// Serves LSP on stdin/stdout until the editor says `exit` or closes the pipe.
pub fn lsp(args: LspArgs) -> anyhow::Result<ExitCode> {
    let LspArgs { stdio: _ } = args;
    hv_lsp::run_stdio()?;
    Ok(ExitCode::SUCCESS)
}
