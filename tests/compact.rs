//! `wisp compact`: days with many overlapping files rewritten into few `ts`-sorted files —
//! lossless (every row of every table, byte for byte), atomic, naming the ingest runs it holds,
//! and repaired after a crash.

mod common;
use arrow::array::{Array, AsArray, RecordBatch};
use common::*;
use wisp::gen::{generate, GenOptions, GenOutput, Profile};
use wisp::lake::compact::{self, CompactOptions};
use wisp::lake::{Lake, WriteLock, ALL_TABLES};

fn t(s: &str) -> chrono::DateTime<chrono::Utc> {
    wisp::time::parse_utc(s).unwrap()
}

/// Every row of every table, in `_key` order (one batch per table).
async fn snapshot(lake_dir: &std::path::Path) -> Vec<(String, Option<RecordBatch>)> {
    let mut out = Vec::new();
    for tb in ALL_TABLES {
        let b = query(lake_dir, &format!("SELECT * FROM {} ORDER BY _key, ts", tb.name())).await;
        let b = (!b.is_empty()).then(|| arrow::compute::concat_batches(&b[0].schema(), &b).unwrap());
        out.push((tb.name().to_string(), b));
    }
    out
}

fn day_files(lake_dir: &std::path::Path) -> Vec<String> {
    files_under(lake_dir).into_iter().filter(|f| f.ends_with(".parquet") && !f.starts_with("_")).collect()
}

/// A sign-in file's columns of unique values (times, keys, ids, the raw record) are written without
/// a dictionary, its repeating ones (category, principal) with one.
async fn dictionaries_where_values_repeat(lake_dir: &std::path::Path, file: &str) {
    let lake = Lake::open_existing(&lake_dir.display().to_string()).unwrap();
    let md = compact::footer(&lake, &object_store::path::Path::from(file)).await.unwrap();
    for rg in md.row_groups() {
        for c in rg.columns() {
            let name = c.column_path().string();
            let dict = c.dictionary_page_offset().is_some();
            match name.as_str() {
                "ts" | "_key" | "id" | "raw" | "correlation_id" | "unique_token_id" => {
                    assert!(!dict, "{file}: {name} has a dictionary")
                }
                "category" | "service_principal_id" | "app_id" => assert!(dict, "{file}: {name} has no dictionary"),
                _ => {}
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_is_lossless_sorted_atomic_and_names_its_sources() {
    // Two days of a generated tenant, ingested in three runs: every day of every busy table then
    // has three files whose times overlap.
    let out = tmp("compact-gen");
    let o = GenOptions {
        profile: Profile::Small,
        days: 2,
        seed: 5,
        output: GenOutput::Raw,
        out: out.clone(),
        end: t("2026-11-20T00:00:00Z"),
        keep_raw: true,
        gzip: false,
        progress: false,
        threads: 0,
    };
    let h = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || generate(&o, h)).await.unwrap().unwrap();
    let raw: Vec<String> =
        files_under(&out.join("raw")).into_iter().map(|f| out.join("raw").join(f).display().to_string()).collect();
    assert!(raw.len() >= 6, "{raw:?}");
    let lake_dir = tmp("compact-lake");
    let mut runs = Vec::new();
    for part in 0..3 {
        let inputs: Vec<String> =
            raw.iter().enumerate().filter(|(i, _)| i % 3 == part).map(|(_, f)| f.clone()).collect();
        ingest_into(&lake_dir, opts(inputs)).await;
        let now: std::collections::BTreeSet<String> =
            day_files(&lake_dir).iter().filter_map(|f| compact::ingest_run(f).map(str::to_string)).collect();
        runs = now.into_iter().collect();
    }
    assert_eq!(runs.len(), 3, "three ingest runs: {runs:?}");
    let before = snapshot(&lake_dir).await;
    let files_before = day_files(&lake_dir);
    let signin_days: std::collections::BTreeSet<&str> =
        files_before.iter().filter(|f| f.starts_with("signins/")).map(|f| f.split('/').nth(1).unwrap()).collect();
    // What each (table, day) folder holds: per ingest run, the ts range of its file(s).
    let mut expected: std::collections::BTreeMap<String, Vec<compact::Source>> = Default::default();
    {
        let lake = Lake::open_existing(&lake_dir.display().to_string()).unwrap();
        let mut by: std::collections::BTreeMap<String, std::collections::BTreeMap<String, (i64, i64)>> =
            Default::default();
        for f in &files_before {
            let md = compact::footer(&lake, &object_store::path::Path::from(f.as_str())).await.unwrap();
            let (lo, hi) = compact::ts_range(&md).unwrap();
            let e = by.entry(f.rsplit_once('/').unwrap().0.to_string()).or_default();
            let r = e.entry(compact::ingest_run(f).unwrap().to_string()).or_insert((lo, hi));
            *r = (r.0.min(lo), r.1.max(hi));
        }
        for (dir, runs) in by {
            expected.insert(dir, runs.into_iter().map(|(run, (lo, hi))| compact::Source { run, lo, hi }).collect());
        }
    }
    for f in files_before.iter().filter(|f| f.starts_with("signins/")) {
        dictionaries_where_values_repeat(&lake_dir, f).await;
    }
    let multi = files_before.iter().filter(|f| f.starts_with("signins/")).count();
    assert!(multi > signin_days.len(), "several files per sign-in day: {files_before:?}");

    // A staging folder of a compaction in progress is not read.
    let lake = Lake::open_existing(&lake_dir.display().to_string()).unwrap();
    let some = files_before.iter().find(|f| f.starts_with("signins/")).unwrap();
    let staging = lake_dir.join("signins/_compact-2026-11-19-test");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::copy(lake_dir.join(some), staging.join("x-c00001.parquet")).unwrap();
    assert_eq!(snapshot(&lake_dir).await, before, "a staging folder is invisible to queries");

    // Compact (the caller holds the write lock; a crash's staging folder is removed first).
    let lock = WriteLock::acquire(&lake, "test").unwrap();
    assert_eq!(compact::remove_staging_folders(&lake), 1);
    assert!(!staging.exists());
    let done = compact::compact(&lake, &CompactOptions::default()).await.unwrap();
    drop(lock);
    assert!(!done.is_empty());
    for d in &done {
        assert!(d.files_before >= 2, "{d:?}");
        if d.table == "signins" {
            // One file per category and outcome (failures apart): rules of one category skip the
            // others, rules of failures skip the successes and the other way round.
            let b = query(
                &lake_dir,
                &format!(
                    "SELECT count(*) FROM (SELECT DISTINCT category, coalesce(error_code, 0) <> 0 FROM signins \
                     WHERE day = '{}')",
                    d.day
                ),
            )
            .await;
            let n = b[0].column(0).as_primitive::<arrow::datatypes::Int64Type>().value(0);
            assert_eq!(d.files_after as i64, n, "{d:?}");
        } else {
            assert_eq!(d.files_after, 1, "{d:?}");
        }
    }

    // Every row of every table, unchanged.
    let after = snapshot(&lake_dir).await;
    assert_eq!(after.len(), before.len());
    for ((name, a), (_, b)) in after.iter().zip(&before) {
        assert_eq!(a, b, "{name}: rows changed by compaction");
    }

    // The compacted files: sorted by ts, row groups within the bound, and as sources exactly the
    // runs of the files they replaced, each with the ts range of its rows in that day.
    let files_after = day_files(&lake_dir);
    let mut failure_files = 0;
    for f in files_after.iter().filter(|f| compact::is_compacted(f)) {
        let path = object_store::path::Path::from(f.as_str());
        let md = compact::footer(&lake, &path).await.unwrap();
        assert!(md.row_groups().iter().all(|rg| rg.num_rows() as usize <= compact::ROW_GROUP_ROWS));
        if f.starts_with("signins/") {
            dictionaries_where_values_repeat(&lake_dir, f).await;
        }
        let dir = f.rsplit_once('/').unwrap().0;
        let got = compact::sources(f, &md).unwrap();
        let want = expected.get(dir).unwrap_or_else(|| panic!("{f}: no files before"));
        assert_eq!(&got, want, "{f}: sources");
        // The file itself: sorted by ts; a sign-in file holds one category, and failures only or
        // none.
        let table = f.split('/').next().unwrap();
        let ctx = datafusion::prelude::SessionContext::new();
        let file = lake_dir.join(f).display().to_string();
        let b = ctx.read_parquet(file, Default::default()).await.unwrap().collect().await.unwrap();
        let ts: Vec<i64> = b
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<arrow::datatypes::TimestampMicrosecondType>().values().to_vec())
            .collect();
        assert!(!ts.is_empty() && ts.windows(2).all(|w| w[0] <= w[1]), "{f}: not sorted by ts");
        if table == "signins" {
            let cats: std::collections::BTreeSet<Option<String>> = b
                .iter()
                .flat_map(|b| {
                    let c =
                        arrow::compute::cast(b.column_by_name("category").unwrap(), &arrow::datatypes::DataType::Utf8)
                            .unwrap();
                    let c = c.as_string::<i32>().clone();
                    (0..c.len()).map(|i| (!c.is_null(i)).then(|| c.value(i).to_string())).collect::<Vec<_>>()
                })
                .collect();
            assert_eq!(cats.len(), 1, "{f}: {cats:?}");
            let failed: std::collections::BTreeSet<bool> = b
                .iter()
                .flat_map(|b| {
                    let e = b.column_by_name("error_code").unwrap().as_primitive::<arrow::datatypes::Int64Type>();
                    (0..e.len()).map(|i| e.is_valid(i) && e.value(i) != 0).collect::<Vec<_>>()
                })
                .collect();
            assert_eq!(failed.len(), 1, "{f}: failures and successes in one file");
            failure_files += usize::from(failed.contains(&true));
        }
    }
    assert!(failure_files > 0, "the tenant's failed sign-ins have files of their own");
    let others = |fs: &[String]| fs.iter().filter(|f| !f.starts_with("signins/")).count();
    assert!(others(&files_after) <= others(&files_before), "one file per day");
    assert!(files_after.iter().filter(|f| f.starts_with("signins/")).all(|f| compact::is_compacted(f)));

    // Compacting again does nothing (every day is compacted); forced, it rewrites and keeps the
    // sources (read from the compacted files themselves).
    let lock = WriteLock::acquire(&lake, "test").unwrap();
    assert!(compact::compact(&lake, &CompactOptions::default()).await.unwrap().is_empty());
    let once_more =
        CompactOptions { min_files: 1, force: true, tables: vec![wisp::lake::Table::Signins], ..Default::default() };
    let again = compact::compact(&lake, &once_more).await.unwrap();
    drop(lock);
    assert_eq!(again.len(), signin_days.len());
    let f = day_files(&lake_dir).into_iter().find(|f| f.starts_with("signins/")).unwrap();
    let md = compact::footer(&lake, &object_store::path::Path::from(f.as_str())).await.unwrap();
    let runs_now: Vec<String> = compact::sources(&f, &md).unwrap().into_iter().map(|s| s.run).collect();
    assert!(runs_now.iter().all(|r| runs.contains(r)) && !runs_now.is_empty(), "{runs_now:?}");
    assert_eq!(snapshot(&lake_dir).await, before);

    // Ingest still de-duplicates against compacted files: a copy of an input under a new name
    // (not in the manifest) adds nothing.
    let copy = out.join("again.json");
    let first = raw.iter().find(|f| f.contains("SignIn") || f.contains("signin")).unwrap_or(&raw[0]);
    std::fs::copy(first, &copy).unwrap();
    let s = ingest_into(&lake_dir, opts(vec![copy.display().to_string()])).await;
    assert!(s.read > 0 && s.written_total() == 0 && s.duplicates == s.read, "{s:?}");
    assert_eq!(snapshot(&lake_dir).await, before);

    // Re-enrichment rewrites compacted files in place and keeps what their footers say (the
    // sources the scheduler reads) and their row groups.
    let compacted_sources = || async {
        let mut m = std::collections::BTreeMap::new();
        for f in day_files(&lake_dir).into_iter().filter(|f| compact::is_compacted(f)) {
            let md = compact::footer(&lake, &object_store::path::Path::from(f.as_str())).await.unwrap();
            assert!(md.row_groups().iter().all(|rg| rg.num_rows() as usize <= compact::ROW_GROUP_ROWS));
            m.insert(f.clone(), compact::sources(&f, &md).unwrap());
        }
        m
    };
    let sources_before = compacted_sources().await;
    let asns = "SELECT count(source_asn) AS n FROM signins";
    let asn_before = query_text(&lake_dir, asns).await;
    let mut re = opts(vec![]);
    re.reenrich = true;
    re.asn_db = Some(out.join("asn.csv"));
    ingest_into(&lake_dir, re).await;
    assert_ne!(query_text(&lake_dir, asns).await, asn_before, "the re-enrichment changed rows");
    assert_eq!(compacted_sources().await, sources_before);
    let _ = std::fs::remove_dir_all(&lake_dir);
    let _ = std::fs::remove_dir_all(&out);
}
