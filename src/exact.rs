//! Brute-force exact MaxSim over an in-memory corpus: the ground truth every index is measured
//! against, and the ceiling `quiver exact` reports.

use rayon::prelude::*;

use crate::dataset::MultiVectors;
use crate::encode::maxsim::{DocTokens, MaxSimQuery};
use crate::encode::tokens::TokenMatrix;
use crate::error::{Error, Result};
use crate::topk::{Scored, TopK};

/// Scores `query` against every document of `docs` and returns the best `k`, best first.
pub fn exact_top_k(query: &TokenMatrix<'_>, docs: &MultiVectors, k: usize) -> Result<Vec<Scored>> {
    if query.dim() != docs.dim() {
        return Err(Error::InvalidInput(format!(
            "wrong dimension: query tokens are {}-dimensional, documents {}",
            query.dim(),
            docs.dim()
        )));
    }
    let prepared = MaxSimQuery::new(query);
    let mut top = TopK::new(k);
    for (i, doc) in docs.iter().enumerate() {
        let score = prepared.score(DocTokens::F32(doc.as_slice()))?;
        top.push(Scored { doc: i as u32, score });
    }
    Ok(top.into_sorted())
}

/// [`exact_top_k`] for many queries in parallel (rayon), results in query order.
pub fn exact_top_k_batch(queries: &MultiVectors, docs: &MultiVectors, k: usize) -> Result<Vec<Vec<Scored>>> {
    (0..queries.len()).into_par_iter().map(|q| exact_top_k(&queries.get(q), docs, k)).collect()
}
