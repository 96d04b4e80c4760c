//! SIGTERM and SIGINT as an ordinary blocking wait, without signal handlers: block them in the
//! main thread before any other thread starts (threads inherit the mask), then `sigwait`.

use std::io;

use nix::sys::signal::{SigSet, Signal};

/// SIGTERM and SIGINT, blocked in the calling thread and every thread it starts afterwards.
#[derive(Debug)]
pub struct TermSignals {
    set: SigSet,
}

impl TermSignals {
    /// Blocks SIGTERM and SIGINT. Call it first in `main`, before starting threads.
    pub fn block() -> io::Result<TermSignals> {
        let mut set = SigSet::empty();
        set.add(Signal::SIGTERM);
        set.add(Signal::SIGINT);
        set.thread_block().map_err(io::Error::from)?;
        Ok(TermSignals { set })
    }

    /// Waits for SIGTERM or SIGINT; returns which.
    pub fn wait(&self) -> io::Result<&'static str> {
        Ok(match self.set.wait().map_err(io::Error::from)? {
            Signal::SIGINT => "SIGINT",
            _ => "SIGTERM",
        })
    }
}
