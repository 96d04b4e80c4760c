//! What a run leaves for a person to look at: every sample as CSV and JSON, a summary (first
//! guests against the last, per tool; memory per guest; what the daemons spend per guest; the
//! churn's deltas) and SVG plots.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::churn::ChurnResult;
use crate::host::{HostSample, DAEMONS};
use crate::run::Sample;
use crate::stats::{median, rolling_median};
use crate::svg::{Chart, Series, Style, PALETTE};
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

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "-".into(), |x| format!("{x:.prec$}"))
}

/// The summary people read (printed, and summary.txt).
pub fn summary_text(
    meta: &Meta,
    tools: &[ToolSummary],
    cps: &[(u32, f64, f64)],
    churn: Option<&ChurnResult>,
    errors: &[String],
) -> String {
    let mut s = String::new();
    let w = meta.window;
    let _ = writeln!(
        s,
        "scale: {} guests per tool of {} ({} MiB, {}), one at a time; Xen {}, {} CPUs, {} MiB; dom0 {} MiB; {}",
        meta.guests,
        meta.kernel,
        meta.memory_mib,
        if meta.paused { "paused" } else { "running" },
        meta.xen_version,
        meta.nr_cpus,
        meta.xen_total_mib,
        meta.dom0_mem_total_kib / 1024,
        super::run::clock(meta.duration_s)
    );
    let _ = writeln!(
        s,
        "{:<9} {:>7} {:>11} {:>11} {:>6} {:>11} {:>11} {:>12} {:>12} {:>8} {:>8}",
        "tool",
        "created",
        format!("first {w} ms"),
        format!("last {w} ms"),
        "ratio",
        "chaos first",
        "chaos last",
        "destroy most",
        "destroy few",
        "Xen KiB/g",
        "dom0 KiB/g"
    );
    for t in tools {
        let _ = writeln!(
            s,
            "{:<9} {:>7} {:>11} {:>11} {:>6} {:>11} {:>11} {:>12} {:>12} {:>8} {:>8}",
            t.tool,
            t.created,
            opt(t.create_first_ms, 1),
            opt(t.create_last_ms, 1),
            t.ratio.map_or("-".into(), |r| format!("{r:.2}x")),
            opt(t.chaos_first_ms, 1),
            opt(t.chaos_last_ms, 1),
            opt(t.destroy_at_most_ms, 1),
            opt(t.destroy_at_fewest_ms, 1),
            opt(t.xen_kib_per_guest, 0),
            opt(t.dom0_kib_per_guest, 0),
        );
    }
    let _ = writeln!(
        s,
        "(ms: median wall time of the first {w} creations and of the last {w}; chaos: the toolstack's own phases; destroy: the first {w} destroys, with the most guests running, and the last {w}; KiB/g: memory per guest)"
    );
    for t in tools {
        if let Some(p) = t.from_pool.filter(|_| t.tool == Kind::Chaosd.name()) {
            let _ = writeln!(s, "{}: {p} of {} from a ready shell", t.tool, t.created);
        }
        let rss: Vec<String> = t
            .rss_kib_per_guest
            .iter()
            .map(|(d, k)| format!("{d} {k:.1}"))
            .collect();
        if !rss.is_empty() || t.xs_nodes_per_guest.is_some() {
            let _ = writeln!(
                s,
                "{}: RSS KiB per guest: {}; Xenstore nodes per guest: {}; dom0 event channels per guest: {}",
                t.tool,
                rss.join(", "),
                opt(t.xs_nodes_per_guest, 1),
                opt(t.dom0_evtchns_per_guest, 2)
            );
        }
        if !t.cpu_ms_per_guest.is_empty() {
            let cpu: Vec<String> = t
                .cpu_ms_per_guest
                .iter()
                .map(|(d, f, l)| format!("{d} {f:.1} -> {l:.1}"))
                .collect();
            let _ = writeln!(
                s,
                "{}: CPU ms per guest, first ~100 -> last ~100: {}",
                t.tool,
                cpu.join(", ")
            );
        }
        if !t.phases.is_empty() {
            let ph: Vec<String> = t
                .phases
                .iter()
                .map(|(p, f, l)| format!("{p} {:.2} -> {:.2}", f / 1000.0, l / 1000.0))
                .collect();
            let _ = writeln!(
                s,
                "{}: phases (median ms, first {w} -> last {w}): {}",
                t.tool,
                ph.join(", ")
            );
        }
    }
    if !cps.is_empty() {
        let v: Vec<String> = cps
            .iter()
            .map(|(l, c, d)| format!("{l}: {c:.0}/{d:.0}"))
            .collect();
        let _ = writeln!(
            s,
            "xl at checkpoints (chaos guests running: median create/destroy ms): {}",
            v.join(", ")
        );
    }
    if let Some(c) = churn {
        let _ = writeln!(
            s,
            "churn: {} create/destroy cycles over {} (after one warm-up cycle each); settled in {:.1} s: {}",
            c.cycles,
            c.paths.join(", "),
            c.settle_s,
            if c.clean() { "everything back (all deltas 0)" } else { "SOME COUNTS DID NOT COME BACK" }
        );
        let _ = writeln!(
            s,
            "  {:<40} {:>12} {:>12} {:>8}",
            "what", "start", "end", "delta"
        );
        for k in &c.counts {
            let _ = writeln!(
                s,
                "  {:<40} {:>12} {:>12} {:>8}{}",
                k.what,
                k.start,
                k.end,
                k.delta(),
                if k.delta() != 0 { "  <-" } else { "" }
            );
        }
    }
    for k in &meta.skipped {
        let _ = writeln!(s, "skipped {k}");
    }
    for e in errors {
        let _ = writeln!(s, "error: {e}");
    }
    s
}

fn csv_samples(samples: &[Sample]) -> String {
    let mut s =
        String::from("tool,stage,op,seq,running,wall_ms,chaos_ms,path,domid,t_s,phases_us\n");
    for x in samples {
        let phases: Vec<String> = x.phases.iter().map(|(n, us)| format!("{n}={us}")).collect();
        let _ = writeln!(
            s,
            "{},{},{},{},{},{:.3},{},{},{},{:.3},{}",
            x.tool,
            x.stage,
            x.op,
            x.seq,
            x.running,
            x.wall_ms,
            x.chaos_ms.map_or(String::new(), |v| format!("{v:.3}")),
            x.path.as_deref().unwrap_or(""),
            x.domid.map_or(String::new(), |d| d.to_string()),
            x.t_s,
            phases.join(";")
        );
    }
    s
}

fn csv_host(host: &[HostSample]) -> String {
    let mut s = String::from(
        "tool,running,t_s,xen_free_kib,dom0_mem_available_kib,dom0_evtchns,xs_nodes,harness_rss_kib,harness_cpu_ms",
    );
    for d in DAEMONS {
        let _ = write!(s, ",{d}_rss_kib,{d}_cpu_ms,{d}_fds");
    }
    s.push('\n');
    for h in host {
        let _ = write!(
            s,
            "{},{},{:.3},{},{},{},{},{},{}",
            h.tool,
            h.running,
            h.t_s,
            h.xen_free_kib,
            h.dom0_mem_available_kib,
            h.dom0_evtchns,
            h.xs_nodes.map_or(String::new(), |n| n.to_string()),
            h.harness.rss_kib,
            h.harness.cpu_ms
        );
        for d in DAEMONS {
            match h.proc(d) {
                Some(p) => {
                    let _ = write!(s, ",{},{},{}", p.rss_kib, p.cpu_ms, p.fds);
                }
                None => s.push_str(",,,"),
            }
        }
        s.push('\n');
    }
    s
}

fn color(kinds: &[Kind], k: Kind) -> String {
    let i = Kind::ALL.iter().position(|x| *x == k).unwrap_or(0);
    let _ = kinds;
    PALETTE[i % PALETTE.len()].to_string()
}

/// Dots for every sample and a rolling median line, per tool.
fn time_chart(samples: &[Sample], kinds: &[Kind], op: &str, title: String, y_label: &str) -> Chart {
    let mut series = Vec::new();
    for k in kinds {
        let pts: Vec<(f64, f64)> = samples
            .iter()
            .filter(|s| s.tool == k.name() && s.stage == "scale" && s.op == op)
            .map(|s| (s.running as f64, s.wall_ms))
            .collect();
        if pts.is_empty() {
            continue;
        }
        let mut sorted = pts.clone();
        sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
        series.push(Series {
            name: format!("{} (every {op})", k.name()),
            color: color(kinds, *k),
            style: Style::Dots,
            points: pts,
            in_legend: false,
        });
        series.push(Series {
            name: format!("{}: {}", k.name(), k.describe()),
            color: color(kinds, *k),
            style: Style::Line,
            points: rolling_median(&sorted, 25),
            in_legend: true,
        });
    }
    let cp: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.stage == "checkpoint" && s.op == op)
        .map(|s| (s.running as f64, s.wall_ms))
        .collect();
    if !cp.is_empty() {
        series.push(Series {
            name: "xl at checkpoints (with chaos guests running)".into(),
            color: color(kinds, Kind::Xl),
            style: Style::Markers,
            points: cp,
            in_legend: true,
        });
    }
    Chart {
        title,
        x_label: "guests running".into(),
        y_label: y_label.into(),
        y_log: true,
        series,
    }
}

fn memory_chart(host: &[HostSample], kinds: &[Kind]) -> Chart {
    let mut series = Vec::new();
    for k in kinds {
        let h = creating(host, k.name());
        let Some(h0) = h.first() else { continue };
        let xen: Vec<(f64, f64)> = h
            .iter()
            .map(|s| {
                (
                    s.running as f64,
                    (h0.xen_free_kib as f64 - s.xen_free_kib as f64) / 1024.0,
                )
            })
            .collect();
        let dom0: Vec<(f64, f64)> = h
            .iter()
            .map(|s| {
                (
                    s.running as f64,
                    (h0.dom0_mem_available_kib as f64 - s.dom0_mem_available_kib as f64) / 1024.0,
                )
            })
            .collect();
        series.push(Series {
            name: format!("Xen memory used, {}", k.name()),
            color: color(kinds, *k),
            style: Style::Line,
            points: xen,
            in_legend: true,
        });
        series.push(Series {
            name: format!("dom0 memory used, {}", k.name()),
            color: color(kinds, *k),
            style: Style::Dashed,
            points: dom0,
            in_legend: true,
        });
    }
    Chart {
        title: "Memory used as guests are added (Xen free memory and dom0 MemAvailable, from the run's start)".into(),
        x_label: "guests running".into(),
        y_label: "MiB".into(),
        y_log: true,
        series,
    }
}

fn daemons_chart(host: &[HostSample], kinds: &[Kind]) -> Chart {
    let mut series = Vec::new();
    for k in kinds {
        let h = creating(host, k.name());
        for (i, d) in DAEMONS.iter().enumerate() {
            let pts: Vec<(f64, f64)> = h
                .iter()
                .filter_map(|s| Some((s.running as f64, s.proc(d)?.rss_kib as f64 / 1024.0)))
                .collect();
            if pts.is_empty() {
                continue;
            }
            series.push(Series {
                name: format!("{d}, {}", k.name()),
                color: color(kinds, *k),
                style: if i % 2 == 0 {
                    Style::Line
                } else {
                    Style::Dashed
                },
                points: pts,
                in_legend: true,
            });
        }
    }
    Chart {
        title: "dom0 daemons' resident memory during each tool's run".into(),
        x_label: "guests running".into(),
        y_label: "RSS (MiB)".into(),
        y_log: true,
        series,
    }
}

/// Each creation phase's rolling median for one tool: what grows.
fn phases_chart(samples: &[Sample], kind: Kind) -> Chart {
    let made: Vec<&Sample> = creates(samples, kind.name()).collect();
    let mut names: Vec<String> = Vec::new();
    for s in &made {
        for (p, _) in &s.phases {
            if !names.contains(p) {
                names.push(p.clone());
            }
        }
    }
    let mut series = Vec::new();
    for (i, p) in names.iter().enumerate() {
        let pts: Vec<(f64, f64)> = made
            .iter()
            .filter_map(|s| {
                let us = s.phases.iter().find(|(n, _)| n == p)?.1;
                Some((s.running as f64, us as f64 / 1000.0))
            })
            .collect();
        series.push(Series {
            name: p.clone(),
            color: PALETTE[i % PALETTE.len()].into(),
            style: if i < PALETTE.len() {
                Style::Line
            } else {
                Style::Dashed
            },
            points: rolling_median(&pts, 25),
            in_legend: true,
        });
    }
    let wall: Vec<(f64, f64)> = made.iter().map(|s| (s.running as f64, s.wall_ms)).collect();
    series.push(Series {
        name: "whole creation (wall)".into(),
        color: "#888888".into(),
        style: Style::Dashed,
        points: rolling_median(&wall, 25),
        in_legend: true,
    });
    Chart {
        title: format!(
            "Where a creation's time goes ({}): each phase, rolling median of 25",
            kind.name()
        ),
        x_label: "guests running".into(),
        y_label: "ms (log)".into(),
        y_log: true,
        series,
    }
}

#[derive(Serialize)]
struct Results<'a> {
    meta: &'a Meta,
    summary: &'a [ToolSummary],
    xl_checkpoints: &'a [(u32, f64, f64)],
    churn: Option<&'a ChurnResult>,
    errors: &'a [String],
    samples: &'a [Sample],
    host: &'a [HostSample],
}

/// Writes every file into `dir`; returns their names.
#[allow(clippy::too_many_arguments)]
pub fn write_all(
    dir: &Path,
    meta: &Meta,
    kinds: &[Kind],
    samples: &[Sample],
    host: &[HostSample],
    tools: &[ToolSummary],
    churn: Option<&ChurnResult>,
    errors: &[String],
) -> Result<Vec<String>, String> {
    let cps = checkpoints(samples);
    let mode = if meta.paused { "paused" } else { "running" };
    let mut files: Vec<(String, String)> = vec![
        ("samples.csv".into(), csv_samples(samples)),
        ("host.csv".into(), csv_host(host)),
        (
            "results.json".into(),
            serde_json::to_string_pretty(&Results {
                meta,
                summary: tools,
                xl_checkpoints: &cps,
                churn,
                errors,
                samples,
                host,
            })
            .map_err(|e| e.to_string())?,
        ),
        (
            "summary.txt".into(),
            summary_text(meta, tools, &cps, churn, errors),
        ),
        (
            "creation.svg".into(),
            time_chart(
                samples,
                kinds,
                "create",
                format!(
                    "Creation time against guests running ({}, {} MiB, {mode}; one at a time)",
                    meta.kernel, meta.memory_mib
                ),
                "creation time (ms, log)",
            )
            .render(),
        ),
        (
            "destroy.svg".into(),
            time_chart(
                samples,
                kinds,
                "destroy",
                "Destroy time against guests running (oldest first)".into(),
                "destroy time (ms, log)",
            )
            .render(),
        ),
        ("memory.svg".into(), memory_chart(host, kinds).render()),
        ("daemons.svg".into(), daemons_chart(host, kinds).render()),
    ];
    if let Some(k) = [Kind::Lib, Kind::CliXs, Kind::CliNoxs, Kind::Chaosd]
        .into_iter()
        .find(|k| kinds.contains(k) && creates(samples, k.name()).any(|s| !s.phases.is_empty()))
    {
        files.push(("phases.svg".into(), phases_chart(samples, k).render()));
    }
    if let Some(c) = churn {
        let mut s = String::from("what,start,end,delta\n");
        for k in &c.counts {
            let _ = writeln!(s, "{},{},{},{}", k.what, k.start, k.end, k.delta());
        }
        files.push(("churn.csv".into(), s));
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for (name, body) in &files {
        let p = dir.join(name);
        std::fs::write(&p, body).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(files.into_iter().map(|(n, _)| n).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(tool: &'static str, op: &'static str, running: u32, ms: f64) -> Sample {
        Sample {
            tool,
            stage: "scale",
            op,
            seq: running + 1,
            running,
            wall_ms: ms,
            chaos_ms: Some(ms / 2.0),
            path: None,
            domid: Some(running as u16 + 1),
            phases: vec![("build".into(), (ms * 100.0) as u64)],
            t_s: running as f64,
        }
    }

    #[test]
    fn summary_compares_the_first_guests_with_the_last() {
        // 100 creations: 10 ms while few run, 30 ms for the last ones
        let samples: Vec<Sample> = (0..100)
            .map(|r| sample("lib", "create", r, if r < 50 { 10.0 } else { 30.0 }))
            .collect();
        let s = &summarize(&samples, &[], &[Kind::Lib], 20)[0];
        assert_eq!(s.created, 100);
        assert_eq!(s.create_first_ms, Some(10.0));
        assert_eq!(s.create_last_ms, Some(30.0));
        assert_eq!(s.ratio, Some(3.0));
        assert_eq!(s.chaos_first_ms, Some(5.0));
        assert_eq!(s.phases, vec![("build".to_string(), 1000.0, 3000.0)]);
        assert_eq!(s.from_pool, None);
    }

    #[test]
    fn memory_per_guest_from_the_host_samples() {
        let h = |running: u32, free: u64| HostSample {
            tool: "lib".into(),
            running,
            xen_free_kib: free,
            ..HostSample::default()
        };
        // 2 MiB and a bit per guest, then destroyed (the last sample, back at 0, is not counted)
        let host = vec![
            h(0, 100_000),
            h(10, 100_000 - 21_000),
            h(20, 100_000 - 42_000),
            h(0, 100_000),
        ];
        let s = &summarize(&[], &host, &[Kind::Lib], 20)[0];
        assert_eq!(s.xen_kib_per_guest, Some(2100.0));
    }

    #[test]
    fn csv_has_one_row_per_sample_and_the_phases() {
        let csv = csv_samples(&[
            sample("xl", "create", 0, 1.5),
            sample("xl", "destroy", 1, 2.0),
        ]);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[1].starts_with("xl,scale,create,1,0,1.500,0.750,,1,"));
        assert!(lines[1].ends_with(",build=150"));
    }
}
