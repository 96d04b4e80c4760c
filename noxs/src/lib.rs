//! NoXS ABI shared by toolstack, backends and guests.
#![no_std]
