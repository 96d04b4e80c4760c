//! Output on the PV console ring (public/io/console.h, struct xencons_interface):
//! in[1024], out[2048], then in_cons, in_prod, out_cons, out_prod (u32 each).
//! We produce into `out`, xenconsoled consumes and advances out_cons.

use crate::hypercall;
use crate::start::Ring;
use core::sync::atomic::{AtomicU32, Ordering};

const OUT_OFF: usize = 1024;
const OUT_SIZE: u32 = 2048;
const OUT_CONS_OFF: usize = 3080;
const OUT_PROD_OFF: usize = 3084;

pub struct Console {
    ring: Ring,
}

impl Console {
    /// # Safety
    /// `ring.page` must be the mapped console ring page of this domain.
    pub unsafe fn new(ring: Ring) -> Self {
        Console { ring }
    }

    fn index(&self, off: usize) -> &AtomicU32 {
        // SAFETY: off is a 4-byte aligned index field inside the ring page (see `new`).
        unsafe { &*(self.ring.page.add(off) as *const AtomicU32) }
    }

    /// Queues `bytes` and notifies the backend; waits for room when the ring is full.
    pub fn write(&self, bytes: &[u8]) {
        let (cons, prod) = (self.index(OUT_CONS_OFF), self.index(OUT_PROD_OFF));
        let mut p = prod.load(Ordering::Relaxed);
        for &b in bytes {
            while p.wrapping_sub(cons.load(Ordering::Acquire)) >= OUT_SIZE {
                prod.store(p, Ordering::Release);
                hypercall::evtchn_send(self.ring.evtchn);
                hypercall::yield_now();
            }
            // SAFETY: the index is masked into the 2048-byte out array of the ring page.
            unsafe {
                self.ring
                    .page
                    .add(OUT_OFF + (p % OUT_SIZE) as usize)
                    .write_volatile(b)
            };
            p = p.wrapping_add(1);
        }
        // Release: the bytes are visible before the new producer index.
        prod.store(p, Ordering::Release);
        hypercall::evtchn_send(self.ring.evtchn);
    }

    /// True once the backend consumed everything written.
    pub fn drained(&self) -> bool {
        self.index(OUT_CONS_OFF).load(Ordering::Acquire)
            == self.index(OUT_PROD_OFF).load(Ordering::Acquire)
    }
}
