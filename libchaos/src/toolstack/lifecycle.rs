//! Lifecycle of existing guests: find, list, pause, unpause, shutdown, destroy, and reaping
//! guests that stopped according to their on_poweroff / on_reboot / on_crash actions.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::error::hv_step;
use super::{DomainRecord, Result, Toolstack, ToolstackError};
use crate::config::Action;
use crate::hypervisor::{DomId, DomainInfo, HypervisorError, ShutdownReason, PAGE_SIZE};

/// How often `shutdown --wait` looks at the domain.
const SHUTDOWN_POLL: Duration = Duration::from_millis(10);

/// What `chaos shutdown` asks the guest for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownKind {
    Poweroff,
    Reboot,
}

impl ShutdownKind {
    /// The word written to `control/shutdown`.
    pub(crate) fn word(self) -> &'static str {
        match self {
            ShutdownKind::Poweroff => "poweroff",
            ShutdownKind::Reboot => "reboot",
        }
    }
}

/// Who serves a guest's console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleServer {
    /// xenconsoled (Xenstore-plane guests, and xl's): attach with Xen's `xenconsole` client.
    Xenconsoled,
    /// xendevd (NoXS guests): its socket streams the console.
    Xendevd(std::path::PathBuf),
}

/// One line of `chaos list`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DomainSummary {
    pub domid: DomId,
    pub name: String,
    pub memory_mib: u64,
    pub vcpus: u32,
    /// xl's six state letters: running, blocked, paused, shutdown, crashed, dying.
    pub state: String,
    pub shutdown_reason: Option<ShutdownReason>,
    pub cpu_time_s: f64,
    /// Whether chaos created it (and so has a record of its config).
    pub chaos: bool,
}

fn state_letters(info: &DomainInfo) -> String {
    let flag = |on: bool, c: char| if on { c } else { '-' };
    let crashed = info.shutdown == Some(ShutdownReason::Crash);
    [
        flag(info.running, 'r'),
        flag(info.blocked, 'b'),
        flag(info.paused, 'p'),
        flag(info.shutdown.is_some() && !crashed, 's'),
        flag(crashed, 'c'),
        flag(info.dying, 'd'),
    ]
    .iter()
    .collect()
}

impl Toolstack {
    /// The domain a user means by `what`: a domid, or a name.
    pub fn resolve(&self, what: &str) -> Result<DomId> {
        if let Ok(n) = what.parse::<u16>() {
            let dom = DomId(n);
            return match self.hv.domain_info(dom) {
                Ok(_) => Ok(dom),
                Err(HypervisorError::NoSuchDomain(_)) => {
                    Err(ToolstackError::NoSuchDomain(what.to_string()))
                }
                Err(e) => Err(hv_step("look up domain")(e)),
            };
        }
        if what == "Domain-0" {
            return Ok(DomId::DOM0);
        }
        self.find_by_name(what)?
            .ok_or_else(|| ToolstackError::NoSuchDomain(what.to_string()))
    }

    /// The live chaos guest with this name, from the name index: one file read and one
    /// hypercall, however many guests run (this is on the creation path). The entry counts only
    /// while its domain carries the handle it was claimed with: after a crash, its domid may
    /// belong to another domain since.
    pub(super) fn find_chaos_guest(&self, name: &str) -> Result<Option<DomId>> {
        let Some(entry) = self.state.name_entry(name)? else {
            return Ok(None);
        };
        // A live owner holds the name even before its record exists (it is being created).
        if self.carries(entry.domid, entry.uuid)? {
            Ok(Some(entry.domid))
        } else {
            Ok(None)
        }
    }

    /// Whether domain `dom` exists with the handle `uuid`.
    pub(super) fn carries(&self, dom: DomId, uuid: crate::hypervisor::Uuid) -> Result<bool> {
        match self.hv.domain_info(dom) {
            Ok(info) => Ok(info.handle == uuid),
            Err(HypervisorError::NoSuchDomain(_)) => Ok(false),
            Err(e) => Err(hv_step("look up domain")(e)),
        }
    }

    /// Removes what processes that died left behind: half-made domains of creations they never
    /// finished (with their Xenstore entries and names), records of domains that are gone or
    /// whose domid another domain has now, and name entries no domain carries. `list`, every
    /// creation and chaosd's start run it.
    pub fn clean_up(&self) -> Result<()> {
        let infos = self.hv.list_domains().map_err(hv_step("list domains"))?;
        self.clean_up_pending(&infos)?;
        for r in self.state.all()? {
            let cleaned = match infos.iter().find(|i| i.domid == r.domid) {
                Some(i) if i.handle == r.uuid => Ok(()),
                // The domid belongs to another domain now: the record's Xenstore entries went
                // with its domain's; only the record and the name are ours to remove.
                Some(_) => self.state.forget(&r).map_err(Into::into),
                None => self.clean_up_after(&r),
            };
            if let Err(e) = cleaned {
                log::warn!("cleaning up after domain {} ({:?}): {e}", r.domid, r.name);
            }
        }
        for (path, e) in self.state.name_entries()? {
            if !infos
                .iter()
                .any(|i| i.domid == e.domid && i.handle == e.uuid)
            {
                self.state.remove_name_entry(&path, &e)?;
            }
        }
        Ok(())
    }

    /// Destroys the half-made domains of creations whose process died, with what was written
    /// for them, and removes their pending records.
    fn clean_up_pending(&self, infos: &[DomainInfo]) -> Result<()> {
        for p in self.state.pending()? {
            if super::state::process_alive(p.pid) {
                continue;
            }
            // One that cannot be undone now is tried again next time; the others go on.
            if let Err(e) = self.undo_pending(&p, infos) {
                log::warn!(
                    "undoing the creation of {:?} by process {}: {e}",
                    p.name,
                    p.pid
                );
            }
        }
        Ok(())
    }

    fn undo_pending(&self, p: &super::PendingCreation, infos: &[DomainInfo]) -> Result<()> {
        let found = infos
            .iter()
            .find(|i| i.handle == p.uuid && p.domid.is_none_or(|d| d == i.domid));
        if let Some(info) = found {
            let record = self.state.load(info.domid)?;
            if record.as_ref().is_none_or(|r| r.uuid != p.uuid) {
                log::warn!(
                    "domain {}: half-made by process {} that died; destroying it",
                    info.domid,
                    p.pid
                );
                match self.hv.destroy_domain(info.domid) {
                    Ok(()) | Err(HypervisorError::NoSuchDomain(_)) => {}
                    Err(e) => return Err(hv_step("destroy")(e)),
                }
                self.hv.checkpoint();
                self.unpublish_half_made(info.domid, p.uuid)?;
                self.state.release_name(&p.name, info.domid)?;
            }
        }
        Ok(self.state.remove_pending(&p.uuid)?)
    }

    /// Removes what a creation that died midway may have published for its domain `domid`
    /// (with handle `uuid`), on whichever plane, if it got that far.
    pub(crate) fn unpublish_half_made(
        &self,
        domid: DomId,
        uuid: crate::hypervisor::Uuid,
    ) -> Result<()> {
        if let Some(xs) = self.xenstore_plane() {
            xs.unpublish(domid, Some(uuid))?;
        }
        if self.noxs.has_record(domid) {
            crate::plane::ControlPlane::unpublish(&self.noxs, domid, Some(uuid))?;
        }
        Ok(())
    }

    /// The part of [`clean_up`](Self::clean_up) a creation runs: creations that a killed
    /// process left half-made (cheap when there are none: one directory read).
    pub(super) fn clean_up_abandoned_creations(&self) -> Result<()> {
        if self
            .state
            .pending()?
            .iter()
            .all(|p| super::state::process_alive(p.pid))
        {
            return Ok(());
        }
        self.clean_up_pending(&self.hv.list_domains().map_err(hv_step("list domains"))?)
    }

    /// Removes what chaos wrote for a guest whose domain is gone: the plane's entries, then the
    /// record and the name. If the plane fails, the record stays for the next try.
    fn clean_up_after(&self, r: &DomainRecord) -> Result<()> {
        self.plane(r.config.control_plane)?
            .unpublish(r.domid, Some(r.uuid))?;
        Ok(self.state.forget(r)?)
    }

    /// The running domain with this name: chaos's guests first, then Xenstore (which also
    /// knows the guests xl created; that scan visits every domain, so only lookups use it).
    pub(super) fn find_by_name(&self, name: &str) -> Result<Option<DomId>> {
        if let Some(dom) = self.find_chaos_guest(name)? {
            return Ok(Some(dom));
        }
        // Without xenstored nobody has a Xenstore name (and asking for each domain would wait
        // for it once per domain).
        if let Some(xs) = self.xenstore_plane().filter(|xs| xs.ready().is_ok()) {
            for info in self.hv.list_domains().map_err(hv_step("list domains"))? {
                if xs.name_of(info.domid)?.as_deref() == Some(name) {
                    return Ok(Some(info.domid));
                }
            }
        }
        Ok(None)
    }

    /// Every domain with what chaos and Xenstore know of it; stale records of domains that
    /// no longer exist are removed on the way.
    pub fn list(&self) -> Result<Vec<DomainSummary>> {
        if let Err(e) = self.clean_up() {
            // Listing must work even when cleaning up cannot (it is tried again next time).
            log::warn!("cleaning up leftovers: {e}");
        }
        let infos = self.hv.list_domains().map_err(hv_step("list domains"))?;
        let records = self.state.all()?;
        // chaosd's ready shells: domains, but not guests anyone asked for.
        let shells: Vec<DomId> = self
            .state
            .shells()?
            .iter()
            .filter_map(|s| s.domid)
            .collect();
        let mut out = Vec::with_capacity(infos.len());
        for info in infos {
            let record = records
                .iter()
                .find(|r| r.domid == info.domid && r.uuid == info.handle);
            let name = match record {
                Some(r) => r.name.clone(),
                None if info.domid == DomId::DOM0 => "Domain-0".to_string(),
                None if shells.contains(&info.domid) => "(shell)".to_string(),
                None => match self.xenstore_plane() {
                    Some(xs) => xs.name_of(info.domid)?,
                    None => None,
                }
                .unwrap_or_else(|| "(unnamed)".to_string()),
            };
            out.push(DomainSummary {
                domid: info.domid,
                name,
                memory_mib: info.tot_pages * PAGE_SIZE as u64 / (1024 * 1024),
                vcpus: info.online_vcpus,
                state: state_letters(&info),
                shutdown_reason: info.shutdown,
                cpu_time_s: info.cpu_time_ns as f64 / 1e9,
                chaos: record.is_some(),
            });
        }
        Ok(out)
    }

    /// Who serves the console of `dom`.
    pub fn console_server(&self, dom: DomId) -> Result<ConsoleServer> {
        Ok(match self.state.load(dom)? {
            Some(r) if r.config.control_plane == crate::config::PlaneKind::Noxs => {
                ConsoleServer::Xendevd(self.noxs.socket().to_path_buf())
            }
            _ => ConsoleServer::Xenconsoled,
        })
    }

    pub fn pause(&self, dom: DomId) -> Result<()> {
        self.hv.pause_domain(dom).map_err(hv_step("pause"))?;
        self.hv.checkpoint();
        Ok(())
    }

    pub fn unpause(&self, dom: DomId) -> Result<()> {
        self.hv.unpause_domain(dom).map_err(hv_step("unpause"))?;
        self.hv.checkpoint();
        Ok(())
    }

    /// Destroys a guest and removes everything chaos wrote for it.
    pub fn destroy(&self, dom: DomId) -> Result<()> {
        if dom == DomId::DOM0 {
            return Err(ToolstackError::Unsupported(
                "domain 0 cannot be destroyed".into(),
            ));
        }
        let record = match self.state.load(dom)? {
            // A record of an earlier domain with this domid: not this domain's.
            Some(r) if !self.carries(dom, r.uuid)? && self.hv.domain_info(dom).is_ok() => {
                self.state.forget(&r)?;
                None
            }
            r => r,
        };
        self.destroy_with(dom, record.as_ref())
    }

    /// Destroys `dom` and removes what chaos wrote for it, as its record (if any) says.
    fn destroy_with(&self, dom: DomId, record: Option<&DomainRecord>) -> Result<()> {
        let destroyed = self.hv.destroy_domain(dom);
        self.hv.checkpoint();
        // Clean up even when the domain was already gone: the leftovers are ours to remove.
        // A domain chaos has no record of may be xl's: its Xenstore entries go too, as with xl.
        let plane = match record {
            Some(r) => Some(self.plane(r.config.control_plane)?),
            None => self.xenstore_plane(),
        };
        if let Some(plane) = plane {
            plane.unpublish(dom, record.map(|r| r.uuid))?;
        }
        match record {
            Some(r) => self.state.forget(r)?,
            None => self.state.remove(dom)?,
        }
        destroyed.map_err(|e| match e {
            HypervisorError::NoSuchDomain(_) => ToolstackError::NoSuchDomain(dom.to_string()),
            e => hv_step("destroy")(e),
        })
    }

    /// Asks the guest to power off or reboot through its control plane. With `wait`, waits
    /// until it has shut down and then applies its on_poweroff / on_reboot action.
    pub fn shutdown(&self, dom: DomId, kind: ShutdownKind, wait: Option<Duration>) -> Result<()> {
        if dom == DomId::DOM0 {
            return Err(ToolstackError::Unsupported(
                "chaos does not shut down domain 0".into(),
            ));
        }
        let record = self.state.load(dom)?;
        match &record {
            Some(r) => {
                self.plane(r.config.control_plane)?
                    .request_shutdown(dom, Some(&r.guest()), kind)?
            }
            None => self
                .plane(crate::config::PlaneKind::Xenstore)?
                .request_shutdown(dom, None, kind)?,
        }
        let Some(limit) = wait else {
            return Ok(());
        };
        let start = Instant::now();
        loop {
            match self.hv.domain_info(dom) {
                Ok(info) if info.shutdown.is_some() => break,
                Ok(_) => {}
                // Someone else (a reaper) already took it away.
                Err(HypervisorError::NoSuchDomain(_)) => return Ok(()),
                Err(e) => return Err(hv_step("wait for shutdown")(e)),
            }
            if start.elapsed() >= limit {
                return Err(ToolstackError::Unsupported(format!(
                    "domain {dom} did not shut down within {limit:?} (does the guest listen on control/shutdown?)"
                )));
            }
            std::thread::sleep(SHUTDOWN_POLL);
        }
        self.reap_one(dom).map(|_| ())
    }

    /// Applies the configured action to every chaos guest that has shut down; returns what it
    /// did. Whoever runs it (`chaos reap`, chaosd, `shutdown --wait`) is the reaper.
    pub fn reap(&self) -> Result<Vec<(DomId, Action)>> {
        let mut done = Vec::new();
        for r in self.state.all()? {
            if let Some(action) = self.reap_one(r.domid)? {
                done.push((r.domid, action));
            }
        }
        Ok(done)
    }

    /// Forgets a guest whose domain is gone (or going): what its plane published (a NoXS
    /// backend's mappings would keep a dying domain from going), its record and its name.
    pub(super) fn forget_gone(&self, record: &DomainRecord) -> Result<()> {
        if let Ok(plane) = self.plane(record.config.control_plane) {
            if let Err(e) = plane.unpublish(record.domid, Some(record.uuid)) {
                log::warn!("domain {}: {e}", record.domid);
            }
        }
        self.state.forget(record)?;
        Ok(())
    }

    /// Applies the action for one domain if it has shut down; `None` if it is still running,
    /// gone, or not a chaos guest.
    pub(super) fn reap_one(&self, dom: DomId) -> Result<Option<Action>> {
        let Some(record) = self.state.load(dom)? else {
            return Ok(None);
        };
        let reason = match self.hv.domain_info(dom) {
            Ok(info) => match info.shutdown {
                Some(reason) => reason,
                // Destroyed by someone else, waiting for its last mappings to go.
                None if info.dying => {
                    self.forget_gone(&record)?;
                    return Ok(None);
                }
                None => return Ok(None),
            },
            Err(HypervisorError::NoSuchDomain(_)) => {
                self.forget_gone(&record)?;
                return Ok(None);
            }
            Err(e) => return Err(hv_step("domain info")(e)),
        };
        let cfg = &record.config;
        let action = match reason {
            ShutdownReason::Poweroff => cfg.on_poweroff,
            ShutdownReason::Reboot => cfg.on_reboot,
            ShutdownReason::Crash => cfg.on_crash,
            // Suspend is for save/restore; a watchdog or soft reset chaos treats like a crash.
            ShutdownReason::Suspend => return Ok(None),
            ShutdownReason::Watchdog | ShutdownReason::SoftReset => cfg.on_crash,
        };
        if action == Action::Preserve {
            return Ok(Some(action));
        }
        if action == Action::SoftReset {
            log::warn!("domain {dom}: soft-reset is not supported; destroying it");
        }
        // Two reapers may race (chaosd and `shutdown --wait`), and Xen lets both destroy a
        // dying domain: the record's rename decides which one does the work.
        if !self.state.claim_for_reaping(dom)? {
            return Ok(None);
        }
        match self.destroy_with(dom, Some(&record)) {
            // Destroyed meanwhile by someone else (chaos destroy): nothing to restart.
            Err(ToolstackError::NoSuchDomain(_)) => return Ok(None),
            other => other?,
        }
        if matches!(
            action,
            Action::Restart | Action::RenameRestart | Action::CoredumpRestart
        ) {
            self.create(cfg, false)?;
        }
        if matches!(action, Action::CoredumpDestroy | Action::CoredumpRestart) {
            log::warn!("domain {dom}: core dumps are not supported; no dump was written");
        }
        Ok(Some(action))
    }
}
