//! Kernel uevents: the NETLINK_KOBJECT_UEVENT socket, the message format
//! (`ACTION@DEVPATH\0KEY=VALUE\0...`) and the filters that pick Xen vif online/offline and
//! vbd add/remove events.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    bind, recvfrom, setsockopt, socket, sockopt, AddressFamily, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};

use xen_types::{check_ifname, IfnameError};

/// The multicast group the kernel sends uevents to (udevd re-broadcasts on group 2).
const KERNEL_GROUP: u32 = 1;
/// Large enough for a burst of thousands of events while workers are busy.
const RECV_BUFFER: usize = 16 << 20;

/// One parsed uevent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uevent {
    pub action: String,
    pub devpath: String,
    pub props: HashMap<String, String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("uevent without an ACTION@DEVPATH header")]
    NoHeader,
    #[error("uevent header {0:?} is not ACTION@DEVPATH")]
    BadHeader(String),
}

/// Parses a kernel uevent. Properties without `=` are skipped (the kernel never sends them).
pub fn parse(buf: &[u8]) -> Result<Uevent, ParseError> {
    let mut parts = buf.split(|&b| b == 0).filter(|p| !p.is_empty());
    let header = String::from_utf8_lossy(parts.next().ok_or(ParseError::NoHeader)?).into_owned();
    let (action, devpath) = header
        .split_once('@')
        .ok_or_else(|| ParseError::BadHeader(header.clone()))?;
    if action.is_empty() || devpath.is_empty() {
        return Err(ParseError::BadHeader(header.clone()));
    }
    let props = parts
        .filter_map(|p| {
            let s = String::from_utf8_lossy(p);
            s.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    Ok(Uevent {
        action: action.to_string(),
        devpath: devpath.to_string(),
        props,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Online,
    Offline,
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Action::Online => "online",
            Action::Offline => "offline",
        })
    }
}

/// Where the bridge name comes from and where the result is reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Netback with Xenstore: `backend/vif/<domid>/<devid>` (usually relative to the backend
    /// domain's home), holding `bridge` and receiving `hotplug-status`.
    Xenstore { backend_path: String },
    /// NoXS netback: the bridge comes with the event; nothing to report back.
    Noxs { bridge: Option<String> },
}

/// A vif came up or is going away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VifEvent {
    pub action: Action,
    /// The backend network interface, e.g. `vif3.0`.
    pub vif: String,
    pub control: Control,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    #[error("{subsystem} {action} event for {devpath} has no vif property")]
    NoVif {
        subsystem: String,
        action: String,
        devpath: String,
    },
    #[error("{subsystem} {action} event for {devpath}: bad interface name {vif:?}: {reason}")]
    BadVif {
        subsystem: String,
        action: String,
        devpath: String,
        vif: String,
        reason: IfnameError,
    },
    #[error("xen-backend {action} event for {devpath} has no XENBUS_PATH")]
    NoXenbusPath { action: String, devpath: String },
}

/// Picks the events xendevd acts on: `online`/`offline` of vif backends. `Ok(None)` for
/// everything else; `Err` for a vif event too malformed to act on.
pub fn vif_event(ev: &Uevent) -> Result<Option<VifEvent>, FilterError> {
    let action = match ev.action.as_str() {
        "online" => Action::Online,
        "offline" => Action::Offline,
        _ => return Ok(None),
    };
    let subsystem = ev.props.get("SUBSYSTEM").map(String::as_str).unwrap_or("");
    let control = match subsystem {
        "xen-backend" => {
            let path = ev.props.get("XENBUS_PATH");
            let is_vif = ev
                .props
                .get("XENBUS_TYPE")
                .map(|t| t == "vif")
                .unwrap_or(false)
                || path
                    .is_some_and(|p| p.starts_with("backend/vif/") || p.contains("/backend/vif/"));
            if !is_vif {
                return Ok(None);
            }
            let path = path
                .filter(|p| !p.is_empty())
                .ok_or_else(|| FilterError::NoXenbusPath {
                    action: ev.action.clone(),
                    devpath: ev.devpath.clone(),
                })?;
            Control::Xenstore {
                backend_path: path.clone(),
            }
        }
        "xen-backend-noxs" => {
            if ev.props.get("XENBUS_TYPE").is_some_and(|t| t != "vif") {
                return Ok(None);
            }
            Control::Noxs {
                bridge: ev.props.get("bridge").filter(|b| !b.is_empty()).cloned(),
            }
        }
        _ => return Ok(None),
    };
    let ctx = || (subsystem.to_string(), ev.action.clone(), ev.devpath.clone());
    let vif = ev.props.get("vif").ok_or_else(|| {
        let (subsystem, action, devpath) = ctx();
        FilterError::NoVif {
            subsystem,
            action,
            devpath,
        }
    })?;
    let bad = |name: &String, reason| {
        let (subsystem, action, devpath) = ctx();
        FilterError::BadVif {
            subsystem,
            action,
            devpath,
            vif: name.clone(),
            reason,
        }
    };
    check_ifname(vif).map_err(|why| bad(vif, why))?;
    if let Control::Noxs { bridge: Some(b) } = &control {
        check_ifname(b).map_err(|why| bad(b, why))?;
    }
    Ok(Some(VifEvent {
        action,
        vif: vif.clone(),
        control,
    }))
}

/// What happened to a vbd backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VbdAction {
    /// The backend device appeared (`add`; `online` is taken the same way): its disk needs a
    /// device (a loop device for a file) before blkback can serve it.
    Add,
    /// The backend device went (`remove`): free what was set up for it.
    Remove,
}

impl std::fmt::Display for VbdAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VbdAction::Add => "add",
            VbdAction::Remove => "remove",
        })
    }
}

/// A vbd backend came or went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VbdEvent {
    pub action: VbdAction,
    /// `backend/vbd/<domid>/<devid>`, usually relative to the backend domain's home.
    pub backend_path: String,
}

/// Picks the vbd backend events xendevd acts on (blkback's `xen-backend` devices). `Ok(None)`
/// for everything else.
pub fn vbd_event(ev: &Uevent) -> Result<Option<VbdEvent>, FilterError> {
    let action = match ev.action.as_str() {
        "add" | "online" => VbdAction::Add,
        "remove" => VbdAction::Remove,
        _ => return Ok(None),
    };
    if ev.props.get("SUBSYSTEM").map(String::as_str) != Some("xen-backend") {
        return Ok(None);
    }
    let path = ev.props.get("XENBUS_PATH");
    let is_vbd = ev.props.get("XENBUS_TYPE").is_some_and(|t| t == "vbd")
        || path.is_some_and(|p| p.starts_with("backend/vbd/") || p.contains("/backend/vbd/"));
    if !is_vbd {
        return Ok(None);
    }
    let path = path
        .filter(|p| !p.is_empty())
        .ok_or_else(|| FilterError::NoXenbusPath {
            action: ev.action.clone(),
            devpath: ev.devpath.clone(),
        })?;
    Ok(Some(VbdEvent {
        action,
        backend_path: path.clone(),
    }))
}

/// A socket receiving the kernel's uevents (no udevd involved).
pub struct UeventSocket {
    fd: OwnedFd,
    buf: Vec<u8>,
}

/// What one receive produced.
#[derive(Debug)]
pub enum Received {
    Event(Uevent),
    /// Nothing arrived within the timeout (or a signal interrupted the wait).
    Timeout,
    /// The kernel dropped events because the socket buffer was full.
    Overrun,
    /// A message not from the kernel, or not a uevent; ignored.
    Ignored(String),
}

impl std::fmt::Debug for UeventSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UeventSocket")
            .field("fd", &self.fd)
            .finish_non_exhaustive()
    }
}

impl UeventSocket {
    /// Opens and binds the socket to the kernel's uevent group. Needs root (or CAP_NET_ADMIN
    /// for the large receive buffer; without it the default size is kept).
    pub fn open() -> io::Result<UeventSocket> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            SockProtocol::NetlinkKObjectUEvent,
        )?;
        // Failure (no CAP_NET_ADMIN) is fine: the default buffer just overflows sooner.
        let _ = setsockopt(&fd, sockopt::RcvBufForce, &RECV_BUFFER);
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, KERNEL_GROUP))?;
        Ok(UeventSocket {
            fd,
            buf: vec![0u8; 64 * 1024],
        })
    }

    /// Waits up to `timeout` for one message.
    pub fn recv(&mut self, timeout: Duration) -> io::Result<Received> {
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        let timeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, timeout) {
            Ok(0) | Err(Errno::EINTR) => return Ok(Received::Timeout),
            Ok(_) => {}
            Err(e) => return Err(e.into()),
        }
        let (n, from) = match recvfrom::<NetlinkAddr>(self.fd.as_raw_fd(), &mut self.buf) {
            Ok(r) => r,
            Err(Errno::ENOBUFS) => return Ok(Received::Overrun),
            Err(Errno::EAGAIN | Errno::EINTR) => return Ok(Received::Timeout),
            Err(e) => return Err(e.into()),
        };
        // Only the kernel (port id 0) sends real uevents; anything else could be forged.
        match from.map(|a| a.pid()) {
            Some(0) => {}
            Some(pid) => return Ok(Received::Ignored(format!("message from port {pid}"))),
            None => return Ok(Received::Ignored("message without a sender".into())),
        }
        match parse(&self.buf[..n]) {
            Ok(ev) => Ok(Received::Event(ev)),
            Err(e) => Ok(Received::Ignored(e.to_string())),
        }
    }
}

impl AsFd for UeventSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(header: &str, props: &[&str]) -> Vec<u8> {
        let mut v = header.as_bytes().to_vec();
        for p in props {
            v.push(0);
            v.extend_from_slice(p.as_bytes());
        }
        v.push(0);
        v
    }

    fn netback_online() -> Vec<u8> {
        raw(
            "online@/devices/vif-3-0",
            &[
                "ACTION=online",
                "DEVPATH=/devices/vif-3-0",
                "SUBSYSTEM=xen-backend",
                "XENBUS_TYPE=vif",
                "XENBUS_PATH=backend/vif/3/0",
                "XENBUS_BASE_PATH=backend",
                "script=/etc/xen/scripts/vif-bridge",
                "vif=vif3.0",
                "SEQNUM=1234",
            ],
        )
    }

    #[test]
    fn parses_header_and_properties() {
        let ev = parse(&netback_online()).unwrap();
        assert_eq!(ev.action, "online");
        assert_eq!(ev.devpath, "/devices/vif-3-0");
        assert_eq!(ev.props["XENBUS_PATH"], "backend/vif/3/0");
        assert_eq!(ev.props["vif"], "vif3.0");
        assert_eq!(ev.props["SEQNUM"], "1234");
        assert_eq!(ev.props.len(), 9);
    }

    #[test]
    fn values_may_contain_equals_and_junk_is_skipped() {
        let ev = parse(&raw("change@/x", &["A=b=c", "novalue", "", "B="])).unwrap();
        assert_eq!(ev.props["A"], "b=c");
        assert_eq!(ev.props["B"], "");
        assert_eq!(ev.props.len(), 2);
    }

    #[test]
    fn rejects_messages_without_a_header() {
        assert_eq!(parse(b""), Err(ParseError::NoHeader));
        assert_eq!(parse(b"\0\0"), Err(ParseError::NoHeader));
        assert!(matches!(
            parse(b"libudev\0ACTION=add\0"),
            Err(ParseError::BadHeader(_))
        ));
        assert!(matches!(parse(b"@/dev\0"), Err(ParseError::BadHeader(_))));
        assert!(matches!(parse(b"add@\0"), Err(ParseError::BadHeader(_))));
    }

    #[test]
    fn netback_online_and_offline_become_vif_events() {
        let ev = vif_event(&parse(&netback_online()).unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(
            ev,
            VifEvent {
                action: Action::Online,
                vif: "vif3.0".into(),
                control: Control::Xenstore {
                    backend_path: "backend/vif/3/0".into()
                }
            }
        );
        let off = raw(
            "offline@/devices/vif-3-0",
            &[
                "SUBSYSTEM=xen-backend",
                "XENBUS_TYPE=vif",
                "XENBUS_PATH=backend/vif/3/0",
                "vif=vif3.0",
            ],
        );
        assert_eq!(
            vif_event(&parse(&off).unwrap()).unwrap().unwrap().action,
            Action::Offline
        );
    }

    #[test]
    fn noxs_events_carry_their_bridge() {
        let on = raw(
            "online@/devices/vif-4-0",
            &["SUBSYSTEM=xen-backend-noxs", "vif=vif4.0", "bridge=br1"],
        );
        let ev = vif_event(&parse(&on).unwrap()).unwrap().unwrap();
        assert_eq!(
            ev.control,
            Control::Noxs {
                bridge: Some("br1".into())
            }
        );
        let no_bridge = raw(
            "online@/devices/vif-4-0",
            &["SUBSYSTEM=xen-backend-noxs", "vif=vif4.0"],
        );
        assert_eq!(
            vif_event(&parse(&no_bridge).unwrap())
                .unwrap()
                .unwrap()
                .control,
            Control::Noxs { bridge: None }
        );
    }

    #[test]
    fn other_events_are_ignored() {
        let cases = [
            // add/remove of the backend device: the interface does not exist yet / any more.
            raw(
                "add@/devices/vif-3-0",
                &[
                    "SUBSYSTEM=xen-backend",
                    "XENBUS_TYPE=vif",
                    "XENBUS_PATH=backend/vif/3/0",
                ],
            ),
            raw(
                "remove@/devices/vif-3-0",
                &[
                    "SUBSYSTEM=xen-backend",
                    "XENBUS_PATH=backend/vif/3/0",
                    "vif=vif3.0",
                ],
            ),
            // Block backends.
            raw(
                "online@/devices/vbd-3-51712",
                &[
                    "SUBSYSTEM=xen-backend",
                    "XENBUS_TYPE=vbd",
                    "XENBUS_PATH=backend/vbd/3/51712",
                ],
            ),
            // Other subsystems, including a net device coming online.
            raw(
                "online@/devices/virtual/net/eth0",
                &["SUBSYSTEM=net", "INTERFACE=eth0", "vif=eth0"],
            ),
            raw("change@/devices/system/cpu/cpu0", &["SUBSYSTEM=cpu"]),
        ];
        for c in cases {
            assert_eq!(vif_event(&parse(&c).unwrap()), Ok(None), "{:?}", parse(&c));
        }
    }

    #[test]
    fn blkback_add_and_remove_become_vbd_events() {
        let add = raw(
            "add@/devices/vbd-3-51712",
            &[
                "ACTION=add",
                "DEVPATH=/devices/vbd-3-51712",
                "SUBSYSTEM=xen-backend",
                "XENBUS_TYPE=vbd",
                "XENBUS_PATH=backend/vbd/3/51712",
                "XENBUS_BASE_PATH=backend",
                "MODALIAS=xen-backend:vbd",
            ],
        );
        let ev = parse(&add).unwrap();
        assert_eq!(
            vbd_event(&ev),
            Ok(Some(VbdEvent {
                action: VbdAction::Add,
                backend_path: "backend/vbd/3/51712".into()
            }))
        );
        // Not a vif event.
        assert_eq!(vif_event(&ev), Ok(None));
        let remove = raw(
            "remove@/devices/vbd-3-51712",
            &["SUBSYSTEM=xen-backend", "XENBUS_PATH=backend/vbd/3/51712"],
        );
        assert_eq!(
            vbd_event(&parse(&remove).unwrap()).unwrap().unwrap().action,
            VbdAction::Remove
        );
        let online = raw(
            "online@/devices/vbd-3-51712",
            &[
                "SUBSYSTEM=xen-backend",
                "XENBUS_TYPE=vbd",
                "XENBUS_PATH=backend/vbd/3/51712",
            ],
        );
        assert_eq!(
            vbd_event(&parse(&online).unwrap()).unwrap().unwrap().action,
            VbdAction::Add
        );
        // Vifs, changes and other subsystems are not vbd events.
        for other in [
            netback_online(),
            raw(
                "change@/devices/vbd-3-51712",
                &[
                    "SUBSYSTEM=xen-backend",
                    "XENBUS_TYPE=vbd",
                    "XENBUS_PATH=backend/vbd/3/51712",
                ],
            ),
            raw("add@/devices/virtual/block/loop0", &["SUBSYSTEM=block"]),
        ] {
            assert_eq!(vbd_event(&parse(&other).unwrap()), Ok(None));
        }
        let no_path = raw(
            "add@/devices/vbd-3-51712",
            &["SUBSYSTEM=xen-backend", "XENBUS_TYPE=vbd"],
        );
        assert!(matches!(
            vbd_event(&parse(&no_path).unwrap()),
            Err(FilterError::NoXenbusPath { .. })
        ));
    }

    #[test]
    fn malformed_vif_events_are_errors() {
        let no_vif = raw(
            "online@/devices/vif-3-0",
            &[
                "SUBSYSTEM=xen-backend",
                "XENBUS_TYPE=vif",
                "XENBUS_PATH=backend/vif/3/0",
            ],
        );
        assert!(matches!(
            vif_event(&parse(&no_vif).unwrap()),
            Err(FilterError::NoVif { .. })
        ));
        let no_path = raw(
            "online@/devices/vif-3-0",
            &["SUBSYSTEM=xen-backend", "XENBUS_TYPE=vif", "vif=vif3.0"],
        );
        assert!(matches!(
            vif_event(&parse(&no_path).unwrap()),
            Err(FilterError::NoXenbusPath { .. })
        ));
        for bad in ["vif=", "vif=../etc", "vif=a b", "vif=waytoolongname16"] {
            let ev = raw(
                "online@/devices/vif-3-0",
                &["SUBSYSTEM=xen-backend-noxs", bad],
            );
            assert!(
                matches!(
                    vif_event(&parse(&ev).unwrap()),
                    Err(FilterError::BadVif { .. })
                ),
                "{bad}"
            );
        }
        let bad_bridge = raw(
            "online@/devices/vif-3-0",
            &["SUBSYSTEM=xen-backend-noxs", "vif=vif3.0", "bridge=a/b"],
        );
        assert!(matches!(
            vif_event(&parse(&bad_bridge).unwrap()),
            Err(FilterError::BadVif { .. })
        ));
    }
}
