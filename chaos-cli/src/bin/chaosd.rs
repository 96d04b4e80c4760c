//! `chaosd`: keeps VM shells of each configured flavor ready, creates guests from them for
//! `chaos create`, and reaps guests that shut down. All logic is in `libchaos::daemon`; this
//! parses flags, opens the hypervisor and waits for SIGTERM or SIGINT.

use chaos_cli::args::{self, ArgsError, Opt, Scanner};
use chaos_cli::backend::{self, Backend, HypervisorKind, Opener};
use chaos_cli::logger;

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use libchaos::daemon::signals::TermSignals;
use libchaos::daemon::{flavors, Daemon, DaemonConfig};

/// Free host memory refills leave alone unless told otherwise (MiB).
const DEFAULT_RESERVE_MIB: u64 = 256;

/// What chaosd's command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cli {
    hypervisor: HypervisorKind,
    run_dir: Option<PathBuf>,
    socket: Option<PathBuf>,
    config: Option<PathBuf>,
    flavors: Vec<String>,
    reserve_mib: Option<u64>,
    workers: Option<u64>,
    reap_interval_ms: u64,
    verbose: u8,
}

const OPTIONS: &[Opt] = &[
    Opt::value("hypervisor", None, "xen|sim", "Which hypervisor to drive (sim: an in-memory host, for trying chaosd out) [default: xen]"),
    Opt::value("run-dir", None, "DIR", "Runtime state directory (default /run/chaos; CHAOS_RUN_DIR overrides)"),
    Opt::value("socket", None, "PATH", "Socket to serve (default: chaosd.sock in the runtime directory)"),
    Opt::value("config", None, "FILE", "Config file (JSON): {\"flavors\": [{\"memory\": 4, \"vcpus\": 1, \"count\": 20}, ...], \"reserve_mib\": 256, \"workers\": 2}. Flags add to / override it"),
    Opt::value("flavor", None, "SPEC", "A flavor to keep ready: memory=MIB[,maxmem=MIB][,vcpus=N][,type=pv],count=N, or config=XL.CFG,count=N (the flavor of a guest config). Repeatable"),
    Opt::value("reserve-mib", None, "MIB", "Free host memory (MiB) that refills never take [default: 256]"),
    Opt::value("workers", None, "N", "Refill worker threads [default: 2]"),
    Opt::value("reap-interval-ms", None, "MS", "0: do not reap (leave it to `chaos reap`). Otherwise chaosd is the reaper, woken by VIRQ_DOM_EXC or xenstored's @releaseDomain, and polls this often (ms) only when neither can wake it [default: 1000]"),
    Opt::flag("verbose", Some('v'), "More log output (repeat for more)"),
    Opt::flag("help", Some('h'), "Print help"),
    Opt::flag("version", Some('V'), "Print version"),
];

/// What to do with chaosd's line.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Parsed {
    Run(Cli),
    Help,
    Version,
}

fn parse(line: impl IntoIterator<Item = OsString>) -> Result<Parsed, ArgsError> {
    let mut scanner = Scanner::new(line);
    scanner.rest(&[OPTIONS])?;
    let m = scanner.matches;
    if m.flag("help") {
        return Ok(Parsed::Help);
    }
    if m.flag("version") {
        return Ok(Parsed::Version);
    }
    if let Some(p) = m.positionals.first() {
        return Err(ArgsError::UnexpectedArgument(p.to_string_lossy().into()));
    }
    let hypervisor = m.parsed("hypervisor")?.unwrap_or(HypervisorKind::Xen);
    let flavors = m
        .all("flavor")
        .map(|f| {
            f.to_str()
                .map(str::to_owned)
                .ok_or_else(|| ArgsError::NotUtf8 {
                    option: "flavor",
                    value: f.to_owned(),
                })
        })
        .collect::<Result<_, _>>()?;
    Ok(Parsed::Run(Cli {
        hypervisor,
        run_dir: m.path("run-dir"),
        socket: m.path("socket"),
        config: m.path("config"),
        flavors,
        reserve_mib: m.number("reserve-mib", 0..=u64::MAX)?,
        workers: m.number("workers", 1..=64)?,
        reap_interval_ms: m
            .number("reap-interval-ms", 0..=u64::MAX)?
            .unwrap_or(libchaos::toolstack::reaper::POLL_MS),
        verbose: u8::try_from(m.count("verbose")).unwrap_or(u8::MAX),
    }))
}

fn main() -> ExitCode {
    // Before any thread exists, so every thread inherits the blocked mask.
    let signals = match TermSignals::block() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("chaosd: error: blocking SIGTERM/SIGINT: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cli = match parse(std::env::args_os().skip(1)) {
        Ok(Parsed::Run(cli)) => cli,
        Ok(Parsed::Help) => {
            let about = "Keep Xen VM shells ready so that chaos creates guests by executing one";
            let text = args::help("chaosd [OPTIONS]", about, &[OPTIONS], "");
            let _ = std::io::stdout().write_all(text.as_bytes());
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Version) => {
            let _ = writeln!(std::io::stdout(), "chaosd {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("chaosd: error: {e} (see 'chaosd --help')");
            return ExitCode::from(2);
        }
    };
    logger::init("chaosd", cli.verbose.max(1));
    match run(cli, &signals) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chaosd: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli, signals: &TermSignals) -> Result<(), String> {
    let mut settings = match &cli.config {
        Some(path) => flavors::load_file(path).map_err(|e| e.to_string())?,
        None => flavors::FileSettings::default(),
    };
    for spec in &cli.flavors {
        settings
            .flavors
            .push(flavors::parse_spec(spec).map_err(|e| e.to_string())?);
    }
    if settings.flavors.is_empty() {
        log::warn!("no flavors configured (--flavor or --config): every creation goes direct");
    }
    let root = backend::run_root(cli.hypervisor, cli.run_dir.clone());
    let socket = cli
        .socket
        .clone()
        .unwrap_or_else(|| libchaos::daemon::socket_in(&root));
    let backend = Backend::open_as(cli.hypervisor, cli.run_dir.clone(), Opener::Daemon)?;
    let phys = backend
        .toolstack()
        .hypervisor()
        .physinfo()
        .map_err(|e| e.to_string())?;
    let config = DaemonConfig {
        socket: socket.clone(),
        reserve_mib: cli
            .reserve_mib
            .or(settings.reserve_mib)
            .unwrap_or(DEFAULT_RESERVE_MIB),
        workers: cli
            .workers
            .map(|w| w as usize)
            .or(settings.workers)
            .unwrap_or(2),
        reap_interval: (cli.reap_interval_ms > 0)
            .then(|| Duration::from_millis(cli.reap_interval_ms)),
        flavors: settings.flavors,
    };
    for f in &config.flavors {
        log::info!(
            "keeping {} shell(s) of {}",
            f.target,
            libchaos::daemon::describe_flavor(&f.flavor)
        );
    }
    log::info!(
        "host: {} MiB free; reserve {} MiB; {} worker(s)",
        phys.free_pages * libchaos::hypervisor::PAGE_SIZE as u64 / (1024 * 1024),
        config.reserve_mib,
        config.workers
    );
    let daemon = Daemon::start(backend.shared(), config).map_err(|e| e.to_string())?;
    log::info!("serving {}", socket.display());
    let sig = signals.wait().map_err(|e| format!("sigwait: {e}"))?;
    log::info!("{sig}: stopping");
    let destroyed = daemon.shutdown();
    log::info!("destroyed {destroyed} unused shell(s)");
    backend.close()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(line: &[&str]) -> Result<Parsed, ArgsError> {
        parse(line.iter().map(OsString::from))
    }

    #[test]
    fn the_lab_and_the_docs_lines_parse() {
        let Ok(Parsed::Run(cli)) = parse_str(&[
            "--hypervisor=sim",
            "--flavor",
            "memory=16,count=1",
            "--flavor=config=g.cfg,count=2",
            "--reap-interval-ms",
            "0",
            "--workers",
            "3",
            "-vv",
        ]) else {
            panic!("expected a line to run")
        };
        assert_eq!(cli.hypervisor, HypervisorKind::Sim);
        assert_eq!(cli.flavors, ["memory=16,count=1", "config=g.cfg,count=2"]);
        assert_eq!(cli.reap_interval_ms, 0);
        assert_eq!(cli.workers, Some(3));
        assert_eq!(cli.reserve_mib, None);
        assert_eq!(cli.verbose, 2);
        let Ok(Parsed::Run(cli)) = parse_str(&[]) else {
            panic!("expected the defaults")
        };
        assert_eq!(
            (cli.hypervisor, cli.reap_interval_ms),
            (HypervisorKind::Xen, 1000)
        );
        assert_eq!(parse_str(&["--help"]), Ok(Parsed::Help));
        assert_eq!(parse_str(&["-V"]), Ok(Parsed::Version));
    }

    #[test]
    fn bad_lines_name_the_option() {
        let err = |line: &[&str]| parse_str(line).map(|_| ()).unwrap_err().to_string();
        assert_eq!(
            err(&["--workers", "0"]),
            "--workers: '0' is out of range (1..=64)"
        );
        assert_eq!(err(&["--flavor"]), "option '--flavor' needs a value");
        assert_eq!(err(&["--pool"]), "unknown option '--pool'");
        assert_eq!(err(&["extra"]), "unexpected argument 'extra'");
        assert_eq!(
            err(&["--hypervisor", "kvm"]),
            "--hypervisor: 'kvm' is not a hypervisor chaos drives (xen or sim)"
        );
    }
}
