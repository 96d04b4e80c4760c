//! Device control planes: how a guest learns about its console, Xenstore ring and devices.
//!
//! `xenstore` (default) works with unmodified guests; NoXS (a device page instead of Xenstore)
//! comes with the noxs crate's ABI.

pub mod xenstore;
