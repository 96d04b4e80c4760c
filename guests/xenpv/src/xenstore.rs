//! One Xenstore read over the ring (public/io/xs_wire.h): req[1024], rsp[1024], then
//! req_cons, req_prod, rsp_cons, rsp_prod (u32 each). Messages are a 16-byte header
//! (type, req_id, tx_id, len) followed by `len` payload bytes.

use crate::hypercall;
use crate::start::Ring;
use core::sync::atomic::{AtomicU32, Ordering};

const RING_SIZE: u32 = 1024;
const REQ_OFF: usize = 0;
const RSP_OFF: usize = 1024;
const REQ_CONS: usize = 2048;
const REQ_PROD: usize = 2052;
const RSP_CONS: usize = 2056;
const RSP_PROD: usize = 2060;
const XS_READ: u32 = 2;
const HEADER: usize = 16;

fn index(ring: &Ring, off: usize) -> &AtomicU32 {
    // SAFETY: caller of `read` guarantees the ring page; off is an aligned index field in it.
    unsafe { &*(ring.page.add(off) as *const AtomicU32) }
}

/// Yields until `cond` holds or `max_yields` passed; false on timeout.
fn wait(max_yields: u32, mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..max_yields {
        if cond() {
            return true;
        }
        hypercall::yield_now();
    }
    cond()
}

/// Reads `path` (relative paths are under /local/domain/<our domid>) into `out`.
/// Returns the value length, or None on error reply, timeout or a value too long.
///
/// # Safety
/// `ring.page` must be the mapped Xenstore ring page of this domain, not used by anyone else.
pub unsafe fn read(ring: Ring, path: &[u8], out: &mut [u8], max_yields: u32) -> Option<usize> {
    let len = path.len() + 1; // with NUL
    if HEADER + len > RING_SIZE as usize {
        return None;
    }
    let mut msg = [0u8; HEADER];
    msg[0..4].copy_from_slice(&XS_READ.to_le_bytes());
    msg[4..8].copy_from_slice(&1u32.to_le_bytes()); // req_id
    msg[12..16].copy_from_slice(&(len as u32).to_le_bytes());

    let (cons, prod) = (index(&ring, REQ_CONS), index(&ring, REQ_PROD));
    let need = (HEADER + len) as u32;
    if !wait(max_yields, || {
        RING_SIZE
            - prod
                .load(Ordering::Relaxed)
                .wrapping_sub(cons.load(Ordering::Acquire))
            >= need
    }) {
        return None;
    }
    let mut p = prod.load(Ordering::Relaxed);
    for &b in msg.iter().chain(path.iter()).chain(core::iter::once(&0u8)) {
        // SAFETY: masked index inside the 1024-byte request array.
        unsafe {
            ring.page
                .add(REQ_OFF + (p % RING_SIZE) as usize)
                .write_volatile(b)
        };
        p = p.wrapping_add(1);
    }
    prod.store(p, Ordering::Release);
    hypercall::evtchn_send(ring.evtchn);

    let (rcons, rprod) = (index(&ring, RSP_CONS), index(&ring, RSP_PROD));
    let avail = || {
        rprod
            .load(Ordering::Acquire)
            .wrapping_sub(rcons.load(Ordering::Relaxed))
    };
    if !wait(max_yields, || avail() >= HEADER as u32) {
        return None;
    }
    let c = rcons.load(Ordering::Relaxed);
    // SAFETY: masked index inside the 1024-byte response array.
    let byte = |i: u32| unsafe {
        ring.page
            .add(RSP_OFF + (c.wrapping_add(i) % RING_SIZE) as usize)
            .read_volatile()
    };
    let word = |i: u32| u32::from_le_bytes([byte(i), byte(i + 1), byte(i + 2), byte(i + 3)]);
    let (kind, plen) = (word(0), word(12));
    if plen >= RING_SIZE || !wait(max_yields, || avail() >= HEADER as u32 + plen) {
        return None;
    }
    let n = plen as usize;
    let fits = kind == XS_READ && n <= out.len();
    if fits {
        for (i, o) in out[..n].iter_mut().enumerate() {
            *o = byte(HEADER as u32 + i as u32);
        }
    }
    rcons.store(c.wrapping_add(HEADER as u32 + plen), Ordering::Release);
    hypercall::evtchn_send(ring.evtchn);
    fits.then_some(n)
}
