//! Debian's xl example configs (/etc/xen/xlexample.* from xen-utils-common).
//!
//! They are GPL, so they are not in the repository: `scripts/fetch-xlexamples.sh` extracts them
//! into target/xlexamples/ (or $XLEXAMPLES_DIR).

use libchaos::config::{self, ConfigError, DiskConfig};
use libchaos::hypervisor::GuestKind;
use std::path::{Path, PathBuf};

/// The examples' directory, fetched with the script on first use (so a plain
/// `cargo test --workspace` works on a fresh Debian machine). Tests run in parallel: one fetch.
fn examples_dir() -> PathBuf {
    static FETCH: std::sync::Once = std::sync::Once::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = match std::env::var_os("XLEXAMPLES_DIR") {
        Some(d) => PathBuf::from(d),
        None => root.join("target/xlexamples"),
    };
    FETCH.call_once(|| {
        if !dir.join("xlexample.pvlinux").is_file() {
            let status = std::process::Command::new("sh")
                .arg(root.join("scripts/fetch-xlexamples.sh"))
                .env("XLEXAMPLES_DIR", &dir)
                .status();
            eprintln!("scripts/fetch-xlexamples.sh: {status:?}");
        }
    });
    assert!(
        dir.join("xlexample.pvlinux").is_file(),
        "xl examples not found in {} and scripts/fetch-xlexamples.sh could not fetch them (needs apt; or set XLEXAMPLES_DIR)",
        dir.display()
    );
    dir
}

#[test]
fn pvlinux_parses() {
    let l = config::load(&examples_dir().join("xlexample.pvlinux"), &[]).unwrap();
    let c = l.config;
    assert_eq!(c.name, "example.pvlinux");
    assert_eq!(c.kind, GuestKind::Pv);
    assert_eq!(c.kernel, PathBuf::from("/boot/vmlinuz"));
    assert_eq!(c.cmdline, "root=/dev/xvda1");
    assert_eq!((c.memory_mib, c.vcpus), (128, 2));
    assert_eq!(c.vifs.len(), 1);
    assert_eq!(c.vifs[0].bridge, "xenbr0");
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
}

/// The examples' disks are block devices (LVM, a zvol): parsed as xl does.
#[test]
fn example_disks_parse_as_xl_reads_them() {
    for (file, target) in [
        ("xlexample.pvlinux", "/dev/vg/guest-volume"),
        ("xlexample.pvhlinux", "/dev/zvol/tank/guest-volume"),
    ] {
        let l = config::load(&examples_dir().join(file), &[]).unwrap();
        assert_eq!(l.config.disks, [DiskConfig::new(target, "xvda")], "{file}");
        assert_eq!(l.config.disks[0].devid(), Some(51712));
    }
    // The HVM example's disk line parses too (the guest type is what is refused): the same
    // text under a PV config.
    let text = std::fs::read_to_string(examples_dir().join("xlexample.hvm")).unwrap();
    let disk = text
        .lines()
        .find(|l| l.starts_with("disk"))
        .expect("the HVM example has a disk line");
    let l = config::parse_xl(
        &format!("name = \"g\"\nkernel = \"/k\"\n{disk}\n"),
        "hvm-disk.cfg",
        &[],
    )
    .unwrap();
    assert_eq!(
        l.config.disks,
        [DiskConfig::new("/dev/vg/guest-volume", "xvda")]
    );
}

#[test]
fn pvhlinux_parses_as_pvh() {
    let l = config::load(&examples_dir().join("xlexample.pvhlinux"), &[]).unwrap();
    let c = l.config;
    assert_eq!(c.name, "example.pvhlinux");
    assert_eq!(c.kind, GuestKind::Pvh);
    assert_eq!(c.kernel, PathBuf::from("/boot/vmlinuz"));
    assert_eq!((c.memory_mib, c.vcpus), (512, 4));
}

#[test]
fn hvm_is_refused_clearly() {
    let path = examples_dir().join("xlexample.hvm");
    let e = config::load(&path, &[]).unwrap_err();
    assert!(matches!(e, ConfigError::Unsupported { .. }), "{e:?}");
    assert_eq!(e.key(), Some("type"));
    let s = e.to_string();
    assert!(
        s.contains("xlexample.hvm:")
            && s.ends_with(": type: hvm guests are not supported by chaos (only pv and pvh)"),
        "{s}"
    );
}

#[test]
fn a_broken_line_in_a_real_example_is_named() {
    let text = std::fs::read_to_string(examples_dir().join("xlexample.pvlinux")).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let at = lines.iter().position(|l| l.starts_with("memory")).unwrap();
    lines[at] = "memory = 128 MiB".to_string();
    let e = config::parse_xl(&lines.join("\n"), "xlexample.pvlinux", &[]).unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("xlexample.pvlinux:{}: syntax error: ", at + 1)),
        "{e}"
    );
}
