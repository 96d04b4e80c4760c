//! A client that connects on first use, so a process that never needs Xenstore (a NoXS guest's
//! creation, a host without xenstored) never talks to xenstored. A failed connect is tried
//! again at the next use.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{
    DomId, Perm, Result, TxId, TxOutcome, WatchEvent, Xenstore, XenstoreError, XsClient, XsOp,
};

/// [`XsClient::open`], deferred.
pub struct LazyClient {
    conn: Mutex<Option<Arc<XsClient>>>,
    connect: fn() -> Result<XsClient>,
}

impl std::fmt::Debug for LazyClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let connected = self.conn.lock().map(|c| c.is_some()).unwrap_or(false);
        f.debug_struct("LazyClient")
            .field("connected", &connected)
            .finish()
    }
}

impl Default for LazyClient {
    fn default() -> Self {
        LazyClient::new(XsClient::open)
    }
}

impl LazyClient {
    /// Connects with `connect` when first needed.
    pub fn new(connect: fn() -> Result<XsClient>) -> LazyClient {
        LazyClient {
            conn: Mutex::new(None),
            connect,
        }
    }

    fn client(&self) -> Result<Arc<XsClient>> {
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = conn.as_ref() {
            return Ok(c.clone());
        }
        let c = Arc::new((self.connect)()?);
        *conn = Some(c.clone());
        Ok(c)
    }
}

impl Xenstore for LazyClient {
    fn ensure_connected(&self) -> Result<()> {
        self.client().map(drop)
    }
    fn transaction_start(&self) -> Result<TxId> {
        self.client()?.transaction_start()
    }
    fn apply(&self, tx: TxId, ops: &[XsOp<'_>]) -> Result<()> {
        self.client()?.apply(tx, ops)
    }
    fn transaction_end(&self, tx: TxId, commit: bool) -> Result<TxOutcome> {
        self.client()?.transaction_end(tx, commit)
    }
    fn read(&self, tx: TxId, path: &str) -> Result<Option<Vec<u8>>> {
        self.client()?.read(tx, path)
    }
    fn write(&self, tx: TxId, path: &str, value: &[u8]) -> Result<()> {
        self.client()?.write(tx, path, value)
    }
    fn mkdir(&self, tx: TxId, path: &str) -> Result<()> {
        self.client()?.mkdir(tx, path)
    }
    fn rm(&self, tx: TxId, path: &str) -> Result<()> {
        self.client()?.rm(tx, path)
    }
    fn directory(&self, tx: TxId, path: &str) -> Result<Vec<String>> {
        self.client()?.directory(tx, path)
    }
    fn set_perms(&self, tx: TxId, path: &str, perms: &[Perm]) -> Result<()> {
        self.client()?.set_perms(tx, path, perms)
    }
    fn introduce_domain(&self, dom: DomId, store_mfn: u64, store_port: u32) -> Result<()> {
        self.client()?.introduce_domain(dom, store_mfn, store_port)
    }
    fn release_domain(&self, dom: DomId) -> Result<()> {
        self.client()?.release_domain(dom)
    }
    fn get_perms(&self, tx: TxId, path: &str) -> Result<Vec<Perm>> {
        self.client()?.get_perms(tx, path)
    }
    fn is_domain_introduced(&self, dom: DomId) -> Result<bool> {
        self.client()?.is_domain_introduced(dom)
    }
    fn watch(&self, path: &str, token: &str) -> Result<()> {
        self.client()?.watch(path, token)
    }
    fn unwatch(&self, path: &str, token: &str) -> Result<()> {
        self.client()?.unwatch(path, token)
    }
    fn read_watch(&self, timeout: Option<Duration>) -> Result<Option<WatchEvent>> {
        self.client()?.read_watch(timeout)
    }
}

impl XenstoreError {
    /// True when xenstored could not be reached at all (not there, not running).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, XenstoreError::Connect { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nowhere() -> Result<XsClient> {
        XsClient::connect_unix("/nonexistent/xenstored/socket")
    }

    #[test]
    fn nothing_is_opened_until_used_and_an_absent_daemon_is_reported_as_unreachable() {
        let lazy = LazyClient::new(nowhere);
        assert!(format!("{lazy:?}").contains("connected: false"));
        let err = lazy.read(TxId::NONE, "/x").unwrap_err();
        assert!(err.is_unreachable(), "{err}");
        assert!(lazy.ensure_connected().unwrap_err().is_unreachable());
    }
}
