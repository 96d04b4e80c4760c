//! What chaosd keeps ready: flavors and their target counts, from `--flavor` specs or a JSON
//! config file.
//!
//! A spec is `KEY=VALUE,...` with `count` and either the flavor's parts
//! (`memory=4,vcpus=1[,maxmem=8][,type=pv][,control_plane=xenstore]`) or `config=FILE`, the
//! flavor of an xl.cfg file; `config=FILE,warm=1` keeps warm shells, with that file's kernel
//! (and ramdisk) already loaded and built in them (PV). The config file holds the same as JSON
//! (`"warm": true`):
//!
//! ```json
//! {"reserve_mib": 256, "workers": 2,
//!  "flavors": [{"memory": 4, "vcpus": 1, "count": 20}, {"config": "/etc/chaos/web.cfg", "count": 5}]}
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::PlaneKind;
use crate::hypervisor::GuestKind;
use crate::toolstack::{FinishAhead, Flavor};

/// Most shells one flavor may ask for (a typo guard, not a Xen limit).
pub const MAX_TARGET: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum FlavorError {
    #[error("flavor {spec:?}: {message}")]
    Spec { spec: String, message: String },
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
}

/// A flavor and how many ready shells of it to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlavorTarget {
    pub flavor: Flavor,
    pub target: usize,
    /// A warm flavor's shells are finished ahead for its config's guests.
    pub ahead: Option<FinishAhead>,
}

/// The daemon settings a config file can hold (flags override them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileSettings {
    pub flavors: Vec<FlavorTarget>,
    pub reserve_mib: Option<u64>,
    pub workers: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileJson {
    #[serde(default)]
    flavors: Vec<FlavorJson>,
    reserve_mib: Option<u64>,
    workers: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FlavorJson {
    count: usize,
    memory: Option<u64>,
    maxmem: Option<u64>,
    vcpus: Option<u32>,
    #[serde(rename = "type")]
    kind: Option<String>,
    control_plane: Option<String>,
    config: Option<PathBuf>,
    /// Warm shells: the config's kernel (and ramdisk) already loaded in them.
    #[serde(default)]
    warm: bool,
}

impl FlavorJson {
    fn into_target(self) -> Result<FlavorTarget, String> {
        let mut ahead = None;
        let flavor = match self.config {
            Some(path) => {
                if self.memory.is_some() || self.maxmem.is_some() || self.vcpus.is_some() {
                    return Err("give either config or memory/maxmem/vcpus, not both".into());
                }
                let (flavor, finish) = flavor_of_file(&path, self.warm)?;
                ahead = finish;
                flavor
            }
            None if self.warm => {
                return Err("warm needs config=FILE (the shells load its kernel)".into());
            }
            None => {
                let memory = self.memory.ok_or("memory (MiB) is required")?;
                let kind = match self.kind.as_deref() {
                    None | Some("pv") => GuestKind::Pv,
                    Some("pvh") => GuestKind::Pvh,
                    Some(other) => return Err(format!("type {other:?}: expected pv or pvh")),
                };
                let control_plane = match self.control_plane.as_deref() {
                    None | Some("xenstore") => PlaneKind::Xenstore,
                    Some("noxs") => PlaneKind::Noxs,
                    Some(other) => {
                        return Err(format!(
                            "control_plane {other:?}: expected xenstore or noxs"
                        ))
                    }
                };
                Flavor {
                    kind,
                    memory_mib: memory,
                    maxmem_mib: self.maxmem.unwrap_or(memory),
                    max_vcpus: self.vcpus.unwrap_or(1),
                    control_plane,
                    image: None,
                }
            }
        };
        check(&flavor)?;
        if self.count > MAX_TARGET {
            return Err(format!("count {} is above {MAX_TARGET}", self.count));
        }
        Ok(FlavorTarget {
            flavor,
            target: self.count,
            ahead,
        })
    }
}

/// The flavor of a config file; for warm shells also what they are finished ahead with.
fn flavor_of_file(path: &Path, warm: bool) -> Result<(Flavor, Option<FinishAhead>), String> {
    let loaded = crate::config::load(path, &[]).map_err(|e| e.to_string())?;
    if !warm {
        return Ok((Flavor::of(&loaded.config), None));
    }
    let mut flavor =
        Flavor::warm_of(&loaded.config).ok_or_else(|| "warm: PV guests only".to_string())?;
    // Clients send absolute paths (chaos makes them so): a warm shell matches only those.
    if let Some(w) = flavor.image.as_mut() {
        let absolute =
            |p: &Path| std::path::absolute(p).map_err(|e| format!("warm: {}: {e}", p.display()));
        w.kernel = absolute(&w.kernel)?;
        if let Some(r) = w.ramdisk.as_mut() {
            *r = absolute(r)?;
        }
    }
    Ok((flavor, FinishAhead::of(&loaded.config)))
}

/// Refuses flavors whose shells could never become guests (the config rules, from
/// config::validate, and what chaos can build).
fn check(f: &Flavor) -> Result<(), String> {
    use crate::config::validate::{check_memory, check_vcpus};
    check_memory(f.memory_mib).map_err(|m| format!("memory: {m}"))?;
    check_memory(f.maxmem_mib).map_err(|m| format!("maxmem: {m}"))?;
    if f.maxmem_mib < f.memory_mib {
        return Err(format!(
            "maxmem {} MiB is less than memory ({} MiB)",
            f.maxmem_mib, f.memory_mib
        ));
    }
    check_vcpus(f.max_vcpus.into()).map_err(|m| format!("vcpus: {m}"))?;
    Ok(())
}

/// Parses one `--flavor` spec, e.g. `memory=4,vcpus=1,count=20` or `config=noop.cfg,count=8`.
pub fn parse_spec(spec: &str) -> Result<FlavorTarget, FlavorError> {
    let err = |message: String| FlavorError::Spec {
        spec: spec.to_string(),
        message,
    };
    let mut json = serde_json::Map::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| err(format!("{part:?}: expected KEY=VALUE")))?;
        let value = match key {
            "count" | "memory" | "maxmem" | "vcpus" => {
                let n: u64 = value
                    .parse()
                    .map_err(|_| err(format!("{key}={value:?}: expected a number")))?;
                serde_json::Value::from(n)
            }
            "type" | "control_plane" | "config" => serde_json::Value::from(value),
            "warm" => match value {
                "1" | "true" | "yes" => serde_json::Value::from(true),
                "0" | "false" | "no" => serde_json::Value::from(false),
                _ => return Err(err(format!("warm={value:?}: expected 1 or 0"))),
            },
            _ => {
                return Err(err(format!(
                    "unknown key {key:?} (expected count, memory, maxmem, vcpus, type, control_plane, config or warm)"
                )))
            }
        };
        if json.insert(key.to_string(), value).is_some() {
            return Err(err(format!("{key} given twice")));
        }
    }
    let parsed: FlavorJson =
        serde_json::from_value(serde_json::Value::Object(json)).map_err(|e| err(e.to_string()))?;
    parsed.into_target().map_err(err)
}

/// Reads a chaosd config file (JSON, see the module docs).
pub fn load_file(path: &Path) -> Result<FileSettings, FlavorError> {
    let err = |message: String| FlavorError::File {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let parsed: FileJson = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
    let mut flavors = Vec::with_capacity(parsed.flavors.len());
    for (i, f) in parsed.flavors.into_iter().enumerate() {
        flavors.push(
            f.into_target()
                .map_err(|m| err(format!("flavors[{i}]: {m}")))?,
        );
    }
    Ok(FileSettings {
        flavors,
        reserve_mib: parsed.reserve_mib,
        workers: parsed.workers,
    })
}
