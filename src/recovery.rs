//! Opening a collection directory: the layout, the writer's lock, creation, and the recovery steps
//! shared by the writing handle ([`crate::engine`]) and the read-only handle ([`crate::reader`]):
//! catalog → segments named by the manifest (structure checked, matched to the manifest and the
//! encoder) → live ordinals from the id map → WAL replay after the checkpoint into a memtable.
//!
//! Only the writer repairs: it deletes orphan segment files (a crash before a commit, or merged-away
//! inputs not yet deleted), cuts a torn WAL tail, and starts a new WAL file. A read-only handle runs
//! the same steps without any of those writes.
//!
//! # Directory
//! ```text
//! PATH/LOCK                      advisory lock held by the one writing handle
//! PATH/catalog/                  RocksDB: options, manifest, id map, codebook, checkpoint
//! PATH/segments/seg-<id>.qseg    immutable segment files
//! PATH/wal/<first seq>.wal       write-ahead log files
//! ```

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::catalog::{Catalog, SegmentRecord};
use crate::encode::fde::FdeEncoder;
use crate::encode::pq::PqCodebook;
use crate::error::{Error, Result};
use crate::format::segment::SectionKind;
use crate::format::wal::RecordOp;
use crate::io::storage::Storage;
use crate::memtable::{MemDoc, MemEntry, Memtable, OwnedTokens};
use crate::options::CollectionOptions;
use crate::segment::{self, LiveBits, SegmentReader, TokenBooks};
use crate::snapshot::{LiveSegment, SegmentHandle, SharedCodebook, Version};
use crate::wal::{self, ReplayReport, WalRecovery};

pub(crate) const LOCK_FILE: &str = "LOCK";
pub(crate) const CATALOG_DIR: &str = "catalog";
pub(crate) const SEGMENTS_DIR: &str = "segments";
pub(crate) const WAL_DIR: &str = "wal";
/// Where `create` builds the catalog before renaming it into place.
const CATALOG_TMP_DIR: &str = "catalog.tmp";

/// How long `open` keeps retrying a busy lock before reporting [`Error::Locked`].
const LOCK_RETRY: Duration = Duration::from_millis(500);

/// `Err(NotACollection)` unless `path` holds a catalog.
pub(crate) fn require_collection(path: &Path) -> Result<()> {
    if path.join(CATALOG_DIR).join("CURRENT").exists() {
        return Ok(());
    }
    Err(Error::NotACollection {
        path: path.to_path_buf(),
        reason: if path.exists() { "it has no catalog".into() } else { "the directory does not exist".into() },
    })
}

/// True for a directory `create` may use: empty, or holding only what an interrupted `create` left
/// (the lock file, empty `segments/` and `wal/`, a `catalog.tmp`) and no catalog.
fn is_empty_or_failed_create(path: &Path) -> Result<bool> {
    for entry in std::fs::read_dir(path).map_err(|e| Error::io(path, e))? {
        let entry = entry.map_err(|e| Error::io(path, e))?;
        let name = entry.file_name();
        let ok = match name.to_str() {
            Some(LOCK_FILE) | Some(CATALOG_TMP_DIR) => true,
            Some(SEGMENTS_DIR) | Some(WAL_DIR) => {
                std::fs::read_dir(entry.path()).map_err(|e| Error::io(entry.path(), e))?.next().is_none()
            }
            _ => false,
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Takes the collection's advisory lock (flock on `PATH/LOCK`).
///
/// A busy lock is retried briefly: a process that forks (e.g. to spawn a child) shares its open
/// file descriptions with the child until the child's `exec` closes them, so right after this
/// process closed a collection the child's inherited copy can still hold the lock for a moment.
/// The model test hit exactly that (a reopen failed with `Locked` while another test spawned
/// child processes); only a lock still busy after the retry window is another writer.
pub(crate) fn lock_collection(path: &Path) -> Result<File> {
    let lock_path = path.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| Error::io(&lock_path, e))?;
    let started = std::time::Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if started.elapsed() < LOCK_RETRY => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::Locked { path: path.to_path_buf(), lock_file: lock_path })
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&lock_path, e)),
        }
    }
}

/// Creates the directory structure and the catalog of a new collection at `path` and returns the
/// writer's lock. The catalog is built under a temporary name and renamed into place: the directory
/// becomes a collection in one step. (Creating it in place let a kill between RocksDB's own files
/// and our options batch leave a catalog without options that every later open refused — found by
/// the SIGKILL test's kills during start-up.)
pub(crate) fn create_layout(storage: &dyn Storage, path: &Path, options: &CollectionOptions) -> Result<File> {
    if path.exists() && !is_empty_or_failed_create(path)? {
        return Err(Error::AlreadyExists { path: path.to_path_buf() });
    }
    storage.create_dir_all(path).map_err(|e| Error::io(path, e))?;
    let lock = lock_collection(path)?;
    for dir in [SEGMENTS_DIR, WAL_DIR] {
        let d = path.join(dir);
        storage.create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
    }
    let tmp = path.join(CATALOG_TMP_DIR);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    drop(Catalog::create(&tmp, options)?);
    crate::io::fs::sync_dir(storage, &tmp)?;
    let catalog_dir = path.join(CATALOG_DIR);
    storage.rename(&tmp, &catalog_dir).map_err(|e| Error::io(&catalog_dir, e))?;
    crate::io::fs::sync_dir(storage, path)?;
    Ok(lock)
}

/// The stored options, checked.
pub(crate) fn stored_options(catalog: &Catalog) -> Result<CollectionOptions> {
    let options = catalog.options()?;
    options.validate().map_err(|e| Error::corruption(catalog.path(), 0, format!("stored options: {e}")))?;
    Ok(options)
}

/// Opens the segment that manifest record `rec` names (structure checked by the reader) and checks
/// it against the record (length, document count) and the collection's encoder. Recovery, the
/// read-only handle and offline verification share it.
pub(crate) fn open_manifest_segment(
    seg_dir: &Path,
    rec: &SegmentRecord,
    encoder: &FdeEncoder,
    token_books: &TokenBooks,
) -> Result<SegmentReader> {
    let file = seg_dir.join(segment::file_name(rec.id));
    if !file.exists() {
        return Err(Error::corruption(&file, 0, "segment named by the catalog is missing"));
    }
    let reader = SegmentReader::open_sharing(&file, token_books)?;
    if reader.file_len() != rec.file_len || reader.doc_count() as u64 != rec.doc_count {
        return Err(Error::corruption(
            &file,
            0,
            format!(
                "catalog records {} documents in {} bytes, the file has {} in {}",
                rec.doc_count,
                rec.file_len,
                reader.doc_count(),
                reader.file_len()
            ),
        ));
    }
    reader.check_encoder(encoder)?;
    Ok(reader)
}

/// The key under which segments share a codebook (and ADC tables): the codebook section's CRC.
pub(crate) fn codebook_key(reader: &SegmentReader) -> u32 {
    reader.sections().iter().find(|s| s.kind == SectionKind::PqCodebook).map_or(0, |s| s.crc)
}

/// Wraps `reader` in a handle, sharing the codebook of an earlier segment with the same key.
pub(crate) fn segment_handle(
    storage: &Arc<dyn Storage>,
    id: u64,
    reader: SegmentReader,
    codebooks: &mut HashMap<u32, SharedCodebook>,
    expected: Option<&Arc<PqCodebook>>,
) -> Result<Arc<SegmentHandle>> {
    let key = codebook_key(&reader);
    let cb = codebooks.entry(key).or_insert_with(|| SharedCodebook::expecting(expected)).clone();
    Ok(Arc::new(SegmentHandle::new(storage.clone(), id, reader, cb, key)))
}

/// Why loading a version stopped without a result that is either good or an error: a segment the
/// manifest names is gone. For the writer that is corruption; for a read-only handle it means the
/// writer merged the segment away after the catalog was read, and the load is retried.
pub(crate) enum SegmentMissing {
    /// Report it as damage.
    Corrupt,
    /// Tell the caller to retry.
    Retry,
}

/// A loaded version, and whether its live bitsets came from a scan of the id map because the
/// catalog predates dead tracking (the writer then records them: [`Catalog::record_dead`]).
pub(crate) struct Loaded {
    pub(crate) version: Version,
    pub(crate) scanned_id_map: bool,
}

/// Opens every segment the manifest names (reusing handles in `reuse` by id) and derives its live
/// ordinals: all but the dead ordinals the catalog records (a cost that grows with deletes, not with
/// the collection), or — for a catalog from before dead tracking — the ordinals the id map points
/// at, each checked to hold that id. `Ok(None)`: a segment is missing and `missing` said to retry.
/// Segments whose codebook section proves equal to `codebook` (the writer's catalog copy) use that
/// copy instead of decoding their own.
pub(crate) fn load_version(
    storage: &Arc<dyn Storage>,
    path: &Path,
    catalog: &Catalog,
    encoder: &FdeEncoder,
    reuse: &HashMap<u64, Arc<SegmentHandle>>,
    missing: SegmentMissing,
    codebook: Option<&Arc<PqCodebook>>,
) -> Result<Option<Loaded>> {
    let seg_dir = path.join(SEGMENTS_DIR);
    let records = catalog.segments()?;
    let mut codebooks: HashMap<u32, SharedCodebook> =
        reuse.values().map(|h| (h.codebook_key, h.codebook.clone())).collect();
    // Segments written with the collection's token codebook share one decoded copy.
    let mut token_books = TokenBooks::new();
    for h in reuse.values() {
        h.reader.share_token_codebook(&mut token_books);
    }
    let mut segments = Vec::with_capacity(records.len());
    for rec in &records {
        if let Some(h) = reuse.get(&rec.id) {
            segments.push((h.clone(), LiveBits::none(h.reader.doc_count())));
            continue;
        }
        if matches!(missing, SegmentMissing::Retry) && !seg_dir.join(segment::file_name(rec.id)).exists() {
            return Ok(None);
        }
        let reader = match open_manifest_segment(&seg_dir, rec, encoder, &token_books) {
            Ok(r) => r,
            // Deleted between the existence check and the open.
            Err(Error::Io { source, .. })
                if matches!(missing, SegmentMissing::Retry) && source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        let n = reader.doc_count();
        reader.share_token_codebook(&mut token_books);
        segments.push((segment_handle(storage, rec.id, reader, &mut codebooks, codebook)?, LiveBits::none(n)));
    }
    if catalog.tracks_dead()? {
        for (handle, live) in segments.iter_mut() {
            let n = handle.reader.doc_count();
            *live = LiveBits::all(n);
            for ordinal in catalog.dead_ordinals(handle.id)? {
                if ordinal as usize >= n {
                    return Err(Error::corruption(
                        catalog.path(),
                        0,
                        format!("dead ordinal {ordinal} of segment {} is past its {n} documents", handle.id),
                    ));
                }
                live.clear(ordinal);
            }
        }
        return Ok(Some(Loaded { version: into_version(segments), scanned_id_map: false }));
    }
    let index: HashMap<u64, usize> = segments.iter().enumerate().map(|(i, (h, _))| (h.id, i)).collect();
    catalog.for_each_location(|id, loc| {
        let bad = |what: String| Error::corruption(catalog.path(), 0, format!("id {id}: {what}"));
        let &i = index.get(&loc.segment).ok_or_else(|| bad(format!("points at unknown segment {}", loc.segment)))?;
        let (handle, live) =
            segments.get_mut(i).ok_or_else(|| bad(format!("points at unknown segment {}", loc.segment)))?;
        let holds = handle.reader.doc_ids().get(loc.ordinal as usize) == Some(&id);
        if !holds {
            return Err(bad(format!(
                "points at ordinal {} of segment {}, which holds another document",
                loc.ordinal, loc.segment
            )));
        }
        live.set(loc.ordinal);
        Ok(())
    })?;
    Ok(Some(Loaded { version: into_version(segments), scanned_id_map: true }))
}

fn into_version(segments: Vec<(Arc<SegmentHandle>, LiveBits)>) -> Version {
    Version {
        segments: segments.into_iter().map(|(handle, live)| LiveSegment { handle, live: Arc::new(live) }).collect(),
        frozen: None,
    }
}

/// Every dead ordinal of `version`'s segments (for [`Catalog::record_dead`]).
pub(crate) fn dead_locations(version: &Version) -> Vec<crate::catalog::Location> {
    let mut out = Vec::new();
    for s in &version.segments {
        for ordinal in 0..s.handle.reader.doc_count() as u32 {
            if !s.live.is_live(ordinal) {
                out.push(crate::catalog::Location { segment: s.handle.id, ordinal });
            }
        }
    }
    out
}

/// Deletes segment files the manifest does not name (a crash before a commit, or inputs of a
/// committed merge not yet deleted) and temporary files. Writer only.
pub(crate) fn remove_orphans(storage: &dyn Storage, path: &Path, version: &Version) -> Result<()> {
    let seg_dir = path.join(SEGMENTS_DIR);
    let live_ids: HashSet<u64> = version.segments.iter().map(|s| s.handle.id).collect();
    let mut removed = false;
    for entry in std::fs::read_dir(&seg_dir).map_err(|e| Error::io(&seg_dir, e))? {
        let entry = entry.map_err(|e| Error::io(&seg_dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let keep = segment::parse_file_name(&name).is_some_and(|id| live_ids.contains(&id));
        if !keep {
            storage.remove_file(&entry.path()).map_err(|e| Error::io(entry.path(), e))?;
            removed = true;
        }
    }
    if removed {
        crate::io::fs::sync_dir(storage, &seg_dir)?;
    }
    Ok(())
}

/// Replays the WAL records after `checkpoint` into a memtable. With `repair` (the writer), a torn
/// tail is cut from the file; without it nothing is modified.
pub(crate) fn replay_wal(
    path: &Path,
    options: &CollectionOptions,
    checkpoint: u64,
    recovery: WalRecovery,
    repair: Option<&dyn Storage>,
) -> Result<(Memtable, ReplayReport)> {
    let wal_dir = path.join(WAL_DIR);
    let mut active = Memtable::default();
    let (dim, token_storage) = (options.dim, options.storage.buffer_storage());
    let report = wal::replay(&wal_dir, checkpoint, recovery, repair, |record| {
        let entry = match record.op {
            RecordOp::Put { id, dim: d, storage: s, tokens, payload } => {
                if d != dim || s != token_storage {
                    return Err(Error::corruption(
                        &wal_dir,
                        0,
                        format!(
                            "record {} holds {d}-dim {} tokens; the collection stores {dim}-dim {}",
                            record.seq,
                            s.name(),
                            token_storage.name()
                        ),
                    ));
                }
                let tokens = OwnedTokens::from_le_bytes(&tokens, s)?;
                MemEntry { id, seq: record.seq, doc: Some(Arc::new(MemDoc { id, tokens, payload })) }
            }
            RecordOp::Delete { id } => MemEntry { id, seq: record.seq, doc: None },
        };
        active.push(entry);
        Ok(())
    })?;
    Ok((active, report))
}
