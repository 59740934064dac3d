//! A generated, clustered multi-vector corpus with a fixed seed: the built-in default for
//! `quiver demo`, tests and benchmarks that must not depend on downloaded data.
//!
//! Structure, chosen to resemble real token embeddings rather than i.i.d. Gaussians (on which
//! graph indexes behave very differently, see DESIGN.md): a vocabulary of token *types* grouped
//! around concept centres; each document has a topic, a weighted set of concepts, and draws most
//! of its tokens from its topic's types and the rest from the whole vocabulary; every token is
//! its type plus noise, L2-normalised. A query is built from one target document: noisy copies
//! of some of its tokens and a few other types of its topic, so it has a clear best match but
//! many plausible competitors.

use crate::dataset::MultiVectors;
use crate::encode::rng::SplitMix64;
use crate::error::Result;

/// Shape of a generated corpus.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CorpusSpec {
    /// Documents.
    pub n_docs: usize,
    /// Queries.
    pub n_queries: usize,
    /// Token dimension.
    pub dim: usize,
    /// Fewest tokens per document.
    pub min_doc_tokens: usize,
    /// Most tokens per document.
    pub max_doc_tokens: usize,
    /// Tokens per query.
    pub query_tokens: usize,
    /// Seed of everything.
    pub seed: u64,
}

impl CorpusSpec {
    /// A small default: 2,000 documents of 32–96 128-d tokens, 50 queries of 24 tokens.
    pub fn small() -> Self {
        CorpusSpec {
            n_docs: 2000,
            n_queries: 50,
            dim: 128,
            min_doc_tokens: 32,
            max_doc_tokens: 96,
            query_tokens: 24,
            seed: 42,
        }
    }
}

/// A generated corpus.
#[derive(Clone, Debug)]
pub struct Corpus {
    /// Document token sets.
    pub docs: MultiVectors,
    /// Query token sets.
    pub queries: MultiVectors,
    /// The document each query was built from.
    pub query_targets: Vec<u32>,
}

const CONCEPTS: usize = 256;
const TYPES_PER_CONCEPT: usize = 24;
const TOPICS: usize = 400;
const CONCEPTS_PER_TOPIC: usize = 8;

/// `n` random unit vectors of `dim` dimensions (Gaussian directions), row-major, from `seed`: the
/// plain random input of property tests and benchmarks.
pub fn unit_rows(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    (0..n).flat_map(|_| unit_vector(&mut rng, dim)).collect()
}

fn unit_vector(rng: &mut SplitMix64, dim: usize) -> Vec<f32> {
    let v: Vec<f64> = (0..dim).map(|_| rng.normal()).collect();
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
    v.iter().map(|x| (x / norm) as f32).collect()
}

fn noisy_unit(rng: &mut SplitMix64, base: &[f32], noise: f64, out: &mut Vec<f32>) {
    let start = out.len();
    let scale = noise / (base.len() as f64).sqrt();
    out.extend(base.iter().map(|&b| (b as f64 + scale * rng.normal()) as f32));
    let norm = out[start..].iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>().sqrt().max(1e-12);
    out[start..].iter_mut().for_each(|x| *x = (*x as f64 / norm) as f32);
}

/// Generates the corpus described by `spec` (deterministic for a given spec).
pub fn generate(spec: &CorpusSpec) -> Result<Corpus> {
    let mut rng = SplitMix64::new(spec.seed);
    let dim = spec.dim;
    let concepts: Vec<Vec<f32>> = (0..CONCEPTS).map(|_| unit_vector(&mut rng, dim)).collect();
    let mut types: Vec<Vec<f32>> = Vec::with_capacity(CONCEPTS * TYPES_PER_CONCEPT);
    for concept in &concepts {
        for _ in 0..TYPES_PER_CONCEPT {
            let mut t = Vec::with_capacity(dim);
            noisy_unit(&mut rng, concept, 0.9, &mut t);
            types.push(t);
        }
    }
    let topics: Vec<Vec<usize>> =
        (0..TOPICS).map(|_| (0..CONCEPTS_PER_TOPIC).map(|_| rng.below(CONCEPTS as u64) as usize).collect()).collect();
    let topic_type = |rng: &mut SplitMix64, topic: usize| {
        let concept = topics[topic][rng.below(CONCEPTS_PER_TOPIC as u64) as usize];
        concept * TYPES_PER_CONCEPT + rng.below(TYPES_PER_CONCEPT as u64) as usize
    };

    let mut doc_values = Vec::new();
    let mut doc_offsets = vec![0usize];
    let mut doc_topics = Vec::with_capacity(spec.n_docs);
    let span = spec.max_doc_tokens.saturating_sub(spec.min_doc_tokens) as u64 + 1;
    for _ in 0..spec.n_docs {
        let topic = rng.below(TOPICS as u64) as usize;
        doc_topics.push(topic);
        let n = spec.min_doc_tokens.max(1) + rng.below(span) as usize;
        for _ in 0..n {
            let t = if rng.next_f64() < 0.75 {
                topic_type(&mut rng, topic)
            } else {
                rng.below(types.len() as u64) as usize
            };
            noisy_unit(&mut rng, &types[t], 0.35, &mut doc_values);
        }
        doc_offsets.push(doc_offsets.last().copied().unwrap_or(0) + n);
    }
    let docs = MultiVectors::new(dim, doc_values, doc_offsets)?;

    let mut query_values = Vec::new();
    let mut query_offsets = vec![0usize];
    let mut query_targets = Vec::with_capacity(spec.n_queries);
    for _ in 0..spec.n_queries {
        let target = rng.below(spec.n_docs.max(1) as u64) as usize;
        query_targets.push(target as u32);
        let doc = docs.get(target);
        for _ in 0..spec.query_tokens.max(1) {
            if rng.next_f64() < 0.7 {
                let row = doc.row(rng.below(doc.rows() as u64) as usize).to_vec();
                noisy_unit(&mut rng, &row, 0.5, &mut query_values);
            } else {
                let t = topic_type(&mut rng, doc_topics[target]);
                noisy_unit(&mut rng, &types[t], 0.5, &mut query_values);
            }
        }
        query_offsets.push(query_offsets.last().copied().unwrap_or(0) + spec.query_tokens.max(1));
    }
    let queries = MultiVectors::new(dim, query_values, query_offsets)?;
    Ok(Corpus { docs, queries, query_targets })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_normalised() {
        let spec = CorpusSpec { n_docs: 20, n_queries: 3, dim: 16, ..CorpusSpec::small() };
        let a = generate(&spec).unwrap();
        let b = generate(&spec).unwrap();
        assert_eq!(a.docs, b.docs);
        assert_eq!(a.queries.len(), 3);
        for doc in a.docs.iter() {
            assert!((32..=96).contains(&doc.rows()));
            for row in doc.iter_rows() {
                let n: f32 = row.iter().map(|x| x * x).sum();
                assert!((n - 1.0).abs() < 1e-4);
            }
        }
    }
}
