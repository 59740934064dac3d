//! The query pipeline over one segment: PQ-ADC candidates, then exact MaxSim over the
//! memory-mapped tokens. (The graph and the cross-segment merge extend this in later issues.)

use crate::encode::maxsim::MaxSimQuery;
use crate::encode::pq::AdcTable;
use crate::error::{Error, Result};
use crate::segment::SegmentReader;
use crate::topk::{Scored, TopK};

/// Finds the best `k` documents of `segment` for a query: the `candidates` best by PQ-ADC score
/// (a flat scan of the codes), reranked by exact MaxSim over the stored tokens. `skip` excludes
/// ordinals (deleted or superseded documents). Returns ordinals with MaxSim scores, best first.
pub fn search_segment_flat(
    segment: &SegmentReader,
    table: &AdcTable,
    query: &MaxSimQuery,
    candidates: usize,
    k: usize,
    skip: impl Fn(u32) -> bool,
) -> Result<Vec<Scored>> {
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
    let mut top = TopK::new(k);
    for candidate in table.scan(segment.pq_codes(), candidates.max(k), skip) {
        let score = query.score(segment.tokens(candidate.doc as usize))?;
        top.push(Scored { doc: candidate.doc, score });
    }
    Ok(top.into_sorted())
}
