//! Extreme values at every public parameter of every public call: each call returns `Ok` or a
//! typed error, never panics and never aborts. The story: `quiver search --rerank 1000000000000`
//! died with exit 134 (`memory allocation of 24000000000012 bytes failed` in the beam search),
//! because sizes were checked only for zero and sized buffers directly.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;
use std::time::Duration;

use proptest::prelude::*;
use quiverdb::compaction::TieredPolicy;
use quiverdb::limits::{MAX_DIM, MAX_LIST_SIZE, MAX_RERANK, MAX_TOKENS_PER_QUERY};
use quiverdb::search::MAX_K;
use quiverdb::{
    Collection, CollectionOptions, CollectionReader, Durability, Error, NewDocument, OpenOptions, Projection,
    SearchParams, TokenStorage,
};

use crate::collection::{doc_tokens, small_options, DIM};
use crate::common::TempDir;

/// A collection with a graph segment, a flat segment and memtable documents, shared by the cases.
fn shared() -> &'static (TempDir, Collection) {
    static SHARED: OnceLock<(TempDir, Collection)> = OnceLock::new();
    SHARED.get_or_init(|| {
        let dir = TempDir::new("extremes");
        let open = OpenOptions { background: false, memtable_max_docs: 1 << 20, ..Default::default() };
        let c = Collection::create(dir.0.join("c"), small_options(TokenStorage::F16, 64), open).unwrap();
        for id in 0..100 {
            c.insert(id, &doc_tokens(id, 0), Some(b"{}")).unwrap();
        }
        c.flush().unwrap();
        for id in 100..110 {
            c.insert(id, &doc_tokens(id, 0), None).unwrap();
        }
        c.flush().unwrap();
        for id in 110..115 {
            c.insert(id, &doc_tokens(id, 0), None).unwrap();
        }
        (dir, c)
    })
}

/// Runs `f`, failing the case if it panics; returns its result.
fn no_panic<T>(what: &str, f: impl FnOnce() -> quiverdb::Result<T>) -> quiverdb::Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => panic!("{what} panicked"),
    }
}

fn sizes(limit: usize) -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(0usize),
        Just(1),
        Just(limit.saturating_sub(1)),
        Just(limit),
        Just(limit.saturating_add(1)),
        Just(usize::MAX / 2),
        Just(usize::MAX),
        0usize..2 * limit.max(1),
    ]
}

fn opt_sizes(limit: usize) -> impl Strategy<Value = Option<usize>> {
    prop_oneof![Just(None), sizes(limit).prop_map(Some)]
}

fn floats() -> impl Strategy<Value = f32> {
    prop_oneof![
        Just(f32::NAN),
        Just(f32::INFINITY),
        Just(f32::NEG_INFINITY),
        Just(f32::MAX),
        Just(f32::MIN),
        Just(f32::MIN_POSITIVE),
        Just(0.0),
        Just(-0.0),
        -1.0f32..1.0,
    ]
}

fn search_params() -> impl Strategy<Value = SearchParams> {
    (
        sizes(MAX_K),
        opt_sizes(MAX_RERANK),
        opt_sizes(MAX_LIST_SIZE),
        prop_oneof![Just(None), floats().prop_map(Some)],
        any::<bool>(),
    )
        .prop_map(|(k, rerank, list_size, ball_carving, with_payload)| {
            let mut p = SearchParams::new(k);
            p.rerank = rerank;
            p.list_size = list_size;
            p.ball_carving = ball_carving;
            p.with_payload = with_payload;
            p
        })
}

/// Query shapes: ordinary, ragged, empty, too many tokens, and any extreme value somewhere.
fn query() -> impl Strategy<Value = Vec<f32>> {
    prop_oneof![
        (1usize..8).prop_map(|rows| doc_tokens(rows as u64, 3)[..].iter().cycle().take(rows * DIM).copied().collect()),
        (0usize..3 * DIM).prop_map(|n| vec![0.25; n]),
        Just(vec![0.1; (MAX_TOKENS_PER_QUERY + 1) * DIM]),
        (1usize..4, floats(), any::<prop::sample::Index>()).prop_map(|(rows, v, at)| {
            let mut q = vec![0.5f32; rows * DIM];
            let i = at.index(q.len());
            q[i] = v;
            q
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn search_never_panics(params in search_params(), q in query()) {
        let (_, c) = shared();
        let r = no_panic("search", || c.search(&q, &params));
        let valid_k = (1..=MAX_K).contains(&params.k);
        let valid_rerank = params.rerank.is_none_or(|r| (1..=MAX_RERANK).contains(&r));
        let valid_list = params.list_size.is_none_or(|l| (1..=MAX_LIST_SIZE).contains(&l));
        let valid_carve = params.ball_carving.is_none_or(|t| (-1.0..=1.0).contains(&t));
        let valid_query = !q.is_empty() && q.len() % DIM == 0 && q.len() / DIM <= MAX_TOKENS_PER_QUERY
            && q.iter().all(|v| v.is_finite());
        match r {
            Ok(hits) => {
                prop_assert!(valid_k && valid_rerank && valid_list && valid_carve && valid_query,
                    "accepted invalid input: {:?}", params);
                prop_assert!(hits.len() <= params.k);
            }
            Err(Error::InvalidInput(_)) | Err(Error::InvalidParameter { .. }) => {
                prop_assert!(!(valid_k && valid_rerank && valid_list && valid_carve && valid_query),
                    "refused valid input: {:?}", params);
            }
            Err(other) => prop_assert!(false, "unexpected error kind: {other}"),
        }
        let batch = no_panic("search_batch", || c.search_batch(&[&q, &q], &params));
        prop_assert_eq!(batch.is_ok(), valid_k && valid_rerank && valid_list && valid_carve && valid_query);
    }

    #[test]
    fn writes_and_lookups_never_panic(
        id in prop_oneof![Just(u64::MAX), Just(u64::MAX - 1), Just(1u64 << 63), 1000u64..2000],
        tokens in query(),
        payload_len in prop_oneof![Just(0usize), Just(1 << 20), Just((1 << 20) + 1), 0usize..64],
    ) {
        let (_, c) = shared();
        let payload = vec![b'x'; payload_len];
        let r = no_panic("upsert", || c.upsert(id, &tokens, Some(&payload)));
        // The shared collection stores f16: values beyond ±65504 are refused too.
        let tokens_ok = !tokens.is_empty() && tokens.len() % DIM == 0 && tokens.iter().all(|v| v.is_finite() && v.abs() <= 65504.0);
        match r {
            Ok(()) => prop_assert!(tokens_ok && payload_len <= 1 << 20),
            Err(Error::InvalidInput(e)) => prop_assert!(!(tokens_ok && payload_len <= 1 << 20), "refused: {}", e),
            Err(other) => prop_assert!(false, "unexpected error kind: {other}"),
        }
        // Without the payload: refused exactly when the tokens are bad (or the id now exists).
        let inserted = no_panic("insert", || c.insert(id, &tokens, None));
        let exists = matches!(inserted, Err(Error::IdExists { .. }));
        prop_assert!(inserted.is_ok() || !tokens_ok || exists);
        let valid = tokens_ok;
        prop_assert_eq!(no_panic("contains", || c.contains(id)).unwrap(), valid);
        let got = no_panic("get", || c.get(id)).unwrap();
        prop_assert_eq!(got.is_some(), valid);
        prop_assert_eq!(no_panic("delete", || c.delete(id)).unwrap(), valid);
        prop_assert!(no_panic("get", || c.get(id)).unwrap().is_none());
    }

    #[test]
    fn collection_options_are_checked(
        dim in prop_oneof![Just(0u32), Just(1), Just(MAX_DIM as u32), Just(MAX_DIM as u32 + 1), Just(u32::MAX), 1u32..64],
        k_sim in prop_oneof![Just(0u32), Just(30), Just(31), Just(u32::MAX), 0u32..6],
        r_reps in prop_oneof![Just(0u32), Just(1024), Just(1025), Just(u32::MAX), 1u32..6],
        d_proj in prop_oneof![Just(0u32), Just(u32::MAX), 1u32..16],
        final_dim in prop_oneof![Just(None), Just(Some(0u32)), Just(Some(u32::MAX)), (1u32..512).prop_map(Some)],
        subspaces in prop_oneof![Just(0u32), Just(u32::MAX), 1u32..64],
        iterations in prop_oneof![Just(0u32), Just(1001), Just(u32::MAX), 1u32..4],
        max_degree in prop_oneof![Just(0u32), Just(1), Just(257), Just(u32::MAX), 2u32..40],
        build_list in prop_oneof![Just(0u32), Just(4097), Just(u32::MAX), 2u32..100],
        alpha in floats(),
        build_dim in prop_oneof![Just(0u32), Just(u32::MAX), 1u32..2048],
        periodic_ms in prop_oneof![Just(None), Just(Some(0u64)), Just(Some(u64::MAX)), (1u64..100).prop_map(Some)],
    ) {
        let mut o = small_options(TokenStorage::F16, 64);
        o.dim = dim;
        o.fde.dim = dim;
        o.fde.k_sim = k_sim;
        o.fde.r_reps = r_reps;
        o.fde.projection = Projection::CountSketch { d_proj };
        o.fde.final_dim = final_dim;
        o.pq.subspaces = subspaces as _;
        o.pq.iterations = iterations as _;
        o.graph.params.max_degree = max_degree as _;
        o.graph.params.build_list = build_list as _;
        o.graph.params.alpha = alpha;
        o.graph.build_dim = build_dim;
        if let Some(ms) = periodic_ms {
            o.durability = Durability::Periodic(Duration::from_millis(ms));
        }
        let checked = no_panic("validate", || o.validate());
        if checked.is_err() {
            // create refuses what validate refuses, with the same kind of error, and writes nothing.
            let dir = TempDir::new("extremes-create");
            let r = no_panic("create", || Collection::create(dir.0.join("c"), o.clone(), OpenOptions::default()));
            let refused = matches!(r, Err(Error::InvalidParameter { .. }) | Err(Error::InvalidInput(_)));
            prop_assert!(refused, "create did not refuse what validate refused");
            prop_assert!(!dir.0.join("c").join("catalog").exists());
        }
    }

    #[test]
    fn open_options_are_checked(
        memtable_docs in sizes(1 << 20),
        memtable_bytes in sizes(1 << 30),
        merge_factor in sizes(64),
        base_docs in prop_oneof![Just(0u64), Just(u64::MAX), 1u64..100],
        max_segment_docs in prop_oneof![Just(0u64), Just(1u64 << 24), Just((1u64 << 24) + 1), Just(u64::MAX), 1u64..1000],
        ratio in prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(-1.0), Just(0.0), Just(1.0), Just(2.0), 0.01f64..1.0],
        periodic_ms in prop_oneof![Just(None), Just(Some(0u64)), Just(Some(u64::MAX)), (1u64..100).prop_map(Some)],
    ) {
        let open = OpenOptions {
            memtable_max_docs: memtable_docs,
            memtable_max_bytes: memtable_bytes,
            merge_policy: TieredPolicy { merge_factor, base_docs, max_segment_docs, max_deleted_ratio: ratio },
            durability: periodic_ms.map(|ms| Durability::Periodic(Duration::from_millis(ms))),
            background: false,
            ..Default::default()
        };
        let valid = no_panic("validate", || open.validate()).is_ok();
        let dir = TempDir::new("extremes-open");
        let r = no_panic("create", || Collection::create(dir.0.join("c"), CollectionOptions::new(8), open.clone()));
        match r {
            Ok(c) => {
                prop_assert!(valid);
                c.insert(1, &[0.5; 8], None).unwrap();
                prop_assert!(no_panic("close", || c.close()).is_ok());
            }
            Err(e) => {
                let typed = matches!(e, Error::InvalidParameter { .. });
                prop_assert!(!valid && typed, "{}", e);
            }
        }
    }
}

#[test]
fn readers_and_opens_of_odd_paths_are_errors() {
    let dir = TempDir::new("extremes-paths");
    let file = dir.0.join("a-file");
    std::fs::write(&file, b"not a collection").unwrap();
    for p in [file.clone(), dir.0.join("missing"), dir.0.clone(), file.join("below-a-file")] {
        assert!(matches!(CollectionReader::open(&p), Err(Error::NotACollection { .. })), "{}", p.display());
        assert!(matches!(Collection::open(&p), Err(Error::NotACollection { .. })), "{}", p.display());
    }
    let too_many: Vec<Vec<f32>> = (0..65_537).map(|_| vec![0.5; DIM]).collect();
    let docs: Vec<NewDocument<'_>> =
        too_many.iter().enumerate().map(|(i, t)| NewDocument { id: i as u64, tokens: t, payload: None }).collect();
    let (_, c) = shared();
    assert!(matches!(c.insert_batch(&docs), Err(Error::InvalidInput(_))));
}
