//! Creating a guest: `prepare` makes a shell (everything that does not depend on the image),
//! `execute` turns a shell into a running guest, `create` does both. A failure anywhere rolls
//! back what exists by then.

use std::sync::Arc;
use std::time::Instant;

use super::error::hv_step;
use super::random::{now_ms, random_mac, random_uuid};
use super::types::Warm;
use super::{
    Created, CreationPath, DomainRecord, Flavor, PendingCreation, Result, Shell, Timings,
    Toolstack, ToolstackError, Via, WarmImage,
};
use crate::build::{self, BuildParams, BuiltGuest, BuiltPvhGuest, NoxsDevice, StorePage};
use crate::config::{DomainConfig, GuestSpec, PlaneKind, TscMode};
use crate::hypervisor::costs::{CostMeter, Costs};
use crate::hypervisor::{CreateDomain, DomId, GuestKind, NoxsFlavour, Uuid, PAGE_SIZE};
use crate::image::KernelImage;
use crate::plane::{Device, DeviceKind, Guest, Ring};

/// Event channels a guest may open (xl's default `max_event_channels`).
const MAX_EVTCHN_PORT: u32 = 1023;
/// Grant frames and maptrack frames (xl's defaults for a guest).
const MAX_GRANT_FRAMES: u32 = 32;
const MAX_MAPTRACK_FRAMES: u32 = 1024;
/// Slack above maxmem that libxl also grants (LIBXL_MAXMEM_CONSTANT), for the special pages.
const MAXMEM_SLACK_KIB: u64 = 1024;

impl Toolstack {
    /// Creates a shell: domain, memory, event channels. Nothing here depends on the image.
    pub fn prepare(&self, flavor: &Flavor) -> Result<Shell> {
        self.prepare_tagged(flavor, Uuid::NIL)
    }

    /// [`prepare`](Self::prepare) with the domain handle set to `handle`, so that the shell can
    /// be recognised later (chaosd reclaims the shells of a daemon that crashed by it; `execute`
    /// replaces it with the guest's UUID).
    pub fn prepare_tagged(&self, flavor: &Flavor, handle: Uuid) -> Result<Shell> {
        let meter = CostMeter::start();
        // The plane must be there before a shell is spent on it.
        self.plane(flavor.control_plane)?.ready()?;
        let mut timings = Timings::default();
        let t = Instant::now();
        // Asking first costs one hypercall and turns a failure deep in populate_physmap into
        // an error that says what is short.
        let free = self
            .hv
            .physinfo()
            .map_err(hv_step("read host memory"))?
            .free_pages;
        if free < flavor.nr_pages() + flavor.paging_pool_bytes() / PAGE_SIZE as u64 {
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
        let filled = self.fill_shell(domid, flavor, &mut timings).and_then(
            |(p2m, console_evtchn, plane_evtchn)| {
                let warm = match &flavor.image {
                    Some(w) => Some(self.warm_up(domid, flavor, w, &p2m, &mut timings)?),
                    None => None,
                };
                Ok((p2m, console_evtchn, plane_evtchn, warm))
            },
        );
        match filled {
            Ok((p2m, console_evtchn, plane_evtchn, warm)) => Ok(Shell {
                domid,
                flavor: flavor.clone(),
                p2m,
                console_evtchn,
                plane_evtchn,
                timings,
                costs: meter.read(),
                warm,
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
        match flavor.kind {
            GuestKind::Pv => self
                .hv
                .set_address_size(domid, 64)
                .map_err(hv_step("set address size"))?,
            // Before populating: Xen builds the guest's p2m from this pool.
            GuestKind::Pvh => self
                .hv
                .set_paging_pool(domid, flavor.paging_pool_bytes())
                .map_err(hv_step("set the paging pool size"))?,
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
        let plane = self
            .hv
            .evtchn_alloc_unbound(domid, DomId::DOM0)
            .map_err(hv_step("control plane event channel"))?;
        timings.record("evtchn", t);
        Ok((p2m, console, plane))
    }

    /// Loads a warm flavor's image into the shell and builds what does not depend on the
    /// guest (PV: kernel, ramdisk, p2m, page tables, hypercall page, pinned L4).
    fn warm_up(
        &self,
        domid: DomId,
        flavor: &Flavor,
        w: &WarmImage,
        p2m: &[u64],
        timings: &mut Timings,
    ) -> Result<Warm> {
        let t = Instant::now();
        if flavor.kind != GuestKind::Pv {
            return Err(ToolstackError::Unsupported(
                "warm shells: PV guests only".into(),
            ));
        }
        let limit = flavor.memory_mib.saturating_mul(1024 * 1024);
        let image = self.images.load_within(&w.kernel, limit, GUEST_LIMIT)?;
        let ramdisk = match &w.ramdisk {
            Some(path) => Some(self.images.load_ramdisk_within(path, limit, GUEST_LIMIT)?),
            None => None,
        };
        let built = build::prebuild_pv(
            self.hv.as_ref(),
            &image,
            domid,
            p2m,
            ramdisk.as_ref().map(|r| r.as_slice()),
            w.ctrl_pages,
        )?;
        timings.record("prebuild", t);
        Ok(Warm {
            image,
            ramdisk,
            built,
        })
    }

    /// Destroys a shell nobody will execute.
    pub fn discard(&self, shell: Shell) -> Result<()> {
        let destroyed = self
            .hv
            .destroy_domain(shell.domid)
            .map_err(hv_step("destroy shell"));
        self.hv.checkpoint();
        destroyed
    }

    /// Turns a shell into a guest: load the image, build, publish devices, unpause. On failure
    /// the shell's domain is destroyed and everything written for it removed.
    pub fn execute(&self, shell: Shell, cfg: &DomainConfig, paused: bool) -> Result<Created> {
        let uuid = cfg.uuid.unwrap_or_else(random_uuid);
        self.execute_as(shell, cfg, paused, uuid, &|| true)
    }

    /// [`execute`](Self::execute) as the guest `uuid`; `wanted` is asked right before the
    /// guest is committed (its record written): `false` rolls the creation back (chaosd: the
    /// client that asked for it has gone).
    fn execute_as(
        &self,
        shell: Shell,
        cfg: &DomainConfig,
        paused: bool,
        uuid: Uuid,
        wanted: &dyn Fn() -> bool,
    ) -> Result<Created> {
        let meter = CostMeter::start();
        let needed = Flavor::of(cfg);
        if shell.flavor.plain() != needed {
            let err = ToolstackError::FlavorMismatch {
                domid: shell.domid,
                shell: Box::new(shell.flavor.clone()),
                wanted: Box::new(needed),
            };
            // The shell is untouched: give it back to its owner's accounting by destroying it,
            // since execute consumed it.
            self.discard(shell)?;
            return Err(err);
        }
        let domid = shell.domid;
        // If this process dies from here on, the next scan destroys the half-made guest.
        let pending = PendingCreation {
            uuid,
            name: cfg.name.clone(),
            pid: std::process::id(),
            domid: Some(domid),
        };
        if let Err(e) = self.state.save_pending(&pending) {
            self.discard(shell)?;
            return Err(e.into());
        }
        let mut timings = shell.timings.clone();
        let mut published = None;
        let result = self.execute_steps(
            &shell,
            cfg,
            paused,
            uuid,
            wanted,
            &mut timings,
            &mut published,
        );
        if result.is_err() {
            self.rollback(domid, cfg, published);
        }
        if let Err(e) = self.state.remove_pending(&uuid) {
            log::warn!("removing the record of the creation of {domid}: {e}");
        }
        self.hv.checkpoint();
        let mut costs = shell.costs.clone();
        costs.add(&meter.read());
        result.map(|()| Created {
            domid,
            name: cfg.name.clone(),
            paused: paused || cfg.paused,
            path: CreationPath::Direct,
            via: Via::Local,
            timings,
            costs,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn execute_steps(
        &self,
        shell: &Shell,
        cfg: &DomainConfig,
        paused: bool,
        uuid: Uuid,
        wanted: &dyn Fn() -> bool,
        timings: &mut Timings,
        published: &mut Option<Uuid>,
    ) -> Result<()> {
        let domid = shell.domid;
        check_supported(cfg)?;
        let plane = self.plane(cfg.control_plane)?;
        let t = Instant::now();
        let image = self.load_kernel(cfg)?;
        let ramdisk = match &cfg.ramdisk {
            Some(path) => Some(self.images.load_ramdisk_within(
                path,
                guest_bytes(cfg),
                GUEST_LIMIT,
            )?),
            None => None,
        };
        timings.record("load_image", t);

        // MACs are chosen now and kept in the record, so a restarted guest keeps its MACs.
        let config = with_macs(cfg)?;
        let noxs_devices = match cfg.control_plane {
            PlaneKind::Xenstore => Vec::new(),
            PlaneKind::Noxs => {
                check_noxs_kernel(&image)?;
                self.noxs_devices(shell, &config)?
            }
        };
        let hypervisor_page = cfg.control_plane == PlaneKind::Noxs
            && self.hv.noxs_flavour() == NoxsFlavour::Hypervisor;
        let store = match cfg.control_plane {
            PlaneKind::Xenstore => StorePage::Xenstore {
                evtchn: shell.plane_evtchn,
                backend: DomId::DOM0,
            },
            PlaneKind::Noxs => StorePage::Noxs {
                devices: &noxs_devices,
                hypervisor_page,
            },
        };
        if cfg.tsc_mode != TscMode::Default {
            // Xen starts every domain in the default mode; libxl sets it before the build.
            self.hv
                .set_tsc_mode(domid, cfg.tsc_mode)
                .map_err(hv_step("set the TSC mode"))?;
        }
        let t = Instant::now();
        let params = BuildParams {
            domid,
            p2m: &shell.p2m,
            cmdline: &cfg.cmdline,
            ramdisk: ramdisk.as_ref().map(|r| r.as_slice()),
            vcpus: cfg.vcpus,
            console_evtchn: shell.console_evtchn,
            console_backend: DomId::DOM0,
            store,
        };
        let built = match (cfg.kind, &shell.warm) {
            (GuestKind::Pv, Some(warm)) => {
                check_warm(shell, warm, cfg, &image, ramdisk.as_ref())?;
                Built::from(build::finish_pv(self.hv.as_ref(), &warm.built, &params)?)
            }
            (GuestKind::Pv, None) => {
                Built::from(build::build_pv(self.hv.as_ref(), &image, &params)?)
            }
            (GuestKind::Pvh, _) => {
                Built::from(build::build_pvh(self.hv.as_ref(), &image, &params)?)
            }
        };
        timings.record("build", t);
        if hypervisor_page {
            // Xen owns the device page: list the devices in it.
            let t = Instant::now();
            for (d, pfn) in noxs_devices.iter().zip(&built.ctrl_pfns) {
                let ctrl = u32::try_from(*pfn).map_err(|_| {
                    ToolstackError::Unsupported(format!("control page pfn {pfn:#x} above 2^32"))
                })?;
                let entry =
                    noxs::DevPageEntry::guest_owned(d.ty, d.id, d.backend.0, ctrl, d.evtchn);
                self.hv
                    .devctl_add(domid, &entry)
                    .map_err(hv_step("listing a device in Xen's device page"))?;
            }
            timings.record("devctl", t);
        }
        let devices: Vec<Device> = noxs_devices
            .iter()
            .zip(&built.ctrl_frames)
            .map(|(d, mfn)| Device {
                kind: match d.ty {
                    noxs::DevType::Vif => DeviceKind::Vif,
                    _ => DeviceKind::Sysctl,
                },
                id: d.id,
                frame: *mfn,
                evtchn: d.evtchn,
                gref: d.gref,
            })
            .collect();

        {
            // Check and claim under the lock, so two creations cannot take one name. The
            // domain carries its handle before the name is claimed: a name counts only for
            // the domain with the handle in its entry.
            let _lock = self.state.lock()?;
            self.check_name_free(&cfg.name)?;
            self.hv
                .set_domain_handle(domid, uuid)
                .map_err(hv_step("set domain handle"))?;
            self.state.claim_name(&cfg.name, domid, uuid)?;
        }
        let console = Ring {
            frame: built.console_frame,
            evtchn: shell.console_evtchn,
        };
        let store = Ring {
            // No page of ours in the store slot when Xen owns the device page.
            frame: if hypervisor_page {
                0
            } else {
                built.store_frame
            },
            evtchn: match cfg.control_plane {
                PlaneKind::Xenstore => shell.plane_evtchn,
                PlaneKind::Noxs => 0,
            },
        };
        *published = Some(uuid);
        plane.publish(
            &Guest {
                domid,
                uuid,
                config: &config,
                console,
                store,
                devices: &devices,
            },
            timings,
        )?;

        // The commit point: from the record on, the guest exists for everyone.
        if !wanted() {
            return Err(ToolstackError::Abandoned);
        }
        let t = Instant::now();
        self.state.save(&DomainRecord {
            domid,
            name: cfg.name.clone(),
            uuid,
            config,
            console,
            store,
            devices,
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

    /// Undoes a failed execute: record, the plane's entries, domain (with its memory and event
    /// channels). Errors here are logged: the original error is the one to report.
    fn rollback(&self, domid: DomId, cfg: &DomainConfig, published: Option<Uuid>) {
        if let Err(e) = self.state.remove(domid) {
            log::error!("rollback: removing the record of domain {domid}: {e}");
        }
        if let Err(e) = self.state.release_name(&cfg.name, domid) {
            log::error!(
                "rollback: freeing the name {:?} of domain {domid}: {e}",
                cfg.name
            );
        }
        if let (Some(uuid), Ok(plane)) = (published, self.plane(cfg.control_plane)) {
            if let Err(e) = plane.unpublish(domid, Some(uuid)) {
                log::error!("rollback: removing the devices of domain {domid}: {e}");
            }
        }
        if let Err(e) = self.hv.destroy_domain(domid) {
            log::error!("rollback: destroying domain {domid}: {e}");
        }
    }

    /// Creates a guest by prepare + execute.
    pub fn create(&self, cfg: &DomainConfig, paused: bool) -> Result<Created> {
        self.create_if(cfg, paused, &|| true)
    }

    /// [`create`](Self::create), rolled back if `wanted` says no right before the guest is
    /// committed (chaosd asks whether its client is still there).
    pub fn create_if(
        &self,
        cfg: &DomainConfig,
        paused: bool,
        wanted: &dyn Fn() -> bool,
    ) -> Result<Created> {
        // A creation that a killed process left half-made may hold this name.
        self.clean_up_abandoned_creations()?;
        // Refuse what cannot work before making anything, so mistakes cost nothing.
        self.check_creatable(cfg)?;
        self.check_name_free(&cfg.name)?;
        // The domain carries the guest's handle from the start and is recorded as pending
        // before it exists, so a process killed at any point leaves nothing unrecorded.
        let uuid = cfg.uuid.unwrap_or_else(random_uuid);
        self.state.save_pending(&PendingCreation {
            uuid,
            name: cfg.name.clone(),
            pid: std::process::id(),
            domid: None,
        })?;
        let shell = match self.prepare_tagged(&Flavor::of(cfg), uuid) {
            Ok(shell) => shell,
            Err(e) => {
                if let Err(r) = self.state.remove_pending(&uuid) {
                    log::warn!("removing the record of a failed creation: {r}");
                }
                return Err(e);
            }
        };
        self.execute_as(shell, cfg, paused, uuid, wanted)
    }

    /// Executes a shell that was prepared ahead of time (path "pool"): only this creation's
    /// own work is timed.
    pub fn execute_pooled(
        &self,
        shell: Shell,
        cfg: &DomainConfig,
        paused: bool,
    ) -> Result<Created> {
        self.execute_pooled_if(shell, cfg, paused, &|| true)
    }

    /// [`execute_pooled`](Self::execute_pooled) with the check of [`create_if`](Self::create_if).
    pub fn execute_pooled_if(
        &self,
        shell: Shell,
        cfg: &DomainConfig,
        paused: bool,
        wanted: &dyn Fn() -> bool,
    ) -> Result<Created> {
        // The shell was made ahead of time: its preparation is not this creation's cost.
        let shell = Shell {
            timings: Timings::default(),
            costs: Costs::default(),
            ..shell
        };
        let uuid = cfg.uuid.unwrap_or_else(random_uuid);
        let mut created = self.execute_as(shell, cfg, paused, uuid, wanted)?;
        created.path = CreationPath::Pool;
        Ok(created)
    }

    /// Refuses, before a shell is spent on it, a config that cannot be created: unsupported
    /// features, a kernel or ramdisk that cannot be read or parsed. The kernel lands in the
    /// image cache, so `execute` does not read it again.
    pub fn check_creatable(&self, cfg: &DomainConfig) -> Result<()> {
        check_supported(cfg)?;
        self.plane(cfg.control_plane)?.ready()?;
        let image = self.load_kernel(cfg)?;
        if cfg.control_plane == PlaneKind::Noxs {
            check_noxs_kernel(&image)?;
        }
        if cfg.kind == GuestKind::Pvh && image.phys32_entry().is_none() {
            return Err(ToolstackError::Unsupported(format!(
                "{}: type = \"pvh\" needs a kernel with a PVH entry (the XEN_ELFNOTE_PHYS32_ENTRY note); this one boots as PV only",
                image.name
            )));
        }
        if let Some(path) = &cfg.ramdisk {
            // Its type and size now (reading it waits for execute, where it is cached).
            let size = crate::files::regular_size(path).map_err(|e| {
                ToolstackError::Unsupported(format!("ramdisk {}: {e}", path.display()))
            })?;
            if size > guest_bytes(cfg).min(crate::image::MAX_IMAGE) {
                // The reader's own words for the limit.
                self.images
                    .load_ramdisk_within(path, guest_bytes(cfg), GUEST_LIMIT)?;
            }
        }
        Ok(())
    }

    /// The guest's kernel: a regular file no larger than the guest's memory.
    fn load_kernel(&self, cfg: &DomainConfig) -> Result<std::sync::Arc<KernelImage>> {
        Ok(self
            .images
            .load_within(&cfg.kernel, guest_bytes(cfg), GUEST_LIMIT)?)
    }

    /// Names are unique among chaos's guests (checked through the name index, so the check
    /// costs the same with ten guests or ten thousand). Guests xl created are not scanned here.
    pub(super) fn check_name_free(&self, name: &str) -> Result<()> {
        if self.find_chaos_guest(name)?.is_some() {
            return Err(ToolstackError::NameInUse(name.to_string()));
        }
        Ok(())
    }
}

/// A warm shell serves only the guest whose image it holds: the same files (paths, and the
/// image cache's entries for them, which change when a file does) and as many NoXS devices.
fn check_warm(
    shell: &Shell,
    warm: &Warm,
    cfg: &DomainConfig,
    image: &Arc<KernelImage>,
    ramdisk: Option<&Arc<Vec<u8>>>,
) -> Result<()> {
    let stale = |why: String| {
        Err(ToolstackError::WarmShellStale {
            domid: shell.domid,
            why,
        })
    };
    let wanted = Flavor::warm_of(cfg).and_then(|f| f.image);
    if shell.flavor.image != wanted {
        return stale(format!(
            "it was made for {:?}, the guest needs {:?}",
            shell.flavor.image, wanted
        ));
    }
    if !Arc::ptr_eq(&warm.image, image) {
        return stale(format!(
            "{} changed since the shell was made",
            cfg.kernel.display()
        ));
    }
    let same_ramdisk = match (&warm.ramdisk, ramdisk) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        _ => false,
    };
    if !same_ramdisk {
        return stale("the ramdisk changed since the shell was made".into());
    }
    Ok(())
}

/// What limits a guest's kernel and ramdisk files, in messages.
const GUEST_LIMIT: &str = "the guest's memory";

/// A guest's memory in bytes: no kernel or ramdisk file larger than it can be loaded into it.
fn guest_bytes(cfg: &DomainConfig) -> u64 {
    cfg.memory_mib.saturating_mul(1024 * 1024)
}

/// What the rest of a creation needs from either builder. Frames are named as Xen's
/// interfaces take them for the guest: machine frames for PV, guest frames for PVH.
struct Built {
    console_frame: u64,
    /// The Xenstore ring, or the NoXS device page.
    store_frame: u64,
    /// The NoXS control pages, in device order: their pfns (what the device page names) and
    /// frames.
    ctrl_pfns: Vec<u64>,
    ctrl_frames: Vec<u64>,
}

impl From<BuiltGuest> for Built {
    fn from(b: BuiltGuest) -> Built {
        Built {
            console_frame: b.console_mfn,
            store_frame: b.store_mfn,
            ctrl_pfns: b.ctrl_pfns,
            ctrl_frames: b.ctrl_mfns,
        }
    }
}

impl From<BuiltPvhGuest> for Built {
    fn from(b: BuiltPvhGuest) -> Built {
        let ctrl: Vec<u64> = (b.layout.ctrl.start..b.layout.ctrl.end()).collect();
        Built {
            console_frame: b.console_pfn,
            store_frame: b.store_pfn,
            ctrl_pfns: ctrl.clone(),
            ctrl_frames: ctrl,
        }
    }
}

/// A NoXS guest must say it implements the frontend (noxs/ABI.md section 1): a kernel that
/// does not would wait for a Xenstore that never answers.
fn check_noxs_kernel(image: &KernelImage) -> Result<()> {
    match image.notes.chaos_noxs {
        Some(v) if v >= noxs::ABI_VERSION => Ok(()),
        Some(v) => Err(ToolstackError::Unsupported(format!(
            "{}: implements NoXS ABI version {v}; chaos needs {} (chaos_control_plane = \"noxs\")",
            image.name,
            noxs::ABI_VERSION
        ))),
        None => Err(ToolstackError::Unsupported(format!(
            "{}: the kernel has no chaos NoXS note, so it does not implement NoXS; use chaos_control_plane = \"xenstore\"",
            image.name
        ))),
    }
}

impl Toolstack {
    /// A NoXS guest's devices (noxs/ABI.md sections 4.1, 4.2): the sysctl device, on the
    /// shell's plane channel, then one vif per `vif` entry, each with a channel of its own.
    fn noxs_devices(&self, shell: &Shell, cfg: &DomainConfig) -> Result<Vec<NoxsDevice>> {
        let mut ctrl = vec![0u8; std::mem::size_of::<noxs::SysctlCtrl>()];
        noxs::SysctlCtrl {
            hdr: noxs::CtrlHdr {
                devid: 0,
                // The toolstack is the sysctl backend, there from the start.
                be_state: noxs::state::CONNECTED,
                ..noxs::CtrlHdr::default()
            },
            ..noxs::SysctlCtrl::default()
        }
        .write_to(&mut ctrl);
        let mut devices = vec![NoxsDevice {
            ty: noxs::DevType::Sysctl,
            id: 0,
            backend: DomId::DOM0,
            evtchn: shell.plane_evtchn,
            // The toolstack maps it through privcmd.
            gref: None,
            ctrl,
        }];
        for (id, vif) in cfg.vifs.iter().enumerate() {
            let evtchn = self
                .hv
                .evtchn_alloc_unbound(shell.domid, DomId::DOM0)
                .map_err(hv_step("vif event channel"))?;
            let (ipv4, ipv4_prefix) = first_ipv4(vif.ip.as_deref());
            let mut ctrl = vec![0u8; std::mem::size_of::<noxs::VifCtrl>()];
            noxs::VifCtrl {
                hdr: noxs::CtrlHdr {
                    devid: id as i32,
                    // The backend sets InitWait once it serves the vif.
                    be_state: noxs::state::INITIALISING,
                    ..noxs::CtrlHdr::default()
                },
                mac: vif.mac.map_or([0; 6], |m| m.0),
                mtu: noxs::VIF_MTU,
                ipv4,
                ipv4_prefix,
                ..noxs::VifCtrl::default()
            }
            .write_to(&mut ctrl);
            devices.push(NoxsDevice {
                ty: noxs::DevType::Vif,
                id: id as u32,
                backend: DomId::DOM0,
                evtchn,
                // xendevd maps it with gntdev (checked against VIF_MAX in check_supported).
                gref: noxs::vif_ctrl_gref(id as u32),
                ctrl,
            });
        }
        Ok(devices)
    }
}

/// The first IPv4 address of an `ip=` list and its prefix length (0 when none is given).
fn first_ipv4(ip: Option<&str>) -> ([u8; 4], u8) {
    ip.into_iter()
        .flat_map(str::split_whitespace)
        .find_map(|part| {
            let (addr, prefix) = part.split_once('/').unwrap_or((part, ""));
            let a: std::net::Ipv4Addr = addr.parse().ok()?;
            Some((a.octets(), prefix.parse().unwrap_or(0)))
        })
        .unwrap_or(([0; 4], 0))
}

/// What chaos cannot build yet, refused before anything is made.
fn check_supported(cfg: &DomainConfig) -> Result<()> {
    if cfg.control_plane == PlaneKind::Noxs && !cfg.disks.is_empty() {
        return Err(ToolstackError::Unsupported(
            "disk: NoXS guests have no block devices yet (use chaos_control_plane = \"xenstore\")"
                .into(),
        ));
    }
    if cfg.control_plane == PlaneKind::Noxs && cfg.vifs.len() > noxs::VIF_MAX {
        return Err(ToolstackError::Unsupported(format!(
            "{} vifs: a NoXS guest has at most {} (their control pages are granted under Xen's reserved grant references)",
            cfg.vifs.len(),
            noxs::VIF_MAX
        )));
    }
    for (i, disk) in cfg.disks.iter().enumerate() {
        if let Some(backend) = disk.backend.as_deref() {
            if !matches!(backend, "0" | "Domain-0") {
                return Err(ToolstackError::Unsupported(format!(
                    "disk {i}: backend={backend}: driver domains are not supported yet (the backend is dom0)"
                )));
            }
        }
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
    if cfg.tsc_mode == TscMode::NativeParavirt {
        return Err(ToolstackError::Unsupported(
            "tsc_mode = \"native_paravirt\": removed from Xen (4.13), as xl says".into(),
        ));
    }
    Ok(())
}

/// The config with a random Xen MAC for every vif that names none.
fn with_macs(cfg: &DomainConfig) -> Result<DomainConfig> {
    if cfg.vifs.iter().all(|v| v.mac.is_some()) {
        return Ok(cfg.clone());
    }
    Ok(cfg.with(|spec: &mut GuestSpec| {
        for vif in &mut spec.vifs {
            vif.mac.get_or_insert_with(random_mac);
        }
    })?)
}
