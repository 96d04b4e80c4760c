//! LightVM's JSON config format (sysml/chaos lib/h2/config.c) -> [`DomainConfig`].
//!
//! ```json
//! { "name": "g1", "kernel": "/k", "ramdisk": "/r", "cmdline": "...", "memory": 16,
//!   "vcpus": 1 | {"count": 2, "cpumap": [[2,3],[2,3]]}, "address_size": 64,
//!   "vifs": [{"ip": "10.0.0.2", "mac": "00:16:3e:00:00:01", "bridge": "xenbr0"}],
//!   "vbds": [{"target": "/srv/web.img", "type": "file", "vdev": "xvda", "access": "r"}],
//!   "paused": false, "xen": {"pvh": false, "dev_method": "xenstore" | "noxs"} }
//! ```
//! As in LightVM, unknown and duplicate keys are errors and name, kernel, memory and vcpus are
//! required. Values are checked while they are read, so every error carries line:column.

use super::error::{ConfigError, Location, Warning};
use super::validate::{check_disk, check_disks, check_ifname, check_ip, check_name};
use super::vif::parse_mac;
use super::{DiskConfig, GuestSpec, Loaded, PlaneKind, VifConfig, MAX_MEMORY_MIB, MAX_VCPUS};
use crate::hypervisor::GuestKind;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::fmt;
use std::path::PathBuf;
use xen_types::Mac;

/// Drops serde_json's " at line N column M" suffix (the position is reported separately).
fn strip_pos(msg: &str) -> &str {
    match msg.rfind(" at line ") {
        Some(i) if msg[i + 9..].contains(" column ") => &msg[..i],
        _ => msg,
    }
}

/// Reads a `T`, prefixing any error with the key.
fn keyed<'de, D: Deserializer<'de>, T: Deserialize<'de>>(key: &str, d: D) -> Result<T, D::Error> {
    T::deserialize(d)
        .map_err(|e| de::Error::custom(format!("{key}: {}", strip_pos(&e.to_string()))))
}

fn check<E: de::Error, T>(
    key: &str,
    v: T,
    f: impl FnOnce(&T) -> Result<(), String>,
) -> Result<T, E> {
    f(&v).map_err(|m| E::custom(format!("{key}: {m}")))?;
    Ok(v)
}

fn de_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    check("name", keyed::<D, String>("name", d)?, |n| check_name(n))
}

fn de_kernel<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    check("kernel", keyed::<D, String>("kernel", d)?, |k| {
        if k.is_empty() {
            Err("empty (LightVM restores a saved guest from a kernel-less config; chaos cannot yet)".into())
        } else if k.contains('\0') {
            Err("path contains a NUL character".into())
        } else {
            Ok(())
        }
    })
}

fn de_opt_string<'de, D: Deserializer<'de>>(
    key: &'static str,
    d: D,
) -> Result<Option<String>, D::Error> {
    keyed::<D, Option<String>>(key, d)
}

fn de_ramdisk<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    de_opt_string("ramdisk", d)
}

fn de_cmdline<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    de_opt_string("cmdline", d)
}

fn de_memory<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    check("memory", keyed::<D, u64>("memory", d)?, |m| {
        if *m == 0 || *m > MAX_MEMORY_MIB {
            Err(format!(
                "{m} MiB is out of range (1 to {MAX_MEMORY_MIB} MiB)"
            ))
        } else {
            Ok(())
        }
    })
}

fn de_address_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    check(
        "address_size",
        keyed::<D, Option<u64>>("address_size", d)?,
        |a| match a {
            None | Some(64) => Ok(()),
            Some(32) => Err("32-bit guests are not supported by chaos (64 only)".into()),
            Some(n) => Err(format!(
                "{n} is not an address size (64 is the only one supported)"
            )),
        },
    )
}

/// LightVM's `vbds`: `[{"target": PATH, "type": "phy" | "file", "vdev": "xvda", "access":
/// "r" | "w"}]`. The type says nothing chaos needs (xendevd looks at the target, as the
/// `block` script does); vdev and target are checked as xl's are.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a vbd object {\"target\", \"type\", \"vdev\", \"access\"}"
)]
struct JsonVbd {
    target: String,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    vdev: String,
    #[serde(default)]
    access: Option<String>,
}

fn de_vbds<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<DiskConfig>, D::Error> {
    let vbds: Option<Vec<JsonVbd>> = keyed("vbds", d)?;
    let mut disks = Vec::new();
    for (i, v) in vbds.unwrap_or_default().into_iter().enumerate() {
        let fail = |m: String| de::Error::custom(format!("vbds[{i}]: {m}"));
        match v.kind.as_deref() {
            None | Some("phy") | Some("file") => {}
            Some(other) => {
                return Err(fail(format!(
                    "type {other:?}: expected \"phy\" or \"file\""
                )))
            }
        }
        let readonly = match v.access.as_deref() {
            None | Some("w") | Some("rw") => false,
            Some("r") | Some("ro") => true,
            Some(other) => return Err(fail(format!("access {other:?}: expected \"r\" or \"w\""))),
        };
        let disk = DiskConfig {
            readonly,
            ..DiskConfig::new(v.target, v.vdev)
        };
        check_disk(&disk).map_err(fail)?;
        disks.push(disk);
    }
    check_disks(&disks).map_err(|m| de::Error::custom(format!("vbds: {m}")))?;
    Ok(disks)
}

fn de_paused<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    keyed("paused", d)
}

fn de_pvh<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    keyed("xen.pvh", d)
}

fn de_dev_method<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PlaneKind>, D::Error> {
    match keyed::<D, Option<String>>("xen.dev_method", d)? {
        None => Ok(None),
        Some(s) => PlaneKind::from_name(&s).map(Some).ok_or_else(|| {
            de::Error::custom(format!(
                "xen.dev_method: unknown method {s:?} (expected \"xenstore\" or \"noxs\")"
            ))
        }),
    }
}

fn de_mac<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Mac>, D::Error> {
    match keyed::<D, Option<String>>("vifs.mac", d)? {
        None => Ok(None),
        Some(s) => parse_mac(&s)
            .map(Some)
            .map_err(|m| de::Error::custom(format!("vifs.mac: {m}"))),
    }
}

fn de_ip<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let ip: Option<String> = keyed("vifs.ip", d)?;
    if let Some(s) = &ip {
        check_ip(s).map_err(|m| de::Error::custom(format!("vifs.ip: {m}")))?;
    }
    Ok(ip)
}

fn de_bridge<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let b: Option<String> = keyed("vifs.bridge", d)?;
    if let Some(s) = &b {
        check_ifname("bridge", s).map_err(|m| de::Error::custom(format!("vifs.bridge: {m}")))?;
    }
    Ok(b)
}

fn de_vifs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<JsonVif>, D::Error> {
    let vifs = Option::<Vec<MapOnly<JsonVif>>>::deserialize(d)?;
    Ok(vifs.unwrap_or_default().into_iter().map(|v| v.0).collect())
}

fn de_xen<'de, D: Deserializer<'de>>(d: D) -> Result<Option<JsonXen>, D::Error> {
    Ok(Option::<MapOnly<JsonXen>>::deserialize(d)?.map(|x| x.0))
}

/// A struct read from a JSON object only (serde's derive would also take an array, by position).
struct MapOnly<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for MapOnly<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData)).map(MapOnly)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a LightVM config object")]
struct JsonConfig {
    #[serde(deserialize_with = "de_name")]
    name: String,
    #[serde(deserialize_with = "de_kernel")]
    kernel: String,
    #[serde(default, deserialize_with = "de_ramdisk")]
    ramdisk: Option<String>,
    #[serde(default, deserialize_with = "de_cmdline")]
    cmdline: Option<String>,
    #[serde(deserialize_with = "de_memory")]
    memory: u64,
    vcpus: JsonVcpus,
    #[serde(default, deserialize_with = "de_address_size")]
    #[allow(dead_code)] // validated while read; 64 is the only value
    address_size: Option<u64>,
    #[serde(default, deserialize_with = "de_vifs")]
    vifs: Vec<JsonVif>,
    #[serde(default, deserialize_with = "de_vbds")]
    vbds: Vec<DiskConfig>,
    #[serde(default, deserialize_with = "de_paused")]
    paused: Option<bool>,
    #[serde(default, deserialize_with = "de_xen")]
    xen: Option<JsonXen>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a vif object {\"ip\", \"mac\", \"bridge\"}"
)]
struct JsonVif {
    #[serde(default, deserialize_with = "de_ip")]
    ip: Option<String>,
    #[serde(default, deserialize_with = "de_mac")]
    mac: Option<Mac>,
    #[serde(default, deserialize_with = "de_bridge")]
    bridge: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "an object {\"pvh\", \"dev_method\"}")]
struct JsonXen {
    #[serde(default, deserialize_with = "de_pvh")]
    pvh: Option<bool>,
    #[serde(default, deserialize_with = "de_dev_method")]
    dev_method: Option<PlaneKind>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "an object {\"count\", \"cpumap\"}")]
struct JsonVcpusObject {
    #[serde(deserialize_with = "de_count")]
    count: u32,
    #[serde(default)]
    cpumap: Option<Vec<Vec<u32>>>,
}

fn de_count<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n: u64 = keyed("vcpus.count", d)?;
    vcpu_count(n).map_err(|m| de::Error::custom(format!("vcpus.count: {m}")))
}

fn vcpu_count(n: u64) -> Result<u32, String> {
    if n == 0 || n > u64::from(MAX_VCPUS) {
        return Err(format!("{n} is out of range (1 to {MAX_VCPUS})"));
    }
    Ok(n as u32)
}

/// `vcpus`: a count, or `{"count": N, "cpumap": [[cpu, ..], ..]}`.
struct JsonVcpus {
    count: u32,
    cpumap: bool,
}

impl<'de> Deserialize<'de> for JsonVcpus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = JsonVcpus;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("vcpus: a count or {\"count\": N, \"cpumap\": [[cpu, ...], ...]}")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<JsonVcpus, E> {
                let count = vcpu_count(n).map_err(|m| E::custom(format!("vcpus: {m}")))?;
                Ok(JsonVcpus {
                    count,
                    cpumap: false,
                })
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<JsonVcpus, E> {
                Err(E::custom(format!(
                    "vcpus: {n} is out of range (1 to {MAX_VCPUS})"
                )))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<JsonVcpus, A::Error> {
                let o = JsonVcpusObject::deserialize(de::value::MapAccessDeserializer::new(map))?;
                if let Some(m) = &o.cpumap {
                    if m.len() > o.count as usize {
                        return Err(de::Error::custom(format!(
                            "vcpus.cpumap: {} entries for {} vcpus",
                            m.len(),
                            o.count
                        )));
                    }
                }
                Ok(JsonVcpus {
                    count: o.count,
                    cpumap: o.cpumap.is_some(),
                })
            }
        }
        d.deserialize_any(V)
    }
}

pub(crate) fn parse(text: &str, source: &str) -> Result<Loaded, ConfigError> {
    let j: MapOnly<JsonConfig> = serde_json::from_str(text).map_err(|e| ConfigError::Json {
        at: Location::File {
            source: source.to_string(),
            line: u32::try_from(e.line()).ok(),
            column: u32::try_from(e.column()).ok(),
        },
        message: strip_pos(&e.to_string()).to_string(),
    })?;
    let j = j.0;
    let mut warnings = Vec::new();
    if j.vcpus.cpumap {
        warnings.push(Warning {
            at: Location::file(source),
            key: "vcpus.cpumap".into(),
            message: "ignored (chaos does not pin vcpus yet)".into(),
        });
    }
    let xen = j.xen.unwrap_or(JsonXen {
        pvh: None,
        dev_method: None,
    });
    let vifs = j
        .vifs
        .into_iter()
        .map(|v| VifConfig {
            mac: v.mac,
            bridge: v
                .bridge
                .unwrap_or_else(|| super::DEFAULT_BRIDGE.to_string()),
            ip: v.ip,
            ..VifConfig::default()
        })
        .collect();
    let mut spec = GuestSpec::new(j.name, j.kernel);
    spec.kind = if xen.pvh.unwrap_or(false) {
        GuestKind::Pvh
    } else {
        GuestKind::Pv
    };
    spec.ramdisk = j.ramdisk.filter(|r| !r.is_empty()).map(PathBuf::from);
    spec.cmdline = j.cmdline.unwrap_or_default();
    spec.memory_mib = j.memory;
    spec.maxmem_mib = j.memory;
    spec.vcpus = j.vcpus.count;
    spec.max_vcpus = j.vcpus.count;
    spec.vifs = vifs;
    spec.disks = j.vbds;
    spec.control_plane = xen.dev_method.unwrap_or(PlaneKind::Xenstore);
    spec.paused = j.paused.unwrap_or(false);
    let config = spec.validate_at(&Location::file(source))?;
    Ok(Loaded { config, warnings })
}
