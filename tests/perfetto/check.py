#!/usr/bin/env python3
"""Decodes a Perfetto protobuf trace with the protos bundled in the `perfetto` Python package
(perfetto.protos.perfetto.trace.perfetto_trace_pb2, compiled from Perfetto's own
perfetto_trace.proto) and the `protobuf` package, checks it the way Perfetto's trace processor
reads it, and prints a JSON summary for tests/trace_export.rs and tests/trace.rs to compare
with the source trace.

Checked: every field is known to Perfetto's schema (no unknown fields, so field numbers and wire
types match), the sequence starts with SEQ_INCREMENTAL_STATE_CLEARED, every interned id is
defined before use, thread tracks hang under process tracks, slice begin/end pairs nest on
each track with time going forward, and every flow starts once, ends once and joins events in
time order.

Usage: check.py FILE. Exit status 2 when the packages are missing, 1 on a check that
fails (with the reason on stderr), 0 with the summary on stdout.
"""

import json
import sys
from collections import Counter, defaultdict

try:
    from google.protobuf import unknown_fields
    from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb
except ImportError as e:  # pragma: no cover - reported by the caller
    print(f"missing Python package: {e}", file=sys.stderr)
    sys.exit(2)


def fail(msg):
    print(f"check.py: {msg}", file=sys.stderr)
    sys.exit(1)


def no_unknown(msg, where):
    if len(unknown_fields.UnknownFieldSet(msg)) != 0:
        fail(f"{where}: fields unknown to Perfetto's schema: {msg}")
    for field, value in msg.ListFields():
        if field.type == field.TYPE_MESSAGE:
            values = value if field.is_repeated else [value]
            for v in values:
                no_unknown(v, f"{where}.{field.name}")


def main(path):
    trace = pb.Trace()
    with open(path, "rb") as f:
        trace.ParseFromString(f.read())
    packets = trace.packet
    if not packets:
        fail("no packets")
    if not packets[0].sequence_flags & pb.TracePacket.SEQ_INCREMENTAL_STATE_CLEARED:
        fail("the first packet does not clear the incremental state")

    names, categories, arg_names = {}, {}, {}
    processes, threads = {}, {}
    stacks = defaultdict(list)  # track -> [(name, begin ts)]
    last_ts = {}
    slices, instants, unnamed = Counter(), Counter(), 0
    depth_max = 0
    flows = {}  # id -> [ts, ...]
    flow_ended = set()
    arg_count = 0

    for i, p in enumerate(packets):
        no_unknown(p, f"packet {i}")
        if p.trusted_packet_sequence_id != 1:
            fail(f"packet {i}: sequence {p.trusted_packet_sequence_id}")
        if p.HasField("interned_data"):
            d = p.interned_data
            for table, items in ((names, d.event_names), (categories, d.event_categories),
                                 (arg_names, d.debug_annotation_names)):
                for item in items:
                    if item.iid in table:
                        fail(f"packet {i}: iid {item.iid} interned twice")
                    table[item.iid] = item.name
        if p.HasField("track_descriptor"):
            t = p.track_descriptor
            if t.HasField("process"):
                processes[t.uuid] = t.process.process_name
            elif t.HasField("thread"):
                if t.parent_uuid not in processes:
                    fail(f"thread track {t.uuid} before or without its process track")
                if t.thread.pid <= 0 or t.thread.tid <= 0:
                    fail(f"thread track {t.uuid}: pid {t.thread.pid}, tid {t.thread.tid}")
                threads[t.uuid] = (processes[t.parent_uuid], t.thread.thread_name)
            else:
                fail(f"track {t.uuid} is neither a process nor a thread")
        if not p.HasField("track_event"):
            continue
        e = p.track_event
        ts = p.timestamp
        if e.track_uuid not in threads:
            fail(f"packet {i}: event on undescribed track {e.track_uuid}")
        if ts < last_ts.get(e.track_uuid, 0):
            fail(f"packet {i}: time goes back on track {e.track_uuid}")
        last_ts[e.track_uuid] = ts
        if e.HasField("name_iid"):
            if e.name_iid not in names:
                fail(f"packet {i}: name iid {e.name_iid} not interned")
            name = names[e.name_iid]
        else:
            name = e.name
        for c in e.category_iids:
            if c not in categories:
                fail(f"packet {i}: category iid {c} not interned")
        for a in e.debug_annotations:
            if a.name_iid not in arg_names:
                fail(f"packet {i}: argument name iid {a.name_iid} not interned")
            arg_count += 1
        stack = stacks[e.track_uuid]
        if e.type == pb.TrackEvent.TYPE_SLICE_BEGIN:
            if not name:
                fail(f"packet {i}: slice without a name")
            stack.append((name, ts))
            depth_max = max(depth_max, len(stack))
        elif e.type == pb.TrackEvent.TYPE_SLICE_END:
            if not stack:
                fail(f"packet {i}: slice end with nothing open on track {e.track_uuid}")
            begun_name, begun = stack.pop()
            if ts < begun:
                fail(f"packet {i}: slice ends before it begins")
            slices[begun_name] += 1
        elif e.type == pb.TrackEvent.TYPE_INSTANT:
            if not name:
                unnamed += 1
            instants[name] += 1
        else:
            fail(f"packet {i}: event type {e.type}")
        for fid in e.flow_ids:
            if fid in flow_ended:
                fail(f"packet {i}: flow {fid} continues after its end")
            flows.setdefault(fid, []).append(ts)
        for fid in e.terminating_flow_ids:
            if fid not in flows:
                fail(f"packet {i}: flow {fid} ends without a start")
            if fid in flow_ended:
                fail(f"packet {i}: flow {fid} ends twice")
            flows[fid].append(ts)
            flow_ended.add(fid)

    for fid, times in flows.items():
        if times != sorted(times):
            fail(f"flow {fid} goes back in time")
    open_at_end = Counter(name for stack in stacks.values() for name, _ in stack)
    summary = {
        "packets": len(packets),
        "process_tracks": sorted(processes.values()),
        "thread_tracks": len(threads),
        "slices": dict(slices),
        "open_at_end": dict(open_at_end),
        "instants": dict(instants),
        "unnamed_instants": unnamed,
        "max_depth": depth_max,
        "flows": len(flows),
        "flows_ended": len(flow_ended),
        "flow_lengths": dict(Counter(len(t) for t in flows.values())),
        "args": arg_count,
    }
    json.dump(summary, sys.stdout)
    print()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(64)
    main(sys.argv[1])
