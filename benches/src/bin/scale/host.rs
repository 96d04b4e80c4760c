//! What the harness reads about dom0 and Xen: memory (Xen's free pages, dom0's meminfo, the
//! daemons' resident sets), the daemons' CPU time, and the resources a churn must give back
//! (Xenstore nodes, dom0 event channels, file descriptors, grant and foreign mappings, entries
//! under chaos's runtime directory).

use std::fs;
use std::path::Path;

use libchaos::hypervisor::{Hypervisor, PAGE_SIZE};
use libchaos::xenstore::{TxId, Xenstore, XsClient};
use serde::Serialize;

/// The dom0 processes the harness watches, by their command name. `chaos` is the reaper
/// (`chaos reap --watch`, started by the first `chaos create`): samples are taken between
/// creations, when no other chaos process runs.
pub const DAEMONS: [&str; 5] = ["xenstored", "xenconsoled", "chaosd", "xendevd", "chaos"];

/// Linux's USER_HZ on x86: /proc/<pid>/stat counts CPU time in these ticks.
const TICKS_PER_S: u64 = 100;

/// One look at a process.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProcSample {
    pub pid: u32,
    pub rss_kib: u64,
    /// User + system CPU time so far.
    pub cpu_ms: u64,
    pub fds: u64,
}

/// The pid of one of [`DAEMONS`]; `xenstored` is either Xenstore daemon (the C `xenstored`,
/// or `oxenstored`, the OCaml one Debian starts by default).
pub fn daemon_pid(name: &str) -> Option<u32> {
    find_pid(name).or_else(|| (name == "xenstored").then(|| find_pid("oxenstored"))?)
}

/// The pid of the first process with this command name (`/proc/<pid>/comm`).
pub fn find_pid(comm: &str) -> Option<u32> {
    let dir = fs::read_dir("/proc").ok()?;
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|c| c.trim_end() == comm)
                .unwrap_or(false)
        })
}

/// A field of /proc/<pid>/status in KiB ("VmRSS:   1234 kB").
fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        l.strip_prefix(key)?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()
    })
}

/// utime + stime of a process in milliseconds (fields 14 and 15 of /proc/<pid>/stat, counted
/// after the command name, which may contain spaces).
fn cpu_ms(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks * 1000 / TICKS_PER_S)
}

fn count_entries(dir: &str) -> u64 {
    fs::read_dir(dir).map(|d| d.count() as u64).unwrap_or(0)
}

pub fn proc_sample(pid: u32) -> ProcSample {
    ProcSample {
        pid,
        rss_kib: status_kib(pid, "VmRSS:").unwrap_or(0),
        cpu_ms: cpu_ms(pid).unwrap_or(0),
        fds: count_entries(&format!("/proc/{pid}/fd")),
    }
}

/// dom0's /proc/meminfo field in KiB.
fn meminfo_kib(key: &str) -> u64 {
    fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().find_map(|l| {
                l.strip_prefix(key)?
                    .strip_prefix(':')?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse()
                    .ok()
            })
        })
        .unwrap_or(0)
}

/// Memory and CPU at one moment of a run (a row of host.csv).
#[derive(Debug, Clone, Default, Serialize)]
pub struct HostSample {
    pub tool: String,
    /// Guests of this tool running when the sample was taken.
    pub running: u32,
    /// Seconds since the harness started.
    pub t_s: f64,
    pub xen_free_kib: u64,
    pub dom0_mem_available_kib: u64,
    /// The daemons', keyed by name (absent when not running).
    pub procs: Vec<(String, ProcSample)>,
    pub harness: ProcSample,
    /// Event channels dom0's kernel has bound (its own and its processes').
    pub dom0_evtchns: u64,
    /// Xenstore nodes (a walk of the whole tree; only at some samples, it costs requests).
    pub xs_nodes: Option<u64>,
}

impl HostSample {
    pub fn proc(&self, name: &str) -> Option<&ProcSample> {
        self.procs.iter().find(|(n, _)| n == name).map(|(_, p)| p)
    }
}

pub fn xen_free_kib(hv: &dyn Hypervisor) -> u64 {
    hv.physinfo()
        .map(|p| p.free_pages * PAGE_SIZE as u64 / 1024)
        .unwrap_or(0)
}

pub fn sample(
    hv: &dyn Hypervisor,
    tool: &str,
    running: u32,
    t_s: f64,
    with_nodes: bool,
) -> HostSample {
    HostSample {
        tool: tool.to_string(),
        running,
        t_s,
        xen_free_kib: xen_free_kib(hv),
        dom0_mem_available_kib: meminfo_kib("MemAvailable"),
        procs: DAEMONS
            .iter()
            .filter_map(|d| Some((d.to_string(), proc_sample(daemon_pid(d)?))))
            .collect(),
        harness: proc_sample(std::process::id()),
        dom0_evtchns: dom0_event_channels(),
        xs_nodes: if with_nodes { xenstore_nodes() } else { None },
    }
}

/// Nodes in Xenstore, counted by walking the tree from the root (None without xenstored).
pub fn xenstore_nodes() -> Option<u64> {
    let xs = XsClient::open().ok()?;
    let mut count = 0u64;
    let mut todo = vec![String::from("/")];
    while let Some(path) = todo.pop() {
        count += 1;
        // A node removed during the walk is simply not counted further.
        let Ok(children) = xs.directory(TxId::NONE, &path) else {
            continue;
        };
        for c in children {
            todo.push(if path == "/" {
                format!("/{c}")
            } else {
                format!("{path}/{c}")
            });
        }
    }
    Some(count)
}

/// Event channels dom0's kernel has bound (its own and those bound for processes through
/// /dev/xen/evtchn): the `xen-dyn` lines of /proc/interrupts.
pub fn dom0_event_channels() -> u64 {
    fs::read_to_string("/proc/interrupts")
        .map(|s| s.lines().filter(|l| l.contains("xen-dyn")).count() as u64)
        .unwrap_or(0)
}

/// Mappings of `device` (e.g. /dev/xen/gntdev) in every process's address space.
pub fn mappings_of(device: &str) -> u64 {
    process_dirs()
        .filter_map(|p| fs::read_to_string(p.join("maps")).ok())
        .map(|maps| maps.lines().filter(|l| l.ends_with(device)).count() as u64)
        .sum()
}

/// /proc/PID of every process in dom0.
fn process_dirs() -> impl Iterator<Item = std::path::PathBuf> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .map(|e| e.path())
}

/// Open file descriptors of all of dom0's processes. (Not /proc/sys/fs/file-nr: the kernel
/// keeps that count per CPU and reads it approximately, off by a batch of 32 in the lab.)
pub fn dom0_open_files() -> u64 {
    process_dirs()
        .map(|p| count_entries(&format!("{}/fd", p.display())))
        .sum()
}

/// Files and directories below `root`, recursively (not counting `root`).
pub fn entries_below(root: &Path) -> u64 {
    let Ok(dir) = fs::read_dir(root) else {
        return 0;
    };
    dir.filter_map(|e| e.ok())
        .map(|e| {
            let nested = match e.file_type() {
                Ok(t) if t.is_dir() => entries_below(&e.path()),
                _ => 0,
            };
            1 + nested
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = proc_sample(std::process::id());
        assert!(me.rss_kib > 0);
        assert!(me.fds >= 3);
        assert!(find_pid("no-such-process-name").is_none());
        // Every process's descriptors, this one's among them.
        assert!(dom0_open_files() >= me.fds);
    }

    #[test]
    fn counts_entries_recursively() {
        let dir = std::env::temp_dir().join(format!("scale-entries-{}", std::process::id()));
        fs::create_dir_all(dir.join("a/b")).unwrap();
        fs::write(dir.join("a/b/f"), "x").unwrap();
        fs::write(dir.join("g"), "x").unwrap();
        assert_eq!(entries_below(&dir), 4);
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(entries_below(&dir), 0);
    }
}
