//! Structured: the bytes choose an operation sequence (insert, upsert, delete, flush, compact),
//! the storage operation at which the process "crashes" and how the power loss tears files; the
//! reopened collection must hold the acknowledged prefix, pass `verify`, and search exactly like
//! the model (see `quiverdb::testing::collection_ops`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("quiverdb-fuzz-ops-{}", std::process::id()));
    if let Err(bug) = quiverdb::testing::collection_ops(&dir, data) {
        panic!("{bug}");
    }
});
