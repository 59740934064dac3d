//! A fault-injecting [`Storage`] for tests: it writes through to the real file system, counts
//! every file-changing operation, can fail the N-th one (EIO or ENOSPC, once or forever) or
//! "crash" there (that operation and every later one fail, as if the process died), and can then
//! rewrite the directory to what a **power loss** would leave:
//!
//! - file contents roll back to their last fsync (never-synced files become empty), optionally
//!   keeping part of the unsynced tail of append-only files (a torn last write);
//! - creations, renames and deletions not followed by an fsync of their directory are undone
//!   (a created file vanishes, a renamed file returns to its old name, a deleted file whose
//!   contents were durable comes back).
//!
//! Files the storage never touched are taken to be durable as they are. This mirrors redb's crash
//! backend and RocksDB's fault-injection file system; the crash-point enumeration test in
//! `tests/it/reliability.rs` runs a workload, crashes at every operation index, applies power
//! loss, reopens and checks that exactly the durable prefix survived.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::io::storage::{RealStorage, Storage, WritableFile};

/// The error an injected fault returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// EIO: an I/O error.
    Eio,
    /// ENOSPC: the disk is full.
    Enospc,
}

impl FaultKind {
    fn error(self) -> std::io::Error {
        match self {
            FaultKind::Eio => std::io::Error::from_raw_os_error(5),
            FaultKind::Enospc => std::io::Error::from_raw_os_error(28),
        }
    }
}

/// How a power loss treats bytes appended after a file's last fsync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tear {
    /// Drop all of them.
    DropUnsynced,
    /// Keep the first half of them (a write torn in the middle).
    KeepHalf,
    /// Keep all of them (they happened to reach the disk).
    KeepAll,
}

#[derive(Clone, Debug)]
struct Track {
    /// Contents at the last fsync (`None`: never synced).
    durable: Option<Vec<u8>>,
    /// Whether the directory entry is durable.
    name_durable: bool,
}

#[derive(Clone, Debug)]
enum DirOp {
    Create(PathBuf),
    Rename { from: PathBuf, to: PathBuf, track: Option<Track> },
    Remove { path: PathBuf, track: Option<Track> },
}

impl DirOp {
    fn dir(&self) -> Option<&Path> {
        match self {
            DirOp::Create(p) | DirOp::Remove { path: p, .. } | DirOp::Rename { to: p, .. } => p.parent(),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    ops: u64,
    /// Fail operation N (1-based) with this fault; `true`: and every later one.
    fail: Option<(u64, FaultKind, bool)>,
    failing_forever: Option<FaultKind>,
    crash_at: Option<u64>,
    crashed: bool,
    files: HashMap<PathBuf, Track>,
    pending: Vec<DirOp>,
}

/// See the module docs.
#[derive(Debug, Clone, Default)]
pub struct FaultStorage {
    state: Arc<Mutex<State>>,
}

impl FaultStorage {
    /// A storage that passes everything through (until told otherwise).
    pub fn new() -> Self {
        Self::default()
    }

    /// Operations counted so far.
    pub fn ops(&self) -> u64 {
        self.state.lock().ops
    }

    /// Fails operation `n` (1-based, counting from now on the running total) with `kind`; with
    /// `forever`, every later operation fails too (a disk that stays full).
    pub fn fail_at(&self, n: u64, kind: FaultKind, forever: bool) {
        self.state.lock().fail = Some((n, kind, forever));
    }

    /// Operation `n` and every later one fail as if the process had died there.
    pub fn crash_at(&self, n: u64) {
        self.state.lock().crash_at = Some(n);
    }

    /// Whether the simulated crash happened.
    pub fn crashed(&self) -> bool {
        self.state.lock().crashed
    }

    /// Stops injecting faults (space was freed); the durability tracking continues.
    pub fn heal(&self) {
        let mut s = self.state.lock();
        s.fail = None;
        s.failing_forever = None;
    }

    /// Counts one operation and decides whether it fails.
    fn check(&self) -> std::io::Result<()> {
        let mut s = self.state.lock();
        s.ops += 1;
        if s.crashed {
            return Err(std::io::Error::other("simulated crash: the process is gone"));
        }
        if s.crash_at.is_some_and(|n| s.ops >= n) {
            s.crashed = true;
            return Err(std::io::Error::other("simulated crash: the process is gone"));
        }
        if let Some(kind) = s.failing_forever {
            return Err(kind.error());
        }
        if let Some((n, kind, forever)) = s.fail {
            if s.ops == n {
                if forever {
                    s.failing_forever = Some(kind);
                }
                return Err(kind.error());
            }
        }
        Ok(())
    }

    /// Rewrites the directory tree to what a power loss at this moment would leave (module docs),
    /// then treats the result as durable. Call after the collection handle was dropped.
    pub fn power_loss(&self, tear: Tear) -> std::io::Result<()> {
        let mut s = self.state.lock();
        // Undo directory operations that no directory fsync made durable, newest first.
        let pending = std::mem::take(&mut s.pending);
        for op in pending.into_iter().rev() {
            match op {
                DirOp::Create(path) => {
                    if s.files.get(&path).is_some_and(|t| !t.name_durable) {
                        let _ = std::fs::remove_file(&path);
                        s.files.remove(&path);
                    }
                }
                DirOp::Rename { from, to, track } => {
                    if to.exists() {
                        std::fs::rename(&to, &from)?;
                    }
                    let moved = s.files.remove(&to);
                    if let Some(t) = moved.or(track) {
                        s.files.insert(from, t);
                    }
                }
                DirOp::Remove { path, track } => {
                    if let Some(t) = track.filter(|t| t.name_durable) {
                        std::fs::write(&path, t.durable.as_deref().unwrap_or(&[]))?;
                        s.files.insert(path, t);
                    }
                }
            }
        }
        // Roll contents back to their last fsync.
        for (path, track) in s.files.iter_mut() {
            if !path.exists() {
                continue;
            }
            let now = std::fs::read(path)?;
            let durable = track.durable.clone().unwrap_or_default();
            let keep = if now.starts_with(&durable) {
                let extra = now.len() - durable.len();
                match tear {
                    Tear::DropUnsynced => 0,
                    Tear::KeepHalf => extra / 2,
                    Tear::KeepAll => extra,
                }
            } else {
                0
            };
            let mut result = durable;
            result.extend_from_slice(&now[result.len()..result.len() + keep]);
            std::fs::write(path, &result)?;
            track.durable = Some(result);
            track.name_durable = true;
        }
        s.crashed = false;
        s.crash_at = None;
        s.fail = None;
        s.failing_forever = None;
        Ok(())
    }
}

struct FaultFile {
    path: PathBuf,
    inner: Arc<dyn WritableFile>,
    storage: FaultStorage,
}

impl WritableFile for FaultFile {
    fn append(&self, buf: &[u8]) -> std::io::Result<()> {
        self.storage.check()?;
        self.inner.append(buf)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.storage.check()?;
        self.inner.write_at(buf, offset)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.inner.read_at(buf, offset)
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.storage.check()?;
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> std::io::Result<()> {
        self.sync_all()
    }

    fn sync_all(&self) -> std::io::Result<()> {
        self.storage.check()?;
        self.inner.sync_all()?;
        let contents = std::fs::read(&self.path)?;
        let mut s = self.storage.state.lock();
        let track = s.files.entry(self.path.clone()).or_insert(Track { durable: None, name_durable: true });
        track.durable = Some(contents);
        Ok(())
    }
}

impl Storage for FaultStorage {
    fn create(&self, path: &Path) -> std::io::Result<Arc<dyn WritableFile>> {
        self.check()?;
        let existed = path.exists();
        let inner = RealStorage.create(path)?;
        let mut s = self.state.lock();
        if !existed {
            s.files.insert(path.to_path_buf(), Track { durable: None, name_durable: false });
            s.pending.push(DirOp::Create(path.to_path_buf()));
        }
        drop(s);
        Ok(Arc::new(FaultFile { path: path.to_path_buf(), inner, storage: self.clone() }))
    }

    fn open_writable(&self, path: &Path) -> std::io::Result<Arc<dyn WritableFile>> {
        self.check()?;
        let inner = RealStorage.open_writable(path)?;
        Ok(Arc::new(FaultFile { path: path.to_path_buf(), inner, storage: self.clone() }))
    }

    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.check()?;
        RealStorage.rename(from, to)?;
        let mut s = self.state.lock();
        let track = s.files.remove(from);
        // A file never seen before is durable as it is.
        let moved = track.clone().unwrap_or(Track { durable: std::fs::read(to).ok(), name_durable: true });
        s.files.insert(to.to_path_buf(), Track { name_durable: false, ..moved });
        s.pending.push(DirOp::Rename { from: from.to_path_buf(), to: to.to_path_buf(), track });
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        self.check()?;
        let track = {
            let s = self.state.lock();
            s.files.get(path).cloned()
        }
        .or_else(|| Some(Track { durable: std::fs::read(path).ok(), name_durable: true }));
        RealStorage.remove_file(path)?;
        let mut s = self.state.lock();
        s.files.remove(path);
        s.pending.push(DirOp::Remove { path: path.to_path_buf(), track });
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        self.check()?;
        RealStorage.sync_dir(dir)?;
        let mut s = self.state.lock();
        let (durable, rest): (Vec<DirOp>, Vec<DirOp>) =
            std::mem::take(&mut s.pending).into_iter().partition(|op| op.dir() == Some(dir));
        s.pending = rest;
        for op in durable {
            match op {
                DirOp::Create(p) | DirOp::Rename { to: p, .. } => {
                    if let Some(t) = s.files.get_mut(&p) {
                        t.name_durable = true;
                    }
                }
                DirOp::Remove { .. } => {}
            }
        }
        Ok(())
    }

    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        self.check()?;
        RealStorage.create_dir_all(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("quiverdb-fault-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn power_loss_keeps_exactly_what_was_synced() {
        let d = dir("sync");
        let fs = FaultStorage::new();
        let a = d.join("a");
        let f = fs.create(&a).unwrap();
        f.append(b"hello").unwrap();
        f.sync_all().unwrap();
        fs.sync_dir(&d).unwrap();
        f.append(b" world").unwrap();
        let b = d.join("b");
        let g = fs.create(&b).unwrap();
        g.append(b"never synced name").unwrap();
        g.sync_all().unwrap();
        fs.power_loss(Tear::DropUnsynced).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"hello");
        assert!(!b.exists(), "a creation without a directory fsync is lost");
    }

    #[test]
    fn torn_tail_and_unsynced_rename() {
        let d = dir("tear");
        let fs = FaultStorage::new();
        let a = d.join("a");
        let f = fs.create(&a).unwrap();
        f.append(b"1234").unwrap();
        f.sync_all().unwrap();
        fs.sync_dir(&d).unwrap();
        f.append(b"abcdef").unwrap();
        fs.rename(&a, &d.join("c")).unwrap();
        fs.power_loss(Tear::KeepHalf).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"1234abc", "rename undone, half the unsynced bytes kept");
        assert!(!d.join("c").exists());
    }

    #[test]
    fn injected_errors_and_crash() {
        let d = dir("errors");
        let fs = FaultStorage::new();
        fs.fail_at(2, FaultKind::Enospc, false);
        let f = fs.create(&d.join("x")).unwrap();
        assert_eq!(f.append(b"x").unwrap_err().raw_os_error(), Some(28));
        f.append(b"y").unwrap();
        fs.crash_at(fs.ops() + 2);
        f.append(b"z").unwrap();
        assert!(f.sync_all().is_err() && fs.crashed());
        assert!(f.append(b"w").is_err(), "nothing runs after a crash");
    }
}
