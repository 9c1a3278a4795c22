//! The few KVM and signal calls kvm-ioctls does not wrap, in one audited place.
//!
//! * `KVM_INTERRUPT`: inject an external interrupt from user space (we run without an in-kernel
//!   irqchip so that every raise, injection and EOI passes through the hypervisor).
//! * The kick signal: a real-time signal with an empty handler, sent to a vCPU thread to make
//!   `KVM_RUN` return. Together with `kvm_run.immediate_exit` (set by the kicker before the signal)
//!   no kick is ever lost, even when it lands just before the thread enters the guest.

use std::sync::Once;

use kvm_bindings::{KVMIO, kvm_interrupt};
use kvm_ioctls::VcpuFd;
use vmm_sys_util::errno;
use vmm_sys_util::ioctl::ioctl_with_ref;
use vmm_sys_util::ioctl_iow_nr;

ioctl_iow_nr!(KVM_INTERRUPT, KVMIO, 0x86, kvm_interrupt);

/// Injects external interrupt `vector` into `vcpu`; valid only while the vCPU is outside `KVM_RUN`
/// and `kvm_run.ready_for_interrupt_injection` is set.
pub fn inject_interrupt(vcpu: &VcpuFd, vector: u8) -> Result<(), errno::Error> {
    let irq = kvm_interrupt {
        irq: u32::from(vector),
    };
    // SAFETY: `vcpu` is a valid vCPU fd; KVM_INTERRUPT reads exactly one `kvm_interrupt`, which
    // lives on our stack for the duration of the call; the return value is checked.
    let ret = unsafe { ioctl_with_ref(vcpu, KVM_INTERRUPT(), &irq) };
    if ret == 0 {
        Ok(())
    } else {
        Err(errno::Error::last())
    }
}

/// The signal that kicks a vCPU thread out of `KVM_RUN`.
pub fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Installs the (empty) kick handler once per process, so the signal interrupts `KVM_RUN` instead
/// of killing the process.
pub fn install_kick_handler() -> Result<(), errno::Error> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = vmm_sys_util::signal::register_signal_handler(kick_signal(), on_kick);
    });
    result
}

/// Sends the kick signal to a thread.
pub fn kick_thread(thread: libc::pthread_t) {
    // SAFETY: pthread_kill only reads its arguments; the thread id comes from pthread_self() of a
    // vCPU thread that is still alive (the caller holds the lock that the thread clears on exit).
    unsafe {
        libc::pthread_kill(thread, kick_signal());
    }
}

/// The calling thread's pthread id.
pub fn current_thread() -> libc::pthread_t {
    // SAFETY: pthread_self has no preconditions.
    unsafe { libc::pthread_self() }
}

/// Pins the calling thread to one host CPU.
pub fn pin_current_thread(cpu: usize) -> Result<(), errno::Error> {
    // SAFETY: cpu_set_t is plain data; zeroed is its empty value.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(errno::Error::new(libc::EINVAL));
    }
    // SAFETY: `cpu` < CPU_SETSIZE, checked above.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    let ret = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if ret == 0 {
        Ok(())
    } else {
        Err(errno::Error::last())
    }
}
