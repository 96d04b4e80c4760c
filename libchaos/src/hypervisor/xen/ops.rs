//! Xen's operations behind the [`Hypervisor`] trait: each one a domctl, sysctl, memory op or
//! privcmd mapping on the one long-lived privcmd descriptor.

use super::*;
use crate::hypervisor::costs;

/// The 64-bit PV initial vcpu state, as libxc's `vcpu_x86_64()` sets it up.
pub(super) fn pv_context(rip: u64, rsp: u64, rsi: u64, cr3_mfn: u64) -> VcpuGuestContext {
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
            .raw_domctl(
                OP,
                Domctl::new(self.iface, XEN_DOMCTL_CREATEDOMAIN, 0, payload),
            )
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
        self.unpause_built(dom)
    }

    fn unpause_built(&self, dom: DomId) -> Result<()> {
        const OP: &str = "XEN_DOMCTL_unpausedomain";
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
        self.op_with_arg(OP, HYPERVISOR_SCHED_OP, SCHEDOP_REMOTE_SHUTDOWN, arg)
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
                .sysctl(OP, XEN_SYSCTL_GETDOMAININFOLIST, arg)
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

    fn set_hvm_param(&self, dom: DomId, param: u32, value: u64) -> Result<()> {
        const OP: &str = "HVMOP_set_param";
        let arg = HvmParam {
            domid: dom.0,
            _pad: 0,
            index: param,
            value,
        };
        self.op_with_arg(OP, HYPERVISOR_HVM_OP, HVMOP_SET_PARAM, arg)
            .map_err(|e| dom_err(OP, dom, e))?;
        Ok(())
    }

    fn set_tsc_mode(&self, dom: DomId, mode: TscMode) -> Result<()> {
        const OP: &str = "XEN_DOMCTL_settscinfo";
        // What libxl's xc_domain_set_tsc_info(xch, domid, mode, 0, 0, 0) sends.
        let arg = TscInfo {
            tsc_mode: mode as u32,
            ..TscInfo::default()
        };
        self.domctl(OP, dom, XEN_DOMCTL_SETTSCINFO, arg)?;
        Ok(())
    }

    fn set_paging_pool(&self, dom: DomId, bytes: u64) -> Result<()> {
        const OP: &str = "XEN_DOMCTL_set_paging_mempool_size";
        self.domctl(
            OP,
            dom,
            XEN_DOMCTL_SET_PAGING_MEMPOOL_SIZE,
            PagingMempool { size: bytes },
        )?;
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
            let done =
                match self.op_with_arg(OP, HYPERVISOR_MEMORY_OP, XENMEM_POPULATE_PHYSMAP, arg) {
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
            .hypercall(
                OP,
                HYPERVISOR_MMUEXT_OP,
                [buf.addr(), 1, 0, dom.0 as u64, 0],
            )
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
            .op_with_arg(OP, HYPERVISOR_EVENT_CHANNEL_OP, EVTCHNOP_ALLOC_UNBOUND, arg)
            .map_err(|e| dom_err(OP, dom, e))?;
        Ok(out.port)
    }

    fn domain_events(&self) -> Result<Option<Box<dyn DomainEvents>>> {
        const OP: &str = "IOCTL_EVTCHN_BIND_VIRQ (VIRQ_DOM_EXC)";
        let dev = xen_dev::EventChannels::open(true).map_err(|source| HypervisorError::Open {
            path: xen_dev::evtchn::EVTCHN_PATH.into(),
            source,
        })?;
        costs::count("IOCTL_EVTCHN_BIND_VIRQ");
        match dev.bind_virq(xen_dev::evtchn::VIRQ_DOM_EXC) {
            Ok(port) => Ok(Some(Box::new(VirqEvents { dev, port }))),
            // xenstored (or another reaper) has it: there is one binding per domain.
            Err(e) if is_errno(&e, libc::EEXIST) || is_errno(&e, libc::EBUSY) => Ok(None),
            Err(e) => Err(os(OP, e)),
        }
    }

    fn noxs_flavour(&self) -> NoxsFlavour {
        *self.noxs.get_or_init(|| {
            let arg = devctl::Devctl::new(devctl::DEVCTL_GET, DomId::SELF);
            match devctl::call(&self.privcmd, &self.bufs, arg) {
                Ok(_) => NoxsFlavour::Hypervisor,
                Err(e) if is_errno(&e, libc::ENOSYS) => NoxsFlavour::Toolstack,
                Err(e) => {
                    log::warn!("devctl probe: {e}; using the toolstack's NoXS device pages");
                    NoxsFlavour::Toolstack
                }
            }
        })
    }

    fn devctl_add(&self, dom: DomId, e: &noxs::DevPageEntry) -> Result<u32> {
        const OP: &str = "XEN_DEVCTL_dev_add";
        let mut arg = devctl::Devctl::new(devctl::DEVCTL_DEV_ADD, dom);
        arg.put_u32(0, e.dev_type);
        arg.put_u32(4, e.id);
        arg.put_u32(8, u32::from(e.be_id) | (u32::from(e.flags) << 16));
        arg.put_u32(12, e.comm.grant);
        arg.put_u32(16, e.comm.evtchn);
        let out = devctl::call(&self.privcmd, &self.bufs, arg).map_err(|e| dom_err(OP, dom, e))?;
        Ok(out.get_u32(20))
    }

    fn devctl_remove(&self, dom: DomId, dev_type: u32, id: u32) -> Result<()> {
        const OP: &str = "XEN_DEVCTL_dev_remove";
        let mut arg = devctl::Devctl::new(devctl::DEVCTL_DEV_REMOVE, dom);
        arg.put_u32(0, dev_type);
        arg.put_u32(4, id);
        devctl::call(&self.privcmd, &self.bufs, arg).map_err(|e| dom_err(OP, dom, e))?;
        Ok(())
    }

    fn devctl_enum(&self, dom: DomId) -> Result<noxs::DevPage> {
        const OP: &str = "XEN_DEVCTL_dev_enum";
        let arg = devctl::Devctl::new(devctl::DEVCTL_DEV_ENUM, dom);
        let out = devctl::call(&self.privcmd, &self.bufs, arg).map_err(|e| dom_err(OP, dom, e))?;
        Ok(noxs::DevPage::read_from(&out.u))
    }

    fn notify_guest(&self, dom: DomId, port: EvtchnPort) -> Result<()> {
        const OP: &str = "notify (IOCTL_EVTCHN_BIND_INTERDOMAIN, NOTIFY, UNBIND)";
        let mut evtchn = self.evtchn.lock().unwrap_or_else(|e| e.into_inner());
        if evtchn.is_none() {
            *evtchn = Some(xen_dev::EventChannels::open(false).map_err(|source| {
                HypervisorError::Open {
                    path: xen_dev::evtchn::EVTCHN_PATH.into(),
                    source,
                }
            })?);
        }
        let Some(dev) = evtchn.as_ref() else {
            return Err(invalid(OP, "no event channel device"));
        };
        // kick is bind, notify, unbind: three ioctls.
        costs::count("IOCTL_EVTCHN_BIND_INTERDOMAIN");
        costs::count("IOCTL_EVTCHN_NOTIFY");
        costs::count("IOCTL_EVTCHN_UNBIND");
        dev.kick(dom, port).map_err(|e| dom_err(OP, dom, e))
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

/// VIRQ_DOM_EXC bound through /dev/xen/evtchn.
struct VirqEvents {
    dev: xen_dev::EventChannels,
    port: EvtchnPort,
}

impl DomainEvents for VirqEvents {
    fn wait(&mut self, timeout: std::time::Duration) -> Result<bool> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.dev.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => return Ok(false),
            Ok(_) => {}
            Err(e) => return Err(os("poll /dev/xen/evtchn", e.into())),
        }
        let fired = self
            .dev
            .pending()
            .map_err(|e| os("read /dev/xen/evtchn", e))?;
        for p in &fired {
            self.dev
                .unmask(*p)
                .map_err(|e| os("unmask VIRQ_DOM_EXC", e))?;
        }
        Ok(fired.contains(&self.port))
    }
}
