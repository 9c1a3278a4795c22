//! The trace record format: what the `trace` channel carries and what a trace file holds (the
//! same bytes). A trace is a sequence of *chunks*; the first is the header (clock calibration,
//! partitions with their vCPU counts and ELF paths), every later one a batch of fixed-size
//! 32-byte records. Each chunk on the `trace` channel is one frame payload; a file is the chunks
//! back to back. Specified in `PROTOCOL.md`, section 7.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

/// Version of the trace format (in the header chunk).
pub const FORMAT_VERSION: u16 = 1;
/// Tag of the header chunk.
pub const HEADER_TAG: [u8; 4] = *b"HVTH";
/// Tag of a record batch chunk.
pub const BATCH_TAG: [u8; 4] = *b"HVTB";
/// Bytes of a chunk's tag and length.
pub const CHUNK_HEADER_LEN: usize = 8;
/// Bytes of one record.
pub const RECORD_LEN: usize = 32;
/// Most records in one batch (a batch fits one link frame).
pub const MAX_BATCH_RECORDS: usize = 16 * 1024;
/// Largest chunk body accepted by decoders (a header with many partitions stays far below).
pub const MAX_CHUNK_LEN: usize = 1 << 20;

/// Errors decoding a trace.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The input ended inside a chunk.
    #[error("trace truncated: a chunk needs {needed} bytes, {available} available")]
    Truncated {
        /// Bytes the chunk needs.
        needed: usize,
        /// Bytes there were.
        available: usize,
    },
    /// The chunk does not start with a known tag.
    #[error("not a trace chunk: tag {0:02x?}")]
    BadTag([u8; 4]),
    /// The first chunk is not a header, or a header came later.
    #[error("expected a {expected} chunk")]
    UnexpectedChunk {
        /// What was expected ("header" or "batch").
        expected: &'static str,
    },
    /// A chunk length above [`MAX_CHUNK_LEN`].
    #[error("trace chunk of {0} bytes is too large")]
    TooLarge(usize),
    /// A trace format version this decoder does not read.
    #[error("trace format version {0} is not supported (this build reads {FORMAT_VERSION})")]
    UnsupportedVersion(u16),
    /// The header's description does not parse.
    #[error("bad trace header")]
    BadHeader(#[from] serde_json::Error),
    /// A batch whose length does not match its record count.
    #[error("bad trace batch: {count} records in {len} bytes")]
    BadBatch {
        /// Record count claimed.
        count: u32,
        /// Body length.
        len: usize,
    },
    /// Reading or writing a trace file failed.
    #[error("trace I/O")]
    Io(#[from] std::io::Error),
}

/// Record kinds (the `kind` field). `a` and `b` are the payload words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum RecordKind {
    /// Entering the guest.
    VmEntry = 1,
    /// Back from the guest. a: KVM exit reason (`KVM_EXIT_*`), b: guest rip (0 when unknown).
    VmExit = 2,
    /// An interrupt is being injected; a: vector, b: when it was raised (trace ns). Written just
    /// before the `IrqInject` of the same vector.
    IrqRaise = 3,
    /// An interrupt was injected. a: vector.
    IrqInject = 4,
    /// The guest ended an interrupt. a: vector.
    IrqEoi = 5,
    /// A hypercall completed. a: number, b: result.
    Hypercall = 6,
    /// The vCPU's schedule window opened.
    ScheduleIn = 7,
    /// The vCPU's schedule window closed.
    ScheduleOut = 8,
    /// The vCPU halted waiting for an interrupt.
    Halt = 9,
    /// The vCPU woke from a halt.
    Wake = 10,
    /// A device access. a: address, b: (size << 1) | is_write.
    DeviceAccess = 11,
    /// IPC send. a: channel, b: length.
    IpcSend = 12,
    /// IPC receive. a: channel, b: length.
    IpcReceive = 13,
    /// A guest trace marker. a: id, b: value.
    Marker = 14,
    /// The vCPU stopped for the debugger.
    DebugStop = 15,
    /// The vCPU resumed after a debugger stop.
    DebugResume = 16,
    /// The vCPU parked or unparked. a: new vCPU state code (see [`vcpu_state_name`]), b: 0; or,
    /// with b = [`STATE_AT_START`], the state the vCPU was in when a recording started (written by
    /// the debug agent, not the vCPU: one per vCPU whose `sched` class is on, at `trace.start`
    /// and when a `trace` channel opens; not counted in `trace_produced`).
    StateChange = 17,
    /// Records of this vCPU were dropped. a: how many; b: [`LOST_IN_RING`] (the hypervisor's
    /// ring was full) or [`LOST_ON_LINK`] (this subscriber's queue was full).
    Lost = 18,
    /// Client side: a device-model request was queued. a: request id, b: offset.
    ModelRequest = 19,
    /// Client side: the model answered the request. a: request id, b: latency in ns.
    ModelReply = 20,
    /// Client side: the request ended as a bus error instead of a reply. a: request id, b: reason
    /// (see [`bus_error_reason_name`]).
    ModelBusError = 21,
    /// Model side: the model took a request. a: request id, b: offset.
    ModelReceive = 22,
    /// Model side: the model answered a waiting request. a: request id, b: the reply value.
    ModelRespond = 23,
    /// An injected interrupt the guest never took was taken back (it is pending again and will be
    /// injected anew, with another `IrqRaise`/`IrqInject` pair). a: vector.
    IrqWithdraw = 24,
}

/// `StateChange.b`: not a change but the vCPU's state when the recording started.
pub const STATE_AT_START: u64 = 1;

/// `Lost.b`: dropped in the vCPU's ring.
pub const LOST_IN_RING: u64 = 0;
/// `Lost.b`: dropped from this subscriber's queue.
pub const LOST_ON_LINK: u64 = 1;

impl RecordKind {
    /// The [`class`] that switches this kind on and off (`Lost` always records).
    pub fn class(self) -> u32 {
        use RecordKind::*;
        match self {
            VmEntry | VmExit => class::EXITS,
            IrqRaise | IrqInject | IrqEoi | IrqWithdraw => class::IRQ,
            Hypercall => class::HYPERCALL,
            ScheduleIn | ScheduleOut | Halt | Wake | DebugStop | DebugResume | StateChange => {
                class::SCHED
            }
            DeviceAccess | ModelRequest | ModelReply | ModelBusError | ModelReceive
            | ModelRespond => class::DEVICE,
            IpcSend | IpcReceive => class::IPC,
            Marker => class::MARKER,
            Lost => class::ALL,
        }
    }

    /// The kind for a `kind` value (`None` for kinds this build does not know: skip them).
    pub fn from_u16(v: u16) -> Option<RecordKind> {
        use RecordKind::*;
        const ALL: [RecordKind; 24] = [
            VmEntry,
            VmExit,
            IrqRaise,
            IrqInject,
            IrqEoi,
            Hypercall,
            ScheduleIn,
            ScheduleOut,
            Halt,
            Wake,
            DeviceAccess,
            IpcSend,
            IpcReceive,
            Marker,
            DebugStop,
            DebugResume,
            StateChange,
            Lost,
            ModelRequest,
            ModelReply,
            ModelBusError,
            ModelReceive,
            ModelRespond,
            IrqWithdraw,
        ];
        ALL.get(usize::from(v).checked_sub(1)?).copied()
    }
}

/// Name of a `ModelBusError` reason code (`b`).
pub fn bus_error_reason_name(code: u64) -> &'static str {
    match code {
        1 => "timeout",
        2 => "model gone",
        3 => "bad reply",
        4 => "shutdown",
        _ => "unknown",
    }
}

/// Name of a `StateChange` state code.
pub fn vcpu_state_name(code: u64) -> &'static str {
    match code {
        0 => "created",
        1 => "running",
        2 => "halted",
        3 => "paused",
        4 => "out_of_window",
        5 => "debug_stopped",
        6 => "crashed",
        7 => "exited",
        8 => "blocked_on_device",
        9 => "gone",
        _ => "unknown",
    }
}

/// Name of a hypercall number (`Hypercall.a`) as `hv_abi.h` spells it, e.g. `HV_IRQ_EOI`: the
/// one table of names (hv-core's `Hypercall::c_name` reads it; tests there check it against
/// hv-core's calls and the C header).
pub fn hypercall_name(nr: u64) -> Option<&'static str> {
    Some(match nr {
        0 => "HV_PARTITION_INFO",
        1 => "HV_CONSOLE_WRITE",
        2 => "HV_TIMER_SET",
        3 => "HV_IRQ_ENABLE",
        4 => "HV_IRQ_DISABLE",
        5 => "HV_IRQ_EOI",
        6 => "HV_IDLE",
        7 => "HV_YIELD",
        8 => "HV_SEND_IPI",
        9 => "HV_IPC_SEND",
        10 => "HV_IPC_RECEIVE",
        11 => "HV_IPC_NOTIFY",
        12 => "HV_TRACE_MARKER",
        13 => "HV_EXIT",
        14 => "HV_TIME_NS",
        16 => "HV_DM_RECEIVE",
        17 => "HV_DM_REPLY",
        18 => "HV_DM_SET_IRQ",
        19 => "HV_DM_COPY_FROM",
        20 => "HV_DM_COPY_TO",
        21 => "HV_DM_REPLY_WAIT",
        _ => return None,
    })
}

/// Name of a KVM exit reason (`VmExit.a`, keys of `exits_by_reason`), e.g. `io`, `hlt`.
pub fn exit_reason_name(reason: u64) -> &'static str {
    match reason {
        0 => "unknown",
        1 => "exception",
        2 => "io",
        3 => "hypercall",
        4 => "debug",
        5 => "hlt",
        6 => "mmio",
        7 => "irq_window_open",
        8 => "shutdown",
        9 => "fail_entry",
        10 => "intr",
        16 => "nmi",
        17 => "internal_error",
        24 => "system_event",
        29 => "x86_rdmsr",
        30 => "x86_wrmsr",
        33 => "x86_bus_lock",
        37 => "notify",
        39 => "memory_fault",
        _ => "other",
    }
}

/// Event classes: the bits that switch record kinds on and off in the hypervisor's rings.
pub mod class {
    /// VM entries and exits.
    pub const EXITS: u32 = 1 << 0;
    /// Interrupt raise, inject, EOI.
    pub const IRQ: u32 = 1 << 1;
    /// Hypercalls.
    pub const HYPERCALL: u32 = 1 << 2;
    /// Schedule in/out, halt/wake, state changes, debug stops.
    pub const SCHED: u32 = 1 << 3;
    /// Device accesses and device-model traffic.
    pub const DEVICE: u32 = 1 << 4;
    /// IPC.
    pub const IPC: u32 = 1 << 5;
    /// Guest markers.
    pub const MARKER: u32 = 1 << 6;
    /// Everything.
    pub const ALL: u32 = (1 << 7) - 1;
}

/// Event class names accepted by `trace.start` (`classes`), with their [`class`] bits.
pub const CLASSES: &[(&str, u32)] = &[
    ("exits", class::EXITS),
    ("irq", class::IRQ),
    ("hypercall", class::HYPERCALL),
    ("sched", class::SCHED),
    ("device", class::DEVICE),
    ("ipc", class::IPC),
    ("marker", class::MARKER),
    ("all", class::ALL),
];

/// The class bits for `names` (`None` names an unknown class).
pub fn class_bits(names: &[String]) -> Result<u32, String> {
    names.iter().try_fold(0, |bits, name| {
        CLASSES
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| bits | b)
            .ok_or_else(|| name.clone())
    })
}

/// One record, as on the wire (32 bytes, little-endian, in field order).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceRecord {
    /// ns on the trace clock (see [`TraceClock`]).
    pub timestamp: u64,
    /// A [`RecordKind`] value.
    pub kind: u16,
    /// vCPU index inside its partition.
    pub vcpu: u16,
    /// Partition id (index in the header's `partitions`).
    pub partition: u32,
    /// First payload word.
    pub a: u64,
    /// Second payload word.
    pub b: u64,
}

impl TraceRecord {
    /// The kind, when known.
    pub fn kind(&self) -> Option<RecordKind> {
        RecordKind::from_u16(self.kind)
    }

    /// Whether this is a `StateChange` with [`STATE_AT_START`]: the state a vCPU was in when the
    /// recording started, not a change.
    pub fn is_state_at_start(&self) -> bool {
        self.kind == RecordKind::StateChange as u16 && self.b == STATE_AT_START
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.timestamp.to_le_bytes());
        out.extend_from_slice(&self.kind.to_le_bytes());
        out.extend_from_slice(&self.vcpu.to_le_bytes());
        out.extend_from_slice(&self.partition.to_le_bytes());
        out.extend_from_slice(&self.a.to_le_bytes());
        out.extend_from_slice(&self.b.to_le_bytes());
    }

    fn decode(b: &[u8]) -> TraceRecord {
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
        TraceRecord {
            timestamp: u64_at(0),
            kind: u16::from_le_bytes([b[8], b[9]]),
            vcpu: u16::from_le_bytes([b[10], b[11]]),
            partition: u32::from_le_bytes([b[12], b[13], b[14], b[15]]),
            a: u64_at(16),
            b: u64_at(24),
        }
    }
}

/// The trace clock: timestamps are ns since `epoch_unix_ns` (wall clock, approximate), counted
/// with the TSC at `tsc_khz`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceClock {
    /// Calibrated TSC frequency in kHz.
    pub tsc_khz: u64,
    /// Unix time in ns of timestamp 0.
    pub epoch_unix_ns: u64,
}

/// One partition in the header.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TracePartition {
    /// Partition id (`TraceRecord::partition`).
    pub id: u32,
    /// Partition name.
    pub name: String,
    /// Number of vCPUs (named `<name>.<index>`).
    pub vcpus: u32,
    /// ELF image path, for symbolising rips.
    pub image: String,
}

/// The header chunk's description (JSON after the version word).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceHeader {
    /// System name.
    pub system: String,
    /// Clock calibration.
    pub clock: TraceClock,
    /// Partitions in id order.
    pub partitions: Vec<TracePartition>,
    /// IPC channels and the endpoints each joins, in description order (empty, and absent from
    /// the JSON, when unknown: traces of older agents).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<TraceChannel>,
}

/// One IPC channel in the header: what `IpcSend`/`IpcReceive` records' channel numbers (each
/// partition's own) mean.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceChannel {
    /// Channel name.
    pub name: String,
    /// The two endpoints.
    pub endpoints: Vec<TraceEndpoint>,
}

/// One end of an IPC channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceEndpoint {
    /// Partition id.
    pub partition: u32,
    /// The channel's number in that partition (`IpcSend.a` / `IpcReceive.a`).
    pub channel: u64,
}

/// One interrupt latency measured from a record stream by [`IrqLatencies`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IrqSample {
    /// Partition id.
    pub partition: u32,
    /// vCPU index.
    pub vcpu: u16,
    /// Vector.
    pub vector: u8,
    /// Which latency.
    pub what: IrqLatency,
    /// The latency in ns.
    pub ns: u64,
}

/// Which interrupt latency an [`IrqSample`] measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IrqLatency {
    /// From the raise (the vector became pending) to its injection.
    RaiseToInject,
    /// From the injection to the guest's EOI.
    InjectToEoi,
}

/// Turns a record stream into interrupt latencies: raise→inject from each `IrqRaise`, and
/// inject→EOI by pairing each `IrqEoi` with the injection of that vector on that vCPU. A `Lost`
/// record for a vCPU forgets its open injections (their EOI may be among the lost records).
#[derive(Debug, Default)]
pub struct IrqLatencies {
    /// Injected and not yet ended, per (partition, vCPU): (vector, injection time).
    in_service: std::collections::HashMap<(u32, u16), Vec<(u8, u64)>>,
}

impl IrqLatencies {
    /// Feeds one record; returns the latency it completes, if any.
    pub fn feed(&mut self, r: &TraceRecord) -> Option<IrqSample> {
        let key = (r.partition, r.vcpu);
        let sample = |what, vector: u64, ns| IrqSample {
            partition: r.partition,
            vcpu: r.vcpu,
            vector: vector as u8,
            what,
            ns,
        };
        match r.kind()? {
            RecordKind::IrqRaise => Some(sample(
                IrqLatency::RaiseToInject,
                r.a,
                r.timestamp.saturating_sub(r.b),
            )),
            RecordKind::IrqInject => {
                self.in_service
                    .entry(key)
                    .or_default()
                    .push((r.a as u8, r.timestamp));
                None
            }
            RecordKind::IrqEoi => {
                let stack = self.in_service.get_mut(&key)?;
                let at = stack.iter().rposition(|(v, _)| u64::from(*v) == r.a)?;
                let (_, injected) = stack.remove(at);
                Some(sample(
                    IrqLatency::InjectToEoi,
                    r.a,
                    r.timestamp.saturating_sub(injected),
                ))
            }
            RecordKind::Lost => {
                self.in_service.remove(&key);
                None
            }
            _ => None,
        }
    }
}

/// A decoded chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    /// The header.
    Header(TraceHeader),
    /// A batch of records.
    Batch(Vec<TraceRecord>),
}

fn chunk(tag: [u8; 4], body_len: usize, out: &mut Vec<u8>) {
    out.extend_from_slice(&tag);
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
}

/// Encodes the header chunk.
pub fn encode_header(header: &TraceHeader) -> Vec<u8> {
    // Serialising plain strings and integers cannot fail.
    let json = serde_json::to_vec(header).unwrap_or_default();
    let mut out = Vec::with_capacity(CHUNK_HEADER_LEN + 4 + json.len());
    chunk(HEADER_TAG, 4 + json.len(), &mut out);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&json);
    out
}

/// Appends a batch chunk of `records` (at most [`MAX_BATCH_RECORDS`] fit one link frame).
pub fn encode_batch_into(records: &[TraceRecord], out: &mut Vec<u8>) {
    out.reserve(CHUNK_HEADER_LEN + 8 + records.len() * RECORD_LEN);
    chunk(BATCH_TAG, 8 + records.len() * RECORD_LEN, out);
    out.extend_from_slice(&(records.len() as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    for r in records {
        r.encode(out);
    }
}

/// Encodes a batch chunk.
pub fn encode_batch(records: &[TraceRecord]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_batch_into(records, &mut out);
    out
}

/// Decodes the chunk at the start of `bytes`; returns it and the bytes it used.
pub fn decode_chunk(bytes: &[u8]) -> Result<(Chunk, usize), TraceError> {
    let (tag, total) = chunk_frame(bytes, &[HEADER_TAG, BATCH_TAG])?;
    Ok((decode_body(tag, &bytes[CHUNK_HEADER_LEN..total])?, total))
}

/// Checks the chunk frame at the start of `bytes` (long enough, a tag in `tags`, a length within
/// [`MAX_CHUNK_LEN`] whose body is all there); returns its tag and the bytes it spans.
fn chunk_frame(bytes: &[u8], tags: &[[u8; 4]]) -> Result<([u8; 4], usize), TraceError> {
    if bytes.len() < CHUNK_HEADER_LEN {
        return Err(TraceError::Truncated {
            needed: CHUNK_HEADER_LEN,
            available: bytes.len(),
        });
    }
    let tag: [u8; 4] = [bytes[0], bytes[1], bytes[2], bytes[3]];
    if !tags.contains(&tag) {
        return Err(TraceError::BadTag(tag));
    }
    let len = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
    if len > MAX_CHUNK_LEN {
        return Err(TraceError::TooLarge(len));
    }
    let total = CHUNK_HEADER_LEN + len;
    if bytes.len() < total {
        return Err(TraceError::Truncated {
            needed: total,
            available: bytes.len(),
        });
    }
    Ok((tag, total))
}

fn decode_body(tag: [u8; 4], body: &[u8]) -> Result<Chunk, TraceError> {
    if tag == HEADER_TAG {
        if body.len() < 4 {
            return Err(TraceError::Truncated {
                needed: CHUNK_HEADER_LEN + 4,
                available: CHUNK_HEADER_LEN + body.len(),
            });
        }
        let version = u16::from_le_bytes([body[0], body[1]]);
        if version != FORMAT_VERSION {
            return Err(TraceError::UnsupportedVersion(version));
        }
        return Ok(Chunk::Header(serde_json::from_slice(&body[4..])?));
    }
    let bad = |count| TraceError::BadBatch {
        count,
        len: body.len(),
    };
    if body.len() < 8 {
        return Err(bad(0));
    }
    let count = u32::from_le_bytes([body[0], body[1], body[2], body[3]]);
    if body.len() - 8 != count as usize * RECORD_LEN {
        return Err(bad(count));
    }
    Ok(Chunk::Batch(
        body[8..]
            .chunks_exact(RECORD_LEN)
            .map(TraceRecord::decode)
            .collect(),
    ))
}

/// The records of the batch chunk at the start of `bytes` (tag, length and body, as
/// [`decode_chunk`] takes it), decoded one by one as they are iterated instead of collected:
/// for readers that distribute millions of records without an intermediate `Vec`. The chunk is
/// checked as [`decode_chunk`] checks it; a header chunk is [`TraceError::UnexpectedChunk`].
pub fn batch_records(
    bytes: &[u8],
) -> Result<impl ExactSizeIterator<Item = TraceRecord> + '_, TraceError> {
    if bytes.len() >= CHUNK_HEADER_LEN && bytes[..4] == HEADER_TAG {
        return Err(TraceError::UnexpectedChunk { expected: "batch" });
    }
    let (_, total) = chunk_frame(bytes, &[BATCH_TAG])?;
    let body = &bytes[CHUNK_HEADER_LEN..total];
    let bad = |count| TraceError::BadBatch {
        count,
        len: body.len(),
    };
    if body.len() < 8 {
        return Err(bad(0));
    }
    let count = u32::from_le_bytes([body[0], body[1], body[2], body[3]]);
    if body.len() - 8 != count as usize * RECORD_LEN {
        return Err(bad(count));
    }
    Ok(body[8..].chunks_exact(RECORD_LEN).map(TraceRecord::decode))
}

/// Reads a trace (a file, or any byte stream of chunks): the header first, then batches.
#[derive(Debug)]
pub struct TraceReader<R> {
    input: R,
    header: TraceHeader,
}

impl<R: Read> TraceReader<R> {
    /// Reads the header; fails when the input does not start with one.
    pub fn new(mut input: R) -> Result<Self, TraceError> {
        match read_chunk(&mut input)? {
            Some(Chunk::Header(header)) => Ok(TraceReader { input, header }),
            Some(Chunk::Batch(_)) => Err(TraceError::UnexpectedChunk { expected: "header" }),
            None => Err(TraceError::Truncated {
                needed: CHUNK_HEADER_LEN,
                available: 0,
            }),
        }
    }

    /// The header.
    pub fn header(&self) -> &TraceHeader {
        &self.header
    }

    /// The next batch, `None` at a clean end of input.
    pub fn next_batch(&mut self) -> Result<Option<Vec<TraceRecord>>, TraceError> {
        match read_chunk(&mut self.input)? {
            Some(Chunk::Batch(records)) => Ok(Some(records)),
            Some(Chunk::Header(_)) => Err(TraceError::UnexpectedChunk { expected: "batch" }),
            None => Ok(None),
        }
    }
}

/// Reads one chunk; `None` at end of input before its first byte.
fn read_chunk(input: &mut impl Read) -> Result<Option<Chunk>, TraceError> {
    let mut head = [0u8; CHUNK_HEADER_LEN];
    let got = read_full(input, &mut head)?;
    if got == 0 {
        return Ok(None);
    }
    if got < CHUNK_HEADER_LEN {
        return Err(TraceError::Truncated {
            needed: CHUNK_HEADER_LEN,
            available: got,
        });
    }
    let tag = [head[0], head[1], head[2], head[3]];
    if tag != HEADER_TAG && tag != BATCH_TAG {
        return Err(TraceError::BadTag(tag));
    }
    let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
    if len > MAX_CHUNK_LEN {
        return Err(TraceError::TooLarge(len));
    }
    let mut body = vec![0; len];
    let got = read_full(input, &mut body)?;
    if got < len {
        return Err(TraceError::Truncated {
            needed: CHUNK_HEADER_LEN + len,
            available: CHUNK_HEADER_LEN + got,
        });
    }
    decode_body(tag, &body).map(Some)
}

fn read_full(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Writes a trace: the header, then batches.
#[derive(Debug)]
pub struct TraceWriter<W: Write> {
    output: W,
}

impl<W: Write> TraceWriter<W> {
    /// Writes the header.
    pub fn new(mut output: W, header: &TraceHeader) -> Result<Self, TraceError> {
        output.write_all(&encode_header(header))?;
        Ok(TraceWriter { output })
    }

    /// Writes a batch.
    pub fn write_batch(&mut self, records: &[TraceRecord]) -> Result<(), TraceError> {
        for part in records.chunks(MAX_BATCH_RECORDS) {
            self.output.write_all(&encode_batch(part))?;
        }
        Ok(())
    }

    /// Writes an already encoded chunk (e.g. a `trace` channel payload) as is, after checking it.
    pub fn write_chunk(&mut self, chunk: &[u8]) -> Result<(), TraceError> {
        match decode_chunk(chunk)? {
            (Chunk::Batch(_), n) if n == chunk.len() => Ok(self.output.write_all(chunk)?),
            _ => Err(TraceError::UnexpectedChunk { expected: "batch" }),
        }
    }

    /// Flushes and returns the output.
    pub fn finish(mut self) -> Result<W, TraceError> {
        self.output.flush()?;
        Ok(self.output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> TraceHeader {
        TraceHeader {
            system: "demo".into(),
            clock: TraceClock {
                tsc_khz: 2_900_000,
                epoch_unix_ns: 1_700_000_000_000_000_000,
            },
            partitions: vec![TracePartition {
                id: 0,
                name: "control".into(),
                vcpus: 2,
                image: "/x/control.elf".into(),
            }],
            channels: vec![TraceChannel {
                name: "ch".into(),
                endpoints: vec![
                    TraceEndpoint {
                        partition: 0,
                        channel: 0,
                    },
                    TraceEndpoint {
                        partition: 1,
                        channel: 0,
                    },
                ],
            }],
        }
    }

    #[test]
    fn a_header_without_channels_reads_as_before() {
        let old = br#"{"system":"s","clock":{"tsc_khz":1,"epoch_unix_ns":2},"partitions":[]}"#;
        let h: TraceHeader = serde_json::from_slice(old).unwrap();
        assert!(h.channels.is_empty());
        let json = serde_json::to_string(&h).unwrap();
        assert!(!json.contains("channels"), "{json}");
    }

    fn records(n: u64) -> Vec<TraceRecord> {
        (0..n)
            .map(|i| TraceRecord {
                timestamp: 1000 + i,
                kind: RecordKind::Marker as u16,
                vcpu: (i % 2) as u16,
                partition: 0,
                a: i,
                b: u64::MAX - i,
            })
            .collect()
    }

    #[test]
    fn chunks_round_trip() {
        let h = encode_header(&header());
        assert_eq!(&h[..4], b"HVTH");
        let (c, n) = decode_chunk(&h).unwrap();
        assert_eq!((c, n), (Chunk::Header(header()), h.len()));
        let b = encode_batch(&records(3));
        assert_eq!(b.len(), 8 + 8 + 3 * 32);
        assert_eq!(
            decode_chunk(&b).unwrap(),
            (Chunk::Batch(records(3)), b.len())
        );
        let empty = encode_batch(&[]);
        assert_eq!(decode_chunk(&empty).unwrap().0, Chunk::Batch(vec![]));
    }

    #[test]
    fn record_layout_is_as_documented() {
        let r = TraceRecord {
            timestamp: 0x0102030405060708,
            kind: 14,
            vcpu: 1,
            partition: 2,
            a: 3,
            b: 4,
        };
        let b = encode_batch(&[r]);
        let rec = &b[16..];
        assert_eq!(&rec[..8], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&rec[8..16], &[14, 0, 1, 0, 2, 0, 0, 0]);
        assert_eq!(rec[16], 3);
        assert_eq!(rec[24], 4);
    }

    #[test]
    fn files_round_trip() {
        let mut w = TraceWriter::new(Vec::new(), &header()).unwrap();
        w.write_batch(&records(5)).unwrap();
        w.write_chunk(&encode_batch(&records(2))).unwrap();
        let bytes = w.finish().unwrap();
        let mut r = TraceReader::new(&bytes[..]).unwrap();
        assert_eq!(r.header(), &header());
        assert_eq!(r.next_batch().unwrap(), Some(records(5)));
        assert_eq!(r.next_batch().unwrap(), Some(records(2)));
        assert_eq!(r.next_batch().unwrap(), None);
    }

    #[test]
    fn malformed_input_gives_typed_errors() {
        let b = encode_batch(&records(2));
        for cut in [0, 3, 8, 20, b.len() - 1] {
            assert!(
                matches!(decode_chunk(&b[..cut]), Err(TraceError::Truncated { .. })),
                "cut at {cut}"
            );
        }
        let mut bad = b.clone();
        bad[0] = b'X';
        assert!(matches!(decode_chunk(&bad), Err(TraceError::BadTag(_))));
        let mut bad = b.clone();
        bad[8] = 3; // count 3 in a body with 2 records
        assert!(matches!(
            decode_chunk(&bad),
            Err(TraceError::BadBatch { count: 3, .. })
        ));
        let mut bad = b.clone();
        bad[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode_chunk(&bad), Err(TraceError::TooLarge(_))));
        let mut h = encode_header(&header());
        h[8] = 9;
        assert!(matches!(
            decode_chunk(&h),
            Err(TraceError::UnsupportedVersion(9))
        ));
        let mut h = encode_header(&header());
        let last = h.len() - 1;
        h[last] = b'!';
        assert!(matches!(decode_chunk(&h), Err(TraceError::BadHeader(_))));
        // A file must start with its header, and end on a chunk boundary.
        assert!(matches!(
            TraceReader::new(&b[..]),
            Err(TraceError::UnexpectedChunk { .. })
        ));
        let mut file = encode_header(&header());
        file.extend_from_slice(&b[..b.len() - 5]);
        let mut r = TraceReader::new(&file[..]).unwrap();
        assert!(matches!(r.next_batch(), Err(TraceError::Truncated { .. })));
    }

    #[test]
    fn batch_records_decode_lazily_and_check_like_decode_chunk() {
        let b = encode_batch(&records(4));
        let got: Vec<TraceRecord> = batch_records(&b).unwrap().collect();
        assert_eq!(got, records(4));
        assert_eq!(batch_records(&b).unwrap().len(), 4);
        let mut bad = b.clone();
        bad[8] = 3;
        assert!(matches!(
            batch_records(&bad),
            Err(TraceError::BadBatch { count: 3, .. })
        ));
        assert!(matches!(
            batch_records(&b[..b.len() - 1]),
            Err(TraceError::Truncated { .. })
        ));
        assert!(matches!(
            batch_records(&encode_header(&header())),
            Err(TraceError::UnexpectedChunk { .. })
        ));
        let mut bad = b.clone();
        bad[0] = b'X';
        assert!(matches!(batch_records(&bad), Err(TraceError::BadTag(_))));
    }

    #[test]
    fn irq_latencies_pair_raises_injections_and_eois() {
        let rec = |timestamp, kind: RecordKind, a, b| TraceRecord {
            timestamp,
            kind: kind as u16,
            vcpu: 1,
            partition: 2,
            a,
            b,
        };
        let mut l = IrqLatencies::default();
        let got: Vec<(IrqLatency, u8, u64)> = [
            rec(100, RecordKind::IrqRaise, 32, 40),
            rec(100, RecordKind::IrqInject, 32, 0),
            rec(150, RecordKind::IrqRaise, 48, 120),
            rec(150, RecordKind::IrqInject, 48, 0),
            rec(170, RecordKind::IrqEoi, 48, 0),
            rec(400, RecordKind::IrqEoi, 32, 0),
            rec(500, RecordKind::IrqEoi, 32, 0),
            rec(600, RecordKind::IrqInject, 33, 0),
            rec(610, RecordKind::Lost, 3, LOST_IN_RING),
            rec(700, RecordKind::IrqEoi, 33, 0),
        ]
        .iter()
        .filter_map(|r| l.feed(r))
        .map(|s| {
            assert_eq!((s.partition, s.vcpu), (2, 1));
            (s.what, s.vector, s.ns)
        })
        .collect();
        use IrqLatency::*;
        assert_eq!(
            got,
            [
                (RaiseToInject, 32, 60),
                (RaiseToInject, 48, 30),
                (InjectToEoi, 48, 20),
                (InjectToEoi, 32, 300),
            ],
            "an EOI without an injection and one after a loss give nothing"
        );
    }

    #[test]
    fn kinds_and_classes() {
        assert_eq!(RecordKind::from_u16(14), Some(RecordKind::Marker));
        assert_eq!(RecordKind::from_u16(18), Some(RecordKind::Lost));
        assert_eq!(RecordKind::from_u16(0), None);
        assert_eq!(RecordKind::from_u16(99), None);
        for k in 1..=23 {
            assert_eq!(RecordKind::from_u16(k).map(|k| k as u16), Some(k));
        }
        assert_eq!(class_bits(&["marker".into(), "irq".into()]), Ok(0b100_0010));
        assert_eq!(class_bits(&["nope".into()]), Err("nope".into()));
        assert_eq!(vcpu_state_name(3), "paused");
        let start = TraceRecord {
            kind: RecordKind::StateChange as u16,
            a: 2,
            b: STATE_AT_START,
            ..Default::default()
        };
        assert!(start.is_state_at_start());
        assert!(!TraceRecord { b: 0, ..start }.is_state_at_start());
        assert_eq!(bus_error_reason_name(3), "bad reply");
    }
}
