//! The `devctl` hypercall of chaos's Xen patches (hypervisor-patches/xen-4.17/README.md): Xen
//! owns each domain's NoXS device page; the control domain fills it in. Stock Xen answers
//! `-ENOSYS`, which is how chaos tells the two apart.

use std::io;

use super::privcmd::{BufAlloc, Privcmd};
use crate::hypervisor::DomId;

/// The hypercall's number (noxs/ABI.md section 2).
pub const HYPERVISOR_DEVCTL: u64 = noxs::HYPERVISOR_DEVCTL as u64;
/// `XEN_DEVCTL_INTERFACE_VERSION`.
const INTERFACE_VERSION: u32 = 0x0000_0002;
pub const DEVCTL_GET: u32 = 1;
pub const DEVCTL_DEV_ADD: u32 = 2;
pub const DEVCTL_DEV_REMOVE: u32 = 3;
pub const DEVCTL_DEV_ENUM: u32 = 4;

/// `struct xen_devctl`: a 16-byte header and the command's member of `u` (648 bytes), kept as
/// bytes and filled at the README's offsets.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Devctl {
    pub interface_version: u32,
    pub cmd: u32,
    pub domain: u16,
    pub pad0: u16,
    pub pad1: u32,
    pub u: [u8; 648],
}
super::abi::plain! {
    Devctl = 664;
}

impl Devctl {
    pub fn new(cmd: u32, domain: DomId) -> Devctl {
        Devctl {
            interface_version: INTERFACE_VERSION,
            cmd,
            domain: domain.0,
            pad0: 0,
            pad1: 0,
            u: [0; 648],
        }
    }

    pub fn put_u32(&mut self, at: usize, v: u32) {
        self.u[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    pub fn get_u32(&self, at: usize) -> u32 {
        u32::from_le_bytes([self.u[at], self.u[at + 1], self.u[at + 2], self.u[at + 3]])
    }
}

/// Issues one devctl; returns the structure as Xen left it.
pub fn call(privcmd: &Privcmd, bufs: &BufAlloc, arg: Devctl) -> io::Result<Devctl> {
    let buf = bufs.one(arg)?;
    privcmd.hypercall("XEN_DEVCTL", HYPERVISOR_DEVCTL, [buf.addr(), 0, 0, 0, 0])?;
    Ok(buf.get())
}
