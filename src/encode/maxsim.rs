//! Exact late-interaction scoring: `MaxSim(q, d) = Σ_i max_j ⟨q_i, d_j⟩`.
//!
//! A [`MaxSimQuery`] prepares the query once (transposed into blocks of up to 32 token "lanes",
//! dimension-major) and then scores any number of documents. For each document token the kernel
//! broadcasts one coordinate at a time against a block of query lanes, so the per-lane maxima
//! are plain vector `max` operations and no horizontal sums are needed. 16-bit documents are
//! converted to `f32` in tiles (once per document token, shared by all query blocks).
//!
//! [`maxsim_reference`] is the naive scalar definition every kernel is tested against.

use crate::encode::codec::TokenCodebook;
use crate::encode::simd::{self, Isa, MAXSIM_BLOCK_LANES};
use crate::encode::storage::TokenStorage;
use crate::encode::tokens::TokenMatrix;
use crate::error::{Error, Result};

/// Document token vectors as stored: a flat row-major buffer in one of the storage types.
#[derive(Clone, Copy, Debug)]
pub enum DocTokens<'a> {
    /// `f32` values.
    F32(&'a [f32]),
    /// IEEE half-precision bits.
    F16(&'a [u16]),
    /// bfloat16 bits.
    Bf16(&'a [u16]),
    /// Residual-coded tokens, decoded on the fly.
    Residual(ResidualTokens<'a>),
}

/// A document's residual-coded tokens: one centroid id per token, the tokens' residual codes
/// back to back, and the codebook that decodes them.
#[derive(Clone, Copy, Debug)]
pub struct ResidualTokens<'a> {
    /// Centroid ids, one per token.
    pub ids: &'a [u16],
    /// Residual codes, `ids.len() × codebook.residual_bytes()` bytes.
    pub codes: &'a [u8],
    /// The segment's token codebook.
    pub codebook: &'a TokenCodebook,
}

impl ResidualTokens<'_> {
    /// The decoded values (`ids.len() × dim`) into `out`, replacing its contents. A centroid id
    /// beyond the codebook (a damaged segment) is an error.
    pub fn decode_into(&self, out: &mut Vec<f32>) -> Result<()> {
        let dim = self.codebook.dim();
        if self.codes.len() != self.ids.len() * self.codebook.residual_bytes() {
            return Err(Error::InvalidInput(format!(
                "{} residual bytes for {} tokens of {} bytes",
                self.codes.len(),
                self.ids.len(),
                self.codebook.residual_bytes()
            )));
        }
        out.clear();
        out.resize(self.ids.len() * dim, 0.0);
        self.codebook.decode_many(self.ids, self.codes, out)
    }
}

thread_local! {
    /// Decoded residual tokens of the document being scored (reused across documents).
    static DECODED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl DocTokens<'_> {
    /// Number of stored values.
    pub fn len(&self) -> usize {
        match self {
            DocTokens::F32(v) => v.len(),
            DocTokens::F16(v) | DocTokens::Bf16(v) => v.len(),
            DocTokens::Residual(r) => r.ids.len() * r.codebook.dim(),
        }
    }

    /// True when no values are stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values as `f32` (a copy; exact for the plain types, the decoded values for residual
    /// codes). Errors only for damaged residual codes.
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        Ok(match self {
            DocTokens::F32(v) => v.to_vec(),
            DocTokens::F16(bits) => crate::encode::storage::f16_bits_to_f32(bits),
            DocTokens::Bf16(bits) => crate::encode::storage::bf16_bits_to_f32(bits),
            DocTokens::Residual(r) => {
                let mut out = Vec::new();
                r.decode_into(&mut out)?;
                out
            }
        })
    }

    /// Token `j` of `dim` values as `f32` into `out` (`dim` long): converted, or decoded for
    /// residual codes. An index beyond the document, or damaged residual codes, is an error.
    pub fn token_into(&self, j: usize, dim: usize, out: &mut [f32]) -> Result<()> {
        let beyond =
            || Error::InvalidInput(format!("token {j} of {dim} values is beyond a document of {} values", self.len()));
        if out.len() != dim || (j + 1).checked_mul(dim).is_none_or(|end| end > self.len()) {
            return Err(beyond());
        }
        let at = j * dim..(j + 1) * dim;
        match self {
            DocTokens::F32(v) => out.copy_from_slice(&v[at]),
            DocTokens::F16(bits) => simd::f16_to_f32(&bits[at], out),
            DocTokens::Bf16(bits) => simd::bf16_to_f32(&bits[at], out),
            DocTokens::Residual(r) => {
                let rb = r.codebook.residual_bytes();
                let codes = r.codes.get(j * rb..(j + 1) * rb).ok_or_else(beyond)?;
                r.codebook.decode(r.ids[j], codes, out)?;
            }
        }
        Ok(())
    }

    /// The storage type.
    pub fn storage(&self) -> TokenStorage {
        match self {
            DocTokens::F32(_) => TokenStorage::F32,
            DocTokens::F16(_) => TokenStorage::F16,
            DocTokens::Bf16(_) => TokenStorage::Bf16,
            DocTokens::Residual(r) => match r.codebook.bits() {
                1 => TokenStorage::Residual1,
                4 => TokenStorage::Residual4,
                _ => TokenStorage::Residual2,
            },
        }
    }
}

/// One block of query lanes, dimension-major.
struct Block {
    lanes: usize,
    /// Real (non-padding) query tokens in this block.
    used: usize,
    values: Vec<f32>,
    /// Lanes of `bf16_pairs`: `lanes` rounded up to whole 16-lane registers.
    bf16_lanes: usize,
    /// The block rounded to bf16 in coordinate-pair layout, for `vdpbf16ps` against bf16 documents
    /// (only with [`Isa::Avx512Bf16`] and an even dimension; empty otherwise).
    bf16_pairs: Vec<u16>,
}

/// `f32` values converted per tile of a 16-bit document (32 KiB on the stack).
const CONVERT_TILE_VALUES: usize = 8192;

/// A query prepared for exact MaxSim scoring against many documents.
pub struct MaxSimQuery {
    dim: usize,
    isa: Isa,
    blocks: Vec<Block>,
    /// A short query (≤ `DOC_MAJOR_MAX_QUERY` tokens, dimension a multiple of the kernel's width)
    /// row-major, for the document-major AVX-512/AVX2 kernels; `None` otherwise.
    short: Option<Vec<f32>>,
    /// The short query rounded to bf16, row-major, for the document-major `vdpbf16ps` kernel
    /// against bf16 documents (when [`MaxSimQuery::uses_bf16_dot`] and the dimension is a multiple
    /// of [`simd::DOC_MAJOR_BF16_WIDTH`]); `None` otherwise.
    short_bf16: Option<Vec<u16>>,
}

impl MaxSimQuery {
    /// Prepares `query` for the best kernel this CPU supports. With [`Isa::Avx512Bf16`] (unless
    /// `QUIVERDB_BF16_DOT=0`), bf16-stored documents are scored against the query rounded to bf16
    /// (`vdpbf16ps`); the score error this adds is reported by `cargo bench --bench maxsim`.
    pub fn new(query: &TokenMatrix<'_>) -> Self {
        Self::with_isa(query, Isa::detect())
    }

    /// Prepares `query` for a specific kernel (tests and benchmarks compare them).
    /// Panics if `isa` is not supported by this CPU; see [`Isa::available`].
    pub fn with_isa(query: &TokenMatrix<'_>, isa: Isa) -> Self {
        assert!(Isa::available().contains(&isa), "{isa:?} is not available on this CPU");
        let dim = query.dim();
        let rows = query.rows();
        let mut blocks = Vec::with_capacity(rows.div_ceil(MAXSIM_BLOCK_LANES));
        let mut start = 0;
        while start < rows {
            let used = (rows - start).min(MAXSIM_BLOCK_LANES);
            let lanes = isa.maxsim_lanes(used);
            let mut values = vec![0f32; dim * lanes];
            for lane in 0..used {
                for (c, &x) in query.row(start + lane).iter().enumerate() {
                    values[c * lanes + lane] = x;
                }
            }
            // The bf16 kernel works on whole 16-lane registers only.
            let bf16_lanes = used.div_ceil(16) * 16;
            let bf16_pairs = if isa == Isa::Avx512Bf16 && dim.is_multiple_of(2) && simd::bf16_dot_enabled() {
                let mut padded = vec![0f32; dim * bf16_lanes];
                for c in 0..dim {
                    padded[c * bf16_lanes..c * bf16_lanes + lanes].copy_from_slice(&values[c * lanes..(c + 1) * lanes]);
                }
                simd::bf16_pair_block(&padded, bf16_lanes, dim)
            } else {
                Vec::new()
            };
            blocks.push(Block { lanes, used, values, bf16_lanes, bf16_pairs });
            start += used;
        }
        // AVX-512 takes dimensions that are multiples of 16; others of 8 run the AVX2 variant.
        let kernel_width = if isa == Isa::Portable { 0 } else { 8 };
        let short =
            (kernel_width > 0 && rows <= simd::DOC_MAJOR_MAX_QUERY && rows > 0 && dim.is_multiple_of(kernel_width))
                .then(|| query.as_slice().to_vec());
        let mut prepared = MaxSimQuery { dim, isa, blocks, short, short_bf16: None };
        if prepared.uses_bf16_dot() && dim.is_multiple_of(simd::DOC_MAJOR_BF16_WIDTH) {
            prepared.short_bf16 =
                prepared.short.as_ref().map(|q| q.iter().map(|&v| half::bf16::from_f32(v).to_bits()).collect());
        }
        prepared
    }

    /// The token dimension this query expects of documents.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// True when bf16 documents are scored with the `vdpbf16ps` kernel (query rounded to bf16).
    pub fn uses_bf16_dot(&self) -> bool {
        !self.blocks.is_empty() && self.blocks.iter().all(|b| !b.bf16_pairs.is_empty())
    }

    /// The kernel this query runs on.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Exact MaxSim of the query against one document.
    ///
    /// Errors when the document is empty or its length is not a multiple of the query's dimension.
    /// Document values are trusted to be finite (they were validated when stored).
    pub fn score(&self, doc: DocTokens<'_>) -> Result<f32> {
        self.check_shape(doc)?;
        if let DocTokens::Residual(r) = doc {
            return DECODED.with(|cell| {
                let mut decoded = cell.borrow_mut();
                r.decode_into(&mut decoded)?;
                self.score(DocTokens::F32(&decoded))
            });
        }
        if let (Some(short), DocTokens::Bf16(bits)) = (&self.short_bf16, doc) {
            let mut maxes = [f32::NEG_INFINITY; simd::DOC_MAJOR_MAX_QUERY];
            let maxes = &mut maxes[..short.len() / self.dim];
            simd::max_dots_doc_major_bf16(self.isa, short, self.dim, bits, maxes);
            return Ok(maxes.iter().sum());
        }
        if let Some(short) = &self.short {
            if !(self.uses_bf16_dot() && matches!(doc, DocTokens::Bf16(_))) {
                let mut maxes = [f32::NEG_INFINITY; simd::DOC_MAJOR_MAX_QUERY];
                let maxes = &mut maxes[..short.len() / self.dim];
                let values = match doc {
                    DocTokens::F32(v) => simd::DocValues::F32(v),
                    DocTokens::F16(v) => simd::DocValues::F16(v),
                    DocTokens::Bf16(v) => simd::DocValues::Bf16(v),
                    DocTokens::Residual(_) => {
                        return Err(Error::InvalidInput("residual tokens reach the kernel".into()))
                    }
                };
                simd::max_dots_doc_major(self.isa, short, self.dim, values, maxes);
                return Ok(maxes.iter().sum());
            }
        }
        let mut maxes: Vec<[f32; MAXSIM_BLOCK_LANES]> =
            vec![[f32::NEG_INFINITY; MAXSIM_BLOCK_LANES]; self.blocks.len()];
        match doc {
            DocTokens::F32(values) => self.accumulate(values, &mut maxes),
            DocTokens::F16(bits) => self.accumulate_converted(bits, simd::f16_to_f32, &mut maxes),
            DocTokens::Bf16(bits) if self.uses_bf16_dot() => self.accumulate_bf16(bits, &mut maxes),
            DocTokens::Bf16(bits) => self.accumulate_converted(bits, simd::bf16_to_f32, &mut maxes),
            DocTokens::Residual(_) => return Err(Error::InvalidInput("residual tokens reach the kernel".into())),
        }
        let mut total = 0f32;
        for (block, m) in self.blocks.iter().zip(&maxes) {
            total += m[..block.used].iter().sum::<f32>();
        }
        Ok(total)
    }

    /// A cheaper approximation of [`MaxSimQuery::score`], where this CPU has one: f16 documents
    /// rounded to bf16 and scored with `vdpbf16ps` against the query rounded to bf16 (about twice
    /// the f16 kernel's throughput, conversion included; the score error is bf16's, reported by
    /// `cargo bench --bench maxsim`). `Ok(None)` when there is no faster path for `doc`: other
    /// storage, no AVX-512 BF16, bf16 dots turned off (`QUIVERDB_BF16_DOT=0`), or a query of at
    /// most [`simd::DOC_MAJOR_MAX_QUERY`] tokens, for which converting the document costs more than
    /// the narrower products save (4 tokens: 29.6 against 36.9 GFLOP/s exact; 19 tokens: 74.9
    /// against 45.1).
    pub fn approximate(&self, doc: DocTokens<'_>) -> Result<Option<f32>> {
        let DocTokens::F16(bits) = doc else { return Ok(None) };
        if !self.approximates(TokenStorage::F16) {
            return Ok(None);
        }
        self.check_shape(doc)?;
        let mut tile = [0u16; CONVERT_TILE_VALUES];
        let tile_values = (CONVERT_TILE_VALUES / self.dim).max(1) * self.dim;
        let mut maxes: Vec<[f32; MAXSIM_BLOCK_LANES]> =
            vec![[f32::NEG_INFINITY; MAXSIM_BLOCK_LANES]; self.blocks.len()];
        for chunk in bits.chunks(tile_values) {
            let converted = &mut tile[..chunk.len()];
            simd::f16_to_bf16(self.isa, chunk, converted);
            self.accumulate_bf16(converted, &mut maxes);
        }
        Ok(Some(self.blocks.iter().zip(&maxes).map(|(block, m)| m[..block.used].iter().sum::<f32>()).sum()))
    }

    /// True when [`MaxSimQuery::approximate`] has a faster path for documents stored as `storage`.
    pub fn approximates(&self, storage: TokenStorage) -> bool {
        storage == TokenStorage::F16 && self.uses_bf16_dot() && self.short.is_none()
    }

    /// A document must be a non-empty whole number of `dim`-wide tokens.
    fn check_shape(&self, doc: DocTokens<'_>) -> Result<()> {
        if doc.is_empty() || !doc.len().is_multiple_of(self.dim) {
            return Err(Error::InvalidInput(format!(
                "document of {} values is not a non-empty set of {}-dimensional tokens",
                doc.len(),
                self.dim
            )));
        }
        Ok(())
    }

    /// Exact MaxSim against a validated `f32` token matrix.
    pub fn score_matrix(&self, doc: &TokenMatrix<'_>) -> Result<f32> {
        self.score(DocTokens::F32(doc.as_slice()))
    }

    /// The `vdpbf16ps` blocks over bf16 document tokens (only when [`MaxSimQuery::uses_bf16_dot`]).
    fn accumulate_bf16(&self, bits: &[u16], maxes: &mut [[f32; MAXSIM_BLOCK_LANES]]) {
        for (block, m) in self.blocks.iter().zip(maxes.iter_mut()) {
            simd::max_dots_bf16(
                self.isa,
                &block.bf16_pairs,
                block.bf16_lanes,
                self.dim,
                bits,
                &mut m[..block.bf16_lanes],
            );
        }
    }

    fn accumulate(&self, values: &[f32], maxes: &mut [[f32; MAXSIM_BLOCK_LANES]]) {
        for (block, m) in self.blocks.iter().zip(maxes.iter_mut()) {
            simd::max_dots(self.isa, &block.values, block.lanes, self.dim, values, &mut m[..block.lanes]);
        }
    }

    fn accumulate_converted(
        &self,
        bits: &[u16],
        convert: fn(&[u16], &mut [f32]),
        maxes: &mut [[f32; MAXSIM_BLOCK_LANES]],
    ) {
        let mut tile = [0f32; CONVERT_TILE_VALUES];
        let tile_values = (CONVERT_TILE_VALUES / self.dim).max(1) * self.dim;
        for chunk in bits.chunks(tile_values) {
            let converted = &mut tile[..chunk.len()];
            convert(chunk, converted);
            self.accumulate(converted, maxes);
        }
    }
}

/// The naive scalar definition of MaxSim, in `f32` with sequential sums: the reference
/// every kernel is tested against.
pub fn maxsim_reference(query: &TokenMatrix<'_>, doc: &TokenMatrix<'_>) -> Result<f32> {
    if query.dim() != doc.dim() {
        return Err(Error::InvalidInput(format!(
            "query dimension {} differs from document dimension {}",
            query.dim(),
            doc.dim()
        )));
    }
    Ok(query
        .iter_rows()
        .map(|q| {
            doc.iter_rows()
                .map(|d| q.iter().zip(d).fold(0f32, |acc, (a, b)| acc + a * b))
                .fold(f32::NEG_INFINITY, f32::max)
        })
        .sum())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::rng::SplitMix64;
    use crate::encode::storage::to_16bit;

    fn random(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut rng = SplitMix64::new(seed);
        (0..n * dim).map(|_| rng.normal() as f32).collect()
    }

    #[test]
    fn kernels_match_reference_for_awkward_shapes() {
        // 300 query tokens: more than nine 32-lane blocks; document counts around the AVX-512
        // kernel's 6-token tiles; query blocks of 8, 16, 24 and 32 lanes (40 = 32 + 8, 56 = 32 + 24).
        for &(nq, nd, dim) in &[
            (1, 1, 1),
            (1, 9, 128),
            (2, 1, 32),
            (5, 4, 64),
            (8, 11, 128),
            (3, 2, 5),
            (8, 3, 16),
            (33, 7, 128),
            (70, 4, 3),
            (32, 100, 128),
            (300, 5, 16),
            (17, 6, 33),
            (16, 13, 64),
            (24, 12, 7),
            (19, 13, 128),
            (21, 6, 128),
            (40, 9, 128),
            (56, 7, 128),
        ] {
            let q = random(nq, dim, 1);
            let d = random(nd, dim, 2);
            let qm = TokenMatrix::new(&q, dim).unwrap();
            let dm = TokenMatrix::new(&d, dim).unwrap();
            let want = maxsim_reference(&qm, &dm).unwrap();
            for isa in Isa::available() {
                let got = MaxSimQuery::with_isa(&qm, isa).score_matrix(&dm).unwrap();
                let tol = 1e-4 * (nq * dim) as f32;
                assert!((got - want).abs() <= tol, "{isa:?} nq={nq} nd={nd} dim={dim}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn sixteen_bit_documents_score_as_their_upcast() {
        let dim = 64;
        // 3 query tokens take the document-major kernels, 9 and 19 the blocked ones (19: a block of
        // 24 lanes, whose bf16 copy is padded to 32).
        for nq in [3, 9, 19] {
            let q = random(nq, dim, 3);
            let d: Vec<f32> = random(50, dim, 4).iter().map(|v| v * 0.1).collect();
            let qm = TokenMatrix::new(&q, dim).unwrap();
            for storage in [TokenStorage::F16, TokenStorage::Bf16] {
                let bits = to_16bit(&d, storage).unwrap();
                let up = crate::encode::storage::from_16bit(&bits, storage).unwrap();
                let want = maxsim_reference(&qm, &TokenMatrix::new(&up, dim).unwrap()).unwrap();
                // The BF16 dot-product path scores bf16 documents against the query rounded to bf16.
                let q_bf16: Vec<f32> = q.iter().map(|&v| half::bf16::from_f32(v).to_f32()).collect();
                let want_bf16 =
                    maxsim_reference(&TokenMatrix::new(&q_bf16, dim).unwrap(), &TokenMatrix::new(&up, dim).unwrap())
                        .unwrap();
                for isa in Isa::available() {
                    let query = MaxSimQuery::with_isa(&qm, isa);
                    let doc = match storage {
                        TokenStorage::F16 => DocTokens::F16(&bits),
                        _ => DocTokens::Bf16(&bits),
                    };
                    let got = query.score(doc).unwrap();
                    let want = if query.uses_bf16_dot() && storage == TokenStorage::Bf16 { want_bf16 } else { want };
                    assert!((got - want).abs() < 1e-3, "{storage:?} {isa:?} nq {nq}: {got} vs {want}");
                }
            }
        }
    }

    #[test]
    fn approximate_scores_are_the_bf16_rounded_maxsim() {
        let dim = 64;
        for nq in [3, 19] {
            let q = random(nq, dim, 7);
            let d: Vec<f32> = random(40, dim, 8).iter().map(|v| v * 0.1).collect();
            let qm = TokenMatrix::new(&q, dim).unwrap();
            let bits = to_16bit(&d, TokenStorage::F16).unwrap();
            // The definition: query and document each rounded to bf16, products summed in f32.
            let round = |v: &[f32]| -> Vec<f32> { v.iter().map(|&x| half::bf16::from_f32(x).to_f32()).collect() };
            let up = crate::encode::storage::from_16bit(&bits, TokenStorage::F16).unwrap();
            let (qb, db) = (round(&q), round(&up));
            let want =
                maxsim_reference(&TokenMatrix::new(&qb, dim).unwrap(), &TokenMatrix::new(&db, dim).unwrap()).unwrap();
            for isa in Isa::available() {
                let query = MaxSimQuery::with_isa(&qm, isa);
                let got = query.approximate(DocTokens::F16(&bits)).unwrap();
                match got {
                    Some(got) => {
                        assert!(query.uses_bf16_dot() && nq > simd::DOC_MAJOR_MAX_QUERY, "{isa:?}");
                        assert!((got - want).abs() < 1e-3, "{isa:?} nq {nq}: {got} vs {want}");
                    }
                    None => assert!(
                        !query.uses_bf16_dot() || nq <= simd::DOC_MAJOR_MAX_QUERY,
                        "{isa:?}: a long bf16 query must approximate"
                    ),
                }
                assert_eq!(query.approximate(DocTokens::F32(&d)).unwrap(), None, "only f16 documents");
                if got.is_some() {
                    assert!(query.approximate(DocTokens::F16(&bits[..dim + 1])).is_err(), "a ragged document");
                }
            }
        }
    }

    #[test]
    fn bad_documents_are_errors() {
        let q = random(2, 4, 5);
        let query = MaxSimQuery::new(&TokenMatrix::new(&q, 4).unwrap());
        assert!(query.score(DocTokens::F32(&[])).is_err());
        assert!(query.score(DocTokens::F32(&[1.0; 6])).is_err());
        assert!(query.score(DocTokens::F16(&[0; 3])).is_err());
    }
}
