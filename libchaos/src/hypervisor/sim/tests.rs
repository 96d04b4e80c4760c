//! The simulated host keeps Xen's rules.

use super::*;
use crate::hypervisor::{CreateDomain, Hypervisor};

fn create(sim: &SimHypervisor) -> DomId {
    sim.create_domain(&CreateDomain {
        kind: GuestKind::Pv,
        handle: Uuid([1; 16]),
        max_vcpus: 1,
        max_evtchn_port: 1023,
        max_grant_frames: 4,
        max_maptrack_frames: 0,
    })
    .expect("create")
}

#[test]
fn memory_is_accounted_and_returned() {
    let sim = SimHypervisor::new(SimConfig::default());
    let free = sim.free_pages();
    let dom = create(&sim);
    sim.set_max_mem(dom, 1024).expect("max_mem");
    let mfns = sim.populate_physmap(dom, &[0, 1, 2]).expect("populate");
    assert_eq!(mfns.len(), 3);
    assert_eq!(sim.free_pages(), free - 4);
    sim.destroy_domain(dom).expect("destroy");
    assert_eq!(sim.free_pages(), free);
    assert_eq!(sim.guest_count(), 0);
}

#[test]
fn populate_beyond_max_mem_or_host_is_refused() {
    let sim = SimHypervisor::new(SimConfig {
        host_mib: 8,
        dom0_mib: 4,
        nr_cpus: 1,
    });
    let dom = create(&sim);
    sim.set_max_mem(dom, 8 * 1024).expect("max_mem");
    let too_many: Vec<u64> = (0..1024).collect();
    let err = sim.populate_physmap(dom, &too_many).unwrap_err();
    assert!(matches!(err, HypervisorError::OutOfMemory { .. }), "{err}");
    sim.set_max_mem(dom, 4).expect("max_mem");
    let err = sim.populate_physmap(dom, &[0, 1]).unwrap_err();
    assert!(matches!(err, HypervisorError::OutOfMemory { .. }), "{err}");
}

#[test]
fn mapping_writes_back_and_unpopulated_frames_are_refused() {
    let sim = SimHypervisor::new(SimConfig::default());
    let dom = create(&sim);
    sim.set_max_mem(dom, 1024).expect("max_mem");
    let mfns = sim.populate_physmap(dom, &[5, 6]).expect("populate");
    {
        // A PV guest's frames are mapped by machine frame number.
        let mut m = sim.map_foreign(dom, &[mfns[1]]).expect("map");
        m.bytes_mut()[10] = 0xaa;
    }
    assert_eq!(sim.guest_frame(dom, 6).expect("frame")[10], 0xaa);
    assert_eq!(sim.guest_frame(dom, 5).expect("frame")[10], 0);
    assert!(sim.map_foreign(dom, &[6]).is_err(), "a pfn is not an mfn");
    assert!(
        sim.map_foreign(dom, &[mfns[1] + 1]).is_err(),
        "not this guest's frame"
    );
    let shared_info = sim.domain_info(dom).expect("info").shared_info_frame;
    assert!(
        sim.map_foreign(dom, &[shared_info]).is_ok(),
        "shared info is mappable"
    );
}

#[test]
fn unpause_needs_a_vcpu_context_on_a_pinned_l4() {
    let sim = SimHypervisor::new(SimConfig::default());
    let dom = create(&sim);
    assert!(sim.unpause_domain(dom).is_err());
    sim.set_max_mem(dom, 1024).expect("max_mem");
    sim.set_address_size(dom, 64).expect("address size");
    let mfn = sim.populate_physmap(dom, &[0]).expect("populate")[0];
    let ctx = VcpuContext::Pv {
        rip: 0x1000,
        rsp: 0x2000,
        rsi: 0x3000,
        cr3_mfn: mfn,
    };
    assert!(sim.set_vcpu_context(dom, 0, &ctx).is_err(), "L4 not pinned");
    sim.pin_page_table(dom, PageTableLevel::L4, mfn)
        .expect("pin");
    sim.set_vcpu_context(dom, 0, &ctx).expect("context");
    sim.unpause_domain(dom).expect("unpause");
    assert!(!sim.domain_info(dom).expect("info").paused);
}

#[test]
fn faults_fire_at_the_chosen_call() {
    let sim = SimHypervisor::new(SimConfig::default());
    sim.arm(Fault::Op {
        name: "XEN_DOMCTL_createdomain",
        nth: 1,
    });
    create(&sim);
    let err = sim
        .create_domain(&CreateDomain {
            kind: GuestKind::Pv,
            handle: Uuid::NIL,
            max_vcpus: 1,
            max_evtchn_port: 1,
            max_grant_frames: 1,
            max_maptrack_frames: 0,
        })
        .unwrap_err();
    assert!(matches!(err, HypervisorError::Injected { .. }));
    sim.arm(Fault::Call(0));
    assert!(sim.physinfo().is_err());
    assert!(sim.physinfo().is_ok());
}

#[test]
fn a_saved_host_loads_back() {
    let dir = std::env::temp_dir().join(format!("chaos-sim-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let path = dir.join("sim.json");
    let sim = SimHypervisor::new(SimConfig::default());
    let dom = create(&sim);
    sim.set_max_mem(dom, 4096).expect("max_mem");
    let mfns = sim.populate_physmap(dom, &[0, 1, 2, 9]).expect("populate");
    sim.evtchn_alloc_unbound(dom, DomId::DOM0).expect("evtchn");
    sim.save(&path).expect("save");
    let back = SimHypervisor::load_or_new(&path, SimConfig::default()).expect("load");
    assert_eq!(back.free_pages(), sim.free_pages());
    assert_eq!(
        back.domain_info(dom).expect("info"),
        sim.domain_info(dom).expect("info")
    );
    assert_eq!(back.gfn_of(dom, mfns[3]), Some(9));
    assert_eq!(back.evtchns(dom), sim.evtchns(dom));
    let next = create(&back);
    assert_ne!(next, dom);
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn event_channels_are_per_domain_and_freed_with_it() {
    let sim = SimHypervisor::new(SimConfig::default());
    let dom = create(&sim);
    let a = sim.evtchn_alloc_unbound(dom, DomId::DOM0).expect("evtchn");
    let b = sim.evtchn_alloc_unbound(dom, DomId::DOM0).expect("evtchn");
    assert_ne!(a, b);
    assert_eq!(sim.total_evtchns(), 2);
    sim.destroy_domain(dom).expect("destroy");
    assert_eq!(sim.total_evtchns(), 0);
}
