//! `/dev/xen/evtchn`: binding, notifying and waiting on event channels from dom0 userspace
//! (Linux's include/uapi/xen/evtchn.h). A port bound through one open device belongs to it:
//! closing the device unbinds every port, which leaves the remote end unbound again (Xen's
//! `evtchn_close`), so a later process can bind the same remote port anew.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;

use xen_types::{DomId, EvtchnPort};

/// The device's path.
pub const EVTCHN_PATH: &str = "/dev/xen/evtchn";

/// A global virtual interrupt: some domain changed state (shut down, died).
pub const VIRQ_DOM_EXC: u32 = 3;

#[repr(C)]
struct BindVirq {
    virq: u32,
}

#[repr(C)]
struct BindInterdomain {
    remote_domain: u32,
    remote_port: u32,
}

#[repr(C)]
struct BindUnboundPort {
    remote_domain: u32,
}

#[repr(C)]
struct Port {
    port: u32,
}

const fn ioc_none(nr: u32, size: usize) -> u32 {
    ((size as u32) << 16) | ((b'E' as u32) << 8) | nr
}

const IOCTL_EVTCHN_BIND_VIRQ: u32 = ioc_none(0, size_of::<BindVirq>());
const IOCTL_EVTCHN_BIND_INTERDOMAIN: u32 = ioc_none(1, size_of::<BindInterdomain>());
const IOCTL_EVTCHN_BIND_UNBOUND_PORT: u32 = ioc_none(2, size_of::<BindUnboundPort>());
const IOCTL_EVTCHN_UNBIND: u32 = ioc_none(3, size_of::<Port>());
const IOCTL_EVTCHN_NOTIFY: u32 = ioc_none(4, size_of::<Port>());
const _: () = assert!(IOCTL_EVTCHN_BIND_INTERDOMAIN == 0x0008_4501);
const _: () = assert!(IOCTL_EVTCHN_NOTIFY == 0x0004_4504);

nix::ioctl_write_ptr_bad!(ioctl_bind_virq, IOCTL_EVTCHN_BIND_VIRQ, BindVirq);
nix::ioctl_write_ptr_bad!(
    ioctl_bind_interdomain,
    IOCTL_EVTCHN_BIND_INTERDOMAIN,
    BindInterdomain
);
nix::ioctl_write_ptr_bad!(
    ioctl_bind_unbound,
    IOCTL_EVTCHN_BIND_UNBOUND_PORT,
    BindUnboundPort
);
nix::ioctl_write_ptr_bad!(ioctl_unbind, IOCTL_EVTCHN_UNBIND, Port);
nix::ioctl_write_ptr_bad!(ioctl_notify, IOCTL_EVTCHN_NOTIFY, Port);

/// One open `/dev/xen/evtchn`: the ports bound through it, and their pending events.
#[derive(Debug)]
pub struct EventChannels {
    dev: File,
}

/// The ioctl's result: Linux returns the bound local port.
fn port(rc: nix::Result<libc::c_int>) -> io::Result<EvtchnPort> {
    let rc = rc.map_err(io::Error::from)?;
    EvtchnPort::try_from(rc).map_err(|_| io::Error::other(format!("bad port {rc}")))
}

impl EventChannels {
    /// Opens the device. With `nonblocking`, [`pending`](Self::pending) returns at once when
    /// nothing is pending (for epoll loops).
    pub fn open(nonblocking: bool) -> io::Result<EventChannels> {
        let flags = libc::O_CLOEXEC | if nonblocking { libc::O_NONBLOCK } else { 0 };
        let dev = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(flags)
            .open(EVTCHN_PATH)?;
        Ok(EventChannels { dev })
    }

    /// Binds a local port to `remote`'s unbound port `remote_port` (which `remote` allocated
    /// toward this domain).
    pub fn bind_interdomain(
        &self,
        remote: DomId,
        remote_port: EvtchnPort,
    ) -> io::Result<EvtchnPort> {
        let arg = BindInterdomain {
            remote_domain: remote.0.into(),
            remote_port,
        };
        // SAFETY: the fd is this device's; `arg` is the layout the ioctl reads, alive for the call.
        port(unsafe { ioctl_bind_interdomain(self.dev.as_raw_fd(), &arg) })
    }

    /// Allocates a local port that `remote` may bind.
    pub fn bind_unbound(&self, remote: DomId) -> io::Result<EvtchnPort> {
        let arg = BindUnboundPort {
            remote_domain: remote.0.into(),
        };
        // SAFETY: as in bind_interdomain.
        port(unsafe { ioctl_bind_unbound(self.dev.as_raw_fd(), &arg) })
    }

    /// Binds a global virtual interrupt (e.g. [`VIRQ_DOM_EXC`]). Only one binding of a global
    /// VIRQ exists per domain: EEXIST when another process (xenstored) holds it.
    pub fn bind_virq(&self, virq: u32) -> io::Result<EvtchnPort> {
        let arg = BindVirq { virq };
        // SAFETY: as in bind_interdomain.
        port(unsafe { ioctl_bind_virq(self.dev.as_raw_fd(), &arg) })
    }

    /// Signals the remote end of a bound local port.
    pub fn notify(&self, port: EvtchnPort) -> io::Result<()> {
        let arg = Port { port };
        // SAFETY: as in bind_interdomain.
        unsafe { ioctl_notify(self.dev.as_raw_fd(), &arg) }
            .map(drop)
            .map_err(io::Error::from)
    }

    /// Unbinds a local port (the remote end becomes unbound again).
    pub fn unbind(&self, port: EvtchnPort) -> io::Result<()> {
        let arg = Port { port };
        // SAFETY: as in bind_interdomain.
        unsafe { ioctl_unbind(self.dev.as_raw_fd(), &arg) }
            .map(drop)
            .map_err(io::Error::from)
    }

    /// Ports that fired since the last read (they stay masked until [`unmask`]ed). Blocks
    /// until one fires unless the device was opened non-blocking; then empty when none has.
    ///
    /// [`unmask`]: Self::unmask
    pub fn pending(&self) -> io::Result<Vec<EvtchnPort>> {
        let mut buf = [0u8; 4 * 64];
        let n = match (&self.dev).read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e),
        };
        Ok(buf[..n - n % 4]
            .chunks_exact(4)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    /// Lets `port` fire again.
    pub fn unmask(&self, port: EvtchnPort) -> io::Result<()> {
        (&self.dev).write_all(&port.to_ne_bytes())
    }

    /// Binds `remote`'s port, notifies it once and unbinds again: a one-off kick for a guest
    /// port that no process keeps bound (chaos's NoXS sysctl requests).
    pub fn kick(&self, remote: DomId, remote_port: EvtchnPort) -> io::Result<()> {
        let local = self.bind_interdomain(remote, remote_port)?;
        let sent = self.notify(local);
        let unbound = self.unbind(local);
        sent.and(unbound)
    }
}

impl AsFd for EventChannels {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.dev.as_fd()
    }
}
