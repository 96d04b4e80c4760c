//! noop: the LightVM "noop" guest. Boots, touches nothing, sleeps forever.
//! Its only memory is its image, the pages the toolstack gives every PV guest and the boot stack.
#![no_std]
#![no_main]

use xenpv::hypercall;
use xenpv::start::StartInfo;

xenpv::entry!(main);

fn main(_si: StartInfo) -> ! {
    loop {
        // Events stay masked: this returns at most on an event channel firing, then sleeps again.
        hypercall::poll_forever();
    }
}
