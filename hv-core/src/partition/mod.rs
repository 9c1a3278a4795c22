//! A partition: one KVM VM with its memory, vCPUs, devices, timer and IPC endpoints, and its
//! lifecycle (created, running, paused, crashed, exited; reset and restart).
//!
//! Control calls (pause, resume, reset) lock only this partition's control mutex and talk to its
//! vCPUs through their `VcpuShared`; nothing here can block another partition.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use hv_config::PartitionConfig;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::boot::{self, BootInfo};
use crate::bus::Bus;
use crate::clock::Clock;
use crate::console::{Console, Uart};
use crate::events::{EventHub, SystemEvent};
use crate::ipc::IpcChannel;
pub use crate::lifecycle::{CrashRegisters, CrashReport, PartitionLifecycle};
use crate::loader::{GuestImage, LoadError};
use crate::timer::VirtualTimer;
use crate::vcpu::{
    DebugExit, DebugReport, StopRegisters, VcpuError, VcpuRegisters, VcpuShared, VcpuThreadState,
};

mod handle;
mod host;
mod hypercalls;

pub use handle::PartitionHandle;

/// Errors of partition control.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    /// The request does not apply in the current state.
    #[error("partition {name} is {state}")]
    WrongState {
        /// Partition name.
        name: String,
        /// Its state.
        state: String,
    },
    /// vCPUs did not park in time.
    #[error("partition {0}: vCPUs did not stop in time")]
    StopTimeout(String),
    /// Reloading the image failed.
    #[error("partition {name}: cannot reload")]
    Load {
        /// Partition name.
        name: String,
        /// Why.
        #[source]
        source: LoadError,
    },
    /// Writing boot structures failed.
    #[error("partition {name}: cannot write boot structures")]
    Boot {
        /// Partition name.
        name: String,
        /// Why.
        #[source]
        source: boot::BootError,
    },
    /// A vCPU request failed.
    #[error("partition {name}")]
    Vcpu {
        /// Partition name.
        name: String,
        /// Why.
        #[source]
        source: VcpuError,
    },
    /// No such vCPU.
    #[error("partition {name} has no vCPU {index}")]
    NoSuchVcpu {
        /// Partition name.
        name: String,
        /// Requested index.
        index: u32,
    },
    /// Guest memory access outside RAM and IPC windows.
    #[error("partition {name}: no guest memory at {addr:#x}+{len:#x}")]
    Memory {
        /// Partition name.
        name: String,
        /// Address.
        addr: u64,
        /// Length.
        len: usize,
    },
}

/// Live counters of a partition, kept by the hypervisor (sums over its vCPUs where that is
/// cheaper to keep here); the host link's snapshot of them is `hv_link::control::PartitionStats`.
#[derive(Debug, Default)]
pub struct PartitionCounters {
    /// Hypercalls made.
    pub hypercalls: AtomicU64,
    /// Interrupts injected.
    pub irqs_injected: AtomicU64,
    /// Port or MMIO accesses nothing answered.
    pub unmapped_accesses: AtomicU64,
}

/// One IPC channel as one partition sees it.
#[derive(Debug)]
pub struct IpcEndpoint {
    /// The channel.
    pub channel: Arc<IpcChannel>,
    /// 0 or 1.
    pub endpoint: usize,
    /// Where the shared window is in this partition.
    pub gpa: u64,
}

/// Where an attached debugger takes its debug stops: called on the stopped vCPU's thread, once
/// that vCPU has parked. Dropped when the debugger detaches or another one of the same scope
/// replaces it.
pub type DebugSink = Arc<dyn Fn(DebugStopEvent) + Send + Sync>;

/// A debug event reported to an attached debugger.
#[derive(Debug, Clone, Copy)]
pub struct DebugStopEvent {
    /// The vCPU that stopped.
    pub vcpu: u32,
    /// What it hit.
    pub exit: DebugExit,
    /// Registers at the exit that came free with it (see [`StopRegisters`]).
    pub registers: StopRegisters,
    /// The number of the debugger resume the vCPU ran under ([`VcpuShared::resume_with`]).
    pub resume: u64,
}

const RUN: u8 = 0;
const HOLD: u8 = 1; // created or paused
const RESETTING: u8 = 2;
const CRASHED: u8 = 3;
const EXITED: u8 = 4;

/// How long control requests wait for vCPUs to park.
const PARK_TIMEOUT: Duration = Duration::from_secs(5);

/// At most this many unmapped-access warnings are published per partition (then they are only
/// counted).
const MAX_WARNINGS: u64 = 16;

/// A partition and everything its vCPU threads share.
pub(crate) struct Partition {
    /// Index in the system description.
    pub(crate) id: usize,
    /// Name from the system description.
    pub(crate) name: String,
    /// Its description.
    pub(crate) config: PartitionConfig,
    /// Guest-physical memory: RAM plus IPC windows.
    pub(crate) memory: GuestMemoryMmap,
    /// vCPUs.
    pub(crate) vcpus: Vec<Arc<VcpuShared>>,
    /// Port I/O devices.
    pio: Bus,
    /// MMIO devices.
    mmio: Bus,
    /// The UART (for host input).
    uart: Arc<Mutex<Uart>>,
    /// Console output.
    console: Arc<Console>,
    /// The virtual timer.
    timer: VirtualTimer,
    /// IPC channels, in channel-number order.
    ipc: Vec<IpcEndpoint>,
    /// Devices this partition serves as a device model, in device-number order.
    served: Vec<Arc<crate::devmodel::ServedDevice>>,
    /// Where events go.
    events: Arc<EventHub>,
    /// Trace clock.
    clock: Arc<Clock>,
    /// Counters.
    stats: PartitionCounters,
    image: GuestImage,
    boot_info: BootInfo,
    state: Mutex<PartitionLifecycle>,
    run_state: AtomicU8,
    in_window: AtomicBool,
    shutdown: AtomicBool,
    start_ns: AtomicU64,
    control: Mutex<()>,
    park_lock: Mutex<()>,
    park_cond: Condvar,
    /// Threads in `wait_vcpus_parked`: a park or unpark with none costs no wake-up.
    park_waiters: AtomicUsize,
    debuggers: Mutex<Vec<(Option<u32>, DebugSink)>>,
    warnings: AtomicU64,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partition")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("state", &self.state())
            .finish()
    }
}

/// What `Partition::new` needs besides the description.
pub struct PartitionParts {
    /// Guest memory (RAM and IPC windows), already registered with KVM.
    pub memory: GuestMemoryMmap,
    /// vCPU shared states.
    pub vcpus: Vec<Arc<VcpuShared>>,
    /// Port bus (the UART is already on it).
    pub pio: Bus,
    /// MMIO bus.
    pub mmio: Bus,
    /// The UART.
    pub uart: Arc<Mutex<Uart>>,
    /// The console.
    pub console: Arc<Console>,
    /// IPC endpoints.
    pub ipc: Vec<IpcEndpoint>,
    /// Devices served by this partition.
    pub served: Vec<Arc<crate::devmodel::ServedDevice>>,
    /// The parsed image.
    pub image: GuestImage,
    /// Boot info to write at every (re)load.
    pub boot_info: BootInfo,
    /// Whether the partition may run before the scheduler opens a window.
    pub in_window: bool,
}

impl Partition {
    /// Assembles a partition (not loaded, vCPU threads not started).
    pub fn new(
        id: usize,
        config: PartitionConfig,
        parts: PartitionParts,
        events: Arc<EventHub>,
        clock: Arc<Clock>,
    ) -> std::io::Result<Partition> {
        Ok(Partition {
            id,
            name: config.name.clone(),
            timer: VirtualTimer::start(&config.name)?,
            config,
            memory: parts.memory,
            vcpus: parts.vcpus,
            pio: parts.pio,
            mmio: parts.mmio,
            uart: parts.uart,
            console: parts.console,
            ipc: parts.ipc,
            served: parts.served,
            events,
            start_ns: AtomicU64::new(clock.now_ns()),
            clock,
            stats: PartitionCounters::default(),
            image: parts.image,
            boot_info: parts.boot_info,
            state: Mutex::new(PartitionLifecycle::Created),
            run_state: AtomicU8::new(HOLD),
            in_window: AtomicBool::new(parts.in_window),
            shutdown: AtomicBool::new(false),
            control: Mutex::new(()),
            park_lock: Mutex::new(()),
            park_cond: Condvar::new(),
            park_waiters: AtomicUsize::new(0),
            debuggers: Mutex::new(Vec::new()),
            warnings: AtomicU64::new(0),
        })
    }

    /// The guest image's entry point.
    pub fn entry(&self) -> u64 {
        self.image.entry
    }

    /// The image path.
    pub fn image_path(&self) -> &std::path::Path {
        &self.image.path
    }

    /// Current state.
    pub fn state(&self) -> PartitionLifecycle {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_state(&self, state: PartitionLifecycle) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = state.clone();
        self.events.publish(SystemEvent::StateChanged {
            partition: self.id,
            state,
        });
    }

    /// Zeroes RAM and writes boot structures, boot info and the image.
    pub fn load(&self) -> Result<(), PartitionError> {
        self.zero_ram();
        let boot_err = |source| PartitionError::Boot {
            name: self.name.clone(),
            source,
        };
        boot::write_boot_tables(&self.memory).map_err(boot_err)?;
        boot::write_boot_info(&self.memory, &self.boot_info).map_err(boot_err)?;
        self.image
            .load(&self.memory)
            .map_err(|source| PartitionError::Load {
                name: self.name.clone(),
                source,
            })
    }

    fn zero_ram(&self) {
        let Some(ram) = self.memory.find_region(GuestAddress(0)) else {
            return;
        };
        let Ok(host) = self.memory.get_host_address(GuestAddress(0)) else {
            return;
        };
        // SAFETY: `host` is the start of the RAM region's private anonymous mapping, which is
        // `len()` bytes long and lives as long as `self.memory`; MADV_DONTNEED on such a mapping
        // replaces its pages with zero-filled ones and touches nothing else.
        let ret = unsafe { libc::madvise(host.cast(), ram.len() as usize, libc::MADV_DONTNEED) };
        if ret != 0 {
            // Fallback: write zeros.
            let zeros = vec![0u8; 1 << 20];
            let mut addr = 0;
            while addr < ram.len() {
                let n = (ram.len() - addr).min(zeros.len() as u64) as usize;
                let _ =
                    vm_memory::Bytes::write_slice(&self.memory, &zeros[..n], GuestAddress(addr));
                addr += n as u64;
            }
        }
    }

    /// vCPUs park in this state, or None when they may run.
    pub(crate) fn parked_state(&self) -> Option<VcpuThreadState> {
        match self.run_state.load(Ordering::Acquire) {
            RUN => None,
            CRASHED => Some(VcpuThreadState::Crashed),
            EXITED => Some(VcpuThreadState::Exited),
            _ => Some(VcpuThreadState::Paused),
        }
    }

    /// Whether the schedule lets this partition run now.
    pub fn in_window(&self) -> bool {
        self.in_window.load(Ordering::Acquire)
    }

    /// Opens or closes the partition's schedule window.
    pub fn set_in_window(&self, open: bool) {
        if self.in_window.swap(open, Ordering::AcqRel) != open {
            self.kick_all();
        }
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutdown.load(Ordering::Acquire)
    }

    /// Asks every vCPU thread to end (system shutdown).
    pub fn shut_down(&self) {
        self.shutdown.store(true, Ordering::Release);
        self.timer.cancel();
        self.kick_all();
    }

    /// A vCPU parked or left a parked state (its state is already stored).
    pub(crate) fn notify_parked(&self) {
        // A waiter counts itself before it looks at the states: either it sees this state or
        // it is counted here and woken.
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.park_waiters.load(Ordering::SeqCst) == 0 {
            return;
        }
        // Taken and released before the notify, so the woken waiter does not block on it.
        drop(self.park_lock.lock().unwrap_or_else(|p| p.into_inner()));
        self.park_cond.notify_all();
    }

    fn kick_all(&self) {
        for vcpu in &self.vcpus {
            vcpu.kick();
        }
    }

    /// Waits until every vCPU is parked (or gone).
    pub fn wait_parked(&self, timeout: Duration) -> bool {
        let all: Vec<u32> = (0..self.vcpus.len() as u32).collect();
        self.wait_vcpus_parked(&all, timeout)
    }

    /// Waits until the listed vCPUs are parked (or gone).
    pub fn wait_vcpus_parked(&self, vcpus: &[u32], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut guard = self.park_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.park_waiters.fetch_add(1, Ordering::SeqCst);
        let parked = loop {
            if vcpus
                .iter()
                .filter_map(|i| self.vcpus.get(*i as usize))
                .all(|v| v.state().is_parked())
            {
                break true;
            }
            let now = Instant::now();
            if now >= deadline {
                break false;
            }
            guard = self
                .park_cond
                .wait_timeout(guard, (deadline - now).min(Duration::from_millis(50)))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        };
        self.park_waiters.fetch_sub(1, Ordering::SeqCst);
        parked
    }

    /// Nanoseconds since the partition (re)started.
    pub fn uptime_ns(&self) -> u64 {
        self.clock
            .now_ns()
            .saturating_sub(self.start_ns.load(Ordering::Relaxed))
    }

    fn wrong_state(&self) -> PartitionError {
        PartitionError::WrongState {
            name: self.name.clone(),
            state: self.state().to_string(),
        }
    }

    /// Starts a created partition, or resumes a paused one.
    pub fn resume(&self) -> Result<(), PartitionError> {
        let _control = self.control.lock().unwrap_or_else(|p| p.into_inner());
        match self.state() {
            PartitionLifecycle::Created | PartitionLifecycle::Paused => {
                if self.state() == PartitionLifecycle::Created {
                    self.start_ns.store(self.clock.now_ns(), Ordering::Relaxed);
                }
                self.run_state.store(RUN, Ordering::Release);
                self.set_state(PartitionLifecycle::Running);
                self.kick_all();
                Ok(())
            }
            PartitionLifecycle::Running => Ok(()),
            _ => Err(self.wrong_state()),
        }
    }

    /// Pauses a running partition and returns once all its vCPUs are parked.
    pub fn pause(&self) -> Result<(), PartitionError> {
        let _control = self.control.lock().unwrap_or_else(|p| p.into_inner());
        match self.state() {
            PartitionLifecycle::Running => {
                self.run_state.store(HOLD, Ordering::Release);
                self.kick_all();
                if !self.wait_parked(PARK_TIMEOUT) {
                    return Err(PartitionError::StopTimeout(self.name.clone()));
                }
                self.set_state(PartitionLifecycle::Paused);
                Ok(())
            }
            PartitionLifecycle::Paused => Ok(()),
            _ => Err(self.wrong_state()),
        }
    }

    /// Stops the partition, reloads its image into zeroed RAM, puts every vCPU back at the entry
    /// and runs it again. Works from any state.
    pub fn reset(&self) -> Result<(), PartitionError> {
        let _control = self.control.lock().unwrap_or_else(|p| p.into_inner());
        self.run_state.store(RESETTING, Ordering::Release);
        self.kick_all();
        if !self.wait_parked(PARK_TIMEOUT) {
            return Err(PartitionError::StopTimeout(self.name.clone()));
        }
        self.timer.cancel();
        self.console.reset();
        for endpoint in &self.ipc {
            endpoint.channel.clear(endpoint.endpoint);
        }
        self.load()?;
        let entry = self.image.entry;
        for vcpu in &self.vcpus {
            vcpu.reset(entry).map_err(|source| PartitionError::Vcpu {
                name: self.name.clone(),
                source,
            })?;
        }
        self.start_ns.store(self.clock.now_ns(), Ordering::Relaxed);
        self.run_state.store(RUN, Ordering::Release);
        self.set_state(PartitionLifecycle::Running);
        self.kick_all();
        Ok(())
    }

    /// Marks the partition crashed (first report wins); its other vCPUs park.
    pub(crate) fn crash(&self, vcpu: u32, reason: String, registers: Option<VcpuRegisters>) {
        let previous = self.run_state.swap(CRASHED, Ordering::AcqRel);
        if previous == CRASHED || previous == EXITED {
            self.run_state.store(previous, Ordering::Release);
            return;
        }
        self.timer.cancel();
        // The guest's last words come before the news of its end.
        self.console.finish_line();
        self.set_state(PartitionLifecycle::Crashed(CrashReport {
            reason,
            vcpu,
            registers: registers.as_ref().map(CrashRegisters::from),
        }));
        self.kick_all();
    }

    /// Marks the partition exited; its vCPUs park.
    pub(crate) fn exit(&self, code: i64) {
        let previous = self.run_state.swap(EXITED, Ordering::AcqRel);
        if previous == CRASHED || previous == EXITED {
            self.run_state.store(previous, Ordering::Release);
            return;
        }
        self.timer.cancel();
        self.console.finish_line();
        self.set_state(PartitionLifecycle::Exited(code));
        self.kick_all();
    }

    /// Routes a debug exit to the debugger attached to this vCPU (a per-vCPU one first, else the
    /// partition's), which then owns the stopped vCPU: requests the stop and returns the report
    /// for the vCPU to send once parked. None when no debugger is attached (the caller then drops
    /// its debug controls: nobody is there to step or break).
    pub(crate) fn debug_exit(
        &self,
        vcpu: &VcpuShared,
        exit: DebugExit,
        registers: StopRegisters,
    ) -> Option<DebugReport> {
        let debuggers = self.debuggers.lock().unwrap_or_else(|p| p.into_inner());
        let sink = debuggers
            .iter()
            .find(|(filter, _)| *filter == Some(vcpu.index))
            .or_else(|| debuggers.iter().find(|(filter, _)| filter.is_none()));
        match sink {
            Some((_, sink)) => {
                vcpu.request_stop();
                if let Some(what) = debug_stop_name(&exit) {
                    self.note_debugger(
                        true,
                        format!("{what} on vCPU {} at {:#x}", vcpu.index, exit.pc),
                    );
                }
                let sink = sink.clone();
                let event = DebugStopEvent {
                    vcpu: vcpu.index,
                    exit,
                    registers,
                    resume: vcpu.resumed_as(),
                };
                Some(Box::new(move || sink(event)))
            }
            None => {
                self.warn(format!(
                    "vCPU {} debug exception {} at {:#x} with no debugger attached; debugging \
                     switched off",
                    vcpu.index, exit.exception, exit.pc
                ));
                None
            }
        }
    }

    /// Attaches a debugger for one vCPU (`Some(index)`) or the whole partition (`None`); its
    /// debug exits are handed to `sink`. Replaces an earlier debugger with the same scope.
    pub fn attach_debugger(&self, scope: Option<u32>, sink: DebugSink) {
        {
            let mut debuggers = self.debuggers.lock().unwrap_or_else(|p| p.into_inner());
            debuggers.retain(|(filter, _)| *filter != scope);
            debuggers.push((scope, sink));
        }
        self.note_debugger(true, format!("debugger attached to {}", scope_name(scope)));
    }

    /// Detaches the debugger of `scope`.
    pub fn detach_debugger(&self, scope: Option<u32>) {
        let mut debuggers = self.debuggers.lock().unwrap_or_else(|p| p.into_inner());
        let before = debuggers.len();
        debuggers.retain(|(filter, _)| *filter != scope);
        let detached = debuggers.len() < before;
        drop(debuggers);
        if detached {
            self.note_debugger(
                false,
                format!("debugger detached from {}", scope_name(scope)),
            );
        }
    }

    /// Tells event subscribers (the console's event log) what a debugger did.
    fn note_debugger(&self, stopped: bool, detail: String) {
        self.events.publish(SystemEvent::Debugger {
            partition: self.id,
            stopped,
            detail,
        });
    }

    /// vCPU `index`.
    pub fn vcpu(&self, index: u32) -> Result<&Arc<VcpuShared>, PartitionError> {
        self.vcpus
            .get(index as usize)
            .ok_or(PartitionError::NoSuchVcpu {
                name: self.name.clone(),
                index,
            })
    }

    /// Reads guest-physical memory.
    pub fn read_memory(&self, addr: u64, buf: &mut [u8]) -> Result<(), PartitionError> {
        vm_memory::Bytes::read_slice(&self.memory, buf, GuestAddress(addr)).map_err(|_| {
            PartitionError::Memory {
                name: self.name.clone(),
                addr,
                len: buf.len(),
            }
        })
    }

    /// Writes guest-physical memory.
    pub fn write_memory(&self, addr: u64, buf: &[u8]) -> Result<(), PartitionError> {
        vm_memory::Bytes::write_slice(&self.memory, buf, GuestAddress(addr)).map_err(|_| {
            PartitionError::Memory {
                name: self.name.clone(),
                addr,
                len: buf.len(),
            }
        })
    }

    /// Sends host input to the guest's UART; returns how many bytes fit.
    pub fn console_input(&self, bytes: &[u8]) -> usize {
        self.uart
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .input(bytes)
    }

    /// Publishes a warning, rate-limited per partition.
    pub fn warn(&self, message: String) {
        let n = self.warnings.fetch_add(1, Ordering::Relaxed);
        if n < MAX_WARNINGS {
            let message = if n + 1 == MAX_WARNINGS {
                format!("{message} (further warnings of this partition are only counted)")
            } else {
                message
            };
            tracing::warn!(partition = %self.name, "{message}");
            self.events.publish(SystemEvent::Warning {
                partition: self.id,
                message,
            });
        }
    }

    fn unmapped(&self, what: &str, addr: u64, len: usize) {
        self.stats.unmapped_accesses.fetch_add(1, Ordering::Relaxed);
        self.warn(format!("{what} of {len} bytes at unmapped {addr:#x}"));
    }
}

/// `the partition` or `vCPU j`, for debugger notes.
fn scope_name(scope: Option<u32>) -> String {
    scope.map_or_else(|| "the partition".to_owned(), |j| format!("vCPU {j}"))
}

/// What a debug exit handed to a debugger was, for the event log; None for a single step (one
/// per instruction while gdb steps: not news).
fn debug_stop_name(exit: &DebugExit) -> Option<&'static str> {
    /// DR6.B0..B3: a debug register matched.
    const DR6_HIT: u64 = 0xf;
    match exit.exception {
        3 => Some("breakpoint"),
        // A debug register: a hardware breakpoint, a watchpoint, or a software breakpoint kept
        // in a debug register (see `hv_core::probe`).
        1 if exit.dr6 & DR6_HIT != 0 => Some("breakpoint or watchpoint"),
        1 => None,
        _ => Some("debug exception"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debugger_stops_are_named_and_steps_are_not() {
        let exit = |exception, dr6| DebugExit {
            exception,
            pc: 0x1000,
            dr6,
            dr7: 0,
        };
        assert_eq!(debug_stop_name(&exit(3, 0)), Some("breakpoint"));
        assert_eq!(
            debug_stop_name(&exit(1, 0xffff_0ff2)),
            Some("breakpoint or watchpoint")
        );
        assert_eq!(debug_stop_name(&exit(1, 0xffff_4ff0)), None);
        assert_eq!(scope_name(None), "the partition");
        assert_eq!(scope_name(Some(1)), "vCPU 1");
    }
}
