//! `hv dap`: the Debug Adapter Protocol server for VS Code (hv-dap), on stdio or a local port.

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

/// Options of `hv dap`.
#[derive(Debug, Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct DapArgs {
    /// Listen on 127.0.0.1:PORT instead of stdio (0: any free port, printed), serving sessions
    /// one after another: for debugging the adapter (VS Code's `debugServer`).
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
    /// The gdb to drive (default: `gdb` on PATH; a launch configuration's `gdbPath` wins).
    #[arg(long, value_name = "PATH", default_value = "gdb")]
    pub gdb: String,
}

const AFTER_HELP: &str = "\
VS Code starts `hv dap` for debug configurations of type \"hv\". The launch and attach
arguments (system, partition, vcpu, link, hvPath, gdbPath, stopOnEntry) are described in
vscode-extension/dap/README.md.";

/// Runs `hv dap`.
pub fn dap(args: DapArgs) -> anyhow::Result<ExitCode> {
    let hv_path = std::env::current_exe().context("cannot find the hv binary's own path")?;
    let opts = hv_dap::DapOptions {
        hv_path,
        gdb_path: args.gdb,
    };
    match args.port {
        Some(port) => hv_dap::serve_tcp(port, opts, |bound| {
            eprintln!("hv dap: listening on 127.0.0.1:{bound}");
        })?,
        None => hv_dap::serve_stdio(opts)?,
    }
    Ok(ExitCode::SUCCESS)
}
