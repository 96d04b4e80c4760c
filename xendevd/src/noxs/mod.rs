//! xendevd's NoXS backends: the dom0 ends of guests that use no Xenstore (noxs/ABI.md). The
//! toolstack writes each guest's record (`xendevd-api`) and asks, on xendevd's socket, to
//! `attach` it; this serves its console ring: output to `/var/log/xen/console/guest-NAME.log`
//! and to `chaos console` clients, their keystrokes back to the guest. One thread and one
//! epoll loop for every guest: event channels, the socket and the console clients.
//!
//! A restarted xendevd attaches every guest whose record is there, so none loses its
//! console; a guest whose record went away (the toolstack destroyed it) is detached at the next
//! sweep even if nobody said so.

mod console;
pub mod ring;

use std::collections::HashMap;
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
use xen_dev::{EventChannels, GrantDev};
use xen_types::{DomId, EvtchnPort};
use xendevd_api::{RecordDir, Request, Response, MAX_LINE};

use console::Console;
pub use console::{log_path, LOG_DIR};

/// How often guests whose record disappeared are looked for.
const SWEEP: Duration = Duration::from_secs(2);
/// Tokens of the two fixed epoll sources; connections count up from `FIRST_CONN`.
const LISTENER: u64 = 0;
const EVTCHN: u64 = 1;
const FIRST_CONN: u64 = 2;

/// Where the service finds and keeps things.
#[derive(Debug, Clone)]
pub struct Settings {
    pub socket: PathBuf,
    /// The toolstack's NoXS records (`<chaos run dir>/noxs`).
    pub records: PathBuf,
    pub log_dir: PathBuf,
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

/// The NoXS backend service.
#[derive(Debug)]
pub struct Service {
    settings: Settings,
    listener: UnixListener,
    evtchn: EventChannels,
    grants: Arc<GrantDev>,
    epoll: Epoll,
    consoles: HashMap<DomId, Console>,
    by_port: HashMap<EvtchnPort, DomId>,
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
        let mut service = Service {
            settings,
            listener,
            evtchn,
            grants,
            epoll,
            consoles: HashMap::new(),
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
                Ok(()) => log::info!("domain {} ({}): console served again", g.domid, g.name),
                Err(e) => log::warn!("domain {} ({}): {e}", g.domid, g.name),
            }
        }
    }

    /// Serves the guest whose record is there.
    pub fn attach(&mut self, domid: DomId) -> Result<(), String> {
        let guest = self
            .records()?
            .load(domid)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no NoXS record of domain {domid}"))?;
        // Attaching twice (a toolstack retrying, a restart racing an attach) serves once.
        if let Some(old) = self.consoles.remove(&domid) {
            self.by_port.remove(&old.port);
            old.detach(&self.evtchn);
        }
        let console = Console::attach(&guest, &self.grants, &self.evtchn, &self.settings.log_dir)?;
        self.evtchn
            .unmask(console.port)
            .map_err(|e| format!("unmasking domain {domid}'s console channel: {e}"))?;
        self.by_port.insert(console.port, domid);
        self.consoles.insert(domid, console);
        Ok(())
    }

    pub fn detach(&mut self, domid: DomId) {
        if let Some(c) = self.consoles.remove(&domid) {
            self.by_port.remove(&c.port);
            c.detach(&self.evtchn);
        }
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

    /// Runs until `stop` is set.
    pub fn run(&mut self, stop: &AtomicBool) {
        let mut events = [EpollEvent::empty(); 64];
        let mut last_sweep = Instant::now();
        while !stop.load(Ordering::SeqCst) {
            let n = match self.epoll.wait(&mut events, EpollTimeout::from(500u16)) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => 0,
                Err(e) => {
                    log::error!("epoll: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                    0
                }
            };
            for ev in &events[..n] {
                match ev.data() {
                    LISTENER => self.accept(),
                    EVTCHN => self.service_ports(),
                    token => self.readable(token),
                }
            }
            if last_sweep.elapsed() >= SWEEP {
                self.sweep();
                last_sweep = Instant::now();
            }
        }
        let all: Vec<DomId> = self.consoles.keys().copied().collect();
        for d in all {
            self.detach(d);
        }
        let _ = std::fs::remove_file(&self.settings.socket);
    }

    fn service_ports(&mut self) {
        let pending = match self.evtchn.pending() {
            Ok(p) => p,
            Err(e) => {
                log::warn!("reading event channels: {e}");
                return;
            }
        };
        for port in pending {
            if let Some(c) = self
                .by_port
                .get(&port)
                .and_then(|d| self.consoles.get_mut(d))
            {
                c.service(&self.evtchn);
            }
            if let Err(e) = self.evtchn.unmask(port) {
                log::debug!("unmask {port}: {e}");
            }
        }
    }

    /// Detaches guests whose record is gone (destroyed behind a toolstack that then died).
    fn sweep(&mut self) {
        let Ok(records) = self.records() else { return };
        let stale: Vec<DomId> = self
            .consoles
            .keys()
            .filter(|d| matches!(records.load(**d), Ok(None)))
            .copied()
            .collect();
        for d in stale {
            if let Some(c) = self.consoles.get(&d) {
                log::info!("domain {d} ({}): record gone, console released", c.name);
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
                    c.input(&chunk[..n], &self.evtchn);
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
