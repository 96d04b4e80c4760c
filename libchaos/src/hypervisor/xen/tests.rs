//! Host-side tests (no Xen needed): encodings against the C layouts, error paths.

use super::ops::pv_context;
use super::privcmd::{BufAlloc, Privcmd};
use super::*;

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn args(kind: GuestKind) -> CreateDomain {
    CreateDomain {
        kind,
        handle: crate::hypervisor::Uuid(*b"0123456789abcdef"),
        max_vcpus: 2,
        max_evtchn_port: 1023,
        max_grant_frames: 32,
        max_maptrack_frames: 0,
    }
}

#[test]
fn open_without_xen_says_so() {
    if std::path::Path::new(PRIVCMD_PATH).exists() {
        return; // a real dom0: covered by the lab test instead
    }
    match XenHypervisor::open() {
        Err(HypervisorError::NoXen { path }) => assert_eq!(path, PRIVCMD_PATH),
        other => panic!("expected NoXen, got {other:?}"),
    }
}

#[test]
fn missing_device_is_noxen_and_message_names_it() {
    let err = Privcmd::open_at("/nonexistent/xen/privcmd").unwrap_err();
    assert!(matches!(err, HypervisorError::NoXen { .. }));
    assert!(err.to_string().contains("/nonexistent/xen/privcmd"));
}

#[test]
fn unopenable_device_is_an_open_error() {
    // A directory exists but cannot be opened read-write.
    let err = Privcmd::open_at("/").unwrap_err();
    assert!(matches!(err, HypervisorError::Open { .. }), "{err:?}");
}

#[test]
fn pv_createdomain_bytes_match_the_c_layout() {
    let d = Domctl::new(
        Interface::Xen417,
        XEN_DOMCTL_CREATEDOMAIN,
        0,
        createdomain_v15(&args(GuestKind::Pv)).unwrap(),
    );
    let buf = BufAlloc::anonymous().one(d).unwrap();
    let b = buf.bytes();
    assert_eq!(u32_at(b, 0), 1, "cmd");
    assert_eq!(u32_at(b, 4), 0x15, "interface_version");
    assert_eq!(u16_at(b, 8), 0, "domain: 0 = let Xen choose");
    let u = 16;
    assert_eq!(u32_at(b, u), 0, "ssidref");
    assert_eq!(&b[u + 4..u + 20], b"0123456789abcdef", "handle");
    assert_eq!(u32_at(b, u + 20), 0, "flags: plain PV");
    assert_eq!(u32_at(b, u + 28), 2, "max_vcpus");
    assert_eq!(u32_at(b, u + 32), 1023, "max_evtchn_port");
    assert_eq!(u32_at(b, u + 36), 32, "max_grant_frames");
    assert_eq!(u32_at(b, u + 40), 0, "max_maptrack_frames");
    assert_eq!(u32_at(b, u + 44), 1, "grant_opts: v1");
    assert_eq!(u32_at(b, u + 56), 0, "emulation_flags: none for PV");
    assert!(
        b[u + 64..DOMCTL_SIZE].iter().all(|x| *x == 0),
        "rest of the union"
    );
}

#[test]
fn pvh_createdomain_is_hvm_with_hap_and_a_lapic() {
    let c = createdomain_v15(&args(GuestKind::Pvh)).unwrap();
    assert_eq!(c.flags, 0b11);
    assert_eq!(c.arch.emulation_flags, 1);
}

#[test]
fn createdomain_rejects_what_xen_cannot_take() {
    let mut a = args(GuestKind::Pv);
    a.max_vcpus = 0;
    assert!(matches!(
        createdomain_v15(&a),
        Err(HypervisorError::Invalid { .. })
    ));
    let mut a = args(GuestKind::Pv);
    a.max_grant_frames = u32::MAX;
    let err = createdomain_v15(&a).unwrap_err();
    assert!(err.to_string().contains("max_grant_frames"), "{err}");
}

#[test]
fn pv_vcpu_context_bytes_match_libxc() {
    let buf = BufAlloc::anonymous()
        .one(pv_context(
            0xffff_ffff_8000_1000,
            0xffff_ffff_8040_0000,
            0xffff_ffff_8030_0000,
            0x1234,
        ))
        .unwrap();
    let b = buf.bytes();
    let regs = 520;
    assert_eq!(
        u64_at(b, 512),
        (1 << 2) | (1 << 5),
        "flags: in_kernel | online"
    );
    assert_eq!(u64_at(b, regs + 128), 0xffff_ffff_8000_1000, "rip");
    assert_eq!(u64_at(b, regs + 152), 0xffff_ffff_8040_0000, "rsp");
    assert_eq!(u64_at(b, regs + 104), 0xffff_ffff_8030_0000, "rsi");
    assert_eq!(u64_at(b, regs + 144), 0x200, "rflags: IF");
    assert_eq!(u16_at(b, regs + 136), 0xe033, "cs");
    assert_eq!(u16_at(b, regs + 160), 0xe02b, "ss");
    assert_eq!(u16_at(b, regs + 176), 0, "ds");
    assert_eq!(u64_at(b, 4968), 0xe02b, "kernel_ss");
    assert_eq!(u64_at(b, 4976), 0xffff_ffff_8040_0000, "kernel_sp");
    assert_eq!(u64_at(b, 4984 + 3 * 8), 0x1234 << 12, "cr3");
    assert_eq!(u64_at(b, 5048 + 6 * 8), 0xffff_0ff0, "dr6");
    assert_eq!(u64_at(b, 5048 + 7 * 8), 0x400, "dr7");
}

#[test]
fn domain_info_flags_decode() {
    let raw = GetDomainInfoV15 {
        domain: 5,
        flags: XEN_DOMINF_SHUTDOWN | XEN_DOMINF_PAUSED | (1 << XEN_DOMINF_SHUTDOWNSHIFT),
        tot_pages: 256,
        max_pages: 512,
        nr_online_vcpus: 1,
        ..Default::default()
    };
    let i = info_of(&raw);
    assert_eq!(i.domid, DomId(5));
    assert!(i.paused && !i.running && !i.dying && !i.blocked);
    assert_eq!(i.shutdown, Some(ShutdownReason::Reboot));
    assert_eq!((i.tot_pages, i.max_pages, i.online_vcpus), (256, 512, 1));
    let running = info_of(&GetDomainInfoV15 {
        flags: XEN_DOMINF_RUNNING,
        ..Default::default()
    });
    assert!(running.running && running.shutdown.is_none());
}

#[test]
fn hypercall_buffers_are_page_aligned_zeroed_and_sized() {
    let bufs = BufAlloc::anonymous();
    let b: HcallBuf<u64> = bufs.zeroed(POPULATE_BATCH).unwrap();
    assert_eq!(b.addr() % PAGE_SIZE as u64, 0);
    assert_eq!(b.as_slice().len(), POPULATE_BATCH);
    assert!(b.as_slice().iter().all(|x| *x == 0));
    let c = bufs.copy_of(&[1u64, 2, 3]).unwrap();
    assert_eq!(c.as_slice(), &[1, 2, 3]);
    // A domctl buffer always covers Xen's whole struct xen_domctl.
    let d = bufs
        .one(Domctl::new(
            Interface::Xen417,
            XEN_DOMCTL_PAUSEDOMAIN,
            1,
            NoPayload::default(),
        ))
        .unwrap();
    assert!(d.bytes().len() >= DOMCTL_SIZE);
}

#[test]
fn a_freed_hypercall_buffer_is_reused_for_one_of_its_size_and_comes_back_zeroed() {
    let bufs = BufAlloc::anonymous();
    let mut a: HcallBuf<u64> = bufs.zeroed(4).unwrap();
    a.as_mut_slice().copy_from_slice(&[7, 7, 7, 7]);
    let page = a.addr();
    drop(a);
    // Another size does not take it; the same size does, with nothing of the last call.
    let big: HcallBuf<u8> = bufs.zeroed(2 * PAGE_SIZE).unwrap();
    assert_ne!(big.addr(), page);
    let b: HcallBuf<u64> = bufs.zeroed(8).unwrap();
    assert_eq!(b.addr(), page);
    assert!(b.as_slice().iter().all(|x| *x == 0));
    // Two buffers alive at once never share a page.
    let c: HcallBuf<u64> = bufs.zeroed(8).unwrap();
    assert_ne!(c.addr(), b.addr());
}

#[test]
fn only_a_few_freed_hypercall_buffers_are_kept() {
    let bufs = BufAlloc::anonymous();
    let many: Vec<HcallBuf<u8>> = (0..20).map(|_| bufs.zeroed(1).unwrap()).collect();
    assert_eq!(bufs.kept(), 0);
    drop(many);
    assert_eq!(bufs.kept(), 8, "8 kept, the other 12 unmapped");
    let again: Vec<HcallBuf<u8>> = (0..3).map(|_| bufs.zeroed(1).unwrap()).collect();
    assert_eq!(bufs.kept(), 5);
    drop(again);
    assert_eq!(bufs.kept(), 8);
}
