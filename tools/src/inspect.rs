//! `quiver inspect SEGMENT_FILE`: what a segment holds and whether every checksum is right.
//! Exit code 1 when the file cannot be opened or fails verification (the report says where).

use std::path::PathBuf;

use quiverdb::encode::simd::PQ_CENTROIDS;
use quiverdb::graph::Neighbors;
use quiverdb::segment::SegmentReader;
use quiverdb::{DocTokens, Projection};
use serde_json::{json, Value};

/// Arguments of `quiver inspect`.
#[derive(clap::Args)]
pub struct Args {
    /// A segment file (`seg-<id>.qseg`).
    segment: PathBuf,
    /// Also describe document N (ordinal): tokens, payload, graph neighbours.
    #[arg(long)]
    doc: Option<usize>,
    /// Print one JSON object instead of the report.
    #[arg(long)]
    json: bool,
}

fn stats(values: &[f64]) -> Value {
    if values.is_empty() {
        return json!(null);
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    json!({"min": sorted[0], "p50": sorted[sorted.len() / 2], "mean": mean, "max": sorted[sorted.len() - 1]})
}

fn token_norms(tokens: DocTokens<'_>, dim: usize) -> Vec<f64> {
    tokens
        .to_f32_vec()
        .unwrap_or_default()
        .chunks(dim)
        .map(|t| t.iter().map(|x| (*x as f64) * (*x as f64)).sum::<f64>().sqrt())
        .collect()
}

pub fn run(args: Args) -> Result<(), String> {
    let segment = SegmentReader::open(&args.segment).map_err(|e| e.to_string())?;
    let verified = segment.verify();
    let n = segment.doc_count();
    let p = segment.fde_params();
    let projection = match p.projection {
        Projection::Identity => json!({"kind": "identity"}),
        Projection::CountSketch { d_proj } => json!({"kind": "count_sketch", "d_proj": d_proj}),
        Projection::DenseSign { d_proj } => json!({"kind": "dense_sign", "d_proj": d_proj}),
    };
    let tokens_per_doc: Vec<f64> =
        (0..n).map(|i| (segment.token_range(i).end - segment.token_range(i).start) as f64).collect();
    let m = segment.pq_subspaces();
    let codes = segment.pq_codes();
    let distinct: Vec<f64> = (0..m)
        .map(|s| {
            let mut used = [false; PQ_CENTROIDS];
            codes.chunks(m).for_each(|c| used[c[s] as usize] = true);
            used.iter().filter(|u| **u).count() as f64
        })
        .collect();
    let codebook = segment.pq_codebook().ok();
    let centroid_norms: Vec<f64> = codebook
        .as_ref()
        .map(|cb| {
            cb.centroids()
                .chunks(cb.sub_dim())
                .map(|c| c.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt())
                .collect()
        })
        .unwrap_or_default();
    let graph = segment.graph_header().map(|h| {
        let view = segment.graph().expect("header implies a graph");
        let mut histogram = vec![0u64; h.max_degree as usize + 1];
        let mut scratch = Vec::new();
        let mut bad = None;
        for node in 0..n as u32 {
            scratch.clear();
            match view.neighbors_into(node, &mut scratch) {
                Ok(()) => histogram[scratch.len()] += 1,
                Err(e) => {
                    bad.get_or_insert(e.to_string());
                }
            }
        }
        let mean = histogram.iter().enumerate().map(|(d, c)| d as f64 * *c as f64).sum::<f64>() / n as f64;
        json!({"max_degree": h.max_degree, "entry_point": h.entry_point, "build_dim": h.build_dim,
               "build_list": h.build_list, "alpha": h.alpha, "mean_degree": mean,
               "degree_histogram": histogram, "error": bad})
    });
    let token_codebook = segment.token_codebook().map(|b| {
        let mut used = vec![false; b.centroid_count()];
        let mut list_lengths = Vec::new();
        for c in 0..b.centroid_count() {
            list_lengths.push(segment.postings(c as u16).len() as f64);
        }
        for i in 0..n {
            for &c in segment.token_centroid_ids(i).unwrap_or(&[]) {
                if let Some(u) = used.get_mut(c as usize) {
                    *u = true;
                }
            }
        }
        json!({"centroids": b.centroid_count(), "residual_bits": b.bits(),
               "residual_bytes_per_token": b.residual_bytes(),
               "centroids_used": used.iter().filter(|u| **u).count(),
               "postings": segment.has_postings(), "postings_list_length": stats(&list_lengths)})
    });
    // Every byte that exists for the tokens: the token section, offsets, centroid ids, the token
    // codebook and the inverted lists, over the stored token count.
    let token_section_kinds = ["tokens", "token_offsets", "token_codes", "token_centroids", "centroid_postings"];
    let token_bytes: u64 =
        segment.sections().iter().filter(|s| token_section_kinds.contains(&s.kind.name())).map(|s| s.length).sum();
    let token_bytes_per_token = token_bytes as f64 / segment.token_rows().max(1) as f64;
    let sections: Vec<Value> = segment
        .sections()
        .iter()
        .map(|s| json!({"kind": s.kind.name(), "offset": s.offset, "length": s.length, "crc32": format!("{:08x}", s.crc)}))
        .collect();
    let mut report = json!({
        "path": args.segment.display().to_string(),
        "format_version": segment.format_version(),
        "segment_id": segment.segment_id(),
        "documents": n,
        "token_rows": segment.token_rows(),
        "dim": segment.dim(),
        "storage": segment.storage().name(),
        "file_bytes": segment.file_len(),
        "fde": {"k_sim": p.k_sim, "projection": projection, "r_reps": p.r_reps, "fill_empty": p.fill_empty,
                "final_dim": p.final_dim, "seed": p.seed, "fde_dim": p.fde_dim(),
                "fingerprint": format!("{:016x}", segment.fde_fingerprint())},
        "pq": {"subspaces": m, "centroids": PQ_CENTROIDS, "sub_dim": p.fde_dim() / m.max(1),
               "codes_bytes_per_doc": m, "distinct_codes_per_subspace": stats(&distinct),
               "centroid_norms": stats(&centroid_norms)},
        "graph": graph,
        "token_codebook": token_codebook,
        "token_bytes_per_token": token_bytes_per_token,
        "tokens_per_doc": stats(&tokens_per_doc),
        "sections": sections,
        "verify": match &verified { Ok(()) => json!("ok"), Err(e) => json!(e.to_string()) },
    });
    if let Some(doc) = args.doc {
        if doc >= n {
            return Err(format!("{}: --doc {doc} is not one of its {n} documents", args.segment.display()));
        }
        let mut neighbors = Vec::new();
        if let Some(view) = segment.graph() {
            view.neighbors_into(doc as u32, &mut neighbors).map_err(|e| e.to_string())?;
        }
        let payload = segment.payload(doc);
        report["doc"] = json!({
            "ordinal": doc, "id": segment.doc_ids()[doc],
            "tokens": tokens_per_doc[doc], "token_norms": stats(&token_norms(segment.tokens(doc), segment.dim())),
            "payload_bytes": payload.len(), "payload": String::from_utf8_lossy(&payload[..payload.len().min(200)]),
            "graph_neighbors": neighbors.iter().map(|&o| json!({"ordinal": o, "id": segment.doc_ids()[o as usize]})).collect::<Vec<_>>(),
        });
    }
    if args.json {
        println!("{report}");
    } else {
        print_report(&report);
    }
    verified.map_err(|e| format!("verification failed: {e}"))
}

/// `min / p50 / mean / max` of a [`stats`] object, with `digits` decimals.
fn fmt_stats(v: &Value, digits: usize) -> String {
    if v.is_null() {
        return "n/a".into();
    }
    let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
    format!(
        "min {:.digits$} / p50 {:.digits$} / mean {:.digits$} / max {:.digits$}",
        f("min"),
        f("p50"),
        f("mean"),
        f("max")
    )
}

fn print_report(r: &Value) {
    let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
    println!("segment {}", text(&r["path"]));
    println!(
        "  format v{}, segment id {}, {} documents, {} token vectors ({}-d {}), {} bytes",
        r["format_version"],
        r["segment_id"],
        r["documents"],
        r["token_rows"],
        r["dim"],
        text(&r["storage"]),
        r["file_bytes"]
    );
    let f = &r["fde"];
    let projection = match f["projection"]["d_proj"].as_u64() {
        Some(d) => format!("{} to {d}", text(&f["projection"]["kind"])),
        None => text(&f["projection"]["kind"]),
    };
    println!(
        "  FDE: k_sim {}, projection {projection}, r_reps {}, fill_empty {}, final_dim {}, seed {} -> {} dims (fingerprint {})",
        f["k_sim"], f["r_reps"], f["fill_empty"], f["final_dim"], f["seed"], f["fde_dim"], text(&f["fingerprint"])
    );
    let q = &r["pq"];
    println!(
        "  PQ: {} subspaces x {} centroids x {} dims ({} bytes per document)",
        q["subspaces"], q["centroids"], q["sub_dim"], q["codes_bytes_per_doc"]
    );
    println!("      distinct codes used per subspace: {}", fmt_stats(&q["distinct_codes_per_subspace"], 0));
    println!("      centroid norms: {}", fmt_stats(&q["centroid_norms"], 3));
    match &r["graph"] {
        Value::Null => println!("  graph: none (searched by flat ADC scan)"),
        g => {
            println!(
                "  graph: R {}, entry point {}, built over {}-dim vectors with L {} and alpha {:.2}; mean degree {:.2}",
                g["max_degree"],
                g["entry_point"],
                g["build_dim"],
                g["build_list"],
                g["alpha"].as_f64().unwrap_or(0.0),
                g["mean_degree"].as_f64().unwrap_or(0.0)
            );
            let histogram: Vec<String> = g["degree_histogram"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
                .filter(|(_, c)| c.as_u64() != Some(0))
                .map(|(d, c)| format!("{d}:{c}"))
                .collect();
            println!("      degree histogram (degree:nodes) {}", histogram.join(" "));
            if !g["error"].is_null() {
                println!("      damaged record: {}", text(&g["error"]));
            }
        }
    }
    println!("  tokens per document: {}", fmt_stats(&r["tokens_per_doc"], 1));
    println!("  sections:");
    for s in r["sections"].as_array().into_iter().flatten() {
        println!(
            "    {:<16} offset {:>12}  length {:>12}  crc32 {}",
            text(&s["kind"]),
            s["offset"],
            s["length"],
            text(&s["crc32"])
        );
    }
    let d = &r["doc"];
    if !d.is_null() {
        println!(
            "  document ordinal {}: id {}, {} tokens, token norms {}",
            d["ordinal"],
            d["id"],
            d["tokens"],
            fmt_stats(&d["token_norms"], 4)
        );
        println!("    payload ({} bytes): {}", d["payload_bytes"], text(&d["payload"]));
        let neighbors: Vec<String> =
            d["graph_neighbors"].as_array().into_iter().flatten().map(|n| format!("{}", n["id"])).collect();
        println!(
            "    graph neighbours (ids): {}",
            if neighbors.is_empty() { "none".into() } else { neighbors.join(" ") }
        );
    }
    println!("  verify: {}", text(&r["verify"]));
}
