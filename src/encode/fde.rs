//! MUVERA fixed dimensional encodings (Dhulipala et al., NeurIPS 2024), faithful to Google's
//! reference implementation (`sketching/point_cloud/fixed_dimensional_encoding.cc`).
//!
//! An FDE maps a set of token vectors to one vector so that `⟨FDE(q), FDE(d)⟩ ≈ r_reps · MaxSim(q, d)`.
//! For each of `r_reps` repetitions:
//! 1. `k_sim` Gaussian hyperplanes (SimHash) split space into `2^k_sim` buckets. Bit `t` of a
//!    token is 1 iff `⟨x, g_t⟩ > 0` (exactly 0 gives 0); the bucket index folds the bits in
//!    projection order as `idx = (idx << 1) + (bit ^ (idx & 1))` (a Gray-code order).
//! 2. Each token is projected to `d_proj` dimensions ([`Projection`]).
//! 3. A **query** sums the projected tokens of each bucket and never fills empty buckets. A
//!    **document** averages each bucket; with `fill_empty`, an empty bucket takes the projection
//!    of the single token whose sign bits are nearest in Hamming distance to the bucket's bit
//!    pattern (`idx ^ (idx >> 1)`), first minimum wins.
//!
//! The blocks are laid out `[repetition][bucket][d_proj]`; an optional final Count Sketch
//! (seeded with `seed`) shortens the whole vector to `final_dim`.
//!
//! Implementation notes. Projection is linear, so a bucket's tokens are summed in the input
//! space first and projected once (`P Σx = Σ Px`): the same value up to float rounding, and
//! `d_proj/dim` of the work. The SimHash products of all repetitions are one `dim × (r·k)`
//! matrix product (FMA where available); every sign bit is then made CPU-independent by an error
//! bound, with an exact f64 recomputation for the rare products too close to zero to decide, so
//! bucket assignment is identical on every machine.

use crate::encode::rng::{Mt19937, StandardNormal};
use crate::encode::simd;
use crate::encode::tokens::TokenMatrix;
use crate::error::{Error, Result};
use crate::limits::{MAX_DIM, MAX_FDE_DIM, MAX_K_SIM, MAX_REPETITIONS};

/// How token vectors are projected before they are summed into buckets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Projection {
    /// No projection: `d_proj = dim`.
    Identity,
    /// The reference's "AMS sketch": each input coordinate goes to one random output coordinate
    /// with a random sign (a Count Sketch), no scaling. Sparse, so cheap. The default.
    CountSketch {
        /// Projected dimension.
        d_proj: u32,
    },
    /// The paper's dense projection: every entry an independent ±1/√d_proj.
    DenseSign {
        /// Projected dimension.
        d_proj: u32,
    },
}

/// Everything that determines an FDE. Persisted with a collection: the same parameters always
/// give the same encoding (see [`crate::encode::rng`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FdeParams {
    /// Token vector dimension.
    pub dim: u32,
    /// SimHash projections per repetition; `2^k_sim` buckets. `0` means one bucket.
    pub k_sim: u32,
    /// The per-token projection.
    pub projection: Projection,
    /// Independent repetitions, concatenated.
    pub r_reps: u32,
    /// Fill empty buckets of documents from the nearest token (queries are never filled).
    pub fill_empty: bool,
    /// Optional final Count Sketch to this many dimensions.
    pub final_dim: Option<u32>,
    /// Seed of every random matrix: repetition `r` uses `seed + r` (wrapping), the final sketch `seed`.
    pub seed: u32,
}

impl FdeParams {
    /// The default for `dim`-dimensional tokens: (r_reps, k_sim, d_proj) = (20, 5, 16) with the
    /// Count Sketch projection, fill-empty on, no final projection, seed 1 → 10,240 dimensions.
    pub fn new(dim: u32) -> Self {
        FdeParams {
            dim,
            k_sim: 5,
            projection: Projection::CountSketch { d_proj: 16 },
            r_reps: 20,
            fill_empty: true,
            final_dim: None,
            seed: 1,
        }
    }

    /// Checks every field against its range; the error names the parameter.
    pub fn validate(&self) -> Result<()> {
        if self.dim == 0 || self.dim as usize > MAX_DIM {
            return Err(Error::invalid_param("dim", format!("{} is outside 1..={MAX_DIM}", self.dim)));
        }
        if self.k_sim > MAX_K_SIM {
            return Err(Error::invalid_param(
                "k_sim",
                format!("{} is above {MAX_K_SIM} (buckets = 2^k_sim)", self.k_sim),
            ));
        }
        if self.r_reps == 0 || self.r_reps > MAX_REPETITIONS {
            return Err(Error::invalid_param("r_reps", format!("{} is outside 1..={MAX_REPETITIONS}", self.r_reps)));
        }
        match self.projection {
            Projection::Identity => {}
            Projection::CountSketch { d_proj } | Projection::DenseSign { d_proj } => {
                if d_proj == 0 || d_proj as usize > MAX_DIM {
                    return Err(Error::invalid_param("d_proj", format!("{d_proj} is outside 1..={MAX_DIM}")));
                }
            }
        }
        let block = (self.r_reps as u64) << self.k_sim;
        let raw = block.saturating_mul(self.proj_dim() as u64);
        if raw > MAX_FDE_DIM as u64 {
            return Err(Error::invalid_param(
                "k_sim",
                format!("r_reps · 2^k_sim · d_proj = {raw} exceeds the FDE length limit of {MAX_FDE_DIM}"),
            ));
        }
        if let Some(final_dim) = self.final_dim {
            if final_dim == 0 || final_dim as usize > MAX_FDE_DIM {
                return Err(Error::invalid_param("final_dim", format!("{final_dim} is outside 1..={MAX_FDE_DIM}")));
            }
        }
        Ok(())
    }

    /// Dimension of a projected token (`dim` for the identity).
    pub fn proj_dim(&self) -> usize {
        match self.projection {
            Projection::Identity => self.dim as usize,
            Projection::CountSketch { d_proj } | Projection::DenseSign { d_proj } => d_proj as usize,
        }
    }

    /// Buckets per repetition, `2^k_sim`.
    pub fn buckets(&self) -> usize {
        1usize << self.k_sim
    }

    /// Length before the optional final projection: `r_reps · 2^k_sim · d_proj`.
    pub fn raw_dim(&self) -> usize {
        self.r_reps as usize * self.buckets() * self.proj_dim()
    }

    /// Length of the produced FDE.
    pub fn fde_dim(&self) -> usize {
        self.final_dim.map_or(self.raw_dim(), |d| d as usize)
    }
}

/// The projection's random draws for all repetitions.
enum ProjectionDraws {
    Identity,
    /// Count Sketch or dense ±1/√d_proj. `matrix` holds, per repetition, the projection as a
    /// `dim × padded_cols` row-major matrix, columns zero-padded to a multiple of
    /// [`simd::MAT_MUL_COL_BLOCK`], so a batch of vectors is projected by one register-blocked
    /// product. For the Count Sketch each row has one ±1: summing `x_i · m_ij` over ascending `i`
    /// adds exactly the same terms in the same order as the sparse form. `sketch` keeps the Count
    /// Sketch's draws (output coordinate and sign per repetition and input coordinate) for
    /// fingerprints and inspection.
    Matrix {
        matrix: Vec<f32>,
        padded_cols: usize,
        sketch: Option<(Vec<u32>, Vec<f32>)>,
    },
}

/// Which side of the asymmetric encoding is being computed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Query,
    Document,
}

/// An FDE encoder: the parameters with their random matrices drawn once. Cheap to share
/// between threads (`Sync`); encoding allocates only its output and a small scratch.
pub struct FdeEncoder {
    params: FdeParams,
    /// `dim × simhash_cols` row-major: row `i` holds coordinate `i` of every hyperplane,
    /// repetition-major, zero-padded to `simhash_cols` (a multiple of [`simd::MAT_MUL_COL_BLOCK`]),
    /// so the sketches of all tokens in all repetitions are one matrix product.
    simhash: Vec<f32>,
    simhash_cols: usize,
    /// Euclidean norm of each SimHash column (hyperplane), for the sign-certainty bound.
    simhash_col_norms: Vec<f32>,
    projection: ProjectionDraws,
    /// The final Count Sketch: output coordinate and sign per raw FDE coordinate.
    final_sketch: Option<(Vec<u32>, Vec<f32>)>,
}

impl std::fmt::Debug for FdeEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FdeEncoder").field("params", &self.params).finish_non_exhaustive()
    }
}

impl FdeEncoder {
    /// Validates `params` and draws the random matrices.
    pub fn new(params: FdeParams) -> Result<Self> {
        params.validate()?;
        let dim = params.dim as usize;
        let k = params.k_sim as usize;
        let reps = params.r_reps as usize;
        let p = params.proj_dim();
        let simhash_cols = (reps * k).div_ceil(simd::MAT_MUL_COL_BLOCK) * simd::MAT_MUL_COL_BLOCK;

        let mut simhash = vec![0f32; dim * simhash_cols];
        for rep in 0..reps {
            let block = simhash_matrix_from_seed(params.seed.wrapping_add(rep as u32), dim, k);
            for i in 0..dim {
                let at = i * simhash_cols + rep * k;
                simhash[at..at + k].copy_from_slice(&block[i * k..i * k + k]);
            }
        }

        let simhash_col_norms: Vec<f32> = (0..simhash_cols)
            .map(|c| (0..dim).map(|i| simhash[i * simhash_cols + c] as f64).map(|v| v * v).sum::<f64>().sqrt() as f32)
            .collect();
        let padded_cols = p.div_ceil(simd::MAT_MUL_COL_BLOCK) * simd::MAT_MUL_COL_BLOCK;
        let projection = match params.projection {
            Projection::Identity => ProjectionDraws::Identity,
            Projection::CountSketch { .. } => {
                let mut matrix = vec![0f32; reps * dim * padded_cols];
                let mut target = Vec::with_capacity(reps * dim);
                let mut sign = Vec::with_capacity(reps * dim);
                for rep in 0..reps {
                    let (t, s) = count_sketch_draws(params.seed.wrapping_add(rep as u32), dim, p as u32);
                    for i in 0..dim {
                        matrix[(rep * dim + i) * padded_cols + t[i] as usize] = s[i];
                    }
                    target.extend(t);
                    sign.extend(s);
                }
                ProjectionDraws::Matrix { matrix, padded_cols, sketch: Some((target, sign)) }
            }
            Projection::DenseSign { .. } => {
                let scale = 1.0 / (p as f32).sqrt();
                let mut matrix = vec![0f32; reps * dim * padded_cols];
                for rep in 0..reps {
                    let mut rng = Mt19937::new(params.seed.wrapping_add(rep as u32));
                    for i in 0..dim {
                        for j in 0..p {
                            matrix[(rep * dim + i) * padded_cols + j] = if rng.coin() { scale } else { -scale };
                        }
                    }
                }
                ProjectionDraws::Matrix { matrix, padded_cols, sketch: None }
            }
        };

        let final_sketch =
            params.final_dim.map(|final_dim| count_sketch_draws(params.seed, params.raw_dim(), final_dim));

        Ok(FdeEncoder { params, simhash, simhash_cols, simhash_col_norms, projection, final_sketch })
    }

    /// The parameters this encoder was built with.
    pub fn params(&self) -> &FdeParams {
        &self.params
    }

    /// Length of every FDE this encoder produces.
    pub fn fde_dim(&self) -> usize {
        self.params.fde_dim()
    }

    /// The SimHash hyperplanes of repetition `rep` as a `dim × k_sim` row-major matrix (the
    /// reference's `SimHashMatrixFromSeed(seed + rep, dim, k_sim)`), for inspection and tests.
    pub fn simhash_matrix(&self, rep: usize) -> Vec<f32> {
        let (dim, k, cols) = (self.params.dim as usize, self.params.k_sim as usize, self.simhash_cols);
        (0..dim).flat_map(|i| self.simhash[i * cols + rep * k..i * cols + rep * k + k].iter().copied()).collect()
    }

    /// The projection of repetition `rep` as a dense `dim × d_proj` row-major matrix (the identity
    /// for [`Projection::Identity`]), for inspection and tests.
    pub fn projection_matrix(&self, rep: usize) -> Vec<f32> {
        let (dim, p) = (self.params.dim as usize, self.params.proj_dim());
        let mut out = vec![0f32; dim * p];
        match &self.projection {
            ProjectionDraws::Identity => (0..dim).for_each(|i| out[i * p + i] = 1.0),
            ProjectionDraws::Matrix { matrix, padded_cols, .. } => {
                for i in 0..dim {
                    let at = (rep * dim + i) * padded_cols;
                    out[i * p..(i + 1) * p].copy_from_slice(&matrix[at..at + p]);
                }
            }
        }
        out
    }

    /// A 64-bit FNV-1a hash of `prefix` followed by the drawn matrices. The stored FDE record
    /// (`format::fde_params::fingerprint`) passes its encoding of the parameters as the prefix, so
    /// the fingerprint covers parameters **and** draws: if a future build ever drew different
    /// matrices for the same parameters, the mismatch is detected at open instead of silently
    /// degrading recall. (The record's byte layout lives in `format`; this module stays pure math.)
    pub fn draws_fingerprint(&self, prefix: &[u8]) -> u64 {
        let mut h = Fnv64::new();
        h.write(prefix);
        // Hash the draws in their canonical (unpadded, per-repetition) form, so the fingerprint
        // does not depend on in-memory layout choices.
        for rep in 0..self.params.r_reps as usize {
            self.simhash_matrix(rep).iter().for_each(|v| h.write(&v.to_le_bytes()));
        }
        match &self.projection {
            ProjectionDraws::Identity => {}
            ProjectionDraws::Matrix { sketch: Some((target, sign)), .. } => {
                target.iter().for_each(|v| h.write(&v.to_le_bytes()));
                sign.iter().for_each(|v| h.write(&v.to_le_bytes()));
            }
            ProjectionDraws::Matrix { sketch: None, .. } => {
                for rep in 0..self.params.r_reps as usize {
                    self.projection_matrix(rep).iter().for_each(|v| h.write(&v.to_le_bytes()));
                }
            }
        }
        if let Some((target, sign)) = &self.final_sketch {
            target.iter().for_each(|v| h.write(&v.to_le_bytes()));
            sign.iter().for_each(|v| h.write(&v.to_le_bytes()));
        }
        h.finish()
    }

    /// The query FDE: per-bucket sums, empty buckets left zero.
    pub fn encode_query(&self, tokens: &TokenMatrix<'_>) -> Result<Vec<f32>> {
        let mut out = vec![0f32; self.fde_dim()];
        self.encode_into(tokens, Side::Query, &mut out)?;
        Ok(out)
    }

    /// The document FDE: per-bucket averages, empty buckets filled if `fill_empty` is set.
    pub fn encode_document(&self, tokens: &TokenMatrix<'_>) -> Result<Vec<f32>> {
        let mut out = vec![0f32; self.fde_dim()];
        self.encode_into(tokens, Side::Document, &mut out)?;
        Ok(out)
    }

    /// [`FdeEncoder::encode_query`] into a caller's buffer of length [`FdeEncoder::fde_dim`].
    pub fn encode_query_into(&self, tokens: &TokenMatrix<'_>, out: &mut [f32]) -> Result<()> {
        self.encode_into(tokens, Side::Query, out)
    }

    /// [`FdeEncoder::encode_document`] into a caller's buffer of length [`FdeEncoder::fde_dim`].
    pub fn encode_document_into(&self, tokens: &TokenMatrix<'_>, out: &mut [f32]) -> Result<()> {
        self.encode_into(tokens, Side::Document, out)
    }

    fn encode_into(&self, tokens: &TokenMatrix<'_>, side: Side, out: &mut [f32]) -> Result<()> {
        let params = &self.params;
        if tokens.dim() != params.dim as usize {
            return Err(Error::InvalidInput(format!(
                "wrong dimension: got {}-dimensional tokens, the FDE parameters say {}",
                tokens.dim(),
                params.dim
            )));
        }
        if out.len() != self.fde_dim() {
            return Err(Error::InvalidInput(format!(
                "output buffer has length {}, the FDE has {}",
                out.len(),
                self.fde_dim()
            )));
        }
        match &self.final_sketch {
            None => self.encode_raw(tokens, side, out),
            Some((target, sign)) => {
                let mut raw = vec![0f32; params.raw_dim()];
                self.encode_raw(tokens, side, &mut raw);
                out.fill(0.0);
                for ((&value, &t), &s) in raw.iter().zip(target).zip(sign) {
                    out[t as usize] += s * value;
                }
            }
        }
        Ok(())
    }

    fn encode_raw(&self, tokens: &TokenMatrix<'_>, side: Side, out: &mut [f32]) {
        let params = &self.params;
        let (dim, k, reps, p) = (params.dim as usize, params.k_sim as usize, params.r_reps as usize, params.proj_dim());
        let n = tokens.rows();
        let buckets = params.buckets();
        debug_assert_eq!(out.len(), reps * buckets * p);
        out.fill(0.0);

        // SimHash codes of every token in every repetition: code bit (k-1-t) is projection t,
        // so the code of bucket `b` is `b ^ (b >> 1)` and Hamming distance is a popcount.
        //
        // Sign bits must not depend on the CPU (a document FDE stored today is compared with query
        // FDEs computed elsewhere, later). The products are computed with FMA where available, and
        // every sign is made certain: any f32 evaluation of ⟨x, g⟩ (fused or not, any order) is
        // within E = (dim + 2)·2⁻²⁴·Σ|x_i g_i| ≤ (dim + 2)·2⁻²⁴·‖x‖·‖g‖ of the exact value. Where
        // |v| > 2E the sign is the exact one on every CPU; otherwise (a few values per document) the
        // product is recomputed sequentially in f64 — the same operations on every CPU. The bound
        // is doubled again to cover the rounding of the norms themselves.
        let codes = self.simhash_codes(tokens);

        // Per repetition: sum the raw tokens of each occupied bucket in a "slot" (slots bound the
        // scratch by the token count however many buckets there are), then project all sums of
        // the repetition in one batch.
        let mut slot_of_bucket = vec![u32::MAX; buckets];
        let mut slot_of_token: Vec<u32> = vec![0; n];
        let mut slot_bucket: Vec<usize> = Vec::with_capacity(n);
        let mut slot_code: Vec<u32> = Vec::with_capacity(n);
        let mut slot_first_token: Vec<u32> = Vec::with_capacity(n);
        let mut slot_count: Vec<u32> = Vec::with_capacity(n);
        let mut slot_sum: Vec<f32> = Vec::with_capacity(n * dim);
        let mut projected: Vec<f32> = Vec::new();
        let mut fill_from: Vec<(usize, usize)> = Vec::new(); // (bucket, slot whose first token fills it)
        let mut fill_tokens: Vec<f32> = Vec::new();
        let mut fill_row_of_slot: Vec<u32> = Vec::with_capacity(n);
        for rep in 0..reps {
            slot_bucket.clear();
            slot_code.clear();
            slot_first_token.clear();
            slot_count.clear();
            for t in 0..n {
                let code = codes[t * reps + rep];
                let bucket = bucket_of_code(code) as usize;
                if slot_of_bucket[bucket] == u32::MAX {
                    slot_of_bucket[bucket] = slot_bucket.len() as u32;
                    slot_bucket.push(bucket);
                    slot_code.push(code);
                    slot_first_token.push(t as u32);
                    slot_count.push(0);
                }
                let slot = slot_of_bucket[bucket];
                slot_of_token[t] = slot;
                slot_count[slot as usize] += 1;
            }
            slot_sum.clear();
            slot_sum.resize(slot_bucket.len() * dim, 0.0);
            simd::add_rows_into(&mut slot_sum, dim, tokens.as_slice(), &slot_of_token);
            let rep_out = &mut out[rep * buckets * p..(rep + 1) * buckets * p];
            let stride = self.project_batch(rep, &slot_sum, &mut projected);
            for (slot, &bucket) in slot_bucket.iter().enumerate() {
                let source = &projected[slot * stride..slot * stride + p];
                let target = &mut rep_out[bucket * p..(bucket + 1) * p];
                if side == Side::Document {
                    let count = slot_count[slot] as f32;
                    target.iter_mut().zip(source).for_each(|(t, v)| *t = v / count);
                } else {
                    target.copy_from_slice(source);
                }
            }
            if side == Side::Document && params.fill_empty && k > 0 && slot_bucket.len() < buckets {
                // The nearest token by Hamming distance, first (lowest index) on ties, as in the
                // reference. Tokens of one slot share a code, so only each slot's first token can
                // win: search slots, keyed by (distance, first token).
                const _: () = assert!(crate::limits::MAX_TOKENS_PER_DOC < 1 << 24);
                fill_from.clear();
                fill_tokens.clear();
                fill_row_of_slot.clear();
                fill_row_of_slot.resize(slot_bucket.len(), u32::MAX);
                for bucket in (0..buckets).filter(|&b| slot_of_bucket[b] == u32::MAX) {
                    let pattern = (bucket ^ (bucket >> 1)) as u32;
                    // Key = distance in the high bits, first token (< 2^24) in the low bits.
                    let mut best_key = u32::MAX;
                    let mut nearest = 0;
                    for (s, (&code, &first)) in slot_code.iter().zip(&slot_first_token).enumerate() {
                        let key = ((code ^ pattern).count_ones() << 24) | first;
                        if key < best_key {
                            best_key = key;
                            nearest = s;
                        }
                    }
                    if fill_row_of_slot[nearest] == u32::MAX {
                        fill_row_of_slot[nearest] = (fill_tokens.len() / dim) as u32;
                        fill_tokens.extend_from_slice(tokens.row(slot_first_token[nearest] as usize));
                    }
                    fill_from.push((bucket, nearest));
                }
                let stride = self.project_batch(rep, &fill_tokens, &mut projected);
                for &(bucket, slot) in &fill_from {
                    let row = fill_row_of_slot[slot] as usize;
                    rep_out[bucket * p..(bucket + 1) * p].copy_from_slice(&projected[row * stride..row * stride + p]);
                }
            }
            for &bucket in &slot_bucket {
                slot_of_bucket[bucket] = u32::MAX;
            }
        }
    }

    /// SimHash codes of every token in every repetition (`[token][repetition]`), signs made
    /// CPU-independent as described in `encode_raw`.
    fn simhash_codes(&self, tokens: &TokenMatrix<'_>) -> Vec<u32> {
        let (dim, k, reps) = (self.params.dim as usize, self.params.k_sim as usize, self.params.r_reps as usize);
        let n = tokens.rows();
        let mut codes = vec![0u32; n * reps];
        if k > 0 {
            let cols = self.simhash_cols;
            let mut sketch = vec![0f32; n * cols];
            simd::mat_mul(tokens.as_slice(), dim, &self.simhash, cols, &mut sketch, simd::Rounding::Fused);
            let gamma = 4.0 * (dim as f32 + 2.0) * f32::EPSILON / 2.0;
            for (t, row) in sketch.chunks_exact(cols).enumerate() {
                let x = tokens.row(t);
                let margin = gamma * simd::dot(x, x).sqrt();
                for rep in 0..reps {
                    let mut code = 0u32;
                    #[allow(clippy::needless_range_loop)] // c is a column of three arrays
                    for c in rep * k..rep * k + k {
                        let v = row[c];
                        let positive = if v.abs() > margin * self.simhash_col_norms[c] {
                            v > 0.0
                        } else {
                            let exact: f64 = x
                                .iter()
                                .enumerate()
                                .map(|(i, &xi)| xi as f64 * self.simhash[i * cols + c] as f64)
                                .sum();
                            exact > 0.0
                        };
                        code = (code << 1) | positive as u32;
                    }
                    codes[t * reps + rep] = code;
                }
            }
        }

        codes
    }

    /// Projects every `dim`-wide row of `inputs` with repetition `rep`'s projection into `out`
    /// (resized), and returns the row stride of `out` (the first `d_proj` values of each row count).
    fn project_batch(&self, rep: usize, inputs: &[f32], out: &mut Vec<f32>) -> usize {
        let dim = self.params.dim as usize;
        let rows = inputs.len() / dim;
        match &self.projection {
            ProjectionDraws::Identity => {
                out.clear();
                out.extend_from_slice(inputs);
                dim
            }
            ProjectionDraws::Matrix { matrix, padded_cols, sketch } => {
                let cols = *padded_cols;
                out.clear();
                out.resize(rows * cols, 0.0);
                // Count Sketch entries are ±1 or 0, so every product is exact and fused rounding
                // gives the same bits as separate rounding, at half the instructions. The dense
                // ±1/√d_proj products are inexact: keep them CPU-independent.
                let rounding = if sketch.is_some() { simd::Rounding::Fused } else { simd::Rounding::Separate };
                if rows > 0 {
                    simd::mat_mul(inputs, dim, &matrix[rep * dim * cols..(rep + 1) * dim * cols], cols, out, rounding);
                }
                cols
            }
        }
    }
}

/// The reference's bucket index of a token whose sign bits (first projection most significant)
/// are `code`: the fold `idx = (idx << 1) + (bit ^ (idx & 1))`, i.e. the inverse Gray code.
pub fn bucket_of_code(code: u32) -> u32 {
    let mut index = code;
    let mut shift = 1;
    while shift < 32 {
        index ^= index >> shift;
        shift <<= 1;
    }
    index
}

/// The reference's fold over sign bits, listed first projection first.
pub fn bucket_of_bits(bits: &[bool]) -> u32 {
    bits.iter().fold(0u32, |idx, &bit| (idx << 1) + (bit as u32 ^ (idx & 1)))
}

/// Hamming distance between sign bits `bits` (first projection first) and bucket `index`'s pattern.
pub fn distance_to_bucket(bits: &[bool], index: u32) -> u32 {
    let code = bits.iter().fold(0u32, |c, &b| (c << 1) | b as u32);
    (code ^ (index ^ (index >> 1))).count_ones()
}

/// `SimHashMatrixFromSeed`: a `dim × k` row-major matrix of standard normals, drawn column by
/// column (Eigen's column-major fill order).
fn simhash_matrix_from_seed(seed: u32, dim: usize, k: usize) -> Vec<f32> {
    let mut rng = Mt19937::new(seed);
    let mut normal = StandardNormal::new();
    let mut out = vec![0f32; dim * k];
    for col in 0..k {
        for row in 0..dim {
            out[row * k + col] = normal.sample(&mut rng);
        }
    }
    out
}

/// The reference's Count Sketch draws (`AMSProjectionMatrixFromSeed`, `ApplyCountSketchToVector`):
/// for each input coordinate, an output coordinate in `0..out_dim`, then a ±1 sign.
fn count_sketch_draws(seed: u32, in_dim: usize, out_dim: u32) -> (Vec<u32>, Vec<f32>) {
    let mut rng = Mt19937::new(seed);
    let mut target = Vec::with_capacity(in_dim);
    let mut sign = Vec::with_capacity(in_dim);
    for _ in 0..in_dim {
        target.push(rng.below(out_dim));
        sign.push(if rng.coin() { 1.0 } else { -1.0 });
    }
    (target, sign)
}

/// FNV-1a, 64-bit: a pinned, dependency-free hash for fingerprints (not for security).
struct Fnv64(u64);

impl Fnv64 {
    fn new() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// A Count Sketch from `in_dim` to `out_dim` values with the reference's draws (seeded
/// `mt19937`): `out[target_i] += sign_i · input_i`. Inner products are preserved in expectation.
#[derive(Clone, Debug)]
pub struct CountSketch {
    out_dim: usize,
    target: Vec<u32>,
    sign: Vec<f32>,
}

impl CountSketch {
    /// Draws the sketch.
    pub fn new(in_dim: usize, out_dim: u32, seed: u32) -> Result<Self> {
        if out_dim == 0 || out_dim as usize > MAX_FDE_DIM {
            return Err(Error::invalid_param("sketch_dim", format!("{out_dim} is outside 1..={MAX_FDE_DIM}")));
        }
        let (target, sign) = count_sketch_draws(seed, in_dim, out_dim);
        Ok(CountSketch { out_dim: out_dim as usize, target, sign })
    }

    /// Output dimension.
    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// Sketches `input` (length `in_dim`) into `out` (length `out_dim`, overwritten).
    pub fn apply(&self, input: &[f32], out: &mut [f32]) {
        assert!(input.len() == self.target.len() && out.len() == self.out_dim);
        out.fill(0.0);
        for ((&x, &t), &s) in input.iter().zip(&self.target).zip(&self.sign) {
            out[t as usize] += s * x;
        }
    }
}

/// Applies the reference's final Count Sketch to `input` (exposed for the golden tests and
/// for `quiver inspect`): `out[target_i] += sign_i · input_i`.
pub fn apply_count_sketch(input: &[f32], out_dim: u32, seed: u32) -> Result<Vec<f32>> {
    let sketch = CountSketch::new(input.len(), out_dim, seed)?;
    let mut out = vec![0f32; out_dim as usize];
    sketch.apply(input, &mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_index_is_the_reference_fold() {
        for k in 0..8u32 {
            for code in 0..(1u32 << k) {
                let bits: Vec<bool> = (0..k).map(|t| code >> (k - 1 - t) & 1 == 1).collect();
                assert_eq!(bucket_of_code(code), bucket_of_bits(&bits), "k={k} code={code:b}");
            }
        }
    }

    #[test]
    fn validation_names_the_parameter() {
        let mut p = FdeParams::new(128);
        p.k_sim = 31;
        assert!(matches!(p.validate(), Err(Error::InvalidParameter { name: "k_sim", .. })));
        let mut p = FdeParams::new(128);
        p.r_reps = 0;
        assert!(matches!(p.validate(), Err(Error::InvalidParameter { name: "r_reps", .. })));
        let mut p = FdeParams::new(128);
        p.projection = Projection::CountSketch { d_proj: 0 };
        assert!(matches!(p.validate(), Err(Error::InvalidParameter { name: "d_proj", .. })));
        let mut p = FdeParams::new(128);
        p.k_sim = 20;
        assert!(p.validate().is_err(), "20 · 2^20 · 16 exceeds the FDE cap");
        assert!(FdeParams::new(0).validate().is_err());
        assert_eq!(FdeParams::new(128).fde_dim(), 10_240);
    }

    #[test]
    fn wrong_dimension_is_an_error_not_a_panic() {
        let enc = FdeEncoder::new(FdeParams::new(8)).unwrap();
        let tokens = TokenMatrix::new(&[0.5; 12], 4).unwrap();
        assert!(matches!(enc.encode_query(&tokens), Err(Error::InvalidInput(_))));
        let tokens = TokenMatrix::new(&[0.5; 16], 8).unwrap();
        let mut short = vec![0f32; 3];
        assert!(enc.encode_document_into(&tokens, &mut short).is_err());
    }

    /// Tokens built to lie almost exactly on a SimHash hyperplane get the sign of the f64 product:
    /// the fused f32 products never decide a sign they cannot be sure of.
    #[test]
    fn near_zero_projections_take_the_exact_sign() {
        let params = FdeParams { dim: 64, k_sim: 3, r_reps: 4, ..FdeParams::new(64) };
        let enc = FdeEncoder::new(params).unwrap();
        let mut rng = crate::encode::rng::SplitMix64::new(9);
        let mut tokens = Vec::new();
        let mut expected = Vec::new();
        for t in 0..200 {
            let rep = t % 4;
            let bit = (t / 4) % 3;
            let g: Vec<f64> = enc.simhash_matrix(rep).chunks(3).map(|row| row[bit] as f64).collect();
            let y: Vec<f64> = (0..64).map(|_| rng.normal()).collect();
            let gy: f64 = g.iter().zip(&y).map(|(a, b)| a * b).sum();
            let gg: f64 = g.iter().map(|a| a * a).sum();
            // Remove the component along g, then add back a tiny, signed one.
            let eps = [1e-9, -1e-9, 1e-7, -1e-7, 0.0][t % 5];
            let x: Vec<f32> = y.iter().zip(&g).map(|(yi, gi)| (yi - gy / gg * gi + eps * gi) as f32).collect();
            tokens.extend_from_slice(&x);
            expected.push((rep, bit, x));
        }
        let matrix = TokenMatrix::new(&tokens, 64).unwrap();
        let codes = enc.simhash_codes(&matrix);
        for (t, (rep, bit, x)) in expected.iter().enumerate() {
            let g = enc.simhash_matrix(*rep);
            let exact: f64 = x.iter().zip(g.chunks(3)).map(|(xi, row)| *xi as f64 * row[*bit] as f64).sum();
            let got = codes[t * 4 + rep] >> (2 - bit) & 1 == 1;
            assert_eq!(got, exact > 0.0, "token {t}: exact {exact:e}");
        }
    }
}
