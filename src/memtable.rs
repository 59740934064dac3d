//! The memtable: documents and deletes acknowledged since the last flush, in WAL order.
//!
//! It is an append-only list of entries (a put or a delete of one id, with its WAL sequence
//! number); the latest entry of an id wins. Readers copy the entry list (pointer copies: documents
//! are shared `Arc`s) under a short read lock and resolve it into a [`MemView`] outside the lock, so
//! a search never holds up writers while it scores. Memtable documents are scored by exact MaxSim:
//! a document is findable as soon as its insert returns. Tokens are held in the collection's storage
//! type (what the segment will store), so a document's scores do not change when it is flushed.

use std::collections::HashMap;
use std::sync::Arc;

use crate::encode::maxsim::DocTokens;
use crate::encode::storage::{from_16bit, to_16bit, TokenStorage};
use crate::error::{Error, Result};

/// Token values owned in a storage type.
#[derive(Clone, Debug, PartialEq)]
pub enum OwnedTokens {
    /// `f32` values.
    F32(Vec<f32>),
    /// IEEE half bits.
    F16(Vec<u16>),
    /// bfloat16 bits.
    Bf16(Vec<u16>),
}

impl OwnedTokens {
    /// Converts validated `f32` tokens to `storage`'s buffer type (rounding to nearest for 16-bit
    /// types; residual collections buffer `f16`, see [`TokenStorage::buffer_storage`]).
    pub fn from_f32(values: &[f32], storage: TokenStorage) -> Result<Self> {
        let storage = storage.buffer_storage();
        Ok(match storage {
            TokenStorage::F32 => OwnedTokens::F32(values.to_vec()),
            TokenStorage::Bf16 => OwnedTokens::Bf16(to_16bit(values, storage)?),
            _ => OwnedTokens::F16(to_16bit(values, TokenStorage::F16)?),
        })
    }

    /// Decodes little-endian bytes of `storage` values (a WAL record's token field).
    pub fn from_le_bytes(bytes: &[u8], storage: TokenStorage) -> Result<Self> {
        let storage = storage.buffer_storage();
        let width = storage.bytes_per_value();
        if !bytes.len().is_multiple_of(width) {
            return Err(Error::InvalidInput(format!("{} token bytes are not whole {width}-byte values", bytes.len())));
        }
        Ok(match storage {
            TokenStorage::F32 => OwnedTokens::F32(
                bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap_or_default())).collect(),
            ),
            _ => {
                let bits: Vec<u16> =
                    bytes.chunks_exact(2).map(|c| u16::from_le_bytes(c.try_into().unwrap_or_default())).collect();
                if storage == TokenStorage::F16 {
                    OwnedTokens::F16(bits)
                } else {
                    OwnedTokens::Bf16(bits)
                }
            }
        })
    }

    /// Little-endian bytes (the WAL encoding).
    pub fn to_le_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.byte_len());
        match self {
            OwnedTokens::F32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            OwnedTokens::F16(v) | OwnedTokens::Bf16(v) => {
                v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes()))
            }
        }
        out
    }

    /// Borrowed view for scoring.
    pub fn as_doc_tokens(&self) -> DocTokens<'_> {
        match self {
            OwnedTokens::F32(v) => DocTokens::F32(v),
            OwnedTokens::F16(v) => DocTokens::F16(v),
            OwnedTokens::Bf16(v) => DocTokens::Bf16(v),
        }
    }

    /// The values as `f32` (exact).
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        match self {
            OwnedTokens::F32(v) => Ok(v.clone()),
            OwnedTokens::F16(v) => from_16bit(v, TokenStorage::F16),
            OwnedTokens::Bf16(v) => from_16bit(v, TokenStorage::Bf16),
        }
    }

    /// Bytes held.
    pub fn byte_len(&self) -> usize {
        match self {
            OwnedTokens::F32(v) => v.len() * 4,
            OwnedTokens::F16(v) | OwnedTokens::Bf16(v) => v.len() * 2,
        }
    }
}

/// A document held in memory.
#[derive(Debug, PartialEq)]
pub struct MemDoc {
    /// External id.
    pub id: u64,
    /// Tokens in the collection's storage type.
    pub tokens: OwnedTokens,
    /// Payload bytes (empty: none).
    pub payload: Vec<u8>,
}

/// One acknowledged operation.
#[derive(Clone, Debug)]
pub struct MemEntry {
    /// External id.
    pub id: u64,
    /// WAL sequence number.
    pub seq: u64,
    /// The new version, or `None` for a delete.
    pub doc: Option<Arc<MemDoc>>,
}

impl MemEntry {
    /// Bytes this entry holds (tokens, payload, bookkeeping).
    pub fn byte_len(&self) -> usize {
        64 + self.doc.as_ref().map_or(0, |d| d.tokens.byte_len() + d.payload.len())
    }
}

/// The active (mutable) memtable.
#[derive(Default)]
pub struct Memtable {
    entries: Vec<MemEntry>,
    latest: HashMap<u64, usize>,
    bytes: usize,
}

impl Memtable {
    /// Appends an entry (its sequence number must exceed every earlier one).
    pub fn push(&mut self, entry: MemEntry) {
        debug_assert!(self.entries.last().is_none_or(|e| e.seq < entry.seq));
        self.bytes += entry.byte_len();
        self.latest.insert(entry.id, self.entries.len());
        self.entries.push(entry);
    }

    /// The latest entry for `id`.
    pub fn get(&self, id: u64) -> Option<&MemEntry> {
        self.latest.get(&id).map(|&i| &self.entries[i])
    }

    /// Entries in WAL order.
    pub fn entries(&self) -> &[MemEntry] {
        &self.entries
    }

    /// Operations held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Distinct ids touched.
    pub fn distinct_ids(&self) -> usize {
        self.latest.len()
    }

    /// Bytes held (approximate: tokens, payloads, bookkeeping).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Takes every entry out, leaving the memtable empty.
    pub fn take(&mut self) -> Vec<MemEntry> {
        self.latest.clear();
        self.bytes = 0;
        std::mem::take(&mut self.entries)
    }
}

/// The resolved state of a list of entries: the latest version of each id.
#[derive(Debug, Default)]
pub struct MemView {
    /// Latest entry per id: `None` is a tombstone.
    pub latest: HashMap<u64, Option<Arc<MemDoc>>>,
    /// Live documents, by id ascending (deterministic order for search and flush).
    pub docs: Vec<Arc<MemDoc>>,
}

impl MemView {
    /// Resolves `entries` (in WAL order).
    pub fn resolve(entries: &[MemEntry]) -> Self {
        let mut latest = HashMap::with_capacity(entries.len());
        for e in entries {
            latest.insert(e.id, e.doc.clone());
        }
        let mut docs: Vec<Arc<MemDoc>> = latest.values().flatten().cloned().collect();
        docs.sort_by_key(|d| d.id);
        MemView { latest, docs }
    }

    /// True if this view decides `id` (holds a version or a tombstone), hiding older layers.
    pub fn shadows(&self, id: u64) -> bool {
        // Checked for every node a graph search visits: skip hashing when there is nothing to find.
        !self.latest.is_empty() && self.latest.contains_key(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(id: u64, seq: u64, v: f32) -> MemEntry {
        MemEntry { id, seq, doc: Some(Arc::new(MemDoc { id, tokens: OwnedTokens::F32(vec![v; 4]), payload: vec![] })) }
    }

    #[test]
    fn latest_entry_wins() {
        let mut m = Memtable::default();
        m.push(put(1, 1, 1.0));
        m.push(put(2, 2, 2.0));
        m.push(put(1, 3, 3.0));
        m.push(MemEntry { id: 2, seq: 4, doc: None });
        assert_eq!(m.get(1).unwrap().seq, 3);
        assert!(m.get(2).unwrap().doc.is_none());
        let view = MemView::resolve(m.entries());
        assert_eq!(view.docs.len(), 1);
        assert_eq!(view.docs[0].tokens, OwnedTokens::F32(vec![3.0; 4]));
        assert!(view.shadows(2) && !view.shadows(3));
        assert_eq!(view.latest.get(&2), Some(&None), "the delete is a tombstone in the view");
    }

    #[test]
    fn token_bytes_round_trip() {
        for storage in [TokenStorage::F32, TokenStorage::F16, TokenStorage::Bf16] {
            let t = OwnedTokens::from_f32(&[0.5, -1.25, 3.0, 0.0], storage).unwrap();
            let back = OwnedTokens::from_le_bytes(&t.to_le_bytes(), storage).unwrap();
            assert_eq!(back, t);
            assert_eq!(back.to_f32_vec().unwrap(), vec![0.5, -1.25, 3.0, 0.0]);
        }
    }
}
