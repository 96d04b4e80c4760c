//! What the commands print: xl-like tables for people, JSON for programs.
//!
//! Everything goes through [`line`]: a reader that went away (EPIPE, as in `chaos list | head
//! -1`) ends the output quietly instead of failing (or, with `println!`, panicking) the
//! command; [`closed`] tells the commands that print as they go to stop.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

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
            "Created domain {} ({}){} via the {} path ({}) in {:.3} ms [{} ms]",
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
            phases.join(", ")
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
