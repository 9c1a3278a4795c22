//! `hv gdb-bridge`: connect to a running system's host link and give every guest and vCPU a
//! local TCP port for gdb, until Ctrl-C or until the system stops.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use gdb_bridge::{Bridge, BridgeEvent, BridgeOptions, EventSink};
use hv_link::LinkAddr;
use hv_link::transport::{list_systems, runtime_dir, validate_system_name};

/// Options of `hv gdb-bridge`.
#[derive(Debug, Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct GdbBridgeArgs {
    /// The running system to bridge: its host link (`unix:<path>`, `tcp:127.0.0.1:<port>`,
    /// `serial:<path>`) or its name. Default: the only system running for this user.
    #[arg(long, value_name = "LINK")]
    pub connect: Option<String>,
    /// First TCP port: partition k (in description order) on BASE+k, vCPU j of partition k
    /// alone on BASE+100+16k+j.
    #[arg(long, value_name = "BASE", default_value_t = gdb_bridge::DEFAULT_BASE_PORT,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub base_port: u16,
    /// Token file of a `tcp:` link (default: the hypervisor's token file for that port in the
    /// runtime directory).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

const AFTER_HELP: &str = "\
The bridge prints a port table (stable format, one line per guest and per vCPU):

    partition  vcpu  port   image
    control    all   3333   .../target/guests/control.elf
    control    0     3433   .../target/guests/control.elf

then forwards each gdb connection to that guest's debug stub over the host link:

    gdb target/guests/control.elf -ex 'target remote :3333'

`vcpu all` debugs the whole partition (its vCPUs are gdb threads); a vCPU port stops only
that vCPU. One debugger per guest: a second one is refused with the owner's name. The guest
runs on when gdb detaches or disconnects. Note that `hv run` already starts a bridge on the
description's gdb_base_port unless given --no-gdb-bridge.";

/// Finds the link to bridge: `--connect` as an address or a system name, else the only live
/// system in the runtime directory.
pub(crate) fn resolve(connect: Option<&str>) -> anyhow::Result<LinkAddr> {
    if let Some(text) = connect {
        if let Ok(addr) = text.parse::<LinkAddr>() {
            return Ok(addr);
        }
        if validate_system_name(text).is_ok() {
            return hv_link::transport::find_system(Some(text)).with_context(|| {
                format!("--connect {text}: not an address, and no such running system")
            });
        }
        bail!(
            "--connect {text:?}: expected unix:<path>, tcp:127.0.0.1:<port>, serial:<path> or a system name"
        );
    }
    let dir = runtime_dir();
    let live: Vec<_> = list_systems()?.into_iter().filter(|s| s.alive).collect();
    match live.len() {
        0 => bail!(
            "no hvdk system is running (no live link socket in {}); start one with `hv run`, or pass --connect <link> for a tcp or serial link",
            dir.display()
        ),
        1 => Ok(live[0].addr.clone()),
        _ => {
            let list: Vec<String> = live
                .iter()
                .map(|s| format!("  {}  {}", s.name, s.addr))
                .collect();
            bail!(
                "several hvdk systems are running; choose one with --connect <name or link>:\n{}",
                list.join("\n")
            )
        }
    }
}

/// Runs `hv gdb-bridge`.
pub fn gdb_bridge(args: GdbBridgeArgs) -> anyhow::Result<ExitCode> {
    let signals = super::run::termination_signal()?;
    let link = resolve(args.connect.as_deref())?;
    let events: EventSink = Arc::new(|e: &BridgeEvent| eprintln!("hv: {e}"));
    let options = BridgeOptions {
        token_file: args.token_file,
        events: Some(events),
        ..BridgeOptions::default()
    };
    let bridge =
        Bridge::start(&link, args.base_port, options).context("cannot start the gdb bridge")?;
    eprintln!(
        "hv: gdb bridge for system {} on {}; Ctrl-C stops",
        bridge.system(),
        link
    );
    super::run::print_port_table(&bridge);
    let closed = bridge.link_closed();
    crossbeam_channel::select! {
        recv(signals) -> _ => eprintln!("hv: gdb bridge stopped (interrupted)"),
        recv(closed) -> _ => eprintln!("hv: gdb bridge stopped: the system's host link closed"),
    }
    bridge.shutdown();
    Ok(ExitCode::SUCCESS)
}
