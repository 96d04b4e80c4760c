//! The summary people read.

use std::fmt::Write as _;

use super::{Meta, ToolSummary};
use crate::churn::ChurnResult;
use crate::tools::Kind;

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
        crate::run::clock(meta.duration_s)
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
        if let Some(first) = &c.first_round {
            let moved: Vec<String> = first
                .iter()
                .filter(|k| k.delta() != 0)
                .map(|k| format!("{} {:+}", k.what, k.delta()))
                .collect();
            let _ = writeln!(
                s,
                "churn: the first {} cycles moved {}; the counts below are a second round's, from where the first ended (a high-water mark moves once, a leak in every round)",
                c.cycles,
                moved.join(", ")
            );
        }
        let _ = writeln!(
            s,
            "churn: {} create/destroy cycles over {} (after one warm-up cycle each); settled in {:.1} s: {}",
            c.cycles,
            c.paths.join(", "),
            c.settle_s,
            if c.counts.iter().all(|k| k.delta() == 0) {
                "everything back (all deltas 0)"
            } else if c.clean() {
                "everything back over the two rounds (what moved moved back)"
            } else {
                "SOME COUNTS DID NOT COME BACK"
            }
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
                if c.leaked(k) {
                    "  <- leaked"
                } else if k.delta() != 0 {
                    "  (back)"
                } else {
                    ""
                }
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
