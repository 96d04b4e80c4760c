//! The [`Xenstore`] requests on a [`MemStore`]: transactions, node reads and writes,
//! permissions, domain introduction and watches.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use super::state::{Fired, Node, Tx};
use super::{check_path, failed, MemStore};
use crate::wire::PAYLOAD_MAX;
use crate::DomId;
use crate::{Perm, Result, TxId, TxOutcome, WatchEvent, Xenstore, XenstoreError};

impl Xenstore for MemStore {
    fn transaction_start(&self) -> Result<TxId> {
        self.enter("transaction_start", "")?;
        let mut st = self.lock();
        let id = st.next_tx;
        // Ids are never 0 (that means "no transaction") and never reused while open.
        st.next_tx = st.next_tx.checked_add(1).unwrap_or(1);
        let start_gen = st.gen;
        st.txs.insert(
            id,
            Tx {
                start_gen,
                overlay: BTreeMap::new(),
                touched: HashSet::new(),
                fired: Vec::new(),
            },
        );
        Ok(TxId(id))
    }

    fn transaction_end(&self, tx: TxId, commit: bool) -> Result<TxOutcome> {
        self.enter("transaction_end", &tx.0.to_string())?;
        let mut st = self.lock();
        let t = st
            .txs
            .remove(&tx.0)
            .ok_or_else(|| failed("transaction_end", &tx.0.to_string(), "ENOENT"))?;
        let outcome = if !commit {
            TxOutcome::Aborted
        } else if t.touched.iter().any(|p| st.changed_since(p, t.start_gen)) {
            TxOutcome::Conflict
        } else {
            st.apply(t.overlay.into_iter().collect());
            if st.fire(&t.fired) {
                self.watch_ready.notify_all();
            }
            TxOutcome::Committed
        };
        if st.txs.is_empty() {
            st.removed_at.clear();
        }
        Ok(outcome)
    }

    fn read(&self, tx: TxId, path: &str) -> Result<Option<Vec<u8>>> {
        self.enter("read", path)?;
        self.view("read", tx, path, |st, t| {
            st.lookup(t, path).map(|n| n.value.clone())
        })
    }

    fn write(&self, tx: TxId, path: &str, value: &[u8]) -> Result<()> {
        self.enter("write", path)?;
        if path.len() + 1 + value.len() > PAYLOAD_MAX {
            return Err(XenstoreError::Protocol(format!(
                "write of {path}: value too long ({} bytes)",
                value.len()
            )));
        }
        self.modify("write", tx, path, |st, t| {
            let changes = st
                .creation(t, path, Some(value))
                .into_iter()
                .map(|(p, n)| (p, Some(n)))
                .collect();
            Ok((
                changes,
                Some(Fired {
                    path: path.to_string(),
                    removed: false,
                }),
            ))
        })
    }

    fn mkdir(&self, tx: TxId, path: &str) -> Result<()> {
        self.enter("mkdir", path)?;
        self.modify("mkdir", tx, path, |st, t| {
            let changes: Vec<_> = st
                .creation(t, path, None)
                .into_iter()
                .map(|(p, n)| (p, Some(n)))
                .collect();
            let fired = (!changes.is_empty()).then(|| Fired {
                path: path.to_string(),
                removed: false,
            });
            Ok((changes, fired))
        })
    }

    fn rm(&self, tx: TxId, path: &str) -> Result<()> {
        self.enter("rm", path)?;
        if path == "/" {
            return Err(failed("rm", path, "EINVAL"));
        }
        self.modify("rm", tx, path, |st, t| {
            let changes: Vec<_> = st.subtree(t, path).into_iter().map(|p| (p, None)).collect();
            let fired = (!changes.is_empty()).then(|| Fired {
                path: path.to_string(),
                removed: true,
            });
            Ok((changes, fired))
        })
    }

    fn directory(&self, tx: TxId, path: &str) -> Result<Vec<String>> {
        self.enter("directory", path)?;
        self.view("directory", tx, path, |st, t| st.children(t, path))
    }

    fn set_perms(&self, tx: TxId, path: &str, perms: &[Perm]) -> Result<()> {
        self.enter("set_perms", path)?;
        if perms.is_empty() {
            return Err(failed("set_perms", path, "EINVAL"));
        }
        self.modify("set_perms", tx, path, |st, t| {
            let node = st
                .lookup(t, path)
                .ok_or_else(|| failed("set_perms", path, "ENOENT"))?;
            let node = Node {
                value: node.value.clone(),
                perms: perms.to_vec(),
                gen: 0,
            };
            Ok((
                vec![(path.to_string(), Some(node))],
                Some(Fired {
                    path: path.to_string(),
                    removed: false,
                }),
            ))
        })
    }

    fn introduce_domain(&self, dom: DomId, store_mfn: u64, store_port: u32) -> Result<()> {
        self.enter("introduce", &dom.0.to_string())?;
        let what = dom.0.to_string();
        if dom == DomId::DOM0 || dom.0 >= 0x7ff0 {
            return Err(failed("introduce", &what, "EINVAL"));
        }
        let mut st = self.lock();
        match st.introduced.get(&dom) {
            // Re-introducing with the same ring is what a restore does; xenstored accepts it.
            Some(&prev) if prev == (store_mfn, store_port) => return Ok(()),
            Some(_) => return Err(failed("introduce", &what, "EEXIST")),
            None => {}
        }
        st.introduced.insert(dom, (store_mfn, store_port));
        if st.special_event("@introduceDomain") {
            self.watch_ready.notify_all();
        }
        Ok(())
    }

    fn release_domain(&self, dom: DomId) -> Result<()> {
        self.enter("release", &dom.0.to_string())?;
        let mut st = self.lock();
        if st.introduced.remove(&dom).is_none() {
            return Err(failed("release", &dom.0.to_string(), "ENOENT"));
        }
        if st.special_event("@releaseDomain") {
            self.watch_ready.notify_all();
        }
        Ok(())
    }

    fn get_perms(&self, tx: TxId, path: &str) -> Result<Vec<Perm>> {
        self.enter("get_perms", path)?;
        self.view("get_perms", tx, path, |st, t| {
            st.lookup(t, path).map(|n| n.perms.clone())
        })?
        .ok_or_else(|| failed("get_perms", path, "ENOENT"))
    }

    fn is_domain_introduced(&self, dom: DomId) -> Result<bool> {
        self.enter("is_domain_introduced", &dom.0.to_string())?;
        Ok(self.lock().introduced.contains_key(&dom))
    }

    fn watch(&self, path: &str, token: &str) -> Result<()> {
        self.enter("watch", path)?;
        if !path.starts_with('@') {
            check_path("watch", path)?;
        }
        let mut st = self.lock();
        if st.watches.iter().any(|(p, t)| p == path && t == token) {
            return Err(failed("watch", path, "EEXIST"));
        }
        st.watches.push((path.to_string(), token.to_string()));
        st.events.push_back(WatchEvent {
            path: path.to_string(),
            token: token.to_string(),
        });
        self.watch_ready.notify_all();
        Ok(())
    }

    fn unwatch(&self, path: &str, token: &str) -> Result<()> {
        self.enter("unwatch", path)?;
        let mut st = self.lock();
        let before = st.watches.len();
        st.watches.retain(|(p, t)| !(p == path && t == token));
        if st.watches.len() == before {
            return Err(failed("unwatch", path, "ENOENT"));
        }
        Ok(())
    }

    fn read_watch(&self, timeout: Option<Duration>) -> Result<Option<WatchEvent>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut st = self.lock();
        loop {
            if let Some(ev) = st.events.pop_front() {
                return Ok(Some(ev));
            }
            st = match deadline {
                None => self.watch_ready.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(None);
                    }
                    self.watch_ready
                        .wait_timeout(st, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }
}
