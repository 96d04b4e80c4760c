//! What xendevd does for one vif event: find the bridge, plug the interface into it (Linux
//! bridge or Open vSwitch), bring it up, and tell the toolstack through `hotplug-status`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use xen_types::{check_ifname, IfnameError};
use xenstore::{TxId, Xenstore, XenstoreError, XsClient};

use crate::bridge::{self, BridgeError};
use crate::ovs::{OvsError, Ovsdb};
use crate::uevent::{Action, Control, VifEvent};

#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    #[error(transparent)]
    Bridge(#[from] BridgeError),
    #[error(transparent)]
    Ovs(#[from] OvsError),
    #[error("xenstore: {0}")]
    Xenstore(#[from] XenstoreError),
    #[error("no xenstore connection: {0}")]
    NoXenstore(String),
    #[error("bridge {0} is not a Linux bridge and there is no OVSDB socket at {1}")]
    UnknownBridge(String, String),
    #[error("bad bridge name {0:?} in {1}: {2}")]
    BadBridgeName(String, String, IfnameError),
}

/// Opens a Xenstore connection: [`XsClient::open`] in the daemon, a given socket in tests.
pub type Connector = Box<dyn Fn() -> xenstore::Result<XsClient> + Send + Sync>;

/// Where the Xenstore connection comes from: fixed (tests), or opened on first use and
/// reopened after failures (xendevd may start before xenstored, or outlive a restart of it).
pub enum StoreSource {
    Fixed(Arc<dyn Xenstore>),
    Connect {
        connect: Connector,
        current: Mutex<Option<Arc<dyn Xenstore>>>,
    },
}

impl std::fmt::Debug for StoreSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StoreSource::Fixed(_) => "StoreSource::Fixed",
            StoreSource::Connect { .. } => "StoreSource::Connect",
        })
    }
}

impl StoreSource {
    /// Connects the way libxenstore does, when an event first needs it.
    pub fn connect_on_demand() -> StoreSource {
        StoreSource::connect_with(Box::new(XsClient::open))
    }

    pub fn connect_with(connect: Connector) -> StoreSource {
        StoreSource::Connect {
            connect,
            current: Mutex::new(None),
        }
    }

    pub(crate) fn get(&self) -> Result<Arc<dyn Xenstore>, HandleError> {
        match self {
            StoreSource::Fixed(xs) => Ok(xs.clone()),
            StoreSource::Connect { connect, current } => {
                let mut current = current.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(xs) = current.as_ref() {
                    return Ok(xs.clone());
                }
                let xs: Arc<dyn Xenstore> =
                    Arc::new(connect().map_err(|e| HandleError::NoXenstore(e.to_string()))?);
                *current = Some(xs.clone());
                Ok(xs)
            }
        }
    }

    /// Drops a connection that failed, so the next event reconnects.
    pub(crate) fn forget(&self) {
        if let StoreSource::Connect { current, .. } = self {
            *current.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Bridge used when neither Xenstore nor the event names one.
    pub default_bridge: String,
    /// Home of this (backend) domain in Xenstore; relative `XENBUS_PATH`s are below it.
    pub xs_home: String,
    pub ovsdb_socket: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            default_bridge: "xenbr0".to_string(),
            xs_home: "/local/domain/0".to_string(),
            ovsdb_socket: PathBuf::from(crate::ovs::DEFAULT_SOCKET),
        }
    }
}

#[derive(Debug)]
pub struct Handler {
    pub config: Config,
    pub store: StoreSource,
}

/// What was done, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    pub bridge: String,
    pub kind: SwitchKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwitchKind {
    Linux,
    Ovs,
}

impl std::fmt::Display for SwitchKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SwitchKind::Linux => "linux bridge",
            SwitchKind::Ovs => "openvswitch",
        })
    }
}

impl Handler {
    pub fn new(config: Config, store: StoreSource) -> Handler {
        Handler { config, store }
    }

    /// The absolute Xenstore path of a backend directory given as `XENBUS_PATH`.
    pub fn backend_dir(&self, path: &str) -> String {
        if path.starts_with('/') {
            path.to_string()
        } else {
            format!("{}/{}", self.config.xs_home.trim_end_matches('/'), path)
        }
    }

    /// Handles one event. For Xenstore-controlled vifs coming online the outcome is also
    /// written to `hotplug-status` (and `hotplug-error`), which libxl waits for.
    pub fn handle(&self, ev: &VifEvent) -> Result<Done, HandleError> {
        match (&ev.control, ev.action) {
            (Control::Noxs { bridge }, action) => {
                let br = bridge
                    .clone()
                    .unwrap_or_else(|| self.config.default_bridge.clone());
                self.apply(action, &br, &ev.vif)
            }
            (Control::Xenstore { backend_path }, Action::Online) => {
                let dir = self.backend_dir(backend_path);
                let xs = self.store.get()?;
                let result = self
                    .bridge_from_store(&*xs, &dir)
                    .and_then(|br| self.apply(Action::Online, &br, &ev.vif));
                let report = match &result {
                    Ok(_) => xs.write(TxId::NONE, &format!("{dir}/hotplug-status"), b"connected"),
                    Err(e) => xs
                        .write(
                            TxId::NONE,
                            &format!("{dir}/hotplug-error"),
                            e.to_string().as_bytes(),
                        )
                        .and_then(|_| {
                            xs.write(TxId::NONE, &format!("{dir}/hotplug-status"), b"error")
                        }),
                };
                if let Err(e) = report {
                    self.store.forget();
                    // The attach error, if there was one, says more than the failed report.
                    return Err(match result {
                        Err(attach) => attach,
                        Ok(_) => HandleError::Xenstore(e),
                    });
                }
                result
            }
            (Control::Xenstore { backend_path }, Action::Offline) => {
                // The toolstack may already have removed the backend directory: fall back to
                // the default bridge; the interface is about to disappear anyway.
                let dir = self.backend_dir(backend_path);
                let br = match self.store.get() {
                    Ok(xs) => self
                        .bridge_from_store(&*xs, &dir)
                        .unwrap_or_else(|_| self.config.default_bridge.clone()),
                    Err(_) => self.config.default_bridge.clone(),
                };
                self.apply(Action::Offline, &br, &ev.vif)
            }
        }
    }

    fn bridge_from_store(&self, xs: &dyn Xenstore, dir: &str) -> Result<String, HandleError> {
        let path = format!("{dir}/bridge");
        let value = xs
            .read(TxId::NONE, &path)
            .inspect_err(|_| self.store.forget())?;
        match value {
            None => Ok(self.config.default_bridge.clone()),
            Some(v) => {
                let name = String::from_utf8_lossy(&v).trim().to_string();
                if name.is_empty() {
                    return Ok(self.config.default_bridge.clone());
                }
                match check_ifname(&name) {
                    Ok(()) => Ok(name),
                    Err(why) => Err(HandleError::BadBridgeName(name, path, why)),
                }
            }
        }
    }

    fn switch_kind(&self, br: &str) -> Result<SwitchKind, HandleError> {
        if bridge::is_linux_bridge(br) {
            Ok(SwitchKind::Linux)
        } else if self.config.ovsdb_socket.exists() {
            Ok(SwitchKind::Ovs)
        } else {
            Err(HandleError::UnknownBridge(
                br.to_string(),
                self.config.ovsdb_socket.display().to_string(),
            ))
        }
    }

    fn ovsdb(&self) -> Result<Ovsdb, HandleError> {
        Ok(Ovsdb::connect(&self.config.ovsdb_socket.to_string_lossy())?)
    }

    fn apply(&self, action: Action, br: &str, vif: &str) -> Result<Done, HandleError> {
        let kind = self.switch_kind(br)?;
        match action {
            Action::Online => match kind {
                SwitchKind::Linux => {
                    bridge::add_port(br, vif)?;
                    bridge::set_up(vif, true)?;
                }
                SwitchKind::Ovs => {
                    // Fail on a missing interface before touching the database.
                    bridge::ifindex(vif)?;
                    // Up before the Port row: ovs-vswitchd, opening the new port, reads the
                    // interface's flags and writes them back with its own (promiscuous on a
                    // netdev datapath); an `up` of ours between its read and its write is lost.
                    bridge::set_up(vif, true)?;
                    if let Err(e) = self.ovsdb().and_then(|mut db| Ok(db.add_port(br, vif)?)) {
                        let _ = bridge::set_up(vif, false);
                        return Err(e);
                    }
                }
            },
            Action::Offline => {
                // The interface may be gone already (netback unregisters it when the guest
                // goes). It then has left a Linux bridge by itself, but Open vSwitch keeps its
                // Port row, which is removed below all the same.
                // ENODEV: it went between two of our ioctls.
                match bridge::set_up(vif, false) {
                    Err(BridgeError::NoInterface(_)) => {}
                    Err(e) if bridge::is_errno(&e, libc::ENODEV) => {}
                    r => r?,
                }
                match kind {
                    SwitchKind::Linux => match bridge::del_port(br, vif) {
                        Err(BridgeError::NoInterface(_)) => {}
                        Err(e) if bridge::is_errno(&e, libc::ENODEV) => {}
                        // EINVAL: not a port of this bridge (any more).
                        Err(e) if bridge::is_errno(&e, libc::EINVAL) => {}
                        r => r?,
                    },
                    SwitchKind::Ovs => self.ovsdb()?.del_port(vif)?,
                }
            }
        }
        Ok(Done {
            bridge: br.to_string(),
            kind,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xenstore::MemStore;

    fn handler(xs: &Arc<MemStore>) -> Handler {
        let config = Config {
            ovsdb_socket: PathBuf::from("/nonexistent/db.sock"),
            ..Config::default()
        };
        Handler::new(config, StoreSource::Fixed(xs.clone()))
    }

    fn online(path: &str, vif: &str) -> VifEvent {
        VifEvent {
            action: Action::Online,
            vif: vif.into(),
            control: Control::Xenstore {
                backend_path: path.into(),
            },
        }
    }

    fn read(xs: &MemStore, p: &str) -> Option<String> {
        xs.read(TxId::NONE, p)
            .unwrap()
            .map(|v| String::from_utf8(v).unwrap())
    }

    #[test]
    fn relative_backend_paths_are_below_the_home() {
        let h = handler(&Arc::new(MemStore::new()));
        assert_eq!(
            h.backend_dir("backend/vif/3/0"),
            "/local/domain/0/backend/vif/3/0"
        );
        assert_eq!(
            h.backend_dir("/local/domain/7/backend/vif/3/0"),
            "/local/domain/7/backend/vif/3/0"
        );
    }

    #[test]
    fn failure_is_reported_in_hotplug_status() {
        let xs = Arc::new(MemStore::new());
        let h = handler(&xs);
        let be = "/local/domain/0/backend/vif/3/0";
        xs.write(TxId::NONE, &format!("{be}/bridge"), b"no-such-br0")
            .unwrap();
        let err = h.handle(&online("backend/vif/3/0", "vif3.0")).unwrap_err();
        assert!(matches!(err, HandleError::UnknownBridge(..)), "{err}");
        assert_eq!(
            read(&xs, &format!("{be}/hotplug-status")).as_deref(),
            Some("error")
        );
        let msg = read(&xs, &format!("{be}/hotplug-error")).unwrap();
        assert!(msg.contains("no-such-br0"), "{msg}");
    }

    #[test]
    fn bad_bridge_names_in_xenstore_are_refused() {
        let xs = Arc::new(MemStore::new());
        let h = handler(&xs);
        let be = "/local/domain/0/backend/vif/4/0";
        xs.write(TxId::NONE, &format!("{be}/bridge"), b"../../etc")
            .unwrap();
        let err = h.handle(&online(be, "vif4.0")).unwrap_err();
        assert!(matches!(err, HandleError::BadBridgeName(..)), "{err}");
        assert_eq!(
            read(&xs, &format!("{be}/hotplug-status")).as_deref(),
            Some("error")
        );
    }

    #[test]
    fn offline_of_a_vanished_interface_succeeds_and_leaves_xenstore_alone() {
        let xs = Arc::new(MemStore::new());
        let h = handler(&xs);
        let be = "/local/domain/0/backend/vif/5/0";
        xs.write(TxId::NONE, &format!("{be}/bridge"), b"lo")
            .unwrap();
        let before = xs.paths();
        // `lo` is not a bridge and there is no OVSDB: the switch cannot even be identified.
        let ev = VifEvent {
            action: Action::Offline,
            ..online(be, "vif5.0")
        };
        assert!(matches!(h.handle(&ev), Err(HandleError::UnknownBridge(..))));
        assert_eq!(xs.paths(), before);
    }

    #[test]
    fn xenstore_is_connected_on_demand_and_retried_after_failure() {
        let dir = std::env::temp_dir().join(format!("xendevd-xs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("socket");
        let _ = std::fs::remove_file(&socket);
        let path = socket.to_str().unwrap().to_string();
        let connect_to = path.clone();
        let config = Config {
            ovsdb_socket: PathBuf::from("/nonexistent/db.sock"),
            ..Config::default()
        };
        let h = Handler::new(
            config,
            StoreSource::connect_with(Box::new(move || XsClient::connect_unix(&connect_to))),
        );

        // No xenstored yet: an error naming where it was looked for, not a panic.
        match h.handle(&online("backend/vif/1/0", "vif1.0")) {
            Err(HandleError::NoXenstore(msg)) => assert!(msg.contains(&path), "{msg}"),
            other => panic!("{other:?}"),
        }

        // A (fake) xenstored appears: the next event connects and reports through it.
        let store = Arc::new(MemStore::new());
        let be = "/local/domain/0/backend/vif/1/0";
        store
            .write(TxId::NONE, &format!("{be}/bridge"), b"no-such-br0")
            .unwrap();
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let served = store.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let served = served.clone();
                std::thread::spawn(move || xenstore::fake::serve(served, conn.unwrap()));
            }
        });
        let err = h.handle(&online("backend/vif/1/0", "vif1.0")).unwrap_err();
        assert!(matches!(err, HandleError::UnknownBridge(..)), "{err}");
        assert_eq!(
            read(&store, &format!("{be}/hotplug-status")).as_deref(),
            Some("error")
        );
        let msg = read(&store, &format!("{be}/hotplug-error")).unwrap();
        assert!(msg.contains("no-such-br0"), "{msg}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
