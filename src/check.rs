//! Offline verification of a collection directory (`quiver verify`): every checksum of every
//! segment, the catalog against the files (missing, orphan, size and count mismatches, id map
//! entries that point at the wrong document), and the WAL's readability — all read-only: the
//! catalog is opened read-only, nothing is deleted or truncated, so a damaged collection can be
//! examined before anything repairs it.
//!
//! Problems are collected, not stopped at: the report lists every one found. Orphans and a torn
//! WAL tail are what a crash legitimately leaves (the next open cleans them) and are reported as
//! notes, not problems.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::catalog::Catalog;
use crate::encode::fde::FdeEncoder;
use crate::error::{Error, Result};
use crate::recovery::{open_manifest_segment, CATALOG_DIR, SEGMENTS_DIR, WAL_DIR};
use crate::segment::{self, LiveBits, SegmentReader, TokenBooks};
use crate::snapshot::Version;
use crate::wal::{self, WalRecovery};

/// What verification found.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct VerifyReport {
    /// Segments named by the catalog.
    pub segments: u64,
    /// Bytes of segment files whose checksums were checked.
    pub segment_bytes_checked: u64,
    /// Documents the id map holds.
    pub documents: u64,
    /// WAL files read.
    pub wal_files: u64,
    /// WAL records after the checkpoint (what the next open replays).
    pub wal_records_to_replay: u64,
    /// Damage: each entry names the file and what is wrong. Empty: the collection is sound.
    pub problems: Vec<String>,
    /// Leftovers a crash legitimately leaves and the next open cleans up.
    pub notes: Vec<String>,
}

impl VerifyReport {
    /// True when no problem was found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

/// Verifies the collection at `path` without modifying it. Errors only when verification cannot
/// start (not a collection, locked by a writer, catalog unreadable); damage is in the report.
pub fn verify_collection(path: &Path) -> Result<VerifyReport> {
    if !path.join(CATALOG_DIR).join("CURRENT").exists() {
        return Err(Error::NotACollection { path: path.to_path_buf(), reason: "it has no catalog".into() });
    }
    // A writer may be changing files while we read them: then verify what a read-only handle sees
    // (one consistent state) instead of judging files the writer is mid-way through changing.
    let lock = match crate::recovery::lock_collection(path) {
        Ok(lock) => lock,
        Err(Error::Locked { .. }) => return verify_beside_writer(path),
        Err(e) => return Err(e),
    };
    let catalog = Catalog::open_read_only(&path.join(CATALOG_DIR))?;
    let mut report = VerifyReport::default();
    let options = catalog.options()?;
    let encoder = FdeEncoder::new(options.fde)
        .map_err(|e| Error::corruption(catalog.path(), 0, format!("stored FDE parameters: {e}")))?;
    let checkpoint = catalog.checkpoint()?;
    let records = catalog.segments()?;
    report.segments = records.len() as u64;

    let seg_dir = path.join(SEGMENTS_DIR);
    let mut readers: HashMap<u64, (SegmentReader, LiveBits)> = HashMap::new();
    for rec in &records {
        let reader = match open_manifest_segment(&seg_dir, rec, &encoder, &TokenBooks::new()) {
            Ok(r) => r,
            Err(e) => {
                report.problems.push(e.to_string());
                continue;
            }
        };
        match reader.verify() {
            Ok(()) => report.segment_bytes_checked += reader.file_len(),
            Err(e) => report.problems.push(e.to_string()),
        }
        let n = reader.doc_count();
        readers.insert(rec.id, (reader, LiveBits::none(n)));
    }

    // Files the catalog does not name.
    let named: HashSet<u64> = records.iter().map(|r| r.id).collect();
    match std::fs::read_dir(&seg_dir) {
        Ok(entries) => {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !segment::parse_file_name(&name).is_some_and(|id| named.contains(&id)) {
                    report.notes.push(format!(
                        "{}: not named by the catalog (left by an interrupted flush or merge; the next open deletes it)",
                        display(&entry.path())
                    ));
                }
            }
        }
        Err(e) => report.problems.push(format!("{}: {e}", display(&seg_dir))),
    }

    // The id map: every entry points at a distinct ordinal holding that id.
    let mut bad_ids = 0u64;
    catalog.for_each_location(|id, loc| {
        report.documents += 1;
        let problem = match readers.get_mut(&loc.segment) {
            None if named.contains(&loc.segment) => None, // the segment's own problem is reported
            None => Some(format!("points at segment {} which the catalog does not list", loc.segment)),
            Some((reader, live)) => {
                if loc.ordinal as usize >= reader.doc_count() {
                    Some(format!("points past the end of segment {} (ordinal {})", loc.segment, loc.ordinal))
                } else if reader.doc_ids()[loc.ordinal as usize] != id {
                    Some(format!(
                        "points at ordinal {} of segment {}, which holds id {}",
                        loc.ordinal,
                        loc.segment,
                        reader.doc_ids()[loc.ordinal as usize]
                    ))
                } else if live.is_live(loc.ordinal) {
                    Some(format!("shares ordinal {} of segment {} with another id", loc.ordinal, loc.segment))
                } else {
                    live.set(loc.ordinal);
                    None
                }
            }
        };
        if let Some(p) = problem {
            bad_ids += 1;
            if bad_ids <= 20 {
                report.problems.push(format!("{}: id {id} {p}", display(catalog.path())));
            }
        }
        Ok(())
    })?;
    if bad_ids > 20 {
        report.problems.push(format!("{}: {} more bad id entries", display(catalog.path()), bad_ids - 20));
    }

    // The recorded dead ordinals (what `open` builds the live sets from) must be exactly the
    // ordinals the id map does not point at.
    if catalog.tracks_dead()? {
        let mut ids: Vec<&u64> = readers.keys().collect();
        ids.sort();
        for id in ids {
            let (reader, live) = &readers[id];
            let dead = catalog.dead_ordinals(*id)?;
            let mut wrong = 0u64;
            let mut first = None;
            for ordinal in 0..reader.doc_count() as u32 {
                let recorded_dead = dead.binary_search(&ordinal).is_ok();
                if recorded_dead == live.is_live(ordinal) {
                    wrong += 1;
                    first.get_or_insert(ordinal);
                }
            }
            wrong += dead.iter().filter(|&&o| o as usize >= reader.doc_count()).count() as u64;
            if wrong > 0 {
                report.problems.push(format!(
                    "{}: segment {id}: {wrong} ordinals whose recorded dead state disagrees with the id map (first: {first:?})",
                    display(catalog.path())
                ));
            }
        }
    } else {
        report.notes.push(format!(
            "{}: the catalog predates dead tracking; the next writing open records the dead ordinals",
            display(catalog.path())
        ));
    }

    // The WAL, read as the next open would, without repairing anything.
    let wal_dir = path.join(WAL_DIR);
    match wal::replay(&wal_dir, checkpoint, WalRecovery::Strict, None, |_| Ok(())) {
        Ok(r) => {
            report.wal_files = r.files as u64;
            report.wal_records_to_replay = r.applied;
            if r.torn_tail_bytes > 0 {
                report.notes.push(format!(
                    "{}: the last WAL file ends in {} bytes of an incomplete record (a write cut by a crash; the next open cuts it)",
                    display(&wal_dir),
                    r.torn_tail_bytes
                ));
            }
        }
        Err(e) => report.problems.push(e.to_string()),
    }
    drop(lock);
    Ok(report)
}

/// Verification while a writer holds the collection: the consistent state a
/// [`crate::CollectionReader`] loads, every checksum of its segments, its id map against them, and
/// the WAL after its checkpoint. Orphan files are not judged (the writer may be writing them).
fn verify_beside_writer(path: &Path) -> Result<VerifyReport> {
    let reader = crate::CollectionReader::open(path)?;
    let stats = reader.stats()?;
    let mut report = VerifyReport {
        segments: stats.segments.len() as u64,
        documents: stats.documents,
        notes: vec![format!(
            "{}: a writer has the collection open; verified the state as of {} (orphan files not judged)",
            display(path),
            if stats.last_seq > stats.checkpoint { "its catalog plus the WAL" } else { "its catalog" }
        )],
        ..Default::default()
    };
    match reader.verify() {
        Ok(()) => report.segment_bytes_checked = stats.segment_bytes,
        Err(e) => report.problems.push(e.to_string()),
    }
    Ok(report)
}

/// Paths of the parts of a collection directory (for tools).
pub fn layout(path: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (path.join(CATALOG_DIR), path.join(SEGMENTS_DIR), path.join(WAL_DIR))
}

/// Verifies what an open handle sees: every checksum of every segment of `version`, every id map
/// entry of `catalog` pointing at a live ordinal holding that id, live counts agreeing, and the WAL
/// replaying after the checkpoint (read only). The caller guarantees that `catalog` and `version`
/// belong to one commit.
/// With `checksums` false the caller has checked the segments' checksums itself (outside a lock).
pub(crate) fn verify_view(path: &Path, catalog: &Catalog, version: &Version, checksums: bool) -> Result<()> {
    if checksums {
        for s in &version.segments {
            s.handle.reader.verify()?;
        }
    }
    let mut counted: HashMap<u64, usize> = HashMap::new();
    catalog.for_each_location(|id, loc| {
        let seg = version.segments.iter().find(|s| s.handle.id == loc.segment).ok_or_else(|| {
            Error::corruption(catalog.path(), 0, format!("id {id} points at unknown segment {}", loc.segment))
        })?;
        let r = &seg.handle.reader;
        if r.doc_ids().get(loc.ordinal as usize) != Some(&id) || !seg.live.is_live(loc.ordinal) {
            return Err(Error::corruption(
                catalog.path(),
                0,
                format!("id {id} points at ordinal {} of segment {}, which does not hold it", loc.ordinal, loc.segment),
            ));
        }
        *counted.entry(loc.segment).or_default() += 1;
        Ok(())
    })?;
    for s in &version.segments {
        let n = counted.get(&s.handle.id).copied().unwrap_or(0);
        if n != s.live.live_count() {
            return Err(Error::corruption(
                s.handle.reader.path(),
                0,
                format!("{} live documents in memory, {n} in the catalog", s.live.live_count()),
            ));
        }
    }
    let checkpoint = catalog.checkpoint()?;
    wal::replay(&path.join(WAL_DIR), checkpoint, WalRecovery::Strict, None, |_| Ok(()))?;
    Ok(())
}
