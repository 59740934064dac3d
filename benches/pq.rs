//! Product-quantization benchmarks (a plain harness: some runs take minutes, which criterion's
//! minimum of ten samples would multiply). Prints one JSON object per measurement.
//!
//! `cargo bench --bench pq -- [kmeans] [train] [scan] [quality] [candidates]` (all when none is named).
//! `QUIVERDB_BENCH_PQ_N` sets the FDE count for `train` (default 20,000; the figure is
//! 100,000, which needs ~4 GiB for the FDEs and a few minutes on 2 cores).
#![allow(missing_docs)]

use std::time::Instant;

use linfa::traits::Fit;
use linfa::DatasetBase;
use linfa_clustering::{KMeans, KMeansInit};
use ndarray::Array2;
use rand::SeedableRng;
use rayon::prelude::*;

use quiverdb::dataset::Dataset;
use quiverdb::encode::pq::{lloyd_for_bench, PqCodebook, PqParams};
use quiverdb::encode::rng::SplitMix64;
use quiverdb::eval::recall_at_k;
use quiverdb::exact::exact_top_k_batch;
use quiverdb::synthetic::{generate, CorpusSpec};
use quiverdb::topk::{Scored, TopK};
use quiverdb::{FdeEncoder, FdeParams};

fn fdes_of_synthetic(n: usize) -> (Vec<f32>, usize) {
    let corpus = generate(&CorpusSpec { n_docs: n, n_queries: 1, ..CorpusSpec::small() }).unwrap();
    let enc = FdeEncoder::new(FdeParams::new(128)).unwrap();
    let dim = enc.fde_dim();
    let mut out = vec![0f32; n * dim];
    out.par_chunks_mut(dim).enumerate().for_each(|(i, o)| enc.encode_document_into(&corpus.docs.get(i), o).unwrap());
    (out, dim)
}

/// The FDE of a generated 19-token query (queries are never filled: about half its subspaces
/// are zero).
fn query_fde_of_synthetic(dim: usize) -> Vec<f32> {
    let corpus = generate(&CorpusSpec { n_docs: 1, n_queries: 1, query_tokens: 19, ..CorpusSpec::small() }).unwrap();
    let enc = FdeEncoder::new(FdeParams::new(128)).unwrap();
    let mut out = vec![0f32; dim];
    enc.encode_query_into(&corpus.queries.get(0), &mut out).unwrap();
    out
}

/// Side by side on the same 100,000 × 8 points (10 subspaces of 10,000 synthetic document FDEs),
/// the same initial centroids and the same number of iterations: our Lloyd loop vs linfa-clustering.
fn kmeans() {
    let (fdes, dim) = fdes_of_synthetic(10_000);
    let mut points = Vec::with_capacity(100_000 * 8);
    for s in 0..10 {
        for i in 0..10_000 {
            points.extend_from_slice(&fdes[i * dim + s * 8..i * dim + s * 8 + 8]);
        }
    }
    let n = points.len() / 8;
    let iterations = 16;
    let mut rng = SplitMix64::new(11);
    let init: Vec<usize> = (0..256).map(|_| rng.below(n as u64) as usize).collect();
    let init_centroids: Vec<f32> = init.iter().flat_map(|&p| points[p * 8..p * 8 + 8].iter().copied()).collect();

    let t = Instant::now();
    let (ours, ours_sse) = lloyd_for_bench(&points, 8, iterations, &init_centroids);
    let ours_s = t.elapsed().as_secs_f64();
    drop(ours);

    let data = Array2::from_shape_vec((n, 8), points.clone()).unwrap();
    let dataset = DatasetBase::from(data.clone());
    let init_array = Array2::from_shape_vec((256, 8), init_centroids.clone()).unwrap();
    let t = Instant::now();
    let model = KMeans::params_with_rng(256, rand_xoshiro::Xoshiro256Plus::seed_from_u64(1))
        .n_runs(1)
        .max_n_iterations(iterations as u64)
        .tolerance(1e-12)
        .init_method(KMeansInit::Precomputed(init_array))
        .fit(&dataset)
        .unwrap();
    let linfa_s = t.elapsed().as_secs_f64();
    let centroids = model.centroids();
    let linfa_sse: f64 = (0..n)
        .into_par_iter()
        .map(|p| {
            (0..256)
                .map(|c| (0..8).map(|d| ((data[[p, d]] - centroids[[c, d]]) as f64).powi(2)).sum::<f64>())
                .fold(f64::INFINITY, f64::min)
        })
        .sum();
    println!(
        "{}",
        serde_json::json!({
            "bench": "kmeans_100k_x8_256", "iterations": iterations, "threads": 1,
            "ours_s": ours_s, "linfa_s": linfa_s, "linfa_over_ours": linfa_s / ours_s,
            "ours_mse": ours_sse / n as f64, "linfa_mse": linfa_sse / n as f64,
        })
    );
}

fn train() {
    let n: usize = std::env::var("QUIVERDB_BENCH_PQ_N").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let t = Instant::now();
    let (fdes, dim) = fdes_of_synthetic(n);
    let fde_s = t.elapsed().as_secs_f64();
    let params = PqParams { max_training_vectors: n as u32, ..PqParams::for_dim(dim) };
    let t = Instant::now();
    let trained = PqCodebook::train(&fdes, dim, &params).unwrap();
    let train_s = t.elapsed().as_secs_f64();
    let mut codes = vec![0u8; n * trained.codebook.subspaces()];
    let t = Instant::now();
    trained.codebook.encode_batch(&fdes, &mut codes).unwrap();
    let encode_s = t.elapsed().as_secs_f64();
    // One thread, one vector at a time (the whole codebook per vector) against blocks of vectors.
    let sample = &fdes[..dim * n.min(2048)];
    let mut one = vec![0u8; sample.len() / dim * trained.codebook.subspaces()];
    let t = Instant::now();
    for (v, c) in sample.chunks(dim).zip(one.chunks_mut(trained.codebook.subspaces())) {
        trained.codebook.encode(v, c).unwrap();
    }
    let one_s = t.elapsed().as_secs_f64();
    let mut many = vec![0u8; one.len()];
    let t = Instant::now();
    trained.codebook.encode_many(sample, &mut many).unwrap();
    let many_s = t.elapsed().as_secs_f64();
    assert_eq!(one, many, "block encoding must give the same codes");
    let per_vector_1thread_us = serde_json::json!({
        "one_at_a_time": one_s * 1e6 / (sample.len() / dim) as f64,
        "blocks": many_s * 1e6 / (sample.len() / dim) as f64,
    });
    let mean_norm2 = fdes.chunks(dim).map(|v| v.iter().map(|x| (x * x) as f64).sum::<f64>()).sum::<f64>() / n as f64;
    println!(
        "{}",
        serde_json::json!({
            "bench": "pq_train_encode", "n_fdes": n, "fde_dim": dim, "subspaces": params.subspaces,
            "iterations": params.iterations, "threads": rayon::current_num_threads(),
            "fde_encode_s": fde_s, "train_s": train_s, "encode_s": encode_s, "encode_fdes_per_s": n as f64 / encode_s,
            "encode_us_per_fde_1thread": per_vector_1thread_us,
            "relative_distortion": trained.distortion / mean_norm2,
        })
    );
}

fn scan() {
    let (fdes, dim) = fdes_of_synthetic(20_000);
    let params = PqParams { max_training_vectors: 20_000, ..PqParams::for_dim(dim) };
    let cb = PqCodebook::train(&fdes, dim, &params).unwrap().codebook;
    let mut codes = vec![0u8; 20_000 * cb.subspaces()];
    cb.encode_batch(&fdes, &mut codes).unwrap();
    let table = cb.adc_table(&fdes[..dim]).unwrap();
    let t = Instant::now();
    let table_reps = 200;
    for _ in 0..table_reps {
        std::hint::black_box(cb.adc_table(std::hint::black_box(&fdes[..dim])).unwrap());
    }
    let table_us = t.elapsed().as_secs_f64() * 1e6 / table_reps as f64;
    let reps = 20;
    let t = Instant::now();
    for _ in 0..reps {
        std::hint::black_box(table.scan(std::hint::black_box(&codes), 100, |_| false));
    }
    let s = t.elapsed().as_secs_f64();
    // A graph beam's access pattern: a handful of scattered codes per expanded node (9 on
    // average on SciFact-shaped data), scored by a table of a 19-token query (about half the
    // subspaces active, as for a real query).
    let query = query_fde_of_synthetic(dim);
    let beam_table = cb.adc_table(&query).unwrap();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let ids: Vec<u32> = (0..90_000)
        .map(|_| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % 20_000) as u32
        })
        .collect();
    let mut out = Vec::new();
    let t = Instant::now();
    for group in ids.chunks(9) {
        beam_table.score_many(std::hint::black_box(&codes), group, &mut out);
        std::hint::black_box(&out);
    }
    let scattered_ns = t.elapsed().as_secs_f64() * 1e9 / ids.len() as f64;
    println!(
        "{}",
        serde_json::json!({
            "bench": "adc_scattered_groups_of_9", "subspaces": cb.subspaces(),
            "active_subspaces": beam_table.active_subspaces(), "ns_per_code": scattered_ns,
        })
    );
    println!(
        "{}",
        serde_json::json!({
            "bench": "adc_flat_scan", "subspaces": cb.subspaces(), "codes": 20_000, "threads": 1,
            "codes_per_s": (20_000 * reps) as f64 / s, "adc_table_us": table_us,
        })
    );
}

/// On scifact-mini: recall@100 of the PQ-ADC flat scan against the exact FDE inner-product top-100,
/// and MUVERA's own curve: recall of the exact MaxSim top-10 within the exact-FDE top-N.
fn quality() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/scifact-mini");
    let Ok(ds) = Dataset::open(&dir) else {
        println!("{}", serde_json::json!({"bench": "pq_quality", "skipped": "scifact-mini not found"}));
        return;
    };
    let enc = FdeEncoder::new(FdeParams::new(128)).unwrap();
    let dim = enc.fde_dim();
    let docs: Vec<f32> =
        (0..ds.docs.len()).into_par_iter().flat_map(|i| enc.encode_document(&ds.docs.get(i)).unwrap()).collect();
    let params = PqParams::for_dim(dim);
    let cb = PqCodebook::train(&docs, dim, &params).unwrap().codebook;
    let mut codes = vec![0u8; ds.docs.len() * cb.subspaces()];
    cb.encode_batch(&docs, &mut codes).unwrap();
    let exact = exact_top_k_batch(&ds.queries, &ds.docs, 10).unwrap();
    let (mut pq_recall, mut curve) = (0.0, [0.0f64; 4]);
    let ns = [100usize, 200, 500, 1000];
    for (q, exact_top) in exact.iter().enumerate() {
        let qf = enc.encode_query(&ds.queries.get(q)).unwrap();
        let mut fde_top = TopK::new(1000);
        for (d, v) in docs.chunks(dim).enumerate() {
            fde_top.push(Scored { doc: d as u32, score: quiverdb::encode::simd::dot(&qf, v) });
        }
        let fde_ranked: Vec<u32> = fde_top.into_sorted().iter().map(|s| s.doc).collect();
        let adc: Vec<u32> = cb.adc_table(&qf).unwrap().scan(&codes, 100, |_| false).iter().map(|s| s.doc).collect();
        pq_recall += recall_at_k(&adc, &fde_ranked, 100);
        let truth: Vec<u32> = exact_top.iter().map(|s| s.doc).collect();
        for (i, &n) in ns.iter().enumerate() {
            let within = truth.iter().filter(|d| fde_ranked[..n.min(fde_ranked.len())].contains(d)).count();
            curve[i] += within as f64 / truth.len() as f64;
        }
    }
    let nq = exact.len() as f64;
    println!(
        "{}",
        serde_json::json!({
            "bench": "pq_quality", "dataset": "scifact-mini", "n_docs": ds.docs.len(),
            "pq_adc_recall@100_vs_exact_fde": pq_recall / nq,
            "exact_maxsim_top10_within_fde_top_n": {
                "100": curve[0] / nq, "200": curve[1] / nq, "500": curve[2] / nq, "1000": curve[3] / nq
            },
            "note": "with 500 documents, N >= 500 covers the whole corpus",
        })
    );
}

/// Which candidate scorer could carry a compact in-RAM code at scale: on generated documents of
/// 8-24 tokens with 16-token queries (the scale issue's shape), the share of the exact MaxSim
/// top-10 found within the top-N of an exhaustive scan by each scorer. An exhaustive scan takes
/// navigation out of the picture: a graph over the same scorer can only do worse.
/// `QUIVERDB_BENCH_CANDIDATES_N` sets the corpus size (default 20,000; 100,000 needs ~5 GiB).
fn candidates() {
    let n: usize = std::env::var("QUIVERDB_BENCH_CANDIDATES_N").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let spec = CorpusSpec {
        n_docs: n,
        n_queries: 100,
        min_doc_tokens: 8,
        max_doc_tokens: 24,
        query_tokens: 16,
        ..CorpusSpec::small()
    };
    let corpus = generate(&spec).unwrap();
    let enc = FdeEncoder::new(FdeParams::new(128)).unwrap();
    let dim = enc.fde_dim();
    let mut fdes = vec![0f32; n * dim];
    fdes.par_chunks_mut(dim).enumerate().for_each(|(i, o)| enc.encode_document_into(&corpus.docs.get(i), o).unwrap());
    let sketch = quiverdb::encode::fde::CountSketch::new(dim, 1024, 0x5ce7).unwrap();
    let mut sketches = vec![0f32; n * 1024];
    sketches.par_chunks_mut(1024).zip(fdes.par_chunks(dim)).for_each(|(o, v)| sketch.apply(v, o));
    let truth = exact_top_k_batch(&corpus.queries, &corpus.docs, 10).unwrap();
    let ns = [300usize, 1000, 3000, 10000];
    let deepest = *ns.last().unwrap();
    let within = |ranked: &[u32], q: usize| -> Vec<f64> {
        ns.iter()
            .map(|&c| {
                let top = &ranked[..c.min(ranked.len())];
                truth[q].iter().filter(|s| top.contains(&s.doc)).count() as f64 / truth[q].len() as f64
            })
            .collect()
    };
    let flat = |vectors: &[f32], width: usize, query: &[f32]| -> Vec<u32> {
        let mut top = TopK::new(deepest);
        for (d, v) in vectors.chunks(width).enumerate() {
            top.push(Scored { doc: d as u32, score: quiverdb::encode::simd::dot(query, v) });
        }
        top.into_sorted().iter().map(|s| s.doc).collect()
    };
    let pq = |vectors: &[f32], width: usize, subspaces: u32| -> (PqCodebook, Vec<u8>) {
        let params = PqParams { subspaces, ..PqParams::for_dim(width) };
        let cb = PqCodebook::train(vectors, width, &params).unwrap().codebook;
        let mut codes = vec![0u8; n * subspaces as usize];
        cb.encode_batch(vectors, &mut codes).unwrap();
        (cb, codes)
    };
    let fde_pq: Vec<(u32, PqCodebook, Vec<u8>)> = [1280u32, 320, 160]
        .iter()
        .map(|&m| {
            let (cb, c) = pq(&fdes, dim, m);
            (m, cb, c)
        })
        .collect();
    let sketch_pq: Vec<(u32, PqCodebook, Vec<u8>)> = [256u32, 128]
        .iter()
        .map(|&m| {
            let (cb, c) = pq(&sketches, 1024, m);
            (m, cb, c)
        })
        .collect();
    let mut rows: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    let mut add = |name: String, r: Vec<f64>| {
        let e = rows.entry(name).or_insert_with(|| vec![0.0; ns.len()]);
        e.iter_mut().zip(r).for_each(|(a, b)| *a += b);
    };
    for q in 0..corpus.queries.len() {
        let qf = enc.encode_query(&corpus.queries.get(q)).unwrap();
        let mut qs = vec![0f32; 1024];
        sketch.apply(&qf, &mut qs);
        add("exact_fde".into(), within(&flat(&fdes, dim, &qf), q));
        add("sketch1024_f32".into(), within(&flat(&sketches, 1024, &qs), q));
        for (m, cb, codes) in &fde_pq {
            let ranked: Vec<u32> =
                cb.adc_table(&qf).unwrap().scan(codes, deepest, |_| false).iter().map(|s| s.doc).collect();
            add(format!("fde_pq{m}"), within(&ranked, q));
        }
        for (m, cb, codes) in &sketch_pq {
            let ranked: Vec<u32> =
                cb.adc_table(&qs).unwrap().scan(codes, deepest, |_| false).iter().map(|s| s.doc).collect();
            add(format!("sketch1024_pq{m}"), within(&ranked, q));
        }
    }
    let nq = corpus.queries.len() as f64;
    for (name, r) in rows {
        let by_n: serde_json::Map<String, serde_json::Value> =
            ns.iter().zip(&r).map(|(c, v)| (c.to_string(), serde_json::json!(v / nq))).collect();
        println!(
            "{}",
            serde_json::json!({"bench": "candidate_scorers", "n_docs": n, "scorer": name, "exact_top10_within_top_n": by_n})
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let wants = |name: &str| args.is_empty() || args.iter().any(|a| a == name);
    if wants("kmeans") {
        kmeans();
    }
    if wants("train") {
        train();
    }
    if wants("scan") {
        scan();
    }
    if wants("quality") {
        quality();
    }
    if wants("candidates") {
        candidates();
    }
}
