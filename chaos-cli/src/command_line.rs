//! The `chaos` command line: which commands and options there are, their help, and what a
//! line asks for ([`Cli`]). Scanned by [`chaos_cli::args`], not clap: see there why.

use std::ffi::OsString;
use std::path::PathBuf;

use chaos_cli::args::{self, ArgsError, Matches, Opt, Scanner};
use chaos_cli::backend::HypervisorKind;

/// What a `chaos` command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cli {
    pub hypervisor: HypervisorKind,
    pub run_dir: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub verbose: u8,
    pub command: Command,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Create {
        paused: bool,
        count: u32,
        json: bool,
        local: bool,
        daemon: bool,
        pool_only: bool,
        file: PathBuf,
        overrides: Vec<String>,
    },
    Destroy {
        domains: Vec<String>,
    },
    Shutdown {
        wait: bool,
        reboot: bool,
        timeout: u64,
        domain: String,
    },
    Pause {
        domain: String,
    },
    Unpause {
        domain: String,
    },
    List {
        json: bool,
    },
    Reap {
        json: bool,
        watch: bool,
        interval_ms: u64,
        exit_when_idle: bool,
    },
    Console {
        domain: String,
    },
    Info {
        json: bool,
    },
    PoolStatus {
        json: bool,
    },
}

/// What to do with a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Run(Cli),
    /// Print this help on standard output and exit 0.
    Help(String),
    /// Print the version and exit 0.
    Version,
}

/// A malformed line: what is wrong, in which command (for the pointer to its help).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{error}", command.map(|c| format!("{c}: ")).unwrap_or_default())]
pub struct LineError {
    pub command: Option<&'static str>,
    pub error: ArgsError,
}

impl LineError {
    /// Where to read how the command is used.
    pub fn hint(&self) -> String {
        match self.command {
            Some(c) => format!("see 'chaos {c} --help'"),
            None => "see 'chaos --help'".into(),
        }
    }
}

const GLOBAL: &[Opt] = &[
    Opt::value(
        "hypervisor",
        None,
        "xen|sim",
        "Which hypervisor to drive: real Xen, or the in-memory simulation (dry runs) [default: xen]",
    ),
    Opt::value(
        "run-dir",
        None,
        "DIR",
        "Runtime state directory (default /run/chaos, or /run/chaos-sim with --hypervisor sim; CHAOS_RUN_DIR overrides)",
    ),
    Opt::value(
        "socket",
        None,
        "PATH",
        "chaosd's socket (default: chaosd.sock in the runtime directory)",
    ),
    Opt::flag("verbose", Some('v'), "More log output (repeat for more)"),
    Opt::flag("help", Some('h'), "Print help"),
    Opt::flag("version", Some('V'), "Print version"),
];

const JSON: Opt = Opt::flag("json", None, "Print JSON");

/// A command: its name, what it does, its usage after the name, and its options.
struct Spec {
    name: &'static str,
    about: &'static str,
    usage: &'static str,
    opts: &'static [Opt],
}

const COMMANDS: &[Spec] = &[
    Spec {
        name: "create",
        about: "Create guests from an xl.cfg (or LightVM .json) file; KEY=VALUE settings override the file, as with xl",
        usage: "[OPTIONS] FILE [KEY=VALUE]...",
        opts: &[
            Opt::flag("paused", Some('p'), "Leave the guest paused"),
            Opt::value("count", Some('n'), "N", "Create N guests; their names get -1 .. -N appended [default: 1]"),
            Opt::flag("json", None, "Print each new guest as one line of JSON, with its phase timings"),
            Opt::flag("local", None, "Create in this process even if chaosd is running"),
            Opt::flag("daemon", None, "Fail unless chaosd creates the guests"),
            Opt::flag("pool-only", None, "Fail unless chaosd has a ready shell of the guest's flavor (implies --daemon)"),
        ],
    },
    Spec {
        name: "destroy",
        about: "Destroy guests at once",
        usage: "DOMAIN...",
        opts: &[],
    },
    Spec {
        name: "shutdown",
        about: "Ask a guest to shut down (or reboot) through its control plane",
        usage: "[OPTIONS] DOMAIN",
        opts: &[
            Opt::flag("wait", Some('w'), "Wait until the guest has shut down, then apply its on_poweroff / on_reboot action"),
            Opt::flag("reboot", Some('R'), "Ask for a reboot instead of a power-off"),
            Opt::value("timeout", None, "SECS", "How long --wait waits [default: 60]"),
        ],
    },
    Spec {
        name: "pause",
        about: "Pause a guest",
        usage: "DOMAIN",
        opts: &[],
    },
    Spec {
        name: "unpause",
        about: "Unpause a guest",
        usage: "DOMAIN",
        opts: &[],
    },
    Spec {
        name: "list",
        about: "List domains",
        usage: "[--json]",
        opts: &[JSON],
    },
    Spec {
        name: "reap",
        about: "Apply on_poweroff / on_reboot / on_crash to guests that have shut down",
        usage: "[OPTIONS]",
        opts: &[
            JSON,
            Opt::flag("watch", None, "Keep reaping until killed: this process is then the reaper of chaos's guests"),
            Opt::value("interval-ms", None, "MS", "How often --watch looks when nothing can wake it (no VIRQ_DOM_EXC, no xenstored watch) [default: 1000]"),
            Opt::flag("exit-when-idle", None, "With --watch: leave when another process reaps, or when no chaos guest has been left for 30 s (how `chaos create` starts it)"),
        ],
    },
    Spec {
        name: "console",
        about: "Attach to a guest's PV console (through xenconsoled, as xl console does)",
        usage: "DOMAIN",
        opts: &[],
    },
    Spec {
        name: "info",
        about: "Show the host and the toolstack's settings",
        usage: "[--json]",
        opts: &[JSON],
    },
    Spec {
        name: "pool",
        about: "chaosd's pool of ready shells: `pool status` shows ready and target shells per flavor, refill rate, creation latency percentiles",
        usage: "status [--json]",
        opts: &[JSON],
    },
];

const ABOUT: &str = "Create Xen guests in milliseconds (xl-compatible configs)";

/// The help of `chaos` alone, or of one command.
fn help_of(spec: Option<&Spec>) -> String {
    match spec {
        Some(s) => args::help(
            &format!("chaos {} {}", s.name, s.usage),
            s.about,
            &[s.opts, GLOBAL],
            "",
        ),
        None => {
            let mut commands = String::from("Commands:\n");
            for s in COMMANDS {
                commands.push_str(&format!("  {:10}{}\n", s.name, s.about));
            }
            commands.push_str(
                "  help      Print this, or the help of a command (chaos help COMMAND)\n",
            );
            args::help("chaos [OPTIONS] COMMAND", ABOUT, &[GLOBAL], &commands)
        }
    }
}

/// Reads a `chaos` command line (without the program's name).
pub fn parse(line: impl IntoIterator<Item = OsString>) -> Result<Parsed, LineError> {
    let mut scanner = Scanner::new(line);
    let at_top = |error| LineError {
        command: None,
        error,
    };
    let name = scanner.until_positional(&[GLOBAL]).map_err(at_top)?;
    let global = scanner.matches.clone();
    let Some(name) = name else {
        if global.flag("help") {
            return Ok(Parsed::Help(help_of(None)));
        }
        if global.flag("version") {
            return Ok(Parsed::Version);
        }
        return Err(at_top(ArgsError::Missing("a command")));
    };
    let name = name.to_string_lossy();
    if name == "help" {
        scanner.rest(&[]).map_err(at_top)?;
        let topic = scanner
            .matches
            .positionals
            .first()
            .map(|t| t.to_string_lossy());
        return match topic {
            None => Ok(Parsed::Help(help_of(None))),
            Some(t) => COMMANDS
                .iter()
                .find(|s| s.name == t)
                .map(|s| Parsed::Help(help_of(Some(s))))
                .ok_or_else(|| at_top(ArgsError::UnknownCommand(t.into_owned()))),
        };
    }
    let spec = COMMANDS
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| at_top(ArgsError::UnknownCommand(name.into_owned())))?;
    let in_command = |error| LineError {
        command: Some(spec.name),
        error,
    };
    scanner.rest(&[spec.opts, GLOBAL]).map_err(in_command)?;
    let m = scanner.matches;
    if m.flag("help") {
        return Ok(Parsed::Help(help_of(Some(spec))));
    }
    if m.flag("version") {
        return Ok(Parsed::Version);
    }
    let command = command(spec.name, &m).map_err(in_command)?;
    Ok(Parsed::Run(Cli {
        hypervisor: m
            .parsed("hypervisor")
            .map_err(in_command)?
            .unwrap_or(HypervisorKind::Xen),
        run_dir: m.path("run-dir"),
        socket: m.path("socket"),
        verbose: u8::try_from(m.count("verbose")).unwrap_or(u8::MAX),
        command,
    }))
}

/// The command `name` asks for, from what its line held.
fn command(name: &str, m: &Matches) -> Result<Command, ArgsError> {
    let words = m.positional_strings();
    Ok(match name {
        "create" => {
            m.conflict("local", "daemon")?;
            m.conflict("pool-only", "local")?;
            let mut positionals = m.positionals.iter();
            let file = positionals
                .next()
                .map(PathBuf::from)
                .ok_or(ArgsError::Missing("the config FILE"))?;
            let overrides = positionals
                .map(|p| {
                    p.to_str()
                        .map(str::to_owned)
                        .ok_or_else(|| ArgsError::UnexpectedArgument(p.to_string_lossy().into()))
                })
                .collect::<Result<_, _>>()?;
            Command::Create {
                paused: m.flag("paused"),
                count: m.number("count", 1..=100_000)?.unwrap_or(1),
                json: m.flag("json"),
                local: m.flag("local"),
                daemon: m.flag("daemon"),
                pool_only: m.flag("pool-only"),
                file,
                overrides,
            }
        }
        "destroy" => {
            let domains = words?;
            if domains.is_empty() {
                return Err(ArgsError::Missing("the DOMAIN to destroy"));
            }
            Command::Destroy { domains }
        }
        "shutdown" => Command::Shutdown {
            wait: m.flag("wait"),
            reboot: m.flag("reboot"),
            timeout: m.number("timeout", 0..=u64::MAX)?.unwrap_or(60),
            domain: one_domain(words?)?,
        },
        "pause" => Command::Pause {
            domain: one_domain(words?)?,
        },
        "unpause" => Command::Unpause {
            domain: one_domain(words?)?,
        },
        "console" => Command::Console {
            domain: one_domain(words?)?,
        },
        "list" => no_positionals(
            m,
            Command::List {
                json: m.flag("json"),
            },
        )?,
        "info" => no_positionals(
            m,
            Command::Info {
                json: m.flag("json"),
            },
        )?,
        "reap" => {
            m.requires("exit-when-idle", "watch")?;
            no_positionals(
                m,
                Command::Reap {
                    json: m.flag("json"),
                    watch: m.flag("watch"),
                    interval_ms: m
                        .number("interval-ms", 1..=60_000)?
                        .unwrap_or(libchaos::toolstack::reaper::POLL_MS),
                    exit_when_idle: m.flag("exit-when-idle"),
                },
            )?
        }
        "pool" => {
            let words = words?;
            match words.as_slice() {
                [] => return Err(ArgsError::Missing("the pool command (status)")),
                [sub, ..] if sub != "status" => return Err(ArgsError::UnknownCommand(sub.clone())),
                [_, extra, ..] => return Err(ArgsError::UnexpectedArgument(extra.clone())),
                [_] => Command::PoolStatus {
                    json: m.flag("json"),
                },
            }
        }
        other => return Err(ArgsError::UnknownCommand(other.to_owned())),
    })
}

/// The one DOMAIN (name or ID) a command works on.
fn one_domain(words: Vec<String>) -> Result<String, ArgsError> {
    let mut words = words.into_iter();
    let domain = words.next().ok_or(ArgsError::Missing("the DOMAIN"))?;
    match words.next() {
        Some(extra) => Err(ArgsError::UnexpectedArgument(extra)),
        None => Ok(domain),
    }
}

fn no_positionals(m: &Matches, command: Command) -> Result<Command, ArgsError> {
    match m.positionals.first() {
        Some(p) => Err(ArgsError::UnexpectedArgument(p.to_string_lossy().into())),
        None => Ok(command),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(line: &[&str]) -> Result<Parsed, LineError> {
        parse(line.iter().map(OsString::from))
    }

    fn run(line: &[&str]) -> Cli {
        match parse_str(line) {
            Ok(Parsed::Run(cli)) => cli,
            other => panic!("{line:?}: {other:?}"),
        }
    }

    fn error(line: &[&str]) -> String {
        match parse_str(line) {
            Err(e) => e.to_string(),
            other => panic!("{line:?}: expected an error, got {other:?}"),
        }
    }

    #[test]
    fn create_as_xl_users_write_it() {
        let cli = run(&["create", "-p", "guest.cfg", "memory=8", "name=x"]);
        assert_eq!(cli.hypervisor, HypervisorKind::Xen);
        assert_eq!(cli.verbose, 0);
        assert_eq!(
            cli.command,
            Command::Create {
                paused: true,
                count: 1,
                json: false,
                local: false,
                daemon: false,
                pool_only: false,
                file: "guest.cfg".into(),
                overrides: vec!["memory=8".into(), "name=x".into()],
            }
        );
        let cli = run(&[
            "--hypervisor",
            "sim",
            "-vv",
            "create",
            "--json",
            "-n",
            "5",
            "--local",
            "g.cfg",
            "--run-dir",
            "/tmp/r",
        ]);
        assert_eq!(cli.hypervisor, HypervisorKind::Sim);
        assert_eq!(cli.verbose, 2);
        assert_eq!(cli.run_dir, Some("/tmp/r".into()));
        let Command::Create {
            count, json, local, ..
        } = cli.command
        else {
            panic!("{:?}", cli.command)
        };
        assert_eq!((count, json, local), (5, true, true));
    }

    #[test]
    fn every_command_reads_its_arguments() {
        assert_eq!(
            run(&["destroy", "a", "7"]).command,
            Command::Destroy {
                domains: vec!["a".into(), "7".into()]
            }
        );
        assert_eq!(
            run(&["shutdown", "-wR", "--timeout", "5", "g"]).command,
            Command::Shutdown {
                wait: true,
                reboot: true,
                timeout: 5,
                domain: "g".into()
            }
        );
        assert_eq!(
            run(&["pause", "g"]).command,
            Command::Pause { domain: "g".into() }
        );
        assert_eq!(
            run(&["unpause", "g"]).command,
            Command::Unpause { domain: "g".into() }
        );
        assert_eq!(
            run(&["console", "g"]).command,
            Command::Console { domain: "g".into() }
        );
        assert_eq!(
            run(&["list", "--json"]).command,
            Command::List { json: true }
        );
        assert_eq!(run(&["info"]).command, Command::Info { json: false });
        assert_eq!(
            run(&["reap", "--watch", "--exit-when-idle", "--interval-ms=50"]).command,
            Command::Reap {
                json: false,
                watch: true,
                interval_ms: 50,
                exit_when_idle: true
            }
        );
        assert_eq!(
            run(&["pool", "status", "--json"]).command,
            Command::PoolStatus { json: true }
        );
        assert_eq!(
            run(&["--socket", "/s", "pool", "status"]).socket,
            Some("/s".into())
        );
    }

    #[test]
    fn help_and_version() {
        for line in [&["--help"][..], &["-h"], &["help"]] {
            let Ok(Parsed::Help(text)) = parse_str(line) else {
                panic!("{line:?}")
            };
            assert!(text.contains("Usage: chaos [OPTIONS] COMMAND"), "{text}");
            assert!(text.contains("  create    Create guests"), "{text}");
        }
        for line in [
            &["create", "--help"][..],
            &["help", "create"],
            &["create", "-h"],
        ] {
            let Ok(Parsed::Help(text)) = parse_str(line) else {
                panic!("{line:?}")
            };
            assert!(
                text.contains("Usage: chaos create [OPTIONS] FILE [KEY=VALUE]..."),
                "{text}"
            );
            assert!(text.contains("-n, --count N"), "{text}");
            assert!(text.contains("--run-dir DIR"), "{text}");
        }
        assert_eq!(parse_str(&["--version"]), Ok(Parsed::Version));
        assert_eq!(parse_str(&["-V"]), Ok(Parsed::Version));
        assert_eq!(parse_str(&["list", "-V"]), Ok(Parsed::Version));
    }

    #[test]
    fn bad_lines_say_what_is_wrong_and_where() {
        assert_eq!(error(&[]), "missing a command");
        assert_eq!(error(&["frobnicate"]), "unknown command 'frobnicate'");
        assert_eq!(
            error(&["help", "frobnicate"]),
            "unknown command 'frobnicate'"
        );
        assert_eq!(error(&["create"]), "create: missing the config FILE");
        assert_eq!(
            error(&["create", "--bogus", "g.cfg"]),
            "create: unknown option '--bogus'"
        );
        assert_eq!(
            error(&["create", "-n", "0", "g.cfg"]),
            "create: --count: '0' is out of range (1..=100000)"
        );
        assert_eq!(
            error(&["create", "--local", "--daemon", "g.cfg"]),
            "create: --local cannot be used with --daemon"
        );
        assert_eq!(
            error(&["create", "--pool-only", "--local", "g.cfg"]),
            "create: --pool-only cannot be used with --local"
        );
        assert_eq!(
            error(&["destroy"]),
            "destroy: missing the DOMAIN to destroy"
        );
        assert_eq!(error(&["pause"]), "pause: missing the DOMAIN");
        assert_eq!(
            error(&["pause", "a", "b"]),
            "pause: unexpected argument 'b'"
        );
        assert_eq!(error(&["list", "x"]), "list: unexpected argument 'x'");
        assert_eq!(
            error(&["reap", "--exit-when-idle"]),
            "reap: --exit-when-idle is only for use with --watch"
        );
        assert_eq!(
            error(&["reap", "--watch", "--interval-ms", "0"]),
            "reap: --interval-ms: '0' is out of range (1..=60000)"
        );
        assert_eq!(
            error(&["--hypervisor", "kvm", "list"]),
            "list: --hypervisor: 'kvm' is not a hypervisor chaos drives (xen or sim)"
        );
        assert_eq!(error(&["pool"]), "pool: missing the pool command (status)");
        assert_eq!(error(&["pool", "drain"]), "pool: unknown command 'drain'");
        assert_eq!(
            error(&["pool", "status", "x"]),
            "pool: unexpected argument 'x'"
        );
        assert_eq!(error(&["--run-dir"]), "option '--run-dir' needs a value");
        let e = parse_str(&["create", "--bogus"]).unwrap_err();
        assert_eq!(e.hint(), "see 'chaos create --help'");
    }
}
