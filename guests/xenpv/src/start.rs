//! What the guest was started with: the PV start_info page or, under PVH, hvm_start_info plus
//! HVM params; and the special pages (console, Xenstore) they name.
//!
//! Xen/libxc place start_info, the Xenstore ring and the console ring in the bootstrap
//! region right after the image, and that region is mapped 1:1 from VIRT_BASE (public/xen.h:
//! "the bootstrap virtual-memory region is a 1:1 mapping to the first section of the
//! pseudo-physical map"). start_info gives those rings as machine frames; the read-only M2P
//! table Xen maps in every PV guest turns them into our pfns, hence virtual addresses.

use crate::{hypercall, PAGE_SIZE, VIRT_BASE};
use xen_sys as sys;

/// Xen's read-only machine-to-phys table (MACH2PHYS_VIRT_START on x86_64).
const M2P: *const u64 = sys::__MACH2PHYS_VIRT_START as u64 as *const u64;

/// A ring page and the event channel that signals it.
#[derive(Clone, Copy, Debug)]
pub struct Ring {
    pub page: *mut u8,
    pub evtchn: u32,
}

/// HVM params (public/hvm/params.h) that name the rings of a PVH guest.
const HVM_PARAM_STORE_PFN: u32 = 1;
const HVM_PARAM_STORE_EVTCHN: u32 = 2;
const HVM_PARAM_CONSOLE_PFN: u32 = 17;
const HVM_PARAM_CONSOLE_EVTCHN: u32 = 18;

/// Safe view of what the guest was started with.
pub struct StartInfo {
    boot: Boot,
}

enum Boot {
    Pv(&'static sys::start_info),
    /// Physical address of `struct hvm_start_info`.
    Pvh(u64),
}

impl StartInfo {
    /// A PV guest: Xen's start_info page.
    pub fn new(si: &'static sys::start_info) -> Self {
        StartInfo { boot: Boot::Pv(si) }
    }

    /// A PVH guest: `info` is the physical address of `hvm_start_info` (%ebx at entry).
    pub fn pvh(info: u64) -> Self {
        StartInfo {
            boot: Boot::Pvh(info),
        }
    }

    /// True when started through the PVH entry.
    pub fn is_pvh(&self) -> bool {
        matches!(self.boot, Boot::Pvh(_))
    }

    /// The guest command line (`extra=` in xl.cfg), up to its NUL.
    pub fn cmdline(&self) -> &'static [u8] {
        let si = match self.boot {
            Boot::Pv(si) => si,
            Boot::Pvh(info) => return crate::pvh::cmdline(info),
        };
        let raw = &si.cmd_line;
        // SAFETY: i8 and u8 have the same layout; the array lives in the start_info page.
        let bytes: &'static [u8] =
            unsafe { core::slice::from_raw_parts(raw.as_ptr().cast(), raw.len()) };
        let len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        &bytes[..len]
    }

    /// Pages the domain was given (PV only: start_info has it; None under PVH).
    pub fn nr_pages(&self) -> Option<u64> {
        match self.boot {
            Boot::Pv(si) => Some(si.nr_pages),
            Boot::Pvh(_) => None,
        }
    }

    /// The PV console ring, if the toolstack set one up.
    pub fn console(&self) -> Option<Ring> {
        match self.boot {
            Boot::Pv(si) => {
                // SAFETY: for a domU the `domU` member of the union is the one Xen/libxc fill.
                let c = unsafe { si.console.domU };
                pv_ring(si, c.mfn, c.evtchn)
            }
            Boot::Pvh(_) => pvh_ring(HVM_PARAM_CONSOLE_PFN, HVM_PARAM_CONSOLE_EVTCHN),
        }
    }

    /// The Xenstore ring, if the toolstack set one up.
    pub fn xenstore(&self) -> Option<Ring> {
        match self.boot {
            Boot::Pv(si) => pv_ring(si, si.store_mfn, si.store_evtchn),
            Boot::Pvh(_) => pvh_ring(HVM_PARAM_STORE_PFN, HVM_PARAM_STORE_EVTCHN),
        }
    }
}

/// PVH: the ring's guest frame and event channel are HVM params; frames are identity mapped.
fn pvh_ring(pfn_param: u32, evtchn_param: u32) -> Option<Ring> {
    let pfn = hypercall::hvm_get_param(pfn_param)?;
    let evtchn = u32::try_from(hypercall::hvm_get_param(evtchn_param)?).ok()?;
    if evtchn == 0 {
        return None;
    }
    Some(Ring {
        page: crate::pvh::frame(pfn)?,
        evtchn,
    })
}

/// PV: start_info names the ring by machine frame; the M2P table gives our pfn.
fn pv_ring(si: &sys::start_info, mfn: u64, evtchn: u32) -> Option<Ring> {
    if mfn == 0 || evtchn == 0 {
        return None;
    }
    // SAFETY: the M2P table is mapped read-only in every PV guest; mfn is one of our frames.
    let pfn = unsafe { M2P.add(mfn as usize).read_volatile() };
    // Only pages inside our own allocation are in the bootstrap mapping.
    if pfn >= si.nr_pages {
        return None;
    }
    Some(Ring {
        page: (VIRT_BASE + pfn * PAGE_SIZE) as *mut u8,
        evtchn,
    })
}
