"""The Python package end to end: round trips through reopen and compaction, string ids, payloads,
recall against a numpy exact-MaxSim reference, bad input, threads, and read-only handles."""

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import quiverdb
from conftest import corpus, exact_maxsim, topical

DIM = 32


def small(path, **kw):
    # Small memtable: flushes to segments happen inside the tests.
    opts = dict(memtable_max_docs=200, graph_min_docs=256)
    opts.update(kw)
    return quiverdb.Collection.create(path, DIM, **opts)


def test_create_insert_search_reopen_gives_the_same_results(path):
    docs = corpus(300, DIM, seed=1)
    queries = corpus(10, DIM, seed=2, min_tokens=3, max_tokens=8)
    with small(path) as c:
        c.insert_batch(list(range(len(docs))), docs)
        before = [c.search(q, k=5) for q in queries]
        assert all(len(h) == 5 for h in before)
        c.flush()
        after_flush = [c.search(q, k=5) for q in queries]
    with quiverdb.Collection.open(path) as c:
        again = [c.search(q, k=5) for q in queries]
        assert len(c) == 300
    ids = lambda hits: [[h.id for h in q] for q in hits]  # noqa: E731
    # Reopening changes nothing; the flush only moves documents from the (exactly searched)
    # memtable to a segment (approximate candidates), so the best hit stays the same.
    assert ids(after_flush) == ids(again)
    assert [q[0].id for q in before] == [q[0].id for q in again]
    for a, b in zip(after_flush, again):
        assert [h.score for h in a] == pytest.approx([h.score for h in b], rel=1e-6)


def test_upsert_and_delete_survive_reopen_and_compaction(path):
    docs = corpus(500, DIM, seed=3)
    with small(path, background=0) as c:
        for start in range(0, 500, 100):
            c.insert_batch(list(range(start, start + 100)), docs[start : start + 100])
            c.flush()
        c.upsert(7, docs[8], {"v": 2})
        assert c.delete(9) is True
        assert c.delete(9) is False
        report = c.compact()
        assert report["merges"] >= 1
    with quiverdb.Collection.open(path) as c:
        assert 9 not in c
        tokens, payload = c.get(7)
        assert payload == {"v": 2}
        np.testing.assert_allclose(tokens, docs[8].astype(np.float16).astype(np.float32))
        assert len(c) == 499
        c.verify()
        stats = c.stats()
        assert stats["documents"] == 499 and len(stats["segments"]) >= 1


def test_string_ids(path):
    docs = corpus(50, DIM, seed=4)
    keys = [f"doc-{i}" for i in range(50)]
    with small(path) as c:
        c.insert_batch(keys, docs, [{"i": i} for i in range(50)])
        c.insert(12345, docs[0])  # integer ids keep working beside string ids
        hits = c.search(docs[10], k=3)
        assert hits[0].id == "doc-10" and hits[0].payload == {"i": 10}
        assert "doc-3" in c and "doc-999" not in c and 12345 in c
        with pytest.raises(quiverdb.IdExists):
            c.insert("doc-3", docs[3])
        c.upsert("doc-3", docs[4], {"i": "replaced"})
        assert c.get("doc-3")[1] == {"i": "replaced"}
        assert c.delete("doc-3") and c.get("doc-3") is None
    with quiverdb.Collection.open(path) as c:
        assert c.get("doc-49")[1] == {"i": 49}
        assert c.search(docs[20], k=1)[0].id == "doc-20"
    with pytest.raises(quiverdb.InvalidInput):
        quiverdb.Collection.open(path).insert(-1, docs[0])


def test_recall_against_numpy_exact_maxsim(path):
    """Through the binding, results are exact MaxSim of the stored tokens: with the rerank depth
    covering the corpus the top-10 equals numpy's exact top-10. At the defaults (candidates from
    the FDE index) recall on these 3-8-token queries is lower: the short-query weakness the
    token-codec issue measures (0.74 here when this test was written)."""
    docs, queries = topical(2000, 40, 128, seed=5)
    with quiverdb.Collection.create(path, 128, memtable_max_docs=1000, graph_min_docs=256) as c:
        for start in range(0, 2000, 500):
            c.insert_batch(list(range(start, start + 500)), docs[start : start + 500])
        c.flush()
        stored = [d.astype(np.float16).astype(np.float32) for d in docs]
        full, default, top1 = [], [], []
        for q in queries:
            scores = np.array([exact_maxsim(q, d) for d in stored])
            exact = np.argsort(-scores, kind="stable")[:10].tolist()
            everything = c.search(q, k=10, rerank=2000)
            full.append(len(set(exact) & {h.id for h in everything}) / 10)
            for h in everything:  # the scores are exact MaxSim of the stored tokens
                assert h.score == pytest.approx(scores[h.id], rel=1e-4, abs=1e-4)
            hits = c.search(q, k=10)
            default.append(len(set(exact) & {h.id for h in hits}) / 10)
            top1.append(hits[0].id == exact[0])
    assert np.mean(full) >= 0.99, full
    assert np.mean(top1) >= 0.9 and np.mean(default) >= 0.6, (np.mean(top1), np.mean(default))


def test_payload_round_trip(path):
    docs = corpus(5, DIM, seed=7)
    payloads = [{"title": "é 中", "n": [1, 2.5, None]}, b"\x00\xffraw", None, [1, "two"], {}]
    with small(path) as c:
        c.insert_batch(["a", "b", "c", "d", "e"], docs, payloads)
        for key, p in zip("abcde", payloads):
            assert c.get(key)[1] == p
        c.flush()
        hits = {h.id: h.payload for h in c.search(docs[1], k=5)}
        assert hits["b"] == b"\x00\xffraw"
        with pytest.raises(quiverdb.InvalidInput):
            c.insert("f", docs[0], payload=object())


def test_dtypes_layouts_and_array_likes(path):
    base = corpus(1, DIM, seed=8)[0]
    with small(path) as c:
        c.insert(1, base.astype(np.float64))
        c.insert(2, base.astype(np.float16))
        c.insert(3, np.asfortranarray(base))  # not C-contiguous
        c.insert(4, base.tolist())  # lists of lists

        class Tensorish:  # anything with __array__, like a CPU torch tensor
            def __array__(self, dtype=None, copy=None):
                return base

        c.insert(5, Tensorish())
        hits = c.search(base[:3], k=5)
        assert {h.id for h in hits} == {1, 2, 3, 4, 5}
        c.insert(6, base[0])  # a single token vector is a one-token document


def test_bad_input_raises_the_right_exception(path):
    docs = corpus(3, DIM, seed=9)
    c = small(path)
    c.insert(1, docs[0])
    with pytest.raises(quiverdb.InvalidInput, match="dimensional"):
        c.insert(2, np.ones((4, DIM + 1), dtype=np.float32))
    nan = docs[1].copy()
    nan[0, 3] = np.nan
    with pytest.raises(quiverdb.InvalidInput, match="non-finite"):
        c.insert(2, nan)
    with pytest.raises(quiverdb.InvalidInput):
        c.search(nan, k=3)
    with pytest.raises(quiverdb.InvalidInput, match="2-D"):
        c.search(np.ones((2, 3, DIM), dtype=np.float32))
    with pytest.raises(quiverdb.InvalidInput):
        c.search(np.ones((0, DIM), dtype=np.float32))
    with pytest.raises(quiverdb.InvalidInput, match="float32 range"):
        c.insert(3, np.full((2, DIM), 1e300))
    with pytest.raises(quiverdb.InvalidParameter):
        c.search(docs[0], k=0)
    with pytest.raises(quiverdb.InvalidParameter):
        c.search(docs[0], k=3, rerank=10**12)
    with pytest.raises(quiverdb.InvalidParameter):
        quiverdb.Collection.create(path + "-x", DIM, storage="int3")
    with pytest.raises(quiverdb.InvalidParameter):
        quiverdb.Collection.create(path + "-y", DIM, no_such_option=1)
    with pytest.raises(quiverdb.AlreadyExists):
        quiverdb.Collection.create(path, DIM)
    with pytest.raises(quiverdb.NotACollection):
        quiverdb.Collection.open(path + "-missing")
    # Every error class is a quiverdb.Error and carries the engine's message.
    try:
        c.insert(1, docs[0])
    except quiverdb.Error as e:
        assert isinstance(e, quiverdb.IdExists) and "already exists" in str(e)
    c.close()
    c.close()  # idempotent
    with pytest.raises(quiverdb.Closed):
        c.search(docs[0], k=3)
    with pytest.raises(quiverdb.Closed):
        c.insert(9, docs[0])


def test_a_collection_locked_by_another_process(path):
    small(path).close()
    code = (
        "import sys, time, quiverdb\n"
        "c = quiverdb.Collection.open(sys.argv[1])\n"
        "print('open', flush=True)\n"
        "sys.stdin.readline()\n"
        "c.close()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "open"
        with pytest.raises(quiverdb.Locked, match="locked"):
            quiverdb.Collection.open(path)
        # A read-only handle works beside the other process's writer.
        with quiverdb.Collection.open(path, read_only=True) as r:
            assert r.read_only and len(r) == 0
            with pytest.raises(quiverdb.ReadOnly):
                r.insert(1, np.ones((1, DIM), dtype=np.float32))
    finally:
        child.stdin.write("\n")
        child.stdin.flush()
        child.wait(timeout=30)
    assert child.returncode == 0


def test_eight_threads_search_while_one_inserts(path):
    docs = corpus(1200, DIM, seed=10)
    with small(path, memtable_max_docs=300) as c:
        c.insert_batch(list(range(400)), docs[:400])
        errors = []
        done = threading.Event()

        def writer():
            try:
                for start in range(400, 1200, 50):
                    c.insert_batch(list(range(start, start + 50)), docs[start : start + 50])
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)
            finally:
                done.set()

        def searcher(seed):
            rng = np.random.default_rng(seed)
            try:
                while not done.is_set():
                    i = int(rng.integers(0, 400))
                    hits = c.search(docs[i], k=3)
                    assert hits[0].id == i, (i, hits[:1])
            except Exception as e:
                errors.append(e)

        threads = [threading.Thread(target=writer)] + [threading.Thread(target=searcher, args=(s,)) for s in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors, errors[:3]
        assert len(c) == 1200


def test_read_only_handle_refreshes(path):
    docs = corpus(20, DIM, seed=11)
    w = small(path)
    w.insert_batch(list(range(10)), docs[:10])
    r = quiverdb.Collection.open(path, read_only=True)
    assert len(r) == 10
    w.insert_batch(list(range(10, 20)), docs[10:])
    w.flush()
    assert len(r) == 10
    r.refresh()
    assert len(r) == 20 and r.search(docs[15], k=1)[0].id == 15
    r.verify()
    w.close()
    r.close()


def test_search_batch_and_subset(path):
    docs = corpus(100, DIM, seed=12)
    with small(path) as c:
        c.insert_batch([f"d{i}" for i in range(100)], docs)
        res = c.search_batch([docs[1], docs[2], docs[3]], k=2, threads=2)
        assert [r[0].id for r in res] == ["d1", "d2", "d3"]
        only = c.search(docs[1], k=5, ids=["d50", "d60", "d1", "d-missing"])
        assert {h.id for h in only} == {"d50", "d60", "d1"} and only[0].id == "d1"
        with pytest.raises(quiverdb.InvalidParameter):
            c.search_batch([docs[1]], k=2, threads=0)


def test_search_stages_can_be_set(path):
    """``candidates``, ``probe``, ``rerank`` and ``navigation`` reach the engine: covering the corpus
    at every stage gives numpy's exact top-10 with either navigation; turning the inverted lists off
    still answers; out-of-range stage sizes and unknown navigations are ``InvalidParameter``."""
    docs, queries = topical(600, 10, DIM, seed=21)
    with small(path) as c:
        c.insert_batch(list(range(600)), docs)
        c.flush()
        stored = [d.astype(np.float16).astype(np.float32) for d in docs]
        for q in queries:
            scores = np.array([exact_maxsim(q, d) for d in stored])
            exact = np.argsort(-scores, kind="stable")[:10].tolist()
            hits = c.search(q, k=10, candidates=600, probe=0, rerank=600)
            assert {h.id for h in hits} == set(exact)
            batch = c.search_batch([q], k=10, candidates=600, probe=0, rerank=600)
            assert [h.id for h in batch[0]] == [h.id for h in hits]
            assert len(c.search(q, k=10, candidates=50, probe=0)) == 10
            for nav in ("pq", "centroids"):
                hits = c.search(q, k=10, candidates=600, probe=0, rerank=600, navigation=nav)
                assert {h.id for h in hits} == set(exact), nav
                batch = c.search_batch([q], k=10, candidates=600, probe=0, rerank=600, navigation=nav)
                assert [h.id for h in batch[0]] == [h.id for h in hits], nav
        with pytest.raises(quiverdb.InvalidParameter, match="navigation"):
            c.search(queries[0], k=10, navigation="hnsw")
        with pytest.raises(quiverdb.InvalidParameter, match="candidates"):
            c.search(queries[0], k=10, candidates=0)
        with pytest.raises(quiverdb.InvalidParameter, match="probe"):
            c.search(queries[0], k=10, probe=10**9)


def test_filtered_search_on_indexed_fields(tmp_path):
    rng = np.random.default_rng(5)
    fields = {"lang": "keyword", "year": "integer", "score": "float", "open": "bool"}
    c = quiverdb.Collection.create(tmp_path / "f", dim=16, indexed_fields=fields, graph_min_docs=64)
    docs = {}
    for i in range(300):
        key = f"doc-{i}" if i % 2 else i
        payload = {"lang": ["en", "de", "fr"][i % 3], "year": 2000 + i % 30, "score": i / 300, "open": i % 4 == 0}
        docs[key] = payload
        c.insert(key, rng.standard_normal((3 + i % 5, 16)), payload)
        if i == 199:
            c.flush()
    q = rng.standard_normal((4, 16))
    filters = [
        ({"field": "lang", "eq": "de"}, lambda p: p["lang"] == "de"),
        ({"and": [{"field": "year", "gte": 2020}, {"field": "open", "eq": True}]}, lambda p: p["year"] >= 2020 and p["open"]),
        ('{"not": {"field": "score", "lt": 0.9}}', lambda p: p["score"] >= 0.9),
    ]
    for flt, keep in filters:
        passing = {k for k, p in docs.items() if keep(p)}
        hits = c.search(q, k=len(passing) + 5, rerank=400, filter=flt)
        assert {h.id for h in hits} == passing, flt
        for h in hits:
            assert h.payload == docs[h.id], "the payload comes back as given, the key hidden"
        assert {h.id for h in c.search_batch([q], k=len(passing) + 5, rerank=400, filter=flt)[0]} == passing
    allowed = [1, "doc-5", 6]
    assert {h.id for h in c.search(q, k=10, ids=allowed, filter={"field": "lang", "eq": "fr"})} == {"doc-5"}
    with pytest.raises(quiverdb.InvalidInput, match="not indexed"):
        c.search(q, filter={"field": "colour", "eq": "red"})
    with pytest.raises(quiverdb.InvalidInput, match="indexed as integer"):
        c.insert(999, rng.standard_normal((2, 16)), {"year": "soon"})
    with pytest.raises(quiverdb.InvalidInput, match="reserved"):
        c.insert(998, rng.standard_normal((2, 16)), {"_quiverdb_key": "x"})
    c.index_field("tier", "integer")
    c.insert(1001, rng.standard_normal((2, 16)), {"tier": 2, "lang": "en"})
    assert [h.id for h in c.search(q, k=5, filter={"field": "tier", "eq": 2})] == [1001]
    with pytest.raises(quiverdb.InvalidInput, match="already indexed"):
        c.index_field("tier", "integer")
    with pytest.raises(quiverdb.InvalidInput, match="unknown field kind"):
        quiverdb.Collection.create(tmp_path / "bad", dim=16, indexed_fields={"a": "text"})
    c.close()
