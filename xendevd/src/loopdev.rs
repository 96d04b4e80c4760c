//! Loop devices over disk image files, so that Linux blkback (which serves block devices only)
//! can serve a file: `LOOP_CTL_GET_FREE` on /dev/loop-control, then `LOOP_CONFIGURE` (Linux
//! 5.8+) binds the file in one call, read-only when the disk is.
//!
//! A device is configured with `LO_FLAGS_AUTOCLEAR`: the kernel frees it when the last opener
//! closes it. xendevd keeps its descriptor until the vbd goes, so the device outlives the time
//! blkback takes to open it; after that blkback's open keeps it, and a stopped or restarted
//! xendevd leaves nothing behind once the guests' disks are closed.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;

pub const LOOP_CONTROL: &str = "/dev/loop-control";
/// The block major of loop devices.
pub const LOOP_MAJOR: u32 = 7;

const LO_NAME_SIZE: usize = 64;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
/// Tries before giving up when other processes keep taking the free device first.
const CONFIGURE_TRIES: u32 = 16;

/// `struct loop_info64` (linux/loop.h).
#[repr(C)]
#[derive(Clone, Copy)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` (linux/loop.h).
#[repr(C)]
#[derive(Clone, Copy)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

// Sizes and offsets of the C structs (x86_64, as printed by a C program against the UAPI header).
const _: () = assert!(std::mem::size_of::<LoopInfo64>() == 232);
const _: () = assert!(std::mem::offset_of!(LoopInfo64, lo_flags) == 52);
const _: () = assert!(std::mem::offset_of!(LoopInfo64, lo_file_name) == 56);
const _: () = assert!(std::mem::size_of::<LoopConfig>() == 304);
const _: () = assert!(std::mem::offset_of!(LoopConfig, info) == 8);

impl LoopInfo64 {
    fn zeroed() -> LoopInfo64 {
        LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: 0,
            lo_file_name: [0; LO_NAME_SIZE],
            lo_crypt_name: [0; LO_NAME_SIZE],
            lo_encrypt_key: [0; 32],
            lo_init: [0; 2],
        }
    }
}

/// The ioctls, typed by nix: the kernel reads (or fills) only the struct given.
mod ioctl {
    use super::{LoopConfig, LoopInfo64};
    nix::ioctl_none_bad!(ctl_get_free, 0x4C82);
    nix::ioctl_write_ptr_bad!(configure, 0x4C0A, LoopConfig);
    nix::ioctl_none_bad!(clr_fd, 0x4C01);
    nix::ioctl_read_bad!(get_status64, 0x4C05, LoopInfo64);
}

#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    #[error("{path}: {source}")]
    Open {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a regular file")]
    NotAFile { path: String },
    #[error("{op} {path}: {source}")]
    Ioctl {
        op: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("no free loop device after {CONFIGURE_TRIES} tries (others kept taking them)")]
    Busy,
}

/// A configured loop device, owned: dropping it detaches the file (now, or when blkback lets
/// go of the device).
#[derive(Debug)]
pub struct LoopDevice {
    fd: OwnedFd,
    number: u32,
    read_only: bool,
}

impl LoopDevice {
    /// Binds `file` to a free loop device, read-only if `read_only` (the file is then opened
    /// read-only too, so a read-only image file serves).
    pub fn attach(file: &Path, read_only: bool) -> Result<LoopDevice, LoopError> {
        let shown = file.display().to_string();
        let backing = File::options()
            .read(true)
            .write(!read_only)
            .custom_flags(libc::O_CLOEXEC)
            .open(file)
            .map_err(|source| LoopError::Open {
                path: shown.clone(),
                source,
            })?;
        let meta = backing.metadata().map_err(|source| LoopError::Open {
            path: shown.clone(),
            source,
        })?;
        if !meta.is_file() {
            return Err(LoopError::NotAFile { path: shown });
        }
        let control = File::options()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(LOOP_CONTROL)
            .map_err(|source| LoopError::Open {
                path: LOOP_CONTROL.into(),
                source,
            })?;
        let mut config = LoopConfig {
            fd: backing.as_raw_fd() as u32,
            block_size: 0,
            info: LoopInfo64::zeroed(),
            reserved: [0; 8],
        };
        config.info.lo_flags = LO_FLAGS_AUTOCLEAR | if read_only { LO_FLAGS_READ_ONLY } else { 0 };
        let name = file.as_os_str().as_encoded_bytes();
        let n = name.len().min(LO_NAME_SIZE - 1);
        config.info.lo_file_name[..n].copy_from_slice(&name[..n]);
        for _ in 0..CONFIGURE_TRIES {
            // SAFETY: LOOP_CTL_GET_FREE takes no argument; the fd is /dev/loop-control.
            let number = unsafe { ioctl::ctl_get_free(control.as_raw_fd()) }.map_err(|e| {
                LoopError::Ioctl {
                    op: "LOOP_CTL_GET_FREE",
                    path: LOOP_CONTROL.into(),
                    source: e.into(),
                }
            })?;
            let number = u32::try_from(number).map_err(|_| LoopError::Ioctl {
                op: "LOOP_CTL_GET_FREE",
                path: LOOP_CONTROL.into(),
                source: io::Error::other(format!("returned {number}")),
            })?;
            let path = device_path(number);
            let dev = match File::options()
                .read(true)
                .write(!read_only)
                .custom_flags(libc::O_CLOEXEC)
                .open(&path)
            {
                Ok(dev) => dev,
                // It is being torn down (another user detached it just now): the next one.
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) => continue,
                Err(source) => {
                    return Err(LoopError::Open {
                        path: path.display().to_string(),
                        source,
                    })
                }
            };
            // SAFETY: LOOP_CONFIGURE reads one loop_config from the pointer, which points at a
            // live, fully initialised struct of the kernel's layout (size asserted above).
            match unsafe { ioctl::configure(dev.as_raw_fd(), &config) } {
                Ok(_) => {
                    return Ok(LoopDevice {
                        fd: dev.into(),
                        number,
                        read_only,
                    })
                }
                // Another process bound it between our two calls: take the next free one.
                Err(Errno::EBUSY) => continue,
                Err(e) => {
                    return Err(LoopError::Ioctl {
                        op: "LOOP_CONFIGURE",
                        path: path.display().to_string(),
                        source: e.into(),
                    })
                }
            }
        }
        Err(LoopError::Busy)
    }

    pub fn number(&self) -> u32 {
        self.number
    }

    pub fn path(&self) -> PathBuf {
        device_path(self.number)
    }

    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Block major and minor (blkback's `physical-device`).
    pub fn major_minor(&self) -> (u32, u32) {
        (LOOP_MAJOR, self.number)
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        // As `losetup -d`: detaches now if nobody else has the device open, else the kernel
        // detaches it when the last opener (blkback) closes it (the device is autoclear).
        // SAFETY: LOOP_CLR_FD takes no argument; the fd is the loop device's.
        match unsafe { ioctl::clr_fd(self.fd.as_raw_fd()) } {
            Ok(_) | Err(Errno::ENXIO) => {}
            Err(e) => log::warn!("LOOP_CLR_FD /dev/loop{}: {e}", self.number),
        }
    }
}

/// `/dev/loopN`.
pub fn device_path(number: u32) -> PathBuf {
    PathBuf::from(format!("/dev/loop{number}"))
}

/// The file behind a loop device and whether it is read-only, or `None` when the device is
/// free (tests and checks; `LOOP_GET_STATUS64`).
pub fn backing(number: u32) -> io::Result<Option<(u64, u64, bool)>> {
    let dev = File::options()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(device_path(number))?;
    let mut info = LoopInfo64::zeroed();
    // SAFETY: LOOP_GET_STATUS64 writes one loop_info64 to the pointer, which points at a
    // struct of the kernel's layout that lives across the call.
    match unsafe { ioctl::get_status64(dev.as_raw_fd(), &mut info) } {
        Ok(_) => Ok(Some((
            info.lo_device,
            info.lo_inode,
            info.lo_flags & LO_FLAGS_READ_ONLY != 0,
        ))),
        Err(Errno::ENXIO) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Whether `path` is a block device, and its device number.
pub fn block_device(path: &Path) -> io::Result<Option<u64>> {
    let meta = std::fs::metadata(path)?;
    Ok(meta.file_type().is_block_device().then(|| meta.rdev()))
}
