//! xendevd: plugs Xen vif backends into bridges when the kernel announces them, instead of
//! forking a hotplug script per device. See DESIGN.md, "xendevd".
//!
//! [`uevent`] reads and filters kernel uevents, [`handler`] acts on one event (through
//! [`bridge`] ioctls or [`ovs`] JSON-RPC), [`pool`] runs handlers in parallel.

pub mod bridge;
pub mod handler;
pub mod logger;
pub mod noxs;
pub mod ovs;
pub mod pool;
pub mod uevent;
