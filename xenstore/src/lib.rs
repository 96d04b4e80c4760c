//! Xenstore: the trait the toolstack and the dom0 daemons write through, a client for the wire
//! protocol (xen/include/public/io/xs_wire.h), an in-memory store (the simulated hypervisor's
//! Xenstore, with fault injection for rollback tests) and a fake xenstored serving it on a
//! socket ([`fake`]).

mod client;
pub mod fake;
mod lazy;
mod mem;
pub mod wire;

pub use client::XsClient;
pub use lazy::LazyClient;
pub use mem::{MemStore, XsFault};

use std::time::Duration;

pub use xen_types::DomId;

/// A Xenstore transaction id; [`TxId::NONE`] means "outside any transaction".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TxId(pub u32);

impl TxId {
    pub const NONE: TxId = TxId(0);
}

/// Access a domain has to a node (`n`, `r`, `w`, `b` in the wire format).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    None,
    Read,
    Write,
    Both,
}

/// One entry of a node's permission list: the first entry names the owner and the access
/// everybody else gets; later entries grant `access` to `dom`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Perm {
    pub dom: DomId,
    pub access: Access,
}

/// One operation of [`Xenstore::apply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XsOp<'a> {
    Write(&'a str, &'a [u8]),
    Mkdir(&'a str),
    SetPerms(&'a str, &'a [Perm]),
}

/// How a transaction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxOutcome {
    Committed,
    /// Another writer got in first (`EAGAIN`): the caller retries the whole transaction.
    Conflict,
    /// The caller asked to discard it (`commit == false`).
    Aborted,
}

/// A fired watch: `path` changed (or is `@introduceDomain` / `@releaseDomain`), `token` is the
/// one given to [`Xenstore::watch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    pub path: String,
    pub token: String,
}

#[derive(Debug, thiserror::Error)]
pub enum XenstoreError {
    #[error("cannot connect to xenstored at {path}: {source}")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("xenstore I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("xenstore {op} {path}: {errno}")]
    Failed {
        op: &'static str,
        path: String,
        /// The error name xenstored replied with (ENOENT, EACCES, EAGAIN, ...).
        errno: String,
    },
    #[error("xenstore protocol error: {0}")]
    Protocol(String),
}

pub type Result<T> = std::result::Result<T, XenstoreError>;

/// The Xenstore operations a toolstack needs. Shared between threads.
pub trait Xenstore: Send + Sync {
    /// Makes sure xenstored is reachable (a lazy client connects now); the others are.
    fn ensure_connected(&self) -> Result<()> {
        Ok(())
    }
    fn transaction_start(&self) -> Result<TxId>;
    /// Applies writes, mkdirs and permission changes in order. The wire client sends them all
    /// before reading any reply (one round trip instead of one per operation); the first
    /// failure is reported after every reply has been read.
    fn apply(&self, tx: TxId, ops: &[XsOp<'_>]) -> Result<()> {
        for op in ops {
            match op {
                XsOp::Write(path, value) => self.write(tx, path, value)?,
                XsOp::Mkdir(path) => self.mkdir(tx, path)?,
                XsOp::SetPerms(path, perms) => self.set_perms(tx, path, perms)?,
            }
        }
        Ok(())
    }
    fn transaction_end(&self, tx: TxId, commit: bool) -> Result<TxOutcome>;
    /// The node's value, or `None` if it does not exist.
    fn read(&self, tx: TxId, path: &str) -> Result<Option<Vec<u8>>>;
    /// Creates the node and any missing parents.
    fn write(&self, tx: TxId, path: &str, value: &[u8]) -> Result<()>;
    fn mkdir(&self, tx: TxId, path: &str) -> Result<()>;
    /// Removes the node and everything below it; a missing node is not an error.
    fn rm(&self, tx: TxId, path: &str) -> Result<()>;
    /// Names of the node's children (empty if it has none or does not exist).
    fn directory(&self, tx: TxId, path: &str) -> Result<Vec<String>>;
    fn set_perms(&self, tx: TxId, path: &str, perms: &[Perm]) -> Result<()>;
    /// `XS_INTRODUCE`: xenstored starts serving the guest's ring page and event channel.
    fn introduce_domain(&self, dom: DomId, store_mfn: u64, store_port: u32) -> Result<()>;
    /// `XS_RELEASE`: xenstored forgets the domain (after it is destroyed).
    fn release_domain(&self, dom: DomId) -> Result<()>;

    /// `XS_GET_PERMS`; a missing node is `Failed` with `ENOENT`.
    fn get_perms(&self, tx: TxId, path: &str) -> Result<Vec<Perm>>;
    /// `XS_IS_DOMAIN_INTRODUCED`.
    fn is_domain_introduced(&self, dom: DomId) -> Result<bool>;
    /// `XS_WATCH`: events for `path` and everything below it (or a special `@...` path). As
    /// xenstored does, the watch fires once right away with `path` itself.
    fn watch(&self, path: &str, token: &str) -> Result<()>;
    fn unwatch(&self, path: &str, token: &str) -> Result<()>;
    /// The next fired watch, waiting up to `timeout` (`None`: wait forever); `Ok(None)` on timeout.
    fn read_watch(&self, timeout: Option<Duration>) -> Result<Option<WatchEvent>>;

    /// The home path of a domain (`XS_GET_DOMAIN_PATH` always answers this).
    fn domain_path(&self, dom: DomId) -> String {
        format!("/local/domain/{}", dom.0)
    }
}
