//! The contract between the chaos toolstack and xendevd's NoXS backends (the console, and the
//! userspace vif backend): which NoXS guests exist and where their rings and control pages
//! are. Xenstore-plane guests do not appear here; their backends learn about them from
//! Xenstore as always.
//!
//! Two halves:
//! - **records**: one JSON file per NoXS guest, `<dir>/<domid>.json` ([`NoxsGuest`]), written by
//!   the toolstack before it asks xendevd to attach and removed when the guest is destroyed.
//!   A restarted xendevd reads them back and re-attaches every guest, so none is lost.
//! - **the socket**: one JSON object per line each way (`/run/xendevd/xendevd.sock`, root only).
//!   ```text
//!   {"op":"attach","domid":5}            -> {"result":"ok"}      (read <dir>/5.json, serve it)
//!   {"op":"detach","domid":5}            -> {"result":"ok"}
//!   {"op":"list"}                        -> {"result":"guests","domids":[5,7]}
//!   {"op":"console","domid":5}           -> {"result":"ok"}, then the connection is the
//!                                           guest's console: bytes both ways
//!   ```
//!   An error is `{"result":"error","message":"..."}`. A connection takes one request after
//!   another (until it becomes a console), so a toolstack that keeps it pays no connect per
//!   guest.

mod client;
mod record;

pub use client::{Client, ClientError};
pub use record::{ConsoleRing, NoxsGuest, NoxsVif, RecordDir, RecordError};

use serde::{Deserialize, Serialize};
use xen_types::DomId;

/// xendevd's socket.
pub const DEFAULT_SOCKET: &str = "/run/xendevd/xendevd.sock";
/// Where the toolstack keeps the NoXS guest records (inside its runtime directory).
pub const RECORDS_SUBDIR: &str = "noxs";
/// Longest request or reply line.
pub const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum Request {
    /// Serve the NoXS guest whose record is `<records>/<domid>.json`.
    Attach { domid: DomId },
    /// Stop serving it (it was destroyed); unknown domids are not an error.
    Detach { domid: DomId },
    /// The guests being served.
    List {},
    /// Turn this connection into the guest's console.
    Console { domid: DomId },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "lowercase")]
pub enum Response {
    Ok {},
    Guests { domids: Vec<DomId> },
    Error { message: String },
}

impl Response {
    pub fn error(message: impl Into<String>) -> Response {
        Response::Error {
            message: message.into(),
        }
    }
}
