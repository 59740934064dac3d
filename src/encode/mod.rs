//! Pure math, no I/O: MUVERA fixed dimensional encodings, exact MaxSim, token storage types,
//! the pinned random generator, and the SIMD kernels they share.

pub mod codec;
pub mod fde;
pub mod maxsim;
pub mod pq;
pub mod rng;
pub mod simd;
pub mod storage;
pub mod tokens;
