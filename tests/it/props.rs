//! Property tests (proptest) of the encoders and kernels.

use proptest::prelude::*;
use quiverdb::encode::maxsim::maxsim_reference;
use quiverdb::encode::rng::SplitMix64;
use quiverdb::encode::simd::{self, Isa};
use quiverdb::{FdeEncoder, FdeParams, MaxSimQuery, Projection, TokenMatrix};

/// `n` unit vectors drawn from `rng` (a fresh seed per call keeps the cases independent).
fn unit_rows(rng: &mut SplitMix64, n: usize, dim: usize) -> Vec<f32> {
    quiverdb::synthetic::unit_rows(n, dim, rng.next_u64())
}

fn small_params(dim: u32, k_sim: u32, r_reps: u32, projection: Projection, fill_empty: bool, seed: u32) -> FdeParams {
    FdeParams { dim, k_sim, projection, r_reps, fill_empty, final_dim: None, seed }
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// With the identity projection and filled documents, each query token meets either the
    /// average of some document tokens or a single document token, so
    /// ⟨F_q, F_d⟩ ≤ r_reps · MaxSim(q, d) exactly (up to float rounding).
    #[test]
    fn identity_projection_never_overestimates(seed in any::<u64>(), nq in 1usize..12, nd in 1usize..40, k_sim in 0u32..5, reps in 1u32..6) {
        let dim = 8;
        let mut rng = SplitMix64::new(seed);
        let q = unit_rows(&mut rng, nq, dim);
        let d = unit_rows(&mut rng, nd, dim);
        let (qm, dm) = (TokenMatrix::new(&q, dim).unwrap(), TokenMatrix::new(&d, dim).unwrap());
        let enc = FdeEncoder::new(small_params(dim as u32, k_sim, reps, Projection::Identity, true, seed as u32)).unwrap();
        let approx = dot(&enc.encode_query(&qm).unwrap(), &enc.encode_document(&dm).unwrap());
        let exact = reps as f64 * maxsim_reference(&qm, &dm).unwrap() as f64;
        prop_assert!(approx <= exact + 1e-4 * (1.0 + exact.abs()), "{approx} > {exact}");
    }

    /// Without filling, a document FDE is a per-bucket average: independent of token order.
    #[test]
    fn document_fde_ignores_token_order(seed in any::<u64>(), nd in 1usize..40, proj in 0u8..3) {
        let dim = 16;
        let mut rng = SplitMix64::new(seed);
        let d = unit_rows(&mut rng, nd, dim);
        let mut order: Vec<usize> = (0..nd).collect();
        for i in (1..nd).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let shuffled: Vec<f32> = order.iter().flat_map(|&i| d[i * dim..(i + 1) * dim].iter().copied()).collect();
        let projection = match proj { 0 => Projection::Identity, 1 => Projection::CountSketch { d_proj: 4 }, _ => Projection::DenseSign { d_proj: 4 } };
        let enc = FdeEncoder::new(small_params(dim as u32, 3, 3, projection, false, 7)).unwrap();
        let a = enc.encode_document(&TokenMatrix::new(&d, dim).unwrap()).unwrap();
        let b = enc.encode_document(&TokenMatrix::new(&shuffled, dim).unwrap()).unwrap();
        for (x, y) in a.iter().zip(&b) {
            prop_assert!((x - y).abs() <= 1e-5, "{x} vs {y}");
        }
    }

    /// With filling, occupied buckets are order independent and every filled bucket holds the
    /// projection of a token at minimal Hamming distance (which one may depend on order: the
    /// reference's "first minimum wins" rule).
    #[test]
    fn filled_document_fde_differs_only_in_filled_buckets(seed in any::<u64>(), nd in 1usize..10) {
        let dim = 8;
        let mut rng = SplitMix64::new(seed);
        let d = unit_rows(&mut rng, nd, dim);
        let reversed: Vec<f32> = (0..nd).rev().flat_map(|i| d[i * dim..(i + 1) * dim].iter().copied()).collect();
        let nofill = FdeEncoder::new(small_params(dim as u32, 3, 2, Projection::Identity, false, 3)).unwrap();
        let fill = FdeEncoder::new(small_params(dim as u32, 3, 2, Projection::Identity, true, 3)).unwrap();
        let dm = TokenMatrix::new(&d, dim).unwrap();
        let base = nofill.encode_document(&dm).unwrap();
        let a = fill.encode_document(&dm).unwrap();
        let b = fill.encode_document(&TokenMatrix::new(&reversed, dim).unwrap()).unwrap();
        for (block, ((x, y), z)) in a.chunks(dim).zip(b.chunks(dim)).zip(base.chunks(dim)).enumerate() {
            let occupied = z.iter().any(|&v| v != 0.0);
            if occupied {
                for (u, v) in x.iter().zip(y) { prop_assert!((u - v).abs() <= 1e-5); }
            } else {
                // A filled block is one of the document's tokens, verbatim.
                for candidate in [x, y] {
                    prop_assert!(d.chunks(dim).any(|t| t == candidate), "block {block} is not a token");
                }
            }
        }
    }

    /// Query FDEs are sums, so the FDE of a union is the sum of the FDEs (also through a final
    /// Count Sketch, which is linear).
    #[test]
    fn query_fde_is_additive(seed in any::<u64>(), na in 1usize..10, nb in 1usize..10, final_dim in prop::option::of(4u32..64)) {
        let dim = 8;
        let mut rng = SplitMix64::new(seed);
        let a = unit_rows(&mut rng, na, dim);
        let b = unit_rows(&mut rng, nb, dim);
        let ab: Vec<f32> = a.iter().chain(&b).copied().collect();
        let mut params = small_params(dim as u32, 2, 4, Projection::CountSketch { d_proj: 4 }, true, 11);
        params.final_dim = final_dim;
        let enc = FdeEncoder::new(params).unwrap();
        let fa = enc.encode_query(&TokenMatrix::new(&a, dim).unwrap()).unwrap();
        let fb = enc.encode_query(&TokenMatrix::new(&b, dim).unwrap()).unwrap();
        let fab = enc.encode_query(&TokenMatrix::new(&ab, dim).unwrap()).unwrap();
        for ((x, y), z) in fa.iter().zip(&fb).zip(&fab) {
            prop_assert!((x + y - z).abs() <= 1e-4, "{x} + {y} != {z}");
        }
    }

    /// The int8 inner product (graph construction) is exact: the dispatched kernel (AVX2 where
    /// the machine has it) equals the portable one and the i64 sum, at every length (tails too);
    /// quantization is within half a step of every value.
    #[test]
    fn int8_dot_is_exact_and_quantization_within_half_a_step(seed in any::<u64>(), n in 0usize..300) {
        let mut rng = SplitMix64::new(seed);
        let a: Vec<i8> = (0..n).map(|_| (rng.below(255) as i32 - 127) as i8).collect();
        let b: Vec<i8> = (0..n).map(|_| (rng.below(255) as i32 - 127) as i8).collect();
        let want: i64 = a.iter().zip(&b).map(|(&x, &y)| x as i64 * y as i64).sum();
        prop_assert_eq!(simd::dot_i8(&a, &b) as i64, want);
        prop_assert_eq!(simd::dot_i8_portable(&a, &b) as i64, want);
        let v: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
        let mut q = vec![0i8; n];
        let scale = simd::quantize_i8(&v, &mut q);
        for (&x, &y) in v.iter().zip(&q) {
            prop_assert!((-127..=127).contains(&(y as i32)));
            prop_assert!((x - scale * y as f32).abs() <= scale * 0.5 + 1e-6, "{x} vs {scale}·{y}");
        }
    }

    /// Every available kernel equals the scalar reference within |Σ|q||d|| · 1e-5 (FMA vs separate
    /// multiply-add and a different summation order are the only differences).
    #[test]
    fn maxsim_kernels_equal_reference(seed in any::<u64>(), nq in 1usize..80, nd in 1usize..30, dim in 1usize..200) {
        let mut rng = SplitMix64::new(seed);
        let q: Vec<f32> = (0..nq * dim).map(|_| rng.normal() as f32).collect();
        let d: Vec<f32> = (0..nd * dim).map(|_| rng.normal() as f32).collect();
        let (qm, dm) = (TokenMatrix::new(&q, dim).unwrap(), TokenMatrix::new(&d, dim).unwrap());
        let want = maxsim_reference(&qm, &dm).unwrap();
        let bound: f32 = qm.iter_rows().map(|r| r.iter().map(|x| x.abs()).sum::<f32>()).sum::<f32>()
            * d.iter().fold(0f32, |m, x| m.max(x.abs()));
        for isa in Isa::available() {
            let got = MaxSimQuery::with_isa(&qm, isa).score_matrix(&dm).unwrap();
            prop_assert!((got - want).abs() <= 1e-5 * bound + 1e-6, "{isa:?}: {got} vs {want}");
        }
    }
}

/// ⟨F_q, F_d⟩ tracks r_reps · MaxSim: over query/document pairs of varying overlap, the Pearson
/// correlation at the default parameters is high (the statistic MUVERA relies on).
#[test]
fn fde_inner_product_tracks_maxsim() {
    let dim = 64;
    let mut rng = SplitMix64::new(5);
    let enc = FdeEncoder::new(FdeParams::new(dim as u32)).unwrap();
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for pair in 0..60 {
        let d = unit_rows(&mut rng, 40, dim);
        // A query whose tokens are noisy copies of a growing share of the document's tokens.
        let share = pair as f64 / 60.0;
        let mut q = Vec::new();
        for i in 0..16 {
            if rng.next_f64() < share {
                let row = &d[(i % 40) * dim..(i % 40 + 1) * dim];
                let noisy: Vec<f64> = row.iter().map(|&x| x as f64 + 0.05 * rng.normal()).collect();
                let n = noisy.iter().map(|x| x * x).sum::<f64>().sqrt();
                q.extend(noisy.iter().map(|x| (x / n) as f32));
            } else {
                q.extend(unit_rows(&mut rng, 1, dim));
            }
        }
        let (qm, dm) = (TokenMatrix::new(&q, dim).unwrap(), TokenMatrix::new(&d, dim).unwrap());
        xs.push(dot(&enc.encode_query(&qm).unwrap(), &enc.encode_document(&dm).unwrap()));
        ys.push(20.0 * maxsim_reference(&qm, &dm).unwrap() as f64);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (mx, my) = (mean(&xs), mean(&ys));
    let cov: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let vx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    let vy: f64 = ys.iter().map(|y| (y - my).powi(2)).sum();
    let r = cov / (vx * vy).sqrt();
    eprintln!("correlation {r}");
    assert!(r > 0.9, "correlation {r}");
}

mod codec {
    use proptest::prelude::*;
    use quiverdb::encode::codec::{TokenCodebook, TokenCodebookParams};
    use quiverdb::encode::rng::SplitMix64;
    use quiverdb::encode::simd::{self, Isa};

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// Residual codes decode every dimension into its own bucket: the decoded residual lies
        /// between the training residual range's extremes, the codebook survives serialisation,
        /// and every decode kernel this CPU has equals the portable one bit for bit.
        #[test]
        fn residual_codes_round_trip_and_kernels_agree(seed in any::<u64>(), n in 1usize..300, dim8 in 1usize..10, bits in prop::sample::select(vec![1u8, 2, 4]), unit in any::<bool>()) {
            let dim = dim8 * 8;
            let mut rng = SplitMix64::new(seed);
            let mut x: Vec<f32> = (0..n * dim).map(|_| rng.normal() as f32).collect();
            if unit {
                for row in x.chunks_exact_mut(dim) {
                    let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-6);
                    row.iter_mut().for_each(|v| *v /= norm);
                }
            }
            let params = TokenCodebookParams { centroids: Some(16), iterations: 3, ..Default::default() };
            let book = TokenCodebook::train(&x, dim, bits, &params).unwrap();
            prop_assert_eq!(book.unit_norm(), unit);
            prop_assert_eq!(TokenCodebook::from_bytes(&book.to_bytes(), dim).unwrap(), book.clone());
            let mut ids = vec![0u16; n];
            book.assign(&x, &mut ids).unwrap();
            let rb = book.residual_bytes();
            let mut codes = vec![0u8; n * rb];
            for ((t, &id), c) in x.chunks_exact(dim).zip(&ids).zip(codes.chunks_exact_mut(rb)) {
                book.encode_residual(t, id, c).unwrap();
            }
            let mut out = vec![0f32; n * dim];
            book.decode_many(&ids, &codes, &mut out).unwrap();
            prop_assert!(out.iter().all(|v| v.is_finite()));
            if unit {
                for row in out.chunks_exact(dim) {
                    let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
                    prop_assert!(norm == 0.0 || (norm - 1.0).abs() < 1e-4, "decoded norm {}", norm);
                }
            }
            // The single-token decoder agrees with the batch decoder.
            let mut one = vec![0f32; dim];
            book.decode(ids[0], &codes[..rb], &mut one).unwrap();
            prop_assert_eq!(&one[..], &out[..dim]);
            // Per-kernel agreement on the raw decode (no renormalisation): byte table from a
            // codebook without the unit flag.
            let raw = TokenCodebook::from_bytes(&{ let mut b = book.to_bytes(); b[9] = 0; b }, dim).unwrap();
            let mut want = vec![0f32; n * dim];
            raw.decode_many(&ids, &codes, &mut want).unwrap();
            let (table, weights) = raw_table(&raw);
            for isa in Isa::available() {
                let mut got = vec![0f32; n * dim];
                let src = simd::ResidualCodes { bits, table: &table, weights: &weights, centroids: raw.centroids(), dim, ids: &ids, codes: &codes };
                simd::decode_residuals_with(isa, src, &mut got);
                prop_assert_eq!(&got, &want, "decode kernel {}", isa.name());
            }
        }

        /// Centroid interaction equals its definition for every kernel this CPU has.
        #[test]
        fn centroid_interaction_kernels_equal_definition(seed in any::<u64>(), k16 in 1usize..6, rows in 1usize..40, n in 1usize..60) {
            let mut rng = SplitMix64::new(seed);
            let k = k16 * 16;
            let lanes = rows.div_ceil(16) * 16;
            let mut table = vec![0f32; k * lanes];
            for c in 0..k {
                for i in 0..rows {
                    table[c * lanes + i] = rng.normal() as f32;
                }
            }
            let ids: Vec<u16> = (0..n).map(|_| rng.below(k as u64) as u16).collect();
            let want: f32 = (0..rows)
                .map(|i| ids.iter().map(|&c| table[c as usize * lanes + i]).fold(f32::NEG_INFINITY, f32::max))
                .sum();
            for isa in Isa::available() {
                let got = simd::centroid_interaction_with(isa, &table, lanes, rows, &ids).unwrap();
                prop_assert!((got - want).abs() <= 1e-4 * (1.0 + want.abs()), "{} {} vs {}", isa.name(), got, want);
            }
        }
    }

    /// The per-byte-position decode table of `book`, rebuilt from its serialised weights (the
    /// layout `simd::decode_residuals` documents), and the weights, so kernels can be called
    /// directly.
    fn raw_table(book: &TokenCodebook) -> (Vec<f32>, Vec<f32>) {
        let dim = book.dim();
        let bits = book.bits() as usize;
        let levels = 1usize << bits;
        let bytes = book.to_bytes();
        let floats: Vec<f32> =
            bytes[16..].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        let weights = &floats[book.centroids().len() + dim * (levels - 1)..];
        let per = 8 / bits;
        let mut table = Vec::new();
        for pos in 0..dim / per {
            for byte in 0..256usize {
                for j in 0..per {
                    let d = pos * per + j;
                    table.push(weights[d * levels + ((byte >> (j * bits)) & (levels - 1))]);
                }
            }
        }
        (table, weights.to_vec())
    }
}
