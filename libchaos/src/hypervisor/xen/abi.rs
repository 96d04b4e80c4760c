//! Xen and Linux privcmd ABI: hypercall numbers, constants and `#[repr(C)]` structures whose
//! layout does not depend on the domctl/sysctl interface version (those live in
//! [`super::domctl`]).
//!
//! Every structure is written from the public headers of Xen 4.17 (xen/include/public/*.h) and
//! Linux's include/uapi/xen/privcmd.h for x86_64, with its size asserted at compile time and
//! its field offsets checked in the tests against the C layout. Padding is always explicit, so
//! a structure is exactly its fields.

use std::mem::size_of;

/// Marks a structure that may be handed to Xen or the kernel as raw memory and read back after
/// they wrote into it.
///
/// # Safety
/// Implementors are `#[repr(C)]`, contain only integers (or arrays/structures of them) with no
/// implicit padding, so every byte pattern is a valid value and no byte is uninitialised.
pub(crate) unsafe trait Plain: Copy + 'static {}

/// Implements [`Plain`] for an ABI structure and asserts its size at compile time.
macro_rules! plain {
    ($($t:ty = $size:expr;)*) => {$(
        const _: () = assert!(std::mem::size_of::<$t>() == $size);
        // SAFETY: the type is #[repr(C)], made only of integers with explicit padding fields
        // (its size equals the sum of its fields, asserted above against the C size), so any
        // bytes form a valid value.
        unsafe impl $crate::hypervisor::xen::abi::Plain for $t {}
    )*};
}
pub(crate) use plain;

// Primitive arrays are plain too (extent lists, error arrays).
plain! {
    u64 = 8;
    u32 = 4;
    i32 = 4;
}

// ---------------------------------------------------------------- hypercall numbers (xen.h)
pub const HYPERVISOR_MEMORY_OP: u64 = 12;
pub const HYPERVISOR_XEN_VERSION: u64 = 17;
pub const HYPERVISOR_MMUEXT_OP: u64 = 26;
pub const HYPERVISOR_SCHED_OP: u64 = 29;
pub const HYPERVISOR_EVENT_CHANNEL_OP: u64 = 32;
pub const HYPERVISOR_HVM_OP: u64 = 34;
pub const HYPERVISOR_SYSCTL: u64 = 35;
pub const HYPERVISOR_DOMCTL: u64 = 36;

/// `XENVER_version`: returns `major << 16 | minor`.
pub const XENVER_VERSION: u64 = 0;

/// First reserved domain id (`DOMID_FIRST_RESERVED`); real domains are below.
pub const DOMID_FIRST_RESERVED: u16 = 0x7ff0;

// ---------------------------------------------------------------- Linux privcmd (privcmd.h)
/// `_IOC(_IOC_NONE, 'P', nr, size)`.
const fn ioc_none(nr: u64, size: usize) -> u64 {
    ((size as u64) << 16) | ((b'P' as u64) << 8) | nr
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct PrivcmdHypercall {
    pub op: u64,
    pub arg: [u64; 5],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct PrivcmdMmapBatchV2 {
    pub num: u32,
    pub dom: u16,
    pub _pad: u16,
    pub addr: u64,
    /// `const xen_pfn_t *arr`
    pub arr: u64,
    /// `int *err`
    pub err: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct PrivcmdMmapResource {
    pub dom: u16,
    pub _pad: u16,
    pub kind: u32,
    pub id: u32,
    pub idx: u32,
    pub num: u64,
    pub addr: u64,
}

plain! {
    PrivcmdHypercall = 48;
    PrivcmdMmapBatchV2 = 32;
    PrivcmdMmapResource = 32;
}

pub const IOCTL_PRIVCMD_HYPERCALL: u64 = ioc_none(0, size_of::<PrivcmdHypercall>());
pub const IOCTL_PRIVCMD_MMAPBATCH_V2: u64 = ioc_none(4, size_of::<PrivcmdMmapBatchV2>());
pub const IOCTL_PRIVCMD_MMAP_RESOURCE: u64 = ioc_none(7, size_of::<PrivcmdMmapResource>());
const _: () = assert!(IOCTL_PRIVCMD_HYPERCALL == 0x305000);
const _: () = assert!(IOCTL_PRIVCMD_MMAPBATCH_V2 == 0x205004);
const _: () = assert!(IOCTL_PRIVCMD_MMAP_RESOURCE == 0x205007);

// ---------------------------------------------------------------- memory.h
pub const XENMEM_POPULATE_PHYSMAP: u64 = 6;
pub const XENMEM_RESOURCE_GRANT_TABLE: u32 = 1;
pub const XENMEM_RESOURCE_GRANT_TABLE_ID_SHARED: u32 = 0;

/// `struct xen_memory_reservation`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryReservation {
    /// Guest handle of the `xen_pfn_t` extent array (IN gpfns, OUT gmfns).
    pub extent_start: u64,
    pub nr_extents: u64,
    pub extent_order: u32,
    pub mem_flags: u32,
    pub domid: u16,
    pub _pad: [u16; 3],
}

// ---------------------------------------------------------------- event_channel.h
pub const EVTCHNOP_ALLOC_UNBOUND: u64 = 6;

/// `struct evtchn_alloc_unbound`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct EvtchnAllocUnbound {
    pub dom: u16,
    pub remote_dom: u16,
    /// OUT.
    pub port: u32,
}

// ---------------------------------------------------------------- sched.h
pub const SCHEDOP_REMOTE_SHUTDOWN: u64 = 4;

/// `struct sched_remote_shutdown`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct SchedRemoteShutdown {
    pub domain_id: u16,
    pub _pad: u16,
    pub reason: u32,
}

// ---------------------------------------------------------------- hvm/hvm_op.h
pub const HVMOP_SET_PARAM: u64 = 0;

/// `struct xen_hvm_param`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct HvmParam {
    pub domid: u16,
    pub _pad: u16,
    pub index: u32,
    pub value: u64,
}

// ---------------------------------------------------------------- xen.h: mmuext
pub const MMUEXT_PIN_L1_TABLE: u32 = 0;
pub const MMUEXT_PIN_L2_TABLE: u32 = 1;
pub const MMUEXT_PIN_L3_TABLE: u32 = 2;
pub const MMUEXT_PIN_L4_TABLE: u32 = 3;

/// `struct mmuext_op`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct MmuextOp {
    pub cmd: u32,
    pub _pad: u32,
    /// `arg1.mfn` / `arg1.linear_addr`.
    pub arg1: u64,
    /// `arg2.nr_ents` / `arg2.vcpumask` / `arg2.src_mfn`.
    pub arg2: u64,
}

// ---------------------------------------------------------------- grant_table.h
/// `GTF_permit_access`.
pub const GTF_PERMIT_ACCESS: u16 = 1;

/// `struct grant_entry_v1`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GrantEntryV1 {
    pub flags: u16,
    pub domid: u16,
    pub frame: u32,
}

plain! {
    MemoryReservation = 32;
    EvtchnAllocUnbound = 8;
    SchedRemoteShutdown = 8;
    HvmParam = 16;
    MmuextOp = 24;
    GrantEntryV1 = 8;
}

// ---------------------------------------------------------------- arch-x86: vcpu context
/// `VGCF_in_kernel`.
pub const VGCF_IN_KERNEL: u64 = 1 << 2;
/// `VGCF_online`.
pub const VGCF_ONLINE: u64 = 1 << 5;
/// `FLAT_KERNEL_CS64` (GDT index 262, Xen-private).
pub const FLAT_KERNEL_CS64: u16 = 0xe033;
/// `FLAT_KERNEL_DS64` (the null selector).
pub const FLAT_KERNEL_DS64: u16 = 0x0000;
/// `FLAT_KERNEL_SS64` (GDT index 261).
pub const FLAT_KERNEL_SS64: u16 = 0xe02b;
/// Architectural reset values of %dr6 / %dr7 (what libxc's vcpu_x86_64 sets).
pub const X86_DR6_DEFAULT: u64 = 0xffff_0ff0;
pub const X86_DR7_DEFAULT: u64 = 0x0000_0400;
/// RFLAGS.IF: event delivery enabled at entry (libxc sets it too).
pub const X86_EFLAGS_IF: u64 = 1 << 9;

/// `struct cpu_user_regs` (x86_64).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuUserRegs {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub error_code: u32,
    pub entry_vector: u32,
    pub rip: u64,
    pub cs: u16,
    pub _pad0: u16,
    pub saved_upcall_mask: u8,
    pub _pad1: [u8; 3],
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u16,
    pub _pad2: [u16; 3],
    pub es: u16,
    pub _pad3: [u16; 3],
    pub ds: u16,
    pub _pad4: [u16; 3],
    pub fs: u16,
    pub _pad5: [u16; 3],
    pub gs: u16,
    pub _pad6: [u16; 3],
}

/// `struct trap_info` (x86_64).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct TrapInfo {
    pub vector: u8,
    pub flags: u8,
    pub cs: u16,
    pub _pad: u32,
    pub address: u64,
}

/// `struct vcpu_guest_context` (x86_64, tools view).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct VcpuGuestContext {
    pub fpu_ctxt: [u8; 512],
    pub flags: u64,
    pub user_regs: CpuUserRegs,
    pub trap_ctxt: [TrapInfo; 256],
    pub ldt_base: u64,
    pub ldt_ents: u64,
    pub gdt_frames: [u64; 16],
    pub gdt_ents: u64,
    pub kernel_ss: u64,
    pub kernel_sp: u64,
    pub ctrlreg: [u64; 8],
    pub debugreg: [u64; 8],
    pub event_callback_eip: u64,
    pub failsafe_callback_eip: u64,
    pub syscall_callback_eip: u64,
    pub vm_assist: u64,
    pub fs_base: u64,
    pub gs_base_kernel: u64,
    pub gs_base_user: u64,
}

impl Default for VcpuGuestContext {
    fn default() -> Self {
        VcpuGuestContext {
            fpu_ctxt: [0; 512],
            flags: 0,
            user_regs: CpuUserRegs::default(),
            trap_ctxt: [TrapInfo::default(); 256],
            ldt_base: 0,
            ldt_ents: 0,
            gdt_frames: [0; 16],
            gdt_ents: 0,
            kernel_ss: 0,
            kernel_sp: 0,
            ctrlreg: [0; 8],
            debugreg: [0; 8],
            event_callback_eip: 0,
            failsafe_callback_eip: 0,
            syscall_callback_eip: 0,
            vm_assist: 0,
            fs_base: 0,
            gs_base_kernel: 0,
            gs_base_user: 0,
        }
    }
}

plain! {
    CpuUserRegs = 200;
    TrapInfo = 16;
    VcpuGuestContext = 5168;
}

/// `xen_pfn_to_cr3` for x86_64: the frame number shifted into place.
pub const fn pfn_to_cr3(mfn: u64) -> u64 {
    mfn << 12
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    // Offsets printed by a C program compiled against Xen 4.17.7's public headers and Linux's
    // privcmd.h (x86_64, gcc 12).
    #[test]
    fn privcmd_layouts_match_c() {
        assert_eq!(offset_of!(PrivcmdMmapBatchV2, addr), 8);
        assert_eq!(offset_of!(PrivcmdMmapBatchV2, arr), 16);
        assert_eq!(offset_of!(PrivcmdMmapBatchV2, err), 24);
        assert_eq!(offset_of!(PrivcmdMmapResource, kind), 4);
        assert_eq!(offset_of!(PrivcmdMmapResource, num), 16);
        assert_eq!(offset_of!(PrivcmdMmapResource, addr), 24);
    }

    #[test]
    fn memory_and_misc_layouts_match_c() {
        assert_eq!(offset_of!(MemoryReservation, nr_extents), 8);
        assert_eq!(offset_of!(MemoryReservation, extent_order), 16);
        assert_eq!(offset_of!(MemoryReservation, mem_flags), 20);
        assert_eq!(offset_of!(MemoryReservation, domid), 24);
        assert_eq!(offset_of!(MmuextOp, arg1), 8);
        assert_eq!(offset_of!(MmuextOp, arg2), 16);
        assert_eq!(offset_of!(EvtchnAllocUnbound, port), 4);
        assert_eq!(offset_of!(SchedRemoteShutdown, reason), 4);
        assert_eq!(offset_of!(HvmParam, index), 4);
        assert_eq!(offset_of!(HvmParam, value), 8);
        assert_eq!(offset_of!(GrantEntryV1, frame), 4);
    }

    #[test]
    fn vcpu_guest_context_layout_matches_c() {
        assert_eq!(offset_of!(VcpuGuestContext, flags), 512);
        assert_eq!(offset_of!(VcpuGuestContext, user_regs), 520);
        assert_eq!(offset_of!(VcpuGuestContext, trap_ctxt), 720);
        assert_eq!(offset_of!(VcpuGuestContext, ldt_base), 4816);
        assert_eq!(offset_of!(VcpuGuestContext, gdt_frames), 4832);
        assert_eq!(offset_of!(VcpuGuestContext, kernel_ss), 4968);
        assert_eq!(offset_of!(VcpuGuestContext, ctrlreg), 4984);
        assert_eq!(offset_of!(VcpuGuestContext, debugreg), 5048);
        assert_eq!(offset_of!(VcpuGuestContext, event_callback_eip), 5112);
        assert_eq!(offset_of!(VcpuGuestContext, vm_assist), 5136);
        assert_eq!(offset_of!(VcpuGuestContext, fs_base), 5144);
        assert_eq!(offset_of!(CpuUserRegs, rbx), 40);
        assert_eq!(offset_of!(CpuUserRegs, rax), 80);
        assert_eq!(offset_of!(CpuUserRegs, rsi), 104);
        assert_eq!(offset_of!(CpuUserRegs, error_code), 120);
        assert_eq!(offset_of!(CpuUserRegs, rip), 128);
        assert_eq!(offset_of!(CpuUserRegs, cs), 136);
        assert_eq!(offset_of!(CpuUserRegs, saved_upcall_mask), 140);
        assert_eq!(offset_of!(CpuUserRegs, rflags), 144);
        assert_eq!(offset_of!(CpuUserRegs, rsp), 152);
        assert_eq!(offset_of!(CpuUserRegs, ss), 160);
        assert_eq!(offset_of!(CpuUserRegs, es), 168);
        assert_eq!(offset_of!(CpuUserRegs, ds), 176);
        assert_eq!(offset_of!(CpuUserRegs, fs), 184);
        assert_eq!(offset_of!(CpuUserRegs, gs), 192);
    }
}
