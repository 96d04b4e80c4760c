//! Netif rings (public/io/netif.h on public/io/ring.h), the frontend's side. Each ring is one
//! shared 4 KiB page: a 64-byte header (req_prod, req_event, rsp_prod, rsp_event, padding),
//! then 256 slots, each holding a request or, once the backend answered, its response: 12
//! bytes on the tx ring, 8 on the rx ring. The same ring code serves the Xenstore and the NoXS
//! control planes; only how ring references and ports reach the backend differs.
//!
//! The backend writes responses and `rsp_prod`; nothing it writes is trusted beyond these
//! checks: it cannot answer more requests than were pushed, and callers check ids, offsets,
//! sizes and flags of each response.

use core::marker::PhantomData;
use core::sync::atomic::{fence, AtomicU32, Ordering};

/// Slots per ring: the largest power of two of (4096 - 64) / slot size, for both rings.
pub const RING_SIZE: u32 = 256;
const HEADER: usize = 64;
const REQ_PROD: usize = 0;
const REQ_EVENT: usize = 4;
const RSP_PROD: usize = 8;
const RSP_EVENT: usize = 12;
/// Slot sizes of the two rings (the unions of request and response).
pub const TX_SLOT: usize = 12;
pub const RX_SLOT: usize = 8;

/// `netif_tx_request`: `size` bytes at `offset` of the page granted as `gref`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TxRequest {
    pub gref: u32,
    pub offset: u16,
    pub flags: u16,
    pub id: u16,
    pub size: u16,
}

/// `netif_tx_response`
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TxResponse {
    pub id: u16,
    pub status: i16,
}

/// `netif_rx_request`: a page granted (writable) for the backend to copy a packet into.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RxRequest {
    pub id: u16,
    pub pad: u16,
    pub gref: u32,
}

/// `netif_rx_response`: `status` > 0 is the packet's length at `offset`, < 0 an error.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RxResponse {
    pub id: u16,
    pub offset: u16,
    pub flags: u16,
    pub status: i16,
}

/// NETRXF_*: the packet continues in the next slot / is followed by extra-info slots.
pub const NETRXF_MORE_DATA: u16 = 1 << 2;
pub const NETRXF_EXTRA_INFO: u16 = 1 << 3;
/// XEN_NETIF_EXTRA_FLAG_MORE, in byte 1 of an extra-info slot: another one follows.
pub const EXTRA_FLAG_MORE: u8 = 1;
/// NETIF_RSP_OKAY
pub const RSP_OKAY: i16 = 0;

/// The frontend's private state of one ring (ring.h's `FRONT_RING`).
pub struct FrontRing<Req, Rsp> {
    sring: *mut u8,
    slot: usize,
    req_prod_pvt: u32,
    /// The last `req_prod` published.
    pushed: u32,
    rsp_cons: u32,
    _types: PhantomData<(Req, Rsp)>,
}

impl<Req: Copy, Rsp: Copy> FrontRing<Req, Rsp> {
    /// Initialises the shared ring (SHARED_RING_INIT and FRONT_RING_INIT).
    ///
    /// # Safety
    /// `sring` must be a writable 4 KiB page that only this ring and the backend use, and
    /// `slot` at least the size of `Req` and `Rsp` with `HEADER + 256 * slot <= 4096`.
    pub unsafe fn init(sring: *mut u8, slot: usize) -> Self {
        // SAFETY: the caller gives us the page.
        unsafe { core::ptr::write_bytes(sring, 0, HEADER) };
        let ring = FrontRing {
            sring,
            slot,
            req_prod_pvt: 0,
            pushed: 0,
            rsp_cons: 0,
            _types: PhantomData,
        };
        ring.hdr(REQ_EVENT).store(1, Ordering::Relaxed);
        ring.hdr(RSP_EVENT).store(1, Ordering::Release);
        ring
    }

    fn hdr(&self, off: usize) -> &AtomicU32 {
        // SAFETY: off is one of the four aligned index fields of the ring page (see `init`).
        unsafe { &*self.sring.add(off).cast::<AtomicU32>() }
    }

    fn entry(&self, index: u32) -> *mut u8 {
        // SAFETY: the masked slot lies inside the page (see `init`).
        unsafe {
            self.sring
                .add(HEADER + (index % RING_SIZE) as usize * self.slot)
        }
    }

    /// Requests queued or pushed and not answered yet.
    pub fn outstanding(&self) -> u32 {
        self.req_prod_pvt.wrapping_sub(self.rsp_cons)
    }

    /// Ring index the next queued request gets.
    pub fn next_request_index(&self) -> u32 {
        self.req_prod_pvt
    }

    /// Queues a request (not visible to the backend before [`FrontRing::push`]); false when
    /// the ring is full.
    pub fn queue(&mut self, req: Req) -> bool {
        if self.outstanding() >= RING_SIZE {
            return false;
        }
        // SAFETY: a slot of the ring page no response occupies (outstanding < RING_SIZE).
        unsafe {
            self.entry(self.req_prod_pvt)
                .cast::<Req>()
                .write_volatile(req)
        };
        self.req_prod_pvt = self.req_prod_pvt.wrapping_add(1);
        true
    }

    /// Publishes the queued requests; true if the backend asked to be notified of them
    /// (RING_PUSH_REQUESTS_AND_CHECK_NOTIFY).
    pub fn push(&mut self) -> bool {
        let (old, new) = (self.pushed, self.req_prod_pvt);
        // Release: the requests are visible before the index that publishes them.
        self.hdr(REQ_PROD).store(new, Ordering::Release);
        self.pushed = new;
        fence(Ordering::SeqCst);
        let event = self.hdr(REQ_EVENT).load(Ordering::Acquire);
        new.wrapping_sub(event) < new.wrapping_sub(old)
    }

    /// Responses the backend published that we have not consumed; 0 if it claims more than
    /// it was asked for.
    fn unconsumed(&self) -> u32 {
        let n = self
            .hdr(RSP_PROD)
            .load(Ordering::Acquire)
            .wrapping_sub(self.rsp_cons);
        if n > self.pushed.wrapping_sub(self.rsp_cons) {
            0
        } else {
            n
        }
    }

    /// The next response and the ring index it came in (the index of the request it
    /// answers, for rings where responses stay in their request's slot).
    pub fn next_response(&mut self) -> Option<(u32, Rsp)> {
        if self.unconsumed() == 0 {
            return None;
        }
        let index = self.rsp_cons;
        // SAFETY: a slot the backend filled (index < rsp_prod, checked above).
        let rsp = unsafe { self.entry(index).cast::<Rsp>().read_volatile() };
        self.rsp_cons = index.wrapping_add(1);
        Some((index, rsp))
    }

    /// The raw bytes of the next response slot (extra-info slots have no `Rsp` layout).
    pub fn next_raw(&mut self) -> Option<[u8; 8]> {
        if self.unconsumed() == 0 {
            return None;
        }
        // SAFETY: as in `next`; every slot has at least 8 bytes.
        let raw = unsafe { self.entry(self.rsp_cons).cast::<[u8; 8]>().read_volatile() };
        self.rsp_cons = self.rsp_cons.wrapping_add(1);
        Some(raw)
    }

    /// Asks the backend to notify us of the next response, then says whether one arrived
    /// meanwhile (RING_FINAL_CHECK_FOR_RESPONSES): if true, consume before sleeping.
    pub fn final_check(&mut self) -> bool {
        if self.unconsumed() != 0 {
            return true;
        }
        self.hdr(RSP_EVENT)
            .store(self.rsp_cons.wrapping_add(1), Ordering::Release);
        fence(Ordering::SeqCst);
        self.unconsumed() != 0
    }
}

// The layouts are the wire format: pin them.
const _: () = assert!(core::mem::size_of::<TxRequest>() == 12);
const _: () = assert!(core::mem::size_of::<TxResponse>() == 4);
const _: () = assert!(core::mem::size_of::<RxRequest>() == 8);
const _: () = assert!(core::mem::size_of::<RxResponse>() == 8);
const _: () = assert!(HEADER + RING_SIZE as usize * TX_SLOT <= 4096);
const _: () = assert!(HEADER + RING_SIZE as usize * RX_SLOT <= 4096);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Page;

    /// The backend's side, as netback drives it (ring.h's BACK_RING), over the same page.
    struct Back {
        page: *mut u8,
        slot: usize,
        req_cons: u32,
        rsp_prod_pvt: u32,
    }

    impl Back {
        fn u32_at(&self, off: usize) -> u32 {
            // SAFETY: an index field of the test's ring page.
            unsafe { self.page.add(off).cast::<u32>().read_volatile() }
        }
        fn set(&self, off: usize, v: u32) {
            // SAFETY: as in `u32_at`.
            unsafe { self.page.add(off).cast::<u32>().write_volatile(v) }
        }
        fn take<Req: Copy>(&mut self) -> Option<Req> {
            if self.req_cons == self.u32_at(REQ_PROD) {
                return None;
            }
            let at = HEADER + (self.req_cons % RING_SIZE) as usize * self.slot;
            self.req_cons += 1;
            // SAFETY: a slot of the test's ring page.
            Some(unsafe { self.page.add(at).cast::<Req>().read() })
        }
        fn answer<Rsp: Copy>(&mut self, rsp: Rsp) {
            let at = HEADER + (self.rsp_prod_pvt % RING_SIZE) as usize * self.slot;
            // SAFETY: a slot of the test's ring page.
            unsafe { self.page.add(at).cast::<Rsp>().write(rsp) };
            self.rsp_prod_pvt += 1;
        }
        /// RING_PUSH_RESPONSES_AND_CHECK_NOTIFY
        fn publish(&mut self) -> bool {
            let old = self.u32_at(RSP_PROD);
            self.set(RSP_PROD, self.rsp_prod_pvt);
            let ev = self.u32_at(RSP_EVENT);
            self.rsp_prod_pvt.wrapping_sub(ev) < self.rsp_prod_pvt.wrapping_sub(old)
        }
    }

    fn rx_pair(page: &Page) -> (FrontRing<RxRequest, RxResponse>, Back) {
        // SAFETY: the test's page, shared by the two ends only.
        let front = unsafe { FrontRing::init(page.as_ptr(), RX_SLOT) };
        let back = Back {
            page: page.as_ptr(),
            slot: RX_SLOT,
            req_cons: 0,
            rsp_prod_pvt: 0,
        };
        (front, back)
    }

    #[test]
    fn requests_reach_the_backend_and_responses_come_back_in_their_slots() {
        let page = Box::new(Page::new());
        let (mut front, mut back) = rx_pair(&page);
        for id in 0..3 {
            assert!(front.queue(RxRequest {
                id,
                pad: 0,
                gref: 8 + u32::from(id)
            }));
        }
        assert_eq!(back.take::<RxRequest>(), None, "nothing before push");
        assert!(front.push(), "a fresh ring wants a notification");
        let reqs: Vec<RxRequest> = std::iter::from_fn(|| back.take()).collect();
        assert_eq!(reqs.iter().map(|r| r.gref).collect::<Vec<_>>(), [8, 9, 10]);

        assert!(!front.final_check());
        back.answer(RxResponse {
            id: 0,
            offset: 0,
            flags: 0,
            status: 60,
        });
        back.answer(RxResponse {
            id: 1,
            offset: 2,
            flags: 0,
            status: 42,
        });
        assert!(back.publish(), "final_check asked to be notified");
        assert_eq!(
            front.next_response().map(|(i, r)| (i, r.status)),
            Some((0, 60))
        );
        assert_eq!(
            front.next_response().map(|(i, r)| (i, r.offset)),
            Some((1, 2))
        );
        assert_eq!(front.next_response(), None);
        assert_eq!(front.outstanding(), 1);
    }

    #[test]
    fn the_ring_holds_256_and_wraps() {
        let page = Box::new(Page::new());
        let (mut front, mut back) = rx_pair(&page);
        for round in 0..3u32 {
            for i in 0..RING_SIZE {
                assert!(front.queue(RxRequest {
                    id: i as u16,
                    pad: 0,
                    gref: round
                }));
            }
            assert!(!front.queue(RxRequest::default()), "full");
            front.push();
            for _ in 0..RING_SIZE {
                let r: RxRequest = back.take().unwrap();
                assert_eq!(r.gref, round);
                back.answer(RxResponse {
                    id: r.id,
                    offset: 0,
                    flags: 0,
                    status: 1,
                });
            }
            back.publish();
            for i in 0..RING_SIZE {
                assert_eq!(
                    front.next_response().map(|(idx, _)| idx),
                    Some(round * RING_SIZE + i)
                );
            }
        }
    }

    #[test]
    fn a_backend_answering_more_than_it_was_asked_is_ignored() {
        let page = Box::new(Page::new());
        let (mut front, back) = rx_pair(&page);
        front.queue(RxRequest::default());
        front.push();
        back.set(RSP_PROD, 5);
        assert_eq!(front.next_response(), None);
        assert!(!front.final_check());
        back.set(RSP_PROD, 1);
        assert!(front.next_response().is_some());
    }

    #[test]
    fn push_notifies_only_when_the_backend_asked() {
        let page = Box::new(Page::new());
        // SAFETY: the test's page.
        let mut front: FrontRing<TxRequest, TxResponse> =
            unsafe { FrontRing::init(page.as_ptr(), TX_SLOT) };
        front.queue(TxRequest::default());
        assert!(front.push());
        // The backend consumed it and wants to hear at request 10 only.
        // SAFETY: the header of the test's page.
        unsafe { page.as_ptr().add(REQ_EVENT).cast::<u32>().write(10) };
        front.queue(TxRequest::default());
        assert!(!front.push());
    }
}
