//! What a reader sees: the live segments as one commit left them ([`Version`]) plus the memtables
//! that are newer than every segment ([`Snapshot`]), and how an id is resolved against them.
//!
//! A `Version` is immutable and replaced as a whole at every commit point (flush, merge), so a
//! reader that holds one sees a consistent collection for as long as it likes; segment files that
//! leave the collection are deleted only when the last `Version` holding them is dropped
//! ([`SegmentHandle`]). Both the writing handle and the read-only handle build on these types.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use crate::catalog::{Catalog, Location};
use crate::encode::pq::PqCodebook;
use crate::error::{Error, Result};
use crate::io::storage::Storage;
use crate::memtable::{MemDoc, MemView};
use crate::segment::{LiveBits, SegmentReader};

/// A stored document as `get` returns it.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredDocument {
    /// External id.
    pub id: u64,
    /// Token vectors as stored (16-bit storage converted back to `f32` exactly), row-major.
    pub tokens: Vec<f32>,
    /// Payload bytes (empty: none).
    pub payload: Vec<u8>,
}

/// A segment file in use. When it leaves the collection (merged away) the writer marks it obsolete
/// and it is deleted when the last snapshot holding it is dropped. A read-only handle never marks
/// one, so it never deletes anything; a file the writer deletes stays readable through its map.
pub(crate) struct SegmentHandle {
    storage: Arc<dyn Storage>,
    pub(crate) id: u64,
    pub(crate) reader: SegmentReader,
    pub(crate) codebook: SharedCodebook,
    /// CRC of the codebook section: segments with equal keys share ADC tables and one
    /// [`SharedCodebook`].
    pub(crate) codebook_key: u32,
    obsolete: AtomicBool,
}

impl SegmentHandle {
    /// Wraps an opened segment.
    pub(crate) fn new(
        storage: Arc<dyn Storage>,
        id: u64,
        reader: SegmentReader,
        codebook: SharedCodebook,
        codebook_key: u32,
    ) -> Self {
        SegmentHandle { storage, id, reader, codebook, codebook_key, obsolete: AtomicBool::new(false) }
    }

    /// The segment left the collection: delete its file once no snapshot holds it.
    pub(crate) fn mark_obsolete(&self) {
        self.obsolete.store(true, Ordering::Release);
    }
}

impl Drop for SegmentHandle {
    fn drop(&mut self) {
        if self.obsolete.load(Ordering::Acquire) {
            // Best effort: a file left behind is an orphan, removed at the next open.
            let _ = self.storage.remove_file(self.reader.path());
        }
    }
}

/// The decoded PQ codebook of the segments whose codebook sections are equal, decoded when first
/// needed (an ADC table, a flush or merge, the drift bookkeeping), not at open: a collection whose
/// segments navigate by centroid interaction never needs it to search, and a decoded 10,240-value
/// codebook is 15.7 MB. A damaged codebook section is therefore reported when it is first used
/// (and by `verify`), never used.
#[derive(Clone, Default)]
pub(crate) struct SharedCodebook {
    cell: Arc<OnceLock<Arc<PqCodebook>>>,
    /// A codebook already in memory that the section probably holds (a writer's catalog copy):
    /// taken instead of a decoded copy if the section's bytes prove equal to it. Weak, so a
    /// segment whose section differs does not keep a retrained-away catalog copy alive.
    candidate: Option<Weak<PqCodebook>>,
}

impl SharedCodebook {
    /// A cell holding `codebook` already (a segment just written with it).
    pub(crate) fn loaded(codebook: Arc<PqCodebook>) -> Self {
        SharedCodebook { cell: Arc::new(OnceLock::from(codebook)), candidate: None }
    }

    /// An empty cell that will take `candidate` instead of decoding a copy if the segment's
    /// codebook section is byte for byte its centroids.
    pub(crate) fn expecting(candidate: Option<&Arc<PqCodebook>>) -> Self {
        SharedCodebook { cell: Arc::default(), candidate: candidate.map(Arc::downgrade) }
    }

    /// The codebook, decoded from `reader`'s section the first time (its CRC checked then), or the
    /// candidate the section equals. Racing first users may each decode it; one copy is kept.
    pub(crate) fn get_or_load(&self, reader: &SegmentReader) -> Result<Arc<PqCodebook>> {
        if let Some(codebook) = self.cell.get() {
            return Ok(codebook.clone());
        }
        let found = match self.candidate.as_ref().and_then(Weak::upgrade) {
            Some(candidate) if reader.pq_codebook_equals(&candidate) => candidate,
            _ => Arc::new(reader.pq_codebook()?),
        };
        Ok(self.cell.get_or_init(|| found).clone())
    }

    /// The codebook if some user has decoded it (what [`crate::CollectionStats::ram_bytes`] counts).
    pub(crate) fn if_loaded(&self) -> Option<&Arc<PqCodebook>> {
        self.cell.get()
    }
}

/// A live segment with its live ordinals, as of one commit.
#[derive(Clone)]
pub(crate) struct LiveSegment {
    pub(crate) handle: Arc<SegmentHandle>,
    pub(crate) live: Arc<LiveBits>,
}

/// The immutable part of the collection's state, replaced at every commit.
#[derive(Clone, Default)]
pub(crate) struct Version {
    /// Live segments, by id ascending.
    pub(crate) segments: Vec<LiveSegment>,
    /// The memtable being flushed, if any (newer than every segment).
    pub(crate) frozen: Option<Arc<MemView>>,
}

/// What a search sees: a version and the active memtable at the same instant.
pub(crate) struct Snapshot {
    pub(crate) version: Arc<Version>,
    pub(crate) active: Arc<MemView>,
    /// The collection's indexed payload fields at this instant (filters are checked against them).
    pub(crate) fields: Arc<Vec<crate::filter::IndexedField>>,
}

/// Where a visible version of an id lives.
pub(crate) enum Found {
    /// In a memtable.
    Memory(Arc<MemDoc>),
    /// In a segment, at an ordinal.
    Segment(Arc<SegmentHandle>, u32),
}

impl Found {
    /// The document's payload bytes alone (no token copy).
    pub(crate) fn payload(&self) -> Vec<u8> {
        self.payload_bytes().to_vec()
    }

    /// The document's payload bytes, borrowed.
    pub(crate) fn payload_bytes(&self) -> &[u8] {
        match self {
            Found::Memory(doc) => &doc.payload,
            Found::Segment(handle, ordinal) => handle.reader.payload(*ordinal as usize),
        }
    }

    /// The document's tokens and payload.
    pub(crate) fn read(&self, id: u64) -> Result<StoredDocument> {
        Ok(match self {
            Found::Memory(doc) => StoredDocument { id, tokens: doc.tokens.to_f32_vec()?, payload: doc.payload.clone() },
            Found::Segment(handle, ordinal) => {
                let r = &handle.reader;
                StoredDocument {
                    id,
                    tokens: r.tokens_f32(*ordinal as usize)?,
                    payload: r.payload(*ordinal as usize).to_vec(),
                }
            }
        })
    }
}

/// What the catalog says of an id, resolved against one version.
pub(crate) enum Located {
    /// The catalog has no entry.
    Absent,
    /// A live ordinal of a segment in the version.
    Found(Arc<SegmentHandle>, u32),
    /// The catalog points somewhere the version does not hold live: the catalog and the version
    /// were read at different commits (the writer installs a version right after its catalog
    /// batch), or they disagree for good (corruption).
    Stale(Location),
}

/// Looks `id` up in `catalog` and resolves the location against `version`.
pub(crate) fn locate(catalog: &Catalog, version: &Version, id: u64) -> Result<Located> {
    let Some(loc) = catalog.location(id)? else { return Ok(Located::Absent) };
    Ok(match version.segments.iter().find(|s| s.handle.id == loc.segment) {
        Some(s) if s.live.is_live(loc.ordinal) => Located::Found(s.handle.clone(), loc.ordinal),
        _ => Located::Stale(loc),
    })
}

/// The error for a location that disagrees with a consistent version.
pub(crate) fn stale_location(catalog: &Catalog, id: u64, loc: Location) -> Error {
    Error::corruption(
        catalog.path(),
        0,
        format!("id {id} points at ordinal {} of segment {}, which does not hold it live", loc.ordinal, loc.segment),
    )
}

/// Copies of `segments` with the `cleared` locations marked dead (copy-on-write per segment).
pub(crate) fn clear_live(segments: &[LiveSegment], cleared: &[Location]) -> Vec<LiveSegment> {
    let mut by_segment: HashMap<u64, Vec<u32>> = HashMap::new();
    for loc in cleared {
        by_segment.entry(loc.segment).or_default().push(loc.ordinal);
    }
    segments
        .iter()
        .map(|s| match by_segment.get(&s.handle.id) {
            None => s.clone(),
            Some(ords) => {
                let mut live = (*s.live).clone();
                for &o in ords {
                    live.clear(o);
                }
                LiveSegment { handle: s.handle.clone(), live: Arc::new(live) }
            }
        })
        .collect()
}
