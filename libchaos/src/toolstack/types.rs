//! The toolstack's nouns: a shell's [`Flavor`], the [`Shell`] itself, and what a creation
//! returns ([`Created`]).

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::Timings;
use crate::build::PvPrebuilt;
use crate::config::{DomainConfig, PlaneKind};
use crate::hypervisor::costs::Costs;
use crate::hypervisor::{DomId, EvtchnPort, GuestKind, Uuid, PAGE_SIZE};
use crate::image::KernelImage;

/// What a shell is prepared for: two configs with the same flavor can use the same shell.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Flavor {
    pub kind: GuestKind,
    pub memory_mib: u64,
    pub maxmem_mib: u64,
    pub max_vcpus: u32,
    pub control_plane: PlaneKind,
    /// A warm flavor's image: its shells hold it already loaded (PV only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<WarmImage>,
}

/// What a warm shell can be finished with ahead of its guest: the command line and vcpus of
/// its flavor's config (chaosd has it). A guest of that config then finds its start_info,
/// console and control pages, grants and vcpu 0 already written: nothing in them names the
/// guest. Guests with other values get them written at execute, as without it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishAhead {
    pub cmdline: String,
    pub vcpus: u32,
}

impl FinishAhead {
    /// For a warm flavor's config, unless its guests have vifs (each gets its own MAC and
    /// channel at execute, so there is nothing to finish ahead).
    pub fn of(cfg: &DomainConfig) -> Option<FinishAhead> {
        (cfg.kind == GuestKind::Pv && cfg.vifs.is_empty()).then(|| FinishAhead {
            cmdline: cfg.cmdline.clone(),
            vcpus: cfg.vcpus,
        })
    }
}

/// What a warm shell has loaded: the kernel and ramdisk files, and room for this many NoXS
/// control pages (the layout depends on it).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WarmImage {
    pub kernel: PathBuf,
    #[serde(default)]
    pub ramdisk: Option<PathBuf>,
    #[serde(default)]
    pub ctrl_pages: u64,
}

impl Flavor {
    /// The plain flavor of `cfg` (shells with no image in them).
    pub fn of(cfg: &DomainConfig) -> Flavor {
        Flavor {
            kind: cfg.kind,
            memory_mib: cfg.memory_mib,
            maxmem_mib: cfg.maxmem_mib,
            max_vcpus: cfg.max_vcpus,
            control_plane: cfg.control_plane,
            image: None,
        }
    }

    /// The warm flavor of `cfg`: shells with its kernel and ramdisk already loaded. None for
    /// what warm shells do not serve (PVH guests).
    pub fn warm_of(cfg: &DomainConfig) -> Option<Flavor> {
        if cfg.kind != GuestKind::Pv {
            return None;
        }
        let ctrl_pages = match cfg.control_plane {
            PlaneKind::Xenstore => 0,
            // The sysctl device and one page per vif (noxs_devices).
            PlaneKind::Noxs => 1 + cfg.vifs.len() as u64,
        };
        Some(Flavor {
            image: Some(WarmImage {
                kernel: cfg.kernel.clone(),
                ramdisk: cfg.ramdisk.clone(),
                ctrl_pages,
            }),
            ..Flavor::of(cfg)
        })
    }

    /// This flavor without its image.
    pub fn plain(&self) -> Flavor {
        Flavor {
            image: None,
            ..self.clone()
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
    /// The domain handle it was made with (NIL: none in particular).
    pub(super) handle: Uuid,
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
    /// A warm shell's image, as prepare loaded and built it.
    pub(super) warm: Option<Warm>,
}

/// The image a warm shell holds: the parsed files it came from (the image cache's entries,
/// compared by identity at execute) and what the builder did with them.
#[derive(Debug)]
pub(super) struct Warm {
    pub(super) image: Arc<KernelImage>,
    pub(super) ramdisk: Option<Arc<Vec<u8>>>,
    pub(super) built: PvPrebuilt,
    /// NoXS, finished ahead: xendevd serves its console already (unnamed until the guest's
    /// record names it). Whoever destroys the shell detaches it first.
    pub(super) attached: bool,
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
