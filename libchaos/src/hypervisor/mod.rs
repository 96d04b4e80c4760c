//! The seam between the toolstack and Xen: every hypervisor operation the toolstack needs.
//!
//! Two implementations: [`sim::SimHypervisor`] (in memory, for unit tests, dry runs and overhead
//! benches) and `xen` (the real one over /dev/xen/*). Builders and the toolstack only see this trait.

pub mod costs;
pub mod sim;
pub mod xen;

use std::fmt;

pub use xen_types::{DomId, EvtchnPort, GrantRef, Uuid, PAGE_SHIFT, PAGE_SIZE};

/// Who owns a NoXS guest's device page on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoxsFlavour {
    /// Stock Xen: the toolstack writes the page into the guest's memory (noxs/ABI.md 2.2).
    Toolstack,
    /// Xen with chaos's patches owns it, read-only to the guest (the devctl hypercall).
    Hypervisor,
}

impl fmt::Display for NoxsFlavour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NoxsFlavour::Toolstack => "toolstack device page (stock Xen)",
            NoxsFlavour::Hypervisor => "hypervisor device page (Xen with chaos's devctl patch)",
        })
    }
}

/// Guest virtualisation mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GuestKind {
    Pv,
    Pvh,
}

impl fmt::Display for GuestKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GuestKind::Pv => "pv",
            GuestKind::Pvh => "pvh",
        })
    }
}

/// How the guest's TSC is provided (xl `tsc_mode`, libxl's names). The numeric values are
/// xl's deprecated integer forms and Xen's `XEN_CPUID_TSC_MODE_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TscMode {
    Default = 0,
    AlwaysEmulate = 1,
    Native = 2,
    NativeParavirt = 3,
}

impl TscMode {
    pub const ALL: [TscMode; 4] = [
        TscMode::Default,
        TscMode::AlwaysEmulate,
        TscMode::Native,
        TscMode::NativeParavirt,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TscMode::Default => "default",
            TscMode::AlwaysEmulate => "always_emulate",
            TscMode::Native => "native",
            TscMode::NativeParavirt => "native_paravirt",
        }
    }

    pub fn from_name(s: &str) -> Option<TscMode> {
        TscMode::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

impl fmt::Display for TscMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Arguments of `XEN_DOMCTL_createdomain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateDomain {
    pub kind: GuestKind,
    /// Domain handle (the UUID xl shows).
    pub handle: Uuid,
    pub max_vcpus: u32,
    pub max_evtchn_port: u32,
    pub max_grant_frames: u32,
    pub max_maptrack_frames: u32,
}

/// Why a domain shut down (`SHUTDOWN_*` in xen/include/public/sched.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShutdownReason {
    Poweroff,
    Reboot,
    Suspend,
    Crash,
    Watchdog,
    SoftReset,
}

impl ShutdownReason {
    /// The `SHUTDOWN_*` code Xen uses.
    pub fn code(self) -> u32 {
        match self {
            ShutdownReason::Poweroff => 0,
            ShutdownReason::Reboot => 1,
            ShutdownReason::Suspend => 2,
            ShutdownReason::Crash => 3,
            ShutdownReason::Watchdog => 4,
            ShutdownReason::SoftReset => 5,
        }
    }

    /// The reason for a `SHUTDOWN_*` code, if Xen defines it.
    pub fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            0 => ShutdownReason::Poweroff,
            1 => ShutdownReason::Reboot,
            2 => ShutdownReason::Suspend,
            3 => ShutdownReason::Crash,
            4 => ShutdownReason::Watchdog,
            5 => ShutdownReason::SoftReset,
            _ => return None,
        })
    }
}

/// What `XEN_DOMCTL_getdomaininfo` reports about one domain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DomainInfo {
    pub domid: DomId,
    pub dying: bool,
    pub paused: bool,
    pub blocked: bool,
    pub running: bool,
    /// Set once the domain has shut down, with the reason it gave.
    pub shutdown: Option<ShutdownReason>,
    pub tot_pages: u64,
    pub max_pages: u64,
    pub shared_info_frame: u64,
    pub cpu_time_ns: u64,
    pub online_vcpus: u32,
    pub max_vcpu_id: u32,
    pub handle: Uuid,
}

/// What `XEN_SYSCTL_physinfo` reports about the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PhysInfo {
    pub nr_cpus: u32,
    pub total_pages: u64,
    pub free_pages: u64,
}

/// Initial register state of a vcpu, in the terms the builders use; backends turn it into
/// Xen's `vcpu_guest_context` (PV) or `vcpu_hvm_context` (PVH).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum VcpuContext {
    /// 64-bit PV: paging is on, the kernel starts at `rip` with `rsi` pointing at start_info.
    Pv {
        rip: u64,
        rsp: u64,
        rsi: u64,
        /// Machine frame of the top-level (L4) page table (what Xen loads into cr3).
        cr3_mfn: u64,
    },
    /// PVH: flat 32-bit protected mode, paging off, `rbx` holds the hvm_start_info address.
    Pvh { rip: u32, rbx: u32 },
}

/// Level of a PV page table to pin (`MMUEXT_PIN_L*_TABLE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PageTableLevel {
    L1,
    L2,
    L3,
    L4,
}

/// One grant-table entry the toolstack fills before the guest starts (console and xenstore
/// rings are granted to the backends this way, as libxc's gnttab seeding does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GrantEntry {
    pub gref: u32,
    pub backend: DomId,
    /// The granted frame: an MFN for a PV guest, a guest frame for a PVH guest.
    pub frame: u64,
}

/// Guest memory mapped into this process. Writes land in guest memory no later than when the
/// mapping is dropped.
pub trait ForeignMapping {
    fn bytes(&self) -> &[u8];
    fn bytes_mut(&mut self) -> &mut [u8];
}

/// Wakes a reaper when some domain's state may have changed (Xen's VIRQ_DOM_EXC: a domain
/// shut down, crashed or died). It does not say which one.
pub trait DomainEvents: Send {
    /// Waits up to `timeout` for an event; true if one came.
    fn wait(&mut self, timeout: std::time::Duration) -> Result<bool>;
}

/// Errors of a hypervisor operation.
#[derive(Debug, thiserror::Error)]
pub enum HypervisorError {
    #[error("no Xen here: {path} does not exist (this host is not a Xen dom0; try the lab: lab/xenlab shell)")]
    NoXen { path: String },
    #[error("cannot open {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("unsupported Xen {interface} interface version {version:#x} (chaos knows {known})")]
    UnsupportedInterface {
        interface: &'static str,
        version: u32,
        known: &'static str,
    },
    #[error("{op} failed: {source}")]
    Os {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("domain {0} does not exist")]
    NoSuchDomain(DomId),
    #[error("out of host memory: {op} needs {needed_pages} pages, {free_pages} free")]
    OutOfMemory {
        op: &'static str,
        needed_pages: u64,
        free_pages: u64,
    },
    #[error("{op} rejected: {reason}")]
    Invalid { op: &'static str, reason: String },
    #[error("{op} failed: injected failure (simulated hypervisor)")]
    Injected { op: &'static str },
}

pub type Result<T> = std::result::Result<T, HypervisorError>;

fn no_devctl(backend: &str) -> HypervisorError {
    HypervisorError::Invalid {
        op: "devctl",
        reason: format!("the {backend} hypervisor has no devctl hypercall (stock Xen)"),
    }
}

/// The Xen operations a toolstack needs. Implementations are shared between threads (the pool
/// daemon refills shells from worker threads), hence `Send + Sync` and `&self` everywhere.
pub trait Hypervisor: Send + Sync {
    /// A short name for logs and `chaos info` ("xen", "sim").
    fn name(&self) -> &'static str;

    /// Host CPUs and memory.
    fn physinfo(&self) -> Result<PhysInfo>;

    /// `XEN_DOMCTL_createdomain`: a new, paused, empty domain.
    fn create_domain(&self, args: &CreateDomain) -> Result<DomId>;
    /// `XEN_DOMCTL_destroydomain`: releases the domain's memory, event channels and grants.
    fn destroy_domain(&self, dom: DomId) -> Result<()>;
    /// `XEN_DOMCTL_setdomainhandle`: the UUID, known only once a shell meets its config.
    fn set_domain_handle(&self, dom: DomId, handle: Uuid) -> Result<()>;
    fn pause_domain(&self, dom: DomId) -> Result<()>;
    /// Refuses a domain that was never built (no vcpu online), which Xen would unpause to
    /// sit there doing nothing.
    fn unpause_domain(&self, dom: DomId) -> Result<()>;
    /// [`unpause_domain`](Self::unpause_domain) of a domain its caller has just built: no
    /// check first (on Xen 4.17 the check is a domain lookup that walks every domain).
    fn unpause_built(&self, dom: DomId) -> Result<()> {
        self.unpause_domain(dom)
    }
    /// `SCHEDOP_remote_shutdown`: mark the domain shut down with `reason` (what a guest that
    /// ignores the control plane gets from `xl shutdown -F` / `xl destroy` paths).
    fn shutdown_domain(&self, dom: DomId, reason: ShutdownReason) -> Result<()>;

    fn domain_info(&self, dom: DomId) -> Result<DomainInfo>;
    /// All domains, dom0 included, in domid order.
    fn list_domains(&self) -> Result<Vec<DomainInfo>>;

    /// `XEN_DOMCTL_max_mem`, in KiB.
    fn set_max_mem(&self, dom: DomId, max_kib: u64) -> Result<()>;
    /// `XEN_DOMCTL_set_address_size` (PV only; 64 for x86_64 guests).
    fn set_address_size(&self, dom: DomId, bits: u32) -> Result<()>;
    /// `XEN_DOMCTL_settscinfo`: how the guest reads its TSC (xl `tsc_mode`; PVH guests under
    /// an emulator without next-RIP support need `native`). Xen starts every domain in
    /// `default`.
    fn set_tsc_mode(&self, dom: DomId, mode: TscMode) -> Result<()>;
    /// `XEN_DOMCTL_set_paging_mempool_size`: the pool Xen builds an HVM-container (PVH)
    /// guest's second-stage page tables from, in bytes (libxl's shadow_memkb).
    fn set_paging_pool(&self, dom: DomId, bytes: u64) -> Result<()>;
    /// `XENMEM_populate_physmap` for 4 KiB frames at the given guest frame numbers; returns the
    /// machine frame numbers backing them (a PV guest's p2m needs them).
    fn populate_physmap(&self, dom: DomId, gfns: &[u64]) -> Result<Vec<u64>>;
    /// Maps guest frames into this process (privcmd `MMAPBATCH_V2`). Frames are named as Xen's
    /// foreign-mapping interface wants them: machine frames (MFNs) for a PV guest, which has no
    /// p2m inside Xen (its shared info frame included), guest frames for a PVH guest.
    fn map_foreign<'a>(
        &'a self,
        dom: DomId,
        frames: &[u64],
    ) -> Result<Box<dyn ForeignMapping + 'a>>;

    /// `XEN_DOMCTL_hypercall_init`: Xen writes the hypercall stubs into this frame (an MFN for
    /// a PV guest, as with `map_foreign`).
    fn init_hypercall_page(&self, dom: DomId, frame: u64) -> Result<()>;
    /// `MMUEXT_PIN_L*_TABLE` on behalf of a PV guest: Xen validates and types its page tables.
    fn pin_page_table(&self, dom: DomId, level: PageTableLevel, mfn: u64) -> Result<()>;
    /// Fills grant-table entries of the guest (console and xenstore rings).
    fn seed_grant_table(&self, dom: DomId, entries: &[GrantEntry]) -> Result<()>;
    /// `HVMOP_set_param` (PVH guests find their xenstore and console rings through HVM params).
    /// The default refuses: a backend that builds PVH guests must implement it.
    fn set_hvm_param(&self, dom: DomId, param: u32, value: u64) -> Result<()> {
        let _ = (dom, value);
        Err(HypervisorError::Invalid {
            op: "HVMOP_set_param",
            reason: format!(
                "HVM param {param}: not supported by the {} backend",
                self.name()
            ),
        })
    }
    /// `XEN_DOMCTL_setvcpucontext`.
    fn set_vcpu_context(&self, dom: DomId, vcpu: u32, ctx: &VcpuContext) -> Result<()>;

    /// `EVTCHNOP_alloc_unbound`: a port in `dom` that `remote` may bind.
    fn evtchn_alloc_unbound(&self, dom: DomId, remote: DomId) -> Result<u32>;

    /// Signals the guest's port `port` (allocated toward dom0) once: binds it, notifies and
    /// unbinds, leaving it unbound for the next time (NoXS sysctl requests).
    fn notify_guest(&self, dom: DomId, port: EvtchnPort) -> Result<()>;

    /// Makes the host's state durable where the backend keeps it, after the toolstack changed
    /// it (a creation, a destroy, ...): the simulated host saves itself to its file, so a
    /// process killed afterwards loses nothing it reported. Xen keeps its own state: nothing
    /// to do.
    fn checkpoint(&self) {}

    /// Domain exception events, if this process can have them: on Xen only one process binds
    /// VIRQ_DOM_EXC, and xenstored does when it runs (`None` then).
    fn domain_events(&self) -> Result<Option<Box<dyn DomainEvents>>> {
        Ok(None)
    }

    /// Who owns NoXS device pages here (the devctl hypercall answers, or stock Xen).
    fn noxs_flavour(&self) -> NoxsFlavour {
        NoxsFlavour::Toolstack
    }

    /// `XEN_DEVCTL_dev_add`: lists a device in `dom`'s hypervisor-owned page; returns its slot.
    fn devctl_add(&self, dom: DomId, entry: &noxs::DevPageEntry) -> Result<u32> {
        let _ = (dom, entry);
        Err(no_devctl(self.name()))
    }

    /// `XEN_DEVCTL_dev_remove`: takes the device of that type and id out of the page.
    fn devctl_remove(&self, dom: DomId, dev_type: u32, id: u32) -> Result<()> {
        let _ = (dom, dev_type, id);
        Err(no_devctl(self.name()))
    }

    /// `XEN_DEVCTL_dev_enum`: a copy of `dom`'s hypervisor-owned page.
    fn devctl_enum(&self, dom: DomId) -> Result<noxs::DevPage> {
        let _ = dom;
        Err(no_devctl(self.name()))
    }
}
