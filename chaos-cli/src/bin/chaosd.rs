//! `chaosd`: keeps VM shells of each configured flavor ready, creates guests from them for
//! `chaos create`, and reaps guests that shut down. All logic is in `libchaos::daemon`; this
//! parses flags, opens the hypervisor and waits for SIGTERM or SIGINT.

use chaos_cli::backend::{self, Backend, HypervisorKind};
use chaos_cli::logger;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use libchaos::daemon::signals::TermSignals;
use libchaos::daemon::{flavors, Daemon, DaemonConfig};

/// Free host memory refills leave alone unless told otherwise (MiB).
const DEFAULT_RESERVE_MIB: u64 = 256;

#[derive(Parser, Debug)]
#[command(
    name = "chaosd",
    version,
    about = "Keep Xen VM shells ready so that chaos creates guests by executing one"
)]
struct Cli {
    /// Which hypervisor to drive (sim: an in-memory host, for trying chaosd out).
    #[arg(long, value_enum, default_value_t = HypervisorKind::Xen)]
    hypervisor: HypervisorKind,
    /// Runtime state directory (default /run/chaos; CHAOS_RUN_DIR overrides).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Socket to serve (default: chaosd.sock in the runtime directory).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Config file (JSON): {"flavors": [{"memory": 4, "vcpus": 1, "count": 20}, ...],
    /// "reserve_mib": 256, "workers": 2}. Flags add to / override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// A flavor to keep ready: memory=MIB[,maxmem=MIB][,vcpus=N][,type=pv],count=N, or
    /// config=XL.CFG,count=N (the flavor of a guest config). Repeatable.
    #[arg(long = "flavor")]
    flavors: Vec<String>,
    /// Free host memory (MiB) that refills never take [default: 256].
    #[arg(long)]
    reserve_mib: Option<u64>,
    /// Refill worker threads [default: 2].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=64))]
    workers: Option<u64>,
    /// 0: do not reap (leave it to `chaos reap`). Otherwise chaosd is the reaper, woken by
    /// VIRQ_DOM_EXC or xenstored's @releaseDomain, and polls this often (ms) only when neither
    /// can wake it.
    #[arg(long, default_value_t = 100)]
    reap_interval_ms: u64,
    /// More log output (repeat for more).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
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
    let cli = Cli::parse();
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
    let backend = Backend::open(cli.hypervisor, cli.run_dir.clone())?;
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
