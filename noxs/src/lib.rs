//! The NoXS ABI: how a guest learns about its devices without Xenstore (LightVM, SOSP 2017),
//! as chaos implements it. `no_std`: shared by the toolstack, the dom0 backends and the test
//! guests. The contract itself, written for someone implementing a frontend in another guest
//! OS, follows (it is `ABI.md` in this crate).
//!
#![doc = include_str!("../ABI.md")]
#![no_std]

use core::mem::size_of;

/// Version written in [`DevPage::version`] (LightVM's page is 1).
pub const DEV_PAGE_VERSION: u32 = 2;
/// Version in the `chaos` ELF note of a kernel that implements this ABI.
pub const ABI_VERSION: u32 = 2;

/// Owner name of chaos's ELF notes (`"chaos"`, NUL included in the note's namesz).
pub const NOTE_OWNER: &[u8] = b"chaos";
/// Note type: the kernel implements the NoXS frontend; desc is a `u32` ABI version.
pub const NOTE_NOXS: u32 = 1;

/// `start_info.flags` / `hvm_start_info.flags` bit: the toolstack provides a device page.
pub const SIF_NOXS: u32 = 1 << 16;

/// The `devctl` hypercall of chaos's Xen patches (`-ENOSYS` on stock Xen).
pub const HYPERVISOR_DEVCTL: u32 = 63;
/// Devices one device page can list.
pub const DEV_COUNT_MAX: usize = 32;

/// `domid_t`
pub type DomId = u16;
pub use xen_types::{EvtchnPort, GrantRef};
/// A device's id among the devices of its type (vif 0, vif 1, ...).
pub type DevId = u32;

/// Device types (`enum noxs_dev_type`, as in noxs-4.8.1).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevType {
    None = 0,
    Sysctl = 1,
    Vif = 2,
    Vbd = 3,
}

impl DevType {
    /// The type for a raw value read from a page a guest could have scribbled on.
    pub fn from_raw(raw: u32) -> Option<DevType> {
        Some(match raw {
            0 => DevType::None,
            1 => DevType::Sysctl,
            2 => DevType::Vif,
            3 => DevType::Vbd,
            _ => return None,
        })
    }
}

/// Names one device (`struct noxs_dev_key`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevKey {
    pub dev_type: u32,
    pub be_id: DomId,
    pub fe_id: DomId,
    pub devid: DevId,
}

/// How the frontend reaches the device's control page (`struct noxs_dev_comm`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DevComm {
    pub grant: GrantRef,
    pub evtchn: EvtchnPort,
}

/// [`DevPageEntry::flags`]: `ctrl` is a frame of the guest's own memory (else a grant from
/// the backend, as in LightVM).
pub const ENTRY_GUEST_FRAME: u16 = 1 << 0;
/// [`DevPageEntry::flags`]: `evtchn` is the guest's own port, allocated toward the backend
/// (else the backend's unbound port, which the guest binds, as in LightVM).
pub const ENTRY_GUEST_PORT: u16 = 1 << 1;

/// One entry of the device page (`struct noxs_dev_page_entry`; LightVM's padding is `flags`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevPageEntry {
    pub dev_type: u32,
    pub id: DevId,
    pub be_id: DomId,
    pub flags: u16,
    pub comm: DevComm,
}

impl DevPageEntry {
    pub const EMPTY: DevPageEntry = DevPageEntry {
        dev_type: DevType::None as u32,
        id: 0,
        be_id: 0,
        flags: 0,
        comm: DevComm {
            grant: 0,
            evtchn: 0,
        },
    };

    /// An entry as chaos writes them: control page in guest frame `ctrl_frame`, guest port
    /// `evtchn` toward `be_id`.
    pub const fn guest_owned(
        ty: DevType,
        id: DevId,
        be_id: DomId,
        ctrl_frame: u32,
        evtchn: EvtchnPort,
    ) -> DevPageEntry {
        DevPageEntry {
            dev_type: ty as u32,
            id,
            be_id,
            flags: ENTRY_GUEST_FRAME | ENTRY_GUEST_PORT,
            comm: DevComm {
                grant: ctrl_frame,
                evtchn,
            },
        }
    }
}

/// The device page (`struct noxs_dev_page`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevPage {
    pub version: u32,
    pub dev_count: u32,
    pub devs: [DevPageEntry; DEV_COUNT_MAX],
}

/// Why adding a device to a page failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevPageError {
    Full,
}

impl DevPage {
    pub const fn new() -> DevPage {
        DevPage {
            version: DEV_PAGE_VERSION,
            dev_count: 0,
            devs: [DevPageEntry::EMPTY; DEV_COUNT_MAX],
        }
    }

    /// Puts a device in the first free slot.
    pub fn add(&mut self, entry: DevPageEntry) -> Result<(), DevPageError> {
        let slot = self
            .devs
            .iter_mut()
            .find(|e| e.dev_type == DevType::None as u32)
            .ok_or(DevPageError::Full)?;
        *slot = entry;
        self.dev_count += 1;
        Ok(())
    }

    /// The listed devices of one type, in slot order.
    pub fn devices(&self, ty: DevType) -> impl Iterator<Item = &DevPageEntry> {
        self.devs.iter().filter(move |e| e.dev_type == ty as u32)
    }
}

impl Default for DevPage {
    fn default() -> Self {
        DevPage::new()
    }
}

/// Progress of a watch-like notification through a control page.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchState {
    None = 0,
    Requested = 1,
    Updated = 2,
}

/// XenbusState values used in control pages.
pub mod state {
    pub const INITIALISING: i32 = 1;
    pub const INIT_WAIT: i32 = 2;
    pub const INITIALISED: i32 = 3;
    pub const CONNECTED: i32 = 4;
    pub const CLOSING: i32 = 5;
    pub const CLOSED: i32 = 6;
}

/// Common header of every control page (`struct noxs_ctrl_hdr`); the states are XenbusState
/// values ([`state`]).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CtrlHdr {
    pub devid: i32,
    pub be_state: i32,
    pub fe_state: i32,
    pub fe_watch_state: u32,
    pub be_watch_state: u32,
}

/// sysctl `fe_features` / `request` bits.
pub mod sysctl {
    pub const POWEROFF: u32 = 1 << 0;
    pub const REBOOT: u32 = 1 << 1;
    pub const SUSPEND: u32 = 1 << 2;
    pub const CRASH: u32 = 1 << 3;
    pub const WATCHDOG: u32 = 1 << 4;

    /// The `SCHEDOP_shutdown` reason a guest answers a request bit with.
    pub fn shutdown_reason(request: u32) -> Option<u32> {
        Some(match request {
            POWEROFF => 0,
            REBOOT => 1,
            SUSPEND => 2,
            CRASH => 3,
            WATCHDOG => 4,
            _ => return None,
        })
    }
}

/// The sysctl control page (section 4.1 of the ABI).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SysctlCtrl {
    pub hdr: CtrlHdr,
    /// What the guest obeys ([`sysctl`] bits); written by the guest.
    pub fe_features: u32,
    /// One [`sysctl`] bit: what the toolstack asks for.
    pub request: u32,
}

/// vif `be_features` / `fe_features` bit: the backend copies into rx buffers / the frontend
/// asks it to.
pub const VIF_RX_COPY: u32 = 1 << 0;

/// The vif control page (section 4.2 of the ABI).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VifCtrl {
    pub hdr: CtrlHdr,
    pub mac: [u8; 6],
    pub mtu: u16,
    /// Network byte order; 0 = none.
    pub ipv4: u32,
    pub ipv4_prefix: u8,
    pub _pad: [u8; 3],
    pub be_features: u32,
    pub tx_ring_ref: GrantRef,
    pub rx_ring_ref: GrantRef,
    pub evtchn_tx: EvtchnPort,
    pub evtchn_rx: EvtchnPort,
    pub fe_features: u32,
}

// The layouts are ABI shared with guests and backends built elsewhere: pin their sizes.
const _: () = assert!(size_of::<DevKey>() == 12);
const _: () = assert!(size_of::<DevComm>() == 8);
const _: () = assert!(size_of::<DevPageEntry>() == 20);
const _: () = assert!(size_of::<DevPage>() == 648);
const _: () = assert!(size_of::<DevPage>() <= 4096);
const _: () = assert!(size_of::<CtrlHdr>() == 20);
const _: () = assert!(size_of::<SysctlCtrl>() == 28);
const _: () = assert!(size_of::<VifCtrl>() == 60);
const _: () = assert!(core::mem::offset_of!(VifCtrl, ipv4) == 28);
const _: () = assert!(core::mem::offset_of!(VifCtrl, tx_ring_ref) == 40);
const _: () = assert!(core::mem::offset_of!(VifCtrl, fe_features) == 56);
const _: () = assert!(core::mem::offset_of!(DevPageEntry, comm) == 12);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_fill_free_slots_until_the_page_is_full() {
        let mut page = DevPage::new();
        let vif = |id| DevPageEntry::guest_owned(DevType::Vif, id, 0, 8 + id, 3);
        for id in 0..DEV_COUNT_MAX as u32 {
            page.add(vif(id)).expect("room");
        }
        assert_eq!(page.dev_count, DEV_COUNT_MAX as u32);
        assert_eq!(page.add(vif(99)), Err(DevPageError::Full));
        assert_eq!(page.devices(DevType::Vif).count(), DEV_COUNT_MAX);
        assert_eq!(page.devices(DevType::Vbd).count(), 0);
    }

    #[test]
    fn unknown_device_types_are_not_guessed() {
        assert_eq!(DevType::from_raw(2), Some(DevType::Vif));
        assert_eq!(DevType::from_raw(7), None);
    }
}
