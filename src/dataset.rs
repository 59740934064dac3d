//! Reader for multi-vector datasets in the `.npy` layout of `shared/data/FORMAT.md`:
//! `docs.npy` + `doc_offsets.npy`, `queries.npy` + `query_offsets.npy`, optional `doc_ids.txt`,
//! `query_ids.txt`, `qrels.tsv`, `gt_maxsim_top100.npy` and `gt_maxsim_scores.npy`.
//!
//! Every file is checked on load (shapes, offsets, index ranges, finite values) and a problem is
//! reported as [`Error::Corruption`] naming the file and byte offset, so the CLI, benchmarks and
//! tests can trust a loaded [`Dataset`] without further checks.

use std::path::{Path, PathBuf};

use crate::encode::tokens::TokenMatrix;
use crate::error::{Error, Result};
use crate::format::npy;
use crate::limits::{MAX_DIM, MAX_TOKENS_PER_DOC};

/// A list of token sets ("quivers") stored contiguously: set `i` owns rows
/// `offsets[i]..offsets[i+1]` of the `rows × dim` matrix `values`.
#[derive(Clone, Debug, PartialEq)]
pub struct MultiVectors {
    dim: usize,
    values: Vec<f32>,
    offsets: Vec<usize>,
}

impl MultiVectors {
    /// Builds from parts, checking that offsets start at 0, increase strictly (no empty set),
    /// end at the row count, that no set exceeds [`MAX_TOKENS_PER_DOC`], and that values are finite.
    pub fn new(dim: usize, values: Vec<f32>, offsets: Vec<usize>) -> Result<Self> {
        if dim == 0 || dim > MAX_DIM {
            return Err(Error::InvalidInput(format!("dimension {dim} is outside 1..={MAX_DIM}")));
        }
        if !values.len().is_multiple_of(dim) {
            return Err(Error::InvalidInput(format!("{} values is not a multiple of dimension {dim}", values.len())));
        }
        let rows = values.len() / dim;
        if offsets.first() != Some(&0) || offsets.last() != Some(&rows) {
            return Err(Error::InvalidInput(format!(
                "offsets must run from 0 to the row count {rows}, found {:?}..{:?}",
                offsets.first(),
                offsets.last()
            )));
        }
        for (i, w) in offsets.windows(2).enumerate() {
            if w[1] <= w[0] {
                return Err(Error::InvalidInput(format!(
                    "set {i} is empty or offsets decrease ({} -> {})",
                    w[0], w[1]
                )));
            }
            if w[1] - w[0] > MAX_TOKENS_PER_DOC {
                return Err(Error::InvalidInput(format!(
                    "set {i} has {} tokens, above {MAX_TOKENS_PER_DOC}",
                    w[1] - w[0]
                )));
            }
        }
        if let Some(pos) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::InvalidInput(format!("row {} has a non-finite value", pos / dim)));
        }
        Ok(MultiVectors { dim, values, offsets })
    }

    /// Token dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of sets.
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// True when there are no sets.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Total token vectors over all sets.
    pub fn total_rows(&self) -> usize {
        self.values.len() / self.dim
    }

    /// Set `i` as a validated token matrix.
    pub fn get(&self, i: usize) -> TokenMatrix<'_> {
        let (start, end) = (self.offsets[i] * self.dim, self.offsets[i + 1] * self.dim);
        TokenMatrix::from_validated(&self.values[start..end], self.dim)
    }

    /// All sets in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = TokenMatrix<'_>> + '_ {
        (0..self.len()).map(move |i| self.get(i))
    }
}

/// One human relevance judgment.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Qrel {
    /// Query index.
    pub query: u32,
    /// Document index.
    pub doc: u32,
    /// Graded relevance (> 0 relevant).
    pub relevance: f32,
}

/// A loaded dataset.
#[derive(Debug)]
pub struct Dataset {
    /// Directory name (the dataset's name in reports).
    pub name: String,
    /// Directory it was read from.
    pub dir: PathBuf,
    /// Document token sets.
    pub docs: MultiVectors,
    /// Query token sets.
    pub queries: MultiVectors,
    /// The dataset's own document ids, if `doc_ids.txt` exists.
    pub doc_ids: Option<Vec<String>>,
    /// Relevance judgments, if `qrels.tsv` exists (otherwise empty).
    pub qrels: Vec<Qrel>,
    /// Exact-MaxSim ranking per query (`gt_maxsim_top100.npy`), row-major `n_queries × gt_depth`.
    pub ground_truth: Option<GroundTruth>,
}

/// Exact-MaxSim top documents per query, best first.
#[derive(Clone, Debug)]
pub struct GroundTruth {
    /// Documents per query.
    pub depth: usize,
    /// `n_queries × depth` document indices.
    pub top: Vec<u32>,
}

impl GroundTruth {
    /// The ranked document indices of query `q`.
    pub fn of(&self, q: usize) -> &[u32] {
        &self.top[q * self.depth..(q + 1) * self.depth]
    }
}

impl Dataset {
    /// Reads and checks a dataset directory.
    pub fn open(dir: impl AsRef<Path>) -> Result<Dataset> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.is_dir() {
            return Err(Error::io(
                &dir,
                std::io::Error::new(std::io::ErrorKind::NotFound, "dataset directory not found"),
            ));
        }
        let docs = read_multivectors(&dir.join("docs.npy"), &dir.join("doc_offsets.npy"))?;
        let queries = read_multivectors(&dir.join("queries.npy"), &dir.join("query_offsets.npy"))?;
        if docs.dim() != queries.dim() {
            return Err(Error::InvalidInput(format!(
                "{}: documents are {}-dimensional but queries {}-dimensional",
                dir.display(),
                docs.dim(),
                queries.dim()
            )));
        }
        let doc_ids = read_lines_if_present(&dir.join("doc_ids.txt"), docs.len())?;
        let qrels = read_qrels(&dir.join("qrels.tsv"), docs.len(), queries.len())?;
        let ground_truth = read_ground_truth(&dir.join("gt_maxsim_top100.npy"), docs.len(), queries.len())?;
        let name = dir.file_name().map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned());
        Ok(Dataset { name, dir, docs, queries, doc_ids, qrels, ground_truth })
    }

    /// The relevance judgments of query `q` as (document, relevance) pairs.
    pub fn qrels_of(&self, q: u32) -> Vec<(u32, f32)> {
        self.qrels.iter().filter(|r| r.query == q).map(|r| (r.doc, r.relevance)).collect()
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// Reads a token matrix file and its offsets file (the FORMAT.md pair, e.g. `docs.npy` +
/// `doc_offsets.npy`) into validated multi-vectors.
pub fn read_multivectors(values_path: &Path, offsets_path: &Path) -> Result<MultiVectors> {
    let bytes = read_file(values_path)?;
    let header = npy::parse_header(&bytes).map_err(|e| e.in_file(values_path, 0))?;
    let [rows, dim] = header.shape[..] else {
        return Err(Error::corruption(
            values_path,
            0,
            format!("expected a 2-D token matrix, shape is {:?}", header.shape),
        ));
    };
    let values = npy::read_f32(&bytes, &header).map_err(|e| e.in_file(values_path, header.data_offset as u64))?;
    drop(bytes);
    check_finite(values_path, &bytes_dtype(&header), &values, dim)?;

    let bytes = read_file(offsets_path)?;
    let oh = npy::parse_header(&bytes).map_err(|e| e.in_file(offsets_path, 0))?;
    if oh.shape.len() != 1 || oh.shape[0] == 0 {
        return Err(Error::corruption(
            offsets_path,
            0,
            format!("expected a 1-D offsets array, shape is {:?}", oh.shape),
        ));
    }
    let raw = npy::read_i64(&bytes, &oh).map_err(|e| e.in_file(offsets_path, oh.data_offset as u64))?;
    let at = |i: usize| (oh.data_offset + i * oh.dtype.size()) as u64;
    let mut offsets = Vec::with_capacity(raw.len());
    for (i, &o) in raw.iter().enumerate() {
        if o < 0 || o as u64 > rows as u64 {
            return Err(Error::corruption(offsets_path, at(i), format!("offset {o} is outside 0..={rows}")));
        }
        offsets.push(o as usize);
    }
    if offsets[0] != 0 || offsets.last() != Some(&rows) {
        return Err(Error::corruption(
            offsets_path,
            at(0),
            format!(
                "offsets must start at 0 and end at {rows} (rows of {}), found {} and {}",
                values_path.display(),
                offsets[0],
                offsets[offsets.len() - 1]
            ),
        ));
    }
    for i in 1..offsets.len() {
        if offsets[i] <= offsets[i - 1] {
            return Err(Error::corruption(
                offsets_path,
                at(i),
                format!("set {} is empty or offsets decrease ({} -> {})", i - 1, offsets[i - 1], offsets[i]),
            ));
        }
    }
    MultiVectors::new(dim, values, offsets).map_err(|e| Error::corruption(values_path, 0, e.to_string()))
}

/// The dtype's name for messages.
fn bytes_dtype(header: &npy::NpyHeader) -> String {
    format!("{:?}", header.dtype).to_lowercase()
}

/// Bad values are the caller's input, not damaged bytes: `InvalidInput` naming the file, row and
/// column, and saying when a float64 value does not fit in float32.
fn check_finite(path: &Path, dtype: &str, values: &[f32], dim: usize) -> Result<()> {
    let Some(pos) = values.iter().position(|v| !v.is_finite()) else { return Ok(()) };
    let (row, col) = (pos / dim.max(1), pos % dim.max(1));
    let what = if values[pos].is_nan() {
        "NaN".to_string()
    } else if dtype == "f64" {
        "a value outside the float32 range (or infinite)".to_string()
    } else {
        "an infinite value".to_string()
    };
    Err(Error::InvalidInput(format!("{}: row {row}, column {col} holds {what}", path.display())))
}

/// Reads one `.npy` token matrix (a query; a 1-D array is one token): `(values, rows, dim)`, every
/// value finite (`InvalidInput` otherwise). `f64`, `f32` and `f16` arrays are accepted.
pub fn read_matrix(path: &Path) -> Result<(Vec<f32>, usize, usize)> {
    let bytes = read_file(path)?;
    let header = npy::parse_header(&bytes).map_err(|e| e.in_file(path, 0))?;
    // A 1-D array is one token vector (numpy's `q[0]`).
    let (rows, dim) = match header.shape[..] {
        [rows, dim] => (rows, dim),
        [dim] => (1, dim),
        _ => {
            return Err(Error::InvalidInput(format!(
                "{}: expected a 2-D token matrix (tokens × dim), the array's shape is {:?}",
                path.display(),
                header.shape
            )))
        }
    };
    let values = npy::read_f32(&bytes, &header).map_err(|e| e.in_file(path, header.data_offset as u64))?;
    check_finite(path, &bytes_dtype(&header), &values, dim)?;
    Ok((values, rows, dim))
}

fn read_lines_if_present(path: &Path, expected: usize) -> Result<Option<Vec<String>>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    if lines.len() != expected {
        return Err(Error::corruption(
            path,
            0,
            format!("{} lines, expected one per document ({expected})", lines.len()),
        ));
    }
    Ok(Some(lines))
}

fn read_qrels(path: &Path, n_docs: usize, n_queries: usize) -> Result<Vec<Qrel>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    let mut offset = 0u64;
    for (line_no, line) in text.lines().enumerate() {
        let bad = |what: String| Error::corruption(path, offset, format!("line {}: {what}", line_no + 1));
        if !line.trim().is_empty() {
            let fields: Vec<&str> = line.split('\t').collect();
            if fields.len() != 3 {
                return Err(bad(format!("expected 3 tab-separated fields, found {}", fields.len())));
            }
            let query: u32 = fields[0].trim().parse().map_err(|_| bad(format!("bad query index '{}'", fields[0])))?;
            let doc: u32 = fields[1].trim().parse().map_err(|_| bad(format!("bad document index '{}'", fields[1])))?;
            let relevance: f32 = fields[2].trim().parse().map_err(|_| bad(format!("bad relevance '{}'", fields[2])))?;
            if query as usize >= n_queries || doc as usize >= n_docs || !relevance.is_finite() {
                return Err(bad(format!(
                    "query {query} / document {doc} out of range ({n_queries} queries, {n_docs} documents)"
                )));
            }
            out.push(Qrel { query, doc, relevance });
        }
        offset += line.len() as u64 + 1;
    }
    Ok(out)
}

fn read_ground_truth(path: &Path, n_docs: usize, n_queries: usize) -> Result<Option<GroundTruth>> {
    if !path.exists() {
        return Ok(None);
    }
    let bytes = read_file(path)?;
    let header = npy::parse_header(&bytes).map_err(|e| e.in_file(path, 0))?;
    let [rows, depth] = header.shape[..] else {
        return Err(Error::corruption(path, 0, format!("expected a 2-D array, shape is {:?}", header.shape)));
    };
    if rows != n_queries {
        return Err(Error::corruption(path, 0, format!("{rows} rows, expected one per query ({n_queries})")));
    }
    let raw = npy::read_i64(&bytes, &header).map_err(|e| e.in_file(path, header.data_offset as u64))?;
    let mut top = Vec::with_capacity(raw.len());
    for (i, &d) in raw.iter().enumerate() {
        if d < 0 || d as usize >= n_docs {
            let offset = (header.data_offset + i * header.dtype.size()) as u64;
            return Err(Error::corruption(path, offset, format!("document index {d} is outside 0..{n_docs}")));
        }
        top.push(d as u32);
    }
    Ok(Some(GroundTruth { depth, top }))
}

/// Writes `sets` as `<stem>.npy` (float32) and `<offsets_stem>.npy` (int64) in `dir`: the inverse
/// of the reader, for fixtures, tests and the CLI's generated corpora.
pub fn write_multivectors(dir: &Path, stem: &str, offsets_stem: &str, sets: &MultiVectors) -> Result<()> {
    let data: Vec<u8> = sets.values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let path = dir.join(format!("{stem}.npy"));
    std::fs::write(&path, npy::encode(npy::NpyDtype::F32, &[sets.total_rows(), sets.dim], &data))
        .map_err(|e| Error::io(&path, e))?;
    let offsets: Vec<u8> = sets.offsets.iter().flat_map(|&o| (o as i64).to_le_bytes()).collect();
    let path = dir.join(format!("{offsets_stem}.npy"));
    std::fs::write(&path, npy::encode(npy::NpyDtype::I64, &[sets.offsets.len()], &offsets))
        .map_err(|e| Error::io(&path, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multivectors_reject_bad_offsets() {
        assert!(MultiVectors::new(2, vec![0.0; 4], vec![0, 2]).is_ok());
        assert!(MultiVectors::new(2, vec![0.0; 4], vec![0, 1]).is_err());
        assert!(MultiVectors::new(2, vec![0.0; 4], vec![0, 0, 2]).is_err());
        assert!(MultiVectors::new(2, vec![0.0; 4], vec![1, 2]).is_err());
        assert!(MultiVectors::new(2, vec![f32::NAN, 0.0, 0.0, 0.0], vec![0, 2]).is_err());
    }
}
