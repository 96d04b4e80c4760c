//! Saving and loading a simulated host, so `chaos --hypervisor sim` keeps its guests between
//! commands.

use std::path::Path;
use std::sync::Mutex;

use super::model::SimState;
use super::{SimConfig, SimHypervisor};

/// Errors saving or loading a simulated host.
#[derive(Debug, thiserror::Error)]
pub enum SimStateError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a saved simulated host: {source}")]
    Corrupt {
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

/// The p2m saved as runs of consecutive frames (gfn, mfn, count): a guest's memory is
/// populated in one go, so a 128 MiB guest is one run instead of 32768 entries.
pub(super) mod p2m_runs {
    use std::collections::HashMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(p2m: &HashMap<u64, u64>, s: S) -> Result<S::Ok, S::Error> {
        let mut pairs: Vec<(u64, u64)> = p2m.iter().map(|(g, m)| (*g, *m)).collect();
        pairs.sort_unstable();
        let mut runs: Vec<(u64, u64, u64)> = Vec::new();
        for (g, m) in pairs {
            match runs.last_mut() {
                Some((g0, m0, n)) if *g0 + *n == g && *m0 + *n == m => *n += 1,
                _ => runs.push((g, m, 1)),
            }
        }
        runs.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<HashMap<u64, u64>, D::Error> {
        let runs = Vec::<(u64, u64, u64)>::deserialize(d)?;
        let mut p2m = HashMap::new();
        for (g, m, n) in runs {
            for i in 0..n {
                p2m.insert(g + i, m + i);
            }
        }
        Ok(p2m)
    }
}

impl SimHypervisor {
    /// Loads a host saved by [`SimHypervisor::save`], or starts a new one if `path` does not
    /// exist. This is how `chaos --hypervisor sim` keeps its guests between commands.
    pub fn load_or_new(path: &Path, config: SimConfig) -> std::result::Result<Self, SimStateError> {
        let shown = path.display().to_string();
        match std::fs::read(path) {
            Ok(bytes) => {
                let mut state: SimState =
                    serde_json::from_slice(&bytes).map_err(|source| SimStateError::Corrupt {
                        path: shown,
                        source,
                    })?;
                for d in state.domains.values_mut() {
                    d.m2p = d.p2m.iter().map(|(g, m)| (*m, *g)).collect();
                }
                Ok(SimHypervisor {
                    state: Mutex::new(state),
                    exceptions: Default::default(),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::new(config)),
            Err(source) => Err(SimStateError::Io {
                path: shown,
                source,
            }),
        }
    }

    /// Saves the host (not guest memory contents) atomically.
    pub fn save(&self, path: &Path) -> std::result::Result<(), SimStateError> {
        let shown = path.display().to_string();
        let json = serde_json::to_vec(&*self.lock()).map_err(|source| SimStateError::Corrupt {
            path: shown.clone(),
            source,
        })?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, json)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|source| SimStateError::Io {
                path: shown,
                source,
            })
    }
}
