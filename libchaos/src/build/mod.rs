//! Domain builders: turn a prepared shell (domain created, memory populated, event channels
//! allocated) plus a parsed kernel into a guest ready to unpause. x86_64 PV for now.

mod acpi;
pub mod layout;
mod pv;
mod pvh;

pub use layout::{PfnRange, PvLayout};
pub use pv::{build_pv, finish_ahead, finish_pv, prebuild_pv, PvPrebuilt};
pub use pvh::{build_pvh, BuiltPvhGuest, PvhLayout};

use crate::hypervisor::{DomId, GrantEntry, HypervisorError, PAGE_SIZE};
use crate::image::ImageProblem;

/// What goes in the control plane's page (start_info's "store" slot).
#[derive(Debug, Clone, Copy)]
pub enum StorePage<'a> {
    /// A Xenstore ring (zeroed), its channel in start_info, granted to `backend`.
    Xenstore { evtchn: u32, backend: DomId },
    /// NoXS (noxs/ABI.md): each device's control page right after the console ring, no store
    /// channel, and, unless Xen owns the device page (`hypervisor_page`, chaos's devctl patch;
    /// the toolstack then lists the devices through the hypercall), a device page listing
    /// `devices` in the store slot with SIF_NOXS set.
    Noxs {
        devices: &'a [NoxsDevice],
        hypervisor_page: bool,
    },
}

/// One NoXS device: its entry in the device page and its control page's first bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoxsDevice {
    pub ty: noxs::DevType,
    pub id: u32,
    pub backend: DomId,
    /// The guest's port toward the backend.
    pub evtchn: u32,
    /// The grant reference under which the builder grants the control page to `backend`
    /// (vifs: their backend is a dom0 process that maps it with gntdev); None: not granted.
    pub gref: Option<u32>,
    /// The control page's initial contents (the rest of the page is zero).
    pub ctrl: Vec<u8>,
}

/// Writes the device page for `devices`, whose control pages are at `ctrl_pfns`.
pub(crate) fn write_device_page(page: &mut [u8], devices: &[NoxsDevice], ctrl_pfns: &[u64]) {
    let mut dp = noxs::DevPage::new();
    for (d, pfn) in devices.iter().zip(ctrl_pfns) {
        // Checked by the caller: at most DEV_COUNT_MAX devices, frames below 2^32.
        let _ = dp.add(noxs::DevPageEntry::guest_owned(
            d.ty,
            d.id,
            d.backend.0,
            *pfn as u32,
            d.evtchn,
        ));
    }
    page.fill(0);
    dp.write_to(page);
}

/// Refuses device lists the device page cannot hold.
pub(crate) fn check_devices(devices: &[NoxsDevice]) -> Result<(), BuildError> {
    if devices.len() > noxs::DEV_COUNT_MAX {
        return Err(BuildError::Params(format!(
            "{} NoXS devices; a device page lists at most {}",
            devices.len(),
            noxs::DEV_COUNT_MAX
        )));
    }
    for (i, d) in devices.iter().enumerate() {
        let Some(gref) = d.gref else { continue };
        // Only Xen's reserved references, which guests never hand out, and not the console's
        // or Xenstore's.
        if !(GNTTAB_RESERVED_XENSTORE + 1..GNTTAB_NR_RESERVED_ENTRIES).contains(&gref)
            || devices[..i].iter().any(|o| o.gref == Some(gref))
        {
            return Err(BuildError::Params(format!(
                "the control page of {:?} {} cannot be granted as reference {gref}",
                d.ty, d.id
            )));
        }
    }
    if let Some(d) = devices.iter().find(|d| d.ctrl.len() > PAGE_SIZE) {
        return Err(BuildError::Params(format!(
            "the control page of {:?} {} is {} bytes",
            d.ty,
            d.id,
            d.ctrl.len()
        )));
    }
    Ok(())
}

impl StorePage<'_> {
    /// Control pages to place after the console ring.
    pub fn ctrl_pages(&self) -> u64 {
        match self {
            StorePage::Xenstore { .. } => 0,
            StorePage::Noxs { devices, .. } => devices.len() as u64,
        }
    }
}

/// Everything the builder needs besides the image.
#[derive(Debug, Clone, Copy)]
pub struct BuildParams<'a> {
    pub domid: DomId,
    /// Machine frame of each guest pfn, all populated by prepare; its length is the guest's
    /// page count.
    pub p2m: &'a [u64],
    pub cmdline: &'a str,
    pub ramdisk: Option<&'a [u8]>,
    pub vcpus: u32,
    pub console_evtchn: u32,
    pub console_backend: DomId,
    /// The Xenstore ring or the NoXS device page.
    pub store: StorePage<'a>,
}

/// What the toolstack needs to know about a built guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltGuest {
    pub start_info_pfn: u64,
    pub console_pfn: u64,
    pub console_mfn: u64,
    /// The Xenstore ring, or the NoXS device page.
    pub store_pfn: u64,
    pub store_mfn: u64,
    /// The NoXS control pages, in device order (empty on the Xenstore plane): their pfns (what
    /// the device page names) and machine frames.
    pub ctrl_pfns: Vec<u64>,
    pub ctrl_mfns: Vec<u64>,
    /// Virtual entry point vcpu 0 starts at.
    pub entry: u64,
    /// Virtual address of start_info (vcpu 0's rsi).
    pub start_info_vaddr: u64,
    /// Initial stack pointer.
    pub stack_top: u64,
    /// Machine frame of the pinned L4 (vcpu 0's cr3).
    pub l4_mfn: u64,
    /// Where everything went.
    pub layout: PvLayout,
}

/// Grant references Xen reserves for the toolstack (grant_table.h).
pub const GNTTAB_RESERVED_CONSOLE: u32 = 0;
pub const GNTTAB_RESERVED_XENSTORE: u32 = 1;
/// References below this are reserved for the toolstack (GNTTAB_NR_RESERVED_ENTRIES).
pub const GNTTAB_NR_RESERVED_ENTRIES: u32 = 8;

/// The grant entries that give the NoXS devices' control pages, at `frames` (as Xen's
/// interfaces take them), to their backends.
pub(crate) fn device_grants(devices: &[NoxsDevice], frames: &[u64]) -> Vec<GrantEntry> {
    devices
        .iter()
        .zip(frames)
        .filter_map(|(d, &frame)| {
            Some(GrantEntry {
                gref: d.gref?,
                backend: d.backend,
                frame,
            })
        })
        .collect()
}

/// The longest command line start_info holds (MAX_GUEST_CMDLINE, NUL included).
pub const MAX_GUEST_CMDLINE: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{name}: {problem}")]
    Image {
        name: String,
        #[source]
        problem: ImageProblem,
    },
    #[error("{name} needs {} of guest memory, the guest has {}", size(*needed_bytes), size(*have_bytes))]
    GuestTooSmall {
        name: String,
        needed_bytes: u64,
        have_bytes: u64,
    },
    #[error("layout: {0}")]
    Layout(String),
    #[error("invalid build parameters: {0}")]
    Params(String),
    #[error("{step}: {source}")]
    Hypervisor {
        step: &'static str,
        #[source]
        source: HypervisorError,
    },
}

/// "9 MiB", or "8196 KiB" when not a whole number of MiB.
fn size(bytes: u64) -> String {
    if bytes & ((1 << 20) - 1) == 0 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{} KiB", bytes.div_ceil(1024))
    }
}

fn hv_step(step: &'static str) -> impl FnOnce(HypervisorError) -> BuildError {
    move |source| BuildError::Hypervisor { step, source }
}

#[cfg(test)]
mod tests;
