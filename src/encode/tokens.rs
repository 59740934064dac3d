//! A validated, borrowed token matrix: the input type of every encoder and kernel.
//!
//! Validation happens once, in [`TokenMatrix::new`]: after that, every consumer may rely on a
//! non-empty, rectangular, finite matrix within the limits, and needs no checks of its own.

use crate::error::{Error, Result};
use crate::limits::{MAX_DIM, MAX_TOKENS_PER_DOC};

/// `n_tokens × dim` row-major `f32` token vectors, checked to be non-empty, rectangular and finite.
#[derive(Clone, Copy, Debug)]
pub struct TokenMatrix<'a> {
    data: &'a [f32],
    dim: usize,
}

impl<'a> TokenMatrix<'a> {
    /// Checks `data` as a row-major matrix of `dim`-dimensional token vectors.
    ///
    /// Errors: `dim` of zero or above [`MAX_DIM`]; an empty or ragged buffer (length not a multiple
    /// of `dim`); more than [`MAX_TOKENS_PER_DOC`] rows; any NaN or infinite value.
    pub fn new(data: &'a [f32], dim: usize) -> Result<Self> {
        if dim == 0 || dim > MAX_DIM {
            return Err(Error::InvalidInput(format!("token dimension {dim} is outside 1..={MAX_DIM}")));
        }
        if data.is_empty() {
            return Err(Error::InvalidInput(
                "empty token set: a document or query needs at least one token vector".into(),
            ));
        }
        if !data.len().is_multiple_of(dim) {
            return Err(Error::InvalidInput(format!(
                "ragged token matrix: {} values is not a multiple of dimension {dim}",
                data.len()
            )));
        }
        let rows = data.len() / dim;
        if rows > MAX_TOKENS_PER_DOC {
            return Err(Error::InvalidInput(format!("{rows} token vectors exceed the limit of {MAX_TOKENS_PER_DOC}")));
        }
        if let Some(pos) = data.iter().position(|v| !v.is_finite()) {
            return Err(Error::InvalidInput(format!(
                "token {} has a non-finite value ({}) at coordinate {}",
                pos / dim,
                data[pos],
                pos % dim
            )));
        }
        Ok(TokenMatrix { data, dim })
    }

    /// Wraps data that was already validated by [`TokenMatrix::new`] (e.g. a slice of a
    /// [`crate::dataset::MultiVectors`], which validates on construction), without rescanning it.
    pub(crate) fn from_validated(data: &'a [f32], dim: usize) -> Self {
        debug_assert!(Self::new(data, dim).is_ok());
        TokenMatrix { data, dim }
    }

    /// Like [`TokenMatrix::new`] but also requires the dimension to equal `expected_dim`.
    pub fn with_dim(data: &'a [f32], dim: usize, expected_dim: usize) -> Result<Self> {
        if dim != expected_dim {
            return Err(Error::InvalidInput(format!(
                "wrong dimension: got {dim}-dimensional tokens, the collection uses {expected_dim}"
            )));
        }
        Self::new(data, dim)
    }

    /// The dimension of each token vector.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The number of token vectors (≥ 1).
    pub fn rows(&self) -> usize {
        self.data.len() / self.dim
    }

    /// Token vector `i`.
    pub fn row(&self, i: usize) -> &'a [f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// All token vectors, in order.
    pub fn iter_rows(&self) -> std::slice::ChunksExact<'a, f32> {
        self.data.chunks_exact(self.dim)
    }

    /// The flat row-major buffer.
    pub fn as_slice(&self) -> &'a [f32] {
        self.data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_shapes_and_values() {
        assert!(TokenMatrix::new(&[], 4).is_err());
        assert!(TokenMatrix::new(&[1.0; 4], 0).is_err());
        assert!(TokenMatrix::new(&[1.0; 5], 4).is_err());
        assert!(TokenMatrix::new(&[1.0, f32::NAN, 0.0, 0.0], 4).is_err());
        assert!(TokenMatrix::new(&[1.0, f32::INFINITY, 0.0, 0.0], 4).is_err());
        assert!(TokenMatrix::with_dim(&[1.0; 8], 4, 8).is_err());
        let m = TokenMatrix::new(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 3).unwrap();
        assert_eq!(m.rows(), 2);
        assert_eq!(m.row(1), &[4.0, 5.0, 6.0]);
        let err = TokenMatrix::new(&[0.0, f32::NAN], 1).unwrap_err().to_string();
        assert!(err.contains("token 1"), "{err}");
    }
}
