//! The client side of chaosd's socket, for `chaos` and for programs that embed libchaos.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::protocol::{PoolStatus, Request, Response, MAX_LINE};
use crate::config::{DomainConfig, GuestSpec};
use crate::toolstack::Created;

/// Replies can be larger than requests (status of many flavors), but not unbounded.
const MAX_REPLY: usize = 16 * MAX_LINE;

/// How long the client waits for chaosd to take a request and to answer it, unless
/// [`TIMEOUT_VAR`] says otherwise. A creation chaosd has no shell for prepares one first
/// (populating a large guest's memory takes seconds on a busy host).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Environment variable: chaosd's answer timeout in seconds.
pub const TIMEOUT_VAR: &str = "CHAOS_DAEMON_TIMEOUT";

/// The timeout from [`TIMEOUT_VAR`], or [`DEFAULT_TIMEOUT`].
pub fn timeout_from_env() -> Duration {
    std::env::var(TIMEOUT_VAR)
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(DEFAULT_TIMEOUT, Duration::from_secs_f64)
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("chaosd ({path}): {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("chaosd ({0}) hung up without replying")]
    HungUp(PathBuf),
    /// Nothing of the request reached chaosd: the caller may do the work itself.
    #[error("chaosd ({path}) did not take the request within {secs} s: {source}")]
    NotSent {
        path: PathBuf,
        secs: f64,
        #[source]
        source: std::io::Error,
    },
    /// The request was sent and no answer came in time. chaosd rolls a creation back when it
    /// finds its client gone, so the caller must not do the work a second time.
    #[error("chaosd ({path}) did not answer within {secs} s (is it stopped or overloaded?); the request was sent, so chaos did not do it here as well, and chaosd drops it when it sees this client gone")]
    TimedOut { path: PathBuf, secs: f64 },
    #[error("chaosd ({path}) sent a reply chaos does not understand: {message}")]
    BadReply { path: PathBuf, message: String },
    /// The daemon refused or failed the request.
    #[error("{0}")]
    Refused(String),
}

impl ClientError {
    /// Whether chaosd got none of the request (a fallback cannot do the work twice).
    pub fn nothing_sent(&self) -> bool {
        matches!(self, ClientError::NotSent { .. })
    }
}

#[derive(Debug)]
pub struct Client {
    path: PathBuf,
    /// The connection: read through the buffer, written through `get_ref` (one descriptor,
    /// not a clone of it: a thin client's every system call counts).
    stream: BufReader<UnixStream>,
    timeout: Duration,
}

impl Client {
    /// chaosd's connection, or `None` when no daemon listens at `path` and `required` is
    /// false: the caller then creates in its own process. This is the one place that decides
    /// between the daemon and the local path.
    pub fn connect_if_running(path: &Path, required: bool) -> Result<Option<Client>, ClientError> {
        match Client::connect(path) {
            Ok(c) => Ok(Some(c)),
            Err(source) if required => Err(ClientError::Io {
                path: path.to_path_buf(),
                source,
            }),
            Err(e) => {
                if !matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) {
                    log::warn!("chaosd ({}): {e}; creating locally", path.display());
                }
                Ok(None)
            }
        }
    }

    /// Connects; fails (NotFound, ConnectionRefused) when no daemon listens there. Every wait
    /// on chaosd is bounded by [`timeout_from_env`].
    pub fn connect(path: &Path) -> std::io::Result<Client> {
        Self::connect_with_timeout(path, timeout_from_env())
    }

    /// [`connect`](Self::connect) with another bound on every wait.
    pub fn connect_with_timeout(path: &Path, timeout: Duration) -> std::io::Result<Client> {
        let stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let stream = BufReader::new(stream);
        Ok(Client {
            path: path.to_path_buf(),
            stream,
            timeout,
        })
    }

    fn timed_out(e: &std::io::Error) -> bool {
        matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        )
    }

    fn io(&self, source: std::io::Error) -> ClientError {
        ClientError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Sends one request and reads its reply. Error replies come back as `Refused`.
    pub fn request(&mut self, req: &Request) -> Result<Response, ClientError> {
        let mut line = serde_json::to_vec(req).map_err(|e| ClientError::BadReply {
            path: self.path.clone(),
            message: format!("cannot encode the request: {e}"),
        })?;
        line.push(b'\n');
        // (a clock read is a system call in a PV dom0: only when it is printed)
        let start = log::log_enabled!(log::Level::Debug).then(Instant::now);
        let secs = self.timeout.as_secs_f64();
        let mut sent = 0;
        while sent < line.len() {
            match self.stream.get_ref().write(&line[sent..]) {
                Ok(0) => return Err(ClientError::HungUp(self.path.clone())),
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) if sent == 0 => {
                    return Err(ClientError::NotSent {
                        path: self.path.clone(),
                        secs,
                        source,
                    })
                }
                Err(e) if Self::timed_out(&e) => {
                    return Err(ClientError::TimedOut {
                        path: self.path.clone(),
                        secs,
                    })
                }
                Err(e) => return Err(self.io(e)),
            }
        }
        let mut buf = Vec::new();
        let n = (&mut self.stream)
            .take(MAX_REPLY as u64)
            .read_until(b'\n', &mut buf)
            .map_err(|e| {
                if Self::timed_out(&e) {
                    ClientError::TimedOut {
                        path: self.path.clone(),
                        secs,
                    }
                } else {
                    self.io(e)
                }
            })?;
        if n == 0 {
            return Err(ClientError::HungUp(self.path.clone()));
        }
        let replied = start.map(|t| t.elapsed());
        let decoded = serde_json::from_slice(&buf);
        if let (Some(start), Some(replied)) = (start, replied) {
            log::debug!(
                "chaosd: {} bytes sent, {n} bytes of reply after {:.3} ms, decoded by {:.3} ms",
                line.len(),
                super::ms(replied),
                super::ms(start.elapsed())
            );
        }
        match decoded {
            Ok(Response::Error { message }) => Err(ClientError::Refused(message)),
            Ok(r) => Ok(r),
            Err(e) => Err(ClientError::BadReply {
                path: self.path.clone(),
                message: e.to_string(),
            }),
        }
    }

    fn unexpected(&self, r: Response) -> ClientError {
        ClientError::BadReply {
            path: self.path.clone(),
            message: format!("unexpected reply {r:?}"),
        }
    }

    /// Creates a guest from a parsed config (its paths must be absolute).
    pub fn create(
        &mut self,
        cfg: &DomainConfig,
        paused: bool,
        pool_only: bool,
    ) -> Result<Created, ClientError> {
        self.create_spec(cfg.spec(), paused, pool_only)
    }

    /// Creates a guest from a spec the daemon validates (as it would any client's).
    pub fn create_spec(
        &mut self,
        spec: &GuestSpec,
        paused: bool,
        pool_only: bool,
    ) -> Result<Created, ClientError> {
        match self.request(&Request::Create {
            config: Some(Box::new(spec.clone())),
            file: None,
            overrides: Vec::new(),
            paused,
            pool_only,
        })? {
            Response::Created(c) => Ok(*c),
            r => Err(self.unexpected(r)),
        }
    }

    /// Destroys a guest by name or domid.
    pub fn destroy(&mut self, domain: &str) -> Result<crate::hypervisor::DomId, ClientError> {
        match self.request(&Request::Destroy {
            domain: domain.to_string(),
        })? {
            Response::Destroyed { domid } => Ok(domid),
            r => Err(self.unexpected(r)),
        }
    }

    pub fn status(&mut self) -> Result<PoolStatus, ClientError> {
        match self.request(&Request::Status {})? {
            Response::Status(s) => Ok(*s),
            r => Err(self.unexpected(r)),
        }
    }
}
