//! Segment write and open benchmarks (plain harness; prints one JSON object).
//!
//! `QUIVERDB_BENCH_SEGMENT_N` documents (default 20,000; the figure is 100,000) of a
//! generated clustered corpus (32–96 tokens of 128 dims, f16 storage, default FDE and PQ-256-8)
//! are written to a segment in a temporary directory; then the segment is opened repeatedly,
//! and the process's resident memory is read after `open` and after `verify` (which touches every
//! byte), showing that opening reads only the small sections.
//!
//! Run: `QUIVERDB_BENCH_SEGMENT_N=100000 cargo bench --bench segment`
#![allow(missing_docs)]

use std::sync::Arc;
use std::time::Instant;

use quiverdb::encode::pq::PqParams;
use quiverdb::io::fs::resident_bytes;
use quiverdb::segment::{Document, PqSource, SegmentConfig, SegmentReader, SegmentWriter};
use quiverdb::synthetic::{generate, CorpusSpec};
use quiverdb::{FdeEncoder, FdeParams, TokenStorage};

fn main() {
    let n: usize = std::env::var("QUIVERDB_BENCH_SEGMENT_N").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let dir = std::env::temp_dir().join(format!("quiverdb-bench-segment-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("seg-0000000000000001.qseg");

    let t = Instant::now();
    let corpus = generate(&CorpusSpec { n_docs: n, n_queries: 1, ..CorpusSpec::small() }).unwrap();
    let generate_s = t.elapsed().as_secs_f64();
    let encoder = Arc::new(FdeEncoder::new(FdeParams::new(128)).unwrap());
    let pq = PqSource::Train(PqParams::for_dim(encoder.fde_dim()));
    let t = Instant::now();
    let mut writer = SegmentWriter::create(
        &path,
        encoder,
        SegmentConfig {
            segment_id: 1,
            storage: TokenStorage::F16,
            pq,
            graph: None,
            tokens: None,
            base_graph: None,
            fields: Vec::new(),
        },
    )
    .unwrap();
    let docs: Vec<Document> =
        corpus.docs.iter().enumerate().map(|(i, tokens)| Document { id: i as u64, tokens, payload: None }).collect();
    for chunk in docs.chunks(1024) {
        writer.add_batch(chunk).unwrap();
    }
    let summary = writer.finish().unwrap();
    let write_s = t.elapsed().as_secs_f64();
    drop(docs);
    drop(corpus);

    let rss_before = resident_bytes();
    let t = Instant::now();
    let reader = SegmentReader::open(&path).unwrap();
    let first_open_ms = t.elapsed().as_secs_f64() * 1e3;
    let rss_after_open = resident_bytes();
    let reps = 20;
    let t = Instant::now();
    for _ in 0..reps {
        std::hint::black_box(SegmentReader::open(&path).unwrap());
    }
    let open_ms = t.elapsed().as_secs_f64() * 1e3 / reps as f64;
    let t = Instant::now();
    reader.verify().unwrap();
    let verify_s = t.elapsed().as_secs_f64();
    let rss_after_verify = resident_bytes();
    let sections: serde_json::Map<String, serde_json::Value> =
        reader.sections().iter().map(|s| (s.kind.name().to_string(), serde_json::json!(s.length))).collect();
    println!(
        "{}",
        serde_json::json!({
            "bench": "segment", "n_docs": n, "token_rows": summary.token_rows, "threads": rayon::current_num_threads(),
            "generate_s": generate_s, "write_s": write_s, "write_docs_per_s": n as f64 / write_s,
            "file_bytes": summary.bytes, "file_bytes_per_doc": summary.bytes as f64 / n as f64, "section_bytes": sections,
            "pq_distortion": summary.pq_distortion,
            "first_open_ms": first_open_ms, "open_ms": open_ms, "verify_s": verify_s,
            "rss_growth_after_open_bytes": rss_after_open.saturating_sub(rss_before),
            "rss_growth_after_verify_bytes": rss_after_verify.saturating_sub(rss_before),
        })
    );
    drop(reader);
    std::fs::remove_dir_all(&dir).unwrap();
}
