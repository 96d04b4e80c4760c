//! The PVH builder: the kernel's segments at their physical addresses, an `hvm_start_info`
//! (xen/include/public/arch-x86/hvm/start_info.h) after them, vcpu 0 entering the
//! PHYS32_ENTRY note in flat 32-bit mode with `ebx` pointing at the start info.
//!
//! Unlike libxc, which puts the xenstore and console rings in special pages near 4 GiB, this
//! builder uses the guest's last pages (so prepare's populate of pfns 0..nr_pages is enough)
//! and marks them reserved in the memory map: the ACPI tables (acpi.rs), the NoXS control pages
//! if any, then the store page (Xenstore ring or NoXS device page) and the console ring; the
//! guest finds the rings through HVM params as usual, and the tables through `rsdp_paddr`.

use crate::hypervisor::{GrantEntry, Hypervisor, VcpuContext, PAGE_SIZE};
use crate::image::{ImageProblem, KernelImage};

use super::acpi;
use super::layout::PfnRange;
use super::{
    check_devices, device_grants, hv_step, write_device_page, BuildError, BuildParams, StorePage,
    GNTTAB_RESERVED_CONSOLE, GNTTAB_RESERVED_XENSTORE,
};

const PAGE: u64 = PAGE_SIZE as u64;
const XEN_HVM_START_MAGIC_VALUE: u32 = 0x336e_c578;
/// Version 1 adds the memory map.
const START_INFO_VERSION: u32 = 1;
const START_INFO_SIZE: usize = 56;
const MODLIST_ENTRY_SIZE: usize = 32;
const MEMMAP_ENTRY_SIZE: usize = 24;
const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;

pub const HVM_PARAM_STORE_PFN: u32 = 1;
pub const HVM_PARAM_STORE_EVTCHN: u32 = 2;
pub const HVM_PARAM_CONSOLE_PFN: u32 = 17;
pub const HVM_PARAM_CONSOLE_EVTCHN: u32 = 18;

/// Where a PVH guest's boot data goes (guest-physical frames).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvhLayout {
    pub nr_pages: u64,
    pub kernel: PfnRange,
    pub ramdisk: Option<PfnRange>,
    /// hvm_start_info, then the module list, the memory map and the command line.
    pub start_info: PfnRange,
    /// The ACPI tables, below the control pages.
    pub acpi: PfnRange,
    /// NoXS control pages (none on the Xenstore plane), just below the store page.
    pub ctrl: PfnRange,
    /// The Xenstore ring, or the NoXS device page.
    pub store_pfn: u64,
    pub console_pfn: u64,
}

/// What the toolstack needs to know about a built PVH guest. For a translated guest the
/// "mfn" the xenstore entries carry is the guest frame number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltPvhGuest {
    pub start_info_paddr: u64,
    pub entry: u32,
    pub console_pfn: u64,
    pub store_pfn: u64,
    pub layout: PvhLayout,
}

/// Builds a PVH guest. `params.p2m` only gives the page count (a PVH guest's frames are named
/// by gfn); the domain must have been created as PVH.
pub fn build_pvh(
    hv: &dyn Hypervisor,
    image: &KernelImage,
    params: &BuildParams,
) -> Result<BuiltPvhGuest, BuildError> {
    let image_err = |problem| BuildError::Image {
        name: image.name.clone(),
        problem,
    };
    let entry = image
        .phys32_entry()
        .ok_or_else(|| image_err(ImageProblem::NotPvh("no PHYS32_ENTRY note".into())))?;
    if u64::from(entry) < image.pstart || u64::from(entry) >= image.pend {
        return Err(image_err(ImageProblem::Layout(format!(
            "PVH entry {entry:#x} outside the kernel {:#x}..{:#x}",
            image.pstart, image.pend
        ))));
    }
    if params.vcpus == 0 || params.vcpus > acpi::MAX_VCPUS {
        return Err(BuildError::Params(format!(
            "a PVH guest has 1 to {} vcpus, not {}",
            acpi::MAX_VCPUS,
            params.vcpus
        )));
    }
    if let StorePage::Noxs { devices, .. } = params.store {
        check_devices(devices)?;
    }
    let nr_pages = params.p2m.len() as u64;
    let cmdline = params.cmdline.as_bytes();
    if cmdline.contains(&0) {
        return Err(BuildError::Params(
            "the command line contains a NUL byte".into(),
        ));
    }

    // Layout.
    let too_small = |needed_pages: u64| BuildError::GuestTooSmall {
        name: image.name.clone(),
        needed_bytes: needed_pages * PAGE,
        have_bytes: nr_pages * PAGE,
    };
    let kernel = PfnRange {
        start: image.pstart / PAGE,
        count: image.pend.div_ceil(PAGE) - image.pstart / PAGE,
    };
    let mut next = kernel.end();
    let ramdisk = params.ramdisk.map(|r| {
        let range = PfnRange {
            start: next,
            count: (r.len() as u64).div_ceil(PAGE),
        };
        next = range.end();
        range
    });
    let nr_modules = usize::from(ramdisk.is_some());
    let modlist_off = START_INFO_SIZE;
    let memmap_off = modlist_off + nr_modules * MODLIST_ENTRY_SIZE;
    let cmdline_off = memmap_off + 2 * MEMMAP_ENTRY_SIZE;
    let info_len = cmdline_off + cmdline.len() + 1;
    let start_info = PfnRange {
        start: next,
        count: (info_len as u64).div_ceil(PAGE),
    };
    // The special pages at the top, and everything below 4 GiB (ebx is 32 bits, paging is off).
    let ctrl_pages = params.store.ctrl_pages();
    let special = 1 + ctrl_pages + 2;
    if start_info.end() + special > nr_pages {
        return Err(too_small(start_info.end() + special));
    }
    if start_info.end() * PAGE > 1 << 32 {
        return Err(BuildError::Layout(
            "the PVH kernel and its boot data end above 4 GiB".into(),
        ));
    }
    let layout = PvhLayout {
        nr_pages,
        kernel,
        ramdisk,
        start_info,
        acpi: PfnRange {
            start: nr_pages - special,
            count: 1,
        },
        ctrl: PfnRange {
            start: nr_pages - special + 1,
            count: ctrl_pages,
        },
        store_pfn: nr_pages - 2,
        console_pfn: nr_pages - 1,
    };
    let dom = params.domid;
    let si_paddr = start_info.start * PAGE;

    // Kernel, ramdisk, start info: one mapping of the boot area.
    {
        let pfns: Vec<u64> = (kernel.start..start_info.end()).collect();
        let mut m = hv
            .map_foreign(dom, &pfns)
            .map_err(hv_step("mapping the guest's boot area"))?;
        let want = pfns.len() * PAGE_SIZE;
        let bytes = m.bytes_mut();
        if bytes.len() < want {
            return Err(BuildError::Layout(format!(
                "mapping the boot area gave {} bytes, {want} expected",
                bytes.len()
            )));
        }
        let area = &mut bytes[..want];
        area.fill(0);
        let base = kernel.start * PAGE;
        for seg in &image.segments {
            let off = (seg.paddr - base) as usize;
            let data = image.segment_data(seg);
            area[off..off + data.len()].copy_from_slice(data);
        }
        if let (Some(r), Some(data)) = (ramdisk, params.ramdisk) {
            let off = ((r.start - kernel.start) * PAGE) as usize;
            area[off..off + data.len()].copy_from_slice(data);
        }
        let off = ((start_info.start - kernel.start) * PAGE) as usize;
        let si = &mut area[off..off + info_len];
        let put32 = |b: &mut [u8], o: usize, v: u32| b[o..o + 4].copy_from_slice(&v.to_le_bytes());
        let put64 = |b: &mut [u8], o: usize, v: u64| b[o..o + 8].copy_from_slice(&v.to_le_bytes());
        put32(si, 0, XEN_HVM_START_MAGIC_VALUE);
        put32(si, 4, START_INFO_VERSION);
        if let StorePage::Noxs {
            hypervisor_page: false,
            ..
        } = params.store
        {
            // hvm_start_info.flags: the device page is in the store slot (ABI section 2).
            put32(si, 8, noxs::SIF_NOXS);
        }
        put32(si, 12, nr_modules as u32);
        if let (Some(r), Some(data)) = (ramdisk, params.ramdisk) {
            put64(si, 16, si_paddr + modlist_off as u64);
            put64(si, modlist_off, r.start * PAGE);
            put64(si, modlist_off + 8, data.len() as u64);
        }
        put64(si, 24, si_paddr + cmdline_off as u64);
        put64(si, 32, layout.acpi.start * PAGE);
        put64(si, 40, si_paddr + memmap_off as u64);
        put32(si, 48, 2);
        let ram_end = layout.acpi.start * PAGE;
        for (i, (addr, size, kind)) in [
            (0, ram_end, E820_RAM),
            (ram_end, special * PAGE, E820_RESERVED),
        ]
        .into_iter()
        .enumerate()
        {
            let o = memmap_off + i * MEMMAP_ENTRY_SIZE;
            put64(si, o, addr);
            put64(si, o + 8, size);
            put32(si, o + 16, kind);
        }
        si[cmdline_off..cmdline_off + cmdline.len()].copy_from_slice(cmdline);
    }
    // The special pages: the ACPI tables written, rings zeroed, the NoXS pages written.
    {
        let pfns: Vec<u64> = (layout.acpi.start..nr_pages).collect();
        let mut m = hv
            .map_foreign(dom, &pfns)
            .map_err(hv_step("mapping the ring pages"))?;
        let bytes = m.bytes_mut();
        bytes.fill(0);
        let tables = acpi::tables(layout.acpi.start * PAGE, params.vcpus);
        if let Some(page) = bytes.get_mut(..tables.len()) {
            page.copy_from_slice(&tables);
        }
        // The control pages, the store and the console follow the ACPI page.
        let bytes = bytes.get_mut(PAGE_SIZE..).unwrap_or_default();
        if let StorePage::Noxs {
            devices,
            hypervisor_page,
        } = params.store
        {
            let ctrl_pfns: Vec<u64> = (layout.ctrl.start..layout.ctrl.end()).collect();
            for (i, d) in devices.iter().enumerate() {
                let at = i * PAGE_SIZE;
                if let Some(page) = bytes.get_mut(at..at + d.ctrl.len()) {
                    page.copy_from_slice(&d.ctrl);
                }
            }
            let at = (layout.store_pfn - layout.ctrl.start) as usize * PAGE_SIZE;
            if let (false, Some(page)) = (hypervisor_page, bytes.get_mut(at..at + PAGE_SIZE)) {
                write_device_page(page, devices, &ctrl_pfns);
            }
        }
    }

    let mut grants = vec![GrantEntry {
        gref: GNTTAB_RESERVED_CONSOLE,
        backend: params.console_backend,
        frame: layout.console_pfn,
    }];
    let store_evtchn = match params.store {
        StorePage::Xenstore { evtchn, backend } => {
            grants.push(GrantEntry {
                gref: GNTTAB_RESERVED_XENSTORE,
                backend,
                frame: layout.store_pfn,
            });
            evtchn
        }
        StorePage::Noxs { devices, .. } => {
            let frames: Vec<u64> = (layout.ctrl.start..layout.ctrl.end()).collect();
            grants.extend(device_grants(devices, &frames));
            0
        }
    };
    hv.seed_grant_table(dom, &grants)
        .map_err(hv_step("seeding the grant table"))?;
    let store_pfn = match params.store {
        StorePage::Noxs {
            hypervisor_page: true,
            ..
        } => 0,
        _ => layout.store_pfn,
    };
    for (param, value) in [
        (HVM_PARAM_STORE_PFN, store_pfn),
        (HVM_PARAM_STORE_EVTCHN, u64::from(store_evtchn)),
        (HVM_PARAM_CONSOLE_PFN, layout.console_pfn),
        (HVM_PARAM_CONSOLE_EVTCHN, u64::from(params.console_evtchn)),
    ] {
        hv.set_hvm_param(dom, param, value)
            .map_err(hv_step("setting the xenstore and console HVM params"))?;
    }
    hv.set_vcpu_context(
        dom,
        0,
        &VcpuContext::Pvh {
            rip: entry,
            rbx: si_paddr as u32,
        },
    )
    .map_err(hv_step("setting vcpu 0's context"))?;

    Ok(BuiltPvhGuest {
        start_info_paddr: si_paddr,
        entry,
        console_pfn: layout.console_pfn,
        store_pfn: layout.store_pfn,
        layout,
    })
}
