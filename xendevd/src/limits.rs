//! The open-files limit. xendevd keeps files open per NoXS guest it serves (the console log,
//! and a TAP device per vif), so the usual soft limit of 1024 would refuse the guest after about
//! the thousandth. At start it raises the limit as far as it may, as xenconsoled does.

use std::path::Path;

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Where the kernel says how high a process's open-files limit may go.
const NR_OPEN: &str = "/proc/sys/fs/nr_open";

/// What [`raise_open_files`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    /// The soft limit found at start.
    pub before: u64,
    /// The soft limit now.
    pub now: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error("cannot read the open-files limit: {0}")]
    Read(nix::Error),
    #[error("cannot raise the open-files limit to {0}: {1}")]
    Raise(u64, nix::Error),
}

/// Raises the open-files limit (soft and hard) to the kernel's maximum (`fs.nr_open`, root
/// only), or else the soft limit to the hard one.
pub fn raise_open_files() -> Result<OpenFiles, LimitError> {
    raise_open_files_to(kernel_max(Path::new(NR_OPEN)))
}

fn raise_open_files_to(ceiling: Option<u64>) -> Result<OpenFiles, LimitError> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(LimitError::Read)?;
    if let Some(max) = ceiling.filter(|&max| max > hard) {
        // Raising the hard limit needs CAP_SYS_RESOURCE; without it, the hard limit is the most.
        if setrlimit(Resource::RLIMIT_NOFILE, max, max).is_ok() {
            return Ok(OpenFiles {
                before: soft,
                now: max,
            });
        }
    }
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(|e| LimitError::Raise(hard, e))?;
    }
    Ok(OpenFiles {
        before: soft,
        now: soft.max(hard),
    })
}

/// `fs.nr_open`, if it can be read.
fn kernel_max(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test for both: they change this process's limit, and tests run in parallel.
    #[test]
    fn the_soft_limit_reaches_at_least_the_hard_limit_and_never_falls() {
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        let raised = raise_open_files().unwrap();
        let (soft_now, _) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(raised.now, soft_now);
        assert!(
            soft_now >= hard,
            "soft {soft_now} below the hard limit {hard}"
        );
        assert!(raised.now >= raised.before);
        // A second call finds nothing more to do.
        assert_eq!(raise_open_files().unwrap().now, soft_now);
        // A ceiling below the limit is no reason to lower it.
        assert_eq!(raise_open_files_to(Some(1)).unwrap().now, soft_now);
        assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).unwrap().0, soft_now);
    }

    #[test]
    fn the_kernel_maximum_is_read_from_its_file_or_not_at_all() {
        let dir = std::env::temp_dir().join(format!("xendevd-limits-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("nr_open");
        std::fs::write(&file, "1048576\n").unwrap();
        assert_eq!(kernel_max(&file), Some(1_048_576));
        std::fs::write(&file, "lots\n").unwrap();
        assert_eq!(kernel_max(&file), None);
        assert_eq!(kernel_max(&dir.join("missing")), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
