"""Type stubs of the Rust extension (`python/src/lib.rs`). Use the `quiverdb` package API instead."""

from typing import List, Optional, Sequence, Tuple

import numpy as np

class Error(Exception):
    """Base class of every quiverdb error."""

class InvalidInput(Error):
    """A vector, matrix, document or id is malformed."""

class InvalidParameter(Error):
    """A parameter is outside its allowed range."""

class Corruption(Error):
    """Bytes on disk do not decode (damaged file)."""

class StorageError(Error):
    """An operating-system I/O error (disk full, permissions, ...)."""

class NotACollection(Error):
    """The path holds no collection."""

class AlreadyExists(Error):
    """create() found an existing, non-empty directory."""

class Locked(Error):
    """Another handle has the collection open for writing."""

class Poisoned(Error):
    """An earlier write failed; reopen the collection."""

class IdExists(Error):
    """insert() of an id the collection holds (use upsert)."""

class Closed(Error):
    """The handle was closed."""

class CatalogError(Error):
    """The RocksDB catalog reported an error."""

class ReadOnly(Error):
    """A write was attempted through a read-only handle."""

RawHit = Tuple[int, float, Optional[bytes]]

class RawCollection:
    """One open collection (writer or read-only handle), engine ids (u64) and payload bytes."""

    @staticmethod
    def create(path: str, dim: int, storage: str, durability: str, options: Sequence[Tuple[str, int]], indexed_fields: Sequence[Tuple[str, str]] = ...) -> "RawCollection": ...
    @staticmethod
    def open(path: str, read_only: bool, durability: Optional[str] = None) -> "RawCollection": ...
    @property
    def dim(self) -> int: ...
    @property
    def read_only(self) -> bool: ...
    def write_batch(self, ids: Sequence[int], tokens: Sequence[np.ndarray], payloads: Sequence[Optional[bytes]], upsert: bool) -> None: ...
    def delete(self, id: int) -> bool: ...
    def contains(self, id: int) -> bool: ...
    def contains_many(self, ids: Sequence[int]) -> List[bool]: ...
    def payload(self, id: int) -> Optional[bytes]: ...
    def get(self, id: int) -> Optional[Tuple[np.ndarray, bytes]]: ...
    def index_field(self, name: str, kind: str) -> None: ...
    def search(self, query: np.ndarray, k: int, rerank: Optional[int] = None, with_payload: bool = True, candidates: Optional[int] = None, probe: Optional[int] = None, filter: Optional[str] = None, navigation: Optional[str] = None) -> List[RawHit]: ...
    def search_batch(self, queries: Sequence[np.ndarray], k: int, rerank: Optional[int] = None, with_payload: bool = True, threads: Optional[int] = None, candidates: Optional[int] = None, probe: Optional[int] = None, filter: Optional[str] = None, navigation: Optional[str] = None) -> List[List[RawHit]]: ...
    def search_ids(self, query: np.ndarray, ids: Sequence[int], k: int, with_payload: bool = True, filter: Optional[str] = None) -> List[RawHit]: ...
    def flush(self) -> None: ...
    def compact(self) -> Tuple[int, int, int, int]: ...
    def stats_json(self) -> str: ...
    def verify(self) -> None: ...
    def refresh(self) -> None: ...
    def close(self) -> None: ...
