//! Guest-virtual to guest-physical translation by walking the guest's own page tables
//! (x86_64 4-level paging with 4 KiB, 2 MiB and 1 GiB pages), for debugger memory access.

/// The control-register state a walk depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PagingState {
    /// CR0.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// EFER.
    pub efer: u64,
}

const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LMA: u64 = 1 << 10;
const PRESENT: u64 = 1;
const HUGE: u64 = 1 << 7;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Why an address has no translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WalkError {
    /// A table entry on the way is not present.
    #[error("{va:#x} is not mapped")]
    NotMapped {
        /// The address.
        va: u64,
    },
    /// A page table could not be read (outside guest memory).
    #[error("page table at {table:#x} is not in guest memory")]
    BadTable {
        /// Physical address of the unreadable entry.
        table: u64,
    },
    /// 32-bit or PAE paging without long mode (no hvdk guest runs like that).
    #[error("paging mode without long mode is not supported")]
    UnsupportedMode,
}

/// A translation: the physical address and how many bytes remain in its page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    /// Guest-physical address.
    pub phys: u64,
    /// Bytes from `phys` to the end of the page.
    pub remaining: u64,
}

/// Translates `va`; `read_u64` reads one 8-byte entry at a guest-physical address.
pub fn translate(
    paging: PagingState,
    va: u64,
    read_u64: impl Fn(u64) -> Option<u64>,
) -> Result<Translation, WalkError> {
    if paging.cr0 & CR0_PG == 0 {
        return Ok(Translation {
            phys: va,
            remaining: 0x1000 - (va & 0xfff),
        });
    }
    if paging.efer & EFER_LMA == 0 || paging.cr4 & CR4_PAE == 0 {
        return Err(WalkError::UnsupportedMode);
    }
    let mut table = paging.cr3 & ADDR_MASK;
    for level in (0..4).rev() {
        let shift = 12 + 9 * level;
        let index = (va >> shift) & 0x1ff;
        let entry_addr = table + index * 8;
        let entry = read_u64(entry_addr).ok_or(WalkError::BadTable { table: entry_addr })?;
        if entry & PRESENT == 0 {
            return Err(WalkError::NotMapped { va });
        }
        let leaf = level == 0 || ((level == 1 || level == 2) && entry & HUGE != 0);
        if leaf {
            let page_size = 1u64 << shift;
            let offset = va & (page_size - 1);
            return Ok(Translation {
                phys: (entry & ADDR_MASK & !(page_size - 1)) + offset,
                remaining: page_size - offset,
            });
        }
        table = entry & ADDR_MASK;
    }
    Err(WalkError::NotMapped { va })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const LONG: PagingState = PagingState {
        cr0: CR0_PG | 1,
        cr3: 0x1000,
        cr4: CR4_PAE,
        efer: EFER_LMA | (1 << 8),
    };

    /// Tables: PML4 at 0x1000; PDPT at 0x2000 (entry 1: a 1 GiB page at 0x4000_0000);
    /// PD at 0x3000 (entry 0: a 2 MiB page at 0x20_0000; entry 1: PT at 0x4000);
    /// PT at 0x4000 (entry 5: 4 KiB page at 0x9000; entry 6 absent).
    fn tables() -> HashMap<u64, u64> {
        HashMap::from([
            (0x1000, 0x2000 | PRESENT),
            (0x2000, 0x3000 | PRESENT),
            (0x2008, 0x4000_0000 | PRESENT | HUGE),
            (0x3000, 0x20_0000 | PRESENT | HUGE),
            (0x3008, 0x4000 | PRESENT),
            (0x4000 + 5 * 8, 0x9000 | PRESENT),
        ])
    }

    fn walk(va: u64) -> Result<Translation, WalkError> {
        let t = tables();
        translate(LONG, va, |a| Some(t.get(&a).copied().unwrap_or(0)))
    }

    #[test]
    fn pages_of_every_size() {
        assert_eq!(
            walk(0x1234).unwrap(),
            Translation {
                phys: 0x20_1234,
                remaining: 0x20_0000 - 0x1234
            }
        );
        assert_eq!(
            walk(0x20_5010).unwrap(),
            Translation {
                phys: 0x9010,
                remaining: 0xff0
            }
        );
        assert_eq!(walk(0x4000_0000 + 0x123).unwrap().phys, 0x4000_0123);
        assert_eq!(walk(0x4000_0000).unwrap().remaining, 1 << 30);
    }

    #[test]
    fn unmapped_and_unreadable_are_errors() {
        assert_eq!(walk(0x20_6000), Err(WalkError::NotMapped { va: 0x20_6000 }));
        assert_eq!(
            walk(0x80_0000_0000),
            Err(WalkError::NotMapped { va: 0x80_0000_0000 })
        );
        assert_eq!(
            translate(LONG, 0, |_| None),
            Err(WalkError::BadTable { table: 0x1000 })
        );
    }

    #[test]
    fn no_paging_is_identity() {
        let flat = PagingState {
            cr0: 1,
            cr3: 0,
            cr4: 0,
            efer: 0,
        };
        assert_eq!(translate(flat, 0x12345, |_| None).unwrap().phys, 0x12345);
    }
}
