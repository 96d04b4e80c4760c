//! The `chaos` and `chaosd` binaries on the simulated hypervisor, as a user drives them: closed
//! pipes, SIGKILL, SIGSTOP, chaosd and commands sharing one simulated host (issue 11).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use libchaos::image::testelf::TestElf;

struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("chaos-cli-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch");
        Scratch(dir)
    }

    fn run(&self) -> PathBuf {
        self.0.join("run")
    }

    /// A guest config for the small test kernel.
    fn config(&self, name: &str) -> PathBuf {
        let kernel = self.0.join("kernel.elf");
        if !kernel.exists() {
            let elf = TestElf::pv(0xffff_ffff_8000_0000, 0x20_0000, 0x3000, 0x1000);
            std::fs::write(&kernel, elf.build()).expect("kernel");
        }
        let cfg = self.0.join(format!("{name}.cfg"));
        std::fs::write(
            &cfg,
            format!(
                "name = \"{name}\"\nkernel = \"{}\"\nmemory = 16\n",
                kernel.display()
            ),
        )
        .expect("config");
        cfg
    }

    fn chaos(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_chaos"));
        c.arg("--hypervisor")
            .arg("sim")
            .arg("--run-dir")
            .arg(self.run());
        c.env_remove("CHAOS_RUN_DIR");
        c
    }

    fn chaosd(&self) -> Child {
        let child = Command::new(env!("CARGO_BIN_EXE_chaosd"))
            .arg("--hypervisor")
            .arg("sim")
            .arg("--run-dir")
            .arg(self.run())
            .args(["--flavor", "memory=16,count=1", "--reap-interval-ms", "0"])
            .env_remove("CHAOS_RUN_DIR")
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chaosd");
        let socket = self.run().join("chaosd.sock");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "chaosd did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }

    /// `chaos list`'s names.
    fn names(&self) -> String {
        let out = finish(self.chaos().arg("list"), Duration::from_secs(30));
        assert!(
            out.status.success(),
            "list: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `cmd` to its end, failing the test if it takes longer than `limit` (a hang).
fn finish(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    wait_for(&mut child, limit)
}

fn wait_for(child: &mut Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running after {limit:?}: it hangs");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut out = Vec::new();
    let mut err = Vec::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = std::io::Read::read_to_end(&mut o, &mut out);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_end(&mut e, &mut err);
    }
    Output {
        status: child.wait().expect("wait"),
        stdout: out,
        stderr: err,
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    assert!(ok.success(), "kill -{sig}");
}

#[test]
fn output_to_a_closed_pipe_ends_the_command_normally_and_keeps_the_guest() {
    let s = Scratch::new("epipe");
    let cfg = s.config("piped");
    let cases: [&[&str]; 4] = [
        &["create", cfg.to_str().expect("utf-8")],
        &["list"],
        &["list", "--json"],
        &["info"],
    ];
    for args in cases {
        // A reader that is already gone: every write gets EPIPE.
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let mut child = s
            .chaos()
            .args(args)
            .stdout(Stdio::from(writer))
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let out = wait_for(&mut child, Duration::from_secs(30));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(out.status.success(), "{args:?}: {:?} {stderr}", out.status);
    }
    assert!(
        s.names().contains("piped"),
        "the guest created with a closed stdout was saved"
    );
}

/// chaos runs without std's runtime set-up (no_main): what it prints still reaches a pipe
/// whole at exit, and its exit codes are xl's.
#[test]
fn output_reaches_a_pipe_whole_and_exit_codes_are_kept() {
    let s = Scratch::new("flush");
    let out = finish(s.chaos().arg("--version"), Duration::from_secs(30));
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("chaos {}\n", env!("CARGO_PKG_VERSION"))
    );
    let help = finish(s.chaos().arg("--help"), Duration::from_secs(30));
    assert!(help.status.success());
    assert!(help.stdout.ends_with(b"Print version\n"), "the whole help");
    let bad = finish(s.chaos().arg("frobnicate"), Duration::from_secs(30));
    assert_eq!(bad.status.code(), Some(2), "a bad command line");
    let missing = finish(
        s.chaos().args(["destroy", "no-such-guest"]),
        Duration::from_secs(30),
    );
    assert_eq!(missing.status.code(), Some(1), "a failed command");
}

#[test]
fn a_killed_create_n_leaves_the_guests_it_reported() {
    let s = Scratch::new("killed");
    let cfg = s.config("many");
    let mut child = s
        .chaos()
        .args(["create", "-n", "100000", cfg.to_str().expect("utf-8")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let reported: Vec<String> = (0..3)
        .map(|_| lines.next().expect("a line").expect("read"))
        .collect();
    signal(&child, "KILL");
    let _ = child.wait();
    let names = s.names();
    for (i, line) in reported.iter().enumerate() {
        let name = format!("many-{}", i + 1);
        assert!(line.contains(&format!("({name})")), "{line}");
        assert!(
            names.contains(&name),
            "{name} was reported but is gone: {names}"
        );
    }
}

#[test]
fn chaosd_on_the_sim_shares_the_host_with_commands_and_keeps_its_guests_when_killed() {
    let s = Scratch::new("simd");
    let mut d = s.chaosd();
    // Other commands are refused at once, not left waiting for the host chaosd holds.
    let out = finish(s.chaos().arg("list"), Duration::from_secs(20));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("chaosd"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg = s.config("viad");
    let out = finish(
        s.chaos().args(["create", cfg.to_str().expect("utf-8")]),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("chaosd"),
        "created by chaosd"
    );
    signal(&d, "KILL");
    let _ = d.wait();
    assert!(
        s.names().contains("viad"),
        "the guest made through chaosd survived its SIGKILL"
    );
}

#[test]
fn a_stopped_chaosd_times_out_and_the_abandoned_request_is_not_carried_out() {
    let s = Scratch::new("stopped");
    let mut d = s.chaosd();
    let cfg = s.config("late");
    signal(&d, "STOP");
    let out = finish(
        s.chaos()
            .env("CHAOS_DAEMON_TIMEOUT", "1")
            .args(["create", cfg.to_str().expect("utf-8")]),
        Duration::from_secs(20),
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success());
    assert!(stderr.contains("did not answer within 1 s"), "{stderr}");
    let out = finish(
        s.chaos()
            .env("CHAOS_DAEMON_TIMEOUT", "1")
            .args(["pool", "status"]),
        Duration::from_secs(20),
    );
    assert!(!out.status.success());
    signal(&d, "CONT");
    // chaosd reads the abandoned request now, finds its client gone and rolls it back.
    std::thread::sleep(Duration::from_millis(500));
    signal(&d, "TERM");
    let _ = wait_for(&mut d, Duration::from_secs(30));
    assert!(
        !s.names().contains("late"),
        "the abandoned creation was carried out"
    );
}
