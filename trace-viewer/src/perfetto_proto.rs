//! Perfetto's native protobuf trace format (`.perfetto-trace`), written as the records are read.
//!
//! The file is a `perfetto.protos.Trace`: a sequence of `TracePacket`s, each written as soon as
//! its record is read. A partition is a process track and each vCPU a thread track under it
//! (`TrackDescriptor`s first); slices (guest, halted, stopped in the debugger, outside the
//! schedule window, blocked on a device) are `TrackEvent` begin/end pairs on the vCPU's track,
//! everything else an instant; each device-model request is a flow (`flow_ids`) from the
//! client's blocked slice through the model's take and answer to the client's reply, and each IPC
//! message a flow from the sender's `IPC send` to the receiver's `IPC receive`. Event
//! names, categories and argument names are interned on the one packet sequence.
//!
//! Slices on a track must nest: when a slice ends while a later one is still open (say a debugger
//! stop began inside a device wait and outlasts it), the later one is ended and begun again at
//! that instant. A slice still open at the end of the trace stays open (Perfetto shows it as not
//! ended). After `Lost` records everything open on that vCPU is ended at the loss.
//!
//! The messages below are the subset of `perfetto/trace/perfetto_trace.proto` this writer uses,
//! declared with prost's derive (same field numbers and types), so no protoc is needed.

use std::io::{self, Write};

use hv_link::trace::{RecordKind, TraceHeader, TraceRecord};
use prost::Message;

use crate::export::{
    Arg, Args, BEGAN_BEFORE_TRACE, Effect, FastMap, FlowPhase, IpcFlows, Name, Suffix, describe,
    effect, flow_of, initial_slices, is_instant,
};

/// `perfetto.protos.Trace`.
#[derive(Clone, PartialEq, Message)]
pub struct Trace {
    /// The packets.
    #[prost(message, repeated, tag = "1")]
    pub packet: Vec<TracePacket>,
}

/// `perfetto.protos.TracePacket` (the fields used here).
#[derive(Clone, PartialEq, Message)]
pub struct TracePacket {
    /// Timestamp in ns (default clock).
    #[prost(uint64, optional, tag = "8")]
    pub timestamp: Option<u64>,
    /// The packet sequence.
    #[prost(uint32, optional, tag = "10")]
    pub trusted_packet_sequence_id: Option<u32>,
    /// A track event.
    #[prost(message, optional, tag = "11")]
    pub track_event: Option<TrackEvent>,
    /// Names interned from this packet on.
    #[prost(message, optional, tag = "12")]
    pub interned_data: Option<InternedData>,
    /// `SEQ_INCREMENTAL_STATE_CLEARED` (1), `SEQ_NEEDS_INCREMENTAL_STATE` (2).
    #[prost(uint32, optional, tag = "13")]
    pub sequence_flags: Option<u32>,
    /// A track.
    #[prost(message, optional, tag = "60")]
    pub track_descriptor: Option<TrackDescriptor>,
}

/// `SEQ_INCREMENTAL_STATE_CLEARED`.
pub const SEQ_INCREMENTAL_STATE_CLEARED: u32 = 1;
/// `SEQ_NEEDS_INCREMENTAL_STATE`.
pub const SEQ_NEEDS_INCREMENTAL_STATE: u32 = 2;
/// The one packet sequence of an export.
pub const SEQUENCE_ID: u32 = 1;

/// `perfetto.protos.TrackDescriptor`.
#[derive(Clone, PartialEq, Message)]
pub struct TrackDescriptor {
    /// Track id.
    #[prost(uint64, optional, tag = "1")]
    pub uuid: Option<u64>,
    /// Name.
    #[prost(string, optional, tag = "2")]
    pub name: Option<String>,
    /// The process this track is.
    #[prost(message, optional, tag = "3")]
    pub process: Option<ProcessDescriptor>,
    /// The thread this track is.
    #[prost(message, optional, tag = "4")]
    pub thread: Option<ThreadDescriptor>,
    /// The enclosing track.
    #[prost(uint64, optional, tag = "5")]
    pub parent_uuid: Option<u64>,
}

/// `perfetto.protos.ProcessDescriptor`.
#[derive(Clone, PartialEq, Message)]
pub struct ProcessDescriptor {
    /// Process id.
    #[prost(int32, optional, tag = "1")]
    pub pid: Option<i32>,
    /// Name.
    #[prost(string, optional, tag = "6")]
    pub process_name: Option<String>,
}

/// `perfetto.protos.ThreadDescriptor`.
#[derive(Clone, PartialEq, Message)]
pub struct ThreadDescriptor {
    /// Process id.
    #[prost(int32, optional, tag = "1")]
    pub pid: Option<i32>,
    /// Thread id.
    #[prost(int32, optional, tag = "2")]
    pub tid: Option<i32>,
    /// Name.
    #[prost(string, optional, tag = "5")]
    pub thread_name: Option<String>,
}

/// `perfetto.protos.TrackEvent` (the fields used here).
#[derive(Clone, PartialEq, Message)]
pub struct TrackEvent {
    /// Interned categories.
    #[prost(uint64, repeated, packed = "false", tag = "3")]
    pub category_iids: Vec<u64>,
    /// Arguments.
    #[prost(message, repeated, tag = "4")]
    pub debug_annotations: Vec<DebugAnnotation>,
    /// `TYPE_SLICE_BEGIN` (1), `TYPE_SLICE_END` (2), `TYPE_INSTANT` (3).
    #[prost(int32, optional, tag = "9")]
    pub r#type: Option<i32>,
    /// Interned name.
    #[prost(uint64, optional, tag = "10")]
    pub name_iid: Option<u64>,
    /// The track.
    #[prost(uint64, optional, tag = "11")]
    pub track_uuid: Option<u64>,
    /// Name (when not interned).
    #[prost(string, optional, tag = "23")]
    pub name: Option<String>,
    /// Flows this event is part of.
    #[prost(fixed64, repeated, packed = "false", tag = "47")]
    pub flow_ids: Vec<u64>,
    /// Flows this event ends.
    #[prost(fixed64, repeated, packed = "false", tag = "48")]
    pub terminating_flow_ids: Vec<u64>,
}

/// `TrackEvent.Type.TYPE_SLICE_BEGIN`.
pub const TYPE_SLICE_BEGIN: i32 = 1;
/// `TrackEvent.Type.TYPE_SLICE_END`.
pub const TYPE_SLICE_END: i32 = 2;
/// `TrackEvent.Type.TYPE_INSTANT`.
pub const TYPE_INSTANT: i32 = 3;

/// `perfetto.protos.DebugAnnotation` (the fields used here).
#[derive(Clone, PartialEq, Message)]
pub struct DebugAnnotation {
    /// Interned name.
    #[prost(uint64, optional, tag = "1")]
    pub name_iid: Option<u64>,
    /// An unsigned value.
    #[prost(uint64, optional, tag = "3")]
    pub uint_value: Option<u64>,
    /// A signed value.
    #[prost(int64, optional, tag = "4")]
    pub int_value: Option<i64>,
    /// A string value.
    #[prost(string, optional, tag = "6")]
    pub string_value: Option<String>,
    /// A value shown in hex.
    #[prost(uint64, optional, tag = "7")]
    pub pointer_value: Option<u64>,
}

/// `perfetto.protos.InternedData` (the fields used here).
#[derive(Clone, PartialEq, Message)]
pub struct InternedData {
    /// Categories.
    #[prost(message, repeated, tag = "1")]
    pub event_categories: Vec<InternedString>,
    /// Event names.
    #[prost(message, repeated, tag = "2")]
    pub event_names: Vec<InternedString>,
    /// Argument names.
    #[prost(message, repeated, tag = "3")]
    pub debug_annotation_names: Vec<InternedString>,
}

/// `EventCategory`, `EventName` and `DebugAnnotationName`: an id and its string.
#[derive(Clone, PartialEq, Message)]
pub struct InternedString {
    /// Id on the sequence.
    #[prost(uint64, optional, tag = "1")]
    pub iid: Option<u64>,
    /// The string.
    #[prost(string, optional, tag = "2")]
    pub name: Option<String>,
}

/// Most event names interned (beyond, new names are written in full; memory stays bounded).
const MAX_INTERNED_NAMES: usize = 16 * 1024;

/// The track of a partition (process).
pub fn process_uuid(partition: u32) -> u64 {
    (u64::from(partition) + 1) << 32
}

/// The track of a vCPU (thread).
pub fn vcpu_uuid(partition: u32, vcpu: u16) -> u64 {
    process_uuid(partition) | (u64::from(vcpu) + 1)
}

/// The flow id of device-model request `id` (even ids: device requests).
pub fn device_flow_id(id: u64) -> u64 {
    id << 1
}

/// A slice open on a track: its name and its begin arguments.
type Open = (&'static str, Args);

// The protobuf wire format's three encodings used here: varints, 64-bit little-endian words and
// length-delimited bytes, each after a key (field number << 3 | wire type). Written by hand:
// prost's `encode_varint` (generic over `BufMut`) was a fifth of the export's time.
const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LENGTH_DELIMITED: u64 = 2;

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push(v as u8 | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn varint_field(buf: &mut Vec<u8>, tag: u32, v: u64) {
    put_varint(buf, u64::from(tag) << 3 | VARINT);
    put_varint(buf, v);
}

fn fixed64_field(buf: &mut Vec<u8>, tag: u32, v: u64) {
    put_varint(buf, u64::from(tag) << 3 | FIXED64);
    buf.extend_from_slice(&v.to_le_bytes());
}

fn bytes_field(buf: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    put_varint(buf, u64::from(tag) << 3 | LENGTH_DELIMITED);
    put_varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

/// A `&'static str` as a map key by address: no hashing of its bytes on every event (the same
/// text at two addresses is interned twice, which is harmless).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct StrKey(usize, usize);

impl StrKey {
    fn of(s: &'static str) -> StrKey {
        StrKey(s.as_ptr() as usize, s.len())
    }
}

/// An `InternedString` entry (`iid` = 1, `name` = 2) as field `tag` of `InternedData`.
fn interned_field(buf: &mut Vec<u8>, scratch: &mut Vec<u8>, tag: u32, iid: u64, name: &str) {
    scratch.clear();
    varint_field(scratch, 1, iid);
    bytes_field(scratch, 2, name.as_bytes());
    bytes_field(buf, tag, scratch);
}

/// Where an event's name comes from.
enum EventName {
    /// None (slice ends).
    None,
    /// Interned under this key (or written in full once the table is full).
    Name(Name),
    /// Always interned (a slice name).
    Static(&'static str),
}

/// The writer's state. Track events are encoded by hand with prost's encoding primitives into
/// reused buffers (no allocation per event); the rare descriptor packets go through the
/// derived messages above.
struct Writer<'w, W: Write> {
    out: &'w mut W,
    names: FastMap<(StrKey, Suffix), u64>,
    static_names: FastMap<StrKey, u64>,
    categories: FastMap<StrKey, u64>,
    arg_names: FastMap<StrKey, u64>,
    next_iid: u64,
    /// Open slices per vCPU, outermost first; a vCPU is here once its track is described.
    tracks: FastMap<(u32, u16), Vec<Open>>,
    processes: FastMap<u32, ()>,
    /// Flows begun and not ended (requests in flight): only those get an end, so that a reply
    /// to a request made before the trace began ends nothing.
    open_flows: FastMap<u64, ()>,
    /// IPC sends waiting for their receives (flows from sender to receiver).
    ipc: IpcFlows,
    first: bool,
    /// Names, categories and argument names new in the packet being made.
    new_names: Vec<(u64, String)>,
    new_static_names: Vec<(u64, &'static str)>,
    new_categories: Vec<(u64, &'static str)>,
    new_arg_names: Vec<(u64, &'static str)>,
    packet: Vec<u8>,
    event: Vec<u8>,
    scratch: Vec<u8>,
    interned: Vec<u8>,
}

/// Writes `records` (in time order) as a Perfetto protobuf trace. `start` is the first
/// timestamp and `first` each vCPU's leading records ([`crate::export::first_records`]): a vCPU
/// whose state at the recording's start is a slice, or whose first slice record ends one, was in
/// that slice from `start` (argument `began_before_trace`).
pub fn write(
    header: &TraceHeader,
    start: u64,
    first: &[TraceRecord],
    records: impl IntoIterator<Item = TraceRecord>,
    out: &mut impl Write,
) -> io::Result<()> {
    let mut w = Writer {
        out,
        names: FastMap::default(),
        static_names: FastMap::default(),
        categories: FastMap::default(),
        arg_names: FastMap::default(),
        next_iid: 1,
        tracks: FastMap::default(),
        processes: FastMap::default(),
        open_flows: FastMap::default(),
        ipc: IpcFlows::new(header),
        first: true,
        new_names: Vec::new(),
        new_static_names: Vec::new(),
        new_categories: Vec::new(),
        new_arg_names: Vec::new(),
        packet: Vec::with_capacity(256),
        event: Vec::with_capacity(256),
        scratch: Vec::with_capacity(64),
        interned: Vec::with_capacity(256),
    };
    for p in &header.partitions {
        w.process_track(p.id, &p.name)?;
        for v in 0..p.vcpus {
            w.vcpu_track(p.id, v as u16)?;
        }
    }
    for (key, name) in initial_slices(first) {
        w.vcpu_track(key.0, key.1)?;
        w.begin(start, key, name, Args::of(&[BEGAN_BEFORE_TRACE]), None)?;
    }
    for r in records {
        w.record(&r)?;
    }
    w.out.flush()
}

impl<W: Write> Writer<'_, W> {
    /// Writes `packet` (already encoded) as one `Trace.packet` field.
    fn emit(&mut self) -> io::Result<()> {
        self.scratch.clear();
        // Field 1 of `Trace`, length-delimited: the file is the `Trace` message, streamed.
        self.scratch.push(0x0a);
        put_varint(&mut self.scratch, self.packet.len() as u64);
        self.out.write_all(&self.scratch)?;
        self.out.write_all(&self.packet)
    }

    fn descriptor(&mut self, track: TrackDescriptor) -> io::Result<()> {
        let packet = TracePacket {
            trusted_packet_sequence_id: Some(SEQUENCE_ID),
            sequence_flags: std::mem::take(&mut self.first)
                .then_some(SEQ_INCREMENTAL_STATE_CLEARED),
            track_descriptor: Some(track),
            ..TracePacket::default()
        };
        self.packet.clear();
        packet.encode(&mut self.packet).map_err(io::Error::other)?;
        self.emit()
    }

    fn process_track(&mut self, partition: u32, name: &str) -> io::Result<()> {
        if self.processes.insert(partition, ()).is_some() {
            return Ok(());
        }
        self.descriptor(TrackDescriptor {
            uuid: Some(process_uuid(partition)),
            name: Some(name.to_owned()),
            process: Some(ProcessDescriptor {
                pid: Some(partition as i32 + 1),
                process_name: Some(name.to_owned()),
            }),
            ..TrackDescriptor::default()
        })
    }

    fn vcpu_track(&mut self, partition: u32, vcpu: u16) -> io::Result<()> {
        if self.tracks.contains_key(&(partition, vcpu)) {
            return Ok(());
        }
        self.tracks.insert((partition, vcpu), Vec::new());
        if !self.processes.contains_key(&partition) {
            self.process_track(partition, &format!("partition {partition}"))?;
        }
        let name = format!("vCPU {vcpu}");
        self.descriptor(TrackDescriptor {
            uuid: Some(vcpu_uuid(partition, vcpu)),
            name: Some(name.clone()),
            thread: Some(ThreadDescriptor {
                pid: Some(partition as i32 + 1),
                // Thread ids are global in Perfetto: one per (partition, vCPU).
                tid: Some(((partition as i32 + 1) << 16) | i32::from(vcpu)),
                thread_name: Some(name),
            }),
            parent_uuid: Some(process_uuid(partition)),
            ..TrackDescriptor::default()
        })
    }

    fn intern_static(
        map: &mut FastMap<StrKey, u64>,
        next: &mut u64,
        s: &'static str,
        new: &mut Vec<(u64, &'static str)>,
    ) -> u64 {
        if let Some(&iid) = map.get(&StrKey::of(s)) {
            return iid;
        }
        *map.entry(StrKey::of(s)).or_insert_with(|| {
            let iid = *next;
            *next += 1;
            new.push((iid, s));
            iid
        })
    }

    /// Writes one track event at `ts` on (partition, vCPU).
    #[allow(clippy::too_many_arguments)]
    fn event(
        &mut self,
        ts: u64,
        key: (u32, u16),
        ty: i32,
        name: EventName,
        category: Option<&'static str>,
        args: &[(&'static str, Arg)],
        flows: (Option<u64>, Option<u64>),
    ) -> io::Result<()> {
        self.event.clear();
        if let Some(c) = category {
            let iid = Self::intern_static(
                &mut self.categories,
                &mut self.next_iid,
                c,
                &mut self.new_categories,
            );
            varint_field(&mut self.event, 3, iid);
        }
        for &(n, value) in args {
            let iid = Self::intern_static(
                &mut self.arg_names,
                &mut self.next_iid,
                n,
                &mut self.new_arg_names,
            );
            self.scratch.clear();
            varint_field(&mut self.scratch, 1, iid);
            match value {
                Arg::U(v) => varint_field(&mut self.scratch, 3, v),
                Arg::I(v) => varint_field(&mut self.scratch, 4, v as u64),
                Arg::Hex(v) => varint_field(&mut self.scratch, 7, v),
                Arg::S(s) => bytes_field(&mut self.scratch, 6, s.as_bytes()),
            }
            bytes_field(&mut self.event, 4, &self.scratch);
        }
        varint_field(&mut self.event, 9, ty as u64);
        match name {
            EventName::None => {}
            EventName::Static(s) => {
                let iid = Self::intern_static(
                    &mut self.static_names,
                    &mut self.next_iid,
                    s,
                    &mut self.new_static_names,
                );
                varint_field(&mut self.event, 10, iid);
            }
            EventName::Name(n) => match self.names.get(&(StrKey::of(n.0), n.1)) {
                Some(&iid) => varint_field(&mut self.event, 10, iid),
                None if self.names.len() < MAX_INTERNED_NAMES => {
                    let iid = self.next_iid;
                    self.next_iid += 1;
                    self.names.insert((StrKey::of(n.0), n.1), iid);
                    self.new_names.push((iid, n.to_string()));
                    varint_field(&mut self.event, 10, iid);
                }
                None => bytes_field(&mut self.event, 23, n.to_string().as_bytes()),
            },
        }
        varint_field(&mut self.event, 11, vcpu_uuid(key.0, key.1));
        if let Some(id) = flows.0 {
            fixed64_field(&mut self.event, 47, id);
        }
        if let Some(id) = flows.1 {
            fixed64_field(&mut self.event, 48, id);
        }
        self.packet.clear();
        varint_field(&mut self.packet, 8, ts);
        varint_field(&mut self.packet, 10, u64::from(SEQUENCE_ID));
        bytes_field(&mut self.packet, 11, &self.event);
        if !(self.new_names.is_empty()
            && self.new_static_names.is_empty()
            && self.new_categories.is_empty()
            && self.new_arg_names.is_empty())
        {
            self.interned.clear();
            for (iid, c) in self.new_categories.drain(..) {
                interned_field(&mut self.interned, &mut self.scratch, 1, iid, c);
            }
            for (iid, n) in self.new_names.drain(..) {
                interned_field(&mut self.interned, &mut self.scratch, 2, iid, &n);
            }
            for (iid, n) in self.new_static_names.drain(..) {
                interned_field(&mut self.interned, &mut self.scratch, 2, iid, n);
            }
            for (iid, a) in self.new_arg_names.drain(..) {
                interned_field(&mut self.interned, &mut self.scratch, 3, iid, a);
            }
            bytes_field(&mut self.packet, 12, &self.interned);
        }
        let flags = if std::mem::take(&mut self.first) {
            SEQ_INCREMENTAL_STATE_CLEARED
        } else {
            SEQ_NEEDS_INCREMENTAL_STATE
        };
        varint_field(&mut self.packet, 13, u64::from(flags));
        self.emit()
    }

    fn begin(
        &mut self,
        ts: u64,
        key: (u32, u16),
        name: &'static str,
        args: Args,
        flow: Option<u64>,
    ) -> io::Result<()> {
        self.event(
            ts,
            key,
            TYPE_SLICE_BEGIN,
            EventName::Static(name),
            Some("vcpu"),
            args.as_slice(),
            (flow, None),
        )?;
        self.tracks.entry(key).or_default().push((name, args));
        Ok(())
    }

    fn end(&mut self, ts: u64, key: (u32, u16), args: &[(&'static str, Arg)]) -> io::Result<()> {
        self.event(
            ts,
            key,
            TYPE_SLICE_END,
            EventName::None,
            None,
            args,
            (None, None),
        )
    }

    /// Ends the open slice `name` on `key` (nothing when it is not open), keeping the nesting:
    /// slices opened inside it are ended first and begun again after it.
    fn close(
        &mut self,
        ts: u64,
        key: (u32, u16),
        name: &'static str,
        args: Args,
    ) -> io::Result<()> {
        let Some(stack) = self.tracks.get_mut(&key) else {
            return Ok(());
        };
        let Some(at) = stack.iter().rposition(|(n, _)| *n == name) else {
            return Ok(());
        };
        if at + 1 == stack.len() {
            stack.pop();
            return self.end(ts, key, args.as_slice());
        }
        let inner: Vec<Open> = stack.drain(at + 1..).collect();
        stack.pop();
        for _ in &inner {
            self.end(ts, key, &[])?;
        }
        self.end(ts, key, args.as_slice())?;
        for (n, a) in inner {
            self.begin(ts, key, n, a, None)?;
        }
        Ok(())
    }

    fn record(&mut self, r: &TraceRecord) -> io::Result<()> {
        let Some(kind) = r.kind() else {
            return Ok(());
        };
        let key = (r.partition, r.vcpu);
        let ts = r.timestamp;
        if !self.tracks.contains_key(&key) {
            self.vcpu_track(key.0, key.1)?;
        }
        let flow = flow_of(kind).map(|phase| (phase, device_flow_id(r.a)));
        let flow = match flow {
            Some((FlowPhase::End, id)) if self.open_flows.remove(&id).is_none() => None,
            Some((FlowPhase::Start | FlowPhase::Step, id)) => {
                self.open_flows.insert(id, ());
                flow
            }
            other => other,
        };
        match effect(kind, r) {
            Effect::Open(name, args) => {
                // The same slice again without its end (records lost unreported): end it here.
                self.close(ts, key, name, Args::NONE)?;
                let start_flow = flow.filter(|(p, _)| *p == FlowPhase::Start).map(|f| f.1);
                self.begin(ts, key, name, args, start_flow)?;
            }
            Effect::Close(name, args) => {
                if let Some((FlowPhase::End, id)) = flow {
                    let what = if kind == RecordKind::ModelBusError {
                        "bus error"
                    } else {
                        "device reply"
                    };
                    let mut extra = args;
                    extra.push_front(("request", Arg::U(r.a)));
                    self.event(
                        ts,
                        key,
                        TYPE_INSTANT,
                        EventName::Name(Name(what, Suffix::None)),
                        Some("device"),
                        extra.as_slice(),
                        (None, Some(id)),
                    )?;
                }
                self.close(ts, key, name, args)?;
            }
            Effect::Forget => {
                let open = self
                    .tracks
                    .get_mut(&key)
                    .map(std::mem::take)
                    .unwrap_or_default();
                for _ in &open {
                    self.end(ts, key, &[("cut_by_lost_records", Arg::U(r.a))])?;
                }
            }
            Effect::None => {}
        }
        if is_instant(kind) {
            let (mut name, category, mut args) = describe(kind, r);
            // Names with a request id or a count in them would intern without bound.
            if matches!(
                kind,
                RecordKind::ModelReceive | RecordKind::ModelRespond | RecordKind::Lost
            ) {
                name.1 = Suffix::None;
            }
            if matches!(kind, RecordKind::ModelReceive | RecordKind::ModelRespond) {
                args.push_front(("request", Arg::U(r.a)));
            }
            let mut flows = (
                flow.filter(|(p, _)| *p == FlowPhase::Step).map(|f| f.1),
                None,
            );
            match self.ipc.feed(r) {
                Some((FlowPhase::End, id)) => flows.1 = Some(id),
                Some((_, id)) => flows.0 = Some(id),
                None => {}
            }
            self.event(
                ts,
                key,
                TYPE_INSTANT,
                EventName::Name(name),
                Some(category),
                args.as_slice(),
                flows,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{header, rec};
    use RecordKind::*;
    use std::collections::HashMap;

    fn write_all(records: Vec<TraceRecord>, out: &mut Vec<u8>) {
        let first = crate::export::first_records(&records);
        let start = records.first().map_or(0, |r| r.timestamp);
        write(&header(), start, &first, records, out).unwrap();
    }

    #[test]
    fn a_vcpu_whose_first_record_ends_a_slice_was_in_it_from_the_start() {
        let records = vec![
            rec(100, 0, 0, VmEntry, 0, 0),
            rec(150, 1, 1, Wake, 0, 0),
            rec(200, 0, 0, VmExit, 5, 0),
        ];
        let mut out = Vec::new();
        write_all(records, &mut out);
        let packets = decode(&out);
        let ev = events(&packets);
        let short: Vec<(i32, u64, &str)> = ev.iter().map(|e| (e.0, e.1, e.2.as_str())).collect();
        assert_eq!(
            short,
            [
                (TYPE_SLICE_BEGIN, vcpu_uuid(1, 1), "halted"),
                (TYPE_SLICE_BEGIN, vcpu_uuid(0, 0), "guest"),
                (TYPE_SLICE_END, vcpu_uuid(1, 1), ""),
                (TYPE_SLICE_END, vcpu_uuid(0, 0), ""),
            ]
        );
        let begin = packets.iter().find(|p| p.track_event.is_some()).unwrap();
        assert_eq!(
            begin.timestamp,
            Some(100),
            "from the trace's first timestamp"
        );
        assert_eq!(
            begin.track_event.as_ref().unwrap().debug_annotations[0].uint_value,
            Some(1)
        );
    }

    #[test]
    fn a_vcpus_state_at_recording_start_begins_its_track() {
        use hv_link::trace::STATE_AT_START;
        let records = vec![
            rec(100, 0, 0, Marker, 1, 0),
            // vCPU 1.1 was halted; 1.0 was running and its first exit ends a guest slice.
            rec(120, 1, 1, StateChange, 2, STATE_AT_START),
            rec(120, 1, 0, StateChange, 1, STATE_AT_START),
            rec(150, 1, 0, VmExit, 5, 0),
            rec(400, 1, 1, Wake, 0, 0),
        ];
        let mut out = Vec::new();
        write_all(records, &mut out);
        let packets = decode(&out);
        let short: Vec<(i32, u64, String)> = events(&packets)
            .into_iter()
            .filter(|e| e.0 != TYPE_INSTANT)
            .map(|e| (e.0, e.1, e.2))
            .collect();
        assert_eq!(
            short,
            [
                (TYPE_SLICE_BEGIN, vcpu_uuid(1, 1), "halted".to_owned()),
                (TYPE_SLICE_BEGIN, vcpu_uuid(1, 0), "guest".to_owned()),
                (TYPE_SLICE_END, vcpu_uuid(1, 0), String::new()),
                (TYPE_SLICE_END, vcpu_uuid(1, 1), String::new()),
            ]
        );
        let begin = packets.iter().find(|p| p.track_event.is_some()).unwrap();
        assert_eq!(
            begin.timestamp,
            Some(100),
            "from the trace's first timestamp"
        );
        assert!(
            events(&packets)
                .iter()
                .any(|e| e.1 == vcpu_uuid(1, 1) && e.2 == "state at start halted")
        );
    }

    #[test]
    fn a_reply_to_a_request_before_the_trace_ends_no_flow() {
        let records = vec![
            rec(100, 1, 0, ModelRespond, 9, 1),
            rec(200, 0, 0, ModelReply, 9, 500),
        ];
        let mut out = Vec::new();
        write_all(records, &mut out);
        let ev = events(&decode(&out));
        // The model's answer starts the flow; the reply (whose request began before the
        // trace: the blocked slice is drawn from the start) ends it.
        let short: Vec<(i32, &str, usize, usize)> = ev
            .iter()
            .map(|e| (e.0, e.2.as_str(), e.3.len(), e.4.len()))
            .collect();
        assert_eq!(
            short,
            [
                (TYPE_SLICE_BEGIN, "blocked on device", 0, 0),
                (TYPE_INSTANT, "answer request", 1, 0),
                (TYPE_INSTANT, "device reply", 0, 1),
                (TYPE_SLICE_END, "", 0, 0),
            ]
        );
        let records = vec![rec(200, 0, 0, ModelReply, 9, 500)];
        let mut out = Vec::new();
        write_all(records, &mut out);
        let ev = events(&decode(&out));
        assert!(ev.iter().all(|e| e.4.is_empty()), "nothing to end: {ev:?}");
    }

    /// Decodes a file and checks every packet is on the one sequence.
    fn decode(bytes: &[u8]) -> Vec<TracePacket> {
        let trace = Trace::decode(bytes).unwrap();
        assert!(
            trace
                .packet
                .iter()
                .all(|p| p.trusted_packet_sequence_id == Some(SEQUENCE_ID))
        );
        assert_eq!(
            trace.packet[0].sequence_flags,
            Some(SEQ_INCREMENTAL_STATE_CLEARED)
        );
        trace.packet
    }

    /// An event: type, track, name, flow ids, terminating flow ids.
    type Event = (i32, u64, String, Vec<u64>, Vec<u64>);

    /// The events, names resolved through the interned data.
    fn events(packets: &[TracePacket]) -> Vec<Event> {
        let mut names: HashMap<u64, String> = HashMap::new();
        let mut out = Vec::new();
        for p in packets {
            if let Some(i) = &p.interned_data {
                for n in &i.event_names {
                    names.insert(n.iid.unwrap(), n.name.clone().unwrap());
                }
            }
            if let Some(e) = &p.track_event {
                let name = e
                    .name
                    .clone()
                    .or_else(|| e.name_iid.map(|i| names[&i].clone()))
                    .unwrap_or_default();
                out.push((
                    e.r#type.unwrap(),
                    e.track_uuid.unwrap(),
                    name,
                    e.flow_ids.clone(),
                    e.terminating_flow_ids.clone(),
                ));
            }
        }
        out
    }

    #[test]
    fn tracks_slices_instants_and_flows() {
        let records = vec![
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
        ];
        let mut out = Vec::new();
        write_all(records, &mut out);
        let packets = decode(&out);
        let tracks: Vec<&TrackDescriptor> = packets
            .iter()
            .filter_map(|p| p.track_descriptor.as_ref())
            .collect();
        assert_eq!(tracks.iter().filter(|t| t.process.is_some()).count(), 2);
        assert_eq!(tracks.iter().filter(|t| t.thread.is_some()).count(), 3);
        assert!(
            tracks
                .iter()
                .filter(|t| t.thread.is_some())
                .all(|t| t.parent_uuid.is_some())
        );
        let ev = events(&packets);
        let a0 = vcpu_uuid(0, 0);
        let short: Vec<(i32, u64, &str)> = ev.iter().map(|e| (e.0, e.1, e.2.as_str())).collect();
        assert_eq!(
            short,
            [
                (TYPE_SLICE_BEGIN, a0, "guest"),
                (TYPE_SLICE_END, a0, ""),
                (TYPE_SLICE_BEGIN, a0, "blocked on device"),
                (TYPE_INSTANT, vcpu_uuid(1, 0), "take request"),
                (TYPE_INSTANT, vcpu_uuid(1, 0), "answer request"),
                (TYPE_INSTANT, a0, "device reply"),
                (TYPE_SLICE_END, a0, ""),
                (TYPE_INSTANT, a0, "HV_DM_REPLY_WAIT"),
                (TYPE_SLICE_BEGIN, vcpu_uuid(1, 1), "halted"),
                // The loss ends the halt; the wake after it ends nothing.
                (TYPE_SLICE_END, vcpu_uuid(1, 1), ""),
                (TYPE_INSTANT, vcpu_uuid(1, 1), "lost"),
            ]
        );
        let id = device_flow_id(7);
        assert_eq!(ev[2].3, [id]);
        assert_eq!((&ev[3].3, &ev[4].3), (&vec![id], &vec![id]));
        assert_eq!(ev[5].4, [id]);
        // The exit's arguments are on the slice end.
        let exit = packets
            .iter()
            .filter_map(|p| p.track_event.as_ref())
            .nth(1)
            .unwrap();
        assert_eq!(exit.debug_annotations.len(), 2);
        assert_eq!(exit.debug_annotations[1].pointer_value, Some(0xd0));
    }

    #[test]
    fn crossing_slices_are_split_to_nest() {
        // A debugger stop inside a device wait that outlasts it.
        let records = vec![
            rec(10, 0, 0, ModelRequest, 1, 0),
            rec(20, 0, 0, DebugStop, 0, 0),
            rec(30, 0, 0, ModelReply, 1, 5),
            rec(40, 0, 0, DebugResume, 0, 0),
            rec(50, 0, 0, VmEntry, 0, 0),
        ];
        let mut out = Vec::new();
        write_all(records, &mut out);
        let ev = events(&decode(&out));
        let short: Vec<(i32, &str)> = ev.iter().map(|e| (e.0, e.2.as_str())).collect();
        assert_eq!(
            short,
            [
                (TYPE_SLICE_BEGIN, "blocked on device"),
                (TYPE_SLICE_BEGIN, "stopped in debugger"),
                (TYPE_INSTANT, "device reply"),
                (TYPE_SLICE_END, ""),
                (TYPE_SLICE_END, ""),
                (TYPE_SLICE_BEGIN, "stopped in debugger"),
                (TYPE_SLICE_END, ""),
                // Open at the end of the trace: left open.
                (TYPE_SLICE_BEGIN, "guest"),
            ]
        );
    }

    #[test]
    fn names_intern_once_and_unknown_vcpus_get_tracks() {
        let records: Vec<TraceRecord> = (0..100).map(|i| rec(i, 1, 5, Marker, 3, i)).collect();
        let mut out = Vec::new();
        write_all(records, &mut out);
        let packets = decode(&out);
        let interned: usize = packets
            .iter()
            .filter_map(|p| p.interned_data.as_ref())
            .map(|i| i.event_names.len())
            .sum();
        assert_eq!(interned, 1);
        assert!(packets.iter().any(|p| {
            p.track_descriptor
                .as_ref()
                .is_some_and(|t| t.uuid == Some(vcpu_uuid(1, 5)))
        }));
    }
}
