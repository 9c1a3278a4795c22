//! The hvdk debug agent: runs inside the hypervisor process and gives host tools one link to
//! every partition — a GDB stub per partition (threads = vCPUs) and per vCPU ([`gdb`]), partition
//! control, consoles and traces over the host link ([`server`]).
//!
//! It talks to hv-core only through `Partition` and `VcpuShared` handles: stopping a partition
//! parks its vCPUs and nothing else.

pub mod gdb;
pub mod pagewalk;
pub mod server;

pub use server::{Agent, AgentError, AgentOptions};
