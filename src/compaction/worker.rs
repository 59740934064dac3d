//! Merge execution: runs the plans of the merge policy ([`super::policy`]) against the writing
//! handle, one merge at a time, beside flushes and writes.
//!
//! 1. Plan on the current version (under `merge_lock`, which only merges take).
//! 2. Write the new segment from the inputs' live documents (no lock held; flushes and writes go
//!    on, and may replace or delete documents being copied).
//! 3. Commit (under the commit lock): an id is repointed to the output only if the catalog still
//!    places it where the merge copied it from; a document replaced or deleted by a flush that
//!    committed meanwhile stays dead in the output. One synced batch adds the output, removes the
//!    inputs and repoints the moved ids; the version without the inputs is installed right after.
//!    Input files are deleted when the last reader holding them lets go.
//!
//! Crash before the commit: the output is an orphan (deleted at open). After: the inputs are
//! orphans if not yet deleted, removed at open.

use std::sync::Arc;
use std::time::Duration;

use crate::catalog::{Commit, SegmentRecord};
use crate::collection::CompactionReport;
use crate::compaction::merge::{merge, MergeInput};
use crate::compaction::{MergePlan, SegmentStats};
use crate::engine::Engine;
use crate::error::Result;
use crate::recovery::SEGMENTS_DIR;
use crate::segment::{self, LiveBits};
use crate::snapshot::{LiveSegment, Version};

impl Engine {
    /// Runs the merge policy until it has nothing left to merge.
    pub(crate) fn compact(&self) -> Result<CompactionReport> {
        let mut report = CompactionReport::default();
        loop {
            let step = self.compact_step()?;
            if step.merges == 0 {
                return Ok(report);
            }
            report.merges += step.merges;
            report.inputs += step.inputs;
            report.docs_written += step.docs_written;
            report.bytes_written += step.bytes_written;
            report.graphs_extended += step.graphs_extended;
        }
    }

    /// Plans once and runs every merge of the plan.
    fn compact_step(&self) -> Result<CompactionReport> {
        let _merge = self.merge_lock.lock();
        self.check_writable()?;
        let version = self.state.read().version.clone();
        let stats: Vec<SegmentStats> = version
            .segments
            .iter()
            .map(|s| SegmentStats {
                id: s.handle.id,
                doc_count: s.handle.reader.doc_count() as u64,
                live_docs: s.live.live_count() as u64,
            })
            .collect();
        let plans = self.open_options.merge_policy.plan(&stats);
        let mut report = CompactionReport::default();
        for plan in plans {
            if self.is_closed() {
                break;
            }
            let (docs, bytes, extended) = self.run_merge(&plan)?;
            report.merges += 1;
            report.inputs += plan.inputs.len() as u64;
            report.docs_written += docs;
            report.bytes_written += bytes;
            report.graphs_extended += extended as u64;
        }
        Ok(report)
    }

    /// Runs one merge: documents and bytes written, and whether the output's graph extended an
    /// input's.
    fn run_merge(&self, plan: &MergePlan) -> Result<(u64, u64, bool)> {
        let version = self.state.read().version.clone();
        let inputs: Vec<&LiveSegment> =
            version.segments.iter().filter(|s| plan.inputs.contains(&s.handle.id)).collect();
        debug_assert_eq!(inputs.len(), plan.inputs.len());
        let live_total: u64 = inputs.iter().map(|s| s.live.live_count() as u64).sum();
        let segment_id = self.allocate_segment_id();
        let (codebook, token_codebook) = {
            let cs = self.commit_lock();
            (cs.codebook.clone(), cs.token_codebook.clone())
        };
        let (config, trains, trains_tokens) = self
            .segment_config(segment_id, live_total, &codebook, &token_codebook, |cap| {
                // Live documents of the inputs, in merge order.
                let docs: Vec<(&LiveSegment, u32)> =
                    inputs.iter().flat_map(|s| s.live.iter_live().map(move |o| (*s, o))).collect();
                let rows: Vec<usize> =
                    docs.iter().map(|(s, o)| s.handle.reader.token_range(*o as usize).count()).collect();
                crate::flush::sample_tokens(&rows, cap, |i| docs[i].0.handle.reader.tokens_f32(docs[i].1 as usize))
            })
            .map_err(|e| self.poison(e))?;
        let new_token_codebook = if trains_tokens { config.tokens.clone() } else { None };
        let written_tokens = config.tokens.clone();
        let path = self.path.join(SEGMENTS_DIR).join(segment::file_name(segment_id));
        let merge_inputs: Vec<MergeInput<'_>> =
            inputs.iter().map(|s| MergeInput { id: s.handle.id, reader: &s.handle.reader, live: &s.live }).collect();
        let merged = merge(
            self.storage.clone(),
            &merge_inputs,
            &path,
            self.encoder.clone(),
            config,
            !self.open_options.merge_rebuilds_graphs,
            |_| {},
        )
        .map_err(|e| self.poison(e))?;
        let output = match &merged {
            Some(m) => Some(
                self.open_new_segment(&m.summary.path, segment_id, &m.summary.codebook, written_tokens.as_ref())
                    .map_err(|e| self.poison(e))?,
            ),
            None => None,
        };

        let mut cs = self.commit_lock();
        let mut commit = Commit { remove_segments: plan.inputs.clone(), ..Default::default() };
        let mut written = (0, 0, false);
        let mut output_live = None;
        let book = match (&merged, &output) {
            (Some(m), Some(handle)) => crate::flush::codebook_after(
                cs.codebook.as_ref(),
                &handle.codebook.get_or_load(&handle.reader).map_err(|e| self.poison(e))?,
                live_total,
                trains,
                m.summary.pq_distortion,
            ),
            _ => None,
        };
        if let (Some(merged), Some(handle)) = (&merged, &output) {
            commit.add_segments.push(SegmentRecord {
                id: segment_id,
                doc_count: merged.summary.doc_count,
                file_len: merged.summary.bytes,
            });
            let mut live = LiveBits::none(handle.reader.doc_count());
            for (id, from, ordinal) in &merged.moved {
                // Under the commit lock: a flush that replaced or deleted the id since the merge
                // started has already moved the catalog entry away from `from`.
                let here = crate::catalog::Location { segment: segment_id, ordinal: *ordinal };
                if self.catalog.location(*id).map_err(|e| self.poison(e))? == Some(*from) {
                    commit.put_locations.push((*id, here));
                    live.set(*ordinal);
                } else {
                    commit.dead.push(here);
                }
            }
            written = (merged.summary.doc_count, merged.summary.bytes, merged.summary.graph_extended);
            crate::flush::commit_codebook(&mut commit, book.as_ref(), trains);
            commit.token_codebook = new_token_codebook.as_deref();
            output_live = Some(Arc::new(live));
        }
        self.commit_and_install(&cs, commit, |v| {
            let mut segments: Vec<LiveSegment> = Vec::with_capacity(v.segments.len());
            for s in &v.segments {
                if plan.inputs.contains(&s.handle.id) {
                    s.handle.mark_obsolete();
                } else {
                    segments.push(s.clone());
                }
            }
            if let (Some(handle), Some(live)) = (&output, &output_live) {
                segments.push(LiveSegment { handle: handle.clone(), live: live.clone() });
                segments.sort_by_key(|s| s.handle.id);
            }
            Version { segments, frozen: v.frozen.clone() }
        })?;
        if book.is_some() {
            cs.codebook = book;
        }
        if output.is_some() && new_token_codebook.is_some() {
            cs.token_codebook = new_token_codebook;
        }
        Ok(written)
    }

    /// The background compaction thread: after each flush (and at least every second), merges
    /// until the policy has nothing to do. Flushes go on meanwhile.
    pub(crate) fn compaction_loop(self: Arc<Self>) {
        loop {
            self.compact_wake.wait(Duration::from_secs(1));
            if self.is_closed() {
                return;
            }
            if self.poisoned.is_set() {
                continue;
            }
            while !self.is_closed() {
                match self.in_maintenance_pool(|| self.compact_step()) {
                    Ok(step) if step.merges > 0 => continue,
                    _ => break,
                }
            }
        }
    }
}
