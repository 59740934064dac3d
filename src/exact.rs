//! Brute-force exact MaxSim over an in-memory corpus: the ground truth every index is measured
//! against, and the ceiling `quiver exact` reports.

use rayon::prelude::*;

use crate::dataset::MultiVectors;
use crate::encode::maxsim::{DocTokens, MaxSimQuery};
use crate::encode::tokens::TokenMatrix;
use crate::error::{Error, Result};

/// A scored document: its index in the corpus and its MaxSim score.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scored {
    /// Document index.
    pub doc: u32,
    /// Exact MaxSim score.
    pub score: f32,
}

/// Keeps the `k` best [`Scored`] entries seen: higher score first, ties by lower document index
/// (the order the ground-truth files use).
#[derive(Clone, Debug)]
pub struct TopK {
    k: usize,
    items: Vec<Scored>,
}

fn better(a: &Scored, b: &Scored) -> bool {
    a.score > b.score || (a.score == b.score && a.doc < b.doc)
}

impl TopK {
    /// An empty collector for the best `k`.
    pub fn new(k: usize) -> Self {
        TopK { k, items: Vec::with_capacity(k + 1) }
    }

    /// Offers one entry.
    pub fn push(&mut self, item: Scored) {
        if self.k == 0 {
            return;
        }
        if self.items.len() == self.k {
            let worst = self.items.last().expect("k > 0");
            if !better(&item, worst) {
                return;
            }
            self.items.pop();
        }
        let pos = self.items.partition_point(|x| better(x, &item));
        self.items.insert(pos, item);
    }

    /// The kept entries, best first.
    pub fn into_sorted(self) -> Vec<Scored> {
        self.items
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topk_orders_by_score_then_index() {
        let mut top = TopK::new(3);
        for (doc, score) in [(0, 1.0), (1, 3.0), (2, 2.0), (3, 3.0), (4, 0.5)] {
            top.push(Scored { doc, score });
        }
        let docs: Vec<u32> = top.into_sorted().iter().map(|s| s.doc).collect();
        assert_eq!(docs, vec![1, 3, 2]);
        let mut none = TopK::new(0);
        none.push(Scored { doc: 0, score: 1.0 });
        assert!(none.into_sorted().is_empty());
    }
}
