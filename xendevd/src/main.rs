//! The xendevd daemon: kernel uevents in, bridge ports out. See the library docs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use xendevd::handler::{Config, Handler, StoreSource};
use xendevd::pool::Pool;
use xendevd::uevent::{vif_event, Received, UeventSocket};
use xendevd::{logger, ovs};

const DEFAULT_PID_FILE: &str = "/run/xendevd.pid";

/// Attaches Xen vif backends to bridges from kernel uevents, without hotplug scripts.
#[derive(Parser, Debug)]
#[command(name = "xendevd", version)]
struct Args {
    /// Detach from the terminal and run in the background.
    #[arg(short = 'D', long)]
    daemon: bool,
    /// Write the daemon's pid here (default with --daemon: /run/xendevd.pid).
    #[arg(long, value_name = "FILE")]
    pid_file: Option<PathBuf>,
    /// Events handled in parallel.
    #[arg(long, default_value_t = 4, value_name = "N")]
    workers: usize,
    /// Bridge for vifs whose configuration names none.
    #[arg(long, default_value = "xenbr0", value_name = "BRIDGE")]
    default_bridge: String,
    /// Xenstore home of this backend domain (relative XENBUS_PATHs are below it).
    #[arg(long, default_value = "/local/domain/0", value_name = "PATH")]
    xs_home: String,
    /// ovsdb-server's socket, used for bridges that are not Linux bridges.
    #[arg(long, default_value = ovs::DEFAULT_SOCKET, value_name = "PATH")]
    ovsdb: PathBuf,
    /// Log every uevent considered, not only actions.
    #[arg(short, long)]
    verbose: bool,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() -> std::io::Result<()> {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe); `sa` is fully
        // initialised. No SA_RESTART, so a blocked poll(2) returns EINTR at once.
        let rc = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn write_pid_file(path: &Path, pid: i32) -> std::io::Result<()> {
    let tmp = path.with_extension("pid.tmp");
    std::fs::write(&tmp, format!("{pid}\n"))?;
    std::fs::rename(&tmp, path)
}

/// Forks into the background. The parent writes the child's pid file and exits, so a
/// `Type=forking` unit sees the pid file once the parent is gone. Must run before any thread
/// is started.
fn daemonize(pid_file: &Path) -> std::io::Result<()> {
    // SAFETY: called while the process is still single-threaded.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid > 0 {
        if let Err(e) = write_pid_file(pid_file, pid) {
            eprintln!("xendevd: cannot write {}: {e}", pid_file.display());
            // SAFETY: signalling the child we just created.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            std::process::exit(1);
        }
        std::process::exit(0);
    }
    // SAFETY: setsid has no memory-safety preconditions.
    if unsafe { libc::setsid() } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    std::env::set_current_dir("/")?;
    // stdin and stdout go to /dev/null; stderr stays, it carries the log (the journal).
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    for fd in [libc::STDIN_FILENO, libc::STDOUT_FILENO] {
        // SAFETY: dup2 onto standard descriptors; `null` stays open for the call.
        if unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), fd) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn run(args: Args) -> Result<(), String> {
    // Listen before anything else so no event is lost, and so errors reach the terminal.
    let mut sock =
        UeventSocket::open().map_err(|e| format!("cannot listen to kernel uevents: {e}"))?;
    let pid_file = match (&args.pid_file, args.daemon) {
        (Some(p), _) => Some(p.clone()),
        (None, true) => Some(PathBuf::from(DEFAULT_PID_FILE)),
        (None, false) => None,
    };
    if args.daemon {
        daemonize(pid_file.as_deref().unwrap_or(Path::new(DEFAULT_PID_FILE)))
            .map_err(|e| format!("cannot daemonize: {e}"))?;
    } else if let Some(p) = &pid_file {
        write_pid_file(p, std::process::id() as i32)
            .map_err(|e| format!("cannot write {}: {e}", p.display()))?;
    }
    install_signal_handlers().map_err(|e| format!("cannot install signal handlers: {e}"))?;

    let config = Config {
        default_bridge: args.default_bridge,
        xs_home: args.xs_home,
        ovsdb_socket: args.ovsdb,
    };
    let handler = Arc::new(Handler::new(config, StoreSource::connect_on_demand()));
    match xenstore::XsClient::open() {
        Ok(xs) => log::info!("xenstore reachable at {}", xs.endpoint()),
        Err(e) => {
            log::warn!("xenstore not reachable yet ({e}); NoXS vifs work, Xenstore vifs will retry")
        }
    }
    let pool =
        Pool::new(args.workers, handler, None).map_err(|e| format!("cannot start workers: {e}"))?;
    log::info!(
        "listening for vif uevents with {} workers",
        args.workers.max(1)
    );

    let mut result = Ok(());
    while !STOP.load(Ordering::SeqCst) {
        match sock.recv(Duration::from_millis(500)) {
            Ok(Received::Event(ev)) => {
                let received = Instant::now();
                match vif_event(&ev) {
                    Ok(Some(vif)) => {
                        log::debug!("{} {} ({})", vif.vif, vif.action, ev.devpath);
                        pool.submit_at(vif, received);
                    }
                    Ok(None) => log::trace!("ignored {}@{}", ev.action, ev.devpath),
                    Err(e) => log::warn!("{e}"),
                }
            }
            Ok(Received::Timeout) => {}
            Ok(Received::Overrun) => {
                log::warn!(
                    "the kernel dropped uevents (receive buffer full); some vifs may need a replug"
                )
            }
            Ok(Received::Ignored(why)) => log::debug!("ignored a netlink message: {why}"),
            Err(e) => {
                result = Err(format!("reading uevents: {e}"));
                break;
            }
        }
    }
    log::info!("stopping: finishing queued events");
    pool.shutdown();
    if let Some(p) = &pid_file {
        let _ = std::fs::remove_file(p);
    }
    result
}

fn main() -> ExitCode {
    let args = Args::parse();
    logger::init(if args.verbose {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Info
    });
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
