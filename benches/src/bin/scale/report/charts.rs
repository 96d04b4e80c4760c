//! The SVG plots.

use super::{creates, creating};
use crate::host::{HostSample, DAEMONS};
use crate::run::Sample;
use crate::stats::rolling_median;
use crate::svg::{Chart, Series, Style, PALETTE};
use crate::tools::Kind;

fn color(kinds: &[Kind], k: Kind) -> String {
    let i = Kind::ALL.iter().position(|x| *x == k).unwrap_or(0);
    let _ = kinds;
    PALETTE[i % PALETTE.len()].to_string()
}

/// Dots for every sample and a rolling median line, per tool.
pub(super) fn time_chart(
    samples: &[Sample],
    kinds: &[Kind],
    op: &str,
    title: String,
    y_label: &str,
) -> Chart {
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

pub(super) fn memory_chart(host: &[HostSample], kinds: &[Kind]) -> Chart {
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

pub(super) fn daemons_chart(host: &[HostSample], kinds: &[Kind]) -> Chart {
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
pub(super) fn phases_chart(samples: &[Sample], kind: Kind) -> Chart {
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
