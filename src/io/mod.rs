//! The only module that touches files: read-only memory maps ([`mmap`]) and durable publication of
//! new files ([`fs`]). Everything else in the crate works on byte slices.

pub mod fs;
pub mod mmap;
