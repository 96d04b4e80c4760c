//! The simulated host's [`Hypervisor`] operations.

use super::model::*;
use super::SimHypervisor;
use crate::hypervisor::{
    CreateDomain, DomId, DomainEvents, DomainInfo, EvtchnPort, ForeignMapping, GrantEntry,
    GuestKind, Hypervisor, HypervisorError, NoxsFlavour, PageTableLevel, PhysInfo, Result,
    ShutdownReason, TscMode, Uuid, VcpuContext, PAGE_SIZE,
};

impl Hypervisor for SimHypervisor {
    fn name(&self) -> &'static str {
        "sim"
    }

    fn physinfo(&self) -> Result<PhysInfo> {
        let s = self.enter("XEN_SYSCTL_physinfo")?;
        Ok(PhysInfo {
            nr_cpus: s.config.nr_cpus,
            total_pages: mib_to_pages(s.config.host_mib),
            free_pages: s.free_pages,
        })
    }

    fn create_domain(&self, args: &CreateDomain) -> Result<DomId> {
        const OP: &str = "XEN_DOMCTL_createdomain";
        let mut s = self.enter(OP)?;
        if args.max_vcpus == 0 || args.max_vcpus > 128 {
            return Err(invalid(
                OP,
                format!("max_vcpus {} out of range", args.max_vcpus),
            ));
        }
        if args.max_grant_frames == 0 || args.max_evtchn_port == 0 {
            return Err(invalid(
                OP,
                "grant frames and event channels must be non-zero",
            ));
        }
        // Xen takes the shared info page from its own heap; the sim takes it from the host.
        if s.free_pages == 0 {
            return Err(HypervisorError::OutOfMemory {
                op: OP,
                needed_pages: 1,
                free_pages: 0,
            });
        }
        let start = s.next_domid;
        let mut id = start;
        while s.domains.contains_key(&DomId(id)) {
            id = if id + 1 >= DOMID_FIRST_RESERVED {
                FIRST_DOMID
            } else {
                id + 1
            };
            if id == start {
                return Err(invalid(OP, "no free domain id"));
            }
        }
        s.next_domid = if id + 1 >= DOMID_FIRST_RESERVED {
            FIRST_DOMID
        } else {
            id + 1
        };
        s.free_pages -= 1;
        let shared_info_mfn = s.next_mfn;
        s.next_mfn += 1;
        let mut d = SimDomain::new(
            args.kind,
            args.handle,
            args.max_vcpus,
            args.max_evtchn_port,
            args.max_grant_frames,
            shared_info_mfn,
        );
        if s.devctl {
            d.device_page = Some(Box::new(::noxs::DevPage::new()));
        }
        s.domains.insert(DomId(id), d);
        Ok(DomId(id))
    }

    fn destroy_domain(&self, dom: DomId) -> Result<()> {
        let mut s = self.enter("XEN_DOMCTL_destroydomain")?;
        guest_mut(&mut s, dom, "XEN_DOMCTL_destroydomain")?;
        if let Some(d) = s.domains.remove(&dom) {
            // Populated frames, the paging pool and the shared info page go back to the host.
            s.free_pages += d.p2m.len() as u64 + d.paging_pool_pages + 1;
        }
        drop(s);
        self.exception();
        Ok(())
    }

    fn set_domain_handle(&self, dom: DomId, handle: Uuid) -> Result<()> {
        let mut s = self.enter("XEN_DOMCTL_setdomainhandle")?;
        guest_mut(&mut s, dom, "XEN_DOMCTL_setdomainhandle")?.handle = handle;
        Ok(())
    }

    fn pause_domain(&self, dom: DomId) -> Result<()> {
        let mut s = self.enter("XEN_DOMCTL_pausedomain")?;
        guest_mut(&mut s, dom, "XEN_DOMCTL_pausedomain")?.paused = true;
        Ok(())
    }

    fn unpause_domain(&self, dom: DomId) -> Result<()> {
        const OP: &str = "XEN_DOMCTL_unpausedomain";
        let mut s = self.enter(OP)?;
        let d = guest_mut(&mut s, dom, OP)?;
        if !d.vcpus.contains_key(&0) {
            return Err(invalid(
                OP,
                "vcpu 0 has no context: the domain was never built",
            ));
        }
        d.paused = false;
        Ok(())
    }

    fn shutdown_domain(&self, dom: DomId, reason: ShutdownReason) -> Result<()> {
        let mut s = self.enter("SCHEDOP_remote_shutdown")?;
        guest_mut(&mut s, dom, "SCHEDOP_remote_shutdown")?.shutdown = Some(reason);
        drop(s);
        self.exception();
        Ok(())
    }

    fn domain_events(&self) -> Result<Option<Box<dyn DomainEvents>>> {
        let exceptions = self.exceptions.clone();
        let seen = *exceptions.0.lock().unwrap_or_else(|e| e.into_inner());
        Ok(Some(Box::new(SimEvents { exceptions, seen })))
    }

    fn domain_info(&self, dom: DomId) -> Result<DomainInfo> {
        let mut s = self.enter("XEN_DOMCTL_getdomaininfo")?;
        let d = domain_mut(&mut s, dom)?;
        Ok(info_of(dom, d))
    }

    fn list_domains(&self) -> Result<Vec<DomainInfo>> {
        let s = self.enter("XEN_SYSCTL_getdomaininfolist")?;
        Ok(s.domains.iter().map(|(id, d)| info_of(*id, d)).collect())
    }

    fn set_max_mem(&self, dom: DomId, max_kib: u64) -> Result<()> {
        let mut s = self.enter("XEN_DOMCTL_max_mem")?;
        let d = guest_mut(&mut s, dom, "XEN_DOMCTL_max_mem")?;
        d.max_pages = max_kib / (PAGE_SIZE as u64 / 1024);
        Ok(())
    }

    fn set_address_size(&self, dom: DomId, bits: u32) -> Result<()> {
        const OP: &str = "XEN_DOMCTL_set_address_size";
        let mut s = self.enter(OP)?;
        let d = guest_mut(&mut s, dom, OP)?;
        if d.kind != GuestKind::Pv {
            return Err(invalid(OP, "only PV domains have an address size"));
        }
        if bits != 64 && bits != 32 {
            return Err(invalid(OP, format!("{bits}-bit guests do not exist")));
        }
        d.address_size = Some(bits);
        Ok(())
    }

    fn set_hvm_param(&self, dom: DomId, param: u32, value: u64) -> Result<()> {
        const OP: &str = "HVMOP_set_param";
        let mut s = self.enter(OP)?;
        let d = guest_mut(&mut s, dom, OP)?;
        if d.kind != GuestKind::Pvh {
            return Err(invalid(OP, "a PV domain has no HVM params"));
        }
        d.hvm_params.insert(param, value);
        Ok(())
    }

    fn set_tsc_mode(&self, dom: DomId, mode: TscMode) -> Result<()> {
        const OP: &str = "XEN_DOMCTL_settscinfo";
        let mut s = self.enter(OP)?;
        let d = guest_mut(&mut s, dom, OP)?;
        // Xen 4.17's tsc_set_info knows modes 0 to 2 (native_paravirt was removed in 4.13).
        if mode == TscMode::NativeParavirt {
            return Err(invalid(OP, "tsc mode 3 (pvrdtscp) no longer exists"));
        }
        d.tsc_mode = mode;
        Ok(())
    }

    fn set_paging_pool(&self, dom: DomId, bytes: u64) -> Result<()> {
        const OP: &str = "XEN_DOMCTL_set_paging_mempool_size";
        let mut s = self.enter(OP)?;
        let free = s.free_pages;
        let d = guest_mut(&mut s, dom, OP)?;
        if d.kind != GuestKind::Pvh {
            return Err(invalid(
                OP,
                "the toolstack sizes the pools of PVH guests only",
            ));
        }
        if !bytes.is_multiple_of(PAGE_SIZE as u64) {
            return Err(invalid(
                OP,
                format!("{bytes} bytes is not a whole number of pages"),
            ));
        }
        let pages = bytes / PAGE_SIZE as u64;
        let more = pages.saturating_sub(d.paging_pool_pages);
        if more > free {
            return Err(HypervisorError::OutOfMemory {
                op: OP,
                needed_pages: more,
                free_pages: free,
            });
        }
        let released = d.paging_pool_pages.saturating_sub(pages);
        d.paging_pool_pages = pages;
        s.free_pages = s.free_pages - more + released;
        Ok(())
    }

    fn populate_physmap(&self, dom: DomId, gfns: &[u64]) -> Result<Vec<u64>> {
        const OP: &str = "XENMEM_populate_physmap";
        let mut s = self.enter(OP)?;
        let free = s.free_pages;
        let first_mfn = s.next_mfn;
        let d = guest_mut(&mut s, dom, OP)?;
        let wanted = gfns.len() as u64;
        if d.p2m.len() as u64 + wanted > d.max_pages {
            return Err(HypervisorError::OutOfMemory {
                op: OP,
                needed_pages: wanted,
                free_pages: d.max_pages.saturating_sub(d.p2m.len() as u64),
            });
        }
        if wanted > free {
            return Err(HypervisorError::OutOfMemory {
                op: OP,
                needed_pages: wanted,
                free_pages: free,
            });
        }
        if let Some(g) = gfns.iter().find(|g| d.p2m.contains_key(g)) {
            return Err(invalid(OP, format!("gfn {g:#x} is already populated")));
        }
        let mut mfns = Vec::with_capacity(gfns.len());
        for (i, gfn) in gfns.iter().enumerate() {
            let mfn = first_mfn + i as u64;
            d.p2m.insert(*gfn, mfn);
            d.m2p.insert(mfn, *gfn);
            mfns.push(mfn);
        }
        s.next_mfn += wanted;
        s.free_pages -= wanted;
        Ok(mfns)
    }

    fn map_foreign<'a>(
        &'a self,
        dom: DomId,
        frames: &[u64],
    ) -> Result<Box<dyn ForeignMapping + 'a>> {
        const OP: &str = "IOCTL_PRIVCMD_MMAPBATCH_V2";
        let mut s = self.enter(OP)?;
        let d = guest_mut(&mut s, dom, OP)?;
        let mut mfns = Vec::with_capacity(frames.len());
        let mut bytes = vec![0u8; frames.len() * PAGE_SIZE];
        for (i, frame) in frames.iter().enumerate() {
            let mfn = resolve_frame(d, *frame, OP)?;
            // Xen refuses writable mappings of a validated page table (-EBUSY per frame).
            if d.pinned.iter().any(|(_, m)| *m == mfn) {
                return Err(invalid(
                    OP,
                    format!("frame {mfn:#x} is a pinned page table"),
                ));
            }
            if let Some(data) = d.frames.get(&mfn) {
                bytes[i * PAGE_SIZE..(i + 1) * PAGE_SIZE].copy_from_slice(data);
            }
            mfns.push(mfn);
        }
        Ok(Box::new(SimMapping {
            sim: self,
            dom,
            mfns,
            bytes,
        }))
    }

    fn init_hypercall_page(&self, dom: DomId, frame: u64) -> Result<()> {
        const OP: &str = "XEN_DOMCTL_hypercall_init";
        let mut s = self.enter(OP)?;
        let d = guest_mut(&mut s, dom, OP)?;
        let mfn = resolve_frame(d, frame, OP)?;
        // Xen fills the page with one 32-byte stub per hypercall; the sim marks each slot.
        let mut page = vec![0u8; PAGE_SIZE].into_boxed_slice();
        for (nr, stub) in page.chunks_mut(32).enumerate() {
            stub[0] = 0xb8; // mov $nr, %eax
            stub[1] = nr as u8;
        }
        d.frames.insert(mfn, page);
        d.hypercall_page = d.m2p.get(&mfn).copied();
        Ok(())
    }

    fn pin_page_table(&self, dom: DomId, level: PageTableLevel, mfn: u64) -> Result<()> {
        const OP: &str = "MMUEXT_PIN_TABLE";
        let mut s = self.enter(OP)?;
        let d = guest_mut(&mut s, dom, OP)?;
        if d.kind != GuestKind::Pv {
            return Err(invalid(OP, "only PV guests have their page tables pinned"));
        }
        if !d.m2p.contains_key(&mfn) {
            return Err(invalid(
                OP,
                format!("mfn {mfn:#x} does not belong to domain {dom}"),
            ));
        }
        d.pinned.push((level, mfn));
        Ok(())
    }

    fn seed_grant_table(&self, dom: DomId, entries: &[GrantEntry]) -> Result<()> {
        const OP: &str = "grant table seed";
        let mut s = self.enter(OP)?;
        let d = guest_mut(&mut s, dom, OP)?;
        for e in entries {
            if e.gref >= d.max_grant_frames * GRANTS_PER_FRAME {
                return Err(invalid(OP, format!("grant ref {} out of range", e.gref)));
            }
            resolve_frame(d, e.frame, OP)?;
        }
        for e in entries {
            d.grants.insert(e.gref, *e);
        }
        Ok(())
    }

    fn set_vcpu_context(&self, dom: DomId, vcpu: u32, ctx: &VcpuContext) -> Result<()> {
        const OP: &str = "XEN_DOMCTL_setvcpucontext";
        let mut s = self.enter(OP)?;
        let d = guest_mut(&mut s, dom, OP)?;
        if vcpu >= d.max_vcpus {
            return Err(invalid(
                OP,
                format!("vcpu {vcpu} >= max_vcpus {}", d.max_vcpus),
            ));
        }
        match (d.kind, ctx) {
            (GuestKind::Pv, VcpuContext::Pv { cr3_mfn, .. }) => {
                if d.address_size != Some(64) {
                    return Err(invalid(
                        OP,
                        "64-bit PV context but the address size is not 64",
                    ));
                }
                if !d
                    .pinned
                    .iter()
                    .any(|(l, m)| *l == PageTableLevel::L4 && m == cr3_mfn)
                {
                    return Err(invalid(
                        OP,
                        format!("cr3 mfn {cr3_mfn:#x} is not a pinned L4 table"),
                    ));
                }
            }
            (GuestKind::Pvh, VcpuContext::Pvh { .. }) => {}
            (kind, _) => {
                return Err(invalid(
                    OP,
                    format!("wrong context kind for a {kind} guest"),
                ))
            }
        }
        d.vcpus.insert(vcpu, ctx.clone());
        Ok(())
    }

    fn evtchn_alloc_unbound(&self, dom: DomId, remote: DomId) -> Result<u32> {
        const OP: &str = "EVTCHNOP_alloc_unbound";
        let mut s = self.enter(OP)?;
        if !s.domains.contains_key(&remote) {
            return Err(HypervisorError::NoSuchDomain(remote));
        }
        let d = guest_mut(&mut s, dom, OP)?;
        // Port 0 is reserved by Xen.
        let port = (1..=d.max_evtchn_port)
            .find(|p| !d.evtchns.contains_key(p))
            .ok_or_else(|| invalid(OP, "no free event channel port"))?;
        d.evtchns.insert(port, remote);
        Ok(port)
    }

    fn checkpoint(&self) {
        self.autosave_now();
    }

    fn noxs_flavour(&self) -> NoxsFlavour {
        if self.lock().devctl {
            NoxsFlavour::Hypervisor
        } else {
            NoxsFlavour::Toolstack
        }
    }

    /// As the patch checks it (hypervisor-patches/xen-4.17/README.md, dev_add).
    fn devctl_add(&self, dom: DomId, e: &::noxs::DevPageEntry) -> Result<u32> {
        const OP: &str = "XEN_DEVCTL_dev_add";
        let mut s = self.enter(OP)?;
        let d = guest_mut(&mut s, dom, OP)?;
        if ::noxs::DevType::from_raw(e.dev_type).is_none_or(|t| t == ::noxs::DevType::None) {
            return Err(invalid(OP, format!("device type {}", e.dev_type)));
        }
        if e.flags & !(::noxs::ENTRY_GUEST_FRAME | ::noxs::ENTRY_GUEST_PORT) != 0 {
            return Err(invalid(OP, format!("flags {:#x}", e.flags)));
        }
        if e.flags & ::noxs::ENTRY_GUEST_PORT != 0 && !d.evtchns.contains_key(&e.comm.evtchn) {
            return Err(invalid(
                OP,
                format!("domain {dom} has no port {}", e.comm.evtchn),
            ));
        }
        let page = d
            .device_page
            .as_mut()
            .ok_or_else(|| invalid(OP, "no devctl hypercall (stock Xen)"))?;
        if page
            .devs
            .iter()
            .any(|x| x.dev_type == e.dev_type && x.id == e.id)
        {
            return Err(invalid(OP, "EEXIST: that device is listed already"));
        }
        let slot = page
            .devs
            .iter()
            .position(|x| x.dev_type == ::noxs::DevType::None as u32)
            .ok_or_else(|| invalid(OP, "ENOSPC: the device page is full"))?;
        page.devs[slot] = *e;
        page.dev_count += 1;
        Ok(slot as u32)
    }

    fn devctl_remove(&self, dom: DomId, dev_type: u32, id: u32) -> Result<()> {
        const OP: &str = "XEN_DEVCTL_dev_remove";
        let mut s = self.enter(OP)?;
        let d = guest_mut(&mut s, dom, OP)?;
        let page = d
            .device_page
            .as_mut()
            .ok_or_else(|| invalid(OP, "no devctl hypercall (stock Xen)"))?;
        let slot = page
            .devs
            .iter()
            .position(|x| x.dev_type == dev_type && x.id == id)
            .ok_or_else(|| invalid(OP, "ENOENT: no such device"))?;
        page.devs[slot] = ::noxs::DevPageEntry::EMPTY;
        page.dev_count -= 1;
        Ok(())
    }

    fn devctl_enum(&self, dom: DomId) -> Result<::noxs::DevPage> {
        const OP: &str = "XEN_DEVCTL_dev_enum";
        let mut s = self.enter(OP)?;
        let d = guest_mut(&mut s, dom, OP)?;
        d.device_page
            .as_deref()
            .copied()
            .ok_or_else(|| invalid(OP, "no devctl hypercall (stock Xen)"))
    }

    fn notify_guest(&self, dom: DomId, port: EvtchnPort) -> Result<()> {
        const OP: &str = "notify guest port";
        let mut s = self.enter(OP)?;
        let d = guest_mut(&mut s, dom, OP)?;
        match d.evtchns.get(&port) {
            Some(&remote) if remote == DomId::DOM0 => {}
            Some(remote) => {
                return Err(invalid(
                    OP,
                    format!("port {port} of domain {dom} is bound toward domain {remote}"),
                ))
            }
            None => return Err(invalid(OP, format!("domain {dom} has no port {port}"))),
        }
        *d.notified.entry(port).or_insert(0) += 1;
        Ok(())
    }
}

/// Guest frames copied out at map time and written back when the mapping is dropped.
struct SimMapping<'a> {
    sim: &'a SimHypervisor,
    dom: DomId,
    mfns: Vec<u64>,
    bytes: Vec<u8>,
}

impl ForeignMapping for SimMapping<'_> {
    fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }
}

impl Drop for SimMapping<'_> {
    fn drop(&mut self) {
        let mut s = self.sim.lock();
        // The domain may have been destroyed meanwhile: then the writes go nowhere, as on Xen.
        let Some(d) = s.domains.get_mut(&self.dom) else {
            return;
        };
        for (mfn, page) in self.mfns.iter().zip(self.bytes.chunks(PAGE_SIZE)) {
            let known = d.frames.contains_key(mfn);
            if known || page.iter().any(|b| *b != 0) {
                d.frames.insert(*mfn, page.into());
            }
        }
    }
}

/// The sim's VIRQ_DOM_EXC: a counter of exceptions and a condvar.
struct SimEvents {
    exceptions: std::sync::Arc<(std::sync::Mutex<u64>, std::sync::Condvar)>,
    seen: u64,
}

impl DomainEvents for SimEvents {
    fn wait(&mut self, timeout: std::time::Duration) -> Result<bool> {
        let (count, cv) = &*self.exceptions;
        let guard = count.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = cv
            .wait_timeout_while(guard, timeout, |n| *n == self.seen)
            .unwrap_or_else(|e| e.into_inner());
        let fired = *guard != self.seen;
        self.seen = *guard;
        Ok(fired)
    }
}
