//! A small ELF64 little-endian x86_64 reader: program headers (PT_LOAD, PT_NOTE), section
//! headers (SHT_NOTE) and the notes they hold. Every offset read from the file is bounds-checked;
//! malformed input yields an [`ImageProblem`], never a panic.

use super::ImageProblem;

const EI_CLASS: usize = 4;
const EI_DATA: usize = 5;
const ELFCLASS32: u8 = 1;
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const EM_X86_64: u16 = 62;
const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;
const SHDR_SIZE: usize = 64;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const SHT_NOTE: u32 = 7;
/// PF_X | PF_W | PF_R: libelf only loads PT_LOAD segments with one of these set.
const PF_RWX: u32 = 7;
/// Upper bound on headers we walk, so a hostile e_phnum cannot make us loop for long.
const MAX_HEADERS: usize = 4096;

/// The ELF magic, `\x7fELF`.
pub const MAGIC: &[u8; 4] = b"\x7fELF";

pub(crate) fn read_u16(b: &[u8], off: usize) -> Option<u16> {
    let s = b.get(off..off.checked_add(2)?)?;
    Some(u16::from_le_bytes([s[0], s[1]]))
}

pub(crate) fn read_u32(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

pub(crate) fn read_u64(b: &[u8], off: usize) -> Option<u64> {
    let s = b.get(off..off.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some(u64::from_le_bytes(a))
}

/// `&b[off..off+len]`, or a `Truncated` problem naming `what`.
fn slice<'a>(b: &'a [u8], what: &str, off: u64, len: u64) -> Result<&'a [u8], ImageProblem> {
    let truncated = || ImageProblem::Truncated {
        what: what.to_string(),
        offset: off,
        len,
        file_len: b.len() as u64,
    };
    let start = usize::try_from(off).map_err(|_| truncated())?;
    let n = usize::try_from(len).map_err(|_| truncated())?;
    let end = start.checked_add(n).ok_or_else(truncated)?;
    b.get(start..end).ok_or_else(truncated)
}

/// A PT_LOAD program header and the file bytes it covers.
#[derive(Debug, Clone, Copy)]
pub struct LoadHeader {
    pub paddr: u64,
    pub vaddr: u64,
    pub offset: u64,
    pub filesz: u64,
    pub memsz: u64,
}

/// One ELF note.
#[derive(Debug, Clone, Copy)]
pub struct Note<'a> {
    pub name: &'a [u8],
    pub kind: u32,
    pub desc: &'a [u8],
}

/// A parsed ELF64 header with its program and section headers.
pub struct Elf<'a> {
    pub bytes: &'a [u8],
    pub entry: u64,
    pub loads: Vec<LoadHeader>,
    /// File ranges (offset, size) of PT_NOTE segments.
    note_segments: Vec<(u64, u64)>,
    /// File ranges (offset, size) of SHT_NOTE sections.
    note_sections: Vec<(u64, u64)>,
}

impl<'a> Elf<'a> {
    pub fn parse(b: &'a [u8]) -> Result<Self, ImageProblem> {
        if b.len() < 4 || &b[..4] != MAGIC {
            return Err(ImageProblem::UnknownFormat);
        }
        if b.len() < EHDR_SIZE {
            return Err(ImageProblem::Truncated {
                what: "ELF header".into(),
                offset: 0,
                len: EHDR_SIZE as u64,
                file_len: b.len() as u64,
            });
        }
        match b[EI_CLASS] {
            ELFCLASS64 => {}
            ELFCLASS32 => return Err(ImageProblem::Elf32),
            other => return Err(ImageProblem::BadElf(format!("unknown ELF class {other}"))),
        }
        if b[EI_DATA] != ELFDATA2LSB {
            return Err(ImageProblem::BadElf("big-endian ELF not supported".into()));
        }
        // The header is 64 bytes long and present: these reads cannot fail.
        let field16 = |off| read_u16(b, off).unwrap_or(0);
        let field64 = |off| read_u64(b, off).unwrap_or(0);
        let machine = field16(18);
        if machine != EM_X86_64 {
            return Err(ImageProblem::NotX86_64(machine));
        }
        let entry = field64(24);
        let phoff = field64(32);
        let shoff = field64(40);
        let phentsize = field16(54) as u64;
        let phnum = field16(56) as usize;
        let shentsize = field16(58) as u64;
        let shnum = field16(60) as usize;

        let mut elf = Elf {
            bytes: b,
            entry,
            loads: Vec::new(),
            note_segments: Vec::new(),
            note_sections: Vec::new(),
        };

        if phnum > 0 {
            if phentsize < PHDR_SIZE as u64 {
                return Err(ImageProblem::BadElf(format!(
                    "program header size {phentsize} is smaller than {PHDR_SIZE}"
                )));
            }
            let table = slice(b, "program header table", phoff, phentsize * phnum as u64)?;
            for i in 0..phnum.min(MAX_HEADERS) {
                let h = &table[i * phentsize as usize..];
                let p_type = read_u32(h, 0).unwrap_or(0);
                let p_flags = read_u32(h, 4).unwrap_or(0);
                let offset = read_u64(h, 8).unwrap_or(0);
                let vaddr = read_u64(h, 16).unwrap_or(0);
                let paddr = read_u64(h, 24).unwrap_or(0);
                let filesz = read_u64(h, 32).unwrap_or(0);
                let memsz = read_u64(h, 40).unwrap_or(0);
                match p_type {
                    PT_LOAD if p_flags & PF_RWX != 0 => {
                        if filesz > memsz {
                            return Err(ImageProblem::BadElf(format!(
                                "segment {i}: file size {filesz:#x} exceeds memory size {memsz:#x}"
                            )));
                        }
                        slice(b, &format!("segment {i}"), offset, filesz)?;
                        elf.loads.push(LoadHeader {
                            paddr,
                            vaddr,
                            offset,
                            filesz,
                            memsz,
                        });
                    }
                    // Some binutils leave p_offset 0 on note segments; libelf skips those too.
                    PT_NOTE if offset != 0 => {
                        slice(b, &format!("note segment {i}"), offset, filesz)?;
                        elf.note_segments.push((offset, filesz));
                    }
                    _ => {}
                }
            }
        }

        // Section headers only matter for notes; an unreadable table is not fatal for loading,
        // but a table that claims to exist and lies is a broken file.
        if shnum > 0 && shoff != 0 {
            if shentsize < SHDR_SIZE as u64 {
                return Err(ImageProblem::BadElf(format!(
                    "section header size {shentsize} is smaller than {SHDR_SIZE}"
                )));
            }
            let table = slice(b, "section header table", shoff, shentsize * shnum as u64)?;
            for i in 1..shnum.min(MAX_HEADERS) {
                let h = &table[i * shentsize as usize..];
                if read_u32(h, 4) == Some(SHT_NOTE) {
                    let offset = read_u64(h, 24).unwrap_or(0);
                    let size = read_u64(h, 32).unwrap_or(0);
                    slice(b, &format!("note section {i}"), offset, size)?;
                    elf.note_sections.push((offset, size));
                }
            }
        }
        Ok(elf)
    }

    /// File bytes of a PT_LOAD segment (checked in `parse`).
    pub fn load_bytes(&self, h: &LoadHeader) -> &'a [u8] {
        slice(self.bytes, "segment", h.offset, h.filesz).unwrap_or(&[])
    }

    /// Notes of the PT_NOTE segments.
    pub fn segment_notes(&self) -> Result<Vec<Note<'a>>, ImageProblem> {
        self.notes_in(&self.note_segments, "note segment")
    }

    /// Notes of the SHT_NOTE sections.
    pub fn section_notes(&self) -> Result<Vec<Note<'a>>, ImageProblem> {
        self.notes_in(&self.note_sections, "note section")
    }

    fn notes_in(&self, ranges: &[(u64, u64)], what: &str) -> Result<Vec<Note<'a>>, ImageProblem> {
        let mut notes = Vec::new();
        for &(offset, size) in ranges {
            let region = slice(self.bytes, what, offset, size)?;
            parse_notes(region, offset, &mut notes)?;
        }
        Ok(notes)
    }
}

fn align4(n: usize) -> Option<usize> {
    Some(n.checked_add(3)? & !3)
}

/// Walks the notes of one region (name and desc padded to 4 bytes, as Xen's libelf reads them).
fn parse_notes<'a>(
    region: &'a [u8],
    region_offset: u64,
    out: &mut Vec<Note<'a>>,
) -> Result<(), ImageProblem> {
    let mut pos = 0usize;
    // Trailing padding shorter than a note header is ignored, as libelf does.
    while region.len().saturating_sub(pos) >= 12 {
        let namesz = read_u32(region, pos).unwrap_or(0) as usize;
        let descsz = read_u32(region, pos + 4).unwrap_or(0) as usize;
        let kind = read_u32(region, pos + 8).unwrap_or(0);
        let truncated = || ImageProblem::Truncated {
            what: format!("ELF note of type {kind}"),
            offset: region_offset + pos as u64,
            len: 12 + namesz as u64 + descsz as u64,
            file_len: region_offset + region.len() as u64,
        };
        let name_start = pos + 12;
        let desc_start = align4(namesz)
            .and_then(|n| name_start.checked_add(n))
            .ok_or_else(truncated)?;
        let next = align4(descsz)
            .and_then(|n| desc_start.checked_add(n))
            .ok_or_else(truncated)?;
        let name = region
            .get(name_start..name_start + namesz)
            .ok_or_else(truncated)?;
        let desc = region
            .get(desc_start..desc_start.checked_add(descsz).ok_or_else(truncated)?)
            .ok_or_else(truncated)?;
        out.push(Note { name, kind, desc });
        pos = next;
    }
    Ok(())
}
