//! Granting our pages to a backend: the first frame of our v1 grant table
//! (public/grant_table.h), mapped over a page of our image.
//!
//! PV: GNTTABOP_setup_table gives the frame's machine address and HYPERVISOR_update_va_mapping
//! maps it; PVH: XENMEM_add_to_physmap(XENMAPSPACE_grant_table) puts it at that page's guest
//! frame. An entry is `{ u16 flags, u16 domid, u32 frame }`: frame and domid are written first,
//! then the flags that make it valid. The first 8 references are reserved (the toolstack seeds
//! the console's and Xenstore's), so ours start at 8; one frame holds 512.

use crate::start::StartInfo;
use crate::{hypercall, Page, PAGE_SIZE, PHYS_SHIFT};
use core::sync::atomic::{fence, AtomicU16, AtomicU32, Ordering};

/// GTF_permit_access: the domain in `domid` may map or copy the frame.
const GTF_PERMIT_ACCESS: u16 = 1;
/// GTF_readonly: ... only for reading.
const GTF_READONLY: u16 = 1 << 2;
/// GNTTAB_NR_RESERVED_ENTRIES
const FIRST_REF: u32 = 8;
/// Entries of 8 bytes in one frame.
const ENTRIES: u32 = 512;

static GRANT_FRAME: Page = Page::new();

/// Our grant table (its first frame) and the next free reference.
pub struct Grants {
    table: *mut u8,
    next: u32,
}

impl Grants {
    /// Maps the first grant table frame; None if Xen refuses.
    pub fn setup(si: &StartInfo) -> Option<Grants> {
        let page = GRANT_FRAME.as_ptr();
        let ok = if si.is_pvh() {
            hypercall::add_to_physmap(
                hypercall::XENMAPSPACE_GRANT_TABLE,
                0,
                (page as u64 - PHYS_SHIFT) / PAGE_SIZE,
            )
        } else {
            let mfn = hypercall::grant_table_frame0()?;
            hypercall::update_va_mapping(page as u64, (mfn << 12) | crate::events::PTE_RW)
        };
        // SAFETY: the frame is ours now (mapped above) and nothing else in this guest uses it.
        ok.then(|| unsafe { Grants::over(page) })
    }

    /// # Safety
    /// `table` must be a writable 4 KiB grant table frame used by nobody else in this guest.
    pub unsafe fn over(table: *mut u8) -> Grants {
        Grants {
            table,
            next: FIRST_REF,
        }
    }

    /// Grants frame `frame` (as [`StartInfo::frame_of`] names it) to domain `domid`; returns
    /// the reference, or None when the table is full or the frame does not fit an entry.
    pub fn grant(&mut self, domid: u16, frame: u64, readonly: bool) -> Option<u32> {
        let frame = u32::try_from(frame).ok()?;
        if self.next >= ENTRIES {
            return None;
        }
        let gref = self.next;
        self.next += 1;
        // SAFETY: gref < 512, so the 8-byte entry is inside the table frame (see `over`);
        // its fields are naturally aligned.
        let (flags, dom, fr) = unsafe {
            let e = self.table.add(gref as usize * 8);
            (
                &*e.cast::<AtomicU16>(),
                &*e.add(2).cast::<AtomicU16>(),
                &*e.add(4).cast::<AtomicU32>(),
            )
        };
        dom.store(domid, Ordering::Relaxed);
        fr.store(frame, Ordering::Relaxed);
        // The backend must see domid and frame before the entry becomes valid.
        fence(Ordering::Release);
        let ro = if readonly { GTF_READONLY } else { 0 };
        flags.store(GTF_PERMIT_ACCESS | ro, Ordering::Release);
        Some(gref)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_carry_domid_frame_and_flags_from_ref_8_on() {
        let page = Box::new(Page::new());
        // SAFETY: a private page standing in for the grant table frame.
        let mut g = unsafe { Grants::over(page.as_ptr()) };
        assert_eq!(g.grant(0, 0x1234, false), Some(8));
        assert_eq!(g.grant(7, 0x42, true), Some(9));
        // SAFETY: reading back the test's own page.
        let bytes = unsafe { core::slice::from_raw_parts(page.as_ptr(), 4096) };
        assert_eq!(&bytes[64..72], &[1, 0, 0, 0, 0x34, 0x12, 0, 0]);
        assert_eq!(&bytes[72..80], &[5, 0, 7, 0, 0x42, 0, 0, 0]);
        assert_eq!(bytes[..64], [0; 64], "reserved entries untouched");
    }

    #[test]
    fn the_table_fills_up_and_large_frames_are_refused() {
        let page = Box::new(Page::new());
        // SAFETY: a private page standing in for the grant table frame.
        let mut g = unsafe { Grants::over(page.as_ptr()) };
        assert_eq!(g.grant(0, 1 << 32, false), None);
        for r in 8..512 {
            assert_eq!(g.grant(0, 1, false), Some(r));
        }
        assert_eq!(g.grant(0, 1, false), None);
    }
}
