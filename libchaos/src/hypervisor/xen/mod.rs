//! The real hypervisor: Xen through Linux's `/dev/xen/privcmd` (hypercalls, foreign mappings)
//! and `/dev/xen/hypercall` (hypercall argument memory), in pure Rust on libc.
//!
//! One long-lived file descriptor per device, opened by [`XenHypervisor::open`], which also
//! checks that the running Xen speaks a domctl/sysctl interface version this backend knows
//! and refuses clearly otherwise.
//!
//! Frame numbers are Xen's own, as the trait defines them: machine frames (MFNs) for a PV
//! guest, guest frames for a PVH guest; this backend passes them through untouched.

mod abi;
mod devctl;
mod domctl;
mod hvm;
mod ops;
mod privcmd;
mod pvh;

use std::io;

use self::abi::*;
use self::domctl::*;
use self::privcmd::{BufAlloc, HcallBuf, MapError, Mapping, Privcmd};
use super::{
    CreateDomain, DomId, DomainEvents, DomainInfo, EvtchnPort, ForeignMapping, GrantEntry,
    GuestKind, Hypervisor, HypervisorError, NoxsFlavour, PageTableLevel, PhysInfo, Result,
    ShutdownReason, TscMode, Uuid, VcpuContext, PAGE_SIZE,
};

pub use self::privcmd::PRIVCMD_PATH;

/// Extents per `XENMEM_populate_physmap` call (64 KiB of frame numbers).
const POPULATE_BATCH: usize = 8192;
/// Domains per `XEN_SYSCTL_getdomaininfolist` call.
const LIST_BATCH: usize = 256;
/// v1 grant entries per grant-table frame.
const GRANTS_PER_FRAME: u32 = (PAGE_SIZE / std::mem::size_of::<GrantEntryV1>()) as u32;
/// How often destroy is retried while Xen says EAGAIN.
const DESTROY_RETRIES: u32 = 1000;

/// Xen, seen from dom0.
#[derive(Debug)]
pub struct XenHypervisor {
    privcmd: Privcmd,
    /// `/dev/xen/evtchn`, opened the first time a guest port is notified.
    evtchn: std::sync::Mutex<Option<xen_dev::EventChannels>>,
    /// Whether the devctl hypercall answers, found out the first time it matters.
    noxs: std::sync::OnceLock<super::NoxsFlavour>,
    bufs: BufAlloc,
    iface: Interface,
    /// `(major, minor)` as `XENVER_version` reports it.
    version: (u16, u16),
}

fn os(op: &'static str, source: io::Error) -> HypervisorError {
    HypervisorError::Os { op, source }
}

fn invalid(op: &'static str, reason: impl Into<String>) -> HypervisorError {
    HypervisorError::Invalid {
        op,
        reason: reason.into(),
    }
}

/// Xen's "no such domain" becomes [`HypervisorError::NoSuchDomain`]; the rest stays an errno.
fn dom_err(op: &'static str, dom: DomId, e: io::Error) -> HypervisorError {
    if e.raw_os_error() == Some(libc::ESRCH) {
        HypervisorError::NoSuchDomain(dom)
    } else {
        os(op, e)
    }
}

fn is_errno(e: &io::Error, errno: i32) -> bool {
    e.raw_os_error() == Some(errno)
}

impl XenHypervisor {
    /// Opens `/dev/xen/privcmd` (and `/dev/xen/hypercall`) and checks the interface versions.
    ///
    /// [`HypervisorError::NoXen`] when this machine is not a Xen dom0;
    /// [`HypervisorError::UnsupportedInterface`] when Xen speaks a domctl or sysctl version
    /// this backend does not (the version Xen does speak is named when it can be found).
    pub fn open() -> Result<XenHypervisor> {
        let privcmd = Privcmd::open()?;
        let bufs = BufAlloc::open()?;
        let mut xen = XenHypervisor {
            privcmd,
            evtchn: std::sync::Mutex::new(None),
            noxs: std::sync::OnceLock::new(),
            bufs,
            iface: Interface::Xen417,
            version: (0, 0),
        };
        xen.version = xen.xen_version()?;
        xen.iface = xen.probe_domctl()?;
        xen.probe_sysctl()?;
        log::debug!(
            "xen {}.{}, domctl {:#x}, sysctl {:#x}",
            xen.version.0,
            xen.version.1,
            xen.iface.domctl_version(),
            xen.iface.sysctl_version()
        );
        Ok(xen)
    }

    /// The hypervisor's `(major, minor)` version.
    pub fn version(&self) -> (u16, u16) {
        self.version
    }

    /// The domctl interface version in use.
    pub fn domctl_version(&self) -> u32 {
        self.iface.domctl_version()
    }

    fn xen_version(&self) -> Result<(u16, u16)> {
        let v = self
            .privcmd
            .hypercall(
                "XENVER_version",
                HYPERVISOR_XEN_VERSION,
                [XENVER_VERSION, 0, 0, 0, 0],
            )
            .map_err(|e| os("XENVER_version", e))?;
        Ok(((v >> 16) as u16, v as u16))
    }

    /// Issues a harmless `getdomaininfo` of dom0 with each known version, then, if Xen refused
    /// them all (EACCES = wrong interface version), with other versions to name the one it has.
    fn probe_domctl(&self) -> Result<Interface> {
        const OP: &str = "XEN_DOMCTL_getdomaininfo (interface probe)";
        let try_version = |version: u32| -> Result<bool> {
            let mut d = Domctl::new(
                Interface::Xen417,
                XEN_DOMCTL_GETDOMAININFO,
                0,
                GetDomainInfoV15::default(),
            );
            d.interface_version = version;
            match self.raw_domctl(OP, d) {
                Ok(_) => Ok(true),
                Err(e) if is_errno(&e, libc::EACCES) => Ok(false),
                Err(e) => Err(os(OP, e)),
            }
        };
        for iface in Interface::ALL {
            if try_version(iface.domctl_version())? {
                return Ok(*iface);
            }
        }
        for version in PROBE_DOMCTL_VERSIONS {
            if try_version(version)? {
                return Err(HypervisorError::UnsupportedInterface {
                    interface: "domctl",
                    version,
                    known: Interface::KNOWN,
                });
            }
        }
        Err(HypervisorError::UnsupportedInterface {
            interface: "domctl (Xen refused every version from 0x0e to 0x20 with EACCES; \
                        version shown is the one expected)",
            version: Interface::Xen417.domctl_version(),
            known: Interface::KNOWN,
        })
    }

    fn probe_sysctl(&self) -> Result<()> {
        match self.physinfo_raw() {
            Ok(_) => Ok(()),
            Err(e) if is_errno(&e, libc::EACCES) => Err(HypervisorError::UnsupportedInterface {
                interface: "sysctl",
                version: self.iface.sysctl_version(),
                known: Interface::KNOWN,
            }),
            Err(e) => Err(os("XEN_SYSCTL_physinfo", e)),
        }
    }

    // ------------------------------------------------------------ hypercall plumbing

    /// A domctl with the payload `d`; returns the structure as Xen left it.
    /// A domctl counted as `op`; returns the structure as Xen left it.
    fn raw_domctl<P: Plain>(&self, op: &'static str, d: Domctl<P>) -> io::Result<Domctl<P>> {
        // Xen copies a whole struct xen_domctl in and out: the buffer is at least a page.
        let buf = self.bufs.one(d)?;
        self.privcmd
            .hypercall(op, HYPERVISOR_DOMCTL, [buf.addr(), 0, 0, 0, 0])?;
        Ok(buf.get())
    }

    fn domctl<P: Plain>(
        &self,
        op: &'static str,
        dom: DomId,
        cmd: u32,
        payload: P,
    ) -> Result<Domctl<P>> {
        self.raw_domctl(op, Domctl::new(self.iface, cmd, dom.0, payload))
            .map_err(|e| dom_err(op, dom, e))
    }

    fn sysctl<P: Plain>(&self, op: &'static str, cmd: u32, payload: P) -> io::Result<Sysctl<P>> {
        let buf = self.bufs.one(Sysctl::new(self.iface, cmd, payload))?;
        self.privcmd
            .hypercall(op, HYPERVISOR_SYSCTL, [buf.addr(), 0, 0, 0, 0])?;
        Ok(buf.get())
    }

    /// A hypercall taking `(cmd, &arg)`, counted as `op`; returns Xen's (non-negative)
    /// result and the argument.
    fn op_with_arg<T: Plain>(
        &self,
        op: &'static str,
        nr: u64,
        cmd: u64,
        arg: T,
    ) -> io::Result<(i64, T)> {
        let buf = self.bufs.one(arg)?;
        let rc = self.privcmd.hypercall(op, nr, [cmd, buf.addr(), 0, 0, 0])?;
        Ok((rc, buf.get()))
    }

    fn physinfo_raw(&self) -> io::Result<PhysinfoV15> {
        Ok(self
            .sysctl(
                "XEN_SYSCTL_physinfo",
                XEN_SYSCTL_PHYSINFO,
                PhysinfoV15::default(),
            )?
            .u)
    }

    fn out_of_memory(&self, op: &'static str, needed_pages: u64) -> HypervisorError {
        match self.physinfo_raw() {
            Ok(p) => HypervisorError::OutOfMemory {
                op,
                needed_pages,
                free_pages: p.free_pages,
            },
            Err(e) => os(op, e),
        }
    }
}

fn info_of(d: &GetDomainInfoV15) -> DomainInfo {
    let shutdown = if d.flags & XEN_DOMINF_SHUTDOWN != 0 {
        ShutdownReason::from_code((d.flags >> XEN_DOMINF_SHUTDOWNSHIFT) & XEN_DOMINF_SHUTDOWNMASK)
    } else {
        None
    };
    DomainInfo {
        domid: DomId(d.domain),
        dying: d.flags & XEN_DOMINF_DYING != 0,
        paused: d.flags & XEN_DOMINF_PAUSED != 0,
        blocked: d.flags & XEN_DOMINF_BLOCKED != 0,
        running: d.flags & XEN_DOMINF_RUNNING != 0,
        shutdown,
        tot_pages: d.tot_pages,
        max_pages: d.max_pages,
        shared_info_frame: d.shared_info_frame,
        cpu_time_ns: d.cpu_time,
        online_vcpus: d.nr_online_vcpus,
        max_vcpu_id: d.max_vcpu_id,
        handle: Uuid(d.handle),
    }
}

/// The createdomain payload for `args` (domctl 0x15).
fn createdomain_v15(args: &CreateDomain) -> Result<CreateDomainV15> {
    const OP: &str = "XEN_DOMCTL_createdomain";
    let frames = |what: &str, v: u32| {
        i32::try_from(v).map_err(|_| invalid(OP, format!("{what} {v} is too large")))
    };
    let (flags, emulation_flags) = match args.kind {
        GuestKind::Pv => (0, 0),
        // PVH: an HVM container with hardware-assisted paging and only the local APIC
        // emulated (what libxl asks for type="pvh").
        GuestKind::Pvh => (XEN_DOMCTL_CDF_HVM | XEN_DOMCTL_CDF_HAP, XEN_X86_EMU_LAPIC),
    };
    if args.max_vcpus == 0 {
        return Err(invalid(OP, "max_vcpus must be at least 1"));
    }
    Ok(CreateDomainV15 {
        ssidref: 0,
        handle: args.handle.0,
        flags,
        iommu_opts: 0,
        max_vcpus: args.max_vcpus,
        max_evtchn_port: args.max_evtchn_port,
        max_grant_frames: frames("max_grant_frames", args.max_grant_frames)?,
        max_maptrack_frames: frames("max_maptrack_frames", args.max_maptrack_frames)?,
        // Grant table v1 only: the toolstack seeds v1 entries.
        grant_opts: 1,
        vmtrace_size: 0,
        cpupool_id: 0,
        arch: ArchDomainConfig {
            emulation_flags,
            misc_flags: 0,
        },
    })
}

#[cfg(test)]
mod tests;
