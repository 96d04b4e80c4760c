//! What one device's front and back directories hold.

use super::{
    vbd_backend_path, vbd_frontend_path, vif_backend_path, vif_frontend_path, VbdEntry, VifEntry,
    VIF_MTU, XENBUS_STATE_INITIALISING,
};
use crate::hypervisor::DomId;
use crate::xenstore::{Access, Perm, XsOp};

/// The paths, values and permissions of one device's two directories, as libxl's
/// libxl__device_generic_add lays them out, with the keys of libxl__set_xenstore_nic (vifs)
/// or device_disk_add (vbds).
pub(super) struct DeviceNodes {
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

impl DeviceNodes {
    /// The frontend directory owned by the guest and readable by dom0; the backend directory
    /// (and read-only frontend keys) owned by dom0 and readable by the guest.
    fn perms(domid: DomId) -> ([Perm; 2], [Perm; 2]) {
        (
            [
                Perm {
                    dom: domid,
                    access: Access::None,
                },
                Perm {
                    dom: DomId::DOM0,
                    access: Access::Read,
                },
            ],
            [
                Perm {
                    dom: DomId::DOM0,
                    access: Access::None,
                },
                Perm {
                    dom: domid,
                    access: Access::Read,
                },
            ],
        )
    }

    pub(super) fn vif(domid: DomId, vif: &VifEntry) -> DeviceNodes {
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
        let (frontend_perms, backend_perms) = Self::perms(domid);
        DeviceNodes {
            frontend,
            backend,
            frontend_perms,
            backend_perms,
            frontend_values,
            frontend_ro_values,
            backend_values,
        }
    }

    /// libxl 4.17's device_disk_add for the phy backend. No `hotplug-status` is written:
    /// blkback does not wait for one (it waits for `physical-device`), xendevd adds it.
    pub(super) fn vbd(domid: DomId, vbd: &VbdEntry) -> DeviceNodes {
        let frontend = vbd_frontend_path(domid, vbd.devid);
        let backend = vbd_backend_path(domid, vbd.devid);
        let fe = |k: &str, v: &str| (format!("{frontend}/{k}"), v.to_string());
        let be = |k: &str, v: &str| (format!("{backend}/{k}"), v.to_string());
        let flag = |b: bool| if b { "1" } else { "0" };
        let mut backend_values = vec![
            be("frontend", &frontend),
            be("params", &vbd.params),
            be("script", &vbd.script),
            be("frontend-id", &domid.0.to_string()),
            be("online", "1"),
            be("removable", "0"),
            be("bootable", "1"),
            be("state", XENBUS_STATE_INITIALISING),
            be("dev", &vbd.vdev),
            be("type", "phy"),
            be("mode", if vbd.readonly { "r" } else { "w" }),
            be("device-type", "disk"),
        ];
        if vbd.direct_io_safe {
            backend_values.push(be("direct-io-safe", "1"));
        }
        backend_values.extend([
            be("discard-enable", flag(vbd.discard)),
            be("specification", "xen"),
        ]);
        let mut frontend_values = vec![
            fe("backend", &backend),
            fe("backend-id", &DomId::DOM0.0.to_string()),
            fe("state", XENBUS_STATE_INITIALISING),
            fe("virtual-device", &vbd.devid.to_string()),
            fe("device-type", "disk"),
            fe("trusted", flag(vbd.trusted)),
        ];
        if let Some(p) = vbd.protocol {
            frontend_values.push(fe("protocol", p));
        }
        let (frontend_perms, backend_perms) = Self::perms(domid);
        DeviceNodes {
            frontend,
            backend,
            frontend_perms,
            backend_perms,
            frontend_values,
            frontend_ro_values: Vec::new(),
            backend_values,
        }
    }

    /// The operations, in libxl's order: frontend directory, its keys, backend directory,
    /// its keys (new keys inherit their directory's permissions).
    pub(super) fn ops<'a>(&'a self, ops: &mut Vec<XsOp<'a>>) {
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
