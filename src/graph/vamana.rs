//! Vamana construction. See the module docs of [`crate::graph`] for the MIPS reduction and the
//! batch-synchronous (deterministic) parallel insertion.

use rayon::prelude::*;

use super::{Adjacency, Neighbors, VisitedSet, NO_NEIGHBOR};
use crate::encode::rng::SplitMix64;
use crate::encode::simd;
use crate::error::{Error, Result};

/// How far past R (in percent) an adjacency list may grow during construction before it is
/// pruned back to R (DiskANN's graph slack factor, 1.3).
const SLACK_PERCENT: usize = 30;

/// Build parameters.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VamanaParams {
    /// Out-degree bound R.
    pub max_degree: u32,
    /// Search list size L used while inserting.
    pub build_list: u32,
    /// α of the second pass (the first uses 1.0).
    pub alpha: f32,
    /// Largest insertion batch (batches double from 1 up to this).
    pub max_batch: u32,
    /// Seed of the insertion order.
    pub seed: u64,
    /// Two insertion passes (α = 1, then `alpha`), as in the Vamana paper; `false`: one pass with
    /// `alpha`. Graphs stored before the option existed were built with two.
    #[serde(default = "two_passes")]
    pub two_pass: bool,
}

fn two_passes() -> bool {
    true
}

impl Default for VamanaParams {
    /// R = 32, L = 64, α = 1.2, batches up to 1,024 points.
    fn default() -> Self {
        VamanaParams { max_degree: 32, build_list: 64, alpha: 1.2, max_batch: 1024, seed: 0x9a4e, two_pass: false }
    }
}

impl VamanaParams {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        if !(2..=256).contains(&self.max_degree) {
            return Err(Error::invalid_param("max_degree", format!("{} is outside 2..=256", self.max_degree)));
        }
        if self.build_list < self.max_degree || self.build_list > 4096 {
            return Err(Error::invalid_param(
                "build_list",
                format!("{} must be in max_degree..=4096", self.build_list),
            ));
        }
        if !(1.0..=4.0).contains(&self.alpha) {
            return Err(Error::invalid_param("alpha", format!("{} is outside 1.0..=4.0", self.alpha)));
        }
        if self.max_batch == 0 {
            return Err(Error::invalid_param("max_batch", "must be positive"));
        }
        Ok(())
    }
}

/// Counters of a build.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BuildStats {
    /// Vector-to-vector distances computed.
    pub distance_computations: u64,
}

/// Build vectors scaled to unit length (the graph is built for angular proximity), then held as
/// int8 with one scale per vector: a quarter of the bytes of f32, so four times as many fit in
/// cache and each distance reads 1 KB instead of 4 KB for 1,024-dim vectors, with an exact integer
/// inner product (`simd::dot_i8`). Measured with `cargo bench --bench graph` (20,000 generated
/// documents, recall@100 against the exhaustive ADC scan): see the graph module docs.
struct Vectors {
    data: Vec<i8>,
    scales: Vec<f32>,
    width: usize,
}

impl Vectors {
    /// Normalises and quantizes; `data` is taken and dropped (build memory is one int8 copy).
    fn new(mut data: Vec<f32>, dim: usize) -> (Self, u32) {
        for v in data.chunks_exact_mut(dim) {
            let norm = simd::dot(v, v).sqrt();
            if norm > 0.0 {
                v.iter_mut().for_each(|x| *x /= norm);
            }
        }
        // The medoid of the normalised vectors: the space the graph is built in.
        let entry = medoid(&data, dim);
        let n = data.len() / dim;
        let mut q = vec![0i8; data.len()];
        let mut scales = vec![0f32; n];
        q.par_chunks_mut(dim)
            .zip(data.par_chunks(dim))
            .zip(scales.par_iter_mut())
            .for_each(|((out, v), scale)| *scale = simd::quantize_i8(v, out));
        (Vectors { data: q, scales, width: dim }, entry)
    }

    fn row(&self, i: u32) -> &[i8] {
        &self.data[i as usize * self.width..(i as usize + 1) * self.width]
    }

    /// Euclidean distance between unit vectors: `√(2 − 2 cos)`.
    fn dist(&self, a: u32, b: u32) -> f32 {
        let dot = simd::dot_i8(self.row(a), self.row(b)) as f32 * self.scales[a as usize] * self.scales[b as usize];
        (2.0 - 2.0 * dot).max(0.0).sqrt()
    }
}

/// A candidate in a sorted search list.
#[derive(Clone, Copy)]
struct Candidate {
    dist: f32,
    id: u32,
    expanded: bool,
}

/// Greedy search for node `p` from `start` with list size `l`; returns every expanded node with
/// its distance to `p` (Vamana's visited set V).
fn greedy_search(p: u32, start: u32, l: usize, adj: &[Vec<u32>], v: &Vectors, count: &mut u64) -> Vec<(u32, f32)> {
    let mut seen = VisitedSet::new();
    let mut list: Vec<Candidate> = Vec::with_capacity(l + 1);
    let mut visited = Vec::new();
    let mut fresh = Vec::new();
    seen.insert(start);
    *count += 1;
    list.push(Candidate { dist: v.dist(p, start), id: start, expanded: false });
    while let Some(i) = list.iter().position(|c| !c.expanded) {
        list[i].expanded = true;
        let node = list[i].id;
        visited.push((node, list[i].dist));
        // The unseen neighbours' vectors are requested together before any is read, so their
        // cache misses overlap instead of coming one distance at a time.
        fresh.clear();
        fresh.extend(adj[node as usize].iter().copied().filter(|&nb| seen.insert(nb)));
        for &nb in &fresh {
            simd::prefetch(v.row(nb));
        }
        for &nb in &fresh {
            *count += 1;
            let dist = v.dist(p, nb);
            if list.len() == l && !closer(dist, nb, list[l - 1].dist, list[l - 1].id) {
                continue;
            }
            let at = list.partition_point(|c| closer(c.dist, c.id, dist, nb));
            list.insert(at, Candidate { dist, id: nb, expanded: false });
            list.truncate(l);
        }
    }
    visited
}

/// Strict order by (distance, id): deterministic ties.
fn closer(d1: f32, id1: u32, d2: f32, id2: u32) -> bool {
    d1 < d2 || (d1 == d2 && id1 < id2)
}

/// RobustPrune(p, V, α, R): take the closest remaining candidate, drop every candidate it
/// "covers" (α·d(p*, p') ≤ d(p, p')), repeat until R neighbours or no candidates remain.
fn robust_prune(
    p: u32,
    mut candidates: Vec<(u32, f32)>,
    alpha: f32,
    r: usize,
    v: &Vectors,
    count: &mut u64,
) -> Vec<u32> {
    candidates.retain(|&(id, _)| id != p);
    candidates.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    candidates.dedup_by_key(|c| c.0);
    let mut alive = vec![true; candidates.len()];
    let mut out = Vec::with_capacity(r);
    for i in 0..candidates.len() {
        if !alive[i] {
            continue;
        }
        let (star, _) = candidates[i];
        out.push(star);
        if out.len() == r {
            break;
        }
        for j in i + 1..candidates.len() {
            if alive[j] {
                *count += 1;
                if alpha * v.dist(star, candidates[j].0) <= candidates[j].1 {
                    alive[j] = false;
                }
            }
        }
    }
    out
}

/// Builds a Vamana graph over `vectors` (row-major, `dim` wide; taken so they can be normalised in
/// place). Deterministic for a given input and `params.seed`, whatever the thread count.
///
/// Memory: the int8 vectors (`dim` bytes per node) plus the adjacency lists (≤ `4·1.3·R` bytes per
/// node plus a `Vec` header).
pub fn build(vectors: Vec<f32>, dim: usize, params: &VamanaParams) -> Result<(Adjacency, BuildStats)> {
    extend(vectors, dim, params, BaseGraph::default())
}

/// An existing graph over the first `lists.len()` of the vectors given to [`extend`]: a merge's
/// largest input, renumbered, with its deleted nodes already bypassed (see
/// `crate::compaction::merge`). A list may be longer than R (then it is pruned) and may name
/// only nodes of the base.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BaseGraph {
    /// Out-neighbours of each base node.
    pub lists: Vec<Vec<u32>>,
    /// The base's entry point, if it is still a node (`None`: the medoid is used).
    pub entry_point: Option<u32>,
}

/// The graph `graph` without its deleted nodes, renumbered: `new_id[node]` is a surviving node's
/// new id (`u32::MAX`: deleted), surviving nodes numbered `0..` in order. A node keeps its live
/// out-neighbours and, for each deleted one, takes that node's live out-neighbours in their stored
/// order (RobustPrune stores them nearest first) while its list has room for `R` (FreshDiskANN's
/// delete consolidation, without its re-prune: measured in `extending_a_consolidated_graph…`,
/// the graph stays as searchable as a fresh build at a fraction of the distance computations).
/// A deleted entry point gives way to the medoid ([`BaseGraph::entry_point`] `None`).
pub fn consolidate(graph: &impl Neighbors, new_id: &[u32]) -> Result<BaseGraph> {
    if new_id.len() != graph.nodes() {
        return Err(Error::InvalidInput(format!("{} new ids for a graph of {} nodes", new_id.len(), graph.nodes())));
    }
    let live = |node: u32| new_id.get(node as usize).copied().filter(|&n| n != u32::MAX);
    let r = graph.max_degree();
    let (mut out, mut second) = (Vec::new(), Vec::new());
    let mut lists = Vec::new();
    for node in 0..graph.nodes() as u32 {
        if live(node).is_none() {
            continue;
        }
        out.clear();
        graph.neighbors_into(node, &mut out)?;
        let mut list: Vec<u32> = out.iter().filter_map(|&nb| live(nb)).collect();
        for &nb in out.iter().filter(|&&nb| live(nb).is_none()) {
            second.clear();
            graph.neighbors_into(nb, &mut second)?;
            for x in second.iter().filter(|&&x| x != node).filter_map(|&x| live(x)) {
                if list.len() >= r {
                    break;
                }
                if !list.contains(&x) {
                    list.push(x);
                }
            }
        }
        lists.push(list);
    }
    Ok(BaseGraph { lists, entry_point: live(graph.entry_point()) })
}

/// Inserts the vectors after the base's nodes into the base graph, FreshDiskANN's way (greedy
/// search from the entry point, RobustPrune, reverse edges), instead of building over all of them
/// again: the cost is that of the new nodes only. Base lists longer than R (a consolidated delete
/// adds its neighbours' neighbours) are pruned first. With an empty base this is [`build`].
pub fn extend(
    vectors: Vec<f32>,
    dim: usize,
    params: &VamanaParams,
    base: BaseGraph,
) -> Result<(Adjacency, BuildStats)> {
    params.validate()?;
    if dim == 0 || vectors.is_empty() || !vectors.len().is_multiple_of(dim) {
        return Err(Error::InvalidInput(format!(
            "graph build needs {dim}-dimensional vectors, got {} values",
            vectors.len()
        )));
    }
    if vectors.iter().any(|x| !x.is_finite()) {
        return Err(Error::InvalidInput("graph build vectors contain NaN or infinity".into()));
    }
    let n = vectors.len() / dim;
    if n > u32::MAX as usize - 1 {
        return Err(Error::InvalidInput(format!("{n} nodes exceed the graph's u32 ids")));
    }
    if dim > 65_536 {
        return Err(Error::InvalidInput(format!("graph build vectors of {dim} dimensions exceed 65,536")));
    }
    let n0 = base.lists.len();
    if n0 > n
        || base.lists.iter().enumerate().any(|(p, l)| l.iter().any(|&x| x as usize >= n0 || x as usize == p))
        || base.entry_point.is_some_and(|e| e as usize >= n0.max(1))
    {
        return Err(Error::InvalidInput(format!(
            "a base graph of {n0} nodes for {n} vectors names a node it does not hold"
        )));
    }
    let (v, medoid) = Vectors::new(vectors, dim);
    let entry = base.entry_point.unwrap_or(medoid);
    let r = params.max_degree as usize;
    let l = params.build_list as usize;
    let mut count = 0u64;
    let slack = r + (r * SLACK_PERCENT).div_ceil(100);
    let mut adj: Vec<Vec<u32>> = base.lists;
    adj.resize(n, Vec::new());
    prune_overfull(&mut adj, r, params.alpha, &v, &mut count);

    let mut order: Vec<u32> = (n0 as u32..n as u32).collect();
    let mut rng = SplitMix64::new(params.seed);
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let passes: &[f32] = if params.two_pass { &[1.0, params.alpha] } else { std::slice::from_ref(&params.alpha) };
    for &alpha in passes {
        let mut start = 0;
        let mut batch = 1usize;
        while start < order.len() {
            let points = &order[start..(start + batch).min(order.len())];
            insert_batch(points, entry, &mut adj, &v, alpha, r, l, slack, &mut count);
            start += batch;
            batch = (batch * 2).min(params.max_batch as usize);
        }
    }
    // Lists still in their slack are pruned to R.
    prune_overfull(&mut adj, r, params.alpha, &v, &mut count);
    let mut slots = vec![NO_NEIGHBOR; n * r];
    for (node, list) in adj.iter().enumerate() {
        debug_assert!(list.len() <= r && !list.contains(&(node as u32)));
        slots[node * r..node * r + list.len()].copy_from_slice(list);
    }
    Ok((Adjacency { max_degree: r as u32, entry_point: entry, slots }, BuildStats { distance_computations: count }))
}

/// Every list longer than `r` pruned to `r` (in parallel, each independently).
fn prune_overfull(adj: &mut [Vec<u32>], r: usize, alpha: f32, v: &Vectors, count: &mut u64) {
    let cleaned: Vec<(usize, Vec<u32>, u64)> = adj
        .par_iter()
        .enumerate()
        .filter(|(_, list)| list.len() > r)
        .map(|(j, list)| {
            let mut c = list.len() as u64;
            let with_dist: Vec<(u32, f32)> = list.iter().map(|&x| (x, v.dist(j as u32, x))).collect();
            (j, robust_prune(j as u32, with_dist, alpha, r, v, &mut c), c)
        })
        .collect();
    for (j, list, c) in cleaned {
        *count += c;
        adj[j] = list;
    }
}

/// One batch-synchronous insertion step: the points are searched and pruned in parallel against
/// the graph as it is, then their lists and the reverse edges are applied in sorted order.
#[allow(clippy::too_many_arguments)]
fn insert_batch(
    points: &[u32],
    entry: u32,
    adj: &mut [Vec<u32>],
    v: &Vectors,
    alpha: f32,
    r: usize,
    l: usize,
    slack: usize,
    count: &mut u64,
) {
    let updates: Vec<(u32, Vec<u32>, u64)> = points
        .par_iter()
        .map(|&p| {
            let mut c = 0;
            let mut visited = greedy_search(p, entry, l, adj, v, &mut c);
            for &nb in &adj[p as usize] {
                c += 1;
                visited.push((nb, v.dist(p, nb)));
            }
            let out = robust_prune(p, visited, alpha, r, v, &mut c);
            (p, out, c)
        })
        .collect();
    let mut reverse: Vec<(u32, u32)> = Vec::new();
    for (p, out, c) in &updates {
        *count += c;
        reverse.extend(out.iter().map(|&j| (j, *p)));
    }
    for (p, out, _) in updates {
        adj[p as usize] = out;
    }
    reverse.sort_unstable();
    reverse.dedup();
    let groups: Vec<(u32, Vec<u32>)> =
        reverse.chunk_by(|a, b| a.0 == b.0).map(|g| (g[0].0, g.iter().map(|e| e.1).collect())).collect();
    let merged: Vec<(u32, Vec<u32>, u64)> = groups
        .par_iter()
        .map(|(j, sources)| {
            let mut list = adj[*j as usize].clone();
            for &s in sources {
                if !list.contains(&s) {
                    list.push(s);
                }
            }
            // Slack (DiskANN's): a list may grow past R before it is pruned back to R, so a node
            // is re-pruned once per ~0.3·R new in-edges, not for every one.
            if list.len() <= slack {
                return (*j, list, 0);
            }
            let mut c = list.len() as u64;
            let with_dist: Vec<(u32, f32)> = list.iter().map(|&x| (x, v.dist(*j, x))).collect();
            let pruned = robust_prune(*j, with_dist, alpha, r, v, &mut c);
            (*j, pruned, c)
        })
        .collect();
    for (j, list, c) in merged {
        *count += c;
        adj[j as usize] = list;
    }
}

/// The vector closest to the mean (ties: lowest index).
fn medoid(vectors: &[f32], dim: usize) -> u32 {
    let n = vectors.len() / dim;
    let mut mean = vec![0f64; dim];
    for v in vectors.chunks_exact(dim) {
        mean.iter_mut().zip(v).for_each(|(m, &x)| *m += x as f64);
    }
    let mean: Vec<f32> = mean.iter().map(|m| (m / n as f64) as f32).collect();
    let mut best = (f32::INFINITY, 0u32);
    for (i, v) in vectors.chunks_exact(dim).enumerate() {
        let d: f32 = v.iter().zip(&mean).map(|(a, b)| (a - b) * (a - b)).sum();
        if d < best.0 {
            best = (d, i as u32);
        }
    }
    best.1
}
