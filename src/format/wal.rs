//! Byte layout of write-ahead-log files (storage-format.md, "WAL files"). Pure encoding and
//! decoding; appending, syncing and replay policy live in [`crate::wal`].
//!
//! A WAL file is a 32-byte header followed by records. Each record is a 20-byte frame header and a
//! payload; the CRC covers everything after the CRC field (sequence number, kind, reserved bytes,
//! payload), so a record is accepted only whole.

use crate::encode::storage::TokenStorage;
use crate::format::DecodeError;
use crate::limits::{MAX_DIM, MAX_DOC_VALUES, MAX_PAYLOAD_BYTES, MAX_TOKENS_PER_DOC, MAX_WAL_RECORD_BYTES};

/// First bytes of every WAL file.
pub const WAL_MAGIC: [u8; 8] = *b"QVRWAL\0\x01";
/// Current WAL format version: 2 added the batch flag (frame byte 17). Version 1 files (no record
/// has the flag) are still read.
pub const WAL_VERSION: u32 = 2;
/// Oldest WAL format version this build reads.
pub const WAL_MIN_VERSION: u32 = 1;
/// Frame flag (byte 17): more records of the same atomic batch follow this one. A batch is applied
/// at replay only once its last record (flag clear) is read, so a torn tail never applies part of
/// an `insert_batch`.
pub const FLAG_BATCH_CONTINUES: u8 = 1;
/// Length of the file header.
pub const WAL_HEADER_LEN: usize = 32;
/// Length of a record's frame header.
pub const FRAME_LEN: usize = 20;
/// Fixed part of a `Put` payload (before the token bytes).
pub const PUT_FIXED_LEN: usize = 24;

/// File header: which sequence number the file starts at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalHeader {
    /// Sequence number of the first record this file may hold.
    pub first_seq: u64,
}

/// Encodes a file header.
pub fn encode_header(header: &WalHeader) -> [u8; WAL_HEADER_LEN] {
    let mut out = [0u8; WAL_HEADER_LEN];
    out[0..8].copy_from_slice(&WAL_MAGIC);
    out[8..12].copy_from_slice(&WAL_VERSION.to_le_bytes());
    // 12..16 reserved (zero)
    out[16..24].copy_from_slice(&header.first_seq.to_le_bytes());
    let crc = crc32fast::hash(&out[0..24]);
    out[24..28].copy_from_slice(&crc.to_le_bytes());
    // 28..32 reserved (zero)
    out
}

/// Decodes and checks a file header.
pub fn decode_header(bytes: &[u8]) -> Result<WalHeader, DecodeError> {
    if bytes.len() < WAL_HEADER_LEN {
        return Err(DecodeError::new(0, format!("WAL header needs {WAL_HEADER_LEN} bytes, file has {}", bytes.len())));
    }
    if bytes[0..8] != WAL_MAGIC {
        return Err(DecodeError::new(0, "not a quiverdb WAL file (bad magic)"));
    }
    let stored = u32::from_le_bytes(bytes[24..28].try_into().unwrap_or_default());
    if crc32fast::hash(&bytes[0..24]) != stored {
        return Err(DecodeError::new(24, "WAL header checksum mismatch"));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap_or_default());
    if !(WAL_MIN_VERSION..=WAL_VERSION).contains(&version) {
        return Err(DecodeError::new(
            8,
            format!("unsupported WAL version {version} (this build reads {WAL_MIN_VERSION} to {WAL_VERSION})"),
        ));
    }
    if bytes[12..16] != [0; 4] || bytes[28..32] != [0; 4] {
        return Err(DecodeError::new(12, "reserved WAL header bytes are not zero"));
    }
    Ok(WalHeader { first_seq: u64::from_le_bytes(bytes[16..24].try_into().unwrap_or_default()) })
}

/// Record kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    /// Insert or replace a document (the id is resolved: no predicate is ever logged).
    Put = 1,
    /// Delete one id.
    Delete = 2,
}

/// A decoded record.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// Sequence number (strictly increasing across the log).
    pub seq: u64,
    /// More records of the same atomic batch follow ([`FLAG_BATCH_CONTINUES`]).
    pub continues: bool,
    /// What the record does.
    pub op: RecordOp,
}

/// The operation a record holds.
#[derive(Clone, Debug, PartialEq)]
pub enum RecordOp {
    /// Insert or replace `id`.
    Put {
        /// External id.
        id: u64,
        /// Token dimension.
        dim: u32,
        /// Storage type of `tokens`.
        storage: TokenStorage,
        /// Token values in the storage type's little-endian encoding, row-major.
        tokens: Vec<u8>,
        /// Payload bytes (empty: none).
        payload: Vec<u8>,
    },
    /// Delete `id`.
    Delete {
        /// External id.
        id: u64,
    },
}

/// Appends the framed `Put` record to `out`. `tokens` must hold whole rows of `dim` values in
/// `storage`'s encoding (checked by the caller, which built them). `continues`: another record of
/// the same atomic batch follows.
#[allow(clippy::too_many_arguments)]
pub fn encode_put(
    out: &mut Vec<u8>,
    seq: u64,
    continues: bool,
    id: u64,
    dim: u32,
    storage: TokenStorage,
    tokens: &[u8],
    payload: &[u8],
) {
    let row_bytes = dim as usize * storage.bytes_per_value();
    debug_assert!(row_bytes > 0 && tokens.len().is_multiple_of(row_bytes));
    let rows = (tokens.len() / row_bytes) as u32;
    let mut fixed = [0u8; PUT_FIXED_LEN];
    fixed[0..8].copy_from_slice(&id.to_le_bytes());
    fixed[8..12].copy_from_slice(&rows.to_le_bytes());
    fixed[12..16].copy_from_slice(&dim.to_le_bytes());
    fixed[16] = storage.code();
    fixed[20..24].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    frame(out, seq, continues, RecordKind::Put, &[&fixed, tokens, payload]);
}

/// Appends the framed `Delete` record (a batch of one) to `out`.
pub fn encode_delete(out: &mut Vec<u8>, seq: u64, id: u64) {
    frame(out, seq, false, RecordKind::Delete, &[&id.to_le_bytes()]);
}

fn frame(out: &mut Vec<u8>, seq: u64, continues: bool, kind: RecordKind, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    debug_assert!(len <= MAX_WAL_RECORD_BYTES);
    let start = out.len();
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&[0u8; 4]); // CRC, filled below
    out.extend_from_slice(&seq.to_le_bytes());
    let flags = if continues { FLAG_BATCH_CONTINUES } else { 0 };
    out.extend_from_slice(&[kind as u8, flags, 0, 0]);
    for p in parts {
        out.extend_from_slice(p);
    }
    let crc = crc32fast::hash(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Why the bytes at an offset are not a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes remain than the frame says it needs: a torn write if at the end of the log.
    Incomplete,
    /// The bytes are not a valid record (checksum, kind, field ranges).
    Invalid(DecodeError),
}

/// Decodes the record at the start of `bytes` (`base` is its offset in the file, for errors).
/// Returns the record and its length in bytes.
pub fn decode_record(bytes: &[u8], base: u64) -> Result<(Record, usize), FrameError> {
    if bytes.len() < FRAME_LEN {
        return Err(FrameError::Incomplete);
    }
    let len = u32::from_le_bytes(bytes[0..4].try_into().unwrap_or_default()) as usize;
    let bad = |offset: u64, what: String| FrameError::Invalid(DecodeError { offset: base + offset, what });
    if len > MAX_WAL_RECORD_BYTES {
        return Err(bad(0, format!("record length {len} exceeds the limit {MAX_WAL_RECORD_BYTES}")));
    }
    if bytes.len() < FRAME_LEN + len {
        return Err(FrameError::Incomplete);
    }
    let stored_crc = u32::from_le_bytes(bytes[4..8].try_into().unwrap_or_default());
    let body = &bytes[8..FRAME_LEN + len];
    if crc32fast::hash(body) != stored_crc {
        return Err(bad(4, "record checksum mismatch".into()));
    }
    let seq = u64::from_le_bytes(bytes[8..16].try_into().unwrap_or_default());
    let flags = bytes[17];
    if flags & !FLAG_BATCH_CONTINUES != 0 {
        return Err(bad(17, format!("unknown record flags {flags:#04x}")));
    }
    if bytes[18..20] != [0; 2] {
        return Err(bad(18, "reserved record bytes are not zero".into()));
    }
    let payload = &bytes[FRAME_LEN..FRAME_LEN + len];
    let op = match bytes[16] {
        k if k == RecordKind::Put as u8 => decode_put(payload).map_err(|(o, w)| bad(FRAME_LEN as u64 + o, w))?,
        k if k == RecordKind::Delete as u8 => {
            if payload.len() != 8 {
                return Err(bad(FRAME_LEN as u64, format!("delete record of {} bytes, expected 8", payload.len())));
            }
            RecordOp::Delete { id: u64::from_le_bytes(payload.try_into().unwrap_or_default()) }
        }
        k => return Err(bad(16, format!("unknown record kind {k}"))),
    };
    Ok((Record { seq, continues: flags & FLAG_BATCH_CONTINUES != 0, op }, FRAME_LEN + len))
}

fn decode_put(p: &[u8]) -> Result<RecordOp, (u64, String)> {
    if p.len() < PUT_FIXED_LEN {
        return Err((0, format!("put record of {} bytes is shorter than its {PUT_FIXED_LEN} fixed bytes", p.len())));
    }
    let id = u64::from_le_bytes(p[0..8].try_into().unwrap_or_default());
    let rows = u32::from_le_bytes(p[8..12].try_into().unwrap_or_default()) as usize;
    let dim = u32::from_le_bytes(p[12..16].try_into().unwrap_or_default());
    let storage = TokenStorage::from_code(p[16])
        .filter(|s| s.residual_bits() == 0)
        .ok_or((16, format!("unknown WAL storage code {}", p[16])))?;
    if p[17..20] != [0; 3] {
        return Err((17, "reserved put bytes are not zero".into()));
    }
    let payload_len = u32::from_le_bytes(p[20..24].try_into().unwrap_or_default()) as usize;
    if rows == 0 || rows > MAX_TOKENS_PER_DOC || dim == 0 || dim as usize > MAX_DIM {
        return Err((8, format!("put record with {rows} tokens of dimension {dim} is out of range")));
    }
    if rows * dim as usize > MAX_DOC_VALUES || payload_len > MAX_PAYLOAD_BYTES {
        return Err((8, format!("put record of {rows}×{dim} values and {payload_len} payload bytes exceeds limits")));
    }
    let token_bytes = rows * dim as usize * storage.bytes_per_value();
    if PUT_FIXED_LEN + token_bytes + payload_len != p.len() {
        return Err((
            0,
            format!(
                "put record fields need {} bytes, record has {}",
                PUT_FIXED_LEN + token_bytes + payload_len,
                p.len()
            ),
        ));
    }
    let tokens = p[PUT_FIXED_LEN..PUT_FIXED_LEN + token_bytes].to_vec();
    let payload = p[PUT_FIXED_LEN + token_bytes..].to_vec();
    Ok(RecordOp::Put { id, dim, storage, tokens, payload })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_put(seq: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let tokens: Vec<u8> = (0..2 * 4 * 2).map(|i| i as u8).collect();
        encode_put(&mut out, seq, seq % 2 == 1, 42, 4, TokenStorage::F16, &tokens, b"{\"a\":1}");
        out
    }

    #[test]
    fn header_round_trip_and_checks() {
        let h = WalHeader { first_seq: 77 };
        let bytes = encode_header(&h);
        assert_eq!(decode_header(&bytes).unwrap(), h);
        let mut bad = bytes;
        bad[17] ^= 1;
        assert!(decode_header(&bad).is_err());
        assert!(decode_header(&bytes[..31]).is_err());
        let mut magic = bytes;
        magic[0] = b'X';
        assert!(decode_header(&magic).unwrap_err().what.contains("magic"));
    }

    #[test]
    fn records_round_trip() {
        let mut bytes = sample_put(5);
        encode_delete(&mut bytes, 6, 42);
        let (r1, n1) = decode_record(&bytes, 0).unwrap();
        assert_eq!(r1.seq, 5);
        assert!(r1.continues, "odd sequence numbers were framed with the batch flag");
        match &r1.op {
            RecordOp::Put { id, dim, storage, tokens, payload } => {
                assert_eq!((*id, *dim, *storage), (42, 4, TokenStorage::F16));
                assert_eq!(tokens.len(), 16);
                assert_eq!(payload, b"{\"a\":1}");
            }
            other => panic!("{other:?}"),
        }
        let (r2, n2) = decode_record(&bytes[n1..], n1 as u64).unwrap();
        assert_eq!(r2, Record { seq: 6, continues: false, op: RecordOp::Delete { id: 42 } });
        assert_eq!(n1 + n2, bytes.len());
    }

    #[test]
    fn every_truncation_is_incomplete_and_every_bit_flip_is_invalid() {
        let bytes = sample_put(9);
        for cut in 0..bytes.len() {
            assert_eq!(decode_record(&bytes[..cut], 0).unwrap_err(), FrameError::Incomplete, "cut {cut}");
        }
        for byte in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[byte] ^= 1 << bit;
                // A flip in the length field may make the record look longer (Incomplete) or
                // shorter (checksum mismatch); anywhere else the checksum catches it.
                match decode_record(&b, 0) {
                    Err(FrameError::Invalid(_)) => {}
                    Err(FrameError::Incomplete) => assert!(byte < 4, "byte {byte} bit {bit}"),
                    Ok(_) => panic!("flip of byte {byte} bit {bit} was accepted"),
                }
            }
        }
    }

    #[test]
    fn zeros_are_not_a_record() {
        let zeros = [0u8; 64];
        assert!(matches!(decode_record(&zeros, 0), Err(FrameError::Invalid(_))));
    }
}
