//! Segment file framing (storage-format.md, "Segment file"): the 64-byte header, the section
//! table entries and the 32-byte tail. Pure encode/decode of fixed-width little-endian records;
//! the cross-checks between them (bounds, overlaps, sizes) live in the segment reader.

use super::{read_u32, read_u64, DecodeError};

/// First 8 bytes of every segment file.
pub const HEADER_MAGIC: [u8; 8] = *b"QVDBSEG\0";
/// Last 8 bytes of every segment file.
pub const TAIL_MAGIC: [u8; 8] = *b"QVDBEND\0";
/// The segment format version this build writes.
pub const FORMAT_VERSION: u32 = 4;
/// The versions this build reads: 1 (no graph section), 2 (optional graph section), 3
/// (optional token codebook, token codes and centroid postings; residual token storage) and 4
/// (optional field index).
pub const READABLE_VERSIONS: [u32; 4] = [1, 2, 3, 4];
/// Header length.
pub const HEADER_LEN: usize = 64;
/// One section table entry.
pub const ENTRY_LEN: usize = 32;
/// Tail length.
pub const TAIL_LEN: usize = 32;
/// Every section starts at a multiple of this (cache line; SIMD-friendly for every element type).
pub const SECTION_ALIGN: u64 = 64;
/// The token section starts at a multiple of this (a page), so per-document reads touch whole pages.
pub const TOKEN_SECTION_ALIGN: u64 = 4096;

// Header field offsets.
const H_MAGIC: usize = 0;
const H_VERSION: usize = 8;
const H_HEADER_LEN: usize = 12;
const H_SEGMENT_ID: usize = 16;
const H_DOC_COUNT: usize = 24;
const H_TOKEN_ROWS: usize = 32;
const H_DIM: usize = 40;
const H_STORAGE: usize = 44;
const H_RESERVED_A: usize = 45;
const H_PQ_SUBSPACES: usize = 48;
const H_RESERVED_B: usize = 52;
const H_CRC: usize = 60;
const _: () = assert!(H_CRC + 4 == HEADER_LEN && H_RESERVED_B + 8 == H_CRC && H_RESERVED_A + 3 == H_PQ_SUBSPACES);

// Entry field offsets.
const E_KIND: usize = 0;
const E_RESERVED_A: usize = 4;
const E_OFFSET: usize = 8;
const E_LENGTH: usize = 16;
const E_CRC: usize = 24;
const E_RESERVED_B: usize = 28;
const _: () = assert!(E_RESERVED_B + 4 == ENTRY_LEN);

// Tail field offsets.
const T_TABLE_OFFSET: usize = 0;
const T_SECTION_COUNT: usize = 8;
const T_TABLE_CRC: usize = 12;
const T_FILE_LEN: usize = 16;
const T_MAGIC: usize = 24;
const _: () = assert!(T_MAGIC + 8 == TAIL_LEN);

/// The kinds of section a segment holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SectionKind {
    /// The FDE parameter record (40 bytes) the PQ codes were computed with.
    FdeParams = 1,
    /// External document ids, `doc_count × u64`, in ordinal order.
    DocIds = 2,
    /// Token row offsets, `(doc_count + 1) × u64`: document `i` owns rows `[o[i], o[i+1])`.
    TokenOffsets = 3,
    /// Token vectors, `token_rows × dim` values of the header's storage type, row-major.
    Tokens = 4,
    /// Payload byte offsets, `(doc_count + 1) × u64` into the payload bytes.
    PayloadOffsets = 5,
    /// Payload bytes, concatenated (a document without payload has an empty range).
    PayloadBytes = 6,
    /// PQ centroids, `pq_subspaces × 256 × sub_dim` f32, subspace-major.
    PqCodebook = 7,
    /// PQ codes of the document FDEs, `doc_count × pq_subspaces` bytes.
    PqCodes = 8,
    /// The Vamana graph (version 2, optional): a 32-byte header and `doc_count × R` u32 slots.
    Graph = 9,
    /// The token codebook (version 3, optional; required by residual storage): a 16-byte header,
    /// the centroids and the residual buckets ([`crate::encode::codec::TokenCodebook::to_bytes`]).
    TokenCentroids = 10,
    /// Centroid id of every stored token, `token_rows × u16` (version 3, with `TokenCentroids`).
    TokenCodes = 11,
    /// Inverted lists from centroid to documents (version 3, optional, with `TokenCentroids`):
    /// `u32 k`, `u32 0`, `(k + 1) × u32` offsets, then ascending `u32` ordinals per centroid.
    CentroidPostings = 12,
    /// The indexed payload fields' columns (version 4, optional): see [`crate::filter::column`].
    FieldIndex = 13,
}

impl SectionKind {
    /// Kinds every segment has exactly once.
    pub const REQUIRED: [SectionKind; 8] = [
        SectionKind::FdeParams,
        SectionKind::Tokens,
        SectionKind::DocIds,
        SectionKind::TokenOffsets,
        SectionKind::PayloadOffsets,
        SectionKind::PayloadBytes,
        SectionKind::PqCodebook,
        SectionKind::PqCodes,
    ];

    /// Kinds a segment may have at most once (format version 2 on).
    pub const OPTIONAL: [SectionKind; 5] = [
        SectionKind::Graph,
        SectionKind::TokenCentroids,
        SectionKind::TokenCodes,
        SectionKind::CentroidPostings,
        SectionKind::FieldIndex,
    ];

    /// The kind with on-disk code `code`.
    pub fn from_code(code: u32) -> Option<Self> {
        Self::REQUIRED.iter().chain(&Self::OPTIONAL).copied().find(|k| *k as u32 == code)
    }

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            SectionKind::FdeParams => "fde_params",
            SectionKind::DocIds => "doc_ids",
            SectionKind::TokenOffsets => "token_offsets",
            SectionKind::Tokens => "tokens",
            SectionKind::PayloadOffsets => "payload_offsets",
            SectionKind::PayloadBytes => "payload_bytes",
            SectionKind::PqCodebook => "pq_codebook",
            SectionKind::PqCodes => "pq_codes",
            SectionKind::Graph => "graph",
            SectionKind::TokenCentroids => "token_centroids",
            SectionKind::TokenCodes => "token_codes",
            SectionKind::CentroidPostings => "centroid_postings",
            SectionKind::FieldIndex => "field_index",
        }
    }
}

/// The decoded header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Format version (one of [`READABLE_VERSIONS`]; [`FORMAT_VERSION`] when written).
    pub version: u32,
    /// The segment's id within its collection.
    pub segment_id: u64,
    /// Documents in the segment.
    pub doc_count: u64,
    /// Token vectors in the segment.
    pub token_rows: u64,
    /// Token dimension.
    pub dim: u32,
    /// Token storage type code (see `TokenStorage::code`).
    pub storage: u8,
    /// PQ code length in bytes.
    pub pq_subspaces: u32,
}

/// Encodes the header with its CRC.
pub fn encode_header(h: &Header) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    out[H_MAGIC..H_MAGIC + 8].copy_from_slice(&HEADER_MAGIC);
    out[H_VERSION..H_VERSION + 4].copy_from_slice(&h.version.to_le_bytes());
    out[H_HEADER_LEN..H_HEADER_LEN + 4].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
    out[H_SEGMENT_ID..H_SEGMENT_ID + 8].copy_from_slice(&h.segment_id.to_le_bytes());
    out[H_DOC_COUNT..H_DOC_COUNT + 8].copy_from_slice(&h.doc_count.to_le_bytes());
    out[H_TOKEN_ROWS..H_TOKEN_ROWS + 8].copy_from_slice(&h.token_rows.to_le_bytes());
    out[H_DIM..H_DIM + 4].copy_from_slice(&h.dim.to_le_bytes());
    out[H_STORAGE] = h.storage;
    out[H_PQ_SUBSPACES..H_PQ_SUBSPACES + 4].copy_from_slice(&h.pq_subspaces.to_le_bytes());
    let crc = crc32fast::hash(&out[..H_CRC]);
    out[H_CRC..].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes and checks the header (magic, version, length, CRC, reserved bytes).
pub fn decode_header(bytes: &[u8]) -> Result<Header, DecodeError> {
    if bytes.len() < HEADER_LEN {
        return Err(DecodeError::new(0, format!("file of {} bytes is shorter than a segment header", bytes.len())));
    }
    if bytes[H_MAGIC..H_MAGIC + 8] != HEADER_MAGIC {
        return Err(DecodeError::new(H_MAGIC, "not a quiverdb segment (bad header magic)"));
    }
    let version = read_u32(bytes, H_VERSION)?;
    if !READABLE_VERSIONS.contains(&version) {
        return Err(DecodeError::new(
            H_VERSION,
            format!("segment format version {version}; this build reads versions {READABLE_VERSIONS:?}"),
        ));
    }
    let stored_crc = read_u32(bytes, H_CRC)?;
    let crc = crc32fast::hash(&bytes[..H_CRC]);
    if stored_crc != crc {
        return Err(DecodeError::new(
            H_CRC,
            format!("header checksum mismatch: stored {stored_crc:08x}, computed {crc:08x}"),
        ));
    }
    let header_len = read_u32(bytes, H_HEADER_LEN)?;
    if header_len as usize != HEADER_LEN {
        return Err(DecodeError::new(H_HEADER_LEN, format!("header length {header_len}, expected {HEADER_LEN}")));
    }
    if bytes[H_RESERVED_A..H_RESERVED_A + 3].iter().chain(&bytes[H_RESERVED_B..H_CRC]).any(|&b| b != 0) {
        return Err(DecodeError::new(H_RESERVED_A, "reserved header bytes are not zero"));
    }
    Ok(Header {
        version,
        segment_id: read_u64(bytes, H_SEGMENT_ID)?,
        doc_count: read_u64(bytes, H_DOC_COUNT)?,
        token_rows: read_u64(bytes, H_TOKEN_ROWS)?,
        dim: read_u32(bytes, H_DIM)?,
        storage: bytes[H_STORAGE],
        pq_subspaces: read_u32(bytes, H_PQ_SUBSPACES)?,
    })
}

/// One section table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SectionEntry {
    /// What the section holds.
    pub kind: SectionKind,
    /// Byte offset in the file.
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
    /// CRC-32 of the section's bytes.
    pub crc: u32,
}

/// Encodes one entry.
pub fn encode_entry(e: &SectionEntry) -> [u8; ENTRY_LEN] {
    let mut out = [0u8; ENTRY_LEN];
    out[E_KIND..E_KIND + 4].copy_from_slice(&(e.kind as u32).to_le_bytes());
    out[E_OFFSET..E_OFFSET + 8].copy_from_slice(&e.offset.to_le_bytes());
    out[E_LENGTH..E_LENGTH + 8].copy_from_slice(&e.length.to_le_bytes());
    out[E_CRC..E_CRC + 4].copy_from_slice(&e.crc.to_le_bytes());
    out
}

/// Decodes one entry (`bytes` is exactly [`ENTRY_LEN`] long).
pub fn decode_entry(bytes: &[u8]) -> Result<SectionEntry, DecodeError> {
    let code = read_u32(bytes, E_KIND)?;
    let kind =
        SectionKind::from_code(code).ok_or_else(|| DecodeError::new(E_KIND, format!("unknown section kind {code}")))?;
    if read_u32(bytes, E_RESERVED_A)? != 0 || read_u32(bytes, E_RESERVED_B)? != 0 {
        return Err(DecodeError::new(E_RESERVED_A, "reserved section entry bytes are not zero"));
    }
    Ok(SectionEntry {
        kind,
        offset: read_u64(bytes, E_OFFSET)?,
        length: read_u64(bytes, E_LENGTH)?,
        crc: read_u32(bytes, E_CRC)?,
    })
}

/// The decoded tail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tail {
    /// Offset of the section table.
    pub table_offset: u64,
    /// Entries in the table.
    pub section_count: u32,
    /// CRC-32 of the table's bytes.
    pub table_crc: u32,
    /// The file's total length when written.
    pub file_len: u64,
}

/// Encodes the tail.
pub fn encode_tail(t: &Tail) -> [u8; TAIL_LEN] {
    let mut out = [0u8; TAIL_LEN];
    out[T_TABLE_OFFSET..T_TABLE_OFFSET + 8].copy_from_slice(&t.table_offset.to_le_bytes());
    out[T_SECTION_COUNT..T_SECTION_COUNT + 4].copy_from_slice(&t.section_count.to_le_bytes());
    out[T_TABLE_CRC..T_TABLE_CRC + 4].copy_from_slice(&t.table_crc.to_le_bytes());
    out[T_FILE_LEN..T_FILE_LEN + 8].copy_from_slice(&t.file_len.to_le_bytes());
    out[T_MAGIC..T_MAGIC + 8].copy_from_slice(&TAIL_MAGIC);
    out
}

/// Decodes the tail (`bytes` is exactly [`TAIL_LEN`] long) and checks its magic.
pub fn decode_tail(bytes: &[u8]) -> Result<Tail, DecodeError> {
    if bytes.len() != TAIL_LEN || bytes[T_MAGIC..T_MAGIC + 8] != TAIL_MAGIC {
        return Err(DecodeError::new(T_MAGIC, "bad tail magic: the file is truncated or not a finished segment"));
    }
    Ok(Tail {
        table_offset: read_u64(bytes, T_TABLE_OFFSET)?,
        section_count: read_u32(bytes, T_SECTION_COUNT)?,
        table_crc: read_u32(bytes, T_TABLE_CRC)?,
        file_len: read_u64(bytes, T_FILE_LEN)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_refuse_damage() {
        let h = Header {
            version: FORMAT_VERSION,
            segment_id: 7,
            doc_count: 3,
            token_rows: 30,
            dim: 128,
            storage: 1,
            pq_subspaces: 16,
        };
        let bytes = encode_header(&h);
        assert_eq!(decode_header(&bytes).unwrap(), h);
        for i in 0..HEADER_LEN {
            let mut bad = bytes;
            bad[i] ^= 0x40;
            assert!(decode_header(&bad).is_err(), "flip at {i} accepted");
        }
        let e = SectionEntry { kind: SectionKind::Tokens, offset: 4096, length: 100, crc: 5 };
        assert_eq!(decode_entry(&encode_entry(&e)).unwrap(), e);
        let mut bad = encode_entry(&e);
        bad[0] = 99;
        assert!(decode_entry(&bad).is_err());
        let mut old = h;
        old.version = 1;
        assert_eq!(decode_header(&encode_header(&old)).unwrap().version, 1);
        old.version = 5;
        assert!(decode_header(&encode_header(&old)).is_err());
        let t = Tail { table_offset: 9000, section_count: 8, table_crc: 1, file_len: 9288 };
        assert_eq!(decode_tail(&encode_tail(&t)).unwrap(), t);
        assert!(decode_tail(&[0u8; TAIL_LEN]).is_err());
    }
}
