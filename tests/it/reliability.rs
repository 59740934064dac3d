//! The reliability suite: crash-point enumeration with simulated power loss, I/O errors injected
//! at every storage operation, a full disk, and damaged files of every kind. The fault-injecting
//! storage is `quiverdb::io::fault::FaultStorage`. `QUIVERDB_LONG_TESTS=1` runs every tear mode at
//! every crash point (the default run rotates them).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use quiverdb::compaction::TieredPolicy;
use quiverdb::io::fault::{FaultKind, FaultStorage, Tear};
use quiverdb::{Collection, Durability, Error, OpenOptions, SearchParams, TokenStorage};

use crate::collection::{doc_tokens, manual_open, small_options};
use crate::common::TempDir;

#[derive(Clone, Copy, Debug)]
enum Op {
    Insert(u64),
    Upsert(u64, u64),
    Delete(u64),
    Flush,
    Compact,
}

/// Inserts, replaces and deletes around three flushes and a compaction.
fn workload() -> Vec<Op> {
    use Op::*;
    let mut w: Vec<Op> = (0..6).map(Insert).collect();
    w.extend([Delete(1), Upsert(2, 1), Flush]);
    w.extend((6..9).map(Insert));
    w.extend([Delete(3), Flush, Insert(9), Upsert(4, 2), Flush, Compact, Insert(10), Delete(6), Upsert(0, 3)]);
    w
}

fn tokens(id: u64, version: u64) -> Vec<f32> {
    doc_tokens(id, version)
}

/// The stored (f16) form of `tokens(id, version)`.
fn stored(id: u64, version: u64) -> Vec<f32> {
    let bits = quiverdb::encode::storage::to_16bit(&tokens(id, version), TokenStorage::F16).unwrap();
    quiverdb::encode::storage::from_16bit(&bits, TokenStorage::F16).unwrap()
}

type Model = BTreeMap<u64, u64>; // id -> version

fn apply(model: &mut Model, op: Op) {
    match op {
        Op::Insert(id) => {
            model.insert(id, 0);
        }
        Op::Upsert(id, v) => {
            model.insert(id, v);
        }
        Op::Delete(id) => {
            model.remove(&id);
        }
        Op::Flush | Op::Compact => {}
    }
}

/// The indexed fields of the crash workload's collection: the document's version and its id's
/// parity, so a filter's answer after recovery can be checked against the model's.
fn indexed_fields() -> Vec<quiverdb::IndexedField> {
    use quiverdb::{FieldKind, IndexedField};
    vec![IndexedField::new("version", FieldKind::Integer), IndexedField::new("parity", FieldKind::Keyword)]
}

fn payload(id: u64, version: u64) -> Vec<u8> {
    format!(r#"{{"version":{version},"parity":"{}"}}"#, if id.is_multiple_of(2) { "even" } else { "odd" }).into_bytes()
}

fn run(c: &Collection, op: Op) -> quiverdb::Result<()> {
    match op {
        Op::Insert(id) => c.insert(id, &tokens(id, 0), Some(&payload(id, 0))),
        Op::Upsert(id, v) => c.upsert(id, &tokens(id, v), Some(&payload(id, v))),
        Op::Delete(id) => c.delete(id).map(|_| ()),
        Op::Flush => c.flush(),
        Op::Compact => c.compact().map(|_| ()),
    }
}

fn open_options(storage: Option<Arc<FaultStorage>>) -> OpenOptions {
    OpenOptions {
        storage: storage.map(|s| s as Arc<dyn quiverdb::io::storage::Storage>),
        merge_policy: TieredPolicy { base_docs: 4, merge_factor: 3, ..Default::default() },
        ..manual_open(Durability::Sync)
    }
}

fn fresh_collection(path: &Path) {
    let mut options = small_options(TokenStorage::F16, 2);
    options.indexed_fields = indexed_fields();
    let c = Collection::create(path, options, open_options(None)).unwrap();
    c.close().unwrap();
}

/// Runs the workload until the first error. Returns the acknowledged prefix length.
fn run_until_error(c: &Collection, ops: &[Op]) -> usize {
    for (i, op) in ops.iter().enumerate() {
        if run(c, *op).is_err() {
            return i;
        }
    }
    ops.len()
}

/// After reopening: the state is the acknowledged prefix, or the prefix plus the operation that
/// was in flight (it may have become durable without being acknowledged). `verify()` is clean.
fn check_state(path: &Path, ops: &[Op], acked: usize, context: &str) {
    let c =
        Collection::open_with(path, open_options(None)).unwrap_or_else(|e| panic!("{context}: reopening failed: {e}"));
    c.verify().unwrap_or_else(|e| panic!("{context}: verify failed: {e}"));
    let mut before = Model::new();
    for op in &ops[..acked] {
        apply(&mut before, *op);
    }
    let mut after = before.clone();
    if acked < ops.len() {
        apply(&mut after, ops[acked]);
    }
    let mut actual = Model::new();
    for id in 0..12 {
        if let Some(doc) = c.get(id).unwrap() {
            let version = (0..4).find(|&v| doc.tokens == stored(id, v));
            let v = version.unwrap_or_else(|| panic!("{context}: document {id} holds tokens of no version"));
            actual.insert(id, v);
        }
    }
    assert!(
        actual == before || actual == after,
        "{context}: state {actual:?} is neither the acknowledged prefix {before:?} nor it plus the in-flight op {after:?}"
    );
    // Search works and returns only live ids.
    let hits = c.search(&tokens(5, 0), &SearchParams { rerank: Some(100), ..SearchParams::new(12) }).unwrap();
    assert_eq!(hits.len(), actual.len().min(12), "{context}: search sees every live document");
    assert!(hits.iter().all(|h| actual.contains_key(&h.id)), "{context}: search returned a dead id");
    // Filters on the indexed fields see exactly the model's documents.
    let filtered = |text: &str, keep: &dyn Fn(u64, u64) -> bool| {
        let filter = quiverdb::Filter::from_json(text).unwrap();
        let params = SearchParams { rerank: Some(100), filter: Some(filter), ..SearchParams::new(12) };
        let mut got: Vec<u64> = c.search(&tokens(5, 0), &params).unwrap().iter().map(|h| h.id).collect();
        got.sort_unstable();
        let want: Vec<u64> = actual.iter().filter(|(&id, &v)| keep(id, v)).map(|(&id, _)| id).collect();
        assert_eq!(got, want, "{context}: filter {text}");
    };
    filtered(r#"{"field":"version","gte":1}"#, &|_, v| v >= 1);
    filtered(r#"{"field":"parity","eq":"odd"}"#, &|id, _| id % 2 == 1);
    filtered(r#"{"not":{"field":"version","in":[0,3]}}"#, &|_, v| v != 0 && v != 3);
}

fn long() -> bool {
    std::env::var_os("QUIVERDB_LONG_TESTS").is_some()
}

/// For every storage-operation index N of the workload (open included): crash there, simulate a
/// power loss (unsynced bytes dropped, torn or kept; unsynced renames, creations and deletions
/// undone), reopen, and check that exactly the durable prefix survived.
/// The crash tests' workload takes the FreshDiskANN merge path: its compaction keeps the largest
/// input's graph (with a deleted and a replaced document consolidated) instead of rebuilding.
#[test]
fn the_workload_merge_extends_a_graph() {
    let dir = TempDir::new("rel-extend");
    let path = dir.0.join("c");
    fresh_collection(&path);
    let c = Collection::open_with(&path, open_options(None)).unwrap();
    let mut extended = 0;
    for op in workload() {
        match op {
            Op::Compact => extended += c.compact().unwrap().graphs_extended,
            op => run(&c, op).unwrap(),
        }
    }
    assert_eq!(extended, 1);
    c.verify().unwrap();
}

#[test]
fn crash_at_every_operation_keeps_the_durable_prefix() {
    let dir = TempDir::new("rel-crash");
    let ops = workload();
    // Dry run: how many operations the workload makes.
    let path = dir.0.join("dry");
    fresh_collection(&path);
    let fault = Arc::new(FaultStorage::new());
    let c = Collection::open_with(&path, open_options(Some(fault.clone()))).unwrap();
    assert_eq!(run_until_error(&c, &ops), ops.len());
    c.close().unwrap();
    let total = fault.ops();
    assert!(total > 50, "the workload makes {total} storage operations");

    let tears = [Tear::DropUnsynced, Tear::KeepHalf, Tear::KeepAll];
    let mut cases = 0;
    for n in 1..=total + 1 {
        let modes: Vec<Tear> = if long() { tears.to_vec() } else { vec![tears[n as usize % 3]] };
        for tear in modes {
            let path = dir.0.join(format!("crash-{n}-{tear:?}"));
            fresh_collection(&path);
            let fault = Arc::new(FaultStorage::new());
            fault.crash_at(n);
            let acked = match Collection::open_with(&path, open_options(Some(fault.clone()))) {
                Ok(c) => {
                    let acked = run_until_error(&c, &ops);
                    drop(c);
                    acked
                }
                Err(_) => 0,
            };
            fault.power_loss(tear).unwrap();
            check_state(&path, &ops, acked, &format!("crash at op {n}/{total} ({tear:?}), {acked} ops acknowledged"));
            std::fs::remove_dir_all(&path).unwrap();
            cases += 1;
        }
    }
    eprintln!("crash points: {cases} cases over {total} storage operations");
}

/// EIO (and ENOSPC) injected once at every storage operation: the failing call returns an error,
/// later writes are refused (the handle is poisoned), reads keep working, and a reopen recovers
/// the acknowledged state.
#[test]
fn io_error_at_every_operation_poisons_writes_and_recovers() {
    let dir = TempDir::new("rel-eio");
    let ops = workload();
    let path = dir.0.join("dry");
    fresh_collection(&path);
    let fault = Arc::new(FaultStorage::new());
    let c = Collection::open_with(&path, open_options(Some(fault.clone()))).unwrap();
    let open_ops = fault.ops();
    assert_eq!(run_until_error(&c, &ops), ops.len());
    drop(c);
    let total = fault.ops();
    let mut failures_seen = 0;
    for n in (open_ops + 1)..=total {
        let kind = if n % 2 == 0 { FaultKind::Eio } else { FaultKind::Enospc };
        let path = dir.0.join(format!("eio-{n}"));
        fresh_collection(&path);
        let fault = Arc::new(FaultStorage::new());
        fault.fail_at(n, kind, false);
        let c = Collection::open_with(&path, open_options(Some(fault.clone()))).unwrap();
        let acked = run_until_error(&c, &ops);
        if acked < ops.len() {
            failures_seen += 1;
            // Poisoned: further writes are refused even though the fault is gone.
            let err = c.insert(100, &tokens(100, 0), None).unwrap_err();
            assert!(matches!(err, Error::Poisoned { .. }), "op {n}: after a failed write, got {err}");
            // Reads still work.
            c.search(&tokens(0, 0), &SearchParams::new(3)).unwrap();
            let _ = c.get(0).unwrap();
        }
        drop(c);
        check_state(&path, &ops, acked, &format!("{kind:?} at op {n}/{total}, {acked} ops acknowledged"));
        std::fs::remove_dir_all(&path).unwrap();
    }
    assert!(failures_seen as u64 > (total - open_ops) / 2, "most injected faults surface as errors ({failures_seen})");
}

/// A disk that fills up and stays full: writes fail with a clear error, reads are served, and
/// after space is freed a reopen recovers everything acknowledged and accepts writes again.
#[test]
fn disk_full_refuses_writes_serves_reads_and_recovers() {
    let dir = TempDir::new("rel-full");
    let path = dir.0.join("c");
    fresh_collection(&path);
    let fault = Arc::new(FaultStorage::new());
    let c = Collection::open_with(&path, open_options(Some(fault.clone()))).unwrap();
    for id in 0..5 {
        c.insert(id, &tokens(id, 0), None).unwrap();
    }
    c.flush().unwrap();
    c.insert(5, &tokens(5, 0), None).unwrap();
    fault.fail_at(fault.ops() + 1, FaultKind::Enospc, true);
    let err = c.insert(6, &tokens(6, 0), None).unwrap_err();
    assert!(err.to_string().contains("No space left"), "{err}");
    assert!(c.flush().is_err());
    assert!(matches!(c.delete(0), Err(Error::Poisoned { .. })));
    let hits = c.search(&tokens(5, 0), &SearchParams::new(3)).unwrap();
    assert_eq!(hits[0].id, 5, "reads keep working on a full disk");
    assert!(c.get(5).unwrap().is_some());
    drop(c);
    fault.heal();
    let c = Collection::open_with(&path, open_options(Some(fault))).unwrap();
    for id in 0..6 {
        assert!(c.get(id).unwrap().is_some(), "acknowledged {id} survived the full disk");
    }
    assert!(c.get(6).unwrap().is_none());
    c.insert(6, &tokens(6, 0), None).unwrap();
    c.flush().unwrap();
    c.verify().unwrap();
}

fn corrupt_and_open(path: &Path) -> quiverdb::Result<Collection> {
    Collection::open_with(path, open_options(None))
}

fn build_two_segments(path: &Path) {
    let c = Collection::create(path, small_options(TokenStorage::F16, 2), open_options(None)).unwrap();
    for id in 0..6 {
        c.insert(id, &tokens(id, 0), None).unwrap();
    }
    c.flush().unwrap();
    for id in 6..9 {
        c.insert(id, &tokens(id, 0), None).unwrap();
    }
    c.flush().unwrap();
    c.insert(9, &tokens(9, 0), None).unwrap(); // stays in the WAL
    c.close().unwrap();
}

fn segment_files(path: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(path.join("segments")).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

/// Damage of every file kind gives a precise `Corruption` error (from open, verify or search),
/// never a panic and never silently wrong results.
#[test]
fn damaged_files_of_every_kind_are_reported() {
    let dir = TempDir::new("rel-corrupt");

    // A segment: bit flips across the whole file. Open checks structure; verify checks every byte.
    let base = dir.0.join("base");
    build_two_segments(&base);
    let seg = segment_files(&base)[0].clone();
    let len = std::fs::metadata(&seg).unwrap().len() as usize;
    let original = std::fs::read(&seg).unwrap();
    let step = (len / 97).max(1);
    let mut detected = 0;
    let mut positions = 0;
    for at in (0..len).step_by(step) {
        let mut bytes = original.clone();
        bytes[at] ^= 0x10;
        std::fs::write(&seg, &bytes).unwrap();
        positions += 1;
        match corrupt_and_open(&base) {
            Err(Error::Corruption { file, .. }) => {
                assert_eq!(file, seg, "the error names the damaged file");
                detected += 1;
            }
            Err(other) => panic!("byte {at}: expected Corruption, got {other}"),
            Ok(c) => match c.verify() {
                Err(Error::Corruption { file, .. }) => {
                    assert_eq!(file, seg);
                    detected += 1;
                }
                Err(other) => panic!("byte {at}: expected Corruption from verify, got {other}"),
                Ok(()) => panic!("byte {at}: a flipped bit passed verify"),
            },
        }
    }
    assert_eq!(detected, positions);
    std::fs::write(&seg, &original).unwrap();

    // Truncations, an empty file, a missing file.
    for cut in [0, 10, len / 2, len - 1] {
        std::fs::write(&seg, &original[..cut]).unwrap();
        let err = corrupt_and_open(&base).err().expect("a truncated segment must not open");
        assert!(matches!(err, Error::Corruption { .. }), "cut {cut}: {err}");
    }
    std::fs::remove_file(&seg).unwrap();
    let err = corrupt_and_open(&base).err().expect("a missing segment must not open");
    assert!(matches!(&err, Error::Corruption { what, .. } if what.contains("missing")), "{err}");
    std::fs::write(&seg, &original).unwrap();
    corrupt_and_open(&base).unwrap().verify().unwrap();

    // WAL: a flipped bit in the middle of the log is corruption (not silently skipped); salvage
    // opens with the prefix; the torn tail of the last file is cut.
    let wal_dir = base.join("wal");
    let c = corrupt_and_open(&base).unwrap();
    for id in 10..13 {
        c.insert(id, &tokens(id, 0), None).unwrap();
    }
    drop(c);
    let wal_files: Vec<_> = quiverdb::wal::list_files(&wal_dir).unwrap();
    let (_, last) = wal_files.last().unwrap().clone();
    let wal_bytes = std::fs::read(&last).unwrap();
    assert!(wal_bytes.len() > 200, "the last WAL file holds the three inserts");
    let mut flipped = wal_bytes.clone();
    flipped[quiverdb::format::wal::WAL_HEADER_LEN + 30] ^= 0x01; // inside the first record
    std::fs::write(&last, &flipped).unwrap();
    let err = corrupt_and_open(&base).err().expect("mid-log damage must be reported");
    assert!(matches!(&err, Error::Corruption { file, .. } if *file == last), "{err}");
    let report = quiverdb::check::verify_collection(&base).unwrap();
    assert!(!report.is_ok(), "offline verify reports the damaged WAL");
    std::fs::write(&last, &wal_bytes[..wal_bytes.len() - 7]).unwrap();
    let c = corrupt_and_open(&base).unwrap();
    assert!(c.get(11).unwrap().is_some() && c.get(12).unwrap().is_none(), "torn final record cut, the rest kept");
    c.verify().unwrap();
}

/// The durability contract, per mode, under power loss right after the acknowledgement:
/// `Sync` keeps the write; `Periodic(50 ms)` keeps it once an interval has passed; `None` loses it
/// (it was only in the page cache) — but none of them leaves a half-written state.
#[test]
fn durability_modes_keep_their_promise_under_power_loss() {
    let dir = TempDir::new("rel-modes");
    let cases = [
        (Durability::Sync, 0, true),
        (Durability::Periodic(std::time::Duration::from_millis(50)), 400, true),
        (Durability::None, 0, false),
    ];
    for (i, (mode, wait_ms, survives)) in cases.into_iter().enumerate() {
        let path = dir.0.join(format!("m{i}"));
        fresh_collection(&path);
        let fault = Arc::new(FaultStorage::new());
        let open = OpenOptions { durability: Some(mode), ..open_options(Some(fault.clone())) };
        let c = Collection::open_with(&path, open).unwrap();
        c.insert(1, &tokens(1, 0), None).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(wait_ms));
        fault.crash_at(fault.ops() + 1); // the process dies now: close cannot fsync
        drop(c);
        fault.power_loss(Tear::DropUnsynced).unwrap();
        let c = Collection::open_with(&path, open_options(None)).unwrap();
        assert_eq!(c.get(1).unwrap().is_some(), survives, "{mode:?}");
        c.verify().unwrap();
    }
}
