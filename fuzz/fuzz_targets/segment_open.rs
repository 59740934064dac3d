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
            let _ = reader.tokens_f32(i);
            let _ = reader.token_centroid_ids(i);
        }
        if let Some(book) = reader.token_codebook() {
            let table = book.interaction_table(&vec![0.5f32; reader.dim() * 3]);
            for c in 0..book.centroid_count().min(64) {
                for &o in reader.postings(c as u16).iter().take(16) {
                    if let Some(ids) = reader.token_centroid_ids(o as usize % reader.doc_count()) {
                        let _ = table.score(ids);
                    }
                }
            }
        }
    }
});
