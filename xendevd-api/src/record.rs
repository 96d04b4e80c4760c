//! The per-guest records: what a NoXS backend needs to serve a guest, written by the toolstack.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use xen_types::{DomId, EvtchnPort, GrantRef, Mac};

/// A NoXS guest, as its backends see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoxsGuest {
    pub domid: DomId,
    /// The guest's name (its console log is named after it). Empty for a shell whose console
    /// is served before it has a guest (chaosd's warm shells): the guest's name is then in
    /// chaos's guest record ([`RecordDir::guest_name`]), written before the guest can run, and
    /// xendevd opens the log at the console's first output.
    pub name: String,
    pub console: ConsoleRing,
    #[serde(default)]
    pub vifs: Vec<NoxsVif>,
}

/// The guest's PV console ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleRing {
    /// The grant the toolstack seeded for dom0 (GNTTAB_RESERVED_CONSOLE, 0).
    pub gref: GrantRef,
    /// The ring's frame as Xen's foreign-mapping interface takes it (an MFN for PV).
    pub frame: u64,
    /// The guest's port, allocated toward dom0; the backend binds it.
    pub evtchn: EvtchnPort,
}

/// One NoXS vif: its control page (in the guest's memory) and the guest's control channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoxsVif {
    pub id: u32,
    /// The grant the toolstack seeded for dom0 on the control page (`noxs::vif_ctrl_gref`):
    /// the backend maps the page with gntdev.
    pub ctrl_gref: GrantRef,
    /// The control page's frame (an MFN for PV), for foreign mapping.
    pub ctrl_frame: u64,
    pub evtchn: EvtchnPort,
    pub mac: Mac,
    pub bridge: String,
    pub ip: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: not a NoXS guest record: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: not a chaos guest record: {source}")]
    GuestRecord {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// This process's id, asked of the kernel once (a system call each time otherwise).
fn own_pid() -> u32 {
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *PID.get_or_init(std::process::id)
}

/// The directory of records.
#[derive(Debug, Clone)]
pub struct RecordDir {
    dir: PathBuf,
}

impl RecordDir {
    /// Opens (creating if needed) the directory.
    pub fn open(dir: impl Into<PathBuf>) -> Result<RecordDir, RecordError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|source| RecordError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(RecordDir { dir })
    }

    /// The directory at `dir`, not created until a record is saved in it (no system call:
    /// the toolstack names it once per creation).
    pub fn at(dir: impl Into<PathBuf>) -> RecordDir {
        RecordDir { dir: dir.into() }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn file(&self, domid: DomId) -> PathBuf {
        self.dir.join(format!("{}.json", domid.0))
    }

    /// Whether `domid` has a record (readable or not).
    pub fn has(&self, domid: DomId) -> bool {
        self.file(domid).exists()
    }

    /// Writes a record atomically (temporary file, then rename). The temporary file carries
    /// the writer's pid (`<domid>.json.<pid>.tmp`), so that [`RecordDir::all`] can remove
    /// those of writers that were killed.
    pub fn save(&self, guest: &NoxsGuest) -> Result<(), RecordError> {
        let path = self.file(guest.domid);
        let tmp = path.with_extension(format!("json.{}.tmp", own_pid()));
        let json = serde_json::to_vec(guest).map_err(|source| RecordError::Corrupt {
            path: path.clone(),
            source,
        })?;
        let file = match fs::File::create(&tmp) {
            // The directory is made with the first record (RecordDir::at).
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(&self.dir).and_then(|()| fs::File::create(&tmp))
            }
            created => created,
        };
        file.and_then(|mut f| f.write_all(&json))
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(|source| RecordError::Io { path, source })
    }

    /// The record of `domid`, if there is one.
    pub fn load(&self, domid: DomId) -> Result<Option<NoxsGuest>, RecordError> {
        let path = self.file(domid);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| RecordError::Corrupt { path, source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(RecordError::Io { path, source }),
        }
    }

    /// The name chaos gave the guest of `domid`, from its guest record beside this directory
    /// (these records live in chaos's runtime directory, whose `domains/<domid>.json` is a
    /// JSON object with the guest's `name`). A warm shell's record here names no guest: its
    /// creation writes only the guest record, before the guest can run, and xendevd reads the
    /// name there. `None` when there is no guest record.
    pub fn guest_name(&self, domid: DomId) -> Result<Option<String>, RecordError> {
        #[derive(Deserialize)]
        struct Named {
            name: String,
        }
        let Some(run_dir) = self.dir.parent() else {
            return Ok(None);
        };
        let path = run_dir.join("domains").join(format!("{}.json", domid.0));
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<Named>(&bytes)
                .map(|n| Some(n.name))
                .map_err(|source| RecordError::GuestRecord { path, source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(RecordError::Io { path, source }),
        }
    }

    /// Removes a record; a missing one is not an error.
    pub fn remove(&self, domid: DomId) -> Result<(), RecordError> {
        let path = self.file(domid);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(RecordError::Io { path, source: e })
            }
            _ => Ok(()),
        }
    }

    /// The domains that have a record (readable or not), from the file names alone: xendevd's
    /// sweep asks this every 2 s, and reading a thousand records each time cost it more CPU
    /// per guest the more guests ran (lab scale run).
    pub fn domids(&self) -> Result<std::collections::HashSet<DomId>, RecordError> {
        let entries = fs::read_dir(&self.dir).map_err(|source| RecordError::Io {
            path: self.dir.clone(),
            source,
        })?;
        Ok(entries
            .flatten()
            .filter_map(|entry| {
                let path = entry.path();
                let stem = path.file_stem()?.to_str()?.to_owned();
                (path.extension()? == "json").then_some(())?;
                stem.parse::<u16>().ok().map(DomId)
            })
            .collect())
    }

    /// Every readable record; corrupt ones are returned as errors beside the good ones, so
    /// one bad file does not hide the other guests.
    pub fn all(&self) -> Result<(Vec<NoxsGuest>, Vec<RecordError>), RecordError> {
        let mut good = Vec::new();
        let mut bad = Vec::new();
        let entries = fs::read_dir(&self.dir).map_err(|source| RecordError::Io {
            path: self.dir.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                remove_if_abandoned(&path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match fs::read(&path) {
                Ok(bytes) => match serde_json::from_slice(&bytes) {
                    Ok(g) => good.push(g),
                    Err(source) => bad.push(RecordError::Corrupt { path, source }),
                },
                Err(source) => bad.push(RecordError::Io { path, source }),
            }
        }
        good.sort_by_key(|g: &NoxsGuest| g.domid);
        Ok((good, bad))
    }
}

/// Removes a temporary record whose writer is gone (a dead pid, or no pid: older versions).
fn remove_if_abandoned(path: &Path) {
    let writer = path
        .file_stem()
        .and_then(|s| Path::new(s).extension())
        .and_then(|e| e.to_str())
        .and_then(|e| e.parse::<u32>().ok());
    if writer.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists()) {
        return;
    }
    let _ = fs::remove_file(path);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_records_of_dead_writers_are_removed_when_the_records_are_read() {
        let dir = std::env::temp_dir().join(format!("noxs-tmp-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let records = RecordDir::open(&dir).expect("open");
        let old = dir.join("5.json.tmp");
        let dead = dir.join("6.json.999999999.tmp");
        let live = dir.join(format!("7.json.{}.tmp", std::process::id()));
        for p in [&old, &dead, &live] {
            fs::write(p, b"").expect("write");
        }
        records.all().expect("all");
        assert!(!old.exists() && !dead.exists(), "left by killed writers");
        assert!(live.exists(), "a live writer's file stays");
        fs::remove_dir_all(&dir).expect("clean");
    }

    /// A warm shell's guest is named in chaos's guest record, beside the NoXS records.
    #[test]
    fn a_guests_name_is_read_from_its_guest_record_beside_the_records() {
        let run = std::env::temp_dir().join(format!("noxs-name-{}", std::process::id()));
        let _ = fs::remove_dir_all(&run);
        let records = RecordDir::at(run.join("noxs"));
        assert_eq!(
            records.guest_name(DomId(4)).unwrap(),
            None,
            "no guest record"
        );
        fs::create_dir_all(run.join("domains")).expect("mkdir");
        fs::write(
            run.join("domains/4.json"),
            br#"{"domid": 4, "name": "warm-1", "config": {"memory": 2}}"#,
        )
        .expect("write");
        assert_eq!(
            records.guest_name(DomId(4)).unwrap(),
            Some("warm-1".to_string())
        );
        fs::write(run.join("domains/5.json"), b"{").expect("write");
        let err = records.guest_name(DomId(5)).unwrap_err().to_string();
        assert!(err.contains("5.json: not a chaos guest record"), "{err}");
        fs::remove_dir_all(&run).expect("clean");
    }

    #[test]
    fn a_directory_named_with_at_is_made_by_the_first_save() {
        let dir = std::env::temp_dir().join(format!("noxs-at-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let records = RecordDir::at(&dir);
        assert!(!dir.exists(), "naming it makes nothing");
        assert_eq!(records.load(DomId(3)).unwrap(), None);
        records.remove(DomId(3)).expect("nothing to remove");
        let g = NoxsGuest {
            domid: DomId(3),
            name: "at".into(),
            console: ConsoleRing {
                gref: 0,
                frame: 1,
                evtchn: 2,
            },
            vifs: Vec::new(),
        };
        records.save(&g).expect("save makes the directory");
        assert_eq!(records.load(DomId(3)).unwrap(), Some(g));
        fs::remove_dir_all(&dir).expect("clean");
    }

    #[test]
    fn records_round_trip_and_corrupt_ones_are_reported_apart() {
        let dir = std::env::temp_dir().join(format!("xendevd-api-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let records = RecordDir::open(&dir).unwrap();
        let g = NoxsGuest {
            domid: DomId(7),
            name: "n".into(),
            console: ConsoleRing {
                gref: 0,
                frame: 0x1234,
                evtchn: 3,
            },
            vifs: vec![NoxsVif {
                id: 0,
                ctrl_gref: 2,
                ctrl_frame: 0x99,
                evtchn: 5,
                mac: Mac([0, 0x16, 0x3e, 1, 2, 3]),
                bridge: "xenbr0".into(),
                ip: Some("10.0.0.2".into()),
            }],
        };
        records.save(&g).unwrap();
        assert_eq!(records.load(DomId(7)).unwrap(), Some(g.clone()));
        assert_eq!(records.load(DomId(8)).unwrap(), None);
        fs::write(dir.join("9.json"), b"{not json").unwrap();
        fs::write(dir.join("10.json.1.tmp"), b"").unwrap();
        let recorded = records.domids().unwrap();
        assert_eq!(
            recorded,
            [DomId(7), DomId(9)].into_iter().collect(),
            "a corrupt record counts"
        );
        let (good, bad) = records.all().unwrap();
        assert_eq!(good, vec![g]);
        assert_eq!(bad.len(), 1);
        records.remove(DomId(7)).unwrap();
        records.remove(DomId(7)).unwrap();
        assert_eq!(records.load(DomId(7)).unwrap(), None);
        let _ = fs::remove_dir_all(&dir);
    }
}
