//! Compaction: which segments to merge ([`policy`], a pure function) and the merge itself
//! ([`merge`]: live documents of the inputs → one new segment).

pub mod merge;
pub mod policy;
pub(crate) mod worker;

pub use policy::{MergePlan, SegmentStats, TieredPolicy};
