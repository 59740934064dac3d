//! FDE encoding speed at the default (r_reps, k_sim, d_proj) = (20, 5, 16).
//! Target (foundation issue): a 100-token 128-d document in ≤ 100 µs on one core.
//!
//! Run: `cargo bench --bench encode`

#![allow(missing_docs)] // criterion_group! generates an undocumented function

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use quiverdb::synthetic::unit_rows;
use quiverdb::{FdeEncoder, FdeParams, Projection, TokenMatrix};

fn bench_fde(c: &mut Criterion) {
    let dim = 128;
    let mut group = c.benchmark_group("fde");
    for (name, projection) in
        [("count_sketch", Projection::CountSketch { d_proj: 16 }), ("dense_sign", Projection::DenseSign { d_proj: 16 })]
    {
        let params = FdeParams { projection, ..FdeParams::new(dim as u32) };
        let encoder = FdeEncoder::new(params).unwrap();
        let doc = unit_rows(100, dim, 1);
        let query = unit_rows(32, dim, 2);
        let doc = TokenMatrix::new(&doc, dim).unwrap();
        let query = TokenMatrix::new(&query, dim).unwrap();
        let mut out = vec![0f32; encoder.fde_dim()];
        group.throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::new(format!("document_100x128/{name}"), "20-5-16"), |b| {
            b.iter(|| encoder.encode_document_into(&doc, &mut out).unwrap())
        });
        group.bench_function(BenchmarkId::new(format!("query_32x128/{name}"), "20-5-16"), |b| {
            b.iter(|| encoder.encode_query_into(&query, &mut out).unwrap())
        });
    }
    group.bench_function("encoder_new/20-5-16", |b| b.iter(|| FdeEncoder::new(FdeParams::new(128)).unwrap()));
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default();
    targets = bench_fde
}
criterion_main!(benches);
