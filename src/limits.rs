//! Hard limits, each a named constant with its unit (TigerBeetle's "put a limit on everything").
//!
//! Input beyond a limit is rejected with a clear error instead of being attempted. The limits
//! are chosen far above any real late-interaction model (ColBERT: 128 dims, ≤ 512 tokens;
//! ColPali: 128 dims, ~1,030 patches) while keeping every size computation inside `u32`/`u64`.

/// Largest token-vector dimension accepted (elements).
pub const MAX_DIM: usize = 4096;

/// Most token vectors in one document (rows).
pub const MAX_TOKENS_PER_DOC: usize = 16_384;

/// Most token vectors in one query (rows).
pub const MAX_TOKENS_PER_QUERY: usize = 4096;

/// Longest fixed dimensional encoding produced (f32 elements): 4 MiB per FDE.
pub const MAX_FDE_DIM: usize = 1 << 20;

/// Most SimHash projections per repetition (`k_sim`); the bucket count is `2^k_sim`.
/// The reference implementation refuses 31 and more because bucket indices are `u32`.
pub const MAX_K_SIM: u32 = 30;

/// Most FDE repetitions (`r_reps`).
pub const MAX_REPETITIONS: u32 = 1024;

/// Most documents in one segment. PQ codes of a segment under construction are held in RAM
/// (`pq_subspaces` bytes per document: 21 GB at this limit with 1,280-byte codes).
pub const MAX_DOCS_PER_SEGMENT: u64 = 1 << 24;

/// Largest payload stored with one document (bytes).
pub const MAX_PAYLOAD_BYTES: usize = 1 << 20;

/// Most token values (`tokens × dim`) one document may hold: 64 MiB as `f32`. Bounds a WAL record.
pub const MAX_DOC_VALUES: usize = 1 << 24;

/// Largest WAL record payload accepted by the decoder (a document at [`MAX_DOC_VALUES`] as `f32`,
/// its payload and the fixed fields). Anything longer in a WAL header is corruption.
pub const MAX_WAL_RECORD_BYTES: usize = MAX_DOC_VALUES * 4 + MAX_PAYLOAD_BYTES + 64;

/// Largest rerank depth a search accepts (documents scored by exact MaxSim per query): far above
/// any useful setting (the defaults are 200–400), small enough that every buffer sized by it stays
/// a few megabytes.
pub const MAX_RERANK: usize = 100_000;

/// Largest graph beam width (`list_size`) a search accepts.
pub const MAX_LIST_SIZE: usize = 100_000;

/// Most threads background maintenance may be given.
pub const MAX_MAINTENANCE_THREADS: usize = 1024;

/// Most documents accepted in one `insert_batch` call (one WAL group, one lock hold).
pub const MAX_BATCH_DOCS: usize = 65_536;
