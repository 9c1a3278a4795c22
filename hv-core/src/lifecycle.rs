//! A partition's lifecycle as the rest of the system sees it: its state (created, running,
//! paused, crashed, exited) and, for a crash, the report with the vCPU's last registers.

use crate::vcpu::VcpuRegisters;

/// Lifecycle state of a partition (the hypervisor's view; the host link reports it as
/// `hv_link::control::PartitionState`, which adds `stopped_in_debugger` and `halted`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionLifecycle {
    /// Loaded, not started yet.
    Created,
    /// Running.
    Running,
    /// Paused by a control request.
    Paused,
    /// Stopped by a fatal guest error; the other partitions run on.
    Crashed(CrashReport),
    /// The guest called `HV_EXIT`.
    Exited(i64),
}

impl PartitionLifecycle {
    /// A short lowercase name (`running`, `crashed`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            PartitionLifecycle::Created => "created",
            PartitionLifecycle::Running => "running",
            PartitionLifecycle::Paused => "paused",
            PartitionLifecycle::Crashed(_) => "crashed",
            PartitionLifecycle::Exited(_) => "exited",
        }
    }
}

impl std::fmt::Display for PartitionLifecycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PartitionLifecycle::Crashed(report) => write!(f, "crashed: {report}"),
            PartitionLifecycle::Exited(code) => write!(f, "exited with code {code}"),
            other => f.write_str(other.name()),
        }
    }
}

/// Why and where a partition crashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrashReport {
    /// What happened.
    pub reason: String,
    /// The vCPU that hit it.
    pub vcpu: u32,
    /// Its last registers, when they could be read.
    pub registers: Option<CrashRegisters>,
}

/// The registers kept with a crash report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashRegisters {
    /// Instruction pointer.
    pub rip: u64,
    /// Stack pointer.
    pub rsp: u64,
    /// Flags.
    pub rflags: u64,
    /// CR0.
    pub cr0: u64,
    /// CR2 (last page-fault address).
    pub cr2: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// EFER.
    pub efer: u64,
}

impl From<&VcpuRegisters> for CrashRegisters {
    fn from(r: &VcpuRegisters) -> Self {
        CrashRegisters {
            rip: r.regs.rip,
            rsp: r.regs.rsp,
            rflags: r.regs.rflags,
            cr0: r.sregs.cr0,
            cr2: r.sregs.cr2,
            cr3: r.sregs.cr3,
            cr4: r.sregs.cr4,
            efer: r.sregs.efer,
        }
    }
}

impl std::fmt::Display for CrashReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} on vCPU {}", self.reason, self.vcpu)?;
        if let Some(r) = &self.registers {
            write!(
                f,
                " (rip={:#x} rsp={:#x} rflags={:#x} cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} efer={:#x})",
                r.rip, r.rsp, r.rflags, r.cr0, r.cr2, r.cr3, r.cr4, r.efer
            )?;
        }
        Ok(())
    }
}
