//! The hypercall ABI, the "virtual board interface" between guests and the hypervisor.
//!
//! A guest executes `out %eax, $0xE0` ([`HYPERCALL_PORT`](crate::layout::HYPERCALL_PORT)) with the
//! call number in `eax` and arguments in `rdi`, `rsi`, `rdx`, `r10`; the result is returned in `rax`
//! (negative values are `HV_E*` errors); every other register is preserved, and arguments a call
//! does not take are ignored. Buffer addresses are guest-physical (the boot page tables
//! identity-map them). The same table heads `guests/sdk/include/hv_abi.h`; a unit test checks the
//! two tables and all numbers agree.
//!
//! | nr | name                | arguments (rdi, rsi, rdx, r10)            | result                       |
//! |----|---------------------|-------------------------------------------|------------------------------|
//! |  0 | HV_PARTITION_INFO   | what (HV_INFO_*)                          | the value asked for          |
//! |  1 | HV_CONSOLE_WRITE    | buf, len                                  | bytes written                |
//! |  2 | HV_TIMER_SET        | vector, period_ns, mode (HV_TIMER_*)      | 0 (period 0 cancels)         |
//! |  3 | HV_IRQ_ENABLE       | vector                                    | 0                            |
//! |  4 | HV_IRQ_DISABLE      | vector                                    | 0                            |
//! |  5 | HV_IRQ_EOI          | -                                         | vector ended, or HV_EINVAL   |
//! |  6 | HV_IDLE             | -                                         | 0 once an interrupt is due   |
//! |  7 | HV_YIELD            | -                                         | 0                            |
//! |  8 | HV_SEND_IPI         | vcpu, vector                              | 0                            |
//! |  9 | HV_IPC_SEND         | channel, buf, len                         | 0, HV_EAGAIN when full       |
//! | 10 | HV_IPC_RECEIVE      | channel, buf, max_len                     | length, HV_EAGAIN when empty |
//! | 11 | HV_IPC_NOTIFY       | channel                                   | 0                            |
//! | 12 | HV_TRACE_MARKER     | id, value                                 | 0                            |
//! | 13 | HV_EXIT             | code                                      | does not return              |
//! | 14 | HV_TIME_NS          | -                                         | ns since partition start     |
//! | 16 | HV_DM_RECEIVE       | request buf (struct hv_dm_request)        | 1 request, 0 none            |
//! | 17 | HV_DM_REPLY         | request id, value, status                 | 0                            |
//! | 18 | HV_DM_SET_IRQ       | device, level (1 raise / 0 lower)         | 0                            |
//! | 19 | HV_DM_COPY_FROM     | device, client addr, buf, len             | 0 or HV_EPERM                |
//! | 20 | HV_DM_COPY_TO       | device, client addr, buf, len             | 0 or HV_EPERM                |
//! | 21 | HV_DM_REPLY_WAIT    | reply id (0: none), value, status, buf    | 1 request, 0 none            |

/// A hypercall number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Hypercall {
    /// Partition facts (`HV_INFO_*` selector in rdi).
    PartitionInfo = 0,
    /// Write `len` bytes at `buf` to the partition console.
    ConsoleWrite = 1,
    /// Program the partition's virtual timer.
    TimerSet = 2,
    /// Unmask a vector.
    IrqEnable = 3,
    /// Mask a vector.
    IrqDisable = 4,
    /// End the highest in-service interrupt.
    IrqEoi = 5,
    /// Block until an interrupt is due.
    Idle = 6,
    /// Give up the host CPU.
    Yield = 7,
    /// Raise a vector on a sibling vCPU.
    SendIpi = 8,
    /// Queue a message on an IPC channel and ring the peer's doorbell.
    IpcSend = 9,
    /// Take the next message from an IPC channel.
    IpcReceive = 10,
    /// Ring the peer's doorbell.
    IpcNotify = 11,
    /// Record a trace marker.
    TraceMarker = 12,
    /// Stop the partition with an exit code.
    Exit = 13,
    /// Nanoseconds since the partition started.
    TimeNs = 14,
    /// Device model: take the next device request.
    DmReceive = 16,
    /// Device model: answer a request.
    DmReply = 17,
    /// Device model: raise or lower the device's IRQ in the client.
    DmSetIrq = 18,
    /// Device model: copy from a granted client window.
    DmCopyFrom = 19,
    /// Device model: copy to a granted client window.
    DmCopyTo = 20,
    /// Device model: answer a request (unless the id is 0), then wait for the next one.
    DmReplyWait = 21,
}

impl Hypercall {
    /// Every hypercall, in number order.
    pub const ALL: [Hypercall; 21] = [
        Hypercall::PartitionInfo,
        Hypercall::ConsoleWrite,
        Hypercall::TimerSet,
        Hypercall::IrqEnable,
        Hypercall::IrqDisable,
        Hypercall::IrqEoi,
        Hypercall::Idle,
        Hypercall::Yield,
        Hypercall::SendIpi,
        Hypercall::IpcSend,
        Hypercall::IpcReceive,
        Hypercall::IpcNotify,
        Hypercall::TraceMarker,
        Hypercall::Exit,
        Hypercall::TimeNs,
        Hypercall::DmReceive,
        Hypercall::DmReply,
        Hypercall::DmSetIrq,
        Hypercall::DmCopyFrom,
        Hypercall::DmCopyTo,
        Hypercall::DmReplyWait,
    ];

    /// The call with number `nr`, if there is one.
    pub fn from_number(nr: u64) -> Option<Hypercall> {
        Self::ALL.iter().copied().find(|call| *call as u64 == nr)
    }

    /// The name used in `hv_abi.h` (`HV_CONSOLE_WRITE`, ...). The names live in hv-link, which
    /// host tools share (they must not depend on hv-core); a test checks that every call has one.
    pub fn c_name(self) -> &'static str {
        hv_link::trace::hypercall_name(self as u64).unwrap_or("HV_UNNAMED")
    }
}

/// `HV_PARTITION_INFO` selectors.
pub mod info {
    /// Index of the partition in the system description.
    pub const PARTITION_ID: u64 = 0;
    /// Index of the calling vCPU.
    pub const VCPU_INDEX: u64 = 1;
    /// vCPUs in the partition.
    pub const VCPU_COUNT: u64 = 2;
    /// RAM size in bytes.
    pub const MEMORY_SIZE: u64 = 3;
}

/// `HV_TIMER_SET` modes.
pub mod timer_mode {
    /// Fire once.
    pub const ONESHOT: u64 = 0;
    /// Fire every period.
    pub const PERIODIC: u64 = 1;
}

/// Error results (negative, in rax).
pub mod errors {
    /// Invalid argument.
    pub const EINVAL: i64 = -1;
    /// No such hypercall.
    pub const ENOSYS: i64 = -2;
    /// Try again (queue full or empty).
    pub const EAGAIN: i64 = -3;
    /// Bad guest address.
    pub const EFAULT: i64 = -4;
    /// No such channel, vCPU or device.
    pub const ENOENT: i64 = -5;
    /// Not permitted.
    pub const EPERM: i64 = -6;
}

/// Largest message `HV_IPC_SEND` accepts.
pub const IPC_MAX_MESSAGE: usize = 4096;
/// Messages queued per direction of a channel.
pub const IPC_DEPTH: usize = 64;
/// Shortest timer period accepted; shorter periods are raised to this (a hostile guest must not
/// turn the timer into a storm).
pub const MIN_TIMER_PERIOD_NS: u64 = 10_000;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn header() -> String {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../guests/sdk/include/hv_abi.h"
        );
        std::fs::read_to_string(path).expect("hv_abi.h")
    }

    fn defines(header: &str) -> HashMap<String, i128> {
        header
            .lines()
            .filter_map(|line| {
                let rest = line.strip_prefix("#define ")?;
                let mut words = rest.split_whitespace();
                let name = words.next()?.to_owned();
                let value = words.next()?.trim_matches(|c| c == '(' || c == ')');
                let value = value.trim_end_matches("ULL");
                let parsed = if let Some(hex) = value.strip_prefix("0x") {
                    i128::from_str_radix(hex, 16).ok()?
                } else {
                    value.parse().ok()?
                };
                Some((name, parsed))
            })
            .collect()
    }

    #[test]
    fn call_numbers_agree_with_the_c_header() {
        let defines = defines(&header());
        for call in Hypercall::ALL {
            assert_eq!(
                defines.get(call.c_name()).copied(),
                Some(call as i128),
                "{}",
                call.c_name()
            );
            assert_eq!(Hypercall::from_number(call as u64), Some(call));
        }
        assert_eq!(Hypercall::from_number(15), None);
        assert_eq!(Hypercall::from_number(u64::MAX), None);
    }

    #[test]
    fn the_links_hypercall_names_agree() {
        for call in Hypercall::ALL {
            assert!(
                hv_link::trace::hypercall_name(call as u64).is_some(),
                "{call:?}"
            );
        }
        for nr in 0..256 {
            if Hypercall::from_number(nr).is_none() {
                assert_eq!(hv_link::trace::hypercall_name(nr), None, "{nr}");
            }
        }
    }

    #[test]
    fn constants_agree_with_the_c_header() {
        use crate::layout::*;
        let d = defines(&header());
        let expect: &[(&str, i128)] = &[
            ("HV_HYPERCALL_PORT", HYPERCALL_PORT.into()),
            ("HV_UART_PORT", UART_PORT.into()),
            ("HV_UART_VECTOR", UART_VECTOR.into()),
            ("HV_FIRST_VECTOR", FIRST_VECTOR.into()),
            ("HV_GDT_ADDR", GDT_ADDR.into()),
            ("HV_BOOT_INFO_ADDR", BOOT_INFO_ADDR.into()),
            ("HV_PML4_ADDR", PML4_ADDR.into()),
            ("HV_IMAGE_BASE", IMAGE_BASE.into()),
            ("HV_IPC_BASE", IPC_BASE.into()),
            ("HV_VCPU_STACK_SIZE", VCPU_STACK_SIZE.into()),
            ("HV_IPC_MAX_MESSAGE", IPC_MAX_MESSAGE as i128),
            ("HV_IPC_DEPTH", IPC_DEPTH as i128),
            ("HV_BOOT_MAGIC", crate::boot::BOOT_MAGIC.into()),
            ("HV_BOOT_VERSION", crate::boot::BOOT_VERSION.into()),
            ("HV_MAX_IPC", crate::boot::MAX_IPC as i128),
            ("HV_MAX_DEVICES", crate::boot::MAX_DEVICES as i128),
            ("HV_NAME_LEN", crate::boot::NAME_LEN as i128),
            ("HV_EINVAL", errors::EINVAL.into()),
            ("HV_ENOSYS", errors::ENOSYS.into()),
            ("HV_EAGAIN", errors::EAGAIN.into()),
            ("HV_EFAULT", errors::EFAULT.into()),
            ("HV_ENOENT", errors::ENOENT.into()),
            ("HV_EPERM", errors::EPERM.into()),
            ("HV_INFO_PARTITION_ID", info::PARTITION_ID.into()),
            ("HV_INFO_VCPU_INDEX", info::VCPU_INDEX.into()),
            ("HV_INFO_VCPU_COUNT", info::VCPU_COUNT.into()),
            ("HV_INFO_MEMORY_SIZE", info::MEMORY_SIZE.into()),
            ("HV_TIMER_ONESHOT", timer_mode::ONESHOT.into()),
            ("HV_TIMER_PERIODIC", timer_mode::PERIODIC.into()),
        ];
        for (name, value) in expect {
            assert_eq!(d.get(*name), Some(value), "{name}");
        }
    }

    #[test]
    fn documentation_tables_are_identical() {
        let from_header: Vec<String> = header()
            .lines()
            .filter_map(|l| l.strip_prefix(" * |").map(|r| r.trim_end().to_owned()))
            .collect();
        let from_docs: Vec<String> = include_str!("hypercall.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("//! |").map(|r| r.trim_end().to_owned()))
            .collect();
        assert!(from_header.len() > Hypercall::ALL.len());
        assert_eq!(from_header, from_docs);
        for call in Hypercall::ALL {
            let row = format!(" {:>2} | {}", call as u32, call.c_name());
            assert!(
                from_docs.iter().any(|r| r.starts_with(&row)),
                "table row for {}",
                call.c_name()
            );
        }
    }
}
