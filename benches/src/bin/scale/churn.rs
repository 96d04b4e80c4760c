//! The churn check: many create/destroy cycles over the chaos paths in turn, then every
//! resource a guest holds in Xen and dom0 must be back where it started.

use std::path::Path;
use std::time::{Duration, Instant};

use libchaos::hypervisor::{DomId, Hypervisor};
use serde::Serialize;

use crate::host;
use crate::run::{Ctx, Progress};
use crate::tools::{Kind, Made, Tool};

/// One thing counted before and after.
#[derive(Debug, Clone, Serialize)]
pub struct Count {
    pub what: String,
    pub start: i64,
    pub end: i64,
}

impl Count {
    pub fn delta(&self) -> i64 {
        self.end - self.start
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ChurnResult {
    pub cycles: u32,
    pub paths: Vec<&'static str>,
    pub counts: Vec<Count>,
    /// Seconds the end values took to come back (or the limit, if they did not).
    pub settle_s: f64,
    /// When the cycles left a count moved, a second round of as many cycles ran from where
    /// they ended, and `counts` are that round's: these are the first round's.
    pub first_round: Option<Vec<Count>>,
}

impl ChurnResult {
    /// No count leaked: see [`ChurnResult::leaked`].
    pub fn clean(&self) -> bool {
        self.counts.iter().all(|c| !self.leaked(c))
    }

    /// Whether `count` (one of `counts`) leaked. Without a second round, any move is a leak.
    /// With one, a leak moves the count again the way it moved in the first round; a count
    /// that stays put (a high-water mark reached) or moves back (Xen's free memory in the lab
    /// went -8 KiB, then +8 KiB: a couple of pages held at one snapshot and not the next)
    /// gave everything back over the two rounds.
    pub fn leaked(&self, count: &Count) -> bool {
        let again = count.delta();
        if again == 0 {
            return false;
        }
        let Some(first) = &self.first_round else {
            return true;
        };
        let before = first
            .iter()
            .find(|c| c.what == count.what)
            .map_or(0, Count::delta);
        before == 0 || before.signum() == again.signum()
    }
}

/// Everything the check compares, as (what, value).
fn snapshot(hv: &dyn Hypervisor, run_dir: &Path) -> Vec<(String, i64)> {
    let mut v: Vec<(String, i64)> = vec![
        (
            "Xen free memory (KiB)".into(),
            host::xen_free_kib(hv) as i64,
        ),
        (
            "domains besides dom0".into(),
            hv.list_domains()
                .map(|l| l.iter().filter(|d| d.domid != DomId::DOM0).count() as i64)
                .unwrap_or(-1),
        ),
        (
            "Xenstore nodes".into(),
            host::xenstore_nodes().map_or(-1, |n| n as i64),
        ),
        (
            "dom0 event channels (xen-dyn irqs)".into(),
            host::dom0_event_channels() as i64,
        ),
        ("dom0 open files".into(), host::dom0_open_files() as i64),
        (
            "grant mappings (gntdev VMAs)".into(),
            host::mappings_of("/dev/xen/gntdev") as i64,
        ),
        (
            "foreign mappings (privcmd VMAs)".into(),
            host::mappings_of("/dev/xen/privcmd") as i64,
        ),
        (
            format!("{} entries", run_dir.display()),
            host::entries_below(run_dir) as i64,
        ),
    ];
    // Not the reaper (`chaos`): it leaves by design 30 s after the last guest, and chaosd's
    // reaper thread takes over from it; its coming and going is not a leak.
    for d in host::DAEMONS.iter().filter(|d| **d != "chaos") {
        if let Some(pid) = host::daemon_pid(d) {
            v.push((format!("fds of {d}"), host::proc_sample(pid).fds as i64));
        }
    }
    v.push((
        "fds of this harness".into(),
        host::proc_sample(std::process::id()).fds as i64,
    ));
    v
}

/// `cycles` create/destroy cycles over `paths` in turn, after one warm-up cycle each (state
/// made on first use, such as a lazily opened connection, is not a leak).
pub fn churn(ctx: &mut Ctx<'_>, tools: &mut [Tool], cycles: u32) -> Option<ChurnResult> {
    let paths: Vec<&'static str> = tools.iter().map(|t| t.kind.name()).collect();
    println!(
        "scale: churn: {cycles} create/destroy cycles over {}",
        paths.join(", ")
    );
    // Whatever happens in between, the tools are stopped once, here.
    let result = started_churn(ctx, tools, cycles, paths);
    stop_all(ctx, tools);
    result
}

/// The churn between starting the tools and stopping them; `None` when a tool did not start
/// or a cycle failed (noted in the errors).
fn started_churn(
    ctx: &mut Ctx<'_>,
    tools: &mut [Tool],
    cycles: u32,
    paths: Vec<&'static str>,
) -> Option<ChurnResult> {
    for t in tools.iter_mut() {
        if let Err(e) = t.start(ctx.setup) {
            ctx.errors
                .push(format!("churn: start {}: {e}", t.kind.name()));
            return None;
        }
    }
    let mut seq = 0;
    for t in tools.iter_mut() {
        if !cycle(ctx, t, &mut seq, "churn-warmup") {
            return None;
        }
    }
    let start = settled_snapshot(ctx);
    seq = 0;
    let (end, mut settle_s) = round(ctx, tools, cycles, &start, &mut seq)?;
    let mut counts = compare(&start, &end);
    let mut first_round = None;
    if end != start {
        // Some structures of Xen's and dom0's grow to a high-water mark and stay (dom0's
        // event-channel buckets, its grant maptrack frames): they move a count once, where a
        // leak moves it in every round. A second round from where the first ended tells them
        // apart.
        println!("scale: churn: some counts moved; a second round of {cycles} cycles from there");
        let (end2, s) = round(ctx, tools, cycles, &end, &mut seq)?;
        first_round = Some(std::mem::replace(&mut counts, compare(&end, &end2)));
        settle_s = s;
    }
    Some(ChurnResult {
        cycles,
        paths,
        counts,
        settle_s,
        first_round,
    })
}

/// The counts once the warm-up's after-effects are over (destroyed domains freed, taken shells
/// refilled): two snapshots 500 ms apart that agree, up to 20 s. A start taken while Xen still
/// held a page of a destroyed domain ended a clean churn one or two pages "up" in the lab.
fn settled_snapshot(ctx: &Ctx<'_>) -> Vec<(String, i64)> {
    let t = Instant::now();
    let mut last = snapshot(ctx.hv, &ctx.setup.run_dir);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = snapshot(ctx.hv, &ctx.setup.run_dir);
        if now == last || t.elapsed() >= Duration::from_secs(20) {
            return now;
        }
        last = now;
    }
}

/// `cycles` create/destroy cycles over the tools in turn, then the counts once they are back
/// at `start` or have stopped moving for want of time: the end snapshot and the seconds that
/// took. `None` when a cycle failed (noted in the errors). `seq` numbers the cycles' samples
/// on from the last round's.
fn round(
    ctx: &mut Ctx<'_>,
    tools: &mut [Tool],
    cycles: u32,
    start: &[(String, i64)],
    seq: &mut u32,
) -> Option<(Vec<(String, i64)>, f64)> {
    let mut progress = Progress::new("churn", "cycles", cycles);
    for c in 0..cycles {
        let n = tools.len();
        let t = &mut tools[c as usize % n];
        let before = ctx.samples.len();
        if !cycle(ctx, t, seq, "churn") {
            return None;
        }
        let ms: f64 = ctx.samples[before..].iter().map(|s| s.wall_ms).sum();
        progress.tick(c + 1, ms);
    }
    // Destroyed domains are freed asynchronously and chaosd refills what was taken: wait
    // until the counts are back, up to 20 s (less than the reaper's idle exit, whose
    // hand-over to chaosd would move fds between processes).
    let t = Instant::now();
    let mut end = snapshot(ctx.hv, &ctx.setup.run_dir);
    while end != start && t.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(500));
        end = snapshot(ctx.hv, &ctx.setup.run_dir);
    }
    Some((end, t.elapsed().as_secs_f64()))
}

/// Every count of `start` against its value in `end`.
fn compare(start: &[(String, i64)], end: &[(String, i64)]) -> Vec<Count> {
    start
        .iter()
        .map(|(what, s)| Count {
            what: what.clone(),
            start: *s,
            end: end.iter().find(|(w, _)| w == what).map_or(-1, |(_, e)| *e),
        })
        .collect()
}

/// One create and destroy with `tool`, recorded; false (and an error noted) on failure.
fn cycle(ctx: &mut Ctx<'_>, tool: &mut Tool, seq: &mut u32, stage: &'static str) -> bool {
    let kind = tool.kind;
    let name = format!("churn-{}", kind.name());
    *seq += 1;
    let made = match tool.create(ctx.setup, &name) {
        Ok(m) => m,
        Err(e) => {
            ctx.errors
                .push(format!("{stage} cycle {seq} ({}): {e}", kind.name()));
            return false;
        }
    };
    ctx.record(kind, stage, "create", *seq, 0, &made);
    match tool.destroy(&name, made.domid) {
        Ok(us) => {
            let m = Made {
                wall_us: us,
                domid: made.domid,
                ..Made::default()
            };
            ctx.record(kind, stage, "destroy", *seq, 1, &m);
            true
        }
        Err(e) => {
            ctx.errors.push(format!(
                "{stage} cycle {seq} ({}): destroy: {e}",
                kind.name()
            ));
            false
        }
    }
}

fn stop_all(ctx: &mut Ctx<'_>, tools: &mut [Tool]) {
    for t in tools.iter_mut() {
        if let Err(e) = t.stop() {
            ctx.errors
                .push(format!("churn: stop {}: {e}", t.kind.name()));
        }
    }
}

/// The chaos tools a churn goes through.
pub fn churn_kinds(kinds: &[Kind]) -> Vec<Kind> {
    kinds.iter().copied().filter(|k| k.is_chaos()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(what: &str, start: i64, end: i64) -> Count {
        Count {
            what: what.into(),
            start,
            end,
        }
    }

    fn result(counts: Vec<Count>, first_round: Option<Vec<Count>>) -> ChurnResult {
        ChurnResult {
            cycles: 20,
            paths: vec!["cli-noxs"],
            counts,
            settle_s: 0.0,
            first_round,
        }
    }

    #[test]
    fn one_round_any_move_is_a_leak() {
        assert!(result(vec![count("fds", 9, 9)], None).clean());
        assert!(!result(vec![count("fds", 9, 10)], None).clean());
    }

    #[test]
    fn a_high_water_mark_moves_once() {
        let r = result(
            vec![count("evtchn", 7, 7), count("mem", 100, 100)],
            Some(vec![count("evtchn", 6, 7), count("mem", 100, 100)]),
        );
        assert!(r.clean());
    }

    #[test]
    fn a_count_that_moves_back_gave_everything_back() {
        let r = result(
            vec![count("mem", 92, 100)],
            Some(vec![count("mem", 100, 92)]),
        );
        assert!(r.clean());
    }

    #[test]
    fn a_leak_moves_the_same_way_every_round() {
        let r = result(
            vec![count("mem", 92, 84)],
            Some(vec![count("mem", 100, 92)]),
        );
        assert!(!r.clean());
        // and a count that only starts moving in the second round is not excused
        let r = result(
            vec![count("mem", 100, 100), count("fds", 9, 10)],
            Some(vec![count("mem", 100, 92), count("fds", 9, 9)]),
        );
        assert!(!r.clean());
    }
}
