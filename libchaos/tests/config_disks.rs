//! `disk =` as xl-disk-configuration(5) describes it: the man page's own examples and the
//! parameters, flags and deprecated forms it lists, as a table of cases; then the errors as a
//! user sees them (file, line, key, the disk and the part of its spec at fault).

use libchaos::config::disk::{parse_disk_spec, DiskSpecError};
use libchaos::config::{parse_xl, ConfigError, DiskConfig};
use std::path::PathBuf;

fn parsed(spec: &str) -> DiskConfig {
    match parse_disk_spec(spec) {
        Ok(p) => p.disk,
        Err(e) => panic!("{spec:?}: {e}"),
    }
}

fn rw(target: &str, vdev: &str) -> DiskConfig {
    DiskConfig::new(target, vdev)
}

fn ro(target: &str, vdev: &str) -> DiskConfig {
    DiskConfig {
        readonly: true,
        ..DiskConfig::new(target, vdev)
    }
}

/// "For example, these strings are equivalent" (SYNTAX).
#[test]
fn the_man_pages_equivalent_specs_are_equal() {
    for spec in [
        "/dev/vg/guest-volume,,hda",
        "/dev/vg/guest-volume,raw,hda,rw",
        "format=raw, vdev=hda, access=rw, target=/dev/vg/guest-volume",
        "raw:/dev/vg/guest-volume,hda,w",
    ] {
        assert_eq!(parsed(spec), rw("/dev/vg/guest-volume", "hda"), "{spec}");
    }
}

/// "As are these": the CD-ROM forms, which chaos refuses (PV and PVH guests get disks), each
/// naming the part that made the disk a CD-ROM.
#[test]
fn the_man_pages_cdrom_specs_are_refused_naming_the_part() {
    for (spec, part) in [
        ("/root/image.iso,,hdc,cdrom", "\"cdrom\""),
        ("/root/image.iso,,hdc,,cdrom", "\"cdrom\""),
        ("/root/image.iso,raw,hdc,devtype=cdrom", "\"devtype=cdrom\""),
        (
            "format=raw, vdev=hdc, access=ro, devtype=cdrom, target=/root/image.iso",
            "\"devtype=cdrom\"",
        ),
        ("raw:/root/image.iso,hdc:cdrom,ro", "\"hdc:cdrom\""),
        // "Missing format and empty target": xend's empty CD-ROM.
        (",hdc:cdrom,r", "\"hdc:cdrom\""),
    ] {
        match parse_disk_spec(spec) {
            Err(DiskSpecError::Unsupported(m)) => {
                assert!(m.starts_with(part) && m.contains("CD-ROM"), "{spec}: {m}")
            }
            other => panic!("{spec}: expected a CD-ROM refusal, got {other:?}"),
        }
    }
    // devtype=disk (or :disk) is the default, and fine.
    assert_eq!(parsed("/i,raw,xvda,devtype=disk"), rw("/i", "xvda"));
    assert_eq!(parsed("phy:/i,xvda:disk,w"), rw("/i", "xvda"));
}

/// Each parameter and flag of the man page, one case at a time.
#[test]
fn parameters_flags_and_deprecated_forms() {
    let cases: Vec<(&str, DiskConfig)> = vec![
        // target: "/dev will be prepended if the path doesn't start with a '/'".
        ("vg/guest,,xvda", rw("/dev/vg/guest", "xvda")),
        ("sdb,,xvda", rw("/dev/sdb", "xvda")),
        // target= eats the rest, commas included, even after an empty positional target.
        ("vdev=xvda,target=/srv/a,b", rw("/srv/a,b", "xvda")),
        (",,xvda,target=/srv/img", rw("/srv/img", "xvda")),
        // Whitespace before a parameter is ignored.
        ("  /srv/img, raw,\txvda, w", rw("/srv/img", "xvda")),
        // format: raw, or empty (the default).
        ("/i,raw,xvda", rw("/i", "xvda")),
        ("/i,,xvda", rw("/i", "xvda")),
        ("/i,,xvda,format=raw", rw("/i", "xvda")),
        // vdev: hd[x], xvd[x], sd[x] and numbers.
        ("/i,,xvdb3", rw("/i", "xvdb3")),
        ("/i,,sda", rw("/i", "sda")),
        ("/i,,51712", rw("/i", "51712")),
        ("/i,,d0p0", rw("/i", "d0p0")),
        // access: ro, r (read-only); rw, w (read/write); rw is the default.
        ("/i,,xvda,ro", ro("/i", "xvda")),
        ("/i,,xvda,r", ro("/i", "xvda")),
        ("/i,,xvda,rw", rw("/i", "xvda")),
        ("/i,,xvda,w", rw("/i", "xvda")),
        ("/i,,xvda,access=r", ro("/i", "xvda")),
        ("access=ro,vdev=xvda,target=/i", ro("/i", "xvda")),
        // backendtype=phy (libxl's only choice for a file or device in dom0).
        ("/i,,xvda,backendtype=phy", rw("/i", "xvda")),
        // backend=DOMAIN-NAME is kept (creation accepts dom0 only).
        (
            "/i,,xvda,backend=Domain-0",
            DiskConfig {
                backend: Some("Domain-0".into()),
                ..rw("/i", "xvda")
            },
        ),
        // script= is recorded (not run).
        (
            "/i,,xvda,script=block",
            DiskConfig {
                script: Some("block".into()),
                ..rw("/i", "xvda")
            },
        ),
        (
            "drbd:resource,xvda,w",
            DiskConfig {
                script: Some("block-drbd".into()),
                ..rw("resource", "xvda")
            },
        ),
        (
            "iscsi:iqn.2001-05.com.example:disk,xvda,r",
            DiskConfig {
                script: Some("block-iscsi".into()),
                ..ro("iqn.2001-05.com.example:disk", "xvda")
            },
        ),
        // direct-io-safe, discard, no-discard, trusted, untrusted.
        (
            "/i,,xvda,direct-io-safe",
            DiskConfig {
                direct_io_safe: true,
                ..rw("/i", "xvda")
            },
        ),
        (
            "/i,,xvda,discard",
            DiskConfig {
                discard: Some(true),
                ..rw("/i", "xvda")
            },
        ),
        (
            "/i,,xvda,no-discard",
            DiskConfig {
                discard: Some(false),
                ..rw("/i", "xvda")
            },
        ),
        (
            "/i,,xvda,untrusted",
            DiskConfig {
                trusted: false,
                ..rw("/i", "xvda")
            },
        ),
        ("/i,,xvda,no-colo", rw("/i", "xvda")),
        // The deprecated prefixes: raw: qcow2: vhd: (format), the ignored ones, stacked.
        ("raw:/i,xvda,w", rw("/i", "xvda")),
        ("tapdisk:/i,xvda,w", rw("/i", "xvda")),
        ("tap2:/i,xvda,w", rw("/i", "xvda")),
        ("tap:aio:/i,xvda,w", rw("/i", "xvda")),
        ("ioemu:/i,xvda,w", rw("/i", "xvda")),
        ("file:/srv/web.img,xvda1,r", ro("/srv/web.img", "xvda1")),
        ("phy:/dev/vg/web,xvda,w", rw("/dev/vg/web", "xvda")),
        ("phy:sdb,xvda,w", rw("/dev/sdb", "xvda")),
    ];
    for (spec, want) in cases {
        assert_eq!(parsed(spec), want, "{spec}");
    }
}

/// What xl accepts and chaos cannot serve: refused, naming the part.
#[test]
fn what_chaos_cannot_serve_is_refused_naming_the_part() {
    for (spec, part) in [
        ("/i.qcow2,qcow2,xvda", "\"qcow2\""),
        ("/i,qcow,xvda", "\"qcow\""),
        ("/i,vhd,xvda", "\"vhd\""),
        ("/i,qed,xvda", "\"qed\""),
        ("vdev=xvda,format=qcow2,target=/i", "\"format=qcow2\""),
        ("qcow2:/i,xvda,w", "\"qcow2:\""),
        ("vhd:/i,xvda,w", "\"vhd:\""),
        ("/i,,xvda,backendtype=qdisk", "\"backendtype=qdisk\""),
        ("/i,,xvda,backendtype=tap", "\"backendtype=tap\""),
        (
            "/i,,xvda,backendtype=standalone",
            "\"backendtype=standalone\"",
        ),
        ("/i,,xvda,colo,colo-host=h,colo-port=1", "\"colo\""),
    ] {
        match parse_disk_spec(spec) {
            Err(DiskSpecError::Unsupported(m)) => assert!(m.starts_with(part), "{spec}: {m}"),
            other => panic!("{spec}: expected Unsupported, got {other:?}"),
        }
    }
}

const HEAD: &str = "name = \"g\"\nkernel = \"/k\"\n";

fn xl_err(disk_line: &str) -> ConfigError {
    match parse_xl(&format!("{HEAD}{disk_line}\n"), "g.cfg", &[]) {
        Ok(l) => panic!("{disk_line}: accepted {:?}", l.config.disks),
        Err(e) => e,
    }
}

#[test]
fn errors_name_file_line_key_disk_and_part() {
    let e = xl_err("disk = [ '/srv/a.img,,xvda', '/srv/b.img,,xvdb,rx' ]");
    assert!(matches!(e, ConfigError::Invalid { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "g.cfg:3: disk: disk 1 (\"/srv/b.img,,xvdb,rx\"): \"rx\": unknown access \"rx\" (expected r, ro, w or rw)"
    );
    let e = xl_err("disk = [ '/srv/a.qcow2,qcow2,xvda' ]");
    assert!(matches!(e, ConfigError::Unsupported { .. }), "{e:?}");
    assert!(
        e.to_string()
            .starts_with("g.cfg:3: disk: disk 0 (\"/srv/a.qcow2,qcow2,xvda\"): \"qcow2\": chaos serves raw images only"),
        "{e}"
    );
    let e = xl_err("disk = [ '/srv/a.img,,xvde256' ]");
    assert!(
        e.to_string()
            .starts_with("g.cfg:3: disk: disk 0 (\"/srv/a.img,,xvde256\"): vdev \"xvde256\": not a virtual disk name"),
        "{e}"
    );
    let e = xl_err("disk = [ '/a,,xvda', '/b,,51712' ]");
    assert_eq!(
        e.to_string(),
        "g.cfg:3: disk: disk 1: vdev 51712 is the same device (51712) as disk 0's (xvda)"
    );
    let e = xl_err("disk = [ '/a,,hdc,cdrom' ]");
    assert!(matches!(e, ConfigError::Unsupported { .. }), "{e:?}");
    let e = xl_err("disk = '/a,,xvda'");
    assert!(
        e.to_string()
            .starts_with("g.cfg:3: disk: expected a list of disk specs"),
        "{e}"
    );
    let e = xl_err("disk = [ 7 ]");
    assert!(
        e.to_string().contains("disk 0: expected a \"spec string\""),
        "{e}"
    );
}

#[test]
fn several_disks_and_one_file_read_only_in_many_guests() {
    let text = format!(
        "{HEAD}disk = [ 'file:/srv/base.img,xvda,r', '/srv/scratch-1.img,raw,xvdb,w', 'vdev=xvdc,access=ro,target=/srv/data,v1.img' ]\n"
    );
    let l = parse_xl(&text, "g.cfg", &[]).unwrap();
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    assert_eq!(
        l.config.disks,
        [
            ro("/srv/base.img", "xvda"),
            rw("/srv/scratch-1.img", "xvdb"),
            ro("/srv/data,v1.img", "xvdc"),
        ]
    );
    let ids: Vec<_> = l.config.disks.iter().map(|d| d.devid().unwrap()).collect();
    assert_eq!(ids, [51712, 51728, 51744]);
    // The same base image read-only in a hundred guests: nothing in the config forbids it.
    for i in 0..100 {
        let t = format!("name = \"g{i}\"\nkernel = \"/k\"\ndisk = [ '/srv/base.img,,xvda,r' ]\n");
        let l = parse_xl(&t, "g.cfg", &[]).unwrap();
        assert_eq!(l.config.disks[0].target, PathBuf::from("/srv/base.img"));
    }
    // A warning for a script chaos does not run.
    let l = parse_xl(
        &format!("{HEAD}disk = [ 'nbd:host:10809,xvda,w' ]\n"),
        "g.cfg",
        &[],
    )
    .unwrap();
    assert_eq!(l.warnings.len(), 1);
    assert!(
        l.warnings[0].to_string().starts_with(
            "g.cfg:3: warning: disk: disk 0: script=block-nbd is recorded but not run"
        ),
        "{}",
        l.warnings[0]
    );
}

#[test]
fn json_vbds_are_lightvms() {
    let text = r#"{"name": "g", "kernel": "/k", "memory": 16, "vcpus": 1,
      "vbds": [{"target": "/srv/base.img", "type": "file", "vdev": "xvda", "access": "r"},
               {"target": "/dev/vg/data", "type": "phy", "vdev": "xvdb", "access": "w"},
               {"target": "/srv/c.img", "vdev": "xvdc"}]}"#;
    let c = libchaos::config::parse_json(text, "g.json").unwrap().config;
    assert_eq!(
        c.disks,
        [
            ro("/srv/base.img", "xvda"),
            rw("/dev/vg/data", "xvdb"),
            rw("/srv/c.img", "xvdc")
        ]
    );
}
