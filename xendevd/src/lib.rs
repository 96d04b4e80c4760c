//! xendevd: plugs Xen backends in when the kernel announces them, instead of forking a hotplug
//! script per device. See DESIGN.md, "xendevd".
//!
//! [`uevent`] reads and filters kernel uevents; for vifs, [`handler`] acts on one event
//! (through [`bridge`] ioctls or [`ovs`] JSON-RPC) and [`pool`] runs handlers in parallel; for
//! vbds, [`vbd`] gives blkback its device (a [`loopdev`] loop device for a file) on one thread;
//! [`noxs`] serves NoXS guests; [`limits`] raises the open-files limit they need.

pub mod bridge;
pub mod handler;
pub mod limits;
pub mod logger;
pub mod loopdev;
pub mod noxs;
pub mod ovs;
pub mod pool;
pub mod uevent;
pub mod vbd;
