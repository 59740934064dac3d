//! Golden tests against outputs of Google's reference MUVERA implementation
//! (`tests/fixtures/fde-reference.txt`, a copy of shared/golden/fde-reference.txt; see its README).

use quiverdb::encode::fde::{apply_count_sketch, bucket_of_bits, distance_to_bucket};
use quiverdb::{FdeEncoder, FdeParams, Projection, TokenMatrix};

const GOLDEN: &str = include_str!("../fixtures/fde-reference.txt");

/// The bracketed list of numbers on the first line after `label` that has one.
fn numbers_after(label: &str) -> Vec<f32> {
    let start = GOLDEN.find(label).unwrap_or_else(|| panic!("label {label:?} not in golden file"));
    let rest = &GOLDEN[start..];
    let open = rest.find("= [").expect("a list follows") + 2;
    let close = rest[open..].find(']').expect("list closes") + open;
    rest[open + 1..close].split(',').map(|v| v.trim().parse::<f32>().expect("number")).collect()
}

/// A `rows × cols` matrix printed as `rows` bracketed lines after `label`.
fn matrix_after(label: &str, rows: usize) -> Vec<f32> {
    let start = GOLDEN.find(label).unwrap_or_else(|| panic!("label {label:?} not in golden file"));
    GOLDEN[start..]
        .lines()
        .skip(1)
        .take(rows)
        .flat_map(|line| {
            let inner = line.trim().trim_start_matches('[').trim_end_matches(']');
            inner.split(',').map(|v| v.trim().parse::<f32>().expect("number")).collect::<Vec<_>>()
        })
        .collect()
}

/// A scalar after `label` (up to the next space, comma or line end).
fn scalar_after(label: &str) -> f64 {
    let start = GOLDEN.find(label).unwrap_or_else(|| panic!("label {label:?} not in golden file")) + label.len();
    let rest = GOLDEN[start..].trim_start();
    let end = rest.find([' ', '\n', ',', ']']).unwrap_or(rest.len());
    rest[..end].parse().expect("number")
}

fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol, "{what}[{i}]: got {g}, want {w}\n got {got:?}\nwant {want:?}");
    }
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

#[test]
fn bucket_index_table_matches_exactly() {
    let mut checked = 0;
    for line in GOLDEN.lines().filter(|l| l.starts_with("k=") && l.contains("-> index") && l.contains("bits=")) {
        let bits_text = line.split("bits=").nth(1).unwrap().split_whitespace().next().unwrap();
        let bits: Vec<bool> = bits_text.chars().map(|c| c == '1').collect();
        let index: u32 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert_eq!(bucket_of_bits(&bits), index, "{line}");
        checked += 1;
    }
    assert_eq!(checked, 14);
}

#[test]
fn hamming_table_matches_exactly() {
    let mut rows = 0;
    for line in GOLDEN.lines().filter(|l| l.starts_with("bits=") && l.contains(':')) {
        let (head, tail) = line.split_once(':').unwrap();
        let bits: Vec<bool> = head.trim_start_matches("bits=").chars().map(|c| c == '1').collect();
        let want: Vec<u32> = tail.split_whitespace().map(|v| v.parse().unwrap()).collect();
        let got: Vec<u32> = (0..8).map(|p| distance_to_bucket(&bits, p)).collect();
        assert_eq!(got, want, "{line}");
        rows += 1;
    }
    assert_eq!(rows, 8);
}

fn params(dim: u32, k_sim: u32, r_reps: u32, projection: Projection, fill_empty: bool) -> FdeParams {
    FdeParams { dim, k_sim, projection, r_reps, fill_empty, final_dim: None, seed: 1 }
}

#[test]
fn random_matrices_equal_the_reference_draws() {
    // SimHashMatrixFromSeed(seed, 4, 3) is repetition `seed - 1` of an encoder with seed 1.
    let enc = FdeEncoder::new(params(4, 3, 2, Projection::Identity, true)).unwrap();
    let want1 = matrix_after("SimHashMatrixFromSeed(seed=1, dimension=4, num_projections=3)", 4);
    let want2 = matrix_after("SimHashMatrixFromSeed(seed=2, dimension=4, num_projections=3)", 4);
    assert_close(&enc.simhash_matrix(0), &want1, 1e-7, "simhash seed 1");
    assert_close(&enc.simhash_matrix(1), &want2, 1e-7, "simhash seed 2");

    let enc = FdeEncoder::new(params(4, 2, 1, Projection::CountSketch { d_proj: 2 }, true)).unwrap();
    let want = matrix_after("AMSProjectionMatrixFromSeed(seed=1, dimension=4, projection_dim=2)", 4);
    assert_close(&enc.projection_matrix(0), &want, 0.0, "AMS 4x2");
    let enc = FdeEncoder::new(params(8, 2, 1, Projection::CountSketch { d_proj: 3 }, true)).unwrap();
    let want = matrix_after("AMSProjectionMatrixFromSeed(seed=1, dimension=8, projection_dim=3)", 8);
    assert_close(&enc.projection_matrix(0), &want, 0.0, "AMS 8x3");

    let input: Vec<f32> = (1..=8).map(|v| v as f32).collect();
    let want = numbers_after("ApplyCountSketchToVector([1..8], final_dimension=3, seed=1)");
    assert_close(&apply_count_sketch(&input, 3, 1).unwrap(), &want, 0.0, "count sketch");
}

fn q_and_p() -> (Vec<f32>, Vec<f32>) {
    (numbers_after("Q (3 points, row-major)"), numbers_after("P (5 points, row-major)"))
}

fn encode_pair(p: FdeParams) -> (Vec<f32>, Vec<f32>) {
    let (q, d) = q_and_p();
    let enc = FdeEncoder::new(p).unwrap();
    let q = enc.encode_query(&TokenMatrix::new(&q, 4).unwrap()).unwrap();
    let d = enc.encode_document(&TokenMatrix::new(&d, 4).unwrap()).unwrap();
    (q, d)
}

#[test]
fn case_a_identity_projection() {
    let section = GOLDEN.find("-- Case A").unwrap();
    let local = |label: &str| {
        let at = GOLDEN[section..].find(label).unwrap() + section;
        let open = GOLDEN[at..].find('[').unwrap() + at;
        let close = GOLDEN[open..].find(']').unwrap() + open;
        GOLDEN[open + 1..close].split(',').map(|v| v.trim().parse::<f32>().unwrap()).collect::<Vec<_>>()
    };
    // The printed per-repetition SimHash matrices are the first two columns of each seed's draw.
    let enc = FdeEncoder::new(params(4, 2, 2, Projection::Identity, false)).unwrap();
    assert_close(&enc.simhash_matrix(0), &matrix_after("SimHash rep0 (seed 1) 4x2", 4), 1e-7, "rep0");
    assert_close(&enc.simhash_matrix(1), &matrix_after("SimHash rep1 (seed 2) 4x2", 4), 1e-7, "rep1");

    let (q, d_nofill) = encode_pair(params(4, 2, 2, Projection::Identity, false));
    let (_, d_fill) = encode_pair(params(4, 2, 2, Projection::Identity, true));
    assert_close(&q, &local("query FDE (SUM)"), 1e-6, "A query");
    assert_close(&d_nofill, &local("doc FDE (AVERAGE, fill_empty_partitions=false)"), 1e-6, "A doc no fill");
    assert_close(&d_fill, &local("doc FDE (AVERAGE, fill_empty_partitions=true)"), 1e-6, "A doc fill");
    assert!((dot(&q, &d_nofill) - scalar_after("<qFDE,dFDE(no fill)> =")).abs() < 1e-5);
    assert!((dot(&q, &d_fill) - scalar_after("<qFDE,dFDE(fill)> =")).abs() < 1e-5);
}

/// The list after `label`, searched from the start of section `section`.
fn in_section(section: &str, label: &str) -> Vec<f32> {
    let s = GOLDEN.find(section).unwrap_or_else(|| panic!("{section}"));
    let at = GOLDEN[s..].find(label).unwrap_or_else(|| panic!("{label}")) + s;
    let open = GOLDEN[at..].find('[').unwrap() + at;
    let close = GOLDEN[open..].find(']').unwrap() + open;
    GOLDEN[open + 1..close].split(',').map(|v| v.trim().parse::<f32>().unwrap()).collect()
}

#[test]
fn case_b_eight_buckets_with_fill() {
    let (q, d) = encode_pair(params(4, 3, 2, Projection::Identity, true));
    assert_close(&q, &in_section("-- Case B", "query FDE (len 64)"), 1e-6, "B query");
    assert_close(&d, &in_section("-- Case B", "doc FDE (fill) (len 64)"), 1e-6, "B doc");
    let s = GOLDEN.find("-- Case B").unwrap();
    let want: f64 = GOLDEN[s..].split("<q,d> = ").nth(1).unwrap().lines().next().unwrap().trim().parse().unwrap();
    assert!((dot(&q, &d) - want).abs() < 1e-5);
}

#[test]
fn case_c_count_sketch_projection() {
    let (q, d) = encode_pair(params(4, 2, 2, Projection::CountSketch { d_proj: 2 }, true));
    assert_close(&q, &in_section("-- Case C", "query FDE (len 16)"), 1e-6, "C query");
    assert_close(&d, &in_section("-- Case C", "doc FDE (fill) (len 16)"), 1e-6, "C doc");
}

#[test]
fn case_d_final_projection() {
    let mut p = params(4, 2, 2, Projection::Identity, true);
    p.final_dim = Some(8);
    let (q, d) = encode_pair(p);
    assert_close(&q, &in_section("-- Case D", "query FDE (len 8)"), 1e-6, "D query");
    assert_close(&d, &in_section("-- Case D", "doc FDE (fill) (len 8)"), 1e-6, "D doc");
}

#[test]
fn case_e_single_partition() {
    let (q, d) = encode_pair(params(4, 0, 1, Projection::Identity, true));
    assert_close(&q, &in_section("-- Case E", "query FDE (len 4)"), 1e-6, "E query");
    assert_close(&d, &in_section("-- Case E", "doc FDE (len 4)"), 1e-6, "E doc");
}

#[test]
fn case_i_empty_inputs_are_rejected() {
    // The reference returns zeros or NaN for empty point clouds; quiverdb refuses them.
    let err = TokenMatrix::new(&[], 4).unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");
}

/// Case G/H inputs: `sin(0.37 (i+1)(j+1) + phase)` in double, cast to float, rows L2-normalised
/// by multiplying with `float(1 / sqrt(sum of squares in double))`.
fn sine_cloud(n: usize, phase: f64) -> Vec<f32> {
    let mut out = Vec::with_capacity(n * 128);
    for i in 0..n {
        let row: Vec<f32> = (0..128).map(|j| (0.37 * ((i + 1) * (j + 1)) as f64 + phase).sin() as f32).collect();
        let norm = row.iter().map(|&x| x as f64 * x as f64).sum::<f64>();
        let scale = (1.0 / norm.sqrt()) as f32;
        out.extend(row.iter().map(|x| x * scale));
    }
    out
}

struct Summary {
    len: usize,
    sum: f64,
    sumsq: f64,
    nonzeros: usize,
    first8: Vec<f32>,
}

fn summary_after(section: &str, label: &str) -> Summary {
    let s = GOLDEN.find(section).unwrap();
    let at = GOLDEN[s..].find(label).unwrap() + s;
    let line = GOLDEN[at..].lines().next().unwrap();
    let field = |name: &str| line.split(name).nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    let open = line.find('[').unwrap();
    let close = line.find(']').unwrap();
    Summary {
        len: field("len=").parse().unwrap(),
        sum: field("sum=").parse().unwrap(),
        sumsq: field("sumsq=").parse().unwrap(),
        nonzeros: field("nonzeros=").parse().unwrap(),
        first8: line[open + 1..close].split(',').map(|v| v.trim().parse().unwrap()).collect(),
    }
}

fn check_summary(got: &[f32], want: &Summary, what: &str) {
    let sum: f64 = got.iter().map(|&v| v as f64).sum();
    let sumsq: f64 = got.iter().map(|&v| v as f64 * v as f64).sum();
    let nonzeros = got.iter().filter(|&&v| v != 0.0).count();
    assert_eq!(got.len(), want.len, "{what} len");
    assert!((sum - want.sum).abs() <= 1e-4 * want.sum.abs().max(1.0), "{what} sum {sum} vs {}", want.sum);
    assert!((sumsq - want.sumsq).abs() <= 1e-4 * want.sumsq, "{what} sumsq {sumsq} vs {}", want.sumsq);
    assert_eq!(nonzeros, want.nonzeros, "{what} nonzeros");
    assert_close(&got[..8], &want.first8, 2e-6, what);
}

#[test]
fn cases_g_and_h_paper_scale_match_the_reference_bit_for_bit_rng() {
    let q = sine_cloud(32, 1.0);
    let d = sine_cloud(80, 2.0);
    let qm = TokenMatrix::new(&q, 128).unwrap();
    let dm = TokenMatrix::new(&d, 128).unwrap();
    let chamfer = quiverdb::encode::maxsim::maxsim_reference(&qm, &dm).unwrap() as f64;
    assert!((chamfer - scalar_after("== Paper-scale case G: d=128, R=20, k_sim=5, AMS d_proj=32 (d_FDE=20480 = paper Table 2 (20,5,32)), seed=1 ==\ninputs: q_i[j] = sin(0.37*(i+1)*(j+1)+1), p_i[j] = sin(0.37*(i+1)*(j+1)+2) computed in double, cast to float, then each row L2-normalised (float mult by float(1/sqrt(sum sq in double))); |Q|=32, |P|=80, i,j 0-based\nChamfer(Q,P) =")).abs() < 1e-4);

    for (section, d_proj) in [("== Paper-scale case G", 32u32), ("== Case H", 16)] {
        let enc = FdeEncoder::new(params(128, 5, 20, Projection::CountSketch { d_proj }, true)).unwrap();
        let fq = enc.encode_query(&qm).unwrap();
        let fd = enc.encode_document(&dm).unwrap();
        check_summary(&fq, &summary_after(section, "query FDE:"), "query");
        check_summary(&fd, &summary_after(section, "doc FDE (fill):"), "doc fill");
        let s = GOLDEN.find(section).unwrap();
        let want: f64 =
            GOLDEN[s..].split("<q,d_fill> = ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
        assert!((dot(&fq, &fd) - want).abs() < 1e-3, "{section}: {} vs {want}", dot(&fq, &fd));
        if d_proj == 32 {
            let nofill = FdeEncoder::new(params(128, 5, 20, Projection::CountSketch { d_proj }, false)).unwrap();
            check_summary(
                &nofill.encode_document(&dm).unwrap(),
                &summary_after(section, "doc FDE (no fill):"),
                "doc no fill",
            );
        }
    }
}
