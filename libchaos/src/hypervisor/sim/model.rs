//! What the simulated host keeps: its domains, their frames, channels and contexts.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::{FaultPlan, SimConfig};
use crate::hypervisor::{
    DomId, DomainInfo, GrantEntry, GuestKind, HypervisorError, PageTableLevel, Result,
    ShutdownReason, TscMode, Uuid, VcpuContext, PAGE_SIZE,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct SimDomain {
    pub(super) kind: GuestKind,
    pub(super) handle: Uuid,
    pub(super) max_vcpus: u32,
    pub(super) max_evtchn_port: u32,
    pub(super) max_grant_frames: u32,
    pub(super) paused: bool,
    pub(super) shutdown: Option<ShutdownReason>,
    pub(super) max_pages: u64,
    pub(super) address_size: Option<u32>,
    pub(super) shared_info_mfn: u64,
    /// gfn -> mfn of every populated frame.
    #[serde(with = "super::persist::p2m_runs")]
    pub(super) p2m: HashMap<u64, u64>,
    /// mfn -> gfn, the reverse of `p2m` (rebuilt when a saved host is loaded).
    #[serde(skip)]
    pub(super) m2p: HashMap<u64, u64>,
    /// Contents of frames that were ever written (mfn -> bytes); the rest read as zeros.
    /// Not saved: guest memory contents only matter within one process.
    #[serde(skip)]
    pub(super) frames: HashMap<u64, Box<[u8]>>,
    pub(super) vcpus: BTreeMap<u32, VcpuContext>,
    pub(super) hypercall_page: Option<u64>,
    pub(super) pinned: Vec<(PageTableLevel, u64)>,
    pub(super) grants: BTreeMap<u32, GrantEntry>,
    pub(super) evtchns: BTreeMap<u32, DomId>,
    /// Times dom0 notified each port (NoXS sysctl requests).
    #[serde(default)]
    pub(super) notified: BTreeMap<u32, u64>,
    /// The hypervisor-owned NoXS device page, on a host with the devctl patch (not saved).
    #[serde(skip)]
    pub(super) device_page: Option<Box<noxs::DevPage>>,
    #[serde(default = "default_tsc_mode")]
    pub(super) tsc_mode: TscMode,
    /// Pages of host memory in the domain's paging pool (PVH), returned on destroy.
    #[serde(default)]
    pub(super) paging_pool_pages: u64,
    /// HVM params set by the toolstack (PVH: where the rings are).
    #[serde(default)]
    pub(super) hvm_params: BTreeMap<u32, u64>,
}

fn default_tsc_mode() -> TscMode {
    TscMode::Default
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct SimState {
    pub(super) config: SimConfig,
    pub(super) free_pages: u64,
    pub(super) next_domid: u16,
    pub(super) next_mfn: u64,
    pub(super) domains: BTreeMap<DomId, SimDomain>,
    #[serde(skip)]
    pub(super) faults: FaultPlan,
    /// Simulates Xen with chaos's devctl patch: every new domain gets a device page.
    #[serde(default)]
    pub(super) devctl: bool,
}

impl SimDomain {
    /// A freshly created domain: paused, no memory, no vcpu context.
    pub(super) fn new(
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
            notified: BTreeMap::new(),
            device_page: None,
            tsc_mode: TscMode::Default,
            paging_pool_pages: 0,
            hvm_params: BTreeMap::new(),
        }
    }
}

/// Xen's first domid for guests (0 is dom0).
pub(super) const FIRST_DOMID: u16 = 1;
/// Domids at and above this are reserved by Xen (DOMID_FIRST_RESERVED).
pub(super) const DOMID_FIRST_RESERVED: u16 = 0x7ff0;
/// First machine frame handed out; keeps mfns visibly different from guest pfns in tests.
pub(super) const FIRST_MFN: u64 = 0x10_0000;
/// Grant entries per frame with grant table v1 (8-byte entries).
pub(super) const GRANTS_PER_FRAME: u32 = (PAGE_SIZE / 8) as u32;

pub(super) fn mib_to_pages(mib: u64) -> u64 {
    mib * (1024 * 1024 / PAGE_SIZE as u64)
}

pub(super) fn domain_mut(s: &mut SimState, dom: DomId) -> Result<&mut SimDomain> {
    s.domains
        .get_mut(&dom)
        .ok_or(HypervisorError::NoSuchDomain(dom))
}

pub(super) fn guest_mut<'a>(
    s: &'a mut SimState,
    dom: DomId,
    op: &'static str,
) -> Result<&'a mut SimDomain> {
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
pub(super) fn resolve_frame(d: &SimDomain, frame: u64, op: &'static str) -> Result<u64> {
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

pub(super) fn invalid(op: &'static str, reason: impl Into<String>) -> HypervisorError {
    HypervisorError::Invalid {
        op,
        reason: reason.into(),
    }
}

pub(super) fn info_of(dom: DomId, d: &SimDomain) -> DomainInfo {
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
