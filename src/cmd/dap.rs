//! `hv dap`: the Debug Adapter Protocol server for VS Code (hv-dap), on stdio or a local port.

use std::path::{Path, PathBuf};
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
    /// Append a log of the session to FILE: every DAP message in and out and every gdb/MI line
    /// (filter with HV_LOG, default `hv_dap=trace`). For reports of adapter bugs.
    #[arg(long, value_name = "FILE", env = "HV_DAP_LOG")]
    pub log: Option<PathBuf>,
}

/// Opens `hv dap --log`'s file for appending (several sessions may share it).
pub fn open_log(path: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open the log file {}", path.display()))
}

const AFTER_HELP: &str = "\
VS Code starts `hv dap` for debug configurations of type \"hv\". The launch and attach
arguments (system, partition, vcpu, link, hvPath, gdbPath, stopOnEntry) are described in
vscode-extension/dap/README.md. To log a session for a bug report, give the adapter
HV_DAP_LOG=/tmp/hv-dap.log in VS Code's environment (or `--log` with `debugServer`).";

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
