//! Write-path benchmarks (plain harness; one JSON object per line).
//!
//! Documents: 100 tokens × 128 dims (unit rows drawn from a fixed pool), f16 storage, default FDE,
//! PQ and graph settings. Sections (pass names after `--` to pick; all by default):
//! - `ingest`: documents/s for each durability mode, from 1 thread and from 4 threads (group
//!   commit), without flushes (memtable unbounded) and with background flushes (defaults);
//! - `flush`: time to flush 10k documents, first flush (trains the PQ codebook) and a later one
//!   (reuses it);
//! - `compact`: merge time and write amplification of a tiered compaction;
//! - `recovery`: open time with `QUIVERDB_BENCH_RECOVERY_N` (default 20,000; the figure is
//!   100,000) unflushed WAL records;
//! - `ram`: resident memory of an opened collection per document;
//! - `stall` (opt-in): search p99 and upsert throughput (`Durability::Sync`, memtable with room)
//!   while a background merge of four segments, `QUIVERDB_BENCH_STALL_N` (default 200,000)
//!   16-token documents in all, runs, against the same probes on the idle collection:
//!   `cargo bench --bench collection -- stall`.
//!
//! Run: `cargo bench --bench collection -- ingest`, `QUIVERDB_BENCH_RECOVERY_N=100000 cargo bench
//! --bench collection -- recovery`.
#![allow(missing_docs)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quiverdb::compaction::TieredPolicy;
use quiverdb::io::fs::{resident_bytes, tree_bytes};
use quiverdb::synthetic::unit_rows;
use quiverdb::{Collection, CollectionOptions, Durability, NewDocument, OpenOptions};

const DIM: usize = 128;
const TOKENS: usize = 100;
const POOL_ROWS: usize = 65_536;

struct Docs {
    pool: Vec<f32>,
}

impl Docs {
    fn new() -> Self {
        Docs { pool: unit_rows(POOL_ROWS, DIM, 42) }
    }

    /// Document `id`: 100 consecutive pool rows from a position derived from the id.
    fn get(&self, id: u64) -> &[f32] {
        let start = (id.wrapping_mul(2_654_435_761) as usize) % (POOL_ROWS - TOKENS);
        &self.pool[start * DIM..(start + TOKENS) * DIM]
    }
}

fn fresh(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("quiverdb-bench-coll-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn unbounded(durability: Durability) -> OpenOptions {
    OpenOptions {
        durability: Some(durability),
        memtable_max_docs: usize::MAX,
        memtable_max_bytes: usize::MAX,
        background: false,
        ..Default::default()
    }
}

fn mode_name(d: Durability) -> String {
    match d {
        Durability::Sync => "sync".into(),
        Durability::Periodic(i) => format!("periodic_{}ms", i.as_millis()),
        Durability::None => "none".into(),
    }
}

/// Inserts ids `0..n` from `threads` threads (interleaved), one document per call.
fn ingest(c: &Arc<Collection>, docs: &Arc<Docs>, n: u64, threads: u64) -> f64 {
    let t = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|w| {
            let (c, docs) = (c.clone(), docs.clone());
            std::thread::spawn(move || {
                for id in (w..n).step_by(threads as usize) {
                    c.insert(id, docs.get(id), None).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    t.elapsed().as_secs_f64()
}

fn bench_ingest(docs: &Arc<Docs>) {
    let modes = [Durability::Sync, Durability::Periodic(Duration::from_millis(100)), Durability::None];
    for mode in modes {
        let n: u64 = if mode == Durability::Sync { 2_000 } else { 10_000 };
        for threads in [1u64, 4] {
            let dir = fresh("ingest");
            let c = Arc::new(Collection::create(&dir, CollectionOptions::new(DIM as u32), unbounded(mode)).unwrap());
            let secs = ingest(&c, docs, n, threads);
            println!(
                "{{\"bench\":\"ingest\",\"flushes\":false,\"durability\":\"{}\",\"threads\":{threads},\"docs\":{n},\"seconds\":{secs:.3},\"docs_per_s\":{:.0}}}",
                mode_name(mode),
                n as f64 / secs
            );
            drop(c);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    // With background flushes at the default thresholds (4,096 documents).
    for mode in modes {
        let n: u64 = if mode == Durability::Sync { 2_000 } else { 20_000 };
        let dir = fresh("ingest-flush");
        let open = OpenOptions { durability: Some(mode), ..Default::default() };
        let c = Arc::new(Collection::create(&dir, CollectionOptions::new(DIM as u32), open).unwrap());
        let secs = ingest(&c, docs, n, 4);
        let t = Instant::now();
        c.flush().unwrap();
        let drain = t.elapsed().as_secs_f64();
        let stats = c.stats().unwrap();
        println!(
            "{{\"bench\":\"ingest\",\"flushes\":true,\"durability\":\"{}\",\"threads\":4,\"docs\":{n},\"seconds\":{secs:.3},\"docs_per_s\":{:.0},\"final_flush_s\":{drain:.2},\"segments\":{}}}",
            mode_name(mode),
            n as f64 / secs,
            stats.segments.len()
        );
        drop(c);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

fn fill(c: &Collection, docs: &Docs, ids: std::ops::Range<u64>) {
    let ids: Vec<u64> = ids.collect();
    for chunk in ids.chunks(512) {
        let batch: Vec<NewDocument> =
            chunk.iter().map(|&id| NewDocument { id, tokens: docs.get(id), payload: None }).collect();
        c.insert_batch(&batch).unwrap();
    }
}

fn bench_flush_and_compact(docs: &Docs, run_compact: bool, measure_ram: bool) {
    let dir = fresh("flush");
    let policy = TieredPolicy { base_docs: 10_000, merge_factor: 4, ..Default::default() };
    let open = OpenOptions { merge_policy: policy, ..unbounded(Durability::None) };
    let c = Collection::create(&dir, CollectionOptions::new(DIM as u32), open.clone()).unwrap();
    let batches = if run_compact { 4 } else { 2 };
    let mut flushed_bytes = 0;
    for b in 0..batches {
        fill(&c, docs, b * 10_000..(b + 1) * 10_000);
        let t = Instant::now();
        c.flush().unwrap();
        let secs = t.elapsed().as_secs_f64();
        let stats = c.stats().unwrap();
        let seg = stats.segments.last().unwrap();
        flushed_bytes += seg.bytes;
        println!(
            "{{\"bench\":\"flush\",\"docs\":10000,\"trains_pq\":{},\"seconds\":{secs:.2},\"segment_bytes\":{},\"graph\":{}}}",
            b == 0,
            seg.bytes,
            seg.has_graph
        );
    }
    if run_compact {
        let raw_token_bytes = batches * 10_000 * (TOKENS * DIM * 2) as u64;
        let t = Instant::now();
        let report = c.compact().unwrap();
        let secs = t.elapsed().as_secs_f64();
        let stats = c.stats().unwrap();
        println!(
            "{{\"bench\":\"compact\",\"docs\":{},\"merges\":{},\"inputs\":{},\"seconds\":{secs:.2},\"docs_per_s\":{:.0},\"bytes_written\":{},\"flush_bytes\":{flushed_bytes},\"raw_f16_token_bytes\":{raw_token_bytes},\"write_amplification_vs_raw\":{:.2},\"segments_after\":{}}}",
            report.docs_written,
            report.merges,
            report.inputs,
            report.docs_written as f64 / secs,
            report.bytes_written,
            (flushed_bytes + report.bytes_written) as f64 / raw_token_bytes as f64,
            stats.segments.len()
        );
    }
    drop(c);
    if measure_ram {
        let before = resident_bytes();
        let t = Instant::now();
        let c = Collection::open_with(&dir, open).unwrap();
        let open_s = t.elapsed().as_secs_f64();
        let after = resident_bytes();
        let stats = c.stats().unwrap();
        println!(
            "{{\"bench\":\"ram\",\"docs\":{},\"segments\":{},\"open_s\":{open_s:.3},\"rss_delta_bytes\":{},\"rss_per_doc\":{:.0},\"estimated_ram_bytes\":{},\"estimated_per_doc\":{:.0},\"disk_bytes\":{}}}",
            stats.documents,
            stats.segments.len(),
            after.saturating_sub(before),
            after.saturating_sub(before) as f64 / stats.documents as f64,
            stats.ram_bytes,
            stats.ram_bytes as f64 / stats.documents as f64,
            tree_bytes(&dir)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn bench_recovery(docs: &Docs) {
    let n: u64 = std::env::var("QUIVERDB_BENCH_RECOVERY_N").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let dir = fresh("recovery");
    let c = Collection::create(&dir, CollectionOptions::new(DIM as u32), unbounded(Durability::None)).unwrap();
    let t = Instant::now();
    fill(&c, docs, 0..n);
    let fill_s = t.elapsed().as_secs_f64();
    c.close().unwrap();
    let wal_bytes = tree_bytes(&dir.join("wal"));
    let before = resident_bytes();
    let t = Instant::now();
    let c = Collection::open_with(&dir, unbounded(Durability::None)).unwrap();
    let open_s = t.elapsed().as_secs_f64();
    let rss = resident_bytes().saturating_sub(before);
    assert_eq!(c.stats().unwrap().documents, n);
    println!(
        "{{\"bench\":\"recovery\",\"wal_records\":{n},\"wal_bytes\":{wal_bytes},\"open_s\":{open_s:.2},\"records_per_s\":{:.0},\"wal_mb_per_s\":{:.0},\"memtable_rss_bytes\":{rss},\"fill_s\":{fill_s:.1}}}",
        n as f64 / open_s,
        wal_bytes as f64 / open_s / 1e6
    );
    drop(c);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Document `id` with `tokens` rows (a pool window, as `Docs::get`).
fn short_doc(docs: &Docs, id: u64, tokens: usize) -> &[f32] {
    let start = (id.wrapping_mul(2_654_435_761) as usize) % (POOL_ROWS - tokens);
    &docs.pool[start * DIM..(start + tokens) * DIM]
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Search latencies (ms) of `n` queries.
fn search_probe(c: &Collection, docs: &Docs, n: usize, salt: u64) -> Vec<f64> {
    let params = quiverdb::SearchParams::new(10);
    (0..n)
        .map(|i| {
            let q = short_doc(docs, (i as u64 + salt).wrapping_mul(7919), 16);
            let t = Instant::now();
            c.search(q, &params).unwrap();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect()
}

/// Upserts of `count` documents over the same id range `first..first + count` (so the memtable's
/// live documents, which every search scores, stay the same from probe to probe): documents/s.
fn insert_probe(c: &Collection, docs: &Docs, first: u64, count: u64, version: u64) -> f64 {
    let t = Instant::now();
    for id in first..first + count {
        c.upsert(id, short_doc(docs, id.wrapping_add(version * 1_000_003), 16), None).unwrap();
    }
    count as f64 / t.elapsed().as_secs_f64()
}

fn bench_stall(docs: &Arc<Docs>) {
    let n: u64 = std::env::var("QUIVERDB_BENCH_STALL_N").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let dir = fresh("stall");
    let policy = TieredPolicy { base_docs: 4096, merge_factor: 4, ..Default::default() };
    let setup = OpenOptions {
        durability: Some(Durability::None),
        memtable_max_docs: usize::MAX,
        memtable_max_bytes: usize::MAX,
        background: false,
        merge_policy: policy,
        ..Default::default()
    };
    // Four segments of n/4 documents: one tier, so the policy merges them into one.
    let t = Instant::now();
    let c = Collection::create(&dir, CollectionOptions::new(DIM as u32), setup.clone()).unwrap();
    for part in 0..4 {
        let ids: Vec<u64> = (part * n / 4..(part + 1) * n / 4).collect();
        for chunk in ids.chunks(512) {
            let batch: Vec<NewDocument> =
                chunk.iter().map(|&id| NewDocument { id, tokens: short_doc(docs, id, 16), payload: None }).collect();
            c.insert_batch(&batch).unwrap();
        }
        c.flush().unwrap();
    }
    c.close().unwrap();
    let build_s = t.elapsed().as_secs_f64();
    const UPSERTS: u64 = 500;
    // Idle: no maintenance thread; the memtable has room (no flush in either phase).
    let room = OpenOptions { durability: Some(Durability::Sync), memtable_max_docs: 1 << 20, ..setup.clone() };
    let c = Collection::open_with(&dir, room.clone()).unwrap();
    insert_probe(&c, docs, n, UPSERTS, 0);
    search_probe(&c, docs, 100, 0); // warm-up
    let mut idle = Vec::new();
    let mut idle_ins = Vec::new();
    for round in 0..4 {
        idle.extend(search_probe(&c, docs, 100, round * 100));
        idle_ins.push(insert_probe(&c, docs, n, UPSERTS, round + 1));
    }
    drop(c);
    // During the merge: the same collection opened with background maintenance, which plans and
    // starts the merge at its first wake (within a second).
    let busy = OpenOptions { background: true, ..room };
    let c = Collection::open_with(&dir, busy).unwrap();
    let merge_started = Instant::now();
    std::thread::sleep(Duration::from_millis(1_500));
    let mut during = Vec::new();
    let mut during_ins = Vec::new();
    let mut round = 10u64;
    while c.stats().unwrap().segments.len() > 1 && round < 100_000 {
        during.extend(search_probe(&c, docs, 100, round * 100));
        during_ins.push(insert_probe(&c, docs, n, UPSERTS, round));
        round += 1;
    }
    let merge_s = merge_started.elapsed().as_secs_f64();
    idle.sort_by(f64::total_cmp);
    during.sort_by(f64::total_cmp);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (idle_ins, busy_ins) = (mean(&idle_ins), mean(&during_ins));
    let p = |v: &[f64], q: f64| if v.is_empty() { f64::NAN } else { percentile(v, q) };
    println!(
        "{{\"bench\":\"stall\",\"docs\":{n},\"build_s\":{build_s:.1},\"merge_s\":{merge_s:.1},\"idle\":{{\"queries\":{},\"search_p50_ms\":{:.2},\"search_p99_ms\":{:.2},\"upsert_docs_per_s\":{idle_ins:.0}}},\"during_merge\":{{\"queries\":{},\"search_p50_ms\":{:.2},\"search_p99_ms\":{:.2},\"upsert_docs_per_s\":{busy_ins:.0}}},\"p99_ratio\":{:.2},\"insert_ratio\":{:.2}}}",
        idle.len(),
        p(&idle, 0.5),
        p(&idle, 0.99),
        during.len(),
        p(&during, 0.5),
        p(&during, 0.99),
        p(&during, 0.99) / p(&idle, 0.99),
        busy_ins / idle_ins,
    );
    drop(c);
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let want = |name: &str| args.is_empty() || args.iter().any(|a| a == name);
    // `ingest-profile` is opt-in only.
    let docs = Arc::new(Docs::new());
    if want("ingest") {
        bench_ingest(&docs);
    }
    if args.iter().any(|a| a == "ingest-profile") {
        // Only the CPU path: one thread, no fsync, no flush (for perf).
        let dir = fresh("ingest-profile");
        let c = Arc::new(
            Collection::create(&dir, CollectionOptions::new(DIM as u32), unbounded(Durability::None)).unwrap(),
        );
        let secs = ingest(&c, &docs, 20_000, 1);
        println!("{{\"bench\":\"ingest-profile\",\"docs_per_s\":{:.0}}}", 20_000.0 / secs);
        drop(c);
        let _ = std::fs::remove_dir_all(&dir);
    }
    if want("flush") || want("compact") || want("ram") {
        bench_flush_and_compact(&docs, want("compact"), want("ram"));
    }
    if want("recovery") {
        bench_recovery(&docs);
    }
    if args.iter().any(|a| a == "stall") {
        bench_stall(&docs);
    }
}
