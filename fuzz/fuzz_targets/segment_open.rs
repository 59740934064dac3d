//! Arbitrary bytes as a segment file: opening, verifying and reading every document must return
//! values or a `Corruption` error, never panic or read out of bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quiverdb::segment::SegmentReader;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("quiverdb-fuzz-segment-{}", std::process::id()));
    std::fs::write(&path, data).unwrap();
    if let Ok(reader) = SegmentReader::open(&path) {
        let _ = reader.verify();
        let _ = reader.pq_codebook();
        for i in 0..reader.doc_count() {
            let _ = (reader.tokens(i), reader.payload(i), reader.pq_code(i), reader.doc_ids()[i]);
        }
    }
});
