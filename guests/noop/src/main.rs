//! noop: the LightVM "noop" guest. Boots and sleeps, waking only to obey a shutdown request:
//! from its NoXS sysctl device, or from `control/shutdown` on the Xenstore plane (a watch).
//! Its only memory is its image, the pages the toolstack gives every guest and its stack.
#![no_std]
#![no_main]

use xenpv::events::Events;
use xenpv::hypercall::{self, Shutdown};
use xenpv::noxs::{self, abi, Plane, Sysctl};
use xenpv::start::{Ring, StartInfo};
use xenpv::xenstore::Xenstore;

xenpv::entry!(main);

/// Upper bound on yields while waiting for a Xenstore reply.
const MAX_YIELDS: u32 = 2_000_000;

fn main(si: StartInfo) -> ! {
    match noxs::plane(&si) {
        Plane::NoXs(Ok(devices)) => {
            if let (Some(sysctl), Some(events)) = (Sysctl::find(&si, &devices), Events::map(&si)) {
                obey_sysctl(&sysctl, &events);
            }
        }
        Plane::Xenstore(ring) => {
            if let Some(events) = Events::map(&si) {
                obey_xenstore(ring, &events);
            }
        }
        Plane::NoXs(Err(_)) | Plane::None => {}
    }
    // Nobody to listen to: sleep for good. Events stay masked: this returns at most on an
    // event channel firing, then sleeps again.
    loop {
        hypercall::poll_forever();
    }
}

/// NoXS (ABI 4.1): advertise poweroff and reboot, then sleep on the sysctl port and obey.
fn obey_sysctl(sysctl: &Sysctl, events: &Events) -> ! {
    sysctl.listen(abi::sysctl::POWEROFF | abi::sysctl::REBOOT);
    loop {
        events.clear(sysctl.port);
        // Suspend is not advertised (noop could not resume): ignored like unknown bits.
        if let Some(reason) = sysctl
            .take_request()
            .and_then(noxs::request_reason)
            .filter(|&r| r != Shutdown::Suspend)
        {
            hypercall::shutdown(reason);
        }
        events.wait(&[sysctl.port]);
    }
}

/// Xenstore: watch `control/shutdown` as a PV kernel does, acknowledge and obey.
fn obey_xenstore(ring: Ring, events: &Events) {
    // SAFETY: the ring comes from the start info and nothing else in this guest uses it.
    let mut xs = unsafe { Xenstore::new(ring, MAX_YIELDS) };
    xs.write(b"control/feature-poweroff", b"1");
    xs.write(b"control/feature-reboot", b"1");
    if !xs.watch(b"control/shutdown", b"shutdown") {
        return;
    }
    loop {
        let mut buf = [0u8; 16];
        let reason = match xs.read(b"control/shutdown", &mut buf) {
            Some(b"poweroff" | b"halt") => Some(Shutdown::Poweroff),
            Some(b"reboot") => Some(Shutdown::Reboot),
            _ => None,
        };
        if let Some(reason) = reason {
            xs.write(b"control/shutdown", b"");
            hypercall::shutdown(reason);
        }
        xs.wait_for_watch(events);
    }
}
