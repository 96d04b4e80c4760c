//! The toolstack's side of xendevd's socket.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use xen_types::DomId;

use super::{Request, Response, MAX_LINE};

/// How long a request may take: xendevd maps a ring and binds a channel per attach.
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "the NoXS device backend is not running ({path}: {source}); start it with `xendevd -D` (or `systemctl start xendevd`)"
    )]
    NotRunning {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("xendevd ({path}): {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("xendevd ({0}) hung up without replying")]
    HungUp(PathBuf),
    #[error("xendevd ({path}) sent a reply chaos does not understand: {message}")]
    BadReply { path: PathBuf, message: String },
    #[error("xendevd: {0}")]
    Refused(String),
}

/// A connection to xendevd.
#[derive(Debug)]
pub struct Client {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    /// Connects; [`ClientError::NotRunning`] (with how to start it) when nothing listens.
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        let not_running = |source| ClientError::NotRunning {
            path: path.to_path_buf(),
            source,
        };
        let writer = UnixStream::connect(path).map_err(not_running)?;
        let io = |source| ClientError::Io {
            path: path.to_path_buf(),
            source,
        };
        writer.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
        writer.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
        let reader = BufReader::new(writer.try_clone().map_err(io)?);
        Ok(Client {
            path: path.to_path_buf(),
            reader,
            writer,
        })
    }

    fn io(&self, source: io::Error) -> ClientError {
        ClientError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Sends one request and reads its reply; error replies come back as `Refused`.
    pub fn request(&mut self, req: &Request) -> Result<Response, ClientError> {
        let mut line = serde_json::to_vec(req).map_err(|e| ClientError::BadReply {
            path: self.path.clone(),
            message: format!("cannot encode the request: {e}"),
        })?;
        line.push(b'\n');
        self.writer.write_all(&line).map_err(|e| self.io(e))?;
        let mut buf = Vec::new();
        let n = (&mut self.reader)
            .take(MAX_LINE as u64)
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

    /// Sends `req` and wants `ok` back.
    pub fn expect_ok(&mut self, req: &Request) -> Result<(), ClientError> {
        match self.request(req)? {
            Response::Ok {} => Ok(()),
            r => Err(ClientError::BadReply {
                path: self.path.clone(),
                message: format!("unexpected reply {r:?}"),
            }),
        }
    }

    /// Asks xendevd to serve the guest whose record was just written.
    pub fn attach(&mut self, domid: DomId) -> Result<(), ClientError> {
        self.expect_ok(&Request::Attach { domid })
    }

    /// Tells xendevd the guest is gone.
    pub fn detach(&mut self, domid: DomId) -> Result<(), ClientError> {
        self.expect_ok(&Request::Detach { domid })
    }

    /// Turns the connection into the guest's console: returns the stream, which carries the
    /// guest's output and takes its input, and the output that arrived with the reply.
    pub fn console(mut self, domid: DomId) -> Result<(UnixStream, Vec<u8>), ClientError> {
        self.expect_ok(&Request::Console { domid })?;
        let early = self.reader.buffer().to_vec();
        self.writer
            .set_read_timeout(None)
            .map_err(|source| ClientError::Io {
                path: self.path.clone(),
                source,
            })?;
        Ok((self.writer, early))
    }
}
