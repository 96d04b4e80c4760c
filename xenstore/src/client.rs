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
            return Self::open_device(XENBUS_DEVICE);
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
pub(crate) mod tests {
    use super::*;
    use crate::fake::{client_for, serve};
    use crate::{Access, MemStore};
    use std::io::Write;
    use std::sync::Arc;

    const NO: TxId = TxId::NONE;

    #[test]
    fn read_write_mkdir_rm_directory_over_the_wire() {
        let store = Arc::new(MemStore::new());
        let xs = client_for(&store);
        xs.write(NO, "/local/domain/3/name", b"guest\0with-nul")
            .unwrap();
        assert_eq!(
            xs.read(NO, "/local/domain/3/name").unwrap(),
            Some(b"guest\0with-nul".to_vec())
        );
        assert_eq!(xs.read(NO, "/nope").unwrap(), None);
        xs.mkdir(NO, "/local/domain/3/device").unwrap();
        assert_eq!(
            xs.directory(NO, "/local/domain/3").unwrap(),
            vec!["device", "name"]
        );
        assert!(xs.directory(NO, "/missing").unwrap().is_empty());
        xs.rm(NO, "/local/domain/3").unwrap();
        xs.rm(NO, "/local/domain/3").unwrap();
        xs.rm(NO, "/no/such/parent").unwrap();
        assert_eq!(store.paths(), vec!["/local", "/local/domain"]);
    }

    #[test]
    fn errors_carry_the_errno_name_op_and_path() {
        let store = Arc::new(MemStore::new());
        let xs = client_for(&store);
        let perms = [Perm {
            dom: DomId(0),
            access: Access::None,
        }];
        match xs.set_perms(NO, "/missing", &perms) {
            Err(XenstoreError::Failed { op, path, errno }) => {
                assert_eq!(
                    (op, path.as_str(), errno.as_str()),
                    ("set_perms", "/missing", "ENOENT")
                );
            }
            other => panic!("{other:?}"),
        }
        match xs.write(NO, "bad path", b"") {
            Err(XenstoreError::Failed { errno, .. }) => assert_eq!(errno, "EINVAL"),
            other => panic!("{other:?}"),
        }
        // The connection is still usable after error replies.
        xs.write(NO, "/ok", b"1").unwrap();
    }

    #[test]
    fn perms_over_the_wire() {
        let store = Arc::new(MemStore::new());
        let xs = client_for(&store);
        xs.write(NO, "/p", b"").unwrap();
        let perms = [
            Perm {
                dom: DomId(0),
                access: Access::None,
            },
            Perm {
                dom: DomId(5),
                access: Access::Read,
            },
        ];
        xs.set_perms(NO, "/p", &perms).unwrap();
        assert_eq!(store.get_perms(NO, "/p").unwrap(), perms);
        assert_eq!(xs.get_perms(NO, "/p").unwrap(), perms);
    }

    #[test]
    fn transactions_commit_abort_and_conflict() {
        let store = Arc::new(MemStore::new());
        let xs = client_for(&store);
        let other = client_for(&store);
        let tx = xs.transaction_start().unwrap();
        assert_ne!(tx, TxId::NONE);
        xs.write(tx, "/t/a", b"1").unwrap();
        assert_eq!(xs.read(tx, "/t/a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(other.read(NO, "/t/a").unwrap(), None);
        assert_eq!(xs.transaction_end(tx, true).unwrap(), TxOutcome::Committed);
        assert_eq!(other.read(NO, "/t/a").unwrap(), Some(b"1".to_vec()));

        let tx = xs.transaction_start().unwrap();
        xs.write(tx, "/t/b", b"2").unwrap();
        assert_eq!(xs.transaction_end(tx, false).unwrap(), TxOutcome::Aborted);
        assert_eq!(store.read(NO, "/t/b").unwrap(), None);

        let tx = xs.transaction_start().unwrap();
        xs.read(tx, "/t/a").unwrap();
        xs.write(tx, "/t/c", b"3").unwrap();
        other.write(NO, "/t/a", b"changed").unwrap();
        assert_eq!(xs.transaction_end(tx, true).unwrap(), TxOutcome::Conflict);
        assert_eq!(store.read(NO, "/t/c").unwrap(), None);
        assert_eq!(store.open_transactions(), 0);
    }

    #[test]
    fn introduce_release_and_query() {
        let store = Arc::new(MemStore::new());
        let xs = client_for(&store);
        xs.introduce_domain(DomId(7), 0xfeff, 3).unwrap();
        assert!(xs.is_domain_introduced(DomId(7)).unwrap());
        assert_eq!(store.introduced_domains(), vec![DomId(7)]);
        xs.release_domain(DomId(7)).unwrap();
        assert!(!xs.is_domain_introduced(DomId(7)).unwrap());
        assert!(matches!(
            xs.release_domain(DomId(7)),
            Err(XenstoreError::Failed { .. })
        ));
    }

    #[test]
    fn large_directories_fall_back_to_directory_part() {
        let store = Arc::new(MemStore::new());
        let xs = client_for(&store);
        let mut want: Vec<String> = (0..25).map(|i| format!("child-{i}")).collect();
        for n in &want {
            store.write(NO, &format!("/big/{n}/x"), b"").unwrap();
        }
        want.sort();
        assert_eq!(xs.directory(NO, "/big").unwrap(), want);
    }

    #[test]
    fn watch_events_interleaved_with_replies_are_queued() {
        let store = Arc::new(MemStore::new());
        let xs = client_for(&store);
        xs.watch("/be", "tok").unwrap();
        // The registration event and the write's event arrive before the write's reply.
        xs.write(NO, "/be/vif/1/0/hotplug-status", b"connected")
            .unwrap();
        assert_eq!(
            xs.read(NO, "/be/vif/1/0/hotplug-status").unwrap(),
            Some(b"connected".to_vec())
        );
        let ev = |p: &str| {
            Some(WatchEvent {
                path: p.into(),
                token: "tok".into(),
            })
        };
        assert_eq!(xs.read_watch(Some(Duration::ZERO)).unwrap(), ev("/be"));
        assert_eq!(
            xs.read_watch(Some(Duration::ZERO)).unwrap(),
            ev("/be/vif/1/0/hotplug-status")
        );
        assert_eq!(
            xs.read_watch(Some(Duration::from_millis(30))).unwrap(),
            None
        );
        xs.unwatch("/be", "tok").unwrap();
    }

    #[test]
    fn read_watch_reads_an_unsolicited_event_off_the_socket() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let xs = XsClient::from_stream(a, "scripted").unwrap();
        let ev = Msg::new(
            MsgType::WatchEvent,
            0,
            0,
            join_nul(&[b"@releaseDomain", b"r"]),
        );
        ev.write_to(&mut b).unwrap();
        let got = xs.read_watch(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(
            got,
            Some(WatchEvent {
                path: "@releaseDomain".into(),
                token: "r".into()
            })
        );
    }

    #[test]
    fn mismatched_reply_breaks_the_connection_cleanly() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let xs = XsClient::from_stream(a, "scripted").unwrap();
        let server = std::thread::spawn(move || {
            let req = Msg::read_from(&mut b).unwrap();
            Msg::new(MsgType::Read, req.req_id + 100, 0, b"x".to_vec())
                .write_to(&mut b)
                .unwrap();
            b
        });
        assert!(matches!(xs.read(NO, "/a"), Err(XenstoreError::Protocol(_))));
        let _b = server.join().unwrap();
        // Later requests fail fast instead of reading a stream at an unknown position.
        assert!(matches!(xs.read(NO, "/a"), Err(XenstoreError::Protocol(_))));
    }

    #[test]
    fn oversized_reply_length_is_a_protocol_error() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let xs = XsClient::from_stream(a, "scripted").unwrap();
        let server = std::thread::spawn(move || {
            let req = Msg::read_from(&mut b).unwrap();
            let mut hdr = Vec::new();
            for w in [MsgType::Read as u32, req.req_id, 0, 1 << 20] {
                hdr.extend_from_slice(&w.to_ne_bytes());
            }
            b.write_all(&hdr).unwrap();
            b
        });
        assert!(matches!(xs.read(NO, "/a"), Err(XenstoreError::Protocol(_))));
        drop(server.join().unwrap());
    }

    #[test]
    fn oversized_request_is_refused_before_sending() {
        let store = Arc::new(MemStore::new());
        let xs = client_for(&store);
        assert!(matches!(
            xs.write(NO, "/big", &[b'x'; 5000]),
            Err(XenstoreError::Protocol(_))
        ));
        // Nothing went out, so the connection is fine.
        xs.write(NO, "/small", b"x").unwrap();
    }

    #[test]
    fn closed_connection_is_an_io_error() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(b);
        let xs = XsClient::from_stream(a, "closed").unwrap();
        assert!(matches!(xs.read(NO, "/a"), Err(XenstoreError::Io(_))));
    }

    #[test]
    fn pipelined_ops_apply_in_order_and_report_the_first_failure() {
        let store = Arc::new(MemStore::new());
        let xs = client_for(&store);
        let perms = [Perm {
            dom: DomId(5),
            access: Access::Read,
        }];
        let tx = xs.transaction_start().unwrap();
        xs.apply(
            tx,
            &[
                XsOp::Mkdir("/local/domain/5"),
                XsOp::SetPerms("/local/domain/5", &perms),
                XsOp::Write("/local/domain/5/name", b"five"),
            ],
        )
        .unwrap();
        assert_eq!(xs.transaction_end(tx, true).unwrap(), TxOutcome::Committed);
        assert_eq!(
            xs.read(NO, "/local/domain/5/name").unwrap(),
            Some(b"five".to_vec())
        );
        assert_eq!(xs.get_perms(NO, "/local/domain/5").unwrap(), perms);

        // A bad path in the middle: its error is reported, the ops around it still ran, and
        // the connection stays in step for the next request.
        let err = xs
            .apply(
                NO,
                &[
                    XsOp::Write("/a", b"1"),
                    XsOp::Write("relative/path", b"2"),
                    XsOp::Write("/b", b"3"),
                ],
            )
            .unwrap_err();
        assert!(err.to_string().contains("relative/path"), "{err}");
        assert_eq!(xs.read(NO, "/b").unwrap(), Some(b"3".to_vec()));
    }

    #[test]
    fn concurrent_requests_from_many_threads() {
        let store = Arc::new(MemStore::new());
        let xs = Arc::new(client_for(&store));
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let xs = xs.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        let p = format!("/c/{t}/{i}");
                        xs.write(NO, &p, p.as_bytes()).unwrap();
                        assert_eq!(xs.read(NO, &p).unwrap(), Some(p.into_bytes()));
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(store.paths().len(), 1 + 8 + 8 * 50);
    }

    #[test]
    fn connect_errors_name_the_path() {
        match XsClient::connect_unix("/nonexistent/xenstored/socket") {
            Err(XenstoreError::Connect { path, .. }) => {
                assert_eq!(path, "/nonexistent/xenstored/socket")
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn connects_to_a_listening_socket() {
        let dir = std::env::temp_dir().join(format!("chaos-xs-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("socket");
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let store = Arc::new(MemStore::new());
        let s2 = store.clone();
        let server = std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            serve(s2, conn);
        });
        let xs = XsClient::connect_unix(path.to_str().unwrap()).unwrap();
        xs.write(NO, "/via/socket", b"1").unwrap();
        drop(xs);
        server.join().unwrap();
        assert_eq!(store.read(NO, "/via/socket").unwrap(), Some(b"1".to_vec()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
