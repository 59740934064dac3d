//! Collection options: what is fixed when a collection is created ([`CollectionOptions`], stored
//! in its catalog) and what each opened handle chooses ([`OpenOptions`]: durability, memtable
//! thresholds, background maintenance, WAL salvage).

use std::time::Duration;

use crate::compaction::TieredPolicy;
use crate::encode::codec::TokenCodebookParams;
use crate::encode::fde::FdeParams;
use crate::encode::pq::PqParams;
use crate::encode::storage::TokenStorage;
use crate::error::{Error, Result};
use crate::filter::IndexedField;
use crate::limits::MAX_DIM;
use crate::segment::GraphConfig;
use crate::wal::WalRecovery;

/// Version of the stored [`CollectionOptions`] record.
pub const CONFIG_VERSION: u32 = 1;

/// Fixed at creation and stored in the catalog: changing any of these would change how stored
/// documents are encoded.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CollectionOptions {
    /// Token vector dimension (every document and query must match).
    pub dim: u32,
    /// MUVERA FDE parameters (`fde.dim` must equal `dim`).
    pub fde: FdeParams,
    /// How token vectors are stored (f16 recommended for normalised embeddings: half the bytes,
    /// top-10 unchanged in the measurements of the foundation issue).
    pub storage: TokenStorage,
    /// PQ parameters of the collection's codebook.
    pub pq: PqParams,
    /// Graph construction for segments large enough to get one.
    pub graph: GraphConfig,
    /// Documents a PQ codebook must have been trained on before it is kept for good: a flush or
    /// merge bigger than twice the current codebook's training set, while that set is below this,
    /// trains a new one (so a collection started with a few documents does not keep a codebook
    /// trained on them forever).
    pub pq_settled_docs: u64,
    /// Durability of handles that do not choose one in [`OpenOptions::durability`].
    #[serde(default = "default_durability")]
    pub durability: Durability,
    /// The token codebook (centroid ids for the cheap scoring stage and the inverted lists; the
    /// residual codecs' centroids). `None`: no codebook, and no cheap stage (not allowed with a
    /// residual `storage`). Collections created before it existed get the default.
    #[serde(default = "default_token_codebook")]
    pub token_codebook: Option<TokenCodebookParams>,
    /// Payload fields indexed for filtered search (`SearchParams::filter`): every segment gets
    /// their column (the `field_index` section), and a payload giving one of them a value of
    /// another kind is refused at insert. Empty by default; collections created before filters
    /// existed have none. `Collection::index_field` adds fields later (stored here in the
    /// catalog; `Collection::indexed_fields` gives the current list).
    #[serde(default)]
    pub indexed_fields: Vec<IndexedField>,
}

fn default_token_codebook() -> Option<TokenCodebookParams> {
    Some(TokenCodebookParams::default())
}

fn default_durability() -> Durability {
    Durability::Sync
}

impl CollectionOptions {
    /// Defaults for `dim`-dimensional tokens: FDE (k_sim 5, d_proj 16, 20 repetitions), f16
    /// storage, PQ with 8-value subspaces, a graph from 4,096 documents on.
    pub fn new(dim: u32) -> Self {
        let fde = FdeParams::new(dim);
        let pq = PqParams::for_dim(fde.fde_dim());
        CollectionOptions {
            dim,
            fde,
            storage: TokenStorage::F16,
            pq,
            graph: GraphConfig::default(),
            pq_settled_docs: pq.max_training_vectors as u64,
            durability: Durability::Sync,
            token_codebook: default_token_codebook(),
            indexed_fields: Vec::new(),
        }
    }

    /// Checks every parameter.
    pub fn validate(&self) -> Result<()> {
        if self.dim == 0 || self.dim as usize > MAX_DIM {
            return Err(Error::invalid_param("dim", format!("{} is outside 1..={MAX_DIM}", self.dim)));
        }
        if self.fde.dim != self.dim {
            return Err(Error::invalid_param(
                "fde.dim",
                format!("the FDE is for {}-dimensional tokens, the collection's are {}", self.fde.dim, self.dim),
            ));
        }
        self.fde.validate()?;
        self.storage.check_dim(self.dim as usize)?;
        match &self.token_codebook {
            Some(params) => params.validate()?,
            None if self.storage.residual_bits() > 0 => {
                return Err(Error::invalid_param(
                    "token_codebook",
                    format!("{} storage needs a token codebook", self.storage.name()),
                ))
            }
            None => {}
        }
        self.pq.validate(self.fde.fde_dim())?;
        crate::filter::validate_fields(&self.indexed_fields)?;
        self.graph.params.validate()?;
        if self.graph.build_dim == 0 || self.graph.build_dim as usize > crate::limits::MAX_FDE_DIM {
            return Err(Error::invalid_param(
                "graph.build_dim",
                format!("{} is outside 1..={}", self.graph.build_dim, crate::limits::MAX_FDE_DIM),
            ));
        }
        if let Durability::Periodic(interval) = self.durability {
            if interval.is_zero() {
                return Err(Error::invalid_param("durability", "a periodic fsync interval must be positive"));
            }
        }
        Ok(())
    }
}

/// When an acknowledged write is durable. See README "Durability contract".
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Durability {
    /// `insert`/`delete` return only after their WAL record is fsynced: an acknowledged write
    /// survives a process crash and power loss. Concurrent writers share fsyncs (group commit).
    Sync,
    /// Writes are acknowledged once written to the OS (they survive a process crash); a background
    /// thread fsyncs the WAL every interval, so power loss loses at most about one interval.
    Periodic(Duration),
    /// Writes are acknowledged once written to the OS (they survive a process crash); the WAL is
    /// fsynced only by `flush`, rotation and `close`, so power loss may lose any write since.
    None,
}

/// Per-handle choices made at `open`/`create`.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// Durability of acknowledged writes; `None` (the default) uses the collection's
    /// [`CollectionOptions::durability`] (itself [`Durability::Sync`] unless chosen at creation).
    pub durability: Option<Durability>,
    /// The memtable is flushed to a segment when it holds this many documents (default 4,096). The
    /// memtable is searched by exact MaxSim, so this also bounds that cost.
    pub memtable_max_docs: usize,
    /// ... or this many bytes of tokens and payloads (default 128 MiB).
    pub memtable_max_bytes: usize,
    /// Flush and compact automatically in a background thread (default true). When false, a full
    /// memtable is flushed by the inserting call itself and compaction runs only on `compact()`.
    pub background: bool,
    /// Threads the background flushes and merges use (`None`, the default: half the machine's
    /// cores, at least one), so that a long merge leaves cores to searches and writers. Explicit
    /// `flush()` and `compact()` calls run on the caller's rayon pool instead.
    pub maintenance_threads: Option<usize>,
    /// Merge policy for compaction.
    pub merge_policy: TieredPolicy,
    /// Merges build the output's graph anew over every document (default false: a merge keeps
    /// the graph of its largest input and inserts the other inputs' documents into it,
    /// FreshDiskANN's way). For side-by-side measurements of the two.
    pub merge_rebuilds_graphs: bool,
    /// What to do with a damaged WAL record that is not a torn tail (default: refuse to open).
    pub wal_recovery: WalRecovery,
    /// Where file changes go (default `None`: the real file system). Tests pass
    /// [`crate::io::fault::FaultStorage`] to inject I/O errors and simulate power loss.
    pub storage: Option<std::sync::Arc<dyn crate::io::storage::Storage>>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            durability: None,
            memtable_max_docs: 4096,
            memtable_max_bytes: 128 << 20,
            background: true,
            maintenance_threads: None,
            merge_policy: TieredPolicy::default(),
            merge_rebuilds_graphs: false,
            wal_recovery: WalRecovery::Strict,
            storage: None,
        }
    }
}

impl OpenOptions {
    /// Checks the thresholds.
    pub fn validate(&self) -> Result<()> {
        if self.memtable_max_docs == 0 {
            return Err(Error::invalid_param("memtable_max_docs", "must be positive"));
        }
        if self.memtable_max_bytes == 0 {
            return Err(Error::invalid_param("memtable_max_bytes", "must be positive"));
        }
        if let Some(n) = self.maintenance_threads {
            if n == 0 || n > crate::limits::MAX_MAINTENANCE_THREADS {
                return Err(Error::invalid_param(
                    "maintenance_threads",
                    format!("{n} is outside 1..={}", crate::limits::MAX_MAINTENANCE_THREADS),
                ));
            }
        }
        if let Some(Durability::Periodic(interval)) = self.durability {
            if interval.is_zero() {
                return Err(Error::invalid_param("durability", "a periodic fsync interval must be positive"));
            }
        }
        self.merge_policy.validate()
    }
}
