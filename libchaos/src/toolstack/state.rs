//! Per-domain records under the runtime directory (default /run/chaos): what later commands
//! (list, destroy, shutdown, console) need to know about a guest chaos created.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use serde::{Deserialize, Serialize};

use super::Flavor;
use crate::config::DomainConfig;
use crate::hypervisor::{DomId, Uuid};
use crate::plane::{Device, Guest, Ring};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the name index has no free slot for {0:?} (other names share its hash)")]
    NameSlots(String),
    #[error("{path}: corrupt domain record: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

type Result<T> = std::result::Result<T, StateError>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What chaos remembers about a guest it created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainRecord {
    pub domid: DomId,
    pub name: String,
    pub uuid: Uuid,
    /// The config, with the MACs chosen at creation.
    pub config: DomainConfig,
    pub console: Ring,
    /// The Xenstore ring, or the NoXS device page.
    pub store: Ring,
    /// NoXS devices (none on the Xenstore plane).
    #[serde(default)]
    pub devices: Vec<Device>,
    /// Milliseconds since the Unix epoch.
    pub created_ms: u64,
}

impl DomainRecord {
    /// The guest as its control plane published it.
    pub fn guest(&self) -> Guest<'_> {
        Guest {
            domid: self.domid,
            uuid: self.uuid,
            config: &self.config,
            console: self.console,
            store: self.store,
            devices: &self.devices,
        }
    }
}

/// A shell chaosd prepared and has not handed out yet, recorded so that a later chaosd can
/// reclaim it if this one dies. Written before the domain exists (`domid` unknown, found again by
/// its handle) and again once it does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShellRecord {
    /// The domain handle the shell was created with; names the file.
    pub uuid: Uuid,
    pub domid: Option<DomId>,
    pub flavor: Flavor,
    /// Process id of the daemon that made it.
    pub pid: u32,
    pub created_ms: u64,
}

/// An entry of the name index: `name` belongs to the domain `domid` as long as that domain
/// carries the handle `uuid` (domids are reused; handles are not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameEntry {
    pub name: String,
    pub domid: DomId,
    pub uuid: Uuid,
}

/// A creation in progress: the guest's handle (its domain is created with it), its name, the
/// process creating it, and its domid once known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingCreation {
    pub uuid: Uuid,
    pub name: String,
    pub pid: u32,
    pub domid: Option<DomId>,
}

/// Slots per name hash: names whose hashes collide take the next slot.
const NAME_SLOTS: u32 = 4;

/// What one slot of the name index holds.
enum Slot {
    Missing,
    /// A file that is no entry (half-written by an old chaos, say).
    Garbage,
    Entry(NameEntry),
}

/// FNV-1a, 64 bits: a short stable file name for any name (collisions are resolved by slots).
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The runtime directory and the records in it.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
    lock: Arc<LockFile>,
}

/// The directory's lock file, opened once per process: other processes queue on its flock,
/// this process's threads on `threads` (a flock is shared by everyone holding its file).
#[derive(Debug, Default)]
struct LockFile {
    threads: Mutex<()>,
    file: OnceLock<File>,
}

/// The directory's lock, held until dropped ([`StateDir::lock`]).
#[derive(Debug)]
pub struct StateLock<'a> {
    file: &'a File,
    _threads: MutexGuard<'a, ()>,
}

impl Drop for StateLock<'_> {
    fn drop(&mut self) {
        // Before the threads' guard goes (fields drop after this).
        let _ = self.file.unlock();
    }
}

impl StateDir {
    /// Opens (creating if needed) the runtime directory.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        for sub in ["domains", "names", "shells", "creating"] {
            let dir = root.join(sub);
            fs::create_dir_all(&dir).map_err(io(&dir))?;
        }
        Ok(StateDir {
            root,
            lock: Arc::default(),
        })
    }

    /// The name index: one small file per name chaos gave out, holding the name, the domain and
    /// its handle. It makes the uniqueness check one lookup, however many guests run. Files are
    /// named by a hash of the name (any name up to 255 bytes gives a short, safe file name);
    /// the full name is stored inside and compared, and names whose hashes collide take the
    /// next of a few slots, so two names never share an entry. A hash's slots are kept without
    /// holes (a removal moves the hash's last slot into the one it frees), so the first missing
    /// slot ends a search: a free name costs one failed open, not one per slot.
    fn name_slots(&self, name: &str) -> impl Iterator<Item = PathBuf> + '_ {
        let hash = fnv1a64(name.as_bytes());
        (0..NAME_SLOTS).map(move |k| self.name_slot(hash, k))
    }

    fn name_slot(&self, hash: u64, k: u32) -> PathBuf {
        self.root.join("names").join(format!("{hash:016x}.{k}"))
    }

    fn read_slot(path: &Path) -> Result<Slot> {
        match fs::read(path) {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).map_or(Slot::Garbage, Slot::Entry)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Slot::Missing),
            Err(e) => Err(io(path)(e)),
        }
    }

    /// The index entry of `name`, if any. It may be stale (its domain died, or the domid now
    /// belongs to another domain): callers check it against the domain's handle.
    pub fn name_entry(&self, name: &str) -> Result<Option<NameEntry>> {
        for path in self.name_slots(name) {
            match Self::read_slot(&path)? {
                Slot::Entry(e) if e.name == name => return Ok(Some(e)),
                Slot::Missing => break,
                Slot::Entry(_) | Slot::Garbage => {}
            }
        }
        Ok(None)
    }

    /// Gives `name` to the domain `domid` with handle `uuid` (under [`StateDir::lock`], after
    /// checking the name is free: an entry of the same name is replaced).
    pub fn claim_name(&self, name: &str, domid: DomId, uuid: Uuid) -> Result<()> {
        self.claim_name_unless_held(name, domid, uuid, |_| Ok::<_, StateError>(false))
            .map(|_| ())
    }

    /// [`claim_name`](Self::claim_name) in one read of the name's slots, unless the entry
    /// that has the name is still `held` (its domain carries it): then `Ok(false)` and nothing
    /// written.
    pub fn claim_name_unless_held<E: From<StateError>>(
        &self,
        name: &str,
        domid: DomId,
        uuid: Uuid,
        held: impl FnOnce(&NameEntry) -> std::result::Result<bool, E>,
    ) -> std::result::Result<bool, E> {
        let entry = NameEntry {
            name: name.to_string(),
            domid,
            uuid,
        };
        let mut free = None;
        for path in self.name_slots(name) {
            match Self::read_slot(&path)? {
                Slot::Entry(e) if e.name == name => {
                    if held(&e)? {
                        return Ok(false);
                    }
                    write_atomic(&path, &entry)?;
                    return Ok(true);
                }
                Slot::Entry(_) => {}
                // Unreadable: a slot to use, once no slot holds this name.
                Slot::Garbage => {
                    free.get_or_insert(path);
                }
                // No slot past this one is in use.
                Slot::Missing => {
                    free.get_or_insert(path);
                    break;
                }
            }
        }
        match free {
            Some(path) => {
                write_atomic(&path, &entry)?;
                Ok(true)
            }
            None => Err(StateError::NameSlots(name.to_string()).into()),
        }
    }

    /// Frees `name`, if the domain `domid` holds it.
    pub fn release_name(&self, name: &str, domid: DomId) -> Result<()> {
        let _lock = self.lock()?;
        for path in self.name_slots(name) {
            match Self::read_slot(&path)? {
                Slot::Entry(e) if e.name == name && e.domid == domid => {
                    return self.remove_slot(&path)
                }
                Slot::Missing => break,
                Slot::Entry(_) | Slot::Garbage => {}
            }
        }
        Ok(())
    }

    /// Every entry of the name index with its file; files that are no entry (left half-written
    /// by an old chaos, say) are removed on the way.
    pub fn name_entries(&self) -> Result<Vec<(PathBuf, NameEntry)>> {
        let dir = self.root.join("names");
        let mut out = Vec::new();
        for path in list_dir(&dir)? {
            if is_temporary(&path) {
                remove_if_abandoned(&path);
                continue;
            }
            match Self::read_slot(&path)? {
                Slot::Entry(e) => out.push((path, e)),
                // Moved into a slot freed since the listing: seen next time.
                Slot::Missing => {}
                Slot::Garbage => {
                    log::warn!("{}: not a name entry; removed", path.display());
                    let _lock = self.lock()?;
                    if matches!(Self::read_slot(&path)?, Slot::Garbage) {
                        self.remove_slot(&path)?;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Removes one entry found by [`StateDir::name_entries`], if its file still holds it (a
    /// removal since may have moved another entry into that slot).
    pub fn remove_name_entry(&self, path: &Path, entry: &NameEntry) -> Result<()> {
        let _lock = self.lock()?;
        match Self::read_slot(path)? {
            Slot::Entry(e) if e == *entry => self.remove_slot(path),
            _ => Ok(()),
        }
    }

    /// Removes a slot of the name index (under the lock) and moves the last slot of its hash
    /// into its place, so that the hash's slots stay without holes.
    fn remove_slot(&self, path: &Path) -> Result<()> {
        remove_file(path)?;
        let Some((hash, k)) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.split_once('.'))
            .and_then(|(h, k)| Some((u64::from_str_radix(h, 16).ok()?, k.parse::<u32>().ok()?)))
        else {
            return Ok(());
        };
        let last = (k + 1..NAME_SLOTS)
            .map(|j| self.name_slot(hash, j))
            .take_while(|p| p.symlink_metadata().is_ok())
            .last();
        match last {
            Some(last) => fs::rename(&last, path).map_err(io(path)),
            None => Ok(()),
        }
    }

    fn pending_path(&self, uuid: &Uuid) -> PathBuf {
        self.root.join("creating").join(format!("{uuid}.json"))
    }

    /// Records a creation in progress before its domain exists, so that if this process dies
    /// midway, whoever scans next (list, the next creation, chaosd) destroys what it left.
    pub fn save_pending(&self, p: &PendingCreation) -> Result<()> {
        write_atomic(&self.pending_path(&p.uuid), p)
    }

    /// The creation is done (a guest with its record) or rolled back.
    pub fn remove_pending(&self, uuid: &Uuid) -> Result<()> {
        remove_file(&self.pending_path(uuid))
    }

    /// Every readable record of a creation in progress.
    pub fn pending(&self) -> Result<Vec<PendingCreation>> {
        read_all(&self.root.join("creating"), "creation")
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn record_path(&self, domid: DomId) -> PathBuf {
        self.root.join("domains").join(format!("{}.json", domid.0))
    }

    /// Takes the directory's lock until the returned guard is dropped, so that concurrent chaos
    /// processes (and threads) do not hand out one name twice.
    pub fn lock(&self) -> Result<StateLock<'_>> {
        let threads = self.lock.threads.lock().unwrap_or_else(|p| p.into_inner());
        let path = self.root.join("lock");
        let file = match self.lock.file.get() {
            Some(f) => f,
            None => {
                let f = File::options()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
                    .map_err(io(&path))?;
                self.lock.file.get_or_init(|| f)
            }
        };
        file.lock().map_err(io(&path))?;
        Ok(StateLock {
            file,
            _threads: threads,
        })
    }

    /// Writes a record atomically (temporary file, then rename). No fsync: the runtime
    /// directory does not outlive a reboot, and neither do the domains it describes; readers
    /// only need never to see half a record, which the rename gives.
    pub fn save(&self, record: &DomainRecord) -> Result<()> {
        write_atomic(&self.record_path(record.domid), record)
    }

    fn shell_path(&self, uuid: &Uuid) -> PathBuf {
        self.root.join("shells").join(format!("{uuid}.json"))
    }

    /// Writes a shell record atomically.
    pub fn save_shell(&self, record: &ShellRecord) -> Result<()> {
        write_atomic(&self.shell_path(&record.uuid), record)
    }

    /// Removes a shell record; a missing one is not an error.
    pub fn remove_shell(&self, uuid: &Uuid) -> Result<()> {
        remove_file(&self.shell_path(uuid))
    }

    /// Every readable shell record; unreadable ones are reported and skipped.
    pub fn shells(&self) -> Result<Vec<ShellRecord>> {
        read_all(&self.root.join("shells"), "shell")
    }

    pub fn load(&self, domid: DomId) -> Result<Option<DomainRecord>> {
        let path = self.record_path(domid);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| StateError::Corrupt { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Removes a record (also one claimed for reaping); a missing one is not an error.
    pub fn remove(&self, domid: DomId) -> Result<()> {
        remove_file(&self.record_path(domid))?;
        remove_file(&self.reaping_path(domid))
    }

    fn reaping_path(&self, domid: DomId) -> PathBuf {
        self.root
            .join("domains")
            .join(format!("{}.reaping", domid.0))
    }

    /// Claims a shut-down guest for one reaper: the record is renamed out of the way, which
    /// only one process can do. `false`: another reaper has it.
    pub fn claim_for_reaping(&self, domid: DomId) -> Result<bool> {
        let path = self.record_path(domid);
        match fs::rename(&path, self.reaping_path(domid)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Removes a record and frees its name: the domain is gone.
    pub fn forget(&self, record: &DomainRecord) -> Result<()> {
        self.release_name(&record.name, record.domid)?;
        self.remove(record.domid)
    }

    /// Whether any guest record exists (readable or not), found without reading them: the
    /// reaper asks on every wake-up, with thousands of guests.
    pub fn has_guests(&self) -> Result<bool> {
        let dir = self.root.join("domains");
        for entry in fs::read_dir(&dir).map_err(io(&dir))? {
            if is_record(&entry.map_err(io(&dir))?.path()) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The domains that have a record, from the records' file names (`<domid>.json`), without
    /// reading them: the reaper's sweep reads only the records of domains that are gone.
    /// Abandoned temporary files are removed on the way, as [`StateDir::all`] does.
    pub fn recorded_domids(&self) -> Result<Vec<DomId>> {
        let mut out = Vec::new();
        for path in list_dir(&self.root.join("domains"))? {
            if is_temporary(&path) {
                remove_if_abandoned(&path);
                continue;
            }
            let domid = path
                .file_stem()
                .filter(|_| is_record(&path))
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse::<u16>().ok());
            if let Some(d) = domid {
                out.push(DomId(d));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Every readable record. A corrupt record is reported and skipped, so one bad file does not
    /// hide every other guest.
    pub fn all(&self) -> Result<Vec<DomainRecord>> {
        let mut records = read_all(&self.root.join("domains"), "domain")?;
        records.sort_by_key(|r: &DomainRecord| r.domid);
        Ok(records)
    }
}

/// The temporary file a process writes `path` through: `<file>.<pid>.tmp`, so that a scan can
/// tell the files of live writers from those a killed process left.
fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.tmp", own_pid()));
    path.with_file_name(name)
}

/// A record file (not a temporary one, nor a `.reaping` claim).
fn is_record(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "json")
}

fn is_temporary(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "tmp")
}

/// This process's id, asked of the kernel once: it names every temporary file and pending
/// record, and `getpid` is a system call each time.
pub(crate) fn own_pid() -> u32 {
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *PID.get_or_init(std::process::id)
}

/// Whether process `pid` is alive (or may be: one we may not signal counts as alive).
pub(crate) fn process_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// Removes a temporary file whose writer is gone (`<file>.<pid>.tmp` of a dead pid, or the
/// `<file>.tmp` of older versions).
fn remove_if_abandoned(path: &Path) {
    let writer = path
        .file_stem()
        .and_then(|s| Path::new(s).extension())
        .and_then(|e| e.to_str())
        .and_then(|e| e.parse::<u32>().ok());
    if writer.is_some_and(process_alive) {
        return;
    }
    match fs::remove_file(path) {
        Ok(()) => log::info!("{}: removed (left by a process that died)", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => log::warn!("{}: {e}", path.display()),
    }
}

fn list_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        out.push(entry.map_err(io(dir))?.path());
    }
    Ok(out)
}

fn write_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let tmp = temporary_path(path);
    let json = serde_json::to_vec_pretty(value).map_err(|source| StateError::Corrupt {
        path: path.to_path_buf(),
        source,
    })?;
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(&json).map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))?;
    Ok(())
}

fn remove_file(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(path)(e)),
        _ => Ok(()),
    }
}

fn read_all<T: serde::de::DeserializeOwned>(dir: &Path, what: &str) -> Result<Vec<T>> {
    let mut records = Vec::new();
    for path in list_dir(dir)? {
        if is_temporary(&path) {
            remove_if_abandoned(&path);
            continue;
        }
        if !is_record(&path) {
            continue;
        }
        match fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(r) => records.push(r),
                Err(e) => log::warn!("{}: corrupt {what} record skipped: {e}", path.display()),
            },
            Err(e) => log::warn!("{}: unreadable {what} record skipped: {e}", path.display()),
        }
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Names whose hashes collide share a hash's slots, and the slots stay without holes: a
    /// removal moves the last one into the freed slot, so a search that stops at the first
    /// missing slot still finds every name.
    #[test]
    fn colliding_names_share_slots_and_a_removal_leaves_no_hole() {
        let scratch = crate::testing::Scratch::new("state-slots");
        let state = StateDir::open(&scratch.0).expect("open");
        let entry = |name: &str, domid| NameEntry {
            name: name.into(),
            domid: DomId(domid),
            uuid: Uuid([domid as u8; 16]),
        };
        // Another name in "x"'s first slot, as a name with the same hash would be.
        let other = entry("other", 7);
        let slot = |k| state.name_slots("x").nth(k).expect("slot");
        write_atomic(&slot(0), &other).expect("write");
        state
            .claim_name("x", DomId(8), Uuid([8; 16]))
            .expect("claim");
        assert_eq!(
            StateDir::read_slot(&slot(1)).ok().and_then(|s| match s {
                Slot::Entry(e) => Some(e),
                _ => None,
            }),
            Some(entry("x", 8)),
            "the next slot"
        );
        assert_eq!(state.name_entry("x").expect("look up"), Some(entry("x", 8)));
        // The first slot is freed (as clean_up frees a stale entry): "x" moves into it.
        state.remove_name_entry(&slot(0), &other).expect("remove");
        assert!(!slot(1).exists(), "no slot past the first in use");
        assert_eq!(state.name_entry("x").expect("look up"), Some(entry("x", 8)));
        // An entry that is not the one listed any more is left alone.
        state.remove_name_entry(&slot(0), &other).expect("remove");
        assert_eq!(state.name_entry("x").expect("look up"), Some(entry("x", 8)));
        // Still held: a second claim of "x" finds it in the first slot.
        let claimed = state
            .claim_name_unless_held("x", DomId(9), Uuid([9; 16]), |e| {
                Ok::<_, StateError>(e.domid == DomId(8))
            })
            .expect("claim");
        assert!(!claimed, "held by domain 8");
        state.release_name("x", DomId(8)).expect("release");
        assert_eq!(state.name_entry("x").expect("look up"), None);
        assert!(!slot(0).exists());
    }

    #[test]
    fn the_lock_keeps_threads_and_other_openers_of_the_directory_apart() {
        let scratch = crate::testing::Scratch::new("state-lock");
        let state = StateDir::open(&scratch.0).expect("open");
        let held = state.lock().expect("lock");
        let entered = Arc::new(AtomicBool::new(false));
        // Another thread of this process, through a clone of the same StateDir.
        let (other, flag) = (state.clone(), entered.clone());
        let waiter = std::thread::spawn(move || {
            let _l = other.lock().expect("lock");
            flag.store(true, Ordering::SeqCst);
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(
            !entered.load(Ordering::SeqCst),
            "waits while the lock is held"
        );
        drop(held);
        waiter.join().expect("join");
        assert!(entered.load(Ordering::SeqCst));
        // Another opener of the directory (as another process would) is held off by the flock.
        let held = state.lock().expect("lock");
        let elsewhere = File::options()
            .write(true)
            .open(scratch.0.join("lock"))
            .expect("open the lock file");
        assert!(elsewhere.try_lock().is_err(), "locked by the first");
        drop(held);
        assert!(elsewhere.try_lock().is_ok(), "free once released");
    }
}
