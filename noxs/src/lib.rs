//! The NoXS ABI: how a guest learns about its devices without Xenstore (LightVM, SOSP 2017).
//!
//! One 4 KiB *device page* per domain lists up to [`DEV_COUNT_MAX`] devices, each with its
//! backend domain, a grant reference to the device's *control page* and an event channel. The
//! control page replaces the front/back Xenstore directories of that device. Layouts follow
//! LightVM's `xen/include/public/io/noxs.h` (noxs-4.8.1), so guests built for LightVM's NoXS can
//! read what chaos writes. `no_std`: shared by the toolstack, backends and guests.
#![no_std]

use core::mem::size_of;

/// Version written in [`DevPage::version`].
pub const DEV_PAGE_VERSION: u32 = 1;
/// Devices one device page can list.
pub const DEV_COUNT_MAX: usize = 32;

/// `domid_t`
pub type DomId = u16;
/// `grant_ref_t`
pub type GrantRef = u32;
/// `evtchn_port_t`
pub type EvtchnPort = u32;
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

/// One entry of the device page (`struct noxs_dev_page_entry`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevPageEntry {
    pub dev_type: u32,
    pub id: DevId,
    pub be_id: DomId,
    pub _pad: u16,
    pub comm: DevComm,
}

impl DevPageEntry {
    pub const EMPTY: DevPageEntry = DevPageEntry {
        dev_type: DevType::None as u32,
        id: 0,
        be_id: 0,
        _pad: 0,
        comm: DevComm {
            grant: 0,
            evtchn: 0,
        },
    };
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

/// Common header of every control page (`struct noxs_ctrl_hdr`); the states are XenbusState
/// values.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CtrlHdr {
    pub devid: i32,
    pub be_state: i32,
    pub fe_state: i32,
    pub fe_watch_state: u32,
    pub be_watch_state: u32,
}

// The layouts are ABI shared with guests and backends built elsewhere: pin their sizes.
const _: () = assert!(size_of::<DevKey>() == 12);
const _: () = assert!(size_of::<DevComm>() == 8);
const _: () = assert!(size_of::<DevPageEntry>() == 20);
const _: () = assert!(size_of::<DevPage>() == 648);
const _: () = assert!(size_of::<DevPage>() <= 4096);
const _: () = assert!(size_of::<CtrlHdr>() == 20);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_fill_free_slots_until_the_page_is_full() {
        let mut page = DevPage::new();
        let vif = |id| DevPageEntry {
            dev_type: DevType::Vif as u32,
            id,
            be_id: 0,
            _pad: 0,
            comm: DevComm {
                grant: 8 + id,
                evtchn: 3,
            },
        };
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
