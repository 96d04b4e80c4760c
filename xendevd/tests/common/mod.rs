//! What the root-only integration tests share: skipping with a reason, `ip`, and network
//! namespaces that are deleted whatever happens.
#![allow(dead_code)] // each test crate uses its own part

use std::io::Write;
use std::process::Command;

use xendevd::bridge;

/// Says that `test` is skipped and why, straight to stderr, past the test harness's capture,
/// so that a skip is visible in every run.
pub fn skip(test: &str, why: &str) {
    let _ = writeln!(std::io::stderr(), "skipped {test}: {why}");
}

/// Whether `test` cannot run here (and says why): it needs root to create network namespaces
/// and bridges (CI runs the tests as root), and `ip`.
pub fn cannot_run(test: &str) -> bool {
    let why = if !nix::unistd::geteuid().is_root() {
        "not root (it creates network namespaces and interfaces; CI runs it as root)"
    } else if Command::new("ip").arg("-V").output().is_err() {
        "no `ip` command (Debian package iproute2)"
    } else {
        return false;
    };
    skip(test, why);
    true
}

pub fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A named network namespace, deleted on drop (also when the test panics).
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn create(tag: &str) -> Netns {
        let name = format!("xdt-{}-{tag}", std::process::id());
        let _ = ip(&["netns", "del", &name]);
        ip(&["netns", "add", &name]).unwrap();
        Netns { name }
    }

    /// Runs `ip -batch` inside the namespace.
    pub fn batch(&self, cmds: &str) {
        let mut child = Command::new("ip")
            .args(["-n", &self.name, "-batch", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(cmds.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "ip -batch failed");
    }

    /// Moves the calling thread (and threads it starts later) into the namespace.
    pub fn enter(&self) {
        let f = std::fs::File::open(format!("/run/netns/{}", self.name)).unwrap();
        // Only this thread moves; the test's other threads stay where they are.
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("cleanup: {e}");
        }
    }
}

/// Whether the interface is up (`IFF_UP`), in the calling thread's namespace.
pub fn is_up(name: &str) -> bool {
    bridge::flags(name).unwrap() & libc::IFF_UP as libc::c_short != 0
}
