use super::*;

#[test]
fn vdev_numbers_are_libxls() {
    let cases = [
        ("xvda", 51712),
        ("xvdb", 51728),
        ("xvda1", 51713),
        ("xvdp15", 202 << 8 | 15 << 4 | 15),
        ("xvdq", 1 << 28 | 16 << 8),
        ("xvda16", 1 << 28 | 16),
        ("xvdz", 1 << 28 | 25 << 8),
        ("xvdaa", 1 << 28 | 26 << 8),
        ("xvdba", 1 << 28 | 52 << 8),
        ("d0p0", 51712),
        ("d1p2", 51730),
        ("d16p0", 1 << 28 | 16 << 8),
        ("hda", 768),
        ("hdb", 832),
        ("hdc", 22 << 8),
        ("hdd1", 22 << 8 | 64 | 1),
        ("hda63", 768 + 63),
        ("sda", 2048),
        ("sdb2", 2048 + 16 + 2),
        ("sdp15", 2048 + 255),
        ("51712", 51712),
        ("0xca00", 51712),
        ("0", 0),
        ("2147483647", i32::MAX as u32),
    ];
    for (vdev, want) in cases {
        assert_eq!(vdev_devid(vdev), Some(want), "{vdev}");
    }
    for bad in [
        "",
        "xvd",
        "xvda0",
        "xvda01",
        "xvda256",
        "xvdA",
        "xvda-1",
        "hde",
        "hda64",
        "sdq",
        "sda16",
        "vda",
        "d0",
        "dp1",
        "d-1p0",
        "d0p256",
        "2147483648",
        "0x",
        "08",
        "xvda 1",
        " xvda",
        "xvda:cdrom",
    ] {
        assert_eq!(vdev_devid(bad), None, "{bad:?}");
    }
    // Past 2^20 disks the letters overflow the limit, not the arithmetic.
    assert_eq!(vdev_devid(&format!("xvd{}", "z".repeat(30))), None);
}

fn disk(spec: &str) -> DiskConfig {
    match parse_disk_spec(spec) {
        Ok(p) => p.disk,
        Err(e) => panic!("{spec:?}: {e}"),
    }
}

fn err(spec: &str) -> DiskSpecError {
    match parse_disk_spec(spec) {
        Ok(p) => panic!("{spec:?}: expected an error, got {:?}", p.disk),
        Err(e) => e,
    }
}

#[test]
fn flags_and_keys() {
    let d = disk("/i,,xvda,discard,direct-io-safe,untrusted,backend=0,backendtype=phy");
    assert_eq!(d.discard, Some(true));
    assert!(d.direct_io_safe && !d.trusted);
    assert_eq!(d.backend.as_deref(), Some("0"));
    assert_eq!(disk("/i,,xvda,no-discard").discard, Some(false));
    assert!(!disk("/i,,xvda,no-discard").discard_enabled());
    assert!(disk("/i,,xvda").discard_enabled());
    assert!(!disk("/i,,xvda,r").discard_enabled());
    // A flag is a whole item; a longer one is a positional parameter.
    assert_eq!(
        disk("discardx,,xvda").target,
        PathBuf::from("/dev/discardx")
    );
}

#[test]
fn target_takes_the_rest() {
    let d = disk("vdev=xvda, access=r, target=/srv/a,b=c d,");
    assert_eq!(d.target, PathBuf::from("/srv/a,b=c d"));
    // An empty positional target may be replaced by target=.
    assert_eq!(disk(",raw,xvda,target=/x").target, PathBuf::from("/x"));
    assert!(
        matches!(err("/a,raw,xvda,target=/b"), DiskSpecError::Invalid(m) if m.contains("target given twice"))
    );
}

#[test]
fn prefixes() {
    let d = disk("phy:/dev/vg/web,xvda,w");
    assert_eq!(
        (d.target.to_str(), d.vdev.as_str(), d.readonly),
        (Some("/dev/vg/web"), "xvda", false)
    );
    let d = disk("tap:aio:/srv/web.img,xvda1,r");
    assert_eq!(
        (d.target.to_str(), d.vdev.as_str(), d.readonly),
        (Some("/srv/web.img"), "xvda1", true)
    );
    let d = disk("nbd:host:1234,xvdb,w");
    assert_eq!(d.script.as_deref(), Some("block-nbd"));
    assert_eq!(d.target, PathBuf::from("host:1234"));
    assert!(parse_disk_spec("nbd:host:1234,xvdb,w").unwrap().warnings[0].contains("not run"));
    assert!(
        matches!(err("qcow2:/i.qcow2,xvda,w"), DiskSpecError::Unsupported(m) if m.contains("qcow2:"))
    );
    assert!(
        matches!(err("foo:/x,xvda"), DiskSpecError::Invalid(m) if m.contains("unknown deprecated disk prefix"))
    );
    // Without a prefix the second positional is the format, as in xl.
    assert!(
        matches!(err("/dev/sda,xvda,w"), DiskSpecError::Invalid(m) if m.contains("unknown format \"xvda\""))
    );
}

#[test]
fn respecified_and_malformed_parts_are_named() {
    let cases = [
        ("/i,raw,xvda,w,r", "too many positional"),
        ("/i,,xvda,vdev=xvdb", "vdev given twice"),
        ("/i,,xvda,r,access=w", "access given twice"),
        ("/i,raw,xvda,format=qcow2", "format given twice"),
        ("/i,,xvda,rx", "unknown access \"rx\""),
        ("/i,,xvda,devtype=floppy", "unknown device type \"floppy\""),
        ("/i,,xvda,backendtype=nvme", "unknown backend type"),
        ("/i,,xvda,colour=blue", "unknown parameter 'colour'"),
        ("/i,,xvda,Format=raw", "bad disk syntax"),
        ("/a=b,,xvda", "bad disk syntax"),
        ("/i,,xvda:floppy", "unknown device type \"floppy\""),
        ("/i,raw", "no vdev"),
        ("vdev=xvda", "no target"),
        (",,xvda", "empty target"),
        ("/i,,xvda,specification=foo", "unknown specification"),
        ("/i,,xvda,grant_usage=2", "grant_usage=0"),
        ("vdev=xvda,format=empty,target=/i", "empty drive"),
    ];
    for (spec, want) in cases {
        match err(spec) {
            DiskSpecError::Invalid(m) => assert!(m.contains(want), "{spec:?}: {m}"),
            e => panic!("{spec:?}: expected Invalid, got {e:?}"),
        }
    }
    let refused = [
        ("/i,qcow2,xvda", "\"qcow2\""),
        ("vdev=xvda,format=vhd,target=/i", "format=vhd"),
        ("/i,,xvda,backendtype=qdisk", "backendtype=qdisk"),
        ("/i,,xvda,specification=virtio", "virtio"),
        ("/i,,xvda,colo", "COLO"),
        ("/i,,xvda,colo-host=h", "colo-host"),
        ("/i,,hdc,cdrom", "\"cdrom\""),
        ("/i,raw,hdc,devtype=cdrom", "devtype=cdrom"),
        (",hdc:cdrom,r", "hdc:cdrom"),
    ];
    for (spec, want) in refused {
        match err(spec) {
            DiskSpecError::Unsupported(m) => assert!(m.contains(want), "{spec:?}: {m}"),
            e => panic!("{spec:?}: expected Unsupported, got {e:?}"),
        }
    }
}
