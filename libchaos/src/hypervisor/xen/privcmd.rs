//! The Linux privcmd devices: `/dev/xen/privcmd` (hypercalls, foreign mappings) and
//! `/dev/xen/hypercall` (memory Xen may read and write during a hypercall).
//!
//! This is the only place with `unsafe`: the ioctls, the mmaps and the views of mapped memory.
//! Everything above it works with [`HcallBuf`] and [`Mapping`].

use std::ffi::c_void;
use std::fs::{File, OpenOptions};
use std::io;
use std::marker::PhantomData;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

use super::abi::{
    Plain, PrivcmdHypercall, PrivcmdMmapBatchV2, PrivcmdMmapResource, IOCTL_PRIVCMD_HYPERCALL,
    IOCTL_PRIVCMD_MMAPBATCH_V2, IOCTL_PRIVCMD_MMAP_RESOURCE,
};
use crate::hypervisor::costs;
use crate::hypervisor::{HypervisorError, PAGE_SIZE};

pub const PRIVCMD_PATH: &str = "/dev/xen/privcmd";
pub const HYPERCALL_BUF_PATH: &str = "/dev/xen/hypercall";

fn open_rw(path: &str) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

/// Where hypercall argument memory comes from.
///
/// Xen reads and writes hypercall arguments through the caller's virtual addresses; if such a
/// page is not present at that moment (never touched, swapped, being migrated) the hypercall
/// fails with EFAULT. `/dev/xen/hypercall` hands out kernel pages that never fault; without
/// it (old kernels, unit tests) locked anonymous memory is the fallback, as in libxencall.
///
/// Buffers are kept for reuse once freed (a few, as libxencall keeps them): in a PV dom0 each
/// mmap and munmap is a page-table update through Xen and a TLB flush, and a creation makes a
/// dozen hypercalls, each with a buffer or two.
#[derive(Debug)]
pub struct BufAlloc {
    source: Arc<Source>,
}

/// The device and the freed buffers kept mapped for the next ones of their size, shared by
/// the allocator and every buffer it gave out. The device must stay open until the last
/// mapping of it is gone: closing `/dev/xen/hypercall` frees the kernel's records of its
/// mappings, and unmapping one after that is a use after free in the kernel (which corrupted
/// other processes' memory in the lab). So the device closes with the last of them.
#[derive(Debug)]
struct Source {
    /// (address, mapped length) of the kept buffers.
    spare: Mutex<Vec<(usize, usize)>>,
    dev: Option<File>,
}

/// How many freed buffers are kept.
const SPARE_BUFFERS: usize = 8;

impl Source {
    fn take(&self, map_len: usize) -> Option<NonNull<c_void>> {
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        let i = spare.iter().position(|&(_, len)| len == map_len)?;
        let (addr, _) = spare.swap_remove(i);
        NonNull::new(addr as *mut c_void)
    }

    /// Keeps the mapping, or gives it back (false) when enough are kept.
    fn keep(&self, ptr: NonNull<c_void>, map_len: usize) -> bool {
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        if spare.len() >= SPARE_BUFFERS {
            return false;
        }
        spare.push((ptr.as_ptr() as usize, map_len));
        true
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        // Before `dev` closes (fields drop after this).
        let spare = self.spare.get_mut().unwrap_or_else(|p| p.into_inner());
        for &(addr, len) in spare.iter() {
            // SAFETY: each entry is a mapping of `len` bytes made by BufAlloc::zeroed that no
            // HcallBuf owns any more (it was handed here on drop), unmapped once.
            unsafe { libc::munmap(addr as *mut c_void, len) };
        }
    }
}

impl BufAlloc {
    fn with(dev: Option<File>) -> BufAlloc {
        BufAlloc {
            source: Arc::new(Source {
                spare: Mutex::default(),
                dev,
            }),
        }
    }

    /// `/dev/xen/hypercall` if the kernel has it, else locked anonymous memory.
    pub fn open() -> Result<Self, HypervisorError> {
        match open_rw(HYPERCALL_BUF_PATH) {
            Ok(f) => Ok(BufAlloc::with(Some(f))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BufAlloc::with(None)),
            Err(source) => Err(HypervisorError::Open {
                path: HYPERCALL_BUF_PATH.into(),
                source,
            }),
        }
    }

    /// Locked anonymous memory only (unit tests).
    #[cfg(test)]
    pub fn anonymous() -> Self {
        BufAlloc::with(None)
    }

    /// How many freed buffers are kept for reuse.
    #[cfg(test)]
    pub fn kept(&self) -> usize {
        self.source.spare.lock().map_or(0, |s| s.len())
    }

    /// A buffer holding `value`.
    pub fn one<T: Plain>(&self, value: T) -> io::Result<HcallBuf<T>> {
        let mut b = self.zeroed::<T>(1)?;
        b.as_mut_slice()[0] = value;
        Ok(b)
    }

    /// A buffer holding a copy of `values` (at least one element of room).
    #[cfg(test)]
    pub fn copy_of<T: Plain>(&self, values: &[T]) -> io::Result<HcallBuf<T>> {
        let mut b = self.zeroed::<T>(values.len())?;
        b.as_mut_slice().copy_from_slice(values);
        Ok(b)
    }

    /// A zero-filled buffer of `len` elements.
    pub fn zeroed<T: Plain>(&self, len: usize) -> io::Result<HcallBuf<T>> {
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
        let map_len = bytes.max(1).div_ceil(PAGE_SIZE) * PAGE_SIZE;
        let ptr = match (self.source.take(map_len), &self.source.dev) {
            (Some(kept), _) => kept,
            (None, Some(dev)) => mmap(map_len, libc::MAP_SHARED, dev.as_raw_fd())?,
            (None, None) => {
                let ptr = mmap(
                    map_len,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_LOCKED,
                    -1,
                )
                .or_else(|_| mmap(map_len, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1))?;
                // SAFETY: ptr/map_len is the private mapping just created; MADV_DONTFORK only
                // keeps it out of children (no copy-on-write under a running hypercall).
                unsafe { libc::madvise(ptr.as_ptr(), map_len, libc::MADV_DONTFORK) };
                ptr
            }
        };
        // Fresh mappings read as zeros, kept ones hold the last call's data: zero them, which
        // also makes every page present before Xen touches it.
        // SAFETY: ptr is a writable, page-aligned mapping of map_len bytes, fresh or handed
        // back by a dropped buffer, that nothing else references.
        unsafe { std::ptr::write_bytes(ptr.as_ptr().cast::<u8>(), 0, map_len) };
        Ok(HcallBuf {
            ptr: ptr.cast(),
            len,
            map_len,
            source: self.source.clone(),
            _owns: PhantomData,
        })
    }
}

fn mmap(len: usize, flags: libc::c_int, fd: libc::c_int) -> io::Result<NonNull<c_void>> {
    // SAFETY: asks the kernel for a new mapping at an address of its choice; no existing memory
    // is affected.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            fd,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(p).ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))
}

/// Page-aligned memory that Xen may access during a hypercall, holding `len` values of `T`.
pub struct HcallBuf<T: Plain> {
    ptr: NonNull<T>,
    len: usize,
    map_len: usize,
    /// Where the mapping goes when the buffer is dropped; it keeps the device open.
    source: Arc<Source>,
    _owns: PhantomData<T>,
}

// SAFETY: the buffer exclusively owns its mapping; T is plain data.
unsafe impl<T: Plain> Send for HcallBuf<T> {}

impl<T: Plain> HcallBuf<T> {
    /// The address to pass to Xen.
    pub fn addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    pub fn as_slice(&self) -> &[T] {
        // SAFETY: the mapping holds at least len * size_of::<T>() initialised bytes (zeroed at
        // creation), T is Plain so any bytes Xen wrote are a valid T, and &self keeps the
        // mapping alive and unaliased by writers for the borrow.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: as in as_slice; &mut self makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// The first (usually only) element.
    pub fn get(&self) -> T {
        self.as_slice()[0]
    }

    /// The buffer's bytes, as Xen sees them (tests compare them with the C layout).
    #[cfg(test)]
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: map_len bytes are mapped and were all initialised at creation; T being Plain
        // has no uninitialised padding.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast::<u8>(), self.map_len) }
    }
}

impl<T: Plain> Drop for HcallBuf<T> {
    fn drop(&mut self) {
        if self.source.keep(self.ptr.cast(), self.map_len) {
            return;
        }
        // SAFETY: ptr/map_len is exactly the mapping made in BufAlloc::zeroed, unmapped once.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.map_len) };
    }
}

/// `/dev/xen/privcmd`, opened once.
#[derive(Debug)]
pub struct Privcmd {
    fd: File,
}

impl Privcmd {
    /// Opens the device; [`HypervisorError::NoXen`] when this is not a Xen dom0.
    pub fn open() -> Result<Self, HypervisorError> {
        Self::open_at(PRIVCMD_PATH)
    }

    pub fn open_at(path: &str) -> Result<Self, HypervisorError> {
        if !Path::new(path).exists() {
            return Err(HypervisorError::NoXen { path: path.into() });
        }
        let fd = open_rw(path).map_err(|source| HypervisorError::Open {
            path: path.into(),
            source,
        })?;
        Ok(Privcmd { fd })
    }

    /// One hypercall, counted as `what`; Xen's negative return values come back as the
    /// errno they encode.
    pub fn hypercall(&self, what: &'static str, op: u64, args: [u64; 5]) -> io::Result<i64> {
        costs::count(what);
        let mut call = PrivcmdHypercall { op, arg: args };
        // SAFETY: IOCTL_PRIVCMD_HYPERCALL reads a privcmd_hypercall the size of `call`. Any
        // pointers among the arguments are HcallBuf addresses kept alive by the caller for the
        // duration of this synchronous call.
        let rc = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                IOCTL_PRIVCMD_HYPERCALL as libc::c_ulong,
                &mut call as *mut PrivcmdHypercall,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(rc as i64)
    }

    /// Maps the frames `frames` of `dom` (Xen's frame numbers: MFNs for PV guests, GFNs for
    /// translated ones) read-write, one page each, contiguously.
    ///
    /// On failure returns the ioctl's error or the first frame Xen refused with its errno.
    pub fn map_foreign(&self, dom: u16, frames: &[u64]) -> Result<Mapping, MapError> {
        costs::count("IOCTL_PRIVCMD_MMAPBATCH_V2");
        let num = u32::try_from(frames.len()).map_err(|_| MapError::TooMany(frames.len()))?;
        if num == 0 {
            return Err(MapError::TooMany(0));
        }
        let len = frames.len() * PAGE_SIZE;
        let ptr = mmap(len, libc::MAP_SHARED, self.fd.as_raw_fd()).map_err(MapError::Ioctl)?;
        // From here on `map` unmaps on every early return.
        let map = Mapping { ptr, len };
        let mut errs = vec![0i32; frames.len()];
        let mut arg = PrivcmdMmapBatchV2 {
            num,
            dom,
            _pad: 0,
            addr: ptr.as_ptr() as u64,
            arr: frames.as_ptr() as u64,
            err: errs.as_mut_ptr() as u64,
        };
        // SAFETY: the kernel reads `num` frame numbers from `frames`, writes `num` ints to
        // `errs` (both that long and alive across the call) and fills the VMA at `addr`, which
        // is the fresh privcmd mapping of num pages owned by `map`.
        let rc = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                IOCTL_PRIVCMD_MMAPBATCH_V2 as libc::c_ulong,
                &mut arg as *mut PrivcmdMmapBatchV2,
            )
        };
        let ioctl_err = (rc < 0).then(io::Error::last_os_error);
        if let Some((i, e)) = errs.iter().enumerate().find(|(_, e)| **e != 0) {
            return Err(MapError::Frame {
                index: i,
                frame: frames[i],
                source: io::Error::from_raw_os_error(-*e),
            });
        }
        if let Some(e) = ioctl_err {
            return Err(MapError::Ioctl(e));
        }
        Ok(map)
    }

    /// Maps `num` frames of a resource of `dom` (`XENMEM_acquire_resource` through privcmd).
    pub fn map_resource(
        &self,
        dom: u16,
        kind: u32,
        id: u32,
        idx: u32,
        num: usize,
    ) -> io::Result<Mapping> {
        costs::count("IOCTL_PRIVCMD_MMAP_RESOURCE");
        let len = num * PAGE_SIZE;
        let ptr = mmap(len, libc::MAP_SHARED, self.fd.as_raw_fd())?;
        let map = Mapping { ptr, len };
        let mut arg = PrivcmdMmapResource {
            dom,
            _pad: 0,
            kind,
            id,
            idx,
            num: num as u64,
            addr: ptr.as_ptr() as u64,
        };
        // SAFETY: the kernel fills the VMA at `addr` (the fresh privcmd mapping of num pages
        // owned by `map`) with the resource frames; `arg` is the size the ioctl expects.
        let rc = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                IOCTL_PRIVCMD_MMAP_RESOURCE as libc::c_ulong,
                &mut arg as *mut PrivcmdMmapResource,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(map)
    }
}

/// Why a foreign mapping failed.
#[derive(Debug)]
pub enum MapError {
    TooMany(usize),
    Ioctl(io::Error),
    Frame {
        index: usize,
        frame: u64,
        source: io::Error,
    },
}

/// Foreign memory mapped through privcmd; unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<c_void>,
    len: usize,
}

impl Mapping {
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr/len is a live shared mapping owned by self; guest frames may change
        // under us (the guest is paused while being built), which u8 tolerates.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast::<u8>(), self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in as_slice; &mut self makes this the only reference from this process.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().cast::<u8>(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len is exactly the mapping created by map_foreign/map_resource.
        unsafe { libc::munmap(self.ptr.as_ptr(), self.len) };
    }
}
