//! Compatibility fixtures: every build must read every format version it claims to
//! (storage-format.md, "Versioning"). `tests/compat/vN/` holds one file per version, written by the
//! build that introduced it and never rewritten; `QUIVERDB_WRITE_FIXTURES=1 cargo test --test it
//! fixtures` regenerates only the current version's fixture.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use quiverdb::encode::pq::PqParams;
use quiverdb::format::segment::FORMAT_VERSION;
use quiverdb::graph::VamanaParams;
use quiverdb::segment::{Document, GraphConfig, PqSource, SegmentConfig, SegmentReader, SegmentWriter};
use quiverdb::{DocTokens, FdeEncoder, FdeParams, Projection, TokenMatrix, TokenStorage};

fn compat(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat").join(path)
}

const A: [f32; 8] = [0.5, -0.5, 0.25, 0.0, 0.1, 0.2, 0.3, 0.4];
const B: [f32; 4] = [1.0, 0.0, 0.0, 0.0];

/// The fixtures' 4-dimensional FDE encoder and PQ training parameters.
fn tiny_encoder_and_pq() -> (Arc<FdeEncoder>, PqSource) {
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
    (encoder, PqSource::Train(PqParams { subspaces: 2, iterations: 2, max_training_vectors: 8, seed: 1 }))
}

/// Two documents (ids 10 and 11, f16 tokens A and B, a payload on the first), written with
/// the current format; with a graph over them.
fn write_current(path: &Path) {
    let (encoder, pq) = tiny_encoder_and_pq();
    let graph = GraphConfig {
        params: VamanaParams { max_degree: 2, build_list: 4, ..VamanaParams::default() },
        build_dim: 4,
        min_docs: 1,
    };
    let config = SegmentConfig {
        segment_id: 1,
        storage: TokenStorage::F16,
        pq,
        graph: Some(graph),
        tokens: None,
        base_graph: None,
        fields: Vec::new(),
    };
    let mut w = SegmentWriter::create(path, encoder, config).unwrap();
    w.add_batch(&[
        Document { id: 10, tokens: TokenMatrix::new(&A, 4).unwrap(), payload: Some(b"{\"t\":1}") },
        Document { id: 11, tokens: TokenMatrix::new(&B, 4).unwrap(), payload: None },
    ])
    .unwrap();
    w.finish().unwrap();
}

fn check_two_docs(reader: &SegmentReader) {
    reader.verify().unwrap();
    assert_eq!(reader.doc_ids(), &[10, 11]);
    assert_eq!(reader.payload(0), b"{\"t\":1}");
    assert_eq!(reader.payload(1), b"");
    assert!(matches!(reader.tokens(1), DocTokens::F16(_)), "f16 storage");
    assert_eq!(reader.tokens(1).to_f32_vec().unwrap(), B);
}

#[test]
fn format_v1_segment_still_reads() {
    let reader = SegmentReader::open(&compat("v1/two_docs.qseg")).expect("the v1 fixture opens with this build");
    assert_eq!(reader.format_version(), 1);
    assert!(reader.graph().is_none());
    check_two_docs(&reader);
}

#[test]
fn format_v2_segment_still_reads() {
    let path = compat("v2/two_docs_graph.qseg");
    if std::env::var_os("QUIVERDB_WRITE_FIXTURES").is_some() && FORMAT_VERSION == 2 {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let _ = std::fs::remove_file(&path);
        write_current(&path);
    }
    let reader = SegmentReader::open(&path).expect("the v2 fixture opens with this build");
    assert_eq!(reader.format_version(), 2);
    check_two_docs(&reader);
    let graph = reader.graph().expect("the v2 fixture has a graph");
    let mut neighbors = Vec::new();
    quiverdb::graph::Neighbors::neighbors_into(&graph, 0, &mut neighbors).unwrap();
    assert_eq!(neighbors, vec![1]);
}

/// Format 3: the same two documents stored as residual2 with a token codebook, centroid ids and
/// inverted lists.
fn write_v3(path: &Path) {
    let (encoder, pq) = tiny_encoder_and_pq();
    let training: Vec<f32> = A.iter().chain(&B).copied().collect();
    let book = quiverdb::encode::codec::TokenCodebook::train(
        &training,
        4,
        2,
        &quiverdb::TokenCodebookParams { centroids: Some(16), ..Default::default() },
    )
    .unwrap();
    let config = SegmentConfig {
        segment_id: 1,
        storage: TokenStorage::Residual2,
        pq,
        graph: None,
        tokens: Some(Arc::new(book)),
        base_graph: None,
        fields: Vec::new(),
    };
    let mut w = SegmentWriter::create(path, encoder, config).unwrap();
    w.add_batch(&[
        Document { id: 10, tokens: TokenMatrix::new(&A, 4).unwrap(), payload: Some(b"{\"t\":1}") },
        Document { id: 11, tokens: TokenMatrix::new(&B, 4).unwrap(), payload: None },
    ])
    .unwrap();
    w.finish().unwrap();
}

#[test]
fn format_v3_residual_segment_still_reads() {
    let path = compat("v3/two_docs_residual2.qseg");
    if std::env::var_os("QUIVERDB_WRITE_FIXTURES").is_some() && FORMAT_VERSION == 3 {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let _ = std::fs::remove_file(&path);
        write_v3(&path);
    }
    let reader = SegmentReader::open(&path).expect("the v3 fixture opens with this build");
    reader.verify().unwrap();
    assert_eq!(reader.format_version(), 3);
    assert_eq!(reader.storage(), TokenStorage::Residual2);
    assert_eq!(reader.doc_ids(), &[10, 11]);
    assert_eq!(reader.payload(0), b"{\"t\":1}");
    let book = reader.token_codebook().expect("a token codebook");
    assert_eq!((book.centroid_count(), book.bits()), (16, 2));
    assert!(matches!(reader.tokens(1), DocTokens::Residual(_)));
    // B is one of the training points and gets its own centroid: it decodes to itself.
    let b = reader.tokens_f32(1).unwrap();
    assert!(b.iter().zip(&B).all(|(x, y)| (x - y).abs() < 1e-6), "{b:?}");
    assert_eq!(reader.token_centroid_ids(0).unwrap().len(), 2);
    let listed: usize = (0..16u16).map(|c| reader.postings(c).len()).sum();
    assert!((2..=3).contains(&listed), "each document in the lists of its distinct centroids");
}
