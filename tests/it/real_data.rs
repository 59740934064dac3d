//! End-to-end checks of the dataset reader and the exact MaxSim kernel.

use quiverdb::dataset::{write_multivectors, Dataset};
use quiverdb::eval::{ndcg_at_k, recall_at_k};
use quiverdb::exact::exact_top_k_batch;
use quiverdb::format::npy;
use quiverdb::synthetic::{generate, CorpusSpec};
use quiverdb::Error;

use crate::common::{scifact_mini, TempDir};

/// Exact MaxSim over scifact-mini must reproduce the shipped exact ground truth (computed
/// independently, in numpy) and its nDCG@10: this proves the reader and the kernel together.
#[test]
fn exact_maxsim_reproduces_scifact_mini_ground_truth() {
    let Some(dir) = scifact_mini() else { return };
    let ds = Dataset::open(&dir).unwrap();
    assert_eq!((ds.docs.len(), ds.queries.len(), ds.docs.dim()), (500, 50, 128));
    let gt = ds.ground_truth.as_ref().expect("ground truth shipped");
    let results = exact_top_k_batch(&ds.queries, &ds.docs, 100).unwrap();
    let (mut r10, mut r100, mut ndcg) = (0.0, 0.0, 0.0);
    for (q, hits) in results.iter().enumerate() {
        let ranked: Vec<u32> = hits.iter().map(|h| h.doc).collect();
        r10 += recall_at_k(&ranked, gt.of(q), 10);
        r100 += recall_at_k(&ranked, gt.of(q), 100);
        ndcg += ndcg_at_k(&ranked, &ds.qrels_of(q as u32), 10);
    }
    let n = results.len() as f64;
    assert!(r10 / n >= 0.999, "recall@10 {}", r10 / n);
    assert!(r100 / n >= 0.995, "recall@100 {}", r100 / n);
    assert!((ndcg / n - 0.9030).abs() < 0.005, "ndcg@10 {}", ndcg / n);
}

/// A generated corpus written in the dataset layout reads back identically.
#[test]
fn dataset_round_trip_through_npy_files() {
    let tmp = TempDir::new("dataset-roundtrip");
    let corpus = generate(&CorpusSpec { n_docs: 30, n_queries: 4, dim: 16, ..CorpusSpec::small() }).unwrap();
    write_multivectors(&tmp.0, "docs", "doc_offsets", &corpus.docs).unwrap();
    write_multivectors(&tmp.0, "queries", "query_offsets", &corpus.queries).unwrap();
    std::fs::write(tmp.0.join("qrels.tsv"), "0\t3\t1\n1\t4\t2\n").unwrap();
    let ds = Dataset::open(&tmp.0).unwrap();
    assert_eq!(ds.docs, corpus.docs);
    assert_eq!(ds.queries, corpus.queries);
    assert_eq!(ds.qrels_of(1), vec![(4, 2.0)]);
    assert!(ds.ground_truth.is_none());

    // Each kind of damage is a Corruption error naming the file.
    std::fs::write(tmp.0.join("qrels.tsv"), "0\t999\t1\n").unwrap();
    assert!(matches!(Dataset::open(&tmp.0), Err(Error::Corruption { ref file, .. }) if file.ends_with("qrels.tsv")));
    std::fs::write(tmp.0.join("qrels.tsv"), "").unwrap();

    let offsets =
        npy::encode(npy::NpyDtype::I64, &[3], &[0i64, 5, 4].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>());
    std::fs::write(tmp.0.join("query_offsets.npy"), offsets).unwrap();
    let err = Dataset::open(&tmp.0).unwrap_err();
    assert!(matches!(err, Error::Corruption { ref file, .. } if file.ends_with("query_offsets.npy")), "{err}");

    let docs = std::fs::read(tmp.0.join("docs.npy")).unwrap();
    std::fs::write(tmp.0.join("docs.npy"), &docs[..docs.len() - 3]).unwrap();
    let err = Dataset::open(&tmp.0).unwrap_err();
    assert!(matches!(err, Error::Corruption { ref file, .. } if file.ends_with("docs.npy")), "{err}");

    std::fs::remove_file(tmp.0.join("docs.npy")).unwrap();
    assert!(matches!(Dataset::open(&tmp.0), Err(Error::Io { .. })));
    assert!(matches!(Dataset::open(tmp.0.join("missing")), Err(Error::Io { .. })));
}
