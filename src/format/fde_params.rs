//! The FDE parameter record (storage-format.md, "FDE parameter record"): 40 bytes, little-endian.
//!
//! | offset | size | type | name | meaning |
//! |---|---|---|---|---|
//! | 0 | 4 | u32 | `record_version` | 1 |
//! | 4 | 4 | u32 | `dim` | token dimension |
//! | 8 | 4 | u32 | `k_sim` | SimHash bits per repetition |
//! | 12 | 1 | u8 | `projection` | 0 identity, 1 count sketch, 2 dense ±1/√d_proj |
//! | 13 | 1 | u8 | `fill_empty` | 0 or 1 |
//! | 14 | 1 | u8 | `has_final_dim` | 0 or 1 |
//! | 15 | 1 | u8 | reserved | 0 |
//! | 16 | 4 | u32 | `d_proj` | projected dimension (0 for identity) |
//! | 20 | 4 | u32 | `r_reps` | repetitions |
//! | 24 | 4 | u32 | `final_dim` | final Count Sketch dimension (0 if none) |
//! | 28 | 4 | u32 | `seed` | seed of every random matrix |
//! | 32 | 8 | u64 | `fingerprint` | FNV-1a 64 of bytes 0..32 and the drawn matrices |

use super::{read_u32, read_u64, DecodeError};
use crate::encode::fde::{FdeParams, Projection};

/// Version of this record's layout.
pub const RECORD_VERSION: u32 = 1;
/// Length of the parameter part (the fingerprint's input).
pub const PARAMS_LEN: usize = 32;
/// Length of the whole record.
pub const RECORD_LEN: usize = 40;

const OFF_VERSION: usize = 0;
const OFF_DIM: usize = 4;
const OFF_K_SIM: usize = 8;
const OFF_PROJECTION: usize = 12;
const OFF_FILL_EMPTY: usize = 13;
const OFF_HAS_FINAL: usize = 14;
const OFF_RESERVED: usize = 15;
const OFF_D_PROJ: usize = 16;
const OFF_R_REPS: usize = 20;
const OFF_FINAL_DIM: usize = 24;
const OFF_SEED: usize = 28;
const OFF_FINGERPRINT: usize = 32;
const _: () = assert!(OFF_SEED + 4 == PARAMS_LEN && OFF_FINGERPRINT + 8 == RECORD_LEN);

/// The 32 parameter bytes (without fingerprint).
pub fn encode(params: &FdeParams) -> [u8; PARAMS_LEN] {
    let mut out = [0u8; PARAMS_LEN];
    let (kind, d_proj) = match params.projection {
        Projection::Identity => (0u8, 0u32),
        Projection::CountSketch { d_proj } => (1, d_proj),
        Projection::DenseSign { d_proj } => (2, d_proj),
    };
    out[OFF_VERSION..OFF_VERSION + 4].copy_from_slice(&RECORD_VERSION.to_le_bytes());
    out[OFF_DIM..OFF_DIM + 4].copy_from_slice(&params.dim.to_le_bytes());
    out[OFF_K_SIM..OFF_K_SIM + 4].copy_from_slice(&params.k_sim.to_le_bytes());
    out[OFF_PROJECTION] = kind;
    out[OFF_FILL_EMPTY] = params.fill_empty as u8;
    out[OFF_HAS_FINAL] = params.final_dim.is_some() as u8;
    out[OFF_RESERVED] = 0;
    out[OFF_D_PROJ..OFF_D_PROJ + 4].copy_from_slice(&d_proj.to_le_bytes());
    out[OFF_R_REPS..OFF_R_REPS + 4].copy_from_slice(&params.r_reps.to_le_bytes());
    out[OFF_FINAL_DIM..OFF_FINAL_DIM + 4].copy_from_slice(&params.final_dim.unwrap_or(0).to_le_bytes());
    out[OFF_SEED..OFF_SEED + 4].copy_from_slice(&params.seed.to_le_bytes());
    out
}

/// The fingerprint stored in the record: FNV-1a 64 over the parameter bytes ([`encode`]) followed by
/// every random draw of `encoder` (storage-format.md, "FDE parameter record").
pub fn fingerprint(encoder: &crate::encode::fde::FdeEncoder) -> u64 {
    encoder.draws_fingerprint(&encode(encoder.params()))
}

/// The full 40-byte record: parameters and the encoder's fingerprint.
pub fn encode_record(params: &FdeParams, fingerprint: u64) -> [u8; RECORD_LEN] {
    let mut out = [0u8; RECORD_LEN];
    out[..PARAMS_LEN].copy_from_slice(&encode(params));
    out[OFF_FINGERPRINT..].copy_from_slice(&fingerprint.to_le_bytes());
    out
}

/// Decodes a record, checking every field (including [`FdeParams::validate`]).
/// Returns the parameters and the stored fingerprint; comparing that fingerprint with a freshly
/// built encoder's is the caller's job.
pub fn decode_record(bytes: &[u8]) -> Result<(FdeParams, u64), DecodeError> {
    if bytes.len() != RECORD_LEN {
        return Err(DecodeError::new(
            0,
            format!("FDE parameter record is {} bytes, expected {RECORD_LEN}", bytes.len()),
        ));
    }
    let version = read_u32(bytes, OFF_VERSION)?;
    if version != RECORD_VERSION {
        return Err(DecodeError::new(OFF_VERSION, format!("unknown FDE parameter record version {version}")));
    }
    let flag = |offset: usize, name: &str| match bytes[offset] {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(DecodeError::new(offset, format!("{name} flag is {other}, expected 0 or 1"))),
    };
    let fill_empty = flag(OFF_FILL_EMPTY, "fill_empty")?;
    let has_final = flag(OFF_HAS_FINAL, "has_final_dim")?;
    if bytes[OFF_RESERVED] != 0 {
        return Err(DecodeError::new(OFF_RESERVED, "reserved byte is not zero"));
    }
    let d_proj = read_u32(bytes, OFF_D_PROJ)?;
    let projection = match bytes[OFF_PROJECTION] {
        0 if d_proj == 0 => Projection::Identity,
        1 => Projection::CountSketch { d_proj },
        2 => Projection::DenseSign { d_proj },
        other => {
            return Err(DecodeError::new(OFF_PROJECTION, format!("unknown projection kind {other} (d_proj {d_proj})")));
        }
    };
    let final_dim = read_u32(bytes, OFF_FINAL_DIM)?;
    if !has_final && final_dim != 0 {
        return Err(DecodeError::new(OFF_FINAL_DIM, "final_dim set without has_final_dim"));
    }
    let params = FdeParams {
        dim: read_u32(bytes, OFF_DIM)?,
        k_sim: read_u32(bytes, OFF_K_SIM)?,
        projection,
        r_reps: read_u32(bytes, OFF_R_REPS)?,
        fill_empty,
        final_dim: has_final.then_some(final_dim),
        seed: read_u32(bytes, OFF_SEED)?,
    };
    params.validate().map_err(|e| DecodeError::new(0, format!("FDE parameters out of range: {e}")))?;
    Ok((params, read_u64(bytes, OFF_FINGERPRINT)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::fde::FdeEncoder;

    const PINNED_DEFAULT_FINGERPRINT: u64 = 0xd28d_4c3e_3660_03c9;

    /// The default encoder's fingerprint, pinned when format version 1 of the FDE record was
    /// written. If this fails, a change altered the random draws (or their hashing): every stored
    /// collection would refuse to open with the new build. Do not update the constant; fix the code.
    #[test]
    fn default_fingerprint_is_pinned() {
        let fp = fingerprint(&FdeEncoder::new(FdeParams::new(128)).unwrap());
        assert_eq!(fp, PINNED_DEFAULT_FINGERPRINT, "got {fp:#018x}");
    }

    #[test]
    fn fingerprint_changes_with_seed_and_is_stable() {
        let a = fingerprint(&FdeEncoder::new(FdeParams::new(16)).unwrap());
        let b = fingerprint(&FdeEncoder::new(FdeParams::new(16)).unwrap());
        let mut other = FdeParams::new(16);
        other.seed = 2;
        let c = fingerprint(&FdeEncoder::new(other).unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn round_trip_and_rejections() {
        let mut params = FdeParams::new(128);
        params.final_dim = Some(1024);
        let rec = encode_record(&params, 0xdead_beef);
        assert_eq!(decode_record(&rec).unwrap(), (params, 0xdead_beef));
        assert!(decode_record(&rec[..39]).is_err());
        for (offset, value) in [(0, 2u8), (12, 7), (13, 2), (14, 5), (15, 1), (8, 31)] {
            let mut bad = rec;
            bad[offset] = value;
            assert!(decode_record(&bad).is_err(), "offset {offset}");
        }
    }
}
