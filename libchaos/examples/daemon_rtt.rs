//! What an orchestrator sees: creations through chaosd's socket from one long-lived client
//! (no process start per guest), timed from request to reply, beside the time chaosd spent
//! inside (the creation's phases). Run in the lab's dom0 with chaosd running:
//!
//! ```text
//! daemon-rtt SOCKET CONFIG N      # N paused guests CONFIG-1..N, each destroyed after
//! ```
//!
//! Before each round it waits (untimed) until chaosd's pool is full again, so every round
//! takes a ready shell with no refill running: the case of an orchestrator the pool keeps up
//! with. (Faster bursts than the refill rate fall back to direct creations.)
//!
//! Prints each round, then the medians and one `DAEMON-RTT {json}` line.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use libchaos::daemon::Client;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Waits until every flavor of chaosd's pool has its target ready (60 s at most).
fn wait_full(client: &mut Client) -> Result<(), String> {
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let status = client.status().map_err(|e| e.to_string())?;
        if status.flavors.iter().all(|f| f.ready >= f.target) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("chaosd's pool did not refill within 60 s".into());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// This process's minor page faults so far (each is a trap to Xen in a PV dom0).
fn minor_faults() -> i64 {
    use nix::sys::resource::{getrusage, UsageWho};
    getrusage(UsageWho::RUSAGE_SELF).map_or(0, |u| u.minor_page_faults())
}

fn run(socket: &Path, config: &Path, n: u32) -> Result<(), String> {
    let loaded = libchaos::config::load(config, &[]).map_err(|e| e.to_string())?;
    let base = loaded.config;
    let mut client = Client::connect(socket).map_err(|e| format!("{}: {e}", socket.display()))?;
    let (mut wall, mut inside) = (Vec::new(), Vec::new());
    for i in 1..=n {
        let cfg = base.numbered(i, n.max(2)).map_err(|e| e.to_string())?;
        wait_full(&mut client)?;
        let faults = minor_faults();
        let t = Instant::now();
        let created = client
            .create(&cfg, true, false)
            .map_err(|e| e.to_string())?;
        let w = t.elapsed().as_secs_f64() * 1000.0;
        let faults = minor_faults() - faults;
        let inner = created.timings.total_us() as f64 / 1000.0;
        println!(
            "round {i}: {w:.3} ms request to reply, {inner:.3} ms inside chaosd ({:?} path), {faults} minor faults here",
            created.path
        );
        wall.push(w);
        inside.push(inner);
        client.destroy(&cfg.name).map_err(|e| e.to_string())?;
    }
    let mut over: Vec<f64> = wall.iter().zip(&inside).map(|(w, i)| w - i).collect();
    let (w, i, o) = (median(&mut wall), median(&mut inside), median(&mut over));
    println!("median: {w:.3} ms request to reply, {i:.3} ms inside, {o:.3} ms socket and daemon");
    println!(
        r#"DAEMON-RTT {{"rounds":{n},"rtt_ms":{w:.3},"inside_ms":{i:.3},"overhead_ms":{o:.3}}}"#
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, socket, config, n] = &args[..] else {
        eprintln!("usage: daemon-rtt SOCKET CONFIG N");
        return ExitCode::from(2);
    };
    let Ok(n) = n.parse::<u32>() else {
        eprintln!("daemon-rtt: N: expected a number, got {n:?}");
        return ExitCode::from(2);
    };
    match run(Path::new(socket), Path::new(config), n) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("daemon-rtt: {e}");
            ExitCode::FAILURE
        }
    }
}
