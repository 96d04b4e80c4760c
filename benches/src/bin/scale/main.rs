//! `scale`: the scale harness, run inside a Xen dom0 (the lab: `lab/xenlab bench scale [N]`).
//!
//! For each tool in turn, in one boot: N guests created one after another with every creation
//! timed, the host's memory and the dom0 daemons' memory and CPU sampled as they pile up, xl
//! timed at checkpoints of load, then every guest destroyed (timed). Then, optionally, the
//! churn check (many create/destroy cycles over the chaos paths; every count must come back).
//! Writes samples.csv, host.csv, results.json, summary.txt and SVG plots to --out.

mod churn;
mod host;
mod report;
mod run;
mod stats;
mod svg;
mod tools;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;

use libchaos::hypervisor::xen::XenHypervisor;
use libchaos::hypervisor::{Hypervisor, PAGE_SIZE};
use libchaos::runtime::{self, HostKind};
use libchaos::toolstack::{StateDir, Toolstack};
use libchaos::xenstore::{LazyClient, Xenstore};

use run::{Checkpoints, Ctx};
use tools::{Kind, Setup, Tool};

#[derive(Parser, Debug)]
#[command(
    name = "scale",
    about = "Creation time against running guests: chaos's paths and xl, on this Xen host",
    // A flag given twice takes its last value: `lab/xenlab bench scale N` passes `--churn N`
    // and XENLAB_SCALE_ARGS may say otherwise after it.
    args_override_self = true
)]
struct Cli {
    /// Guests per chaos tool.
    #[arg(short = 'n', long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=30_000))]
    guests: u32,
    /// Tools to run, in this order (cli-xs, chaosd, cli-noxs, lib, xl).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "cli-xs,chaosd,cli-noxs,lib,xl"
    )]
    tools: Vec<String>,
    /// Guests of xl's own run (xl slows down badly; it is bounded).
    #[arg(long, default_value_t = 100)]
    xl_max: u32,
    /// Time xl at every this many running guests of the first chaos tool (0: never).
    #[arg(long, default_value_t = 100)]
    xl_checkpoint_every: u32,
    /// xl creations per checkpoint.
    #[arg(long, default_value_t = 3)]
    xl_checkpoint_runs: u32,
    /// Leave the guests paused (the default; kept for scripts that say so).
    #[arg(short, long, conflicts_with = "running")]
    paused: bool,
    /// Unpause the guests (the noop guest idles). Under TCG, hundreds of running Xenstore-plane
    /// noop guests have crashed dom0 processes (chaos, xenstored) in the lab.
    #[arg(long)]
    running: bool,
    /// The guest kernel.
    #[arg(long, default_value = "/guest/noop")]
    kernel: PathBuf,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 2)]
    memory: u64,
    /// Ready shells chaosd keeps for the chaosd tool.
    #[arg(long, default_value_t = 4)]
    pool_shells: u32,
    /// Where the results go.
    #[arg(long, default_value = "/tmp/scale")]
    out: PathBuf,
    /// Sample the host every this many guests (memory, daemons' RSS and CPU).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    sample_every: u32,
    /// Count Xenstore's nodes (a walk of the tree) every this many guests.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    nodes_every: u32,
    /// Wait this long (ms) after each creation of the scale runs. 0: the next one starts at
    /// once. A pause shows which growth comes from work a creation leaves running in the
    /// background (it then ends before the next) and which from the guests' number.
    #[arg(long, default_value_t = 0)]
    pause_ms: u64,
    /// Create/destroy cycles of the churn check over the chaos tools (0: no churn check).
    #[arg(long, default_value_t = 0)]
    churn: u32,
    /// Skip the scale runs (only the churn check).
    #[arg(long)]
    churn_only: bool,
    /// The first and the last this many creations are compared.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    window: u32,
    /// Fail unless every chaos tool's last-window median is within this factor of its first
    /// (a loose flatness check; never an absolute time).
    #[arg(long)]
    max_ratio: Option<f64>,
    /// The same for the tools on the Xenstore plane, if other: their creations slow down with
    /// xenstored's cost per request, which grows with the guests (docs/COSTS.md).
    #[arg(long)]
    max_ratio_xenstore: Option<f64>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run_all(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("scale: error: {e}");
            ExitCode::from(2)
        }
    }
}

/// The toolstack as the chaos command opens it on Xen (chaos-cli's backend.rs).
fn open_toolstack(
    run_dir: &std::path::Path,
) -> Result<(Arc<XenHypervisor>, Arc<Toolstack>), String> {
    let hv = Arc::new(XenHypervisor::open().map_err(|e| e.to_string())?);
    let state = StateDir::open(run_dir).map_err(|e| e.to_string())?;
    let xs: Option<Arc<dyn Xenstore>> = Some(Arc::new(LazyClient::default()));
    let ts = Arc::new(Toolstack::new(hv.clone(), xs, state));
    Ok((hv, ts))
}

fn write_configs(cli: &Cli) -> Result<(PathBuf, PathBuf), String> {
    std::fs::create_dir_all(&cli.out).map_err(|e| format!("{}: {e}", cli.out.display()))?;
    let base = format!(
        "name = \"scale\"\nkernel = \"{}\"\nmemory = {}\n",
        cli.kernel.display(),
        cli.memory
    );
    let xs = cli.out.join("noop.cfg");
    let noxs = cli.out.join("noop-noxs.cfg");
    std::fs::write(&xs, &base).map_err(|e| format!("{}: {e}", xs.display()))?;
    std::fs::write(&noxs, format!("{base}chaos_control_plane = \"noxs\"\n"))
        .map_err(|e| format!("{}: {e}", noxs.display()))?;
    Ok((xs, noxs))
}

fn xen_version() -> String {
    let read = |f: &str| {
        std::fs::read_to_string(format!("/sys/hypervisor/version/{f}")).unwrap_or_default()
    };
    format!(
        "{}.{}{}",
        read("major").trim(),
        read("minor").trim(),
        read("extra").trim()
    )
}

fn run_all(cli: Cli) -> Result<bool, String> {
    let started = Instant::now();
    let mut kinds: Vec<Kind> = cli
        .tools
        .iter()
        .map(|t| Kind::parse(t.trim()))
        .collect::<Result<_, _>>()?;
    let kernel = libchaos::image::KernelImage::from_file(&cli.kernel)
        .map_err(|e| format!("--kernel {}: {e}", cli.kernel.display()))?;
    let mut skipped = Vec::new();
    if kinds.contains(&Kind::CliNoxs) && kernel.notes.chaos_noxs.is_none() {
        // A guest without the NoXS frontend would wait forever for a Xenstore: not a failure
        // of chaos, so the path is left out and the summary says so.
        kinds.retain(|k| *k != Kind::CliNoxs);
        skipped.push(format!(
            "cli-noxs: {} has no chaos NoXS note (it does not implement NoXS)",
            cli.kernel.display()
        ));
        println!("scale: skipping {}", skipped[skipped.len() - 1]);
    }
    let run_dir = runtime::run_dir(HostKind::Xen, None);
    let (hv, ts) = open_toolstack(&run_dir)?;
    let (xs_cfg, noxs_cfg) = write_configs(&cli)?;
    let setup = Setup {
        xs_cfg,
        noxs_cfg,
        paused: !cli.running,
        out_dir: cli.out.clone(),
        pool_shells: cli.pool_shells,
        run_dir: run_dir.clone(),
    };
    let mut ctx = Ctx {
        hv: hv.as_ref(),
        setup: &setup,
        started,
        sample_every: cli.sample_every,
        pause: std::time::Duration::from_millis(cli.pause_ms),
        nodes_every: cli.nodes_every,
        samples: Vec::new(),
        host: Vec::new(),
        errors: Vec::new(),
    };
    let others = hv
        .list_domains()
        .map_err(|e| e.to_string())?
        .len()
        .saturating_sub(1);
    if others > 0 {
        return Err(format!(
            "{others} domain(s) besides dom0 are running: the harness wants an empty host"
        ));
    }
    if !cli.churn_only {
        let first_chaos = kinds.iter().position(|k| k.is_chaos());
        for (i, k) in kinds.iter().enumerate() {
            let n = if *k == Kind::Xl {
                cli.xl_max.min(cli.guests)
            } else {
                cli.guests
            };
            let cps = (Some(i) == first_chaos
                && kinds.contains(&Kind::Xl)
                && cli.xl_checkpoint_every > 0)
                .then_some(Checkpoints {
                    every: cli.xl_checkpoint_every,
                    runs: cli.xl_checkpoint_runs,
                });
            let mut tool = Tool::new(*k, ts.clone());
            run::run_tool(&mut ctx, &mut tool, n, cps);
        }
    }
    let churn = if cli.churn > 0 {
        let mut tools: Vec<Tool> = churn::churn_kinds(&kinds)
            .into_iter()
            .map(|k| Tool::new(k, ts.clone()))
            .collect();
        churn::churn(&mut ctx, &mut tools, cli.churn)
    } else {
        None
    };
    let window = cli.window;
    let summaries = report::summarize(&ctx.samples, &ctx.host, &kinds, window);
    let phys = hv.physinfo().map_err(|e| e.to_string())?;
    let meta = report::Meta {
        guests: cli.guests,
        kernel: cli.kernel.display().to_string(),
        kernel_bytes: std::fs::metadata(&cli.kernel).map(|m| m.len()).unwrap_or(0),
        memory_mib: cli.memory,
        paused: !cli.running,
        tools: kinds.iter().map(|k| k.name()).collect(),
        xl_max: cli.xl_max,
        pool_shells: cli.pool_shells,
        window,
        xen_version: xen_version(),
        nr_cpus: phys.nr_cpus,
        xen_total_mib: phys.total_pages * PAGE_SIZE as u64 / (1024 * 1024),
        dom0_mem_total_kib: std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| m.lines().next()?.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0),
        duration_s: started.elapsed().as_secs_f64(),
        skipped,
    };
    let mut ok = ctx.errors.is_empty();
    let mut errors = ctx.errors.clone();
    if let Some(noxs_max) = cli.max_ratio {
        for (s, kind) in summaries
            .iter()
            .filter_map(|s| Some((s, Kind::parse(s.tool).ok()?)))
            .filter(|(_, k)| k.is_chaos())
        {
            let max = match kind.needs_xenstore() {
                true => cli.max_ratio_xenstore.unwrap_or(noxs_max),
                false => noxs_max,
            };
            match s.ratio {
                Some(r) if s.created >= 2 * window && r <= max => {}
                Some(r) if s.created >= 2 * window => {
                    errors.push(format!(
                        "{}: not flat: the last {window} creations' median is {r:.2}x the first {window}'s (at most {max}x allowed)",
                        s.tool
                    ));
                    ok = false;
                }
                _ => {
                    errors.push(format!(
                        "{}: too few creations ({}) to compare {window} with {window}",
                        s.tool, s.created
                    ));
                    ok = false;
                }
            }
        }
    }
    if churn.as_ref().is_some_and(|c| !c.clean()) {
        ok = false;
    }
    let files = report::write_all(
        &cli.out,
        &meta,
        &kinds,
        &ctx.samples,
        &ctx.host,
        &summaries,
        churn.as_ref(),
        &errors,
    )?;
    print!(
        "{}",
        report::summary_text(
            &meta,
            &summaries,
            &report::checkpoints(&ctx.samples),
            churn.as_ref(),
            &errors
        )
    );
    println!(
        "scale: results in {}: {}",
        cli.out.display(),
        files.join(" ")
    );
    Ok(ok)
}
