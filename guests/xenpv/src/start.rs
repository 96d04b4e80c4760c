//! What the guest was started with: the PV start_info page or, under PVH, hvm_start_info plus
//! HVM params; the special pages (console, Xenstore or NoXS device page) they name; and which
//! of our frames we may touch.
//!
//! Xen/libxc place start_info, the Xenstore ring (or the NoXS device page) and the console ring
//! in the bootstrap region right after the image, and that region is mapped 1:1 from VIRT_BASE
//! (public/xen.h: "the bootstrap virtual-memory region is a 1:1 mapping to the first section of
//! the pseudo-physical map"). start_info gives those rings as machine frames; the read-only M2P
//! table Xen maps in every PV guest turns them into our pfns, hence virtual addresses.

use crate::{hypercall, PAGE_SIZE, PHYS_SHIFT, VIRT_BASE};
use xen_sys as sys;

/// Xen's read-only machine-to-phys table (MACH2PHYS_VIRT_START on x86_64).
const M2P: *const u64 = sys::__MACH2PHYS_VIRT_START as u64 as *const u64;
/// public/xen.h: the bootstrap region ends on a 4 MiB virtual boundary.
const BOOT_MAPPING_ALIGN: u64 = 4 << 20;

/// A ring page and the event channel that signals it.
#[derive(Clone, Copy, Debug)]
pub struct Ring {
    pub page: *mut u8,
    pub evtchn: u32,
}

/// HVM params (public/hvm/params.h) that name the rings of a PVH guest.
pub(crate) const HVM_PARAM_STORE_PFN: u32 = 1;
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

    /// `start_info.flags` / `hvm_start_info.flags` (SIF_*).
    pub fn flags(&self) -> u32 {
        match self.boot {
            Boot::Pv(si) => si.flags,
            Boot::Pvh(info) => crate::pvh::flags(info),
        }
    }

    /// The PV console ring, if the toolstack set one up.
    pub fn console(&self) -> Option<Ring> {
        match self.boot {
            Boot::Pv(si) => {
                // SAFETY: for a domU the `domU` member of the union is the one Xen/libxc fill.
                let c = unsafe { si.console.domU };
                self.pv_ring(c.mfn, c.evtchn)
            }
            Boot::Pvh(_) => pvh_ring(HVM_PARAM_CONSOLE_PFN, HVM_PARAM_CONSOLE_EVTCHN),
        }
    }

    /// The Xenstore ring, if the toolstack set one up (never under NoXS: its channel is 0).
    pub fn xenstore(&self) -> Option<Ring> {
        match self.boot {
            Boot::Pv(si) => self.pv_ring(si.store_mfn, si.store_evtchn),
            Boot::Pvh(_) => pvh_ring(HVM_PARAM_STORE_PFN, HVM_PARAM_STORE_EVTCHN),
        }
    }

    /// Our page named by the `store_mfn` field / `HVM_PARAM_STORE_PFN`, as a frame number of
    /// ours (the NoXS device page when SIF_NOXS is set).
    pub(crate) fn store_frame(&self) -> Option<u64> {
        match self.boot {
            Boot::Pv(si) => self.pfn_of_mfn(si.store_mfn),
            Boot::Pvh(_) => hypercall::hvm_get_param(HVM_PARAM_STORE_PFN),
        }
    }

    /// Address of our frame `frame` (PV: a pfn, PVH: a gfn) if it is memory of ours that the
    /// boot mapping covers and not part of this image; None for anything else. Frames named by
    /// the toolstack (NoXS device and control pages) go through here before any access.
    pub fn frame(&self, frame: u64) -> Option<*mut u8> {
        let image = image_frames(self.is_pvh());
        if frame >= image.0 && frame < image.1 {
            return None;
        }
        match self.boot {
            Boot::Pv(si) => (frame < pv_mapped_pages(si)).then(|| pv_address(frame)),
            Boot::Pvh(info) => {
                let addr = crate::pvh::frame(frame)?;
                crate::pvh::in_memory_map(info, frame * PAGE_SIZE).then_some(addr)
            }
        }
    }

    /// The frame number under which others (grants) name the page of our image at `addr`: the
    /// machine frame under PV (from the p2m list), the guest frame under PVH.
    pub fn frame_of(&self, addr: *const u8) -> Option<u64> {
        let off = (addr as u64).checked_sub(VIRT_BASE)?;
        match self.boot {
            Boot::Pv(si) => {
                let pfn = off / PAGE_SIZE;
                if pfn >= si.nr_pages {
                    return None;
                }
                // SAFETY: mfn_list is the p2m list of nr_pages entries the builder put in the
                // bootstrap mapping; pfn is below nr_pages.
                Some(unsafe {
                    (si.mfn_list as *const u64)
                        .add(pfn as usize)
                        .read_volatile()
                })
            }
            Boot::Pvh(_) => Some((addr as u64 - PHYS_SHIFT) / PAGE_SIZE),
        }
    }

    /// PV: machine address of shared_info (start_info.shared_info); None under PVH.
    pub(crate) fn shared_info_maddr(&self) -> Option<u64> {
        match self.boot {
            Boot::Pv(si) => Some(si.shared_info),
            Boot::Pvh(_) => None,
        }
    }

    /// PV: our pfn for machine frame `mfn` (through the M2P table), if it is one of our pages.
    fn pfn_of_mfn(&self, mfn: u64) -> Option<u64> {
        let Boot::Pv(si) = self.boot else {
            return None;
        };
        if mfn == 0 {
            return None;
        }
        // SAFETY: the M2P table is mapped read-only in every PV guest; the toolstack names one
        // of our frames.
        let pfn = unsafe { M2P.add(mfn as usize).read_volatile() };
        (pfn < si.nr_pages).then_some(pfn)
    }

    /// PV: start_info names the ring by machine frame; the M2P table gives our pfn.
    fn pv_ring(&self, mfn: u64, evtchn: u32) -> Option<Ring> {
        if evtchn == 0 {
            return None;
        }
        Some(Ring {
            page: pv_address(self.pfn_of_mfn(mfn)?),
            evtchn,
        })
    }
}

fn pv_address(pfn: u64) -> *mut u8 {
    (VIRT_BASE + pfn * PAGE_SIZE) as *mut u8
}

/// PV: how many pfns from 0 the bootstrap mapping surely covers: up to the 4 MiB boundary
/// after the bootstrap page tables (public/xen.h; libxenguest and chaos map at least that
/// far), never beyond our memory. 0 if start_info makes no sense.
fn pv_mapped_pages(si: &sys::start_info) -> u64 {
    let end = si
        .nr_pt_frames
        .checked_mul(PAGE_SIZE)
        .and_then(|len| si.pt_base.checked_add(len))
        .and_then(|end| end.checked_next_multiple_of(BOOT_MAPPING_ALIGN))
        .and_then(|end| end.checked_sub(VIRT_BASE))
        .unwrap_or(0);
    (end / PAGE_SIZE).min(si.nr_pages)
}

/// Our image's frames `[first, end)`: PV pfns from 0, PVH gfns from its load address.
fn image_frames(pvh: bool) -> (u64, u64) {
    let len = crate::image_end().saturating_sub(VIRT_BASE);
    let first = if pvh {
        (VIRT_BASE - PHYS_SHIFT) / PAGE_SIZE
    } else {
        0
    };
    (first, first + len.div_ceil(PAGE_SIZE))
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
