//! vif specs (`'mac=00:16:3e:01:02:03,bridge=xenbr0'`) and MAC addresses as xl writes them.

use super::validate::{check_ifname, check_ip};
use super::VifConfig;
use xen_types::Mac;

/// Parses a MAC written `xx:xx:xx:xx:xx:xx` (hex). It must be a unicast, non-zero address: a
/// multicast source address would make the guest's frames undeliverable.
pub fn parse_mac(s: &str) -> Result<Mac, String> {
    let mac = s
        .parse::<Mac>()
        .map_err(|_| format!("invalid MAC address {s:?} (expected xx:xx:xx:xx:xx:xx in hex)"))?;
    mac.check().map_err(|e| format!("MAC address {s} is {e}"))?;
    Ok(mac)
}

/// Result of one vif spec: the vif and notes about ignored options.
#[derive(Debug)]
pub struct ParsedVif {
    pub vif: VifConfig,
    pub warnings: Vec<String>,
}

/// Parses one xl vif spec (comma-separated `key=value`; an empty spec is a default vif).
/// `index` is the vif's position, which chaos uses as its devid.
pub fn parse_vif_spec(spec: &str, index: usize) -> Result<ParsedVif, String> {
    let mut vif = VifConfig::default();
    let mut warnings = Vec::new();
    // xl splits with strtok (empty items vanish) and skips leading spaces.
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((key, value)) = item.split_once('=') else {
            match item {
                "trusted" | "untrusted" => {
                    warnings.push(format!(
                        "'{item}' ignored (chaos does not mark vifs trusted)"
                    ));
                    continue;
                }
                _ => return Err(format!("'{item}': expected key=value")),
            }
        };
        let (key, value) = (key.trim(), value.trim());
        let some = |v: &str| Some(v.to_string());
        match key {
            "mac" => vif.mac = Some(parse_mac(value)?),
            "bridge" => {
                check_ifname("bridge", value)?;
                vif.bridge = value.to_string();
            }
            "ip" => {
                check_ip(value)?;
                vif.ip = some(value);
            }
            "vifname" => {
                check_ifname("vifname", value)?;
                vif.vifname = some(value);
            }
            "script" => {
                if value.is_empty() {
                    return Err("script: empty".into());
                }
                vif.script = some(value);
            }
            "backend" => {
                if value.is_empty() {
                    return Err("backend: empty".into());
                }
                vif.backend = some(value);
            }
            "type" => match value {
                "vif" => {}
                "ioemu" => warnings.push("type=ioemu only matters for HVM guests; treated as type=vif".into()),
                _ => return Err(format!("type={value}: expected 'vif' or 'ioemu'")),
            },
            "devid" => match value.parse::<usize>() {
                Ok(d) if d == index => {}
                Ok(d) => {
                    return Err(format!(
                        "devid={d}: chaos numbers vifs by their position in the list (this one is {index})"
                    ))
                }
                Err(_) => return Err(format!("devid={value}: expected a number")),
            },
            "model" => warnings.push(format!("model={value} ignored (emulated NIC models are for HVM guests)")),
            "rate" => warnings.push(format!("rate={value} ignored (chaos does not rate-limit vifs yet)")),
            "gatewaydev" | "netdev" => {
                warnings.push(format!("{key}={value} ignored (used by the vif-route/vif-nat scripts only)"))
            }
            "mtu" => warnings.push(format!("mtu={value} ignored (chaos leaves the MTU at the backend's default)")),
            "vlan" => warnings.push(format!("vlan={value} ignored (Open vSwitch VLANs are not supported yet)")),
            "accel" => warnings.push(format!("accel={value} ignored (not supported by xl either)")),
            k if k == "forwarddev" || k.starts_with("colo_") => {
                warnings.push(format!("{k} ignored (COLO fault tolerance is not supported)"))
            }
            _ => {
                return Err(format!(
                    "unknown vif option '{key}' (known: mac, bridge, ip, vifname, script, backend, type, devid, model, rate, gatewaydev, mtu, vlan)"
                ))
            }
        }
    }
    Ok(ParsedVif { vif, warnings })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        assert_eq!(
            parse_mac("00:16:3e:0A:ff:01").unwrap(),
            Mac([0, 0x16, 0x3e, 0x0a, 0xff, 1])
        );
        assert_eq!(
            Mac([0, 0x16, 0x3e, 0x0a, 0xff, 1]).to_string(),
            "00:16:3e:0a:ff:01"
        );
        for bad in [
            "",
            "00:16:3e:0a:ff",
            "00:16:3e:0a:ff:01:02",
            "0:16:3e:0a:ff:01",
            "00-16-3e-0a-ff-01",
            "zz:16:3e:0a:ff:01",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad}");
        }
        assert!(parse_mac("01:00:5e:00:00:01")
            .unwrap_err()
            .contains("multicast"));
        assert!(parse_mac("00:00:00:00:00:00").is_err());
    }

    #[test]
    fn specs() {
        let v = parse_vif_spec("", 0).unwrap().vif;
        assert_eq!(v, VifConfig::default());
        let p = parse_vif_spec(" mac=00:16:3e:00:00:01, bridge=br0,ip=10.0.0.2 ,vifname=web0,script=vif-bridge,backend=netvm,devid=1,rate=10Mb/s", 1)
            .unwrap();
        assert_eq!(p.vif.mac, Some(Mac([0, 0x16, 0x3e, 0, 0, 1])));
        assert_eq!(p.vif.bridge, "br0");
        assert_eq!(p.vif.ip.as_deref(), Some("10.0.0.2"));
        assert_eq!(p.vif.vifname.as_deref(), Some("web0"));
        assert_eq!(p.vif.script.as_deref(), Some("vif-bridge"));
        assert_eq!(p.vif.backend.as_deref(), Some("netvm"));
        assert_eq!(p.warnings.len(), 1);
        assert!(parse_vif_spec("devid=3", 0)
            .unwrap_err()
            .contains("position"));
        assert!(parse_vif_spec("brigde=xenbr0", 0)
            .unwrap_err()
            .contains("unknown vif option 'brigde'"));
        assert!(parse_vif_spec("bridge=averyveryverylongname", 0).is_err());
        assert!(parse_vif_spec("ip=10.0.0.300", 0).is_err());
        assert!(parse_vif_spec("ip=10.0.0.1/24 fe80::1", 0).is_ok());
        assert!(parse_vif_spec("mac", 0).is_err());
    }
}
