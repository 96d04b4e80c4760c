//! The files a run leaves: every sample as CSV and JSON, the summary and the plots.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::charts::{daemons_chart, memory_chart, phases_chart, time_chart};
use super::{checkpoints, creates, summary_text, Meta, ToolSummary};
use crate::churn::ChurnResult;
use crate::host::{HostSample, DAEMONS};
use crate::run::Sample;
use crate::tools::Kind;

pub(super) fn csv_samples(samples: &[Sample]) -> String {
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
