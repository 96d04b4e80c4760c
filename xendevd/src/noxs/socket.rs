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
                self.requests(token);
            }
        }
    }

    /// Answers every whole request line the client has sent. A client may keep its connection
    /// for one request after another (chaosd does: a creation then costs no connect, accept
    /// or epoll registration); one that hangs up after its reply is closed on the next read.
    fn requests(&mut self, token: u64) {
        loop {
            let Some(Conn::Request { buf, .. }) = self.conns.get_mut(&token) else {
                // Gone, or a console now.
                return;
            };
            match take_line(buf) {
                Ok(Some(line)) => self.request(token, &line),
                Ok(None) => return,
                Err(TooLong) => return self.close(token),
            }
        }
    }

    /// Answers one request line. The connection stays open for the next one unless it became
    /// a console, or the reply could not be written.
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
        let replied = match self.conns.get(&token) {
            Some(Conn::Request { stream, .. }) => reply(stream, &response).is_ok(),
            _ => false,
        };
        if !replied {
            self.close(token);
        }
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

/// A request line longer than [`MAX_LINE`]: no way back in step with the client.
#[derive(Debug, PartialEq)]
struct TooLong;

/// The first whole line of `buf` (without its newline), taken out of it; `None` until one has
/// arrived.
fn take_line(buf: &mut Vec<u8>) -> Result<Option<Vec<u8>>, TooLong> {
    match buf.iter().position(|&b| b == b'\n') {
        Some(end) if end <= MAX_LINE => Ok(Some(buf.drain(..=end).take(end).collect())),
        Some(_) => Err(TooLong),
        None if buf.len() > MAX_LINE => Err(TooLong),
        None => Ok(None),
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
    // The reply is small and the socket almost always has room: one write. Only if it has not
    // (a client that stopped reading) wait for room rather than lose the rest.
    match stream.write(&line) {
        Ok(n) if n == line.len() => return Ok(()),
        Ok(n) => {
            line.drain(..n);
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    stream.set_nonblocking(false)?;
    let r = stream.write_all(&line);
    stream.set_nonblocking(true)?;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_taken_one_after_another_and_a_partial_one_waits() {
        let mut buf = b"{\"op\":\"list\"}\n{\"op\":\"detach\",\"domid\":5}\n{\"op\"".to_vec();
        assert_eq!(take_line(&mut buf), Ok(Some(b"{\"op\":\"list\"}".to_vec())));
        assert_eq!(
            take_line(&mut buf),
            Ok(Some(b"{\"op\":\"detach\",\"domid\":5}".to_vec()))
        );
        assert_eq!(take_line(&mut buf), Ok(None));
        assert_eq!(buf, b"{\"op\"");
        buf.extend_from_slice(b":\"list\"}\n");
        assert_eq!(take_line(&mut buf), Ok(Some(b"{\"op\":\"list\"}".to_vec())));
        assert!(buf.is_empty());
    }

    #[test]
    fn a_line_longer_than_the_limit_is_refused_whole_or_in_part() {
        let mut partial = vec![b'x'; MAX_LINE + 1];
        assert_eq!(take_line(&mut partial), Err(TooLong));
        let mut whole = vec![b'x'; MAX_LINE + 1];
        whole.push(b'\n');
        assert_eq!(take_line(&mut whole), Err(TooLong));
        let mut at_limit = vec![b'x'; MAX_LINE];
        at_limit.push(b'\n');
        assert_eq!(
            take_line(&mut at_limit).map(|l| l.map(|l| l.len())),
            Ok(Some(MAX_LINE))
        );
    }
}
