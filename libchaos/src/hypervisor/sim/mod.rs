//! An in-memory hypervisor for unit tests, dry runs and toolstack-overhead benches.
//!
//! It keeps what Xen would keep (domains, host memory accounting, sparse guest frames, event
//! channels, vcpu contexts, grant entries, pinned page tables) and refuses what Xen would refuse
//! (unpausing a domain whose vcpu 0 has no context, mapping frames that were never populated,
//! populating beyond max_mem or the host's free memory, ...). Any call can be made to fail on
//! purpose, so rollback paths are testable. It never sleeps and never pretends to be faster or
//! slower than the code it runs.

mod fault;
mod model;
mod ops;
mod persist;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use super::{
    DomId, GrantEntry, GuestKind, HypervisorError, PageTableLevel, Result, ShutdownReason, TscMode,
    Uuid, VcpuContext, PAGE_SIZE,
};
pub use fault::Fault;
use fault::FaultPlan;
use model::{domain_mut, mib_to_pages, SimDomain, SimState, FIRST_DOMID, FIRST_MFN};
pub use persist::SimStateError;

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

/// The simulated hypervisor. Cheap to create; one per test.
#[derive(Debug)]
pub struct SimHypervisor {
    state: Mutex<SimState>,
    /// Where [`Hypervisor::checkpoint`](super::Hypervisor::checkpoint) saves the host.
    autosave: Option<std::path::PathBuf>,
    /// Domain exceptions so far (shutdowns, destructions), for `domain_events`.
    exceptions: std::sync::Arc<(Mutex<u64>, std::sync::Condvar)>,
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
                faults: FaultPlan::default(),
                devctl: false,
            }),
            autosave: None,
            exceptions: Default::default(),
        }
    }

    /// The same host, saved to `path` at every checkpoint (after each toolstack operation),
    /// as `chaos --hypervisor sim` and chaosd on the sim keep it.
    pub fn with_autosave(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.autosave = Some(path.into());
        self
    }

    /// Saves the host where [`with_autosave`](Self::with_autosave) said, if it did.
    pub(super) fn autosave_now(&self) {
        if let Some(path) = &self.autosave {
            if let Err(e) = self.save(path) {
                log::error!("saving the simulated host: {e}");
            }
        }
    }

    /// Arms a fault and restarts the call counters it refers to.
    pub fn arm(&self, fault: Fault) {
        self.lock().faults.arm(fault);
    }

    /// Disarms any fault.
    pub fn disarm(&self) {
        self.lock().faults.disarm();
    }

    /// Calls made since the last `arm` (or since creation).
    pub fn calls(&self) -> u64 {
        self.lock().faults.calls()
    }

    /// Makes this a host with (or without) chaos's devctl patch: domains created from now on
    /// have a hypervisor-owned NoXS device page.
    pub fn set_devctl(&self, on: bool) {
        self.lock().devctl = on;
    }

    /// How many times dom0 notified the guest's `port`.
    pub fn notifications(&self, dom: DomId, port: u32) -> u64 {
        self.lock()
            .domains
            .get(&dom)
            .and_then(|d| d.notified.get(&port).copied())
            .unwrap_or(0)
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

    /// The guest's TSC mode (`default` until the toolstack sets another).
    pub fn tsc_mode(&self, dom: DomId) -> Option<TscMode> {
        Some(self.lock().domains.get(&dom)?.tsc_mode)
    }

    /// Pages in the guest's paging pool (PVH).
    pub fn paging_pool_pages(&self, dom: DomId) -> Option<u64> {
        Some(self.lock().domains.get(&dom)?.paging_pool_pages)
    }

    /// An HVM param of a PVH guest.
    pub fn hvm_param(&self, dom: DomId, param: u32) -> Option<u64> {
        self.lock()
            .domains
            .get(&dom)?
            .hvm_params
            .get(&param)
            .copied()
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
        drop(s);
        self.exception();
        Ok(())
    }

    /// Counts a domain exception and wakes the waiters, as VIRQ_DOM_EXC would.
    pub(crate) fn exception(&self) {
        let (count, cv) = &*self.exceptions;
        *count.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        cv.notify_all();
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a call of `op` and fails it if an armed fault says so.
    fn enter(&self, op: &'static str) -> Result<MutexGuard<'_, SimState>> {
        let mut s = self.lock();
        if s.faults.fails(op) {
            return Err(HypervisorError::Injected { op });
        }
        Ok(s)
    }
}
