//! The token codec and the staged search: residual collections end to end, merges that keep
//! residual codes, damaged codec sections reported as corruption, the inverted lists for short
//! queries, and the parameters refused at create time.

use quiverdb::exact::exact_top_k;
use quiverdb::segment::SegmentReader;
use quiverdb::synthetic::{generate, CorpusSpec};
use quiverdb::{
    Collection, CollectionOptions, Durability, Error, NewDocument, OpenOptions, SearchParams, TokenStorage,
};

use crate::common::TempDir;

fn quiet() -> OpenOptions {
    OpenOptions { durability: Some(Durability::None), background: false, ..Default::default() }
}

fn corpus(n: usize, query_tokens: usize, seed: u64) -> quiverdb::synthetic::Corpus {
    generate(&CorpusSpec {
        n_docs: n,
        n_queries: 20,
        seed,
        min_doc_tokens: 20,
        max_doc_tokens: 40,
        query_tokens,
        ..CorpusSpec::small()
    })
    .unwrap()
}

fn load(c: &Collection, docs: &quiverdb::dataset::MultiVectors, from: usize, to: usize) {
    let batch: Vec<NewDocument> = (from..to)
        .map(|i| NewDocument { id: i as u64, tokens: docs.get(i).as_slice(), payload: Some(b"{\"p\":1}") })
        .collect();
    c.insert_batch(&batch).unwrap();
}

fn overlap(a: &[u64], b: &[u64]) -> f64 {
    a.iter().filter(|x| b.contains(x)).count() as f64 / b.len().max(1) as f64
}

/// Recall@10 of the collection's default search against exact MaxSim over the original vectors.
fn recall(c: &Collection, corpus: &quiverdb::synthetic::Corpus, params: &SearchParams) -> f64 {
    let mut total = 0.0;
    for q in 0..corpus.queries.len() {
        let query = corpus.queries.get(q);
        let truth: Vec<u64> = exact_top_k(&query, &corpus.docs, 10).unwrap().iter().map(|s| s.doc as u64).collect();
        let hits: Vec<u64> = c.search(query.as_slice(), params).unwrap().iter().map(|h| h.id).collect();
        total += overlap(&hits, &truth);
    }
    total / corpus.queries.len() as f64
}

#[test]
fn residual_collections_store_search_reopen_and_decode_close_to_the_originals() {
    let data = corpus(600, 16, 7);
    let dim = data.docs.dim();
    for (storage, min_recall, min_cosine) in [
        (TokenStorage::Residual1, 0.6, 0.80),
        (TokenStorage::Residual2, 0.75, 0.93),
        (TokenStorage::Residual4, 0.85, 0.98),
    ] {
        let tmp = TempDir::new(&format!("codec-{}", storage.name()));
        let path = tmp.0.join("c");
        let mut options = CollectionOptions::new(dim as u32);
        options.storage = storage;
        let c = Collection::create(&path, options, quiet()).unwrap();
        load(&c, &data.docs, 0, 600);
        c.flush().unwrap();
        let stats = c.stats().unwrap();
        assert!(stats.segments.iter().all(|s| s.storage == storage.name() && s.token_centroids >= 16));
        let code_bytes = 2.0 + (dim * storage.residual_bits() as usize / 8) as f64;
        assert!(stats.bytes_per_token > code_bytes, "{} counts every token byte", stats.bytes_per_token);
        let r = recall(&c, &data, &SearchParams::new(10));
        assert!(r >= min_recall, "{}: recall@10 {r} against exact MaxSim on the originals", storage.name());
        // Decoded tokens point the same way as the originals (they were unit vectors).
        let doc = c.get(3).unwrap().unwrap();
        let original = data.docs.get(3);
        for (d, o) in doc.tokens.chunks(dim).zip(original.as_slice().chunks(dim)) {
            let cos: f32 = d.iter().zip(o).map(|(a, b)| a * b).sum();
            assert!(cos > min_cosine, "{}: decoded token at cosine {cos}", storage.name());
        }
        assert_eq!(doc.payload, b"{\"p\":1}");
        let before: Vec<u64> =
            c.search(data.queries.get(0).as_slice(), &SearchParams::new(10)).unwrap().iter().map(|h| h.id).collect();
        c.close().unwrap();
        let c = Collection::open_with(&path, quiet()).unwrap();
        c.verify().unwrap();
        let after: Vec<u64> =
            c.search(data.queries.get(0).as_slice(), &SearchParams::new(10)).unwrap().iter().map(|h| h.id).collect();
        assert_eq!(before, after, "{}: the same results after reopening", storage.name());
    }
}

#[test]
fn merges_keep_residual_codes_exactly_when_the_codebook_is_shared() {
    let data = corpus(900, 16, 8);
    let tmp = TempDir::new("codec-merge");
    let path = tmp.0.join("c");
    let mut options = CollectionOptions::new(data.docs.dim() as u32);
    options.storage = TokenStorage::Residual2;
    // The first flush trains a codebook that is then kept (no retraining while young).
    options.pq_settled_docs = 1;
    let open = OpenOptions {
        merge_policy: quiverdb::compaction::TieredPolicy { merge_factor: 2, ..Default::default() },
        ..quiet()
    };
    let c = Collection::create(&path, options, open).unwrap();
    load(&c, &data.docs, 0, 500);
    c.flush().unwrap();
    load(&c, &data.docs, 500, 900);
    c.flush().unwrap();
    assert_eq!(c.stats().unwrap().segments.len(), 2);
    let before: Vec<Vec<f32>> = [1u64, 600, 899].iter().map(|&id| c.get(id).unwrap().unwrap().tokens).collect();
    let report = c.compact().unwrap();
    assert!(report.merges >= 1, "{report:?}");
    assert_eq!(c.stats().unwrap().segments.len(), 1);
    let after: Vec<Vec<f32>> = [1u64, 600, 899].iter().map(|&id| c.get(id).unwrap().unwrap().tokens).collect();
    assert_eq!(before, after, "decoded values must survive a merge bit for bit");
    c.verify().unwrap();
}

/// The collection's one segment file.
fn only_segment(path: &std::path::Path) -> std::path::PathBuf {
    let dir = path.join("segments");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.retain(|p| p.extension().is_some_and(|e| e == "qseg"));
    assert_eq!(files.len(), 1, "{files:?}");
    files.pop().unwrap()
}

fn section(reader: &SegmentReader, name: &str) -> (u64, u64) {
    let s = reader.sections().into_iter().find(|s| s.kind.name() == name).unwrap_or_else(|| panic!("no {name}"));
    (s.offset, s.length)
}

#[test]
fn damaged_codec_sections_are_corruption_never_a_wrong_score() {
    let data = corpus(300, 16, 9);
    let tmp = TempDir::new("codec-damage");
    let path = tmp.0.join("c");
    let mut options = CollectionOptions::new(data.docs.dim() as u32);
    options.storage = TokenStorage::Residual2;
    let c = Collection::create(&path, options, quiet()).unwrap();
    load(&c, &data.docs, 0, 300);
    c.flush().unwrap();
    c.close().unwrap();
    let file = only_segment(&path);
    let pristine = std::fs::read(&file).unwrap();
    let reader = SegmentReader::open(&file).unwrap();
    let (centroids_at, _) = section(&reader, "token_centroids");
    let (codes_at, codes_len) = section(&reader, "token_codes");
    drop(reader);

    // A flipped centroid value: the codebook's checksum fails at open, naming the section.
    let mut bytes = pristine.clone();
    bytes[centroids_at as usize + 100] ^= 0x40;
    std::fs::write(&file, &bytes).unwrap();
    let err = SegmentReader::open(&file).unwrap_err();
    assert!(matches!(err, Error::Corruption { .. }) && err.to_string().contains("token_centroids"), "{err}");
    assert!(matches!(Collection::open_with(&path, quiet()), Err(Error::Corruption { .. })));

    // Every centroid id of every token beyond the codebook: open succeeds (the codes are not read
    // then), but verify, reads and searches report the damage instead of scoring it.
    let mut bytes = pristine.clone();
    for b in &mut bytes[codes_at as usize..(codes_at + codes_len) as usize] {
        *b = 0xff;
    }
    std::fs::write(&file, &bytes).unwrap();
    let reader = SegmentReader::open(&file).unwrap();
    let err = reader.verify().unwrap_err();
    assert!(err.to_string().contains("token_codes"), "{err}");
    let err = reader.tokens_f32(0).unwrap_err();
    assert!(matches!(err, Error::Corruption { .. }) && err.to_string().contains("token_codes"), "{err}");
    drop(reader);
    let c = Collection::open_with(&path, quiet()).unwrap();
    let err = c.search(data.queries.get(0).as_slice(), &SearchParams::new(5)).unwrap_err();
    assert!(matches!(err, Error::Corruption { .. }) && err.to_string().contains("token_codes"), "{err}");
    assert!(matches!(c.get(0), Err(Error::Corruption { .. })));
}

#[test]
fn inverted_lists_recover_short_queries_the_fde_misses() {
    // 2-token queries over 3,000 documents: the FDE ranks coarsely, so 50 candidates alone
    // miss many answers; the query tokens' centroid lists bring them back.
    let data = corpus(3000, 2, 10);
    let tmp = TempDir::new("codec-probe");
    let c = Collection::create(tmp.0.join("c"), CollectionOptions::new(data.docs.dim() as u32), quiet()).unwrap();
    load(&c, &data.docs, 0, 3000);
    c.flush().unwrap();
    let narrow = SearchParams { candidates: Some(50), probe: Some(0), ..SearchParams::new(10) };
    let probed = SearchParams { candidates: Some(50), probe: Some(8), ..SearchParams::new(10) };
    let without = recall(&c, &data, &narrow);
    let with = recall(&c, &data, &probed);
    assert!(with > without + 0.05 && with >= 0.85, "recall@10 without lists {without}, with {with}");
    let (_, profile) = c.search_profiled(data.queries.get(0).as_slice(), &probed).unwrap();
    assert!(profile.postings_candidates > 0 && profile.cheap_scored > profile.fde_candidates, "{profile:?}");
    // The cheap stage's best plus the FDE guard (a quarter more at most).
    let cap =
        SearchParams::MAX_DEFAULT_EXACT + SearchParams::MAX_DEFAULT_EXACT.div_ceil(SearchParams::FDE_GUARD_DIVISOR);
    assert!(profile.reranked <= cap as u64, "the exact stage stays small: {profile:?}");
}

#[test]
fn codec_parameters_are_checked_at_create_time() {
    let tmp = TempDir::new("codec-params");
    let mut o = CollectionOptions::new(12);
    o.storage = TokenStorage::Residual1; // 12 bits: not whole bytes
    let err = Collection::create(tmp.0.join("a"), o, quiet()).err().expect("refused");
    assert!(matches!(err, Error::InvalidParameter { name: "storage", .. }), "{err}");
    let mut o = CollectionOptions::new(12);
    o.storage = TokenStorage::Residual2;
    assert!(Collection::create(tmp.0.join("b"), o, quiet()).is_ok(), "12 × 2 bits pack");
    let mut o = CollectionOptions::new(16);
    o.storage = TokenStorage::Residual4;
    o.token_codebook = None;
    assert!(matches!(Collection::create(tmp.0.join("c"), o, quiet()), Err(Error::InvalidParameter { .. })));
    let mut o = CollectionOptions::new(16);
    if let Some(b) = o.token_codebook.as_mut() {
        b.centroids = Some(100); // not a multiple of 16
    }
    assert!(matches!(Collection::create(tmp.0.join("d"), o, quiet()), Err(Error::InvalidParameter { .. })));
    let c = Collection::create(tmp.0.join("e"), CollectionOptions::new(16), quiet()).unwrap();
    let q = vec![0.25f32; 16];
    for bad in [
        SearchParams { candidates: Some(0), ..SearchParams::new(5) },
        SearchParams { probe: Some(quiverdb::search::MAX_PROBE + 1), ..SearchParams::new(5) },
    ] {
        assert!(matches!(c.search(&q, &bad), Err(Error::InvalidParameter { .. })));
    }
}

#[test]
fn a_collection_without_token_codebooks_searches_as_before() {
    let data = corpus(400, 16, 11);
    let tmp = TempDir::new("codec-none");
    let mut o = CollectionOptions::new(data.docs.dim() as u32);
    o.token_codebook = None;
    let c = Collection::create(tmp.0.join("c"), o, quiet()).unwrap();
    load(&c, &data.docs, 0, 400);
    c.flush().unwrap();
    assert!(c.stats().unwrap().segments.iter().all(|s| s.token_centroids == 0));
    let (_, profile) = c.search_profiled(data.queries.get(0).as_slice(), &SearchParams::new(10)).unwrap();
    assert_eq!(profile.cheap_scored, 0);
    assert_eq!(profile.reranked, SearchParams::DEFAULT_RERANK as u64, "the FDE candidates are reranked exactly");
    assert!(recall(&c, &data, &SearchParams::new(10)) >= 0.9);
}
