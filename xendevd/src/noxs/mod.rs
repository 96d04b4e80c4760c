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

mod console;
pub mod console_ring;
pub mod netif;
pub mod page;
pub mod tap;
pub mod vif;

use std::collections::{BTreeSet, HashMap};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use xen_dev::{EventChannels, GrantCopy, GrantDev, GrantMap};
use xen_types::{DomId, EvtchnPort, GrantRef};
use xendevd_api::{NoxsGuest, NoxsVif, RecordDir, Request, Response, MAX_LINE};

use crate::handler::{self, Handler, StoreSource};
use crate::uevent::{Action, Control, VifEvent};
use console::Console;
pub use console::{log_path, LOG_DIR};
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

/// A client connection: reading its request line, or a console stream.
#[derive(Debug)]
enum Conn {
    Request { stream: UnixStream, buf: Vec<u8> },
    Console { stream: UnixStream, domid: DomId },
}

impl Conn {
    fn stream(&self) -> &UnixStream {
        match self {
            Conn::Request { stream, .. } | Conn::Console { stream, .. } => stream,
        }
    }
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

    fn records(&self) -> Result<RecordDir, String> {
        RecordDir::open(&self.settings.records).map_err(|e| e.to_string())
    }

    /// After a restart: every guest with a record is served again.
    fn reattach_all(&mut self) {
        let (guests, bad) = match self
            .records()
            .and_then(|r| r.all().map_err(|e| e.to_string()))
        {
            Ok(found) => found,
            Err(e) => {
                log::warn!("NoXS records: {e}");
                return;
            }
        };
        for e in bad {
            log::warn!("{e}");
        }
        for g in guests {
            match self.attach(g.domid) {
                Ok(()) => log::info!(
                    "domain {} ({}): console and {} vif(s) served again",
                    g.domid,
                    g.name,
                    g.vifs.len()
                ),
                Err(e) => log::warn!("domain {} ({}): {e}", g.domid, g.name),
            }
        }
    }

    /// Serves the guest whose record is there: its console, then its vifs. If one of them
    /// cannot be served, none is.
    pub fn attach(&mut self, domid: DomId) -> Result<(), String> {
        let guest = self
            .records()?
            .load(domid)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no NoXS record of domain {domid}"))?;
        // Attaching twice (a toolstack retrying, a restart racing an attach) serves once.
        self.detach_devices(domid);
        let console = Console::attach(
            &guest,
            &self.xen.grants,
            &self.xen.evtchn,
            &self.settings.log_dir,
        )?;
        self.xen
            .evtchn
            .unmask(console.port)
            .map_err(|e| format!("unmasking domain {domid}'s console channel: {e}"))?;
        self.by_port.insert(console.port, Owner::Console(domid));
        self.consoles.insert(domid, console);
        for v in &guest.vifs {
            if let Err(e) = self.attach_vif(&guest, v) {
                self.detach_devices(domid);
                return Err(e);
            }
        }
        Ok(())
    }

    /// A vif: its TAP on the bridge, then the control page and the handshake.
    fn attach_vif(&mut self, guest: &NoxsGuest, v: &NoxsVif) -> Result<(), String> {
        let dom = guest.domid;
        let name = vif::ifname(dom, v.id);
        let tap = Tap::create(&name, noxs::VIF_MTU).map_err(|e| format!("{name}: {e}"))?;
        let plug = |action| VifEvent {
            action,
            vif: name.clone(),
            control: Control::Noxs {
                bridge: Some(v.bridge.clone()),
            },
        };
        self.bridges
            .handle(&plug(Action::Online))
            .map_err(|e| format!("{name}: bridge {}: {e}", v.bridge))?;
        let vif = match Vif::attach(
            &self.xen,
            &mut self.scratch,
            dom,
            v.id,
            v.ctrl_gref,
            v.evtchn,
            tap,
        ) {
            Ok(vif) => vif,
            Err(e) => {
                // The TAP went with the failed attach; Open vSwitch keeps its port row.
                let _ = self.bridges.handle(&plug(Action::Offline));
                return Err(e);
            }
        };
        let token = self.next_token;
        self.next_token += 1;
        if let Err(e) = self
            .epoll
            .add(vif.link(), EpollEvent::new(EpollFlags::empty(), token))
        {
            let tap = vif.detach(&self.xen);
            let _ = self.bridges.handle(&plug(Action::Offline));
            drop(tap);
            return Err(format!("{name}: epoll: {e}"));
        }
        let key = (dom, v.id);
        self.by_port.insert(vif.ctrl_port, Owner::VifCtrl(key));
        self.links.insert(token, key);
        log::info!("{name}: on {}, waiting for the frontend", v.bridge);
        self.vifs.insert(
            key,
            Served {
                vif,
                bridge: v.bridge.clone(),
                token,
                watched: false,
                data_ports: Vec::new(),
            },
        );
        self.sync(key);
        Ok(())
    }

    /// After a vif acted: its data ports in the port map, its TAP watched or not.
    fn sync(&mut self, key: VifKey) {
        let Some(s) = self.vifs.get_mut(&key) else {
            return;
        };
        let ports = s.vif.data_ports();
        if ports != s.data_ports {
            for p in &s.data_ports {
                self.by_port.remove(p);
            }
            for p in &ports {
                self.by_port.insert(*p, Owner::VifData(key));
            }
            s.data_ports = ports;
        }
        let want = s.vif.wants_link() && self.links.contains_key(&s.token);
        if want != s.watched && self.links.contains_key(&s.token) {
            let flags = if want {
                EpollFlags::EPOLLIN
            } else {
                EpollFlags::empty()
            };
            match self
                .epoll
                .modify(s.vif.link(), &mut EpollEvent::new(flags, s.token))
            {
                Ok(()) => s.watched = want,
                Err(e) => log::warn!("{}: epoll: {e}", s.vif.name),
            }
        }
    }

    /// Stops serving a guest: console, vifs (TAPs removed, off their bridges), clients.
    pub fn detach(&mut self, domid: DomId) {
        self.detach_devices(domid);
        let gone: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c, Conn::Console { domid: d, .. } if *d == domid))
            .map(|(t, _)| *t)
            .collect();
        for t in gone {
            self.close(t);
        }
    }

    fn detach_devices(&mut self, domid: DomId) {
        if let Some(c) = self.consoles.remove(&domid) {
            self.by_port.remove(&c.port);
            c.detach(&self.xen.evtchn);
        }
        let keys: Vec<VifKey> = self
            .vifs
            .keys()
            .filter(|(d, _)| *d == domid)
            .copied()
            .collect();
        for key in keys {
            let Some(s) = self.vifs.remove(&key) else {
                continue;
            };
            self.again.remove(&key);
            self.links.remove(&s.token);
            self.by_port.remove(&s.vif.ctrl_port);
            for p in &s.data_ports {
                self.by_port.remove(p);
            }
            let _ = self.epoll.delete(s.vif.link());
            let name = s.vif.name.clone();
            let tap = s.vif.detach(&self.xen);
            // Off the bridge while the TAP still exists (Open vSwitch keeps the port row of
            // a vanished interface); the TAP goes when dropped.
            let off = VifEvent {
                action: Action::Offline,
                vif: name.clone(),
                control: Control::Noxs {
                    bridge: Some(s.bridge.clone()),
                },
            };
            if let Err(e) = self.bridges.handle(&off) {
                log::warn!("{name}: leaving {}: {e}", s.bridge);
            }
            drop(tap);
            log::info!("{name}: removed");
        }
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
                Some(Owner::Console(d)) => {
                    if let Some(c) = self.consoles.get_mut(&d) {
                        c.service(&self.xen.evtchn);
                    }
                }
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

    /// Detaches guests whose record is gone (destroyed behind a toolstack that then died).
    fn sweep(&mut self) {
        let Ok(records) = self.records() else { return };
        let mut stale: Vec<DomId> = self
            .consoles
            .keys()
            .copied()
            .chain(self.vifs.keys().map(|(d, _)| *d))
            .filter(|d| matches!(records.load(*d), Ok(None)))
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

    fn accept(&mut self) {
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::warn!("accept: {e}");
                    return;
                }
            };
            if let Err(m) = check_peer(&stream) {
                log::warn!("refused a client: {m}");
                let _ = reply(&stream, &Response::error(m));
                continue;
            }
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let token = self.next_token;
            self.next_token += 1;
            if self
                .epoll
                .add(&stream, EpollEvent::new(EpollFlags::EPOLLIN, token))
                .is_err()
            {
                continue;
            }
            self.conns.insert(
                token,
                Conn::Request {
                    stream,
                    buf: Vec::new(),
                },
            );
        }
    }

    fn close(&mut self, token: u64) {
        if let Some(conn) = self.conns.remove(&token) {
            let _ = self.epoll.delete(conn.stream());
        }
    }

    fn readable(&mut self, token: u64) {
        let mut chunk = [0u8; 4096];
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        let n = match conn {
            Conn::Request { stream, .. } | Conn::Console { stream, .. } => stream.read(&mut chunk),
        };
        let n = match n {
            Ok(0) => return self.close(token),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(_) => return self.close(token),
        };
        match conn {
            Conn::Console { domid, .. } => {
                let domid = *domid;
                if let Some(c) = self.consoles.get_mut(&domid) {
                    c.input(&chunk[..n], &self.xen.evtchn);
                }
            }
            Conn::Request { buf, .. } => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > MAX_LINE {
                    return self.close(token);
                }
                if let Some(end) = buf.iter().position(|&b| b == b'\n') {
                    let line = buf[..end].to_vec();
                    self.request(token, &line);
                }
            }
        }
    }

    /// Answers one request line; the connection closes after it unless it became a console.
    fn request(&mut self, token: u64, line: &[u8]) {
        let response = match serde_json::from_slice::<Request>(line) {
            Err(e) => Response::error(format!("invalid request: {e}")),
            Ok(Request::Attach { domid }) => match self.attach(domid) {
                Ok(()) => Response::Ok {},
                Err(e) => Response::error(e),
            },
            Ok(Request::Detach { domid }) => {
                self.detach(domid);
                Response::Ok {}
            }
            Ok(Request::List {}) => {
                let mut domids: Vec<DomId> = self.consoles.keys().copied().collect();
                domids.sort();
                Response::Guests { domids }
            }
            Ok(Request::Console { domid }) => return self.become_console(token, domid),
        };
        if let Some(Conn::Request { stream, .. }) = self.conns.get(&token) {
            let _ = reply(stream, &response);
        }
        self.close(token);
    }

    fn become_console(&mut self, token: u64, domid: DomId) {
        let Some(Conn::Request { stream, .. }) = self.conns.remove(&token) else {
            return;
        };
        let Some(console) = self.consoles.get_mut(&domid) else {
            let _ = reply(
                &stream,
                &Response::error(format!("domain {domid} is not a NoXS guest served here")),
            );
            let _ = self.epoll.delete(&stream);
            return;
        };
        if reply(&stream, &Response::Ok {}).is_err() {
            let _ = self.epoll.delete(&stream);
            return;
        }
        match stream.try_clone() {
            Ok(writer) => console.watch(writer),
            Err(_) => {
                let _ = self.epoll.delete(&stream);
                return;
            }
        }
        self.conns.insert(token, Conn::Console { stream, domid });
    }
}

/// Binds the socket, replacing a stale one, readable and writable by root only.
fn bind(path: &Path) -> Result<UnixListener, NoxsError> {
    let what = || path.display().to_string();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err(what()))?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(NoxsError::Io {
                what: what(),
                source: io::Error::new(io::ErrorKind::AddrInUse, "another xendevd serves it"),
            });
        }
        std::fs::remove_file(path).map_err(io_err(what()))?;
    }
    let listener = UnixListener::bind(path).map_err(io_err(what()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io_err(what()))?;
    listener.set_nonblocking(true).map_err(io_err(what()))?;
    Ok(listener)
}

/// Root, or the user xendevd runs as (tests), may talk to it.
fn check_peer(stream: &UnixStream) -> Result<(), String> {
    let uid = getsockopt(stream, PeerCredentials)
        .map_err(|e| format!("SO_PEERCRED: {e}"))?
        .uid();
    let own = nix::unistd::geteuid().as_raw();
    if uid == 0 || uid == own {
        Ok(())
    } else {
        Err(format!("uid {uid} may not use xendevd (root only)"))
    }
}

fn reply(mut stream: &UnixStream, response: &Response) -> io::Result<()> {
    let mut line = serde_json::to_vec(response).map_err(io::Error::other)?;
    line.push(b'\n');
    // The reply is small: wait for room rather than lose it on a non-blocking socket.
    stream.set_nonblocking(false)?;
    let r = stream.write_all(&line);
    stream.set_nonblocking(true)?;
    r
}
