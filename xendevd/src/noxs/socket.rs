//! xendevd's socket: clients, their request lines (`xendevd-api`), console streams.

use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use nix::sys::epoll::{EpollEvent, EpollFlags};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use xen_types::DomId;
use xendevd_api::{Request, Response, MAX_LINE};

use super::{io_err, NoxsError, Service};

/// A client connection: reading its request line, or a console stream.
#[derive(Debug)]
pub(super) enum Conn {
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

impl Service {
    pub(super) fn accept(&mut self) {
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

    pub(super) fn close(&mut self, token: u64) {
        if let Some(conn) = self.conns.remove(&token) {
            let _ = self.epoll.delete(conn.stream());
        }
    }

    pub(super) fn readable(&mut self, token: u64) {
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
pub(super) fn bind(path: &Path) -> Result<UnixListener, NoxsError> {
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
