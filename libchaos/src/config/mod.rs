//! Guest configuration: xl.cfg files (and LightVM's JSON) -> one validated [`DomainConfig`].
//!
//! Parsing never touches Xen. An xl.cfg file goes through two layers:
//! 1. [`syntax`]: a lexer and parser for xl's grammar (`KEY = VALUE` separated by newlines or `;`,
//!    quoted strings, numbers, nested lists, `#` comments, `+=`) into raw [`syntax::Setting`]s;
//! 2. validation ([`xl`]): the effective settings (later keys override earlier ones, then the
//!    command-line `KEY=VALUE` overrides, as `xl create cfg KEY=VALUE...`) are checked and turned
//!    into a [`DomainConfig`]. Keys xl knows that would change the guest in ways chaos cannot
//!    honour yet (PCI, bootloaders, ...) are refused; disks are kept as written and refused
//!    when a guest is created; keys without effect on the guest are ignored with a
//!    [`Warning`]; unknown keys are warned about, as xl ignores them.
//!
//! A `.json` file is read as LightVM's config format instead ([`json`]), into the same type.
//! Every error names the file, the line (and column for JSON) and the key.

pub mod error;
pub mod json;
pub mod syntax;
pub mod vif;
pub mod xl;

pub use error::{ConfigError, Location, Warning};

use crate::hypervisor::GuestKind;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

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

/// A validated guest configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainConfig {
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
    pub control_plane: ControlPlane,
    pub tsc_mode: TscMode,
    pub uuid: Option<[u8; 16]>,
    /// Create paused (JSON `paused`; xl uses `xl create -p` instead, so false for xl.cfg).
    pub paused: bool,
    /// xl `disk` specs, kept as written. The parser accepts them so that ordinary configs
    /// (Debian's xlexample.pvlinux has one) load; creating a guest with disks is refused until
    /// chaos has block devices.
    #[serde(default)]
    pub disks: Vec<String>,
}

impl DomainConfig {
    /// A config with xl's defaults for everything but the name and the kernel.
    pub fn new(name: impl Into<String>, kernel: impl Into<PathBuf>) -> Self {
        DomainConfig {
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
            control_plane: ControlPlane::Xenstore,
            tsc_mode: TscMode::Default,
            uuid: None,
            paused: false,
            disks: Vec::new(),
        }
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

/// One network interface. Its devid is its index in [`DomainConfig::vifs`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VifConfig {
    /// None: the toolstack picks one (xl: 00:16:3e:xx:xx:xx).
    pub mac: Option<[u8; 6]>,
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

/// How devices are described to the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ControlPlane {
    /// Xenstore, for unmodified guests.
    Xenstore,
    /// NoXS device page, no Xenstore.
    Noxs,
}

impl ControlPlane {
    pub fn as_str(self) -> &'static str {
        match self {
            ControlPlane::Xenstore => "xenstore",
            ControlPlane::Noxs => "noxs",
        }
    }

    pub fn from_name(s: &str) -> Option<ControlPlane> {
        match s {
            "xenstore" => Some(ControlPlane::Xenstore),
            "noxs" => Some(ControlPlane::Noxs),
            _ => None,
        }
    }
}

impl fmt::Display for ControlPlane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// xl `tsc_mode` (libxl's names; the numeric values are xl's deprecated integer forms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TscMode {
    Default = 0,
    AlwaysEmulate = 1,
    Native = 2,
    NativeParavirt = 3,
}

impl TscMode {
    pub const ALL: [TscMode; 4] = [
        TscMode::Default,
        TscMode::AlwaysEmulate,
        TscMode::Native,
        TscMode::NativeParavirt,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TscMode::Default => "default",
            TscMode::AlwaysEmulate => "always_emulate",
            TscMode::Native => "native",
            TscMode::NativeParavirt => "native_paravirt",
        }
    }

    pub fn from_name(s: &str) -> Option<TscMode> {
        TscMode::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

impl fmt::Display for TscMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated config and what was ignored on the way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Loaded {
    pub config: DomainConfig,
    pub warnings: Vec<Warning>,
}

/// Largest config file read: real ones are a few KiB; LightVM caps them at 64 KiB.
pub const MAX_FILE_SIZE: u64 = 1 << 20;

/// Reads `path` and parses it: LightVM JSON if the name ends in `.json`, xl.cfg otherwise.
/// `overrides` are xl's `KEY=VALUE` command-line settings (xl.cfg only; refused for JSON).
pub fn load(path: &Path, overrides: &[String]) -> Result<Loaded, ConfigError> {
    let shown = path.display().to_string();
    let io = |e: std::io::Error| ConfigError::Io {
        path: shown.clone(),
        message: e.to_string(),
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(ConfigError::Io {
            path: shown,
            message: "not a regular file".into(),
        });
    }
    if meta.len() > MAX_FILE_SIZE {
        return Err(ConfigError::Io {
            path: shown,
            message: format!(
                "{} bytes is too large for a config file (max {MAX_FILE_SIZE})",
                meta.len()
            ),
        });
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let good = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..good].iter().filter(|&&b| b == b'\n').count() + 1;
        let line = u32::try_from(line).unwrap_or(u32::MAX);
        ConfigError::Syntax {
            at: Location::line(&shown, line),
            message: format!("not valid UTF-8 (at byte offset {good})"),
        }
    })?;
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    if is_json {
        if let Some(o) = overrides.first() {
            return Err(ConfigError::Invalid {
                at: Location::CommandLine { text: o.clone() },
                key: o.split('=').next().unwrap_or("").trim().to_string(),
                message: "KEY=VALUE overrides apply to xl.cfg files, not JSON configs".into(),
            });
        }
        parse_json(&text, &shown)
    } else {
        parse_xl(&text, &shown, overrides)
    }
}

/// Parses and validates xl.cfg text. `source` names the file in messages.
pub fn parse_xl(text: &str, source: &str, overrides: &[String]) -> Result<Loaded, ConfigError> {
    xl::parse(text, source, overrides)
}

/// Parses and validates a LightVM JSON config. `source` names the file in messages.
pub fn parse_json(text: &str, source: &str) -> Result<Loaded, ConfigError> {
    json::parse(text, source)
}
