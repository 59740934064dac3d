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

#[test]
fn inspect_describes_a_segment_and_reports_corruption() {
    let dir = std::env::temp_dir().join(format!("quiver-cli-inspect-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = quiver().args(["demo", "--docs", "200", "--queries", "3", "--json", "--dir"]).arg(&dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let segment = dir.join("collection/segments/seg-0000000000000001.qseg");

    let out = quiver().arg("inspect").arg(&segment).args(["--json", "--doc", "0"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["documents"], 200);
    assert_eq!(report["verify"], "ok");
    assert_eq!(report["pq"]["subspaces"], 1280);
    assert_eq!(report["doc"]["id"], 0);
    assert!(report["graph"].is_null(), "200 documents are below the graph threshold");

    // Damage one byte in the middle of the token section: inspect exits 1 and names the section.
    let tokens = report["sections"].as_array().unwrap().iter().find(|s| s["kind"] == "tokens").unwrap();
    let at = (tokens["offset"].as_u64().unwrap() + tokens["length"].as_u64().unwrap() / 2) as usize;
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[at] ^= 0x01;
    let bad = dir.join("bad.qseg");
    std::fs::write(&bad, &bytes).unwrap();
    let out = quiver().arg("inspect").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tokens") && err.contains("checksum"), "{err}");

    // A file that is not a segment at all.
    std::fs::write(&bad, b"not a segment").unwrap();
    let out = quiver().arg("inspect").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.qseg"));
    std::fs::remove_dir_all(&dir).unwrap();
}
