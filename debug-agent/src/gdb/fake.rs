//! An in-memory [`GuestHandle`] for tests and fuzzing without KVM: a small long-mode guest
//! (128 KiB of RAM identity-mapped through one 2 MiB page) whose vCPUs stop and run at once.
//!
//! It is strict where the real partition is forgiving: a vCPU index the target should never
//! pass (outside `0..vcpu_count()`) panics, so that a fuzzer finds the target path that passed
//! it.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hv_core::probe::DebugCaps;
use hv_core::vcpu::DebugControl;
use hv_core::{PartitionError, PartitionLifecycle, VcpuRegisters, VcpuThreadState};

use super::handle::GuestHandle;

/// Guest-physical RAM size.
pub const FAKE_MEMORY: usize = 0x20000;
/// Where the vCPUs start (and where gdb finds code-like bytes).
pub const FAKE_ENTRY: u64 = 0x10000;
const PML4: u64 = 0x1000;

#[derive(Debug, Clone)]
struct FakeVcpu {
    registers: VcpuRegisters,
    stopped: bool,
    debug: DebugControl,
    resumes: u64,
}

#[derive(Debug)]
struct FakeState {
    memory: Vec<u8>,
    vcpus: Vec<FakeVcpu>,
    raised: Vec<(u32, u8)>,
    debug_log: Vec<(u32, DebugControl)>,
    resets: u32,
}

/// A fake partition; clones share the same guest.
#[derive(Debug, Clone)]
pub struct FakeGuest {
    name: String,
    caps: DebugCaps,
    state: Arc<Mutex<FakeState>>,
}

fn initial_memory() -> Vec<u8> {
    let mut memory = vec![0u8; FAKE_MEMORY];
    let mut entry = |at: u64, value: u64| {
        memory[at as usize..at as usize + 8].copy_from_slice(&value.to_le_bytes());
    };
    entry(PML4, 0x2000 | 3); // PML4[0] -> PDPT
    entry(0x2000, 0x3000 | 3); // PDPT[0] -> PD
    entry(0x3000, 0x83); // PD[0]: 2 MiB page at 0, present, writable
    // A few instructions at the entry: nop; nop; jmp $-2.
    memory[FAKE_ENTRY as usize..FAKE_ENTRY as usize + 4].copy_from_slice(&[0x90, 0x90, 0xeb, 0xfe]);
    memory
}

fn initial_registers(vcpu: u32) -> VcpuRegisters {
    let mut r = VcpuRegisters::default();
    r.regs.rip = FAKE_ENTRY;
    r.regs.rsp = 0x1f000 - 0x1000 * u64::from(vcpu);
    r.regs.rflags = 0x2;
    r.sregs.cr0 = 0x8000_0011; // PG | ET | PE
    r.sregs.cr3 = PML4;
    r.sregs.cr4 = 0x20; // PAE
    r.sregs.efer = 0x500; // LMA | LME
    r.sregs.cs.selector = 0x8;
    r.sregs.cs.l = 1;
    r
}

impl FakeGuest {
    /// A guest called `name` with `vcpus` vCPUs (at least one) on a host with `caps`.
    pub fn new(name: &str, vcpus: u32, caps: DebugCaps) -> FakeGuest {
        let vcpus = (0..vcpus.max(1))
            .map(|v| FakeVcpu {
                registers: initial_registers(v),
                stopped: false,
                resumes: 0,
                debug: DebugControl::default(),
            })
            .collect();
        FakeGuest {
            name: name.to_owned(),
            caps,
            state: Arc::new(Mutex::new(FakeState {
                memory: initial_memory(),
                vcpus,
                raised: Vec::new(),
                debug_log: Vec::new(),
                resets: 0,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn with_vcpu<T>(&self, vcpu: u32, f: impl FnOnce(&mut FakeVcpu) -> T) -> T {
        let mut state = self.lock();
        let count = state.vcpus.len();
        let v = state
            .vcpus
            .get_mut(vcpu as usize)
            .unwrap_or_else(|| panic!("the target passed vCPU {vcpu} of {count}"));
        f(v)
    }

    /// True when every vCPU runs with no debug controls left (after a detach that resumes).
    pub fn released(&self) -> bool {
        self.lock()
            .vcpus
            .iter()
            .all(|v| !v.stopped && v.debug == DebugControl::default())
    }

    /// True when `vcpu` is stopped for the debugger.
    pub fn stopped(&self, vcpu: u32) -> bool {
        self.with_vcpu(vcpu, |v| v.stopped)
    }

    /// `vcpu`'s current debug controls.
    pub fn debug(&self, vcpu: u32) -> DebugControl {
        self.with_vcpu(vcpu, |v| v.debug)
    }

    /// Guest-physical memory.
    pub fn memory(&self) -> Vec<u8> {
        self.lock().memory.clone()
    }

    /// Interrupts raised so far (vCPU, vector).
    pub fn raised(&self) -> Vec<(u32, u8)> {
        self.lock().raised.clone()
    }

    /// Every `set_debug` so far (vCPU, controls), in order.
    pub fn debug_log(&self) -> Vec<(u32, DebugControl)> {
        self.lock().debug_log.clone()
    }

    /// Number of resets.
    pub fn resets(&self) -> u32 {
        self.lock().resets
    }
}

/// The bytes of the fake RAM at `addr..addr + len`, or the error a real partition gives.
fn range(name: &str, addr: u64, len: usize) -> Result<std::ops::Range<usize>, PartitionError> {
    let outside = || PartitionError::Memory {
        name: name.to_owned(),
        addr,
        len,
    };
    let start = usize::try_from(addr).map_err(|_| outside())?;
    match start.checked_add(len) {
        Some(end) if end <= FAKE_MEMORY => Ok(start..end),
        _ => Err(outside()),
    }
}

impl GuestHandle for FakeGuest {
    fn name(&self) -> &str {
        &self.name
    }

    fn vcpu_count(&self) -> u32 {
        self.lock().vcpus.len() as u32
    }

    fn state(&self) -> PartitionLifecycle {
        // (A debugger stop is a vCPU state; the partition stays running.)
        PartitionLifecycle::Running
    }

    fn vcpu_state(&self, vcpu: u32) -> VcpuThreadState {
        if self.with_vcpu(vcpu, |v| v.stopped) {
            VcpuThreadState::DebugStopped
        } else {
            VcpuThreadState::Running
        }
    }

    fn debug_caps(&self) -> DebugCaps {
        self.caps
    }

    fn request_stop(&self, vcpu: u32) {
        self.with_vcpu(vcpu, |v| v.stopped = true);
    }

    fn release_stop(&self, vcpu: u32) {
        self.with_vcpu(vcpu, |v| v.stopped = false);
    }

    fn resume(&self, vcpu: u32, control: DebugControl) -> u64 {
        self.set_debug(vcpu, control);
        self.with_vcpu(vcpu, |v| {
            v.stopped = false;
            v.resumes += 1;
            v.resumes
        })
    }

    fn wait_parked(&self, vcpus: &[u32], _timeout: Duration) -> bool {
        vcpus.iter().all(|v| self.with_vcpu(*v, |v| v.stopped))
    }

    fn registers(&self, vcpu: u32) -> Result<VcpuRegisters, PartitionError> {
        Ok(self.with_vcpu(vcpu, |v| v.registers))
    }

    fn set_registers(&self, vcpu: u32, registers: VcpuRegisters) -> Result<(), PartitionError> {
        self.with_vcpu(vcpu, |v| v.registers = registers);
        Ok(())
    }

    fn set_debug(&self, vcpu: u32, control: DebugControl) {
        self.with_vcpu(vcpu, |v| v.debug = control);
        self.lock().debug_log.push((vcpu, control));
    }

    fn reinject_breakpoint(&self, vcpu: u32) -> Result<(), PartitionError> {
        self.with_vcpu(vcpu, |_| ());
        Ok(())
    }

    fn read_memory(&self, addr: u64, buf: &mut [u8]) -> Result<(), PartitionError> {
        let r = range(&self.name, addr, buf.len())?;
        buf.copy_from_slice(&self.lock().memory[r]);
        Ok(())
    }

    fn write_memory(&self, addr: u64, buf: &[u8]) -> Result<(), PartitionError> {
        let r = range(&self.name, addr, buf.len())?;
        self.lock().memory[r].copy_from_slice(buf);
        Ok(())
    }

    fn reset(&self) -> Result<(), PartitionError> {
        let mut state = self.lock();
        state.memory = initial_memory();
        for (i, v) in state.vcpus.iter_mut().enumerate() {
            v.registers = initial_registers(i as u32);
            v.stopped = false;
        }
        state.resets += 1;
        Ok(())
    }

    fn raise(&self, vcpu: u32, vector: u8) -> Result<(), PartitionError> {
        let mut state = self.lock();
        if vcpu as usize >= state.vcpus.len() {
            return Err(PartitionError::NoSuchVcpu {
                name: self.name.clone(),
                index: vcpu,
            });
        }
        state.raised.push((vcpu, vector));
        Ok(())
    }

    fn partitions_report(&self) -> Vec<String> {
        let vcpus: Vec<String> = (0..self.vcpu_count())
            .map(|v| format!("{v}:{}", self.vcpu_state(v).name()))
            .collect();
        vec![format!(
            "{:<3} {:<16} {:<10} vcpus {}",
            0,
            self.name,
            self.state().name(),
            vcpus.join(" ")
        )]
    }
}

/// Checks that `output` (what a stub sent) is only acks (`+`, `-`) and whole `$body#xx`
/// packets with correct checksums.
pub fn check_stub_output(output: &[u8]) -> Result<(), String> {
    let mut i = 0;
    while i < output.len() {
        match output[i] {
            b'+' | b'-' => i += 1,
            b'$' => {
                let Some(hash) = output[i..].iter().position(|&b| b == b'#') else {
                    return Err(format!("packet at {i} has no '#'"));
                };
                let body = &output[i + 1..i + hash];
                let Some(sum) = output.get(i + hash + 1..i + hash + 3) else {
                    return Err(format!("packet at {i} has no checksum"));
                };
                let sum = std::str::from_utf8(sum)
                    .ok()
                    .and_then(|s| u8::from_str_radix(s, 16).ok())
                    .ok_or_else(|| format!("packet at {i}: bad checksum digits"))?;
                let actual = body.iter().fold(0u8, |a, b| a.wrapping_add(*b));
                if sum != actual {
                    return Err(format!(
                        "packet at {i}: checksum {sum:02x}, body sums to {actual:02x}"
                    ));
                }
                i += hash + 3;
            }
            other => return Err(format!("byte {other:#04x} at {i} outside a packet")),
        }
    }
    Ok(())
}
