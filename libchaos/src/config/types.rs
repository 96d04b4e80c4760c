//! What a guest configuration holds: [`GuestSpec`], plain data in the shape both parsers
//! produce and chaosd's wire format carries, and [`DomainConfig`], the same data once
//! [`validate`](super::validate) has checked it. A `DomainConfig` can only be made from a spec
//! that passed, so every entry point (xl.cfg, LightVM JSON, chaosd's socket, the records read
//! back from the runtime directory) holds the same guarantees.

use std::fmt;
use std::ops::Deref;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::error::{ConfigError, Location};
pub use crate::hypervisor::TscMode;
use crate::hypervisor::{GuestKind, Uuid};
use xen_types::Mac;

/// libxl's memory default when neither `memory` nor `maxmem` is given (MiB).
pub const DEFAULT_MEMORY_MIB: u64 = 32;
/// Upper bound for `memory`/`maxmem`: 16 TiB, the most RAM Xen 4.17 supports on x86 (with
/// CONFIG_BIGMEM). Anything above is a typo (e.g. KiB written for MiB).
pub const MAX_MEMORY_MIB: u64 = 16 * 1024 * 1024;
/// Upper bound for `vcpus`/`maxvcpus`: Xen 4.17 caps HVM-container guests (PVH) at 128
/// (HVM_MAX_VCPUS) and LightVM's toolstack keeps a 128-entry vcpu map; PV could go higher but a
/// single limit keeps a config valid for both guest types.
pub const MAX_VCPUS: u32 = 128;
/// Default bridge for a vif, as xl.
pub const DEFAULT_BRIDGE: &str = "xenbr0";

/// A guest configuration as data, not yet checked: what the parsers produce before
/// validation, and what a client sends chaosd. Turn it into a [`DomainConfig`] with
/// [`GuestSpec::validate`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestSpec {
    pub name: String,
    /// xl `type`: "pv" (default on x86) or "pvh".
    pub kind: GuestKind,
    pub kernel: PathBuf,
    pub ramdisk: Option<PathBuf>,
    /// As xl composes it: `cmdline` if given, else "root=<root> <extra>" / "<extra>".
    pub cmdline: String,
    pub memory_mib: u64,
    /// At least `memory_mib`.
    pub maxmem_mib: u64,
    pub vcpus: u32,
    /// At least `vcpus`.
    pub max_vcpus: u32,
    pub on_poweroff: Action,
    pub on_reboot: Action,
    pub on_crash: Action,
    /// vif N has devid N.
    pub vifs: Vec<VifConfig>,
    /// chaos extension `chaos_control_plane = "xenstore" | "noxs"`.
    pub control_plane: PlaneKind,
    pub tsc_mode: TscMode,
    pub uuid: Option<Uuid>,
    /// Create paused (JSON `paused`; xl uses `xl create -p` instead, so false for xl.cfg).
    pub paused: bool,
    /// xl `disk`: the guest's virtual block devices, in the order written.
    #[serde(default)]
    pub disks: Vec<DiskConfig>,
}

impl GuestSpec {
    /// A spec with xl's defaults for everything but the name and the kernel.
    pub fn new(name: impl Into<String>, kernel: impl Into<PathBuf>) -> Self {
        GuestSpec {
            name: name.into(),
            kind: GuestKind::Pv,
            kernel: kernel.into(),
            ramdisk: None,
            cmdline: String::new(),
            memory_mib: DEFAULT_MEMORY_MIB,
            maxmem_mib: DEFAULT_MEMORY_MIB,
            vcpus: 1,
            max_vcpus: 1,
            on_poweroff: Action::Destroy,
            on_reboot: Action::Restart,
            on_crash: Action::Destroy,
            vifs: Vec::new(),
            control_plane: PlaneKind::Xenstore,
            tsc_mode: TscMode::Default,
            uuid: None,
            paused: false,
            disks: Vec::new(),
        }
    }

    /// Checks the spec; `at` says where it came from, for the error.
    pub fn validate_at(self, at: &Location) -> Result<DomainConfig, ConfigError> {
        self.validate_located(|_| at.clone())
    }

    /// Checks the spec; `at` gives the location of a key, for the error.
    pub fn validate_located(
        self,
        at: impl FnOnce(&str) -> Location,
    ) -> Result<DomainConfig, ConfigError> {
        super::validate::check(&self).map_err(|e| {
            let location = at(e.key);
            e.at(location)
        })?;
        Ok(DomainConfig { spec: self })
    }

    /// Checks the spec, for specs that come from no file (tests, programs).
    pub fn validate(self) -> Result<DomainConfig, ConfigError> {
        self.validate_at(&Location::Unknown)
    }
}

/// A validated guest configuration. It reads like a [`GuestSpec`] (it derefs to one); to
/// change it, take the spec, change it and validate again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "GuestSpec", into = "GuestSpec")]
pub struct DomainConfig {
    spec: GuestSpec,
}

impl DomainConfig {
    pub fn spec(&self) -> &GuestSpec {
        &self.spec
    }

    pub fn into_spec(self) -> GuestSpec {
        self.spec
    }

    /// The same guest under another name (`chaos create -n`, restarts), checked again.
    pub fn renamed(&self, name: String) -> Result<DomainConfig, ConfigError> {
        GuestSpec {
            name,
            ..self.spec.clone()
        }
        .validate()
    }

    /// Guest `i` (1-based) of `count` made from this config: named `<name>-<i>` when there
    /// are several (`chaos create -n`), unchanged when there is one.
    pub fn numbered(&self, i: u32, count: u32) -> Result<DomainConfig, ConfigError> {
        if count <= 1 {
            return Ok(self.clone());
        }
        self.renamed(format!("{}-{i}", self.spec.name))
    }

    /// Applies `f` to a copy of the spec and validates the result.
    pub fn with(&self, f: impl FnOnce(&mut GuestSpec)) -> Result<DomainConfig, ConfigError> {
        let mut spec = self.spec.clone();
        f(&mut spec);
        spec.validate()
    }
}

impl Deref for DomainConfig {
    type Target = GuestSpec;
    fn deref(&self) -> &GuestSpec {
        &self.spec
    }
}

impl TryFrom<GuestSpec> for DomainConfig {
    type Error = ConfigError;
    fn try_from(spec: GuestSpec) -> Result<DomainConfig, ConfigError> {
        spec.validate()
    }
}

impl From<DomainConfig> for GuestSpec {
    fn from(c: DomainConfig) -> GuestSpec {
        c.spec
    }
}

/// What to do when the guest powers off, reboots or crashes (xl's names).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Destroy,
    Restart,
    RenameRestart,
    Preserve,
    CoredumpDestroy,
    CoredumpRestart,
    SoftReset,
}

impl Action {
    pub const ALL: [Action; 7] = [
        Action::Destroy,
        Action::Restart,
        Action::RenameRestart,
        Action::Preserve,
        Action::CoredumpDestroy,
        Action::CoredumpRestart,
        Action::SoftReset,
    ];

    /// xl's name for the action.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Destroy => "destroy",
            Action::Restart => "restart",
            Action::RenameRestart => "rename-restart",
            Action::Preserve => "preserve",
            Action::CoredumpDestroy => "coredump-destroy",
            Action::CoredumpRestart => "coredump-restart",
            Action::SoftReset => "soft-reset",
        }
    }

    /// Parses xl's name (exact match, as xl).
    pub fn from_name(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One network interface. Its devid is its index in [`GuestSpec::vifs`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VifConfig {
    /// None: the toolstack picks one (xl: 00:16:3e:xx:xx:xx).
    pub mac: Option<Mac>,
    pub bridge: String,
    pub ip: Option<String>,
    pub vifname: Option<String>,
    pub script: Option<String>,
    pub backend: Option<String>,
}

impl Default for VifConfig {
    fn default() -> Self {
        VifConfig {
            mac: None,
            bridge: DEFAULT_BRIDGE.to_string(),
            ip: None,
            vifname: None,
            script: None,
            backend: None,
        }
    }
}

/// One virtual block device (xl `disk`, xl-disk-configuration(5)): a file or a block device
/// in dom0 that Linux blkback serves to the guest's blkfront. A file goes through a loop device
/// xendevd sets up; a block device is used as it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    /// The file or block device in dom0 (`target`), absolute: xl's `/dev/` is put in front
    /// of a relative name.
    pub target: PathBuf,
    /// The guest's name for the disk as written (`xvda`, `hdc`, `sdb1`, `d0p1`, `51712`);
    /// [`DiskConfig::devid`] is its number.
    pub vdev: String,
    /// `access=r`/`ro`: the guest may not write (and the loop device is read-only).
    pub readonly: bool,
    /// `script=`: recorded in Xenstore for tools that read it; chaos runs no hotplug script.
    pub script: Option<String>,
    /// `discard`/`no-discard`; unset, discard is advertised for writable disks (libxl).
    pub discard: Option<bool>,
    /// `direct-io-safe`.
    pub direct_io_safe: bool,
    /// `trusted`/`untrusted`: whether the guest may trust the backend (default trusted).
    pub trusted: bool,
    /// `backend=`: the backend domain; none means dom0 (the only one chaos supports yet).
    pub backend: Option<String>,
}

impl DiskConfig {
    /// A writable disk `target` seen by the guest as `vdev`, with xl's defaults otherwise.
    pub fn new(target: impl Into<PathBuf>, vdev: impl Into<String>) -> DiskConfig {
        DiskConfig {
            target: target.into(),
            vdev: vdev.into(),
            readonly: false,
            script: None,
            discard: None,
            direct_io_safe: false,
            trusted: true,
            backend: None,
        }
    }

    /// The disk's number (Xenstore's `virtual-device` and the device directories' name), as
    /// libxl computes it from the vdev; `None` for a vdev libxl does not know.
    pub fn devid(&self) -> Option<u32> {
        super::disk::vdev_devid(&self.vdev)
    }

    /// Whether the backend advertises discard: as asked, else for writable disks (libxl).
    pub fn discard_enabled(&self) -> bool {
        self.discard.unwrap_or(!self.readonly)
    }
}

/// How devices are described to the guest: which control plane it uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlaneKind {
    /// Xenstore, for unmodified guests.
    Xenstore,
    /// NoXS device page, no Xenstore.
    Noxs,
}

impl PlaneKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PlaneKind::Xenstore => "xenstore",
            PlaneKind::Noxs => "noxs",
        }
    }

    pub fn from_name(s: &str) -> Option<PlaneKind> {
        match s {
            "xenstore" => Some(PlaneKind::Xenstore),
            "noxs" => Some(PlaneKind::Noxs),
            _ => None,
        }
    }
}

impl fmt::Display for PlaneKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated config and what was ignored on the way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Loaded {
    pub config: DomainConfig,
    pub warnings: Vec<super::Warning>,
}
