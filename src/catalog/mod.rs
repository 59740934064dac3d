//! The catalog: a RocksDB database holding what is durable about a collection besides segment files
//! and the WAL — its options, the manifest of live segments, the id → (segment, ordinal) map, the
//! collection's PQ codebook, the WAL checkpoint and the next segment id.
//!
//! **Commit points only.** RocksDB is written at creation and by [`Catalog::commit`], which applies
//! one [`Commit`] as a single `WriteBatch` with `sync = true`: after a crash either all of a flush or
//! compaction is visible, or none of it. A commit only references segment files that were already
//! published (fsynced, renamed, directory fsynced), so a committed manifest never names a missing
//! or partial file.
//!
//! **Tombstones.** A document is visible in a segment only if the id map points at its exact
//! (segment, ordinal). A delete committed by a flush removes the id's entry; an upsert repoints it.
//! Older copies stay in their immutable segment files but are dead: nothing maps to them, merges
//! skip them, and search skips them through the per-segment live bitsets. Those are persisted as
//! the dead ordinals of each live segment (`d` keys), written in the same batch as the id map change
//! that kills them, so `open` reads only the dead entries instead of scanning every id (its cost
//! grows with deletes, not with the collection). Catalogs written before dead tracking existed
//! (no `D` marker) are scanned once and upgraded by the writer's next open. A deleted document therefore cannot come back through compaction or recovery; deletes
//! that are not yet committed are memtable tombstones replayed from the WAL.
//!
//! Keys (one byte of kind, then big-endian ids so iteration is in id order):
//! `c` options (JSON) · `k` checkpoint (u64) · `n` next segment id (u64) · `p` codebook ·
//! `t` token codebook (its segment-section bytes) · `q` codebook quality (two f64: the mean
//! squared PQ error of the segment the codebook was trained on, and the highest such mean of a
//! segment encoded with it since) ·
//! `s`+segment id → segment record · `i`+external id → location · `d`+segment id+ordinal → (empty:
//! that ordinal is dead) · `D` dead tracking marker (u32 version 1). Layouts in storage-format.md.

use std::path::{Path, PathBuf};

use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions, DB};

use crate::encode::codec::TokenCodebook;
use crate::encode::pq::PqCodebook;
use crate::error::{Error, Result};
use crate::options::{CollectionOptions, CONFIG_VERSION};

const KEY_CONFIG: &[u8] = b"c";
const KEY_CHECKPOINT: &[u8] = b"k";
const KEY_NEXT_SEGMENT: &[u8] = b"n";
const KEY_CODEBOOK: &[u8] = b"p";
const KEY_TOKEN_CODEBOOK: &[u8] = b"t";
const KEY_CODEBOOK_QUALITY: &[u8] = b"q";
const PREFIX_SEGMENT: u8 = b's';
const PREFIX_ID: u8 = b'i';
const PREFIX_DEAD: u8 = b'd';
const KEY_DEAD_TRACKED: &[u8] = b"D";
/// Version of the dead-ordinal keys (`D` marker value).
const DEAD_TRACKING_VERSION: u32 = 1;

/// Where a document's current version lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Location {
    /// Segment id.
    pub segment: u64,
    /// Ordinal in the segment.
    pub ordinal: u32,
}

/// A live segment as the manifest records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentRecord {
    /// Segment id (file `seg-<id hex>.qseg`).
    pub id: u64,
    /// Documents in the file.
    pub doc_count: u64,
    /// File length in bytes (checked at open).
    pub file_len: u64,
}

/// The collection's PQ codebook and how many documents it was trained on.
#[derive(Clone, Debug)]
pub struct StoredCodebook {
    /// The codebook.
    pub codebook: PqCodebook,
    /// Documents in the segment it was trained on.
    pub trained_docs: u64,
    /// How well it fits the documents encoded with it (`None`: a catalog from before this was
    /// recorded).
    pub quality: Option<CodebookQuality>,
}

/// How well a PQ codebook fits the documents encoded with it, by mean squared quantization
/// error per FDE ([`crate::segment::SegmentSummary::pq_distortion`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CodebookQuality {
    /// The mean over the held-out documents of the segment it was trained on (or, when that
    /// segment had none or the codebook predates quality records, over the first segment of at
    /// least [`CodebookQuality::MIN_DOCS`] measured with it).
    pub baseline: f64,
    /// The highest mean of any segment encoded with it since.
    pub worst: f64,
}

impl CodebookQuality {
    /// A codebook whose documents have drifted this far from its training data (the mean squared PQ
    /// error of a segment encoded with it over that of the held-out documents of the segment it
    /// was trained on, [`CodebookQuality::drift`]) is retrained by the next flush or merge of at
    /// least its training size (or the PQ training sample). Measured at the default options
    /// (128-d tokens, 1,280-byte codes) on a codebook trained on 20,000 generated documents of
    /// 8-24 tokens (`tests/it/collection.rs` runs the same scenario at test size): 10,000 more of
    /// the same kind 1.0; 10,000 of other clusters 1.29; 5,000 SciFact-length documents
    /// (180-240 tokens) of other clusters and tokens at half scale no higher; tokens at twice the
    /// scale (an embedding model that does not normalise) 6.9. The threshold retrains for a
    /// change of that kind, not for new topics: what 1.29× the error costs in recall was not
    /// measured.
    pub const RETRAIN_DRIFT: f64 = 1.5;

    /// Segments smaller than this do not move a codebook's quality record: the mean error of a few
    /// documents is noise (merges measure them again in larger segments).
    pub const MIN_DOCS: u64 = 1024;

    /// `worst / baseline`: how far the documents have drifted from the training data (1 when
    /// they fit as well).
    pub fn drift(&self) -> f64 {
        if self.baseline > 0.0 {
            self.worst / self.baseline
        } else if self.worst > 0.0 {
            f64::INFINITY
        } else {
            1.0
        }
    }
}

/// Everything one flush or compaction changes, applied atomically.
#[derive(Default)]
pub struct Commit<'a> {
    /// Segments that become live.
    pub add_segments: Vec<SegmentRecord>,
    /// Segments that stop being live.
    pub remove_segments: Vec<u64>,
    /// Ids whose current version moves to a new location.
    pub put_locations: Vec<(u64, Location)>,
    /// Ids deleted.
    pub delete_ids: Vec<u64>,
    /// New WAL checkpoint: every record up to it is in segments.
    pub checkpoint: Option<u64>,
    /// New next segment id.
    pub next_segment: Option<u64>,
    /// A newly trained collection codebook.
    pub codebook: Option<(&'a PqCodebook, u64)>,
    /// A newly trained collection token codebook.
    pub token_codebook: Option<&'a TokenCodebook>,
    /// The collection codebook's new quality record. With a new `codebook`, `None` removes the
    /// previous codebook's record (the new one has not been measured yet).
    pub codebook_quality: Option<CodebookQuality>,
    /// Ordinals of segments that stay (or are added) which hold no live document after this
    /// commit: replaced or deleted versions, copies a merge did not repoint. The dead ordinals of
    /// removed segments are dropped with them.
    pub dead: Vec<Location>,
}

/// The open catalog.
pub struct Catalog {
    db: DB,
    path: PathBuf,
    /// Set by the first failed write: RocksDB is never written again through this handle (a
    /// RocksDB log writer that saw an error asserts, and aborts the process, if used again).
    failed: std::sync::atomic::AtomicBool,
    /// Opened for writing: RocksDB's memtable is flushed to a table file after large commits and
    /// when the handle closes ([`Catalog::commit`]).
    writable: bool,
}

/// A commit that changes at least this many keys is followed by a flush of RocksDB's memtable
/// to a table file, so that opening the catalog reads an index instead of replaying a log of
/// every id: a read-only open of a 1M-document catalog whose ids were all still in RocksDB's log
/// (36 MB) took 2.0 s and 300 MB of RSS (`quiver stats`, warm page cache).
const FLUSH_AFTER_KEYS: usize = 4096;

impl Drop for Catalog {
    fn drop(&mut self) {
        if self.writable && !self.failed.load(std::sync::atomic::Ordering::Acquire) {
            // Best effort: everything is already durable in RocksDB's log; the table file only
            // makes the next open cheaper, and a failure here is seen by that open.
            let _ = self.db.flush();
        }
    }
}

/// Free space a catalog write leaves untouched, besides four times the batch: RocksDB's log and
/// its occasional memtable flush and manifest writes need room, and running the file system dry
/// inside RocksDB is what once aborted the process.
pub const CATALOG_FREE_RESERVE: u64 = 8 << 20;

fn segment_key(id: u64) -> [u8; 9] {
    let mut k = [PREFIX_SEGMENT; 9];
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

fn id_key(id: u64) -> [u8; 9] {
    let mut k = [PREFIX_ID; 9];
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

fn dead_key(segment: u64, ordinal: u32) -> [u8; 13] {
    let mut k = [PREFIX_DEAD; 13];
    k[1..9].copy_from_slice(&segment.to_be_bytes());
    k[9..].copy_from_slice(&ordinal.to_be_bytes());
    k
}

/// The key range `[from, to)` holding every dead key of `segment`.
fn dead_range(segment: u64) -> (Vec<u8>, Vec<u8>) {
    let mut from = vec![PREFIX_DEAD];
    from.extend_from_slice(&segment.to_be_bytes());
    let to = match segment.checked_add(1) {
        Some(next) => {
            let mut t = vec![PREFIX_DEAD];
            t.extend_from_slice(&next.to_be_bytes());
            t
        }
        None => vec![PREFIX_DEAD + 1],
    };
    (from, to)
}

fn encode_location(loc: Location) -> [u8; 12] {
    let mut v = [0u8; 12];
    v[..8].copy_from_slice(&loc.segment.to_le_bytes());
    v[8..].copy_from_slice(&loc.ordinal.to_le_bytes());
    v
}

fn encode_segment(rec: &SegmentRecord) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&rec.doc_count.to_le_bytes());
    v[8..].copy_from_slice(&rec.file_len.to_le_bytes());
    v
}

fn encode_codebook(codebook: &PqCodebook, trained_docs: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(16 + codebook.centroids().len() * 4);
    v.extend_from_slice(&(codebook.dim() as u32).to_le_bytes());
    v.extend_from_slice(&(codebook.subspaces() as u32).to_le_bytes());
    v.extend_from_slice(&trained_docs.to_le_bytes());
    for c in codebook.centroids() {
        v.extend_from_slice(&c.to_le_bytes());
    }
    v
}

/// The `c` record: the options with the config version.
fn encode_config(options: &CollectionOptions) -> Result<Vec<u8>> {
    serde_json::to_vec(&serde_json::json!({ "version": CONFIG_VERSION, "options": options }))
        .map_err(|e| Error::InvalidInput(format!("options do not serialise: {e}")))
}

impl Catalog {
    fn rocks_err(&self, e: rocksdb::Error) -> Error {
        Error::Catalog { path: self.path.clone(), message: e.into_string() }
    }

    fn bad(&self, what: impl Into<String>) -> Error {
        Error::corruption(&self.path, 0, what)
    }

    fn db_options(create: bool) -> rocksdb::Options {
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(create);
        opts.set_error_if_exists(create);
        opts.set_paranoid_checks(true);
        // A catalog is small (ids and a manifest); keep RocksDB's own memory and files modest.
        opts.set_max_open_files(64);
        opts.set_keep_log_file_num(2);
        // A small memtable bounds what any open (after a crash, or a read-only one beside a
        // writer) replays from RocksDB's log: at most 4 MB, about 130,000 ids.
        opts.set_write_buffer_size(4 << 20);
        // A Bloom filter per table file (10 bits per key, about 1% false positives): every
        // document a flush commits is looked up first (is it replacing one?), and a new id is
        // then answered from the filters instead of a data-block read from each table file that
        // may hold it. Without them, once the ids had left the memtable for table files, those
        // lookups were nearly all of a 1M-document build: the commit of the third 262,144-document
        // flush took 23 minutes. Tables written before keep working without filters.
        let mut table = rocksdb::BlockBasedOptions::default();
        table.set_bloom_filter(10.0, false);
        opts.set_block_based_table_factory(&table);
        opts
    }

    /// Creates the catalog at `path` holding `options`, checkpoint 0 and next segment id 1, in one
    /// synced batch.
    pub fn create(path: &Path, options: &CollectionOptions) -> Result<Self> {
        let db = DB::open(&Self::db_options(true), path)
            .map_err(|e| Error::Catalog { path: path.to_path_buf(), message: e.into_string() })?;
        let catalog = Catalog { db, path: path.to_path_buf(), failed: Default::default(), writable: true };
        let mut batch = WriteBatch::default();
        batch.put(KEY_CONFIG, encode_config(options)?);
        batch.put(KEY_CHECKPOINT, 0u64.to_le_bytes());
        batch.put(KEY_NEXT_SEGMENT, 1u64.to_le_bytes());
        batch.put(KEY_DEAD_TRACKED, DEAD_TRACKING_VERSION.to_le_bytes());
        catalog.write(batch)?;
        Ok(catalog)
    }

    /// Replaces the stored options (one synced write): how `index_field` makes a new indexed
    /// field durable.
    pub fn set_options(&self, options: &CollectionOptions) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.put(KEY_CONFIG, encode_config(options)?);
        self.write(batch)
    }

    /// Opens an existing catalog.
    pub fn open(path: &Path) -> Result<Self> {
        let db = DB::open(&Self::db_options(false), path)
            .map_err(|e| Error::Catalog { path: path.to_path_buf(), message: e.into_string() })?;
        Ok(Catalog { db, path: path.to_path_buf(), failed: Default::default(), writable: true })
    }

    /// Opens an existing catalog for reading only (inspection and verification tools): nothing is
    /// written, not even RocksDB's own recovery.
    pub fn open_read_only(path: &Path) -> Result<Self> {
        let db = DB::open_for_read_only(&Self::db_options(false), path, false)
            .map_err(|e| Error::Catalog { path: path.to_path_buf(), message: e.into_string() })?;
        Ok(Catalog { db, path: path.to_path_buf(), failed: Default::default(), writable: false })
    }

    /// The catalog directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(&self, batch: WriteBatch) -> Result<()> {
        use std::sync::atomic::Ordering;
        if self.failed.load(Ordering::Acquire) {
            return Err(Error::Catalog {
                path: self.path.clone(),
                message: "an earlier catalog write failed; reopen the collection".into(),
            });
        }
        let needed = CATALOG_FREE_RESERVE + 4 * batch.size_in_bytes() as u64;
        if let Some(free) = crate::io::fs::available_bytes(&self.path) {
            if free < needed {
                return Err(Error::io(
                    &self.path,
                    std::io::Error::new(
                        std::io::ErrorKind::StorageFull,
                        format!(
                            "No space left on device: {free} bytes free, a catalog commit keeps {needed} free; \
                             free space, then reopen"
                        ),
                    ),
                ));
            }
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        let keys = batch.len();
        self.db.write_opt(batch, &wo).map_err(|e| {
            self.failed.store(true, Ordering::Release);
            self.rocks_err(e)
        })?;
        if keys >= FLUSH_AFTER_KEYS {
            // The batch is durable in RocksDB's log; the table file only makes opens cheaper. A
            // failed flush leaves RocksDB in its background-error state, so the next write fails.
            let _ = self.db.flush();
        }
        Ok(())
    }

    fn get_u64(&self, key: &[u8], name: &str) -> Result<u64> {
        let v =
            self.db.get(key).map_err(|e| self.rocks_err(e))?.ok_or_else(|| self.bad(format!("{name} is missing")))?;
        let bytes: [u8; 8] = v.as_slice().try_into().map_err(|_| self.bad(format!("{name} has {} bytes", v.len())))?;
        Ok(u64::from_le_bytes(bytes))
    }

    /// The collection's options as stored at creation.
    pub fn options(&self) -> Result<CollectionOptions> {
        let v =
            self.db.get(KEY_CONFIG).map_err(|e| self.rocks_err(e))?.ok_or_else(|| self.bad("options are missing"))?;
        #[derive(serde::Deserialize)]
        struct Stored {
            version: u32,
            options: CollectionOptions,
        }
        let stored: Stored = serde_json::from_slice(&v).map_err(|e| self.bad(format!("options do not decode: {e}")))?;
        if stored.version != CONFIG_VERSION {
            return Err(self.bad(format!("options version {} (this build reads {CONFIG_VERSION})", stored.version)));
        }
        Ok(stored.options)
    }

    /// Last WAL sequence number whose effect is in the committed segments.
    pub fn checkpoint(&self) -> Result<u64> {
        self.get_u64(KEY_CHECKPOINT, "the WAL checkpoint")
    }

    /// The id the next segment gets.
    pub fn next_segment(&self) -> Result<u64> {
        self.get_u64(KEY_NEXT_SEGMENT, "the next segment id")
    }

    /// The collection token codebook for `dim`-dimensional tokens, once one was trained.
    pub fn token_codebook(&self, dim: usize) -> Result<Option<TokenCodebook>> {
        let Some(v) = self.db.get(KEY_TOKEN_CODEBOOK).map_err(|e| self.rocks_err(e))? else { return Ok(None) };
        TokenCodebook::from_bytes(&v, dim).map(Some).map_err(|e| self.bad(format!("token codebook record: {e}")))
    }

    /// The collection codebook, once one was trained.
    pub fn codebook(&self) -> Result<Option<StoredCodebook>> {
        let Some(v) = self.db.get(KEY_CODEBOOK).map_err(|e| self.rocks_err(e))? else { return Ok(None) };
        if v.len() < 16 || (v.len() - 16) % 4 != 0 {
            return Err(self.bad(format!("codebook record of {} bytes", v.len())));
        }
        let dim = u32::from_le_bytes(v[0..4].try_into().unwrap_or_default()) as usize;
        let subspaces = u32::from_le_bytes(v[4..8].try_into().unwrap_or_default()) as usize;
        let trained_docs = u64::from_le_bytes(v[8..16].try_into().unwrap_or_default());
        let centroids: Vec<f32> =
            v[16..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap_or_default())).collect();
        let codebook = PqCodebook::from_centroids(dim, subspaces, centroids).map_err(|e| self.bad(e.to_string()))?;
        Ok(Some(StoredCodebook { codebook, trained_docs, quality: self.codebook_quality()? }))
    }

    /// The collection codebook's quality record, if one was written.
    pub fn codebook_quality(&self) -> Result<Option<CodebookQuality>> {
        Ok(match self.db.get(KEY_CODEBOOK_QUALITY).map_err(|e| self.rocks_err(e))? {
            None => None,
            Some(q) if q.len() == 16 => {
                let baseline = f64::from_le_bytes(q[0..8].try_into().unwrap_or_default());
                let worst = f64::from_le_bytes(q[8..16].try_into().unwrap_or_default());
                if !(baseline.is_finite() && worst.is_finite() && baseline >= 0.0 && worst >= 0.0) {
                    return Err(self.bad(format!("codebook quality record ({baseline}, {worst})")));
                }
                Some(CodebookQuality { baseline, worst })
            }
            Some(q) => return Err(self.bad(format!("codebook quality record of {} bytes", q.len()))),
        })
    }

    /// The manifest: every live segment, by id.
    pub fn segments(&self) -> Result<Vec<SegmentRecord>> {
        let mut out = Vec::new();
        for item in self.db.iterator(IteratorMode::From(&[PREFIX_SEGMENT], Direction::Forward)) {
            let (k, v) = item.map_err(|e| self.rocks_err(e))?;
            if k.first() != Some(&PREFIX_SEGMENT) {
                break;
            }
            if k.len() != 9 || v.len() != 16 {
                return Err(self.bad(format!("segment record with a {}-byte key and {}-byte value", k.len(), v.len())));
            }
            out.push(SegmentRecord {
                id: u64::from_be_bytes(k[1..].try_into().unwrap_or_default()),
                doc_count: u64::from_le_bytes(v[..8].try_into().unwrap_or_default()),
                file_len: u64::from_le_bytes(v[8..].try_into().unwrap_or_default()),
            });
        }
        Ok(out)
    }

    fn decode_location(&self, v: &[u8]) -> Result<Location> {
        if v.len() != 12 {
            return Err(self.bad(format!("id location of {} bytes", v.len())));
        }
        Ok(Location {
            segment: u64::from_le_bytes(v[..8].try_into().unwrap_or_default()),
            ordinal: u32::from_le_bytes(v[8..].try_into().unwrap_or_default()),
        })
    }

    /// Where `id`'s current version lives (None: not in any segment).
    pub fn location(&self, id: u64) -> Result<Option<Location>> {
        match self.db.get(id_key(id)).map_err(|e| self.rocks_err(e))? {
            Some(v) => Ok(Some(self.decode_location(&v)?)),
            None => Ok(None),
        }
    }

    /// Whether this catalog records dead ordinals (`D` marker); catalogs from before that need
    /// one scan of the id map (and an upgrade by the writer).
    pub fn tracks_dead(&self) -> Result<bool> {
        match self.db.get(KEY_DEAD_TRACKED).map_err(|e| self.rocks_err(e))? {
            None => Ok(false),
            Some(v) if v.as_slice() == DEAD_TRACKING_VERSION.to_le_bytes() => Ok(true),
            Some(v) => Err(self.bad(format!("dead tracking marker {v:?} is not version {DEAD_TRACKING_VERSION}"))),
        }
    }

    /// The dead ordinals of `segment`, ascending.
    pub fn dead_ordinals(&self, segment: u64) -> Result<Vec<u32>> {
        let (from, to) = dead_range(segment);
        let mut out = Vec::new();
        for item in self.db.iterator(IteratorMode::From(&from, Direction::Forward)) {
            let (k, v) = item.map_err(|e| self.rocks_err(e))?;
            if k.as_ref() >= to.as_slice() {
                break;
            }
            if k.len() != 13 || !v.is_empty() {
                return Err(self.bad(format!("dead key of {} bytes with a {}-byte value", k.len(), v.len())));
            }
            out.push(u32::from_be_bytes(k[9..13].try_into().unwrap_or_default()));
        }
        Ok(out)
    }

    /// Writes the dead ordinals of every live segment and the marker, in one synced batch: the
    /// upgrade of a catalog from before dead tracking (its live bitsets having just been derived
    /// from the id map).
    pub fn record_dead(&self, dead: &[Location]) -> Result<()> {
        let mut batch = WriteBatch::default();
        for loc in dead {
            batch.put(dead_key(loc.segment, loc.ordinal), []);
        }
        batch.put(KEY_DEAD_TRACKED, DEAD_TRACKING_VERSION.to_le_bytes());
        self.write(batch)
    }

    /// Calls `f` for every (id, location), in id order.
    pub fn for_each_location(&self, mut f: impl FnMut(u64, Location) -> Result<()>) -> Result<()> {
        for item in self.db.iterator(IteratorMode::From(&[PREFIX_ID], Direction::Forward)) {
            let (k, v) = item.map_err(|e| self.rocks_err(e))?;
            if k.first() != Some(&PREFIX_ID) {
                break;
            }
            if k.len() != 9 {
                return Err(self.bad(format!("id key of {} bytes", k.len())));
            }
            f(u64::from_be_bytes(k[1..].try_into().unwrap_or_default()), self.decode_location(&v)?)?;
        }
        Ok(())
    }

    /// Applies `commit` as one synced, atomic write batch (the commit point of a flush or merge).
    pub fn commit(&self, commit: &Commit<'_>) -> Result<()> {
        let mut batch = WriteBatch::default();
        for rec in &commit.add_segments {
            batch.put(segment_key(rec.id), encode_segment(rec));
        }
        for id in &commit.remove_segments {
            batch.delete(segment_key(*id));
            let (from, to) = dead_range(*id);
            batch.delete_range(from, to);
        }
        for loc in &commit.dead {
            batch.put(dead_key(loc.segment, loc.ordinal), []);
        }
        for id in &commit.delete_ids {
            batch.delete(id_key(*id));
        }
        for (id, loc) in &commit.put_locations {
            batch.put(id_key(*id), encode_location(*loc));
        }
        if let Some(c) = commit.checkpoint {
            batch.put(KEY_CHECKPOINT, c.to_le_bytes());
        }
        if let Some(n) = commit.next_segment {
            batch.put(KEY_NEXT_SEGMENT, n.to_le_bytes());
        }
        if let Some((codebook, trained)) = commit.codebook {
            batch.put(KEY_CODEBOOK, encode_codebook(codebook, trained));
        }
        if let Some(book) = commit.token_codebook {
            batch.put(KEY_TOKEN_CODEBOOK, book.to_bytes());
        }
        match commit.codebook_quality {
            Some(q) => {
                let mut v = q.baseline.to_le_bytes().to_vec();
                v.extend_from_slice(&q.worst.to_le_bytes());
                batch.put(KEY_CODEBOOK_QUALITY, v);
            }
            None if commit.codebook.is_some() => batch.delete(KEY_CODEBOOK_QUALITY),
            None => {}
        }
        self.write(batch)
    }

    /// Approximate bytes on disk (SST and log files).
    pub fn disk_bytes(&self) -> u64 {
        dir_bytes(&self.path)
    }
}

/// Total size of the regular files directly in `dir` (0 if unreadable).
pub fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok()?.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_commit_reopen() {
        let dir = std::env::temp_dir().join(format!("quiverdb-catalog-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let options = CollectionOptions::new(8);
        {
            let c = Catalog::create(&dir, &options).unwrap();
            assert_eq!(c.options().unwrap(), options);
            assert_eq!((c.checkpoint().unwrap(), c.next_segment().unwrap()), (0, 1));
            let loc = Location { segment: 1, ordinal: 3 };
            c.commit(&Commit {
                add_segments: vec![SegmentRecord { id: 1, doc_count: 4, file_len: 4096 }],
                put_locations: vec![(7, loc), (300, Location { segment: 1, ordinal: 0 })],
                checkpoint: Some(9),
                next_segment: Some(2),
                ..Default::default()
            })
            .unwrap();
            c.commit(&Commit { delete_ids: vec![300], ..Default::default() }).unwrap();
        }
        assert!(Catalog::create(&dir, &options).is_err(), "create must not reuse an existing catalog");
        let c = Catalog::open(&dir).unwrap();
        assert_eq!(c.checkpoint().unwrap(), 9);
        assert_eq!(c.segments().unwrap(), vec![SegmentRecord { id: 1, doc_count: 4, file_len: 4096 }]);
        assert_eq!(c.location(7).unwrap(), Some(Location { segment: 1, ordinal: 3 }));
        assert_eq!(c.location(300).unwrap(), None);
        let mut seen = Vec::new();
        c.for_each_location(|id, loc| {
            seen.push((id, loc));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, vec![(7, Location { segment: 1, ordinal: 3 })]);
        drop(c);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn table_files_carry_bloom_filters_so_new_ids_are_looked_up_without_data_reads() {
        let dir = std::env::temp_dir().join(format!("quiverdb-catalog-bloom-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let c = Catalog::create(&dir, &CollectionOptions::new(8)).unwrap();
        let ids = 20_000u64;
        let put_locations: Vec<(u64, Location)> =
            (0..ids).map(|i| (i * 2, Location { segment: 1, ordinal: i as u32 })).collect();
        // A large commit is flushed from RocksDB's memtable into a table file.
        c.commit(&Commit { put_locations, ..Default::default() }).unwrap();
        assert_eq!(c.location(2 * 7).unwrap(), Some(Location { segment: 1, ordinal: 7 }));
        assert_eq!(c.location(2 * 7 + 1).unwrap(), None);
        // The table reader holds the file's filter: 10 bits per key, against an index of a few
        // hundred bytes per thousand keys without one.
        let reader_bytes = c.db.property_int_value("rocksdb.estimate-table-readers-mem").unwrap().unwrap_or(0);
        assert!(reader_bytes >= ids * 10 / 8, "{reader_bytes} bytes of table readers for {ids} ids");
        drop(c);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
