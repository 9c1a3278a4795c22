//! `hv control`: one-shot partition control (pause, resume, reset) and a guest console bridged
//! to stdin/stdout, for scripts and editor integrations that do not speak the host link.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use hv_link::{ChannelName, ClientOptions, LinkClient};

/// Options of `hv control`.
#[derive(Debug, Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct ControlArgs {
    /// The running system: its host link (`unix:<path>`, `tcp:127.0.0.1:<port>`,
    /// `serial:<path>`) or its name. Default: the only system running for this user.
    #[arg(long, value_name = "LINK", global = true)]
    pub connect: Option<String>,
    /// Token file of a `tcp:` link (default: the hypervisor's token file for that port).
    #[arg(long, value_name = "FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub action: ControlAction,
}

/// The actions of `hv control`.
#[derive(Debug, Subcommand)]
pub enum ControlAction {
    /// Pause every vCPU of a partition (the others run on).
    Pause {
        /// Partition name.
        partition: String,
    },
    /// Resume a paused partition.
    Resume {
        /// Partition name.
        partition: String,
    },
    /// Restart a partition's guest from its entry point.
    Reset {
        /// Partition name.
        partition: String,
    },
    /// Bridge a partition's console to stdin/stdout: its UART output is written to stdout, and
    /// bytes read from stdin go to its UART. Ends when stdin closes or the system stops.
    AttachConsole {
        /// Partition name.
        partition: String,
    },
}

const AFTER_HELP: &str = "\
Examples:
    hv control pause worker
    hv control reset sensor-model
    hv control attach-console control      # the guest's UART on this terminal's stdin/stdout

The VS Code extension's Partitions view and partition terminals call these.";

fn connect(args: &ControlArgs) -> anyhow::Result<LinkClient> {
    let addr = super::gdb_bridge::resolve(args.connect.as_deref())?;
    let opts = ClientOptions {
        token_file: args.token_file.clone(),
        ..ClientOptions::new("hv-control")
    };
    LinkClient::connect_with(&addr, opts).with_context(|| format!("cannot connect to {addr}"))
}

/// Runs `hv control`.
pub fn control(args: ControlArgs) -> anyhow::Result<ExitCode> {
    let client = connect(&args)?;
    match &args.action {
        ControlAction::Pause { partition } => client
            .pause(partition)
            .with_context(|| format!("cannot pause {partition}"))?,
        ControlAction::Resume { partition } => client
            .resume(partition)
            .with_context(|| format!("cannot resume {partition}"))?,
        ControlAction::Reset { partition } => client
            .reset(partition)
            .with_context(|| format!("cannot reset {partition}"))?,
        ControlAction::AttachConsole { partition } => attach_console(&client, partition)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Copies the console channel of `partition` to stdout and stdin to it, until stdin reaches its
/// end or the channel closes.
fn attach_console(client: &LinkClient, partition: &str) -> anyhow::Result<()> {
    let channel = client
        .open_channel(&ChannelName::console(partition))
        .with_context(|| format!("cannot open the console of {partition}"))?;
    let sender = channel.sender();
    let (stdin_done_tx, stdin_done) = crossbeam_channel::bounded::<()>(1);
    std::thread::Builder::new()
        .name("hv-control-stdin".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = [0u8; 1024];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if sender.send(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = stdin_done_tx.send(());
        })
        .context("cannot start the stdin thread")?;
    let mut stdout = std::io::stdout().lock();
    loop {
        crossbeam_channel::select! {
            recv(channel.receiver()) -> data => match data {
                Ok(bytes) => {
                    if stdout.write_all(&bytes).and_then(|()| stdout.flush()).is_err() {
                        break;
                    }
                }
                Err(_) => break,
            },
            recv(stdin_done) -> _ => break,
        }
    }
    let _ = channel.close();
    Ok(())
}
