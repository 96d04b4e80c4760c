//! The socket side: a root-only unix socket, a thread per connected client (threads accept
//! their own clients and are kept for the next), one JSON request per line.
//! Whatever a client sends, it gets an error reply or is disconnected; the daemon keeps serving
//! everyone else.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::socket::{getsockopt, shutdown, sockopt::PeerCredentials, Shutdown};
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
    threads: Arc<ClientThreads>,
    keeper: JoinHandle<()>,
}

impl Server {
    pub fn start(
        listener: UnixListener,
        path: PathBuf,
        core: Arc<Core>,
    ) -> Result<Server, DaemonError> {
        let (more, wanted) = crossbeam_channel::unbounded();
        let threads = Arc::new(ClientThreads {
            listener,
            core,
            stopping: AtomicBool::new(false),
            waiting: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            more,
        });
        threads.start().map_err(DaemonError::Thread)?;
        let kept = threads.clone();
        let keeper = match std::thread::Builder::new()
            .name("chaosd-keeper".into())
            .spawn(move || kept.keep_one_waiting(wanted))
        {
            Ok(k) => k,
            Err(e) => {
                // The thread started above must not go on accepting.
                let _ = threads.stop_accepting();
                return Err(DaemonError::Thread(e));
            }
        };
        Ok(Server {
            path,
            threads,
            keeper,
        })
    }

    /// Stops accepting and removes the socket. Clients being served finish their request.
    pub fn stop(self) {
        if let Err(e) = self.threads.stop_accepting() {
            log::warn!("shutting the socket down: {e}");
        }
        let _ = self.threads.more.send(());
        if self.keeper.join().is_err() {
            log::error!("the keeper thread panicked");
        }
        // No thread may accept a client once stop returns.
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.threads.waiting.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let left = self.threads.waiting.load(Ordering::Acquire);
        if left > 0 {
            log::error!("{left} client thread(s) still wait in accept() after the shutdown");
        }
        if let Err(e) = std::fs::remove_file(&self.path) {
            log::warn!("{}: {e}", self.path.display());
        }
    }
}

/// Client threads accept their clients themselves (no hand-over from an accepting thread:
/// waking another thread is a context switch per connection) and outlive them: a thread that
/// has served its client waits in accept() for the next (up to [`MAX_WAITING`] wait at once;
/// more end). In a PV dom0 a new thread costs milliseconds, and so does a thread's first run
/// through a request (its stack and allocator arena fault in page by page): a client gets a
/// thread that has served before, and when the last waiting thread takes a client, the keeper
/// starts the next one while that client is served (docs/COSTS.md).
struct ClientThreads {
    listener: UnixListener,
    core: Arc<Core>,
    stopping: AtomicBool,
    /// Threads waiting in accept(), or started to.
    waiting: AtomicUsize,
    /// Clients connected (accepted and not yet gone).
    active: AtomicUsize,
    /// Asks the keeper for one more waiting thread.
    more: crossbeam_channel::Sender<()>,
}

/// Client threads kept waiting for a client.
const MAX_WAITING: usize = 2;

impl ClientThreads {
    /// Marks the server stopping and wakes every thread waiting in accept(), which then
    /// fails (EINVAL on Linux) and sees `stopping`.
    fn stop_accepting(&self) -> nix::Result<()> {
        self.stopping.store(true, Ordering::Release);
        shutdown(self.listener.as_raw_fd(), Shutdown::Both)
    }

    /// Starts a thread that accepts and serves clients, counted waiting.
    fn start(self: &Arc<Self>) -> std::io::Result<()> {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        let threads = self.clone();
        let started = std::thread::Builder::new()
            .name("chaosd-client".into())
            .spawn(move || threads.accept_and_serve());
        if started.is_err() {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
        }
        started.map(drop)
    }

    /// The keeper: starts a thread whenever none is left waiting, until the server stops.
    fn keep_one_waiting(self: Arc<Self>, wanted: crossbeam_channel::Receiver<()>) {
        while wanted.recv().is_ok() {
            if self.stopping.load(Ordering::Acquire) {
                return;
            }
            if self.waiting.load(Ordering::Acquire) == 0 {
                if let Err(e) = self.start() {
                    log::warn!("starting a client thread ahead: {e}");
                }
            }
        }
    }

    fn accept_and_serve(self: Arc<Self>) {
        loop {
            let conn = self.listener.accept();
            let left = self.waiting.fetch_sub(1, Ordering::AcqRel) - 1;
            if self.stopping.load(Ordering::Acquire) {
                return;
            }
            let mut stream = match conn {
                Ok((s, _)) => s,
                Err(e) => {
                    log::warn!("accept: {e}");
                    // Out of descriptors, typically: do not spin.
                    std::thread::sleep(Duration::from_millis(10));
                    self.waiting.fetch_add(1, Ordering::AcqRel);
                    continue;
                }
            };
            if left == 0 {
                // (cannot fail: the keeper holds the receiver until the server stops)
                let _ = self.more.send(());
            }
            if self.active.fetch_add(1, Ordering::AcqRel) >= MAX_CLIENTS {
                let _ = reply(&mut stream, &Response::error("chaosd: too many clients"));
            } else if let Err(e) = serve(stream, &self.core) {
                log::debug!("client: {e}");
            }
            self.active.fetch_sub(1, Ordering::AcqRel);
            // Waiting again, unless enough threads are.
            if self.waiting.fetch_add(1, Ordering::AcqRel) >= MAX_WAITING {
                self.waiting.fetch_sub(1, Ordering::AcqRel);
                return;
            }
        }
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
        let faults_at = read_at.and_then(|_| thread_minor_faults());
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
            let replied = t.elapsed();
            // Each costs about 0.2 ms in a PV dom0 under TCG (docs/COSTS.md); the count includes
            // the creation's own.
            let faults = faults_at
                .zip(thread_minor_faults())
                .map_or(String::new(), |(a, b)| format!(", {} minor faults", b - a));
            log::debug!(
                "request of {} bytes: decoded in {:.3} ms, handled by {:.3} ms, replied by {:.3} ms{faults}",
                line.len(),
                ms(decoded),
                ms(handled),
                ms(replied)
            );
        }
    }
}

/// Minor page faults of the calling thread so far (for `chaosd -vv`).
fn thread_minor_faults() -> Option<i64> {
    use nix::sys::resource::{getrusage, UsageWho};
    getrusage(UsageWho::RUSAGE_THREAD)
        .ok()
        .map(|u| u.minor_page_faults())
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
