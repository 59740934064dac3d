//! The token codebook: k-means centroids over token vectors, one centroid id per stored token,
//! and, for the residual codecs, each token's residual `x − c(x)` quantised to `b` bits per
//! dimension (ColBERTv2's compression, which PLAID builds on).
//!
//! Three uses share it:
//! - **Residual storage** (`residual1/2/4`): a token is stored as its residual codes, with its
//!   centroid id in the segment's token-codes section; decoding is `c_d + w_d[code]` per
//!   dimension `d`, where each dimension has its own `2^b` buckets, a Lloyd-Max scalar quantizer
//!   of its training residuals started from equal-count buckets (`scalar_quantizer`).
//!   ColBERTv2 shares one set of quantile buckets across dimensions; on scifact-mini (recall@10
//!   against exact MaxSim, `quiver bench --storage residual2`) per-dimension quantile buckets
//!   raised residual2 from 0.90 to 0.922, and Lloyd-Max to 0.946 (residual4 0.968 → 0.980).
//!   Decoding goes through a table per residual byte position (`256 × 8/b` values), so one lookup
//!   yields `8/b` dimensions.
//! - **The cheap scoring stage** (centroid interaction, PLAID): with a per-query table
//!   `T[c][i] = ⟨q_i, C_c⟩`, a document scores `Σ_i max_j T[c(d_j)][i]`, one table row per
//!   document token, no dot products. Every codec stores centroid ids, so every codec has it.
//! - **Inverted lists** from centroid to documents, the second candidate source for short queries.
//!
//! Training is deterministic for a given sample and seed (Lloyd's k-means from sampled points,
//! emptied clusters re-seeded with the worst-served point).

use crate::encode::pq::sample_indices;
use crate::encode::rng::SplitMix64;
use crate::encode::simd::{self, Isa, Rounding, MAT_MUL_COL_BLOCK};
use crate::error::{Error, Result};

/// Largest centroid count (ids are `u16`).
pub const MAX_TOKEN_CENTROIDS: usize = 1 << 16;
/// Smallest centroid count (the assignment kernel works on blocks of 16 centroids).
pub const MIN_TOKEN_CENTROIDS: usize = MAT_MUL_COL_BLOCK;
/// Length of the serialised codebook's fixed header.
pub const CODEBOOK_HEADER_LEN: usize = 16;
/// Residual values kept for the bucket quantiles (a strided subsample beyond this).
const MAX_QUANTILE_VALUES: usize = 1 << 20;
/// Tokens assigned per matrix product (bounds the dot-product scratch to `rows × k` floats); a
/// multiple of [`simd::MAXSIM_BLOCK_LANES`], the bf16 screen's block.
const ASSIGN_ROWS: usize = 64;
/// Bound on `|bf16 dot − exact dot| / (‖x‖·‖c‖)` in the bf16 screen of the assignment: each factor
/// rounded to bf16 is off by at most 2⁻⁸ of itself (8 significand bits, round to nearest), so a
/// product by at most about 2⁻⁷ of |xᵢ·cᵢ|, and Σ|xᵢ·cᵢ| ≤ ‖x‖·‖c‖ (Cauchy–Schwarz). The f32
/// accumulation adds far less; 2⁻⁶ leaves a factor of two for it.
const BF16_SCREEN_ERROR: f32 = 1.0 / 64.0;
const _: () = assert!(ASSIGN_ROWS.is_multiple_of(simd::MAXSIM_BLOCK_LANES) && ASSIGN_ROWS == simd::SCREEN_LANES);

/// How a token codebook is trained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenCodebookParams {
    /// Centroids, a multiple of 16 in `16..=65536`; `None`: [`auto_centroids`] of the token count.
    pub centroids: Option<u32>,
    /// Lloyd iterations (stops early when no assignment changes).
    pub iterations: u32,
    /// Tokens sampled for training.
    pub max_training_tokens: u32,
    /// Sampling and initialisation seed.
    pub seed: u64,
}

impl Default for TokenCodebookParams {
    /// Automatic centroid count, 8 iterations over at most 65,536 sampled tokens.
    fn default() -> Self {
        TokenCodebookParams { centroids: None, iterations: 8, max_training_tokens: 65_536, seed: 0x7c0d_ebee }
    }
}

impl TokenCodebookParams {
    /// Checks every field.
    pub fn validate(&self) -> Result<()> {
        if let Some(k) = self.centroids {
            let k = k as usize;
            if !(MIN_TOKEN_CENTROIDS..=MAX_TOKEN_CENTROIDS).contains(&k) || !k.is_multiple_of(MAT_MUL_COL_BLOCK) {
                return Err(Error::invalid_param(
                    "token_codebook.centroids",
                    format!("{k} is not a multiple of 16 in {MIN_TOKEN_CENTROIDS}..={MAX_TOKEN_CENTROIDS}"),
                ));
            }
        }
        if self.iterations == 0 || self.iterations > 100 {
            return Err(Error::invalid_param(
                "token_codebook.iterations",
                format!("{} is outside 1..=100", self.iterations),
            ));
        }
        if self.max_training_tokens < MIN_TOKEN_CENTROIDS as u32 || self.max_training_tokens > 4_000_000 {
            return Err(Error::invalid_param(
                "token_codebook.max_training_tokens",
                format!("{} is outside 16..=4000000", self.max_training_tokens),
            ));
        }
        Ok(())
    }
}

/// The centroid count used when none is set: PLAID's rule, the power of two at or below
/// `16·√tokens`, within `16..=4096`. Measured (`quiver bench`, recall@10 after the cheap stage
/// and an exact rerank of 100): nfcorpus-mini 0.84 / 0.92 / 0.97 and scifact-mini cut to 1-token
/// queries 0.96 / 0.98 / 0.99 with 1,024 / 2,048 / 4,096 centroids; the cap bounds the
/// assignment cost (one dot product per centroid per stored token).
pub fn auto_centroids(tokens: usize) -> usize {
    let target = 16.0 * (tokens.max(1) as f64).sqrt();
    let pow = (target.log2().floor() as i32).clamp(4, 12);
    1usize << pow
}

/// Tokens per parallel assignment task.
const ASSIGN_TASK: usize = 1024;

/// Centroids plus (for `bits > 0`) residual bucket cutoffs and weights. Immutable once built.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenCodebook {
    dim: usize,
    k: usize,
    bits: u8,
    /// `k × dim`, row-major.
    centroids: Vec<f32>,
    /// `½‖c‖²` per centroid.
    half_norms: Vec<f32>,
    /// Per dimension, `2^bits − 1` ascending cutoffs (`dim × (2^bits − 1)`): a residual value's
    /// code is the number of its dimension's cutoffs below it.
    cutoffs: Vec<f32>,
    /// Per dimension, `2^bits` decoded values, one per code (`dim × 2^bits`).
    weights: Vec<f32>,
    /// Per residual byte position, `256 × (8 / bits)` decoded values (`residual_bytes × 256 × 8/b`).
    byte_table: Vec<f32>,
    /// The training tokens were unit vectors, so decoded tokens are renormalised to unit length
    /// (measured on scifact-mini: recall@10 against exact MaxSim 0.902 → 0.918 for residual2).
    unit_norm: bool,
    /// The centroids rounded to bf16 (`k × dim`), for the `vdpbf16ps` interaction table; empty where
    /// that kernel does not run ([`simd::bf16_dots_available`]). Derived from `centroids`.
    centroids_bf16: Vec<u16>,
}

impl TokenCodebook {
    /// Trains on `tokens` (`n × dim`, finite): k-means centroids, then residual buckets of `bits`
    /// (0: centroids only; 1, 2 or 4: a residual codec). Fewer tokens than centroids is allowed
    /// (centroids repeat); constant vectors give zero residuals.
    pub fn train(tokens: &[f32], dim: usize, bits: u8, params: &TokenCodebookParams) -> Result<Self> {
        params.validate()?;
        check_bits(dim, bits)?;
        if dim == 0 || !tokens.len().is_multiple_of(dim) || tokens.is_empty() {
            return Err(Error::InvalidInput(format!(
                "token codebook training needs at least one {dim}-dimensional token ({} values given)",
                tokens.len()
            )));
        }
        if tokens.iter().any(|v| !v.is_finite()) {
            return Err(Error::InvalidInput("token codebook training data holds a non-finite value".into()));
        }
        let n = tokens.len() / dim;
        let k = params.centroids.map_or_else(|| auto_centroids(n), |k| k as usize);
        let mut rng = SplitMix64::new(params.seed);
        let picked = sample_indices(n, params.max_training_tokens as usize, &mut rng);
        let mut sample = Vec::with_capacity(picked.len() * dim);
        for &i in &picked {
            sample.extend_from_slice(&tokens[i * dim..(i + 1) * dim]);
        }
        let init = sample_indices(picked.len(), k, &mut rng);
        let mut centroids = vec![0f32; k * dim];
        for c in 0..k {
            let p = init[c % init.len()];
            centroids[c * dim..(c + 1) * dim].copy_from_slice(&sample[p * dim..(p + 1) * dim]);
        }
        let m = picked.len();
        let mut assign = vec![0u16; m];
        let mut dist = vec![0f32; m];
        let mut previous = vec![u16::MAX; m];
        for _ in 0..params.iterations {
            let book = Self::from_parts(dim, 0, centroids.clone(), Vec::new(), Vec::new())?;
            book.assign_parallel(&sample, &mut assign, &mut dist);
            if assign == previous {
                break;
            }
            previous.copy_from_slice(&assign);
            let mut sums = vec![0f64; k * dim];
            let mut counts = vec![0u32; k];
            for (p, &a) in assign.iter().enumerate() {
                counts[a as usize] += 1;
                let row = &sample[p * dim..(p + 1) * dim];
                for (s, &v) in sums[a as usize * dim..(a as usize + 1) * dim].iter_mut().zip(row) {
                    *s += v as f64;
                }
            }
            for c in 0..k {
                if counts[c] > 0 {
                    for d in 0..dim {
                        centroids[c * dim + d] = (sums[c * dim + d] / counts[c] as f64) as f32;
                    }
                } else if m > k {
                    let (far, _) =
                        dist.iter().enumerate().fold((0, -1f32), |b, (i, &d)| if d > b.1 { (i, d) } else { b });
                    centroids[c * dim..(c + 1) * dim].copy_from_slice(&sample[far * dim..(far + 1) * dim]);
                    dist[far] = 0.0;
                }
            }
        }
        let book = Self::from_parts(dim, 0, centroids.clone(), Vec::new(), Vec::new())?;
        if bits == 0 {
            return Ok(book);
        }
        book.assign_parallel(&sample, &mut assign, &mut dist);
        let levels = 1usize << bits;
        let stride = (m * dim).div_ceil(MAX_QUANTILE_VALUES).max(1);
        let mut cutoffs = Vec::with_capacity(dim * (levels - 1));
        let mut weights = Vec::with_capacity(dim * levels);
        let mut residuals: Vec<f32> = Vec::with_capacity(m / stride + 1);
        for d in 0..dim {
            residuals.clear();
            residuals
                .extend((0..m).step_by(stride).map(|p| sample[p * dim + d] - centroids[assign[p] as usize * dim + d]));
            residuals.sort_by(f32::total_cmp);
            let (cuts, levels_of_d) = scalar_quantizer(&residuals, levels);
            weights.extend(levels_of_d);
            cutoffs.extend(cuts);
        }
        let unit = sample.chunks_exact(dim).all(|x| (x.iter().map(|v| v * v).sum::<f32>().sqrt() - 1.0).abs() < 1e-2);
        let mut book = Self::from_parts(dim, bits, centroids, cutoffs, weights)?;
        book.unit_norm = unit;
        Ok(book)
    }

    /// A codebook from its parts, checked (the shape every constructor and the decoder share).
    pub fn from_parts(dim: usize, bits: u8, centroids: Vec<f32>, cutoffs: Vec<f32>, weights: Vec<f32>) -> Result<Self> {
        check_bits(dim, bits)?;
        if dim == 0 || centroids.is_empty() || !centroids.len().is_multiple_of(dim) {
            return Err(Error::InvalidInput("token codebook: centroids are not whole rows".into()));
        }
        let k = centroids.len() / dim;
        if !(MIN_TOKEN_CENTROIDS..=MAX_TOKEN_CENTROIDS).contains(&k) || !k.is_multiple_of(MAT_MUL_COL_BLOCK) {
            return Err(Error::InvalidInput(format!("token codebook: {k} centroids (a multiple of 16 up to 65536)")));
        }
        let levels = if bits == 0 { 0 } else { 1usize << bits };
        if cutoffs.len() != dim * levels.saturating_sub(1) || weights.len() != dim * levels {
            return Err(Error::InvalidInput(format!(
                "token codebook: {} cutoffs and {} weights for {bits}-bit residuals",
                cutoffs.len(),
                weights.len()
            )));
        }
        if centroids.iter().chain(&cutoffs).chain(&weights).any(|v| !v.is_finite()) {
            return Err(Error::InvalidInput("token codebook: a non-finite value".into()));
        }
        if levels > 1 && cutoffs.chunks_exact(levels - 1).any(|c| c.windows(2).any(|w| w[0] > w[1])) {
            return Err(Error::InvalidInput("token codebook: residual cutoffs are not ascending".into()));
        }
        let half_norms: Vec<f32> =
            centroids.chunks_exact(dim).map(|row| 0.5 * row.iter().map(|v| v * v).sum::<f32>()).collect();
        let mut byte_table = Vec::new();
        if bits > 0 {
            let per = 8 / bits as usize;
            let mask = (1u32 << bits) - 1;
            byte_table.reserve(dim * 256);
            for pos in 0..dim / per {
                for byte in 0..256u32 {
                    for j in 0..per {
                        let d = pos * per + j;
                        byte_table.push(weights[d * levels + ((byte >> (j as u32 * bits as u32)) & mask) as usize]);
                    }
                }
            }
        }
        let centroids_bf16 = if simd::bf16_dots_available(dim) {
            centroids.iter().map(|&v| half::bf16::from_f32(v).to_bits()).collect()
        } else {
            Vec::new()
        };
        Ok(TokenCodebook {
            dim,
            k,
            bits,
            centroids,
            half_norms,
            cutoffs,
            weights,
            byte_table,
            unit_norm: false,
            centroids_bf16,
        })
    }

    /// Token dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of centroids.
    pub fn centroid_count(&self) -> usize {
        self.k
    }

    /// Residual bits per dimension (0: centroids only).
    pub fn bits(&self) -> u8 {
        self.bits
    }

    /// The centroids, `k × dim` row-major.
    pub fn centroids(&self) -> &[f32] {
        &self.centroids
    }

    /// Bytes of one token's residual codes (`dim × bits / 8`).
    pub fn residual_bytes(&self) -> usize {
        self.dim * self.bits as usize / 8
    }

    /// The nearest centroid (squared L2; first on ties) of every `dim`-wide row of `tokens`, one
    /// id per row into `ids`.
    pub fn assign(&self, tokens: &[f32], ids: &mut [u16]) -> Result<()> {
        self.check_tokens(tokens, ids)?;
        let mut dist = vec![0f32; ids.len()];
        self.assign_with_distance(tokens, ids, &mut dist);
        Ok(())
    }

    /// Bytes this codebook keeps in memory: centroids, their half norms, the residual buckets and
    /// the decode table.
    pub fn resident_bytes(&self) -> u64 {
        4 * (self.centroids.len()
            + self.half_norms.len()
            + self.cutoffs.len()
            + self.weights.len()
            + self.byte_table.len()) as u64
    }

    fn check_tokens(&self, tokens: &[f32], ids: &[u16]) -> Result<()> {
        if tokens.len() != ids.len() * self.dim {
            return Err(Error::InvalidInput(format!(
                "{} values are not {} tokens of dimension {}",
                tokens.len(),
                ids.len(),
                self.dim
            )));
        }
        Ok(())
    }

    /// [`TokenCodebook::assign`] in parallel tasks on the current rayon pool: the same ids, for
    /// many tokens at once (blocks of tokens share each pass over the centroids).
    pub fn assign_batch(&self, tokens: &[f32], ids: &mut [u16]) -> Result<()> {
        self.check_tokens(tokens, ids)?;
        let mut dist = vec![0f32; ids.len()];
        self.assign_parallel(tokens, ids, &mut dist);
        Ok(())
    }

    /// [`TokenCodebook::assign_with_distance`] in parallel tasks on the current rayon pool.
    fn assign_parallel(&self, tokens: &[f32], ids: &mut [u16], dist: &mut [f32]) {
        use rayon::prelude::*;
        let dim = self.dim;
        tokens
            .par_chunks(ASSIGN_TASK * dim)
            .zip(ids.par_chunks_mut(ASSIGN_TASK))
            .zip(dist.par_chunks_mut(ASSIGN_TASK))
            .for_each(|((t, i), d)| self.assign_with_distance(t, i, d));
    }

    /// [`TokenCodebook::assign`], also giving `‖x‖²/2 − max(⟨x, c⟩ − ‖c‖²/2)`, half the squared
    /// distance to the chosen centroid.
    ///
    /// With AVX-512 BF16 ([`simd::bf16_dots_available`]) the centroid scores are screened in bf16
    /// (`vdpbf16ps`, twice the multiply-adds of f32 per instruction) and every centroid the bf16
    /// rounding could have misranked is re-scored exactly, so the ids are the exact nearest
    /// centroids either way (see [`BF16_SCREEN_ERROR`]).
    fn assign_with_distance(&self, tokens: &[f32], ids: &mut [u16], dist: &mut [f32]) {
        let dim = self.dim;
        let rows = tokens.len() / dim;
        assert!(ids.len() == rows && dist.len() == rows, "one id per token");
        let screen = !self.centroids_bf16.is_empty();
        // centroids (k × dim) · tokensᵀ (dim × ASSIGN_ROWS): the token block stays in L1 while
        // the centroids stream through once per block.
        let mut tokens_t = vec![0f32; dim * ASSIGN_ROWS];
        let mut dots = vec![0f32; self.k * ASSIGN_ROWS];
        let mut near: Vec<(u32, u32)> = Vec::new();
        for start in (0..rows).step_by(ASSIGN_ROWS) {
            let end = (start + ASSIGN_ROWS).min(rows);
            let chunk = &tokens[start * dim..end * dim];
            tokens_t.fill(0.0);
            let mut sq_norms = [0f32; ASSIGN_ROWS];
            for (r, x) in chunk.chunks_exact(dim).enumerate() {
                sq_norms[r] = x.iter().map(|v| v * v).sum::<f32>();
                for (d, &v) in x.iter().enumerate() {
                    tokens_t[d * ASSIGN_ROWS + r] = v;
                }
            }
            let mut best = [f32::NEG_INFINITY; ASSIGN_ROWS];
            let mut best_c = [0u16; ASSIGN_ROWS];
            if screen {
                self.centroid_dots_bf16(&tokens_t, ASSIGN_ROWS, &mut dots);
                self.rescore_near_best(chunk, &dots, &sq_norms, &mut near, &mut best, &mut best_c);
            } else {
                simd::mat_mul(&self.centroids, dim, &tokens_t, ASSIGN_ROWS, &mut dots, Rounding::Fused);
                for (c, (row, &h)) in dots.chunks_exact(ASSIGN_ROWS).zip(&self.half_norms).enumerate() {
                    for r in 0..ASSIGN_ROWS {
                        let s = row[r] - h;
                        if s > best[r] {
                            best[r] = s;
                            best_c[r] = c as u16;
                        }
                    }
                }
            }
            for r in 0..end - start {
                ids[start + r] = best_c[r];
                dist[start + r] = (0.5 * sq_norms[r] - best[r]).max(0.0);
            }
        }
    }

    /// `out[c · lanes + l] = ⟨centroid c, column l of rows_t⟩` in bf16 (`vdpbf16ps`; only when
    /// `centroids_bf16` exists), for `rows_t` dimension-major (`dim × lanes`, `lanes` a multiple of
    /// 16), [`simd::MAXSIM_BLOCK_LANES`] columns (or the last 16) per kernel call.
    fn centroid_dots_bf16(&self, rows_t: &[f32], lanes: usize, out: &mut [f32]) {
        let dim = self.dim;
        let mut col = 0;
        while col < lanes {
            let width = (lanes - col).min(simd::MAXSIM_BLOCK_LANES);
            let mut block = vec![0f32; dim * width];
            for d in 0..dim {
                block[d * width..(d + 1) * width].copy_from_slice(&rows_t[d * lanes + col..d * lanes + col + width]);
            }
            let pairs = simd::bf16_pair_block(&block, width, dim);
            simd::dots_bf16(Isa::detect(), &pairs, width, dim, &self.centroids_bf16, out, lanes, col);
            col += width;
        }
    }

    /// The exact nearest centroid of each token of `chunk` from bf16 scores `dots` (`k ×
    /// ASSIGN_ROWS`): the best bf16 score of each token, then every centroid within twice the
    /// error bound of it ([`BF16_SCREEN_ERROR`]) may be the exact best, and those are re-scored in
    /// f32, in ascending ids so that ties go to the lowest (as the exact scan).
    fn rescore_near_best(
        &self,
        chunk: &[f32],
        dots: &[f32],
        sq_norms: &[f32; ASSIGN_ROWS],
        near: &mut Vec<(u32, u32)>,
        best: &mut [f32; ASSIGN_ROWS],
        best_c: &mut [u16; ASSIGN_ROWS],
    ) {
        let dim = self.dim;
        let max_norm = (2.0 * self.half_norms.iter().fold(0f32, |m, &h| m.max(h))).sqrt();
        let mut top = [f32::NEG_INFINITY; ASSIGN_ROWS];
        simd::row_maxima(dots, &self.half_norms, &mut top);
        // Rows past the chunk's tokens keep an infinite floor: nothing is near them.
        let mut floor = [f32::INFINITY; ASSIGN_ROWS];
        for r in 0..chunk.len() / dim {
            let bound = BF16_SCREEN_ERROR * sq_norms[r].sqrt() * max_norm + f32::MIN_POSITIVE;
            floor[r] = top[r] - 2.0 * bound;
        }
        near.clear();
        simd::rows_near(dots, &self.half_norms, &floor, near);
        for &(c, r) in near.iter() {
            let (c, r) = (c as usize, r as usize);
            let s =
                simd::dot(&chunk[r * dim..(r + 1) * dim], &self.centroids[c * dim..(c + 1) * dim]) - self.half_norms[c];
            if s > best[r] {
                best[r] = s;
                best_c[r] = c as u16;
            }
        }
    }

    /// The residual codes of `token` against centroid `id` into `out` (`residual_bytes()` long).
    /// Errors for a codebook without residuals, wrong lengths or an id beyond the codebook.
    pub fn encode_residual(&self, token: &[f32], id: u16, out: &mut [u8]) -> Result<()> {
        let bits = self.bits as usize;
        if bits == 0 || token.len() != self.dim || out.len() != self.residual_bytes() || id as usize >= self.k {
            return Err(Error::InvalidInput(format!(
                "residual encoding of a {}-value token against centroid {id} into {} bytes (codebook: {} \
                 centroids of dimension {}, {bits}-bit residuals)",
                token.len(),
                out.len(),
                self.k,
                self.dim
            )));
        }
        out.fill(0);
        let c = &self.centroids[id as usize * self.dim..(id as usize + 1) * self.dim];
        for (d, (&x, &cv)) in token.iter().zip(c).enumerate() {
            let r = x - cv;
            let levels = 1usize << bits;
            let cuts = &self.cutoffs[d * (levels - 1)..(d + 1) * (levels - 1)];
            let code = cuts.iter().take_while(|&&t| t < r).count() as u8;
            out[d * bits / 8] |= code << ((d * bits) % 8);
        }
        Ok(())
    }

    /// Decodes one token (`id`, its residual codes) into `out` (`dim` long). With `bits == 0` the
    /// token is its centroid.
    pub fn decode(&self, id: u16, codes: &[u8], out: &mut [f32]) -> Result<()> {
        self.decode_many(&[id], codes, out)
    }

    /// Decodes `ids.len()` tokens whose residual codes are consecutive in `codes`. A centroid id
    /// beyond the codebook is an error.
    pub fn decode_many(&self, ids: &[u16], codes: &[u8], out: &mut [f32]) -> Result<()> {
        let rb = self.residual_bytes();
        if codes.len() != ids.len() * rb || out.len() != ids.len() * self.dim {
            return Err(Error::InvalidInput(format!(
                "decoding {} tokens needs {} code bytes and {} outputs, got {} and {}",
                ids.len(),
                ids.len() * rb,
                ids.len() * self.dim,
                codes.len(),
                out.len()
            )));
        }
        if let Some(&bad) = ids.iter().find(|&&c| c as usize >= self.k) {
            return Err(Error::InvalidInput(format!(
                "centroid id {bad} is beyond the codebook's {} centroids",
                self.k
            )));
        }
        if self.bits == 0 {
            for (i, &id) in ids.iter().enumerate() {
                let c = &self.centroids[id as usize * self.dim..(id as usize + 1) * self.dim];
                out[i * self.dim..(i + 1) * self.dim].copy_from_slice(c);
            }
            return Ok(());
        }
        let src = simd::ResidualCodes {
            bits: self.bits,
            table: &self.byte_table,
            weights: &self.weights,
            centroids: &self.centroids,
            dim: self.dim,
            ids,
            codes,
        };
        simd::decode_residuals(src, out);
        if self.unit_norm {
            // Renormalised in one pass over the decoded rows (`simd::normalize_rows`): a per-row
            // dot product and scaling loop cost twice the AVX-512 decoding itself (`perf`).
            simd::normalize_rows(out, self.dim);
        }
        Ok(())
    }

    /// The serialised codebook (storage-format.md, "Token centroids").
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(CODEBOOK_HEADER_LEN + 4 * (self.centroids.len() + 2 * self.weights.len()));
        out.extend_from_slice(&(self.k as u32).to_le_bytes());
        out.extend_from_slice(&(self.dim as u32).to_le_bytes());
        out.push(self.bits);
        out.push(self.unit_norm as u8);
        out.extend_from_slice(&[0u8; 6]);
        for v in self.centroids.iter().chain(&self.cutoffs).chain(&self.weights) {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Parses [`TokenCodebook::to_bytes`] output, checking every field; `dim` is the segment's.
    pub fn from_bytes(bytes: &[u8], dim: usize) -> std::result::Result<Self, String> {
        if bytes.len() < CODEBOOK_HEADER_LEN {
            return Err(format!("{} bytes is shorter than the codebook header", bytes.len()));
        }
        let k = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        let stored_dim = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
        let bits = bytes[8];
        let flags = bytes[9];
        if flags > 1 || bytes[10..CODEBOOK_HEADER_LEN].iter().any(|&b| b != 0) {
            return Err("reserved codebook bytes are not zero".into());
        }
        if stored_dim != dim {
            return Err(format!("codebook of {stored_dim}-dimensional centroids in a {dim}-dimensional segment"));
        }
        if !(MIN_TOKEN_CENTROIDS..=MAX_TOKEN_CENTROIDS).contains(&k) {
            return Err(format!("{k} centroids is outside {MIN_TOKEN_CENTROIDS}..={MAX_TOKEN_CENTROIDS}"));
        }
        if !matches!(bits, 0 | 1 | 2 | 4) {
            return Err(format!("{bits}-bit residuals (0, 1, 2 or 4)"));
        }
        let levels = if bits == 0 { 0 } else { 1usize << bits };
        let values = k * dim + dim * (levels.saturating_sub(1) + levels);
        if bytes.len() != CODEBOOK_HEADER_LEN + 4 * values {
            return Err(format!(
                "codebook of {} bytes, expected {} for {k} × {dim} centroids and {bits}-bit residuals",
                bytes.len(),
                CODEBOOK_HEADER_LEN + 4 * values
            ));
        }
        let floats: Vec<f32> = bytes[CODEBOOK_HEADER_LEN..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let (centroids, rest) = floats.split_at(k * dim);
        let (cutoffs, weights) = rest.split_at(dim * levels.saturating_sub(1));
        let mut book = Self::from_parts(dim, bits, centroids.to_vec(), cutoffs.to_vec(), weights.to_vec())
            .map_err(|e| e.to_string())?;
        if flags == 1 && bits == 0 {
            return Err("the unit-norm flag is set without residuals".into());
        }
        book.unit_norm = flags == 1;
        Ok(book)
    }

    /// The centroid-interaction table of `query` (`rows × dim`).
    pub fn interaction_table(&self, query: &[f32]) -> CentroidTable {
        let dim = self.dim;
        let rows = query.len() / dim;
        let lanes = rows.div_ceil(MAT_MUL_COL_BLOCK).max(1) * MAT_MUL_COL_BLOCK;
        let mut query_t = vec![0f32; dim * lanes];
        for (i, row) in query.chunks_exact(dim).enumerate() {
            for (d, &v) in row.iter().enumerate() {
                query_t[d * lanes + i] = v;
            }
        }
        let mut table = vec![0f32; self.k * lanes];
        if !self.centroids_bf16.is_empty() {
            // AVX-512 BF16: the table only ranks candidates for the exact stage, so bf16's 8-bit
            // mantissa costs nothing measurable (the kernel issue's note) and the product runs at
            // 2.5x.
            self.centroid_dots_bf16(&query_t, lanes, &mut table);
        } else if rows * 4 <= lanes {
            // Mostly padding (a 1-4 token query): one dot product per centroid and real token
            // instead of a 16-column matrix product.
            for (c, centroid) in self.centroids.chunks_exact(dim).enumerate() {
                for (i, q) in query.chunks_exact(dim).enumerate() {
                    table[c * lanes + i] = simd::dot(centroid, q);
                }
            }
        } else {
            simd::mat_mul(&self.centroids, dim, &query_t, lanes, &mut table, Rounding::Fused);
        }
        CentroidTable { rows, lanes, k: self.k, table }
    }
}

/// Lloyd-Max refinements of a dimension's residual buckets after the quantile start.
const SCALAR_QUANTIZER_ITERATIONS: usize = 25;

/// The `levels`-bucket scalar quantizer of one dimension's training residuals (`sorted`,
/// ascending, non-empty): `levels − 1` ascending cutoffs and `levels` decoded values.
///
/// It starts from equal-count buckets (quantile cutoffs, each bucket decoding to its mean, the
/// ColBERTv2 codec) and refines them by Lloyd-Max: every cutoff moves to the midpoint of its two
/// buckets' values and every value to its bucket's mean, which lowers the squared error at each
/// step. Residuals are peaked around zero with long tails, where equal-count buckets waste codes
/// on the crowded middle: for a Gaussian, 2 bits give 0.140σ² with quantiles and 0.118σ² with
/// Lloyd-Max. Measured on scifact-mini (`quiver bench --storage residual2`, recall@10 against
/// exact MaxSim on the original vectors): 0.922 with the quantile buckets, 0.946 refined.
fn scalar_quantizer(sorted: &[f32], levels: usize) -> (Vec<f32>, Vec<f32>) {
    let n = sorted.len();
    let quantile = |q: f64| sorted[((q * n as f64) as usize).min(n - 1)];
    let mut cuts: Vec<f32> = (1..levels).map(|j| quantile(j as f64 / levels as f64)).collect();
    // Prefix sums make a bucket's mean two lookups.
    let mut prefix = Vec::with_capacity(n + 1);
    prefix.push(0f64);
    for &r in sorted {
        prefix.push(prefix.last().copied().unwrap_or(0.0) + r as f64);
    }
    // A value's code is the number of cutoffs strictly below it, so bucket j holds the values in
    // (cuts[j-1], cuts[j]].
    let bounds = |cuts: &[f32]| -> Vec<usize> {
        let mut b = Vec::with_capacity(levels + 1);
        b.push(0);
        b.extend(cuts.iter().map(|&t| sorted.partition_point(|&r| r <= t)));
        b.push(n);
        b
    };
    let mut values: Vec<f32> = (0..levels).map(|j| quantile((j as f64 + 0.5) / levels as f64)).collect();
    for iteration in 0..=SCALAR_QUANTIZER_ITERATIONS {
        let b = bounds(&cuts);
        for j in 0..levels {
            let (lo, hi) = (b[j], b[j + 1]);
            if hi > lo {
                values[j] = ((prefix[hi] - prefix[lo]) / (hi - lo) as f64) as f32;
            }
        }
        if iteration == SCALAR_QUANTIZER_ITERATIONS {
            break;
        }
        let moved: Vec<f32> = values.windows(2).map(|w| 0.5 * (w[0] + w[1])).collect();
        if moved == cuts {
            break;
        }
        cuts = moved;
    }
    (cuts, values)
}

impl TokenCodebook {
    /// True when decoding renormalises tokens (the training tokens were unit vectors).
    pub fn unit_norm(&self) -> bool {
        self.unit_norm
    }
}

fn check_bits(dim: usize, bits: u8) -> Result<()> {
    if !matches!(bits, 0 | 1 | 2 | 4) {
        return Err(Error::invalid_param("storage", format!("{bits}-bit residuals are not offered (1, 2 or 4)")));
    }
    if bits > 0 && !(dim * bits as usize).is_multiple_of(8) {
        return Err(Error::invalid_param(
            "storage",
            format!("{dim}-dimensional tokens do not pack into whole bytes at {bits} bits per dimension"),
        ));
    }
    Ok(())
}

/// Reusable buffers of [`RefinedTable::score`] (one per thread of scoring).
#[derive(Debug, Default)]
pub struct RefineScratch {
    refined: Vec<usize>,
    maxes: Vec<f32>,
    dots: Vec<f32>,
}

/// A query's centroid-interaction table: `T[c][i] = ⟨q_i, C_c⟩`, query lanes padded to 16.
#[derive(Clone, Debug)]
pub struct CentroidTable {
    rows: usize,
    lanes: usize,
    k: usize,
    table: Vec<f32>,
}

impl CentroidTable {
    /// Query tokens.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// `⟨q_i, C_c⟩` for every query token `i`, the centroids the segment may hold.
    pub fn centroid_count(&self) -> usize {
        self.k
    }

    /// The query token's best centroids: the `n` highest `⟨q_i, C_c⟩`, for every `i`, as one
    /// deduplicated list.
    pub fn top_centroids(&self, n: usize) -> Vec<u16> {
        let n = n.min(self.k);
        if n == 0 {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(n * self.rows);
        // Per query token, the best `n` kept sorted in a small list (n ≤ MAX_PROBE, usually ≤ 8):
        // one comparison per centroid against the current n-th best.
        let mut best: Vec<(f32, u16)> = Vec::with_capacity(n + 1);
        for i in 0..self.rows {
            best.clear();
            for c in 0..self.k {
                let s = self.table[c * self.lanes + i];
                if best.len() == n && s <= best[n - 1].0 {
                    continue;
                }
                let at = best.iter().position(|b| s > b.0).unwrap_or(best.len());
                best.insert(at, (s, c as u16));
                best.truncate(n);
            }
            out.extend(best.iter().map(|b| b.1));
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The table for [`RefinedTable::score`], where the tokens of `centroids` are scored exactly:
    /// their rows set to −∞ (so they count only through their exact products) and flagged. Ids
    /// beyond the table are ignored.
    pub fn refined(&self, centroids: &[u16]) -> RefinedTable {
        let mut table = self.clone();
        let mut flagged = vec![false; self.k];
        for &c in centroids {
            if let Some(row) = table.table.get_mut(c as usize * self.lanes..(c as usize + 1) * self.lanes) {
                row.fill(f32::NEG_INFINITY);
                flagged[c as usize] = true;
            }
        }
        RefinedTable { table, flagged }
    }

    /// Centroid interaction: `Σ_i max_j T[ids[j]][i]` (0 for an empty document). An id beyond the
    /// table is an error (a damaged token-codes section), never a wrong score.
    pub fn score(&self, ids: &[u16]) -> Result<f32> {
        simd::centroid_interaction(&self.table, self.lanes, self.rows, ids)
            .ok_or_else(|| Error::InvalidInput(format!("a centroid id is beyond the codebook's {} centroids", self.k)))
    }
}

/// A query's centroid-interaction table in which the tokens of some centroids are scored exactly
/// ([`CentroidTable::refined`]).
///
/// With one or two query tokens every document in a probed centroid's inverted list has the same
/// centroid-interaction score, so that score cannot choose among them; the exact products of the
/// few tokens in the probed centroids can.
#[derive(Clone, Debug)]
pub struct RefinedTable {
    /// The table with the flagged centroids' rows at −∞.
    table: CentroidTable,
    /// One flag per centroid: its tokens are scored exactly.
    flagged: Vec<bool>,
}

impl RefinedTable {
    /// Centroid interaction in which a document token of a flagged centroid takes part with its
    /// exact products `⟨q_i, d_j⟩` in place of its centroid's row, the others with their
    /// centroid's row: `Σ_i max_j`, as [`CentroidTable::score`]. `exact(tokens, out)` writes into
    /// `out[..rows]` the maxima `max_{j ∈ tokens} ⟨q_i, d_j⟩` over the flagged tokens' positions;
    /// it is not called for a document without such tokens. An id beyond the table is an error.
    pub fn score(
        &self,
        ids: &[u16],
        scratch: &mut RefineScratch,
        exact: impl FnOnce(&[usize], &mut [f32]) -> Result<()>,
    ) -> Result<f32> {
        let table = &self.table;
        let RefineScratch { refined, maxes, dots } = scratch;
        refined.clear();
        // Flagged tokens are few: a branch the predictor gets right for nearly every token.
        for (j, &c) in ids.iter().enumerate() {
            if self.flagged.get(c as usize) == Some(&true) {
                refined.push(j);
            }
        }
        if refined.is_empty() {
            return table.score(ids);
        }
        maxes.clear();
        maxes.resize(table.lanes, f32::NEG_INFINITY);
        simd::centroid_maxima(&table.table, table.lanes, ids, maxes).ok_or_else(|| {
            Error::InvalidInput(format!("a centroid id is beyond the codebook's {} centroids", table.k))
        })?;
        dots.clear();
        dots.resize(table.rows, f32::NEG_INFINITY);
        exact(refined, dots)?;
        for (m, &d) in maxes.iter_mut().zip(dots.iter()) {
            *m = m.max(d);
        }
        Ok(maxes[..table.rows].iter().sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut rng = SplitMix64::new(seed);
        let mut v: Vec<f32> = (0..n * dim).map(|_| rng.normal() as f32).collect();
        for row in v.chunks_exact_mut(dim) {
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            row.iter_mut().for_each(|x| *x /= norm);
        }
        v
    }

    #[test]
    fn training_is_deterministic_and_assigns_nearest() {
        let dim = 16;
        let x = data(2000, dim, 1);
        let p = TokenCodebookParams { centroids: Some(32), ..Default::default() };
        let a = TokenCodebook::train(&x, dim, 2, &p).unwrap();
        let b = TokenCodebook::train(&x, dim, 2, &p).unwrap();
        assert_eq!(a, b);
        let mut ids = vec![0u16; 2000];
        a.assign(&x, &mut ids).unwrap();
        for (i, row) in x.chunks_exact(dim).enumerate().take(200) {
            let d = |c: usize| -> f32 {
                row.iter().zip(&a.centroids()[c * dim..(c + 1) * dim]).map(|(p, q)| (p - q) * (p - q)).sum()
            };
            let best = (0..32).map(d).fold(f32::INFINITY, f32::min);
            assert!(d(ids[i] as usize) <= best + 1e-4, "token {i} not at its nearest centroid");
        }
        // The batch form gives the same ids, and refuses a count that does not fit.
        let mut batch = vec![0u16; 2000];
        a.assign_batch(&x, &mut batch).unwrap();
        assert_eq!(batch, ids);
        assert!(a.assign_batch(&x[..dim * 3], &mut [0u16; 2]).is_err());
    }

    #[test]
    fn the_bf16_screen_assigns_the_exact_nearest_centroid() {
        // Random unit tokens against many centroids (close runners-up are common), 128-d and 16-d.
        for (dim, k) in [(128usize, 256u32), (16, 64)] {
            let x = data(3000, dim, 7);
            let p = TokenCodebookParams { centroids: Some(k), ..Default::default() };
            let book = TokenCodebook::train(&x, dim, 0, &p).unwrap();
            let mut exact = book.clone();
            exact.centroids_bf16.clear();
            if book.centroids_bf16.is_empty() {
                eprintln!("note: no AVX-512 BF16 on this CPU; the bf16 assignment screen is not run");
            }
            let (mut a, mut b) = (vec![0u16; 3000], vec![0u16; 3000]);
            let (mut da, mut db) = (vec![0f32; 3000], vec![0f32; 3000]);
            book.assign_with_distance(&x, &mut a, &mut da);
            exact.assign_with_distance(&x, &mut b, &mut db);
            for (i, row) in x.chunks_exact(dim).enumerate() {
                let d = |c: u16| -> f32 {
                    let cen = &book.centroids()[c as usize * dim..(c as usize + 1) * dim];
                    row.iter().zip(cen).map(|(p, q)| (p - q) * (p - q)).sum()
                };
                // The same centroid, or one exactly as near (an f32 rounding tie).
                assert!(a[i] == b[i] || (d(a[i]) - d(b[i])).abs() <= 1e-5, "token {i}: {} against {}", a[i], b[i]);
                assert!((da[i] - db[i]).abs() <= 1e-4, "token {i}: distance {} against {}", da[i], db[i]);
            }
        }
        // Constant tokens (every centroid equal): each one is re-scored, the lowest id wins.
        let x = vec![0.25f32; 40 * 16];
        let book = TokenCodebook::train(&x, 16, 0, &TokenCodebookParams { centroids: Some(16), ..Default::default() })
            .unwrap();
        let mut ids = vec![9u16; 40];
        book.assign(&x, &mut ids).unwrap();
        assert!(ids.iter().all(|&i| i == 0), "{ids:?}");
    }

    /// Squared error of quantizing `sorted` with `cuts` / `values` (a value's code is the number
    /// of cutoffs strictly below it, as the encoder counts).
    fn quantizer_error(sorted: &[f32], cuts: &[f32], values: &[f32]) -> f64 {
        sorted
            .iter()
            .map(|&r| {
                let v = values[cuts.iter().take_while(|&&t| t < r).count()];
                ((r - v) * (r - v)) as f64
            })
            .sum()
    }

    #[test]
    fn the_scalar_quantizer_beats_equal_count_buckets_on_peaked_residuals() {
        // Laplace-distributed values (peaked with long tails, like token residuals).
        let mut rng = SplitMix64::new(9);
        let mut sorted: Vec<f32> = (0..20_000)
            .map(|_| {
                let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
                (-u.signum() * (1.0 - 2.0 * u.abs()).max(1e-12).ln() * 0.1) as f32
            })
            .collect();
        sorted.sort_by(f32::total_cmp);
        for levels in [2usize, 4, 16] {
            let (cuts, values) = scalar_quantizer(&sorted, levels);
            assert_eq!((cuts.len(), values.len()), (levels - 1, levels));
            assert!(cuts.windows(2).all(|w| w[0] <= w[1]) && values.windows(2).all(|w| w[0] <= w[1]));
            let n = sorted.len();
            let quantile_cuts: Vec<f32> = (1..levels).map(|j| sorted[j * n / levels]).collect();
            let mut sums = vec![(0f64, 0usize); levels];
            for &r in &sorted {
                let code = quantile_cuts.iter().take_while(|&&t| t < r).count();
                sums[code].0 += r as f64;
                sums[code].1 += 1;
            }
            let quantile_values: Vec<f32> = sums.iter().map(|&(s, c)| (s / c.max(1) as f64) as f32).collect();
            let lloyd = quantizer_error(&sorted, &cuts, &values);
            let quantile = quantizer_error(&sorted, &quantile_cuts, &quantile_values);
            // Two levels of a symmetric distribution: the median cut is already optimal.
            let bound = if levels == 2 { quantile * (1.0 + 1e-6) } else { quantile * 0.97 };
            assert!(lloyd <= bound, "{levels} levels: Lloyd-Max {lloyd} against quantiles {quantile}");
        }
        // Degenerate inputs: one value, all equal.
        for one in [vec![0.25f32], vec![0.0; 100]] {
            let (cuts, values) = scalar_quantizer(&one, 4);
            assert!(cuts.iter().chain(&values).all(|v| v.is_finite()));
            assert_eq!(quantizer_error(&one, &cuts, &values), 0.0);
        }
    }

    #[test]
    fn residuals_reduce_error_as_bits_grow() {
        let dim = 32;
        let x = data(3000, dim, 2);
        let mut errors = Vec::new();
        for bits in [0u8, 1, 2, 4] {
            let p = TokenCodebookParams { centroids: Some(64), ..Default::default() };
            let book = TokenCodebook::train(&x, dim, bits, &p).unwrap();
            let mut ids = vec![0u16; 3000];
            book.assign(&x, &mut ids).unwrap();
            let mut codes = vec![0u8; book.residual_bytes()];
            let mut out = vec![0f32; dim];
            let mut err = 0f64;
            for (row, &id) in x.chunks_exact(dim).zip(&ids) {
                if bits > 0 {
                    book.encode_residual(row, id, &mut codes).unwrap();
                }
                book.decode(id, &codes, &mut out).unwrap();
                err += row.iter().zip(&out).map(|(a, b)| ((a - b) * (a - b)) as f64).sum::<f64>();
            }
            errors.push(err);
        }
        assert!(errors.windows(2).all(|w| w[1] < w[0]), "error must fall with more bits: {errors:?}");
    }

    #[test]
    fn serialisation_round_trips_and_rejects_damage() {
        let dim = 8;
        let x = data(500, dim, 3);
        let book = TokenCodebook::train(&x, dim, 4, &TokenCodebookParams::default()).unwrap();
        let bytes = book.to_bytes();
        assert_eq!(TokenCodebook::from_bytes(&bytes, dim).unwrap(), book);
        assert!(TokenCodebook::from_bytes(&bytes, dim + 1).is_err());
        assert!(TokenCodebook::from_bytes(&bytes[..bytes.len() - 4], dim).is_err());
        let mut bad = bytes.clone();
        bad[8] = 3;
        assert!(TokenCodebook::from_bytes(&bad, dim).is_err());
        let mut nan = bytes.clone();
        nan[CODEBOOK_HEADER_LEN..CODEBOOK_HEADER_LEN + 4].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(TokenCodebook::from_bytes(&nan, dim).is_err());
    }

    #[test]
    fn tiny_and_constant_training_sets_work() {
        let dim = 8;
        let one = vec![0.5f32; dim];
        let book = TokenCodebook::train(&one, dim, 2, &TokenCodebookParams::default()).unwrap();
        assert_eq!(book.centroid_count(), 16);
        let constant = vec![0.25f32; dim * 100];
        let book = TokenCodebook::train(&constant, dim, 2, &TokenCodebookParams::default()).unwrap();
        let mut out = vec![0f32; dim];
        let mut codes = vec![0u8; book.residual_bytes()];
        book.encode_residual(&constant[..dim], 0, &mut codes).unwrap();
        book.decode(0, &codes, &mut out).unwrap();
        assert!(out.iter().all(|v| (v - 0.25).abs() < 1e-6));
        assert!(TokenCodebook::train(&[], dim, 2, &TokenCodebookParams::default()).is_err());
        assert!(TokenCodebook::train(&[f32::NAN; 8], dim, 2, &TokenCodebookParams::default()).is_err());
        assert!(TokenCodebook::train(&constant, 3, 2, &TokenCodebookParams::default()).is_err(), "3 × 2 bits");
    }

    #[test]
    fn centroid_interaction_matches_definition() {
        let dim = 16;
        let x = data(800, dim, 4);
        let book = TokenCodebook::train(&x, dim, 0, &TokenCodebookParams { centroids: Some(48), ..Default::default() })
            .unwrap();
        let q = data(19, dim, 5);
        let table = book.interaction_table(&q);
        let ids: Vec<u16> = vec![3, 17, 47, 3, 0];
        // With AVX-512 BF16 the table is the product of the bf16-rounded query and centroids.
        let bf16 = !book.centroids_bf16.is_empty();
        eprintln!("interaction table kernel: {}", if bf16 { "vdpbf16ps" } else { "f32" });
        let round = |v: f32| if bf16 { half::bf16::from_f32(v).to_f32() } else { v };
        let expect: f32 = q
            .chunks_exact(dim)
            .map(|qi| {
                ids.iter()
                    .map(|&c| {
                        qi.iter()
                            .zip(&book.centroids()[c as usize * dim..])
                            .map(|(&a, &b)| round(a) * round(b))
                            .sum::<f32>()
                    })
                    .fold(f32::NEG_INFINITY, f32::max)
            })
            .sum();
        assert!((table.score(&ids).unwrap() - expect).abs() < 1e-4);
        assert!(table.score(&[48]).is_err());
        assert_eq!(table.score(&[]).unwrap(), 0.0);
        let top = table.top_centroids(2);
        assert!(!top.is_empty() && top.len() <= 38 && top.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn refined_centroid_interaction_replaces_flagged_rows_by_exact_products() {
        let dim = 16;
        let x = data(800, dim, 6);
        let book = TokenCodebook::train(&x, dim, 0, &TokenCodebookParams { centroids: Some(48), ..Default::default() })
            .unwrap();
        let q = data(2, dim, 7);
        let table = book.interaction_table(&q);
        let row = |c: u16, i: usize| table.table[c as usize * table.lanes + i];
        let flagged = [5u16, 17];
        let refine: Vec<bool> = (0..48u16).map(|c| flagged.contains(&c)).collect();
        let masked = table.refined(&flagged);
        let mut scratch = RefineScratch::default();
        // Stand-in exact products of token j with query token i, far above every table value.
        let exact_of = |j: usize, i: usize| 100.0 + (j * 2 + i) as f32;
        let ids: Vec<u16> = vec![3, 17, 40, 5, 17, 9];
        let mut seen = Vec::new();
        let got = masked
            .score(&ids, &mut scratch, |positions, out| {
                seen.extend_from_slice(positions);
                for (i, o) in out.iter_mut().enumerate() {
                    *o = positions.iter().map(|&j| exact_of(j, i)).fold(f32::NEG_INFINITY, f32::max);
                }
                Ok(())
            })
            .unwrap();
        assert_eq!(seen, [1, 3, 4], "the positions of the flagged centroids' tokens");
        let want: f32 = (0..2)
            .map(|i| {
                ids.iter()
                    .enumerate()
                    .map(|(j, &c)| if refine[c as usize] { exact_of(j, i) } else { row(c, i) })
                    .fold(f32::NEG_INFINITY, f32::max)
            })
            .sum();
        assert_eq!(got, want);
        // Flagged rows count only through the exact products, even when those are low.
        let low = masked
            .score(&[5, 9], &mut scratch, |_, out| {
                out.fill(-50.0);
                Ok(())
            })
            .unwrap();
        assert_eq!(low, (0..2).map(|i| row(9, i).max(-50.0)).sum::<f32>());
        // No flagged token: plain centroid interaction, and the closure is not called.
        let plain = masked.score(&[3, 40], &mut scratch, |_, _| panic!("no flagged token")).unwrap();
        assert_eq!(plain, table.score(&[3, 40]).unwrap());
        // A damaged id is an error, as for `CentroidTable::score`, with or without flagged tokens.
        assert!(masked.score(&[5, 48], &mut scratch, |_, _| Ok(())).is_err());
        assert!(masked.score(&[3, 48], &mut scratch, |_, _| Ok(())).is_err());
    }
}
