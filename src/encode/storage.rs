//! How token vectors are stored: `f32`, a 16-bit type that halves the bytes read per rerank, or
//! a residual codec (a centroid id plus `b` bits per dimension, [`crate::encode::codec`]) that
//! cuts them to an eighth or less. The WAL and the memtable hold residual collections' tokens as
//! `f16` ([`TokenStorage::buffer_storage`]); only segments hold the compressed form.
//!
//! `f16` (IEEE half: 10 mantissa bits, max 65,504) is more precise than `bf16` (7 mantissa bits,
//! f32's range) for L2-normalised token vectors, whose values lie in [-1, 1]; `bf16` is offered
//! for unnormalised embeddings whose magnitudes may exceed f16's range. The measured score error
//! of each on real data is in the foundation issue's note (`cargo bench --bench maxsim` prints it).

use crate::error::{Error, Result};

/// The element type of stored token vectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum TokenStorage {
    /// 32-bit IEEE float: exact.
    F32,
    /// 16-bit IEEE half float, round to nearest even. Values beyond ±65,504 are refused.
    F16,
    /// bfloat16 (the top 16 bits of an f32), round to nearest even.
    Bf16,
    /// Centroid id (2 bytes) plus 1 bit per dimension of residual.
    Residual1,
    /// Centroid id (2 bytes) plus 2 bits per dimension of residual (PLAID's usual setting).
    Residual2,
    /// Centroid id (2 bytes) plus 4 bits per dimension of residual.
    Residual4,
}

impl TokenStorage {
    /// Bytes per value in the WAL and the memtable (the [`TokenStorage::buffer_storage`]'s).
    pub fn bytes_per_value(self) -> usize {
        match self.buffer_storage() {
            TokenStorage::F32 => 4,
            _ => 2,
        }
    }

    /// Residual bits per dimension (0 for the plain types).
    pub fn residual_bits(self) -> u8 {
        match self {
            TokenStorage::Residual1 => 1,
            TokenStorage::Residual2 => 2,
            TokenStorage::Residual4 => 4,
            _ => 0,
        }
    }

    /// The plain type the WAL and the memtable hold these tokens in: itself, or `f16` for the
    /// residual codecs.
    pub fn buffer_storage(self) -> TokenStorage {
        if self.residual_bits() > 0 {
            TokenStorage::F16
        } else {
            self
        }
    }

    /// Bytes one token of `dim` values takes in a segment's token section (the residual codecs'
    /// 2-byte centroid ids live in the token-codes section and are not counted here).
    pub fn segment_row_bytes(self, dim: usize) -> usize {
        match self.residual_bits() {
            0 => dim * self.bytes_per_value(),
            bits => dim * bits as usize / 8,
        }
    }

    /// Refuses a dimension the type cannot pack (residual codes must fill whole bytes).
    pub fn check_dim(self, dim: usize) -> Result<()> {
        let bits = self.residual_bits() as usize;
        if bits > 0 && !(dim * bits).is_multiple_of(8) {
            return Err(Error::invalid_param(
                "storage",
                format!("{} cannot pack {dim}-dimensional tokens into whole bytes", self.name()),
            ));
        }
        Ok(())
    }

    /// The on-disk code of this type (see storage-format.md).
    pub fn code(self) -> u8 {
        match self {
            TokenStorage::F32 => 0,
            TokenStorage::F16 => 1,
            TokenStorage::Bf16 => 2,
            TokenStorage::Residual1 => 3,
            TokenStorage::Residual2 => 4,
            TokenStorage::Residual4 => 5,
        }
    }

    /// Every type, in code order.
    pub const ALL: [TokenStorage; 6] = [
        TokenStorage::F32,
        TokenStorage::F16,
        TokenStorage::Bf16,
        TokenStorage::Residual1,
        TokenStorage::Residual2,
        TokenStorage::Residual4,
    ];

    /// The type with on-disk code `code`, if any.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.code() == code)
    }

    /// A short lowercase name (`f32`, `f16`, `bf16`, `residual2`), as the CLI spells it.
    pub fn name(self) -> &'static str {
        match self {
            TokenStorage::F32 => "f32",
            TokenStorage::F16 => "f16",
            TokenStorage::Bf16 => "bf16",
            TokenStorage::Residual1 => "residual1",
            TokenStorage::Residual2 => "residual2",
            TokenStorage::Residual4 => "residual4",
        }
    }

    /// Parses a name as [`TokenStorage::name`] prints it.
    pub fn from_name(name: &str) -> Result<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name).ok_or_else(|| {
            Error::invalid_param(
                "storage",
                format!("`{name}` is not one of f32, f16, bf16, residual1, residual2, residual4"),
            )
        })
    }
}

/// Converts finite `f32` values to 16-bit storage bits (`F16` or `Bf16`).
///
/// Errors for `F32` (nothing to convert) and for values that would overflow to infinity.
pub fn to_16bit(values: &[f32], storage: TokenStorage) -> Result<Vec<u16>> {
    use half::slice::HalfFloatSliceExt;
    let mut out = vec![0u16; values.len()];
    // `half`'s slice conversions use the CPU's conversion instructions when available (F16C for
    // f16), 10× faster than converting value by value; overflow shows as an infinite result.
    let (exp_mask, name) = match storage {
        TokenStorage::F32 | TokenStorage::Residual1 | TokenStorage::Residual2 | TokenStorage::Residual4 => {
            return Err(Error::invalid_param("storage", "only f16 and bf16 are 16-bit values"))
        }
        TokenStorage::F16 => {
            half::slice::HalfBitsSliceExt::reinterpret_cast_mut::<half::f16>(&mut out[..])
                .convert_from_f32_slice(values);
            (0x7c00u16, "f16 range (±65504)")
        }
        TokenStorage::Bf16 => {
            half::slice::HalfBitsSliceExt::reinterpret_cast_mut::<half::bf16>(&mut out[..])
                .convert_from_f32_slice(values);
            (0x7f80u16, "bf16 range")
        }
    };
    if let Some(i) = out.iter().position(|&b| b & exp_mask == exp_mask) {
        return Err(Error::InvalidInput(format!(
            "value {} exceeds the {name}; store f32{}",
            values[i],
            if storage == TokenStorage::F16 { " or bf16" } else { "" }
        )));
    }
    Ok(out)
}

/// The `f32` values of 16-bit storage bits (`F16` or `Bf16`; exact, every such value is an f32).
/// For `F32` the bits are not meaningful and an error is returned.
/// `f16` bits widened to `f32` (exact).
pub fn f16_bits_to_f32(bits: &[u16]) -> Vec<f32> {
    let mut out = vec![0f32; bits.len()];
    crate::encode::simd::f16_to_f32(bits, &mut out);
    out
}

/// `bf16` bits widened to `f32` (exact).
pub fn bf16_bits_to_f32(bits: &[u16]) -> Vec<f32> {
    let mut out = vec![0f32; bits.len()];
    crate::encode::simd::bf16_to_f32(bits, &mut out);
    out
}

/// 16-bit values of `storage` widened to `f32`; `f32` storage is refused (it is not 16-bit).
pub fn from_16bit(bits: &[u16], storage: TokenStorage) -> Result<Vec<f32>> {
    let mut out = vec![0f32; bits.len()];
    match storage {
        TokenStorage::F16 => crate::encode::simd::f16_to_f32(bits, &mut out),
        TokenStorage::Bf16 => crate::encode::simd::bf16_to_f32(bits, &mut out),
        _ => return Err(Error::invalid_param("storage", "only f16 and bf16 are 16-bit values")),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_names_round_trip() {
        for s in TokenStorage::ALL {
            assert_eq!(TokenStorage::from_code(s.code()), Some(s));
            assert_eq!(TokenStorage::from_name(s.name()).unwrap(), s);
        }
        assert_eq!(TokenStorage::from_code(9), None);
        assert!(TokenStorage::from_name("f8").is_err());
        assert_eq!(TokenStorage::Residual2.buffer_storage(), TokenStorage::F16);
        assert_eq!(TokenStorage::Residual2.segment_row_bytes(128), 32);
        assert_eq!(TokenStorage::Residual4.segment_row_bytes(128), 64);
        assert!(TokenStorage::Residual1.check_dim(12).is_err() && TokenStorage::Residual2.check_dim(12).is_ok());
    }

    #[test]
    fn f16_overflow_is_refused() {
        assert!(to_16bit(&[70_000.0], TokenStorage::F16).is_err());
        assert!(to_16bit(&[70_000.0], TokenStorage::Bf16).is_ok());
        assert_eq!(to_16bit(&[1.0], TokenStorage::F16).unwrap(), vec![0x3c00]);
        assert_eq!(to_16bit(&[1.0], TokenStorage::Bf16).unwrap(), vec![0x3f80]);
        for storage in [TokenStorage::F16, TokenStorage::Bf16] {
            let back = from_16bit(&to_16bit(&[0.5, -2.0, 0.0], storage).unwrap(), storage).unwrap();
            assert_eq!(back, vec![0.5, -2.0, 0.0]);
        }
        assert!(from_16bit(&[0], TokenStorage::F32).is_err());
    }
}
