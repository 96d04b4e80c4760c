//! LightVM JSON configs through the public API.

use libchaos::config::{parse_json, ConfigError, Location, PlaneKind, VifConfig};
use libchaos::hypervisor::GuestKind;
use std::path::PathBuf;

fn err(text: &str) -> String {
    match parse_json(text, "g.json") {
        Ok(l) => panic!("accepted: {:?}", l.config),
        Err(e) => {
            assert!(
                matches!(
                    e,
                    ConfigError::Json {
                        at: Location::File {
                            line: Some(_),
                            column: Some(_),
                            ..
                        },
                        ..
                    }
                ),
                "{e:?}"
            );
            e.to_string()
        }
    }
}

const BASE: &str = r#""name": "g", "kernel": "/k", "memory": 16, "vcpus": 1"#;

#[test]
fn full_lightvm_config() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/guest.json"
    ))
    .unwrap();
    let l = parse_json(&text, "guest.json").unwrap();
    let c = l.config;
    assert_eq!(c.name, "lightvm-1");
    assert_eq!(c.kernel, PathBuf::from("/root/daytime.gz"));
    assert_eq!(c.ramdisk, None);
    assert_eq!(c.cmdline, "-- verbose");
    assert_eq!((c.memory_mib, c.maxmem_mib), (8, 8));
    assert_eq!((c.vcpus, c.max_vcpus), (2, 2));
    assert_eq!(c.kind, GuestKind::Pv);
    assert_eq!(c.control_plane, PlaneKind::Noxs);
    assert!(c.paused);
    assert_eq!(
        c.vifs,
        vec![VifConfig {
            mac: Some(xen_types::Mac([0xde, 0xad, 0xbe, 0xef, 0, 2])),
            bridge: "xenbr".into(),
            ip: Some("10.128.0.2".into()),
            ..VifConfig::default()
        }]
    );
    assert_eq!(l.warnings.len(), 1);
    assert_eq!(
        l.warnings[0].to_string(),
        "guest.json: warning: vcpus.cpumap: ignored (chaos does not pin vcpus yet)"
    );
}

#[test]
fn minimal_and_pvh() {
    let c = parse_json(&format!("{{{BASE}}}"), "g.json").unwrap().config;
    assert_eq!(
        (c.kind, c.control_plane, c.paused, c.vifs.len()),
        (GuestKind::Pv, PlaneKind::Xenstore, false, 0)
    );
    let c = parse_json(
        &format!("{{{BASE}, \"xen\": {{\"pvh\": true}}, \"vifs\": [{{}}]}}"),
        "g.json",
    )
    .unwrap()
    .config;
    assert_eq!(c.kind, GuestKind::Pvh);
    assert_eq!(c.vifs, vec![VifConfig::default()]);
}

#[test]
fn errors_carry_line_and_column_and_key() {
    let cases: &[(String, &str)] = &[
        (format!("{{{BASE},\n  \"colour\": 1}}"), "g.json:2:10: unknown field `colour`, expected one of `name`, `kernel`, `ramdisk`, `cmdline`, `memory`, `vcpus`, `address_size`, `vifs`, `vbds`, `paused`, `xen`"),
        (format!("{{{BASE},\n  \"memory\": 32}}"), "g.json:2:10: duplicate field `memory`"),
        ("{\"name\": \"g\", \"kernel\": \"/k\", \"vcpus\": 1}".to_string(), "g.json:1:41: missing field `memory`"),
        (format!("{{{BASE}, \"address_size\": 32}}"), "g.json:1:75: address_size: 32-bit guests are not supported by chaos (64 only)"),
        (format!("{{{BASE}, \"vbds\": [{{\"target\": \"/dev/sda\"}}]}}"), "g.json:1:89: vbds: missing field `vdev`"),
        (format!("{{{BASE}, \"vbds\": [{{\"target\": \"/dev/sda\", \"vdev\": \"xvdA\"}}]}}"), "g.json:1:105: vbds[0]: vdev \"xvdA\": not a virtual disk name (xvdX[N], hdX[N], sdX[N], dNpN or a number, as in xen-vbd-interface(7))"),
        (format!("{{{BASE}, \"vbds\": [{{\"target\": \"/a\", \"vdev\": \"xvda\", \"type\": \"qcow2\"}}]}}"), "g.json:1:116: vbds[0]: type \"qcow2\": expected \"phy\" or \"file\""),
        (format!("{{{BASE},\n\"vifs\": [{{\"mac\": \"01:02:03:04:05:06\"}}]}}"), "g.json:2:37: vifs.mac: MAC address 01:02:03:04:05:06 is a multicast address (the low bit of the first byte must be 0)"),
        (format!("{{{BASE}, \"vifs\": [{{\"ip\": \"10.0.0.256\"}}]}}"), "g.json:1:85: vifs.ip: invalid IP address \"10.0.0.256\""),
        (format!("{{{BASE}, \"vifs\": [{{\"gateway\": \"x\"}}]}}"), "g.json:1:75: unknown field `gateway`, expected one of `ip`, `mac`, `bridge`"),
        (format!("{{{BASE}, \"xen\": {{\"dev_method\": \"smoke\"}}}}"), "g.json:1:86: xen.dev_method: unknown method \"smoke\" (expected \"xenstore\" or \"noxs\")"),
        ("{\"name\": \"g\", \"kernel\": \"/k\", \"memory\": \"lots\", \"vcpus\": 1}".to_string(), "g.json:1:46: memory: invalid type: string \"lots\", expected u64"),
        ("{\"name\": \"g\", \"kernel\": \"/k\", \"memory\": 0, \"vcpus\": 1}".to_string(), "g.json:1:41: memory: 0 MiB is out of range (1 to 16777216 MiB)"),
        ("{\"name\": \"g\", \"kernel\": \"/k\", \"memory\": 1, \"vcpus\": 200}".to_string(), "g.json:1:55: vcpus: 200 is out of range (1 to 128)"),
        ("{\"name\": \"g\", \"kernel\": \"/k\", \"memory\": 1, \"vcpus\": {\"count\": 1, \"cpumap\": [[1],[2]]}}".to_string(), "g.json:1:85: vcpus.cpumap: 2 entries for 1 vcpus"),
        ("{\"name\": \"Domain-0\", \"kernel\": \"/k\", \"memory\": 1, \"vcpus\": 1}".to_string(), "g.json:1:19: name: \"Domain-0\" is the control domain's name"),
        ("{\"name\": \"g\", \"kernel\": \"\", \"memory\": 1, \"vcpus\": 1}".to_string(), "g.json:1:26: kernel: empty (LightVM restores a saved guest from a kernel-less config; chaos cannot yet)"),
        ("{\"name\": \"g\",".to_string(), "g.json:1:13: EOF while parsing a value"),
        ("[1]".to_string(), "g.json:1:0: invalid type: sequence, expected an object"),
        (String::new(), "g.json:1:0: EOF while parsing a value"),
    ];
    let mut bad = Vec::new();
    for (text, want) in cases {
        let got = err(text);
        if got != *want {
            bad.push(format!("for {text}\n  got:  {got}\n  want: {want}"));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
