//! One NoXS vif's backend (noxs/ABI.md section 4.2): its control page, the handshake with the
//! guest's netfront, and the data path between the guest's netif rings and a [`Link`] (the
//! vif's TAP in dom0).
//!
//! The guest owns every byte it shares: the control page is copied once per look and only
//! the fields it writes are read from the copy; ring references and ports are used only
//! through Xen (a bad one fails to map or bind, and the vif is refused); ring slots are
//! checked as [`netif`](super::netif) says. Frames move by grant copy, batched per pass (one
//! ioctl for up to [`BATCH`] frames each way), never by mapping data pages. A pass does a
//! bounded amount of work, so a busy or hostile guest cannot starve the others served by the
//! same loop; [`Vif::on_data`] and friends say when there is more to do.
//!
//! What it needs from Xen is the [`Xen`] trait: xen-dev's devices in xendevd, a simulated
//! guest in the tests.

use std::io;

use ::noxs::{state, VifCtrl, WatchState, VIF_RX_COPY};
use xen_dev::gntdev::{GNTST_GENERAL_ERROR, GNTST_OKAY};
use xen_dev::{CopyDir, GrantCopy};
use xen_types::{DomId, EvtchnPort, GrantRef, PAGE_SIZE};

use super::netif::{
    BackRing, RingError, EXTRA_FLAG_MORE, NETTXF_EXTRA_INFO, NETTXF_MORE_DATA, RSP_ERROR, RSP_NULL,
    RSP_OKAY, RX_SLOT, TX_SLOT,
};
use super::page::SharedPage;
use super::tap::Link;

/// Frames moved per ring and pass.
pub const BATCH: usize = 64;
/// The shortest frame passed on (an Ethernet header).
const ETH_HLEN: usize = 14;

/// Offsets of the control page fields the backend writes (ABI 4.2).
const BE_STATE: usize = 4;
const BE_WATCH_STATE: usize = 16;
const BE_FEATURES: usize = 36;
/// Bytes of the control page a look copies (the header and the vif fields).
const CTRL_LEN: usize = 64;

/// The Xen operations a vif backend uses, on behalf of dom0.
pub trait Xen {
    type Page: SharedPage;
    /// Maps the page `gref` that `dom` granted to dom0.
    fn map(&self, dom: DomId, gref: GrantRef) -> io::Result<Self::Page>;
    /// Copies between granted pages and `buf` (see `xen_dev::GrantDev::copy`).
    fn copy(&self, ops: &mut [GrantCopy], buf: &mut [u8]) -> io::Result<()>;
    /// Binds a local port to `dom`'s port `port` (allocated toward dom0).
    fn bind(&self, dom: DomId, port: EvtchnPort) -> io::Result<EvtchnPort>;
    fn unbind(&self, local: EvtchnPort);
    fn notify(&self, local: EvtchnPort);
}

/// Working memory shared by every vif of a loop (one pass runs at a time): the frames of a
/// batch and the copy segments naming them.
#[derive(Debug)]
pub struct Scratch {
    buf: Vec<u8>,
    ops: Vec<GrantCopy>,
    /// Per tx slot taken in this pass: its id, and its status or the copy that carries it.
    tx: Vec<(u16, Result<usize, i16>)>,
    /// Per rx slot taken: its id and frame length.
    rx: Vec<(u16, usize)>,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch {
            buf: vec![0; BATCH * PAGE_SIZE],
            ops: Vec::with_capacity(BATCH),
            tx: Vec::with_capacity(BATCH),
            rx: Vec::with_capacity(BATCH),
        }
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch::new()
    }
}

/// Where the vif is in the handshake.
#[derive(Debug)]
enum Phase<P> {
    /// be_state InitWait: waiting for the frontend to say Connected.
    Waiting,
    Connected(Box<Rings<P>>),
    /// be_state Closed (the frontend closed, or was refused): waiting for it to start over
    /// (fe_state Initialising).
    Closed,
}

/// A connected vif's rings and ports.
#[derive(Debug)]
struct Rings<P> {
    tx: BackRing<P>,
    rx: BackRing<P>,
    /// Our ends of the guest's data channels (the same port when it uses one).
    tx_port: EvtchnPort,
    rx_port: EvtchnPort,
    /// Inside a multi-slot tx packet (refused: no scatter-gather) / extra-info slots follow.
    tx_chain: bool,
    tx_extras: bool,
    /// The guest posted no receive buffer: dom0's frames wait in the link until it does.
    rx_starved: bool,
}

/// One vif.
#[derive(Debug)]
pub struct Vif<P, L> {
    pub dom: DomId,
    pub id: u32,
    /// The interface name, `vif<domid>.<id>`, for logs.
    pub name: String,
    ctrl: P,
    /// Our end of the device channel (the device page's `evtchn`).
    pub ctrl_port: EvtchnPort,
    link: L,
    phase: Phase<P>,
    /// Why the frontend was last refused or disconnected.
    pub problem: Option<String>,
}

/// The interface name of vif `id` of `dom`.
pub fn ifname(dom: DomId, id: u32) -> String {
    format!("vif{}.{id}", dom.0)
}

impl<P: SharedPage, L: Link> Vif<P, L> {
    /// Takes the vif over: maps its control page (`ctrl_gref`), binds its device channel
    /// (the guest's `evtchn`), says InitWait (or reconnects at once if the frontend is already
    /// connected: a restarted backend).
    pub fn attach<X: Xen<Page = P>>(
        xen: &X,
        scratch: &mut Scratch,
        dom: DomId,
        id: u32,
        ctrl_gref: GrantRef,
        evtchn: EvtchnPort,
        link: L,
    ) -> Result<Vif<P, L>, String> {
        let name = ifname(dom, id);
        let mut ctrl = xen
            .map(dom, ctrl_gref)
            .map_err(|e| format!("{name}: mapping the control page (grant {ctrl_gref}): {e}"))?;
        let ctrl_port = xen
            .bind(dom, evtchn)
            .map_err(|e| format!("{name}: binding the device channel (port {evtchn}): {e}"))?;
        ctrl.put32(BE_FEATURES, VIF_RX_COPY);
        let mut vif = Vif {
            dom,
            id,
            name,
            ctrl,
            ctrl_port,
            link,
            phase: Phase::Waiting,
            problem: None,
        };
        if vif.look().hdr.fe_state != state::CONNECTED {
            vif.set_state(xen, state::INIT_WAIT);
        }
        vif.on_ctrl(xen, scratch);
        Ok(vif)
    }

    /// A copy of the control page.
    fn look(&self) -> VifCtrl {
        VifCtrl::read_from(&self.ctrl.snapshot::<CTRL_LEN>())
    }

    fn set_state(&mut self, xen: &impl Xen, be_state: i32) {
        self.ctrl.put32(BE_STATE, be_state as u32);
        self.ctrl.put32(BE_WATCH_STATE, WatchState::Updated as u32);
        xen.notify(self.ctrl_port);
    }

    /// The device channel fired (or the vif was just attached): acts on the frontend's state.
    /// Returns whether a data pass has more to do.
    pub fn on_ctrl<X: Xen<Page = P>>(&mut self, xen: &X, scratch: &mut Scratch) -> bool {
        let c = self.look();
        match (&self.phase, c.hdr.fe_state) {
            (Phase::Waiting, state::CONNECTED) => match self.connect(xen, &c) {
                Ok(()) => {
                    self.problem = None;
                    self.set_state(xen, state::CONNECTED);
                    log::info!("{}: frontend connected", self.name);
                    // Requests may wait already (a restarted backend): one pass now.
                    self.on_data(xen, scratch)
                }
                Err(why) => {
                    self.refuse(xen, why);
                    false
                }
            },
            (Phase::Connected(_), state::CLOSING | state::CLOSED) => {
                self.disconnect(xen);
                self.set_state(xen, state::CLOSED);
                log::info!("{}: frontend closed", self.name);
                false
            }
            (Phase::Connected(_), s) if s != state::CONNECTED => {
                // The frontend started over without closing: serve it from the start.
                self.disconnect(xen);
                self.phase = Phase::Waiting;
                self.set_state(xen, state::INIT_WAIT);
                false
            }
            (Phase::Closed, state::INITIALISING) => {
                self.phase = Phase::Waiting;
                self.set_state(xen, state::INIT_WAIT);
                false
            }
            _ => false,
        }
    }

    /// Checks what the frontend published and connects its rings and ports.
    fn connect<X: Xen<Page = P>>(&mut self, xen: &X, c: &VifCtrl) -> Result<(), String> {
        if c.fe_features & VIF_RX_COPY == 0 {
            return Err(
                "the frontend did not ask for rx-copy (fe_features bit 0), the only receive mode"
                    .into(),
            );
        }
        if c.evtchn_tx == 0 || c.evtchn_rx == 0 {
            return Err(format!(
                "event channel port 0 (evtchn_tx {}, evtchn_rx {})",
                c.evtchn_tx, c.evtchn_rx
            ));
        }
        if c.tx_ring_ref == c.rx_ring_ref {
            return Err(format!(
                "tx and rx rings are the same grant ({})",
                c.tx_ring_ref
            ));
        }
        let dom = self.dom;
        let map = |what, gref| {
            xen.map(dom, gref)
                .map_err(|e| format!("mapping the {what} ring (grant {gref}): {e}"))
        };
        let tx_page = map("tx", c.tx_ring_ref)?;
        let rx_page = map("rx", c.rx_ring_ref)?;
        let tx_port = xen
            .bind(dom, c.evtchn_tx)
            .map_err(|e| format!("binding port {}: {e}", c.evtchn_tx))?;
        let rx_port = if c.evtchn_rx == c.evtchn_tx {
            tx_port
        } else {
            match xen.bind(dom, c.evtchn_rx) {
                Ok(p) => p,
                Err(e) => {
                    xen.unbind(tx_port);
                    return Err(format!("binding port {}: {e}", c.evtchn_rx));
                }
            }
        };
        self.phase = Phase::Connected(Box::new(Rings {
            tx: BackRing::attach(tx_page, "tx", TX_SLOT),
            rx: BackRing::attach(rx_page, "rx", RX_SLOT),
            tx_port,
            rx_port,
            tx_chain: false,
            tx_extras: false,
            rx_starved: false,
        }));
        Ok(())
    }

    fn refuse(&mut self, xen: &impl Xen, why: String) {
        log::warn!("{}: frontend refused: {why}", self.name);
        self.problem = Some(why);
        self.disconnect(xen);
        self.set_state(xen, state::CLOSED);
    }

    /// Unbinds the data ports and unmaps the rings; the phase becomes Closed.
    fn disconnect(&mut self, xen: &impl Xen) {
        if let Phase::Connected(r) = std::mem::replace(&mut self.phase, Phase::Closed) {
            xen.unbind(r.tx_port);
            if r.rx_port != r.tx_port {
                xen.unbind(r.rx_port);
            }
        }
    }

    /// Our ends of the data channels, while connected.
    pub fn data_ports(&self) -> Vec<EvtchnPort> {
        match &self.phase {
            Phase::Connected(r) if r.rx_port != r.tx_port => vec![r.tx_port, r.rx_port],
            Phase::Connected(r) => vec![r.tx_port],
            _ => Vec::new(),
        }
    }

    pub fn connected(&self) -> bool {
        matches!(self.phase, Phase::Connected(_))
    }

    /// Whether frames waiting in the link can go anywhere now (connected, buffers posted):
    /// the link is watched only then, so frames wait in the kernel instead of being spun on.
    pub fn wants_link(&self) -> bool {
        matches!(&self.phase, Phase::Connected(r) if !r.rx_starved)
    }

    pub fn link(&self) -> &L {
        &self.link
    }

    /// A data channel fired: transmits what the guest queued and fills the receive buffers
    /// it posted. Returns whether there is more to do right away (call again after serving
    /// the others).
    pub fn on_data<X: Xen<Page = P>>(&mut self, xen: &X, scratch: &mut Scratch) -> bool {
        let more = self.with_rings(xen, |dom, r, link| {
            let tx = r.tx_pass(xen, dom, link, scratch)?;
            let rx = r.rx_pass(xen, dom, link, scratch)?;
            Ok(tx || rx)
        });
        more.unwrap_or(false)
    }

    /// The link has frames for the guest.
    pub fn on_link<X: Xen<Page = P>>(&mut self, xen: &X, scratch: &mut Scratch) -> bool {
        self.with_rings(xen, |dom, r, link| r.rx_pass(xen, dom, link, scratch))
            .unwrap_or(false)
    }

    /// Runs `pass` on the rings if connected; a broken ring disconnects the frontend.
    fn with_rings<X: Xen<Page = P>>(
        &mut self,
        xen: &X,
        pass: impl FnOnce(DomId, &mut Rings<P>, &mut L) -> Result<bool, RingError>,
    ) -> Option<bool> {
        let Phase::Connected(r) = &mut self.phase else {
            return None;
        };
        match pass(self.dom, r, &mut self.link) {
            Ok(more) => Some(more),
            Err(e) => {
                self.refuse(xen, e.to_string());
                None
            }
        }
    }

    /// Lets the vif go: unbinds every port, unmaps its pages (when dropped) and gives the link
    /// back. The control page is left as it is, so a backend that comes back reconnects.
    pub fn detach(mut self, xen: &impl Xen) -> L {
        if let Phase::Connected(r) = std::mem::replace(&mut self.phase, Phase::Closed) {
            xen.unbind(r.tx_port);
            if r.rx_port != r.tx_port {
                xen.unbind(r.rx_port);
            }
        }
        xen.unbind(self.ctrl_port);
        self.link
    }
}

impl<P: SharedPage> Rings<P> {
    /// Guest to link: up to [`BATCH`] tx requests, one grant copy for their frames. Every
    /// request taken is answered, in order. Returns whether requests are left.
    fn tx_pass(
        &mut self,
        xen: &impl Xen<Page = P>,
        dom: DomId,
        link: &mut impl Link,
        s: &mut Scratch,
    ) -> Result<bool, RingError> {
        let waiting = self.tx.unconsumed()?;
        let n = waiting.min(BATCH as u32);
        s.ops.clear();
        s.tx.clear();
        for _ in 0..n {
            let req = self.tx.take_tx();
            let verdict = if self.tx_extras {
                // An extra-info slot (GSO and the like, never negotiated): no frame.
                self.tx_extras = req.extra_flags() & EXTRA_FLAG_MORE != 0;
                Err(RSP_NULL)
            } else if self.tx_chain {
                self.tx_chain = req.flags & NETTXF_MORE_DATA != 0;
                Err(RSP_ERROR)
            } else {
                self.tx_extras = req.flags & NETTXF_EXTRA_INFO != 0;
                if req.flags & NETTXF_MORE_DATA != 0 {
                    // Scatter-gather is not offered: the whole packet is refused.
                    self.tx_chain = true;
                    Err(RSP_ERROR)
                } else if usize::from(req.size) < ETH_HLEN
                    || usize::from(req.offset) + usize::from(req.size) > PAGE_SIZE
                {
                    Err(RSP_ERROR)
                } else {
                    let op = s.ops.len();
                    s.ops.push(GrantCopy {
                        dir: CopyDir::FromGrant,
                        dom,
                        gref: req.gref,
                        offset: req.offset,
                        len: req.size,
                        local: op * PAGE_SIZE,
                        status: GNTST_GENERAL_ERROR,
                    });
                    Ok(op)
                }
            };
            s.tx.push((if verdict == Err(RSP_NULL) { 0 } else { req.id }, verdict));
        }
        if !s.ops.is_empty() {
            if let Err(e) = xen.copy(&mut s.ops, &mut s.buf) {
                log::debug!("domain {dom}: tx grant copy: {e}");
            }
        }
        for &(id, verdict) in &s.tx {
            let status = match verdict {
                Ok(op) => {
                    let c = s.ops[op];
                    if c.status == GNTST_OKAY {
                        let frame = &s.buf[c.local..c.local + usize::from(c.len)];
                        if let Err(e) = link.send(frame) {
                            log::debug!("domain {dom}: a frame was lost on its way out: {e}");
                        }
                        RSP_OKAY
                    } else {
                        RSP_ERROR
                    }
                }
                Err(status) => status,
            };
            self.tx.respond_tx(id, status);
        }
        if self.tx.push() {
            xen.notify(self.tx_port);
        }
        if waiting > n {
            return Ok(true);
        }
        self.tx.final_check()
    }

    /// Link to guest: up to [`BATCH`] frames into posted buffers, one grant copy. When the
    /// guest has no buffer posted the vif stops watching the link (`rx_starved`) until the
    /// guest posts some and notifies. Returns whether to go on right away.
    fn rx_pass(
        &mut self,
        xen: &impl Xen<Page = P>,
        dom: DomId,
        link: &mut impl Link,
        s: &mut Scratch,
    ) -> Result<bool, RingError> {
        let mut posted = self.rx.unconsumed()?;
        if posted == 0 {
            if !self.rx.final_check()? {
                self.rx_starved = true;
                return Ok(false);
            }
            posted = self.rx.unconsumed()?;
        }
        self.rx_starved = false;
        let n = (posted as usize).min(BATCH);
        s.ops.clear();
        s.rx.clear();
        // Frames that cannot be delivered are read and dropped; bounded so a flood of them
        // cannot hold the loop.
        let mut reads = 0;
        while s.rx.len() < n && reads < 2 * BATCH {
            reads += 1;
            let at = s.rx.len() * PAGE_SIZE;
            let len = match link.recv(&mut s.buf[at..at + PAGE_SIZE]) {
                Ok(Some(len)) => len,
                Ok(None) => break,
                Err(e) => {
                    log::debug!("domain {dom}: reading frames for it: {e}");
                    break;
                }
            };
            // A frame filling the page may have been cut short; one page is all a receive
            // buffer holds (no scatter-gather).
            if !(ETH_HLEN..PAGE_SIZE).contains(&len) {
                continue;
            }
            let req = self.rx.take_rx();
            s.ops.push(GrantCopy {
                dir: CopyDir::ToGrant,
                dom,
                gref: req.gref,
                offset: 0,
                len: len as u16,
                local: at,
                status: GNTST_GENERAL_ERROR,
            });
            s.rx.push((req.id, len));
        }
        if s.ops.is_empty() {
            return Ok(false);
        }
        if let Err(e) = xen.copy(&mut s.ops, &mut s.buf) {
            log::debug!("domain {dom}: rx grant copy: {e}");
        }
        for (op, &(id, len)) in s.ops.iter().zip(&s.rx) {
            let status = if op.status == GNTST_OKAY {
                len as i16
            } else {
                RSP_ERROR
            };
            self.rx.respond_rx(id, 0, 0, status);
        }
        if self.rx.push() {
            xen.notify(self.rx_port);
        }
        // All buffers used: see whether more were posted, else wait for them.
        if s.rx.len() == posted as usize && !self.rx.final_check()? {
            self.rx_starved = true;
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests;
