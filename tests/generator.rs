//! The generator's small profile end to end: the ground truth is found, the near misses are not,
//! the raw export path and the direct lake path agree, and output is deterministic for a seed.

mod common;
use common::*;
use wisp::gen::{check_ground_truth, generate, Expectation, GenOptions, GenOutput, Profile};

fn opts(out: &std::path::Path, output: GenOutput) -> GenOptions {
    GenOptions {
        profile: Profile::Small,
        days: 14,
        seed: 7,
        output,
        out: out.to_path_buf(),
        end: chrono::DateTime::parse_from_rfc3339("2026-11-20T00:00:00Z").unwrap().with_timezone(&chrono::Utc),
        keep_raw: false,
        gzip: true,
        progress: false,
        threads: 0,
    }
}

async fn gen(out: &std::path::Path, output: GenOutput) -> wisp::gen::GenReport {
    let o = opts(out, output);
    let h = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || generate(&o, h)).await.unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_profile_ground_truth_raw_and_lake_agree() {
    let out = tmp("gen-lake");
    let rep = gen(&out, GenOutput::Lake).await;
    let ingest = rep.ingest.clone().unwrap();
    assert!(ingest.balanced());
    assert_eq!(ingest.rejected_total(), 0, "{ingest:?}");
    assert!(ingest.written.get("signins").copied().unwrap_or(0) > 40_000, "{ingest:?}");
    assert!(ingest.written.get("resource_logs").copied().unwrap_or(0) > 500, "Key Vault requests: {ingest:?}");
    let truth: Vec<Expectation> =
        serde_json::from_slice(&std::fs::read(out.join("ground_truth.json")).unwrap()).unwrap();
    assert_eq!(truth.len(), 14);
    assert!(truth.iter().any(|e| e.count == 0) && truth.iter().any(|e| e.count == 1));
    let lake = wisp::lake::Lake::open(&out.join("lake").display().to_string()).unwrap();
    let ctx = wisp::session::open(&lake, &Default::default()).await.unwrap();
    let failures = check_ground_truth(&ctx, &truth).await.unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The raw export path: same records, ingested from gzip JSON lines.
    let raw = tmp("gen-raw");
    let rep2 = gen(&raw, GenOutput::Raw).await;
    assert_eq!(rep2.records, rep.records);
    assert_eq!(rep2.by_category, rep.by_category);
    let lake2 = tmp("gen-raw-lake");
    let mut o = common::opts(vec![raw.join("raw").display().to_string()]);
    o.asn_db = Some(raw.join("asn.csv"));
    o.keep_raw = false;
    let s = ingest_into(&lake2, o).await;
    assert_eq!(s.written, ingest.written);
    assert_eq!(s.duplicates, ingest.duplicates);
    let t1 = query_text(
        &out.join("lake"),
        "SELECT count(*) AS n, count(DISTINCT id) AS ids, sum(source_asn) AS asn FROM signins",
    )
    .await;
    let t2 = query_text(&lake2, "SELECT count(*) AS n, count(DISTINCT id) AS ids, sum(source_asn) AS asn FROM signins")
        .await;
    assert_eq!(t1, t2);
    // One mapping thread writes the same lake as several.
    let one = tmp("gen-lake-1");
    let mut o1 = opts(&one, GenOutput::Lake);
    o1.threads = 1;
    let h = tokio::runtime::Handle::current();
    let rep1 = tokio::task::spawn_blocking(move || generate(&o1, h)).await.unwrap().unwrap();
    assert_eq!(rep1.ingest.as_ref().map(|s| (&s.written, s.duplicates)), Some((&ingest.written, ingest.duplicates)));
    for (t, cols) in [
        ("signins", "source_ip, source_asn"),
        ("audit", "source_ip"),
        ("graph_activity", "source_ip, source_asn"),
        ("resource_logs", "caller_ip, source_asn"),
    ] {
        let q = format!("SELECT _key, ts, id, {cols}, day FROM {t} ORDER BY _key, ts");
        assert_eq!(query_text(&one.join("lake"), &q).await, query_text(&out.join("lake"), &q).await, "{t}");
    }
    // Deterministic for a seed.
    let again = tmp("gen-raw-2");
    let rep3 = gen(&again, GenOutput::Raw).await;
    assert_eq!(rep3.by_category, rep2.by_category);
    assert_eq!(
        std::fs::read(again.join("ground_truth.json")).unwrap(),
        std::fs::read(raw.join("ground_truth.json")).unwrap()
    );
}
