//! ELF loading: the checks of an image (x86_64 ELF64 executable, segments inside the partition's
//! loadable memory) are hv-config's, the same the system description's validation runs; this
//! module keeps the parsed segments and copies them into guest memory.

use std::path::{Path, PathBuf};

use hv_config::image::{ImageError, check_layout, inspect, read_image};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use crate::layout::IMAGE_BASE;

/// Errors while loading a guest image.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file is missing, unreadable, not an x86_64 ELF64 executable, or does not fit.
    #[error("image {path}")]
    Invalid {
        /// The image path.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: ImageError,
    },
    /// Writing guest memory failed.
    #[error("{path}: cannot write segment into guest memory")]
    Memory {
        /// The image path.
        path: PathBuf,
        /// Why.
        #[source]
        source: vm_memory::GuestMemoryError,
    },
}

/// A parsed image, ready to be loaded (kept in memory so a reset does not re-read the file).
#[derive(Debug, Clone)]
pub struct GuestImage {
    /// Where it came from.
    pub path: PathBuf,
    /// Entry point.
    pub entry: u64,
    /// Loadable segments.
    pub segments: Vec<Segment>,
}

/// One PT_LOAD segment.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Guest-physical load address.
    pub addr: u64,
    /// Bytes from the file.
    pub data: Vec<u8>,
    /// Size in memory (≥ data.len(); the rest is zero).
    pub mem_size: u64,
}

impl GuestImage {
    /// Reads and checks an image; `load_limit` is the end of loadable memory.
    pub fn from_file(path: &Path, load_limit: u64) -> Result<GuestImage, LoadError> {
        let invalid = |source| LoadError::Invalid {
            path: path.to_owned(),
            source,
        };
        read_image(path).map_err(invalid)?;
        let bytes = std::fs::read(path).map_err(|e| invalid(ImageError::Read(e)))?;
        Self::parse(path, &bytes, load_limit)
    }

    /// Parses and checks image bytes.
    pub fn parse(path: &Path, bytes: &[u8], load_limit: u64) -> Result<GuestImage, LoadError> {
        let invalid = |source| LoadError::Invalid {
            path: path.to_owned(),
            source,
        };
        let info = inspect(bytes).map_err(invalid)?;
        if let Some(e) = check_layout(&info, IMAGE_BASE, load_limit)
            .into_iter()
            .next()
        {
            return Err(invalid(e));
        }
        let segments = info
            .segments
            .iter()
            .map(|s| {
                let data = usize::try_from(s.offset)
                    .ok()
                    .zip(usize::try_from(s.filesz).ok())
                    .and_then(|(start, len)| bytes.get(start..start.checked_add(len)?))
                    .ok_or_else(|| {
                        invalid(ImageError::Malformed("segment outside the file".into()))
                    })?;
                Ok(Segment {
                    addr: s.paddr,
                    data: data.to_vec(),
                    mem_size: s.memsz,
                })
            })
            .collect::<Result<Vec<_>, LoadError>>()?;
        Ok(GuestImage {
            path: path.to_owned(),
            entry: info.entry,
            segments,
        })
    }

    /// Copies the segments into (already zeroed) guest memory.
    pub fn load<M: GuestMemoryBackend>(&self, mem: &M) -> Result<(), LoadError> {
        for segment in &self.segments {
            mem.write_slice(&segment.data, GuestAddress(segment.addr))
                .map_err(|source| LoadError::Memory {
                    path: self.path.clone(),
                    source,
                })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const X86_64: u16 = 62;
    const EXEC: u16 = 2;
    const LOAD: u32 = 1;

    fn elf_header(class: u8, machine: u16, kind: u16) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = class;
        h[5] = 1; // little endian
        h[6] = 1;
        h[16..18].copy_from_slice(&kind.to_le_bytes());
        h[18..20].copy_from_slice(&machine.to_le_bytes());
        h[20..24].copy_from_slice(&1u32.to_le_bytes());
        h[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        h[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        h
    }

    fn with_segment(mut h: Vec<u8>, paddr: u64, memsz: u64) -> Vec<u8> {
        h[24..32].copy_from_slice(&paddr.to_le_bytes()); // e_entry
        h[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        h[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        let mut ph = vec![0u8; 56];
        ph[..4].copy_from_slice(&LOAD.to_le_bytes());
        ph[8..16].copy_from_slice(&120u64.to_le_bytes()); // p_offset
        ph[16..24].copy_from_slice(&paddr.to_le_bytes());
        ph[24..32].copy_from_slice(&paddr.to_le_bytes());
        ph[32..40].copy_from_slice(&8u64.to_le_bytes()); // p_filesz
        ph[40..48].copy_from_slice(&memsz.to_le_bytes());
        h.extend(ph);
        h.extend([0x90u8; 8]);
        h
    }

    fn parse(bytes: &[u8]) -> Result<GuestImage, LoadError> {
        GuestImage::parse(Path::new("t.elf"), bytes, 16 << 20)
    }

    #[test]
    fn accepts_a_minimal_executable() {
        let image = parse(&with_segment(elf_header(2, X86_64, EXEC), 0x10_0000, 16)).unwrap();
        assert_eq!(image.entry, 0x10_0000);
        assert_eq!(image.segments.len(), 1);
        assert_eq!(image.segments[0].data, [0x90; 8]);
    }

    #[test]
    fn rejects_what_is_not_an_x86_64_executable() {
        assert!(matches!(parse(b"hello"), Err(LoadError::Invalid { .. })));
        assert!(matches!(parse(&[]), Err(LoadError::Invalid { .. })));
        assert!(matches!(
            parse(&elf_header(1, X86_64, EXEC)),
            Err(LoadError::Invalid { .. })
        ));
        assert!(matches!(
            parse(&with_segment(elf_header(2, 183, EXEC), 0x10_0000, 16)),
            Err(LoadError::Invalid { .. })
        ));
        assert!(matches!(
            parse(&with_segment(elf_header(2, X86_64, 3), 0x10_0000, 16)),
            Err(LoadError::Invalid { .. })
        ));
    }

    #[test]
    fn rejects_segments_outside_partition_memory() {
        for (addr, size) in [
            (0x1000, 16),
            (16 << 20, 16),
            (0x10_0000, 64 << 20),
            (u64::MAX - 4, 16),
        ] {
            let err = parse(&with_segment(elf_header(2, X86_64, EXEC), addr, size)).unwrap_err();
            assert!(
                matches!(
                    err,
                    LoadError::Invalid {
                        source: ImageError::SegmentOutside { .. },
                        ..
                    }
                ),
                "{addr:#x}: {err}"
            );
        }
    }

    #[test]
    fn truncated_or_random_bytes_never_panic() {
        let good = with_segment(elf_header(2, X86_64, EXEC), 0x10_0000, 16);
        for len in 0..good.len() {
            let _ = parse(&good[..len]);
        }
        let mut seed = 0x1234_5678_9abc_def0u64;
        for _ in 0..2000 {
            let mut bytes = good.clone();
            for _ in 0..4 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let i = (seed as usize) % bytes.len();
                bytes[i] = (seed >> 32) as u8;
            }
            let _ = parse(&bytes);
        }
    }
}
