//! The on-disk index of a trace file (`<trace>.hvti`), built once and reused: what
//! `hv trace view` reads instead of the whole trace.
//!
//! Building it is one streaming pass over the records. Each vCPU is a *track*; its records become
//! *items* (the same slices and instants as the Perfetto export: time in the guest, halted,
//! stopped in the debugger, outside the schedule window, blocked on a device; interrupts,
//! hypercalls, device traffic, IPC, markers, state changes and lost records as instants), stored
//! as fixed-size records sorted by start time, with the running maximum of their end times so
//! that the items overlapping any instant are found by binary search. Beside them, per track, a
//! mip-map of time buckets (item count, instant count, busy time per slice kind), each level 4×
//! coarser than the one below, answers "what is in this pixel column" at any zoom without
//! reading the items. The interrupt-latency histograms per partition are computed in the same pass.
//!
//! The file ends with its description (JSON) and a footer; the description names the trace's
//! size, modification time and a hash of its first bytes, and an index that does not match the
//! trace, or does not parse, is rebuilt. Memory while building is bounded by a reorder window
//! per track (records of one vCPU a little out of order are put back in order); a trace whose
//! records are further out of order than that is indexed from a sorted copy in memory instead.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use hv_link::trace::{
    IrqLatencies, IrqLatency, RecordKind, TraceError, TraceHeader, TraceReader, TraceRecord,
    bus_error_reason_name, exit_reason_name, hypercall_name, vcpu_state_name,
};
use serde::{Deserialize, Serialize};

/// Version of the index layout; an index of another version is rebuilt.
pub const INDEX_VERSION: u32 = 1;
/// The footer's magic (the file's last 8 bytes).
const MAGIC: [u8; 8] = *b"HVTINDX1";
/// Bytes of one stored item.
pub const ITEM_LEN: usize = 56;
/// Bytes of one stored bucket.
pub const BUCKET_LEN: usize = 48;
/// Each mip-map level's buckets are this many times wider than the level below.
pub const FANOUT: u64 = 4;
/// Records of one vCPU held back to restore their time order.
const REORDER_WINDOW: usize = 1 << 12;
/// Bytes of the trace hashed into the index's stamp.
const STAMP_BYTES: usize = 64 * 1024;
/// Most level-0 buckets per track.
const MAX_BUCKETS: u64 = 1 << 16;
/// Fewest level-0 buckets per track (enough for a wide window on the whole trace).
const MIN_BUCKETS: u64 = 4096;

/// Slice kinds, the `code` of a slice item.
pub const SLICE_NAMES: [&str; 5] = [
    "guest",
    "halted",
    "stopped in debugger",
    "outside schedule window",
    "blocked on device",
];
const GUEST: u16 = 0;
const HALTED: u16 = 1;
const DEBUGGER: u16 = 2;
const OUT_OF_WINDOW: u16 = 3;
const BLOCKED: u16 = 4;
/// Codes at or above this are instants: `INSTANT + RecordKind as u16`.
pub const INSTANT: u16 = 16;
/// `Item::flags`: a blocked slice that ended with a bus error (`c` is the reason).
pub const FLAG_BUS_ERROR: u16 = 1;
/// `Item::flags`: a slice cut where it was still open, continued by the next slice of its kind
/// (see [`MAX_WAITING`]).
pub const FLAG_CONTINUED: u16 = 2;
/// Items of one track held back behind an open slice, at most: past this the oldest open slice
/// is cut at the current record and continues in a new item ([`FLAG_CONTINUED`]), so that a
/// slice that never ends (a debugger stop never resumed) cannot hold the rest of its track in
/// memory.
pub const MAX_WAITING: usize = 1 << 16;

/// Why an index could not be built or read.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The trace cannot be opened or read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The trace file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The trace is not a valid trace file.
    #[error("{} is not a valid hvdk trace", path.display())]
    Format {
        /// The trace file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: TraceError,
    },
    /// A record names a partition the header does not list.
    #[error("{}: record for partition {partition}, which the header does not list", path.display())]
    UnknownPartition {
        /// The trace file.
        path: PathBuf,
        /// The partition id.
        partition: u32,
    },
    /// Writing the index failed (disk full, no permission).
    #[error("cannot write the index {}", path.display())]
    Write {
        /// The index file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The index file is damaged or of another version (it is rebuilt when opened through
    /// [`Index::open_or_build`]).
    #[error("the index {} is unusable: {reason}", path.display())]
    Corrupt {
        /// The index file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The trace changed since the index was built.
    #[error("the index {} was built for another version of the trace", path.display())]
    Stale {
        /// The index file.
        path: PathBuf,
    },
    /// Reading the index failed.
    #[error("cannot read the index {}", path.display())]
    ReadIndex {
        /// The index file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What identifies the trace an index was built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceStamp {
    /// File size in bytes.
    pub len: u64,
    /// Modification time, ns since the Unix epoch.
    pub mtime_ns: u64,
    /// FNV-1a hash of the first 64 KiB (the header and the first records).
    pub head_hash: u64,
}

impl SourceStamp {
    /// The stamp of the trace at `path` as it is now.
    pub fn of(path: &Path) -> std::io::Result<SourceStamp> {
        let mut file = File::open(path)?;
        let meta = file.metadata()?;
        let mtime_ns = meta
            .modified()?
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mut head = Vec::with_capacity(STAMP_BYTES);
        (&mut file)
            .take(STAMP_BYTES as u64)
            .read_to_end(&mut head)?;
        Ok(SourceStamp {
            len: meta.len(),
            mtime_ns,
            head_hash: fnv1a(&head),
        })
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// One level of a track's mip-map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Level {
    /// Byte offset of its first bucket in the index file.
    pub at: u64,
    /// Bucket width in ns (buckets start at [`IndexMeta::start`]).
    pub width: u64,
    /// Number of buckets.
    pub buckets: u64,
}

/// One track (one vCPU) in the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackMeta {
    /// Partition id.
    pub partition: u32,
    /// vCPU index.
    pub vcpu: u16,
    /// `<partition> vCPU <n>`.
    pub label: String,
    /// Byte offset of its first item.
    pub items_at: u64,
    /// Number of items.
    pub items: u64,
    /// Its mip-map, finest level first.
    pub levels: Vec<Level>,
}

/// Interrupt latencies of one partition: power-of-two histograms in ns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IrqHistogram {
    /// Partition id.
    pub partition: u32,
    /// Partition name.
    pub name: String,
    /// Raise to injection: `counts[k]` latencies in `[2^k, 2^(k+1))` ns (`counts[0]` also 0 ns).
    pub raise_to_inject: Histogram,
    /// Injection to EOI.
    pub inject_to_eoi: Histogram,
}

/// A power-of-two histogram.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Histogram {
    /// Samples.
    pub count: u64,
    /// Smallest sample, ns.
    pub min_ns: u64,
    /// Largest sample, ns.
    pub max_ns: u64,
    /// Sum of the samples, ns.
    pub sum_ns: u64,
    /// `counts[k]`: samples in `[2^k, 2^(k+1))` ns.
    pub counts: Vec<u64>,
}

impl Histogram {
    /// Adds one sample.
    pub fn add(&mut self, ns: u64) {
        let k = 63 - ns.max(1).leading_zeros() as usize;
        if self.counts.len() <= k {
            self.counts.resize(k + 1, 0);
        }
        self.counts[k] += 1;
        self.min_ns = if self.count == 0 {
            ns
        } else {
            self.min_ns.min(ns)
        };
        self.max_ns = self.max_ns.max(ns);
        self.sum_ns = self.sum_ns.saturating_add(ns);
        self.count += 1;
    }
}

/// The index's description (stored as JSON before the footer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexMeta {
    /// [`INDEX_VERSION`].
    pub version: u32,
    /// The trace it was built from.
    pub source: SourceStamp,
    /// The trace's header.
    pub header: TraceHeader,
    /// Earliest item start (ns, trace clock); 0 when there are no items.
    pub start: u64,
    /// Latest item end; equals `start` when there are none.
    pub end: u64,
    /// Records in the trace (`Lost` markers excluded).
    pub records: u64,
    /// Records dropped (the sum of the `Lost` markers).
    pub lost: u64,
    /// Items over all tracks.
    pub items: u64,
    /// Device-model requests (each one flow from the client through the model and back).
    pub flows: u64,
    /// Whether the records had to be sorted in memory (too far out of order for the window).
    pub sorted_in_memory: bool,
    /// Tracks in partition and vCPU order.
    pub tracks: Vec<TrackMeta>,
    /// Interrupt latencies per partition (partitions with interrupts).
    pub irq: Vec<IrqHistogram>,
}

/// One slice or instant of a track.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Item {
    /// Start, ns on the trace clock.
    pub start: u64,
    /// End (equal to `start` for an instant).
    pub end: u64,
    /// Largest `end` of this and every earlier item of the track.
    pub max_end: u64,
    /// A slice kind (index in [`SLICE_NAMES`]) or `INSTANT + ` a record kind.
    pub code: u16,
    /// [`FLAG_BUS_ERROR`].
    pub flags: u16,
    /// First payload word (a guest slice: exit reason; blocked: request id; instants: `a`).
    pub a: u64,
    /// Second payload word (guest: rip; blocked: offset; instants: `b`).
    pub b: u64,
    /// Blocked slices: the reply's latency (ns) or the bus error's reason.
    pub c: u64,
}

impl Item {
    /// Whether it is a slice (else an instant).
    pub fn is_slice(&self) -> bool {
        self.code < INSTANT
    }

    /// The record kind of an instant.
    pub fn record_kind(&self) -> Option<RecordKind> {
        self.code
            .checked_sub(INSTANT)
            .and_then(RecordKind::from_u16)
    }

    fn encode(&self, out: &mut [u8]) {
        out[0..8].copy_from_slice(&self.start.to_le_bytes());
        out[8..16].copy_from_slice(&self.end.to_le_bytes());
        out[16..24].copy_from_slice(&self.max_end.to_le_bytes());
        out[24..26].copy_from_slice(&self.code.to_le_bytes());
        out[26..28].copy_from_slice(&self.flags.to_le_bytes());
        out[28..32].fill(0);
        out[32..40].copy_from_slice(&self.a.to_le_bytes());
        out[40..48].copy_from_slice(&self.b.to_le_bytes());
        out[48..56].copy_from_slice(&self.c.to_le_bytes());
    }

    fn decode(b: &[u8]) -> Item {
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
        Item {
            start: u64_at(0),
            end: u64_at(8),
            max_end: u64_at(16),
            code: u16::from_le_bytes([b[24], b[25]]),
            flags: u16::from_le_bytes([b[26], b[27]]),
            a: u64_at(32),
            b: u64_at(40),
            c: u64_at(48),
        }
    }

    /// Its name, as the Perfetto export names it (`guest`, `inject 32`, `HV_IRQ_EOI`...).
    pub fn name(&self) -> String {
        if self.is_slice() {
            return SLICE_NAMES
                .get(usize::from(self.code))
                .copied()
                .unwrap_or("slice")
                .to_owned();
        }
        let (a, b) = (self.a, self.b);
        match self.record_kind() {
            Some(RecordKind::IrqRaise) => format!("raise {a}"),
            Some(RecordKind::IrqInject) => format!("inject {a}"),
            Some(RecordKind::IrqEoi) => format!("EOI {a}"),
            Some(RecordKind::IrqWithdraw) => format!("withdraw {a}"),
            Some(RecordKind::Hypercall) => {
                hypercall_name(a).map_or_else(|| format!("hypercall {a}"), str::to_owned)
            }
            Some(RecordKind::DeviceAccess) => {
                format!("{} {a:#x}", if b & 1 == 1 { "write" } else { "read" })
            }
            Some(RecordKind::IpcSend) => format!("IPC send {a}"),
            Some(RecordKind::IpcReceive) => format!("IPC receive {a}"),
            Some(RecordKind::Marker) => format!("marker {a}"),
            Some(RecordKind::StateChange) => format!("state {}", vcpu_state_name(a)),
            Some(RecordKind::ModelReceive) => format!("take request {a}"),
            Some(RecordKind::ModelRespond) => format!("answer request {a}"),
            Some(RecordKind::Lost) => format!("lost {a}"),
            Some(other) => format!("{other:?}"),
            None => "unknown".to_owned(),
        }
    }

    /// Its category: `vcpu` for slices, else `irq`, `hypercall`, `device`, `ipc`, `marker`,
    /// `lost` or `other`.
    pub fn category(&self) -> &'static str {
        if self.is_slice() {
            return "vcpu";
        }
        match self.record_kind() {
            Some(
                RecordKind::IrqRaise
                | RecordKind::IrqInject
                | RecordKind::IrqEoi
                | RecordKind::IrqWithdraw,
            ) => "irq",
            Some(RecordKind::Hypercall) => "hypercall",
            Some(
                RecordKind::DeviceAccess | RecordKind::ModelReceive | RecordKind::ModelRespond,
            ) => "device",
            Some(RecordKind::IpcSend | RecordKind::IpcReceive) => "ipc",
            Some(RecordKind::Marker) => "marker",
            Some(RecordKind::StateChange) => "vcpu",
            Some(RecordKind::Lost) => "lost",
            _ => "other",
        }
    }

    /// Its details as the Perfetto export gives them (`exit` and `rip` of a guest slice...).
    pub fn args(&self) -> serde_json::Value {
        use serde_json::json;
        let (a, b) = (self.a, self.b);
        if self.is_slice() && self.flags & FLAG_CONTINUED != 0 {
            // Cut while open: what its end would have said is not known yet.
            return json!({"continued": true});
        }
        if self.is_slice() {
            return match self.code {
                GUEST => json!({"exit": exit_reason_name(a), "rip": format!("{b:#x}")}),
                BLOCKED if self.flags & FLAG_BUS_ERROR != 0 => json!({"request": a,
                    "offset": format!("{b:#x}"), "bus_error": bus_error_reason_name(self.c)}),
                BLOCKED => json!({"request": a, "offset": format!("{b:#x}"),
                    "latency_ns": self.c}),
                _ => json!({}),
            };
        }
        match self.record_kind() {
            Some(
                RecordKind::IrqRaise
                | RecordKind::IrqInject
                | RecordKind::IrqEoi
                | RecordKind::IrqWithdraw,
            ) => json!({"vector": a}),
            Some(RecordKind::Hypercall) => json!({"nr": a, "result": b as i64}),
            Some(RecordKind::DeviceAccess) => json!({"size": b >> 1}),
            Some(RecordKind::IpcSend | RecordKind::IpcReceive) => json!({"len": b}),
            Some(RecordKind::Marker) => json!({"value": b}),
            Some(RecordKind::ModelReceive) => json!({"offset": format!("{b:#x}")}),
            Some(RecordKind::ModelRespond) => json!({"value": format!("{b:#x}")}),
            Some(RecordKind::Lost) => json!({"count": a}),
            Some(RecordKind::StateChange) => json!({}),
            _ => json!({"a": a, "b": b}),
        }
    }

    /// The device-model request this item belongs to (the flow it is a step of), if any.
    pub fn flow(&self) -> Option<u64> {
        match (self.code, self.record_kind()) {
            (BLOCKED, _) => Some(self.a),
            (_, Some(RecordKind::ModelReceive | RecordKind::ModelRespond)) => Some(self.a),
            _ => None,
        }
    }
}

/// One time bucket of a track's mip-map.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bucket {
    /// Items starting in the bucket.
    pub items: u32,
    /// Of those, instants.
    pub instants: u32,
    /// ns of the bucket covered by each slice kind.
    pub busy: [u64; 5],
}

impl Bucket {
    fn add(&mut self, other: &Bucket) {
        self.items = self.items.saturating_add(other.items);
        self.instants = self.instants.saturating_add(other.instants);
        for (b, o) in self.busy.iter_mut().zip(other.busy) {
            *b += o;
        }
    }

    fn encode(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&self.items.to_le_bytes());
        out[4..8].copy_from_slice(&self.instants.to_le_bytes());
        for (k, v) in self.busy.iter().enumerate() {
            out[8 + 8 * k..16 + 8 * k].copy_from_slice(&v.to_le_bytes());
        }
    }

    fn decode(b: &[u8]) -> Bucket {
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
        Bucket {
            items: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            instants: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            busy: [u64_at(8), u64_at(16), u64_at(24), u64_at(32), u64_at(40)],
        }
    }
}

/// How [`Index::open_or_build`] got its index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The cached index matched the trace.
    Cached,
    /// There was none: built now.
    Built,
    /// The cached one was unusable (the reason) and was rebuilt.
    Rebuilt(String),
}

/// An open index: its description in memory, items and buckets read from the file on demand.
#[derive(Debug)]
pub struct Index {
    file: File,
    path: PathBuf,
    meta: IndexMeta,
}

/// Where the index of `trace` lives: `<trace>.hvti`.
pub fn index_path(trace: &Path) -> PathBuf {
    let mut name = trace.as_os_str().to_owned();
    name.push(".hvti");
    name.into()
}

/// Where the index of `trace` is cached when its own directory is not writable:
/// `$XDG_CACHE_HOME/hvdk/trace-index/` (or `~/.cache/...`), named by a hash of the trace's
/// absolute path.
fn fallback_index_path(trace: &Path) -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    let absolute = std::path::absolute(trace).ok()?;
    let name = format!(
        "{:016x}.hvti",
        fnv1a(absolute.as_os_str().as_encoded_bytes())
    );
    Some(base.join("hvdk/trace-index").join(name))
}

impl Index {
    /// Opens the index cached beside `trace` (or in the user's cache directory when the trace's
    /// directory is read-only), building it first when it is missing, damaged or stale.
    pub fn open_or_build(trace: &Path) -> Result<(Index, Origin), IndexError> {
        let beside = index_path(trace);
        let fallback = fallback_index_path(trace);
        let mut reason = None;
        for candidate in std::iter::once(&beside).chain(fallback.as_ref()) {
            if !candidate.exists() {
                continue;
            }
            match Index::open(candidate, trace) {
                Ok(index) => return Ok((index, Origin::Cached)),
                Err(e @ (IndexError::Read { .. } | IndexError::Format { .. })) => return Err(e),
                Err(e) => reason = Some(e.to_string()),
            }
        }
        let built = match Index::build(trace, &beside) {
            Err(IndexError::Write { .. }) if fallback.is_some() => {
                let fallback = fallback.unwrap_or_default();
                if let Some(dir) = fallback.parent() {
                    std::fs::create_dir_all(dir).map_err(|source| IndexError::Write {
                        path: fallback.clone(),
                        source,
                    })?;
                }
                Index::build(trace, &fallback)?
            }
            other => other?,
        };
        Ok((built, reason.map_or(Origin::Built, Origin::Rebuilt)))
    }

    /// Opens the index at `path`, checking that it belongs to the trace at `trace` as it is now.
    pub fn open(path: &Path, trace: &Path) -> Result<Index, IndexError> {
        let stamp = SourceStamp::of(trace).map_err(|source| IndexError::Read {
            path: trace.to_owned(),
            source,
        })?;
        let index = Index::open_unchecked(path)?;
        if index.meta.source != stamp {
            return Err(IndexError::Stale {
                path: path.to_owned(),
            });
        }
        Ok(index)
    }

    /// Opens the index at `path` without looking at its trace.
    pub fn open_unchecked(path: &Path) -> Result<Index, IndexError> {
        let read = |source| IndexError::ReadIndex {
            path: path.to_owned(),
            source,
        };
        let corrupt = |reason: String| IndexError::Corrupt {
            path: path.to_owned(),
            reason,
        };
        let mut file = File::open(path).map_err(read)?;
        let len = file.metadata().map_err(read)?.len();
        if len < 16 {
            return Err(corrupt(format!("{len} bytes is too short")));
        }
        let mut footer = [0u8; 16];
        file.read_exact_at(&mut footer, len - 16).map_err(read)?;
        if footer[8..] != MAGIC {
            return Err(corrupt("no index footer".into()));
        }
        let meta_len = u64::from_le_bytes(footer[..8].try_into().unwrap_or_default());
        if meta_len > len - 16 || meta_len > 64 << 20 {
            return Err(corrupt(format!("description of {meta_len} bytes")));
        }
        let meta_at = len - 16 - meta_len;
        let mut json = vec![0; meta_len as usize];
        file.seek(SeekFrom::Start(meta_at)).map_err(read)?;
        file.read_exact(&mut json).map_err(read)?;
        let meta: IndexMeta =
            serde_json::from_slice(&json).map_err(|e| corrupt(format!("bad description: {e}")))?;
        if meta.version != INDEX_VERSION {
            return Err(corrupt(format!(
                "version {} (this build reads {INDEX_VERSION})",
                meta.version
            )));
        }
        for (i, t) in meta.tracks.iter().enumerate() {
            let items_end = t
                .items
                .checked_mul(ITEM_LEN as u64)
                .and_then(|n| n.checked_add(t.items_at));
            let levels_ok = t.levels.iter().all(|l| {
                l.width > 0
                    && l.buckets
                        .checked_mul(BUCKET_LEN as u64)
                        .and_then(|n| n.checked_add(l.at))
                        .is_some_and(|e| e <= meta_at)
            });
            if items_end.is_none_or(|e| e > meta_at) || !levels_ok || t.levels.is_empty() {
                return Err(corrupt(format!("track {i} points outside the file")));
            }
        }
        let index = Index {
            file,
            path: path.to_owned(),
            meta,
        };
        // Each track's top bucket counts all its items (a file cut or zeroed by a crash fails).
        for (t, track) in index.meta.tracks.iter().enumerate() {
            let top = track.levels.len() - 1;
            let all = index.buckets(t, top, 0..1)?;
            if all.first().map(|b| u64::from(b.items)) != Some(track.items.min(u64::from(u32::MAX)))
            {
                return Err(corrupt(format!(
                    "track {t}'s buckets do not count its items"
                )));
            }
        }
        Ok(index)
    }

    /// Builds the index of `trace` at `path` (written to a temporary file, then renamed).
    pub fn build(trace: &Path, path: &Path) -> Result<Index, IndexError> {
        let stamp = SourceStamp::of(trace).map_err(|source| IndexError::Read {
            path: trace.to_owned(),
            source,
        })?;
        let tmp = {
            let mut name = path.as_os_str().to_owned();
            name.push(format!(".tmp{}", std::process::id()));
            PathBuf::from(name)
        };
        let result = build_into(trace, &tmp, stamp).and_then(|()| {
            std::fs::rename(&tmp, path).map_err(|source| IndexError::Write {
                path: path.to_owned(),
                source,
            })
        });
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result?;
        Index::open_unchecked(path)
    }

    /// Its description.
    pub fn meta(&self) -> &IndexMeta {
        &self.meta
    }

    /// The index file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read_error(&self, source: std::io::Error) -> IndexError {
        IndexError::ReadIndex {
            path: self.path.clone(),
            source,
        }
    }

    /// Items `range` (indexes) of track `track`.
    pub fn items(
        &self,
        track: usize,
        range: std::ops::Range<u64>,
    ) -> Result<Vec<Item>, IndexError> {
        let t = &self.meta.tracks[track];
        let (lo, hi) = (range.start.min(t.items), range.end.min(t.items));
        if lo >= hi {
            return Ok(Vec::new());
        }
        let mut buf = vec![0; (hi - lo) as usize * ITEM_LEN];
        self.file
            .read_exact_at(&mut buf, t.items_at + lo * ITEM_LEN as u64)
            .map_err(|e| self.read_error(e))?;
        Ok(buf.chunks_exact(ITEM_LEN).map(Item::decode).collect())
    }

    /// One field (u64 at `offset` in the item) of item `i` of `track`.
    fn field(&self, track: usize, i: u64, offset: u64) -> Result<u64, IndexError> {
        let mut b = [0; 8];
        let at = self.meta.tracks[track].items_at + i * ITEM_LEN as u64 + offset;
        self.file
            .read_exact_at(&mut b, at)
            .map_err(|e| self.read_error(e))?;
        Ok(u64::from_le_bytes(b))
    }

    /// The first item of `track` whose `field` is at least `t` (the field is non-decreasing).
    fn partition_point(&self, track: usize, offset: u64, t: u64) -> Result<u64, IndexError> {
        let (mut lo, mut hi) = (0, self.meta.tracks[track].items);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.field(track, mid, offset)? < t {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// The first item of `track` starting at or after `t`.
    pub fn first_starting_at(&self, track: usize, t: u64) -> Result<u64, IndexError> {
        self.partition_point(track, 0, t)
    }

    /// The first item of `track` that may end at or after `t` (every earlier one ends before).
    pub fn first_ending_at(&self, track: usize, t: u64) -> Result<u64, IndexError> {
        self.partition_point(track, 16, t)
    }

    /// Buckets `range` of level `level` of `track`.
    pub fn buckets(
        &self,
        track: usize,
        level: usize,
        range: std::ops::Range<u64>,
    ) -> Result<Vec<Bucket>, IndexError> {
        let l = self.meta.tracks[track].levels[level];
        let (lo, hi) = (range.start.min(l.buckets), range.end.min(l.buckets));
        if lo >= hi {
            return Ok(Vec::new());
        }
        let mut buf = vec![0; (hi - lo) as usize * BUCKET_LEN];
        self.file
            .read_exact_at(&mut buf, l.at + lo * BUCKET_LEN as u64)
            .map_err(|e| self.read_error(e))?;
        Ok(buf.chunks_exact(BUCKET_LEN).map(Bucket::decode).collect())
    }
}

// ---- building --------------------------------------------------------------------------------

/// A record waiting in a reorder window, ordered by time, then by arrival.
struct Pending {
    at: (u64, u64),
    record: TraceRecord,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.at.cmp(&other.at)
    }
}

/// An item waiting for every earlier-starting item of its track.
struct Ready(Item, u64);

impl PartialEq for Ready {
    fn eq(&self, other: &Self) -> bool {
        (self.0.start, self.1) == (other.0.start, other.1)
    }
}
impl Eq for Ready {}
impl PartialOrd for Ready {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ready {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.0.start, self.1).cmp(&(other.0.start, other.1))
    }
}

/// The records of a trace were further out of order than the reorder window.
pub(crate) struct OutOfOrder;

/// One track while building (into a spill file) or live (into memory, see [`crate::live`]).
pub(crate) struct TrackBuild {
    partition: u32,
    vcpu: u16,
    label: String,
    window: BinaryHeap<Reverse<Pending>>,
    /// Time of the last record taken out of the window.
    last: u64,
    /// Open slices: start and payload.
    open: [Option<(u64, u64, u64)>; 5],
    ready: BinaryHeap<Reverse<Ready>>,
    /// Where items go in start order: a spill file, or `emitted` when `None`.
    spill: Option<BufWriter<File>>,
    spill_path: PathBuf,
    /// Items in start order not yet taken (live).
    pub(crate) emitted: Vec<Item>,
    items: u64,
    max_end: u64,
    last_start: u64,
    first_start: Option<u64>,
}

impl TrackBuild {
    /// A track whose items collect in `emitted`.
    pub(crate) fn in_memory(partition: u32, vcpu: u16, label: String) -> TrackBuild {
        TrackBuild {
            partition,
            vcpu,
            label,
            window: BinaryHeap::new(),
            last: 0,
            open: [None; 5],
            ready: BinaryHeap::new(),
            spill: None,
            spill_path: PathBuf::new(),
            emitted: Vec::new(),
            items: 0,
            max_end: 0,
            last_start: 0,
            first_start: None,
        }
    }

    /// Takes one record (live): false when it is older than this track's last record (it is
    /// dropped).
    pub(crate) fn feed(
        &mut self,
        r: &TraceRecord,
        seq: u64,
        irq: &mut IrqLatencies,
        hist: &mut HashMap<u32, IrqHistogram>,
    ) -> bool {
        self.process(r, seq, irq, hist).is_ok()
    }

    /// Takes one record in this track's time order.
    fn process(
        &mut self,
        r: &TraceRecord,
        seq: u64,
        irq: &mut IrqLatencies,
        hist: &mut HashMap<u32, IrqHistogram>,
    ) -> Result<(), BuildError> {
        if r.timestamp < self.last {
            return Err(BuildError::OutOfOrder(OutOfOrder));
        }
        self.last = r.timestamp;
        if let Some(s) = irq.feed(r) {
            let h = hist.entry(s.partition).or_default();
            match s.what {
                IrqLatency::RaiseToInject => h.raise_to_inject.add(s.ns),
                IrqLatency::InjectToEoi => h.inject_to_eoi.add(s.ns),
            }
        }
        let Some(kind) = r.kind() else {
            return Ok(());
        };
        let t = r.timestamp;
        let emit = |this: &mut Self, item: Item| {
            this.ready.push(Reverse(Ready(item, seq)));
        };
        let close = |this: &mut Self, code: u16, b_or_c: Option<(u64, u16)>| {
            this.open[usize::from(code)].take().map(|(start, a, b)| {
                let (c, flags) = b_or_c.unwrap_or((0, 0));
                Item {
                    start,
                    end: t,
                    code,
                    flags,
                    a,
                    b,
                    c,
                    ..Item::default()
                }
            })
        };
        let instant = |a: u64, b: u64| Item {
            start: t,
            end: t,
            code: INSTANT + kind as u16,
            a,
            b,
            ..Item::default()
        };
        match kind {
            RecordKind::VmEntry => self.open[usize::from(GUEST)] = Some((t, 0, 0)),
            RecordKind::VmExit => {
                if let Some(mut item) = close(self, GUEST, None) {
                    (item.a, item.b) = (r.a, r.b);
                    emit(self, item);
                }
            }
            RecordKind::Halt => self.open[usize::from(HALTED)] = Some((t, 0, 0)),
            RecordKind::Wake => {
                if let Some(item) = close(self, HALTED, None) {
                    emit(self, item);
                }
            }
            RecordKind::DebugStop => self.open[usize::from(DEBUGGER)] = Some((t, 0, 0)),
            RecordKind::DebugResume => {
                if let Some(item) = close(self, DEBUGGER, None) {
                    emit(self, item);
                }
            }
            RecordKind::ScheduleOut => self.open[usize::from(OUT_OF_WINDOW)] = Some((t, 0, 0)),
            RecordKind::ScheduleIn => {
                if let Some(item) = close(self, OUT_OF_WINDOW, None) {
                    emit(self, item);
                }
            }
            RecordKind::ModelRequest => self.open[usize::from(BLOCKED)] = Some((t, r.a, r.b)),
            RecordKind::ModelReply => {
                if let Some(item) = close(self, BLOCKED, Some((r.b, 0))) {
                    emit(self, item);
                }
            }
            RecordKind::ModelBusError => {
                if let Some(item) = close(self, BLOCKED, Some((r.b, FLAG_BUS_ERROR))) {
                    emit(self, item);
                }
            }
            RecordKind::Lost => {
                // What was open may have ended among the lost records.
                self.open = [None; 5];
                emit(self, instant(r.a, r.b));
            }
            _ => emit(self, instant(r.a, r.b)),
        }
        // Too much waits behind an open slice: cut the oldest one here, it continues from here.
        while self.ready.len() > MAX_WAITING {
            let Some(k) = (0..self.open.len())
                .filter(|k| self.open[*k].is_some())
                .min_by_key(|k| self.open[*k].map(|(start, _, _)| start))
            else {
                break;
            };
            let Some((start, a, b)) = self.open[k] else {
                break;
            };
            self.open[k] = Some((t, a, b));
            emit(
                self,
                Item {
                    start,
                    end: t,
                    code: k as u16,
                    flags: FLAG_CONTINUED,
                    a,
                    b,
                    ..Item::default()
                },
            );
            let watermark = self.watermark(t);
            self.drain(Some(watermark))?;
        }
        let watermark = self.watermark(t);
        self.drain(Some(watermark))
    }

    /// Every later item starts at or after the earliest open slice or the record at `t`.
    fn watermark(&self, t: u64) -> u64 {
        self.open
            .iter()
            .flatten()
            .map(|(start, _, _)| *start)
            .fold(t, u64::min)
    }

    /// Writes the ready items starting at or before `watermark` (all of them for `None`).
    pub(crate) fn drain(&mut self, watermark: Option<u64>) -> Result<(), BuildError> {
        while let Some(Reverse(Ready(item, _))) = self.ready.peek() {
            if watermark.is_some_and(|w| item.start > w) {
                break;
            }
            let Some(Reverse(Ready(mut item, _))) = self.ready.pop() else {
                break;
            };
            if item.start < self.last_start {
                return Err(BuildError::OutOfOrder(OutOfOrder));
            }
            self.last_start = item.start;
            self.first_start.get_or_insert(item.start);
            self.max_end = self.max_end.max(item.end);
            item.max_end = self.max_end;
            match &mut self.spill {
                Some(spill) => {
                    let mut buf = [0; ITEM_LEN];
                    item.encode(&mut buf);
                    spill.write_all(&buf).map_err(BuildError::Spill)?;
                }
                None => self.emitted.push(item),
            }
            self.items += 1;
        }
        Ok(())
    }
}

pub(crate) enum BuildError {
    OutOfOrder(OutOfOrder),
    Spill(std::io::Error),
    Index(IndexError),
}

impl From<IndexError> for BuildError {
    fn from(e: IndexError) -> Self {
        BuildError::Index(e)
    }
}

/// Builds into `tmp`: streaming with reorder windows, or from a sorted copy in memory when the
/// records are too far out of order.
fn build_into(trace: &Path, tmp: &Path, stamp: SourceStamp) -> Result<(), IndexError> {
    let write = |source| IndexError::Write {
        path: tmp.to_owned(),
        source,
    };
    let spill_dir = {
        let mut name = tmp.as_os_str().to_owned();
        name.push(".d");
        PathBuf::from(name)
    };
    std::fs::create_dir_all(&spill_dir).map_err(write)?;
    let result = match build_pass(trace, tmp, &spill_dir, stamp, false) {
        Err(BuildError::OutOfOrder(_)) => build_pass(trace, tmp, &spill_dir, stamp, true),
        other => other,
    };
    let _ = std::fs::remove_dir_all(&spill_dir);
    match result {
        Ok(()) => Ok(()),
        Err(BuildError::Index(e)) => Err(e),
        Err(BuildError::Spill(source)) => Err(IndexError::Write {
            path: spill_dir,
            source,
        }),
        Err(BuildError::OutOfOrder(_)) => Err(IndexError::Corrupt {
            path: tmp.to_owned(),
            reason: "records out of order after sorting".into(),
        }),
    }
}

fn build_pass(
    trace: &Path,
    tmp: &Path,
    spill_dir: &Path,
    stamp: SourceStamp,
    sort_in_memory: bool,
) -> Result<(), BuildError> {
    let read = |source| IndexError::Read {
        path: trace.to_owned(),
        source,
    };
    let format = |source| IndexError::Format {
        path: trace.to_owned(),
        source,
    };
    let file = File::open(trace).map_err(read)?;
    let mut reader = TraceReader::new(BufReader::with_capacity(1 << 20, file)).map_err(format)?;
    let header = reader.header().clone();
    let mut tracks: Vec<TrackBuild> = Vec::new();
    let mut track_of: HashMap<(u32, u16), usize> = HashMap::new();
    let spill = |i: usize| -> Result<(BufWriter<File>, PathBuf), BuildError> {
        let path = spill_dir.join(format!("track{i}"));
        let file = File::create(&path).map_err(BuildError::Spill)?;
        Ok((BufWriter::with_capacity(64 * 1024, file), path))
    };
    let new_track =
        |partition: u32, vcpu: u16, name: &str, i: usize| -> Result<TrackBuild, BuildError> {
            let (spill, spill_path) = spill(i)?;
            let mut track = TrackBuild::in_memory(partition, vcpu, format!("{name} vCPU {vcpu}"));
            (track.spill, track.spill_path) = (Some(spill), spill_path);
            Ok(track)
        };
    for p in &header.partitions {
        for v in 0..p.vcpus.min(u32::from(u16::MAX)) as u16 {
            track_of.insert((p.id, v), tracks.len());
            let t = new_track(p.id, v, &p.name, tracks.len())?;
            tracks.push(t);
        }
    }
    let mut irq = IrqLatencies::default();
    let mut hist: HashMap<u32, IrqHistogram> = HashMap::new();
    let (mut records, mut lost, mut flows, mut seq) = (0u64, 0u64, 0u64, 0u64);
    let mut sorted = Vec::new();
    let mut take = |r: TraceRecord,
                    tracks: &mut Vec<TrackBuild>,
                    track_of: &mut HashMap<(u32, u16), usize>|
     -> Result<(), BuildError> {
        match r.kind() {
            Some(RecordKind::Lost) => lost += r.a,
            Some(RecordKind::ModelRequest) => {
                flows += 1;
                records += 1;
            }
            _ => records += 1,
        }
        let i = match track_of.get(&(r.partition, r.vcpu)) {
            Some(i) => *i,
            None => {
                let Some(p) = header.partitions.iter().find(|p| p.id == r.partition) else {
                    return Err(IndexError::UnknownPartition {
                        path: trace.to_owned(),
                        partition: r.partition,
                    }
                    .into());
                };
                let t = new_track(r.partition, r.vcpu, &p.name, tracks.len())?;
                track_of.insert((r.partition, r.vcpu), tracks.len());
                tracks.push(t);
                tracks.len() - 1
            }
        };
        seq += 1;
        let track = &mut tracks[i];
        track.window.push(Reverse(Pending {
            at: (r.timestamp, seq),
            record: r,
        }));
        if (track.window.len() > REORDER_WINDOW || sort_in_memory)
            && let Some(Reverse(p)) = track.window.pop()
        {
            track.process(&p.record, p.at.1, &mut irq, &mut hist)?;
        }
        Ok(())
    };
    while let Some(batch) = reader.next_batch().map_err(format)? {
        if sort_in_memory {
            sorted.extend(batch);
        } else {
            for r in batch {
                take(r, &mut tracks, &mut track_of)?;
            }
        }
    }
    if sort_in_memory {
        sorted.sort_by_key(|r| r.timestamp);
        for r in std::mem::take(&mut sorted) {
            take(r, &mut tracks, &mut track_of)?;
        }
    }
    for track in &mut tracks {
        while let Some(Reverse(p)) = track.window.pop() {
            track.process(&p.record, p.at.1, &mut irq, &mut hist)?;
        }
        track.drain(None)?;
        if let Some(spill) = &mut track.spill {
            spill.flush().map_err(BuildError::Spill)?;
        }
    }
    let start = tracks
        .iter()
        .filter_map(|t| t.first_start)
        .min()
        .unwrap_or(0);
    let end = tracks
        .iter()
        .map(|t| t.max_end)
        .max()
        .unwrap_or(start)
        .max(start);

    // The index: every track's items, then every track's mip-map, then the description.
    let write = |source| IndexError::Write {
        path: tmp.to_owned(),
        source,
    };
    let mut out = BufWriter::with_capacity(1 << 20, File::create(tmp).map_err(write)?);
    let mut at = 0u64;
    let mut metas = Vec::with_capacity(tracks.len());
    for t in &tracks {
        let mut spill = File::open(&t.spill_path).map_err(BuildError::Spill)?;
        let copied = std::io::copy(&mut spill, &mut out).map_err(write)?;
        metas.push(TrackMeta {
            partition: t.partition,
            vcpu: t.vcpu,
            label: t.label.clone(),
            items_at: at,
            items: t.items,
            levels: Vec::new(),
        });
        at += copied;
    }
    for (t, meta) in tracks.iter().zip(&mut metas) {
        let spill = File::open(&t.spill_path).map_err(BuildError::Spill)?;
        let level0 = level_zero(
            BufReader::with_capacity(1 << 20, spill),
            t.items,
            start,
            end,
        )
        .map_err(BuildError::Spill)?;
        let mut level = level0.buckets;
        let mut width = level0.width;
        loop {
            let mut buf = vec![0; BUCKET_LEN];
            for b in &level {
                b.encode(&mut buf);
                out.write_all(&buf).map_err(write)?;
            }
            meta.levels.push(Level {
                at,
                width,
                buckets: level.len() as u64,
            });
            at += (level.len() * BUCKET_LEN) as u64;
            if level.len() <= 1 {
                break;
            }
            level = level
                .chunks(FANOUT as usize)
                .map(|c| {
                    c.iter().fold(Bucket::default(), |mut sum, b| {
                        sum.add(b);
                        sum
                    })
                })
                .collect();
            width *= FANOUT;
        }
        let _ = std::fs::remove_file(&t.spill_path);
    }
    let mut irq: Vec<IrqHistogram> = hist
        .into_iter()
        .map(|(partition, mut h)| {
            h.partition = partition;
            h.name = header
                .partitions
                .iter()
                .find(|p| p.id == partition)
                .map(|p| p.name.clone())
                .unwrap_or_default();
            h
        })
        .collect();
    irq.sort_by_key(|h| h.partition);
    let meta = IndexMeta {
        version: INDEX_VERSION,
        source: stamp,
        header,
        start,
        end,
        records,
        lost,
        items: metas.iter().map(|t| t.items).sum(),
        flows,
        sorted_in_memory: sort_in_memory,
        tracks: metas,
        irq,
    };
    let json = serde_json::to_vec(&meta).map_err(|e| write(std::io::Error::other(e)))?;
    out.write_all(&json).map_err(write)?;
    out.write_all(&(json.len() as u64).to_le_bytes())
        .map_err(write)?;
    out.write_all(&MAGIC).map_err(write)?;
    // No fsync: it is a cache, and [`Index::open_unchecked`] checks what a crash could leave.
    out.into_inner().map_err(|e| write(e.into_error()))?;
    Ok(())
}

struct LevelZero {
    width: u64,
    buckets: Vec<Bucket>,
}

/// A track's finest level, from its items in start order.
fn level_zero(
    mut items: impl Read,
    count: u64,
    start: u64,
    end: u64,
) -> std::io::Result<LevelZero> {
    // About four items per bucket.
    let n = (count / 4)
        .next_power_of_two()
        .clamp(MIN_BUCKETS, MAX_BUCKETS);
    let span = end - start + 1;
    let width = span.div_ceil(n).max(1);
    let n = span.div_ceil(width);
    let mut buckets = vec![Bucket::default(); n as usize];
    let mut buf = [0; ITEM_LEN];
    for _ in 0..count {
        items.read_exact(&mut buf)?;
        let item = Item::decode(&buf);
        let first = ((item.start - start) / width) as usize;
        let b = &mut buckets[first];
        b.items += 1;
        if !item.is_slice() {
            b.instants += 1;
            continue;
        }
        let kind = usize::from(item.code);
        let mut k = first;
        let mut t = item.start;
        while t < item.end && k < buckets.len() {
            let bucket_end = start + (k as u64 + 1) * width;
            let upto = item.end.min(bucket_end);
            buckets[k].busy[kind] += upto - t;
            t = upto;
            k += 1;
        }
    }
    Ok(LevelZero { width, buckets })
}

#[cfg(test)]
mod tests {
    use hv_link::trace::{MAX_BATCH_RECORDS as MAX_BATCH, RecordKind, TraceWriter};

    use super::*;
    use crate::testing::{header, rec};

    fn write(path: &Path, batches: &[Vec<TraceRecord>]) {
        let mut w = TraceWriter::new(File::create(path).unwrap(), &header()).unwrap();
        for b in batches {
            w.write_batch(b).unwrap();
        }
        w.finish().unwrap();
    }

    /// Every item of every track, in order.
    fn all_items(index: &Index) -> Vec<Vec<Item>> {
        (0..index.meta().tracks.len())
            .map(|t| index.items(t, 0..u64::MAX).unwrap())
            .collect()
    }

    /// The items of one vCPU's records in time order, the simple way (a reference).
    fn reference(records: &[TraceRecord], partition: u32, vcpu: u16) -> Vec<(u64, u64, String)> {
        let mut records: Vec<_> = records
            .iter()
            .filter(|r| (r.partition, r.vcpu) == (partition, vcpu))
            .copied()
            .collect();
        records.sort_by_key(|r| r.timestamp);
        let mut open: HashMap<&str, u64> = HashMap::new();
        let mut items = Vec::new();
        for r in &records {
            let t = r.timestamp;
            let kind = r.kind().unwrap();
            let slice = |name: &'static str| Some(name);
            let (opens, closes) = match kind {
                RecordKind::VmEntry => (slice("guest"), None),
                RecordKind::VmExit => (None, slice("guest")),
                RecordKind::Halt => (slice("halted"), None),
                RecordKind::Wake => (None, slice("halted")),
                RecordKind::ModelRequest => (slice("blocked on device"), None),
                RecordKind::ModelReply | RecordKind::ModelBusError => {
                    (None, slice("blocked on device"))
                }
                _ => (None, None),
            };
            if let Some(name) = opens {
                open.insert(name, t);
            } else if let Some(name) = closes {
                if let Some(start) = open.remove(name) {
                    items.push((start, t, name.to_owned()));
                }
            } else {
                if kind == RecordKind::Lost {
                    open.clear();
                }
                let item = Item {
                    start: t,
                    end: t,
                    code: INSTANT + kind as u16,
                    a: r.a,
                    b: r.b,
                    ..Item::default()
                };
                items.push((t, t, item.name()));
            }
        }
        items.sort_by_key(|i| i.0);
        items
    }

    fn records() -> Vec<TraceRecord> {
        let mut out = Vec::new();
        for p in 0..200u64 {
            let t = 10_000 + p * 1_000;
            out.push(rec(t, 0, 0, RecordKind::VmEntry, 0, 0));
            out.push(rec(t + 100, 0, 0, RecordKind::IrqInject, 32, 0));
            out.push(rec(t + 600, 0, 0, RecordKind::VmExit, 2, 0x1000 + p));
            out.push(rec(t + 10, 1, 1, RecordKind::Halt, 0, 0));
            out.push(rec(t + 900, 1, 1, RecordKind::Wake, 0, 0));
            if p % 50 == 7 {
                out.push(rec(t + 650, 1, 0, RecordKind::ModelRequest, p, 8));
                out.push(rec(t + 660, 1, 0, RecordKind::Lost, 3, 0));
                out.push(rec(t + 700, 1, 0, RecordKind::ModelRequest, p + 1, 8));
                out.push(rec(t + 800, 1, 0, RecordKind::ModelReply, p + 1, 100));
            }
        }
        out
    }

    #[test]
    fn items_agree_with_a_simple_pass_and_are_found_by_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.hvt");
        let recs = records();
        // Written in batches, each vCPU's records in order but vCPUs interleaved.
        write(
            &path,
            &recs.chunks(37).map(<[_]>::to_vec).collect::<Vec<_>>(),
        );
        let (index, origin) = Index::open_or_build(&path).unwrap();
        assert_eq!(origin, Origin::Built);
        assert_eq!(index.path(), index_path(&path));
        let meta = index.meta();
        assert!(!meta.sorted_in_memory);
        assert_eq!(meta.records, recs.len() as u64 - 4);
        assert_eq!(meta.lost, 12);
        assert_eq!(meta.flows, 8);
        assert_eq!(meta.start, 10_000);
        assert_eq!(meta.end, 10_000 + 199 * 1_000 + 900);
        let tracks: Vec<_> = meta.tracks.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(tracks, ["a vCPU 0", "b vCPU 0", "b vCPU 1"]);
        let items = all_items(&index);
        for (t, (partition, vcpu)) in [(0, 0), (1, 0), (1, 1)].into_iter().enumerate() {
            let got: Vec<_> = items[t]
                .iter()
                .map(|i| (i.start, i.end, i.name()))
                .collect();
            assert_eq!(got, reference(&recs, partition, vcpu), "track {t}");
            let mut max_end = 0;
            for i in &items[t] {
                max_end = max_end.max(i.end);
                assert_eq!(i.max_end, max_end);
            }
        }
        // The guest slices keep the exit's reason and rip; the blocked slice its reply.
        let guest = items[0][0];
        assert_eq!(
            (guest.name(), guest.a, guest.b),
            ("guest".into(), 2, 0x1000)
        );
        assert_eq!(guest.args()["exit"], "io");
        let blocked = items[1].iter().find(|i| i.is_slice()).unwrap();
        assert_eq!((blocked.a, blocked.c, blocked.flow()), (8, 100, Some(8)));
        // Finding by time.
        assert_eq!(index.first_starting_at(0, 0).unwrap(), 0);
        assert_eq!(index.first_starting_at(0, 10_001).unwrap(), 1);
        assert_eq!(index.first_starting_at(0, u64::MAX).unwrap(), 400);
        // Halted slices of b vCPU 1 start at +10 and end at +900: the one covering 10_500.
        let k = index.first_ending_at(2, 10_500).unwrap();
        assert_eq!(
            (items[2][k as usize].start, items[2][k as usize].end),
            (10_010, 10_900)
        );
        // Level 0 counts every item once; the top level holds everything in one bucket.
        for (t, track) in meta.tracks.iter().enumerate() {
            let top = track.levels.len() - 1;
            assert_eq!(track.levels[top].buckets, 1);
            let all = index.buckets(t, top, 0..1).unwrap()[0];
            assert_eq!(u64::from(all.items), track.items);
            let level0 = index.buckets(t, 0, 0..u64::MAX).unwrap();
            assert_eq!(level0.len() as u64, track.levels[0].buckets);
            let busy: u64 = items[t].iter().map(|i| i.end - i.start).sum();
            assert_eq!(all.busy.iter().sum::<u64>(), busy);
        }
        let a = &meta.irq;
        assert!(a.is_empty(), "no raise/EOI records, no latencies: {a:?}");
    }

    #[test]
    fn the_index_is_reused_then_rebuilt_when_stale_or_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.hvt");
        write(&path, &[records()]);
        let (first, origin) = Index::open_or_build(&path).unwrap();
        assert_eq!(origin, Origin::Built);
        let (again, origin) = Index::open_or_build(&path).unwrap();
        assert_eq!(origin, Origin::Cached);
        assert_eq!(again.meta(), first.meta());

        // The trace changes: the index is stale.
        let mut more = records();
        more.push(rec(900_000, 0, 0, RecordKind::Marker, 1, 2));
        std::thread::sleep(std::time::Duration::from_millis(20));
        write(&path, &[more]);
        assert!(matches!(
            Index::open(&index_path(&path), &path),
            Err(IndexError::Stale { .. })
        ));
        let (rebuilt, origin) = Index::open_or_build(&path).unwrap();
        assert!(
            matches!(&origin, Origin::Rebuilt(why) if why.contains("another version of the trace")),
            "{origin:?}"
        );
        assert_eq!(rebuilt.meta().items, first.meta().items + 1);

        // Damaged indexes: cut short, junk, a description pointing outside the file.
        let index = index_path(&path);
        let good = std::fs::read(&index).unwrap();
        let junk_meta = {
            let mut bytes = good.clone();
            let n = bytes.len();
            bytes[n - 9] ^= 0xff; // the description's length's top byte
            bytes
        };
        let zeroed_top = {
            let mut bytes = good.clone();
            let t = &rebuilt.meta().tracks[0];
            let at = t.levels[t.levels.len() - 1].at as usize;
            bytes[at..at + BUCKET_LEN].fill(0);
            bytes
        };
        for (bad, why) in [
            (zeroed_top, "buckets do not count its items"),
            (good[..good.len() / 2].to_vec(), "no index footer"),
            (b"junk".to_vec(), "too short"),
            (junk_meta, "description of"),
        ] {
            std::fs::write(&index, &bad).unwrap();
            let err = Index::open(&index, &path).unwrap_err();
            assert!(matches!(err, IndexError::Corrupt { .. }), "{err}");
            assert!(err.to_string().contains(why), "{err}");
            let (_, origin) = Index::open_or_build(&path).unwrap();
            assert!(matches!(origin, Origin::Rebuilt(_)), "{origin:?}");
            assert_eq!(std::fs::read(&index).unwrap().len(), good.len());
        }

        // A trace that is not one is an error, and no index is left behind.
        let junk = dir.path().join("junk.hvt");
        std::fs::write(&junk, b"not a trace").unwrap();
        let err = Index::open_or_build(&junk).unwrap_err();
        assert!(matches!(err, IndexError::Format { .. }), "{err}");
        assert!(!index_path(&junk).exists());
        let stray = dir.path().join("stray.hvt");
        write(&stray, &[vec![rec(1, 9, 0, RecordKind::VmEntry, 0, 0)]]);
        assert!(matches!(
            Index::open_or_build(&stray),
            Err(IndexError::UnknownPartition { partition: 9, .. })
        ));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn a_slice_that_never_ends_is_cut_instead_of_holding_its_track() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.hvt");
        // A debugger stop never resumed, then many markers on the same vCPU.
        let n = MAX_WAITING as u64 * 3;
        let mut recs = vec![rec(1_000, 0, 0, RecordKind::DebugStop, 0, 0)];
        recs.extend((0..n).map(|k| rec(2_000 + k, 0, 0, RecordKind::Marker, k, 0)));
        write(
            &path,
            &recs
                .chunks(MAX_BATCH)
                .map(<[_]>::to_vec)
                .collect::<Vec<_>>(),
        );
        let (index, _) = Index::open_or_build(&path).unwrap();
        let items = index.items(0, 0..u64::MAX).unwrap();
        let (slices, markers): (Vec<Item>, Vec<Item>) = items.iter().partition(|i| i.is_slice());
        assert_eq!(markers.len() as u64, n, "every marker is there");
        assert!(slices.len() >= 2, "cut into pieces: {}", slices.len());
        assert!(
            slices
                .iter()
                .all(|s| s.flags & FLAG_CONTINUED != 0 && s.name() == "stopped in debugger")
        );
        // The pieces follow each other from the stop on.
        assert_eq!(slices[0].start, 1_000);
        for w in slices.windows(2) {
            assert_eq!(w[0].end, w[1].start);
        }
        let starts: Vec<u64> = items.iter().map(|i| i.start).collect();
        assert!(starts.is_sorted());
    }

    #[test]
    fn records_far_out_of_order_are_sorted_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.hvt");
        // 10 000 records of one vCPU, written backwards: beyond any reorder window.
        let mut recs: Vec<_> = (0..10_000u64)
            .map(|k| rec(1_000 + k, 0, 0, RecordKind::Marker, k, 0))
            .collect();
        recs.reverse();
        write(&path, &[recs.clone()]);
        let (index, _) = Index::open_or_build(&path).unwrap();
        assert!(index.meta().sorted_in_memory);
        let items = index.items(0, 0..u64::MAX).unwrap();
        let starts: Vec<u64> = items.iter().map(|i| i.start).collect();
        assert_eq!(starts, (1_000..11_000).collect::<Vec<_>>());
    }

    #[test]
    fn interrupt_latencies_make_a_histogram_per_partition() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.hvt");
        let mut recs = Vec::new();
        for k in 0..100u64 {
            let t = 1_000_000 + k * 10_000;
            // Raised 1 µs before the injection; EOI 3 µs after.
            recs.push(rec(t, 1, 0, RecordKind::IrqRaise, 32, t - 1_000));
            recs.push(rec(t, 1, 0, RecordKind::IrqInject, 32, 0));
            recs.push(rec(t + 3_000, 1, 0, RecordKind::IrqEoi, 32, 0));
        }
        write(&path, &[recs]);
        let (index, _) = Index::open_or_build(&path).unwrap();
        let irq = &index.meta().irq;
        assert_eq!(irq.len(), 1);
        assert_eq!((irq[0].partition, irq[0].name.as_str()), (1, "b"));
        let h = &irq[0].raise_to_inject;
        assert_eq!(
            (h.count, h.min_ns, h.max_ns, h.sum_ns),
            (100, 1_000, 1_000, 100_000)
        );
        assert_eq!(h.counts[9], 100, "1000 ns is in [512, 1024)");
        assert_eq!(
            irq[0].inject_to_eoi.counts[11], 100,
            "3000 ns is in [2048, 4096)"
        );
    }
}
