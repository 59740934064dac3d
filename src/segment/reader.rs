//! Reading a segment: map the file, verify its framing, expose zero-copy typed views.
//!
//! `open` checks, before anything is followed: the header (magic, version, CRC), the tail (magic,
//! recorded length = actual length), the section table (CRC, known kinds, no duplicates, 64-byte
//! alignment, inside the file, no overlaps), that every required section exists with exactly the
//! length the header's counts imply, the FDE parameter record (CRC and fields), and the token and
//! payload offset arrays (CRC, monotone, ending at the section lengths). After `open`, no access
//! can go out of bounds. The large sections (tokens, codes, codebook, payloads) are not read by
//! `open`; [`SegmentReader::verify`] checks every section's CRC on demand.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::encode::codec::TokenCodebook;
use crate::encode::fde::FdeParams;
use crate::encode::maxsim::{DocTokens, ResidualTokens};
use crate::encode::pq::PqCodebook;
use crate::encode::simd::PQ_CENTROIDS;
use crate::encode::storage::TokenStorage;
use crate::error::{Error, Result};
use crate::filter::column::FieldIndex;
use crate::filter::BoundFilter;
use crate::format::fde_params;
use crate::format::graph::{self as graph_format, GraphHeader, GRAPH_HEADER_LEN};
use crate::format::segment::{
    decode_entry, decode_header, decode_tail, Header, SectionEntry, SectionKind, ENTRY_LEN, HEADER_LEN, SECTION_ALIGN,
    TAIL_LEN, TOKEN_SECTION_ALIGN,
};
use crate::graph::GraphView;
use crate::io::mmap::{cast_slice, ReadOnlyMap};
use roaring::RoaringBitmap;

/// Token codebooks already decoded, by their section's CRC and length
/// ([`SegmentReader::open_sharing`]).
pub type TokenBooks = std::collections::HashMap<(u32, u64), Arc<TokenCodebook>>;

/// A section as `quiver inspect` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SectionInfo {
    /// Kind.
    pub kind: SectionKind,
    /// Byte offset.
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
    /// Stored CRC-32.
    pub crc: u32,
}

/// An open, structurally verified segment. Cheap to share (`Arc` inside); `Send + Sync`.
#[derive(Clone, Debug)]
pub struct SegmentReader {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    map: ReadOnlyMap,
    header: Header,
    storage: TokenStorage,
    fde_params: FdeParams,
    fde_fingerprint: u64,
    sections: BTreeMap<SectionKind, SectionEntry>,
    graph: Option<GraphHeader>,
    /// The token codebook (format 3 segments that have one).
    token_codebook: Option<Arc<TokenCodebook>>,
    /// Pages already prefetched (`ReadOnlyMap::will_need_once`).
    prefetched: Vec<std::sync::atomic::AtomicU64>,
    /// The field index, decoded and checked at its first use (a filtered search or `verify`), so
    /// opening stays independent of it; the error message when the section is damaged.
    field_index: std::sync::OnceLock<std::result::Result<Arc<FieldIndex>, String>>,
}

fn corrupt(path: &Path, offset: u64, what: impl Into<String>) -> Error {
    Error::corruption(path, offset, what)
}

impl SegmentReader {
    /// Opens and structurally verifies `path` (see the module docs).
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_sharing(path, &TokenBooks::new())
    }

    /// [`SegmentReader::open`], taking the token codebook from `books` when it holds one under
    /// this segment's key ([`SegmentReader::token_codebook_key`] and section length): segments
    /// written with the collection's codebook store the same section, and decoding it again for
    /// each (a few MB each, with its pages) is most of what opening a large collection costs.
    /// A shared section is not read, so its CRC is checked by [`SegmentReader::verify`] only, as
    /// for the other sections this reader does not decode.
    pub fn open_sharing(path: &Path, books: &TokenBooks) -> Result<Self> {
        let map = ReadOnlyMap::open(path)?;
        // Random access from the start: without it every page fault of the few small reads below
        // reads the device's whole read-ahead window around it (8 MB on the measurement VM: a
        // cold open of a 1M-document collection read 331 MB). Sections read whole are asked for
        // with `will_need` instead.
        map.advise_random();
        let bytes = map.bytes();
        let len = bytes.len() as u64;
        let header = decode_header(bytes).map_err(|e| e.in_file(path, 0))?;
        if len < (HEADER_LEN + TAIL_LEN) as u64 {
            return Err(corrupt(path, len, format!("file of {len} bytes is too short for a segment")));
        }
        let tail_at = len - TAIL_LEN as u64;
        let tail = decode_tail(&bytes[tail_at as usize..]).map_err(|e| e.in_file(path, tail_at))?;
        if tail.file_len != len {
            return Err(corrupt(
                path,
                tail_at,
                format!("segment records {} bytes but the file has {len}", tail.file_len),
            ));
        }
        let table_len = tail.section_count as u64 * ENTRY_LEN as u64;
        if tail.table_offset < HEADER_LEN as u64 || tail.table_offset.checked_add(table_len) != Some(tail_at) {
            return Err(corrupt(
                path,
                tail_at,
                format!("section table at {} (+{table_len}) does not end at the tail", tail.table_offset),
            ));
        }
        let table = &bytes[tail.table_offset as usize..tail_at as usize];
        let table_crc = crc32fast::hash(table);
        if table_crc != tail.table_crc {
            return Err(corrupt(
                path,
                tail.table_offset,
                format!("section table checksum mismatch: stored {:08x}, computed {table_crc:08x}", tail.table_crc),
            ));
        }

        let mut sections = BTreeMap::new();
        for (i, raw) in table.chunks_exact(ENTRY_LEN).enumerate() {
            let at = tail.table_offset + (i * ENTRY_LEN) as u64;
            let entry = decode_entry(raw).map_err(|e| e.in_file(path, at))?;
            let end = entry.offset.checked_add(entry.length);
            if entry.offset < HEADER_LEN as u64 || end.is_none_or(|e| e > tail.table_offset) {
                return Err(corrupt(
                    path,
                    at,
                    format!(
                        "section {} at {}+{} lies outside the data area",
                        entry.kind.name(),
                        entry.offset,
                        entry.length
                    ),
                ));
            }
            let align = if entry.kind == SectionKind::Tokens { TOKEN_SECTION_ALIGN } else { SECTION_ALIGN };
            if entry.offset % align != 0 {
                return Err(corrupt(
                    path,
                    at,
                    format!("section {} at {} is not {align}-byte aligned", entry.kind.name(), entry.offset),
                ));
            }
            if sections.insert(entry.kind, entry).is_some() {
                return Err(corrupt(path, at, format!("section {} appears twice", entry.kind.name())));
            }
        }
        let mut by_offset: Vec<&SectionEntry> = sections.values().collect();
        by_offset.sort_by_key(|e| e.offset);
        for pair in by_offset.windows(2) {
            if pair[0].offset + pair[0].length > pair[1].offset {
                return Err(corrupt(
                    path,
                    pair[1].offset,
                    format!("sections {} and {} overlap", pair[0].kind.name(), pair[1].kind.name()),
                ));
            }
        }
        for kind in SectionKind::REQUIRED {
            if !sections.contains_key(&kind) {
                return Err(corrupt(path, tail.table_offset, format!("required section {} is missing", kind.name())));
            }
        }
        if header.version < 2 && sections.contains_key(&SectionKind::Graph) {
            return Err(corrupt(path, tail.table_offset, "a format-1 segment cannot have a graph section"));
        }
        let has = |k: SectionKind| sections.contains_key(&k);
        let token_sections = [SectionKind::TokenCentroids, SectionKind::TokenCodes, SectionKind::CentroidPostings];
        if header.version < 3 && token_sections.iter().any(|&k| has(k)) {
            return Err(corrupt(
                path,
                tail.table_offset,
                "a segment before format 3 cannot have token codebook sections",
            ));
        }
        if header.version < 4 && has(SectionKind::FieldIndex) {
            return Err(corrupt(path, tail.table_offset, "a segment before format 4 cannot have a field index"));
        }
        if has(SectionKind::TokenCentroids) != has(SectionKind::TokenCodes)
            || (has(SectionKind::CentroidPostings) && !has(SectionKind::TokenCentroids))
        {
            return Err(corrupt(
                path,
                tail.table_offset,
                "token codes, token centroids and centroid postings must come together (postings optional)",
            ));
        }

        let storage = TokenStorage::from_code(header.storage)
            .ok_or_else(|| corrupt(path, 44, format!("unknown token storage code {}", header.storage)))?;
        if storage.residual_bits() > 0 && !has(SectionKind::TokenCentroids) {
            return Err(corrupt(path, 44, format!("{} tokens without a token codebook section", storage.name())));
        }
        let fde_entry = sections[&SectionKind::FdeParams];
        let fde_bytes = &bytes[fde_entry.offset as usize..(fde_entry.offset + fde_entry.length) as usize];
        check_crc(path, &fde_entry, fde_bytes)?;
        let (fde_params, fde_fingerprint) =
            fde_params::decode_record(fde_bytes).map_err(|e| e.in_file(path, fde_entry.offset))?;
        if fde_params.dim != header.dim {
            return Err(corrupt(
                path,
                fde_entry.offset,
                format!("FDE parameters are for dimension {}, the header says {}", fde_params.dim, header.dim),
            ));
        }

        // Every section's length follows from the header's counts; check them all.
        let n = header.doc_count;
        let dim = header.dim as u64;
        let m = header.pq_subspaces as u64;
        let fde_dim = fde_params.fde_dim() as u64;
        if n == 0 || m == 0 || !fde_dim.is_multiple_of(m) {
            return Err(corrupt(
                path,
                0,
                format!("header counts are inconsistent: {n} documents, {m} PQ subspaces for FDE dimension {fde_dim}"),
            ));
        }
        let expect = |kind: SectionKind, want: Option<u64>| -> Result<()> {
            let e = sections[&kind];
            match want {
                Some(w) if w == e.length => Ok(()),
                _ => Err(corrupt(
                    path,
                    e.offset,
                    format!("section {} is {} bytes, the header implies {want:?}", kind.name(), e.length),
                )),
            }
        };
        let mul = |a: u64, b: u64| a.checked_mul(b);
        expect(SectionKind::DocIds, mul(n, 8))?;
        expect(SectionKind::TokenOffsets, mul(n + 1, 8))?;
        expect(SectionKind::PayloadOffsets, mul(n + 1, 8))?;
        if storage.check_dim(dim as usize).is_err() {
            return Err(corrupt(path, 44, format!("{} cannot hold {dim}-dimensional tokens", storage.name())));
        }
        expect(SectionKind::Tokens, mul(header.token_rows, storage.segment_row_bytes(dim as usize) as u64))?;
        let token_codebook = match sections.get(&SectionKind::TokenCentroids) {
            None => None,
            Some(e) => {
                let book = match books.get(&(e.crc, e.length)) {
                    Some(book) if book.dim() == dim as usize => book.clone(),
                    _ => {
                        map.will_need(e.offset as usize, e.length as usize);
                        let b = &bytes[e.offset as usize..(e.offset + e.length) as usize];
                        check_crc(path, e, b)?;
                        Arc::new(
                            TokenCodebook::from_bytes(b, dim as usize)
                                .map_err(|what| corrupt(path, e.offset, format!("section token_centroids: {what}")))?,
                        )
                    }
                };
                if book.bits() != storage.residual_bits() {
                    return Err(corrupt(
                        path,
                        e.offset,
                        format!(
                            "section token_centroids has {}-bit residuals, the header's storage is {}",
                            book.bits(),
                            storage.name()
                        ),
                    ));
                }
                expect(SectionKind::TokenCodes, mul(header.token_rows, 2))?;
                Some(book)
            }
        };
        if let (Some(e), Some(book)) = (sections.get(&SectionKind::CentroidPostings), &token_codebook) {
            let b = &bytes[e.offset as usize..(e.offset + e.length) as usize];
            check_postings_frame(b, book.centroid_count(), n)
                .map_err(|what| corrupt(path, e.offset, format!("section centroid_postings: {what}")))?;
        }
        expect(SectionKind::PqCodebook, mul(fde_dim, PQ_CENTROIDS as u64 * 4))?;
        expect(SectionKind::PqCodes, mul(n, m))?;

        let graph = match sections.get(&SectionKind::Graph) {
            None => None,
            Some(e) => {
                let bytes = &bytes[e.offset as usize..(e.offset + e.length) as usize];
                Some(graph_format::decode_header(bytes, n).map_err(|err| err.in_file(path, e.offset))?)
            }
        };
        let reader = SegmentReader {
            inner: Arc::new(Inner {
                prefetched: map.prefetch_bitset(),
                map,
                header,
                storage,
                fde_params,
                fde_fingerprint,
                sections,
                graph,
                token_codebook,
                field_index: std::sync::OnceLock::new(),
            }),
        };
        reader.check_offsets(SectionKind::TokenOffsets, header.token_rows)?;
        let payload_len = reader.inner.sections[&SectionKind::PayloadBytes].length;
        reader.check_offsets(SectionKind::PayloadOffsets, payload_len)?;
        Ok(reader)
    }

    /// Checks an offsets section: CRC, starts at 0, never decreases, ends at `end`.
    fn check_offsets(&self, kind: SectionKind, end: u64) -> Result<()> {
        let entry = self.inner.sections[&kind];
        self.inner.map.will_need(entry.offset as usize, entry.length as usize);
        check_crc(self.path(), &entry, self.section_bytes(kind))?;
        let offsets = self.u64s(kind);
        if offsets.first() != Some(&0) || offsets.last() != Some(&end) {
            return Err(corrupt(self.path(), entry.offset, format!("{} must run from 0 to {end}", kind.name())));
        }
        if let Some(i) = offsets.windows(2).position(|w| w[1] < w[0]) {
            return Err(corrupt(
                self.path(),
                entry.offset + 8 * (i as u64 + 1),
                format!("{} decrease at entry {}", kind.name(), i + 1),
            ));
        }
        if kind == SectionKind::TokenOffsets {
            if let Some(i) = offsets.windows(2).position(|w| w[1] == w[0]) {
                return Err(corrupt(
                    self.path(),
                    entry.offset + 8 * (i as u64 + 1),
                    format!("document {i} has no tokens"),
                ));
            }
        }
        Ok(())
    }

    fn section_bytes(&self, kind: SectionKind) -> &[u8] {
        let e = &self.inner.sections[&kind];
        &self.inner.map.bytes()[e.offset as usize..(e.offset + e.length) as usize]
    }

    // Sections are 64-byte aligned in a page-aligned map and `open` checked their lengths, so the
    // cast cannot fail for a reader that exists.
    #[allow(clippy::expect_used)]
    fn u64s(&self, kind: SectionKind) -> &[u64] {
        cast_slice(self.section_bytes(kind)).expect("aligned u64 section")
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        self.inner.map.path()
    }

    /// The segment id recorded in the header.
    pub fn segment_id(&self) -> u64 {
        self.inner.header.segment_id
    }

    /// Documents in the segment.
    pub fn doc_count(&self) -> usize {
        self.inner.header.doc_count as usize
    }

    /// Token vectors in the segment.
    pub fn token_rows(&self) -> u64 {
        self.inner.header.token_rows
    }

    /// Token dimension.
    pub fn dim(&self) -> usize {
        self.inner.header.dim as usize
    }

    /// Token storage type.
    pub fn storage(&self) -> TokenStorage {
        self.inner.storage
    }

    /// The FDE parameters the codes were computed with.
    pub fn fde_params(&self) -> &FdeParams {
        &self.inner.fde_params
    }

    /// The stored fingerprint of the FDE matrices (compare with `FdeEncoder::fingerprint`).
    pub fn fde_fingerprint(&self) -> u64 {
        self.inner.fde_fingerprint
    }

    /// Errors unless `encoder` is the encoder this segment was written with (same parameters and
    /// the same random matrices): a segment encoded otherwise must not be searched.
    pub fn check_encoder(&self, encoder: &crate::encode::fde::FdeEncoder) -> Result<()> {
        if encoder.params() != self.fde_params()
            || crate::format::fde_params::fingerprint(encoder) != self.fde_fingerprint()
        {
            return Err(Error::InvalidInput(format!(
                "{}: segment was encoded with FDE parameters {:?} (fingerprint {:016x}), not {:?} ({:016x})",
                self.path().display(),
                self.fde_params(),
                self.fde_fingerprint(),
                encoder.params(),
                crate::format::fde_params::fingerprint(encoder)
            )));
        }
        Ok(())
    }

    /// External ids in ordinal order.
    pub fn doc_ids(&self) -> &[u64] {
        self.u64s(SectionKind::DocIds)
    }

    /// Token row range of document `ordinal`.
    pub fn token_range(&self, ordinal: usize) -> std::ops::Range<u64> {
        let o = self.u64s(SectionKind::TokenOffsets);
        o[ordinal]..o[ordinal + 1]
    }

    /// Tokens of document `ordinal`, zero-copy from the map. Panics if `ordinal >= doc_count()`.
    // The token section starts page-aligned and every row is a whole number of values (checked by
    // `open`), so the casts cannot fail.
    #[allow(clippy::expect_used)]
    pub fn tokens(&self, ordinal: usize) -> DocTokens<'_> {
        let rows = self.token_range(ordinal);
        let width = self.storage().segment_row_bytes(self.dim()) as u64;
        let all = self.section_bytes(SectionKind::Tokens);
        let bytes = &all[(rows.start * width) as usize..(rows.end * width) as usize];
        match self.storage() {
            TokenStorage::F32 => DocTokens::F32(cast_slice(bytes).expect("page-aligned token section")),
            TokenStorage::F16 => DocTokens::F16(cast_slice(bytes).expect("page-aligned token section")),
            TokenStorage::Bf16 => DocTokens::Bf16(cast_slice(bytes).expect("page-aligned token section")),
            TokenStorage::Residual1 | TokenStorage::Residual2 | TokenStorage::Residual4 => {
                DocTokens::Residual(ResidualTokens {
                    ids: self.token_centroid_ids(ordinal).expect("open checked residual segments have codes"),
                    codes: bytes,
                    codebook: self.inner.token_codebook.as_deref().expect("open checked the codebook"),
                })
            }
        }
    }

    /// The tokens of document `ordinal` as `f32` (decoded for residual storage); damaged
    /// residual codes are a [`Error::Corruption`] naming the file and section.
    pub fn tokens_f32(&self, ordinal: usize) -> Result<Vec<f32>> {
        self.tokens(ordinal).to_f32_vec().map_err(|e| self.damaged(e))
    }

    /// Turns an error met while decoding or scoring this segment's tokens (a centroid id beyond
    /// the codebook) into the corruption it is, naming the file and the token-codes section.
    pub fn damaged(&self, e: Error) -> Error {
        match e {
            Error::InvalidInput(what) => {
                let at = self.inner.sections.get(&SectionKind::TokenCodes).map_or(0, |s| s.offset);
                corrupt(self.path(), at, format!("section token_codes: {what}"))
            }
            other => other,
        }
    }

    /// Bytes of every section that exists for the tokens: the token section and offsets, centroid
    /// ids, the token codebook and the inverted lists.
    pub fn token_bytes(&self) -> u64 {
        [
            SectionKind::Tokens,
            SectionKind::TokenOffsets,
            SectionKind::TokenCodes,
            SectionKind::TokenCentroids,
            SectionKind::CentroidPostings,
        ]
        .iter()
        .filter_map(|k| self.inner.sections.get(k))
        .map(|e| e.length)
        .sum()
    }

    /// The token codebook, if the segment has one (format 3).
    pub fn token_codebook(&self) -> Option<&Arc<TokenCodebook>> {
        self.inner.token_codebook.as_ref()
    }

    /// The key under which segments share a token codebook (its section's CRC), if any.
    pub fn token_codebook_key(&self) -> Option<u32> {
        self.inner.sections.get(&SectionKind::TokenCentroids).map(|e| e.crc)
    }

    /// `books` holding `book` under the key of the section a writer stores for it (the CRC and
    /// length of [`TokenCodebook::to_bytes`]), so a segment just written with it opens without
    /// decoding it again.
    pub fn token_books_of(book: &Arc<TokenCodebook>) -> TokenBooks {
        let bytes = book.to_bytes();
        TokenBooks::from([((crc32fast::hash(&bytes), bytes.len() as u64), book.clone())])
    }

    /// Adds this segment's token codebook to `books`, for [`SegmentReader::open_sharing`].
    pub fn share_token_codebook(&self, books: &mut TokenBooks) {
        if let (Some(e), Some(book)) = (self.inner.sections.get(&SectionKind::TokenCentroids), self.token_codebook()) {
            books.entry((e.crc, e.length)).or_insert_with(|| book.clone());
        }
    }

    /// The centroid id of every token of document `ordinal`, if the segment stores them.
    // The section is 64-byte aligned and `open` checked it holds `token_rows` u16s.
    #[allow(clippy::expect_used)]
    pub fn token_centroid_ids(&self, ordinal: usize) -> Option<&[u16]> {
        self.inner.sections.get(&SectionKind::TokenCodes)?;
        let all: &[u16] = cast_slice(self.section_bytes(SectionKind::TokenCodes)).expect("aligned u16 section");
        let rows = self.token_range(ordinal);
        Some(&all[rows.start as usize..rows.end as usize])
    }

    /// True when the segment stores a centroid id per token ([`SegmentReader::token_centroid_ids`]).
    pub fn has_token_centroid_ids(&self) -> bool {
        self.inner.sections.contains_key(&SectionKind::TokenCodes)
    }

    /// True when the segment has inverted lists from centroid to documents.
    pub fn has_postings(&self) -> bool {
        self.inner.sections.contains_key(&SectionKind::CentroidPostings)
    }

    /// The documents (ascending ordinals) holding a token assigned to `centroid`; empty without
    /// postings or for an id beyond the codebook. Ordinals are checked against the document count
    /// by the caller (`verify` checks them all).
    // `open` checked the frame: header, `k + 1` monotone offsets ending at the ordinal count.
    #[allow(clippy::expect_used)]
    pub fn postings(&self, centroid: u16) -> &[u32] {
        if !self.has_postings() {
            return &[];
        }
        let words: &[u32] = cast_slice(self.section_bytes(SectionKind::CentroidPostings)).expect("aligned postings");
        let k = words[0] as usize;
        let c = centroid as usize;
        if c >= k {
            return &[];
        }
        let (offsets, ordinals) = words[2..].split_at(k + 1);
        &ordinals[offsets[c] as usize..offsets[c + 1] as usize]
    }

    /// Payload of document `ordinal` (empty when it was stored without one).
    pub fn payload(&self, ordinal: usize) -> &[u8] {
        let o = self.u64s(SectionKind::PayloadOffsets);
        &self.section_bytes(SectionKind::PayloadBytes)[o[ordinal] as usize..o[ordinal + 1] as usize]
    }

    /// PQ code length in bytes.
    pub fn pq_subspaces(&self) -> usize {
        self.inner.header.pq_subspaces as usize
    }

    /// All PQ codes, `doc_count × pq_subspaces` bytes.
    pub fn pq_codes(&self) -> &[u8] {
        self.section_bytes(SectionKind::PqCodes)
    }

    /// Starts reading the PQ codes of `ordinals` from storage ([`ReadOnlyMap::will_need`]): a cold
    /// beam fetches the codes of a node's neighbours together instead of one fault at a time.
    pub fn prefetch_codes(&self, ordinals: &[u32]) {
        let e = &self.inner.sections[&SectionKind::PqCodes];
        let m = self.pq_subspaces();
        for &o in ordinals {
            self.inner.map.will_need_once(&self.inner.prefetched, e.offset as usize + o as usize * m, m);
        }
    }

    /// Starts reading the stored tokens of `ordinals` (before an exact rerank over them).
    pub fn prefetch_tokens(&self, ordinals: impl IntoIterator<Item = u32>) {
        let e = &self.inner.sections[&SectionKind::Tokens];
        let width = self.storage().segment_row_bytes(self.dim()) as u64;
        let n = self.doc_count();
        for o in ordinals {
            if (o as usize) < n {
                let rows = self.token_range(o as usize);
                self.inner.map.will_need_once(
                    &self.inner.prefetched,
                    (e.offset + rows.start * width) as usize,
                    ((rows.end - rows.start) * width) as usize,
                );
            }
        }
    }

    /// Starts reading the centroid ids of `ordinals`' tokens (before the cheap stage scores them).
    pub fn prefetch_token_codes(&self, ordinals: &[u32]) {
        let Some(e) = self.inner.sections.get(&SectionKind::TokenCodes) else { return };
        let n = self.doc_count();
        for &o in ordinals {
            if (o as usize) < n {
                let rows = self.token_range(o as usize);
                self.inner.map.will_need_once(
                    &self.inner.prefetched,
                    (e.offset + rows.start * 2) as usize,
                    ((rows.end - rows.start) * 2) as usize,
                );
            }
        }
    }

    /// The PQ code of document `ordinal`.
    pub fn pq_code(&self, ordinal: usize) -> &[u8] {
        let m = self.pq_subspaces();
        &self.pq_codes()[ordinal * m..(ordinal + 1) * m]
    }

    /// The stored codebook (copied out and prepared for encoding and ADC; its CRC is checked).
    pub fn pq_codebook(&self) -> Result<PqCodebook> {
        let entry = self.inner.sections[&SectionKind::PqCodebook];
        self.inner.map.will_need(entry.offset as usize, entry.length as usize);
        let bytes = self.section_bytes(SectionKind::PqCodebook);
        check_crc(self.path(), &entry, bytes)?;
        let centroids: Vec<f32> = cast_slice::<f32>(bytes)
            .ok_or_else(|| corrupt(self.path(), entry.offset, "codebook section is not a whole number of f32s"))?
            .to_vec();
        PqCodebook::from_centroids(self.fde_params().fde_dim(), self.pq_subspaces(), centroids)
            .map_err(|e| corrupt(self.path(), entry.offset, e.to_string()))
    }

    /// True when this segment's PQ codebook section holds exactly `codebook`'s centroids, bit for
    /// bit, for the same FDE dimension and subspaces: the segment can use that copy instead of
    /// decoding its own. Bytes equal to a valid codebook are that codebook whatever a damaged
    /// checksum entry says (`verify` reports that); unequal ones are decoded, and checked, by
    /// [`SegmentReader::pq_codebook`].
    pub fn pq_codebook_equals(&self, codebook: &PqCodebook) -> bool {
        let bytes = self.section_bytes(SectionKind::PqCodebook);
        codebook.dim() == self.fde_params().fde_dim()
            && codebook.subspaces() == self.pq_subspaces()
            && bytes.len() == codebook.centroids().len() * 4
            && bytes.chunks_exact(4).zip(codebook.centroids()).all(|(b, c)| b == c.to_le_bytes())
    }

    /// The graph, if this segment has one (its records are checked as they are read).
    // `open` validated the graph header and the section's alignment and length, so neither the
    // cast nor the view's construction can fail for a reader that exists.
    #[allow(clippy::expect_used)]
    pub fn graph(&self) -> Option<GraphView<'_>> {
        let header = self.inner.graph?;
        let entry = self.inner.sections[&SectionKind::Graph];
        let bytes = &self.section_bytes(SectionKind::Graph)[GRAPH_HEADER_LEN..];
        let slots: &[u32] = cast_slice(bytes).expect("graph slots are 4-byte aligned");
        let base = entry.offset + GRAPH_HEADER_LEN as u64;
        Some(
            GraphView::new(self.path(), base, header.max_degree, header.entry_point, slots).expect("validated at open"),
        )
    }

    /// The graph section header, if any (for inspection).
    pub fn graph_header(&self) -> Option<GraphHeader> {
        self.inner.graph
    }

    /// Format version of the file.
    pub fn format_version(&self) -> u32 {
        self.inner.header.version
    }

    /// Every section, in file order.
    pub fn sections(&self) -> Vec<SectionInfo> {
        let mut out: Vec<SectionInfo> = self
            .inner
            .sections
            .values()
            .map(|e| SectionInfo { kind: e.kind, offset: e.offset, length: e.length, crc: e.crc })
            .collect();
        out.sort_by_key(|s| s.offset);
        out
    }

    /// File length in bytes.
    pub fn file_len(&self) -> u64 {
        self.inner.map.bytes().len() as u64
    }

    /// The field index (format 4 segments of collections with indexed fields), decoded and
    /// checked on first use. A damaged section is [`Error::Corruption`] naming the file and
    /// section, at every call.
    pub fn field_index(&self) -> Result<Option<Arc<FieldIndex>>> {
        let Some(entry) = self.inner.sections.get(&SectionKind::FieldIndex).copied() else { return Ok(None) };
        let decoded = self.inner.field_index.get_or_init(|| {
            let bytes = self.section_bytes(SectionKind::FieldIndex);
            if crc32fast::hash(bytes) != entry.crc {
                return Err("checksum mismatch".to_string());
            }
            FieldIndex::decode(bytes, self.doc_count() as u32).map(Arc::new)
        });
        match decoded {
            Ok(index) => Ok(Some(index.clone())),
            Err(what) => Err(corrupt(self.path(), entry.offset, format!("section field_index: {what}"))),
        }
    }

    /// The ordinals whose documents pass `filter` (live or not: the caller checks liveness), by
    /// the field index where it covers the filter's fields, else by reading every payload (a
    /// segment written before a field was indexed), with the same result.
    pub fn filter(&self, filter: &BoundFilter) -> Result<RoaringBitmap> {
        if let Some(index) = self.field_index()? {
            if let Some(passing) = index.evaluate(filter, self.doc_ids()) {
                return Ok(passing);
            }
        }
        let ids = self.doc_ids();
        Ok((0..self.doc_count())
            .filter(|&o| filter.matches_payload(ids[o], self.payload(o)))
            .map(|o| o as u32)
            .collect())
    }

    /// Verifies every byte of the file: each section against its CRC, the alignment padding
    /// between sections as zeros (the header, table and tail were verified by `open`), every
    /// graph record (ids in range, no self loops, padding only at the end) and the field index.
    pub fn verify(&self) -> Result<()> {
        for entry in self.inner.sections.values() {
            check_crc(self.path(), entry, self.section_bytes(entry.kind))?;
        }
        self.field_index()?;
        if let Some(graph) = self.graph() {
            graph.validate_all()?;
        }
        if let (Some(e), Some(book)) = (self.inner.sections.get(&SectionKind::TokenCodes), self.token_codebook()) {
            let k = book.centroid_count();
            let ids: &[u16] = cast_slice(self.section_bytes(SectionKind::TokenCodes))
                .ok_or_else(|| corrupt(self.path(), e.offset, "token codes are not aligned u16s"))?;
            if let Some(i) = ids.iter().position(|&c| c as usize >= k) {
                return Err(corrupt(
                    self.path(),
                    e.offset + 2 * i as u64,
                    format!("section token_codes: centroid id {} of token {i} is beyond {k} centroids", ids[i]),
                ));
            }
        }
        if let Some(e) = self.inner.sections.get(&SectionKind::CentroidPostings) {
            let n = self.doc_count() as u32;
            let k = self.token_codebook().map_or(0, |b| b.centroid_count());
            for c in 0..k {
                let list = self.postings(c as u16);
                if list.iter().any(|&o| o >= n) || list.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(corrupt(
                        self.path(),
                        e.offset,
                        format!("section centroid_postings: list {c} is not ascending ordinals below {n}"),
                    ));
                }
            }
        }
        let bytes = self.inner.map.bytes();
        let table_offset = (bytes.len() - TAIL_LEN) as u64 - self.inner.sections.len() as u64 * ENTRY_LEN as u64;
        let mut gap_start = HEADER_LEN as u64;
        for s in self.sections().iter().map(|s| (s.offset, s.offset + s.length)).chain([(table_offset, table_offset)]) {
            if let Some(pos) = bytes[gap_start as usize..s.0 as usize].iter().position(|&b| b != 0) {
                return Err(corrupt(
                    self.path(),
                    gap_start + pos as u64,
                    "non-zero byte in the padding between sections",
                ));
            }
            gap_start = s.1;
        }
        Ok(())
    }
}

/// Checks the postings section's frame (the lists' ordinals are checked by `verify`).
///
/// Only the header and the offsets are read (not the lists: open must not read, or copy, a section
/// that grows with the documents; at 1M documents decoding it whole was most of `open`'s memory).
fn check_postings_frame(bytes: &[u8], k: usize, doc_count: u64) -> std::result::Result<(), String> {
    let word = |i: usize| bytes.get(i * 4..i * 4 + 4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
    let total_words = bytes.len() / 4;
    if !bytes.len().is_multiple_of(4) || total_words < 2 {
        return Err(format!("{} bytes is not a postings header and whole u32s", bytes.len()));
    }
    let (w0, w1) = (word(0).unwrap_or_default(), word(1).unwrap_or_default());
    if w0 as usize != k || w1 != 0 {
        return Err(format!("header ({w0}, {w1}) does not match {k} centroids"));
    }
    if total_words < k + 3 {
        return Err(format!("{} bytes cannot hold {} offsets", bytes.len(), k + 1));
    }
    let offsets: Vec<u32> = (2..k + 3).filter_map(word).collect();
    let count = (total_words - k - 3) as u64;
    if offsets[0] != 0 || offsets[k] as u64 != count || offsets.windows(2).any(|w| w[1] < w[0]) {
        return Err(format!("offsets do not run monotonically from 0 to the {count} ordinals"));
    }
    if count > doc_count.saturating_mul(k as u64) {
        return Err(format!("{count} ordinals for {doc_count} documents"));
    }
    Ok(())
}

fn check_crc(path: &Path, entry: &SectionEntry, bytes: &[u8]) -> Result<()> {
    let crc = crc32fast::hash(bytes);
    if crc != entry.crc {
        return Err(corrupt(
            path,
            entry.offset,
            format!("section {} checksum mismatch: stored {:08x}, computed {crc:08x}", entry.kind.name(), entry.crc),
        ));
    }
    Ok(())
}
