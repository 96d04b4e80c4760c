//! Per-guest handling: attaching a guest's console and vifs, keeping a vif's event channels
//! and TAP in the loop's maps, detaching.

use nix::sys::epoll::{EpollEvent, EpollFlags};
use xen_types::DomId;
use xendevd_api::{NoxsGuest, NoxsVif, RecordDir};

use super::console::Console;
use super::socket::Conn;
use super::tap::Tap;
use super::vif::{self, Vif};
use super::{Owner, Served, Service, VifKey};
use crate::uevent::{Action, Control, VifEvent};

impl Service {
    /// After a restart: every guest with a record is served again.
    pub(super) fn reattach_all(&mut self) {
        let (guests, bad) = match RecordDir::open(&self.settings.records)
            .and_then(|r| r.all())
            .map_err(|e| e.to_string())
        {
            Ok(found) => found,
            Err(e) => {
                log::warn!("NoXS records: {e}");
                return;
            }
        };
        for e in bad {
            log::warn!("{e}");
        }
        for g in guests {
            match self.attach(g.domid) {
                Ok(()) => log::info!(
                    "domain {} ({}): console and {} vif(s) served again",
                    g.domid,
                    g.name,
                    g.vifs.len()
                ),
                Err(e) => log::warn!("domain {} ({}): {e}", g.domid, g.name),
            }
        }
    }

    /// Serves the guest whose record is there: its console, then its vifs. If one of them
    /// cannot be served, none is.
    pub fn attach(&mut self, domid: DomId) -> Result<(), String> {
        let guest = self
            .records()
            .load(domid)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no NoXS record of domain {domid}"))?;
        // Attaching twice (a toolstack retrying, a restart racing an attach) serves once.
        self.detach_devices(domid);
        let console = Console::attach(
            &guest,
            &self.xen.grants,
            &self.xen.evtchn,
            &self.settings.log_dir,
        )?;
        self.xen
            .evtchn
            .unmask(console.port)
            .map_err(|e| format!("unmasking domain {domid}'s console channel: {e}"))?;
        self.by_port.insert(console.port, Owner::Console(domid));
        self.consoles.insert(domid, console);
        for v in &guest.vifs {
            if let Err(e) = self.attach_vif(&guest, v) {
                self.detach_devices(domid);
                return Err(e);
            }
        }
        Ok(())
    }

    /// A vif: its TAP on the bridge, then the control page and the handshake.
    fn attach_vif(&mut self, guest: &NoxsGuest, v: &NoxsVif) -> Result<(), String> {
        let dom = guest.domid;
        let name = vif::ifname(dom, v.id);
        let tap = Tap::create(&name, noxs::VIF_MTU).map_err(|e| format!("{name}: {e}"))?;
        let plug = |action| VifEvent {
            action,
            vif: name.clone(),
            control: Control::Noxs {
                bridge: Some(v.bridge.clone()),
            },
        };
        self.bridges
            .handle(&plug(Action::Online))
            .map_err(|e| format!("{name}: bridge {}: {e}", v.bridge))?;
        let vif = match Vif::attach(
            &self.xen,
            &mut self.scratch,
            dom,
            v.id,
            v.ctrl_gref,
            v.evtchn,
            tap,
        ) {
            Ok(vif) => vif,
            Err(e) => {
                // The TAP went with the failed attach; Open vSwitch keeps its port row.
                let _ = self.bridges.handle(&plug(Action::Offline));
                return Err(e);
            }
        };
        let token = self.next_token;
        self.next_token += 1;
        if let Err(e) = self
            .epoll
            .add(vif.link(), EpollEvent::new(EpollFlags::empty(), token))
        {
            let tap = vif.detach(&self.xen);
            let _ = self.bridges.handle(&plug(Action::Offline));
            drop(tap);
            return Err(format!("{name}: epoll: {e}"));
        }
        let key = (dom, v.id);
        self.by_port.insert(vif.ctrl_port, Owner::VifCtrl(key));
        self.links.insert(token, key);
        log::info!("{name}: on {}, waiting for the frontend", v.bridge);
        self.vifs.insert(
            key,
            Served {
                vif,
                bridge: v.bridge.clone(),
                token,
                watched: false,
                data_ports: Vec::new(),
            },
        );
        self.sync(key);
        Ok(())
    }

    /// After a vif acted: its data ports in the port map, its TAP watched or not.
    pub(super) fn sync(&mut self, key: VifKey) {
        let Some(s) = self.vifs.get_mut(&key) else {
            return;
        };
        let ports = s.vif.data_ports();
        if ports != s.data_ports {
            for p in &s.data_ports {
                self.by_port.remove(p);
            }
            for p in &ports {
                self.by_port.insert(*p, Owner::VifData(key));
            }
            s.data_ports = ports;
        }
        let want = s.vif.wants_link() && self.links.contains_key(&s.token);
        if want != s.watched && self.links.contains_key(&s.token) {
            let flags = if want {
                EpollFlags::EPOLLIN
            } else {
                EpollFlags::empty()
            };
            match self
                .epoll
                .modify(s.vif.link(), &mut EpollEvent::new(flags, s.token))
            {
                Ok(()) => s.watched = want,
                Err(e) => log::warn!("{}: epoll: {e}", s.vif.name),
            }
        }
    }

    /// Stops serving a guest: console, vifs (TAPs removed, off their bridges), clients.
    pub fn detach(&mut self, domid: DomId) {
        self.detach_devices(domid);
        let gone: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c, Conn::Console { domid: d, .. } if *d == domid))
            .map(|(t, _)| *t)
            .collect();
        for t in gone {
            self.close(t);
        }
    }

    fn detach_devices(&mut self, domid: DomId) {
        if let Some(c) = self.consoles.remove(&domid) {
            self.by_port.remove(&c.port);
            c.detach(&self.xen.evtchn);
        }
        let keys: Vec<VifKey> = self
            .vifs
            .keys()
            .filter(|(d, _)| *d == domid)
            .copied()
            .collect();
        for key in keys {
            let Some(s) = self.vifs.remove(&key) else {
                continue;
            };
            self.again.remove(&key);
            self.links.remove(&s.token);
            self.by_port.remove(&s.vif.ctrl_port);
            for p in &s.data_ports {
                self.by_port.remove(p);
            }
            let _ = self.epoll.delete(s.vif.link());
            let name = s.vif.name.clone();
            let tap = s.vif.detach(&self.xen);
            // Off the bridge while the TAP still exists (Open vSwitch keeps the port row of
            // a vanished interface); the TAP goes when dropped.
            let off = VifEvent {
                action: Action::Offline,
                vif: name.clone(),
                control: Control::Noxs {
                    bridge: Some(s.bridge.clone()),
                },
            };
            if let Err(e) = self.bridges.handle(&off) {
                log::warn!("{name}: leaving {}: {e}", s.bridge);
            }
            drop(tap);
            log::info!("{name}: removed");
        }
    }
}
