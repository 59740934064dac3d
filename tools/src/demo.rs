//! `quiver demo`: the built-in default job. Generates a clustered corpus, builds a collection
//! through the public API (WAL, memtable, flush to a segment with PQ codes of the MUVERA FDEs),
//! answers each query by PQ-ADC candidates reranked with exact MaxSim over the memory-mapped
//! tokens, and reports recall against brute-force exact MaxSim.

use std::path::PathBuf;
use std::time::Instant;

use rayon::prelude::*;

use quiverdb::eval::{percentile, recall_at_k};
use quiverdb::exact::exact_top_k_batch;
use quiverdb::synthetic::{generate, CorpusSpec};
use quiverdb::{Collection, CollectionOptions, Durability, NewDocument, OpenOptions, SearchParams};

/// Arguments of `quiver demo`.
#[derive(clap::Args)]
pub struct Args {
    /// Documents to generate.
    #[arg(long, default_value_t = 2000)]
    docs: usize,
    /// Queries to run.
    #[arg(long, default_value_t = 50)]
    queries: usize,
    /// Results per query.
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Documents reranked by exact MaxSim per query after the cheap stage (default: the library's,
    /// by query length).
    #[arg(long)]
    rerank: Option<usize>,
    /// Seed of the generated corpus.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Directory to keep the segment in (default: a temporary directory, removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print one JSON line instead of the human-readable report.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<(), String> {
    if args.docs == 0 || args.queries == 0 || args.k == 0 || args.rerank.is_some_and(|r| r < args.k) {
        return Err("--docs, --queries and --k must be positive and --rerank at least --k".into());
    }
    let keep = args.dir.is_some();
    let dir =
        args.dir.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("quiver-demo-{}", std::process::id())));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let result = run_in(&args, &dir);
    if !keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn run_in(args: &Args, dir: &std::path::Path) -> Result<(), String> {
    let spec = CorpusSpec { n_docs: args.docs, n_queries: args.queries, seed: args.seed, ..CorpusSpec::small() };
    let t = Instant::now();
    let corpus = generate(&spec).map_err(|e| e.to_string())?;
    let gen_s = t.elapsed().as_secs_f64();

    let path = dir.join("collection");
    if path.exists() {
        return Err(format!("{} already exists; choose an empty --dir", path.display()));
    }
    // Build through the public API: batched inserts (WAL, memtable), then one flush writes the
    // segment (FDEs, PQ codebook and codes, graph when large enough) and commits it.
    let t = Instant::now();
    let open = OpenOptions {
        durability: Some(Durability::None),
        memtable_max_docs: usize::MAX,
        memtable_max_bytes: usize::MAX,
        background: false,
        ..Default::default()
    };
    let collection =
        Collection::create(&path, CollectionOptions::new(spec.dim as u32), open).map_err(|e| e.to_string())?;
    let ids: Vec<usize> = (0..corpus.docs.len()).collect();
    for chunk in ids.chunks(512) {
        let batch: Vec<NewDocument> = chunk
            .iter()
            .map(|&i| NewDocument { id: i as u64, tokens: corpus.docs.get(i).as_slice(), payload: None })
            .collect();
        collection.insert_batch(&batch).map_err(|e| e.to_string())?;
    }
    collection.flush().map_err(|e| e.to_string())?;
    let build_s = t.elapsed().as_secs_f64();
    let stats = collection.stats().map_err(|e| e.to_string())?;

    let t = Instant::now();
    let exact = exact_top_k_batch(&corpus.queries, &corpus.docs, args.k).map_err(|e| e.to_string())?;
    let exact_s = t.elapsed().as_secs_f64();

    // Single-threaded per query, so the latency is what one query costs.
    let params = SearchParams { rerank: args.rerank, ..SearchParams::new(args.k) };
    let stages = params.stages(args.docs, corpus.queries.get(0).rows());
    let mut latencies_ms = Vec::with_capacity(corpus.queries.len());
    let mut found = Vec::with_capacity(corpus.queries.len());
    for query in corpus.queries.iter() {
        let t = Instant::now();
        let hits = collection.search(query.as_slice(), &params).map_err(|e| e.to_string())?;
        latencies_ms.push(t.elapsed().as_secs_f64() * 1e3);
        found.push(hits.iter().map(|h| h.id as u32).collect::<Vec<u32>>());
    }
    let recall = found
        .par_iter()
        .zip(&exact)
        .map(|(f, e)| recall_at_k(f, &e.iter().map(|s| s.doc).collect::<Vec<_>>(), args.k))
        .sum::<f64>()
        / found.len() as f64;
    let target_hit =
        found.iter().zip(&corpus.query_targets).filter(|(f, t)| f.contains(t)).count() as f64 / found.len() as f64;
    let p50 = percentile(&latencies_ms, 50.0);
    let exact_ms_per_query_1t = 1000.0 * exact_s * rayon::current_num_threads() as f64 / corpus.queries.len() as f64;
    let has_graph = stats.segments.iter().any(|s| s.has_graph);

    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "n_docs": corpus.docs.len(), "n_queries": corpus.queries.len(), "k": args.k,
                "stages": stages, "recall": recall, "target_found": target_hit,
                "build_s": build_s, "segment_bytes": stats.segment_bytes, "graph": has_graph,
                "latency_ms_p50": p50, "latency_ms_p99": percentile(&latencies_ms, 99.0),
                "exact_ms_per_query_1thread_est": exact_ms_per_query_1t,
            })
        );
    } else {
        println!(
            "quiverdb demo: {} documents ({} token vectors, {}-d), {} queries",
            corpus.docs.len(),
            corpus.docs.total_rows(),
            spec.dim,
            corpus.queries.len()
        );
        println!("  generated corpus                         {gen_s:8.2} s");
        println!(
            "  built collection ({:.1} MB segment: f16 tokens, {}-byte PQ codes of {}-dim FDEs{}) {build_s:6.2} s",
            stats.segment_bytes as f64 / 1e6,
            stats.segments.first().map_or(0, |s| s.pq_subspaces),
            collection.options().fde.fde_dim(),
            if has_graph { ", Vamana graph" } else { "" }
        );
        let stage = if has_graph { "PQ-ADC graph search" } else { "PQ-ADC flat scan (no graph below 4,096 documents)" };
        let lists = if stages.probe > 0 {
            format!(" + inverted lists of {} centroids per query token", stages.probe)
        } else {
            String::new()
        };
        println!(
            "  search: query FDE -> {stage} -> {} candidates{lists} -> centroid interaction -> {} by exact MaxSim (mmap) -> top {}",
            stages.candidates, stages.rerank, args.k
        );
        println!("  recall@{} vs exact MaxSim                 {recall:8.3}", args.k);
        println!("  query's source document in top {}        {target_hit:8.3}", args.k);
        println!("  latency per query, 1 thread: p50 {p50:.2} ms (exact brute force ~{exact_ms_per_query_1t:.1} ms)");
    }
    collection.close().map_err(|e| e.to_string())
}
