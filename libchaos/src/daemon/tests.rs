//! A whole daemon on the simulated hypervisor, over a socket in a scratch directory.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::config::parse_xl;
use crate::hypervisor::sim::{SimConfig, SimHypervisor};
use crate::hypervisor::{DomId, Hypervisor};
use crate::testing::{sim_host, Scratch};
use crate::toolstack::{CreationPath, ShellRecord};
use crate::xenstore::Xenstore;

/// Generous: the workers only wait on each other and the sim.
const FILL: Duration = Duration::from_secs(30);

struct World {
    scratch: Scratch,
    sim: Arc<SimHypervisor>,
    xs: Arc<crate::xenstore::MemStore>,
    ts: Arc<Toolstack>,
    kernel: PathBuf,
}

fn world(tag: &str) -> World {
    world_with(tag, SimConfig::default())
}

fn world_with(tag: &str, host: SimConfig) -> World {
    let h = sim_host(&format!("chaosd-{tag}"), host);
    World {
        scratch: h.scratch,
        sim: h.sim,
        xs: h.xs,
        ts: Arc::new(h.ts),
        kernel: h.kernel,
    }
}

impl World {
    fn socket(&self) -> PathBuf {
        self.scratch.0.join("chaosd.sock")
    }

    fn start(&self, flavors: &[(u64, usize)], reserve_mib: u64) -> Daemon {
        Daemon::start(
            self.ts.clone(),
            DaemonConfig {
                socket: self.socket(),
                flavors: flavors
                    .iter()
                    .map(|&(mib, target)| FlavorTarget {
                        flavor: flavor(mib),
                        target,
                        ahead: None,
                    })
                    .collect(),
                reserve_mib,
                workers: 2,
                reap_interval: None,
            },
        )
        .expect("daemon starts")
    }

    fn config(&self, name: &str, memory_mib: u64) -> DomainConfig {
        let text = format!(
            "name = \"{name}\"\nkernel = \"{}\"\nmemory = {memory_mib}\n",
            self.kernel.display()
        );
        parse_xl(&text, "test.cfg", &[])
            .expect("valid config")
            .config
    }

    fn client(&self) -> Client {
        Client::connect(&self.socket()).expect("connect")
    }

    fn shell_records(&self) -> Vec<ShellRecord> {
        self.ts.state().shells().expect("shell records")
    }
}

fn flavor(memory_mib: u64) -> Flavor {
    Flavor {
        kind: crate::hypervisor::GuestKind::Pv,
        memory_mib,
        maxmem_mib: memory_mib,
        max_vcpus: 1,
        control_plane: crate::config::PlaneKind::Xenstore,
        image: None,
    }
}

fn ready(d: &Daemon, memory_mib: u64) -> usize {
    d.status()
        .flavors
        .iter()
        .find(|f| f.flavor == flavor(memory_mib))
        .map_or(0, |f| f.ready)
}

/// Sends raw bytes on a fresh connection and reads one reply line ("" if the daemon hung up).
fn raw(w: &World, bytes: &[u8]) -> String {
    let mut s = UnixStream::connect(w.socket()).expect("connect");
    s.write_all(bytes).expect("write");
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).expect("read reply");
    line
}

fn is_error(reply: &str, needle: &str) -> bool {
    let v: serde_json::Value = serde_json::from_str(reply).unwrap_or_default();
    v["result"] == "error"
        && v["message"]
            .as_str()
            .is_some_and(|m| m.to_lowercase().contains(&needle.to_lowercase()))
}

#[test]
fn the_pool_is_refilled_to_its_target_after_every_take() {
    let w = world("refill");
    let d = w.start(&[(16, 3)], 0);
    assert!(d.wait_filled(FILL), "pool filled");
    assert_eq!(w.sim.guest_count(), 3, "three shells");
    assert_eq!(w.shell_records().len(), 3, "each shell has a record");
    let listed = w.ts.list().expect("list");
    assert_eq!(
        listed.iter().filter(|x| x.name == "(shell)").count(),
        3,
        "shells are listed as such: {listed:?}"
    );

    let mut c = w.client();
    for i in 0..5 {
        let created = c
            .create(&w.config(&format!("g{i}"), 16), false, false)
            .expect("create");
        assert_eq!(created.path, CreationPath::Pool, "creation {i}");
        assert_eq!(created.via, Via::Daemon);
        assert!(
            created.timings.get("populate").is_none(),
            "no prepare on the way"
        );
        assert!(!w.sim.domain_info(created.domid).expect("guest").paused);
        assert!(d.wait_filled(FILL), "refilled after creation {i}");
    }
    let status = c.status().expect("status");
    let f = &status.flavors[0];
    assert_eq!((f.ready, f.target, f.taken, f.prepared), (3, 3, 5, 8));
    assert_eq!(status.pool_create.count, 5);
    assert_eq!(status.direct_create.count, 0);
    assert!(status.prepare.count >= 8);
    assert_eq!(w.sim.guest_count(), 8, "5 guests and 3 shells");
    assert_eq!(
        w.shell_records().len(),
        3,
        "records of taken shells are gone"
    );

    // A flavor without a pool is created directly.
    let created = c.create(&w.config("big", 32), true, false).expect("direct");
    assert_eq!(created.path, CreationPath::Direct);
    assert!(created.paused);

    assert_eq!(d.shutdown(), 3, "the unused shells are destroyed");
    assert_eq!(w.sim.guest_count(), 6, "the guests stay");
    assert!(w.shell_records().is_empty());
    assert!(!w.socket().exists(), "socket removed");
    // A client still connected is told, not served by a half-stopped daemon.
    let err = c.status().unwrap_err();
    assert!(err.to_string().contains("shutting down"), "{err}");
}

/// Shells destroyed behind chaosd's back (`xl destroy` of a domain without a name) do not fail
/// a creation: chaosd forgets them and creates the guest without them.
#[test]
fn shells_destroyed_behind_the_daemon_are_passed_over() {
    let w = world("vanished");
    let d = w.start(&[(16, 2)], 0);
    assert!(d.wait_filled(FILL), "pool filled");
    for r in w.shell_records() {
        w.sim
            .destroy_domain(r.domid.expect("a shell's domain"))
            .expect("destroyed behind chaosd");
    }
    let mut c = w.client();
    // From a shell refilled meanwhile, or directly: either way a guest.
    let created = c.create(&w.config("g", 16), true, false).expect("create");
    assert!(w.sim.domain_info(created.domid).is_ok());
    assert_eq!(w.ts.resolve("g").expect("named"), created.domid);
    assert!(d.wait_filled(FILL), "refilled");
    let created = c.create(&w.config("h", 16), true, false).expect("create");
    assert_eq!(created.path, CreationPath::Pool, "new shells are used");
    assert!(d.wait_filled(FILL), "refilled");
    assert_eq!(d.shutdown(), 2);
    assert_eq!(w.sim.guest_count(), 2, "the two guests");
    assert!(w.shell_records().is_empty());
}

/// Client threads accept their own clients: fresh connections, one after another and many
/// at once (more than the threads kept waiting), are all answered, and none is accepted
/// once the daemon has stopped.
#[test]
fn fresh_connections_are_each_accepted_and_served() {
    let w = Arc::new(world("fresh"));
    let d = w.start(&[(4, 1)], 0);
    for _ in 0..30 {
        assert_eq!(w.client().status().expect("status").flavors.len(), 1);
    }
    let burst: Vec<_> = (0..12)
        .map(|_| {
            let w = w.clone();
            std::thread::spawn(move || w.client().status().map(|s| s.flavors.len()))
        })
        .collect();
    for h in burst {
        assert_eq!(h.join().expect("client thread").expect("status"), 1);
    }
    let socket = w.socket();
    d.shutdown();
    assert!(!socket.exists(), "the socket is removed");
    assert!(UnixStream::connect(&socket).is_err(), "nothing accepts");
}

#[test]
fn many_concurrent_clients_are_all_served() {
    let w = Arc::new(world("concurrent"));
    let d = w.start(&[(4, 4)], 0);
    assert!(d.wait_filled(FILL));
    const THREADS: usize = 16;
    const EACH: usize = 20;
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let w = w.clone();
            std::thread::spawn(move || {
                let mut c = w.client();
                (0..EACH)
                    .map(|i| c.create(&w.config(&format!("c{t}-{i}"), 4), true, false))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut domids = Vec::new();
    for h in handles {
        for r in h.join().expect("client thread") {
            domids.push(r.expect("every creation succeeds").domid);
        }
    }
    domids.sort();
    domids.dedup();
    assert_eq!(domids.len(), THREADS * EACH, "distinct domains");
    let status = d.status();
    assert_eq!(
        status.pool_create.count + status.direct_create.count,
        THREADS * EACH
    );
    assert!(status.pool_create.count >= 4, "the ready shells were used");
    for t in 0..THREADS {
        for i in 0..EACH {
            w.ts.resolve(&format!("c{t}-{i}")).expect("guest exists");
        }
    }
    let shells = d.shutdown();
    assert_eq!(
        w.sim.guest_count(),
        THREADS * EACH,
        "{shells} shells destroyed, guests kept"
    );
}

/// Each client is handed a thread started before it came; clients that hold their thread
/// (connected, saying nothing) must not keep the next ones waiting.
#[test]
fn clients_that_hold_their_connection_do_not_hold_up_the_next() {
    let w = Arc::new(world("held"));
    let d = w.start(&[], 0);
    let quiet: Vec<UnixStream> = (0..3)
        .map(|_| UnixStream::connect(w.socket()).expect("connect"))
        .collect();
    for i in 0..5 {
        let reply = within(Duration::from_secs(10), {
            let w = w.clone();
            move || raw(&w, b"{\"op\":\"status\"}\n")
        });
        assert!(
            reply.contains("\"result\":\"status\""),
            "request {i}: {reply}"
        );
    }
    drop(quiet);
    d.shutdown();
}

/// A creation from a shell takes the shell's handle as its UUID and writes no pending record:
/// if chaosd dies before the guest's record is written, the next chaosd finds the domain by
/// the shell's record and removes it with what it published.
#[test]
fn a_creation_from_a_shell_that_a_crash_cut_short_is_undone_by_the_next_daemon() {
    let w = world("reclaim-half");
    let paths = w.xs.paths();
    let handle = crate::toolstack::random_uuid();
    let shell = w.ts.prepare_tagged(&flavor(4), handle).expect("prepare");
    let dom = shell.domid();
    w.ts.state()
        .save_shell(&ShellRecord {
            uuid: handle,
            domid: Some(dom),
            flavor: flavor(4),
            pid: 1,
            created_ms: 0,
        })
        .expect("save");
    let created =
        w.ts.execute_pooled(shell, &w.config("cut", 4), true)
            .expect("execute");
    assert_eq!(
        w.sim.domain_info(dom).expect("info").handle,
        handle,
        "the shell's handle"
    );
    assert!(
        created.timings.get("pending").is_none(),
        "no pending record"
    );
    assert!(w.ts.state().pending().expect("pending").is_empty());
    // The crash came right before the guest's record: published, named, not recorded.
    w.ts.state().remove(dom).expect("remove the record");
    assert_ne!(w.xs.paths(), paths, "its Xenstore entries are there");

    let d = w.start(&[], 0);
    assert_eq!(d.reclaimed(), 1);
    assert!(w.sim.domain_info(dom).is_err(), "destroyed");
    assert_eq!(w.xs.paths(), paths, "its Xenstore entries removed");
    assert!(w.shell_records().is_empty());
    // The name is free again.
    let again =
        w.ts.create(&w.config("cut", 4), true)
            .expect("the name is free");
    w.ts.destroy(again.domid).expect("destroy");
    d.shutdown();
}

#[test]
fn a_new_daemon_reclaims_the_shells_of_one_that_crashed() {
    let w = world("reclaim");
    let d = w.start(&[(4, 3)], 0);
    assert!(d.wait_filled(FILL));
    let guest = w
        .client()
        .create(&w.config("survivor", 4), false, false)
        .expect("create");
    assert!(d.wait_filled(FILL));
    d.abandon();
    assert_eq!(w.sim.guest_count(), 4, "3 shells left behind + the guest");

    // A crash between creating the domain and recording its id: the record has only the handle.
    let handle = crate::toolstack::random_uuid();
    let pending = w.ts.prepare_tagged(&flavor(4), handle).expect("prepare");
    let pending_dom = pending.domid();
    w.ts.state()
        .save_shell(&ShellRecord {
            uuid: handle,
            domid: None,
            flavor: flavor(4),
            pid: 1,
            created_ms: 0,
        })
        .expect("save");
    // A record whose domain id now belongs to a guest (handle differs): the guest must stay.
    w.ts.state()
        .save_shell(&ShellRecord {
            uuid: crate::hypervisor::Uuid([7; 16]),
            domid: Some(guest.domid),
            flavor: flavor(4),
            pid: 1,
            created_ms: 0,
        })
        .expect("save");
    // A record of a domain that is gone.
    w.ts.state()
        .save_shell(&ShellRecord {
            uuid: crate::hypervisor::Uuid([9; 16]),
            domid: Some(DomId(999)),
            flavor: flavor(4),
            pid: 1,
            created_ms: 0,
        })
        .expect("save");
    assert_eq!(w.sim.guest_count(), 5);

    let d = w.start(&[], 0);
    assert_eq!(
        d.reclaimed(),
        4,
        "three ready shells and the half-recorded one"
    );
    assert!(
        w.sim.domain_info(pending_dom).is_err(),
        "pending shell destroyed"
    );
    assert_eq!(w.sim.guest_count(), 1, "only the guest is left");
    assert!(w.sim.domain_info(guest.domid).is_ok(), "the guest survived");
    assert!(w.shell_records().is_empty(), "all records handled");
    assert_eq!(d.status().reclaimed, 4);
    assert_eq!(d.shutdown(), 0);
}

#[test]
fn only_one_daemon_runs_per_runtime_directory() {
    let w = world("twice");
    let d = w.start(&[(4, 1)], 0);
    let again = Daemon::start(
        w.ts.clone(),
        DaemonConfig {
            socket: w.scratch.0.join("other.sock"),
            flavors: Vec::new(),
            reserve_mib: 0,
            workers: 1,
            reap_interval: None,
        },
    );
    assert!(matches!(again, Err(DaemonError::AlreadyRunning(_))));
    assert!(
        d.wait_filled(FILL),
        "the first one's shells were not reclaimed"
    );
    assert_eq!(d.shutdown(), 1);
}

#[test]
fn bad_requests_get_error_replies_and_the_daemon_keeps_serving() {
    let w = world("bad");
    let d = w.start(&[(16, 2)], 0);
    assert!(d.wait_filled(FILL));

    assert!(is_error(&raw(&w, b"hello\n"), "invalid request"));
    assert!(is_error(&raw(&w, b"{\"op\":\n"), "invalid request"));
    assert!(is_error(&raw(&w, b"[1,2,3]\n"), "invalid request"));
    assert!(is_error(&raw(&w, b"\xff\xfe\n"), "invalid request"));
    assert!(is_error(
        &raw(&w, b"{\"op\":\"format-disk\"}\n"),
        "unknown variant"
    ));
    assert!(is_error(
        &raw(&w, b"{\"op\":\"status\",\"x\":1}\n"),
        "unknown field"
    ));
    assert!(is_error(&raw(&w, b"{\"op\":\"create\"}\n"), "exactly one"));
    assert!(is_error(
        &raw(
            &w,
            b"{\"op\":\"create\",\"file\":\"/nonexistent/guest.cfg\"}\n"
        ),
        "nonexistent"
    ));
    assert!(is_error(
        &raw(&w, b"{\"op\":\"destroy\",\"domain\":\"nobody\"}\n"),
        "nobody"
    ));

    // Longer than the cap: an error, then the daemon hangs up.
    let mut huge = vec![b'a'; MAX_LINE + 100];
    huge.push(b'\n');
    assert!(is_error(&raw(&w, &huge), "longer than"));

    // A client that hangs up mid-request.
    {
        let mut s = UnixStream::connect(w.socket()).expect("connect");
        s.write_all(b"{\"op\":\"create\",\"config\":{\"na")
            .expect("write");
    }

    let mut c = w.client();
    // A kernel that does not exist, a relative path, a hostile config: refused before a shell
    // is spent.
    let spec = |name: &str| w.config(name, 16).into_spec();
    let mut cfg = spec("nokernel");
    cfg.kernel = "/nonexistent/kernel".into();
    let err = c.create_spec(&cfg, false, false).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/kernel"), "{err}");
    cfg.kernel = "relative/kernel".into();
    let err = c.create_spec(&cfg, false, false).unwrap_err();
    assert!(err.to_string().contains("absolute"), "{err}");
    let mut cfg = spec("zero");
    cfg.max_vcpus = 0;
    assert!(c.create_spec(&cfg, false, false).is_err());
    let mut cfg = spec("huge");
    cfg.memory_mib = u64::MAX;
    assert!(c.create_spec(&cfg, false, false).is_err());
    let mut cfg = spec("slash");
    cfg.name = "../../etc".into();
    assert!(c.create_spec(&cfg, false, false).is_err());
    assert_eq!(ready(&d, 16), 2, "no shell was spent on refused requests");

    // A flavor without a pool, when only the pool may serve.
    let err = c.create(&w.config("unknown", 48), false, true).unwrap_err();
    assert!(err.to_string().contains("keeps no shells"), "{err}");

    // A good request still works, on the same connection as the failures.
    let created = c.create(&w.config("good", 16), false, true).expect("good");
    assert_eq!(created.path, CreationPath::Pool);
    // And a name clash is an error that does not leak the shell it took.
    assert!(c.create(&w.config("good", 16), false, false).is_err());
    assert!(d.wait_filled(FILL));
    assert_eq!(w.sim.guest_count(), 3, "the guest and two shells");
    assert_eq!(d.shutdown(), 2);
    assert_eq!(w.sim.guest_count(), 1);
}

#[test]
fn refills_stop_at_the_memory_reserve() {
    // 2048 MiB free; a 1000 MiB reserve leaves room for four 256 MiB shells, not five.
    let w = world_with(
        "reserve",
        SimConfig {
            host_mib: 3072,
            dom0_mib: 1024,
            nr_cpus: 2,
        },
    );
    let d = w.start(&[(256, 10)], 1000);
    assert!(
        !d.wait_filled(Duration::from_millis(200)),
        "cannot reach 10"
    );
    let deadline = Instant::now() + FILL;
    while !(ready(&d, 256) == 4 && d.status().held_by_reserve) {
        assert!(Instant::now() < deadline, "status: {:?}", d.status());
        std::thread::sleep(Duration::from_millis(10));
    }
    // Give the workers time to (wrongly) go on.
    std::thread::sleep(Duration::from_millis(1200));
    let status = d.status();
    assert_eq!(status.flavors[0].ready, 4, "{status:?}");
    assert!(status.free_mib >= 1000, "{status:?}");
    assert_eq!(w.sim.guest_count(), 4);

    // A creation takes a shell; the freed reserve room is not refilled past the reserve, but
    // destroying the guest makes room for one refill.
    let created = w
        .client()
        .create(&w.config("g", 256), false, false)
        .expect("create");
    assert_eq!(created.path, CreationPath::Pool);
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(ready(&d, 256), 3, "no room for a refill");
    w.ts.destroy(created.domid).expect("destroy");
    let deadline = Instant::now() + FILL;
    while ready(&d, 256) < 4 {
        assert!(Instant::now() < deadline, "refilled once memory was freed");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(d.shutdown(), 4);
    assert_eq!(w.sim.guest_count(), 0);
}

#[test]
fn the_daemon_reaps_guests_that_shut_down() {
    let w = world("reap");
    let d = Daemon::start(
        w.ts.clone(),
        DaemonConfig {
            socket: w.socket(),
            flavors: Vec::new(),
            reserve_mib: 0,
            workers: 1,
            reap_interval: Some(Duration::from_millis(5)),
        },
    )
    .expect("start");
    let created = w
        .client()
        .create(&w.config("bye", 4), false, false)
        .expect("create");
    w.sim
        .guest_shutdown(created.domid, crate::hypervisor::ShutdownReason::Poweroff)
        .expect("guest powers off");
    let deadline = Instant::now() + FILL;
    while w.sim.domain_info(created.domid).is_ok() {
        assert!(Instant::now() < deadline, "reaped");
        std::thread::sleep(Duration::from_millis(5));
    }
    d.shutdown();
}

#[test]
fn flavor_specs_and_files_parse_and_refuse_nonsense() {
    let t = flavors::parse_spec("memory=4,vcpus=2,count=20").expect("spec");
    assert_eq!(t.target, 20);
    assert_eq!(t.flavor.memory_mib, 4);
    assert_eq!(t.flavor.maxmem_mib, 4);
    assert_eq!(t.flavor.max_vcpus, 2);
    let t = flavors::parse_spec("memory=4,count=3,control_plane=noxs").expect("noxs");
    assert_eq!(t.flavor.control_plane, crate::config::PlaneKind::Noxs);
    let t = flavors::parse_spec("memory=4,count=3,type=pvh").expect("pvh");
    assert_eq!(t.flavor.kind, crate::hypervisor::GuestKind::Pvh);
    for bad in [
        "memory=4",
        "count=3",
        "memory=0,count=1",
        "memory=4,count=1,colour=blue",
        "memory=4,count=x",
        "memory=4,count=1,memory=8",
        "memory=4,count=1,control_plane=pigeon",
        "memory=4,count=1,type=hvm",
        "memory=8,maxmem=4,count=1",
        "memory=4,count=1000000",
        "memory",
    ] {
        assert!(flavors::parse_spec(bad).is_err(), "{bad} accepted");
    }
    let w = world("flavorfile");
    let cfg = w.scratch.0.join("g.cfg");
    std::fs::write(
        &cfg,
        format!(
            "name = \"g\"\nkernel = \"{}\"\nmemory = 12\n",
            w.kernel.display()
        ),
    )
    .expect("write");
    let t = flavors::parse_spec(&format!("config={},count=2", cfg.display())).expect("config");
    assert_eq!(t.flavor, flavor(12));
    let file = w.scratch.0.join("chaosd.json");
    std::fs::write(
        &file,
        r#"{"reserve_mib": 64, "flavors": [{"memory": 4, "count": 2}, {"memory": 8, "vcpus": 2, "count": 1}]}"#,
    )
    .expect("write");
    let s = flavors::load_file(&file).expect("file");
    assert_eq!(s.reserve_mib, Some(64));
    assert_eq!(s.flavors.len(), 2);
    std::fs::write(&file, r#"{"flavors": [{"memory": 4}]}"#).expect("write");
    let err = flavors::load_file(&file).unwrap_err();
    assert!(err.to_string().contains("count"), "{err}");
}

#[test]
fn configs_from_the_socket_pass_the_parsers_rules_with_the_parsers_messages() {
    let w = world("rules");
    let d = w.start(&[(16, 1)], 0);
    assert!(d.wait_filled(FILL));
    let mut c = w.client();
    let good = w.config("ok", 16).into_spec();
    let multicast = crate::config::VifConfig {
        mac: Some(xen_types::Mac([0x01, 0, 0x5e, 0, 0, 1])),
        ..crate::config::VifConfig::default()
    };
    type Change = Box<dyn Fn(&mut crate::config::GuestSpec)>;
    let cases: Vec<(&str, Change, String)> = vec![
        (
            "name",
            Box::new(|s| s.name = "Domain-0".into()),
            "name = \"Domain-0\"".into(),
        ),
        (
            "name",
            Box::new(|s| s.name = "tab\there".into()),
            "name = \"tab\\there\"".into(),
        ),
        (
            "name",
            Box::new(|s| s.name = "n".repeat(256)),
            format!("name = \"{}\"", "n".repeat(256)),
        ),
        (
            "vif",
            Box::new(move |s| s.vifs = vec![multicast.clone()]),
            "vif = ['mac=01:00:5e:00:00:01']".into(),
        ),
        (
            "vif",
            Box::new(|s| {
                s.vifs = vec![crate::config::VifConfig {
                    bridge: String::new(),
                    ..crate::config::VifConfig::default()
                }]
            }),
            "vif = ['bridge=']".into(),
        ),
    ];
    for (key, change, xl_line) in cases {
        let mut spec = good.clone();
        change(&mut spec);
        let err = c.create_spec(&spec, false, false).unwrap_err().to_string();
        // The file parser refuses the same config, with the same message after the location.
        let text = format!(
            "{xl_line}\nkernel = \"{}\"\nmemory = 16\n{}",
            w.kernel.display(),
            if key == "name" { "" } else { "name = \"ok\"\n" }
        );
        let parsed = parse_xl(&text, "g.cfg", &[]).unwrap_err().to_string();
        let tail = |m: &str| {
            m.split_once(": ")
                .map(|(_, t)| t.to_string())
                .unwrap_or_default()
        };
        assert!(err.starts_with("request: "), "{err}");
        assert!(err.contains(key), "{err}");
        if key == "name" {
            assert_eq!(tail(&err), tail(&parsed), "daemon: {err}\nparser: {parsed}");
        } else {
            assert!(parsed.contains("vif"), "{parsed}");
        }
    }
    assert_eq!(ready(&d, 16), 1, "no shell was spent on refused requests");
    assert_eq!(d.shutdown(), 1);
}

#[test]
fn noxs_shells_are_kept_and_executed() {
    let h = sim_host("chaosd-noxs", SimConfig::default());
    let w = World {
        scratch: h.scratch,
        sim: h.sim,
        xs: h.xs,
        ts: Arc::new(h.ts),
        kernel: h.noxs_kernel,
    };
    let noxs_flavor = Flavor {
        control_plane: crate::config::PlaneKind::Noxs,
        ..flavor(16)
    };
    let d = Daemon::start(
        w.ts.clone(),
        DaemonConfig {
            socket: w.socket(),
            flavors: vec![FlavorTarget {
                flavor: noxs_flavor.clone(),
                target: 2,
                ahead: None,
            }],
            reserve_mib: 0,
            workers: 1,
            reap_interval: None,
        },
    )
    .expect("daemon starts");
    assert!(d.wait_filled(FILL));
    let text = format!(
        "name = \"nx\"\nkernel = \"{}\"\nmemory = 16\nchaos_control_plane = \"noxs\"\n",
        w.kernel.display()
    );
    let cfg = parse_xl(&text, "nx.cfg", &[]).expect("config").config;
    let created = w
        .client()
        .create(&cfg, true, true)
        .expect("from a NoXS shell");
    assert_eq!(created.path, CreationPath::Pool);
    let record = w.ts.state().load(created.domid).unwrap().expect("record");
    assert_eq!(record.devices.len(), 1, "the sysctl device");
    assert!(d.wait_filled(FILL), "refilled");
    assert_eq!(d.shutdown(), 2);
}

/// Runs `f` on another thread and gives up after `limit` (a test of what used to hang must fail,
/// not hang).
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("did not finish within {limit:?}"))
}

/// Waits until the daemon has taken `taken` shells and serves no request.
fn wait_idle_after(d: &Daemon, taken: u64) {
    let deadline = Instant::now() + FILL;
    while d.status().flavors.iter().map(|f| f.taken).sum::<u64>() < taken
        || d.core.busy.load(Ordering::SeqCst) > 0
    {
        assert!(
            Instant::now() < deadline,
            "the daemon did not get to the request"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_creation_whose_client_went_away_is_rolled_back_not_committed() {
    let w = world("gone");
    let d = w.start(&[(16, 1)], 0);
    assert!(d.wait_filled(FILL));
    let req = serde_json::to_vec(&Request::Create {
        config: Some(Box::new(w.config("orphan", 16).into_spec())),
        file: None,
        overrides: Vec::new(),
        paused: false,
        pool_only: false,
    })
    .expect("encode");
    {
        // Held until the client is gone: the creation waits for it to claim the name, so the
        // client has hung up before the commit point however the threads are scheduled.
        let held = w.ts.state().lock().expect("state lock");
        // A CLI that sent its request and was killed (or gave up) before the answer.
        let mut s = UnixStream::connect(w.socket()).expect("connect");
        s.write_all(&req).expect("write");
        s.write_all(b"\n").expect("write");
        drop(s);
        drop(held);
    }
    wait_idle_after(&d, 1);
    assert!(d.wait_filled(FILL));
    assert!(
        w.ts.state().all().expect("records").is_empty(),
        "no guest record"
    );
    assert!(w.ts.resolve("orphan").is_err(), "no guest");
    assert_eq!(w.sim.guest_count(), 1, "only the refilled shell");
    assert_eq!(d.shutdown(), 1);
}

#[test]
fn the_destroy_op_never_destroys_the_domain_that_reused_a_stale_names_domid() {
    let w = world("stalekill");
    // A creation killed after claiming "web"; its domid goes to a new daemon's shell.
    let first = w.ts.create(&w.config("first", 16), false).expect("first");
    let web = w.ts.create(&w.config("web", 16), false).expect("web");
    w.ts.destroy(first.domid).expect("destroy first");
    w.sim.destroy_domain(web.domid).expect("web dies");
    w.xs.release_domain(web.domid).expect("released");
    w.xs.rm(
        crate::xenstore::TxId::NONE,
        &format!("/local/domain/{}", web.domid.0),
    )
    .expect("rm");
    w.ts.state().remove(web.domid).expect("no record");
    let args = crate::hypervisor::CreateDomain {
        kind: crate::hypervisor::GuestKind::Pv,
        handle: crate::hypervisor::Uuid::NIL,
        max_vcpus: 1,
        max_evtchn_port: 1023,
        max_grant_frames: 1,
        max_maptrack_frames: 1,
    };
    loop {
        let dom = w.sim.create_domain(&args).expect("bare domain");
        w.sim.destroy_domain(dom).expect("destroy");
        if dom.0 + 1 == web.domid.0 {
            break;
        }
    }
    let d = w.start(&[(16, 1)], 0);
    assert!(d.wait_filled(FILL));
    assert!(
        w.sim.domain_info(web.domid).is_ok(),
        "the shell has web's old domid"
    );
    assert!(is_error(
        &raw(&w, b"{\"op\":\"destroy\",\"domain\":\"web\"}\n"),
        "web"
    ));
    assert!(
        w.sim.domain_info(web.domid).is_ok(),
        "the shell was not destroyed"
    );
    assert_eq!(ready(&d, 16), 1);
    assert_eq!(d.shutdown(), 1);
}

#[test]
fn requests_naming_fifos_or_relative_paths_are_refused_at_once() {
    let w = world("fifo");
    let d = w.start(&[(16, 1)], 0);
    assert!(d.wait_filled(FILL));
    let fifo = w.scratch.0.join("kernel.fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo");
    let socket = w.socket();
    let mut spec = w.config("fifo", 16).into_spec();
    spec.kernel = fifo.clone();
    let err = within(Duration::from_secs(20), move || {
        let mut c =
            Client::connect_with_timeout(&socket, Duration::from_secs(60)).expect("connect");
        c.create_spec(&spec, false, false).map(|_| ())
    })
    .expect_err("refused");
    assert!(err.to_string().contains("not a regular file"), "{err}");
    // The file form: a FIFO as the config, relative kernel or ramdisk paths inside it.
    let cfg = w.scratch.0.join("rel.cfg");
    for (what, line) in [
        ("kernel", "kernel = \"relative/kernel\""),
        (
            "ramdisk",
            &*format!(
                "kernel = \"{}\"\nramdisk = \"initrd.gz\"",
                w.kernel.display()
            ),
        ),
    ] {
        std::fs::write(&cfg, format!("name = \"rel\"\n{line}\nmemory = 16\n")).expect("write");
        let req = format!("{{\"op\":\"create\",\"file\":\"{}\"}}\n", cfg.display());
        let reply = raw(&w, req.as_bytes());
        assert!(is_error(&reply, "absolute"), "{what}: {reply}");
    }
    let req = format!("{{\"op\":\"create\",\"file\":\"{}\"}}\n", fifo.display());
    let socket = w.socket();
    let reply = within(Duration::from_secs(20), move || {
        let mut s = UnixStream::connect(socket).expect("connect");
        s.write_all(req.as_bytes()).expect("write");
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).expect("read reply");
        line
    });
    assert!(is_error(&reply, "not a regular file"), "{reply}");
    assert!(is_error(
        &raw(&w, b"{\"op\":\"create\",\"file\":\"rel.cfg\"}\n"),
        "absolute"
    ));
    assert_eq!(ready(&d, 16), 1, "no shell was spent");
    assert_eq!(d.shutdown(), 1);
}

#[test]
fn a_daemon_that_does_not_answer_times_out_with_a_clear_message() {
    let w = world("mute");
    let socket = w.socket();
    // Accepts and reads, never answers (a SIGSTOPped chaosd's kernel queue looks the same).
    let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    let err = within(Duration::from_secs(20), move || {
        let mut c =
            Client::connect_with_timeout(&socket, Duration::from_millis(300)).expect("connect");
        c.status().map(|_| ())
    })
    .expect_err("times out");
    assert!(matches!(err, ClientError::TimedOut { .. }), "{err}");
    assert!(
        !err.nothing_sent(),
        "the request went out: no fallback may repeat it"
    );
    assert!(
        err.to_string().contains("did not answer within 0.3 s"),
        "{err}"
    );
}

#[test]
fn pvh_shells_are_kept_and_executed_with_their_disks() {
    use crate::image::notes::XEN_ELFNOTE_PHYS32_ENTRY;
    use crate::image::testelf::{num, TestElf};
    let w = world("pvh");
    let mut elf = TestElf::pv(0, 0x10_0000, 0x2000, 0x1000);
    elf.notes = vec![num(XEN_ELFNOTE_PHYS32_ENTRY, 0x10_0000)];
    let kernel = w.scratch.0.join("pvh.elf");
    std::fs::write(&kernel, elf.build()).expect("write kernel");
    let pvh_flavor = Flavor {
        kind: crate::hypervisor::GuestKind::Pvh,
        ..flavor(16)
    };
    let d = Daemon::start(
        w.ts.clone(),
        DaemonConfig {
            socket: w.socket(),
            flavors: vec![FlavorTarget {
                flavor: pvh_flavor,
                target: 2,
                ahead: None,
            }],
            reserve_mib: 0,
            workers: 1,
            reap_interval: None,
        },
    )
    .expect("daemon starts");
    assert!(d.wait_filled(FILL));
    let text = format!(
        "name = \"pvh\"\ntype = \"pvh\"\ntsc_mode = \"native\"\nkernel = \"{}\"\nmemory = 16\ndisk = ['/srv/root.img,,xvda,r']\n",
        kernel.display()
    );
    let cfg = parse_xl(&text, "pvh.cfg", &[]).expect("config").config;
    let created = w
        .client()
        .create(&cfg, true, true)
        .expect("from a PVH shell");
    assert_eq!(created.path, CreationPath::Pool);
    assert!(matches!(
        w.sim.vcpu_context(created.domid, 0),
        Some(crate::hypervisor::VcpuContext::Pvh { .. })
    ));
    assert_eq!(
        w.sim.tsc_mode(created.domid),
        Some(crate::config::TscMode::Native)
    );
    let record = w.ts.state().load(created.domid).unwrap().expect("record");
    assert_eq!(record.config.disks.len(), 1);
    assert!(d.wait_filled(FILL), "refilled");
    assert_eq!(d.shutdown(), 2);
}

#[test]
fn warm_shells_hold_the_image_and_a_changed_image_is_never_used() {
    use crate::image::testelf::TestElf;
    let w = world("warm");
    let kernel = w.scratch.0.join("warm.elf");
    std::fs::write(&kernel, TestElf::pv(0x40_0000, 0, 0x2800, 0x1000).build()).expect("kernel");
    let text = format!(
        "name = \"fn\"\nkernel = \"{}\"\nmemory = 16\nextra = \"per guest\"\n",
        kernel.display()
    );
    let file = w.scratch.0.join("warm.cfg");
    std::fs::write(&file, &text).expect("config");
    let target = flavors::parse_spec(&format!("config={},count=2,warm=1", file.display()))
        .expect("a warm flavor");
    assert!(target.flavor.image.is_some());
    assert_eq!(
        target.ahead,
        Some(crate::toolstack::FinishAhead {
            cmdline: "per guest".into(),
            vcpus: 1
        }),
        "finished ahead with the config's command line"
    );
    let d = Daemon::start(
        w.ts.clone(),
        DaemonConfig {
            socket: w.socket(),
            flavors: vec![target.clone()],
            reserve_mib: 0,
            workers: 1,
            reap_interval: None,
        },
    )
    .expect("daemon starts");
    assert!(d.wait_filled(FILL));
    // A warm shell already has its vcpu's page tables pinned and its vcpu set (finished
    // ahead for the config's guests), and no guest in it yet.
    let shells = w.shell_records();
    assert_eq!(shells.len(), 2);
    assert!(shells.iter().all(|s| s.domid.is_some_and(|d| {
        !w.sim.pinned_tables(d).is_empty() && w.sim.vcpu_context(d, 0).is_some()
    })));

    let cfg = parse_xl(&text, "warm.cfg", &[]).expect("config").config;
    let created = w
        .client()
        .create(&cfg, true, true)
        .expect("from a warm shell");
    assert_eq!(created.path, CreationPath::Pool);
    assert!(
        created.timings.get("prebuild").is_none(),
        "done ahead of time"
    );
    assert!(matches!(
        w.sim.vcpu_context(created.domid, 0),
        Some(crate::hypervisor::VcpuContext::Pv { .. })
    ));
    let status = w.client().status().expect("status");
    assert_eq!(status.flavors[0].taken, 1);
    assert!(d.wait_filled(FILL), "refilled");

    // The kernel changes on disk: the warm shells hold the old one, so the guest is created
    // without them, from the new file.
    std::fs::write(&kernel, TestElf::pv(0x40_0000, 0, 0x5800, 0x1000).build()).expect("kernel");
    let cfg2 = parse_xl(&text.replace("\"fn\"", "\"fn2\""), "warm.cfg", &[])
        .expect("config")
        .config;
    let created = w
        .client()
        .create(&cfg2, true, false)
        .expect("created anyway");
    assert_eq!(created.path, CreationPath::Direct, "not from a stale shell");
    assert!(w.ts.state().load(created.domid).unwrap().is_some());
    d.shutdown();
}

#[test]
fn warm_flavors_name_their_image_by_absolute_path_and_need_a_config() {
    let w = world("warm-spec");
    let cfg = w.scratch.0.join("rel.cfg");
    std::fs::write(
        &cfg,
        "name = \"r\"\nkernel = \"kernels/k.elf\"\nmemory = 4\n",
    )
    .expect("cfg");
    let t = flavors::parse_spec(&format!("config={},count=1,warm=1", cfg.display()))
        .expect("warm spec");
    let image = t.flavor.image.expect("warm");
    assert!(image.kernel.is_absolute(), "{}", image.kernel.display());
    assert!(image.kernel.ends_with("kernels/k.elf"));
    for bad in ["memory=4,count=1,warm=1", "memory=4,count=1,warm=maybe"] {
        assert!(flavors::parse_spec(bad).is_err(), "{bad} accepted");
    }
}

/// A filled pool of two 4 MiB shells with its refill workers.
fn filled_pool(w: &World, workers: usize) -> (Arc<pool::Pool>, Vec<std::thread::JoinHandle<()>>) {
    let target = FlavorTarget {
        flavor: flavor(4),
        target: 2,
        ahead: None,
    };
    let pool = Arc::new(pool::Pool::new(w.ts.clone(), &[target], 0));
    let handles = pool.spawn_workers(workers).expect("workers");
    assert!(pool.wait_filled(FILL), "pool filled");
    (pool, handles)
}

/// Discards the shells a test took, then the pool's, and stops its workers.
fn close_pool(
    w: &World,
    pool: &pool::Pool,
    taken: Vec<pool::Ready>,
    workers: Vec<std::thread::JoinHandle<()>>,
) {
    for shell in taken {
        w.ts.discard(shell.shell).expect("discard");
        pool.forget(&shell.uuid);
    }
    pool.drain();
    pool.stop();
    for h in workers {
        h.join().expect("worker");
    }
}

/// A creation through the socket wakes its shell's refill once its reply is out, so a worker
/// starting up does not take a CPU from the reply.
#[test]
fn a_refill_is_woken_once_the_reply_is_out() {
    let w = world("refill-after-reply");
    let (pool, workers) = filled_pool(&w, 1);
    // Wake-ups queued while the pool filled are taken by the worker first.
    std::thread::sleep(Duration::from_millis(300));
    let (taken, creating) = pool.take(&flavor(4)).expect("a ready shell");
    creating.wake_after_reply();
    assert!(
        !pool.wait_filled(Duration::from_millis(300)),
        "refilled before the reply went out"
    );
    pool.replied();
    assert!(pool.wait_filled(FILL), "refilled once the reply was out");
    close_pool(&w, &pool, vec![taken], workers);
}

#[test]
fn a_refill_waits_for_the_creation_from_a_shell_unless_the_flavor_ran_out() {
    let w = world("quiet-refill");
    let (pool, workers) = filled_pool(&w, 2);
    let (first, creating) = pool.take(&flavor(4)).expect("a ready shell");
    // One shell is left: its refill waits while the creation runs.
    assert!(
        !pool.wait_filled(Duration::from_millis(300)),
        "refilled beside a running creation"
    );
    drop(creating);
    assert!(
        pool.wait_filled(FILL),
        "refilled once the creation was over"
    );
    // Taking both: the flavor ran out, so it is refilled with both creations still running
    // (the next request must find a shell).
    let (second, c2) = pool.take(&flavor(4)).expect("shell 2");
    let (third, c3) = pool.take(&flavor(4)).expect("shell 3");
    let ready = || pool.status(Duration::from_secs(1)).0[0].ready;
    let deadline = Instant::now() + FILL;
    while ready() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(ready() >= 1, "an empty flavor gets a shell at once");
    drop((c2, c3));
    assert!(pool.wait_filled(FILL), "refilled once they were over");
    close_pool(&w, &pool, vec![first, second, third], workers);
}
