//! Guest-physical layout rules the system description is checked against; `hv-core`'s layout
//! re-exports the constants both need from here (one source).
//!
//! Every partition sees the same map:
//!
//! | range | what |
//! |---|---|
//! | `0 .. IMAGE_BASE` | boot structures (GDT, TSS, boot info, page tables) |
//! | `IMAGE_BASE .. memory - vcpus * VCPU_STACK_SIZE` | the ELF image's loadable segments |
//! | `memory - vcpus * VCPU_STACK_SIZE .. memory` | one 64 KiB stack per vCPU, top of RAM |
//! | `memory .. IPC_BASE` | free for MMIO devices |
//! | `IPC_BASE .. IPC_END` | IPC channel windows, see [`place_ipc_windows`] |
//! | `IPC_END .. IDENTITY_MAPPED` | free for MMIO devices |

/// Size of a page; RAM, MMIO ranges and IPC windows are multiples of it.
pub const PAGE_SIZE: u64 = 0x1000;
/// ELF images load at or above this address; boot structures live below it.
pub const IMAGE_BASE: u64 = 0x10_0000;
/// Stack per vCPU, at the top of RAM: vCPU i's stack top is `memory - i * VCPU_STACK_SIZE`.
pub const VCPU_STACK_SIZE: u64 = 0x1_0000;
/// IPC shared windows are placed from here upward.
pub const IPC_BASE: u64 = 0x8000_0000;
/// End of the IPC area (exclusive); windows of one partition must fit below it.
pub const IPC_END: u64 = 0x9000_0000;
/// How much the boot page tables identity-map; MMIO ranges must end at or below it.
pub const IDENTITY_MAPPED: u64 = 4 << 30;
/// The vector the UART raises; no other source may use it.
pub const UART_VECTOR: u8 = 36;
/// The first vector a guest may use; 0..=31 are CPU exceptions.
pub const FIRST_VECTOR: u8 = 32;

/// Smallest partition RAM size.
pub const MIN_MEMORY: u64 = 2 << 20;
/// Largest partition RAM size.
pub const MAX_MEMORY: u64 = 1 << 30;
/// Partition RAM size when `memory` is not given.
pub const DEFAULT_MEMORY: u64 = 16 << 20;
/// Largest number of vCPUs per partition.
pub const MAX_VCPUS: u32 = 16;
/// Smallest IPC channel window.
pub const MIN_CHANNEL_SIZE: u64 = 4 << 10;
/// Largest IPC channel window.
pub const MAX_CHANNEL_SIZE: u64 = 16 << 20;
/// Channel window size when `size` is not given.
pub const DEFAULT_CHANNEL_SIZE: u64 = 64 << 10;
/// Channel doorbell vector when `vector` is not given.
pub const DEFAULT_CHANNEL_VECTOR: u8 = 48;
/// Device-model request vector when `request_vector` is not given.
pub const DEFAULT_REQUEST_VECTOR: u8 = 33;
/// Device-model reply timeout when `timeout_ms` is not given.
pub const DEFAULT_TIMEOUT_MS: u64 = 100;
/// Most IPC channels one partition can be an endpoint of: the boot-info block a guest reads has
/// this many channel slots. The other copies of this number are `HV_MAX_IPC` in
/// `guests/sdk/include/hv_abi.h` (checked against this one by a test here) and hv-core's
/// `boot::MAX_IPC` (checked against the header by hv-core's tests).
pub const MAX_CHANNELS_PER_PARTITION: usize = 8;
/// Most devices one partition can see, counting the devices it is the client of and the devices
/// it serves as a device model: the boot-info block has this many device slots. Other copies:
/// `HV_MAX_DEVICES` in `guests/sdk/include/hv_abi.h` and hv-core's `boot::MAX_DEVICES`.
pub const MAX_DEVICES_PER_PARTITION: usize = 8;

// With at most `MAX_CHANNELS_PER_PARTITION` windows of at most `MAX_CHANNEL_SIZE`, a partition's
// windows always fit in the IPC area, so validation needs no separate check for it. Raising
// either limit past this point must bring such a check back.
const _: () = assert!(
    MAX_CHANNELS_PER_PARTITION as u64 * page_align_up(MAX_CHANNEL_SIZE) <= IPC_END - IPC_BASE
);

/// Rounds `value` up to the next multiple of [`PAGE_SIZE`] (saturating).
pub const fn page_align_up(value: u64) -> u64 {
    value.saturating_add(PAGE_SIZE - 1) & !(PAGE_SIZE - 1)
}

/// The range `[IMAGE_BASE, end)` an image's loadable segments must fall in, or `None` if the
/// stacks leave no room at all.
pub fn image_window(memory: u64, vcpus: u32) -> Option<(u64, u64)> {
    let end = memory.checked_sub(u64::from(vcpus) * VCPU_STACK_SIZE)?;
    (end > IMAGE_BASE).then_some((IMAGE_BASE, end))
}

/// Places IPC windows for one partition: the given `(channel index, size)` pairs, in channel
/// declaration order, get consecutive addresses from [`IPC_BASE`], each slot rounded up to
/// [`PAGE_SIZE`]. Returns `(channel index, guest-physical address, size)` for each window; a window
/// whose slot would end past [`IPC_END`] is still placed (callers validate the total with
/// [`ipc_fits`]).
pub fn place_ipc_windows(
    channels: impl IntoIterator<Item = (usize, u64)>,
) -> Vec<(usize, u64, u64)> {
    let mut next = IPC_BASE;
    channels
        .into_iter()
        .map(|(index, size)| {
            let gpa = next;
            next = next.saturating_add(page_align_up(size));
            (index, gpa, size)
        })
        .collect()
}

/// True if a window placed at `gpa` with `size` bytes ends at or below [`IPC_END`].
pub fn ipc_fits(gpa: u64, size: u64) -> bool {
    gpa.checked_add(page_align_up(size))
        .is_some_and(|end| end <= IPC_END)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn areas_are_ordered() {
        const {
            assert!(MAX_MEMORY <= IPC_BASE);
            assert!(IPC_BASE < IPC_END && IPC_END <= IDENTITY_MAPPED);
            assert!(IPC_END - IPC_BASE == 256 << 20);
            assert!(MIN_MEMORY - MAX_VCPUS as u64 * VCPU_STACK_SIZE >= IMAGE_BASE);
        }
    }

    /// The value of `#define NAME <value>` in the guests' ABI header.
    fn header_define(name: &str) -> usize {
        let header = include_str!("../../guests/sdk/include/hv_abi.h");
        let prefix = format!("#define {name} ");
        let line = header
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("{name} is not defined in hv_abi.h"));
        line.trim().parse().expect("a decimal constant")
    }

    #[test]
    fn boot_info_limits_match_the_guest_abi() {
        assert_eq!(header_define("HV_MAX_IPC"), MAX_CHANNELS_PER_PARTITION);
        assert_eq!(header_define("HV_MAX_DEVICES"), MAX_DEVICES_PER_PARTITION);
    }

    #[test]
    fn ipc_windows_are_consecutive_and_page_rounded() {
        let placed = place_ipc_windows([(0, 0x1000), (3, 0x1800), (4, 0x2000)]);
        assert_eq!(
            placed,
            vec![
                (0, IPC_BASE, 0x1000),
                (3, IPC_BASE + 0x1000, 0x1800),
                (4, IPC_BASE + 0x3000, 0x2000)
            ]
        );
        assert!(ipc_fits(IPC_END - 0x1000, 0x1000));
        assert!(!ipc_fits(IPC_END - 0x1000, 0x1001));
    }

    #[test]
    fn image_window_leaves_room_for_stacks() {
        assert_eq!(
            image_window(16 << 20, 1),
            Some((IMAGE_BASE, (16 << 20) - 0x1_0000))
        );
        assert_eq!(image_window(2 << 20, 16), None);
        assert_eq!(page_align_up(1), PAGE_SIZE);
        assert_eq!(page_align_up(0), 0);
    }
}
