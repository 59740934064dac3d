//! The candidate stage's two scorers (`quiverdb::Navigation`): segments of short documents with a
//! graph navigate by centroid interaction by default, find at least what PQ-ADC finds, keep their
//! PQ codes out of the resident bytes, and report damaged centroid ids as corruption; segments
//! without centroid ids or without a graph stay on PQ-ADC.

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
    assert_eq!(Navigation::for_segment(&reader, None), Navigation::Centroids);
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
    assert_eq!(Navigation::for_segment(&reader, None), Navigation::Centroids);
    assert_eq!(Navigation::for_segment(&reader, Some(Navigation::Pq)), Navigation::Pq);

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
    assert_eq!(by_default, by_centroids, "the default is centroid interaction here");
    assert!(by_centroids >= 0.9 && by_centroids + 0.02 >= by_pq, "centroids {by_centroids}, PQ {by_pq}");

    // Centroid-navigated candidates arrive scored: the cheap stage scores nothing more without
    // inverted lists, and no FDE guard joins the exact stage beyond its budget.
    let query = data.queries.get(0);
    let wider = SearchParams { candidates: Some(100), ..params(None) };
    let (_, profile) = c.search_profiled(query.as_slice(), &wider).unwrap();
    assert!(profile.distance_computations >= 100 && profile.fde_candidates == 100, "{profile:?}");
    assert_eq!(profile.cheap_scored, 0, "{profile:?}");
    assert_eq!(profile.reranked, 64, "the default exact budget for 12-token queries: {profile:?}");
    let (_, profile) = c.search_profiled(query.as_slice(), &params(Some(Navigation::Pq))).unwrap();
    assert_eq!(profile.cheap_scored, profile.fde_candidates, "{profile:?}");
}

#[test]
fn resident_bytes_count_centroid_ids_not_pq_codes_where_segments_navigate_by_them() {
    let data = short_docs(1200, 22);
    // Two flushes with one codebook (the second reuses the first's): the growth of the resident
    // bytes between them is the second segment's per-document part alone.
    let (_tmp, c) = build("nav-ram", &data, 600, true);
    let first_ram = {
        let tmp = TempDir::new("nav-ram-prefix");
        let mut options = CollectionOptions::new(data.docs.dim() as u32);
        options.graph.min_docs = 1;
        let prefix = Collection::create(tmp.0.join("c"), options, quiet()).unwrap();
        let batch: Vec<NewDocument> = (0..600)
            .map(|i| NewDocument { id: i as u64, tokens: data.docs.get(i).as_slice(), payload: None })
            .collect();
        prefix.insert_batch(&batch).unwrap();
        prefix.flush().unwrap();
        prefix.stats().unwrap().ram_bytes
    };
    let stats = c.stats().unwrap();
    assert_eq!(stats.segments.len(), 2);
    let readers: Vec<SegmentReader> = segment_files(&c).iter().map(|f| SegmentReader::open(f).unwrap()).collect();
    assert!(readers.iter().all(|r| Navigation::for_segment(r, None) == Navigation::Centroids));
    let codebook_crc =
        |r: &SegmentReader| r.sections().into_iter().find(|s| s.kind.name() == "pq_codebook").unwrap().crc;
    assert_eq!(codebook_crc(&readers[0]), codebook_crc(&readers[1]), "the second flush reused the codebook");
    let second = &readers[1];
    let n = second.doc_count() as u64;
    let per_doc_part = stats.ram_bytes - first_ram;
    assert_eq!(per_doc_part, 2 * second.token_rows() + 16 * (n + 1) + n / 8, "ids, offsets, bitset");
    assert!(per_doc_part < n * second.pq_subspaces() as u64, "well under its PQ codes");
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
    for nav in [None, Some(Navigation::Centroids)] {
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
    let hits = reader.search(query.as_slice(), &SearchParams::new(5)).unwrap();
    assert_eq!(hits.len(), 5);
    // PQ-ADC needs it: the damage is reported, naming the section.
    let pq = SearchParams { navigation: Some(Navigation::Pq), ..SearchParams::new(5) };
    let err = reader.search(query.as_slice(), &pq).unwrap_err();
    assert!(matches!(err, Error::Corruption { .. }) && err.to_string().contains("pq_codebook"), "{err}");
    let err = SegmentReader::open(&file).unwrap().verify().unwrap_err();
    assert!(err.to_string().contains("pq_codebook"), "{err}");
}
