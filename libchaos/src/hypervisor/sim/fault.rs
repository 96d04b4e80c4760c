//! Fault injection: any call of the simulated host can be made to fail on purpose, so every
//! rollback path of the toolstack is testable.

use std::collections::HashMap;

/// Which call to fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The n-th call (0-based) counted from when the fault was armed, whatever the operation.
    Call(u64),
    /// The n-th call (0-based) of the operation with this name (e.g. "XENMEM_populate_physmap").
    Op { name: &'static str, nth: u64 },
}

/// The armed fault and the call counters it is measured against.
#[derive(Debug, Default)]
pub(super) struct FaultPlan {
    /// Calls seen since the last `arm`.
    calls: u64,
    op_calls: HashMap<&'static str, u64>,
    fault: Option<Fault>,
}

impl FaultPlan {
    /// Arms a fault and restarts the call counters it refers to.
    pub(super) fn arm(&mut self, fault: Fault) {
        self.calls = 0;
        self.op_calls.clear();
        self.fault = Some(fault);
    }

    pub(super) fn disarm(&mut self) {
        self.fault = None;
    }

    pub(super) fn calls(&self) -> u64 {
        self.calls
    }

    /// Counts a call of `op`; true if the armed fault says it must fail.
    pub(super) fn fails(&mut self, op: &'static str) -> bool {
        let call = self.calls;
        self.calls += 1;
        let nth = self.op_calls.entry(op).or_insert(0);
        let op_call = *nth;
        *nth += 1;
        match &self.fault {
            Some(Fault::Call(n)) => *n == call,
            Some(Fault::Op { name, nth }) => *name == op && *nth == op_call,
            None => false,
        }
    }
}
