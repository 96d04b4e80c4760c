//! The split toolstack: `prepare` makes a shell (everything that does not depend on the image),
//! `execute` turns a shell into a running guest, `create` does both (`create`). Lifecycle
//! operations (destroy, pause, shutdown, list, reaping) live in `lifecycle`; per-guest records
//! in `state`.

mod create;
mod error;
mod lifecycle;
mod random;
pub mod reaper;
pub mod state;
#[cfg(test)]
mod tests;
mod timings;
mod types;

use std::path::PathBuf;
use std::sync::Arc;

pub use error::{Result, ToolstackError};
pub use lifecycle::{ConsoleServer, DomainSummary, ShutdownKind};
pub use random::{random_mac, random_uuid};
pub use state::{DomainRecord, NameEntry, PendingCreation, ShellRecord, StateDir, StateError};
pub use timings::{Phase, Timings};
pub use types::{Created, CreationPath, FinishAhead, Flavor, Shell, Via, WarmImage};

pub(crate) use random::now_ms;

/// Overrides xendevd's socket (the NoXS backends) for this process.
pub const XENDEVD_SOCKET_VAR: &str = "CHAOS_XENDEVD_SOCKET";

use crate::config::PlaneKind;
use crate::hypervisor::Hypervisor;
use crate::image::ImageCache;
use crate::plane::noxs::{NoxsBackend, NoxsPlane, Xendevd};
use crate::plane::xenstore::XenstorePlane;
use crate::plane::{ControlPlane, PlaneError};
use crate::xenstore::Xenstore;

/// The toolstack: a hypervisor, the control planes it can use, the image cache and the
/// runtime state.
pub struct Toolstack {
    hv: Arc<dyn Hypervisor>,
    /// The Xenstore plane, when xenstored is reachable.
    xenstore: Option<XenstorePlane>,
    noxs: NoxsPlane,
    images: ImageCache,
    state: StateDir,
}

impl std::fmt::Debug for Toolstack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Toolstack")
            .field("hypervisor", &self.hv.name())
            .field("xenstore", &self.xenstore.is_some())
            .field("state", &self.state.root())
            .finish()
    }
}

impl Toolstack {
    /// A toolstack on `hv`, with the Xenstore plane if `xs` is given, keeping its records in
    /// `state`.
    pub fn new(hv: Arc<dyn Hypervisor>, xs: Option<Arc<dyn Xenstore>>, state: StateDir) -> Self {
        let socket = std::env::var_os(XENDEVD_SOCKET_VAR)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(xendevd_api::DEFAULT_SOCKET));
        Toolstack {
            noxs: NoxsPlane::new(
                hv.clone(),
                state.root().join(xendevd_api::RECORDS_SUBDIR),
                Box::new(Xendevd::new(socket)),
            ),
            hv,
            xenstore: xs.map(XenstorePlane::new),
            images: ImageCache::new(),
            state,
        }
    }

    /// The same toolstack with another NoXS backend than xendevd (tests, embedders).
    pub fn with_noxs_backend(mut self, backend: Box<dyn NoxsBackend>) -> Self {
        self.noxs = NoxsPlane::new(
            self.hv.clone(),
            self.state.root().join(xendevd_api::RECORDS_SUBDIR),
            backend,
        );
        self
    }

    pub fn hypervisor(&self) -> &dyn Hypervisor {
        self.hv.as_ref()
    }

    pub fn state(&self) -> &StateDir {
        &self.state
    }

    /// The control plane of that kind, or why it cannot be used here.
    pub fn plane(&self, kind: PlaneKind) -> Result<&dyn ControlPlane> {
        match kind {
            PlaneKind::Xenstore => match &self.xenstore {
                Some(p) => Ok(p),
                None => Err(PlaneError::Unavailable(
                    kind,
                    "it needs xenstored, and none is connected".into(),
                )
                .into()),
            },
            PlaneKind::Noxs => Ok(&self.noxs),
        }
    }

    /// The Xenstore plane, if xenstored is there (it also knows the guests xl created).
    fn xenstore_plane(&self) -> Option<&dyn ControlPlane> {
        self.xenstore.as_ref().map(|p| p as &dyn ControlPlane)
    }
}
