//! Test helper: emits small ELF64 x86_64 kernels with Xen notes.

use super::notes::*;

#[derive(Debug)]
pub struct TestSegment {
    pub paddr: u64,
    pub vaddr: u64,
    pub data: Vec<u8>,
    pub memsz: u64,
}

#[derive(Debug)]
pub struct TestElf {
    pub entry: u64,
    pub segments: Vec<TestSegment>,
    /// (type, desc) of notes named "Xen".
    pub notes: Vec<(u32, Vec<u8>)>,
    /// Put the notes in an SHT_NOTE section instead of a PT_NOTE segment.
    pub notes_in_section: bool,
    /// Carry chaos's NoXS note (owner "chaos", type 1) with this ABI version.
    pub noxs: Option<u32>,
}

pub fn num(kind: u32, v: u64) -> (u32, Vec<u8>) {
    (kind, v.to_le_bytes().to_vec())
}

pub fn text(kind: u32, s: &str) -> (u32, Vec<u8>) {
    let mut d = s.as_bytes().to_vec();
    d.push(0);
    (kind, d)
}

/// Bytes of a recognisable kernel body: byte i is (i * 7 + 3) as u8.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + 3) as u8).collect()
}

impl TestElf {
    /// A generic-loader PV kernel at `virt_base`, its one segment at physical `paddr` holding
    /// `text_len` bytes of [`pattern`] plus `bss` zero bytes. Entry is the segment start; the
    /// hypercall page is its second page.
    pub fn pv(virt_base: u64, paddr: u64, text_len: usize, bss: u64) -> TestElf {
        let start = virt_base + paddr;
        TestElf {
            entry: start,
            segments: vec![TestSegment {
                paddr,
                vaddr: start,
                data: pattern(text_len),
                memsz: text_len as u64 + bss,
            }],
            notes: vec![
                text(XEN_ELFNOTE_GUEST_OS, "chaos-test"),
                text(XEN_ELFNOTE_LOADER, "generic"),
                text(XEN_ELFNOTE_XEN_VERSION, "xen-3.0"),
                num(XEN_ELFNOTE_VIRT_BASE, virt_base),
                num(XEN_ELFNOTE_PADDR_OFFSET, 0),
                num(XEN_ELFNOTE_ENTRY, start),
                num(XEN_ELFNOTE_HYPERCALL_PAGE, start + 0x1000),
                text(
                    XEN_ELFNOTE_FEATURES,
                    "writable_descriptor_tables|!pae_pgdir_above_4gb",
                ),
            ],
            notes_in_section: false,
            noxs: None,
        }
    }

    pub fn set_note(&mut self, note: (u32, Vec<u8>)) {
        self.notes.retain(|(k, _)| *k != note.0);
        self.notes.push(note);
    }

    pub fn build(&self) -> Vec<u8> {
        let mut notes = Vec::new();
        let chaos = self
            .noxs
            .map(|v| (&b"chaos\0"[..], noxs::NOTE_NOXS, v.to_le_bytes().to_vec()));
        let xen = self
            .notes
            .iter()
            .map(|(k, d)| (&b"Xen\0"[..], *k, d.clone()));
        for (name, kind, desc) in xen.chain(chaos) {
            notes.extend_from_slice(&(name.len() as u32).to_le_bytes());
            notes.extend_from_slice(&(desc.len() as u32).to_le_bytes());
            notes.extend_from_slice(&kind.to_le_bytes());
            notes.extend_from_slice(name);
            while notes.len() % 4 != 0 {
                notes.push(0);
            }
            notes.extend_from_slice(&desc);
            while notes.len() % 4 != 0 {
                notes.push(0);
            }
        }
        let nph = self.segments.len() + usize::from(!self.notes_in_section);
        let notes_off = 64 + 56 * nph;
        let mut data_off = notes_off + notes.len();
        let mut seg_offs = Vec::new();
        for s in &self.segments {
            data_off = (data_off + 15) & !15;
            seg_offs.push(data_off);
            data_off += s.data.len();
        }
        let sh_off = (data_off + 7) & !7;
        let nsh = if self.notes_in_section { 2 } else { 0 };

        let mut b = vec![0u8; sh_off + 64 * nsh];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2; // ELFCLASS64
        b[5] = 1; // little endian
        b[6] = 1; // EV_CURRENT
        b[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        b[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        b[20..24].copy_from_slice(&1u32.to_le_bytes());
        b[24..32].copy_from_slice(&self.entry.to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        let shoff = if nsh > 0 { sh_off as u64 } else { 0 };
        b[40..48].copy_from_slice(&shoff.to_le_bytes());
        b[52..54].copy_from_slice(&64u16.to_le_bytes());
        b[54..56].copy_from_slice(&56u16.to_le_bytes());
        b[56..58].copy_from_slice(&(nph as u16).to_le_bytes());
        b[58..60].copy_from_slice(&64u16.to_le_bytes());
        b[60..62].copy_from_slice(&(nsh as u16).to_le_bytes());

        let mut ph = 64;
        let mut put_ph = |b: &mut Vec<u8>,
                          t: u32,
                          flags: u32,
                          off: u64,
                          va: u64,
                          pa: u64,
                          fsz: u64,
                          msz: u64| {
            let h = &mut b[ph..ph + 56];
            h[0..4].copy_from_slice(&t.to_le_bytes());
            h[4..8].copy_from_slice(&flags.to_le_bytes());
            h[8..16].copy_from_slice(&off.to_le_bytes());
            h[16..24].copy_from_slice(&va.to_le_bytes());
            h[24..32].copy_from_slice(&pa.to_le_bytes());
            h[32..40].copy_from_slice(&fsz.to_le_bytes());
            h[40..48].copy_from_slice(&msz.to_le_bytes());
            h[48..56].copy_from_slice(&4096u64.to_le_bytes());
            ph += 56;
        };
        for (s, &off) in self.segments.iter().zip(&seg_offs) {
            put_ph(
                &mut b,
                1,
                7,
                off as u64,
                s.vaddr,
                s.paddr,
                s.data.len() as u64,
                s.memsz,
            );
            b[off..off + s.data.len()].copy_from_slice(&s.data);
        }
        if !self.notes_in_section {
            let n = notes.len() as u64;
            put_ph(&mut b, 4, 4, notes_off as u64, 0, 0, n, n);
        }
        b[notes_off..notes_off + notes.len()].copy_from_slice(&notes);
        if nsh > 0 {
            // Section 0 is the null section; section 1 the notes.
            let h = &mut b[sh_off + 64..sh_off + 128];
            h[4..8].copy_from_slice(&7u32.to_le_bytes()); // SHT_NOTE
            h[24..32].copy_from_slice(&(notes_off as u64).to_le_bytes());
            h[32..40].copy_from_slice(&(notes.len() as u64).to_le_bytes());
        }
        b
    }
}
