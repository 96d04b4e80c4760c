//! Linux bridge ports and link state through ioctls on a datagram socket: `SIOCBRADDIF`,
//! `SIOCBRDELIF`, `SIOCGIFFLAGS`/`SIOCSIFFLAGS`, and `SIOCETHTOOL` to recognise a bridge.
//! Everything acts in the network namespace of the calling thread.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// linux/sockios.h
const SIOCBRADDIF: libc::c_ulong = 0x89a2;
const SIOCBRDELIF: libc::c_ulong = 0x89a3;
/// linux/ethtool.h
const ETHTOOL_GDRVINFO: u32 = 0x3;

/// `struct ethtool_drvinfo` (linux/ethtool.h), 196 bytes.
#[repr(C)]
struct EthtoolDrvinfo {
    cmd: u32,
    driver: [u8; 32],
    version: [u8; 32],
    fw_version: [u8; 32],
    bus_info: [u8; 32],
    erom_version: [u8; 32],
    reserved2: [u8; 12],
    n_priv_flags: u32,
    n_stats: u32,
    testinfo_len: u32,
    eedump_len: u32,
    regdump_len: u32,
}
const _: () = assert!(std::mem::size_of::<EthtoolDrvinfo>() == 196);

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("no network interface named {0}")]
    NoInterface(String),
    #[error("{op} {ifname}: {source}")]
    Ioctl {
        op: &'static str,
        ifname: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot open a socket for interface ioctls: {0}")]
    Socket(#[source] io::Error),
}

/// A socket to issue interface ioctls on; cheap to create, one per operation.
struct CtlSocket(OwnedFd);

impl CtlSocket {
    fn open() -> Result<CtlSocket, BridgeError> {
        // SAFETY: plain socket(2); checked below.
        let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(BridgeError::Socket(io::Error::last_os_error()));
        }
        // SAFETY: `fd` is a fresh descriptor we own.
        Ok(CtlSocket(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn ioctl(
        &self,
        op: &'static str,
        req: libc::c_ulong,
        ifr: &mut libc::ifreq,
    ) -> Result<(), BridgeError> {
        // SAFETY: `ifr` is a valid, initialised ifreq that outlives the call; the requests used
        // here read and write only the ifreq (and, for SIOCETHTOOL, the buffer it points to,
        // which the caller keeps alive).
        let rc = unsafe { libc::ioctl(self.0.as_raw_fd(), req as _, ifr as *mut libc::ifreq) };
        if rc < 0 {
            let source = io::Error::last_os_error();
            return Err(BridgeError::Ioctl {
                op,
                ifname: ifr_name(ifr),
                source,
            });
        }
        Ok(())
    }
}

fn ifreq(name: &str) -> Result<libc::ifreq, BridgeError> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return Err(BridgeError::NoInterface(name.to_string()));
    }
    // SAFETY: ifreq is plain data; all-zero is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(ifr)
}

fn ifr_name(ifr: &libc::ifreq) -> String {
    let bytes: Vec<u8> = ifr
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The interface index of `name`.
pub fn ifindex(name: &str) -> Result<u32, BridgeError> {
    let c = CString::new(name).map_err(|_| BridgeError::NoInterface(name.to_string()))?;
    // SAFETY: `c` is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(BridgeError::NoInterface(name.to_string()));
    }
    Ok(idx)
}

/// Whether the interface exists.
pub fn exists(name: &str) -> bool {
    ifindex(name).is_ok()
}

fn bridge_port(
    op: &'static str,
    req: libc::c_ulong,
    bridge: &str,
    port: &str,
) -> Result<(), BridgeError> {
    let idx = ifindex(port)?;
    let sock = CtlSocket::open()?;
    let mut ifr = ifreq(bridge)?;
    ifr.ifr_ifru.ifru_ifindex = idx as libc::c_int;
    sock.ioctl(op, req, &mut ifr)
}

/// Makes `port` a port of the Linux bridge `bridge`. Already being its port is not an error.
pub fn add_port(bridge: &str, port: &str) -> Result<(), BridgeError> {
    match bridge_port("SIOCBRADDIF", SIOCBRADDIF, bridge, port) {
        // EBUSY: the port already has a master. If that is this bridge (removing it from here
        // works), re-adding it makes the call idempotent; otherwise report the EBUSY.
        Err(e @ BridgeError::Ioctl { .. }) if is_errno(&e, libc::EBUSY) => {
            match del_port(bridge, port) {
                Ok(()) => bridge_port("SIOCBRADDIF", SIOCBRADDIF, bridge, port),
                Err(_) => Err(e),
            }
        }
        r => r,
    }
}

/// Removes `port` from `bridge`.
pub fn del_port(bridge: &str, port: &str) -> Result<(), BridgeError> {
    bridge_port("SIOCBRDELIF", SIOCBRDELIF, bridge, port)
}

/// Whether `e` is an ioctl failure with `errno`.
pub fn is_errno(e: &BridgeError, errno: i32) -> bool {
    matches!(e, BridgeError::Ioctl { source, .. } if source.raw_os_error() == Some(errno))
}

/// The interface flags (`IFF_*`).
pub fn flags(name: &str) -> Result<libc::c_short, BridgeError> {
    let sock = CtlSocket::open()?;
    let mut ifr = ifreq(name)?;
    sock.ioctl("SIOCGIFFLAGS", libc::SIOCGIFFLAGS, &mut ifr)
        .map_err(|e| no_such(e, name))?;
    // SAFETY: SIOCGIFFLAGS filled in ifru_flags.
    Ok(unsafe { ifr.ifr_ifru.ifru_flags })
}

/// Brings the interface up or down (`IFF_UP`), leaving its other flags alone.
pub fn set_up(name: &str, up: bool) -> Result<(), BridgeError> {
    let sock = CtlSocket::open()?;
    let mut ifr = ifreq(name)?;
    sock.ioctl("SIOCGIFFLAGS", libc::SIOCGIFFLAGS, &mut ifr)
        .map_err(|e| no_such(e, name))?;
    // SAFETY: SIOCGIFFLAGS filled in ifru_flags.
    let old = unsafe { ifr.ifr_ifru.ifru_flags };
    let up_flag = libc::IFF_UP as libc::c_short;
    let new = if up { old | up_flag } else { old & !up_flag };
    if new == old {
        return Ok(());
    }
    ifr.ifr_ifru.ifru_flags = new;
    sock.ioctl("SIOCSIFFLAGS", libc::SIOCSIFFLAGS, &mut ifr)
}

/// ENODEV from an ioctl means the interface is gone.
fn no_such(e: BridgeError, name: &str) -> BridgeError {
    if is_errno(&e, libc::ENODEV) {
        BridgeError::NoInterface(name.to_string())
    } else {
        e
    }
}

/// The driver behind an interface (`bridge`, `openvswitch`, `vif`, `veth`, ...), from ethtool.
pub fn driver(name: &str) -> Result<String, BridgeError> {
    let sock = CtlSocket::open()?;
    let mut ifr = ifreq(name)?;
    // SAFETY: EthtoolDrvinfo is plain data; all-zero is valid.
    let mut info: EthtoolDrvinfo = unsafe { std::mem::zeroed() };
    info.cmd = ETHTOOL_GDRVINFO;
    ifr.ifr_ifru.ifru_data = (&mut info as *mut EthtoolDrvinfo).cast();
    sock.ioctl("SIOCETHTOOL", libc::SIOCETHTOOL, &mut ifr)
        .map_err(|e| no_such(e, name))?;
    let end = info
        .driver
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(info.driver.len());
    Ok(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

/// Whether `name` is a Linux bridge. Asks the driver (right in any network namespace) and
/// falls back to sysfs.
pub fn is_linux_bridge(name: &str) -> bool {
    match driver(name) {
        Ok(d) => d == "bridge",
        Err(_) => std::path::Path::new(&format!("/sys/class/net/{name}/bridge")).exists(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_before_any_ioctl() {
        assert!(matches!(ifreq(""), Err(BridgeError::NoInterface(_))));
        assert!(matches!(
            ifreq("sixteen_chars_xx"),
            Err(BridgeError::NoInterface(_))
        ));
        assert_eq!(ifr_name(&ifreq("vif1.0").unwrap()), "vif1.0");
    }

    #[test]
    fn missing_interfaces_are_reported_by_name() {
        let e = add_port("xenbr0", "no-such-if0").unwrap_err();
        assert_eq!(e.to_string(), "no network interface named no-such-if0");
        assert!(matches!(
            set_up("no-such-if0", true),
            Err(BridgeError::NoInterface(_))
        ));
        assert!(!is_linux_bridge("no-such-if0"));
    }

    #[test]
    fn loopback_is_not_a_bridge() {
        assert!(exists("lo"));
        assert!(!is_linux_bridge("lo"));
        assert_ne!(
            flags("lo").unwrap() & libc::IFF_LOOPBACK as libc::c_short,
            0
        );
    }
}
