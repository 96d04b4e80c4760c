//! The client side of chaosd's socket, for `chaos` and for programs that embed libchaos.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use super::protocol::{PoolStatus, Request, Response, MAX_LINE};
use crate::config::{DomainConfig, GuestSpec};
use crate::toolstack::Created;

/// Replies can be larger than requests (status of many flavors), but not unbounded.
const MAX_REPLY: usize = 16 * MAX_LINE;

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
    #[error("chaosd ({path}) sent a reply chaos does not understand: {message}")]
    BadReply { path: PathBuf, message: String },
    /// The daemon refused or failed the request.
    #[error("{0}")]
    Refused(String),
}

#[derive(Debug)]
pub struct Client {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
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

    /// Connects; fails (NotFound, ConnectionRefused) when no daemon listens there.
    pub fn connect(path: &Path) -> std::io::Result<Client> {
        let writer = UnixStream::connect(path)?;
        let reader = BufReader::new(writer.try_clone()?);
        Ok(Client {
            path: path.to_path_buf(),
            reader,
            writer,
        })
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
        self.writer.write_all(&line).map_err(|e| self.io(e))?;
        let mut buf = Vec::new();
        let n = (&mut self.reader)
            .take(MAX_REPLY as u64)
            .read_until(b'\n', &mut buf)
            .map_err(|e| self.io(e))?;
        if n == 0 {
            return Err(ClientError::HungUp(self.path.clone()));
        }
        match serde_json::from_slice(&buf) {
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
