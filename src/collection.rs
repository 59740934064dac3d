//! [`Collection`]: the database. Wires the WAL, the memtable, the catalog, segments, flush,
//! compaction, recovery and search together.
//!
//! # Directory
//! ```text
//! PATH/LOCK                      advisory lock held by the one writing handle
//! PATH/catalog/                  RocksDB: options, manifest, id map, codebook, checkpoint
//! PATH/segments/seg-<id>.qseg    immutable segment files
//! PATH/wal/<first seq>.wal       write-ahead log files
//! ```
//!
//! # Concurrency
//! Any number of threads may search and get while others write. Locks, always taken in this order:
//! `maintenance` (one flush or merge at a time) → `writer` (assigns sequence numbers and appends
//! to the WAL in order) → `pending` (logged, not yet fsynced entries under `Durability::Sync`) →
//! `state` (the current `Version` of segments + frozen memtable, and the active memtable).
//! Readers hold `state` only to copy an `Arc` and the memtable's entry list; scoring happens
//! outside every lock. A reader's snapshot is consistent: it sees the active memtable, the frozen
//! memtable and the segments exactly as one commit left them.
//!
//! # Write path and crash reasoning
//! 1. `insert`/`upsert`/`delete`: validate → (under `writer`) frame records with the next sequence
//!    numbers → append to the WAL → with `Sync`: fsync (group commit, outside `writer`) → the
//!    entries become visible in the memtable → return. A crash before the fsync loses only
//!    unacknowledged writes; a torn record at the WAL's end is cut at recovery.
//! 2. Flush (`flush()`, a full memtable, or the background thread): (under `writer`) rotate the WAL
//!    — the old file is fsynced whole — and freeze the memtable; build and publish the segment
//!    (tmp file, fsync, rename, fsync dir); then one synced catalog batch adds the segment, points
//!    every flushed id at it, deletes flushed tombstones' ids and advances the WAL checkpoint; then
//!    the old WAL files are deleted. Crash before the commit: the segment is an orphan (deleted at
//!    open) and the WAL still holds every record. Crash after: the catalog has everything and the
//!    WAL's records up to the checkpoint are skipped at replay.
//! 3. Merge: write the new segment from the live documents of the inputs, commit (add output,
//!    remove inputs, repoint moved ids) in one batch; input files are deleted when the last reader
//!    holding them lets go. Crash before the commit: orphan output; after: orphan inputs (if not
//!    yet deleted), removed at open.
//! 4. A failed write, fsync or commit poisons the handle: later writes fail with
//!    [`Error::Poisoned`]; reads go on. Reopening recovers the last durable state.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, RwLock};

use crate::catalog::{dir_bytes, Catalog, Commit, Location, SegmentRecord};
use crate::compaction::merge::{merge, MergeInput};
use crate::compaction::{MergePlan, SegmentStats};
use crate::encode::fde::FdeEncoder;
use crate::encode::pq::PqCodebook;
use crate::encode::tokens::TokenMatrix;
use crate::error::{Error, Poison, Result};
use crate::format::segment::SectionKind;
use crate::format::wal::{encode_delete, encode_put, RecordOp};
use crate::io::storage::Storage;
use crate::limits::{MAX_BATCH_DOCS, MAX_DOC_VALUES, MAX_PAYLOAD_BYTES};
use crate::memtable::{MemDoc, MemEntry, MemView, Memtable, OwnedTokens};
use crate::options::{CollectionOptions, Durability, OpenOptions};
use crate::search::{search_snapshot, Hit, SearchParams};
use crate::segment::{self, Document, LiveBits, PqSource, SegmentConfig, SegmentReader, SegmentWriter};
use crate::wal::{self, Wal};

pub(crate) const LOCK_FILE: &str = "LOCK";
pub(crate) const CATALOG_DIR: &str = "catalog";
pub(crate) const SEGMENTS_DIR: &str = "segments";
pub(crate) const WAL_DIR: &str = "wal";
/// Where `create` builds the catalog before renaming it into place.
const CATALOG_TMP_DIR: &str = "catalog.tmp";

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
/// Writers stall when the memtable exceeds this multiple of its flush thresholds.
const STALL_FACTOR: usize = 4;

/// A document to write.
#[derive(Clone, Copy, Debug)]
pub struct NewDocument<'a> {
    /// External id.
    pub id: u64,
    /// Token vectors, row-major, `n_tokens × dim`.
    pub tokens: &'a [f32],
    /// Optional payload (any bytes; JSON by convention).
    pub payload: Option<&'a [u8]>,
}

/// A stored document as `get` returns it.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredDocument {
    /// External id.
    pub id: u64,
    /// Token vectors as stored (16-bit storage converted back to `f32` exactly), row-major.
    pub tokens: Vec<f32>,
    /// Payload bytes (empty: none).
    pub payload: Vec<u8>,
}

/// One segment in [`CollectionStats`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SegmentStatsInfo {
    /// Segment id.
    pub id: u64,
    /// Documents in the file.
    pub doc_count: u64,
    /// Documents still live in it.
    pub live_docs: u64,
    /// File size.
    pub bytes: u64,
    /// Whether it has a graph (else it is searched by a flat scan of its PQ codes).
    pub has_graph: bool,
    /// PQ code length.
    pub pq_subspaces: u64,
}

/// What `stats()` reports.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CollectionStats {
    /// Visible documents.
    pub documents: u64,
    /// Operations held in the active memtable.
    pub memtable_ops: u64,
    /// Bytes held by the active memtable.
    pub memtable_bytes: u64,
    /// Operations in a memtable being flushed.
    pub frozen_ops: u64,
    /// Live segments.
    pub segments: Vec<SegmentStatsInfo>,
    /// Bytes of segment files.
    pub segment_bytes: u64,
    /// Bytes of WAL files.
    pub wal_bytes: u64,
    /// Bytes of the catalog.
    pub catalog_bytes: u64,
    /// Last WAL sequence number covered by segments.
    pub checkpoint: u64,
    /// Last WAL sequence number written.
    pub last_seq: u64,
    /// Resident memory this handle needs besides the page cache: PQ codes, offsets and live
    /// bitsets of every segment, distinct codebooks, the memtable.
    pub ram_bytes: u64,
}

/// What `compact()` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactionReport {
    /// Merges run.
    pub merges: u64,
    /// Input segments consumed.
    pub inputs: u64,
    /// Documents rewritten.
    pub docs_written: u64,
    /// Bytes of new segment files.
    pub bytes_written: u64,
}

/// A segment file in use. When it leaves the collection (merged away) it is marked obsolete and
/// deleted when the last snapshot holding it is dropped.
pub(crate) struct SegmentHandle {
    storage: Arc<dyn Storage>,
    pub(crate) id: u64,
    pub(crate) reader: SegmentReader,
    pub(crate) codebook: Arc<PqCodebook>,
    /// CRC of the codebook section: segments with equal keys share ADC tables.
    pub(crate) codebook_key: u32,
    obsolete: AtomicBool,
}

impl Drop for SegmentHandle {
    fn drop(&mut self) {
        if self.obsolete.load(Ordering::Acquire) {
            // Best effort: a file left behind is an orphan, removed at the next open.
            let _ = self.storage.remove_file(self.reader.path());
        }
    }
}

/// A live segment with its live ordinals, as of one commit.
#[derive(Clone)]
pub(crate) struct LiveSegment {
    pub(crate) handle: Arc<SegmentHandle>,
    pub(crate) live: Arc<LiveBits>,
}

/// The immutable part of the collection's state, replaced at every commit.
#[derive(Clone, Default)]
pub(crate) struct Version {
    /// Live segments, by id ascending.
    pub(crate) segments: Vec<LiveSegment>,
    /// The memtable being flushed, if any (newer than every segment).
    pub(crate) frozen: Option<Arc<MemView>>,
}

/// What a reader sees: a version and the active memtable at the same instant.
pub(crate) struct Snapshot {
    pub(crate) version: Arc<Version>,
    pub(crate) active: MemView,
}

struct State {
    version: Arc<Version>,
    active: Memtable,
}

struct WriterState {
    next_seq: u64,
}

struct Maintenance {
    next_segment: u64,
    codebook: Option<(Arc<PqCodebook>, u64)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum WriteMode {
    Insert,
    Upsert,
}

struct Inner {
    storage: Arc<dyn Storage>,
    path: PathBuf,
    options: CollectionOptions,
    open_options: OpenOptions,
    /// The effective durability (the handle's choice, else the collection's default).
    durability: Durability,
    encoder: Arc<FdeEncoder>,
    catalog: Catalog,
    wal: Wal,
    writer: Mutex<WriterState>,
    pending: Mutex<VecDeque<MemEntry>>,
    state: RwLock<State>,
    maintenance: Mutex<Maintenance>,
    poisoned: Poison,
    closed: AtomicBool,
    wake: Mutex<bool>,
    wake_cv: Condvar,
    _lock: File,
}

/// An open collection. `Send + Sync`: share it between threads (e.g. in an `Arc`).
pub struct Collection {
    inner: Arc<Inner>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// How long `open` keeps retrying a busy lock before reporting [`Error::Locked`].
const LOCK_RETRY: Duration = Duration::from_millis(500);

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

/// Opens the segment that manifest record `rec` names (structure checked by the reader) and checks
/// it against the record (length, document count) and the collection's encoder. Recovery and
/// offline verification share it.
pub(crate) fn open_manifest_segment(
    seg_dir: &Path,
    rec: &SegmentRecord,
    encoder: &FdeEncoder,
) -> Result<SegmentReader> {
    let file = seg_dir.join(segment::file_name(rec.id));
    if !file.exists() {
        return Err(Error::corruption(&file, 0, "segment named by the catalog is missing"));
    }
    let reader = SegmentReader::open(&file)?;
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

fn codebook_key(reader: &SegmentReader) -> u32 {
    reader.sections().iter().find(|s| s.kind == SectionKind::PqCodebook).map_or(0, |s| s.crc)
}

impl Collection {
    /// Creates a new collection in `path` (which must not exist or be an empty directory) and opens
    /// it for writing.
    pub fn create(path: impl AsRef<Path>, options: CollectionOptions, open: OpenOptions) -> Result<Self> {
        let path = path.as_ref();
        options.validate()?;
        open.validate()?;
        FdeEncoder::new(options.fde)?;
        if path.exists() && !is_empty_or_failed_create(path)? {
            return Err(Error::AlreadyExists { path: path.to_path_buf() });
        }
        let storage = open.storage.clone().unwrap_or_else(crate::io::storage::real);
        storage.create_dir_all(path).map_err(|e| Error::io(path, e))?;
        let lock = lock_collection(path)?;
        for dir in [SEGMENTS_DIR, WAL_DIR] {
            let d = path.join(dir);
            storage.create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
        }
        // The catalog is built under a temporary name and renamed into place: the directory
        // becomes a collection in one step. (Creating it in place let a kill between RocksDB's own
        // files and our options batch leave a catalog without options that every later open
        // refused — found by the SIGKILL test's kills during start-up.)
        let tmp = path.join(CATALOG_TMP_DIR);
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        }
        drop(Catalog::create(&tmp, &options)?);
        crate::io::fs::sync_dir(&*storage, &tmp)?;
        let catalog_dir = path.join(CATALOG_DIR);
        storage.rename(&tmp, &catalog_dir).map_err(|e| Error::io(&catalog_dir, e))?;
        crate::io::fs::sync_dir(&*storage, path)?;
        Self::open_locked(path, open, lock)
    }

    /// Opens (and recovers) the collection at `path` with default [`OpenOptions`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, OpenOptions::default())
    }

    /// Opens (and recovers) the collection at `path`: catalog → segments (structure checked,
    /// orphans deleted) → WAL replay after the checkpoint.
    pub fn open_with(path: impl AsRef<Path>, open: OpenOptions) -> Result<Self> {
        let path = path.as_ref();
        open.validate()?;
        if !path.join(CATALOG_DIR).join("CURRENT").exists() {
            return Err(Error::NotACollection {
                path: path.to_path_buf(),
                reason: if path.exists() { "it has no catalog".into() } else { "the directory does not exist".into() },
            });
        }
        let lock = lock_collection(path)?;
        Self::open_locked(path, open, lock)
    }

    fn open_locked(path: &Path, open: OpenOptions, lock: File) -> Result<Self> {
        let storage = open.storage.clone().unwrap_or_else(crate::io::storage::real);
        let catalog = Catalog::open(&path.join(CATALOG_DIR))?;
        let options = catalog.options()?;
        options.validate().map_err(|e| Error::corruption(catalog.path(), 0, format!("stored options: {e}")))?;
        let encoder = Arc::new(FdeEncoder::new(options.fde)?);
        let checkpoint = catalog.checkpoint()?;
        let next_segment = catalog.next_segment()?;
        let codebook = catalog.codebook()?.map(|c| (Arc::new(c.codebook), c.trained_docs));

        // Segments named by the manifest: open (header, table, tail, lengths checked), match the
        // manifest and the collection's encoder.
        let seg_dir = path.join(SEGMENTS_DIR);
        let records = catalog.segments()?;
        let mut codebooks: HashMap<u32, Arc<PqCodebook>> = HashMap::new();
        let mut segments = Vec::with_capacity(records.len());
        for rec in &records {
            let reader = open_manifest_segment(&seg_dir, rec, &encoder)?;
            let key = codebook_key(&reader);
            let cb = match codebooks.get(&key) {
                Some(cb) => cb.clone(),
                None => {
                    let cb = Arc::new(reader.pq_codebook()?);
                    codebooks.insert(key, cb.clone());
                    cb
                }
            };
            let n = reader.doc_count();
            segments.push((
                Arc::new(SegmentHandle {
                    storage: storage.clone(),
                    id: rec.id,
                    reader,
                    codebook: cb,
                    codebook_key: key,
                    obsolete: false.into(),
                }),
                LiveBits::none(n),
            ));
        }
        // Live ordinals from the id map; every entry must point at a document with that id.
        let index: HashMap<u64, usize> = segments.iter().enumerate().map(|(i, (h, _))| (h.id, i)).collect();
        catalog.for_each_location(|id, loc| {
            let bad = |what: String| Error::corruption(catalog.path(), 0, format!("id {id}: {what}"));
            let &i =
                index.get(&loc.segment).ok_or_else(|| bad(format!("points at unknown segment {}", loc.segment)))?;
            let (handle, live) = &mut segments[i];
            if loc.ordinal as usize >= handle.reader.doc_count() || handle.reader.doc_ids()[loc.ordinal as usize] != id
            {
                return Err(bad(format!(
                    "points at ordinal {} of segment {}, which holds another document",
                    loc.ordinal, loc.segment
                )));
            }
            live.set(loc.ordinal);
            Ok(())
        })?;
        // Orphans: segment files the manifest does not name (a crash before a commit, or inputs
        // of a committed merge not yet deleted) and temporary files.
        let live_ids: HashSet<u64> = records.iter().map(|r| r.id).collect();
        let mut removed_orphan = false;
        for entry in std::fs::read_dir(&seg_dir).map_err(|e| Error::io(&seg_dir, e))? {
            let entry = entry.map_err(|e| Error::io(&seg_dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let keep = segment::parse_file_name(&name).is_some_and(|id| live_ids.contains(&id));
            if !keep {
                storage.remove_file(&entry.path()).map_err(|e| Error::io(entry.path(), e))?;
                removed_orphan = true;
            }
        }
        if removed_orphan {
            crate::io::fs::sync_dir(&*storage, &seg_dir)?;
        }

        // WAL replay after the checkpoint.
        let wal_dir = path.join(WAL_DIR);
        let mut active = Memtable::default();
        let dim = options.dim;
        let token_storage = options.storage;
        let report = wal::replay(&wal_dir, checkpoint, open.wal_recovery, Some(&*storage), |record| {
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
        let next_seq = report.last_seq + 1;
        let wal = Wal::create(storage.clone(), &wal_dir, next_seq)?;
        wal::trim(&*storage, &wal_dir, checkpoint)?;

        let version = Version {
            segments: segments.into_iter().map(|(handle, live)| LiveSegment { handle, live: Arc::new(live) }).collect(),
            frozen: None,
        };
        let durability = open.durability.unwrap_or(options.durability);
        let inner = Arc::new(Inner {
            storage,
            path: path.to_path_buf(),
            options,
            durability,
            open_options: open,
            encoder,
            catalog,
            wal,
            writer: Mutex::new(WriterState { next_seq }),
            pending: Mutex::new(VecDeque::new()),
            state: RwLock::new(State { version: Arc::new(version), active }),
            maintenance: Mutex::new(Maintenance { next_segment, codebook }),
            poisoned: Poison::default(),
            closed: AtomicBool::new(false),
            wake: Mutex::new(false),
            wake_cv: Condvar::new(),
            _lock: lock,
        });
        let collection = Collection { inner, threads: Mutex::new(Vec::new()) };
        collection.start_threads();
        Ok(collection)
    }

    fn start_threads(&self) {
        let mut threads = self.threads.lock();
        if self.inner.open_options.background {
            let inner = self.inner.clone();
            threads.push(std::thread::spawn(move || inner.maintenance_loop()));
        }
        if let Durability::Periodic(interval) = self.inner.durability {
            let inner = self.inner.clone();
            threads.push(std::thread::spawn(move || inner.sync_loop(interval)));
        }
        // A replayed memtable may already be over its threshold.
        self.inner.wake_maintenance();
    }

    /// The collection's directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The options fixed at creation.
    pub fn options(&self) -> &CollectionOptions {
        &self.inner.options
    }

    /// Inserts a new document; fails with [`Error::IdExists`] if `id` is present.
    pub fn insert(&self, id: u64, tokens: &[f32], payload: Option<&[u8]>) -> Result<()> {
        self.inner.write_docs(&[NewDocument { id, tokens, payload }], WriteMode::Insert)
    }

    /// Inserts or replaces a document; the old version disappears atomically.
    pub fn upsert(&self, id: u64, tokens: &[f32], payload: Option<&[u8]>) -> Result<()> {
        self.inner.write_docs(&[NewDocument { id, tokens, payload }], WriteMode::Upsert)
    }

    /// Inserts many new documents with one WAL write and one fsync; all or none are applied (if
    /// any id exists or repeats, or any document is invalid, nothing is written).
    pub fn insert_batch(&self, docs: &[NewDocument<'_>]) -> Result<()> {
        self.inner.write_docs(docs, WriteMode::Insert)
    }

    /// Like [`Collection::insert_batch`] but replacing existing ids.
    pub fn upsert_batch(&self, docs: &[NewDocument<'_>]) -> Result<()> {
        self.inner.write_docs(docs, WriteMode::Upsert)
    }

    /// Deletes `id`. Returns whether it existed (nothing is logged if it did not).
    pub fn delete(&self, id: u64) -> Result<bool> {
        self.inner.delete(id)
    }

    /// The current version of `id`.
    pub fn get(&self, id: u64) -> Result<Option<StoredDocument>> {
        self.inner.check_open()?;
        self.inner.get(id)
    }

    /// Whether `id` is present.
    pub fn contains(&self, id: u64) -> Result<bool> {
        self.inner.check_open()?;
        Ok(self.inner.lookup(id)?.is_some())
    }

    /// The best `params.k` documents for `query` (`n_tokens × dim`, row-major) by MaxSim.
    pub fn search(&self, query: &[f32], params: &SearchParams) -> Result<Vec<Hit>> {
        self.inner.check_open()?;
        let snapshot = self.inner.snapshot();
        search_snapshot(&snapshot, &self.inner.encoder, self.inner.options.dim as usize, query, params, None)
    }

    /// Many queries in parallel (rayon), each as [`Collection::search`], on one snapshot.
    pub fn search_batch(&self, queries: &[&[f32]], params: &SearchParams) -> Result<Vec<Vec<Hit>>> {
        use rayon::prelude::*;
        self.inner.check_open()?;
        let snapshot = self.inner.snapshot();
        let dim = self.inner.options.dim as usize;
        queries.par_iter().map(|q| search_snapshot(&snapshot, &self.inner.encoder, dim, q, params, None)).collect()
    }

    /// Like [`Collection::search`], also returning where the time went.
    pub fn search_profiled(
        &self,
        query: &[f32],
        params: &SearchParams,
    ) -> Result<(Vec<Hit>, crate::search::SearchProfile)> {
        self.inner.check_open()?;
        let snapshot = self.inner.snapshot();
        let mut profile = crate::search::SearchProfile::default();
        let hits = search_snapshot(
            &snapshot,
            &self.inner.encoder,
            self.inner.options.dim as usize,
            query,
            params,
            Some(&mut profile),
        )?;
        Ok((hits, profile))
    }

    /// Writes the memtable to a new segment and commits it (no-op when empty). Returns when the
    /// segment is committed and the WAL trimmed.
    pub fn flush(&self) -> Result<()> {
        self.inner.check_open()?;
        self.inner.flush()
    }

    /// Runs the merge policy until it has nothing left to merge.
    pub fn compact(&self) -> Result<CompactionReport> {
        self.inner.check_open()?;
        self.inner.compact()
    }

    /// Counts and sizes.
    pub fn stats(&self) -> Result<CollectionStats> {
        self.inner.check_open()?;
        self.inner.stats()
    }

    /// Checks every checksum of every segment, the id map against the segments, and that the WAL
    /// replays (without modifying it).
    pub fn verify(&self) -> Result<()> {
        self.inner.check_open()?;
        self.inner.verify()
    }

    /// Stops background work, fsyncs the WAL and releases the lock. Dropping the handle does the
    /// same but cannot report errors.
    pub fn close(self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.inner.wake_maintenance();
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
        // Wait for a flush or merge started by a caller on another thread.
        let _m = self.inner.maintenance.lock();
        let _w = self.inner.writer.lock();
        if self.inner.poisoned.is_set() {
            return Ok(());
        }
        let written = self.inner.wal.written_seq();
        self.inner.wal.sync_to(written)
    }

    /// The last error of the background thread or write path that poisoned this handle, if any.
    pub fn poisoned(&self) -> Option<String> {
        self.inner.poisoned.reason()
    }
}

impl Drop for Collection {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

impl Inner {
    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    fn check_writable(&self) -> Result<()> {
        self.check_open()?;
        self.poisoned.check()
    }

    fn poison(&self, err: Error) -> Error {
        self.poisoned.set(err)
    }

    fn wake_maintenance(&self) {
        *self.wake.lock() = true;
        self.wake_cv.notify_all();
    }

    fn snapshot(&self) -> Snapshot {
        let (version, entries) = {
            let st = self.state.read();
            (st.version.clone(), st.active.entries().to_vec())
        };
        Snapshot { version, active: MemView::resolve(&entries) }
    }

    fn validate_doc<'a>(&self, doc: &NewDocument<'a>) -> Result<TokenMatrix<'a>> {
        let tokens = TokenMatrix::new(doc.tokens, self.options.dim as usize)
            .map_err(|e| Error::InvalidInput(format!("document {}: {e}", doc.id)))?;
        if doc.tokens.len() > MAX_DOC_VALUES {
            return Err(Error::InvalidInput(format!(
                "document {}: {} token values exceed the limit of {MAX_DOC_VALUES}",
                doc.id,
                doc.tokens.len()
            )));
        }
        if doc.payload.is_some_and(|p| p.len() > MAX_PAYLOAD_BYTES) {
            return Err(Error::InvalidInput(format!(
                "document {}: payload of {} bytes exceeds the limit of {MAX_PAYLOAD_BYTES}",
                doc.id,
                doc.payload.map_or(0, |p| p.len())
            )));
        }
        Ok(tokens)
    }

    /// Where `id`'s visible version is, consistent across memtables and catalog.
    fn lookup(&self, id: u64) -> Result<Option<Found>> {
        let st = self.state.read();
        if let Some(e) = st.active.get(id) {
            return Ok(e.doc.clone().map(Found::Memory));
        }
        if let Some(frozen) = &st.version.frozen {
            if let Some(d) = frozen.latest.get(&id) {
                return Ok(d.clone().map(Found::Memory));
            }
        }
        // The catalog changes only under the state write lock (see `commit`), so this read agrees
        // with the version held here.
        let Some(loc) = self.catalog.location(id)? else { return Ok(None) };
        let seg = st.version.segments.iter().find(|s| s.handle.id == loc.segment).ok_or_else(|| {
            Error::corruption(
                self.catalog.path(),
                0,
                format!("id {id} points at segment {} which is not live", loc.segment),
            )
        })?;
        Ok(Some(Found::Segment(seg.handle.clone(), loc.ordinal)))
    }

    fn get(&self, id: u64) -> Result<Option<StoredDocument>> {
        Ok(match self.lookup(id)? {
            None => None,
            Some(Found::Memory(doc)) => {
                Some(StoredDocument { id, tokens: doc.tokens.to_f32_vec()?, payload: doc.payload.clone() })
            }
            Some(Found::Segment(handle, ordinal)) => {
                let r = &handle.reader;
                Some(StoredDocument {
                    id,
                    tokens: r.tokens(ordinal as usize).to_f32_vec(),
                    payload: r.payload(ordinal as usize).to_vec(),
                })
            }
        })
    }

    /// True if `id` has a logged, not yet visible version (Sync mode, fsync in flight).
    fn pending_state(&self, id: u64) -> Option<bool> {
        self.pending.lock().iter().rev().find(|e| e.id == id).map(|e| e.doc.is_some())
    }

    fn exists_for_write(&self, id: u64) -> Result<bool> {
        if let Some(present) = self.pending_state(id) {
            return Ok(present);
        }
        Ok(self.lookup(id)?.is_some())
    }

    fn write_docs(&self, docs: &[NewDocument<'_>], mode: WriteMode) -> Result<()> {
        if docs.is_empty() {
            return Ok(());
        }
        if docs.len() > MAX_BATCH_DOCS {
            return Err(Error::InvalidInput(format!(
                "{} documents exceed the batch limit of {MAX_BATCH_DOCS}",
                docs.len()
            )));
        }
        let mut entries = Vec::with_capacity(docs.len());
        for doc in docs {
            let tokens = self.validate_doc(doc)?;
            let owned = OwnedTokens::from_f32(tokens.as_slice(), self.options.storage)?;
            entries.push(Arc::new(MemDoc { id: doc.id, tokens: owned, payload: doc.payload.unwrap_or(&[]).to_vec() }));
        }
        if mode == WriteMode::Insert {
            let mut seen = HashSet::with_capacity(docs.len());
            for d in docs {
                if !seen.insert(d.id) {
                    return Err(Error::InvalidInput(format!("document id {} appears twice in the batch", d.id)));
                }
            }
        }
        self.stall_while_flush_lags();
        let mut buf = Vec::new();
        let writer = self.writer.lock();
        self.check_writable()?;
        if mode == WriteMode::Insert {
            for d in docs {
                if self.exists_for_write(d.id)? {
                    return Err(Error::IdExists { id: d.id });
                }
            }
        }
        let first = writer.next_seq;
        for (i, doc) in entries.iter().enumerate() {
            encode_put(
                &mut buf,
                first + i as u64,
                doc.id,
                self.options.dim,
                self.options.storage,
                &doc.tokens.to_le_bytes(),
                &doc.payload,
            );
        }
        let mem: Vec<MemEntry> = entries
            .into_iter()
            .enumerate()
            .map(|(i, d)| MemEntry { id: d.id, seq: first + i as u64, doc: Some(d) })
            .collect();
        self.log_and_apply(writer, &buf, mem)
    }

    fn delete(&self, id: u64) -> Result<bool> {
        let writer = self.writer.lock();
        self.check_writable()?;
        if !self.exists_for_write(id)? {
            return Ok(false);
        }
        let seq = writer.next_seq;
        let mut buf = Vec::new();
        encode_delete(&mut buf, seq, id);
        self.log_and_apply(writer, &buf, vec![MemEntry { id, seq, doc: None }])?;
        Ok(true)
    }

    /// Appends `buf` (records `entries[0].seq ..= last`) to the WAL and makes the entries visible
    /// when the durability policy allows (see the module docs). Consumes the writer guard.
    fn log_and_apply(
        &self,
        mut writer: parking_lot::MutexGuard<'_, WriterState>,
        buf: &[u8],
        entries: Vec<MemEntry>,
    ) -> Result<()> {
        let last = entries.last().expect("at least one entry").seq;
        self.wal.append(buf, last).map_err(|e| self.poison(e))?;
        writer.next_seq = last + 1;
        match self.durability {
            Durability::Sync => {
                self.pending.lock().extend(entries);
                drop(writer);
                self.wal.sync_to(last).map_err(|e| self.poison(e))?;
                self.publish(last);
            }
            Durability::Periodic(_) | Durability::None => {
                let mut st = self.state.write();
                for e in entries {
                    st.active.push(e);
                }
                drop(st);
                drop(writer);
            }
        }
        self.after_write()
    }

    /// Moves logged entries up to `upto` (durable) from `pending` into the memtable, in order.
    fn publish(&self, upto: u64) {
        let mut pending = self.pending.lock();
        if pending.front().is_none_or(|e| e.seq > upto) {
            return;
        }
        let mut st = self.state.write();
        while pending.front().is_some_and(|e| e.seq <= upto) {
            st.active.push(pending.pop_front().expect("checked"));
        }
    }

    /// With background maintenance, a writer that outruns flushing waits while the active memtable
    /// holds more than [`STALL_FACTOR`] times its thresholds (a "write stall", as in RocksDB), so
    /// memory stays bounded and ingest settles at the rate flushes sustain.
    fn stall_while_flush_lags(&self) {
        if !self.open_options.background {
            return;
        }
        let max_docs = self.open_options.memtable_max_docs.saturating_mul(STALL_FACTOR);
        let max_bytes = self.open_options.memtable_max_bytes.saturating_mul(STALL_FACTOR);
        loop {
            let over = {
                let st = self.state.read();
                st.active.distinct_ids() >= max_docs || st.active.bytes() >= max_bytes
            };
            if !over || self.closed.load(Ordering::Acquire) || self.poisoned.is_set() {
                return;
            }
            self.wake_maintenance();
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn memtable_full(&self) -> bool {
        let st = self.state.read();
        st.active.distinct_ids() >= self.open_options.memtable_max_docs
            || st.active.bytes() >= self.open_options.memtable_max_bytes
    }

    fn after_write(&self) -> Result<()> {
        if !self.memtable_full() {
            return Ok(());
        }
        if self.open_options.background {
            self.wake_maintenance();
            Ok(())
        } else {
            // The write itself is acknowledged; a failing flush poisons the handle and is reported
            // by the next write.
            let _ = self.flush();
            Ok(())
        }
    }

    fn maintenance_loop(self: Arc<Self>) {
        loop {
            {
                let mut woken = self.wake.lock();
                if !*woken && !self.closed.load(Ordering::Acquire) {
                    self.wake_cv.wait_for(&mut woken, Duration::from_secs(1));
                }
                *woken = false;
            }
            if self.closed.load(Ordering::Acquire) {
                return;
            }
            if self.poisoned.is_set() {
                continue;
            }
            if self.memtable_full() {
                let _ = self.flush();
            }
            let _ = self.compact_step_all();
        }
    }

    /// `Durability::Periodic`: fsyncs the WAL every `interval` (waking at least every 100 ms so
    /// `close` is not held up by a long interval).
    fn sync_loop(self: Arc<Self>, interval: Duration) {
        let mut last = std::time::Instant::now();
        while !self.closed.load(Ordering::Acquire) {
            std::thread::sleep(interval.saturating_sub(last.elapsed()).min(Duration::from_millis(100)));
            if last.elapsed() < interval {
                continue;
            }
            last = std::time::Instant::now();
            let written = self.wal.written_seq();
            if !self.poisoned.is_set() {
                let _ = self.wal.sync_to(written).map_err(|e| self.poison(e));
            }
        }
    }

    fn segment_config(&self, segment_id: u64, docs: u64, maint: &Maintenance) -> (SegmentConfig, bool) {
        let retrain = match &maint.codebook {
            None => true,
            Some((_, trained)) => *trained < self.options.pq_settled_docs && docs >= 2 * *trained,
        };
        let pq = match (&maint.codebook, retrain) {
            (Some((cb, _)), false) => PqSource::Reuse(cb.clone()),
            _ => PqSource::Train(self.options.pq),
        };
        (SegmentConfig { segment_id, storage: self.options.storage, pq, graph: Some(self.options.graph) }, retrain)
    }

    fn open_segment(&self, path: &Path, id: u64, shared: Option<&Arc<PqCodebook>>) -> Result<Arc<SegmentHandle>> {
        let reader = SegmentReader::open(path)?;
        let key = codebook_key(&reader);
        let codebook = match shared {
            Some(cb) => cb.clone(),
            None => Arc::new(reader.pq_codebook()?),
        };
        Ok(Arc::new(SegmentHandle {
            storage: self.storage.clone(),
            id,
            reader,
            codebook,
            codebook_key: key,
            obsolete: false.into(),
        }))
    }

    /// Applies `commit` to the catalog and installs the version `update` makes, under the state
    /// write lock so readers see the catalog and the version change together.
    fn commit(&self, commit: &Commit<'_>, update: impl FnOnce(&Version) -> Version) -> Result<()> {
        let mut st = self.state.write();
        self.catalog.commit(commit).map_err(|e| self.poison(e))?;
        st.version = Arc::new(update(&st.version));
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        let mut maint = self.maintenance.lock();
        self.check_writable()?;
        // 1. Freeze: everything logged so far goes to the frozen memtable; the WAL continues in a
        //    new file so the frozen records can be trimmed after the commit.
        let (frozen, checkpoint) = {
            let writer = self.writer.lock();
            let has_pending = !self.pending.lock().is_empty();
            if self.state.read().active.is_empty() && !has_pending {
                return Ok(());
            }
            self.wal.rotate(writer.next_seq).map_err(|e| self.poison(e))?;
            self.publish(u64::MAX);
            let mut st = self.state.write();
            let frozen = Arc::new(MemView::resolve(&st.active.take()));
            let mut version = (*st.version).clone();
            version.frozen = Some(frozen.clone());
            st.version = Arc::new(version);
            (frozen, writer.next_seq - 1)
        };
        // 2. Write the segment (if any document survives).
        let segment_id = maint.next_segment;
        let mut new_segment: Option<(Arc<SegmentHandle>, SegmentRecord, Option<u64>)> = None;
        if !frozen.docs.is_empty() {
            let n = frozen.docs.len() as u64;
            let (config, trains) = self.segment_config(segment_id, n, &maint);
            let path = self.path.join(SEGMENTS_DIR).join(segment::file_name(segment_id));
            let summary = self.write_memtable_segment(&path, config, &frozen.docs).map_err(|e| self.poison(e))?;
            let shared = if trains { None } else { maint.codebook.as_ref().map(|(cb, _)| cb) };
            let handle = self.open_segment(&summary.path, segment_id, shared).map_err(|e| self.poison(e))?;
            let record = SegmentRecord { id: segment_id, doc_count: summary.doc_count, file_len: summary.bytes };
            new_segment = Some((handle, record, trains.then_some(n)));
        }
        // 3. Commit: one batch.
        let mut commit = Commit { checkpoint: Some(checkpoint), ..Default::default() };
        let mut cleared: Vec<Location> = Vec::new();
        let mut ids: Vec<(&u64, &Option<Arc<MemDoc>>)> = frozen.latest.iter().collect();
        ids.sort_by_key(|(id, _)| **id);
        let ordinal_of: HashMap<u64, u32> = frozen.docs.iter().enumerate().map(|(i, d)| (d.id, i as u32)).collect();
        for (&id, doc) in ids {
            let old = self.catalog.location(id).map_err(|e| self.poison(e))?;
            if let Some(old) = old {
                cleared.push(old);
            }
            match doc {
                Some(_) => commit.put_locations.push((id, Location { segment: segment_id, ordinal: ordinal_of[&id] })),
                None if old.is_some() => commit.delete_ids.push(id),
                None => {}
            }
        }
        if let Some((handle, record, trained)) = &new_segment {
            commit.add_segments.push(*record);
            commit.next_segment = Some(segment_id + 1);
            if let Some(docs) = trained {
                commit.codebook = Some((&handle.codebook, *docs));
            }
        }
        self.commit(&commit, |v| {
            let mut segments = clear_live(&v.segments, &cleared);
            if let Some((handle, _, _)) = &new_segment {
                let n = handle.reader.doc_count();
                segments.push(LiveSegment { handle: handle.clone(), live: Arc::new(LiveBits::all(n)) });
            }
            Version { segments, frozen: None }
        })?;
        if let Some((handle, _, trained)) = new_segment {
            maint.next_segment = segment_id + 1;
            if let Some(docs) = trained {
                maint.codebook = Some((handle.codebook.clone(), docs));
            }
        }
        // 4. The records up to the checkpoint are in segments now.
        wal::trim(&*self.storage, &self.path.join(WAL_DIR), checkpoint).map_err(|e| self.poison(e))?;
        Ok(())
    }

    fn write_memtable_segment(
        &self,
        path: &Path,
        config: SegmentConfig,
        docs: &[Arc<MemDoc>],
    ) -> Result<crate::segment::SegmentSummary> {
        let dim = self.options.dim as usize;
        let mut writer = SegmentWriter::create_in(self.storage.clone(), path, self.encoder.clone(), config)?;
        for chunk in docs.chunks(256) {
            let values: Vec<Vec<f32>> = chunk.iter().map(|d| d.tokens.to_f32_vec()).collect::<Result<_>>()?;
            let batch: Vec<Document<'_>> = chunk
                .iter()
                .zip(&values)
                .map(|(d, v)| {
                    Ok(Document {
                        id: d.id,
                        tokens: TokenMatrix::new(v, dim)?,
                        payload: if d.payload.is_empty() { None } else { Some(&d.payload[..]) },
                    })
                })
                .collect::<Result<_>>()?;
            writer.add_batch(&batch)?;
        }
        writer.finish()
    }

    fn compact(&self) -> Result<CompactionReport> {
        let mut report = CompactionReport::default();
        loop {
            let step = self.compact_step()?;
            if step.merges == 0 {
                return Ok(report);
            }
            report.merges += step.merges;
            report.inputs += step.inputs;
            report.docs_written += step.docs_written;
            report.bytes_written += step.bytes_written;
        }
    }

    fn compact_step_all(&self) -> Result<()> {
        while !self.closed.load(Ordering::Acquire) {
            if self.compact_step()?.merges == 0 {
                break;
            }
            // Let a full memtable flush between merges.
            if self.memtable_full() {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Plans once and runs every merge of the plan.
    fn compact_step(&self) -> Result<CompactionReport> {
        let mut maint = self.maintenance.lock();
        self.check_writable()?;
        let version = self.state.read().version.clone();
        let stats: Vec<SegmentStats> = version
            .segments
            .iter()
            .map(|s| SegmentStats {
                id: s.handle.id,
                doc_count: s.handle.reader.doc_count() as u64,
                live_docs: s.live.live_count() as u64,
            })
            .collect();
        let plans = self.open_options.merge_policy.plan(&stats);
        let mut report = CompactionReport::default();
        for plan in plans {
            let (docs, bytes) = self.run_merge(&mut maint, &plan)?;
            report.merges += 1;
            report.inputs += plan.inputs.len() as u64;
            report.docs_written += docs;
            report.bytes_written += bytes;
        }
        Ok(report)
    }

    fn run_merge(&self, maint: &mut Maintenance, plan: &MergePlan) -> Result<(u64, u64)> {
        let version = self.state.read().version.clone();
        let inputs: Vec<&LiveSegment> =
            version.segments.iter().filter(|s| plan.inputs.contains(&s.handle.id)).collect();
        debug_assert_eq!(inputs.len(), plan.inputs.len());
        let live_total: u64 = inputs.iter().map(|s| s.live.live_count() as u64).sum();
        let segment_id = maint.next_segment;
        let (config, trains) = self.segment_config(segment_id, live_total, maint);
        let path = self.path.join(SEGMENTS_DIR).join(segment::file_name(segment_id));
        let merge_inputs: Vec<MergeInput<'_>> =
            inputs.iter().map(|s| MergeInput { id: s.handle.id, reader: &s.handle.reader, live: &s.live }).collect();
        let merged = merge(self.storage.clone(), &merge_inputs, &path, self.encoder.clone(), config, |_| {})
            .map_err(|e| self.poison(e))?;
        let mut commit = Commit { remove_segments: plan.inputs.clone(), ..Default::default() };
        let mut output = None;
        let mut written = (0, 0);
        if let Some(merged) = &merged {
            let shared = if trains { None } else { maint.codebook.as_ref().map(|(cb, _)| cb) };
            let handle = self.open_segment(&merged.summary.path, segment_id, shared).map_err(|e| self.poison(e))?;
            commit.add_segments.push(SegmentRecord {
                id: segment_id,
                doc_count: merged.summary.doc_count,
                file_len: merged.summary.bytes,
            });
            commit.next_segment = Some(segment_id + 1);
            commit.put_locations = merged
                .moved
                .iter()
                .map(|(id, _, ord)| (*id, Location { segment: segment_id, ordinal: *ord }))
                .collect();
            written = (merged.summary.doc_count, merged.summary.bytes);
            output = Some(handle);
        }
        let trained_docs = trains.then_some(live_total);
        if let (Some(handle), Some(docs)) = (&output, trained_docs) {
            commit.codebook = Some((&handle.codebook, docs));
        }
        self.commit(&commit, |v| {
            let mut segments: Vec<LiveSegment> = Vec::with_capacity(v.segments.len());
            for s in &v.segments {
                if plan.inputs.contains(&s.handle.id) {
                    s.handle.obsolete.store(true, Ordering::Release);
                } else {
                    segments.push(s.clone());
                }
            }
            if let Some(handle) = &output {
                let n = handle.reader.doc_count();
                segments.push(LiveSegment { handle: handle.clone(), live: Arc::new(LiveBits::all(n)) });
            }
            Version { segments, frozen: v.frozen.clone() }
        })?;
        if let Some(handle) = output {
            maint.next_segment = segment_id + 1;
            if let Some(docs) = trained_docs {
                maint.codebook = Some((handle.codebook.clone(), docs));
            }
        }
        Ok(written)
    }

    fn stats(&self) -> Result<CollectionStats> {
        let snapshot = self.snapshot();
        let version = &snapshot.version;
        let mut segments = Vec::new();
        let mut segment_bytes = 0;
        let mut live_in_segments = 0u64;
        let mut ram = 0u64;
        let mut codebooks = HashSet::new();
        for s in &version.segments {
            let r = &s.handle.reader;
            let live = s.live.live_count() as u64;
            live_in_segments += live;
            segment_bytes += r.file_len();
            ram += r.pq_codes().len() as u64 + 16 * (r.doc_count() as u64 + 1) + r.doc_count() as u64 / 8;
            if codebooks.insert(s.handle.codebook_key) {
                ram += s.handle.codebook.centroids().len() as u64 * 8;
            }
            segments.push(SegmentStatsInfo {
                id: s.handle.id,
                doc_count: r.doc_count() as u64,
                live_docs: live,
                bytes: r.file_len(),
                has_graph: r.graph().is_some(),
                pq_subspaces: r.pq_subspaces() as u64,
            });
        }
        // Documents: live in segments, minus those the memtables replace or delete, plus the
        // memtables' live documents.
        let mut decided: HashMap<u64, bool> = HashMap::new();
        if let Some(f) = &version.frozen {
            for (id, d) in &f.latest {
                decided.insert(*id, d.is_some());
            }
        }
        for (id, d) in &snapshot.active.latest {
            decided.insert(*id, d.is_some());
        }
        let mut documents = live_in_segments;
        for (id, present) in decided {
            if self.catalog.location(id)?.is_some() {
                documents -= 1;
            }
            documents += present as u64;
        }
        let (memtable_ops, memtable_bytes) = {
            let st = self.state.read();
            (st.active.len() as u64, st.active.bytes() as u64)
        };
        ram += memtable_bytes;
        Ok(CollectionStats {
            documents,
            memtable_ops,
            memtable_bytes,
            frozen_ops: version.frozen.as_ref().map_or(0, |f| f.latest.len() as u64),
            segments,
            segment_bytes,
            wal_bytes: dir_bytes(&self.path.join(WAL_DIR)),
            catalog_bytes: self.catalog.disk_bytes(),
            checkpoint: self.catalog.checkpoint()?,
            last_seq: self.wal.written_seq(),
            ram_bytes: ram,
        })
    }

    fn verify(&self) -> Result<()> {
        let version = self.state.read().version.clone();
        for s in &version.segments {
            s.handle.reader.verify()?;
        }
        // Every id map entry points at a live ordinal holding that id; live counts agree.
        let mut counted: HashMap<u64, usize> = HashMap::new();
        // Hold the state lock so no commit changes the catalog while it is read.
        {
            let st = self.state.read();
            self.catalog.for_each_location(|id, loc| {
                let seg = st.version.segments.iter().find(|s| s.handle.id == loc.segment).ok_or_else(|| {
                    Error::corruption(
                        self.catalog.path(),
                        0,
                        format!("id {id} points at unknown segment {}", loc.segment),
                    )
                })?;
                let r = &seg.handle.reader;
                if loc.ordinal as usize >= r.doc_count()
                    || r.doc_ids()[loc.ordinal as usize] != id
                    || !seg.live.is_live(loc.ordinal)
                {
                    return Err(Error::corruption(
                        self.catalog.path(),
                        0,
                        format!(
                            "id {id} points at ordinal {} of segment {}, which does not hold it",
                            loc.ordinal, loc.segment
                        ),
                    ));
                }
                *counted.entry(loc.segment).or_default() += 1;
                Ok(())
            })?;
            for s in &st.version.segments {
                let n = counted.get(&s.handle.id).copied().unwrap_or(0);
                if n != s.live.live_count() {
                    return Err(Error::corruption(
                        s.handle.reader.path(),
                        0,
                        format!("{} live documents in memory, {n} in the catalog", s.live.live_count()),
                    ));
                }
            }
        }
        let checkpoint = self.catalog.checkpoint()?;
        wal::replay(&self.path.join(WAL_DIR), checkpoint, crate::wal::WalRecovery::Strict, None, |_| Ok(()))?;
        Ok(())
    }
}

enum Found {
    Memory(Arc<MemDoc>),
    Segment(Arc<SegmentHandle>, u32),
}

/// Copies of `segments` with the `cleared` locations marked dead (copy-on-write per segment).
fn clear_live(segments: &[LiveSegment], cleared: &[Location]) -> Vec<LiveSegment> {
    let mut by_segment: HashMap<u64, Vec<u32>> = HashMap::new();
    for loc in cleared {
        by_segment.entry(loc.segment).or_default().push(loc.ordinal);
    }
    segments
        .iter()
        .map(|s| match by_segment.get(&s.handle.id) {
            None => s.clone(),
            Some(ords) => {
                let mut live = (*s.live).clone();
                for &o in ords {
                    live.clear(o);
                }
                LiveSegment { handle: s.handle.clone(), live: Arc::new(live) }
            }
        })
        .collect()
}
