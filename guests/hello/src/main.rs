//! hello: prints its NoXS devices (if it was started on the NoXS plane), then one line with its
//! domid and command line on the PV console, waits until the console backend has consumed it,
//! and powers off. The word `crash` or `reboot` on the command line turns the poweroff into
//! that shutdown reason (for lifecycle tests).
#![no_std]
#![no_main]

use xenpv::console::Console;
use xenpv::hypercall::{self, Shutdown};
use xenpv::line::Line;
use xenpv::noxs::{self, Plane};
use xenpv::start::StartInfo;
use xenpv::xenstore::Xenstore;

xenpv::entry!(main);

/// Upper bound on yields while waiting for Xenstore or the console backend (so a guest
/// without them still powers off instead of spinning forever).
const MAX_YIELDS: u32 = 2_000_000;

fn has_word(cmdline: &[u8], word: &[u8]) -> bool {
    cmdline
        .split(|&b| b == b' ' || b == b'\t')
        .any(|w| w == word)
}

/// Xen's console (debug Xen only) and the PV console ring, if there is one.
struct Out(Option<Console>);

impl Out {
    fn say(&self, bytes: &[u8]) {
        hypercall::xen_console_write(bytes);
        if let Some(c) = &self.0 {
            c.write(bytes);
        }
    }
}

fn main(si: StartInfo) -> ! {
    let cmdline = si.cmdline();
    // SAFETY: the ring comes from the start info and nothing else in this guest uses it.
    let out = Out(si.console().map(|ring| unsafe { Console::new(ring) }));

    // Our domid is only known to the toolstack: one Xenstore read of "domid" (relative to
    // /local/domain/<domid>, written by xl/libxl). "?" without Xenstore (NoXS too).
    let mut id = [0u8; 16];
    let mut line = Line::<200>::new();
    let domid = match noxs::plane(&si) {
        Plane::NoXs(Ok(devices)) => {
            out.say(if devices.from_hypervisor {
                b"hello: noxs device page from Xen (devctl)\r\n"
            } else {
                b"hello: noxs device page from the toolstack (SIF_NOXS)\r\n"
            });
            for d in devices.iter() {
                line.clear();
                line.push(b"hello: noxs device type=")
                    .push(d.kind_name())
                    .push(b" id=")
                    .dec(d.id.into())
                    .push(b" backend=")
                    .dec(d.backend.into())
                    .push(b" ctrl=")
                    .hex(d.ctrl)
                    .push(b" port=")
                    .dec(d.evtchn.into())
                    .push(b"\r\n");
                out.say(line.as_bytes());
            }
            &b"?"[..]
        }
        Plane::NoXs(Err(e)) => {
            line.push(b"hello: noxs device page refused: ");
            e.describe(&mut line);
            line.push(b"\r\n");
            out.say(line.as_bytes());
            &b"?"[..]
        }
        Plane::Xenstore(ring) => {
            // SAFETY: the ring comes from the start info and nothing else in this guest uses it.
            let mut xs = unsafe { Xenstore::new(ring, MAX_YIELDS) };
            xs.read(b"domid", &mut id).unwrap_or(b"?")
        }
        Plane::None => &b"?"[..],
    };

    if contains(cmdline, b"devctl-probe") {
        line.clear();
        line.push(b"hello: devctl probe:");
        for (what, rc) in noxs::devctl_probe() {
            line.push(b" ").push(what).push(b"=");
            if rc < 0 {
                line.push(b"-").dec(rc.unsigned_abs());
            } else {
                line.dec(rc as u64);
            }
        }
        line.push(b"\r\n");
        out.say(line.as_bytes());
    }

    let mut greeting = Line::<1200>::new();
    greeting
        .push(b"hello from chaos test guest: domid=")
        .push(domid)
        .push(b" cmdline=\"")
        .push(cmdline)
        .push(b"\"\r\n");
    out.say(greeting.as_bytes());
    if let Some(console) = &out.0 {
        for _ in 0..MAX_YIELDS {
            if console.drained() {
                break;
            }
            hypercall::yield_now();
        }
    }

    let reason = if has_word(cmdline, b"crash") {
        Shutdown::Crash
    } else if has_word(cmdline, b"reboot") {
        Shutdown::Reboot
    } else {
        Shutdown::Poweroff
    };
    hypercall::shutdown(reason)
}

/// Whether `needle` occurs in `hay` (the command line).
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
