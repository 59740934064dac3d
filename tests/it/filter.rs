//! Filtered search end to end: indexed payload fields through flushes, compaction, upserts,
//! deletes and reopen, against brute-force exact MaxSim over the documents that pass.

use std::collections::{BTreeMap, HashSet};

use quiverdb::encode::maxsim::{DocTokens, MaxSimQuery};
use quiverdb::synthetic::{generate, CorpusSpec};
use quiverdb::{
    Collection, Durability, Error, FieldKind, Filter, IndexedField, NewDocument, SearchParams, TokenMatrix,
    TokenStorage,
};

use crate::collection::{manual_open, small_options, DIM};
use crate::common::TempDir;

fn fields() -> Vec<IndexedField> {
    vec![
        IndexedField::new("tenant", FieldKind::Keyword),
        IndexedField::new("bucket", FieldKind::Integer),
        IndexedField::new("score", FieldKind::Float),
        IndexedField::new("open", FieldKind::Bool),
        IndexedField::new("tags", FieldKind::Keyword),
    ]
}

fn payload(i: u64) -> Vec<u8> {
    serde_json::json!({
        "tenant": format!("t{}", i % 100),
        "bucket": (i * 7919) % 1000,
        "score": ((i * 31) % 200) as f64 / 100.0 - 1.0,
        "open": i.is_multiple_of(3),
        "tags": if i.is_multiple_of(2) { vec!["even", "x"] } else { vec!["odd"] },
        "title": format!("document {i}"),
    })
    .to_string()
    .into_bytes()
}

fn segment_files(collection: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(collection.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty());
    files
}

const FILTERS: &[&str] = &[
    r#"{"field":"bucket","lt":500}"#,
    r#"{"field":"bucket","lt":100}"#,
    r#"{"field":"bucket","lt":10}"#,
    r#"{"field":"bucket","eq":3}"#,
    r#"{"field":"tenant","eq":"t7"}"#,
    r#"{"and":[{"field":"open","eq":true},{"field":"score","gte":0}]}"#,
    r#"{"or":[{"field":"tags","eq":"odd"},{"field":"tenant","in":["t1","t2"]}]}"#,
    r#"{"not":{"field":"tags","eq":"x"}}"#,
    r#"{"ids":[5,17,2999,123456]}"#,
];

struct Model {
    docs: BTreeMap<u64, (Vec<f32>, Vec<u8>)>,
}

impl Model {
    fn exact(&self, query: &[f32], filter: &Filter, k: usize) -> Vec<u64> {
        let bound = filter.bind(&fields()).unwrap();
        let q = MaxSimQuery::new(&TokenMatrix::new(query, DIM).unwrap());
        let mut scored: Vec<(f32, u64)> = self
            .docs
            .iter()
            .filter(|(id, (_, p))| bound.matches_payload(**id, p))
            .map(|(id, (t, _))| (q.score(DocTokens::F32(t)).unwrap(), *id))
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        scored.into_iter().take(k).map(|s| s.1).collect()
    }
}

/// Mean recall@10 of filtered search against the model over `queries`, checking that every hit
/// passes the filter.
fn filtered_recall(c: &Collection, model: &Model, queries: &[Vec<f32>], text: &str) -> f64 {
    let filter = Filter::from_json(text).unwrap();
    let bound = filter.bind(&fields()).unwrap();
    let mut sum = 0.0;
    for q in queries {
        // Deep enough that the unfiltered search finds nearly everything in this small, noisy
        // configuration: the test is about what the filter does to it.
        let params = SearchParams {
            filter: Some(filter.clone()),
            with_payload: true,
            candidates: Some(600),
            rerank: Some(150),
            ..SearchParams::new(10)
        };
        let hits = c.search(q, &params).unwrap();
        for h in &hits {
            assert!(
                bound.matches_payload(h.id, h.payload.as_deref().unwrap_or(&[])),
                "{text}: hit {} does not pass",
                h.id
            );
        }
        let want = model.exact(q, &filter, 10);
        if want.is_empty() {
            assert!(hits.is_empty(), "{text}: hits where none pass");
            sum += 1.0;
            continue;
        }
        let got: HashSet<u64> = hits.iter().map(|h| h.id).collect();
        sum += want.iter().filter(|id| got.contains(id)).count() as f64 / want.len() as f64;
    }
    sum / queries.len() as f64
}

/// Every filter's recall against exact filtered MaxSim: selective filters (the scan of the passing
/// documents' codes) find the exact answer; broad ones (the graph, walked through the others) lose
/// no more than 0.05 against the same search unfiltered. (This small 16-dimensional setting is
/// hard for the FDE: unfiltered recall@10 is about 0.8 here.)
fn check_recall(c: &Collection, model: &Model, queries: &[Vec<f32>], when: &str) {
    let unfiltered = filtered_recall(c, model, queries, r#"{"not":{"ids":[]}}"#);
    for (i, text) in FILTERS.iter().enumerate() {
        let r = filtered_recall(c, model, queries, text);
        let selective = (1..=5).contains(&i) || i == 8;
        let floor = if selective { 0.95 } else { unfiltered - 0.05 };
        assert!(r >= floor, "{when} {text}: recall@10 {r}, unfiltered {unfiltered}");
    }
}

#[test]
fn filtered_search_matches_exact_filtered_maxsim_through_flushes_compaction_and_reopen() {
    let dir = TempDir::new("filter-e2e");
    let path = dir.0.join("c");
    let mut options = small_options(TokenStorage::F16, 256);
    options.indexed_fields = fields();
    let corpus = generate(&CorpusSpec {
        n_docs: 3000,
        n_queries: 12,
        dim: DIM,
        min_doc_tokens: 2,
        max_doc_tokens: 8,
        query_tokens: 4,
        seed: 11,
    })
    .unwrap();
    let c = Collection::create(&path, options, manual_open(Durability::None)).unwrap();
    let mut model = Model { docs: BTreeMap::new() };
    // Three flushed segments of 900 (with graphs), 300 documents left in the memtable.
    for (i, d) in corpus.docs.iter().enumerate() {
        let id = i as u64;
        let p = payload(id);
        c.insert(id, d.as_slice(), Some(&p)).unwrap();
        model.docs.insert(id, (d.as_slice().to_vec(), p));
        if (i + 1) % 900 == 0 {
            c.flush().unwrap();
        }
    }
    let queries: Vec<Vec<f32>> = corpus.queries.iter().map(|q| q.as_slice().to_vec()).collect();
    check_recall(&c, &model, &queries, "");

    // Upserts move documents in and out of a filter; deletes remove them.
    for id in 0..40u64 {
        let p = serde_json::json!({"tenant": "t7", "bucket": 3, "open": true}).to_string().into_bytes();
        let tokens = model.docs[&id].0.clone();
        c.upsert(id, &tokens, Some(&p)).unwrap();
        model.docs.insert(id, (tokens, p));
    }
    for id in 40..60u64 {
        assert!(c.delete(id).unwrap());
        model.docs.remove(&id);
    }
    check_recall(&c, &model, &queries, "after upserts and deletes");

    c.flush().unwrap();
    c.compact().unwrap();
    drop(c);
    let c = Collection::open_with(&path, manual_open(Durability::None)).unwrap();
    check_recall(&c, &model, &queries, "after compaction and reopen");
    let stats = c.search_profiled(
        &queries[0],
        &SearchParams { filter: Some(Filter::from_json(FILTERS[3]).unwrap()), ..SearchParams::new(10) },
    );
    let (_, profile) = stats.unwrap();
    assert!(profile.filter_passing > 0 && profile.filter_flat_segments > 0, "{profile:?}");
    for path in segment_files(&path) {
        let seg = quiverdb::segment::SegmentReader::open(&path).unwrap();
        assert!(seg.field_index().unwrap().is_some(), "every segment carries the field index");
        seg.verify().unwrap();
    }
}

#[test]
fn bad_filters_and_bad_payloads_are_clear_errors() {
    let dir = TempDir::new("filter-errors");
    let mut options = small_options(TokenStorage::F16, 1 << 30);
    options.indexed_fields = fields();
    let c = Collection::create(dir.0.join("c"), options, manual_open(Durability::None)).unwrap();
    let tokens = vec![0.25f32; DIM];
    c.insert(1, &tokens, Some(br#"{"bucket": 5}"#)).unwrap();
    // A wrong kind is refused, and a batch with one is refused whole.
    let e = c.insert(2, &tokens, Some(br#"{"bucket": "five"}"#)).unwrap_err();
    assert!(matches!(e, Error::InvalidInput(_)) && e.to_string().contains("'bucket' is indexed as integer"), "{e}");
    let batch = [
        NewDocument { id: 3, tokens: &tokens, payload: Some(br#"{"open": true}"#) },
        NewDocument { id: 4, tokens: &tokens, payload: Some(br#"{"open": "yes"}"#) },
    ];
    assert!(c.insert_batch(&batch).is_err());
    assert!(!c.contains(3).unwrap());
    // Payloads that are not JSON objects hold no field values, and are accepted.
    c.insert(5, &tokens, Some(b"\x00\x01binary")).unwrap();
    c.insert(6, &tokens, None).unwrap();

    let search = |text: &str| {
        let params = SearchParams { filter: Some(Filter::from_json(text)?), ..SearchParams::new(5) };
        c.search(&tokens, &params)
    };
    let e = search(r#"{"and":[{"field":"bucket","eq":5},{"field":"colour","eq":"red"}]}"#).unwrap_err();
    assert!(e.to_string().contains("filter.and[1]: field 'colour' is not indexed"), "{e}");
    let e = search(r#"{"field":"bucket","eq":"5"}"#).unwrap_err();
    assert!(matches!(e, Error::InvalidInput(_)), "{e}");
    assert!(search(r#"{"field":"bucket"}"#).is_err());
    let hits = search(r#"{"field":"bucket","eq":5}"#).unwrap();
    assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), vec![1]);
    let hits = search(r#"{"not":{"field":"bucket","eq":5}}"#).unwrap();
    assert_eq!(hits.iter().map(|h| h.id).collect::<HashSet<_>>(), HashSet::from([5, 6]));
    // search_ids honours the filter too.
    let params = SearchParams {
        filter: Some(Filter::from_json(r#"{"field":"bucket","eq":5}"#).unwrap()),
        ..SearchParams::new(5)
    };
    let hits = c.search_ids(&tokens, &[1, 5, 6], &params).unwrap();
    assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), vec![1]);
    // A collection without indexed fields refuses field predicates but takes id lists.
    let plain = Collection::create(
        dir.0.join("plain"),
        small_options(TokenStorage::F16, 1 << 30),
        manual_open(Durability::None),
    )
    .unwrap();
    plain.insert(1, &tokens, None).unwrap();
    let params = SearchParams {
        filter: Some(Filter::from_json(r#"{"field":"bucket","eq":5}"#).unwrap()),
        ..SearchParams::new(5)
    };
    assert!(plain.search(&tokens, &params).unwrap_err().to_string().contains("indexed: none"));
    let params = SearchParams { filter: Some(Filter::from_json(r#"{"ids":[1]}"#).unwrap()), ..SearchParams::new(5) };
    assert_eq!(plain.search(&tokens, &params).unwrap().len(), 1);
}

#[test]
fn a_damaged_field_index_is_corruption_naming_the_section() {
    let dir = TempDir::new("filter-damage");
    let path = dir.0.join("c");
    let mut options = small_options(TokenStorage::F16, 1 << 30);
    options.indexed_fields = fields();
    let c = Collection::create(&path, options.clone(), manual_open(Durability::None)).unwrap();
    let tokens = vec![0.25f32; DIM];
    for id in 0..50u64 {
        c.insert(id, &tokens, Some(&payload(id))).unwrap();
    }
    c.flush().unwrap();
    let seg_path = segment_files(&path).remove(0);
    drop(c);
    let seg = quiverdb::segment::SegmentReader::open(&seg_path).unwrap();
    let entry =
        seg.sections().into_iter().find(|s| s.kind == quiverdb::format::segment::SectionKind::FieldIndex).unwrap();
    drop(seg);
    let mut bytes = std::fs::read(&seg_path).unwrap();
    bytes[(entry.offset + entry.length / 2) as usize] ^= 0x40;
    std::fs::write(&seg_path, &bytes).unwrap();
    // Opening does not read the field index; the first filtered search does, and says where.
    let c = Collection::open_with(&path, manual_open(Durability::None)).unwrap();
    assert_eq!(c.search(&tokens, &SearchParams::new(3)).unwrap().len(), 3, "unfiltered search is unaffected");
    let params = SearchParams {
        filter: Some(Filter::from_json(r#"{"field":"bucket","lt":500}"#).unwrap()),
        ..SearchParams::new(3)
    };
    let e = c.search(&tokens, &params).unwrap_err();
    assert!(matches!(e, Error::Corruption { .. }) && e.to_string().contains("field_index"), "{e}");
}

#[test]
fn index_field_covers_documents_already_stored() {
    let dir = TempDir::new("filter-index-field");
    let path = dir.0.join("c");
    let c = Collection::create(&path, small_options(TokenStorage::F16, 256), manual_open(Durability::None)).unwrap();
    let corpus = generate(&CorpusSpec {
        n_docs: 600,
        n_queries: 3,
        dim: DIM,
        min_doc_tokens: 2,
        max_doc_tokens: 6,
        query_tokens: 4,
        seed: 5,
    })
    .unwrap();
    let payload = |i: u64| format!(r#"{{"bucket":{},"tag":"t{}"}}"#, i % 10, i % 3).into_bytes();
    for (i, d) in corpus.docs.iter().enumerate() {
        c.insert(i as u64, d.as_slice(), Some(&payload(i as u64))).unwrap();
        if i == 399 {
            c.flush().unwrap();
        }
    }
    // One document gives `odd` a number: indexing it as a keyword is refused, naming it.
    c.insert(1000, corpus.docs.get(0).as_slice(), Some(br#"{"odd": 5, "bucket": 3}"#)).unwrap();
    let reader_before = quiverdb::CollectionReader::open(&path).unwrap();
    let filter = Filter::from_json(r#"{"field":"bucket","eq":3}"#).unwrap();
    let params = SearchParams { filter: Some(filter), rerank: Some(400), ..SearchParams::new(100) };
    let q = corpus.queries.get(0);
    assert!(c.search(q.as_slice(), &params).unwrap_err().to_string().contains("not indexed"));

    let e = c.index_field(IndexedField::new("odd", FieldKind::Keyword)).unwrap_err();
    assert!(e.to_string().contains("document 1000") && e.to_string().contains("'odd'"), "{e}");
    assert!(c.indexed_fields().is_empty(), "a refused field changes nothing");

    c.index_field(IndexedField::new("bucket", FieldKind::Integer)).unwrap();
    assert!(c.index_field(IndexedField::new("bucket", FieldKind::Integer)).is_err(), "indexed twice");
    let want: HashSet<u64> = (0..600u64).filter(|i| i % 10 == 3).chain([1000]).collect();
    let got = |hits: Vec<quiverdb::Hit>| hits.iter().map(|h| h.id).collect::<HashSet<u64>>();
    assert_eq!(got(c.search(q.as_slice(), &params).unwrap()), want, "segment (payload scan) and memtable");
    // New writes are checked against the new field.
    let e = c.insert(2000, q.as_slice(), Some(br#"{"bucket": "x"}"#)).unwrap_err();
    assert!(e.to_string().contains("'bucket' is indexed as integer"), "{e}");
    // Readers see it at open or refresh.
    assert!(reader_before.search(q.as_slice(), &params).is_err());
    reader_before.refresh().unwrap();
    assert_eq!(got(reader_before.search(q.as_slice(), &params).unwrap()), want);
    assert_eq!(reader_before.indexed_fields(), vec![IndexedField::new("bucket", FieldKind::Integer)]);

    // Durable, and written into segments from then on.
    c.flush().unwrap();
    c.compact().unwrap();
    drop(c);
    let c = Collection::open_with(&path, manual_open(Durability::None)).unwrap();
    assert_eq!(c.indexed_fields(), vec![IndexedField::new("bucket", FieldKind::Integer)]);
    assert_eq!(got(c.search(q.as_slice(), &params).unwrap()), want);
    let newest = segment_files(&path).pop().unwrap();
    let index = quiverdb::segment::SegmentReader::open(&newest).unwrap().field_index().unwrap().unwrap();
    assert_eq!(index.fields(), vec![IndexedField::new("bucket", FieldKind::Integer)]);
}
