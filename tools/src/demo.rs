//! `quiver demo`: the built-in default job. Generates a clustered corpus, encodes every document
//! with MUVERA FDEs, answers each query by FDE inner-product candidates reranked with exact MaxSim,
//! and reports recall against brute-force exact MaxSim.
//!
//! The index used here is the MUVERA pipeline held in memory (flat FDE scan + exact rerank); it
//! will run through `quiverdb::Collection` once the storage engine lands, keeping this interface.

use std::time::Instant;

use rayon::prelude::*;

use quiverdb::eval::recall_at_k;
use quiverdb::exact::exact_top_k_batch;
use quiverdb::synthetic::{generate, CorpusSpec};
use quiverdb::topk::{Scored, TopK};
use quiverdb::{DocTokens, FdeEncoder, FdeParams, MaxSimQuery};

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
    /// FDE candidates reranked by exact MaxSim per query.
    #[arg(long, default_value_t = 200)]
    candidates: usize,
    /// Seed of the generated corpus.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Print one JSON line instead of the human-readable report.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<(), String> {
    if args.docs == 0 || args.queries == 0 || args.k == 0 || args.candidates < args.k {
        return Err("--docs, --queries and --k must be positive and --candidates at least --k".into());
    }
    let spec = CorpusSpec { n_docs: args.docs, n_queries: args.queries, seed: args.seed, ..CorpusSpec::small() };
    let t = Instant::now();
    let corpus = generate(&spec).map_err(|e| e.to_string())?;
    let gen_s = t.elapsed().as_secs_f64();

    let encoder = FdeEncoder::new(FdeParams::new(spec.dim as u32)).map_err(|e| e.to_string())?;
    let t = Instant::now();
    let fdes: Vec<Vec<f32>> = (0..corpus.docs.len())
        .into_par_iter()
        .map(|i| encoder.encode_document(&corpus.docs.get(i)))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let build_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let exact = exact_top_k_batch(&corpus.queries, &corpus.docs, args.k).map_err(|e| e.to_string())?;
    let exact_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let found: Vec<Vec<Scored>> = (0..corpus.queries.len())
        .into_par_iter()
        .map(|q| {
            let query = corpus.queries.get(q);
            let qfde = encoder.encode_query(&query)?;
            let mut candidates = TopK::new(args.candidates);
            for (doc, fde) in fdes.iter().enumerate() {
                let score = quiverdb::encode::simd::dot(&qfde, fde);
                candidates.push(Scored { doc: doc as u32, score });
            }
            let prepared = MaxSimQuery::new(&query);
            let mut top = TopK::new(args.k);
            for c in candidates.into_sorted() {
                let score = prepared.score(DocTokens::F32(corpus.docs.get(c.doc as usize).as_slice()))?;
                top.push(Scored { doc: c.doc, score });
            }
            Ok(top.into_sorted())
        })
        .collect::<quiverdb::Result<_>>()
        .map_err(|e| e.to_string())?;
    let search_s = t.elapsed().as_secs_f64();

    let recall = found
        .iter()
        .zip(&exact)
        .map(|(f, e)| {
            let f: Vec<u32> = f.iter().map(|s| s.doc).collect();
            let e: Vec<u32> = e.iter().map(|s| s.doc).collect();
            recall_at_k(&f, &e, args.k)
        })
        .sum::<f64>()
        / found.len() as f64;
    let target_hit = found.iter().zip(&corpus.query_targets).filter(|(f, t)| f.iter().any(|s| s.doc == **t)).count()
        as f64
        / found.len() as f64;
    let ms_per_query = |s: f64| 1000.0 * s / corpus.queries.len() as f64;

    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "n_docs": corpus.docs.len(), "n_queries": corpus.queries.len(), "k": args.k,
                "candidates": args.candidates, "recall": recall, "target_found": target_hit,
                "fde_dim": encoder.fde_dim(), "build_s": build_s,
                "search_ms_per_query": ms_per_query(search_s), "exact_ms_per_query": ms_per_query(exact_s),
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
        println!("  generated corpus            {gen_s:8.2} s");
        println!("  encoded FDEs ({} dims)   {build_s:8.2} s", encoder.fde_dim());
        println!("  MUVERA search: {} FDE candidates -> exact MaxSim rerank -> top {}", args.candidates, args.k);
        println!("  recall@{} vs exact MaxSim    {recall:8.3}", args.k);
        println!("  query's source doc in top {} {target_hit:8.3}", args.k);
        println!(
            "  latency per query (all cores): MUVERA {:.2} ms, exact brute force {:.2} ms",
            ms_per_query(search_s),
            ms_per_query(exact_s)
        );
    }
    Ok(())
}
