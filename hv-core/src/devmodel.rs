//! Para-virtual devices served by a device-model partition.
//!
//! A client vCPU's MMIO access to a served device becomes a [`DeviceRequest`] queued to the model
//! partition, whose request doorbell is raised; the client vCPU blocks until the model answers
//! with `HV_DM_REPLY`. If the model is stopped in a debugger the client waits (that is the point
//! of debugging a model); if it has crashed, exited or been reset, does not answer within the
//! device's timeout, or answers with a nonzero status, the access completes as a bus error (reads
//! return all ones), a warning naming the device and the reason is published and a
//! `ModelBusError` record is traced — nothing else waits on it. The model may raise and lower the
//! device's IRQ in the client and copy to and from the client's memory, but only inside the
//! grants of the system description.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use hv_config::{DeviceConfig, MemoryRange};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::bus::BusDevice;
use crate::irq::IrqLine;
use crate::lifecycle::PartitionLifecycle;
use crate::poll::PollWindow;
use crate::trace::TraceKind;
use crate::vcpu;

/// Size of `struct hv_dm_request` in guest memory.
pub const REQUEST_SIZE: usize = 40;
/// Largest copy one `HV_DM_COPY_*` call moves.
pub const MAX_COPY: u64 = 64 * 1024;
/// How often a blocked client looks at the model's state while it waits.
const POLL: Duration = Duration::from_millis(5);
/// A request id carries the device's number in its model above this bit, so that ids are unique
/// across all the devices one model partition serves and a reply finds its device by its id.
const ID_DEVICE_SHIFT: u32 = 48;
/// The per-device sequence part of a request id.
const ID_SEQUENCE_MASK: u64 = (1 << ID_DEVICE_SHIFT) - 1;

/// The model's number of the device that issued request `id`.
pub fn request_device(id: u64) -> u32 {
    (id >> ID_DEVICE_SHIFT) as u32
}

/// One client access, as the model receives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRequest {
    /// Unique per model partition: the device's number in its model in bits 48 and up, a
    /// per-device sequence number (from 1) below.
    pub id: u64,
    /// The device's number in the model partition.
    pub device: u32,
    /// The client vCPU that made the access.
    pub client_vcpu: u32,
    /// Offset inside the MMIO window.
    pub offset: u64,
    /// Written value (writes).
    pub value: u64,
    /// 1, 2, 4 or 8.
    pub size: u32,
    /// Write or read.
    pub is_write: bool,
}

impl DeviceRequest {
    /// The `struct hv_dm_request` bytes.
    pub fn to_bytes(&self) -> [u8; REQUEST_SIZE] {
        let mut b = [0u8; REQUEST_SIZE];
        b[0..8].copy_from_slice(&self.id.to_le_bytes());
        b[8..12].copy_from_slice(&self.device.to_le_bytes());
        b[12..16].copy_from_slice(&self.client_vcpu.to_le_bytes());
        b[16..24].copy_from_slice(&self.offset.to_le_bytes());
        b[24..32].copy_from_slice(&self.value.to_le_bytes());
        b[32..36].copy_from_slice(&self.size.to_le_bytes());
        b[36..40].copy_from_slice(&u32::from(self.is_write).to_le_bytes());
        b
    }
}

/// What the model answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    /// Status 0: the read data (0 for writes).
    Value(u64),
    /// A nonzero status: the model refused the access.
    Status(i64),
}

/// A request waiting for its reply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Pending {
    reply: Option<Reply>,
    /// The model's uptime (ns) when it took the request; `None` while it is queued. A model whose
    /// uptime has since gone down was reset and will never answer.
    taken_at: Option<u64>,
}

/// Why an access ended as a bus error: the `b` of its `ModelBusError` trace record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum BusErrorReason {
    /// The model did not reply within the device's timeout.
    Timeout = 1,
    /// The model crashed, exited or was reset before it replied (or the device has no model).
    ModelGone = 2,
    /// The model replied with a nonzero status.
    BadReply = 3,
    /// The system shut down while the client waited.
    Shutdown = 4,
}

/// A failed access: the reason code and what to tell the user.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BusError {
    reason: BusErrorReason,
    why: String,
}

impl BusError {
    fn new(reason: BusErrorReason, why: impl Into<String>) -> BusError {
        BusError {
            reason,
            why: why.into(),
        }
    }
}

/// One end of a served device as its request queue sees it: the client partition (which waits)
/// or the model partition (which answers). `Partition` implements it; the queue holds both ends
/// weakly, so this module does not know the partition type.
pub trait DeviceEnd: Send + Sync {
    /// The partition's lifecycle state.
    fn lifecycle(&self) -> PartitionLifecycle;
    /// Whether one of its vCPUs is stopped in a debugger.
    fn debug_stopped(&self) -> bool;
    /// Nanoseconds since it (re)started.
    fn uptime_ns(&self) -> u64;
    /// Whether the system is shutting down.
    fn is_shutting_down(&self) -> bool;
    /// Publishes a warning in the partition's name.
    fn warn(&self, message: String);
}

/// What the waiting client sees of its model.
struct ModelView {
    state: PartitionLifecycle,
    debug_stopped: bool,
    uptime_ns: u64,
}

/// Why a copy was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyError {
    /// Outside every grant.
    NotGranted,
    /// The model's own buffer or the client's memory is not there.
    Fault,
}

/// A device served by a model partition: the request queue between client and model.
pub struct ServedDevice {
    /// Name from the system description.
    pub name: Arc<str>,
    /// The device's number in its model partition.
    pub model_number: u32,
    /// MMIO base in the client.
    pub mmio_base: u64,
    /// MMIO size.
    pub mmio_size: u64,
    timeout: Duration,
    grants: Vec<MemoryRange>,
    queue: Mutex<VecDeque<DeviceRequest>>,
    replies: Mutex<HashMap<u64, Pending>>,
    replied: Condvar,
    /// Counts replies, so that a client can spin on it before it sleeps.
    reply_count: AtomicU64,
    /// How long a client spins for its reply before it sleeps (see [`crate::poll`]).
    reply_poll: PollWindow,
    next_id: AtomicU64,
    model_doorbell: OnceLock<IrqLine>,
    client_irq: OnceLock<IrqLine>,
    client_memory: OnceLock<GuestMemoryMmap>,
    model: OnceLock<Weak<dyn DeviceEnd>>,
    client: OnceLock<Weak<dyn DeviceEnd>>,
    /// Accesses that ended as bus errors.
    pub bus_errors: AtomicU64,
    /// Requests served.
    pub served: AtomicU64,
}

impl std::fmt::Debug for ServedDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServedDevice")
            .field("name", &self.name)
            .field("mmio_base", &self.mmio_base)
            .finish_non_exhaustive()
    }
}

impl ServedDevice {
    /// A device from its description; `model_number` is its index among its model's devices.
    pub fn new(config: &DeviceConfig, model_number: u32) -> ServedDevice {
        ServedDevice {
            name: Arc::from(config.name.as_str()),
            model_number,
            mmio_base: config.mmio_base,
            mmio_size: config.mmio_size,
            timeout: Duration::from_millis(config.timeout_ms),
            grants: config.grants.clone(),
            queue: Mutex::default(),
            replies: Mutex::default(),
            replied: Condvar::new(),
            reply_count: AtomicU64::new(0),
            reply_poll: PollWindow::default(),
            next_id: AtomicU64::new(1),
            model_doorbell: OnceLock::new(),
            client_irq: OnceLock::new(),
            client_memory: OnceLock::new(),
            model: OnceLock::new(),
            client: OnceLock::new(),
            bus_errors: AtomicU64::new(0),
            served: AtomicU64::new(0),
        }
    }

    /// Wires both ends once every partition exists: the client, its memory (grants are copied
    /// from and to it) and its interrupt line; the model and its doorbell.
    pub fn connect(
        &self,
        client: Weak<dyn DeviceEnd>,
        client_memory: GuestMemoryMmap,
        client_irq: Option<IrqLine>,
        model: Weak<dyn DeviceEnd>,
        doorbell: IrqLine,
    ) {
        let _ = self.client_memory.set(client_memory);
        let _ = self.client.set(client);
        let _ = self.model.set(model);
        let _ = self.model_doorbell.set(doorbell);
        if let Some(line) = client_irq {
            let _ = self.client_irq.set(line);
        }
    }

    fn model_view(&self) -> Option<ModelView> {
        let model = self.model.get()?.upgrade()?;
        Some(ModelView {
            state: model.lifecycle(),
            debug_stopped: model.debug_stopped(),
            uptime_ns: model.uptime_ns(),
        })
    }

    /// A fresh request id: this device's number, then the next sequence number.
    fn next_request_id(&self) -> u64 {
        let sequence = self.next_id.fetch_add(1, Ordering::Relaxed) & ID_SEQUENCE_MASK;
        (u64::from(self.model_number) << ID_DEVICE_SHIFT) | sequence
    }

    /// Queues a request for the model and registers it as waiting for a reply.
    fn submit(
        &self,
        client_vcpu: u32,
        offset: u64,
        size: usize,
        is_write: bool,
        value: u64,
    ) -> DeviceRequest {
        let request = DeviceRequest {
            id: self.next_request_id(),
            device: self.model_number,
            client_vcpu,
            offset,
            value,
            size: size as u32,
            is_write,
        };
        self.replies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(request.id, Pending::default());
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(request);
        request
    }

    /// A client access: queues it, waits for the model, returns the value (None: bus error).
    ///
    /// Traced on the client's vCPU: `ModelRequest` when queued, then either `ModelReply` (the
    /// model answered with status 0) or `ModelBusError` (anything else, also published as a
    /// warning of the client partition).
    fn access(&self, offset: u64, size: usize, is_write: bool, value: u64) -> Option<u64> {
        let current = vcpu::current();
        let client_vcpu = current.as_ref().map_or(0, |v| v.index);
        let request = self.submit(client_vcpu, offset, size, is_write, value);
        if let Some(v) = &current {
            v.trace_here(TraceKind::ModelRequest, request.id, offset);
            v.set_blocked(Some(&self.name));
        }
        // Read before the doorbell rings, so that this request's reply changes it.
        let replies = self.reply_count.load(Ordering::SeqCst);
        if let Some(doorbell) = self.model_doorbell.get() {
            doorbell.raise();
            doorbell.wake_request_waiter();
        }
        let start = Instant::now();
        self.reply_poll
            .spin_until(|| self.reply_count.load(Ordering::SeqCst) != replies);
        let result = self.wait(request.id, start);
        let latency = start.elapsed().as_nanos() as u64;
        self.reply_poll.record(start.elapsed());
        if let Some(v) = &current {
            v.set_blocked(None);
        }
        match result {
            Ok(value) => {
                if let Some(v) = &current {
                    v.trace_here(TraceKind::ModelReply, request.id, latency);
                }
                self.served.fetch_add(1, Ordering::Relaxed);
                Some(value)
            }
            Err(error) => {
                if let Some(v) = &current {
                    v.trace_here(TraceKind::ModelBusError, request.id, error.reason as u64);
                }
                self.bus_errors.fetch_add(1, Ordering::Relaxed);
                self.warn_bus_error(&request, &error);
                None
            }
        }
    }

    fn warn_bus_error(&self, request: &DeviceRequest, error: &BusError) {
        if let Some(client) = self.client.get().and_then(Weak::upgrade) {
            client.warn(format!(
                "device {}: bus error on {} of offset {:#x} (request {:#x}): {}",
                self.name,
                if request.is_write { "write" } else { "read" },
                request.offset,
                request.id,
                error.why
            ));
        }
    }

    /// Waits for the reply to request `id`: its value, or why the access fails.
    fn wait(&self, id: u64, start: Instant) -> Result<u64, BusError> {
        use BusErrorReason::*;
        // The timeout counts only time the model could have answered in: it restarts whenever
        // the model is seen stopped in a debugger.
        let mut since = start;
        let mut replies = self.replies.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let pending = replies.get(&id).copied().unwrap_or_default();
            match pending.reply {
                Some(Reply::Value(value)) => {
                    replies.remove(&id);
                    return Ok(value);
                }
                Some(Reply::Status(status)) => {
                    replies.remove(&id);
                    let why = format!("model replied with status {status}");
                    return Err(BusError::new(BadReply, why));
                }
                None => {}
            }
            let failed = match self.model_view() {
                None => Some(BusError::new(ModelGone, "the device has no model")),
                Some(ModelView {
                    state: PartitionLifecycle::Crashed(_),
                    ..
                }) => Some(BusError::new(ModelGone, "model crashed")),
                Some(ModelView {
                    state: PartitionLifecycle::Exited(_),
                    ..
                }) => Some(BusError::new(ModelGone, "model exited")),
                Some(m) if pending.taken_at.is_some_and(|t| m.uptime_ns < t) => Some(
                    BusError::new(ModelGone, "model was reset after taking the request"),
                ),
                Some(m) if m.debug_stopped => {
                    since = Instant::now(); // stopped in a debugger: wait
                    None
                }
                Some(_) if since.elapsed() >= self.timeout => Some(BusError::new(
                    Timeout,
                    format!("model did not reply within {:?}", self.timeout),
                )),
                Some(_) => None,
            };
            let shutting_down = self
                .client
                .get()
                .and_then(Weak::upgrade)
                .is_none_or(|c| c.is_shutting_down());
            let failed = failed
                .or_else(|| shutting_down.then(|| BusError::new(Shutdown, "system shutting down")));
            if let Some(error) = failed {
                replies.remove(&id);
                drop(replies);
                self.queue
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .retain(|r| r.id != id);
                return Err(error);
            }
            replies = self
                .replied
                .wait_timeout(replies, POLL)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Model side: takes the next queued request.
    pub fn take_request(&self) -> Option<DeviceRequest> {
        let request = self
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()?;
        let uptime = self
            .model
            .get()
            .and_then(Weak::upgrade)
            .map(|m| m.uptime_ns());
        if let Some(pending) = self
            .replies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&request.id)
        {
            pending.taken_at = uptime;
        }
        Some(request)
    }

    /// Model side: puts a request back at the head (the model's buffer was bad).
    pub fn requeue(&self, request: DeviceRequest) {
        if let Some(pending) = self
            .replies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&request.id)
        {
            pending.taken_at = None;
        }
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_front(request);
    }

    /// Model side: answers request `id` with `value` and `status` (0: success; anything else
    /// makes the access a bus error); false when no client waits for it.
    pub fn reply(&self, id: u64, value: u64, status: i64) -> bool {
        self.reply_then(id, value, status, || {})
    }

    /// [`reply`](Self::reply), running `before_visible` once the reply is certain to be taken
    /// and before its client can see it (the model's trace record comes before the client's,
    /// even when the client spins for its reply).
    fn reply_then(&self, id: u64, value: u64, status: i64, before_visible: impl FnOnce()) -> bool {
        let mut replies = self.replies.lock().unwrap_or_else(|p| p.into_inner());
        match replies.get_mut(&id) {
            Some(pending) if pending.reply.is_none() => {
                before_visible();
                pending.reply = Some(if status == 0 {
                    Reply::Value(value)
                } else {
                    Reply::Status(status)
                });
                self.reply_count.fetch_add(1, Ordering::SeqCst);
                self.replied.notify_all();
                true
            }
            _ => false,
        }
    }

    /// Model side: answers request `id` of whichever of `served` (the model partition's devices)
    /// issued it; false when no client of theirs waits for it. `before_visible` runs as in
    /// [`reply`](Self::reply), only when the reply is taken.
    pub fn reply_to(
        served: &[Arc<ServedDevice>],
        id: u64,
        value: u64,
        status: i64,
        before_visible: impl FnOnce(),
    ) -> bool {
        let device = request_device(id);
        served
            .iter()
            .find(|d| d.model_number == device)
            .is_some_and(|d| d.reply_then(id, value, status, before_visible))
    }

    /// Model side: sets the device's interrupt line in the client: `raise` makes the vector
    /// pending, otherwise a pending raise not injected yet is withdrawn (edge semantics, see
    /// `irq`). False when the device has no interrupt.
    pub fn set_irq(&self, raise: bool) -> bool {
        let Some(line) = self.client_irq.get() else {
            return false;
        };
        if raise {
            line.raise();
        } else {
            line.lower();
        }
        true
    }

    fn granted(&self, addr: u64, len: u64) -> bool {
        let Some(end) = addr.checked_add(len) else {
            return false;
        };
        self.grants
            .iter()
            .any(|g| addr >= g.base && end <= g.base.saturating_add(g.size))
    }

    /// Model side: copies `len` bytes between the client at `client_addr` and `model` memory at
    /// `buf` — from the client when `to_client` is false, to it when true — inside the grants.
    pub fn copy(
        &self,
        model: &GuestMemoryMmap,
        client_addr: u64,
        buf: u64,
        len: u64,
        to_client: bool,
    ) -> Result<(), CopyError> {
        if len > MAX_COPY || !self.granted(client_addr, len) {
            return Err(CopyError::NotGranted);
        }
        let client = self.client_memory.get().ok_or(CopyError::Fault)?;
        let (from, from_addr, to, to_addr) = if to_client {
            (model, buf, client, client_addr)
        } else {
            (client, client_addr, model, buf)
        };
        let mut data = vec![0u8; len as usize];
        from.read_slice(&mut data, GuestAddress(from_addr))
            .map_err(|_| CopyError::Fault)?;
        to.write_slice(&data, GuestAddress(to_addr))
            .map_err(|_| CopyError::Fault)
    }
}

/// The client's MMIO window of a served device, on the client's bus.
pub struct ServedMmio(pub Arc<ServedDevice>);

fn truncate(value: u64, size: usize) -> u64 {
    if size >= 8 {
        value
    } else {
        value & ((1u64 << (size * 8)) - 1)
    }
}

impl BusDevice for ServedMmio {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let size = data.len().min(8);
        match self.0.access(offset, size, false, 0) {
            Some(value) => {
                let bytes = truncate(value, size).to_le_bytes();
                data[..size].copy_from_slice(&bytes[..size]);
            }
            None => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let size = data.len().min(8);
        let mut bytes = [0u8; 8];
        bytes[..size].copy_from_slice(&data[..size]);
        let _ = self.0.access(offset, size, true, u64::from_le_bytes(bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(timeout_ms: u64) -> ServedDevice {
        numbered(timeout_ms, 0)
    }

    fn numbered(timeout_ms: u64, model_number: u32) -> ServedDevice {
        ServedDevice::new(
            &DeviceConfig {
                name: "sensor".into(),
                partition: "control".into(),
                mmio_base: 0xd000_0000,
                mmio_size: 0x1000,
                irq: Some(40),
                served_by: Some("model".into()),
                request_vector: 33,
                timeout_ms,
                grants: vec![MemoryRange {
                    base: 0xe0_0000,
                    size: 0x1000,
                }],
            },
            model_number,
        )
    }

    #[test]
    fn request_layout_matches_the_c_struct() {
        let r = DeviceRequest {
            id: 7,
            device: 1,
            client_vcpu: 2,
            offset: 0xc,
            value: 0x1122,
            size: 4,
            is_write: true,
        };
        let b = r.to_bytes();
        assert_eq!(b[0], 7);
        assert_eq!(b[8], 1);
        assert_eq!(b[12], 2);
        assert_eq!(b[16], 0xc);
        assert_eq!(&b[24..26], &[0x22, 0x11]);
        assert_eq!(b[32], 4);
        assert_eq!(b[36], 1);
    }

    #[test]
    fn an_unconnected_device_is_a_bus_error_not_a_hang() {
        let mut mmio = ServedMmio(Arc::new(device(10)));
        let mut data = [0u8; 4];
        mmio.read(0, &mut data);
        assert_eq!(data, [0xff; 4]);
        assert_eq!(mmio.0.bus_errors.load(Ordering::Relaxed), 1);
        assert!(
            mmio.0.take_request().is_none(),
            "failed request left the queue"
        );
    }

    #[test]
    fn grants_bound_copies() {
        let d = device(10);
        assert!(d.granted(0xe0_0000, 0x1000));
        assert!(d.granted(0xe0_0ffc, 4));
        assert!(!d.granted(0xe0_0ffd, 4));
        assert!(!d.granted(0x10_0000, 4));
        assert!(!d.granted(u64::MAX - 1, 4));
        let model = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        assert_eq!(
            d.copy(&model, 0x10_0000, 0, 4, true),
            Err(CopyError::NotGranted)
        );
    }

    #[test]
    fn replies_only_reach_waiting_requests() {
        let d = device(10);
        assert!(!d.reply(99, 1, 0), "garbage id");
        d.replies.lock().unwrap().insert(5, Pending::default());
        assert!(d.reply(5, 42, 0));
        assert!(!d.reply(5, 43, 0), "second reply to the same request");
        assert_eq!(d.replies.lock().unwrap()[&5].reply, Some(Reply::Value(42)));
    }

    #[test]
    fn replies_reach_the_device_that_issued_the_request() {
        // One model serving two devices: both devices' first requests must get distinct ids,
        // and each reply must complete the request of the device that issued it.
        let served = [Arc::new(numbered(10, 0)), Arc::new(numbered(10, 1))];
        let first = served[0].submit(0, 0x4, 4, false, 0);
        let second = served[1].submit(0, 0x8, 4, false, 0);
        assert_ne!(first.id, second.id, "ids are unique per model partition");
        assert_eq!(
            (request_device(first.id), request_device(second.id)),
            (0, 1)
        );
        assert_eq!(served[1].take_request(), Some(second));
        assert!(ServedDevice::reply_to(&served, second.id, 22, 0, || {}));
        assert_eq!(
            served[0].replies.lock().unwrap()[&first.id].reply,
            None,
            "the other device's request still waits"
        );
        assert_eq!(
            served[1].replies.lock().unwrap()[&second.id].reply,
            Some(Reply::Value(22))
        );
        // The hook runs before the reply is visible, and only for a reply that is taken.
        let mut hook_saw = None;
        assert!(ServedDevice::reply_to(&served, first.id, 11, 0, || {
            hook_saw = Some(served[0].reply_count.load(Ordering::SeqCst));
        }));
        assert_eq!(
            hook_saw,
            Some(0),
            "the hook runs before the reply is counted"
        );
        assert_eq!(served[0].reply_count.load(Ordering::SeqCst), 1);
        assert_eq!(
            served[0].replies.lock().unwrap()[&first.id].reply,
            Some(Reply::Value(11))
        );
        let mut ran = false;
        assert!(!ServedDevice::reply_to(&served, first.id, 12, 0, || ran = true));
        assert!(!ran, "a second reply is not taken: no hook");
        assert!(
            !ServedDevice::reply_to(&served, (7 << ID_DEVICE_SHIFT) | 1, 0, 0, || {}),
            "no such device"
        );
        // Sequence numbers go on per device.
        let again = served[0].submit(0, 0, 4, false, 0);
        assert_eq!(again.id, first.id + 1);
    }

    #[test]
    fn a_nonzero_status_is_a_bad_reply_and_a_dead_model_is_gone() {
        let d = device(10);
        let good = d.submit(0, 0, 4, false, 0);
        let bad = d.submit(0, 4, 4, false, 0);
        assert_eq!(d.take_request(), Some(good));
        assert_eq!(d.take_request(), Some(bad));
        assert!(d.reply(good.id, 7, 0));
        assert!(d.reply(bad.id, 7, -1));
        let start = Instant::now();
        assert_eq!(d.wait(good.id, start), Ok(7));
        assert_eq!(
            d.wait(bad.id, start).map_err(|e| e.reason),
            Err(BusErrorReason::BadReply)
        );
        // Unanswered, with no model behind the device.
        let lost = d.submit(0, 8, 4, false, 0);
        assert_eq!(
            d.wait(lost.id, start).map_err(|e| e.reason),
            Err(BusErrorReason::ModelGone)
        );
        assert!(d.replies.lock().unwrap().is_empty(), "nothing left waiting");
        assert!(d.take_request().is_none(), "nothing left queued");
    }

    #[test]
    fn taking_and_requeueing_marks_the_request() {
        let d = device(10);
        let r = d.submit(0, 0, 4, false, 0);
        assert_eq!(d.replies.lock().unwrap()[&r.id].taken_at, None);
        assert_eq!(d.take_request(), Some(r));
        // No model partition: the uptime is unknown, so a reset cannot be told either.
        assert_eq!(d.replies.lock().unwrap()[&r.id].taken_at, None);
        d.replies.lock().unwrap().get_mut(&r.id).unwrap().taken_at = Some(5);
        d.requeue(r);
        assert_eq!(d.replies.lock().unwrap()[&r.id].taken_at, None);
        assert_eq!(d.take_request(), Some(r));
    }

    #[test]
    fn the_model_raises_and_lowers_the_client_interrupt() {
        let d = device(10);
        assert!(!d.set_irq(true), "no interrupt before it is connected");
        let vcpu = Arc::new(crate::vcpu::VcpuShared::new(0, 0, 16));
        let line = IrqLine::new(vcpu, 40);
        d.client_irq.set(line.clone()).unwrap();
        assert!(d.set_irq(true));
        assert!(line.is_pending());
        assert!(d.set_irq(false));
        assert!(!line.is_pending(), "a raise not injected yet is withdrawn");
        assert!(d.set_irq(false), "lowering a low line is fine");
    }

    #[test]
    fn values_are_truncated_to_the_access_size() {
        assert_eq!(truncate(0x1234_5678, 1), 0x78);
        assert_eq!(truncate(0x1234_5678, 2), 0x5678);
        assert_eq!(truncate(u64::MAX, 8), u64::MAX);
    }
}
