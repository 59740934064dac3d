//! Collection commands: `create`, `get`, `delete`, `flush`, `compact`, `stats`, `verify`,
//! `wal-dump`, `search`. Each opens the collection through the public API (or, for `verify` and
//! `wal-dump`, reads it without modifying anything) and reports a table or, with `--json`, JSON.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use quiverdb::catalog::Catalog;
use quiverdb::check::{layout, verify_collection};
use quiverdb::format::wal::RecordOp;
use quiverdb::wal::{replay, WalRecovery};
use quiverdb::{
    Collection, CollectionOptions, CollectionReader, Durability, Filter, IndexedField, OpenOptions, Projection,
    SearchParams, TokenStorage,
};
use serde_json::json;

/// Parses `sync`, `none` or `periodic:MS`.
pub fn parse_durability(s: &str) -> Result<Durability, String> {
    match s {
        "sync" => Ok(Durability::Sync),
        "none" => Ok(Durability::None),
        _ => match s.strip_prefix("periodic:").and_then(|ms| ms.parse::<u64>().ok()) {
            Some(ms) if ms > 0 => Ok(Durability::Periodic(Duration::from_millis(ms))),
            _ => Err(format!("durability `{s}` is not sync, none or periodic:MILLISECONDS")),
        },
    }
}

fn durability_name(d: Durability) -> String {
    match d {
        Durability::Sync => "sync".into(),
        Durability::None => "none".into(),
        Durability::Periodic(i) => format!("periodic:{}", i.as_millis()),
    }
}

/// Opens for reading (search, get, stats): never blocks, or is blocked by, a running writer, and
/// changes nothing on disk.
pub fn open_reader(path: &Path) -> Result<CollectionReader, String> {
    CollectionReader::open(path).map_err(|e| e.to_string())
}

/// Opens for a short administrative command that writes: no background thread.
pub fn open(path: &Path) -> Result<Collection, String> {
    Collection::open_with(path, OpenOptions { background: false, ..Default::default() }).map_err(|e| e.to_string())
}

/// Arguments of `quiver create`.
#[derive(clap::Args)]
pub struct CreateArgs {
    /// Directory of the new collection (must not exist or be empty).
    path: PathBuf,
    /// Token vector dimension.
    #[arg(long, default_value_t = 128)]
    dim: u32,
    /// FDE shape `k_sim,d_proj,r_reps` (default 5,16,20: 10,240 dimensions).
    #[arg(long, default_value = "5,16,20")]
    fde: String,
    /// PQ code bytes per document (must divide the FDE dimension; default: FDE dimension / 8).
    #[arg(long)]
    pq_subspaces: Option<u32>,
    /// Token storage: f32, f16 or bf16.
    #[arg(long, default_value = "f16")]
    storage: String,
    /// Default durability of writes: sync, none or periodic:MILLISECONDS.
    #[arg(long, default_value = "sync")]
    durability: String,
    /// A payload field to index for filtered search, `NAME:KIND` with KIND keyword, integer,
    /// float or bool (repeat for several): `--index-field lang:keyword --index-field year:integer`.
    #[arg(long = "index-field", value_name = "NAME:KIND")]
    index_fields: Vec<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn create(args: CreateArgs) -> Result<(), String> {
    let mut options = CollectionOptions::new(args.dim);
    let parts: Vec<u32> = args
        .fde
        .split(',')
        .map(|p| p.trim().parse::<u32>().map_err(|_| format!("--fde `{}` is not k_sim,d_proj,r_reps", args.fde)))
        .collect::<Result<_, _>>()?;
    let [k_sim, d_proj, r_reps] = parts[..] else {
        return Err(format!("--fde `{}` needs three numbers: k_sim,d_proj,r_reps", args.fde));
    };
    options.fde.k_sim = k_sim;
    options.fde.r_reps = r_reps;
    options.fde.projection = if d_proj == args.dim { Projection::Identity } else { Projection::CountSketch { d_proj } };
    options.pq = quiverdb::encode::pq::PqParams::for_dim(options.fde.fde_dim());
    if let Some(m) = args.pq_subspaces {
        options.pq.subspaces = m;
    }
    options.storage = TokenStorage::from_name(&args.storage).map_err(|e| e.to_string())?;
    options.durability = parse_durability(&args.durability)?;
    options.indexed_fields = args
        .index_fields
        .iter()
        .map(|f| IndexedField::parse(f).map_err(|e| format!("--index-field: {e}")))
        .collect::<Result<_, _>>()?;
    let c = Collection::create(&args.path, options.clone(), OpenOptions { background: false, ..Default::default() })
        .map_err(|e| e.to_string())?;
    c.close().map_err(|e| e.to_string())?;
    if args.json {
        println!("{}", json!({"created": args.path, "options": options}));
    } else {
        println!(
            "created {}: {}-d tokens ({}), FDE {} dims (k_sim {k_sim}, d_proj {d_proj}, {r_reps} repetitions), PQ {} bytes/doc, durability {}",
            args.path.display(),
            args.dim,
            options.storage.name(),
            options.fde.fde_dim(),
            options.pq.subspaces,
            durability_name(options.durability)
        );
    }
    Ok(())
}

/// Arguments of `quiver get`.
#[derive(clap::Args)]
pub struct GetArgs {
    /// Collection directory.
    path: PathBuf,
    /// Document id.
    id: u64,
    /// Print JSON (with every token value).
    #[arg(long)]
    json: bool,
}

pub fn get(args: GetArgs) -> Result<(), String> {
    let c = open_reader(&args.path)?;
    let doc = c
        .get(args.id)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no document {} in {}", args.id, args.path.display()))?;
    let dim = c.options().dim as usize;
    let payload = String::from_utf8_lossy(&doc.payload).into_owned();
    if args.json {
        println!(
            "{}",
            json!({"id": doc.id, "tokens": doc.tokens.len() / dim, "dim": dim, "values": doc.tokens, "payload": payload})
        );
    } else {
        println!(
            "id {}: {} tokens of {} dims; payload {} bytes{}",
            doc.id,
            doc.tokens.len() / dim,
            dim,
            doc.payload.len(),
            if doc.payload.is_empty() { String::new() } else { format!(": {payload}") }
        );
    }
    Ok(())
}

/// Arguments of `quiver delete`.
#[derive(clap::Args)]
pub struct DeleteArgs {
    /// Collection directory.
    path: PathBuf,
    /// Document ids.
    #[arg(required = true)]
    ids: Vec<u64>,
}

pub fn delete(args: DeleteArgs) -> Result<(), String> {
    let c = open(&args.path)?;
    let mut deleted = 0;
    for id in &args.ids {
        if c.delete(*id).map_err(|e| e.to_string())? {
            deleted += 1;
        } else {
            eprintln!("quiver: no document {id} (nothing deleted)");
        }
    }
    c.close().map_err(|e| e.to_string())?;
    println!("deleted {deleted} of {} ids", args.ids.len());
    Ok(())
}

/// Arguments of `quiver flush` and `quiver compact`.
#[derive(clap::Args)]
pub struct PathArgs {
    /// Collection directory.
    path: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `quiver index-field`.
#[derive(clap::Args)]
pub struct IndexFieldArgs {
    /// Collection directory.
    path: PathBuf,
    /// The field, `NAME:KIND` (KIND: keyword, integer, float or bool).
    field: String,
}

pub fn index_field(args: IndexFieldArgs) -> Result<(), String> {
    let field = IndexedField::parse(&args.field).map_err(|e| e.to_string())?;
    let c = open(&args.path)?;
    c.index_field(field).map_err(|e| e.to_string())?;
    let fields: Vec<String> = c.indexed_fields().iter().map(|f| format!("{}:{}", f.name, f.kind.name())).collect();
    c.close().map_err(|e| e.to_string())?;
    println!("{}: indexed fields {}", args.path.display(), fields.join(", "));
    Ok(())
}

pub fn flush(args: PathArgs) -> Result<(), String> {
    let c = open(&args.path)?;
    let t = Instant::now();
    c.flush().map_err(|e| e.to_string())?;
    let s = c.stats().map_err(|e| e.to_string())?;
    c.close().map_err(|e| e.to_string())?;
    let secs = t.elapsed().as_secs_f64();
    if args.json {
        println!(
            "{}",
            json!({"flushed": true, "seconds": secs, "segments": s.segments.len(), "documents": s.documents})
        );
    } else {
        println!("flushed in {secs:.2} s: {} documents in {} segments", s.documents, s.segments.len());
    }
    Ok(())
}

pub fn compact(args: PathArgs) -> Result<(), String> {
    let c = open(&args.path)?;
    let before = c.stats().map_err(|e| e.to_string())?;
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_message(format!("compacting {} segments", before.segments.len()));
    spinner.enable_steady_tick(Duration::from_millis(200));
    let t = Instant::now();
    let report = c.compact().map_err(|e| e.to_string())?;
    spinner.finish_and_clear();
    let after = c.stats().map_err(|e| e.to_string())?;
    c.close().map_err(|e| e.to_string())?;
    let secs = t.elapsed().as_secs_f64();
    if args.json {
        println!(
            "{}",
            json!({"merges": report.merges, "inputs": report.inputs, "docs_written": report.docs_written,
                   "bytes_written": report.bytes_written, "seconds": secs,
                   "segments_before": before.segments.len(), "segments_after": after.segments.len()})
        );
    } else {
        println!(
            "compacted in {secs:.2} s: {} merges of {} segments, {} documents rewritten ({:.1} MB); segments {} -> {}",
            report.merges,
            report.inputs,
            report.docs_written,
            report.bytes_written as f64 / 1e6,
            before.segments.len(),
            after.segments.len()
        );
    }
    Ok(())
}

pub fn stats(args: PathArgs) -> Result<(), String> {
    let c = open_reader(&args.path)?;
    let s = c.stats().map_err(|e| e.to_string())?;
    let o = c.options().clone();
    drop(c);
    if args.json {
        println!("{}", json!({"stats": s, "options": o}));
        return Ok(());
    }
    let mb = |b: u64| b as f64 / 1e6;
    println!("collection {}", args.path.display());
    println!("  documents            {}", s.documents);
    println!(
        "  memtable             {} operations, {:.1} MB (replayed from the WAL)",
        s.memtable_ops,
        mb(s.memtable_bytes)
    );
    println!("  segments             {}", s.segments.len());
    println!(
        "  on disk              segments {:.1} MB, WAL {:.1} MB, catalog {:.1} MB",
        mb(s.segment_bytes),
        mb(s.wal_bytes),
        mb(s.catalog_bytes)
    );
    println!(
        "  RAM when open (est.) {:.1} MB ({:.0} bytes/document)",
        mb(s.ram_bytes),
        s.ram_bytes as f64 / s.documents.max(1) as f64
    );
    println!("  WAL                  checkpoint {}, last sequence {}", s.checkpoint, s.last_seq);
    println!(
        "  FDE                  {}-d tokens, k_sim {}, {:?}, {} repetitions -> {} dims (seed {})",
        o.dim,
        o.fde.k_sim,
        o.fde.projection,
        o.fde.r_reps,
        o.fde.fde_dim(),
        o.fde.seed
    );
    println!("  PQ                   {} subspaces x 256 centroids ({} bytes/document)", o.pq.subspaces, o.pq.subspaces);
    println!(
        "  graph                R {} L {} alpha {} over {}-d sketches, from {} documents on",
        o.graph.params.max_degree, o.graph.params.build_list, o.graph.params.alpha, o.graph.build_dim, o.graph.min_docs
    );
    println!("  storage              {}, durability {}", o.storage.name(), durability_name(o.durability));
    if !o.indexed_fields.is_empty() {
        let fields: Vec<String> = o.indexed_fields.iter().map(|f| format!("{}:{}", f.name, f.kind.name())).collect();
        println!("  indexed fields       {}", fields.join(", "));
    }
    if !s.segments.is_empty() {
        println!("  {:>18} {:>10} {:>10} {:>10} {:>6}", "segment", "documents", "live", "MB", "graph");
        for seg in &s.segments {
            println!(
                "  {:>18} {:>10} {:>10} {:>10.1} {:>6}",
                format!("{:016x}", seg.id),
                seg.doc_count,
                seg.live_docs,
                mb(seg.bytes),
                if seg.has_graph { "yes" } else { "no" }
            );
        }
    }
    Ok(())
}

pub fn verify(args: PathArgs) -> Result<(), String> {
    let report = verify_collection(&args.path).map_err(|e| e.to_string())?;
    if args.json {
        println!("{}", json!({"ok": report.is_ok(), "report": report}));
    } else {
        println!(
            "{}: {} segments ({:.1} MB checksummed), {} documents, {} WAL files ({} records to replay)",
            args.path.display(),
            report.segments,
            report.segment_bytes_checked as f64 / 1e6,
            report.documents,
            report.wal_files,
            report.wal_records_to_replay
        );
        for n in &report.notes {
            println!("  note: {n}");
        }
        for p in &report.problems {
            println!("  PROBLEM: {p}");
        }
        println!("{}", if report.is_ok() { "ok" } else { "damaged" });
    }
    if report.is_ok() {
        Ok(())
    } else {
        Err(format!("{} problem(s) found in {}", report.problems.len(), args.path.display()))
    }
}

/// Arguments of `quiver wal-dump`.
#[derive(clap::Args)]
pub struct WalDumpArgs {
    /// Collection directory.
    path: PathBuf,
    /// Print one JSON object per record.
    #[arg(long)]
    json: bool,
}

pub fn wal_dump(args: WalDumpArgs) -> Result<(), String> {
    let (catalog_dir, _, wal_dir) = layout(&args.path);
    if !catalog_dir.join("CURRENT").exists() {
        return Err(format!("{} is not a collection (no catalog)", args.path.display()));
    }
    let checkpoint = Catalog::open_read_only(&catalog_dir).and_then(|c| c.checkpoint()).map_err(|e| e.to_string())?;
    let report = replay(&wal_dir, 0, WalRecovery::Strict, None, |r| {
        let state = if r.seq <= checkpoint { "in segments" } else { "to replay" };
        match r.op {
            RecordOp::Put { id, dim, storage, tokens, payload } => {
                let rows = tokens.len() / (dim as usize * storage.bytes_per_value());
                if args.json {
                    println!("{}", json!({"seq": r.seq, "kind": "put", "id": id, "tokens": rows, "dim": dim, "storage": storage.name(), "payload_bytes": payload.len(), "state": state}));
                } else {
                    println!("{:>12}  put     id {id:<20} {rows} x {dim} {}  payload {} B  ({state})", r.seq, storage.name(), payload.len());
                }
            }
            RecordOp::Delete { id } => {
                if args.json {
                    println!("{}", json!({"seq": r.seq, "kind": "delete", "id": id, "state": state}));
                } else {
                    println!("{:>12}  delete  id {id:<20} ({state})", r.seq);
                }
            }
        }
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    if !args.json {
        println!(
            "{} files, checkpoint {checkpoint}, last sequence {}{}",
            report.files,
            report.last_seq.max(checkpoint),
            if report.torn_tail_bytes > 0 {
                format!(", {} bytes of a torn final record (cut at the next open)", report.torn_tail_bytes)
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

/// Arguments of `quiver search`.
#[derive(clap::Args)]
pub struct SearchArgs {
    /// Collection directory.
    path: PathBuf,
    /// The query: a 2-D .npy token matrix (n_tokens × dim; f32 or f16).
    #[arg(long)]
    query: PathBuf,
    /// Results.
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Documents reranked by exact MaxSim (default: the library's).
    #[arg(long)]
    rerank: Option<usize>,
    /// Include payloads.
    #[arg(long)]
    payload: bool,
    /// Only documents passing this filter, as JSON over the collection's indexed fields, e.g.
    /// '{"and":[{"field":"lang","eq":"en"},{"field":"year","gte":2020}]}' (README, "Filtered
    /// search").
    #[arg(long)]
    filter: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// After the first search, run the same query this many more times in this process and
    /// report their median (`warm_ms`) next to the first one's time: what a fresh process's first
    /// query costs against a warm one's (page-table faults, first-use allocations).
    #[arg(long, default_value_t = 0)]
    repeat: usize,
    /// Also print where the first search's time went (`SearchProfile`: stage microseconds and
    /// counts), and the last repeat's with `--repeat`.
    #[arg(long)]
    profile: bool,
    /// Turn off the prefetch of what each search step reads (`SearchParams::prefetch`).
    #[arg(long)]
    no_prefetch: bool,
}

pub fn search(args: SearchArgs) -> Result<(), String> {
    let (values, rows, dim) = quiverdb::dataset::read_matrix(&args.query).map_err(|e| e.to_string())?;
    let opened = Instant::now();
    let c = open_reader(&args.path)?;
    let open_ms = opened.elapsed().as_secs_f64() * 1e3;
    if dim != c.options().dim as usize {
        return Err(format!(
            "{} holds {dim}-dimensional tokens; the collection's are {}-dimensional",
            args.query.display(),
            c.options().dim
        ));
    }
    let filter = args.filter.as_deref().map(Filter::from_json).transpose().map_err(|e| format!("--filter: {e}"))?;
    let params = SearchParams {
        rerank: args.rerank,
        with_payload: args.payload,
        filter,
        prefetch: !args.no_prefetch,
        ..SearchParams::new(args.k)
    };
    let t = Instant::now();
    let (hits, first_profile) = c.search_profiled(&values, &params).map_err(|e| e.to_string())?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let mut warm = Vec::with_capacity(args.repeat);
    let mut last_profile = None;
    for _ in 0..args.repeat {
        let t = Instant::now();
        let (_, p) = c.search_profiled(&values, &params).map_err(|e| e.to_string())?;
        warm.push(t.elapsed().as_secs_f64() * 1e3);
        last_profile = Some(p);
    }
    warm.sort_by(f64::total_cmp);
    let warm_ms = (!warm.is_empty()).then(|| warm[warm.len() / 2]);
    let first_over_warm = warm_ms.map(|w| ms / w.max(1e-9));
    drop(c);
    if args.json {
        let hits: Vec<_> = hits
            .iter()
            .map(|h| json!({"id": h.id, "score": h.score, "payload": h.payload.as_ref().map(|p| String::from_utf8_lossy(p).into_owned())}))
            .collect();
        let mut out = json!({"query_tokens": rows, "k": args.k, "open_ms": open_ms, "ms": ms, "hits": hits});
        if let (Some(w), Some(ratio)) = (warm_ms, first_over_warm) {
            out["warm_ms"] = json!(w);
            out["first_over_warm"] = json!(ratio);
        }
        if args.profile {
            out["profile"] = json!(first_profile);
            if let Some(p) = &last_profile {
                out["warm_profile"] = json!(p);
            }
        }
        println!("{out}");
    } else {
        println!("{} hits for a {rows}-token query in {ms:.2} ms (open {open_ms:.2} ms)", hits.len());
        if let (Some(w), Some(ratio)) = (warm_ms, first_over_warm) {
            println!("the same query repeated {} times: median {w:.2} ms ({ratio:.2}x faster)", warm.len());
        }
        if args.profile {
            println!("first search: {}", json!(first_profile));
            if let Some(p) = &last_profile {
                println!("last repeat:  {}", json!(p));
            }
        }
        println!("{:>5} {:>20} {:>12}", "rank", "id", "MaxSim");
        for (i, h) in hits.iter().enumerate() {
            let payload = h.payload.as_ref().map(|p| format!("  {}", String::from_utf8_lossy(p))).unwrap_or_default();
            println!("{:>5} {:>20} {:>12.5}{payload}", i + 1, h.id, h.score);
        }
    }
    Ok(())
}
