//! libchaos: a Xen toolstack that creates guests in milliseconds.
//!
//! See docs/ARCHITECTURE.md for a walk through one creation.

pub mod config;
pub mod hypervisor;
