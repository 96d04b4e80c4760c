//! Control planes: how a guest learns about its devices and how dom0 talks to it afterwards.
//!
//! A [`ControlPlane`] is what a creation, a destroy and a shutdown request need from one:
//! publish a new guest's devices to their backends, take them away again, and ask the guest to
//! power off or reboot. Two implementations, chosen per guest by `chaos_control_plane`:
//! - [`xenstore::XenstorePlane`] (default; unmodified guests): the guest's entries and its
//!   vifs' front/back directories in one Xenstore transaction, then the introduction;
//!   xenconsoled serves the console, Linux netback the vifs.
//! - [`noxs::NoxsPlane`]: no Xenstore at all; a device page and control pages in the guest's
//!   memory (see the `noxs` crate's ABI), the console and vifs served by xendevd.
//!
//! The builder writes each plane's pages (the Xenstore ring, or the NoXS device and control
//! pages); the plane publishes them.

pub mod noxs;
pub mod xenstore;

use serde::{Deserialize, Serialize};

use crate::config::{DomainConfig, PlaneKind};
use crate::hypervisor::{DomId, EvtchnPort, Uuid};
use crate::toolstack::{ShutdownKind, Timings};
use ::xenstore::XenstoreError;
use xen_types::GrantRef;

/// A ring page (or the NoXS device page) and its event channel, as the guest was given them.
/// `frame` is what Xen's interfaces take for this guest: a machine frame for PV, a guest frame
/// for PVH.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ring {
    pub frame: u64,
    /// 0 for the NoXS device page, which has no channel of its own.
    pub evtchn: EvtchnPort,
}

/// Which NoXS device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    Sysctl,
    Vif,
}

/// A NoXS device of a guest: its control page (`frame` as Xen's interfaces take it, and the
/// grant that gives it to the backend, if any) and the guest's port toward the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub kind: DeviceKind,
    pub id: u32,
    pub frame: u64,
    pub evtchn: EvtchnPort,
    #[serde(default)]
    pub gref: Option<GrantRef>,
}

/// A new guest, as a plane publishes it.
#[derive(Debug, Clone, Copy)]
pub struct Guest<'a> {
    pub domid: DomId,
    pub uuid: Uuid,
    /// The config, with every vif's MAC chosen.
    pub config: &'a DomainConfig,
    pub console: Ring,
    /// The Xenstore ring, or the NoXS device page.
    pub store: Ring,
    /// NoXS devices (none on the Xenstore plane).
    pub devices: &'a [Device],
}

#[derive(Debug, thiserror::Error)]
pub enum PlaneError {
    #[error("xenstore: {0}")]
    Xenstore(#[from] XenstoreError),
    #[error("the {0} control plane is not available: {1}")]
    Unavailable(PlaneKind, String),
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Backend(String),
}

pub type Result<T> = std::result::Result<T, PlaneError>;

/// What a creation, a destroy and a shutdown request need from a control plane.
pub trait ControlPlane: Send + Sync {
    fn kind(&self) -> PlaneKind;

    /// Refuses early (before a shell is spent) when the plane cannot work here: the Xenstore
    /// plane connects to xenstored.
    fn ready(&self) -> Result<()> {
        Ok(())
    }

    /// Makes a built guest's devices known to dom0 and its backends, before it is unpaused.
    /// Records its phases as laps of `timings` (the caller ends its own lap right before).
    /// On error the caller rolls back with [`unpublish`].
    ///
    /// [`unpublish`]: ControlPlane::unpublish
    fn publish(&self, guest: &Guest<'_>, timings: &mut Timings) -> Result<()>;

    /// Removes what `publish` made for `domid` (and tells the backends): on destroy, and to
    /// roll back a creation that failed anywhere. Missing pieces are not an error.
    fn unpublish(&self, domid: DomId, uuid: Option<Uuid>) -> Result<()>;

    /// Asks the guest to power off or reboot. `guest` is its record, when chaos has one (xl's
    /// guests have none).
    fn request_shutdown(
        &self,
        domid: DomId,
        guest: Option<&Guest<'_>>,
        kind: ShutdownKind,
    ) -> Result<()>;

    /// The name of a domain chaos has no record of, if this plane knows one (xl's guests).
    fn name_of(&self, domid: DomId) -> Result<Option<String>> {
        let _ = domid;
        Ok(None)
    }
}
