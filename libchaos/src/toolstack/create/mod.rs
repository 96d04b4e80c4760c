//! Creating a guest: `prepare` makes a shell (everything that does not depend on the image),
//! `execute` turns a shell into a running guest, `create` does both. A failure anywhere rolls
//! back what exists by then.
//!
//! Shells are made in `prepare`, built into guests in `execute`, after the checks (`checks`)
//! that refuse what cannot work before anything is made; a NoXS guest's devices are laid out
//! in `devices`.

mod checks;
mod devices;
mod execute;
mod prepare;

use super::random::random_uuid;
use super::{
    Created, CreationPath, Flavor, PendingCreation, Result, Shell, Timings, Toolstack,
    ToolstackError,
};
use crate::config::DomainConfig;
use crate::hypervisor::costs::Costs;
use crate::hypervisor::Uuid;

/// What finds a half-made guest again if the process making it dies during execute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CrashRecord {
    /// Nothing yet: execute writes a pending record first and removes it at the end.
    Write,
    /// The pending record `create` wrote before the domain existed: execute removes it.
    Pending,
    /// The shell's own record, whose handle the guest takes (chaosd's pool): nothing to write.
    Shell,
}

impl Toolstack {
    /// Creates a guest by prepare + execute.
    pub fn create(&self, cfg: &DomainConfig, paused: bool) -> Result<Created> {
        self.create_if(cfg, paused, &|| true)
    }

    /// [`create`](Self::create), rolled back if `wanted` says no right before the guest is
    /// committed (chaosd asks whether its client is still there).
    pub fn create_if(
        &self,
        cfg: &DomainConfig,
        paused: bool,
        wanted: &dyn Fn() -> bool,
    ) -> Result<Created> {
        // A creation that a killed process left half-made may hold this name.
        self.clean_up_abandoned_creations()?;
        // Refuse what cannot work before making anything, so mistakes cost nothing.
        self.check_creatable(cfg)?;
        self.check_name_free(&cfg.name)?;
        // The domain carries the guest's handle from the start and is recorded as pending
        // before it exists, so a process killed at any point leaves nothing unrecorded.
        let uuid = cfg.uuid.unwrap_or_else(random_uuid);
        self.state.save_pending(&PendingCreation {
            uuid,
            name: cfg.name.clone(),
            pid: crate::toolstack::state::own_pid(),
            domid: None,
        })?;
        let shell = match self.prepare_tagged(&Flavor::of(cfg), uuid) {
            Ok(shell) => shell,
            Err(e) => {
                if let Err(r) = self.state.remove_pending(&uuid) {
                    log::warn!("removing the record of a failed creation: {r}");
                }
                return Err(e);
            }
        };
        self.execute_as(shell, cfg, paused, uuid, CrashRecord::Pending, wanted)
    }

    /// Executes a shell that was prepared ahead of time (path "pool"): only this creation's
    /// own work is timed. A shell made with a handle ([`prepare_tagged`](Self::prepare_tagged))
    /// becomes the guest of that UUID, unless the config names one: whoever tagged it keeps
    /// its record and destroys it if it never became a guest (chaosd's pool does, at start),
    /// so neither a pending record nor a new handle is written for it.
    pub fn execute_pooled(
        &self,
        shell: Shell,
        cfg: &DomainConfig,
        paused: bool,
    ) -> Result<Created> {
        self.execute_pooled_if(shell, cfg, paused, &|| true)
    }

    /// [`execute_pooled`](Self::execute_pooled) with the check of [`create_if`](Self::create_if).
    pub fn execute_pooled_if(
        &self,
        shell: Shell,
        cfg: &DomainConfig,
        paused: bool,
        wanted: &dyn Fn() -> bool,
    ) -> Result<Created> {
        // The shell was made ahead of time: its preparation is not this creation's cost.
        let shell = Shell {
            timings: Timings::default(),
            costs: Costs::default(),
            ..shell
        };
        let (uuid, record) = match cfg.uuid {
            Some(uuid) => (uuid, CrashRecord::Write),
            None if shell.handle != Uuid::NIL => (shell.handle, CrashRecord::Shell),
            None => (random_uuid(), CrashRecord::Write),
        };
        let mut created = self.execute_as(shell, cfg, paused, uuid, record, wanted)?;
        created.path = CreationPath::Pool;
        Ok(created)
    }

    /// Names are unique among chaos's guests (checked through the name index, so the check
    /// costs the same with ten guests or ten thousand). Guests xl created are not scanned here.
    pub(super) fn check_name_free(&self, name: &str) -> Result<()> {
        if self.find_chaos_guest(name)?.is_some() {
            return Err(ToolstackError::NameInUse(name.to_string()));
        }
        Ok(())
    }
}
