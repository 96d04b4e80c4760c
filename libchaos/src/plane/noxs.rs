//! The NoXS control plane (noxs/ABI.md): no Xenstore at all. The builder writes the guest's
//! device page and control pages into its memory; this plane makes them known to the dom0
//! backends (xendevd serves the console, and the vifs), and sends power requests through the
//! sysctl control page and its event channel.
//!
//! Who holds the dom0 ends: xendevd, resident, for the console ring (and vif rings); it learns
//! about a guest from the guest's record in `<run dir>/noxs/` and an `attach` on its socket,
//! and reads the records back when it restarts. The sysctl channel needs no resident process:
//! `chaos shutdown` binds the guest's port, notifies it and unbinds again.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use noxs::{state, SysctlCtrl};
use xendevd_api::{ClientError, ConsoleRing, NoxsGuest, NoxsVif, RecordDir, Request};

use super::{ControlPlane, DeviceKind, Guest, PlaneError, Result, Ring};
use crate::build::GNTTAB_RESERVED_CONSOLE;
use crate::config::PlaneKind;
use crate::hypervisor::{DomId, Hypervisor, Uuid};
use crate::toolstack::{ShutdownKind, Timings};

/// The dom0 side of the NoXS backends: told when a guest appears and goes.
pub trait NoxsBackend: Send + Sync + fmt::Debug {
    /// Where its socket is (for `chaos console`).
    fn socket(&self) -> &std::path::Path;
    /// Serve the guest whose record was just written.
    fn attach(&self, domid: DomId) -> std::result::Result<(), String>;
    /// Stop serving it.
    fn detach(&self, domid: DomId) -> std::result::Result<(), String>;
}

/// xendevd, over its socket. One connection is kept for the requests that follow (xendevd
/// takes one request after another on it), so a creation pays no connect and xendevd no
/// accept; a connection that fails (xendevd restarted) is replaced once, which is safe because
/// attach and detach can be repeated.
#[derive(Debug)]
pub struct Xendevd {
    socket: PathBuf,
    kept: Mutex<Option<xendevd_api::Client>>,
}

impl Xendevd {
    pub fn new(socket: PathBuf) -> Xendevd {
        Xendevd {
            socket,
            kept: Mutex::new(None),
        }
    }

    /// Sends `req` on the kept connection (made first if there is none), or on a new one if
    /// the kept one has broken. A refusal is xendevd's answer and is not retried.
    fn request(&self, req: &Request) -> std::result::Result<(), ClientError> {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = kept.as_mut() {
            match client.expect_ok(req) {
                Ok(()) => return Ok(()),
                Err(e @ ClientError::Refused(_)) => return Err(e),
                // Broken or out of step: drop it and try once on a new one.
                Err(_) => *kept = None,
            }
        }
        let mut client = xendevd_api::Client::connect(&self.socket)?;
        client.expect_ok(req)?;
        *kept = Some(client);
        Ok(())
    }
}

impl NoxsBackend for Xendevd {
    fn socket(&self) -> &std::path::Path {
        &self.socket
    }

    fn attach(&self, domid: DomId) -> std::result::Result<(), String> {
        self.request(&Request::Attach { domid })
            .map_err(|e| e.to_string())
    }

    fn detach(&self, domid: DomId) -> std::result::Result<(), String> {
        match self.request(&Request::Detach { domid }) {
            Ok(()) => Ok(()),
            // Not running: nothing is served, nothing to take away (a restarted xendevd does
            // not find the removed record).
            Err(ClientError::NotRunning { .. }) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// The NoXS control plane.
pub struct NoxsPlane {
    hv: Arc<dyn Hypervisor>,
    records: PathBuf,
    backend: Box<dyn NoxsBackend>,
}

impl fmt::Debug for NoxsPlane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoxsPlane")
            .field("records", &self.records)
            .field("backend", &self.backend)
            .finish()
    }
}

impl NoxsPlane {
    /// The plane over `hv`, keeping the backends' records in `records`.
    pub fn new(hv: Arc<dyn Hypervisor>, records: PathBuf, backend: Box<dyn NoxsBackend>) -> Self {
        NoxsPlane {
            hv,
            records,
            backend,
        }
    }

    /// The backend's socket.
    pub fn socket(&self) -> &std::path::Path {
        self.backend.socket()
    }

    fn records(&self) -> RecordDir {
        RecordDir::at(&self.records)
    }

    /// Whether the backends have a record of `domid` (what a creation that died midway may
    /// have left).
    pub(crate) fn has_record(&self, domid: DomId) -> bool {
        self.records().has(domid)
    }

    /// Writes the guest's record for the backends (a backend that restarts from here on finds
    /// the guest).
    fn save_record(&self, g: &Guest<'_>) -> Result<()> {
        self.records()
            .save(&Self::backend_record(g))
            .map_err(|e| PlaneError::Backend(e.to_string()))
    }

    /// What the backends need to serve the guest.
    fn backend_record(g: &Guest<'_>) -> NoxsGuest {
        let vifs = g
            .devices
            .iter()
            .filter(|d| d.kind == DeviceKind::Vif)
            .filter_map(|d| {
                let vif = g.config.vifs.get(d.id as usize)?;
                Some(NoxsVif {
                    id: d.id,
                    // The toolstack grants every vif's control page.
                    ctrl_gref: d.gref?,
                    ctrl_frame: d.frame,
                    evtchn: d.evtchn,
                    // The toolstack chose every MAC before publishing.
                    mac: vif.mac?,
                    bridge: vif.bridge.clone(),
                    ip: vif.ip.clone(),
                })
            })
            .collect();
        NoxsGuest {
            domid: g.domid,
            name: g.config.name.clone(),
            console: ConsoleRing {
                gref: GNTTAB_RESERVED_CONSOLE,
                frame: g.console.frame,
                evtchn: g.console.evtchn,
            },
            vifs,
        }
    }
}

/// A warm shell's console, attached ahead of its guest.
impl NoxsPlane {
    /// Has the backend serve the console of a shell whose guest is not named yet: the record
    /// names no guest, and stays so. A creation from the shell writes nothing here (no
    /// request, no mapping, no binding, no record): xendevd takes the guest's name from its
    /// guest record at the console's first output (`RecordDir::guest_name`).
    pub(crate) fn attach_unnamed(&self, domid: DomId, console: Ring) -> Result<()> {
        let records = self.records();
        records
            .save(&NoxsGuest {
                domid,
                name: String::new(),
                console: ConsoleRing {
                    gref: GNTTAB_RESERVED_CONSOLE,
                    frame: console.frame,
                    evtchn: console.evtchn,
                },
                vifs: Vec::new(),
            })
            .map_err(|e| PlaneError::Backend(e.to_string()))?;
        if let Err(e) = self.backend.attach(domid) {
            if let Err(r) = records.remove(domid) {
                log::error!("removing the NoXS record of shell {domid}: {r}");
            }
            return Err(PlaneError::Backend(e));
        }
        Ok(())
    }
}

impl ControlPlane for NoxsPlane {
    fn kind(&self) -> PlaneKind {
        PlaneKind::Noxs
    }

    fn publish(&self, g: &Guest<'_>, timings: &mut Timings) -> Result<()> {
        // The record first, then the backend.
        self.save_record(g)?;
        self.backend.attach(g.domid).map_err(PlaneError::Backend)?;
        timings.lap("devices");
        Ok(())
    }

    fn unpublish(&self, domid: DomId, _uuid: Option<Uuid>) -> Result<()> {
        let detached = self.backend.detach(domid);
        self.records()
            .remove(domid)
            .map_err(|e| PlaneError::Backend(e.to_string()))?;
        detached.map_err(PlaneError::Backend)
    }

    fn request_shutdown(
        &self,
        domid: DomId,
        guest: Option<&Guest<'_>>,
        kind: ShutdownKind,
    ) -> Result<()> {
        let sysctl = guest
            .and_then(|g| g.devices.iter().find(|d| d.kind == DeviceKind::Sysctl))
            .ok_or_else(|| {
                PlaneError::Refused(format!("domain {domid} has no NoXS sysctl device"))
            })?;
        let bit = match kind {
            ShutdownKind::Poweroff => noxs::sysctl::POWEROFF,
            ShutdownKind::Reboot => noxs::sysctl::REBOOT,
        };
        {
            let mut page = self
                .hv
                .map_foreign(domid, &[sysctl.frame])
                .map_err(|e| PlaneError::Backend(format!("mapping the sysctl page: {e}")))?;
            let bytes = page.bytes_mut();
            // The guest writes this page: read it as untrusted, write only our own fields.
            let ctrl = SysctlCtrl::read_from(bytes);
            if ctrl.hdr.fe_state != state::CONNECTED {
                return Err(PlaneError::Refused(format!(
                    "domain {domid} does not listen on its NoXS sysctl device (fe_state {})",
                    ctrl.hdr.fe_state
                )));
            }
            if ctrl.fe_features & bit == 0 {
                return Err(PlaneError::Refused(format!(
                    "domain {domid} does not accept {} requests (features {:#x})",
                    kind.word(),
                    ctrl.fe_features
                )));
            }
            SysctlCtrl::post_request(bytes, bit);
        }
        self.hv
            .notify_guest(domid, sysctl.evtchn)
            .map_err(|e| PlaneError::Backend(format!("notifying the sysctl channel: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::testing::Scratch;

    /// A stand-in for xendevd: answers every request line on a connection with `ok` (an
    /// attach of domain 13 with a refusal), and hangs up after `hang_up_after` replies on a
    /// connection. Counts the connections it accepted.
    fn fake_xendevd(socket: &std::path::Path, hang_up_after: usize) -> Arc<AtomicUsize> {
        let listener = UnixListener::bind(socket).expect("bind");
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                count.fetch_add(1, Ordering::SeqCst);
                let mut writer = stream.try_clone().expect("clone");
                let mut replies = 0;
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    let reply = if line.contains("\"domid\":13") {
                        "{\"result\":\"error\",\"message\":\"no NoXS record of domain 13\"}\n"
                    } else {
                        "{\"result\":\"ok\"}\n"
                    };
                    if writer.write_all(reply.as_bytes()).is_err() {
                        break;
                    }
                    replies += 1;
                    if replies == hang_up_after {
                        break;
                    }
                }
            }
        });
        accepted
    }

    #[test]
    fn requests_share_one_kept_connection() {
        let scratch = Scratch::new("xendevd-kept");
        let socket = scratch.0.join("xendevd.sock");
        let accepted = fake_xendevd(&socket, usize::MAX);
        let xendevd = Xendevd::new(socket);
        for domid in 1..=5 {
            xendevd.attach(DomId(domid)).expect("attach");
        }
        xendevd.detach(DomId(3)).expect("detach");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_connection_xendevd_dropped_is_replaced_once_and_a_refusal_is_not_retried() {
        let scratch = Scratch::new("xendevd-broken");
        let socket = scratch.0.join("xendevd.sock");
        // Every connection serves one request, as a restarted xendevd would leave the old one.
        let accepted = fake_xendevd(&socket, 1);
        let xendevd = Xendevd::new(socket);
        xendevd.attach(DomId(1)).expect("first attach");
        xendevd
            .attach(DomId(2))
            .expect("attach on a new connection");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        let refused = xendevd.attach(DomId(13)).expect_err("refused");
        assert!(refused.contains("no NoXS record of domain 13"), "{refused}");
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            3,
            "a refusal is not retried"
        );
    }

    #[test]
    fn detach_without_xendevd_is_nothing_to_do_and_attach_says_how_to_start_it() {
        let scratch = Scratch::new("xendevd-none");
        let xendevd = Xendevd::new(scratch.0.join("xendevd.sock"));
        xendevd.detach(DomId(1)).expect("nothing served");
        let e = xendevd.attach(DomId(1)).expect_err("not running");
        assert!(e.contains("xendevd -D"), "{e}");
    }
}
