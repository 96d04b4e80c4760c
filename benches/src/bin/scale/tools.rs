//! The ways of creating a guest that the harness compares, each timed the same way (the wall
//! time of one creation or destruction, as its user waits for it):
//!
//! - `cli-xs`: `chaos create --local` (Xenstore plane), a process per guest;
//! - `chaosd`: `chaos create --daemon`, chaosd executing one of its ready shells;
//! - `cli-noxs`: `chaos create --local` of a NoXS guest (`chaos_control_plane = "noxs"`),
//!   xendevd serving its console;
//! - `lib`: `Toolstack::create` in this process (an orchestrator embedding libchaos);
//! - `xl`: `xl create`, a process per guest (and xl's own per-guest background process).

use std::fs::File;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libchaos::config::DomainConfig;
use libchaos::daemon::Client;
use libchaos::hypervisor::DomId;
use libchaos::toolstack::{Created, Toolstack};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    CliXs,
    Chaosd,
    CliNoxs,
    Lib,
    Xl,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::CliXs,
        Kind::Chaosd,
        Kind::CliNoxs,
        Kind::Lib,
        Kind::Xl,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::CliXs => "cli-xs",
            Kind::Chaosd => "chaosd",
            Kind::CliNoxs => "cli-noxs",
            Kind::Lib => "lib",
            Kind::Xl => "xl",
        }
    }

    pub fn parse(s: &str) -> Result<Kind, String> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown tool {s:?} (expected one of {})", names.join(", "))
            })
    }

    pub fn is_chaos(self) -> bool {
        self != Kind::Xl
    }

    /// Whether the tool needs xenstored (all but NoXS).
    pub fn needs_xenstore(self) -> bool {
        self != Kind::CliNoxs
    }

    pub fn describe(self) -> &'static str {
        match self {
            Kind::CliXs => "chaos create --local (Xenstore)",
            Kind::Chaosd => "chaos create via chaosd's ready shells",
            Kind::CliNoxs => "chaos create --local, NoXS (xendevd)",
            Kind::Lib => "libchaos Toolstack::create in-process",
            Kind::Xl => "xl create",
        }
    }
}

/// One creation as the harness saw it.
#[derive(Debug, Clone, Default)]
pub struct Made {
    pub domid: Option<u16>,
    pub wall_us: u64,
    /// The toolstack's own total (its phases), where chaos reports it.
    pub chaos_us: Option<u64>,
    /// chaos's creation path: "pool" or "direct".
    pub path: Option<String>,
    pub phases: Vec<(String, u64)>,
}

/// What the tools share: the configs and where daemons log.
#[derive(Debug)]
pub struct Setup {
    /// The noop guest on the Xenstore plane (xl reads it too).
    pub xs_cfg: PathBuf,
    /// The noop guest on the NoXS plane.
    pub noxs_cfg: PathBuf,
    pub paused: bool,
    pub out_dir: PathBuf,
    /// Ready shells chaosd keeps.
    pub pool_shells: u32,
    /// chaos's runtime directory (chaosd's socket is in it).
    pub run_dir: PathBuf,
}

/// A daemon the harness started, stopped with SIGTERM.
#[derive(Debug)]
struct Daemon {
    name: &'static str,
    child: Child,
}

impl Daemon {
    fn spawn(name: &'static str, args: &[String], log: &Path) -> Result<Daemon, String> {
        let log = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(name)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        Ok(Daemon { name, child })
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn stop(mut self) -> Result<(), String> {
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if let Ok(Some(status)) = self.child.try_wait() {
                return if status.success() {
                    Ok(())
                } else {
                    Err(format!("{} exited with {status}", self.name))
                };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        Err(format!("{} did not stop within 60 s of SIGTERM", self.name))
    }
}

/// Polls `ready` every 50 ms until it holds or `limit` passes.
fn wait_for(limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if ready() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A tool, with whatever it needs running (chaosd, xendevd) while it is in use.
pub struct Tool {
    pub kind: Kind,
    daemon: Option<Daemon>,
    /// The toolstack the `lib` tool creates with (shared with the harness).
    ts: Arc<Toolstack>,
    /// The parsed config for `lib` (renamed per guest outside the timed part).
    lib_cfg: Option<DomainConfig>,
}

impl std::fmt::Debug for Tool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tool").field("kind", &self.kind).finish()
    }
}

/// Longest one command may take: a tool that hangs (xl waits forever for a xenstored that
/// died) is killed and reported instead of stalling the whole run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `cmd` to its end (at most [`COMMAND_TIMEOUT`]); its wall time in microseconds and
/// its stdout.
fn run_timed(cmd: &mut Command) -> Result<(u64, String), String> {
    let shown = format!("{:?}", cmd.get_program());
    let t = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    let pid = Pid::from_raw(child.id() as i32);
    // The waiting thread ends the timing the moment the child is reaped.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let out = child.wait_with_output();
        let _ = tx.send((out, t.elapsed()));
    });
    let (out, took) = match rx.recv_timeout(COMMAND_TIMEOUT) {
        Ok(r) => r,
        Err(_) => {
            let _ = kill(pid, Signal::SIGKILL);
            return Err(format!(
                "{shown} did not finish within {COMMAND_TIMEOUT:?}; killed"
            ));
        }
    };
    let out = out.map_err(|e| format!("{shown}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok((
        took.as_micros() as u64,
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

fn quoted_name(name: &str) -> String {
    format!("name=\"{name}\"")
}

impl Tool {
    pub fn new(kind: Kind, ts: Arc<Toolstack>) -> Tool {
        Tool {
            kind,
            daemon: None,
            ts,
            lib_cfg: None,
        }
    }

    /// The toolstack the `lib` tool uses.
    pub fn toolstack(&self) -> Arc<Toolstack> {
        self.ts.clone()
    }

    /// Starts what the tool needs: chaosd with its shells ready, xendevd, the parsed config.
    pub fn start(&mut self, setup: &Setup) -> Result<(), String> {
        match self.kind {
            Kind::Chaosd => {
                let flavor = format!(
                    "config={},count={}",
                    setup.xs_cfg.display(),
                    setup.pool_shells
                );
                let mut d = Daemon::spawn(
                    "chaosd",
                    &["--flavor".into(), flavor],
                    &setup.out_dir.join("chaosd.log"),
                )?;
                let socket = libchaos::daemon::socket_in(&setup.run_dir);
                let target = setup.pool_shells as usize;
                // (a daemon that died ends the wait too, and is reported below)
                wait_for(Duration::from_secs(120), || {
                    !d.alive()
                        || Client::connect(&socket)
                            .ok()
                            .and_then(|mut c| c.status().ok())
                            .is_some_and(|s| s.flavors.iter().all(|f| f.ready >= target))
                });
                let ready = d.alive()
                    && Client::connect(&socket)
                        .ok()
                        .and_then(|mut c| c.status().ok())
                        .is_some_and(|s| s.flavors.iter().all(|f| f.ready >= target));
                self.daemon = Some(d);
                if !ready {
                    return Err(format!(
                        "chaosd did not get {target} shells ready within 120 s (see chaosd.log)"
                    ));
                }
            }
            Kind::CliNoxs => {
                let mut d = Daemon::spawn("xendevd", &[], &setup.out_dir.join("xendevd.log"))?;
                // Listening, not only there: a socket file may outlive an earlier xendevd.
                let socket = Path::new(xendevd_api::DEFAULT_SOCKET);
                let listening = || UnixStream::connect(socket).is_ok();
                wait_for(Duration::from_secs(30), || !d.alive() || listening());
                let ready = d.alive() && listening();
                self.daemon = Some(d);
                if !ready {
                    return Err(format!(
                        "xendevd did not open {} within 30 s (see xendevd.log)",
                        socket.display()
                    ));
                }
            }
            Kind::Lib => {
                let loaded =
                    libchaos::config::load(&setup.xs_cfg, &[]).map_err(|e| e.to_string())?;
                self.lib_cfg = Some(loaded.config);
            }
            Kind::CliXs | Kind::Xl => {}
        }
        Ok(())
    }

    /// Stops what [`start`](Self::start) started.
    pub fn stop(&mut self) -> Result<(), String> {
        match self.daemon.take() {
            Some(d) => d.stop(),
            None => Ok(()),
        }
    }

    pub fn create(&mut self, setup: &Setup, name: &str) -> Result<Made, String> {
        match self.kind {
            Kind::CliXs | Kind::Chaosd | Kind::CliNoxs => {
                let mut cmd = Command::new("chaos");
                cmd.args(["create", "--json"]);
                cmd.arg(if self.kind == Kind::Chaosd {
                    "--daemon"
                } else {
                    "--local"
                });
                if setup.paused {
                    cmd.arg("-p");
                }
                cmd.arg(if self.kind == Kind::CliNoxs {
                    &setup.noxs_cfg
                } else {
                    &setup.xs_cfg
                });
                cmd.arg(quoted_name(name));
                let (wall_us, stdout) = run_timed(&mut cmd)?;
                let line = stdout.lines().last().unwrap_or_default();
                let created: Created = serde_json::from_str(line)
                    .map_err(|e| format!("chaos create printed {line:?}: {e}"))?;
                Ok(made_of(&created, wall_us))
            }
            Kind::Lib => {
                let base = self.lib_cfg.as_ref().ok_or("lib tool not started")?;
                let cfg = base.renamed(name.to_string()).map_err(|e| e.to_string())?;
                let t = Instant::now();
                let created = self
                    .ts
                    .create(&cfg, setup.paused)
                    .map_err(|e| e.to_string())?;
                Ok(made_of(&created, t.elapsed().as_micros() as u64))
            }
            Kind::Xl => {
                let mut cmd = Command::new("xl");
                cmd.args(["create", "-q"]);
                if setup.paused {
                    cmd.arg("-p");
                }
                cmd.arg(&setup.xs_cfg).arg(quoted_name(name));
                let (wall_us, _) = run_timed(&mut cmd)?;
                Ok(Made {
                    wall_us,
                    ..Made::default()
                })
            }
        }
    }

    /// Destroys a guest this tool created; returns the wall time in microseconds.
    pub fn destroy(&mut self, name: &str, domid: Option<u16>) -> Result<u64, String> {
        match self.kind {
            Kind::Lib => {
                let dom = domid.ok_or("no domid for the lib tool's guest")?;
                let t = Instant::now();
                self.ts.destroy(DomId(dom)).map_err(|e| e.to_string())?;
                Ok(t.elapsed().as_micros() as u64)
            }
            Kind::Xl => run_timed(Command::new("xl").args(["destroy", name])).map(|r| r.0),
            _ => run_timed(Command::new("chaos").args(["destroy", name])).map(|r| r.0),
        }
    }
}

fn made_of(c: &Created, wall_us: u64) -> Made {
    Made {
        domid: Some(c.domid.0),
        wall_us,
        chaos_us: Some(c.timings.total_us()),
        path: Some(
            match c.path {
                libchaos::toolstack::CreationPath::Pool => "pool",
                libchaos::toolstack::CreationPath::Direct => "direct",
            }
            .into(),
        ),
        phases: c
            .timings
            .phases()
            .iter()
            .map(|p| (p.name.to_string(), p.us))
            .collect(),
    }
}
