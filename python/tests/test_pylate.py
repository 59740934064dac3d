"""The PyLate adapter end to end, with numpy arrays shaped like PyLate's encoder output (a list of
``n_tokens x dim`` float32 arrays per call; one 2-D array for a single string)."""

import numpy as np
import pytest

from conftest import corpus, exact_maxsim
from quiverdb.pylate import QuiverIndex

DIM = 48


def test_pylate_index_end_to_end(tmp_path):
    docs = corpus(400, DIM, seed=21, min_tokens=10, max_tokens=30)
    ids = [f"document_id_{i}" for i in range(len(docs))]
    index = QuiverIndex(index_folder=str(tmp_path), index_name="colbert", override=True)
    assert index.add_documents(documents_ids=ids, documents_embeddings=docs, batch_size=128) is index

    queries = corpus(12, DIM, seed=22, min_tokens=3, max_tokens=10)
    results = index(queries_embeddings=queries, k=5)
    assert isinstance(results, list) and len(results) == len(queries)
    stored = [d.astype(np.float16).astype(np.float32) for d in docs]
    for q, res in zip(queries, results):
        assert len(res) == 5 and all(set(r) == {"id", "score"} for r in res)
        assert [r["score"] for r in res] == sorted((r["score"] for r in res), reverse=True)
        best = int(np.argmax([exact_maxsim(q, d) for d in stored]))
        assert res[0]["id"] == ids[best]

    # A single query as one 2-D array (what PyLate's encoder returns for one string).
    single = index(queries_embeddings=queries[0], k=2)
    assert len(single) == 1 and len(single[0]) == 2

    # subset: one list for all queries, or one per query.
    shared = index(queries_embeddings=queries[:2], k=3, subset=["document_id_10", "document_id_11"])
    assert all({r["id"] for r in res} <= {"document_id_10", "document_id_11"} for res in shared)
    per = index(queries_embeddings=queries[:2], k=3, subset=[["document_id_1"], ["document_id_2"]])
    assert [[r["id"] for r in res] for res in per] == [["document_id_1"], ["document_id_2"]]

    emb = index.get_documents_embeddings([["document_id_3", "document_id_4"], ["document_id_5"]])
    assert [len(g) for g in emb] == [2, 1]
    np.testing.assert_allclose(emb[0][0], stored[3])

    index.remove_documents(["document_id_3"])
    with pytest.raises(KeyError):
        index.get_documents_embeddings([["document_id_3"]])
    assert all(r["id"] != "document_id_3" for res in index(queries_embeddings=[docs[3]], k=10) for r in res)

    # Reopening the folder keeps everything (override=False).
    index.collection.close()
    again = QuiverIndex(index_folder=str(tmp_path), index_name="colbert")
    assert again(queries_embeddings=[docs[7]], k=1)[0][0]["id"] == "document_id_7"
    again.collection.close()


def test_pylate_inputs_as_lists_of_lists_and_3d_arrays(tmp_path):
    docs = np.stack(corpus(20, DIM, seed=23, min_tokens=6, max_tokens=6))  # 20 x 6 x DIM
    index = QuiverIndex(index_folder=str(tmp_path), index_name="i", override=True)
    index.add_documents([f"d{i}" for i in range(20)], docs)  # one 3-D array
    res = index([docs[4].tolist()], k=1)  # a query as a list of lists
    assert res[0][0]["id"] == "d4"
    index.collection.close()
