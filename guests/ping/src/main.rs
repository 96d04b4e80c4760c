//! ping: brings up one netfront (vif 0), answers ARP for its IPv4 address and ICMP echo
//! requests, nothing else; obeys shutdown requests. Its address is `ip=` on the command line,
//! else the vif's (Xenstore: the backend's `ip` key; NoXS: the vif control page).
//!
//! The data path (rings, buffers, grants) is the same on both control planes; only how the
//! netfront meets its backend differs: Xenstore keys and XenbusStates against Linux netback
//! (as Linux's and Mini-OS's netfronts do), or the NoXS vif control page (noxs/ABI.md 4.2).
#![no_std]
#![no_main]

use ping::net::{self, Iface};
use ping::netfront::{Buffers, Netfront};
use xenpv::console::Console;
use xenpv::events::Events;
use xenpv::grant::Grants;
use xenpv::hypercall::{self, Shutdown};
use xenpv::line::Line;
use xenpv::noxs::{self, abi, Devices, Plane, Sysctl, Vif};
use xenpv::start::{Ring, StartInfo};
use xenpv::xenstore::Xenstore;

xenpv::entry!(main);

/// Upper bound on yields while waiting for a Xenstore reply or the console backend.
const MAX_YIELDS: u32 = 2_000_000;
/// XenbusState values (public/io/xenbus.h).
const INIT_WAIT: u32 = 2;
const CONNECTED: u32 = 4;
const CLOSING: u32 = 5;

/// The pages shared with the backend.
static BUFFERS: Buffers = Buffers::new();

/// The PV console ring, if there is one.
struct Out(Option<Console>);

impl Out {
    fn say(&self, line: &[u8]) {
        hypercall::xen_console_write(line);
        if let Some(c) = &self.0 {
            c.write(line);
        }
    }

    /// Prints `ping: <msg>` and crashes (the toolstack sees why the guest stopped).
    fn fail(&self, msg: &[u8]) -> ! {
        let mut l = Line::<200>::new();
        l.push(b"ping: ").push(msg).push(b"\r\n");
        self.say(l.as_bytes());
        if let Some(c) = &self.0 {
            for _ in 0..MAX_YIELDS {
                if c.drained() {
                    break;
                }
                hypercall::yield_now();
            }
        }
        hypercall::shutdown(Shutdown::Crash)
    }

    fn up(&self, me: &Iface, backend: u16, plane: &[u8]) {
        let mut l = Line::<200>::new();
        l.push(b"ping: vif 0 up: mac ")
            .mac(&me.mac)
            .push(b" ip ")
            .ipv4(&me.ip)
            .push(b" backend dom")
            .dec(backend.into())
            .push(b" (")
            .push(plane)
            .push(b")\r\n");
        self.say(l.as_bytes());
    }
}

fn main(si: StartInfo) -> ! {
    // SAFETY: the ring comes from the start info and nothing else in this guest uses it.
    let out = Out(si.console().map(|ring| unsafe { Console::new(ring) }));
    let Some(events) = Events::map(&si) else {
        out.fail(b"cannot map shared_info")
    };
    let Some(grants) = Grants::setup(&si) else {
        out.fail(b"cannot map the grant table")
    };
    match noxs::plane(&si) {
        Plane::Xenstore(ring) => on_xenstore(&si, &out, &events, grants, ring),
        Plane::NoXs(Ok(devices)) => on_noxs(&si, &out, &events, grants, &devices),
        Plane::NoXs(Err(e)) => {
            let mut l = Line::<200>::new();
            l.push(b"device page refused: ");
            e.describe(&mut l);
            out.fail(l.as_bytes())
        }
        Plane::None => out.fail(b"no Xenstore and no NoXS device page"),
    }
}

/// Sets the data path up: a port toward `backend`, the rings and buffers granted to it.
fn netfront<'a>(
    si: &StartInfo,
    out: &Out,
    grants: &mut Grants,
    backend: u16,
) -> (Netfront<'a>, u32) {
    let Some(port) = hypercall::evtchn_alloc_unbound(backend) else {
        out.fail(b"cannot allocate an event channel")
    };
    // SAFETY: BUFFERS is used by this netfront only (one per guest).
    let nf = unsafe {
        Netfront::new(&BUFFERS, |page, readonly| {
            grants.grant(backend, si.frame_of(page)?, readonly)
        })
    };
    match nf {
        Some(nf) => (nf, port),
        None => out.fail(b"cannot grant the rings and buffers"),
    }
}

/// The address to answer for: `ip=` on the command line, else the control plane's.
fn our_ip(si: &StartInfo, out: &Out, from_plane: Option<[u8; 4]>) -> [u8; 4] {
    match net::cmdline_value(si.cmdline(), b"ip").map(net::parse_ipv4) {
        Some(Some(ip)) => ip,
        Some(None) => out.fail(b"ip= on the command line is not an IPv4 address"),
        None => from_plane
            .unwrap_or_else(|| out.fail(b"no IPv4 address (ip= on the vif or command line)")),
    }
}

/// Answers on the rings until a shutdown request: sleeps on `ports` (the data channel and the
/// control plane's), clearing each before looking, and asks `control` for requests. The
/// console says how many echo requests were answered at 1, 2, 4, 8, ... (output on demand,
/// which the lab uses to check a console backend restarted under the guest).
#[allow(clippy::too_many_arguments)]
fn serve(
    nf: &mut Netfront,
    me: &Iface,
    out: &Out,
    data_port: u32,
    events: &Events,
    ports: &[u32],
    mut control: impl FnMut() -> Option<Shutdown>,
) -> ! {
    let mut echoes: u64 = 0;
    loop {
        for &p in ports {
            events.clear(p);
        }
        if let Some(reason) = control() {
            hypercall::shutdown(reason);
        }
        let before = echoes;
        let pass = nf.pass(|packet, reply| {
            let n = net::answer(me, packet, reply);
            if n > 0 && net::is_ipv4(reply) {
                echoes += 1;
            }
            n
        });
        if pass.notify {
            hypercall::evtchn_send(data_port);
        }
        // The highest power of two passed in this pass, if any.
        if echoes != before && (before == 0 || echoes.ilog2() > before.ilog2()) {
            let mut l = Line::<80>::new();
            l.push(b"ping: answered ")
                .dec(1 << echoes.ilog2())
                .push(b" echo requests\r\n");
            out.say(l.as_bytes());
        }
        if nf.idle() {
            events.wait(ports);
        }
    }
}

fn parse_u32(s: &[u8]) -> Option<u32> {
    if s.is_empty() || s.len() > 9 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0, |v, &d| v * 10 + u32::from(d - b'0')))
}

/// Xenstore plane, against Linux netback: device/vif/0 names the backend and the MAC; the
/// rings and the port go into its keys, then XenbusState Connected.
fn on_xenstore(si: &StartInfo, out: &Out, events: &Events, mut grants: Grants, ring: Ring) -> ! {
    // SAFETY: the ring comes from the start info and nothing else in this guest uses it.
    let mut xs = unsafe { Xenstore::new(ring, MAX_YIELDS) };
    let mut buf = [0u8; 128];
    let mut backend = Line::<128>::new();
    match xs.read(b"device/vif/0/backend", &mut buf) {
        Some(path) if path.starts_with(b"/") => backend.push(path),
        _ => out.fail(b"no vif: device/vif/0/backend missing"),
    };
    let Some(backend_id) = xs
        .read(b"device/vif/0/backend-id", &mut buf)
        .and_then(parse_u32)
        .and_then(|id| u16::try_from(id).ok())
    else {
        out.fail(b"device/vif/0/backend-id missing or not a domid")
    };
    let Some(mac) = xs
        .read(b"device/vif/0/mac", &mut buf)
        .and_then(|m| core::str::from_utf8(m).ok()?.parse::<xen_types::Mac>().ok())
    else {
        out.fail(b"device/vif/0/mac missing or not a unicast MAC")
    };
    let mut path = Line::<160>::new();
    path.push(backend.as_bytes()).push(b"/ip");
    let vif_ip = xs
        .read(path.as_bytes(), &mut buf)
        .and_then(|ips| net::parse_ipv4(ips.split(|&b| b == b' ').next()?));
    let me = Iface {
        mac: mac.0,
        ip: our_ip(si, out, vif_ip),
    };
    let (mut nf, port) = netfront(si, out, &mut grants, backend_id);

    let mut state = Line::<160>::new();
    state.push(backend.as_bytes()).push(b"/state");
    if !xs.watch(state.as_bytes(), b"backend") {
        out.fail(b"cannot watch the backend's state");
    }
    let mut backend_at = |xs: &mut Xenstore, least: u32| loop {
        match xs.read(state.as_bytes(), &mut buf).and_then(parse_u32) {
            Some(s) if s >= CLOSING => out.fail(b"the backend is closing"),
            Some(s) if s >= least => return,
            _ => xs.wait_for_watch(events),
        }
    };
    backend_at(&mut xs, INIT_WAIT);
    let mut num = Line::<12>::new();
    let mut put = |xs: &mut Xenstore, key: &[u8], value: u32| {
        path.clear();
        path.push(b"device/vif/0/").push(key);
        num.clear();
        num.dec(value.into());
        if !xs.write(path.as_bytes(), num.as_bytes()) {
            out.fail(b"cannot write the vif's keys");
        }
    };
    put(&mut xs, b"tx-ring-ref", nf.tx_ring_ref);
    put(&mut xs, b"rx-ring-ref", nf.rx_ring_ref);
    put(&mut xs, b"event-channel", port);
    put(&mut xs, b"request-rx-copy", 1);
    put(&mut xs, b"feature-rx-notify", 1);
    // We compute checksums and cannot complete partial ones: netback must not send those.
    put(&mut xs, b"feature-no-csum-offload", 1);
    put(&mut xs, b"state", CONNECTED);
    backend_at(&mut xs, CONNECTED);
    out.up(&me, backend_id, b"xenstore");

    // Shutdown requests, as a PV kernel takes them.
    xs.write(b"control/feature-poweroff", b"1");
    xs.write(b"control/feature-reboot", b"1");
    xs.watch(b"control/shutdown", b"shutdown");
    let store_port = xs.port();
    serve(&mut nf, &me, out, port, events, &[port, store_port], || {
        if !xs.watch_fired(events) {
            return None;
        }
        let mut word = [0u8; 16];
        let reason = match xs.read(b"control/shutdown", &mut word) {
            Some(b"poweroff" | b"halt") => Some(Shutdown::Poweroff),
            Some(b"reboot") => Some(Shutdown::Reboot),
            _ => None,
        };
        if reason.is_some() {
            xs.write(b"control/shutdown", b"");
        }
        reason
    })
}

/// NoXS plane (ABI 4.2): the vif control page has MAC and address; our rings and port go into
/// it; sysctl brings shutdown requests.
fn on_noxs(si: &StartInfo, out: &Out, events: &Events, mut grants: Grants, devices: &Devices) -> ! {
    let Some(vif) = Vif::find(si, devices, 0) else {
        out.fail(b"no NoXS vif device")
    };
    let mac = vif.mac();
    if xen_types::Mac(mac).check().is_err() {
        out.fail(b"the vif control page's MAC is not a unicast address");
    }
    let me = Iface {
        mac,
        ip: our_ip(si, out, vif.ipv4()),
    };
    let (mut nf, port) = netfront(si, out, &mut grants, vif.backend);
    vif.connect(nf.tx_ring_ref, nf.rx_ring_ref, port);

    let sysctl = Sysctl::find(si, devices);
    if let Some(s) = &sysctl {
        s.listen(abi::sysctl::POWEROFF | abi::sysctl::REBOOT);
    }
    let sysctl_port = sysctl.as_ref().map_or(vif.port, |s| s.port);
    let mut connected = false;
    serve(
        &mut nf,
        &me,
        out,
        port,
        events,
        &[port, vif.port, sysctl_port],
        || {
            if !connected && vif.backend_state() == abi::state::CONNECTED {
                connected = true;
                out.up(&me, vif.backend, b"noxs");
            }
            sysctl
                .as_ref()?
                .take_request()
                .and_then(noxs::request_reason)
                .filter(|&r| r != Shutdown::Suspend)
        },
    )
}
