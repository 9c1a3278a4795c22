//! The hypercalls a partition answers for its guests: decoded numbers and arguments in, a
//! [`HypercallOutcome`] out. The vCPU loop reads the registers and writes rax; everything the
//! call does to the partition (console, timer, interrupts, IPC, device models) happens here, so
//! the dispatch is unit-tested without KVM.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use super::Partition;
use crate::devmodel::{CopyError, ServedDevice};
use crate::hypercall::{Hypercall, errors, info, timer_mode};
use crate::ipc::IpcStatus;
use crate::irq::IrqLine;
use crate::trace::TraceKind;
use crate::vcpu::{HypercallOutcome, VcpuShared};

/// Longest console write taken in one call (the rest is left for the guest to retry).
const CONSOLE_CHUNK: u64 = 4096;

fn vector(arg: u64) -> Option<u8> {
    u8::try_from(arg)
        .ok()
        .filter(|v| *v >= crate::layout::FIRST_VECTOR)
}

/// One call in progress: the calling vCPU and the time its records are stamped with.
struct Call<'a> {
    vcpu: &'a VcpuShared,
    stamp: u64,
}

impl Call<'_> {
    fn trace(&self, kind: TraceKind, a: u64, b: u64) {
        self.vcpu.trace_at(self.stamp, kind, a, b);
    }
}

impl Partition {
    /// Answers hypercall `nr` of `vcpu` (on that vCPU's thread); `stamp` stamps its records.
    pub(crate) fn hypercall(
        &self,
        vcpu: &Arc<VcpuShared>,
        nr: u64,
        args: [u64; 4],
        stamp: u64,
    ) -> HypercallOutcome {
        self.stats.hypercalls.fetch_add(1, Ordering::Relaxed);
        match Hypercall::from_number(nr) {
            Some(call) => self.dispatch(vcpu, &Call { vcpu, stamp }, call, args),
            None => HypercallOutcome::Return(errors::ENOSYS),
        }
    }

    fn dispatch(
        &self,
        caller: &Arc<VcpuShared>,
        cx: &Call<'_>,
        call: Hypercall,
        [a0, a1, a2, a3]: [u64; 4],
    ) -> HypercallOutcome {
        use HypercallOutcome::Return;
        match call {
            Hypercall::PartitionInfo => Return(match a0 {
                info::PARTITION_ID => self.id as i64,
                info::VCPU_INDEX => i64::from(cx.vcpu.index),
                info::VCPU_COUNT => self.vcpus.len() as i64,
                info::MEMORY_SIZE => self.config.memory as i64,
                _ => errors::EINVAL,
            }),
            Hypercall::ConsoleWrite => {
                let len = a1.min(CONSOLE_CHUNK) as usize;
                let mut buf = vec![0u8; len];
                match self.memory.read_slice(&mut buf, GuestAddress(a0)) {
                    Ok(()) => {
                        self.console.write(&buf);
                        Return(len as i64)
                    }
                    Err(_) => Return(errors::EFAULT),
                }
            }
            Hypercall::TimerSet
            | Hypercall::IrqEnable
            | Hypercall::IrqDisable
            | Hypercall::IrqEoi
            | Hypercall::SendIpi => Return(self.interrupt_call(caller, cx, call, [a0, a1, a2])),
            Hypercall::Idle => HypercallOutcome::Idle,
            Hypercall::Yield => {
                std::thread::yield_now();
                Return(0)
            }
            Hypercall::IpcSend | Hypercall::IpcReceive | Hypercall::IpcNotify => {
                Return(self.ipc(cx, call, a0, a1, a2))
            }
            Hypercall::TraceMarker => {
                cx.trace(TraceKind::Marker, a0, a1);
                Return(0)
            }
            Hypercall::Exit => HypercallOutcome::Exit(a0 as i64),
            Hypercall::TimeNs => Return(self.uptime_ns() as i64),
            Hypercall::DmReceive
            | Hypercall::DmReply
            | Hypercall::DmReplyWait
            | Hypercall::DmSetIrq
            | Hypercall::DmCopyFrom
            | Hypercall::DmCopyTo => self.device_model_call(cx, call, [a0, a1, a2, a3]),
        }
    }

    /// The timer and interrupt-controller calls: a vector below `FIRST_VECTOR` is refused.
    fn interrupt_call(
        &self,
        caller: &Arc<VcpuShared>,
        cx: &Call<'_>,
        call: Hypercall,
        [a0, a1, a2]: [u64; 3],
    ) -> i64 {
        match call {
            Hypercall::TimerSet => match vector(a0) {
                Some(v) if a2 == timer_mode::ONESHOT || a2 == timer_mode::PERIODIC => {
                    let line = IrqLine::new(caller.clone(), v);
                    self.timer.set(line, a1, a2 == timer_mode::PERIODIC);
                    0
                }
                _ => errors::EINVAL,
            },
            Hypercall::IrqEnable | Hypercall::IrqDisable => match vector(a0) {
                Some(v) => {
                    let mut irq = cx.vcpu.irq();
                    if call == Hypercall::IrqEnable {
                        irq.enable(v);
                    } else {
                        irq.disable(v);
                    }
                    0
                }
                None => errors::EINVAL,
            },
            Hypercall::IrqEoi => {
                let ended = cx.vcpu.irq().eoi();
                match ended {
                    Some(v) => {
                        cx.trace(TraceKind::IrqEoi, u64::from(v), 0);
                        i64::from(v)
                    }
                    None => errors::EINVAL,
                }
            }
            // SendIpi
            _ => {
                let target = usize::try_from(a0).ok().and_then(|i| self.vcpus.get(i));
                match (target, vector(a1)) {
                    (Some(target), Some(v)) => {
                        target.raise(v);
                        0
                    }
                    (None, _) => errors::ENOENT,
                    (_, None) => errors::EINVAL,
                }
            }
        }
    }

    /// The device-model calls of this partition as a model: requests, replies, the client's
    /// interrupt and copies through grants.
    fn device_model_call(
        &self,
        cx: &Call<'_>,
        call: Hypercall,
        [a0, a1, a2, a3]: [u64; 4],
    ) -> HypercallOutcome {
        use HypercallOutcome::Return;
        match call {
            Hypercall::DmReceive => Return(self.dm_receive(cx, a0)),
            Hypercall::DmReply => Return(self.dm_reply(cx, a0, a1, a2)),
            // A failed reply returns its error at once; no request pending means a wait.
            Hypercall::DmReplyWait => {
                let replied = if a0 == 0 {
                    0
                } else {
                    self.dm_reply(cx, a0, a1, a2)
                };
                match replied {
                    0 => match self.dm_receive(cx, a3) {
                        0 => HypercallOutcome::WaitRequest(a3),
                        taken_or_error => Return(taken_or_error),
                    },
                    error => Return(error),
                }
            }
            // Level nonzero raises the client's device interrupt, 0 lowers it (withdraws a raise
            // not yet injected).
            Hypercall::DmSetIrq => match self.served_device(a0) {
                Some(device) if device.set_irq(a1 != 0) => Return(0),
                _ => Return(errors::ENOENT),
            },
            // DmCopyFrom, DmCopyTo
            _ => match self.served_device(a0) {
                Some(device) => {
                    let to_client = call == Hypercall::DmCopyTo;
                    let result = device.copy(&self.memory, a1, a2, a3, to_client);
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
    fn dm_reply(&self, cx: &Call<'_>, id: u64, value: u64, status: u64) -> i64 {
        // Recorded before the client can see the reply (it may be spinning for it).
        let record = || cx.trace(TraceKind::ModelRespond, id, value);
        if ServedDevice::reply_to(&self.served, id, value, status as i64, record) {
            0
        } else {
            errors::ENOENT
        }
    }

    /// `HV_DM_RECEIVE` outside a hypercall's exit (a device-request wait): stamped now.
    pub(crate) fn take_device_request(&self, vcpu: &VcpuShared, buf: u64) -> i64 {
        let stamp = self.clock.now_ns();
        self.dm_receive(&Call { vcpu, stamp }, buf)
    }

    /// `HV_DM_RECEIVE`: takes the next request of any of this partition's devices into guest
    /// buffer `buf`: 1, 0 when none is pending, or an error.
    fn dm_receive(&self, cx: &Call<'_>, buf: u64) -> i64 {
        if self.served.is_empty() {
            return errors::ENOENT;
        }
        if !self
            .memory
            .check_range(GuestAddress(buf), crate::devmodel::REQUEST_SIZE)
        {
            return errors::EFAULT;
        }
        for device in &self.served {
            if let Some(request) = device.take_request() {
                if self
                    .memory
                    .write_slice(&request.to_bytes(), GuestAddress(buf))
                    .is_err()
                {
                    device.requeue(request);
                    return errors::EFAULT;
                }
                cx.trace(TraceKind::ModelReceive, request.id, request.offset);
                return 1;
            }
        }
        0
    }

    /// The IPC calls on channel number `channel` of this partition.
    fn ipc(&self, cx: &Call<'_>, call: Hypercall, channel: u64, buf: u64, len: u64) -> i64 {
        let Some(endpoint) = usize::try_from(channel).ok().and_then(|c| self.ipc.get(c)) else {
            return errors::ENOENT;
        };
        let result = match call {
            Hypercall::IpcSend => {
                if len > crate::hypercall::IPC_MAX_MESSAGE as u64 {
                    return errors::EINVAL;
                }
                let mut message = vec![0u8; len as usize];
                if self
                    .memory
                    .read_slice(&mut message, GuestAddress(buf))
                    .is_err()
                {
                    return errors::EFAULT;
                }
                let sent = endpoint.channel.send(endpoint.endpoint, &message);
                if sent.is_ok() {
                    cx.trace(TraceKind::IpcSend, channel, len);
                }
                sent.map(|()| 0)
            }
            Hypercall::IpcReceive => match endpoint.channel.next_len(endpoint.endpoint) {
                None => Err(IpcStatus::WouldBlock),
                Some(size) if size as u64 > len => return errors::EINVAL,
                Some(size) if !self.memory.check_range(GuestAddress(buf), size) => {
                    return errors::EFAULT;
                }
                Some(_) => {
                    let message = match endpoint.channel.receive(endpoint.endpoint) {
                        Ok(m) => m,
                        Err(status) => return status_code(status),
                    };
                    if self
                        .memory
                        .write_slice(&message, GuestAddress(buf))
                        .is_err()
                    {
                        return errors::EFAULT;
                    }
                    cx.trace(TraceKind::IpcReceive, channel, message.len() as u64);
                    Ok(message.len() as i64)
                }
            },
            _ => {
                endpoint.channel.notify(endpoint.endpoint);
                Ok(0)
            }
        };
        result.unwrap_or_else(status_code)
    }

    /// Served device number `device` of this partition (as a model).
    fn served_device(&self, device: u64) -> Option<&ServedDevice> {
        usize::try_from(device)
            .ok()
            .and_then(|d| self.served.get(d))
            .map(|d| &**d)
    }
}

fn status_code(status: IpcStatus) -> i64 {
    match status {
        IpcStatus::WouldBlock => errors::EAGAIN,
        IpcStatus::TooLarge => errors::EINVAL,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::partitions_without_kvm;
    use crate::events::SystemEvent;
    use crate::trace::{TraceRecord, class};
    use HypercallOutcome::{Return, WaitRequest};

    /// `a` (2 vCPUs) and `b`, joined by channel `ab`; `b` serves device `dev` to `a`.
    const SYSTEM: &str = r#"
[[partition]]
name = "a"
image = "a.elf"
vcpus = 2

[[partition]]
name = "b"
image = "b.elf"

[[channel]]
name = "ab"
endpoints = ["a", "b"]

[[device]]
name = "dev"
partition = "a"
mmio = { base = 0xD000_0000, size = 0x1000 }
served_by = "b"
"#;

    /// A guest buffer in RAM, above the boot structures.
    const BUF: u64 = 0x20_0000;
    /// A guest address with no memory.
    const NOWHERE: u64 = 0x7000_0000;

    fn call(p: &Partition, vcpu: u32, call: Hypercall, args: [u64; 4]) -> HypercallOutcome {
        p.hypercall(&p.vcpus[vcpu as usize], call as u64, args, 1234)
    }

    fn records(p: &Partition, vcpu: u32) -> Vec<TraceRecord> {
        let mut out = Vec::new();
        p.vcpus[vcpu as usize].trace.drain(&mut out);
        out
    }

    #[test]
    fn partition_info_answers_each_selector_and_unknown_calls_are_enosys() {
        let ps = partitions_without_kvm(SYSTEM);
        let a = &ps[0];
        let info = |selector, vcpu| call(a, vcpu, Hypercall::PartitionInfo, [selector, 0, 0, 0]);
        assert_eq!(info(info::PARTITION_ID, 0), Return(0));
        assert_eq!(info(info::VCPU_INDEX, 1), Return(1));
        assert_eq!(info(info::VCPU_COUNT, 0), Return(2));
        assert_eq!(info(info::MEMORY_SIZE, 0), Return(16 << 20));
        assert_eq!(info(99, 0), Return(errors::EINVAL));
        assert_eq!(
            a.hypercall(&a.vcpus[0], 0xbad, [0; 4], 0),
            Return(errors::ENOSYS)
        );
        assert_eq!(a.stats.hypercalls.load(Ordering::Relaxed), 6);
        assert_eq!(call(&ps[1], 0, Hypercall::PartitionInfo, [0; 4]), Return(1));
    }

    #[test]
    fn console_write_reads_guest_memory_and_faults_outside_it() {
        let ps = partitions_without_kvm(SYSTEM);
        let a = &ps[0];
        let events = a.events.subscribe(16);
        a.write_memory(BUF, b"hello\n").unwrap();
        assert_eq!(
            call(a, 0, Hypercall::ConsoleWrite, [BUF, 6, 0, 0]),
            Return(6)
        );
        let lines: Vec<_> = events
            .try_iter()
            .filter_map(|e| match e {
                SystemEvent::ConsoleLine { partition, line } => Some((partition, line)),
                _ => None,
            })
            .collect();
        assert_eq!(lines, [(0, "hello".to_string())]);
        assert_eq!(
            call(a, 0, Hypercall::ConsoleWrite, [NOWHERE, 6, 0, 0]),
            Return(errors::EFAULT)
        );
    }

    #[test]
    fn interrupts_are_enabled_sent_to_a_sibling_and_ended_with_a_stamped_record() {
        let ps = partitions_without_kvm(SYSTEM);
        let a = &ps[0];
        a.vcpus[1].trace.set_classes(class::ALL);
        assert_eq!(call(a, 1, Hypercall::IrqEnable, [40, 0, 0, 0]), Return(0));
        assert_eq!(call(a, 0, Hypercall::SendIpi, [1, 40, 0, 0]), Return(0));
        assert_eq!(a.vcpus[1].irq().deliverable(), Some(40));
        assert_eq!(a.vcpus[0].irq().deliverable(), None);
        a.vcpus[1].irq().injected(40);
        assert_eq!(call(a, 1, Hypercall::IrqEoi, [0; 4]), Return(40));
        assert_eq!(
            call(a, 1, Hypercall::IrqEoi, [0; 4]),
            Return(errors::EINVAL)
        );
        let eoi: Vec<_> = records(a, 1)
            .into_iter()
            .filter(|r| r.kind == TraceKind::IrqEoi as u16)
            .collect();
        assert_eq!(eoi.len(), 1);
        assert_eq!((eoi[0].timestamp, eoi[0].a, eoi[0].vcpu), (1234, 40, 1));
        // Exceptions are not guest vectors; there is no vCPU 2.
        assert_eq!(
            call(a, 0, Hypercall::IrqEnable, [3, 0, 0, 0]),
            Return(errors::EINVAL)
        );
        assert_eq!(
            call(a, 0, Hypercall::SendIpi, [2, 40, 0, 0]),
            Return(errors::ENOENT)
        );
        assert_eq!(
            call(a, 0, Hypercall::SendIpi, [1, 300, 0, 0]),
            Return(errors::EINVAL)
        );
    }

    #[test]
    fn a_marker_carries_the_exit_stamp_and_only_when_traced() {
        let ps = partitions_without_kvm(SYSTEM);
        let a = &ps[0];
        assert_eq!(call(a, 0, Hypercall::TraceMarker, [7, 8, 0, 0]), Return(0));
        assert!(records(a, 0).is_empty());
        a.vcpus[0].trace.set_classes(class::MARKER);
        assert_eq!(call(a, 0, Hypercall::TraceMarker, [7, 8, 0, 0]), Return(0));
        let r = records(a, 0);
        assert_eq!(r.len(), 1);
        assert_eq!(
            (r[0].kind, r[0].timestamp, r[0].a, r[0].b),
            (TraceKind::Marker as u16, 1234, 7, 8)
        );
    }

    #[test]
    fn ipc_messages_cross_the_channel_with_their_errors() {
        let ps = partitions_without_kvm(SYSTEM);
        let (a, b) = (&ps[0], &ps[1]);
        assert_eq!(
            call(b, 0, Hypercall::IpcReceive, [0, BUF, 64, 0]),
            Return(errors::EAGAIN)
        );
        a.write_memory(BUF, b"ping").unwrap();
        assert_eq!(call(a, 0, Hypercall::IpcSend, [0, BUF, 4, 0]), Return(0));
        // Too small a buffer leaves the message queued.
        assert_eq!(
            call(b, 0, Hypercall::IpcReceive, [0, BUF, 2, 0]),
            Return(errors::EINVAL)
        );
        assert_eq!(
            call(b, 0, Hypercall::IpcReceive, [0, BUF, 64, 0]),
            Return(4)
        );
        let mut got = [0u8; 4];
        b.read_memory(BUF, &mut got).unwrap();
        assert_eq!(&got, b"ping");
        assert_eq!(
            call(a, 0, Hypercall::IpcSend, [1, BUF, 4, 0]),
            Return(errors::ENOENT)
        );
        assert_eq!(
            call(a, 0, Hypercall::IpcSend, [0, NOWHERE, 4, 0]),
            Return(errors::EFAULT)
        );
        assert_eq!(
            call(a, 0, Hypercall::IpcSend, [0, BUF, 1 << 20, 0]),
            Return(errors::EINVAL)
        );
    }

    #[test]
    fn idle_exit_and_request_waits_are_left_to_the_vcpu_loop() {
        let ps = partitions_without_kvm(SYSTEM);
        let (a, b) = (&ps[0], &ps[1]);
        assert_eq!(call(a, 0, Hypercall::Idle, [0; 4]), HypercallOutcome::Idle);
        assert_eq!(
            call(a, 0, Hypercall::Exit, [3, 0, 0, 0]),
            HypercallOutcome::Exit(3)
        );
        // `a` serves no device: nothing to wait for. `b` serves `dev`, whose queue is empty.
        assert_eq!(
            call(a, 0, Hypercall::DmReplyWait, [0, 0, 0, BUF]),
            Return(errors::ENOENT)
        );
        assert_eq!(
            call(b, 0, Hypercall::DmReplyWait, [0, 0, 0, BUF]),
            WaitRequest(BUF)
        );
        assert_eq!(
            call(b, 0, Hypercall::DmReplyWait, [0, 0, 0, NOWHERE]),
            Return(errors::EFAULT)
        );
        // A reply to a request nobody waits for is refused at once.
        assert_eq!(
            call(b, 0, Hypercall::DmReplyWait, [77, 1, 0, BUF]),
            Return(errors::ENOENT)
        );
        assert_eq!(b.take_device_request(&b.vcpus[0], BUF), 0);
        // `dev` has no client interrupt and no grants; there is no device 5.
        assert_eq!(
            call(b, 0, Hypercall::DmSetIrq, [0, 1, 0, 0]),
            Return(errors::ENOENT)
        );
        assert_eq!(
            call(b, 0, Hypercall::DmCopyFrom, [0, 0xE0_0000, BUF, 16]),
            Return(errors::EPERM)
        );
        assert_eq!(
            call(b, 0, Hypercall::DmCopyTo, [5, 0xE0_0000, BUF, 16]),
            Return(errors::ENOENT)
        );
    }
}
