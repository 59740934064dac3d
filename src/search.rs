//! The query pipeline.
//!
//! Per segment ([`search_segment`]): candidates by PQ-ADC inner product with the query FDE (a
//! graph beam search, or a flat scan of the codes when the segment has no graph), then exact
//! MaxSim over the memory-mapped tokens. Across the collection (`search_snapshot`): candidates
//! from every segment of one snapshot (by PQ-ADC, or by centroid interaction where a segment
//! navigates by it: `crate::candidates`), scored by centroid interaction, one exact-rerank budget
//! spent on the best of them, plus the memtables scored exactly, merged; documents deleted or
//! replaced (dead ordinals, ids decided by a newer memtable) are skipped before they are scored.
//! Results are deterministic for a fixed collection state: ties are broken by id.

use std::collections::HashMap;
use std::time::Instant;

pub use crate::candidates::{
    default_navigation, Navigation, CENTROID_NAVIGATION_MAX_TOKENS, CENTROID_NAVIGATION_MIN_DOCS,
};
use crate::candidates::{filtered_candidates, segment_candidates, Scorer};
use crate::encode::codec::{CentroidTable, RefineScratch, RefinedTable};
use crate::encode::fde::FdeEncoder;
use crate::encode::maxsim::MaxSimQuery;
use crate::encode::pq::AdcTable;
use crate::encode::simd::{self, Isa};
use crate::encode::tokens::TokenMatrix;
use crate::error::{Error, Result};
use crate::filter::{BoundFilter, Filter, IndexedField};
use crate::graph::SearchStats;
use crate::limits::{MAX_LIST_SIZE, MAX_RERANK, MAX_TOKENS_PER_QUERY};
use crate::segment::SegmentReader;
use crate::snapshot::Snapshot;
use crate::topk::{Scored, TopK};

/// Largest `k` a search accepts.
pub const MAX_K: usize = 10_000;

/// What a search returns and how hard it works for it.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchParams {
    /// Results wanted.
    pub k: usize,
    /// Stage 1: candidates taken by PQ-ADC over the FDE across the collection, at most
    /// [`MAX_LIST_SIZE`], each segment its size-proportional share (at least `k`). They go to the
    /// cheap stage (centroid interaction) in segments with a token codebook. `None`: the default
    /// ([`SearchParams::stages`]).
    pub candidates: Option<usize>,
    /// Stage 3: documents reranked by exact MaxSim across the collection, at most [`MAX_RERANK`]:
    /// one budget, given to the best candidates by the cheap score wherever they are. `None`: the
    /// default ([`SearchParams::stages`]), or `k` if larger.
    pub rerank: Option<usize>,
    /// Stage 1, second source: for each query token, the documents in the inverted lists of its
    /// `probe` nearest centroids (at most [`MAX_PROBE`]; 0: off) join the candidates. `None`: the
    /// default ([`SearchParams::stages`]), on for short queries only.
    pub probe: Option<usize>,
    /// Graph beam width L, at most [`MAX_LIST_SIZE`]. `None`: the segment's share of the
    /// candidates (the beam is never narrower than that).
    pub list_size: Option<usize>,
    /// How each segment's candidate stage scores documents: PQ-ADC over the FDE codes, or
    /// centroid interaction over the token centroid ids ([`Navigation`]). `None`: per segment,
    /// centroid interaction where the segment is large (at least
    /// [`CENTROID_NAVIGATION_MIN_DOCS`] documents) with a graph and short documents (at most
    /// [`CENTROID_NAVIGATION_MAX_TOKENS`] tokens on average), PQ-ADC elsewhere
    /// ([`Navigation::for_segment`]). Segments without token centroid ids always use PQ-ADC.
    pub navigation: Option<Navigation>,
    /// MUVERA query ball carving (§3.2): query tokens whose inner product with a cluster's first
    /// token is at least τ are summed into one before the query FDE is built. `None`: off.
    pub ball_carving: Option<f32>,
    /// Return each hit's payload.
    pub with_payload: bool,
    /// Search the segments of one query in parallel on the current rayon pool (default false), so
    /// a lone query uses more than one core; the results are the same as sequentially.
    /// `search_batch` already runs queries in parallel and needs no more.
    pub parallel: bool,
    /// Prefetch what each search step reads (`madvise(WILLNEED)` on the PQ codes of the nodes a
    /// beam step scores, on the centroid ids of the candidates the cheap stage scores and on the
    /// tokens of the candidates to rerank), so that a segment not in
    /// the page cache is read with many requests in flight instead of one page fault at a time.
    /// Each page is advised at most once per open segment, so a warm index pays a bit test.
    /// Default true: measured with `quiver bench --cold` (40k docs, 4 segments), a cold query
    /// went from 462-506 ms to 76-79 ms p50, warm p50 within 1-4%.
    pub prefetch: bool,
    /// Only documents that pass this filter are returned ([`crate::filter`]): predicates on the
    /// collection's indexed payload fields and id allow-lists. Per segment, the passing set comes
    /// from the field index; when few pass ([`FILTER_SCAN_PER_BEAM`]) their PQ codes are scanned
    /// directly, else the graph is searched through the others, its beam widened when fewer than
    /// [`FILTER_WIDEN_BELOW`] pass. `None`: no filter (and no cost).
    pub filter: Option<Filter>,
}

/// Under a filter, a segment's passing documents are scored directly by PQ-ADC when they are at
/// most this many times the graph beam, else the graph is searched. Measured (`quiver bench
/// --synthetic 100000 --doc-tokens 8-24 --query-tokens 16 --filter-selectivity ...`, beam 600,
/// p50 warm): the scan took 6.2 / 10.5 / 16.6 ms at 10% / 20% / 30% passing, the unwidened graph
/// 6.5-6.8 ms at any of them (7,629 codes scored, as unfiltered): the crossover lies near 10,000
/// passing documents, 16 beams.
pub const FILTER_SCAN_PER_BEAM: usize = 16;

/// Below this share of passing documents the graph beam is widened ([`SearchParams::filter`]).
/// Measured as above with the beam unwidened: recall@10 0.977 / 0.983 / 0.971 / 0.917 at 50% / 25% /
/// 10% / 5% passing; widened by the passing share's inverse square root, 0.98 at 10% and below.
pub const FILTER_WIDEN_BELOW: f64 = 0.2;

/// Largest [`SearchParams::probe`].
pub const MAX_PROBE: usize = 1024;

/// The stage sizes a search uses (what [`SearchParams::stages`] resolves the defaults to).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Stages {
    /// FDE candidates across the collection.
    pub candidates: usize,
    /// Exact reranks across the collection.
    pub rerank: usize,
    /// Centroids probed per query token.
    pub probe: usize,
    /// Of the probed centroids, the best this many per query token have their documents' tokens
    /// scored exactly in the cheap stage ([`SearchParams::refined_centroids`]); 0: none.
    pub refine: usize,
}

impl SearchParams {
    /// Default FDE candidates with the cheap stage, up to [`SearchParams::LARGE_COLLECTION_DOCS`]
    /// documents.
    pub const DEFAULT_CANDIDATES: usize = 300;
    /// Default FDE candidates with the cheap stage for larger collections.
    pub const DEFAULT_CANDIDATES_LARGE: usize = 600;
    /// Besides the best by the cheap score, each segment's best `share / FDE_GUARD_DIVISOR` FDE
    /// candidates by PQ-ADC are reranked exactly (a guard for vectors whose centroids say little:
    /// on 300 documents of noisy clusters, the Python suite's corpus, the cheap stage alone changed
    /// the top hit of 1 query in 10).
    pub const FDE_GUARD_DIVISOR: usize = 4;
    /// Default exact reranks after the cheap stage: `DEFAULT_EXACT_BUDGET / query tokens` within
    /// `DEFAULT_EXACT..=MAX_DEFAULT_EXACT` (an exact score costs in proportion to the query's
    /// tokens, so short queries afford deeper reranks at the same cost).
    pub const DEFAULT_EXACT: usize = 64;
    /// Largest default exact rerank (queries of four tokens or fewer).
    pub const MAX_DEFAULT_EXACT: usize = 100;
    /// Query tokens × exact reranks spent by default.
    pub const DEFAULT_EXACT_BUDGET: usize = 512;
    /// Above this many documents the default exact depth is [`SearchParams::HUGE_EXACT_FACTOR`]
    /// times deeper: the cheap score's ranking of the candidates is coarser among more documents.
    pub const HUGE_COLLECTION_DOCS: usize = 524_288;
    /// See [`SearchParams::HUGE_COLLECTION_DOCS`]. Measured with `quiver bench --synthetic 1000000
    /// --doc-tokens 8-24 --query-tokens 16` (4 segments navigated by centroid interaction, 600
    /// candidates, recall@10 against exact MaxSim, p50 on 2 busy cores): 0.848 / 0.942 / 0.949 /
    /// 0.954 / 0.955 at 64 / 192 / 256 / 320 / 400 exact reranks (320: 6.5 ms; 1,000 candidates
    /// and 320: 0.962 at 8.0 ms). At 100,000 documents 64 already gave 0.972.
    pub const HUGE_EXACT_FACTOR: usize = 5;
    /// Longest query that probes the inverted lists by default.
    pub const SHORT_QUERY_TOKENS: usize = 8;
    /// Centroid lists a short query probes by default, spread over its tokens: `probe` defaults
    /// to `DEFAULT_PROBED_LISTS / query tokens` within `2..=`[`SearchParams::MAX_DEFAULT_PROBE`].
    pub const DEFAULT_PROBED_LISTS: usize = 32;
    /// Largest default `probe` (a one- to four-token query).
    pub const MAX_DEFAULT_PROBE: usize = 8;
    /// Longest query whose cheap stage scores the tokens of its best centroids exactly.
    pub const REFINE_QUERY_TOKENS: usize = 2;
    /// Centroids refined per query, spread over its tokens (see
    /// [`SearchParams::refined_centroids`]).
    pub const REFINED_CENTROIDS: usize = 4;

    /// Centroids per query token whose documents' tokens the cheap stage scores exactly, for a
    /// query of `query_tokens` tokens that probes `probe` lists per token:
    /// `REFINED_CENTROIDS / query tokens` (at most `probe`) up to
    /// [`SearchParams::REFINE_QUERY_TOKENS`] tokens, none beyond.
    ///
    /// Centroid interaction cannot rank the documents of one inverted list against each other
    /// when the query has a token or two: they all score that centroid's row. Measured with
    /// `quiver bench --synthetic 20000 --doc-tokens 180-240` (recall@10 against exact MaxSim, 100
    /// queries, default stages, one run each): 1-token queries 0.166 without, 0.955 / 0.988 /
    /// 0.996 refining 1 / 2 / 4 centroids (p50 3.0 against 4.7 / 6.7 / 5.3-7.0 ms; exact 236 ms);
    /// 2-token queries 0.998 refining 2 per token (6.8 ms; exact 208 ms); 3-token queries 0.976
    /// without (4.7-5.2 ms), 1.0 refining 4 per token but at 9.3 ms, so they are not refined;
    /// 5-token queries 0.996 without.
    pub fn refined_centroids(query_tokens: usize, probe: usize) -> usize {
        if query_tokens == 0 || query_tokens > Self::REFINE_QUERY_TOKENS {
            return 0;
        }
        (Self::REFINED_CENTROIDS / query_tokens).max(1).min(probe)
    }

    /// The stage sizes for a collection of `documents` and a query of `query_tokens` tokens, where
    /// the collection's segments have token codebooks (the cheap stage exists). Collections
    /// whose segments predate token codebooks rerank the FDE candidates exactly, as before it:
    /// [`SearchParams::default_rerank`] of them.
    ///
    /// The defaults were set from `quiver bench` (recall@10 against exact MaxSim, 4,096-centroid
    /// codebooks, AVX2 machine). Inverted lists: with 300 FDE candidates and 64 exact reranks,
    /// nfcorpus-mini (1-8-token queries) went from 0.933 without them to 0.953 probing 8 lists per
    /// token, scifact-mini cut to 1-token queries from 0.944 to 0.986; with 100 FDE candidates
    /// nfcorpus-mini 0.773 → 0.947. Long queries gain nothing from them and pay for the extra
    /// candidates (generated 5,183 × 180-240 tokens, 19-token queries: 0.999 at 7.7 ms without,
    /// 1.0 at 11.6 ms probing 1 list per token), so they probe none. Exact depth by query length:
    /// 20,000 generated documents, 2-token queries, 0.923 / 0.973 / 0.992 at 64 / 128 / 256
    /// reranks; with 512 / query tokens within 64..=100 (the cheap stage exists so that few are
    /// reranked): that set 0.960, nfcorpus-mini 0.973, scifact-mini cut to 1 / 3 / 5 tokens
    /// 0.988 / 1.0 / 1.0, whole scifact-mini queries 1.0.
    pub fn stages(&self, documents: usize, query_tokens: usize) -> Stages {
        let large = documents > Self::LARGE_COLLECTION_DOCS;
        let candidates = self
            .candidates
            .unwrap_or(if large { Self::DEFAULT_CANDIDATES_LARGE } else { Self::DEFAULT_CANDIDATES })
            .max(self.k);
        let q = query_tokens.max(1);
        let huge = if documents > Self::HUGE_COLLECTION_DOCS { Self::HUGE_EXACT_FACTOR } else { 1 };
        let rerank = self
            .rerank
            .unwrap_or((Self::DEFAULT_EXACT_BUDGET / q).clamp(Self::DEFAULT_EXACT, Self::MAX_DEFAULT_EXACT) * huge)
            .max(self.k);
        let probe = self.probe.unwrap_or(if q <= Self::SHORT_QUERY_TOKENS {
            (Self::DEFAULT_PROBED_LISTS / q).clamp(2, Self::MAX_DEFAULT_PROBE)
        } else {
            0
        });
        Stages { candidates, rerank, probe, refine: Self::refined_centroids(q, probe) }
    }

    /// Default rerank depth up to [`SearchParams::LARGE_COLLECTION_DOCS`] documents.
    pub const DEFAULT_RERANK: usize = 200;
    /// Default rerank depth for larger collections.
    pub const DEFAULT_RERANK_LARGE: usize = 400;
    /// Where the larger default starts.
    pub const LARGE_COLLECTION_DOCS: usize = 32_768;
    /// Default beam width as a multiple of a segment's rerank depth.
    pub const DEFAULT_LIST_FACTOR: usize = 2;

    /// The rerank depth used when [`SearchParams::rerank`] is `None`, for a collection of
    /// `documents`. Chosen from `quiver bench` measurements, recall@10 against exact MaxSim at
    /// rerank 100 / 200 / 400: scifact-mini (500 real SciFact passages) 0.970 / 0.998 / –;
    /// generated, 8–24 tokens per document, 16-token queries: 10k docs 0.922 / 0.965 / 0.982,
    /// 100k docs 0.842 / 0.929 / 0.968, 1M docs – / 0.696 / 0.832 (0.916 at 800). The depth needed
    /// grows with the collection; beyond ~300k documents the default does not reach 0.95 and
    /// callers who need it should set a deeper `rerank` (see the search issue's note).
    pub fn default_rerank(documents: usize) -> usize {
        if documents > Self::LARGE_COLLECTION_DOCS {
            Self::DEFAULT_RERANK_LARGE
        } else {
            Self::DEFAULT_RERANK
        }
    }

    /// The rerank depth a search of a collection of `documents` uses.
    pub fn effective_rerank(&self, documents: usize) -> usize {
        self.rerank.unwrap_or_else(|| Self::default_rerank(documents)).max(self.k)
    }

    /// The defaults with `k` results.
    pub fn new(k: usize) -> Self {
        SearchParams {
            k,
            candidates: None,
            rerank: None,
            probe: None,
            list_size: None,
            navigation: None,
            ball_carving: None,
            with_payload: false,
            parallel: false,
            prefetch: true,
            filter: None,
        }
    }

    fn validate(&self) -> Result<()> {
        if self.k == 0 || self.k > MAX_K {
            return Err(Error::invalid_param("k", format!("{} is outside 1..={MAX_K}", self.k)));
        }
        if let Some(r) = self.rerank {
            if r == 0 || r > MAX_RERANK {
                return Err(Error::invalid_param("rerank", format!("{r} is outside 1..={MAX_RERANK}")));
            }
        }
        if let Some(c) = self.candidates {
            if c == 0 || c > MAX_LIST_SIZE {
                return Err(Error::invalid_param("candidates", format!("{c} is outside 1..={MAX_LIST_SIZE}")));
            }
        }
        if let Some(p) = self.probe {
            if p > MAX_PROBE {
                return Err(Error::invalid_param("probe", format!("{p} is outside 0..={MAX_PROBE}")));
            }
        }
        if let Some(l) = self.list_size {
            if l == 0 || l > MAX_LIST_SIZE {
                return Err(Error::invalid_param("list_size", format!("{l} is outside 1..={MAX_LIST_SIZE}")));
            }
        }
        if let Some(t) = self.ball_carving {
            if !(-1.0..=1.0).contains(&t) || t.is_nan() {
                return Err(Error::invalid_param("ball_carving", format!("threshold {t} is outside [-1, 1]")));
            }
        }
        Ok(())
    }
}

/// One result.
#[derive(Clone, Debug, PartialEq)]
pub struct Hit {
    /// External id.
    pub id: u64,
    /// Exact MaxSim score.
    pub score: f32,
    /// Payload, when requested (empty bytes: the document has none).
    pub payload: Option<Vec<u8>>,
}

/// Where one search spent its time (microseconds) and work.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct SearchProfile {
    /// Query FDE (including ball carving).
    pub fde_us: f64,
    /// ADC tables.
    pub adc_table_us: f64,
    /// Candidate generation (graph or scan) over all segments.
    pub candidates_us: f64,
    /// Exact MaxSim rerank of segment candidates.
    pub rerank_us: f64,
    /// Exact MaxSim over memtable documents.
    pub memtable_us: f64,
    /// The cheap stage: inverted-list probes and centroid interaction.
    pub cheap_us: f64,
    /// Candidates from the FDE (PQ-ADC) stage.
    pub fde_candidates: u64,
    /// Candidates the inverted lists added beyond the FDE's.
    pub postings_candidates: u64,
    /// Documents the cheap stage scored by centroid interaction (in a segment navigated by
    /// centroid interaction, only those the inverted lists added: its candidates arrive scored).
    pub cheap_scored: u64,
    /// Candidate-stage scores computed (PQ-ADC, or centroid interaction in segments navigated by
    /// it: [`SearchParams::navigation`]).
    pub distance_computations: u64,
    /// Documents scored by exact MaxSim.
    pub reranked: u64,
    /// Evaluating the filter over the segments (field index or payloads).
    pub filter_us: f64,
    /// Segment documents that passed the filter (live or not).
    pub filter_passing: u64,
    /// Segments searched by a scan of the passing documents' codes instead of the graph.
    pub filter_flat_segments: u64,
}

/// Greedy ball carving: each token joins the first cluster whose seed token has inner product
/// ≥ `tau` with it, else seeds a new cluster; returns the cluster sums (row-major).
pub fn carve_query(query: &TokenMatrix<'_>, tau: f32) -> Vec<f32> {
    let dim = query.dim();
    let mut seeds: Vec<&[f32]> = Vec::new();
    let mut sums: Vec<Vec<f32>> = Vec::new();
    for row in query.iter_rows() {
        let cluster = seeds.iter().position(|s| s.iter().zip(row).map(|(a, b)| a * b).sum::<f32>() >= tau);
        match cluster {
            Some(c) => sums[c].iter_mut().zip(row).for_each(|(s, v)| *s += v),
            None => {
                seeds.push(row);
                sums.push(row.to_vec());
            }
        }
    }
    debug_assert!(sums.iter().all(|s| s.len() == dim));
    sums.concat()
}

enum Source {
    Memory(std::sync::Arc<crate::memtable::MemDoc>),
    Segment(usize, u32),
}

/// Scored documents of a search: (exact MaxSim, id, where the document is).
type Ranked = Vec<(f32, u64, Source)>;

/// What one segment's candidate and cheap stages produced.
#[derive(Default)]
struct SegmentPool {
    /// Ordinals with their cheap scores (centroid interaction, or PQ-ADC for a segment without a
    /// token codebook).
    candidates: Vec<Scored>,
    /// The segment's size-proportional share of the exact-rerank budget.
    share: usize,
    /// The segment's best FDE candidates by PQ-ADC, reranked exactly whatever their cheap score
    /// (a quarter of its share; none for segments without a token codebook, whose candidates are
    /// ranked by ADC already, nor for segments navigated by centroid interaction, whose
    /// candidates have no ADC score).
    fde_guard: Vec<u32>,
    us: f64,
    cheap_us: f64,
    filter_us: f64,
    filter_passing: u64,
    filter_flat: bool,
    distance_computations: u64,
    fde_candidates: u64,
    postings_candidates: u64,
    cheap_scored: u64,
}

/// `f(0..n)` in order, on the rayon pool when `parallel` (and there is more than one).
fn map_segments<T: Send>(n: usize, parallel: bool, f: impl Fn(usize) -> Result<T> + Sync + Send) -> Result<Vec<T>> {
    if parallel && n > 1 {
        use rayon::prelude::*;
        (0..n).into_par_iter().map(f).collect()
    } else {
        (0..n).map(f).collect()
    }
}

/// Searches one snapshot. `dim` is the collection's token dimension.
/// The query checked against the parameters and limits, prepared for exact MaxSim.
fn prepare_query<'q>(dim: usize, query: &'q [f32], params: &SearchParams) -> Result<(TokenMatrix<'q>, MaxSimQuery)> {
    params.validate()?;
    let tokens = TokenMatrix::new(query, dim).map_err(|e| Error::InvalidInput(format!("query: {e}")))?;
    if tokens.rows() > MAX_TOKENS_PER_QUERY {
        return Err(Error::InvalidInput(format!(
            "query of {} tokens exceeds the limit of {MAX_TOKENS_PER_QUERY}",
            tokens.rows()
        )));
    }
    let maxsim = MaxSimQuery::new(&tokens);
    Ok((tokens, maxsim))
}

/// Exact MaxSim of `query` against the documents `ids` only (an allow-list; repeats count once,
/// ids `lookup` does not find are skipped), the best `params.k` with ties broken by id.
/// `params.rerank` and `list_size` do not apply: every listed document is scored exactly.
pub(crate) fn search_ids(
    dim: usize,
    fields: &[IndexedField],
    query: &[f32],
    params: &SearchParams,
    ids: &[u64],
    lookup: impl Fn(u64) -> Result<Option<crate::snapshot::Found>>,
) -> Result<Vec<Hit>> {
    let (_, maxsim) = prepare_query(dim, query, params)?;
    let filter = params.filter.as_ref().map(|f| f.bind(fields)).transpose()?;
    let mut unique: Vec<u64> = ids.to_vec();
    unique.sort_unstable();
    unique.dedup();
    let mut scored: Vec<(f32, u64, crate::snapshot::Found)> = Vec::new();
    for id in unique {
        let Some(f) = lookup(id)? else { continue };
        if filter.as_ref().is_some_and(|filter| !filter.matches_payload(id, f.payload_bytes())) {
            continue;
        }
        let score = match &f {
            crate::snapshot::Found::Memory(doc) => maxsim.score(doc.tokens.as_doc_tokens())?,
            crate::snapshot::Found::Segment(h, ord) => maxsim.score(h.reader.tokens(*ord as usize))?,
        };
        scored.push((score, id, f));
    }
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.truncate(params.k);
    Ok(scored
        .into_iter()
        .map(|(score, id, f)| Hit { id, score, payload: params.with_payload.then(|| f.payload()) })
        .collect())
}

/// Many queries in parallel (rayon), each as [`search_snapshot`], on one snapshot.
pub(crate) fn search_batch(
    snapshot: &Snapshot,
    encoder: &FdeEncoder,
    dim: usize,
    queries: &[&[f32]],
    params: &SearchParams,
) -> Result<Vec<Vec<Hit>>> {
    use rayon::prelude::*;
    queries.par_iter().map(|q| search_snapshot(snapshot, encoder, dim, q, params, None)).collect()
}

pub(crate) fn search_snapshot(
    snapshot: &Snapshot,
    encoder: &FdeEncoder,
    dim: usize,
    query: &[f32],
    params: &SearchParams,
    profile: Option<&mut SearchProfile>,
) -> Result<Vec<Hit>> {
    let fields: &[IndexedField] = &snapshot.fields;
    let (tokens, maxsim) = prepare_query(dim, query, params)?;
    let filter: Option<BoundFilter> = params.filter.as_ref().map(|f| f.bind(fields)).transpose()?;
    let passes =
        |doc: &crate::memtable::MemDoc| filter.as_ref().is_none_or(|f| f.matches_payload(doc.id, &doc.payload));
    let version = &snapshot.version;
    let active = &snapshot.active;
    let frozen = version.frozen.as_deref();
    let mut found: Vec<(f32, u64, Source)> = Vec::new();
    let mut prof = SearchProfile::default();

    // Memtables: exact MaxSim over every visible document.
    let t = Instant::now();
    for doc in active.docs.iter().filter(|d| passes(d)) {
        found.push((maxsim.score(doc.tokens.as_doc_tokens())?, doc.id, Source::Memory(doc.clone())));
    }
    if let Some(frozen) = frozen {
        for doc in frozen.docs.iter().filter(|d| !active.shadows(d.id) && passes(d)) {
            found.push((maxsim.score(doc.tokens.as_doc_tokens())?, doc.id, Source::Memory(doc.clone())));
        }
    }
    prof.memtable_us = t.elapsed().as_secs_f64() * 1e6;
    prof.reranked += found.len() as u64;

    if !version.segments.is_empty() {
        let t = Instant::now();
        let fde = match params.ball_carving {
            Some(tau) => {
                let carved = carve_query(&tokens, tau);
                encoder.encode_query(&TokenMatrix::new(&carved, dim)?)?
            }
            None => encoder.encode_query(&tokens)?,
        };
        prof.fde_us = t.elapsed().as_secs_f64() * 1e6;
        let total_docs: usize = version.segments.iter().map(|s| s.live.live_count()).sum::<usize>().max(1);
        let mut stages = params.stages(total_docs, tokens.rows());
        if version.segments.iter().all(|s| s.handle.reader.token_codebook().is_none()) {
            // Segments from before token codebooks: the FDE candidates are reranked exactly.
            let rerank = params.effective_rerank(total_docs);
            stages = Stages {
                candidates: params.candidates.unwrap_or(rerank * SearchParams::DEFAULT_LIST_FACTOR).max(rerank),
                rerank,
                probe: 0,
                refine: 0,
            };
        }
        // Each segment's candidate scorer; one ADC table per distinct codebook among the segments
        // that navigate by PQ-ADC, and one centroid-interaction table per distinct token codebook,
        // shared by the segments that use them.
        let navigation: Vec<Navigation> =
            version.segments.iter().map(|s| Navigation::for_segment(&s.handle.reader, params.navigation)).collect();
        let t = Instant::now();
        let mut tables: HashMap<u32, AdcTable> = HashMap::new();
        let mut ci_tables: HashMap<u32, CentroidTable> = HashMap::new();
        for (seg, nav) in version.segments.iter().zip(&navigation).filter(|(s, _)| s.live.live_count() > 0) {
            if *nav == Navigation::Pq {
                if let std::collections::hash_map::Entry::Vacant(slot) = tables.entry(seg.handle.codebook_key) {
                    slot.insert(seg.handle.codebook.get_or_load(&seg.handle.reader)?.adc_table(&fde)?);
                }
            }
            if let (Some(key), Some(book)) =
                (seg.handle.reader.token_codebook_key(), seg.handle.reader.token_codebook())
            {
                ci_tables.entry(key).or_insert_with(|| book.interaction_table(tokens.as_slice()));
            }
        }
        // Short queries: one refined table per token codebook too (`RefinedTable`), the tokens of
        // each query token's best `stages.refine` centroids scored exactly in the cheap stage.
        let refined_tables: HashMap<u32, RefinedTable> =
            if stages.refine > 0 && stages.probe > 0 && tokens.rows() <= simd::DOC_MAJOR_MAX_QUERY {
                ci_tables.iter().map(|(&key, ci)| (key, ci.refined(&ci.top_centroids(stages.refine)))).collect()
            } else {
                HashMap::new()
            };
        prof.adc_table_us += t.elapsed().as_secs_f64() * 1e6;
        // 1. Candidates per segment (independent, so a lone query may search them in parallel:
        //    `params.parallel`): the segment's size-proportional share of the candidate budget by
        //    its navigation score (a beam of width `list_size`, or a flat scan), plus, for short
        //    queries, the documents in the inverted lists of each query token's nearest centroids;
        //    all scored by centroid interaction where the segment has a token codebook.
        let candidates_of = |index: usize| -> Result<SegmentPool> {
            let seg = &version.segments[index];
            let live = seg.live.live_count();
            if live == 0 {
                return Ok(SegmentPool::default());
            }
            let reader = &seg.handle.reader;
            let ci = reader.token_codebook_key().and_then(|key| ci_tables.get(&key));
            // Every live segment has its table: an ADC table was built for each navigating by
            // PQ-ADC, and `for_segment` chooses centroids only where a token codebook exists.
            let scorer = match (navigation[index], ci, tables.get(&seg.handle.codebook_key)) {
                (Navigation::Centroids, Some(ci), _) => Scorer::Centroids(ci),
                (_, _, Some(table)) => Scorer::pq(table, reader)?,
                _ => return Ok(SegmentPool::default()),
            };
            let t = Instant::now();
            let passing = filter.as_ref().map(|f| reader.filter(f)).transpose()?;
            let filter_us = t.elapsed().as_secs_f64() * 1e6;
            if passing.as_ref().is_some_and(|p| p.is_empty()) {
                return Ok(SegmentPool { filter_us, ..Default::default() });
            }
            // Checked arithmetic in u128 (budgets ≤ MAX_RERANK, live ≤ total_docs, so the share
            // fits a usize), and no segment is asked for more than it holds.
            let share_of = |budget: usize| -> usize {
                let share = (budget as u128 * live as u128).div_ceil(total_docs as u128);
                usize::try_from(share).unwrap_or(budget).max(params.k).min(live.max(params.k))
            };
            let depth = share_of(stages.candidates);
            let list_size = params.list_size.unwrap_or(depth).max(depth).min(reader.doc_count().max(1));
            let ids = reader.doc_ids();
            let skip = |ord: u32| {
                let id = ids[ord as usize];
                !seg.live.is_live(ord)
                    || active.shadows(id)
                    || frozen.is_some_and(|f| f.shadows(id))
                    || passing.as_ref().is_some_and(|p| !p.contains(ord))
            };
            let search = SegmentSearch { k: params.k, candidates: depth, list_size, prefetch: params.prefetch };
            let (mut fde_candidates, stats, us, flat) =
                filtered_candidates(reader, scorer, search, passing.as_ref(), skip)?;
            fde_candidates.truncate(depth);
            let mut pool = SegmentPool {
                share: share_of(stages.rerank),
                fde_candidates: fde_candidates.len() as u64,
                us,
                distance_computations: stats.distance_computations,
                filter_us,
                filter_passing: passing.as_ref().map_or(0, |p| p.len()),
                filter_flat: flat,
                ..Default::default()
            };
            let Some(ci) = ci else {
                pool.candidates = fde_candidates;
                return Ok(pool);
            };
            let t = Instant::now();
            let navigated_by_centroids = matches!(scorer, Scorer::Centroids(_));
            if !navigated_by_centroids {
                // The FDE's own best are reranked whatever their cheap score.
                pool.fde_guard = fde_candidates
                    .iter()
                    .take(pool.share.div_ceil(SearchParams::FDE_GUARD_DIVISOR))
                    .map(|c| c.doc)
                    .collect();
            }
            // The inverted lists' documents beyond the candidates.
            let mut added: Vec<u32> = Vec::new();
            let mut probed = Vec::new();
            if stages.probe > 0 && reader.has_postings() {
                let n = reader.doc_count() as u32;
                probed = ci.top_centroids(stages.probe);
                for &c in &probed {
                    added.extend(reader.postings(c).iter().copied().filter(|&o| o < n && !skip(o)));
                }
                added.sort_unstable();
                added.dedup();
                let mut known: Vec<u32> = fde_candidates.iter().map(|c| c.doc).collect();
                known.sort_unstable();
                added.retain(|o| known.binary_search(o).is_err());
                pool.postings_candidates = added.len() as u64;
            }
            // What is still to score by centroid interaction: every candidate and the lists'
            // documents, or, where the candidates were found by that score, the lists' only.
            let (mut scored, ordinals) = if navigated_by_centroids {
                (fde_candidates, added)
            } else {
                let mut ordinals: Vec<u32> = fde_candidates.iter().map(|c| c.doc).collect();
                ordinals.extend(added);
                (Vec::new(), ordinals)
            };
            let refined =
                reader.token_codebook_key().and_then(|key| refined_tables.get(&key)).filter(|_| !probed.is_empty());
            let mut ordinals = ordinals;
            if refined.is_some() && !scored.is_empty() {
                // The beam's candidates carry plain centroid-interaction scores: scored again with
                // the refinement, so all candidates compare on one score.
                let mut all: Vec<u32> = scored.drain(..).map(|c| c.doc).collect();
                all.extend(ordinals);
                ordinals = all;
            }
            if params.prefetch {
                reader.prefetch_token_codes(&ordinals);
            }
            scored.reserve(ordinals.len());
            pool.cheap_scored = ordinals.len() as u64;
            if let Some(refined) = refined {
                // Short queries: the tokens in the best centroids are scored exactly
                // (`RefinedTable::score`), or the documents of one inverted list tie.
                let (dim, query) = (tokens.dim(), tokens.as_slice());
                let mut scratch = RefineScratch::default();
                let mut gathered: Vec<f32> = Vec::new();
                for ord in ordinals {
                    let ids = reader.token_centroid_ids(ord as usize).unwrap_or(&[]);
                    let doc = reader.tokens(ord as usize);
                    let score = refined
                        .score(ids, &mut scratch, |positions, out| {
                            gathered.clear();
                            gathered.resize(positions.len() * dim, 0.0);
                            for (&j, row) in positions.iter().zip(gathered.chunks_exact_mut(dim)) {
                                doc.token_into(j, dim, row)?;
                            }
                            let values = simd::DocValues::F32(&gathered);
                            simd::max_dots_doc_major(Isa::detect(), query, dim, values, out);
                            Ok(())
                        })
                        .map_err(|e| reader.damaged(e))?;
                    scored.push(Scored { doc: ord, score });
                }
            } else {
                for ord in ordinals {
                    let ids = reader.token_centroid_ids(ord as usize).unwrap_or(&[]);
                    scored.push(Scored { doc: ord, score: ci.score(ids).map_err(|e| reader.damaged(e))? });
                }
            }
            pool.candidates = scored;
            pool.cheap_us = t.elapsed().as_secs_f64() * 1e6;
            Ok(pool)
        };
        let pools: Vec<SegmentPool> = map_segments(version.segments.len(), params.parallel, candidates_of)?;
        // 2. One exact-rerank budget across segments, by the cheap score: the sum of the shares goes
        //    to the best candidates wherever they are, so a segment holding more of the answer gets
        //    more of it.
        let budget: usize = pools.iter().map(|p| p.share).sum();
        let mut pooled: Vec<(f32, usize, u32)> =
            pools.iter().enumerate().flat_map(|(i, p)| p.candidates.iter().map(move |c| (c.score, i, c.doc))).collect();
        pooled.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        pooled.truncate(budget);
        let mut chosen: Vec<Vec<u32>> = vec![Vec::new(); version.segments.len()];
        for (_, i, ord) in pooled {
            chosen[i].push(ord);
        }
        // The FDE's own best join the exact stage too: where token centroids carry little
        // information (noisy, barely clustered vectors) the cheap score is noisy, the FDE's less so.
        for (c, p) in chosen.iter_mut().zip(&pools) {
            for &ord in &p.fde_guard {
                if !c.contains(&ord) {
                    c.push(ord);
                }
            }
        }
        for p in &pools {
            prof.candidates_us += p.us;
            prof.cheap_us += p.cheap_us;
            prof.distance_computations += p.distance_computations;
            prof.fde_candidates += p.fde_candidates;
            prof.postings_candidates += p.postings_candidates;
            prof.cheap_scored += p.cheap_scored;
            prof.filter_us += p.filter_us;
            prof.filter_passing += p.filter_passing;
            prof.filter_flat_segments += p.filter_flat as u64;
        }
        // 3. Exact MaxSim over each segment's chosen candidates.
        let rerank_of = |index: usize| -> Result<(Ranked, f64)> {
            let t = Instant::now();
            let reader = &version.segments[index].handle.reader;
            let hits = rerank_ordinals(reader, &maxsim, &chosen[index], params.k, params.prefetch)?;
            let ids = reader.doc_ids();
            let hits =
                hits.into_iter().map(|h| (h.score, ids[h.doc as usize], Source::Segment(index, h.doc))).collect();
            Ok((hits, t.elapsed().as_secs_f64() * 1e6))
        };
        let reranked: Vec<(Ranked, f64)> = map_segments(version.segments.len(), params.parallel, rerank_of)?;
        prof.reranked += chosen.iter().map(|c| c.len() as u64).sum::<u64>();
        for (hits, us) in reranked {
            prof.rerank_us += us;
            found.extend(hits);
        }
    }
    found.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    found.truncate(params.k);
    if let Some(p) = profile {
        *p = prof;
    }
    Ok(found
        .into_iter()
        .map(|(score, id, source)| Hit {
            id,
            score,
            payload: params.with_payload.then(|| match source {
                Source::Memory(doc) => doc.payload.clone(),
                Source::Segment(index, ord) => version.segments[index].handle.reader.payload(ord as usize).to_vec(),
            }),
        })
        .collect())
}

/// Knobs of a segment search.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentSearch {
    /// Results wanted.
    pub k: usize,
    /// Candidates reranked by exact MaxSim (at least `k`).
    pub candidates: usize,
    /// Graph search list size L (the beam is at least `candidates` wide).
    pub list_size: usize,
    /// Ask the kernel to start reading what each step is about to touch — the PQ codes of a
    /// node's neighbours, the tokens of the candidates to rerank — so a cold segment's reads
    /// overlap ([`SearchParams::prefetch`]).
    pub prefetch: bool,
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
    search_segment_timed(segment, table, query, params, skip).map(|(hits, stats, _)| (hits, stats))
}

/// Candidate-stage µs, rerank µs, documents reranked.
type SegmentTiming = (f64, f64, u64);

/// [`search_segment`], also returning its [`SegmentTiming`].
fn search_segment_timed(
    segment: &SegmentReader,
    table: &AdcTable,
    query: &MaxSimQuery,
    params: SegmentSearch,
    skip: impl Fn(u32) -> bool,
) -> Result<(Vec<Scored>, SearchStats, SegmentTiming)> {
    if query.dim() != segment.dim() {
        return Err(Error::InvalidInput(format!(
            "wrong dimension: query tokens are {}-dimensional, the segment stores {}",
            query.dim(),
            segment.dim()
        )));
    }
    let (mut found, stats, candidate_us) = segment_candidates(segment, Scorer::pq(table, segment)?, params, skip)?;
    found.truncate(params.candidates.max(params.k));
    let started = Instant::now();
    let reranked = found.len() as u64;
    let ordinals: Vec<u32> = found.iter().map(|c| c.doc).collect();
    let hits = rerank_ordinals(segment, query, &ordinals, params.k, params.prefetch)?;
    Ok((hits, stats, (candidate_us, started.elapsed().as_secs_f64() * 1e6, reranked)))
}

/// Documents past the `k` wanted that the staged rerank's bf16 pass hands to the exact one. bf16
/// moves a MaxSim by about 2e-4 of itself (mean; `cargo bench --bench maxsim`), orders of magnitude
/// less than the score gap across eight ranks, so the exact top `k` of the reranked documents is
/// among the bf16 top `k + 8`.
pub const BF16_PRERANK_MARGIN: usize = 8;

/// Exact MaxSim over the stored tokens of `ordinals`: the best `k`, best first, with exact scores.
///
/// Staged where the CPU offers a cheaper approximation of the stored tokens' MaxSim (f16
/// documents and AVX-512 BF16, see [`MaxSimQuery::approximate`]) and there are more than
/// `k + BF16_PRERANK_MARGIN` documents: all are scored by the approximation at about twice the
/// speed, and only its best `k + BF16_PRERANK_MARGIN` exactly.
fn rerank_ordinals(
    segment: &SegmentReader,
    query: &MaxSimQuery,
    ordinals: &[u32],
    k: usize,
    prefetch: bool,
) -> Result<Vec<Scored>> {
    if prefetch {
        segment.prefetch_tokens(ordinals.iter().copied());
    }
    let kept = k.saturating_add(BF16_PRERANK_MARGIN);
    let mut shortlist = Vec::new();
    if ordinals.len() > kept && query.approximates(segment.storage()) {
        let mut pre = TopK::new(kept);
        for &doc in ordinals {
            // `approximates` said every document of this storage has an approximation; a document
            // without one (none exists) would be kept for the exact stage, never dropped.
            let score = query.approximate(segment.tokens(doc as usize))?.unwrap_or(f32::INFINITY);
            pre.push(Scored { doc, score });
        }
        shortlist = pre.into_sorted().into_iter().map(|s| s.doc).collect();
    }
    let exact = if shortlist.is_empty() { ordinals } else { &shortlist };
    let mut top = TopK::new(k);
    for &doc in exact {
        top.push(Scored { doc, score: query.score(segment.tokens(doc as usize))? });
    }
    Ok(top.into_sorted())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_collections_rerank_deeper_by_default_and_explicit_depths_win() {
        let p = SearchParams::new(10);
        assert_eq!(p.stages(100_000, 16).rerank, 64);
        assert_eq!(p.stages(SearchParams::HUGE_COLLECTION_DOCS, 16).rerank, 64, "the boundary is not huge");
        assert_eq!(p.stages(1_000_000, 16).rerank, 64 * SearchParams::HUGE_EXACT_FACTOR);
        assert_eq!(p.stages(1_000_000, 2).rerank, 100 * SearchParams::HUGE_EXACT_FACTOR);
        let explicit = SearchParams { rerank: Some(40), ..SearchParams::new(10) };
        assert_eq!(explicit.stages(1_000_000, 16).rerank, 40);
        assert!(p.stages(usize::MAX, 1).rerank <= MAX_RERANK, "within the validated bound");
    }
}
