//! `/dev/xen/gntdev`: mapping pages other domains granted to this one, and copying to and from
//! them without mapping (Linux's include/uapi/xen/gntdev.h). A mapping is a [`GrantMap`];
//! dropping it unmaps the pages and releases the grants. A copy is a batch of [`GrantCopy`]
//! segments between granted pages and a local buffer, one ioctl for the whole batch
//! (`IOCTL_GNTDEV_GRANT_COPY`, which the kernel turns into `GNTTABOP_copy` hypercalls).

use std::fs::{File, OpenOptions};
use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::ptr::NonNull;
use std::sync::Arc;

use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use xen_types::{DomId, GrantRef, PAGE_SIZE};

/// The device's path.
pub const GNTDEV_PATH: &str = "/dev/xen/gntdev";

#[repr(C)]
#[derive(Clone, Copy)]
struct GrantRefArg {
    domid: u32,
    gref: u32,
}

/// `struct ioctl_gntdev_map_grant_ref` with one ref (the layout the ioctl number encodes).
#[repr(C)]
struct MapOne {
    count: u32,
    pad: u32,
    index: u64,
    refs: [GrantRefArg; 1],
}

#[repr(C)]
struct Unmap {
    index: u64,
    count: u32,
    pad: u32,
}

const fn ioc_none(nr: u32, size: usize) -> u32 {
    ((size as u32) << 16) | ((b'G' as u32) << 8) | nr
}

/// One side of a copy segment: a local address, or (domid, gref, offset) of a granted page
/// (`union { void *virt; struct { u32 ref; u16 offset; u16 domid; } foreign; }`). Both are 8
/// bytes; which one is meant is said by the segment's flags.
#[repr(C)]
#[derive(Clone, Copy)]
struct CopySide {
    word: u64,
}

impl CopySide {
    fn local(addr: *mut u8) -> CopySide {
        CopySide {
            word: addr as usize as u64,
        }
    }
    fn foreign(dom: DomId, gref: GrantRef, offset: u16) -> CopySide {
        CopySide {
            word: u64::from(gref) | (u64::from(offset) << 32) | (u64::from(dom.0) << 48),
        }
    }
}

/// `struct gntdev_grant_copy_segment`.
#[repr(C)]
#[derive(Clone, Copy)]
struct CopySegment {
    source: CopySide,
    dest: CopySide,
    len: u16,
    flags: u16,
    status: i16,
}

/// `struct ioctl_gntdev_grant_copy`.
#[repr(C)]
struct CopyBatch {
    count: u32,
    segments: *mut CopySegment,
}

/// GNTCOPY_* (xen/include/public/grant_table.h): which side names a grant.
const GNTCOPY_SOURCE_GREF: u16 = 1 << 0;
const GNTCOPY_DEST_GREF: u16 = 1 << 1;
/// GNTST_okay; other statuses are negative GNTST_* errors.
pub const GNTST_OKAY: i16 = 0;
/// GNTST_general_error: what a segment that never reached Xen reports.
pub const GNTST_GENERAL_ERROR: i16 = -1;

const IOCTL_GNTDEV_MAP_GRANT_REF: u32 = ioc_none(0, size_of::<MapOne>());
const IOCTL_GNTDEV_UNMAP_GRANT_REF: u32 = ioc_none(1, size_of::<Unmap>());
const IOCTL_GNTDEV_GRANT_COPY: u32 = ioc_none(8, size_of::<CopyBatch>());
const _: () = assert!(size_of::<MapOne>() == 24);
const _: () = assert!(size_of::<CopySegment>() == 24);
const _: () = assert!(std::mem::offset_of!(CopySegment, status) == 20);
const _: () = assert!(IOCTL_GNTDEV_MAP_GRANT_REF == 0x0018_4700);
const _: () = assert!(IOCTL_GNTDEV_UNMAP_GRANT_REF == 0x0010_4701);
const _: () = assert!(IOCTL_GNTDEV_GRANT_COPY == 0x0010_4708);

nix::ioctl_readwrite_bad!(ioctl_map, IOCTL_GNTDEV_MAP_GRANT_REF, MapOne);
nix::ioctl_write_ptr_bad!(ioctl_unmap, IOCTL_GNTDEV_UNMAP_GRANT_REF, Unmap);
nix::ioctl_write_ptr_bad!(ioctl_grant_copy, IOCTL_GNTDEV_GRANT_COPY, CopyBatch);

/// Which way a [`GrantCopy`] goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyDir {
    /// From the granted page into the local buffer.
    FromGrant,
    /// From the local buffer into the granted page.
    ToGrant,
}

/// One segment of a grant copy: `len` bytes between `offset` in the page `gref` of `dom`
/// and `local` in the caller's buffer. `status` is written by [`GrantDev::copy`]:
/// [`GNTST_OKAY`], or a negative GNTST_* error for this segment alone (a bad grant, a
/// domain that went away).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantCopy {
    pub dir: CopyDir,
    pub dom: DomId,
    pub gref: GrantRef,
    pub offset: u16,
    pub len: u16,
    /// Offset in the local buffer.
    pub local: usize,
    pub status: i16,
}

impl GrantCopy {
    /// Whether the segment fits both its page and a local buffer of `buf_len` bytes.
    pub fn fits(&self, buf_len: usize) -> bool {
        usize::from(self.offset) + usize::from(self.len) <= PAGE_SIZE
            && self
                .local
                .checked_add(self.len.into())
                .is_some_and(|end| end <= buf_len)
    }
}

/// One open `/dev/xen/gntdev`.
#[derive(Debug)]
pub struct GrantDev {
    dev: File,
}

/// A page another domain granted, mapped here read-write. Unmapped when dropped.
#[derive(Debug)]
pub struct GrantMap {
    dev: Arc<GrantDev>,
    addr: NonNull<libc::c_void>,
    index: u64,
}

// SAFETY: the mapping is plain shared memory; access to it goes through &self / &mut self.
unsafe impl Send for GrantMap {}

impl GrantDev {
    pub fn open() -> io::Result<GrantDev> {
        let dev = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(GNTDEV_PATH)?;
        Ok(GrantDev { dev })
    }

    /// Maps the page `gref` of domain `dom` (which granted it to this domain).
    pub fn map(self: &Arc<Self>, dom: DomId, gref: GrantRef) -> io::Result<GrantMap> {
        let mut arg = MapOne {
            count: 1,
            pad: 0,
            index: 0,
            refs: [GrantRefArg {
                domid: dom.0.into(),
                gref,
            }],
        };
        // SAFETY: the fd is this device's; `arg` is the one-ref layout the ioctl reads and
        // writes, alive for the call.
        unsafe { ioctl_map(self.dev.as_raw_fd(), &mut arg) }.map_err(io::Error::from)?;
        let index = arg.index;
        let len = NonZeroUsize::new(PAGE_SIZE).ok_or_else(|| io::Error::other("page size"))?;
        let offset = libc::off_t::try_from(index).map_err(|_| io::Error::other("offset"))?;
        // SAFETY: mapping the range the driver reserved at `index` for this fd; the kernel
        // chooses the address, so nothing of ours is overwritten.
        let mapped = unsafe {
            mmap(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                self.dev.as_fd(),
                offset,
            )
        };
        match mapped {
            Ok(addr) => Ok(GrantMap {
                dev: self.clone(),
                addr,
                index,
            }),
            Err(e) => {
                self.release(index);
                Err(e.into())
            }
        }
    }

    /// Copies every segment of `ops` between granted pages and `buf`, in one ioctl, and sets
    /// each segment's `status`. A segment that does not fit its page or `buf` (see
    /// [`GrantCopy::fits`]) is not sent and gets [`GNTST_GENERAL_ERROR`]; zero-length ones
    /// succeed without being sent. `Err` only when the ioctl itself fails (then every status
    /// is an error).
    pub fn copy(&self, ops: &mut [GrantCopy], buf: &mut [u8]) -> io::Result<()> {
        let base = buf.as_mut_ptr();
        let mut segments = Vec::with_capacity(ops.len());
        let mut sent = Vec::with_capacity(ops.len());
        for (i, op) in ops.iter_mut().enumerate() {
            if !op.fits(buf.len()) {
                op.status = GNTST_GENERAL_ERROR;
                continue;
            }
            op.status = GNTST_OKAY;
            if op.len == 0 {
                continue;
            }
            // In bounds of `buf` (checked by `fits`): the pointer stays inside the buffer.
            let local = CopySide::local(base.wrapping_add(op.local));
            let foreign = CopySide::foreign(op.dom, op.gref, op.offset);
            let (source, dest, flags) = match op.dir {
                CopyDir::FromGrant => (foreign, local, GNTCOPY_SOURCE_GREF),
                CopyDir::ToGrant => (local, foreign, GNTCOPY_DEST_GREF),
            };
            segments.push(CopySegment {
                source,
                dest,
                len: op.len,
                flags,
                status: GNTST_GENERAL_ERROR,
            });
            sent.push(i);
        }
        if segments.is_empty() {
            return Ok(());
        }
        let count = u32::try_from(segments.len()).map_err(|_| io::Error::other("too many"))?;
        let arg = CopyBatch {
            count,
            segments: segments.as_mut_ptr(),
        };
        // SAFETY: the fd is this device's; `arg` points at `segments`, alive and writable for
        // the call (the kernel writes each status); every local address lies with its length
        // inside `buf`, which we borrow mutably for the call.
        let rc = unsafe { ioctl_grant_copy(self.dev.as_raw_fd(), &arg) };
        if let Err(e) = rc {
            for &i in &sent {
                ops[i].status = GNTST_GENERAL_ERROR;
            }
            return Err(e.into());
        }
        for (seg, &i) in segments.iter().zip(&sent) {
            ops[i].status = seg.status;
        }
        Ok(())
    }

    /// Gives the driver's reservation at `index` back.
    fn release(&self, index: u64) {
        let arg = Unmap {
            index,
            count: 1,
            pad: 0,
        };
        // SAFETY: the fd is this device's; `arg` is the layout the ioctl reads.
        let _ = unsafe { ioctl_unmap(self.dev.as_raw_fd(), &arg) };
    }
}

impl GrantMap {
    /// The page. The granting domain may change it at any time: read values once and check
    /// them before use.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `addr` maps PAGE_SIZE bytes for as long as `self` lives.
        unsafe { std::slice::from_raw_parts(self.addr.as_ptr().cast::<u8>(), PAGE_SIZE) }
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and `&mut self` makes this the only view through us.
        unsafe { std::slice::from_raw_parts_mut(self.addr.as_ptr().cast::<u8>(), PAGE_SIZE) }
    }

    /// The u32 at byte offset `at` (a constant of a ring layout: a bad one is a bug here).
    fn word(&self, at: usize) -> *mut u32 {
        assert!(
            at + 4 <= PAGE_SIZE && at.is_multiple_of(4),
            "aligned offset in the page"
        );
        self.addr
            .as_ptr()
            .cast::<u8>()
            .wrapping_add(at)
            .cast::<u32>()
    }

    /// Reads a little-endian u32 at `at` with a volatile load (the other side writes it).
    pub fn read_u32(&self, at: usize) -> u32 {
        let p = self.word(at);
        // SAFETY: `word` checked `at` is in bounds and aligned within the live mapping.
        u32::from_le(unsafe { std::ptr::read_volatile(p) })
    }

    /// Writes a little-endian u32 at `at` with a volatile store.
    pub fn write_u32(&mut self, at: usize, v: u32) {
        let p = self.word(at);
        // SAFETY: `word` checked `at` is in bounds and aligned within the live mapping.
        unsafe { std::ptr::write_volatile(p, v.to_le()) }
    }
}

impl Drop for GrantMap {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the range `map` mapped; no reference into it outlives
        // `self` (the slices borrow it).
        let _ = unsafe { munmap(self.addr, PAGE_SIZE) };
        self.dev.release(self.index);
    }
}
