//! The store model: the committed node tree, the transactions' overlays over it and the
//! watches a change fires.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::ops::Bound::{self, Excluded, Included, Unbounded};

use crate::DomId;
use crate::{Access, Perm, WatchEvent};

#[derive(Debug, Clone)]
pub(super) struct Node {
    pub(super) value: Vec<u8>,
    pub(super) perms: Vec<Perm>,
    /// Generation of the last change to this node or to its list of children.
    pub(super) gen: u64,
}

/// A change a transaction made, replayed on commit. `None` removes the node.
type Overlay = BTreeMap<String, Option<Node>>;

pub(super) struct Tx {
    pub(super) start_gen: u64,
    pub(super) overlay: Overlay,
    /// Paths read or written: a later change to any of them makes the commit conflict.
    pub(super) touched: HashSet<String>,
    /// Watch events to fire if the transaction commits.
    pub(super) fired: Vec<Fired>,
}

/// A change that fires watches: a node written at `path`, or the subtree at `path` removed.
#[derive(Debug, Clone)]
pub(super) struct Fired {
    pub(super) path: String,
    pub(super) removed: bool,
}

pub(super) struct State {
    pub(super) nodes: BTreeMap<String, Node>,
    pub(super) gen: u64,
    /// Generation at which a path was removed, kept while transactions are open so that a
    /// transaction that read the path sees the change.
    pub(super) removed_at: HashMap<String, u64>,
    pub(super) txs: HashMap<u32, Tx>,
    pub(super) next_tx: u32,
    pub(super) introduced: HashMap<DomId, (u64, u32)>,
    pub(super) watches: Vec<(String, String)>,
    pub(super) events: VecDeque<WatchEvent>,
}

pub(super) fn parent_of(path: &str) -> Option<&str> {
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
    pub(super) fn lookup<'a>(&'a self, tx: Option<&'a Tx>, path: &str) -> Option<&'a Node> {
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

    pub(super) fn children(&self, tx: Option<&Tx>, path: &str) -> Vec<String> {
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
    pub(super) fn subtree(&self, tx: Option<&Tx>, path: &str) -> Vec<String> {
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
    pub(super) fn creation(
        &self,
        tx: Option<&Tx>,
        path: &str,
        value: Option<&[u8]>,
    ) -> Vec<(String, Node)> {
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
    pub(super) fn apply(&mut self, changes: Vec<(String, Option<Node>)>) {
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

    pub(super) fn changed_since(&self, path: &str, start: u64) -> bool {
        self.nodes.get(path).is_some_and(|n| n.gen > start)
            || self.removed_at.get(path).is_some_and(|&g| g > start)
    }

    pub(super) fn fire(&mut self, fired: &[Fired]) -> bool {
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

    pub(super) fn special_event(&mut self, special: &str) -> bool {
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

pub(super) fn root_perms() -> Vec<Perm> {
    vec![Perm {
        dom: DomId::DOM0,
        access: Access::None,
    }]
}
