//! The Xenstore control plane: the minimal entries a PV guest, xenconsoled and `xl list` need,
//! and the front/back directories of its vifs, written in ONE transaction, then the domain
//! introduced to xenstored.

use std::sync::Arc;
use std::time::Instant;

use super::{ControlPlane, Guest, Result};
use crate::config::PlaneKind;
use crate::hypervisor::{DomId, Uuid};
use crate::toolstack::{ShutdownKind, Timings};
use crate::xenstore::{Access, Perm, TxId, TxOutcome, Xenstore, XenstoreError, XsOp};
use xen_types::Mac;

/// Transactions lost to concurrent writers are retried this many times before giving up.
const MAX_TX_ATTEMPTS: u32 = 16;

/// Where relative `script=` names point, as libxl resolves them.
pub const XEN_SCRIPT_DIR: &str = "/etc/xen/scripts";
/// The script libxl records when a vif names none.
pub const DEFAULT_VIF_SCRIPT: &str = "vif-bridge";
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
}

/// `/local/domain/<domid>`
pub fn domain_path(domid: DomId) -> String {
    format!("/local/domain/{}", domid.0)
}

fn vm_path(uuid: &str) -> String {
    format!("/vm/{uuid}")
}

/// The absolute script path libxl would record: relative names are under [`XEN_SCRIPT_DIR`].
pub fn script_path(script: Option<&str>) -> String {
    let s = script.unwrap_or(DEFAULT_VIF_SCRIPT);
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

/// The paths, values and permissions of one vif, as libxl's libxl__device_generic_add and
/// libxl__set_xenstore_nic lay them out.
struct VifNodes {
    frontend: String,
    backend: String,
    /// The frontend directory: owned by the guest, readable by the backend (dom0).
    frontend_perms: [Perm; 2],
    /// The backend directory (and the read-only frontend keys): owned by dom0, readable by
    /// the guest.
    backend_perms: [Perm; 2],
    frontend_values: Vec<(String, String)>,
    /// Frontend keys the guest may read but not change.
    frontend_ro_values: Vec<(String, String)>,
    backend_values: Vec<(String, String)>,
}

impl VifNodes {
    fn new(domid: DomId, vif: &VifEntry) -> VifNodes {
        let frontend = vif_frontend_path(domid, vif.devid);
        let backend = vif_backend_path(domid, vif.devid);
        let mac = vif.mac.to_string();
        let handle = vif.devid.to_string();
        let fe = |k: &str, v: &str| (format!("{frontend}/{k}"), v.to_string());
        let be = |k: &str, v: &str| (format!("{backend}/{k}"), v.to_string());
        let frontend_values = vec![
            fe("backend", &backend),
            fe("backend-id", &DomId::DOM0.0.to_string()),
            fe("state", XENBUS_STATE_INITIALISING),
            fe("handle", &handle),
            fe("mac", &mac),
            fe("trusted", "1"),
        ];
        let frontend_ro_values = vec![fe("mtu", VIF_MTU)];
        let mut backend_values = vec![
            be("frontend", &frontend),
            be("frontend-id", &domid.0.to_string()),
            be("online", "1"),
            be("state", XENBUS_STATE_INITIALISING),
            be("script", &vif.script),
            be("mac", &mac),
        ];
        if let Some(ip) = &vif.ip {
            backend_values.push(be("ip", ip));
        }
        backend_values.extend([
            be("bridge", &vif.bridge),
            be("handle", &handle),
            be("type", "vif"),
            be("hotplug-status", ""),
        ]);
        VifNodes {
            frontend,
            backend,
            frontend_perms: [
                Perm {
                    dom: domid,
                    access: Access::None,
                },
                Perm {
                    dom: DomId::DOM0,
                    access: Access::Read,
                },
            ],
            backend_perms: [
                Perm {
                    dom: DomId::DOM0,
                    access: Access::None,
                },
                Perm {
                    dom: domid,
                    access: Access::Read,
                },
            ],
            frontend_values,
            frontend_ro_values,
            backend_values,
        }
    }

    /// The operations, in libxl's order: frontend directory, its keys, backend directory,
    /// its keys (new keys inherit their directory's permissions).
    fn ops<'a>(&'a self, ops: &mut Vec<XsOp<'a>>) {
        ops.push(XsOp::Mkdir(&self.frontend));
        ops.push(XsOp::SetPerms(&self.frontend, &self.frontend_perms));
        ops.extend(
            self.frontend_values
                .iter()
                .map(|(p, v)| XsOp::Write(p, v.as_bytes())),
        );
        for (p, v) in &self.frontend_ro_values {
            ops.push(XsOp::Write(p, v.as_bytes()));
            ops.push(XsOp::SetPerms(p, &self.backend_perms));
        }
        ops.push(XsOp::Mkdir(&self.backend));
        ops.push(XsOp::SetPerms(&self.backend, &self.backend_perms));
        ops.extend(
            self.backend_values
                .iter()
                .map(|(p, v)| XsOp::Write(p, v.as_bytes())),
        );
    }
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
    let vifs: Vec<VifNodes> = g.vifs.iter().map(|v| VifNodes::new(g.domid, v)).collect();
    for vif in &vifs {
        vif.ops(&mut ops);
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
fn remove(
    xs: &dyn Xenstore,
    domid: DomId,
    uuid: Option<&str>,
) -> std::result::Result<(), XenstoreError> {
    let dom = domain_path(domid);
    let backends = vif_backends_path(domid);
    in_transaction(xs, |tx| {
        if let Some(uuid) = uuid {
            xs.rm(tx, &vm_path(uuid))?;
        }
        xs.rm(tx, &backends)?;
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

impl ControlPlane for XenstorePlane {
    fn kind(&self) -> PlaneKind {
        PlaneKind::Xenstore
    }

    fn publish(&self, g: &Guest<'_>, timings: &mut Timings) -> Result<()> {
        let t = Instant::now();
        let uuid = g.uuid.to_string();
        let vifs = Self::vifs(g);
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
        };
        publish_entries(self.xs.as_ref(), &entries)?;
        timings.record("devices", t);
        let t = Instant::now();
        introduce(self.xs.as_ref(), &entries)?;
        timings.record("introduce", t);
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
