use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use proptest::prelude::*;

use super::notes::*;
use super::testelf::*;
use super::*;

const LINUX_BASE: u64 = 0xffff_ffff_8000_0000;

fn parse(b: &[u8]) -> Result<KernelImage, ImageProblem> {
    KernelImage::parse("test", b)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A minimal bzImage: one setup sector after the boot sector, then the payload; Linux appends
/// the decompressed size after the compressed stream, so we do too.
fn bzimage(payload: &[u8], version: u16) -> Vec<u8> {
    let mut b = vec![0u8; 1024];
    b[0x1f1] = 1;
    b[0x202..0x206].copy_from_slice(b"HdrS");
    b[0x206..0x208].copy_from_slice(&version.to_le_bytes());
    let offset = 0x40u32;
    b[0x248..0x24c].copy_from_slice(&offset.to_le_bytes());
    b[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    b.resize(1024 + offset as usize, 0xcc);
    b.extend_from_slice(payload);
    b.extend_from_slice(&0x1234u32.to_le_bytes());
    b
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("chaos-image-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn file(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, data).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn parses_pv_kernel() {
    let elf = TestElf::pv(LINUX_BASE, 0x100_0000, 0x3000, 0x2000).build();
    let k = parse(&elf).unwrap();
    assert_eq!(k.format, ImageFormat::Elf);
    assert_eq!(k.segments.len(), 1);
    assert_eq!(k.segments[0].paddr, 0x100_0000);
    assert_eq!(k.segment_data(&k.segments[0]), pattern(0x3000));
    assert_eq!(k.segments[0].memsz, 0x5000);
    assert_eq!((k.pstart, k.pend), (0x100_0000, 0x100_5000));
    assert_eq!(k.notes.loader.as_deref(), Some("generic"));
    assert_eq!(k.notes.xen_version.as_deref(), Some("xen-3.0"));
    assert_eq!(k.notes.supported_features, 0b10010);
    assert_eq!(k.notes.required_features, 0b10000);
    let pv = k.pv().unwrap();
    assert_eq!(pv.virt_base, LINUX_BASE);
    assert_eq!(pv.virt_kstart, LINUX_BASE + 0x100_0000);
    assert_eq!(pv.virt_kend, LINUX_BASE + 0x100_5000);
    assert_eq!(pv.virt_entry, LINUX_BASE + 0x100_0000);
    assert_eq!(pv.hypercall_page, Some(LINUX_BASE + 0x100_1000));
    assert_eq!(k.phys32_entry(), None);
}

#[test]
fn notes_from_section_when_no_note_segment() {
    let mut t = TestElf::pv(0, 0, 0x2000, 0);
    t.notes_in_section = true;
    let k = parse(&t.build()).unwrap();
    assert_eq!(k.notes.count, 8);
    assert_eq!(k.pv().unwrap().virt_base, 0);
}

#[test]
fn paddr_offset_shifts_segments() {
    // Old-style kernels put virtual addresses in p_paddr and say so with PADDR_OFFSET.
    let base = 0x40_0000;
    let mut t = TestElf::pv(base, 0, 0x2000, 0);
    t.segments[0].paddr = base;
    t.set_note(num(XEN_ELFNOTE_PADDR_OFFSET, base));
    let k = parse(&t.build()).unwrap();
    let pv = k.pv().unwrap();
    assert_eq!(pv.virt_kstart, base);
    assert_eq!(pv.virt_entry, base);
}

#[test]
fn entry_defaults_to_elf_entry() {
    let mut t = TestElf::pv(0, 0, 0x2000, 0);
    t.notes.retain(|(k, _)| *k != XEN_ELFNOTE_ENTRY);
    t.entry = 0x10;
    assert_eq!(parse(&t.build()).unwrap().pv().unwrap().virt_entry, 0x10);
}

#[test]
fn refuses_kernels_without_xen_notes() {
    let mut t = TestElf::pv(0, 0, 0x1000, 0);
    t.notes.clear();
    assert_eq!(parse(&t.build()).unwrap_err(), ImageProblem::NoXenNotes);
    assert_eq!(
        ImageProblem::NoXenNotes.to_string(),
        "no Xen ELF notes: not a PV kernel"
    );
}

#[test]
fn refuses_bad_notes() {
    let mut t = TestElf::pv(0, 0, 0x1000, 0);
    t.set_note(text(XEN_ELFNOTE_LOADER, "grub"));
    t.set_note(text(XEN_ELFNOTE_GUEST_OS, "plan9"));
    let e = parse(&t.build()).unwrap_err();
    assert!(matches!(e, ImageProblem::NotPv(_)), "{e}");
    assert!(e.to_string().contains("plan9"), "{e}");

    let mut t = TestElf::pv(0, 0, 0x1000, 0);
    t.set_note(text(XEN_ELFNOTE_XEN_VERSION, "xen-2.0"));
    assert!(parse(&t.build())
        .unwrap_err()
        .to_string()
        .contains("xen-2.0"));

    let mut t = TestElf::pv(0, 0, 0x1000, 0);
    t.set_note(num(XEN_ELFNOTE_ENTRY, 0x5000));
    let e = parse(&t.build()).unwrap_err();
    assert!(e.to_string().contains("entry point 0x5000 outside"), "{e}");

    let mut t = TestElf::pv(0, 0, 0x1000, 0);
    t.set_note((XEN_ELFNOTE_VIRT_BASE, vec![1, 2, 3]));
    let e = parse(&t.build()).unwrap_err();
    assert!(e.to_string().contains("VIRT_BASE"), "{e}");

    let mut t = TestElf::pv(0, 0, 0x1000, 0);
    t.set_note(text(XEN_ELFNOTE_FEATURES, "!teleportation"));
    assert!(parse(&t.build())
        .unwrap_err()
        .to_string()
        .contains("teleportation"));

    let mut t = TestElf::pv(0x1000_0000, 0, 0x1000, 0);
    t.set_note(num(XEN_ELFNOTE_HYPERCALL_PAGE, 0x2000_0000));
    assert!(parse(&t.build())
        .unwrap_err()
        .to_string()
        .contains("hypercall page"));
}

#[test]
fn pvh_only_kernel_parses_but_is_not_pv() {
    let mut t = TestElf::pv(0, 0x10_0000, 0x1000, 0);
    t.notes = vec![num(XEN_ELFNOTE_PHYS32_ENTRY, 0x10_0000)];
    let k = parse(&t.build()).unwrap();
    assert_eq!(k.phys32_entry(), Some(0x10_0000));
    assert!(matches!(k.pv(), Err(ImageProblem::NotPv(_))));
}

#[test]
fn refuses_elf32_and_other_machines() {
    let mut b = TestElf::pv(0, 0, 0x1000, 0).build();
    b[4] = 1;
    assert_eq!(parse(&b).unwrap_err(), ImageProblem::Elf32);
    let mut b = TestElf::pv(0, 0, 0x1000, 0).build();
    b[18] = 3; // EM_386
    assert_eq!(parse(&b).unwrap_err(), ImageProblem::NotX86_64(3));
}

#[test]
fn refuses_truncated_segment() {
    let b = TestElf::pv(0, 0, 0x3000, 0).build();
    let e = parse(&b[..b.len() - 100]).unwrap_err();
    assert!(matches!(e, ImageProblem::Truncated { .. }), "{e}");
    assert!(e.to_string().contains("segment 0"), "{e}");
}

#[test]
fn unknown_format_names_the_file() {
    let dir = TempDir::new("unknown");
    let p = dir.file("x", b"#!/bin/sh\necho not a kernel\n");
    let e = KernelImage::from_file(&p).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}: not an ELF file, a gzip'd ELF or a bzImage",
            p.display()
        )
    );
    let e = KernelImage::from_file(Path::new("/nonexistent/kernel")).unwrap_err();
    assert!(e.to_string().starts_with("/nonexistent/kernel: "), "{e}");
}

#[test]
fn gzipped_elf() {
    let elf = TestElf::pv(LINUX_BASE, 0x100_0000, 0x3000, 0).build();
    let k = parse(&gzip(&elf)).unwrap();
    assert_eq!(k.format, ImageFormat::GzipElf);
    assert_eq!(k.segment_data(&k.segments[0]), pattern(0x3000));
    // A gzip'd file that is not an ELF is not a kernel.
    assert_eq!(
        parse(&gzip(b"hello")).unwrap_err(),
        ImageProblem::UnknownFormat
    );
    // Corrupt gzip data says so.
    let mut z = gzip(&elf);
    let n = z.len();
    z.truncate(n / 2);
    let e = parse(&z).unwrap_err();
    assert!(
        matches!(e, ImageProblem::Decompress { method: "gzip", .. }),
        "{e}"
    );
}

#[test]
fn bzimage_with_gzip_payload() {
    let elf = TestElf::pv(LINUX_BASE, 0x100_0000, 0x3000, 0x1000).build();
    let k = parse(&bzimage(&gzip(&elf), 0x20f)).unwrap();
    assert_eq!(k.format, ImageFormat::BzImageGzip);
    assert_eq!(k.segment_data(&k.segments[0]), pattern(0x3000));
}

/// tiny.elf.xz: a 4 KiB ELF64 compressed with `xz --check=crc32 --x86 --lzma2`, the filter
/// chain Linux uses for its bzImage payloads (BCJ x86 + LZMA2). Its first segment is
/// [`pattern`]`(0x800)`; see tiny.elf.xz.txt for how it was made.
const TINY_XZ: &[u8] = include_bytes!("testdata/tiny.elf.xz");

#[test]
fn bzimage_with_xz_bcj_payload() {
    let k = parse(&bzimage(TINY_XZ, 0x20f)).unwrap();
    assert_eq!(k.format, ImageFormat::BzImageXz);
    assert_eq!(k.segment_data(&k.segments[0]), pattern(0x800));
    // Corrupting the stream is detected (CRC or format), not trusted.
    let mut bad = TINY_XZ.to_vec();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x55;
    let e = parse(&bzimage(&bad, 0x20f)).unwrap_err();
    assert!(
        matches!(e, ImageProblem::Decompress { method: "xz", .. }),
        "{e}"
    );
    let e = parse(&bzimage(&TINY_XZ[..TINY_XZ.len() / 2], 0x20f)).unwrap_err();
    assert!(
        matches!(e, ImageProblem::Decompress { method: "xz", .. }),
        "{e}"
    );
}

#[test]
fn bzimage_errors() {
    let e = parse(&bzimage(&[0x28, 0xb5, 0x2f, 0xfd, 0, 0], 0x20f)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "bzImage: payload compressed with zstd: only gzip and xz are supported"
    );
    let e = parse(&bzimage(b"xx", 0x206)).unwrap_err();
    assert!(e.to_string().contains("boot protocol 2.06"), "{e}");
    let mut b = bzimage(&gzip(b"x"), 0x20f);
    b.truncate(1100);
    assert!(matches!(
        parse(&b).unwrap_err(),
        ImageProblem::Truncated { .. }
    ));
}

#[test]
fn cache_reuses_and_notices_changes() {
    let dir = TempDir::new("cache");
    let elf = TestElf::pv(0, 0, 0x2000, 0).build();
    let p = dir.file("k", &elf);
    let cache = ImageCache::new();
    let a = cache.load(&p).unwrap();
    for _ in 0..1000 {
        assert!(Arc::ptr_eq(&a, &cache.load(&p).unwrap()));
    }
    // Rewrite the file with another kernel: the next load sees it.
    let elf2 = TestElf::pv(0, 0, 0x3000, 0).build();
    std::fs::write(&p, &elf2).unwrap();
    let b = cache.load(&p).unwrap();
    assert!(!Arc::ptr_eq(&a, &b));
    assert_eq!(b.segment_data(&b.segments[0]).len(), 0x3000);
    assert!(Arc::ptr_eq(&b, &cache.load(&p).unwrap()));

    let r = dir.file("initrd", b"ramdisk bytes");
    let r1 = cache.load_ramdisk(&r).unwrap();
    assert_eq!(&r1[..], b"ramdisk bytes");
    assert!(Arc::ptr_eq(&r1, &cache.load_ramdisk(&r).unwrap()));
    assert_eq!(cache.len(), 2);

    // Errors name the file and are not cached.
    let bad = dir.file("bad", b"nope");
    let e = cache.load(&bad).unwrap_err();
    assert!(e.to_string().starts_with(&bad.display().to_string()));
    std::fs::write(&bad, &elf).unwrap();
    assert!(cache.load(&bad).is_ok());
    cache.clear();
    assert!(cache.is_empty());
}

#[test]
fn cache_is_shared_between_threads() {
    let dir = TempDir::new("threads");
    let p = dir.file("k", &TestElf::pv(0, 0, 0x2000, 0).build());
    let cache = Arc::new(ImageCache::new());
    let first = cache.load(&p).unwrap();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (cache, p) = (cache.clone(), p.clone());
            std::thread::spawn(move || cache.load(&p).unwrap())
        })
        .collect();
    for h in handles {
        assert!(Arc::ptr_eq(&first, &h.join().unwrap()));
    }
}

/// Threads that all miss the cache at once (chaosd's refill workers preparing warm shells of
/// one image) still get one value: the first stored stays, so a warm shell's image is the one
/// the cache hands out later.
#[test]
fn threads_that_miss_at_once_get_one_value() {
    let dir = TempDir::new("race");
    let p = dir.file("k", &TestElf::pv(0, 0, 0x2000, 0).build());
    for _ in 0..20 {
        let cache = Arc::new(ImageCache::new());
        let start = Arc::new(std::sync::Barrier::new(4));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (cache, p, start) = (cache.clone(), p.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    cache.load(&p).unwrap()
                })
            })
            .collect();
        let got: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let now = cache.load(&p).unwrap();
        assert!(
            got.iter().all(|g| Arc::ptr_eq(g, &now)),
            "one value per version"
        );
    }
}

/// The test unikernels of guests/ (built in the guests worktree); skipped when absent.
#[test]
fn parses_test_unikernels_if_built() {
    for name in ["noop", "hello"] {
        let candidates = [
            PathBuf::from(format!("../guests/out/{name}")),
            PathBuf::from(format!("/work/wt-guests/guests/out/{name}")),
        ];
        let Some(p) = candidates.iter().find(|p| p.exists()) else {
            eprintln!("skipping {name}: guests/out/{name} not built");
            continue;
        };
        let k = KernelImage::from_file(p).unwrap();
        let pv = k.pv().unwrap();
        assert!(
            pv.hypercall_page.is_some(),
            "{name}: no hypercall page note"
        );
        assert!(pv.virt_entry >= pv.virt_kstart && pv.virt_entry < pv.virt_kend);
        eprintln!(
            "{name}: base {:#x} kernel {:#x}..{:#x} entry {:#x}",
            pv.virt_base, pv.virt_kstart, pv.virt_kend, pv.virt_entry
        );
    }
}

/// Debian's vmlinuz (bzImage + xz/BCJ).
#[test]
fn parses_debian_vmlinuz() {
    let p = crate::testing::debian_vmlinuz();
    let t = std::time::Instant::now();
    let k = KernelImage::from_file(&p).unwrap();
    eprintln!("parsed {} in {:?}", p.display(), t.elapsed());
    assert_eq!(k.format, ImageFormat::BzImageXz);
    assert_eq!(k.notes.guest_os.as_deref(), Some("linux"));
    let pv = k.pv().unwrap();
    eprintln!("{:#x?} notes {:#x?}", pv, k.notes);
    assert_eq!(pv.virt_base, LINUX_BASE);
    // Linux dropped its hypercall page (and the note) in 6.11, backported to Debian's 6.1.
    assert!(k.phys32_entry().is_some());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse(&data);
    }

    #[test]
    fn arbitrary_bytes_after_elf_magic_never_panic(
        data in proptest::collection::vec(any::<u8>(), 0..2048)
    ) {
        let mut b = b"\x7fELF\x02\x01\x01\0".to_vec();
        b.extend_from_slice(&data);
        if b.len() > 19 {
            b[18] = 62;
            b[19] = 0;
        }
        let _ = parse(&b);
    }

    #[test]
    fn mutated_elf_never_panics(
        edits in proptest::collection::vec((0usize..4096, any::<u8>()), 1..12),
        cut in 0usize..5000,
    ) {
        let mut b = TestElf::pv(LINUX_BASE, 0x100_0000, 0x400, 0x100).build();
        for (pos, v) in edits {
            let i = pos % b.len();
            b[i] = v;
        }
        b.truncate(cut.max(1));
        let _ = parse(&b);
    }

    #[test]
    fn mutated_headers_never_panic(
        edits in proptest::collection::vec((0usize..400, any::<u64>()), 1..6),
    ) {
        // Hit the header fields (offsets, sizes, counts) with whole random words.
        let mut b = TestElf::pv(LINUX_BASE, 0x100_0000, 0x400, 0x100).build();
        for (pos, v) in edits {
            let i = pos.min(b.len() - 8);
            b[i..i + 8].copy_from_slice(&v.to_le_bytes());
        }
        let _ = parse(&b);
    }

    #[test]
    fn mutated_bzimage_never_panics(
        edits in proptest::collection::vec((0usize..1400, any::<u8>()), 1..8),
    ) {
        let mut b = bzimage(TINY_XZ, 0x20f);
        for (pos, v) in edits {
            let i = pos % b.len();
            b[i] = v;
        }
        let _ = parse(&b);
    }
}
