//! Shells kept ready per flavor, in process. The chaosd daemon builds its refilled pool on this.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{Flavor, Result, Shell, Toolstack};

/// Ready shells by flavor. Taking is O(1); shells are handed out newest first.
#[derive(Debug, Default)]
pub struct ShellPool {
    shells: Mutex<HashMap<Flavor, Vec<Shell>>>,
}

impl ShellPool {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Flavor, Vec<Shell>>> {
        self.shells.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A ready shell of exactly this flavor, if there is one.
    pub fn take(&self, flavor: &Flavor) -> Option<Shell> {
        self.lock().get_mut(flavor)?.pop()
    }

    pub fn put(&self, shell: Shell) {
        self.lock()
            .entry(shell.flavor.clone())
            .or_default()
            .push(shell);
    }

    /// Ready shells of this flavor.
    pub fn ready(&self, flavor: &Flavor) -> usize {
        self.lock().get(flavor).map_or(0, Vec::len)
    }

    /// Prepares shells until `target` of this flavor are ready. Stops at the first failure
    /// (out of memory, typically) and reports it; the shells made before it stay in the pool.
    pub fn fill(&self, ts: &Toolstack, flavor: &Flavor, target: usize) -> Result<usize> {
        let mut made = 0;
        while self.ready(flavor) < target {
            self.put(ts.prepare(flavor)?);
            made += 1;
        }
        Ok(made)
    }

    /// Destroys every ready shell; returns how many. Keeps going past failures and reports
    /// the first one.
    pub fn drain(&self, ts: &Toolstack) -> Result<usize> {
        let all: Vec<Shell> = self.lock().drain().flat_map(|(_, v)| v).collect();
        let mut first_err = None;
        let mut destroyed = 0;
        for shell in all {
            match ts.discard(shell) {
                Ok(()) => destroyed += 1,
                Err(e) => {
                    log::error!("destroying a pool shell: {e}");
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(destroyed),
        }
    }
}
