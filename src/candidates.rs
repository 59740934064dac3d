//! The candidate stage of one segment: a graph beam search (or a flat scan where the segment has
//! no graph, or few documents pass a filter) whose documents are scored by one of two
//! [`Navigation`] scorers:
//!
//! - **PQ-ADC** over the product-quantized FDE codes (MUVERA's candidate score);
//! - **centroid interaction** over the token centroid ids (PLAID's cheap score,
//!   `Σ_i max_j ⟨q_i, C(d_j)⟩` from the query's table), for segments of short documents.
//!
//! Why two. PQ codes small enough for the RAM budget of a large collection (160 B for a 10,240-value
//! FDE, 64 values per byte) rank short documents too coarsely: at 100,000 generated documents of
//! 8-24 tokens even an exhaustive scan of them finds the exact top-10 at 0.926 / 0.953 with 600 /
//! 1,000 candidates (the graph 0.921 / 0.946), so no graph over them can do better. Centroid
//! interaction on the same documents is a better score than even the 1,280 B codes: navigated by it,
//! the same graph gives 0.972 at 600, and its exhaustive scan 0.986. It costs a table row per
//! document token, so it is cheap where documents are short, and it reads 2 bytes per token
//! instead of a PQ code, which is what keeps short documents within the RAM budget. Its cost grows
//! with the document's tokens, and on long documents the FDE ranks well already, so long-document
//! segments stay on PQ-ADC by default ([`CENTROID_NAVIGATION_MAX_TOKENS`]), as do small segments
//! ([`CENTROID_NAVIGATION_MIN_DOCS`]).

use std::time::Instant;

use crate::encode::codec::CentroidTable;
use crate::encode::pq::AdcTable;
use crate::error::{Error, Result};
use crate::graph::{beam_search_batched, SearchStats};
use crate::limits::MAX_LIST_SIZE;
use crate::search::{SegmentSearch, FILTER_SCAN_PER_BEAM, FILTER_WIDEN_BELOW};
use crate::segment::SegmentReader;
use crate::topk::{Scored, TopK};

/// How a segment's candidate stage scores documents ([`crate::SearchParams::navigation`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Navigation {
    /// PQ-ADC inner product of the document's FDE code with the query FDE.
    Pq,
    /// Centroid interaction over the document's token centroid ids.
    Centroids,
}

/// Segments whose documents average at most this many tokens navigate by centroid interaction
/// by default (where they have a graph and token centroid ids). Measured with `quiver bench
/// --sweep nav=pq,centroids` (recall@10 against exact MaxSim, p50, side by side in one run):
/// generated 100,000 × 8-24 tokens, 16-token queries, 160 B codes, 600 candidates: 0.921 at
/// 8.6 ms by PQ, 0.972 at 4.0 ms by centroids; 5,000 × 50-90, 7-token queries: 1.0 at 3.6 against
/// 1.0 at 2.0 ms. Longer documents were no worse either (5,183 × 180-240, 19-token queries: 0.999
/// at 5.9 ms against 1.0 at 5.5 ms), but the real long-document sets the defaults are judged on
/// were measured on PQ navigation, and a nearest-centroid scan of 1-8-token queries over
/// nfcorpus-mini's 199-token abstracts found a little less (0.973 against 0.987), so documents
/// longer than passages stay on PQ-ADC until a real long-document set with a graph says otherwise.
pub const CENTROID_NAVIGATION_MAX_TOKENS: u64 = 96;

/// Segments navigate by centroid interaction by default only from this many documents on (the
/// size from which a collection's defaults are those of a large one,
/// [`crate::SearchParams::LARGE_COLLECTION_DOCS`]). That is where PQ's coarse ranking is what
/// limits recall, and where the RAM per document matters. Below it, PQ-ADC and its FDE guard are
/// kept: on the Python suite's 300 documents of noisy, barely clustered vectors (centroids say
/// little about such tokens), navigating by centroid interaction changed the top hit of 1 query in
/// 10 against exact MaxSim.
pub const CENTROID_NAVIGATION_MIN_DOCS: u64 = 32_768;

/// The default navigation of a segment of `docs` documents and `token_rows` tokens, with or
/// without a graph and token centroid ids ([`Navigation::for_segment`] with `None`).
pub fn default_navigation(docs: u64, token_rows: u64, has_graph: bool, has_centroid_ids: bool) -> Navigation {
    let short = token_rows <= CENTROID_NAVIGATION_MAX_TOKENS * docs;
    if has_graph && has_centroid_ids && short && docs >= CENTROID_NAVIGATION_MIN_DOCS {
        Navigation::Centroids
    } else {
        Navigation::Pq
    }
}

impl Navigation {
    /// Parses `pq` or `centroids`.
    pub fn parse(text: &str) -> Result<Navigation> {
        match text {
            "pq" => Ok(Navigation::Pq),
            "centroids" => Ok(Navigation::Centroids),
            other => Err(Error::invalid_param("navigation", format!("{other:?} is not pq or centroids"))),
        }
    }

    /// Its name, as [`Navigation::parse`] reads it.
    pub fn name(self) -> &'static str {
        match self {
            Navigation::Pq => "pq",
            Navigation::Centroids => "centroids",
        }
    }

    /// The scorer `segment`'s candidate stage uses when `requested` (`None`: the default).
    /// Centroid interaction needs the segment's token centroid ids; a segment without them (written
    /// before token codebooks) always uses PQ-ADC. By default ([`default_navigation`]), centroid
    /// interaction is used by segments of at least [`CENTROID_NAVIGATION_MIN_DOCS`] documents that
    /// have a graph and whose documents average at most [`CENTROID_NAVIGATION_MAX_TOKENS`] tokens;
    /// smaller segments keep PQ-ADC and the FDE's view of documents whose centroids say little.
    pub fn for_segment(segment: &SegmentReader, requested: Option<Navigation>) -> Navigation {
        let has_ids = segment.token_codebook().is_some() && segment.has_token_centroid_ids();
        match requested {
            _ if !has_ids => Navigation::Pq,
            Some(choice) => choice,
            None => {
                default_navigation(segment.doc_count() as u64, segment.token_rows(), segment.graph().is_some(), has_ids)
            }
        }
    }
}

/// A segment's candidate scorer, ready for one query.
#[derive(Clone, Copy)]
pub(crate) enum Scorer<'a> {
    /// PQ-ADC against the segment's codes (of the table's length: [`Scorer::pq`]).
    Pq(&'a AdcTable),
    /// Centroid interaction against the segment's token centroid ids.
    Centroids(&'a CentroidTable),
}

impl<'a> Scorer<'a> {
    /// PQ-ADC with `table` over `segment`'s codes, which must be of the table's length.
    pub(crate) fn pq(table: &'a AdcTable, segment: &SegmentReader) -> Result<Self> {
        if table.subspaces() != segment.pq_subspaces() {
            return Err(Error::InvalidInput(format!(
                "ADC table for {}-byte codes used on a segment with {}-byte codes",
                table.subspaces(),
                segment.pq_subspaces()
            )));
        }
        Ok(Scorer::Pq(table))
    }

    /// Scores `ids` of `segment` into `out` (replacing its contents). A centroid id beyond the
    /// table is reported as damage to the segment, never a wrong score.
    fn score_many(self, segment: &SegmentReader, ids: &[u32], out: &mut Vec<f32>) -> Result<()> {
        match self {
            Scorer::Pq(table) => {
                table.score_many(segment.pq_codes(), ids, out);
                Ok(())
            }
            Scorer::Centroids(table) => {
                out.clear();
                for &id in ids {
                    let tokens = segment.token_centroid_ids(id as usize).unwrap_or(&[]);
                    out.push(table.score(tokens).map_err(|e| segment.damaged(e))?);
                }
                Ok(())
            }
        }
    }

    /// Asks the kernel to start reading what scoring `ids` touches.
    fn prefetch(self, segment: &SegmentReader, ids: &[u32]) {
        match self {
            Scorer::Pq(_) => segment.prefetch_codes(ids),
            Scorer::Centroids(_) => segment.prefetch_token_codes(ids),
        }
    }

    /// The best `top_n` of `ordinals` by this score, best first, scored in blocks (each block
    /// prefetched first when `prefetch`); also counts the scores computed into `stats`.
    fn scan(
        self,
        segment: &SegmentReader,
        ordinals: impl Iterator<Item = u32>,
        top_n: usize,
        prefetch: bool,
        stats: &mut SearchStats,
    ) -> Result<Vec<Scored>> {
        if let Scorer::Pq(table) = self {
            return Ok(table.scan_ordinals(segment.pq_codes(), ordinals, top_n, |ids| {
                stats.distance_computations += ids.len() as u64;
                if prefetch {
                    segment.prefetch_codes(ids);
                }
            }));
        }
        const BLOCK: usize = 256;
        let mut top = TopK::new(top_n.max(1));
        let (mut block, mut scores) = (Vec::with_capacity(BLOCK), Vec::with_capacity(BLOCK));
        let mut ordinals = ordinals.peekable();
        while ordinals.peek().is_some() {
            block.clear();
            block.extend(ordinals.by_ref().take(BLOCK));
            if prefetch {
                self.prefetch(segment, &block);
            }
            self.score_many(segment, &block, &mut scores)?;
            stats.distance_computations += block.len() as u64;
            for (&doc, &score) in block.iter().zip(&scores) {
                top.push(Scored { doc, score });
            }
        }
        Ok(top.into_sorted())
    }
}

/// The candidate stage of one segment: up to `max(candidates, list_size)` ordinals by `scorer`,
/// best first (a graph beam of width `list_size`, or a flat scan), and the microseconds it took.
pub(crate) fn segment_candidates(
    segment: &SegmentReader,
    scorer: Scorer<'_>,
    params: SegmentSearch,
    skip: impl Fn(u32) -> bool,
) -> Result<(Vec<Scored>, SearchStats, f64)> {
    let started = Instant::now();
    let width = params.list_size.max(params.candidates.max(params.k));
    let mut stats = SearchStats::default();
    let found = match segment.graph() {
        Some(graph) => {
            // A damaged centroid id ends the beam at the node that holds it (the error names
            // the segment); no score is made up for it.
            let score = |ids: &[u32], out: &mut Vec<f32>| {
                if params.prefetch {
                    scorer.prefetch(segment, ids);
                }
                scorer.score_many(segment, ids, out)
            };
            let mut beam = beam_search_batched(&graph, width, score, skip, &mut stats)?;
            beam.truncate(width);
            beam
        }
        None => {
            let n = segment.doc_count() as u32;
            scorer.scan(segment, (0..n).filter(|&o| !skip(o)), width, params.prefetch, &mut stats)?
        }
    };
    Ok((found, stats, started.elapsed().as_secs_f64() * 1e6))
}

/// [`segment_candidates`] under a filter whose passing ordinals are `passing` (`skip` already
/// excludes the others). The graph beam is widened when few pass ([`filtered_beam`]); when the
/// passing documents are fewer than [`FILTER_SCAN_PER_BEAM`] times that beam, they are scored
/// directly instead. Also says whether it scanned.
pub(crate) fn filtered_candidates(
    segment: &SegmentReader,
    scorer: Scorer<'_>,
    params: SegmentSearch,
    passing: Option<&roaring::RoaringBitmap>,
    skip: impl Fn(u32) -> bool,
) -> Result<(Vec<Scored>, SearchStats, f64, bool)> {
    let Some(passing) = passing else {
        let (found, stats, us) = segment_candidates(segment, scorer, params, skip)?;
        return Ok((found, stats, us, false));
    };
    let width = params.list_size.max(params.candidates.max(params.k));
    let beam = filtered_beam(width, segment.doc_count(), passing.len() as usize);
    if segment.graph().is_none() || passing.len() <= (FILTER_SCAN_PER_BEAM * beam) as u64 {
        let started = Instant::now();
        let mut stats = SearchStats::default();
        let found = scorer.scan(segment, passing.iter().filter(|&o| !skip(o)), width, params.prefetch, &mut stats)?;
        return Ok((found, stats, started.elapsed().as_secs_f64() * 1e6, true));
    }
    let (found, stats, us) = segment_candidates(segment, scorer, SegmentSearch { list_size: beam, ..params }, skip)?;
    Ok((found, stats, us, false))
}

/// The graph beam for a filter that `passing` of `n` documents pass, from an unfiltered beam of
/// `width`: unchanged while at least [`FILTER_WIDEN_BELOW`] of the documents pass (the beam walks
/// through the others and still holds enough that pass), else widened by
/// `√(FILTER_WIDEN_BELOW · n / passing)`, at most [`MAX_LIST_SIZE`] and `n`.
fn filtered_beam(width: usize, n: usize, passing: usize) -> usize {
    let share = passing.max(1) as f64 / n.max(1) as f64;
    let widen = (FILTER_WIDEN_BELOW / share).sqrt().max(1.0);
    ((width as f64 * widen).ceil() as usize).min(MAX_LIST_SIZE).min(n.max(1)).max(width.min(n.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filtered_beam_widens_only_below_a_fifth_and_stays_bounded() {
        assert_eq!(filtered_beam(600, 100_000, 50_000), 600);
        assert_eq!(filtered_beam(600, 100_000, 20_000), 600);
        assert_eq!(filtered_beam(600, 100_000, 10_000), 849, "600 · √2, rounded up");
        assert_eq!(filtered_beam(600, 100_000, 1_000), 2684);
        assert_eq!(filtered_beam(600, 1_000_000, 0), MAX_LIST_SIZE, "nothing passing: the cap");
        assert_eq!(filtered_beam(600, 500, 1), 500, "never wider than the segment");
        assert_eq!(filtered_beam(10, 5, 5), 5);
    }

    #[test]
    fn centroids_are_the_default_only_for_large_segments_of_short_documents_with_a_graph_and_ids() {
        let large = CENTROID_NAVIGATION_MIN_DOCS;
        assert_eq!(default_navigation(large, 16 * large, true, true), Navigation::Centroids);
        assert_eq!(default_navigation(large, 96 * large, true, true), Navigation::Centroids, "96 tokens");
        assert_eq!(default_navigation(large, 96 * large + 1, true, true), Navigation::Pq, "longer");
        assert_eq!(default_navigation(large - 1, 16 * large, true, true), Navigation::Pq, "small");
        assert_eq!(default_navigation(large, 16 * large, false, true), Navigation::Pq, "no graph");
        assert_eq!(default_navigation(large, 16 * large, true, false), Navigation::Pq, "no ids");
    }

    #[test]
    fn navigation_names_round_trip_and_unknown_names_are_refused() {
        for nav in [Navigation::Pq, Navigation::Centroids] {
            assert_eq!(Navigation::parse(nav.name()).unwrap(), nav);
        }
        assert!(matches!(Navigation::parse("graph"), Err(Error::InvalidParameter { .. })));
    }
}
