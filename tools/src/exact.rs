//! `quiver exact`: brute-force exact MaxSim over a dataset directory.

use std::path::PathBuf;
use std::time::Instant;

use quiverdb::dataset::Dataset;
use quiverdb::encode::simd::Isa;
use quiverdb::eval::{ndcg_at_k, recall_at_k};
use quiverdb::exact::exact_top_k_batch;

/// Arguments of `quiver exact`.
#[derive(clap::Args)]
pub struct Args {
    /// Dataset directory in the shared/data/FORMAT.md layout.
    #[arg(long)]
    dataset: PathBuf,
    /// Threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

pub fn run(args: Args) -> Result<(), String> {
    let ds = Dataset::open(&args.dataset).map_err(|e| e.to_string())?;
    let threads = args.threads.unwrap_or_else(rayon::current_num_threads);
    let start = Instant::now();
    let results = crate::with_threads(Some(threads), || exact_top_k_batch(&ds.queries, &ds.docs, 100))?
        .map_err(|e| e.to_string())?;
    let seconds = start.elapsed().as_secs_f64();

    let n = results.len().max(1) as f64;
    let ranked: Vec<Vec<u32>> = results.iter().map(|hits| hits.iter().map(|h| h.doc).collect()).collect();
    let ndcg = ranked.iter().enumerate().map(|(q, r)| ndcg_at_k(r, &ds.qrels_of(q as u32), 10)).sum::<f64>() / n;
    let mut line = serde_json::json!({
        "dataset": ds.name,
        "params": "exact",
        "n_docs": ds.docs.len(),
        "n_queries": ds.queries.len(),
        "dim": ds.docs.dim(),
        "ndcg@10": round(ndcg),
        "qps": round(ds.queries.len() as f64 / seconds),
        "threads": threads,
        "kernel": Isa::detect().name(),
        "seconds": round(seconds),
    });
    if let Some(gt) = &ds.ground_truth {
        let recall = |k: usize| ranked.iter().enumerate().map(|(q, r)| recall_at_k(r, gt.of(q), k)).sum::<f64>() / n;
        line["recall@10"] = round(recall(10)).into();
        if gt.depth >= 100 {
            line["recall@100"] = round(recall(100)).into();
        }
    }
    println!("{line}");
    Ok(())
}

fn round(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}
