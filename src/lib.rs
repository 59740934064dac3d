//! quiverdb: an embedded, on-disk multi-vector database for late-interaction retrieval
//! (ColBERT, ColPali, PyLate).
//!
//! A document is a set of token vectors; relevance is MaxSim (`Σ_i max_j ⟨q_i, d_j⟩`). quiverdb
//! follows MUVERA: every document and query gets a fixed dimensional encoding (FDE) whose inner
//! product approximates MaxSim, candidates are found over product-quantised FDEs, and are reranked
//! by exact MaxSim over the stored token vectors.
//!
//! This crate currently provides the foundation: [`encode::fde`] (MUVERA FDEs, identical to
//! Google's reference for the same seed), [`encode::maxsim`] (exact MaxSim with runtime-dispatched
//! SIMD), token storage types, a reader for `.npy` datasets ([`dataset`]), evaluation measures
//! ([`eval`]), brute-force exact search ([`exact`]) and a synthetic corpus generator ([`synthetic`]).
#![deny(unsafe_code)]

pub mod catalog;
pub mod check;
pub mod collection;
pub mod compaction;
pub mod dataset;
pub mod encode;
pub mod error;
pub mod eval;
pub mod exact;
pub mod format;
pub mod graph;
pub mod io;
pub mod limits;
pub mod memtable;
pub mod options;
pub mod search;
pub mod segment;
pub mod synthetic;
pub mod topk;
pub mod wal;

pub use collection::{Collection, CollectionStats, CompactionReport, NewDocument, StoredDocument};
pub use encode::fde::{FdeEncoder, FdeParams, Projection};
pub use encode::maxsim::{DocTokens, MaxSimQuery};
pub use encode::storage::TokenStorage;
pub use encode::tokens::TokenMatrix;
pub use error::{Error, Result};
pub use options::{CollectionOptions, Durability, OpenOptions};
pub use search::{Hit, SearchParams};
pub use wal::WalRecovery;
