//! Hypercall dispatch on the vCPU thread: decode the registers, do the call, write rax.

use std::sync::atomic::Ordering;

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use super::VcpuRunner;
use crate::devmodel::{CopyError, ServedDevice};
use crate::hypercall::{Hypercall, errors, info, timer_mode};
use crate::ipc::IpcStatus;
use crate::irq::IrqLine;
use crate::trace::TraceKind;

/// Longest console write taken in one call (the rest is left for the guest to retry).
const CONSOLE_CHUNK: u64 = 4096;

/// What a hypercall asks of the vCPU loop.
enum Outcome {
    /// Return this value in rax.
    Return(i64),
    /// Return 0 once an interrupt is due.
    Idle,
    /// The partition ends with this code.
    Exit(i64),
    /// Wait for a device request, to be written to this guest buffer (see `wait_for_request`).
    WaitRequest(u64),
}

fn vector(arg: u64) -> Option<u8> {
    u8::try_from(arg)
        .ok()
        .filter(|v| *v >= crate::layout::FIRST_VECTOR)
}

impl VcpuRunner {
    /// Handles the hypercall the guest just made.
    pub(super) fn hypercall(&mut self) {
        let regs = match self.read_gprs() {
            Ok(regs) => regs,
            Err(e) => return self.crash(format!("cannot read registers for a hypercall: {e}")),
        };
        let nr = regs.rax & 0xffff_ffff;
        let args = [regs.rdi, regs.rsi, regs.rdx, regs.r10];
        self.shared.stats.hypercalls.fetch_add(1, Ordering::Relaxed);
        self.partition
            .stats
            .hypercalls
            .fetch_add(1, Ordering::Relaxed);
        let outcome = match Hypercall::from_number(nr) {
            Some(call) => self.dispatch(call, args),
            None => Outcome::Return(errors::ENOSYS),
        };
        let rax = match outcome {
            Outcome::Return(value) => value,
            Outcome::Idle => {
                self.halted = true;
                self.trace(TraceKind::Halt, 0, 0);
                0
            }
            Outcome::Exit(code) => {
                self.partition.exit(code);
                code
            }
            Outcome::WaitRequest(buf) => {
                // The result is written when the wait ends.
                self.dm_wait = Some(buf);
                return;
            }
        };
        self.trace(TraceKind::Hypercall, nr, rax as u64);
        if let Err(e) = self.write_rax(rax as u64) {
            self.crash(format!("cannot write a hypercall result: {e}"));
        }
    }

    fn dispatch(&mut self, call: Hypercall, [a0, a1, a2, a3]: [u64; 4]) -> Outcome {
        use Outcome::Return;
        let partition = self.partition.clone();
        match call {
            Hypercall::PartitionInfo => Return(match a0 {
                info::PARTITION_ID => partition.id as i64,
                info::VCPU_INDEX => i64::from(self.shared.index),
                info::VCPU_COUNT => partition.vcpus.len() as i64,
                info::MEMORY_SIZE => partition.config.memory as i64,
                _ => errors::EINVAL,
            }),
            Hypercall::ConsoleWrite => {
                let len = a1.min(CONSOLE_CHUNK) as usize;
                let mut buf = vec![0u8; len];
                match partition.memory.read_slice(&mut buf, GuestAddress(a0)) {
                    Ok(()) => {
                        partition.console.write(&buf);
                        Return(len as i64)
                    }
                    Err(_) => Return(errors::EFAULT),
                }
            }
            Hypercall::TimerSet => match vector(a0) {
                Some(v) if a2 == timer_mode::ONESHOT || a2 == timer_mode::PERIODIC => {
                    let line = IrqLine::new(self.shared.clone(), v);
                    partition.timer.set(line, a1, a2 == timer_mode::PERIODIC);
                    Return(0)
                }
                _ => Return(errors::EINVAL),
            },
            Hypercall::IrqEnable | Hypercall::IrqDisable => match vector(a0) {
                Some(v) => {
                    let mut irq = self.shared.irq();
                    if call == Hypercall::IrqEnable {
                        irq.enable(v);
                    } else {
                        irq.disable(v);
                    }
                    Return(0)
                }
                None => Return(errors::EINVAL),
            },
            Hypercall::IrqEoi => {
                let ended = self.shared.irq().eoi();
                match ended {
                    Some(v) => {
                        self.trace(TraceKind::IrqEoi, u64::from(v), 0);
                        Return(i64::from(v))
                    }
                    None => Return(errors::EINVAL),
                }
            }
            Hypercall::Idle => Outcome::Idle,
            Hypercall::Yield => {
                std::thread::yield_now();
                Return(0)
            }
            Hypercall::SendIpi => {
                let target = usize::try_from(a0)
                    .ok()
                    .and_then(|i| partition.vcpus.get(i));
                match (target, vector(a1)) {
                    (Some(target), Some(v)) => {
                        target.raise(v);
                        Return(0)
                    }
                    (None, _) => Return(errors::ENOENT),
                    (_, None) => Return(errors::EINVAL),
                }
            }
            Hypercall::IpcSend | Hypercall::IpcReceive | Hypercall::IpcNotify => {
                self.ipc(call, a0, a1, a2)
            }
            Hypercall::TraceMarker => {
                self.trace(TraceKind::Marker, a0, a1);
                Return(0)
            }
            Hypercall::Exit => Outcome::Exit(a0 as i64),
            Hypercall::TimeNs => Return(partition.uptime_ns() as i64),
            Hypercall::DmReceive => Return(self.dm_receive(a0)),
            Hypercall::DmReply => Return(self.dm_reply(a0, a1, a2)),
            // A failed reply returns its error at once; no request pending means a wait.
            Hypercall::DmReplyWait => {
                let replied = if a0 == 0 {
                    0
                } else {
                    self.dm_reply(a0, a1, a2)
                };
                match replied {
                    0 => match self.dm_receive(a3) {
                        0 => Outcome::WaitRequest(a3),
                        taken_or_error => Return(taken_or_error),
                    },
                    error => Return(error),
                }
            }
            // Level nonzero raises the client's device interrupt, 0 lowers it (withdraws a raise
            // not yet injected).
            Hypercall::DmSetIrq => match served(&partition, a0) {
                Some(device) if device.set_irq(a1 != 0) => Return(0),
                _ => Return(errors::ENOENT),
            },
            Hypercall::DmCopyFrom | Hypercall::DmCopyTo => match served(&partition, a0) {
                Some(device) => {
                    let to_client = call == Hypercall::DmCopyTo;
                    let result = device.copy(&partition.memory, a1, a2, a3, to_client);
                    Return(match result {
                        Ok(()) => 0,
                        Err(CopyError::NotGranted) => errors::EPERM,
                        Err(CopyError::Fault) => errors::EFAULT,
                    })
                }
                None => Return(errors::ENOENT),
            },
        }
    }

    /// Answers request `id`: 0, or HV_ENOENT when no client waits for it.
    fn dm_reply(&mut self, id: u64, value: u64, status: u64) -> i64 {
        let partition = self.partition.clone();
        // Recorded before the client can see the reply (it may be spinning for it).
        let record = || self.trace(TraceKind::ModelRespond, id, value);
        if ServedDevice::reply_to(&partition.served, id, value, status as i64, record) {
            0
        } else {
            errors::ENOENT
        }
    }

    /// `HV_DM_RECEIVE`: takes the next request of any of this partition's devices into guest
    /// buffer `buf`: 1, 0 when none is pending, or an error.
    pub(super) fn dm_receive(&mut self, buf: u64) -> i64 {
        let partition = self.partition.clone();
        if partition.served.is_empty() {
            return errors::ENOENT;
        }
        if !partition
            .memory
            .check_range(GuestAddress(buf), crate::devmodel::REQUEST_SIZE)
        {
            return errors::EFAULT;
        }
        for device in &partition.served {
            if let Some(request) = device.take_request() {
                if partition
                    .memory
                    .write_slice(&request.to_bytes(), GuestAddress(buf))
                    .is_err()
                {
                    device.requeue(request);
                    return errors::EFAULT;
                }
                self.trace(TraceKind::ModelReceive, request.id, request.offset);
                return 1;
            }
        }
        0
    }

    fn ipc(&mut self, call: Hypercall, channel: u64, buf: u64, len: u64) -> Outcome {
        let partition = self.partition.clone();
        let Some(endpoint) = usize::try_from(channel)
            .ok()
            .and_then(|c| partition.ipc.get(c))
        else {
            return Outcome::Return(errors::ENOENT);
        };
        let result = match call {
            Hypercall::IpcSend => {
                if len > crate::hypercall::IPC_MAX_MESSAGE as u64 {
                    return Outcome::Return(errors::EINVAL);
                }
                let mut message = vec![0u8; len as usize];
                if partition
                    .memory
                    .read_slice(&mut message, GuestAddress(buf))
                    .is_err()
                {
                    return Outcome::Return(errors::EFAULT);
                }
                let sent = endpoint.channel.send(endpoint.endpoint, &message);
                if sent.is_ok() {
                    self.trace(TraceKind::IpcSend, channel, len);
                }
                sent.map(|()| 0)
            }
            Hypercall::IpcReceive => match endpoint.channel.next_len(endpoint.endpoint) {
                None => Err(IpcStatus::WouldBlock),
                Some(size) if size as u64 > len => return Outcome::Return(errors::EINVAL),
                Some(size) if !partition.memory.check_range(GuestAddress(buf), size) => {
                    return Outcome::Return(errors::EFAULT);
                }
                Some(_) => {
                    let message = match endpoint.channel.receive(endpoint.endpoint) {
                        Ok(m) => m,
                        Err(status) => return Outcome::Return(status_code(status)),
                    };
                    if partition
                        .memory
                        .write_slice(&message, GuestAddress(buf))
                        .is_err()
                    {
                        return Outcome::Return(errors::EFAULT);
                    }
                    self.trace(TraceKind::IpcReceive, channel, message.len() as u64);
                    Ok(message.len() as i64)
                }
            },
            _ => {
                endpoint.channel.notify(endpoint.endpoint);
                Ok(0)
            }
        };
        Outcome::Return(result.unwrap_or_else(status_code))
    }
}

fn served(
    partition: &crate::partition::Partition,
    device: u64,
) -> Option<&crate::devmodel::ServedDevice> {
    usize::try_from(device)
        .ok()
        .and_then(|d| partition.served.get(d))
        .map(|d| &**d)
}

fn status_code(status: IpcStatus) -> i64 {
    match status {
        IpcStatus::WouldBlock => errors::EAGAIN,
        IpcStatus::TooLarge => errors::EINVAL,
    }
}
