//! libchaos: a Xen toolstack that creates guests in milliseconds.
//!
//! See docs/ARCHITECTURE.md for a walk through one creation.

pub mod build;
pub mod config;
pub mod daemon;
pub mod files;
pub mod hypervisor;
pub mod image;
pub mod plane;
pub mod runtime;
#[cfg(test)]
mod testing;
pub mod toolstack;
/// The Xenstore crate, re-exported: the trait, the client, the in-memory store.
pub use ::xenstore;
