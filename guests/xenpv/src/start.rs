//! The start_info page and the special pages it names.
//!
//! Xen/libxc place start_info, the Xenstore ring and the console ring in the bootstrap
//! region right after the image, and that region is mapped 1:1 from VIRT_BASE (public/xen.h:
//! "the bootstrap virtual-memory region is a 1:1 mapping to the first section of the
//! pseudo-physical map"). start_info gives those rings as machine frames; the read-only M2P
//! table Xen maps in every PV guest turns them into our pfns, hence virtual addresses.

use crate::{PAGE_SIZE, VIRT_BASE};
use xen_sys as sys;

/// Xen's read-only machine-to-phys table (MACH2PHYS_VIRT_START on x86_64).
const M2P: *const u64 = sys::__MACH2PHYS_VIRT_START as u64 as *const u64;

/// A ring page and the event channel that signals it.
#[derive(Clone, Copy, Debug)]
pub struct Ring {
    pub page: *mut u8,
    pub evtchn: u32,
}

/// Safe view of the start_info page.
pub struct StartInfo {
    si: &'static sys::start_info,
}

impl StartInfo {
    pub fn new(si: &'static sys::start_info) -> Self {
        StartInfo { si }
    }

    /// The guest command line (`extra=` in xl.cfg), up to its NUL.
    pub fn cmdline(&self) -> &'static [u8] {
        let raw = &self.si.cmd_line;
        // SAFETY: i8 and u8 have the same layout; the array lives in the start_info page.
        let bytes: &'static [u8] =
            unsafe { core::slice::from_raw_parts(raw.as_ptr().cast(), raw.len()) };
        let len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        &bytes[..len]
    }

    /// Pages the domain was given.
    pub fn nr_pages(&self) -> u64 {
        self.si.nr_pages
    }

    /// The PV console ring, if the toolstack set one up.
    pub fn console(&self) -> Option<Ring> {
        // SAFETY: for a domU the `domU` member of the union is the one Xen/libxc fill.
        let c = unsafe { self.si.console.domU };
        self.ring(c.mfn, c.evtchn)
    }

    /// The Xenstore ring, if the toolstack set one up.
    pub fn xenstore(&self) -> Option<Ring> {
        self.ring(self.si.store_mfn, self.si.store_evtchn)
    }

    fn ring(&self, mfn: u64, evtchn: u32) -> Option<Ring> {
        if mfn == 0 || evtchn == 0 {
            return None;
        }
        // SAFETY: the M2P table is mapped read-only in every PV guest; mfn is one of our frames.
        let pfn = unsafe { M2P.add(mfn as usize).read_volatile() };
        // Only pages inside our own allocation are in the bootstrap mapping.
        if pfn >= self.si.nr_pages {
            return None;
        }
        Some(Ring {
            page: (VIRT_BASE + pfn * PAGE_SIZE) as *mut u8,
            evtchn,
        })
    }
}
