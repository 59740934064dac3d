//! Arbitrary bytes as a WAL file: replay returns records or a `Corruption` error, never panics,
//! and two replays of the same bytes agree (see `quiverdb::testing::wal_bytes`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("quiverdb-fuzz-wal-{}", std::process::id()));
    if let Err(bug) = quiverdb::testing::wal_bytes(&dir, data) {
        panic!("{bug}");
    }
});
