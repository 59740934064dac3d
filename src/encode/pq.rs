//! Product quantization of FDEs, with asymmetric distance computation (ADC) for inner products.
//!
//! An FDE of `dim` values is cut into `m` subspaces of `dim / m` values; each subspace has 256
//! centroids trained by k-means (Lloyd's algorithm) and a vector is stored as `m` bytes, the index
//! of the nearest centroid in each subspace (PQ-256-8 by default: 8 values per byte, 1,280 bytes
//! for a 10,240-dimensional FDE; smaller codes are measured at [`PqParams::for_dim`]).
//!
//! Search never decodes: for a query FDE `q`, [`PqCodebook::adc_table`] computes the `m × 256`
//! inner products `⟨q_s, c_{s,j}⟩` once, and the score of a code is `m` table lookups — exactly
//! `⟨q, decode(code)⟩` up to float rounding. Quantization minimises squared L2 error, which bounds
//! the inner-product error by Cauchy–Schwarz: `|⟨q, x⟩ - ⟨q, x̂⟩| ≤ ‖q‖·‖x - x̂‖`.
//!
//! Training is deterministic for a given sample and seed (subspaces are independent tasks, so the
//! thread count does not matter). Why not linfa-clustering: measured side by side in
//! `benches/pq.rs` (same data, same initial centroids, same iterations); see the note there.

use std::sync::OnceLock;

use rayon::prelude::*;

use crate::encode::rng::SplitMix64;
use crate::encode::simd::{self, PQ_CENTROIDS};
use crate::error::{Error, Result};
use crate::topk::{Scored, TopK};

/// Training parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PqParams {
    /// Subspaces `m`: the code length in bytes. Must divide the FDE dimension.
    pub subspaces: u32,
    /// Lloyd iterations (fewer if the assignment stops changing).
    pub iterations: u32,
    /// Most training vectors used (a deterministic sample of the input beyond that).
    pub max_training_vectors: u32,
    /// Seed of the sampling and initial centroids.
    pub seed: u64,
}

/// Most training vectors accepted (the cap).
pub const MAX_TRAINING_VECTORS: u32 = 100_000;

impl PqParams {
    /// PQ-256-8 for an FDE of `fde_dim` values (8 values per subspace: 1,280 bytes of code per
    /// 10,240-dim FDE), 10 iterations, at most 16,384 training vectors (64 per centroid, above
    /// the ~39 k-means needs). Training cost is `dim × iterations × sample × 256` multiply-adds
    /// whatever the code length; these defaults were chosen by measurement (see the segment
    /// issue's note): 16 iterations on 32k vectors cost 5× as much.
    ///
    /// Smaller codes were measured with `quiver bench --pq-subspaces` (PQ-ADC candidates, centroid
    /// interaction, 64 exact reranks; recall@10 against exact MaxSim, generated documents of 8-24
    /// tokens, 16-token queries) and are not the default, because they lose recall as the
    /// collection grows faster than more candidates can buy it back:
    /// - 20,000 documents: 64-value subspaces (160 B) 0.934 / 0.963 at 300 / 600 candidates,
    ///   40-value (256 B) 0.947 / 0.970, 8-value (1,280 B) 0.964 / 0.978;
    /// - 100,000 documents, same run: 1,280 B 0.967 at 600 (4.7 ms p50); 160 B 0.921 / 0.946 /
    ///   0.960 / 0.963 at 600 / 1,000 / 1,500 / 2,000 (2.9 / 4.7 / 5.9 / 8.3 ms);
    /// - 1,000,000 documents in 4 segments, 160 B: 0.704 / 0.750 / 0.784 / 0.820 at 1,000 / 1,500 /
    ///   2,000 / 3,000 (7.8 / 9.3 / 10.8 / 13.7 ms), 199 B of RAM per document.
    ///
    /// Navigating with a subset of the 1,280 B codes' repetitions and re-scoring with all of them
    /// was worse still (100,000 documents: 0.81 with five of the 20 repetitions, 320 B). Small
    /// codes need DiskANN's precise vectors read inside the beam, which is not built. On generated
    /// SciFact-shaped data (5,183 × 180-240 tokens) both sizes reach 0.999, and 160 B is faster
    /// there (3.4 against 4.8 ms p50, same run); scifact-mini 1.0 / 1.0, nfcorpus-mini 0.983 /
    /// 0.987.
    pub fn for_dim(fde_dim: usize) -> Self {
        PqParams { subspaces: (fde_dim / 8).max(1) as u32, iterations: 10, max_training_vectors: 16_384, seed: 0x5eed }
    }

    /// Checks the parameters against an FDE dimension.
    pub fn validate(&self, fde_dim: usize) -> Result<()> {
        if self.subspaces == 0 || !fde_dim.is_multiple_of(self.subspaces as usize) {
            return Err(Error::invalid_param(
                "pq_subspaces",
                format!("{} does not divide the FDE dimension {fde_dim}", self.subspaces),
            ));
        }
        if self.iterations == 0 || self.iterations > 1000 {
            return Err(Error::invalid_param("pq_iterations", format!("{} is outside 1..=1000", self.iterations)));
        }
        if self.max_training_vectors == 0 || self.max_training_vectors > MAX_TRAINING_VECTORS {
            return Err(Error::invalid_param(
                "pq_max_training_vectors",
                format!("{} is outside 1..={MAX_TRAINING_VECTORS}", self.max_training_vectors),
            ));
        }
        Ok(())
    }
}

/// Vectors [`PqCodebook::encode_many`] encodes per pass over the subspaces.
pub const ENCODE_BLOCK: usize = 64;

/// A trained codebook: `m` subspaces × 256 centroids × `dim / m` values.
#[derive(Clone, Debug)]
pub struct PqCodebook {
    dim: usize,
    subspaces: usize,
    /// Centroids, subspace-major: `[subspace][centroid][sub_dim]`.
    centroids: Vec<f32>,
    /// The same, dimension-major within each subspace (`[subspace][sub_dim][centroid]`), for the
    /// nearest-centroid kernel; built on the first encode (readers never encode).
    centroids_t: OnceLock<Vec<f32>>,
    /// The same dimension-major layout as f16 bits, for ADC tables: a query reads the active part
    /// of the whole codebook (10 MB as f32 for a 10,240-dim FDE) once, and from memory, so halving
    /// it halved the table's time (about 0.6 ms of a SciFact-shaped query's 4.5); the table is
    /// quantized to bytes afterwards, whose step is far coarser than f16's rounding.
    centroids_t16: Vec<u16>,
    /// Squared norms, `[subspace][centroid]`.
    norms: Vec<f32>,
}

impl PartialEq for PqCodebook {
    /// Equal centroids make equal codebooks; everything else is derived from them.
    fn eq(&self, other: &Self) -> bool {
        self.dim == other.dim && self.subspaces == other.subspaces && self.centroids == other.centroids
    }
}

/// Result of training: the codebook and its mean squared quantisation error on the sample.
#[derive(Debug)]
pub struct Trained {
    /// The codebook.
    pub codebook: PqCodebook,
    /// Mean over training vectors of `‖x - decode(encode(x))‖²`.
    pub distortion: f64,
}

impl PqCodebook {
    /// Trains on `vectors` (row-major, `dim` wide). Errors on an empty or ragged input, bad
    /// parameters or non-finite values.
    pub fn train(vectors: &[f32], dim: usize, params: &PqParams) -> Result<Trained> {
        params.validate(dim)?;
        if dim == 0 || vectors.is_empty() || !vectors.len().is_multiple_of(dim) {
            return Err(Error::InvalidInput(format!(
                "PQ training needs a non-empty set of {dim}-dimensional vectors, got {} values",
                vectors.len()
            )));
        }
        if vectors.iter().any(|v| !v.is_finite()) {
            return Err(Error::InvalidInput("PQ training vectors contain NaN or infinity".into()));
        }
        let n_all = vectors.len() / dim;
        let mut rng = SplitMix64::new(params.seed);
        let sample: Vec<usize> = sample_indices(n_all, params.max_training_vectors as usize, &mut rng);
        let m = params.subspaces as usize;
        let sub_dim = dim / m;

        let per_subspace: Vec<(Vec<f32>, f64)> = (0..m)
            .into_par_iter()
            .map(|s| {
                let mut data = Vec::with_capacity(sample.len() * sub_dim);
                for &i in &sample {
                    data.extend_from_slice(&vectors[i * dim + s * sub_dim..i * dim + (s + 1) * sub_dim]);
                }
                lloyd(&data, sub_dim, params.iterations, params.seed ^ (s as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
            })
            .collect();

        let mut centroids = Vec::with_capacity(m * PQ_CENTROIDS * sub_dim);
        let mut distortion = 0f64;
        for (c, d) in per_subspace {
            centroids.extend(c);
            distortion += d;
        }
        Ok(Trained { codebook: Self::from_centroids(dim, m, centroids)?, distortion: distortion / sample.len() as f64 })
    }

    /// A codebook from stored centroids (`[subspace][centroid][sub_dim]`), as a segment holds them.
    pub fn from_centroids(dim: usize, subspaces: usize, centroids: Vec<f32>) -> Result<Self> {
        if subspaces == 0 || !dim.is_multiple_of(subspaces) || centroids.len() != dim * PQ_CENTROIDS {
            return Err(Error::InvalidInput(format!(
                "a codebook of {subspaces} subspaces for dimension {dim} needs {} centroid values, got {}",
                dim * PQ_CENTROIDS,
                centroids.len()
            )));
        }
        if centroids.iter().any(|v| !v.is_finite()) {
            return Err(Error::InvalidInput("codebook centroids contain NaN or infinity".into()));
        }
        let sub_dim = dim / subspaces;
        let centroids_t16 = dimension_major(&centroids, sub_dim, |v| half::f16::from_f32(v).to_bits());
        let norms = centroids.chunks_exact(sub_dim).map(|c| c.iter().map(|v| v * v).sum()).collect();
        Ok(PqCodebook { dim, subspaces, centroids, centroids_t: OnceLock::new(), centroids_t16, norms })
    }

    /// The f32 centroids dimension-major within each subspace, built once on first use.
    fn centroids_t(&self) -> &[f32] {
        self.centroids_t.get_or_init(|| dimension_major(&self.centroids, self.sub_dim(), |v| v))
    }

    /// Bytes this codebook holds in memory now (the encoding copy counts once it exists).
    pub fn resident_bytes(&self) -> usize {
        self.centroids.len() * 4
            + self.centroids_t16.len() * 2
            + self.norms.len() * 4
            + self.centroids_t.get().map_or(0, |t| t.len() * 4)
    }

    /// The vector dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Subspaces `m` = bytes per code.
    pub fn subspaces(&self) -> usize {
        self.subspaces
    }

    /// Values per subspace.
    pub fn sub_dim(&self) -> usize {
        self.dim / self.subspaces
    }

    /// The centroids, `[subspace][centroid][sub_dim]`.
    pub fn centroids(&self) -> &[f32] {
        &self.centroids
    }

    /// Encodes one vector into `code` (`m` bytes).
    pub fn encode(&self, vector: &[f32], code: &mut [u8]) -> Result<()> {
        if vector.len() != self.dim || code.len() != self.subspaces {
            return Err(Error::InvalidInput(format!(
                "encode needs a {}-value vector and a {}-byte code, got {} and {}",
                self.dim,
                self.subspaces,
                vector.len(),
                code.len()
            )));
        }
        simd::encode_subspaces(vector, self.sub_dim(), self.centroids_t(), &self.norms, code);
        Ok(())
    }

    /// Encodes many vectors (row-major) into consecutive codes, in parallel (blocks of
    /// [`ENCODE_BLOCK`] vectors, see [`PqCodebook::encode_many`]). Returns the summed squared
    /// quantization error, `Σ ‖x - decode(encode(x))‖²`.
    pub fn encode_batch(&self, vectors: &[f32], codes: &mut [u8]) -> Result<f64> {
        self.check_many(vectors, codes)?;
        vectors
            .par_chunks(self.dim * ENCODE_BLOCK)
            .zip(codes.par_chunks_mut(self.subspaces * ENCODE_BLOCK))
            .map(|(v, c)| self.encode_many(v, c))
            .try_reduce(|| 0.0, |a, b| Ok(a + b))
    }

    /// Encodes many vectors (row-major) into consecutive codes on the calling thread, the same
    /// codes as [`PqCodebook::encode`] one by one. Subspace by subspace for blocks of
    /// [`ENCODE_BLOCK`] vectors, so one subspace's centroids (8 KB for 8-value subspaces) stay in
    /// the L1 cache for the whole block instead of the whole codebook (10 MB for a 10,240-dim FDE)
    /// streaming from memory for every vector: measured 8× faster per code (`cargo bench --bench pq`).
    /// Returns the summed squared quantization error of the vectors (free: the nearest-centroid
    /// search finds each subspace's distance anyway), which is how a collection notices that new
    /// documents drift away from what its codebook was trained on.
    pub fn encode_many(&self, vectors: &[f32], codes: &mut [u8]) -> Result<f64> {
        self.check_many(vectors, codes)?;
        let (m, sub_dim) = (self.subspaces, self.sub_dim());
        let block = sub_dim * PQ_CENTROIDS;
        let mut points = vec![0f32; ENCODE_BLOCK * sub_dim];
        let mut assign = [0u8; ENCODE_BLOCK];
        let mut dist = [0f32; ENCODE_BLOCK];
        let mut error = 0f64;
        let centroids_t = self.centroids_t();
        for (vs, cs) in vectors.chunks(self.dim * ENCODE_BLOCK).zip(codes.chunks_mut(m * ENCODE_BLOCK)) {
            let n = cs.len() / m;
            for s in 0..m {
                for (i, v) in vs.chunks_exact(self.dim).enumerate() {
                    points[i * sub_dim..(i + 1) * sub_dim].copy_from_slice(&v[s * sub_dim..(s + 1) * sub_dim]);
                }
                simd::nearest_centroid(
                    &points[..n * sub_dim],
                    sub_dim,
                    &centroids_t[s * block..(s + 1) * block],
                    &self.norms[s * PQ_CENTROIDS..(s + 1) * PQ_CENTROIDS],
                    &mut assign[..n],
                    &mut dist[..n],
                );
                for (i, &a) in assign[..n].iter().enumerate() {
                    cs[i * m + s] = a;
                }
                error += dist[..n].iter().map(|&d| d as f64).sum::<f64>();
            }
        }
        Ok(error)
    }

    fn check_many(&self, vectors: &[f32], codes: &[u8]) -> Result<()> {
        if !vectors.len().is_multiple_of(self.dim) || codes.len() != vectors.len() / self.dim * self.subspaces {
            return Err(Error::InvalidInput(format!(
                "encoding {}-value vectors into {}-byte codes: {} values and {} code bytes disagree in count",
                self.dim,
                self.subspaces,
                vectors.len(),
                codes.len()
            )));
        }
        Ok(())
    }

    /// The vector a code stands for.
    pub fn decode(&self, code: &[u8], out: &mut [f32]) {
        assert!(code.len() == self.subspaces && out.len() == self.dim);
        let sub_dim = self.sub_dim();
        for (s, &c) in code.iter().enumerate() {
            let at = (s * PQ_CENTROIDS + c as usize) * sub_dim;
            out[s * sub_dim..(s + 1) * sub_dim].copy_from_slice(&self.centroids[at..at + sub_dim]);
        }
    }

    /// The ADC table of `query`: `⟨q_s, c_{s,j}⟩` for every subspace `s` whose part of the query
    /// is not all zeros, and every centroid `j`.
    ///
    /// Subspaces where the query is zero contribute nothing to any score, and a MUVERA query FDE
    /// has many: queries are never filled, so every empty bucket is a run of zeros (about half the
    /// subspaces for a 20-token query at 32 buckets per repetition). Leaving them out of the table
    /// halves both the table's cost and every code's scoring, and shrinks the table so it stays
    /// in the L2 cache.
    pub fn adc_table(&self, query: &[f32]) -> Result<AdcTable> {
        if query.len() != self.dim {
            return Err(Error::InvalidInput(format!(
                "query FDE has {} values, the codebook {}",
                query.len(),
                self.dim
            )));
        }
        let sub_dim = self.sub_dim();
        let nonzero = |s: usize| query[s * sub_dim..(s + 1) * sub_dim].iter().any(|&v| v != 0.0);
        // Rows in scoring order: first every pair of neighbouring non-zero subspaces (2s, 2s+1),
        // whose two code bytes one 16-bit load fetches, then the lone ones. A MUVERA bucket of
        // 16 values spans two 8-value subspaces, so nearly every non-zero subspace is in a pair.
        let mut active = Vec::new();
        let mut singles = Vec::new();
        for s in (0..self.subspaces).step_by(2) {
            match (nonzero(s), s + 1 < self.subspaces && nonzero(s + 1)) {
                (true, true) => active.extend([s as u32, s as u32 + 1]),
                (true, false) => singles.push(s as u32),
                (false, true) => singles.push(s as u32 + 1),
                (false, false) => {}
            }
        }
        let pairs = active.len() / 2;
        active.extend(singles);
        let mut table = vec![0f32; active.len() * PQ_CENTROIDS];
        // Runs of rows whose subspaces are consecutive are computed with one kernel call each.
        let mut i = 0;
        while i < active.len() {
            let mut j = i + 1;
            while j < active.len() && active[j] == active[j - 1] + 1 {
                j += 1;
            }
            let (first, count) = (active[i] as usize, j - i);
            simd::centroid_dots_f16(
                &query[first * sub_dim..(first + count) * sub_dim],
                sub_dim,
                &self.centroids_t16[first * sub_dim * PQ_CENTROIDS..(first + count) * sub_dim * PQ_CENTROIDS],
                &mut table[i * PQ_CENTROIDS..j * PQ_CENTROIDS],
            );
            i = j;
        }
        let (quantized, scale, offset) = quantize_table(&table, active.len());
        Ok(AdcTable { subspaces: self.subspaces, active, pairs, table, quantized, scale, offset })
    }
}

/// Codes scored side by side by [`AdcTable::score_many`].
pub const SCORE_GROUP: usize = 8;

/// Per-query lookup table for asymmetric inner products against PQ codes (only the subspaces
/// where the query is non-zero; see [`PqCodebook::adc_table`]).
#[derive(Clone, Debug)]
pub struct AdcTable {
    subspaces: usize,
    /// The subspace of each table row: subspaces with a non-zero query part, the first
    /// `2 · pairs` in pairs `(2s, 2s + 1)`, then the others (see [`PqCodebook::adc_table`]).
    active: Vec<u32>,
    /// Pairs of neighbouring subspaces at the start of `active`.
    pairs: usize,
    /// `active.len() × 256` inner products.
    table: Vec<f32>,
    /// The same as bytes: `table ≈ offset_s + scale · quantized` (one scale for all subspaces, so
    /// byte sums compare like float sums); 4× smaller, so it stays in L1/L2 while codes stream.
    quantized: Vec<u8>,
    scale: f32,
    /// Σ over active subspaces of each subspace's minimum.
    offset: f32,
}

/// Quantizes an ADC table to bytes with one common scale (see [`AdcTable`]).
fn quantize_table(table: &[f32], rows: usize) -> (Vec<u8>, f32, f32) {
    let mut mins = Vec::with_capacity(rows);
    let mut spread = 0f32;
    for row in table.chunks_exact(PQ_CENTROIDS).take(rows) {
        let (lo, hi) = simd::min_max(row);
        mins.push(lo);
        spread = spread.max(hi - lo);
    }
    let scale = if spread > 0.0 { spread / 255.0 } else { 1.0 };
    let inv = 1.0 / scale;
    let mut q = vec![0u8; table.len()];
    // Values are ≥ lo, so `+ 0.5` then truncation rounds to nearest.
    for ((dst, src), &lo) in q.chunks_exact_mut(PQ_CENTROIDS).zip(table.chunks_exact(PQ_CENTROIDS)).zip(&mins) {
        simd::quantize_u8(src, lo, inv, dst);
    }
    (q, scale, mins.iter().sum())
}

impl AdcTable {
    /// Bytes per code this table scores.
    pub fn subspaces(&self) -> usize {
        self.subspaces
    }

    /// The byte table's quantization step (score units per byte count).
    pub fn quantization_step(&self) -> f32 {
        self.scale
    }

    /// Subspaces that take part in scoring (the others are zero in the query).
    pub fn active_subspaces(&self) -> usize {
        self.active.len()
    }

    /// `⟨q, decode(code)⟩` by one lookup per active subspace. `code` must be `m` bytes.
    #[inline]
    pub fn score(&self, code: &[u8]) -> f32 {
        debug_assert_eq!(code.len(), self.subspaces);
        // Four partial sums so consecutive lookups do not wait on each other's additions.
        let mut acc = [0f32; 4];
        let chunks = self.active.chunks_exact(4);
        let rest = chunks.remainder();
        let mut row = 0;
        for c in chunks {
            for (l, &s) in c.iter().enumerate() {
                acc[l] += self.table[(row + l) * PQ_CENTROIDS + code[s as usize] as usize];
            }
            row += 4;
        }
        for (l, &s) in rest.iter().enumerate() {
            acc[l] += self.table[(row + l) * PQ_CENTROIDS + code[s as usize] as usize];
        }
        (acc[0] + acc[1]) + (acc[2] + acc[3])
    }

    /// Scores the codes of `ids` (ordinals into `codes`, consecutive `m`-byte codes) into `out`.
    ///
    /// Equal to calling [`AdcTable::score`] per id, but [`SCORE_GROUP`] codes are walked side by
    /// side, subspace by subspace: a graph visits codes scattered over memory, and interleaving
    /// them keeps many independent cache-line fetches in flight instead of one code's at a time.
    pub fn score_many(&self, codes: &[u8], ids: &[u32], out: &mut Vec<f32>) {
        out.clear();
        // Groups of 8, then of 4, 2 and 1 for the rest: each width is a constant-trip inner loop,
        // which the compiler unrolls with the partial sums in registers (a loop over a run-time
        // group length added into memory, one store-to-load round trip per lookup). A beam step
        // scores a handful of fresh neighbours, so the short widths are common.
        let mut groups = ids.chunks_exact(SCORE_GROUP);
        for group in groups.by_ref() {
            self.score_group::<SCORE_GROUP>(codes, group, out);
        }
        // Fewer than 8 left: at most one group each of 4, 2 and 1, in order.
        let mut rest = groups.remainder();
        if rest.len() >= 4 {
            self.score_group::<4>(codes, &rest[..4], out);
            rest = &rest[4..];
        }
        if rest.len() >= 2 {
            self.score_group::<2>(codes, &rest[..2], out);
            rest = &rest[2..];
        }
        if !rest.is_empty() {
            self.score_group::<1>(codes, rest, out);
        }
    }

    /// [`AdcTable::score_many`] of exactly `N` ids, appended to `out`.
    fn score_group<const N: usize>(&self, codes: &[u8], group: &[u32], out: &mut Vec<f32>) {
        let m = self.subspaces;
        let rows: [&[u8]; N] = std::array::from_fn(|j| &codes[group[j] as usize * m..(group[j] as usize + 1) * m]);
        let mut acc = [0u32; N];
        let (paired, single) = self.quantized.split_at(2 * self.pairs * PQ_CENTROIDS);
        // A fixed-size view lets the compiler drop the table's bounds checks; the chunks are
        // exactly that long, so the conversions cannot fail.
        #[allow(clippy::expect_used)]
        for (table, &s) in paired.chunks_exact(2 * PQ_CENTROIDS).zip(self.active.iter().step_by(2)) {
            let table: &[u8; 2 * PQ_CENTROIDS] = table.try_into().expect("512 entries");
            let s = s as usize;
            for (a, row) in acc.iter_mut().zip(&rows) {
                let two: [u8; 2] = row[s..s + 2].try_into().expect("two bytes");
                let two = u16::from_le_bytes(two) as usize;
                *a += table[two & 0xff] as u32 + table[PQ_CENTROIDS + (two >> 8)] as u32;
            }
        }
        #[allow(clippy::expect_used)]
        for (table, &s) in single.chunks_exact(PQ_CENTROIDS).zip(&self.active[2 * self.pairs..]) {
            let table: &[u8; PQ_CENTROIDS] = table.try_into().expect("256 entries");
            let s = s as usize;
            for (a, row) in acc.iter_mut().zip(&rows) {
                *a += table[row[s] as usize] as u32;
            }
        }
        out.extend(acc.iter().map(|&a| self.offset + self.scale * a as f32));
    }

    /// Flat scan: the best `top_n` of `codes` (consecutive `m`-byte codes; ordinal = position),
    /// skipping ordinals for which `skip` returns true.
    pub fn scan(&self, codes: &[u8], top_n: usize, skip: impl Fn(u32) -> bool) -> Vec<Scored> {
        let n = (codes.len() / self.subspaces) as u32;
        self.scan_ordinals(codes, (0..n).filter(|&d| !skip(d)), top_n, |_| {})
    }

    /// The best `top_n` of the codes of `ordinals` (each below the code count), scored 256 at a
    /// time; `before_block` sees each block's ordinals first (to prefetch their codes).
    pub fn scan_ordinals(
        &self,
        codes: &[u8],
        ordinals: impl Iterator<Item = u32>,
        top_n: usize,
        mut before_block: impl FnMut(&[u32]),
    ) -> Vec<Scored> {
        let mut top = TopK::new(top_n);
        let mut ordinals = ordinals.peekable();
        let mut ids = Vec::with_capacity(256);
        let mut scores = Vec::with_capacity(256);
        while ordinals.peek().is_some() {
            ids.clear();
            ids.extend(ordinals.by_ref().take(256));
            before_block(&ids);
            self.score_many(codes, &ids, &mut scores);
            for (&doc, &score) in ids.iter().zip(&scores) {
                top.push(Scored { doc, score });
            }
        }
        top.into_sorted()
    }
}

/// `k` distinct indices of `0..n` (all of them, in order, when `n ≤ k`), by a partial
/// Fisher–Yates shuffle; sorted so reads of the input stay sequential.
pub(crate) fn sample_indices(n: usize, k: usize, rng: &mut SplitMix64) -> Vec<usize> {
    if n <= k {
        return (0..n).collect();
    }
    let mut all: Vec<usize> = (0..n).collect();
    for i in 0..k {
        let j = i + rng.below((n - i) as u64) as usize;
        all.swap(i, j);
    }
    all.truncate(k);
    all.sort_unstable();
    all
}

/// Lloyd's k-means with 256 centroids on `data` (`n × sub_dim`); returns the centroids
/// (`[centroid][sub_dim]`) and the summed squared distance of the final assignment.
///
/// Initial centroids: distinct sample points chosen by `seed` (every point, repeated, when there
/// are fewer than 256). An emptied cluster takes the point farthest from its centroid, the usual
/// repair, so all 256 codes stay useful.
pub(crate) fn lloyd(data: &[f32], sub_dim: usize, iterations: u32, seed: u64) -> (Vec<f32>, f64) {
    let n = data.len() / sub_dim;
    let mut rng = SplitMix64::new(seed);
    let mut centroids = vec![0f32; PQ_CENTROIDS * sub_dim];
    let init = sample_indices(n, PQ_CENTROIDS, &mut rng);
    for c in 0..PQ_CENTROIDS {
        let p = init[c % init.len()];
        centroids[c * sub_dim..(c + 1) * sub_dim].copy_from_slice(&data[p * sub_dim..(p + 1) * sub_dim]);
    }
    lloyd_from(data, sub_dim, iterations, centroids)
}

fn lloyd_from(data: &[f32], sub_dim: usize, iterations: u32, mut centroids: Vec<f32>) -> (Vec<f32>, f64) {
    let n = data.len() / sub_dim;
    let mut assign = vec![0u8; n];
    let mut previous = vec![0u8; n];
    let mut dist = vec![0f32; n];
    let mut ct = vec![0f32; PQ_CENTROIDS * sub_dim];
    let mut norms = vec![0f32; PQ_CENTROIDS];
    let mut sums = vec![0f64; PQ_CENTROIDS * sub_dim];
    let mut counts = vec![0u32; PQ_CENTROIDS];
    for iteration in 0..iterations {
        transpose_centroids(&centroids, sub_dim, &mut ct, &mut norms);
        simd::nearest_centroid(data, sub_dim, &ct, &norms, &mut assign, &mut dist);
        if iteration > 0 && assign == previous {
            break;
        }
        previous.copy_from_slice(&assign);
        if iteration + 1 == iterations {
            break;
        }
        sums.fill(0.0);
        counts.fill(0);
        for (p, &a) in assign.iter().enumerate() {
            counts[a as usize] += 1;
            for d in 0..sub_dim {
                sums[a as usize * sub_dim + d] += data[p * sub_dim + d] as f64;
            }
        }
        for c in 0..PQ_CENTROIDS {
            if counts[c] > 0 {
                for d in 0..sub_dim {
                    centroids[c * sub_dim + d] = (sums[c * sub_dim + d] / counts[c] as f64) as f32;
                }
            } else if n > PQ_CENTROIDS {
                // Take the worst-served point, then make sure no other empty cluster takes it too.
                let (far, _) = dist.iter().enumerate().fold((0, -1f32), |b, (i, &d)| if d > b.1 { (i, d) } else { b });
                centroids[c * sub_dim..(c + 1) * sub_dim].copy_from_slice(&data[far * sub_dim..(far + 1) * sub_dim]);
                dist[far] = 0.0;
            }
        }
    }
    transpose_centroids(&centroids, sub_dim, &mut ct, &mut norms);
    simd::nearest_centroid(data, sub_dim, &ct, &norms, &mut assign, &mut dist);
    (centroids, dist.iter().map(|&d| d as f64).sum())
}

/// Lloyd's iterations from given initial centroids, for the side-by-side benchmark against
/// linfa-clustering (same start, same iteration count). Returns centroids and summed squared error.
#[doc(hidden)]
pub fn lloyd_for_bench(data: &[f32], sub_dim: usize, iterations: u32, init: &[f32]) -> (Vec<f32>, f64) {
    lloyd_from(data, sub_dim, iterations, init.to_vec())
}

/// Subspace-major centroids (`[subspace][centroid][sub_dim]`) rearranged dimension-major within
/// each subspace (`[subspace][sub_dim][centroid]`), each value through `convert`.
fn dimension_major<T: Copy + Default>(centroids: &[f32], sub_dim: usize, convert: impl Fn(f32) -> T) -> Vec<T> {
    let mut out = vec![T::default(); centroids.len()];
    for (s, block) in centroids.chunks_exact(PQ_CENTROIDS * sub_dim).enumerate() {
        let dst = &mut out[s * PQ_CENTROIDS * sub_dim..(s + 1) * PQ_CENTROIDS * sub_dim];
        for (c, centroid) in block.chunks_exact(sub_dim).enumerate() {
            for (d, &v) in centroid.iter().enumerate() {
                dst[d * PQ_CENTROIDS + c] = convert(v);
            }
        }
    }
    out
}

fn transpose_centroids(centroids: &[f32], sub_dim: usize, ct: &mut [f32], norms: &mut [f32]) {
    for c in 0..PQ_CENTROIDS {
        let centroid = &centroids[c * sub_dim..(c + 1) * sub_dim];
        norms[c] = centroid.iter().map(|v| v * v).sum();
        for (d, &v) in centroid.iter().enumerate() {
            ct[d * PQ_CENTROIDS + c] = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaussian(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut rng = SplitMix64::new(seed);
        (0..n * dim).map(|_| rng.normal() as f32).collect()
    }

    #[test]
    fn block_encoding_gives_the_codes_of_one_at_a_time() {
        let dim = 40;
        let data = gaussian(300, dim, 5);
        let params = PqParams { subspaces: 5, iterations: 4, max_training_vectors: 300, seed: 9 };
        let cb = PqCodebook::train(&data, dim, &params).unwrap().codebook;
        let mut one = vec![0u8; 300 * 5];
        for (v, c) in data.chunks(dim).zip(one.chunks_mut(5)) {
            cb.encode(v, c).unwrap();
        }
        // Whole blocks, a short last block, the parallel wrapper.
        for n in [ENCODE_BLOCK, ENCODE_BLOCK + 3, 300] {
            let mut many = vec![0u8; n * 5];
            cb.encode_many(&data[..n * dim], &mut many).unwrap();
            assert_eq!(many, one[..n * 5]);
        }
        let mut batch = vec![0u8; 300 * 5];
        let error = cb.encode_batch(&data, &mut batch).unwrap();
        assert_eq!(batch, one);
        assert!(cb.encode_many(&data[..dim], &mut [0u8; 4]).is_err());
        // The returned error is Σ ‖x - decode(encode(x))‖².
        let mut decoded = vec![0f32; dim];
        let direct: f64 = data
            .chunks(dim)
            .zip(one.chunks(5))
            .map(|(v, c)| {
                cb.decode(c, &mut decoded);
                v.iter().zip(&decoded).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>()
            })
            .sum();
        assert!((error - direct).abs() <= 1e-4 * direct, "{error} vs {direct}");
    }

    #[test]
    fn adc_score_is_inner_product_with_decoded_vector() {
        let dim = 32;
        let data = gaussian(600, dim, 1);
        let params = PqParams { subspaces: 8, iterations: 8, max_training_vectors: 600, seed: 3 };
        let trained = PqCodebook::train(&data, dim, &params).unwrap();
        let cb = &trained.codebook;
        let mut codes = vec![0u8; 600 * 8];
        cb.encode_batch(&data, &mut codes).unwrap();
        let mut decoded = vec![0f32; dim];
        // Dense query, and queries with zero subspaces (as MUVERA query FDEs have): the sparse
        // table must give the same inner products. Its non-zero subspaces 1, 2, 5, 6, 7 are one
        // pair (6, 7) and three lone subspaces, so both of the table's row kinds are scored.
        let dense = gaussian(1, dim, 2);
        let mut sparse = dense.clone();
        for s in [0, 3, 4] {
            sparse[s * 4..(s + 1) * 4].fill(0.0);
        }
        for (query, active) in [(&dense, 8), (&sparse, 5), (&vec![0f32; dim], 0)] {
            let table = cb.adc_table(query).unwrap();
            assert_eq!(table.active_subspaces(), active);
            for code in codes.chunks(8) {
                cb.decode(code, &mut decoded);
                let want: f32 = decoded.iter().zip(query.iter()).map(|(a, b)| a * b).sum();
                // Tables are computed from f16 centroids: each product is off by at most f16's
                // relative rounding (2^-11) of its magnitude.
                let bound: f32 = decoded.iter().zip(query.iter()).map(|(a, b)| (a * b).abs()).sum::<f32>() / 2048.0;
                assert!((table.score(code) - want).abs() <= bound + 1e-5, "{} vs {want}", table.score(code));
            }
        }
        let table = cb.adc_table(&sparse).unwrap();
        let ids: Vec<u32> = (0..600).rev().step_by(7).collect();
        let mut many = Vec::new();
        table.score_many(&codes, &ids, &mut many);
        for (&id, &got) in ids.iter().zip(&many) {
            let one = table.score(&codes[id as usize * 8..(id as usize + 1) * 8]);
            // Byte tables: within half a quantization step per subspace of the exact score.
            assert!((got - one).abs() <= 0.5 * table.quantization_step() * 8.0 + 1e-4, "batched scoring of {id}");
            // Full groups and the shorter last one sum the same bytes: equal scores.
            let mut single = Vec::new();
            table.score_many(&codes, &[id], &mut single);
            assert_eq!(single, [got], "{id} alone and in a group");
        }
        let table = cb.adc_table(&dense).unwrap();
        let top = table.scan(&codes, 5, |d| d == 0);
        assert_eq!(top.len(), 5);
        assert!(top.iter().all(|s| s.doc != 0));
        assert!(top.windows(2).all(|w| w[0].score >= w[1].score));
    }

    #[test]
    fn distortion_drops_as_subspaces_grow() {
        let dim = 32;
        let data = gaussian(2000, dim, 4);
        let mut last = f64::INFINITY;
        for m in [1, 2, 4, 8, 16] {
            let params = PqParams { subspaces: m, iterations: 10, max_training_vectors: 2000, seed: 5 };
            let d = PqCodebook::train(&data, dim, &params).unwrap().distortion;
            assert!(d < last, "m={m}: distortion {d} did not drop below {last}");
            last = d;
        }
    }

    #[test]
    fn training_is_deterministic_and_handles_tiny_inputs() {
        let dim = 16;
        let data = gaussian(300, dim, 6);
        let params = PqParams { subspaces: 4, iterations: 5, max_training_vectors: 200, seed: 9 };
        let a = PqCodebook::train(&data, dim, &params).unwrap();
        let b = PqCodebook::train(&data, dim, &params).unwrap();
        assert_eq!(a.codebook, b.codebook);
        // Fewer vectors than centroids: each vector becomes a centroid, so distortion is zero up
        // to the cancellation of the ‖x‖² + ‖c‖² - 2⟨x, c⟩ form.
        let few = gaussian(10, dim, 7);
        let t = PqCodebook::train(&few, dim, &params).unwrap();
        assert!(t.distortion < 1e-5, "{}", t.distortion);
        assert!(PqCodebook::train(&[], dim, &params).is_err());
        assert!(PqCodebook::train(&data[..17], dim, &params).is_err());
        let bad = PqParams { subspaces: 3, ..params };
        assert!(PqCodebook::train(&data, dim, &bad).is_err());
    }
}
