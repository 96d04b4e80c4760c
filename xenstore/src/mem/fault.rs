//! Fault injection: fail a chosen request on purpose.

use std::collections::HashMap;

use super::{failed, MemStore};
use crate::Result;

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
pub(super) struct FaultPlan {
    requests: u64,
    by_op: HashMap<&'static str, u64>,
    fault: Option<XsFault>,
}

impl MemStore {
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
    pub(super) fn enter(&self, op: &'static str, path: &str) -> Result<()> {
        crate::counting::count(1);
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
}
