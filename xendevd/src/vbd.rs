//! What xendevd does for vbd backends, in place of Xen's `block` hotplug script: when blkback's
//! backend device appears, give it the device to serve and say so in Xenstore; when it goes,
//! free what was made for it.
//!
//! The backend directory (written by the toolstack, as libxl does) names the target in
//! `params` and the access in `mode`. A block device is served as it is; a regular file gets a
//! loop device ([`crate::loopdev`]), read-only for a read-only disk. Then, in one transaction
//! that first checks the directory is still there: `physical-device` ("major:minor" in hex,
//! what blkback waits for), `physical-device-path`, `node` (the loop device, as the script
//! records it) and `hotplug-status` = `connected` (or `error` with `hotplug-error`).
//!
//! The script's sharing rules hold: a target may be used read-only by many guests, or
//! read-write by one, and a block device mounted in dom0 is not given to a guest to write
//! (nor, mounted read-write, to read). Events are handled one at a time, in order, on one
//! thread: the script serialises on a lock for the same reason.

use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Sender};
use xenstore::{TxId, TxOutcome, Xenstore, XenstoreError};

use crate::handler::{HandleError, StoreSource};
use crate::loopdev::{self, LoopDevice, LoopError};
use crate::uevent::{VbdAction, VbdEvent};

/// Transactions lost to concurrent writers are retried this many times.
const MAX_TX_ATTEMPTS: u32 = 16;

#[derive(Debug, thiserror::Error)]
pub enum VbdError {
    #[error(transparent)]
    Store(#[from] HandleError),
    #[error("xenstore: {0}")]
    Xenstore(#[from] XenstoreError),
    #[error("{0}: no params (the disk's target)")]
    NoParams(String),
    #[error("{path}: {source}")]
    Target {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is neither a regular file nor a block device")]
    NotADisk(String),
    #[error(transparent)]
    Loop(#[from] LoopError),
    #[error("{target} is {what}, and so cannot be given to domain {domid} {how}")]
    Shared {
        target: String,
        what: String,
        domid: String,
        how: &'static str,
    },
    #[error("the Xenstore transaction conflicted {MAX_TX_ATTEMPTS} times in a row")]
    Conflicts,
}

/// What a target is, for the sharing rules: one file (by inode) or one block device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum TargetKey {
    File { dev: u64, ino: u64 },
    Block { rdev: u64 },
}

/// A disk xendevd serves.
#[derive(Debug)]
struct Attached {
    key: TargetKey,
    readonly: bool,
    /// The guest (`frontend-id`): a guest may use its own disk twice.
    domid: String,
    /// Dropping it frees the loop device (a file's disk).
    device: Option<LoopDevice>,
}

/// A loop device bound before xendevd started (a restart while guests run, or `losetup`).
#[derive(Debug, Clone, Copy)]
struct ForeignLoop {
    number: u32,
    key: TargetKey,
    readonly: bool,
}

/// What an event led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VbdDone {
    /// `physical-device` written: the device blkback serves (a loop device for a file).
    Attached {
        device: PathBuf,
        major: u32,
        minor: u32,
        loop_device: bool,
        readonly: bool,
    },
    /// The directory already had a `physical-device` (a hotplug script, or a repeated event).
    AlreadyDone,
    /// The backend directory was gone (the guest went before its disk was served).
    Gone,
    /// A loop device freed.
    Detached { device: PathBuf },
    /// A removal of a vbd xendevd had set nothing up for (a block device, or not ours).
    NothingToFree,
}

/// Serves vbd backends (see the module docs). One instance, one thread.
#[derive(Debug)]
pub struct VbdHandler {
    store: StoreSource,
    xs_home: String,
    /// By absolute backend directory.
    attached: HashMap<String, Attached>,
    foreign: Vec<ForeignLoop>,
}

impl VbdHandler {
    /// A handler for backends below `xs_home`. `scan_loops`: note the loop devices already
    /// bound (their files count for the sharing rules); off in tests that must not see the
    /// host's.
    pub fn new(store: StoreSource, xs_home: &str, scan_loops: bool) -> VbdHandler {
        VbdHandler {
            store,
            xs_home: xs_home.trim_end_matches('/').to_string(),
            attached: HashMap::new(),
            foreign: if scan_loops {
                bound_loops()
            } else {
                Vec::new()
            },
        }
    }

    fn backend_dir(&self, path: &str) -> String {
        if path.starts_with('/') {
            path.to_string()
        } else {
            format!("{}/{path}", self.xs_home)
        }
    }

    /// Loop devices xendevd holds now.
    pub fn loop_devices(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .attached
            .values()
            .filter_map(|a| a.device.as_ref().map(LoopDevice::number))
            .collect();
        v.sort_unstable();
        v
    }

    pub fn handle(&mut self, ev: &VbdEvent) -> Result<VbdDone, VbdError> {
        let dir = self.backend_dir(&ev.backend_path);
        match ev.action {
            VbdAction::Remove => Ok(match self.attached.remove(&dir) {
                Some(Attached {
                    device: Some(d), ..
                }) => {
                    let device = d.path();
                    drop(d);
                    VbdDone::Detached { device }
                }
                _ => VbdDone::NothingToFree,
            }),
            VbdAction::Add => {
                if self.attached.contains_key(&dir) {
                    return Ok(VbdDone::AlreadyDone);
                }
                let xs = self.store.get()?;
                let result = self.add(&*xs, &dir);
                if let Err(e) = &result {
                    // What the script does on failure; the toolstack or the user reads it.
                    let report = xs
                        .write(
                            TxId::NONE,
                            &format!("{dir}/hotplug-error"),
                            e.to_string().as_bytes(),
                        )
                        .and_then(|()| {
                            xs.write(TxId::NONE, &format!("{dir}/hotplug-status"), b"error")
                        });
                    if let Err(r) = report {
                        self.store.forget();
                        log::warn!("{dir}: reporting the error failed: {r}");
                    }
                }
                result
            }
        }
    }

    fn add(&mut self, xs: &dyn Xenstore, dir: &str) -> Result<VbdDone, VbdError> {
        let read = |key: &str| -> Result<Option<String>, VbdError> {
            Ok(xs
                .read(TxId::NONE, &format!("{dir}/{key}"))
                .inspect_err(|_| self.store.forget())?
                .map(|v| String::from_utf8_lossy(&v).trim().to_string()))
        };
        if read("physical-device")?.is_some() {
            return Ok(VbdDone::AlreadyDone);
        }
        let Some(params) = read("params")? else {
            // Either the directory is gone, or it is being written by a toolstack that adds
            // keys one by one (libxl and chaos write it in one transaction).
            return match read("frontend-id")? {
                None => Ok(VbdDone::Gone),
                Some(_) => Err(VbdError::NoParams(dir.to_string())),
            };
        };
        let readonly = !read("mode")?.unwrap_or_default().contains('w');
        let domid = read("frontend-id")?.unwrap_or_default();
        // xl prepends /dev to a relative target (the script's expand_dev).
        let target = if params.starts_with('/') {
            PathBuf::from(&params)
        } else {
            PathBuf::from(format!("/dev/{params}"))
        };
        let shown = target.display().to_string();
        let meta = std::fs::metadata(&target).map_err(|source| VbdError::Target {
            path: shown.clone(),
            source,
        })?;
        let key = if meta.file_type().is_block_device() {
            TargetKey::Block { rdev: meta.rdev() }
        } else if meta.is_file() {
            TargetKey::File {
                dev: meta.dev(),
                ino: meta.ino(),
            }
        } else {
            return Err(VbdError::NotADisk(shown));
        };
        self.check_sharing(&shown, key, readonly, &domid)?;
        let (device, path, major, minor) = match key {
            TargetKey::Block { rdev } => (
                None,
                target.clone(),
                nix::sys::stat::major(rdev) as u32,
                nix::sys::stat::minor(rdev) as u32,
            ),
            TargetKey::File { .. } => {
                let d = LoopDevice::attach(&target, readonly)?;
                let (major, minor) = d.major_minor();
                let path = d.path();
                (Some(d), path, major, minor)
            }
        };
        match publish(xs, dir, &path, major, minor, device.is_some())? {
            Published::Done => {}
            // The device (if we made one) is freed as it drops.
            Published::Gone => return Ok(VbdDone::Gone),
            Published::AlreadyDone => return Ok(VbdDone::AlreadyDone),
        }
        let loop_device = device.is_some();
        self.attached.insert(
            dir.to_string(),
            Attached {
                key,
                readonly,
                domid,
                device,
            },
        );
        Ok(VbdDone::Attached {
            device: path,
            major,
            minor,
            loop_device,
            readonly,
        })
    }

    /// The hotplug script's rules (`check_sharing`): read-only users may share a target; a
    /// writer needs it alone (but for the same guest); a block device mounted in dom0 is
    /// dom0's.
    fn check_sharing(
        &mut self,
        target: &str,
        key: TargetKey,
        readonly: bool,
        domid: &str,
    ) -> Result<(), VbdError> {
        let refuse = |what: String| VbdError::Shared {
            target: target.to_string(),
            what,
            domid: domid.to_string(),
            how: if readonly { "read-only" } else { "read-write" },
        };
        let conflicts = |other_ro: bool| !readonly || !other_ro;
        if let Some((_, a)) = self
            .attached
            .iter()
            .find(|(_, a)| a.key == key && a.domid != domid && conflicts(a.readonly))
        {
            let how = if a.readonly {
                "read-only"
            } else {
                "read-write"
            };
            return Err(refuse(format!("in use {how} by domain {}", a.domid)));
        }
        // Loop devices bound before xendevd started, if they still are.
        self.foreign.retain(|f| {
            matches!(loopdev::backing(f.number), Ok(Some((dev, ino, _)))
                if f.key == TargetKey::File { dev, ino })
        });
        if let Some(f) = self
            .foreign
            .iter()
            .find(|f| f.key == key && conflicts(f.readonly))
        {
            let how = if f.readonly {
                "read-only"
            } else {
                "read-write"
            };
            return Err(refuse(format!(
                "bound {how} to /dev/loop{} (set up before xendevd started)",
                f.number
            )));
        }
        if let TargetKey::Block { rdev } = key {
            if let Some(rw) = mounted_in_dom0(rdev) {
                if !readonly || rw {
                    let how = if rw { "read-write" } else { "read-only" };
                    return Err(refuse(format!("mounted {how} in dom0")));
                }
            }
        }
        Ok(())
    }
}

enum Published {
    Done,
    Gone,
    AlreadyDone,
}

/// Writes the device and the result in one transaction, if the directory is still there and
/// nobody (a hotplug script) wrote a device first.
fn publish(
    xs: &dyn Xenstore,
    dir: &str,
    device: &Path,
    major: u32,
    minor: u32,
    is_loop: bool,
) -> Result<Published, VbdError> {
    let physical = format!("{major:x}:{minor:x}");
    let device = device.display().to_string();
    for _ in 0..MAX_TX_ATTEMPTS {
        let tx = xs.transaction_start()?;
        let body = || -> Result<Option<Published>, XenstoreError> {
            if xs.read(tx, &format!("{dir}/params"))?.is_none() {
                return Ok(Some(Published::Gone));
            }
            if xs.read(tx, &format!("{dir}/physical-device"))?.is_some() {
                return Ok(Some(Published::AlreadyDone));
            }
            xs.write(tx, &format!("{dir}/physical-device"), physical.as_bytes())?;
            xs.write(
                tx,
                &format!("{dir}/physical-device-path"),
                device.as_bytes(),
            )?;
            if is_loop {
                xs.write(tx, &format!("{dir}/node"), device.as_bytes())?;
            }
            xs.write(tx, &format!("{dir}/hotplug-status"), b"connected")?;
            Ok(None)
        };
        match body() {
            Ok(Some(outcome)) => {
                let _ = xs.transaction_end(tx, false);
                return Ok(outcome);
            }
            Ok(None) => {
                if xs.transaction_end(tx, true)? == TxOutcome::Committed {
                    return Ok(Published::Done);
                }
            }
            Err(e) => {
                let _ = xs.transaction_end(tx, false);
                return Err(e.into());
            }
        }
    }
    Err(VbdError::Conflicts)
}

/// Whether a block device is mounted in dom0, and read-write (from /proc/mounts).
fn mounted_in_dom0(rdev: u64) -> Option<bool> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let source = fields.next()?;
        let options = fields.nth(2)?;
        let meta = std::fs::metadata(source).ok()?;
        (meta.file_type().is_block_device() && meta.rdev() == rdev)
            .then(|| options.split(',').any(|o| o == "rw"))
    })
}

/// The loop devices bound now, and to which file.
fn bound_loops() -> Vec<ForeignLoop> {
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("loop")?.parse().ok())
        .filter_map(|number| {
            let (dev, ino, readonly) = loopdev::backing(number).ok()??;
            Some(ForeignLoop {
                number,
                key: TargetKey::File { dev, ino },
                readonly,
            })
        })
        .collect()
}

/// The result of one event, with its timings (tests and the lab's latency numbers).
#[derive(Debug, Clone)]
pub struct VbdOutcome {
    pub event: VbdEvent,
    pub result: Result<VbdDone, String>,
    /// From reception to handling.
    pub queued: Duration,
    pub took: Duration,
}

/// The vbd thread: events in, handled one at a time in order.
#[derive(Debug)]
pub struct VbdWorker {
    tx: Sender<(VbdEvent, Instant)>,
    thread: JoinHandle<()>,
}

impl VbdWorker {
    pub fn start(
        mut handler: VbdHandler,
        report: Option<Sender<VbdOutcome>>,
    ) -> std::io::Result<VbdWorker> {
        let (tx, rx) = unbounded::<(VbdEvent, Instant)>();
        let thread = std::thread::Builder::new()
            .name("xendevd-vbd".into())
            .spawn(move || {
                for (event, received) in rx {
                    let outcome = run(&mut handler, event, received);
                    if let Some(r) = &report {
                        let _ = r.send(outcome);
                    }
                }
                // Dropping the handler closes xendevd's loop descriptors; devices blkback
                // holds stay until it lets go (they are autoclear).
                let held = handler.loop_devices();
                if !held.is_empty() {
                    log::info!("stopping: {} loop devices left to blkback", held.len());
                }
            })?;
        Ok(VbdWorker { tx, thread })
    }

    pub fn submit_at(&self, event: VbdEvent, received: Instant) {
        if self.tx.send((event, received)).is_err() {
            log::error!("the vbd thread is gone; event dropped");
        }
    }

    /// Finishes the queued events and stops the thread.
    pub fn shutdown(self) {
        drop(self.tx);
        if self.thread.join().is_err() {
            log::error!("the vbd thread panicked");
        }
    }
}

fn run(handler: &mut VbdHandler, event: VbdEvent, received: Instant) -> VbdOutcome {
    let start = Instant::now();
    let queued = start.duration_since(received);
    let result =
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler.handle(&event))) {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err("internal error (panic) while handling the event".to_string()),
        };
    let took = start.elapsed();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    match &result {
        Ok(VbdDone::Attached {
            device,
            major,
            minor,
            loop_device,
            readonly,
        }) => log::info!(
            "{} {}: {} {major:x}:{minor:x}{}{} in {:.3} ms, queued {:.3} ms",
            event.backend_path,
            event.action,
            device.display(),
            if *loop_device { " (loop)" } else { "" },
            if *readonly { " read-only" } else { "" },
            ms(took),
            ms(queued)
        ),
        Ok(done) => log::info!(
            "{} {}: {done:?} in {:.3} ms",
            event.backend_path,
            event.action,
            ms(took)
        ),
        Err(e) => log::error!(
            "{} {}: failed after {:.3} ms: {e}",
            event.backend_path,
            event.action,
            ms(took)
        ),
    }
    VbdOutcome {
        event,
        result,
        queued,
        took,
    }
}
