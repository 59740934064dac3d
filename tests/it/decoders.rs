//! Decoders of bytes from disk never panic: arbitrary bytes, mutations of valid inputs, and the
//! committed fuzz corpus (fuzz/corpus) all give a value or a decode error. The cargo-fuzz
//! targets in fuzz/ run the same checks for as long as one likes (see README).

use proptest::prelude::*;
use quiverdb::format::fde_params::{decode_record, encode_record, RECORD_LEN};
use quiverdb::format::npy::{self, parse_header, read_f32, read_i64, NpyDtype};
use quiverdb::FdeParams;

fn check_npy(data: &[u8]) {
    if let Ok(header) = parse_header(data) {
        assert_eq!(data.len() - header.data_offset, header.len() * header.dtype.size());
        match header.dtype {
            NpyDtype::F64 | NpyDtype::F32 | NpyDtype::F16 => {
                assert_eq!(read_f32(data, &header).unwrap().len(), header.len())
            }
            NpyDtype::I64 | NpyDtype::I32 => assert_eq!(read_i64(data, &header).unwrap().len(), header.len()),
        }
    }
}

fn check_fde_record(data: &[u8]) {
    if let Ok((params, fingerprint)) = decode_record(data) {
        params.validate().unwrap();
        assert_eq!(&encode_record(&params, fingerprint)[..], data);
    }
}

fn valid_npy() -> Vec<u8> {
    let data: Vec<u8> = (0..12).flat_map(|i| (i as f32).to_le_bytes()).collect();
    npy::encode(NpyDtype::F32, &[3, 4], &data)
}

proptest! {
    #[test]
    fn npy_arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..300)) {
        check_npy(&data);
    }

    #[test]
    fn npy_mutations(flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6), cut in any::<prop::sample::Index>()) {
        let mut data = valid_npy();
        for (at, value) in flips {
            let i = at.index(data.len());
            data[i] = value;
        }
        data.truncate(cut.index(data.len() + 1));
        check_npy(&data);
    }

    #[test]
    fn fde_record_mutations(flips in prop::collection::vec((0..RECORD_LEN, any::<u8>()), 1..4)) {
        let mut data = encode_record(&FdeParams::new(128), 99).to_vec();
        for (i, value) in flips {
            data[i] = value;
        }
        check_fde_record(&data);
    }
}

#[test]
fn fuzz_corpus_replays_cleanly() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut replayed = 0;
    for (target, check) in [("npy_decode", check_npy as fn(&[u8])), ("fde_params_decode", check_fde_record)] {
        for entry in std::fs::read_dir(root.join(target)).unwrap() {
            check(&std::fs::read(entry.unwrap().path()).unwrap());
            replayed += 1;
        }
    }
    assert!(replayed >= 4, "the committed corpus is missing");

    // Segment inputs: open, verify and read everything; only errors, never panics.
    let scratch = crate::common::TempDir::new("segment-corpus");
    let path = scratch.0.join("input.qseg");
    let mut segments = 0;
    for entry in std::fs::read_dir(root.join("segment_open")).unwrap() {
        std::fs::copy(entry.unwrap().path(), &path).unwrap();
        if let Ok(reader) = quiverdb::segment::SegmentReader::open(&path) {
            let _ = reader.verify();
            let _ = reader.pq_codebook();
            for i in 0..reader.doc_count() {
                let _ = (reader.tokens(i), reader.payload(i), reader.pq_code(i));
            }
        }
        segments += 1;
    }
    assert!(segments >= 1, "the committed segment corpus is missing");
}

/// The committed corpora of the WAL, segment-search and operation-sequence fuzz targets replay
/// through the same checks the fuzzers run (`quiverdb::testing`); any `Err` is a bug.
#[test]
fn wal_segment_search_and_operation_corpora_replay_cleanly() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let scratch = crate::common::TempDir::new("corpus-replay");
    type Check = fn(&std::path::Path, &[u8]) -> Result<(), String>;
    let targets: [(&str, Check, &str); 3] = [
        ("wal_replay", quiverdb::testing::wal_bytes, "wal"),
        ("segment_search", quiverdb::testing::segment_bytes, "input.qseg"),
        ("collection_ops", quiverdb::testing::collection_ops, "ops"),
    ];
    for (target, check, scratch_name) in targets {
        let mut n = 0;
        for entry in std::fs::read_dir(root.join(target)).unwrap() {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            if let Err(bug) = check(&scratch.0.join(scratch_name), &data) {
                panic!("{target} corpus entry {}: {bug}", path.display());
            }
            n += 1;
        }
        assert!(n >= 2, "the committed {target} corpus is missing");
    }
}
