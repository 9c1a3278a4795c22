//! IPC channels between two partitions: a shared-memory window mapped into both VMs (the same
//! host pages, through a memfd) plus a doorbell interrupt, and a bounded message queue per
//! direction for `HV_IPC_SEND` / `HV_IPC_RECEIVE` held by the hypervisor, so a guest can never
//! corrupt the framing its peer reads.

use std::collections::VecDeque;
use std::fs::File;
use std::os::fd::FromRawFd;
use std::sync::{Mutex, OnceLock};

use crate::hypercall::{IPC_DEPTH, IPC_MAX_MESSAGE};
use crate::irq::IrqLine;

/// Errors while creating a channel.
#[derive(Debug, thiserror::Error)]
pub enum IpcError {
    /// memfd_create or ftruncate failed.
    #[error("cannot create shared memory for channel {name}")]
    SharedMemory {
        /// Channel name.
        name: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Why a send or receive did not happen.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum IpcStatus {
    /// The peer's queue is full (send) or ours is empty (receive).
    WouldBlock,
    /// The message is larger than `IPC_MAX_MESSAGE`.
    TooLarge,
}

/// One channel.
#[derive(Debug)]
pub struct IpcChannel {
    /// Name from the system description.
    pub name: String,
    /// The shared window's backing file (mapped by both partitions).
    pub shm: File,
    /// Shared window size.
    pub size: u64,
    /// `inbox[e]` holds messages waiting for endpoint `e`.
    inbox: [Mutex<VecDeque<Vec<u8>>>; 2],
    /// `doorbell[e]` raises endpoint `e`'s doorbell vector on its vCPU 0.
    doorbell: [OnceLock<IrqLine>; 2],
}

impl IpcChannel {
    /// Creates the channel and its shared memory (zero-filled).
    pub fn new(name: &str, size: u64) -> Result<IpcChannel, IpcError> {
        let err = |source| IpcError::SharedMemory {
            name: name.to_owned(),
            source,
        };
        let cname = std::ffi::CString::new(format!("hvdk-ipc-{name}"))
            .map_err(|_| err(std::io::Error::from(std::io::ErrorKind::InvalidInput)))?;
        // SAFETY: memfd_create reads a NUL-terminated string that outlives the call.
        let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(err(std::io::Error::last_os_error()));
        }
        // SAFETY: fd is a fresh descriptor we own.
        let shm = unsafe { File::from_raw_fd(fd) };
        shm.set_len(size).map_err(err)?;
        Ok(IpcChannel {
            name: name.to_owned(),
            shm,
            size,
            inbox: Default::default(),
            doorbell: Default::default(),
        })
    }

    /// Connects endpoint `endpoint`'s doorbell (once, while the system is built).
    pub fn connect(&self, endpoint: usize, line: IrqLine) {
        let _ = self.doorbell[endpoint].set(line);
    }

    /// Queues a message from `from` to the other endpoint and rings its doorbell.
    pub fn send(&self, from: usize, message: &[u8]) -> Result<(), IpcStatus> {
        if message.len() > IPC_MAX_MESSAGE {
            return Err(IpcStatus::TooLarge);
        }
        let to = 1 - from;
        {
            let mut inbox = self.inbox[to].lock().unwrap_or_else(|p| p.into_inner());
            if inbox.len() >= IPC_DEPTH {
                return Err(IpcStatus::WouldBlock);
            }
            inbox.push_back(message.to_vec());
        }
        self.notify(from);
        Ok(())
    }

    /// Takes the next message for endpoint `at`.
    pub fn receive(&self, at: usize) -> Result<Vec<u8>, IpcStatus> {
        let mut inbox = self.inbox[at].lock().unwrap_or_else(|p| p.into_inner());
        inbox.pop_front().ok_or(IpcStatus::WouldBlock)
    }

    /// Peeks at the length of the next message for endpoint `at`.
    pub fn next_len(&self, at: usize) -> Option<usize> {
        let inbox = self.inbox[at].lock().unwrap_or_else(|p| p.into_inner());
        inbox.front().map(Vec::len)
    }

    /// Rings the doorbell of the endpoint opposite `from`.
    pub fn notify(&self, from: usize) {
        if let Some(line) = self.doorbell[1 - from].get() {
            line.raise();
        }
    }

    /// Drops messages waiting for endpoint `at` (its partition was reset).
    pub fn clear(&self, at: usize) {
        self.inbox[at]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_flow_both_ways_with_bounds() {
        let channel = IpcChannel::new("t", 4096).unwrap();
        channel.send(0, b"ping").unwrap();
        assert_eq!(channel.receive(0), Err(IpcStatus::WouldBlock));
        assert_eq!(channel.next_len(1), Some(4));
        assert_eq!(channel.receive(1).unwrap(), b"ping");
        assert_eq!(
            channel.send(1, &vec![0; IPC_MAX_MESSAGE + 1]),
            Err(IpcStatus::TooLarge)
        );
        for _ in 0..IPC_DEPTH {
            channel.send(1, b"x").unwrap();
        }
        assert_eq!(channel.send(1, b"x"), Err(IpcStatus::WouldBlock));
        channel.clear(0);
        assert_eq!(channel.receive(0), Err(IpcStatus::WouldBlock));
        assert_eq!(channel.shm.metadata().unwrap().len(), 4096);
    }
}
