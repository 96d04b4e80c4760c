//! Exercises every operation of the Xen backend on a real Xen (run in dom0, as root).
//!
//! It builds a tiny 64-bit PV guest by hand (4-level page tables, hypercall page, 12 bytes of
//! code that ask Xen to reboot the domain), runs it, and checks that Xen reports the guest's own
//! shutdown. Each step prints `SMOKE <step> ...`; the last line is `SMOKE PASS` (exit 0) or
//! `SMOKE FAIL <why>` (exit 1). Also prints `SMOKE domid N` so a script can compare `xl list`.
//!
//! Build: cargo build --release -p libchaos --example xen_smoke

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use libchaos::hypervisor::xen::XenHypervisor;
use libchaos::hypervisor::{
    CreateDomain, DomId, GrantEntry, GuestKind, Hypervisor, HypervisorError, PageTableLevel,
    ShutdownReason, VcpuContext, PAGE_SIZE,
};

const PAGES: u64 = 256;

// Guest pseudo-physical layout (virtual address = pfn * 4096, all in L4 slot 0).
const L4: u64 = 0;
const L3: u64 = 1;
const L2: u64 = 2;
const L1: u64 = 3;
const HYPERCALL_PAGE: u64 = 4;
const CODE: u64 = 5;
const DATA: u64 = 6;
const RING: u64 = 7;
/// Present | writable | user.
const PTE: u64 = 0x7;

type Res<T> = Result<T, String>;

fn step<T>(name: &str, r: Result<T, HypervisorError>) -> Res<T> {
    r.map_err(|e| format!("{name}: {e}"))
}

fn check(cond: bool, what: String) -> Res<()> {
    if cond {
        Ok(())
    } else {
        Err(what)
    }
}

fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> Res<bool>) -> Res<()> {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if f()? {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("timed out after {secs} s waiting for {what}"))
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => {
            println!("SMOKE PASS");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("SMOKE FAIL {e}");
            ExitCode::FAILURE
        }
    }
}

fn create_args(handle: u8) -> CreateDomain {
    CreateDomain {
        kind: GuestKind::Pv,
        handle: libchaos::hypervisor::Uuid([handle; 16]),
        max_vcpus: 1,
        max_evtchn_port: 1023,
        max_grant_frames: 32,
        max_maptrack_frames: 128,
    }
}

fn run() -> Res<()> {
    let t0 = Instant::now();
    let xen = step("open", XenHypervisor::open())?;
    let (maj, min) = xen.version();
    println!(
        "SMOKE open ok xen {maj}.{min} domctl {:#x} ({:?})",
        xen.domctl_version(),
        t0.elapsed()
    );

    let before = step("physinfo", xen.physinfo())?;
    println!(
        "SMOKE physinfo ok cpus {} total_pages {} free_pages {}",
        before.nr_cpus, before.total_pages, before.free_pages
    );

    let dom = step("create_domain", xen.create_domain(&create_args(0xc4)))?;
    println!("SMOKE create ok");
    println!("SMOKE domid {dom}");
    let result = exercise(&xen, dom);
    // Always try to clean up, then report the first failure.
    let destroyed = xen.destroy_domain(dom);
    result?;
    step("destroy_domain", destroyed)?;
    println!("SMOKE destroy ok");
    check(
        matches!(xen.domain_info(dom), Err(HypervisorError::NoSuchDomain(_))),
        format!("domain {dom} still listed after destroy"),
    )?;

    second_domain_shutdown(&xen)?;
    pvh_guest(&xen)?;

    let mut after = before;
    wait_until("free pages to come back", 10, || {
        after = step("physinfo", xen.physinfo())?;
        Ok(after.free_pages >= before.free_pages)
    })?;
    println!(
        "SMOKE memory ok free_pages before {} after {}",
        before.free_pages, after.free_pages
    );
    println!("SMOKE total {:?}", t0.elapsed());
    Ok(())
}

fn exercise(xen: &XenHypervisor, dom: DomId) -> Res<()> {
    step("set_max_mem", xen.set_max_mem(dom, PAGES * 4))?;
    step("set_address_size", xen.set_address_size(dom, 64))?;
    println!("SMOKE max_mem+address_size ok");

    let gfns: Vec<u64> = (0..PAGES).collect();
    let mfns = step("populate_physmap", xen.populate_physmap(dom, &gfns))?;
    check(mfns.len() == PAGES as usize, format!("{} mfns", mfns.len()))?;
    println!(
        "SMOKE populate ok {} pages, mfn[0] {:#x} mfn[255] {:#x}",
        mfns.len(),
        mfns[0],
        mfns[255]
    );
    // One more page than max_mem allows must fail cleanly.
    match xen.populate_physmap(dom, &[PAGES]) {
        Err(e) => println!("SMOKE populate beyond max_mem refused: {e}"),
        Ok(_) => return Err("populate beyond max_mem succeeded".into()),
    }

    // Pattern through one mapping, read back through another (PV frames are named by MFN).
    {
        let mut m = step("map_foreign", xen.map_foreign(dom, &mfns))?;
        for (i, page) in m.bytes_mut().chunks_mut(PAGE_SIZE).enumerate() {
            page.fill(i as u8 ^ 0x5a);
            page[..8].copy_from_slice(&(i as u64).to_le_bytes());
        }
    }
    {
        let m = step("map_foreign (again)", xen.map_foreign(dom, &mfns))?;
        for (i, page) in m.bytes().chunks(PAGE_SIZE).enumerate() {
            let ok = page[..8] == (i as u64).to_le_bytes()
                && page[8..].iter().all(|b| *b == i as u8 ^ 0x5a);
            check(ok, format!("page {i} does not hold the pattern"))?;
        }
    }
    println!("SMOKE map write/read ok {} pages", PAGES);

    let port = step(
        "evtchn_alloc_unbound",
        xen.evtchn_alloc_unbound(dom, DomId::DOM0),
    )?;
    println!("SMOKE evtchn ok port {port}");

    let info = step("domain_info", xen.domain_info(dom))?;
    println!(
        "SMOKE domain_info ok dom {} tot_pages {} max_pages {} paused {} online_vcpus {}",
        info.domid, info.tot_pages, info.max_pages, info.paused, info.online_vcpus
    );
    check(info.paused, "new domain not paused".into())?;
    check(
        info.tot_pages >= PAGES,
        format!("tot_pages {}", info.tot_pages),
    )?;
    let list = step("list_domains", xen.list_domains())?;
    println!(
        "SMOKE list_domains ok {:?}",
        list.iter().map(|d| d.domid.0).collect::<Vec<_>>()
    );
    check(
        list.iter().any(|d| d.domid == dom) && list.iter().any(|d| d.domid == DomId::DOM0),
        "list_domains misses dom0 or the new domain".into(),
    )?;
    match Command::new("xl").arg("list").output() {
        Ok(o) => {
            for line in String::from_utf8_lossy(&o.stdout).lines() {
                println!("SMOKE xl-list {line}");
            }
        }
        Err(e) => println!("SMOKE xl-list unavailable: {e}"),
    }

    match xen.unpause_domain(dom) {
        Err(HypervisorError::Invalid { reason, .. }) => {
            println!("SMOKE unpause before build refused: {reason}")
        }
        other => return Err(format!("unpause before build: {other:?}")),
    }

    build_tiny_guest(xen, dom, &mfns)?;

    // Xen counts controller pauses: created paused (1), paused again (2), so the first
    // unpause leaves it paused and the second lets it run.
    step("pause_domain", xen.pause_domain(dom))?;
    check(
        step("domain_info", xen.domain_info(dom))?.paused,
        "not paused after pause".into(),
    )?;
    step("unpause_domain", xen.unpause_domain(dom))?;
    let still = step("domain_info", xen.domain_info(dom))?.paused;
    println!("SMOKE pause ok; after pause+unpause of a created domain paused={still}");
    step("unpause_domain", xen.unpause_domain(dom))?;
    let i = step("domain_info", xen.domain_info(dom))?;
    println!(
        "SMOKE unpaused: paused {} running {} blocked {} shutdown {:?}",
        i.paused, i.running, i.blocked, i.shutdown
    );
    // The guest's only job: SCHEDOP_shutdown(reboot) through its hypercall page.
    wait_until("the guest to shut itself down", 20, || {
        let i = step("domain_info", xen.domain_info(dom))?;
        Ok(i.shutdown.is_some())
    })?;
    let info = step("domain_info", xen.domain_info(dom))?;
    check(
        info.shutdown == Some(ShutdownReason::Reboot),
        format!("guest shut down with {:?}, expected Reboot", info.shutdown),
    )?;
    println!(
        "SMOKE unpause ok guest ran and shut itself down: {:?} cpu_time_ns {}",
        info.shutdown, info.cpu_time_ns
    );
    Ok(())
}

/// Page tables mapping the hypercall page, code and data at va = pfn * 4096, the hypercall
/// page, code, grant entry, pinned L4 and vcpu context.
fn build_tiny_guest(xen: &XenHypervisor, dom: DomId, mfns: &[u64]) -> Res<()> {
    let pfns = [L4, L3, L2, L1, HYPERCALL_PAGE, CODE, DATA];
    let frames: Vec<u64> = pfns.iter().map(|p| mfns[*p as usize]).collect();
    {
        let mut m = step("map_foreign (build)", xen.map_foreign(dom, &frames))?;
        let b = m.bytes_mut();
        b.fill(0);
        let mut put = |page: usize, index: usize, v: u64| {
            let at = page * PAGE_SIZE + index * 8;
            b[at..at + 8].copy_from_slice(&v.to_le_bytes());
        };
        put(0, 0, (mfns[L3 as usize] << 12) | PTE);
        put(1, 0, (mfns[L2 as usize] << 12) | PTE);
        put(2, 0, (mfns[L1 as usize] << 12) | PTE);
        for pfn in [HYPERCALL_PAGE, CODE, DATA] {
            put(3, pfn as usize, (mfns[pfn as usize] << 12) | PTE);
        }
        // mov edi, 2 (SCHEDOP_shutdown); mov rsi, DATA va; mov rax, hypercall 29 stub;
        // call rax; jmp .
        let stub = HYPERCALL_PAGE * 4096 + 29 * 32;
        let mut code = vec![0xbf, 2, 0, 0, 0, 0x48, 0xc7, 0xc6];
        code.extend_from_slice(&((DATA * 4096) as u32).to_le_bytes());
        code.extend_from_slice(&[0x48, 0xc7, 0xc0]);
        code.extend_from_slice(&(stub as u32).to_le_bytes());
        code.extend_from_slice(&[0xff, 0xd0, 0xeb, 0xfe]);
        let c = 5 * PAGE_SIZE;
        b[c..c + code.len()].copy_from_slice(&code);
        // struct sched_shutdown { reason = SHUTDOWN_reboot }
        let d = 6 * PAGE_SIZE;
        b[d..d + 4].copy_from_slice(&ShutdownReason::Reboot.code().to_le_bytes());
    }
    step(
        "init_hypercall_page",
        xen.init_hypercall_page(dom, mfns[HYPERCALL_PAGE as usize]),
    )?;
    {
        let m = step(
            "map_foreign (hypercall page)",
            xen.map_foreign(dom, &[mfns[HYPERCALL_PAGE as usize]]),
        )?;
        check(
            m.bytes().iter().any(|b| *b != 0),
            "hypercall page still empty".into(),
        )?;
    }
    println!("SMOKE hypercall_page ok");

    let grant = GrantEntry {
        gref: 1,
        backend: DomId::DOM0,
        frame: mfns[RING as usize],
    };
    step("seed_grant_table", xen.seed_grant_table(dom, &[grant]))?;
    let (flags, domid, frame) = step("grant_entry", xen.grant_entry(dom, 1))?;
    check(
        flags == 1 && domid == 0 && frame as u64 == mfns[RING as usize],
        format!("grant entry 1 reads flags {flags} domid {domid} frame {frame:#x}"),
    )?;
    println!("SMOKE seed_grant_table ok gref 1 -> frame {frame:#x} for dom0");

    step(
        "pin_page_table",
        xen.pin_page_table(dom, PageTableLevel::L4, mfns[L4 as usize]),
    )?;
    println!("SMOKE pin L4 ok mfn {:#x}", mfns[L4 as usize]);

    let ctx = VcpuContext::Pv {
        rip: CODE * 4096,
        rsp: (DATA + 1) * 4096,
        rsi: 0,
        cr3_mfn: mfns[L4 as usize],
    };
    step("set_vcpu_context", xen.set_vcpu_context(dom, 0, &ctx))?;
    let info = step("domain_info", xen.domain_info(dom))?;
    check(
        info.online_vcpus == 1,
        format!("online_vcpus {}", info.online_vcpus),
    )?;
    println!("SMOKE set_vcpu_context ok online_vcpus 1");
    Ok(())
}

/// A second, empty domain shut down from outside.
fn second_domain_shutdown(xen: &XenHypervisor) -> Res<()> {
    let dom = step("create_domain (2nd)", xen.create_domain(&create_args(0xc5)))?;
    let r = (|| {
        step(
            "shutdown_domain",
            xen.shutdown_domain(dom, ShutdownReason::Poweroff),
        )?;
        let info = step("domain_info", xen.domain_info(dom))?;
        check(
            info.shutdown == Some(ShutdownReason::Poweroff),
            format!("shutdown reads {:?}", info.shutdown),
        )
    })();
    let destroyed = xen.destroy_domain(dom);
    r?;
    step("destroy_domain (2nd)", destroyed)?;
    println!("SMOKE shutdown ok dom {dom} reported Poweroff");
    Ok(())
}

/// A PVH guest whose 8 bytes of 32-bit code store %ebx (from the vcpu context) to memory and
/// then fault (ud2 without an IDT: Xen shuts the domain down).
fn pvh_guest(xen: &XenHypervisor) -> Res<()> {
    let mut args = create_args(0xc6);
    args.kind = GuestKind::Pvh;
    let dom = step("create_domain (pvh)", xen.create_domain(&args))?;
    let r = (|| -> Res<()> {
        step("set_max_mem (pvh)", xen.set_max_mem(dom, PAGES * 4))?;
        // libxl's pool for one vcpu: 256 pages and one per MiB.
        step(
            "set_paging_pool (pvh)",
            xen.set_paging_pool(dom, (256 + 1) * 4096),
        )?;
        step(
            "set_tsc_mode (pvh)",
            xen.set_tsc_mode(dom, libchaos::hypervisor::TscMode::Native),
        )?;
        step(
            "set_hvm_param (pvh)",
            xen.set_hvm_param(dom, 1 /* HVM_PARAM_STORE_PFN */, PAGES - 1),
        )?;
        println!("SMOKE pvh paging pool, tsc mode and an HVM param set");
        let gfns: Vec<u64> = (0..PAGES).collect();
        step("populate_physmap (pvh)", xen.populate_physmap(dom, &gfns))?;
        {
            let mut m = step("map_foreign (pvh)", xen.map_foreign(dom, &[0x10]))?;
            // mov [0x20000], ebx ; ud2
            m.bytes_mut()[..8].copy_from_slice(&[0x89, 0x1d, 0x00, 0x00, 0x02, 0x00, 0x0f, 0x0b]);
        }
        let ctx = VcpuContext::Pvh {
            rip: 0x10000,
            rbx: 0xc0ffee,
        };
        step("set_vcpu_context (pvh)", xen.set_vcpu_context(dom, 0, &ctx))?;
        let online = step("domain_info", xen.domain_info(dom))?.online_vcpus;
        println!("SMOKE pvh context ok online_vcpus {online}");
        step("unpause_domain (pvh)", xen.unpause_domain(dom))?;
        wait_until("the PVH guest to stop", 20, || {
            Ok(step("domain_info", xen.domain_info(dom))?
                .shutdown
                .is_some())
        })?;
        let info = step("domain_info", xen.domain_info(dom))?;
        let m = step("map_foreign (pvh)", xen.map_foreign(dom, &[0x20]))?;
        let ebx = u32::from_le_bytes(m.bytes()[..4].try_into().unwrap_or_default());
        check(
            ebx == 0xc0ffee,
            format!("PVH guest stored {ebx:#x}, expected 0xc0ffee"),
        )?;
        println!(
            "SMOKE pvh ok guest ran from rip 0x10000 and stored ebx {ebx:#x}; then {:?}",
            info.shutdown
        );
        Ok(())
    })();
    let destroyed = xen.destroy_domain(dom);
    r?;
    step("destroy_domain (pvh)", destroyed)?;
    Ok(())
}
