//! xendevd's Open vSwitch attachment against Debian's real Open vSwitch (openvswitch-switch):
//! each test starts its own ovsdb-server on a fresh database and socket under a temporary
//! directory, and checks with `ovs-vsctl` that xendevd's ports appear and disappear. xendevd
//! only writes the database; one test also runs ovs-vswitchd (userspace datapath, no kernel
//! module) to see the vif reach the switch itself.
//!
//! Skipped, saying why, when the Open vSwitch binaries are missing; the handler test also needs
//! root (its vif is a veth in a network namespace).

// An integration-test crate: every test lives at its top level.
#![allow(clippy::tests_outside_test_module)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use xendevd::handler::{Config, Done, Handler, StoreSource, SwitchKind};
use xendevd::ovs::{OvsError, Ovsdb};
use xendevd::uevent::{Action, Control, VifEvent};
use xenstore::{MemStore, TxId, Xenstore};

use common::{cannot_run, is_up, skip, Netns};

/// The Open vSwitch database schema Debian installs.
const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

/// Finds an Open vSwitch program in PATH or the sbin directories (root's PATH may lack them).
fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"])
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file());
    found
}

/// An ovsdb-server of our own, killed (and its directory removed) on drop.
struct OvsdbServer {
    dir: PathBuf,
    vsctl: PathBuf,
    pid: Pid,
}

impl OvsdbServer {
    /// Starts the server, or says why `test` is skipped and returns `None`.
    fn start(test: &str) -> Option<OvsdbServer> {
        let (Some(server), Some(tool), Some(vsctl)) =
            (find("ovsdb-server"), find("ovsdb-tool"), find("ovs-vsctl"))
        else {
            skip(
                test,
                "no ovsdb-server, ovsdb-tool or ovs-vsctl (Debian package openvswitch-switch)",
            );
            return None;
        };
        if !Path::new(SCHEMA).is_file() {
            skip(test, &format!("no {SCHEMA} (openvswitch-common)"));
            return None;
        }
        let dir = std::env::temp_dir().join(format!("xendevd-ovs-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("conf.db");
        run(Command::new(tool).arg("create").arg(&db).arg(SCHEMA));
        // --detach returns once the socket is listening; the pid file then names the server.
        let arg = |name: &str, file: &str| format!("--{name}={}", dir.join(file).display());
        run(Command::new(server)
            .arg(&db)
            .arg(format!("--remote=punix:{}", dir.join("db.sock").display()))
            .arg(arg("unixctl", "ovsdb-server.ctl"))
            .arg(arg("pidfile", "ovsdb-server.pid"))
            .arg(arg("log-file", "ovsdb-server.log"))
            .args(["--detach", "--no-chdir", "-vconsole:off"]));
        let pid = std::fs::read_to_string(dir.join("ovsdb-server.pid")).unwrap();
        let server = OvsdbServer {
            pid: Pid::from_raw(pid.trim().parse().unwrap()),
            dir,
            vsctl,
        };
        server.vsctl(&["init"]);
        Some(server)
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("db.sock")
    }

    /// Runs `ovs-vsctl` on this database. `--no-wait`: there is no ovs-vswitchd to wait for.
    fn vsctl(&self, args: &[&str]) -> String {
        self.vsctl_then(&["--no-wait"], args)
    }

    fn vsctl_then(&self, options: &[&str], args: &[&str]) -> String {
        run(Command::new(&self.vsctl)
            .arg(format!("--db=unix:{}", self.socket().display()))
            .arg("--timeout=30")
            .args(options)
            .args(args))
    }

    /// Returns once ovs-vswitchd has applied every change made so far: a write without
    /// `--no-wait` waits until the switch has caught up with the database.
    fn wait_for_vswitchd(&self, round: u32) {
        let key = format!("external_ids:xendevd-test={round}");
        self.vsctl_then(&[], &["set", "Open_vSwitch", ".", &key]);
    }

    fn ports(&self, bridge: &str) -> BTreeSet<String> {
        words(&self.vsctl(&["list-ports", bridge]))
    }

    /// Names in a table's `name` column.
    fn names(&self, table: &str) -> BTreeSet<String> {
        words(&self.vsctl(&["--bare", "--columns=name", "list", table]))
    }
}

impl Drop for OvsdbServer {
    fn drop(&mut self) {
        let _ = kill(self.pid, Signal::SIGTERM);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// ovs-vswitchd with the userspace datapath (no openvswitch kernel module needed), running in
/// a network namespace so that the interfaces it makes go away with the namespace. Killed on
/// drop.
struct Vswitchd {
    pid: Pid,
    appctl: PathBuf,
    ctl: PathBuf,
}

impl Vswitchd {
    fn start(test: &str, ovs: &OvsdbServer, ns: &Netns) -> Option<Vswitchd> {
        let (Some(vswitchd), Some(appctl)) = (find("ovs-vswitchd"), find("ovs-appctl")) else {
            skip(
                test,
                "no ovs-vswitchd or ovs-appctl (Debian package openvswitch-switch)",
            );
            return None;
        };
        let file = |name: &str| ovs.dir.join(name);
        // --detach returns once it is connected and serving its control socket.
        run(Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(vswitchd)
            .arg(format!("unix:{}", ovs.socket().display()))
            .arg(format!("--unixctl={}", file("vswitchd.ctl").display()))
            .arg(format!("--pidfile={}", file("vswitchd.pid").display()))
            .arg(format!("--log-file={}", file("vswitchd.log").display()))
            .args(["--detach", "--no-chdir", "-vconsole:off"])
            // Its bridges' management sockets.
            .env("OVS_RUNDIR", &ovs.dir));
        let pid = std::fs::read_to_string(file("vswitchd.pid")).unwrap();
        Some(Vswitchd {
            pid: Pid::from_raw(pid.trim().parse().unwrap()),
            appctl,
            ctl: file("vswitchd.ctl"),
        })
    }

    /// The ports of the switch's datapaths, as `ovs-appctl dpif/show` lists them.
    fn datapath_ports(&self) -> String {
        run(Command::new(&self.appctl)
            .arg("-t")
            .arg(&self.ctl)
            .arg("dpif/show"))
    }
}

impl Drop for Vswitchd {
    fn drop(&mut self) {
        let _ = kill(self.pid, Signal::SIGTERM);
    }
}

/// Runs a command that must succeed; returns its stdout.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn words(s: &str) -> BTreeSet<String> {
    s.split_whitespace().map(str::to_string).collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn ports_appear_and_disappear_in_a_real_ovsdb() {
    let Some(ovs) = OvsdbServer::start("ports_appear_and_disappear_in_a_real_ovsdb") else {
        return;
    };
    ovs.vsctl(&["add-br", "ovsbr0"]);
    ovs.vsctl(&["add-br", "ovsbr1"]);
    let db = ovs.socket().to_str().unwrap().to_string();
    let connect = || Ovsdb::connect(&db).unwrap();

    connect().add_port("ovsbr0", "vif7.0").unwrap();
    assert_eq!(ovs.ports("ovsbr0"), set(&["vif7.0"]));
    assert_eq!(ovs.vsctl(&["port-to-br", "vif7.0"]).trim(), "ovsbr0");
    assert!(ovs.names("Interface").contains("vif7.0"));

    // Adding it again (a replayed online) changes nothing.
    connect().add_port("ovsbr0", "vif7.0").unwrap();
    assert_eq!(ovs.ports("ovsbr0"), set(&["vif7.0"]));

    // A missing bridge is an error and leaves no stray Port or Interface row.
    let err = connect().add_port("nosuchbr", "vif8.0").unwrap_err();
    assert!(
        matches!(err, OvsError::NoBridge(ref b) if b == "nosuchbr"),
        "{err}"
    );
    assert!(!ovs.names("Port").contains("vif8.0"));
    assert!(!ovs.names("Interface").contains("vif8.0"));

    connect().add_port("ovsbr1", "vif9.0").unwrap();
    assert_eq!(ovs.ports("ovsbr1"), set(&["vif9.0"]));
    assert_eq!(ovs.ports("ovsbr0"), set(&["vif7.0"]));

    // Removal finds the port on whichever bridge holds it; OVSDB drops its rows.
    connect().del_port("vif7.0").unwrap();
    assert_eq!(ovs.ports("ovsbr0"), set(&[]));
    assert!(!ovs.names("Port").contains("vif7.0"));
    assert!(!ovs.names("Interface").contains("vif7.0"));
    assert_eq!(ovs.ports("ovsbr1"), set(&["vif9.0"]));
    // Removing a port that is gone is not an error.
    connect().del_port("vif7.0").unwrap();
    // One connection serves several requests.
    let mut conn = connect();
    conn.del_port("vif9.0").unwrap();
    conn.add_port("ovsbr1", "vif10.0").unwrap();
    assert_eq!(ovs.ports("ovsbr1"), set(&["vif10.0"]));
}

#[test]
fn the_handler_attaches_vifs_through_a_real_ovsdb() {
    const TEST: &str = "the_handler_attaches_vifs_through_a_real_ovsdb";
    if cannot_run(TEST) {
        return;
    }
    let Some(ovs) = OvsdbServer::start(TEST) else {
        return;
    };
    ovs.vsctl(&["add-br", "ovsbr0"]);
    let ns = Netns::create("ovs");
    ns.batch(
        "link add vif3.0 type veth peer name peer3\nlink add vif4.0 type veth peer name peer4\n",
    );
    // The handler runs on this thread: the vifs are visible to it, the database socket too
    // (a path, not a network address).
    ns.enter();

    let xs = Arc::new(MemStore::new());
    let be = "/local/domain/0/backend/vif/3/0";
    xs.write(TxId::NONE, &format!("{be}/bridge"), b"ovsbr0")
        .unwrap();
    let config = Config {
        ovsdb_socket: ovs.socket(),
        ..Config::default()
    };
    let handler = Handler::new(config, StoreSource::Fixed(xs.clone()));
    let done = Done {
        bridge: "ovsbr0".into(),
        kind: SwitchKind::Ovs,
    };

    // Netback's vif: bridge from Xenstore, result in hotplug-status.
    let xs_vif = |action| VifEvent {
        action,
        vif: "vif3.0".into(),
        control: Control::Xenstore {
            backend_path: "backend/vif/3/0".into(),
        },
    };
    assert_eq!(handler.handle(&xs_vif(Action::Online)).unwrap(), done);
    assert_eq!(ovs.ports("ovsbr0"), set(&["vif3.0"]));
    assert!(is_up("vif3.0"));
    let status = xs
        .read(TxId::NONE, &format!("{be}/hotplug-status"))
        .unwrap();
    assert_eq!(status.as_deref(), Some(&b"connected"[..]));

    // A NoXS vif: the bridge comes with the event.
    let noxs_vif = |action| VifEvent {
        action,
        vif: "vif4.0".into(),
        control: Control::Noxs {
            bridge: Some("ovsbr0".into()),
        },
    };
    assert_eq!(handler.handle(&noxs_vif(Action::Online)).unwrap(), done);
    assert_eq!(ovs.ports("ovsbr0"), set(&["vif3.0", "vif4.0"]));

    assert_eq!(handler.handle(&xs_vif(Action::Offline)).unwrap(), done);
    assert_eq!(handler.handle(&noxs_vif(Action::Offline)).unwrap(), done);
    assert_eq!(ovs.ports("ovsbr0"), set(&[]));
    assert!(!is_up("vif3.0") && !is_up("vif4.0"));

    // The guest went first: netback unregistered the interface before the offline event was
    // handled. Open vSwitch keeps the Port row of a vanished interface, so it must still go.
    Ovsdb::connect(ovs.socket().to_str().unwrap())
        .unwrap()
        .add_port("ovsbr0", "vif9.0")
        .unwrap();
    let vanished = VifEvent {
        action: Action::Offline,
        vif: "vif9.0".into(),
        control: Control::Noxs {
            bridge: Some("ovsbr0".into()),
        },
    };
    assert_eq!(handler.handle(&vanished).unwrap(), done);
    assert_eq!(ovs.ports("ovsbr0"), set(&[]));

    // An interface that does not exist is refused before the database is touched.
    let ghost = VifEvent {
        action: Action::Online,
        vif: "vif5.0".into(),
        control: Control::Noxs {
            bridge: Some("ovsbr0".into()),
        },
    };
    let err = handler.handle(&ghost).unwrap_err();
    assert!(err.to_string().contains("vif5.0"), "{err}");
    assert!(!ovs.names("Port").contains("vif5.0"));
}

#[test]
fn ovs_vswitchd_puts_the_vif_in_its_datapath() {
    const TEST: &str = "ovs_vswitchd_puts_the_vif_in_its_datapath";
    if cannot_run(TEST) {
        return;
    }
    let Some(ovs) = OvsdbServer::start(TEST) else {
        return;
    };
    let ns = Netns::create("vswitchd");
    ns.batch("link add vif6.0 type veth peer name peer6\n");
    // Declared after the namespace, so it is stopped before the namespace goes.
    let Some(vswitchd) = Vswitchd::start(TEST, &ovs, &ns) else {
        return;
    };
    ovs.vsctl_then(
        &[],
        &[
            "add-br",
            "ovsbr0",
            "--",
            "set",
            "Bridge",
            "ovsbr0",
            "datapath_type=netdev",
        ],
    );
    ns.enter();
    let config = Config {
        ovsdb_socket: ovs.socket(),
        ..Config::default()
    };
    let handler = Handler::new(config, StoreSource::Fixed(Arc::new(MemStore::new())));
    let vif = |action| VifEvent {
        action,
        vif: "vif6.0".into(),
        control: Control::Noxs {
            bridge: Some("ovsbr0".into()),
        },
    };
    let done = Done {
        bridge: "ovsbr0".into(),
        kind: SwitchKind::Ovs,
    };

    assert_eq!(handler.handle(&vif(Action::Online)).unwrap(), done);
    ovs.wait_for_vswitchd(1);
    let ports = vswitchd.datapath_ports();
    assert!(ports.contains("vif6.0"), "{ports}");
    let ofport = ovs.vsctl(&["get", "Interface", "vif6.0", "ofport"]);
    assert!(ofport.trim().parse::<i64>().unwrap() > 0, "ofport {ofport}");
    assert!(is_up("vif6.0"));

    assert_eq!(handler.handle(&vif(Action::Offline)).unwrap(), done);
    ovs.wait_for_vswitchd(2);
    let ports = vswitchd.datapath_ports();
    assert!(!ports.contains("vif6.0"), "{ports}");
}
