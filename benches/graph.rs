//! Vamana graph benchmarks (plain harness; one JSON object per line).
//!
//! For a corpus (scifact-mini's 500 documents, or `QUIVERDB_BENCH_GRAPH_N` generated documents,
//! default 20,000): document FDEs, a PQ-256-8 codebook and codes, then for each build-vector option
//! (`cs<D>n`: a Count Sketch of the FDE to D dims; with `full`, also `fulln`: the whole 10,240-dim
//! FDE and `pqn`: the FDE reconstructed from its PQ code; all normalised) the build time and,
//! at several search list sizes L, recall@100 of PQ-ADC graph search against the exhaustive PQ-ADC
//! scan, distance computations per query, and single-threaded queries/s.
//!
//! `cargo bench --bench graph -- [synthetic] [scifact] [full] [int8]` (`full` adds the slow 10,240-dim
//! options; `int8` times the build's distance, `simd::dot_i8`, on 1,024-dim vectors, by the kernel
//! the CPU dispatches to).
#![allow(missing_docs)]

use std::time::Instant;

use rayon::prelude::*;

use quiverdb::dataset::{Dataset, MultiVectors};
use quiverdb::encode::fde::apply_count_sketch;
use quiverdb::encode::pq::{PqCodebook, PqParams};
use quiverdb::encode::simd;
use quiverdb::graph::{beam_search, build, SearchStats, VamanaParams};
use quiverdb::synthetic::{generate, CorpusSpec};
use quiverdb::{FdeEncoder, FdeParams};

fn fdes(sets: &MultiVectors, enc: &FdeEncoder, doc: bool) -> Vec<f32> {
    let dim = enc.fde_dim();
    let mut out = vec![0f32; sets.len() * dim];
    out.par_chunks_mut(dim).enumerate().for_each(|(i, o)| {
        let t = sets.get(i);
        if doc {
            enc.encode_document_into(&t, o).unwrap()
        } else {
            enc.encode_query_into(&t, o).unwrap()
        }
    });
    out
}

fn project(fdes: &[f32], dim: usize, target: usize) -> Vec<f32> {
    fdes.par_chunks(dim).flat_map_iter(|v| apply_count_sketch(v, target as u32, 77).unwrap()).collect()
}

fn run(name: &str, docs: &MultiVectors, queries: &MultiVectors, with_full: bool) {
    let enc = FdeEncoder::new(FdeParams::new(docs.dim() as u32)).unwrap();
    let dim = enc.fde_dim();
    let doc_fdes = fdes(docs, &enc, true);
    let query_fdes = fdes(queries, &enc, false);
    let cb = PqCodebook::train(&doc_fdes, dim, &PqParams::for_dim(dim)).unwrap().codebook;
    let m = cb.subspaces();
    let mut codes = vec![0u8; docs.len() * m];
    cb.encode_batch(&doc_fdes, &mut codes).unwrap();
    let tables: Vec<_> = query_fdes.chunks(dim).map(|q| cb.adc_table(q).unwrap()).collect();
    let truth: Vec<Vec<u32>> =
        tables.iter().map(|t| t.scan(&codes, 100, |_| false).iter().map(|s| s.doc).collect()).collect();
    let t = Instant::now();
    for table in &tables {
        std::hint::black_box(table.scan(&codes, 100, |_| false));
    }
    let scan_qps = tables.len() as f64 / t.elapsed().as_secs_f64();

    let only: Option<String> = std::env::var("QUIVERDB_BENCH_GRAPH_OPTIONS").ok();
    // `n`: normalised build vectors (the angular build the engine uses); without `n`: the raw
    // projections, which the builder then treats the same way (kept to compare with older runs).
    let mut options: Vec<(String, usize, bool)> =
        vec![("cs256n".into(), 256, true), ("cs512n".into(), 512, true), ("cs1024n".into(), 1024, true)];
    if with_full {
        options.push(("fulln".into(), dim, true));
        options.push(("pqn".into(), dim, true));
    }
    for (option, target, normalize) in options {
        if only.as_ref().is_some_and(|o| !o.split(',').any(|x| x == option)) {
            continue;
        }
        let mut vectors = if option == "pqn" {
            // PQ-reconstructed FDEs: what a builder that keeps only the codes would see.
            let mut out = vec![0f32; docs.len() * dim];
            for (code, v) in codes.chunks(m).zip(out.chunks_mut(dim)) {
                cb.decode(code, v);
            }
            out
        } else if target == dim {
            doc_fdes.clone()
        } else {
            project(&doc_fdes, dim, target)
        };
        if normalize {
            for v in vectors.chunks_mut(target) {
                let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                v.iter_mut().for_each(|x| *x /= n);
            }
        }
        let passes: Vec<u32> = std::env::var("QUIVERDB_BENCH_GRAPH_PASSES")
            .ok()
            .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect())
            .unwrap_or_else(|| vec![2]);
        for pass_count in passes {
            let params = VamanaParams { two_pass: pass_count == 2, ..VamanaParams::default() };
            let t = Instant::now();
            let (graph, stats) = build(vectors.clone(), target, &params).unwrap();
            let build_s = t.elapsed().as_secs_f64();
            for l in [100usize, 200, 400] {
                let mut recall = 0.0;
                let mut distances = 0u64;
                let t = Instant::now();
                for (table, truth) in tables.iter().zip(&truth) {
                    let mut s = SearchStats::default();
                    let found = beam_search(
                        &graph,
                        l.max(100),
                        |i| table.score(&codes[i as usize * m..(i as usize + 1) * m]),
                        |_| false,
                        &mut s,
                    )
                    .unwrap();
                    distances += s.distance_computations;
                    recall += found.iter().take(100).filter(|f| truth.contains(&f.doc)).count() as f64
                        / truth.len().min(100) as f64;
                }
                let qps = tables.len() as f64 / t.elapsed().as_secs_f64();
                let t = Instant::now();
                tables.par_iter().for_each(|table| {
                    let mut s = SearchStats::default();
                    std::hint::black_box(
                        beam_search(
                            &graph,
                            l.max(100),
                            |i| table.score(&codes[i as usize * m..(i as usize + 1) * m]),
                            |_| false,
                            &mut s,
                        )
                        .unwrap(),
                    );
                });
                let qps_all = tables.len() as f64 / t.elapsed().as_secs_f64();
                let nq = tables.len() as f64;
                println!(
                    "{}",
                    serde_json::json!({
                        "bench": "graph", "corpus": name, "n_docs": docs.len(), "build_vectors": option,
                        "params": {"R": params.max_degree, "L_build": params.build_list, "alpha": params.alpha, "passes": pass_count, "L": l.max(100)},
                        "build_s": build_s, "build_docs_per_s": docs.len() as f64 / build_s,
                        "build_distances_per_doc": stats.distance_computations as f64 / docs.len() as f64,
                        "graph_bytes_per_doc": 4 * params.max_degree,
                        "recall@100_vs_adc_scan": recall / nq, "distances_per_query": distances as f64 / nq,
                        "distance_share_of_scan": distances as f64 / nq / docs.len() as f64,
                        "qps_1thread": qps, "qps_all_threads": qps_all, "threads": rayon::current_num_threads(),
                        "scan_qps_1thread": scan_qps,
                    })
                );
            }
        }
    }
}

/// Nanoseconds per 1,024-dim int8 inner product over 4,096 vectors (4 MB, as scattered as a
/// build's reads; `QUIVERDB_BENCH_INT8_N=8` keeps them in L1 to time the arithmetic alone), by
/// the kernel the CPU dispatches to (`QUIVERDB_NO_AVX512=1` times the AVX2 one).
fn int8_dots() {
    const DIM: usize = 1024;
    let n_vectors: usize = std::env::var("QUIVERDB_BENCH_INT8_N").ok().and_then(|v| v.parse().ok()).unwrap_or(4096);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<i8> = (0..n_vectors * DIM)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (((state >> 40) % 255) as i32 - 127) as i8
        })
        .collect();
    let row = |i: usize| &data[i * DIM..(i + 1) * DIM];
    let pairs = 4_000_000usize;
    let t = Instant::now();
    let mut sum = 0i64;
    let mut j = 1usize;
    for i in 0..pairs {
        j = (j * 2_654_435_761 + 12345) % n_vectors;
        sum += simd::dot_i8(row(i % n_vectors), row(j)) as i64;
    }
    let ns = t.elapsed().as_secs_f64() * 1e9 / pairs as f64;
    println!(
        "{}",
        serde_json::json!({"bench": "int8_dot", "dim": DIM, "vectors": n_vectors, "vnni": simd::int8_vnni(), "isa": simd::Isa::detect().name(),
            "ns_per_dot": ns, "checksum": sum})
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let wants = |name: &str| args.is_empty() || args.iter().any(|a| a == name);
    let with_full = args.iter().any(|a| a == "full");
    rayon::ThreadPoolBuilder::new().build_global().ok();
    if wants("scifact") {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/scifact-mini");
        if let Ok(ds) = Dataset::open(&dir) {
            run("scifact-mini", &ds.docs, &ds.queries, with_full);
        }
    }
    if wants("int8") {
        int8_dots();
    }
    if wants("synthetic") {
        let n: usize = std::env::var("QUIVERDB_BENCH_GRAPH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
        let corpus = generate(&CorpusSpec { n_docs: n, n_queries: 100, ..CorpusSpec::small() }).unwrap();
        run("synthetic", &corpus.docs, &corpus.queries, with_full);
    }
}
