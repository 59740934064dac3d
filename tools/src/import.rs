//! `quiver import`: loads documents from `.npy` files into a collection in batches, with a progress
//! bar. Resumable: ids already present are skipped (unless `--replace`), so rerunning an
//! interrupted import finishes it without duplicates. Interrupting it (Ctrl-C, a kill) leaves the
//! collection consistent: every acknowledged batch is in the WAL, everything else is absent.

use std::path::PathBuf;
use std::time::Instant;

use quiverdb::dataset::read_multivectors;
use quiverdb::{Collection, NewDocument, OpenOptions};
use serde_json::json;

/// Arguments of `quiver import`.
#[derive(clap::Args)]
pub struct Args {
    /// Collection directory (created with `quiver create`).
    path: PathBuf,
    /// A dataset directory (shared/data/FORMAT.md): docs.npy + doc_offsets.npy, ids from
    /// doc_ids.txt when they are all integers, else ordinals.
    #[arg(long, conflicts_with_all = ["npy", "offsets"])]
    dataset: Option<PathBuf>,
    /// Token matrix (.npy, 2-D, all documents' tokens stacked).
    #[arg(long, requires = "offsets")]
    npy: Option<PathBuf>,
    /// Offsets (.npy, 1-D, n_docs + 1 row offsets into --npy).
    #[arg(long, requires = "npy")]
    offsets: Option<PathBuf>,
    /// Ids, one integer per line (default: ordinals 0..n).
    #[arg(long)]
    ids: Option<PathBuf>,
    /// Payloads, one JSON value per line (JSON Lines), one line per document.
    #[arg(long)]
    payloads: Option<PathBuf>,
    /// Documents per batch (one WAL write and one fsync each).
    #[arg(long, default_value_t = 1024)]
    batch: usize,
    /// Replace documents whose id exists (default: skip them, which makes reruns resume).
    #[arg(long)]
    replace: bool,
    /// Leave the last documents in the memtable/WAL instead of flushing them to a segment.
    #[arg(long)]
    no_flush: bool,
    /// Durability for this import: sync, none or periodic:MS (default: the collection's).
    #[arg(long)]
    durability: Option<String>,
    /// Print a JSON summary.
    #[arg(long)]
    json: bool,
}

fn read_ids(path: &std::path::Path, n: usize, strict: bool) -> Result<Option<Vec<u64>>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() != n {
        return Err(format!("{} has {} lines for {n} documents", path.display(), lines.len()));
    }
    let mut ids = Vec::with_capacity(n);
    for (i, l) in lines.iter().enumerate() {
        match l.trim().parse::<u64>() {
            Ok(id) => ids.push(id),
            Err(_) if !strict => return Ok(None),
            Err(_) => return Err(format!("{} line {}: `{l}` is not an unsigned integer id", path.display(), i + 1)),
        }
    }
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!("{}: id {} appears more than once", path.display(), w[0]));
    }
    Ok(Some(ids))
}

pub fn run(args: Args) -> Result<(), String> {
    if args.batch == 0 || args.batch > quiverdb::limits::MAX_BATCH_DOCS {
        return Err(format!("--batch must be in 1..={}", quiverdb::limits::MAX_BATCH_DOCS));
    }
    let (docs, ids_path, strict_ids) = match (&args.dataset, &args.npy, &args.offsets) {
        (Some(dir), _, _) => {
            let docs =
                read_multivectors(&dir.join("docs.npy"), &dir.join("doc_offsets.npy")).map_err(|e| e.to_string())?;
            let ids = args.ids.clone().or_else(|| Some(dir.join("doc_ids.txt")).filter(|p| p.exists()));
            (docs, ids, args.ids.is_some())
        }
        (None, Some(npy), Some(offsets)) => {
            (read_multivectors(npy, offsets).map_err(|e| e.to_string())?, args.ids.clone(), true)
        }
        _ => return Err("give --dataset DIR or --npy TOKENS.npy --offsets OFFSETS.npy".into()),
    };
    let n = docs.len();
    let ids: Vec<u64> = match &ids_path {
        Some(p) => match read_ids(p, n, strict_ids)? {
            Some(ids) => ids,
            None => {
                eprintln!("quiver: {} holds non-integer ids; using ordinals 0..{n}", p.display());
                (0..n as u64).collect()
            }
        },
        None => (0..n as u64).collect(),
    };
    let payloads: Option<Vec<String>> = match &args.payloads {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            let lines: Vec<String> = text.lines().map(str::to_string).collect();
            if lines.len() != n {
                return Err(format!("{} has {} lines for {n} documents", p.display(), lines.len()));
            }
            for (i, l) in lines.iter().enumerate() {
                serde_json::from_str::<serde_json::Value>(l)
                    .map_err(|e| format!("{} line {}: not JSON ({e})", p.display(), i + 1))?;
            }
            Some(lines)
        }
        None => None,
    };
    let durability = args.durability.as_deref().map(crate::admin::parse_durability).transpose()?;
    let c = Collection::open_with(&args.path, OpenOptions { durability, ..Default::default() })
        .map_err(|e| e.to_string())?;
    if docs.dim() != c.options().dim as usize {
        return Err(format!(
            "the documents are {}-dimensional; the collection at {} stores {}-dimensional tokens",
            docs.dim(),
            args.path.display(),
            c.options().dim
        ));
    }
    let bar = indicatif::ProgressBar::new(n as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} documents  {per_sec}  eta {eta}")
            .map_err(|e| e.to_string())?,
    );
    let t = Instant::now();
    let (mut written, mut skipped) = (0u64, 0u64);
    let order: Vec<usize> = (0..n).collect();
    for chunk in order.chunks(args.batch) {
        let mut batch = Vec::with_capacity(chunk.len());
        for &i in chunk {
            if !args.replace && c.contains(ids[i]).map_err(|e| e.to_string())? {
                skipped += 1;
                continue;
            }
            batch.push(NewDocument {
                id: ids[i],
                tokens: docs.get(i).as_slice(),
                payload: payloads.as_ref().map(|p| p[i].as_bytes()),
            });
        }
        if args.replace { c.upsert_batch(&batch) } else { c.insert_batch(&batch) }.map_err(|e| e.to_string())?;
        written += batch.len() as u64;
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let import_s = t.elapsed().as_secs_f64();
    if !args.no_flush {
        c.flush().map_err(|e| e.to_string())?;
    }
    let stats = c.stats().map_err(|e| e.to_string())?;
    c.close().map_err(|e| e.to_string())?;
    let total_s = t.elapsed().as_secs_f64();
    if args.json {
        println!(
            "{}",
            json!({"written": written, "skipped_existing": skipped, "seconds": total_s, "import_seconds": import_s,
                   "docs_per_s": written as f64 / import_s.max(1e-9), "documents": stats.documents,
                   "segments": stats.segments.len()})
        );
    } else {
        println!(
            "imported {written} documents ({skipped} already present, skipped) in {total_s:.1} s ({:.0} docs/s before the final flush); {} documents in {} segments",
            written as f64 / import_s.max(1e-9),
            stats.documents,
            stats.segments.len()
        );
    }
    Ok(())
}
