use std::time::Duration;

use super::*;
use crate::{Access, Perm, TxOutcome, WatchEvent, Xenstore};

const NO: TxId = TxId::NONE;

fn errno(r: Result<impl std::fmt::Debug>) -> String {
    match r {
        Err(XenstoreError::Failed { errno, .. }) => errno,
        other => panic!("expected a Failed error, got {other:?}"),
    }
}

#[test]
fn write_creates_parents_with_empty_values_and_inherited_perms() {
    let xs = MemStore::new();
    xs.write(NO, "/local", b"").unwrap();
    let perms = [Perm {
        dom: DomId(0),
        access: Access::Read,
    }];
    xs.set_perms(NO, "/local", &perms).unwrap();
    xs.write(NO, "/local/domain/5/name", b"g").unwrap();
    assert_eq!(
        xs.paths(),
        vec![
            "/local",
            "/local/domain",
            "/local/domain/5",
            "/local/domain/5/name"
        ]
    );
    assert_eq!(xs.read(NO, "/local/domain").unwrap(), Some(Vec::new()));
    assert_eq!(
        xs.read(NO, "/local/domain/5/name").unwrap(),
        Some(b"g".to_vec())
    );
    assert_eq!(xs.get_perms(NO, "/local/domain/5").unwrap(), perms);
    assert_eq!(xs.read(NO, "/nope").unwrap(), None);
    assert_eq!(errno(xs.get_perms(NO, "/nope")), "ENOENT");
}

#[test]
fn overwrite_keeps_perms_and_mkdir_keeps_value() {
    let xs = MemStore::new();
    xs.write(NO, "/a", b"1").unwrap();
    let perms = [Perm {
        dom: DomId(3),
        access: Access::Both,
    }];
    xs.set_perms(NO, "/a", &perms).unwrap();
    xs.write(NO, "/a", b"2").unwrap();
    assert_eq!(xs.get_perms(NO, "/a").unwrap(), perms);
    xs.mkdir(NO, "/a").unwrap();
    assert_eq!(xs.read(NO, "/a").unwrap(), Some(b"2".to_vec()));
    xs.mkdir(NO, "/b/c").unwrap();
    assert_eq!(xs.read(NO, "/b/c").unwrap(), Some(Vec::new()));
}

#[test]
fn rm_is_recursive_and_missing_is_fine() {
    let xs = MemStore::new();
    xs.write(NO, "/d/1/x", b"").unwrap();
    xs.write(NO, "/d/1/y/z", b"").unwrap();
    xs.write(NO, "/d/10", b"").unwrap();
    xs.write(NO, "/d/1-b", b"").unwrap();
    xs.rm(NO, "/d/1").unwrap();
    assert_eq!(xs.paths(), vec!["/d", "/d/1-b", "/d/10"]);
    xs.rm(NO, "/d/1").unwrap();
    xs.rm(NO, "/q/r").unwrap();
    assert_eq!(errno(xs.rm(NO, "/")), "EINVAL");
}

#[test]
fn directory_lists_direct_children_only() {
    let xs = MemStore::new();
    for p in ["/d/a/deep/er", "/d/a-b", "/d/a0", "/d/b", "/d/a/x", "/e"] {
        xs.write(NO, p, b"").unwrap();
    }
    assert_eq!(xs.directory(NO, "/d").unwrap(), vec!["a", "a-b", "a0", "b"]);
    assert_eq!(xs.directory(NO, "/").unwrap(), vec!["d", "e"]);
    assert!(xs.directory(NO, "/d/b").unwrap().is_empty());
    assert!(xs.directory(NO, "/missing").unwrap().is_empty());
}

#[test]
fn invalid_paths_are_einval() {
    let xs = MemStore::new();
    for p in ["relative", "/a/", "/a//b", "/a b", ""] {
        assert_eq!(errno(xs.write(NO, p, b"")), "EINVAL", "{p:?}");
        assert_eq!(errno(xs.read(NO, p)), "EINVAL", "{p:?}");
    }
    assert!(xs.paths().is_empty());
}

#[test]
fn transaction_sees_own_writes_and_commits_atomically() {
    let xs = MemStore::new();
    xs.write(NO, "/old/x", b"1").unwrap();
    let tx = xs.transaction_start().unwrap();
    xs.write(tx, "/vm/1/name", b"g").unwrap();
    xs.rm(tx, "/old").unwrap();
    assert_eq!(xs.read(tx, "/vm/1/name").unwrap(), Some(b"g".to_vec()));
    assert_eq!(xs.read(tx, "/old/x").unwrap(), None);
    assert_eq!(xs.directory(tx, "/").unwrap(), vec!["vm"]);
    // Outside the transaction nothing has happened yet.
    assert_eq!(xs.read(NO, "/vm/1/name").unwrap(), None);
    assert_eq!(xs.read(NO, "/old/x").unwrap(), Some(b"1".to_vec()));
    assert_eq!(xs.transaction_end(tx, true).unwrap(), TxOutcome::Committed);
    assert_eq!(xs.paths(), vec!["/vm", "/vm/1", "/vm/1/name"]);
    assert_eq!(xs.open_transactions(), 0);
}

#[test]
fn abort_discards() {
    let xs = MemStore::new();
    let tx = xs.transaction_start().unwrap();
    xs.write(tx, "/a/b", b"x").unwrap();
    assert_eq!(xs.transaction_end(tx, false).unwrap(), TxOutcome::Aborted);
    assert!(xs.paths().is_empty());
    assert_eq!(errno(xs.transaction_end(tx, true)), "ENOENT");
    assert_eq!(errno(xs.write(tx, "/a", b"")), "ENOENT");
}

#[test]
fn conflicting_commit_fails_and_changes_nothing() {
    let xs = MemStore::new();
    xs.write(NO, "/c", b"0").unwrap();
    let tx = xs.transaction_start().unwrap();
    assert_eq!(xs.read(tx, "/c").unwrap(), Some(b"0".to_vec()));
    xs.write(tx, "/mine", b"1").unwrap();
    xs.write(NO, "/c", b"other").unwrap();
    assert_eq!(xs.transaction_end(tx, true).unwrap(), TxOutcome::Conflict);
    assert_eq!(xs.read(NO, "/mine").unwrap(), None);
}

#[test]
fn conflict_on_a_path_created_or_removed_meanwhile() {
    let xs = MemStore::new();
    // Read as absent, then created by someone else.
    let tx = xs.transaction_start().unwrap();
    assert_eq!(xs.read(tx, "/x").unwrap(), None);
    xs.write(NO, "/x", b"").unwrap();
    assert_eq!(xs.transaction_end(tx, true).unwrap(), TxOutcome::Conflict);
    // Listed, then a child appears.
    let tx = xs.transaction_start().unwrap();
    xs.directory(tx, "/x").unwrap();
    xs.write(NO, "/x/child", b"").unwrap();
    assert_eq!(xs.transaction_end(tx, true).unwrap(), TxOutcome::Conflict);
    // Read, then removed.
    let tx = xs.transaction_start().unwrap();
    xs.read(tx, "/x/child").unwrap();
    xs.rm(NO, "/x/child").unwrap();
    assert_eq!(xs.transaction_end(tx, true).unwrap(), TxOutcome::Conflict);
}

#[test]
fn unrelated_changes_do_not_conflict() {
    let xs = MemStore::new();
    xs.write(NO, "/local/domain/1/name", b"a").unwrap();
    let tx = xs.transaction_start().unwrap();
    xs.write(tx, "/local/domain/2/name", b"b").unwrap();
    xs.write(NO, "/local/domain/1/name", b"a2").unwrap();
    assert_eq!(xs.transaction_end(tx, true).unwrap(), TxOutcome::Committed);
    assert_eq!(
        xs.read(NO, "/local/domain/2/name").unwrap(),
        Some(b"b".to_vec())
    );
}

#[test]
fn two_transactions_creating_siblings_conflict_like_xenstored() {
    // Both add a child to /local/domain, so both change its child list: the second loses.
    let xs = MemStore::new();
    xs.mkdir(NO, "/local/domain").unwrap();
    let t1 = xs.transaction_start().unwrap();
    let t2 = xs.transaction_start().unwrap();
    xs.write(t1, "/local/domain/1/name", b"a").unwrap();
    xs.write(t2, "/local/domain/2/name", b"b").unwrap();
    assert_eq!(xs.transaction_end(t1, true).unwrap(), TxOutcome::Committed);
    assert_eq!(xs.transaction_end(t2, true).unwrap(), TxOutcome::Conflict);
}

#[test]
fn introduce_and_release_bookkeeping() {
    let xs = MemStore::new();
    assert!(!xs.is_domain_introduced(DomId(4)).unwrap());
    xs.introduce_domain(DomId(4), 0x1234, 7).unwrap();
    xs.introduce_domain(DomId(4), 0x1234, 7).unwrap();
    assert_eq!(errno(xs.introduce_domain(DomId(4), 0x1, 7)), "EEXIST");
    assert_eq!(errno(xs.introduce_domain(DomId(0), 0x1, 7)), "EINVAL");
    assert!(xs.is_domain_introduced(DomId(4)).unwrap());
    assert_eq!(xs.introduced_domains(), vec![DomId(4)]);
    xs.release_domain(DomId(4)).unwrap();
    assert!(!xs.is_domain_introduced(DomId(4)).unwrap());
    assert_eq!(errno(xs.release_domain(DomId(4))), "ENOENT");
}

#[test]
fn watches_fire_on_registration_changes_and_removal() {
    let xs = MemStore::new();
    let ev = |p: &str, t: &str| {
        Some(WatchEvent {
            path: p.into(),
            token: t.into(),
        })
    };
    let next = || xs.read_watch(Some(Duration::ZERO)).unwrap();
    xs.watch("/be/vif/3", "vif").unwrap();
    xs.watch("@releaseDomain", "rel").unwrap();
    assert_eq!(next(), ev("/be/vif/3", "vif"));
    assert_eq!(next(), ev("@releaseDomain", "rel"));
    assert_eq!(next(), None);
    xs.write(NO, "/be/vif/3/0/state", b"4").unwrap();
    xs.write(NO, "/be/other", b"").unwrap();
    assert_eq!(next(), ev("/be/vif/3/0/state", "vif"));
    assert_eq!(next(), None);
    // Removing an ancestor reports the watched path itself.
    xs.rm(NO, "/be").unwrap();
    assert_eq!(next(), ev("/be/vif/3", "vif"));
    // Transactions fire on commit only.
    let tx = xs.transaction_start().unwrap();
    xs.write(tx, "/be/vif/3/1", b"").unwrap();
    assert_eq!(next(), None);
    xs.transaction_end(tx, true).unwrap();
    assert_eq!(next(), ev("/be/vif/3/1", "vif"));
    xs.introduce_domain(DomId(3), 1, 1).unwrap();
    xs.release_domain(DomId(3)).unwrap();
    assert_eq!(next(), ev("@releaseDomain", "rel"));
    xs.unwatch("/be/vif/3", "vif").unwrap();
    xs.write(NO, "/be/vif/3/2", b"").unwrap();
    assert_eq!(next(), None);
    assert_eq!(errno(xs.unwatch("/be/vif/3", "vif")), "ENOENT");
}

#[test]
fn read_watch_wakes_up_on_a_write_from_another_thread() {
    let xs = std::sync::Arc::new(MemStore::new());
    xs.watch("/w", "t").unwrap();
    xs.read_watch(None).unwrap();
    let writer = {
        let xs = xs.clone();
        std::thread::spawn(move || xs.write(NO, "/w/x", b"1").unwrap())
    };
    let ev = xs.read_watch(None).unwrap();
    writer.join().unwrap();
    assert_eq!(
        ev,
        Some(WatchEvent {
            path: "/w/x".into(),
            token: "t".into()
        })
    );
}
