//! xendevd's NoXS backends: the dom0 ends of guests that use no Xenstore (noxs/ABI.md). The
//! toolstack writes each guest's record (`xendevd-api`) and asks, on xendevd's socket, to
//! `attach` it; this serves
//! - its console ring: output to `/var/log/xen/console/guest-NAME.log` and to `chaos console`
//!   clients, their keystrokes back to the guest ([`console`]);
//! - its vifs ([`vif`]): a TAP `vif<domid>.<id>` per vif on the vif's bridge (a Linux bridge
//!   or Open vSwitch, as for netback's vifs), frames between it and the guest's netif rings.
//!
//! One thread and one epoll loop for every guest: event channels (one `/dev/xen/evtchn` for
//! all), the TAPs, the socket and the console clients. A busy vif does a bounded pass and is
//! queued for another after the others had their turn.
//!
//! A restarted xendevd attaches every guest whose record is there, so none loses its console
//! or network (its vifs reconnect to the rings their control pages name); a guest whose record
//! went away (the toolstack destroyed it) is detached at the next sweep even if nobody said so.
//!
//! The epoll loop is here; attaching and detaching a guest in `guest`, the socket's clients
//! and requests in `socket`.

mod console;
pub mod console_ring;
mod guest;
pub mod netif;
pub mod page;
mod socket;
pub mod tap;
pub mod vif;

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use xen_dev::{EventChannels, GrantCopy, GrantDev, GrantMap};
use xen_types::{DomId, EvtchnPort, GrantRef};
use xendevd_api::RecordDir;

use crate::handler::{self, Handler, StoreSource};
use console::Console;
pub use console::{log_path, LOG_DIR};
use socket::{bind, Conn};
use tap::Tap;
use vif::{Scratch, Vif};

/// How often guests whose record disappeared are looked for.
const SWEEP: Duration = Duration::from_secs(2);
/// Tokens of the two fixed epoll sources; connections count up from `FIRST_CONN`.
const LISTENER: u64 = 0;
const EVTCHN: u64 = 1;
const FIRST_CONN: u64 = 2;

/// A vif: its guest and its number.
type VifKey = (DomId, u32);
/// Where the service finds and keeps things.
#[derive(Debug, Clone)]
pub struct Settings {
    pub socket: PathBuf,
    /// The toolstack's NoXS records (`<chaos run dir>/noxs`).
    pub records: PathBuf,
    pub log_dir: PathBuf,
    /// How vifs reach their bridges (the default bridge, OVSDB's socket).
    pub switch: handler::Config,
}

#[derive(Debug, thiserror::Error)]
pub enum NoxsError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> NoxsError {
    let what = what.into();
    move |source| NoxsError::Io { what, source }
}

/// dom0's Xen devices, as the backends use them.
#[derive(Debug)]
pub struct XenDevices {
    pub evtchn: EventChannels,
    pub grants: Arc<GrantDev>,
}

impl vif::Xen for XenDevices {
    type Page = GrantMap;

    fn map(&self, dom: DomId, gref: GrantRef) -> io::Result<GrantMap> {
        self.grants.map(dom, gref)
    }

    fn copy(&self, ops: &mut [GrantCopy], buf: &mut [u8]) -> io::Result<()> {
        self.grants.copy(ops, buf)
    }

    fn bind(&self, dom: DomId, port: EvtchnPort) -> io::Result<EvtchnPort> {
        let local = self.evtchn.bind_interdomain(dom, port)?;
        if let Err(e) = self.evtchn.unmask(local) {
            log::debug!("unmask {local}: {e}");
        }
        Ok(local)
    }

    fn unbind(&self, local: EvtchnPort) {
        if let Err(e) = self.evtchn.unbind(local) {
            log::debug!("unbind {local}: {e}");
        }
    }

    fn notify(&self, local: EvtchnPort) {
        if let Err(e) = self.evtchn.notify(local) {
            log::debug!("notify {local}: {e}");
        }
    }
}

/// Who an event channel port belongs to.
#[derive(Debug, Clone, Copy)]
enum Owner {
    Console(DomId),
    /// A vif's device channel.
    VifCtrl(VifKey),
    /// One of a vif's data channels.
    VifData(VifKey),
}

/// A vif being served, and what the loop watches for it.
#[derive(Debug)]
struct Served {
    vif: Vif<GrantMap, Tap>,
    bridge: String,
    /// The TAP's epoll token, and whether the TAP is watched.
    token: u64,
    watched: bool,
    data_ports: Vec<EvtchnPort>,
}

/// The NoXS backend service.
#[derive(Debug)]
pub struct Service {
    settings: Settings,
    listener: UnixListener,
    xen: XenDevices,
    epoll: Epoll,
    consoles: HashMap<DomId, Console>,
    vifs: HashMap<VifKey, Served>,
    /// TAP tokens.
    links: HashMap<u64, VifKey>,
    /// Vifs with work left after their last pass.
    again: BTreeSet<VifKey>,
    scratch: Scratch,
    bridges: Handler,
    by_port: HashMap<EvtchnPort, Owner>,
    conns: HashMap<u64, Conn>,
    next_token: u64,
}

impl Service {
    /// Opens the Xen devices, binds the socket (root only) and attaches every recorded guest.
    pub fn start(settings: Settings) -> Result<Service, NoxsError> {
        let evtchn = EventChannels::open(true).map_err(io_err(xen_dev::evtchn::EVTCHN_PATH))?;
        let grants = Arc::new(GrantDev::open().map_err(io_err(xen_dev::gntdev::GNTDEV_PATH))?);
        let listener = bind(&settings.socket)?;
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| NoxsError::Io {
            what: "epoll".into(),
            source: e.into(),
        })?;
        let add = |fd: &dyn AsFd, token: u64| {
            epoll
                .add(fd, EpollEvent::new(EpollFlags::EPOLLIN, token))
                .map_err(|e| NoxsError::Io {
                    what: "epoll".into(),
                    source: e.into(),
                })
        };
        add(&listener, LISTENER)?;
        add(&evtchn, EVTCHN)?;
        // Bridges of NoXS vifs come from their records, never from Xenstore.
        let bridges = Handler::new(settings.switch.clone(), StoreSource::connect_on_demand());
        let mut service = Service {
            settings,
            listener,
            xen: XenDevices { evtchn, grants },
            epoll,
            consoles: HashMap::new(),
            vifs: HashMap::new(),
            links: HashMap::new(),
            again: BTreeSet::new(),
            scratch: Scratch::new(),
            bridges,
            by_port: HashMap::new(),
            conns: HashMap::new(),
            next_token: FIRST_CONN,
        };
        service.reattach_all();
        Ok(service)
    }

    /// The records (the directory is made at start, by [`Service::reattach_all`]).
    fn records(&self) -> RecordDir {
        RecordDir::at(&self.settings.records)
    }

    /// Runs until `stop` is set.
    pub fn run(&mut self, stop: &AtomicBool) {
        let mut events = [EpollEvent::empty(); 64];
        let mut last_sweep = Instant::now();
        while !stop.load(Ordering::SeqCst) {
            // Vifs with work left are served again at once, after this round of events.
            let timeout = if self.again.is_empty() { 500u16 } else { 0 };
            let n = match self.epoll.wait(&mut events, EpollTimeout::from(timeout)) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => 0,
                Err(e) => {
                    log::error!("epoll: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                    0
                }
            };
            let pending = std::mem::take(&mut self.again);
            for ev in &events[..n] {
                match ev.data() {
                    LISTENER => self.accept(),
                    EVTCHN => self.service_ports(),
                    token if self.links.contains_key(&token) => {
                        self.link_readable(token, ev.events())
                    }
                    token => self.readable(token),
                }
            }
            for key in pending {
                self.vif_event(key, Owner::VifData(key));
            }
            if last_sweep.elapsed() >= SWEEP {
                self.sweep();
                last_sweep = Instant::now();
            }
        }
        let mut all: Vec<DomId> = self.consoles.keys().copied().collect();
        all.extend(self.vifs.keys().map(|(d, _)| *d));
        all.sort();
        all.dedup();
        for d in all {
            self.detach(d);
        }
        let _ = std::fs::remove_file(&self.settings.socket);
    }

    fn service_ports(&mut self) {
        let pending = match self.xen.evtchn.pending() {
            Ok(p) => p,
            Err(e) => {
                log::warn!("reading event channels: {e}");
                return;
            }
        };
        for port in pending {
            match self.by_port.get(&port).copied() {
                Some(Owner::Console(d)) => self.console_event(d),
                Some(owner @ (Owner::VifCtrl(key) | Owner::VifData(key))) => {
                    self.vif_event(key, owner)
                }
                None => {}
            }
            // Ports unbound meanwhile (a vif that disconnected) are no longer ours.
            if self.by_port.contains_key(&port) {
                if let Err(e) = self.xen.evtchn.unmask(port) {
                    log::debug!("unmask {port}: {e}");
                }
            }
        }
    }

    /// A vif's channel fired (or it has work left).
    fn vif_event(&mut self, key: VifKey, owner: Owner) {
        let Some(s) = self.vifs.get_mut(&key) else {
            return;
        };
        let more = match owner {
            Owner::VifCtrl(_) => s.vif.on_ctrl(&self.xen, &mut self.scratch),
            _ => s.vif.on_data(&self.xen, &mut self.scratch),
        };
        if more {
            self.again.insert(key);
        }
        self.sync(key);
    }

    /// A vif's TAP has frames for the guest (or broke).
    fn link_readable(&mut self, token: u64, flags: EpollFlags) {
        let Some(&key) = self.links.get(&token) else {
            return;
        };
        let Some(s) = self.vifs.get_mut(&key) else {
            return;
        };
        if flags.intersects(EpollFlags::EPOLLERR | EpollFlags::EPOLLHUP) {
            // The interface was deleted under us: stop watching it (it would wake the loop
            // for ever); the guest keeps its rings until it is attached again.
            log::warn!(
                "{}: its TAP went away; the vif has no network until the guest is attached again",
                s.vif.name
            );
            let _ = self.epoll.delete(s.vif.link());
            self.links.remove(&token);
            return;
        }
        if s.vif.on_link(&self.xen, &mut self.scratch) {
            self.again.insert(key);
        }
        self.sync(key);
    }

    /// Output (or room) on a console. One attached before its guest had a name (a warm
    /// shell's) learns the name first, so the log is the guest's: from chaos's guest record,
    /// which its creation wrote before the guest could run (its NoXS record names no guest).
    fn console_event(&mut self, domid: DomId) {
        let unnamed = self.consoles.get(&domid).is_some_and(|c| !c.named());
        if unnamed {
            let name = self
                .records()
                .guest_name(domid)
                .map(Option::unwrap_or_default);
            match (name, self.consoles.get_mut(&domid)) {
                (Ok(name), Some(c)) => c.name(&name, &self.settings.log_dir),
                (Err(e), _) => log::warn!("domain {domid}: {e}"),
                _ => {}
            }
        }
        if let Some(c) = self.consoles.get_mut(&domid) {
            c.service(&self.xen.evtchn);
        }
    }

    /// Detaches guests whose record is gone (destroyed behind a toolstack that then died).
    fn sweep(&mut self) {
        let Ok(recorded) = self.records().domids() else {
            return;
        };
        let mut stale: Vec<DomId> = self
            .consoles
            .keys()
            .copied()
            .chain(self.vifs.keys().map(|(d, _)| *d))
            .filter(|d| !recorded.contains(d))
            .collect();
        stale.sort();
        stale.dedup();
        for d in stale {
            if let Some(c) = self.consoles.get(&d) {
                log::info!("domain {d} ({}): record gone, devices released", c.name);
            }
            self.detach(d);
        }
    }
}
