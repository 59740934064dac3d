//! The write path: validate → (under `writer`) frame records with the next sequence numbers →
//! append to the WAL → with `Durability::Sync`: fsync (group commit, outside `writer`) → the
//! entries become visible in the memtable → return.
//!
//! Crash reasoning: a crash before the fsync loses only unacknowledged writes; a torn record at the
//! WAL's end is cut at recovery. A failed append or fsync poisons the handle: later writes fail with
//! [`Error::Poisoned`]; reads go on; reopening recovers the last durable state. Under `Sync` an entry
//! becomes visible only once durable (no dirty reads).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::collection::NewDocument;
use crate::encode::tokens::TokenMatrix;
use crate::engine::{Engine, WriterState};
use crate::error::{Error, Result};
use crate::filter::IndexedField;
use crate::format::wal::{encode_delete, encode_put};
use crate::limits::{MAX_BATCH_DOCS, MAX_DOC_VALUES, MAX_PAYLOAD_BYTES};
use crate::memtable::{MemDoc, MemEntry, OwnedTokens};
use crate::options::Durability;

/// Writers stall when the memtable exceeds this multiple of its flush thresholds.
const STALL_FACTOR: usize = 4;

/// Whether a write may replace an existing id.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteMode {
    /// Refuse an existing id ([`Error::IdExists`]).
    Insert,
    /// Replace it.
    Upsert,
}

/// A document's payload against the indexed fields (the insert-time rule of [`crate::filter`]).
fn check_payload(doc: &NewDocument<'_>, fields: &[IndexedField]) -> Result<()> {
    crate::filter::check_payload(doc.payload, fields)
        .map_err(|e| Error::InvalidInput(format!("document {}: {e}", doc.id)))
}

impl Engine {
    pub(crate) fn validate_doc<'a>(&self, doc: &NewDocument<'a>, fields: &[IndexedField]) -> Result<TokenMatrix<'a>> {
        let tokens = TokenMatrix::new(doc.tokens, self.options.dim as usize)
            .map_err(|e| Error::InvalidInput(format!("document {}: {e}", doc.id)))?;
        if doc.tokens.len() > MAX_DOC_VALUES {
            return Err(Error::InvalidInput(format!(
                "document {}: {} token values exceed the limit of {MAX_DOC_VALUES}",
                doc.id,
                doc.tokens.len()
            )));
        }
        if doc.payload.is_some_and(|p| p.len() > MAX_PAYLOAD_BYTES) {
            return Err(Error::InvalidInput(format!(
                "document {}: payload of {} bytes exceeds the limit of {MAX_PAYLOAD_BYTES}",
                doc.id,
                doc.payload.map_or(0, |p| p.len())
            )));
        }
        check_payload(doc, fields)?;
        Ok(tokens)
    }

    /// True if `id` has a logged, not yet visible version (Sync mode, fsync in flight).
    pub(crate) fn pending_state(&self, id: u64) -> Option<bool> {
        self.pending.lock().iter().rev().find(|e| e.id == id).map(|e| e.doc.is_some())
    }

    pub(crate) fn exists_for_write(&self, id: u64) -> Result<bool> {
        if let Some(present) = self.pending_state(id) {
            return Ok(present);
        }
        Ok(self.lookup(id)?.is_some())
    }

    pub(crate) fn write_docs(&self, docs: &[NewDocument<'_>], mode: WriteMode) -> Result<()> {
        if docs.is_empty() {
            return Ok(());
        }
        if docs.len() > MAX_BATCH_DOCS {
            return Err(Error::InvalidInput(format!(
                "{} documents exceed the batch limit of {MAX_BATCH_DOCS}",
                docs.len()
            )));
        }
        let fields = self.fields();
        let mut entries = Vec::with_capacity(docs.len());
        for doc in docs {
            let tokens = self.validate_doc(doc, &fields)?;
            let owned = OwnedTokens::from_f32(tokens.as_slice(), self.options.storage)?;
            entries.push(Arc::new(MemDoc { id: doc.id, tokens: owned, payload: doc.payload.unwrap_or(&[]).to_vec() }));
        }
        if mode == WriteMode::Insert {
            let mut seen = HashSet::with_capacity(docs.len());
            for d in docs {
                if !seen.insert(d.id) {
                    return Err(Error::InvalidInput(format!("document id {} appears twice in the batch", d.id)));
                }
            }
        }
        self.stall_while_flush_lags();
        let mut buf = Vec::new();
        let writer = self.writer.lock();
        self.check_writable()?;
        // A field indexed since the payloads were checked (`index_field` changes fields only under
        // the writer lock): check them against it too.
        let now = self.fields();
        if !Arc::ptr_eq(&now, &fields) {
            for doc in docs {
                check_payload(doc, &now)?;
            }
        }
        if mode == WriteMode::Insert {
            for d in docs {
                if self.exists_for_write(d.id)? {
                    return Err(Error::IdExists { id: d.id });
                }
            }
        }
        let first = writer.next_seq;
        let count = entries.len();
        for (i, doc) in entries.iter().enumerate() {
            encode_put(
                &mut buf,
                first + i as u64,
                i + 1 < count,
                doc.id,
                self.options.dim,
                self.options.storage.buffer_storage(),
                &doc.tokens.to_le_bytes(),
                &doc.payload,
            );
        }
        let mem: Vec<MemEntry> = entries
            .into_iter()
            .enumerate()
            .map(|(i, d)| MemEntry { id: d.id, seq: first + i as u64, doc: Some(d) })
            .collect();
        self.log_and_apply(writer, &buf, mem)
    }

    /// Indexes one more payload field ([`crate::Collection::index_field`]). Under the writer
    /// lock, so no write slips between the check and the change: every live or logged document
    /// must give the field a value of its kind or none, else nothing changes and the error names
    /// the first document that does not. Then the stored options gain the field (one synced
    /// catalog write: the commit point), and writes and searches see it. Segments written before
    /// carry no column for it and are filtered on their payloads until a merge rewrites them.
    pub(crate) fn index_field(&self, field: IndexedField) -> Result<()> {
        let writer = self.writer.lock();
        self.check_writable()?;
        let mut next: Vec<IndexedField> = self.fields().to_vec();
        if next.iter().any(|f| f.name == field.name) {
            return Err(Error::InvalidInput(format!("field '{}' is already indexed", field.name)));
        }
        next.push(field.clone());
        crate::filter::validate_fields(&next)?;
        let one = [field];
        let check = |id: u64, payload: &[u8]| {
            crate::filter::check_payload(Some(payload), &one).map_err(|e| {
                Error::InvalidInput(format!("document {id}: {e}; change or delete it before indexing the field"))
            })
        };
        for e in self.pending.lock().iter() {
            if let Some(d) = &e.doc {
                check(d.id, &d.payload)?;
            }
        }
        let snapshot = self.snapshot();
        let frozen = snapshot.version.frozen.as_deref();
        for d in &snapshot.active.docs {
            check(d.id, &d.payload)?;
        }
        if let Some(frozen) = frozen {
            for d in frozen.docs.iter().filter(|d| !snapshot.active.shadows(d.id)) {
                check(d.id, &d.payload)?;
            }
        }
        for seg in &snapshot.version.segments {
            let reader = &seg.handle.reader;
            for (ord, &id) in reader.doc_ids().iter().enumerate() {
                if seg.live.is_live(ord as u32)
                    && !snapshot.active.shadows(id)
                    && !frozen.is_some_and(|f| f.shadows(id))
                {
                    check(id, reader.payload(ord))?;
                }
            }
        }
        let mut options = self.catalog.options()?;
        options.indexed_fields = next.clone();
        self.catalog.set_options(&options)?;
        *self.fields.write() = Arc::new(next);
        drop(writer);
        Ok(())
    }

    pub(crate) fn delete(&self, id: u64) -> Result<bool> {
        let writer = self.writer.lock();
        self.check_writable()?;
        if !self.exists_for_write(id)? {
            return Ok(false);
        }
        let seq = writer.next_seq;
        let mut buf = Vec::new();
        encode_delete(&mut buf, seq, id);
        self.log_and_apply(writer, &buf, vec![MemEntry { id, seq, doc: None }])?;
        Ok(true)
    }

    /// Appends `buf` (records `entries[0].seq ..= last`) to the WAL and makes the entries visible
    /// when the durability policy allows (see the module docs). Consumes the writer guard.
    pub(crate) fn log_and_apply(
        &self,
        mut writer: parking_lot::MutexGuard<'_, WriterState>,
        buf: &[u8],
        entries: Vec<MemEntry>,
    ) -> Result<()> {
        let Some(last) = entries.last().map(|e| e.seq) else { return Ok(()) };
        self.wal.append(buf, last).map_err(|e| self.poison(e))?;
        writer.next_seq = last + 1;
        match self.durability {
            Durability::Sync => {
                self.pending.lock().extend(entries);
                drop(writer);
                self.wal.sync_to(last).map_err(|e| self.poison(e))?;
                self.publish(last);
            }
            Durability::Periodic(_) | Durability::None => {
                let mut st = self.state.write();
                for e in entries {
                    st.active.push(e);
                }
                drop(st);
                drop(writer);
            }
        }
        self.after_write()
    }

    /// Moves logged entries up to `upto` (durable) from `pending` into the memtable, in order.
    pub(crate) fn publish(&self, upto: u64) {
        let mut pending = self.pending.lock();
        if pending.front().is_none_or(|e| e.seq > upto) {
            return;
        }
        let mut st = self.state.write();
        while let Some(e) = pending.pop_front() {
            if e.seq > upto {
                pending.push_front(e);
                break;
            }
            st.active.push(e);
        }
    }

    /// With background maintenance, a writer that outruns flushing waits while the active memtable
    /// holds more than [`STALL_FACTOR`] times its thresholds (a "write stall", as in RocksDB), so
    /// memory stays bounded and ingest settles at the rate flushes sustain.
    pub(crate) fn stall_while_flush_lags(&self) {
        if !self.open_options.background {
            return;
        }
        let max_docs = self.open_options.memtable_max_docs.saturating_mul(STALL_FACTOR);
        let max_bytes = self.open_options.memtable_max_bytes.saturating_mul(STALL_FACTOR);
        loop {
            let over = {
                let st = self.state.read();
                st.active.distinct_ids() >= max_docs || st.active.bytes() >= max_bytes
            };
            if !over || self.is_closed() || self.poisoned.is_set() {
                return;
            }
            self.flush_wake.notify();
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    pub(crate) fn memtable_full(&self) -> bool {
        let st = self.state.read();
        st.active.distinct_ids() >= self.open_options.memtable_max_docs
            || st.active.bytes() >= self.open_options.memtable_max_bytes
    }

    pub(crate) fn after_write(&self) -> Result<()> {
        if !self.memtable_full() {
            return Ok(());
        }
        if self.open_options.background {
            self.flush_wake.notify();
            Ok(())
        } else {
            // The write itself is acknowledged; a failing flush poisons the handle and is reported
            // by the next write.
            let _ = self.flush();
            Ok(())
        }
    }

    /// `Durability::Periodic`: fsyncs the WAL every `interval` (waking at least every 100 ms so
    /// `close` is not held up by a long interval).
    pub(crate) fn sync_loop(self: Arc<Self>, interval: Duration) {
        let mut last = std::time::Instant::now();
        while !self.is_closed() {
            std::thread::sleep(interval.saturating_sub(last.elapsed()).min(Duration::from_millis(100)));
            if last.elapsed() < interval {
                continue;
            }
            last = std::time::Instant::now();
            let written = self.wal.written_seq();
            if !self.poisoned.is_set() {
                let _ = self.wal.sync_to(written).map_err(|e| self.poison(e));
            }
        }
    }
}
