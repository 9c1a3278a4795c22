//! `hv`: the one user-facing binary of hvdk. Thin: parses arguments and calls the crates.

mod cmd;

use clap::{Parser, Subcommand};

/// hvdk: a partitioning hypervisor on KVM and the tools to debug the guests it runs.
#[derive(Debug, Parser)]
#[command(
    name = "hv",
    version,
    // Not Cargo.toml's description, whose list of commands is incomplete: the list follows.
    about = "hvdk: a partitioning hypervisor on KVM and the tools to debug the guests it runs",
    long_about = None,
    propagate_version = true,
    after_help = "With no command, `hv` runs the demo system (examples/demo.toml), like `hv run`."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a system description (the demo system when none is given), with its host link and a
    /// gdb bridge.
    Run(cmd::run::RunArgs),
    /// The terminal console of a running system: partitions, CPU and interrupt timelines, guest
    /// consoles, control; `--batch` prints snapshots as JSON or CSV.
    Console(cmd::console::ConsoleArgs),
    /// Pause, resume or reset a partition of a running system, or bridge its console to
    /// stdin/stdout (for scripts and the VS Code extension).
    Control(cmd::control::ControlArgs),
    /// Give every guest and vCPU of a running system a local TCP port for gdb.
    GdbBridge(cmd::gdb_bridge::GdbBridgeArgs),
    /// Trace tools: `record` a running system's trace to a file, `stats` analyses it, `export` converts
    /// it for Perfetto or to CSV, `view` serves it as a web timeline.
    Trace(cmd::trace::TraceArgs),
    /// The language server for system descriptions (LSP on stdin/stdout), for VS Code and any
    /// LSP editor.
    Lsp(cmd::lsp::LspArgs),
    /// The debug adapter for VS Code (Debug Adapter Protocol on stdin/stdout, or `--port`):
    /// drives gdb against a partition or one vCPU of a system it launches or attaches to.
    Dap(cmd::dap::DapArgs),
    /// Check that this machine can run hvdk (KVM access and capabilities, gcc, gdb, guest images).
    Doctor,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = |default: &str| {
        tracing_subscriber::EnvFilter::try_from_env("HV_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default))
    };
    // `hv dap --log FILE`: the adapter's stdout is the protocol, so its log goes to a file.
    let dap_log = match &cli.command {
        Some(Command::Dap(args)) => args.log.as_deref(),
        _ => None,
    };
    match dap_log.map(cmd::dap::open_log).transpose() {
        Ok(Some(file)) => tracing_subscriber::fmt()
            .with_env_filter(filter("hv_dap=trace"))
            .with_writer(std::sync::Mutex::new(file))
            .with_ansi(false)
            .init(),
        Ok(None) => tracing_subscriber::fmt()
            .with_env_filter(filter("error"))
            .with_writer(std::io::stderr)
            .init(),
        Err(e) => {
            // The adapter serves on without its log (VS Code would only say that it died).
            eprintln!("hv: warning: {e:#}: no session log");
            tracing_subscriber::fmt()
                .with_env_filter(filter("error"))
                .with_writer(std::io::stderr)
                .init()
        }
    }
    let result = match cli.command {
        None => cmd::run::run(cmd::run::RunArgs::default()),
        Some(Command::Run(args)) => cmd::run::run(args),
        Some(Command::Console(args)) => cmd::console::console(args),
        Some(Command::Control(args)) => cmd::control::control(args),
        Some(Command::GdbBridge(args)) => cmd::gdb_bridge::gdb_bridge(args),
        Some(Command::Trace(args)) => cmd::trace::trace(args),
        Some(Command::Lsp(args)) => cmd::lsp::lsp(args),
        Some(Command::Dap(args)) => cmd::dap::dap(args),
        Some(Command::Doctor) => cmd::doctor::doctor(),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hv: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
