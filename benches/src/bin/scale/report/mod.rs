//! What a run leaves for a person to look at: every sample as CSV and JSON, a summary (first
//! guests against the last, per tool; memory per guest; what the daemons spend per guest; the
//! churn's deltas) and SVG plots.
//!
//! The numbers are computed here; `text` writes the summary, `charts` the plots, `files` the
//! CSV and JSON and every file of a run.

mod charts;
mod files;
mod text;

pub use files::write_all;
pub use text::summary_text;

use serde::Serialize;

use crate::host::{HostSample, DAEMONS};
use crate::run::Sample;
use crate::stats::median;
use crate::tools::Kind;

/// The run's settings and the host, for the record.
#[derive(Debug, Clone, Serialize)]
pub struct Meta {
    pub guests: u32,
    pub kernel: String,
    pub kernel_bytes: u64,
    pub memory_mib: u64,
    pub paused: bool,
    pub tools: Vec<&'static str>,
    pub xl_max: u32,
    pub pool_shells: u32,
    pub window: u32,
    pub xen_version: String,
    pub nr_cpus: u32,
    pub xen_total_mib: u64,
    pub dom0_mem_total_kib: u64,
    pub duration_s: f64,
    /// Tools left out, and why.
    pub skipped: Vec<String>,
}

/// One tool's numbers: its first guests against its last.
#[derive(Debug, Clone, Serialize)]
pub struct ToolSummary {
    pub tool: &'static str,
    pub created: u32,
    /// Median wall time of the creations with fewer than `window` guests running.
    pub create_first_ms: Option<f64>,
    /// ... of the last `window` creations (at the most guests running).
    pub create_last_ms: Option<f64>,
    pub ratio: Option<f64>,
    /// The toolstack's own time (chaos's phases), first and last.
    pub chaos_first_ms: Option<f64>,
    pub chaos_last_ms: Option<f64>,
    /// Destroys with the most guests running, and with the fewest.
    pub destroy_at_most_ms: Option<f64>,
    pub destroy_at_fewest_ms: Option<f64>,
    /// Creations served from a ready shell (chaosd).
    pub from_pool: Option<u32>,
    pub xen_kib_per_guest: Option<f64>,
    pub dom0_kib_per_guest: Option<f64>,
    /// Resident-set growth per guest of each daemon that ran.
    pub rss_kib_per_guest: Vec<(String, f64)>,
    pub xs_nodes_per_guest: Option<f64>,
    pub dom0_evtchns_per_guest: Option<f64>,
    /// CPU ms per created guest of each daemon (and this harness), over the first ~100 guests
    /// and over the last ~100.
    pub cpu_ms_per_guest: Vec<(String, f64, f64)>,
    /// Median microseconds of each creation phase, first `window` and last `window`.
    pub phases: Vec<(String, f64, f64)>,
}

fn creates<'a>(samples: &'a [Sample], tool: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
    samples
        .iter()
        .filter(move |s| s.tool == tool && s.stage == "scale" && s.op == "create")
}

fn med<'a>(
    it: impl Iterator<Item = &'a Sample>,
    f: impl Fn(&Sample) -> Option<f64>,
) -> Option<f64> {
    let v: Vec<f64> = it.filter_map(f).collect();
    median(&v)
}

/// The host samples taken while `tool` was creating (up to its most guests).
fn creating(host: &[HostSample], tool: &str) -> Vec<HostSample> {
    let mine: Vec<&HostSample> = host.iter().filter(|h| h.tool == tool).collect();
    let top = mine.iter().map(|h| h.running).max().unwrap_or(0);
    let end = mine
        .iter()
        .position(|h| h.running == top)
        .map_or(0, |i| i + 1);
    mine[..end].iter().map(|h| (*h).clone()).collect()
}

pub fn summarize(
    samples: &[Sample],
    host: &[HostSample],
    kinds: &[Kind],
    window: u32,
) -> Vec<ToolSummary> {
    kinds
        .iter()
        .map(|k| {
            let tool = k.name();
            let made: Vec<&Sample> = creates(samples, tool).collect();
            let n = made.len() as u32;
            let first = || made.iter().copied().filter(|s| s.running < window);
            let last = || made.iter().copied().filter(|s| s.running + window >= n);
            let create_first_ms = med(first(), |s| Some(s.wall_ms));
            let create_last_ms = med(last(), |s| Some(s.wall_ms));
            let destroys: Vec<&Sample> = samples
                .iter()
                .filter(|s| s.tool == tool && s.stage == "scale" && s.op == "destroy")
                .collect();
            let h = creating(host, tool);
            let (h0, hn) = (h.first(), h.last());
            let per_guest = |f: &dyn Fn(&HostSample) -> Option<f64>| -> Option<f64> {
                let (a, b) = (h0?, hn?);
                (b.running > 0).then_some(())?;
                Some((f(b)? - f(a)?) / b.running as f64)
            };
            let at = |r: u32| h.iter().find(|s| s.running == r);
            let cpu_window = |a: u32, b: u32, name: &str| -> Option<f64> {
                let (sa, sb) = (at(a)?, at(b)?);
                let cpu = |s: &HostSample| {
                    if name == "scale" {
                        Some(s.harness.cpu_ms)
                    } else {
                        s.proc(name).map(|p| p.cpu_ms)
                    }
                };
                Some((cpu(sb)? as f64 - cpu(sa)? as f64) / (b - a) as f64)
            };
            let top = hn.map_or(0, |s| s.running);
            let span = 90.min(top.saturating_sub(10));
            let mut cpu = Vec::new();
            for name in DAEMONS.iter().copied().chain(["scale"]) {
                if span > 0 {
                    if let (Some(f), Some(l)) = (
                        cpu_window(10, 10 + span, name),
                        cpu_window(top - span, top, name),
                    ) {
                        cpu.push((name.to_string(), f, l));
                    }
                }
            }
            let mut phase_names: Vec<String> = Vec::new();
            for s in &made {
                for (p, _) in &s.phases {
                    if !phase_names.contains(p) {
                        phase_names.push(p.clone());
                    }
                }
            }
            let phases = phase_names
                .into_iter()
                .filter_map(|p| {
                    let get =
                        |s: &Sample| s.phases.iter().find(|(n, _)| *n == p).map(|x| x.1 as f64);
                    Some((p.clone(), med(first(), get)?, med(last(), get)?))
                })
                .collect();
            ToolSummary {
                tool,
                created: n,
                create_first_ms,
                create_last_ms,
                ratio: create_first_ms.zip(create_last_ms).map(|(f, l)| l / f),
                chaos_first_ms: med(first(), |s| s.chaos_ms),
                chaos_last_ms: med(last(), |s| s.chaos_ms),
                destroy_at_most_ms: med(destroys.iter().copied().take(window as usize), |s| {
                    Some(s.wall_ms)
                }),
                destroy_at_fewest_ms: med(
                    destroys
                        .iter()
                        .copied()
                        .skip(destroys.len().saturating_sub(window as usize)),
                    |s| Some(s.wall_ms),
                ),
                from_pool: made.iter().any(|s| s.path.is_some()).then(|| {
                    made.iter()
                        .filter(|s| s.path.as_deref() == Some("pool"))
                        .count() as u32
                }),
                xen_kib_per_guest: per_guest(&|s| Some(-(s.xen_free_kib as f64))),
                dom0_kib_per_guest: per_guest(&|s| Some(-(s.dom0_mem_available_kib as f64))),
                rss_kib_per_guest: DAEMONS
                    .iter()
                    .filter_map(|d| {
                        Some((
                            d.to_string(),
                            per_guest(&|s| s.proc(d).map(|p| p.rss_kib as f64))?,
                        ))
                    })
                    .collect(),
                xs_nodes_per_guest: {
                    let with: Vec<&HostSample> =
                        h.iter().filter(|s| s.xs_nodes.is_some()).collect();
                    match (with.first(), with.last()) {
                        (Some(a), Some(b)) if b.running > a.running => Some(
                            (b.xs_nodes.unwrap_or(0) as f64 - a.xs_nodes.unwrap_or(0) as f64)
                                / (b.running - a.running) as f64,
                        ),
                        _ => None,
                    }
                },
                dom0_evtchns_per_guest: per_guest(&|s| Some(s.dom0_evtchns as f64)),
                cpu_ms_per_guest: cpu,
                phases,
            }
        })
        .collect()
}

/// xl at checkpoints: (chaos guests running, median create ms, median destroy ms).
pub fn checkpoints(samples: &[Sample]) -> Vec<(u32, f64, f64)> {
    let mut levels: Vec<u32> = samples
        .iter()
        .filter(|s| s.stage == "checkpoint" && s.op == "create")
        .map(|s| s.running)
        .collect();
    levels.dedup();
    levels
        .into_iter()
        .map(|l| {
            let of = |op: &str, shift: u32| -> f64 {
                let v: Vec<f64> = samples
                    .iter()
                    .filter(|s| s.stage == "checkpoint" && s.op == op && s.running == l + shift)
                    .map(|s| s.wall_ms)
                    .collect();
                median(&v).unwrap_or(f64::NAN)
            };
            (l, of("create", 0), of("destroy", 1))
        })
        .collect()
}

#[cfg(test)]
mod tests;
