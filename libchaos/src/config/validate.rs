//! The one owner of a guest configuration's rules. [`check`] is what turns a
//! [`GuestSpec`] into a [`DomainConfig`](super::DomainConfig); the parsers call the single
//! checks below as they read, so that their errors also carry the line of the key.

use std::collections::HashMap;
use std::net::IpAddr;

use super::error::{ConfigError, Location};
use super::types::{DiskConfig, GuestSpec, VifConfig, MAX_MEMORY_MIB, MAX_VCPUS};
use crate::config::PlaneKind;

/// The longest command line a guest can be given: start_info holds 1024 bytes, NUL included
/// (MAX_GUEST_CMDLINE).
pub const MAX_CMDLINE: usize = 1023;
/// Longest domain name: what xl and Xenstore accept.
pub const MAX_NAME: usize = 255;
/// Devices a NoXS device page lists: 32 slots, one of them the sysctl device.
pub const MAX_NOXS_VIFS: usize = noxs::DEV_COUNT_MAX - 1;

/// A rule a spec broke: the key, and what is wrong with its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub key: &'static str,
    pub message: String,
}

impl Invalid {
    fn new(key: &'static str, message: impl Into<String>) -> Invalid {
        Invalid {
            key,
            message: message.into(),
        }
    }

    /// The error for a spec that came from `at`.
    pub fn at(self, at: Location) -> ConfigError {
        ConfigError::Invalid {
            at,
            key: self.key.to_string(),
            message: self.message,
        }
    }
}

/// Every rule, in the order a reader of the config meets the keys.
pub fn check(s: &GuestSpec) -> Result<(), Invalid> {
    check_name(&s.name).map_err(|m| Invalid::new("name", m))?;
    check_path(&s.kernel.to_string_lossy()).map_err(|m| Invalid::new("kernel", m))?;
    if let Some(r) = &s.ramdisk {
        check_path(&r.to_string_lossy()).map_err(|m| Invalid::new("ramdisk", m))?;
    }
    check_cmdline(&s.cmdline).map_err(|m| Invalid::new("cmdline", m))?;
    check_memory(s.memory_mib).map_err(|m| Invalid::new("memory", m))?;
    check_memory(s.maxmem_mib).map_err(|m| Invalid::new("maxmem", m))?;
    if s.maxmem_mib < s.memory_mib {
        return Err(Invalid::new(
            "maxmem",
            format!(
                "{} MiB is less than memory ({} MiB)",
                s.maxmem_mib, s.memory_mib
            ),
        ));
    }
    check_vcpus(s.vcpus.into()).map_err(|m| Invalid::new("vcpus", m))?;
    check_vcpus(s.max_vcpus.into()).map_err(|m| Invalid::new("maxvcpus", m))?;
    if s.max_vcpus < s.vcpus {
        return Err(Invalid::new(
            "maxvcpus",
            format!("{} is less than vcpus ({})", s.max_vcpus, s.vcpus),
        ));
    }
    for (i, vif) in s.vifs.iter().enumerate() {
        check_vif(vif).map_err(|m| Invalid::new("vif", format!("vif {i}: {m}")))?;
    }
    if s.control_plane == PlaneKind::Noxs && s.vifs.len() > MAX_NOXS_VIFS {
        return Err(Invalid::new(
            "vif",
            format!(
                "{} vifs: a NoXS guest's device page lists at most {MAX_NOXS_VIFS}",
                s.vifs.len()
            ),
        ));
    }
    check_disks(&s.disks).map_err(|m| Invalid::new("disk", m))?;
    Ok(())
}

/// Every disk, and no two the guest would see as the same device.
pub fn check_disks(disks: &[DiskConfig]) -> Result<(), String> {
    let mut seen: HashMap<u32, usize> = HashMap::new();
    for (i, d) in disks.iter().enumerate() {
        let devid = check_disk(d).map_err(|m| format!("disk {i}: {m}"))?;
        if let Some(first) = seen.insert(devid, i) {
            return Err(format!(
                "disk {i}: vdev {} is the same device ({devid}) as disk {first}'s ({})",
                d.vdev, disks[first].vdev
            ));
        }
    }
    Ok(())
}

/// One disk: an absolute target without control characters (it goes to Xenstore and to
/// xendevd as a path; a target a script interprets is recorded as written), a vdev libxl can
/// number, and the names recorded for tools. Returns the disk's number.
pub fn check_disk(d: &DiskConfig) -> Result<u32, String> {
    let target = d.target.to_str().ok_or("target: not valid UTF-8")?;
    if target.is_empty() {
        return Err("target: empty".into());
    }
    if target.chars().any(char::is_control) {
        return Err(format!("target {target:?}: contains control characters"));
    }
    if d.script.is_none() && !target.starts_with('/') {
        return Err(format!("target {target:?}: not an absolute path"));
    }
    let devid = d.devid().ok_or_else(|| {
        format!(
            "vdev {:?}: not a virtual disk name (xvdX[N], hdX[N], sdX[N], dNpN or a number, as in xen-vbd-interface(7))",
            d.vdev
        )
    })?;
    for (key, value) in [("script", &d.script), ("backend", &d.backend)] {
        match value.as_deref() {
            Some("") => return Err(format!("{key}: empty")),
            Some(s) if s.chars().any(char::is_control) => {
                return Err(format!("{key}: {s:?} contains control characters"))
            }
            _ => {}
        }
    }
    Ok(devid)
}

/// Domain names: what xl and Xenstore accept, minus what breaks paths and terminals.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > MAX_NAME {
        return Err(format!("{} bytes is too long (max {MAX_NAME})", name.len()));
    }
    if name.contains('/') {
        return Err(format!("{name:?} must not contain '/'"));
    }
    if name.chars().any(char::is_control) {
        return Err(format!("{name:?} must not contain control characters"));
    }
    if name == "Domain-0" {
        return Err("\"Domain-0\" is the control domain's name".into());
    }
    Ok(())
}

/// Kernel and ramdisk paths.
pub fn check_path(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("empty path".into());
    }
    if p.contains('\0') {
        return Err("path contains a NUL character".into());
    }
    Ok(())
}

pub fn check_cmdline(c: &str) -> Result<(), String> {
    if c.len() > MAX_CMDLINE {
        return Err(format!(
            "{} bytes is too long (a guest's command line holds at most {MAX_CMDLINE})",
            c.len()
        ));
    }
    if c.contains('\0') {
        return Err("contains a NUL character".into());
    }
    Ok(())
}

pub fn check_memory(mib: u64) -> Result<(), String> {
    if mib == 0 || mib > MAX_MEMORY_MIB {
        return Err(format!(
            "{mib} MiB is out of range (1 MiB to {MAX_MEMORY_MIB} MiB)"
        ));
    }
    Ok(())
}

pub fn check_vcpus(n: u64) -> Result<(), String> {
    if n == 0 || n > u64::from(MAX_VCPUS) {
        return Err(format!("{n} is out of range (1 to {MAX_VCPUS})"));
    }
    Ok(())
}

/// One vif: its MAC (unicast, not zero), bridge and vifname (interface names), addresses and
/// the strings recorded for tools.
pub fn check_vif(v: &VifConfig) -> Result<(), String> {
    if let Some(mac) = &v.mac {
        mac.check()
            .map_err(|e| format!("MAC address {mac} is {e}"))?;
    }
    check_ifname("bridge", &v.bridge)?;
    if let Some(ip) = &v.ip {
        check_ip(ip)?;
    }
    if let Some(name) = &v.vifname {
        check_ifname("vifname", name)?;
    }
    for (key, value) in [("script", &v.script), ("backend", &v.backend)] {
        match value.as_deref() {
            Some("") => return Err(format!("{key}: empty")),
            Some(s) if s.contains('\0') || s.chars().any(char::is_control) => {
                return Err(format!("{key}: {s:?} contains control characters"))
            }
            _ => {}
        }
    }
    Ok(())
}

/// A Linux network interface name (bridge or vif), with `what` naming the option.
pub fn check_ifname(what: &str, s: &str) -> Result<(), String> {
    xen_types::check_ifname(s).map_err(|e| format!("{what} {s:?}: {e}"))
}

/// `ip=`: one or more addresses separated by spaces (xl passes them to the hotplug script),
/// each IPv4 or IPv6, optionally with a /prefix.
pub fn check_ip(s: &str) -> Result<(), String> {
    let mut n = 0;
    for part in s.split_whitespace() {
        n += 1;
        let (addr, prefix) = match part.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (part, None),
        };
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| format!("invalid IP address {part:?}"))?;
        if let Some(p) = prefix {
            let max = if ip.is_ipv4() { 32 } else { 128 };
            match p.parse::<u8>() {
                Ok(len) if len <= max => {}
                _ => return Err(format!("invalid prefix length in {part:?}")),
            }
        }
    }
    if n == 0 {
        return Err("empty IP address".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GuestSpec;

    #[test]
    fn names() {
        assert!(check_name("web-1.example").is_ok());
        assert!(check_name(&"n".repeat(255)).is_ok());
        for bad in ["", "a/b", "a\u{1b}b", "a\tb", "Domain-0", &"n".repeat(256)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_spec_breaking_a_rule_names_the_key() {
        let ok = GuestSpec::new("g", "/k");
        assert_eq!(check(&ok), Ok(()));
        let bad = |f: &dyn Fn(&mut GuestSpec)| {
            let mut s = ok.clone();
            f(&mut s);
            check(&s).unwrap_err().key
        };
        assert_eq!(bad(&|s| s.name = "Domain-0".into()), "name");
        assert_eq!(bad(&|s| s.memory_mib = 0), "memory");
        assert_eq!(bad(&|s| s.maxmem_mib = 16), "maxmem");
        assert_eq!(bad(&|s| s.vcpus = 129), "vcpus");
        assert_eq!(bad(&|s| s.max_vcpus = 0), "maxvcpus");
        assert_eq!(bad(&|s| s.cmdline = "x".repeat(1024)), "cmdline");
        assert_eq!(bad(&|s| s.kernel = "".into()), "kernel");
        assert_eq!(
            bad(&|s| s.vifs = vec![VifConfig {
                bridge: String::new(),
                ..VifConfig::default()
            }]),
            "vif"
        );
        assert_eq!(
            bad(&|s| s.vifs = vec![VifConfig {
                mac: Some(xen_types::Mac([1, 0, 0x5e, 0, 0, 1])),
                ..VifConfig::default()
            }]),
            "vif"
        );
        assert_eq!(
            bad(&|s| {
                s.control_plane = PlaneKind::Noxs;
                s.vifs = vec![VifConfig::default(); 32];
            }),
            "vif"
        );
    }

    #[test]
    fn disks() {
        let ok = |disks: Vec<DiskConfig>| check_disks(&disks);
        assert!(ok(vec![
            DiskConfig::new("/a", "xvda"),
            DiskConfig::new("/a", "xvdb")
        ])
        .is_ok());
        let same = ok(vec![
            DiskConfig::new("/a", "xvda"),
            DiskConfig::new("/b", "51712"),
        ]);
        assert_eq!(
            same.unwrap_err(),
            "disk 1: vdev 51712 is the same device (51712) as disk 0's (xvda)"
        );
        for (d, want) in [
            (DiskConfig::new("rel/img", "xvda"), "not an absolute path"),
            (DiskConfig::new("", "xvda"), "target: empty"),
            (DiskConfig::new("/a\nb", "xvda"), "control characters"),
            (DiskConfig::new("/a", "xvd"), "vdev \"xvd\""),
            (
                DiskConfig {
                    script: Some(String::new()),
                    ..DiskConfig::new("/a", "xvda")
                },
                "script: empty",
            ),
        ] {
            let e = ok(vec![d]).unwrap_err();
            assert!(e.starts_with("disk 0: ") && e.contains(want), "{e}");
        }
        // A target a script interprets need not be a path.
        let scripted = DiskConfig {
            script: Some("block-nbd".into()),
            ..DiskConfig::new("host:1234", "xvda")
        };
        assert!(ok(vec![scripted]).is_ok());
        let mut s = GuestSpec::new("g", "/k");
        s.disks = vec![DiskConfig::new("/a", "xvdz9")];
        assert!(check(&s).is_ok());
        s.disks.push(DiskConfig::new("/a", "xvdz9"));
        assert_eq!(check(&s).unwrap_err().key, "disk");
    }

    #[test]
    fn ips() {
        assert!(check_ip("10.0.0.1/24 fe80::1").is_ok());
        for bad in ["10.0.0.300", "", "10.0.0.1/33", "fe80::1/129", "x"] {
            assert!(check_ip(bad).is_err(), "{bad:?}");
        }
    }
}
