//! Linux's Xen devices as dom0 daemons use them: event channels (`/dev/xen/evtchn`), and
//! grant mapping and copying (`/dev/xen/gntdev`) for the userspace backends. The hypercall
//! device (`/dev/xen/privcmd`) stays in libchaos's Xen backend.
//!
//! Like libchaos's privcmd layer, this is a boundary crate: its `unsafe` is the ioctls (each
//! one line, with the argument struct's layout pinned by size asserts); what it hands out is
//! safe.

pub mod evtchn;
pub mod gntdev;

pub use evtchn::EventChannels;
pub use gntdev::{CopyDir, GrantCopy, GrantDev, GrantMap};
