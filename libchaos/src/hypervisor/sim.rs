//! An in-memory hypervisor for unit tests, dry runs and toolstack-overhead benches.
//!
//! It keeps what Xen would keep (domains, host memory accounting, sparse guest frames, event
//! channels, vcpu contexts, grant entries, pinned page tables) and refuses what Xen would refuse
//! (unpausing a domain whose vcpu 0 has no context, mapping frames that were never populated,
//! populating beyond max_mem or the host's free memory, ...). Any call can be made to fail on
//! purpose, so rollback paths are testable. It never sleeps and never pretends to be faster or
//! slower than the code it runs.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use super::{
    CreateDomain, DomId, DomainInfo, ForeignMapping, GrantEntry, GuestKind, Hypervisor,
    HypervisorError, PageTableLevel, PhysInfo, Result, ShutdownReason, Uuid, VcpuContext,
    PAGE_SIZE,
};

/// Size of the simulated host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimConfig {
    pub host_mib: u64,
    pub dom0_mib: u64,
    pub nr_cpus: u32,
}

impl Default for SimConfig {
    /// A host shaped like the lab's: 3 GiB, 1 GiB of it for dom0, 2 CPUs.
    fn default() -> Self {
        SimConfig {
            host_mib: 3072,
            dom0_mib: 1024,
            nr_cpus: 2,
        }
    }
}

/// Which call to fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The n-th call (0-based) counted from when the fault was armed, whatever the operation.
    Call(u64),
    /// The n-th call (0-based) of the operation with this name (e.g. "XENMEM_populate_physmap").
    Op { name: &'static str, nth: u64 },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SimDomain {
    kind: GuestKind,
    handle: Uuid,
    max_vcpus: u32,
    max_evtchn_port: u32,
    max_grant_frames: u32,
    paused: bool,
    shutdown: Option<ShutdownReason>,
    max_pages: u64,
    address_size: Option<u32>,
    shared_info_mfn: u64,
    /// gfn -> mfn of every populated frame.
    #[serde(with = "p2m_runs")]
    p2m: HashMap<u64, u64>,
    /// mfn -> gfn, the reverse of `p2m` (rebuilt when a saved host is loaded).
    #[serde(skip)]
    m2p: HashMap<u64, u64>,
    /// Contents of frames that were ever written (mfn -> bytes); the rest read as zeros.
    /// Not saved: guest memory contents only matter within one process.
    #[serde(skip)]
    frames: HashMap<u64, Box<[u8]>>,
    vcpus: BTreeMap<u32, VcpuContext>,
    hypercall_page: Option<u64>,
    pinned: Vec<(PageTableLevel, u64)>,
    grants: BTreeMap<u32, GrantEntry>,
    evtchns: BTreeMap<u32, DomId>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SimState {
    config: SimConfig,
    free_pages: u64,
    next_domid: u16,
    next_mfn: u64,
    domains: BTreeMap<DomId, SimDomain>,
    /// Calls seen since the last `arm`.
    #[serde(skip)]
    calls: u64,
    #[serde(skip)]
    op_calls: HashMap<&'static str, u64>,
    #[serde(skip)]
    fault: Option<Fault>,
}

impl SimDomain {
    /// A freshly created domain: paused, no memory, no vcpu context.
    fn new(
        kind: GuestKind,
        handle: Uuid,
        max_vcpus: u32,
        max_evtchn_port: u32,
        max_grant_frames: u32,
        shared_info_mfn: u64,
    ) -> SimDomain {
        SimDomain {
            kind,
            handle,
            max_vcpus,
            max_evtchn_port,
            max_grant_frames,
            paused: true,
            shutdown: None,
            max_pages: 0,
            address_size: None,
            shared_info_mfn,
            p2m: HashMap::new(),
            m2p: HashMap::new(),
            frames: HashMap::new(),
            vcpus: BTreeMap::new(),
            hypercall_page: None,
            pinned: Vec::new(),
            grants: BTreeMap::new(),
            evtchns: BTreeMap::new(),
        }
    }
}

/// Errors saving or loading a simulated host.
#[derive(Debug, thiserror::Error)]
pub enum SimStateError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a saved simulated host: {source}")]
    Corrupt {
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

/// The p2m saved as runs of consecutive frames (gfn, mfn, count): a guest's memory is
/// populated in one go, so a 128 MiB guest is one run instead of 32768 entries.
mod p2m_runs {
    use std::collections::HashMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(p2m: &HashMap<u64, u64>, s: S) -> Result<S::Ok, S::Error> {
        let mut pairs: Vec<(u64, u64)> = p2m.iter().map(|(g, m)| (*g, *m)).collect();
        pairs.sort_unstable();
        let mut runs: Vec<(u64, u64, u64)> = Vec::new();
        for (g, m) in pairs {
            match runs.last_mut() {
                Some((g0, m0, n)) if *g0 + *n == g && *m0 + *n == m => *n += 1,
                _ => runs.push((g, m, 1)),
            }
        }
        runs.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<HashMap<u64, u64>, D::Error> {
        let runs = Vec::<(u64, u64, u64)>::deserialize(d)?;
        let mut p2m = HashMap::new();
        for (g, m, n) in runs {
            for i in 0..n {
                p2m.insert(g + i, m + i);
            }
        }
        Ok(p2m)
    }
}

/// The simulated hypervisor. Cheap to create; one per test.
#[derive(Debug)]
pub struct SimHypervisor {
    state: Mutex<SimState>,
}

/// Xen's first domid for guests (0 is dom0).
const FIRST_DOMID: u16 = 1;
/// Domids at and above this are reserved by Xen (DOMID_FIRST_RESERVED).
const DOMID_FIRST_RESERVED: u16 = 0x7ff0;
/// First machine frame handed out; keeps mfns visibly different from guest pfns in tests.
const FIRST_MFN: u64 = 0x10_0000;
/// Grant entries per frame with grant table v1 (8-byte entries).
const GRANTS_PER_FRAME: u32 = (PAGE_SIZE / 8) as u32;

fn mib_to_pages(mib: u64) -> u64 {
    mib * (1024 * 1024 / PAGE_SIZE as u64)
}

impl SimHypervisor {
    pub fn new(config: SimConfig) -> Self {
        let total = mib_to_pages(config.host_mib);
        let dom0_pages = mib_to_pages(config.dom0_mib).min(total);
        let dom0 = SimDomain {
            paused: false,
            max_pages: dom0_pages,
            address_size: Some(64),
            ..SimDomain::new(
                GuestKind::Pv,
                Uuid::NIL,
                config.nr_cpus,
                u32::MAX,
                64,
                FIRST_MFN - 1,
            )
        };
        let mut domains = BTreeMap::new();
        domains.insert(DomId::DOM0, dom0);
        SimHypervisor {
            state: Mutex::new(SimState {
                config,
                free_pages: total - dom0_pages,
                next_domid: FIRST_DOMID,
                next_mfn: FIRST_MFN,
                domains,
                calls: 0,
                op_calls: HashMap::new(),
                fault: None,
            }),
        }
    }

    /// Loads a host saved by [`SimHypervisor::save`], or starts a new one if `path` does not
    /// exist. This is how `chaos --hypervisor sim` keeps its guests between commands.
    pub fn load_or_new(path: &Path, config: SimConfig) -> std::result::Result<Self, SimStateError> {
        let shown = path.display().to_string();
        match std::fs::read(path) {
            Ok(bytes) => {
                let mut state: SimState =
                    serde_json::from_slice(&bytes).map_err(|source| SimStateError::Corrupt {
                        path: shown,
                        source,
                    })?;
                for d in state.domains.values_mut() {
                    d.m2p = d.p2m.iter().map(|(g, m)| (*m, *g)).collect();
                }
                Ok(SimHypervisor {
                    state: Mutex::new(state),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::new(config)),
            Err(source) => Err(SimStateError::Io {
                path: shown,
                source,
            }),
        }
    }

    /// Saves the host (not guest memory contents) atomically.
    pub fn save(&self, path: &Path) -> std::result::Result<(), SimStateError> {
        let shown = path.display().to_string();
        let json = serde_json::to_vec(&*self.lock()).map_err(|source| SimStateError::Corrupt {
            path: shown.clone(),
            source,
        })?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, json)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|source| SimStateError::Io {
                path: shown,
                source,
            })
    }

    /// Arms a fault and restarts the call counters it refers to.
    pub fn arm(&self, fault: Fault) {
        let mut s = self.lock();
        s.calls = 0;
        s.op_calls.clear();
        s.fault = Some(fault);
    }

    /// Disarms any fault.
    pub fn disarm(&self) {
        self.lock().fault = None;
    }

    /// Calls made since the last `arm` (or since creation).
    pub fn calls(&self) -> u64 {
        self.lock().calls
    }

    /// Host pages not given to any domain.
    pub fn free_pages(&self) -> u64 {
        self.lock().free_pages
    }

    /// Guest domains (dom0 excluded).
    pub fn guest_count(&self) -> usize {
        self.lock().domains.len() - 1
    }

    /// Bytes of a guest frame, or `None` if the frame is not populated.
    pub fn guest_frame(&self, dom: DomId, gfn: u64) -> Option<Vec<u8>> {
        let s = self.lock();
        let d = s.domains.get(&dom)?;
        let mfn = d.p2m.get(&gfn)?;
        Some(
            d.frames
                .get(mfn)
                .map(|f| f.to_vec())
                .unwrap_or_else(|| vec![0; PAGE_SIZE]),
        )
    }

    /// The guest frame backed by `mfn`, if it belongs to `dom`.
    pub fn gfn_of(&self, dom: DomId, mfn: u64) -> Option<u64> {
        self.lock().domains.get(&dom)?.m2p.get(&mfn).copied()
    }

    /// Bytes of a machine frame of `dom` (a populated frame or its shared info page).
    pub fn machine_frame(&self, dom: DomId, mfn: u64) -> Option<Vec<u8>> {
        let s = self.lock();
        let d = s.domains.get(&dom)?;
        if !d.m2p.contains_key(&mfn) && mfn != d.shared_info_mfn {
            return None;
        }
        Some(
            d.frames
                .get(&mfn)
                .map(|f| f.to_vec())
                .unwrap_or_else(|| vec![0; PAGE_SIZE]),
        )
    }

    pub fn vcpu_context(&self, dom: DomId, vcpu: u32) -> Option<VcpuContext> {
        self.lock().domains.get(&dom)?.vcpus.get(&vcpu).cloned()
    }

    /// The guest frame Xen filled with hypercall stubs.
    pub fn hypercall_page(&self, dom: DomId) -> Option<u64> {
        self.lock().domains.get(&dom)?.hypercall_page
    }

    pub fn pinned_tables(&self, dom: DomId) -> Vec<(PageTableLevel, u64)> {
        self.lock()
            .domains
            .get(&dom)
            .map(|d| d.pinned.clone())
            .unwrap_or_default()
    }

    pub fn grant_entries(&self, dom: DomId) -> Vec<GrantEntry> {
        self.lock()
            .domains
            .get(&dom)
            .map(|d| d.grants.values().copied().collect())
            .unwrap_or_default()
    }

    /// Open event channel ports of `dom` with the domain allowed to bind each.
    pub fn evtchns(&self, dom: DomId) -> Vec<(u32, DomId)> {
        self.lock()
            .domains
            .get(&dom)
            .map(|d| d.evtchns.iter().map(|(p, r)| (*p, *r)).collect())
            .unwrap_or_default()
    }

    /// Event channel ports open in all guests together (dom0 excluded).
    pub fn total_evtchns(&self) -> usize {
        self.lock()
            .domains
            .iter()
            .filter(|(id, _)| **id != DomId::DOM0)
            .map(|(_, d)| d.evtchns.len())
            .sum()
    }

    /// What a running guest does when it shuts itself down (SCHEDOP_shutdown).
    pub fn guest_shutdown(&self, dom: DomId, reason: ShutdownReason) -> Result<()> {
        let mut s = self.lock();
        let d = domain_mut(&mut s, dom)?;
        d.shutdown = Some(reason);
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a call of `op` and fails it if an armed fault says so.
    fn enter(&self, op: &'static str) -> Result<MutexGuard<'_, SimState>> {
        let mut s = self.lock();
        let call = s.calls;
        s.calls += 1;
        let nth = s.op_calls.entry(op).or_insert(0);
        let op_call = *nth;
        *nth += 1;
        let fail = match &s.fault {
            Some(Fault::Call(n)) => *n == call,
            Some(Fault::Op { name, nth }) => *name == op && *nth == op_call,
            None => false,
        };
        if fail {
            return Err(HypervisorError::Injected { op });
        }
        Ok(s)
    }
}

fn domain_mut(s: &mut SimState, dom: DomId) -> Result<&mut SimDomain> {
    s.domains
        .get_mut(&dom)
        .ok_or(HypervisorError::NoSuchDomain(dom))
}

fn guest_mut<'a>(s: &'a mut SimState, dom: DomId, op: &'static str) -> Result<&'a mut SimDomain> {
    if dom == DomId::DOM0 {
        return Err(HypervisorError::Invalid {
            op,
            reason: "not allowed on dom0".into(),
        });
    }
    domain_mut(s, dom)
}

/// The machine frame behind a frame number as the foreign-mapping interface takes it: an MFN
/// of the domain for PV (its shared info page included), a populated guest frame for PVH.
fn resolve_frame(d: &SimDomain, frame: u64, op: &'static str) -> Result<u64> {
    let mfn = match d.kind {
        GuestKind::Pv => {
            (d.m2p.contains_key(&frame) || frame == d.shared_info_mfn).then_some(frame)
        }
        GuestKind::Pvh => d.p2m.get(&frame).copied(),
    };
    mfn.ok_or_else(|| {
        invalid(
            op,
            format!(
                "frame {frame:#x} is not populated memory of this {} guest",
                d.kind
            ),
        )
    })
}

fn invalid(op: &'static str, reason: impl Into<String>) -> HypervisorError {
    HypervisorError::Invalid {
        op,
        reason: reason.into(),
    }
}

fn info_of(dom: DomId, d: &SimDomain) -> DomainInfo {
    DomainInfo {
        domid: dom,
        dying: false,
        paused: d.paused,
        blocked: !d.paused && d.shutdown.is_none(),
        running: false,
        shutdown: d.shutdown,
        // dom0's memory is not modelled frame by frame: it has all it may have.
        tot_pages: if dom == DomId::DOM0 {
            d.max_pages
        } else {
            d.p2m.len() as u64
        },
        max_pages: d.max_pages,
        shared_info_frame: d.shared_info_mfn,
        cpu_time_ns: 0,
        // As on Xen: a vcpu comes online when it is given a context (dom0's all are).
        online_vcpus: if dom == DomId::DOM0 {
            d.max_vcpus
        } else {
            d.vcpus.len() as u32
        },
        max_vcpu_id: d.max_vcpus.saturating_sub(1),
        handle: d.handle,
    }
}

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
        s.domains.insert(
            DomId(id),
            SimDomain::new(
                args.kind,
                args.handle,
                args.max_vcpus,
                args.max_evtchn_port,
                args.max_grant_frames,
                shared_info_mfn,
            ),
        );
        Ok(DomId(id))
    }

    fn destroy_domain(&self, dom: DomId) -> Result<()> {
        let mut s = self.enter("XEN_DOMCTL_destroydomain")?;
        guest_mut(&mut s, dom, "XEN_DOMCTL_destroydomain")?;
        if let Some(d) = s.domains.remove(&dom) {
            // Populated frames and the shared info page go back to the host.
            s.free_pages += d.p2m.len() as u64 + 1;
        }
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
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn create(sim: &SimHypervisor) -> DomId {
        sim.create_domain(&CreateDomain {
            kind: GuestKind::Pv,
            handle: Uuid([1; 16]),
            max_vcpus: 1,
            max_evtchn_port: 1023,
            max_grant_frames: 4,
            max_maptrack_frames: 0,
        })
        .expect("create")
    }

    #[test]
    fn memory_is_accounted_and_returned() {
        let sim = SimHypervisor::new(SimConfig::default());
        let free = sim.free_pages();
        let dom = create(&sim);
        sim.set_max_mem(dom, 1024).expect("max_mem");
        let mfns = sim.populate_physmap(dom, &[0, 1, 2]).expect("populate");
        assert_eq!(mfns.len(), 3);
        assert_eq!(sim.free_pages(), free - 4);
        sim.destroy_domain(dom).expect("destroy");
        assert_eq!(sim.free_pages(), free);
        assert_eq!(sim.guest_count(), 0);
    }

    #[test]
    fn populate_beyond_max_mem_or_host_is_refused() {
        let sim = SimHypervisor::new(SimConfig {
            host_mib: 8,
            dom0_mib: 4,
            nr_cpus: 1,
        });
        let dom = create(&sim);
        sim.set_max_mem(dom, 8 * 1024).expect("max_mem");
        let too_many: Vec<u64> = (0..1024).collect();
        let err = sim.populate_physmap(dom, &too_many).unwrap_err();
        assert!(matches!(err, HypervisorError::OutOfMemory { .. }), "{err}");
        sim.set_max_mem(dom, 4).expect("max_mem");
        let err = sim.populate_physmap(dom, &[0, 1]).unwrap_err();
        assert!(matches!(err, HypervisorError::OutOfMemory { .. }), "{err}");
    }

    #[test]
    fn mapping_writes_back_and_unpopulated_frames_are_refused() {
        let sim = SimHypervisor::new(SimConfig::default());
        let dom = create(&sim);
        sim.set_max_mem(dom, 1024).expect("max_mem");
        let mfns = sim.populate_physmap(dom, &[5, 6]).expect("populate");
        {
            // A PV guest's frames are mapped by machine frame number.
            let mut m = sim.map_foreign(dom, &[mfns[1]]).expect("map");
            m.bytes_mut()[10] = 0xaa;
        }
        assert_eq!(sim.guest_frame(dom, 6).expect("frame")[10], 0xaa);
        assert_eq!(sim.guest_frame(dom, 5).expect("frame")[10], 0);
        assert!(sim.map_foreign(dom, &[6]).is_err(), "a pfn is not an mfn");
        assert!(
            sim.map_foreign(dom, &[mfns[1] + 1]).is_err(),
            "not this guest's frame"
        );
        let shared_info = sim.domain_info(dom).expect("info").shared_info_frame;
        assert!(
            sim.map_foreign(dom, &[shared_info]).is_ok(),
            "shared info is mappable"
        );
    }

    #[test]
    fn unpause_needs_a_vcpu_context_on_a_pinned_l4() {
        let sim = SimHypervisor::new(SimConfig::default());
        let dom = create(&sim);
        assert!(sim.unpause_domain(dom).is_err());
        sim.set_max_mem(dom, 1024).expect("max_mem");
        sim.set_address_size(dom, 64).expect("address size");
        let mfn = sim.populate_physmap(dom, &[0]).expect("populate")[0];
        let ctx = VcpuContext::Pv {
            rip: 0x1000,
            rsp: 0x2000,
            rsi: 0x3000,
            cr3_mfn: mfn,
        };
        assert!(sim.set_vcpu_context(dom, 0, &ctx).is_err(), "L4 not pinned");
        sim.pin_page_table(dom, PageTableLevel::L4, mfn)
            .expect("pin");
        sim.set_vcpu_context(dom, 0, &ctx).expect("context");
        sim.unpause_domain(dom).expect("unpause");
        assert!(!sim.domain_info(dom).expect("info").paused);
    }

    #[test]
    fn faults_fire_at_the_chosen_call() {
        let sim = SimHypervisor::new(SimConfig::default());
        sim.arm(Fault::Op {
            name: "XEN_DOMCTL_createdomain",
            nth: 1,
        });
        create(&sim);
        let err = sim
            .create_domain(&CreateDomain {
                kind: GuestKind::Pv,
                handle: Uuid::NIL,
                max_vcpus: 1,
                max_evtchn_port: 1,
                max_grant_frames: 1,
                max_maptrack_frames: 0,
            })
            .unwrap_err();
        assert!(matches!(err, HypervisorError::Injected { .. }));
        sim.arm(Fault::Call(0));
        assert!(sim.physinfo().is_err());
        assert!(sim.physinfo().is_ok());
    }

    #[test]
    fn a_saved_host_loads_back() {
        let dir = std::env::temp_dir().join(format!("chaos-sim-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let path = dir.join("sim.json");
        let sim = SimHypervisor::new(SimConfig::default());
        let dom = create(&sim);
        sim.set_max_mem(dom, 4096).expect("max_mem");
        let mfns = sim.populate_physmap(dom, &[0, 1, 2, 9]).expect("populate");
        sim.evtchn_alloc_unbound(dom, DomId::DOM0).expect("evtchn");
        sim.save(&path).expect("save");
        let back = SimHypervisor::load_or_new(&path, SimConfig::default()).expect("load");
        assert_eq!(back.free_pages(), sim.free_pages());
        assert_eq!(
            back.domain_info(dom).expect("info"),
            sim.domain_info(dom).expect("info")
        );
        assert_eq!(back.gfn_of(dom, mfns[3]), Some(9));
        assert_eq!(back.evtchns(dom), sim.evtchns(dom));
        let next = create(&back);
        assert_ne!(next, dom);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn event_channels_are_per_domain_and_freed_with_it() {
        let sim = SimHypervisor::new(SimConfig::default());
        let dom = create(&sim);
        let a = sim.evtchn_alloc_unbound(dom, DomId::DOM0).expect("evtchn");
        let b = sim.evtchn_alloc_unbound(dom, DomId::DOM0).expect("evtchn");
        assert_ne!(a, b);
        assert_eq!(sim.total_evtchns(), 2);
        sim.destroy_domain(dom).expect("destroy");
        assert_eq!(sim.total_evtchns(), 0);
    }
}
