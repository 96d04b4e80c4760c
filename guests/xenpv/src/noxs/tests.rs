use super::*;
use abi::DevPageEntry;

fn entry(ty: DevType, id: u32, ctrl: u32, port: u32) -> DevPageEntry {
    DevPageEntry::guest_owned(ty, id, 0, ctrl, port)
}

fn page(entries: &[DevPageEntry]) -> DevPage {
    let mut p = DevPage::new();
    for &e in entries {
        p.add(e).unwrap();
    }
    p
}

fn ok(_: u64) -> bool {
    true
}

#[test]
fn devices_come_in_slot_order_by_type() {
    let p = page(&[
        entry(DevType::Sysctl, 0, 0x101, 3),
        entry(DevType::Vif, 0, 0x102, 4),
        entry(DevType::Vif, 1, 0x103, 5),
    ]);
    let devs = parse(&p, Some(0x100), ok).unwrap();
    let all: Vec<Device> = devs.iter().collect();
    assert_eq!(all.len(), 3);
    assert_eq!(all[0].kind_name(), b"sysctl");
    let vif1 = devs.nth(DevType::Vif, 1).unwrap();
    assert_eq!((vif1.id, vif1.ctrl, vif1.evtchn), (1, 0x103, 5));
    assert_eq!(devs.nth(DevType::Vbd, 0), None);
}

#[test]
fn unknown_types_are_counted_but_ignored() {
    let mut p = page(&[entry(DevType::Sysctl, 0, 0x101, 3)]);
    p.devs[5] = DevPageEntry {
        dev_type: 9,
        ..entry(DevType::Vif, 0, 0, 0)
    };
    p.dev_count = 2;
    let devs = parse(&p, None, ok).unwrap();
    assert_eq!(devs.iter().count(), 1);
}

#[test]
fn bad_pages_are_refused_with_the_reason() {
    let good = page(&[
        entry(DevType::Sysctl, 0, 0x101, 3),
        entry(DevType::Vif, 0, 0x102, 4),
    ]);
    let check = |p: &DevPage| parse(p, Some(0x100), |f| f < 0x200).err();
    assert_eq!(check(&good), None);

    let mut p = good;
    p.version = 1;
    assert_eq!(check(&p), Some(PageError::Version(1)));
    let mut p = good;
    p.dev_count = 33;
    assert_eq!(check(&p), Some(PageError::TooMany(33)));
    let mut p = good;
    p.dev_count = 3;
    assert_eq!(check(&p), Some(PageError::Count { said: 3, found: 2 }));
    let mut p = good;
    p.devs[1].flags = 0;
    assert_eq!(check(&p), Some(PageError::NotGuestOwned(1)));
    let mut p = good;
    p.devs[0].comm.evtchn = 0;
    assert_eq!(check(&p), Some(PageError::NoPort(0)));
    let mut p = good;
    p.devs[1].comm.grant = 0x5000;
    assert_eq!(check(&p), Some(PageError::BadFrame(1, 0x5000)));
    let mut p = good;
    p.devs[1].comm.grant = 0x101;
    assert_eq!(check(&p), Some(PageError::SharedFrame(1)));
    let mut p = good;
    p.devs[0].comm.grant = 0x100;
    assert_eq!(check(&p), Some(PageError::SharedFrame(0)));
}

#[test]
fn every_refusal_has_a_message() {
    for e in [
        PageError::NotMapped(1),
        PageError::Version(1),
        PageError::TooMany(40),
        PageError::Count { said: 1, found: 2 },
        PageError::NotGuestOwned(3),
        PageError::NoPort(3),
        PageError::BadFrame(3, 9),
        PageError::SharedFrame(3),
    ] {
        let mut l = crate::line::Line::<200>::new();
        e.describe(&mut l);
        assert!(l.as_bytes().len() > 10, "{e:?}");
    }
}

#[test]
fn sysctl_listens_and_takes_one_request_at_a_time() {
    let page = Box::new(Page::new());
    // SAFETY: a private page standing in for the control page.
    let s = unsafe { Sysctl::over(page.as_ptr(), 7) };
    let ctrl = page.as_ptr().cast::<abi::SysctlCtrl>();
    s.listen(abi::sysctl::POWEROFF | abi::sysctl::REBOOT);
    // SAFETY: reading and writing the test's own page as the toolstack would.
    unsafe {
        assert_eq!((*ctrl).fe_features, 3);
        assert_eq!((*ctrl).hdr.fe_state, abi::state::CONNECTED);
        assert_eq!(s.take_request(), None);
        (*ctrl).request = abi::sysctl::REBOOT;
        (*ctrl).hdr.be_watch_state = 2;
        assert_eq!(s.take_request(), Some(abi::sysctl::REBOOT));
        assert_eq!(((*ctrl).request, (*ctrl).hdr.be_watch_state), (0, 0));
    }
    assert_eq!(s.take_request(), None);
}

#[test]
fn vif_reads_the_toolstacks_fields_and_publishes_ours() {
    let page = Box::new(Page::new());
    let ctrl = page.as_ptr().cast::<abi::VifCtrl>();
    // SAFETY: the test's own page, written as the toolstack would.
    unsafe {
        (*ctrl).mac = [0, 0x16, 0x3e, 1, 2, 3];
        (*ctrl).ipv4 = [10, 0, 0, 2];
        (*ctrl).hdr.be_state = abi::state::INIT_WAIT;
    }
    // SAFETY: a private page standing in for the control page.
    let vif = unsafe { Vif::over(page.as_ptr(), 0, 9) };
    assert_eq!(vif.mac(), [0, 0x16, 0x3e, 1, 2, 3]);
    assert_eq!(vif.ipv4(), Some([10, 0, 0, 2]));
    assert_eq!(vif.backend_state(), abi::state::INIT_WAIT);
    vif.connect(8, 9, 12);
    // SAFETY: reading back the test's page.
    let c = unsafe { *ctrl };
    assert_eq!((c.tx_ring_ref, c.rx_ring_ref), (8, 9));
    assert_eq!((c.evtchn_tx, c.evtchn_rx), (12, 12));
    assert_eq!(c.fe_features, abi::VIF_RX_COPY);
    assert_eq!(c.hdr.fe_watch_state, abi::WatchState::Requested as u32);
    assert_eq!(c.hdr.fe_state, abi::state::CONNECTED);
    // SAFETY: as above.
    unsafe { (*ctrl).ipv4 = [0; 4] };
    assert_eq!(vif.ipv4(), None);
}

#[test]
fn request_bits_map_to_shutdown_reasons() {
    assert_eq!(
        request_reason(abi::sysctl::POWEROFF),
        Some(Shutdown::Poweroff)
    );
    assert_eq!(request_reason(abi::sysctl::REBOOT), Some(Shutdown::Reboot));
    assert_eq!(request_reason(abi::sysctl::CRASH), Some(Shutdown::Crash));
    assert_eq!(
        request_reason(abi::sysctl::WATCHDOG),
        Some(Shutdown::Watchdog)
    );
    assert_eq!(request_reason(3), None);
    assert_eq!(request_reason(1 << 9), None);
}
