//! The one reaper of chaos's guests: applies on_poweroff / on_reboot / on_crash when a guest
//! shuts down, as xl's per-guest background process does, but one process for all of them.
//!
//! Who reaps: whoever holds `<run dir>/reaper.lock` — chaosd's reaper thread, or
//! `chaos reap --watch`, which the first `chaos create` starts when none runs (it exits when no
//! chaos guest is left). Only one process can hold it, so the work is never done twice and one
//! process owns the event source.
//!
//! What wakes it, best first:
//! - VIRQ_DOM_EXC, bound through /dev/xen/evtchn, when no other process has it (on a host
//!   without xenstored: one binding per domain, and xenstored takes it when it runs);
//! - else, once a Xenstore-plane guest exists, Xenstore's `@releaseDomain` watch, which
//!   xenstored fires when an introduced domain shuts down or dies; NoXS guests are not
//!   introduced, so a look every second covers them (and with only NoXS guests the reaper
//!   never talks to xenstored);
//! - else a look every second (the caller's poll period): on stock Xen with xenstored and only
//!   NoXS guests, that is how NoXS guests are reaped. Each look lists every domain, so it is
//!   kept to once a second (at 100 ms, the looks took 8% of a CPU with 600 guests in the lab).
//!
//! On a wake-up it makes one hypercall (the domain list) and reads the records of only the
//! domains that shut down: no record is read for a guest that is still running, so the cost of
//! an event does not grow with the guests that run (the list itself is one copy of ~100 bytes a
//! domain, inside that one hypercall).

use std::collections::HashSet;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::error::hv_step;
use super::{Result, Toolstack};
use crate::config::Action;
use crate::hypervisor::{DomId, DomainEvents};

/// The lock file whose holder is the reaper.
pub const REAPER_LOCK: &str = "reaper.lock";
/// The watch token of the reaper's `@releaseDomain` watch.
const RELEASE_TOKEN: &str = "chaos-reaper";

/// How long to wait for an event before looking anyway, per source.
const WITH_VIRQ: Duration = Duration::from_secs(1);
/// With the Xenstore watch: NoXS guests raise no `@releaseDomain`, so look this often.
const WITH_WATCH: Duration = Duration::from_secs(1);
/// The poll period when nothing can wake the reaper, unless the caller says otherwise: the
/// same second in which a NoXS guest is noticed when xenstored's watch wakes the reaper.
pub const POLL: Duration = Duration::from_millis(POLL_MS);
/// [`POLL`] in milliseconds, the default of the command lines' intervals.
pub const POLL_MS: u64 = 1000;
/// How often records of domains that vanished (destroyed behind chaos's back) are swept.
const SWEEP: Duration = Duration::from_secs(30);

/// What woke the reaper, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Virq,
    ReleaseWatch,
    Poll,
}

enum Waker {
    Virq(Box<dyn DomainEvents>),
    ReleaseWatch,
    Poll,
}

impl Waker {
    fn source(&self) -> Source {
        match self {
            Waker::Virq(_) => Source::Virq,
            Waker::ReleaseWatch => Source::ReleaseWatch,
            Waker::Poll => Source::Poll,
        }
    }
}

/// Takes the reaper's lock if nobody holds it; `None` when another process reaps.
pub fn try_lock(run_dir: &Path) -> std::io::Result<Option<File>> {
    let path = run_dir.join(REAPER_LOCK);
    let file = File::create(&path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// How long a reaper started by `chaos create` stays once no chaos guest is left.
pub const IDLE_EXIT: Duration = Duration::from_secs(30);
/// Set (to anything) to keep `chaos create` from starting a reaper.
pub const NO_REAPER_VAR: &str = "CHAOS_NO_REAPER";

/// Starts `exe reap --watch --exit-when-idle` in the background (its own process group, no
/// terminal, its log in `<run dir>/reaper.log`), unless a reaper runs already. This is what
/// makes a chaos guest that powers off go away without anything started by hand, as with xl.
pub fn start_in_background(exe: &Path, run_dir: &Path) -> std::io::Result<bool> {
    use std::os::unix::process::CommandExt;
    if std::env::var_os(NO_REAPER_VAR).is_some() || running(run_dir) {
        return Ok(false);
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(run_dir.join("reaper.log"))?;
    std::process::Command::new(exe)
        // Info: what it reaped and what wakes it, in its log.
        .arg("-v")
        .arg("--run-dir")
        .arg(run_dir)
        .args(["reap", "--watch", "--exit-when-idle"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .process_group(0)
        .spawn()?;
    Ok(true)
}

/// Whether some process holds the reaper's lock.
pub fn running(run_dir: &Path) -> bool {
    match try_lock(run_dir) {
        Ok(Some(_released_on_drop)) => false,
        Ok(None) => true,
        // Cannot tell (no run dir yet): say no, and let the caller start one.
        Err(_) => false,
    }
}

impl Toolstack {
    /// Reaps until `stop` is set (or, with `exit_when_idle`, until no chaos guest has been
    /// left for that long). The caller holds the reaper's lock ([`try_lock`]). `reaped` hears
    /// of every action taken; errors are logged and the next round tries again.
    pub fn run_reaper(
        &self,
        stop: &AtomicBool,
        exit_when_idle: Option<Duration>,
        poll: Duration,
        mut reaped: impl FnMut(&[(DomId, Action)]),
    ) -> Source {
        let mut waker = self.waker();
        let mut preserved = HashSet::new();
        let mut noxs_seen = NoxsSeen::default();
        // Sweep at once (None): it also says whether a Xenstore guest wants the watch.
        let mut last_sweep: Option<Instant> = None;
        let mut idle_since: Option<Instant> = None;
        while !stop.load(Ordering::Acquire) {
            let woken = self.wait(&mut waker, poll);
            // Also at the first pass (guests that shut down before it listened) and with every
            // sweep (an event lost to a restart of xenstored, say).
            let sweep = last_sweep.is_none_or(|t| t.elapsed() >= SWEEP);
            if woken || sweep {
                match self.reap_shut_down(&mut preserved) {
                    Ok(done) if !done.is_empty() => reaped(&done),
                    Ok(_) => {}
                    Err(e) => log::warn!("reaping: {e}"),
                }
            }
            if sweep {
                last_sweep = Some(Instant::now());
                let planes = matches!(waker, Waker::Poll).then_some(&mut noxs_seen);
                match self.forget_vanished(planes) {
                    Ok(true) if matches!(waker, Waker::Poll) => waker = self.release_watch(),
                    Ok(_) => {}
                    Err(e) => log::warn!("reaper sweep: {e}"),
                }
            }
            // Guests go away with a domain event (or by the sweep's finding), and come back only
            // while idle: a quiet wake reads no directory (with a thousand guests, listing
            // the records' directory at every wake-up was most of an idle reaper's work).
            let looked = woken || sweep || idle_since.is_some();
            if let Some(limit) = exit_when_idle.filter(|_| looked) {
                let guests = self.state.has_guests().unwrap_or(true);
                match (guests, idle_since) {
                    (false, None) => idle_since = Some(Instant::now()),
                    (false, Some(t)) if t.elapsed() >= limit => break,
                    (false, Some(_)) => {}
                    (true, _) => idle_since = None,
                }
            }
        }
        let source = waker.source();
        if let (Waker::ReleaseWatch, Some(xs)) = (&waker, &self.xenstore) {
            let _ = xs.unwatch_releases(RELEASE_TOKEN);
        }
        source
    }

    fn waker(&self) -> Waker {
        match self.hv.domain_events() {
            Ok(Some(events)) => {
                log::info!("reaper: woken by VIRQ_DOM_EXC");
                Waker::Virq(events)
            }
            Ok(None) => {
                log::info!("reaper: VIRQ_DOM_EXC is bound by another process (xenstored)");
                Waker::Poll
            }
            Err(e) => {
                log::info!("reaper: no domain exception events: {e}");
                Waker::Poll
            }
        }
    }

    /// xenstored's relay of VIRQ_DOM_EXC, for Xenstore-plane guests.
    fn release_watch(&self) -> Waker {
        if let Some(xs) = &self.xenstore {
            match xs.watch_releases(RELEASE_TOKEN) {
                Ok(()) => {
                    log::info!("reaper: woken by @releaseDomain");
                    return Waker::ReleaseWatch;
                }
                Err(e) => log::info!("reaper: no @releaseDomain watch: {e}"),
            }
        }
        Waker::Poll
    }

    /// Waits for a domain event (or the poll interval); false when the wait for VIRQ_DOM_EXC
    /// timed out, so nothing changed and no domain list is needed (with a thousand guests that
    /// list, once a second, was most of the reaper's CPU in the lab). `@releaseDomain` is not
    /// raised for NoXS guests (xenstored does not know them), so a timed-out wait on it still
    /// looks: that once-a-second look is what reaps them.
    fn wait(&self, waker: &mut Waker, poll: Duration) -> bool {
        match waker {
            Waker::Virq(events) => match events.wait(WITH_VIRQ) {
                Ok(fired) => fired,
                Err(e) => {
                    log::warn!("reaper: waiting for VIRQ_DOM_EXC: {e}");
                    std::thread::sleep(poll);
                    true
                }
            },
            Waker::ReleaseWatch => match &self.xenstore {
                Some(xs) => match xs.wait_release(WITH_WATCH) {
                    Ok(_) => true,
                    Err(e) => {
                        log::warn!("reaper: waiting for @releaseDomain: {e}");
                        std::thread::sleep(poll);
                        true
                    }
                },
                None => {
                    std::thread::sleep(poll);
                    true
                }
            },
            Waker::Poll => {
                std::thread::sleep(poll);
                true
            }
        }
    }

    /// Applies the action of every chaos guest that shut down: one domain list, and the
    /// records of the shut-down domains only. `preserved` remembers the guests left as they
    /// are (on_* = preserve), so they are not looked at again on every event.
    fn reap_shut_down(&self, preserved: &mut HashSet<DomId>) -> Result<Vec<(DomId, Action)>> {
        let infos = self.hv.list_domains().map_err(hv_step("list domains"))?;
        preserved.retain(|d| infos.iter().any(|i| i.domid == *d && i.shutdown.is_some()));
        let mut done = Vec::new();
        for info in infos {
            if info.domid == DomId::DOM0
                || (info.shutdown.is_none() && !info.dying)
                || preserved.contains(&info.domid)
            {
                continue;
            }
            match self.reap_one(info.domid)? {
                Some(Action::Preserve) => {
                    preserved.insert(info.domid);
                    done.push((info.domid, Action::Preserve));
                }
                Some(action) => done.push((info.domid, action)),
                None => {}
            }
        }
        Ok(done)
    }

    /// Forgets the records of guests whose domain is gone; with `planes`, also says whether
    /// a Xenstore-plane guest is left (else `false`). Only the records it needs are read: those
    /// of domains that are gone, and, for the plane, those of guests not yet seen to be NoXS
    /// (`planes` remembers them from sweep to sweep). With a thousand NoXS guests, reading
    /// every record at every sweep cost the reaper 4 ms of CPU per creation in the lab.
    pub(super) fn forget_vanished(&self, mut planes: Option<&mut NoxsSeen>) -> Result<bool> {
        let live: HashSet<DomId> = self
            .hv
            .list_domains()
            .map_err(hv_step("list domains"))?
            .iter()
            .map(|i| i.domid)
            .collect();
        if let Some(seen) = planes.as_deref_mut() {
            // A domid that went away may come back as another guest: learn it again then.
            seen.0.retain(|d| live.contains(d));
        }
        let mut xenstore_guests = false;
        for domid in self.state.recorded_domids()? {
            let gone = !live.contains(&domid);
            let learn = !xenstore_guests
                && planes
                    .as_deref()
                    .is_some_and(|seen| !seen.0.contains(&domid));
            if !gone && !learn {
                continue;
            }
            let record = match self.state.load(domid) {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(e) => {
                    log::warn!("reaper sweep: {e}; skipped");
                    continue;
                }
            };
            if gone {
                self.forget_gone(&record)?;
            } else if record.config.control_plane == crate::config::PlaneKind::Xenstore {
                xenstore_guests = true;
            } else if let Some(seen) = planes.as_deref_mut() {
                seen.0.insert(domid);
            }
        }
        Ok(xenstore_guests)
    }
}

/// The guests a sweep found on the NoXS plane, kept between sweeps so their records are read
/// once (a reaper on a host whose xenstored holds VIRQ_DOM_EXC looks for a Xenstore-plane
/// guest, to be woken by `@releaseDomain` once there is one).
#[derive(Debug, Default)]
pub(super) struct NoxsSeen(HashSet<DomId>);
