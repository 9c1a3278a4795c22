//! A device bus per partition and address space (port I/O or MMIO): devices see offsets inside
//! their range, never absolute addresses; overlapping ranges are refused; unmapped reads return
//! zeros (all ones for port I/O, as on a PC) and are counted.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A device on a bus.
pub trait BusDevice: Send {
    /// Reads `data.len()` bytes at `offset` inside the device's range.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Writes `data` at `offset` inside the device's range.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// Errors while building a bus.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    /// The new range overlaps one already on the bus.
    #[error("range {base:#x}+{len:#x} overlaps a device already at {other:#x}")]
    Overlap {
        /// New range base.
        base: u64,
        /// New range length.
        len: u64,
        /// Base of the device in the way.
        other: u64,
    },
    /// A zero-length range.
    #[error("range at {0:#x} is empty")]
    Empty(u64),
}

struct Entry {
    len: u64,
    device: Arc<Mutex<dyn BusDevice>>,
}

/// Address ranges mapped to devices.
#[derive(Default)]
pub struct Bus {
    ranges: BTreeMap<u64, Entry>,
    unmapped: AtomicU64,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.ranges.iter().map(|(b, e)| (b, e.len)))
            .finish()
    }
}

impl Bus {
    /// Adds a device at `base..base+len`.
    pub fn insert(
        &mut self,
        base: u64,
        len: u64,
        device: Arc<Mutex<dyn BusDevice>>,
    ) -> Result<(), BusError> {
        if len == 0 {
            return Err(BusError::Empty(base));
        }
        let end = base.saturating_add(len);
        if let Some((other, _)) = self
            .ranges
            .range(..end)
            .next_back()
            .filter(|(b, e)| b.saturating_add(e.len) > base)
        {
            return Err(BusError::Overlap {
                base,
                len,
                other: *other,
            });
        }
        self.ranges.insert(base, Entry { len, device });
        Ok(())
    }

    fn find(&self, addr: u64, size: usize) -> Option<(u64, &Entry)> {
        let (base, entry) = self.ranges.range(..=addr).next_back()?;
        let offset = addr - base;
        (offset + size as u64 <= entry.len).then_some((offset, entry))
    }

    /// Reads from the device at `addr`; false when nothing is mapped there (data is then filled
    /// with `fill`).
    pub fn read(&self, addr: u64, data: &mut [u8], fill: u8) -> bool {
        match self.find(addr, data.len()) {
            Some((offset, entry)) => {
                lock(&entry.device).read(offset, data);
                true
            }
            None => {
                data.fill(fill);
                self.unmapped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Writes to the device at `addr`; false when nothing is mapped there (the write is dropped).
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((offset, entry)) => {
                lock(&entry.device).write(offset, data);
                true
            }
            None => {
                self.unmapped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Accesses to unmapped addresses so far.
    pub fn unmapped_accesses(&self) -> u64 {
        self.unmapped.load(Ordering::Relaxed)
    }
}

/// Locks a device, recovering from a poisoned lock (a device must not stay dead because another
/// vCPU thread panicked while holding it).
fn lock(device: &Mutex<dyn BusDevice>) -> std::sync::MutexGuard<'_, dyn BusDevice + 'static> {
    device.lock().unwrap_or_else(|poison| poison.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder(Vec<(u64, Vec<u8>)>);
    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.0.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn devices_see_offsets() {
        let device = Arc::new(Mutex::new(Recorder::default()));
        let mut bus = Bus::default();
        bus.insert(0x3f8, 8, device.clone()).unwrap();
        let mut data = [0u8; 1];
        assert!(bus.read(0x3fd, &mut data, 0xff));
        assert_eq!(data, [5]);
        assert!(bus.write(0x3f8, b"x"));
        assert_eq!(device.lock().unwrap().0, [(0, vec![b'x'])]);
    }

    #[test]
    fn overlaps_are_refused() {
        let mut bus = Bus::default();
        let d = || Arc::new(Mutex::new(Recorder::default())) as Arc<Mutex<dyn BusDevice>>;
        bus.insert(0x1000, 0x100, d()).unwrap();
        for (base, len) in [(0x1000, 1), (0xfff, 2), (0x10ff, 0x10), (0x800, 0x1000)] {
            assert!(
                matches!(bus.insert(base, len, d()), Err(BusError::Overlap { .. })),
                "{base:#x}"
            );
        }
        bus.insert(0x1100, 0x100, d()).unwrap();
        bus.insert(0xf00, 0x100, d()).unwrap();
        assert_eq!(bus.insert(0, 0, d()), Err(BusError::Empty(0)));
    }

    #[test]
    fn unmapped_and_straddling_accesses_are_counted() {
        let mut bus = Bus::default();
        bus.insert(0x1000, 4, Arc::new(Mutex::new(Recorder::default())))
            .unwrap();
        let mut data = [0u8; 4];
        assert!(!bus.read(0x2000, &mut data, 0));
        assert_eq!(data, [0; 4]);
        assert!(
            !bus.read(0x1002, &mut data, 0xff),
            "crosses the end of the range"
        );
        assert_eq!(data, [0xff; 4]);
        assert!(!bus.write(u64::MAX, &[1]));
        assert_eq!(bus.unmapped_accesses(), 3);
    }
}
