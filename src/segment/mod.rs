//! Segments: immutable, memory-mapped, self-describing files holding a batch of documents (ids,
//! token vectors, payloads) and their index data (PQ codebook and codes of the document FDEs).
//! Byte layout: storage-format.md, "Segment file"; framing code: [`crate::format::segment`].

mod reader;
mod writer;

pub use reader::{SectionInfo, SegmentReader};
pub use writer::{Document, GraphConfig, PqSource, SegmentConfig, SegmentSummary, SegmentWriter};

/// File name of segment `id` inside a collection directory: `seg-<16 hex digits>.qseg`.
pub fn file_name(id: u64) -> String {
    format!("seg-{id:016x}.qseg")
}
