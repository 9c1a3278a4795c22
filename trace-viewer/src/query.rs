//! Questions the web timeline asks of an [`Index`]: what to draw in a time range at a width
//! ([`range`]), which item is the next or previous match of a search ([`search`]) and how many
//! there are. Times in the answers are µs from the trace's first item, as on the page.
//!
//! A range answers each track with *exact* items (slices and instants with their names and
//! details) when at most [`exact_limit`] items overlap it, and otherwise with *columns*: per
//! pixel column, the items starting in it, the instants among them and the fraction of it each
//! slice kind covers, summed from the mip-map level whose buckets are at most one column wide.
//! Either way an answer holds at most a few items per pixel, whatever the trace's length.

use std::collections::HashMap;
use std::sync::Mutex;

use hv_link::trace::RecordKind;
use serde::Serialize;
use serde_json::Value;

use crate::index::{Bucket, INSTANT, Index, IndexError, Item};

/// What the questions read: an [`Index`] file, or a live trace in memory
/// ([`crate::live::LiveTrace`]). Items of a track are numbered from [`Store::first_item`] to
/// [`Store::end_item`] in start order.
pub trait Store {
    /// The trace time that is 0 µs on the page.
    fn origin(&self) -> u64;
    /// Number of tracks.
    fn track_count(&self) -> usize;
    /// The number of the track's first item still held.
    fn first_item(&self, _track: usize) -> u64 {
        0
    }
    /// One past the number of the track's last item.
    fn end_item(&self, track: usize) -> u64;
    /// Items `range` of `track` (clamped to what is held).
    fn items(&self, track: usize, range: std::ops::Range<u64>) -> Result<Vec<Item>, IndexError>;
    /// The first item of `track` starting at or after `t`.
    fn first_starting_at(&self, track: usize, t: u64) -> Result<u64, IndexError>;
    /// The first item of `track` that may end at or after `t`.
    fn first_ending_at(&self, track: usize, t: u64) -> Result<u64, IndexError>;
    /// Per-column sums of `track` over `from..=to` in `px` columns (see [`TrackAnswer`]).
    fn columns(
        &self,
        track: usize,
        from: u64,
        to: u64,
        px: u32,
    ) -> Result<Vec<[u64; 8]>, QueryError>;
}

impl Store for Index {
    fn origin(&self) -> u64 {
        self.meta().start
    }
    fn track_count(&self) -> usize {
        self.meta().tracks.len()
    }
    fn end_item(&self, track: usize) -> u64 {
        self.meta().tracks[track].items
    }
    fn items(&self, track: usize, range: std::ops::Range<u64>) -> Result<Vec<Item>, IndexError> {
        Index::items(self, track, range)
    }
    fn first_starting_at(&self, track: usize, t: u64) -> Result<u64, IndexError> {
        Index::first_starting_at(self, track, t)
    }
    fn first_ending_at(&self, track: usize, t: u64) -> Result<u64, IndexError> {
        Index::first_ending_at(self, track, t)
    }
    fn columns(
        &self,
        track: usize,
        from: u64,
        to: u64,
        px: u32,
    ) -> Result<Vec<[u64; 8]>, QueryError> {
        columns(self, track, from, to, px)
    }
}

/// Most pixel columns a range may ask for.
pub const MAX_PX: u32 = 8192;
/// Items read per step while searching.
const SCAN_CHUNK: u64 = 1 << 14;

/// Why a question could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// A parameter is missing or malformed.
    #[error("{0}")]
    BadRequest(String),
    /// Reading the index failed.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// What was asked for is not known (a rip without a source line, an ELF that cannot be
    /// read): an answer, not a failure.
    #[error("{0}")]
    Unknown(String),
}

/// How many items one track may return as exact items for `px` columns.
pub fn exact_limit(px: u32) -> u64 {
    (u64::from(px) / 2).clamp(256, 4096)
}

/// A range question: `from`..`to` in µs from the trace's start, `px` columns wide, items whose
/// names contain `q` (case-insensitive) marked.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeQuery {
    /// Start, µs from the trace's first item.
    pub from: f64,
    /// End, µs.
    pub to: f64,
    /// Pixel columns.
    pub px: u32,
    /// Search text to mark.
    pub q: Option<String>,
}

impl RangeQuery {
    /// Parses `from=&to=&px=&q=` (a URL's query string).
    pub fn parse(query: &str) -> Result<RangeQuery, QueryError> {
        let params = params(query);
        let number = |name: &str| -> Result<f64, QueryError> {
            let v = params
                .get(name)
                .ok_or_else(|| QueryError::BadRequest(format!("missing parameter '{name}'")))?;
            v.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| QueryError::BadRequest(format!("bad number {name}={v}")))
        };
        let (from, to) = (number("from")?, number("to")?);
        if to < from {
            return Err(QueryError::BadRequest(format!(
                "the range ends before it starts ({from} > {to})"
            )));
        }
        let px = match params.get("px") {
            None => 1000,
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|px| (1..=MAX_PX).contains(px))
                .ok_or_else(|| {
                    QueryError::BadRequest(format!("bad px={v} (1 to {MAX_PX} columns)"))
                })?,
        };
        let q = params
            .get("q")
            .map(|q| q.trim().to_owned())
            .filter(|q| !q.is_empty());
        Ok(RangeQuery { from, to, px, q })
    }
}

/// The query string's parameters, percent-decoded.
pub fn params(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| char::from(b).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push(h << 4 | l);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One track's answer.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum TrackAnswer {
    /// Every item overlapping the range.
    Exact {
        /// Always true.
        exact: bool,
        /// The items (see [`ItemOut`]).
        items: Vec<ItemOut>,
    },
    /// Per-column summaries.
    Summary {
        /// Always false.
        exact: bool,
        /// `[column, items, instants, guest‰, halted‰, debugger‰, window‰, blocked‰]` for each
        /// column with something in it.
        columns: Vec<[u64; 8]>,
    },
}

/// The answer to a [`RangeQuery`].
#[derive(Debug, Serialize)]
pub struct RangeAnswer {
    /// Start, µs.
    pub from: f64,
    /// End, µs.
    pub to: f64,
    /// Columns.
    pub px: u32,
    /// One per track, in the index's track order.
    pub tracks: Vec<TrackAnswer>,
}

/// µs from the trace's start for a trace time.
fn us(index: &(impl Store + ?Sized), t: u64) -> f64 {
    t.saturating_sub(index.origin()) as f64 / 1e3
}

/// The trace time of `us` µs from the trace's start (clamped to the trace clock's range).
fn ns(index: &(impl Store + ?Sized), us: f64) -> u64 {
    let rel = (us * 1e3).max(0.0);
    index.origin().saturating_add(if rel >= u64::MAX as f64 {
        u64::MAX
    } else {
        rel as u64
    })
}

/// An item as the page gets it: `s` start and `d` duration (µs), `n` name, `c` category, `k`
/// its index in the track (identifies it), `f` the device request it is a step of, `m` when it
/// matches the search, `a` its details (only where asked for: a range leaves them out, see
/// [`item`]).
#[derive(Debug, Clone, Serialize)]
pub struct ItemOut {
    /// Start, µs from the trace's start.
    pub s: f64,
    /// Duration of a slice, µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub d: Option<f64>,
    /// Name.
    pub n: String,
    /// Category.
    pub c: &'static str,
    /// Index in its track.
    pub k: u64,
    /// Device request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub f: Option<u64>,
    /// Matches the search.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub m: Option<u8>,
    /// Details.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub a: Option<Value>,
}

/// `item` (index `at` in its track) for the page, with its details when `details`.
pub fn item_out(
    index: &(impl Store + ?Sized),
    item: &Item,
    at: u64,
    matched: bool,
    details: bool,
) -> ItemOut {
    ItemOut {
        s: us(index, item.start),
        d: item
            .is_slice()
            .then(|| (item.end - item.start) as f64 / 1e3),
        n: item.name(),
        c: item.category(),
        k: at,
        f: item.flow(),
        m: matched.then_some(1),
        a: details.then(|| item.args()),
    }
}

/// Item `k` of track `track`, with its details.
pub fn item(index: &(impl Store + ?Sized), track: usize, k: u64) -> Result<ItemOut, QueryError> {
    if track >= index.track_count() {
        return Err(QueryError::BadRequest(format!("no track {track}")));
    }
    if !(index.first_item(track)..index.end_item(track)).contains(&k) {
        return Err(QueryError::BadRequest(format!(
            "track {track} has items {}..{}, no item {k}",
            index.first_item(track),
            index.end_item(track)
        )));
    }
    let found = index.items(track, k..k + 1)?;
    Ok(item_out(index, &found[0], k, false, true))
}

/// Answers a range question.
pub fn range(
    index: &(impl Store + ?Sized),
    q: &RangeQuery,
    matcher: &Matcher,
) -> Result<RangeAnswer, QueryError> {
    let from = ns(index, q.from);
    let to = ns(index, q.to).max(from);
    let limit = exact_limit(q.px);
    let mut tracks = Vec::with_capacity(index.track_count());
    for track in 0..index.track_count() {
        let lo = index.first_ending_at(track, from)?;
        let hi = index.first_starting_at(track, to.saturating_add(1))?;
        if hi.saturating_sub(lo) <= limit {
            let items = index.items(track, lo..hi)?;
            let needle = q.q.as_deref();
            let items = items
                .iter()
                .zip(lo..)
                .filter(|(item, _)| item.end >= from)
                .map(|(item, at)| {
                    let matched = needle.is_some_and(|n| matcher.matches(n, item));
                    item_out(index, item, at, matched, false)
                })
                .collect();
            tracks.push(TrackAnswer::Exact { exact: true, items });
        } else {
            tracks.push(TrackAnswer::Summary {
                exact: false,
                columns: index.columns(track, from, to, q.px)?,
            });
        }
    }
    Ok(RangeAnswer {
        from: us(index, from),
        to: us(index, to),
        px: q.px,
        tracks,
    })
}

/// Per-column sums of track `track` over `from..=to` in `px` columns.
pub fn columns(
    index: &Index,
    track: usize,
    from: u64,
    to: u64,
    px: u32,
) -> Result<Vec<[u64; 8]>, QueryError> {
    let origin = index.meta().start;
    let levels = &index.meta().tracks[track].levels;
    let span = (to - from + 1) as f64;
    let cw = span / f64::from(px);
    // The coarsest level whose buckets fit in a column (the finest when none does).
    let level = levels
        .iter()
        .rposition(|l| l.width as f64 <= cw)
        .unwrap_or(0);
    let l = levels[level];
    if to < origin {
        return Ok(Vec::new());
    }
    let b_lo = from.saturating_sub(origin) / l.width;
    let b_hi = (to - origin) / l.width + 1;
    let buckets = index.buckets(track, level, b_lo..b_hi)?;
    let px = px as usize;
    let mut sums = vec![(Bucket::default(), 0f64, [0f64; 5]); px];
    let column = |t: f64| ((t - from as f64) / cw).floor().clamp(0.0, (px - 1) as f64) as usize;
    for (b, k) in buckets.iter().zip(b_lo..) {
        let bs = origin + k * l.width;
        let be = bs + l.width;
        let mid = bs as f64 + l.width as f64 / 2.0;
        let home = column(mid);
        sums[home].0.items += b.items;
        sums[home].0.instants += b.instants;
        // Busy time is spread over the columns the bucket covers.
        let (lo, hi) = (bs.max(from) as f64, (be.min(to + 1)) as f64);
        if hi <= lo {
            continue;
        }
        let (c0, c1) = (column(lo), column(hi - 1.0));
        for (c, sum) in sums.iter_mut().enumerate().take(c1 + 1).skip(c0) {
            let c_lo = from as f64 + c as f64 * cw;
            let overlap = (hi.min(c_lo + cw) - lo.max(c_lo)).max(0.0);
            let share = overlap / l.width as f64;
            sum.1 += overlap;
            for (s, busy) in sum.2.iter_mut().zip(b.busy) {
                *s += busy as f64 * share;
            }
        }
    }
    Ok(sums
        .iter()
        .enumerate()
        .filter(|(_, (b, _, busy))| b.items > 0 || busy.iter().any(|v| *v > 0.0))
        .map(|(x, (b, covered, busy))| {
            let permille = |v: f64| {
                if *covered > 0.0 {
                    ((v / covered) * 1000.0).round().clamp(0.0, 1000.0) as u64
                } else {
                    0
                }
            };
            [
                x as u64,
                u64::from(b.items),
                u64::from(b.instants),
                permille(busy[0]),
                permille(busy[1]),
                permille(busy[2]),
                permille(busy[3]),
                permille(busy[4]),
            ]
        })
        .collect())
}

/// Per-column sums of `items` (one track's, in start order, with every item overlapping
/// `from..=to` among them) over `from..=to` in `px` columns, counted item by item (for traces
/// held in memory; an [`Index`] sums its buckets instead).
pub fn scan_columns(items: &[Item], from: u64, to: u64, px: u32) -> Vec<[u64; 8]> {
    let px = px.max(1) as usize;
    let cw = (to - from + 1) as f64 / px as f64;
    let mut sums = vec![(0u64, 0u64, [0f64; 5]); px];
    let column = |t: f64| ((t - from as f64) / cw).floor().clamp(0.0, (px - 1) as f64) as usize;
    for item in items {
        if item.end < from || item.start > to {
            continue;
        }
        if item.start >= from {
            let c = column(item.start as f64);
            sums[c].0 += 1;
            if !item.is_slice() {
                sums[c].1 += 1;
            }
        }
        if !item.is_slice() || item.end == item.start {
            continue;
        }
        let (lo, hi) = (item.start.max(from) as f64, item.end.min(to + 1) as f64);
        let kind = usize::from(item.code).min(4);
        for (c, sum) in sums
            .iter_mut()
            .enumerate()
            .take(column(hi - 1.0) + 1)
            .skip(column(lo))
        {
            let c_lo = from as f64 + c as f64 * cw;
            sum.2[kind] += (hi.min(c_lo + cw) - lo.max(c_lo)).max(0.0);
        }
    }
    sums.iter()
        .enumerate()
        .filter(|(_, (n, _, busy))| *n > 0 || busy.iter().any(|v| *v > 0.0))
        .map(|(x, (n, instants, busy))| {
            let permille = |v: f64| ((v / cw) * 1000.0).round().clamp(0.0, 1000.0) as u64;
            [
                x as u64,
                *n,
                *instants,
                permille(busy[0]),
                permille(busy[1]),
                permille(busy[2]),
                permille(busy[3]),
                permille(busy[4]),
            ]
        })
        .collect()
}

/// Where a guest rip is in its partition's source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceLine {
    /// The source file (as the DWARF names it, usually absolute).
    pub file: String,
    /// The line (1-based).
    pub line: u32,
    /// The function's symbol, when the ELF has one.
    pub function: Option<String>,
    /// The ELF read.
    pub image: String,
}

/// The source line of `rip` in partition `partition`, from its ELF image's DWARF (the header
/// names the image).
pub fn source(
    header: &hv_link::trace::TraceHeader,
    partition: u32,
    rip: u64,
) -> Result<SourceLine, QueryError> {
    let p = header
        .partitions
        .iter()
        .find(|p| p.id == partition)
        .ok_or_else(|| QueryError::BadRequest(format!("no partition {partition}")))?;
    let loader = addr2line::Loader::new(&p.image).map_err(|e| {
        QueryError::Unknown(format!("cannot read the ELF and DWARF of {}: {e}", p.image))
    })?;
    let location = loader
        .find_location(rip)
        .map_err(|e| QueryError::Unknown(format!("bad DWARF in {}: {e}", p.image)))?;
    match location.and_then(|l| Some((l.file?.to_owned(), l.line?))) {
        Some((file, line)) => Ok(SourceLine {
            file,
            line,
            function: loader.find_symbol(rip).map(str::to_owned),
            image: p.image.clone(),
        }),
        None => Err(QueryError::Unknown(format!(
            "no source line for {rip:#x} in {}",
            p.image
        ))),
    }
}

/// Matches item names against search text, remembering the answer per distinct name.
#[derive(Debug, Default)]
pub struct Matcher {
    known: Mutex<HashMap<(String, u16, u64, u64), bool>>,
    totals: Mutex<HashMap<String, u64>>,
}

impl Matcher {
    /// Whether `item`'s name contains `needle` (compared in lower case).
    pub fn matches(&self, needle: &str, item: &Item) -> bool {
        // An item's name depends on its code, `a` and, for a device access, `b`'s low bit.
        let b = if item.record_kind() == Some(RecordKind::DeviceAccess) {
            item.b & 1
        } else {
            0
        };
        let a = if item.code < INSTANT { 0 } else { item.a };
        let key = (needle.to_owned(), item.code, a, b);
        let Ok(mut known) = self.known.lock() else {
            return contains(needle, item);
        };
        if let Some(m) = known.get(&key) {
            return *m;
        }
        if known.len() > 1 << 20 {
            known.clear();
        }
        let m = contains(needle, item);
        known.insert(key, m);
        m
    }

    /// How many items match `needle` (counted once per needle, then remembered).
    pub fn total(&self, index: &(impl Store + ?Sized), needle: &str) -> Result<u64, QueryError> {
        // A live trace grows: the count is remembered for the items held when it was made.
        let held: u64 = (0..index.track_count())
            .map(|t| index.end_item(t) - index.first_item(t))
            .sum();
        let key = format!("{held}:{needle}");
        if let Some(n) = self.totals.lock().ok().and_then(|t| t.get(&key).copied()) {
            return Ok(n);
        }
        let mut n = 0;
        for track in 0..index.track_count() {
            let count = index.end_item(track);
            let mut at = index.first_item(track);
            while at < count {
                let chunk = index.items(track, at..(at + SCAN_CHUNK).min(count))?;
                n += chunk.iter().filter(|i| self.matches(needle, i)).count() as u64;
                at += SCAN_CHUNK;
            }
        }
        if let Ok(mut totals) = self.totals.lock() {
            if totals.len() > 64 {
                totals.clear();
            }
            totals.insert(key, n);
        }
        Ok(n)
    }
}

fn contains(needle: &str, item: &Item) -> bool {
    item.name().to_lowercase().contains(&needle.to_lowercase())
}

/// A search result: the total and the match found.
#[derive(Debug, Serialize)]
pub struct SearchAnswer {
    /// Items matching, in the whole trace.
    pub total: u64,
    /// The match after (or before) the given time, if any: its track and item.
    #[serde(rename = "match")]
    pub found: Option<Found>,
}

/// One match.
#[derive(Debug, Serialize)]
pub struct Found {
    /// Track index.
    pub track: usize,
    /// The item, with its details.
    pub item: ItemOut,
}

/// Finds the first item matching `needle` that starts after `after_us` (or, `backwards`, the
/// last one starting before it); ties go to the lower track.
pub fn search(
    index: &(impl Store + ?Sized),
    matcher: &Matcher,
    needle: &str,
    after_us: f64,
    backwards: bool,
) -> Result<SearchAnswer, QueryError> {
    let needle = needle.trim().to_lowercase();
    if needle.is_empty() {
        return Err(QueryError::BadRequest("empty search".into()));
    }
    let total = matcher.total(index, &needle)?;
    // `after_us` is a µs value the page got from us; compare in ns, rounded the same way.
    let pivot = (after_us * 1e3).round();
    let rel = |i: &Item| i.start.saturating_sub(index.origin()) as f64;
    let mut best: Option<(u64, usize, u64, Item)> = None;
    for track in 0..index.track_count() {
        let (first, count) = (index.first_item(track), index.end_item(track));
        if backwards {
            let mut hi = index.first_starting_at(track, ns(index, after_us))?;
            'scan: while hi > first {
                let lo = hi.saturating_sub(SCAN_CHUNK).max(first);
                let chunk = index.items(track, lo..hi)?;
                for (k, item) in chunk.iter().enumerate().rev() {
                    if best.as_ref().is_some_and(|b| item.start <= b.0) {
                        break 'scan;
                    }
                    if rel(item) < pivot && matcher.matches(&needle, item) {
                        best = Some((item.start, track, lo + k as u64, *item));
                        break 'scan;
                    }
                }
                hi = lo;
            }
        } else {
            let mut lo = index.first_starting_at(track, ns(index, after_us))?;
            'scan: while lo < count {
                let hi = (lo + SCAN_CHUNK).min(count);
                let chunk = index.items(track, lo..hi)?;
                for (k, item) in chunk.iter().enumerate() {
                    if best.as_ref().is_some_and(|b| item.start >= b.0) {
                        break 'scan;
                    }
                    if rel(item) > pivot && matcher.matches(&needle, item) {
                        best = Some((item.start, track, lo + k as u64, *item));
                        break 'scan;
                    }
                }
                lo = hi;
            }
        }
    }
    Ok(SearchAnswer {
        total,
        found: best.map(|(_, track, at, item)| Found {
            track,
            item: item_out(index, &item, at, true, true),
        }),
    })
}

#[cfg(test)]
mod tests {
    use hv_link::trace::{RecordKind, TraceWriter};

    use super::*;
    use crate::testing::{header, rec};

    /// 3000 periods on `a` vCPU 0: 600 ns in the guest, an IRQ, 400 ns halted.
    fn indexed() -> (tempfile::TempDir, Index) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.hvt");
        let mut recs = Vec::new();
        for p in 0..3_000u64 {
            let t = p * 1_000;
            recs.push(rec(t, 0, 0, RecordKind::VmEntry, 0, 0));
            recs.push(rec(t + 300, 0, 0, RecordKind::IrqInject, 32 + p % 2, 0));
            recs.push(rec(t + 600, 0, 0, RecordKind::VmExit, 5, 0x1000));
            recs.push(rec(t + 600, 0, 0, RecordKind::Halt, 0, 0));
            recs.push(rec(t + 1_000, 0, 0, RecordKind::Wake, 0, 0));
        }
        let mut w = TraceWriter::new(std::fs::File::create(&path).unwrap(), &header()).unwrap();
        w.write_batch(&recs).unwrap();
        w.finish().unwrap();
        let (index, _) = Index::open_or_build(&path).unwrap();
        (dir, index)
    }

    fn query(from: f64, to: f64, px: u32) -> RangeQuery {
        RangeQuery {
            from,
            to,
            px,
            q: None,
        }
    }

    #[test]
    fn zoomed_out_a_range_is_columns_that_sum_to_the_items() {
        let (_dir, index) = indexed();
        let whole = range(&index, &query(0.0, 3_000.0, 100), &Matcher::default()).unwrap();
        let TrackAnswer::Summary { columns, .. } = &whole.tracks[0] else {
            panic!("9000 items in 100 px are a summary");
        };
        assert!(columns.len() <= 100);
        assert_eq!(columns.iter().map(|c| c[1]).sum::<u64>(), 9_000);
        assert_eq!(columns.iter().map(|c| c[2]).sum::<u64>(), 3_000);
        // Every column is 60% guest and 40% halted (within rounding at the edges).
        for c in &columns[1..columns.len() - 1] {
            assert!((590..=610).contains(&c[3]), "{c:?}");
            assert!((390..=410).contains(&c[4]), "{c:?}");
        }
        // Empty tracks answer exactly, with nothing.
        assert!(matches!(&whole.tracks[1], TrackAnswer::Exact { items, .. } if items.is_empty()));
        // Zoomed in: exact items, the slices overlapping the range's start included.
        let near = range(&index, &query(1_000.5, 1_002.5, 100), &Matcher::default()).unwrap();
        let TrackAnswer::Exact { items, .. } = &near.tracks[0] else {
            panic!("a few items are exact");
        };
        // Period 1000's guest slice (its IRQ at +300 ns is before the range), then periods
        // 1001 and 1002 up to 1002.5 µs.
        let names: Vec<&str> = items.iter().map(|i| i.n.as_str()).collect();
        assert_eq!(
            names,
            [
                "guest",
                "halted",
                "guest",
                "inject 33",
                "halted",
                "guest",
                "inject 32"
            ]
        );
        assert_eq!((items[0].s, items[0].d), (1_000.0, Some(0.6)));
        assert!(items[0].a.is_none(), "a range leaves the details out");
        let full = item(&index, 0, items[0].k).unwrap();
        assert_eq!(full.a.unwrap()["exit"], "hlt");
        assert!(matches!(
            item(&index, 0, 9_000),
            Err(QueryError::BadRequest(_))
        ));
        assert!(matches!(item(&index, 7, 0), Err(QueryError::BadRequest(_))));
        // Item counts stay bounded whatever the zoom.
        for px in [1, 10, 100, 1000, MAX_PX] {
            for (from, to) in [(0.0, 3_000.0), (100.0, 700.0), (1_500.0, 1_510.0)] {
                let r = range(&index, &query(from, to, px), &Matcher::default()).unwrap();
                let n = match &r.tracks[0] {
                    TrackAnswer::Exact { items, .. } => items.len() as u64,
                    TrackAnswer::Summary { columns, .. } => columns.len() as u64,
                };
                assert!(n <= exact_limit(px).max(u64::from(px)), "{px} px: {n}");
            }
        }
    }

    #[test]
    fn search_finds_the_next_and_previous_match_and_counts_them() {
        let (_dir, index) = indexed();
        let m = Matcher::default();
        let first = search(&index, &m, "Inject 33", f64::NEG_INFINITY, false).unwrap();
        assert_eq!(first.total, 1_500);
        let found = &first.found.as_ref().unwrap().item;
        assert_eq!((found.n.as_str(), found.s), ("inject 33", 1.3));
        assert_eq!(found.a.as_ref().unwrap()["vector"], 33);
        let next = search(&index, &m, "inject 33", 1.3, false).unwrap();
        assert_eq!(next.found.unwrap().item.s, 3.3);
        let prev = search(&index, &m, "inject 33", 3.3, true).unwrap();
        assert_eq!(prev.found.unwrap().item.s, 1.3);
        let last = search(&index, &m, "inject 33", f64::INFINITY, true).unwrap();
        assert_eq!(last.found.unwrap().item.s, 2_999.3);
        assert!(
            search(&index, &m, "inject 33", 2_999.3, false)
                .unwrap()
                .found
                .is_none()
        );
        assert_eq!(search(&index, &m, "nothing", 0.0, false).unwrap().total, 0);
        // A range marks the matches among its exact items.
        let mut q = query(0.0, 2.0, 100);
        q.q = Some("INJECT".into());
        let r = range(&index, &q, &m).unwrap();
        let TrackAnswer::Exact { items, .. } = &r.tracks[0] else {
            panic!("exact");
        };
        let marked: Vec<&str> = items
            .iter()
            .filter(|i| i.m == Some(1))
            .map(|i| i.n.as_str())
            .collect();
        assert_eq!(marked, ["inject 32", "inject 33"]);
    }

    #[test]
    fn query_strings_are_decoded_and_checked() {
        let q = RangeQuery::parse("from=1.5&to=2e3&px=640&q=inject%2032+x").unwrap();
        assert_eq!(
            q,
            RangeQuery {
                from: 1.5,
                to: 2_000.0,
                px: 640,
                q: Some("inject 32 x".into())
            }
        );
        assert_eq!(params("a=%zz&b=%e2%9c%93")["a"], "%zz");
        assert_eq!(params("a=%zz&b=%e2%9c%93")["b"], "✓");
        for bad in [
            "from=1",
            "from=1&to=inf",
            "from=2&to=1",
            "from=0&to=1&px=99999",
        ] {
            assert!(
                matches!(RangeQuery::parse(bad), Err(QueryError::BadRequest(_))),
                "{bad}"
            );
        }
    }
}
