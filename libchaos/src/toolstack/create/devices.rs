//! A NoXS guest's devices: their control pages and event channels.

use crate::build::NoxsDevice;
use crate::config::DomainConfig;
use crate::hypervisor::DomId;
use crate::toolstack::error::hv_step;
use crate::toolstack::{Result, Shell, Toolstack};

impl Toolstack {
    /// A NoXS guest's devices (noxs/ABI.md sections 4.1, 4.2): the sysctl device, on the
    /// shell's plane channel, then one vif per `vif` entry, each with a channel of its own.
    pub(super) fn noxs_devices(
        &self,
        shell: &Shell,
        cfg: &DomainConfig,
    ) -> Result<Vec<NoxsDevice>> {
        let mut devices = vec![sysctl_device(shell.plane_evtchn)];
        for (id, vif) in cfg.vifs.iter().enumerate() {
            let evtchn = self
                .hv
                .evtchn_alloc_unbound(shell.domid, DomId::DOM0)
                .map_err(hv_step("vif event channel"))?;
            let (ipv4, ipv4_prefix) = first_ipv4(vif.ip.as_deref());
            let mut ctrl = vec![0u8; std::mem::size_of::<noxs::VifCtrl>()];
            noxs::VifCtrl {
                hdr: noxs::CtrlHdr {
                    devid: id as i32,
                    // The backend sets InitWait once it serves the vif.
                    be_state: noxs::state::INITIALISING,
                    ..noxs::CtrlHdr::default()
                },
                mac: vif.mac.map_or([0; 6], |m| m.0),
                mtu: noxs::VIF_MTU,
                ipv4,
                ipv4_prefix,
                ..noxs::VifCtrl::default()
            }
            .write_to(&mut ctrl);
            devices.push(NoxsDevice {
                ty: noxs::DevType::Vif,
                id: id as u32,
                backend: DomId::DOM0,
                evtchn,
                // xendevd maps it with gntdev (checked against VIF_MAX in check_supported).
                gref: noxs::vif_ctrl_gref(id as u32),
                ctrl,
            });
        }
        Ok(devices)
    }
}

/// The NoXS sysctl device every guest has, on the shell's control-plane channel: its backend
/// is the toolstack, there from the start.
pub(super) fn sysctl_device(plane_evtchn: u32) -> NoxsDevice {
    let mut ctrl = vec![0u8; std::mem::size_of::<noxs::SysctlCtrl>()];
    noxs::SysctlCtrl {
        hdr: noxs::CtrlHdr {
            devid: 0,
            be_state: noxs::state::CONNECTED,
            ..noxs::CtrlHdr::default()
        },
        ..noxs::SysctlCtrl::default()
    }
    .write_to(&mut ctrl);
    NoxsDevice {
        ty: noxs::DevType::Sysctl,
        id: 0,
        backend: DomId::DOM0,
        evtchn: plane_evtchn,
        // The toolstack maps it through privcmd.
        gref: None,
        ctrl,
    }
}

/// The first IPv4 address of an `ip=` list and its prefix length (0 when none is given).
fn first_ipv4(ip: Option<&str>) -> ([u8; 4], u8) {
    ip.into_iter()
        .flat_map(str::split_whitespace)
        .find_map(|part| {
            let (addr, prefix) = part.split_once('/').unwrap_or((part, ""));
            let a: std::net::Ipv4Addr = addr.parse().ok()?;
            Some((a.octets(), prefix.parse().unwrap_or(0)))
        })
        .unwrap_or(([0; 4], 0))
}
