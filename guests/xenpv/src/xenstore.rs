//! A small Xenstore client over the ring (public/io/xs_wire.h): req[1024], rsp[1024], then
//! req_cons, req_prod, rsp_cons, rsp_prod (u32 each). Messages are a 16-byte header (type,
//! req_id, tx_id, len) followed by `len` payload bytes. One request at a time; watch events
//! that arrive meanwhile are noted and skipped. Waiting for a reply yields (bounded, so a
//! guest without xenstored still goes on); waiting for a watch sleeps on the ring's channel.

use crate::events::Events;
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
const HEADER: usize = 16;
/// XENSTORE_PAYLOAD_MAX
const PAYLOAD_MAX: u32 = 4096;

const XS_READ: u32 = 2;
const XS_WATCH: u32 = 4;
const XS_WRITE: u32 = 11;
const XS_WATCH_EVENT: u32 = 15;
const XS_ERROR: u32 = 16;

/// A Xenstore connection over our ring.
pub struct Xenstore {
    ring: Ring,
    max_yields: u32,
    req_id: u32,
    /// A watch event arrived since the last [`Xenstore::wait_for_watch`].
    fired: bool,
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

impl Xenstore {
    /// `max_yields` bounds each wait for xenstored.
    ///
    /// # Safety
    /// `ring.page` must be the mapped Xenstore ring page of this domain, not used by anyone else
    /// in this guest.
    pub unsafe fn new(ring: Ring, max_yields: u32) -> Xenstore {
        Xenstore {
            ring,
            max_yields,
            req_id: 0,
            fired: false,
        }
    }

    /// The ring's event channel.
    pub fn port(&self) -> u32 {
        self.ring.evtchn
    }

    fn index(&self, off: usize) -> &AtomicU32 {
        // SAFETY: the ring page is ours (see `new`); off is an aligned index field in it.
        unsafe { &*self.ring.page.add(off).cast::<AtomicU32>() }
    }

    /// Reads `path` (relative paths are under /local/domain/<our domid>) into `out`; the value,
    /// or None on an error reply (ENOENT, EACCES...), timeout or a value longer than `out`.
    pub fn read<'a>(&mut self, path: &[u8], out: &'a mut [u8]) -> Option<&'a [u8]> {
        let n = self.request(XS_READ, &[path, b"\0"], out)?;
        out.get(..n)
    }

    /// Writes `value` to `path`; true when xenstored acknowledged it.
    pub fn write(&mut self, path: &[u8], value: &[u8]) -> bool {
        self.request(XS_WRITE, &[path, b"\0", value], &mut [0; 4])
            .is_some()
    }

    /// Watches `path` (and everything below it); xenstored fires it once at once.
    pub fn watch(&mut self, path: &[u8], token: &[u8]) -> bool {
        self.request(XS_WATCH, &[path, b"\0", token, b"\0"], &mut [0; 4])
            .is_some()
    }

    /// True if one of our watches fired since the last call. Clears the ring's pending event
    /// first, so that a watch firing after this wakes [`Events::wait`] on [`Xenstore::port`].
    pub fn watch_fired(&mut self, events: &Events) -> bool {
        events.clear(self.port());
        // No request is outstanding, so whatever is in the ring is a watch event.
        while self.rsp_avail() != 0 {
            if self.receive(&mut []).is_none() {
                break;
            }
        }
        core::mem::take(&mut self.fired)
    }

    /// Sleeps on the ring's channel until one of our watches fires (at once if one did since
    /// the last [`Xenstore::watch_fired`]). Callers re-check what they wait for.
    pub fn wait_for_watch(&mut self, events: &Events) {
        while !self.watch_fired(events) {
            events.wait(&[self.port()]);
        }
    }

    /// Sends one request and returns its reply's payload length (written to `out`, truncated
    /// to it), or None on an error reply, a reply of another type, or timeout.
    fn request(&mut self, kind: u32, parts: &[&[u8]], out: &mut [u8]) -> Option<usize> {
        self.req_id = self.req_id.wrapping_add(1);
        self.send(kind, parts)?;
        loop {
            let (got, id, len) = self.receive(out)?;
            if got == XS_WATCH_EVENT || id != self.req_id {
                continue;
            }
            return (got == kind && len <= out.len()).then_some(len);
        }
    }

    fn send(&mut self, kind: u32, parts: &[&[u8]]) -> Option<()> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let need = (HEADER + len) as u32;
        if need > RING_SIZE {
            return None;
        }
        let mut header = [0u8; HEADER];
        header[0..4].copy_from_slice(&kind.to_le_bytes());
        header[4..8].copy_from_slice(&self.req_id.to_le_bytes());
        header[12..16].copy_from_slice(&(len as u32).to_le_bytes());

        let (cons, prod) = (self.index(REQ_CONS), self.index(REQ_PROD));
        let room = || {
            RING_SIZE.saturating_sub(
                prod.load(Ordering::Relaxed)
                    .wrapping_sub(cons.load(Ordering::Acquire)),
            )
        };
        if !wait(self.max_yields, || room() >= need) {
            return None;
        }
        let mut p = prod.load(Ordering::Relaxed);
        for &b in core::iter::once(&header[..])
            .chain(parts.iter().copied())
            .flatten()
        {
            // SAFETY: masked index inside the 1024-byte request array of our ring page.
            unsafe {
                self.ring
                    .page
                    .add(REQ_OFF + (p % RING_SIZE) as usize)
                    .write_volatile(b)
            };
            p = p.wrapping_add(1);
        }
        // Release: the bytes are visible before the new producer index.
        prod.store(p, Ordering::Release);
        hypercall::evtchn_send(self.ring.evtchn);
        Some(())
    }

    /// Bytes xenstored produced that we have not consumed (0 if the indexes make no sense).
    fn rsp_avail(&self) -> u32 {
        let n = self
            .index(RSP_PROD)
            .load(Ordering::Acquire)
            .wrapping_sub(self.index(RSP_CONS).load(Ordering::Relaxed));
        if n > RING_SIZE {
            0
        } else {
            n
        }
    }

    /// Consumes `n` bytes of the response ring as they arrive, handing each to `sink`.
    fn take(&mut self, n: usize, mut sink: impl FnMut(usize, u8)) -> Option<()> {
        let mut done = 0;
        while done < n {
            if !wait(self.max_yields, || self.rsp_avail() != 0) {
                return None;
            }
            let c = self.index(RSP_CONS).load(Ordering::Relaxed);
            let chunk = (self.rsp_avail() as usize).min(n - done);
            for i in 0..chunk {
                let at = RSP_OFF + (c.wrapping_add(i as u32) % RING_SIZE) as usize;
                // SAFETY: masked index inside the 1024-byte response array of our ring page.
                sink(done + i, unsafe { self.ring.page.add(at).read_volatile() });
            }
            self.index(RSP_CONS)
                .store(c.wrapping_add(chunk as u32), Ordering::Release);
            hypercall::evtchn_send(self.ring.evtchn);
            done += chunk;
        }
        Some(())
    }

    /// Receives one message: `(type, req_id, payload length)`, the payload copied to `out`
    /// (truncated to it). Watch events are noted.
    fn receive(&mut self, out: &mut [u8]) -> Option<(u32, u32, usize)> {
        let mut header = [0u8; HEADER];
        self.take(HEADER, |i, b| header[i] = b)?;
        let word =
            |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
        let (kind, id, len) = (word(0), word(4), word(12));
        if len > PAYLOAD_MAX {
            return None;
        }
        self.take(len as usize, |i, b| {
            if let Some(o) = out.get_mut(i) {
                *o = b;
            }
        })?;
        if kind == XS_WATCH_EVENT {
            self.fired = true;
        }
        Some((kind, id, if kind == XS_ERROR { 0 } else { len as usize }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Page;

    /// A ring page with xenstored's replies queued in advance.
    struct FakeRing {
        page: Box<Page>,
        rsp_prod: u32,
    }

    impl FakeRing {
        fn new() -> FakeRing {
            FakeRing {
                page: Box::new(Page::new()),
                rsp_prod: 0,
            }
        }

        fn starting_at(index: u32) -> FakeRing {
            let mut r = FakeRing::new();
            for off in [REQ_CONS, REQ_PROD, RSP_CONS, RSP_PROD] {
                r.set(off, index);
            }
            r.rsp_prod = index;
            r
        }

        fn set(&mut self, off: usize, v: u32) {
            // SAFETY: an index field of the test's own page.
            unsafe { self.page.as_ptr().add(off).cast::<u32>().write(v) }
        }

        fn get(&self, off: usize) -> u32 {
            // SAFETY: as in `set`.
            unsafe { self.page.as_ptr().add(off).cast::<u32>().read() }
        }

        fn reply(&mut self, kind: u32, req_id: u32, payload: &[u8]) -> &mut Self {
            let mut msg = Vec::new();
            for w in [kind, req_id, 0, payload.len() as u32] {
                msg.extend_from_slice(&w.to_le_bytes());
            }
            msg.extend_from_slice(payload);
            for b in msg {
                // SAFETY: masked index in the response array of the test's page.
                unsafe {
                    *self
                        .page
                        .as_ptr()
                        .add(RSP_OFF + (self.rsp_prod % RING_SIZE) as usize) = b
                };
                self.rsp_prod = self.rsp_prod.wrapping_add(1);
            }
            let p = self.rsp_prod;
            self.set(RSP_PROD, p);
            self
        }

        fn client(&self) -> Xenstore {
            let ring = Ring {
                page: self.page.as_ptr(),
                evtchn: 1,
            };
            // SAFETY: the test's page, used by this client only.
            unsafe { Xenstore::new(ring, 3) }
        }

        /// The request bytes the client wrote, from ring index `from`.
        fn requests(&self, from: u32) -> Vec<u8> {
            let n = self.get(REQ_PROD).wrapping_sub(from);
            (0..n)
                .map(|i| from.wrapping_add(i) % RING_SIZE)
                // SAFETY: masked index in the request array of the test's page.
                .map(|i| unsafe { *self.page.as_ptr().add(REQ_OFF + i as usize) })
                .collect()
        }
    }

    fn header(kind: u32, id: u32, len: u32) -> Vec<u8> {
        [kind, id, 0, len]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect()
    }

    #[test]
    fn a_read_sends_the_path_and_returns_the_value() {
        let mut ring = FakeRing::new();
        ring.reply(XS_READ, 1, b"7");
        let mut xs = ring.client();
        let mut buf = [0u8; 16];
        assert_eq!(xs.read(b"domid", &mut buf), Some(&b"7"[..]));
        let mut want = header(XS_READ, 1, 6);
        want.extend_from_slice(b"domid\0");
        assert_eq!(ring.requests(0), want);
        assert_eq!(ring.get(RSP_CONS), ring.get(RSP_PROD), "reply consumed");
    }

    #[test]
    fn watch_events_before_the_reply_are_skipped_and_noted() {
        let mut ring = FakeRing::new();
        ring.reply(XS_WATCH_EVENT, 0, b"control/shutdown\0s\0")
            .reply(XS_WRITE, 1, b"OK\0");
        let mut xs = ring.client();
        assert!(xs.write(b"device/vif/0/state", b"4"));
        assert!(xs.fired);
        let mut want = header(XS_WRITE, 1, 20);
        want.extend_from_slice(b"device/vif/0/state\x004");
        assert_eq!(ring.requests(0), want);
    }

    #[test]
    fn errors_other_types_and_long_values_are_none() {
        let mut ring = FakeRing::new();
        ring.reply(XS_ERROR, 1, b"ENOENT\0")
            .reply(XS_WATCH, 2, b"OK\0")
            .reply(XS_READ, 3, b"too long for the buffer");
        let mut xs = ring.client();
        let mut buf = [0u8; 8];
        assert_eq!(xs.read(b"a", &mut buf), None);
        assert_eq!(xs.read(b"b", &mut buf), None, "a reply of another type");
        assert_eq!(xs.read(b"c", &mut buf), None);
    }

    #[test]
    fn replies_to_older_requests_are_skipped() {
        let mut ring = FakeRing::new();
        ring.reply(XS_READ, 5, b"stale").reply(XS_READ, 1, b"new");
        let mut xs = ring.client();
        let mut buf = [0u8; 8];
        assert_eq!(xs.read(b"k", &mut buf), Some(&b"new"[..]));
    }

    #[test]
    fn messages_wrap_around_the_ring_end() {
        let mut ring = FakeRing::starting_at(u32::MAX - 10);
        ring.reply(XS_READ, 1, b"wrapped value");
        let mut xs = ring.client();
        let mut buf = [0u8; 32];
        assert_eq!(xs.read(b"some/path", &mut buf), Some(&b"wrapped value"[..]));
        let mut want = header(XS_READ, 1, 10);
        want.extend_from_slice(b"some/path\0");
        assert_eq!(ring.requests(u32::MAX - 10), want);
    }

    #[test]
    fn no_reply_times_out_and_oversized_requests_are_refused() {
        let ring = FakeRing::new();
        let mut xs = ring.client();
        let mut buf = [0u8; 8];
        assert_eq!(xs.read(b"nobody/answers", &mut buf), None);
        assert!(!xs.write(&[b'x'; 1020], b""));
    }

    #[test]
    fn nonsense_producer_indexes_are_not_followed() {
        let mut ring = FakeRing::new();
        ring.set(RSP_PROD, 5000);
        let mut xs = ring.client();
        let mut buf = [0u8; 8];
        assert_eq!(xs.read(b"k", &mut buf), None);
    }
}
