//! `quiver bench`: builds (or reuses) a collection from a dataset or a generated corpus through the
//! public API, runs every query at each setting of a parameter sweep, and prints one JSON object
//! per setting, then one for brute-force exact MaxSim on the same machine in the same run.
//!
//! The interface is stable: later measurements all go through it. Fields per line: `dataset`,
//! `n_docs`, `n_queries`, `params` (object; `"exact"` on the last line), `recall@10`, `recall@100`
//! (when k ≥ 100), `ndcg@10`, `latency_ms` {`mean`, `p50`, `p99`} (single-threaded, one query at a
//! time), `qps` (with `--threads`), `build_s`, `index_bytes`, `rss_bytes` (the process's peak, which
//! includes the dataset held for ground truth), `collection_ram_bytes` (what the open collection
//! itself keeps resident: PQ codes, offsets, bitsets, codebooks, memtable), `profile_us` (mean
//! microseconds per query by stage).

use std::path::{Path, PathBuf};
use std::time::Instant;

use quiverdb::compaction::TieredPolicy;
use quiverdb::dataset::{Dataset, MultiVectors};
use quiverdb::eval::{ndcg_at_k, percentile, recall_at_k};
use quiverdb::exact::exact_top_k;
use quiverdb::io::fs::{peak_resident_bytes, tree_bytes};
use quiverdb::synthetic::{generate, CorpusSpec};
use quiverdb::{
    Collection, CollectionOptions, CollectionReader, Durability, FieldKind, Filter, IndexedField, MaxSimQuery,
    Navigation, NewDocument, OpenOptions, SearchParams, SearchProfile, TokenStorage,
};
use serde_json::json;

/// Arguments of `quiver bench`.
#[derive(clap::Args)]
pub struct Args {
    /// Dataset directory in the shared/data/FORMAT.md layout.
    #[arg(long, conflicts_with = "synthetic")]
    dataset: Option<PathBuf>,
    /// Instead of a dataset: a generated clustered corpus of N documents (fixed seed).
    #[arg(long)]
    synthetic: Option<usize>,
    /// Queries of the generated corpus.
    #[arg(long, default_value_t = 100)]
    queries: usize,
    /// Seed of the generated corpus.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Tokens per generated document, `MIN-MAX` (default 32-96; `180-240` is shaped like SciFact).
    #[arg(long, default_value = "32-96")]
    doc_tokens: String,
    /// Tokens per generated query (default 24; SciFact's average is about 19).
    #[arg(long, default_value_t = 24)]
    query_tokens: usize,
    /// Collection to use: reused if it exists, else built there and kept (default: a temporary
    /// directory, removed afterwards).
    #[arg(long)]
    collection: Option<PathBuf>,
    /// Results per query.
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Threads for the throughput (qps) measurement; latency is always single-threaded.
    #[arg(long)]
    threads: Option<usize>,
    /// Settings to sweep: `key=v1,v2;key=v1,...` over `rerank` (documents reranked by exact
    /// MaxSim), `candidates`, `probe`, `list` (graph beam width), `carve` (ball-carving τ or
    /// `off`) and `nav` (`pq`, `centroids` or `auto`: `SearchParams::navigation`); every
    /// combination is run. `default` runs the library defaults only.
    #[arg(long, default_value = "default")]
    sweep: String,
    /// Search each query's segments in parallel (`SearchParams::parallel`): single-query latency
    /// with every core.
    #[arg(long)]
    parallel: bool,
    /// Turn off the prefetch of what each search step reads (`SearchParams::prefetch`, on by default).
    #[arg(long)]
    no_prefetch: bool,
    /// After the warm measurements, measure each setting cold: per query, the collection's files
    /// are evicted from the page cache (posix_fadvise DONTNEED), a read-only handle is opened
    /// afresh and the query timed — the first query of a fresh process, served from the disk.
    /// Reports open and query latency and the bytes read from storage per query.
    #[arg(long)]
    cold: bool,
    /// Queries measured cold per setting (each one costs an eviction and an open).
    #[arg(long, default_value_t = 50)]
    cold_queries: usize,
    /// Untimed passes over the queries before each setting is timed (warm page cache).
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Token storage when building (f32, f16, bf16, residual1, residual2, residual4).
    #[arg(long, default_value = "f16")]
    storage: String,
    /// Draw the sweep as a recall@10-vs-latency curve (SVG), exact MaxSim marked.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Token codebook centroids when building (a multiple of 16; default: automatic).
    #[arg(long)]
    token_centroids: Option<u32>,
    /// Build without a token codebook (no cheap stage, no inverted lists: the FDE candidates are
    /// reranked exactly, as before token codebooks existed), for side-by-side comparisons.
    #[arg(long, conflicts_with = "token_centroids")]
    no_token_codebook: bool,
    /// Documents per flushed segment when building.
    #[arg(long, default_value_t = 262_144)]
    segment_docs: usize,
    /// Skip the brute-force exact line (its latency is measured on at most this many queries; 0
    /// skips it). Ground truth for recall still comes from the dataset or a parallel exact pass.
    #[arg(long, default_value_t = usize::MAX)]
    exact_queries: usize,
    /// FDE final Count Sketch dimension when building (`0`: none, the full `r·2^k·d_proj`
    /// FDE; default: the library's).
    #[arg(long)]
    fde_final_dim: Option<u32>,
    /// PQ subspaces (bytes of code per document) when building (default: the library's).
    #[arg(long)]
    pq_subspaces: Option<u32>,
    /// After building (in segments of `--segment-docs`), compact the collection and print one
    /// `compaction` line: wall and CPU seconds, merges, documents and bytes written, graphs
    /// extended rather than rebuilt. The sweep then runs on the compacted collection.
    #[arg(long)]
    compact: bool,
    /// With `--compact`: merges rebuild every graph (`OpenOptions::merge_rebuilds_graphs`), for
    /// a side-by-side run against extending the largest input's graph.
    #[arg(long)]
    merge_rebuild: bool,
    /// Filtered search at these selectivities, e.g. `0.5,0.1,0.01,0.001`: the collection gets an
    /// indexed integer field `bucket`, uniform over 0..100,000 by document (and a keyword field
    /// `tenant`, 1,000 values, for its memory figure), and each selectivity
    /// `s` filters `bucket < s·100,000`. One `filter` line per selectivity: recall@10 against
    /// exact MaxSim over the documents that pass (brute force, timed too), p50/p99 beside the
    /// unfiltered p50 of the same run, the plan counters, and the field index's bytes per document
    /// per field.
    #[arg(long, value_delimiter = ',')]
    filter_selectivity: Vec<f64>,
}

/// Buckets of the generated `bucket` field.
const FILTER_BUCKETS: u64 = 100_000;

/// Document `i`'s `bucket`: a fixed hash of its ordinal, uniform over `0..FILTER_BUCKETS`.
fn bucket_of(i: usize) -> u64 {
    let mut z = (i as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) % FILTER_BUCKETS
}

struct Workload {
    name: String,
    docs: Option<MultiVectors>,
    queries: MultiVectors,
    /// Exact-MaxSim ranking per query (ordinals), at least 100 deep when available.
    truth: Vec<Vec<u32>>,
    /// Relevance judgments per query (ordinal, grade).
    judged: Vec<Vec<(u32, f32)>>,
    n_docs: usize,
}

fn load(args: &Args) -> Result<Workload, String> {
    if let Some(dir) = &args.dataset {
        let ds = Dataset::open(dir).map_err(|e| e.to_string())?;
        let nq = ds.queries.len();
        let mut judged = vec![Vec::new(); nq];
        for q in &ds.qrels {
            if (q.query as usize) < nq {
                judged[q.query as usize].push((q.doc, q.relevance));
            }
        }
        let truth = match &ds.ground_truth {
            Some(gt) => (0..nq).map(|q| gt.of(q).to_vec()).collect(),
            None => Vec::new(),
        };
        let n_docs = ds.docs.len();
        return Ok(Workload { name: ds.name, docs: Some(ds.docs), queries: ds.queries, truth, judged, n_docs });
    }
    let n = args.synthetic.ok_or("give --dataset DIR or --synthetic N")?;
    if n == 0 || args.queries == 0 {
        return Err("--synthetic and --queries must be positive".into());
    }
    let (min_t, max_t) = args
        .doc_tokens
        .split_once('-')
        .and_then(|(a, b)| Some((a.trim().parse::<usize>().ok()?, b.trim().parse::<usize>().ok()?)))
        .filter(|(a, b)| *a >= 1 && a <= b)
        .ok_or_else(|| format!("--doc-tokens `{}` is not MIN-MAX", args.doc_tokens))?;
    let spec = CorpusSpec {
        n_docs: n,
        n_queries: args.queries,
        seed: args.seed,
        min_doc_tokens: min_t,
        max_doc_tokens: max_t,
        query_tokens: args.query_tokens.max(1),
        ..CorpusSpec::small()
    };
    let corpus = generate(&spec).map_err(|e| e.to_string())?;
    let judged = corpus.query_targets.iter().map(|&t| vec![(t, 1.0)]).collect();
    Ok(Workload {
        name: format!("synthetic-{n}-t{min_t}-{max_t}-q{}-seed{}", spec.query_tokens, args.seed),
        n_docs: corpus.docs.len(),
        docs: Some(corpus.docs),
        queries: corpus.queries,
        truth: Vec::new(),
        judged,
    })
}

#[derive(Clone, Debug, Default)]
struct Setting {
    candidates: Option<usize>,
    probe: Option<usize>,
    rerank: Option<usize>,
    list: Option<usize>,
    carve: Option<f32>,
    navigation: Option<Navigation>,
}

fn parse_sweep(spec: &str) -> Result<Vec<Setting>, String> {
    let mut settings = vec![Setting::default()];
    if spec.trim() == "default" {
        return Ok(settings);
    }
    for part in spec.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, values) = part.split_once('=').ok_or_else(|| format!("sweep part `{part}` is not key=values"))?;
        let mut next = Vec::new();
        for s in &settings {
            for v in values.split(',').map(str::trim) {
                let mut s = s.clone();
                let num = || v.parse::<usize>().map_err(|_| format!("`{v}` is not a count in `{part}`"));
                match key.trim() {
                    "rerank" => s.rerank = Some(num()?),
                    "candidates" => s.candidates = Some(num()?),
                    "probe" => s.probe = Some(num()?),
                    "list" => s.list = Some(num()?),
                    "carve" => {
                        s.carve = if v == "off" {
                            None
                        } else {
                            Some(v.parse::<f32>().map_err(|_| format!("`{v}` is not a threshold in `{part}`"))?)
                        }
                    }
                    "nav" => {
                        s.navigation =
                            if v == "auto" { None } else { Some(Navigation::parse(v).map_err(|e| e.to_string())?) }
                    }
                    other => {
                        return Err(format!(
                            "unknown sweep key `{other}` (candidates, probe, rerank, list, carve, nav)"
                        ))
                    }
                }
                next.push(s);
            }
        }
        settings = next;
    }
    Ok(settings)
}

fn build(args: &Args, work: &Workload, path: &Path) -> Result<(Collection, f64), String> {
    let open = OpenOptions {
        durability: Some(Durability::None),
        memtable_max_docs: args.segment_docs.max(1),
        memtable_max_bytes: usize::MAX,
        background: false,
        merge_policy: TieredPolicy { base_docs: args.segment_docs.max(1) as u64, ..Default::default() },
        merge_rebuilds_graphs: args.merge_rebuild,
        ..Default::default()
    };
    if path.join("catalog").exists() {
        let c = Collection::open_with(path, open).map_err(|e| e.to_string())?;
        return Ok((c, 0.0));
    }
    let docs = work.docs.as_ref().ok_or("no documents to build from")?;
    let mut options = CollectionOptions::new(docs.dim() as u32);
    options.storage = TokenStorage::from_name(&args.storage).map_err(|e| e.to_string())?;
    if let (Some(k), Some(book)) = (args.token_centroids, options.token_codebook.as_mut()) {
        book.centroids = Some(k);
    }
    if args.no_token_codebook {
        options.token_codebook = None;
    }
    if let Some(d) = args.fde_final_dim {
        options.fde.final_dim = (d > 0).then_some(d);
        options.pq = quiverdb::encode::pq::PqParams::for_dim(options.fde.fde_dim());
    }
    if let Some(m) = args.pq_subspaces {
        options.pq.subspaces = m;
    }
    let filtered = !args.filter_selectivity.is_empty();
    if filtered {
        options.indexed_fields =
            vec![IndexedField::new("bucket", FieldKind::Integer), IndexedField::new("tenant", FieldKind::Keyword)];
    }
    // `tenant`: one of 1,000 keywords (about 100 documents each at 100k), for the keyword
    // column's memory figure.
    let payloads: Vec<Vec<u8>> = if filtered {
        (0..docs.len())
            .map(|i| format!(r#"{{"bucket":{},"tenant":"t{}"}}"#, bucket_of(i), bucket_of(i) % 1000).into_bytes())
            .collect()
    } else {
        Vec::new()
    };
    let t = Instant::now();
    let c = Collection::create(path, options, open).map_err(|e| e.to_string())?;
    let ids: Vec<usize> = (0..docs.len()).collect();
    for chunk in ids.chunks(1024) {
        let batch: Vec<NewDocument> = chunk
            .iter()
            .map(|&i| NewDocument {
                id: i as u64,
                tokens: docs.get(i).as_slice(),
                payload: payloads.get(i).map(|p| p.as_slice()),
            })
            .collect();
        c.insert_batch(&batch).map_err(|e| e.to_string())?;
    }
    c.flush().map_err(|e| e.to_string())?;
    let build_s = t.elapsed().as_secs_f64();
    if args.compact {
        let segments = c.stats().map_err(|e| e.to_string())?.segments.len();
        let (t, cpu) = (Instant::now(), cpu_seconds());
        let report = c.compact().map_err(|e| e.to_string())?;
        println!(
            "{}",
            json!({
                "compaction": {
                    "wall_s": round(t.elapsed().as_secs_f64()),
                    "cpu_s": cpu_seconds().zip(cpu).map(|(b, a)| round(b - a)),
                    "segments_before": segments,
                    "segments_after": c.stats().map_err(|e| e.to_string())?.segments.len(),
                    "merges": report.merges,
                    "docs_written": report.docs_written,
                    "bytes_written": report.bytes_written,
                    "write_amplification": round(report.docs_written as f64 / docs.len().max(1) as f64),
                    "graphs_extended": report.graphs_extended,
                    "merge_rebuilds_graphs": args.merge_rebuild,
                }
            })
        );
    }
    Ok((c, build_s))
}

/// This process's user + system CPU seconds (Linux `/proc/self/stat`; `None` elsewhere).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn round(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

pub fn run(args: Args) -> Result<(), String> {
    if args.k == 0 {
        return Err("--k must be positive".into());
    }
    let settings = parse_sweep(&args.sweep)?;
    let mut work = load(&args)?;
    let keep = args.collection.is_some();
    let path = args
        .collection
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("quiver-bench-{}", std::process::id())));
    let result = run_with(&args, &mut work, &settings, &path);
    if !keep {
        let _ = std::fs::remove_dir_all(&path);
    }
    result
}

fn run_with(args: &Args, work: &mut Workload, settings: &[Setting], path: &Path) -> Result<(), String> {
    let (collection, build_s) = build(args, work, path)?;
    let index_bytes = tree_bytes(path);
    let stats = collection.stats().map_err(|e| e.to_string())?;
    let collection_ram = stats.ram_bytes;
    let bytes_per_token = stats.bytes_per_token;
    let storage_name = stats.segments.first().map_or("-".to_string(), |s| s.storage.clone());
    let queries = &work.queries;
    let nq = queries.len();
    let depth = args.k.max(100);

    // Ground truth: the dataset's, or a parallel brute-force pass (also timed for the exact line
    // when single-threaded figures are not wanted separately).
    let docs_owned = work.docs.take().ok_or("documents are needed for the exact baseline")?;
    let docs = &docs_owned;
    if work.truth.is_empty() || work.truth[0].len() < args.k.min(work.n_docs) {
        use rayon::prelude::*;
        work.truth = (0..nq)
            .into_par_iter()
            .map(|q| exact_top_k(&queries.get(q), docs, depth).map(|h| h.iter().map(|s| s.doc).collect()))
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
    }

    let line =
        |params: serde_json::Value, ranked: &[Vec<u32>], lat: &[f64], qps: Option<f64>, profile: serde_json::Value| {
            let n = ranked.len().max(1) as f64;
            let recall = |k: usize| ranked.iter().zip(&work.truth).map(|(r, t)| recall_at_k(r, t, k)).sum::<f64>() / n;
            let ndcg = ranked.iter().zip(&work.judged).map(|(r, j)| ndcg_at_k(r, j, 10)).sum::<f64>() / n;
            let mut v = json!({
                "dataset": work.name,
                "n_docs": work.n_docs,
                "n_queries": ranked.len(),
                "params": params,
                "recall@10": round(recall(10)),
                "ndcg@10": round(ndcg),
                "latency_ms": {
                    "mean": round(lat.iter().sum::<f64>() / lat.len().max(1) as f64),
                    "p50": round(percentile(lat, 50.0)),
                    "p99": round(percentile(lat, 99.0)),
                },
                "build_s": round(build_s),
                "index_bytes": index_bytes,
                "rss_bytes": peak_resident_bytes(),
            "collection_ram_bytes": collection_ram,
            });
            if args.k >= 100 {
                v["recall@100"] = round(recall(100)).into();
            }
            if let Some(q) = qps {
                v["qps"] = round(q).into();
                v["threads"] = args.threads.unwrap_or(0).into();
            }
            if !profile.is_null() {
                v["profile_us"] = profile;
            }
            v
        };

    // Exact brute force on the same machine, single-threaded per query; run first, printed last.
    let mut exact_line = None;
    let exact_n = args.exact_queries.min(nq);
    if exact_n > 0 {
        let mut ranked = Vec::with_capacity(exact_n);
        let mut lat = Vec::with_capacity(exact_n);
        for q in 0..exact_n {
            let t = Instant::now();
            let hits = exact_top_k(&queries.get(q), docs, depth).map_err(|e| e.to_string())?;
            lat.push(t.elapsed().as_secs_f64() * 1e3);
            ranked.push(hits.iter().map(|h| h.doc).collect::<Vec<u32>>());
        }
        let qps = match args.threads {
            Some(threads) => {
                use rayon::prelude::*;
                let t = Instant::now();
                crate::with_threads(Some(threads), || {
                    (0..exact_n)
                        .into_par_iter()
                        .map(|q| exact_top_k(&queries.get(q), docs, depth).map(|_| ()))
                        .collect::<Result<Vec<()>, _>>()
                })?
                .map_err(|e| e.to_string())?;
                Some(exact_n as f64 / t.elapsed().as_secs_f64())
            }
            None => None,
        };
        // Its quality over every query, from the ground truth (exact MaxSim's own ranking), so it
        // compares with the settings' lines; the timed subset alone gave a different mean (the
        // first 20 of 100 generated 3-token queries: nDCG@10 0.866, all 100: 0.785).
        let quality: Vec<Vec<u32>> = if work.truth.len() == nq {
            work.truth.iter().map(|t| t.iter().take(depth).copied().collect()).collect()
        } else {
            ranked
        };
        let mut v = line(json!("exact"), &quality, &lat, qps, serde_json::Value::Null);
        v["latency_queries"] = exact_n.into();
        exact_line = Some(v);
    }
    if !args.filter_selectivity.is_empty() {
        filter_sweep(args, work, &collection, docs, path)?;
    }
    // The dataset is no longer needed: free it, so the page cache can hold the index while the
    // settings are measured (at 1M documents the corpus alone is 8 GB).
    drop(docs_owned);
    let mut cold_settings: Vec<(SearchParams, serde_json::Value, f64)> = Vec::new();
    let mut plotted: Vec<crate::plot::Point> = Vec::new();
    for s in settings {
        let params = SearchParams {
            candidates: s.candidates,
            probe: s.probe,
            rerank: s.rerank,
            list_size: s.list,
            ball_carving: s.carve,
            navigation: s.navigation,
            parallel: args.parallel,
            prefetch: !args.no_prefetch,
            ..SearchParams::new(args.k)
        };
        let mut ranked = Vec::with_capacity(nq);
        let mut lat = Vec::with_capacity(nq);
        // One untimed pass first: latency is reported with the index in the page cache (a cold
        // first pass measures the disk, not the engine; at 1M docs it was 10x slower).
        for _ in 0..args.warmup {
            for q in 0..nq {
                collection.search(queries.get(q).as_slice(), &params).map_err(|e| e.to_string())?;
            }
        }
        let mut sums = [0f64; 11];
        for q in 0..nq {
            let t = Instant::now();
            let (hits, p) =
                collection.search_profiled(queries.get(q).as_slice(), &params).map_err(|e| e.to_string())?;
            lat.push(t.elapsed().as_secs_f64() * 1e3);
            for (acc, v) in sums.iter_mut().zip([
                p.fde_us,
                p.adc_table_us,
                p.candidates_us,
                p.rerank_us,
                p.memtable_us,
                p.reranked as f64,
                p.distance_computations as f64,
                p.cheap_us,
                p.fde_candidates as f64,
                p.postings_candidates as f64,
                p.cheap_scored as f64,
            ]) {
                *acc += v;
            }
            ranked.push(hits.iter().map(|h| h.id as u32).collect::<Vec<u32>>());
        }
        let qps = match args.threads {
            Some(threads) => {
                let query_refs: Vec<&[f32]> = (0..nq).map(|q| queries.get(q).as_slice()).collect();
                let t = Instant::now();
                crate::with_threads(Some(threads), || collection.search_batch(&query_refs, &params))?
                    .map_err(|e| e.to_string())?;
                Some(nq as f64 / t.elapsed().as_secs_f64())
            }
            None => None,
        };
        let n = nq.max(1) as f64;
        let profile = json!({
            "fde": round(sums[0] / n), "adc_table": round(sums[1] / n), "candidates": round(sums[2] / n),
            "rerank": round(sums[3] / n), "memtable": round(sums[4] / n), "reranked_docs": round(sums[5] / n),
            "adc_distances": round(sums[6] / n), "cheap": round(sums[7] / n),
        });
        let counts = json!({
            "fde_candidates": round(sums[8] / n), "postings_candidates": round(sums[9] / n),
            "cheap_scored": round(sums[10] / n), "exact_reranked": round(sums[5] / n),
        });
        let stages = params.stages(work.n_docs, args.query_tokens);
        let params_json = json!({
            "k": args.k,
            "candidates": params.candidates.map_or("auto".to_string(), |c| c.to_string()),
            "probe": params.probe.map_or("auto".to_string(), |p| p.to_string()),
            "rerank": params.rerank.map_or(
                if args.dataset.is_some() {
                    "auto (by query length)".to_string()
                } else {
                    format!("auto ({} for {}-token queries)", stages.rerank, args.query_tokens)
                },
                |r| r.to_string()
            ),
            "list_size": params.list_size.map_or("auto".to_string(), |l| l.to_string()),
            "ball_carving": params.ball_carving,
            "navigation": params.navigation.map_or("auto", |n| n.name()),
        });
        let mut out = line(params_json.clone(), &ranked, &lat, qps, profile);
        plotted.push(crate::plot::Point {
            recall: out["recall@10"].as_f64().unwrap_or(0.0),
            p50_ms: percentile(&lat, 50.0),
            label: format!(
                "c{} r{} p{}",
                params.candidates.map_or("*".into(), |c| c.to_string()),
                params.rerank.map_or("*".into(), |c| c.to_string()),
                params.probe.map_or("*".into(), |c| c.to_string())
            ),
        });
        out["stage_counts"] = counts;
        out["bytes_per_token"] = round(bytes_per_token).into();
        out["storage"] = storage_name.clone().into();
        println!("{out}");
        cold_settings.push((params, params_json, percentile(&lat, 50.0)));
    }
    if args.cold {
        // Nothing of this process may keep the files mapped, or eviction would skip those pages.
        drop(collection);
        for (params, params_json, warm_p50) in &cold_settings {
            let n = args.cold_queries.min(nq);
            let (mut open_ms, mut lat, mut open_bytes, mut query_bytes) = (vec![], vec![], 0u64, 0u64);
            for q in 0..n {
                evict_tree(path).map_err(|e| format!("evicting {}: {e}", path.display()))?;
                let before = storage_read_bytes();
                let t = Instant::now();
                let reader = CollectionReader::open(path).map_err(|e| e.to_string())?;
                open_ms.push(t.elapsed().as_secs_f64() * 1e3);
                let opened = storage_read_bytes();
                let t = Instant::now();
                reader.search(queries.get(q).as_slice(), params).map_err(|e| e.to_string())?;
                lat.push(t.elapsed().as_secs_f64() * 1e3);
                let after = storage_read_bytes();
                open_bytes += opened.saturating_sub(before);
                query_bytes += after.saturating_sub(opened);
            }
            let nf = n.max(1) as f64;
            println!(
                "{}",
                json!({
                    "dataset": work.name,
                    "n_docs": work.n_docs,
                    "params": params_json,
                    "cold": {
                        "queries": n,
                        "open_ms": {"p50": round(percentile(&open_ms, 50.0)), "p99": round(percentile(&open_ms, 99.0))},
                        "latency_ms": {"p50": round(percentile(&lat, 50.0)), "p99": round(percentile(&lat, 99.0))},
                        "read_bytes_per_query": (query_bytes as f64 / nf).round(),
                        "read_bytes_per_open": (open_bytes as f64 / nf).round(),
                        "vs_warm_p50": round(percentile(&lat, 50.0) / warm_p50),
                    },
                })
            );
        }
    }
    if let Some(file) = &args.plot {
        let exact = exact_line.as_ref().map(|v| crate::plot::Point {
            recall: v["recall@10"].as_f64().unwrap_or(1.0),
            p50_ms: v["latency_ms"]["p50"].as_f64().unwrap_or(0.0),
            label: "exact".into(),
        });
        let title = format!("{} ({} docs, storage {storage_name})", work.name, work.n_docs);
        crate::plot::draw(file, &title, &plotted, exact.as_ref())?;
        eprintln!("plot: {}", file.display());
    }
    if let Some(v) = exact_line {
        println!("{v}");
    }

    Ok(())
}

/// Ranked ids per query, latency per query (ms), and the profile counters summed.
type Timed = (Vec<Vec<u32>>, Vec<f64>, SearchProfile);

/// `--filter-selectivity`: per selectivity, filtered search at the defaults against exact MaxSim
/// over the passing documents, and the unfiltered search of the same run for the latency ratio.
fn filter_sweep(
    args: &Args,
    work: &Workload,
    collection: &Collection,
    docs: &MultiVectors,
    path: &Path,
) -> Result<(), String> {
    let queries = &work.queries;
    let nq = queries.len();
    let timed = |params: &SearchParams| -> Result<Timed, String> {
        for q in 0..nq {
            collection.search(queries.get(q).as_slice(), params).map_err(|e| e.to_string())?;
        }
        let (mut ranked, mut lat, mut total) = (Vec::new(), Vec::new(), SearchProfile::default());
        for q in 0..nq {
            let t = Instant::now();
            let (hits, p) = collection.search_profiled(queries.get(q).as_slice(), params).map_err(|e| e.to_string())?;
            lat.push(t.elapsed().as_secs_f64() * 1e3);
            ranked.push(hits.iter().map(|h| h.id as u32).collect());
            total.filter_us += p.filter_us;
            total.filter_passing += p.filter_passing;
            total.filter_flat_segments += p.filter_flat_segments;
            total.distance_computations += p.distance_computations;
        }
        Ok((ranked, lat, total))
    };
    let base = SearchParams { prefetch: !args.no_prefetch, ..SearchParams::new(args.k) };
    let (_, unfiltered_lat, _) = timed(&base)?;
    let unfiltered_p50 = percentile(&unfiltered_lat, 50.0);
    // The field index's decoded bytes per field, over every segment.
    let mut index_bytes: std::collections::BTreeMap<String, usize> = Default::default();
    for entry in std::fs::read_dir(path.join("segments")).map_err(|e| e.to_string())? {
        let file = entry.map_err(|e| e.to_string())?.path();
        if file.extension().is_some_and(|x| x == "qseg") {
            let reader = quiverdb::segment::SegmentReader::open(&file).map_err(|e| e.to_string())?;
            if let Some(index) = reader.field_index().map_err(|e| e.to_string())? {
                for (name, bytes) in index.field_memory_bytes() {
                    *index_bytes.entry(name).or_default() += bytes;
                }
            }
        }
    }
    let per_doc: serde_json::Map<String, serde_json::Value> = index_bytes
        .iter()
        .map(|(name, &b)| (name.clone(), round(b as f64 / docs.len().max(1) as f64).into()))
        .collect();
    for &s in &args.filter_selectivity {
        if !(0.0..=1.0).contains(&s) {
            return Err(format!("--filter-selectivity {s} is outside [0, 1]"));
        }
        let threshold = (s * FILTER_BUCKETS as f64).round() as u64;
        let passing: Vec<usize> = (0..docs.len()).filter(|&i| bucket_of(i) < threshold).collect();
        // Exact filtered MaxSim: brute force over the passing documents, single-threaded.
        let mut truth = Vec::with_capacity(nq);
        let mut exact_lat = Vec::with_capacity(nq);
        for q in 0..nq {
            let t = Instant::now();
            let prepared = MaxSimQuery::new(&queries.get(q));
            let mut top = quiverdb::topk::TopK::new(args.k);
            for &i in &passing {
                let score = prepared.score_matrix(&docs.get(i)).map_err(|e| e.to_string())?;
                top.push(quiverdb::topk::Scored { doc: i as u32, score });
            }
            exact_lat.push(t.elapsed().as_secs_f64() * 1e3);
            truth.push(top.into_sorted().iter().map(|h| h.doc).collect::<Vec<u32>>());
        }
        let filter =
            Filter::from_json(&format!(r#"{{"field":"bucket","lt":{threshold}}}"#)).map_err(|e| e.to_string())?;
        let params = SearchParams { filter: Some(filter), ..base.clone() };
        let (ranked, lat, total) = timed(&params)?;
        let recall = ranked
            .iter()
            .zip(&truth)
            .map(|(r, t)| if t.is_empty() { 1.0 } else { recall_at_k(r, t, args.k.min(10).min(t.len())) })
            .sum::<f64>()
            / nq.max(1) as f64;
        let n = nq.max(1) as f64;
        let p50 = percentile(&lat, 50.0);
        println!(
            "{}",
            json!({
                "dataset": work.name,
                "n_docs": work.n_docs,
                "filter": {
                    "selectivity": s,
                    "passing_docs": passing.len(),
                    "recall@10": round(recall),
                    "latency_ms": {"p50": round(p50), "p99": round(percentile(&lat, 99.0))},
                    "unfiltered_p50_ms": round(unfiltered_p50),
                    "vs_unfiltered_p50": round(p50 / unfiltered_p50.max(1e-9)),
                    "exact_filtered_p50_ms": round(percentile(&exact_lat, 50.0)),
                    "filter_us": round(total.filter_us / n),
                    "flat_segments": round(total.filter_flat_segments as f64 / n),
                    "adc_distances": round(total.distance_computations as f64 / n),
                    "field_index_bytes_per_doc": per_doc,
                },
            })
        );
    }
    Ok(())
}

/// Drops every file under `dir` from the page cache (`posix_fadvise(POSIX_FADV_DONTNEED)`; clean
/// pages that no process maps are evicted).
fn evict_tree(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            evict_tree(&path)?;
        } else if let Ok(file) = std::fs::File::open(&path) {
            rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed)?;
        }
    }
    Ok(())
}

/// Bytes this process has caused to be read from storage (`read_bytes` of /proc/self/io; 0 where
/// the kernel does not say).
fn storage_read_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("read_bytes: ").and_then(|v| v.trim().parse().ok())))
        .unwrap_or(0)
}
