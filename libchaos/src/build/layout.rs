//! Where a 64-bit PV guest's boot data goes, in the order libxc allocates it
//! (xg_dom_core.c / xg_dom_x86.c): kernel segments, ramdisk, p2m list, start_info, xenstore
//! ring (or the NoXS device page), console ring, [NoXS control pages,] bootstrap page tables,
//! boot stack. Guest pfn `n` is mapped at virtual
//! `virt_base + n * 4096`; the bootstrap page tables map every page from pfn 0 up to a 4 MiB
//! aligned virtual end that leaves at least 512 KiB of slack past the boot stack (Linux and
//! Mini-OS build their own tables from pages in that slack), clamped to the guest's memory.

use crate::hypervisor::PAGE_SIZE;
use crate::image::PvAddrs;

use super::BuildError;

const PAGE: u64 = PAGE_SIZE as u64;
/// Slack libxc maps past the boot stack.
pub const PADDING_PAGES: u64 = (512 * 1024) / PAGE;
/// The initial mapping ends on a 4 MiB virtual boundary (if memory allows).
pub const MAPPING_ALIGN: u64 = 4 << 20;
/// x86_64 virtual addresses are 48 bits wide (4-level paging).
const VADDR_MASK: u64 = (1 << 48) - 1;

/// A run of consecutive guest pfns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PfnRange {
    pub start: u64,
    pub count: u64,
}

impl PfnRange {
    pub fn end(&self) -> u64 {
        self.start + self.count
    }

    pub fn contains(&self, pfn: u64) -> bool {
        pfn >= self.start && pfn < self.end()
    }
}

/// The placement of everything the PV builder writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvLayout {
    pub virt_base: u64,
    pub nr_pages: u64,
    /// Pages holding the kernel's segments, `[virt_kstart, virt_kend)` rounded out to pages.
    pub kernel: PfnRange,
    pub ramdisk: Option<PfnRange>,
    /// The p2m list (`mfn_list`): one 64-bit mfn per guest pfn.
    pub p2m: PfnRange,
    pub start_info_pfn: u64,
    /// The Xenstore ring, or the NoXS device page.
    pub store_pfn: u64,
    pub console_pfn: u64,
    /// NoXS control pages (none on the Xenstore plane).
    pub ctrl: PfnRange,
    /// Bootstrap page tables: the L4, then the L3s, the L2s and the L1s.
    pub page_tables: PfnRange,
    /// Number of tables per level, `[L1, L2, L3, L4]`.
    pub tables: [u64; 4],
    pub stack_pfn: u64,
    /// Pages mapped by the bootstrap tables, from pfn 0 on.
    pub mapped_pages: u64,
}

impl PvLayout {
    /// Virtual address of a guest pfn (valid for pfns below `mapped_pages`).
    pub fn vaddr(&self, pfn: u64) -> u64 {
        self.virt_base.wrapping_add(pfn.wrapping_mul(PAGE))
    }

    /// First pfn the builder writes (everything up to the stack is written).
    pub fn first_written_pfn(&self) -> u64 {
        self.kernel.start
    }

    /// One past the last pfn the builder writes (the boot stack).
    pub fn end_written_pfn(&self) -> u64 {
        self.stack_pfn + 1
    }

    /// Pfn of table `index` (0-based, counted from the lowest address it covers) at `level`
    /// (1 = L1 .. 4 = L4).
    pub fn table_pfn(&self, level: usize, index: u64) -> u64 {
        let [_, l2, l3, _] = self.tables;
        let base = self.page_tables.start;
        match level {
            4 => base,
            3 => base + 1 + index,
            2 => base + 1 + l3 + index,
            _ => base + 1 + l3 + l2 + index,
        }
    }

    /// Places a kernel with `pv` addresses, an optional ramdisk of `ramdisk_len` bytes and
    /// `ctrl_pages` NoXS control pages, in a guest of `nr_pages` pages. `name` is the kernel's,
    /// for messages.
    pub fn compute(
        name: &str,
        pv: &PvAddrs,
        nr_pages: u64,
        ramdisk_len: Option<usize>,
        ctrl_pages: u64,
    ) -> Result<PvLayout, BuildError> {
        let too_small = |needed_pages: u64| BuildError::GuestTooSmall {
            name: name.to_string(),
            needed_bytes: needed_pages.saturating_mul(PAGE),
            have_bytes: nr_pages.saturating_mul(PAGE),
        };
        let virt_base = pv.virt_base;
        let kernel_start = (pv.virt_kstart - virt_base) / PAGE;
        let kernel_end = (pv.virt_kend - virt_base).div_ceil(PAGE);
        if kernel_end > nr_pages {
            return Err(too_small(kernel_end));
        }
        let kernel = PfnRange {
            start: kernel_start,
            count: kernel_end - kernel_start,
        };
        let mut next = kernel_end;
        let mut alloc = |count: u64| {
            let r = PfnRange { start: next, count };
            next += count;
            r
        };
        let ramdisk = ramdisk_len.map(|len| alloc((len as u64).div_ceil(PAGE)));
        let p2m = alloc((nr_pages * 8).div_ceil(PAGE));
        let start_info_pfn = alloc(1).start;
        let store_pfn = alloc(1).start;
        let console_pfn = alloc(1).start;
        let ctrl = alloc(ctrl_pages);
        let tables_start = next;

        // The tables must map themselves and the stack after them: grow until stable.
        let mut nr_tables = 0;
        let (tables, mapped_pages) = loop {
            let boot_end = tables_start + nr_tables + 1;
            let mapped = aligned_end(virt_base, boot_end + PADDING_PAGES)
                .min(nr_pages)
                .max(boot_end);
            let tables = count_tables(virt_base, mapped)?;
            let n: u64 = tables.iter().sum();
            if n <= nr_tables {
                break (tables, mapped);
            }
            nr_tables = n;
        };
        let page_tables = PfnRange {
            start: tables_start,
            count: nr_tables,
        };
        let stack_pfn = page_tables.end();
        if stack_pfn + 1 > nr_pages {
            return Err(too_small(stack_pfn + 1));
        }
        Ok(PvLayout {
            virt_base,
            nr_pages,
            kernel,
            ramdisk,
            p2m,
            start_info_pfn,
            store_pfn,
            console_pfn,
            ctrl,
            page_tables,
            tables,
            stack_pfn,
            mapped_pages,
        })
    }
}

/// Pages from `virt_base` to the first 4 MiB virtual boundary at or after `pages` pages.
fn aligned_end(virt_base: u64, pages: u64) -> u64 {
    let end = virt_base as u128 + pages as u128 * PAGE as u128;
    let align = MAPPING_ALIGN as u128;
    let aligned = end.div_ceil(align) * align;
    ((aligned - virt_base as u128) / PAGE as u128).min(u64::MAX as u128) as u64
}

fn canonical(v: u64) -> bool {
    matches!(v >> 47, 0 | 0x1ffff)
}

/// Tables per level `[L1, L2, L3, L4]` mapping `pages` pages from `virt_base`.
fn count_tables(virt_base: u64, pages: u64) -> Result<[u64; 4], BuildError> {
    let last = virt_base as u128 + pages as u128 * PAGE as u128 - 1;
    if last >= 1u128 << 64 || !canonical(virt_base) || !canonical(last as u64) {
        return Err(BuildError::Layout(format!(
            "the initial mapping {virt_base:#x}+{:#x} leaves the canonical address space",
            pages * PAGE
        )));
    }
    let (from, to) = (virt_base & VADDR_MASK, last as u64 & VADDR_MASK);
    if (from >> 47) != (to >> 47) {
        return Err(BuildError::Layout(format!(
            "the initial mapping {virt_base:#x}+{:#x} crosses the canonical hole",
            pages * PAGE
        )));
    }
    let per_level = |shift: u32| (to >> shift) - (from >> shift) + 1;
    Ok([per_level(21), per_level(30), per_level(39), 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(virt_base: u64, kstart: u64, kend: u64) -> PvAddrs {
        PvAddrs {
            virt_base,
            paddr_offset: 0,
            virt_kstart: virt_base + kstart,
            virt_kend: virt_base + kend,
            virt_entry: virt_base + kstart,
            hypercall_page: None,
        }
    }

    #[test]
    fn small_unikernel_in_2_mib() {
        // 16 KiB kernel at pfn 0, 512 pages of memory: the mapping is clamped to memory.
        let l = PvLayout::compute("k", &addrs(0x40_0000, 0, 0x4000), 512, None, 0).unwrap();
        assert_eq!(l.kernel, PfnRange { start: 0, count: 4 });
        assert_eq!(l.p2m, PfnRange { start: 4, count: 1 });
        assert_eq!((l.start_info_pfn, l.store_pfn, l.console_pfn), (5, 6, 7));
        assert_eq!(l.tables, [1, 1, 1, 1]);
        assert_eq!(l.page_tables, PfnRange { start: 8, count: 4 });
        assert_eq!(l.stack_pfn, 12);
        assert_eq!(l.mapped_pages, 512);
    }

    #[test]
    fn linux_like_in_128_mib() {
        let base = 0xffff_ffff_8000_0000;
        // 20 MiB kernel at 16 MiB, a 1 MiB ramdisk.
        let l = PvLayout::compute(
            "k",
            &addrs(base, 0x100_0000, 0x240_0000),
            32768,
            Some(1 << 20),
            0,
        )
        .unwrap();
        assert_eq!(
            l.kernel,
            PfnRange {
                start: 0x1000,
                count: 0x1400
            }
        );
        assert_eq!(
            l.ramdisk,
            Some(PfnRange {
                start: 0x2400,
                count: 0x100
            })
        );
        assert_eq!(
            l.p2m,
            PfnRange {
                start: 0x2500,
                count: 64
            }
        );
        assert_eq!(l.start_info_pfn, 0x2540);
        // Mapped to 40 MiB: the first 4 MiB boundary 512 KiB past the stack.
        assert_eq!(l.mapped_pages, 40 << 8);
        // 20 L1s for 40 MiB, one L2, one L3, the L4.
        assert_eq!(l.tables, [20, 1, 1, 1]);
        assert_eq!(
            l.page_tables,
            PfnRange {
                start: 0x2543,
                count: 23
            }
        );
        assert_eq!(l.stack_pfn, 0x2543 + 23);
        assert_eq!(l.table_pfn(4, 0), 0x2543);
        assert_eq!(l.table_pfn(3, 0), 0x2544);
        assert_eq!(l.table_pfn(2, 0), 0x2545);
        assert_eq!(l.table_pfn(1, 19), 0x2546 + 19);
    }

    #[test]
    fn noxs_control_pages_follow_the_console_ring() {
        let l = PvLayout::compute("k", &addrs(0x40_0000, 0, 0x4000), 512, None, 2).unwrap();
        assert_eq!((l.store_pfn, l.console_pfn), (6, 7));
        assert_eq!(l.ctrl, PfnRange { start: 8, count: 2 });
        assert_eq!(l.page_tables.start, 10);
        assert!(
            l.ctrl.end() <= l.mapped_pages,
            "the guest reaches them at boot"
        );
    }

    #[test]
    fn too_small_guest_says_how_much_is_needed() {
        let e = PvLayout::compute("vmlinuz", &addrs(0, 0, 9 << 20), 2048, None, 0).unwrap_err();
        assert_eq!(
            e.to_string(),
            "vmlinuz needs 9 MiB of guest memory, the guest has 8 MiB"
        );
        // The kernel fits but its boot data does not.
        let e = PvLayout::compute("k", &addrs(0, 0, 8 << 20), 2048, None, 0).unwrap_err();
        assert!(e.to_string().contains("the guest has 8 MiB"), "{e}");
    }

    #[test]
    fn mapping_leaving_the_address_space_is_refused() {
        // A 2 MiB kernel 1 MiB below the top of the lower half.
        let e = PvLayout::compute("k", &addrs(0x7fff_fff0_0000, 0, 0x20_0000), 4096, None, 0)
            .unwrap_err();
        assert!(e.to_string().contains("canonical"), "{e}");
    }
}
