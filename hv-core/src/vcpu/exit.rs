//! Exit handling as a plain function from a KVM exit to an action, so it can be unit-tested with
//! made-up exits and no VM.

use kvm_bindings::kvm_debug_exit_arch;
use kvm_ioctls::VcpuExit;
use vmm_sys_util::errno;

use crate::layout::HYPERCALL_PORT;

/// Where port and MMIO accesses go.
pub trait DeviceAccess {
    /// A port read; `data` is to be filled.
    fn pio_read(&self, port: u16, data: &mut [u8]);
    /// A port write.
    fn pio_write(&self, port: u16, data: &[u8]);
    /// An MMIO read; `data` is to be filled.
    fn mmio_read(&self, addr: u64, data: &mut [u8]);
    /// An MMIO write.
    fn mmio_write(&self, addr: u64, data: &[u8]);
}

/// What the vCPU loop does after an exit.
#[derive(Debug, Clone, PartialEq)]
pub enum ExitAction {
    /// Enter the guest again.
    Resume,
    /// The guest made a hypercall: read its registers and dispatch.
    Hypercall,
    /// An MMIO access, for the vCPU loop to carry out after it has accounted for the exit (a
    /// served device's access may block until its model replies).
    Mmio(MmioAccess),
    /// The guest executed `hlt`: wait for an interrupt.
    Halt,
    /// `KVM_RUN` was interrupted by a kick: look at requests, then resume.
    Interrupted,
    /// A debug exception for the debugger (single step, breakpoint).
    Debug(DebugExit),
    /// The guest cannot go on: mark the partition crashed.
    Crash(String),
}

/// One MMIO access of the guest (at most 8 bytes, as KVM reports them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioAccess {
    /// Guest-physical address.
    pub addr: u64,
    /// Access size in bytes (1..=8).
    pub len: usize,
    /// The written bytes (for a write).
    pub data: [u8; 8],
    /// Write (else read).
    pub is_write: bool,
}

impl MmioAccess {
    fn new(addr: u64, bytes: &[u8], is_write: bool) -> MmioAccess {
        let len = bytes.len().min(8);
        let mut data = [0u8; 8];
        if is_write {
            data[..len].copy_from_slice(&bytes[..len]);
        }
        MmioAccess {
            addr,
            len,
            data,
            is_write,
        }
    }

    /// Carries the access out on `devices`; for a read, returns the bytes read.
    pub fn perform(&self, devices: &(impl DeviceAccess + ?Sized)) -> Option<[u8; 8]> {
        if self.is_write {
            devices.mmio_write(self.addr, &self.data[..self.len]);
            None
        } else {
            let mut data = [0u8; 8];
            devices.mmio_read(self.addr, &mut data[..self.len]);
            Some(data)
        }
    }
}

/// The parts of a KVM debug exit the debugger needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DebugExit {
    /// Exception vector (1 = #DB, 3 = #BP).
    pub exception: u32,
    /// Guest rip of the event.
    pub pc: u64,
    /// DR6 at the event.
    pub dr6: u64,
    /// DR7 at the event.
    pub dr7: u64,
}

impl From<kvm_debug_exit_arch> for DebugExit {
    fn from(arch: kvm_debug_exit_arch) -> Self {
        DebugExit {
            exception: arch.exception,
            pc: arch.pc,
            dr6: arch.dr6,
            dr7: arch.dr7,
        }
    }
}

/// Turns one `KVM_RUN` result into an action, performing port I/O on the way (MMIO is left to
/// the caller as [`ExitAction::Mmio`]).
pub fn handle_exit(
    exit: Result<VcpuExit<'_>, errno::Error>,
    devices: &(impl DeviceAccess + ?Sized),
) -> ExitAction {
    match exit {
        Ok(VcpuExit::IoOut(HYPERCALL_PORT, _)) => ExitAction::Hypercall,
        Ok(VcpuExit::IoIn(HYPERCALL_PORT, data)) => {
            data.fill(0xff);
            ExitAction::Resume
        }
        Ok(VcpuExit::IoOut(port, data)) => {
            devices.pio_write(port, data);
            ExitAction::Resume
        }
        Ok(VcpuExit::IoIn(port, data)) => {
            devices.pio_read(port, data);
            ExitAction::Resume
        }
        Ok(VcpuExit::MmioRead(addr, data)) => ExitAction::Mmio(MmioAccess::new(addr, data, false)),
        Ok(VcpuExit::MmioWrite(addr, data)) => ExitAction::Mmio(MmioAccess::new(addr, data, true)),
        Ok(VcpuExit::Hlt) => ExitAction::Halt,
        Ok(VcpuExit::IrqWindowOpen) => ExitAction::Resume,
        Ok(VcpuExit::Intr) => ExitAction::Interrupted,
        Ok(VcpuExit::Debug(arch)) => ExitAction::Debug(arch.into()),
        Ok(VcpuExit::Shutdown) => ExitAction::Crash("triple fault".into()),
        Ok(VcpuExit::FailEntry(reason, cpu)) => ExitAction::Crash(format!(
            "VM entry failed (hardware reason {reason:#x} on host CPU {cpu})"
        )),
        Ok(VcpuExit::InternalError) => ExitAction::Crash("KVM internal error".into()),
        Ok(VcpuExit::SystemEvent(kind, _)) => {
            ExitAction::Crash(format!("system event {kind} (reset or shutdown request)"))
        }
        Ok(other) => ExitAction::Crash(format!("unexpected exit {other:?}")),
        Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => ExitAction::Interrupted,
        Err(e) => ExitAction::Crash(format!("KVM_RUN failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[derive(Default)]
    struct Log(RefCell<Vec<String>>);
    impl DeviceAccess for Log {
        fn pio_read(&self, port: u16, data: &mut [u8]) {
            data.fill(0x5a);
            self.0.borrow_mut().push(format!("in {port:#x}"));
        }
        fn pio_write(&self, port: u16, data: &[u8]) {
            self.0.borrow_mut().push(format!("out {port:#x} {data:?}"));
        }
        fn mmio_read(&self, addr: u64, data: &mut [u8]) {
            data.fill(0xa5);
            self.0.borrow_mut().push(format!("read {addr:#x}"));
        }
        fn mmio_write(&self, addr: u64, data: &[u8]) {
            self.0
                .borrow_mut()
                .push(format!("write {addr:#x} {data:?}"));
        }
    }

    #[test]
    fn hypercall_port_is_not_a_device() {
        let log = Log::default();
        assert_eq!(
            handle_exit(Ok(VcpuExit::IoOut(HYPERCALL_PORT, &[1, 0, 0, 0])), &log),
            ExitAction::Hypercall
        );
        let mut data = [0u8; 4];
        assert_eq!(
            handle_exit(Ok(VcpuExit::IoIn(HYPERCALL_PORT, &mut data)), &log),
            ExitAction::Resume
        );
        assert_eq!(data, [0xff; 4]);
        assert!(log.0.borrow().is_empty());
    }

    #[test]
    fn port_and_mmio_accesses_reach_devices() {
        let log = Log::default();
        assert_eq!(
            handle_exit(Ok(VcpuExit::IoOut(0x3f8, b"A")), &log),
            ExitAction::Resume
        );
        let mut byte = [0u8];
        handle_exit(Ok(VcpuExit::IoIn(0x3fd, &mut byte)), &log);
        assert_eq!(byte, [0x5a]);
        let mut word = [0u8; 4];
        let ExitAction::Mmio(read) =
            handle_exit(Ok(VcpuExit::MmioRead(0xd000_0000, &mut word)), &log)
        else {
            panic!("an MMIO read is left to the loop");
        };
        assert_eq!(
            (read.addr, read.len, read.is_write),
            (0xd000_0000, 4, false)
        );
        assert_eq!(
            read.perform(&log),
            Some([0xa5, 0xa5, 0xa5, 0xa5, 0, 0, 0, 0])
        );
        let ExitAction::Mmio(write) =
            handle_exit(Ok(VcpuExit::MmioWrite(0xd000_0004, &[1, 2])), &log)
        else {
            panic!("an MMIO write is left to the loop");
        };
        assert_eq!(write.perform(&log), None);
        assert_eq!(
            *log.0.borrow(),
            [
                "out 0x3f8 [65]",
                "in 0x3fd",
                "read 0xd0000000",
                "write 0xd0000004 [1, 2]"
            ]
        );
    }

    #[test]
    fn fatal_exits_crash_and_kicks_interrupt() {
        let log = Log::default();
        assert_eq!(handle_exit(Ok(VcpuExit::Hlt), &log), ExitAction::Halt);
        assert_eq!(
            handle_exit(Ok(VcpuExit::Shutdown), &log),
            ExitAction::Crash("triple fault".into())
        );
        assert!(matches!(
            handle_exit(Ok(VcpuExit::InternalError), &log),
            ExitAction::Crash(_)
        ));
        assert!(matches!(
            handle_exit(Ok(VcpuExit::FailEntry(7, 1)), &log),
            ExitAction::Crash(_)
        ));
        assert_eq!(
            handle_exit(Err(errno::Error::new(libc::EINTR)), &log),
            ExitAction::Interrupted
        );
        assert!(matches!(
            handle_exit(Err(errno::Error::new(libc::EFAULT)), &log),
            ExitAction::Crash(_)
        ));
        assert!(matches!(
            handle_exit(Ok(VcpuExit::Unknown), &log),
            ExitAction::Crash(_)
        ));
    }

    #[test]
    fn debug_exits_carry_the_event() {
        let log = Log::default();
        let arch = kvm_debug_exit_arch {
            exception: 1,
            pad: 0,
            pc: 0x10_0000,
            dr6: 0x4000,
            dr7: 0,
        };
        assert_eq!(
            handle_exit(Ok(VcpuExit::Debug(arch)), &log),
            ExitAction::Debug(DebugExit {
                exception: 1,
                pc: 0x10_0000,
                dr6: 0x4000,
                dr7: 0
            })
        );
    }
}
