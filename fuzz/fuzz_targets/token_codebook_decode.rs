//! Arbitrary bytes as a token-codebook section (the segment's `token_centroids`, also the
//! catalog's `t` record), then arbitrary centroid ids and residual codes decoded and scored with
//! it: every step must return values or an error, never panic or read out of bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quiverdb::encode::codec::TokenCodebook;
use quiverdb::encode::maxsim::ResidualTokens;
use quiverdb::{DocTokens, MaxSimQuery, TokenMatrix};

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let dim = 1 + data[0] as usize % 64;
    let split = (data[1] as usize * 64).min(data.len() - 2);
    let (section, rest) = data[2..].split_at(split.min(data.len() - 2));
    let Ok(book) = TokenCodebook::from_bytes(section, dim) else { return };
    let rb = book.residual_bytes();
    let tokens = if rb == 0 { rest.len() / 2 } else { rest.len() / (2 + rb) };
    let (id_bytes, codes) = rest.split_at(tokens * 2);
    let ids: Vec<u16> = id_bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
    let codes = &codes[..tokens * rb];
    let query = vec![0.25f32; dim * 2];
    let table = book.interaction_table(&query);
    let _ = table.score(&ids);
    let _ = table.top_centroids(3);
    let mut out = vec![0f32; tokens * dim];
    let _ = book.decode_many(&ids, codes, &mut out);
    if rb > 0 && tokens > 0 {
        let q = MaxSimQuery::new(&TokenMatrix::new(&query, dim).unwrap());
        let _ = q.score(DocTokens::Residual(ResidualTokens { ids: &ids, codes, codebook: &book }));
    }
    let _ = TokenCodebook::from_bytes(&book.to_bytes(), dim).map(|b| assert_eq!(b, book));
});
