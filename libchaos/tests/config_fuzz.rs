//! Property tests: the parsers never panic, and what chaos renders it reads back unchanged.

use libchaos::config::disk::{parse_disk_spec, vdev_devid};
use libchaos::config::syntax::{parse_settings, render, Op, Setting, Value};
use libchaos::config::{
    parse_json, parse_xl, Action, DiskConfig, DomainConfig, GuestSpec, PlaneKind, TscMode,
    VifConfig,
};
use libchaos::hypervisor::{GuestKind, Uuid};
use proptest::prelude::*;
use xen_types::Mac;

/// Text made mostly of characters that mean something to xl.cfg, so the parser gets deep.
fn xlish() -> impl Strategy<Value = String> {
    "([a-z_.]{1,8}|[0-9x]{1,4}|[ \t\n;,=#\\[\\]\"'\\\\+]|\"[^\"\n]{0,6}\"|'[^'\n]{0,6}'){0,60}"
}

fn jsonish() -> impl Strategy<Value = String> {
    "([{}\\[\\]:, \n]|\"(name|kernel|memory|vcpus|vifs|xen|pvh|mac|count|cpumap)\"|[0-9]{1,3}|true|null|\"[a-z:0-9./]{0,8}\"){0,50}"
}

const VALID_XL: &str = "name = \"g\"\ntype = \"pvh\"\nkernel = \"/k\"\nmemory = 64\nmaxmem = 128\nvcpus = 2\n\
vif = [ 'mac=00:16:3e:00:00:01,bridge=br0', '' ]\non_crash = \"preserve\"\nextra = \"quiet\"\ntsc_mode = \"native\"\n\
disk = [ '/srv/a.img,raw,xvda,rw', 'phy:/dev/vg/b,xvdb,r', 'vdev=hdc, access=ro, target=/c,d' ]\n";

const VALID_JSON: &str = r#"{"name": "g", "kernel": "/k", "memory": 16, "vcpus": {"count": 2, "cpumap": [[1], [2]]},
 "vifs": [{"ip": "10.0.0.2", "mac": "00:16:3e:00:00:01", "bridge": "br0"}], "xen": {"pvh": true, "dev_method": "noxs"}}"#;

/// Applies `(position, kind, char)` edits: delete, insert or replace one character.
fn mutate(text: &str, edits: &[(usize, u8, char)]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for &(pos, kind, c) in edits {
        let i = if chars.is_empty() {
            0
        } else {
            pos % (chars.len() + 1)
        };
        match kind % 3 {
            0 if i < chars.len() => {
                chars.remove(i);
            }
            1 if i < chars.len() => chars[i] = c,
            _ => chars.insert(i, c),
        }
    }
    chars.into_iter().collect()
}

fn edit_char() -> impl Strategy<Value = char> {
    prop_oneof![
        prop::sample::select(vec![
            '"', '\'', '[', ']', ',', ';', '=', '#', '\n', '\\', '+', ' ', '0', 'x', 'a', '{', '}',
            ':', '-', '\0', 'é'
        ]),
        any::<char>(),
    ]
}

fn check_xl(text: &str) {
    let lines = text.split('\n').count() as u32 + 1;
    if let Err(e) = parse_xl(text, "f.cfg", &[]) {
        // Errors point inside the file.
        if let Some(libchaos::config::Location::File { line: Some(l), .. }) = e.location() {
            assert!(*l >= 1 && *l <= lines, "line {l} outside 1..={lines}: {e}");
        }
        assert!(e.to_string().starts_with("f.cfg"), "{e}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn xl_never_panics_on_any_string(s in any::<String>()) {
        check_xl(&s);
        let _ = parse_xl("name='g'\nkernel='/k'", "f.cfg", &[s]);
    }

    #[test]
    fn xl_never_panics_on_xl_like_text(s in xlish()) {
        check_xl(&s);
    }

    #[test]
    fn parsers_never_panic_on_bytes(b in prop::collection::vec(any::<u8>(), 0..400)) {
        let s = String::from_utf8_lossy(&b);
        check_xl(&s);
        let _ = parse_json(&s, "f.json");
    }

    #[test]
    fn json_never_panics(s in any::<String>(), t in jsonish()) {
        let _ = parse_json(&s, "f.json");
        let _ = parse_json(&t, "f.json");
    }
}

/// Text made of what disk specs are made of.
fn diskish() -> impl Strategy<Value = String> {
    "([a-z]{1,6}|[0-9]{1,3}|[ ,=:/\t-]|target=|vdev=|access=|format=|phy:|raw:|xvd[a-z]{1,3}|cdrom|d[0-9]p[0-9]){0,24}"
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn disk_specs_never_panic(s in any::<String>(), t in diskish()) {
        let _ = parse_disk_spec(&s);
        let _ = parse_disk_spec(&t);
        let _ = vdev_devid(&s);
        let _ = vdev_devid(&t);
    }

    #[test]
    fn mutated_valid_configs_never_panic(
        edits in prop::collection::vec((any::<usize>(), any::<u8>(), edit_char()), 1..6),
    ) {
        check_xl(&mutate(VALID_XL, &edits));
        let _ = parse_json(&mutate(VALID_JSON, &edits), "f.json");
    }
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<String>().prop_map(|s| Value::Str(s.replace('\0', ""))),
        any::<u64>().prop_map(Value::Num),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop::collection::vec(inner, 0..6).prop_map(Value::List)
    })
}

fn setting() -> impl Strategy<Value = Setting> {
    ("[a-z][a-z0-9._]{0,12}", value(), any::<bool>()).prop_map(|(key, value, append)| Setting {
        key,
        value,
        line: 0,
        op: if append { Op::Append } else { Op::Assign },
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn settings_round_trip(mut settings in prop::collection::vec(setting(), 0..12)) {
        for (i, s) in settings.iter_mut().enumerate() {
            s.line = i as u32 + 1;
        }
        let text = render(&settings);
        prop_assert_eq!(parse_settings(&text).unwrap(), settings);
    }
}

fn action() -> impl Strategy<Value = Action> {
    prop::sample::select(Action::ALL.to_vec())
}

fn mac() -> impl Strategy<Value = Option<Mac>> {
    prop::option::of(any::<[u8; 6]>().prop_map(|mut m| {
        m[0] &= 0xfe; // unicast
        m[5] |= 1; // not all zero
        Mac(m)
    }))
}

fn vif() -> impl Strategy<Value = VifConfig> {
    (
        mac(),
        "[a-z][a-z0-9]{0,14}",
        prop::option::of(
            (any::<[u8; 4]>(), 0u8..=32)
                .prop_map(|(a, p)| format!("{}.{}.{}.{}/{p}", a[0], a[1], a[2], a[3])),
        ),
        prop::option::of("[a-z][a-z0-9.]{0,14}"),
        prop::option::of("/[a-z/-]{1,20}"),
        prop::option::of("[a-z0-9-]{1,10}"),
    )
        .prop_map(|(mac, bridge, ip, vifname, script, backend)| VifConfig {
            mac,
            bridge,
            ip,
            vifname,
            script,
            backend,
        })
}

fn disk() -> impl Strategy<Value = DiskConfig> {
    (
        // target= keeps everything but one trailing comma.
        "/[^\0-\x1f\x7f-\u{9f}]{0,30}".prop_filter("no trailing comma", |t| !t.ends_with(',')),
        prop_oneof![
            "xvd[a-z]{1,2}([1-9][0-9]?)?",
            "hd[a-d]([1-9])?",
            "sd[a-p]([1-9])?",
            "d[0-9]{1,3}p[0-9]{1,2}",
            "[1-9][0-9]{0,6}",
        ],
        (
            prop::bool::ANY,
            prop::option::of(prop::sample::select(vec![
                "block",
                "/etc/xen/scripts/block",
            ])),
            prop::option::of(prop::bool::ANY),
            prop::bool::ANY,
            prop::bool::ANY,
            prop::option::of("[a-z0-9-]{1,10}"),
        ),
    )
        .prop_map(
            |(target, vdev, (readonly, script, discard, direct_io_safe, trusted, backend))| {
                DiskConfig {
                    target: target.into(),
                    vdev,
                    readonly,
                    script: script.map(String::from),
                    discard,
                    direct_io_safe,
                    trusted,
                    backend,
                }
            },
        )
        .prop_filter("a number libxl knows", |d| d.devid().is_some())
}

/// Disks the guest would see as distinct devices.
fn disks() -> impl Strategy<Value = Vec<DiskConfig>> {
    prop::collection::vec(disk(), 0..4).prop_map(|mut v| {
        let mut seen = std::collections::HashSet::new();
        v.retain(|d| seen.insert(d.devid()));
        v
    })
}

fn domain_config() -> impl Strategy<Value = DomainConfig> {
    (
        (
            "[A-Za-z0-9_.-][A-Za-z0-9 _.:@-]{0,30}",
            prop::bool::ANY,
            "/[^\0\n]{1,40}",
            prop::option::of("/[^\0\n]{1,40}"),
            "[^\0]{0,60}",
            1u64..=65536,
            0u64..=1024,
            1u32..=128,
        ),
        (
            0u32..=128,
            action(),
            action(),
            action(),
            prop::collection::vec(vif(), 0..4),
            prop::bool::ANY,
            prop::sample::select(TscMode::ALL.to_vec()),
            prop::option::of(any::<[u8; 16]>()),
            disks(),
        ),
    )
        .prop_filter("Domain-0 is reserved", |((name, ..), _)| name != "Domain-0")
        .prop_map(
            |(
                (name, pvh, kernel, ramdisk, cmdline, memory, extra_mem, vcpus),
                (extra_vcpus, on_poweroff, on_reboot, on_crash, vifs, noxs, tsc_mode, uuid, disks),
            )| {
                GuestSpec {
                    name,
                    kind: if pvh { GuestKind::Pvh } else { GuestKind::Pv },
                    kernel: kernel.into(),
                    ramdisk: ramdisk.map(Into::into),
                    cmdline,
                    memory_mib: memory,
                    maxmem_mib: memory + extra_mem,
                    vcpus,
                    max_vcpus: (vcpus + extra_vcpus).min(128),
                    on_poweroff,
                    on_reboot,
                    on_crash,
                    vifs,
                    control_plane: if noxs {
                        PlaneKind::Noxs
                    } else {
                        PlaneKind::Xenstore
                    },
                    tsc_mode,
                    uuid: uuid.map(Uuid),
                    paused: false,
                    disks,
                }
                .validate()
                .expect("generated configs are valid")
            },
        )
}

/// Writes a config as xl.cfg text, using the syntax layer's quoting.
fn to_xl(c: &DomainConfig) -> String {
    let s = |k: &str, v: &str| Setting {
        key: k.into(),
        value: Value::Str(v.into()),
        line: 0,
        op: Op::Assign,
    };
    let n = |k: &str, v: u64| Setting {
        key: k.into(),
        value: Value::Num(v),
        line: 0,
        op: Op::Assign,
    };
    let mut out = vec![
        s("name", &c.name),
        s("type", &c.kind.to_string()),
        s("kernel", &c.kernel.to_string_lossy()),
        s("cmdline", &c.cmdline),
        n("memory", c.memory_mib),
        n("maxmem", c.maxmem_mib),
        n("vcpus", c.vcpus.into()),
        n("maxvcpus", c.max_vcpus.into()),
        s("on_poweroff", c.on_poweroff.as_str()),
        s("on_reboot", c.on_reboot.as_str()),
        s("on_crash", c.on_crash.as_str()),
        s("chaos_control_plane", c.control_plane.as_str()),
        s("tsc_mode", c.tsc_mode.as_str()),
    ];
    if let Some(r) = &c.ramdisk {
        out.push(s("ramdisk", &r.to_string_lossy()));
    }
    if let Some(u) = &c.uuid {
        out.push(s("uuid", &u.to_string()));
    }
    let vifs = c
        .vifs
        .iter()
        .map(|v| {
            let mut parts = vec![format!("bridge={}", v.bridge)];
            if let Some(m) = v.mac {
                parts.push(format!("mac={m}"));
            }
            for (k, o) in [
                ("ip", &v.ip),
                ("vifname", &v.vifname),
                ("script", &v.script),
                ("backend", &v.backend),
            ] {
                if let Some(x) = o {
                    parts.push(format!("{k}={x}"));
                }
            }
            Value::Str(parts.join(","))
        })
        .collect();
    out.push(Setting {
        key: "vif".into(),
        value: Value::List(vifs),
        line: 0,
        op: Op::Assign,
    });
    let disks = c
        .disks
        .iter()
        .map(|d| {
            let mut parts = vec![
                format!("vdev={}", d.vdev),
                format!("access={}", if d.readonly { "ro" } else { "rw" }),
            ];
            match d.discard {
                Some(true) => parts.push("discard".into()),
                Some(false) => parts.push("no-discard".into()),
                None => {}
            }
            if d.direct_io_safe {
                parts.push("direct-io-safe".into());
            }
            parts.push(if d.trusted { "trusted" } else { "untrusted" }.into());
            for (k, o) in [("script", &d.script), ("backend", &d.backend)] {
                if let Some(x) = o {
                    parts.push(format!("{k}={x}"));
                }
            }
            // target= takes the rest of the spec, so it goes last.
            parts.push(format!("target={}", d.target.to_string_lossy()));
            Value::Str(parts.join(","))
        })
        .collect();
    out.push(Setting {
        key: "disk".into(),
        value: Value::List(disks),
        line: 0,
        op: Op::Assign,
    });
    render(&out)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn domain_config_round_trips_through_xl_cfg(c in domain_config()) {
        let text = to_xl(&c);
        let loaded = parse_xl(&text, "gen.cfg", &[]).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(&loaded.config, &c);
        prop_assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        // And through the JSON state-file form.
        let json = serde_json::to_string(&c).unwrap();
        let back: DomainConfig = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(back, c);
    }
}
