//! The vocabulary chaos's crates share, so that the toolstack, the Xenstore client, the dom0
//! daemons, the NoXS ABI and the test guests name things the same way: domain ids, grant
//! references, event channel ports, domain handles (UUIDs), MAC addresses and the names of
//! dom0's network interfaces. `no_std` (guests use it); `std` adds owned error messages and
//! `serde` the (de)serialisation the toolstack's records use.
#![cfg_attr(not(feature = "std"), no_std)]

mod ifname;
mod mac;
mod uuid;

pub use ifname::{check_ifname, IfnameError, IFNAMSIZ};
pub use mac::{Mac, MacError};
pub use uuid::Uuid;

use core::fmt;

/// A Xen domain id (`domid_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
#[repr(transparent)]
pub struct DomId(pub u16);

impl DomId {
    /// The control domain.
    pub const DOM0: DomId = DomId(0);
    /// `DOMID_SELF`: the calling domain, in hypercalls that take a domain.
    pub const SELF: DomId = DomId(0x7ff0);
    /// Domain ids at and above this are Xen's special ids (DOMID_FIRST_RESERVED).
    pub const FIRST_RESERVED: u16 = 0x7ff0;

    /// Whether this names a domain that can exist (not one of Xen's special ids).
    pub fn is_valid(self) -> bool {
        self.0 < Self::FIRST_RESERVED
    }
}

impl fmt::Display for DomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A grant reference (`grant_ref_t`): an index into the granting domain's grant table.
pub type GrantRef = u32;

/// An event channel port (`evtchn_port_t`). Port 0 is never allocated (Xen reserves it).
pub type EvtchnPort = u32;

/// Size of a guest page frame on x86.
pub const PAGE_SIZE: usize = 4096;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;
