//! Guest image checks: is the file an ELF64 x86_64 executable whose loadable segments fit the layout.

use std::fs;
use std::io;
use std::path::Path;

use object::read::elf::{FileHeader, ProgramHeader};
use object::{Endianness, elf};

/// Files larger than this cannot be a guest image (partition RAM is at most 1 GiB).
pub(crate) const MAX_IMAGE_FILE: u64 = 2 << 30;

/// Why an image cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// No file at the path.
    #[error("image does not exist")]
    Missing,
    /// The path names a directory, device or other non-regular file.
    #[error("image is not a regular file")]
    NotAFile,
    /// The file is bigger than any partition's RAM.
    #[error("image file is too large ({0} bytes)")]
    TooLarge(u64),
    /// Reading the file failed.
    #[error("cannot read image")]
    Read(#[source] io::Error),
    /// No ELF magic number.
    #[error("image is not an ELF file")]
    NotElf,
    /// ELFCLASS32 (or an unknown class).
    #[error("image is not a 64-bit ELF file")]
    Not64Bit,
    /// Big-endian data encoding.
    #[error("image is a big-endian ELF file")]
    BigEndian,
    /// `e_machine` is not `EM_X86_64`.
    #[error("image is built for ELF machine {0}, not x86_64")]
    WrongMachine(u16),
    /// `ET_DYN`: a position-independent executable or shared object.
    #[error("image is position-independent (ET_DYN), not a fixed-address executable")]
    PositionIndependent,
    /// Any other `e_type` (relocatable object, core file, ...).
    #[error("image is not an executable (ELF type {0})")]
    NotExecutable(u16),
    /// Headers the `object` crate could not read.
    #[error("image is a malformed ELF file: {0}")]
    Malformed(String),
    /// A `PT_LOAD` segment's file bytes lie past the end of the file or exceed its memory size.
    #[error("image segment {0} has inconsistent file offset or sizes")]
    BadSegment(usize),
    /// No `PT_LOAD` program header with a non-zero memory size.
    #[error("image has no loadable segments")]
    NoLoadableSegments,
    /// The entry point is not inside any loadable segment.
    #[error("image entry point {0:#x} is not inside a loadable segment")]
    EntryOutside(u64),
    /// A loadable segment falls outside the RAM available for the image.
    #[error(
        "image segment {index} at {start:#x}..{end:#x} lies outside the image area {low:#x}..{high:#x}"
    )]
    SegmentOutside {
        /// Program header index.
        index: usize,
        /// First guest-physical byte.
        start: u64,
        /// End (exclusive) of the segment in memory.
        end: u64,
        /// Lowest allowed address.
        low: u64,
        /// End (exclusive) of the allowed area.
        high: u64,
    },
}

impl ImageError {
    /// A hint on how to fix the problem, if there is a useful one.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            ImageError::Missing => Some(
                "relative image paths are relative to the directory of the system description; is the guest built?",
            ),
            ImageError::NotElf
            | ImageError::Not64Bit
            | ImageError::BigEndian
            | ImageError::WrongMachine(_) => Some(
                "partitions boot straight into x86_64 long mode: build the guest as an ELF64 x86_64 executable",
            ),
            ImageError::PositionIndependent | ImageError::NotExecutable(_) => Some(
                "link the guest as a static, fixed-address executable (e.g. `-static -no-pie -Wl,-Ttext-segment=0x100000`)",
            ),
            ImageError::SegmentOutside { start, low, .. } if start < low => Some(
                "images load at or above 0x100000; note that `-Wl,-Ttext=0x100000` puts the ELF headers in a segment one page lower: link with `-Wl,-Ttext-segment=0x100000` or a linker script instead",
            ),
            ImageError::SegmentOutside { .. } => Some(
                "images must end below the vCPU stacks at memory - vcpus * 64 KiB: give the partition more memory or link the image lower",
            ),
            _ => None,
        }
    }
}

/// A `PT_LOAD` program header of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadSegment {
    /// Program header index.
    pub index: usize,
    /// File offset of the segment's bytes.
    pub offset: u64,
    /// Virtual address (equal to the physical one under the identity map).
    pub vaddr: u64,
    /// Guest-physical load address.
    pub paddr: u64,
    /// Bytes taken from the file.
    pub filesz: u64,
    /// Bytes occupied in memory (the rest is zero-filled).
    pub memsz: u64,
}

/// What the checks learned about an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// Entry point.
    pub entry: u64,
    /// Loadable segments with a non-zero memory size.
    pub segments: Vec<LoadSegment>,
}

/// Reads the file at `path` and checks it is an ELF64 x86_64 executable (see [`inspect`]).
/// Only regular files are read, so a path like `/dev/zero` is refused rather than read forever.
pub fn read_image(path: &Path) -> Result<ImageInfo, ImageError> {
    let meta = fs::metadata(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => ImageError::Missing,
        _ => ImageError::Read(e),
    })?;
    if !meta.is_file() {
        return Err(ImageError::NotAFile);
    }
    if meta.len() > MAX_IMAGE_FILE {
        return Err(ImageError::TooLarge(meta.len()));
    }
    inspect(&fs::read(path).map_err(ImageError::Read)?)
}

/// Checks that `data` is a little-endian ELF64 x86_64 `ET_EXEC` file with consistent `PT_LOAD`
/// segments and an entry point inside one of them.
pub fn inspect(data: &[u8]) -> Result<ImageInfo, ImageError> {
    if data.get(..4) != Some(&elf::ELFMAG[..]) {
        return Err(ImageError::NotElf);
    }
    // e_ident[EI_CLASS] and e_ident[EI_DATA].
    match data.get(4) {
        Some(&class) if class == elf::ELFCLASS64.0 => {}
        Some(_) => return Err(ImageError::Not64Bit),
        None => return Err(ImageError::Malformed("truncated header".into())),
    }
    if data.get(5) == Some(&elf::ELFDATA2MSB.0) {
        return Err(ImageError::BigEndian);
    }
    let malformed = |e: object::read::Error| ImageError::Malformed(e.to_string());
    let header = elf::FileHeader64::<Endianness>::parse(data).map_err(malformed)?;
    let endian = header.endian().map_err(malformed)?;
    let machine = header.e_machine(endian);
    if machine != elf::EM_X86_64 {
        return Err(ImageError::WrongMachine(machine.0));
    }
    match header.e_type(endian) {
        elf::ET_EXEC => {}
        elf::ET_DYN => return Err(ImageError::PositionIndependent),
        other => return Err(ImageError::NotExecutable(other.0)),
    }
    let mut segments = Vec::new();
    for (index, ph) in header
        .program_headers(endian, data)
        .map_err(malformed)?
        .iter()
        .enumerate()
    {
        if ph.p_type(endian) != elf::PT_LOAD {
            continue;
        }
        let segment = LoadSegment {
            index,
            offset: ph.p_offset(endian),
            vaddr: ph.p_vaddr(endian),
            paddr: ph.p_paddr(endian),
            filesz: ph.p_filesz(endian),
            memsz: ph.p_memsz(endian),
        };
        let file_end = segment.offset.checked_add(segment.filesz);
        if segment.filesz > segment.memsz || file_end.is_none_or(|end| end > data.len() as u64) {
            return Err(ImageError::BadSegment(index));
        }
        if segment.memsz > 0 {
            segments.push(segment);
        }
    }
    if segments.is_empty() {
        return Err(ImageError::NoLoadableSegments);
    }
    let entry = header.e_entry(endian);
    let inside = |s: &LoadSegment| entry >= s.vaddr && entry - s.vaddr < s.memsz;
    if !segments.iter().any(inside) {
        return Err(ImageError::EntryOutside(entry));
    }
    Ok(ImageInfo { entry, segments })
}

/// Every segment of `info` whose guest-physical range leaves `[low, high)`.
pub fn check_layout(info: &ImageInfo, low: u64, high: u64) -> Vec<ImageError> {
    info.segments
        .iter()
        .filter_map(|s| {
            let end = s.paddr.saturating_add(s.memsz);
            (s.paddr < low || end > high).then_some(ImageError::SegmentOutside {
                index: s.index,
                start: s.paddr,
                end,
                low,
                high,
            })
        })
        .collect()
}

/// Builds small ELF files for tests.
#[cfg(test)]
pub(crate) mod test_elf {
    /// One `PT_LOAD` segment: physical (= virtual) address, memory size, file size.
    #[derive(Clone, Copy)]
    pub struct Seg {
        pub addr: u64,
        pub memsz: u64,
        pub filesz: u64,
    }

    /// An ELF64 file with the given class byte, machine, type, entry and `PT_LOAD` segments.
    pub fn build(class: u8, machine: u16, e_type: u16, entry: u64, segs: &[Seg]) -> Vec<u8> {
        let phoff = 64u64;
        let mut out = Vec::new();
        out.extend_from_slice(&[0x7f, b'E', b'L', b'F', class, 1, 1, 0]);
        out.extend_from_slice(&[0; 8]);
        out.extend_from_slice(&e_type.to_le_bytes());
        out.extend_from_slice(&machine.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&entry.to_le_bytes());
        out.extend_from_slice(&phoff.to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
        out.extend_from_slice(&0u32.to_le_bytes()); // e_flags
        out.extend_from_slice(&64u16.to_le_bytes()); // e_ehsize
        out.extend_from_slice(&56u16.to_le_bytes()); // e_phentsize
        out.extend_from_slice(&(segs.len() as u16).to_le_bytes());
        out.extend_from_slice(&[0; 6]); // e_shentsize, e_shnum, e_shstrndx
        let mut offset = phoff + 56 * segs.len() as u64;
        for s in segs {
            out.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
            out.extend_from_slice(&5u32.to_le_bytes()); // R+X
            for word in [offset, s.addr, s.addr, s.filesz, s.memsz, 0x1000] {
                out.extend_from_slice(&word.to_le_bytes());
            }
            offset += s.filesz;
        }
        for s in segs {
            out.extend(std::iter::repeat_n(0x90u8, s.filesz as usize));
        }
        out
    }

    /// A valid x86_64 executable with one 4 KiB segment at `addr`, entry at its start.
    pub fn executable_at(addr: u64) -> Vec<u8> {
        build(
            2,
            62,
            2,
            addr,
            &[Seg {
                addr,
                memsz: 0x1000,
                filesz: 0x10,
            }],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::test_elf::{Seg, build, executable_at};
    use super::*;

    #[test]
    fn accepts_a_fixed_address_x86_64_executable() {
        let info = inspect(&executable_at(0x10_0000)).unwrap();
        assert_eq!(info.entry, 0x10_0000);
        assert_eq!(info.segments.len(), 1);
        assert_eq!(info.segments[0].paddr, 0x10_0000);
        assert!(check_layout(&info, 0x10_0000, 0x20_0000).is_empty());
    }

    #[test]
    fn rejects_what_cannot_boot() {
        let seg = [Seg {
            addr: 0x10_0000,
            memsz: 0x1000,
            filesz: 0,
        }];
        assert!(matches!(inspect(b"#!/bin/sh\n"), Err(ImageError::NotElf)));
        assert!(matches!(inspect(b""), Err(ImageError::NotElf)));
        assert!(matches!(inspect(b"\x7fELF"), Err(ImageError::Malformed(_))));
        assert!(matches!(
            inspect(&build(1, 62, 2, 0x10_0000, &seg)),
            Err(ImageError::Not64Bit)
        ));
        assert!(matches!(
            inspect(&build(2, 183, 2, 0x10_0000, &seg)),
            Err(ImageError::WrongMachine(183))
        ));
        assert!(matches!(
            inspect(&build(2, 62, 3, 0x10_0000, &seg)),
            Err(ImageError::PositionIndependent)
        ));
        assert!(matches!(
            inspect(&build(2, 62, 1, 0x10_0000, &seg)),
            Err(ImageError::NotExecutable(1))
        ));
        assert!(matches!(
            inspect(&build(2, 62, 2, 0x10_0000, &[])),
            Err(ImageError::NoLoadableSegments)
        ));
        assert!(matches!(
            inspect(&build(2, 62, 2, 0x5000, &seg)),
            Err(ImageError::EntryOutside(0x5000))
        ));
        let mut truncated = executable_at(0x10_0000);
        truncated.truncate(100);
        assert!(matches!(
            inspect(&truncated),
            Err(ImageError::Malformed(_) | ImageError::BadSegment(_))
        ));
        let bad = [Seg {
            addr: 0x10_0000,
            memsz: 0x10,
            filesz: 0x20,
        }];
        assert!(matches!(
            inspect(&build(2, 62, 2, 0x10_0000, &bad)),
            Err(ImageError::BadSegment(0))
        ));
    }

    #[test]
    fn reports_each_segment_outside_the_window() {
        let segs = [
            Seg {
                addr: 0x8000,
                memsz: 0x1000,
                filesz: 0,
            },
            Seg {
                addr: 0x10_0000,
                memsz: 0x1000,
                filesz: 0,
            },
            Seg {
                addr: 0xF0_0000,
                memsz: 0x20_0000,
                filesz: 0,
            },
        ];
        let info = inspect(&build(2, 62, 2, 0x10_0000, &segs)).unwrap();
        let problems = check_layout(&info, 0x10_0000, 0xFF_0000);
        assert_eq!(problems.len(), 2);
        assert_eq!(
            problems[1].to_string(),
            "image segment 2 at 0xf00000..0x1100000 lies outside the image area 0x100000..0xff0000"
        );
    }

    #[test]
    fn reads_only_regular_files() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            read_image(&dir.path().join("nope.elf")),
            Err(ImageError::Missing)
        ));
        assert!(matches!(read_image(dir.path()), Err(ImageError::NotAFile)));
        let path = dir.path().join("ok.elf");
        std::fs::write(&path, executable_at(0x20_0000)).unwrap();
        assert_eq!(read_image(&path).unwrap().entry, 0x20_0000);
    }
}
