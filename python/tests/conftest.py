import numpy as np
import pytest


def exact_maxsim(query: np.ndarray, doc: np.ndarray) -> float:
    """The reference: sum over query tokens of the best inner product with a document token."""
    return float((query.astype(np.float64) @ doc.astype(np.float64).T).max(axis=1).sum())


def corpus(n_docs: int, dim: int, seed: int, min_tokens: int = 4, max_tokens: int = 24):
    """Clustered unit-norm token vectors, shaped like a late-interaction model's output."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(64, dim))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    docs = []
    for _ in range(n_docs):
        n = int(rng.integers(min_tokens, max_tokens + 1))
        t = centers[rng.integers(0, len(centers), size=n)] + 0.35 * rng.normal(size=(n, dim))
        t /= np.linalg.norm(t, axis=1, keepdims=True)
        docs.append(t.astype(np.float32))
    return docs


def topical(n_docs: int, n_queries: int, dim: int, seed: int, n_topics: int = 50, per_topic: int = 8):
    """Retrieval-shaped data: each document draws 8-32 tokens from one topic's clusters; each query
    takes 3-8 tokens of one document, perturbed (short queries, like NFCorpus')."""
    rng = np.random.default_rng(seed)
    clusters = rng.normal(size=(n_topics * per_topic, dim))
    clusters /= np.linalg.norm(clusters, axis=1, keepdims=True)

    def unit(x):
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    docs = []
    for _ in range(n_docs):
        t, n = int(rng.integers(n_topics)), int(rng.integers(8, 33))
        base = clusters[t * per_topic + rng.integers(0, per_topic, size=n)]
        docs.append(unit(base + 1.2 * rng.normal(size=(n, dim)) / np.sqrt(dim)))
    queries = []
    for _ in range(n_queries):
        d = docs[int(rng.integers(n_docs))]
        m = int(rng.integers(3, 9))
        queries.append(unit(d[rng.integers(0, len(d), size=m)] + 1.2 * rng.normal(size=(m, dim)) / np.sqrt(dim)))
    return docs, queries


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "coll")
