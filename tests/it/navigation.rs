//! The candidate stage's two scorers (`quiverdb::Navigation`): navigating by centroid
//! interaction finds at least what PQ-ADC finds on short documents, large segments of them use it
//! by default and keep their PQ codes out of the resident bytes, damaged centroid ids are
//! corruption, and segments without centroid ids stay on PQ-ADC. (Which segments use it by default
//! is unit-tested on `default_navigation`.)

use quiverdb::exact::exact_top_k;
use quiverdb::segment::SegmentReader;
use quiverdb::synthetic::{generate, Corpus, CorpusSpec};
use quiverdb::{Collection, CollectionOptions, Durability, Error, Navigation, NewDocument, OpenOptions, SearchParams};

use crate::common::TempDir;

fn quiet() -> OpenOptions {
    OpenOptions { durability: Some(Durability::None), background: false, ..Default::default() }
}

/// Short documents (the scale issue's 8-24 tokens) with 12-token queries.
fn short_docs(n: usize, seed: u64) -> Corpus {
    generate(&CorpusSpec {
        n_docs: n,
        n_queries: 30,
        seed,
        min_doc_tokens: 8,
        max_doc_tokens: 24,
        query_tokens: 12,
        ..CorpusSpec::small()
    })
    .unwrap()
}

/// A collection of `data` flushed in segments of `per_segment` documents, each with a graph.
fn build(name: &str, data: &Corpus, per_segment: usize, token_codebook: bool) -> (TempDir, Collection) {
    let tmp = TempDir::new(name);
    let mut options = CollectionOptions::new(data.docs.dim() as u32);
    options.graph.min_docs = 1;
    if !token_codebook {
        options.token_codebook = None;
    }
    let c = Collection::create(tmp.0.join("c"), options, quiet()).unwrap();
    for start in (0..data.docs.len()).step_by(per_segment) {
        let end = (start + per_segment).min(data.docs.len());
        let batch: Vec<NewDocument> = (start..end)
            .map(|i| NewDocument { id: i as u64, tokens: data.docs.get(i).as_slice(), payload: None })
            .collect();
        c.insert_batch(&batch).unwrap();
        c.flush().unwrap();
    }
    (tmp, c)
}

fn segment_files(c: &Collection) -> Vec<std::path::PathBuf> {
    segment_files_at(c.path())
}

fn segment_files_at(path: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(path.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "qseg"))
        .collect();
    files.sort();
    files
}

/// A closed one-segment collection of short documents, its path, its segment file, and the
/// (offset, length) of the section named `section` in it, for damage tests.
fn closed_with_section(
    name: &str,
    data: &Corpus,
    section: &str,
) -> (TempDir, std::path::PathBuf, std::path::PathBuf, (usize, usize)) {
    let (tmp, c) = build(name, data, data.docs.len(), true);
    let path = c.path().to_path_buf();
    c.close().unwrap();
    let file = segment_files_at(&path).pop().unwrap();
    let reader = SegmentReader::open(&file).unwrap();
    let entry = reader.sections().into_iter().find(|s| s.kind.name() == section).unwrap();
    (tmp, path, file, (entry.offset as usize, entry.length as usize))
}

/// Recall@10 against exact MaxSim over the original vectors.
fn recall(c: &Collection, data: &Corpus, params: &SearchParams) -> f64 {
    let mut total = 0.0;
    for q in 0..data.queries.len() {
        let query = data.queries.get(q);
        let truth: Vec<u64> = exact_top_k(&query, &data.docs, 10).unwrap().iter().map(|s| s.doc as u64).collect();
        let hits: Vec<u64> = c.search(query.as_slice(), params).unwrap().iter().map(|h| h.id).collect();
        total += hits.iter().filter(|h| truth.contains(h)).count() as f64 / truth.len() as f64;
    }
    total / data.queries.len() as f64
}

#[test]
fn short_documents_navigate_by_centroid_interaction_and_find_at_least_what_pq_finds() {
    let data = short_docs(3000, 21);
    let (_tmp, c) = build("nav-short", &data, 3000, true);
    let files = segment_files(&c);
    assert_eq!(files.len(), 1);
    let reader = SegmentReader::open(&files[0]).unwrap();
    assert!(reader.graph().is_some());
    assert_eq!(Navigation::for_segment(&reader, None), Navigation::Pq, "small segments keep PQ by default");
    assert_eq!(Navigation::for_segment(&reader, Some(Navigation::Centroids)), Navigation::Centroids);

    // Candidates few relative to the corpus, no inverted lists: the navigation score decides.
    let params = |nav: Option<Navigation>| SearchParams {
        candidates: Some(60),
        probe: Some(0),
        navigation: nav,
        ..SearchParams::new(10)
    };
    let by_default = recall(&c, &data, &params(None));
    let by_centroids = recall(&c, &data, &params(Some(Navigation::Centroids)));
    let by_pq = recall(&c, &data, &params(Some(Navigation::Pq)));
    assert_eq!(by_default, by_pq, "the default is PQ-ADC here");
    assert!(by_centroids >= 0.9 && by_centroids + 0.02 >= by_pq, "centroids {by_centroids}, PQ {by_pq}");

    // Centroid-navigated candidates arrive scored: the cheap stage scores nothing more without
    // inverted lists, and no FDE guard joins the exact stage beyond its budget.
    let query = data.queries.get(0);
    let wider = SearchParams { candidates: Some(100), ..params(Some(Navigation::Centroids)) };
    let (_, profile) = c.search_profiled(query.as_slice(), &wider).unwrap();
    assert!(profile.distance_computations >= 100 && profile.fde_candidates == 100, "{profile:?}");
    assert_eq!(profile.cheap_scored, 0, "{profile:?}");
    assert_eq!(profile.reranked, 64, "the default exact budget for 12-token queries: {profile:?}");
    let (_, profile) = c.search_profiled(query.as_slice(), &params(Some(Navigation::Pq))).unwrap();
    assert_eq!(profile.cheap_scored, profile.fde_candidates, "{profile:?}");
}

#[test]
fn resident_bytes_count_centroid_ids_not_pq_codes_where_segments_navigate_by_them() {
    // One segment just large enough to navigate by centroids by default, of small tokens and a
    // small FDE so that it builds quickly.
    let n = quiverdb::search::CENTROID_NAVIGATION_MIN_DOCS as usize;
    let data = generate(&CorpusSpec {
        n_docs: n,
        n_queries: 1,
        dim: 16,
        seed: 22,
        min_doc_tokens: 8,
        max_doc_tokens: 24,
        query_tokens: 8,
    })
    .unwrap();
    let tmp = TempDir::new("nav-ram");
    let mut options = crate::collection::small_options(quiverdb::TokenStorage::F16, 1);
    options.token_codebook = CollectionOptions::new(16).token_codebook;
    let c = Collection::create(tmp.0.join("c"), options, quiet()).unwrap();
    let batch: Vec<NewDocument> =
        (0..n).map(|i| NewDocument { id: i as u64, tokens: data.docs.get(i).as_slice(), payload: None }).collect();
    c.insert_batch(&batch).unwrap();
    c.flush().unwrap();
    let reader = SegmentReader::open(&segment_files(&c)[0]).unwrap();
    assert_eq!(Navigation::for_segment(&reader, None), Navigation::Centroids);
    let book = reader.token_codebook().unwrap().resident_bytes();
    let docs = n as u64;
    // Token codebook, centroid ids, offsets and ids, the live bitset; no PQ codes.
    let navigated = book + 2 * reader.token_rows() + 16 * (docs + 1) + docs / 8;
    assert!(2 * reader.token_rows() < docs * reader.pq_subspaces() as u64, "under the PQ codes");
    // The writer holds the decoded PQ codebook (it encodes what it flushes) ...
    // (one copy, the one its flush trained, which has encoded and so holds its encoding layout too).
    let pq = reader.pq_codebook().unwrap();
    let decoded_book = pq.resident_bytes() as u64;
    pq.encode(&vec![0.0; pq.dim()], &mut vec![0u8; pq.subspaces()]).unwrap();
    assert!(pq.resident_bytes() as u64 > decoded_book, "encoding builds its own layout");
    assert_eq!(c.stats().unwrap().ram_bytes, navigated + pq.resident_bytes() as u64);
    // ... a reader only once something needs it: a PQ-ADC search.
    let read_only = quiverdb::CollectionReader::open(c.path()).unwrap();
    assert_eq!(read_only.stats().unwrap().ram_bytes, navigated);
    read_only.search(data.queries.get(0).as_slice(), &SearchParams::new(5)).unwrap();
    assert_eq!(read_only.stats().unwrap().ram_bytes, navigated, "centroid navigation needs no codebook");
    let pq = SearchParams { navigation: Some(Navigation::Pq), ..SearchParams::new(5) };
    read_only.search(data.queries.get(0).as_slice(), &pq).unwrap();
    assert_eq!(read_only.stats().unwrap().ram_bytes, navigated + decoded_book, "a reader never encodes");
}

#[test]
fn damaged_centroid_ids_in_a_navigated_segment_are_corruption_never_a_wrong_score() {
    let data = short_docs(800, 23);
    let (_tmp, path, file, (at, len)) = closed_with_section("nav-damage", &data, "token_codes");
    let mut bytes = std::fs::read(&file).unwrap();
    for b in &mut bytes[at..at + len] {
        *b = 0xff;
    }
    std::fs::write(&file, &bytes).unwrap();
    let c = Collection::open_with(&path, quiet()).unwrap();
    for nav in [Some(Navigation::Centroids), Some(Navigation::Pq)] {
        let params = SearchParams { navigation: nav, probe: Some(0), ..SearchParams::new(5) };
        let err = c.search(data.queries.get(0).as_slice(), &params).unwrap_err();
        assert!(matches!(err, Error::Corruption { .. }) && err.to_string().contains("token_codes"), "{err}");
    }
}

#[test]
fn segments_without_centroid_ids_or_a_graph_stay_on_pq() {
    let data = short_docs(500, 24);
    let (_tmp, c) = build("nav-none", &data, 500, false);
    let reader = SegmentReader::open(&segment_files(&c)[0]).unwrap();
    assert!(!reader.has_token_centroid_ids());
    assert_eq!(Navigation::for_segment(&reader, Some(Navigation::Centroids)), Navigation::Pq, "nothing to read");
    let params = SearchParams { navigation: Some(Navigation::Centroids), ..SearchParams::new(10) };
    assert!(recall(&c, &data, &params) >= 0.9, "searched by PQ-ADC as before");

    // A collection with the default graph threshold: its small segment has no graph and is scanned
    // by PQ-ADC by default, by centroid interaction on request.
    let tmp = TempDir::new("nav-flat");
    let c = Collection::create(tmp.0.join("c"), CollectionOptions::new(data.docs.dim() as u32), quiet()).unwrap();
    let batch: Vec<NewDocument> =
        (0..500).map(|i| NewDocument { id: i as u64, tokens: data.docs.get(i).as_slice(), payload: None }).collect();
    c.insert_batch(&batch).unwrap();
    c.flush().unwrap();
    let reader = SegmentReader::open(&segment_files(&c)[0]).unwrap();
    assert!(reader.graph().is_none());
    assert_eq!(Navigation::for_segment(&reader, None), Navigation::Pq);
    assert_eq!(Navigation::for_segment(&reader, Some(Navigation::Centroids)), Navigation::Centroids);
    let scanned = SearchParams { navigation: Some(Navigation::Centroids), probe: Some(0), ..SearchParams::new(10) };
    assert!(recall(&c, &data, &scanned) >= 0.9);
    let (_, profile) = c.search_profiled(data.queries.get(0).as_slice(), &scanned).unwrap();
    assert_eq!(profile.distance_computations, 500, "every document scored once: {profile:?}");
}

#[test]
fn a_damaged_pq_codebook_is_reported_when_first_used_and_never_used() {
    let data = short_docs(800, 25);
    let (_tmp, path, file, (at, _)) = closed_with_section("nav-pq-damage", &data, "pq_codebook");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[at + 4096] ^= 0x10;
    std::fs::write(&file, &bytes).unwrap();

    // Opening decodes no PQ codebook, and centroid navigation never needs one.
    let reader = quiverdb::CollectionReader::open(&path).unwrap();
    let query = data.queries.get(0);
    let centroids = SearchParams { navigation: Some(Navigation::Centroids), ..SearchParams::new(5) };
    let hits = reader.search(query.as_slice(), &centroids).unwrap();
    assert_eq!(hits.len(), 5);
    // PQ-ADC needs it: the damage is reported, naming the section.
    let pq = SearchParams { navigation: Some(Navigation::Pq), ..SearchParams::new(5) };
    let err = reader.search(query.as_slice(), &pq).unwrap_err();
    assert!(matches!(err, Error::Corruption { .. }) && err.to_string().contains("pq_codebook"), "{err}");
    let err = SegmentReader::open(&file).unwrap().verify().unwrap_err();
    assert!(err.to_string().contains("pq_codebook"), "{err}");
}
