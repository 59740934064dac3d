//! Helpers shared by the integration tests.

use std::path::PathBuf;

/// The shared sample dataset, if this machine has it (`QUIVERDB_SCIFACT_MINI` overrides the
/// default `../shared/data/scifact-mini` next to the repository). Tests that use it say so when
/// it is absent; the suite never needs it to pass.
pub fn scifact_mini() -> Option<PathBuf> {
    let path = std::env::var_os("QUIVERDB_SCIFACT_MINI")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/scifact-mini"));
    if path.join("docs.npy").exists() {
        Some(path)
    } else {
        eprintln!("note: {} not found; real-data checks skipped", path.display());
        None
    }
}

/// A fresh temporary directory under the target directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
