//! A read-only handle beside a writer in another process: a child inserts (in atomic batches),
//! deletes, flushes and compacts a collection while this process searches and refreshes through a
//! `CollectionReader`. The child's operations are a fixed sequence, so every state the reader sees
//! must be the state after some prefix of it, and that prefix must never shrink from one refresh
//! to the next: no search fails, a deleted id never reappears after the refresh that saw its
//! delete, and the document count is always the count of that prefix.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use quiverdb::compaction::TieredPolicy;
use quiverdb::{Collection, CollectionReader, Durability, NewDocument, OpenOptions, SearchParams, TokenStorage};

use crate::collection::{doc_tokens, small_options};
use crate::common::TempDir;

/// One logical step of the child (flushes and compactions are extra steps that change nothing
/// a reader may see).
#[derive(Clone, Debug)]
enum Step {
    InsertBatch(Vec<u64>),
    Delete(u64),
    Flush,
    Compact,
}

const BATCHES: u64 = 40;
const BATCH: u64 = 12;

fn steps() -> Vec<Step> {
    let mut out = Vec::new();
    for b in 0..BATCHES {
        out.push(Step::InsertBatch((b * BATCH..(b + 1) * BATCH).collect()));
        // Delete two documents of the batch before last: some sit in segments, some in the WAL.
        if b >= 1 {
            out.push(Step::Delete((b - 1) * BATCH + b % BATCH));
            out.push(Step::Delete((b - 1) * BATCH + (b + 5) % BATCH));
        }
        if b % 5 == 4 {
            out.push(Step::Flush);
        }
        if b % 10 == 9 {
            out.push(Step::Compact);
        }
    }
    out
}

/// The visible set after each prefix of the logical (write) steps: `states[k]` after k writes.
fn states() -> Vec<BTreeSet<u64>> {
    let mut cur = BTreeSet::new();
    let mut out = vec![cur.clone()];
    for step in steps() {
        match step {
            Step::InsertBatch(ids) => cur.extend(ids),
            Step::Delete(id) => {
                cur.remove(&id);
            }
            Step::Flush | Step::Compact => continue,
        }
        out.push(cur.clone());
    }
    out
}

fn writer_options() -> OpenOptions {
    OpenOptions {
        durability: Some(Durability::Sync),
        memtable_max_docs: 50,
        background: true,
        merge_policy: TieredPolicy { base_docs: 40, merge_factor: 3, ..Default::default() },
        ..Default::default()
    }
}

#[test]
fn readonly_writer_child() {
    let Some(dir) = std::env::var_os("QUIVERDB_READONLY_CHILD") else { return };
    let c = Collection::open_with(Path::new(&dir), writer_options()).unwrap();
    for step in steps() {
        match step {
            Step::InsertBatch(ids) => {
                let tokens: Vec<Vec<f32>> = ids.iter().map(|&id| doc_tokens(id, 0)).collect();
                let docs: Vec<NewDocument<'_>> =
                    ids.iter().zip(&tokens).map(|(&id, t)| NewDocument { id, tokens: t, payload: None }).collect();
                c.insert_batch(&docs).unwrap();
            }
            Step::Delete(id) => assert!(c.delete(id).unwrap()),
            Step::Flush => c.flush().unwrap(),
            Step::Compact => {
                c.compact().unwrap();
            }
        }
        std::thread::sleep(Duration::from_millis(3));
    }
    c.close().unwrap();
}

#[test]
fn a_read_only_handle_follows_a_writer_in_another_process() {
    let dir = TempDir::new("readonly");
    let path = dir.0.join("c");
    Collection::create(&path, small_options(TokenStorage::F16, 64), writer_options()).unwrap().close().unwrap();
    // A reader opened before the writer, and one that the writer's lock does not stop.
    let reader = CollectionReader::open(&path).unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut child = std::process::Command::new(exe)
        .args(["--exact", "readonly::readonly_writer_child", "--nocapture", "--test-threads=1"])
        .env("QUIVERDB_READONLY_CHILD", &path)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let states = states();
    let max_id = BATCHES * BATCH;
    let mut prefix = 0usize;
    let mut refreshes = 0u32;
    let mut distinct_prefixes = BTreeSet::new();
    let started = Instant::now();
    let mut child_done = false;
    loop {
        if !child_done {
            child_done = child.try_wait().unwrap().is_some();
        }
        reader.refresh().unwrap();
        refreshes += 1;
        let visible: BTreeSet<u64> = (0..max_id).filter(|&id| reader.contains(id).unwrap()).collect();
        let found = (prefix..states.len()).find(|&k| states[k] == visible);
        let Some(k) = found else {
            panic!(
                "refresh {refreshes}: the reader sees {} documents that are no prefix of the writer's steps at or after {prefix}",
                visible.len()
            );
        };
        prefix = k;
        distinct_prefixes.insert(k);
        assert_eq!(reader.stats().unwrap().documents, visible.len() as u64, "refresh {refreshes}");
        let query = doc_tokens(refreshes as u64 % max_id, 0);
        let hits = reader.search(&query, &SearchParams::new(10)).unwrap();
        for h in &hits {
            assert!(visible.contains(&h.id), "refresh {refreshes}: search returned {} which is not visible", h.id);
        }
        if child_done {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "the writer child did not finish");
    }
    eprintln!(
        "read-only test: {refreshes} refreshes saw {} distinct states of {}",
        distinct_prefixes.len(),
        states.len()
    );
    assert!(child.wait().unwrap().success(), "the writer child failed");
    assert_eq!(prefix, states.len() - 1, "after the writer closed, the reader sees its final state");
    assert!(distinct_prefixes.len() > 3, "the reader saw only {} distinct states", distinct_prefixes.len());
    // The reader never changed anything: the writer reopens cleanly and agrees.
    let c = Collection::open(&path).unwrap();
    assert_eq!(c.stats().unwrap().documents, states.last().unwrap().len() as u64);
    c.verify().unwrap();
}

#[test]
fn a_read_only_open_changes_nothing_on_disk() {
    let dir = TempDir::new("readonly-nochange");
    let path = dir.0.join("c");
    let c = Collection::create(&path, small_options(TokenStorage::F16, 64), writer_options()).unwrap();
    for id in 0..30 {
        c.insert(id, &doc_tokens(id, 0), None).unwrap();
    }
    c.flush().unwrap();
    for id in 30..40 {
        c.insert(id, &doc_tokens(id, 0), None).unwrap();
    }
    // Beside the writer (which holds the lock): opens, sees WAL records too.
    let r = CollectionReader::open(&path).unwrap();
    assert_eq!(r.stats().unwrap().documents, 40);
    assert_eq!(r.get(35).unwrap().unwrap().id, 35);
    r.verify().unwrap();
    // `quiver verify`'s library call works beside a writer too.
    let report = quiverdb::check::verify_collection(&path).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    c.close().unwrap();
    let listing = |p: &Path| -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for sub in ["segments", "wal"] {
            for e in std::fs::read_dir(p.join(sub)).unwrap() {
                let e = e.unwrap();
                out.push((e.file_name().to_string_lossy().into_owned(), e.metadata().unwrap().len()));
            }
        }
        out.sort();
        out
    };
    let before = listing(&path);
    let r = CollectionReader::open(&path).unwrap();
    r.refresh().unwrap();
    assert_eq!(r.search(&doc_tokens(3, 0), &SearchParams::new(3)).unwrap()[0].id, 3);
    drop(r);
    assert_eq!(listing(&path), before, "a read-only handle created, deleted or changed no file");
    assert!(matches!(CollectionReader::open(dir.0.join("missing")), Err(quiverdb::Error::NotACollection { .. })));
}
