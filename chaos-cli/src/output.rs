//! What the commands print: xl-like tables for people, JSON for programs.
//!
//! Everything goes through [`line`]: a reader that went away (EPIPE, as in `chaos list | head
//! -1`) ends the output quietly instead of failing (or, with `println!`, panicking) the
//! command; [`closed`] tells the commands that print as they go to stop.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use libchaos::config::Action;
use libchaos::daemon::{Percentiles, PoolStatus};
use libchaos::hypervisor::{DomId, NoxsFlavour, PhysInfo, PAGE_SIZE};
use libchaos::toolstack::{Created, CreationPath, DomainSummary, Via};
use serde_json::json;

/// Set once stdout's reader has gone.
static CLOSED: AtomicBool = AtomicBool::new(false);

/// Prints one line on stdout. EPIPE is the end of the output, not an error.
pub fn line(args: std::fmt::Arguments<'_>) -> Result<(), String> {
    if closed() {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{args}").and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            CLOSED.store(true, Ordering::Relaxed);
            Ok(())
        }
        Err(e) => Err(format!("writing to stdout: {e}")),
    }
}

/// Whether stdout's reader has gone (nothing more will be printed).
pub fn closed() -> bool {
    CLOSED.load(Ordering::Relaxed)
}

/// `println!` through [`line`]; evaluates to its `Result`.
macro_rules! out {
    ($($arg:tt)*) => {
        line(format_args!($($arg)*))
    };
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, String> {
    serde_json::to_string(value).map_err(|e| format!("cannot print JSON: {e}"))
}

pub fn created(c: &Created, json: bool) -> Result<(), String> {
    if json {
        let mut v = serde_json::to_value(c).map_err(|e| format!("cannot print JSON: {e}"))?;
        v["total_us"] = json!(c.timings.total_us());
        out!("{}", to_json(&v)?)?;
    } else {
        let phases: Vec<String> = c
            .timings
            .phases()
            .iter()
            .map(|p| format!("{} {:.3}", p.name, p.us as f64 / 1000.0))
            .collect();
        out!(
            "Created domain {} ({}){} via the {} path ({}) in {:.3} ms [{} ms]; {} hypercalls, {} Xenstore requests",
            c.domid,
            c.name,
            if c.paused { ", paused," } else { "" },
            match c.path {
                CreationPath::Pool => "pool",
                CreationPath::Direct => "direct",
            },
            match c.via {
                Via::Daemon => "chaosd",
                Via::Local => "local",
            },
            c.timings.total_us() as f64 / 1000.0,
            phases.join(", "),
            c.costs.hypercalls_total(),
            c.costs.xenstore_requests
        )?;
    }
    Ok(())
}

pub fn list(domains: &[DomainSummary], json: bool) -> Result<(), String> {
    if json {
        out!("{}", to_json(&domains)?)?;
        return Ok(());
    }
    out!(
        "{:<40} {:>5} {:>7} {:>5} {:>8} {:>9}",
        "Name",
        "ID",
        "Mem",
        "VCPUs",
        "State",
        "Time(s)"
    )?;
    for d in domains {
        out!(
            "{:<40} {:>5} {:>7} {:>5} {:>8} {:>9.1}",
            d.name,
            d.domid,
            d.memory_mib,
            d.vcpus,
            d.state,
            d.cpu_time_s
        )?;
    }
    Ok(())
}

pub fn reaped(reaped: &[(DomId, Action)], json: bool) -> Result<(), String> {
    if json {
        let v: Vec<_> = reaped
            .iter()
            .map(|(d, a)| json!({"domid": d, "action": a}))
            .collect();
        out!("{}", to_json(&v)?)?;
    } else {
        for (d, a) in reaped {
            out!("domain {d}: {a:?}")?;
        }
    }
    Ok(())
}

pub fn info(
    hypervisor: &str,
    phys: &PhysInfo,
    noxs: NoxsFlavour,
    run_dir: &Path,
    json: bool,
) -> Result<(), String> {
    let mib = |pages: u64| pages * PAGE_SIZE as u64 / (1024 * 1024);
    let v = json!({
        "hypervisor": hypervisor,
        "noxs": if json { serde_json::to_value(noxs).unwrap_or_default() } else { json!(noxs.to_string()) },
        "nr_cpus": phys.nr_cpus,
        "total_memory_mib": mib(phys.total_pages),
        "free_memory_mib": mib(phys.free_pages),
        "run_dir": run_dir.display().to_string(),
        "chaos_version": env!("CARGO_PKG_VERSION"),
    });
    if json {
        out!("{}", to_json(&v)?)?;
    } else if let Some(map) = v.as_object() {
        for (k, val) in map {
            let shown = val.as_str().map_or_else(|| val.to_string(), str::to_string);
            out!("{k:<18}: {shown}")?;
        }
    }
    Ok(())
}

pub fn pool_status(s: &PoolStatus, json: bool) -> Result<(), String> {
    if json {
        out!("{}", to_json(s)?)?;
        return Ok(());
    }
    out!(
        "chaosd: up {:.0} s, host free {} MiB (reserve {} MiB{}), refill {:.1} shells/s, {} reclaimed at start",
        s.uptime_s,
        s.free_mib,
        s.reserve_mib,
        if s.held_by_reserve { ", refills held" } else { "" },
        s.refill_per_s,
        s.reclaimed
    )?;
    out!(
        "{:<44} {:>6} {:>6} {:>9} {:>8} {:>8}",
        "Flavor",
        "Ready",
        "Target",
        "Preparing",
        "Prepared",
        "Taken"
    )?;
    for f in &s.flavors {
        out!(
            "{:<44} {:>6} {:>6} {:>9} {:>8} {:>8}",
            libchaos::daemon::describe_flavor(&f.flavor),
            f.ready,
            f.target,
            f.preparing,
            f.prepared,
            f.taken
        )?;
        if let Some(e) = &f.last_error {
            out!("  last refill failed: {e}")?;
        }
    }
    out!(
        "{:<24} {:>7} {:>10} {:>10} {:>10}",
        "Latency (ms)",
        "Count",
        "p50",
        "p90",
        "p99"
    )?;
    let row = |what: &str, p: &Percentiles| {
        out!(
            "{:<24} {:>7} {:>10.3} {:>10.3} {:>10.3}",
            what,
            p.count,
            p.p50_ms,
            p.p90_ms,
            p.p99_ms
        )
    };
    row("create from a shell", &s.pool_create)?;
    row("create direct", &s.direct_create)?;
    row("prepare (background)", &s.prepare)
}

/// Progress of `chaos create -n N` while the guests come: count, rate and time left, redrawn
/// in place on stderr. Only on a terminal: piped or logged, chaos prints just the guests.
#[derive(Debug)]
pub struct Progress {
    total: u32,
    done: u32,
    start: Instant,
    shown: bool,
}

impl Progress {
    /// A progress line for `total` creations, if there are several and stderr is a terminal.
    pub fn on_terminal(total: u32) -> Option<Progress> {
        (total > 1 && std::io::stderr().is_terminal()).then(|| Progress {
            total,
            done: 0,
            start: Instant::now(),
            shown: false,
        })
    }

    /// Takes the line away, so that other output does not land on it.
    pub fn clear(&mut self) {
        if self.shown {
            eprint!("\r\x1b[K");
            self.shown = false;
        }
    }

    /// One more guest created: draws the line again.
    pub fn advance(&mut self) {
        self.done += 1;
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[K{}",
            progress_line(self.done, self.total, self.start.elapsed())
        );
        let _ = err.flush();
        self.shown = true;
    }

    /// All done: the line gives way to a last word on how long it took.
    pub fn finish(mut self) {
        self.clear();
        let secs = self.start.elapsed().as_secs_f64();
        eprintln!(
            "created {} guests in {:.1} s ({:.1}/s)",
            self.done,
            secs,
            self.done as f64 / secs.max(1e-9)
        );
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}

/// "creating: 37/100, 12.3/s, 5s left".
pub fn progress_line(done: u32, total: u32, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    let rate = done as f64 / secs.max(1e-9);
    let left = if done == 0 {
        "?".to_string()
    } else {
        clock(f64::from(total.saturating_sub(done)) / rate)
    };
    format!("creating: {done}/{total}, {rate:.1}/s, {left} left")
}

/// Seconds as "12s", "4m05s" or "1h02m".
fn clock(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_says_count_rate_and_time_left() {
        assert_eq!(
            progress_line(25, 100, Duration::from_secs(5)),
            "creating: 25/100, 5.0/s, 15s left"
        );
        assert_eq!(
            progress_line(10, 1000, Duration::from_secs(10)),
            "creating: 10/1000, 1.0/s, 16m30s left"
        );
        assert_eq!(
            progress_line(1, 20_000, Duration::from_secs(1)),
            "creating: 1/20000, 1.0/s, 5h33m left"
        );
        assert_eq!(
            progress_line(100, 100, Duration::from_secs(4)),
            "creating: 100/100, 25.0/s, 0s left"
        );
    }

    #[test]
    fn no_progress_when_stderr_is_not_a_terminal_or_for_one_guest() {
        // cargo test captures stderr through a pipe
        if !std::io::stderr().is_terminal() {
            assert!(Progress::on_terminal(100).is_none());
        }
        assert!(Progress::on_terminal(1).is_none());
    }
}
