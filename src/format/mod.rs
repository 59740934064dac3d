//! Byte encodings of everything quiverdb writes, mirroring `storage-format.md` field by field.
//!
//! Decoders here take plain byte slices and never panic: every length and value is checked, and a
//! failure is a [`DecodeError`] saying where (offset within the slice) and what. The caller,
//! which knows the file and the slice's position in it, turns it into
//! [`crate::Error::Corruption`] with [`DecodeError::in_file`].

pub mod fde_params;
pub mod graph;
pub mod npy;
pub mod segment;
pub mod wal;

use std::path::Path;

/// A decoding failure inside a byte slice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    /// Offset of the offending bytes from the start of the decoded slice.
    pub offset: u64,
    /// What was expected and what was found.
    pub what: String,
}

impl DecodeError {
    pub(crate) fn new(offset: usize, what: impl Into<String>) -> Self {
        DecodeError { offset: offset as u64, what: what.into() }
    }

    /// The corresponding [`crate::Error::Corruption`] for a slice that starts at byte `base` of `file`.
    pub fn in_file(self, file: &Path, base: u64) -> crate::Error {
        crate::Error::corruption(file, base + self.offset, self.what)
    }
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "at byte {}: {}", self.offset, self.what)
    }
}

pub(crate) fn read_u32(bytes: &[u8], offset: usize) -> Result<u32, DecodeError> {
    bytes
        .get(offset..offset + 4)
        .map(|b| u32::from_le_bytes(b.try_into().unwrap_or_default()))
        .ok_or_else(|| DecodeError::new(offset, format!("need 4 bytes, {} remain", bytes.len().saturating_sub(offset))))
}

pub(crate) fn read_u64(bytes: &[u8], offset: usize) -> Result<u64, DecodeError> {
    bytes
        .get(offset..offset + 8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
        .ok_or_else(|| DecodeError::new(offset, format!("need 8 bytes, {} remain", bytes.len().saturating_sub(offset))))
}
