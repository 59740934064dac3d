//! The `quiver` binary, run for real.

use std::process::Command;

fn quiver() -> Command {
    Command::new(env!("CARGO_BIN_EXE_quiver"))
}

#[test]
fn demo_reports_recall_as_json() {
    let out = quiver().args(["demo", "--docs", "300", "--queries", "8", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["n_docs"], 300);
    let recall = line["recall"].as_f64().unwrap();
    assert!(recall >= 0.8, "recall {recall}");
}

#[test]
fn exact_on_a_missing_dataset_fails_with_one_sentence() {
    let out = quiver().args(["exact", "--dataset", "/definitely/not/here"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("quiver: ") && err.contains("/definitely/not/here"), "{err}");
    let usage = quiver().args(["exact"]).output().unwrap();
    assert_eq!(usage.status.code(), Some(2), "usage errors exit 2");
}

#[test]
fn exact_on_the_sample_dataset_reproduces_its_ground_truth() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/scifact-mini");
    if !dir.join("docs.npy").exists() {
        eprintln!("note: {} not found; skipped", dir.display());
        return;
    }
    let out = quiver().args(["exact", "--dataset"]).arg(&dir).args(["--threads", "1"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["recall@10"], 1.0);
    assert_eq!(line["recall@100"], 1.0);
    assert_eq!(line["threads"], 1);
}
