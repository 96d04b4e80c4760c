//! chaosd, the prepare daemon of the split toolstack: it keeps shells of each configured flavor
//! ready (refilled by worker threads, above a host memory reserve), creates guests from them on
//! clients' requests over a root-only unix socket, reaps guests that shut down, and leaves no
//! shell behind (its own on shutdown, a crashed predecessor's at start).
//!
//! The `chaosd` binary in chaos-cli only parses flags and waits for a signal; everything else is
//! here, so the tests drive a whole daemon on the simulated hypervisor.

pub mod client;
pub mod flavors;
mod pool;
pub mod protocol;
mod server;
pub mod signals;
mod stats;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use client::{Client, ClientError};
pub use flavors::{FlavorError, FlavorTarget};
pub use pool::describe as describe_flavor;
pub use protocol::{FlavorStatus, Percentiles, PoolStatus, Request, Response, MAX_LINE};

use crate::config::{DomainConfig, Location};
use crate::hypervisor::PAGE_SIZE;
use crate::toolstack::{Created, Flavor, Toolstack, ToolstackError, Via};
use pool::Pool;
use stats::Samples;

pub use crate::runtime::{socket_in, SOCKET_NAME};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{path}: {source}")]
    Socket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("another chaosd is running on {0} (it holds the lock)")]
    AlreadyRunning(PathBuf),
    #[error("{path}: {source}")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reclaiming shells left by an earlier chaosd: {0}")]
    Reclaim(#[source] ToolstackError),
    #[error("starting a thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub socket: PathBuf,
    pub flavors: Vec<FlavorTarget>,
    /// Free host memory (MiB) that refills leave alone.
    pub reserve_mib: u64,
    /// Refill worker threads.
    pub workers: usize,
    /// How often the daemon reaps guests that shut down; `None` leaves reaping to others.
    pub reap_interval: Option<Duration>,
}

/// Shared by the server threads, the reaper and the handle.
struct Core {
    ts: Arc<Toolstack>,
    pool: Arc<Pool>,
    started: Instant,
    reclaimed: usize,
    pool_times: Mutex<Samples>,
    direct_times: Mutex<Samples>,
    stopping: AtomicBool,
    /// Requests being handled; shutdown waits for them, so no creation is cut in half.
    busy: AtomicUsize,
}

/// How long shutdown waits for requests in progress.
const DRAIN_REQUESTS: Duration = Duration::from_secs(30);

impl Core {
    /// Serves one request; `wanted` says whether its client still waits for the answer (asked
    /// right before a creation is committed).
    fn handle(&self, req: Request, wanted: &dyn Fn() -> bool) -> Response {
        // SeqCst pairs with shutdown's store of `stopping` then load of `busy`: either this
        // request sees `stopping`, or shutdown sees it busy and waits for it.
        self.busy.fetch_add(1, Ordering::SeqCst);
        let response = if self.stopping.load(Ordering::SeqCst) {
            Response::error("chaosd is shutting down")
        } else {
            self.dispatch(req, wanted)
        };
        self.busy.fetch_sub(1, Ordering::SeqCst);
        response
    }

    /// After each reply: what waited for it (a worker to refill the shell a creation took).
    fn replied(&self) {
        self.pool.replied();
    }

    fn dispatch(&self, req: Request, wanted: &dyn Fn() -> bool) -> Response {
        match req {
            Request::Create {
                config,
                file,
                overrides,
                paused,
                pool_only,
            } => {
                let cfg = match (config, file) {
                    (Some(spec), None) => {
                        if !overrides.is_empty() {
                            return Response::error("overrides go with a file, not a config");
                        }
                        // A config from the socket passes the same rules as a parsed file.
                        match spec.validate_at(&Location::Request) {
                            Ok(cfg) => cfg,
                            Err(e) => return Response::error(e.to_string()),
                        }
                    }
                    (None, Some(file)) if !file.is_absolute() => {
                        return Response::error(format!(
                            "file {}: chaosd needs an absolute path",
                            file.display()
                        ))
                    }
                    (None, Some(file)) => match crate::config::load(&file, &overrides) {
                        Ok(loaded) => loaded.config,
                        Err(e) => return Response::error(e.to_string()),
                    },
                    _ => return Response::error("create needs exactly one of config or file"),
                };
                match self.create(&cfg, paused, pool_only, wanted) {
                    Ok(c) => Response::Created(Box::new(c)),
                    Err(e) => Response::error(e),
                }
            }
            Request::Status {} => Response::Status(Box::new(self.status())),
            Request::Destroy { domain } => match self
                .ts
                .resolve(&domain)
                .and_then(|d| self.ts.destroy(d).map(|()| d))
            {
                Ok(domid) => Response::Destroyed { domid },
                Err(e) => Response::error(e.to_string()),
            },
        }
    }

    fn create(
        &self,
        cfg: &DomainConfig,
        paused: bool,
        pool_only: bool,
        wanted: &dyn Fn() -> bool,
    ) -> Result<Created, String> {
        check_paths(cfg)?;
        let flavor = Flavor::of(cfg);
        let start = Instant::now();
        // Missing kernels and unsupported features must not cost a shell.
        self.ts.check_creatable(cfg).map_err(|e| e.to_string())?;
        // A warm shell (the image already in it) first, then a plain one.
        let warm = Flavor::warm_of(cfg);
        let take = || {
            warm.as_ref()
                .and_then(|w| self.pool.take(w))
                .or_else(|| self.pool.take(&flavor))
        };
        // What the daemon did before the creation proper: it is chaos's time too.
        let checked = start.elapsed();
        let from_shell = loop {
            let Some((ready, creating)) = take() else {
                break None;
            };
            let shell_domid = ready.shell.domid();
            let result = self.ts.execute_pooled_if(ready.shell, cfg, paused, wanted);
            // Its refill is woken once the reply is out (`Core::replied`).
            creating.wake_after_reply();
            // Either a guest now (with its own record: the shell's goes after the reply)
            // or destroyed by the rollback.
            match &result {
                Ok(_) => self.pool.forget_later(ready.uuid),
                Err(_) => self.pool.forget(&ready.uuid),
            }
            match result {
                Ok(created) => {
                    lock(&self.pool_times).add(start.elapsed());
                    break Some(created);
                }
                // The image changed under the warm shell: it is gone; create directly.
                Err(e @ ToolstackError::WarmShellStale { .. }) => {
                    log::warn!("{e}; creating {} without a shell", cfg.name);
                    break None;
                }
                // Destroyed behind chaosd's back (`xl destroy`): the next shell, if any.
                Err(e) if e.is_no_such_domain(shell_domid) => {
                    log::warn!(
                        "shell domain {shell_domid} is gone ({e}); creating {} without it",
                        cfg.name
                    );
                }
                Err(e) => return Err(e.to_string()),
            }
        };
        let mut created = match from_shell {
            Some(created) => created,
            None if pool_only => {
                let served =
                    self.pool.serves(&flavor) || warm.as_ref().is_some_and(|w| self.pool.serves(w));
                return Err(if served {
                    format!("no ready shell of flavor {}", describe_flavor(&flavor))
                } else {
                    format!(
                        "chaosd keeps no shells of flavor {}",
                        describe_flavor(&flavor)
                    )
                });
            }
            None => {
                let created = self
                    .ts
                    .create_if(cfg, paused, wanted)
                    .map_err(|e| e.to_string())?;
                lock(&self.direct_times).add(start.elapsed());
                created
            }
        };
        created.timings.push_front("check", checked);
        log::debug!(
            "{}: {:.3} ms in create, {:.3} ms of it in the phases",
            cfg.name,
            ms(start.elapsed()),
            created.timings.total_us() as f64 / 1000.0
        );
        created.via = Via::Daemon;
        Ok(created)
    }

    fn status(&self) -> PoolStatus {
        let alive = self.started.elapsed();
        let (flavors, refill_per_s, prepare, held_by_reserve) = self.pool.status(alive);
        let free_mib = match self.ts.hypervisor().physinfo() {
            Ok(p) => p.free_pages * PAGE_SIZE as u64 / (1024 * 1024),
            Err(e) => {
                log::warn!("physinfo: {e}");
                0
            }
        };
        PoolStatus {
            flavors,
            uptime_s: alive.as_secs_f64(),
            refill_per_s,
            free_mib,
            reserve_mib: self.pool.reserve_mib(),
            held_by_reserve,
            reclaimed: self.reclaimed,
            prepare,
            pool_create: lock(&self.pool_times).percentiles(),
            direct_create: lock(&self.direct_times).percentiles(),
        }
    }

    /// chaosd reaps once it holds the reaper's lock (a `chaos reap --watch` started by an
    /// earlier `chaos create` may hold it until it finds no guest left).
    fn reaper(&self, poll: Duration) {
        let root = self.ts.state().root().to_path_buf();
        while !self.stopping.load(Ordering::Acquire) {
            match crate::toolstack::reaper::try_lock(&root) {
                Ok(Some(_lock)) => {
                    self.ts.run_reaper(&self.stopping, None, poll, |done| {
                        for (dom, action) in done {
                            log::info!("reaped domain {dom}: {action:?}");
                        }
                    });
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(500)),
                Err(e) => {
                    log::warn!("reaper lock: {e}");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }
}

/// A duration in milliseconds, for logs and stats.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The daemon resolves no relative path: it has its own working directory, not the client's.
fn check_paths(cfg: &DomainConfig) -> Result<(), String> {
    if !cfg.kernel.is_absolute() {
        return Err(format!(
            "kernel {}: chaosd needs an absolute path",
            cfg.kernel.display()
        ));
    }
    if let Some(r) = cfg.ramdisk.as_deref().filter(|r| !r.is_absolute()) {
        return Err(format!(
            "ramdisk {}: chaosd needs an absolute path",
            r.display()
        ));
    }
    Ok(())
}

/// A running daemon. Dropping it without [`Daemon::shutdown`] leaves its shells to be
/// reclaimed by the next daemon, as a crash would.
pub struct Daemon {
    core: Arc<Core>,
    server: server::Server,
    workers: Vec<JoinHandle<()>>,
    reaper: Option<JoinHandle<()>>,
    /// One daemon per runtime directory: another one would reclaim this one's shells.
    _lock: std::fs::File,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("workers", &self.workers.len())
            .field("reclaimed", &self.core.reclaimed)
            .finish()
    }
}

impl Daemon {
    /// Reclaims an earlier daemon's shells, binds the socket, and starts the refill workers,
    /// the reaper and the server.
    pub fn start(ts: Arc<Toolstack>, cfg: DaemonConfig) -> Result<Daemon, DaemonError> {
        let lock_path = ts.state().root().join("chaosd.lock");
        let lock = std::fs::File::create(&lock_path).map_err(|source| DaemonError::Lock {
            path: lock_path.clone(),
            source,
        })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(DaemonError::AlreadyRunning(ts.state().root().to_path_buf()))
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(DaemonError::Lock {
                    path: lock_path,
                    source,
                })
            }
        }
        let listener = server::bind(&cfg.socket)?;
        let reclaimed = pool::reclaim(&ts).map_err(DaemonError::Reclaim)?;
        if reclaimed > 0 {
            log::warn!("destroyed {reclaimed} shell(s) left by an earlier chaosd");
        }
        // Creations an earlier daemon (or a chaos command) died in, stale records and names.
        // What cannot be cleaned now (xenstored away, say) is tried again by the next list.
        if let Err(e) = ts.clean_up() {
            log::warn!("cleaning up after processes that died: {e}");
        }
        let pool = Arc::new(Pool::new(ts.clone(), &cfg.flavors, cfg.reserve_mib));
        let core = Arc::new(Core {
            ts,
            pool: pool.clone(),
            started: Instant::now(),
            reclaimed,
            pool_times: Mutex::default(),
            direct_times: Mutex::default(),
            stopping: AtomicBool::new(false),
            busy: AtomicUsize::new(0),
        });
        let workers = pool
            .spawn_workers(cfg.workers)
            .map_err(DaemonError::Thread)?;
        let reaper = match cfg.reap_interval {
            Some(interval) => {
                let core = core.clone();
                Some(
                    std::thread::Builder::new()
                        .name("chaosd-reaper".into())
                        .spawn(move || core.reaper(interval))
                        .map_err(DaemonError::Thread)?,
                )
            }
            None => None,
        };
        let server = server::Server::start(listener, cfg.socket, core.clone())?;
        Ok(Daemon {
            core,
            server,
            workers,
            reaper,
            _lock: lock,
        })
    }

    /// Waits until every flavor has its target of ready shells; false after `limit`.
    pub fn wait_filled(&self, limit: Duration) -> bool {
        self.core.pool.wait_filled(limit)
    }

    pub fn status(&self) -> PoolStatus {
        self.core.status()
    }

    /// Shells reclaimed at start.
    pub fn reclaimed(&self) -> usize {
        self.core.reclaimed
    }

    /// Stops serving, waits for the workers and the reaper, destroys the unused shells and
    /// removes the socket. Returns how many shells were destroyed.
    pub fn shutdown(self) -> usize {
        self.core.stopping.store(true, Ordering::SeqCst);
        self.core.pool.stop();
        self.server.stop();
        for w in self.workers {
            if w.join().is_err() {
                log::error!("a refill worker panicked");
            }
        }
        if let Some(r) = self.reaper {
            if r.join().is_err() {
                log::error!("the reaper panicked");
            }
        }
        let deadline = Instant::now() + DRAIN_REQUESTS;
        while self.core.busy.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.core.pool.drain()
    }

    /// Stops the threads without destroying anything, as if the process had been killed
    /// (for tests of the reclaim at start).
    #[cfg(test)]
    fn abandon(self) {
        self.core.stopping.store(true, Ordering::Release);
        self.core.pool.stop();
        self.server.stop();
        for w in self.workers {
            let _ = w.join();
        }
        if let Some(r) = self.reaper {
            let _ = r.join();
        }
        // The ready shells (and their records) stay: dropping a Shell destroys nothing.
    }
}
