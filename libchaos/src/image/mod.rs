//! Kernel images: ELF64 x86_64 kernels (plain, gzip'd, or inside a bzImage) with their Xen ELF
//! notes, parsed once into an immutable [`KernelImage`] and cached by [`ImageCache`].
//!
//! Addresses are derived the way Xen's libelf does (libelf-dominfo.c): a segment's guest
//! address comes from its ELF `p_paddr`, shifted by `VIRT_BASE - PADDR_OFFSET` into the PV
//! kernel's virtual address space.

mod cache;
mod compress;
mod elf;
pub mod notes;

use std::path::{Path, PathBuf};

pub use cache::ImageCache;

/// The largest kernel or ramdisk file chaos reads: no guest boots from more (it is also the
/// most a kernel may decompress to).
pub const MAX_IMAGE: u64 = MAX_DECOMPRESSED;
const MAX_IMAGE_WHY: &str = "the largest image chaos reads";

/// Reads a kernel or ramdisk file: a regular file of at most `limit` bytes.
pub(crate) fn read_image(
    path: &Path,
    limit: u64,
    why: &'static str,
) -> Result<Vec<u8>, ImageError> {
    let (limit, why) = if limit > MAX_IMAGE {
        (MAX_IMAGE, MAX_IMAGE_WHY)
    } else {
        (limit, why)
    };
    crate::files::read_regular(path, limit, why).map_err(|source| match source {
        crate::files::ReadError::Io(source) => ImageError::Io {
            path: path.to_path_buf(),
            source,
        },
        source => ImageError::File {
            path: path.to_path_buf(),
            source,
        },
    })
}
pub use compress::MAX_DECOMPRESSED;
pub use notes::XenNotes;

/// How the kernel file was wrapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    Elf,
    GzipElf,
    BzImageXz,
    BzImageGzip,
}

/// What is wrong with an image (without the file name; [`ImageError`] adds it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageProblem {
    #[error("not an ELF file, a gzip'd ELF or a bzImage")]
    UnknownFormat,
    #[error("32-bit ELF not supported (chaos boots x86_64 kernels)")]
    Elf32,
    #[error("ELF for machine {0}, not x86_64 (62)")]
    NotX86_64(u16),
    #[error("malformed ELF: {0}")]
    BadElf(String),
    #[error("truncated: {what} at offset {offset:#x} (+{len:#x} bytes) runs past the end of the data ({file_len:#x} bytes)")]
    Truncated {
        what: String,
        offset: u64,
        len: u64,
        file_len: u64,
    },
    #[error("no loadable (PT_LOAD) segment")]
    NoLoadSegment,
    #[error("no Xen ELF notes: not a PV kernel")]
    NoXenNotes,
    #[error("Xen ELF note {name}: {reason}")]
    BadNote { name: &'static str, reason: String },
    #[error("not a PV kernel: {0}")]
    NotPv(String),
    #[error("not a PVH kernel: {0}")]
    NotPvh(String),
    #[error("bad addresses: {0}")]
    Layout(String),
    #[error("bzImage: {0}")]
    BzImage(String),
    #[error("{method} data is corrupt: {reason}")]
    Decompress {
        method: &'static str,
        reason: String,
    },
    #[error("decompresses to more than {limit} bytes")]
    TooLarge { limit: u64 },
}

/// An image that could not be loaded, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not a regular file, or larger than a kernel or ramdisk can be.
    #[error("{}: {source}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: crate::files::ReadError,
    },
    #[error("{}: {problem}", path.display())]
    Invalid {
        path: PathBuf,
        #[source]
        problem: ImageProblem,
    },
}

impl ImageError {
    /// The problem with the image's contents, if that is what failed.
    pub fn problem(&self) -> Option<&ImageProblem> {
        match self {
            ImageError::Invalid { problem, .. } => Some(problem),
            ImageError::Io { .. } | ImageError::File { .. } => None,
        }
    }
}

/// One PT_LOAD segment: its file contents ([`KernelImage::segment_data`]) are zero-filled up
/// to `memsz` when loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// ELF `p_paddr`.
    pub paddr: u64,
    /// ELF `p_vaddr` (informational: loaders place segments by `p_paddr`).
    pub vaddr: u64,
    pub memsz: u64,
    /// Where its contents are in the (decompressed) ELF bytes.
    pub file: std::ops::Range<usize>,
}

/// Where a PV kernel goes in its virtual address space (libelf's `elf_dom_parms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PvAddrs {
    /// Virtual address of guest pfn 0; the initial mapping starts here.
    pub virt_base: u64,
    pub paddr_offset: u64,
    /// Virtual range the kernel's segments occupy, `[virt_kstart, virt_kend)`.
    pub virt_kstart: u64,
    pub virt_kend: u64,
    pub virt_entry: u64,
    /// Virtual address of the page Xen fills with hypercall stubs, if the kernel wants one.
    pub hypercall_page: Option<u64>,
}

/// A parsed kernel: immutable, shared between creations through an `Arc`.
#[derive(Debug, Clone)]
pub struct KernelImage {
    /// The file it came from (for messages).
    pub name: String,
    pub format: ImageFormat,
    /// ELF `e_entry`.
    pub elf_entry: u64,
    /// Loadable segments, by ascending `paddr`.
    pub segments: Vec<Segment>,
    /// Lowest `p_paddr` and highest `p_paddr + p_memsz` of the segments.
    pub pstart: u64,
    pub pend: u64,
    pub notes: XenNotes,
    /// The PV view of the image, or why it cannot boot as PV.
    pub pv: Result<PvAddrs, ImageProblem>,
    /// The ELF file (decompressed), kept whole: segments are ranges of it, so a 60 MiB
    /// kernel is not copied again after it was read.
    elf: Vec<u8>,
}

impl KernelImage {
    /// Parses kernel bytes (ELF, gzip'd ELF or bzImage). `name` is used in messages.
    pub fn parse(name: &str, data: &[u8]) -> Result<KernelImage, ImageProblem> {
        Self::parse_owned(name, data.to_vec())
    }

    /// Like [`KernelImage::parse`], keeping `data` itself when it is a plain ELF file.
    pub fn parse_owned(name: &str, data: Vec<u8>) -> Result<KernelImage, ImageProblem> {
        let (bytes, format) = match compress::unwrap_kernel(&data)? {
            (std::borrow::Cow::Borrowed(_), format) => (None, format),
            (std::borrow::Cow::Owned(unpacked), format) => (Some(unpacked), format),
        };
        let bytes = bytes.unwrap_or(data);
        let elf = elf::Elf::parse(&bytes)?;

        let mut segments: Vec<Segment> = elf
            .loads
            .iter()
            .map(|h| {
                // `Elf::parse` checked that the segment lies inside the file.
                let start = h.offset as usize;
                let len = elf.load_bytes(h).len();
                Segment {
                    paddr: h.paddr,
                    vaddr: h.vaddr,
                    memsz: h.memsz,
                    file: start..start + len,
                }
            })
            .collect();
        if segments.is_empty() {
            return Err(ImageProblem::NoLoadSegment);
        }
        segments.sort_by_key(|s| s.paddr);
        let pstart = segments.iter().map(|s| s.paddr).min().unwrap_or(0);
        let mut pend = 0u64;
        for s in &segments {
            let end = s.paddr.checked_add(s.memsz).ok_or_else(|| {
                ImageProblem::Layout(format!(
                    "segment at {:#x} (+{:#x}) wraps the address space",
                    s.paddr, s.memsz
                ))
            })?;
            pend = pend.max(end);
        }
        if pend - pstart > MAX_DECOMPRESSED {
            return Err(ImageProblem::Layout(format!(
                "segments span {:#x} bytes (from {pstart:#x} to {pend:#x})",
                pend - pstart
            )));
        }

        // Notes from PT_NOTE segments; SHT_NOTE sections only if those hold no Xen note.
        let mut notes = XenNotes::from_notes(&elf.segment_notes()?)?;
        if notes.count == 0 {
            notes = XenNotes::from_notes(&elf.section_notes()?)?;
        }
        if notes.count == 0 {
            return Err(ImageProblem::NoXenNotes);
        }

        let mut image = KernelImage {
            name: name.to_string(),
            format,
            elf_entry: elf.entry,
            segments,
            pstart,
            pend,
            notes,
            pv: Err(ImageProblem::NoXenNotes),
            elf: Vec::new(),
        };
        image.pv = image.pv_addrs();
        // A kernel that is neither a valid PV kernel nor a PVH one is refused now, with the PV
        // reason (the more common expectation).
        if let (Err(e), None) = (&image.pv, image.notes.phys32_entry) {
            return Err(e.clone());
        }
        drop(elf);
        image.elf = bytes;
        Ok(image)
    }

    /// Reads and parses a kernel file (uncached; see [`ImageCache`]).
    pub fn from_file(path: &Path) -> Result<KernelImage, ImageError> {
        Self::from_file_within(path, MAX_IMAGE, MAX_IMAGE_WHY)
    }

    /// [`from_file`](Self::from_file), refusing files larger than `limit` bytes before reading
    /// them (`why` names the limit in the message).
    pub fn from_file_within(
        path: &Path,
        limit: u64,
        why: &'static str,
    ) -> Result<KernelImage, ImageError> {
        let data = read_image(path, limit, why)?;
        KernelImage::parse_owned(&path.display().to_string(), data).map_err(|problem| {
            ImageError::Invalid {
                path: path.to_path_buf(),
                problem,
            }
        })
    }

    /// The PV addresses, or why this kernel cannot boot as a PV guest.
    pub fn pv(&self) -> Result<&PvAddrs, ImageProblem> {
        self.pv.as_ref().map_err(Clone::clone)
    }

    /// The PVH entry point, if the kernel has one.
    pub fn phys32_entry(&self) -> Option<u32> {
        self.notes.phys32_entry
    }

    /// The file contents of one of this image's segments.
    pub fn segment_data(&self, s: &Segment) -> &[u8] {
        self.elf.get(s.file.clone()).unwrap_or(&[])
    }

    /// Bytes the image holds (what the cache keeps in memory).
    pub fn data_len(&self) -> usize {
        self.elf.len()
    }

    /// libelf's checks and address computation for a PV (non-HVM) guest.
    fn pv_addrs(&self) -> Result<PvAddrs, ImageProblem> {
        let n = &self.notes;
        let generic = n
            .loader
            .as_deref()
            .is_some_and(|l| l.starts_with("generic"));
        let linux = n
            .guest_os
            .as_deref()
            .is_some_and(|o| o.starts_with("linux"));
        if !generic && !linux {
            return Err(ImageProblem::NotPv(format!(
                "LOADER note is {:?} and GUEST_OS note is {:?}; Xen loads only LOADER \"generic\" or GUEST_OS \"linux\" PV kernels",
                n.loader.as_deref().unwrap_or(""),
                n.guest_os.as_deref().unwrap_or("")
            )));
        }
        if !n
            .xen_version
            .as_deref()
            .is_some_and(|v| v.starts_with("xen-3.0"))
        {
            return Err(ImageProblem::NotPv(format!(
                "XEN_VERSION note is {:?}, not \"xen-3.0\"",
                n.xen_version.as_deref().unwrap_or("")
            )));
        }
        if n.requires(notes::XENFEAT_AUTO_TRANSLATED_PHYSMAP) {
            return Err(ImageProblem::NotPv(
                "the kernel requires auto_translated_physmap (boot it as PVH)".into(),
            ));
        }
        if n.paddr_offset.is_some() && n.virt_base.is_none() {
            return Err(ImageProblem::BadNote {
                name: "PADDR_OFFSET",
                reason: "set while VIRT_BASE is not".into(),
            });
        }
        let virt_base = n.virt_base.unwrap_or(0);
        let paddr_offset = n.paddr_offset.unwrap_or(0);
        let virt_offset = virt_base.wrapping_sub(paddr_offset);
        let wrap = || {
            ImageProblem::Layout(format!(
                "segments {:#x}..{:#x} shifted by VIRT_BASE {virt_base:#x} - PADDR_OFFSET {paddr_offset:#x} wrap the address space",
                self.pstart, self.pend
            ))
        };
        let virt_kstart = self.pstart.wrapping_add(virt_offset);
        let virt_kend = self.pend.wrapping_add(virt_offset);
        if virt_kend < virt_kstart {
            return Err(wrap());
        }
        let virt_entry = n.entry.unwrap_or(self.elf_entry);
        if virt_base > virt_kstart {
            return Err(ImageProblem::Layout(format!(
                "kernel starts at {virt_kstart:#x}, below VIRT_BASE {virt_base:#x}"
            )));
        }
        if virt_entry < virt_kstart || virt_entry >= virt_kend {
            return Err(ImageProblem::Layout(format!(
                "entry point {virt_entry:#x} outside the kernel {virt_kstart:#x}..{virt_kend:#x}"
            )));
        }
        if virt_base & 0xfff != 0 {
            return Err(ImageProblem::Layout(format!(
                "VIRT_BASE {virt_base:#x} is not page aligned"
            )));
        }
        if let Some(h) = n.hypercall_page {
            if h < virt_kstart || h >= virt_kend {
                return Err(ImageProblem::Layout(format!(
                    "hypercall page {h:#x} outside the kernel {virt_kstart:#x}..{virt_kend:#x}"
                )));
            }
        }
        Ok(PvAddrs {
            virt_base,
            paddr_offset,
            virt_kstart,
            virt_kend,
            virt_entry,
            hypercall_page: n.hypercall_page,
        })
    }
}

/// Small synthetic PV kernels for tests and benches (not part of the stable API).
#[doc(hidden)]
pub mod testelf;

#[cfg(test)]
mod tests;
