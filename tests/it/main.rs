//! The one integration-test binary (redb/Qdrant style): each module a kind of test.

mod codec;
mod collection;
mod common;
mod decoders;
mod disk_full;
mod extremes;
mod filter;
mod fixtures;
mod golden;
mod graph;
mod navigation;
mod props;
mod readonly;
mod real_data;
mod reliability;
mod segment;
