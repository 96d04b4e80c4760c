//! Minimal runtime for x86_64 Xen PV and PVH test guests.
//!
//! A guest binary calls [`entry!`] once: it emits the `_start` entry, the `.note.Xen` ELF notes
//! the PV and PVH loaders need, the `chaos` note (it implements the NoXS frontend) and the
//! hypercall page; [`pvh`] has the PVH entry stub. Everything else (hypercalls, console ring,
//! a small Xenstore client, the NoXS device page, events without upcalls, grants, netif
//! rings) is here. ABI types and constants come from `xen-sys` and `noxs`; the hypercall
//! wrappers are our own (see README.md for why).
//!
//! The parts that parse what others wrote (device page, Xenstore messages, netif rings) have
//! host unit tests: `cargo test -p xenpv --lib` (no Xen there: hypercalls answer -ENOSYS).
#![cfg_attr(not(test), no_std)]

pub mod console;
pub mod events;
pub mod grant;
pub mod hypercall;
pub mod line;
#[cfg(not(test))]
pub mod mem;
pub mod netif;
pub mod noxs;
pub mod pvh;
pub mod start;
pub mod xenstore;

pub use xen_sys as sys;

use core::cell::UnsafeCell;

/// A page of this image (in .bss when zero): pages the guest shares with Xen or its backends,
/// or replaces with one of Xen's (shared_info, grant table), live in these.
#[repr(C, align(4096))]
pub struct Page(UnsafeCell<[u8; 4096]>);

// SAFETY: a Page is only ever accessed through raw pointers by code that knows who else uses it
// (the guest is single-threaded; Xen and backends are the other parties).
unsafe impl Sync for Page {}

impl Page {
    pub const fn new() -> Page {
        Page(UnsafeCell::new([0; 4096]))
    }

    pub fn as_ptr(&self) -> *mut u8 {
        self.0.get().cast()
    }
}

impl Default for Page {
    fn default() -> Self {
        Page::new()
    }
}

/// First address after the image (linker script's `_end`).
#[cfg(not(test))]
pub fn image_end() -> u64 {
    extern "C" {
        static _end: u8;
    }
    core::ptr::addr_of!(_end) as u64
}

/// Host tests have no guest image.
#[cfg(test)]
pub fn image_end() -> u64 {
    VIRT_BASE
}

/// Virtual address of the image start; Xen maps pfn 0 here. Must equal the address in link.ld.
/// 1 MiB below a 4 MiB boundary, so the bootstrap mapping (which libxenguest extends to a
/// 4 MiB boundary) needs only 256 pages: the guests boot with `memory = 1`.
pub const VIRT_BASE: u64 = 0x70_0000;
/// Virtual minus physical (load) address of the image: the ELF paddrs are 0x100000 (link.ld).
/// A PV loader undoes it (PADDR_OFFSET = VIRT_BASE - PHYS_SHIFT); a PVH loader loads the image at
/// 1 MiB, so PVH needs little RAM. A multiple of 2 MiB: one large page maps the image's virtual
/// addresses onto it (pvh.rs). Must equal the shift in link.ld.
pub const PHYS_SHIFT: u64 = 0x60_0000;
/// Guest page size.
pub const PAGE_SIZE: u64 = 4096;

/// Declares the guest entry point: `entry!(main)` with `fn main(&StartInfo) -> !`.
///
/// Emits, in the binary's own crate (so the linker always keeps them):
/// `_start` (Xen enters with %rsi = start_info and %rsp = the bootstrap stack page, which we
/// keep as our only stack), the Xen ELF notes and the page Xen fills with hypercall stubs.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        extern "C" fn __xenpv_start(si: *const $crate::sys::start_info) -> ! {
            // SAFETY: Xen passes a valid, mapped start_info page that lives as long as the guest.
            let si = unsafe { &*si };
            $main($crate::start::StartInfo::new(si))
        }

        /// PVH: called by the 64-bit part of `xenpv_pvh_start` with %rdi = hvm_start_info.
        #[no_mangle]
        extern "C" fn xenpv_pvh_main(info: u64) -> ! {
            if !$crate::pvh::setup_hypercall_page() {
                // No Xen CPUID leaves: no way to call Xen. Fault (no IDT: the domain crashes).
                // SAFETY: ud2 only raises #UD.
                unsafe { core::arch::asm!("ud2", options(noreturn)) }
            }
            $main($crate::start::StartInfo::pvh(info))
        }

        #[panic_handler]
        fn __xenpv_panic(_: &core::panic::PanicInfo) -> ! {
            $crate::hypercall::shutdown($crate::hypercall::Shutdown::Crash)
        }

        core::arch::global_asm!(
            ".pushsection .text.entry, \"ax\"",
            ".globl _start",
            "_start:",
            "cld",
            "mov rdi, rsi",
            // Off the one-page bootstrap stack onto our 8 KiB one (the PVH entry's too).
            "lea rsp, [rip + xenpv_stack_top]",
            "call {start}",
            "ud2",
            ".popsection",
            // The hypercall page: Xen writes 128 stubs of 32 bytes here before the guest runs.
            ".pushsection .xen_hypercall_page, \"aw\", @nobits",
            ".balign 4096",
            ".globl HYPERCALL_PAGE",
            "HYPERCALL_PAGE:",
            ".skip 4096",
            ".popsection",
            // Xen ELF notes (xen/include/public/elfnote.h): name "Xen", 4-byte aligned fields.
            ".pushsection .note.Xen, \"a\", @note",
            ".macro xenpv_note type, desc:vararg",
            ".balign 4",
            ".long 4, 2f - 1f, \\type",
            ".asciz \"Xen\"",
            ".balign 4",
            "1: \\desc",
            "2: .balign 4",
            ".endm",
            "xenpv_note {guest_os}, .asciz \"chaos-test\"",
            "xenpv_note {guest_version}, .asciz \"0.1\"",
            "xenpv_note {xen_version}, .asciz \"xen-3.0\"",
            "xenpv_note {loader}, .asciz \"generic\"",
            "xenpv_note {virt_base}, .quad {base}",
            "xenpv_note {paddr_offset}, .quad {base} - {shift}",
            "xenpv_note {entry}, .quad _start",
            "xenpv_note {hypercall_page}, .quad HYPERCALL_PAGE",
            // PVH entry: the 32-bit physical address of the stub.
            "xenpv_note {phys32_entry}, .long xenpv_pvh_start - {shift}",
            ".purgem xenpv_note",
            ".popsection",
            // The chaos note (noxs ABI.md section 1): this kernel implements the NoXS frontend.
            ".pushsection .note.chaos, \"a\", @note",
            ".balign 4",
            ".long 6, 4, {chaos_noxs}",
            ".asciz \"chaos\"",
            ".balign 4",
            ".long {chaos_abi}",
            ".popsection",
            start = sym __xenpv_start,
            base = const $crate::VIRT_BASE,
            shift = const $crate::PHYS_SHIFT,
            guest_os = const $crate::sys::XEN_ELFNOTE_GUEST_OS,
            guest_version = const $crate::sys::XEN_ELFNOTE_GUEST_VERSION,
            xen_version = const $crate::sys::XEN_ELFNOTE_XEN_VERSION,
            loader = const $crate::sys::XEN_ELFNOTE_LOADER,
            virt_base = const $crate::sys::XEN_ELFNOTE_VIRT_BASE,
            paddr_offset = const $crate::sys::XEN_ELFNOTE_PADDR_OFFSET,
            entry = const $crate::sys::XEN_ELFNOTE_ENTRY,
            hypercall_page = const $crate::sys::XEN_ELFNOTE_HYPERCALL_PAGE,
            phys32_entry = const $crate::sys::XEN_ELFNOTE_PHYS32_ENTRY,
            chaos_noxs = const $crate::noxs::abi::NOTE_NOXS,
            chaos_abi = const $crate::noxs::abi::ABI_VERSION,
        );
    };
}
