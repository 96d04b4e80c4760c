//! vif devices in Xenstore mode: libxl's front/back entries and permissions, all written in the
//! creation's single transaction, removed on rollback and on destroy.

use std::sync::Mutex;
use std::time::Duration;

use super::*;
use crate::hypervisor::DomId;
use crate::plane::xenstore::{vif_backend_path, vif_frontend_path};
use crate::xenstore::{
    Access, MemStore, Perm, TxId, TxOutcome, WatchEvent, Xenstore, XenstoreError,
};

type XsResult<T> = std::result::Result<T, XenstoreError>;

/// A MemStore that records which transaction each change was made in, and how each ended,
/// and can refuse writes below a path (EACCES), as a failing xenstored would.
pub(super) struct Recorder {
    inner: Arc<MemStore>,
    /// (transaction, operation, path) of every change.
    changes: Mutex<Vec<(TxId, &'static str, String)>>,
    ended: Mutex<Vec<(TxId, TxOutcome)>>,
    /// Writes below this path fail.
    pub(super) fail_under: Mutex<Option<String>>,
}

impl Recorder {
    fn note(&self, tx: TxId, op: &'static str, path: &str) {
        self.changes
            .lock()
            .expect("lock")
            .push((tx, op, path.to_string()));
    }

    pub(super) fn changes_under(&self, prefix: &str) -> Vec<(TxId, &'static str, String)> {
        self.changes
            .lock()
            .expect("lock")
            .iter()
            .filter(|(_, _, p)| p.starts_with(prefix))
            .cloned()
            .collect()
    }

    pub(super) fn outcome(&self, tx: TxId) -> Option<TxOutcome> {
        self.ended
            .lock()
            .expect("lock")
            .iter()
            .find(|(t, _)| *t == tx)
            .map(|(_, o)| *o)
    }
}

impl Xenstore for Recorder {
    fn transaction_start(&self) -> XsResult<TxId> {
        self.inner.transaction_start()
    }
    fn transaction_end(&self, tx: TxId, commit: bool) -> XsResult<TxOutcome> {
        let out = self.inner.transaction_end(tx, commit)?;
        self.ended.lock().expect("lock").push((tx, out));
        Ok(out)
    }
    fn read(&self, tx: TxId, path: &str) -> XsResult<Option<Vec<u8>>> {
        self.inner.read(tx, path)
    }
    fn write(&self, tx: TxId, path: &str, value: &[u8]) -> XsResult<()> {
        self.note(tx, "write", path);
        if let Some(prefix) = self.fail_under.lock().expect("lock").as_deref() {
            if path.starts_with(prefix) {
                return Err(XenstoreError::Failed {
                    op: "write",
                    path: path.to_string(),
                    errno: "EACCES".into(),
                });
            }
        }
        self.inner.write(tx, path, value)
    }
    fn mkdir(&self, tx: TxId, path: &str) -> XsResult<()> {
        self.note(tx, "mkdir", path);
        self.inner.mkdir(tx, path)
    }
    fn rm(&self, tx: TxId, path: &str) -> XsResult<()> {
        self.note(tx, "rm", path);
        self.inner.rm(tx, path)
    }
    fn directory(&self, tx: TxId, path: &str) -> XsResult<Vec<String>> {
        self.inner.directory(tx, path)
    }
    fn set_perms(&self, tx: TxId, path: &str, perms: &[Perm]) -> XsResult<()> {
        self.note(tx, "set_perms", path);
        self.inner.set_perms(tx, path, perms)
    }
    fn introduce_domain(&self, dom: DomId, mfn: u64, port: u32) -> XsResult<()> {
        self.inner.introduce_domain(dom, mfn, port)
    }
    fn release_domain(&self, dom: DomId) -> XsResult<()> {
        self.inner.release_domain(dom)
    }
    fn get_perms(&self, tx: TxId, path: &str) -> XsResult<Vec<Perm>> {
        self.inner.get_perms(tx, path)
    }
    fn is_domain_introduced(&self, dom: DomId) -> XsResult<bool> {
        self.inner.is_domain_introduced(dom)
    }
    fn watch(&self, path: &str, token: &str) -> XsResult<()> {
        self.inner.watch(path, token)
    }
    fn unwatch(&self, path: &str, token: &str) -> XsResult<()> {
        self.inner.unwatch(path, token)
    }
    fn read_watch(&self, timeout: Option<Duration>) -> XsResult<Option<WatchEvent>> {
        self.inner.read_watch(timeout)
    }
}

/// The world of the other tests, with the recorder between the toolstack and the store.
pub(super) fn recorded_world(tag: &str) -> (World, Arc<Recorder>) {
    let w = world(tag);
    let rec = Arc::new(Recorder {
        inner: w.xs.clone(),
        changes: Mutex::new(Vec::new()),
        ended: Mutex::new(Vec::new()),
        fail_under: Mutex::new(None),
    });
    let state = StateDir::open(w.scratch.0.join("run-recorded")).expect("state dir");
    let ts = Toolstack::new(w.sim.clone(), Some(rec.clone()), state);
    (World { ts, ..w }, rec)
}

const TWO_VIFS: &str =
    "vif = ['bridge=xenbr1,ip=10.0.0.2', 'mac=00:16:3e:01:02:03,script=vif-route']";

pub(super) fn perms(w: &World, path: &str) -> Vec<Perm> {
    w.xs.get_perms(TxId::NONE, path).expect("perms")
}

pub(super) fn p(dom: DomId, access: Access) -> Perm {
    Perm { dom, access }
}

#[test]
fn vifs_get_libxl_entries_and_permissions() {
    let w = world("vif-entries");
    let created =
        w.ts.create(&config(&w, "net", TWO_VIFS), true)
            .expect("create");
    let d = created.domid;
    let be0 = vif_backend_path(d, 0);
    let fe0 = vif_frontend_path(d, 0);
    assert_eq!(be0, format!("/local/domain/0/backend/vif/{}/0", d.0));
    assert_eq!(fe0, format!("/local/domain/{}/device/vif/0", d.0));
    let get = |path: String| read(&w, &path).unwrap_or_else(|| panic!("{path} missing"));

    // The generated MAC has Xen's OUI and a locally unique tail, and both ends agree on it.
    let mac0 = get(format!("{be0}/mac"));
    assert!(mac0.starts_with("00:16:3e:"), "{mac0}");
    let tail = crate::config::vif::parse_mac(&mac0).expect("valid MAC");
    assert!(
        tail.0[3] < 0x80,
        "libxl keeps the 4th byte below 0x80: {mac0}"
    );
    assert_eq!(get(format!("{fe0}/mac")), mac0);

    for (key, want) in [
        ("frontend", fe0.as_str()),
        ("frontend-id", &d.0.to_string()),
        ("online", "1"),
        ("state", "1"),
        ("script", "/etc/xen/scripts/vif-bridge"),
        ("bridge", "xenbr1"),
        ("ip", "10.0.0.2"),
        ("handle", "0"),
        ("type", "vif"),
        ("hotplug-status", ""),
    ] {
        assert_eq!(get(format!("{be0}/{key}")), want, "backend {key}");
    }
    for (key, want) in [
        ("backend", be0.as_str()),
        ("backend-id", "0"),
        ("state", "1"),
        ("handle", "0"),
        ("trusted", "1"),
        ("mtu", "1500"),
    ] {
        assert_eq!(get(format!("{fe0}/{key}")), want, "frontend {key}");
    }

    // The second vif: its own devid, the MAC given, a relative script made absolute, no ip.
    let be1 = vif_backend_path(d, 1);
    let fe1 = vif_frontend_path(d, 1);
    assert_eq!(get(format!("{be1}/handle")), "1");
    assert_eq!(get(format!("{fe1}/handle")), "1");
    assert_eq!(get(format!("{be1}/mac")), "00:16:3e:01:02:03");
    assert_eq!(get(format!("{be1}/bridge")), "xenbr0");
    assert_eq!(get(format!("{be1}/script")), "/etc/xen/scripts/vif-route");
    assert_eq!(read(&w, &format!("{be1}/ip")), None);

    // libxl__device_generic_add's permissions: the guest owns its frontend (dom0 reads it);
    // dom0 owns the backend and the frontend's mtu (the guest reads them). Keys written into a
    // directory inherit its permissions.
    let guest_owned = vec![p(d, Access::None), p(DomId::DOM0, Access::Read)];
    let dom0_owned = vec![p(DomId::DOM0, Access::None), p(d, Access::Read)];
    for fe in [&fe0, &fe1] {
        assert_eq!(perms(&w, fe), guest_owned, "{fe}");
        assert_eq!(perms(&w, &format!("{fe}/state")), guest_owned);
        assert_eq!(perms(&w, &format!("{fe}/mtu")), dom0_owned);
    }
    for be in [&be0, &be1] {
        assert_eq!(perms(&w, be), dom0_owned, "{be}");
        assert_eq!(perms(&w, &format!("{be}/hotplug-status")), dom0_owned);
    }

    // The chosen MAC is in the record, so a restart keeps it.
    let record = w.ts.state().load(d).expect("load").expect("record");
    let macs: Vec<Option<xen_types::Mac>> = record.config.vifs.iter().map(|v| v.mac).collect();
    assert_eq!(
        macs,
        vec![Some(tail), Some(xen_types::Mac([0, 0x16, 0x3e, 1, 2, 3]))]
    );
}

#[test]
fn generated_macs_differ_between_guests() {
    let w = world("vif-macs");
    let mut macs = Vec::new();
    for i in 0..4 {
        let c =
            w.ts.create(&config(&w, &format!("n{i}"), "vif = ['']"), true)
                .expect("create");
        macs.push(read(&w, &format!("{}/mac", vif_backend_path(c.domid, 0))).expect("mac"));
    }
    macs.sort();
    macs.dedup();
    assert_eq!(macs.len(), 4, "{macs:?}");
}

#[test]
fn vif_entries_are_written_in_the_creations_single_transaction() {
    let (w, rec) = recorded_world("vif-tx");
    let created =
        w.ts.create(&config(&w, "net", TWO_VIFS), true)
            .expect("create");
    let d = created.domid;
    let guest = rec.changes_under(&format!("/local/domain/{}/", d.0));
    let backend = rec.changes_under(&format!("/local/domain/0/backend/vif/{}", d.0));
    assert!(guest.iter().any(|(_, _, p)| p.contains("/device/vif/1/")));
    let be0 = vif_backend_path(d, 0);
    assert!(
        backend
            .iter()
            .any(|(_, op, p)| *op == "set_perms" && *p == be0),
        "{backend:?}"
    );
    let txs: Vec<TxId> = guest.iter().chain(&backend).map(|(t, _, _)| *t).collect();
    let tx = txs[0];
    assert_ne!(tx, TxId::NONE, "written outside a transaction");
    assert!(
        txs.iter().all(|t| *t == tx),
        "the domain's and its vifs' entries span several transactions: {txs:?}"
    );
    assert_eq!(rec.outcome(tx), Some(TxOutcome::Committed));
    // The domain's name is in that transaction too: one commit makes the guest and its vifs.
    assert!(guest
        .iter()
        .any(|(t, op, p)| *t == tx && *op == "write" && p.ends_with("/name")));
}

/// Creates and destroys a guest with a vif once, so that the directories all backends share
/// (/local/domain/0/backend/vif) exist, as on a dom0 that has run guests with vifs.
fn warmed_up(tag: &str) -> World {
    let w = world(tag);
    let c =
        w.ts.create(&config(&w, "warmup", "vif = ['']"), true)
            .expect("create");
    w.ts.destroy(c.domid).expect("destroy");
    w
}

#[test]
fn destroy_removes_the_vif_entries() {
    let w = warmed_up("vif-destroy");
    let before = leftovers(&w);
    let created =
        w.ts.create(&config(&w, "net", TWO_VIFS), false)
            .expect("create");
    let d = created.domid;
    assert!(read(&w, &vif_backend_path(d, 1)).is_some());
    w.ts.destroy(d).expect("destroy");
    assert!(w
        .xs
        .paths_under(&format!("/local/domain/0/backend/vif/{}", d.0))
        .is_empty());
    assert!(w
        .xs
        .paths_under(&format!("/local/domain/{}", d.0))
        .is_empty());
    assert_eq!(leftovers(&w), before);
}

#[test]
fn a_failed_creation_with_vifs_leaves_no_vif_entries() {
    let w = warmed_up("vif-rollback");
    let cfg = config(&w, "fragile", TWO_VIFS);
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
    // The last call is the unpause, after the vifs were published: they were rolled back.
    w.sim.arm(Fault::Op {
        name: "XEN_DOMCTL_unpausedomain",
        nth: 0,
    });
    let err = w.ts.create(&cfg, false).unwrap_err();
    w.sim.disarm();
    assert!(err.to_string().contains("unpause"), "{err}");
    assert_eq!(leftovers(&w), before);
}
