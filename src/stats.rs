//! `stats()`: counts, sizes and resident memory of one consistent view of a collection, for the
//! writing and the read-only handle alike.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use crate::catalog::{dir_bytes, Catalog};
use crate::encode::pq::PqCodebook;
use crate::error::Result;
use crate::recovery::WAL_DIR;
use crate::search::Navigation;
use crate::snapshot::Snapshot;

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
    /// Token storage type (`f16`, `residual2`, ...).
    pub storage: String,
    /// Centroids of its token codebook (0: none, a segment from before token codebooks).
    pub token_centroids: u64,
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
    /// Resident memory this handle needs besides the page cache: every segment's navigation data
    /// (its PQ codes, or its token centroid ids where it navigates by centroid interaction:
    /// [`crate::Navigation::for_segment`]), offsets, ids and live bitsets, the distinct codebooks,
    /// the memtable.
    pub ram_bytes: u64,
    /// Token vectors stored in segments.
    pub token_rows: u64,
    /// Every segment byte that exists for the tokens: token section, token offsets, centroid
    /// ids, token codebooks and inverted lists.
    pub token_bytes: u64,
    /// `token_bytes / token_rows`.
    pub bytes_per_token: f64,
    /// How far the documents encoded with the collection's PQ codebook have drifted from the
    /// ones it was trained on: the worst segment's mean squared PQ error over that of the held-out
    /// documents of its training segment ([`crate::catalog::CodebookQuality::drift`]). From
    /// [`crate::catalog::CodebookQuality::RETRAIN_DRIFT`] on, the next large enough flush or merge
    /// trains a new codebook. `None` before the first segment (or not yet measured for a catalog from before
    /// this was recorded).
    pub pq_codebook_drift: Option<f64>,
}

/// The parts of a handle's state that `stats` reads. The caller guarantees that `catalog` and
/// `snapshot` agree (the writer holds its commit lock; a read-only handle's pair is fixed at
/// refresh).
pub(crate) struct StatsView<'a> {
    pub(crate) path: &'a Path,
    pub(crate) catalog: &'a Catalog,
    pub(crate) snapshot: &'a Snapshot,
    /// Operations and bytes held by the active memtable.
    pub(crate) memtable_ops: u64,
    pub(crate) memtable_bytes: u64,
    /// Last WAL sequence number written (writer) or replayed (read-only).
    pub(crate) last_seq: u64,
    /// A decoded PQ codebook the handle holds besides its segments' (the writer's catalog copy),
    /// counted unless a segment shares it.
    pub(crate) held_codebook: Option<&'a Arc<PqCodebook>>,
}

/// Counts and sizes of `view`.
pub(crate) fn collect(view: &StatsView<'_>) -> Result<CollectionStats> {
    let version = &view.snapshot.version;
    let mut segments = Vec::new();
    let mut segment_bytes = 0;
    let mut live_in_segments = 0u64;
    let mut ram = 0u64;
    // Decoded PQ codebooks counted so far: segments with equal sections share one.
    let mut codebooks: Vec<&Arc<PqCodebook>> = view.held_codebook.into_iter().collect();
    ram += view.held_codebook.map_or(0, |c| c.resident_bytes() as u64);
    let mut token_books = HashSet::new();
    let (mut token_rows, mut token_bytes) = (0u64, 0u64);
    for s in &version.segments {
        let r = &s.handle.reader;
        let live = s.live.live_count() as u64;
        live_in_segments += live;
        segment_bytes += r.file_len();
        // What a search keeps touching: the navigation data (a segment navigated by centroid
        // interaction reads its token centroid ids and never its PQ codes), the offsets and ids,
        // the live bitset.
        let navigation_bytes = match Navigation::for_segment(r, None) {
            Navigation::Pq => r.pq_codes().len() as u64,
            Navigation::Centroids => 2 * r.token_rows(),
        };
        ram += navigation_bytes + 16 * (r.doc_count() as u64 + 1) + r.doc_count() as u64 / 8;
        if let Some(codebook) = s.handle.codebook.if_loaded() {
            if !codebooks.iter().any(|c| Arc::ptr_eq(c, codebook)) {
                codebooks.push(codebook);
                ram += codebook.resident_bytes() as u64;
            }
        }
        token_rows += r.token_rows();
        token_bytes += r.token_bytes();
        if let (Some(key), Some(book)) = (r.token_codebook_key(), r.token_codebook()) {
            if token_books.insert(key) {
                ram += book.resident_bytes();
            }
        }
        segments.push(SegmentStatsInfo {
            storage: r.storage().name().to_string(),
            token_centroids: r.token_codebook().map_or(0, |b| b.centroid_count() as u64),
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
    for (id, d) in &view.snapshot.active.latest {
        decided.insert(*id, d.is_some());
    }
    let mut documents = live_in_segments;
    for (id, present) in decided {
        if view.catalog.location(id)?.is_some() {
            documents = documents.saturating_sub(1);
        }
        documents += present as u64;
    }
    ram += view.memtable_bytes;
    Ok(CollectionStats {
        documents,
        memtable_ops: view.memtable_ops,
        memtable_bytes: view.memtable_bytes,
        frozen_ops: version.frozen.as_ref().map_or(0, |f| f.latest.len() as u64),
        segments,
        segment_bytes,
        wal_bytes: dir_bytes(&view.path.join(WAL_DIR)),
        catalog_bytes: view.catalog.disk_bytes(),
        checkpoint: view.catalog.checkpoint()?,
        last_seq: view.last_seq,
        ram_bytes: ram,
        token_rows,
        token_bytes,
        bytes_per_token: token_bytes as f64 / token_rows.max(1) as f64,
        pq_codebook_drift: view.catalog.codebook_quality()?.map(|q| q.drift()),
    })
}
