//! The only module that touches files: the [`storage::Storage`] trait every file change goes
//! through (with the real file system and, for tests, [`fault::FaultStorage`]), read-only memory
//! maps ([`mmap`]) and durable publication of new files ([`fs`]). Everything else in the crate
//! works on byte slices.
//!
//! Why the fault-injecting storage is public rather than behind a test feature: the integration
//! tests (`tests/it`) and the fuzz targets are separate crates that drive the public API through it
//! (crash-point enumeration, EIO/ENOSPC at every operation), and Cargo cannot enable a feature of a
//! package for its own integration tests without a self-dependency, which it refuses. It is also
//! useful to applications: `OpenOptions::storage` takes any [`storage::Storage`], so an
//! application can run its own crash tests against quiverdb with [`fault::FaultStorage`]. It has no
//! effect unless passed explicitly; the default is the real file system.

pub mod fault;
pub mod fs;
pub mod mmap;
pub mod storage;
