//! PVH guests through the toolstack: the domain, its paging pool and TSC mode, the PVH boot
//! state and HVM params, and the same Xenstore plane (rings named by guest frame) with a vif
//! and a disk; destroy and rollback leave nothing, the pool's memory included.

use super::*;
use crate::config::TscMode;
use crate::hypervisor::{VcpuContext, PAGE_SIZE};
use crate::image::notes::XEN_ELFNOTE_PHYS32_ENTRY;
use crate::image::testelf::{num, TestElf};
use crate::plane::xenstore::{vbd_backend_path, vbd_frontend_path, vif_backend_path};

/// A PVH kernel (only a PHYS32_ENTRY note) at 1 MiB, written next to the world's kernels.
fn pvh_kernel(w: &World) -> std::path::PathBuf {
    let mut t = TestElf::pv(0, 0x10_0000, 0x2000, 0x1000);
    t.notes = vec![num(XEN_ELFNOTE_PHYS32_ENTRY, 0x10_0040)];
    let path = w.scratch.0.join("pvh.elf");
    std::fs::write(&path, t.build()).expect("write kernel");
    path
}

fn pvh_config(w: &World, name: &str, extra: &str) -> DomainConfig {
    let text = format!(
        "name = \"{name}\"\ntype = \"pvh\"\ntsc_mode = \"native\"\nkernel = \"{}\"\nmemory = 16\n{extra}\n",
        pvh_kernel(w).display()
    );
    parse_xl(&text, "pvh.cfg", &[])
        .expect("valid config")
        .config
}

const DEVICES: &str = "vif = ['bridge=xenbr0']\ndisk = ['/srv/root.img,raw,xvda,w']";

#[test]
fn a_pvh_guest_is_built_and_published_on_the_xenstore_plane() {
    let w = world("pvh-create");
    let created =
        w.ts.create(&pvh_config(&w, "pvh", DEVICES), true)
            .expect("create");
    let d = created.domid;
    assert!(
        matches!(
            w.sim.vcpu_context(d, 0),
            Some(VcpuContext::Pvh { rip: 0x10_0040, .. })
        ),
        "{:?}",
        w.sim.vcpu_context(d, 0)
    );
    assert_eq!(w.sim.tsc_mode(d), Some(TscMode::Native));
    // libxl's pool for one vcpu and 16 MiB: 256 + 16 pages.
    assert_eq!(w.sim.paging_pool_pages(d), Some(256 + 16));
    // The rings are the guest's last two frames, named by guest frame everywhere.
    let nr_pages = 16 * 1024 * 1024 / PAGE_SIZE as u64;
    let (store, console) = (nr_pages - 2, nr_pages - 1);
    assert_eq!(w.sim.hvm_param(d, 1), Some(store));
    assert_eq!(w.sim.hvm_param(d, 17), Some(console));
    let dom = format!("/local/domain/{}", d.0);
    assert_eq!(
        read(&w, &format!("{dom}/store/ring-ref")),
        Some(store.to_string())
    );
    assert_eq!(
        read(&w, &format!("{dom}/console/ring-ref")),
        Some(console.to_string())
    );
    assert!(w.xs.introduced_domains().contains(&d));
    // The devices as for PV, except the block protocol PV frontends were given.
    assert_eq!(
        read(&w, &format!("{}/bridge", vif_backend_path(d, 0))).as_deref(),
        Some("xenbr0")
    );
    assert_eq!(
        read(&w, &format!("{}/params", vbd_backend_path(d, 51712))).as_deref(),
        Some("/srv/root.img")
    );
    assert_eq!(
        read(&w, &format!("{}/protocol", vbd_frontend_path(d, 51712))),
        None
    );
    let record = w.ts.state().load(d).expect("load").expect("record");
    assert_eq!(record.console.frame, console);
    assert_eq!(record.store.frame, store);
}

#[test]
fn destroying_a_pvh_guest_returns_its_pool_and_entries() {
    let w = world("pvh-destroy");
    let before = leftovers(&w);
    let created =
        w.ts.create(&pvh_config(&w, "pvh", ""), false)
            .expect("create");
    assert!(w.sim.free_pages() < before.free_pages - 4096 - 256);
    w.ts.destroy(created.domid).expect("destroy");
    assert_eq!(leftovers(&w), before);
}

#[test]
fn a_failure_at_any_call_of_a_pvh_creation_rolls_back_everything() {
    let w = world("pvh-rollback");
    let cfg = pvh_config(&w, "fragile", "vif = ['']");
    // Warm up the shared directories, then count the calls of one creation.
    let c = w.ts.create(&cfg, false).expect("create");
    w.ts.destroy(c.domid).expect("destroy");
    let before = leftovers(&w);
    w.sim.arm(Fault::Call(u64::MAX));
    let ok = w.ts.create(&cfg, false).expect("create");
    let calls = w.sim.calls();
    w.ts.destroy(ok.domid).expect("destroy");
    for n in 0..calls {
        w.sim.arm(Fault::Call(n));
        let result = w.ts.create(&cfg, false);
        w.sim.disarm();
        assert!(result.is_err(), "creation survived a failure at call {n}");
        assert_eq!(leftovers(&w), before, "after a failure at call {n}");
    }
}

#[test]
fn a_pvh_guest_that_does_not_fit_its_pool_is_refused_before_xen_is_touched() {
    // 16 MiB of guest and 272 pages of pool on a host of exactly 16 MiB free.
    let w = world_with(
        "pvh-oom",
        crate::hypervisor::sim::SimConfig {
            host_mib: 16 + 1,
            ..Default::default()
        },
    );
    let before = leftovers(&w);
    let err = w.ts.create(&pvh_config(&w, "big", ""), false).unwrap_err();
    assert!(matches!(err, ToolstackError::HostMemory { .. }), "{err}");
    assert_eq!(leftovers(&w), before);
}

#[test]
fn a_pv_kernel_as_pvh_is_refused_before_xen_is_touched() {
    let w = world("pvh-pvkernel");
    let before = leftovers(&w);
    w.sim.arm(Fault::Call(u64::MAX));
    let text = format!(
        "name = \"g\"\ntype = \"pvh\"\nkernel = \"{}\"\nmemory = 16\n",
        w.kernel.display()
    );
    let cfg = parse_xl(&text, "t.cfg", &[]).expect("config").config;
    let err = w.ts.create(&cfg, false).unwrap_err();
    assert!(err.to_string().contains("PHYS32_ENTRY"), "{err}");
    assert_eq!(w.sim.calls(), 0, "Xen was called");
    assert_eq!(leftovers(&w), before);
}

#[test]
fn native_paravirt_tsc_is_refused() {
    let w = world("pvh-tsc");
    let cfg = config(&w, "g", "tsc_mode = \"native_paravirt\"");
    let err = w.ts.create(&cfg, false).unwrap_err();
    assert!(err.to_string().contains("native_paravirt"), "{err}");
    // PV guests get their mode too.
    let c =
        w.ts.create(&config(&w, "pv", "tsc_mode = \"always_emulate\""), true)
            .expect("create");
    assert_eq!(w.sim.tsc_mode(c.domid), Some(TscMode::AlwaysEmulate));
    assert_eq!(w.sim.paging_pool_pages(c.domid), Some(0));
}
