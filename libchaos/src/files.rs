//! Reading the files a user names (kernels, ramdisks, configs): regular files only, and never
//! more than a limit. A FIFO, a device or a directory is refused before anything is read (a
//! FIFO would block the reader forever, `/dev/zero` would never end), and a file larger than
//! the limit is refused by its size, before it is read.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Why a file was not read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("a {0}, not a regular file")]
    NotRegular(&'static str),
    #[error("{size} bytes is too large ({why} is {limit} bytes)")]
    TooLarge {
        size: u64,
        limit: u64,
        why: &'static str,
    },
}

/// What a file that is not a regular one is, for messages.
fn kind_of(t: std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

/// The size of the regular file at `path`, or why it is not one (follows symlinks).
pub fn regular_size(path: &Path) -> Result<u64, ReadError> {
    let m = std::fs::metadata(path)?;
    if !m.is_file() {
        return Err(ReadError::NotRegular(kind_of(m.file_type())));
    }
    Ok(m.len())
}

/// Reads the regular file at `path`, at most `limit` bytes (`why` says what the limit is, for
/// the message). Opening does not block (O_NONBLOCK), the type is checked on the open file,
/// so a file swapped for a FIFO after a check is refused too.
pub fn read_regular(path: &Path, limit: u64, why: &'static str) -> Result<Vec<u8>, ReadError> {
    let mut file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let m = file.metadata()?;
    if !m.is_file() {
        return Err(ReadError::NotRegular(kind_of(m.file_type())));
    }
    let too_large = |size| ReadError::TooLarge { size, limit, why };
    if m.len() > limit {
        return Err(too_large(m.len()));
    }
    let mut data = Vec::with_capacity(usize::try_from(m.len()).unwrap_or(0));
    // The file may grow while it is read: never past the limit.
    (&mut file).take(limit + 1).read_to_end(&mut data)?;
    if data.len() as u64 > limit {
        return Err(too_large(data.len() as u64));
    }
    Ok(data)
}
