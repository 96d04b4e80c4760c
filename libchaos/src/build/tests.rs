//! The PV builder on the simulated hypervisor: build, then check what a booting kernel would
//! see by walking the page tables the builder wrote, from cr3.

use std::collections::HashMap;
use std::path::PathBuf;

use super::*;
use crate::hypervisor::sim::{Fault, SimConfig, SimHypervisor};
use crate::hypervisor::{
    CreateDomain, GrantEntry, GuestKind, Hypervisor, PageTableLevel, VcpuContext,
};
use crate::image::notes::*;
use crate::image::testelf::{num, pattern, TestElf};
use crate::image::{ImageProblem, KernelImage};

const PAGE: u64 = 4096;
const LINUX_BASE: u64 = 0xffff_ffff_8000_0000;

/// A shell as prepare makes it: domain, memory populated, two event channels.
struct Shell {
    sim: SimHypervisor,
    dom: DomId,
    p2m: Vec<u64>,
    console_evtchn: u32,
    xenstore_evtchn: u32,
}

fn shell(mib: u64) -> Shell {
    shell_of(GuestKind::Pv, mib)
}

/// A prepared domain as the toolstack's `prepare` leaves it: memory populated, console and
/// Xenstore event channels allocated (and, for PV, the 64-bit address size set).
fn shell_of(kind: GuestKind, mib: u64) -> Shell {
    let sim = SimHypervisor::new(SimConfig::default());
    let dom = sim
        .create_domain(&CreateDomain {
            kind,
            handle: crate::hypervisor::Uuid([7; 16]),
            max_vcpus: if kind == GuestKind::Pv { 2 } else { 1 },
            max_evtchn_port: 1023,
            max_grant_frames: 32,
            max_maptrack_frames: 1024,
        })
        .unwrap();
    sim.set_max_mem(dom, mib * 1024 + 1024).unwrap();
    if kind == GuestKind::Pv {
        sim.set_address_size(dom, 64).unwrap();
    }
    let gfns: Vec<u64> = (0..mib * 256).collect();
    let p2m = sim.populate_physmap(dom, &gfns).unwrap();
    let console_evtchn = sim.evtchn_alloc_unbound(dom, DomId::DOM0).unwrap();
    let xenstore_evtchn = sim.evtchn_alloc_unbound(dom, DomId::DOM0).unwrap();
    Shell {
        sim,
        dom,
        p2m,
        console_evtchn,
        xenstore_evtchn,
    }
}

impl Shell {
    fn params<'a>(&'a self, cmdline: &'a str, ramdisk: Option<&'a [u8]>) -> BuildParams<'a> {
        BuildParams {
            domid: self.dom,
            p2m: &self.p2m,
            cmdline,
            ramdisk,
            vcpus: 1,
            console_evtchn: self.console_evtchn,
            console_backend: DomId::DOM0,
            store: StorePage::Xenstore {
                evtchn: self.xenstore_evtchn,
                backend: DomId::DOM0,
            },
        }
    }

    fn build(&self, image: &KernelImage, cmdline: &str, ramdisk: Option<&[u8]>) -> BuiltGuest {
        build_pv(&self.sim, image, &self.params(cmdline, ramdisk)).unwrap()
    }

    fn frame(&self, pfn: u64) -> Vec<u8> {
        self.sim.guest_frame(self.dom, pfn).unwrap()
    }

    fn walker(&self) -> Walker<'_> {
        let Some(VcpuContext::Pv { cr3_mfn, .. }) = self.sim.vcpu_context(self.dom, 0) else {
            panic!("vcpu 0 has no PV context");
        };
        Walker {
            shell: self,
            cr3_mfn,
            m2p: self
                .p2m
                .iter()
                .enumerate()
                .map(|(p, m)| (*m, p as u64))
                .collect(),
        }
    }
}

/// Translates guest virtual addresses through the guest's own page tables.
struct Walker<'a> {
    shell: &'a Shell,
    cr3_mfn: u64,
    m2p: HashMap<u64, u64>,
}

#[derive(Debug, PartialEq, Eq)]
struct Translation {
    pfn: u64,
    writable: bool,
}

impl Walker<'_> {
    fn entry(&self, table_mfn: u64, index: u64) -> u64 {
        let pfn = self.m2p[&table_mfn];
        let f = self.shell.frame(pfn);
        let o = index as usize * 8;
        u64::from_le_bytes(f[o..o + 8].try_into().unwrap())
    }

    fn translate(&self, v: u64) -> Option<Translation> {
        let mut mfn = self.cr3_mfn;
        let mut writable = true;
        for shift in [39, 30, 21, 12] {
            let e = self.entry(mfn, (v >> shift) & 511);
            if e & 1 == 0 {
                return None;
            }
            assert_eq!(e & (1 << 7), 0, "no superpages in bootstrap tables");
            writable &= e & 2 != 0;
            mfn = (e >> 12) & ((1 << 40) - 1);
        }
        let pfn = *self.m2p.get(&mfn).expect("mapped mfn belongs to the guest");
        Some(Translation { pfn, writable })
    }

    fn read(&self, v: u64, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        let mut a = v;
        while out.len() < len {
            let t = self
                .translate(a)
                .unwrap_or_else(|| panic!("{a:#x} is not mapped"));
            let off = (a % PAGE) as usize;
            let n = (PAGE as usize - off).min(len - out.len());
            out.extend_from_slice(&self.shell.frame(t.pfn)[off..off + n]);
            a += n as u64;
        }
        out
    }

    fn u64_at(&self, v: u64) -> u64 {
        u64::from_le_bytes(self.read(v, 8).try_into().unwrap())
    }

    fn u32_at(&self, v: u64) -> u32 {
        u32::from_le_bytes(self.read(v, 4).try_into().unwrap())
    }
}

/// What every successfully built guest must look like; returns the walker for more checks.
fn check_guest<'a>(s: &'a Shell, image: &KernelImage, g: &BuiltGuest, cmdline: &str) -> Walker<'a> {
    let pv = image.pv().unwrap();
    let l = &g.layout;
    let nr_pages = s.p2m.len() as u64;

    // vcpu 0: entry, stack, start_info, cr3 = the pinned L4.
    let ctx = s.sim.vcpu_context(s.dom, 0).unwrap();
    assert_eq!(
        ctx,
        VcpuContext::Pv {
            rip: pv.virt_entry,
            rsp: g.stack_top,
            rsi: g.start_info_vaddr,
            cr3_mfn: g.l4_mfn,
        }
    );
    assert_eq!(
        s.sim.pinned_tables(s.dom),
        vec![(PageTableLevel::L4, g.l4_mfn)]
    );
    assert_eq!(g.l4_mfn, s.p2m[l.page_tables.start as usize]);
    let w = s.walker();

    // The entry point maps to the kernel's first bytes (the test kernels start at the entry).
    let seg = &image.segments[0];
    let data = image.segment_data(seg);
    let seg_v = seg.paddr.wrapping_add(pv.virt_base - pv.paddr_offset);
    let n = data.len().min(64);
    assert_eq!(w.read(seg_v, n), data[..n]);
    assert!(w.translate(pv.virt_entry).is_some());
    // bss is zero.
    if seg.memsz > data.len() as u64 {
        let bss = (seg.memsz - data.len() as u64).min(256) as usize;
        assert!(w
            .read(seg_v + data.len() as u64, bss)
            .iter()
            .all(|b| *b == 0));
    }

    // start_info at rsi.
    let si = g.start_info_vaddr;
    assert_eq!(w.translate(si).unwrap().pfn, g.start_info_pfn);
    assert_eq!(&w.read(si, 15), b"xen-3.0-x86_64\0");
    assert_eq!(w.u64_at(si + 32), nr_pages);
    let shared = s.sim.domain_info(s.dom).unwrap().shared_info_frame;
    assert_eq!(w.u64_at(si + 40), shared << 12);
    assert_eq!(w.u64_at(si + 56), g.store_mfn);
    assert_eq!(w.u32_at(si + 64), s.xenstore_evtchn);
    assert_eq!(w.u64_at(si + 72), g.console_mfn);
    assert_eq!(w.u32_at(si + 80), s.console_evtchn);
    let pt_base = w.u64_at(si + 88);
    let nr_pt = w.u64_at(si + 96);
    assert_eq!(w.translate(pt_base).unwrap().pfn, l.page_tables.start);
    assert_eq!(s.p2m[w.translate(pt_base).unwrap().pfn as usize], g.l4_mfn);
    assert_eq!(nr_pt, l.page_tables.count);
    let cmd = w.read(si + 128, 1024);
    assert_eq!(&cmd[..cmdline.len()], cmdline.as_bytes());
    assert_eq!(cmd[cmdline.len()], 0);

    // mfn_list: the guest's own p2m, readable through its mapping.
    let mfn_list = w.u64_at(si + 104);
    assert_eq!(w.read(mfn_list, 8 * nr_pages as usize), {
        let mut b = Vec::new();
        for m in &s.p2m {
            b.extend_from_slice(&m.to_le_bytes());
        }
        b
    });

    // Rings: zeroed, mfns reported, granted to dom0 with the reserved refs.
    assert_eq!(g.console_mfn, s.p2m[g.console_pfn as usize]);
    assert_eq!(g.store_mfn, s.p2m[g.store_pfn as usize]);
    assert!(s.frame(g.console_pfn).iter().all(|b| *b == 0));
    assert!(s.frame(g.store_pfn).iter().all(|b| *b == 0));
    let grants = s.sim.grant_entries(s.dom);
    assert!(grants.contains(&GrantEntry {
        gref: 0,
        backend: DomId::DOM0,
        frame: g.console_mfn
    }));
    assert!(grants.contains(&GrantEntry {
        gref: 1,
        backend: DomId::DOM0,
        frame: g.store_mfn
    }));

    // Page-table pages are mapped read-only; everything else in the mapping is writable.
    for pfn in 0..l.mapped_pages {
        let t = w.translate(l.vaddr(pfn)).unwrap();
        assert_eq!(t.pfn, pfn);
        assert_eq!(t.writable, !l.page_tables.contains(pfn), "pfn {pfn:#x}");
    }
    // The mapping covers through the stack plus slack (or all memory), and stops there.
    assert!(l.mapped_pages >= (l.stack_pfn + 1 + layout::PADDING_PAGES).min(nr_pages));
    assert!(l.mapped_pages <= nr_pages);
    if l.mapped_pages < nr_pages {
        assert_eq!(w.translate(l.vaddr(l.mapped_pages)), None);
    }
    assert_eq!(w.translate(g.stack_top - 8).unwrap().pfn, l.stack_pfn);

    // Hypercall page: Xen (the sim) filled the frame the note names.
    if let Some(hc) = pv.hypercall_page {
        let pfn = w.translate(hc).unwrap().pfn;
        assert_eq!(s.sim.hypercall_page(s.dom), Some(pfn));
        assert_eq!(&s.frame(pfn)[..2], &[0xb8, 0]);
        assert_eq!(&s.frame(pfn)[32..34], &[0xb8, 1]);
    }
    w
}

#[test]
fn builds_small_unikernel_in_2_mib() {
    let s = shell(2);
    let image =
        KernelImage::parse("tiny", &TestElf::pv(0x40_0000, 0, 0x2800, 0x1000).build()).unwrap();
    let g = s.build(&image, "console=hvc0", None);
    check_guest(&s, &image, &g, "console=hvc0");
    let l = &g.layout;
    assert_eq!(l.kernel.start, 0);
    assert_eq!(l.mapped_pages, 512, "clamped to memory");
    assert_eq!(g.start_info_pfn, 5);
    assert_eq!(g.entry, 0x40_0000);
}

#[test]
fn builds_linux_like_kernel_in_128_mib_with_ramdisk() {
    let s = shell(128);
    let image = KernelImage::parse(
        "linuxish",
        &TestElf::pv(LINUX_BASE, 0x100_0000, 0x5123, 0x3000).build(),
    )
    .unwrap();
    let ramdisk = pattern(0x1_2345);
    let cmdline = "root=/dev/xvda1 console=hvc0 quiet";
    let g = s.build(&image, cmdline, Some(&ramdisk));
    let w = check_guest(&s, &image, &g, cmdline);
    let l = &g.layout;
    assert_eq!(l.kernel.start, 0x1000);
    // Pages below the kernel are mapped (pfn 0 at virt_base) but not written.
    assert_eq!(w.translate(LINUX_BASE).unwrap().pfn, 0);
    // The ramdisk follows the kernel, its address and length in start_info.
    let si = g.start_info_vaddr;
    let mod_start = w.u64_at(si + 112);
    assert_eq!(mod_start, l.vaddr(l.ramdisk.unwrap().start));
    assert_eq!(w.u64_at(si + 120), ramdisk.len() as u64);
    assert_eq!(w.read(mod_start, ramdisk.len()), ramdisk);
    // 4 MiB aligned end of the mapping.
    assert_eq!((l.vaddr(l.mapped_pages)) % (4 << 20), 0);
}

#[test]
fn builds_gzipped_kernel() {
    use std::io::Write;
    let elf = TestElf::pv(LINUX_BASE, 0x20_0000, 0x3000, 0).build();
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(&elf).unwrap();
    let image = KernelImage::parse("gz", &e.finish().unwrap()).unwrap();
    let s = shell(8);
    let g = s.build(&image, "", None);
    check_guest(&s, &image, &g, "");
}

#[test]
fn kernel_larger_than_memory() {
    let s = shell(2);
    let image = KernelImage::parse("big", &TestElf::pv(0, 0, 0x1000, 3 << 20).build()).unwrap();
    let e = build_pv(&s.sim, &image, &s.params("", None)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "big needs 3076 KiB of guest memory, the guest has 2 MiB"
    );
    // Nothing was touched: no context, nothing pinned.
    assert!(s.sim.vcpu_context(s.dom, 0).is_none());
    assert!(s.sim.pinned_tables(s.dom).is_empty());
}

#[test]
fn boot_data_larger_than_memory() {
    // The kernel fits in 2 MiB, its boot data does not.
    let s = shell(2);
    let image = KernelImage::parse("k", &TestElf::pv(0, 0, 0x1000, 0x1fc000).build()).unwrap();
    let e = build_pv(&s.sim, &image, &s.params("", None)).unwrap_err();
    assert!(matches!(e, BuildError::GuestTooSmall { .. }), "{e}");
}

#[test]
fn refuses_a_kernel_that_is_not_pv() {
    let mut t = TestElf::pv(0, 0x10_0000, 0x1000, 0);
    t.notes = vec![num(XEN_ELFNOTE_PHYS32_ENTRY, 0x10_0000)];
    let image = KernelImage::parse("pvh-only", &t.build()).unwrap();
    let s = shell(4);
    let e = build_pv(&s.sim, &image, &s.params("", None)).unwrap_err();
    assert!(
        matches!(
            &e,
            BuildError::Image {
                problem: ImageProblem::NotPv(_),
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().starts_with("pvh-only: not a PV kernel"),
        "{e}"
    );
}

#[test]
fn refuses_bad_parameters() {
    let s = shell(4);
    let image = KernelImage::parse("k", &TestElf::pv(0, 0, 0x2000, 0).build()).unwrap();
    let long = "x".repeat(1024);
    let e = build_pv(&s.sim, &image, &s.params(&long, None)).unwrap_err();
    assert!(e.to_string().contains("1024 bytes"), "{e}");
    let mut p = s.params("", None);
    p.vcpus = 0;
    assert!(matches!(
        build_pv(&s.sim, &image, &p),
        Err(BuildError::Params(_))
    ));
    // The longest command line that fits is accepted.
    let fits = "y".repeat(1023);
    let g = s.build(&image, &fits, None);
    check_guest(&s, &image, &g, &fits);
}

#[test]
fn noxs_control_pages_are_granted_only_under_free_reserved_references() {
    let s = shell(4);
    let image = KernelImage::parse("k", &TestElf::pv(0, 0, 0x2000, 0).build()).unwrap();
    let vif = |id, gref| NoxsDevice {
        ty: noxs::DevType::Vif,
        id,
        backend: DomId::DOM0,
        evtchn: 5 + id,
        gref,
        ctrl: vec![id as u8],
    };
    let build = |devices: &[NoxsDevice]| {
        let mut p = s.params("", None);
        p.store = StorePage::Noxs {
            devices,
            hypervisor_page: false,
        };
        build_pv(&s.sim, &image, &p)
    };
    for bad in [
        vec![vif(0, Some(0))],
        vec![vif(0, Some(1))],
        vec![vif(0, Some(8))],
        vec![vif(0, Some(2)), vif(1, Some(2))],
    ] {
        let e = build(&bad).unwrap_err();
        assert!(e.to_string().contains("cannot be granted"), "{e}");
    }
    let g = build(&[vif(0, Some(2)), vif(1, None), vif(2, Some(7))]).unwrap();
    let mut grants = s.sim.grant_entries(s.dom);
    grants.sort_by_key(|e| e.gref);
    let mfn = |pfn: u64| s.p2m[pfn as usize];
    assert_eq!(
        grants,
        vec![
            GrantEntry {
                gref: 0,
                backend: DomId::DOM0,
                frame: g.console_mfn
            },
            GrantEntry {
                gref: 2,
                backend: DomId::DOM0,
                frame: mfn(g.ctrl_pfns[0])
            },
            GrantEntry {
                gref: 7,
                backend: DomId::DOM0,
                frame: mfn(g.ctrl_pfns[2])
            },
        ]
    );
    assert_eq!(s.frame(g.ctrl_pfns[2])[0], 2, "the control page it names");
}

#[test]
fn hypervisor_failures_name_the_step() {
    let image = KernelImage::parse("k", &TestElf::pv(0, 0, 0x2000, 0).build()).unwrap();
    for (op, step) in [
        (
            "IOCTL_PRIVCMD_MMAPBATCH_V2",
            "mapping the guest's boot area",
        ),
        (
            "XEN_DOMCTL_hypercall_init",
            "initialising the hypercall page",
        ),
        ("MMUEXT_PIN_TABLE", "pinning the L4 page table"),
        ("grant table seed", "seeding the grant table"),
        ("XEN_DOMCTL_setvcpucontext", "setting vcpu 0's context"),
    ] {
        let s = shell(4);
        s.sim.arm(Fault::Op { name: op, nth: 0 });
        let e = build_pv(&s.sim, &image, &s.params("", None)).unwrap_err();
        assert!(
            matches!(&e, BuildError::Hypervisor { step: st, .. } if *st == step),
            "{op}: {e}"
        );
        assert!(e.to_string().starts_with(step), "{e}");
    }
}

#[test]
fn one_mapping_for_the_whole_boot_area() {
    // Performance: the builder maps its area once, not page by page (then the shared info
    // page, to mask events).
    let s = shell(128);
    let image =
        KernelImage::parse("k", &TestElf::pv(LINUX_BASE, 0x100_0000, 0x4000, 0).build()).unwrap();
    // Two mappings in all: the whole boot area, then the shared info page. A third would fail.
    s.sim.arm(Fault::Op {
        name: "IOCTL_PRIVCMD_MMAPBATCH_V2",
        nth: 2,
    });
    let g = s.build(&image, "", None);
    check_guest(&s, &image, &g, "");
}

/// The test unikernels from guests/ (built in the guests worktree), if present.
#[test]
fn builds_test_unikernels_if_built() {
    for name in ["noop", "hello"] {
        let candidates = [PathBuf::from(format!("../guests/out/{name}"))];
        let Some(p) = candidates.iter().find(|p| p.exists()) else {
            eprintln!("skipping {name}: guests/out/{name} not built");
            continue;
        };
        let image = KernelImage::from_file(p).unwrap();
        for mib in [2, 16] {
            let s = shell(mib);
            let g = s.build(&image, "", None);
            check_guest(&s, &image, &g, "");
            eprintln!("{name} in {mib} MiB: {:x?}", g.layout);
        }
    }
}

/// Debian's vmlinuz, built into a 128 MiB guest.
#[test]
fn builds_debian_vmlinuz() {
    let p = crate::testing::debian_vmlinuz();
    let image = KernelImage::from_file(&p).unwrap();
    let s = shell(128);
    let t = std::time::Instant::now();
    let g = s.build(&image, "console=hvc0", Some(b"not really an initrd"));
    eprintln!("built in {:?}: {:x?}", t.elapsed(), g.layout);
    check_guest(&s, &image, &g, "console=hvc0");
    let small = shell(64);
    let e = build_pv(&small.sim, &image, &small.params("", None)).unwrap_err();
    eprintln!("64 MiB: {e}");
    assert!(matches!(e, BuildError::GuestTooSmall { .. }));
}

/// The sim plus the HVM params it does not keep (PVH guests need them).
struct WithHvmParams<'a> {
    sim: &'a SimHypervisor,
    hvm_params: std::sync::Mutex<Vec<(u32, u64)>>,
}

impl<'a> WithHvmParams<'a> {
    fn new(s: &'a Shell) -> Self {
        WithHvmParams {
            sim: &s.sim,
            hvm_params: Default::default(),
        }
    }
}

type HvResult<T> = crate::hypervisor::Result<T>;

impl Hypervisor for WithHvmParams<'_> {
    fn name(&self) -> &'static str {
        "sim+hvm-params"
    }
    fn physinfo(&self) -> HvResult<crate::hypervisor::PhysInfo> {
        self.sim.physinfo()
    }
    fn create_domain(&self, args: &CreateDomain) -> HvResult<DomId> {
        self.sim.create_domain(args)
    }
    fn destroy_domain(&self, dom: DomId) -> HvResult<()> {
        self.sim.destroy_domain(dom)
    }
    fn set_domain_handle(&self, dom: DomId, handle: crate::hypervisor::Uuid) -> HvResult<()> {
        self.sim.set_domain_handle(dom, handle)
    }
    fn pause_domain(&self, dom: DomId) -> HvResult<()> {
        self.sim.pause_domain(dom)
    }
    fn unpause_domain(&self, dom: DomId) -> HvResult<()> {
        self.sim.unpause_domain(dom)
    }
    fn shutdown_domain(
        &self,
        dom: DomId,
        reason: crate::hypervisor::ShutdownReason,
    ) -> HvResult<()> {
        self.sim.shutdown_domain(dom, reason)
    }
    fn domain_info(&self, dom: DomId) -> HvResult<crate::hypervisor::DomainInfo> {
        self.sim.domain_info(dom)
    }
    fn list_domains(&self) -> HvResult<Vec<crate::hypervisor::DomainInfo>> {
        self.sim.list_domains()
    }
    fn set_max_mem(&self, dom: DomId, max_kib: u64) -> HvResult<()> {
        self.sim.set_max_mem(dom, max_kib)
    }
    fn set_address_size(&self, dom: DomId, bits: u32) -> HvResult<()> {
        self.sim.set_address_size(dom, bits)
    }
    fn set_tsc_mode(&self, dom: DomId, mode: crate::hypervisor::TscMode) -> HvResult<()> {
        self.sim.set_tsc_mode(dom, mode)
    }
    fn set_paging_pool(&self, dom: DomId, bytes: u64) -> HvResult<()> {
        self.sim.set_paging_pool(dom, bytes)
    }
    fn populate_physmap(&self, dom: DomId, gfns: &[u64]) -> HvResult<Vec<u64>> {
        self.sim.populate_physmap(dom, gfns)
    }
    fn map_foreign<'b>(
        &'b self,
        dom: DomId,
        frames: &[u64],
    ) -> HvResult<Box<dyn crate::hypervisor::ForeignMapping + 'b>> {
        self.sim.map_foreign(dom, frames)
    }
    fn init_hypercall_page(&self, dom: DomId, frame: u64) -> HvResult<()> {
        self.sim.init_hypercall_page(dom, frame)
    }
    fn pin_page_table(&self, dom: DomId, level: PageTableLevel, mfn: u64) -> HvResult<()> {
        self.sim.pin_page_table(dom, level, mfn)
    }
    fn seed_grant_table(&self, dom: DomId, entries: &[GrantEntry]) -> HvResult<()> {
        self.sim.seed_grant_table(dom, entries)
    }
    fn set_hvm_param(&self, _dom: DomId, param: u32, value: u64) -> HvResult<()> {
        self.hvm_params.lock().unwrap().push((param, value));
        Ok(())
    }
    fn set_vcpu_context(&self, dom: DomId, vcpu: u32, ctx: &VcpuContext) -> HvResult<()> {
        self.sim.set_vcpu_context(dom, vcpu, ctx)
    }
    fn evtchn_alloc_unbound(&self, dom: DomId, remote: DomId) -> HvResult<u32> {
        self.sim.evtchn_alloc_unbound(dom, remote)
    }
    fn notify_guest(&self, dom: DomId, port: u32) -> HvResult<()> {
        self.sim.notify_guest(dom, port)
    }
}

fn pvh_shell(mib: u64) -> Shell {
    shell_of(GuestKind::Pvh, mib)
}

fn phys_read(s: &Shell, paddr: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut a = paddr;
    while out.len() < len {
        let off = (a % PAGE) as usize;
        let n = (PAGE as usize - off).min(len - out.len());
        out.extend_from_slice(&s.frame(a / PAGE)[off..off + n]);
        a += n as u64;
    }
    out
}

fn le64(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}

#[test]
fn builds_pvh_guest() {
    let mut t = TestElf::pv(0, 0x10_0000, 0x2345, 0x1000);
    t.notes = vec![num(XEN_ELFNOTE_PHYS32_ENTRY, 0x10_0010)];
    let image = KernelImage::parse("pvh", &t.build()).unwrap();
    let s = pvh_shell(16);
    let xen = WithHvmParams::new(&s);
    let ramdisk = pattern(5000);
    let g = build_pvh(&xen, &image, &s.params("console=hvc0", Some(&ramdisk))).unwrap();

    assert_eq!(
        s.sim.vcpu_context(s.dom, 0),
        Some(VcpuContext::Pvh {
            rip: 0x10_0010,
            rbx: g.start_info_paddr as u32
        })
    );
    // Kernel at its physical address, bss zeroed.
    assert_eq!(phys_read(&s, 0x10_0000, 0x2345), pattern(0x2345));
    assert!(phys_read(&s, 0x10_2345, 0x1000).iter().all(|b| *b == 0));
    // hvm_start_info.
    let si = phys_read(&s, g.start_info_paddr, 56);
    assert_eq!(le32(&si, 0), 0x336e_c578);
    assert_eq!(le32(&si, 4), 1);
    assert_eq!(le32(&si, 12), 1);
    let module = phys_read(&s, le64(&si, 16), 32);
    assert_eq!(phys_read(&s, le64(&module, 0), 5000), ramdisk);
    assert_eq!(le64(&module, 8), 5000);
    assert_eq!(phys_read(&s, le64(&si, 24), 13), b"console=hvc0\0");
    // The ACPI tables in the first reserved page (their contents: acpi.rs's tests).
    let top = 16 << 20;
    assert_eq!(le64(&si, 32), top - 3 * 4096, "rsdp_paddr");
    assert_eq!(phys_read(&s, top - 3 * 4096, 8), b"RSD PTR ");
    assert_eq!(le32(&si, 48), 2);
    let memmap = phys_read(&s, le64(&si, 40), 48);
    assert_eq!(
        (le64(&memmap, 0), le64(&memmap, 8), le32(&memmap, 16)),
        (0, top - 3 * 4096, 1)
    );
    assert_eq!(
        (le64(&memmap, 24), le64(&memmap, 32), le32(&memmap, 40)),
        (top - 3 * 4096, 3 * 4096, 2)
    );
    // Rings: the last two pages, zeroed, granted, announced through HVM params.
    assert_eq!((g.store_pfn, g.console_pfn), (4094, 4095));
    assert!(s.frame(4094).iter().all(|b| *b == 0));
    let grants = s.sim.grant_entries(s.dom);
    assert_eq!(grants.len(), 2);
    assert!(grants.contains(&GrantEntry {
        gref: 0,
        backend: DomId::DOM0,
        frame: 4095
    }));
    assert_eq!(
        *xen.hvm_params.lock().unwrap(),
        vec![
            (1, 4094),
            (2, u64::from(s.xenstore_evtchn)),
            (17, 4095),
            (18, u64::from(s.console_evtchn))
        ]
    );
}

#[test]
fn pvh_errors() {
    let s = pvh_shell(2);
    let xen = WithHvmParams::new(&s);
    // A PV-only kernel has no PVH entry.
    let pv_only = KernelImage::parse("pv", &TestElf::pv(0, 0, 0x2000, 0).build()).unwrap();
    let e = build_pvh(&xen, &pv_only, &s.params("", None)).unwrap_err();
    assert!(e.to_string().contains("not a PVH kernel"), "{e}");
    // Too big.
    let mut t = TestElf::pv(0, 0x10_0000, 0x1000, 2 << 20);
    t.notes = vec![num(XEN_ELFNOTE_PHYS32_ENTRY, 0x10_0000)];
    let big = KernelImage::parse("big", &t.build()).unwrap();
    let e = build_pvh(&xen, &big, &s.params("", None)).unwrap_err();
    assert!(matches!(e, BuildError::GuestTooSmall { .. }), "{e}");
    // The sim keeps HVM params (for PVH domains only).
    let mut t = TestElf::pv(0, 0x1000, 0x1000, 0);
    t.notes = vec![num(XEN_ELFNOTE_PHYS32_ENTRY, 0x1000)];
    let small = KernelImage::parse("small", &t.build()).unwrap();
    let g = build_pvh(&s.sim, &small, &s.params("", None)).unwrap();
    assert_eq!(s.sim.hvm_param(s.dom, 1), Some(g.store_pfn));
    let pv = shell_of(GuestKind::Pv, 2);
    let e = pv.sim.set_hvm_param(pv.dom, 1, 0).unwrap_err();
    assert!(e.to_string().contains("no HVM params"), "{e}");
}

/// A warm shell (prebuild_pv, then finish_pv per guest) gives the guest the same memory,
/// registers and grants as build_pv does in one go.
#[test]
fn prebuilt_then_finished_is_the_same_guest_as_built_at_once() {
    let image = KernelImage::parse(
        "linuxish",
        &TestElf::pv(LINUX_BASE, 0x100_0000, 0x5123, 0x3000).build(),
    )
    .unwrap();
    let ramdisk = pattern(0x1_2345);
    let cmdline = "root=/dev/xvda1 console=hvc0";
    let at_once = shell(32);
    let g1 = at_once.build(&image, cmdline, Some(&ramdisk));

    let warm = shell(32);
    let pre = prebuild_pv(&warm.sim, &image, warm.dom, &warm.p2m, Some(&ramdisk), 0).unwrap();
    assert!(warm.sim.vcpu_context(warm.dom, 0).is_none(), "no guest yet");
    let g2 = finish_pv(&warm.sim, &pre, &warm.params(cmdline, Some(&ramdisk))).unwrap();
    check_guest(&warm, &image, &g2, cmdline);
    assert_eq!(g1.layout, g2.layout);
    assert_eq!(
        (g1.entry, g1.start_info_vaddr),
        (g2.entry, g2.start_info_vaddr)
    );
    for pfn in 0..g1.layout.end_written_pfn() {
        assert_eq!(at_once.frame(pfn), warm.frame(pfn), "pfn {pfn}");
    }
    assert_eq!(
        at_once.sim.grant_entries(at_once.dom),
        warm.sim.grant_entries(warm.dom)
    );
}

#[test]
fn a_warm_shell_refuses_a_guest_it_was_not_built_for() {
    let image =
        KernelImage::parse("tiny", &TestElf::pv(0x40_0000, 0, 0x2800, 0x1000).build()).unwrap();
    let s = shell(2);
    let pre = prebuild_pv(&s.sim, &image, s.dom, &s.p2m, None, 0).unwrap();
    let ramdisk = pattern(100);
    let err = finish_pv(&s.sim, &pre, &s.params("", Some(&ramdisk))).unwrap_err();
    assert!(err.to_string().contains("another ramdisk"), "{err}");
    // The page tables are pinned: building over them again is refused, not done.
    let err = build_pv(&s.sim, &image, &s.params("", None)).unwrap_err();
    assert!(err.to_string().contains("pinned page table"), "{err}");
}
