//! The socket side: a root-only unix socket, a thread per connected client (threads are kept
//! for the next client), one JSON request per line.
//! Whatever a client sends, it gets an error reply or is disconnected; the daemon keeps serving
//! everyone else.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::unistd::geteuid;

use super::protocol::{Request, Response, MAX_LINE};
use super::{ms, Core, DaemonError};

/// Clients served at once; more get an error reply and are disconnected.
const MAX_CLIENTS: usize = 256;
/// A client that sends nothing for this long is disconnected (it holds a thread).
const IDLE: Duration = Duration::from_secs(120);

/// Binds the socket, replacing a stale one, readable and writable by its owner only.
pub fn bind(path: &Path) -> Result<UnixListener, DaemonError> {
    let err = |source| DaemonError::Socket {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(DaemonError::AlreadyRunning(path.to_path_buf()));
        }
        // Left by a daemon that died.
        std::fs::remove_file(path).map_err(err)?;
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(listener)
}

pub struct Server {
    path: PathBuf,
    stopping: Arc<AtomicBool>,
    accept: JoinHandle<()>,
}

impl Server {
    pub fn start(
        listener: UnixListener,
        path: PathBuf,
        core: Arc<Core>,
    ) -> Result<Server, DaemonError> {
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = stopping.clone();
        let accept = std::thread::Builder::new()
            .name("chaosd-accept".into())
            .spawn(move || accept_loop(listener, core, stop))
            .map_err(DaemonError::Thread)?;
        Ok(Server {
            path,
            stopping,
            accept,
        })
    }

    /// Stops accepting and removes the socket. Clients being served finish their request.
    pub fn stop(self) {
        self.stopping.store(true, Ordering::Release);
        // accept() has no timeout: wake it with a connection of our own.
        let _ = UnixStream::connect(&self.path);
        if self.accept.join().is_err() {
            log::error!("the accept thread panicked");
        }
        if let Err(e) = std::fs::remove_file(&self.path) {
            log::warn!("{}: {e}", self.path.display());
        }
    }
}

/// Accepts clients and hands each to a client thread (see [`ClientThreads`]).
fn accept_loop(listener: UnixListener, core: Arc<Core>, stopping: Arc<AtomicBool>) {
    let threads = ClientThreads::new(core);
    threads.keep_one_idle();
    for conn in listener.incoming() {
        if stopping.load(Ordering::Acquire) {
            return;
        }
        let mut stream = match conn {
            Ok(s) => s,
            Err(e) => {
                log::warn!("accept: {e}");
                // Out of descriptors, typically: do not spin.
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if threads.active.fetch_add(1, Ordering::AcqRel) >= MAX_CLIENTS {
            threads.active.fetch_sub(1, Ordering::AcqRel);
            let _ = reply(&mut stream, &Response::error("chaosd: too many clients"));
            continue;
        }
        // (a clock read is a system call in a PV dom0: only when it is printed)
        let accepted = log::log_enabled!(log::Level::Debug).then(Instant::now);
        threads.hand((stream, accepted));
        // The next client's thread, if none is idle, starts while this one is served.
        threads.keep_one_idle();
    }
}

/// A client: its connection, and when it was accepted (when -vv prints it).
type Accepted = (UnixStream, Option<Instant>);

/// Client threads outlive their clients: an idle one waits on a shared channel for the next
/// client, and one that has served its client goes back to waiting (up to [`MAX_IDLE`] wait at
/// once; more end). In a PV dom0 a new thread costs milliseconds, and so does a thread's
/// first run through a request (its stack and allocator arena fault in page by page): a
/// client gets a thread that has served before, and one is started ahead when none is idle
/// (docs/COSTS.md). Dropped (chaosd stops), the idle threads end, and busy ones after their
/// client.
struct ClientThreads {
    core: Arc<Core>,
    tx: crossbeam_channel::Sender<Accepted>,
    rx: crossbeam_channel::Receiver<Accepted>,
    idle: Arc<AtomicUsize>,
    /// Clients connected (accepted and not yet gone).
    active: Arc<AtomicUsize>,
}

/// Idle client threads kept waiting.
const MAX_IDLE: usize = 2;

impl ClientThreads {
    fn new(core: Arc<Core>) -> ClientThreads {
        let (tx, rx) = crossbeam_channel::unbounded();
        ClientThreads {
            core,
            tx,
            rx,
            idle: Arc::new(AtomicUsize::new(0)),
            active: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn keep_one_idle(&self) {
        if self.idle.load(Ordering::Acquire) == 0 {
            match self.start() {
                Ok(()) => {
                    self.idle.fetch_add(1, Ordering::AcqRel);
                }
                Err(e) => log::warn!("starting a client thread ahead: {e}"),
            }
        }
    }

    /// Hands a client to an idle thread, starting one if there is none. `idle` counts the
    /// idle threads no client has been handed to yet: handing takes one off at once, so that
    /// a client is never queued behind one an idle thread is about to take.
    fn hand(&self, client: Accepted) {
        let reserved = self
            .idle
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok();
        if !reserved {
            if let Err(e) = self.start() {
                log::error!("starting a client thread: {e}");
                let (mut stream, _) = client;
                let _ = reply(
                    &mut stream,
                    &Response::error("chaosd: cannot start a thread"),
                );
                self.active.fetch_sub(1, Ordering::AcqRel);
                return;
            }
        }
        // (cannot fail: this holds a receiver)
        let _ = self.tx.send(client);
    }

    /// Starts a thread that serves clients from the channel; the caller counts it idle or not.
    fn start(&self) -> std::io::Result<()> {
        let (core, rx) = (self.core.clone(), self.rx.clone());
        let (idle, active) = (self.idle.clone(), self.active.clone());
        std::thread::Builder::new()
            .name("chaosd-client".into())
            .spawn(move || {
                while let Ok((stream, accepted)) = rx.recv() {
                    if let Some(t) = accepted {
                        log::debug!("client served {:.3} ms after accept", ms(t.elapsed()));
                    }
                    if let Err(e) = serve(stream, &core) {
                        log::debug!("client: {e}");
                    }
                    active.fetch_sub(1, Ordering::AcqRel);
                    // Idle again, unless enough threads are.
                    if idle.fetch_add(1, Ordering::AcqRel) >= MAX_IDLE {
                        idle.fetch_sub(1, Ordering::AcqRel);
                        return;
                    }
                }
            })
            .map(drop)
    }
}

/// Serves one client until it hangs up, goes idle, or sends a line too long to be a request.
fn serve(stream: UnixStream, core: &Core) -> std::io::Result<()> {
    // Read, written and polled through one descriptor (no clones: system calls each).
    let mut writer = &stream;
    if let Err(msg) = check_peer(&stream) {
        log::warn!("refused a client: {msg}");
        return reply(&mut writer, &Response::error(msg));
    }
    stream.set_read_timeout(Some(IDLE))?;
    // A client that does not read its replies must not hold the thread either.
    writer.set_write_timeout(Some(IDLE))?;
    let mut reader = BufReader::new(&stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(());
        }
        if line.last() != Some(&b'\n') {
            if line.len() > MAX_LINE {
                // The rest of the line is still coming: there is no way back in step.
                return reply(
                    &mut writer,
                    &Response::error(format!("request longer than {MAX_LINE} bytes")),
                );
            }
            // Hung up in the middle of a request: nothing to answer.
            return Ok(());
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        // Where a request's time goes outside the creation's own phases (chaosd -vv; the
        // clock is read only then).
        let read_at = log::log_enabled!(log::Level::Debug).then(Instant::now);
        let request = serde_json::from_slice::<Request>(&line);
        let decoded = read_at.map(|t| t.elapsed());
        let response = match request {
            Ok(req) => core.handle(req, &|| still_connected(&stream)),
            Err(e) => Response::error(format!("invalid request: {e}")),
        };
        let handled = read_at.map(|t| t.elapsed());
        let replied = reply(&mut writer, &response);
        core.replied();
        replied?;
        if let (Some(t), Some(decoded), Some(handled)) = (read_at, decoded, handled) {
            log::debug!(
                "request of {} bytes: decoded in {:.3} ms, handled by {:.3} ms, replied by {:.3} ms",
                line.len(),
                ms(decoded),
                ms(handled),
                ms(t.elapsed())
            );
        }
    }
}

/// Whether the client is still there to hear the answer: a client that was killed or gave up
/// waiting has closed its end, and its creation is rolled back rather than committed for no
/// one. (A request it sent before hanging up may still be buffered: it is read, and refused
/// here at the commit point.)
fn still_connected(stream: &UnixStream) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    // A unix socket whose peer closed its end polls POLLHUP (reported whatever is asked for,
    // also while unread data waits).
    let mut fds = [PollFd::new(stream.as_fd(), PollFlags::empty())];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(_) => !fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR)),
        // Cannot tell: do what was asked.
        Err(_) => true,
    }
}

fn reply(mut w: impl Write, response: &Response) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(response).unwrap_or_else(|e| {
        // Our own types always serialize; say so rather than hang the client if not.
        format!(r#"{{"result":"error","message":"cannot encode the reply: {e}"}}"#).into_bytes()
    });
    bytes.push(b'\n');
    w.write_all(&bytes)
}

/// Root, or the user the daemon runs as (tests run unprivileged), may talk to chaosd.
fn check_peer(stream: &UnixStream) -> Result<(), String> {
    let uid = getsockopt(stream, PeerCredentials)
        .map_err(|e| format!("SO_PEERCRED: {e}"))?
        .uid();
    // Asked of the kernel once (a system call each time otherwise).
    static OWN: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let own = *OWN.get_or_init(|| geteuid().as_raw());
    if uid == 0 || uid == own {
        Ok(())
    } else {
        Err(format!("uid {uid} may not use chaosd (root only)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_client_is_seen_gone_even_with_its_request_unread() {
        let (a, b) = UnixStream::pair().expect("pair");
        assert!(still_connected(&a));
        (&b).write_all(b"{\"op\":\"status\"}\n").expect("write");
        assert!(still_connected(&a), "data waiting is no hang-up");
        drop(b);
        assert!(!still_connected(&a));
    }
}
