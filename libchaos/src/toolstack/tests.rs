//! The split toolstack on the simulated hypervisor: creation, the pool, lifecycle, and rollback
//! when any step fails.

use super::*;
use crate::config::{parse_xl, Action, DomainConfig};
use crate::hypervisor::sim::{Fault, SimConfig};
use crate::hypervisor::ShutdownReason;
use std::time::Duration;

mod harden;
mod noxs;
mod pvh;
mod vbd;
mod vif;

use crate::testing::{sim_host, SimHost};

type World = SimHost;

fn world_with(tag: &str, host: SimConfig) -> World {
    sim_host(tag, host)
}

fn world(tag: &str) -> World {
    world_with(tag, SimConfig::default())
}

fn config(w: &World, name: &str, extra: &str) -> DomainConfig {
    let text = format!(
        "name = \"{name}\"\nkernel = \"{}\"\nmemory = 16\n{extra}\n",
        w.kernel.display()
    );
    parse_xl(&text, "test.cfg", &[])
        .expect("valid config")
        .config
}

/// Everything a creation could leave behind, to compare before and after.
#[derive(Debug, PartialEq)]
struct Leftovers {
    guests: usize,
    free_pages: u64,
    evtchns: usize,
    xenstore_paths: Vec<String>,
    introduced: usize,
    records: usize,
    names: usize,
    noxs_records: usize,
    attached: usize,
}

fn leftovers(w: &World) -> Leftovers {
    Leftovers {
        guests: w.sim.guest_count(),
        free_pages: w.sim.free_pages(),
        evtchns: w.sim.total_evtchns(),
        xenstore_paths: w.xs.paths(),
        introduced: w.xs.introduced_domains().len(),
        records: w.ts.state().all().expect("records").len(),
        names: std::fs::read_dir(w.ts.state().root().join("names"))
            .expect("name index")
            .count(),
        noxs_records: std::fs::read_dir(w.ts.state().root().join("noxs")).map_or(0, |d| d.count()),
        attached: w.backend.attached.lock().expect("lock").len(),
    }
}

fn read(w: &World, path: &str) -> Option<String> {
    w.xs.read(crate::xenstore::TxId::NONE, path)
        .expect("xenstore read")
        .map(|v| String::from_utf8_lossy(&v).into_owned())
}

#[test]
fn create_runs_a_guest_with_its_xenstore_entries_record_and_timings() {
    let w = world("create");
    let cfg = config(&w, "web", "");
    let created = w.ts.create(&cfg, false).expect("create");
    assert_eq!(created.name, "web");
    assert_eq!(created.path, CreationPath::Direct);
    for phase in [
        "create_domain",
        "populate",
        "evtchn",
        "load_image",
        "build",
        "devices",
        "introduce",
        "unpause",
    ] {
        assert!(
            created.timings.get(phase).is_some(),
            "phase {phase} missing"
        );
    }
    let info = w.sim.domain_info(created.domid).expect("domain exists");
    assert!(!info.paused, "guest should run");
    assert_eq!(info.tot_pages, 16 * 256);
    let dom = format!("/local/domain/{}", created.domid.0);
    assert_eq!(read(&w, &format!("{dom}/name")).as_deref(), Some("web"));
    assert_eq!(
        read(&w, &format!("{dom}/memory/target")).as_deref(),
        Some("16384")
    );
    assert!(read(&w, &format!("{dom}/console/port")).is_some());
    assert_eq!(w.xs.introduced_domains(), vec![created.domid]);
    let record =
        w.ts.state()
            .load(created.domid)
            .expect("load")
            .expect("record");
    assert_eq!(record.config, cfg);
    assert_eq!(w.ts.resolve("web").expect("by name"), created.domid);
    assert_eq!(
        w.ts.resolve(&created.domid.to_string()).expect("by id"),
        created.domid
    );
}

#[test]
fn paused_creation_stays_paused_until_unpaused() {
    let w = world("paused");
    let created = w.ts.create(&config(&w, "p", ""), true).expect("create");
    assert!(created.paused);
    assert!(w.sim.domain_info(created.domid).expect("info").paused);
    assert!(created.timings.get("unpause").is_none());
    w.ts.unpause(created.domid).expect("unpause");
    assert!(!w.sim.domain_info(created.domid).expect("info").paused);
    w.ts.pause(created.domid).expect("pause");
    assert!(w.sim.domain_info(created.domid).expect("info").paused);
}

#[test]
fn destroy_leaves_nothing_behind() {
    let w = world("destroy");
    let before = leftovers(&w);
    assert!(!w.ts.state().has_guests().expect("state"), "no guest yet");
    let created = w.ts.create(&config(&w, "gone", ""), false).expect("create");
    assert_ne!(leftovers(&w), before);
    assert!(w.ts.state().has_guests().expect("state"), "one guest");
    assert_eq!(
        w.ts.state().recorded_domids().expect("state"),
        vec![created.domid],
        "the record's domid, from its file name"
    );
    w.ts.destroy(created.domid).expect("destroy");
    assert_eq!(leftovers(&w), before);
    assert!(!w.ts.state().has_guests().expect("state"), "none left");
    assert!(w.ts.state().recorded_domids().expect("state").is_empty());
    assert!(matches!(
        w.ts.destroy(created.domid),
        Err(ToolstackError::NoSuchDomain(_))
    ));
}

#[test]
fn a_failure_at_any_hypervisor_call_rolls_back_everything() {
    let w = world("rollback");
    let cfg = config(&w, "fragile", "");
    // Count the calls of one successful creation, then fail each of them in turn.
    let before = leftovers(&w);
    w.sim.arm(Fault::Call(u64::MAX));
    let ok = w.ts.create(&cfg, false).expect("create");
    let calls = w.sim.calls();
    w.ts.destroy(ok.domid).expect("destroy");
    assert_eq!(leftovers(&w), before);
    assert!(calls > 10, "a creation makes more than {calls} calls");
    for n in 0..calls {
        w.sim.arm(Fault::Call(n));
        let result = w.ts.create(&cfg, false);
        w.sim.disarm();
        match result {
            Err(_) => assert_eq!(leftovers(&w), before, "after a failure at call {n}"),
            // Only calls that merely read (name lookups) may fail without failing the creation.
            Ok(c) => panic!("creation survived a failure at call {n}: {c:?}"),
        }
    }
}

#[test]
fn running_out_of_host_memory_is_a_clean_error() {
    let w = world_with(
        "oom",
        SimConfig {
            host_mib: 64,
            dom0_mib: 32,
            nr_cpus: 2,
        },
    );
    let before = leftovers(&w);
    let err =
        w.ts.create(&config(&w, "big", "memory = 48"), false)
            .unwrap_err();
    assert!(
        matches!(
            err,
            ToolstackError::HostMemory {
                needed_mib: 48,
                free_mib: 32
            }
        ),
        "{err}"
    );
    assert_eq!(leftovers(&w), before);
    // What fits still works afterwards.
    w.ts.create(&config(&w, "small", "memory = 16"), false)
        .expect("fits");
}

#[test]
fn names_are_unique_and_a_clash_creates_nothing() {
    let w = world("names");
    w.ts.create(&config(&w, "same", ""), false).expect("first");
    let before = leftovers(&w);
    let err = w.ts.create(&config(&w, "same", ""), false).unwrap_err();
    assert!(
        matches!(err, ToolstackError::NameInUse(ref n) if n == "same"),
        "{err}"
    );
    assert_eq!(leftovers(&w), before);
}

#[test]
fn a_kernel_that_is_not_an_image_is_refused_and_rolled_back() {
    let w = world("badkernel");
    let bad = w.scratch.0.join("not-a-kernel");
    std::fs::write(&bad, b"#!/bin/sh\necho hello\n").expect("write");
    let before = leftovers(&w);
    let cfg = config(&w, "bad", "")
        .with(|s| s.kernel = bad.clone())
        .expect("valid");
    let err = w.ts.create(&cfg, false).unwrap_err();
    assert!(matches!(err, ToolstackError::Image(_)), "{err}");
    assert!(
        err.to_string().contains("not-a-kernel"),
        "error names the file: {err}"
    );
    assert_eq!(leftovers(&w), before);
}

#[test]
fn a_prepared_shell_runs_only_execute() {
    let w = world("pool");
    let cfg = config(&w, "fast", "");
    let shell = w.ts.prepare(&Flavor::of(&cfg)).expect("prepare");
    assert_eq!(w.sim.guest_count(), 1);

    let created = w.ts.execute_pooled(shell, &cfg, false).expect("execute");
    assert_eq!(created.path, CreationPath::Pool);
    assert!(
        created.timings.get("populate").is_none(),
        "prepare ran before, not now"
    );

    // Without a shell, a creation goes the direct way.
    let other = config(&w, "other", "memory = 32");
    let created = w.ts.create(&other, false).expect("create");
    assert_eq!(created.path, CreationPath::Direct);
    assert_eq!(w.sim.guest_count(), 2, "the two guests");
}

#[test]
fn a_shell_of_another_flavor_is_refused_and_destroyed() {
    let w = world("mismatch");
    let shell =
        w.ts.prepare(&Flavor::of(&config(&w, "a", "memory = 32")))
            .expect("prepare");
    let err =
        w.ts.execute(shell, &config(&w, "b", ""), false)
            .unwrap_err();
    assert!(
        matches!(err, ToolstackError::FlavorMismatch { .. }),
        "{err}"
    );
    assert_eq!(w.sim.guest_count(), 0);
}

#[test]
fn shutdown_asks_the_guest_and_reap_applies_the_configured_action() {
    let w = world("reap");
    let gone = w.ts.create(&config(&w, "gone", ""), false).expect("create");
    let kept =
        w.ts.create(&config(&w, "kept", "on_poweroff = \"preserve\""), false)
            .expect("create");
    let again =
        w.ts.create(&config(&w, "again", "on_reboot = \"restart\""), false)
            .expect("create");

    w.ts.shutdown(gone.domid, ShutdownKind::Poweroff, None)
        .expect("shutdown");
    let path = format!("/local/domain/{}/control/shutdown", gone.domid.0);
    assert_eq!(read(&w, &path).as_deref(), Some("poweroff"));
    assert!(
        w.ts.reap().expect("reap").is_empty(),
        "nobody has shut down yet"
    );

    // The guests react, as a PV guest watching control/shutdown would.
    w.sim
        .guest_shutdown(gone.domid, ShutdownReason::Poweroff)
        .expect("guest");
    w.sim
        .guest_shutdown(kept.domid, ShutdownReason::Poweroff)
        .expect("guest");
    w.sim
        .guest_shutdown(again.domid, ShutdownReason::Reboot)
        .expect("guest");
    let mut reaped = w.ts.reap().expect("reap");
    reaped.sort_by_key(|(d, _)| *d);
    assert_eq!(
        reaped,
        vec![
            (gone.domid, Action::Destroy),
            (kept.domid, Action::Preserve),
            (again.domid, Action::Restart)
        ]
    );
    assert!(w.sim.domain_info(gone.domid).is_err(), "destroyed");
    assert!(w
        .sim
        .domain_info(kept.domid)
        .expect("kept")
        .shutdown
        .is_some());
    let restarted = w.ts.resolve("again").expect("restarted under its name");
    assert_ne!(restarted, again.domid);
}

#[test]
fn list_shows_dom0_and_guests_with_xl_state_letters() {
    let w = world("list");
    let a = w.ts.create(&config(&w, "a", ""), false).expect("create");
    let b = w.ts.create(&config(&w, "b", ""), true).expect("create");
    let list = w.ts.list().expect("list");
    let names: Vec<&str> = list.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["Domain-0", "a", "b"]);
    let find = |id| list.iter().find(|d| d.domid == id).expect("listed");
    assert_eq!(find(a.domid).state, "-b----");
    assert_eq!(find(b.domid).state, "--p---");
    assert_eq!(find(a.domid).memory_mib, 16);
    assert!(find(a.domid).chaos);
}

#[test]
fn the_same_kernel_is_parsed_once() {
    let w = world("cache");
    for i in 0..5 {
        w.ts.create(&config(&w, &format!("g{i}"), ""), true)
            .expect("create");
    }
    assert_eq!(w.ts.images.len(), 1);
}

#[test]
fn unsupported_features_are_refused_before_touching_xen() {
    let w = world("unsupported");
    let before = leftovers(&w);
    let err =
        w.ts.create(&config(&w, "net", "vif = ['backend=netvm']"), false)
            .unwrap_err();
    assert!(err.to_string().contains("backend=netvm"), "{err}");
    let err =
        w.ts.create(&config(&w, "net", "vif = ['', 'vifname=web0']"), false)
            .unwrap_err();
    assert!(err.to_string().contains("vif 1: vifname=web0"), "{err}");
    let err =
        w.ts.create(
            &config(
                &w,
                "disk",
                "disk = ['/dev/vg/g,raw,xvda,rw,backend=storvm']",
            ),
            false,
        )
        .unwrap_err();
    assert!(err.to_string().contains("disk 0: backend=storvm"), "{err}");
    let err =
        w.ts.create(&config(&w, "nx", "chaos_control_plane = \"noxs\""), false)
            .unwrap_err();
    assert!(err.to_string().contains("no chaos NoXS note"), "{err}");
    assert_eq!(leftovers(&w), before);
}

#[test]
fn a_name_whose_domain_died_behind_chaos_is_free_again() {
    let w = world("stalename");
    let first =
        w.ts.create(&config(&w, "again", ""), false)
            .expect("create");
    // The domain goes away without chaos (xl destroy, a crash of the host's toolstack...).
    w.sim
        .destroy_domain(first.domid)
        .expect("destroy behind chaos's back");
    let second =
        w.ts.create(&config(&w, "again", ""), false)
            .expect("name is free");
    assert_eq!(w.ts.resolve("again").expect("resolve"), second.domid);
    w.ts.destroy(second.domid).expect("destroy");
    let names = std::fs::read_dir(w.ts.state().root().join("names")).expect("index");
    assert_eq!(names.count(), 0, "the index forgets destroyed guests");
}

#[test]
fn a_guest_claimed_by_another_reaper_is_left_to_it() {
    let w = world("reapclaim");
    let g =
        w.ts.create(&config(&w, "once", "on_reboot = \"restart\""), false)
            .expect("create");
    w.sim
        .guest_shutdown(g.domid, ShutdownReason::Reboot)
        .expect("guest");
    // Another reaper (chaosd, `shutdown --wait`) got there first.
    assert!(w.ts.state().claim_for_reaping(g.domid).expect("claim"));
    assert!(
        !w.ts.state().claim_for_reaping(g.domid).expect("claim"),
        "only one claim wins"
    );
    assert!(
        w.ts.reap().expect("reap").is_empty(),
        "nothing left for this reaper"
    );
    assert!(w.sim.domain_info(g.domid).is_ok(), "not destroyed twice");
    assert_eq!(w.sim.guest_count(), 1, "not restarted twice");
}

/// The reaper's sweep reads only the records of domains that are gone (not all of them), and
/// forgets those.
#[test]
fn the_reapers_sweep_forgets_guests_destroyed_behind_the_toolstack() {
    use std::sync::atomic::AtomicBool;
    let w = world("sweep");
    let gone = w.ts.create(&config(&w, "gone", ""), false).expect("create");
    let kept = w.ts.create(&config(&w, "kept", ""), false).expect("create");
    w.sim
        .destroy_domain(gone.domid)
        .expect("destroyed behind chaos");
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let r = s.spawn(|| {
            w.ts.run_reaper(&stop, None, Duration::from_millis(1), |_| {})
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while w.ts.state().recorded_domids().expect("state").len() > 1 {
            assert!(std::time::Instant::now() < deadline, "swept within 20 s");
            std::thread::sleep(Duration::from_millis(5));
        }
        stop.store(true, std::sync::atomic::Ordering::Release);
        r.join().expect("reaper");
    });
    assert_eq!(
        w.ts.state().recorded_domids().expect("state"),
        vec![kept.domid]
    );
    assert!(w.ts.resolve("gone").is_err(), "its name is free");
    w.ts.destroy(kept.domid).expect("destroy");
}

#[test]
fn the_reaper_is_woken_by_domain_exceptions_and_leaves_when_idle() {
    use std::sync::atomic::AtomicBool;
    let w = world("reaper");
    let a = w.ts.create(&config(&w, "a", ""), false).expect("create");
    let kept =
        w.ts.create(&config(&w, "kept", "on_poweroff = \"preserve\""), false)
            .expect("create");
    let lock = reaper::try_lock(w.ts.state().root())
        .expect("lock")
        .expect("free");
    assert!(
        reaper::running(w.ts.state().root()),
        "the lock says who reaps"
    );
    let stop = AtomicBool::new(false);
    let reaped = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        let r = s.spawn(|| {
            w.ts.run_reaper(&stop, None, Duration::from_secs(3600), |done| {
                reaped.lock().unwrap().extend_from_slice(done)
            })
        });
        // The sim's VIRQ_DOM_EXC wakes it at once (its poll is an hour).
        w.sim
            .guest_shutdown(a.domid, ShutdownReason::Poweroff)
            .expect("poweroff");
        w.sim
            .guest_shutdown(kept.domid, ShutdownReason::Poweroff)
            .expect("poweroff");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while reaped.lock().unwrap().len() < 2 {
            assert!(std::time::Instant::now() < deadline, "reaped within 20 s");
            std::thread::sleep(Duration::from_millis(5));
        }
        stop.store(true, std::sync::atomic::Ordering::Release);
        assert_eq!(r.join().expect("reaper"), reaper::Source::Virq);
    });
    let mut done = reaped.into_inner().unwrap();
    done.sort_by_key(|(d, _)| *d);
    assert_eq!(
        done,
        vec![(a.domid, Action::Destroy), (kept.domid, Action::Preserve)]
    );
    assert!(w.sim.domain_info(a.domid).is_err(), "destroyed");
    assert!(w.sim.domain_info(kept.domid).is_ok(), "preserved");
    w.ts.destroy(kept.domid).expect("destroy");

    // With nothing left to reap, a reaper started by `chaos create` leaves.
    let stop = AtomicBool::new(false);
    w.ts.run_reaper(
        &stop,
        Some(Duration::ZERO),
        Duration::from_millis(1),
        |_| {},
    );
    drop(lock);
    assert!(!reaper::running(w.ts.state().root()));
}
