//! chaosd's wire protocol: one JSON object per line each way, a reply for every request, in
//! order. Requests are tagged by `op`, replies by `result`.
//!
//! ```text
//! {"op":"create","config":{...GuestSpec...},"paused":false}
//! {"op":"create","file":"/etc/chaos/noop.cfg","overrides":["memory=4"]}
//! {"op":"status"}
//! {"op":"destroy","domain":"noop-1"}
//! ```

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::GuestSpec;
use crate::hypervisor::DomId;
use crate::toolstack::{Created, Flavor};

/// Longest request line the daemon reads; a longer one gets an error and the connection closes.
/// A DomainConfig is a few hundred bytes; a long cmdline is at most a few KiB.
pub const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum Request {
    /// Create a guest: from a parsed config, or from a config file the daemon reads (absolute
    /// path) with xl-style overrides.
    Create {
        /// Checked by chaosd as a parsed file would be ([`GuestSpec::validate`]).
        #[serde(default)]
        config: Option<Box<GuestSpec>>,
        #[serde(default)]
        file: Option<PathBuf>,
        #[serde(default)]
        overrides: Vec<String>,
        #[serde(default)]
        paused: bool,
        /// Refuse instead of preparing a shell on the spot when no pool has this flavor.
        #[serde(default)]
        pool_only: bool,
    },
    /// The pool's state and the daemon's creation latencies. (A struct variant, so that
    /// unknown fields are refused as for the others.)
    Status {},
    /// Destroy a guest by name or domid.
    Destroy { domain: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "lowercase")]
pub enum Response {
    Created(Box<Created>),
    Status(Box<PoolStatus>),
    Destroyed { domid: DomId },
    Error { message: String },
}

impl Response {
    pub fn error(message: impl Into<String>) -> Response {
        Response::Error {
            message: message.into(),
        }
    }
}

/// p50/p90/p99 of a set of durations, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// How many samples (the most recent ones are kept).
    pub count: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
}

/// One configured flavor in `chaos pool status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlavorStatus {
    pub flavor: Flavor,
    pub ready: usize,
    pub target: usize,
    /// Shells being prepared right now.
    pub preparing: usize,
    /// Shells prepared since the daemon started.
    pub prepared: u64,
    /// Shells handed to creations since the daemon started.
    pub taken: u64,
    /// The last refill failure, if the last attempt failed.
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolStatus {
    pub flavors: Vec<FlavorStatus>,
    pub uptime_s: f64,
    /// Shells prepared per second over the last minute.
    pub refill_per_s: f64,
    /// Free host memory and the reserve refills keep.
    pub free_mib: u64,
    pub reserve_mib: u64,
    /// Refills are waiting because they would eat into the reserve.
    pub held_by_reserve: bool,
    /// Shells reclaimed at start from a daemon that died.
    pub reclaimed: usize,
    /// Time to prepare one shell (in the background).
    pub prepare: Percentiles,
    /// Creations from a ready shell (execute only), as the daemon timed them.
    pub pool_create: Percentiles,
    /// Creations that found no shell (prepare + execute).
    pub direct_create: Percentiles,
}
