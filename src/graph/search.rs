//! Beam search over a stored graph (the "greedy search" of the DiskANN papers with list size L).

use super::{Neighbors, VisitedSet};
use crate::error::Result;
use crate::topk::{Scored, TopK};

/// Counters of one search.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SearchStats {
    /// Nodes scored (PQ-ADC distance computations).
    pub distance_computations: u64,
    /// Nodes expanded (adjacency lists read).
    pub hops: u64,
}

/// Searches `graph` from its entry point with a beam of `list_size`, scoring nodes with `score`
/// (higher is better, e.g. an ADC inner product). Every node is traversed, but nodes for which
/// `skip` is true (deleted or superseded documents) are never returned. Returns the best
/// `list_size` returnable nodes seen, best first (ties: lower id).
pub fn beam_search<G: Neighbors>(
    graph: &G,
    list_size: usize,
    mut score: impl FnMut(u32) -> f32,
    skip: impl Fn(u32) -> bool,
    stats: &mut SearchStats,
) -> Result<Vec<Scored>> {
    beam_search_batched(
        graph,
        list_size,
        |ids: &[u32], out: &mut Vec<f32>| {
            out.clear();
            out.extend(ids.iter().map(|&id| score(id)));
            Ok(())
        },
        skip,
        stats,
    )
}

/// [`beam_search`] with a scorer that takes every newly seen neighbour of an expanded node at
/// once (`score(ids, out)` fills `out[i]` for `ids[i]`), so it can overlap their memory accesses
/// (see `AdcTable::score_many`). Same results. A scorer error (damaged data) ends the search at
/// once and is returned.
pub fn beam_search_batched<G: Neighbors>(
    graph: &G,
    list_size: usize,
    mut score: impl FnMut(&[u32], &mut Vec<f32>) -> Result<()>,
    skip: impl Fn(u32) -> bool,
    stats: &mut SearchStats,
) -> Result<Vec<Scored>> {
    let list_size = list_size.max(1);
    let mut seen = VisitedSet::new();
    let mut mark = |id: u32| seen.insert(id);
    // The beam: (score, id, expanded), best first.
    // The beam never holds more than every node; `list_size` is caller-supplied.
    let list_size = list_size.min(graph.nodes().max(1));
    let mut beam: Vec<(f32, u32, bool)> = Vec::with_capacity(list_size + 1);
    let mut results = TopK::new(list_size);
    let entry = graph.entry_point();
    mark(entry);
    let mut scores = Vec::new();
    score(&[entry], &mut scores)?;
    let s = scores[0];
    stats.distance_computations += 1;
    beam.push((s, entry, false));
    if !skip(entry) {
        results.push(Scored { doc: entry, score: s });
    }
    let mut neighbors = Vec::new();
    let mut fresh = Vec::new();
    // Everything before `cursor` is expanded: the next node to expand is found from there, and an
    // insertion before it moves it back (DiskANN's trick; a scan from the start made wide beams
    // quadratic).
    let mut cursor = 0;
    while let Some(offset) = beam[cursor..].iter().position(|c| !c.2) {
        let i = cursor + offset;
        cursor = i;
        beam[i].2 = true;
        stats.hops += 1;
        neighbors.clear();
        graph.neighbors_into(beam[i].1, &mut neighbors)?;
        fresh.clear();
        fresh.extend(neighbors.iter().copied().filter(|&nb| mark(nb)));
        score(&fresh, &mut scores)?;
        stats.distance_computations += fresh.len() as u64;
        for (&nb, &s) in fresh.iter().zip(&scores) {
            if !skip(nb) {
                results.push(Scored { doc: nb, score: s });
            }
            let better = |a: (f32, u32), b: (f32, u32)| a.0 > b.0 || (a.0 == b.0 && a.1 < b.1);
            if beam.len() == list_size && !better((s, nb), (beam[list_size - 1].0, beam[list_size - 1].1)) {
                continue;
            }
            let at = beam.partition_point(|c| better((c.0, c.1), (s, nb)));
            beam.insert(at, (s, nb, false));
            beam.truncate(list_size);
            cursor = cursor.min(at);
        }
    }
    Ok(results.into_sorted())
}
