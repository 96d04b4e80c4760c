//! One NoXS guest's console: its ring (mapped through the grant the toolstack seeded for
//! dom0), the local end of its channel, its log file and the clients watching it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use xen_dev::{EventChannels, GrantDev, GrantMap};
use xen_types::{DomId, EvtchnPort};
use xendevd_api::NoxsGuest;

use super::console_ring as ring;

/// Where console logs go, as xenconsoled's `--log=guest`.
pub const LOG_DIR: &str = "/var/log/xen/console";

/// A served console.
#[derive(Debug)]
pub struct Console {
    pub domid: DomId,
    pub name: String,
    ring: GrantMap,
    /// Our end of the guest's console channel.
    pub port: EvtchnPort,
    log: Option<File>,
    log_path: PathBuf,
    /// `chaos console` clients; a client that cannot keep up loses output, it never blocks
    /// the others.
    watchers: Vec<UnixStream>,
}

/// The log file of a guest named `name`.
pub fn log_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("guest-{name}.log"))
}

impl Console {
    /// Maps the ring, binds the channel and opens the log; takes what the guest already wrote.
    pub fn attach(
        guest: &NoxsGuest,
        grants: &Arc<GrantDev>,
        evtchn: &EventChannels,
        log_dir: &Path,
    ) -> Result<Console, String> {
        let dom = guest.domid;
        let ring = grants
            .map(dom, guest.console.gref)
            .map_err(|e| format!("mapping domain {dom}'s console ring: {e}"))?;
        let port = evtchn
            .bind_interdomain(dom, guest.console.evtchn)
            .map_err(|e| format!("binding domain {dom}'s console channel: {e}"))?;
        let mut c = Console {
            domid: dom,
            name: String::new(),
            ring,
            port,
            log: None,
            log_path: PathBuf::new(),
            watchers: Vec::new(),
        };
        c.name(&guest.name, log_dir);
        c.service(evtchn);
        Ok(c)
    }

    /// Whether the guest has its name (a warm shell's console is attached before its guest
    /// is named: its record names it when the guest is created, before it can write).
    pub fn named(&self) -> bool {
        !self.name.is_empty()
    }

    /// Gives the console its guest's name and opens the log named after it (nothing for an
    /// empty name).
    pub fn name(&mut self, name: &str, log_dir: &Path) {
        if name.is_empty() || self.named() {
            return;
        }
        self.name = name.to_string();
        self.log_path = log_path(log_dir, name);
        self.log = match OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
        {
            Ok(f) => Some(f),
            Err(e) => {
                log::warn!(
                    "{}: {e}; domain {}'s console is not logged",
                    self.log_path.display(),
                    self.domid
                );
                None
            }
        };
    }

    /// Moves output from the ring to the log and the watchers, and tells the guest.
    pub fn service(&mut self, evtchn: &EventChannels) {
        let mut out = Vec::new();
        if !ring::drain_output(&mut self.ring, &mut out) {
            return;
        }
        if let Some(f) = &mut self.log {
            if let Err(e) = f.write_all(&out) {
                log::warn!("{}: {e}", self.log_path.display());
            }
        }
        self.watchers.retain_mut(|w| match w.write(&out) {
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
            Err(_) => false,
        });
        if let Err(e) = evtchn.notify(self.port) {
            log::debug!("domain {}: notify console: {e}", self.domid);
        }
    }

    /// Keyboard input from a watcher.
    pub fn input(&mut self, data: &[u8], evtchn: &EventChannels) {
        if ring::feed_input(&mut self.ring, data) > 0 {
            if let Err(e) = evtchn.notify(self.port) {
                log::debug!("domain {}: notify console: {e}", self.domid);
            }
        }
    }

    pub fn watch(&mut self, stream: UnixStream) {
        self.watchers.push(stream);
    }

    /// Unbinds the channel; the ring is unmapped and the log closed when `self` drops.
    pub fn detach(self, evtchn: &EventChannels) {
        if let Err(e) = evtchn.unbind(self.port) {
            log::debug!("domain {}: unbind console: {e}", self.domid);
        }
    }
}
