//! Arbitrary bytes through the `.npy` decoder: it must return an error or a header whose data
//! length matches its shape, and decoding the data must then succeed for the matching kind.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quiverdb::format::npy::{parse_header, read_f32, read_i64, NpyDtype};

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = parse_header(data) {
        assert_eq!(data.len() - header.data_offset, header.len() * header.dtype.size());
        match header.dtype {
            NpyDtype::F32 | NpyDtype::F16 | NpyDtype::F64 => assert_eq!(read_f32(data, &header).unwrap().len(), header.len()),
            NpyDtype::I64 | NpyDtype::I32 => assert_eq!(read_i64(data, &header).unwrap().len(), header.len()),
        }
    }
});
