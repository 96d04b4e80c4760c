//! Opens the toolstack on the chosen hypervisor: real Xen, or the simulated host that is kept in
//! the runtime directory between commands (for dry runs).

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use libchaos::hypervisor::sim::{SimConfig, SimHypervisor};
use libchaos::hypervisor::xen::XenHypervisor;
use libchaos::runtime::{self, HostKind};
use libchaos::toolstack::{StateDir, Toolstack};
use libchaos::xenstore::{LazyClient, MemStore, Xenstore};

/// Which hypervisor to drive: real Xen, or the in-memory simulation (dry runs).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum HypervisorKind {
    Xen,
    Sim,
}

impl std::str::FromStr for HypervisorKind {
    type Err = String;

    /// `xen` or `sim`, as `--hypervisor` takes it.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "xen" => Ok(HypervisorKind::Xen),
            "sim" => Ok(HypervisorKind::Sim),
            _ => Err("is not a hypervisor chaos drives (xen or sim)".into()),
        }
    }
}

impl HypervisorKind {
    pub fn host(self) -> HostKind {
        match self {
            HypervisorKind::Xen => HostKind::Xen,
            HypervisorKind::Sim => HostKind::Sim,
        }
    }
}

/// The runtime directory a command uses (libchaos's policy: the flag, else CHAOS_RUN_DIR,
/// else the host kind's default).
pub fn run_root(kind: HypervisorKind, run_dir: Option<PathBuf>) -> PathBuf {
    runtime::run_dir(kind.host(), run_dir)
}

/// Who opens the host: a `chaos` command, or chaosd (which holds a simulated host for its
/// whole life).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Opener {
    Command,
    Daemon,
}

/// The lock that keeps other processes off a simulated host while one uses it. A command waits
/// for another command (they are short), but not for chaosd, which holds the host as long as
/// it runs: on the sim, chaosd serves `chaos create` and `chaos pool status`, and every other
/// command is refused at once, saying so.
fn lock_sim_host(root: &std::path::Path, opener: Opener) -> Result<File, String> {
    let lock_path = root.join("sim.lock");
    let shown = |e: std::io::Error| format!("{}: {e}", lock_path.display());
    let lock = File::create(&lock_path).map_err(shown)?;
    match lock.try_lock() {
        Ok(()) => return Ok(lock),
        Err(std::fs::TryLockError::Error(e)) => return Err(shown(e)),
        Err(std::fs::TryLockError::WouldBlock) => {}
    }
    // Another command holds it (for a moment), or a chaosd starting up (it takes chaosd.lock
    // right after): wait, looking again for chaosd.
    loop {
        if opener == Opener::Command && daemon_holds(root) {
            return Err(format!(
                "chaosd is running on the simulated host in {} and holds it: on --hypervisor sim only `chaos create` and `chaos pool status` go through chaosd; stop chaosd for other commands",
                root.display()
            ));
        }
        match lock.try_lock() {
            Ok(()) => return Ok(lock),
            Err(std::fs::TryLockError::Error(e)) => return Err(shown(e)),
            Err(std::fs::TryLockError::WouldBlock) => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
        }
    }
}

/// Whether a chaosd runs on this runtime directory (it holds chaosd.lock while it runs).
fn daemon_holds(root: &std::path::Path) -> bool {
    let Ok(f) = File::open(root.join("chaosd.lock")) else {
        return false;
    };
    matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock))
}

#[derive(Debug)]
pub struct Backend {
    ts: Arc<Toolstack>,
    /// The simulated host, where it is saved, and the lock that keeps other commands out.
    sim: Option<(Arc<SimHypervisor>, PathBuf, File)>,
}

impl Backend {
    pub fn open(kind: HypervisorKind, run_dir: Option<PathBuf>) -> Result<Self, String> {
        Self::open_as(kind, run_dir, Opener::Command)
    }

    /// [`open`](Self::open) for `opener` (chaosd passes [`Opener::Daemon`]).
    pub fn open_as(
        kind: HypervisorKind,
        run_dir: Option<PathBuf>,
        opener: Opener,
    ) -> Result<Self, String> {
        match kind {
            HypervisorKind::Xen => {
                let hv = XenHypervisor::open().map_err(|e| e.to_string())?;
                let root = run_root(kind, run_dir);
                let state = StateDir::open(root).map_err(|e| e.to_string())?;
                // Connected when first needed: NoXS guests and hosts without xenstored never
                // talk to it; a Xenstore guest's creation says when it is not there.
                let xs: Option<Arc<dyn Xenstore>> = Some(Arc::new(LazyClient::default()));
                Ok(Backend {
                    ts: Arc::new(Toolstack::new(Arc::new(hv), xs, state)),
                    sim: None,
                })
            }
            HypervisorKind::Sim => {
                let root = run_root(kind, run_dir);
                let state = StateDir::open(&root).map_err(|e| e.to_string())?;
                let lock = lock_sim_host(&root, opener)?;
                let saved = root.join("sim-host.json");
                // Saved after every change, so that a killed command or chaosd loses nothing
                // it reported.
                let sim = Arc::new(
                    SimHypervisor::load_or_new(&saved, SimConfig::default())
                        .map_err(|e| e.to_string())?
                        .with_autosave(&saved),
                );
                let xs: Arc<dyn Xenstore> = Arc::new(MemStore::new());
                Ok(Backend {
                    ts: Arc::new(Toolstack::new(sim.clone(), Some(xs), state)),
                    sim: Some((sim, saved, lock)),
                })
            }
        }
    }

    pub fn toolstack(&self) -> &Toolstack {
        &self.ts
    }

    /// The toolstack, to share with threads (chaosd).
    pub fn shared(&self) -> Arc<Toolstack> {
        self.ts.clone()
    }

    /// Saves the simulated host, if that is what ran.
    pub fn close(self) -> Result<(), String> {
        if let Some((sim, path, _lock)) = &self.sim {
            sim.save(path).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}
