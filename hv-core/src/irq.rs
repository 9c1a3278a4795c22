//! The per-vCPU virtual interrupt controller: enabled, pending and in-service vectors, kept in
//! user space so that every raise, injection and EOI passes through the hypervisor.
//!
//! Priority is by vector number, highest first, as on a local APIC: a pending, enabled vector is
//! deliverable when it is above the highest vector in service.
//!
//! Lines are edge-triggered with a withdrawable pending state: a raise makes the vector pending
//! (raises coalesce while it is pending), a lower withdraws a raise that has not been injected
//! yet, and nothing re-fires after an EOI — a line is not remembered as "high".

use std::sync::Arc;

/// What an [`IrqLine`] raises its vector on: a vCPU (`VcpuShared`), or in tests a stand-in.
/// Keeps the devices that hold lines (UART, timer, IPC doorbells, device models) apart from the
/// vCPU module.
pub trait InterruptTarget: Send + Sync {
    /// Makes `vector` pending (and wakes the target if it is fresh).
    fn raise(&self, vector: u8);
    /// Withdraws a raise of `vector` that was not injected yet; returns whether there was one.
    fn lower(&self, vector: u8) -> bool;
    /// Whether `vector` is pending (raised, not injected yet).
    fn is_pending(&self, vector: u8) -> bool;
    /// Wakes the target if it waits for a device request (`HV_DM_REPLY_WAIT`).
    fn wake_request_waiter(&self);
    /// A short name for messages (`p0.v1`).
    fn name(&self) -> String;
}

/// An interrupt line: raising it makes `vector` pending on one vCPU, lowering it withdraws that
/// raise while it has not been injected (see the module's edge semantics).
#[derive(Clone)]
pub struct IrqLine {
    target: Arc<dyn InterruptTarget>,
    vector: u8,
}

impl std::fmt::Debug for IrqLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IrqLine({} vector {})", self.target.name(), self.vector)
    }
}

impl IrqLine {
    /// A line to `vector` on `target` (a vCPU).
    pub fn new(target: Arc<dyn InterruptTarget>, vector: u8) -> IrqLine {
        IrqLine { target, vector }
    }

    /// Raises the line.
    pub fn raise(&self) {
        self.target.raise(self.vector);
    }

    /// Wakes the line's vCPU if it waits in `HV_DM_REPLY_WAIT` (a device model that takes its
    /// requests that way keeps its doorbell vector disabled, so the raise alone may not).
    pub fn wake_request_waiter(&self) {
        self.target.wake_request_waiter();
    }

    /// Lowers the line: withdraws a raise that is still pending (not injected yet); returns
    /// whether there was one. An interrupt already injected is unaffected.
    pub fn lower(&self) -> bool {
        self.target.lower(self.vector)
    }

    /// Whether the line's vector is pending on its vCPU (raised, not injected yet).
    pub fn is_pending(&self) -> bool {
        self.target.is_pending(self.vector)
    }
}

/// 256 bits, one per vector.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
struct VectorSet([u64; 4]);

impl VectorSet {
    fn set(&mut self, v: u8) {
        self.0[usize::from(v / 64)] |= 1 << (v % 64);
    }
    fn clear(&mut self, v: u8) {
        self.0[usize::from(v / 64)] &= !(1 << (v % 64));
    }
    fn contains(&self, v: u8) -> bool {
        self.0[usize::from(v / 64)] & (1 << (v % 64)) != 0
    }
    fn highest(&self) -> Option<u8> {
        (0..4).rev().find_map(|i| {
            let word = self.0[i];
            (word != 0).then(|| (i * 64 + 63 - word.leading_zeros() as usize) as u8)
        })
    }
    fn and(&self, other: &VectorSet) -> VectorSet {
        VectorSet(std::array::from_fn(|i| self.0[i] & other.0[i]))
    }
}

/// Interrupt state of one vCPU.
#[derive(Clone, Debug)]
pub struct IrqController {
    enabled: VectorSet,
    pending: VectorSet,
    in_service: VectorSet,
    /// Trace-clock time (ns) at which each pending vector became pending.
    raised_at: [u64; 256],
}

impl Default for IrqController {
    fn default() -> Self {
        IrqController {
            enabled: VectorSet::default(),
            pending: VectorSet::default(),
            in_service: VectorSet::default(),
            raised_at: [0; 256],
        }
    }
}

impl IrqController {
    /// Marks `vector` pending; returns false when it already was (the raise coalesced).
    pub fn raise(&mut self, vector: u8) -> bool {
        self.raise_at(vector, 0)
    }

    /// Like [`raise`](Self::raise), remembering `now_ns` as the raise time when the vector
    /// becomes pending (a coalesced raise keeps the first time).
    pub fn raise_at(&mut self, vector: u8, now_ns: u64) -> bool {
        let fresh = !self.pending.contains(vector);
        if fresh {
            self.raised_at[usize::from(vector)] = now_ns;
        }
        self.pending.set(vector);
        fresh
    }

    /// Withdraws a pending raise of `vector` that has not been injected yet; returns whether
    /// there was one. An injected (in-service) vector is unaffected: its handler runs and ends
    /// with an EOI as usual.
    pub fn lower(&mut self, vector: u8) -> bool {
        let pending = self.pending.contains(vector);
        self.pending.clear(vector);
        pending
    }

    /// Whether `vector` is pending (raised, not injected yet).
    pub fn is_pending(&self, vector: u8) -> bool {
        self.pending.contains(vector)
    }

    /// When the pending `vector` was raised (trace-clock ns; meaningful while it is pending).
    pub fn raised_at(&self, vector: u8) -> u64 {
        self.raised_at[usize::from(vector)]
    }

    /// Unmasks `vector`.
    pub fn enable(&mut self, vector: u8) {
        self.enabled.set(vector);
    }

    /// Masks `vector` (a pending raise stays pending until it is enabled again).
    pub fn disable(&mut self, vector: u8) {
        self.enabled.clear(vector);
    }

    /// Whether `vector` is unmasked.
    pub fn is_enabled(&self, vector: u8) -> bool {
        self.enabled.contains(vector)
    }

    /// The vector to inject next, if any.
    pub fn deliverable(&self) -> Option<u8> {
        let candidate = self.pending.and(&self.enabled).highest()?;
        match self.in_service.highest() {
            Some(busy) if busy >= candidate => None,
            _ => Some(candidate),
        }
    }

    /// Records that `vector` was injected: no longer pending, now in service.
    pub fn injected(&mut self, vector: u8) {
        self.pending.clear(vector);
        self.in_service.set(vector);
    }

    /// Takes back an injection the guest never took (KVM still held it when the vCPU stopped
    /// entering the guest): `vector` is pending again, not in service, and keeps its raise time.
    pub fn withdraw(&mut self, vector: u8) {
        self.in_service.clear(vector);
        self.pending.set(vector);
    }

    /// Whether `vector` is in service (injected, not yet ended by an EOI).
    pub fn is_in_service(&self, vector: u8) -> bool {
        self.in_service.contains(vector)
    }

    /// Ends the highest in-service vector and returns it.
    pub fn eoi(&mut self) -> Option<u8> {
        let vector = self.in_service.highest()?;
        self.in_service.clear(vector);
        Some(vector)
    }

    /// Back to the power-on state: everything masked, nothing pending.
    pub fn reset(&mut self) {
        *self = IrqController::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_vectors_stay_pending_until_enabled() {
        let mut irq = IrqController::default();
        assert!(irq.raise(40));
        assert_eq!(irq.deliverable(), None);
        irq.enable(40);
        assert_eq!(irq.deliverable(), Some(40));
    }

    #[test]
    fn highest_vector_first_and_nesting_by_priority() {
        let mut irq = IrqController::default();
        for v in [32, 48, 255] {
            irq.enable(v);
        }
        irq.raise(32);
        irq.raise(48);
        assert_eq!(irq.deliverable(), Some(48));
        irq.injected(48);
        assert_eq!(irq.deliverable(), None, "32 waits for 48's EOI");
        irq.raise(255);
        assert_eq!(irq.deliverable(), Some(255), "a higher vector nests");
        irq.injected(255);
        assert_eq!(irq.eoi(), Some(255));
        assert_eq!(irq.eoi(), Some(48));
        assert_eq!(irq.deliverable(), Some(32));
        irq.injected(32);
        assert_eq!(irq.eoi(), Some(32));
        assert_eq!(irq.eoi(), None);
    }

    #[test]
    fn raises_coalesce_while_pending() {
        let mut irq = IrqController::default();
        assert!(irq.raise(33));
        assert!(!irq.raise(33));
        irq.enable(33);
        irq.injected(33);
        assert!(irq.raise(33), "a raise while in service is a new one");
    }

    #[test]
    fn lowering_withdraws_only_a_raise_not_yet_injected() {
        let mut irq = IrqController::default();
        irq.enable(40);
        irq.enable(41);
        assert!(!irq.lower(40), "nothing pending");
        irq.raise(40);
        irq.raise(41);
        assert!(irq.is_pending(40));
        assert!(irq.lower(40));
        assert!(!irq.is_pending(40));
        assert_eq!(irq.deliverable(), Some(41), "other vectors stay pending");
        irq.injected(41);
        assert!(!irq.lower(41), "already injected");
        assert_eq!(irq.eoi(), Some(41), "the injected one is still in service");
        assert_eq!(irq.deliverable(), None, "the lowered one never arrives");
        assert!(irq.raise(40), "a raise after a lower is a fresh one");
        assert_eq!(irq.deliverable(), Some(40));
    }

    #[test]
    fn the_first_raise_time_is_kept_while_pending() {
        let mut irq = IrqController::default();
        irq.enable(40);
        assert!(irq.raise_at(40, 100));
        assert!(!irq.raise_at(40, 200));
        assert_eq!(irq.raised_at(40), 100);
        irq.injected(40);
        assert!(irq.raise_at(40, 300));
        assert_eq!(irq.raised_at(40), 300);
    }

    #[test]
    fn every_vector_round_trips() {
        let mut irq = IrqController::default();
        for v in 0..=255u8 {
            irq.enable(v);
            irq.raise(v);
            assert_eq!(irq.deliverable(), Some(v));
            irq.injected(v);
            assert_eq!(irq.eoi(), Some(v));
            irq.disable(v);
        }
        irq.reset();
        assert_eq!(irq.deliverable(), None);
    }

    #[test]
    fn a_withdrawn_injection_is_deliverable_again() {
        let mut irq = IrqController::default();
        irq.enable(32);
        irq.raise_at(32, 100);
        irq.injected(32);
        // In service: blocks itself, as when the guest never took it.
        irq.raise_at(32, 200);
        assert_eq!(irq.deliverable(), None);
        irq.withdraw(32);
        assert!(!irq.is_in_service(32));
        assert_eq!(irq.deliverable(), Some(32));
        assert_eq!(irq.raised_at(32), 200);
    }
}
