//! Exact MaxSim throughput: a 32×128 and a 4×128 query against 1,000 documents of 100 tokens, for
//! every kernel available on this CPU and every token storage type. Throughput is reported in
//! elements/s where one element is one floating-point operation (2 per multiply-add), i.e. FLOP/s.
//!
//! Before timing, it prints the score error of 16-bit storage against f32 on a generated f32
//! corpus and, when present, on shared/data/scifact-mini (stored as f16 there, so f16 is exact).
//!
//! Run: `cargo bench --bench maxsim`

#![allow(missing_docs)] // criterion_group! generates an undocumented function

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use quiverdb::dataset::{Dataset, MultiVectors};
use quiverdb::encode::simd::Isa;
use quiverdb::encode::storage::to_16bit;
use quiverdb::synthetic::{generate, CorpusSpec};
use quiverdb::{DocTokens, MaxSimQuery, TokenStorage};

fn stored(values: &[f32], storage: TokenStorage) -> Vec<u16> {
    to_16bit(values, storage).unwrap()
}

fn doc_tokens<'a>(storage: TokenStorage, f32s: &'a [f32], bits: &'a [u16]) -> DocTokens<'a> {
    match storage {
        TokenStorage::F32 => DocTokens::F32(f32s),
        TokenStorage::F16 => DocTokens::F16(bits),
        TokenStorage::Bf16 => DocTokens::Bf16(bits),
        other => panic!("{} is not a plain storage type", other.name()),
    }
}

/// Mean and max relative score error, and the share of queries whose top-10 is unchanged.
fn storage_error(name: &str, docs: &MultiVectors, queries: &MultiVectors) {
    for storage in [TokenStorage::F16, TokenStorage::Bf16] {
        let converted: Vec<Vec<u16>> = docs.iter().map(|d| stored(d.as_slice(), storage)).collect();
        let (mut sum_rel, mut max_rel, mut n, mut same_top10) = (0f64, 0f64, 0usize, 0usize);
        for q in queries.iter() {
            let query = MaxSimQuery::new(&q);
            let mut exact = Vec::new();
            let mut approx = Vec::new();
            for (i, d) in docs.iter().enumerate() {
                let e = query.score(DocTokens::F32(d.as_slice())).unwrap() as f64;
                let a = query.score(doc_tokens(storage, &[], &converted[i])).unwrap() as f64;
                let rel = (a - e).abs() / e.abs().max(1e-6);
                sum_rel += rel;
                max_rel = max_rel.max(rel);
                n += 1;
                exact.push((e, i));
                approx.push((a, i));
            }
            exact.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            approx.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            let top = |v: &[(f64, usize)]| v.iter().take(10).map(|x| x.1).collect::<Vec<_>>();
            same_top10 += (top(&exact) == top(&approx)) as usize;
        }
        println!(
            "storage-error {name} {}: mean relative score error {:.2e}, max {:.2e}, identical top-10 in {}/{} queries",
            storage.name(),
            sum_rel / n as f64,
            max_rel,
            same_top10,
            queries.len()
        );
    }
}

fn report_storage_error() {
    let corpus = generate(&CorpusSpec { n_docs: 1000, n_queries: 30, ..CorpusSpec::small() }).unwrap();
    storage_error("synthetic-f32", &corpus.docs, &corpus.queries);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/scifact-mini");
    if let Ok(ds) = Dataset::open(&dir) {
        storage_error("scifact-mini(f16 source)", &ds.docs, &ds.queries);
    }
}

/// Every kernel and storage type for a `query_tokens`×128 query against 1,000 documents of 100
/// tokens (32 tokens take the blocked kernels, 4 the document-major ones).
fn bench_query_length(c: &mut Criterion, query_tokens: usize) {
    let corpus = generate(&CorpusSpec {
        n_docs: 1000,
        n_queries: 1,
        min_doc_tokens: 100,
        max_doc_tokens: 100,
        query_tokens,
        ..CorpusSpec::small()
    })
    .unwrap();
    let query = corpus.queries.get(0);
    let docs: Vec<&[f32]> = corpus.docs.iter().map(|d| d.as_slice()).collect();
    let flops = 2 * query_tokens as u64 * 100 * 128 * docs.len() as u64;
    let mut group = c.benchmark_group(format!("maxsim_{query_tokens}x128_vs_1000x100"));
    group.throughput(Throughput::Elements(flops));
    for isa in Isa::available() {
        let prepared = MaxSimQuery::with_isa(&query, isa);
        for storage in [TokenStorage::F32, TokenStorage::F16, TokenStorage::Bf16] {
            let bits: Vec<Vec<u16>> = match storage {
                TokenStorage::F32 => vec![Vec::new(); docs.len()],
                _ => docs.iter().map(|d| stored(d, storage)).collect(),
            };
            group.bench_function(BenchmarkId::new(isa.name(), storage.name()), |b| {
                b.iter(|| {
                    let mut total = 0f32;
                    for (d, bits) in docs.iter().zip(&bits) {
                        total += prepared.score(doc_tokens(storage, d, bits)).unwrap();
                    }
                    total
                })
            });
            // The staged rerank's first pass: f16 documents rounded to bf16 on the fly.
            if prepared.approximates(storage) {
                group.bench_function(BenchmarkId::new(isa.name(), "f16-approximate"), |b| {
                    b.iter(|| {
                        let mut total = 0f32;
                        for (d, bits) in docs.iter().zip(&bits) {
                            total += prepared.approximate(doc_tokens(storage, d, bits)).unwrap().unwrap_or(0.0);
                        }
                        total
                    })
                });
            }
        }
    }
    group.finish();
}

fn bench_maxsim(c: &mut Criterion) {
    report_storage_error();
    bench_query_length(c, 32);
    // SciFact's queries average 19-21 tokens: more than one 16-lane register, fewer than two.
    bench_query_length(c, 19);
    bench_query_length(c, 4);

    // The yardstick: this core's peak f32 FMA rate, measured in the same run.
    if quiverdb::encode::simd::fma_peak_probe(1).is_some() {
        let rounds = 1_000_000u64;
        let mut group = c.benchmark_group("fma_peak");
        group.throughput(Throughput::Elements(rounds * quiverdb::encode::simd::FMA_PROBE_FLOP_PER_ROUND));
        group.bench_function("avx2_register_fma", |b| {
            b.iter(|| quiverdb::encode::simd::fma_peak_probe(criterion::black_box(rounds)))
        });
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default();
    targets = bench_maxsim
}
criterion_main!(benches);
