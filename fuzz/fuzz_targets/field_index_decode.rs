//! Arbitrary bytes as a segment's `field_index` section (the indexed payload fields' columns), then
//! filters evaluated on what decodes: an index or an error, never a panic, and never an ordinal
//! beyond the segment (see `quiverdb::testing::field_index_bytes`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(bug) = quiverdb::testing::field_index_bytes(data) {
        panic!("{bug}");
    }
});
