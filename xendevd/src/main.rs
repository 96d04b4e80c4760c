//! The xendevd daemon: kernel uevents in; bridge ports, block devices and NoXS backends out.
//! See the library docs.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::{dup2_stdin, dup2_stdout, fork, setsid, ForkResult};
use xendevd::handler::{Config, Handler, StoreSource};
use xendevd::pool::Pool;
use xendevd::uevent::{vbd_event, vif_event, Received, UeventSocket};
use xendevd::vbd::{VbdHandler, VbdWorker};
use xendevd::{logger, ovs};

const DEFAULT_PID_FILE: &str = "/run/xendevd.pid";

/// Attaches Xen vif backends to bridges and gives vbd backends their devices, from kernel
/// uevents, without hotplug scripts.
#[derive(Parser, Debug)]
#[command(name = "xendevd", version)]
struct Args {
    /// Detach from the terminal and run in the background.
    #[arg(short = 'D', long)]
    daemon: bool,
    /// Write the daemon's pid here (default with --daemon: /run/xendevd.pid).
    #[arg(long, value_name = "FILE")]
    pid_file: Option<PathBuf>,
    /// Events handled in parallel (1 to 256 threads).
    #[arg(
        long,
        default_value_t = 4,
        value_name = "N",
        value_parser = parse_workers,
        allow_negative_numbers = true
    )]
    workers: usize,
    /// Bridge for vifs whose configuration names none.
    #[arg(long, default_value = "xenbr0", value_name = "BRIDGE", value_parser = parse_bridge)]
    default_bridge: String,
    /// Xenstore home of this backend domain (relative XENBUS_PATHs are below it).
    #[arg(long, default_value = "/local/domain/0", value_name = "PATH")]
    xs_home: String,
    /// ovsdb-server's socket, used for bridges that are not Linux bridges.
    #[arg(long, default_value = ovs::DEFAULT_SOCKET, value_name = "PATH")]
    ovsdb: PathBuf,
    /// The NoXS backends' socket (what chaos attaches NoXS guests on).
    #[arg(long, default_value = xendevd_api::DEFAULT_SOCKET, value_name = "PATH")]
    noxs_socket: PathBuf,
    /// chaos's NoXS guest records (in chaos's runtime directory).
    #[arg(long, default_value = "/run/chaos/noxs", value_name = "DIR")]
    noxs_records: PathBuf,
    /// Where NoXS guests' console logs go (guest-NAME.log, as xenconsoled).
    #[arg(long, default_value = xendevd::noxs::LOG_DIR, value_name = "DIR")]
    console_log_dir: PathBuf,
    /// Do not serve NoXS guests (vifs of Xenstore guests only).
    #[arg(long)]
    no_noxs: bool,
    /// Do not serve vbd backends (leave them to Xen's block hotplug script).
    #[arg(long)]
    no_vbd: bool,
    /// Log every uevent considered, not only actions.
    #[arg(short, long)]
    verbose: bool,
}

/// Most workers worth having: handling is short and the kernel serialises bridge changes
/// anyway; beyond this a typo (`--workers 40000`) would only cost threads.
const MAX_WORKERS: usize = 256;

fn parse_workers(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=MAX_WORKERS).contains(&n) => Ok(n),
        _ => Err(format!(
            "expected a number of threads from 1 to {MAX_WORKERS}"
        )),
    }
}

/// A bridge name as the kernel would accept it (clap prefixes the flag and the value).
fn parse_bridge(s: &str) -> Result<String, String> {
    xen_types::check_ifname(s)
        .map(|()| s.to_string())
        .map_err(|e| e.to_string())
}

/// SIGTERM and SIGINT, blocked and read from a signalfd that the main loop polls beside the
/// uevent socket: no signal handler, and a stop request wakes the loop at once.
fn block_stop_signals() -> nix::Result<SignalFd> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    // Threads started later (the workers) inherit the mask, so the signals reach only the fd.
    set.thread_block()?;
    SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
}

fn write_pid_file(path: &Path, pid: i32) -> std::io::Result<()> {
    let tmp = path.with_extension("pid.tmp");
    std::fs::write(&tmp, format!("{pid}\n"))?;
    std::fs::rename(&tmp, path)
}

/// Which side of [`daemonize`] we are on.
enum Side {
    /// The original process: it wrote the pid file and now exits.
    Parent,
    /// The daemon.
    Child,
}

/// Forks into the background. The parent writes the child's pid file and exits, so a
/// `Type=forking` unit sees the pid file once the parent is gone. Must run before any thread
/// is started.
fn daemonize(pid_file: &Path) -> Result<Side, String> {
    // SAFETY: the process is still single-threaded (no worker started yet), so the child
    // cannot inherit a lock held by another thread.
    let fork = unsafe { fork() };
    match fork.map_err(|e| format!("cannot fork: {e}"))? {
        ForkResult::Parent { child } => {
            if let Err(e) = write_pid_file(pid_file, child.as_raw()) {
                let _ = kill(child, Signal::SIGTERM);
                return Err(format!("cannot write {}: {e}", pid_file.display()));
            }
            Ok(Side::Parent)
        }
        ForkResult::Child => {
            setsid().map_err(|e| format!("setsid: {e}"))?;
            std::env::set_current_dir("/").map_err(|e| format!("cd /: {e}"))?;
            // stdin and stdout go to /dev/null; stderr stays, it carries the log (the journal).
            let null = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
                .map_err(|e| format!("/dev/null: {e}"))?;
            dup2_stdin(&null)
                .and_then(|()| dup2_stdout(&null))
                .map_err(|e| format!("dup2 /dev/null: {e}"))?;
            Ok(Side::Child)
        }
    }
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
        let pid_file = pid_file.as_deref().unwrap_or(Path::new(DEFAULT_PID_FILE));
        if let Side::Parent = daemonize(pid_file)? {
            return Ok(());
        }
    } else if let Some(p) = &pid_file {
        write_pid_file(p, std::process::id() as i32)
            .map_err(|e| format!("cannot write {}: {e}", p.display()))?;
    }
    let signals =
        block_stop_signals().map_err(|e| format!("cannot set up signal handling: {e}"))?;
    match xendevd::limits::raise_open_files() {
        Ok(l) if l.now > l.before => log::info!("open files: limit {} (was {})", l.now, l.before),
        Ok(l) => log::info!("open files: limit {}", l.now),
        // Serving fewer NoXS guests is still serving: say why the thousandth may be refused.
        Err(e) => log::warn!("{e}"),
    }

    let vbds = if args.no_vbd {
        None
    } else {
        let handler = VbdHandler::new(StoreSource::connect_on_demand(), &args.xs_home, true);
        let worker = VbdWorker::start(handler, None)
            .map_err(|e| format!("cannot start the vbd thread: {e}"))?;
        log::info!("serving vbd backends (loop devices for files)");
        Some(worker)
    };
    let config = Config {
        default_bridge: args.default_bridge,
        xs_home: args.xs_home,
        ovsdb_socket: args.ovsdb,
    };
    let switch = config.clone();
    let handler = Arc::new(Handler::new(config, StoreSource::connect_on_demand()));
    match xenstore::XsClient::open() {
        Ok(xs) => log::info!("xenstore reachable at {}", xs.endpoint()),
        Err(e) => {
            log::warn!("xenstore not reachable yet ({e}); NoXS vifs work, Xenstore vifs will retry")
        }
    }
    let pool =
        Pool::new(args.workers, handler, None).map_err(|e| format!("cannot start workers: {e}"))?;
    // NoXS first: once "listening" is logged, both halves serve.
    let noxs = if args.no_noxs {
        None
    } else {
        start_noxs(xendevd::noxs::Settings {
            socket: args.noxs_socket,
            records: args.noxs_records,
            log_dir: args.console_log_dir,
            switch,
        })?
    };
    log::info!("listening for vif uevents with {} workers", args.workers);

    let result = event_loop(&mut sock, &signals, &pool, vbds.as_ref());
    log::info!("stopping: finishing queued events");
    pool.shutdown();
    if let Some(w) = vbds {
        w.shutdown();
    }
    if let Some((stop, thread)) = noxs {
        stop.store(true, Ordering::SeqCst);
        if thread.join().is_err() {
            log::error!("the NoXS backends' thread panicked");
        }
    }
    if let Some(p) = &pid_file {
        let _ = std::fs::remove_file(p);
    }
    result
}

/// The NoXS backends' thread and the flag that stops it.
type NoxsThread = (Arc<AtomicBool>, std::thread::JoinHandle<()>);

/// Starts the NoXS backends in their own thread; `None` on a host without the Xen devices
/// they need (not dom0), which is not an error for the vif side.
fn start_noxs(settings: xendevd::noxs::Settings) -> Result<Option<NoxsThread>, String> {
    if !Path::new(xen_dev::evtchn::EVTCHN_PATH).exists() {
        log::warn!(
            "no {}: NoXS guests are not served",
            xen_dev::evtchn::EVTCHN_PATH
        );
        return Ok(None);
    }
    let socket = settings.socket.clone();
    let mut service =
        xendevd::noxs::Service::start(settings).map_err(|e| format!("NoXS backends: {e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name("xendevd-noxs".into())
        .spawn(move || service.run(&flag))
        .map_err(|e| format!("cannot start the NoXS backends: {e}"))?;
    log::info!("serving NoXS guests on {}", socket.display());
    Ok(Some((stop, thread)))
}

/// Hands vif events to the pool and vbd events to the vbd thread until SIGTERM or SIGINT.
fn event_loop(
    sock: &mut UeventSocket,
    signals: &SignalFd,
    pool: &Pool,
    vbds: Option<&VbdWorker>,
) -> Result<(), String> {
    loop {
        let mut fds = [
            PollFd::new(sock.as_fd(), PollFlags::POLLIN),
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(format!("waiting for uevents: {e}")),
        }
        if let Ok(Some(sig)) = signals.read_signal() {
            log::info!("signal {} received", sig.ssi_signo);
            return Ok(());
        }
        // Drain what is queued; `recv` says Timeout once the socket is empty.
        loop {
            match sock.recv(Duration::ZERO) {
                Ok(Received::Event(ev)) => {
                    let received = Instant::now();
                    match vif_event(&ev) {
                        Ok(Some(vif)) => {
                            log::debug!("{} {} ({})", vif.vif, vif.action, ev.devpath);
                            pool.submit_at(vif, received);
                        }
                        Ok(None) => match (vbds, vbd_event(&ev)) {
                            (Some(w), Ok(Some(vbd))) => {
                                log::debug!("{} {} ({})", vbd.backend_path, vbd.action, ev.devpath);
                                w.submit_at(vbd, received);
                            }
                            (_, Err(e)) => log::warn!("{e}"),
                            _ => log::trace!("ignored {}@{}", ev.action, ev.devpath),
                        },
                        Err(e) => log::warn!("{e}"),
                    }
                }
                Ok(Received::Timeout) => break,
                Ok(Received::Overrun) => log::warn!(
                    "the kernel dropped uevents (receive buffer full); some vifs may need a replug"
                ),
                Ok(Received::Ignored(why)) => log::debug!("ignored a netlink message: {why}"),
                Err(e) => return Err(format!("reading uevents: {e}")),
            }
        }
    }
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
