//! Linux bridge ports and link state through ioctls on a datagram socket: `SIOCBRADDIF`,
//! `SIOCBRDELIF`, `SIOCGIFFLAGS`/`SIOCSIFFLAGS`, and `SIOCETHTOOL` to recognise a bridge.
//! Everything acts in the network namespace of the calling thread.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
use xen_types::IFNAMSIZ;

/// linux/sockios.h
const SIOCBRADDIF: libc::c_ulong = 0x89a2;
const SIOCBRDELIF: libc::c_ulong = 0x89a3;
/// linux/ethtool.h
const ETHTOOL_GDRVINFO: u32 = 0x3;

/// `struct ifreq` (linux/if.h) as each request uses it: the name, then the one union member
/// that request reads or writes, padded to the union's 24 bytes. One type per use keeps every
/// field plain data (no union to read back).
#[repr(C)]
struct IfreqIndex {
    name: [u8; IFNAMSIZ],
    ifindex: libc::c_int,
    _pad: [u8; 20],
}

/// With the flags member (also TUNSETIFF's argument: noxs/tap.rs).
#[repr(C)]
pub(crate) struct IfreqFlags {
    pub(crate) name: [u8; IFNAMSIZ],
    pub(crate) flags: libc::c_short,
    pub(crate) _pad: [u8; 22],
}

#[repr(C)]
struct IfreqData {
    name: [u8; IFNAMSIZ],
    data: *mut EthtoolDrvinfo,
    _pad: [u8; 16],
}

const _: () = assert!(std::mem::size_of::<IfreqIndex>() == std::mem::size_of::<libc::ifreq>());
const _: () = assert!(std::mem::size_of::<IfreqFlags>() == std::mem::size_of::<libc::ifreq>());
const _: () = assert!(std::mem::size_of::<IfreqData>() == std::mem::size_of::<libc::ifreq>());

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

/// The ioctls, typed by nix (`unsafe fn(fd, *ifreq)`): the kernel reads and writes only the
/// `ifreq` given (and, for SIOCETHTOOL, the `ethtool_drvinfo` it points to).
mod ioctl {
    use super::{IfreqData, IfreqFlags, IfreqIndex};
    nix::ioctl_write_ptr_bad!(br_add_if, super::SIOCBRADDIF, IfreqIndex);
    nix::ioctl_write_ptr_bad!(br_del_if, super::SIOCBRDELIF, IfreqIndex);
    nix::ioctl_readwrite_bad!(get_flags, libc::SIOCGIFFLAGS, IfreqFlags);
    nix::ioctl_write_ptr_bad!(set_flags, libc::SIOCSIFFLAGS, IfreqFlags);
    nix::ioctl_readwrite_bad!(ethtool, libc::SIOCETHTOOL, IfreqData);
}

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
fn ctl_socket() -> Result<OwnedFd, BridgeError> {
    socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| BridgeError::Socket(e.into()))
}

/// `name` as `ifr_name`: NUL-padded, at most IFNAMSIZ - 1 bytes.
fn ifr_name(name: &str) -> Result<[u8; IFNAMSIZ], BridgeError> {
    if name.is_empty() || name.len() >= IFNAMSIZ || name.contains('\0') {
        return Err(BridgeError::NoInterface(name.to_string()));
    }
    let mut out = [0u8; IFNAMSIZ];
    out[..name.len()].copy_from_slice(name.as_bytes());
    Ok(out)
}

fn ioctl_error(op: &'static str, name: &str, errno: Errno) -> BridgeError {
    BridgeError::Ioctl {
        op,
        ifname: name.to_string(),
        source: errno.into(),
    }
}

/// The interface index of `name`.
pub fn ifindex(name: &str) -> Result<u32, BridgeError> {
    match nix::net::if_::if_nametoindex(name) {
        Ok(idx) if idx != 0 => Ok(idx),
        _ => Err(BridgeError::NoInterface(name.to_string())),
    }
}

/// Whether the interface exists.
pub fn exists(name: &str) -> bool {
    ifindex(name).is_ok()
}

type BridgeIoctl = unsafe fn(libc::c_int, *const IfreqIndex) -> nix::Result<libc::c_int>;

fn bridge_port(
    op: &'static str,
    request: BridgeIoctl,
    bridge: &str,
    port: &str,
) -> Result<(), BridgeError> {
    let port_index = ifindex(port)?;
    let ifr = IfreqIndex {
        name: ifr_name(bridge)?,
        ifindex: port_index as libc::c_int,
        _pad: [0; 20],
    };
    let sock = ctl_socket()?;
    // SAFETY: `request` is SIOCBRADDIF or SIOCBRDELIF, which only read the ifreq passed.
    unsafe { request(sock.as_raw_fd(), &ifr) }.map_err(|e| ioctl_error(op, bridge, e))?;
    Ok(())
}

/// Makes `port` a port of the Linux bridge `bridge`. Already being its port is not an error.
pub fn add_port(bridge: &str, port: &str) -> Result<(), BridgeError> {
    match bridge_port("SIOCBRADDIF", ioctl::br_add_if, bridge, port) {
        // EBUSY: the port already has a master. If that is this bridge (removing it from here
        // works), re-adding it makes the call idempotent; otherwise report the EBUSY.
        Err(e @ BridgeError::Ioctl { .. }) if is_errno(&e, libc::EBUSY) => {
            match del_port(bridge, port) {
                Ok(()) => bridge_port("SIOCBRADDIF", ioctl::br_add_if, bridge, port),
                Err(_) => Err(e),
            }
        }
        r => r,
    }
}

/// Removes `port` from `bridge`.
pub fn del_port(bridge: &str, port: &str) -> Result<(), BridgeError> {
    bridge_port("SIOCBRDELIF", ioctl::br_del_if, bridge, port)
}

/// Whether `e` is an ioctl failure with `errno`.
pub fn is_errno(e: &BridgeError, errno: i32) -> bool {
    matches!(e, BridgeError::Ioctl { source, .. } if source.raw_os_error() == Some(errno))
}

/// `SIOCGIFFLAGS` on `sock`; ENODEV (the interface is gone) is [`BridgeError::NoInterface`].
fn get_flags(sock: &OwnedFd, name: &str) -> Result<libc::c_short, BridgeError> {
    let mut ifr = IfreqFlags {
        name: ifr_name(name)?,
        flags: 0,
        _pad: [0; 22],
    };
    // SAFETY: SIOCGIFFLAGS reads the name from and writes the flags into the ifreq passed.
    unsafe { ioctl::get_flags(sock.as_raw_fd(), &mut ifr) }.map_err(|e| match e {
        Errno::ENODEV => BridgeError::NoInterface(name.to_string()),
        e => ioctl_error("SIOCGIFFLAGS", name, e),
    })?;
    Ok(ifr.flags)
}

/// The interface flags (`IFF_*`).
pub fn flags(name: &str) -> Result<libc::c_short, BridgeError> {
    get_flags(&ctl_socket()?, name)
}

/// Brings the interface up or down (`IFF_UP`), leaving its other flags alone.
pub fn set_up(name: &str, up: bool) -> Result<(), BridgeError> {
    let sock = ctl_socket()?;
    let old = get_flags(&sock, name)?;
    let up_flag = libc::IFF_UP as libc::c_short;
    let new = if up { old | up_flag } else { old & !up_flag };
    if new == old {
        return Ok(());
    }
    let ifr = IfreqFlags {
        name: ifr_name(name)?,
        flags: new,
        _pad: [0; 22],
    };
    // SAFETY: SIOCSIFFLAGS only reads the ifreq passed.
    unsafe { ioctl::set_flags(sock.as_raw_fd(), &ifr) }
        .map_err(|e| ioctl_error("SIOCSIFFLAGS", name, e))?;
    Ok(())
}

/// The driver behind an interface (`bridge`, `openvswitch`, `vif`, `veth`, ...), from ethtool.
pub fn driver(name: &str) -> Result<String, BridgeError> {
    let mut info = EthtoolDrvinfo {
        cmd: ETHTOOL_GDRVINFO,
        driver: [0; 32],
        version: [0; 32],
        fw_version: [0; 32],
        bus_info: [0; 32],
        erom_version: [0; 32],
        reserved2: [0; 12],
        n_priv_flags: 0,
        n_stats: 0,
        testinfo_len: 0,
        eedump_len: 0,
        regdump_len: 0,
    };
    let mut ifr = IfreqData {
        name: ifr_name(name)?,
        data: &mut info,
        _pad: [0; 16],
    };
    let sock = ctl_socket()?;
    // SAFETY: SIOCETHTOOL with ETHTOOL_GDRVINFO reads the ifreq and fills in the
    // ethtool_drvinfo it points to; `info` outlives the call.
    unsafe { ioctl::ethtool(sock.as_raw_fd(), &mut ifr) }.map_err(|e| match e {
        Errno::ENODEV => BridgeError::NoInterface(name.to_string()),
        e => ioctl_error("SIOCETHTOOL", name, e),
    })?;
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
        assert!(matches!(ifr_name(""), Err(BridgeError::NoInterface(_))));
        assert!(matches!(
            ifr_name("sixteen_chars_xx"),
            Err(BridgeError::NoInterface(_))
        ));
        assert_eq!(&ifr_name("vif1.0").unwrap()[..7], b"vif1.0\0");
        assert_eq!(ifr_name("exactly15chars_").unwrap()[15], 0);
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
