//! The storage trait: every operation of the engine that changes files — creating, writing,
//! syncing, truncating, renaming, deleting, syncing directories — goes through [`Storage`], so
//! tests can substitute [`crate::io::fault::FaultStorage`], which fails chosen operations and
//! simulates power loss (redb's crash backend, RocksDB's fault-injection file system).
//!
//! Reads of published files (memory maps of immutable segments and WAL files, directory
//! listings) use the OS directly: they change nothing, and the corruption tests exercise them by
//! damaging the bytes themselves.

use std::fs::{File, OpenOptions};
use std::io::Write;
#[cfg(unix)]
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// A file open for writing. Methods take `&self` so one handle can be appended to by one thread
/// while another fsyncs it (the WAL's group commit).
pub trait WritableFile: Send + Sync {
    /// Appends `buf` at the end of the file (all of it, or an error).
    fn append(&self, buf: &[u8]) -> std::io::Result<()>;
    /// Writes `buf` at `offset`.
    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()>;
    /// Fills `buf` from `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
    /// Truncates or extends the file to `len` bytes.
    fn set_len(&self, len: u64) -> std::io::Result<()>;
    /// fdatasync: the file's data (and the length it needs) are durable.
    fn sync_data(&self) -> std::io::Result<()>;
    /// fsync: data and metadata are durable.
    fn sync_all(&self) -> std::io::Result<()>;
}

/// File-changing operations. See the module docs.
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// Creates `path` (truncating any existing file) for reading and writing.
    fn create(&self, path: &Path) -> std::io::Result<Arc<dyn WritableFile>>;
    /// Opens an existing file for writing; `append` continues at its end (e.g. to truncate a torn
    /// tail, or extend a file).
    fn open_writable(&self, path: &Path) -> std::io::Result<Arc<dyn WritableFile>>;
    /// Renames `from` to `to` (atomic within a directory).
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()>;
    /// Deletes a file.
    fn remove_file(&self, path: &Path) -> std::io::Result<()>;
    /// fsyncs a directory: creations, renames and deletions in it become durable.
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()>;
    /// Creates a directory and its parents.
    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()>;
}

/// The operating system's file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealStorage;

/// The shared real storage.
pub fn real() -> Arc<dyn Storage> {
    Arc::new(RealStorage)
}

struct RealFile(File);

impl WritableFile for RealFile {
    fn append(&self, buf: &[u8]) -> std::io::Result<()> {
        (&self.0).write_all(buf)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.0.write_all_at(buf, offset)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> std::io::Result<()> {
        self.0.sync_data()
    }

    fn sync_all(&self) -> std::io::Result<()> {
        self.0.sync_all()
    }
}

impl Storage for RealStorage {
    fn create(&self, path: &Path) -> std::io::Result<Arc<dyn WritableFile>> {
        let f = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path)?;
        Ok(Arc::new(RealFile(f)))
    }

    fn open_writable(&self, path: &Path) -> std::io::Result<Arc<dyn WritableFile>> {
        use std::io::Seek;
        let mut f = OpenOptions::new().read(true).write(true).open(path)?;
        // `append` continues at the end (not O_APPEND, which would also move `write_at`).
        f.seek(std::io::SeekFrom::End(0))?;
        Ok(Arc::new(RealFile(f)))
    }

    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
        File::open(dir)?.sync_all()
    }

    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)
    }
}
