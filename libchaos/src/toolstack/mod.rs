//! The split toolstack: `prepare` makes a shell (everything that does not depend on the image),
//! `execute` turns a shell into a running guest. `create` does both, taking a ready shell from a
//! [`ShellPool`] when one fits. Lifecycle operations (destroy, pause, shutdown, list) live in
//! `lifecycle`.

mod lifecycle;
mod pool;
pub mod state;
#[cfg(test)]
mod tests;
mod timings;

use std::path::Path;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use lifecycle::{DomainSummary, ShutdownKind};
pub use pool::ShellPool;
pub use state::{DomainRecord, ShellRecord, StateDir, StateError};
pub use timings::{Phase, Timings};

use crate::build::{self, BuildError, BuildParams, BuiltGuest};
use crate::config::{ControlPlane, DomainConfig};
use crate::devices::xenstore as xs_devices;
use crate::hypervisor::{CreateDomain, DomId, GuestKind, Hypervisor, HypervisorError, PAGE_SIZE};
use crate::image::{ImageCache, ImageError};
use crate::xenstore::{Xenstore, XenstoreError};

/// Event channels a guest may open (xl's default `max_event_channels`).
const MAX_EVTCHN_PORT: u32 = 1023;
/// Grant frames and maptrack frames (xl's defaults for a guest).
const MAX_GRANT_FRAMES: u32 = 32;
const MAX_MAPTRACK_FRAMES: u32 = 1024;
/// Slack above maxmem that libxl also grants (LIBXL_MAXMEM_CONSTANT), for the special pages.
const MAXMEM_SLACK_KIB: u64 = 1024;

#[derive(Debug, thiserror::Error)]
pub enum ToolstackError {
    #[error("{step}: {source}")]
    Hypervisor {
        step: &'static str,
        #[source]
        source: HypervisorError,
    },
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("xenstore: {0}")]
    Xenstore(#[from] XenstoreError),
    #[error("runtime state: {0}")]
    State(#[from] StateError),
    #[error("not enough free host memory: the guest needs {needed_mib} MiB, Xen has {free_mib} MiB free")]
    HostMemory { needed_mib: u64, free_mib: u64 },
    #[error("a domain named {0:?} already exists")]
    NameInUse(String),
    #[error("no domain {0:?}")]
    NoSuchDomain(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("the shell (domain {domid}) was prepared for {shell:?}, the config needs {wanted:?}")]
    FlavorMismatch {
        domid: DomId,
        shell: Box<Flavor>,
        wanted: Box<Flavor>,
    },
}

pub type Result<T> = std::result::Result<T, ToolstackError>;

fn hv_step(step: &'static str) -> impl FnOnce(HypervisorError) -> ToolstackError {
    move |source| ToolstackError::Hypervisor { step, source }
}

/// What a shell is prepared for: two configs with the same flavor can use the same shell.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Flavor {
    pub kind: GuestKind,
    pub memory_mib: u64,
    pub maxmem_mib: u64,
    pub max_vcpus: u32,
    pub control_plane: ControlPlane,
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
}

/// A prepared, paused domain with its memory populated and its event channels allocated.
/// It owns the domain: hand it to [`Toolstack::execute`] or [`Toolstack::discard`].
#[derive(Debug)]
#[must_use = "a shell owns a domain: execute or discard it"]
pub struct Shell {
    domid: DomId,
    flavor: Flavor,
    /// Machine frame of each guest frame.
    p2m: Vec<u64>,
    console_evtchn: u32,
    xenstore_evtchn: u32,
    timings: Timings,
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
}

/// The toolstack: a hypervisor, an optional Xenstore, the image cache and the runtime state.
pub struct Toolstack {
    hv: Arc<dyn Hypervisor>,
    xs: Option<Arc<dyn Xenstore>>,
    images: ImageCache,
    state: StateDir,
}

impl Toolstack {
    pub fn new(hv: Arc<dyn Hypervisor>, xs: Option<Arc<dyn Xenstore>>, state: StateDir) -> Self {
        Toolstack {
            hv,
            xs,
            images: ImageCache::new(),
            state,
        }
    }

    pub fn hypervisor(&self) -> &dyn Hypervisor {
        self.hv.as_ref()
    }

    pub fn state(&self) -> &StateDir {
        &self.state
    }

    fn xenstore(&self) -> Result<&dyn Xenstore> {
        self.xs.as_deref().ok_or_else(|| {
            ToolstackError::Unsupported(
                "the xenstore control plane needs xenstored, and none is connected".into(),
            )
        })
    }

    /// Creates a shell: domain, memory, event channels. Nothing here depends on the image.
    pub fn prepare(&self, flavor: &Flavor) -> Result<Shell> {
        self.prepare_tagged(flavor, [0; 16])
    }

    /// [`prepare`](Self::prepare) with the domain handle set to `handle`, so that the shell can
    /// be recognised later (chaosd reclaims the shells of a daemon that crashed by it; `execute`
    /// replaces it with the guest's UUID).
    pub fn prepare_tagged(&self, flavor: &Flavor, handle: [u8; 16]) -> Result<Shell> {
        if flavor.control_plane == ControlPlane::Noxs {
            return Err(ToolstackError::Unsupported(
                "chaos_control_plane = \"noxs\" is not implemented yet; use \"xenstore\"".into(),
            ));
        }
        let mut timings = Timings::default();
        let t = Instant::now();
        // Asking first costs one hypercall and turns a failure deep in populate_physmap into
        // an error that says what is short.
        let free = self
            .hv
            .physinfo()
            .map_err(hv_step("read host memory"))?
            .free_pages;
        if free < flavor.nr_pages() {
            let mib = |pages: u64| pages * PAGE_SIZE as u64 / (1024 * 1024);
            return Err(ToolstackError::HostMemory {
                needed_mib: flavor.memory_mib,
                free_mib: mib(free),
            });
        }
        let domid = self
            .hv
            .create_domain(&CreateDomain {
                kind: flavor.kind,
                handle,
                max_vcpus: flavor.max_vcpus,
                max_evtchn_port: MAX_EVTCHN_PORT,
                max_grant_frames: MAX_GRANT_FRAMES,
                max_maptrack_frames: MAX_MAPTRACK_FRAMES,
            })
            .map_err(hv_step("create domain"))?;
        timings.record("create_domain", t);
        match self.fill_shell(domid, flavor, &mut timings) {
            Ok((p2m, console_evtchn, xenstore_evtchn)) => Ok(Shell {
                domid,
                flavor: flavor.clone(),
                p2m,
                console_evtchn,
                xenstore_evtchn,
                timings,
            }),
            Err(e) => {
                // Destroying the domain frees its memory and event channels with it.
                if let Err(d) = self.hv.destroy_domain(domid) {
                    log::error!("rollback: destroying domain {domid} failed: {d}");
                }
                Err(e)
            }
        }
    }

    fn fill_shell(
        &self,
        domid: DomId,
        flavor: &Flavor,
        timings: &mut Timings,
    ) -> Result<(Vec<u64>, u32, u32)> {
        let t = Instant::now();
        self.hv
            .set_max_mem(domid, flavor.maxmem_mib * 1024 + MAXMEM_SLACK_KIB)
            .map_err(hv_step("set max memory"))?;
        if flavor.kind == GuestKind::Pv {
            self.hv
                .set_address_size(domid, 64)
                .map_err(hv_step("set address size"))?;
        }
        let gfns: Vec<u64> = (0..flavor.nr_pages()).collect();
        let p2m = self
            .hv
            .populate_physmap(domid, &gfns)
            .map_err(hv_step("populate guest memory"))?;
        timings.record("populate", t);
        let t = Instant::now();
        let console = self
            .hv
            .evtchn_alloc_unbound(domid, DomId::DOM0)
            .map_err(hv_step("console event channel"))?;
        let store = self
            .hv
            .evtchn_alloc_unbound(domid, DomId::DOM0)
            .map_err(hv_step("xenstore event channel"))?;
        timings.record("evtchn", t);
        Ok((p2m, console, store))
    }

    /// Destroys a shell nobody will execute.
    pub fn discard(&self, shell: Shell) -> Result<()> {
        self.hv
            .destroy_domain(shell.domid)
            .map_err(hv_step("destroy shell"))
    }

    /// Turns a shell into a guest: load the image, build, publish devices, unpause. On failure
    /// the shell's domain is destroyed and everything written for it removed.
    pub fn execute(&self, shell: Shell, cfg: &DomainConfig, paused: bool) -> Result<Created> {
        let wanted = Flavor::of(cfg);
        if shell.flavor != wanted {
            let err = ToolstackError::FlavorMismatch {
                domid: shell.domid,
                shell: Box::new(shell.flavor.clone()),
                wanted: Box::new(wanted),
            };
            // The shell is untouched: give it back to its owner's accounting by destroying it,
            // since execute consumed it.
            self.discard(shell)?;
            return Err(err);
        }
        let domid = shell.domid;
        let mut timings = shell.timings.clone();
        let mut published = None;
        let result = self.execute_steps(&shell, cfg, paused, &mut timings, &mut published);
        match result {
            Ok(()) => Ok(Created {
                domid,
                name: cfg.name.clone(),
                paused: paused || cfg.paused,
                path: CreationPath::Direct,
                via: Via::Local,
                timings,
            }),
            Err(e) => {
                self.rollback(domid, &cfg.name, published.as_deref());
                Err(e)
            }
        }
    }

    fn execute_steps(
        &self,
        shell: &Shell,
        cfg: &DomainConfig,
        paused: bool,
        timings: &mut Timings,
        published: &mut Option<String>,
    ) -> Result<()> {
        let domid = shell.domid;
        check_supported(cfg)?;
        let t = Instant::now();
        let image = self.images.load(&cfg.kernel)?;
        let ramdisk = match &cfg.ramdisk {
            Some(path) => Some(self.images.load_ramdisk(path)?),
            None => None,
        };
        timings.record("load_image", t);

        let t = Instant::now();
        let built: BuiltGuest = build::build_pv(
            self.hv.as_ref(),
            &image,
            &BuildParams {
                domid,
                p2m: &shell.p2m,
                cmdline: &cfg.cmdline,
                ramdisk: ramdisk.as_ref().map(|r| r.as_slice()),
                vcpus: cfg.vcpus,
                console_evtchn: shell.console_evtchn,
                console_backend: DomId::DOM0,
                xenstore_evtchn: shell.xenstore_evtchn,
                xenstore_backend: DomId::DOM0,
            },
        )?;
        timings.record("build", t);

        let t = Instant::now();
        {
            // Check and claim under the lock, so two creations cannot take one name.
            let _lock = self.state.lock()?;
            self.check_name_free(&cfg.name)?;
            self.state.claim_name(&cfg.name, domid)?;
        }
        let handle = cfg.uuid.unwrap_or_else(random_uuid);
        self.hv
            .set_domain_handle(domid, handle)
            .map_err(hv_step("set domain handle"))?;
        let uuid = format_uuid(&handle);
        let xs = self.xenstore()?;
        // MACs are chosen now and kept in the record, so a restarted guest keeps its MACs.
        let mut config = cfg.clone();
        let vifs = resolve_vifs(&mut config);
        *published = Some(uuid.clone());
        let entries = xs_devices::GuestEntries {
            domid,
            name: &cfg.name,
            uuid: &uuid,
            target_kib: cfg.memory_mib * 1024,
            max_kib: cfg.maxmem_mib * 1024,
            vcpus: cfg.vcpus,
            console_mfn: built.console_mfn,
            console_evtchn: shell.console_evtchn,
            store_mfn: built.xenstore_mfn,
            store_evtchn: shell.xenstore_evtchn,
            vifs: &vifs,
        };
        xs_devices::publish(xs, &entries)?;
        timings.record("devices", t);
        let t = Instant::now();
        xs_devices::introduce(xs, &entries)?;
        timings.record("introduce", t);

        let t = Instant::now();
        self.state.save(&DomainRecord {
            domid,
            name: cfg.name.clone(),
            uuid,
            config,
            console_evtchn: shell.console_evtchn,
            console_mfn: built.console_mfn,
            xenstore_evtchn: shell.xenstore_evtchn,
            xenstore_mfn: built.xenstore_mfn,
            created_ms: now_ms(),
        })?;
        timings.record("record", t);

        if !(paused || cfg.paused) {
            let t = Instant::now();
            self.hv.unpause_domain(domid).map_err(hv_step("unpause"))?;
            timings.record("unpause", t);
        }
        Ok(())
    }

    /// Undoes a failed execute: record, Xenstore entries, domain (with its memory and event
    /// channels). Errors here are logged: the original error is the one to report.
    fn rollback(&self, domid: DomId, name: &str, published_uuid: Option<&str>) {
        if let Err(e) = self.state.remove(domid) {
            log::error!("rollback: removing the record of domain {domid}: {e}");
        }
        if let Err(e) = self.state.release_name(name, domid) {
            log::error!("rollback: freeing the name {name:?} of domain {domid}: {e}");
        }
        if let (Some(uuid), Some(xs)) = (published_uuid, self.xs.as_deref()) {
            if let Err(e) = xs_devices::remove(xs, domid, Some(uuid)) {
                log::error!("rollback: removing xenstore entries of domain {domid}: {e}");
            }
        }
        if let Err(e) = self.hv.destroy_domain(domid) {
            log::error!("rollback: destroying domain {domid}: {e}");
        }
    }

    /// Creates a guest, from a pool shell when one fits, else by prepare + execute.
    pub fn create(
        &self,
        cfg: &DomainConfig,
        pool: Option<&ShellPool>,
        paused: bool,
    ) -> Result<Created> {
        let flavor = Flavor::of(cfg);
        if let Some(shell) = pool.and_then(|p| p.take(&flavor)) {
            return self.execute_pooled(shell, cfg, paused);
        }
        // Refuse what cannot work before making anything, so mistakes cost nothing.
        check_supported(cfg)?;
        self.check_name_free(&cfg.name)?;
        let shell = self.prepare(&flavor)?;
        self.execute(shell, cfg, paused)
    }

    /// Executes a shell that was prepared ahead of time (path "pool"): only this creation's
    /// own work is timed.
    pub fn execute_pooled(
        &self,
        shell: Shell,
        cfg: &DomainConfig,
        paused: bool,
    ) -> Result<Created> {
        let shell = Shell {
            timings: Timings::default(),
            ..shell
        };
        let mut created = self.execute(shell, cfg, paused)?;
        created.path = CreationPath::Pool;
        Ok(created)
    }

    /// Refuses, before a shell is spent on it, a config that cannot be created: unsupported
    /// features, a kernel or ramdisk that cannot be read or parsed. The kernel lands in the
    /// image cache, so `execute` does not read it again.
    pub fn check_creatable(&self, cfg: &DomainConfig) -> Result<()> {
        check_supported(cfg)?;
        self.images.load(&cfg.kernel)?;
        if let Some(path) = &cfg.ramdisk {
            std::fs::metadata(path).map_err(|e| {
                ToolstackError::Unsupported(format!("ramdisk {}: {e}", path.display()))
            })?;
        }
        Ok(())
    }

    /// Names are unique among chaos's guests (checked through the name index, so the check
    /// costs the same with ten guests or ten thousand). Guests xl created are not scanned here.
    fn check_name_free(&self, name: &str) -> Result<()> {
        if self.find_chaos_guest(name)?.is_some() {
            return Err(ToolstackError::NameInUse(name.to_string()));
        }
        Ok(())
    }

    /// Parses and validates a config file as `chaos create` does (helper for front ends).
    pub fn load_config(
        path: &Path,
        overrides: &[String],
    ) -> std::result::Result<crate::config::Loaded, crate::config::ConfigError> {
        crate::config::load(path, overrides)
    }
}

/// What chaos cannot build yet, refused before anything is made.
fn check_supported(cfg: &DomainConfig) -> Result<()> {
    if !cfg.disks.is_empty() {
        return Err(ToolstackError::Unsupported(
            "disk: block devices are not supported by chaos yet".into(),
        ));
    }
    for (devid, vif) in cfg.vifs.iter().enumerate() {
        if let Some(backend) = vif.backend.as_deref() {
            if !matches!(backend, "0" | "Domain-0") {
                return Err(ToolstackError::Unsupported(format!(
                    "vif {devid}: backend={backend}: driver domains are not supported yet (the backend is dom0)"
                )));
            }
        }
        if let Some(name) = &vif.vifname {
            return Err(ToolstackError::Unsupported(format!(
                "vif {devid}: vifname={name}: renaming the backend interface is not supported yet (it is vif<domid>.{devid})"
            )));
        }
    }
    if cfg.kind != GuestKind::Pv {
        return Err(ToolstackError::Unsupported(format!(
            "type = \"{}\": only PV guests can be built so far",
            cfg.kind
        )));
    }
    Ok(())
}

/// The vifs as published: devid = position, a random Xen MAC where the config names none (the
/// chosen MAC is written back into `cfg`), the script path libxl would record.
fn resolve_vifs(cfg: &mut DomainConfig) -> Vec<xs_devices::VifEntry> {
    cfg.vifs
        .iter_mut()
        .enumerate()
        .map(|(devid, vif)| {
            let mac = *vif.mac.get_or_insert_with(random_mac);
            xs_devices::VifEntry {
                devid: devid as u32,
                mac,
                bridge: vif.bridge.clone(),
                ip: vif.ip.clone(),
                script: xs_devices::script_path(vif.script.as_deref()),
            }
        })
        .collect()
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// 16 random bytes from the kernel's generator (the clock if that fails: uniqueness is what
/// matters here, not secrecy).
fn random_bytes(what: &str) -> [u8; 16] {
    use std::io::Read;
    let mut b = [0u8; 16];
    if let Err(e) = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)) {
        log::warn!("/dev/urandom: {e}; deriving the {what} from the clock");
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b = nanos.to_le_bytes();
    }
    b
}

/// A random (version 4) UUID for the domain handle.
pub fn random_uuid() -> [u8; 16] {
    let mut b = random_bytes("domain UUID");
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    b
}

/// A random MAC with Xen's OUI, as libxl makes them: 00:16:3e, then 23 random bits.
fn random_mac() -> [u8; 6] {
    let r = random_bytes("vif MAC");
    [0x00, 0x16, 0x3e, r[0] & 0x7f, r[1], r[2]]
}

pub fn format_uuid(b: &[u8; 16]) -> String {
    let h: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    )
}
