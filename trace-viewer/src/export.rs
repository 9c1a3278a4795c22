//! Exporters, all streaming (they write as they read, so memory stays flat whatever the trace
//! length): [`perfetto_json`] writes the JSON trace-event format that Perfetto (ui.perfetto.dev)
//! and chrome://tracing open, [`crate::perfetto_proto`] Perfetto's native protobuf format
//! (smaller and faster to load), [`csv`] one line per record. [`write`] runs one of them over a
//! [`TraceStream`].
//!
//! In the Perfetto exports a partition is a process and a vCPU a thread. A vCPU's track shows
//! slices for its time in the guest (entry to exit, with the exit reason), halted, stopped in the
//! debugger, outside its schedule window and blocked on a device model; interrupts, hypercalls,
//! device accesses, IPC, markers and state changes are instants on it, and each device-model
//! request is a flow from the client's access through the model and back, each IPC message one
//! from its send to its receive (when the header lists the channels' endpoints).

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::Path;

use hv_link::trace::{
    RecordKind, TraceHeader, TraceRecord, bus_error_reason_name, exit_reason_name, hypercall_name,
    vcpu_state_name,
};

use crate::stream::TraceStream;
use crate::{Trace, ViewerError};

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Perfetto's protobuf trace (`.perfetto-trace`), see [`crate::perfetto_proto`].
    PerfettoProto,
    /// The JSON trace-event format (`.json`): Perfetto and chrome://tracing.
    PerfettoJson,
    /// One line per record (`.csv`).
    Csv,
}

impl Format {
    /// The format a file name's extension names (`.perfetto-trace`, `.pftrace`, `.json`, `.csv`).
    pub fn from_path(path: &Path) -> Option<Format> {
        let name = path.file_name()?.to_str()?;
        [
            (".perfetto-trace", Format::PerfettoProto),
            (".pftrace", Format::PerfettoProto),
            (".json", Format::PerfettoJson),
            (".csv", Format::Csv),
        ]
        .into_iter()
        .find(|(ext, _)| name.ends_with(ext))
        .map(|(_, f)| f)
    }

    /// The extension given to output files of this format (without the dot).
    pub fn extension(self) -> &'static str {
        match self {
            Format::PerfettoProto => "perfetto-trace",
            Format::PerfettoJson => "json",
            Format::Csv => "csv",
        }
    }
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The trace could not be read.
    #[error(transparent)]
    Read(#[from] ViewerError),
    /// The output could not be written.
    #[error("write the export")]
    Write(#[from] io::Error),
}

/// Writes `stream`'s records in `format` to `out`, reading them in time order as it goes.
/// Returns the number of records exported.
pub fn write(
    stream: &TraceStream,
    format: Format,
    out: &mut impl Write,
) -> Result<u64, ExportError> {
    let mut records = stream.records();
    let mut counted = Counted {
        inner: &mut records,
        n: 0,
    };
    let base = stream.span().0;
    match format {
        Format::PerfettoJson => {
            let first = stream.first_records()?;
            perfetto_json(stream.header(), base, &first, &mut counted, out)?;
        }
        Format::PerfettoProto => {
            let first = stream.first_records()?;
            crate::perfetto_proto::write(stream.header(), base, &first, &mut counted, out)?;
        }
        Format::Csv => csv_records(stream.header(), base, &mut counted, out)?,
    }
    let n = counted.n;
    records.finish()?;
    Ok(n)
}

/// Counts what passes through.
struct Counted<'a, I> {
    inner: &'a mut I,
    n: u64,
}

impl<I: Iterator<Item = TraceRecord>> Iterator for Counted<'_, I> {
    type Item = TraceRecord;
    fn next(&mut self) -> Option<TraceRecord> {
        let r = self.inner.next()?;
        self.n += 1;
        Some(r)
    }
}

/// Writes a loaded trace as a JSON trace-event file.
pub fn perfetto(trace: &Trace, out: &mut impl Write) -> io::Result<()> {
    perfetto_json(
        &trace.header,
        trace.span().0,
        &first_records(&trace.records),
        trace.records.iter().copied(),
        out,
    )
}

/// Each vCPU's leading records in `records` (in time order): up to and including the first
/// that tells its state when the trace began (see [`ends_lead`]); what [`initial_slices`] reads.
pub fn first_records(records: &[TraceRecord]) -> Vec<TraceRecord> {
    let mut done: FastMap<(u32, u16), bool> = FastMap::default();
    records
        .iter()
        .filter(|r| {
            let done = done.entry((r.partition, r.vcpu)).or_default();
            !std::mem::replace(done, *done || ends_lead(r))
        })
        .copied()
        .collect()
}

/// Whether `r` ends a vCPU's leading records: a state at recording start that names a slice
/// (`StateChange` with `STATE_AT_START`), or a record that opens, closes or forgets slices.
pub(crate) fn ends_lead(r: &TraceRecord) -> bool {
    if r.is_state_at_start() {
        return state_slice(r.a).is_some();
    }
    r.kind()
        .is_some_and(|k| !matches!(effect(k, r), Effect::None))
}

/// The slice a vCPU in state `code` (a `StateChange` state) is in, if that state is one.
pub(crate) fn state_slice(code: u64) -> Option<&'static str> {
    match vcpu_state_name(code) {
        "halted" => Some(HALTED),
        "out_of_window" => Some(OUT_OF_WINDOW),
        "debug_stopped" => Some(DEBUGGER),
        "blocked_on_device" => Some(BLOCKED),
        _ => None,
    }
}

/// The slices vCPUs were already in when the trace began, from their leading records (see
/// [`first_records`]; any order across vCPUs, time order within one): the state recorded at the
/// recording's start when it is a slice (halted, outside the window, stopped in the debugger,
/// blocked on a device), else a first slice record that ends a slice (an exit, a wake, a
/// schedule-in, a debugger resume, a device reply) means the vCPU was in it from the start.
/// Shown from the trace's first timestamp with the argument `began_before_trace`, so that quiet
/// vCPUs do not show blank stretches there.
pub(crate) fn initial_slices(first: &[TraceRecord]) -> Vec<((u32, u16), &'static str)> {
    let mut decided: FastMap<(u32, u16), ()> = FastMap::default();
    let mut out = Vec::new();
    for r in first {
        let key = (r.partition, r.vcpu);
        if decided.contains_key(&key) || !ends_lead(r) {
            continue;
        }
        decided.insert(key, ());
        let slice = if r.is_state_at_start() {
            state_slice(r.a)
        } else {
            match r.kind().map(|k| effect(k, r)) {
                Some(Effect::Close(name, _)) => Some(name),
                _ => None,
            }
        };
        out.extend(slice.map(|s| (key, s)));
    }
    out
}

/// The argument marking a slice that began before the trace.
pub(crate) const BEGAN_BEFORE_TRACE: (&str, Arg) = ("began_before_trace", Arg::U(1));

/// An argument value of a slice or instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Arg {
    /// An unsigned number.
    U(u64),
    /// A signed number.
    I(i64),
    /// A number shown in hex (a string in JSON).
    Hex(u64),
    /// A name.
    S(&'static str),
}

/// Named arguments (at most [`Args::MAX`], kept inline: no allocation per event).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Args {
    items: [(&'static str, Arg); Args::MAX],
    len: usize,
}

impl Args {
    /// Most arguments of one event.
    pub(crate) const MAX: usize = 4;
    /// No arguments.
    pub(crate) const NONE: Args = Args {
        items: [("", Arg::U(0)); Args::MAX],
        len: 0,
    };

    /// These arguments.
    pub(crate) fn of(items: &[(&'static str, Arg)]) -> Args {
        let mut a = Args::NONE;
        for &i in items {
            a.push(i);
        }
        a
    }

    /// Adds one (beyond [`Args::MAX`] it is dropped).
    pub(crate) fn push(&mut self, item: (&'static str, Arg)) {
        if let Some(slot) = self.items.get_mut(self.len) {
            *slot = item;
            self.len += 1;
        }
    }

    /// Adds `item` in front.
    pub(crate) fn push_front(&mut self, item: (&'static str, Arg)) {
        let rest = *self;
        *self = Args::of(&[item]);
        for &i in rest.as_slice() {
            self.push(i);
        }
    }

    /// The arguments.
    pub(crate) fn as_slice(&self) -> &[(&'static str, Arg)] {
        &self.items[..self.len]
    }
}

/// An instant's name: a fixed part and, for most kinds, a number or word after it (`raise 32`,
/// `write 0x3f8`, `state running`), written without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Name(pub(crate) &'static str, pub(crate) Suffix);

/// What follows the fixed part of a [`Name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Suffix {
    /// Nothing.
    None,
    /// A decimal number.
    Dec(u64),
    /// A hex number.
    Hex(u64),
    /// A word.
    Word(&'static str),
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)?;
        match self.1 {
            Suffix::None => Ok(()),
            Suffix::Dec(v) => write!(f, " {v}"),
            Suffix::Hex(v) => write!(f, " {v:#x}"),
            Suffix::Word(w) => write!(f, " {w}"),
        }
    }
}

/// A fast hasher for the small keys looked up on every record (vCPUs, name ids): SipHash's
/// resistance to chosen keys buys nothing here.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FastHasher(u64);

impl std::hash::Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u8(&mut self, v: u8) {
        self.write_u64(u64::from(v));
    }
    fn write_u16(&mut self, v: u16) {
        self.write_u64(u64::from(v));
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// A map with [`FastHasher`].
pub(crate) type FastMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<FastHasher>>;

/// Slice names.
pub(crate) const GUEST: &str = "guest";
pub(crate) const HALTED: &str = "halted";
pub(crate) const DEBUGGER: &str = "stopped in debugger";
pub(crate) const OUT_OF_WINDOW: &str = "outside schedule window";
pub(crate) const BLOCKED: &str = "blocked on device";

/// What one record does to its vCPU's track.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Effect {
    /// Opens the slice `name`.
    Open(&'static str, Args),
    /// Closes the slice `name` (when open), adding arguments.
    Close(&'static str, Args),
    /// Everything open ended among lost records.
    Forget,
    /// Nothing to the slices.
    None,
}

/// The slice effect of a record and, for instants, its category and arguments. Device-model
/// records also carry a flow (see [`flow_of`]).
pub(crate) fn effect(kind: RecordKind, r: &TraceRecord) -> Effect {
    use RecordKind::*;
    match kind {
        VmEntry => Effect::Open(GUEST, Args::NONE),
        VmExit => Effect::Close(
            GUEST,
            Args::of(&[
                ("exit", Arg::S(exit_reason_name(r.a))),
                ("rip", Arg::Hex(r.b)),
            ]),
        ),
        Halt => Effect::Open(HALTED, Args::NONE),
        Wake => Effect::Close(HALTED, Args::NONE),
        DebugStop => Effect::Open(DEBUGGER, Args::NONE),
        DebugResume => Effect::Close(DEBUGGER, Args::NONE),
        ScheduleOut => Effect::Open(OUT_OF_WINDOW, Args::NONE),
        ScheduleIn => Effect::Close(OUT_OF_WINDOW, Args::NONE),
        ModelRequest => Effect::Open(
            BLOCKED,
            Args::of(&[("request", Arg::U(r.a)), ("offset", Arg::Hex(r.b))]),
        ),
        ModelReply => Effect::Close(BLOCKED, Args::of(&[("latency_ns", Arg::U(r.b))])),
        ModelBusError => Effect::Close(
            BLOCKED,
            Args::of(&[("bus_error", Arg::S(bus_error_reason_name(r.b)))]),
        ),
        Lost => Effect::Forget,
        _ => Effect::None,
    }
}

/// Flow phase of a device-model record: the request starts it, the model's receive and respond
/// are steps, the reply or bus error ends it. The flow id is the request id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlowPhase {
    /// The first event.
    Start,
    /// A middle event.
    Step,
    /// The last event.
    End,
}

/// The flow a record is part of, if any.
pub(crate) fn flow_of(kind: RecordKind) -> Option<FlowPhase> {
    use RecordKind::*;
    match kind {
        ModelRequest => Some(FlowPhase::Start),
        ModelReceive | ModelRespond => Some(FlowPhase::Step),
        ModelReply | ModelBusError => Some(FlowPhase::End),
        _ => None,
    }
}

/// Most IPC sends one direction of a channel keeps waiting for their receive (beyond, the oldest
/// is forgotten: memory stays bounded when the receiver is not traced).
const MAX_IPC_IN_FLIGHT: usize = 1 << 16;

/// Pairs IPC sends with their receives, for flows from sender to receiver: the header's
/// `channels` say which (partition, channel number) ends each channel joins; on each channel and
/// direction, receives take the sends in order (channels are FIFO). A `Lost` record of an
/// endpoint's vCPU forgets the sends waiting on its channels (the pairing would be off).
#[derive(Debug, Default)]
pub(crate) struct IpcFlows {
    /// (partition, channel number) → (channel index, endpoint index).
    ends: FastMap<(u32, u64), (usize, usize)>,
    /// Per channel and sending endpoint: the flow ids of sends not received yet.
    waiting: Vec<[std::collections::VecDeque<u64>; 2]>,
    sent: u64,
}

impl IpcFlows {
    /// The pairing for a trace with `header` (none when the header lists no channels).
    pub(crate) fn new(header: &TraceHeader) -> IpcFlows {
        let mut flows = IpcFlows::default();
        for (i, c) in header.channels.iter().enumerate() {
            if let [a, b] = c.endpoints[..] {
                flows.ends.insert((a.partition, a.channel), (i, 0));
                flows.ends.insert((b.partition, b.channel), (i, 1));
            }
        }
        flows.waiting = vec![Default::default(); header.channels.len()];
        flows
    }

    /// The flow `r` begins (an `IpcSend`) or ends (the `IpcReceive` of a send in the trace):
    /// its phase and id (odd ids: device-model flows use even ones).
    pub(crate) fn feed(&mut self, r: &TraceRecord) -> Option<(FlowPhase, u64)> {
        match r.kind()? {
            RecordKind::IpcSend => {
                let &(channel, end) = self.ends.get(&(r.partition, r.a))?;
                let id = (self.sent << 1) | 1;
                self.sent += 1;
                let queue = &mut self.waiting[channel][end];
                if queue.len() == MAX_IPC_IN_FLIGHT {
                    queue.pop_front();
                }
                queue.push_back(id);
                Some((FlowPhase::Start, id))
            }
            RecordKind::IpcReceive => {
                let &(channel, end) = self.ends.get(&(r.partition, r.a))?;
                let id = self.waiting[channel][1 - end].pop_front()?;
                Some((FlowPhase::End, id))
            }
            RecordKind::Lost => {
                for (&(partition, _), &(channel, _)) in &self.ends {
                    if partition == r.partition {
                        self.waiting[channel].iter_mut().for_each(|q| q.clear());
                    }
                }
                None
            }
            _ => None,
        }
    }
}

/// Whether a record is an instant on its track (not a slice boundary).
pub(crate) fn is_instant(kind: RecordKind) -> bool {
    use RecordKind::*;
    !matches!(
        kind,
        VmEntry
            | VmExit
            | Halt
            | Wake
            | DebugStop
            | DebugResume
            | ScheduleOut
            | ScheduleIn
            | ModelRequest
            | ModelReply
            | ModelBusError
    )
}

/// Name, category and arguments of an instant record.
pub(crate) fn describe(kind: RecordKind, r: &TraceRecord) -> (Name, &'static str, Args) {
    use RecordKind::*;
    use Suffix::*;
    let vector = Args::of(&[("vector", Arg::U(r.a))]);
    match kind {
        IrqRaise => (Name("raise", Dec(r.a)), "irq", vector),
        IrqInject => (Name("inject", Dec(r.a)), "irq", vector),
        IrqEoi => (Name("EOI", Dec(r.a)), "irq", vector),
        IrqWithdraw => (Name("withdraw", Dec(r.a)), "irq", vector),
        Hypercall => (
            hypercall_name(r.a).map_or(Name("hypercall", Dec(r.a)), |n| Name(n, None)),
            "hypercall",
            Args::of(&[("nr", Arg::U(r.a)), ("result", Arg::I(r.b as i64))]),
        ),
        DeviceAccess => (
            Name(if r.b & 1 == 1 { "write" } else { "read" }, Hex(r.a)),
            "device",
            Args::of(&[("size", Arg::U(r.b >> 1))]),
        ),
        IpcSend => (
            Name("IPC send", Dec(r.a)),
            "ipc",
            Args::of(&[("len", Arg::U(r.b))]),
        ),
        IpcReceive => (
            Name("IPC receive", Dec(r.a)),
            "ipc",
            Args::of(&[("len", Arg::U(r.b))]),
        ),
        Marker => (
            Name("marker", Dec(r.a)),
            "marker",
            Args::of(&[("value", Arg::U(r.b))]),
        ),
        StateChange if r.is_state_at_start() => (
            Name("state at start", Word(vcpu_state_name(r.a))),
            "vcpu",
            Args::NONE,
        ),
        StateChange => (
            Name("state", Word(vcpu_state_name(r.a))),
            "vcpu",
            Args::NONE,
        ),
        ModelReceive => (
            Name("take request", Dec(r.a)),
            "device",
            Args::of(&[("offset", Arg::Hex(r.b))]),
        ),
        ModelRespond => (
            Name("answer request", Dec(r.a)),
            "device",
            Args::of(&[("value", Arg::Hex(r.b))]),
        ),
        Lost => (
            Name("lost", Dec(r.a)),
            "lost",
            Args::of(&[("count", Arg::U(r.a))]),
        ),
        _ => (
            Name(kind_name(kind), None),
            "other",
            Args::of(&[("a", Arg::U(r.a)), ("b", Arg::U(r.b))]),
        ),
    }
}

/// The kind's name as CSV shows it (`VmExit`).
pub(crate) fn kind_name(kind: RecordKind) -> &'static str {
    use RecordKind::*;
    match kind {
        VmEntry => "VmEntry",
        VmExit => "VmExit",
        IrqRaise => "IrqRaise",
        IrqInject => "IrqInject",
        IrqEoi => "IrqEoi",
        Hypercall => "Hypercall",
        ScheduleIn => "ScheduleIn",
        ScheduleOut => "ScheduleOut",
        Halt => "Halt",
        Wake => "Wake",
        DeviceAccess => "DeviceAccess",
        IpcSend => "IpcSend",
        IpcReceive => "IpcReceive",
        Marker => "Marker",
        DebugStop => "DebugStop",
        DebugResume => "DebugResume",
        StateChange => "StateChange",
        Lost => "Lost",
        ModelRequest => "ModelRequest",
        ModelReply => "ModelReply",
        ModelBusError => "ModelBusError",
        ModelReceive => "ModelReceive",
        ModelRespond => "ModelRespond",
        IrqWithdraw => "IrqWithdraw",
    }
}

// Numbers are formatted by hand into a line buffer: the exports write tens of millions of
// them, and `write!` through `fmt` was most of the JSON export's time.

/// Appends `v` in decimal.
fn put_u64(buf: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[at..]);
}

/// Appends `v` in decimal.
fn put_i64(buf: &mut Vec<u8>, v: i64) {
    if v < 0 {
        buf.push(b'-');
    }
    put_u64(buf, v.unsigned_abs());
}

/// Appends `v` as `0x…` (lower case, as `{:#x}`).
fn put_hex(buf: &mut Vec<u8>, v: u64) {
    buf.extend_from_slice(b"0x");
    let digits = (16 - v.leading_zeros() / 4).max(1);
    for i in (0..digits).rev() {
        buf.push(b"0123456789abcdef"[((v >> (i * 4)) & 0xf) as usize]);
    }
}

/// Appends `ns` (relative to the base) as JSON microseconds, exactly.
fn put_us(buf: &mut Vec<u8>, ns: u64) {
    put_u64(buf, ns / 1000);
    let f = ns % 1000;
    buf.extend_from_slice(&[
        b'.',
        b'0' + (f / 100) as u8,
        b'0' + (f / 10 % 10) as u8,
        b'0' + (f % 10) as u8,
    ]);
}

/// Appends a JSON string.
fn put_str(buf: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        buf.push(b'"');
        buf.extend_from_slice(s.as_bytes());
        buf.push(b'"');
    } else {
        // Serialising a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *buf, s);
    }
}

impl Name {
    /// Appends the name (ASCII without quotes or backslashes: no escaping needed).
    fn put(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(self.0.as_bytes());
        match self.1 {
            Suffix::None => {}
            Suffix::Dec(v) => {
                buf.push(b' ');
                put_u64(buf, v);
            }
            Suffix::Hex(v) => {
                buf.push(b' ');
                put_hex(buf, v);
            }
            Suffix::Word(w) => {
                buf.push(b' ');
                buf.extend_from_slice(w.as_bytes());
            }
        }
    }
}

fn put_args(buf: &mut Vec<u8>, args: &[(&'static str, Arg)]) {
    buf.push(b'{');
    for (i, (name, value)) in args.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        put_str(buf, name);
        buf.push(b':');
        match *value {
            Arg::U(v) => put_u64(buf, v),
            Arg::I(v) => put_i64(buf, v),
            Arg::Hex(v) => {
                buf.push(b'"');
                put_hex(buf, v);
                buf.push(b'"');
            }
            Arg::S(s) => put_str(buf, s),
        }
    }
    buf.push(b'}');
}

/// Appends `,"pid":P,"tid":T,"ts":`.
fn put_track_ts(buf: &mut Vec<u8>, pid: u32, tid: u32, ts: u64) {
    buf.extend_from_slice(b",\"pid\":");
    put_u64(buf, u64::from(pid));
    buf.extend_from_slice(b",\"tid\":");
    put_u64(buf, u64::from(tid));
    buf.extend_from_slice(b",\"ts\":");
    put_us(buf, ts);
}

/// Writes a JSON trace-event file of `records` (in time order; `base`: the time shown as 0,
/// the first timestamp; `first`: each vCPU's leading records, see [`first_records`]), one event
/// at a time.
pub fn perfetto_json(
    header: &TraceHeader,
    base: u64,
    first: &[TraceRecord],
    records: impl IntoIterator<Item = TraceRecord>,
    out: &mut impl Write,
) -> io::Result<()> {
    let mut line: Vec<u8> = Vec::with_capacity(512);
    line.extend_from_slice(b"{\"displayTimeUnit\":\"ns\",\"otherData\":{\"system\":");
    put_str(&mut line, &header.system);
    line.extend_from_slice(b",\"tsc_khz\":");
    put_u64(&mut line, header.clock.tsc_khz);
    line.extend_from_slice(b",\"epoch_unix_ns\":");
    put_u64(&mut line, header.clock.epoch_unix_ns);
    line.extend_from_slice(b"},\"traceEvents\":[");
    out.write_all(&line)?;
    let mut first_event = true;
    // Starts an event in `line`: the separator, unless it is the first.
    let mut start = |line: &mut Vec<u8>| {
        line.clear();
        if !std::mem::take(&mut first_event) {
            line.extend_from_slice(b",\n");
        }
    };
    for p in &header.partitions {
        let pid = u64::from(p.id) + 1;
        start(&mut line);
        line.extend_from_slice(b"{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":");
        put_u64(&mut line, pid);
        line.extend_from_slice(b",\"args\":{\"name\":");
        put_str(&mut line, &p.name);
        line.extend_from_slice(b"}}");
        out.write_all(&line)?;
        start(&mut line);
        line.extend_from_slice(b"{\"ph\":\"M\",\"name\":\"process_sort_index\",\"pid\":");
        put_u64(&mut line, pid);
        line.extend_from_slice(b",\"args\":{\"sort_index\":");
        put_u64(&mut line, u64::from(p.id));
        line.extend_from_slice(b"}}");
        out.write_all(&line)?;
        for v in 0..p.vcpus {
            start(&mut line);
            line.extend_from_slice(b"{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":");
            put_u64(&mut line, pid);
            line.extend_from_slice(b",\"tid\":");
            put_u64(&mut line, u64::from(v) + 1);
            line.extend_from_slice(b",\"args\":{\"name\":\"vCPU ");
            put_u64(&mut line, u64::from(v));
            line.extend_from_slice(b"\"}}");
            out.write_all(&line)?;
        }
    }
    // Open slices per (partition, vCPU, slice name): start time and arguments.
    let mut open: FastMap<(u32, u16, &'static str), (u64, Args)> = FastMap::default();
    for ((partition, vcpu), name) in initial_slices(first) {
        open.insert(
            (partition, vcpu, name),
            (0, Args::of(&[BEGAN_BEFORE_TRACE])),
        );
    }
    let mut ipc = IpcFlows::new(header);
    let mut last = 0;
    for r in records {
        let Some(kind) = r.kind() else {
            continue;
        };
        let (pid, tid) = (r.partition + 1, u32::from(r.vcpu) + 1);
        let ts = r.timestamp.saturating_sub(base);
        last = last.max(ts);
        match effect(kind, &r) {
            Effect::Open(name, args) => {
                // The same slice again without its end (records lost unreported, or a state at
                // start noted just before the vCPU's own record of it): the open one ends here,
                // as in the protobuf export.
                if let Some((begun, args)) = open.insert((r.partition, r.vcpu, name), (ts, args)) {
                    start(&mut line);
                    put_slice(&mut line, name, (pid, tid), (begun, ts), &args);
                    out.write_all(&line)?;
                }
            }
            Effect::Close(name, extra) => {
                if let Some((begun, mut args)) = open.remove(&(r.partition, r.vcpu, name)) {
                    for &a in extra.as_slice() {
                        args.push(a);
                    }
                    start(&mut line);
                    put_slice(&mut line, name, (pid, tid), (begun, ts), &args);
                    out.write_all(&line)?;
                }
            }
            Effect::Forget => {
                open.retain(|(p, v, _), _| (*p, *v) != (r.partition, r.vcpu));
            }
            Effect::None => {}
        }
        if is_instant(kind) {
            let (name, cat, args) = describe(kind, &r);
            start(&mut line);
            line.extend_from_slice(b"{\"ph\":\"i\",\"s\":\"t\",\"name\":\"");
            name.put(&mut line);
            line.extend_from_slice(b"\",\"cat\":\"");
            line.extend_from_slice(cat.as_bytes());
            line.push(b'"');
            put_track_ts(&mut line, pid, tid, ts);
            line.extend_from_slice(b",\"args\":");
            put_args(&mut line, args.as_slice());
            // An IPC send's flow to its receive (flow v2: bound to these instants).
            if let Some((phase, id)) = ipc.feed(&r) {
                line.extend_from_slice(b",\"bind_id\":\"");
                put_hex(&mut line, id);
                line.extend_from_slice(if phase == FlowPhase::Start {
                    b"\",\"flow_out\":true"
                } else {
                    b"\",\"flow_in\":true"
                });
            }
            line.push(b'}');
            out.write_all(&line)?;
        }
        if let Some(phase) = flow_of(kind) {
            let ph = match phase {
                FlowPhase::Start => b's',
                FlowPhase::Step => b't',
                FlowPhase::End => b'f',
            };
            start(&mut line);
            line.extend_from_slice(b"{\"ph\":\"");
            line.push(ph);
            line.extend_from_slice(b"\",\"name\":\"device request\",\"cat\":\"device\",\"id\":");
            put_u64(&mut line, r.a);
            put_track_ts(&mut line, pid, tid, ts);
            if phase == FlowPhase::End {
                line.extend_from_slice(b",\"bp\":\"e\"");
            }
            line.push(b'}');
            out.write_all(&line)?;
        }
    }
    // Slices still open at the end (a vCPU halted or outside its window throughout) are drawn
    // to the last timestamp, marked `still_open`, so that quiet vCPUs do not show blank tracks.
    let mut still_open: Vec<_> = open.into_iter().collect();
    still_open.sort_unstable_by_key(|&((p, v, name), (begun, _))| (p, v, begun, name));
    for ((p, v, name), (begun, mut args)) in still_open {
        if begun < last {
            args.push(("still_open", Arg::U(1)));
            start(&mut line);
            put_slice(
                &mut line,
                name,
                (p + 1, u32::from(v) + 1),
                (begun, last),
                &args,
            );
            out.write_all(&line)?;
        }
    }
    out.write_all(b"]}\n")?;
    out.flush()
}

/// Appends a complete slice event (`ph` X) from `span.0` to `span.1` on `track` (pid, tid).
fn put_slice(line: &mut Vec<u8>, name: &str, track: (u32, u32), span: (u64, u64), args: &Args) {
    line.extend_from_slice(b"{\"ph\":\"X\",\"name\":\"");
    line.extend_from_slice(name.as_bytes());
    line.extend_from_slice(b"\",\"cat\":\"vcpu\"");
    put_track_ts(line, track.0, track.1, span.0);
    line.extend_from_slice(b",\"dur\":");
    put_us(line, span.1.saturating_sub(span.0));
    line.extend_from_slice(b",\"args\":");
    put_args(line, args.as_slice());
    line.push(b'}');
}

/// Writes one CSV line per record of a loaded trace (see [`csv_records`]).
pub fn csv(trace: &Trace, out: &mut impl Write) -> io::Result<()> {
    csv_records(
        &trace.header,
        trace.span().0,
        trace.records.iter().copied(),
        out,
    )
}

/// Writes one CSV line per record: time (ns from `base`, the first record), partition, vCPU,
/// kind, the two payload words and, where there is one, what they mean.
pub fn csv_records(
    header: &TraceHeader,
    base: u64,
    records: impl IntoIterator<Item = TraceRecord>,
    out: &mut impl Write,
) -> io::Result<()> {
    let names: FastMap<u32, &str> = header
        .partitions
        .iter()
        .map(|p| (p.id, p.name.as_str()))
        .collect();
    writeln!(out, "time_ns,partition,vcpu,kind,a,b,detail")?;
    let mut line: Vec<u8> = Vec::with_capacity(128);
    for r in records {
        let detail = match r.kind() {
            Some(RecordKind::VmExit) => exit_reason_name(r.a),
            Some(RecordKind::Hypercall) => hypercall_name(r.a).unwrap_or(""),
            Some(RecordKind::StateChange) => vcpu_state_name(r.a),
            Some(RecordKind::ModelBusError) => bus_error_reason_name(r.b),
            _ => "",
        };
        line.clear();
        put_u64(&mut line, r.timestamp.saturating_sub(base));
        line.push(b',');
        line.extend_from_slice(names.get(&r.partition).copied().unwrap_or("?").as_bytes());
        line.push(b',');
        put_u64(&mut line, u64::from(r.vcpu));
        line.push(b',');
        match r.kind() {
            Some(k) => line.extend_from_slice(kind_name(k).as_bytes()),
            None => {
                line.extend_from_slice(b"kind");
                put_u64(&mut line, u64::from(r.kind));
            }
        }
        line.push(b',');
        put_u64(&mut line, r.a);
        line.push(b',');
        put_u64(&mut line, r.b);
        line.push(b',');
        line.extend_from_slice(detail.as_bytes());
        line.push(b'\n');
        out.write_all(&line)?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{header, rec};
    use RecordKind::*;
    use serde_json::Value;

    fn sample() -> Trace {
        Trace::new(
            header(),
            vec![
                rec(1000, 0, 0, VmEntry, 0, 0),
                rec(3000, 0, 0, VmExit, 6, 0xd0),
                rec(3100, 0, 0, ModelRequest, 7, 8),
                rec(3200, 1, 0, ModelReceive, 7, 8),
                rec(3300, 1, 0, ModelRespond, 7, 42),
                rec(3400, 0, 0, ModelReply, 7, 300),
                rec(3500, 0, 0, Hypercall, 21, 1),
                rec(3600, 1, 1, Halt, 0, 0),
                rec(3700, 1, 1, Lost, 2, 0),
                rec(3800, 1, 1, Wake, 0, 0),
            ],
        )
    }

    #[test]
    fn perfetto_export_has_tracks_slices_instants_and_flows() {
        let mut out = Vec::new();
        perfetto(&sample(), &mut out).unwrap();
        let doc: Value = serde_json::from_slice(&out).unwrap();
        let events = doc["traceEvents"].as_array().unwrap();
        let find = |ph: &str, name: &str| {
            events
                .iter()
                .filter(|e| e["ph"] == ph && e["name"] == name)
                .collect::<Vec<_>>()
        };
        assert_eq!(find("M", "process_name").len(), 2);
        assert_eq!(find("M", "thread_name").len(), 3);
        let guest = find("X", "guest");
        assert_eq!(guest.len(), 1);
        assert_eq!(guest[0]["ts"], 0.0);
        assert_eq!(guest[0]["dur"], 2.0);
        assert_eq!(guest[0]["args"]["exit"], "mmio");
        let blocked = find("X", "blocked on device");
        assert_eq!(blocked[0]["args"]["latency_ns"], 300);
        assert_eq!(find("i", "HV_DM_REPLY_WAIT").len(), 1);
        let flows: Vec<&str> = events
            .iter()
            .filter(|e| e["id"] == 7)
            .map(|e| e["ph"].as_str().unwrap())
            .collect();
        assert_eq!(flows, ["s", "t", "t", "f"]);
        // The halt's wake came after lost records: no slice is made up for it.
        assert!(find("X", "halted").is_empty());
        assert_eq!(find("i", "lost 2").len(), 1);
        assert_eq!(doc["otherData"]["system"], "test");
    }

    #[test]
    fn a_vcpu_already_halted_at_the_start_shows_it() {
        let trace = Trace::new(
            header(),
            vec![
                rec(1000, 0, 0, Marker, 1, 0),
                rec(4000, 1, 1, Wake, 0, 0),
                rec(5000, 1, 1, Halt, 0, 0),
            ],
        );
        let mut out = Vec::new();
        perfetto(&trace, &mut out).unwrap();
        let doc: Value = serde_json::from_slice(&out).unwrap();
        let halted: Vec<&Value> = doc["traceEvents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["ph"] == "X" && e["name"] == "halted")
            .collect();
        assert_eq!(
            halted.len(),
            1,
            "the halt still open at the end (the last timestamp) is not drawn"
        );
        assert_eq!(halted[0]["ts"], 0.0);
        assert_eq!(halted[0]["dur"], 3.0);
        assert_eq!(halted[0]["args"]["began_before_trace"], 1);
    }

    #[test]
    fn a_vcpus_state_at_recording_start_is_its_first_slice() {
        use hv_link::trace::STATE_AT_START;
        let trace = Trace::new(
            header(),
            vec![
                rec(1000, 0, 0, Marker, 1, 0),
                // Halted throughout: drawn to the last timestamp.
                rec(1200, 0, 0, StateChange, 2, STATE_AT_START),
                rec(1200, 1, 1, StateChange, 4, STATE_AT_START),
                // A wake first, but the state at start (outside the window) decides.
                rec(1200, 1, 0, StateChange, 1, STATE_AT_START),
                rec(1300, 1, 0, Hypercall, 6, 0),
                rec(2000, 1, 0, VmExit, 5, 0),
                rec(3000, 1, 1, ScheduleIn, 0, 0),
                rec(3500, 1, 1, StateChange, 2, 0),
            ],
        );
        let first = first_records(&trace.records);
        assert_eq!(
            first.iter().map(|r| r.timestamp).collect::<Vec<_>>(),
            [1000, 1200, 1200, 1200, 1300, 2000],
            "each vCPU's records up to the one that tells its state"
        );
        assert_eq!(
            initial_slices(&first),
            [((0, 0), HALTED), ((1, 1), OUT_OF_WINDOW), ((1, 0), GUEST)]
        );
        let mut out = Vec::new();
        perfetto(&trace, &mut out).unwrap();
        let doc: Value = serde_json::from_slice(&out).unwrap();
        let events = doc["traceEvents"].as_array().unwrap();
        let slice = |name: &str| {
            events
                .iter()
                .find(|e| e["ph"] == "X" && e["name"] == name)
                .unwrap_or_else(|| panic!("a {name} slice"))
        };
        let out_of_window = slice(OUT_OF_WINDOW);
        assert_eq!(
            (out_of_window["ts"].clone(), out_of_window["dur"].clone()),
            (0.0.into(), 2.0.into())
        );
        assert_eq!(out_of_window["args"]["began_before_trace"], 1);
        assert_eq!(slice(GUEST)["dur"], 1.0);
        let halted = slice(HALTED);
        assert_eq!(
            (halted["ts"].as_f64(), halted["dur"].as_f64()),
            (Some(0.0), Some(2.5))
        );
        assert_eq!(halted["args"]["still_open"], 1);
        assert!(
            events
                .iter()
                .any(|e| e["ph"] == "i" && e["name"] == "state at start out_of_window")
        );
    }

    #[test]
    fn numbers_are_formatted_as_fmt_would() {
        for v in [0, 1, 9, 10, 255, 1000, 123_456_789, u64::MAX] {
            let mut buf = Vec::new();
            put_u64(&mut buf, v);
            assert_eq!(buf, v.to_string().as_bytes());
            buf.clear();
            put_hex(&mut buf, v);
            assert_eq!(buf, format!("{v:#x}").as_bytes());
            buf.clear();
            put_us(&mut buf, v);
            assert_eq!(buf, format!("{}.{:03}", v / 1000, v % 1000).as_bytes());
        }
        for v in [0, -1, 42, i64::MIN, i64::MAX] {
            let mut buf = Vec::new();
            put_i64(&mut buf, v);
            assert_eq!(buf, v.to_string().as_bytes());
        }
        let mut buf = Vec::new();
        put_str(&mut buf, "a \"b\"\n");
        assert_eq!(buf, br#""a \"b\"\n""#);
    }

    #[test]
    fn csv_has_a_line_per_record_with_names() {
        let mut out = Vec::new();
        csv(&sample(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 11);
        assert_eq!(lines[0], "time_ns,partition,vcpu,kind,a,b,detail");
        assert_eq!(lines[2], "2000,a,0,VmExit,6,208,mmio");
        assert_eq!(lines[7], "2500,a,0,Hypercall,21,1,HV_DM_REPLY_WAIT");
    }
}
