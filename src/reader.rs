//! [`CollectionReader`]: a read-only handle that changes nothing on disk, beside one writer in this
//! or another process (as SQLite, LMDB and LanceDB allow), for operators' tools and read replicas
//! of an application.
//!
//! It takes no lock, deletes no orphan, creates no WAL file and trims nothing; the catalog is opened
//! read-only. It sees the catalog as of open (or the last [`CollectionReader::refresh`]) plus the WAL
//! records after that catalog's checkpoint, replayed into a private memtable.
//!
//! # Consistency against a running writer
//! A load reads, in order: the catalog (manifest, id map, checkpoint C), the segments it names, the
//! WAL after C, then C again. The writer can interfere in three ways, each detected and answered
//! by starting the load over (a bounded number of times, with a short back-off):
//! - a merge deletes a segment the manifest named before it was opened: the file is missing;
//! - a flush trims WAL files after the catalog was read: a WAL file vanishes mid-replay, or the
//!   checkpoint read again differs from C (records between the two checkpoints may be missing);
//! - RocksDB's read-only open races the writer's own file changes: a catalog error.
//!
//! A segment deleted by the writer *after* it was opened stays readable: the handle holds its map.
//! A WAL record being appended while it is read ends the replay as a torn tail. The reader may see
//! a record that the writer has written but whose fsync (under `Durability::Sync`) has not finished;
//! a crash of the writer's machine could still lose it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;

use crate::catalog::Catalog;
use crate::encode::fde::FdeEncoder;
use crate::error::{Error, Result};
use crate::memtable::MemView;
use crate::options::CollectionOptions;
use crate::recovery::{self, SegmentMissing, CATALOG_DIR};
use crate::search::{search_snapshot, Hit, SearchParams, SearchProfile};
use crate::snapshot::{locate, stale_location, Found, Located, SegmentHandle, Snapshot, StoredDocument, Version};
use crate::stats::{CollectionStats, StatsView};
use crate::wal::WalRecovery;

/// Loads attempted before a refresh gives up on a writer that keeps changing the collection.
const MAX_LOAD_ATTEMPTS: u32 = 50;

/// One consistent state: a catalog, the version it describes and the WAL replayed after it.
struct ReadState {
    catalog: Catalog,
    snapshot: Snapshot,
    memtable_ops: u64,
    memtable_bytes: u64,
    last_seq: u64,
}

/// A read-only handle on a collection: search, get, stats and verify, beside a writer. `Send +
/// Sync`. Its view changes only at [`CollectionReader::refresh`].
pub struct CollectionReader {
    path: PathBuf,
    options: CollectionOptions,
    encoder: Arc<FdeEncoder>,
    state: RwLock<Arc<ReadState>>,
}

/// Why one load attempt did not produce a state.
enum Attempt {
    Done(ReadState),
    Retry(Option<Error>),
}

impl CollectionReader {
    /// Opens the collection at `path` for reading. Fails with [`Error::NotACollection`] if there is
    /// none; never waits for, or blocks, a writer.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        recovery::require_collection(path)?;
        let catalog = open_catalog_retrying(path)?;
        let options = recovery::stored_options(&catalog)?;
        let encoder = Arc::new(FdeEncoder::new(options.fde)?);
        drop(catalog);
        let state = load(path, &options, &encoder, &HashMap::new())?;
        Ok(CollectionReader { path: path.to_path_buf(), options, encoder, state: RwLock::new(Arc::new(state)) })
    }

    /// Catches up with the writer's commits and WAL records since the last load. Segments that
    /// are still live are not reopened.
    pub fn refresh(&self) -> Result<()> {
        let reuse: HashMap<u64, Arc<SegmentHandle>> = {
            let st = self.state.read();
            st.snapshot.version.segments.iter().map(|s| (s.handle.id, s.handle.clone())).collect()
        };
        let fresh = load(&self.path, &self.options, &self.encoder, &reuse)?;
        *self.state.write() = Arc::new(fresh);
        Ok(())
    }

    fn current(&self) -> Arc<ReadState> {
        self.state.read().clone()
    }

    /// The collection's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The options fixed at creation.
    pub fn options(&self) -> &CollectionOptions {
        &self.options
    }

    /// The indexed payload fields as of open or the last [`CollectionReader::refresh`].
    pub fn indexed_fields(&self) -> Vec<crate::filter::IndexedField> {
        self.current().snapshot.fields.to_vec()
    }

    /// The best `params.k` documents for `query` by MaxSim, as [`crate::Collection::search`].
    pub fn search(&self, query: &[f32], params: &SearchParams) -> Result<Vec<Hit>> {
        let st = self.current();
        search_snapshot(&st.snapshot, &self.encoder, self.options.dim as usize, query, params, None)
    }

    /// Many queries in parallel, each as [`CollectionReader::search`], on one view.
    pub fn search_batch(&self, queries: &[&[f32]], params: &SearchParams) -> Result<Vec<Vec<Hit>>> {
        let st = self.current();
        crate::search::search_batch(&st.snapshot, &self.encoder, self.options.dim as usize, queries, params)
    }

    /// Exact MaxSim against the documents `ids` only, as [`crate::Collection::search_ids`].
    pub fn search_ids(&self, query: &[f32], ids: &[u64], params: &SearchParams) -> Result<Vec<Hit>> {
        crate::search::search_ids(
            self.options.dim as usize,
            &self.current().snapshot.fields,
            query,
            params,
            ids,
            |id| self.find(id),
        )
    }

    /// Like [`CollectionReader::search`], also returning where the time went.
    pub fn search_profiled(&self, query: &[f32], params: &SearchParams) -> Result<(Vec<Hit>, SearchProfile)> {
        let st = self.current();
        let mut profile = SearchProfile::default();
        let hits =
            search_snapshot(&st.snapshot, &self.encoder, self.options.dim as usize, query, params, Some(&mut profile))?;
        Ok((hits, profile))
    }

    /// The visible version of `id`.
    pub fn get(&self, id: u64) -> Result<Option<StoredDocument>> {
        self.find(id)?.map(|f| f.read(id)).transpose()
    }

    /// The payload of `id`'s visible version, without reading its tokens (`None`: absent).
    pub fn payload(&self, id: u64) -> Result<Option<Vec<u8>>> {
        Ok(self.find(id)?.map(|f| f.payload()))
    }

    /// Whether `id` is visible.
    pub fn contains(&self, id: u64) -> Result<bool> {
        Ok(self.find(id)?.is_some())
    }

    fn find(&self, id: u64) -> Result<Option<Found>> {
        let st = self.current();
        if let Some(d) = st.snapshot.active.latest.get(&id) {
            return Ok(d.clone().map(Found::Memory));
        }
        match locate(&st.catalog, &st.snapshot.version, id)? {
            Located::Absent => Ok(None),
            Located::Found(h, ord) => Ok(Some(Found::Segment(h, ord))),
            // The catalog and the version were loaded together: a disagreement is damage.
            Located::Stale(loc) => Err(stale_location(&st.catalog, id, loc)),
        }
    }

    /// Counts and sizes of the current view.
    pub fn stats(&self) -> Result<CollectionStats> {
        let st = self.current();
        crate::stats::collect(&StatsView {
            path: &self.path,
            catalog: &st.catalog,
            snapshot: &st.snapshot,
            memtable_ops: st.memtable_ops,
            memtable_bytes: st.memtable_bytes,
            last_seq: st.last_seq,
            held_codebook: None,
        })
    }

    /// Checks every checksum of every segment of the view, its id map against its segments, and
    /// that the WAL replays after its checkpoint.
    pub fn verify(&self) -> Result<()> {
        let st = self.current();
        crate::check::verify_view(&self.path, &st.catalog, &st.snapshot.version, true)
    }
}

/// True for errors a concurrent writer can cause in a load: files it deleted, RocksDB racing it.
fn transient(e: &Error) -> bool {
    match e {
        Error::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
        Error::Catalog { .. } => true,
        _ => false,
    }
}

fn backoff(attempt: u32) {
    std::thread::sleep(Duration::from_millis(2 * u64::from(attempt.min(25))));
}

fn open_catalog_retrying(path: &Path) -> Result<Catalog> {
    let mut attempt = 0;
    loop {
        match Catalog::open_read_only(&path.join(CATALOG_DIR)) {
            Ok(c) => return Ok(c),
            Err(e) if transient(&e) && attempt + 1 < MAX_LOAD_ATTEMPTS => {
                attempt += 1;
                backoff(attempt);
            }
            Err(e) => return Err(e),
        }
    }
}

fn load(
    path: &Path,
    options: &CollectionOptions,
    encoder: &FdeEncoder,
    reuse: &HashMap<u64, Arc<SegmentHandle>>,
) -> Result<ReadState> {
    let mut last_err = None;
    for attempt in 0..MAX_LOAD_ATTEMPTS {
        if attempt > 0 {
            backoff(attempt);
        }
        match load_once(path, options, encoder, reuse) {
            Ok(Attempt::Done(state)) => return Ok(state),
            Ok(Attempt::Retry(e)) => last_err = e,
            Err(e) if transient(&e) => last_err = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| Error::Catalog {
        path: path.join(CATALOG_DIR),
        message: format!(
            "the writer changed the collection during each of {MAX_LOAD_ATTEMPTS} attempts to read a consistent state"
        ),
    }))
}

fn load_once(
    path: &Path,
    options: &CollectionOptions,
    encoder: &FdeEncoder,
    reuse: &HashMap<u64, Arc<SegmentHandle>>,
) -> Result<Attempt> {
    let storage = crate::io::storage::real();
    let catalog = Catalog::open_read_only(&path.join(CATALOG_DIR))?;
    let checkpoint = catalog.checkpoint()?;
    let Some(loaded) = recovery::load_version(&storage, path, &catalog, encoder, reuse, SegmentMissing::Retry, None)?
    else {
        return Ok(Attempt::Retry(None));
    };
    let version = loaded.version;
    let (memtable, report) = recovery::replay_wal(path, options, checkpoint, WalRecovery::Strict, None)?;
    // A flush committed meanwhile may have trimmed records this replay needed.
    let again = Catalog::open_read_only(&path.join(CATALOG_DIR))?.checkpoint()?;
    if again != checkpoint {
        return Ok(Attempt::Retry(None));
    }
    let (memtable_ops, memtable_bytes) = (memtable.len() as u64, memtable.bytes() as u64);
    let active = Arc::new(MemView::resolve(memtable.entries()));
    let version: Arc<Version> = Arc::new(version);
    let fields = Arc::new(catalog.options()?.indexed_fields);
    Ok(Attempt::Done(ReadState {
        catalog,
        snapshot: Snapshot { version, active, fields },
        memtable_ops,
        memtable_bytes,
        last_seq: report.last_seq,
    }))
}
