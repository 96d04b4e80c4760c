//! Shells: a domain with its memory and event channels, made before the image is known.

use std::time::Instant;

use super::checks::GUEST_LIMIT;
use super::devices::sysctl_device;
use crate::build::{self, BuildParams, StorePage};
use crate::config::PlaneKind;
use crate::hypervisor::costs::CostMeter;
use crate::hypervisor::{CreateDomain, DomId, GuestKind, NoxsFlavour, Uuid, PAGE_SIZE};
use crate::plane::{ControlPlane, Ring};
use crate::toolstack::error::hv_step;
use crate::toolstack::types::Warm;
use crate::toolstack::{
    FinishAhead, Flavor, Result, Shell, Timings, Toolstack, ToolstackError, WarmImage,
};

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
    /// be recognised later (chaosd reclaims the shells of a daemon that crashed by it; a guest
    /// made from the shell by `execute_pooled` keeps it as its UUID, unless its config names one).
    pub fn prepare_tagged(&self, flavor: &Flavor, handle: Uuid) -> Result<Shell> {
        self.prepare_ahead(flavor, handle, None)
    }

    /// [`prepare_tagged`](Self::prepare_tagged); a warm shell is also finished ahead for a
    /// guest with `ahead`'s command line and vcpus (see [`FinishAhead`]).
    pub fn prepare_ahead(
        &self,
        flavor: &Flavor,
        handle: Uuid,
        ahead: Option<&FinishAhead>,
    ) -> Result<Shell> {
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
                    Some(w) => {
                        let mut warm = self.warm_up(domid, flavor, w, &p2m, &mut timings)?;
                        if let Some(ahead) = ahead {
                            let t = Instant::now();
                            self.finish_ahead(
                                &mut warm,
                                flavor,
                                ahead,
                                &p2m,
                                console_evtchn,
                                plane_evtchn,
                            )?;
                            timings.record("finish_ahead", t);
                        }
                        Some(warm)
                    }
                    None => None,
                };
                Ok((p2m, console_evtchn, plane_evtchn, warm))
            },
        );
        match filled {
            Ok((p2m, console_evtchn, plane_evtchn, warm)) => Ok(Shell {
                domid,
                handle,
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
            attached: false,
        })
    }

    /// Stops xendevd serving a shell's console and removes its record (a warm shell finished
    /// ahead on NoXS has them; for any other shell there is nothing to do).
    pub(crate) fn forget_shell_devices(&self, domid: DomId) -> Result<()> {
        Ok(ControlPlane::unpublish(&self.noxs, domid, None)?)
    }

    /// Writes a warm shell's guest half for a guest of `ahead` (execute then writes nothing of
    /// it for such a guest): what execute would write, on the shell's own channels.
    fn finish_ahead(
        &self,
        warm: &mut Warm,
        flavor: &Flavor,
        ahead: &FinishAhead,
        p2m: &[u64],
        console_evtchn: u32,
        plane_evtchn: u32,
    ) -> Result<()> {
        let sysctl = [sysctl_device(plane_evtchn)];
        let store = match flavor.control_plane {
            PlaneKind::Xenstore => StorePage::Xenstore {
                evtchn: plane_evtchn,
                backend: DomId::DOM0,
            },
            PlaneKind::Noxs => StorePage::Noxs {
                devices: &sysctl,
                hypervisor_page: self.hv.noxs_flavour() == NoxsFlavour::Hypervisor,
            },
        };
        if store.ctrl_pages() != warm.built.ctrl_pages() {
            // Room for vifs: their guests are finished at execute.
            return Ok(());
        }
        let params = BuildParams {
            domid: warm.built.domid,
            p2m,
            cmdline: &ahead.cmdline,
            ramdisk: warm.ramdisk.as_ref().map(|r| r.as_slice()),
            vcpus: ahead.vcpus,
            console_evtchn,
            console_backend: DomId::DOM0,
            store,
        };
        build::finish_ahead(self.hv.as_ref(), &mut warm.built, &params)?;
        if flavor.control_plane == PlaneKind::Noxs {
            if let Some(built) = warm.built.finished() {
                let console = Ring {
                    frame: built.console_mfn,
                    evtchn: console_evtchn,
                };
                self.noxs.attach_unnamed(warm.built.domid, console)?;
                warm.attached = true;
            }
        }
        Ok(())
    }

    /// Destroys a shell nobody will execute.
    pub fn discard(&self, shell: Shell) -> Result<()> {
        if shell.warm.as_ref().is_some_and(|w| w.attached) {
            if let Err(e) = self.forget_shell_devices(shell.domid) {
                log::error!("shell {}: releasing its console: {e}", shell.domid);
            }
        }
        let destroyed = self
            .hv
            .destroy_domain(shell.domid)
            .map_err(hv_step("destroy shell"));
        self.hv.checkpoint();
        destroyed
    }
}
