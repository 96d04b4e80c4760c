//! Waiting for event channels without upcalls.
//!
//! The guests never unmask event delivery (no callback, no IDT): they sleep in SCHEDOP_poll,
//! which returns once a listed port is pending. A pending port stays pending until the guest
//! clears its bit in shared_info's `evtchn_pending` bitmap, so to wait for the *next* event on
//! a port: clear it, look at the shared state (ring, control page), then poll. An event that
//! arrives after the clear sets the bit again and the poll returns at once: nothing is lost.
//!
//! shared_info is Xen's page: PV maps it (start_info gives its machine address) over a page of
//! our image with HYPERVISOR_update_va_mapping; PVH puts it at that page's guest frame with
//! XENMEM_add_to_physmap.

use crate::start::StartInfo;
use crate::{hypercall, Page, PAGE_SIZE, PHYS_SHIFT};
use core::sync::atomic::{AtomicU64, Ordering};

/// Offset of `evtchn_pending[]` in `struct shared_info` (after 32 vcpu_info of 64 bytes).
const EVTCHN_PENDING: usize = 2048;
/// Ports the 2-level ABI has on x86_64 (64 words of 64 bits).
const MAX_PORTS: u32 = 64 * 64;
/// Page-table entry bits: present, writable, user (a 64-bit PV kernel runs in ring 3).
pub(crate) const PTE_RW: u64 = 0x7;

/// Where shared_info is mapped.
static SHARED_INFO: Page = Page::new();

/// Access to our event channels' pending bits.
pub struct Events {
    shared: *mut u8,
}

impl Events {
    /// Maps shared_info over a page of our image; None if Xen refuses.
    pub fn map(si: &StartInfo) -> Option<Events> {
        let page = SHARED_INFO.as_ptr();
        let ok = match si.shared_info_maddr() {
            Some(maddr) => hypercall::update_va_mapping(page as u64, maddr | PTE_RW),
            None => hypercall::add_to_physmap(
                hypercall::XENMAPSPACE_SHARED_INFO,
                0,
                (page as u64 - PHYS_SHIFT) / PAGE_SIZE,
            ),
        };
        ok.then_some(Events { shared: page })
    }

    fn word(&self, port: u32) -> Option<(&AtomicU64, u64)> {
        if port >= MAX_PORTS {
            return None;
        }
        // SAFETY: shared_info is mapped at `shared` (see `map`); the word is inside its
        // 512-byte evtchn_pending array, 8-byte aligned; Xen updates it atomically too.
        let word = unsafe {
            &*(self
                .shared
                .add(EVTCHN_PENDING + (port / 64) as usize * 8)
                .cast::<AtomicU64>())
        };
        Some((word, 1 << (port % 64)))
    }

    /// Clears `port`'s pending bit, so that its next event wakes [`Events::wait`].
    pub fn clear(&self, port: u32) {
        if let Some((word, bit)) = self.word(port) {
            word.fetch_and(!bit, Ordering::SeqCst);
        }
    }

    /// True if `port` has an event not cleared yet.
    pub fn pending(&self, port: u32) -> bool {
        self.word(port)
            .is_some_and(|(word, bit)| word.load(Ordering::SeqCst) & bit != 0)
    }

    /// Sleeps until one of `ports` is pending (at once if one already is).
    pub fn wait(&self, ports: &[u32]) {
        hypercall::poll(ports);
    }
}
