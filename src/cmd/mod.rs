//! The subcommands of `hv`, one file each.

pub mod console;
pub mod control;
pub mod dap;
pub mod doctor;
pub mod gdb_bridge;
pub mod lsp;
pub mod run;
pub mod trace;
