//! Reading a trace file in time order with bounded memory, whatever its length.
//!
//! A trace file holds batches as the debug agent drained them: each batch has records of many
//! vCPUs, and one vCPU's records are in time order across the batches (within one batch a `Lost`
//! record may come before the records it follows; each vCPU's part of a batch is sorted).
//! [`TraceStream::open`] makes one pass over the file that checks every chunk and notes, per
//! vCPU, which batches hold its records (a few bytes per batch); [`TraceStream::records`] then
//! merges the vCPUs' record streams by timestamp, reading each vCPU's batches back with
//! positioned reads. Memory: one batch part per vCPU plus a bounded cache of batch parts read for
//! one vCPU and kept for the others ([`CACHE_RECORDS`]).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use hv_link::trace::{
    CHUNK_HEADER_LEN, MAX_CHUNK_LEN, TraceError, TraceHeader, TraceReader, TraceRecord,
    batch_records,
};

use crate::ViewerError;
use crate::export::FastMap;

/// Most records kept decoded for vCPUs that have not reached them yet (32 bytes each).
pub const CACHE_RECORDS: usize = 1 << 20;

/// A batch chunk in the file.
#[derive(Debug, Clone, Copy)]
struct BatchAt {
    /// Offset of the chunk (its tag).
    offset: u64,
    /// Bytes of the whole chunk.
    len: u32,
}

/// One vCPU's records: the batches that hold some.
#[derive(Debug)]
struct Lane {
    key: (u32, u16),
    batches: Vec<u32>,
}

/// An indexed trace file: header, counts and span known, records read on demand in time order.
#[derive(Debug)]
pub struct TraceStream {
    path: PathBuf,
    file: File,
    header: TraceHeader,
    batches: Vec<BatchAt>,
    /// (partition, vCPU) → lane index.
    lane_of: FastMap<(u32, u16), usize>,
    lanes: Vec<Lane>,
    records: u64,
    span: (u64, u64),
}

impl TraceStream {
    /// Opens a trace file and indexes it (one pass, checking every chunk; memory stays small).
    pub fn open(path: &Path) -> Result<TraceStream, ViewerError> {
        let open_err = |source| ViewerError::Open {
            path: path.to_owned(),
            source,
        };
        let format = |source| ViewerError::Format {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(open_err)?;
        let mut input = Counting {
            inner: std::io::BufReader::with_capacity(1 << 20, file.try_clone().map_err(open_err)?),
            read: 0,
        };
        let header = TraceReader::new(&mut input)
            .map_err(format)?
            .header()
            .clone();
        let mut stream = TraceStream {
            path: path.to_owned(),
            file,
            header,
            batches: Vec::new(),
            lane_of: FastMap::default(),
            lanes: Vec::new(),
            records: 0,
            span: (u64::MAX, 0),
        };
        let mut chunk = Vec::new();
        loop {
            let offset = input.read;
            if !read_chunk_bytes(&mut input, &mut chunk).map_err(format)? {
                break;
            }
            let records = batch_records(&chunk).map_err(format)?;
            let count = records.len() as u64;
            let index = stream.batches.len() as u32;
            stream.batches.push(BatchAt {
                offset,
                len: chunk.len() as u32,
            });
            let mut last: Option<((u32, u16), usize)> = None;
            for r in records {
                let key = (r.partition, r.vcpu);
                let lane = match last {
                    Some((k, lane)) if k == key => lane,
                    _ => {
                        let lane = stream.lane(key)?;
                        last = Some((key, lane));
                        lane
                    }
                };
                let batches = &mut stream.lanes[lane].batches;
                if batches.last() != Some(&index) {
                    batches.push(index);
                }
                stream.span.0 = stream.span.0.min(r.timestamp);
                stream.span.1 = stream.span.1.max(r.timestamp);
            }
            stream.records += count;
        }
        if stream.records == 0 {
            stream.span = (0, 0);
        }
        Ok(stream)
    }

    /// The lane of (partition, vCPU), made on first sight; fails for a partition the header lacks.
    fn lane(&mut self, key: (u32, u16)) -> Result<usize, ViewerError> {
        if let Some(&lane) = self.lane_of.get(&key) {
            return Ok(lane);
        }
        if !self.header.partitions.iter().any(|p| p.id == key.0) {
            return Err(ViewerError::UnknownPartition {
                path: self.path.clone(),
                partition: key.0,
            });
        }
        self.lanes.push(Lane {
            key,
            batches: Vec::new(),
        });
        self.lane_of.insert(key, self.lanes.len() - 1);
        Ok(self.lanes.len() - 1)
    }

    /// The header.
    pub fn header(&self) -> &TraceHeader {
        &self.header
    }

    /// Records in the file (`Lost` markers included).
    pub fn len(&self) -> u64 {
        self.records
    }

    /// Whether the file has no records.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// First and last timestamp (ns on the trace clock); (0, 0) for an empty trace.
    pub fn span(&self) -> (u64, u64) {
        self.span
    }

    /// The name of partition `id`, when the header lists it.
    pub fn partition_name(&self, id: u32) -> Option<&str> {
        self.header
            .partitions
            .iter()
            .find(|p| p.id == id)
            .map(|p| p.name.as_str())
    }

    /// Each vCPU's leading records in its first batch (in time order, up to and including the
    /// first that tells its state when the trace began, see [`crate::export::first_records`]), in
    /// the order the vCPUs first appear: what the exporters look at to show the state a vCPU was
    /// in when the trace began (one batch read per vCPU).
    pub fn first_records(&self) -> Result<Vec<TraceRecord>, ViewerError> {
        let format = |source| ViewerError::Format {
            path: self.path.clone(),
            source,
        };
        let mut chunk = Vec::new();
        let mut firsts = Vec::with_capacity(self.lanes.len());
        for lane in &self.lanes {
            let Some(&batch) = lane.batches.first() else {
                continue;
            };
            let at = self.batches[batch as usize];
            chunk.resize(at.len as usize, 0);
            self.file
                .read_exact_at(&mut chunk, at.offset)
                .map_err(|e| format(TraceError::Io(e)))?;
            let mut part: Vec<TraceRecord> = batch_records(&chunk)
                .map_err(format)?
                .filter(|r| (r.partition, r.vcpu) == lane.key)
                .collect();
            part.sort_by_key(|r| r.timestamp);
            let lead = part
                .iter()
                .position(crate::export::ends_lead)
                .map_or(part.len(), |i| i + 1);
            firsts.extend_from_slice(&part[..lead]);
        }
        Ok(firsts)
    }

    /// The records in time order (ties in vCPU order). The iterator stops early when the file
    /// cannot be read back (changed since [`TraceStream::open`]): check [`Records::finish`].
    pub fn records(&self) -> Records<'_> {
        self.records_caching(CACHE_RECORDS)
    }

    /// [`TraceStream::records`] with a cache of at most `cache` records.
    fn records_caching(&self, cache: usize) -> Records<'_> {
        let mut records = Records {
            cache_limit: cache,
            stream: self,
            heads: BinaryHeap::with_capacity(self.lanes.len()),
            current: None,
            cursors: self
                .lanes
                .iter()
                .map(|_| Cursor {
                    next_batch: 0,
                    part: Vec::new(),
                    at: 0,
                })
                .collect(),
            cache: HashMap::new(),
            cached: 0,
            chunk: Vec::new(),
            error: None,
        };
        for lane in 0..self.lanes.len() {
            records.advance(lane);
        }
        records
    }
}

/// Counts the bytes read (to note where each chunk starts).
struct Counting<R> {
    inner: R,
    read: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

/// Reads one whole chunk (tag, length, body) into `out`; `false` at a clean end of input.
fn read_chunk_bytes(input: &mut impl Read, out: &mut Vec<u8>) -> Result<bool, TraceError> {
    out.clear();
    out.resize(CHUNK_HEADER_LEN, 0);
    let got = read_full(input, out)?;
    if got == 0 {
        return Ok(false);
    }
    if got < CHUNK_HEADER_LEN {
        return Err(TraceError::Truncated {
            needed: CHUNK_HEADER_LEN,
            available: got,
        });
    }
    let len = u32::from_le_bytes([out[4], out[5], out[6], out[7]]) as usize;
    if len > MAX_CHUNK_LEN {
        return Err(TraceError::TooLarge(len));
    }
    out.resize(CHUNK_HEADER_LEN + len, 0);
    let got = read_full(input, &mut out[CHUNK_HEADER_LEN..])?;
    if got < len {
        return Err(TraceError::Truncated {
            needed: CHUNK_HEADER_LEN + len,
            available: CHUNK_HEADER_LEN + got,
        });
    }
    Ok(true)
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

/// Where one vCPU's stream is.
#[derive(Debug)]
struct Cursor {
    /// Index into the lane's batch list of the next batch to read.
    next_batch: usize,
    /// The vCPU's records from the current batch, sorted by time.
    part: Vec<TraceRecord>,
    /// Next record in `part`.
    at: usize,
}

/// The records of a [`TraceStream`] in time order (see [`TraceStream::records`]).
#[derive(Debug)]
pub struct Records<'a> {
    stream: &'a TraceStream,
    /// (timestamp of the lane's next record, lane), for every lane but `current`.
    heads: BinaryHeap<Reverse<(u64, usize)>>,
    /// The lane whose next record comes first, when known without the heap (a lane's records
    /// often come in runs: no heap operation while they last).
    current: Option<(u64, usize)>,
    cursors: Vec<Cursor>,
    /// Batch index → the parts of lanes that have not taken theirs yet (indexed by lane).
    cache: HashMap<u32, Vec<Vec<TraceRecord>>>,
    /// Records in `cache`.
    cached: usize,
    /// Most records in `cache`.
    cache_limit: usize,
    chunk: Vec<u8>,
    error: Option<ViewerError>,
}

impl Records<'_> {
    /// Ends the iteration: an error if the file could not be read back.
    pub fn finish(self) -> Result<(), ViewerError> {
        self.error.map_or(Ok(()), Err)
    }

    /// Moves `lane` to its next record (loading its next batch part when needed) and queues it:
    /// as `current` when it comes before everything in the heap, else in the heap.
    fn advance(&mut self, lane: usize) {
        loop {
            let cursor = &self.cursors[lane];
            if let Some(r) = cursor.part.get(cursor.at) {
                let head = (r.timestamp, lane);
                let beats_heap = self.heads.peek().is_none_or(|Reverse(top)| head < *top);
                match self.current {
                    None if beats_heap => self.current = Some(head),
                    // (Only while starting is there a current one here.)
                    Some(c) if head < c => {
                        self.heads.push(Reverse(c));
                        self.current = Some(head);
                    }
                    _ => self.heads.push(Reverse(head)),
                }
                return;
            }
            let Some(&batch) = self.stream.lanes[lane].batches.get(cursor.next_batch) else {
                self.cursors[lane].part = Vec::new();
                return;
            };
            self.cursors[lane].next_batch += 1;
            match self.part(batch, lane) {
                Ok(part) => {
                    let cursor = &mut self.cursors[lane];
                    cursor.part = part;
                    cursor.at = 0;
                }
                Err(e) => {
                    self.error.get_or_insert(e);
                    self.heads.clear();
                    self.current = None;
                    return;
                }
            }
        }
    }

    /// `lane`'s records in `batch`, sorted by time: from the cache, or read from the file (the
    /// other lanes' parts are cached while the cache has room).
    fn part(&mut self, batch: u32, lane: usize) -> Result<Vec<TraceRecord>, ViewerError> {
        if let Some(parts) = self.cache.get_mut(&batch)
            && !parts[lane].is_empty()
        {
            let part = std::mem::take(&mut parts[lane]);
            self.cached -= part.len();
            if parts.iter().all(Vec::is_empty) {
                self.cache.remove(&batch);
            }
            return Ok(part);
        }
        let at = self.stream.batches[batch as usize];
        let format = |source| ViewerError::Format {
            path: self.stream.path.clone(),
            source,
        };
        self.chunk.resize(at.len as usize, 0);
        self.stream
            .file
            .read_exact_at(&mut self.chunk, at.offset)
            .map_err(|e| format(TraceError::Io(e)))?;
        let mut parts: Vec<Vec<TraceRecord>> = vec![Vec::new(); self.stream.lanes.len()];
        let mut last: Option<((u32, u16), usize)> = None;
        for r in batch_records(&self.chunk).map_err(format)? {
            let key = (r.partition, r.vcpu);
            let l = match last {
                Some((k, l)) if k == key => l,
                _ => {
                    let Some(&l) = self.stream.lane_of.get(&key) else {
                        // The file changed since it was indexed.
                        return Err(format(TraceError::UnexpectedChunk {
                            expected: "batch as indexed",
                        }));
                    };
                    last = Some((key, l));
                    l
                }
            };
            parts[l].push(r);
        }
        for part in &mut parts {
            if !part.is_sorted_by_key(|r| r.timestamp) {
                part.sort_by_key(|r| r.timestamp);
            }
        }
        let mine = std::mem::take(&mut parts[lane]);
        // Keep the other lanes' parts when they fit; a lane whose part was not kept reads the
        // batch again when it gets there.
        let rest: usize = parts.iter().map(Vec::len).sum();
        if rest > 0 && self.cached + rest <= self.cache_limit {
            self.cached += rest;
            self.cache.insert(batch, parts);
        }
        Ok(mine)
    }
}

impl Iterator for Records<'_> {
    type Item = TraceRecord;

    fn next(&mut self) -> Option<TraceRecord> {
        let (_, lane) = match self.current.take() {
            Some(c) => c,
            None => self.heads.pop()?.0,
        };
        let cursor = &mut self.cursors[lane];
        let r = cursor.part[cursor.at];
        cursor.at += 1;
        self.advance(lane);
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Trace;
    use crate::testing::{header, rec};
    use hv_link::trace::{RecordKind, TraceWriter};

    fn write(path: &Path, batches: &[Vec<TraceRecord>]) {
        let mut w = TraceWriter::new(File::create(path).unwrap(), &header()).unwrap();
        for b in batches {
            w.write_batch(b).unwrap();
        }
        w.finish().unwrap();
    }

    #[test]
    fn records_come_in_time_order_across_vcpus_and_batches() {
        use RecordKind::*;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.hvt");
        // vCPU (1,0) is quiet after its first batch; (1,1) has its records spread over batches
        // whose other records come much earlier; a Lost record comes first in its batch.
        let batches = vec![
            vec![
                rec(10, 0, 0, VmEntry, 0, 0),
                rec(5, 1, 0, VmEntry, 0, 0),
                rec(30, 0, 0, VmExit, 0, 0),
                rec(100, 1, 1, Marker, 1, 0),
            ],
            vec![
                rec(50, 0, 0, Lost, 2, 1),
                rec(40, 0, 0, VmEntry, 0, 0),
                rec(101, 1, 1, Marker, 2, 0),
            ],
            vec![rec(60, 0, 0, VmExit, 0, 0)],
            vec![rec(102, 1, 1, Marker, 3, 0), rec(70, 0, 0, Halt, 0, 0)],
        ];
        write(&path, &batches);
        let stream = TraceStream::open(&path).unwrap();
        assert_eq!(stream.len(), 10);
        assert_eq!(stream.span(), (5, 102));
        assert_eq!(stream.header().system, "test");
        let mut records = stream.records();
        let got: Vec<TraceRecord> = records.by_ref().collect();
        records.finish().unwrap();
        let all: Vec<TraceRecord> = batches.concat();
        assert_eq!(got, Trace::new(header(), all).records);
    }

    #[test]
    fn a_small_cache_only_costs_rereads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.hvt");
        let batches: Vec<Vec<TraceRecord>> = (0..50u64)
            .map(|b| {
                (0..30u64)
                    .map(|i| {
                        let t = b * 1000 + i * 7;
                        rec(
                            t,
                            (i % 2) as u32,
                            (i % 3 % 2) as u16,
                            RecordKind::Marker,
                            t,
                            0,
                        )
                    })
                    .collect()
            })
            .collect();
        write(&path, &batches);
        let stream = TraceStream::open(&path).unwrap();
        let mut want: Vec<u64> = batches.concat().iter().map(|r| r.a).collect();
        want.sort();
        for cache in [0, 10, CACHE_RECORDS] {
            let got: Vec<u64> = stream.records_caching(cache).map(|r| r.a).collect();
            assert_eq!(got, want, "cache of {cache}");
        }
    }

    #[test]
    fn bad_files_get_the_same_errors_as_loading() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            TraceStream::open(&dir.path().join("missing.hvt")),
            Err(ViewerError::Open { .. })
        ));
        let junk = dir.path().join("junk.hvt");
        std::fs::write(&junk, b"not a trace at all").unwrap();
        assert!(matches!(
            TraceStream::open(&junk),
            Err(ViewerError::Format { .. })
        ));
        let cut = dir.path().join("cut.hvt");
        write(&cut, &[vec![rec(1, 0, 0, RecordKind::VmEntry, 0, 0)]]);
        let bytes = std::fs::read(&cut).unwrap();
        std::fs::write(&cut, &bytes[..bytes.len() - 5]).unwrap();
        assert!(matches!(
            TraceStream::open(&cut),
            Err(ViewerError::Format { .. })
        ));
        let stray = dir.path().join("stray.hvt");
        write(&stray, &[vec![rec(1, 7, 0, RecordKind::VmEntry, 0, 0)]]);
        assert!(matches!(
            TraceStream::open(&stray),
            Err(ViewerError::UnknownPartition { partition: 7, .. })
        ));
        let empty = dir.path().join("empty.hvt");
        write(&empty, &[]);
        let stream = TraceStream::open(&empty).unwrap();
        assert!(stream.is_empty());
        assert_eq!(stream.span(), (0, 0));
        assert_eq!(stream.records().count(), 0);
    }
}
