//! An in-memory Xenstore for the simulated hypervisor and tests.
//!
//! Nodes live in one ordered map keyed by full path. A transaction keeps its own writes in an
//! overlay and remembers every path it read or wrote; its commit fails with
//! [`TxOutcome::Conflict`](crate::TxOutcome::Conflict) if any of those paths changed after the
//! transaction started (every change stamps the node, and the parent whose child list changed,
//! with a new generation).
//!
//! The store model is in `state`, the requests in `ops`, fault injection in `fault`.

mod fault;
mod ops;
mod state;

pub use fault::XsFault;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};

use crate::wire::valid_path;
use crate::DomId;
use crate::{Result, TxId, XenstoreError};

use fault::FaultPlan;
use state::{parent_of, root_perms, Fired, Node, State, Tx};

/// An in-memory [`Xenstore`](crate::Xenstore): hierarchical nodes with values and permissions,
/// transactions, domain introduction bookkeeping and watches. Thread-safe; all callers act as
/// dom0. Any request can be made to fail ([`MemStore::arm`]).
pub struct MemStore {
    state: Mutex<State>,
    watch_ready: Condvar,
    faults: Mutex<FaultPlan>,
}

impl std::fmt::Debug for MemStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemStore")
            .field("nodes", &self.lock().nodes.len())
            .finish_non_exhaustive()
    }
}

impl Default for MemStore {
    fn default() -> Self {
        Self::new()
    }
}

fn failed(op: &'static str, path: &str, errno: &str) -> XenstoreError {
    XenstoreError::Failed {
        op,
        path: path.to_string(),
        errno: errno.to_string(),
    }
}

fn check_path(op: &'static str, path: &str) -> Result<()> {
    if valid_path(path) {
        Ok(())
    } else {
        Err(failed(op, path, "EINVAL"))
    }
}

impl MemStore {
    pub fn new() -> MemStore {
        let mut nodes = BTreeMap::new();
        nodes.insert(
            "/".to_string(),
            Node {
                value: Vec::new(),
                perms: root_perms(),
                gen: 0,
            },
        );
        MemStore {
            state: Mutex::new(State {
                nodes,
                gen: 0,
                removed_at: HashMap::new(),
                txs: HashMap::new(),
                next_tx: 1,
                introduced: HashMap::new(),
                watches: Vec::new(),
                events: VecDeque::new(),
            }),
            watch_ready: Condvar::new(),
            faults: Mutex::new(FaultPlan::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the maps consistent (every operation validates
        // before it mutates), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every node path except the root, sorted: tests assert nothing is left behind.
    pub fn paths(&self) -> Vec<String> {
        self.lock()
            .nodes
            .keys()
            .filter(|k| k.as_str() != "/")
            .cloned()
            .collect()
    }

    /// Every path at or below `path`, sorted.
    pub fn paths_under(&self, path: &str) -> Vec<String> {
        self.lock().subtree(None, path)
    }

    /// Transactions started and not yet ended.
    pub fn open_transactions(&self) -> usize {
        self.lock().txs.len()
    }

    /// Domains introduced and not released.
    pub fn introduced_domains(&self) -> Vec<DomId> {
        let mut v: Vec<DomId> = self.lock().introduced.keys().copied().collect();
        v.sort();
        v
    }

    /// Runs `f` on the view of transaction `tx` (or the committed store), then records the
    /// changes it returns in the transaction or applies them and fires watches.
    fn modify(
        &self,
        op: &'static str,
        tx: TxId,
        path: &str,
        f: impl FnOnce(&State, Option<&Tx>) -> Result<(Vec<(String, Option<Node>)>, Option<Fired>)>,
    ) -> Result<()> {
        check_path(op, path)?;
        let mut st = self.lock();
        let st = &mut *st;
        if tx == TxId::NONE {
            let (changes, fired) = f(st, None)?;
            st.apply(changes);
            if let Some(fired) = fired {
                if st.fire(&[fired]) {
                    self.watch_ready.notify_all();
                }
            }
            return Ok(());
        }
        let t = st
            .txs
            .get(&tx.0)
            .ok_or_else(|| failed(op, path, "ENOENT"))?;
        let (changes, fired) = f(st, Some(t))?;
        // Creating or removing a node changes its parent's child list, as in xenstored.
        let flips: Vec<bool> = changes
            .iter()
            .map(|(p, c)| st.lookup(Some(t), p).is_some() != c.is_some())
            .collect();
        let Some(t) = st.txs.get_mut(&tx.0) else {
            return Err(failed(op, path, "ENOENT"));
        };
        for ((p, change), flip) in changes.into_iter().zip(flips) {
            if let Some(parent) = parent_of(&p).filter(|_| flip) {
                t.touched.insert(parent.to_string());
            }
            t.touched.insert(p.clone());
            t.overlay.insert(p, change);
        }
        t.fired.extend(fired);
        Ok(())
    }

    /// Runs a read-only `f` on the view of `tx`, recording `path` as read.
    fn view<T>(
        &self,
        op: &'static str,
        tx: TxId,
        path: &str,
        f: impl FnOnce(&State, Option<&Tx>) -> T,
    ) -> Result<T> {
        check_path(op, path)?;
        let mut st = self.lock();
        if tx == TxId::NONE {
            return Ok(f(&st, None));
        }
        let st = &mut *st;
        let t = st
            .txs
            .get_mut(&tx.0)
            .ok_or_else(|| failed(op, path, "ENOENT"))?;
        t.touched.insert(path.to_string());
        Ok(f(st, st.txs.get(&tx.0)))
    }
}

#[cfg(test)]
mod tests;
