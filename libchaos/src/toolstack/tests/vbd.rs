//! vbd devices in Xenstore mode: libxl's front/back entries and permissions for each disk,
//! written in the creation's single transaction, removed on rollback (after a failure of Xen
//! or of Xenstore) and on destroy.

use super::vif::{p, perms, recorded_world};
use super::*;
use crate::hypervisor::DomId;
use crate::plane::xenstore::{vbd_backend_path, vbd_backends_path, vbd_frontend_path};
use crate::xenstore::{Access, TxId, TxOutcome};

const TWO_DISKS: &str =
    "disk = ['file:/srv/base.img,xvda,r', 'vdev=xvdb,access=rw,direct-io-safe,untrusted,target=/dev/vg/data']";

#[test]
fn vbds_get_libxl_entries_and_permissions() {
    let w = world("vbd-entries");
    let created =
        w.ts.create(&config(&w, "disks", TWO_DISKS), true)
            .expect("create");
    let d = created.domid;
    let (be0, fe0) = (vbd_backend_path(d, 51712), vbd_frontend_path(d, 51712));
    assert_eq!(be0, format!("/local/domain/0/backend/vbd/{}/51712", d.0));
    assert_eq!(fe0, format!("/local/domain/{}/device/vbd/51712", d.0));
    let get = |path: String| read(&w, &path).unwrap_or_else(|| panic!("{path} missing"));
    let backend = |be: &str, keys: &[(&str, &str)]| {
        for (key, want) in keys {
            assert_eq!(get(format!("{be}/{key}")), *want, "{be}/{key}");
        }
    };
    let domid = d.0.to_string();
    // libxl 4.17's device_disk_add, phy backend.
    backend(
        &be0,
        &[
            ("frontend", fe0.as_str()),
            ("params", "/srv/base.img"),
            ("script", "/etc/xen/scripts/block"),
            ("frontend-id", &domid),
            ("online", "1"),
            ("removable", "0"),
            ("bootable", "1"),
            ("state", "1"),
            ("dev", "xvda"),
            ("type", "phy"),
            ("mode", "r"),
            ("device-type", "disk"),
            ("discard-enable", "0"),
            ("specification", "xen"),
        ],
    );
    backend(
        &fe0,
        &[
            ("backend", be0.as_str()),
            ("backend-id", "0"),
            ("state", "1"),
            ("virtual-device", "51712"),
            ("device-type", "disk"),
            ("trusted", "1"),
            ("protocol", "x86_64-abi"),
        ],
    );
    // What the toolstack does not write: the hotplug result and blkback's own keys.
    for key in [
        "physical-device",
        "hotplug-status",
        "direct-io-safe",
        "feature-persistent",
    ] {
        assert_eq!(read(&w, &format!("{be0}/{key}")), None, "{key}");
    }
    let (be1, fe1) = (vbd_backend_path(d, 51728), vbd_frontend_path(d, 51728));
    backend(
        &be1,
        &[
            ("params", "/dev/vg/data"),
            ("dev", "xvdb"),
            ("mode", "w"),
            ("direct-io-safe", "1"),
            ("discard-enable", "1"),
        ],
    );
    backend(&fe1, &[("virtual-device", "51728"), ("trusted", "0")]);

    let guest_owned = vec![p(d, Access::None), p(DomId::DOM0, Access::Read)];
    let dom0_owned = vec![p(DomId::DOM0, Access::None), p(d, Access::Read)];
    for fe in [&fe0, &fe1] {
        assert_eq!(perms(&w, fe), guest_owned, "{fe}");
        assert_eq!(perms(&w, &format!("{fe}/state")), guest_owned);
    }
    for be in [&be0, &be1] {
        assert_eq!(perms(&w, be), dom0_owned, "{be}");
        assert_eq!(perms(&w, &format!("{be}/params")), dom0_owned);
    }
    // The record keeps the disks, for restarts.
    let record = w.ts.state().load(d).expect("load").expect("record");
    assert_eq!(record.config.disks.len(), 2);
}

#[test]
fn vbd_entries_are_written_in_the_creations_single_transaction() {
    let (w, rec) = recorded_world("vbd-tx");
    let created =
        w.ts.create(
            &config(&w, "disks", &format!("{TWO_DISKS}\nvif = ['']")),
            true,
        )
        .expect("create");
    let d = created.domid;
    let guest = rec.changes_under(&format!("/local/domain/{}/", d.0));
    let backends = rec.changes_under(&vbd_backends_path(d));
    assert!(guest
        .iter()
        .any(|(_, _, p)| p.contains("/device/vbd/51728/")));
    assert!(backends
        .iter()
        .any(|(_, _, p)| p.ends_with("/51712/params")));
    let txs: Vec<TxId> = guest.iter().chain(&backends).map(|(t, _, _)| *t).collect();
    let tx = txs[0];
    assert_ne!(tx, TxId::NONE, "written outside a transaction");
    assert!(
        txs.iter().all(|t| *t == tx),
        "the guest's and its disks' entries span several transactions: {txs:?}"
    );
    assert_eq!(rec.outcome(tx), Some(TxOutcome::Committed));
}

#[test]
fn one_file_read_only_in_many_guests() {
    let w = world("vbd-shared");
    let cfg = config(&w, "ro", "disk = ['/srv/base.img,raw,xvda,ro']");
    let mut ids = Vec::new();
    for i in 0..8 {
        let c =
            w.ts.create(&cfg.renamed(format!("ro-{i}")).expect("name"), true)
                .expect("create");
        ids.push(c.domid);
    }
    for d in &ids {
        let be = vbd_backend_path(*d, 51712);
        assert_eq!(
            read(&w, &format!("{be}/params")).as_deref(),
            Some("/srv/base.img")
        );
        assert_eq!(read(&w, &format!("{be}/mode")).as_deref(), Some("r"));
    }
    for d in ids {
        w.ts.destroy(d).expect("destroy");
        assert!(w.xs.paths_under(&vbd_backends_path(d)).is_empty());
    }
}

/// Creates and destroys a guest with a disk once, so that the directories all backends share
/// (/local/domain/0/backend/vbd) exist, as on a dom0 that has run guests with disks.
fn warmed_up(tag: &str) -> World {
    let w = world(tag);
    let c =
        w.ts.create(&config(&w, "warmup", "disk = ['/i,,xvda']"), true)
            .expect("create");
    w.ts.destroy(c.domid).expect("destroy");
    w
}

#[test]
fn destroy_removes_the_vbd_entries() {
    let w = warmed_up("vbd-destroy");
    let before = leftovers(&w);
    let created =
        w.ts.create(&config(&w, "disks", TWO_DISKS), false)
            .expect("create");
    let d = created.domid;
    assert!(read(&w, &vbd_backend_path(d, 51728)).is_some());
    w.ts.destroy(d).expect("destroy");
    assert!(w.xs.paths_under(&vbd_backends_path(d)).is_empty());
    assert!(w
        .xs
        .paths_under(&format!("/local/domain/{}", d.0))
        .is_empty());
    assert_eq!(leftovers(&w), before);
}

#[test]
fn a_failed_creation_with_disks_leaves_no_vbd_entries() {
    let w = warmed_up("vbd-rollback");
    let cfg = config(&w, "fragile", TWO_DISKS);
    let before = leftovers(&w);
    w.sim.arm(Fault::Call(u64::MAX));
    let ok = w.ts.create(&cfg, false).expect("create");
    let calls = w.sim.calls();
    w.ts.destroy(ok.domid).expect("destroy");
    assert_eq!(leftovers(&w), before);
    for n in 0..calls {
        w.sim.arm(Fault::Call(n));
        let result = w.ts.create(&cfg, false);
        w.sim.disarm();
        assert!(result.is_err(), "creation survived a failure at call {n}");
        assert_eq!(leftovers(&w), before, "after a failure at call {n}");
    }
    // The unpause comes after the disks were published: they were rolled back.
    w.sim.arm(Fault::Op {
        name: "XEN_DOMCTL_unpausedomain",
        nth: 0,
    });
    let err = w.ts.create(&cfg, false).unwrap_err();
    w.sim.disarm();
    assert!(err.to_string().contains("unpause"), "{err}");
    assert_eq!(leftovers(&w), before);
}

#[test]
fn a_xenstore_failure_while_writing_a_disk_leaves_nothing() {
    let (w, rec) = recorded_world("vbd-xsfail");
    // The shared directories exist, as on a dom0 that has run guests with disks.
    let c =
        w.ts.create(&config(&w, "warmup", "disk = ['/i,,xvda']"), true)
            .expect("create");
    w.ts.destroy(c.domid).expect("destroy");
    let before = leftovers(&w);
    *rec.fail_under.lock().expect("lock") = Some("/local/domain/0/backend/vbd/".into());
    let err =
        w.ts.create(&config(&w, "disks", TWO_DISKS), false)
            .unwrap_err();
    *rec.fail_under.lock().expect("lock") = None;
    assert!(err.to_string().contains("EACCES"), "{err}");
    assert_eq!(leftovers(&w), before);
}

#[test]
fn noxs_guests_with_disks_are_refused_before_anything_is_made() {
    let w = world("vbd-noxs");
    let before = leftovers(&w);
    let text = format!(
        "name = \"nx\"\nkernel = \"{}\"\nmemory = 16\nchaos_control_plane = \"noxs\"\ndisk = ['/i,,xvda']\n",
        w.noxs_kernel.display()
    );
    let cfg = parse_xl(&text, "t.cfg", &[]).expect("config").config;
    let err = w.ts.create(&cfg, false).unwrap_err();
    assert!(
        err.to_string()
            .contains("NoXS guests have no block devices"),
        "{err}"
    );
    assert_eq!(leftovers(&w), before);
}
