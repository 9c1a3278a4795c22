//! Perfetto's native protobuf trace format (`.perfetto-trace`), written as the records are read.
//!
//! The file is a `perfetto.protos.Trace`: a sequence of `TracePacket`s, each written as soon as
//! its record is read. A partition is a process track and each vCPU a thread track under it
//! (`TrackDescriptor`s first); slices (guest, halted, stopped in the debugger, outside the
//! schedule window, blocked on a device) are `TrackEvent` begin/end pairs on the vCPU's track,
//! everything else an instant; each device-model request is a flow (`flow_ids`) from the
//! client's blocked slice through the model's take and answer to the client's reply. Event
//! names, categories and argument names are interned on the one packet sequence.
//!
//! Slices on a track must nest: when a slice ends while a later one is still open (say a debugger
//! stop began inside a device wait and outlasts it), the later one is ended and begun again at
//! that instant. A slice still open at the end of the trace stays open (Perfetto shows it as not
//! ended). After `Lost` records everything open on that vCPU is ended at the loss.
//!
//! The messages below are the subset of `perfetto/trace/perfetto_trace.proto` this writer uses,
//! declared with prost's derive (same field numbers and types), so no protoc is needed.

use std::collections::HashMap;
use std::io::{self, Write};

use hv_link::trace::{RecordKind, TraceHeader, TraceRecord};
use prost::Message;

use crate::export::{Arg, Args, Effect, FlowPhase, describe, effect, flow_of, is_instant};

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

struct Writer<'w, W: Write> {
    out: &'w mut W,
    buf: Vec<u8>,
    names: HashMap<String, u64>,
    categories: HashMap<&'static str, u64>,
    arg_names: HashMap<&'static str, u64>,
    next_iid: u64,
    /// Open slices per vCPU, outermost first.
    open: HashMap<(u32, u16), Vec<Open>>,
    /// Tracks described so far.
    tracks: std::collections::HashSet<u64>,
    first: bool,
}

/// Writes `records` (in time order) as a Perfetto protobuf trace.
pub fn write(
    header: &TraceHeader,
    records: impl IntoIterator<Item = TraceRecord>,
    out: &mut impl Write,
) -> io::Result<()> {
    let mut w = Writer {
        out,
        buf: Vec::with_capacity(256),
        names: HashMap::new(),
        categories: HashMap::new(),
        arg_names: HashMap::new(),
        next_iid: 1,
        open: HashMap::new(),
        tracks: std::collections::HashSet::new(),
        first: true,
    };
    for p in &header.partitions {
        w.process_track(p.id, &p.name)?;
        for v in 0..p.vcpus {
            w.vcpu_track(p.id, v as u16)?;
        }
    }
    for r in records {
        w.record(&r)?;
    }
    w.out.flush()
}

impl<W: Write> Writer<'_, W> {
    fn packet(&mut self, mut packet: TracePacket) -> io::Result<()> {
        packet.trusted_packet_sequence_id = Some(SEQUENCE_ID);
        if std::mem::take(&mut self.first) {
            packet.sequence_flags = Some(SEQ_INCREMENTAL_STATE_CLEARED);
        } else if packet.track_event.is_some() {
            packet.sequence_flags = Some(SEQ_NEEDS_INCREMENTAL_STATE);
        }
        self.buf.clear();
        // Field 1 of `Trace`, length-delimited: the file is the `Trace` message, streamed.
        self.buf.push(0x0a);
        packet
            .encode_length_delimited(&mut self.buf)
            .map_err(io::Error::other)?;
        self.out.write_all(&self.buf)
    }

    fn process_track(&mut self, partition: u32, name: &str) -> io::Result<()> {
        let uuid = process_uuid(partition);
        if !self.tracks.insert(uuid) {
            return Ok(());
        }
        self.packet(TracePacket {
            track_descriptor: Some(TrackDescriptor {
                uuid: Some(uuid),
                name: Some(name.to_owned()),
                process: Some(ProcessDescriptor {
                    pid: Some(partition as i32 + 1),
                    process_name: Some(name.to_owned()),
                }),
                ..TrackDescriptor::default()
            }),
            ..TracePacket::default()
        })
    }

    fn vcpu_track(&mut self, partition: u32, vcpu: u16) -> io::Result<()> {
        let uuid = vcpu_uuid(partition, vcpu);
        if !self.tracks.insert(uuid) {
            return Ok(());
        }
        if !self.tracks.contains(&process_uuid(partition)) {
            self.process_track(partition, &format!("partition {partition}"))?;
        }
        let name = format!("vCPU {vcpu}");
        self.packet(TracePacket {
            track_descriptor: Some(TrackDescriptor {
                uuid: Some(uuid),
                name: Some(name.clone()),
                thread: Some(ThreadDescriptor {
                    pid: Some(partition as i32 + 1),
                    // Thread ids are global in Perfetto: one per (partition, vCPU).
                    tid: Some(((partition as i32 + 1) << 16) | i32::from(vcpu)),
                    thread_name: Some(name),
                }),
                parent_uuid: Some(process_uuid(partition)),
                ..TrackDescriptor::default()
            }),
            ..TracePacket::default()
        })
    }

    fn iid_of(
        map: &mut HashMap<&'static str, u64>,
        next: &mut u64,
        s: &'static str,
        new: &mut Vec<InternedString>,
    ) -> u64 {
        *map.entry(s).or_insert_with(|| {
            let iid = *next;
            *next += 1;
            new.push(InternedString {
                iid: Some(iid),
                name: Some(s.to_owned()),
            });
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
        name: Option<&str>,
        category: Option<&'static str>,
        args: &[(&'static str, Arg)],
        flows: (Option<u64>, Option<u64>),
    ) -> io::Result<()> {
        let mut interned = InternedData::default();
        let mut event = TrackEvent {
            r#type: Some(ty),
            track_uuid: Some(vcpu_uuid(key.0, key.1)),
            ..TrackEvent::default()
        };
        if let Some(name) = name {
            if let Some(&iid) = self.names.get(name) {
                event.name_iid = Some(iid);
            } else if self.names.len() < MAX_INTERNED_NAMES {
                let iid = self.next_iid;
                self.next_iid += 1;
                self.names.insert(name.to_owned(), iid);
                interned.event_names.push(InternedString {
                    iid: Some(iid),
                    name: Some(name.to_owned()),
                });
                event.name_iid = Some(iid);
            } else {
                event.name = Some(name.to_owned());
            }
        }
        if let Some(c) = category {
            event.category_iids.push(Self::iid_of(
                &mut self.categories,
                &mut self.next_iid,
                c,
                &mut interned.event_categories,
            ));
        }
        for &(n, value) in args {
            let name_iid = Self::iid_of(
                &mut self.arg_names,
                &mut self.next_iid,
                n,
                &mut interned.debug_annotation_names,
            );
            let mut a = DebugAnnotation {
                name_iid: Some(name_iid),
                ..DebugAnnotation::default()
            };
            match value {
                Arg::U(v) => a.uint_value = Some(v),
                Arg::I(v) => a.int_value = Some(v),
                Arg::Hex(v) => a.pointer_value = Some(v),
                Arg::S(s) => a.string_value = Some(s.to_owned()),
            }
            event.debug_annotations.push(a);
        }
        event.flow_ids.extend(flows.0);
        event.terminating_flow_ids.extend(flows.1);
        let has_interned = !(interned.event_names.is_empty()
            && interned.event_categories.is_empty()
            && interned.debug_annotation_names.is_empty());
        self.packet(TracePacket {
            timestamp: Some(ts),
            track_event: Some(event),
            interned_data: has_interned.then_some(interned),
            ..TracePacket::default()
        })
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
            Some(name),
            Some("vcpu"),
            &args,
            (flow, None),
        )?;
        self.open.entry(key).or_default().push((name, args));
        Ok(())
    }

    fn end(&mut self, ts: u64, key: (u32, u16), args: &[(&'static str, Arg)]) -> io::Result<()> {
        self.event(ts, key, TYPE_SLICE_END, None, None, args, (None, None))
    }

    /// Ends the open slice `name` on `key` (nothing when it is not open), keeping the nesting:
    /// slices opened inside it are ended first and begun again after it.
    fn close(
        &mut self,
        ts: u64,
        key: (u32, u16),
        name: &'static str,
        args: &[(&'static str, Arg)],
    ) -> io::Result<()> {
        let Some(stack) = self.open.get_mut(&key) else {
            return Ok(());
        };
        let Some(at) = stack.iter().rposition(|(n, _)| *n == name) else {
            return Ok(());
        };
        let inner: Vec<Open> = stack.drain(at + 1..).collect();
        stack.pop();
        for _ in &inner {
            self.end(ts, key, &[])?;
        }
        self.end(ts, key, args)?;
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
        if !self.tracks.contains(&vcpu_uuid(key.0, key.1)) {
            self.vcpu_track(key.0, key.1)?;
        }
        let flow = flow_of(kind).map(|phase| (phase, device_flow_id(r.a)));
        match effect(kind, r) {
            Effect::Open(name, args) => {
                // The same slice again without its end (records lost unreported): end it here.
                self.close(ts, key, name, &[])?;
                let start_flow = flow.filter(|(p, _)| *p == FlowPhase::Start).map(|f| f.1);
                self.begin(ts, key, name, args, start_flow)?;
            }
            Effect::Close(name, args) => {
                if let Some((FlowPhase::End, id)) = flow {
                    let (what, extra) = if kind == RecordKind::ModelBusError {
                        ("bus error", args.clone())
                    } else {
                        ("device reply", args.clone())
                    };
                    let mut extra = extra;
                    extra.insert(0, ("request", Arg::U(r.a)));
                    self.event(
                        ts,
                        key,
                        TYPE_INSTANT,
                        Some(what),
                        Some("device"),
                        &extra,
                        (None, Some(id)),
                    )?;
                }
                self.close(ts, key, name, &args)?;
            }
            Effect::Forget => {
                let open = self.open.remove(&key).unwrap_or_default();
                for _ in &open {
                    self.end(ts, key, &[("cut_by_lost_records", Arg::U(r.a))])?;
                }
            }
            Effect::None => {}
        }
        if is_instant(kind) {
            let (name, category, mut args) = describe(kind, r);
            // Names with a request id or a count in them would intern without bound.
            let name = match kind {
                RecordKind::ModelReceive => "take request".to_owned(),
                RecordKind::ModelRespond => "answer request".to_owned(),
                RecordKind::Lost => "lost".to_owned(),
                _ => name,
            };
            if matches!(kind, RecordKind::ModelReceive | RecordKind::ModelRespond) {
                args.insert(0, ("request", Arg::U(r.a)));
            }
            let step = flow.filter(|(p, _)| *p == FlowPhase::Step).map(|f| f.1);
            self.event(
                ts,
                key,
                TYPE_INSTANT,
                Some(&name),
                Some(category),
                &args,
                (step, None),
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
        write(&header(), records, &mut out).unwrap();
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
        write(&header(), records, &mut out).unwrap();
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
        write(&header(), records, &mut out).unwrap();
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
