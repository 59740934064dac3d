//! quiverdb: an embedded, on-disk multi-vector database for late-interaction retrieval
//! (ColBERT, ColPali, PyLate).
//!
//! A document is a set of token vectors; relevance is MaxSim (`Σ_i max_j ⟨q_i, d_j⟩`). quiverdb
//! follows MUVERA: every document and query gets a fixed dimensional encoding (FDE) whose inner
//! product approximates MaxSim, candidates are found over product-quantised FDEs, and are reranked
//! by exact MaxSim over the stored token vectors.
//!
//! The database is [`Collection`]: create or open a directory, `insert`/`upsert`/`delete`
//! documents (a `u64` id, an `n × dim` token matrix, optional payload bytes), `search` by MaxSim,
//! `flush`, `compact`, `close`. Writes go to a write-ahead log ([`wal`]) and an in-memory memtable
//! ([`memtable`]), flushes write immutable memory-mapped segments ([`segment`]: tokens, PQ codes of
//! the FDEs, a Vamana graph), and every flush and merge commits atomically in a RocksDB catalog
//! ([`catalog`]). The durability contract is in the README and `storage-format.md`.
//!
//! Underneath: [`encode::fde`] (MUVERA FDEs, identical to Google's reference for the same seed),
//! [`encode::maxsim`] (exact MaxSim with runtime-dispatched SIMD), [`encode::pq`], [`graph`],
//! the query pipeline ([`search`]), compaction ([`compaction`]), offline verification
//! ([`check`]), file I/O behind one trait with a fault-injecting implementation ([`io`]), a reader
//! for `.npy` datasets ([`dataset`]), evaluation measures ([`eval`]), brute-force exact search
//! ([`exact`]) and a synthetic corpus generator ([`synthetic`]).
#![deny(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

// The public API: the handles, their options and results, the error type.
pub use collection::{Collection, CompactionReport, NewDocument};
pub use encode::codec::TokenCodebookParams;
pub use encode::fde::{FdeEncoder, FdeParams, Projection};
pub use encode::maxsim::{DocTokens, MaxSimQuery};
pub use encode::storage::TokenStorage;
pub use encode::tokens::TokenMatrix;
pub use error::{Error, Result};
pub use filter::{FieldKind, Filter, IndexedField};
pub use options::{CollectionOptions, Durability, OpenOptions};
pub use reader::CollectionReader;
pub use search::{Hit, Navigation, SearchParams, SearchProfile, Stages};
pub use snapshot::StoredDocument;
pub use stats::{CollectionStats, SegmentStatsInfo};
pub use wal::WalRecovery;

// The stages of the data flow, private behind the handles: open → recovery; insert → write →
// (WAL, memtable) → flush → segment; compaction::worker merges; search over a snapshot.
mod candidates;
mod collection;
mod engine;
mod flush;
mod memtable;
mod reader;
mod recovery;
mod snapshot;
mod stats;
mod write;

// Building blocks, public because the `quiver` tool, the benchmarks and the fuzz targets (separate
// crates) drive them directly: codecs and kernels (`encode`), on-disk formats (`format`), segment
// files (`segment`), the graph, the WAL and catalog formats, offline verification (`check`),
// datasets and evaluation for `quiver bench`. Applications need only the API above.
pub mod catalog;
pub mod check;
pub mod compaction;
pub mod dataset;
pub mod encode;
pub mod error;
pub mod eval;
pub mod exact;
pub mod filter;
pub mod format;
pub mod graph;
pub mod io;
pub mod limits;
pub mod options;
pub mod search;
pub mod segment;
pub mod synthetic;
#[doc(hidden)]
pub mod testing;
pub mod topk;
pub mod wal;
