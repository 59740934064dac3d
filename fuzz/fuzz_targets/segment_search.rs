//! Arbitrary bytes as a segment file, opened, verified, read and searched (graph or scan, then
//! exact rerank): values or errors, never a panic (see `quiverdb::testing::segment_bytes`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("quiverdb-fuzz-segsearch-{}.qseg", std::process::id()));
    if let Err(bug) = quiverdb::testing::segment_bytes(&path, data) {
        panic!("{bug}");
    }
});
