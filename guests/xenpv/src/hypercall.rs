//! x86_64 hypercalls: `call HYPERCALL_PAGE + 32 * nr`, arguments in rdi, rsi, rdx, r10, r8,
//! result in rax. The same under PV (stubs use `syscall`) and PVH (`vmcall`/`vmmcall`): Xen
//! writes the stubs that fit. Only the calls the test guests need.
//!
//! Host unit tests (`cargo test -p xenpv --lib`) have no Xen: there every hypercall answers
//! `-ENOSYS`, which the callers already handle as "not available".

use xen_sys as sys;

/// `-ENOSYS`: what Xen answers for a hypercall it does not implement.
pub const ENOSYS: i64 = -38;
/// `DOMID_SELF`: the calling domain.
pub const DOMID_SELF: u16 = 0x7ff0;

#[cfg(not(test))]
extern "C" {
    /// Filled by Xen with one 32-byte stub per hypercall (defined by `entry!`).
    static HYPERCALL_PAGE: [u8; 4096];
}

/// Address of the hypercall page (virtual = physical under PVH's identity map).
#[cfg(not(test))]
pub fn page_address() -> u64 {
    core::ptr::addr_of!(HYPERCALL_PAGE) as u64
}

/// Three-argument hypercall. Argument registers are treated as clobbered (debug Xen
/// poisons them) and the stub uses the stack, so no `nostack`.
#[cfg(not(test))]
#[inline(never)]
fn hypercall3(nr: u32, a1: u64, a2: u64, a3: u64) -> i64 {
    // SAFETY: HYPERCALL_PAGE is a page of our image that Xen filled before starting us; each
    // op below passes arguments that are valid for that op (pointers to live locals).
    unsafe {
        let stub = HYPERCALL_PAGE.as_ptr() as u64 + u64::from(nr) * 32;
        let ret: i64;
        core::arch::asm!(
            "call {stub}",
            stub = in(reg) stub,
            lateout("rax") ret,
            inout("rdi") a1 => _,
            inout("rsi") a2 => _,
            inout("rdx") a3 => _,
            out("r10") _, out("r8") _, out("rcx") _, out("r11") _,
        );
        ret
    }
}

#[cfg(test)]
fn hypercall3(_nr: u32, _a1: u64, _a2: u64, _a3: u64) -> i64 {
    ENOSYS
}

fn ptr<T>(arg: &mut T) -> u64 {
    arg as *mut T as u64
}

/// Shutdown reasons (public/sched.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shutdown {
    Poweroff,
    Reboot,
    Suspend,
    Crash,
    Watchdog,
}

/// SCHEDOP_shutdown: the domain stops for good with this reason; the toolstack acts on it.
pub fn shutdown(reason: Shutdown) -> ! {
    let mut arg = sys::sched_shutdown {
        reason: match reason {
            Shutdown::Poweroff => sys::SHUTDOWN_poweroff,
            Shutdown::Reboot => sys::SHUTDOWN_reboot,
            Shutdown::Suspend => sys::SHUTDOWN_suspend,
            Shutdown::Crash => sys::SHUTDOWN_crash,
            Shutdown::Watchdog => sys::SHUTDOWN_watchdog,
        },
    };
    loop {
        hypercall3(
            sys::__HYPERVISOR_sched_op,
            sys::SCHEDOP_shutdown.into(),
            ptr(&mut arg),
            0,
        );
    }
}

/// SCHEDOP_yield: give the CPU away, stay runnable.
pub fn yield_now() {
    hypercall3(sys::__HYPERVISOR_sched_op, sys::SCHEDOP_yield.into(), 0, 0);
}

/// SCHEDOP_poll, no timeout: sleeps until one of `ports` is pending (returns at once if one
/// already is); with no ports, until any event channel of ours fires.
///
/// Unlike SCHEDOP_block this leaves event delivery masked (the toolstack starts PV vCPUs with
/// `evtchn_upcall_mask = 1`), so no upcall is ever delivered and we need no callback and no
/// trap table. A port that stays pending does not wake us again: clear it first
/// ([`crate::events`]) to wait for its next event.
pub fn poll(ports: &[u32]) {
    let mut arg = sys::sched_poll {
        ports: if ports.is_empty() {
            core::ptr::null_mut()
        } else {
            ports.as_ptr().cast_mut()
        },
        nr_ports: ports.len() as u32,
        timeout: 0,
    };
    hypercall3(
        sys::__HYPERVISOR_sched_op,
        sys::SCHEDOP_poll.into(),
        ptr(&mut arg),
        0,
    );
}

/// [`poll`] on no ports: sleep until any event channel of ours fires.
pub fn poll_forever() {
    poll(&[]);
}

/// EVTCHNOP_send: notify the other end of `port`.
pub fn evtchn_send(port: u32) {
    let mut arg = sys::evtchn_send { port };
    hypercall3(
        sys::__HYPERVISOR_event_channel_op,
        sys::EVTCHNOP_send.into(),
        ptr(&mut arg),
        0,
    );
}

/// EVTCHNOP_alloc_unbound: a new port of ours that domain `remote` may bind.
pub fn evtchn_alloc_unbound(remote: u16) -> Option<u32> {
    let mut arg = sys::evtchn_alloc_unbound {
        dom: DOMID_SELF,
        remote_dom: remote,
        port: 0,
    };
    let rc = hypercall3(
        sys::__HYPERVISOR_event_channel_op,
        sys::EVTCHNOP_alloc_unbound.into(),
        ptr(&mut arg),
        0,
    );
    (rc == 0 && arg.port != 0).then_some(arg.port)
}

/// HVMOP_get_param (public/hvm/hvm_op.h): one HVM parameter of our own domain (PVH only).
pub fn hvm_get_param(index: u32) -> Option<u64> {
    const HVMOP_GET_PARAM: u64 = 1;
    // struct xen_hvm_param
    #[repr(C)]
    struct HvmParam {
        domid: u16,
        index: u32,
        value: u64,
    }
    let mut arg = HvmParam {
        domid: DOMID_SELF,
        index,
        value: 0,
    };
    let rc = hypercall3(sys::__HYPERVISOR_hvm_op, HVMOP_GET_PARAM, ptr(&mut arg), 0);
    (rc == 0).then_some(arg.value)
}

/// PV: HYPERVISOR_update_va_mapping (public/xen.h): points the page-table entry of virtual
/// address `va` at `pte`, flushing that address from the TLB (UVMF_INVLPG). True on success.
pub fn update_va_mapping(va: u64, pte: u64) -> bool {
    const UVMF_INVLPG: u64 = 2;
    hypercall3(sys::__HYPERVISOR_update_va_mapping, va, pte, UVMF_INVLPG) == 0
}

/// XENMAPSPACE_* of XENMEM_add_to_physmap (public/memory.h).
pub const XENMAPSPACE_SHARED_INFO: u32 = 0;
pub const XENMAPSPACE_GRANT_TABLE: u32 = 1;

/// PVH: XENMEM_add_to_physmap: puts Xen's page `idx` of `space` at our guest frame `gfn`
/// (replacing the RAM page there). True on success.
pub fn add_to_physmap(space: u32, idx: u64, gfn: u64) -> bool {
    const XENMEM_ADD_TO_PHYSMAP: u64 = 7;
    // struct xen_add_to_physmap
    #[repr(C)]
    struct AddToPhysmap {
        domid: u16,
        size: u16,
        space: u32,
        idx: u64,
        gpfn: u64,
    }
    let mut arg = AddToPhysmap {
        domid: DOMID_SELF,
        size: 0,
        space,
        idx,
        gpfn: gfn,
    };
    hypercall3(
        sys::__HYPERVISOR_memory_op,
        XENMEM_ADD_TO_PHYSMAP,
        ptr(&mut arg),
        0,
    ) == 0
}

/// PV: GNTTABOP_setup_table for one frame of our grant table: its machine frame.
pub fn grant_table_frame0() -> Option<u64> {
    const GNTTABOP_SETUP_TABLE: u64 = 2;
    // struct gnttab_setup_table
    #[repr(C)]
    struct SetupTable {
        dom: u16,
        nr_frames: u32,
        status: i16,
        frame_list: *mut u64,
    }
    let mut frame = 0u64;
    let mut arg = SetupTable {
        dom: DOMID_SELF,
        nr_frames: 1,
        status: 0,
        frame_list: &mut frame,
    };
    let rc = hypercall3(
        sys::__HYPERVISOR_grant_table_op,
        GNTTABOP_SETUP_TABLE,
        ptr(&mut arg),
        1,
    );
    (rc == 0 && arg.status == 0 && frame != 0).then_some(frame)
}

/// The `devctl` hypercall of chaos's Xen patches (noxs ABI section 2); `-ENOSYS` on stock Xen.
/// `arg` is the caller's `struct xen_devctl`.
pub fn devctl<T>(arg: &mut T) -> i64 {
    hypercall3(::noxs::HYPERVISOR_DEVCTL, ptr(arg), 0, 0)
}

/// CONSOLEIO_write to Xen's own console (shows as `(dN) ...` in `xl dmesg` only when Xen
/// allows it for domUs: debug builds); errors are ignored on purpose.
pub fn xen_console_write(bytes: &[u8]) {
    hypercall3(
        sys::__HYPERVISOR_console_io,
        sys::CONSOLEIO_write.into(),
        bytes.len() as u64,
        bytes.as_ptr() as u64,
    );
}
