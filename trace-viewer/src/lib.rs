//! hvdk trace files on the host: [`Trace::open`] loads one (hv-link's trace format, as written by
//! `hv trace record`) whole, [`stream::TraceStream`] reads one in time order with bounded memory
//! whatever its length; [`stats`] analyses it and [`export`] turns it into other tools' formats
//! (Perfetto's protobuf and JSON traces, CSV), streaming; [`serve`] shows it as a web timeline
//! on 127.0.0.1. [`synth`] generates large realistic traces for tests and benchmarks.

pub mod export;
pub mod index;
pub mod live;
pub mod perfetto_proto;
pub mod query;
pub mod serve;
pub mod stats;
pub mod stream;
pub mod synth;

use std::path::{Path, PathBuf};

use hv_link::trace::{TraceError, TraceHeader, TraceReader, TraceRecord};

/// Why a trace could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ViewerError {
    /// The file cannot be opened.
    #[error("cannot open {}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid trace (or is cut short).
    #[error("{} is not a valid hvdk trace", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: TraceError,
    },
    /// A record names a partition the header does not list.
    #[error("{}: record for partition {partition}, which the header does not list", path.display())]
    UnknownPartition {
        /// The file.
        path: PathBuf,
        /// The partition id.
        partition: u32,
    },
}

/// A whole trace in memory: its header and every record, in time order.
#[derive(Debug, Clone)]
pub struct Trace {
    /// System, clock and partitions.
    pub header: TraceHeader,
    /// Records sorted by timestamp (stable: records of one vCPU keep their order).
    pub records: Vec<TraceRecord>,
}

impl Trace {
    /// Loads a trace file.
    pub fn open(path: &Path) -> Result<Trace, ViewerError> {
        let file = std::fs::File::open(path).map_err(|source| ViewerError::Open {
            path: path.to_owned(),
            source,
        })?;
        let format = |source| ViewerError::Format {
            path: path.to_owned(),
            source,
        };
        let mut reader = TraceReader::new(std::io::BufReader::new(file)).map_err(format)?;
        let mut records = Vec::new();
        while let Some(batch) = reader.next_batch().map_err(format)? {
            records.extend(batch);
        }
        let trace = Trace::new(reader.header().clone(), records);
        if let Some(r) = trace
            .records
            .iter()
            .find(|r| trace.partition_name(r.partition).is_none())
        {
            return Err(ViewerError::UnknownPartition {
                path: path.to_owned(),
                partition: r.partition,
            });
        }
        Ok(trace)
    }

    /// A trace from a header and records in any order.
    pub fn new(header: TraceHeader, mut records: Vec<TraceRecord>) -> Trace {
        records.sort_by_key(|r| r.timestamp);
        Trace { header, records }
    }

    /// The name of partition `id`, when the header lists it.
    pub fn partition_name(&self, id: u32) -> Option<&str> {
        self.header
            .partitions
            .iter()
            .find(|p| p.id == id)
            .map(|p| p.name.as_str())
    }

    /// First and last timestamp (ns on the trace clock); (0, 0) for an empty trace.
    pub fn span(&self) -> (u64, u64) {
        match (self.records.first(), self.records.last()) {
            (Some(a), Some(b)) => (a.timestamp, b.timestamp),
            _ => (0, 0),
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use hv_link::trace::{RecordKind, TraceHeader, TracePartition, TraceRecord};

    /// A header with partitions `a` (1 vCPU) and `b` (2 vCPUs).
    pub fn header() -> TraceHeader {
        TraceHeader {
            system: "test".into(),
            partitions: vec![
                TracePartition {
                    id: 0,
                    name: "a".into(),
                    vcpus: 1,
                    image: "a.elf".into(),
                },
                TracePartition {
                    id: 1,
                    name: "b".into(),
                    vcpus: 2,
                    image: "b.elf".into(),
                },
            ],
            ..TraceHeader::default()
        }
    }

    /// A record at `t` ns.
    pub fn rec(t: u64, partition: u32, vcpu: u16, kind: RecordKind, a: u64, b: u64) -> TraceRecord {
        TraceRecord {
            timestamp: t,
            kind: kind as u16,
            vcpu,
            partition,
            a,
            b,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use hv_link::trace::{RecordKind, TraceWriter};

    #[test]
    fn open_reads_what_the_writer_wrote_in_time_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.hvt");
        let mut w = TraceWriter::new(std::fs::File::create(&path).unwrap(), &header()).unwrap();
        w.write_batch(&[rec(20, 1, 0, RecordKind::VmEntry, 0, 0)])
            .unwrap();
        w.write_batch(&[rec(10, 0, 0, RecordKind::VmEntry, 0, 0)])
            .unwrap();
        w.finish().unwrap();
        let trace = Trace::open(&path).unwrap();
        assert_eq!(trace.header.system, "test");
        let times: Vec<u64> = trace.records.iter().map(|r| r.timestamp).collect();
        assert_eq!(times, [10, 20]);
        assert_eq!(trace.span(), (10, 20));
        assert_eq!(trace.partition_name(1), Some("b"));
    }

    #[test]
    fn bad_files_get_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.hvt");
        assert!(matches!(
            Trace::open(&missing),
            Err(ViewerError::Open { .. })
        ));
        let junk = dir.path().join("junk.hvt");
        std::fs::write(&junk, b"not a trace at all").unwrap();
        let err = Trace::open(&junk).unwrap_err();
        assert!(matches!(err, ViewerError::Format { .. }), "{err}");
        assert!(
            err.to_string().contains("is not a valid hvdk trace"),
            "{err}"
        );
        // Cut short in the middle of a batch.
        let cut = dir.path().join("cut.hvt");
        let mut w = TraceWriter::new(Vec::new(), &header()).unwrap();
        w.write_batch(&[rec(1, 0, 0, RecordKind::VmEntry, 0, 0)])
            .unwrap();
        let bytes = w.finish().unwrap();
        std::fs::write(&cut, &bytes[..bytes.len() - 5]).unwrap();
        assert!(matches!(Trace::open(&cut), Err(ViewerError::Format { .. })));
        // A record of a partition the header does not have.
        let stray = dir.path().join("stray.hvt");
        let mut w = TraceWriter::new(std::fs::File::create(&stray).unwrap(), &header()).unwrap();
        w.write_batch(&[rec(1, 7, 0, RecordKind::VmEntry, 0, 0)])
            .unwrap();
        w.finish().unwrap();
        assert!(matches!(
            Trace::open(&stray),
            Err(ViewerError::UnknownPartition { partition: 7, .. })
        ));
    }
}
