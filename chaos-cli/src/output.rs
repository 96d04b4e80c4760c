//! What the commands print: xl-like tables for people, JSON for programs.

use std::path::Path;

use libchaos::config::Action;
use libchaos::hypervisor::{DomId, PhysInfo, PAGE_SIZE};
use libchaos::toolstack::{Created, DomainSummary};
use serde_json::json;

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, String> {
    serde_json::to_string(value).map_err(|e| format!("cannot print JSON: {e}"))
}

pub fn created(c: &Created, json: bool) -> Result<(), String> {
    if json {
        let mut v = serde_json::to_value(c).map_err(|e| format!("cannot print JSON: {e}"))?;
        v["total_us"] = json!(c.timings.total_us());
        println!("{}", to_json(&v)?);
    } else {
        let phases: Vec<String> = c
            .timings
            .phases()
            .iter()
            .map(|p| format!("{} {:.3}", p.name, p.us as f64 / 1000.0))
            .collect();
        println!(
            "Created domain {} ({}){} via the {} path in {:.3} ms [{} ms]",
            c.domid,
            c.name,
            if c.paused { ", paused," } else { "" },
            match c.path {
                libchaos::toolstack::CreationPath::Pool => "pool",
                libchaos::toolstack::CreationPath::Direct => "direct",
            },
            c.timings.total_us() as f64 / 1000.0,
            phases.join(", ")
        );
    }
    Ok(())
}

pub fn list(domains: &[DomainSummary], json: bool) -> Result<(), String> {
    if json {
        println!("{}", to_json(&domains)?);
        return Ok(());
    }
    println!(
        "{:<40} {:>5} {:>7} {:>5} {:>8} {:>9}",
        "Name", "ID", "Mem", "VCPUs", "State", "Time(s)"
    );
    for d in domains {
        println!(
            "{:<40} {:>5} {:>7} {:>5} {:>8} {:>9.1}",
            d.name, d.domid, d.memory_mib, d.vcpus, d.state, d.cpu_time_s
        );
    }
    Ok(())
}

pub fn reaped(reaped: &[(DomId, Action)], json: bool) -> Result<(), String> {
    if json {
        let v: Vec<_> = reaped
            .iter()
            .map(|(d, a)| json!({"domid": d, "action": a}))
            .collect();
        println!("{}", to_json(&v)?);
    } else {
        for (d, a) in reaped {
            println!("domain {d}: {a:?}");
        }
    }
    Ok(())
}

pub fn info(hypervisor: &str, phys: &PhysInfo, run_dir: &Path, json: bool) -> Result<(), String> {
    let mib = |pages: u64| pages * PAGE_SIZE as u64 / (1024 * 1024);
    let v = json!({
        "hypervisor": hypervisor,
        "nr_cpus": phys.nr_cpus,
        "total_memory_mib": mib(phys.total_pages),
        "free_memory_mib": mib(phys.free_pages),
        "run_dir": run_dir.display().to_string(),
        "chaos_version": env!("CARGO_PKG_VERSION"),
    });
    if json {
        println!("{}", to_json(&v)?);
    } else if let Some(map) = v.as_object() {
        for (k, val) in map {
            let shown = val.as_str().map_or_else(|| val.to_string(), str::to_string);
            println!("{k:<18}: {shown}");
        }
    }
    Ok(())
}
