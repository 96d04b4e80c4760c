//! The netfront's data path, the same for both control planes: a tx and an rx ring
//! (xenpv::netif), each a granted page, with pages granted for receiving (writable, the backend
//! copies packets in: request-rx-copy) and for sending (read-only). How the ring references and
//! the event channel reach the backend is the control plane's business (Xenstore keys or the
//! NoXS vif control page).
//!
//! Receive buffers are bound to ring slots: the request in ring slot `i` always names buffer
//! `i % RX_BUFFERS` and each consumed response slot is re-posted at once, because a backend
//! answers in the request's slot and extra-info slots carry no id (netif.h). Packets spread
//! over several slots (not negotiated: no feature-sg) are dropped, as are responses that do not
//! fit their page.

use xenpv::netif::{
    FrontRing, RxRequest, RxResponse, TxRequest, TxResponse, EXTRA_FLAG_MORE, NETRXF_EXTRA_INFO,
    NETRXF_MORE_DATA, RING_SIZE, RX_SLOT, TX_SLOT,
};
use xenpv::Page;

/// Receive buffers (a divisor of the ring size) and send buffers (at most 32: a bit mask).
pub const RX_BUFFERS: usize = 16;
pub const TX_BUFFERS: usize = 8;
const PAGE: usize = 4096;
const _: () = assert!((RING_SIZE as usize).is_multiple_of(RX_BUFFERS) && TX_BUFFERS <= 32);

/// The pages a netfront shares with its backend.
pub struct Buffers {
    tx_ring: Page,
    rx_ring: Page,
    tx: [Page; TX_BUFFERS],
    rx: [Page; RX_BUFFERS],
}

impl Buffers {
    pub const fn new() -> Buffers {
        Buffers {
            tx_ring: Page::new(),
            rx_ring: Page::new(),
            tx: [const { Page::new() }; TX_BUFFERS],
            rx: [const { Page::new() }; RX_BUFFERS],
        }
    }
}

impl Default for Buffers {
    fn default() -> Self {
        Buffers::new()
    }
}

/// A connected-or-connecting netfront.
pub struct Netfront<'a> {
    bufs: &'a Buffers,
    tx: FrontRing<TxRequest, TxResponse>,
    rx: FrontRing<RxRequest, RxResponse>,
    pub tx_ring_ref: u32,
    pub rx_ring_ref: u32,
    tx_grefs: [u32; TX_BUFFERS],
    rx_grefs: [u32; RX_BUFFERS],
    /// Bit `i`: send buffer `i` is free.
    tx_free: u32,
    /// Inside a multi-slot packet being dropped / extra-info slots follow.
    rx_skip: bool,
    rx_extra: bool,
}

/// What a pass over the rings did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub received: u32,
    pub sent: u32,
    /// The backend asked to be notified of the new requests.
    pub notify: bool,
}

impl<'a> Netfront<'a> {
    /// Sets the rings up in `bufs`, grants everything through `grant(page, readonly)` and
    /// posts the receive buffers. None if a grant fails.
    ///
    /// # Safety
    /// Nothing else may use `bufs` while the netfront lives (the backend excepted).
    pub unsafe fn new(
        bufs: &'a Buffers,
        mut grant: impl FnMut(*const u8, bool) -> Option<u32>,
    ) -> Option<Netfront<'a>> {
        // SAFETY: the ring pages are ours alone (see above) and hold one ring each.
        let (tx, mut rx) = unsafe {
            (
                FrontRing::init(bufs.tx_ring.as_ptr(), TX_SLOT),
                FrontRing::init(bufs.rx_ring.as_ptr(), RX_SLOT),
            )
        };
        let tx_ring_ref = grant(bufs.tx_ring.as_ptr(), false)?;
        let rx_ring_ref = grant(bufs.rx_ring.as_ptr(), false)?;
        let mut rx_grefs = [0; RX_BUFFERS];
        for (g, page) in rx_grefs.iter_mut().zip(&bufs.rx) {
            *g = grant(page.as_ptr(), false)?;
        }
        let mut tx_grefs = [0; TX_BUFFERS];
        for (g, page) in tx_grefs.iter_mut().zip(&bufs.tx) {
            *g = grant(page.as_ptr(), true)?;
        }
        for (id, &gref) in rx_grefs.iter().enumerate() {
            rx.queue(RxRequest {
                id: id as u16,
                pad: 0,
                gref,
            });
        }
        rx.push();
        Some(Netfront {
            bufs,
            tx,
            rx,
            tx_ring_ref,
            rx_ring_ref,
            tx_grefs,
            rx_grefs,
            tx_free: (1u64 << TX_BUFFERS).wrapping_sub(1) as u32,
            rx_skip: false,
            rx_extra: false,
        })
    }

    /// Reclaims sent buffers, hands each received packet to `answer(packet, out)` (which
    /// writes a reply into `out` and returns its length, 0 for none), queues the replies and
    /// re-posts the receive buffers. A packet is dropped when no send buffer is free.
    pub fn pass(&mut self, mut answer: impl FnMut(&[u8], &mut [u8]) -> usize) -> Pass {
        let mut pass = Pass::default();
        while let Some((_, rsp)) = self.tx.next_response() {
            // Only ids of send buffers free a buffer; anything else is ignored.
            if usize::from(rsp.id) < TX_BUFFERS {
                self.tx_free |= 1 << rsp.id;
            }
        }
        while let Some((index, rsp)) = self.rx.next_response() {
            let buf = index as usize % RX_BUFFERS;
            if self.rx_extra {
                // An extra-info slot: `id` overlays its type and flags bytes.
                self.rx_extra = (rsp.id >> 8) as u8 & EXTRA_FLAG_MORE != 0;
            } else if self.rx_skip {
                self.rx_skip = rsp.flags & NETRXF_MORE_DATA != 0;
            } else {
                self.rx_extra = rsp.flags & NETRXF_EXTRA_INFO != 0;
                self.rx_skip = rsp.flags & NETRXF_MORE_DATA != 0;
                if !self.rx_skip && self.receive(buf, rsp, &mut answer) {
                    pass.sent += 1;
                }
                pass.received += 1;
            }
            self.rx.queue(RxRequest {
                id: buf as u16,
                pad: 0,
                gref: self.rx_grefs[buf],
            });
        }
        pass.notify = self.rx.push() | self.tx.push();
        pass
    }

    /// One received packet in buffer `buf`: answered if `answer` says so and a send buffer is
    /// free; true if a reply was queued.
    fn receive(
        &mut self,
        buf: usize,
        rsp: RxResponse,
        answer: &mut impl FnMut(&[u8], &mut [u8]) -> usize,
    ) -> bool {
        let (off, len) = (
            usize::from(rsp.offset),
            usize::try_from(rsp.status).unwrap_or(0),
        );
        if len == 0 || off + len > PAGE || self.tx_free == 0 {
            return false;
        }
        let t = self.tx_free.trailing_zeros() as usize;
        // SAFETY: the backend is done with this buffer (it answered its slot) and `off + len`
        // lies inside the page; the send buffer is free (not in flight); both pages are ours
        // (see `new`).
        let (packet, out) = unsafe {
            (
                core::slice::from_raw_parts(self.bufs.rx[buf].as_ptr().add(off), len),
                core::slice::from_raw_parts_mut(self.bufs.tx[t].as_ptr(), PAGE),
            )
        };
        let n = answer(packet, out);
        if n == 0 || n > PAGE {
            return false;
        }
        self.tx_free &= !(1 << t);
        self.tx.queue(TxRequest {
            gref: self.tx_grefs[t],
            offset: 0,
            flags: 0,
            id: t as u16,
            size: n as u16,
        })
    }

    /// Asks the backend to notify us of the next responses; false if some arrived meanwhile
    /// (then make another pass before sleeping).
    pub fn idle(&mut self) -> bool {
        let rx = self.rx.final_check();
        let tx = self.tx.final_check();
        !(rx || tx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A netback over the test's memory: grant references resolve through `grants`.
    struct Backend {
        grants: HashMap<u32, (*mut u8, bool)>,
        tx_ring: *mut u8,
        rx_ring: *mut u8,
        tx_req_cons: u32,
        rx_req_cons: u32,
        tx_rsp_prod: u32,
        rx_rsp_prod: u32,
    }

    fn u32_at(p: *mut u8, off: usize) -> u32 {
        // SAFETY: an index field of a test ring page.
        unsafe { p.add(off).cast::<u32>().read_volatile() }
    }
    fn set_u32(p: *mut u8, off: usize, v: u32) {
        // SAFETY: as above.
        unsafe { p.add(off).cast::<u32>().write_volatile(v) }
    }

    impl Backend {
        fn slot(ring: *mut u8, size: usize, i: u32) -> *mut u8 {
            // SAFETY: a slot of a test ring page.
            unsafe { ring.add(64 + (i % RING_SIZE) as usize * size) }
        }

        /// Copies `packet` into the next posted receive buffer, as rx-copy does.
        fn deliver(&mut self, packet: &[u8], offset: u16, flags: u16) {
            assert_ne!(
                self.rx_req_cons,
                u32_at(self.rx_ring, 0),
                "a buffer is posted"
            );
            // SAFETY: a request slot the frontend filled.
            let req: RxRequest = unsafe {
                Self::slot(self.rx_ring, RX_SLOT, self.rx_req_cons)
                    .cast::<RxRequest>()
                    .read()
            };
            self.rx_req_cons += 1;
            let (page, ro) = self.grants[&req.gref];
            assert!(!ro, "receive buffers are writable");
            // SAFETY: the granted test page, 4096 bytes.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    packet.as_ptr(),
                    page.add(offset.into()),
                    packet.len(),
                );
                Self::slot(self.rx_ring, RX_SLOT, self.rx_rsp_prod)
                    .cast::<RxResponse>()
                    .write(RxResponse {
                        id: req.id,
                        offset,
                        flags,
                        status: packet.len() as i16,
                    });
            }
            self.rx_rsp_prod += 1;
            set_u32(self.rx_ring, 8, self.rx_rsp_prod);
        }

        /// The packets the frontend sent, answered.
        fn transmitted(&mut self) -> Vec<Vec<u8>> {
            let mut out = Vec::new();
            while self.tx_req_cons != u32_at(self.tx_ring, 0) {
                // SAFETY: a request slot the frontend filled.
                let req: TxRequest = unsafe {
                    Self::slot(self.tx_ring, TX_SLOT, self.tx_req_cons)
                        .cast::<TxRequest>()
                        .read()
                };
                self.tx_req_cons += 1;
                let (page, ro) = self.grants[&req.gref];
                assert!(ro, "send buffers are read-only");
                assert!(usize::from(req.offset) + usize::from(req.size) <= PAGE);
                // SAFETY: the granted test page.
                out.push(unsafe {
                    std::slice::from_raw_parts(page.add(req.offset.into()), req.size.into())
                        .to_vec()
                });
                // SAFETY: a slot of the test's tx ring.
                unsafe {
                    Self::slot(self.tx_ring, TX_SLOT, self.tx_rsp_prod)
                        .cast::<TxResponse>()
                        .write(TxResponse {
                            id: req.id,
                            status: 0,
                        })
                };
                self.tx_rsp_prod += 1;
            }
            set_u32(self.tx_ring, 8, self.tx_rsp_prod);
            out
        }
    }

    fn setup(bufs: &Buffers) -> (Netfront<'_>, Backend) {
        let mut grants = HashMap::new();
        let mut next = 8;
        // SAFETY: the test's buffers, used by this netfront only.
        let nf = unsafe {
            Netfront::new(bufs, |page, ro| {
                grants.insert(next, (page.cast_mut(), ro));
                next += 1;
                Some(next - 1)
            })
        }
        .unwrap();
        let be = Backend {
            tx_ring: grants[&nf.tx_ring_ref].0,
            rx_ring: grants[&nf.rx_ring_ref].0,
            grants,
            tx_req_cons: 0,
            rx_req_cons: 0,
            tx_rsp_prod: 0,
            rx_rsp_prod: 0,
        };
        (nf, be)
    }

    /// Answers every packet with itself reversed.
    fn reverse(p: &[u8], out: &mut [u8]) -> usize {
        for (o, b) in out.iter_mut().zip(p.iter().rev()) {
            *o = *b;
        }
        p.len()
    }

    #[test]
    fn received_packets_are_answered_on_the_tx_ring() {
        let bufs = Box::new(Buffers::new());
        let (mut nf, mut be) = setup(&bufs);
        assert_eq!(
            u32_at(be.rx_ring, 0),
            RX_BUFFERS as u32,
            "all buffers posted"
        );
        be.deliver(b"hello", 0, 0);
        be.deliver(b"world!", 100, 0);
        let pass = nf.pass(reverse);
        assert_eq!((pass.received, pass.sent), (2, 2));
        assert!(pass.notify);
        assert_eq!(be.transmitted(), [b"olleh".to_vec(), b"!dlrow".to_vec()]);
        assert_eq!(
            u32_at(be.rx_ring, 0),
            RX_BUFFERS as u32 + 2,
            "buffers re-posted"
        );
        assert!(!nf.idle(), "tx responses to reclaim");
        assert_eq!(nf.pass(reverse).received, 0);
        assert!(nf.idle());
    }

    #[test]
    fn buffers_cycle_through_many_packets() {
        let bufs = Box::new(Buffers::new());
        let (mut nf, mut be) = setup(&bufs);
        for i in 0..1000u32 {
            let p = i.to_le_bytes();
            be.deliver(&p, (i % 64) as u16, 0);
            assert_eq!(
                nf.pass(|p, o| {
                    o[..4].copy_from_slice(p);
                    4
                })
                .sent,
                1
            );
            assert_eq!(be.transmitted(), [p.to_vec()]);
        }
    }

    #[test]
    fn with_every_send_buffer_busy_packets_are_dropped() {
        let bufs = Box::new(Buffers::new());
        let (mut nf, mut be) = setup(&bufs);
        for _ in 0..TX_BUFFERS + 2 {
            be.deliver(b"x", 0, 0);
        }
        let pass = nf.pass(reverse);
        assert_eq!(
            (pass.received, pass.sent),
            (TX_BUFFERS as u32 + 2, TX_BUFFERS as u32)
        );
        assert_eq!(be.transmitted().len(), TX_BUFFERS);
        be.deliver(b"y", 0, 0);
        assert_eq!(nf.pass(reverse).sent, 1, "sent buffers came back");
    }

    #[test]
    fn multi_slot_packets_extra_info_and_bad_responses_are_dropped() {
        let bufs = Box::new(Buffers::new());
        let (mut nf, mut be) = setup(&bufs);
        be.deliver(b"first part", 0, NETRXF_MORE_DATA);
        be.deliver(b"second part", 0, 0);
        be.deliver(b"with extra", 0, NETRXF_EXTRA_INFO);
        // The extra-info slot: type 1 (GSO), flags 0, in the `id` bytes.
        be.deliver(b"extra", 0, 0);
        be.deliver(&[7; 100], 4050, 0); // past the page end
        be.deliver(b"ok", 0, 0);
        let mut seen = Vec::new();
        let pass = nf.pass(|p, _| {
            seen.push(p.to_vec());
            0
        });
        assert_eq!(seen, [b"with extra".to_vec(), b"ok".to_vec()]);
        assert_eq!(pass.sent, 0);
        assert_eq!(
            u32_at(be.rx_ring, 0),
            RX_BUFFERS as u32 + 6,
            "every slot re-posted"
        );
    }

    #[test]
    fn bogus_tx_ids_do_not_free_buffers() {
        let bufs = Box::new(Buffers::new());
        let (mut nf, mut be) = setup(&bufs);
        be.deliver(b"z", 0, 0);
        assert_eq!(nf.pass(reverse).sent, 1);
        let busy = nf.tx_free;
        // The backend answers request 0 with an id nobody sent.
        // SAFETY: a slot of the test's tx ring.
        unsafe {
            Backend::slot(be.tx_ring, TX_SLOT, 0)
                .cast::<TxResponse>()
                .write(TxResponse { id: 999, status: 0 })
        };
        set_u32(be.tx_ring, 8, 1);
        nf.pass(reverse);
        assert_eq!(nf.tx_free, busy, "buffer 0 still in flight");
    }
}
