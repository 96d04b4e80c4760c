//! Domain builders: turn a prepared shell (domain created, memory populated, event channels
//! allocated) plus a parsed kernel into a guest ready to unpause. x86_64 PV for now.

pub mod layout;
mod pv;
mod pvh;

pub use layout::{PfnRange, PvLayout};
pub use pv::build_pv;
pub use pvh::{build_pvh, BuiltPvhGuest, PvhLayout};

use crate::hypervisor::{DomId, HypervisorError};
use crate::image::ImageProblem;

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
    pub xenstore_evtchn: u32,
    pub xenstore_backend: DomId,
}

/// What the toolstack needs to know about a built guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltGuest {
    pub start_info_pfn: u64,
    pub console_pfn: u64,
    pub console_mfn: u64,
    pub xenstore_pfn: u64,
    pub xenstore_mfn: u64,
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
