//! The vif backend against a simulated guest: a netfront written here, over memory standing in
//! for its grants, event channels that record notifications, and a link that is two queues.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use proptest::prelude::*;

use super::*;
use crate::noxs::netif::front::{FrontRing, REQ_PROD_AT};
use crate::noxs::netif::{TxRequest, NETTXF_EXTRA_INFO, NETTXF_MORE_DATA, RING_SIZE};
use crate::noxs::page::MemPage;

const GUEST: DomId = DomId(7);
/// The grant of the control page (noxs::vif_ctrl_gref(0)) and the guest's device channel.
const CTRL_GREF: GrantRef = 2;
const DEVICE_PORT: EvtchnPort = 3;
const DATA_PORT: EvtchnPort = 4;
const RX_PORT: EvtchnPort = 5;

/// Xen as the backend sees it, with one guest: its grants to dom0 and its ports.
#[derive(Default)]
struct SimXen {
    /// gref -> (page, granted read-only)
    grants: RefCell<HashMap<GrantRef, (MemPage, bool)>>,
    /// The guest's ports toward dom0 -> our local port once bound.
    ports: RefCell<HashMap<EvtchnPort, Option<EvtchnPort>>>,
    next_local: Cell<EvtchnPort>,
    /// Guest ports notified, in order.
    kicks: RefCell<Vec<EvtchnPort>>,
    copy_calls: Cell<usize>,
}

impl SimXen {
    fn new() -> SimXen {
        let x = SimXen::default();
        x.next_local.set(100);
        for p in [DEVICE_PORT, DATA_PORT, RX_PORT] {
            x.ports.borrow_mut().insert(p, None);
        }
        x
    }

    fn grant(&self, gref: GrantRef, readonly: bool) -> MemPage {
        let page = MemPage::new();
        self.grants
            .borrow_mut()
            .insert(gref, (page.clone(), readonly));
        page
    }

    fn remote_of(&self, local: EvtchnPort) -> Option<EvtchnPort> {
        self.ports
            .borrow()
            .iter()
            .find(|(_, l)| **l == Some(local))
            .map(|(r, _)| *r)
    }

    fn bound(&self) -> usize {
        self.ports.borrow().values().filter(|l| l.is_some()).count()
    }

    fn kicked(&self, port: EvtchnPort) -> bool {
        let k = self.kicks.borrow().contains(&port);
        self.kicks.borrow_mut().clear();
        k
    }
}

impl Xen for SimXen {
    type Page = MemPage;

    fn map(&self, dom: DomId, gref: GrantRef) -> io::Result<MemPage> {
        match self.grants.borrow().get(&gref) {
            Some((page, false)) if dom == GUEST => Ok(page.clone()),
            _ => Err(io::Error::from_raw_os_error(libc::EINVAL)),
        }
    }

    fn copy(&self, ops: &mut [GrantCopy], buf: &mut [u8]) -> io::Result<()> {
        self.copy_calls.set(self.copy_calls.get() + 1);
        for op in ops {
            op.status = -3; // GNTST_bad_gntref
            let grants = self.grants.borrow();
            let Some((page, ro)) = grants.get(&op.gref) else {
                continue;
            };
            if op.dom != GUEST || !op.fits(buf.len()) || (*ro && op.dir == CopyDir::ToGrant) {
                continue;
            }
            let (o, l, n) = (usize::from(op.offset), op.local, usize::from(op.len));
            let mut p = page.0.borrow_mut();
            match op.dir {
                CopyDir::FromGrant => buf[l..l + n].copy_from_slice(&p[o..o + n]),
                CopyDir::ToGrant => p[o..o + n].copy_from_slice(&buf[l..l + n]),
            }
            op.status = GNTST_OKAY;
        }
        Ok(())
    }

    fn bind(&self, dom: DomId, port: EvtchnPort) -> io::Result<EvtchnPort> {
        let mut ports = self.ports.borrow_mut();
        match ports.get_mut(&port) {
            Some(slot @ None) if dom == GUEST => {
                let local = self.next_local.get();
                self.next_local.set(local + 1);
                *slot = Some(local);
                Ok(local)
            }
            _ => Err(io::Error::from_raw_os_error(libc::EINVAL)),
        }
    }

    fn unbind(&self, local: EvtchnPort) {
        for l in self.ports.borrow_mut().values_mut() {
            if *l == Some(local) {
                *l = None;
            }
        }
    }

    fn notify(&self, local: EvtchnPort) {
        let remote = self.remote_of(local).expect("notify on a bound port");
        self.kicks.borrow_mut().push(remote);
    }
}

/// dom0's side of the link: frames the vif sent, frames waiting for the guest.
#[derive(Default)]
struct Wire {
    sent: Vec<Vec<u8>>,
    waiting: VecDeque<Vec<u8>>,
}

#[derive(Clone, Default)]
struct SimLink(Rc<RefCell<Wire>>);

impl Link for SimLink {
    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        self.0.borrow_mut().sent.push(frame.to_vec());
        Ok(())
    }
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        Ok(self.0.borrow_mut().waiting.pop_front().map(|f| {
            let n = f.len().min(buf.len());
            buf[..n].copy_from_slice(&f[..n]);
            n
        }))
    }
}

/// The guest's netfront: rings, buffers and control page, as ABI 4.2 has it.
struct Guest {
    ctrl: MemPage,
    tx: FrontRing<MemPage>,
    rx: FrontRing<MemPage>,
    /// Send pages (granted read-only) and receive pages (writable), by grant.
    tx_pages: Vec<(GrantRef, MemPage)>,
    rx_pages: Vec<(GrantRef, MemPage)>,
    next_tx_id: u16,
}

const TX_RING_REF: GrantRef = 8;
const RX_RING_REF: GrantRef = 9;

impl Guest {
    /// The toolstack's part (MAC, MTU, be_state Initialising, the grant) and the guest's
    /// rings, buffers (8 to send, 16 to receive) and grants.
    fn new(xen: &SimXen) -> Guest {
        let mut ctrl = xen.grant(CTRL_GREF, false);
        let mut page = [0u8; 64];
        VifCtrl {
            hdr: noxs::CtrlHdr {
                be_state: state::INITIALISING,
                ..Default::default()
            },
            mac: [0, 0x16, 0x3e, 1, 2, 3],
            mtu: 1500,
            ..Default::default()
        }
        .write_to(&mut page);
        for (i, w) in page.chunks_exact(4).enumerate() {
            ctrl.put32(i * 4, u32::from_le_bytes(w.try_into().unwrap()));
        }
        let tx = FrontRing::init(xen.grant(TX_RING_REF, false), TX_SLOT);
        let rx = FrontRing::init(xen.grant(RX_RING_REF, false), RX_SLOT);
        let tx_pages = (0..8).map(|i| (20 + i, xen.grant(20 + i, true))).collect();
        let rx_pages = (0..16)
            .map(|i| (40 + i, xen.grant(40 + i, false)))
            .collect();
        Guest {
            ctrl,
            tx,
            rx,
            tx_pages,
            rx_pages,
            next_tx_id: 0,
        }
    }

    /// Fresh rings (a frontend starting over).
    fn reset_rings(&mut self, xen: &SimXen) {
        self.tx = FrontRing::init(xen.grant(TX_RING_REF, false), TX_SLOT);
        self.rx = FrontRing::init(xen.grant(RX_RING_REF, false), RX_SLOT);
    }

    fn look(&self) -> VifCtrl {
        VifCtrl::read_from(&self.ctrl.snapshot::<64>())
    }

    /// Publishes rings and ports and says Connected (the guest then notifies the device
    /// channel, i.e. the test calls on_ctrl).
    fn connect(&mut self, rx_port: EvtchnPort, features: u32) {
        self.ctrl.put32(40, TX_RING_REF);
        self.ctrl.put32(44, RX_RING_REF);
        self.ctrl.put32(48, DATA_PORT);
        self.ctrl.put32(52, rx_port);
        self.ctrl.put32(56, features);
        self.ctrl.put32(12, WatchState::Requested as u32);
        self.set_fe_state(state::CONNECTED);
    }

    fn set_fe_state(&mut self, s: i32) {
        self.ctrl.put32(8, s as u32);
    }

    /// Posts every receive buffer.
    fn post_rx(&mut self) {
        for (i, (gref, _)) in self.rx_pages.iter().enumerate() {
            self.rx.queue_rx(i as u16, *gref);
        }
        self.rx.push();
    }

    /// Queues `frame` at `offset` in send page `page`.
    fn send(&mut self, page: usize, offset: u16, frame: &[u8]) -> u16 {
        let (gref, p) = &self.tx_pages[page];
        p.0.borrow_mut()[offset.into()..usize::from(offset) + frame.len()].copy_from_slice(frame);
        let id = self.next_tx_id;
        self.next_tx_id += 1;
        self.tx.queue_tx(TxRequest {
            gref: *gref,
            offset,
            flags: 0,
            id,
            size: frame.len() as u16,
        });
        self.tx.push();
        id
    }

    fn tx_responses(&mut self) -> Vec<(u16, i16)> {
        std::iter::from_fn(|| self.tx.tx_response()).collect()
    }

    /// Received frames: (buffer id, status, the bytes when status > 0).
    fn received(&mut self) -> Vec<(u16, i16, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some((id, offset, _flags, status)) = self.rx.rx_response() {
            let data = if status > 0 {
                let p = self.rx_pages[usize::from(id)].1 .0.borrow();
                p[offset.into()..usize::from(offset) + status as usize].to_vec()
            } else {
                Vec::new()
            };
            out.push((id, status, data));
        }
        out
    }
}

type TestVif = Vif<MemPage, SimLink>;

struct World {
    xen: SimXen,
    scratch: Scratch,
    guest: Guest,
    wire: SimLink,
}

fn world() -> World {
    let xen = SimXen::new();
    let guest = Guest::new(&xen);
    World {
        xen,
        scratch: Scratch::new(),
        guest,
        wire: SimLink::default(),
    }
}

impl World {
    fn attach(&mut self) -> TestVif {
        Vif::attach(
            &self.xen,
            &mut self.scratch,
            GUEST,
            0,
            CTRL_GREF,
            DEVICE_PORT,
            self.wire.clone(),
        )
        .expect("attach")
    }

    /// Attach, connect with one data channel, post the receive buffers.
    fn connected(&mut self) -> TestVif {
        let mut vif = self.attach();
        self.guest.post_rx();
        self.guest.connect(DATA_PORT, VIF_RX_COPY);
        vif.on_ctrl(&self.xen, &mut self.scratch);
        assert!(vif.connected(), "{:?}", vif.problem);
        vif
    }

    fn frame(n: usize, fill: u8) -> Vec<u8> {
        let mut f = vec![fill; n];
        f[..6].copy_from_slice(&[0xff; 6]);
        f
    }
}

#[test]
fn the_handshake_goes_initwait_then_connected_and_binds_what_the_guest_named() {
    let mut w = world();
    let mut vif = w.attach();
    let c = w.guest.look();
    assert_eq!(c.hdr.be_state, state::INIT_WAIT);
    assert_eq!(c.be_features, VIF_RX_COPY);
    assert_eq!(c.hdr.be_watch_state, WatchState::Updated as u32);
    assert!(w.xen.kicked(DEVICE_PORT), "InitWait is announced");
    assert_eq!(w.xen.bound(), 1, "the device channel only");
    assert!(!vif.wants_link());

    // The guest's device-channel event before it connected changes nothing.
    vif.on_ctrl(&w.xen, &mut w.scratch);
    assert_eq!(w.guest.look().hdr.be_state, state::INIT_WAIT);

    w.guest.post_rx();
    w.guest.connect(RX_PORT, VIF_RX_COPY);
    vif.on_ctrl(&w.xen, &mut w.scratch);
    assert!(vif.connected());
    assert_eq!(w.guest.look().hdr.be_state, state::CONNECTED);
    assert!(w.xen.kicked(DEVICE_PORT));
    assert_eq!(w.xen.bound(), 3, "device, tx and rx channels");
    assert_eq!(vif.data_ports().len(), 2);
    assert!(vif.wants_link());
}

#[test]
fn frames_flow_both_ways_with_one_copy_per_pass() {
    let mut w = world();
    let mut vif = w.connected();
    let calls = w.xen.copy_calls.get();
    let a = World::frame(60, 1);
    let b = World::frame(1514, 2);
    let ida = w.guest.send(0, 0, &a);
    let idb = w.guest.send(1, 100, &b);
    assert!(!vif.on_data(&w.xen, &mut w.scratch));
    assert_eq!(w.wire.0.borrow().sent, vec![a.clone(), b.clone()]);
    assert_eq!(
        w.guest.tx_responses(),
        vec![(ida, RSP_OKAY), (idb, RSP_OKAY)]
    );
    assert_eq!(w.xen.copy_calls.get(), calls + 1, "one copy for the batch");
    assert!(w.xen.kicked(DATA_PORT), "the guest asked for tx responses");

    w.wire.0.borrow_mut().waiting.extend([a.clone(), b.clone()]);
    assert!(!vif.on_link(&w.xen, &mut w.scratch));
    let got = w.guest.received();
    assert_eq!(
        got,
        vec![
            (0, a.len() as i16, a.clone()),
            (1, b.len() as i16, b.clone())
        ]
    );
}

#[test]
fn bad_tx_requests_get_errors_and_the_good_ones_around_them_pass() {
    let mut w = world();
    let mut vif = w.connected();
    let good = World::frame(64, 9);
    let g1 = w.guest.send(0, 0, &good);
    let req = |gref, offset, flags, id, size| TxRequest {
        gref,
        offset,
        flags,
        id,
        size,
    };
    // Too short, across the page end, an unknown grant, a grant not to dom0's liking (the
    // ring page, writable: copying from it works, so use a missing one), zero size.
    w.guest.tx.queue_tx(req(20, 0, 0, 100, 13));
    w.guest.tx.queue_tx(req(20, 4000, 0, 101, 200));
    w.guest.tx.queue_tx(req(999, 0, 0, 102, 64));
    w.guest.tx.queue_tx(req(20, 0, 0, 103, 0));
    // A two-slot packet (no scatter-gather): both slots refused.
    w.guest.tx.queue_tx(req(20, 0, NETTXF_MORE_DATA, 104, 128));
    w.guest.tx.queue_tx(req(21, 0, 0, 105, 64));
    // A packet with one extra-info slot: the packet passes, the extra is answered NULL.
    w.guest.tx.queue_tx(req(22, 0, NETTXF_EXTRA_INFO, 106, 64));
    w.guest.tx.queue_tx(req(0x0001, 0, 0, 0, 0));
    w.guest.tx.push();
    let g2 = w.guest.send(1, 0, &good);
    vif.on_data(&w.xen, &mut w.scratch);
    let statuses: Vec<(u16, i16)> = w.guest.tx_responses();
    assert_eq!(
        statuses,
        vec![
            (g1, RSP_OKAY),
            (100, RSP_ERROR),
            (101, RSP_ERROR),
            (102, RSP_ERROR),
            (103, RSP_ERROR),
            (104, RSP_ERROR),
            (105, RSP_ERROR),
            (106, RSP_OKAY),
            (0, RSP_NULL),
            (g2, RSP_OKAY),
        ]
    );
    assert_eq!(w.wire.0.borrow().sent.len(), 3);
    assert!(vif.connected(), "bad requests are answered, not fatal");
}

#[test]
fn a_guest_claiming_an_impossible_ring_is_disconnected_and_may_start_over() {
    let mut w = world();
    let mut vif = w.connected();
    w.guest.tx.scribble(REQ_PROD_AT, 5000);
    vif.on_data(&w.xen, &mut w.scratch);
    assert!(!vif.connected());
    assert!(
        vif.problem.as_deref().unwrap().contains("tx ring"),
        "{:?}",
        vif.problem
    );
    assert_eq!(w.guest.look().hdr.be_state, state::CLOSED);
    assert_eq!(w.xen.bound(), 1, "data channel unbound");
    assert!(!vif.wants_link());
    // Still Connected on the guest's side: nothing happens until it starts over.
    vif.on_ctrl(&w.xen, &mut w.scratch);
    assert!(!vif.connected());

    w.guest.reset_rings(&w.xen);
    w.guest.set_fe_state(state::INITIALISING);
    vif.on_ctrl(&w.xen, &mut w.scratch);
    assert_eq!(w.guest.look().hdr.be_state, state::INIT_WAIT);
    w.guest.post_rx();
    w.guest.connect(DATA_PORT, VIF_RX_COPY);
    vif.on_ctrl(&w.xen, &mut w.scratch);
    assert!(vif.connected());
    let f = World::frame(80, 3);
    w.guest.send(0, 0, &f);
    vif.on_data(&w.xen, &mut w.scratch);
    assert_eq!(w.wire.0.borrow().sent.last(), Some(&f));
}

#[test]
fn frontends_publishing_nonsense_are_refused_with_a_reason() {
    for (what, setup) in [
        (
            "rx-copy",
            (|g: &mut Guest| g.connect(DATA_PORT, 0)) as fn(&mut Guest),
        ),
        ("port 0", |g| g.connect(0, VIF_RX_COPY)),
        ("binding port 77", |g| g.connect(77, VIF_RX_COPY)),
        ("grant 1234", |g| {
            g.connect(DATA_PORT, VIF_RX_COPY);
            g.ctrl.put32(44, 1234);
        }),
        ("same grant", |g| {
            g.connect(DATA_PORT, VIF_RX_COPY);
            g.ctrl.put32(44, TX_RING_REF);
        }),
        // The device channel itself, already ours.
        ("binding port 3", |g| g.connect(DEVICE_PORT, VIF_RX_COPY)),
    ] {
        let mut w = world();
        let mut vif = w.attach();
        setup(&mut w.guest);
        vif.on_ctrl(&w.xen, &mut w.scratch);
        assert!(!vif.connected(), "{what}");
        let problem = vif.problem.clone().unwrap_or_default();
        assert!(problem.contains(what), "{what}: {problem}");
        assert_eq!(w.guest.look().hdr.be_state, state::CLOSED, "{what}");
        assert_eq!(
            w.xen.bound(),
            1,
            "{what}: nothing left bound but the device channel"
        );
    }
}

#[test]
fn without_receive_buffers_frames_wait_in_the_link_until_the_guest_posts_some() {
    let mut w = world();
    let mut vif = w.attach();
    w.guest.connect(DATA_PORT, VIF_RX_COPY);
    vif.on_ctrl(&w.xen, &mut w.scratch);
    assert!(vif.connected());
    assert!(!vif.wants_link(), "no buffer posted yet");
    let f = World::frame(100, 4);
    w.wire.0.borrow_mut().waiting.push_back(f.clone());
    // The guest posts its buffers and notifies: the data pass delivers.
    w.guest.post_rx();
    vif.on_data(&w.xen, &mut w.scratch);
    assert!(vif.wants_link());
    assert_eq!(w.guest.received(), vec![(0, 100, f.clone())]);
    // 15 buffers left; 20 frames: 15 delivered, then the vif stops watching the link.
    for i in 0..20 {
        w.wire.0.borrow_mut().waiting.push_back(World::frame(60, i));
    }
    vif.on_link(&w.xen, &mut w.scratch);
    assert_eq!(w.guest.received().len(), 15);
    assert!(!vif.wants_link());
    assert_eq!(
        w.wire.0.borrow().waiting.len(),
        5,
        "the rest wait in the link"
    );
}

#[test]
fn frames_the_guest_cannot_take_are_dropped() {
    let mut w = world();
    let mut vif = w.connected();
    let ok = World::frame(60, 5);
    w.wire.0.borrow_mut().waiting.extend([
        vec![1; 13],
        World::frame(PAGE_SIZE, 6),
        World::frame(9000, 7),
        ok.clone(),
    ]);
    vif.on_link(&w.xen, &mut w.scratch);
    assert_eq!(w.guest.received(), vec![(0, 60, ok)]);
}

#[test]
fn a_guest_sending_more_than_a_batch_is_served_over_several_passes() {
    let mut w = world();
    let mut vif = w.connected();
    let f = World::frame(60, 8);
    for _ in 0..200 {
        w.guest.send(0, 0, &f);
        // Reclaim as the guest would, so its ring never fills.
    }
    let mut passes = 1;
    while vif.on_data(&w.xen, &mut w.scratch) {
        passes += 1;
        assert!(passes < 10);
    }
    assert_eq!(passes, 4, "200 requests in batches of {BATCH}");
    assert_eq!(w.wire.0.borrow().sent.len(), 200);
    assert_eq!(w.guest.tx_responses().len(), 200);
}

#[test]
fn a_restarted_backend_reconnects_to_the_rings_in_the_control_page() {
    let mut w = world();
    let vif = w.connected();
    let f = World::frame(60, 1);
    w.guest.send(0, 0, &f);
    // The backend goes away before serving it (killed: ports unbound, pages unmapped).
    vif.detach(&w.xen);
    assert_eq!(w.xen.bound(), 0);
    assert_eq!(
        w.guest.look().hdr.be_state,
        state::CONNECTED,
        "left as it was"
    );
    let g = w.guest.send(1, 0, &f);
    // The new backend connects at once and serves what waited.
    let mut vif = w.attach();
    assert!(vif.connected());
    assert_eq!(w.xen.bound(), 2);
    assert_eq!(w.wire.0.borrow().sent.len(), 2);
    assert_eq!(w.guest.tx_responses().last(), Some(&(g, RSP_OKAY)));
    w.wire.0.borrow_mut().waiting.push_back(f.clone());
    vif.on_link(&w.xen, &mut w.scratch);
    assert_eq!(w.guest.received(), vec![(0, 60, f)]);
}

#[test]
fn closing_unbinds_and_says_closed() {
    let mut w = world();
    let mut vif = w.connected();
    w.guest.set_fe_state(state::CLOSING);
    vif.on_ctrl(&w.xen, &mut w.scratch);
    assert!(!vif.connected());
    assert_eq!(w.guest.look().hdr.be_state, state::CLOSED);
    assert_eq!(w.xen.bound(), 1);
    vif.detach(&w.xen);
    assert_eq!(w.xen.bound(), 0);
}

#[test]
fn a_frontend_that_starts_over_without_closing_is_served_from_the_start() {
    let mut w = world();
    let mut vif = w.connected();
    w.guest.set_fe_state(state::INITIALISING);
    vif.on_ctrl(&w.xen, &mut w.scratch);
    assert!(!vif.connected());
    assert_eq!(w.guest.look().hdr.be_state, state::INIT_WAIT);
    assert_eq!(w.xen.bound(), 1);
}

/// What a hostile guest can write: every word of the control page and both rings.
fn hostile() -> impl Strategy<Value = (Vec<u32>, Vec<u32>, Vec<u32>, Vec<Vec<u8>>)> {
    (
        prop::collection::vec(any::<u32>(), 16),
        prop::collection::vec(any::<u32>(), 1024),
        prop::collection::vec(any::<u32>(), 1024),
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..5000), 0..8),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever the guest writes into its control page and rings, the backend neither panics
    /// nor loops, answers at most a ring's worth per pass, and sends only frames that came
    /// from a valid request (a grant of the guest's, inside its page, at least a header).
    #[test]
    fn garbage_in_the_control_page_and_rings_is_survived(
        (ctrl, tx, rx, frames) in hostile(),
        fe_state in prop::sample::select(vec![1i32, 3, 4, 5, 6, -1, 99]),
        small_indexes in any::<bool>(),
    ) {
        let mut w = world();
        let mut vif = w.connected();
        // Scribble on the rings (keeping the indexes plausible half of the time, so the
        // slots themselves get parsed).
        for (page, words) in [(&mut w.guest.tx.page, &tx), (&mut w.guest.rx.page, &rx)] {
            for (i, v) in words.iter().enumerate() {
                page.put32(i * 4, *v);
            }
            if small_indexes {
                page.put32(0, words[0] % (RING_SIZE + 1));
                page.put32(8, 0);
            }
        }
        w.wire.0.borrow_mut().waiting.extend(frames);
        let before = w.xen.kicks.borrow().len();
        for _ in 0..8 {
            vif.on_data(&w.xen, &mut w.scratch);
            vif.on_link(&w.xen, &mut w.scratch);
        }
        prop_assert!(w.xen.kicks.borrow().len() - before <= 32);
        for f in &w.wire.0.borrow().sent {
            prop_assert!(f.len() >= ETH_HLEN && f.len() <= PAGE_SIZE);
        }
        // Then the control page.
        for (i, v) in ctrl.iter().enumerate() {
            if !(1..=4).contains(&i) && i != 9 {
                w.guest.ctrl.put32(i * 4, *v);
            }
        }
        w.guest.set_fe_state(fe_state);
        for _ in 0..3 {
            vif.on_ctrl(&w.xen, &mut w.scratch);
            vif.on_data(&w.xen, &mut w.scratch);
        }
        prop_assert!(w.xen.bound() <= 3);
        let be = w.guest.look().hdr.be_state;
        prop_assert!([state::INIT_WAIT, state::CONNECTED, state::CLOSED].contains(&be));
        vif.detach(&w.xen);
        prop_assert_eq!(w.xen.bound(), 0);
    }
}
