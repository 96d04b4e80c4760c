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
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum HypervisorKind {
    Xen,
    Sim,
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

#[derive(Debug)]
pub struct Backend {
    ts: Arc<Toolstack>,
    /// The simulated host, where it is saved, and the lock that keeps other commands out.
    sim: Option<(Arc<SimHypervisor>, PathBuf, File)>,
}

impl Backend {
    pub fn open(kind: HypervisorKind, run_dir: Option<PathBuf>) -> Result<Self, String> {
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
                let lock_path = root.join("sim.lock");
                let lock = File::create(&lock_path)
                    .and_then(|f| f.lock().map(|()| f))
                    .map_err(|e| format!("{}: {e}", lock_path.display()))?;
                let saved = root.join("sim-host.json");
                let sim = Arc::new(
                    SimHypervisor::load_or_new(&saved, SimConfig::default())
                        .map_err(|e| e.to_string())?,
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
