//! Regenerates committed fixtures when asked: `QUIVERDB_WRITE_FIXTURES=1 cargo test --test it fixtures`.
//! Otherwise checks that the committed format-v1 segment still opens and reads back exactly: every
//! build must read every format version it claims to (storage-format.md, "Versioning").

use std::path::Path;
use std::sync::Arc;

use quiverdb::encode::pq::PqParams;
use quiverdb::segment::{Document, PqSource, SegmentConfig, SegmentReader, SegmentWriter};
use quiverdb::{FdeEncoder, FdeParams, Projection, TokenMatrix, TokenStorage};

fn seed_segment(path: &Path) {
    let params = FdeParams {
        dim: 4,
        k_sim: 1,
        projection: Projection::CountSketch { d_proj: 2 },
        r_reps: 1,
        fill_empty: true,
        final_dim: None,
        seed: 1,
    };
    let encoder = Arc::new(FdeEncoder::new(params).unwrap());
    let pq = PqSource::Train(PqParams { subspaces: 2, iterations: 2, max_training_vectors: 8, seed: 1 });
    let mut w =
        SegmentWriter::create(path, encoder, SegmentConfig { segment_id: 1, storage: TokenStorage::F16, pq }).unwrap();
    let a = [0.5f32, -0.5, 0.25, 0.0, 0.1, 0.2, 0.3, 0.4];
    let b = [1.0f32, 0.0, 0.0, 0.0];
    w.add_batch(&[
        Document { id: 10, tokens: TokenMatrix::new(&a, 4).unwrap(), payload: Some(b"{\"t\":1}") },
        Document { id: 11, tokens: TokenMatrix::new(&b, 4).unwrap(), payload: None },
    ])
    .unwrap();
    w.finish().unwrap();
}

#[test]
fn format_v1_segment_still_reads() {
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat/v1/two_docs.qseg");
    if std::env::var_os("QUIVERDB_WRITE_FIXTURES").is_some() {
        let _ = std::fs::remove_file(&committed);
        seed_segment(&committed);
    }
    let reader = SegmentReader::open(&committed).expect("the committed v1 segment opens with this build");
    reader.verify().unwrap();
    assert_eq!(reader.doc_ids(), &[10, 11]);
    assert_eq!(reader.payload(0), b"{\"t\":1}");
}
