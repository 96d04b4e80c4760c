//! SIGTERM and SIGINT as an ordinary blocking wait, without signal handlers: block them in the
//! main thread before any other thread starts (threads inherit the mask), then `sigwait`.

use std::io;

/// SIGTERM and SIGINT, blocked in the calling thread and every thread it starts afterwards.
#[derive(Debug)]
pub struct TermSignals {
    set: libc::sigset_t,
}

impl TermSignals {
    /// Blocks SIGTERM and SIGINT. Call it first in `main`, before starting threads.
    pub fn block() -> io::Result<TermSignals> {
        // SAFETY: sigset_t is plain data; sigemptyset initialises it before any other use.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid sigset_t owned by this frame; the calls only write into it
        // and the thread's own signal mask.
        let rc = unsafe {
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(TermSignals { set })
    }

    /// Waits for SIGTERM or SIGINT; returns which.
    pub fn wait(&self) -> io::Result<&'static str> {
        let mut sig: libc::c_int = 0;
        // SAFETY: `self.set` was initialised by `block`; `sig` is a valid out parameter.
        let rc = unsafe { libc::sigwait(&self.set, &mut sig) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(if sig == libc::SIGINT {
            "SIGINT"
        } else {
            "SIGTERM"
        })
    }
}
