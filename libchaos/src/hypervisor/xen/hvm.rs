//! HVM save records (xen/include/public/arch-x86/hvm/save.h): the initial vcpu state of a PVH
//! guest is loaded with `XEN_DOMCTL_sethvmcontext` as a small save image (header, CPU record,
//! end), the way libxc's `vcpu_hvm()` does it; its header has to be Xen's own, so it is copied
//! from the domain's current context first.

use super::abi::plain;

pub const HVM_SAVE_CODE_END: u16 = 0;
pub const HVM_SAVE_CODE_HEADER: u16 = 1;
pub const HVM_SAVE_CODE_CPU: u16 = 2;
pub const HVM_SAVE_CODE_MTRR: u16 = 14;

/// `X86_CR0_PE | X86_CR0_ET`: protected mode, paging off.
const CR0_PE_ET: u64 = 0x11;
/// MTRR default type write-back, MTRRs enabled.
pub const MTRR_DEF_TYPE_WB_ENABLED: u64 = 6 | (1 << 11);

/// `struct hvm_save_descriptor`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct SaveDescriptor {
    pub typecode: u16,
    pub instance: u16,
    pub length: u32,
}

/// `struct hvm_save_header`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct SaveHeader {
    pub magic: u32,
    pub version: u32,
    pub changeset: u64,
    pub cpuid: u32,
    pub gtsc_khz: u32,
}

/// `struct hvm_hw_cpu`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct HvmHwCpu {
    pub fpu_regs: [u8; 512],
    /// rax rbx rcx rdx rbp rsi rdi rsp r8 .. r15, in that order.
    pub gprs: [u64; 16],
    pub rip: u64,
    pub rflags: u64,
    /// cr0 cr2 cr3 cr4.
    pub cr: [u64; 4],
    /// dr0 dr1 dr2 dr3 dr6 dr7.
    pub dr: [u64; 6],
    /// cs ds es fs gs ss tr ldtr.
    pub sel: [u32; 8],
    /// cs ds es fs gs ss tr ldtr idtr gdtr.
    pub limit: [u32; 10],
    /// cs ds es fs gs ss tr ldtr idtr gdtr.
    pub base: [u64; 10],
    /// cs ds es fs gs ss tr ldtr.
    pub arbytes: [u32; 8],
    pub sysenter: [u64; 3],
    pub shadow_gs: u64,
    /// flags lstar star cstar syscall_mask efer tsc_aux.
    pub msrs: [u64; 7],
    pub tsc: u64,
    pub pending_event: u32,
    pub error_code: u32,
    pub flags: u32,
    pub pad0: u32,
}

/// `struct hvm_hw_mtrr`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct HvmHwMtrr {
    pub msr_pat_cr: u64,
    pub msr_mtrr_var: [u64; 16],
    pub msr_mtrr_fixed: [u64; 11],
    pub msr_mtrr_cap: u64,
    pub msr_mtrr_def_type: u64,
}

/// Header, one record, end: what `sethvmcontext` takes.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct OneRecord<R> {
    pub header_d: SaveDescriptor,
    pub header: SaveHeader,
    pub record_d: SaveDescriptor,
    pub record: R,
    pub end_d: SaveDescriptor,
}

plain! {
    u8 = 1;
    SaveDescriptor = 8;
    SaveHeader = 24;
    HvmHwCpu = 1032;
    HvmHwMtrr = 240;
    OneRecord<HvmHwCpu> = 1080;
    OneRecord<HvmHwMtrr> = 288;
}

impl<R: Copy> OneRecord<R> {
    pub fn new(header: SaveHeader, typecode: u16, instance: u16, record: R) -> Self {
        OneRecord {
            header_d: SaveDescriptor {
                typecode: HVM_SAVE_CODE_HEADER,
                instance: 0,
                length: std::mem::size_of::<SaveHeader>() as u32,
            },
            header,
            record_d: SaveDescriptor {
                typecode,
                instance,
                length: std::mem::size_of::<R>() as u32,
            },
            record,
            end_d: SaveDescriptor {
                typecode: HVM_SAVE_CODE_END,
                instance: 0,
                length: 0,
            },
        }
    }
}

/// The boot vcpu of a PVH guest: flat 32-bit protected mode, paging off, at `rip` with `rbx`
/// (the hvm_start_info address), as libxc's `vcpu_hvm()` sets it.
pub fn pvh_boot_cpu(rip: u32, rbx: u32) -> HvmHwCpu {
    let mut c = HvmHwCpu {
        fpu_regs: [0; 512],
        gprs: [0; 16],
        rip: rip as u64,
        rflags: 0,
        cr: [CR0_PE_ET, 0, 0, 0],
        dr: [
            0,
            0,
            0,
            0,
            super::abi::X86_DR6_DEFAULT,
            super::abi::X86_DR7_DEFAULT,
        ],
        sel: [0; 8],
        limit: [0; 10],
        base: [0; 10],
        arbytes: [0; 8],
        sysenter: [0; 3],
        shadow_gs: 0,
        msrs: [0; 7],
        tsc: 0,
        pending_event: 0,
        error_code: 0,
        flags: 0,
        pad0: 0,
    };
    c.gprs[1] = rbx as u64;
    // cs ds es ss: base 0, limit 4 GiB; tr: a minimal 32-bit TSS.
    for seg in [0, 1, 2, 5] {
        c.limit[seg] = u32::MAX;
    }
    c.limit[6] = 0x67;
    c.arbytes[0] = 0xc9b; // code, read/exec, accessed, present, 32-bit, 4K granular
    c.arbytes[1] = 0xc93; // data, read/write, accessed, present, 32-bit, 4K granular
    c.arbytes[2] = 0xc93;
    c.arbytes[5] = 0xc93;
    c.arbytes[6] = 0x8b; // busy 32-bit TSS, present
    c
}

/// A record of a save image: (typecode, instance, payload).
pub fn records(image: &[u8]) -> impl Iterator<Item = (u16, u16, &[u8])> {
    let mut rest = image;
    std::iter::from_fn(move || {
        let d = rest.get(..8)?;
        let typecode = u16::from_le_bytes([d[0], d[1]]);
        let instance = u16::from_le_bytes([d[2], d[3]]);
        let len = u32::from_le_bytes([d[4], d[5], d[6], d[7]]) as usize;
        let payload = rest.get(8..8 + len)?;
        rest = &rest[8 + len..];
        (typecode != HVM_SAVE_CODE_END).then_some((typecode, instance, payload))
    })
}

fn u64s<const N: usize>(b: &[u8]) -> Option<[u64; N]> {
    let mut out = [0u64; N];
    for (i, v) in out.iter_mut().enumerate() {
        *v = u64::from_le_bytes(b.get(i * 8..i * 8 + 8)?.try_into().ok()?);
    }
    Some(out)
}

pub fn parse_header(b: &[u8]) -> Option<SaveHeader> {
    let u32_at = |at: usize| Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?));
    Some(SaveHeader {
        magic: u32_at(0)?,
        version: u32_at(4)?,
        changeset: u64s::<1>(b.get(8..16)?)?[0],
        cpuid: u32_at(16)?,
        gtsc_khz: u32_at(20)?,
    })
}

pub fn parse_mtrr(b: &[u8]) -> Option<HvmHwMtrr> {
    let v = u64s::<30>(b)?;
    let mut m = HvmHwMtrr {
        msr_pat_cr: v[0],
        ..Default::default()
    };
    m.msr_mtrr_var.copy_from_slice(&v[1..17]);
    m.msr_mtrr_fixed.copy_from_slice(&v[17..28]);
    m.msr_mtrr_cap = v[28];
    m.msr_mtrr_def_type = v[29];
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    #[test]
    fn hvm_hw_cpu_layout_matches_c() {
        // Offsets from Xen 4.17.7's arch-x86/hvm/save.h compiled for x86_64.
        assert_eq!(offset_of!(HvmHwCpu, gprs), 512);
        assert_eq!(offset_of!(HvmHwCpu, rip), 640);
        assert_eq!(offset_of!(HvmHwCpu, cr), 656);
        assert_eq!(offset_of!(HvmHwCpu, dr), 688);
        assert_eq!(offset_of!(HvmHwCpu, sel), 736);
        assert_eq!(offset_of!(HvmHwCpu, limit), 768);
        assert_eq!(offset_of!(HvmHwCpu, base), 808);
        assert_eq!(offset_of!(HvmHwCpu, arbytes), 888);
        assert_eq!(offset_of!(HvmHwCpu, msrs), 952);
        assert_eq!(offset_of!(HvmHwCpu, pending_event), 1016);
        assert_eq!(offset_of!(HvmHwCpu, flags), 1024);
        assert_eq!(offset_of!(OneRecord<HvmHwCpu>, record), 40);
        assert_eq!(offset_of!(OneRecord<HvmHwCpu>, end_d), 1072);
    }

    #[test]
    fn records_walks_a_save_image_and_parses_header_and_mtrr() {
        let mut img = Vec::new();
        let mut push = |code: u16, inst: u16, payload: &[u8]| {
            img.extend_from_slice(&code.to_le_bytes());
            img.extend_from_slice(&inst.to_le_bytes());
            img.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            img.extend_from_slice(payload);
        };
        let mut header = vec![0u8; 24];
        header[..4].copy_from_slice(&0x5438_1286u32.to_le_bytes());
        header[8..16].copy_from_slice(&0x1234u64.to_le_bytes());
        let mut mtrr = vec![0u8; 240];
        mtrr[232..240].copy_from_slice(&0xc06u64.to_le_bytes());
        push(HVM_SAVE_CODE_HEADER, 0, &header);
        push(HVM_SAVE_CODE_CPU, 0, &[0; 1032]);
        push(HVM_SAVE_CODE_MTRR, 0, &mtrr);
        push(HVM_SAVE_CODE_END, 0, &[]);
        let recs: Vec<_> = records(&img).map(|(c, i, p)| (c, i, p.len())).collect();
        assert_eq!(recs, vec![(1, 0, 24), (2, 0, 1032), (14, 0, 240)]);
        let (_, _, h) = records(&img).next().unwrap();
        let h = parse_header(h).unwrap();
        assert_eq!((h.magic, h.changeset), (0x5438_1286, 0x1234));
        let (_, _, m) = records(&img).find(|r| r.0 == HVM_SAVE_CODE_MTRR).unwrap();
        assert_eq!(parse_mtrr(m).unwrap().msr_mtrr_def_type, 0xc06);
        // A truncated image ends the walk instead of reading past it.
        assert_eq!(records(&img[..20]).count(), 0);
    }

    #[test]
    fn pvh_boot_cpu_is_flat_protected_mode() {
        let c = pvh_boot_cpu(0x10_0000, 0x2000);
        assert_eq!((c.rip, c.gprs[1], c.cr[0]), (0x10_0000, 0x2000, 0x11));
        assert_eq!(
            (c.limit[0], c.arbytes[0], c.arbytes[6]),
            (u32::MAX, 0xc9b, 0x8b)
        );
    }
}
