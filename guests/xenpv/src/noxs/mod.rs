//! The NoXS frontend (noxs/ABI.md, the `noxs` crate has the layouts): which control plane the
//! guest is on, its device page, and the sysctl device.
//!
//! Lookup (ABI section 2): the `devctl` hypercall first (Xen with chaos's patches,
//! hypervisor-patches/xen-4.17; stock Xen answers -ENOSYS), then SIF_NOXS in the start info's flags with the page in the Xenstore
//! ring's place, else Xenstore if there is a Xenstore channel. The page and the control pages
//! are only trusted as far as [`parse`] checks them: version, counts, types, ports, and every
//! control frame inside our memory and boot mapping ([`StartInfo::frame`]).

pub use ::noxs as abi;

use crate::hypercall::{self, Shutdown};
use crate::start::{Ring, StartInfo};
use crate::{Page, PAGE_SIZE, PHYS_SHIFT};
use abi::{DevPage, DevType, DEV_COUNT_MAX, DEV_PAGE_VERSION, ENTRY_GUEST_FRAME, ENTRY_GUEST_PORT};
use core::mem::offset_of;
use core::sync::atomic::{fence, AtomicU32, Ordering};

/// How this guest talks to its toolstack and backends.
// Large (the copied device page), but built once at boot and there is no allocator to box it.
#[allow(clippy::large_enum_variant)]
pub enum Plane {
    /// A device page was found; its contents, or why they were refused.
    NoXs(Result<Devices, PageError>),
    /// No device page, a Xenstore ring.
    Xenstore(Ring),
    /// Neither (a guest started with no control plane at all).
    None,
}

/// Finds the control plane (ABI section 2).
pub fn plane(si: &StartInfo) -> Plane {
    let (page, own_frame) = if let Some(page) = hypervisor_page(si) {
        (page, None)
    } else if si.flags() & abi::SIF_NOXS != 0 {
        let frame = si.store_frame();
        match frame.and_then(|f| si.frame(f)) {
            Some(page) => (page.cast_const(), frame),
            None => return Plane::NoXs(Err(PageError::NotMapped(frame.unwrap_or(0)))),
        }
    } else {
        return si.xenstore().map_or(Plane::None, Plane::Xenstore);
    };
    // SAFETY: `page` is a mapped page of ours (checked above) holding the device page; it is
    // copied once (a plain copy: a volatile one would be 162 separate loads) and only the copy
    // is looked at.
    let copy = unsafe { page.cast::<DevPage>().read() };
    let mut devices = parse(&copy, own_frame, |f| si.frame(f).is_some());
    if let Ok(d) = &mut devices {
        d.from_hypervisor = own_frame.is_none();
    }
    Plane::NoXs(devices)
}

/// Why a device page was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageError {
    /// The frame the start info names is not memory of ours in the boot mapping.
    NotMapped(u64),
    /// `version` is not [`DEV_PAGE_VERSION`].
    Version(u32),
    /// `dev_count` is above [`DEV_COUNT_MAX`].
    TooMany(u32),
    /// `dev_count` differs from the entries in use.
    Count { said: u32, found: u32 },
    /// Slot `0`'s entry is LightVM's kind (control page granted, port to bind): unsupported.
    NotGuestOwned(usize),
    /// Slot `0`'s event channel is 0.
    NoPort(usize),
    /// Slot `.0`'s control frame `.1` is not memory of ours that we may use.
    BadFrame(usize, u64),
    /// Slot `0`'s control frame is the device page's or another device's.
    SharedFrame(usize),
}

impl PageError {
    /// A short message naming the problem (for the console).
    pub fn describe(&self, out: &mut crate::line::Line<200>) {
        match *self {
            PageError::NotMapped(f) => out.push(b"device page frame not ours: ").hex(f),
            PageError::Version(v) => out.push(b"device page version ").dec(v.into()),
            PageError::TooMany(n) => out.push(b"device page dev_count too big: ").dec(n.into()),
            PageError::Count { said, found } => out
                .push(b"device page dev_count ")
                .dec(said.into())
                .push(b" but entries in use ")
                .dec(found.into()),
            PageError::NotGuestOwned(s) => out
                .push(b"unsupported (granted) control page in slot ")
                .dec(s as u64),
            PageError::NoPort(s) => out.push(b"no event channel in slot ").dec(s as u64),
            PageError::BadFrame(s, f) => out
                .push(b"control frame ")
                .hex(f)
                .push(b" not ours in slot ")
                .dec(s as u64),
            PageError::SharedFrame(s) => out.push(b"control frame reused in slot ").dec(s as u64),
        };
    }
}

/// One validated device of a known type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Device {
    pub kind: DevType,
    pub id: u32,
    pub backend: u16,
    /// Frame of the control page (PV pfn, PVH gfn), checked to be ours.
    pub ctrl: u64,
    /// Our port toward `backend`.
    pub evtchn: u32,
}

impl Device {
    /// `sysctl`, `vif` or `vbd`.
    pub fn kind_name(&self) -> &'static [u8] {
        match self.kind {
            DevType::Sysctl => b"sysctl",
            DevType::Vif => b"vif",
            DevType::Vbd => b"vbd",
            DevType::None => b"none",
        }
    }
}

/// The devices of a validated device page.
pub struct Devices {
    page: DevPage,
    /// The page is Xen's (devctl), not the toolstack's (SIF_NOXS).
    pub from_hypervisor: bool,
}

impl Devices {
    /// The devices of known types, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = Device> + '_ {
        self.page.devs.iter().filter_map(|e| {
            let kind = DevType::from_raw(e.dev_type).filter(|&t| t != DevType::None)?;
            Some(Device {
                kind,
                id: e.id,
                backend: e.be_id,
                ctrl: e.comm.grant.into(),
                evtchn: e.comm.evtchn,
            })
        })
    }

    /// The `n`th device of type `kind` (ABI: entries of a type are taken in slot order).
    pub fn nth(&self, kind: DevType, n: usize) -> Option<Device> {
        self.iter().filter(|d| d.kind == kind).nth(n)
    }
}

/// Checks a device page (ABI section 3): version, `dev_count` against the entries in use, and
/// for each entry of a known type: chaos's entry kind (control page in guest memory, our own
/// port), a port, a control frame that `frame_ok` accepts and that no other device (nor the
/// device page itself, frame `own_frame`) uses. Entries of unknown types are ignored.
pub fn parse(
    page: &DevPage,
    own_frame: Option<u64>,
    frame_ok: impl Fn(u64) -> bool,
) -> Result<Devices, PageError> {
    if page.version != DEV_PAGE_VERSION {
        return Err(PageError::Version(page.version));
    }
    if page.dev_count as usize > DEV_COUNT_MAX {
        return Err(PageError::TooMany(page.dev_count));
    }
    let in_use = page.devs.iter().filter(|e| e.dev_type != 0).count() as u32;
    if in_use != page.dev_count {
        return Err(PageError::Count {
            said: page.dev_count,
            found: in_use,
        });
    }
    let known =
        |e: &abi::DevPageEntry| DevType::from_raw(e.dev_type).is_some_and(|t| t != DevType::None);
    for (slot, e) in page.devs.iter().enumerate().filter(|(_, e)| known(e)) {
        let both = ENTRY_GUEST_FRAME | ENTRY_GUEST_PORT;
        if e.flags & both != both {
            return Err(PageError::NotGuestOwned(slot));
        }
        if e.comm.evtchn == 0 {
            return Err(PageError::NoPort(slot));
        }
        let frame = u64::from(e.comm.grant);
        if !frame_ok(frame) {
            return Err(PageError::BadFrame(slot, frame));
        }
        let reused = page.devs[..slot]
            .iter()
            .any(|o| known(o) && o.comm.grant == e.comm.grant);
        if reused || own_frame == Some(frame) {
            return Err(PageError::SharedFrame(slot));
        }
    }
    Ok(Devices {
        page: *page,
        from_hypervisor: false,
    })
}

/// `struct xen_devctl` of chaos's Xen patches (hypervisor-patches/xen-4.17/README.md), with the
/// `XEN_DEVCTL_get` member of its union: Xen reads and writes only the 16-byte header and that
/// member, so this is all a caller needs.
#[repr(C)]
struct DevctlGet {
    interface_version: u32,
    cmd: u32,
    domain: u16,
    pad0: u16,
    pad1: u32,
    /// IN: `XEN_DEVCTL_GET_MAP` (translated callers: Xen maps the page at `gfn`).
    flags: u32,
    pad: u32,
    gfn: u64,
    /// OUT: PV, the page's machine frame; PVH with GET_MAP, `gfn`.
    frame: u64,
    /// OUT: the page's layout version and entries in use.
    version: u32,
    dev_count: u32,
}
const DEVCTL_INTERFACE_VERSION: u32 = 2;
const DEVCTL_GET: u32 = 1;
const DEVCTL_GET_MAP: u32 = 1;
/// Present | user: read-only.
const PTE_RO: u64 = 0x5;

/// Where the hypervisor's device page is mapped: a page of our image (under PVH Xen puts its page
/// at this page's frame, read-only, and frees the RAM that was there).
static HYPERVISOR_PAGE: Page = Page::new();

/// The device page Xen owns (patched Xen only), mapped read-only; None on stock Xen (-ENOSYS),
/// on any refusal, and when it lists no device: patched Xen gives every domain a page, and a
/// guest created without NoXS devices (by xl, or by chaos on the Xenstore plane) has an empty
/// one, so it goes on to the other lookups.
fn hypervisor_page(si: &StartInfo) -> Option<*const u8> {
    let page = HYPERVISOR_PAGE.as_ptr();
    let gfn = (page as u64 - PHYS_SHIFT) / PAGE_SIZE;
    let pvh = si.is_pvh();
    let mut arg = DevctlGet {
        interface_version: DEVCTL_INTERFACE_VERSION,
        cmd: DEVCTL_GET,
        domain: hypercall::DOMID_SELF,
        pad0: 0,
        pad1: 0,
        flags: if pvh { DEVCTL_GET_MAP } else { 0 },
        pad: 0,
        gfn: if pvh { gfn } else { 0 },
        frame: 0,
        version: 0,
        dev_count: 0,
    };
    if hypercall::devctl(&mut arg) != 0 || arg.dev_count == 0 {
        return None;
    }
    if pvh {
        return (arg.frame == gfn).then_some(page.cast_const());
    }
    hypercall::update_va_mapping(page as u64, (arg.frame << 12) | PTE_RO)
        .then_some(page.cast_const())
}

/// `struct xen_devctl` with its whole 648-byte union, for the commands other than `get`.
#[repr(C)]
struct DevctlAny {
    interface_version: u32,
    cmd: u32,
    domain: u16,
    pad0: u16,
    pad1: u32,
    u: [u8; 648],
}
const DEVCTL_DEV_ADD: u32 = 2;
const DEVCTL_DEV_REMOVE: u32 = 3;

/// What Xen answers this guest when it asks for what only the control domain may do (the lab's
/// security test): `dev_add` and `dev_remove` of a sysctl device on itself, and `get` of dom0's
/// page. Each is Xen's return value: -EPERM (-1) from patched Xen, -ENOSYS (-38) from stock Xen;
/// 0 would be a hole.
pub fn devctl_probe() -> [(&'static [u8], i64); 3] {
    let call = |cmd: u32, domain: u16| {
        let mut arg = DevctlAny {
            interface_version: DEVCTL_INTERFACE_VERSION,
            cmd,
            domain,
            pad0: 0,
            pad1: 0,
            u: [0; 648],
        };
        // dev_add / dev_remove: type (sysctl), id 7; the rest (backend, grant, port) zero.
        arg.u[0..4].copy_from_slice(&(DevType::Sysctl as u32).to_le_bytes());
        arg.u[4..8].copy_from_slice(&7u32.to_le_bytes());
        hypercall::devctl(&mut arg)
    };
    [
        (b"dev_add self", call(DEVCTL_DEV_ADD, hypercall::DOMID_SELF)),
        (
            b"dev_remove self",
            call(DEVCTL_DEV_REMOVE, hypercall::DOMID_SELF),
        ),
        (b"get dom0", call(DEVCTL_GET, 0)),
    ]
}

/// The sysctl device's control page (ABI section 4.1): power requests from the toolstack.
pub struct Sysctl {
    page: *mut u8,
    /// Our port toward the toolstack: it notifies it with each request.
    pub port: u32,
}

const FE_STATE: usize = offset_of!(abi::CtrlHdr, fe_state);
const BE_WATCH_STATE: usize = offset_of!(abi::CtrlHdr, be_watch_state);
const FE_FEATURES: usize = offset_of!(abi::SysctlCtrl, fe_features);
const REQUEST: usize = offset_of!(abi::SysctlCtrl, request);

impl Sysctl {
    /// The sysctl device of `devices`, its control page mapped; None without one.
    pub fn find(si: &StartInfo, devices: &Devices) -> Option<Sysctl> {
        let dev = devices.nth(DevType::Sysctl, 0)?;
        let page = si.frame(dev.ctrl)?;
        // SAFETY: `parse` and `frame` checked the frame is ours and mapped; it is the sysctl
        // control page, which only this object touches in this guest.
        Some(unsafe { Sysctl::over(page, dev.evtchn) })
    }

    /// # Safety
    /// `page` must be a mapped, writable 4 KiB page that nothing else in this guest uses.
    pub unsafe fn over(page: *mut u8, port: u32) -> Sysctl {
        Sysctl { page, port }
    }

    fn field(&self, off: usize) -> &AtomicU32 {
        // SAFETY: off is a 4-byte aligned u32/i32 field of the control page (see `over`).
        unsafe { &*self.page.add(off).cast::<AtomicU32>() }
    }

    /// Says which requests we obey (`abi::sysctl` bits), then that we listen (Connected).
    pub fn listen(&self, features: u32) {
        self.field(FE_FEATURES).store(features, Ordering::Relaxed);
        fence(Ordering::Release);
        self.field(FE_STATE)
            .store(abi::state::CONNECTED as u32, Ordering::Release);
    }

    /// The pending request, if any, acknowledged (`request` and `be_watch_state` cleared).
    pub fn take_request(&self) -> Option<u32> {
        let request = self.field(REQUEST).load(Ordering::Acquire);
        if request == 0 {
            return None;
        }
        self.field(REQUEST).store(0, Ordering::Relaxed);
        self.field(BE_WATCH_STATE).store(0, Ordering::Release);
        Some(request)
    }
}

/// A vif device's control page (ABI section 4.2): the toolstack's MAC and address, our ring
/// references and ports, the backend's state.
pub struct Vif {
    page: *mut u8,
    /// The backend's domain (grants and ports go to it).
    pub backend: u16,
    /// The device's own channel (from the device page): notified once we published.
    pub port: u32,
}

const VIF_BE_STATE: usize = offset_of!(abi::CtrlHdr, be_state);
const VIF_FE_WATCH_STATE: usize = offset_of!(abi::CtrlHdr, fe_watch_state);
const VIF_MAC: usize = offset_of!(abi::VifCtrl, mac);
const VIF_IPV4: usize = offset_of!(abi::VifCtrl, ipv4);
const VIF_TX_RING_REF: usize = offset_of!(abi::VifCtrl, tx_ring_ref);
const VIF_RX_RING_REF: usize = offset_of!(abi::VifCtrl, rx_ring_ref);
const VIF_EVTCHN_TX: usize = offset_of!(abi::VifCtrl, evtchn_tx);
const VIF_EVTCHN_RX: usize = offset_of!(abi::VifCtrl, evtchn_rx);
const VIF_FE_FEATURES: usize = offset_of!(abi::VifCtrl, fe_features);

impl Vif {
    /// The `n`th vif of `devices`, its control page mapped; None without one.
    pub fn find(si: &StartInfo, devices: &Devices, n: usize) -> Option<Vif> {
        let dev = devices.nth(DevType::Vif, n)?;
        let page = si.frame(dev.ctrl)?;
        // SAFETY: `parse` and `frame` checked the frame is ours and mapped; it is this vif's
        // control page, which only this object touches in this guest.
        Some(unsafe { Vif::over(page, dev.backend, dev.evtchn) })
    }

    /// # Safety
    /// `page` must be a mapped, writable 4 KiB page that nothing else in this guest uses.
    pub unsafe fn over(page: *mut u8, backend: u16, port: u32) -> Vif {
        Vif {
            page,
            backend,
            port,
        }
    }

    fn field(&self, off: usize) -> &AtomicU32 {
        // SAFETY: off is a 4-byte aligned u32/i32 field of the control page (see `over`).
        unsafe { &*self.page.add(off).cast::<AtomicU32>() }
    }

    fn bytes<const N: usize>(&self, off: usize) -> [u8; N] {
        // SAFETY: [off, off + N) lies inside the control page (see `over`).
        unsafe { self.page.add(off).cast::<[u8; N]>().read_volatile() }
    }

    /// The MAC the toolstack gave the interface.
    pub fn mac(&self) -> [u8; 6] {
        self.bytes(VIF_MAC)
    }

    /// The IPv4 address the toolstack gave the interface (`ip=` of the vif), if any.
    pub fn ipv4(&self) -> Option<[u8; 4]> {
        Some(self.bytes(VIF_IPV4)).filter(|ip| *ip != [0; 4])
    }

    /// The backend's XenbusState.
    pub fn backend_state(&self) -> i32 {
        self.field(VIF_BE_STATE).load(Ordering::Acquire) as i32
    }

    /// Publishes our rings (granted to the backend) and our port toward it (tx and rx on one),
    /// asks for rx-copy, says Connected and notifies the device channel.
    pub fn connect(&self, tx_ring_ref: u32, rx_ring_ref: u32, port: u32) {
        self.field(VIF_TX_RING_REF)
            .store(tx_ring_ref, Ordering::Relaxed);
        self.field(VIF_RX_RING_REF)
            .store(rx_ring_ref, Ordering::Relaxed);
        self.field(VIF_EVTCHN_TX).store(port, Ordering::Relaxed);
        self.field(VIF_EVTCHN_RX).store(port, Ordering::Relaxed);
        self.field(VIF_FE_FEATURES)
            .store(abi::VIF_RX_COPY, Ordering::Relaxed);
        fence(Ordering::Release);
        self.field(VIF_FE_WATCH_STATE)
            .store(abi::WatchState::Requested as u32, Ordering::Relaxed);
        self.field(FE_STATE)
            .store(abi::state::CONNECTED as u32, Ordering::Release);
        hypercall::evtchn_send(self.port);
    }
}

/// The shutdown a sysctl request bit asks for (None for anything else, several bits too).
pub fn request_reason(request: u32) -> Option<Shutdown> {
    Some(match abi::sysctl::shutdown_reason(request)? {
        0 => Shutdown::Poweroff,
        1 => Shutdown::Reboot,
        2 => Shutdown::Suspend,
        3 => Shutdown::Crash,
        _ => Shutdown::Watchdog,
    })
}

#[cfg(test)]
mod tests;
