//! Benchmark: hypercall round trip through hv-core against a raw KVM PIO-exit loop written with
//! kvm-ioctls, and partition start time against a raw KVM VM start — both peers measured in the
//! same run. Prints ratios (ours / raw); absolute times on a shared machine drift.
//!
//! The peer for the hypercall ratio runs the very instructions hv's guest runs: `hcbench`'s own
//! `hc_loop`, loaded from its ELF into a raw VM in hv-core's boot state, answered by a bare
//! `KVM_RUN` loop that writes each result into rax (the ABI's minimum). Some hosts emulate every
//! guest instruction (KVM on PVM does, for a guest that is not PVM-aware: about a microsecond per
//! instruction), so a peer that runs fewer guest instructions measures the guest, not the
//! hypervisor. Two minimal `out`-and-jump loops are printed for reference.
//!
//! Run: `cargo bench --bench hypercall` (goal: hypercall ratio ≤ 1.10).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, VcpuExit};

const ROUNDS: usize = 5;
const WINDOW: Duration = Duration::from_millis(400);

/// A minimal guest that does `out %al, $0xE0` in a loop, in real mode (the cheapest possible PIO
/// exit) or in the same long-mode state hv-core boots its guests in (identity paging, same GDT),
/// which is the fair peer: on this host KVM decodes the `out` by walking the guest page tables.
struct RawLoop {
    vcpu: kvm_ioctls::VcpuFd,
    /// Write a hypercall result into rax after each exit (through the synced registers).
    answers: bool,
    _vm: kvm_ioctls::VmFd,
    _memory: vm_memory::GuestMemoryMmap,
}

const CODE: u64 = 0x10_0000;
const REAL_MODE_CODE: u64 = 0x1000;

/// Maps `memory` (one region at guest address 0) into `vm` as slot 0.
fn map_ram(vm: &kvm_ioctls::VmFd, memory: &vm_memory::GuestMemoryMmap) {
    use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion};
    let ram = memory.find_region(GuestAddress(0)).unwrap();
    let region = kvm_userspace_memory_region {
        slot: 0,
        guest_phys_addr: 0,
        memory_size: ram.len(),
        userspace_addr: memory.get_host_address(GuestAddress(0)).unwrap() as u64,
        flags: 0,
    };
    // SAFETY: `memory` outlives the VM (both live in RawLoop, the VM is dropped first).
    unsafe { vm.set_user_memory_region(region).unwrap() };
}

fn raw_vm(kvm: &Kvm, long_mode: bool) -> RawLoop {
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
    let vm = kvm.create_vm().unwrap();
    let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 2 << 20)]).unwrap();
    // mov al, 0 ; out 0xE0, al ; jmp back to the out
    let code = if long_mode { CODE } else { REAL_MODE_CODE };
    memory
        .write_slice(&[0xb0, 0x00, 0xe6, 0xe0, 0xeb, 0xfc], GuestAddress(code))
        .unwrap();
    if long_mode {
        hv_core::boot::write_boot_tables(&memory).unwrap();
    }
    map_ram(&vm, &memory);
    let vcpu = vm.create_vcpu(0).unwrap();
    let mut sregs = vcpu.get_sregs().unwrap();
    if long_mode {
        hv_core::boot::long_mode_sregs(&mut sregs);
    } else {
        sregs.cs.base = 0;
        sregs.cs.selector = 0;
    }
    vcpu.set_sregs(&sregs).unwrap();
    let mut regs = vcpu.get_regs().unwrap();
    regs.rip = code;
    regs.rflags = 2;
    vcpu.set_regs(&regs).unwrap();
    RawLoop {
        vcpu,
        answers: false,
        _vm: vm,
        _memory: memory,
    }
}

/// A raw VM running `hcbench`'s `hc_loop` directly (no SDK start-up, no hypervisor): its image
/// loaded as hv-core loads it, its vCPU set up by hv-core's `init_vcpu`, the same memory size.
fn raw_same_guest(kvm: &Kvm, config: &hv_config::PartitionConfig) -> RawLoop {
    use kvm_ioctls::SyncReg;
    use vm_memory::{GuestAddress, GuestMemoryMmap};
    let bytes = std::fs::read(&config.image).unwrap();
    let elf = object::File::parse(&*bytes).unwrap();
    let hc_loop = object::Object::symbols(&elf)
        .find(|s| object::ObjectSymbol::name(s) == Ok("hc_loop"))
        .map(|s| object::ObjectSymbol::address(&s))
        .expect("hcbench has an hc_loop symbol");
    let image = hv_core::loader::GuestImage::from_file(&config.image, config.memory).unwrap();
    let vm = kvm.create_vm().unwrap();
    vm.set_tss_address(0xfffb_d000).unwrap();
    let memory =
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), config.memory as usize)]).unwrap();
    image.load(&memory).unwrap();
    hv_core::boot::write_boot_tables(&memory).unwrap();
    map_ram(&vm, &memory);
    let mut vcpu = vm.create_vcpu(0).unwrap();
    hv_core::vcpu::init_vcpu(kvm, &vcpu, hc_loop, config.memory, 0).unwrap();
    vcpu.set_sync_valid_reg(SyncReg::Register);
    RawLoop {
        vcpu,
        answers: true,
        _vm: vm,
        _memory: memory,
    }
}

/// ns per raw PIO exit round trip over one window.
fn raw_round_trip(raw: &mut RawLoop) -> f64 {
    let start = Instant::now();
    let mut exits = 0u64;
    while start.elapsed() < WINDOW {
        for _ in 0..256 {
            match raw.vcpu.run().unwrap() {
                VcpuExit::IoOut(0xe0, _) => exits += 1,
                other => panic!("unexpected exit {other:?}"),
            }
            if raw.answers {
                raw.vcpu.sync_regs_mut().regs.rax = 0;
                raw.vcpu.set_sync_dirty_reg(kvm_ioctls::SyncReg::Register);
            }
        }
    }
    start.elapsed().as_nanos() as f64 / exits as f64
}

fn hcbench_system() -> hv_config::SystemConfig {
    let dir = std::env::temp_dir().join(format!("hvdk-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("hcbench.toml");
    std::fs::write(
        &path,
        format!(
            "[[partition]]\nname = \"hcbench\"\nimage = \"{}\"\n",
            guests::image("hcbench").display()
        ),
    )
    .unwrap();
    let config = hv_config::SystemConfig::load(&path).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    config
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if !hv_core::kvm_available() {
        eprintln!("SKIPPED hypercall benchmark: /dev/kvm is missing or not accessible");
        return;
    }
    let kvm = Kvm::new().unwrap();
    let config = hcbench_system();

    // Start time, to the first guest instruction (the first KVM_RUN) and to the first exit: a raw
    // VM (create, map, set up the vCPU) vs a partition (description loaded → hv's first VmEntry
    // trace record). Up to its first exit the partition runs the SDK's start-up code (its IDT),
    // which the raw peer's one-instruction guest does not have.
    let clock = hv_core::clock::Clock::shared();
    let (mut raw_entry, mut raw_exit) = (Vec::new(), Vec::new());
    let (mut our_entry, mut our_exit) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let mut raw = raw_vm(&kvm, true);
        raw_entry.push(t.elapsed().as_secs_f64() * 1e6);
        let _ = raw.vcpu.run().unwrap();
        raw_exit.push(t.elapsed().as_secs_f64() * 1e6);

        let (t, t_ns) = (Instant::now(), clock.now_ns());
        let mut system = hv_core::System::new(config.clone()).unwrap();
        let vcpu = system.handles()[0].vcpus()[0].clone();
        vcpu.trace.set_classes(hv_core::trace::class::EXITS);
        system.start().unwrap();
        while vcpu.stats.exits.load(Ordering::Relaxed) == 0 {
            std::hint::spin_loop();
        }
        our_exit.push(t.elapsed().as_secs_f64() * 1e6);
        let mut records = Vec::new();
        vcpu.trace.drain(&mut records);
        let entry = records
            .iter()
            .find(|r| r.kind == hv_core::trace::TraceKind::VmEntry as u16)
            .expect("the first entry is traced");
        our_entry.push(entry.timestamp.saturating_sub(t_ns) as f64 / 1e3);
        system.shutdown();
    }

    // Round trips, interleaved so both see the same machine.
    let mut raw = raw_vm(&kvm, true);
    let mut real_mode = raw_vm(&kvm, false);
    let mut same_guest = raw_same_guest(&kvm, &config.partitions[0]);
    let mut system = hv_core::System::new(config).unwrap();
    let partition = system.handles()[0].clone();
    system.start().unwrap();
    let mut raw_ns = Vec::new();
    let mut real_ns = Vec::new();
    let mut same_ns = Vec::new();
    let mut our_ns = Vec::new();
    let vcpu = partition.vcpus()[0].clone();
    let exits = || vcpu.stats.exits.load(Ordering::Relaxed);
    let (mut exits_total, mut calls_total) = (0, 0);
    for _ in 0..ROUNDS {
        raw_ns.push(raw_round_trip(&mut raw));
        real_ns.push(raw_round_trip(&mut real_mode));
        same_ns.push(raw_round_trip(&mut same_guest));
        partition.resume().unwrap();
        let calls = || partition.stats().hypercalls.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(50));
        let (c0, e0, t0) = (calls(), exits(), Instant::now());
        std::thread::sleep(WINDOW);
        let (c1, e1, t1) = (calls(), exits(), Instant::now());
        exits_total += e1 - e0;
        calls_total += c1 - c0;
        partition.pause().unwrap();
        our_ns.push((t1 - t0).as_nanos() as f64 / (c1 - c0) as f64);
    }
    system.shutdown();

    let (raw_rt, our_rt) = (median(raw_ns), median(our_ns));
    let (real_rt, same_rt) = (median(real_ns), median(same_ns));
    println!("raw_kvm_pio_exit_real_mode_ns {real_rt:.0} (reference: out + jmp, real mode)");
    println!(
        "raw_kvm_pio_exit_ns {raw_rt:.0} (reference: out + jmp, long mode, hv-core's boot state)"
    );
    println!("raw_kvm_hc_loop_ns {same_rt:.0} (peer: hcbench's hc_loop, bare KVM_RUN loop)");
    println!("hv_hypercall_ns {our_rt:.0} (hcbench's hc_loop under hv)");
    println!("hypercall_ratio {:.3} (goal <= 1.10)", our_rt / same_rt);
    println!(
        "hypercall_ratio_vs_out_jmp {:.3} (includes the guest's own instructions)",
        our_rt / raw_rt
    );
    println!(
        "hv_exits_per_hypercall {:.3}",
        exits_total as f64 / calls_total.max(1) as f64
    );
    let (raw_entry, our_entry) = (median(raw_entry), median(our_entry));
    let (raw_exit, our_exit) = (median(raw_exit), median(our_exit));
    println!("raw_kvm_vm_start_us {raw_entry:.0} (VM created -> first KVM_RUN)");
    println!("hv_partition_start_us {our_entry:.0} (description loaded -> first KVM_RUN, 16 MiB)");
    println!("start_ratio {:.2}", our_entry / raw_entry);
    println!("raw_kvm_first_exit_us {raw_exit:.0} (its guest exits at its first instruction)");
    println!(
        "hv_partition_first_exit_us {our_exit:.0} (after the SDK's start-up code, its first hypercall)"
    );
}
