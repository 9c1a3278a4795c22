//! hv-link: the host-link protocol between the hvdk debug agent and every host tool.
//!
//! One byte stream (Unix socket, loopback TCP with a token, or a pty / serial line) carries
//! many channels. Every frame is a 12-byte header (magic, flags, channel id, length) plus a
//! payload of at most 1 MiB ([`frame`]). The first frame each way is the versioned handshake
//! ([`handshake`]). Channel 0 is `control`: JSON-RPC 2.0 ([`rpc`], methods in [`control`]);
//! other channels (`gdb:<p>`, `gdb:<p>.<vcpu>`, `console:<p>`, `trace`) are opened by name
//! and carry raw bytes ([`channel`]). [`transport`] gives blocking listeners and connections,
//! [`server`] the agent-side helpers and [`client`] a ready client for host tools.
//! The wire format is specified in `PROTOCOL.md` next to this crate's `Cargo.toml`.
//!
//! Portable: no KVM; builds anywhere Unix.

pub mod channel;
pub mod client;
pub mod control;
pub mod frame;
pub mod handshake;
pub mod rpc;
pub mod server;
pub mod trace;
pub mod transport;

pub use channel::{ChannelError, ChannelId, ChannelName};
pub use client::{ChannelHandle, ChannelSender, ClientError, ClientOptions, LinkClient};
pub use control::{Method, PartitionInfo, PartitionState, VcpuInfo, VcpuState};
pub use frame::{Frame, FrameDecoder, FrameEncoder, FrameError, FrameRef, HEADER_LEN, MAX_PAYLOAD};
pub use handshake::{HandshakeError, Hello, PROTOCOL_VERSION, Welcome};
pub use rpc::{Message, Notification, Request, RequestId, Response, RpcError};
pub use server::{Accepted, ChannelClaims, ChannelTable, ServerConfig, accept_handshake};
pub use transport::{
    Connection, FrameReader, FrameWriter, LinkAddr, Listener, TransportError, TryRecv, connect,
    default_link_path,
};
