//! NumPy `.npy` decoding (format versions 1.0, 2.0 and 3.0), for the dataset reader.
//!
//! Only what datasets use: little-endian `f8` (numpy's default float, converted to `f32`), `f4`,
//! `f2`, `i8`, `i4`, C order. The header is a Python
//! dict literal; it is parsed by a small strict parser, never evaluated. Every size computation
//! is checked, and the data length must equal `product(shape) · itemsize` exactly.

use super::DecodeError;

/// Element type of an `.npy` array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NpyDtype {
    /// `<f8` (read as `f32`)
    F64,
    /// `<f4`
    F32,
    /// `<f2`
    F16,
    /// `<i8`
    I64,
    /// `<i4`
    I32,
}

impl NpyDtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            NpyDtype::F32 | NpyDtype::I32 => 4,
            NpyDtype::F16 => 2,
            NpyDtype::I64 | NpyDtype::F64 => 8,
        }
    }
}

/// A decoded `.npy` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpyHeader {
    /// Element type.
    pub dtype: NpyDtype,
    /// Array shape (empty for a scalar).
    pub shape: Vec<usize>,
    /// Offset of the first data byte.
    pub data_offset: usize,
}

impl NpyHeader {
    /// Number of elements (product of the shape).
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True when the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// Headers longer than this are refused (numpy itself writes a few hundred bytes).
const MAX_HEADER_LEN: usize = 1 << 16;

/// Parses and checks the header of a complete `.npy` file held in `bytes`.
pub fn parse_header(bytes: &[u8]) -> Result<NpyHeader, DecodeError> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(DecodeError::new(0, "not a NumPy .npy file (bad magic)"));
    }
    let major = bytes[6];
    let (header_len, header_start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            let b = bytes.get(8..12).ok_or_else(|| DecodeError::new(8, "truncated .npy header length"))?;
            (u32::from_le_bytes(b.try_into().unwrap_or_default()) as usize, 12)
        }
        v => return Err(DecodeError::new(6, format!("unsupported .npy format version {v}"))),
    };
    if header_len > MAX_HEADER_LEN {
        return Err(DecodeError::new(8, format!(".npy header length {header_len} exceeds {MAX_HEADER_LEN}")));
    }
    let data_offset = header_start + header_len;
    let text = bytes
        .get(header_start..data_offset)
        .ok_or_else(|| DecodeError::new(header_start, format!("truncated .npy header: needs {header_len} bytes")))?;
    let text = std::str::from_utf8(text).map_err(|_| DecodeError::new(header_start, ".npy header is not text"))?;
    let dict = HeaderParser { text, pos: 0, base: header_start }.parse_dict()?;

    let descr = dict.descr.ok_or_else(|| DecodeError::new(header_start, ".npy header has no 'descr'"))?;
    let dtype = match descr.as_str() {
        "<f8" => NpyDtype::F64,
        "<f4" => NpyDtype::F32,
        "<f2" => NpyDtype::F16,
        "<i8" => NpyDtype::I64,
        "<i4" => NpyDtype::I32,
        other => {
            return Err(DecodeError::new(
                header_start,
                format!("unsupported .npy dtype '{other}' (supported: <f8, <f4, <f2, <i8, <i4)"),
            ))
        }
    };
    if dict.fortran_order != Some(false) {
        return Err(DecodeError::new(header_start, ".npy array is not in C order (fortran_order must be False)"));
    }
    let shape = dict.shape.ok_or_else(|| DecodeError::new(header_start, ".npy header has no 'shape'"))?;
    let elements = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| DecodeError::new(header_start, "shape overflows"))?;
    let data_len =
        elements.checked_mul(dtype.size()).ok_or_else(|| DecodeError::new(header_start, "shape overflows"))?;
    let available = bytes.len() - data_offset;
    if available != data_len {
        return Err(DecodeError::new(
            data_offset,
            format!("shape {shape:?} of {descr} needs {data_len} data bytes, file has {available}"),
        ));
    }
    Ok(NpyHeader { dtype, shape, data_offset })
}

/// Decodes the data of a float array (`<f8`, `<f4` or `<f2`) as `f32`. A finite `f64` outside the
/// `f32` range becomes an infinity here; callers check values for finiteness and report it as
/// invalid input.
pub fn read_f32(bytes: &[u8], header: &NpyHeader) -> Result<Vec<f32>, DecodeError> {
    let data = bytes.get(header.data_offset..).unwrap_or_default();
    match header.dtype {
        NpyDtype::F64 => {
            Ok(data.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap_or_default()) as f32).collect())
        }
        NpyDtype::F32 => {
            Ok(data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap_or_default())).collect())
        }
        NpyDtype::F16 => {
            let bits: Vec<u16> = data.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
            let mut out = vec![0f32; bits.len()];
            crate::encode::simd::f16_to_f32(&bits, &mut out);
            Ok(out)
        }
        other => Err(DecodeError::new(0, format!("expected a float array, found {other:?}"))),
    }
}

/// Decodes the data of an integer array (`<i8` or `<i4`) as `i64`.
pub fn read_i64(bytes: &[u8], header: &NpyHeader) -> Result<Vec<i64>, DecodeError> {
    let data = &bytes[header.data_offset..];
    match header.dtype {
        NpyDtype::I64 => {
            Ok(data.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap_or_default())).collect())
        }
        NpyDtype::I32 => {
            Ok(data.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap_or_default()) as i64).collect())
        }
        other => Err(DecodeError::new(0, format!("expected an integer array, found {other:?}"))),
    }
}

/// Encodes an `.npy` (version 1.0) file: used by tests, fixtures and the CLI's exports.
pub fn encode(dtype: NpyDtype, shape: &[usize], data_le: &[u8]) -> Vec<u8> {
    let descr = match dtype {
        NpyDtype::F64 => "<f8",
        NpyDtype::F32 => "<f4",
        NpyDtype::F16 => "<f2",
        NpyDtype::I64 => "<i8",
        NpyDtype::I32 => "<i4",
    };
    let shape_text = match shape {
        [one] => format!("({one},)"),
        dims => format!("({})", dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data_le.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data_le);
    out
}

#[derive(Default)]
struct HeaderDict {
    descr: Option<String>,
    fortran_order: Option<bool>,
    shape: Option<Vec<usize>>,
}

struct HeaderParser<'a> {
    text: &'a str,
    pos: usize,
    base: usize,
}

impl HeaderParser<'_> {
    fn err(&self, what: impl Into<String>) -> DecodeError {
        DecodeError::new(self.base + self.pos, format!("malformed .npy header: {}", what.into()))
    }

    fn skip_ws(&mut self) {
        while self.text[self.pos..].starts_with([' ', '\n', '\t', '\r']) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_ws();
        if self.text[self.pos..].starts_with(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) -> Result<(), DecodeError> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.err(format!("expected '{c}'")))
        }
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        self.skip_ws();
        let quote = match self.text[self.pos..].chars().next() {
            Some(q @ ('\'' | '"')) => q,
            _ => return Err(self.err("expected a quoted string")),
        };
        let start = self.pos + 1;
        let end = self.text[start..].find(quote).ok_or_else(|| self.err("unterminated string"))? + start;
        self.pos = end + 1;
        Ok(self.text[start..end].to_string())
    }

    fn word(&mut self) -> &str {
        self.skip_ws();
        let start = self.pos;
        while self.text[self.pos..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
            self.pos += 1;
        }
        &self.text[start..self.pos]
    }

    fn shape(&mut self) -> Result<Vec<usize>, DecodeError> {
        self.expect('(')?;
        let mut dims = Vec::new();
        loop {
            if self.eat(')') {
                return Ok(dims);
            }
            let w = self.word().to_string();
            let dim = w.trim_end_matches('L').parse::<usize>().map_err(|_| self.err(format!("bad dimension '{w}'")))?;
            dims.push(dim);
            if !self.eat(',') {
                self.expect(')')?;
                return Ok(dims);
            }
        }
    }

    fn parse_dict(&mut self) -> Result<HeaderDict, DecodeError> {
        let mut dict = HeaderDict::default();
        self.expect('{')?;
        loop {
            if self.eat('}') {
                break;
            }
            let key = self.string()?;
            self.expect(':')?;
            match key.as_str() {
                "descr" => dict.descr = Some(self.string()?),
                "fortran_order" => {
                    let word = self.word().to_string();
                    dict.fortran_order = Some(match word.as_str() {
                        "True" => true,
                        "False" => false,
                        other => return Err(self.err(format!("fortran_order must be True or False, not '{other}'"))),
                    })
                }
                "shape" => dict.shape = Some(self.shape()?),
                other => return Err(self.err(format!("unexpected key '{other}'"))),
            }
            if !self.eat(',') {
                self.expect('}')?;
                break;
            }
        }
        Ok(dict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let data: Vec<u8> = [1.5f32, -2.0, 3.25, 0.0, 1.0, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let file = encode(NpyDtype::F32, &[2, 3], &data);
        let header = parse_header(&file).unwrap();
        assert_eq!(header.shape, vec![2, 3]);
        assert_eq!(read_f32(&file, &header).unwrap(), vec![1.5, -2.0, 3.25, 0.0, 1.0, 2.0]);
        assert!(parse_header(&file[..file.len() - 1]).is_err(), "truncated data");
        assert!(parse_header(&file[..20]).is_err(), "truncated header");
        assert!(parse_header(b"hello world, not npy").is_err());
        let offsets =
            encode(NpyDtype::I64, &[3], &[0i64, 2, 5].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>());
        let h = parse_header(&offsets).unwrap();
        assert_eq!(read_i64(&offsets, &h).unwrap(), vec![0, 2, 5]);
        assert!(read_f32(&offsets, &h).is_err());
    }

    #[test]
    fn header_variants() {
        let raw = |h: &str, data: &[u8]| {
            let mut out = b"\x93NUMPY\x01\x00".to_vec();
            out.extend_from_slice(&(h.len() as u16).to_le_bytes());
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(data);
            out
        };
        let ok = raw("{\"descr\": \"<f2\", \"fortran_order\": False, \"shape\": (2,)}", &[0, 60, 0, 60]);
        assert_eq!(parse_header(&ok).unwrap().dtype, NpyDtype::F16);
        assert!(parse_header(&raw("{'descr': '>f4', 'fortran_order': False, 'shape': (1,)}", &[0; 4])).is_err());
        assert!(parse_header(&raw("{'descr': '<f4', 'fortran_order': True, 'shape': (1,)}", &[0; 4])).is_err());
        assert!(parse_header(&raw(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999, 99999999999)}",
            &[]
        ))
        .is_err());
        assert!(parse_header(&raw("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1}", &[0; 4])).is_err());
        let scalar = raw("{'descr': '<i8', 'fortran_order': False, 'shape': (), }", &[0; 8]);
        assert_eq!(parse_header(&scalar).unwrap().len(), 1);
    }
}
