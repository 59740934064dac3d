//! `quiver`: the quiverdb command-line tool.
//!
//! Exit codes: 0 success; 1 a runtime error (I/O, corruption, bad input), printed as one sentence
//! on stderr; 2 a usage error (clap).

mod bench;
mod demo;
mod exact;
mod inspect;

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
