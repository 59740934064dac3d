//! `quiver`: the quiverdb command-line tool.
//!
//! Exit codes: 0 success; 1 a runtime error (I/O, corruption, bad input, a damaged collection
//! found by `verify` or a damaged segment by `inspect`), printed as one sentence naming the path
//! on stderr; 2 a usage error (clap).

mod admin;
mod bench;
mod demo;
mod exact;
mod import;
mod inspect;
mod plot;

use clap::{Parser, Subcommand};

/// quiverdb: an embedded multi-vector (late-interaction, MaxSim) database.
#[derive(Parser)]
#[command(name = "quiver", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create an empty collection.
    ///
    /// Example: quiver create /data/col --dim 128 --storage f16 --durability sync
    Create(admin::CreateArgs),
    /// Import documents from .npy files (a dataset directory, or a token matrix + offsets), in
    /// batches with a progress bar; rerunning an interrupted import resumes it without duplicates.
    ///
    /// Example: quiver import /data/col --dataset ../shared/data/scifact-mini
    /// Example: quiver import /data/col --npy tokens.npy --offsets offsets.npy --ids ids.txt --payloads meta.jsonl
    Import(import::Args),
    /// Search with a query token matrix (.npy, n_tokens × dim).
    ///
    /// Example: quiver search /data/col --query q.npy --k 10 --payload
    Search(admin::SearchArgs),
    /// Print one document.
    ///
    /// Example: quiver get /data/col 42
    Get(admin::GetArgs),
    /// Delete documents by id.
    ///
    /// Example: quiver delete /data/col 42 43 44
    Delete(admin::DeleteArgs),
    /// Index one more payload field for filtered search (`--filter`), for the documents already
    /// stored too; refused, naming the document, if one gives the field a value of another kind.
    ///
    /// Example: quiver index-field /data/col lang:keyword
    IndexField(admin::IndexFieldArgs),
    /// Write the memtable (documents replayed from the WAL) to a segment.
    ///
    /// Example: quiver flush /data/col
    Flush(admin::PathArgs),
    /// Merge segments by the tiered policy (drops deleted documents).
    ///
    /// Example: quiver compact /data/col
    Compact(admin::PathArgs),
    /// Documents, segments, bytes on disk by kind, estimated RAM, FDE/PQ/graph parameters, WAL.
    ///
    /// Example: quiver stats /data/col --json
    Stats(admin::PathArgs),
    /// Check every checksum of every file, the catalog against the files and the WAL, without
    /// modifying anything; exit code 1 and a report naming each problem if anything is wrong.
    ///
    /// Example: quiver verify /data/col
    Verify(admin::PathArgs),
    /// List the WAL's records (sequence number, kind, id), read-only.
    ///
    /// Example: quiver wal-dump /data/col
    WalDump(admin::WalDumpArgs),
    /// Brute-force exact MaxSim over a dataset: the quality ceiling and speed baseline.
    ///
    /// Prints one JSON line: ndcg@10 against qrels.tsv, recall@10 and recall@100 against
    /// gt_maxsim_top100.npy (1.0 proves the reader and the kernel), queries/s and threads.
    ///
    /// Example: quiver exact --dataset ../shared/data/scifact-mini
    Exact(exact::Args),
    /// Build (or reuse) a collection from a dataset or a generated corpus, run every query at each
    /// setting of a sweep, print one JSON line per setting and a final line for exact MaxSim.
    ///
    /// Example: quiver bench --dataset ../shared/data/scifact-mini --sweep "rerank=50,100,200"
    /// Example: quiver bench --synthetic 100000 --queries 100 --threads 2
    Bench(bench::Args),
    /// Generate a clustered synthetic corpus, index it with MUVERA FDEs, search it, and print
    /// recall against exact MaxSim. Needs no data and no arguments.
    ///
    /// Example: quiver demo --docs 5000
    Demo(demo::Args),
    /// Describe a segment file: header, FDE parameters, PQ shape, graph degrees, token counts,
    /// sections with checksums, and a full verification (exit code 1 if anything is wrong).
    ///
    /// Example: quiver inspect /data/col/seg-0000000000000001.qseg --doc 0
    Inspect(inspect::Args),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Exact(args) => exact::run(args),
        Command::Create(args) => admin::create(args),
        Command::Import(args) => import::run(args),
        Command::Search(args) => admin::search(args),
        Command::Get(args) => admin::get(args),
        Command::Delete(args) => admin::delete(args),
        Command::IndexField(args) => admin::index_field(args),
        Command::Flush(args) => admin::flush(args),
        Command::Compact(args) => admin::compact(args),
        Command::Stats(args) => admin::stats(args),
        Command::Verify(args) => admin::verify(args),
        Command::WalDump(args) => admin::wal_dump(args),
        Command::Bench(args) => bench::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Inspect(args) => inspect::run(args),
    };
    if let Err(err) = result {
        eprintln!("quiver: {err}");
        std::process::exit(1);
    }
}

/// Runs `f` on a rayon pool of `threads` threads (all cores when `None`).
pub fn with_threads<T: Send>(threads: Option<usize>, f: impl FnOnce() -> T + Send) -> Result<T, String> {
    let mut builder = rayon::ThreadPoolBuilder::new();
    if let Some(n) = threads {
        if n == 0 {
            return Err("--threads must be at least 1".into());
        }
        builder = builder.num_threads(n);
    }
    let pool = builder.build().map_err(|e| format!("cannot start {threads:?} threads: {e}"))?;
    Ok(pool.install(f))
}
