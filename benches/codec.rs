//! Token codec benchmarks (plain harness, one JSON object per measurement):
//! `cargo bench --bench codec -- [train] [assign] [table] [interaction] [decode] [score]`
//! (all when none is named). Generated clustered 128-d tokens; `QUIVERDB_BENCH_CODEC_K` sets the
//! centroid count (default 1,024).
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Instant;

use quiverdb::encode::codec::{TokenCodebook, TokenCodebookParams};
use quiverdb::encode::maxsim::ResidualTokens;
use quiverdb::encode::storage::to_16bit;
use quiverdb::synthetic::{generate, CorpusSpec};
use quiverdb::{DocTokens, MaxSimQuery, TokenMatrix, TokenStorage};

fn timed<T>(reps: usize, mut f: impl FnMut() -> T) -> f64 {
    black_box(f());
    let t = Instant::now();
    for _ in 0..reps {
        black_box(f());
    }
    t.elapsed().as_secs_f64() / reps as f64
}

fn main() {
    let wanted: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let on = |name: &str| wanted.is_empty() || wanted.iter().any(|w| w == name);
    let k: u32 = std::env::var("QUIVERDB_BENCH_CODEC_K").ok().and_then(|v| v.parse().ok()).unwrap_or(1024);
    let corpus = generate(&CorpusSpec {
        n_docs: 400,
        n_queries: 4,
        min_doc_tokens: 180,
        max_doc_tokens: 240,
        query_tokens: 20,
        ..CorpusSpec::small()
    })
    .unwrap();
    let dim = corpus.docs.dim();
    let all: Vec<f32> = (0..corpus.docs.len()).flat_map(|i| corpus.docs.get(i).as_slice().to_vec()).collect();
    let tokens = all.len() / dim;
    let params = TokenCodebookParams { centroids: Some(k), ..Default::default() };
    let t = Instant::now();
    let book = TokenCodebook::train(&all, dim, 2, &params).unwrap();
    if on("train") {
        println!(
            "{}",
            serde_json::json!({"bench": "train", "tokens": tokens, "k": k, "seconds": t.elapsed().as_secs_f64()})
        );
    }
    let mut ids = vec![0u16; tokens];
    if on("assign") {
        let s = timed(1, || book.assign(&all, &mut ids).unwrap());
        let gflops = 2.0 * tokens as f64 * k as f64 * dim as f64 / s / 1e9;
        println!(
            "{}",
            serde_json::json!({"bench": "assign", "tokens": tokens, "k": k, "tokens_per_s": tokens as f64 / s, "gflop_s": gflops})
        );
    }
    book.assign(&all, &mut ids).unwrap();
    let doc = corpus.docs.get(0);
    let rows = doc.rows();
    let doc_ids = &ids[..rows];
    for q_tokens in [4usize, 20, 32] {
        let q = &corpus.queries.get(0).as_slice()[..q_tokens.min(corpus.queries.get(0).rows()) * dim];
        let q: Vec<f32> = q.iter().cycle().take(q_tokens * dim).copied().collect();
        if on("table") {
            let s = timed(200, || book.interaction_table(&q));
            println!(
                "{}",
                serde_json::json!({"bench": "interaction_table", "query_tokens": q_tokens, "k": k, "us": s * 1e6})
            );
        }
        let table = book.interaction_table(&q);
        if on("interaction") {
            let s = timed(20_000, || table.score(doc_ids).unwrap());
            println!(
                "{}",
                serde_json::json!({"bench": "centroid_interaction", "query_tokens": q_tokens, "doc_tokens": rows, "us_per_doc": s * 1e6, "ns_per_token": s * 1e9 / rows as f64})
            );
        }
    }
    let mut codes = vec![0u8; rows * book.residual_bytes()];
    for ((t, &id), c) in
        doc.as_slice().chunks_exact(dim).zip(doc_ids).zip(codes.chunks_exact_mut(book.residual_bytes()))
    {
        book.encode_residual(t, id, c).unwrap();
    }
    let mut out = vec![0f32; rows * dim];
    if on("decode") {
        let s = timed(20_000, || book.decode_many(doc_ids, &codes, &mut out).unwrap());
        println!(
            "{}",
            serde_json::json!({"bench": "decode_residual2", "doc_tokens": rows, "us_per_doc": s * 1e6, "ns_per_token": s * 1e9 / rows as f64})
        );
    }
    if on("score") {
        let q = corpus.queries.get(0);
        let prepared = MaxSimQuery::new(&TokenMatrix::new(q.as_slice(), dim).unwrap());
        let bits = to_16bit(doc.as_slice(), TokenStorage::F16).unwrap();
        let f16 = timed(20_000, || prepared.score(DocTokens::F16(&bits)).unwrap());
        let residual = ResidualTokens { ids: doc_ids, codes: &codes, codebook: &book };
        let r2 = timed(20_000, || prepared.score(DocTokens::Residual(residual)).unwrap());
        println!(
            "{}",
            serde_json::json!({"bench": "maxsim", "query_tokens": q.rows(), "doc_tokens": rows, "f16_us": f16 * 1e6, "residual2_us": r2 * 1e6})
        );
    }
}
