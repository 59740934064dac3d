//! The merge: copies the live documents of input segments, in input order, into one new segment.
//!
//! Tokens are read from the inputs' memory maps and rewritten as stored (16-bit values convert to
//! `f32` and back exactly; residual codes and centroid ids from an input with the output's token
//! codebook are copied as they are, others are decoded and encoded again), payloads are copied,
//! and FDEs, PQ codes and the graph are recomputed:
//! codes cannot simply be copied because inputs may carry different codebooks (the collection
//! retrains while it is young), and the graph must be rebuilt over the merged set anyway.
//! Nothing here touches the catalog; the caller commits the result (crash reasoning in
//! [`crate::collection`]).

use std::path::Path;
use std::sync::Arc;

use crate::catalog::Location;
use crate::encode::fde::FdeEncoder;
use crate::encode::maxsim::DocTokens;
use crate::encode::tokens::TokenMatrix;
use crate::error::Result;
use crate::io::storage::Storage;
use crate::segment::{CodedTokens, Document, LiveBits, SegmentConfig, SegmentReader, SegmentSummary, SegmentWriter};

/// One input: a segment and which of its ordinals are live.
pub struct MergeInput<'a> {
    /// The input's id.
    pub id: u64,
    /// Its reader.
    pub reader: &'a SegmentReader,
    /// Its live ordinals at the snapshot the merge runs on.
    pub live: &'a LiveBits,
}

/// A written (published, not yet committed) merge output.
pub struct Merged {
    /// The new file.
    pub summary: SegmentSummary,
    /// For each copied document: id, where it came from, its new ordinal.
    pub moved: Vec<(u64, Location, u32)>,
}

/// A document waiting for the writer: id, tokens, payload, its codes when they can be kept.
type Pending<'a> = (u64, Vec<f32>, &'a [u8], Option<CodedTokens<'a>>);

/// Documents handed to the writer at once (bounds the `f32` copies held in RAM).
const MERGE_BATCH: usize = 256;

/// Writes the live documents of `inputs` to `path`. Returns `None` (and writes nothing) when no
/// input has a live document.
pub fn merge(
    storage: Arc<dyn Storage>,
    inputs: &[MergeInput<'_>],
    path: &Path,
    encoder: Arc<FdeEncoder>,
    config: SegmentConfig,
    mut progress: impl FnMut(u64),
) -> Result<Option<Merged>> {
    let total: usize = inputs.iter().map(|i| i.live.live_count()).sum();
    if total == 0 {
        return Ok(None);
    }
    let dim = encoder.params().dim as usize;
    // A document from an input with the output's token codebook keeps its centroid ids (its
    // residual codes then decode and re-encode to the same values); others are reassigned.
    let output_key = config.tokens.as_ref().map(|b| crc32fast::hash(&b.to_bytes()));
    let mut writer = SegmentWriter::create_in(storage, path, encoder, config)?;
    let mut moved = Vec::with_capacity(total);
    let mut pending: Vec<Pending<'_>> = Vec::with_capacity(MERGE_BATCH);
    let mut flush_batch = |writer: &mut SegmentWriter, pending: &mut Vec<Pending<'_>>| -> Result<()> {
        let docs: Vec<Document<'_>> = pending
            .iter()
            .map(|(id, tokens, payload, _)| {
                Ok(Document {
                    id: *id,
                    tokens: TokenMatrix::new(tokens, dim)?,
                    payload: if payload.is_empty() { None } else { Some(*payload) },
                })
            })
            .collect::<Result<_>>()?;
        let ids: Option<Vec<CodedTokens<'_>>> = pending.iter().map(|p| p.3).collect();
        writer.add_batch_coded(&docs, ids.as_deref())?;
        progress(docs.len() as u64);
        pending.clear();
        Ok(())
    };
    for input in inputs {
        let same_book = output_key.is_some() && input.reader.token_codebook_key() == output_key;
        let ids = input.reader.doc_ids();
        for ordinal in input.live.iter_live() {
            let id = ids[ordinal as usize];
            moved.push((id, Location { segment: input.id, ordinal }, moved.len() as u32));
            pending.push((
                id,
                input.reader.tokens_f32(ordinal as usize)?,
                input.reader.payload(ordinal as usize),
                if same_book { coded(input.reader, ordinal as usize) } else { None },
            ));
            if pending.len() == MERGE_BATCH {
                flush_batch(&mut writer, &mut pending)?;
            }
        }
    }
    if !pending.is_empty() {
        flush_batch(&mut writer, &mut pending)?;
    }
    let summary = writer.finish()?;
    Ok(Some(Merged { summary, moved }))
}

/// The stored codes of document `ordinal` (centroid ids, and residual bytes for residual storage).
fn coded(reader: &SegmentReader, ordinal: usize) -> Option<CodedTokens<'_>> {
    let ids = reader.token_centroid_ids(ordinal)?;
    match reader.tokens(ordinal) {
        DocTokens::Residual(r) => Some(CodedTokens { ids: r.ids, residuals: r.codes }),
        _ => Some(CodedTokens { ids, residuals: &[] }),
    }
}
