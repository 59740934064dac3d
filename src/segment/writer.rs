//! Writing a segment.
//!
//! Order of work (crash reasoning in [`crate::io::fs`]): everything is written to `<name>.tmp`;
//! only [`SegmentWriter::finish`] fsyncs, renames and fsyncs the directory. A crash at any earlier
//! point leaves a `.tmp` orphan that recovery deletes; a writer dropped without `finish` deletes
//! its own temporary file.
//!
//! Memory: token data is streamed to the file as documents arrive. Held in RAM: ids, token and
//! payload offsets (24 bytes per document), payload bytes, the PQ codes (`m` bytes per document),
//! and, when the codebook is trained here, a reservoir sample of at most `max_training_vectors`
//! FDEs. With a trained codebook the codes need a second pass: tokens are read back from the
//! temporary file (as stored, so FDEs always describe the stored values) and re-encoded.

use std::borrow::Cow;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;

use crate::encode::codec::TokenCodebook;
use crate::encode::fde::{CountSketch, FdeEncoder};
use crate::encode::pq::{PqCodebook, PqParams, ENCODE_BLOCK};
use crate::encode::rng::SplitMix64;
use crate::encode::storage::{from_16bit, to_16bit, TokenStorage};
use crate::encode::tokens::TokenMatrix;
use crate::error::{Error, Result};
use crate::filter::column::FieldIndex;
use crate::filter::IndexedField;
use crate::format::fde_params;
use crate::format::graph as graph_format;
use crate::format::segment::{
    encode_entry, encode_header, encode_tail, Header, SectionEntry, SectionKind, Tail, HEADER_LEN, SECTION_ALIGN,
    TOKEN_SECTION_ALIGN,
};
use crate::graph::{BaseGraph, GraphBuilder, VamanaParams};
use crate::io::fs as durable;
use crate::io::storage::{self, Storage, WritableFile};
use crate::limits::{MAX_DOCS_PER_SEGMENT, MAX_PAYLOAD_BYTES};

/// One document to store.
#[derive(Clone, Copy, Debug)]
pub struct Document<'a> {
    /// External id.
    pub id: u64,
    /// Token vectors (validated).
    pub tokens: TokenMatrix<'a>,
    /// Optional payload bytes (e.g. JSON).
    pub payload: Option<&'a [u8]>,
}

/// Where the segment's PQ codebook comes from.
#[derive(Clone, Debug)]
pub enum PqSource {
    /// Train a codebook on this segment's documents.
    Train(PqParams),
    /// Use an existing codebook (e.g. the collection's), so codes are computed in one pass and
    /// ADC tables can be shared across segments.
    Reuse(Arc<PqCodebook>),
}

/// Whether and how a segment gets a graph.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GraphConfig {
    /// Vamana parameters.
    pub params: VamanaParams,
    /// Build vectors: a Count Sketch of each FDE to this many dimensions (the FDE itself when it
    /// is not longer), normalised. 1,024 by default, chosen by measurement (graph issue note).
    pub build_dim: u32,
    /// Segments with fewer documents get no graph and are searched by a flat ADC scan.
    pub min_docs: u64,
}

impl Default for GraphConfig {
    /// R = 32, L = 64, α = 1.2 over 1,024-dim build vectors; a graph from 4,096 documents on.
    fn default() -> Self {
        GraphConfig { params: VamanaParams::default(), build_dim: 1024, min_docs: 4096 }
    }
}

/// Seed of the Count Sketch that makes build vectors from FDEs.
const BUILD_SKETCH_SEED: u32 = 0x6a09_e667;

/// What a segment is written with.
#[derive(Clone, Debug)]
pub struct SegmentConfig {
    /// The segment's id in its collection (also in its file name).
    pub segment_id: u64,
    /// Token storage type.
    pub storage: TokenStorage,
    /// PQ codebook source.
    pub pq: PqSource,
    /// Graph construction (`None`: never build one).
    pub graph: Option<GraphConfig>,
    /// The token codebook: every token gets a centroid id (token-codes section) and the segment
    /// gets inverted lists; residual storage encodes against it. Required by residual storage;
    /// `None` for the plain types writes a segment without the cheap scoring stage.
    pub tokens: Option<Arc<TokenCodebook>>,
    /// A graph over the first documents added, to keep and extend instead of building anew (a
    /// merge's largest input, renumbered, its deleted nodes bypassed). Used when the segment gets
    /// a graph; its lists must name only those documents.
    pub base_graph: Option<BaseGraph>,
    /// Indexed payload fields: their columns are built from the documents' payloads into the
    /// `field_index` section (none when empty).
    pub fields: Vec<IndexedField>,
}

/// A published segment.
#[derive(Clone, Debug)]
pub struct SegmentSummary {
    /// Final path.
    pub path: PathBuf,
    /// Documents.
    pub doc_count: u64,
    /// Token vectors.
    pub token_rows: u64,
    /// File length.
    pub bytes: u64,
    /// The graph extends [`SegmentConfig::base_graph`] rather than being built anew.
    pub graph_extended: bool,
    /// Mean squared PQ error of the FDEs, `‖x - decode(encode(x))‖²`, over the segment's documents
    /// that its codebook was not trained on: all of them when it was reused, the ones outside the
    /// training sample when it was trained here (`None` if that sample was every document). The
    /// collection compares it with its codebook's own figure to notice drift.
    pub pq_distortion: Option<f64>,
    /// The PQ codebook the segment's codes use (the one trained here, or the reused one), so the
    /// segment can be opened without decoding its codebook section again.
    pub codebook: Arc<PqCodebook>,
}

/// Streams documents into a new segment file. See the module docs.
pub struct SegmentWriter {
    storage: Arc<dyn Storage>,
    final_path: PathBuf,
    tmp_path: PathBuf,
    /// The temporary file (shared with `out`, which appends to it through a buffer).
    file: Arc<dyn WritableFile>,
    out: Option<BufWriter<Appender>>,
    encoder: Arc<FdeEncoder>,
    config: SegmentConfig,
    /// Bytes written so far (the file position).
    pos: u64,
    entries: Vec<SectionEntry>,
    tokens_start: u64,
    tokens_crc: crc32fast::Hasher,
    ids: Vec<u64>,
    token_offsets: Vec<u64>,
    payload_offsets: Vec<u64>,
    payload_bytes: Vec<u8>,
    codes: Vec<u8>,
    /// Summed squared PQ error of the codes in `codes`.
    pq_error: f64,
    /// Reservoir of FDEs for training (when `PqSource::Train`), `fde_dim` each.
    reservoir: Vec<f32>,
    /// The projection from FDE to build vector (`None`: the FDE itself).
    build_sketch: Option<CountSketch>,
    /// Graph build vectors of every document so far, when a graph is configured.
    build_vectors: Vec<f32>,
    /// Centroid id of every token so far (with a token codebook).
    token_ids: Vec<u16>,
    /// Each document's distinct centroids, ascending, back to back (for the postings).
    doc_centroids: Vec<u16>,
    /// `doc_centroids` offsets, `doc_count + 1`.
    doc_centroid_offsets: Vec<u64>,
    reservoir_rng: SplitMix64,
    finished: bool,
    /// Set by the first failed write: the file no longer matches the writer's state, so every
    /// later call is refused (RELIABILITY.md: after a failed write, refuse further writes).
    failed: bool,
}

/// `io::Write` over a [`WritableFile`]'s `append`, for buffering.
struct Appender(Arc<dyn WritableFile>);

impl Write for Appender {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.append(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl SegmentWriter {
    /// Starts `path` (written as `path.tmp` until [`SegmentWriter::finish`]) on the real file system.
    pub fn create(path: &Path, encoder: Arc<FdeEncoder>, config: SegmentConfig) -> Result<Self> {
        Self::create_in(storage::real(), path, encoder, config)
    }

    /// Like [`SegmentWriter::create`], with every file change going through `storage`.
    pub fn create_in(
        storage: Arc<dyn Storage>,
        path: &Path,
        encoder: Arc<FdeEncoder>,
        config: SegmentConfig,
    ) -> Result<Self> {
        if let PqSource::Reuse(codebook) = &config.pq {
            if codebook.dim() != encoder.fde_dim() {
                return Err(Error::InvalidInput(format!(
                    "codebook dimension {} differs from the FDE dimension {}",
                    codebook.dim(),
                    encoder.fde_dim()
                )));
            }
        }
        if let PqSource::Train(params) = &config.pq {
            params.validate(encoder.fde_dim())?;
        }
        let dim = encoder.params().dim as usize;
        config.storage.check_dim(dim)?;
        match &config.tokens {
            Some(book) if book.dim() != dim => {
                return Err(Error::InvalidInput(format!(
                    "token codebook of dimension {} for {dim}-dimensional tokens",
                    book.dim()
                )))
            }
            Some(book) if book.bits() != config.storage.residual_bits() => {
                return Err(Error::InvalidInput(format!(
                    "a token codebook with {}-bit residuals cannot write {} tokens",
                    book.bits(),
                    config.storage.name()
                )))
            }
            None if config.storage.residual_bits() > 0 => {
                return Err(Error::InvalidInput(format!("{} storage needs a token codebook", config.storage.name())))
            }
            _ => {}
        }
        let mut build_sketch = None;
        if let Some(graph) = &config.graph {
            graph.params.validate()?;
            if graph.build_dim == 0 {
                return Err(Error::invalid_param("graph_build_dim", "must be positive"));
            }
            if (graph.build_dim as usize) < encoder.fde_dim() {
                build_sketch = Some(CountSketch::new(encoder.fde_dim(), graph.build_dim, BUILD_SKETCH_SEED)?);
            }
        }
        let (tmp_path, file) = durable::create_tmp(&*storage, path)?;
        let mut writer = SegmentWriter {
            storage,
            final_path: path.to_path_buf(),
            tmp_path,
            out: Some(BufWriter::with_capacity(1 << 20, Appender(file.clone()))),
            file,
            reservoir_rng: SplitMix64::new(match &config.pq {
                PqSource::Train(p) => p.seed,
                PqSource::Reuse(_) => 0,
            }),
            encoder,
            config,
            pos: 0,
            entries: Vec::new(),
            tokens_start: 0,
            tokens_crc: crc32fast::Hasher::new(),
            ids: Vec::new(),
            token_offsets: vec![0],
            payload_offsets: vec![0],
            payload_bytes: Vec::new(),
            codes: Vec::new(),
            pq_error: 0.0,
            reservoir: Vec::new(),
            build_sketch,
            build_vectors: Vec::new(),
            token_ids: Vec::new(),
            doc_centroids: Vec::new(),
            doc_centroid_offsets: vec![0],
            finished: false,
            failed: false,
        };
        // The header is written last, when the counts are known.
        writer.write_raw(&[0u8; HEADER_LEN])?;
        let record = fde_params::encode_record(writer.encoder.params(), fde_params::fingerprint(&writer.encoder));
        writer.write_section(SectionKind::FdeParams, &record, SECTION_ALIGN)?;
        writer.pad_to(TOKEN_SECTION_ALIGN)?;
        writer.tokens_start = writer.pos;
        Ok(writer)
    }

    fn out(&mut self) -> Result<&mut BufWriter<Appender>> {
        let tmp = &self.tmp_path;
        self.out
            .as_mut()
            .ok_or_else(|| Error::io(tmp, std::io::Error::other("the segment writer was already finished")))
    }

    fn write_raw(&mut self, bytes: &[u8]) -> Result<()> {
        let path = self.tmp_path.clone();
        if let Err(e) = self.out()?.write_all(bytes) {
            self.failed = true;
            return Err(Error::io(&path, e));
        }
        self.pos += bytes.len() as u64;
        Ok(())
    }

    fn check_usable(&self) -> Result<()> {
        if self.failed {
            return Err(Error::io(
                &self.tmp_path,
                std::io::Error::other("an earlier write to this segment failed; start a new segment"),
            ));
        }
        Ok(())
    }

    fn pad_to(&mut self, align: u64) -> Result<()> {
        let pad = (align - self.pos % align) % align;
        self.write_raw(&vec![0u8; pad as usize])
    }

    fn write_section(&mut self, kind: SectionKind, bytes: &[u8], align: u64) -> Result<()> {
        self.pad_to(align)?;
        let entry = SectionEntry { kind, offset: self.pos, length: bytes.len() as u64, crc: crc32fast::hash(bytes) };
        self.write_raw(bytes)?;
        self.entries.push(entry);
        Ok(())
    }

    /// Documents added so far.
    pub fn doc_count(&self) -> u64 {
        self.ids.len() as u64
    }

    /// Adds documents in order (their ordinals are their positions). Token conversion and FDE/PQ
    /// encoding run in parallel; token bytes are appended to the file.
    pub fn add_batch(&mut self, docs: &[Document<'_>]) -> Result<()> {
        self.add_batch_coded(docs, None)
    }

    /// [`SegmentWriter::add_batch`] with each document's codes already known (a merge copying
    /// from a segment with the same token codebook): the centroid ids, and for residual storage
    /// the residual bytes, are kept instead of recomputed, so the stored values are unchanged.
    pub fn add_batch_coded(&mut self, docs: &[Document<'_>], coded: Option<&[CodedTokens<'_>]>) -> Result<()> {
        self.check_usable()?;
        let dim = self.encoder.params().dim as usize;
        if self.doc_count() + docs.len() as u64 > MAX_DOCS_PER_SEGMENT {
            return Err(Error::InvalidInput(format!("a segment holds at most {MAX_DOCS_PER_SEGMENT} documents")));
        }
        for doc in docs {
            if doc.tokens.dim() != dim {
                return Err(Error::InvalidInput(format!(
                    "document {}: {}-dimensional tokens, the segment stores {dim}",
                    doc.id,
                    doc.tokens.dim()
                )));
            }
            if doc.payload.is_some_and(|p| p.len() > MAX_PAYLOAD_BYTES) {
                return Err(Error::InvalidInput(format!(
                    "document {}: payload above {MAX_PAYLOAD_BYTES} bytes",
                    doc.id
                )));
            }
        }
        // Reservoir decisions first (sequential, so deterministic), so that FDEs are computed only
        // for documents that need one now: all of them with a known codebook, else the sampled.
        let first = self.ids.len();
        let slots: Vec<Option<usize>> = (0..docs.len()).map(|i| self.reservoir_slot(first + i + 1)).collect();
        let storage = self.config.storage;
        let encoder = &self.encoder;
        let codebook = match &self.config.pq {
            PqSource::Reuse(cb) => Some(cb.clone()),
            PqSource::Train(_) => None,
        };
        let want_build_vectors = codebook.is_some() && self.config.graph.is_some();
        let build_sketch = &self.build_sketch;
        let tokens_arc = self.config.tokens.clone();
        let tokens_book = tokens_arc.as_deref();
        if let Some(given) = coded {
            let rb = tokens_book.map_or(0, |b| b.residual_bytes());
            let shapes_ok = given.len() == docs.len()
                && given
                    .iter()
                    .zip(docs)
                    .all(|(g, d)| g.ids.len() == d.tokens.rows() && g.residuals.len() == d.tokens.rows() * rb);
            if !shapes_ok {
                return Err(Error::InvalidInput(
                    "one centroid id (and residual code) per token of every document".into(),
                ));
            }
            let k = tokens_book.map_or(0, |b| b.centroid_count());
            if given.iter().flat_map(|g| g.ids.iter()).any(|&c| c as usize >= k) {
                return Err(Error::InvalidInput(format!("a given centroid id is beyond the {k} centroids")));
            }
        }
        // Centroid ids of the batch's tokens at once (`TokenCodebook::assign_batch`: blocks of
        // tokens from many documents against the centroids, in parallel), not document by document
        // (a 16-token document would pad a 64-token block and stream every centroid for itself).
        let mut token_starts = Vec::with_capacity(docs.len() + 1);
        token_starts.push(0usize);
        for doc in docs {
            token_starts.push(token_starts[token_starts.len() - 1] + doc.tokens.rows());
        }
        let assigned: Option<Vec<u16>> = match (tokens_book, coded) {
            (Some(book), None) => {
                let values: Vec<Cow<'_, [f32]>> =
                    docs.par_iter().map(|d| assignment_values(d.tokens.as_slice(), storage)).collect::<Result<_>>()?;
                let values = values.concat();
                let mut ids = vec![0u16; values.len() / dim];
                book.assign_batch(&values, &mut ids)?;
                Some(ids)
            }
            _ => None,
        };
        // (stored bytes, FDE of the stored values if needed, graph build vector if the codebook is
        // known, centroid ids)
        type Encoded = (Vec<u8>, Option<Vec<f32>>, Vec<f32>, Vec<u16>);
        let encoded: Vec<Encoded> = docs
            .par_iter()
            .zip(&slots)
            .enumerate()
            .map(|(i, (doc, slot))| {
                let (ids, residuals) = match (coded, &assigned) {
                    (Some(g), _) => (g[i].ids, Some(g[i].residuals)),
                    (None, Some(ids)) => (&ids[token_starts[i]..token_starts[i + 1]], None),
                    (None, None) => (&[][..], None),
                };
                let (bytes, stored, ids) = store_tokens(doc.tokens.as_slice(), storage, tokens_book, ids, residuals)?;
                if codebook.is_none() && slot.is_none() {
                    return Ok((bytes, None, Vec::new(), ids));
                }
                let values = stored.as_deref().unwrap_or(doc.tokens.as_slice());
                let fde = encoder.encode_document(&TokenMatrix::new(values, dim)?)?;
                let build = if want_build_vectors { build_vector(&fde, build_sketch.as_ref()) } else { Vec::new() };
                Ok((bytes, Some(fde), build, ids))
            })
            .collect::<Result<_>>()?;
        // PQ codes in blocks of documents (`PqCodebook::encode_many`), in parallel.
        let mut codes = Vec::new();
        if let Some(cb) = &codebook {
            let fdes: Vec<&[f32]> = encoded.iter().filter_map(|e| e.1.as_deref()).collect();
            codes = vec![0u8; fdes.len() * cb.subspaces()];
            self.pq_error += encode_codes(cb, &fdes, &mut codes)?;
        }
        self.codes.extend_from_slice(&codes);
        for ((doc, (bytes, fde, build, ids)), slot) in docs.iter().zip(encoded).zip(slots) {
            self.build_vectors.extend_from_slice(&build);
            if tokens_book.is_some() {
                let mut distinct = ids.clone();
                distinct.sort_unstable();
                distinct.dedup();
                self.doc_centroids.extend_from_slice(&distinct);
                self.doc_centroid_offsets.push(self.doc_centroids.len() as u64);
                self.token_ids.extend_from_slice(&ids);
            }
            self.tokens_crc.update(&bytes);
            self.write_raw(&bytes)?;
            self.token_offsets.push(self.token_offsets.last().copied().unwrap_or(0) + doc.tokens.rows() as u64);
            self.payload_bytes.extend_from_slice(doc.payload.unwrap_or(&[]));
            self.payload_offsets.push(self.payload_bytes.len() as u64);
            self.ids.push(doc.id);
            if let (Some(slot), Some(fde)) = (slot, fde) {
                let d = fde.len();
                if slot * d == self.reservoir.len() {
                    self.reservoir.extend_from_slice(&fde);
                } else {
                    self.reservoir[slot * d..(slot + 1) * d].copy_from_slice(&fde);
                }
            }
        }
        Ok(())
    }

    /// Reservoir sampling (Vitter's algorithm R), deterministic for a given seed and order: the
    /// slot document number `seen` (1-based) takes in the training sample, if any.
    fn reservoir_slot(&mut self, seen: usize) -> Option<usize> {
        let PqSource::Train(params) = &self.config.pq else { return None };
        let capacity = params.max_training_vectors as usize;
        if seen <= capacity {
            Some(seen - 1)
        } else {
            let slot = self.reservoir_rng.below(seen as u64) as usize;
            (slot < capacity).then_some(slot)
        }
    }

    /// Trains the codebook if needed, writes the remaining sections, the table, the tail and the
    /// header, then publishes the file durably. The segment must hold at least one document.
    pub fn finish(mut self) -> Result<SegmentSummary> {
        self.check_usable()?;
        let n = self.ids.len();
        if n == 0 {
            return Err(Error::InvalidInput("a segment needs at least one document".into()));
        }
        let dim = self.encoder.params().dim as usize;
        let token_rows = self.token_offsets.last().copied().unwrap_or(0);
        let tokens_len = self.pos - self.tokens_start;
        let tokens_crc = std::mem::take(&mut self.tokens_crc).finalize();
        self.entries.push(SectionEntry {
            kind: SectionKind::Tokens,
            offset: self.tokens_start,
            length: tokens_len,
            crc: tokens_crc,
        });

        let n = self.ids.len();
        let (codebook, pq_distortion) = match self.config.pq.clone() {
            PqSource::Reuse(cb) => (cb, Some(self.pq_error / n.max(1) as f64)),
            PqSource::Train(params) => {
                let sampled = self.reservoir.len() / self.encoder.fde_dim().max(1);
                let trained = PqCodebook::train(&self.reservoir, self.encoder.fde_dim(), &params)?;
                self.reservoir = Vec::new();
                let cb = Arc::new(trained.codebook);
                self.codes = self.encode_stored_tokens(&cb)?;
                // The training sample fits its own codebook better than any other documents do
                // (measured: 1.6× lower error), so only the held-out documents count.
                let held_out = n.saturating_sub(sampled);
                let error = (self.pq_error - trained.distortion * sampled as f64).max(0.0);
                (cb, (held_out > 0).then(|| error / held_out as f64))
            }
        };

        let ids: Vec<u8> = self.ids.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.write_section(SectionKind::DocIds, &ids, SECTION_ALIGN)?;
        let offsets: Vec<u8> = self.token_offsets.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.write_section(SectionKind::TokenOffsets, &offsets, SECTION_ALIGN)?;
        let payload_offsets: Vec<u8> = self.payload_offsets.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.write_section(SectionKind::PayloadOffsets, &payload_offsets, SECTION_ALIGN)?;
        let payload_bytes = std::mem::take(&mut self.payload_bytes);
        self.write_section(SectionKind::PayloadBytes, &payload_bytes, SECTION_ALIGN)?;
        let centroids: Vec<u8> = codebook.centroids().iter().flat_map(|v| v.to_le_bytes()).collect();
        self.write_section(SectionKind::PqCodebook, &centroids, SECTION_ALIGN)?;
        let codes = std::mem::take(&mut self.codes);
        self.write_section(SectionKind::PqCodes, &codes, SECTION_ALIGN)?;
        if let Some(book) = self.config.tokens.clone() {
            self.write_section(SectionKind::TokenCentroids, &book.to_bytes(), SECTION_ALIGN)?;
            let ids: Vec<u8> = std::mem::take(&mut self.token_ids).iter().flat_map(|v| v.to_le_bytes()).collect();
            self.write_section(SectionKind::TokenCodes, &ids, SECTION_ALIGN)?;
            let postings = self.postings_section(book.centroid_count());
            self.write_section(SectionKind::CentroidPostings, &postings, SECTION_ALIGN)?;
        }
        if !self.config.fields.is_empty() {
            let offsets = &self.payload_offsets;
            let index = FieldIndex::build(
                &self.config.fields,
                offsets.windows(2).map(|w| &payload_bytes[w[0] as usize..w[1] as usize]),
            );
            self.write_section(SectionKind::FieldIndex, &index.encode(), SECTION_ALIGN)?;
        }
        let mut graph_extended = false;
        if let Some(graph) = self.config.graph.filter(|g| n as u64 >= g.min_docs) {
            let vectors = std::mem::take(&mut self.build_vectors);
            let build_dim = vectors.len() / n;
            let (adjacency, _) = match self.config.base_graph.take() {
                Some(base) if !base.lists.is_empty() => {
                    graph_extended = true;
                    GraphBuilder::extend(&graph.params, vectors, build_dim, base)?
                }
                _ => GraphBuilder::build(&graph.params, vectors, build_dim)?,
            };
            let header = graph_format::GraphHeader {
                max_degree: adjacency.max_degree,
                entry_point: adjacency.entry_point,
                build_dim: build_dim as u32,
                build_list: graph.params.build_list,
                alpha: graph.params.alpha,
            };
            self.write_section(SectionKind::Graph, &graph_format::encode(&adjacency, &header), SECTION_ALIGN)?;
        }

        self.pad_to(SECTION_ALIGN)?;
        let table_offset = self.pos;
        let table: Vec<u8> = self.entries.iter().flat_map(encode_entry).collect();
        self.write_raw(&table)?;
        let file_len = self.pos + crate::format::segment::TAIL_LEN as u64;
        let tail = Tail {
            table_offset,
            section_count: self.entries.len() as u32,
            table_crc: crc32fast::hash(&table),
            file_len,
        };
        self.write_raw(&encode_tail(&tail))?;
        let header = Header {
            version: crate::format::segment::FORMAT_VERSION,
            segment_id: self.config.segment_id,
            doc_count: n as u64,
            token_rows,
            dim: dim as u32,
            storage: self.config.storage.code(),
            pq_subspaces: codebook.subspaces() as u32,
        };
        let file = self.take_file()?;
        file.write_at(&encode_header(&header), 0).map_err(|e| Error::io(&self.tmp_path, e))?;
        durable::publish(&*self.storage, file, &self.tmp_path, &self.final_path)?;
        self.finished = true;
        Ok(SegmentSummary {
            path: self.final_path.clone(),
            doc_count: n as u64,
            token_rows,
            bytes: file_len,
            graph_extended,
            pq_distortion,
            codebook,
        })
    }

    /// The centroid postings section (storage-format.md): per centroid, the ascending ordinals of
    /// the documents with a token assigned to it (a counting sort of the per-document sets).
    fn postings_section(&mut self, k: usize) -> Vec<u8> {
        let mut counts = vec![0u32; k + 1];
        for &c in &self.doc_centroids {
            counts[c as usize + 1] += 1;
        }
        for c in 0..k {
            counts[c + 1] += counts[c];
        }
        let mut ordinals = vec![0u32; self.doc_centroids.len()];
        let mut next = counts.clone();
        for (doc, w) in self.doc_centroid_offsets.windows(2).enumerate() {
            for &c in &self.doc_centroids[w[0] as usize..w[1] as usize] {
                ordinals[next[c as usize] as usize] = doc as u32;
                next[c as usize] += 1;
            }
        }
        self.doc_centroids = Vec::new();
        let mut out = Vec::with_capacity(8 + 4 * (counts.len() + ordinals.len()));
        out.extend_from_slice(&(k as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        for v in counts.iter().chain(&ordinals) {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    fn take_file(&mut self) -> Result<Arc<dyn WritableFile>> {
        let out = self.out.take().ok_or_else(|| {
            Error::io(&self.tmp_path, std::io::Error::other("the segment writer was already finished"))
        })?;
        out.into_inner().map_err(|e| Error::io(&self.tmp_path, e.into_error()))?;
        Ok(self.file.clone())
    }

    /// Second pass: reads every document's stored tokens back from the temporary file and
    /// computes its PQ code, in parallel batches.
    fn encode_stored_tokens(&mut self, codebook: &PqCodebook) -> Result<Vec<u8>> {
        let path = self.tmp_path.clone();
        self.out()?.flush().map_err(|e| Error::io(&path, e))?;
        let file = self.file.clone();
        let dim = self.encoder.params().dim as usize;
        let bpv = self.config.storage.segment_row_bytes(dim) as u64;
        let n = self.ids.len();
        let m = codebook.subspaces();
        let mut codes = vec![0u8; n * m];
        let build_dim = self.build_sketch.as_ref().map_or(self.encoder.fde_dim(), |s| s.out_dim());
        let want_build_vectors = self.config.graph.is_some();
        let mut build_vectors = vec![0f32; if want_build_vectors { n * build_dim } else { 0 }];
        const BATCH: usize = 256;
        for start in (0..n).step_by(BATCH) {
            let end = (start + BATCH).min(n);
            let first = self.token_offsets[start];
            let last = self.token_offsets[end];
            let mut bytes = vec![0u8; ((last - first) * bpv) as usize];
            file.read_at(&mut bytes, self.tokens_start + first * bpv).map_err(|e| Error::io(&path, e))?;
            let storage = self.config.storage;
            let tokens_book = self.config.tokens.as_deref();
            let token_ids = &self.token_ids;
            let offsets = &self.token_offsets;
            let encoder = &self.encoder;
            let sketch = self.build_sketch.as_ref();
            let built: Vec<(Vec<f32>, Vec<f32>)> = (start..end)
                .into_par_iter()
                .map(|doc| {
                    let lo = ((offsets[doc] - first) * bpv) as usize;
                    let hi = ((offsets[doc + 1] - first) * bpv) as usize;
                    let ids = token_ids.get(offsets[doc] as usize..offsets[doc + 1] as usize).unwrap_or(&[]);
                    let values = load_tokens(&bytes[lo..hi], storage, tokens_book, ids)?;
                    let fde = encoder.encode_document(&TokenMatrix::new(&values, dim)?)?;
                    let build = if want_build_vectors { build_vector(&fde, sketch) } else { Vec::new() };
                    Ok((fde, build))
                })
                .collect::<Result<_>>()?;
            let fdes: Vec<&[f32]> = built.iter().map(|(f, _)| &f[..]).collect();
            self.pq_error += encode_codes(codebook, &fdes, &mut codes[start * m..end * m])?;
            if want_build_vectors {
                for (i, (_, v)) in built.iter().enumerate() {
                    build_vectors[(start + i) * build_dim..(start + i + 1) * build_dim].copy_from_slice(v);
                }
            }
        }
        self.build_vectors = build_vectors;
        Ok(codes)
    }
}

impl Drop for SegmentWriter {
    fn drop(&mut self) {
        if !self.finished {
            // Best effort: an unfinished segment must not linger (recovery would also remove it).
            self.out.take();
            let _ = self.storage.remove_file(&self.tmp_path);
        }
    }
}

/// PQ codes of `fdes` into `codes`, in parallel blocks of [`ENCODE_BLOCK`] documents (the
/// FDEs are gathered into one block buffer, so each subspace's centroids stay in cache). Returns
/// their summed squared quantization error.
fn encode_codes(codebook: &PqCodebook, fdes: &[&[f32]], codes: &mut [u8]) -> Result<f64> {
    let m = codebook.subspaces();
    fdes.par_chunks(ENCODE_BLOCK)
        .zip(codes.par_chunks_mut(m * ENCODE_BLOCK))
        .map(|(block, out)| {
            let gathered: Vec<f32> = block.concat();
            codebook.encode_many(&gathered, out)
        })
        .try_reduce(|| 0.0, |a, b| Ok(a + b))
}

/// The graph build vector of an FDE: its Count Sketch (or the FDE itself). The graph builder
/// normalises it.
fn build_vector(fde: &[f32], sketch: Option<&CountSketch>) -> Vec<f32> {
    match sketch {
        Some(s) => {
            let mut out = vec![0f32; s.out_dim()];
            s.apply(fde, &mut out);
            out
        }
        None => fde.to_vec(),
    }
}

/// A document's codes as a segment with the same token codebook stores them.
#[derive(Clone, Copy, Debug)]
pub struct CodedTokens<'a> {
    /// Centroid id of every token.
    pub ids: &'a [u16],
    /// Residual codes of every token (empty for the plain storage types).
    pub residuals: &'a [u8],
}

/// Stored bytes, decoded values (all types but `f32`), centroid ids (with a token codebook).
type StoredTokens = (Vec<u8>, Option<Vec<f32>>, Vec<u16>);

/// Token values as stored: the little-endian bytes and, for every type but `f32`, the values they
/// decode to (so FDEs are computed from exactly what the segment holds). `ids` are the tokens'
/// centroid ids (empty without a token codebook; chosen by [`assignment_values`]); `residuals`,
/// the residual codes when they are known already (a merge from a segment with the same codebook),
/// else residual storage encodes them from `values` against `ids`.
fn store_tokens(
    values: &[f32],
    storage: TokenStorage,
    book: Option<&TokenCodebook>,
    ids: &[u16],
    residuals: Option<&[u8]>,
) -> Result<StoredTokens> {
    let ids = ids.to_vec();
    match storage {
        TokenStorage::F32 => Ok((values.iter().flat_map(|v| v.to_le_bytes()).collect(), None, ids)),
        TokenStorage::F16 | TokenStorage::Bf16 => {
            let bits = to_16bit(values, storage)?;
            let bytes = bits.iter().flat_map(|b| b.to_le_bytes()).collect();
            Ok((bytes, Some(from_16bit(&bits, storage)?), ids))
        }
        TokenStorage::Residual1 | TokenStorage::Residual2 | TokenStorage::Residual4 => {
            let book = book.ok_or_else(|| Error::InvalidInput("residual storage needs a token codebook".into()))?;
            let rb = book.residual_bytes();
            let bytes = match residuals {
                Some(r) => r.to_vec(),
                None => {
                    let mut bytes = vec![0u8; ids.len() * rb];
                    for ((token, &id), out) in values.chunks_exact(book.dim()).zip(&ids).zip(bytes.chunks_exact_mut(rb))
                    {
                        book.encode_residual(token, id, out)?;
                    }
                    bytes
                }
            };
            let mut decoded = vec![0f32; values.len()];
            book.decode_many(&ids, &bytes, &mut decoded)?;
            Ok((bytes, Some(decoded), ids))
        }
    }
}

/// The values a token's centroid id is chosen for: what the segment stores for the plain types
/// (so f16 and bf16 tokens are assigned as they decode), the original values for the residual
/// codecs (whose residuals are taken from them).
fn assignment_values(values: &[f32], storage: TokenStorage) -> Result<Cow<'_, [f32]>> {
    match storage {
        TokenStorage::F16 | TokenStorage::Bf16 => Ok(Cow::Owned(from_16bit(&to_16bit(values, storage)?, storage)?)),
        _ => Ok(Cow::Borrowed(values)),
    }
}

fn load_tokens(bytes: &[u8], storage: TokenStorage, book: Option<&TokenCodebook>, ids: &[u16]) -> Result<Vec<f32>> {
    Ok(match storage {
        TokenStorage::F32 => {
            bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap_or_default())).collect()
        }
        TokenStorage::F16 | TokenStorage::Bf16 => {
            let bits: Vec<u16> = bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
            if storage == TokenStorage::Bf16 {
                crate::encode::storage::bf16_bits_to_f32(&bits)
            } else {
                crate::encode::storage::f16_bits_to_f32(&bits)
            }
        }
        _ => {
            let book = book.ok_or_else(|| Error::InvalidInput("residual storage needs a token codebook".into()))?;
            let mut out = vec![0f32; ids.len() * book.dim()];
            book.decode_many(ids, bytes, &mut out)?;
            out
        }
    })
}
