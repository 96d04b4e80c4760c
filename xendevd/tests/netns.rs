//! xendevd against real kernel networking, inside a network namespace this test creates:
//! a Linux bridge and veth interfaces standing in for vifs, events injected into the handler
//! pool (not from netback), hotplug-status written to a MemStore.
//!
//! Needs root and `ip` (iproute2); skipped, saying why, without them. The namespace is
//! deleted whatever happens.

// An integration-test crate: every test lives at its top level.
#![allow(clippy::tests_outside_test_module)]

mod common;

use crossbeam_channel::unbounded;
use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use xendevd::handler::{Config, Done, Handler, StoreSource, SwitchKind};
use xendevd::pool::{Outcome, Pool};
use xendevd::uevent::{Action, Control, Received, UeventSocket, VifEvent};
use xenstore::{MemStore, TxId, Xenstore};

use common::{cannot_run, ip, is_up, Netns};

const BRIDGE: &str = "xdtbr0";

/// Ports of the bridge as sysfs shows them inside the namespace (`ip netns exec` mounts a
/// sysfs for it).
fn bridge_ports(ns: &Netns) -> BTreeSet<String> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            "ls",
            &format!("/sys/class/net/{BRIDGE}/brif"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn backend(i: usize) -> String {
    format!("/local/domain/0/backend/vif/{i}/0")
}

fn vif(i: usize) -> String {
    format!("vif{i}.0")
}

fn xs_event(action: Action, i: usize) -> VifEvent {
    // Relative, as netback sends it.
    VifEvent {
        action,
        vif: vif(i),
        control: Control::Xenstore {
            backend_path: format!("backend/vif/{i}/0"),
        },
    }
}

fn read(xs: &MemStore, path: &str) -> Option<String> {
    xs.read(TxId::NONE, path)
        .unwrap()
        .map(|v| String::from_utf8_lossy(&v).into_owned())
}

fn percentiles(mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let p99 = ((v.len() * 99).div_ceil(100)).clamp(1, v.len()) - 1;
    (ms(v[v.len() / 2]), ms(v[p99]), ms(v[v.len() - 1]))
}

fn wait(rx: &crossbeam_channel::Receiver<Outcome>) -> Outcome {
    rx.recv_timeout(Duration::from_secs(30))
        .expect("no outcome within 30 s")
}

#[test]
fn vifs_are_attached_brought_up_and_detached() {
    if cannot_run("vifs_are_attached_brought_up_and_detached") {
        return;
    }
    const N: usize = 100;
    let ns = Netns::create("attach");
    let mut cmds = format!("link add {BRIDGE} type bridge\nlink set {BRIDGE} up\n");
    for i in 0..N {
        cmds += &format!("link add {} type veth peer name peer{i}\n", vif(i));
    }
    cmds += "link add vifnoxs.0 type veth peer name peernoxs\n";
    ns.batch(&cmds);
    ns.enter();

    let xs = Arc::new(MemStore::new());
    for i in 0..N {
        xs.write(
            TxId::NONE,
            &format!("{}/bridge", backend(i)),
            BRIDGE.as_bytes(),
        )
        .unwrap();
    }
    let config = Config {
        ovsdb_socket: "/nonexistent/db.sock".into(),
        ..Config::default()
    };
    let handler = Arc::new(Handler::new(config, StoreSource::Fixed(xs.clone())));
    let (tx, rx) = unbounded();
    let pool = Pool::new(4, handler, Some(tx)).unwrap();

    // One at a time: event in -> port on the bridge, up, hotplug-status written.
    let mut one_by_one = Vec::new();
    for i in 0..N {
        let t0 = Instant::now();
        pool.submit(xs_event(Action::Online, i));
        let o = wait(&rx);
        one_by_one.push(t0.elapsed());
        assert!(o.result.is_ok(), "{}: {:?}", o.event.vif, o.result);
    }
    let ports = bridge_ports(&ns);
    for i in 0..N {
        assert!(ports.contains(&vif(i)), "{} not in {BRIDGE}/brif", vif(i));
        assert!(is_up(&vif(i)), "{} is down", vif(i));
        assert_eq!(
            read(&xs, &format!("{}/hotplug-status", backend(i))).as_deref(),
            Some("connected")
        );
        assert_eq!(read(&xs, &format!("{}/hotplug-error", backend(i))), None);
    }

    // A second online for an attached vif changes nothing and still succeeds.
    pool.submit(xs_event(Action::Online, 0));
    assert_eq!(wait(&rx).result.unwrap().bridge, BRIDGE);
    assert!(bridge_ports(&ns).contains(&vif(0)));

    // Offline, as a burst: detached and down, and Xenstore keeps what the toolstack owns.
    let before = xs.paths();
    for i in 0..N {
        pool.submit(xs_event(Action::Offline, i));
    }
    for _ in 0..N {
        let o = wait(&rx);
        assert!(o.result.is_ok(), "{}: {:?}", o.event.vif, o.result);
    }
    assert!(
        bridge_ports(&ns).is_empty(),
        "ports left: {:?}",
        bridge_ports(&ns)
    );
    assert!((0..N).all(|i| !is_up(&vif(i))));
    assert_eq!(xs.paths(), before);

    // Online as a burst of N: latency from submission to done, with 4 workers.
    let mut burst = Vec::new();
    let t0 = Instant::now();
    for i in 0..N {
        pool.submit(xs_event(Action::Online, i));
    }
    for _ in 0..N {
        let o = wait(&rx);
        assert!(o.result.is_ok(), "{}: {:?}", o.event.vif, o.result);
        burst.push(o.queued + o.took);
    }
    let burst_total = t0.elapsed();
    assert_eq!(bridge_ports(&ns).len(), N);

    // NoXS: the bridge comes with the event, nothing is written anywhere.
    let paths = xs.paths();
    let noxs = |action| VifEvent {
        action,
        vif: "vifnoxs.0".into(),
        control: Control::Noxs {
            bridge: Some(BRIDGE.into()),
        },
    };
    let linux_bridge = Done {
        bridge: BRIDGE.into(),
        kind: SwitchKind::Linux,
    };
    pool.submit(noxs(Action::Online));
    assert_eq!(wait(&rx).result, Ok(linux_bridge.clone()));
    assert!(bridge_ports(&ns).contains("vifnoxs.0") && is_up("vifnoxs.0"));
    pool.submit(noxs(Action::Offline));
    assert_eq!(wait(&rx).result, Ok(linux_bridge));
    assert!(!bridge_ports(&ns).contains("vifnoxs.0"));
    assert_eq!(xs.paths(), paths);

    // A vif whose interface does not exist: error reported to the toolstack.
    xs.write(
        TxId::NONE,
        &format!("{}/bridge", backend(N + 1)),
        BRIDGE.as_bytes(),
    )
    .unwrap();
    pool.submit(xs_event(Action::Online, N + 1));
    let err = wait(&rx).result.unwrap_err();
    assert!(err.contains(&vif(N + 1)), "{err}");
    assert_eq!(
        read(&xs, &format!("{}/hotplug-status", backend(N + 1))).as_deref(),
        Some("error")
    );
    let msg = read(&xs, &format!("{}/hotplug-error", backend(N + 1))).unwrap();
    assert!(msg.contains(&vif(N + 1)), "{msg}");
    pool.shutdown();

    let (m, p99, max) = percentiles(one_by_one);
    eprintln!("attach latency, one event at a time ({N}): median {m:.3} ms, p99 {p99:.3} ms, max {max:.3} ms");
    let (m, p99, max) = percentiles(burst);
    eprintln!(
        "attach latency, burst of {N} on 4 workers: median {m:.3} ms, p99 {p99:.3} ms, max {max:.3} ms, all done in {:.3} ms",
        burst_total.as_secs_f64() * 1e3
    );
}

#[test]
fn the_uevent_socket_receives_real_kernel_events() {
    if cannot_run("the_uevent_socket_receives_real_kernel_events") {
        return;
    }
    let ns = Netns::create("uevent");
    ns.enter();
    // Net device uevents go to the sockets of the device's namespace, so this one sees only
    // what happens in ours.
    let mut sock = UeventSocket::open().unwrap();
    ip(&[
        "-n", &ns.name, "link", "add", "xdtev0", "type", "veth", "peer", "name", "xdtev1",
    ])
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(
            Instant::now() < deadline,
            "no uevent for xdtev0 within 10 s"
        );
        if let Received::Event(ev) = sock.recv(Duration::from_millis(200)).unwrap() {
            if ev.action == "add" && ev.props.get("INTERFACE").map(String::as_str) == Some("xdtev0")
            {
                assert_eq!(ev.props.get("SUBSYSTEM").map(String::as_str), Some("net"));
                assert!(ev.devpath.ends_with("/xdtev0"), "{}", ev.devpath);
                // Not a vif event: the filter leaves it alone.
                assert_eq!(xendevd::uevent::vif_event(&ev), Ok(None));
                break;
            }
        }
    }
}
