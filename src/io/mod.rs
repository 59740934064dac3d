//! The only module that touches files: the [`storage::Storage`] trait every file change goes
//! through (with the real file system and, for tests, [`fault::FaultStorage`]), read-only memory
//! maps ([`mmap`]) and durable publication of new files ([`fs`]). Everything else in the crate
//! works on byte slices.

pub mod fault;
pub mod fs;
pub mod mmap;
pub mod storage;
