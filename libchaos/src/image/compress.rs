//! Unwrapping the kernels people hand to `xl`: plain ELF, gzip'd ELF, and x86 bzImages (Debian's
//! vmlinuz) whose payload is an xz- or gzip-compressed ELF (x86 boot protocol >= 2.08).

use std::io::Read;

use super::elf::{read_u16, read_u32, MAGIC as ELF_MAGIC};
use super::{ImageFormat, ImageProblem};

/// No kernel or ramdisk we boot decompresses to more than this; larger output is treated as a
/// malformed (or hostile) file rather than allowed to exhaust memory.
pub const MAX_DECOMPRESSED: u64 = 1 << 30;

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];

/// Returns the ELF bytes inside `data` and the wrapping it had.
pub fn unwrap_kernel(
    data: &[u8],
) -> Result<(std::borrow::Cow<'_, [u8]>, ImageFormat), ImageProblem> {
    if data.starts_with(ELF_MAGIC) {
        return Ok((data.into(), ImageFormat::Elf));
    }
    if data.starts_with(GZIP_MAGIC) {
        let elf = gunzip(data)?;
        if !elf.starts_with(ELF_MAGIC) {
            return Err(ImageProblem::UnknownFormat);
        }
        return Ok((elf.into(), ImageFormat::GzipElf));
    }
    if let Some(payload) = bzimage_payload(data)? {
        let (elf, format) = if payload.starts_with(XZ_MAGIC) {
            (unxz(payload)?, ImageFormat::BzImageXz)
        } else if payload.starts_with(GZIP_MAGIC) {
            (gunzip(payload)?, ImageFormat::BzImageGzip)
        } else {
            return Err(ImageProblem::BzImage(format!(
                "payload compressed with {}: only gzip and xz are supported",
                compression_name(payload)
            )));
        };
        if !elf.starts_with(ELF_MAGIC) {
            return Err(ImageProblem::BzImage("payload is not an ELF file".into()));
        }
        return Ok((elf.into(), format));
    }
    Err(ImageProblem::UnknownFormat)
}

fn compression_name(p: &[u8]) -> &'static str {
    if p.starts_with(b"BZh") {
        "bzip2"
    } else if p.starts_with(&[0x5d, 0x00]) {
        "lzma"
    } else if p.starts_with(&[0x89, b'L', b'Z', b'O']) {
        "lzo"
    } else if p.starts_with(&[0x02, 0x21, 0x4c, 0x18]) {
        "lz4"
    } else if p.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        "zstd"
    } else {
        "an unknown method"
    }
}

/// The compressed payload of an x86 bzImage, `None` if `data` is not one.
fn bzimage_payload(data: &[u8]) -> Result<Option<&[u8]>, ImageProblem> {
    // Setup header fields (Documentation/arch/x86/boot.rst).
    const SETUP_SECTS: usize = 0x1f1;
    const HEADER: usize = 0x202;
    const VERSION: usize = 0x206;
    const PAYLOAD_OFFSET: usize = 0x248;
    const PAYLOAD_LENGTH: usize = 0x24c;
    if data.get(HEADER..HEADER + 4) != Some(b"HdrS") {
        return Ok(None);
    }
    let version = read_u16(data, VERSION).unwrap_or(0);
    if version < 0x208 {
        return Err(ImageProblem::BzImage(format!(
            "boot protocol {}.{:02} has no payload fields (2.08 or later needed)",
            version >> 8,
            version & 0xff
        )));
    }
    let sects = match data[SETUP_SECTS] {
        0 => 4,
        n => n as u64,
    };
    let (offset, length) = match (
        read_u32(data, PAYLOAD_OFFSET),
        read_u32(data, PAYLOAD_LENGTH),
    ) {
        (Some(o), Some(l)) => (o as u64, l as u64),
        _ => return Err(ImageProblem::BzImage("setup header truncated".into())),
    };
    let start = (sects + 1) * 512 + offset;
    let end = start + length;
    match data.get(start as usize..end as usize) {
        Some(p) => Ok(Some(p)),
        None => Err(ImageProblem::Truncated {
            what: "bzImage payload".into(),
            offset: start,
            len: length,
            file_len: data.len() as u64,
        }),
    }
}

/// Reads everything `r` yields, refusing more than [`MAX_DECOMPRESSED`] bytes.
fn read_capped(r: impl Read, what: &'static str) -> Result<Vec<u8>, ImageProblem> {
    let mut out = Vec::new();
    r.take(MAX_DECOMPRESSED + 1)
        .read_to_end(&mut out)
        .map_err(|e| ImageProblem::Decompress {
            method: what,
            reason: e.to_string(),
        })?;
    if out.len() as u64 > MAX_DECOMPRESSED {
        return Err(ImageProblem::TooLarge {
            limit: MAX_DECOMPRESSED,
        });
    }
    Ok(out)
}

/// Decompresses one gzip member (trailing bytes, like the size Linux appends, are ignored).
pub fn gunzip(data: &[u8]) -> Result<Vec<u8>, ImageProblem> {
    read_capped(flate2::read::GzDecoder::new(data), "gzip")
}

/// Decompresses one xz stream, BCJ filters included (Linux kernels use the x86 one).
pub fn unxz(data: &[u8]) -> Result<Vec<u8>, ImageProblem> {
    use xz4rust::{XzDecoder, XzNextBlockResult};
    let err = |reason: String| ImageProblem::Decompress {
        method: "xz",
        reason,
    };
    // Start with a 1 MiB dictionary, let it grow to what the stream declares, up to 128 MiB
    // (kernels use 32 MiB at most).
    let mut dec = XzDecoder::in_heap_with_alloc_dict_size(1 << 20, 128 << 20);
    let mut out = Vec::with_capacity(data.len().saturating_mul(4));
    let mut chunk = vec![0u8; 1 << 20];
    let mut input = data;
    loop {
        match dec.decode(input, &mut chunk) {
            Ok(XzNextBlockResult::NeedMoreData(used, produced)) => {
                out.extend_from_slice(&chunk[..produced]);
                input = &input[used.min(input.len())..];
                if used == 0 && produced == 0 {
                    return Err(err("stream ends early (truncated)".into()));
                }
            }
            Ok(XzNextBlockResult::EndOfStream(_, produced)) => {
                out.extend_from_slice(&chunk[..produced]);
                break;
            }
            Err(e) => return Err(err(e.to_string())),
        }
        if out.len() as u64 > MAX_DECOMPRESSED {
            return Err(ImageProblem::TooLarge {
                limit: MAX_DECOMPRESSED,
            });
        }
    }
    Ok(out)
}
