//! Host-side check of the test guest ELF files: what a Xen PV or PVH loader
//! (libelf/libxenguest) needs to boot them. Std only, one file, built with plain `rustc` by guests/check.sh.
//!
//!   elfcheck FILE...        check each file, print one line per file, exit 1 on any failure
//!   elfcheck --self-test F  check that broken variants of F are rejected (exit 1 if not)

use std::process::ExitCode;

const MAX_FILE_SIZE: usize = 64 * 1024;
const PAGE: u64 = 4096;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const PF_X: u32 = 1;
// xen/include/public/elfnote.h
const NOTE_ENTRY: u32 = 1;
const NOTE_HYPERCALL_PAGE: u32 = 2;
const NOTE_VIRT_BASE: u32 = 3;
const NOTE_PADDR_OFFSET: u32 = 4;
const NOTE_XEN_VERSION: u32 = 5;
const NOTE_GUEST_OS: u32 = 6;
const NOTE_LOADER: u32 = 8;
const NOTE_PHYS32_ENTRY: u32 = 18;
// noxs/ABI.md section 1: owner "chaos", type 1, desc u32 = the NoXS ABI version.
const CHAOS_OWNER: &[u8] = b"chaos\0";
const CHAOS_NOTE_NOXS: u32 = 1;
const CHAOS_NOXS_ABI: u32 = 2;

struct Segment {
    kind: u32,
    flags: u32,
    offset: u64,
    vaddr: u64,
    paddr: u64,
    filesz: u64,
    memsz: u64,
}

impl Segment {
    /// [start, start + len) lies inside the segment's virtual range.
    fn contains(&self, start: u64, len: u64) -> bool {
        start >= self.vaddr
            && start
                .checked_add(len)
                .is_some_and(|end| end <= self.vaddr + self.memsz)
    }
    /// `addr` lies inside the segment's physical (load) range.
    fn contains_phys(&self, addr: u64) -> bool {
        addr >= self.paddr && addr - self.paddr < self.memsz
    }
}

struct Note {
    name: Vec<u8>,
    kind: u32,
    desc: Vec<u8>,
}

/// What a good image looks like, for the summary line.
struct Summary {
    entry: u64,
    phys32_entry: u64,
    virt_base: u64,
    load: u64,
    pages: u64,
}

fn bytes<const N: usize>(d: &[u8], off: u64) -> Result<[u8; N], String> {
    usize::try_from(off)
        .ok()
        .and_then(|o| d.get(o..o.checked_add(N)?))
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| {
            format!(
                "truncated: {N} bytes at offset {off:#x} are past the end ({} bytes)",
                d.len()
            )
        })
}
fn u16_at(d: &[u8], off: u64) -> Result<u16, String> {
    Ok(u16::from_le_bytes(bytes(d, off)?))
}
fn u32_at(d: &[u8], off: u64) -> Result<u32, String> {
    Ok(u32::from_le_bytes(bytes(d, off)?))
}
fn u64_at(d: &[u8], off: u64) -> Result<u64, String> {
    Ok(u64::from_le_bytes(bytes(d, off)?))
}

fn segments(d: &[u8]) -> Result<Vec<Segment>, String> {
    let (phoff, phentsize, phnum) = (u64_at(d, 0x20)?, u16_at(d, 0x36)?, u16_at(d, 0x38)?);
    if phentsize != 56 {
        return Err(format!("program header size {phentsize}, expected 56"));
    }
    (0..u64::from(phnum))
        .map(|i| {
            let p = phoff + i * 56;
            Ok(Segment {
                kind: u32_at(d, p)?,
                flags: u32_at(d, p + 4)?,
                offset: u64_at(d, p + 8)?,
                vaddr: u64_at(d, p + 16)?,
                paddr: u64_at(d, p + 24)?,
                filesz: u64_at(d, p + 32)?,
                memsz: u64_at(d, p + 40)?,
            })
        })
        .collect()
}

/// Notes of all PT_NOTE segments (4-byte aligned name and descriptor).
fn all_notes(d: &[u8], segs: &[Segment]) -> Result<Vec<Note>, String> {
    let mut notes = Vec::new();
    for s in segs.iter().filter(|s| s.kind == PT_NOTE) {
        let (mut off, end) = (s.offset, s.offset + s.filesz);
        while off + 12 <= end {
            let (namesz, descsz, kind) =
                (u32_at(d, off)?, u32_at(d, off + 4)?, u32_at(d, off + 8)?);
            let name_off = off + 12;
            let desc_off = name_off + u64::from(namesz).next_multiple_of(4);
            let next = desc_off + u64::from(descsz).next_multiple_of(4);
            if next > end {
                return Err(format!("note at {off:#x} runs past its PT_NOTE segment"));
            }
            let slice = |o: u64, n: u32| {
                d.get(o as usize..(o + u64::from(n)) as usize)
                    .unwrap_or(&[])
            };
            notes.push(Note {
                name: slice(name_off, namesz).to_vec(),
                kind,
                desc: slice(desc_off, descsz).to_vec(),
            });
            off = next;
        }
    }
    Ok(notes)
}

fn note<'a>(notes: &'a [Note], kind: u32, what: &str) -> Result<&'a Note, String> {
    notes
        .iter()
        .find(|n| n.kind == kind)
        .ok_or_else(|| format!("Xen note {what} ({kind}) missing"))
}
fn note_u64(notes: &[Note], kind: u32, what: &str) -> Result<u64, String> {
    let n = note(notes, kind, what)?;
    match n.desc.len() {
        8 => Ok(u64::from_le_bytes(
            n.desc[..8].try_into().unwrap_or_default(),
        )),
        4 => Ok(u64::from(u32::from_le_bytes(
            n.desc[..4].try_into().unwrap_or_default(),
        ))),
        l => Err(format!("Xen note {what}: {l}-byte value, expected 4 or 8")),
    }
}
fn note_str(notes: &[Note], kind: u32, what: &str) -> Result<String, String> {
    let n = note(notes, kind, what)?;
    match n.desc.split_last() {
        Some((0, s)) if !s.is_empty() && s.iter().all(|b| b.is_ascii_graphic() || *b == b' ') => {
            Ok(String::from_utf8_lossy(s).into_owned())
        }
        _ => Err(format!(
            "Xen note {what}: expected a NUL-terminated printable string"
        )),
    }
}

/// The kernel says it implements the NoXS frontend (ABI version 2).
fn check_chaos_note(notes: &[Note]) -> Result<(), String> {
    let note = notes
        .iter()
        .find(|n| n.name == CHAOS_OWNER && n.kind == CHAOS_NOTE_NOXS)
        .ok_or("chaos note (owner \"chaos\", type 1: NoXS frontend) missing")?;
    match <[u8; 4]>::try_from(note.desc.as_slice()).map(u32::from_le_bytes) {
        Ok(CHAOS_NOXS_ABI) => Ok(()),
        Ok(v) => Err(format!(
            "chaos note: NoXS ABI version {v}, expected {CHAOS_NOXS_ABI}"
        )),
        Err(_) => Err(format!(
            "chaos note: {}-byte descriptor, expected a 4-byte version",
            note.desc.len()
        )),
    }
}

fn check(d: &[u8]) -> Result<Summary, String> {
    if d.len() >= MAX_FILE_SIZE {
        return Err(format!("file is {} bytes, limit {MAX_FILE_SIZE}", d.len()));
    }
    if d.get(..4) != Some(b"\x7fELF") {
        return Err("not an ELF file (bad magic)".into());
    }
    if d.get(4) != Some(&2) || d.get(5) != Some(&1) {
        return Err("not ELF64 little-endian".into());
    }
    let (etype, machine, entry) = (u16_at(d, 0x10)?, u16_at(d, 0x12)?, u64_at(d, 0x18)?);
    if etype != 2 {
        return Err(format!("ELF type {etype}, expected 2 (EXEC)"));
    }
    if machine != 62 {
        return Err(format!("ELF machine {machine}, expected 62 (x86_64)"));
    }
    let segs = segments(d)?;
    let loads: Vec<&Segment> = segs.iter().filter(|s| s.kind == PT_LOAD).collect();
    if loads.is_empty() {
        return Err("no PT_LOAD segment".into());
    }
    for s in &loads {
        if s.offset
            .checked_add(s.filesz)
            .is_none_or(|e| e > d.len() as u64)
            || s.filesz > s.memsz
        {
            return Err(format!(
                "PT_LOAD at {:#x}: file range outside the file or filesz > memsz",
                s.vaddr
            ));
        }
        // One shift for the whole image: a PV loader moves all paddrs back by one offset.
        if s.vaddr.wrapping_sub(s.paddr) != loads[0].vaddr.wrapping_sub(loads[0].paddr) {
            return Err(format!(
                "PT_LOAD at {:#x}: vaddr - paddr differs from the other segments'",
                s.vaddr
            ));
        }
    }
    if !loads
        .iter()
        .any(|s| s.flags & PF_X != 0 && s.contains(entry, 1))
    {
        return Err(format!(
            "entry {entry:#x} is not inside an executable PT_LOAD segment"
        ));
    }

    let all = all_notes(d, &segs)?;
    check_chaos_note(&all)?;
    let notes: Vec<Note> = all.into_iter().filter(|n| n.name == b"Xen\0").collect();
    if notes.is_empty() {
        return Err("no Xen ELF notes (PT_NOTE with name \"Xen\")".into());
    }
    note_str(&notes, NOTE_GUEST_OS, "GUEST_OS")?;
    let version = note_str(&notes, NOTE_XEN_VERSION, "XEN_VERSION")?;
    if version != "xen-3.0" {
        return Err(format!(
            "Xen note XEN_VERSION is {version:?}, expected \"xen-3.0\""
        ));
    }
    let loader = note_str(&notes, NOTE_LOADER, "LOADER")?;
    if loader != "generic" {
        return Err(format!(
            "Xen note LOADER is {loader:?}, expected \"generic\""
        ));
    }
    let note_entry = note_u64(&notes, NOTE_ENTRY, "ENTRY")?;
    if note_entry != entry {
        return Err(format!(
            "Xen note ENTRY {note_entry:#x} differs from the ELF entry {entry:#x}"
        ));
    }
    let virt_base = note_u64(&notes, NOTE_VIRT_BASE, "VIRT_BASE")?;
    let paddr_offset = note_u64(&notes, NOTE_PADDR_OFFSET, "PADDR_OFFSET")?;
    let start = loads.iter().map(|s| s.vaddr).min().unwrap_or(0);
    let pstart = loads.iter().map(|s| s.paddr).min().unwrap_or(0);
    let end = loads.iter().map(|s| s.vaddr + s.memsz).max().unwrap_or(0);
    if virt_base % PAGE != 0 {
        return Err(format!("VIRT_BASE {virt_base:#x} is not page aligned"));
    }
    // libelf loads segment paddrs shifted by VIRT_BASE - PADDR_OFFSET, and pfn 0 sits at
    // VIRT_BASE: the image must load where it is linked (its lowest vaddr), at pfn 0.
    let kstart = pstart.wrapping_add(virt_base.wrapping_sub(paddr_offset));
    if kstart != start || virt_base != start {
        return Err(format!(
            "image linked at {start:#x} would load at {kstart:#x} with VIRT_BASE {virt_base:#x}, PADDR_OFFSET {paddr_offset:#x}"
        ));
    }
    let hypercall_page = note_u64(&notes, NOTE_HYPERCALL_PAGE, "HYPERCALL_PAGE")?;
    if hypercall_page % PAGE != 0 || !loads.iter().any(|s| s.contains(hypercall_page, PAGE)) {
        return Err(format!("hypercall page {hypercall_page:#x} is not a page-aligned page inside a PT_LOAD segment"));
    }
    // PVH: Xen loads the image at its paddrs and enters this 32-bit physical address with
    // paging off, so it must be inside the physical range of an executable PT_LOAD.
    let phys32_entry = note_u64(&notes, NOTE_PHYS32_ENTRY, "PHYS32_ENTRY")?;
    if phys32_entry > u64::from(u32::MAX)
        || !loads
            .iter()
            .any(|s| s.flags & PF_X != 0 && s.contains_phys(phys32_entry))
    {
        return Err(format!(
            "PVH entry (PHYS32_ENTRY note) {phys32_entry:#x} is not inside an executable PT_LOAD segment below 4 GiB"
        ));
    }
    Ok(Summary {
        entry,
        phys32_entry,
        virt_base,
        load: pstart,
        pages: (end - start).div_ceil(PAGE),
    })
}

/// Broken variants of a good image, each of which `check` must reject.
fn self_test(good: &[u8]) -> Result<usize, String> {
    check(good).map_err(|e| format!("the reference image itself fails: {e}"))?;
    let find = |kind: u32| -> Option<usize> {
        // offset of the descriptor of the Xen note KIND (header: namesz 4, descsz, kind, "Xen\0")
        (0..good.len().saturating_sub(16))
            .find(|&i| {
                good[i..i + 4] == 4u32.to_le_bytes()
                    && good[i + 8..i + 12] == kind.to_le_bytes()
                    && &good[i + 12..i + 16] == b"Xen\0"
            })
            .map(|i| i + 16)
    };
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut v = good.to_vec();
    v[0] = 0;
    cases.push(("bad magic", v));
    let mut v = good.to_vec();
    v[0x10] = 3;
    cases.push(("ELF type DYN", v));
    cases.push(("truncated", good[..good.len().min(0x50)].to_vec()));
    let mut big = good.to_vec();
    big.resize(MAX_FILE_SIZE, 0);
    cases.push(("too big", big));
    let mut v = good.to_vec();
    v[0x18] ^= 0x10;
    cases.push(("ELF entry moved", v));
    // Second program header's p_paddr (offset 24 in the header): segments shifted differently.
    let mut v = good.to_vec();
    let phoff = u64_at(good, 0x20)? as usize;
    v[phoff + 56 + 24 + 1] ^= 0x10;
    cases.push(("one segment's paddr moved", v));
    for (what, kind, bump) in [
        ("ENTRY note off by 16", NOTE_ENTRY, 0x10u8),
        ("hypercall page misaligned", NOTE_HYPERCALL_PAGE, 0x08),
        (
            "hypercall page outside the image",
            NOTE_HYPERCALL_PAGE,
            0x00,
        ),
        ("VIRT_BASE moved", NOTE_VIRT_BASE, 0x00),
        ("XEN_VERSION wrong", NOTE_XEN_VERSION, b'4' - b'3'),
        ("LOADER wrong", NOTE_LOADER, 1),
        ("PHYS32_ENTRY outside the image", NOTE_PHYS32_ENTRY, 0x00),
        ("PHYS32_ENTRY missing", NOTE_PHYS32_ENTRY, 0xff),
    ] {
        let at = find(kind).ok_or_else(|| format!("reference image has no note {kind}"))?;
        let mut v = good.to_vec();
        match kind {
            NOTE_XEN_VERSION => v[at + 4] += bump, // "xen-3.0" -> "xen-4.0"
            NOTE_LOADER => v[at] += bump,
            NOTE_PHYS32_ENTRY if bump == 0xff => v[at - 8] = 0x7f, // note type 18 -> 127
            NOTE_PHYS32_ENTRY => v[at + 2] ^= 0x40,                // 0x10xxxx -> 0x50xxxx
            _ if bump == 0 => v[at + 3] ^= 0x40,                   // far away
            _ => v[at] = v[at].wrapping_add(bump),
        }
        cases.push((what, v));
    }
    // The chaos note: header (namesz 6, descsz 4, type 1), "chaos\0\0\0", version.
    let chaos = (0..good.len().saturating_sub(24))
        .find(|&i| {
            good[i..i + 12] == [6, 0, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0]
                && &good[i + 12..i + 18] == CHAOS_OWNER
        })
        .ok_or("reference image has no chaos note")?;
    let mut v = good.to_vec();
    v[chaos + 12] = b'C';
    cases.push(("chaos note missing (owner renamed)", v));
    let mut v = good.to_vec();
    v[chaos + 20] = 1;
    cases.push(("chaos note with NoXS ABI version 1", v));
    let mut v = good.to_vec();
    v[chaos + 8] = 2;
    cases.push(("chaos note of another type", v));
    for (what, v) in &cases {
        if check(v).is_ok() {
            return Err(format!("a broken image ({what}) was accepted"));
        }
    }
    Ok(cases.len())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--self-test") {
        let Some(path) = args.get(1) else {
            eprintln!("usage: elfcheck --self-test FILE");
            return ExitCode::from(2);
        };
        return match std::fs::read(path)
            .map_err(|e| format!("{path}: {e}"))
            .and_then(|d| self_test(&d))
        {
            Ok(n) => {
                println!("ok   self-test: {n} broken variants of {path} rejected");
                ExitCode::SUCCESS
            }
            Err(e) => {
                println!("FAIL self-test: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if args.is_empty() {
        eprintln!("usage: elfcheck FILE... | --self-test FILE");
        return ExitCode::from(2);
    }
    let mut failed = 0;
    for path in &args {
        match std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|d| check(&d).map(|s| (d.len(), s)))
        {
            Ok((size, s)) => println!(
                "ok   {path}: {size} bytes, entry {:#x}, VIRT_BASE {:#x}, PVH entry {:#x}, PVH load {:#x}, image {} pages",
                s.entry, s.virt_base, s.phys32_entry, s.load, s.pages
            ),
            Err(e) => {
                failed += 1;
                println!("FAIL {path}: {e}");
            }
        }
    }
    if failed > 0 {
        println!("{failed} of {} guest images failed the check", args.len());
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
