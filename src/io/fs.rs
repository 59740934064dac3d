//! Durable publication of new files (tantivy's `atomic_write`, fjall's `fsync_directory`).
//!
//! A file becomes visible under its final name only complete and durable:
//! 1. write it as `<name>.tmp` in the same directory;
//! 2. fsync the file (its data and length are on disk);
//! 3. rename `<name>.tmp` → `<name>` (atomic within a directory);
//! 4. fsync the directory (the rename itself is on disk).
//!
//! Crash reasoning: before step 3 only a `.tmp` file exists, which recovery deletes as an orphan;
//! after step 3 but before 4, power loss may undo the rename (the file is back to `.tmp` or gone),
//! which is why nothing may reference the new name (no catalog commit) until step 4 returned; after
//! step 4 the file is durable under its final name. A published file is never opened for writing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::io::storage::{Storage, WritableFile};

/// The temporary name a file is written under before publication.
pub fn tmp_path(final_path: &Path) -> PathBuf {
    let mut name = final_path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".tmp");
    final_path.with_file_name(name)
}

/// Creates (truncating any stale leftover) the temporary file for `final_path`.
pub fn create_tmp(storage: &dyn Storage, final_path: &Path) -> Result<(PathBuf, Arc<dyn WritableFile>)> {
    let tmp = tmp_path(final_path);
    let file = storage.create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    Ok((tmp, file))
}

/// Steps 2–4: fsync `file` (written at `tmp`), rename it to `final_path`, fsync the directory.
/// Refuses to replace an existing `final_path` (published files are never overwritten).
pub fn publish(storage: &dyn Storage, file: Arc<dyn WritableFile>, tmp: &Path, final_path: &Path) -> Result<()> {
    file.sync_all().map_err(|e| Error::io(tmp, e))?;
    drop(file);
    if final_path.exists() {
        return Err(Error::io(
            final_path,
            std::io::Error::new(std::io::ErrorKind::AlreadyExists, "refusing to overwrite a published file"),
        ));
    }
    storage.rename(tmp, final_path).map_err(|e| Error::io(final_path, e))?;
    sync_dir(storage, final_path.parent().unwrap_or(Path::new(".")))
}

/// fsyncs a directory, making renames and creations in it durable.
pub fn sync_dir(storage: &dyn Storage, dir: &Path) -> Result<()> {
    storage.sync_dir(dir).map_err(|e| Error::io(dir, e))
}

/// Total bytes of the regular files under `path`, recursively (0 for what cannot be read).
pub fn tree_bytes(path: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            if let Ok(meta) = entry.metadata() {
                total += if meta.is_dir() { tree_bytes(&entry.path()) } else { meta.len() };
            }
        }
    }
    total
}

fn proc_status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .unwrap_or(0)
}

/// This process's resident memory in bytes (`VmRSS`; 0 where `/proc` is unavailable).
pub fn resident_bytes() -> u64 {
    proc_status_kib("VmRSS:") * 1024
}

/// This process's peak resident memory in bytes (`VmHWM`; 0 where `/proc` is unavailable).
pub fn peak_resident_bytes() -> u64 {
    proc_status_kib("VmHWM:") * 1024
}

/// Bytes an unprivileged process may still write on the file system holding `path`, or `None` when
/// the file system cannot say.
pub fn available_bytes(path: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(path).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::storage::RealStorage;

    #[test]
    fn publish_renames_and_refuses_overwrite() {
        let dir = std::env::temp_dir().join(format!("quiverdb-fs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("seg-1.qseg");
        let _ = std::fs::remove_file(&target);
        let (tmp, file) = create_tmp(&RealStorage, &target).unwrap();
        assert!(tmp.to_string_lossy().ends_with("seg-1.qseg.tmp"));
        file.append(b"data").unwrap();
        publish(&RealStorage, file, &tmp, &target).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"data");
        assert!(!tmp.exists());
        let (tmp, file) = create_tmp(&RealStorage, &target).unwrap();
        assert!(publish(&RealStorage, file, &tmp, &target).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
