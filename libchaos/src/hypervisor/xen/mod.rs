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
mod domctl;
mod hvm;
mod privcmd;

use std::io;

use self::abi::*;
use self::domctl::*;
use self::privcmd::{BufAlloc, HcallBuf, MapError, Mapping, Privcmd};
use super::{
    CreateDomain, DomId, DomainInfo, ForeignMapping, GrantEntry, GuestKind, Hypervisor,
    HypervisorError, PageTableLevel, PhysInfo, Result, ShutdownReason, Uuid, VcpuContext,
    PAGE_SIZE,
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
            .hypercall(HYPERVISOR_XEN_VERSION, [XENVER_VERSION, 0, 0, 0, 0])
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
            match self.raw_domctl(d) {
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
    fn raw_domctl<P: Plain>(&self, d: Domctl<P>) -> io::Result<Domctl<P>> {
        // Xen copies a whole struct xen_domctl in and out: the buffer is at least a page.
        let buf = self.bufs.one(d)?;
        self.privcmd
            .hypercall(HYPERVISOR_DOMCTL, [buf.addr(), 0, 0, 0, 0])?;
        Ok(buf.get())
    }

    fn domctl<P: Plain>(
        &self,
        op: &'static str,
        dom: DomId,
        cmd: u32,
        payload: P,
    ) -> Result<Domctl<P>> {
        self.raw_domctl(Domctl::new(self.iface, cmd, dom.0, payload))
            .map_err(|e| dom_err(op, dom, e))
    }

    fn sysctl<P: Plain>(&self, cmd: u32, payload: P) -> io::Result<Sysctl<P>> {
        let buf = self.bufs.one(Sysctl::new(self.iface, cmd, payload))?;
        self.privcmd
            .hypercall(HYPERVISOR_SYSCTL, [buf.addr(), 0, 0, 0, 0])?;
        Ok(buf.get())
    }

    /// A hypercall taking `(cmd, &arg)`; returns Xen's (non-negative) result and the argument.
    fn op_with_arg<T: Plain>(&self, nr: u64, cmd: u64, arg: T) -> io::Result<(i64, T)> {
        let buf = self.bufs.one(arg)?;
        let rc = self.privcmd.hypercall(nr, [cmd, buf.addr(), 0, 0, 0])?;
        Ok((rc, buf.get()))
    }

    fn physinfo_raw(&self) -> io::Result<PhysinfoV15> {
        Ok(self.sysctl(XEN_SYSCTL_PHYSINFO, PhysinfoV15::default())?.u)
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

/// The 64-bit PV initial vcpu state, as libxc's `vcpu_x86_64()` sets it up.
fn pv_context(rip: u64, rsp: u64, rsi: u64, cr3_mfn: u64) -> VcpuGuestContext {
    let mut c = VcpuGuestContext {
        flags: VGCF_IN_KERNEL | VGCF_ONLINE,
        ..Default::default()
    };
    c.user_regs.rip = rip;
    c.user_regs.rsp = rsp;
    c.user_regs.rsi = rsi;
    c.user_regs.rflags = X86_EFLAGS_IF;
    c.user_regs.cs = FLAT_KERNEL_CS64;
    c.user_regs.ss = FLAT_KERNEL_SS64;
    c.user_regs.ds = FLAT_KERNEL_DS64;
    c.user_regs.es = FLAT_KERNEL_DS64;
    c.user_regs.fs = FLAT_KERNEL_DS64;
    c.user_regs.gs = FLAT_KERNEL_DS64;
    c.kernel_ss = FLAT_KERNEL_SS64 as u64;
    c.kernel_sp = rsp;
    c.ctrlreg[3] = pfn_to_cr3(cr3_mfn);
    c.debugreg[6] = X86_DR6_DEFAULT;
    c.debugreg[7] = X86_DR7_DEFAULT;
    c
}

/// A foreign mapping handed out through the trait.
struct XenMapping(Mapping);

impl ForeignMapping for XenMapping {
    fn bytes(&self) -> &[u8] {
        self.0.as_slice()
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        self.0.as_mut_slice()
    }
}

impl Hypervisor for XenHypervisor {
    fn name(&self) -> &'static str {
        "xen"
    }

    fn physinfo(&self) -> Result<PhysInfo> {
        let p = self
            .physinfo_raw()
            .map_err(|e| os("XEN_SYSCTL_physinfo", e))?;
        Ok(PhysInfo {
            nr_cpus: p.nr_cpus,
            total_pages: p.total_pages,
            free_pages: p.free_pages,
        })
    }

    fn create_domain(&self, args: &CreateDomain) -> Result<DomId> {
        const OP: &str = "XEN_DOMCTL_createdomain";
        let payload = createdomain_v15(args)?;
        // Domain 0 in the request: Xen picks a free id and returns it in `domain`.
        let d = self
            .raw_domctl(Domctl::new(self.iface, XEN_DOMCTL_CREATEDOMAIN, 0, payload))
            .map_err(|e| os(OP, e))?;
        let dom = DomId(d.domain);
        // Xen 4.17 allocates the vcpus only on XEN_DOMCTL_max_vcpus (libxl's build_pre calls
        // it right after creation), with the same count createdomain was given.
        let arg = MaxVcpus {
            max: args.max_vcpus,
            _pad: 0,
        };
        if let Err(e) = self.domctl("XEN_DOMCTL_max_vcpus", dom, XEN_DOMCTL_MAX_VCPUS, arg) {
            if let Err(d) = self.destroy_domain(dom) {
                log::warn!("cannot destroy half-created domain {dom}: {d}");
            }
            return Err(e);
        }
        Ok(dom)
    }

    fn destroy_domain(&self, dom: DomId) -> Result<()> {
        const OP: &str = "XEN_DOMCTL_destroydomain";
        if dom == DomId::DOM0 {
            return Err(invalid(OP, "refusing to destroy dom0"));
        }
        // Xen restarts long teardowns itself (hypercall continuations); EAGAIN means "call
        // again", as libxc's callers do.
        let mut tries = 0;
        loop {
            match self.domctl(OP, dom, XEN_DOMCTL_DESTROYDOMAIN, NoPayload::default()) {
                Err(HypervisorError::Os { source, .. })
                    if is_errno(&source, libc::EAGAIN) && tries < DESTROY_RETRIES =>
                {
                    tries += 1;
                    std::thread::yield_now();
                }
                Err(e) => return Err(e),
                Ok(_) => break,
            }
        }
        Ok(())
    }

    fn set_domain_handle(&self, dom: DomId, handle: Uuid) -> Result<()> {
        const OP: &str = "XEN_DOMCTL_setdomainhandle";
        let handle = handle.0;
        self.domctl(OP, dom, XEN_DOMCTL_SETDOMAINHANDLE, DomainHandle { handle })?;
        Ok(())
    }

    fn pause_domain(&self, dom: DomId) -> Result<()> {
        const OP: &str = "XEN_DOMCTL_pausedomain";
        self.domctl(OP, dom, XEN_DOMCTL_PAUSEDOMAIN, NoPayload::default())?;
        Ok(())
    }

    fn unpause_domain(&self, dom: DomId) -> Result<()> {
        const OP: &str = "XEN_DOMCTL_unpausedomain";
        // Xen would unpause a domain whose vcpus are all down and it would sit there doing
        // nothing; refuse like the simulator does. A vcpu is online once it has a context.
        let info = self.domain_info(dom)?;
        if info.online_vcpus == 0 {
            return Err(invalid(
                OP,
                "vcpu 0 has no context: the domain was never built",
            ));
        }
        self.domctl(OP, dom, XEN_DOMCTL_UNPAUSEDOMAIN, NoPayload::default())?;
        Ok(())
    }

    fn shutdown_domain(&self, dom: DomId, reason: ShutdownReason) -> Result<()> {
        const OP: &str = "SCHEDOP_remote_shutdown";
        let arg = SchedRemoteShutdown {
            domain_id: dom.0,
            _pad: 0,
            reason: reason.code(),
        };
        self.op_with_arg(HYPERVISOR_SCHED_OP, SCHEDOP_REMOTE_SHUTDOWN, arg)
            .map_err(|e| dom_err(OP, dom, e))?;
        Ok(())
    }

    fn domain_info(&self, dom: DomId) -> Result<DomainInfo> {
        const OP: &str = "XEN_DOMCTL_getdomaininfo";
        if dom.0 >= DOMID_FIRST_RESERVED {
            return Err(HypervisorError::NoSuchDomain(dom));
        }
        let d = self.domctl(
            OP,
            dom,
            XEN_DOMCTL_GETDOMAININFO,
            GetDomainInfoV15::default(),
        )?;
        // Xen 4.17 answers with the first domain whose id is >= the one asked for.
        if d.u.domain != dom.0 {
            return Err(HypervisorError::NoSuchDomain(dom));
        }
        Ok(info_of(&d.u))
    }

    fn list_domains(&self) -> Result<Vec<DomainInfo>> {
        const OP: &str = "XEN_SYSCTL_getdomaininfolist";
        let mut buf: HcallBuf<GetDomainInfoV15> =
            self.bufs.zeroed(LIST_BATCH).map_err(|e| os(OP, e))?;
        let mut out = Vec::new();
        let mut first: u16 = 0;
        loop {
            let arg = GetDomainInfoList {
                first_domain: first,
                _pad: 0,
                max_domains: LIST_BATCH as u32,
                buffer: buf.addr(),
                num_domains: 0,
                _pad2: 0,
            };
            let r = self
                .sysctl(XEN_SYSCTL_GETDOMAININFOLIST, arg)
                .map_err(|e| os(OP, e))?;
            let n = (r.u.num_domains as usize).min(LIST_BATCH);
            let got = &buf.as_mut_slice()[..n];
            out.extend(got.iter().map(info_of));
            match got.last() {
                Some(last) if n == LIST_BATCH && last.domain + 1 < DOMID_FIRST_RESERVED => {
                    first = last.domain + 1
                }
                _ => break,
            }
        }
        Ok(out)
    }

    fn set_max_mem(&self, dom: DomId, max_kib: u64) -> Result<()> {
        const OP: &str = "XEN_DOMCTL_max_mem";
        let arg = MaxMem { max_memkb: max_kib };
        self.domctl(OP, dom, XEN_DOMCTL_MAX_MEM, arg)?;
        Ok(())
    }

    fn set_address_size(&self, dom: DomId, bits: u32) -> Result<()> {
        const OP: &str = "XEN_DOMCTL_set_address_size";
        let arg = AddressSize {
            size: bits,
            _pad: 0,
        };
        self.domctl(OP, dom, XEN_DOMCTL_SET_ADDRESS_SIZE, arg)?;
        Ok(())
    }

    fn populate_physmap(&self, dom: DomId, gfns: &[u64]) -> Result<Vec<u64>> {
        const OP: &str = "XENMEM_populate_physmap";
        let mut mfns = Vec::with_capacity(gfns.len());
        let mut buf: HcallBuf<u64> = self
            .bufs
            .zeroed(gfns.len().min(POPULATE_BATCH))
            .map_err(|e| os(OP, e))?;
        let mut result = Ok(());
        for chunk in gfns.chunks(POPULATE_BATCH) {
            let extents = &mut buf.as_mut_slice()[..chunk.len()];
            extents.copy_from_slice(chunk);
            let arg = MemoryReservation {
                extent_start: buf.addr(),
                nr_extents: chunk.len() as u64,
                extent_order: 0,
                mem_flags: 0,
                domid: dom.0,
                _pad: [0; 3],
            };
            // Returns how many extents were populated; Xen stops at the first it cannot do.
            let done = match self.op_with_arg(HYPERVISOR_MEMORY_OP, XENMEM_POPULATE_PHYSMAP, arg) {
                Ok((n, _)) => (n.max(0) as usize).min(chunk.len()),
                Err(e) if is_errno(&e, libc::ENOMEM) => 0,
                Err(e) => {
                    result = Err(dom_err(OP, dom, e));
                    break;
                }
            };
            mfns.extend_from_slice(&buf.as_slice()[..done]);
            if done < chunk.len() {
                let needed = (gfns.len() - mfns.len()) as u64;
                result = Err(self.short_populate(dom, needed));
                break;
            }
        }
        result.map(|()| mfns)
    }

    fn map_foreign<'a>(
        &'a self,
        dom: DomId,
        frames: &[u64],
    ) -> Result<Box<dyn ForeignMapping + 'a>> {
        const OP: &str = "IOCTL_PRIVCMD_MMAPBATCH_V2";
        if frames.is_empty() {
            return Err(invalid(OP, "no frames to map"));
        }
        match self.privcmd.map_foreign(dom.0, frames) {
            Ok(m) => Ok(Box::new(XenMapping(m))),
            Err(MapError::TooMany(n)) => Err(invalid(OP, format!("cannot map {n} frames at once"))),
            Err(MapError::Ioctl(e)) => Err(dom_err(OP, dom, e)),
            Err(MapError::Frame {
                index,
                frame,
                source,
            }) => Err(invalid(
                OP,
                format!("frame {frame:#x} (#{index}) of domain {dom}: {source}"),
            )),
        }
    }

    fn init_hypercall_page(&self, dom: DomId, frame: u64) -> Result<()> {
        const OP: &str = "XEN_DOMCTL_hypercall_init";
        self.domctl(
            OP,
            dom,
            XEN_DOMCTL_HYPERCALL_INIT,
            HypercallInit { gmfn: frame },
        )?;
        Ok(())
    }

    fn pin_page_table(&self, dom: DomId, level: PageTableLevel, mfn: u64) -> Result<()> {
        const OP: &str = "MMUEXT_PIN_TABLE";
        let cmd = match level {
            PageTableLevel::L1 => MMUEXT_PIN_L1_TABLE,
            PageTableLevel::L2 => MMUEXT_PIN_L2_TABLE,
            PageTableLevel::L3 => MMUEXT_PIN_L3_TABLE,
            PageTableLevel::L4 => MMUEXT_PIN_L4_TABLE,
        };
        let op = MmuextOp {
            cmd,
            _pad: 0,
            arg1: mfn,
            arg2: 0,
        };
        let buf = self.bufs.one(op).map_err(|e| os(OP, e))?;
        // HYPERVISOR_mmuext_op(ops, count, pdone, foreigndom): pin on behalf of `dom`.
        self.privcmd
            .hypercall(HYPERVISOR_MMUEXT_OP, [buf.addr(), 1, 0, dom.0 as u64, 0])
            .map_err(|e| dom_err(OP, dom, e))?;
        Ok(())
    }

    fn seed_grant_table(&self, dom: DomId, entries: &[GrantEntry]) -> Result<()> {
        const OP: &str = "XENMEM_acquire_resource(grant table)";
        let Some(max_ref) = entries.iter().map(|e| e.gref).max() else {
            return Ok(());
        };
        let mut values = Vec::with_capacity(entries.len());
        for e in entries {
            let frame = u32::try_from(e.frame).map_err(|_| {
                invalid(
                    OP,
                    format!("frame {:#x} does not fit a v1 grant entry", e.frame),
                )
            })?;
            values.push((e.gref, e.backend.0, frame));
        }
        let nframes = (max_ref / GRANTS_PER_FRAME + 1) as usize;
        let mut map = self
            .privcmd
            .map_resource(
                dom.0,
                XENMEM_RESOURCE_GRANT_TABLE,
                XENMEM_RESOURCE_GRANT_TABLE_ID_SHARED,
                0,
                nframes,
            )
            .map_err(|e| dom_err(OP, dom, e))?;
        let table = map.as_mut_slice();
        for (gref, domid, frame) in values {
            let at = gref as usize * std::mem::size_of::<GrantEntryV1>();
            let entry = &mut table[at..at + 8];
            // domid and frame first, flags last: the entry becomes valid only when complete.
            entry[2..4].copy_from_slice(&domid.to_le_bytes());
            entry[4..8].copy_from_slice(&frame.to_le_bytes());
            std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
            entry[0..2].copy_from_slice(&GTF_PERMIT_ACCESS.to_le_bytes());
        }
        Ok(())
    }

    fn set_vcpu_context(&self, dom: DomId, vcpu: u32, ctx: &VcpuContext) -> Result<()> {
        const OP: &str = "XEN_DOMCTL_setvcpucontext";
        match *ctx {
            VcpuContext::Pv {
                rip,
                rsp,
                rsi,
                cr3_mfn,
            } => {
                let buf = self
                    .bufs
                    .one(pv_context(rip, rsp, rsi, cr3_mfn))
                    .map_err(|e| os(OP, e))?;
                let arg = VcpuContextArg {
                    vcpu,
                    _pad: 0,
                    ctxt: buf.addr(),
                };
                self.domctl(OP, dom, XEN_DOMCTL_SETVCPUCONTEXT, arg)?;
                Ok(())
            }
            VcpuContext::Pvh { rip, rbx } => self.set_pvh_context(dom, vcpu, rip, rbx),
        }
    }

    fn evtchn_alloc_unbound(&self, dom: DomId, remote: DomId) -> Result<u32> {
        const OP: &str = "EVTCHNOP_alloc_unbound";
        let arg = EvtchnAllocUnbound {
            dom: dom.0,
            remote_dom: remote.0,
            port: 0,
        };
        let (_, out) = self
            .op_with_arg(HYPERVISOR_EVENT_CHANNEL_OP, EVTCHNOP_ALLOC_UNBOUND, arg)
            .map_err(|e| dom_err(OP, dom, e))?;
        Ok(out.port)
    }
}

impl XenHypervisor {
    /// Loads the PVH boot vcpu state with `XEN_DOMCTL_sethvmcontext` and enables write-back
    /// MTRRs on every vcpu (no device model sets them), as libxc's `vcpu_hvm()` does.
    fn set_pvh_context(&self, dom: DomId, vcpu: u32, rip: u32, rbx: u32) -> Result<()> {
        const GET: &str = "XEN_DOMCTL_gethvmcontext";
        const SET: &str = "XEN_DOMCTL_sethvmcontext";
        if vcpu != 0 {
            return Err(invalid(
                SET,
                format!("vcpu {vcpu}: a PVH guest starts its secondary vcpus itself"),
            ));
        }
        // The save header must be Xen's own (it checks magic, version and cpuid): take it
        // from the domain's current context.
        let size = self
            .domctl(GET, dom, XEN_DOMCTL_GETHVMCONTEXT, HvmContextArg::default())?
            .u
            .size as usize;
        let image: HcallBuf<u8> = self.bufs.zeroed(size).map_err(|e| os(GET, e))?;
        let arg = HvmContextArg {
            size: size as u32,
            _pad: 0,
            buffer: image.addr(),
        };
        let filled = self.domctl(GET, dom, XEN_DOMCTL_GETHVMCONTEXT, arg)?.u.size as usize;
        let image = &image.as_slice()[..filled.min(size)];
        let record = |code: u16| {
            hvm::records(image)
                .find(|(c, i, _)| *c == code && *i == 0)
                .map(|(_, _, p)| p)
        };
        let header = record(hvm::HVM_SAVE_CODE_HEADER)
            .and_then(hvm::parse_header)
            .ok_or_else(|| invalid(GET, format!("domain {dom}: no save header in its context")))?;
        let mut mtrr = record(hvm::HVM_SAVE_CODE_MTRR)
            .and_then(hvm::parse_mtrr)
            .ok_or_else(|| invalid(GET, format!("domain {dom}: no MTRR record in its context")))?;

        // Every sethvmcontext first puts all vcpus down and brings up only those it loads a
        // CPU record for, so the MTRRs go first and the boot CPU last (as in libxc).
        mtrr.msr_mtrr_def_type = hvm::MTRR_DEF_TYPE_WB_ENABLED;
        let vcpus = self.domain_info(dom)?.max_vcpu_id.saturating_add(1);
        for v in 0..vcpus {
            let Ok(instance) = u16::try_from(v) else {
                break;
            };
            self.set_hvm_context(
                dom,
                hvm::OneRecord::new(header, hvm::HVM_SAVE_CODE_MTRR, instance, mtrr),
            )?;
        }
        let cpu = hvm::OneRecord::new(
            header,
            hvm::HVM_SAVE_CODE_CPU,
            0,
            hvm::pvh_boot_cpu(rip, rbx),
        );
        self.set_hvm_context(dom, cpu)?;
        Ok(())
    }

    fn set_hvm_context<R: Copy>(&self, dom: DomId, image: hvm::OneRecord<R>) -> Result<()>
    where
        hvm::OneRecord<R>: Plain,
    {
        const SET: &str = "XEN_DOMCTL_sethvmcontext";
        let buf = self.bufs.one(image).map_err(|e| os(SET, e))?;
        let arg = HvmContextArg {
            size: std::mem::size_of::<hvm::OneRecord<R>>() as u32,
            _pad: 0,
            buffer: buf.addr(),
        };
        self.domctl(SET, dom, XEN_DOMCTL_SETHVMCONTEXT, arg)?;
        Ok(())
    }
}

impl XenHypervisor {
    /// Reads back v1 grant entry `gref` of `dom` as `(flags, domid, frame)` (diagnostics and
    /// lab tests).
    pub fn grant_entry(&self, dom: DomId, gref: u32) -> Result<(u16, u16, u32)> {
        const OP: &str = "XENMEM_acquire_resource(grant table)";
        let map = self
            .privcmd
            .map_resource(
                dom.0,
                XENMEM_RESOURCE_GRANT_TABLE,
                XENMEM_RESOURCE_GRANT_TABLE_ID_SHARED,
                gref / GRANTS_PER_FRAME,
                1,
            )
            .map_err(|e| dom_err(OP, dom, e))?;
        let at = (gref % GRANTS_PER_FRAME) as usize * 8;
        let e = &map.as_slice()[at..at + 8];
        Ok((
            u16::from_le_bytes([e[0], e[1]]),
            u16::from_le_bytes([e[2], e[3]]),
            u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
        ))
    }
}

impl XenHypervisor {
    /// Why populate_physmap stopped short: host memory, or the domain's own limit.
    fn short_populate(&self, dom: DomId, needed: u64) -> HypervisorError {
        const OP: &str = "XENMEM_populate_physmap";
        let free = match self.physinfo_raw() {
            Ok(p) => p.free_pages,
            Err(e) => return os(OP, e),
        };
        if free < needed {
            return self.out_of_memory(OP, needed);
        }
        match self.domain_info(dom) {
            Ok(i) => invalid(
                OP,
                format!(
                    "Xen stopped with {needed} frames left to populate although {free} pages \
                     are free; domain {dom} has {} of max {} pages (set_max_mem too low?)",
                    i.tot_pages, i.max_pages
                ),
            ),
            Err(e) => e,
        }
    }
}

#[cfg(test)]
mod tests;
