//! Netif rings, the backend's side (xen/include/public/io/netif.h on io/ring.h). Each ring is
//! one page the guest granted: a 64-byte header (`req_prod`, `req_event`, `rsp_prod`,
//! `rsp_event`), then 256 slots, 12 bytes each on the tx ring and 8 on the rx ring; a response
//! is written over the slot of the request it answers, in order.
//!
//! The guest writes the whole page at any time. Here every slot is read once (a copy, word by
//! word) and only the copy is looked at; an index the guest publishes is checked against what
//! the ring can hold before anything is taken, and a ring that claims more is
//! [`RingError::Overflow`]: the caller disconnects the vif (as Linux netback's
//! "Impossible number of requests"). Nothing read from the page is used as an offset into it:
//! slots are found from our own indexes, modulo the ring size.

use std::sync::atomic::{fence, Ordering};

use super::page::SharedPage;
use xen_types::GrantRef;

/// Slots per ring (256 for both rings: the largest power of two that fits the page).
pub const RING_SIZE: u32 = 256;
const HEADER: usize = 64;
const REQ_PROD: usize = 0;
const REQ_EVENT: usize = 4;
const RSP_PROD: usize = 8;
const RSP_EVENT: usize = 12;
/// Slot sizes: the unions of request and response.
pub const TX_SLOT: usize = 12;
pub const RX_SLOT: usize = 8;
const _: () = assert!(HEADER + RING_SIZE as usize * TX_SLOT <= xen_types::PAGE_SIZE);

/// NETTXF_*: the packet continues in the next slot / extra-info slots follow this one.
pub const NETTXF_MORE_DATA: u16 = 1 << 2;
pub const NETTXF_EXTRA_INFO: u16 = 1 << 3;
/// XEN_NETIF_EXTRA_FLAG_MORE, in an extra-info slot: another one follows.
pub const EXTRA_FLAG_MORE: u8 = 1;
/// NETIF_RSP_*
pub const RSP_ERROR: i16 = -1;
pub const RSP_OKAY: i16 = 0;
pub const RSP_NULL: i16 = 1;

/// `netif_tx_request`: a frame of `size` bytes at `offset` in the page granted as `gref`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TxRequest {
    pub gref: GrantRef,
    pub offset: u16,
    pub flags: u16,
    pub id: u16,
    pub size: u16,
}

impl TxRequest {
    fn from_words(w: [u32; 3]) -> TxRequest {
        TxRequest {
            gref: w[0],
            offset: w[1] as u16,
            flags: (w[1] >> 16) as u16,
            id: w[2] as u16,
            size: (w[2] >> 16) as u16,
        }
    }

    /// The extra-info view of the slot (`netif_extra_info`): its `flags` byte.
    pub fn extra_flags(&self) -> u8 {
        (self.gref >> 8) as u8
    }
}

/// `netif_rx_request`: a page granted writable for one received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RxRequest {
    pub id: u16,
    pub gref: GrantRef,
}

/// Ring errors that end the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    #[error(
        "the {ring} ring claims {pending} requests outstanding (req_prod {req_prod:#x}); it holds {RING_SIZE}"
    )]
    Overflow {
        ring: &'static str,
        pending: u32,
        req_prod: u32,
    },
}

/// The backend's private state of one ring (ring.h's `BACK_RING`) over the guest's page.
#[derive(Debug)]
pub struct BackRing<P> {
    page: P,
    name: &'static str,
    slot: usize,
    req_cons: u32,
    rsp_prod_pvt: u32,
    /// The last `rsp_prod` we published (never read back from the page).
    pushed: u32,
}

impl<P: SharedPage> BackRing<P> {
    /// Takes over a ring the guest set up, carrying on after the responses already published
    /// (0 on a fresh ring; a restarted backend continues where its predecessor stopped).
    pub fn attach(page: P, name: &'static str, slot: usize) -> BackRing<P> {
        let rsp = page.get32(RSP_PROD);
        BackRing {
            page,
            name,
            slot,
            req_cons: rsp,
            rsp_prod_pvt: rsp,
            pushed: rsp,
        }
    }

    /// Requests published and not taken yet. Every request taken is answered before the
    /// guest may reuse its slot, so more than [`RING_SIZE`] unanswered is a broken ring.
    pub fn unconsumed(&self) -> Result<u32, RingError> {
        let prod = self.page.get32(REQ_PROD);
        // The slots are read after the index that published them.
        fence(Ordering::Acquire);
        let pending = prod.wrapping_sub(self.rsp_prod_pvt);
        if pending > RING_SIZE {
            return Err(RingError::Overflow {
                ring: self.name,
                pending,
                req_prod: prod,
            });
        }
        Ok(prod.wrapping_sub(self.req_cons))
    }

    fn slot_at(&self, index: u32) -> usize {
        HEADER + (index % RING_SIZE) as usize * self.slot
    }

    /// Copies the next request's slot and takes it. Call only with [`unconsumed`] above 0.
    ///
    /// [`unconsumed`]: Self::unconsumed
    fn take_words<const N: usize>(&mut self) -> [u32; N] {
        let at = self.slot_at(self.req_cons);
        self.req_cons = self.req_cons.wrapping_add(1);
        std::array::from_fn(|i| self.page.get32(at + 4 * i))
    }

    /// Writes the next response, in the slot of the oldest request not answered yet.
    fn respond_words(&mut self, words: &[u32]) {
        let at = self.slot_at(self.rsp_prod_pvt);
        for (i, w) in words.iter().enumerate() {
            self.page.put32(at + 4 * i, *w);
        }
        self.rsp_prod_pvt = self.rsp_prod_pvt.wrapping_add(1);
    }

    /// Publishes the responses written; true if the guest asked to be notified of them
    /// (RING_PUSH_RESPONSES_AND_CHECK_NOTIFY).
    pub fn push(&mut self) -> bool {
        let (old, new) = (self.pushed, self.rsp_prod_pvt);
        if old == new {
            return false;
        }
        // The responses are visible before the index that publishes them.
        fence(Ordering::Release);
        self.page.put32(RSP_PROD, new);
        self.pushed = new;
        fence(Ordering::SeqCst);
        let event = self.page.get32(RSP_EVENT);
        new.wrapping_sub(event) < new.wrapping_sub(old)
    }

    /// Asks the guest to notify us of its next request, then says whether one arrived
    /// meanwhile (RING_FINAL_CHECK_FOR_REQUESTS): if true, take it before sleeping.
    pub fn final_check(&mut self) -> Result<bool, RingError> {
        if self.unconsumed()? > 0 {
            return Ok(true);
        }
        self.page.put32(REQ_EVENT, self.req_cons.wrapping_add(1));
        fence(Ordering::SeqCst);
        Ok(self.unconsumed()? > 0)
    }

    /// Requests taken and not answered (0 between passes).
    pub fn in_flight(&self) -> u32 {
        self.req_cons.wrapping_sub(self.rsp_prod_pvt)
    }
}

impl<P: SharedPage> BackRing<P> {
    /// The next tx request.
    pub fn take_tx(&mut self) -> TxRequest {
        TxRequest::from_words(self.take_words::<3>())
    }

    /// Answers the oldest tx request taken (`netif_tx_response`: id, status).
    pub fn respond_tx(&mut self, id: u16, status: i16) {
        self.respond_words(&[u32::from(id) | (u32::from(status as u16) << 16)]);
    }

    /// The next rx request.
    pub fn take_rx(&mut self) -> RxRequest {
        let [w0, w1] = self.take_words::<2>();
        RxRequest {
            id: w0 as u16,
            gref: w1,
        }
    }

    /// Answers the oldest rx request taken (`netif_rx_response`): `status` is the frame's
    /// length at `offset`, or a negative NETIF_RSP_*.
    pub fn respond_rx(&mut self, id: u16, offset: u16, flags: u16, status: i16) {
        self.respond_words(&[
            u32::from(id) | (u32::from(offset) << 16),
            u32::from(flags) | (u32::from(status as u16) << 16),
        ]);
    }
}

#[cfg(test)]
pub mod front {
    //! The guest's side, as a netfront drives it (ring.h's FRONT_RING), for tests: the
    //! simulated guest that the backend is tested against.
    use super::*;

    #[derive(Debug)]
    pub struct FrontRing<P> {
        pub page: P,
        slot: usize,
        pub req_prod_pvt: u32,
        pub rsp_cons: u32,
    }

    impl<P: SharedPage> FrontRing<P> {
        /// SHARED_RING_INIT and FRONT_RING_INIT.
        pub fn init(mut page: P, slot: usize) -> FrontRing<P> {
            page.put32(REQ_PROD, 0);
            page.put32(RSP_PROD, 0);
            page.put32(REQ_EVENT, 1);
            page.put32(RSP_EVENT, 1);
            FrontRing {
                page,
                slot,
                req_prod_pvt: 0,
                rsp_cons: 0,
            }
        }

        fn at(&self, i: u32) -> usize {
            HEADER + (i % RING_SIZE) as usize * self.slot
        }

        pub fn queue_words(&mut self, words: &[u32]) {
            let at = self.at(self.req_prod_pvt);
            for (i, w) in words.iter().enumerate() {
                self.page.put32(at + 4 * i, *w);
            }
            self.req_prod_pvt = self.req_prod_pvt.wrapping_add(1);
        }

        pub fn queue_tx(&mut self, r: TxRequest) {
            self.queue_words(&[
                r.gref,
                u32::from(r.offset) | (u32::from(r.flags) << 16),
                u32::from(r.id) | (u32::from(r.size) << 16),
            ]);
        }

        pub fn queue_rx(&mut self, id: u16, gref: GrantRef) {
            self.queue_words(&[u32::from(id), gref]);
        }

        /// Publishes; true if the backend asked to be notified.
        pub fn push(&mut self) -> bool {
            let old = self.page.get32(REQ_PROD);
            let new = self.req_prod_pvt;
            self.page.put32(REQ_PROD, new);
            let event = self.page.get32(REQ_EVENT);
            new.wrapping_sub(event) < new.wrapping_sub(old)
        }

        /// The next response's words, if the backend published one.
        pub fn response<const N: usize>(&mut self) -> Option<[u32; N]> {
            if self.page.get32(RSP_PROD) == self.rsp_cons {
                return None;
            }
            let at = self.at(self.rsp_cons);
            self.rsp_cons = self.rsp_cons.wrapping_add(1);
            Some(std::array::from_fn(|i| self.page.get32(at + 4 * i)))
        }

        /// Next tx response: (id, status).
        pub fn tx_response(&mut self) -> Option<(u16, i16)> {
            self.response::<1>()
                .map(|[w]| (w as u16, (w >> 16) as u16 as i16))
        }

        /// Next rx response: (id, offset, flags, status).
        pub fn rx_response(&mut self) -> Option<(u16, u16, u16, i16)> {
            self.response::<2>().map(|[a, b]| {
                (
                    a as u16,
                    (a >> 16) as u16,
                    b as u16,
                    (b >> 16) as u16 as i16,
                )
            })
        }

        /// Asks to be notified of the next response (rsp_event = rsp_cons + 1).
        pub fn want_responses(&mut self) {
            self.page.put32(RSP_EVENT, self.rsp_cons.wrapping_add(1));
        }

        /// Writes a raw index field (a misbehaving guest).
        pub fn scribble(&mut self, at: usize, v: u32) {
            self.page.put32(at, v);
        }
    }

    pub const REQ_PROD_AT: usize = REQ_PROD;
    pub const RSP_PROD_AT: usize = RSP_PROD;
}

#[cfg(test)]
mod tests {
    use super::front::FrontRing;
    use super::*;
    use crate::noxs::page::MemPage;

    fn pair(slot: usize) -> (FrontRing<MemPage>, BackRing<MemPage>) {
        let page = MemPage::new();
        let front = FrontRing::init(page.clone(), slot);
        (front, BackRing::attach(page, "test", slot))
    }

    #[test]
    fn requests_and_responses_cross_and_wrap_the_ring() {
        let (mut f, mut b) = pair(TX_SLOT);
        for round in 0..3u32 {
            for i in 0..RING_SIZE {
                f.queue_tx(TxRequest {
                    gref: round,
                    offset: 2,
                    flags: 0,
                    id: i as u16,
                    size: 60,
                });
            }
            f.push();
            assert_eq!(b.unconsumed(), Ok(RING_SIZE));
            for i in 0..RING_SIZE {
                let r = b.take_tx();
                assert_eq!((r.gref, r.id, r.offset, r.size), (round, i as u16, 2, 60));
                b.respond_tx(r.id, RSP_OKAY);
            }
            assert_eq!(b.unconsumed(), Ok(0));
            b.push();
            for i in 0..RING_SIZE {
                assert_eq!(f.tx_response(), Some((i as u16, RSP_OKAY)));
            }
        }
    }

    #[test]
    fn a_guest_claiming_more_than_the_ring_holds_is_an_error() {
        let (mut f, b) = pair(RX_SLOT);
        f.scribble(front::REQ_PROD_AT, RING_SIZE + 1);
        assert!(matches!(b.unconsumed(), Err(RingError::Overflow { .. })));
        f.scribble(front::REQ_PROD_AT, u32::MAX);
        assert!(b.unconsumed().is_err());
        f.scribble(front::REQ_PROD_AT, RING_SIZE);
        assert_eq!(b.unconsumed(), Ok(RING_SIZE));
    }

    #[test]
    fn notifications_follow_the_event_indexes() {
        let (mut f, mut b) = pair(RX_SLOT);
        // Fresh ring: the guest wants to hear of the first response.
        f.queue_rx(1, 9);
        assert!(f.push(), "a fresh ring asks for the first request");
        let r = b.take_rx();
        assert_eq!((r.id, r.gref), (1, 9));
        b.respond_rx(r.id, 0, 0, 42);
        assert!(b.push());
        assert_eq!(f.rx_response(), Some((1, 0, 0, 42)));
        // The guest did not ask again: no notification for the next one.
        f.queue_rx(2, 10);
        f.push();
        let r = b.take_rx();
        b.respond_rx(r.id, 0, 0, RSP_ERROR);
        assert!(!b.push());
        f.want_responses();
        assert_eq!(f.rx_response(), Some((2, 0, 0, RSP_ERROR)));
        // Nothing to publish: no notification.
        assert!(!b.push());
        // final_check arms req_event and sees nothing; a request after it notifies.
        assert_eq!(b.final_check(), Ok(false));
        f.queue_rx(3, 11);
        assert!(f.push());
        assert_eq!(b.final_check(), Ok(true));
    }

    #[test]
    fn a_restarted_backend_carries_on_after_the_published_responses() {
        let (mut f, mut b) = pair(TX_SLOT);
        for id in 0..5 {
            f.queue_tx(TxRequest {
                id,
                ..TxRequest::default()
            });
        }
        f.push();
        for _ in 0..3 {
            let r = b.take_tx();
            b.respond_tx(r.id, RSP_OKAY);
        }
        b.push();
        let mut again = BackRing::attach(f.page.clone(), "tx", TX_SLOT);
        assert_eq!(again.unconsumed(), Ok(2));
        assert_eq!(again.take_tx().id, 3);
    }
}
