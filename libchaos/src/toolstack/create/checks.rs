//! What is refused before a shell is spent on it.

use crate::config::{DomainConfig, PlaneKind, TscMode};
use crate::hypervisor::GuestKind;
use crate::image::KernelImage;
use crate::toolstack::{Result, Toolstack, ToolstackError};

impl Toolstack {
    /// Refuses, before a shell is spent on it, a config that cannot be created: unsupported
    /// features, a kernel or ramdisk that cannot be read or parsed. The kernel lands in the
    /// image cache, so `execute` does not read it again.
    pub fn check_creatable(&self, cfg: &DomainConfig) -> Result<()> {
        check_supported(cfg)?;
        self.plane(cfg.control_plane)?.ready()?;
        let image = self.load_kernel(cfg)?;
        if cfg.control_plane == PlaneKind::Noxs {
            check_noxs_kernel(&image)?;
        }
        if cfg.kind == GuestKind::Pvh && image.phys32_entry().is_none() {
            return Err(ToolstackError::Unsupported(format!(
                "{}: type = \"pvh\" needs a kernel with a PVH entry (the XEN_ELFNOTE_PHYS32_ENTRY note); this one boots as PV only",
                image.name
            )));
        }
        if let Some(path) = &cfg.ramdisk {
            // Its type and size now (reading it waits for execute, where it is cached).
            let size = crate::files::regular_size(path).map_err(|e| {
                ToolstackError::Unsupported(format!("ramdisk {}: {e}", path.display()))
            })?;
            if size > guest_bytes(cfg).min(crate::image::MAX_IMAGE) {
                // The reader's own words for the limit.
                self.images
                    .load_ramdisk_within(path, guest_bytes(cfg), GUEST_LIMIT)?;
            }
        }
        Ok(())
    }

    /// The guest's kernel: a regular file no larger than the guest's memory.
    pub(super) fn load_kernel(&self, cfg: &DomainConfig) -> Result<std::sync::Arc<KernelImage>> {
        Ok(self
            .images
            .load_within(&cfg.kernel, guest_bytes(cfg), GUEST_LIMIT)?)
    }
}

/// What limits a guest's kernel and ramdisk files, in messages.
pub(super) const GUEST_LIMIT: &str = "the guest's memory";

/// A guest's memory in bytes: no kernel or ramdisk file larger than it can be loaded into it.
pub(super) fn guest_bytes(cfg: &DomainConfig) -> u64 {
    cfg.memory_mib.saturating_mul(1024 * 1024)
}

/// A NoXS guest must say it implements the frontend (noxs/ABI.md section 1): a kernel that
/// does not would wait for a Xenstore that never answers.
pub(super) fn check_noxs_kernel(image: &KernelImage) -> Result<()> {
    match image.notes.chaos_noxs {
        Some(v) if v >= noxs::ABI_VERSION => Ok(()),
        Some(v) => Err(ToolstackError::Unsupported(format!(
            "{}: implements NoXS ABI version {v}; chaos needs {} (chaos_control_plane = \"noxs\")",
            image.name,
            noxs::ABI_VERSION
        ))),
        None => Err(ToolstackError::Unsupported(format!(
            "{}: the kernel has no chaos NoXS note, so it does not implement NoXS; use chaos_control_plane = \"xenstore\"",
            image.name
        ))),
    }
}

/// What chaos cannot build yet, refused before anything is made.
pub(super) fn check_supported(cfg: &DomainConfig) -> Result<()> {
    if cfg.control_plane == PlaneKind::Noxs && !cfg.disks.is_empty() {
        return Err(ToolstackError::Unsupported(
            "disk: NoXS guests have no block devices yet (use chaos_control_plane = \"xenstore\")"
                .into(),
        ));
    }
    if cfg.control_plane == PlaneKind::Noxs && cfg.vifs.len() > noxs::VIF_MAX {
        return Err(ToolstackError::Unsupported(format!(
            "{} vifs: a NoXS guest has at most {} (their control pages are granted under Xen's reserved grant references)",
            cfg.vifs.len(),
            noxs::VIF_MAX
        )));
    }
    for (i, disk) in cfg.disks.iter().enumerate() {
        if let Some(backend) = disk.backend.as_deref() {
            if !matches!(backend, "0" | "Domain-0") {
                return Err(ToolstackError::Unsupported(format!(
                    "disk {i}: backend={backend}: driver domains are not supported yet (the backend is dom0)"
                )));
            }
        }
    }
    for (devid, vif) in cfg.vifs.iter().enumerate() {
        if let Some(backend) = vif.backend.as_deref() {
            if !matches!(backend, "0" | "Domain-0") {
                return Err(ToolstackError::Unsupported(format!(
                    "vif {devid}: backend={backend}: driver domains are not supported yet (the backend is dom0)"
                )));
            }
        }
        if let Some(name) = &vif.vifname {
            return Err(ToolstackError::Unsupported(format!(
                "vif {devid}: vifname={name}: renaming the backend interface is not supported yet (it is vif<domid>.{devid})"
            )));
        }
    }
    if cfg.tsc_mode == TscMode::NativeParavirt {
        return Err(ToolstackError::Unsupported(
            "tsc_mode = \"native_paravirt\": removed from Xen (4.13), as xl says".into(),
        ));
    }
    Ok(())
}
