//! What a piece of work cost in calls into Xen and xenstored, counted by the code that makes
//! them: unlike times, these counts are the same from run to run.
//!
//! Counts are per thread (chaosd creates on one thread while its refill workers prepare shells
//! on others), so a [`CostMeter`] started and read on one thread sees only that thread's calls.

use std::cell::RefCell;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

thread_local! {
    /// Calls by kind ("XEN_DOMCTL_createdomain", "IOCTL_PRIVCMD_MMAPBATCH_V2", ...).
    static CALLS: RefCell<BTreeMap<&'static str, u64>> = const { RefCell::new(BTreeMap::new()) };
}

/// Counts one call of kind `what` on this thread (the Xen backend, at each hypercall or
/// hypervisor ioctl it makes).
pub(crate) fn count(what: &'static str) {
    CALLS.with(|c| *c.borrow_mut().entry(what).or_insert(0) += 1);
}

/// Calls by kind and Xenstore requests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Costs {
    /// Hypercalls and privcmd/evtchn ioctls, by kind.
    #[serde(default)]
    pub hypercalls: BTreeMap<String, u64>,
    /// Requests sent to Xenstore.
    #[serde(default)]
    pub xenstore_requests: u64,
}

impl Costs {
    pub fn hypercalls_total(&self) -> u64 {
        self.hypercalls.values().sum()
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Costs) {
        for (k, n) in &other.hypercalls {
            *self.hypercalls.entry(k.clone()).or_insert(0) += n;
        }
        self.xenstore_requests += other.xenstore_requests;
    }
}

/// Measures the calls this thread makes between [`start`](Self::start) and
/// [`read`](Self::read).
#[derive(Debug)]
pub struct CostMeter {
    calls: BTreeMap<&'static str, u64>,
    xenstore: u64,
}

impl CostMeter {
    pub fn start() -> CostMeter {
        CostMeter {
            calls: CALLS.with(|c| c.borrow().clone()),
            xenstore: crate::xenstore::requests_sent_on_this_thread(),
        }
    }

    /// What this thread called since `start`.
    pub fn read(&self) -> Costs {
        let hypercalls = CALLS.with(|c| {
            c.borrow()
                .iter()
                .filter_map(|(k, &n)| {
                    let d = n - self.calls.get(k).copied().unwrap_or(0);
                    (d > 0).then(|| (k.to_string(), d))
                })
                .collect()
        });
        Costs {
            hypercalls,
            xenstore_requests: crate::xenstore::requests_sent_on_this_thread() - self.xenstore,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_meter_sees_its_own_threads_calls_since_it_started() {
        count("before");
        let meter = CostMeter::start();
        count("XEN_DOMCTL_createdomain");
        count("XEN_DOMCTL_createdomain");
        count("before");
        std::thread::spawn(|| count("XEN_DOMCTL_createdomain"))
            .join()
            .unwrap();
        let costs = meter.read();
        assert_eq!(costs.hypercalls.get("XEN_DOMCTL_createdomain"), Some(&2));
        assert_eq!(costs.hypercalls.get("before"), Some(&1));
        assert_eq!(costs.hypercalls_total(), 3);
        assert_eq!(costs.xenstore_requests, 0);
    }

    #[test]
    fn costs_add_up_by_kind() {
        let mut a = Costs::default();
        a.hypercalls.insert("x".into(), 2);
        a.xenstore_requests = 3;
        let mut b = a.clone();
        b.hypercalls.insert("y".into(), 1);
        a.add(&b);
        assert_eq!(a.hypercalls["x"], 4);
        assert_eq!(a.hypercalls["y"], 1);
        assert_eq!(a.xenstore_requests, 6);
    }
}
