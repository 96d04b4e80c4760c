//! `chaos`: create and manage Xen guests, xl-style, on libchaos.
//!
//! This crate holds no toolstack logic: it parses arguments, calls libchaos and prints tables or
//! JSON.
//!
//! No Rust runtime set-up before `main` (`no_main`): std's (19 system calls and the reading of
//! /proc/self/maps for a stack guard) is a tenth of a creation's system calls through chaosd,
//! and each is tens of microseconds in a PV dom0 (docs/COSTS.md). What of it chaos needs,
//! `main` does itself: SIGPIPE kept from killing it (a closed socket or pipe is an error to
//! report and roll back, not a silent death) and standard output flushed at the end.

// (a test build keeps the test harness's main)
#![cfg_attr(not(test), no_main)]

use std::io::Write;
use std::os::raw::{c_char, c_int};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal};

use chaos_cli::backend::{self, Backend};
use chaos_cli::{console, logger, output};
use libchaos::config::DomainConfig;
use libchaos::daemon::Client;
use libchaos::toolstack::{reaper, Created, ShutdownKind};

mod command_line;

use command_line::{Cli, Command, Parsed};

/// Exit codes, as xl's: 0 done, 1 failed, 2 a bad command line.
const SUCCESS: c_int = 0;
const FAILURE: c_int = 1;
const USAGE: c_int = 2;

/// The C entry point (argv is read by std from its own copy, as `std::env::args_os`).
#[cfg_attr(not(test), no_mangle)]
extern "C" fn main(_argc: c_int, _argv: *const *const c_char) -> c_int {
    // Blocked, not ignored: a write to a closed pipe or socket fails with EPIPE just the same,
    // and std's Command clears the mask in the programs chaos starts.
    let mut pipe = SigSet::empty();
    pipe.add(Signal::SIGPIPE);
    let _ = pipe.thread_block();
    let code = chaos();
    // (std's runtime would flush it at exit; nothing else does without it)
    let _ = std::io::stdout().flush();
    code
}

fn chaos() -> c_int {
    let cli = match command_line::parse(std::env::args_os().skip(1)) {
        Ok(Parsed::Run(cli)) => cli,
        Ok(Parsed::Help(text)) => return print_and_exit(&text, SUCCESS),
        Ok(Parsed::Version) => {
            let version = format!("chaos {}\n", env!("CARGO_PKG_VERSION"));
            return print_and_exit(&version, SUCCESS);
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "chaos: error: {e} ({})", e.hint());
            return USAGE;
        }
    };
    logger::init("chaos", cli.verbose);
    // (no clock read before -vv asks for one: it is a system call in a PV dom0; the lines'
    // milliseconds count from the logger's start, just after the arguments)
    log::debug!("arguments parsed ({} page faults)", faults());
    let result = run(cli);
    log::debug!("done ({} page faults)", faults());
    match result {
        Ok(()) => SUCCESS,
        Err(e) => {
            // Not eprintln!: a closed stderr must not turn an error into a panic.
            let _ = writeln!(std::io::stderr(), "chaos: error: {e}");
            FAILURE
        }
    }
}

/// Help and version go to standard output; a closed one is not an error worth a panic.
fn print_and_exit(text: &str, code: c_int) -> c_int {
    let _ = std::io::stdout().write_all(text.as_bytes());
    code
}

fn run(cli: Cli) -> Result<(), String> {
    let socket = cli.socket.clone().unwrap_or_else(|| {
        libchaos::daemon::socket_in(&backend::run_root(cli.hypervisor, cli.run_dir.clone()))
    });
    // What chaosd can do is done there, without opening Xen here.
    match &cli.command {
        Command::Create {
            paused,
            count,
            json,
            local: false,
            daemon,
            pool_only,
            file,
            overrides,
        } => {
            let required = *daemon || *pool_only;
            if let Some(client) = connect(&socket, required)? {
                match create_via_daemon(client, file, overrides, *paused, *count, *json, *pool_only)
                {
                    // chaosd got nothing of the request: doing it here cannot do it twice.
                    Err(Routed::NotSent(e)) if !required => {
                        log::warn!("{e}; creating locally");
                    }
                    Err(Routed::NotSent(e) | Routed::Failed(e)) => return Err(e),
                    Ok(()) => return Ok(()),
                }
            }
        }
        Command::PoolStatus { json } => {
            let mut client = connect(&socket, true)?
                .ok_or_else(|| format!("chaosd is not running ({})", socket.display()))?;
            let status = client.status().map_err(|e| e.to_string())?;
            return output::pool_status(&status, *json);
        }
        _ => {}
    }
    let backend = Backend::open(cli.hypervisor, cli.run_dir.clone())?;
    let ts = backend.toolstack();
    let result = match cli.command {
        Command::Create {
            paused,
            count,
            json,
            file,
            overrides,
            ..
        } => create(ts, &file, &overrides, paused, count, json),
        Command::Destroy { domains } => domains.iter().try_for_each(|d| {
            let dom = ts.resolve(d).map_err(|e| e.to_string())?;
            ts.destroy(dom).map_err(|e| e.to_string())
        }),
        Command::Shutdown {
            wait,
            reboot,
            timeout,
            domain,
        } => {
            let kind = if reboot {
                ShutdownKind::Reboot
            } else {
                ShutdownKind::Poweroff
            };
            let dom = ts.resolve(&domain).map_err(|e| e.to_string())?;
            ts.shutdown(dom, kind, wait.then(|| Duration::from_secs(timeout)))
                .map_err(|e| e.to_string())
        }
        Command::Pause { domain } => ts
            .resolve(&domain)
            .and_then(|d| ts.pause(d))
            .map_err(|e| e.to_string()),
        Command::Unpause { domain } => ts
            .resolve(&domain)
            .and_then(|d| ts.unpause(d))
            .map_err(|e| e.to_string()),
        Command::List { json } => {
            let domains = ts.list().map_err(|e| e.to_string())?;
            output::list(&domains, json)
        }
        Command::Reap {
            json,
            watch: true,
            interval_ms,
            exit_when_idle,
        } => reap_watch(ts, json, Duration::from_millis(interval_ms), exit_when_idle),
        Command::Reap { json, .. } => {
            let reaped = ts.reap().map_err(|e| e.to_string())?;
            output::reaped(&reaped, json)
        }
        Command::Console { domain } => {
            let dom = ts.resolve(&domain).map_err(|e| e.to_string())?;
            let server = ts.console_server(dom).map_err(|e| e.to_string())?;
            console::attach(dom, &server)
        }
        Command::Info { json } => {
            let phys = ts.hypervisor().physinfo().map_err(|e| e.to_string())?;
            let noxs = ts.hypervisor().noxs_flavour();
            output::info(ts.hypervisor().name(), &phys, noxs, ts.state().root(), json)
        }
        Command::PoolStatus { .. } => Err("unreachable: pool commands go to chaosd".into()),
    };
    // The simulated host is saved even after a failed command: a failure must leave it as a
    // real host would be left (after rollback), and that is what later commands should see.
    backend.close()?;
    result
}

/// The process's minor page faults so far (for -vv: in a PV dom0 under TCG each costs a
/// fraction of a millisecond, so they are much of a short command's time).
fn faults() -> i64 {
    use nix::sys::resource::{getrusage, UsageWho};
    getrusage(UsageWho::RUSAGE_SELF).map_or(-1, |u| u.minor_page_faults())
}

fn ms_since(t: std::time::Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// chaosd's connection, or `None` (use the local path) when no daemon listens and none is
/// required.
fn connect(socket: &std::path::Path, required: bool) -> Result<Option<Client>, String> {
    Client::connect_if_running(socket, required).map_err(|e| e.to_string())
}

/// The config file with its overrides, warnings printed.
fn load_config(file: &std::path::Path, overrides: &[String]) -> Result<DomainConfig, String> {
    let loaded = libchaos::config::load(file, overrides).map_err(|e| e.to_string())?;
    for w in &loaded.warnings {
        let _ = writeln!(std::io::stderr(), "chaos: warning: {w}");
    }
    Ok(loaded.config)
}

/// The config as chaos parsed it, with its paths made absolute for the daemon.
fn load_for_daemon(file: &std::path::Path, overrides: &[String]) -> Result<DomainConfig, String> {
    let cfg = load_config(file, overrides)?;
    let abs =
        |p: &std::path::Path| std::path::absolute(p).map_err(|e| format!("{}: {e}", p.display()));
    let kernel = abs(&cfg.kernel)?;
    let ramdisk = cfg.ramdisk.as_deref().map(abs).transpose()?;
    cfg.with(|spec| {
        spec.kernel = kernel;
        spec.ramdisk = ramdisk;
    })
    .map_err(|e| e.to_string())
}

/// Creates `count` guests from one config (names get -1 .. -N when there are several) with
/// `make`, printing each as it comes (one line, or one JSON object per line with `--json`),
/// with a progress line (count, rate, time left) below them when stderr is a terminal.
fn create_each(
    base: &DomainConfig,
    count: u32,
    json: bool,
    mut make: impl FnMut(&DomainConfig) -> Result<Created, String>,
) -> Result<(), String> {
    let mut progress = output::Progress::on_terminal(count);
    for i in 1..=count {
        let cfg = base.numbered(i, count).map_err(|e| e.to_string())?;
        let created = make(&cfg).map_err(|e| {
            if count > 1 {
                format!("guest {i} of {count} ({}): {e}", cfg.name)
            } else {
                e
            }
        })?;
        if let Some(p) = &mut progress {
            p.clear();
        }
        output::created(&created, json)?;
        // The reader went away (`chaos create -n 100 | head -1`): that is the end, as for any
        // command in a pipe; the guests made so far are recorded.
        if output::closed() {
            break;
        }
        if let Some(p) = &mut progress {
            p.advance();
        }
    }
    if let Some(p) = progress {
        p.finish();
    }
    Ok(())
}

/// How a creation through chaosd failed.
enum Routed {
    /// chaosd got nothing of the first request (the local path may still do it).
    NotSent(String),
    Failed(String),
}

fn create_via_daemon(
    mut client: Client,
    file: &std::path::Path,
    overrides: &[String],
    paused: bool,
    count: u32,
    json: bool,
    pool_only: bool,
) -> Result<(), Routed> {
    let loading = log::log_enabled!(log::Level::Debug).then(std::time::Instant::now);
    let base = load_for_daemon(file, overrides).map_err(Routed::Failed)?;
    if let Some(t) = loading {
        log::debug!(
            "config loaded in {:.3} ms ({} page faults so far)",
            ms_since(t),
            faults()
        );
    }
    let mut first_unsent = None;
    let mut first = true;
    let result = create_each(&base, count, json, |cfg| {
        let r = client.create(cfg, paused, pool_only);
        log::debug!("reply in hand ({} page faults so far)", faults());
        if let Err(e) = &r {
            if first && e.nothing_sent() {
                first_unsent = Some(e.to_string());
            }
        }
        first = false;
        r.map_err(|e| e.to_string())
    });
    log::debug!("printed ({} page faults so far)", faults());
    match (result, first_unsent) {
        (Err(_), Some(e)) => Err(Routed::NotSent(e)),
        (r, _) => r.map_err(Routed::Failed),
    }
}

fn create(
    ts: &libchaos::toolstack::Toolstack,
    file: &std::path::Path,
    overrides: &[String],
    paused: bool,
    count: u32,
    json: bool,
) -> Result<(), String> {
    let base = load_config(file, overrides)?;
    let created = create_each(&base, count, json, |cfg| {
        ts.create(cfg, paused).map_err(|e| e.to_string())
    });
    // A guest that powers off must go away without anything started by hand, as with xl:
    // one reaper for all guests (chaosd's, or this one) once there is something to reap.
    if ts.hypervisor().name() == "xen" {
        let started = std::env::current_exe()
            .and_then(|exe| reaper::start_in_background(&exe, ts.state().root()));
        match started {
            Ok(true) => log::info!("started a reaper (chaos reap --watch --exit-when-idle)"),
            Ok(false) => {}
            Err(e) => eprintln!("chaos: warning: cannot start a reaper: {e}"),
        }
    }
    created
}

/// `chaos reap --watch`: becomes the reaper once it holds the reaper's lock.
fn reap_watch(
    ts: &libchaos::toolstack::Toolstack,
    json: bool,
    poll: Duration,
    exit_when_idle: bool,
) -> Result<(), String> {
    let root = ts.state().root();
    let mut said = false;
    let _lock = loop {
        match reaper::try_lock(root).map_err(|e| format!("{}: {e}", root.display()))? {
            Some(lock) => break lock,
            None if exit_when_idle => return Ok(()),
            None => {
                if !said {
                    let _ = writeln!(
                        std::io::stderr(),
                        "chaos: another process reaps; waiting to take over"
                    );
                    said = true;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    };
    // Until killed (or idle), or until the reader of its output goes away.
    let stop = AtomicBool::new(false);
    let idle = exit_when_idle.then_some(reaper::IDLE_EXIT);
    ts.run_reaper(&stop, idle, poll, |done| {
        if let Err(e) = output::reaped(done, json) {
            log::error!("{e}");
        }
        if output::closed() {
            stop.store(true, std::sync::atomic::Ordering::Release);
        }
    });
    Ok(())
}
