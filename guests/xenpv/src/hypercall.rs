//! x86_64 hypercalls: `call HYPERCALL_PAGE + 32 * nr`, arguments in rdi, rsi, rdx, r10, r8,
//! result in rax. The same under PV (stubs use `syscall`) and PVH (`vmcall`/`vmmcall`): Xen
//! writes the stubs that fit. Only the calls the test guests need.

use core::arch::asm;
use xen_sys as sys;

extern "C" {
    /// Filled by Xen with one 32-byte stub per hypercall (defined by `entry!`).
    static HYPERCALL_PAGE: [u8; 4096];
}

/// Address of the hypercall page (virtual = physical under PVH's identity map).
pub fn page_address() -> u64 {
    core::ptr::addr_of!(HYPERCALL_PAGE) as u64
}

/// Two-argument hypercall. Argument registers are treated as clobbered (debug Xen
/// poisons them) and the stub uses the stack, so no `nostack`.
#[inline(always)]
fn hypercall2(nr: u32, a1: u64, a2: u64) -> i64 {
    // SAFETY: HYPERCALL_PAGE is a page of our image that Xen filled before starting us; each
    // op below passes arguments that are valid for that op (pointers to live locals).
    unsafe {
        let stub = HYPERCALL_PAGE.as_ptr() as u64 + u64::from(nr) * 32;
        let ret: i64;
        asm!(
            "call {stub}",
            stub = in(reg) stub,
            lateout("rax") ret,
            inout("rdi") a1 => _,
            inout("rsi") a2 => _,
            out("rdx") _, out("r10") _, out("r8") _, out("rcx") _, out("r11") _,
        );
        ret
    }
}

/// Shutdown reasons (public/sched.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shutdown {
    Poweroff,
    Reboot,
    Crash,
}

/// SCHEDOP_shutdown: the domain stops for good with this reason; the toolstack acts on it.
pub fn shutdown(reason: Shutdown) -> ! {
    let mut arg = sys::sched_shutdown {
        reason: match reason {
            Shutdown::Poweroff => sys::SHUTDOWN_poweroff,
            Shutdown::Reboot => sys::SHUTDOWN_reboot,
            Shutdown::Crash => sys::SHUTDOWN_crash,
        },
    };
    loop {
        hypercall2(
            sys::__HYPERVISOR_sched_op,
            sys::SCHEDOP_shutdown.into(),
            &mut arg as *mut _ as u64,
        );
    }
}

/// SCHEDOP_yield: give the CPU away, stay runnable.
pub fn yield_now() {
    hypercall2(sys::__HYPERVISOR_sched_op, sys::SCHEDOP_yield.into(), 0);
}

/// SCHEDOP_poll on no ports, no timeout: sleep until any event channel of ours fires.
///
/// Unlike SCHEDOP_block this leaves event delivery masked (the toolstack starts PV vCPUs with
/// `evtchn_upcall_mask = 1`), so no upcall is ever delivered and we need no callback, no
/// shared_info mapping and no trap table. A port already pending does not wake us again.
pub fn poll_forever() {
    let mut arg = sys::sched_poll {
        ports: core::ptr::null_mut(),
        nr_ports: 0,
        timeout: 0,
    };
    hypercall2(
        sys::__HYPERVISOR_sched_op,
        sys::SCHEDOP_poll.into(),
        &mut arg as *mut _ as u64,
    );
}

/// EVTCHNOP_send: notify the other end of `port`.
pub fn evtchn_send(port: u32) {
    let mut arg = sys::evtchn_send { port };
    hypercall2(
        sys::__HYPERVISOR_event_channel_op,
        sys::EVTCHNOP_send.into(),
        &mut arg as *mut _ as u64,
    );
}

/// HVMOP_get_param (public/hvm/hvm_op.h): one HVM parameter of our own domain (PVH only).
pub fn hvm_get_param(index: u32) -> Option<u64> {
    const HVMOP_GET_PARAM: u64 = 1;
    const DOMID_SELF: u16 = 0x7ff0;
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
    let rc = hypercall2(
        sys::__HYPERVISOR_hvm_op,
        HVMOP_GET_PARAM,
        &mut arg as *mut _ as u64,
    );
    (rc == 0).then_some(arg.value)
}

/// CONSOLEIO_write to Xen's own console (shows as `(dN) ...` in `xl dmesg` only when Xen
/// allows it for domUs: debug builds); errors are ignored on purpose.
pub fn xen_console_write(bytes: &[u8]) {
    // console_io takes 3 arguments: cmd, count, buffer.
    // SAFETY: as in hypercall2; the buffer is a live slice of `count` bytes.
    unsafe {
        let stub = HYPERCALL_PAGE.as_ptr() as u64 + u64::from(sys::__HYPERVISOR_console_io) * 32;
        asm!(
            "call {stub}",
            stub = in(reg) stub,
            lateout("rax") _,
            inout("rdi") u64::from(sys::CONSOLEIO_write) => _,
            inout("rsi") bytes.len() as u64 => _,
            inout("rdx") bytes.as_ptr() as u64 => _,
            out("r10") _, out("r8") _, out("rcx") _, out("r11") _,
        );
    }
}
