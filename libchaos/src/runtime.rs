//! Where chaos keeps its runtime state (records, name index, locks, chaosd's socket): one
//! policy for every front end. The `--run-dir` flag wins, then `CHAOS_RUN_DIR`, then the
//! default of the host kind: /run/chaos on Xen, $TMPDIR/chaos-sim for the simulated host (so a
//! dry run never touches a real host's records).

use std::path::{Path, PathBuf};

/// The runtime directory on a Xen host, unless told otherwise.
pub const DEFAULT_RUN_DIR: &str = "/run/chaos";
/// The variable that overrides the default runtime directory.
pub const RUN_DIR_VAR: &str = "CHAOS_RUN_DIR";
/// chaosd's socket inside the runtime directory.
pub const SOCKET_NAME: &str = "chaosd.sock";

/// Which host a front end drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKind {
    /// Real Xen, through /dev/xen.
    Xen,
    /// The in-memory hypervisor, saved between commands (dry runs).
    Sim,
}

/// The runtime directory: `flag`, else `CHAOS_RUN_DIR`, else the host kind's default.
pub fn run_dir(kind: HostKind, flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os(RUN_DIR_VAR).map(PathBuf::from))
        .unwrap_or_else(|| match kind {
            HostKind::Xen => PathBuf::from(DEFAULT_RUN_DIR),
            HostKind::Sim => std::env::temp_dir().join("chaos-sim"),
        })
}

/// chaosd's socket in a runtime directory.
pub fn socket_in(run_dir: &Path) -> PathBuf {
    run_dir.join(SOCKET_NAME)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_wins_and_each_host_kind_has_its_default() {
        let flag = PathBuf::from("/tmp/x");
        assert_eq!(run_dir(HostKind::Xen, Some(flag.clone())), flag);
        assert_eq!(run_dir(HostKind::Sim, Some(flag.clone())), flag);
        if std::env::var_os(RUN_DIR_VAR).is_none() {
            assert_eq!(run_dir(HostKind::Xen, None), PathBuf::from(DEFAULT_RUN_DIR));
            assert!(run_dir(HostKind::Sim, None).ends_with("chaos-sim"));
        }
        assert_eq!(socket_in(&flag), flag.join("chaosd.sock"));
    }
}
