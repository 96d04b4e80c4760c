//! hello: prints one line with its domid and command line on the PV console, waits until
//! the console daemon has consumed it, and powers off. The word `crash` or `reboot` on the
//! command line turns the poweroff into that shutdown reason (for lifecycle tests).
#![no_std]
#![no_main]

use xenpv::console::Console;
use xenpv::hypercall::{self, Shutdown};
use xenpv::start::StartInfo;

xenpv::entry!(main);

/// Upper bound on yields while waiting for Xenstore or xenconsoled (so a guest without
/// them still powers off instead of spinning forever).
const MAX_YIELDS: u32 = 2_000_000;

/// A fixed-size line buffer; bytes beyond its capacity are dropped.
struct Line {
    buf: [u8; 1200],
    len: usize,
}

impl Line {
    fn push(&mut self, bytes: &[u8]) -> &mut Self {
        for &b in bytes {
            if self.len < self.buf.len() {
                self.buf[self.len] = b;
                self.len += 1;
            }
        }
        self
    }
    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

fn has_word(cmdline: &[u8], word: &[u8]) -> bool {
    cmdline
        .split(|&b| b == b' ' || b == b'\t')
        .any(|w| w == word)
}

fn main(si: StartInfo) -> ! {
    let cmdline = si.cmdline();

    // Our domid is only known to the toolstack: one Xenstore read of "domid" (relative to
    // /local/domain/<domid>, written by xl/libxl). "?" when there is no Xenstore.
    let mut id = [0u8; 16];
    let domid = si
        .xenstore()
        // SAFETY: the ring comes from start_info and nothing else in this guest uses it.
        .and_then(|ring| unsafe { xenpv::xenstore::read(ring, b"domid", &mut id, MAX_YIELDS) })
        .map_or(&b"?"[..], |n| &id[..n]);

    let mut line = Line {
        buf: [0; 1200],
        len: 0,
    };
    line.push(b"hello from chaos test guest: domid=")
        .push(domid)
        .push(b" cmdline=\"")
        .push(cmdline)
        .push(b"\"\r\n");

    hypercall::xen_console_write(line.as_bytes());
    if let Some(ring) = si.console() {
        // SAFETY: the ring comes from start_info and nothing else in this guest uses it.
        let console = unsafe { Console::new(ring) };
        console.write(line.as_bytes());
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
