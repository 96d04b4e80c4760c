//! The ping unikernel's logic, host-testable (`cargo test -p ping --lib`): what it answers
//! ([`net`]) and its netfront's data path ([`netfront`]). The guest itself (control planes,
//! console) is `main.rs`.
#![cfg_attr(not(test), no_std)]

pub mod net;
pub mod netfront;
