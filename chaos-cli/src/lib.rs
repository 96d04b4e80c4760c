//! What the `chaos` and `chaosd` binaries share: opening the chosen host, logging, printing.
//! No toolstack logic lives here; that is libchaos's.

pub mod args;
pub mod backend;
pub mod console;
pub mod logger;
pub mod output;
