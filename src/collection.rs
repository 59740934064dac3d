//! [`Collection`]: the writing handle, a thin façade over the stages of the data flow:
//!
//! ```text
//! insert/upsert/delete ─► write (validate, WAL, memtable) ─► flush (memtable → segment, catalog
//! commit) ─► compaction::worker (merges) ; open ─► recovery ; search ─► search (FDE → candidates
//! → rerank) over a snapshot ; stats, check (verify)
//! ```
//!
//! The shared state and its locks are in [`crate::engine`]; each stage's crash reasoning is in its
//! own module's docs. A read-only handle beside a running writer is [`crate::CollectionReader`].

use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::Mutex;

use crate::engine::Engine;
use crate::error::Result;
use crate::filter::IndexedField;
use crate::options::{CollectionOptions, Durability, OpenOptions};
use crate::search::{search_snapshot, Hit, SearchParams, SearchProfile};
use crate::snapshot::StoredDocument;
use crate::stats::{CollectionStats, StatsView};
use crate::write::WriteMode;

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
    /// Merges whose output kept its largest input's graph and inserted the other documents into
    /// it (the rest built their graph anew, or got none).
    pub graphs_extended: u64,
}

/// An open collection, for reading and writing. `Send + Sync`: share it between threads (e.g. in
/// an `Arc`). At most one per collection directory across all processes (the others get
/// [`crate::Error::Locked`]); any number of [`crate::CollectionReader`]s may sit beside it.
pub struct Collection {
    engine: Arc<Engine>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Collection {
    /// Creates a new collection in `path` (which must not exist or be an empty directory) and opens
    /// it for writing.
    pub fn create(path: impl AsRef<Path>, options: CollectionOptions, open: OpenOptions) -> Result<Self> {
        Ok(Self::start(Engine::create(path.as_ref(), options, open)?))
    }

    /// Opens (and recovers) the collection at `path` with default [`OpenOptions`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, OpenOptions::default())
    }

    /// Opens (and recovers) the collection at `path`: catalog → segments (structure checked,
    /// orphans deleted) → WAL replay after the checkpoint.
    pub fn open_with(path: impl AsRef<Path>, open: OpenOptions) -> Result<Self> {
        Ok(Self::start(Engine::open(path.as_ref(), open)?))
    }

    fn start(engine: Engine) -> Self {
        let engine = Arc::new(engine);
        let mut threads = Vec::new();
        if engine.open_options.background {
            let e = engine.clone();
            threads.push(std::thread::spawn(move || e.flush_loop()));
            let e = engine.clone();
            threads.push(std::thread::spawn(move || e.compaction_loop()));
        }
        if let Durability::Periodic(interval) = engine.durability {
            let e = engine.clone();
            threads.push(std::thread::spawn(move || e.sync_loop(interval)));
        }
        // A replayed memtable may already be over its threshold.
        engine.flush_wake.notify();
        Collection { engine, threads: Mutex::new(threads) }
    }

    /// The collection's directory.
    pub fn path(&self) -> &Path {
        &self.engine.path
    }

    /// The options fixed at creation.
    pub fn options(&self) -> &CollectionOptions {
        &self.engine.options
    }

    /// Inserts a new document; fails with [`crate::Error::IdExists`] if `id` is present.
    pub fn insert(&self, id: u64, tokens: &[f32], payload: Option<&[u8]>) -> Result<()> {
        self.engine.write_docs(&[NewDocument { id, tokens, payload }], WriteMode::Insert)
    }

    /// Inserts or replaces a document; the old version disappears atomically.
    pub fn upsert(&self, id: u64, tokens: &[f32], payload: Option<&[u8]>) -> Result<()> {
        self.engine.write_docs(&[NewDocument { id, tokens, payload }], WriteMode::Upsert)
    }

    /// Inserts many new documents with one WAL write and one fsync; all or none are applied (if
    /// any id exists or repeats, or any document is invalid, nothing is written).
    pub fn insert_batch(&self, docs: &[NewDocument<'_>]) -> Result<()> {
        self.engine.write_docs(docs, WriteMode::Insert)
    }

    /// Like [`Collection::insert_batch`] but replacing existing ids.
    pub fn upsert_batch(&self, docs: &[NewDocument<'_>]) -> Result<()> {
        self.engine.write_docs(docs, WriteMode::Upsert)
    }

    /// Indexes one more payload field for filtered search ([`crate::filter`]), for the documents
    /// already stored as for those to come. Refused (`InvalidInput`, nothing changed) when the
    /// name is already indexed or when a stored document gives the field a value of another kind
    /// (the error names it). Durable when it returns. Segments written before it are filtered by
    /// reading their payloads (same results, slower) until compaction rewrites them with the
    /// field's column.
    pub fn index_field(&self, field: IndexedField) -> Result<()> {
        self.engine.check_open()?;
        self.engine.index_field(field)
    }

    /// The indexed payload fields: [`CollectionOptions::indexed_fields`] plus those added by
    /// [`Collection::index_field`].
    pub fn indexed_fields(&self) -> Vec<IndexedField> {
        self.engine.fields().to_vec()
    }

    /// Deletes `id`. Returns whether it existed (nothing is logged if it did not).
    pub fn delete(&self, id: u64) -> Result<bool> {
        self.engine.delete(id)
    }

    /// The current version of `id`.
    pub fn get(&self, id: u64) -> Result<Option<StoredDocument>> {
        self.engine.check_open()?;
        self.engine.lookup(id)?.map(|f| f.read(id)).transpose()
    }

    /// The payload of `id`'s current version, without reading its tokens (`None`: absent).
    pub fn payload(&self, id: u64) -> Result<Option<Vec<u8>>> {
        self.engine.check_open()?;
        Ok(self.engine.lookup(id)?.map(|f| f.payload()))
    }

    /// Whether `id` is present.
    pub fn contains(&self, id: u64) -> Result<bool> {
        self.engine.check_open()?;
        Ok(self.engine.lookup(id)?.is_some())
    }

    /// The best `params.k` documents for `query` (`n_tokens × dim`, row-major) by MaxSim.
    pub fn search(&self, query: &[f32], params: &SearchParams) -> Result<Vec<Hit>> {
        self.engine.check_open()?;
        let snapshot = self.engine.snapshot();
        search_snapshot(&snapshot, &self.engine.encoder, self.engine.options.dim as usize, query, params, None)
    }

    /// Many queries in parallel (rayon), each as [`Collection::search`], on one snapshot.
    pub fn search_batch(&self, queries: &[&[f32]], params: &SearchParams) -> Result<Vec<Vec<Hit>>> {
        self.engine.check_open()?;
        let snapshot = self.engine.snapshot();
        crate::search::search_batch(&snapshot, &self.engine.encoder, self.engine.options.dim as usize, queries, params)
    }

    /// Exact MaxSim of `query` against the documents `ids` only (ids not present are skipped;
    /// repeats count once): the best `params.k`, ties by id. For searching within a small subset
    /// (an allow-list), where scoring every listed document exactly is cheaper than a filtered
    /// graph search.
    pub fn search_ids(&self, query: &[f32], ids: &[u64], params: &SearchParams) -> Result<Vec<Hit>> {
        self.engine.check_open()?;
        let dim = self.engine.options.dim as usize;
        crate::search::search_ids(dim, &self.engine.fields(), query, params, ids, |id| self.engine.lookup(id))
    }

    /// Like [`Collection::search`], also returning where the time went.
    pub fn search_profiled(&self, query: &[f32], params: &SearchParams) -> Result<(Vec<Hit>, SearchProfile)> {
        self.engine.check_open()?;
        let snapshot = self.engine.snapshot();
        let mut profile = SearchProfile::default();
        let hits = search_snapshot(
            &snapshot,
            &self.engine.encoder,
            self.engine.options.dim as usize,
            query,
            params,
            Some(&mut profile),
        )?;
        Ok((hits, profile))
    }

    /// Writes the memtable to a new segment and commits it (no-op when empty). Returns when the
    /// segment is committed and the WAL trimmed.
    pub fn flush(&self) -> Result<()> {
        self.engine.check_open()?;
        self.engine.flush()
    }

    /// Runs the merge policy until it has nothing left to merge.
    pub fn compact(&self) -> Result<CompactionReport> {
        self.engine.check_open()?;
        self.engine.compact()
    }

    /// Counts and sizes, of one consistent view (no commit lands while they are read).
    pub fn stats(&self) -> Result<CollectionStats> {
        let e = &self.engine;
        e.check_open()?;
        let commit = e.commit_lock();
        let snapshot = e.snapshot();
        let (memtable_ops, memtable_bytes) = {
            let st = e.state.read();
            (st.active.len() as u64, st.active.bytes() as u64)
        };
        crate::stats::collect(&StatsView {
            path: &e.path,
            catalog: &e.catalog,
            snapshot: &snapshot,
            memtable_ops,
            memtable_bytes,
            last_seq: e.wal.written_seq(),
            held_codebook: commit.codebook.as_ref().map(|c| &c.codebook),
        })
    }

    /// Checks every checksum of every segment, the id map against the segments, and that the WAL
    /// replays (without modifying it).
    pub fn verify(&self) -> Result<()> {
        let e = &self.engine;
        e.check_open()?;
        // Checksums outside any lock (the version's files cannot change); the id map under the
        // commit lock, so no commit changes the catalog while it is read.
        let version = e.state.read().version.clone();
        for s in &version.segments {
            s.handle.reader.verify()?;
        }
        let _commit = e.commit_lock();
        let version = e.state.read().version.clone();
        crate::check::verify_view(&e.path, &e.catalog, &version, false)
    }

    /// Stops background work, fsyncs the WAL and releases the lock. Dropping the handle does the
    /// same but cannot report errors.
    pub fn close(self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&self) -> Result<()> {
        let e = &self.engine;
        if e.closed.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return Ok(());
        }
        e.flush_wake.notify();
        e.compact_wake.notify();
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
        // Wait for a flush or merge started by a caller on another thread.
        let _f = e.flush_lock.lock();
        let _m = e.merge_lock.lock();
        let _w = e.writer.lock();
        if e.poisoned.is_set() {
            return Ok(());
        }
        let written = e.wal.written_seq();
        e.wal.sync_to(written)
    }

    /// The last error of the background thread or write path that poisoned this handle, if any.
    pub fn poisoned(&self) -> Option<String> {
        self.engine.poisoned.reason()
    }
}

impl Drop for Collection {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{generate, CorpusSpec};

    /// A reopened writer's segments take the catalog's decoded codebook (their sections prove
    /// equal to it) instead of decoding a second copy of the same centroids.
    #[test]
    fn a_reopened_writer_shares_its_catalog_codebook_with_its_segments() {
        let dir = std::env::temp_dir().join(format!("quiverdb-codebook-share-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let options = crate::testing::small_collection_options();
        let dim = crate::testing::DIM;
        let corpus = generate(&CorpusSpec { n_docs: 300, n_queries: 1, dim, ..CorpusSpec::small() }).unwrap();
        let quiet = || OpenOptions { background: false, ..Default::default() };
        {
            let c = Collection::create(&dir, options, quiet()).unwrap();
            let docs: Vec<NewDocument<'_>> = (0..300)
                .map(|i| NewDocument { id: i as u64, tokens: corpus.docs.get(i).as_slice(), payload: None })
                .collect();
            c.insert_batch(&docs).unwrap();
            c.flush().unwrap();
            c.close().unwrap();
        }
        let c = Collection::open_with(&dir, quiet()).unwrap();
        let catalog = c.engine.commit_lock().codebook.clone().unwrap().codebook;
        let version = c.engine.state.read().version.clone();
        let segment = &version.segments[0].handle;
        // The writer holds the catalog's copy from open on, and stats count it ...
        let before = c.stats().unwrap().ram_bytes;
        assert!(before >= catalog.resident_bytes() as u64);
        let used = segment.codebook.get_or_load(&segment.reader).unwrap();
        assert!(Arc::ptr_eq(&used, &catalog), "one decoded copy, the catalog's");
        // ... once, also when the segment has taken it.
        assert_eq!(c.stats().unwrap().ram_bytes, before);
        assert_eq!(*used, segment.reader.pq_codebook().unwrap(), "and it is the segment's codebook");
        drop(version);
        c.close().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
