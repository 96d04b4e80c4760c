//! xl.cfg parsing and validation through the public API.

use libchaos::config::{
    self, parse_xl, Action, ConfigError, DiskConfig, DomainConfig, GuestSpec, Location, PlaneKind,
    TscMode, VifConfig,
};
use libchaos::hypervisor::GuestKind;
use std::path::{Path, PathBuf};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn ok(text: &str) -> config::Loaded {
    parse_xl(text, "guest.cfg", &[]).unwrap_or_else(|e| panic!("{e}"))
}

fn err(text: &str) -> ConfigError {
    match parse_xl(text, "guest.cfg", &[]) {
        Ok(l) => panic!("accepted: {:?}", l.config),
        Err(e) => e,
    }
}

fn with_overrides(text: &str, o: &[&str]) -> Result<config::Loaded, ConfigError> {
    let o: Vec<String> = o.iter().map(|s| s.to_string()).collect();
    parse_xl(text, "guest.cfg", &o)
}

const MIN: &str = "name = \"g\"\nkernel = \"/k\"\n";

#[test]
fn full_config_uses_every_syntax_feature() {
    let l = config::load(&data("full.cfg"), &[]).unwrap();
    let c = &l.config;
    assert_eq!(c.name, "web-1");
    assert_eq!(c.kind, GuestKind::Pvh);
    assert_eq!(c.kernel, PathBuf::from("/var/lib/chaos/vmlinuz"));
    assert_eq!(c.ramdisk, Some(PathBuf::from("/var/lib/chaos/initrd.img")));
    assert_eq!(c.cmdline, "root=/dev/xvda1 console=hvc0 quiet");
    assert_eq!((c.memory_mib, c.maxmem_mib), (256, 512));
    assert_eq!((c.vcpus, c.max_vcpus), (2, 4));
    assert_eq!(
        (c.on_poweroff, c.on_reboot, c.on_crash),
        (
            Action::Destroy,
            Action::RenameRestart,
            Action::CoredumpRestart
        )
    );
    assert_eq!(c.tsc_mode, TscMode::Native);
    assert_eq!(c.control_plane, PlaneKind::Noxs);
    let uuid = c.uuid.unwrap();
    assert_eq!((uuid.0[0], uuid.0[15]), (0x6f, 0xab));
    assert!(!c.paused);
    assert_eq!(c.vifs.len(), 3);
    assert_eq!(
        c.vifs[0],
        VifConfig {
            mac: Some(xen_types::Mac([0, 0x16, 0x3e, 0, 0, 1])),
            bridge: "br0".into(),
            ip: Some("10.0.0.2".into()),
            ..VifConfig::default()
        }
    );
    assert_eq!(c.vifs[1].vifname.as_deref(), Some("web1.1"));
    assert_eq!(c.vifs[1].script.as_deref(), Some("vif-bridge"));
    assert_eq!(c.vifs[1].backend.as_deref(), Some("0"));
    assert_eq!(c.vifs[1].bridge, "xenbr0");
    assert_eq!(c.vifs[2], VifConfig::default());
    // disk = [] is accepted silently; cpu_weight is ignored with a warning naming its line.
    assert_eq!(l.warnings.len(), 1, "{:?}", l.warnings);
    assert_eq!(
        l.warnings[0].to_string(),
        format!(
            "{}:25: warning: cpu_weight: ignored (chaos does not set scheduler parameters yet)",
            data("full.cfg").display()
        )
    );
}

#[test]
fn defaults_are_xls() {
    let c = ok(MIN).config;
    let mut want = GuestSpec::new("g", "/k");
    assert_eq!(*c.spec(), want);
    assert_eq!(
        (c.memory_mib, c.maxmem_mib, c.vcpus, c.max_vcpus),
        (32, 32, 1, 1)
    );
    assert_eq!(c.kind, GuestKind::Pv);
    assert_eq!(
        (c.on_poweroff, c.on_reboot, c.on_crash),
        (Action::Destroy, Action::Restart, Action::Destroy)
    );
    assert_eq!(c.control_plane, PlaneKind::Xenstore);
    // memory defaults to maxmem when only maxmem is given (libxl).
    want.memory_mib = 64;
    want.maxmem_mib = 64;
    assert_eq!(*ok(&format!("{MIN}maxmem = 64")).config.spec(), want);
    assert_eq!(*ok(&format!("{MIN}memory = 64")).config.spec(), want);
}

#[test]
fn cmdline_composition_matches_xl() {
    let c = |extra: &str| ok(&format!("{MIN}{extra}")).config.cmdline.clone();
    assert_eq!(c(""), "");
    assert_eq!(c("root = '/dev/xvda'"), "root=/dev/xvda");
    assert_eq!(c("extra = 'quiet'"), "quiet");
    // `+=` with no earlier value assigns, as xl.
    assert_eq!(c("extra += 'quiet'"), "quiet");
    assert_eq!(
        c("root = '/dev/xvda'\nextra = 'quiet'"),
        "root=/dev/xvda quiet"
    );
    let l = ok(&format!(
        "{MIN}root = '/dev/xvda'\ncmdline = 'console=hvc0'"
    ));
    assert_eq!(l.config.cmdline, "console=hvc0");
    assert_eq!(l.warnings.len(), 1);
    assert!(
        l.warnings[0]
            .to_string()
            .contains("guest.cfg:4: warning: cmdline: root and extra ignored"),
        "{}",
        l.warnings[0]
    );
}

#[test]
fn later_keys_override_earlier_ones() {
    let c = ok(&format!(
        "{MIN}memory = 64\nmemory = 128; vcpus = 1; vcpus = 3"
    ))
    .config;
    assert_eq!((c.memory_mib, c.vcpus), (128, 3));
    // The error names the line of the assignment that counts.
    let e = err(&format!("{MIN}memory = 'lots'\nmemory = 'more'"));
    assert_eq!(
        e.to_string(),
        "guest.cfg:4: memory: expected a number, got \"more\""
    );
}

#[test]
fn command_line_overrides_apply_after_the_file() {
    let l = with_overrides(
        &format!("{MIN}memory = 64\nextra = 'a'"),
        &["memory=256", "extra+=\" b\"", "vif=['bridge=br1']"],
    )
    .unwrap();
    assert_eq!(l.config.memory_mib, 256);
    assert_eq!(l.config.cmdline, "a b");
    assert_eq!(l.config.vifs[0].bridge, "br1");
    // name may come from the command line alone.
    let l = with_overrides("kernel = '/k'", &["name=\"cli\""]).unwrap();
    assert_eq!(l.config.name, "cli");
}

#[test]
fn override_errors_name_the_override() {
    let e = with_overrides(MIN, &["memory=abc"]).unwrap_err();
    assert!(matches!(
        e,
        ConfigError::Syntax {
            at: Location::CommandLine { .. },
            ..
        }
    ));
    assert!(
        e.to_string()
            .starts_with("command line: memory=abc: syntax error: memory: expected a value"),
        "{e}"
    );
    let e = with_overrides(MIN, &["memory=\"abc\""]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "command line: memory=\"abc\": memory: expected a number, got \"abc\""
    );
    let c = with_overrides(MIN, &["disk=['/dev/sda,raw,xvda,rw']"]).unwrap();
    assert_eq!(c.config.disks, [DiskConfig::new("/dev/sda", "xvda")]);
    let e = with_overrides(MIN, &["disk='/dev/sda'"]).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("command line: disk='/dev/sda': disk: expected a list of disk specs"),
        "{e}"
    );
    let e = with_overrides(MIN, &[""]).unwrap_err();
    assert!(e.to_string().contains("expected KEY=VALUE"), "{e}");
    let e = with_overrides(MIN, &["name+=[1]"]).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("command line: name+=[1]: name: can't add"),
        "{e}"
    );
}

#[test]
fn syntax_errors_name_file_and_line() {
    let cases: &[(&str, &str)] = &[
        ("name = \"g\nkernel = 1", "guest.cfg:1: syntax error: unterminated string"),
        ("a = 1\nb = [1,\n2", "guest.cfg:2: syntax error: b: unterminated list ('[' without ']')"),
        ("a = 1\n\nkernel = /boot/k", "guest.cfg:3: syntax error: unexpected character '/' (strings must be quoted)"),
        ("memory = 09", "guest.cfg:1: syntax error: malformed number '09'"),
        ("Name = 'x'", "guest.cfg:1: syntax error: invalid name 'Name' (xl names are lowercase letters, digits, '_' and '.', starting with a letter)"),
        ("a = 1 b = 2", "guest.cfg:1: syntax error: a: expected end of line or ';' after the value, got 'b'"),
        ("a 1", "guest.cfg:1: syntax error: expected '=' after 'a', got 1"),
        ("kernel = os.path.join('a')", "guest.cfg:1: syntax error: kernel: expected a value (\"string\", number or [list]), got 'os.path.join' (strings must be quoted)"),
        ("a = \"\\q\"", "guest.cfg:1: syntax error: invalid escape '\\q' in string"),
    ];
    for (text, want) in cases {
        assert_eq!(err(text).to_string(), *want, "for {text:?}");
    }
}

#[test]
fn broken_file_is_refused_at_its_line() {
    let e = config::load(&data("broken.cfg"), &[]).unwrap_err();
    assert!(
        matches!(
            &e,
            ConfigError::Syntax {
                at: Location::File { line: Some(4), .. },
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("broken.cfg:4: syntax error: vcpus:"),
        "{e}"
    );
}

#[test]
fn value_errors_name_file_line_and_key() {
    let cases: &[(&str, &str)] = &[
        ("memory = 'lots'", "guest.cfg:3: memory: expected a number, got \"lots\""),
        ("memory = [1]", "guest.cfg:3: memory: expected a number, got a list"),
        ("memory = 0", "guest.cfg:3: memory: 0 MiB is out of range (1 MiB to 16777216 MiB)"),
        ("memory = 99999999999", "guest.cfg:3: memory: 99999999999 MiB is out of range (1 MiB to 16777216 MiB)"),
        ("memory = 128\nmaxmem = 64", "guest.cfg:4: maxmem: 64 MiB is less than memory (128 MiB)"),
        ("vcpus = 0", "guest.cfg:3: vcpus: 0 is out of range (1 to 128)"),
        ("vcpus = 129", "guest.cfg:3: vcpus: 129 is out of range (1 to 128)"),
        ("vcpus = 4\nmaxvcpus = 2", "guest.cfg:4: maxvcpus: 2 is less than vcpus (4)"),
        ("on_crash = 'explode'", "guest.cfg:3: on_crash: unknown action \"explode\" (expected one of: destroy, restart, rename-restart, preserve, coredump-destroy, coredump-restart, soft-reset)"),
        ("tsc_mode = 'fast'", "guest.cfg:3: tsc_mode: unknown mode \"fast\" (expected one of: default, always_emulate, native, native_paravirt)"),
        ("tsc_mode = 7", "guest.cfg:3: tsc_mode: invalid value 7 (expected 0 to 3, or better a name)"),
        ("uuid = 'nope'", "guest.cfg:3: uuid: invalid UUID \"nope\" (expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"),
        ("chaos_control_plane = 'carrier-pigeon'", "guest.cfg:3: chaos_control_plane: unknown control plane \"carrier-pigeon\" (expected \"xenstore\" or \"noxs\")"),
        ("type = 'pvhx'", "guest.cfg:3: type: unknown guest type \"pvhx\" (expected \"pv\" or \"pvh\")"),
        ("type = 'pvh'\nbuilder = 'generic'", "guest.cfg:4: builder: contradicts type (builder = \"generic\" means type = \"pv\")"),
        ("vif = 'bridge=br0'", "guest.cfg:3: vif: expected a list of vif specs, got \"bridge=br0\""),
        ("vif = ['', 3]", "guest.cfg:3: vif: vif 1: expected a \"spec string\", got 3"),
        ("vif = ['mac=01:00:5e:00:00:01']", "guest.cfg:3: vif: vif 0 (\"mac=01:00:5e:00:00:01\"): MAC address 01:00:5e:00:00:01 is a multicast address (the low bit of the first byte must be 0)"),
        ("vif = ['mac=00:16:3e:00:00']", "guest.cfg:3: vif: vif 0 (\"mac=00:16:3e:00:00\"): invalid MAC address \"00:16:3e:00:00\" (expected xx:xx:xx:xx:xx:xx in hex)"),
        ("vif = ['brigde=br0']", "guest.cfg:3: vif: vif 0 (\"brigde=br0\"): unknown vif option 'brigde' (known: mac, bridge, ip, vifname, script, backend, type, devid, model, rate, gatewaydev, mtu, vlan)"),
        ("kernel = ''", "guest.cfg:3: kernel: empty path"),
        ("kernel = ['a']", "guest.cfg:3: kernel: expected a single value, got a list"),
        ("extra = 'a'\nextra += ['b']", "guest.cfg:4: extra: can't add a [list] to a \"string\" or vice versa"),
        ("memory = 1\nmemory += 2", "guest.cfg:4: memory: can't use += with numbers"),
    ];
    for (extra, want) in cases {
        let e = err(&format!("{MIN}{extra}"));
        assert_eq!(e.to_string(), *want, "for {extra:?}");
    }
}

#[test]
fn names_are_checked() {
    let e = err("kernel = '/k'");
    assert_eq!(
        e.to_string(),
        "guest.cfg: name: missing (xl requires a name)"
    );
    assert!(matches!(e, ConfigError::Missing { .. }));
    assert_eq!(e.key(), Some("name"));
    for (name, msg) in [
        ("", "must not be empty"),
        ("a/b", "must not contain '/'"),
        ("a\\tb", "must not contain control characters"),
        ("Domain-0", "control domain"),
    ] {
        let e = err(&format!("kernel = '/k'\nname = \"{name}\""));
        let s = e.to_string();
        assert!(
            s.starts_with("guest.cfg:2: name: ") && s.contains(msg),
            "{s}"
        );
    }
    // Numbers are atoms in xl and count as text.
    assert_eq!(ok("kernel = '/k'\nname = 42").config.name, "42");
}

#[test]
fn kernel_is_required() {
    let e = err("name = 'g'");
    assert_eq!(e.to_string(), "guest.cfg: kernel: missing (chaos boots kernels directly: give kernel = \"/path/to/kernel\")");
}

#[test]
fn guest_types() {
    assert_eq!(ok(&format!("{MIN}type = 'pv'")).config.kind, GuestKind::Pv);
    assert_eq!(
        ok(&format!("{MIN}type = 'pvh'")).config.kind,
        GuestKind::Pvh
    );
    let l = ok(&format!("{MIN}builder = 'generic'"));
    assert_eq!(l.config.kind, GuestKind::Pv);
    assert!(
        l.warnings[0].to_string().contains("builder: deprecated"),
        "{:?}",
        l.warnings
    );
    for text in ["type = 'hvm'", "builder = 'hvm'"] {
        let e = err(&format!("{MIN}{text}"));
        assert!(matches!(e, ConfigError::Unsupported { .. }));
        assert!(
            e.to_string()
                .ends_with(": hvm guests are not supported by chaos (only pv and pvh)"),
            "{e}"
        );
    }
    // hvm is reported before anything else, even ahead of refused devices on earlier lines.
    let e = err("disk = ['x']\nname = 'h'\ntype = 'hvm'");
    assert!(e.to_string().starts_with("guest.cfg:3: type: hvm"), "{e}");
}

#[test]
fn refused_keys_name_line_and_reason() {
    let cases: &[(&str, &str)] = &[
        ("pci = ['01:00.0']", "guest.cfg:3: pci: not supported by chaos yet (no PCI passthrough)"),
        ("bootloader = 'pygrub'", "guest.cfg:3: bootloader: not supported by chaos yet (no bootloaders: give kernel= instead)"),
        ("device_model_version = 'qemu-xen'", "guest.cfg:3: device_model_version: not supported by chaos yet (no device model: chaos runs no QEMU)"),
        ("usbctrl = ['type=pv']", "guest.cfg:3: usbctrl: not supported by chaos yet (no USB devices)"),
        ("vfb = ['vnc=1']", "guest.cfg:3: vfb: not supported by chaos yet (no framebuffer devices)"),
        ("channel = ['name=x']", "guest.cfg:3: channel: not supported by chaos yet (no channel devices)"),
        ("vtpm = ['backend=1']", "guest.cfg:3: vtpm: not supported by chaos yet (no vTPM devices)"),
        ("p9 = ['tag=x']", "guest.cfg:3: p9: not supported by chaos yet (no 9pfs devices)"),
        ("soundhw = 'hda'", "guest.cfg:3: soundhw: not supported by chaos yet (no emulated sound)"),
        ("dtdev = ['/soc/x']", "guest.cfg:3: dtdev: not supported by chaos yet (no device tree passthrough)"),
        ("pvshim = 1", "guest.cfg:3: pvshim: not supported by chaos yet (no PV shim)"),
        ("e820_host = 1", "guest.cfg:3: e820_host: not supported by chaos yet (no host memory map)"),
        ("cpuid = 'host,tm=0'", "guest.cfg:3: cpuid: not supported by chaos yet (no CPUID policy changes)"),
    ];
    for (extra, want) in cases {
        let e = err(&format!("{MIN}{extra}"));
        assert!(matches!(e, ConfigError::Unsupported { .. }), "{e:?}");
        assert_eq!(e.to_string(), *want);
    }
    // Turned off or empty: accepted without a word.
    let l = ok(&format!(
        "{MIN}disk = []\npci = []\npvshim = 0\ne820_host = 0\nusb = 0"
    ));
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
}

#[test]
fn ignored_and_unknown_keys_warn() {
    let l = ok(&format!(
        "{MIN}cpus = \"2-3\"\ncap = 50\non_watchdog = 'destroy'\nlocaltime = 1\nviridian = 1\nmemroy = 64\nchaos_future_thing = 1"
    ));
    let w: Vec<String> = l.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(
        w,
        vec![
            "guest.cfg:3: warning: cpus: ignored (chaos does not pin vcpus yet)",
            "guest.cfg:4: warning: cap: ignored (chaos does not set scheduler parameters yet)",
            "guest.cfg:5: warning: on_watchdog: ignored (chaos has no watchdog handling yet)",
            "guest.cfg:6: warning: localtime: ignored (chaos does not set the guest's time offset)",
            "guest.cfg:7: warning: viridian: ignored (only used for HVM guests)",
            "guest.cfg:8: warning: memroy: unknown key 'memroy' ignored (did you mean 'memory'?)",
            "guest.cfg:9: warning: chaos_future_thing: unknown key 'chaos_future_thing' ignored",
        ]
    );
    assert_eq!(l.config.memory_mib, 32);
}

#[test]
fn vif_options() {
    let l = ok(&format!(
        "{MIN}vif = ['model=e1000,rate=10Mb/s,type=ioemu,mtu=9000,trusted', 'devid=1']"
    ));
    assert_eq!(l.config.vifs.len(), 2);
    assert_eq!(l.warnings.len(), 5, "{:?}", l.warnings);
    assert!(l.warnings.iter().all(|w| w.key == "vif"
        && w.to_string()
            .starts_with("guest.cfg:3: warning: vif: vif 0: ")));
    let e = err(&format!("{MIN}vif = ['devid=5']"));
    assert!(
        e.to_string()
            .contains("devid=5: chaos numbers vifs by their position"),
        "{e}"
    );
}

#[test]
fn tsc_mode_integers_are_deprecated_but_accepted() {
    let l = ok(&format!("{MIN}tsc_mode = 2"));
    assert_eq!(l.config.tsc_mode, TscMode::Native);
    assert_eq!(l.warnings[0].to_string(), "guest.cfg:3: warning: tsc_mode: integer values are deprecated (as in xl); use tsc_mode = \"native\"");
    assert_eq!(
        ok(&format!("{MIN}tsc_mode = 'native_paravirt'"))
            .config
            .tsc_mode,
        TscMode::NativeParavirt
    );
}

#[test]
fn load_picks_parser_by_extension_and_reports_io_errors() {
    let l = config::load(&data("guest.json"), &[]).unwrap();
    assert_eq!(l.config.name, "lightvm-1");
    let l = config::load(&data("minimal.cfg"), &[]).unwrap();
    assert_eq!(l.config.name, "min");
    let e = config::load(&data("does-not-exist.cfg"), &[]).unwrap_err();
    assert!(matches!(e, ConfigError::Io { .. }));
    assert!(e.to_string().contains("does-not-exist.cfg: "), "{e}");
    let e = config::load(&data(""), &[]).unwrap_err();
    assert!(e.to_string().ends_with("not a regular file"), "{e}");
    let e = config::load(&data("guest.json"), &["memory=1".to_string()]).unwrap_err();
    assert!(
        e.to_string().starts_with(
            "command line: memory=1: memory: KEY=VALUE overrides apply to xl.cfg files"
        ),
        "{e}"
    );
}

#[test]
fn config_round_trips_through_json() {
    let c = config::load(&data("full.cfg"), &[]).unwrap().config;
    let s = serde_json::to_string(&c).unwrap();
    assert!(
        s.contains("\"on_reboot\":\"rename-restart\"")
            && s.contains("\"tsc_mode\":\"native\"")
            && s.contains("\"kind\":\"pvh\""),
        "{s}"
    );
    let back: DomainConfig = serde_json::from_str(&s).unwrap();
    assert_eq!(back, c);
}

#[test]
fn hostile_input_is_refused_without_crashing() {
    // Deep nesting is bounded (no stack overflow).
    let deep = format!("{MIN}a = {}", "[".repeat(100_000));
    let e = err(&deep);
    assert!(
        e.to_string()
            .starts_with("guest.cfg:3: syntax error: a: lists nested deeper than 32"),
        "{e}"
    );
    let e = config::parse_json(&"[".repeat(100_000), "g.json").unwrap_err();
    assert!(e.to_string().starts_with("g.json:1:"), "{e}");
    // Many settings, reassigned and distinct, stay cheap (linear merge).
    let mut big = String::from(MIN);
    for i in 0..10_000 {
        big.push_str(&format!("memory = {}\nk{i} = {i}\n", i + 1));
    }
    let l = ok(&big);
    assert_eq!(l.config.memory_mib, 10_000);
    // One warning per unknown key, and one for memory assigned 10,000 times.
    assert_eq!(l.warnings.len(), 10_001);
    assert_eq!(
        l.warnings
            .iter()
            .filter(|w| w.message.starts_with("unknown key"))
            .count(),
        10_000
    );
    // NUL and other raw bytes.
    assert!(err("name = \"a\0b\"")
        .to_string()
        .contains("NUL character in string"));
    assert!(err("\0")
        .to_string()
        .starts_with("guest.cfg:1: syntax error: unexpected character"));
}

#[test]
fn repository_examples_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("cfg" | "json")
        ) {
            let l = config::load(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
            assert!(
                l.warnings.is_empty(),
                "{}: {:?}",
                path.display(),
                l.warnings
            );
            n += 1;
        }
    }
    assert!(n >= 1, "no examples in {}", dir.display());
}

#[test]
fn invalid_utf8_is_refused_with_its_line() {
    let path = std::env::temp_dir().join(format!("chaos-config-test-{}.cfg", std::process::id()));
    std::fs::write(&path, b"name = 'g'\nkernel = '/k\xff'\n").unwrap();
    let e = config::load(&path, &[]).unwrap_err();
    let _ = std::fs::remove_file(&path);
    assert_eq!(
        e.to_string(),
        format!(
            "{}:2: syntax error: not valid UTF-8 (at byte offset 23)",
            path.display()
        )
    );
}

#[test]
fn an_override_that_makes_the_command_line_too_long_names_itself() {
    let long = "a".repeat(1100);
    // The file sets extra; the override's root makes the composed command line too long.
    let root = format!("root=\"{long}\"");
    let e = with_overrides(&format!("{MIN}extra = 'quiet'"), &[root.as_str()]).unwrap_err();
    match &e {
        ConfigError::Invalid {
            at: Location::CommandLine { text },
            key,
            ..
        } => {
            assert!(text.starts_with("root="), "{e}");
            assert_eq!(key, "cmdline");
        }
        other => panic!("expected the override named: {other}"),
    }
    assert!(e.to_string().contains("too long"), "{e}");
}

#[test]
fn a_utf8_bom_at_the_start_of_a_file_is_accepted() {
    let dir = std::env::temp_dir().join(format!("chaos-bom-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bom.cfg");
    std::fs::write(&path, format!("\u{feff}{MIN}memory = 8\n")).unwrap();
    let l = config::load(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(l.config.name, "g");
    assert_eq!(l.config.memory_mib, 8);
    // Only at the start: elsewhere it is still a stray character.
    std::fs::write(&path, format!("{MIN}\u{feff}memory = 8\n")).unwrap();
    assert!(config::load(&path, &[]).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_key_assigned_twice_in_the_file_warns_naming_both_lines() {
    let l = ok(&format!("{MIN}memory = 64\nvcpus = 1\nmemory = 128\n"));
    assert_eq!(l.config.memory_mib, 128);
    let dup: Vec<_> = l.warnings.iter().filter(|w| w.key == "memory").collect();
    assert_eq!(dup.len(), 1, "{:?}", l.warnings);
    let text = dup[0].to_string();
    assert!(text.starts_with("guest.cfg:5: warning: memory:"), "{text}");
    assert!(text.contains("line 3"), "{text}");
    // `+=` adds to the value and an override replaces it on purpose: neither warns.
    let l = with_overrides(
        &format!("{MIN}extra = 'a'\nextra += ' b'\nmemory = 8"),
        &["memory=16"],
    )
    .unwrap();
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
}
