//! Runtime-dispatched SIMD kernels: the only `unsafe` code of the encoders.
//!
//! # Safety
//!
//! Two kinds of `unsafe` appear here, and nowhere else in `encode/`:
//!
//! 1. **Calling a `#[target_feature]` function.** Such a function may only run on a CPU that has
//!    the features. Every call goes through [`Isa::detect`], which asks the CPU at run time
//!    (`is_x86_feature_detected!`) once and caches the answer. The element-wise helpers dispatch
//!    on that cached answer only; [`max_dots`], which takes an [`Isa`] from its caller (so tests
//!    and benchmarks can pin a kernel), re-checks it against the detected one before entering.
//! 2. **Raw-pointer loads in the AVX2 and AVX-512 kernels** (`_mm256_loadu_ps`,
//!    `_mm512_loadu_ps` and friends take pointers).
//!    Each kernel is private and is entered only through a safe wrapper that checks every slice
//!    length the kernel's index arithmetic relies on (asserted, not debug-asserted, because a
//!    violated length would be an out-of-bounds read). Unaligned loads are used throughout, so
//!    no alignment is assumed.
//!
//! Numerics. `add_rows_into` and `mat_mul` (unless asked for fused rounding) compute `acc[i] += x * row[i]` with a separate multiply and add
//! in every implementation, so the FDE's SimHash signs are bit-identical on every CPU. The
//! MaxSim kernels use FMA where available: their scores differ from the scalar reference by
//! rounding only (tested with a stated tolerance).
#![allow(unsafe_code)]

use std::sync::OnceLock;

/// The instruction sets the kernels are compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// Portable Rust, auto-vectorised for the compile target's baseline (SSE2 on x86-64).
    Portable,
    /// x86-64 with AVX2, FMA and F16C (Haswell and later, Zen and later).
    Avx2,
    /// x86-64 with AVX-512 F (and AVX2, FMA, F16C): the MaxSim kernel, PQ encoding's nearest
    /// centroid and the assignment's row screens work on 16-lane registers, the int8 dot on
    /// AVX-512 VNNI where the CPU has it ([`int8_vnni`]); the other element-wise helpers use their
    /// AVX2 paths.
    Avx512,
    /// [`Isa::Avx512`] plus AVX-512 BF16: bf16-stored documents are scored with `vdpbf16ps` (two
    /// multiply-adds per lane per instruction) against the query rounded to bf16, unless
    /// `QUIVERDB_BF16_DOT=0` (see [`bf16_dot_enabled`]).
    Avx512Bf16,
}

impl Isa {
    /// The best instruction set this CPU supports, detected once and cached.
    pub fn detect() -> Isa {
        static DETECTED: OnceLock<Isa> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                if std::env::var_os("QUIVERDB_FORCE_PORTABLE").is_none()
                    && is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
                {
                    if std::env::var_os("QUIVERDB_NO_AVX512").is_none() && is_x86_feature_detected!("avx512f") {
                        if is_x86_feature_detected!("avx512bf16") {
                            return Isa::Avx512Bf16;
                        }
                        return Isa::Avx512;
                    }
                    return Isa::Avx2;
                }
            }
            Isa::Portable
        })
    }

    /// True when this CPU can run `self`'s kernels (no allocation, for per-call checks).
    pub fn supported(self) -> bool {
        let rank = |i: Isa| match i {
            Isa::Portable => 0,
            Isa::Avx2 => 1,
            Isa::Avx512 => 2,
            Isa::Avx512Bf16 => 3,
        };
        rank(self) <= rank(Isa::detect())
    }

    /// Every instruction set usable on this CPU, portable first (for tests and benchmarks).
    pub fn available() -> Vec<Isa> {
        match Isa::detect() {
            Isa::Portable => vec![Isa::Portable],
            Isa::Avx2 => vec![Isa::Portable, Isa::Avx2],
            Isa::Avx512 => vec![Isa::Portable, Isa::Avx2, Isa::Avx512],
            Isa::Avx512Bf16 => vec![Isa::Portable, Isa::Avx2, Isa::Avx512, Isa::Avx512Bf16],
        }
    }

    /// A short lowercase name (`portable`, `avx2`).
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Avx512Bf16 => "avx512bf16",
        }
    }
}

/// For every row `r` of `rows` (`dim` wide): `sums[target[r]] += rows[r]`, where `sums` holds
/// `dim`-wide rows. Rows are added in order, so each sum's rounding is CPU-independent.
pub fn add_rows_into(sums: &mut [f32], dim: usize, rows: &[f32], target: &[u32]) {
    assert!(dim > 0 && rows.len() == target.len() * dim && sums.len().is_multiple_of(dim));
    let n_sums = (sums.len() / dim) as u32;
    assert!(target.iter().all(|&t| t < n_sums), "target row out of range");
    match Isa::detect() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2` is only returned after runtime detection of AVX2 (see module docs).
        Isa::Avx2 | Isa::Avx512 | Isa::Avx512Bf16 => unsafe { x86::add_rows_into_avx2(sums, dim, rows, target) },
        _ => add_rows_into_portable(sums, dim, rows, target),
    }
}

#[inline(always)]
fn add_rows_into_portable(sums: &mut [f32], dim: usize, rows: &[f32], target: &[u32]) {
    for (row, &t) in rows.chunks_exact(dim).zip(target) {
        let t = t as usize;
        add_portable(&mut sums[t * dim..(t + 1) * dim], row);
    }
}

/// Centroid interaction (PLAID's cheap score): `Σ_{i < rows} max_j table[ids[j] · lanes + i]`,
/// where `table` holds one row of `lanes` query-token scores per centroid (`lanes` a multiple of
/// 16, padding lanes ignored). One table row per document token, no dot products. 0 for no ids;
/// `None` when an id is beyond the table (checked once, before the kernel runs).
pub fn centroid_interaction(table: &[f32], lanes: usize, rows: usize, ids: &[u16]) -> Option<f32> {
    centroid_interaction_with(Isa::detect(), table, lanes, rows, ids)
}

/// [`centroid_interaction`] with a chosen instruction set (checked against the detected one),
/// for tests and benchmarks.
pub fn centroid_interaction_with(isa: Isa, table: &[f32], lanes: usize, rows: usize, ids: &[u16]) -> Option<f32> {
    assert!(lanes.is_multiple_of(16) && rows <= lanes && table.len().is_multiple_of(lanes.max(1)));
    let k = table.len() / lanes.max(1);
    if ids.iter().any(|&c| c as usize >= k) {
        return None;
    }
    if ids.is_empty() {
        return Some(0.0);
    }
    let isa = if isa.supported() { isa } else { Isa::Portable };
    Some(match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa` is one `Isa::supported` accepts (runtime detection, module docs), so AVX2
        // is there; every id indexes a whole table row (checked above) and `ids` is not empty.
        // AVX-512 machines take the AVX2 kernel: a 512-bit version gained nothing measurable on
        // double-pumped units and could not be tested on the AVX2-only development machine.
        Isa::Avx2 | Isa::Avx512 | Isa::Avx512Bf16 => unsafe { x86::centroid_interaction_avx2(table, lanes, ids) },
        _ => centroid_interaction_portable(table, lanes, rows, ids),
    })
}

/// Residual-coded tokens to decode: token `t`'s codes are `dim × bits / 8` bytes at
/// `codes[t × dim × bits / 8..]`, `bits` per dimension, little-endian within each byte; `table`
/// holds, per byte position `p` and byte value `v`, the `8 / bits` decoded residuals of the
/// dimensions that byte codes (`[p][v][j]`); `centroids` is `k × dim`.
#[derive(Clone, Copy, Debug)]
pub struct ResidualCodes<'a> {
    /// Bits per dimension: 1, 2 or 4.
    pub bits: u8,
    /// The per-byte-position decode table.
    pub table: &'a [f32],
    /// The bucket weights, `dim × 2^bits`, dimension-major (`weights[d · 2^bits + level]`):
    /// what the table is made of, read directly by the AVX-512 kernel.
    pub weights: &'a [f32],
    /// The codebook's centroids.
    pub centroids: &'a [f32],
    /// Token dimension.
    pub dim: usize,
    /// Centroid id of each token.
    pub ids: &'a [u16],
    /// The tokens' residual codes.
    pub codes: &'a [u8],
}

/// Whether the CPU has BMI2 (`pext`, which the AVX-512 residual decoder turns code bits into
/// lane masks with). Detected once.
#[cfg(target_arch = "x86_64")]
fn bmi2() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| is_x86_feature_detected!("bmi2"))
}

/// Decodes residual-coded tokens: `out[t][d] = centroids[ids[t]][d] + w_d[code(t, d)]`.
pub fn decode_residuals(src: ResidualCodes<'_>, out: &mut [f32]) {
    decode_residuals_with(Isa::detect(), src, out)
}

/// [`decode_residuals`] with a chosen instruction set (checked against the detected one).
pub fn decode_residuals_with(isa: Isa, src: ResidualCodes<'_>, out: &mut [f32]) {
    let ResidualCodes { bits, table, weights, centroids, dim, ids, codes } = src;
    let b = bits as usize;
    assert!(matches!(bits, 1 | 2 | 4) && dim > 0 && (dim * b).is_multiple_of(8));
    let rb = dim * b / 8;
    let per = 8 / b;
    assert!(table.len() == rb * 256 * per, "one table row per byte position and value");
    assert!(weights.len() == dim << b, "2^bits weights per dimension");
    assert!(codes.len() == ids.len() * rb && out.len() == ids.len() * dim && centroids.len().is_multiple_of(dim));
    let k = centroids.len() / dim;
    assert!(ids.iter().all(|&c| (c as usize) < k), "centroid id beyond the codebook");
    let isa = if isa.supported() { isa } else { Isa::Portable };
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx512 | Isa::Avx512Bf16) && dim.is_multiple_of(16) && bmi2() {
        // SAFETY: AVX-512 F (`Isa::supported`) and BMI2 (`bmi2`) detected; `dim` is a multiple
        // of 16, so each 16-dimension group of a token is `2 · bits` whole bytes of its codes;
        // every id indexes a whole centroid row, `codes` and `out` hold exactly `ids.len()`
        // tokens and `weights` 2^bits per dimension (asserted above).
        unsafe {
            match bits {
                1 => x86::decode_residuals_avx512::<1>(weights, centroids, dim, ids, codes, out),
                2 => x86::decode_residuals_avx512::<2>(weights, centroids, dim, ids, codes, out),
                _ => x86::decode_residuals_avx512::<4>(weights, centroids, dim, ids, codes, out),
            }
        }
        return;
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2 detected (`Isa::supported`); every id indexes a whole centroid row, `codes`
        // and `out` hold exactly `ids.len()` tokens and `table` one row per byte position and value
        // (asserted above); `dim` is a multiple of 8, so each 8-dimension group is whole bytes.
        Isa::Avx2 | Isa::Avx512 | Isa::Avx512Bf16 if dim.is_multiple_of(8) => unsafe {
            x86::decode_residuals_avx2(b, table, centroids, dim, ids, codes, out)
        },
        _ => {
            for (t, &id) in ids.iter().enumerate() {
                let c = &centroids[id as usize * dim..(id as usize + 1) * dim];
                let tc = &codes[t * rb..(t + 1) * rb];
                let o = &mut out[t * dim..(t + 1) * dim];
                for (pos, &byte) in tc.iter().enumerate() {
                    let w = &table[(pos * 256 + byte as usize) * per..][..per];
                    for j in 0..per {
                        o[pos * per + j] = c[pos * per + j] + w[j];
                    }
                }
            }
        }
    }
}

#[inline(always)]
/// Per-lane maxima of centroid interaction: `maxes[l] = max(maxes[l], max_j table[ids[j] · lanes +
/// l])` for every lane `l < lanes` (`maxes.len() == lanes`, a multiple of 16). `None` when an id is
/// beyond the table (checked before anything is read).
pub fn centroid_maxima(table: &[f32], lanes: usize, ids: &[u16], maxes: &mut [f32]) -> Option<()> {
    assert!(lanes.is_multiple_of(16) && maxes.len() == lanes && table.len().is_multiple_of(lanes.max(1)));
    let k = table.len() / lanes.max(1);
    if ids.iter().any(|&c| c as usize >= k) {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    if Isa::detect() != Isa::Portable {
        // SAFETY: AVX2 detected (module docs); every id indexes a whole table row (checked above)
        // and `maxes` is `lanes` long (asserted).
        unsafe { x86::centroid_maxima_avx2(table, lanes, ids, maxes) };
        return Some(());
    }
    for &c in ids {
        for (m, &v) in maxes.iter_mut().zip(&table[c as usize * lanes..(c as usize + 1) * lanes]) {
            if v > *m {
                *m = v;
            }
        }
    }
    Some(())
}

fn centroid_interaction_portable(table: &[f32], lanes: usize, rows: usize, ids: &[u16]) -> f32 {
    let mut total = 0f32;
    for block in 0..rows.div_ceil(16) {
        let mut best = [f32::NEG_INFINITY; 16];
        for &c in ids {
            let at = c as usize * lanes + block * 16;
            let Some(row) = table.get(at..at + 16) else { continue };
            for j in 0..16 {
                if row[j] > best[j] {
                    best[j] = row[j];
                }
            }
        }
        let used = (rows - block * 16).min(16);
        total += best[..used].iter().sum::<f32>();
    }
    total
}

/// Centroids per PQ subspace (one byte per code).
pub const PQ_CENTROIDS: usize = 256;

/// For each `sub_dim`-wide row of `points`: the nearest of 256 centroids by squared L2 distance
/// (first one on ties) into `assign`, and that squared distance into `dist`. `centroids_t` is the
/// codebook dimension-major (`sub_dim × 256`), `norms` the centroids' squared norms.
pub fn nearest_centroid(
    points: &[f32],
    sub_dim: usize,
    centroids_t: &[f32],
    norms: &[f32],
    assign: &mut [u8],
    dist: &mut [f32],
) {
    assert!(sub_dim > 0 && points.len().is_multiple_of(sub_dim));
    let n = points.len() / sub_dim;
    assert!(centroids_t.len() == sub_dim * PQ_CENTROIDS && norms.len() == PQ_CENTROIDS);
    assert!(assign.len() == n && dist.len() == n);
    match Isa::detect() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx512` and above are only returned after runtime detection of AVX-512 F
        // (and AVX2, FMA); the lengths the kernel indexes by were asserted above.
        Isa::Avx512 | Isa::Avx512Bf16 => unsafe {
            x86::nearest_centroid_avx512(points, sub_dim, centroids_t, norms, assign, dist)
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2` is only returned after runtime detection of AVX2+FMA (module docs);
        // the lengths the kernel indexes by were asserted above.
        Isa::Avx2 => unsafe { x86::nearest_centroid_avx2(points, sub_dim, centroids_t, norms, assign, dist) },
        _ => nearest_centroid_portable(points, sub_dim, centroids_t, norms, assign, dist),
    }
}

/// ADC table rows: for each subspace `s`, `out[s][c] = ⟨x_s, centroid_{s,c}⟩` for the 256
/// centroids, where `x` is cut into `sub_dim`-wide pieces and `centroids_t` holds each subspace's
/// codebook dimension-major (`[subspace][sub_dim][256]`) as f16 bits, each widened to f32 before
/// its multiply-add.
pub fn centroid_dots_f16(x: &[f32], sub_dim: usize, centroids_t: &[u16], out: &mut [f32]) {
    assert!(sub_dim > 0 && x.len().is_multiple_of(sub_dim));
    let m = x.len() / sub_dim;
    assert!(centroids_t.len() == m * sub_dim * PQ_CENTROIDS && out.len() == m * PQ_CENTROIDS);
    centroid_dots_f16_with(Isa::detect(), x, sub_dim, centroids_t, out)
}

fn centroid_dots_f16_with(isa: Isa, x: &[f32], sub_dim: usize, centroids_t: &[u16], out: &mut [f32]) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2` and above are only returned after runtime detection of AVX2, FMA and
        // F16C (module docs); the lengths the kernel indexes by were asserted by the caller.
        Isa::Avx2 => unsafe { x86::centroid_dots_f16_avx2(x, sub_dim, centroids_t, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, with AVX-512 F detected for the AVX-512 levels.
        Isa::Avx512 | Isa::Avx512Bf16 => unsafe { x86::centroid_dots_f16_avx512(x, sub_dim, centroids_t, out) },
        _ => {
            let mut widened = [0f32; PQ_CENTROIDS];
            for (s, (xs, row)) in x.chunks_exact(sub_dim).zip(out.chunks_exact_mut(PQ_CENTROIDS)).enumerate() {
                row.fill(0.0);
                let ct = &centroids_t[s * sub_dim * PQ_CENTROIDS..(s + 1) * sub_dim * PQ_CENTROIDS];
                for (d, &xd) in xs.iter().enumerate() {
                    for (w, &h) in widened.iter_mut().zip(&ct[d * PQ_CENTROIDS..(d + 1) * PQ_CENTROIDS]) {
                        *w = half::f16::from_bits(h).to_f32();
                    }
                    add_scaled_portable(row, &widened, xd);
                }
            }
        }
    }
}

/// PQ encoding of one vector: for each of the `m = vector.len() / sub_dim` subspaces, the nearest
/// of that subspace's 256 centroids into `code[s]`. `centroids_t` holds every subspace's codebook
/// dimension-major (`[subspace][sub_dim][256]`), `norms` their squared norms (`[subspace][256]`).
/// One dispatch for the whole vector (instead of one per subspace).
pub fn encode_subspaces(vector: &[f32], sub_dim: usize, centroids_t: &[f32], norms: &[f32], code: &mut [u8]) {
    assert!(sub_dim > 0 && vector.len().is_multiple_of(sub_dim));
    let m = vector.len() / sub_dim;
    assert!(centroids_t.len() == m * sub_dim * PQ_CENTROIDS && norms.len() == m * PQ_CENTROIDS && code.len() == m);
    match Isa::detect() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2` is only returned after runtime detection of AVX2+FMA (module docs);
        // every per-subspace slice passed on has the lengths the kernel requires (asserted above).
        Isa::Avx2 | Isa::Avx512 | Isa::Avx512Bf16 => unsafe {
            x86::encode_subspaces_avx2(vector, sub_dim, centroids_t, norms, code)
        },
        _ => encode_subspaces_with(vector, sub_dim, centroids_t, norms, code, nearest_centroid_portable),
    }
}

type NearestFn = fn(&[f32], usize, &[f32], &[f32], &mut [u8], &mut [f32]);

#[inline(always)]
fn encode_subspaces_with(
    vector: &[f32],
    sub_dim: usize,
    centroids_t: &[f32],
    norms: &[f32],
    code: &mut [u8],
    nearest: NearestFn,
) {
    let mut dist = [0f32; 1];
    let block = sub_dim * PQ_CENTROIDS;
    for (s, x) in vector.chunks_exact(sub_dim).enumerate() {
        nearest(
            x,
            sub_dim,
            &centroids_t[s * block..(s + 1) * block],
            &norms[s * PQ_CENTROIDS..(s + 1) * PQ_CENTROIDS],
            &mut code[s..s + 1],
            &mut dist,
        );
    }
}

fn nearest_centroid_portable(
    points: &[f32],
    sub_dim: usize,
    centroids_t: &[f32],
    norms: &[f32],
    assign: &mut [u8],
    dist: &mut [f32],
) {
    let mut values = [0f32; PQ_CENTROIDS];
    for (p, x) in points.chunks_exact(sub_dim).enumerate() {
        values.copy_from_slice(norms);
        for (d, &xd) in x.iter().enumerate() {
            let scaled = -2.0 * xd;
            let row = &centroids_t[d * PQ_CENTROIDS..(d + 1) * PQ_CENTROIDS];
            values.iter_mut().zip(row).for_each(|(v, c)| *v += scaled * c);
        }
        let (mut best, mut best_value) = (0, values[0]);
        for (c, &v) in values.iter().enumerate().skip(1) {
            if v < best_value {
                best = c;
                best_value = v;
            }
        }
        let norm: f32 = x.iter().map(|v| v * v).sum();
        assign[p] = best as u8;
        dist[p] = (best_value + norm).max(0.0);
    }
}

/// Lanes of the row-screening kernels ([`row_maxima`], [`rows_near`]).
pub const SCREEN_LANES: usize = 64;

/// For a score matrix `scores` (rows of [`SCREEN_LANES`] lanes, one row per entry of `offsets`):
/// `top[l] = max over rows c of (scores[c][l] − offsets[c])`, starting from `top`'s values.
pub fn row_maxima(scores: &[f32], offsets: &[f32], top: &mut [f32; SCREEN_LANES]) {
    assert_eq!(scores.len(), offsets.len() * SCREEN_LANES);
    #[cfg(target_arch = "x86_64")]
    if matches!(Isa::detect(), Isa::Avx512 | Isa::Avx512Bf16) {
        // SAFETY: AVX-512 F detected (module docs); the length was asserted above.
        return unsafe { x86::row_maxima_avx512(scores, offsets, top) };
    }
    for (row, &o) in scores.chunks_exact(SCREEN_LANES).zip(offsets) {
        for (t, &v) in top.iter_mut().zip(row) {
            *t = t.max(v - o);
        }
    }
}

/// Every `(row, lane)` of `scores` (as for [`row_maxima`]) with `scores[c][l] − offsets[c] ≥
/// floor[l]`, appended to `out` in ascending row order, lanes ascending within a row.
pub fn rows_near(scores: &[f32], offsets: &[f32], floor: &[f32; SCREEN_LANES], out: &mut Vec<(u32, u32)>) {
    assert_eq!(scores.len(), offsets.len() * SCREEN_LANES);
    #[cfg(target_arch = "x86_64")]
    if matches!(Isa::detect(), Isa::Avx512 | Isa::Avx512Bf16) {
        // SAFETY: AVX-512 F detected (module docs); the length was asserted above.
        return unsafe { x86::rows_near_avx512(scores, offsets, floor, out) };
    }
    rows_near_portable(scores, offsets, floor, out)
}

fn rows_near_portable(scores: &[f32], offsets: &[f32], floor: &[f32; SCREEN_LANES], out: &mut Vec<(u32, u32)>) {
    for (c, (row, &o)) in scores.chunks_exact(SCREEN_LANES).zip(offsets).enumerate() {
        for (l, (&v, &f)) in row.iter().zip(floor).enumerate() {
            if v - o >= f {
                out.push((c as u32, l as u32));
            }
        }
    }
}

/// Columns per block of [`mat_mul`]; its `cols` must be a multiple of this.
pub const MAT_MUL_COL_BLOCK: usize = 16;
const MAT_MUL_ROW_BLOCK: usize = 4;

/// How [`mat_mul`] rounds each step `acc + x·m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rounding {
    /// Multiply, round, add, round: bit-identical on every CPU.
    Separate,
    /// One rounding per step where the CPU has FMA. Bit-identical to [`Rounding::Separate`]
    /// whenever every product `x·m` is exact (e.g. `m` entries in {-1, 0, 1}); otherwise the
    /// last bits may differ between CPUs.
    Fused,
}

/// `out = x · m` for row-major `x` (`rows × inner`) and `m` (`inner × cols`), every element
/// summed over `inner` in ascending order from 0 (see [`Rounding`]).
/// `cols` must be a multiple of [`MAT_MUL_COL_BLOCK`].
pub fn mat_mul(x: &[f32], inner: usize, m: &[f32], cols: usize, out: &mut [f32], rounding: Rounding) {
    assert!(inner > 0 && cols.is_multiple_of(MAT_MUL_COL_BLOCK));
    assert_eq!(x.len() % inner, 0);
    assert_eq!(m.len(), inner * cols);
    assert_eq!(out.len(), x.len() / inner * cols);
    match Isa::detect() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2` is only returned after runtime detection of AVX2+FMA (module docs);
        // the lengths the kernel indexes by were asserted above.
        Isa::Avx2 | Isa::Avx512 | Isa::Avx512Bf16 => unsafe {
            match rounding {
                Rounding::Separate => x86::mat_mul_avx2::<false>(x, inner, m, cols, out),
                Rounding::Fused => x86::mat_mul_avx2::<true>(x, inner, m, cols, out),
            }
        },
        _ => mat_mul_portable(x, inner, m, cols, out),
    }
}

/// Register-blocked: 4 rows × 16 columns of accumulators stay in registers across `inner`.
/// Always [`Rounding::Separate`] (a software FMA would be far slower).
fn mat_mul_portable(x: &[f32], inner: usize, m: &[f32], cols: usize, out: &mut [f32]) {
    let rows = x.len() / inner;
    let mut padded = Vec::new();
    for r0 in (0..rows).step_by(MAT_MUL_ROW_BLOCK) {
        let used = (rows - r0).min(MAT_MUL_ROW_BLOCK);
        // A short last block is zero-padded so the hot loop has fixed trip counts.
        let xb: &[f32] = if used == MAT_MUL_ROW_BLOCK {
            &x[r0 * inner..(r0 + MAT_MUL_ROW_BLOCK) * inner]
        } else {
            padded.clear();
            padded.extend_from_slice(&x[r0 * inner..(r0 + used) * inner]);
            padded.resize(MAT_MUL_ROW_BLOCK * inner, 0.0);
            &padded
        };
        for c0 in (0..cols).step_by(MAT_MUL_COL_BLOCK) {
            let mut acc = [[0f32; MAT_MUL_COL_BLOCK]; MAT_MUL_ROW_BLOCK];
            for i in 0..inner {
                // Fixed-size view for bounds-check-free inner loops; exactly one block long by
                // construction, so the conversion cannot fail.
                #[allow(clippy::expect_used)]
                let row: &[f32; MAT_MUL_COL_BLOCK] =
                    m[i * cols + c0..i * cols + c0 + MAT_MUL_COL_BLOCK].try_into().expect("block");
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let xv = xb[r * inner + i];
                    for c in 0..MAT_MUL_COL_BLOCK {
                        acc_r[c] += xv * row[c];
                    }
                }
            }
            for (r, acc_r) in acc.iter().enumerate().take(used) {
                out[(r0 + r) * cols + c0..(r0 + r) * cols + c0 + MAT_MUL_COL_BLOCK].copy_from_slice(acc_r);
            }
        }
    }
}

/// `⟨a, b⟩` in `f32` with eight partial sums (so it vectorises everywhere); with FMA on AVX2.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    match Isa::detect() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2` is only returned after runtime detection of AVX2+FMA (module docs).
        Isa::Avx2 | Isa::Avx512 | Isa::Avx512Bf16 => unsafe { x86::dot_avx2(a, b) },
        _ => dot_portable(a, b),
    }
}

/// Scales every `dim`-wide row of `rows` to unit length (rows of norm 0 stay as they are), by a
/// multiply with the reciprocal of the norm. Rounding differs between kernels by the norm's
/// summation order only.
///
/// Decoded residual tokens of unit-vector collections go through it. History: a plain `f32` sum
/// of squares (one dependent add per value) was 45% of a residual2 rerank on scifact-mini
/// (`perf`); a vectorised dot and the reciprocal took the rerank from 54-63 to 37-48 µs per
/// document; after the AVX-512 decoder the per-row dot and scaling loop were twice the decoding
/// itself, hence one pass over all rows.
pub fn normalize_rows(rows: &mut [f32], dim: usize) {
    assert!(dim > 0 && rows.len().is_multiple_of(dim));
    #[cfg(target_arch = "x86_64")]
    if matches!(Isa::detect(), Isa::Avx512 | Isa::Avx512Bf16) && dim.is_multiple_of(16) {
        // SAFETY: AVX-512 F detected (module docs); rows are whole multiples of 16 floats.
        return unsafe { x86::normalize_rows_avx512(rows, dim) };
    }
    for row in rows.chunks_exact_mut(dim) {
        let n = dot(row, row).sqrt();
        if n > 0.0 {
            let inverse = 1.0 / n;
            row.iter_mut().for_each(|x| *x *= inverse);
        }
    }
}

/// Inner product of two int8 vectors, exact in i32 (values must lie in `-127..=127`, as
/// [`quantize_i8`] produces; vectors up to 65,536 long cannot overflow).
pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    assert_eq!(a.len(), b.len());
    match int8_kernel() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Int8Kernel::Vnni` is chosen only after runtime detection of AVX-512 F, BW and
        // VNNI (and AVX2, which the kernel's tail uses).
        Int8Kernel::Vnni => unsafe { x86::dot_i8_avx512vnni(a, b) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Int8Kernel::Avx2` is chosen only where `Isa::detect` found AVX2 (module docs).
        Int8Kernel::Avx2 => unsafe { x86::dot_i8_avx2(a, b) },
        _ => dot_i8_portable(a, b),
    }
}

/// The [`dot_i8`] kernels.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Int8Kernel {
    Portable,
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Avx2,
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Vnni,
}

/// [`dot_i8`]'s kernel, chosen once: VNNI where [`int8_vnni`] says so, else by [`Isa::detect`].
fn int8_kernel() -> Int8Kernel {
    static CHOSEN: OnceLock<Int8Kernel> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if matches!(Isa::detect(), Isa::Avx512 | Isa::Avx512Bf16)
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vnni")
            {
                return Int8Kernel::Vnni;
            }
            if Isa::detect() != Isa::Portable {
                return Int8Kernel::Avx2;
            }
        }
        Int8Kernel::Portable
    })
}

/// Whether [`dot_i8`] runs the AVX-512 VNNI kernel (`vpdpbusd`: 64 int8 multiply-adds per
/// instruction, against 32 in the AVX2 kernel's three instructions): the CPU has AVX-512 F, BW
/// and VNNI and [`Isa::detect`] chose an AVX-512 level (so `QUIVERDB_NO_AVX512` and
/// `QUIVERDB_FORCE_PORTABLE` turn it off too). Detected once. Integer arithmetic: every kernel
/// returns the same exact sum.
pub fn int8_vnni() -> bool {
    int8_kernel() == Int8Kernel::Vnni
}

/// Asks the CPU to start loading `bytes` into cache (one prefetch per 64-byte line), so that a
/// loop about to read several scattered vectors overlaps their memory latency. A hint only:
/// results never depend on it.
pub fn prefetch(bytes: &[i8]) {
    #[cfg(target_arch = "x86_64")]
    for line in bytes.chunks(64) {
        // SAFETY: `_mm_prefetch` (SSE, part of x86-64's baseline) is a hint that never faults,
        // and the pointer comes from a live slice.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(line.as_ptr()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

/// The portable [`dot_i8`].
pub fn dot_i8_portable(a: &[i8], b: &[i8]) -> i32 {
    a.iter().zip(b).map(|(&x, &y)| x as i32 * y as i32).sum()
}

/// `v` as int8 with one scale, `v ≈ scale · q`, every value in `-127..=127`; the scale is
/// `max|v| / 127` (zero for an all-zero vector).
pub fn quantize_i8(v: &[f32], out: &mut [i8]) -> f32 {
    assert_eq!(v.len(), out.len());
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    if max == 0.0 || !max.is_finite() {
        out.fill(0);
        return 0.0;
    }
    let inv = 127.0 / max;
    for (o, &x) in out.iter_mut().zip(v) {
        *o = (x * inv).round().clamp(-127.0, 127.0) as i8;
    }
    max / 127.0
}

fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn add_scaled_portable(acc: &mut [f32], row: &[f32], x: f32) {
    acc.iter_mut().zip(row).for_each(|(a, r)| *a += x * r);
}

#[inline(always)]
fn add_portable(acc: &mut [f32], row: &[f32]) {
    acc.iter_mut().zip(row).for_each(|(a, r)| *a += r);
}

/// Runs `iterations` rounds of 12 independent 8-wide FMA chains held in registers (24 FMAs,
/// i.e. 384 FLOP, per round on AVX2) and returns a value that depends on all of them. Timing it
/// measures this core's peak f32 FMA rate under the current load, the yardstick the MaxSim
/// benchmark reports its kernels against. Returns `None` without AVX2+FMA.
pub fn fma_peak_probe(iterations: u64) -> Option<f32> {
    match Isa::detect() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2` is only returned after runtime detection of AVX2+FMA (module docs).
        Isa::Avx2 | Isa::Avx512 | Isa::Avx512Bf16 => Some(unsafe { x86::fma_peak_probe(iterations) }),
        _ => None,
    }
}

/// FLOP per round of [`fma_peak_probe`].
pub const FMA_PROBE_FLOP_PER_ROUND: u64 = 2 * 12 * 8 * 2;

/// The least and greatest of `v`, whose values are finite; `(+inf, -inf)` when empty.
pub fn min_max(v: &[f32]) -> (f32, f32) {
    match Isa::detect() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2` and above are only returned after runtime detection of AVX2.
        Isa::Avx2 | Isa::Avx512 | Isa::Avx512Bf16 => unsafe { x86::min_max_avx2(v) },
        _ => min_max_portable(v),
    }
}

fn min_max_portable(v: &[f32]) -> (f32, f32) {
    v.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &x| (lo.min(x), hi.max(x)))
}

/// Byte quantization of finite values: `dst[i] = trunc(min(max((src[i] - lo) * inv + 0.5, 0), 255))`,
/// with a separate multiply and add (no FMA) in every implementation, so the bytes are identical on
/// every CPU.
pub fn quantize_u8(src: &[f32], lo: f32, inv: f32, dst: &mut [u8]) {
    assert_eq!(src.len(), dst.len());
    match Isa::detect() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2` and above are only returned after runtime detection of AVX2; the
        // lengths were asserted equal above.
        Isa::Avx2 | Isa::Avx512 | Isa::Avx512Bf16 => unsafe { x86::quantize_u8_avx2(src, lo, inv, dst) },
        _ => quantize_u8_portable(src, lo, inv, dst),
    }
}

fn quantize_u8_portable(src: &[f32], lo: f32, inv: f32, dst: &mut [u8]) {
    for (d, &v) in dst.iter_mut().zip(src) {
        *d = ((v - lo) * inv + 0.5).clamp(0.0, 255.0) as u8;
    }
}

/// Converts IEEE half-precision bits to `f32` (exact: every f16 is an f32).
pub fn f16_to_f32(src: &[u16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len());
    match Isa::detect() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2` implies F16C was detected at run time (see module docs).
        Isa::Avx2 | Isa::Avx512 | Isa::Avx512Bf16 => unsafe { x86::f16_to_f32_f16c(src, dst) },
        _ => src.iter().zip(dst).for_each(|(&s, d)| *d = half::f16::from_bits(s).to_f32()),
    }
}

/// Rounds f16 bits to bf16 bits (through f32, round to nearest even): what the staged rerank
/// scores f16 documents with on CPUs with AVX-512 BF16. `isa` picks the kernel; both give the same
/// bits.
pub fn f16_to_bf16(isa: Isa, src: &[u16], dst: &mut [u16]) {
    assert_eq!(src.len(), dst.len());
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Bf16 => {
            assert_eq!(Isa::detect(), Isa::Avx512Bf16, "AVX-512 BF16 kernel requested on a CPU without it");
            // SAFETY: AVX-512 F and BF16 detected just above; lengths checked above.
            unsafe { x86::f16_to_bf16_avx512(src, dst) }
        }
        _ => src
            .iter()
            .zip(dst)
            .for_each(|(&s, d)| *d = half::bf16::from_f32(half::f16::from_bits(s).to_f32()).to_bits()),
    }
}

/// Converts bfloat16 bits to `f32` (exact: a bf16 is the top half of an f32).
pub fn bf16_to_f32(src: &[u16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len());
    src.iter().zip(dst).for_each(|(&s, d)| *d = f32::from_bits((s as u32) << 16));
}

/// Query lanes per block of the MaxSim kernels: 4 AVX2 registers of 8 `f32`, or 2 AVX-512
/// registers of 16.
pub const MAXSIM_BLOCK_LANES: usize = 32;

impl Isa {
    /// Lanes a MaxSim query block of `used` tokens is padded to for this kernel: a multiple of 8.
    /// AVX-512 runs 16 lanes per register and a last 8 on a 256-bit one (see [`max_dots`]): a 19-
    /// token query pads to 24 lanes, not 32, and on CPUs whose 512-bit FMA costs two 256-bit ones
    /// (Zen 4) the padding is work.
    pub fn maxsim_lanes(self, used: usize) -> usize {
        (used.div_ceil(8) * 8).min(MAXSIM_BLOCK_LANES)
    }
}

/// For every document token `d` (rows of `doc`, `dim` wide) and every lane `l` of a query block,
/// `maxes[l] = max(maxes[l], ⟨q_l, d⟩)`. The block is stored dimension-major: coordinate `c` of
/// lane `l` at `block[c * lanes + l]`, `lanes` a multiple of 8 up to [`MAXSIM_BLOCK_LANES`]. With
/// [`Isa::Avx512`] a block of 16 or 32 lanes runs on 512-bit registers, one of 24 on a 512-bit and
/// a 256-bit register (see [`Isa::maxsim_lanes`]); 8 lanes run the AVX2 kernel.
pub fn max_dots(isa: Isa, block: &[f32], lanes: usize, dim: usize, doc: &[f32], maxes: &mut [f32]) {
    assert!(lanes.is_multiple_of(8) && (8..=MAXSIM_BLOCK_LANES).contains(&lanes), "lanes = {lanes}");
    assert_eq!(block.len(), dim * lanes);
    assert_eq!(doc.len() % dim, 0);
    assert_eq!(maxes.len(), lanes);
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Bf16 if lanes.is_multiple_of(16) => {
            assert!(Isa::available().contains(&Isa::Avx512), "AVX-512 kernel requested on a CPU without it");
            // SAFETY: AVX-512F detected just above; lengths checked above as the kernel requires.
            unsafe {
                match lanes / 16 {
                    1 => x86::max_dots_avx512::<1>(block, dim, doc, maxes),
                    _ => x86::max_dots_avx512::<2>(block, dim, doc, maxes),
                }
            }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Bf16 if lanes == 24 => {
            assert!(Isa::available().contains(&Isa::Avx512), "AVX-512 kernel requested on a CPU without it");
            // SAFETY: AVX-512F detected just above (AVX-512F implies the AVX2 and FMA the 256-bit
            // part uses, which `Isa::detect` also checked); lengths checked above.
            unsafe { x86::max_dots_avx512_24(block, dim, doc, maxes) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 | Isa::Avx512Bf16 => {
            assert!(Isa::available().contains(&Isa::Avx2), "AVX2 kernel requested on a CPU without it");
            // SAFETY: AVX2+FMA detected just above; lengths checked above as the kernel requires.
            unsafe {
                match lanes / 8 {
                    1 => x86::max_dots_avx2::<1>(block, dim, doc, maxes),
                    2 => x86::max_dots_avx2::<2>(block, dim, doc, maxes),
                    3 => x86::max_dots_avx2::<3>(block, dim, doc, maxes),
                    _ => x86::max_dots_avx2::<4>(block, dim, doc, maxes),
                }
            }
        }
        _ => max_dots_portable(block, lanes, dim, doc, maxes),
    }
}

/// Most query tokens the document-major kernel ([`max_dots_doc_major`]) takes.
pub const DOC_MAJOR_MAX_QUERY: usize = 8;

/// Document token storage for [`max_dots_doc_major`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DocValues<'a> {
    /// `f32` values.
    F32(&'a [f32]),
    /// `f16` bit patterns.
    F16(&'a [u16]),
    /// `bf16` bit patterns.
    Bf16(&'a [u16]),
}

impl DocValues<'_> {
    fn len(&self) -> usize {
        match self {
            DocValues::F32(v) => v.len(),
            DocValues::F16(v) | DocValues::Bf16(v) => v.len(),
        }
    }
}

/// MaxSim maxima for a short query, document-major: for every document token (rows of `doc`,
/// `dim` values each) and query token `i` (rows of `query`, row-major, at most
/// [`DOC_MAJOR_MAX_QUERY`]), `maxes[i] = max(maxes[i], ⟨q_i, d⟩)`. The AVX-512 kernel streams each
/// document token 16 coordinates at a time, widening 16-bit values in registers, with one FMA per
/// query token; a short query then costs about one instruction per coordinate instead of a
/// broadcast and an FMA per coordinate over padded lanes. The AVX2 variant does the same 8
/// coordinates at a time. Needs `dim` a multiple of 16 (AVX-512) or 8 (AVX2) for a kernel;
/// anything else runs the portable definition.
pub fn max_dots_doc_major(isa: Isa, query: &[f32], dim: usize, doc: DocValues<'_>, maxes: &mut [f32]) {
    let nq = maxes.len();
    assert!((1..=DOC_MAJOR_MAX_QUERY).contains(&nq), "query tokens = {nq}");
    assert!(dim > 0);
    assert_eq!(query.len(), nq * dim);
    assert_eq!(doc.len() % dim, 0);
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Bf16 if dim.is_multiple_of(16) => {
            assert!(Isa::available().contains(&Isa::Avx512), "AVX-512 kernel requested on a CPU without it");
            // SAFETY: AVX-512 F detected just above; lengths checked above as the kernel requires.
            unsafe { x86::max_dots_doc_major_avx512(query, dim, doc, maxes) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 | Isa::Avx512Bf16 if dim.is_multiple_of(8) => {
            assert!(Isa::available().contains(&Isa::Avx2), "AVX2 kernel requested on a CPU without it");
            // SAFETY: AVX2, FMA and F16C detected just above; lengths checked above.
            unsafe { x86::max_dots_doc_major_avx2(query, dim, doc, maxes) }
        }
        _ => {
            let n = doc.len() / dim;
            for t in 0..n {
                for (i, m) in maxes.iter_mut().enumerate() {
                    let q = &query[i * dim..(i + 1) * dim];
                    let dot: f32 = match doc {
                        DocValues::F32(v) => q.iter().zip(&v[t * dim..(t + 1) * dim]).map(|(a, b)| a * b).sum(),
                        DocValues::F16(v) => q
                            .iter()
                            .zip(&v[t * dim..(t + 1) * dim])
                            .map(|(a, &b)| a * half::f16::from_bits(b).to_f32())
                            .sum(),
                        DocValues::Bf16(v) => q
                            .iter()
                            .zip(&v[t * dim..(t + 1) * dim])
                            .map(|(a, &b)| a * half::bf16::from_bits(b).to_f32())
                            .sum(),
                    };
                    *m = m.max(dot);
                }
            }
        }
    }
}

/// Whether bf16 documents use the `vdpbf16ps` kernels when the CPU has AVX-512 BF16: yes unless
/// `QUIVERDB_BF16_DOT=0` (read once). On the AMD EPYC (Zen 4) this was measured on, the blocked
/// kernel ran at 2.26x the f16 kernel's throughput (`cargo bench --bench maxsim`, CHANGELOG).
pub fn bf16_dot_enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var_os("QUIVERDB_BF16_DOT").is_none_or(|v| v != "0"))
}

/// Coordinates one step of the document-major bf16 kernel takes (one 512-bit register of bf16).
pub const DOC_MAJOR_BF16_WIDTH: usize = 32;

/// [`max_dots_doc_major`] for bf16 documents against a query rounded to bf16 (`query`, row-major bf16
/// bits, at most [`DOC_MAJOR_MAX_QUERY`] rows): `maxes[i] = max(maxes[i], Σ_c q_i[c] · d[c])`, products
/// summed in f32. [`Isa::Avx512Bf16`] with `dim` a multiple of [`DOC_MAJOR_BF16_WIDTH`] runs
/// `vdpbf16ps` on 32 coordinates of a document token per instruction; anything else runs the
/// portable definition (what the tests compare the kernel with).
pub fn max_dots_doc_major_bf16(isa: Isa, query: &[u16], dim: usize, doc: &[u16], maxes: &mut [f32]) {
    let nq = maxes.len();
    assert!((1..=DOC_MAJOR_MAX_QUERY).contains(&nq), "query tokens = {nq}");
    assert!(dim > 0);
    assert_eq!(query.len(), nq * dim);
    assert_eq!(doc.len() % dim, 0);
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Bf16 if dim.is_multiple_of(DOC_MAJOR_BF16_WIDTH) => {
            assert_eq!(Isa::detect(), Isa::Avx512Bf16, "AVX-512 BF16 kernel requested on a CPU without it");
            // SAFETY: AVX-512 F and BF16 detected just above; lengths checked above.
            unsafe { x86::max_dots_doc_major_bf16_avx512(query, dim, doc, maxes) }
        }
        _ => {
            let bf = |b: u16| half::bf16::from_bits(b).to_f32();
            for token in doc.chunks_exact(dim) {
                for (i, m) in maxes.iter_mut().enumerate() {
                    let q = &query[i * dim..(i + 1) * dim];
                    let dot: f32 = q.iter().zip(token).map(|(&a, &b)| bf(a) * bf(b)).sum();
                    *m = m.max(dot);
                }
            }
        }
    }
}

/// The bf16 pair layout of a query block for [`max_dots_bf16`]: for coordinate pair `p` (coordinates
/// `2p`, `2p + 1`) and lane `l`, `out[(p * lanes + l) * 2 + k]` holds coordinate `2p + k` of lane `l`
/// rounded to bf16 (round to nearest even). `block` is dimension-major as for [`max_dots`]; `dim` is
/// even.
pub fn bf16_pair_block(block: &[f32], lanes: usize, dim: usize) -> Vec<u16> {
    debug_assert!(dim.is_multiple_of(2) && block.len() == dim * lanes);
    let mut out = vec![0u16; dim * lanes];
    for p in 0..dim / 2 {
        for l in 0..lanes {
            for k in 0..2 {
                out[(p * lanes + l) * 2 + k] = half::bf16::from_f32(block[(2 * p + k) * lanes + l]).to_bits();
            }
        }
    }
    out
}

/// [`max_dots`] for bf16 document tokens (`doc`, `dim` values each, `dim` even) against a query
/// block in [`bf16_pair_block`] layout: `maxes[l] = max(maxes[l], Σ_c q_l[c] · d[c])` with `q` rounded
/// to bf16 and products summed in f32. [`Isa::Avx512Bf16`] runs `vdpbf16ps`; any other `isa` runs the
/// portable definition (what the tests compare the kernel with).
pub fn max_dots_bf16(isa: Isa, pairs: &[u16], lanes: usize, dim: usize, doc: &[u16], maxes: &mut [f32]) {
    assert!(lanes.is_multiple_of(16) && (16..=MAXSIM_BLOCK_LANES).contains(&lanes), "lanes = {lanes}");
    assert!(dim > 0 && dim.is_multiple_of(2), "dim = {dim}");
    assert_eq!(pairs.len(), dim * lanes);
    assert_eq!(doc.len() % dim, 0);
    assert_eq!(maxes.len(), lanes);
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Bf16 => {
            assert_eq!(Isa::detect(), Isa::Avx512Bf16, "AVX-512 BF16 kernel requested on a CPU without it");
            // SAFETY: AVX-512 F and BF16 detected just above; lengths checked above.
            unsafe {
                match lanes / 16 {
                    1 => x86::max_dots_bf16_avx512::<1>(pairs, dim, doc, maxes),
                    _ => x86::max_dots_bf16_avx512::<2>(pairs, dim, doc, maxes),
                }
            }
        }
        _ => {
            for token in doc.chunks_exact(dim) {
                for (l, m) in maxes.iter_mut().enumerate() {
                    let mut acc = 0f32;
                    for p in 0..dim / 2 {
                        for k in 0..2 {
                            let q = half::bf16::from_bits(pairs[(p * lanes + l) * 2 + k]).to_f32();
                            acc += q * half::bf16::from_bits(token[2 * p + k]).to_f32();
                        }
                    }
                    *m = m.max(acc);
                }
            }
        }
    }
}

/// True when [`dots_bf16`] runs `vdpbf16ps` here for `dim`-wide rows: AVX-512 BF16 detected, the
/// bf16 kernels not turned off ([`bf16_dot_enabled`]), `dim` even.
pub fn bf16_dots_available(dim: usize) -> bool {
    Isa::detect() == Isa::Avx512Bf16 && bf16_dot_enabled() && dim > 0 && dim.is_multiple_of(2)
}

/// Inner products of bf16 rows with a query block: for every row `r` of `rows` (`dim` values each,
/// `dim` even) and lane `l` of a [`bf16_pair_block`] (`lanes` a multiple of 16, at most
/// [`MAXSIM_BLOCK_LANES`]), `out[r * stride + col + l] = Σ_c q_l[c] · r[c]`, products summed in f32.
/// The rest of `out` is left alone. [`Isa::Avx512Bf16`] runs `vdpbf16ps`; any other `isa` runs the
/// portable definition (what the tests compare the kernel with).
#[allow(clippy::too_many_arguments)] // a strided output window needs its stride and column
pub fn dots_bf16(
    isa: Isa,
    pairs: &[u16],
    lanes: usize,
    dim: usize,
    rows: &[u16],
    out: &mut [f32],
    stride: usize,
    col: usize,
) {
    assert!(lanes.is_multiple_of(16) && (16..=MAXSIM_BLOCK_LANES).contains(&lanes), "lanes = {lanes}");
    assert!(dim > 0 && dim.is_multiple_of(2), "dim = {dim}");
    assert_eq!(pairs.len(), dim * lanes);
    assert_eq!(rows.len() % dim, 0);
    let n = rows.len() / dim;
    assert!(col + lanes <= stride && out.len() >= n * stride, "output window out of bounds");
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Bf16 => {
            assert_eq!(Isa::detect(), Isa::Avx512Bf16, "AVX-512 BF16 kernel requested on a CPU without it");
            // SAFETY: AVX-512 F and BF16 detected just above; lengths checked above.
            unsafe {
                match lanes / 16 {
                    1 => x86::dots_bf16_avx512::<1>(pairs, dim, rows, out, stride, col),
                    _ => x86::dots_bf16_avx512::<2>(pairs, dim, rows, out, stride, col),
                }
            }
        }
        _ => {
            for (r, row) in rows.chunks_exact(dim).enumerate() {
                for l in 0..lanes {
                    let mut acc = 0f32;
                    for p in 0..dim / 2 {
                        for k in 0..2 {
                            let q = half::bf16::from_bits(pairs[(p * lanes + l) * 2 + k]).to_f32();
                            acc += q * half::bf16::from_bits(row[2 * p + k]).to_f32();
                        }
                    }
                    out[r * stride + col + l] = acc;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic stream of values in [-1, 1) (an LCG), for the kernel tests.
    fn uniform(seed: u64) -> impl FnMut() -> f32 {
        let mut state = seed;
        move || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
        }
    }

    #[test]
    fn row_screens_match_their_definitions() {
        let mut next = uniform(0x005c_4ee7);
        for rows in [0usize, 1, 3, 77] {
            let scores: Vec<f32> = (0..rows * SCREEN_LANES).map(|_| next()).collect();
            let offsets: Vec<f32> = (0..rows).map(|_| next() * 0.1).collect();
            let mut top = [f32::NEG_INFINITY; SCREEN_LANES];
            top[5] = 0.5;
            let mut want = top;
            for (row, &o) in scores.chunks_exact(SCREEN_LANES).zip(&offsets) {
                for l in 0..SCREEN_LANES {
                    want[l] = want[l].max(row[l] - o);
                }
            }
            row_maxima(&scores, &offsets, &mut top);
            assert_eq!(top, want, "{rows} rows");
            let mut floor = [0f32; SCREEN_LANES];
            for (l, f) in floor.iter_mut().enumerate() {
                *f = if l == 9 { f32::INFINITY } else { want[l] - 0.3 };
            }
            let (mut got, mut expected) = (Vec::new(), Vec::new());
            rows_near(&scores, &offsets, &floor, &mut got);
            rows_near_portable(&scores, &offsets, &floor, &mut expected);
            assert_eq!(got, expected, "{rows} rows");
            // Every lane's own maximum is near, but lane 9's (an infinite floor) and lane 5's
            // (whose maximum may be the starting value, no row's).
            assert!(rows == 0 || got.len() >= SCREEN_LANES - 2, "each maximum is near its floor");
        }
    }

    #[test]
    fn normalized_rows_are_unit_length_and_zero_rows_stay_zero() {
        let mut next = uniform(11);
        // 16-multiple widths take the AVX-512 kernel where the CPU has it; 24 the per-row loop.
        for dim in [16, 24, 48, 128] {
            let mut rows: Vec<f32> = (0..5 * dim).map(|_| 3.0 * next()).collect();
            rows[2 * dim..3 * dim].fill(0.0);
            let want: Vec<f32> = rows
                .chunks_exact(dim)
                .flat_map(|r| {
                    let n = r.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
                    r.iter().map(move |&v| if n > 0.0 { (v as f64 / n) as f32 } else { v }).collect::<Vec<_>>()
                })
                .collect();
            normalize_rows(&mut rows, dim);
            for (i, (&g, &w)) in rows.iter().zip(&want).enumerate() {
                assert!((g - w).abs() <= 1e-6, "dim {dim}, value {i}: {g} vs {w}");
            }
            assert!(rows[2 * dim..3 * dim].iter().all(|&v| v == 0.0), "a zero row stays zero");
        }
    }

    #[test]
    fn int8_dot_kernels_are_exact() {
        let mut next = uniform(0x01b8_0d07);
        for n in (0..300).chain([1024, 1024 + 63, 4096]) {
            // Random values, then the extremes (the largest sums a group of products can reach).
            for extreme in [false, true] {
                let draw = |next: &mut dyn FnMut() -> f32| -> i8 {
                    if extreme {
                        if next() < 0.0 {
                            -127
                        } else {
                            127
                        }
                    } else {
                        (next() * 127.0).round() as i8
                    }
                };
                let a: Vec<i8> = (0..n).map(|_| draw(&mut next)).collect();
                let b: Vec<i8> = (0..n).map(|_| draw(&mut next)).collect();
                let want: i64 = a.iter().zip(&b).map(|(&x, &y)| x as i64 * y as i64).sum();
                assert_eq!(dot_i8_portable(&a, &b) as i64, want, "portable, n = {n}");
                assert_eq!(dot_i8(&a, &b) as i64, want, "dispatched, n = {n}");
                #[cfg(target_arch = "x86_64")]
                {
                    if Isa::Avx2.supported() {
                        // SAFETY: AVX2 was detected.
                        assert_eq!(unsafe { x86::dot_i8_avx2(&a, &b) } as i64, want, "avx2, n = {n}");
                    }
                    if int8_vnni() {
                        // SAFETY: AVX-512 F/BW/VNNI were detected.
                        assert_eq!(unsafe { x86::dot_i8_avx512vnni(&a, &b) } as i64, want, "vnni, n = {n}");
                    }
                }
            }
        }
        if !int8_vnni() {
            eprintln!("note: no AVX-512 VNNI on this CPU; the vpdpbusd int8 kernel is not run");
        }
    }

    #[test]
    fn bf16_dots_kernel_matches_its_definition() {
        let have = Isa::available().contains(&Isa::Avx512Bf16);
        if !have {
            eprintln!("note: no AVX-512 BF16 on this CPU; the vdpbf16ps dots kernel is not run");
        }
        let mut next = uniform(0x0bad_cafeu64);
        for &(lanes, dim, n, stride, col) in
            &[(16, 2, 1, 16, 0), (16, 128, 7, 48, 32), (32, 128, 13, 32, 0), (32, 6, 20, 48, 16)]
        {
            let block: Vec<f32> = (0..lanes * dim).map(|_| next()).collect();
            let pairs = bf16_pair_block(&block, lanes, dim);
            let rows: Vec<u16> = (0..n * dim).map(|_| half::bf16::from_f32(next()).to_bits()).collect();
            let mut want = vec![7f32; n * stride];
            dots_bf16(Isa::Portable, &pairs, lanes, dim, &rows, &mut want, stride, col);
            for r in 0..n {
                for c in 0..stride {
                    let w = want[r * stride + c];
                    if c < col || c >= col + lanes {
                        assert_eq!(w, 7.0, "outside the window");
                        continue;
                    }
                    let l = c - col;
                    let plain: f32 = (0..dim)
                        .map(|d| {
                            half::bf16::from_f32(block[d * lanes + l]).to_f32()
                                * half::bf16::from_bits(rows[r * dim + d]).to_f32()
                        })
                        .sum();
                    assert!((plain - w).abs() <= 1e-4 * dim as f32, "definition: {plain} vs {w}");
                }
            }
            if have {
                let mut got = vec![7f32; n * stride];
                dots_bf16(Isa::Avx512Bf16, &pairs, lanes, dim, &rows, &mut got, stride, col);
                for (g, w) in got.iter().zip(&want) {
                    assert!((g - w).abs() <= 1e-4 * dim as f32, "lanes {lanes} dim {dim} n {n}: {g} vs {w}");
                }
            }
        }
    }

    #[test]
    fn bf16_dot_kernel_matches_its_definition() {
        // Runs the AVX-512 BF16 kernel where the CPU has it; elsewhere only the portable
        // definition is exercised (the test then says so).
        let have = Isa::available().contains(&Isa::Avx512Bf16);
        if !have {
            eprintln!("note: no AVX-512 BF16 on this CPU; the vdpbf16ps kernel is not run");
        }
        let mut next = uniform(0x1234_5678u64);
        for &(lanes, dim, n) in &[(16, 2, 1), (16, 128, 7), (32, 128, 13), (32, 6, 6), (16, 64, 100)] {
            let block: Vec<f32> = (0..lanes * dim).map(|_| next()).collect();
            let pairs = bf16_pair_block(&block, lanes, dim);
            let doc: Vec<u16> = (0..n * dim).map(|_| half::bf16::from_f32(next()).to_bits()).collect();
            let mut want = vec![f32::NEG_INFINITY; lanes];
            max_dots_bf16(Isa::Portable, &pairs, lanes, dim, &doc, &mut want);
            // The definition against a plain f32 MaxSim of the rounded values.
            for (l, w) in want.iter().enumerate() {
                let best = doc
                    .chunks_exact(dim)
                    .map(|t| {
                        (0..dim)
                            .map(|c| {
                                half::bf16::from_f32(block[c * lanes + l]).to_f32()
                                    * half::bf16::from_bits(t[c]).to_f32()
                            })
                            .sum::<f32>()
                    })
                    .fold(f32::NEG_INFINITY, f32::max);
                assert!((best - w).abs() <= 1e-4 * dim as f32, "lane {l}: {best} vs {w}");
            }
            if have {
                let mut got = vec![f32::NEG_INFINITY; lanes];
                max_dots_bf16(Isa::Avx512Bf16, &pairs, lanes, dim, &doc, &mut got);
                for (g, w) in got.iter().zip(&want) {
                    assert!((g - w).abs() <= 1e-4 * dim as f32, "lanes {lanes} dim {dim} n {n}: {g} vs {w}");
                }
            }
        }
    }

    #[test]
    fn doc_major_kernel_matches_its_definition() {
        let have = Isa::available().contains(&Isa::Avx512);
        if !have {
            eprintln!("note: no AVX-512 on this CPU; the document-major kernel is not run");
        }
        let mut next = uniform(0x9e37_79b9u64);
        for &(nq, dim, n) in &[(1, 16, 1), (3, 128, 7), (8, 64, 2), (5, 32, 13), (2, 128, 200)] {
            let query: Vec<f32> = (0..nq * dim).map(|_| next()).collect();
            let f32s: Vec<f32> = (0..n * dim).map(|_| next()).collect();
            let f16s: Vec<u16> = f32s.iter().map(|&v| half::f16::from_f32(v).to_bits()).collect();
            let bf16s: Vec<u16> = f32s.iter().map(|&v| half::bf16::from_f32(v).to_bits()).collect();
            for doc in [DocValues::F32(&f32s), DocValues::F16(&f16s), DocValues::Bf16(&bf16s)] {
                let mut want = vec![f32::NEG_INFINITY; nq];
                max_dots_doc_major(Isa::Portable, &query, dim, doc, &mut want);
                for isa in Isa::available().into_iter().filter(|&i| i == Isa::Avx2 || (i == Isa::Avx512 && have)) {
                    let mut got = vec![f32::NEG_INFINITY; nq];
                    max_dots_doc_major(isa, &query, dim, doc, &mut got);
                    for (g, w) in got.iter().zip(&want) {
                        assert!((g - w).abs() <= 1e-4 * dim as f32, "{isa:?} nq {nq} dim {dim} n {n}: {g} vs {w}");
                    }
                }
            }
        }
    }

    #[test]
    fn doc_major_bf16_kernel_matches_its_definition() {
        let have = Isa::available().contains(&Isa::Avx512Bf16);
        if !have {
            eprintln!("note: no AVX-512 BF16 on this CPU; the document-major vdpbf16ps kernel is not run");
        }
        let mut next = uniform(0x5151_7777u64);
        let bf = |v: f32| half::bf16::from_f32(v).to_bits();
        for &(nq, dim, n) in &[(1, 32, 1), (3, 128, 7), (8, 64, 2), (5, 96, 13), (2, 128, 200), (4, 20, 3)] {
            let query: Vec<u16> = (0..nq * dim).map(|_| bf(next())).collect();
            let doc: Vec<u16> = (0..n * dim).map(|_| bf(next())).collect();
            let mut want = vec![f32::NEG_INFINITY; nq];
            max_dots_doc_major_bf16(Isa::Portable, &query, dim, &doc, &mut want);
            // The definition against a plain f32 MaxSim of the same values.
            let as_f32 = |v: &[u16]| v.iter().map(|&b| half::bf16::from_bits(b).to_f32()).collect::<Vec<f32>>();
            let (qf, df) = (as_f32(&query), as_f32(&doc));
            let mut plain = vec![f32::NEG_INFINITY; nq];
            max_dots_doc_major(Isa::Portable, &qf, dim, DocValues::F32(&df), &mut plain);
            for (p, w) in plain.iter().zip(&want) {
                assert!((p - w).abs() <= 1e-4 * dim as f32, "definition nq {nq} dim {dim}: {p} vs {w}");
            }
            if have {
                let mut got = vec![f32::NEG_INFINITY; nq];
                max_dots_doc_major_bf16(Isa::Avx512Bf16, &query, dim, &doc, &mut got);
                for (g, w) in got.iter().zip(&want) {
                    assert!((g - w).abs() <= 1e-4 * dim as f32, "nq {nq} dim {dim} n {n}: {g} vs {w}");
                }
            }
        }
    }

    #[test]
    fn byte_quantization_and_ranges_match_the_portable_definitions() {
        let mut state = 0xabcd_ef01u64;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 33) as f32 / (1u64 << 31) as f32) * 8.0 - 4.0
        };
        for n in [0usize, 1, 7, 8, 9, 31, 32, 33, 256, 300] {
            let v: Vec<f32> = (0..n).map(|_| next()).collect();
            let (lo, hi) = min_max(&v);
            assert_eq!((lo, hi), min_max_portable(&v), "n {n}");
            if n > 0 {
                assert_eq!(lo, v.iter().copied().fold(f32::INFINITY, f32::min));
                assert_eq!(hi, v.iter().copied().fold(f32::NEG_INFINITY, f32::max));
            }
            // Also values past both ends of the byte range, which clamp.
            for &(lo, inv) in &[(lo, 255.0 / (hi - lo).max(1e-6)), (0.0, 40.0), (-1.0, 1.0)] {
                let mut got = vec![0u8; n];
                let mut want = vec![0u8; n];
                quantize_u8(&v, lo, inv, &mut got);
                quantize_u8_portable(&v, lo, inv, &mut want);
                assert_eq!(got, want, "n {n} lo {lo} inv {inv}");
            }
        }
        let mut one = [0u8; 3];
        quantize_u8_portable(&[-5.0, 2.49, 1e9], 0.0, 1.0, &mut one);
        assert_eq!(one, [0, 2, 255]);
    }

    #[test]
    fn dot_matches_naive_sum() {
        for n in [0usize, 1, 7, 8, 15, 16, 17, 100, 1031] {
            let a: Vec<f32> = (0..n).map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 5 % 11) as f32 - 5.0) / 4.0).collect();
            let want: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            assert!((dot(&a, &b) as f64 - want).abs() < 1e-3, "n={n}");
            assert!((dot_portable(&a, &b) as f64 - want).abs() < 1e-3, "n={n}");
        }
    }

    #[test]
    fn mat_mul_is_the_sequential_sum_bit_for_bit() {
        let (rows, inner, cols) = (7, 5, 32);
        let x: Vec<f32> = (0..rows * inner).map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0).collect();
        let m: Vec<f32> = (0..inner * cols).map(|i| ((i * 53 % 97) as f32 - 48.0) / 13.0).collect();
        let mut want = vec![0f32; rows * cols];
        for r in 0..rows {
            for c in 0..cols {
                let mut acc = 0f32;
                for i in 0..inner {
                    acc += x[r * inner + i] * m[i * cols + c];
                }
                want[r * cols + c] = acc;
            }
        }
        let mut got = vec![0f32; rows * cols];
        mat_mul(&x, inner, &m, cols, &mut got, Rounding::Separate);
        assert_eq!(got, want);
        // With exact products (entries in {-1, 0, 1}) fused rounding is bit-identical too.
        let signs: Vec<f32> = m.iter().map(|v| v.signum() * (v.abs() > 1.0) as u8 as f32).collect();
        let mut want_signs = vec![0f32; rows * cols];
        mat_mul_portable(&x, inner, &signs, cols, &mut want_signs);
        mat_mul(&x, inner, &signs, cols, &mut got, Rounding::Fused);
        assert_eq!(got, want_signs);
        let mut portable = vec![0f32; rows * cols];
        mat_mul_portable(&x, inner, &m, cols, &mut portable);
        assert_eq!(portable, want);
    }

    #[test]
    fn nearest_centroid_kernels_agree_with_brute_force() {
        let sub_dim = 5;
        let centroids: Vec<f32> =
            (0..PQ_CENTROIDS * sub_dim).map(|i| ((i * 7919 % 1009) as f32 - 504.0) / 100.0).collect();
        let mut ct = vec![0f32; sub_dim * PQ_CENTROIDS];
        for c in 0..PQ_CENTROIDS {
            for d in 0..sub_dim {
                ct[d * PQ_CENTROIDS + c] = centroids[c * sub_dim + d];
            }
        }
        let norms: Vec<f32> = centroids.chunks(sub_dim).map(|c| c.iter().map(|v| v * v).sum()).collect();
        // Points on top of centroids (incl. a duplicate-free tie check) and in between.
        let mut points: Vec<f32> = centroids[..40 * sub_dim].to_vec();
        points.extend((0..60 * sub_dim).map(|i| ((i * 104729 % 997) as f32 - 498.0) / 90.0));
        let n = points.len() / sub_dim;
        let (mut assign, mut dist) = (vec![0u8; n], vec![0f32; n]);
        nearest_centroid(&points, sub_dim, &ct, &norms, &mut assign, &mut dist);
        let (mut assign_p, mut dist_p) = (vec![0u8; n], vec![0f32; n]);
        nearest_centroid_portable(&points, sub_dim, &ct, &norms, &mut assign_p, &mut dist_p);
        // Each kernel this CPU has, by name, gives the portable kernel's ids.
        #[cfg(target_arch = "x86_64")]
        for isa in Isa::available() {
            let (mut a, mut d) = (vec![0u8; n], vec![0f32; n]);
            // SAFETY: `isa` is available on this CPU; the lengths match.
            unsafe {
                match isa {
                    Isa::Avx2 => x86::nearest_centroid_avx2(&points, sub_dim, &ct, &norms, &mut a, &mut d),
                    Isa::Avx512 => x86::nearest_centroid_avx512(&points, sub_dim, &ct, &norms, &mut a, &mut d),
                    _ => continue,
                }
            }
            assert_eq!(a, assign_p, "{} ids", isa.name());
            for (x, y) in d.iter().zip(&dist_p) {
                assert!((x - y).abs() <= 1e-3, "{}: distance {x} against {y}", isa.name());
            }
        }
        for p in 0..n {
            let x = &points[p * sub_dim..(p + 1) * sub_dim];
            let d2 = |c: usize| {
                x.iter().zip(&centroids[c * sub_dim..(c + 1) * sub_dim]).map(|(a, b)| (a - b) * (a - b)).sum::<f32>()
            };
            let best = (0..PQ_CENTROIDS).map(d2).fold(f32::INFINITY, f32::min);
            for (a, d) in [(assign[p], dist[p]), (assign_p[p], dist_p[p])] {
                assert!(d2(a as usize) <= best + 1e-3, "point {p}: {} vs {best}", d2(a as usize));
                assert!((d - best).abs() <= 1e-3, "point {p}: distance {d} vs {best}");
            }
            if p < 40 {
                assert_eq!(assign[p] as usize, p, "a point on centroid {p}");
            }
        }
    }

    #[test]
    fn f16_centroid_dots_match_their_definition() {
        let (m, sub_dim) = (3, 8);
        let ct: Vec<f32> = (0..m * sub_dim * PQ_CENTROIDS).map(|i| ((i * 7919 % 1013) as f32 - 506.0) / 97.0).collect();
        // Values exactly representable in f16, so only the f32 sums' rounding differs.
        let ct: Vec<f32> = ct.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect();
        let bits: Vec<u16> = ct.iter().map(|&v| half::f16::from_f32(v).to_bits()).collect();
        let x: Vec<f32> = (0..m * sub_dim).map(|i| ((i * 131 % 61) as f32 - 30.0) / 11.0).collect();
        let mut want = vec![0f32; m * PQ_CENTROIDS];
        for s in 0..m {
            for c in 0..PQ_CENTROIDS {
                want[s * PQ_CENTROIDS + c] =
                    (0..sub_dim).map(|d| x[s * sub_dim + d] * ct[(s * sub_dim + d) * PQ_CENTROIDS + c]).sum();
            }
        }
        let mut fused = Vec::new();
        for isa in Isa::available() {
            let mut got = vec![0f32; m * PQ_CENTROIDS];
            centroid_dots_f16_with(isa, &x, sub_dim, &bits, &mut got);
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "{isa:?}: {g} vs {w}");
            }
            if isa != Isa::Portable {
                fused.push((isa, got));
            }
        }
        // The AVX2 and AVX-512 kernels run the same fused multiply-adds in the same order.
        for (isa, got) in &fused {
            assert_eq!(got, &fused[0].1, "{isa:?} against {:?}", fused[0].0);
        }
    }

    #[test]
    fn encode_subspaces_equals_one_search_per_subspace() {
        let (m, sub_dim) = (5, 8);
        let ct: Vec<f32> = (0..m * sub_dim * PQ_CENTROIDS).map(|i| ((i * 7919 % 1013) as f32 - 506.0) / 97.0).collect();
        let mut norms = vec![0f32; m * PQ_CENTROIDS];
        for s in 0..m {
            for c in 0..PQ_CENTROIDS {
                norms[s * PQ_CENTROIDS + c] =
                    (0..sub_dim).map(|d| ct[(s * sub_dim + d) * PQ_CENTROIDS + c].powi(2)).sum();
            }
        }
        let vector: Vec<f32> = (0..m * sub_dim).map(|i| ((i * 131 % 61) as f32 - 30.0) / 11.0).collect();
        let mut code = vec![0u8; m];
        encode_subspaces(&vector, sub_dim, &ct, &norms, &mut code);
        let mut portable = vec![0u8; m];
        encode_subspaces_with(&vector, sub_dim, &ct, &norms, &mut portable, nearest_centroid_portable);
        assert_eq!(code, portable);
        for s in 0..m {
            let x = &vector[s * sub_dim..(s + 1) * sub_dim];
            let d2 =
                |c: usize| (0..sub_dim).map(|d| (x[d] - ct[(s * sub_dim + d) * PQ_CENTROIDS + c]).powi(2)).sum::<f32>();
            let best = (0..PQ_CENTROIDS).map(d2).fold(f32::INFINITY, f32::min);
            assert!(d2(code[s] as usize) <= best + 1e-3, "subspace {s}");
        }
    }

    #[test]
    fn f16_to_bf16_kernels_agree_bit_for_bit() {
        // Every f16 bit pattern that is finite, in an odd length so the scalar tail runs too.
        let src: Vec<u16> = (0..=u16::MAX).filter(|&b| half::f16::from_bits(b).is_finite()).take(63_487).collect();
        let mut want = vec![0u16; src.len()];
        f16_to_bf16(Isa::Portable, &src, &mut want);
        for (&s, &w) in src.iter().zip(&want) {
            let exact = half::f16::from_bits(s).to_f32();
            let rounded = half::bf16::from_bits(w).to_f32();
            assert!((exact - rounded).abs() <= exact.abs() / 256.0, "{exact} -> {rounded}");
        }
        if Isa::available().contains(&Isa::Avx512Bf16) {
            let mut got = vec![0u16; src.len()];
            f16_to_bf16(Isa::Avx512Bf16, &src, &mut got);
            assert_eq!(got, want);
        } else {
            eprintln!("note: no AVX-512 BF16 on this CPU; the f16-to-bf16 kernel is not run");
        }
    }

    #[test]
    fn element_wise_helpers_are_exact() {
        let mut acc = vec![1.0f32; 19];
        let row: Vec<f32> = (0..19).map(|i| i as f32).collect();
        add_scaled_portable(&mut acc, &row, 0.5);
        add_rows_into(&mut acc, 19, &row, &[0]);
        assert!(acc.iter().enumerate().all(|(i, &v)| v == 1.0 + 1.5 * i as f32));
        let mut sums = vec![0f32; 4];
        add_rows_into(&mut sums, 2, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[1, 0, 1]);
        assert_eq!(sums, vec![3.0, 4.0, 6.0, 8.0]);
        let bits: Vec<u16> = (0..19).map(|i| half::f16::from_f32(i as f32 - 9.0).to_bits()).collect();
        let mut out = vec![0f32; 19];
        f16_to_f32(&bits, &mut out);
        assert!(out.iter().enumerate().all(|(i, &v)| v == i as f32 - 9.0));
        bf16_to_f32(&[0x3f80, 0xc000], &mut out[..2]);
        assert_eq!(&out[..2], &[1.0, -2.0]);
    }
}

fn max_dots_portable(block: &[f32], lanes: usize, dim: usize, doc: &[f32], maxes: &mut [f32]) {
    let mut acc = [0f32; MAXSIM_BLOCK_LANES];
    let acc = &mut acc[..lanes];
    for token in doc.chunks_exact(dim) {
        acc.fill(0.0);
        for (&x, q) in token.iter().zip(block.chunks_exact(lanes)) {
            acc.iter_mut().zip(q).for_each(|(a, q)| *a += x * q);
        }
        maxes.iter_mut().zip(acc.iter()).for_each(|(m, a)| *m = m.max(*a));
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// [`super::centroid_maxima`] on 8-lane registers, 16 lanes per pass over the ids.
    ///
    /// # Safety
    /// AVX2 available; every `id · lanes + lanes ≤ table.len()`; `maxes.len() == lanes`, a
    /// multiple of 16.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn centroid_maxima_avx2(table: &[f32], lanes: usize, ids: &[u16], maxes: &mut [f32]) {
        let base = table.as_ptr();
        for block in (0..lanes).step_by(16) {
            // SAFETY: block + 16 ≤ lanes = maxes.len(); each id indexes a whole row (caller).
            unsafe {
                let out = maxes.as_mut_ptr().add(block);
                let mut a0 = _mm256_loadu_ps(out);
                let mut a1 = _mm256_loadu_ps(out.add(8));
                for &c in ids {
                    let p = base.add(c as usize * lanes + block);
                    a0 = _mm256_max_ps(a0, _mm256_loadu_ps(p));
                    a1 = _mm256_max_ps(a1, _mm256_loadu_ps(p.add(8)));
                }
                _mm256_storeu_ps(out, a0);
                _mm256_storeu_ps(out.add(8), a1);
            }
        }
    }

    /// [`super::normalize_rows`] on 16-lane registers: two accumulators of squares per row, one
    /// horizontal sum, one reciprocal square root in f32, one multiply per value.
    ///
    /// # Safety
    /// AVX-512 F available; `dim` a multiple of 16 and `rows.len()` a multiple of `dim`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn normalize_rows_avx512(rows: &mut [f32], dim: usize) {
        for row in rows.chunks_exact_mut(dim) {
            let p = row.as_mut_ptr();
            let (mut a0, mut a1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
            let mut i = 0;
            while i + 32 <= dim {
                // SAFETY: i + 32 ≤ dim: inside the row.
                unsafe {
                    let (x, y) = (_mm512_loadu_ps(p.add(i)), _mm512_loadu_ps(p.add(i + 16)));
                    a0 = _mm512_fmadd_ps(x, x, a0);
                    a1 = _mm512_fmadd_ps(y, y, a1);
                }
                i += 32;
            }
            if i < dim {
                // SAFETY: dim is a multiple of 16, so the last 16 are inside the row.
                let x = unsafe { _mm512_loadu_ps(p.add(i)) };
                a0 = _mm512_fmadd_ps(x, x, a0);
            }
            let n = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1)).sqrt();
            if n > 0.0 {
                let inverse = _mm512_set1_ps(1.0 / n);
                for at in (0..dim).step_by(16) {
                    // SAFETY: at + 16 ≤ dim: inside the row.
                    unsafe { _mm512_storeu_ps(p.add(at), _mm512_mul_ps(_mm512_loadu_ps(p.add(at)), inverse)) };
                }
            }
        }
    }

    /// Residual decoding, 16 dimensions per step, with no table: a group's `16 · BITS` code bits
    /// become `BITS` lane masks (`pext` of every `BITS`-th bit), which pick each lane's weight
    /// out of the group's `2^BITS` level registers by a tree of masked blends; the weight is
    /// added to the centroid. Group-major, so the level registers are built once per group per
    /// call and every token of the call reuses them. The same single addition as the table
    /// kernels, so the same values.
    ///
    /// # Safety
    /// AVX-512 F and BMI2 available; `BITS` is 1, 2 or 4; `dim` a multiple of 16; `codes` holds
    /// `ids.len() × dim × BITS / 8` bytes, `out` `ids.len() × dim` floats, `weights` `dim ×
    /// 2^BITS`, and every id indexes a whole centroid row.
    #[target_feature(enable = "avx512f,bmi2")]
    pub(super) unsafe fn decode_residuals_avx512<const BITS: usize>(
        weights: &[f32],
        centroids: &[f32],
        dim: usize,
        ids: &[u16],
        codes: &[u8],
        out: &mut [f32],
    ) {
        let levels = 1usize << BITS;
        let rb = dim * BITS / 8;
        let group_bytes = 2 * BITS;
        // Bit `k` of every lane's code: lane l's code is bits BITS·l .. BITS·l + BITS.
        let pattern: u64 = match BITS {
            1 => 0xffff,
            2 => 0x5555_5555,
            _ => 0x1111_1111_1111_1111,
        };
        let (wp, cp, codes_p, op) = (weights.as_ptr(), centroids.as_ptr(), codes.as_ptr(), out.as_mut_ptr());
        for g in 0..dim / 16 {
            let mut level = [_mm512_setzero_ps(); 16];
            for (l, reg) in level.iter_mut().enumerate().take(levels) {
                let mut lanes = [0f32; 16];
                for (lane, v) in lanes.iter_mut().enumerate() {
                    // SAFETY: dimension 16g + lane < dim and level l < 2^BITS: inside `weights`.
                    *v = unsafe { *wp.add((16 * g + lane) * levels + l) };
                }
                // SAFETY: a 16-float load from a 16-float array.
                *reg = unsafe { _mm512_loadu_ps(lanes.as_ptr()) };
            }
            for (t, &id) in ids.iter().enumerate() {
                let mut word = [0u8; 8];
                // SAFETY: the group's 2·BITS bytes start at t·rb + g·2·BITS, inside token t's rb
                // code bytes (dim is a multiple of 16); `word` has room for 8.
                unsafe {
                    std::ptr::copy_nonoverlapping(codes_p.add(t * rb + g * group_bytes), word.as_mut_ptr(), group_bytes)
                };
                let word = u64::from_le_bytes(word);
                let bit = |k: usize| _pext_u64(word, pattern << k) as __mmask16;
                // Level = Σ_k bit_k · 2^k: blend pairs of levels by bit 0, the pairs' winners by
                // bit 1, and so on (written out per width so the levels stay in registers).
                let pick = |m: __mmask16, a: __m512, b: __m512| _mm512_mask_blend_ps(m, a, b);
                let weight = match BITS {
                    1 => pick(bit(0), level[0], level[1]),
                    2 => {
                        let b0 = bit(0);
                        pick(bit(1), pick(b0, level[0], level[1]), pick(b0, level[2], level[3]))
                    }
                    _ => {
                        let (b0, b1, b2) = (bit(0), bit(1), bit(2));
                        let quad = |q: usize| {
                            let l = &level[4 * q..4 * q + 4];
                            pick(b1, pick(b0, l[0], l[1]), pick(b0, l[2], l[3]))
                        };
                        pick(bit(3), pick(b2, quad(0), quad(1)), pick(b2, quad(2), quad(3)))
                    }
                };
                // SAFETY: the centroid row of `id` and token t's output row are `dim` floats
                // (caller); 16g + 16 ≤ dim.
                unsafe {
                    let c = _mm512_loadu_ps(cp.add(id as usize * dim + 16 * g));
                    _mm512_storeu_ps(op.add(t * dim + 16 * g), _mm512_add_ps(c, weight));
                }
            }
        }
    }

    /// Centroid interaction on 8-lane registers: two running maxima per 16 query lanes. Padding
    /// lanes hold zeros in every row, so their maximum is 0 and the full horizontal sum is exact.
    ///
    /// # Safety
    /// AVX2 available; `ids` not empty and every `id · lanes + lanes ≤ table.len()`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn centroid_interaction_avx2(table: &[f32], lanes: usize, ids: &[u16]) -> f32 {
        let base = table.as_ptr();
        let mut total = 0f32;
        for block in (0..lanes).step_by(16) {
            let mut a0 = _mm256_set1_ps(f32::NEG_INFINITY);
            let mut a1 = a0;
            for &c in ids {
                // SAFETY: the id indexes a whole row (caller), `block + 16 ≤ lanes`.
                unsafe {
                    let p = base.add(c as usize * lanes + block);
                    a0 = _mm256_max_ps(a0, _mm256_loadu_ps(p));
                    a1 = _mm256_max_ps(a1, _mm256_loadu_ps(p.add(8)));
                }
            }
            let mut lanes_out = [0f32; 8];
            // SAFETY: an 8-float store into an 8-float array.
            unsafe { _mm256_storeu_ps(lanes_out.as_mut_ptr(), _mm256_add_ps(a0, a1)) };
            total += lanes_out.iter().sum::<f32>();
        }
        total
    }

    /// Residual decoding, 8 dimensions per step: the group's code bytes (1, 2 or 4) each select
    /// a row of `8 / bits` decoded residuals from the byte-position table; the rows are gathered
    /// into one register by plain loads and added to the centroid.
    ///
    /// # Safety
    /// AVX2 available; `dim` a multiple of 8; `codes` holds `ids.len() × dim × bits / 8` bytes,
    /// `out` `ids.len() × dim` floats, `table` `dim × bits / 8 × 256 × 8 / bits` floats, and every
    /// id a whole centroid row.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn decode_residuals_avx2(
        bits: usize,
        table: &[f32],
        centroids: &[f32],
        dim: usize,
        ids: &[u16],
        codes: &[u8],
        out: &mut [f32],
    ) {
        let rb = dim * bits / 8;
        let per = 8 / bits;
        let cp = centroids.as_ptr();
        let tp = table.as_ptr();
        let codes_p = codes.as_ptr();
        let op = out.as_mut_ptr();
        for (t, &id) in ids.iter().enumerate() {
            for g in 0..dim / 8 {
                // SAFETY: group `g` of token `t` is `bits` bytes at byte positions g·bits.. of the
                // token's `rb` bytes; each table row read is `per` floats at (pos·256 + byte)·per,
                // inside the table; centroid and output offsets are inside their rows (caller).
                unsafe {
                    let pos = g * bits;
                    let at = codes_p.add(t * rb + pos);
                    let row = |i: usize| tp.add(((pos + i) * 256 + *at.add(i) as usize) * per);
                    let v = match bits {
                        1 => _mm256_loadu_ps(row(0)),
                        2 => _mm256_set_m128(_mm_loadu_ps(row(1)), _mm_loadu_ps(row(0))),
                        _ => {
                            let lo = _mm_loadh_pd(_mm_load_sd(row(0) as *const f64), row(1) as *const f64);
                            let hi = _mm_loadh_pd(_mm_load_sd(row(2) as *const f64), row(3) as *const f64);
                            _mm256_set_m128(_mm_castpd_ps(hi), _mm_castpd_ps(lo))
                        }
                    };
                    let c = _mm256_loadu_ps(cp.add(id as usize * dim + g * 8));
                    _mm256_storeu_ps(op.add(t * dim + g * 8), _mm256_add_ps(c, v));
                }
            }
        }
    }

    /// Rows per register block of `mat_mul_avx2`: 6 rows × 2 registers = 12 accumulators.
    const MM_ROWS: usize = 6;

    /// Accumulates `rows` rows (≤ 6) of a 6 × 16 block over the whole inner dimension.
    ///
    /// # Safety
    /// AVX2+FMA available; `xp` points at `rows` rows of `inner` floats, `mp` at `inner` rows of
    /// at least 16 floats spaced `cols` apart.
    #[inline(always)]
    unsafe fn mat_mul_block<const FUSED: bool>(
        acc: &mut [[__m256; 2]; MM_ROWS],
        rows: usize,
        xp: *const f32,
        mp: *const f32,
        inner: usize,
        cols: usize,
    ) {
        for i in 0..inner {
            // SAFETY: within the ranges the caller guarantees.
            unsafe {
                let m0 = _mm256_loadu_ps(mp.add(i * cols));
                let m1 = _mm256_loadu_ps(mp.add(i * cols + 8));
                for (r, a) in acc.iter_mut().enumerate().take(rows) {
                    let xv = _mm256_broadcast_ss(&*xp.add(r * inner + i));
                    if FUSED {
                        a[0] = _mm256_fmadd_ps(xv, m0, a[0]);
                        a[1] = _mm256_fmadd_ps(xv, m1, a[1]);
                    } else {
                        a[0] = _mm256_add_ps(a[0], _mm256_mul_ps(xv, m0));
                        a[1] = _mm256_add_ps(a[1], _mm256_mul_ps(xv, m1));
                    }
                }
            }
        }
    }

    /// 6 × 16 register-blocked matrix product; `FUSED` selects FMA or multiply-then-add.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn mat_mul_avx2<const FUSED: bool>(
        x: &[f32],
        inner: usize,
        m: &[f32],
        cols: usize,
        out: &mut [f32],
    ) {
        let rows = x.len() / inner;
        let mut r0 = 0;
        while r0 < rows {
            let used = (rows - r0).min(MM_ROWS);
            for c0 in (0..cols).step_by(16) {
                // SAFETY: rows r0..r0+used < rows, so x offsets (r0+r)*inner + i < x.len();
                // m offsets i*cols + c0 + 15 < inner*cols = m.len() since c0 + 16 <= cols;
                // out offsets (r0+r)*cols + c0 + 15 < rows*cols = out.len() (all asserted by the caller).
                unsafe {
                    let mut acc = [[_mm256_setzero_ps(); 2]; MM_ROWS];
                    let xp = x.as_ptr().add(r0 * inner);
                    let mp = m.as_ptr().add(c0);
                    // The full-block call gets a constant row count, so it is unrolled.
                    if used == MM_ROWS {
                        mat_mul_block::<FUSED>(&mut acc, MM_ROWS, xp, mp, inner, cols);
                    } else {
                        mat_mul_block::<FUSED>(&mut acc, used, xp, mp, inner, cols);
                    }
                    for (r, a) in acc.iter().enumerate().take(used) {
                        let op = out.as_mut_ptr().add((r0 + r) * cols + c0);
                        _mm256_storeu_ps(op, a[0]);
                        _mm256_storeu_ps(op.add(8), a[1]);
                    }
                }
            }
            r0 += used;
        }
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn add_rows_into_avx2(sums: &mut [f32], dim: usize, rows: &[f32], target: &[u32]) {
        super::add_rows_into_portable(sums, dim, rows, target)
    }

    /// Nearest of 256 centroids: four blocks of 64 centroids (8 accumulators) per point, with a
    /// vectorised running minimum whose strict `<` keeps the first index within each lane; lanes
    /// are then combined by (value, index), so ties go to the lowest index as in the portable code.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn nearest_centroid_avx2(
        points: &[f32],
        sub_dim: usize,
        centroids_t: &[f32],
        norms: &[f32],
        assign: &mut [u8],
        dist: &mut [f32],
    ) {
        let ct = centroids_t.as_ptr();
        let lane_ids = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        for (p, x) in points.chunks_exact(sub_dim).enumerate() {
            let mut best_value = _mm256_set1_ps(f32::INFINITY);
            let mut best_index = _mm256_setzero_si256();
            for block in 0..4 {
                let base = block * 64;
                // SAFETY: base + 63 < 256 = norms.len(); d * 256 + base + 63 < sub_dim * 256 =
                // centroids_t.len() (asserted by the caller).
                unsafe {
                    let mut acc = [_mm256_setzero_ps(); 8];
                    for (v, a) in acc.iter_mut().enumerate() {
                        *a = _mm256_loadu_ps(norms.as_ptr().add(base + v * 8));
                    }
                    for (d, &xd) in x.iter().enumerate() {
                        let scaled = _mm256_set1_ps(-2.0 * xd);
                        let row = ct.add(d * 256 + base);
                        for (v, a) in acc.iter_mut().enumerate() {
                            *a = _mm256_fmadd_ps(scaled, _mm256_loadu_ps(row.add(v * 8)), *a);
                        }
                    }
                    for (v, a) in acc.iter().enumerate() {
                        let ids = _mm256_add_epi32(lane_ids, _mm256_set1_epi32((base + v * 8) as i32));
                        let better = _mm256_cmp_ps::<_CMP_LT_OQ>(*a, best_value);
                        best_value = _mm256_blendv_ps(best_value, *a, better);
                        best_index = _mm256_castps_si256(_mm256_blendv_ps(
                            _mm256_castsi256_ps(best_index),
                            _mm256_castsi256_ps(ids),
                            better,
                        ));
                    }
                }
            }
            let mut values = [0f32; 8];
            let mut indices = [0i32; 8];
            // SAFETY: both arrays hold eight 32-bit lanes.
            unsafe {
                _mm256_storeu_ps(values.as_mut_ptr(), best_value);
                _mm256_storeu_si256(indices.as_mut_ptr() as *mut __m256i, best_index);
            }
            let mut lane = 0;
            for l in 1..8 {
                if values[l] < values[lane] || (values[l] == values[lane] && indices[l] < indices[lane]) {
                    lane = l;
                }
            }
            let norm: f32 = x.iter().map(|v| v * v).sum();
            assign[p] = indices[lane] as u8;
            dist[p] = (values[lane] + norm).max(0.0);
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn encode_subspaces_avx2(
        vector: &[f32],
        sub_dim: usize,
        centroids_t: &[f32],
        norms: &[f32],
        code: &mut [u8],
    ) {
        let mut dist = [0f32; 1];
        let block = sub_dim * 256;
        for (s, x) in vector.chunks_exact(sub_dim).enumerate() {
            // SAFETY: same features as this function; the slices have the lengths the kernel needs.
            unsafe {
                nearest_centroid_avx2(
                    x,
                    sub_dim,
                    &centroids_t[s * block..(s + 1) * block],
                    &norms[s * 256..(s + 1) * 256],
                    &mut code[s..s + 1],
                    &mut dist,
                )
            };
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn centroid_dots_f16_avx2(x: &[f32], sub_dim: usize, centroids_t: &[u16], out: &mut [f32]) {
        for (s, xs) in x.chunks_exact(sub_dim).enumerate() {
            let ct = centroids_t[s * sub_dim * 256..].as_ptr();
            let row = out[s * 256..].as_mut_ptr();
            for block in 0..4 {
                // SAFETY: (d * 256 + block * 64 + 63) < sub_dim * 256 within subspace s's codebook,
                // and block * 64 + 63 < 256 within its output row (lengths asserted by the caller).
                unsafe {
                    let mut acc = [_mm256_setzero_ps(); 8];
                    for (d, &xd) in xs.iter().enumerate() {
                        let b = _mm256_set1_ps(xd);
                        let cp = ct.add(d * 256 + block * 64);
                        for (v, a) in acc.iter_mut().enumerate() {
                            let c = _mm256_cvtph_ps(_mm_loadu_si128(cp.add(v * 8) as *const __m128i));
                            *a = _mm256_fmadd_ps(b, c, *a);
                        }
                    }
                    for (v, a) in acc.iter().enumerate() {
                        _mm256_storeu_ps(row.add(block * 64 + v * 8), *a);
                    }
                }
            }
        }
    }

    /// [`centroid_dots_f16_avx2`] on 16-lane registers: a subspace's 256 products in sixteen
    /// accumulators at once, the same fused multiply-add per value in the same order of
    /// dimensions, so the same results.
    ///
    /// # Safety
    /// AVX-512 F, F16C and FMA available; as [`centroid_dots_f16_avx2`] for the lengths.
    #[target_feature(enable = "avx512f,f16c,fma")]
    pub(super) unsafe fn centroid_dots_f16_avx512(x: &[f32], sub_dim: usize, centroids_t: &[u16], out: &mut [f32]) {
        for (s, xs) in x.chunks_exact(sub_dim).enumerate() {
            let ct = centroids_t[s * sub_dim * 256..].as_ptr();
            let row = out[s * 256..].as_mut_ptr();
            // SAFETY: (d * 256 + v * 16 + 15) < sub_dim * 256 within subspace s's codebook, and
            // v * 16 + 15 < 256 within its output row (lengths asserted by the caller).
            unsafe {
                let mut acc = [_mm512_setzero_ps(); 16];
                for (d, &xd) in xs.iter().enumerate() {
                    let b = _mm512_set1_ps(xd);
                    let cp = ct.add(d * 256);
                    for (v, a) in acc.iter_mut().enumerate() {
                        let c = _mm512_cvtph_ps(_mm256_loadu_si256(cp.add(v * 16) as *const __m256i));
                        *a = _mm512_fmadd_ps(b, c, *a);
                    }
                }
                for (v, a) in acc.iter().enumerate() {
                    _mm512_storeu_ps(row.add(v * 16), *a);
                }
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn fma_peak_probe(iterations: u64) -> f32 {
        let mul = _mm256_set1_ps(0.999_999);
        let add = _mm256_set1_ps(1e-7);
        let mut acc = [_mm256_set1_ps(1.0); 12];
        for _ in 0..iterations {
            for a in acc.iter_mut() {
                *a = _mm256_fmadd_ps(*a, mul, add);
            }
            for a in acc.iter_mut() {
                *a = _mm256_fmadd_ps(*a, mul, add);
            }
        }
        let mut total = _mm256_setzero_ps();
        for a in acc {
            total = _mm256_add_ps(total, a);
        }
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` has room for eight f32.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), total) };
        lanes.iter().sum()
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut i = 0;
        let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        // SAFETY: every load reads [i, i + 8) or [i + 8, i + 16) with i + 16 <= n (or i + 8 <= n),
        // and a.len() == b.len() == n (asserted by the caller).
        unsafe {
            while i + 16 <= n {
                s0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), s0);
                s1 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i + 8)), _mm256_loadu_ps(pb.add(i + 8)), s1);
                i += 16;
            }
            if i + 8 <= n {
                s0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), s0);
                i += 8;
            }
        }
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` has room for eight f32.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), _mm256_add_ps(s0, s1)) };
        let tail: f32 = a[i..].iter().zip(&b[i..]).map(|(x, y)| x * y).sum();
        lanes.iter().sum::<f32>() + tail
    }

    /// `vpmaddubsw` takes an unsigned and a signed operand: |a| and b·sign(a) have the same
    /// products (a = −128 never occurs, see [`super::dot_i8`]); pairs are summed to i16 (at most
    /// 2·127² < 2¹⁵), then to i32 by `vpmaddwd` against ones.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn dot_i8_avx2(a: &[i8], b: &[i8]) -> i32 {
        let n = a.len();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let ones = _mm256_set1_epi16(1);
        let mut acc = _mm256_setzero_si256();
        let mut i = 0;
        // SAFETY: every load reads [i, i + 32) with i + 32 <= n = a.len() = b.len().
        unsafe {
            while i + 32 <= n {
                let x = _mm256_loadu_si256(pa.add(i) as *const __m256i);
                let y = _mm256_loadu_si256(pb.add(i) as *const __m256i);
                let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, ones));
                i += 32;
            }
        }
        let mut lanes = [0i32; 8];
        // SAFETY: `lanes` has room for eight i32.
        unsafe { _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, acc) };
        lanes.iter().sum::<i32>() + super::dot_i8_portable(&a[i..], &b[i..])
    }

    /// `vpdpbusd` multiplies unsigned by signed bytes and adds each group of four products to an
    /// i32 lane: |a| (unsigned) times b with a's sign (the masked negation AVX-512 uses for
    /// AVX2's `vpsignb`) gives a·b; a = −128 never occurs (see [`super::dot_i8`]), so |a| ≤ 127
    /// and a group's sum stays far inside i32. The tail below 64 bytes runs the AVX2 kernel.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2")]
    pub(super) unsafe fn dot_i8_avx512vnni(a: &[i8], b: &[i8]) -> i32 {
        let n = a.len();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let zero = _mm512_setzero_si512();
        let (mut acc0, mut acc1) = (_mm512_setzero_si512(), _mm512_setzero_si512());
        let mut i = 0;
        // SAFETY: every load reads [i, i + 64) (or [i + 64, i + 128)) with its end <= n =
        // a.len() = b.len().
        unsafe {
            let step = |acc: __m512i, at: usize| {
                let x = _mm512_loadu_si512(pa.add(at) as *const _);
                let y = _mm512_loadu_si512(pb.add(at) as *const _);
                let negative = _mm512_movepi8_mask(x);
                let signed_y = _mm512_mask_sub_epi8(y, negative, zero, y);
                _mm512_dpbusd_epi32(acc, _mm512_abs_epi8(x), signed_y)
            };
            while i + 128 <= n {
                acc0 = step(acc0, i);
                acc1 = step(acc1, i + 64);
                i += 128;
            }
            if i + 64 <= n {
                acc0 = step(acc0, i);
                i += 64;
            }
        }
        let total = _mm512_reduce_add_epi32(_mm512_add_epi32(acc0, acc1));
        // SAFETY: the caller's features include AVX2.
        total + unsafe { dot_i8_avx2(&a[i..], &b[i..]) }
    }

    /// All 256 centroids' `‖c‖² − 2⟨x, c⟩` in sixteen 16-lane accumulators at once (one
    /// broadcast per coordinate), then the arg-min by masked moves: strict `<` over ascending
    /// blocks keeps each lane's first minimum, and the lowest index among the lanes holding the
    /// overall minimum is taken, so ties go to the first centroid as in the portable kernel.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn nearest_centroid_avx512(
        points: &[f32],
        sub_dim: usize,
        centroids_t: &[f32],
        norms: &[f32],
        assign: &mut [u8],
        dist: &mut [f32],
    ) {
        let ct = centroids_t.as_ptr();
        let lane_ids = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        for (p, x) in points.chunks_exact(sub_dim).enumerate() {
            // SAFETY: v * 16 + 15 < 256 = norms.len(); d * 256 + 255 < sub_dim * 256 =
            // centroids_t.len() (asserted by the caller).
            unsafe {
                let mut acc = [_mm512_setzero_ps(); 16];
                for (v, a) in acc.iter_mut().enumerate() {
                    *a = _mm512_loadu_ps(norms.as_ptr().add(v * 16));
                }
                for (d, &xd) in x.iter().enumerate() {
                    let scaled = _mm512_set1_ps(-2.0 * xd);
                    let row = ct.add(d * 256);
                    for (v, a) in acc.iter_mut().enumerate() {
                        *a = _mm512_fmadd_ps(scaled, _mm512_loadu_ps(row.add(v * 16)), *a);
                    }
                }
                let (mut best_value, mut best_index) = (acc[0], lane_ids);
                for (v, a) in acc.iter().enumerate().skip(1) {
                    let better = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(*a, best_value);
                    best_value = _mm512_mask_mov_ps(best_value, better, *a);
                    best_index = _mm512_mask_mov_epi32(
                        best_index,
                        better,
                        _mm512_add_epi32(lane_ids, _mm512_set1_epi32(v as i32 * 16)),
                    );
                }
                let min = _mm512_reduce_min_ps(best_value);
                let at_min = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(best_value, _mm512_set1_ps(min));
                let index = _mm512_mask_reduce_min_epi32(at_min, best_index);
                let norm: f32 = x.iter().map(|v| v * v).sum();
                assign[p] = index as u8;
                dist[p] = (min + norm).max(0.0);
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn row_maxima_avx512(scores: &[f32], offsets: &[f32], top: &mut [f32; super::SCREEN_LANES]) {
        // SAFETY: `top` holds 64 lanes; row c reads scores[64c, 64c + 64), inside the asserted
        // length offsets.len() · 64.
        unsafe {
            let t = top.as_mut_ptr();
            let mut acc = [
                _mm512_loadu_ps(t),
                _mm512_loadu_ps(t.add(16)),
                _mm512_loadu_ps(t.add(32)),
                _mm512_loadu_ps(t.add(48)),
            ];
            for (c, &o) in offsets.iter().enumerate() {
                let row = scores.as_ptr().add(c * 64);
                let o = _mm512_set1_ps(o);
                for (v, a) in acc.iter_mut().enumerate() {
                    *a = _mm512_max_ps(*a, _mm512_sub_ps(_mm512_loadu_ps(row.add(v * 16)), o));
                }
            }
            for (v, a) in acc.iter().enumerate() {
                _mm512_storeu_ps(t.add(v * 16), *a);
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn rows_near_avx512(
        scores: &[f32],
        offsets: &[f32],
        floor: &[f32; super::SCREEN_LANES],
        out: &mut Vec<(u32, u32)>,
    ) {
        // SAFETY: as in `row_maxima_avx512`; `floor` holds 64 lanes.
        unsafe {
            let f = floor.as_ptr();
            let fl = [
                _mm512_loadu_ps(f),
                _mm512_loadu_ps(f.add(16)),
                _mm512_loadu_ps(f.add(32)),
                _mm512_loadu_ps(f.add(48)),
            ];
            for (c, &o) in offsets.iter().enumerate() {
                let row = scores.as_ptr().add(c * 64);
                let o = _mm512_set1_ps(o);
                let mut near = 0u64;
                for (v, f) in fl.iter().enumerate() {
                    let m = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(_mm512_sub_ps(_mm512_loadu_ps(row.add(v * 16)), o), *f);
                    near |= (m as u64) << (v * 16);
                }
                while near != 0 {
                    out.push((c as u32, near.trailing_zeros()));
                    near &= near - 1;
                }
            }
        }
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn min_max_avx2(v: &[f32]) -> (f32, f32) {
        let n = v.len();
        let mut i = 0;
        let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
        if n >= 8 {
            // SAFETY: every load reads 8 values from i with i + 8 <= n.
            unsafe {
                let mut vlo = _mm256_loadu_ps(v.as_ptr());
                let mut vhi = vlo;
                i = 8;
                while i + 8 <= n {
                    let x = _mm256_loadu_ps(v.as_ptr().add(i));
                    vlo = _mm256_min_ps(vlo, x);
                    vhi = _mm256_max_ps(vhi, x);
                    i += 8;
                }
                let mut lanes = [0f32; 8];
                _mm256_storeu_ps(lanes.as_mut_ptr(), vlo);
                lo = lanes.iter().copied().fold(lo, f32::min);
                _mm256_storeu_ps(lanes.as_mut_ptr(), vhi);
                hi = lanes.iter().copied().fold(hi, f32::max);
            }
        }
        let (l, h) = super::min_max_portable(&v[i..]);
        (lo.min(l), hi.max(h))
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn quantize_u8_avx2(src: &[f32], lo: f32, inv: f32, dst: &mut [u8]) {
        let n = src.len();
        let mut i = 0;
        // SAFETY: each step reads 32 values of src and writes 32 bytes of dst from i, with
        // i + 32 <= n = src.len() = dst.len() (asserted by the caller).
        unsafe {
            let (vlo, vinv, half) = (_mm256_set1_ps(lo), _mm256_set1_ps(inv), _mm256_set1_ps(0.5));
            let (zero, top) = (_mm256_setzero_ps(), _mm256_set1_ps(255.0));
            let ints = |at: usize| {
                let x = _mm256_loadu_ps(src.as_ptr().add(at));
                let x = _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(x, vlo), vinv), half);
                _mm256_cvttps_epi32(_mm256_min_ps(_mm256_max_ps(x, zero), top))
            };
            // packus works within 128-bit halves; this permutation restores the order.
            let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
            while i + 32 <= n {
                let w01 = _mm256_packus_epi32(ints(i), ints(i + 8));
                let w23 = _mm256_packus_epi32(ints(i + 16), ints(i + 24));
                let bytes = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(w01, w23), order);
                _mm256_storeu_si256(dst.as_mut_ptr().add(i) as *mut __m256i, bytes);
                i += 32;
            }
        }
        super::quantize_u8_portable(&src[i..], lo, inv, &mut dst[i..]);
    }

    #[target_feature(enable = "avx2,f16c")]
    pub(super) unsafe fn f16_to_f32_f16c(src: &[u16], dst: &mut [f32]) {
        let n = src.len();
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: i + 8 <= n = src.len() = dst.len() (asserted by the caller).
            unsafe {
                let h = _mm_loadu_si128(src.as_ptr().add(i) as *const __m128i);
                _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
            }
            i += 8;
        }
        for j in i..n {
            dst[j] = half::f16::from_bits(src[j]).to_f32();
        }
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn f16_to_bf16_avx512(src: &[u16], dst: &mut [u16]) {
        let n = src.len();
        let mut i = 0;
        while i + 16 <= n {
            // SAFETY: i + 16 <= n = src.len() = dst.len() (asserted by the caller); the 16 bf16
            // results are exactly the 256 bits stored.
            unsafe {
                let h = _mm256_loadu_si256(src.as_ptr().add(i) as *const __m256i);
                let bf = _mm512_cvtneps_pbh(_mm512_cvtph_ps(h));
                _mm256_storeu_si256(
                    dst.as_mut_ptr().add(i) as *mut __m256i,
                    std::mem::transmute::<__m256bh, __m256i>(bf),
                );
            }
            i += 16;
        }
        for j in i..n {
            dst[j] = half::bf16::from_f32(half::f16::from_bits(src[j]).to_f32()).to_bits();
        }
    }

    /// Document tokens processed together: 3 tokens × up to 4 registers = 12 independent FMA
    /// chains, enough to cover FMA latency (4–5 cycles) at 2 FMAs per cycle, within 16 registers.
    const DOC_TILE: usize = 3;

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn max_dots_avx2<const NV: usize>(block: &[f32], dim: usize, doc: &[f32], maxes: &mut [f32]) {
        let lanes = NV * 8;
        let n = doc.len() / dim;
        let q = block.as_ptr();
        let d = doc.as_ptr();
        // SAFETY: the caller asserted block.len() == dim * lanes, doc.len() == n * dim and
        // maxes.len() == lanes; every offset below stays inside those.
        unsafe {
            let mut best = [_mm256_setzero_ps(); NV];
            for (v, b) in best.iter_mut().enumerate() {
                *b = _mm256_loadu_ps(maxes.as_ptr().add(v * 8));
            }
            let mut j = 0;
            while j + DOC_TILE <= n {
                let (d0, d1, d2) = (d.add(j * dim), d.add((j + 1) * dim), d.add((j + 2) * dim));
                let mut acc = [[_mm256_setzero_ps(); NV]; DOC_TILE];
                for c in 0..dim {
                    let qc = q.add(c * lanes);
                    let b0 = _mm256_broadcast_ss(&*d0.add(c));
                    let b1 = _mm256_broadcast_ss(&*d1.add(c));
                    let b2 = _mm256_broadcast_ss(&*d2.add(c));
                    #[allow(clippy::needless_range_loop)] // v indexes three accumulator rows at once
                    for v in 0..NV {
                        let qv = _mm256_loadu_ps(qc.add(v * 8));
                        acc[0][v] = _mm256_fmadd_ps(b0, qv, acc[0][v]);
                        acc[1][v] = _mm256_fmadd_ps(b1, qv, acc[1][v]);
                        acc[2][v] = _mm256_fmadd_ps(b2, qv, acc[2][v]);
                    }
                }
                for v in 0..NV {
                    let m = _mm256_max_ps(acc[0][v], _mm256_max_ps(acc[1][v], acc[2][v]));
                    best[v] = _mm256_max_ps(best[v], m);
                }
                j += DOC_TILE;
            }
            while j < n {
                let d0 = d.add(j * dim);
                let mut acc = [_mm256_setzero_ps(); NV];
                for c in 0..dim {
                    let qc = q.add(c * lanes);
                    let b0 = _mm256_broadcast_ss(&*d0.add(c));
                    for (v, a) in acc.iter_mut().enumerate() {
                        *a = _mm256_fmadd_ps(b0, _mm256_loadu_ps(qc.add(v * 8)), *a);
                    }
                }
                for v in 0..NV {
                    best[v] = _mm256_max_ps(best[v], acc[v]);
                }
                j += 1;
            }
            for (v, b) in best.iter().enumerate() {
                _mm256_storeu_ps(maxes.as_mut_ptr().add(v * 8), *b);
            }
        }
    }

    /// Document tokens per tile of the AVX-512 kernel: 6 tokens × up to 2 registers = 12
    /// independent FMA chains, within 32 registers with the query and broadcast registers.
    const DOC_TILE_512: usize = 6;

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn max_dots_avx512<const NV: usize>(block: &[f32], dim: usize, doc: &[f32], maxes: &mut [f32]) {
        let lanes = NV * 16;
        let n = doc.len() / dim;
        let q = block.as_ptr();
        let d = doc.as_ptr();
        // SAFETY: the caller asserted block.len() == dim * lanes, doc.len() == n * dim and
        // maxes.len() == lanes (lanes = 16 * NV); every offset below stays inside those.
        unsafe {
            let mut best = [_mm512_setzero_ps(); NV];
            for (v, b) in best.iter_mut().enumerate() {
                *b = _mm512_loadu_ps(maxes.as_ptr().add(v * 16));
            }
            let mut j = 0;
            while j + DOC_TILE_512 <= n {
                let mut acc = [[_mm512_setzero_ps(); NV]; DOC_TILE_512];
                for c in 0..dim {
                    let qc = q.add(c * lanes);
                    let mut qv = [_mm512_setzero_ps(); NV];
                    for (v, r) in qv.iter_mut().enumerate() {
                        *r = _mm512_loadu_ps(qc.add(v * 16));
                    }
                    for (t, acc_t) in acc.iter_mut().enumerate() {
                        let b = _mm512_set1_ps(*d.add((j + t) * dim + c));
                        for (a, qr) in acc_t.iter_mut().zip(&qv) {
                            *a = _mm512_fmadd_ps(b, *qr, *a);
                        }
                    }
                }
                for acc_t in &acc {
                    for (b, a) in best.iter_mut().zip(acc_t) {
                        *b = _mm512_max_ps(*b, *a);
                    }
                }
                j += DOC_TILE_512;
            }
            while j < n {
                let d0 = d.add(j * dim);
                let mut acc = [_mm512_setzero_ps(); NV];
                for c in 0..dim {
                    let qc = q.add(c * lanes);
                    let b0 = _mm512_set1_ps(*d0.add(c));
                    for (v, a) in acc.iter_mut().enumerate() {
                        *a = _mm512_fmadd_ps(b0, _mm512_loadu_ps(qc.add(v * 16)), *a);
                    }
                }
                for (b, a) in best.iter_mut().zip(&acc) {
                    *b = _mm512_max_ps(*b, *a);
                }
                j += 1;
            }
            for (v, b) in best.iter().enumerate() {
                _mm512_storeu_ps(maxes.as_mut_ptr().add(v * 16), *b);
            }
        }
    }

    /// [`max_dots_avx512`] for a 24-lane block: lanes 0-15 on a 512-bit register, 16-23 on a
    /// 256-bit one, so a 17-24 token query does not pay for 32 lanes.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn max_dots_avx512_24(block: &[f32], dim: usize, doc: &[f32], maxes: &mut [f32]) {
        const LANES: usize = 24;
        let n = doc.len() / dim;
        let q = block.as_ptr();
        let d = doc.as_ptr();
        // SAFETY: the caller asserted block.len() == dim * 24, doc.len() == n * dim and
        // maxes.len() == 24; every offset below stays inside those.
        unsafe {
            let mut best_lo = _mm512_loadu_ps(maxes.as_ptr());
            let mut best_hi = _mm256_loadu_ps(maxes.as_ptr().add(16));
            let mut j = 0;
            while j + DOC_TILE_512 <= n {
                let mut lo = [_mm512_setzero_ps(); DOC_TILE_512];
                let mut hi = [_mm256_setzero_ps(); DOC_TILE_512];
                for c in 0..dim {
                    let qc = q.add(c * LANES);
                    let (q_lo, q_hi) = (_mm512_loadu_ps(qc), _mm256_loadu_ps(qc.add(16)));
                    for t in 0..DOC_TILE_512 {
                        let x = *d.add((j + t) * dim + c);
                        lo[t] = _mm512_fmadd_ps(_mm512_set1_ps(x), q_lo, lo[t]);
                        hi[t] = _mm256_fmadd_ps(_mm256_set1_ps(x), q_hi, hi[t]);
                    }
                }
                for t in 0..DOC_TILE_512 {
                    best_lo = _mm512_max_ps(best_lo, lo[t]);
                    best_hi = _mm256_max_ps(best_hi, hi[t]);
                }
                j += DOC_TILE_512;
            }
            while j < n {
                let d0 = d.add(j * dim);
                let (mut lo, mut hi) = (_mm512_setzero_ps(), _mm256_setzero_ps());
                for c in 0..dim {
                    let qc = q.add(c * LANES);
                    let x = *d0.add(c);
                    lo = _mm512_fmadd_ps(_mm512_set1_ps(x), _mm512_loadu_ps(qc), lo);
                    hi = _mm256_fmadd_ps(_mm256_set1_ps(x), _mm256_loadu_ps(qc.add(16)), hi);
                }
                best_lo = _mm512_max_ps(best_lo, lo);
                best_hi = _mm256_max_ps(best_hi, hi);
                j += 1;
            }
            _mm512_storeu_ps(maxes.as_mut_ptr(), best_lo);
            _mm256_storeu_ps(maxes.as_mut_ptr().add(16), best_hi);
        }
    }

    /// [`max_dots_avx512`] for bf16 documents with `vdpbf16ps`: each instruction multiplies a pair
    /// of coordinates of 16 query lanes by the same pair of one document token and adds both
    /// products to the lanes' f32 accumulators. The document pair is broadcast straight from its
    /// stored bits; nothing is converted.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn max_dots_bf16_avx512<const NV: usize>(
        pairs: &[u16],
        dim: usize,
        doc: &[u16],
        maxes: &mut [f32],
    ) {
        let lanes = NV * 16;
        let n = doc.len() / dim;
        let half_dim = dim / 2;
        let q = pairs.as_ptr();
        let d = doc.as_ptr();
        // SAFETY: the caller asserted pairs.len() == dim * lanes, doc.len() == n * dim, dim even
        // and maxes.len() == lanes; every offset below stays inside those. The u32 reads of a
        // document pair are unaligned reads of two in-bounds u16s.
        unsafe {
            let mut best = [_mm512_setzero_ps(); NV];
            for (v, b) in best.iter_mut().enumerate() {
                *b = _mm512_loadu_ps(maxes.as_ptr().add(v * 16));
            }
            let pair_of = |t: usize, p: usize| -> __m512bh {
                let bits = (d.add(t * dim + 2 * p) as *const u32).read_unaligned();
                std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(bits as i32))
            };
            let mut j = 0;
            while j + DOC_TILE_512 <= n {
                let mut acc = [[_mm512_setzero_ps(); NV]; DOC_TILE_512];
                for p in 0..half_dim {
                    let qp = q.add(p * lanes * 2);
                    let mut qv = [std::mem::transmute::<__m512i, __m512bh>(_mm512_setzero_si512()); NV];
                    for (v, r) in qv.iter_mut().enumerate() {
                        *r = std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(qp.add(v * 32) as *const _));
                    }
                    for (t, acc_t) in acc.iter_mut().enumerate() {
                        let b = pair_of(j + t, p);
                        for (a, qr) in acc_t.iter_mut().zip(&qv) {
                            *a = _mm512_dpbf16_ps(*a, *qr, b);
                        }
                    }
                }
                for acc_t in &acc {
                    for (b, a) in best.iter_mut().zip(acc_t) {
                        *b = _mm512_max_ps(*b, *a);
                    }
                }
                j += DOC_TILE_512;
            }
            while j < n {
                let mut acc = [_mm512_setzero_ps(); NV];
                for p in 0..half_dim {
                    let qp = q.add(p * lanes * 2);
                    let b = pair_of(j, p);
                    for (v, a) in acc.iter_mut().enumerate() {
                        let qr =
                            std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(qp.add(v * 32) as *const _));
                        *a = _mm512_dpbf16_ps(*a, qr, b);
                    }
                }
                for (b, a) in best.iter_mut().zip(&acc) {
                    *b = _mm512_max_ps(*b, *a);
                }
                j += 1;
            }
            for (v, b) in best.iter().enumerate() {
                _mm512_storeu_ps(maxes.as_mut_ptr().add(v * 16), *b);
            }
        }
    }

    /// [`max_dots_doc_major_avx512`] for bf16 documents with `vdpbf16ps`: 32 coordinates of two
    /// document tokens per step, one instruction per query token and document token.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn max_dots_doc_major_bf16_avx512(query: &[u16], dim: usize, doc: &[u16], maxes: &mut [f32]) {
        let nq = maxes.len();
        let n = doc.len() / dim;
        let q = query.as_ptr();
        let d = doc.as_ptr();
        let bh = |p: *const u16| -> __m512bh {
            // SAFETY: every caller below passes a pointer with 32 in-bounds u16s after it.
            unsafe { std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(p as *const _)) }
        };
        // SAFETY: the caller asserted query.len() == nq * dim, doc.len() == n * dim, dim a
        // multiple of 32 and 1 <= nq <= 8; every offset below stays inside those.
        unsafe {
            let mut t = 0;
            while t + 2 <= n {
                let mut acc = [[_mm512_setzero_ps(); super::DOC_MAJOR_MAX_QUERY]; 2];
                let (base0, base1) = (t * dim, (t + 1) * dim);
                let mut c = 0;
                while c < dim {
                    let d0 = bh(d.add(base0 + c));
                    let d1 = bh(d.add(base1 + c));
                    #[allow(clippy::needless_range_loop)] // i indexes two accumulator rows at once
                    for i in 0..nq {
                        let qv = bh(q.add(i * dim + c));
                        acc[0][i] = _mm512_dpbf16_ps(acc[0][i], qv, d0);
                        acc[1][i] = _mm512_dpbf16_ps(acc[1][i], qv, d1);
                    }
                    c += super::DOC_MAJOR_BF16_WIDTH;
                }
                for (i, m) in maxes.iter_mut().enumerate() {
                    *m = m.max(_mm512_reduce_add_ps(acc[0][i])).max(_mm512_reduce_add_ps(acc[1][i]));
                }
                t += 2;
            }
            if t < n {
                let mut acc = [_mm512_setzero_ps(); super::DOC_MAJOR_MAX_QUERY];
                let mut c = 0;
                while c < dim {
                    let d0 = bh(d.add(t * dim + c));
                    for (i, a) in acc.iter_mut().enumerate().take(nq) {
                        *a = _mm512_dpbf16_ps(*a, bh(q.add(i * dim + c)), d0);
                    }
                    c += super::DOC_MAJOR_BF16_WIDTH;
                }
                for (i, m) in maxes.iter_mut().enumerate() {
                    *m = m.max(_mm512_reduce_add_ps(acc[i]));
                }
            }
        }
    }

    /// The store-instead-of-max sibling of [`max_dots_bf16_avx512`]: each row's inner products with
    /// the block's lanes go to `out[r * stride + col..][..16 * NV]`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn dots_bf16_avx512<const NV: usize>(
        pairs: &[u16],
        dim: usize,
        rows: &[u16],
        out: &mut [f32],
        stride: usize,
        col: usize,
    ) {
        let lanes = NV * 16;
        let n = rows.len() / dim;
        let half_dim = dim / 2;
        let q = pairs.as_ptr();
        let d = rows.as_ptr();
        let o = out.as_mut_ptr();
        // SAFETY: the caller asserted pairs.len() == dim * lanes, rows.len() == n * dim, dim even,
        // col + lanes <= stride and out.len() >= n * stride; every offset below stays inside those.
        unsafe {
            let pair_of = |t: usize, p: usize| -> __m512bh {
                let bits = (d.add(t * dim + 2 * p) as *const u32).read_unaligned();
                std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(bits as i32))
            };
            let query = |p: usize, v: usize| -> __m512bh {
                std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(q.add(p * lanes * 2 + v * 32) as *const _))
            };
            let mut j = 0;
            while j + DOC_TILE_512 <= n {
                let mut acc = [[_mm512_setzero_ps(); NV]; DOC_TILE_512];
                for p in 0..half_dim {
                    let mut qv = [std::mem::transmute::<__m512i, __m512bh>(_mm512_setzero_si512()); NV];
                    for (v, r) in qv.iter_mut().enumerate() {
                        *r = query(p, v);
                    }
                    for (t, acc_t) in acc.iter_mut().enumerate() {
                        let b = pair_of(j + t, p);
                        for (a, qr) in acc_t.iter_mut().zip(&qv) {
                            *a = _mm512_dpbf16_ps(*a, *qr, b);
                        }
                    }
                }
                for (t, acc_t) in acc.iter().enumerate() {
                    for (v, a) in acc_t.iter().enumerate() {
                        _mm512_storeu_ps(o.add((j + t) * stride + col + v * 16), *a);
                    }
                }
                j += DOC_TILE_512;
            }
            while j < n {
                let mut acc = [_mm512_setzero_ps(); NV];
                for p in 0..half_dim {
                    let b = pair_of(j, p);
                    for (v, a) in acc.iter_mut().enumerate() {
                        *a = _mm512_dpbf16_ps(*a, query(p, v), b);
                    }
                }
                for (v, a) in acc.iter().enumerate() {
                    _mm512_storeu_ps(o.add(j * stride + col + v * 16), *a);
                }
                j += 1;
            }
        }
    }

    /// Widens 16 coordinates of a document token to f32 in a register.
    ///
    /// # Safety
    /// AVX-512 F available; `doc` holds at least `at + 16` values.
    #[inline(always)]
    unsafe fn load16(doc: super::DocValues<'_>, at: usize) -> __m512 {
        // SAFETY: the caller guarantees 16 values from `at`.
        unsafe {
            match doc {
                super::DocValues::F32(v) => _mm512_loadu_ps(v.as_ptr().add(at)),
                super::DocValues::F16(v) => _mm512_cvtph_ps(_mm256_loadu_si256(v.as_ptr().add(at) as *const __m256i)),
                super::DocValues::Bf16(v) => {
                    let wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(v.as_ptr().add(at) as *const __m256i));
                    _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16))
                }
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn max_dots_doc_major_avx512(
        query: &[f32],
        dim: usize,
        doc: super::DocValues<'_>,
        maxes: &mut [f32],
    ) {
        let nq = maxes.len();
        let n = doc.len() / dim;
        let q = query.as_ptr();
        // SAFETY: the caller asserted query.len() == nq * dim, doc.len() == n * dim, dim a
        // multiple of 16 and 1 <= nq <= 8; every offset below stays inside those.
        unsafe {
            let mut t = 0;
            // Two document tokens at a time: 2 x nq independent accumulators.
            while t + 2 <= n {
                let mut acc = [[_mm512_setzero_ps(); super::DOC_MAJOR_MAX_QUERY]; 2];
                let (base0, base1) = (t * dim, (t + 1) * dim);
                let mut c = 0;
                while c < dim {
                    let d0 = load16(doc, base0 + c);
                    let d1 = load16(doc, base1 + c);
                    #[allow(clippy::needless_range_loop)] // i indexes two accumulator rows at once
                    for i in 0..nq {
                        let qv = _mm512_loadu_ps(q.add(i * dim + c));
                        acc[0][i] = _mm512_fmadd_ps(d0, qv, acc[0][i]);
                        acc[1][i] = _mm512_fmadd_ps(d1, qv, acc[1][i]);
                    }
                    c += 16;
                }
                for (i, m) in maxes.iter_mut().enumerate() {
                    *m = m.max(_mm512_reduce_add_ps(acc[0][i])).max(_mm512_reduce_add_ps(acc[1][i]));
                }
                t += 2;
            }
            if t < n {
                let mut acc = [_mm512_setzero_ps(); super::DOC_MAJOR_MAX_QUERY];
                let mut c = 0;
                while c < dim {
                    let d0 = load16(doc, t * dim + c);
                    for (i, a) in acc.iter_mut().enumerate().take(nq) {
                        *a = _mm512_fmadd_ps(d0, _mm512_loadu_ps(q.add(i * dim + c)), *a);
                    }
                    c += 16;
                }
                for (i, m) in maxes.iter_mut().enumerate() {
                    *m = m.max(_mm512_reduce_add_ps(acc[i]));
                }
            }
        }
    }

    /// Widens 8 coordinates of a document token to f32 in a register.
    ///
    /// # Safety
    /// AVX2 and F16C available; `doc` holds at least `at + 8` values.
    #[inline(always)]
    unsafe fn load8(doc: super::DocValues<'_>, at: usize) -> __m256 {
        // SAFETY: the caller guarantees 8 values from `at`.
        unsafe {
            match doc {
                super::DocValues::F32(v) => _mm256_loadu_ps(v.as_ptr().add(at)),
                super::DocValues::F16(v) => _mm256_cvtph_ps(_mm_loadu_si128(v.as_ptr().add(at) as *const __m128i)),
                super::DocValues::Bf16(v) => {
                    let wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(v.as_ptr().add(at) as *const __m128i));
                    _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16))
                }
            }
        }
    }

    /// The sum of a register's 8 lanes.
    #[inline(always)]
    unsafe fn sum8(v: __m256) -> f32 {
        // SAFETY: register-only arithmetic; AVX available (caller).
        unsafe {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
            _mm_cvtss_f32(s)
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn max_dots_doc_major_avx2(
        query: &[f32],
        dim: usize,
        doc: super::DocValues<'_>,
        maxes: &mut [f32],
    ) {
        let nq = maxes.len();
        let n = doc.len() / dim;
        let q = query.as_ptr();
        // SAFETY: the caller asserted query.len() == nq * dim, doc.len() == n * dim, dim a
        // multiple of 8 and 1 <= nq <= 8; every offset below stays inside those.
        unsafe {
            for t in 0..n {
                let mut acc = [_mm256_setzero_ps(); super::DOC_MAJOR_MAX_QUERY];
                let base = t * dim;
                let mut c = 0;
                while c < dim {
                    let d = load8(doc, base + c);
                    for (i, a) in acc.iter_mut().enumerate().take(nq) {
                        *a = _mm256_fmadd_ps(d, _mm256_loadu_ps(q.add(i * dim + c)), *a);
                    }
                    c += 8;
                }
                for (i, m) in maxes.iter_mut().enumerate() {
                    *m = m.max(sum8(acc[i]));
                }
            }
        }
    }
}
