"""quiverdb: an embedded, on-disk multi-vector (late-interaction, MaxSim) database.

A document is a set of token vectors (an ``n_tokens x dim`` array, e.g. the output of a ColBERT,
ColPali or PyLate model); relevance is MaxSim. The engine is Rust; this package is its binding:
numpy arrays in and out, the GIL released while the engine works.

>>> import numpy as np, quiverdb
>>> with quiverdb.Collection.create("my.quiver", dim=128) as c:        # doctest: +SKIP
...     c.insert("doc-1", np.random.rand(30, 128), {"title": "..."})
...     hits = c.search(np.random.rand(8, 128), k=10)

Ids are strings or integers in ``[0, 2**63)``. Payloads are ``dict`` (stored as JSON) or
``bytes``. Every engine error is a subclass of :class:`quiverdb.Error`.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any, Iterable, Mapping, NamedTuple, Optional, Sequence, Union

import numpy as np

from . import _quiverdb
from ._quiverdb import (
    AlreadyExists,
    CatalogError,
    Closed,
    Corruption,
    Error,
    IdExists,
    InvalidInput,
    InvalidParameter,
    Locked,
    NotACollection,
    Poisoned,
    ReadOnly,
    StorageError,
)

__all__ = [
    "Collection",
    "Hit",
    "Error",
    "InvalidInput",
    "InvalidParameter",
    "Corruption",
    "StorageError",
    "NotACollection",
    "AlreadyExists",
    "Locked",
    "Poisoned",
    "IdExists",
    "Closed",
    "CatalogError",
    "ReadOnly",
    "KeyCollision",
]

__version__ = "0.1.0"

Id = Union[str, int]
Payload = Union[dict, list, bytes, None]

#: Integer ids live below 2**63; string ids are mapped above it, so the two never meet.
_STRING_BIT = 1 << 63
_MAGIC = b"QV\x01"
_TAG_NONE, _TAG_JSON, _TAG_BYTES = 0, 1, 2
_F32_MAX = float(np.finfo(np.float32).max)


class KeyCollision(InvalidInput):
    """Two different string ids hash to the same 64-bit engine id (about 1 in 10^19 per pair)."""


class Hit(NamedTuple):
    """One search result: the document's id, its exact MaxSim score, and its payload."""

    id: Id
    score: float
    payload: Payload


def _fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def _engine_id(key: Id) -> int:
    """The engine's u64 id for a user id: integers as they are, strings hashed above 2**63."""
    if isinstance(key, bool):
        raise InvalidInput(f"invalid input: id {key!r} is a bool, not an int or str")
    if isinstance(key, (int, np.integer)):
        key = int(key)
        if not 0 <= key < _STRING_BIT:
            raise InvalidInput(f"invalid input: integer id {key} is outside [0, 2**63)")
        return key
    if isinstance(key, str):
        return _fnv1a64(key.encode("utf-8")) | _STRING_BIT
    raise InvalidInput(f"invalid input: id {key!r} is a {type(key).__name__}, not an int or str")


# The key a dict payload's stored JSON object carries a string id under (refused in user dicts).
_KEY_FIELD = "_quiverdb_key"


def _encode_payload(key: Id, payload: Payload) -> bytes:
    """The stored payload, with the string key (if any) in the same WAL record as the document, so
    it is exactly as durable. A dict is stored as a JSON object, the key under ``_quiverdb_key``,
    so the engine's indexed fields (filtered search) see its top-level keys; anything else goes in
    a small envelope."""
    k = key.encode("utf-8") if isinstance(key, str) else b""
    if isinstance(payload, dict):
        if _KEY_FIELD in payload:
            raise InvalidInput(f"invalid input: payload key {_KEY_FIELD!r} is reserved")
        obj = dict(payload)
        if isinstance(key, str):
            obj[_KEY_FIELD] = key
        try:
            return json.dumps(obj, separators=(",", ":")).encode("utf-8")
        except (TypeError, ValueError) as e:
            raise InvalidInput(f"invalid input: payload is not JSON-serialisable ({e})") from None
    if payload is None:
        tag, data = _TAG_NONE, b""
    elif isinstance(payload, (dict, list)):
        tag, data = _TAG_JSON, json.dumps(payload, separators=(",", ":")).encode("utf-8")
    elif isinstance(payload, (bytes, bytearray, memoryview)):
        tag, data = _TAG_BYTES, bytes(payload)
    else:
        raise InvalidInput(f"invalid input: payload of type {type(payload).__name__} (use dict, list or bytes)")
    return _MAGIC + bytes([tag]) + struct.pack("<I", len(k)) + k + data


def _filter_json(filter: "Optional[Union[Mapping[str, Any], str]]") -> Optional[str]:
    """A filter as the engine takes it: JSON text."""
    if filter is None or isinstance(filter, str):
        return filter
    if isinstance(filter, Mapping):
        try:
            return json.dumps(filter, separators=(",", ":"))
        except (TypeError, ValueError) as e:
            raise InvalidInput(f"invalid input: filter is not JSON-serialisable ({e})") from None
    raise InvalidInput(f"invalid input: filter of type {type(filter).__name__} (use dict or str)")


def _decode_payload(raw: Optional[bytes]) -> "tuple[Optional[str], Payload]":
    """(string key or None, user payload) of a stored payload. Payloads written by other tools
    (no envelope) come back as parsed JSON when they are JSON, else as bytes."""
    if not raw:
        return None, None
    if raw[:3] == _MAGIC and len(raw) >= 8:
        tag = raw[3]
        (n,) = struct.unpack_from("<I", raw, 4)
        key = raw[8 : 8 + n].decode("utf-8") if n else None
        data = raw[8 + n :]
        if tag == _TAG_JSON:
            return key, json.loads(data)
        if tag == _TAG_BYTES:
            return key, data
        return key, None
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None, raw
    if isinstance(value, dict) and isinstance(value.get(_KEY_FIELD), str):
        key = value.pop(_KEY_FIELD)
        return key, value
    return None, value


def _tokens(x: Any, dim: int, what: str) -> np.ndarray:
    """A C-contiguous float32 ``n x dim`` view of ``x`` (numpy of any float dtype, lists, or
    anything with ``__array__`` such as a CPU torch tensor); no copy when it already is one."""
    a = np.asarray(x)
    if a.ndim == 1:
        a = a.reshape(1, -1)
    if a.ndim != 2:
        raise InvalidInput(f"invalid input: {what} must be a 2-D (tokens x dim) array, got shape {a.shape}")
    if a.shape[1] != dim:
        raise InvalidInput(f"invalid input: {what} has {a.shape[1]}-dimensional tokens, the collection's are {dim}")
    if a.dtype != np.float32:
        if not np.issubdtype(a.dtype, np.floating) and not np.issubdtype(a.dtype, np.integer):
            raise InvalidInput(f"invalid input: {what} has dtype {a.dtype}, expected floats")
        if a.dtype == np.float64 and a.size and np.nanmax(np.abs(a)) > _F32_MAX:
            raise InvalidInput(f"invalid input: {what} holds a float64 value outside the float32 range")
        a = a.astype(np.float32)
    return np.ascontiguousarray(a)


class Collection:
    """An open collection, for reading and writing or (``read_only=True``) reading beside a writer
    in another process. Use as a context manager, or call :meth:`close`. Safe to share between
    Python threads; searches and writes release the GIL."""

    def __init__(self, raw: "_quiverdb.RawCollection", path: str) -> None:
        self._raw = raw
        self._path = str(path)

    # -- opening -----------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: Union[str, "os.PathLike[str]"],
        dim: int,
        *,
        storage: str = "f16",
        durability: str = "sync",
        indexed_fields: Optional[Mapping[str, str]] = None,
        **options: int,
    ) -> "Collection":
        """Creates a collection of ``dim``-dimensional tokens at ``path`` (which must not exist or
        be empty) and opens it for writing.

        ``storage``: ``"f16"`` (default), ``"bf16"`` or ``"f32"``. ``durability``: ``"sync"``
        (fsync before each write returns), ``"none"``, or ``"periodic:MS"``. ``options``:
        ``memtable_max_docs``, ``memtable_max_bytes``, ``background`` (0/1),
        ``maintenance_threads``, ``graph_min_docs``. ``indexed_fields``: payload fields to filter
        on, name to kind (``"keyword"``, ``"integer"``, ``"float"``, ``"bool"``), e.g.
        ``{"lang": "keyword", "year": "integer"}``; see :meth:`search`'s ``filter``.
        """
        opts = [(k, int(v)) for k, v in options.items()]
        fields = [(str(n), str(kind)) for n, kind in (indexed_fields or {}).items()]
        raw = _quiverdb.RawCollection.create(str(path), int(dim), storage, durability, opts, fields)
        return cls(raw, str(path))

    @classmethod
    def open(
        cls,
        path: Union[str, "os.PathLike[str]"],
        *,
        read_only: bool = False,
        durability: Optional[str] = None,
    ) -> "Collection":
        """Opens (and recovers) the collection at ``path``. ``read_only=True`` takes no lock and
        changes nothing on disk; call :meth:`refresh` to see the writer's later commits."""
        return cls(_quiverdb.RawCollection.open(str(path), bool(read_only), durability), str(path))

    def __enter__(self) -> "Collection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- properties --------------------------------------------------------------------------

    @property
    def path(self) -> str:
        """The collection's directory."""
        return self._path

    @property
    def dim(self) -> int:
        """The token dimension."""
        return self._raw.dim

    @property
    def read_only(self) -> bool:
        """True for a handle opened with ``read_only=True``."""
        return self._raw.read_only

    # -- writes ------------------------------------------------------------------------------

    def _check_keys(self, keys: Sequence[Id], ids: Sequence[int]) -> None:
        """Refuses a string id whose engine id already belongs to another string."""
        string = [(k, e) for k, e in zip(keys, ids) if isinstance(k, str)]
        if not string:
            return
        seen: "dict[int, str]" = {}
        for key, eid in string:
            other = seen.setdefault(eid, key)
            if other != key:
                raise KeyCollision(f"invalid input: ids {key!r} and {other!r} map to the same engine id {eid}")
        present = self._raw.contains_many([e for _, e in string])
        for (key, eid), here in zip(string, present):
            if here:
                raw = self._raw.payload(eid)
                if raw is not None:
                    stored_key, _ = _decode_payload(raw)
                    if stored_key is not None and stored_key != key:
                        raise KeyCollision(
                            f"invalid input: ids {key!r} and {stored_key!r} map to the same engine id {eid}"
                        )

    def _write(self, keys: Sequence[Id], tokens: Sequence[Any], payloads: Optional[Sequence[Payload]], upsert: bool) -> None:
        keys = list(keys)
        tokens = list(tokens)
        if payloads is None:
            payloads = [None] * len(keys)
        payloads = list(payloads)
        if not (len(keys) == len(tokens) == len(payloads)):
            raise InvalidInput(
                f"invalid input: {len(keys)} ids, {len(tokens)} token arrays and {len(payloads)} payloads"
            )
        if not keys:
            return
        ids = [_engine_id(k) for k in keys]
        arrays = [_tokens(t, self.dim, f"document {k!r}") for k, t in zip(keys, tokens)]
        raw_payloads = [_encode_payload(k, p) for k, p in zip(keys, payloads)]
        self._check_keys(keys, ids)
        try:
            self._raw.write_batch(ids, arrays, raw_payloads, upsert)
        except IdExists as e:
            raise IdExists(f"{e} (one of the ids already exists; upsert replaces documents)") from None

    def insert(self, id: Id, tokens: Any, payload: Payload = None) -> None:
        """Inserts a new document; raises :class:`IdExists` if ``id`` is present."""
        self._write([id], [tokens], [payload], upsert=False)

    def upsert(self, id: Id, tokens: Any, payload: Payload = None) -> None:
        """Inserts or replaces a document; the old version disappears atomically."""
        self._write([id], [tokens], [payload], upsert=True)

    def insert_batch(self, ids: Sequence[Id], tokens_list: Sequence[Any], payloads: Optional[Sequence[Payload]] = None) -> None:
        """Inserts many documents atomically (one WAL write, one fsync; at most 65,536)."""
        self._write(ids, tokens_list, payloads, upsert=False)

    def upsert_batch(self, ids: Sequence[Id], tokens_list: Sequence[Any], payloads: Optional[Sequence[Payload]] = None) -> None:
        """Like :meth:`insert_batch`, replacing existing ids."""
        self._write(ids, tokens_list, payloads, upsert=True)

    def delete(self, id: Id) -> bool:
        """Deletes ``id``; returns whether it existed."""
        eid = _engine_id(id)
        if isinstance(id, str) and self._stored_key(eid) not in (id, None):
            return False
        return self._raw.delete(eid)

    # -- reads -------------------------------------------------------------------------------

    def _stored_key(self, eid: int) -> Optional[str]:
        raw = self._raw.payload(eid)
        return None if raw is None else _decode_payload(raw)[0]

    def get(self, id: Id) -> "Optional[tuple[np.ndarray, Payload]]":
        """``(tokens, payload)`` of ``id`` (tokens as stored, as float32), or None."""
        eid = _engine_id(id)
        found = self._raw.get(eid)
        if found is None:
            return None
        tokens, raw = found
        key, payload = _decode_payload(raw)
        if isinstance(id, str) and key != id:
            return None
        return tokens, payload

    def __contains__(self, id: Id) -> bool:
        eid = _engine_id(id)
        if isinstance(id, str):
            raw = self._raw.payload(eid)
            return raw is not None and _decode_payload(raw)[0] == id
        return self._raw.contains(eid)

    def _hits(self, raw_hits: "list[tuple[int, float, Optional[bytes]]]") -> "list[Hit]":
        out = []
        for eid, score, raw in raw_hits:
            key, payload = _decode_payload(raw)
            out.append(Hit(key if key is not None else eid, float(score), payload))
        return out

    def index_field(self, name: str, kind: str) -> None:
        """Indexes one more payload field for ``filter`` (``kind``: ``"keyword"``, ``"integer"``,
        ``"float"``, ``"bool"``), for the documents already stored too; refused, naming the
        document, if one gives the field a value of another kind."""
        self._raw.index_field(str(name), str(kind))

    def search(
        self,
        query: Any,
        k: int = 10,
        *,
        rerank: Optional[int] = None,
        candidates: Optional[int] = None,
        probe: Optional[int] = None,
        ids: Optional[Iterable[Id]] = None,
        filter: Optional[Union[Mapping[str, Any], str]] = None,
        navigation: Optional[str] = None,
    ) -> "list[Hit]":
        """The best ``k`` documents for ``query`` (``n_tokens x dim``) by MaxSim, best first.

        The stages (``None``: the engine's defaults, by collection size and query length):
        ``candidates`` found over the graph (by PQ-ADC over the FDE, or by centroid interaction
        in segments of short documents); ``probe``, the nearest token centroids
        whose inverted lists add candidates for each query token (0: none); ``rerank``, the
        candidates reranked by exact MaxSim after the centroid-interaction stage;
        ``navigation``, how the graph walk scores documents: ``"pq"`` (PQ-ADC over the FDE) or
        ``"centroids"`` (centroid interaction; segments without token centroid ids use PQ-ADC).
        ``ids``: search only these documents (an allow-list; every listed document is scored
        exactly, and the stages do not apply). ``filter``: only documents passing it, as a dict
        or a JSON string over the collection's ``indexed_fields``, e.g.
        ``{"and": [{"field": "lang", "eq": "en"}, {"field": "year", "gte": 2020}]}`` (operators
        ``eq``, ``in``, ``gt``, ``gte``, ``lt``, ``lte``, ``and``, ``or``, ``not``; the README's
        "Filtered search")."""
        q = _tokens(query, self.dim, "the query")
        f = _filter_json(filter)
        if ids is not None:
            keys = list(ids)
            eids = [_engine_id(i) for i in keys]
            hits = self._hits(self._raw.search_ids(q, eids, int(k), True, f))
            wanted = set(keys)
            return [h for h in hits if h.id in wanted]
        return self._hits(self._raw.search(q, int(k), rerank, True, candidates, probe, f, navigation))

    def search_batch(
        self,
        queries: Sequence[Any],
        k: int = 10,
        *,
        rerank: Optional[int] = None,
        candidates: Optional[int] = None,
        probe: Optional[int] = None,
        threads: Optional[int] = None,
        filter: Optional[Union[Mapping[str, Any], str]] = None,
        navigation: Optional[str] = None,
    ) -> "list[list[Hit]]":
        """Many queries on one snapshot, in parallel (``threads``: None for all cores); the
        stages and ``filter`` as in :meth:`search`."""
        qs = [_tokens(q, self.dim, f"query {i}") for i, q in enumerate(queries)]
        raw = self._raw.search_batch(
            qs, int(k), rerank, True, threads, candidates, probe, _filter_json(filter), navigation
        )
        return [self._hits(h) for h in raw]

    # -- maintenance -------------------------------------------------------------------------

    def flush(self) -> None:
        """Writes the memtable to a segment (also automatic)."""
        self._raw.flush()

    def compact(self) -> dict:
        """Runs the merge policy to completion (also automatic in the background)."""
        merges, inputs, docs, nbytes = self._raw.compact()
        return {"merges": merges, "inputs": inputs, "docs_written": docs, "bytes_written": nbytes}

    def stats(self) -> dict:
        """Counts and sizes: documents, segments, bytes by kind, resident memory, WAL state."""
        return json.loads(self._raw.stats_json())

    def verify(self) -> None:
        """Checks every checksum and invariant; raises :class:`Corruption` on damage."""
        self._raw.verify()

    def refresh(self) -> None:
        """A read-only handle catches up with the writer (no-op for a writer)."""
        self._raw.refresh()

    def close(self) -> None:
        """Closes the handle (fsyncs the WAL, releases the lock). Idempotent."""
        self._raw.close()

    def __len__(self) -> int:
        return int(self.stats()["documents"])

    def __repr__(self) -> str:
        mode = "read-only" if self._raw_is_open() and self.read_only else "read-write"
        return f"<quiverdb.Collection {self._path!r} dim={self.dim} {mode}>"

    def _raw_is_open(self) -> bool:
        try:
            self._raw.read_only
            return True
        except Closed:
            return False

