//! The query pipeline over one segment: candidates by PQ-ADC inner product (a graph beam search,
//! or a flat scan of the codes when the segment has no graph), then exact MaxSim over the
//! memory-mapped tokens. (The cross-segment merge and the memtable join in the search issue.)

use crate::encode::maxsim::MaxSimQuery;
use crate::encode::pq::AdcTable;
use crate::error::{Error, Result};
use crate::graph::{beam_search, SearchStats};
use crate::segment::SegmentReader;
use crate::topk::{Scored, TopK};

/// Knobs of a segment search.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentSearch {
    /// Results wanted.
    pub k: usize,
    /// Candidates reranked by exact MaxSim (at least `k`).
    pub candidates: usize,
    /// Graph search list size L (the beam is at least `candidates` wide).
    pub list_size: usize,
}

/// Finds the best `k` documents of `segment`: the `candidates` best by PQ-ADC score, reranked by
/// exact MaxSim over the stored tokens. `skip` excludes ordinals (deleted or superseded
/// documents); the graph still walks through them. Returns ordinals with MaxSim scores, best
/// first, and the candidate stage's counters.
pub fn search_segment(
    segment: &SegmentReader,
    table: &AdcTable,
    query: &MaxSimQuery,
    params: SegmentSearch,
    skip: impl Fn(u32) -> bool,
) -> Result<(Vec<Scored>, SearchStats)> {
    if table.subspaces() != segment.pq_subspaces() {
        return Err(Error::InvalidInput(format!(
            "ADC table for {}-byte codes used on a segment with {}-byte codes",
            table.subspaces(),
            segment.pq_subspaces()
        )));
    }
    if query.dim() != segment.dim() {
        return Err(Error::InvalidInput(format!(
            "wrong dimension: query tokens are {}-dimensional, the segment stores {}",
            query.dim(),
            segment.dim()
        )));
    }
    let candidates = params.candidates.max(params.k);
    let mut stats = SearchStats::default();
    let codes = segment.pq_codes();
    let m = segment.pq_subspaces();
    let found = match segment.graph() {
        Some(graph) => {
            let score = |node: u32| table.score(&codes[node as usize * m..(node as usize + 1) * m]);
            let mut beam = beam_search(&graph, params.list_size.max(candidates), score, skip, &mut stats)?;
            beam.truncate(candidates);
            beam
        }
        None => {
            stats.distance_computations = segment.doc_count() as u64;
            table.scan(codes, candidates, skip)
        }
    };
    let mut top = TopK::new(params.k);
    for candidate in found {
        let score = query.score(segment.tokens(candidate.doc as usize))?;
        top.push(Scored { doc: candidate.doc, score });
    }
    Ok((top.into_sorted(), stats))
}
