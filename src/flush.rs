//! Flush: the memtable becomes a segment, committed in the catalog.
//!
//! 1. Freeze (under `writer`): rotate the WAL — the old file is fsynced whole — and move the
//!    active memtable to the version's frozen memtable, where searches still see it.
//! 2. Write the segment (no lock held): tmp file, fsync, rename, fsync dir.
//! 3. Commit (under the commit lock): look up where each flushed id's previous version is *now*
//!    (a merge may have moved it while the segment was written), then one synced catalog batch adds
//!    the segment, points every flushed id at it, deletes flushed tombstones' ids and advances the
//!    WAL checkpoint; the new version (previous locations cleared, frozen memtable gone) is
//!    installed right after.
//! 4. Trim the WAL files whose records are all at or below the checkpoint.
//!
//! Crash before the commit: the segment is an orphan (deleted at open) and the WAL still holds
//! every record. Crash after: the catalog has everything and the WAL's records up to the
//! checkpoint are skipped at replay.
//!
//! A flush runs beside a merge (separate locks); only their commits are serialised.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::catalog::{CodebookQuality, Commit, Location, SegmentRecord};
use crate::encode::codec::{auto_centroids, TokenCodebook};
use crate::encode::pq::PqCodebook;
use crate::encode::tokens::TokenMatrix;
use crate::engine::{CollectionCodebook, Engine};
use crate::error::Result;
use crate::memtable::{MemDoc, MemView};
use crate::recovery::{codebook_key, SEGMENTS_DIR, WAL_DIR};
use crate::segment::{self, Document, LiveBits, PqSource, SegmentConfig, SegmentReader, SegmentSummary, SegmentWriter};
use crate::snapshot::{clear_live, LiveSegment, SegmentHandle, SharedCodebook, Version};
use crate::wal;

/// A written, not yet committed flush segment: its handle, its manifest record, the documents its
/// codebook was trained on if it trained one, its mean squared PQ error, and its token codebook if
/// it trained one.
type FlushedSegment = (Arc<SegmentHandle>, SegmentRecord, Option<u64>, Option<f64>, Option<Arc<TokenCodebook>>);

/// The collection codebook record, `current` under the commit lock, after a segment was written
/// of `docs` documents with `codebook` (trained for it, or reused) at mean squared PQ error
/// `distortion` ([`SegmentSummary::pq_distortion`]); `None` when the record stays as it is. A
/// trained codebook's baseline is its segment's held-out documents (none: no quality yet); a
/// reused one's record keeps the worst segment (a record without quality takes the first
/// measurement as baseline), unless another commit replaced the codebook meanwhile.
pub(crate) fn codebook_after(
    current: Option<&CollectionCodebook>,
    codebook: &Arc<PqCodebook>,
    docs: u64,
    trained: bool,
    distortion: Option<f64>,
) -> Option<CollectionCodebook> {
    let measured = distortion.map(|d| CodebookQuality { baseline: d, worst: d });
    if trained {
        return Some(CollectionCodebook { codebook: codebook.clone(), trained_docs: docs, quality: measured });
    }
    let (Some(distortion), Some(measured)) = (distortion, measured) else { return None };
    if docs < CodebookQuality::MIN_DOCS {
        return None;
    }
    let current = current.filter(|c| Arc::ptr_eq(&c.codebook, codebook))?;
    let quality = match current.quality {
        None => measured,
        Some(q) if distortion > q.worst => CodebookQuality { worst: distortion, ..q },
        Some(_) => return None,
    };
    Some(CollectionCodebook { quality: Some(quality), ..current.clone() })
}

/// Puts a changed codebook record into `commit`: the codebook itself when it was `trained`, and
/// its quality.
pub(crate) fn commit_codebook<'a>(commit: &mut Commit<'a>, record: Option<&'a CollectionCodebook>, trained: bool) {
    if let Some(record) = record {
        if trained {
            commit.codebook = Some((&record.codebook, record.trained_docs));
        }
        commit.codebook_quality = record.quality;
    }
}

/// Documents handed to the segment writer at once (bounds the `f32` copies held in RAM).
const FLUSH_BATCH: usize = 256;

/// A deterministic sample of about `cap` tokens from documents with `rows[i]` tokens each (every
/// `stride`-th token overall), and the total token count. `tokens_of(i)` gives document `i`'s
/// values; it is called only for documents that hold a sampled token.
pub(crate) fn sample_tokens(
    rows: &[usize],
    cap: usize,
    tokens_of: impl Fn(usize) -> Result<Vec<f32>>,
) -> Result<(Vec<f32>, usize)> {
    let total: usize = rows.iter().sum();
    let stride = total.div_ceil(cap.max(1)).max(1);
    let mut out = Vec::new();
    let mut start = 0usize;
    for (i, &r) in rows.iter().enumerate() {
        // Global token indices start..start + r; the first multiple of `stride` among them.
        let first = start.div_ceil(stride) * stride;
        if first < start + r {
            let values = tokens_of(i)?;
            let dim = values.len() / r.max(1);
            let mut t = first;
            while t < start + r {
                let local = t - start;
                out.extend_from_slice(&values[local * dim..(local + 1) * dim]);
                t += stride;
            }
        }
        start += r;
    }
    Ok((out, total))
}

impl Engine {
    /// How a new segment of `docs` documents gets its codebook: reuse the collection's, or train
    /// one (none yet; or the collection's was trained on fewer than `pq_settled_docs` documents and
    /// this segment is at least twice as large; or its documents have drifted by
    /// [`CodebookQuality::RETRAIN_DRIFT`] and this segment is at least its training size, or the PQ training
    /// sample). Returns the config and whether it trains.
    /// The token codebook follows the PQ codebook: reused with it, retrained with it (and trained
    /// on its own when the collection has none yet), from `sample` — a deterministic sample of the
    /// segment's tokens, called only when training.
    pub(crate) fn segment_config(
        &self,
        segment_id: u64,
        docs: u64,
        codebook: &Option<CollectionCodebook>,
        token_codebook: &Option<Arc<TokenCodebook>>,
        sample: impl FnOnce(usize) -> Result<(Vec<f32>, usize)>,
    ) -> Result<(SegmentConfig, bool, bool)> {
        let retrain = match codebook {
            None => true,
            Some(c) => {
                let young = c.trained_docs < self.options.pq_settled_docs && docs >= 2 * c.trained_docs;
                let drifted = c.quality.is_some_and(|q| q.drift() >= CodebookQuality::RETRAIN_DRIFT)
                    && docs >= c.trained_docs.min(self.options.pq.max_training_vectors as u64);
                young || drifted
            }
        };
        let pq = match (codebook, retrain) {
            (Some(c), false) => PqSource::Reuse(c.codebook.clone()),
            _ => PqSource::Train(self.options.pq),
        };
        let (tokens, trains_tokens) = match (&self.options.token_codebook, token_codebook) {
            (None, _) => (None, false),
            (Some(_), Some(book)) if !retrain => (Some(book.clone()), false),
            (Some(params), _) => {
                let (values, total_tokens) = sample(params.max_training_tokens as usize)?;
                let mut params = *params;
                params.centroids = Some(params.centroids.unwrap_or(auto_centroids(total_tokens) as u32));
                let dim = self.options.dim as usize;
                let bits = self.options.storage.residual_bits();
                (Some(Arc::new(TokenCodebook::train(&values, dim, bits, &params)?)), true)
            }
        };
        let config = SegmentConfig {
            segment_id,
            storage: self.options.storage,
            pq,
            graph: Some(self.options.graph),
            tokens,
            base_graph: None,
            fields: self.fields().to_vec(),
        };
        Ok((config, retrain, trains_tokens))
    }

    /// Opens a just-written segment, sharing `shared` as its codebook when it reused it and
    /// `tokens`, the token codebook it was written with, instead of decoding its copy.
    pub(crate) fn open_new_segment(
        &self,
        path: &Path,
        id: u64,
        codebook: &Arc<PqCodebook>,
        tokens: Option<&Arc<TokenCodebook>>,
    ) -> Result<Arc<SegmentHandle>> {
        let books = tokens.map(SegmentReader::token_books_of).unwrap_or_default();
        let reader = SegmentReader::open_sharing(path, &books)?;
        let key = codebook_key(&reader);
        let codebook = SharedCodebook::loaded(codebook.clone());
        Ok(Arc::new(SegmentHandle::new(self.storage.clone(), id, reader, codebook, key)))
    }

    /// Flushes the memtable (no-op when empty).
    pub(crate) fn flush(&self) -> Result<()> {
        let _flush = self.flush_lock.lock();
        self.check_writable()?;
        let Some((frozen, checkpoint)) = self.freeze()? else { return Ok(()) };
        let written = self.write_frozen(&frozen).map_err(|e| self.poison(e))?;
        self.commit_flush(&frozen, checkpoint, written)?;
        wal::trim(&*self.storage, &self.path.join(WAL_DIR), checkpoint).map_err(|e| self.poison(e))?;
        self.compact_wake.notify();
        Ok(())
    }

    /// Step 1: everything logged so far goes to the frozen memtable; the WAL continues in a new
    /// file so the frozen records can be trimmed after the commit. `None`: nothing to flush.
    fn freeze(&self) -> Result<Option<(Arc<MemView>, u64)>> {
        let writer = self.writer.lock();
        let has_pending = !self.pending.lock().is_empty();
        if self.state.read().active.is_empty() && !has_pending {
            return Ok(None);
        }
        self.wal.rotate(writer.next_seq).map_err(|e| self.poison(e))?;
        self.publish(u64::MAX);
        let mut st = self.state.write();
        let frozen = Arc::new(MemView::resolve(&st.active.take()));
        let mut version = (*st.version).clone();
        version.frozen = Some(frozen.clone());
        st.version = Arc::new(version);
        Ok(Some((frozen, writer.next_seq - 1)))
    }

    /// Step 2: the segment of the frozen memtable's live documents, if any survive.
    fn write_frozen(&self, frozen: &MemView) -> Result<Option<FlushedSegment>> {
        if frozen.docs.is_empty() {
            return Ok(None);
        }
        let segment_id = self.allocate_segment_id();
        let (codebook, token_codebook) = {
            let cs = self.commit_lock();
            (cs.codebook.clone(), cs.token_codebook.clone())
        };
        let n = frozen.docs.len() as u64;
        let docs = &frozen.docs;
        let (config, trains, trains_tokens) =
            self.segment_config(segment_id, n, &codebook, &token_codebook, |cap| {
                let rows: Vec<usize> =
                    docs.iter().map(|d| d.tokens.as_doc_tokens().len() / self.options.dim as usize).collect();
                sample_tokens(&rows, cap, |i| docs[i].tokens.to_f32_vec())
            })?;
        let new_token_codebook = if trains_tokens { config.tokens.clone() } else { None };
        let written_tokens = config.tokens.clone();
        let path = self.path.join(SEGMENTS_DIR).join(segment::file_name(segment_id));
        let summary = self.write_memtable_segment(&path, config, &frozen.docs)?;
        let handle = self.open_new_segment(&summary.path, segment_id, &summary.codebook, written_tokens.as_ref())?;
        let record = SegmentRecord { id: segment_id, doc_count: summary.doc_count, file_len: summary.bytes };
        Ok(Some((handle, record, trains.then_some(n), summary.pq_distortion, new_token_codebook)))
    }

    /// Step 3: the commit point.
    fn commit_flush(&self, frozen: &MemView, checkpoint: u64, new_segment: Option<FlushedSegment>) -> Result<()> {
        let mut cs = self.commit_lock();
        let mut commit = Commit { checkpoint: Some(checkpoint), ..Default::default() };
        let mut cleared: Vec<Location> = Vec::new();
        let mut ids: Vec<(&u64, &Option<Arc<MemDoc>>)> = frozen.latest.iter().collect();
        ids.sort_by_key(|(id, _)| **id);
        let ordinal_of: HashMap<u64, u32> = frozen.docs.iter().enumerate().map(|(i, d)| (d.id, i as u32)).collect();
        for (&id, doc) in ids {
            // Read under the commit lock: no merge can move the id between this read and the commit.
            let old = self.catalog.location(id).map_err(|e| self.poison(e))?;
            if let Some(old) = old {
                cleared.push(old);
            }
            match (doc, &new_segment, ordinal_of.get(&id)) {
                (Some(_), Some((handle, ..)), Some(&ordinal)) => {
                    commit.put_locations.push((id, Location { segment: handle.id, ordinal }))
                }
                (None, _, _) if old.is_some() => commit.delete_ids.push(id),
                _ => {}
            }
        }
        commit.dead = cleared.clone();
        let book = match &new_segment {
            Some((handle, _, trained, distortion, _)) => {
                let docs = trained.unwrap_or(handle.reader.doc_count() as u64);
                let codebook = handle.codebook.get_or_load(&handle.reader).map_err(|e| self.poison(e))?;
                codebook_after(cs.codebook.as_ref(), &codebook, docs, trained.is_some(), *distortion)
            }
            None => None,
        };
        if let Some((_, record, trained, _, tokens)) = &new_segment {
            commit.add_segments.push(*record);
            commit_codebook(&mut commit, book.as_ref(), trained.is_some());
            commit.token_codebook = tokens.as_deref();
        }
        self.commit_and_install(&cs, commit, |v| {
            let mut segments = clear_live(&v.segments, &cleared);
            if let Some((handle, ..)) = &new_segment {
                let n = handle.reader.doc_count();
                segments.push(LiveSegment { handle: handle.clone(), live: Arc::new(LiveBits::all(n)) });
            }
            Version { segments, frozen: None }
        })?;
        if let Some((.., tokens)) = new_segment {
            if book.is_some() {
                cs.codebook = book;
            }
            if tokens.is_some() {
                cs.token_codebook = tokens;
            }
        }
        Ok(())
    }

    fn write_memtable_segment(
        &self,
        path: &Path,
        config: SegmentConfig,
        docs: &[Arc<MemDoc>],
    ) -> Result<SegmentSummary> {
        let dim = self.options.dim as usize;
        let mut writer = SegmentWriter::create_in(self.storage.clone(), path, self.encoder.clone(), config)?;
        for chunk in docs.chunks(FLUSH_BATCH) {
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

    /// The background flush thread: flushes whenever the memtable is full, independently of any
    /// merge in progress.
    pub(crate) fn flush_loop(self: Arc<Self>) {
        loop {
            self.flush_wake.wait(Duration::from_secs(1));
            if self.is_closed() {
                return;
            }
            if !self.poisoned.is_set() && self.memtable_full() {
                let _ = self.in_maintenance_pool(|| self.flush());
            }
        }
    }
}
