//! The keys of xl.cfg(5) and how chaos treats each: handled (validated into a
//! [`DomainConfig`](super::DomainConfig)), refused (it would change the guest in a way chaos
//! cannot honour yet), or ignored with a warning. A new xl key is one line here.

/// Keys validated into [`DomainConfig`](super::DomainConfig).
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

/// The handled key closest to a misspelt one, if close enough to be a typo.
pub(crate) fn suggest(key: &str) -> Option<&'static str> {
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
}
