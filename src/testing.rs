//! Checks shared by the fuzz targets (`fuzz/`) and the tests that replay their committed corpora,
//! so both run the same code. Not part of the supported API.
//!
//! Each function takes arbitrary bytes, must never panic on its own account, and returns `Err`
//! with a description only when it finds a real bug (an invariant broken), so a fuzzer can turn
//! that into a crash.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::collection::Collection;
use crate::compaction::TieredPolicy;
use crate::encode::fde::{FdeParams, Projection};
use crate::encode::maxsim::MaxSimQuery;
use crate::encode::storage::TokenStorage;
use crate::encode::tokens::TokenMatrix;
use crate::io::fault::{FaultStorage, Tear};
use crate::options::{CollectionOptions, Durability, OpenOptions};
use crate::search::{search_segment, SearchParams, SegmentSearch};
use crate::segment::SegmentReader;
use crate::wal::{replay, WalRecovery};

/// Arbitrary bytes as a WAL file: replay (strict and salvaging, read-only) returns records or an
/// error, and does so identically twice (replay is deterministic).
pub fn wal_bytes(dir: &Path, data: &[u8]) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    for entry in std::fs::read_dir(dir).map_err(|e| e.to_string())?.flatten() {
        let _ = std::fs::remove_file(entry.path());
    }
    // The name must match the header's first sequence number; take it from the bytes when they
    // have a header, so valid inputs get past the name check.
    let first = data.get(16..24).map_or(1, |b| u64::from_le_bytes(b.try_into().unwrap_or_default()));
    std::fs::write(dir.join(crate::wal::file_name(first)), data).map_err(|e| e.to_string())?;
    for recovery in [WalRecovery::Strict, WalRecovery::TruncateAtCorruption] {
        let mut seen = Vec::new();
        let first_run = replay(dir, 0, recovery, None, |r| {
            seen.push(r);
            Ok(())
        });
        let mut again = Vec::new();
        let second_run = replay(dir, 0, recovery, None, |r| {
            again.push(r);
            Ok(())
        });
        if first_run.is_ok() != second_run.is_ok() || seen != again {
            return Err(format!("{recovery:?}: two replays of the same bytes differ"));
        }
        if let Ok(report) = first_run {
            if report.applied as usize != seen.len() {
                return Err("the report's record count differs from the records applied".into());
            }
            if seen.windows(2).any(|w| w[1].seq != w[0].seq + 1) {
                return Err("replay applied records out of sequence".into());
            }
        }
    }
    Ok(())
}

/// Arbitrary bytes as a segment file: open, verify, read every document, and search it (graph or
/// scan, exact rerank) — values or errors, never a panic.
pub fn segment_bytes(path: &Path, data: &[u8]) -> Result<(), String> {
    std::fs::write(path, data).map_err(|e| e.to_string())?;
    let Ok(reader) = SegmentReader::open(path) else { return Ok(()) };
    let _ = reader.verify();
    for i in 0..reader.doc_count() {
        let _ = (reader.tokens(i), reader.payload(i), reader.pq_code(i), reader.doc_ids()[i]);
    }
    let Ok(codebook) = reader.pq_codebook() else { return Ok(()) };
    let dim = reader.dim();
    let query: Vec<f32> = (0..dim * 2).map(|i| ((i % 7) as f32 - 3.0) / 4.0).collect();
    let Ok(tokens) = TokenMatrix::new(&query, dim) else { return Ok(()) };
    let fde: Vec<f32> = (0..codebook.dim()).map(|i| ((i % 5) as f32 - 2.0) / 3.0).collect();
    let Ok(table) = codebook.adc_table(&fde) else { return Ok(()) };
    let params = SegmentSearch { k: 3, candidates: 8, list_size: 16, prefetch: false };
    if let Ok((hits, _)) = search_segment(&reader, &table, &MaxSimQuery::new(&tokens), params, |_| false) {
        if hits.iter().any(|h| h.doc as usize >= reader.doc_count()) {
            return Err("search returned an ordinal past the end".into());
        }
    }
    Ok(())
}

/// Token dimension of [`small_collection_options`].
pub(crate) const DIM: usize = 8;

/// Tiny, fast collection settings (8-dim tokens, a 32-value FDE, no graph), also used by unit tests.
pub(crate) fn small_collection_options() -> CollectionOptions {
    let mut o = CollectionOptions::new(DIM as u32);
    o.fde = FdeParams {
        dim: DIM as u32,
        k_sim: 2,
        projection: Projection::Identity,
        r_reps: 2,
        fill_empty: true,
        final_dim: None,
        seed: 3,
    };
    o.storage = TokenStorage::F32;
    o.pq = crate::encode::pq::PqParams::for_dim(o.fde.fde_dim());
    o.pq.iterations = 2;
    o.pq.max_training_vectors = 256;
    o.pq_settled_docs = 64;
    o.graph.min_docs = 1 << 30;
    o
}

fn fuzz_open(storage: Option<Arc<FaultStorage>>) -> OpenOptions {
    OpenOptions {
        durability: Some(Durability::Sync),
        memtable_max_docs: usize::MAX,
        background: false,
        merge_policy: TieredPolicy { base_docs: 2, merge_factor: 2, ..Default::default() },
        storage: storage.map(|s| s as Arc<dyn crate::io::storage::Storage>),
        ..Default::default()
    }
}

fn doc(id: u64, version: u8) -> Vec<f32> {
    (0..DIM * (1 + (id as usize + version as usize) % 3))
        .map(|i| (((id as usize * 31 + version as usize * 17 + i * 7) % 23) as f32 - 11.0) / 11.0)
        .collect()
}

/// Operation sequences with a crash against a model: the bytes choose inserts, upserts, deletes,
/// flushes, compactions, the storage operation to crash at and how power loss tears files. After
/// the crash and a power loss, reopening must show the acknowledged prefix (plus, possibly, the
/// operation in flight), `verify` must pass, and exact search must agree with the model.
pub fn collection_ops(dir: &Path, data: &[u8]) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(dir);
    let path = dir.join("c");
    let (Some(&crash_byte), Some(&tear_byte)) = (data.first(), data.get(1)) else { return Ok(()) };
    let ops = &data[2..data.len().min(42)];
    Collection::create(&path, small_collection_options(), fuzz_open(None))
        .and_then(|c| c.close())
        .map_err(|e| format!("create: {e}"))?;
    let fault = Arc::new(FaultStorage::new());
    // Crash somewhere in the first ~256 storage operations (or never, for 255).
    if crash_byte != 255 {
        fault.crash_at(1 + crash_byte as u64);
    }
    let mut model: BTreeMap<u64, u8> = BTreeMap::new();
    let mut in_flight: Option<(u64, Option<u8>)> = None;
    if let Ok(c) = Collection::open_with(&path, fuzz_open(Some(fault.clone()))) {
        for (i, &b) in ops.iter().enumerate() {
            let id = (b & 7) as u64;
            let version = i as u8;
            let (result, effect) = match b >> 5 {
                0..=2 => (c.upsert(id, &doc(id, version), None), Some((id, Some(version)))),
                3 | 4 => (c.delete(id).map(|_| ()), Some((id, None))),
                5 => (c.flush(), None),
                6 => (c.compact().map(|_| ()), None),
                _ => (c.insert(id, &doc(id, version), None), Some((id, Some(version)))),
            };
            match result {
                Ok(()) => {
                    if let Some((id, v)) = effect {
                        match v {
                            Some(v) => model.insert(id, v),
                            None => model.remove(&id),
                        };
                    }
                }
                Err(crate::Error::IdExists { .. }) => {}
                Err(_) => {
                    in_flight = effect;
                    break;
                }
            }
        }
    }
    let tear = [Tear::DropUnsynced, Tear::KeepHalf, Tear::KeepAll][tear_byte as usize % 3];
    fault.power_loss(tear).map_err(|e| format!("power loss: {e}"))?;
    let c = Collection::open_with(&path, fuzz_open(None)).map_err(|e| format!("reopen after crash: {e}"))?;
    c.verify().map_err(|e| format!("verify after crash: {e}"))?;
    let mut alt = model.clone();
    if let Some((id, v)) = in_flight {
        match v {
            Some(v) => alt.insert(id, v),
            None => alt.remove(&id),
        };
    }
    let mut actual = BTreeMap::new();
    for id in 0..8u64 {
        if let Some(d) = c.get(id).map_err(|e| e.to_string())? {
            let v =
                (0..=255u8).find(|&v| d.tokens == doc(id, v)).ok_or(format!("document {id} holds unknown tokens"))?;
            actual.insert(id, v);
        }
    }
    if actual != model && actual != alt {
        return Err(format!("after the crash: {actual:?}, acknowledged {model:?}, with the in-flight op {alt:?}"));
    }
    let query = doc(3, 1);
    let hits =
        c.search(&query, &SearchParams { rerank: Some(64), ..SearchParams::new(8) }).map_err(|e| e.to_string())?;
    let q = MaxSimQuery::new(&TokenMatrix::new(&query, DIM).map_err(|e| e.to_string())?);
    let mut expected: Vec<(u64, f32)> = actual
        .iter()
        .map(|(&id, &v)| (id, q.score(crate::encode::maxsim::DocTokens::F32(&doc(id, v))).unwrap_or(f32::NAN)))
        .collect();
    expected.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let got: Vec<(u64, f32)> = hits.iter().map(|h| (h.id, h.score)).collect();
    if got != expected {
        return Err(format!("search {got:?} differs from exact MaxSim over the model {expected:?}"));
    }
    drop(c);
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

/// Arbitrary bytes as a token-codebook section (a segment's `token_centroids`, the catalog's `t`
/// record) followed by centroid ids and residual codes: parsing returns a codebook or an error; a
/// parsed codebook round-trips through its bytes, and decoding and scoring arbitrary ids give
/// values (finite for in-range ids) or errors, never a panic.
///
/// Layout of `data`: byte 0 picks the dimension (1 + b % 64), bytes 1..3 the section length (u16
/// LE), then the section, then u16 ids and the ids' residual codes.
pub fn token_codebook_bytes(data: &[u8]) -> Result<(), String> {
    use crate::encode::codec::TokenCodebook;
    use crate::encode::maxsim::{DocTokens, ResidualTokens};
    if data.len() < 3 {
        return Ok(());
    }
    let dim = 1 + data[0] as usize % 64;
    let len = (u16::from_le_bytes([data[1], data[2]]) as usize).min(data.len() - 3);
    let (section, rest) = data[3..].split_at(len);
    let Ok(book) = TokenCodebook::from_bytes(section, dim) else { return Ok(()) };
    match TokenCodebook::from_bytes(&book.to_bytes(), dim) {
        Ok(again) if again == book => {}
        other => return Err(format!("a parsed codebook does not round-trip: {other:?}")),
    }
    let rb = book.residual_bytes();
    let tokens = rest.len() / (2 + rb);
    let (id_bytes, codes) = rest.split_at(tokens * 2);
    let ids: Vec<u16> = id_bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
    let codes = &codes[..tokens * rb];
    let in_range = ids.iter().all(|&c| (c as usize) < book.centroid_count());
    let query: Vec<f32> = (0..dim * 2).map(|i| ((i % 7) as f32 - 3.0) / 4.0).collect();
    let table = book.interaction_table(&query);
    let score = table.score(&ids);
    if in_range != score.is_ok() {
        return Err(format!("centroid interaction of ids (in range: {in_range}) gave {score:?}"));
    }
    let _ = table.top_centroids(3);
    let mut out = vec![0f32; tokens * dim];
    let decoded = book.decode_many(&ids, codes, &mut out);
    if in_range != decoded.is_ok() || (decoded.is_ok() && out.iter().any(|v| !v.is_finite())) {
        return Err(format!("decoding ids (in range: {in_range}) gave {decoded:?}"));
    }
    if rb > 0 && tokens > 0 {
        let q = MaxSimQuery::new(&TokenMatrix::new(&query, dim).map_err(|e| e.to_string())?);
        let s = q.score(DocTokens::Residual(ResidualTokens { ids: &ids, codes, codebook: &book }));
        if in_range != s.is_ok() {
            return Err(format!("MaxSim over residual tokens (ids in range: {in_range}) gave {s:?}"));
        }
    }
    Ok(())
}

/// Arbitrary bytes as a segment's `field_index` section: decoding returns an index or an error; a
/// decoded index round-trips through its bytes, and filters evaluated on it select only ordinals
/// of the segment, never a panic.
///
/// Layout of `data`: byte 0 gives the segment's document count (1 + b), the rest is the section.
pub fn field_index_bytes(data: &[u8]) -> Result<(), String> {
    use crate::filter::column::FieldIndex;
    use crate::filter::Filter;
    let Some((&n, section)) = data.split_first() else { return Ok(()) };
    let doc_count = 1 + n as u32;
    let Ok(index) = FieldIndex::decode(section, doc_count) else { return Ok(()) };
    match FieldIndex::decode(&index.encode(), doc_count) {
        Ok(again) if again == index => {}
        other => return Err(format!("a decoded field index does not round-trip: {other:?}")),
    }
    let fields = index.fields();
    let ids: Vec<u64> = (0..doc_count as u64).collect();
    let mut filters = vec![r#"{"not":{"ids":[]}}"#.to_string(), r#"{"ids":[0,3]}"#.to_string()];
    for f in &fields {
        let name = serde_json::to_string(&f.name).map_err(|e| e.to_string())?;
        filters.push(match f.kind {
            crate::filter::FieldKind::Keyword => format!(r#"{{"field":{name},"in":["a","","b"]}}"#),
            crate::filter::FieldKind::Integer => format!(r#"{{"not":{{"field":{name},"gte":-5,"lt":100}}}}"#),
            crate::filter::FieldKind::Float => format!(r#"{{"field":{name},"gt":-1.5,"lte":2.5}}"#),
            crate::filter::FieldKind::Bool => format!(r#"{{"or":[{{"field":{name},"eq":true}},{{"ids":[1]}}]}}"#),
        });
    }
    for text in filters {
        let bound = Filter::from_json(&text).and_then(|f| f.bind(&fields)).map_err(|e| format!("{text}: {e}"))?;
        let Some(passing) = index.evaluate(&bound, &ids) else {
            return Err(format!("{text}: the index does not cover its own fields"));
        };
        if passing.max().is_some_and(|m| m >= doc_count) {
            return Err(format!("{text}: ordinal {:?} beyond {doc_count} documents", passing.max()));
        }
    }
    Ok(())
}
