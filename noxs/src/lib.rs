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

/// Little-endian field access in a page of bytes; every read is bounds-checked, so a page a
/// guest scribbled on can only give wrong numbers, never a panic.
mod bytes {
    pub fn get_u32(b: &[u8], at: usize) -> u32 {
        b.get(at..at + 4)
            .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    pub fn get_u16(b: &[u8], at: usize) -> u16 {
        b.get(at..at + 2)
            .map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
    }
    pub fn put_u32(b: &mut [u8], at: usize, v: u32) {
        if let Some(s) = b.get_mut(at..at + 4) {
            s.copy_from_slice(&v.to_le_bytes());
        }
    }
    pub fn put_u16(b: &mut [u8], at: usize, v: u16) {
        if let Some(s) = b.get_mut(at..at + 2) {
            s.copy_from_slice(&v.to_le_bytes());
        }
    }
}

/// Offsets of the device page (ABI section 3).
const PAGE_DEVS: usize = 8;
const ENTRY_SIZE: usize = 20;

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

    /// Writes the page's bytes (ABI section 3) at the start of `page` (4096 bytes); the rest
    /// of `page` is left as it is.
    pub fn write_to(&self, page: &mut [u8]) {
        bytes::put_u32(page, 0, self.version);
        bytes::put_u32(page, 4, self.dev_count);
        for (i, e) in self.devs.iter().enumerate() {
            let at = PAGE_DEVS + i * ENTRY_SIZE;
            bytes::put_u32(page, at, e.dev_type);
            bytes::put_u32(page, at + 4, e.id);
            bytes::put_u16(page, at + 8, e.be_id);
            bytes::put_u16(page, at + 10, e.flags);
            bytes::put_u32(page, at + 12, e.comm.grant);
            bytes::put_u32(page, at + 16, e.comm.evtchn);
        }
    }

    /// Reads a page from its bytes. Nothing is checked beyond the length: a reader checks what
    /// it uses (types, counts, frames) against its own bounds.
    pub fn read_from(page: &[u8]) -> DevPage {
        let mut p = DevPage {
            version: bytes::get_u32(page, 0),
            dev_count: bytes::get_u32(page, 4),
            devs: [DevPageEntry::EMPTY; DEV_COUNT_MAX],
        };
        for (i, e) in p.devs.iter_mut().enumerate() {
            let at = PAGE_DEVS + i * ENTRY_SIZE;
            *e = DevPageEntry {
                dev_type: bytes::get_u32(page, at),
                id: bytes::get_u32(page, at + 4),
                be_id: bytes::get_u16(page, at + 8),
                flags: bytes::get_u16(page, at + 10),
                comm: DevComm {
                    grant: bytes::get_u32(page, at + 12),
                    evtchn: bytes::get_u32(page, at + 16),
                },
            };
        }
        p
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

impl CtrlHdr {
    fn write_to(&self, b: &mut [u8]) {
        bytes::put_u32(b, 0, self.devid as u32);
        bytes::put_u32(b, 4, self.be_state as u32);
        bytes::put_u32(b, 8, self.fe_state as u32);
        bytes::put_u32(b, 12, self.fe_watch_state);
        bytes::put_u32(b, 16, self.be_watch_state);
    }

    fn read_from(b: &[u8]) -> CtrlHdr {
        CtrlHdr {
            devid: bytes::get_u32(b, 0) as i32,
            be_state: bytes::get_u32(b, 4) as i32,
            fe_state: bytes::get_u32(b, 8) as i32,
            fe_watch_state: bytes::get_u32(b, 12),
            be_watch_state: bytes::get_u32(b, 16),
        }
    }
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

impl SysctlCtrl {
    /// Offset of `request`, which the toolstack writes alone.
    pub const REQUEST_OFFSET: usize = 24;

    /// Posts a request in a sysctl page as the toolstack does (ABI 4.1): `request`, then
    /// `be_watch_state = updated`; the guest's own fields are not touched.
    pub fn post_request(page: &mut [u8], request: u32) {
        bytes::put_u32(page, Self::REQUEST_OFFSET, request);
        bytes::put_u32(page, 16, WatchState::Updated as u32);
    }

    pub fn write_to(&self, b: &mut [u8]) {
        self.hdr.write_to(b);
        bytes::put_u32(b, 20, self.fe_features);
        bytes::put_u32(b, 24, self.request);
    }

    pub fn read_from(b: &[u8]) -> SysctlCtrl {
        SysctlCtrl {
            hdr: CtrlHdr::read_from(b),
            fe_features: bytes::get_u32(b, 20),
            request: bytes::get_u32(b, 24),
        }
    }
}

/// vif `be_features` / `fe_features` bit: the backend copies into rx buffers / the frontend
/// asks it to.
pub const VIF_RX_COPY: u32 = 1 << 0;

/// A NoXS vif's MTU (the control page's `mtu`, and its TAP's in dom0), as Linux netfront's
/// default.
pub const VIF_MTU: u16 = 1500;

/// The grant reference under which the toolstack grants vif 0's control page to the vif's
/// backend; vif `n` uses `VIF_CTRL_GREF_FIRST + n`. Xen reserves references 0 to 7 of every
/// guest's grant table for toolstacks (console 0, Xenstore 1; guests hand out 8 and up), so
/// a NoXS guest has at most [`VIF_MAX`] vifs (ABI section 4.2).
pub const VIF_CTRL_GREF_FIRST: GrantRef = 2;
/// The most vifs a NoXS guest can have: the reserved references 2 to 7.
pub const VIF_MAX: usize = 6;

/// The grant reference of vif `id`'s control page, if `id` is below [`VIF_MAX`].
pub const fn vif_ctrl_gref(id: DevId) -> Option<GrantRef> {
    if (id as usize) < VIF_MAX {
        Some(VIF_CTRL_GREF_FIRST + id)
    } else {
        None
    }
}

/// The vif control page (section 4.2 of the ABI).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VifCtrl {
    pub hdr: CtrlHdr,
    pub mac: [u8; 6],
    pub mtu: u16,
    /// The address's four bytes in network order (10.0.0.2 is `[10, 0, 0, 2]`); zeros = none.
    pub ipv4: [u8; 4],
    pub ipv4_prefix: u8,
    pub _pad: [u8; 3],
    pub be_features: u32,
    pub tx_ring_ref: GrantRef,
    pub rx_ring_ref: GrantRef,
    pub evtchn_tx: EvtchnPort,
    pub evtchn_rx: EvtchnPort,
    pub fe_features: u32,
}

impl VifCtrl {
    pub fn write_to(&self, b: &mut [u8]) {
        self.hdr.write_to(b);
        if let Some(m) = b.get_mut(20..26) {
            m.copy_from_slice(&self.mac);
        }
        bytes::put_u16(b, 26, self.mtu);
        if let Some(a) = b.get_mut(28..32) {
            a.copy_from_slice(&self.ipv4);
        }
        if let Some(p) = b.get_mut(32) {
            *p = self.ipv4_prefix;
        }
        bytes::put_u32(b, 36, self.be_features);
        bytes::put_u32(b, 40, self.tx_ring_ref);
        bytes::put_u32(b, 44, self.rx_ring_ref);
        bytes::put_u32(b, 48, self.evtchn_tx);
        bytes::put_u32(b, 52, self.evtchn_rx);
        bytes::put_u32(b, 56, self.fe_features);
    }

    pub fn read_from(b: &[u8]) -> VifCtrl {
        let mut mac = [0u8; 6];
        if let Some(m) = b.get(20..26) {
            mac.copy_from_slice(m);
        }
        let mut ipv4 = [0u8; 4];
        if let Some(a) = b.get(28..32) {
            ipv4.copy_from_slice(a);
        }
        VifCtrl {
            hdr: CtrlHdr::read_from(b),
            mac,
            mtu: bytes::get_u16(b, 26),
            ipv4,
            ipv4_prefix: b.get(32).copied().unwrap_or(0),
            _pad: [0; 3],
            be_features: bytes::get_u32(b, 36),
            tx_ring_ref: bytes::get_u32(b, 40),
            rx_ring_ref: bytes::get_u32(b, 44),
            evtchn_tx: bytes::get_u32(b, 48),
            evtchn_rx: bytes::get_u32(b, 52),
            fe_features: bytes::get_u32(b, 56),
        }
    }
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
    fn pages_round_trip_through_their_bytes_and_short_buffers_do_not_panic() {
        let mut page = DevPage::new();
        page.add(DevPageEntry::guest_owned(DevType::Sysctl, 0, 0, 9, 3))
            .unwrap();
        page.add(DevPageEntry::guest_owned(DevType::Vif, 0, 0, 10, 5))
            .unwrap();
        let mut b = [0xffu8; 4096];
        page.write_to(&mut b);
        assert_eq!(DevPage::read_from(&b), page);
        assert_eq!(&b[..8], &[2, 0, 0, 0, 2, 0, 0, 0]);
        // Entry 1 at offset 28: type 2, id 0, be 0, flags 3, ctrl 10, evtchn 5.
        assert_eq!(
            &b[28..48],
            &[2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 10, 0, 0, 0, 5, 0, 0, 0]
        );
        let s = SysctlCtrl {
            hdr: CtrlHdr {
                devid: 0,
                be_state: state::CONNECTED,
                ..CtrlHdr::default()
            },
            fe_features: sysctl::POWEROFF,
            request: sysctl::REBOOT,
        };
        let mut b = [0u8; 64];
        s.write_to(&mut b);
        assert_eq!(SysctlCtrl::read_from(&b), s);
        assert_eq!(b[SysctlCtrl::REQUEST_OFFSET], 2);
        let v = VifCtrl {
            mac: [0, 0x16, 0x3e, 1, 2, 3],
            mtu: 1500,
            ipv4: [10, 0, 0, 2],
            ipv4_prefix: 24,
            tx_ring_ref: 8,
            evtchn_rx: 7,
            ..VifCtrl::default()
        };
        let mut b = [0u8; 64];
        v.write_to(&mut b);
        assert_eq!(VifCtrl::read_from(&b), v);
        // A short page reads as zeros past its end and takes writes without panicking.
        assert_eq!(DevPage::read_from(&[2, 0]).version, 0);
        DevPage::new().write_to(&mut [0u8; 10]);
        assert_eq!(&b[28..32], &[10, 0, 0, 2]);
        assert_eq!(VifCtrl::read_from(&b[..30]).ipv4, [0; 4]);
    }

    #[test]
    fn unknown_device_types_are_not_guessed() {
        assert_eq!(DevType::from_raw(2), Some(DevType::Vif));
        assert_eq!(DevType::from_raw(7), None);
    }
}
