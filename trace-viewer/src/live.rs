//! A trace that grows while it is viewed (`hv trace view --live`): record batches from a running
//! system's `trace` channel become the same items as in an [`crate::index::Index`], held in
//! memory per track (the most recent [`LiveTrace::new`]'s `cap` items of each track), and the
//! web timeline asks the same questions of it ([`Store`]).

use std::collections::{HashMap, VecDeque};

use hv_link::trace::{IrqLatencies, RecordKind, TraceHeader, TraceRecord};
use serde_json::{Value, json};

use crate::index::{IndexError, IrqHistogram, Item, TrackBuild};
use crate::query::{QueryError, Store, scan_columns};

/// A live trace in memory.
pub struct LiveTrace {
    header: TraceHeader,
    tracks: Vec<TrackBuild>,
    labels: Vec<(u32, u16, String)>,
    held: Vec<VecDeque<Item>>,
    dropped: Vec<u64>,
    track_of: HashMap<(u32, u16), usize>,
    origin: Option<u64>,
    end: u64,
    records: u64,
    lost: u64,
    late: u64,
    flows: u64,
    seq: u64,
    irq: IrqLatencies,
    hist: HashMap<u32, IrqHistogram>,
    cap: usize,
}

impl std::fmt::Debug for LiveTrace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveTrace")
            .field("system", &self.header.system)
            .field("records", &self.records)
            .finish()
    }
}

impl LiveTrace {
    /// An empty live trace of the system `header` describes, holding at most `cap` items per
    /// track (older ones are forgotten).
    pub fn new(header: TraceHeader, cap: usize) -> LiveTrace {
        let mut live = LiveTrace {
            header,
            tracks: Vec::new(),
            labels: Vec::new(),
            held: Vec::new(),
            dropped: Vec::new(),
            track_of: HashMap::new(),
            origin: None,
            end: 0,
            records: 0,
            lost: 0,
            late: 0,
            flows: 0,
            seq: 0,
            irq: IrqLatencies::default(),
            hist: HashMap::new(),
            cap: cap.max(1),
        };
        let vcpus: Vec<(u32, u32)> = live
            .header
            .partitions
            .iter()
            .map(|p| (p.id, p.vcpus))
            .collect();
        for (id, n) in vcpus {
            for v in 0..n.min(u32::from(u16::MAX)) as u16 {
                live.track(id, v);
            }
        }
        live
    }

    /// The track of (partition, vCPU), made when first seen; `None` for a partition the header
    /// does not list.
    fn track(&mut self, partition: u32, vcpu: u16) -> Option<usize> {
        if let Some(t) = self.track_of.get(&(partition, vcpu)) {
            return Some(*t);
        }
        let name = self
            .header
            .partitions
            .iter()
            .find(|p| p.id == partition)?
            .name
            .clone();
        let label = format!("{name} vCPU {vcpu}");
        self.tracks
            .push(TrackBuild::in_memory(partition, vcpu, label.clone()));
        self.labels.push((partition, vcpu, label));
        self.held.push(VecDeque::new());
        self.dropped.push(0);
        self.track_of
            .insert((partition, vcpu), self.tracks.len() - 1);
        Some(self.tracks.len() - 1)
    }

    /// Takes one batch as it came from the link. Records of a partition the header does not
    /// list, and records older than their vCPU's last one, are counted as late and dropped.
    pub fn push(&mut self, batch: &[TraceRecord]) {
        let mut batch = batch.to_vec();
        // One vCPU's part of a batch is in order but for a Lost record placed first.
        batch.sort_by_key(|r| r.timestamp);
        for r in &batch {
            match r.kind() {
                Some(RecordKind::Lost) => self.lost += r.a,
                Some(RecordKind::ModelRequest) => {
                    self.flows += 1;
                    self.records += 1;
                }
                _ => self.records += 1,
            }
            let Some(t) = self.track(r.partition, r.vcpu) else {
                self.late += 1;
                continue;
            };
            self.seq += 1;
            if self.tracks[t].feed(r, self.seq, &mut self.irq, &mut self.hist) {
                self.origin = Some(self.origin.map_or(r.timestamp, |o| o.min(r.timestamp)));
            } else {
                self.late += 1;
            }
            let emitted = std::mem::take(&mut self.tracks[t].emitted);
            for item in emitted {
                self.end = self.end.max(item.end);
                self.held[t].push_back(item);
            }
            while self.held[t].len() > self.cap {
                self.held[t].pop_front();
                self.dropped[t] += 1;
            }
        }
    }

    /// What `/api/meta` answers for it.
    pub fn meta(&self) -> Value {
        let origin = self.origin.unwrap_or(0);
        json!({
            "system": self.header.system,
            "live": true,
            "duration_us": self.end.saturating_sub(origin) as f64 / 1e3,
            "records": self.records,
            "lost": self.lost,
            "late": self.late,
            "items": self.held.iter().zip(&self.dropped).map(|(h, d)| h.len() as u64 + d).sum::<u64>(),
            "flows": self.flows,
            "tracks": self.labels.iter().zip(&self.held).map(|((p, v, label), h)| json!({
                "label": label, "partition": p, "vcpu": v, "items": h.len(),
            })).collect::<Vec<_>>(),
            "partitions": self.header.partitions.iter().map(|p| json!({
                "id": p.id, "name": p.name, "image": p.image,
            })).collect::<Vec<_>>(),
            "tsc_khz": self.header.clock.tsc_khz,
            "epoch_unix_ns": self.header.clock.epoch_unix_ns,
            "start_ns": origin,
        })
    }

    /// Interrupt latencies per partition so far.
    pub fn irq(&self) -> Vec<IrqHistogram> {
        let mut out: Vec<IrqHistogram> = self
            .hist
            .iter()
            .map(|(partition, h)| {
                let mut h = h.clone();
                h.partition = *partition;
                h.name = self
                    .header
                    .partitions
                    .iter()
                    .find(|p| p.id == *partition)
                    .map(|p| p.name.clone())
                    .unwrap_or_default();
                h
            })
            .collect();
        out.sort_by_key(|h| h.partition);
        out
    }

    /// The system's header.
    pub fn header(&self) -> &TraceHeader {
        &self.header
    }
}

impl Store for LiveTrace {
    fn origin(&self) -> u64 {
        self.origin.unwrap_or(0)
    }
    fn track_count(&self) -> usize {
        self.held.len()
    }
    fn first_item(&self, track: usize) -> u64 {
        self.dropped[track]
    }
    fn end_item(&self, track: usize) -> u64 {
        self.dropped[track] + self.held[track].len() as u64
    }
    fn items(&self, track: usize, range: std::ops::Range<u64>) -> Result<Vec<Item>, IndexError> {
        let first = self.dropped[track];
        let len = self.held[track].len() as u64;
        let lo = range.start.saturating_sub(first).min(len) as usize;
        let hi = range.end.saturating_sub(first).min(len) as usize;
        Ok(self.held[track].range(lo..hi.max(lo)).copied().collect())
    }
    fn first_starting_at(&self, track: usize, t: u64) -> Result<u64, IndexError> {
        Ok(self.dropped[track] + self.held[track].partition_point(|i| i.start < t) as u64)
    }
    fn first_ending_at(&self, track: usize, t: u64) -> Result<u64, IndexError> {
        Ok(self.dropped[track] + self.held[track].partition_point(|i| i.max_end < t) as u64)
    }
    fn columns(
        &self,
        track: usize,
        from: u64,
        to: u64,
        px: u32,
    ) -> Result<Vec<[u64; 8]>, QueryError> {
        let lo = self.first_ending_at(track, from)?;
        let hi = self.first_starting_at(track, to.saturating_add(1))?;
        Ok(scan_columns(&self.items(track, lo..hi)?, from, to, px))
    }
}

#[cfg(test)]
mod tests {
    use hv_link::trace::RecordKind;

    use super::*;
    use crate::query::{Matcher, RangeQuery, TrackAnswer, range, search};
    use crate::testing::{header, rec};

    #[test]
    fn batches_become_items_answered_like_an_index() {
        let mut live = LiveTrace::new(header(), 1_000);
        for round in 0..10u64 {
            let mut batch = Vec::new();
            for p in 0..100u64 {
                let t = 1_000 + (round * 100 + p) * 1_000;
                batch.push(rec(t, 0, 0, RecordKind::VmEntry, 0, 0));
                batch.push(rec(t + 500, 0, 0, RecordKind::VmExit, 2, 0x1000));
                batch.push(rec(t + 600, 0, 0, RecordKind::Marker, p, 0));
            }
            live.push(&batch);
        }
        // A record older than its vCPU's last one is late; one of an unknown partition too.
        live.push(&[
            rec(5, 0, 0, RecordKind::Marker, 1, 0),
            rec(2_000_000, 9, 0, RecordKind::Marker, 1, 0),
        ]);
        let meta = live.meta();
        assert_eq!(meta["live"], true);
        assert_eq!(meta["late"], 2);
        assert_eq!(meta["records"], 3_002);
        // 1000 periods make 2000 items; the last marker may wait for a later record.
        assert_eq!(meta["items"], 2_000);
        assert_eq!(
            live.first_item(0),
            1_000,
            "the cap keeps the last 1000 items"
        );
        assert_eq!(live.end_item(0), 2_000);
        let whole = range(
            &live,
            &RangeQuery {
                from: 0.0,
                to: 1_000.0,
                px: 100,
                q: None,
            },
            &Matcher::default(),
        )
        .unwrap();
        let TrackAnswer::Summary { columns, .. } = &whole.tracks[0] else {
            panic!("1000 items in 100 px are a summary");
        };
        assert_eq!(columns.iter().map(|c| c[1]).sum::<u64>(), 1_000);
        let near = range(
            &live,
            &RangeQuery {
                from: 999.0,
                to: 999.9,
                px: 100,
                q: None,
            },
            &Matcher::default(),
        )
        .unwrap();
        let TrackAnswer::Exact { items, .. } = &near.tracks[0] else {
            panic!("exact");
        };
        let names: Vec<&str> = items.iter().map(|i| i.n.as_str()).collect();
        assert_eq!(names, ["guest", "marker 99"]);
        let found = search(
            &live,
            &Matcher::default(),
            "marker 5",
            f64::NEG_INFINITY,
            false,
        )
        .unwrap();
        assert!(found.total > 0);
    }
}
