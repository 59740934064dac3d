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

fn write_npy_f32(path: &std::path::Path, rows: usize, cols: usize, values: &[f32]) {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, quiverdb::format::npy::encode(quiverdb::format::npy::NpyDtype::F32, &[rows, cols], &bytes))
        .unwrap();
}

/// Unit-norm rows, so a document's own tokens score highest against it (MaxSim = rows).
fn tokens_of(i: usize) -> Vec<f32> {
    let rows = 2 + i % 4;
    let mut v: Vec<f32> = (0..rows * 16).map(|j| (((i * 7919 + j * 104_729) % 2003) as f32 / 1001.5) - 1.0).collect();
    for row in v.chunks_mut(16) {
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        row.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

fn run_ok(args: &[&str]) -> String {
    let out = quiver().args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// create → import (npy, ids, payloads) → import again (resumes, no duplicates) → search → get →
/// delete → flush → stats → compact → verify → wal-dump; then a corrupted segment makes `verify`
/// and `inspect` exit 1 naming the file.
#[test]
fn collection_lifecycle_through_the_cli() {
    let dir = std::env::temp_dir().join(format!("quiver-cli-lifecycle-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let col = dir.join("col");
    let c = col.to_str().unwrap();
    run_ok(&["create", c, "--dim", "16", "--fde", "3,8,4", "--storage", "f32", "--durability", "none"]);

    let n = 60;
    let mut values = Vec::new();
    let mut offsets: Vec<i64> = vec![0];
    for i in 0..n {
        values.extend(tokens_of(i));
        offsets.push((values.len() / 16) as i64);
    }
    write_npy_f32(&dir.join("tokens.npy"), values.len() / 16, 16, &values);
    let off_bytes: Vec<u8> = offsets.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(
        dir.join("offsets.npy"),
        quiverdb::format::npy::encode(quiverdb::format::npy::NpyDtype::I64, &[n + 1], &off_bytes),
    )
    .unwrap();
    std::fs::write(dir.join("ids.txt"), (0..n).map(|i| format!("{}\n", 1000 + i)).collect::<String>()).unwrap();
    std::fs::write(dir.join("meta.jsonl"), (0..n).map(|i| format!("{{\"n\":{i}}}\n")).collect::<String>()).unwrap();
    let import = |extra: &[&str]| {
        let mut args = vec!["import", c, "--npy"];
        let (t, o, i, p) =
            (dir.join("tokens.npy"), dir.join("offsets.npy"), dir.join("ids.txt"), dir.join("meta.jsonl"));
        let owned = [
            t.to_str().unwrap().to_string(),
            o.to_str().unwrap().to_string(),
            i.to_str().unwrap().to_string(),
            p.to_str().unwrap().to_string(),
        ];
        args.push(&owned[0]);
        args.extend(["--offsets", &owned[1], "--ids", &owned[2], "--payloads", &owned[3], "--batch", "16", "--json"]);
        args.extend(extra);
        let v: serde_json::Value = serde_json::from_str(&run_ok(&args)).unwrap();
        v
    };
    let first = import(&[]);
    assert_eq!(first["written"], 60);
    let again = import(&[]);
    assert_eq!((again["written"].as_u64(), again["skipped_existing"].as_u64()), (Some(0), Some(60)), "a rerun resumes");
    assert_eq!(again["documents"], 60);

    write_npy_f32(&dir.join("q.npy"), tokens_of(5).len() / 16, 16, &tokens_of(5));
    let q = dir.join("q.npy");
    let hits: serde_json::Value = serde_json::from_str(&run_ok(&[
        "search",
        c,
        "--query",
        q.to_str().unwrap(),
        "--k",
        "3",
        "--payload",
        "--json",
    ]))
    .unwrap();
    assert_eq!(hits["hits"][0]["id"], 1005);
    assert_eq!(hits["hits"][0]["payload"], "{\"n\":5}");
    // Repeats in one process: the same hits, a warm median and each run's profile.
    let repeated: serde_json::Value = serde_json::from_str(&run_ok(&[
        "search",
        c,
        "--query",
        q.to_str().unwrap(),
        "--k",
        "3",
        "--json",
        "--repeat",
        "3",
        "--profile",
        "--no-prefetch",
    ]))
    .unwrap();
    assert_eq!(repeated["hits"][0]["id"], 1005);
    assert!(repeated["warm_ms"].as_f64().unwrap() > 0.0 && repeated["first_over_warm"].as_f64().unwrap() > 0.0);
    for key in ["profile", "warm_profile"] {
        assert!(repeated[key]["reranked"].as_u64().unwrap() >= 3, "{key}: {}", repeated[key]);
    }
    let doc: serde_json::Value = serde_json::from_str(&run_ok(&["get", c, "1005", "--json"])).unwrap();
    assert_eq!(doc["tokens"], tokens_of(5).len() / 16);
    run_ok(&["delete", c, "1005", "1006"]);
    let missing = quiver().args(["get", c, "1005"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no document 1005"));
    run_ok(&["flush", c]);
    let stats: serde_json::Value = serde_json::from_str(&run_ok(&["stats", c, "--json"])).unwrap();
    assert_eq!(stats["stats"]["documents"], 58);
    run_ok(&["compact", c, "--json"]);
    assert!(run_ok(&["verify", c]).trim_end().ends_with("ok"));
    run_ok(&["wal-dump", c]);
    let human = run_ok(&["stats", c]);
    assert!(human.contains("documents") && human.contains("58"), "{human}");

    // Damage one byte of a segment's token section.
    let segs: Vec<_> = std::fs::read_dir(col.join("segments")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(segs.len(), stats["stats"]["segments"].as_array().unwrap().len());
    let seg = &segs[0];
    let info: serde_json::Value = serde_json::from_str(&run_ok(&["inspect", seg.to_str().unwrap(), "--json"])).unwrap();
    let tokens = info["sections"].as_array().unwrap().iter().find(|s| s["kind"] == "tokens").unwrap();
    let at = (tokens["offset"].as_u64().unwrap() + tokens["length"].as_u64().unwrap() / 2) as usize;
    let mut bytes = std::fs::read(seg).unwrap();
    bytes[at] ^= 0x40;
    std::fs::write(seg, &bytes).unwrap();
    let out = quiver().args(["verify", c]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report = String::from_utf8_lossy(&out.stdout);
    let name = seg.file_name().unwrap().to_str().unwrap();
    assert!(report.contains("PROBLEM") && report.contains(name) && report.contains("checksum"), "{report}");
    let out = quiver().args(["inspect", seg.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    std::fs::remove_dir_all(&dir).unwrap();
}
