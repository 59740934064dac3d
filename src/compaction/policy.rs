//! The merge policy: a pure function from segment statistics to merge plans (no I/O, no clock),
//! so it is tested exhaustively on its own and the collection only executes what it returns.
//!
//! Tiered by size: a segment's tier is `floor(log_f(live_docs / base_docs))` with `f` the merge
//! factor. When a tier holds `f` or more segments, its `f` smallest are merged into one segment of
//! about the next tier's size. Every document is therefore rewritten about `log_f(N / base)` times
//! (write amplification), and the number of segments stays near `(f - 1) · log_f(N / base)`.
//! Independently, a segment whose deleted fraction reaches `max_deleted_ratio` is rewritten alone,
//! and a segment with no live document is dropped without writing anything.

use crate::error::{Error, Result};

/// Statistics of one live segment, as the policy sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentStats {
    /// Segment id.
    pub id: u64,
    /// Documents stored in the file.
    pub doc_count: u64,
    /// Documents still visible (not deleted or replaced).
    pub live_docs: u64,
}

/// One merge: the input segments; the output holds their live documents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MergePlan {
    /// Input segment ids, ascending.
    pub inputs: Vec<u64>,
}

/// Tiered merge policy parameters.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TieredPolicy {
    /// Segments merged at once, and the size ratio between tiers (default 4).
    pub merge_factor: usize,
    /// Size of tier 0 in live documents (default 4,096: the default memtable size).
    pub base_docs: u64,
    /// No merge is planned whose output would hold more than this many documents (default and
    /// maximum 2^24, the segment limit): a tier whose smallest `merge_factor` segments together
    /// exceed it is left alone. (A plan over the limit made the writer refuse mid-merge and poison
    /// the handle, and the same plan ran again after every reopen.)
    pub max_segment_docs: u64,
    /// A segment with at least this fraction of deleted documents is rewritten (default 0.3).
    pub max_deleted_ratio: f64,
}

impl Default for TieredPolicy {
    fn default() -> Self {
        TieredPolicy {
            merge_factor: 4,
            base_docs: 4096,
            max_segment_docs: crate::limits::MAX_DOCS_PER_SEGMENT,
            max_deleted_ratio: 0.3,
        }
    }
}

impl TieredPolicy {
    /// Checks the parameters.
    pub fn validate(&self) -> Result<()> {
        if !(2..=64).contains(&self.merge_factor) {
            return Err(Error::invalid_param("merge_factor", format!("{} is outside 2..=64", self.merge_factor)));
        }
        if self.base_docs == 0 {
            return Err(Error::invalid_param("base_docs", "tier sizes must be positive"));
        }
        let cap = crate::limits::MAX_DOCS_PER_SEGMENT;
        if self.max_segment_docs == 0 || self.max_segment_docs > cap {
            return Err(Error::invalid_param(
                "max_segment_docs",
                format!("{} is outside 1..={cap} (the segment limit)", self.max_segment_docs),
            ));
        }
        if !(self.max_deleted_ratio > 0.0 && self.max_deleted_ratio <= 1.0) {
            return Err(Error::invalid_param(
                "max_deleted_ratio",
                format!("{} is outside (0, 1]", self.max_deleted_ratio),
            ));
        }
        Ok(())
    }

    /// The tier of a segment with `live_docs` documents.
    pub fn tier(&self, live_docs: u64) -> u32 {
        let mut tier = 0;
        let mut bound = self.base_docs;
        while live_docs >= bound.saturating_mul(self.merge_factor as u64) && bound < u64::MAX / 2 {
            bound = bound.saturating_mul(self.merge_factor as u64);
            tier += 1;
        }
        tier
    }

    /// The merges to run now, disjoint, in a deterministic order (empty: nothing to do).
    pub fn plan(&self, segments: &[SegmentStats]) -> Vec<MergePlan> {
        let mut used = std::collections::HashSet::new();
        let mut plans = Vec::new();
        // Dead segments go first and alone: dropping them writes nothing.
        for s in segments.iter().filter(|s| s.live_docs == 0) {
            used.insert(s.id);
            plans.push(MergePlan { inputs: vec![s.id] });
        }
        let mut by_tier: std::collections::BTreeMap<u32, Vec<&SegmentStats>> = Default::default();
        for s in segments.iter().filter(|s| !used.contains(&s.id) && s.live_docs < self.max_segment_docs) {
            by_tier.entry(self.tier(s.live_docs)).or_default().push(s);
        }
        for (_, mut tier) in by_tier {
            tier.sort_by_key(|s| (s.live_docs, s.id));
            while tier.len() >= self.merge_factor {
                // The smallest `merge_factor` of the tier: if even they would exceed the output
                // cap, no group of this tier fits.
                let output: u64 = tier[..self.merge_factor].iter().map(|s| s.live_docs).sum();
                if output > self.max_segment_docs {
                    break;
                }
                let group: Vec<&SegmentStats> = tier.drain(..self.merge_factor).collect();
                let mut inputs: Vec<u64> = group.iter().map(|s| s.id).collect();
                inputs.sort_unstable();
                used.extend(inputs.iter().copied());
                plans.push(MergePlan { inputs });
            }
        }
        for s in segments {
            let deleted = s.doc_count.saturating_sub(s.live_docs);
            if !used.contains(&s.id) && s.doc_count > 0 && deleted as f64 >= self.max_deleted_ratio * s.doc_count as f64
            {
                used.insert(s.id);
                plans.push(MergePlan { inputs: vec![s.id] });
            }
        }
        plans
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seg(id: u64, docs: u64, live: u64) -> SegmentStats {
        SegmentStats { id, doc_count: docs, live_docs: live }
    }

    #[test]
    fn never_plans_a_merge_above_the_segment_limit() {
        // The story: four tier-5 segments of up to 16M documents each were planned into one merge
        // of 64M, past the 2^24 segment limit; the writer refused after 16M documents, poisoned the
        // handle, and reopening ran the same plan again.
        let big = crate::limits::MAX_DOCS_PER_SEGMENT / 2;
        let p = TieredPolicy::default();
        let segs: Vec<SegmentStats> = (0..4).map(|i| seg(i, big, big)).collect();
        assert!(p.plan(&segs).is_empty(), "four half-limit segments must not be merged into one");
        let lowered = TieredPolicy { base_docs: 10, max_segment_docs: 100, ..Default::default() };
        let segs: Vec<SegmentStats> = (0..4).map(|i| seg(i, 30, 30)).collect();
        assert!(lowered.plan(&segs).is_empty(), "4 x 30 = 120 > 100");
        let segs: Vec<SegmentStats> = (0..4).map(|i| seg(i, 25, 25)).collect();
        assert_eq!(lowered.plan(&segs).len(), 1, "4 x 25 = 100 fits");
        assert!(TieredPolicy { max_segment_docs: crate::limits::MAX_DOCS_PER_SEGMENT + 1, ..Default::default() }
            .validate()
            .is_err());
    }

    #[test]
    fn tiers_grow_by_the_merge_factor() {
        let p = TieredPolicy { base_docs: 100, merge_factor: 4, ..Default::default() };
        assert_eq!([0, 99, 100, 399, 400, 1599, 1600].map(|n| p.tier(n)), [0, 0, 0, 0, 1, 1, 2]);
    }

    #[test]
    fn merges_full_tiers_and_rewrites_deleted_heavy_segments() {
        let p = TieredPolicy { base_docs: 100, merge_factor: 3, ..Default::default() };
        assert!(p.plan(&[seg(1, 100, 100), seg(2, 100, 100)]).is_empty());
        let plans = p.plan(&[seg(1, 100, 100), seg(2, 50, 50), seg(3, 100, 100), seg(4, 90, 90), seg(5, 1000, 1000)]);
        assert_eq!(plans, vec![MergePlan { inputs: vec![1, 2, 4] }], "the three smallest of tier 0 (ties by id)");
        let plans = p.plan(&[seg(7, 1000, 600), seg(8, 1000, 0), seg(9, 1000, 800)]);
        assert_eq!(plans, vec![MergePlan { inputs: vec![8] }, MergePlan { inputs: vec![7] }]);
    }

    proptest! {
        /// Plans are disjoint, reference only existing segments, and applying them until none is
        /// left terminates with every tier below the merge factor.
        #[test]
        fn plans_are_disjoint_and_converge(
            sizes in proptest::collection::vec(1u64..5000, 0..40),
            cap in prop_oneof![Just(crate::limits::MAX_DOCS_PER_SEGMENT), 5000u64..40_000],
        ) {
            // A lowered output cap: no plan may ever exceed it, and planning still converges.
            let p = TieredPolicy { base_docs: 64, merge_factor: 4, max_segment_docs: cap, ..Default::default() };
            let mut segments: Vec<SegmentStats> =
                sizes.iter().enumerate().map(|(i, &n)| seg(i as u64, n, n)).collect();
            let mut next = segments.len() as u64;
            for _round in 0..100 {
                let plans = p.plan(&segments);
                if plans.is_empty() { break; }
                let mut seen = std::collections::HashSet::new();
                for plan in &plans {
                    for id in &plan.inputs {
                        prop_assert!(seen.insert(*id), "segment {} in two plans", id);
                        prop_assert!(segments.iter().any(|s| s.id == *id));
                    }
                }
                for plan in plans {
                    let live: u64 = segments.iter().filter(|s| plan.inputs.contains(&s.id)).map(|s| s.live_docs).sum();
                    prop_assert!(live <= cap, "plan {:?} would write {} documents, above the cap {}", plan.inputs, live, cap);
                    segments.retain(|s| !plan.inputs.contains(&s.id));
                    if live > 0 {
                        segments.push(seg(next, live, live));
                    }
                    next += 1;
                }
            }
            prop_assert!(p.plan(&segments).is_empty());
            let total: u64 = sizes.iter().sum();
            prop_assert_eq!(segments.iter().map(|s| s.live_docs).sum::<u64>(), total);
        }
    }
}
