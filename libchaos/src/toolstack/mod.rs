//! The split toolstack: `prepare` makes a shell (everything that does not depend on the image),
//! `execute` turns a shell into a running guest, `create` does both (`create`). Lifecycle
//! operations (destroy, pause, shutdown, list, reaping) live in `lifecycle`; per-guest records
//! in `state`.

mod create;
mod error;
mod lifecycle;
mod random;
pub mod state;
#[cfg(test)]
mod tests;
mod timings;
mod types;

use std::sync::Arc;

pub use error::{Result, ToolstackError};
pub use lifecycle::{DomainSummary, ShutdownKind};
pub use random::{random_mac, random_uuid};
pub use state::{DomainRecord, ShellRecord, StateDir, StateError};
pub use timings::{Phase, Timings};
pub use types::{Created, CreationPath, Flavor, Shell, Via};

pub(crate) use random::now_ms;

use crate::config::PlaneKind;
use crate::hypervisor::Hypervisor;
use crate::image::ImageCache;
use crate::plane::xenstore::XenstorePlane;
use crate::plane::{ControlPlane, PlaneError};
use crate::xenstore::Xenstore;

/// The toolstack: a hypervisor, the control planes it can use, the image cache and the
/// runtime state.
pub struct Toolstack {
    hv: Arc<dyn Hypervisor>,
    /// The Xenstore plane, when xenstored is reachable.
    xenstore: Option<XenstorePlane>,
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
        Toolstack {
            hv,
            xenstore: xs.map(XenstorePlane::new),
            images: ImageCache::new(),
            state,
        }
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
            PlaneKind::Noxs => Err(ToolstackError::Unsupported(
                "chaos_control_plane = \"noxs\" is not implemented yet; use \"xenstore\"".into(),
            )),
        }
    }

    /// The Xenstore plane, if xenstored is there (it also knows the guests xl created).
    fn xenstore_plane(&self) -> Option<&dyn ControlPlane> {
        self.xenstore.as_ref().map(|p| p as &dyn ControlPlane)
    }
}
