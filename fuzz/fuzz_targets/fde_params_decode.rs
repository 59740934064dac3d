//! Arbitrary bytes through the FDE parameter record decoder: an accepted record must describe
//! valid parameters and re-encode to the same bytes (the encoding is canonical).
#![no_main]

use libfuzzer_sys::fuzz_target;
use quiverdb::format::fde_params::{decode_record, encode_record};

fuzz_target!(|data: &[u8]| {
    if let Ok((params, fingerprint)) = decode_record(data) {
        params.validate().expect("decoded parameters are valid");
        assert_eq!(&encode_record(&params, fingerprint)[..], data);
    }
});
