//! The control methods that do not depend on a connection's channels: system and partition
//! information, pause / resume / reset, interrupt injection, and the mapping of hv-core states
//! to their wire form.

use std::path::{Component, Path, PathBuf};

use hv_core::partition::PartitionError;
use hv_core::{PartitionHandle, PartitionLifecycle, VcpuThreadState};
use hv_link::control::{InjectIrqParams, PartitionParams, SystemInfo};
use hv_link::rpc::codes;
use hv_link::{PartitionInfo, RpcError, VcpuInfo};

use super::Shared;

/// The wire form of a partition's state. A running partition whose vCPUs are all stopped by a
/// debugger is `stopped_in_debugger`.
pub fn link_partition_state(state: &PartitionLifecycle) -> hv_link::PartitionState {
    use hv_link::PartitionState as L;
    match state {
        PartitionLifecycle::Created => L::Created,
        PartitionLifecycle::Running => L::Running,
        PartitionLifecycle::Paused => L::Paused,
        PartitionLifecycle::Crashed(report) => L::Crashed {
            reason: report.reason.clone(),
        },
        PartitionLifecycle::Exited(code) => L::Exited {
            code: i32::try_from(*code).unwrap_or(if *code < 0 { i32::MIN } else { i32::MAX }),
        },
    }
}

/// Extra detail for a state change (the crash report with vCPU and registers).
pub(crate) fn state_detail(state: &PartitionLifecycle) -> Option<String> {
    match state {
        PartitionLifecycle::Crashed(report) => Some(report.to_string()),
        PartitionLifecycle::Exited(code) => Some(format!("exit code {code}")),
        _ => None,
    }
}

/// The wire form of a vCPU's state; a vCPU whose thread ended is `stopped`.
pub fn link_vcpu_state(state: VcpuThreadState) -> hv_link::VcpuState {
    use hv_link::VcpuState as L;
    match state {
        VcpuThreadState::Created => L::Created,
        VcpuThreadState::Running => L::Running,
        VcpuThreadState::OutOfWindow => L::OutOfWindow,
        VcpuThreadState::BlockedOnDevice => L::BlockedOnDevice,
        VcpuThreadState::Halted => L::Halted,
        VcpuThreadState::Paused => L::Paused,
        VcpuThreadState::DebugStopped => L::StoppedInDebugger,
        VcpuThreadState::Crashed | VcpuThreadState::Exited | VcpuThreadState::Gone => L::Stopped,
    }
}

/// One `partitions.list` entry.
pub(crate) fn partition_info(p: &PartitionHandle) -> PartitionInfo {
    let vcpus: Vec<VcpuInfo> = p
        .vcpus()
        .iter()
        .map(|v| VcpuInfo {
            index: v.index,
            state: link_vcpu_state(v.state()),
            device: v.blocked_on().map(|d| d.to_string()),
        })
        .collect();
    let mut state = link_partition_state(&p.state());
    if state == hv_link::PartitionState::Running
        && !vcpus.is_empty()
        && vcpus
            .iter()
            .all(|v| v.state == hv_link::VcpuState::StoppedInDebugger)
    {
        state = hv_link::PartitionState::StoppedInDebugger;
    }
    PartitionInfo {
        id: u32::try_from(p.id()).unwrap_or(u32::MAX),
        name: p.name().to_owned(),
        state,
        vcpus,
        image: normalize(p.image_path()).display().to_string(),
    }
}

/// `path` with `.` and `dir/..` components removed lexically (no file-system access), so that
/// `/x/examples/../target/a.elf` reads `/x/target/a.elf`.
pub(crate) fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                match out.components().next_back() {
                    Some(Component::Normal(_)) => {
                        out.pop();
                    }
                    // `/..` is `/`.
                    Some(Component::RootDir | Component::Prefix(_)) => {}
                    _ => out.push(c),
                }
            }
            other => out.push(other),
        }
    }
    out
}

pub(crate) fn system_info(shared: &Shared) -> SystemInfo {
    SystemInfo {
        system: shared.system.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    }
}

pub(crate) fn partitions_list(shared: &Shared) -> Vec<PartitionInfo> {
    shared.partitions.iter().map(partition_info).collect()
}

pub(crate) fn find<'a>(shared: &'a Shared, name: &str) -> Result<&'a PartitionHandle, RpcError> {
    shared
        .partition(name)
        .ok_or_else(|| RpcError::unknown_partition(name))
}

/// `e` with its sources, `: `-separated.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn partition_error(e: &PartitionError) -> RpcError {
    match e {
        PartitionError::WrongState { .. } => RpcError::invalid_state(chain(e)),
        PartitionError::NoSuchVcpu { name, index } => RpcError::unknown_vcpu(name, *index),
        _ => RpcError::new(codes::INTERNAL_ERROR, chain(e)),
    }
}

/// Which lifecycle call.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Lifecycle {
    Pause,
    Resume,
    Reset,
}

pub(crate) fn lifecycle(
    shared: &Shared,
    params: &PartitionParams,
    op: Lifecycle,
) -> Result<(), RpcError> {
    let p = find(shared, &params.partition)?;
    let r = match op {
        Lifecycle::Pause => p.pause(),
        Lifecycle::Resume => p.resume(),
        Lifecycle::Reset => p.reset(),
    };
    r.map_err(|e| partition_error(&e))
}

pub(crate) fn inject_irq(shared: &Shared, params: &InjectIrqParams) -> Result<(), RpcError> {
    let p = find(shared, &params.partition)?;
    if params.vector < 32 {
        return Err(RpcError::invalid_params(format!(
            "vector {} is an exception vector; external interrupts use 32..=255",
            params.vector
        )));
    }
    let vcpu = p
        .vcpus()
        .get(params.vcpu as usize)
        .ok_or_else(|| RpcError::unknown_vcpu(p.name(), params.vcpu))?;
    vcpu.raise(params.vector);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hv_core::CrashReport;

    #[test]
    fn states_map_to_the_wire() {
        use hv_link::PartitionState as L;
        assert_eq!(
            link_partition_state(&PartitionLifecycle::Created),
            L::Created
        );
        assert_eq!(link_partition_state(&PartitionLifecycle::Paused), L::Paused);
        assert_eq!(
            link_partition_state(&PartitionLifecycle::Exited(3)),
            L::Exited { code: 3 }
        );
        assert_eq!(
            link_partition_state(&PartitionLifecycle::Exited(i64::MAX)),
            L::Exited { code: i32::MAX }
        );
        let crash = PartitionLifecycle::Crashed(CrashReport {
            reason: "triple fault".into(),
            vcpu: 1,
            registers: None,
        });
        assert_eq!(
            link_partition_state(&crash),
            L::Crashed {
                reason: "triple fault".into()
            }
        );
        assert_eq!(
            state_detail(&crash).as_deref(),
            Some("triple fault on vCPU 1")
        );
        assert_eq!(
            link_vcpu_state(VcpuThreadState::DebugStopped),
            hv_link::VcpuState::StoppedInDebugger
        );
        assert_eq!(
            link_vcpu_state(VcpuThreadState::OutOfWindow),
            hv_link::VcpuState::OutOfWindow
        );
        assert_eq!(
            link_vcpu_state(VcpuThreadState::Gone),
            hv_link::VcpuState::Stopped
        );
    }

    #[test]
    fn image_paths_are_normalized() {
        let n = |p: &str| normalize(Path::new(p)).display().to_string();
        assert_eq!(
            n("/w/examples/../target/guests/a.elf"),
            "/w/target/guests/a.elf"
        );
        assert_eq!(n("/w/./a/b/../../c.elf"), "/w/c.elf");
        assert_eq!(n("../x/./y"), "../x/y");
        assert_eq!(n("/../a"), "/a");
    }
}
