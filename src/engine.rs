//! The writing handle's shared state ([`Engine`]) and what every stage needs from it: the locks,
//! the commit point, snapshots and id lookups. The stages live next to it, one module each:
//! [`crate::write`] (validate → WAL → memtable), [`crate::flush`] (memtable → segment),
//! [`crate::compaction::worker`] (merges), [`crate::recovery`] (open), [`crate::stats`].
//!
//! # Concurrency
//! Any number of threads may search and get while others write; a flush may run while a merge
//! runs. Locks, always taken in this order:
//! - `flush_lock` (one flush at a time) / `merge_lock` (one merge at a time): held for the whole
//!   flush or merge, never by readers or writers, never both by one thread;
//! - `writer` (assigns sequence numbers and appends to the WAL in order);
//! - `pending` (logged, not yet fsynced entries under `Durability::Sync`);
//! - `commit` (the commit point: computing a commit from the catalog, the synced catalog batch,
//!   installing the version it makes; segment id allocation and the collection codebook);
//! - `state` (the current [`Version`] and the active memtable): held only to copy or swap an `Arc`
//!   or push memtable entries, never across I/O. A search never waits for a catalog write.
//!
//! A reader's snapshot is consistent: it sees the active memtable, the frozen memtable and the
//! segments exactly as one commit left them. An id lookup reads the catalog, which a commit writes
//! just before it installs its version; a lookup that finds them one commit apart waits for the
//! commit in flight and looks again (see [`Engine::lookup`]).

use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, MutexGuard, RwLock};

use crate::catalog::{Catalog, CodebookQuality, Commit};
use crate::encode::codec::TokenCodebook;
use crate::encode::fde::FdeEncoder;
use crate::encode::pq::PqCodebook;
use crate::error::{Error, Poison, Result};
use crate::filter::IndexedField;
use crate::io::storage::Storage;
use crate::memtable::{MemEntry, MemView, Memtable};
use crate::options::{CollectionOptions, Durability, OpenOptions};
use crate::recovery::{self, SegmentMissing, CATALOG_DIR, WAL_DIR};
use crate::snapshot::{locate, stale_location, Found, Located, Snapshot, Version};
use crate::wal::Wal;

/// The active memtable and the current version, swapped together.
pub(crate) struct State {
    pub(crate) version: Arc<Version>,
    pub(crate) active: Memtable,
}

/// What the `writer` lock guards.
pub(crate) struct WriterState {
    pub(crate) next_seq: u64,
}

/// What the `commit` lock guards besides the commit point itself.
pub(crate) struct CommitState {
    /// The next unused segment id (the catalog stores it at every commit).
    pub(crate) next_segment: u64,
    /// The collection codebook (none before the first segment).
    pub(crate) codebook: Option<CollectionCodebook>,
    /// The collection token codebook (trained and replaced together with the PQ codebook).
    pub(crate) token_codebook: Option<Arc<TokenCodebook>>,
}

/// The collection's PQ codebook as the writer tracks it (catalog keys `p` and `q`).
#[derive(Clone, Debug)]
pub(crate) struct CollectionCodebook {
    pub(crate) codebook: Arc<PqCodebook>,
    /// Documents of the segment it was trained on.
    pub(crate) trained_docs: u64,
    /// How well it fits what was encoded with it (`None` until measured, for catalogs from
    /// before quality was recorded).
    pub(crate) quality: Option<CodebookQuality>,
}

/// A wake-up flag with a condition variable, for the background threads.
#[derive(Default)]
pub(crate) struct Signal {
    flag: Mutex<bool>,
    cv: Condvar,
}

impl Signal {
    /// Wakes the waiter.
    pub(crate) fn notify(&self) {
        *self.flag.lock() = true;
        self.cv.notify_all();
    }

    /// Waits until notified or `timeout` passes, and clears the flag.
    pub(crate) fn wait(&self, timeout: Duration) {
        let mut flag = self.flag.lock();
        if !*flag {
            self.cv.wait_for(&mut flag, timeout);
        }
        *flag = false;
    }
}

/// The writing handle's state, shared by the public façade and the background threads.
pub(crate) struct Engine {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) path: PathBuf,
    pub(crate) options: CollectionOptions,
    /// The indexed payload fields: `options.indexed_fields` plus those added since by
    /// [`Engine::index_field`] (changed only under the `writer` lock).
    pub(crate) fields: RwLock<Arc<Vec<IndexedField>>>,
    pub(crate) open_options: OpenOptions,
    /// The effective durability (the handle's choice, else the collection's default).
    pub(crate) durability: Durability,
    pub(crate) encoder: Arc<FdeEncoder>,
    pub(crate) catalog: Catalog,
    pub(crate) wal: Wal,
    pub(crate) writer: Mutex<WriterState>,
    pub(crate) pending: Mutex<VecDeque<MemEntry>>,
    pub(crate) state: RwLock<State>,
    pub(crate) flush_lock: Mutex<()>,
    pub(crate) merge_lock: Mutex<()>,
    pub(crate) commit: Mutex<CommitState>,
    pub(crate) poisoned: Poison,
    pub(crate) closed: AtomicBool,
    /// Wakes the flush thread (a full memtable, close).
    pub(crate) flush_wake: Signal,
    /// Wakes the compaction thread (a committed flush, close).
    pub(crate) compact_wake: Signal,
    /// The threads background flushes and merges run on (`OpenOptions::maintenance_threads`).
    pub(crate) maintenance_pool: Option<rayon::ThreadPool>,
    _lock: File,
}

impl Engine {
    /// Creates a new collection at `path` and opens it.
    pub(crate) fn create(path: &Path, options: CollectionOptions, open: OpenOptions) -> Result<Engine> {
        options.validate()?;
        open.validate()?;
        FdeEncoder::new(options.fde)?;
        let storage = open.storage.clone().unwrap_or_else(crate::io::storage::real);
        let lock = recovery::create_layout(&*storage, path, &options)?;
        Self::recover(path, open, lock)
    }

    /// Opens (and recovers) the collection at `path`.
    pub(crate) fn open(path: &Path, open: OpenOptions) -> Result<Engine> {
        open.validate()?;
        recovery::require_collection(path)?;
        let lock = recovery::lock_collection(path)?;
        Self::recover(path, open, lock)
    }

    /// Recovery under the writer's lock: catalog → segments → orphans deleted → WAL replayed (a
    /// torn tail cut) → a new WAL file.
    fn recover(path: &Path, open: OpenOptions, lock: File) -> Result<Engine> {
        let storage = open.storage.clone().unwrap_or_else(crate::io::storage::real);
        let catalog = Catalog::open(&path.join(CATALOG_DIR))?;
        let options = recovery::stored_options(&catalog)?;
        let encoder = Arc::new(FdeEncoder::new(options.fde)?);
        let checkpoint = catalog.checkpoint()?;
        let next_segment = catalog.next_segment()?;
        let codebook = catalog.codebook()?.map(|c| CollectionCodebook {
            codebook: Arc::new(c.codebook),
            trained_docs: c.trained_docs,
            quality: c.quality,
        });
        let token_codebook = catalog.token_codebook(options.dim as usize)?.map(Arc::new);
        let loaded = recovery::load_version(
            &storage,
            path,
            &catalog,
            &encoder,
            &Default::default(),
            SegmentMissing::Corrupt,
            codebook.as_ref().map(|c| &c.codebook),
        )?
        .ok_or_else(|| Error::corruption(path, 0, "a segment named by the catalog is missing"))?;
        if loaded.scanned_id_map {
            // A catalog from before dead tracking: record the dead ordinals once, so later opens
            // need no scan of the id map.
            catalog.record_dead(&recovery::dead_locations(&loaded.version))?;
        }
        let version = loaded.version;
        recovery::remove_orphans(&*storage, path, &version)?;
        let (active, report) = recovery::replay_wal(path, &options, checkpoint, open.wal_recovery, Some(&*storage))?;
        let wal_dir = path.join(WAL_DIR);
        let wal = Wal::create(storage.clone(), &wal_dir, report.last_seq + 1)?;
        crate::wal::trim(&*storage, &wal_dir, checkpoint)?;
        let durability = open.durability.unwrap_or(options.durability);
        let maintenance_pool = if open.background {
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            let threads = open.maintenance_threads.unwrap_or((cores / 2).max(1));
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("quiverdb-maintenance-{i}"))
                .build()
                .map_err(|e| {
                    Error::io(path, std::io::Error::other(format!("cannot start maintenance threads: {e}")))
                })?;
            Some(pool)
        } else {
            None
        };
        Ok(Engine {
            storage,
            path: path.to_path_buf(),
            fields: RwLock::new(Arc::new(options.indexed_fields.clone())),
            options,
            durability,
            open_options: open,
            encoder,
            catalog,
            wal,
            writer: Mutex::new(WriterState { next_seq: report.last_seq + 1 }),
            pending: Mutex::new(VecDeque::new()),
            state: RwLock::new(State { version: Arc::new(version), active }),
            flush_lock: Mutex::new(()),
            merge_lock: Mutex::new(()),
            commit: Mutex::new(CommitState { next_segment, codebook, token_codebook }),
            poisoned: Poison::default(),
            closed: AtomicBool::new(false),
            flush_wake: Signal::default(),
            compact_wake: Signal::default(),
            maintenance_pool,
            _lock: lock,
        })
    }

    pub(crate) fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    pub(crate) fn check_writable(&self) -> Result<()> {
        self.check_open()?;
        self.poisoned.check()
    }

    pub(crate) fn poison(&self, err: Error) -> Error {
        self.poisoned.set(err)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The current version and the active memtable, at one instant.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let (version, entries) = {
            let st = self.state.read();
            (st.version.clone(), st.active.entries().to_vec())
        };
        Snapshot { version, active: Arc::new(MemView::resolve(&entries)), fields: self.fields() }
    }

    /// The indexed payload fields now.
    pub(crate) fn fields(&self) -> Arc<Vec<IndexedField>> {
        self.fields.read().clone()
    }

    /// Where `id`'s visible version is, consistent across memtables and catalog.
    pub(crate) fn lookup(&self, id: u64) -> Result<Option<Found>> {
        match self.lookup_once(id)? {
            Ok(found) => Ok(found),
            Err(_) => {
                // The catalog is one commit ahead of the version we hold: wait for that commit to
                // install its version, then the two agree. (The active memtable is looked at again:
                // a flush may have frozen it meanwhile.)
                let _commit = self.commit.lock();
                self.lookup_once(id)?.map_err(|loc| stale_location(&self.catalog, id, loc))
            }
        }
    }

    /// One attempt of [`Engine::lookup`]: `Err(location)` when the catalog points where the held
    /// version has nothing live.
    fn lookup_once(&self, id: u64) -> Result<std::result::Result<Option<Found>, crate::catalog::Location>> {
        let version = {
            let st = self.state.read();
            if let Some(e) = st.active.get(id) {
                return Ok(Ok(e.doc.clone().map(Found::Memory)));
            }
            st.version.clone()
        };
        if let Some(found) = Self::in_frozen(&version, id) {
            return Ok(Ok(found));
        }
        Ok(match locate(&self.catalog, &version, id)? {
            Located::Absent => Ok(None),
            Located::Found(h, ord) => Ok(Some(Found::Segment(h, ord))),
            Located::Stale(loc) => Err(loc),
        })
    }

    fn in_frozen(version: &Version, id: u64) -> Option<Option<Found>> {
        let frozen = version.frozen.as_ref()?;
        frozen.latest.get(&id).map(|d| d.clone().map(Found::Memory))
    }

    /// Takes the commit point's lock.
    pub(crate) fn commit_lock(&self) -> MutexGuard<'_, CommitState> {
        self.commit.lock()
    }

    /// Applies `commit` to the catalog (one synced batch, carrying the current next segment id)
    /// and installs the version `update` makes. The caller holds the commit lock (`cs`); the state
    /// lock is taken only for the swap, so searches never wait for the catalog write.
    pub(crate) fn commit_and_install(
        &self,
        cs: &CommitState,
        mut commit: Commit<'_>,
        update: impl FnOnce(&Version) -> Version,
    ) -> Result<()> {
        commit.next_segment = Some(cs.next_segment);
        self.catalog.commit(&commit).map_err(|e| self.poison(e))?;
        let mut st = self.state.write();
        st.version = Arc::new(update(&st.version));
        Ok(())
    }

    /// Runs background work `f` on the maintenance pool (or here, without one).
    pub(crate) fn in_maintenance_pool<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        match &self.maintenance_pool {
            Some(pool) => pool.install(f),
            None => f(),
        }
    }

    /// A new segment id (unique even if its segment is never committed).
    pub(crate) fn allocate_segment_id(&self) -> u64 {
        let mut cs = self.commit.lock();
        let id = cs.next_segment;
        cs.next_segment += 1;
        id
    }
}
