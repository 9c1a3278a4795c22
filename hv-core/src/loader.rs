//! ELF loading: checks that an image is an x86_64 ELF64 executable whose segments fit the
//! partition, and copies its loadable segments into guest memory.

use std::path::{Path, PathBuf};

use object::elf::{EM_X86_64, ET_EXEC, FileHeader64, PT_LOAD};
use object::read::elf::{FileHeader, ProgramHeader};
use object::Endianness;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use crate::layout::IMAGE_BASE;

/// `e_ident[EI_CLASS]` of a 64-bit ELF file.
const ELFCLASS64: u8 = 2;

/// Errors while loading a guest image.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read image {path}")]
    Read {
        /// The image path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not an ELF file, or a malformed one.
    #[error("{path} is not a valid ELF file: {reason}")]
    NotElf {
        /// The image path.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// An ELF file for another machine or class.
    #[error("{path} is not an x86_64 ELF64 executable ({what})")]
    WrongKind {
        /// The image path.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// A loadable segment falls outside the partition's loadable RAM.
    #[error(
        "{path}: segment at {start:#x}..{end:#x} is outside the partition's loadable memory {limit_start:#x}..{limit_end:#x}"
    )]
    SegmentOutside {
        /// The image path.
        path: PathBuf,
        /// Segment start.
        start: u64,
        /// Segment end (exclusive).
        end: u64,
        /// First loadable address.
        limit_start: u64,
        /// End of loadable memory (below the vCPU stacks).
        limit_end: u64,
    },
    /// Writing guest memory failed.
    #[error("{path}: cannot write segment into guest memory: {source}")]
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
    /// Loadable segments: (guest-physical address, file bytes, memory size).
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
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &bytes, load_limit)
    }

    /// Parses and checks image bytes.
    pub fn parse(path: &Path, bytes: &[u8], load_limit: u64) -> Result<GuestImage, LoadError> {
        let path_buf = path.to_owned();
        let not_elf = |reason: &str| LoadError::NotElf {
            path: path_buf.clone(),
            reason: reason.to_owned(),
        };
        if bytes.len() < 4 || &bytes[..4] != b"\x7fELF" {
            return Err(not_elf("no ELF magic"));
        }
        if bytes.len() > 4 && bytes[4] != ELFCLASS64 {
            return Err(LoadError::WrongKind {
                path: path_buf,
                what: "32-bit ELF".into(),
            });
        }
        let header = FileHeader64::<Endianness>::parse(bytes).map_err(|e| not_elf(&e.to_string()))?;
        let endian = header.endian().map_err(|e| not_elf(&e.to_string()))?;
        if endian != Endianness::Little || header.e_machine(endian) != EM_X86_64 {
            return Err(LoadError::WrongKind {
                path: path_buf,
                what: format!("machine {}", header.e_machine(endian)),
            });
        }
        if header.e_type(endian) != ET_EXEC {
            return Err(LoadError::WrongKind {
                path: path_buf,
                what: format!(
                    "ELF type {} (need a statically linked executable)",
                    header.e_type(endian)
                ),
            });
        }
        let mut segments = Vec::new();
        for ph in header
            .program_headers(endian, bytes)
            .map_err(|e| not_elf(&e.to_string()))?
        {
            if ph.p_type(endian) != PT_LOAD || ph.p_memsz(endian) == 0 {
                continue;
            }
            let addr = ph.p_paddr(endian);
            let mem_size = ph.p_memsz(endian);
            let data = ph.data(endian, bytes).map_err(|()| not_elf("segment data out of file bounds"))?;
            let end = addr.checked_add(mem_size);
            if addr < IMAGE_BASE || end.is_none_or(|end| end > load_limit) || (data.len() as u64) > mem_size {
                return Err(LoadError::SegmentOutside {
                    path: path_buf,
                    start: addr,
                    end: end.unwrap_or(u64::MAX),
                    limit_start: IMAGE_BASE,
                    limit_end: load_limit,
                });
            }
            segments.push(Segment {
                addr,
                data: data.to_vec(),
                mem_size,
            });
        }
        if segments.is_empty() {
            return Err(not_elf("no loadable segments"));
        }
        Ok(GuestImage {
            path: path_buf,
            entry: header.e_entry(endian),
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
        assert!(matches!(parse(b"hello"), Err(LoadError::NotElf { .. })));
        assert!(matches!(parse(&[]), Err(LoadError::NotElf { .. })));
        assert!(matches!(
            parse(&elf_header(1, X86_64, EXEC)),
            Err(LoadError::WrongKind { .. })
        ));
        assert!(matches!(
            parse(&with_segment(elf_header(2, 183, EXEC), 0x10_0000, 16)),
            Err(LoadError::WrongKind { .. })
        ));
        assert!(matches!(
            parse(&with_segment(elf_header(2, X86_64, 3), 0x10_0000, 16)),
            Err(LoadError::WrongKind { .. })
        ));
    }

    #[test]
    fn rejects_segments_outside_partition_memory() {
        for (addr, size) in [(0x1000, 16), (16 << 20, 16), (0x10_0000, 64 << 20), (u64::MAX - 4, 16)] {
            let err = parse(&with_segment(elf_header(2, X86_64, EXEC), addr, size)).unwrap_err();
            assert!(matches!(err, LoadError::SegmentOutside { .. }), "{addr:#x}: {err}");
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
