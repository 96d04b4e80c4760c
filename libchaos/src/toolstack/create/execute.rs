//! Executing a shell: load the image, build, publish the devices, record, unpause; roll back
//! on failure.

use std::sync::Arc;

use super::checks::{check_noxs_kernel, check_supported, guest_bytes, GUEST_LIMIT};
use super::CrashRecord;
use crate::build::{self, BuildParams, BuiltGuest, BuiltPvhGuest, StorePage};
use crate::config::{DomainConfig, GuestSpec, PlaneKind, TscMode};
use crate::hypervisor::costs::CostMeter;
use crate::hypervisor::{DomId, GuestKind, NoxsFlavour, Uuid};
use crate::image::KernelImage;
use crate::plane::{Device, DeviceKind, Guest, Ring};
use crate::toolstack::error::hv_step;
use crate::toolstack::random::{now_ms, random_mac, random_uuid};
use crate::toolstack::types::Warm;
use crate::toolstack::{
    Created, CreationPath, DomainRecord, Flavor, PendingCreation, Result, Shell, Timings,
    Toolstack, ToolstackError, Via,
};

impl Toolstack {
    /// Turns a shell into a guest: load the image, build, publish devices, unpause. On failure
    /// the shell's domain is destroyed and everything written for it removed.
    pub fn execute(&self, shell: Shell, cfg: &DomainConfig, paused: bool) -> Result<Created> {
        let uuid = cfg.uuid.unwrap_or_else(random_uuid);
        self.execute_as(shell, cfg, paused, uuid, CrashRecord::Write, &|| true)
    }

    /// [`execute`](Self::execute) as the guest `uuid`; `wanted` is asked right before the
    /// guest is committed (its record written): `false` rolls the creation back (chaosd: the
    /// client that asked for it has gone).
    pub(super) fn execute_as(
        &self,
        shell: Shell,
        cfg: &DomainConfig,
        paused: bool,
        uuid: Uuid,
        record: CrashRecord,
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
        // The phases from here on are laps (one clock read each).
        let mut timings = shell.timings.clone();
        timings.start_laps();
        if record == CrashRecord::Write {
            // If this process dies from here on, the next scan destroys the half-made guest.
            let pending = PendingCreation {
                uuid,
                name: cfg.name.clone(),
                pid: crate::toolstack::state::own_pid(),
                domid: Some(domid),
            };
            if let Err(e) = self.state.save_pending(&pending) {
                self.discard(shell)?;
                return Err(e.into());
            }
        }
        let mut pending_time = timings.lap_time();
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
        if record != CrashRecord::Shell {
            if let Err(e) = self.state.remove_pending(&uuid) {
                log::warn!("removing the record of the creation of {domid}: {e}");
            }
            pending_time += timings.lap_time();
            // The crash-safety record of the creation in progress, written and removed.
            timings.push("pending", pending_time);
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
        // A warm shell's console xendevd serves already: a failure from here on detaches it.
        let mut attached = shell.warm.as_ref().is_some_and(|w| w.attached);
        if attached {
            *published = Some(uuid);
        }
        check_supported(cfg)?;
        let plane = self.plane(cfg.control_plane)?;
        let image = self.load_kernel(cfg)?;
        let ramdisk = match &cfg.ramdisk {
            Some(path) => Some(self.images.load_ramdisk_within(
                path,
                guest_bytes(cfg),
                GUEST_LIMIT,
            )?),
            None => None,
        };
        timings.lap("load_image");

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
                if attached && !warm.built.finished_for(&params) {
                    // Finished ahead for another guest (another command line): its console
                    // page and grant are written again, so xendevd lets go of them first.
                    self.forget_shell_devices(domid)?;
                    attached = false;
                }
                Built::from(build::finish_pv(self.hv.as_ref(), &warm.built, &params)?)
            }
            (GuestKind::Pv, None) => {
                Built::from(build::build_pv(self.hv.as_ref(), &image, &params)?)
            }
            (GuestKind::Pvh, _) => {
                Built::from(build::build_pvh(self.hv.as_ref(), &image, &params)?)
            }
        };
        timings.lap("build");
        if hypervisor_page {
            // Xen owns the device page: list the devices in it.
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
            timings.lap("devctl");
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
            // Check and claim under the lock, in one read of the name's index slots, so two
            // creations cannot take one name. The domain carries its handle before the name
            // is claimed: a name counts only for the domain with the handle in its entry.
            let _lock = self.state.lock()?;
            if shell.handle != uuid {
                self.hv
                    .set_domain_handle(domid, uuid)
                    .map_err(hv_step("set domain handle"))?;
            }
            let claimed = self
                .state
                .claim_name_unless_held(&cfg.name, domid, uuid, |held| {
                    self.carries(held.domid, held.uuid)
                })?;
            if !claimed {
                return Err(ToolstackError::NameInUse(cfg.name.clone()));
            }
            timings.lap("name");
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
        // A warm shell's console is served already and xendevd reads the guest's name from the
        // record below: nothing to publish.
        if !attached {
            let guest = Guest {
                domid,
                uuid,
                config: &config,
                console,
                store,
                devices: &devices,
            };
            plane.publish(&guest, timings)?;
        }

        // The commit point: from the record on, the guest exists for everyone.
        if !wanted() {
            return Err(ToolstackError::Abandoned);
        }
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
        timings.lap("record");

        if !(paused || cfg.paused) {
            self.hv.unpause_built(domid).map_err(hv_step("unpause"))?;
            timings.lap("unpause");
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
