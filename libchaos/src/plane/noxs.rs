//! The NoXS control plane (noxs/ABI.md): no Xenstore at all. The builder writes the guest's
//! device page and control pages into its memory; this plane makes them known to the dom0
//! backends (xendevd serves the console, and the vifs), and sends power requests through the
//! sysctl control page and its event channel.
//!
//! Who holds the dom0 ends: xendevd, resident, for the console ring (and vif rings); it learns
//! about a guest from the guest's record in `<run dir>/noxs/` and an `attach` on its socket,
//! and reads the records back when it restarts. The sysctl channel needs no resident process:
//! `chaos shutdown` binds the guest's port, notifies it and unbinds again.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use noxs::{state, SysctlCtrl};
use xendevd_api::{ConsoleRing, NoxsGuest, NoxsVif, RecordDir};

use super::{ControlPlane, DeviceKind, Guest, PlaneError, Result};
use crate::build::GNTTAB_RESERVED_CONSOLE;
use crate::config::PlaneKind;
use crate::hypervisor::{DomId, Hypervisor, Uuid};
use crate::toolstack::{ShutdownKind, Timings};

/// The dom0 side of the NoXS backends: told when a guest appears and goes.
pub trait NoxsBackend: Send + Sync + fmt::Debug {
    /// Where its socket is (for `chaos console`).
    fn socket(&self) -> &std::path::Path;
    /// Serve the guest whose record was just written.
    fn attach(&self, domid: DomId) -> std::result::Result<(), String>;
    /// Stop serving it.
    fn detach(&self, domid: DomId) -> std::result::Result<(), String>;
}

/// xendevd, over its socket.
#[derive(Debug, Clone)]
pub struct Xendevd {
    pub socket: PathBuf,
}

impl NoxsBackend for Xendevd {
    fn socket(&self) -> &std::path::Path {
        &self.socket
    }

    fn attach(&self, domid: DomId) -> std::result::Result<(), String> {
        xendevd_api::Client::connect(&self.socket)
            .and_then(|mut c| c.attach(domid))
            .map_err(|e| e.to_string())
    }

    fn detach(&self, domid: DomId) -> std::result::Result<(), String> {
        match xendevd_api::Client::connect(&self.socket) {
            Ok(mut c) => c.detach(domid).map_err(|e| e.to_string()),
            // Not running: nothing is served, nothing to take away (a restarted xendevd does
            // not find the removed record).
            Err(xendevd_api::ClientError::NotRunning { .. }) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// The NoXS control plane.
pub struct NoxsPlane {
    hv: Arc<dyn Hypervisor>,
    records: PathBuf,
    backend: Box<dyn NoxsBackend>,
}

impl fmt::Debug for NoxsPlane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoxsPlane")
            .field("records", &self.records)
            .field("backend", &self.backend)
            .finish()
    }
}

impl NoxsPlane {
    /// The plane over `hv`, keeping the backends' records in `records`.
    pub fn new(hv: Arc<dyn Hypervisor>, records: PathBuf, backend: Box<dyn NoxsBackend>) -> Self {
        NoxsPlane {
            hv,
            records,
            backend,
        }
    }

    /// The backend's socket.
    pub fn socket(&self) -> &std::path::Path {
        self.backend.socket()
    }

    fn records(&self) -> Result<RecordDir> {
        RecordDir::open(&self.records).map_err(|e| PlaneError::Backend(e.to_string()))
    }

    /// What the backends need to serve the guest.
    fn backend_record(g: &Guest<'_>) -> NoxsGuest {
        let vifs = g
            .devices
            .iter()
            .filter(|d| d.kind == DeviceKind::Vif)
            .filter_map(|d| {
                let vif = g.config.vifs.get(d.id as usize)?;
                Some(NoxsVif {
                    id: d.id,
                    // The toolstack grants every vif's control page.
                    ctrl_gref: d.gref?,
                    ctrl_frame: d.frame,
                    evtchn: d.evtchn,
                    // The toolstack chose every MAC before publishing.
                    mac: vif.mac?,
                    bridge: vif.bridge.clone(),
                    ip: vif.ip.clone(),
                })
            })
            .collect();
        NoxsGuest {
            domid: g.domid,
            name: g.config.name.clone(),
            console: ConsoleRing {
                gref: GNTTAB_RESERVED_CONSOLE,
                frame: g.console.frame,
                evtchn: g.console.evtchn,
            },
            vifs,
        }
    }
}

impl ControlPlane for NoxsPlane {
    fn kind(&self) -> PlaneKind {
        PlaneKind::Noxs
    }

    fn publish(&self, g: &Guest<'_>, timings: &mut Timings) -> Result<()> {
        let t = Instant::now();
        // The record first: a backend that restarts from here on finds the guest.
        self.records()?
            .save(&Self::backend_record(g))
            .map_err(|e| PlaneError::Backend(e.to_string()))?;
        self.backend.attach(g.domid).map_err(PlaneError::Backend)?;
        timings.record("devices", t);
        Ok(())
    }

    fn unpublish(&self, domid: DomId, _uuid: Option<Uuid>) -> Result<()> {
        let detached = self.backend.detach(domid);
        self.records()?
            .remove(domid)
            .map_err(|e| PlaneError::Backend(e.to_string()))?;
        detached.map_err(PlaneError::Backend)
    }

    fn request_shutdown(
        &self,
        domid: DomId,
        guest: Option<&Guest<'_>>,
        kind: ShutdownKind,
    ) -> Result<()> {
        let sysctl = guest
            .and_then(|g| g.devices.iter().find(|d| d.kind == DeviceKind::Sysctl))
            .ok_or_else(|| {
                PlaneError::Refused(format!("domain {domid} has no NoXS sysctl device"))
            })?;
        let bit = match kind {
            ShutdownKind::Poweroff => noxs::sysctl::POWEROFF,
            ShutdownKind::Reboot => noxs::sysctl::REBOOT,
        };
        {
            let mut page = self
                .hv
                .map_foreign(domid, &[sysctl.frame])
                .map_err(|e| PlaneError::Backend(format!("mapping the sysctl page: {e}")))?;
            let bytes = page.bytes_mut();
            // The guest writes this page: read it as untrusted, write only our own fields.
            let ctrl = SysctlCtrl::read_from(bytes);
            if ctrl.hdr.fe_state != state::CONNECTED {
                return Err(PlaneError::Refused(format!(
                    "domain {domid} does not listen on its NoXS sysctl device (fe_state {})",
                    ctrl.hdr.fe_state
                )));
            }
            if ctrl.fe_features & bit == 0 {
                return Err(PlaneError::Refused(format!(
                    "domain {domid} does not accept {} requests (features {:#x})",
                    kind.word(),
                    ctrl.fe_features
                )));
            }
            SysctlCtrl::post_request(bytes, bit);
        }
        self.hv
            .notify_guest(domid, sysctl.evtchn)
            .map_err(|e| PlaneError::Backend(format!("notifying the sysctl channel: {e}")))
    }
}
