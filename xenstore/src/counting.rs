//! Requests this thread has sent, to xenstored or to the in-memory store.
//!
//! A creation's Xenstore cost can then be read without xenstored's trace log, exactly and
//! per thread (chaosd's refill workers and its creations run on different threads).

use std::cell::Cell;

thread_local! {
    static SENT: Cell<u64> = const { Cell::new(0) };
}

/// Requests sent from this thread since it started (replies and watch events not counted).
pub fn requests_sent_on_this_thread() -> u64 {
    SENT.with(Cell::get)
}

pub(crate) fn count(requests: u64) {
    SENT.with(|c| c.set(c.get().wrapping_add(requests)));
}
