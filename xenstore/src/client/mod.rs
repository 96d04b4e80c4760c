//! A client for xenstored: one long-lived connection (the daemon's unix socket, or the
//! /dev/xen/xenbus device which speaks the same framing), shared by threads behind a mutex.
//!
//! Requests are answered in order on one connection, so a request holds the lock from its write
//! to its reply. Watch events that arrive in between are queued for [`Xenstore::read_watch`].

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::wire::{first_str, join_nul, perm_from_str, perm_to_string, split_nul, Msg, MsgType};
use crate::DomId;
use crate::{Perm, Result, TxId, TxOutcome, WatchEvent, Xenstore, XenstoreError, XsOp};

/// Where xenstored listens, in the order tried (libxenstore also honours `XENSTORED_PATH`).
pub const SOCKET_PATHS: [&str; 2] = ["/run/xenstored/socket", "/var/run/xenstored/socket"];
/// The kernel's xenbus device, used when no daemon socket exists (xenstored in a stub domain).
pub const XENBUS_DEVICE: &str = "/dev/xen/xenbus";
/// How long the xenbus device may take to answer its first request before xenstored is taken
/// to be absent.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long `read_watch` sleeps at most before re-checking the queue, so an event that a
/// concurrent request read off the connection is not left waiting for the caller's timeout.
const WATCH_POLL_SLICE: Duration = Duration::from_millis(20);

struct Conn {
    /// The socket or device; both are plain read/write file descriptors.
    io: File,
    next_req: u32,
    events: VecDeque<WatchEvent>,
    /// Set when an I/O or framing error left the stream at an unknown position.
    broken: Option<String>,
}

/// A connection to xenstored. See the module documentation.
pub struct XsClient {
    conn: Mutex<Conn>,
    /// A duplicate of the descriptor inside `conn`, to sleep on without the lock.
    poll_fd: OwnedFd,
    /// What we connected to, for error messages.
    endpoint: String,
}

impl std::fmt::Debug for XsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XsClient")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl XsClient {
    /// Connects the way libxenstore does: `$XENSTORED_PATH`, then the usual socket paths, then
    /// the xenbus device.
    pub fn open() -> Result<XsClient> {
        let mut tried = Vec::new();
        let env_path = std::env::var("XENSTORED_PATH").ok();
        for path in env_path.iter().map(String::as_str).chain(SOCKET_PATHS) {
            if std::path::Path::new(path).exists() {
                return Self::connect_unix(path);
            }
            tried.push(path);
        }
        if std::path::Path::new(XENBUS_DEVICE).exists() {
            return Self::open_device(XENBUS_DEVICE)?.answering(XENBUS_DEVICE, PROBE_TIMEOUT);
        }
        tried.push(XENBUS_DEVICE);
        Err(XenstoreError::Connect {
            path: tried.join(", "),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no xenstored socket or xenbus device",
            ),
        })
    }

    /// Connects to xenstored's unix socket at `path`.
    pub fn connect_unix(path: &str) -> Result<XsClient> {
        let stream = UnixStream::connect(path).map_err(|source| XenstoreError::Connect {
            path: path.to_string(),
            source,
        })?;
        Self::from_stream(stream, path)
    }

    /// Opens the xenbus device at `path` (normally [`XENBUS_DEVICE`]).
    pub fn open_device(path: &str) -> Result<XsClient> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| XenstoreError::Connect {
                path: path.to_string(),
                source,
            })?;
        Self::from_file(file, path)
    }

    /// The xenbus device opens whether or not xenstored runs (it is the kernel's), and a
    /// request to it waits for ever when none does: one request with a deadline tells. No
    /// answer counts as no xenstored (a connect error: [`XenstoreError::is_unreachable`]).
    fn answering(self, endpoint: &str, limit: Duration) -> Result<XsClient> {
        use std::io::Write;
        {
            let mut conn = self.lock()?;
            let req_id = conn.next_req;
            conn.next_req = conn.next_req.wrapping_add(1);
            let msg = Msg::new(MsgType::GetDomainPath, req_id, 0, b"0\0".to_vec());
            conn.io.write_all(&msg.encode()?)?;
            if !wait_readable(&self.poll_fd, limit)? {
                return Err(XenstoreError::Connect {
                    path: endpoint.to_string(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "no answer within {} s: is xenstored running?",
                            limit.as_secs()
                        ),
                    ),
                });
            }
            read_reply(&mut conn, req_id)?;
        }
        Ok(self)
    }

    /// Uses an already connected stream (tests, socket activation).
    pub fn from_stream(stream: UnixStream, endpoint: &str) -> Result<XsClient> {
        Self::from_file(File::from(OwnedFd::from(stream)), endpoint)
    }

    fn from_file(io: File, endpoint: &str) -> Result<XsClient> {
        let poll_fd = io
            .as_fd()
            .try_clone_to_owned()
            .map_err(|source| XenstoreError::Connect {
                path: endpoint.to_string(),
                source,
            })?;
        Ok(XsClient {
            poll_fd,
            conn: Mutex::new(Conn {
                io,
                next_req: 1,
                events: VecDeque::new(),
                broken: None,
            }),
            endpoint: endpoint.to_string(),
        })
    }

    /// What this client is connected to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn lock(&self) -> Result<MutexGuard<'_, Conn>> {
        // Poisoning means a thread panicked mid-request: the stream position is unknown.
        let conn = match self.conn.lock() {
            Ok(c) => c,
            Err(poisoned) => {
                let mut c = poisoned.into_inner();
                c.broken
                    .get_or_insert_with(|| "a thread panicked during a request".to_string());
                c
            }
        };
        if let Some(why) = &conn.broken {
            return Err(XenstoreError::Protocol(format!(
                "connection to {} unusable: {why}",
                self.endpoint
            )));
        }
        Ok(conn)
    }

    /// Sends one request and waits for its reply. `what` names the path or domain for errors.
    fn request(&self, kind: MsgType, tx: TxId, payload: Vec<u8>, what: &str) -> Result<Vec<u8>> {
        let mut conn = self.lock()?;
        let req_id = conn.next_req;
        conn.next_req = conn.next_req.wrapping_add(1);
        let msg = Msg::new(kind, req_id, tx.0, payload);
        // Refuse oversized requests before anything is written: xenstored would drop us.
        let bytes = msg.encode()?;
        crate::counting::count(1);
        let result = exchange(&mut conn, &bytes, req_id);
        let reply = match result {
            Ok(reply) => reply,
            Err(e) => {
                conn.broken = Some(e.to_string());
                return Err(e);
            }
        };
        check_reply(kind, what, reply)
    }

    /// Sends every operation, then reads every reply (xenstored answers a connection's requests
    /// in order). All replies are read even after a failure, so the stream stays in step.
    fn pipeline(&self, tx: TxId, ops: &[XsOp<'_>]) -> Result<()> {
        use std::io::Write;
        let mut conn = self.lock()?;
        let first_id = conn.next_req;
        let mut bytes = Vec::new();
        let mut sent = Vec::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            let (kind, path, payload) = encode_op(op);
            let msg = Msg::new(kind, first_id.wrapping_add(i as u32), tx.0, payload);
            bytes.extend_from_slice(&msg.encode()?);
            sent.push((kind, path));
        }
        conn.next_req = first_id.wrapping_add(ops.len() as u32);
        crate::counting::count(ops.len() as u64);
        let mut first_failure = None;
        let io_result = (|| -> Result<()> {
            conn.io.write_all(&bytes)?;
            for (i, (kind, path)) in sent.iter().enumerate() {
                let reply = read_reply(&mut conn, first_id.wrapping_add(i as u32))?;
                if let Err(e) = check_reply(*kind, path, reply) {
                    first_failure.get_or_insert(e);
                }
            }
            Ok(())
        })();
        if let Err(e) = io_result {
            conn.broken = Some(e.to_string());
            return Err(e);
        }
        first_failure.map_or(Ok(()), Err)
    }

    /// Like `request`, but `ENOENT` becomes `None`.
    fn request_opt(
        &self,
        kind: MsgType,
        tx: TxId,
        payload: Vec<u8>,
        what: &str,
    ) -> Result<Option<Vec<u8>>> {
        match self.request(kind, tx, payload, what) {
            Ok(p) => Ok(Some(p)),
            Err(XenstoreError::Failed { errno, .. }) if errno == "ENOENT" => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `XS_DIRECTORY_PART` for nodes whose child list does not fit in one reply; restarts if the
    /// node changes between parts (its generation count differs).
    fn directory_part(&self, tx: TxId, path: &str) -> Result<Vec<String>> {
        'restart: loop {
            let mut names = Vec::new();
            let mut offset = 0usize;
            let mut generation: Option<String> = None;
            loop {
                let payload = join_nul(&[path.as_bytes(), offset.to_string().as_bytes()]);
                let Some(reply) = self.request_opt(MsgType::DirectoryPart, tx, payload, path)?
                else {
                    return Ok(Vec::new());
                };
                let gen_end = reply.iter().position(|&b| b == 0).ok_or_else(|| {
                    XenstoreError::Protocol(format!(
                        "directory_part {path}: reply without generation"
                    ))
                })?;
                let gen = String::from_utf8_lossy(&reply[..gen_end]).into_owned();
                match &generation {
                    Some(g) if *g != gen => continue 'restart,
                    Some(_) => {}
                    None => generation = Some(gen),
                }
                let part = split_nul(&reply[gen_end + 1..]);
                if part.is_empty() {
                    return Ok(names);
                }
                offset += part.iter().map(|n| n.len() + 1).sum::<usize>();
                names.extend(part);
            }
        }
    }
}

/// The reply's payload, or the error it carries.
fn check_reply(kind: MsgType, what: &str, reply: Msg) -> Result<Vec<u8>> {
    match MsgType::from_u32(reply.kind) {
        Some(MsgType::Error) => Err(XenstoreError::Failed {
            op: kind.name(),
            path: what.to_string(),
            errno: first_str(&reply.payload),
        }),
        Some(k) if k == kind => Ok(reply.payload),
        _ => Err(XenstoreError::Protocol(format!(
            "{} {what}: reply of type {} to a request of type {}",
            kind.name(),
            reply.kind,
            kind as u32
        ))),
    }
}

/// Message type, path (for errors) and payload of one pipelined operation.
fn encode_op<'a>(op: &XsOp<'a>) -> (MsgType, &'a str, Vec<u8>) {
    match *op {
        XsOp::Write(path, value) => {
            // `path\0value`: the value is not NUL-terminated.
            let mut payload = join_nul(&[path.as_bytes()]);
            payload.extend_from_slice(value);
            (MsgType::Write, path, payload)
        }
        XsOp::Mkdir(path) => (MsgType::Mkdir, path, join_nul(&[path.as_bytes()])),
        XsOp::SetPerms(path, perms) => {
            let strs: Vec<String> = perms.iter().map(perm_to_string).collect();
            let mut parts: Vec<&[u8]> = vec![path.as_bytes()];
            parts.extend(strs.iter().map(|s| s.as_bytes()));
            (MsgType::SetPerms, path, join_nul(&parts))
        }
    }
}

/// Writes a request and reads until its reply, queueing watch events that come first.
fn exchange(conn: &mut Conn, bytes: &[u8], req_id: u32) -> Result<Msg> {
    use std::io::Write;
    conn.io.write_all(bytes)?;
    read_reply(conn, req_id)
}

/// Reads until the reply to `req_id`, queueing watch events that come first.
fn read_reply(conn: &mut Conn, req_id: u32) -> Result<Msg> {
    loop {
        let msg = Msg::read_from(&mut conn.io)?;
        if msg.kind == MsgType::WatchEvent as u32 {
            conn.events.push_back(parse_watch_event(&msg.payload)?);
            continue;
        }
        if msg.req_id != req_id {
            return Err(XenstoreError::Protocol(format!(
                "reply for request {} while waiting for {req_id}",
                msg.req_id
            )));
        }
        return Ok(msg);
    }
}

fn parse_watch_event(payload: &[u8]) -> Result<WatchEvent> {
    let mut parts = payload.split(|&b| b == 0);
    match (parts.next(), parts.next()) {
        (Some(path), Some(token)) if !path.is_empty() => Ok(WatchEvent {
            path: String::from_utf8_lossy(path).into_owned(),
            token: String::from_utf8_lossy(token).into_owned(),
        }),
        _ => Err(XenstoreError::Protocol(format!(
            "malformed watch event {:?}",
            String::from_utf8_lossy(payload)
        ))),
    }
}

/// Waits up to `timeout` for `fd` to become readable.
fn wait_readable(fd: &OwnedFd, timeout: Duration) -> Result<bool> {
    let ms = timeout.as_millis().min(u128::from(u16::MAX)) as u16;
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::from(ms)) {
        Ok(n) => Ok(n > 0),
        Err(Errno::EINTR) => Ok(false),
        Err(e) => Err(std::io::Error::from(e).into()),
    }
}

impl Xenstore for XsClient {
    fn transaction_start(&self) -> Result<TxId> {
        let reply = self.request(MsgType::TransactionStart, TxId::NONE, vec![0], "")?;
        let text = first_str(&reply);
        match text.parse::<u32>() {
            Ok(id) if id != 0 => Ok(TxId(id)),
            _ => Err(XenstoreError::Protocol(format!(
                "transaction_start: bad transaction id {text:?}"
            ))),
        }
    }

    fn transaction_end(&self, tx: TxId, commit: bool) -> Result<TxOutcome> {
        let payload = if commit {
            b"T\0".to_vec()
        } else {
            b"F\0".to_vec()
        };
        match self.request(MsgType::TransactionEnd, tx, payload, &tx.0.to_string()) {
            Ok(_) if commit => Ok(TxOutcome::Committed),
            Ok(_) => Ok(TxOutcome::Aborted),
            Err(XenstoreError::Failed { errno, .. }) if errno == "EAGAIN" && commit => {
                Ok(TxOutcome::Conflict)
            }
            Err(e) => Err(e),
        }
    }

    fn read(&self, tx: TxId, path: &str) -> Result<Option<Vec<u8>>> {
        self.request_opt(MsgType::Read, tx, join_nul(&[path.as_bytes()]), path)
    }

    fn write(&self, tx: TxId, path: &str, value: &[u8]) -> Result<()> {
        let (kind, _, payload) = encode_op(&XsOp::Write(path, value));
        self.request(kind, tx, payload, path).map(drop)
    }

    fn mkdir(&self, tx: TxId, path: &str) -> Result<()> {
        let (kind, _, payload) = encode_op(&XsOp::Mkdir(path));
        self.request(kind, tx, payload, path).map(drop)
    }

    fn apply(&self, tx: TxId, ops: &[XsOp<'_>]) -> Result<()> {
        self.pipeline(tx, ops)
    }

    fn rm(&self, tx: TxId, path: &str) -> Result<()> {
        // xenstored says ENOENT when the parent is missing too; either way the node is gone.
        self.request_opt(MsgType::Rm, tx, join_nul(&[path.as_bytes()]), path)
            .map(drop)
    }

    fn directory(&self, tx: TxId, path: &str) -> Result<Vec<String>> {
        match self.request_opt(MsgType::Directory, tx, join_nul(&[path.as_bytes()]), path) {
            Ok(reply) => Ok(reply.map(|r| split_nul(&r)).unwrap_or_default()),
            Err(XenstoreError::Failed { errno, .. }) if errno == "E2BIG" => {
                self.directory_part(tx, path)
            }
            Err(e) => Err(e),
        }
    }

    fn set_perms(&self, tx: TxId, path: &str, perms: &[Perm]) -> Result<()> {
        let (kind, _, payload) = encode_op(&XsOp::SetPerms(path, perms));
        self.request(kind, tx, payload, path).map(drop)
    }

    fn introduce_domain(&self, dom: DomId, store_mfn: u64, store_port: u32) -> Result<()> {
        let (d, m, p) = (
            dom.0.to_string(),
            store_mfn.to_string(),
            store_port.to_string(),
        );
        let payload = join_nul(&[d.as_bytes(), m.as_bytes(), p.as_bytes()]);
        self.request(MsgType::Introduce, TxId::NONE, payload, &d)
            .map(drop)
    }

    fn release_domain(&self, dom: DomId) -> Result<()> {
        let d = dom.0.to_string();
        self.request(MsgType::Release, TxId::NONE, join_nul(&[d.as_bytes()]), &d)
            .map(drop)
    }

    fn get_perms(&self, tx: TxId, path: &str) -> Result<Vec<Perm>> {
        let reply = self.request(MsgType::GetPerms, tx, join_nul(&[path.as_bytes()]), path)?;
        split_nul(&reply).iter().map(|s| perm_from_str(s)).collect()
    }

    fn is_domain_introduced(&self, dom: DomId) -> Result<bool> {
        let d = dom.0.to_string();
        let reply = self.request(
            MsgType::IsDomainIntroduced,
            TxId::NONE,
            join_nul(&[d.as_bytes()]),
            &d,
        )?;
        match first_str(&reply).as_str() {
            "T" => Ok(true),
            "F" => Ok(false),
            other => Err(XenstoreError::Protocol(format!(
                "is_domain_introduced {d}: reply {other:?}"
            ))),
        }
    }

    fn watch(&self, path: &str, token: &str) -> Result<()> {
        self.request(
            MsgType::Watch,
            TxId::NONE,
            join_nul(&[path.as_bytes(), token.as_bytes()]),
            path,
        )
        .map(drop)
    }

    fn unwatch(&self, path: &str, token: &str) -> Result<()> {
        self.request(
            MsgType::Unwatch,
            TxId::NONE,
            join_nul(&[path.as_bytes(), token.as_bytes()]),
            path,
        )
        .map(drop)
    }

    fn read_watch(&self, timeout: Option<Duration>) -> Result<Option<WatchEvent>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            {
                let mut conn = self.lock()?;
                if let Some(ev) = conn.events.pop_front() {
                    return Ok(Some(ev));
                }
                // No request is in flight while we hold the lock, so whatever is readable now
                // is a watch event.
                if wait_readable(&self.poll_fd, Duration::ZERO)? {
                    let msg = match Msg::read_from(&mut conn.io) {
                        Ok(m) => m,
                        Err(e) => {
                            conn.broken = Some(e.to_string());
                            return Err(e);
                        }
                    };
                    if msg.kind != MsgType::WatchEvent as u32 {
                        let e = XenstoreError::Protocol(format!(
                            "unexpected message of type {} between requests",
                            msg.kind
                        ));
                        conn.broken = Some(e.to_string());
                        return Err(e);
                    }
                    return parse_watch_event(&msg.payload).map(Some);
                }
            }
            // Sleep on the descriptor without the lock, so requests from other threads go on.
            let mut slice = WATCH_POLL_SLICE;
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(None);
                }
                slice = slice.min(left);
            }
            wait_readable(&self.poll_fd, slice)?;
        }
    }

    fn domain_path(&self, dom: DomId) -> String {
        format!("/local/domain/{}", dom.0)
    }
}

#[cfg(test)]
pub(crate) mod tests;
