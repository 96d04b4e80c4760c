//! What a hostile or unlucky user found (issue 11): stale names, image files that are not
//! files or are huge, long names, leftovers of killed processes, Xenstore failures.

use std::sync::mpsc;
use std::time::Duration;

use super::*;
use crate::hypervisor::{CreateDomain, DomId, GuestKind, Hypervisor, Uuid};

/// Runs `f` on another thread and gives up after `limit`: a test of something that used to
/// hang must fail, not hang.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("did not finish within {limit:?}"))
}

/// Another toolstack on the same host, as another chaos process would be (to be moved to a
/// thread that may never return).
fn twin(w: &World) -> std::sync::Arc<Toolstack> {
    let state = StateDir::open(w.ts.state().root()).expect("state dir");
    std::sync::Arc::new(Toolstack::new(w.sim.clone(), Some(w.xs.clone()), state))
}

/// Creates and destroys bare domains until the next one created gets `target` (domids are
/// reused once the counter wraps, as on Xen).
fn wrap_domids_to(w: &World, target: DomId) {
    let args = CreateDomain {
        kind: GuestKind::Pv,
        handle: Uuid::NIL,
        max_vcpus: 1,
        max_evtchn_port: 1023,
        max_grant_frames: 1,
        max_maptrack_frames: 1,
    };
    loop {
        let d = w.sim.create_domain(&args).expect("create bare domain");
        w.sim.destroy_domain(d).expect("destroy bare domain");
        if d.0 + 1 == target.0 {
            return;
        }
    }
}

/// What a `chaos create` killed after claiming its name leaves: a name entry, no record, and
/// (after a while) its domid given to someone else.
fn stale_name_pointing_at_another_guest(w: &World) -> (DomId, Created) {
    // Not the first domid, so that the one before it is free for the wrap below.
    let first =
        w.ts.create(&config(w, "first", ""), false)
            .expect("create first");
    let web =
        w.ts.create(&config(w, "web", ""), false)
            .expect("create web");
    w.ts.destroy(first.domid).expect("destroy first");
    w.sim.destroy_domain(web.domid).expect("the domain dies");
    // xenstored forgets it, and whoever cleans up removes its entries.
    w.xs.release_domain(web.domid).expect("released");
    w.xs.rm(
        crate::xenstore::TxId::NONE,
        &format!("/local/domain/{}", web.domid.0),
    )
    .expect("rm");
    w.ts.state()
        .remove(web.domid)
        .expect("no record was written");
    wrap_domids_to(w, web.domid);
    let other =
        w.ts.create(&config(w, "other", ""), false)
            .expect("create other");
    assert_eq!(other.domid, web.domid, "the domid was reused");
    (web.domid, other)
}

#[test]
fn a_stale_name_never_resolves_to_the_domain_that_reused_its_domid() {
    let w = world("stalereuse");
    let (_, other) = stale_name_pointing_at_another_guest(&w);
    assert!(
        matches!(w.ts.resolve("web"), Err(ToolstackError::NoSuchDomain(_))),
        "web must not resolve to {} (other's domain)",
        other.domid
    );
    assert_eq!(w.ts.resolve("other").expect("other"), other.domid);
    // The next creation of that name gets it, and list cleans the stale entry.
    let web =
        w.ts.create(&config(&w, "web", ""), false)
            .expect("web again");
    assert_eq!(w.ts.resolve("web").expect("web"), web.domid);
    w.ts.list().expect("list");
    assert_eq!(w.ts.resolve("other").expect("other"), other.domid);
    assert!(w.sim.domain_info(other.domid).is_ok(), "other untouched");
}

#[test]
fn list_cleans_stale_name_entries() {
    let w = world("stalelist");
    let (_, _other) = stale_name_pointing_at_another_guest(&w);
    let names = || {
        std::fs::read_dir(w.ts.state().root().join("names"))
            .expect("index")
            .count()
    };
    assert_eq!(names(), 2, "web's stale entry and other's");
    w.ts.list().expect("list");
    assert_eq!(names(), 1, "only other's entry is left");
}

#[test]
fn names_of_255_bytes_work() {
    let w = world("longname");
    let a = "n".repeat(254) + "a";
    let b = "n".repeat(254) + "b";
    let ga =
        w.ts.create(&config(&w, &a, ""), false)
            .expect("255-byte name");
    let gb =
        w.ts.create(&config(&w, &b, ""), false)
            .expect("another one");
    assert_eq!(w.ts.resolve(&a).expect("resolve a"), ga.domid);
    assert_eq!(w.ts.resolve(&b).expect("resolve b"), gb.domid);
    assert!(matches!(
        w.ts.create(&config(&w, &a, ""), false),
        Err(ToolstackError::NameInUse(_))
    ));
    w.ts.destroy(ga.domid).expect("destroy");
    assert!(w.ts.resolve(&a).is_err());
    assert_eq!(w.ts.resolve(&b).expect("b stays"), gb.domid);
}

#[test]
fn non_regular_kernels_and_ramdisks_are_refused_at_once() {
    let w = world("fifo");
    let fifo = w.scratch.0.join("kernel.fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo");
    let before = leftovers(&w);
    let cases = [
        ("kernel", fifo.clone(), "not a regular file"),
        ("kernel", "/dev/zero".into(), "not a regular file"),
        ("kernel", w.scratch.0.clone(), "not a regular file"),
        ("ramdisk", fifo.clone(), "not a regular file"),
        ("ramdisk", "/dev/zero".into(), "not a regular file"),
    ];
    for (key, path, needle) in cases {
        let cfg = config(&w, "odd", "").with(|s| match key {
            "kernel" => s.kernel = path.clone(),
            _ => s.ramdisk = Some(path.clone()),
        });
        let cfg = cfg.expect("valid config");
        let ts = twin(&w);
        let err =
            within(Duration::from_secs(20), move || ts.create(&cfg, false)).expect_err("refused");
        let text = err.to_string();
        assert!(text.contains(needle), "{key} {}: {text}", path.display());
        assert!(
            text.contains(&path.display().to_string()),
            "names the file: {text}"
        );
        assert_eq!(leftovers(&w), before, "{key} {}", path.display());
    }
}

#[test]
fn images_larger_than_the_guest_or_than_any_kernel_are_refused_before_reading() {
    let w = world("hugeimage");
    let before = leftovers(&w);
    // Sparse files: their size is what counts, reading them would take the time and memory.
    let huge = w.scratch.0.join("huge");
    std::fs::File::create(&huge)
        .and_then(|f| f.set_len(3 << 30))
        .expect("sparse 3 GiB file");
    let big = w.scratch.0.join("big");
    std::fs::File::create(&big)
        .and_then(|f| f.set_len(20 << 20))
        .expect("sparse 20 MiB file");
    for (key, path) in [
        ("kernel", &huge),
        ("ramdisk", &huge),
        ("kernel", &big),
        ("ramdisk", &big),
    ] {
        let cfg = config(&w, "huge", "").with(|s| match key {
            "kernel" => s.kernel = path.clone(),
            _ => s.ramdisk = Some(path.clone()),
        });
        let cfg = cfg.expect("valid config");
        let ts = twin(&w);
        let err =
            within(Duration::from_secs(20), move || ts.create(&cfg, false)).expect_err("refused");
        let text = err.to_string();
        assert!(
            text.contains("too large"),
            "{key} {}: {text}",
            path.display()
        );
        assert_eq!(leftovers(&w), before);
    }
}

#[test]
fn temporary_files_of_killed_processes_are_removed_where_records_are_scanned() {
    let w = world("tmpfiles");
    let root = w.ts.state().root().to_path_buf();
    // What kill -9 during a write left (names of older versions, and of a dead pid).
    let left = [
        root.join("domains/7.json.tmp"),
        root.join("shells/0f1e2d3c-0000-4000-8000-000000000000.json.tmp"),
        root.join("domains/8.json.999999999.tmp"),
    ];
    for p in &left {
        std::fs::write(p, b"").expect("write leftover");
    }
    w.ts.list().expect("list");
    w.ts.state().shells().expect("shells");
    for p in &left {
        assert!(!p.exists(), "{} should be gone", p.display());
    }
}

#[test]
fn a_failure_at_any_xenstore_request_of_a_creation_rolls_back_everything() {
    use crate::xenstore::XsFault;
    let w = world("xsrollback");
    let cfg = config(&w, "fragile", "vif = ['bridge=xenbr0']");
    // (The first vif leaves dom0's empty backend/vif directory, as libxl does.)
    w.xs.arm(XsFault::Request(u64::MAX));
    let ok = w.ts.create(&cfg, false).expect("create");
    let requests = w.xs.requests();
    w.xs.disarm();
    w.ts.destroy(ok.domid).expect("destroy");
    let before = leftovers(&w);
    assert!(
        requests > 5,
        "a creation makes more than {requests} requests"
    );
    for n in 0..requests {
        w.xs.arm(XsFault::Request(n));
        let result = w.ts.create(&cfg, false);
        w.xs.disarm();
        match result {
            Err(_) => assert_eq!(leftovers(&w), before, "after a failure at request {n}"),
            Ok(c) => panic!("creation survived a failure at Xenstore request {n}: {c:?}"),
        }
    }
}

/// When the Xenstore removal of a destroy fails, the domain is gone all the same (it is
/// destroyed first) and the command reports the error; the record stays, so the leftovers
/// (Xenstore entries, introduction, record, name) are removed by the next `chaos list`.
#[test]
fn a_failure_at_any_xenstore_request_of_a_destroy_leaves_nothing_after_the_next_list() {
    use crate::xenstore::XsFault;
    let w = world("xsdestroy");
    let cfg = config(&w, "doomed", "vif = ['bridge=xenbr0']");
    let g = w.ts.create(&cfg, false).expect("create");
    w.xs.arm(XsFault::Request(u64::MAX));
    w.ts.destroy(g.domid).expect("destroy");
    let requests = w.xs.requests();
    w.xs.disarm();
    let before = leftovers(&w);
    assert!(requests >= 3, "a destroy makes {requests} requests");
    for n in 0..requests {
        let g = w.ts.create(&cfg, false).expect("create");
        w.xs.arm(XsFault::Request(n));
        let result = w.ts.destroy(g.domid);
        w.xs.disarm();
        assert!(result.is_err(), "destroy survived a failure at request {n}");
        assert!(
            w.sim.domain_info(g.domid).is_err(),
            "the domain is gone even when Xenstore failed (request {n})"
        );
        w.ts.list().expect("list");
        assert_eq!(
            leftovers(&w),
            before,
            "after a failure at request {n} and a list"
        );
    }
}

/// The pid of a process that has exited.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().expect("spawn");
    let pid = child.id();
    child.wait().expect("wait");
    pid
}

/// What `chaos create` killed with SIGKILL midway leaves: its pending record, its domain (with
/// the guest's handle), maybe its name.
fn half_made(w: &World, name: &str) -> DomId {
    let uuid = random_uuid();
    w.ts.state()
        .save_pending(&PendingCreation {
            uuid,
            name: name.into(),
            pid: dead_pid(),
            domid: None,
        })
        .expect("pending record");
    let shell =
        w.ts.prepare_tagged(&Flavor::of(&config(w, name, "")), uuid)
            .expect("prepare");
    let domid = shell.domid();
    w.ts.state().claim_name(name, domid, uuid).expect("claim");
    domid
}

#[test]
fn a_creation_killed_midway_is_undone_by_the_next_creation_or_list() {
    let w = world("killed");
    let before = leftovers(&w);
    let dom = half_made(&w, "half");
    assert_ne!(leftovers(&w), before);
    // The name is the half-made guest's until someone cleans up: the next creation does.
    let g =
        w.ts.create(&config(&w, "half", ""), false)
            .expect("name free again");
    assert!(
        w.sim.domain_info(dom).is_err(),
        "the half-made domain is destroyed"
    );
    w.ts.destroy(g.domid).expect("destroy");
    assert_eq!(leftovers(&w), before);
    // And list does.
    let dom = half_made(&w, "half2");
    w.ts.list().expect("list");
    assert!(
        w.sim.domain_info(dom).is_err(),
        "the half-made domain is destroyed"
    );
    assert_eq!(leftovers(&w), before);
    assert!(w.ts.state().pending().expect("pending").is_empty());
}
