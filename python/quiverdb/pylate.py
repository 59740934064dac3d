"""A PyLate index backed by quiverdb: swap ``indexes.PLAID(...)`` for ``QuiverIndex(...)`` and keep
``retrieve.ColBERT(index=index).retrieve(queries_embeddings, k)``.

>>> from quiverdb.pylate import QuiverIndex                             # doctest: +SKIP
>>> index = QuiverIndex(index_folder="pylate-index", index_name="index", override=True)
>>> index.add_documents(documents_ids=ids, documents_embeddings=embeddings)
>>> retriever = retrieve.ColBERT(index=index)
>>> retriever.retrieve(queries_embeddings=queries, k=10)

Neither torch nor pylate is needed: inputs are duck-typed (lists of numpy arrays, lists of
lists, 3-D arrays, or CPU tensors through ``__array__``). Results follow PyLate's contract: one list
per query of ``{"id": <document id>, "score": <float>}``, best first.
"""

from __future__ import annotations

import os
import shutil
from typing import Any, Optional, Sequence, Union

import numpy as np

from . import Collection

__all__ = ["QuiverIndex"]


def _as_list_of_matrices(embeddings: Any) -> "list[Any]":
    """A list of per-item ``n x dim`` matrices. A single 2-D array (one query or document) is a
    list of one, as PyLate's encoders return for a single string."""
    if hasattr(embeddings, "__array__") and not isinstance(embeddings, (list, tuple)):
        a = np.asarray(embeddings)
        if a.ndim == 2:
            return [a]
        if a.ndim == 3:
            return list(a)
        raise ValueError(f"expected a 2-D or 3-D array of embeddings, got shape {a.shape}")
    items = list(embeddings)
    if items and np.asarray(items[0]).ndim == 1:
        # A list of token vectors: one matrix.
        return [np.asarray(items)]
    return items


class QuiverIndex:
    """PyLate index interface over a quiverdb collection at ``index_folder/index_name``.

    The collection is created at the first :meth:`add_documents` (its dimension is taken from the
    embeddings) unless it exists; ``override=True`` deletes an existing one first. Extra keyword
    arguments (``storage``, ``durability``, engine options) go to :meth:`Collection.create`.
    """

    def __init__(
        self,
        index_folder: str = "indexes",
        index_name: str = "quiverdb",
        override: bool = False,
        **create_options: Any,
    ) -> None:
        self.path = os.path.join(index_folder, index_name)
        self._create_options = create_options
        if override and os.path.exists(self.path):
            shutil.rmtree(self.path)
        self._collection: Optional[Collection] = None
        if os.path.exists(os.path.join(self.path, "catalog")):
            self._collection = Collection.open(self.path)

    @property
    def collection(self) -> Collection:
        """The underlying :class:`quiverdb.Collection` (raises if no document was added yet)."""
        if self._collection is None:
            raise RuntimeError(f"the index at {self.path} has no documents yet")
        return self._collection

    def add_documents(
        self,
        documents_ids: Union[str, Sequence[str]],
        documents_embeddings: Any,
        batch_size: int = 2000,
        **_: Any,
    ) -> "QuiverIndex":
        """Adds (or replaces) documents, ``batch_size`` per atomic batch; returns the index."""
        ids = [documents_ids] if isinstance(documents_ids, str) else list(documents_ids)
        embeddings = _as_list_of_matrices(documents_embeddings)
        if len(ids) != len(embeddings):
            raise ValueError(f"{len(ids)} document ids for {len(embeddings)} embeddings")
        if not ids:
            return self
        if self._collection is None:
            dim = np.asarray(embeddings[0]).shape[-1]
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            self._collection = Collection.create(self.path, int(dim), **self._create_options)
        size = max(1, int(batch_size))
        for start in range(0, len(ids), size):
            self._collection.upsert_batch(ids[start : start + size], embeddings[start : start + size])
        return self

    def remove_documents(self, documents_ids: Union[str, Sequence[str]]) -> "QuiverIndex":
        """Deletes documents (ids not present are ignored); returns the index."""
        ids = [documents_ids] if isinstance(documents_ids, str) else list(documents_ids)
        if self._collection is not None:
            for i in ids:
                self._collection.delete(i)
        return self

    def __call__(
        self,
        queries_embeddings: Any,
        k: int = 10,
        subset: Union[Sequence[str], Sequence[Sequence[str]], None] = None,
        **_: Any,
    ) -> "list[list[dict]]":
        """Top-``k`` documents per query by MaxSim. ``subset``: one list of ids for every query, or
        one list per query, restricting the search to those documents."""
        queries = _as_list_of_matrices(queries_embeddings)
        if self._collection is None:
            return [[] for _ in queries]
        per_query: "list[Optional[list[str]]]"
        if subset is None:
            per_query = [None] * len(queries)
        elif len(subset) > 0 and not isinstance(subset[0], str):
            per_query = [list(s) for s in subset]  # type: ignore[arg-type]
            if len(per_query) != len(queries):
                raise ValueError(f"{len(per_query)} subsets for {len(queries)} queries")
        else:
            shared = list(subset)  # type: ignore[arg-type]
            per_query = [shared] * len(queries)
        out = []
        if subset is None:
            for hits in self._collection.search_batch(queries, k=k):
                out.append([{"id": h.id, "score": h.score} for h in hits])
            return out
        for q, ids in zip(queries, per_query):
            hits = self._collection.search(q, k=k, ids=ids)
            out.append([{"id": h.id, "score": h.score} for h in hits])
        return out

    def get_documents_embeddings(self, documents_ids: "Sequence[Sequence[str]]") -> "list[list[np.ndarray]]":
        """The stored embeddings, in the shape of ``documents_ids`` (a list of lists); a missing
        id raises ``KeyError``."""
        out = []
        for group in documents_ids:
            row = []
            for i in group:
                found = self.collection.get(i)
                if found is None:
                    raise KeyError(i)
                row.append(found[0])
            out.append(row)
        return out
