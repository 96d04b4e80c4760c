//! Layer two of the xl.cfg reader: raw settings -> a validated [`DomainConfig`].
//!
//! Semantics follow xl (tools/xl/xl_parse.c): defaults, `cmdline` composition from
//! `root`/`extra`, `memory`/`maxmem` and `vcpus`/`maxvcpus` rules, action names. Every key xl
//! knows falls in one of three groups: handled here, refused (it would change the guest and
//! chaos cannot do it yet), or ignored with a warning (no effect on what the guest sees, or
//! only meaningful for HVM guests or a device model, which chaos never runs).

use super::error::{ConfigError, Location, Warning};
use super::syntax::{self, parse_c_number, Setting, Value};
use super::vif::parse_vif_spec;
use super::{
    Action, ControlPlane, DomainConfig, Loaded, TscMode, DEFAULT_MEMORY_MIB, MAX_MEMORY_MIB,
    MAX_VCPUS,
};
use crate::hypervisor::GuestKind;
use std::collections::HashMap;
use std::path::PathBuf;

/// Keys validated into [`DomainConfig`].
pub const HANDLED_KEYS: &[&str] = &[
    "name",
    "type",
    "builder",
    "kernel",
    "ramdisk",
    "cmdline",
    "root",
    "extra",
    "memory",
    "maxmem",
    "vcpus",
    "maxvcpus",
    "on_poweroff",
    "on_reboot",
    "on_crash",
    "vif",
    "uuid",
    "tsc_mode",
    "chaos_control_plane",
    "disk",
];

/// How a key chaos does not carry is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Treatment {
    /// Refused whatever its value: it changes the guest and chaos cannot honour it yet.
    Refuse(&'static str),
    /// Refused unless "off" (0, "", or an empty list), which changes nothing.
    RefuseIfSet(&'static str),
    /// Accepted and ignored, with a warning.
    Warn(&'static str),
}

const NO_DM: &str = "not supported by chaos yet (no device model: chaos runs no QEMU)";
const HVM_ONLY: &str = "ignored (only used for HVM guests)";
const ARM_ONLY: &str = "ignored (only used on Arm)";
const SCHED: &str = "ignored (chaos does not set scheduler parameters yet)";
const AFFINITY: &str = "ignored (chaos does not pin vcpus yet)";
const LIMITS: &str = "ignored (chaos uses its own per-domain limits)";

/// The refused and warned keys. Lookups also match key prefixes ending in '_' or '*'.
pub const OTHER_KEYS: &[(&str, Treatment)] = &[
    // Devices chaos has no backend for.
    (
        "pci",
        Treatment::RefuseIfSet("not supported by chaos yet (no PCI passthrough)"),
    ),
    (
        "dtdev",
        Treatment::RefuseIfSet("not supported by chaos yet (no device tree passthrough)"),
    ),
    (
        "device_tree",
        Treatment::Refuse("not supported by chaos yet (no device tree passthrough)"),
    ),
    (
        "iomem",
        Treatment::RefuseIfSet("not supported by chaos yet (no I/O memory passthrough)"),
    ),
    (
        "ioports",
        Treatment::RefuseIfSet("not supported by chaos yet (no I/O port passthrough)"),
    ),
    (
        "irqs",
        Treatment::RefuseIfSet("not supported by chaos yet (no IRQ passthrough)"),
    ),
    (
        "gfx_passthru",
        Treatment::RefuseIfSet("not supported by chaos yet (no PCI passthrough)"),
    ),
    (
        "rdm",
        Treatment::RefuseIfSet("not supported by chaos yet (no PCI passthrough)"),
    ),
    (
        "usb",
        Treatment::RefuseIfSet("not supported by chaos yet (no USB devices)"),
    ),
    (
        "usbctrl",
        Treatment::RefuseIfSet("not supported by chaos yet (no USB devices)"),
    ),
    (
        "usbdev",
        Treatment::RefuseIfSet("not supported by chaos yet (no USB devices)"),
    ),
    (
        "usbdevice",
        Treatment::RefuseIfSet("not supported by chaos yet (no USB devices)"),
    ),
    (
        "vfb",
        Treatment::RefuseIfSet("not supported by chaos yet (no framebuffer devices)"),
    ),
    (
        "vkb",
        Treatment::RefuseIfSet("not supported by chaos yet (no keyboard devices)"),
    ),
    (
        "channel",
        Treatment::RefuseIfSet("not supported by chaos yet (no channel devices)"),
    ),
    (
        "vtpm",
        Treatment::RefuseIfSet("not supported by chaos yet (no vTPM devices)"),
    ),
    (
        "p9",
        Treatment::RefuseIfSet("not supported by chaos yet (no 9pfs devices)"),
    ),
    (
        "pvcalls",
        Treatment::RefuseIfSet("not supported by chaos yet (no PV calls backend)"),
    ),
    (
        "vdispl",
        Treatment::RefuseIfSet("not supported by chaos yet (no PV display devices)"),
    ),
    (
        "vsnd",
        Treatment::RefuseIfSet("not supported by chaos yet (no PV sound devices)"),
    ),
    (
        "virtio",
        Treatment::RefuseIfSet("not supported by chaos yet (no virtio devices)"),
    ),
    (
        "soundhw",
        Treatment::RefuseIfSet("not supported by chaos yet (no emulated sound)"),
    ),
    (
        "vnuma",
        Treatment::RefuseIfSet("not supported by chaos yet (no virtual NUMA)"),
    ),
    // Boot paths other than a direct kernel.
    (
        "bootloader",
        Treatment::Refuse("not supported by chaos yet (no bootloaders: give kernel= instead)"),
    ),
    (
        "firmware",
        Treatment::Refuse("not supported by chaos yet (no firmware boot: give kernel= instead)"),
    ),
    (
        "bios",
        Treatment::Refuse("not supported by chaos yet (no firmware boot: give kernel= instead)"),
    ),
    (
        "pvshim",
        Treatment::RefuseIfSet("not supported by chaos yet (no PV shim)"),
    ),
    (
        "pvshim_",
        Treatment::Refuse("not supported by chaos yet (no PV shim)"),
    ),
    ("device_model", Treatment::Refuse(NO_DM)),
    ("device_model_", Treatment::Refuse(NO_DM)),
    ("stubdomain_", Treatment::Refuse(NO_DM)),
    // Changes to what the guest sees or may do.
    (
        "cpuid",
        Treatment::Refuse("not supported by chaos yet (no CPUID policy changes)"),
    ),
    (
        "e820_host",
        Treatment::RefuseIfSet("not supported by chaos yet (no host memory map)"),
    ),
    (
        "driver_domain",
        Treatment::RefuseIfSet("not supported by chaos yet (no driver domains)"),
    ),
    (
        "seclabel",
        Treatment::Refuse("not supported by chaos yet (no XSM/FLASK labels)"),
    ),
    (
        "init_seclabel",
        Treatment::Refuse("not supported by chaos yet (no XSM/FLASK labels)"),
    ),
    (
        "vif2",
        Treatment::RefuseIfSet("not supported (netchannel2 is deprecated; use vif)"),
    ),
    // No effect on the guest's contents, or left to chaos' own choices.
    (
        "bootloader_args",
        Treatment::Warn("ignored (no bootloader)"),
    ),
    (
        "bootloader_user",
        Treatment::Warn("ignored (no bootloader)"),
    ),
    (
        "bootloader_restrict",
        Treatment::Warn("ignored (no bootloader)"),
    ),
    ("cpus", Treatment::Warn(AFFINITY)),
    ("cpus_soft", Treatment::Warn(AFFINITY)),
    ("cpu_weight", Treatment::Warn(SCHED)),
    ("cap", Treatment::Warn(SCHED)),
    ("period", Treatment::Warn(SCHED)),
    ("slice", Treatment::Warn(SCHED)),
    ("latency", Treatment::Warn(SCHED)),
    ("extratime", Treatment::Warn(SCHED)),
    (
        "pool",
        Treatment::Warn("ignored (chaos creates domains in the default CPU pool)"),
    ),
    (
        "on_watchdog",
        Treatment::Warn("ignored (chaos has no watchdog handling yet)"),
    ),
    (
        "on_soft_reset",
        Treatment::Warn("ignored (chaos has no soft reset yet)"),
    ),
    (
        "localtime",
        Treatment::Warn("ignored (chaos does not set the guest's time offset)"),
    ),
    (
        "rtc_timeoffset",
        Treatment::Warn("ignored (chaos does not set the guest's time offset)"),
    ),
    (
        "nomigrate",
        Treatment::Warn("ignored (chaos does not migrate guests yet)"),
    ),
    ("max_grant_frames", Treatment::Warn(LIMITS)),
    ("max_maptrack_frames", Treatment::Warn(LIMITS)),
    ("max_grant_version", Treatment::Warn(LIMITS)),
    ("max_event_channels", Treatment::Warn(LIMITS)),
    ("xenstore_quota", Treatment::Warn(LIMITS)),
    ("xenstore_feature_mask", Treatment::Warn(LIMITS)),
    ("vmtrace_buf_kb", Treatment::Warn("ignored (no vmtrace)")),
    (
        "vpmu",
        Treatment::Warn("ignored (chaos leaves the vPMU at Xen's default)"),
    ),
    (
        "xend_suspend_evtchn_compat",
        Treatment::Warn("ignored (xend compatibility)"),
    ),
    ("oos", Treatment::Warn("ignored (shadow paging option)")),
    (
        "hap",
        Treatment::Warn("ignored (chaos lets Xen choose hardware-assisted paging)"),
    ),
    (
        "shadow_memory",
        Treatment::Warn("ignored (shadow paging option)"),
    ),
    (
        "passthrough",
        Treatment::Warn("ignored (no passthrough devices)"),
    ),
    (
        "pci_msitranslate",
        Treatment::Warn("ignored (no PCI passthrough)"),
    ),
    (
        "pci_power_mgmt",
        Treatment::Warn("ignored (no PCI passthrough)"),
    ),
    (
        "pci_permissive",
        Treatment::Warn("ignored (no PCI passthrough)"),
    ),
    ("pci_seize", Treatment::Warn("ignored (no PCI passthrough)")),
    (
        "vkb_device",
        Treatment::Warn("ignored (no keyboard devices)"),
    ),
    ("vncviewer", Treatment::Warn("ignored (xl ignores it too)")),
    ("dm_restrict", Treatment::Warn("ignored (no device model)")),
    ("llc_colors", Treatment::Warn(ARM_ONLY)),
    ("vuart", Treatment::Warn(ARM_ONLY)),
    ("gic_version", Treatment::Warn(ARM_ONLY)),
    ("tee", Treatment::Warn(ARM_ONLY)),
    ("nr_spis", Treatment::Warn(ARM_ONLY)),
    ("sve", Treatment::Warn(ARM_ONLY)),
    ("arm_sci", Treatment::Warn(ARM_ONLY)),
    ("trap_unmapped_accesses", Treatment::Warn(ARM_ONLY)),
    // HVM-only (xl ignores them for PV and PVH guests too).
    (
        "acpi",
        Treatment::Warn("ignored (chaos builds no ACPI tables)"),
    ),
    ("acpi_", Treatment::Warn(HVM_ONLY)),
    ("apic", Treatment::Warn(HVM_ONLY)),
    ("pae", Treatment::Warn(HVM_ONLY)),
    ("hpet", Treatment::Warn(HVM_ONLY)),
    ("nx", Treatment::Warn(HVM_ONLY)),
    ("viridian", Treatment::Warn(HVM_ONLY)),
    ("nestedhvm", Treatment::Warn(HVM_ONLY)),
    ("altp2m", Treatment::Warn(HVM_ONLY)),
    ("altp2mhvm", Treatment::Warn(HVM_ONLY)),
    ("altp2m_count", Treatment::Warn(HVM_ONLY)),
    ("timer_mode", Treatment::Warn(HVM_ONLY)),
    ("vpt_align", Treatment::Warn(HVM_ONLY)),
    ("hvm_pirq", Treatment::Warn(HVM_ONLY)),
    ("mmio_hole", Treatment::Warn(HVM_ONLY)),
    ("rdm_mem_boundary", Treatment::Warn(HVM_ONLY)),
    ("mca_caps", Treatment::Warn(HVM_ONLY)),
    ("msr_relaxed", Treatment::Warn(HVM_ONLY)),
    ("ms_vm_genid", Treatment::Warn(HVM_ONLY)),
    ("smbios", Treatment::Warn(HVM_ONLY)),
    ("smbios_firmware", Treatment::Warn(HVM_ONLY)),
    ("vendor_device", Treatment::Warn(HVM_ONLY)),
    ("xen_platform_pci", Treatment::Warn(HVM_ONLY)),
    ("xen_platform_pci_bar_uc", Treatment::Warn(HVM_ONLY)),
    ("hdtype", Treatment::Warn(HVM_ONLY)),
    ("boot", Treatment::Warn(HVM_ONLY)),
    ("serial", Treatment::Warn(HVM_ONLY)),
    ("vga", Treatment::Warn(HVM_ONLY)),
    ("stdvga", Treatment::Warn(HVM_ONLY)),
    ("videoram", Treatment::Warn(HVM_ONLY)),
    ("vnc", Treatment::Warn(HVM_ONLY)),
    ("vnc_", Treatment::Warn(HVM_ONLY)),
    ("vncdisplay", Treatment::Warn(HVM_ONLY)),
    ("vnclisten", Treatment::Warn(HVM_ONLY)),
    ("vncpasswd", Treatment::Warn(HVM_ONLY)),
    ("vncunused", Treatment::Warn(HVM_ONLY)),
    ("keymap", Treatment::Warn(HVM_ONLY)),
    ("sdl", Treatment::Warn(HVM_ONLY)),
    ("opengl", Treatment::Warn(HVM_ONLY)),
    ("display", Treatment::Warn(HVM_ONLY)),
    ("xauthority", Treatment::Warn(HVM_ONLY)),
    ("nographic", Treatment::Warn(HVM_ONLY)),
    ("spice", Treatment::Warn(HVM_ONLY)),
    ("spice*", Treatment::Warn(HVM_ONLY)),
    ("usbversion", Treatment::Warn(HVM_ONLY)),
];

/// How chaos treats a key it does not carry; `None` for handled and unknown keys.
pub fn treatment(key: &str) -> Option<Treatment> {
    OTHER_KEYS.iter().find_map(|(k, t)| {
        let hit = match k.strip_suffix('*') {
            Some(prefix) => key.starts_with(prefix),
            None if k.ends_with('_') => key.starts_with(k),
            None => key == *k,
        };
        hit.then_some(*t)
    })
}

/// An effective setting and where it was last assigned.
struct Entry {
    setting: Setting,
    at: Location,
}

struct Ctx<'a> {
    source: &'a str,
    /// Effective settings in order of (last) assignment; `None` where a key was reassigned.
    entries: Vec<Option<Entry>>,
    /// Key -> index in `entries`, so big files stay linear.
    index: HashMap<String, usize>,
    warnings: Vec<Warning>,
}

fn syntax_err(at: Location, e: syntax::SyntaxError) -> ConfigError {
    ConfigError::Syntax {
        at,
        message: e.message,
    }
}

pub(crate) fn parse(text: &str, source: &str, overrides: &[String]) -> Result<Loaded, ConfigError> {
    let mut ctx = Ctx {
        source,
        entries: Vec::new(),
        index: HashMap::new(),
        warnings: Vec::new(),
    };
    let settings =
        syntax::parse_settings(text).map_err(|e| syntax_err(Location::line(source, e.line), e))?;
    for s in settings {
        let at = Location::line(source, s.line);
        ctx.apply(s, at)?;
    }
    // xl appends the command-line settings to the file's text; they are parsed alike.
    for o in overrides {
        let at = Location::CommandLine { text: o.clone() };
        let settings = syntax::parse_settings(o).map_err(|e| syntax_err(at.clone(), e))?;
        if settings.is_empty() {
            return Err(ConfigError::Syntax {
                at,
                message: "expected KEY=VALUE".into(),
            });
        }
        for s in settings {
            ctx.apply(s, at.clone())?;
        }
    }
    let config = ctx.validate()?;
    Ok(Loaded {
        config,
        warnings: ctx.warnings,
    })
}

impl Ctx<'_> {
    fn apply(&mut self, s: Setting, at: Location) -> Result<(), ConfigError> {
        let prev = self.index.get(&s.key).and_then(|&i| self.entries[i].take());
        let value =
            match (s.op, prev) {
                (syntax::Op::Append, Some(p)) => syntax::append(&p.setting.value, s.value)
                    .map_err(|message| ConfigError::Invalid {
                        at: at.clone(),
                        key: s.key.clone(),
                        message,
                    })?,
                (_, _) => s.value,
            };
        self.index.insert(s.key.clone(), self.entries.len());
        self.entries.push(Some(Entry {
            setting: Setting { value, ..s },
            at,
        }));
        Ok(())
    }

    fn get(&self, key: &str) -> Option<&Entry> {
        self.index.get(key).and_then(|&i| self.entries[i].as_ref())
    }

    fn invalid(&self, e: &Entry, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            at: e.at.clone(),
            key: e.setting.key.clone(),
            message: message.into(),
        }
    }

    fn warn(&mut self, at: &Location, key: &str, message: impl Into<String>) {
        self.warnings.push(Warning {
            at: at.clone(),
            key: key.to_string(),
            message: message.into(),
        });
    }

    /// A string value; a number counts as its decimal text (xl keeps atoms as text).
    fn string(&self, key: &str) -> Result<Option<(String, &Entry)>, ConfigError> {
        let Some(e) = self.get(key) else {
            return Ok(None);
        };
        match &e.setting.value {
            Value::Str(s) => Ok(Some((s.clone(), e))),
            Value::Num(n) => Ok(Some((n.to_string(), e))),
            Value::List(_) => Err(self.invalid(e, "expected a single value, got a list")),
        }
    }

    /// A number; a quoted string holding a number counts too (xl reads both with strtol).
    fn number(&self, key: &str) -> Result<Option<(u64, &Entry)>, ConfigError> {
        let Some(e) = self.get(key) else {
            return Ok(None);
        };
        match &e.setting.value {
            Value::Num(n) => Ok(Some((*n, e))),
            Value::Str(s) => match parse_c_number(s) {
                Some(n) => Ok(Some((n, e))),
                None => Err(self.invalid(e, format!("expected a number, got {s:?}"))),
            },
            Value::List(_) => Err(self.invalid(e, "expected a number, got a list")),
        }
    }

    fn bounded(
        &self,
        key: &str,
        min: u64,
        max: u64,
        unit: &str,
    ) -> Result<Option<(u64, &Entry)>, ConfigError> {
        match self.number(key)? {
            Some((n, e)) if n < min || n > max => Err(self.invalid(
                e,
                format!("{n}{unit} is out of range ({min}{unit} to {max}{unit})"),
            )),
            r => Ok(r),
        }
    }

    fn action(&self, key: &str, default: Action) -> Result<Action, ConfigError> {
        match self.string(key)? {
            None => Ok(default),
            Some((s, e)) => Action::from_name(&s).ok_or_else(|| {
                let names: Vec<_> = Action::ALL.iter().map(|a| a.as_str()).collect();
                self.invalid(
                    e,
                    format!(
                        "unknown action {s:?} (expected one of: {})",
                        names.join(", ")
                    ),
                )
            }),
        }
    }

    fn kind(&mut self) -> Result<GuestKind, ConfigError> {
        let hvm = |e: &Entry| ConfigError::Unsupported {
            at: e.at.clone(),
            key: e.setting.key.clone(),
            message: "hvm guests are not supported by chaos (only pv and pvh)".into(),
        };
        let from_type = match self.string("type")? {
            None => None,
            Some((s, e)) => match s.as_str() {
                "pv" => Some(GuestKind::Pv),
                "pvh" => Some(GuestKind::Pvh),
                "hvm" => return Err(hvm(e)),
                _ => {
                    return Err(self.invalid(
                        e,
                        format!("unknown guest type {s:?} (expected \"pv\" or \"pvh\")"),
                    ))
                }
            },
        };
        let Some((b, e)) = self.string("builder")? else {
            return Ok(from_type.unwrap_or(GuestKind::Pv));
        };
        match b.as_str() {
            "generic" => {}
            "hvm" => return Err(hvm(e)),
            _ => {
                return Err(self.invalid(
                    e,
                    format!("unknown builder {b:?} (deprecated; use type = \"pv\" or \"pvh\")"),
                ))
            }
        }
        if from_type.is_some_and(|t| t != GuestKind::Pv) {
            return Err(self.invalid(
                e,
                "contradicts type (builder = \"generic\" means type = \"pv\")",
            ));
        }
        let at = e.at.clone();
        self.warn(
            &at,
            "builder",
            "deprecated since Xen 4.10; use type = \"pv\"",
        );
        Ok(GuestKind::Pv)
    }

    /// Refuses or warns about every key chaos does not carry, in order of appearance.
    fn check_other_keys(&mut self) -> Result<(), ConfigError> {
        let mut notes = Vec::new();
        for e in self.entries.iter().flatten() {
            let key = e.setting.key.as_str();
            if HANDLED_KEYS.contains(&key) {
                continue;
            }
            let refuse = |message: &str| ConfigError::Unsupported {
                at: e.at.clone(),
                key: key.to_string(),
                message: message.to_string(),
            };
            match treatment(key) {
                Some(Treatment::Refuse(m)) => return Err(refuse(m)),
                Some(Treatment::RefuseIfSet(m)) => {
                    if !is_off(&e.setting.value) {
                        return Err(refuse(m));
                    }
                }
                Some(Treatment::Warn(m)) => {
                    notes.push((e.at.clone(), key.to_string(), m.to_string()))
                }
                None => {
                    let hint = suggest(key)
                        .map(|k| format!(" (did you mean '{k}'?)"))
                        .unwrap_or_default();
                    notes.push((
                        e.at.clone(),
                        key.to_string(),
                        format!("unknown key '{key}' ignored{hint}"),
                    ));
                }
            }
        }
        for (at, key, m) in notes {
            self.warn(&at, &key, m);
        }
        Ok(())
    }

    fn validate(&mut self) -> Result<DomainConfig, ConfigError> {
        let source = self.source;
        let kind = self.kind()?;
        self.check_other_keys()?;

        let name = match self.string("name")? {
            Some((n, e)) => {
                check_name(&n).map_err(|m| self.invalid(e, m))?;
                n
            }
            None => {
                return Err(ConfigError::Missing {
                    at: Location::file(source),
                    key: "name".into(),
                    message: "xl requires a name".into(),
                })
            }
        };

        let kernel = match self.string("kernel")? {
            Some((k, e)) => {
                check_path(&k).map_err(|m| self.invalid(e, m))?;
                PathBuf::from(k)
            }
            None => {
                return Err(ConfigError::Missing {
                    at: Location::file(source),
                    key: "kernel".into(),
                    message: "chaos boots kernels directly: give kernel = \"/path/to/kernel\""
                        .into(),
                })
            }
        };
        let ramdisk = match self.string("ramdisk")? {
            Some((r, _)) if r.is_empty() => None,
            Some((r, e)) => {
                check_path(&r).map_err(|m| self.invalid(e, m))?;
                Some(PathBuf::from(r))
            }
            None => None,
        };
        let cmdline = self.cmdline()?;

        let memory = self
            .bounded("memory", 1, MAX_MEMORY_MIB, " MiB")?
            .map(|(n, _)| n);
        let maxmem = self.bounded("maxmem", 1, MAX_MEMORY_MIB, " MiB")?;
        // libxl: memory defaults to maxmem, both to 32 MiB; maxmem defaults to memory.
        let memory_mib = memory.or(maxmem.map(|m| m.0)).unwrap_or(DEFAULT_MEMORY_MIB);
        let maxmem_mib = match maxmem {
            Some((m, e)) if m < memory_mib => {
                return Err(
                    self.invalid(e, format!("{m} MiB is less than memory ({memory_mib} MiB)"))
                )
            }
            Some((m, _)) => m,
            None => memory_mib,
        };

        let max = u64::from(MAX_VCPUS);
        let vcpus = self
            .bounded("vcpus", 1, max, "")?
            .map_or(1, |(n, _)| n as u32);
        let max_vcpus = match self.bounded("maxvcpus", 1, max, "")? {
            Some((m, e)) if (m as u32) < vcpus => {
                return Err(self.invalid(e, format!("{m} is less than vcpus ({vcpus})")))
            }
            Some((m, _)) => m as u32,
            None => vcpus,
        };

        let on_poweroff = self.action("on_poweroff", Action::Destroy)?;
        let on_reboot = self.action("on_reboot", Action::Restart)?;
        let on_crash = self.action("on_crash", Action::Destroy)?;

        let vifs = self.vifs()?;
        let disks = self.disks()?;

        let control_plane = match self.string("chaos_control_plane")? {
            None => ControlPlane::Xenstore,
            Some((s, e)) => ControlPlane::from_name(&s).ok_or_else(|| {
                self.invalid(
                    e,
                    format!("unknown control plane {s:?} (expected \"xenstore\" or \"noxs\")"),
                )
            })?,
        };

        let tsc_mode = self.tsc_mode()?;

        let uuid = match self.string("uuid")? {
            None => None,
            Some((s, e)) => Some(parse_uuid(&s).ok_or_else(|| {
                self.invalid(
                    e,
                    format!("invalid UUID {s:?} (expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"),
                )
            })?),
        };

        Ok(DomainConfig {
            name,
            kind,
            kernel,
            ramdisk,
            cmdline,
            memory_mib,
            maxmem_mib,
            vcpus,
            max_vcpus,
            on_poweroff,
            on_reboot,
            on_crash,
            vifs,
            control_plane,
            tsc_mode,
            uuid,
            paused: false,
            disks,
        })
    }

    fn cmdline(&mut self) -> Result<String, ConfigError> {
        let cmdline = self.string("cmdline")?.map(|(s, e)| (s, e.at.clone()));
        let root = self.string("root")?.map(|(s, _)| s);
        let extra = self.string("extra")?.map(|(s, _)| s);
        Ok(match (cmdline, root, extra) {
            (Some((c, at)), r, x) => {
                if r.is_some() || x.is_some() {
                    self.warn(
                        &at,
                        "cmdline",
                        "root and extra ignored in favour of cmdline (as xl)",
                    );
                }
                c
            }
            (None, Some(r), Some(x)) => format!("root={r} {x}"),
            (None, Some(r), None) => format!("root={r}"),
            (None, None, Some(x)) => x,
            (None, None, None) => String::new(),
        })
    }

    fn vifs(&mut self) -> Result<Vec<super::VifConfig>, ConfigError> {
        let Some(e) = self.get("vif") else {
            return Ok(Vec::new());
        };
        let Value::List(items) = &e.setting.value else {
            return Err(self.invalid(
                e,
                format!(
                    "expected a list of vif specs, got {}",
                    e.setting.value.describe()
                ),
            ));
        };
        let at = e.at.clone();
        let mut vifs = Vec::new();
        let mut notes = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let Value::Str(spec) = item else {
                return Err(self.invalid(
                    e,
                    format!(
                        "vif {i}: expected a \"spec string\", got {}",
                        item.describe()
                    ),
                ));
            };
            let parsed = parse_vif_spec(spec, i)
                .map_err(|m| self.invalid(e, format!("vif {i} ({spec:?}): {m}")))?;
            notes.extend(parsed.warnings.into_iter().map(|w| format!("vif {i}: {w}")));
            vifs.push(parsed.vif);
        }
        for n in notes {
            self.warn(&at, "vif", n);
        }
        Ok(vifs)
    }

    /// xl `disk`: a list of disk spec strings, kept as written (see [`DomainConfig::disks`]).
    fn disks(&mut self) -> Result<Vec<String>, ConfigError> {
        let Some(e) = self.get("disk") else {
            return Ok(Vec::new());
        };
        let Value::List(items) = &e.setting.value else {
            return Err(self.invalid(
                e,
                format!(
                    "expected a list of disk specs, got {}",
                    e.setting.value.describe()
                ),
            ));
        };
        let mut disks = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let Value::Str(spec) = item else {
                return Err(self.invalid(
                    e,
                    format!(
                        "disk {i}: expected a \"spec string\", got {}",
                        item.describe()
                    ),
                ));
            };
            disks.push(spec.clone());
        }
        Ok(disks)
    }

    fn tsc_mode(&mut self) -> Result<TscMode, ConfigError> {
        let Some(e) = self.get("tsc_mode") else {
            return Ok(TscMode::Default);
        };
        let numeric = match &e.setting.value {
            Value::Num(n) => Some(*n),
            Value::Str(s) => parse_c_number(s),
            Value::List(_) => None,
        };
        if let Some(n) = numeric {
            let mode = usize::try_from(n)
                .ok()
                .and_then(|i| TscMode::ALL.get(i).copied());
            let Some(mode) = mode else {
                return Err(self.invalid(
                    e,
                    format!("invalid value {n} (expected 0 to 3, or better a name)"),
                ));
            };
            let at = e.at.clone();
            self.warn(
                &at,
                "tsc_mode",
                format!("integer values are deprecated (as in xl); use tsc_mode = \"{mode}\""),
            );
            return Ok(mode);
        }
        let (s, e) = self
            .string("tsc_mode")?
            .ok_or_else(|| self.invalid(e, "missing value"))?;
        TscMode::from_name(&s).ok_or_else(|| {
            let names: Vec<_> = TscMode::ALL.iter().map(|m| m.as_str()).collect();
            self.invalid(
                e,
                format!("unknown mode {s:?} (expected one of: {})", names.join(", ")),
            )
        })
    }
}

/// True for values that turn a feature off or list nothing: 0, "0", "", [].
fn is_off(v: &Value) -> bool {
    match v {
        Value::Num(n) => *n == 0,
        Value::Str(s) => s.is_empty() || parse_c_number(s) == Some(0),
        Value::List(items) => items.is_empty(),
    }
}

/// Domain names: what xl and Xenstore accept, minus what breaks paths and terminals.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > 255 {
        return Err(format!("{} bytes is too long (max 255)", name.len()));
    }
    if name.contains('/') {
        return Err(format!("{name:?} must not contain '/'"));
    }
    if name.chars().any(char::is_control) {
        return Err(format!("{name:?} must not contain control characters"));
    }
    if name == "Domain-0" {
        return Err("\"Domain-0\" is the control domain's name".into());
    }
    Ok(())
}

fn check_path(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("empty path".into());
    }
    if p.contains('\0') {
        return Err("path contains a NUL character".into());
    }
    Ok(())
}

/// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (hex, either case).
pub fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let groups: Vec<&str> = s.split('-').collect();
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    if lens != [8, 4, 4, 4, 12] {
        return None;
    }
    let hex: String = groups.concat();
    if !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The handled key closest to a misspelt one, if close enough to be a typo.
fn suggest(key: &str) -> Option<&'static str> {
    HANDLED_KEYS
        .iter()
        .filter(|k| k.len().abs_diff(key.len()) <= 2)
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, k)| *d <= 2 && *d < k.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn treatments() {
        assert_eq!(
            treatment("disk"),
            None,
            "disk is handled (kept for the toolstack)"
        );
        assert!(matches!(treatment("pci"), Some(Treatment::RefuseIfSet(_))));
        assert!(matches!(
            treatment("device_model_version"),
            Some(Treatment::Refuse(_))
        ));
        assert!(matches!(treatment("spicehost"), Some(Treatment::Warn(_))));
        assert!(matches!(treatment("cpu_weight"), Some(Treatment::Warn(_))));
        assert_eq!(treatment("memroy"), None);
        for k in HANDLED_KEYS {
            assert_eq!(treatment(k), None, "{k} is both handled and treated");
        }
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest("memroy"), Some("memory"));
        assert_eq!(suggest("vcpu"), Some("vcpus"));
        assert_eq!(suggest("completely_different"), None);
    }

    #[test]
    fn uuids() {
        let u = parse_uuid("00112233-4455-6677-8899-aAbBcCdDeEfF").unwrap();
        assert_eq!(u[0], 0x00);
        assert_eq!(u[15], 0xff);
        assert!(parse_uuid("00112233445566778899aabbccddeeff").is_none());
        assert!(parse_uuid("0011223-34455-6677-8899-aabbccddeeff").is_none());
        assert!(parse_uuid("g0112233-4455-6677-8899-aabbccddeeff").is_none());
    }

    #[test]
    fn names() {
        assert!(check_name("web-1.example").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a/b").is_err());
        assert!(check_name("a\u{1b}b").is_err());
        assert!(check_name("Domain-0").is_err());
    }
}
