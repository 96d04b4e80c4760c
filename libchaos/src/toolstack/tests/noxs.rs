//! NoXS guests: created, shut down and destroyed with no Xenstore entry, the device page and
//! the sysctl control page written as noxs/ABI.md says, rolled back at any failure.

use super::*;
use crate::hypervisor::{DomId, Hypervisor, Uuid};
use crate::plane::DeviceKind;
use crate::testing::RecordingBackend;
use crate::toolstack::FinishAhead;

fn noxs_config(w: &World, name: &str, extra: &str) -> DomainConfig {
    let text = format!(
        "name = \"{name}\"\nkernel = \"{}\"\nmemory = 16\nchaos_control_plane = \"noxs\"\n{extra}\n",
        w.noxs_kernel.display()
    );
    parse_xl(&text, "test.cfg", &[])
        .expect("valid config")
        .config
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn attached(b: &RecordingBackend) -> Vec<DomId> {
    b.attached.lock().expect("lock").clone()
}

/// Writes into a guest frame (by mfn) as the guest would.
fn guest_writes(w: &World, dom: DomId, mfn: u64, f: impl FnOnce(&mut [u8])) {
    let mut m = w.sim.map_foreign(dom, &[mfn]).expect("map");
    f(m.bytes_mut());
}

/// The guest listens on its sysctl device for poweroff and reboot (ABI 4.1).
fn listen(w: &World, dom: DomId) {
    let record = w.ts.state().load(dom).expect("load").expect("record");
    let sysctl = record.devices[0];
    guest_writes(w, dom, sysctl.frame, |b| {
        let mut c = ::noxs::SysctlCtrl::read_from(b);
        c.fe_features = ::noxs::sysctl::POWEROFF | ::noxs::sysctl::REBOOT;
        c.hdr.fe_state = ::noxs::state::CONNECTED;
        c.write_to(b);
    });
}

#[test]
fn a_noxs_guest_has_a_device_page_and_no_xenstore_entry() {
    let w = world("noxs-create");
    let before = leftovers(&w);
    let cfg = noxs_config(&w, "nx", "");
    let created = w.ts.create(&cfg, true).expect("create");
    let dom = created.domid;
    assert_eq!(w.xs.paths(), before.xenstore_paths, "no Xenstore entry");
    assert!(w.xs.introduced_domains().is_empty(), "no introduction");
    assert!(created.timings.get("introduce").is_none());
    assert_eq!(attached(&w.backend), vec![dom], "the backend was told");

    let record = w.ts.state().load(dom).expect("load").expect("record");
    assert_eq!(record.store.evtchn, 0);
    assert_eq!(record.devices.len(), 1);
    let sysctl = record.devices[0];
    assert_eq!((sysctl.kind, sysctl.id), (DeviceKind::Sysctl, 0));

    // The device page: version 2, one sysctl entry naming its control page's pfn and the
    // guest's own port, with the guest-frame and guest-port flags.
    let page = w
        .sim
        .machine_frame(dom, record.store.frame)
        .expect("device page");
    let dp = ::noxs::DevPage::read_from(&page);
    assert_eq!((dp.version, dp.dev_count), (2, 1));
    let e = dp.devs[0];
    assert_eq!(e.dev_type, ::noxs::DevType::Sysctl as u32);
    assert_eq!(
        e.flags,
        ::noxs::ENTRY_GUEST_FRAME | ::noxs::ENTRY_GUEST_PORT
    );
    assert_eq!(e.comm.evtchn, sysctl.evtchn);
    assert_eq!(
        Some(u64::from(e.comm.grant)),
        w.sim.gfn_of(dom, sysctl.frame),
        "ctrl is the control page's pfn"
    );
    assert_eq!(
        w.sim.evtchns(dom).iter().find(|(p, _)| *p == sysctl.evtchn),
        Some(&(sysctl.evtchn, DomId::DOM0)),
        "the sysctl port is the guest's, toward dom0"
    );
    let ctrl = ::noxs::SysctlCtrl::read_from(&w.sim.machine_frame(dom, sysctl.frame).unwrap());
    assert_eq!(ctrl.hdr.be_state, ::noxs::state::CONNECTED);
    assert_eq!(ctrl.request, 0);

    // start_info (the page before the device page): SIF_NOXS, the device page in the store
    // slot, no store channel.
    let pfn = w.sim.gfn_of(dom, record.store.frame).expect("pfn");
    let si = w.sim.guest_frame(dom, pfn - 1).expect("start_info");
    assert_eq!(&si[..14], b"xen-3.0-x86_64");
    assert_ne!(u32_at(&si, 48) & ::noxs::SIF_NOXS, 0);
    assert_eq!(
        u64::from(u32_at(&si, 56)) | (u64::from(u32_at(&si, 60)) << 32),
        record.store.frame
    );
    assert_eq!(u32_at(&si, 64), 0);
    // No Xenstore grant: only the console ring is granted to dom0.
    assert_eq!(w.sim.grant_entries(dom).len(), 1);

    // The backend's record, for a xendevd that restarts.
    let records = xendevd_api::RecordDir::open(w.ts.state().root().join("noxs")).unwrap();
    let r = records.load(dom).unwrap().expect("backend record");
    assert_eq!(
        (r.name.as_str(), r.console.evtchn),
        ("nx", record.console.evtchn)
    );

    w.ts.destroy(dom).expect("destroy");
    assert_eq!(leftovers(&w), before);
}

#[test]
fn shutdown_and_reboot_go_through_the_sysctl_page_and_its_channel() {
    let w = world("noxs-shutdown");
    let before = leftovers(&w);
    let cfg = noxs_config(&w, "nx", "on_reboot = \"restart\"");
    let dom = w.ts.create(&cfg, false).expect("create").domid;
    let err =
        w.ts.shutdown(dom, ShutdownKind::Poweroff, None)
            .unwrap_err();
    assert!(err.to_string().contains("does not listen"), "{err}");

    listen(&w, dom);
    let record = w.ts.state().load(dom).expect("load").expect("record");
    let sysctl = record.devices[0];
    w.ts.shutdown(dom, ShutdownKind::Reboot, None)
        .expect("reboot");
    let ctrl = ::noxs::SysctlCtrl::read_from(&w.sim.machine_frame(dom, sysctl.frame).unwrap());
    assert_eq!(ctrl.request, ::noxs::sysctl::REBOOT);
    assert_eq!(ctrl.hdr.be_watch_state, ::noxs::WatchState::Updated as u32);
    assert_eq!(
        ctrl.fe_features,
        ::noxs::sysctl::POWEROFF | ::noxs::sysctl::REBOOT,
        "untouched"
    );
    assert_eq!(w.sim.notifications(dom, sysctl.evtchn), 1);

    // The guest obeys; the reaper restarts it (on_reboot = restart), as a NoXS guest again.
    w.sim
        .guest_shutdown(dom, ShutdownReason::Reboot)
        .expect("guest shuts down");
    assert_eq!(w.ts.reap().expect("reap"), vec![(dom, Action::Restart)]);
    let again = w.ts.resolve("nx").expect("restarted");
    assert_ne!(again, dom);
    assert_eq!(attached(&w.backend), vec![again]);

    listen(&w, again);
    w.ts.shutdown(again, ShutdownKind::Poweroff, None)
        .expect("poweroff");
    w.sim
        .guest_shutdown(again, ShutdownReason::Poweroff)
        .expect("guest shuts down");
    assert_eq!(w.ts.reap().expect("reap"), vec![(again, Action::Destroy)]);
    assert_eq!(leftovers(&w), before);
}

#[test]
fn a_failure_at_any_hypervisor_call_of_a_noxs_creation_rolls_back_everything() {
    let w = world("noxs-rollback");
    let cfg = noxs_config(&w, "fragile", "");
    let before = leftovers(&w);
    w.sim.arm(Fault::Call(u64::MAX));
    let ok = w.ts.create(&cfg, false).expect("create");
    let calls = w.sim.calls();
    w.ts.destroy(ok.domid).expect("destroy");
    assert_eq!(leftovers(&w), before);
    for n in 0..calls {
        w.sim.arm(Fault::Call(n));
        let result = w.ts.create(&cfg, false);
        w.sim.disarm();
        match result {
            Err(_) => assert_eq!(leftovers(&w), before, "after a failure at call {n}"),
            Ok(c) => panic!("creation survived a failure at call {n}: {c:?}"),
        }
    }
}

#[test]
fn a_backend_that_refuses_the_guest_rolls_the_creation_back() {
    let w = world("noxs-refused");
    let before = leftovers(&w);
    *w.backend.refuse.lock().unwrap() = Some("xendevd is not running".into());
    let err = w.ts.create(&noxs_config(&w, "nx", ""), false).unwrap_err();
    assert!(err.to_string().contains("xendevd is not running"), "{err}");
    assert_eq!(leftovers(&w), before);
}

#[test]
fn noxs_guests_need_no_xenstored() {
    let w = world("noxs-no-xs");
    let ts = Toolstack::new(w.sim.clone(), None, w.ts.state().clone())
        .with_noxs_backend(Box::new(crate::testing::SharedBackend(w.backend.clone())));
    let dom = ts
        .create(&noxs_config(&w, "alone", ""), true)
        .expect("create")
        .domid;
    let listed = ts.list().expect("list");
    assert!(listed.iter().any(|d| d.domid == dom && d.name == "alone"));
    assert_eq!(ts.resolve("alone").expect("resolve"), dom);
    // A Xenstore guest cannot be made here, and says why.
    let err = ts.create(&config(&w, "xs", ""), true).unwrap_err();
    assert!(err.to_string().contains("xenstored"), "{err}");
    ts.destroy(dom).expect("destroy");
    assert!(ts.list().expect("list").iter().all(|d| d.domid != dom));
}

#[test]
fn noxs_vifs_get_a_control_page_a_channel_and_a_backend_record() {
    let w = world("noxs-vif");
    let before = leftovers(&w);
    let cfg = noxs_config(
        &w,
        "nx",
        "vif = ['mac=00:16:3e:01:02:03,bridge=br1,ip=10.0.0.2/24', '']",
    );
    let dom = w.ts.create(&cfg, true).expect("create").domid;
    let record = w.ts.state().load(dom).expect("load").expect("record");
    let kinds: Vec<(DeviceKind, u32)> = record.devices.iter().map(|d| (d.kind, d.id)).collect();
    assert_eq!(
        kinds,
        vec![
            (DeviceKind::Sysctl, 0),
            (DeviceKind::Vif, 0),
            (DeviceKind::Vif, 1)
        ]
    );
    let vif0 = record.devices[1];
    let ctrl = ::noxs::VifCtrl::read_from(&w.sim.machine_frame(dom, vif0.frame).unwrap());
    assert_eq!(ctrl.mac, [0, 0x16, 0x3e, 1, 2, 3]);
    assert_eq!(
        (ctrl.ipv4, ctrl.ipv4_prefix, ctrl.mtu),
        ([10, 0, 0, 2], 24, 1500)
    );
    assert_eq!(ctrl.hdr.be_state, ::noxs::state::INITIALISING);
    // The second vif got a random Xen MAC, the same in its page and its record.
    let vif1 = record.devices[2];
    let ctrl1 = ::noxs::VifCtrl::read_from(&w.sim.machine_frame(dom, vif1.frame).unwrap());
    assert_eq!(ctrl1.mac[..3], [0, 0x16, 0x3e]);
    assert_eq!(Some(xen_types::Mac(ctrl1.mac)), record.config.vifs[1].mac);
    assert_ne!(vif0.evtchn, vif1.evtchn);
    // The device page lists all three, in that order.
    let dp = ::noxs::DevPage::read_from(&w.sim.machine_frame(dom, record.store.frame).unwrap());
    assert_eq!(dp.dev_count, 3);
    assert_eq!(dp.devs[1].dev_type, ::noxs::DevType::Vif as u32);
    assert_eq!(dp.devs[2].comm.evtchn, vif1.evtchn);
    // xendevd's record says where the vifs are.
    let records = xendevd_api::RecordDir::open(w.ts.state().root().join("noxs")).unwrap();
    let r = records.load(dom).unwrap().expect("backend record");
    assert_eq!(r.vifs.len(), 2);
    assert_eq!(
        (r.vifs[0].ctrl_frame, r.vifs[0].evtchn),
        (vif0.frame, vif0.evtchn)
    );
    assert_eq!(r.vifs[0].bridge, "br1");
    assert_eq!(r.vifs[0].ip.as_deref(), Some("10.0.0.2/24"));
    // Each vif's control page is granted to dom0 under its reserved reference, and the
    // record names it: xendevd maps it with gntdev.
    assert_eq!(
        (r.vifs[0].ctrl_gref, r.vifs[1].ctrl_gref),
        (::noxs::VIF_CTRL_GREF_FIRST, ::noxs::VIF_CTRL_GREF_FIRST + 1)
    );
    let mut grants = w.sim.grant_entries(dom);
    grants.sort_by_key(|g| g.gref);
    let granted: Vec<(u32, DomId, u64)> = grants
        .iter()
        .map(|g| (g.gref, g.backend, g.frame))
        .collect();
    assert_eq!(
        granted,
        vec![
            (0, DomId::DOM0, record.console.frame),
            (2, DomId::DOM0, vif0.frame),
            (3, DomId::DOM0, vif1.frame)
        ]
    );
    assert_eq!((vif0.gref, record.devices[0].gref), (Some(2), None));
    w.ts.destroy(dom).expect("destroy");
    assert_eq!(leftovers(&w), before);
}

#[test]
fn a_noxs_guest_with_more_vifs_than_reserved_grants_is_refused_before_anything_is_made() {
    let w = world("noxs-vif-max");
    let before = leftovers(&w);
    let vifs = ["'bridge=xenbr0'"; ::noxs::VIF_MAX + 1].join(", ");
    let cfg = noxs_config(&w, "many", &format!("vif = [{vifs}]"));
    let err = w.ts.check_creatable(&cfg).unwrap_err();
    assert!(err.to_string().contains("at most 6"), "{err}");
    let err = w.ts.create(&cfg, true).unwrap_err();
    assert!(err.to_string().contains("7 vifs"), "{err}");
    assert_eq!(leftovers(&w), before);
    // Six are fine.
    let vifs = ["'bridge=xenbr0'"; ::noxs::VIF_MAX].join(", ");
    let cfg = noxs_config(&w, "six", &format!("vif = [{vifs}]"));
    let dom = w.ts.create(&cfg, true).expect("create").domid;
    assert_eq!(w.sim.grant_entries(dom).len(), 1 + ::noxs::VIF_MAX);
    w.ts.destroy(dom).expect("destroy");
    assert_eq!(leftovers(&w), before);
}

#[test]
fn on_xen_with_the_devctl_patch_the_devices_go_in_xens_page() {
    let w = world("noxs-devctl");
    w.sim.set_devctl(true);
    let before = leftovers(&w);
    let created =
        w.ts.create(&noxs_config(&w, "nx", ""), true)
            .expect("create");
    let dom = created.domid;
    assert!(created.timings.get("devctl").is_some());
    let record = w.ts.state().load(dom).expect("load").expect("record");
    let sysctl = record.devices[0];
    let page = w.sim.devctl_enum(dom).expect("Xen's page");
    assert_eq!(page.dev_count, 1);
    let e = page.devs[0];
    assert_eq!(e.dev_type, ::noxs::DevType::Sysctl as u32);
    assert_eq!(
        e.flags,
        ::noxs::ENTRY_GUEST_FRAME | ::noxs::ENTRY_GUEST_PORT
    );
    assert_eq!(
        Some(u64::from(e.comm.grant)),
        w.sim.gfn_of(dom, sysctl.frame)
    );
    assert_eq!(e.comm.evtchn, sysctl.evtchn);
    // No page of the toolstack's: no SIF_NOXS, nothing in the store slot.
    assert_eq!(record.store.frame, 0);
    let si = start_info(&w, dom);
    assert_eq!(&si[..14], b"xen-3.0-x86_64");
    assert_eq!(u32_at(&si, 48) & ::noxs::SIF_NOXS, 0);
    assert_eq!(
        (u32_at(&si, 56), u32_at(&si, 60), u32_at(&si, 64)),
        (0, 0, 0)
    );
    w.ts.destroy(dom).expect("destroy");
    assert_eq!(leftovers(&w), before);

    // Any failure, the hypercall's included, rolls back.
    let cfg = noxs_config(&w, "fragile", "");
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
fn a_creation_counts_its_xenstore_requests_and_a_noxs_one_makes_none() {
    let w = world("noxs-costs");
    let noxs =
        w.ts.create(&noxs_config(&w, "nx", ""), true)
            .expect("create");
    assert_eq!(noxs.costs.xenstore_requests, 0, "{:?}", noxs.costs);
    let xs = w.ts.create(&config(&w, "xs", ""), true).expect("create");
    assert!(xs.costs.xenstore_requests > 0, "{:?}", xs.costs);
    // A pooled creation counts only what execute did.
    let shell =
        w.ts.prepare(&Flavor::of(&config(&w, "p", "")))
            .expect("prepare");
    let pooled =
        w.ts.execute_pooled(shell, &config(&w, "p", ""), true)
            .expect("execute");
    assert!(pooled.costs.xenstore_requests > 0);
    assert!(pooled.costs.xenstore_requests <= xs.costs.xenstore_requests);
}

/// Warm shells (the image built in at prepare): a failure at any hypervisor call of the
/// preparation or of the execution leaves nothing behind, NoXS devices included.
#[test]
fn a_failure_at_any_hypervisor_call_of_a_warm_creation_rolls_back_everything() {
    let w = world("warm-rollback");
    let cfg = noxs_config(&w, "warm", "");
    let warm = Flavor::warm_of(&cfg).expect("a PV guest has a warm flavor");
    let before = leftovers(&w);
    w.sim.arm(Fault::Call(u64::MAX));
    let shell = w.ts.prepare(&warm).expect("prepare");
    let ok = w.ts.execute(shell, &cfg, false).expect("execute");
    let calls = w.sim.calls();
    w.ts.destroy(ok.domid).expect("destroy");
    assert_eq!(leftovers(&w), before);
    for n in 0..calls {
        w.sim.arm(Fault::Call(n));
        let result =
            w.ts.prepare(&warm)
                .and_then(|shell| w.ts.execute(shell, &cfg, false));
        w.sim.disarm();
        match result {
            Err(_) => assert_eq!(leftovers(&w), before, "after a failure at call {n}"),
            Ok(c) => panic!("creation survived a failure at call {n}: {c:?}"),
        }
    }
}

/// A NoXS guest's start_info page: 3 pages before its first control page (start_info, store,
/// console, then the control pages).
fn start_info(w: &World, dom: DomId) -> Vec<u8> {
    let record = w.ts.state().load(dom).expect("load").expect("record");
    let ctrl_pfn = w
        .sim
        .gfn_of(dom, record.devices[0].frame)
        .expect("control page");
    w.sim.guest_frame(dom, ctrl_pfn - 3).expect("start_info")
}

/// A warm flavor of `cfg` and what chaosd would finish its shells ahead with.
fn ahead_of(cfg: &DomainConfig) -> (Flavor, FinishAhead) {
    let warm = Flavor::warm_of(cfg).expect("warm flavor");
    (warm, FinishAhead::of(cfg).expect("no vifs: finished ahead"))
}

/// The NoXS record xendevd would read for `dom`.
fn noxs_record(w: &World, dom: DomId) -> Option<xendevd_api::NoxsGuest> {
    xendevd_api::RecordDir::at(w.ts.state().root().join("noxs"))
        .load(dom)
        .expect("record readable")
}

/// A warm NoXS shell finished ahead for its flavor's config (chaosd's warm shells): its guest
/// half is written and its console served at prepare, before any guest; a guest of that config
/// costs execute no build hypercall and no attach, only its guest record (xendevd reads the name there).
#[test]
fn a_noxs_shell_finished_ahead_serves_its_console_before_its_guest_is_named() {
    let w = world("ahead");
    let before = leftovers(&w);
    let cfg = noxs_config(&w, "ahead", "");
    let (warm, ahead) = ahead_of(&cfg);
    // What execute costs a warm shell that was not finished ahead.
    let plain = w.ts.prepare(&warm).expect("prepare");
    let calls = w.sim.calls();
    let created = w.ts.execute(plain, &cfg, true).expect("execute");
    let warm_calls = w.sim.calls() - calls;
    w.ts.destroy(created.domid).expect("destroy");

    let shell =
        w.ts.prepare_ahead(&warm, Uuid::NIL, Some(&ahead))
            .expect("prepare");
    let dom = shell.domid();
    assert!(
        w.sim.vcpu_context(dom, 0).is_some(),
        "finished before its guest"
    );
    assert_eq!(attached(&w.backend), vec![dom], "served before its guest");
    assert_eq!(
        noxs_record(&w, dom).expect("record").name,
        "",
        "not named yet"
    );

    let calls = w.sim.calls();
    let created = w.ts.execute(shell, &cfg, true).expect("execute");
    let ahead_calls = w.sim.calls() - calls;
    // No mapping of its pages, no grant table, no vcpu context: the handle is what is left.
    assert!(
        ahead_calls + 3 <= warm_calls,
        "{ahead_calls} hypervisor calls at execute, against {warm_calls} unfinished"
    );
    assert_eq!(attached(&w.backend), vec![dom], "attached once");
    // Its NoXS record is not written again: xendevd finds the name in the guest record.
    assert_eq!(noxs_record(&w, dom).expect("record").name, "");
    assert_eq!(
        xendevd_api::RecordDir::at(w.ts.state().root().join("noxs"))
            .guest_name(dom)
            .expect("guest record readable"),
        Some("ahead".to_string())
    );
    w.ts.destroy(created.domid).expect("destroy");
    assert_eq!(leftovers(&w), before);

    // A shell nobody uses lets go of its console when it is discarded.
    let shell =
        w.ts.prepare_ahead(&warm, Uuid::NIL, Some(&ahead))
            .expect("prepare");
    w.ts.discard(shell).expect("discard");
    assert_eq!(leftovers(&w), before);
}

/// A guest with another command line than the one a shell was finished ahead for gets its
/// guest half written at execute (and its console attached again, as for any guest).
#[test]
fn a_shell_finished_ahead_for_another_command_line_is_written_again() {
    let w = world("ahead-other");
    let before = leftovers(&w);
    let flavor_cfg = noxs_config(&w, "ahead", "");
    let (warm, ahead) = ahead_of(&flavor_cfg);
    let shell =
        w.ts.prepare_ahead(&warm, Uuid::NIL, Some(&ahead))
            .expect("prepare");
    let cfg = noxs_config(&w, "other", "extra = \"mode=other\"");
    let context = w.sim.vcpu_context(shell.domid(), 0);
    let created = w.ts.execute(shell, &cfg, true).expect("execute");
    assert_ne!(w.sim.vcpu_context(created.domid, 0), None, "vcpu 0 is set");
    assert_eq!(
        w.sim.vcpu_context(created.domid, 0),
        context,
        "the same registers"
    );
    // start_info holds the guest's own command line.
    assert_eq!(&start_info(&w, created.domid)[128..138], b"mode=other");
    assert_eq!(attached(&w.backend), vec![created.domid]);
    assert_eq!(
        noxs_record(&w, created.domid).expect("record").name,
        "other"
    );
    let record = w.ts.state().load(created.domid).expect("load");
    assert_eq!(record.expect("record").config.cmdline, "mode=other");
    w.ts.destroy(created.domid).expect("destroy");
    assert_eq!(leftovers(&w), before);
}

/// Finished ahead: a failure at any hypervisor call of the preparation or the execution
/// leaves nothing behind, the console's record and attachment included.
#[test]
fn a_failure_at_any_call_of_a_creation_finished_ahead_rolls_back_everything() {
    let w = world("ahead-rollback");
    let cfg = noxs_config(&w, "ahead", "");
    let (warm, ahead) = ahead_of(&cfg);
    let before = leftovers(&w);
    w.sim.arm(Fault::Call(u64::MAX));
    let shell =
        w.ts.prepare_ahead(&warm, Uuid::NIL, Some(&ahead))
            .expect("prepare");
    let ok = w.ts.execute(shell, &cfg, false).expect("execute");
    let calls = w.sim.calls();
    w.ts.destroy(ok.domid).expect("destroy");
    assert_eq!(leftovers(&w), before);
    for n in 0..calls {
        w.sim.arm(Fault::Call(n));
        let result =
            w.ts.prepare_ahead(&warm, Uuid::NIL, Some(&ahead))
                .and_then(|shell| w.ts.execute(shell, &cfg, false));
        w.sim.disarm();
        match result {
            Err(_) => assert_eq!(leftovers(&w), before, "after a failure at call {n}"),
            Ok(c) => panic!("creation survived a failure at call {n}: {c:?}"),
        }
    }
}

/// On a host whose xenstored holds VIRQ_DOM_EXC the reaper's sweep looks for a Xenstore-plane
/// guest (to be woken by `@releaseDomain`): it reads a NoXS guest's record once, not at every
/// sweep, and a new guest's record when it comes.
#[test]
fn the_reapers_sweep_reads_a_noxs_guests_record_once() {
    let w = world("sweep-planes");
    let nx =
        w.ts.create(&noxs_config(&w, "nx", ""), false)
            .expect("create");
    let mut seen = reaper::NoxsSeen::default();
    assert!(
        !w.ts.forget_vanished(Some(&mut seen)).expect("sweep"),
        "no Xenstore-plane guest yet"
    );
    // Read again, this record would say the guest is on the Xenstore plane.
    let path =
        w.ts.state()
            .root()
            .join("domains")
            .join(format!("{}.json", nx.domid.0));
    let text = std::fs::read_to_string(&path).expect("record");
    assert!(
        text.contains("\"noxs\""),
        "the record names its plane: {text}"
    );
    std::fs::write(&path, text.replace("\"noxs\"", "\"xenstore\"")).expect("rewrite");
    assert!(
        !w.ts.forget_vanished(Some(&mut seen)).expect("sweep"),
        "the NoXS guest's record is not read twice"
    );
    let xs = w.ts.create(&config(&w, "xs", ""), false).expect("create");
    assert!(
        w.ts.forget_vanished(Some(&mut seen)).expect("sweep"),
        "a new guest's record is read"
    );
    assert!(
        !w.ts.forget_vanished(None).expect("sweep"),
        "planes not asked for"
    );
    w.ts.destroy(xs.domid).expect("destroy");
    w.ts.destroy(nx.domid).expect("destroy");
}
