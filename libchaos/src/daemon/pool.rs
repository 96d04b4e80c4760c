//! The refilled pool: ready shells per flavor, worker threads that prepare new ones as shells
//! are taken, a memory reserve refills never eat into, and the on-disk shell records that let a
//! later daemon reclaim the shells of one that died.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crossbeam_channel::{Receiver, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::flavors::FlavorTarget;
use super::protocol::FlavorStatus;
use super::stats::{Rate, Samples};
use crate::hypervisor::Uuid;
use crate::hypervisor::{DomId, HypervisorError, PAGE_SIZE};
use crate::toolstack::{random_uuid, FinishAhead, Flavor, Shell, ShellRecord, Toolstack};

/// How long an idle worker sleeps before it looks at host memory again (another process may
/// have freed some), and how long it waits after a failed prepare before trying again.
const RECHECK: Duration = Duration::from_millis(500);
/// How long a worker with nothing to do sleeps before it looks again anyway.
const IDLE: Duration = Duration::from_secs(5);
/// How long after a creation from a shell its refill waits (unless the flavor ran out). A
/// prepare (domain creation, populating memory) competes for dom0's CPUs and Xen's locks
/// with what a client does next: read the reply, print it, exit, send the next request.
/// (In the lab, before this wait, a refill started as the reply went out and overlapped the
/// client's last 10-30 ms.)
const QUIET: Duration = Duration::from_millis(50);

const MIB_PAGES: u64 = 1024 * 1024 / PAGE_SIZE as u64;

/// A creation from a taken shell, running: its refill waits until this is dropped (also when
/// the creation failed or its thread panicked).
pub struct Creating<'a> {
    pool: &'a Pool,
    wake_now: bool,
}

impl Drop for Creating<'_> {
    fn drop(&mut self) {
        self.pool.creation_done(self.wake_now);
    }
}

impl Creating<'_> {
    /// Ends the creation without waking a worker: the daemon's thread does that once it has
    /// written the reply ([`Pool::replied`]), so a worker starting up (its queue's spinning
    /// wait, the lock, the clock) does not take a CPU from the reply the client waits for.
    pub fn wake_after_reply(mut self) {
        self.wake_now = false;
    }
}

/// A ready shell and the name of its record.
pub struct Ready {
    pub shell: Shell,
    pub uuid: Uuid,
}

struct Slot {
    flavor: Flavor,
    /// What its warm shells are finished ahead with.
    ahead: Option<FinishAhead>,
    target: usize,
    ready: Vec<Ready>,
    preparing: usize,
    prepared: u64,
    taken: u64,
    last_error: Option<String>,
}

struct Inner {
    slots: Vec<Slot>,
    stopping: bool,
    /// Refill threads started, for waking them all at stop.
    workers: usize,
    held_by_reserve: bool,
    prepare_times: Samples,
    refills: Rate,
    /// Creations from taken shells still running, and when the last one ended: refills wait
    /// for a quiet moment (see [`Pool::take`]).
    creating: usize,
    last_done: Option<Instant>,
    /// Records of shells that became guests, removed by a worker after the creation's reply
    /// (a record left by a crash is harmless: the next chaosd finds its domain a guest).
    became_guests: Vec<Uuid>,
    /// Creations that ended and wait for their reply to be written to wake a worker.
    wakes_after_reply: usize,
}

impl Inner {
    /// How much longer refills of a flavor that still has ready shells wait: while creations
    /// run and for [`QUIET`] after the last one.
    fn quiet_in(&self, now: Instant) -> Option<Duration> {
        if self.creating > 0 {
            return Some(QUIET);
        }
        let since = now.duration_since(self.last_done?);
        QUIET.checked_sub(since).filter(|d| !d.is_zero())
    }
}

pub struct Pool {
    ts: Arc<Toolstack>,
    inner: Mutex<Inner>,
    /// The workers' queue of wake-ups: a shell was taken, or the daemon is stopping. Each
    /// worker takes one and looks at what the flavors need (a wake-up sent while every worker
    /// is busy waits in the queue, so none is lost).
    kicks: (Sender<()>, Receiver<()>),
    /// Wakes `wait_filled`: a shell became ready.
    filled: Condvar,
    reserve_pages: u64,
}

impl Pool {
    pub fn new(ts: Arc<Toolstack>, targets: &[FlavorTarget], reserve_mib: u64) -> Pool {
        let mut slots: Vec<Slot> = Vec::new();
        for t in targets {
            // The same flavor twice adds up.
            match slots.iter_mut().find(|s| s.flavor == t.flavor) {
                Some(s) => s.target += t.target,
                None => slots.push(Slot {
                    flavor: t.flavor.clone(),
                    ahead: t.ahead.clone(),
                    target: t.target,
                    ready: Vec::new(),
                    preparing: 0,
                    prepared: 0,
                    taken: 0,
                    last_error: None,
                }),
            }
        }
        Pool {
            ts,
            inner: Mutex::new(Inner {
                slots,
                stopping: false,
                workers: 0,
                held_by_reserve: false,
                prepare_times: Samples::default(),
                refills: Rate::new(Duration::from_secs(60)),
                creating: 0,
                last_done: None,
                became_guests: Vec::new(),
                wakes_after_reply: 0,
            }),
            kicks: crossbeam_channel::unbounded(),
            filled: Condvar::new(),
            reserve_pages: reserve_mib * MIB_PAGES,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A worker that panicked cannot leave the counts half-updated in a way that matters more
        // than stopping the whole daemon would.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a pool of this flavor is configured.
    pub fn serves(&self, flavor: &Flavor) -> bool {
        self.lock().slots.iter().any(|s| &s.flavor == flavor)
    }

    /// A ready shell of this flavor. A worker refills behind it once the creation is over (the
    /// returned [`Creating`] is dropped) and [`QUIET`] has passed without another: a prepare
    /// running beside a creation takes CPU and hypervisor time from the request a client is
    /// waiting for. A flavor with no shell left is refilled at once.
    pub fn take(&self, flavor: &Flavor) -> Option<(Ready, Creating<'_>)> {
        let mut inner = self.lock();
        let slot = inner.slots.iter_mut().find(|s| &s.flavor == flavor)?;
        let ready = slot.ready.pop()?;
        slot.taken += 1;
        let empty = slot.ready.is_empty();
        inner.creating += 1;
        drop(inner);
        if empty {
            self.kick(1);
        }
        Some((
            ready,
            Creating {
                pool: self,
                wake_now: true,
            },
        ))
    }

    /// Forgets the record of a shell that was taken, once it is a guest (or destroyed).
    pub fn forget(&self, uuid: &Uuid) {
        if let Err(e) = self.ts.state().remove_shell(uuid) {
            log::warn!("removing shell record {uuid}: {e}");
        }
    }

    /// Forgets the record of a shell that became a guest, after the creation has replied: a
    /// worker removes it before it refills (a taken shell is always refilled).
    pub fn forget_later(&self, uuid: Uuid) {
        self.lock().became_guests.push(uuid);
    }

    fn forget_guests(&self) {
        let done = std::mem::take(&mut self.lock().became_guests);
        for uuid in &done {
            self.forget(uuid);
        }
    }

    /// Starts `n` refill workers.
    pub fn spawn_workers(self: &Arc<Self>, n: usize) -> std::io::Result<Vec<JoinHandle<()>>> {
        self.lock().workers = n.max(1);
        (0..n.max(1))
            .map(|i| {
                let pool = Arc::clone(self);
                std::thread::Builder::new()
                    .name(format!("chaosd-refill-{i}"))
                    .spawn(move || pool.worker())
            })
            .collect()
    }

    /// Asks the workers to stop after the shell they are preparing.
    pub fn stop(&self) {
        let workers = {
            let mut inner = self.lock();
            inner.stopping = true;
            inner.workers
        };
        self.kick(workers);
        self.filled.notify_all();
    }

    fn worker(&self) {
        loop {
            let job = self.next_job();
            self.forget_guests();
            let Some((flavor, ahead)) = job else {
                return;
            };
            let start = Instant::now();
            let result = self.prepare_recorded(&flavor, ahead.as_ref());
            let mut inner = self.lock();
            let Some(idx) = inner.slots.iter().position(|s| s.flavor == flavor) else {
                return;
            };
            inner.slots[idx].preparing -= 1;
            match result {
                Ok(ready) => {
                    let now = Instant::now();
                    inner.prepare_times.add(now - start);
                    inner.refills.tick(now);
                    let slot = &mut inner.slots[idx];
                    slot.ready.push(ready);
                    slot.prepared += 1;
                    slot.last_error = None;
                    drop(inner);
                    self.filled.notify_all();
                }
                Err(e) => {
                    log::warn!("refilling {}: {e}", describe(&flavor));
                    inner.slots[idx].last_error = Some(e);
                    // Back off, so a failing flavor does not spin.
                    drop(inner);
                    self.wait_kick(RECHECK);
                }
            }
        }
    }

    /// Waits for a flavor below its target whose shell fits above the reserve, and claims it
    /// (with what its warm shells are finished ahead with). `None` once the daemon is stopping.
    fn next_job(&self) -> Option<(Flavor, Option<FinishAhead>)> {
        let mut inner = self.lock();
        loop {
            if inner.stopping {
                return None;
            }
            let quiet = inner.quiet_in(Instant::now());
            let below = |s: &Slot| s.ready.len() + s.preparing < s.target;
            let wanted = inner
                .slots
                .iter()
                .position(|s| below(s) && (quiet.is_none() || s.ready.is_empty()));
            if let (None, Some(wait)) = (wanted, quiet) {
                if inner.slots.iter().any(below) {
                    // A refill waits for the quiet moment.
                    drop(inner);
                    self.wait_kick(wait);
                    inner = self.lock();
                    continue;
                }
            }
            if let Some(idx) = wanted {
                // Memory other workers are about to populate counts as used already.
                let pending: u64 = inner
                    .slots
                    .iter()
                    .map(|s| s.preparing as u64 * s.flavor.nr_pages())
                    .sum();
                let need = inner.slots[idx].flavor.nr_pages();
                match self.fits(need + pending) {
                    Ok(true) => {
                        inner.held_by_reserve = false;
                        let slot = &mut inner.slots[idx];
                        slot.preparing += 1;
                        return Some((slot.flavor.clone(), slot.ahead.clone()));
                    }
                    Ok(false) => inner.held_by_reserve = true,
                    Err(e) => inner.slots[idx].last_error = Some(format!("host memory: {e}")),
                }
                drop(inner);
                self.wait_kick(RECHECK);
                inner = self.lock();
            } else {
                inner.held_by_reserve = false;
                drop(inner);
                self.wait_kick(IDLE);
                inner = self.lock();
            }
        }
    }

    fn creation_done(&self, wake_now: bool) {
        let mut inner = self.lock();
        inner.creating = inner.creating.saturating_sub(1);
        inner.last_done = Some(Instant::now());
        if !wake_now {
            inner.wakes_after_reply += 1;
            return;
        }
        drop(inner);
        self.kick(1);
    }

    /// A reply went out (or could not): wakes the workers that creations ended with
    /// [`Creating::wake_after_reply`] left to it.
    pub fn replied(&self) {
        let n = std::mem::take(&mut self.lock().wakes_after_reply);
        self.kick(n);
    }

    /// Wakes `n` workers.
    fn kick(&self, n: usize) {
        for _ in 0..n {
            // The pool owns the receiver too, so the queue is never disconnected.
            let _ = self.kicks.0.send(());
        }
    }

    /// Sleeps until a wake-up comes or `limit` passes.
    fn wait_kick(&self, limit: Duration) {
        let _ = self.kicks.1.recv_timeout(limit);
    }

    /// Whether `pages` more can be taken from the host and leave the reserve free.
    fn fits(&self, pages: u64) -> Result<bool, HypervisorError> {
        let free = self.ts.hypervisor().physinfo()?.free_pages;
        Ok(free >= pages.saturating_add(self.reserve_pages))
    }

    /// Prepares one shell with its record written first (handle only) and updated once the
    /// domain exists, so a crash at any point leaves a record that finds the domain.
    fn prepare_recorded(
        &self,
        flavor: &Flavor,
        ahead: Option<&FinishAhead>,
    ) -> Result<Ready, String> {
        let handle = random_uuid();
        let mut record = ShellRecord {
            uuid: handle,
            domid: None,
            flavor: flavor.clone(),
            pid: crate::toolstack::state::own_pid(),
            created_ms: crate::toolstack::now_ms(),
        };
        let state = self.ts.state();
        state.save_shell(&record).map_err(|e| e.to_string())?;
        let shell = match self.ts.prepare_ahead(flavor, handle, ahead) {
            Ok(s) => s,
            Err(e) => {
                self.forget(&record.uuid);
                return Err(e.to_string());
            }
        };
        record.domid = Some(shell.domid());
        if let Err(e) = state.save_shell(&record) {
            // Without a record the shell could leak: give it up.
            if let Err(d) = self.ts.discard(shell) {
                log::error!("discarding shell {}: {d}", record.uuid);
            }
            self.forget(&record.uuid);
            return Err(e.to_string());
        }
        Ok(Ready {
            shell,
            uuid: record.uuid,
        })
    }

    /// Destroys every ready shell and its record; returns how many.
    pub fn drain(&self) -> usize {
        self.forget_guests();
        let ready: Vec<Ready> = self
            .lock()
            .slots
            .iter_mut()
            .flat_map(|s| std::mem::take(&mut s.ready))
            .collect();
        let mut destroyed = 0;
        for r in ready {
            let domid = r.shell.domid();
            match self.ts.discard(r.shell) {
                Ok(()) => destroyed += 1,
                Err(e) => log::error!("destroying shell (domain {domid}): {e}"),
            }
            self.forget(&r.uuid);
        }
        destroyed
    }

    /// Waits until every flavor has its target ready (or `limit` passes, or the daemon stops).
    pub fn wait_filled(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut inner = self.lock();
        loop {
            if inner.slots.iter().all(|s| s.ready.len() >= s.target) {
                return true;
            }
            let now = Instant::now();
            if inner.stopping || now >= deadline {
                return false;
            }
            inner = match self.filled.wait_timeout(inner, deadline - now) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }

    /// Per-flavor counts, refill rate, prepare times, and whether the reserve holds refills.
    pub fn status(&self, alive: Duration) -> (Vec<FlavorStatus>, f64, super::Percentiles, bool) {
        let mut inner = self.lock();
        let flavors = inner
            .slots
            .iter()
            .map(|s| FlavorStatus {
                flavor: s.flavor.clone(),
                ready: s.ready.len(),
                target: s.target,
                preparing: s.preparing,
                prepared: s.prepared,
                taken: s.taken,
                last_error: s.last_error.clone(),
            })
            .collect();
        let rate = inner.refills.per_second(Instant::now(), alive);
        (
            flavors,
            rate,
            inner.prepare_times.percentiles(),
            inner.held_by_reserve,
        )
    }

    pub fn reserve_mib(&self) -> u64 {
        self.reserve_pages / MIB_PAGES
    }
}

/// A short description of a flavor for logs and errors.
pub fn describe(f: &Flavor) -> String {
    let warm = match &f.image {
        Some(w) => format!(", warm with {}", w.kernel.display()),
        None => String::new(),
    };
    format!(
        "{} {} MiB (max {}), {} vcpu(s), {}{warm}",
        f.kind, f.memory_mib, f.maxmem_mib, f.max_vcpus, f.control_plane
    )
}

/// Destroys the shells a daemon that died left behind: every shell record whose domain still
/// exists with the record's handle, paused, and with no guest record (so it was never made a
/// guest). Records whose domain is gone or became a guest are just removed. Returns how many
/// domains were destroyed.
pub fn reclaim(ts: &Toolstack) -> Result<usize, crate::toolstack::ToolstackError> {
    let state = ts.state();
    let records = state.shells()?;
    if records.is_empty() {
        return Ok(0);
    }
    let hv = ts.hypervisor();
    let live =
        hv.list_domains()
            .map_err(|source| crate::toolstack::ToolstackError::Hypervisor {
                step: "list domains",
                source,
            })?;
    let mut reclaimed = 0;
    for r in records {
        // Domain ids are reused: only the handle says it is still our shell.
        let found = live
            .iter()
            .find(|i| r.domid.is_none_or(|d| d == i.domid) && i.handle == r.uuid);
        if let Some(info) = found {
            let is_guest = state.load(info.domid)?.is_some();
            if info.domid != DomId::DOM0 && info.paused && info.shutdown.is_none() && !is_guest {
                // A warm NoXS shell's console may be served already, and a creation from the
                // shell (whose handle the guest takes) may have published its devices.
                if let Err(e) = ts.unpublish_half_made(info.domid, r.uuid) {
                    log::error!("reclaiming shell domain {}: {e}", info.domid);
                    continue;
                }
                match hv.destroy_domain(info.domid) {
                    Ok(()) => {
                        log::info!("reclaimed shell {} (domain {})", r.uuid, info.domid);
                        reclaimed += 1;
                    }
                    Err(e) => {
                        log::error!("reclaiming shell domain {}: {e}", info.domid);
                        continue;
                    }
                }
            } else {
                log::warn!(
                    "shell record {} names domain {}, which is no longer a shell; leaving it",
                    r.uuid,
                    info.domid
                );
            }
        }
        state.remove_shell(&r.uuid)?;
    }
    Ok(reclaimed)
}
