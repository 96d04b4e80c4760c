//! Per-domain records under the runtime directory (default /run/chaos): what later commands
//! (list, destroy, shutdown, console) need to know about a guest chaos created.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

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

/// The runtime directory and the records in it.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// Opens (creating if needed) the runtime directory.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        for sub in ["domains", "names", "shells"] {
            let dir = root.join(sub);
            fs::create_dir_all(&dir).map_err(io(&dir))?;
        }
        Ok(StateDir { root })
    }

    /// The name index: one file per name chaos gave out, holding the domid. It makes the
    /// uniqueness check one lookup, however many guests run. File names are the name in hex,
    /// so any name is a safe file name.
    fn name_path(&self, name: &str) -> PathBuf {
        let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
        self.root.join("names").join(hex)
    }

    /// The domain the index gives `name` to, if any (it may have died since: callers check).
    pub fn name_owner(&self, name: &str) -> Result<Option<DomId>> {
        let path = self.name_path(name);
        match fs::read_to_string(&path) {
            Ok(s) => Ok(s.trim().parse().ok().map(DomId)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Gives `name` to `domid` in the index (under [`StateDir::lock`], after checking it is free).
    pub fn claim_name(&self, name: &str, domid: DomId) -> Result<()> {
        let path = self.name_path(name);
        fs::write(&path, domid.0.to_string()).map_err(io(&path))
    }

    /// Frees `name`, if `domid` holds it.
    pub fn release_name(&self, name: &str, domid: DomId) -> Result<()> {
        if self.name_owner(name)? == Some(domid) {
            let path = self.name_path(name);
            match fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&path)(e)),
                _ => {}
            }
        }
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn record_path(&self, domid: DomId) -> PathBuf {
        self.root.join("domains").join(format!("{}.json", domid.0))
    }

    /// Takes the directory's lock until the returned guard is dropped, so that concurrent chaos
    /// processes do not hand out one name twice.
    pub fn lock(&self) -> Result<File> {
        let path = self.root.join("lock");
        let file = File::create(&path).map_err(io(&path))?;
        file.lock().map_err(io(&path))?;
        Ok(file)
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

    /// Every readable record. A corrupt record is reported and skipped, so one bad file does not
    /// hide every other guest.
    pub fn all(&self) -> Result<Vec<DomainRecord>> {
        let mut records = read_all(&self.root.join("domains"), "domain")?;
        records.sort_by_key(|r: &DomainRecord| r.domid);
        Ok(records)
    }
}

fn write_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
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
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
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
