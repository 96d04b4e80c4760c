//! PVH boot: the same image also starts as a PVH guest (XEN_ELFNOTE_PHYS32_ENTRY).
//!
//! Xen loads the image at its ELF paddrs (1 MiB; linked at VIRT_BASE = 7 MiB, PHYS_SHIFT lower)
//! and enters `xenpv_pvh_start` in 32-bit protected mode, paging off, flat segments, %ebx = the
//! physical address of `struct hvm_start_info` (docs/misc/pvh.pandoc,
//! public/arch-x86/hvm/start_info.h). The stub identity maps the first 4 GiB with 2 MiB pages
//! (start_info and command line just after the image, and the console and Xenstore rings,
//! which the toolstack puts in the special pages just below 4 GiB), except the 2 MiB at
//! [6 MiB, 8 MiB), which map [0, 2 MiB) so the image's linked addresses reach it (physical
//! [0, 1 GiB) is mapped again at 4 GiB so the frames there stay reachable); enables PAE,
//! long mode, paging and SSE, loads its own GDT, jumps to 64-bit code on its own stack and calls
//! `xenpv_pvh_main` (defined by `entry!`). Rust then asks Xen to fill the hypercall page (MSR
//! from CPUID leaf base + 2) and from there runs exactly as under PV: same hypercalls (the
//! page hides vmcall/vmmcall), same console and Xenstore code; only where the rings are
//! found differs (HVM params instead of start_info).

#[cfg(not(test))]
use core::arch::{asm, global_asm, x86_64::__cpuid};

/// `hvm_start_info.magic` (XEN_HVM_START_MAGIC_VALUE).
const START_MAGIC: u32 = 0x336e_c578;
/// Longest command line we read (like PV's MAX_GUEST_CMDLINE).
const MAX_CMDLINE: usize = 1024;
/// Everything below this is identity mapped by the stub, except [HOLE, HOLE + 2 MiB).
const MAPPED_END: u64 = 1 << 32;
/// The 2 MiB large page that maps the image's virtual addresses instead (see the stub).
const HOLE: u64 = crate::VIRT_BASE & !0x1f_ffff;
const LARGE_PAGE: u64 = 0x20_0000;
/// Physical [0, 1 GiB) is also mapped here, so the frames the hole hides stay reachable (a
/// toolstack that puts special pages at the end of memory puts them there when the guest has
/// 6 to 8 MiB).
const ALIAS: u64 = 1 << 32;

/// Where [addr, addr + len) of guest-physical memory is mapped: at `addr` (identity) below
/// 4 GiB, at `ALIAS + addr` inside the hole; None otherwise (also for ranges across its edges).
fn virt(addr: u64, len: u64) -> Option<u64> {
    let end = addr.checked_add(len)?;
    if end > MAPPED_END {
        None
    } else if end <= HOLE || addr >= HOLE + LARGE_PAGE {
        Some(addr)
    } else if addr >= HOLE && end <= HOLE + LARGE_PAGE {
        Some(ALIAS + addr)
    } else {
        None
    }
}

// Page tables and stack live in .bss (no file bytes): PML4, PDPT, 4 page directories, the alias's
// page directory, 8 KiB stack.
// Host unit tests (`cargo test -p xenpv --lib`) leave the stub out: it is 32-bit code that needs
// the guest's linker script.
#[cfg(not(test))]
global_asm!(
    ".pushsection .xen_pvh_bss, \"aw\", @nobits",
    ".balign 4096",
    "xenpv_pvh_pml4: .skip 4096",
    "xenpv_pvh_pdpt: .skip 4096",
    "xenpv_pvh_pd: .skip 4 * 4096",
    "xenpv_pvh_pd_alias: .skip 4096",
    // The stack of both entries (PV switches to it too: its bootstrap stack is one page).
    ".globl xenpv_stack_top",
    "xenpv_stack: .skip 8192",
    "xenpv_stack_top:",
    ".popsection",
    // GDT: null, 64-bit code (selector 8), flat data (selector 16); accessed bits preset.
    ".pushsection .rodata.xenpv_pvh_gdt, \"a\"",
    ".balign 8",
    "xenpv_pvh_gdt: .quad 0, 0x00af9b000000ffff, 0x00cf93000000ffff",
    "xenpv_pvh_gdt_ptr: .word 3 * 8 - 1",
    ".long xenpv_pvh_gdt - {shift}",
    ".popsection",
    ".pushsection .text.pvh, \"ax\"",
    ".code32",
    ".globl xenpv_pvh_start",
    // Paging is off until CR0.PG: every symbol is used at its physical address (- shift).
    "xenpv_pvh_start:",
    "cld",
    "cli",
    "mov %ebx, %esi",
    // 2048 PD entries: entry i maps [i * 2 MiB, +2 MiB), present | writable | 2 MiB page.
    "mov $(xenpv_pvh_pd - {shift}), %edi",
    "xor %ecx, %ecx",
    "1: mov %ecx, %eax",
    "shl $21, %eax",
    "or $0x83, %eax",
    "mov %eax, (%edi,%ecx,8)",
    "inc %ecx",
    "cmp $2048, %ecx",
    "jne 1b",
    // Except the 2 MiB that hold the image's virtual addresses: onto its physical ones.
    "movl $((({virt} - {shift}) & ~0x1fffff) | 0x83), ({virt} >> 21) * 8(%edi)",
    // PDPT entries 0..3 -> the 4 page directories (present | writable).
    "mov $(xenpv_pvh_pdpt - {shift}), %edi",
    "mov $(xenpv_pvh_pd - {shift} + 3), %eax",
    "xor %ecx, %ecx",
    "2: mov %eax, (%edi,%ecx,8)",
    "add $4096, %eax",
    "inc %ecx",
    "cmp $4, %ecx",
    "jne 2b",
    // PDPT entry 4: the alias, [0, 1 GiB) again at 4 GiB (2 MiB pages).
    "mov $(xenpv_pvh_pd_alias - {shift}), %edi",
    "xor %ecx, %ecx",
    "4: mov %ecx, %eax",
    "shl $21, %eax",
    "or $0x83, %eax",
    "mov %eax, (%edi,%ecx,8)",
    "inc %ecx",
    "cmp $512, %ecx",
    "jne 4b",
    "movl $(xenpv_pvh_pd_alias - {shift} + 3), xenpv_pvh_pdpt - {shift} + 32",
    "movl $(xenpv_pvh_pdpt - {shift} + 3), xenpv_pvh_pml4 - {shift}",
    "mov $(xenpv_pvh_pml4 - {shift}), %eax",
    "mov %eax, %cr3",
    // CR4: PAE | OSFXSR | OSXMMEXCPT (Rust code may use SSE).
    "mov %cr4, %eax",
    "or $0x620, %eax",
    "mov %eax, %cr4",
    // EFER.LME
    "mov $0xc0000080, %ecx",
    "rdmsr",
    "or $0x100, %eax",
    "wrmsr",
    // CR0: PG | PE | MP, clear EM and TS. We keep running at the physical address (identity
    // mapped); the GDT base is physical too, valid with and without paging.
    "mov %cr0, %eax",
    "and $~0xc, %eax",
    "or $0x80000003, %eax",
    "mov %eax, %cr0",
    "lgdt xenpv_pvh_gdt_ptr - {shift}",
    // Into 64-bit code at its linked (virtual) address.
    "ljmp $8, $3f",
    ".code64",
    "3: mov $16, %eax",
    "mov %eax, %ds",
    "mov %eax, %es",
    "mov %eax, %ss",
    "xor %eax, %eax",
    "mov %eax, %fs",
    "mov %eax, %gs",
    "mov $xenpv_stack_top, %esp",
    "mov %esi, %edi",
    "call xenpv_pvh_main",
    "ud2",
    ".popsection",
    shift = const crate::PHYS_SHIFT,
    virt = const crate::VIRT_BASE,
    options(att_syntax)
);

#[cfg(not(test))]
/// Asks Xen to write the hypercall stubs into HYPERCALL_PAGE (identity mapped, so its virtual
/// address is its physical one). Returns false when no Xen CPUID leaves are found.
pub fn setup_hypercall_page() -> bool {
    for base in (0x4000_0000u32..0x4001_0000).step_by(0x100) {
        let id = __cpuid(base);
        // "XenVMMXenVMM" in ebx, ecx, edx; eax = the highest leaf.
        if (id.ebx, id.ecx, id.edx) == (0x566e_6558, 0x6558_4d4d, 0x4d4d_566e) && id.eax >= base + 2
        {
            let msr = __cpuid(base + 2).ebx;
            // Xen wants the physical address; the page is linked PHYS_SHIFT above it.
            let page = crate::hypercall::page_address() - crate::PHYS_SHIFT;
            // SAFETY: writing the page's physical address to Xen's hypercall MSR makes Xen fill
            // that page of our image with stubs; nothing else is affected.
            unsafe {
                asm!("wrmsr", in("ecx") msr, in("eax") page as u32, in("edx") (page >> 32) as u32,
                     options(nostack, preserves_flags));
            }
            return true;
        }
    }
    false
}

/// Reads a u32/u64 field of guest-physical memory below 4 GiB.
fn phys<T: Copy>(addr: u64) -> Option<T> {
    if addr == 0 {
        return None;
    }
    let va = virt(addr, core::mem::size_of::<T>() as u64)?;
    // SAFETY: the stub maps all of [0, 4 GiB) there (`virt`); Xen gave us this address.
    Some(unsafe { (va as *const T).read_unaligned() })
}

/// The command line named by `hvm_start_info` at physical `info`, up to its NUL (at most
/// 1024 bytes); empty when there is none or the structure is not valid.
pub fn cmdline(info: u64) -> &'static [u8] {
    if phys::<u32>(info) != Some(START_MAGIC) {
        return &[];
    }
    // hvm_start_info: magic, version, flags, nr_modules (u32 each), modlist_paddr, cmdline_paddr.
    let Some(addr) = phys::<u64>(info + 24).filter(|&a| a != 0) else {
        return &[];
    };
    let Some(va) = virt(addr, MAX_CMDLINE as u64) else {
        return &[];
    };
    // SAFETY: mapped (checked above); the toolstack wrote a NUL-terminated string there.
    let bytes: &'static [u8] = unsafe { core::slice::from_raw_parts(va as *const u8, MAX_CMDLINE) };
    let len = bytes.iter().position(|&b| b == 0).unwrap_or(MAX_CMDLINE);
    &bytes[..len]
}

/// `hvm_start_info.flags` at physical `info` (0 when the structure is not valid).
pub fn flags(info: u64) -> u32 {
    if phys::<u32>(info) != Some(START_MAGIC) {
        return 0;
    }
    phys::<u32>(info + 8).unwrap_or(0)
}

/// Most memory map entries we look at.
const MAX_MEMMAP_ENTRIES: u32 = 128;
/// E820 types a toolstack gives guest memory or its special pages.
const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;

/// True if guest-physical `addr` is memory of ours according to `hvm_start_info`'s memory map
/// (a RAM or reserved entry: chaos marks the special pages reserved), or if there is no map
/// (version 0 of the structure). False when the structure is not valid.
pub fn in_memory_map(info: u64, addr: u64) -> bool {
    if phys::<u32>(info) != Some(START_MAGIC) {
        return false;
    }
    // Version 1 adds memmap_paddr (offset 40) and memmap_entries (48); entries are
    // { addr: u64, size: u64, type: u32, reserved: u32 }.
    let (Some(version), Some(map), Some(count)) = (
        phys::<u32>(info + 4),
        phys::<u64>(info + 40),
        phys::<u32>(info + 48),
    ) else {
        return false;
    };
    if version < 1 || map == 0 || count == 0 {
        return true;
    }
    (0..u64::from(count.min(MAX_MEMMAP_ENTRIES))).any(|i| {
        let e = map + i * 24;
        match (phys::<u64>(e), phys::<u64>(e + 8), phys::<u32>(e + 16)) {
            (Some(start), Some(size), Some(kind)) => {
                (kind == E820_RAM || kind == E820_RESERVED) && addr >= start && addr - start < size
            }
            _ => false,
        }
    })
}

/// Where guest frame `pfn` is mapped (identity, or the alias for the hole), below 4 GiB.
pub fn frame(pfn: u64) -> Option<*mut u8> {
    if pfn == 0 {
        return None;
    }
    let va = virt(pfn.checked_mul(crate::PAGE_SIZE)?, crate::PAGE_SIZE)?;
    Some(va as *mut u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn physical_memory_is_reached_directly_or_through_the_alias() {
        assert_eq!(virt(0x10_0000, 4096), Some(0x10_0000));
        assert_eq!(
            virt(0x5f_f000, 4096),
            Some(0x5f_f000),
            "just below the hole"
        );
        assert_eq!(
            virt(0x60_0000, 4096),
            Some(ALIAS + 0x60_0000),
            "in the hole"
        );
        assert_eq!(virt(0x7f_f000, 4096), Some(ALIAS + 0x7f_f000));
        assert_eq!(virt(0x80_0000, 4096), Some(0x80_0000), "past it");
        assert_eq!(virt(0x5f_f800, 4096), None, "across its start");
        assert_eq!(virt(0x7f_f800, 4096), None, "across its end");
        assert_eq!(virt(0xffff_f000, 4096), Some(0xffff_f000));
        assert_eq!(virt(0xffff_f000, 8192), None, "beyond 4 GiB");
        assert_eq!(virt(u64::MAX, 2), None);
        assert_eq!(frame(0), None);
        assert_eq!(frame(0x7ff), Some((ALIAS + 0x7f_f000) as *mut u8));
    }
}
