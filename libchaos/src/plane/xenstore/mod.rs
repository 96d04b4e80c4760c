//! The Xenstore control plane: the minimal entries a PV guest, xenconsoled and `xl list` need,
//! and the front/back directories of its vifs and vbds, written in ONE transaction, then the
//! domain introduced to xenstored.
//!
//! What each device's two directories hold is laid out in `device_nodes`.

mod device_nodes;

use std::sync::Arc;

use super::{ControlPlane, Guest, PlaneError, Result};
use crate::config::PlaneKind;
use crate::hypervisor::{DomId, GuestKind, Uuid};
use crate::toolstack::{ShutdownKind, Timings};
use crate::xenstore::{Access, Perm, TxId, TxOutcome, Xenstore, XenstoreError, XsOp};
use xen_types::Mac;

use device_nodes::DeviceNodes;

/// Transactions lost to concurrent writers are retried this many times before giving up.
const MAX_TX_ATTEMPTS: u32 = 16;

/// Where relative `script=` names point, as libxl resolves them.
pub const XEN_SCRIPT_DIR: &str = "/etc/xen/scripts";
/// The script libxl records when a vif names none.
pub const DEFAULT_VIF_SCRIPT: &str = "vif-bridge";
/// The script libxl records when a disk names none.
pub const DEFAULT_VBD_SCRIPT: &str = crate::config::disk::DEFAULT_SCRIPT;
/// The block protocol of a 64-bit PV guest, recorded for old frontends as libxl does (new
/// ones write it themselves).
const PV_BLOCK_PROTOCOL: &str = "x86_64-abi";
/// XenbusStateInitialising: where both ends of a new device start.
const XENBUS_STATE_INITIALISING: &str = "1";
/// Linux netfront's default MTU, recorded read-only for the guest as libxl does.
const VIF_MTU: &str = "1500";

/// One network interface as it is published: backend in dom0 (Linux netback), frontend in
/// the guest (netfront). The backend's `hotplug-status` is left empty: netback waits until
/// xendevd (or a hotplug script) writes `connected` before it connects to the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VifEntry {
    pub devid: u32,
    pub mac: Mac,
    pub bridge: String,
    pub ip: Option<String>,
    /// Recorded for tools that read it (netback requires the key); chaos runs no script.
    pub script: String,
}

/// One virtual block device as it is published: backend in dom0 (Linux blkback), frontend
/// in the guest (blkfront). blkback waits for `physical-device` ("major:minor" in hex), which
/// xendevd (or a hotplug script) writes once the device exists: the target itself for a block
/// device, a loop device over it for a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VbdEntry {
    /// The disk's number (libxl's from the vdev): the directories' name and `virtual-device`.
    pub devid: u32,
    /// The vdev as the config wrote it (`dev`).
    pub vdev: String,
    /// The file or block device (`params`).
    pub params: String,
    pub readonly: bool,
    /// Recorded for tools that read it; chaos runs no script.
    pub script: String,
    pub discard: bool,
    pub direct_io_safe: bool,
    pub trusted: bool,
    /// The frontend's `protocol`, written for PV guests as libxl does.
    pub protocol: Option<&'static str>,
}

/// What the Xenstore entries of a new guest say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestEntries<'a> {
    pub domid: DomId,
    pub name: &'a str,
    pub uuid: &'a str,
    pub target_kib: u64,
    pub max_kib: u64,
    pub vcpus: u32,
    pub console_mfn: u64,
    pub console_evtchn: u32,
    pub store_mfn: u64,
    pub store_evtchn: u32,
    pub vifs: &'a [VifEntry],
    pub vbds: &'a [VbdEntry],
}

/// `/local/domain/<domid>`
pub fn domain_path(domid: DomId) -> String {
    format!("/local/domain/{}", domid.0)
}

fn vm_path(uuid: &str) -> String {
    format!("/vm/{uuid}")
}

/// The absolute script path libxl would record for a vif: relative names are under
/// [`XEN_SCRIPT_DIR`].
pub fn script_path(script: Option<&str>) -> String {
    script_path_or(script, DEFAULT_VIF_SCRIPT)
}

/// The absolute path of `script`, or of `default` when there is none (libxl__abs_path).
pub fn script_path_or(script: Option<&str>, default: &str) -> String {
    let s = script.unwrap_or(default);
    if s.starts_with('/') {
        s.to_string()
    } else {
        format!("{XEN_SCRIPT_DIR}/{s}")
    }
}

/// `/local/domain/0/backend/vif/<domid>`: every vif backend of the guest (dom0 is the backend).
pub fn vif_backends_path(domid: DomId) -> String {
    format!("{}/backend/vif/{}", domain_path(DomId::DOM0), domid.0)
}

/// `/local/domain/0/backend/vif/<domid>/<devid>`
pub fn vif_backend_path(domid: DomId, devid: u32) -> String {
    format!("{}/{devid}", vif_backends_path(domid))
}

/// `/local/domain/<domid>/device/vif/<devid>`
pub fn vif_frontend_path(domid: DomId, devid: u32) -> String {
    format!("{}/device/vif/{devid}", domain_path(domid))
}

/// `/local/domain/0/backend/vbd/<domid>`: every vbd backend of the guest.
pub fn vbd_backends_path(domid: DomId) -> String {
    format!("{}/backend/vbd/{}", domain_path(DomId::DOM0), domid.0)
}

/// `/local/domain/0/backend/vbd/<domid>/<devid>`
pub fn vbd_backend_path(domid: DomId, devid: u32) -> String {
    format!("{}/{devid}", vbd_backends_path(domid))
}

/// `/local/domain/<domid>/device/vbd/<devid>`
pub fn vbd_frontend_path(domid: DomId, devid: u32) -> String {
    format!("{}/device/vbd/{devid}", domain_path(domid))
}

/// Runs `body` inside a transaction, retrying when another writer got in first.
fn in_transaction(
    xs: &dyn Xenstore,
    mut body: impl FnMut(TxId) -> std::result::Result<(), XenstoreError>,
) -> std::result::Result<(), XenstoreError> {
    for _ in 0..MAX_TX_ATTEMPTS {
        let tx = xs.transaction_start()?;
        if let Err(e) = body(tx) {
            // The write failed; abandon the transaction and report the first error.
            let _ = xs.transaction_end(tx, false);
            return Err(e);
        }
        if xs.transaction_end(tx, true)? == TxOutcome::Committed {
            return Ok(());
        }
    }
    Err(XenstoreError::Protocol(format!(
        "transaction conflicted {MAX_TX_ATTEMPTS} times in a row"
    )))
}

/// Writes the guest's entries in one transaction; [`introduce`] comes next.
fn publish_entries(
    xs: &dyn Xenstore,
    g: &GuestEntries<'_>,
) -> std::result::Result<(), XenstoreError> {
    let dom = domain_path(g.domid);
    let vm = vm_path(g.uuid);
    // dom0 owns everything; the guest may read its own directory...
    let guest_reads = [
        Perm {
            dom: DomId::DOM0,
            access: Access::None,
        },
        Perm {
            dom: g.domid,
            access: Access::Read,
        },
    ];
    // ...and owns the directories it writes to (control/shutdown acknowledgements, data/...).
    let guest_owns = [Perm {
        dom: g.domid,
        access: Access::None,
    }];
    let values: Vec<(String, String)> = vec![
        (format!("{dom}/name"), g.name.to_string()),
        (format!("{dom}/domid"), g.domid.0.to_string()),
        (format!("{dom}/vm"), vm.clone()),
        (format!("{dom}/memory/static-max"), g.max_kib.to_string()),
        (format!("{dom}/memory/target"), g.target_kib.to_string()),
        (format!("{dom}/console/ring-ref"), g.console_mfn.to_string()),
        (format!("{dom}/console/port"), g.console_evtchn.to_string()),
        (format!("{dom}/console/type"), "xenconsoled".to_string()),
        (format!("{dom}/console/output"), "pty".to_string()),
        (format!("{dom}/store/ring-ref"), g.store_mfn.to_string()),
        (format!("{dom}/store/port"), g.store_evtchn.to_string()),
        (format!("{vm}/uuid"), g.uuid.to_string()),
        (format!("{vm}/name"), g.name.to_string()),
    ];
    let cpus: Vec<String> = (0..g.vcpus)
        .map(|cpu| format!("{dom}/cpu/{cpu}/availability"))
        .collect();
    let guest_dirs: Vec<String> = [
        "control/shutdown",
        "control/feature-poweroff",
        "control/feature-reboot",
        "control/feature-suspend",
        "data",
        "device",
        "drivers",
        "feature",
        "attr",
        "error",
    ]
    .iter()
    .map(|d| format!("{dom}/{d}"))
    .collect();
    let mut ops = vec![
        XsOp::Mkdir(&dom),
        XsOp::SetPerms(&dom, &guest_reads),
        XsOp::Mkdir(&vm),
        XsOp::SetPerms(&vm, &guest_reads),
    ];
    ops.extend(values.iter().map(|(p, v)| XsOp::Write(p, v.as_bytes())));
    ops.extend(cpus.iter().map(|p| XsOp::Write(p, b"online")));
    for path in &guest_dirs {
        ops.push(XsOp::Write(path, b""));
        ops.push(XsOp::SetPerms(path, &guest_owns));
    }
    let devices: Vec<DeviceNodes> = g
        .vifs
        .iter()
        .map(|v| DeviceNodes::vif(g.domid, v))
        .chain(g.vbds.iter().map(|v| DeviceNodes::vbd(g.domid, v)))
        .collect();
    for device in &devices {
        device.ops(&mut ops);
    }
    // All of it in one transaction, sent in one go.
    in_transaction(xs, |tx| xs.apply(tx, &ops))
}

/// Introduces the domain to xenstored, which maps its ring and tells xenconsoled (through the
/// @introduceDomain watch) that there is a new console to serve.
fn introduce(xs: &dyn Xenstore, g: &GuestEntries<'_>) -> std::result::Result<(), XenstoreError> {
    xs.introduce_domain(g.domid, g.store_mfn, g.store_evtchn)
}

/// Asks the guest to shut down (`control/shutdown`), as `xl shutdown` does.
fn request_shutdown(
    xs: &dyn Xenstore,
    domid: DomId,
    what: &str,
) -> std::result::Result<(), XenstoreError> {
    xs.write(
        TxId::NONE,
        &format!("{}/control/shutdown", domain_path(domid)),
        what.as_bytes(),
    )
}

/// The guest's name as Xenstore knows it (also for domains xl created).
fn name_of(xs: &dyn Xenstore, domid: DomId) -> std::result::Result<Option<String>, XenstoreError> {
    Ok(xs
        .read(TxId::NONE, &format!("{}/name", domain_path(domid)))?
        .map(|v| String::from_utf8_lossy(&v).into_owned()))
}

/// Removes what `publish` wrote and tells xenstored to forget the domain. Missing entries are
/// fine: this also cleans up after a half-finished creation.
///
/// Removing a vif's backend directory is what makes Linux netback tear the device down
/// (unmap the guest's rings, unregister vifD.N, which leaves its bridge); this is the forced
/// removal libxl does on `xl destroy`, without the Closing/Closed handshake of a hot unplug.
/// A vbd's goes the same way: blkback closes the device, and the backend's removal uevent
/// tells xendevd to free the loop device it set up for a file.
fn remove(
    xs: &dyn Xenstore,
    domid: DomId,
    uuid: Option<&str>,
) -> std::result::Result<(), XenstoreError> {
    let dom = domain_path(domid);
    let vifs = vif_backends_path(domid);
    let vbds = vbd_backends_path(domid);
    in_transaction(xs, |tx| {
        if let Some(uuid) = uuid {
            xs.rm(tx, &vm_path(uuid))?;
        }
        xs.rm(tx, &vifs)?;
        xs.rm(tx, &vbds)?;
        xs.rm(tx, &dom)
    })?;
    match xs.release_domain(domid) {
        // xenstored never heard of it (the creation failed before the introduction).
        Err(XenstoreError::Failed { errno, .. }) if errno == "ENOENT" || errno == "EINVAL" => {
            Ok(())
        }
        other => other,
    }
}

/// The Xenstore control plane over a connection to xenstored.
pub struct XenstorePlane {
    xs: Arc<dyn Xenstore>,
}

impl std::fmt::Debug for XenstorePlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("XenstorePlane")
    }
}

impl XenstorePlane {
    pub fn new(xs: Arc<dyn Xenstore>) -> XenstorePlane {
        XenstorePlane { xs }
    }

    /// Watches `@releaseDomain` (xenstored fires it when an introduced domain shuts down or
    /// dies), for the reaper.
    pub fn watch_releases(&self, token: &str) -> std::result::Result<(), XenstoreError> {
        self.xs.watch("@releaseDomain", token)
    }

    pub fn unwatch_releases(&self, token: &str) -> std::result::Result<(), XenstoreError> {
        self.xs.unwatch("@releaseDomain", token)
    }

    /// Waits up to `timeout` for a watch event; true if one came.
    pub fn wait_release(
        &self,
        timeout: std::time::Duration,
    ) -> std::result::Result<bool, XenstoreError> {
        Ok(self.xs.read_watch(Some(timeout))?.is_some())
    }

    /// The vifs as published: devid = position, the MACs the toolstack chose, the script path
    /// libxl would record.
    fn vifs(g: &Guest<'_>) -> Vec<VifEntry> {
        g.config
            .vifs
            .iter()
            .enumerate()
            .map(|(devid, vif)| VifEntry {
                devid: devid as u32,
                // The toolstack chooses every MAC before publishing (they stay in the record).
                mac: vif.mac.unwrap_or(Mac([0x00, 0x16, 0x3e, 0, 0, 0])),
                bridge: vif.bridge.clone(),
                ip: vif.ip.clone(),
                script: script_path(vif.script.as_deref()),
            })
            .collect()
    }
}

impl XenstorePlane {
    /// The disks as published: libxl's numbers, the script path libxl would record.
    fn vbds(g: &Guest<'_>) -> Result<Vec<VbdEntry>> {
        g.config
            .disks
            .iter()
            .map(|d| {
                // The config was validated, so every vdev has a number.
                let devid = d.devid().ok_or_else(|| {
                    PlaneError::Refused(format!("disk {}: no device number", d.vdev))
                })?;
                Ok(VbdEntry {
                    devid,
                    vdev: d.vdev.clone(),
                    params: d.target.to_string_lossy().into_owned(),
                    readonly: d.readonly,
                    script: script_path_or(d.script.as_deref(), DEFAULT_VBD_SCRIPT),
                    discard: d.discard_enabled(),
                    direct_io_safe: d.direct_io_safe,
                    trusted: d.trusted,
                    protocol: (g.config.kind == GuestKind::Pv).then_some(PV_BLOCK_PROTOCOL),
                })
            })
            .collect()
    }
}

impl ControlPlane for XenstorePlane {
    fn kind(&self) -> PlaneKind {
        PlaneKind::Xenstore
    }

    fn publish(&self, g: &Guest<'_>, timings: &mut Timings) -> Result<()> {
        let uuid = g.uuid.to_string();
        let vifs = Self::vifs(g);
        let vbds = Self::vbds(g)?;
        let entries = GuestEntries {
            domid: g.domid,
            name: &g.config.name,
            uuid: &uuid,
            target_kib: g.config.memory_mib * 1024,
            max_kib: g.config.maxmem_mib * 1024,
            vcpus: g.config.vcpus,
            console_mfn: g.console.frame,
            console_evtchn: g.console.evtchn,
            store_mfn: g.store.frame,
            store_evtchn: g.store.evtchn,
            vifs: &vifs,
            vbds: &vbds,
        };
        publish_entries(self.xs.as_ref(), &entries)?;
        timings.lap("devices");
        introduce(self.xs.as_ref(), &entries)?;
        timings.lap("introduce");
        Ok(())
    }

    fn ready(&self) -> Result<()> {
        Ok(self.xs.ensure_connected()?)
    }

    fn unpublish(&self, domid: DomId, uuid: Option<Uuid>) -> Result<()> {
        let uuid = uuid.map(|u| u.to_string());
        match remove(self.xs.as_ref(), domid, uuid.as_deref()) {
            // No xenstored: nothing of this domain is in Xenstore.
            Err(e) if e.is_unreachable() => Ok(()),
            other => Ok(other?),
        }
    }

    fn request_shutdown(
        &self,
        domid: DomId,
        _guest: Option<&Guest<'_>>,
        kind: ShutdownKind,
    ) -> Result<()> {
        Ok(request_shutdown(self.xs.as_ref(), domid, kind.word())?)
    }

    fn name_of(&self, domid: DomId) -> Result<Option<String>> {
        match name_of(self.xs.as_ref(), domid) {
            // No xenstored: it knows no names.
            Err(e) if e.is_unreachable() => Ok(None),
            other => Ok(other?),
        }
    }
}
