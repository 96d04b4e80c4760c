//! A TAP interface (`/dev/net/tun`, IFF_TAP | IFF_NO_PI): Ethernet frames in and out of dom0's
//! network stack through a file descriptor, one frame per read or write. It lives as long as
//! its descriptor: closing it (or xendevd dying) removes the interface, which takes it off a
//! Linux bridge too.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;

use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
use xen_types::IFNAMSIZ;

use crate::bridge::IfreqFlags;

const TUN_PATH: &str = "/dev/net/tun";
/// linux/if_tun.h
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
/// `_IOW('T', 202, int)`
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
/// The MAC Linux netback gives every vif: the highest unicast address, so a bridge never takes
/// a vif's address as its own (it takes its ports' lowest) and does not change address as
/// guests come and go.
const VIF_MAC: [u8; 6] = [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff];
/// ARPHRD_ETHER
const ARPHRD_ETHER: u16 = 1;

/// `struct ifreq` with the hardware address member (`struct sockaddr`).
#[repr(C)]
struct IfreqHwaddr {
    name: [u8; IFNAMSIZ],
    family: u16,
    data: [u8; 14],
    _pad: [u8; 8],
}

/// `struct ifreq` with the MTU member.
#[repr(C)]
struct IfreqMtu {
    name: [u8; IFNAMSIZ],
    mtu: libc::c_int,
    _pad: [u8; 20],
}

const _: () = assert!(size_of::<IfreqFlags>() == size_of::<libc::ifreq>());
const _: () = assert!(size_of::<IfreqHwaddr>() == size_of::<libc::ifreq>());
const _: () = assert!(size_of::<IfreqMtu>() == size_of::<libc::ifreq>());

nix::ioctl_write_ptr_bad!(tun_set_iff, TUNSETIFF, IfreqFlags);
nix::ioctl_write_ptr_bad!(set_hwaddr, libc::SIOCSIFHWADDR, IfreqHwaddr);
nix::ioctl_write_ptr_bad!(set_mtu, libc::SIOCSIFMTU, IfreqMtu);

/// One TAP interface.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

fn ifr_name(name: &str) -> io::Result<[u8; IFNAMSIZ]> {
    xen_types::check_ifname(name)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{name:?}: {e}")))?;
    let mut out = [0u8; IFNAMSIZ];
    out[..name.len()].copy_from_slice(name.as_bytes());
    Ok(out)
}

impl Tap {
    /// Creates the interface `name` (down, not on any bridge), non-blocking, with netback's
    /// vif MAC and the given MTU.
    pub fn create(name: &str, mtu: u16) -> io::Result<Tap> {
        let ifr_name = ifr_name(name)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(TUN_PATH)?;
        let ifr = IfreqFlags {
            name: ifr_name,
            flags: IFF_TAP | IFF_NO_PI,
            _pad: [0; 22],
        };
        // SAFETY: TUNSETIFF reads the ifreq passed (and may write the name back, which it
        // already holds); the fd is the tun device we just opened.
        unsafe { tun_set_iff(file.as_raw_fd(), &ifr) }.map_err(|e| {
            io::Error::new(io::Error::from(e).kind(), format!("TUNSETIFF {name}: {e}"))
        })?;
        let tap = Tap {
            file,
            name: name.to_string(),
        };
        tap.configure(ifr_name, mtu)?;
        Ok(tap)
    }

    fn configure(&self, name: [u8; IFNAMSIZ], mtu: u16) -> io::Result<()> {
        let sock = socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(io::Error::from)?;
        let mut data = [0u8; 14];
        data[..6].copy_from_slice(&VIF_MAC);
        let hw = IfreqHwaddr {
            name,
            family: ARPHRD_ETHER,
            data,
            _pad: [0; 8],
        };
        // SAFETY: SIOCSIFHWADDR only reads the ifreq passed.
        unsafe { set_hwaddr(sock.as_raw_fd(), &hw) }
            .map_err(|e| io::Error::other(format!("SIOCSIFHWADDR {}: {e}", self.name)))?;
        let m = IfreqMtu {
            name,
            mtu: mtu.into(),
            _pad: [0; 20],
        };
        // SAFETY: SIOCSIFMTU only reads the ifreq passed.
        unsafe { set_mtu(sock.as_raw_fd(), &m) }
            .map_err(|e| io::Error::other(format!("SIOCSIFMTU {} {mtu}: {e}", self.name)))?;
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl AsFd for Tap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// Where a vif's frames go to and come from: dom0's network (a [`Tap`]), or a test's queue.
pub trait Link {
    /// Sends one frame into dom0's network; a frame that cannot be taken is lost, as on a wire.
    fn send(&mut self, frame: &[u8]) -> io::Result<()>;
    /// Takes one frame waiting for the guest into `buf`: its length, or None when none waits.
    /// A frame longer than `buf` is cut short (the caller drops frames that fill `buf`).
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>>;
}

impl Link for Tap {
    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        (&self.file).write(frame).map(drop)
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match (&self.file).read(buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }
}
