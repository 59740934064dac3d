//! Arbitrary bytes as a token-codebook section (the segment's `token_centroids`, also the
//! catalog's `t` record), then arbitrary centroid ids and residual codes decoded and scored with
//! it: values or errors, never a panic (see `quiverdb::testing::token_codebook_bytes`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(bug) = quiverdb::testing::token_codebook_bytes(data) {
        panic!("{bug}");
    }
});
