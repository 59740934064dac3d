//! Retrieval quality measures, as `shared/data/FORMAT.md` defines them.

/// `|retrieved[..k] ∩ truth[..k]| / k`: how much of the exact top-k the engine found.
/// Short lists count their missing entries as misses.
pub fn recall_at_k(retrieved: &[u32], truth: &[u32], k: usize) -> f64 {
    if k == 0 {
        return 0.0;
    }
    let truth = &truth[..k.min(truth.len())];
    let hits = retrieved.iter().take(k).filter(|d| truth.contains(d)).count();
    hits as f64 / k as f64
}

/// nDCG@k with linear gains (as BEIR/pytrec_eval): `DCG = Σ rel_i / log2(i + 2)` over the first
/// `k` retrieved documents, divided by the DCG of the ideal ordering of the judged documents.
/// A query without relevant judgments scores 0.
pub fn ndcg_at_k(retrieved: &[u32], judged: &[(u32, f32)], k: usize) -> f64 {
    let gain = |doc: u32| judged.iter().find(|(d, _)| *d == doc).map_or(0.0, |&(_, r)| r.max(0.0) as f64);
    let dcg: f64 = retrieved.iter().take(k).enumerate().map(|(i, &d)| gain(d) / ((i + 2) as f64).log2()).sum();
    let mut ideal: Vec<f64> = judged.iter().map(|&(_, r)| r.max(0.0) as f64).collect();
    ideal.sort_by(|a, b| b.total_cmp(a));
    let idcg: f64 = ideal.iter().take(k).enumerate().map(|(i, g)| g / ((i + 2) as f64).log2()).sum();
    if idcg > 0.0 {
        dcg / idcg
    } else {
        0.0
    }
}

/// Percentile `p` (0..=100) of `values` by nearest rank; 0 for an empty slice.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recall_and_ndcg_by_hand() {
        assert_eq!(recall_at_k(&[1, 2, 3], &[3, 2, 9], 3), 2.0 / 3.0);
        assert_eq!(recall_at_k(&[1], &[1, 2], 2), 0.5);
        assert_eq!(ndcg_at_k(&[5, 6], &[(5, 1.0)], 10), 1.0);
        let expected = (1.0 / 3f64.log2()) / 1.0;
        assert!((ndcg_at_k(&[6, 5], &[(5, 1.0)], 10) - expected).abs() < 1e-12);
        assert_eq!(ndcg_at_k(&[6], &[], 10), 0.0);
        assert_eq!(percentile(&[3.0, 1.0, 2.0, 4.0], 50.0), 2.0);
        assert_eq!(percentile(&[3.0, 1.0, 2.0, 4.0], 99.0), 4.0);
    }
}
