//! Parsed kernels and ramdisks, cached by file identity so that repeated creations of the same
//! guest neither re-read nor re-parse its image.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{ImageError, KernelImage, MAX_IMAGE};

/// What identifies one version of a file: if any of it changes, the file is read again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
    ctime: i64,
    ctime_nsec: i64,
}

impl FileKey {
    /// The identity of the regular file at `path`, if it is one of at most `limit` bytes: a
    /// cached image is refused by the same rules as a file read now.
    fn of(path: &Path, limit: u64, why: &'static str) -> Result<FileKey, ImageError> {
        let m = std::fs::metadata(path).map_err(|source| ImageError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if !m.is_file() || m.len() > limit.min(MAX_IMAGE) {
            // The reader's error says which rule, with the reader's words.
            super::read_image(path, limit, why)?;
        }
        Ok(FileKey {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
            ctime: m.ctime(),
            ctime_nsec: m.ctime_nsec(),
        })
    }
}

type Table<T> = Mutex<HashMap<PathBuf, (FileKey, Arc<T>)>>;

/// Thread-safe cache of kernels and ramdisks, keyed by path and checked against the file's
/// inode, size, mtime and ctime on every lookup (one `stat`). Entries are kept until
/// [`ImageCache::clear`]; a changed file replaces its entry.
#[derive(Debug, Default)]
pub struct ImageCache {
    kernels: Table<KernelImage>,
    ramdisks: Table<Vec<u8>>,
}

/// Locks a table; a poisoned lock only means another thread panicked mid-insert of a complete
/// value, so the map is still consistent.
fn lock<T: ?Sized>(t: &Table<T>) -> MutexGuard<'_, HashMap<PathBuf, (FileKey, Arc<T>)>> {
    t.lock().unwrap_or_else(|p| p.into_inner())
}

fn cached<T: ?Sized>(
    table: &Table<T>,
    path: &Path,
    (limit, why): (u64, &'static str),
    load: impl FnOnce() -> Result<Arc<T>, ImageError>,
) -> Result<Arc<T>, ImageError> {
    let key = FileKey::of(path, limit, why)?;
    if let Some((k, v)) = lock(table).get(path) {
        if *k == key {
            return Ok(v.clone());
        }
    }
    // Parse outside the lock: loading one big kernel must not stall lookups of others.
    let value = load()?;
    // Keyed by the identity seen before reading: if the file changed meanwhile, the next
    // lookup sees a different key and reads it again. Another thread may have loaded the same
    // version meanwhile: its entry stays, so every caller holds one value per version (warm
    // shells compare their image with the cache's by identity).
    let mut table = lock(table);
    match table.get(path) {
        Some((k, v)) if *k == key => Ok(v.clone()),
        _ => {
            table.insert(path.to_path_buf(), (key, value.clone()));
            Ok(value)
        }
    }
}

impl ImageCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// The parsed kernel at `path`, read and parsed only if not cached or changed on disk.
    pub fn load(&self, path: &Path) -> Result<Arc<KernelImage>, ImageError> {
        self.load_within(path, MAX_IMAGE, "the largest image chaos reads")
    }

    /// [`load`](Self::load) for a guest: a file larger than `limit` bytes (its memory) cannot
    /// boot in it and is refused before it is read.
    pub fn load_within(
        &self,
        path: &Path,
        limit: u64,
        why: &'static str,
    ) -> Result<Arc<KernelImage>, ImageError> {
        cached(&self.kernels, path, (limit, why), || {
            KernelImage::from_file_within(path, limit, why).map(Arc::new)
        })
    }

    /// The ramdisk at `path`, as is (the guest decompresses it).
    pub fn load_ramdisk(&self, path: &Path) -> Result<Arc<Vec<u8>>, ImageError> {
        self.load_ramdisk_within(path, MAX_IMAGE, "the largest image chaos reads")
    }

    /// [`load_ramdisk`](Self::load_ramdisk) with the limit of [`load_within`](Self::load_within).
    pub fn load_ramdisk_within(
        &self,
        path: &Path,
        limit: u64,
        why: &'static str,
    ) -> Result<Arc<Vec<u8>>, ImageError> {
        cached(&self.ramdisks, path, (limit, why), || {
            super::read_image(path, limit, why).map(Arc::new)
        })
    }

    /// Number of cached kernels and ramdisks.
    pub fn len(&self) -> usize {
        lock(&self.kernels).len() + lock(&self.ramdisks).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every entry (images still in use stay alive through their `Arc`s).
    pub fn clear(&self) {
        lock(&self.kernels).clear();
        lock(&self.ramdisks).clear();
    }
}
