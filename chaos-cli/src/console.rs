//! `chaos console`: the guest's PV console on this terminal, as `xl console` does. Xenstore
//! guests are served by xenconsoled, through Xen's own `xenconsole` client; NoXS guests by
//! xendevd, whose socket streams the console. Ctrl-] leaves, as with xl.

use std::io::{self, IsTerminal, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use libchaos::hypervisor::DomId;
use libchaos::toolstack::ConsoleServer;
use nix::sys::termios::{self, SetArg, Termios};

/// Where Debian and upstream Xen install the client.
const XENCONSOLE: &[&str] = &[
    "/usr/lib/xen-4.17/bin/xenconsole",
    "/usr/lib/xen/bin/xenconsole",
    "/usr/libexec/xen/bin/xenconsole",
];

/// The key that leaves the console (Ctrl-]).
const ESCAPE: u8 = 0x1d;

/// Attaches this terminal to the guest's console; returns when the user leaves or the guest's
/// console goes away.
pub fn attach(dom: DomId, server: &ConsoleServer) -> Result<(), String> {
    match server {
        ConsoleServer::Xenconsoled => Err(exec_xenconsole(dom)),
        ConsoleServer::Xendevd(socket) => relay(dom, socket),
    }
}

/// Replaces this process with xenconsole; returns only with the reason that failed.
fn exec_xenconsole(dom: DomId) -> String {
    let Some(client) = XENCONSOLE.iter().find(|p| Path::new(p).exists()) else {
        return format!(
            "no xenconsole client found (looked in {}); it comes with Xen's tools",
            XENCONSOLE.join(", ")
        );
    };
    let err = Command::new(client)
        .arg(dom.0.to_string())
        .args(["--num", "0", "--type", "pv"])
        .exec();
    format!("{client}: {err}")
}

/// Puts the terminal in raw mode until dropped (only when stdin is one).
struct RawTerminal(Option<Termios>);

impl RawTerminal {
    fn enter() -> Result<RawTerminal, String> {
        let stdin = io::stdin();
        if !stdin.is_terminal() {
            return Ok(RawTerminal(None));
        }
        let saved =
            termios::tcgetattr(stdin.as_fd()).map_err(|e| format!("terminal settings: {e}"))?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)
            .map_err(|e| format!("terminal settings: {e}"))?;
        Ok(RawTerminal(Some(saved)))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = termios::tcsetattr(io::stdin().as_fd(), SetArg::TCSANOW, saved);
        }
    }
}

/// Copies the guest's output to stdout and stdin to the guest, until Ctrl-], the end of
/// stdin, or the console's end (the guest went away). Without a terminal (a script, a test)
/// only the output is shown, until the console ends.
fn relay(dom: DomId, socket: &Path) -> Result<(), String> {
    let client = xendevd_api::Client::connect(socket).map_err(|e| e.to_string())?;
    let (stream, early) = client.console(dom).map_err(|e| e.to_string())?;
    if !io::stdin().is_terminal() {
        return copy_out(stream, &early);
    }
    let _raw = RawTerminal::enter()?;
    let out = stream.try_clone().map_err(|e| format!("console: {e}"))?;
    let printer = std::thread::spawn(move || copy_out(out, &early));
    let typed = copy_in(&stream);
    // Whatever ended it, stop the other direction too.
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let printed = printer
        .join()
        .unwrap_or_else(|_| Err("the console printer failed".into()));
    typed.and(printed)
}

fn copy_out(mut from: UnixStream, early: &[u8]) -> Result<(), String> {
    let mut stdout = io::stdout().lock();
    let err = |e: io::Error| format!("console output: {e}");
    stdout.write_all(early).map_err(err)?;
    stdout.flush().map_err(err)?;
    let mut buf = [0u8; 4096];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                stdout.write_all(&buf[..n]).map_err(err)?;
                stdout.flush().map_err(err)?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // The other direction shut the stream down.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(()),
            Err(e) => return Err(err(e)),
        }
    }
}

/// Types what the user types, until Ctrl-] or the end of input.
fn copy_in(mut to: &UnixStream) -> Result<(), String> {
    let mut stdin = io::stdin().lock();
    let mut buf = [0u8; 1024];
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("console input: {e}")),
        };
        let (chunk, leave) = match buf[..n].iter().position(|&b| b == ESCAPE) {
            Some(i) => (&buf[..i], true),
            None => (&buf[..n], false),
        };
        if to.write_all(chunk).is_err() || leave {
            return Ok(());
        }
    }
}
