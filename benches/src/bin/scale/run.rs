//! One tool's scale run: N guests created one after another, every creation timed, the host
//! sampled as the guests pile up, xl timed at checkpoints of load, then every guest destroyed
//! (timed too) and the host left as it was found.

use std::time::{Duration, Instant};

use libchaos::hypervisor::{DomId, Hypervisor};
use serde::Serialize;

use crate::host::{self, HostSample};
use crate::stats::median;
use crate::tools::{Kind, Made, Setup, Tool};

/// One timed creation or destruction (a row of samples.csv).
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub tool: &'static str,
    /// "scale" (the tool's own run), "checkpoint" (xl at a level of chaos guests), "churn".
    pub stage: &'static str,
    pub op: &'static str,
    /// 1.. within its run.
    pub seq: u32,
    /// Guests running when the operation started (all tools' together).
    pub running: u32,
    pub wall_ms: f64,
    pub chaos_ms: Option<f64>,
    pub path: Option<String>,
    pub domid: Option<u16>,
    pub phases: Vec<(String, u64)>,
    /// Seconds since the harness started.
    pub t_s: f64,
}

/// What a run needs besides the tool.
pub struct Ctx<'a> {
    pub hv: &'a dyn Hypervisor,
    pub setup: &'a Setup,
    pub started: Instant,
    /// Light host samples every this many guests; Xenstore node counts every `nodes_every`.
    pub sample_every: u32,
    pub nodes_every: u32,
    /// A wait after each creation: whatever a creation leaves running in the background
    /// (daemons' reactions) then ends before the next begins.
    pub pause: Duration,
    pub samples: Vec<Sample>,
    pub host: Vec<HostSample>,
    /// Problems met (a failed creation ends that tool's run; the others go on).
    pub errors: Vec<String>,
}

/// xl creations timed at levels of running chaos guests.
#[derive(Debug, Clone, Copy)]
pub struct Checkpoints {
    pub every: u32,
    pub runs: u32,
}

impl Ctx<'_> {
    pub fn t_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    pub fn sample_host(&mut self, tool: &str, running: u32, nodes: bool) {
        let t = self.t_s();
        let s = host::sample(self.hv, tool, running, t, nodes);
        // A daemon that was there and is gone (crashed, killed) explains what fails next.
        if let Some(prev) = self.host.last() {
            for (name, p) in &prev.procs {
                let same = s.proc(name).is_some_and(|q| q.pid == p.pid);
                let stopped_by_us = matches!(name.as_str(), "chaosd" | "xendevd" | "chaos");
                if !same && !stopped_by_us {
                    let msg = format!(
                        "{name} (pid {}) is gone at {running} {tool} guests; last seen with RSS {} KiB, {} fds",
                        p.pid, p.rss_kib, p.fds
                    );
                    println!("scale: {msg}");
                    self.errors.push(msg);
                }
            }
        }
        self.host.push(s);
    }

    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &mut self,
        tool: Kind,
        stage: &'static str,
        op: &'static str,
        seq: u32,
        running: u32,
        made: &Made,
    ) {
        let t_s = self.t_s();
        self.samples.push(Sample {
            tool: tool.name(),
            stage,
            op,
            seq,
            running,
            wall_ms: made.wall_us as f64 / 1000.0,
            chaos_ms: made.chaos_us.map(|us| us as f64 / 1000.0),
            path: made.path.clone(),
            domid: made.domid,
            phases: made.phases.clone(),
            t_s,
        });
    }

    /// Waits until Xen has no domain but dom0 (destroyed domains are freed asynchronously);
    /// false if some are still there after `limit`.
    pub fn wait_settled(&self, limit: Duration) -> bool {
        let start = Instant::now();
        loop {
            let others = self
                .hv
                .list_domains()
                .map(|l| l.iter().filter(|d| d.domid != DomId::DOM0).count())
                .unwrap_or(usize::MAX);
            if others == 0 {
                return true;
            }
            if start.elapsed() >= limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Prints a progress line every `n / 20` guests and at least every 30 s.
pub struct Progress {
    tool: &'static str,
    what: &'static str,
    total: u32,
    start: Instant,
    last: Instant,
    recent_ms: Vec<f64>,
}

impl Progress {
    pub fn new(tool: &'static str, what: &'static str, total: u32) -> Progress {
        Progress {
            tool,
            what,
            total,
            start: Instant::now(),
            last: Instant::now(),
            recent_ms: Vec::new(),
        }
    }

    pub fn tick(&mut self, done: u32, ms: f64) {
        self.recent_ms.push(ms);
        let step = (self.total / 20).max(1);
        if !done.is_multiple_of(step)
            && done != self.total
            && self.last.elapsed() < Duration::from_secs(30)
        {
            return;
        }
        self.last = Instant::now();
        let secs = self.start.elapsed().as_secs_f64();
        let rate = done as f64 / secs.max(1e-9);
        let left = (self.total - done) as f64 / rate.max(1e-9);
        let tail = &self.recent_ms[self.recent_ms.len().saturating_sub(50)..];
        println!(
            "scale: {:<8} {} {done:>5}/{} ({rate:.1}/s, median of the last {} {:.1} ms, {} left)",
            self.tool,
            self.what,
            self.total,
            tail.len(),
            median(tail).unwrap_or(0.0),
            clock(left)
        );
        self.recent_ms.clear();
    }
}

/// Seconds as "1h02m", "4m05s" or "12s".
pub fn clock(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// The guests one run made, in creation order.
struct Guest {
    name: String,
    domid: Option<u16>,
}

/// Runs one tool: `n` guests (or until a creation fails), then destroys them all.
/// With `checkpoints`, xl is timed at every `every` running guests of this tool.
pub fn run_tool(ctx: &mut Ctx<'_>, tool: &mut Tool, n: u32, checkpoints: Option<Checkpoints>) {
    let kind = tool.kind;
    let name = kind.name();
    println!("scale: {name}: {} — {n} guests", kind.describe());
    if kind.needs_xenstore() && host::daemon_pid("xenstored").is_none() {
        let msg = format!("{name}: skipped: xenstored is not running");
        println!("scale: {msg}");
        ctx.errors.push(msg);
        return;
    }
    if let Err(e) = tool.start(ctx.setup) {
        ctx.errors.push(format!("{name}: start: {e}"));
        println!("scale: {name}: cannot start: {e}");
        let _ = tool.stop();
        return;
    }
    ctx.sample_host(name, 0, true);
    let mut guests: Vec<Guest> = Vec::new();
    let mut progress = Progress::new(name, "created", n);
    let mut xl = checkpoints.map(|c| (c, Tool::new(Kind::Xl, tool.toolstack())));
    for i in 1..=n {
        let guest = format!("scale-{name}-{i}");
        match tool.create(ctx.setup, &guest) {
            Ok(made) => {
                ctx.record(kind, "scale", "create", i, i - 1, &made);
                progress.tick(i, made.wall_us as f64 / 1000.0);
                guests.push(Guest {
                    name: guest,
                    domid: made.domid,
                });
            }
            Err(e) => {
                let msg = format!("{name}: creating guest {i} of {n}: {e}");
                println!("scale: {msg}");
                ctx.errors.push(msg);
                break;
            }
        }
        if i % ctx.sample_every == 0 || i == n {
            let nodes = i % ctx.nodes_every == 0 || i == n;
            ctx.sample_host(name, i, nodes);
        }
        if let Some((c, xl_tool)) = &mut xl {
            if i % c.every == 0 {
                checkpoint(ctx, xl_tool, i, c.runs);
            }
        }
        if !ctx.pause.is_zero() {
            std::thread::sleep(ctx.pause);
        }
    }
    let made = guests.len() as u32;
    // Destroy in creation order, oldest first.
    let mut progress = Progress::new(name, "destroyed", made);
    for (k, g) in guests.iter().enumerate() {
        let running = made - k as u32;
        match tool.destroy(&g.name, g.domid) {
            Ok(us) => {
                let m = Made {
                    wall_us: us,
                    domid: g.domid,
                    ..Made::default()
                };
                ctx.record(kind, "scale", "destroy", k as u32 + 1, running, &m);
                progress.tick(k as u32 + 1, us as f64 / 1000.0);
            }
            Err(e) => {
                let msg = format!("{name}: destroying {}: {e}", g.name);
                println!("scale: {msg}");
                ctx.errors.push(msg);
            }
        }
    }
    if let Err(e) = tool.stop() {
        ctx.errors.push(format!("{name}: stop: {e}"));
    }
    if !ctx.wait_settled(Duration::from_secs(120)) {
        ctx.errors.push(format!(
            "{name}: domains still there 120 s after destroying them all"
        ));
    }
    ctx.sample_host(name, 0, true);
}

/// `runs` xl creations (each destroyed at once) with `level` guests running.
fn checkpoint(ctx: &mut Ctx<'_>, xl: &mut Tool, level: u32, runs: u32) {
    let mut times = Vec::new();
    for r in 1..=runs {
        let guest = format!("scale-xl-at-{level}-{r}");
        match xl.create(ctx.setup, &guest) {
            Ok(made) => {
                ctx.record(Kind::Xl, "checkpoint", "create", r, level, &made);
                times.push(made.wall_us as f64 / 1000.0);
                match xl.destroy(&guest, None) {
                    Ok(us) => {
                        let m = Made {
                            wall_us: us,
                            ..Made::default()
                        };
                        ctx.record(Kind::Xl, "checkpoint", "destroy", r, level + 1, &m);
                    }
                    Err(e) => ctx.errors.push(format!("xl checkpoint at {level}: {e}")),
                }
            }
            Err(e) => {
                ctx.errors.push(format!("xl checkpoint at {level}: {e}"));
                break;
            }
        }
    }
    println!(
        "scale: xl at {level} running: median create {:.1} ms of {}",
        median(&times).unwrap_or(f64::NAN),
        times.len()
    );
}
