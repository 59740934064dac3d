//! `quiverdb._quiverdb`: the PyO3 layer over the Rust engine. Bindings only: every operation is
//! one call into `quiverdb::Collection` or `quiverdb::CollectionReader`, with numpy arrays in and
//! out, the GIL released while the engine works, and each `quiverdb::Error` kind raised as its own
//! exception class. String keys, payload envelopes and the PyLate adapter live in the Python
//! package (`python/quiverdb/`), on top of these calls.

use std::sync::RwLock;

use numpy::{PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use quiverdb::{
    Collection, CollectionOptions, CollectionReader, Durability, FieldKind, Filter, IndexedField, NewDocument,
    OpenOptions, SearchParams, TokenStorage,
};

create_exception!(_quiverdb, Error, PyException, "Base class of every quiverdb error.");
create_exception!(_quiverdb, InvalidInput, Error, "A vector, matrix, document or id is malformed.");
create_exception!(_quiverdb, InvalidParameter, Error, "A parameter is outside its allowed range.");
create_exception!(_quiverdb, Corruption, Error, "Bytes on disk do not decode (damaged file).");
create_exception!(_quiverdb, StorageError, Error, "An operating-system I/O error (disk full, permissions, ...).");
create_exception!(_quiverdb, NotACollection, Error, "The path holds no collection.");
create_exception!(_quiverdb, AlreadyExists, Error, "create() found an existing, non-empty directory.");
create_exception!(_quiverdb, Locked, Error, "Another handle has the collection open for writing.");
create_exception!(_quiverdb, Poisoned, Error, "An earlier write failed; reopen the collection.");
create_exception!(_quiverdb, IdExists, Error, "insert() of an id the collection holds (use upsert).");
create_exception!(_quiverdb, Closed, Error, "The handle was closed.");
create_exception!(_quiverdb, CatalogError, Error, "The RocksDB catalog reported an error.");
create_exception!(_quiverdb, ReadOnly, Error, "A write was attempted through a read-only handle.");

/// The exception class of an engine error, carrying the engine's one-sentence message.
fn to_py(e: quiverdb::Error) -> PyErr {
    let msg = e.to_string();
    match e {
        quiverdb::Error::InvalidInput(_) => InvalidInput::new_err(msg),
        quiverdb::Error::InvalidParameter { .. } => InvalidParameter::new_err(msg),
        quiverdb::Error::Corruption { .. } => Corruption::new_err(msg),
        quiverdb::Error::Io { .. } => StorageError::new_err(msg),
        quiverdb::Error::NotACollection { .. } => NotACollection::new_err(msg),
        quiverdb::Error::AlreadyExists { .. } => AlreadyExists::new_err(msg),
        quiverdb::Error::Locked { .. } => Locked::new_err(msg),
        quiverdb::Error::Poisoned { .. } => Poisoned::new_err(msg),
        quiverdb::Error::IdExists { .. } => IdExists::new_err(msg),
        quiverdb::Error::Closed => Closed::new_err(msg),
        quiverdb::Error::Catalog { .. } => CatalogError::new_err(msg),
        _ => Error::new_err(msg),
    }
}

enum Handle {
    Writer(Collection),
    Reader(CollectionReader),
}

/// One open collection: a writer or a read-only handle. Shared by Python threads; `close` waits
/// for calls in flight.
#[pyclass(frozen)]
struct RawCollection {
    handle: RwLock<Option<Handle>>,
    dim: usize,
}

fn parse_storage(name: &str) -> PyResult<TokenStorage> {
    TokenStorage::from_name(name).map_err(to_py)
}

fn parse_durability(name: &str) -> PyResult<Durability> {
    match name {
        "sync" => Ok(Durability::Sync),
        "none" => Ok(Durability::None),
        other => match other.strip_prefix("periodic:").and_then(|ms| ms.parse::<u64>().ok()) {
            Some(ms) => Ok(Durability::Periodic(std::time::Duration::from_millis(ms))),
            None => Err(InvalidParameter::new_err(format!(
                "invalid parameter `durability`: {other:?} is not \"sync\", \"none\" or \"periodic:MS\""
            ))),
        },
    }
}

/// The slice of a C-contiguous `n × dim` float32 array (the Python layer makes it so).
fn rows<'a>(a: &'a PyReadonlyArray2<'_, f32>, dim: usize, what: &str) -> PyResult<&'a [f32]> {
    let shape = a.shape();
    if shape[1] != dim {
        return Err(InvalidInput::new_err(format!(
            "invalid input: {what} has {}-dimensional tokens, the collection's are {dim}",
            shape[1]
        )));
    }
    a.as_slice().map_err(|e| InvalidInput::new_err(format!("invalid input: {what} is not contiguous: {e}")))
}

impl RawCollection {
    fn with<T>(&self, f: impl FnOnce(&Handle) -> PyResult<T>) -> PyResult<T> {
        let guard = self.handle.read().map_err(|_| Error::new_err("the handle's lock is poisoned"))?;
        match guard.as_ref() {
            Some(h) => f(h),
            None => Err(Closed::new_err("the collection handle is closed")),
        }
    }

    fn writer<T>(&self, f: impl FnOnce(&Collection) -> PyResult<T>) -> PyResult<T> {
        self.with(|h| match h {
            Handle::Writer(c) => f(c),
            Handle::Reader(_) => Err(ReadOnly::new_err("the collection was opened read-only")),
        })
    }
}

/// The search stages a caller may set (`None`: the engine's defaults, `SearchParams::stages`).
#[derive(Clone, Copy)]
struct Stages<'a> {
    rerank: Option<usize>,
    candidates: Option<usize>,
    probe: Option<usize>,
    /// `"pq"` or `"centroids"` (`SearchParams::navigation`; `None`: each segment's default).
    navigation: Option<&'a str>,
}

fn search_params(k: usize, stages: Stages<'_>, with_payload: bool, filter: Option<&str>) -> PyResult<SearchParams> {
    let mut p = SearchParams::new(k);
    p.rerank = stages.rerank;
    p.candidates = stages.candidates;
    p.probe = stages.probe;
    p.navigation = stages.navigation.map(quiverdb::Navigation::parse).transpose().map_err(to_py)?;
    p.with_payload = with_payload;
    p.filter = filter.map(Filter::from_json).transpose().map_err(to_py)?;
    Ok(p)
}

type PyHit = (u64, f32, Option<Py<PyBytes>>);

/// A stored document as Python sees it: tokens (`n × dim` float32) and payload bytes.
type PyDocument<'py> = (Bound<'py, PyArray2<f32>>, Bound<'py, PyBytes>);

fn hits_to_py(py: Python<'_>, hits: Vec<quiverdb::Hit>) -> Vec<PyHit> {
    hits.into_iter().map(|h| (h.id, h.score, h.payload.map(|p| PyBytes::new(py, &p).unbind()))).collect()
}

#[pymethods]
impl RawCollection {
    /// Creates a collection and opens it for writing. `options` are `(name, value)` pairs.
    #[staticmethod]
    #[pyo3(signature = (path, dim, storage, durability, options, indexed_fields=Vec::new()))]
    fn create(
        py: Python<'_>,
        path: std::path::PathBuf,
        dim: u32,
        storage: &str,
        durability: &str,
        options: Vec<(String, u64)>,
        indexed_fields: Vec<(String, String)>,
    ) -> PyResult<Self> {
        let mut o = CollectionOptions::new(dim);
        o.storage = parse_storage(storage)?;
        o.durability = parse_durability(durability)?;
        for (name, kind) in indexed_fields {
            o.indexed_fields.push(IndexedField::new(name, FieldKind::parse(&kind).map_err(to_py)?));
        }
        let mut open = OpenOptions::default();
        for (name, value) in options {
            match name.as_str() {
                "memtable_max_docs" => open.memtable_max_docs = value as usize,
                "memtable_max_bytes" => open.memtable_max_bytes = value as usize,
                "background" => open.background = value != 0,
                "maintenance_threads" => open.maintenance_threads = Some(value as usize),
                "graph_min_docs" => o.graph.min_docs = value,
                other => {
                    return Err(InvalidParameter::new_err(format!(
                        "invalid parameter `{other}`: unknown option (known: memtable_max_docs, \
                         memtable_max_bytes, background, maintenance_threads, graph_min_docs)"
                    )))
                }
            }
        }
        let c = py.detach(|| Collection::create(&path, o, open)).map_err(to_py)?;
        Ok(RawCollection { handle: RwLock::new(Some(Handle::Writer(c))), dim: dim as usize })
    }

    /// Opens a collection, for writing or read-only.
    #[staticmethod]
    #[pyo3(signature = (path, read_only, durability=None))]
    fn open(py: Python<'_>, path: std::path::PathBuf, read_only: bool, durability: Option<&str>) -> PyResult<Self> {
        let durability = durability.map(parse_durability).transpose()?;
        let handle = py
            .detach(|| {
                if read_only {
                    CollectionReader::open(&path).map(Handle::Reader)
                } else {
                    Collection::open_with(&path, OpenOptions { durability, ..Default::default() }).map(Handle::Writer)
                }
            })
            .map_err(to_py)?;
        let dim = match &handle {
            Handle::Writer(c) => c.options().dim,
            Handle::Reader(r) => r.options().dim,
        } as usize;
        Ok(RawCollection { handle: RwLock::new(Some(handle)), dim })
    }

    /// The token dimension.
    #[getter]
    fn dim(&self) -> usize {
        self.dim
    }

    /// True for a read-only handle.
    #[getter]
    fn read_only(&self) -> PyResult<bool> {
        self.with(|h| Ok(matches!(h, Handle::Reader(_))))
    }

    /// Writes documents in one atomic batch (one WAL write, one fsync). `upsert` replaces ids.
    #[pyo3(signature = (ids, tokens, payloads, upsert))]
    fn write_batch(
        &self,
        py: Python<'_>,
        ids: Vec<u64>,
        tokens: Vec<PyReadonlyArray2<'_, f32>>,
        payloads: Vec<Option<Vec<u8>>>,
        upsert: bool,
    ) -> PyResult<()> {
        if ids.len() != tokens.len() || ids.len() != payloads.len() {
            return Err(InvalidInput::new_err(format!(
                "invalid input: {} ids, {} token arrays and {} payloads",
                ids.len(),
                tokens.len(),
                payloads.len()
            )));
        }
        let mut slices = Vec::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            slices.push(rows(t, self.dim, &format!("document {}", ids[i]))?);
        }
        let docs: Vec<NewDocument<'_>> = ids
            .iter()
            .zip(&slices)
            .zip(&payloads)
            .map(|((&id, &tokens), p)| NewDocument { id, tokens, payload: p.as_deref() })
            .collect();
        self.writer(|c| py.detach(|| if upsert { c.upsert_batch(&docs) } else { c.insert_batch(&docs) }).map_err(to_py))
    }

    /// Deletes `id`; returns whether it existed.
    fn delete(&self, py: Python<'_>, id: u64) -> PyResult<bool> {
        self.writer(|c| py.detach(|| c.delete(id)).map_err(to_py))
    }

    /// Whether `id` is present.
    fn contains(&self, py: Python<'_>, id: u64) -> PyResult<bool> {
        self.with(|h| {
            py.detach(|| match h {
                Handle::Writer(c) => c.contains(id),
                Handle::Reader(r) => r.contains(id),
            })
            .map_err(to_py)
        })
    }

    /// The payload bytes of `id`, or None; the tokens are not read.
    fn payload<'py>(&self, py: Python<'py>, id: u64) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let p = self.with(|h| {
            py.detach(|| match h {
                Handle::Writer(c) => c.payload(id),
                Handle::Reader(r) => r.payload(id),
            })
            .map_err(to_py)
        })?;
        Ok(p.map(|p| PyBytes::new(py, &p)))
    }

    /// For each id, whether it is present (one call for a whole batch).
    fn contains_many(&self, py: Python<'_>, ids: Vec<u64>) -> PyResult<Vec<bool>> {
        self.with(|h| {
            py.detach(|| {
                ids.iter()
                    .map(|&id| match h {
                        Handle::Writer(c) => c.contains(id),
                        Handle::Reader(r) => r.contains(id),
                    })
                    .collect::<quiverdb::Result<Vec<bool>>>()
            })
            .map_err(to_py)
        })
    }

    /// `(tokens as a float32 n × dim array, payload bytes)` of `id`, or None.
    fn get<'py>(&self, py: Python<'py>, id: u64) -> PyResult<Option<PyDocument<'py>>> {
        let doc = self.with(|h| {
            py.detach(|| match h {
                Handle::Writer(c) => c.get(id),
                Handle::Reader(r) => r.get(id),
            })
            .map_err(to_py)
        })?;
        let Some(doc) = doc else { return Ok(None) };
        let n = doc.tokens.len() / self.dim.max(1);
        let array = PyArray1::from_vec(py, doc.tokens).reshape([n, self.dim])?;
        Ok(Some((array, PyBytes::new(py, &doc.payload))))
    }

    /// Indexes one more payload field (`kind`: keyword, integer, float, bool) for the stored
    /// documents and those to come.
    fn index_field(&self, py: Python<'_>, name: String, kind: &str) -> PyResult<()> {
        let field = IndexedField::new(name, FieldKind::parse(kind).map_err(to_py)?);
        self.writer(|c| py.detach(|| c.index_field(field)).map_err(to_py))
    }

    /// The best `k` documents by MaxSim: `(id, score, payload bytes or None)`, best first.
    #[pyo3(signature = (query, k, rerank=None, with_payload=true, candidates=None, probe=None, filter=None, navigation=None))]
    #[allow(clippy::too_many_arguments)]
    fn search(
        &self,
        py: Python<'_>,
        query: PyReadonlyArray2<'_, f32>,
        k: usize,
        rerank: Option<usize>,
        with_payload: bool,
        candidates: Option<usize>,
        probe: Option<usize>,
        filter: Option<&str>,
        navigation: Option<&str>,
    ) -> PyResult<Vec<PyHit>> {
        let q = rows(&query, self.dim, "the query")?;
        let params = search_params(k, Stages { rerank, candidates, probe, navigation }, with_payload, filter)?;
        let hits = self.with(|h| {
            py.detach(|| match h {
                Handle::Writer(c) => c.search(q, &params),
                Handle::Reader(r) => r.search(q, &params),
            })
            .map_err(to_py)
        })?;
        Ok(hits_to_py(py, hits))
    }

    /// Many queries on one snapshot, in parallel on `threads` threads (None: all cores).
    #[pyo3(signature = (queries, k, rerank=None, with_payload=true, threads=None, candidates=None, probe=None, filter=None, navigation=None))]
    #[allow(clippy::too_many_arguments)]
    fn search_batch(
        &self,
        py: Python<'_>,
        queries: Vec<PyReadonlyArray2<'_, f32>>,
        k: usize,
        rerank: Option<usize>,
        with_payload: bool,
        threads: Option<usize>,
        candidates: Option<usize>,
        probe: Option<usize>,
        filter: Option<&str>,
        navigation: Option<&str>,
    ) -> PyResult<Vec<Vec<PyHit>>> {
        let mut slices = Vec::with_capacity(queries.len());
        for (i, q) in queries.iter().enumerate() {
            slices.push(rows(q, self.dim, &format!("query {i}"))?);
        }
        if threads == Some(0) {
            return Err(InvalidParameter::new_err("invalid parameter `threads`: must be at least 1"));
        }
        let params = search_params(k, Stages { rerank, candidates, probe, navigation }, with_payload, filter)?;
        let results = self.with(|h| {
            py.detach(|| {
                let run = || match h {
                    Handle::Writer(c) => c.search_batch(&slices, &params),
                    Handle::Reader(r) => r.search_batch(&slices, &params),
                };
                match threads {
                    None => run(),
                    Some(n) => match rayon::ThreadPoolBuilder::new().num_threads(n.min(1024)).build() {
                        Ok(pool) => pool.install(run),
                        Err(e) => Err(quiverdb::Error::InvalidInput(format!("cannot start {n} threads: {e}"))),
                    },
                }
            })
            .map_err(to_py)
        })?;
        Ok(results.into_iter().map(|hits| hits_to_py(py, hits)).collect())
    }

    /// Exact MaxSim of `query` against the documents `ids` only (absent ids are skipped): the best
    /// `k`, best first.
    #[pyo3(signature = (query, ids, k, with_payload=true, filter=None))]
    fn search_ids(
        &self,
        py: Python<'_>,
        query: PyReadonlyArray2<'_, f32>,
        ids: Vec<u64>,
        k: usize,
        with_payload: bool,
        filter: Option<&str>,
    ) -> PyResult<Vec<PyHit>> {
        let q = rows(&query, self.dim, "the query")?;
        let params = search_params(
            k,
            Stages { rerank: None, candidates: None, probe: None, navigation: None },
            with_payload,
            filter,
        )?;
        let hits = self.with(|h| {
            py.detach(|| match h {
                Handle::Writer(c) => c.search_ids(q, &ids, &params),
                Handle::Reader(r) => r.search_ids(q, &ids, &params),
            })
            .map_err(to_py)
        })?;
        Ok(hits_to_py(py, hits))
    }

    /// Writes the memtable to a segment.
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        self.writer(|c| py.detach(|| c.flush()).map_err(to_py))
    }

    /// Runs the merge policy to completion: `(merges, inputs, docs_written, bytes_written)`.
    fn compact(&self, py: Python<'_>) -> PyResult<(u64, u64, u64, u64)> {
        self.writer(|c| {
            let r = py.detach(|| c.compact()).map_err(to_py)?;
            Ok((r.merges, r.inputs, r.docs_written, r.bytes_written))
        })
    }

    /// Counts and sizes as a JSON object.
    fn stats_json(&self, py: Python<'_>) -> PyResult<String> {
        let stats = self.with(|h| {
            py.detach(|| match h {
                Handle::Writer(c) => c.stats(),
                Handle::Reader(r) => r.stats(),
            })
            .map_err(to_py)
        })?;
        serde_json::to_string(&stats).map_err(|e| Error::new_err(format!("stats do not serialise: {e}")))
    }

    /// Checks every checksum and invariant; raises `Corruption` on damage.
    fn verify(&self, py: Python<'_>) -> PyResult<()> {
        self.with(|h| {
            py.detach(|| match h {
                Handle::Writer(c) => c.verify(),
                Handle::Reader(r) => r.verify(),
            })
            .map_err(to_py)
        })
    }

    /// A read-only handle catches up with the writer; a no-op for a writer.
    fn refresh(&self, py: Python<'_>) -> PyResult<()> {
        self.with(|h| match h {
            Handle::Writer(_) => Ok(()),
            Handle::Reader(r) => py.detach(|| r.refresh()).map_err(to_py),
        })
    }

    /// Closes the handle (fsyncs the WAL, releases the lock); later calls raise `Closed`.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let taken = {
            let mut guard = self.handle.write().map_err(|_| Error::new_err("the handle's lock is poisoned"))?;
            guard.take()
        };
        match taken {
            Some(Handle::Writer(c)) => py.detach(|| c.close()).map_err(to_py),
            Some(Handle::Reader(_)) | None => Ok(()),
        }
    }
}

#[pymodule]
fn _quiverdb(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<RawCollection>()?;
    for (name, ty) in [
        ("Error", py.get_type::<Error>()),
        ("InvalidInput", py.get_type::<InvalidInput>()),
        ("InvalidParameter", py.get_type::<InvalidParameter>()),
        ("Corruption", py.get_type::<Corruption>()),
        ("StorageError", py.get_type::<StorageError>()),
        ("NotACollection", py.get_type::<NotACollection>()),
        ("AlreadyExists", py.get_type::<AlreadyExists>()),
        ("Locked", py.get_type::<Locked>()),
        ("Poisoned", py.get_type::<Poisoned>()),
        ("IdExists", py.get_type::<IdExists>()),
        ("Closed", py.get_type::<Closed>()),
        ("CatalogError", py.get_type::<CatalogError>()),
        ("ReadOnly", py.get_type::<ReadOnly>()),
    ] {
        m.add(name, ty)?;
    }
    Ok(())
}
