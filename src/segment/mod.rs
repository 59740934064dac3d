//! Segments: immutable, memory-mapped, self-describing files holding a batch of documents (ids,
//! token vectors, payloads) and their index data (PQ codebook and codes of the document FDEs).
//! Byte layout: storage-format.md, "Segment file"; framing code: [`crate::format::segment`].

mod live;
mod reader;
mod writer;

pub use live::LiveBits;
pub use reader::{SectionInfo, SegmentReader, TokenBooks};
pub use writer::{CodedTokens, Document, GraphConfig, PqSource, SegmentConfig, SegmentSummary, SegmentWriter};

/// File name of segment `id` inside a collection directory: `seg-<16 hex digits>.qseg`.
pub fn file_name(id: u64) -> String {
    format!("seg-{id:016x}.qseg")
}

/// The segment id in a file name made by [`file_name`] (None for any other name).
pub fn parse_file_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("seg-")?.strip_suffix(".qseg")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}
