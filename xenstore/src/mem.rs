//! An in-memory Xenstore for the simulated hypervisor and tests.
//!
//! Nodes live in one ordered map keyed by full path. A transaction keeps its own writes in an
//! overlay and remembers every path it read or wrote; its commit fails with
//! [`TxOutcome::Conflict`] if any of those paths changed after the transaction started (every
//! change stamps the node, and the parent whose child list changed, with a new generation).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::ops::Bound::{self, Excluded, Included, Unbounded};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::wire::{valid_path, PAYLOAD_MAX};
use crate::DomId;
use crate::{Access, Perm, Result, TxId, TxOutcome, WatchEvent, Xenstore, XenstoreError};

#[derive(Debug, Clone)]
struct Node {
    value: Vec<u8>,
    perms: Vec<Perm>,
    /// Generation of the last change to this node or to its list of children.
    gen: u64,
}

/// A change a transaction made, replayed on commit. `None` removes the node.
type Overlay = BTreeMap<String, Option<Node>>;

struct Tx {
    start_gen: u64,
    overlay: Overlay,
    /// Paths read or written: a later change to any of them makes the commit conflict.
    touched: HashSet<String>,
    /// Watch events to fire if the transaction commits.
    fired: Vec<Fired>,
}

/// A change that fires watches: a node written at `path`, or the subtree at `path` removed.
#[derive(Debug, Clone)]
struct Fired {
    path: String,
    removed: bool,
}

struct State {
    nodes: BTreeMap<String, Node>,
    gen: u64,
    /// Generation at which a path was removed, kept while transactions are open so that a
    /// transaction that read the path sees the change.
    removed_at: HashMap<String, u64>,
    txs: HashMap<u32, Tx>,
    next_tx: u32,
    introduced: HashMap<DomId, (u64, u32)>,
    watches: Vec<(String, String)>,
    events: VecDeque<WatchEvent>,
}

/// Which request a [`MemStore`] fails on purpose, so that every Xenstore failure of a
/// toolstack operation is testable (as the simulated hypervisor's faults are).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XsFault {
    /// The n-th request (0-based) counted from when the fault was armed, whatever its kind.
    Request(u64),
    /// The n-th request (0-based) of one kind ("write", "rm", "introduce", ...).
    Op { name: &'static str, nth: u64 },
}

/// The armed fault and the request counters it is measured against.
#[derive(Debug, Default)]
struct FaultPlan {
    requests: u64,
    by_op: HashMap<&'static str, u64>,
    fault: Option<XsFault>,
}

/// An in-memory [`Xenstore`]: hierarchical nodes with values and permissions, transactions,
/// domain introduction bookkeeping and watches. Thread-safe; all callers act as dom0. Any
/// request can be made to fail ([`MemStore::arm`]).
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

fn parent_of(path: &str) -> Option<&str> {
    match path.rfind('/') {
        _ if path == "/" => None,
        Some(0) => Some("/"),
        Some(i) => Some(&path[..i]),
        None => None,
    }
}

/// `"/a"` -> `"/a/"`, `"/"` -> `"/"`: the prefix every descendant's path starts with.
fn subtree_prefix(path: &str) -> String {
    if path == "/" {
        "/".to_string()
    } else {
        format!("{path}/")
    }
}

/// Whether `path` is `base` or below it.
fn is_at_or_below(path: &str, base: &str) -> bool {
    path == base
        || base == "/"
        || path
            .strip_prefix(base)
            .is_some_and(|rest| rest.starts_with('/'))
}

impl State {
    fn lookup<'a>(&'a self, tx: Option<&'a Tx>, path: &str) -> Option<&'a Node> {
        if let Some(entry) = tx.and_then(|t| t.overlay.get(path)) {
            return entry.as_ref();
        }
        self.nodes.get(path)
    }

    /// Direct children of `path` in the committed store: one map lookup per child, however
    /// large the subtrees below them are.
    fn committed_children(&self, path: &str) -> BTreeSet<String> {
        let prefix = subtree_prefix(path);
        let mut out = BTreeSet::new();
        let mut from = prefix.clone();
        let mut inclusive = false;
        loop {
            let start = if inclusive {
                Included(from.as_str())
            } else {
                Excluded(from.as_str())
            };
            let next = self.nodes.range::<str, _>((start, Unbounded)).next();
            let Some((key, _)) = next else { break };
            let Some(rest) = key.strip_prefix(&prefix) else {
                break;
            };
            match rest.find('/') {
                None => {
                    out.insert(rest.to_string());
                    from = key.clone();
                    inclusive = false;
                }
                // A grandchild: skip the rest of that child's subtree ('0' sorts right after '/').
                Some(i) => {
                    out.insert(rest[..i].to_string());
                    from = format!("{prefix}{}0", &rest[..i]);
                    inclusive = true;
                }
            }
        }
        out
    }

    fn children(&self, tx: Option<&Tx>, path: &str) -> Vec<String> {
        let mut names = self.committed_children(path);
        if let Some(t) = tx {
            let prefix = subtree_prefix(path);
            for (key, entry) in t.overlay.range::<str, _>(from_key(&prefix)) {
                let Some(rest) = key.strip_prefix(&prefix) else {
                    break;
                };
                if rest.is_empty() || rest.contains('/') {
                    continue;
                }
                if entry.is_some() {
                    names.insert(rest.to_string());
                } else {
                    names.remove(rest);
                }
            }
        }
        names.into_iter().collect()
    }

    /// Every existing path at or below `path`, as seen by `tx`.
    fn subtree(&self, tx: Option<&Tx>, path: &str) -> Vec<String> {
        let prefix = subtree_prefix(path);
        let mut paths: BTreeSet<String> = self
            .nodes
            .range::<str, _>(from_key(&prefix))
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(&prefix))
            .cloned()
            .collect();
        if let Some(t) = tx {
            for (key, entry) in t.overlay.range::<str, _>(from_key(&prefix)) {
                if !key.starts_with(&prefix) {
                    break;
                }
                if entry.is_some() {
                    paths.insert(key.clone());
                } else {
                    paths.remove(key);
                }
            }
        }
        if path != "/" && self.lookup(tx, path).is_some() {
            paths.insert(path.to_string());
        }
        paths.into_iter().collect()
    }

    /// The changes that make `path` exist: missing ancestors (empty, with their parent's
    /// permissions) and `path` itself with `value` (or its old value if `value` is `None`).
    fn creation(&self, tx: Option<&Tx>, path: &str, value: Option<&[u8]>) -> Vec<(String, Node)> {
        let mut missing = Vec::new();
        let mut p = path;
        while self.lookup(tx, p).is_none() {
            missing.push(p);
            match parent_of(p) {
                Some(parent) => p = parent,
                None => break,
            }
        }
        let mut perms = self
            .lookup(tx, p)
            .map(|n| n.perms.clone())
            .unwrap_or_else(root_perms);
        let mut out = Vec::new();
        for m in missing.into_iter().rev() {
            let v = if m == path {
                value.unwrap_or_default().to_vec()
            } else {
                Vec::new()
            };
            out.push((
                m.to_string(),
                Node {
                    value: v,
                    perms: perms.clone(),
                    gen: 0,
                },
            ));
        }
        if let (Some(v), Some(existing)) = (value, self.lookup(tx, path)) {
            perms = existing.perms.clone();
            out.push((
                path.to_string(),
                Node {
                    value: v.to_vec(),
                    perms,
                    gen: 0,
                },
            ));
        }
        out
    }

    /// Applies committed changes: stamps them with a new generation, bumps the parents whose
    /// child list changed and records removals for open transactions.
    fn apply(&mut self, changes: Vec<(String, Option<Node>)>) {
        self.gen += 1;
        let gen = self.gen;
        for (path, change) in changes {
            let existed = self.nodes.contains_key(&path);
            match change {
                Some(mut node) => {
                    node.gen = gen;
                    self.nodes.insert(path.clone(), node);
                }
                None => {
                    self.nodes.remove(&path);
                    if !self.txs.is_empty() {
                        self.removed_at.insert(path.clone(), gen);
                    }
                }
            }
            if existed != self.nodes.contains_key(&path) {
                if let Some(parent) = parent_of(&path).and_then(|p| self.nodes.get_mut(p)) {
                    parent.gen = gen;
                }
            }
        }
    }

    fn changed_since(&self, path: &str, start: u64) -> bool {
        self.nodes.get(path).is_some_and(|n| n.gen > start)
            || self.removed_at.get(path).is_some_and(|&g| g > start)
    }

    fn fire(&mut self, fired: &[Fired]) -> bool {
        let mut any = false;
        for f in fired {
            for (wpath, token) in &self.watches {
                let path = if is_at_or_below(&f.path, wpath) {
                    f.path.clone()
                } else if f.removed && is_at_or_below(wpath, &f.path) {
                    wpath.clone()
                } else {
                    continue;
                };
                self.events.push_back(WatchEvent {
                    path,
                    token: token.clone(),
                });
                any = true;
            }
        }
        any
    }

    fn special_event(&mut self, special: &str) -> bool {
        let mut any = false;
        for (wpath, token) in &self.watches {
            if wpath == special {
                self.events.push_back(WatchEvent {
                    path: special.to_string(),
                    token: token.clone(),
                });
                any = true;
            }
        }
        any
    }
}

/// Keys from `key` on, for ranges over maps keyed by `String`.
fn from_key(key: &str) -> (Bound<&str>, Bound<&str>) {
    (Included(key), Unbounded)
}

fn root_perms() -> Vec<Perm> {
    vec![Perm {
        dom: DomId::DOM0,
        access: Access::None,
    }]
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

    /// Arms a fault and restarts the request counters it refers to.
    pub fn arm(&self, fault: XsFault) {
        let mut f = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        *f = FaultPlan {
            fault: Some(fault),
            ..FaultPlan::default()
        };
    }

    /// Disarms any fault.
    pub fn disarm(&self) {
        self.faults.lock().unwrap_or_else(|e| e.into_inner()).fault = None;
    }

    /// Requests made since the last `arm` (or since creation).
    pub fn requests(&self) -> u64 {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .requests
    }

    /// Counts a request of kind `op` on `path` and fails it (EIO) if the armed fault says so.
    fn enter(&self, op: &'static str, path: &str) -> Result<()> {
        let mut f = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        let n = f.requests;
        f.requests += 1;
        let count = f.by_op.entry(op).or_insert(0);
        let nth_of_op = *count;
        *count += 1;
        let fails = match f.fault {
            Some(XsFault::Request(k)) => k == n,
            Some(XsFault::Op { name, nth }) => name == op && nth == nth_of_op,
            None => false,
        };
        if fails {
            return Err(failed(op, path, "EIO"));
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    const NO: TxId = TxId::NONE;

    fn errno(r: Result<impl std::fmt::Debug>) -> String {
        match r {
            Err(XenstoreError::Failed { errno, .. }) => errno,
            other => panic!("expected a Failed error, got {other:?}"),
        }
    }

    #[test]
    fn write_creates_parents_with_empty_values_and_inherited_perms() {
        let xs = MemStore::new();
        xs.write(NO, "/local", b"").unwrap();
        let perms = [Perm {
            dom: DomId(0),
            access: Access::Read,
        }];
        xs.set_perms(NO, "/local", &perms).unwrap();
        xs.write(NO, "/local/domain/5/name", b"g").unwrap();
        assert_eq!(
            xs.paths(),
            vec![
                "/local",
                "/local/domain",
                "/local/domain/5",
                "/local/domain/5/name"
            ]
        );
        assert_eq!(xs.read(NO, "/local/domain").unwrap(), Some(Vec::new()));
        assert_eq!(
            xs.read(NO, "/local/domain/5/name").unwrap(),
            Some(b"g".to_vec())
        );
        assert_eq!(xs.get_perms(NO, "/local/domain/5").unwrap(), perms);
        assert_eq!(xs.read(NO, "/nope").unwrap(), None);
        assert_eq!(errno(xs.get_perms(NO, "/nope")), "ENOENT");
    }

    #[test]
    fn overwrite_keeps_perms_and_mkdir_keeps_value() {
        let xs = MemStore::new();
        xs.write(NO, "/a", b"1").unwrap();
        let perms = [Perm {
            dom: DomId(3),
            access: Access::Both,
        }];
        xs.set_perms(NO, "/a", &perms).unwrap();
        xs.write(NO, "/a", b"2").unwrap();
        assert_eq!(xs.get_perms(NO, "/a").unwrap(), perms);
        xs.mkdir(NO, "/a").unwrap();
        assert_eq!(xs.read(NO, "/a").unwrap(), Some(b"2".to_vec()));
        xs.mkdir(NO, "/b/c").unwrap();
        assert_eq!(xs.read(NO, "/b/c").unwrap(), Some(Vec::new()));
    }

    #[test]
    fn rm_is_recursive_and_missing_is_fine() {
        let xs = MemStore::new();
        xs.write(NO, "/d/1/x", b"").unwrap();
        xs.write(NO, "/d/1/y/z", b"").unwrap();
        xs.write(NO, "/d/10", b"").unwrap();
        xs.write(NO, "/d/1-b", b"").unwrap();
        xs.rm(NO, "/d/1").unwrap();
        assert_eq!(xs.paths(), vec!["/d", "/d/1-b", "/d/10"]);
        xs.rm(NO, "/d/1").unwrap();
        xs.rm(NO, "/q/r").unwrap();
        assert_eq!(errno(xs.rm(NO, "/")), "EINVAL");
    }

    #[test]
    fn directory_lists_direct_children_only() {
        let xs = MemStore::new();
        for p in ["/d/a/deep/er", "/d/a-b", "/d/a0", "/d/b", "/d/a/x", "/e"] {
            xs.write(NO, p, b"").unwrap();
        }
        assert_eq!(xs.directory(NO, "/d").unwrap(), vec!["a", "a-b", "a0", "b"]);
        assert_eq!(xs.directory(NO, "/").unwrap(), vec!["d", "e"]);
        assert!(xs.directory(NO, "/d/b").unwrap().is_empty());
        assert!(xs.directory(NO, "/missing").unwrap().is_empty());
    }

    #[test]
    fn invalid_paths_are_einval() {
        let xs = MemStore::new();
        for p in ["relative", "/a/", "/a//b", "/a b", ""] {
            assert_eq!(errno(xs.write(NO, p, b"")), "EINVAL", "{p:?}");
            assert_eq!(errno(xs.read(NO, p)), "EINVAL", "{p:?}");
        }
        assert!(xs.paths().is_empty());
    }

    #[test]
    fn transaction_sees_own_writes_and_commits_atomically() {
        let xs = MemStore::new();
        xs.write(NO, "/old/x", b"1").unwrap();
        let tx = xs.transaction_start().unwrap();
        xs.write(tx, "/vm/1/name", b"g").unwrap();
        xs.rm(tx, "/old").unwrap();
        assert_eq!(xs.read(tx, "/vm/1/name").unwrap(), Some(b"g".to_vec()));
        assert_eq!(xs.read(tx, "/old/x").unwrap(), None);
        assert_eq!(xs.directory(tx, "/").unwrap(), vec!["vm"]);
        // Outside the transaction nothing has happened yet.
        assert_eq!(xs.read(NO, "/vm/1/name").unwrap(), None);
        assert_eq!(xs.read(NO, "/old/x").unwrap(), Some(b"1".to_vec()));
        assert_eq!(xs.transaction_end(tx, true).unwrap(), TxOutcome::Committed);
        assert_eq!(xs.paths(), vec!["/vm", "/vm/1", "/vm/1/name"]);
        assert_eq!(xs.open_transactions(), 0);
    }

    #[test]
    fn abort_discards() {
        let xs = MemStore::new();
        let tx = xs.transaction_start().unwrap();
        xs.write(tx, "/a/b", b"x").unwrap();
        assert_eq!(xs.transaction_end(tx, false).unwrap(), TxOutcome::Aborted);
        assert!(xs.paths().is_empty());
        assert_eq!(errno(xs.transaction_end(tx, true)), "ENOENT");
        assert_eq!(errno(xs.write(tx, "/a", b"")), "ENOENT");
    }

    #[test]
    fn conflicting_commit_fails_and_changes_nothing() {
        let xs = MemStore::new();
        xs.write(NO, "/c", b"0").unwrap();
        let tx = xs.transaction_start().unwrap();
        assert_eq!(xs.read(tx, "/c").unwrap(), Some(b"0".to_vec()));
        xs.write(tx, "/mine", b"1").unwrap();
        xs.write(NO, "/c", b"other").unwrap();
        assert_eq!(xs.transaction_end(tx, true).unwrap(), TxOutcome::Conflict);
        assert_eq!(xs.read(NO, "/mine").unwrap(), None);
    }

    #[test]
    fn conflict_on_a_path_created_or_removed_meanwhile() {
        let xs = MemStore::new();
        // Read as absent, then created by someone else.
        let tx = xs.transaction_start().unwrap();
        assert_eq!(xs.read(tx, "/x").unwrap(), None);
        xs.write(NO, "/x", b"").unwrap();
        assert_eq!(xs.transaction_end(tx, true).unwrap(), TxOutcome::Conflict);
        // Listed, then a child appears.
        let tx = xs.transaction_start().unwrap();
        xs.directory(tx, "/x").unwrap();
        xs.write(NO, "/x/child", b"").unwrap();
        assert_eq!(xs.transaction_end(tx, true).unwrap(), TxOutcome::Conflict);
        // Read, then removed.
        let tx = xs.transaction_start().unwrap();
        xs.read(tx, "/x/child").unwrap();
        xs.rm(NO, "/x/child").unwrap();
        assert_eq!(xs.transaction_end(tx, true).unwrap(), TxOutcome::Conflict);
    }

    #[test]
    fn unrelated_changes_do_not_conflict() {
        let xs = MemStore::new();
        xs.write(NO, "/local/domain/1/name", b"a").unwrap();
        let tx = xs.transaction_start().unwrap();
        xs.write(tx, "/local/domain/2/name", b"b").unwrap();
        xs.write(NO, "/local/domain/1/name", b"a2").unwrap();
        assert_eq!(xs.transaction_end(tx, true).unwrap(), TxOutcome::Committed);
        assert_eq!(
            xs.read(NO, "/local/domain/2/name").unwrap(),
            Some(b"b".to_vec())
        );
    }

    #[test]
    fn two_transactions_creating_siblings_conflict_like_xenstored() {
        // Both add a child to /local/domain, so both change its child list: the second loses.
        let xs = MemStore::new();
        xs.mkdir(NO, "/local/domain").unwrap();
        let t1 = xs.transaction_start().unwrap();
        let t2 = xs.transaction_start().unwrap();
        xs.write(t1, "/local/domain/1/name", b"a").unwrap();
        xs.write(t2, "/local/domain/2/name", b"b").unwrap();
        assert_eq!(xs.transaction_end(t1, true).unwrap(), TxOutcome::Committed);
        assert_eq!(xs.transaction_end(t2, true).unwrap(), TxOutcome::Conflict);
    }

    #[test]
    fn introduce_and_release_bookkeeping() {
        let xs = MemStore::new();
        assert!(!xs.is_domain_introduced(DomId(4)).unwrap());
        xs.introduce_domain(DomId(4), 0x1234, 7).unwrap();
        xs.introduce_domain(DomId(4), 0x1234, 7).unwrap();
        assert_eq!(errno(xs.introduce_domain(DomId(4), 0x1, 7)), "EEXIST");
        assert_eq!(errno(xs.introduce_domain(DomId(0), 0x1, 7)), "EINVAL");
        assert!(xs.is_domain_introduced(DomId(4)).unwrap());
        assert_eq!(xs.introduced_domains(), vec![DomId(4)]);
        xs.release_domain(DomId(4)).unwrap();
        assert!(!xs.is_domain_introduced(DomId(4)).unwrap());
        assert_eq!(errno(xs.release_domain(DomId(4))), "ENOENT");
    }

    #[test]
    fn watches_fire_on_registration_changes_and_removal() {
        let xs = MemStore::new();
        let ev = |p: &str, t: &str| {
            Some(WatchEvent {
                path: p.into(),
                token: t.into(),
            })
        };
        let next = || xs.read_watch(Some(Duration::ZERO)).unwrap();
        xs.watch("/be/vif/3", "vif").unwrap();
        xs.watch("@releaseDomain", "rel").unwrap();
        assert_eq!(next(), ev("/be/vif/3", "vif"));
        assert_eq!(next(), ev("@releaseDomain", "rel"));
        assert_eq!(next(), None);
        xs.write(NO, "/be/vif/3/0/state", b"4").unwrap();
        xs.write(NO, "/be/other", b"").unwrap();
        assert_eq!(next(), ev("/be/vif/3/0/state", "vif"));
        assert_eq!(next(), None);
        // Removing an ancestor reports the watched path itself.
        xs.rm(NO, "/be").unwrap();
        assert_eq!(next(), ev("/be/vif/3", "vif"));
        // Transactions fire on commit only.
        let tx = xs.transaction_start().unwrap();
        xs.write(tx, "/be/vif/3/1", b"").unwrap();
        assert_eq!(next(), None);
        xs.transaction_end(tx, true).unwrap();
        assert_eq!(next(), ev("/be/vif/3/1", "vif"));
        xs.introduce_domain(DomId(3), 1, 1).unwrap();
        xs.release_domain(DomId(3)).unwrap();
        assert_eq!(next(), ev("@releaseDomain", "rel"));
        xs.unwatch("/be/vif/3", "vif").unwrap();
        xs.write(NO, "/be/vif/3/2", b"").unwrap();
        assert_eq!(next(), None);
        assert_eq!(errno(xs.unwatch("/be/vif/3", "vif")), "ENOENT");
    }

    #[test]
    fn read_watch_wakes_up_on_a_write_from_another_thread() {
        let xs = std::sync::Arc::new(MemStore::new());
        xs.watch("/w", "t").unwrap();
        xs.read_watch(None).unwrap();
        let writer = {
            let xs = xs.clone();
            std::thread::spawn(move || xs.write(NO, "/w/x", b"1").unwrap())
        };
        let ev = xs.read_watch(None).unwrap();
        writer.join().unwrap();
        assert_eq!(
            ev,
            Some(WatchEvent {
                path: "/w/x".into(),
                token: "t".into()
            })
        );
    }
}
