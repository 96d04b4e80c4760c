//! The toolstack's nouns: a shell's [`Flavor`], the [`Shell`] itself, and what a creation
//! returns ([`Created`]).

use serde::{Deserialize, Serialize};

use super::Timings;
use crate::config::{DomainConfig, PlaneKind};
use crate::hypervisor::costs::Costs;
use crate::hypervisor::{DomId, EvtchnPort, GuestKind, PAGE_SIZE};

/// What a shell is prepared for: two configs with the same flavor can use the same shell.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Flavor {
    pub kind: GuestKind,
    pub memory_mib: u64,
    pub maxmem_mib: u64,
    pub max_vcpus: u32,
    pub control_plane: PlaneKind,
}

impl Flavor {
    pub fn of(cfg: &DomainConfig) -> Flavor {
        Flavor {
            kind: cfg.kind,
            memory_mib: cfg.memory_mib,
            maxmem_mib: cfg.maxmem_mib,
            max_vcpus: cfg.max_vcpus,
            control_plane: cfg.control_plane,
        }
    }

    /// Guest frames a shell of this flavor populates.
    pub fn nr_pages(&self) -> u64 {
        self.memory_mib * (1024 * 1024 / PAGE_SIZE as u64)
    }

    /// The paging pool Xen builds a PVH guest's second-stage page tables from, as libxl sizes
    /// it (libxl__get_required_paging_memory, with HAP): 1 MiB per vcpu and a page per MiB
    /// of maxmem. PV guests have none.
    pub fn paging_pool_bytes(&self) -> u64 {
        match self.kind {
            GuestKind::Pv => 0,
            GuestKind::Pvh => {
                let pages = 256 * u64::from(self.max_vcpus) + self.maxmem_mib;
                pages * PAGE_SIZE as u64
            }
        }
    }
}

/// A prepared, paused domain with its memory populated and its event channels allocated.
/// It owns the domain: hand it to [`Toolstack::execute`](super::Toolstack::execute) or
/// [`Toolstack::discard`](super::Toolstack::discard).
#[derive(Debug)]
#[must_use = "a shell owns a domain: execute or discard it"]
pub struct Shell {
    pub(super) domid: DomId,
    pub(super) flavor: Flavor,
    /// Machine frame of each guest frame.
    pub(super) p2m: Vec<u64>,
    /// The console ring's channel, toward dom0.
    pub(super) console_evtchn: EvtchnPort,
    /// The control plane's channel, toward dom0: the Xenstore ring's, or NoXS's sysctl device.
    pub(super) plane_evtchn: EvtchnPort,
    pub(super) timings: Timings,
    /// What preparing it cost.
    pub(super) costs: Costs,
}

impl Shell {
    pub fn domid(&self) -> DomId {
        self.domid
    }

    pub fn flavor(&self) -> &Flavor {
        &self.flavor
    }
}

/// How a creation got its shell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CreationPath {
    /// A ready shell from the pool: only `execute` ran.
    Pool,
    /// No fitting shell: `prepare` and `execute` ran back to back.
    Direct,
}

/// Which process created the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// This process (`chaos create` without a daemon, or an embedding program).
    #[default]
    Local,
    /// The chaosd daemon, on a client's request.
    Daemon,
}

/// A guest that was created.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Created {
    pub domid: DomId,
    pub name: String,
    pub paused: bool,
    pub path: CreationPath,
    #[serde(default)]
    pub via: Via,
    pub timings: Timings,
    /// Hypercalls and Xenstore requests this creation made (for a pooled one, only those of
    /// execute: the shell was prepared ahead of time).
    #[serde(default)]
    pub costs: Costs,
}
