//! The x86_64 PV builder: writes the kernel, ramdisk, p2m list, start_info, rings and bootstrap
//! page tables into the guest through ONE foreign mapping of the boot area, then asks Xen to
//! fill the hypercall page, pin the L4, seed the grant table and set vcpu 0's registers.
//! Facts from libxc's xg_dom_x86.c / xg_dom_boot.c and xen/include/public/xen.h.

use crate::hypervisor::{DomId, GrantEntry, Hypervisor, PageTableLevel, VcpuContext, PAGE_SIZE};
use crate::image::KernelImage;

use super::layout::PvLayout;
use super::{
    check_devices, device_grants, hv_step, write_device_page, BuildError, BuildParams, BuiltGuest,
    StorePage, GNTTAB_RESERVED_CONSOLE, GNTTAB_RESERVED_XENSTORE, MAX_GUEST_CMDLINE,
};

const PAGE: u64 = PAGE_SIZE as u64;

// Page-table entry bits.
const PRESENT: u64 = 1 << 0;
const RW: u64 = 1 << 1;
const USER: u64 = 1 << 2;
const ACCESSED: u64 = 1 << 5;
const DIRTY: u64 = 1 << 6;
/// L2-L4 entries, as libxc writes them.
const TABLE_PROT: u64 = PRESENT | RW | ACCESSED | DIRTY | USER;
/// L1 entries; page-table pages lose RW (Xen refuses writable mappings of page tables).
const PAGE_PROT: u64 = PRESENT | RW | ACCESSED;

// start_info_t (x86_64) field offsets.
const SI_MAGIC: usize = 0;
const SI_NR_PAGES: usize = 32;
const SI_SHARED_INFO: usize = 40;
const SI_FLAGS: usize = 48;
const SI_STORE_MFN: usize = 56;
const SI_STORE_EVTCHN: usize = 64;
const SI_CONSOLE_MFN: usize = 72;
const SI_CONSOLE_EVTCHN: usize = 80;
const SI_PT_BASE: usize = 88;
const SI_NR_PT_FRAMES: usize = 96;
const SI_MFN_LIST: usize = 104;
const SI_MOD_START: usize = 112;
const SI_MOD_LEN: usize = 120;
const SI_CMD_LINE: usize = 128;
/// What libxc writes into `magic` for 64-bit PV guests.
const START_INFO_MAGIC: &[u8] = b"xen-3.0-x86_64";
/// SIF_VIRT_P2M_4TOOLS: libxc sets it on every domU (tools use the virtually mapped p2m).
const SIF_VIRT_P2M_4TOOLS: u32 = 1 << 4;

/// Builds a 64-bit PV guest in the shell `params` describes. On error the domain is left as
/// is (partly written): the caller destroys it.
pub fn build_pv(
    hv: &dyn Hypervisor,
    image: &KernelImage,
    params: &BuildParams,
) -> Result<BuiltGuest, BuildError> {
    check_params(params)?;
    let dom = params.domid;
    let p2m = params.p2m;
    let (pv, layout) = layout_for(image, p2m, params.ramdisk, params.store.ctrl_pages())?;
    let shared_info_frame = shared_info_frame(hv, dom)?;
    {
        // The whole boot area in ONE foreign mapping.
        let (first, end) = (layout.first_written_pfn(), layout.end_written_pfn());
        let mut mapping = hv
            .map_foreign(dom, &p2m[first as usize..end as usize])
            .map_err(hv_step("mapping the guest's boot area"))?;
        let mut area = BootArea::contiguous(mapping.bytes_mut(), first, end)?;
        write_image(&mut area, image, &layout, params.ramdisk, p2m)?;
        write_guest(&mut area, &layout, params, shared_info_frame << 12);
        // Dropping the mapping here matters: Xen only validates (pins) page tables that no
        // one maps writable, and libxc unmaps them before pinning too.
    }
    let ramdisk_len = params.ramdisk.map(<[u8]>::len);
    let image_part = boot_image(hv, dom, pv, layout, p2m, shared_info_frame, ramdisk_len)?;
    finish_hypercalls(hv, &image_part, params)
}

/// A PV shell with the image already in it (a warm shell): kernel, ramdisk, p2m list and page
/// tables written, the hypercall page filled and the L4 pinned. [`finish_pv`] adds what is
/// per guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvPrebuilt {
    pub domid: DomId,
    layout: PvLayout,
    shared_info_frame: u64,
    l4_mfn: u64,
    virt_entry: u64,
    ramdisk_len: Option<usize>,
    /// The guest half too, if [`finish_ahead`] wrote it: for a guest with these params
    /// [`finish_pv`] has nothing left to do.
    finished: Option<(FinishedFor, BuiltGuest)>,
}

impl PvPrebuilt {
    /// Control pages the layout has room for (the NoXS devices a guest of it may have).
    pub fn ctrl_pages(&self) -> u64 {
        self.layout.ctrl.count
    }

    /// The guest half, if [`finish_ahead`] wrote it.
    pub fn finished(&self) -> Option<&BuiltGuest> {
        self.finished.as_ref().map(|(_, built)| built)
    }

    /// Whether the guest half is already written for a guest with `params`.
    pub fn finished_for(&self, params: &BuildParams) -> bool {
        self.finished
            .as_ref()
            .is_some_and(|(done, _)| params.domid == self.domid && *done == FinishedFor::of(params))
    }
}

/// Everything the guest half is written from, but the shell's own frames (the same shell):
/// nothing in it names the guest (its name and UUID are not in its memory), so a shell finished
/// ahead for a flavor's config serves every guest of that config as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FinishedFor {
    cmdline: String,
    ramdisk_len: Option<usize>,
    vcpus: u32,
    console_evtchn: u32,
    console_backend: DomId,
    store: FinishedStore,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum FinishedStore {
    Xenstore {
        evtchn: u32,
        backend: DomId,
    },
    Noxs {
        devices: Vec<super::NoxsDevice>,
        hypervisor_page: bool,
    },
}

impl FinishedFor {
    fn of(p: &BuildParams) -> FinishedFor {
        FinishedFor {
            cmdline: p.cmdline.to_string(),
            ramdisk_len: p.ramdisk.map(<[u8]>::len),
            vcpus: p.vcpus,
            console_evtchn: p.console_evtchn,
            console_backend: p.console_backend,
            store: match p.store {
                StorePage::Xenstore { evtchn, backend } => {
                    FinishedStore::Xenstore { evtchn, backend }
                }
                StorePage::Noxs {
                    devices,
                    hypervisor_page,
                } => FinishedStore::Noxs {
                    devices: devices.to_vec(),
                    hypervisor_page,
                },
            },
        }
    }
}

/// The image half of [`build_pv`], ahead of any guest: what is the same for every guest of
/// `image` (and `ramdisk`) with `ctrl_pages` NoXS control pages.
pub fn prebuild_pv(
    hv: &dyn Hypervisor,
    image: &KernelImage,
    domid: DomId,
    p2m: &[u64],
    ramdisk: Option<&[u8]>,
    ctrl_pages: u64,
) -> Result<PvPrebuilt, BuildError> {
    let (pv, layout) = layout_for(image, p2m, ramdisk, ctrl_pages)?;
    let shared_info_frame = shared_info_frame(hv, domid)?;
    {
        let (first, end) = (layout.first_written_pfn(), layout.end_written_pfn());
        let mut mapping = hv
            .map_foreign(domid, &p2m[first as usize..end as usize])
            .map_err(hv_step("mapping the guest's boot area"))?;
        let mut area = BootArea::contiguous(mapping.bytes_mut(), first, end)?;
        write_image(&mut area, image, &layout, ramdisk, p2m)?;
        // The per-guest pages are written by finish_pv; zero them now so that nothing of the
        // previous owner of these frames is left if one of them is not.
        for pfn in guest_pfns(&layout) {
            area.fill(pfn, 1, &[]);
        }
    }
    let ramdisk_len = ramdisk.map(<[u8]>::len);
    boot_image(hv, domid, pv, layout, p2m, shared_info_frame, ramdisk_len)
}

/// Writes the guest half into a shell [`prebuild_pv`] made, ahead of any guest, for a guest
/// with `params` (chaosd: its flavor's config): a guest with the same params then costs
/// [`finish_pv`] nothing. One with other params (another command line) has it written again.
pub fn finish_ahead(
    hv: &dyn Hypervisor,
    pre: &mut PvPrebuilt,
    params: &BuildParams,
) -> Result<(), BuildError> {
    let built = finish_pv(hv, pre, params)?;
    pre.finished = Some((FinishedFor::of(params), built));
    Ok(())
}

/// The guest half of [`build_pv`] on a shell [`prebuild_pv`] made: start_info (command line,
/// channels), the console and control plane's pages, the grant table and vcpu 0; nothing if
/// [`finish_ahead`] wrote it for these params already.
pub fn finish_pv(
    hv: &dyn Hypervisor,
    pre: &PvPrebuilt,
    params: &BuildParams,
) -> Result<BuiltGuest, BuildError> {
    check_params(params)?;
    if let Some(built) = pre.finished().filter(|_| pre.finished_for(params)) {
        return Ok(built.clone());
    }
    let mismatch = |what: &str| Err(BuildError::Params(format!("warm shell: {what}")));
    if params.domid != pre.domid {
        return mismatch("built for another domain");
    }
    if params.ramdisk.map(<[u8]>::len) != pre.ramdisk_len {
        return mismatch("built with another ramdisk");
    }
    if params.store.ctrl_pages() != pre.layout.ctrl.count {
        return mismatch("built for another number of NoXS devices");
    }
    {
        // Only the per-guest pages: the page tables are pinned and cannot be mapped writable.
        let pfns: Vec<u64> = guest_pfns(&pre.layout).collect();
        let frames: Vec<u64> = pfns.iter().map(|&pfn| params.p2m[pfn as usize]).collect();
        let mut mapping = hv
            .map_foreign(pre.domid, &frames)
            .map_err(hv_step("mapping the guest's start pages"))?;
        let mut area = BootArea::listed(mapping.bytes_mut(), pfns)?;
        write_guest(&mut area, &pre.layout, params, pre.shared_info_frame << 12);
    }
    finish_hypercalls(hv, pre, params)
}

/// The image's layout in a guest of `p2m.len()` pages.
fn layout_for<'i>(
    image: &'i KernelImage,
    p2m: &[u64],
    ramdisk: Option<&[u8]>,
    ctrl_pages: u64,
) -> Result<(&'i crate::image::PvAddrs, PvLayout), BuildError> {
    let pv = image.pv().map_err(|problem| BuildError::Image {
        name: image.name.clone(),
        problem,
    })?;
    let layout = PvLayout::compute(
        &image.name,
        pv,
        p2m.len() as u64,
        ramdisk.map(<[u8]>::len),
        ctrl_pages,
    )?;
    Ok((pv, layout))
}

fn shared_info_frame(hv: &dyn Hypervisor, dom: DomId) -> Result<u64, BuildError> {
    Ok(hv
        .domain_info(dom)
        .map_err(hv_step("reading the shared info frame"))?
        .shared_info_frame)
}

/// The pages a guest's own data goes in: start_info, the console and store pages, the control
/// pages and the stack.
fn guest_pfns(layout: &PvLayout) -> impl Iterator<Item = u64> {
    [layout.start_info_pfn, layout.store_pfn, layout.console_pfn]
        .into_iter()
        .chain(layout.ctrl.start..layout.ctrl.end())
        .chain([layout.stack_pfn])
}

/// What is the same for every guest of an image: its segments, the ramdisk, the p2m list and
/// the page tables.
fn write_image(
    area: &mut BootArea,
    image: &KernelImage,
    layout: &PvLayout,
    ramdisk: Option<&[u8]>,
    p2m: &[u64],
) -> Result<(), BuildError> {
    write_kernel(area, image, layout)?;
    if let (Some(r), Some(data)) = (layout.ramdisk, ramdisk) {
        area.fill(r.start, r.count, data);
    }
    write_p2m(area, layout, p2m);
    write_page_tables(area, layout, p2m);
    Ok(())
}

/// What is the guest's own: the console and store pages (zeroed), the NoXS device and control
/// pages, the stack, start_info.
fn write_guest(area: &mut BootArea, layout: &PvLayout, params: &BuildParams, shared_info: u64) {
    area.fill(layout.console_pfn, 1, &[]);
    area.fill(layout.store_pfn, 1, &[]);
    if let StorePage::Noxs {
        devices,
        hypervisor_page,
    } = params.store
    {
        let pfns: Vec<u64> = (layout.ctrl.start..layout.ctrl.end()).collect();
        if !hypervisor_page {
            write_device_page(area.pages(layout.store_pfn, 1), devices, &pfns);
        }
        for (d, pfn) in devices.iter().zip(&pfns) {
            area.fill(*pfn, 1, &d.ctrl);
        }
    }
    area.fill(layout.stack_pfn, 1, &[]);
    write_start_info(area, layout, params, shared_info);
}

/// The image's hypercalls: events masked, the hypercall page filled, the L4 pinned.
fn boot_image(
    hv: &dyn Hypervisor,
    dom: DomId,
    pv: &crate::image::PvAddrs,
    layout: PvLayout,
    p2m: &[u64],
    shared_info_frame: u64,
    ramdisk_len: Option<usize>,
) -> Result<PvPrebuilt, BuildError> {
    mask_events(hv, dom, shared_info_frame)?;
    if let Some(hc) = pv.hypercall_page {
        let pfn = (hc - layout.virt_base) / PAGE;
        hv.init_hypercall_page(dom, p2m[pfn as usize])
            .map_err(hv_step("initialising the hypercall page"))?;
    }
    let l4_mfn = p2m[layout.page_tables.start as usize];
    hv.pin_page_table(dom, PageTableLevel::L4, l4_mfn)
        .map_err(hv_step("pinning the L4 page table"))?;
    Ok(PvPrebuilt {
        domid: dom,
        ramdisk_len,
        layout,
        shared_info_frame,
        l4_mfn,
        virt_entry: pv.virt_entry,
        finished: None,
    })
}

/// The guest's hypercalls: its grants and vcpu 0's registers.
fn finish_hypercalls(
    hv: &dyn Hypervisor,
    pre: &PvPrebuilt,
    params: &BuildParams,
) -> Result<BuiltGuest, BuildError> {
    let (dom, layout, p2m) = (pre.domid, &pre.layout, params.p2m);
    // A PV guest's frames are named by mfn in foreign maps, hypercall_init and grants.
    let frame = |pfn: u64| p2m[pfn as usize];
    let mut grants = vec![GrantEntry {
        gref: GNTTAB_RESERVED_CONSOLE,
        backend: params.console_backend,
        frame: frame(layout.console_pfn),
    }];
    match params.store {
        StorePage::Xenstore { backend, .. } => grants.push(GrantEntry {
            gref: GNTTAB_RESERVED_XENSTORE,
            backend,
            frame: frame(layout.store_pfn),
        }),
        StorePage::Noxs { devices, .. } => {
            let frames: Vec<u64> = (layout.ctrl.start..layout.ctrl.end()).map(frame).collect();
            grants.extend(device_grants(devices, &frames));
        }
    }
    hv.seed_grant_table(dom, &grants)
        .map_err(hv_step("seeding the grant table"))?;

    let start_info_vaddr = layout.vaddr(layout.start_info_pfn);
    let stack_top = layout.vaddr(layout.stack_pfn + 1);
    hv.set_vcpu_context(
        dom,
        0,
        &VcpuContext::Pv {
            rip: pre.virt_entry,
            rsp: stack_top,
            rsi: start_info_vaddr,
            cr3_mfn: pre.l4_mfn,
        },
    )
    .map_err(hv_step("setting vcpu 0's context"))?;

    Ok(BuiltGuest {
        start_info_pfn: layout.start_info_pfn,
        console_pfn: layout.console_pfn,
        console_mfn: p2m[layout.console_pfn as usize],
        store_pfn: layout.store_pfn,
        store_mfn: p2m[layout.store_pfn as usize],
        ctrl_pfns: (layout.ctrl.start..layout.ctrl.end()).collect(),
        ctrl_mfns: (layout.ctrl.start..layout.ctrl.end())
            .map(|pfn| p2m[pfn as usize])
            .collect(),
        entry: pre.virt_entry,
        start_info_vaddr,
        stack_top,
        l4_mfn: pre.l4_mfn,
        layout: layout.clone(),
    })
}

fn check_params(p: &BuildParams) -> Result<(), BuildError> {
    let bad = |m: String| Err(BuildError::Params(m));
    if p.cmdline.len() >= MAX_GUEST_CMDLINE {
        return bad(format!(
            "the command line is {} bytes; start_info holds at most {}",
            p.cmdline.len(),
            MAX_GUEST_CMDLINE - 1
        ));
    }
    if p.cmdline.contains('\0') {
        return bad("the command line contains a NUL byte".into());
    }
    if p.vcpus == 0 {
        return bad("a guest needs at least one vcpu".into());
    }
    if let StorePage::Noxs { devices, .. } = p.store {
        check_devices(devices)?;
    }
    Ok(())
}

/// Mapped guest pages by pfn: the boot area (pfns `first..end` as one byte slice), or a list
/// of single pages (a warm shell's per-guest pages).
struct BootArea<'a> {
    bytes: &'a mut [u8],
    pfns: Pfns,
}

enum Pfns {
    From(u64),
    Listed(Vec<u64>),
}

impl<'a> BootArea<'a> {
    fn contiguous(bytes: &'a mut [u8], first: u64, end: u64) -> Result<Self, BuildError> {
        let want = ((end - first) * PAGE) as usize;
        Self::checked(bytes, want, Pfns::From(first))
    }

    fn listed(bytes: &'a mut [u8], pfns: Vec<u64>) -> Result<Self, BuildError> {
        let want = pfns.len() * PAGE_SIZE;
        Self::checked(bytes, want, Pfns::Listed(pfns))
    }

    fn checked(bytes: &'a mut [u8], want: usize, pfns: Pfns) -> Result<Self, BuildError> {
        if bytes.len() < want {
            return Err(BuildError::Layout(format!(
                "mapping the boot area gave {} bytes, {want} expected",
                bytes.len()
            )));
        }
        Ok(BootArea {
            bytes: &mut bytes[..want],
            pfns,
        })
    }

    /// Bytes of `count` pages from `pfn` (which the layout puts inside the area; listed pages
    /// are only ever asked for one at a time).
    fn pages(&mut self, pfn: u64, count: u64) -> &mut [u8] {
        let index = match &self.pfns {
            Pfns::From(first) => (pfn - first) as usize,
            Pfns::Listed(pfns) => pfns
                .iter()
                .position(|&p| p == pfn)
                .expect("only per-guest pages are written in a listed area"),
        };
        let start = index * PAGE_SIZE;
        &mut self.bytes[start..start + (count * PAGE) as usize]
    }

    /// Writes `data` at the start of `count` pages from `pfn` and zeroes the rest.
    fn fill(&mut self, pfn: u64, count: u64, data: &[u8]) {
        let pages = self.pages(pfn, count);
        let n = data.len().min(pages.len());
        pages[..n].copy_from_slice(&data[..n]);
        pages[n..].fill(0);
    }
}

/// Copies the segments to their place (`p_paddr` shifted into the virtual space, as libelf
/// does), zeroing bss and every gap so the guest never sees stale bytes.
fn write_kernel(
    area: &mut BootArea,
    image: &KernelImage,
    layout: &PvLayout,
) -> Result<(), BuildError> {
    let pv = image.pv().map_err(|problem| BuildError::Image {
        name: image.name.clone(),
        problem,
    })?;
    let shift = pv.virt_base.wrapping_sub(pv.paddr_offset);
    let kernel_vaddr = layout.vaddr(layout.kernel.start);
    let region = area.pages(layout.kernel.start, layout.kernel.count);
    let mut cursor = 0usize;
    for seg in &image.segments {
        // Segments lie within [virt_kstart, virt_kend) by construction of those bounds.
        let start = (seg.paddr.wrapping_add(shift) - kernel_vaddr) as usize;
        let data = image.segment_data(seg);
        let file_end = start + data.len();
        let mem_end = start + seg.memsz as usize;
        if mem_end > region.len() {
            return Err(BuildError::Layout(format!(
                "segment at {:#x} ends past the kernel area",
                seg.paddr
            )));
        }
        if start > cursor {
            region[cursor..start].fill(0);
        }
        region[start..file_end].copy_from_slice(data);
        region[file_end..mem_end].fill(0);
        cursor = cursor.max(mem_end);
    }
    region[cursor..].fill(0);
    Ok(())
}

fn write_p2m(area: &mut BootArea, layout: &PvLayout, p2m: &[u64]) {
    let pages = area.pages(layout.p2m.start, layout.p2m.count);
    let (list, rest) = pages.split_at_mut(p2m.len() * 8);
    for (slot, mfn) in list.chunks_exact_mut(8).zip(p2m) {
        slot.copy_from_slice(&mfn.to_le_bytes());
    }
    rest.fill(0);
}

fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

/// Writes the bootstrap tables: every page from pfn 0 to `mapped_pages` mapped at
/// `virt_base + pfn * 4096`, page-table pages read-only.
fn write_page_tables(area: &mut BootArea, layout: &PvLayout, p2m: &[u64]) {
    const MASK48: u64 = (1 << 48) - 1;
    let pt = layout.page_tables;
    area.fill(pt.start, pt.count, &[]);
    let from = layout.virt_base & MASK48;
    let mfn = |pfn: u64| p2m[pfn as usize] << 12;
    for pfn in 0..layout.mapped_pages {
        let v = layout.vaddr(pfn) & MASK48;
        let l3 = layout.table_pfn(3, (v >> 39) - (from >> 39));
        let l2 = layout.table_pfn(2, (v >> 30) - (from >> 30));
        let l1 = layout.table_pfn(1, (v >> 21) - (from >> 21));
        let prot = if pt.contains(pfn) {
            PAGE_PROT & !RW
        } else {
            PAGE_PROT
        };
        let entries = [
            (layout.table_pfn(4, 0), v >> 39, mfn(l3) | TABLE_PROT),
            (l3, v >> 30, mfn(l2) | TABLE_PROT),
            (l2, v >> 21, mfn(l1) | TABLE_PROT),
            (l1, v >> 12, mfn(pfn) | prot),
        ];
        for (table, index, entry) in entries {
            let off = (index & 511) as usize * 8;
            put_u64(area.pages(table, 1), off, entry);
        }
    }
}

fn write_start_info(area: &mut BootArea, layout: &PvLayout, p: &BuildParams, shared_info: u64) {
    let p2m = p.p2m;
    let si = area.pages(layout.start_info_pfn, 1);
    si.fill(0);
    si[SI_MAGIC..SI_MAGIC + START_INFO_MAGIC.len()].copy_from_slice(START_INFO_MAGIC);
    put_u64(si, SI_NR_PAGES, layout.nr_pages);
    put_u64(si, SI_SHARED_INFO, shared_info);
    let (flags, store_mfn, store_evtchn) = match p.store {
        StorePage::Xenstore { evtchn, .. } => {
            (SIF_VIRT_P2M_4TOOLS, p2m[layout.store_pfn as usize], evtchn)
        }
        // The device page is in the store slot; port 0 is never a real channel (ABI section 2).
        StorePage::Noxs {
            hypervisor_page: false,
            ..
        } => (
            SIF_VIRT_P2M_4TOOLS | noxs::SIF_NOXS,
            p2m[layout.store_pfn as usize],
            0,
        ),
        // Xen's page: the guest asks the devctl hypercall for it.
        StorePage::Noxs {
            hypervisor_page: true,
            ..
        } => (SIF_VIRT_P2M_4TOOLS, 0, 0),
    };
    put_u32(si, SI_FLAGS, flags);
    put_u64(si, SI_STORE_MFN, store_mfn);
    put_u32(si, SI_STORE_EVTCHN, store_evtchn);
    put_u64(si, SI_CONSOLE_MFN, p2m[layout.console_pfn as usize]);
    put_u32(si, SI_CONSOLE_EVTCHN, p.console_evtchn);
    put_u64(si, SI_PT_BASE, layout.vaddr(layout.page_tables.start));
    put_u64(si, SI_NR_PT_FRAMES, layout.page_tables.count);
    put_u64(si, SI_MFN_LIST, layout.vaddr(layout.p2m.start));
    if let (Some(r), Some(data)) = (layout.ramdisk, p.ramdisk) {
        put_u64(si, SI_MOD_START, layout.vaddr(r.start));
        put_u64(si, SI_MOD_LEN, data.len() as u64);
    }
    // Checked shorter than MAX_GUEST_CMDLINE: the NUL after it is already there.
    si[SI_CMD_LINE..SI_CMD_LINE + p.cmdline.len()].copy_from_slice(p.cmdline.as_bytes());
}

/// vcpu_info slots in the shared info page (XEN_LEGACY_MAX_VCPUS) and their size on x86_64.
const LEGACY_MAX_VCPUS: usize = 32;
const VCPU_INFO_SIZE: usize = 64;
/// Offset of `evtchn_upcall_mask` in `struct vcpu_info`.
const UPCALL_MASK: usize = 1;

/// Clears the shared info page and masks event delivery on every vcpu, as libxc does: a guest
/// unmasks once it has registered an event callback, and one that never does (the noop
/// unikernel) must not take an upcall it cannot handle.
fn mask_events(hv: &dyn Hypervisor, dom: DomId, shared_info_frame: u64) -> Result<(), BuildError> {
    let mut mapping = hv
        .map_foreign(dom, &[shared_info_frame])
        .map_err(hv_step("mapping the shared info page"))?;
    let bytes = mapping.bytes_mut();
    bytes.fill(0);
    for vcpu in 0..LEGACY_MAX_VCPUS {
        bytes[vcpu * VCPU_INFO_SIZE + UPCALL_MASK] = 1;
    }
    Ok(())
}
