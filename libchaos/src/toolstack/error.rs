//! What can go wrong in the toolstack, one enum for the whole crate's callers.

use crate::build::BuildError;
use crate::hypervisor::{DomId, HypervisorError};
use crate::image::ImageError;
use crate::plane::PlaneError;
use crate::xenstore::XenstoreError;

use super::state::StateError;
use super::Flavor;

#[derive(Debug, thiserror::Error)]
pub enum ToolstackError {
    #[error("{step}: {source}")]
    Hypervisor {
        step: &'static str,
        #[source]
        source: HypervisorError,
    },
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("xenstore: {0}")]
    Xenstore(#[from] XenstoreError),
    #[error(transparent)]
    Plane(#[from] PlaneError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("runtime state: {0}")]
    State(#[from] StateError),
    #[error("not enough free host memory: the guest needs {needed_mib} MiB, Xen has {free_mib} MiB free")]
    HostMemory { needed_mib: u64, free_mib: u64 },
    #[error("a domain named {0:?} already exists")]
    NameInUse(String),
    #[error("the requester went away before the guest was committed; it was rolled back")]
    Abandoned,
    #[error("no domain {0:?}")]
    NoSuchDomain(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("the shell (domain {domid}) was prepared for {shell:?}, the config needs {wanted:?}")]
    FlavorMismatch {
        domid: DomId,
        shell: Box<Flavor>,
        wanted: Box<Flavor>,
    },
    /// A warm shell whose image is not this guest's (another file, or the file changed since
    /// the shell was made): it was destroyed; create the guest without it.
    #[error("the warm shell (domain {domid}) holds another image: {why}")]
    WarmShellStale { domid: DomId, why: String },
}

impl ToolstackError {
    /// Whether this says that domain `dom` does not exist (a shell destroyed behind the
    /// toolstack's back, say).
    pub fn is_no_such_domain(&self, dom: DomId) -> bool {
        let source = match self {
            ToolstackError::Hypervisor { source, .. }
            | ToolstackError::Build(BuildError::Hypervisor { source, .. }) => source,
            _ => return false,
        };
        matches!(source, HypervisorError::NoSuchDomain(d) if *d == dom)
    }
}

pub type Result<T> = std::result::Result<T, ToolstackError>;

/// Wraps a hypervisor error with the step that failed.
pub(crate) fn hv_step(step: &'static str) -> impl FnOnce(HypervisorError) -> ToolstackError {
    move |source| ToolstackError::Hypervisor { step, source }
}
