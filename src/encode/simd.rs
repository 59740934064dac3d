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
//! 2. **Raw-pointer loads in the AVX2 kernels** (`_mm256_loadu_ps` and friends take pointers).
//!    Each kernel is private and is entered only through a safe wrapper that checks every slice
//!    length the kernel's index arithmetic relies on (asserted, not debug-asserted, because a
//!    violated length would be an out-of-bounds read). Unaligned loads are used throughout, so
//!    no alignment is assumed.
//!
//! Numerics. `add`/`add_scaled` compute `acc[i] += x * row[i]` with a separate multiply and add
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
                    return Isa::Avx2;
                }
            }
            Isa::Portable
        })
    }

    /// Every instruction set usable on this CPU, portable first (for tests and benchmarks).
    pub fn available() -> Vec<Isa> {
        let mut out = vec![Isa::Portable];
        if Isa::detect() == Isa::Avx2 {
            out.push(Isa::Avx2);
        }
        out
    }

    /// A short lowercase name (`portable`, `avx2`).
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
        }
    }
}

/// `acc[i] += x * row[i]` (multiply, then add: no FMA, identical results on every CPU).
pub fn add_scaled(acc: &mut [f32], row: &[f32], x: f32) {
    assert_eq!(acc.len(), row.len());
    match Isa::detect() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2` is only returned after runtime detection of AVX2 (see module docs).
        Isa::Avx2 => unsafe { x86::add_scaled_avx2(acc, row, x) },
        _ => add_scaled_portable(acc, row, x),
    }
}

/// `acc[i] += row[i]`.
pub fn add(acc: &mut [f32], row: &[f32]) {
    assert_eq!(acc.len(), row.len());
    match Isa::detect() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2` is only returned after runtime detection of AVX2 (see module docs).
        Isa::Avx2 => unsafe { x86::add_avx2(acc, row) },
        _ => add_portable(acc, row),
    }
}

#[inline(always)]
fn add_scaled_portable(acc: &mut [f32], row: &[f32], x: f32) {
    acc.iter_mut().zip(row).for_each(|(a, r)| *a += x * r);
}

#[inline(always)]
fn add_portable(acc: &mut [f32], row: &[f32]) {
    acc.iter_mut().zip(row).for_each(|(a, r)| *a += r);
}

/// Converts IEEE half-precision bits to `f32` (exact: every f16 is an f32).
pub fn f16_to_f32(src: &[u16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len());
    match Isa::detect() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2` implies F16C was detected at run time (see module docs).
        Isa::Avx2 => unsafe { x86::f16_to_f32_f16c(src, dst) },
        _ => src.iter().zip(dst).for_each(|(&s, d)| *d = half::f16::from_bits(s).to_f32()),
    }
}

/// Converts bfloat16 bits to `f32` (exact: a bf16 is the top half of an f32).
pub fn bf16_to_f32(src: &[u16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len());
    src.iter().zip(dst).for_each(|(&s, d)| *d = f32::from_bits((s as u32) << 16));
}

/// Query lanes per block of the MaxSim kernels: 4 AVX2 registers of 8 `f32`.
pub const MAXSIM_BLOCK_LANES: usize = 32;

/// For every document token `d` (rows of `doc`, `dim` wide) and every lane `l` of a query block,
/// `maxes[l] = max(maxes[l], ⟨q_l, d⟩)`. The block is stored dimension-major: coordinate `c` of
/// lane `l` at `block[c * lanes + l]`, `lanes` a multiple of 8 up to [`MAXSIM_BLOCK_LANES`].
pub fn max_dots(isa: Isa, block: &[f32], lanes: usize, dim: usize, doc: &[f32], maxes: &mut [f32]) {
    assert!(lanes % 8 == 0 && (8..=MAXSIM_BLOCK_LANES).contains(&lanes), "lanes = {lanes}");
    assert_eq!(block.len(), dim * lanes);
    assert_eq!(doc.len() % dim, 0);
    assert_eq!(maxes.len(), lanes);
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            assert_eq!(Isa::detect(), Isa::Avx2, "AVX2 kernel requested on a CPU without it");
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

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn add_scaled_avx2(acc: &mut [f32], row: &[f32], x: f32) {
        // Same code as the portable loop; compiled with AVX2 so LLVM uses 8-wide vectors.
        super::add_scaled_portable(acc, row, x)
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn add_avx2(acc: &mut [f32], row: &[f32]) {
        super::add_portable(acc, row)
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

    /// Document tokens processed together: 3 tokens × up to 4 registers = 12 independent FMA
    /// chains, enough to cover FMA latency (4–5 cycles) at 2 FMAs per cycle, within 16 registers.
    const DOC_TILE: usize = 3;

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn max_dots_avx2<const NV: usize>(block: &[f32], dim: usize, doc: &[f32], maxes: &mut [f32]) {
        let lanes = NV * 8;
        let n = doc.len() / dim;
        let q = block.as_ptr();
        let d = doc.as_ptr();
        // SAFETY (whole body): the caller asserted block.len() == dim * lanes,
        // doc.len() == n * dim and maxes.len() == lanes; every offset below stays inside those.
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
}
