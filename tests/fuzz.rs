//! Randomized inputs built from the real fixtures and our samples: byte flips, truncation at every
//! offset of a record, splices of two records, huge and deeply nested values. Every parser must
//! answer without panicking, and ingest must account for every record it read
//! (`read = written + rejected + duplicates`).
//!
//! `cargo test` runs a bounded number of cases; `WISP_FUZZ_CASES=20000 cargo test --release --test
//! fuzz` (or `scripts/fuzz.sh`) runs longer. `WISP_FUZZ_SEED` changes the seed.

mod common;
use common::*;
use wisp_udfs::testdb::XorShift;

fn cases() -> usize {
    std::env::var("WISP_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(300)
}

fn rng() -> XorShift {
    let seed = std::env::var("WISP_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5eed_f00d_u64);
    eprintln!("fuzz seed {seed} (WISP_FUZZ_SEED), {} cases (WISP_FUZZ_CASES)", cases());
    XorShift(seed | 1)
}

fn below(r: &mut XorShift, n: usize) -> usize {
    (r.next() % n.max(1) as u64) as usize
}

/// Seed inputs: every text fixture (when ../shared/fixtures is there) and our samples.
fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    fn walk(d: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        let mut v: Vec<_> = std::fs::read_dir(d).into_iter().flatten().flatten().map(|e| e.path()).collect();
        v.sort();
        for p in v {
            if p.is_dir() {
                walk(&p, out)
            } else {
                out.push(p)
            }
        }
    }
    if let Some(f) = fixtures() {
        for sub in ["azure", "graph", "o365"] {
            walk(&f.join(sub), &mut files);
        }
    }
    walk(&repo().join("data/samples"), &mut files);
    files
        .into_iter()
        .filter(|p| !p.to_string_lossy().ends_with(".gz"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect()
}

/// One mutated input from the seeds.
fn mutate(r: &mut XorShift, seeds: &[(String, Vec<u8>)]) -> (String, Vec<u8>) {
    let (name, base) = &seeds[below(r, seeds.len())];
    let mut b = base.clone();
    let kind = below(r, 7);
    match kind {
        // Flip a few bytes.
        0 => {
            for _ in 0..1 + below(r, 8) {
                if !b.is_empty() {
                    let i = below(r, b.len());
                    b[i] ^= 1 << below(r, 8);
                }
            }
        }
        // Truncate one record (line) at an offset; keep the lines around it.
        1 => {
            let lines: Vec<&[u8]> = b.split(|&c| c == b'\n').collect();
            let k = below(r, lines.len());
            let cut = below(r, lines[k].len() + 1);
            let mut out = Vec::new();
            for (i, l) in lines.iter().enumerate() {
                out.extend_from_slice(if i == k { &l[..cut] } else { l });
                out.push(b'\n');
            }
            b = out;
        }
        // Truncate the whole file.
        2 => b.truncate(below(r, b.len() + 1)),
        // Splice two records: the head of one and the tail of another.
        3 => {
            let (_, other) = &seeds[below(r, seeds.len())];
            let (i, j) = (below(r, b.len() + 1), below(r, other.len() + 1));
            b.truncate(i);
            b.extend_from_slice(&other[j..]);
        }
        // A huge string value.
        4 => {
            if let Some(q) = b.iter().position(|&c| c == b'"') {
                let huge = "A".repeat(1 << 20);
                b.splice(q + 1..q + 1, huge.into_bytes());
            }
        }
        // Deep nesting inside a record.
        5 => {
            let depth = 2000 + below(r, 20000);
            let deep = format!(
                "{{\"time\":\"2026-01-01T00:00:00Z\",\"category\":\"AuditLogs\",\"properties\":{{\"id\":\"deep\",\"x\":{}{}}}}}\n",
                "[".repeat(depth),
                "]".repeat(depth)
            );
            b.extend_from_slice(deep.as_bytes());
        }
        // Random bytes.
        _ => {
            let n = below(r, 512);
            b = (0..n).map(|_| r.next() as u8).collect();
        }
    }
    (format!("{kind}-{name}"), b)
}

#[tokio::test]
async fn ingest_survives_mutated_exports_and_accounts_for_every_record() {
    let seeds = seeds();
    let mut r = rng();
    let n = cases();
    // Batches of files: each batch one ingest into a fresh lake.
    let per_batch = 100;
    let mut done = 0;
    while done < n {
        let dir = tmp("fuzz-in");
        let k = per_batch.min(n - done);
        for i in 0..k {
            let (name, bytes) = mutate(&mut r, &seeds);
            std::fs::write(dir.join(format!("{i:05}-{name}")), bytes).unwrap();
        }
        let lake = tmp("fuzz-lake");
        // `ingest_into` asserts the balance; a panic anywhere fails the test with the batch's folder.
        let s = ingest_into(&lake, opts(vec![dir.display().to_string()])).await;
        assert_eq!(s.files as usize, k, "{}", dir.display());
        // Every stored row stays queryable.
        let t = query_text(&lake, "SELECT count(*) AS n, min(ts), max(ts) FROM signins").await;
        assert!(t.contains('n'), "{t}");
        done += k;
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&lake);
    }
}

fn random_text(r: &mut XorShift, alphabet: &[u8], max: usize) -> String {
    let n = below(r, max);
    (0..n).map(|_| alphabet[below(r, alphabet.len())] as char).collect()
}

#[test]
fn time_ip_watchlist_and_rule_parsers_never_panic() {
    let mut r = rng();
    let n = cases() * 20;
    let time_chars = b"0123456789-:T Z+./,APMUTCGz";
    let ip_chars = b"0123456789abcdefABCDEF:.[]%/ -";
    for _ in 0..n {
        let t = random_text(&mut r, time_chars, 40);
        if let Some(us) = wisp::time::parse_time(&t) {
            // Parsed times either are in the accepted range or are refused by parse_utc.
            let _ = wisp::time::day_of(us.clamp(wisp::time::MIN_TS_US, wisp::time::MAX_TS_US));
        }
        let _ = wisp::time::parse_utc(&t);
        let _ = wisp::time::parse_duration(&t);
        let ip = random_text(&mut r, ip_chars, 50);
        if let Some(a) = wisp_udfs::ip::parse_ip(&ip) {
            assert_eq!(wisp_udfs::ip::parse_ip(&a.to_string()), Some(a), "{ip}");
        }
        let _ = wisp_udfs::ip::normalize(&ip);
        let _ = wisp_udfs::ranges::parse_range(&ip);
        let _ = wisp_udfs::ranges::parse_cidr(&ip);
    }
    // Watchlist CSVs: mutations of a Sentinel export.
    let base = b"SearchKey,IPOrRange,Description\n10.0.0.0/8,10.0.0.0/8,corp\n192.0.2.1,192.0.2.1,vpn\n\"198.51.100.0-198.51.100.255\",\"198.51.100.0-198.51.100.255\",\"a, b\"\n".to_vec();
    for _ in 0..n / 4 {
        let mut b = base.clone();
        for _ in 0..1 + below(&mut r, 6) {
            let i = below(&mut r, b.len());
            b[i] = r.next() as u8;
        }
        b.truncate(below(&mut r, b.len() + 1).max(b.len() / 2));
        let text = String::from_utf8_lossy(&b);
        let _ = wisp_udfs::watchlist::parse("W", std::path::Path::new("w.csv"), &text);
    }
    // Rule files: mutations of every built-in rule.
    for _ in 0..n / 4 {
        let (f, text) = wisp::rules::BUILTIN[below(&mut r, wisp::rules::BUILTIN.len())];
        let mut b = text.as_bytes().to_vec();
        match below(&mut r, 3) {
            0 => b.truncate(below(&mut r, b.len() + 1)),
            1 => {
                for _ in 0..1 + below(&mut r, 4) {
                    let i = below(&mut r, b.len());
                    b[i] = b" =\"[]{}/*-@\n#x0"[below(&mut r, 15)];
                }
            }
            _ => {
                let i = below(&mut r, b.len());
                b.splice(i..i, b"\n-- @terms\n".iter().copied());
            }
        }
        let _ = wisp::rules::Rule::parse(f, &String::from_utf8_lossy(&b));
    }
}

/// The typed reader of diagnostic-settings sign-ins, Graph activity, Entra audit, Azure activity and
/// resource logs (`formats::typed`) either declines a line or maps it exactly as the general path does:
/// over every line of the real fixtures and our samples, and over mutations of them (flipped
/// bytes, a letter's case changed in a key or value).
#[test]
fn typed_reader_agrees_with_the_general_path() {
    use wisp::ingest::formats::{map_record, typed::detected, Format};
    use wisp::lake::Table;
    let mut lines: Vec<String> = seeds()
        .iter()
        .flat_map(|(_, b)| String::from_utf8_lossy(b).lines().map(str::to_string).collect::<Vec<_>>())
        .filter(|l| l.contains("SignInLogs") || l.contains("MicrosoftGraphActivityLogs"))
        .collect();
    // The Azure activity, resource-log and Office 365 records of the seeds (lines, or an Event
    // Hub envelope's or a list's records), as lines.
    let azure_table = |v: &serde_json::Value| {
        matches!(map_record(v, Format::Auto), Ok(m) if matches!(m.table, Table::AzureActivity | Table::ResourceLogs | Table::O365Audit))
            && (v.get("category").is_some() || v.get("CreationTime").is_some())
    };
    let mut azure = Vec::new();
    for (_, b) in seeds() {
        let text = String::from_utf8_lossy(&b).into_owned();
        let records: Vec<serde_json::Value> = match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(serde_json::Value::Object(o)) if o.contains_key("records") => {
                o["records"].as_array().cloned().unwrap_or_default()
            }
            Ok(v) => vec![v],
            Err(_) => text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect(),
        };
        azure.extend(records.iter().filter(|v| azure_table(v)).map(|v| v.to_string()));
    }

    // The Event Hub sample's records, one per line: the diagnostic-settings form itself (so the
    // test has lines the typed reader takes even where ../shared/fixtures is missing).
    let gz = std::fs::read(repo().join("data/samples/eventhub-ServicePrincipalSignInLogs.json.gz")).unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut text).unwrap();
    let envelope: serde_json::Value = serde_json::from_str(&text).unwrap();
    lines.extend(envelope["records"].as_array().unwrap().iter().map(|r| r.to_string()));
    // A Graph call as diagnostic settings write it (lists as lists, as text, null).
    lines.push(
        r#"{"time":"2026-11-19T10:56:07.5528720Z","resourceId":"/TENANTS/T-1/PROVIDERS/MICROSOFT.AADIAM","operationName":"Microsoft Graph Activity","operationVersion":"v1.0","category":"MicrosoftGraphActivityLogs","tenantId":"t-1","resultSignature":"200","durationMs":12,"callerIpAddress":"2a02:cf40::6fc6","correlationId":"r-1","Level":4,"location":"West Europe","properties":{"timeGenerated":"2026-11-19T10:56:07.1234567Z","location":"West Europe","requestId":"r-1","operationId":"r-1","clientRequestId":"c-1","apiVersion":"v1.0","requestMethod":"GET","responseStatusCode":200,"tenantId":"t-1","durationMs":462,"responseSizeBytes":364,"signInActivityId":"s-1","roles":["Mail.Read","User.Read.All",""],"scopes":null,"wids":"w-1 w-2","ipAddress":"2a02:cf40:0::6fc6","userAgent":"python-requests/2.31","requestUri":"https://graph.microsoft.com/v1.0/users/u-1/messages?$top=1","appId":"app-1","servicePrincipalId":"sp-1","userId":null,"clientAuthMethod":"2","tokenIssuedAt":"2026-11-19T10:51:07Z","identityProvider":"https://sts.windows.net/t-1/"}}"#
            .to_string(),
    );
    let check = |line: &str| -> bool {
        let Some(m) = detected(line) else { return false };
        let v: serde_json::Value = serde_json::from_str(line).expect("the typed reader took valid JSON");
        let g = map_record(&v, Format::Auto).unwrap_or_else(|e| panic!("general path rejects ({e}): {line}"));
        assert_eq!(
            (m.table, m.ts, &m.dedup_id, &m.row, m.ingested_at),
            (g.table, g.ts, &g.dedup_id, &g.row, g.ingested_at),
            "{line}"
        );
        true
    };
    // Every diagnostic-settings sign-in and Graph activity line of the seeds (the others are ECS,
    // Log Analytics, CSV or expected outputs) takes the typed path.
    let diagnostic = lines.iter().filter(|l| l.trim_start().starts_with('{') && l.contains("\"properties\"")).count();
    let took = lines.iter().filter(|l| check(l)).count();
    let graph = lines.iter().filter(|l| l.contains("MicrosoftGraphActivityLogs") && check(l)).count();
    eprintln!(
        "typed reader took {took} of {} sign-in and Graph lines ({diagnostic} in diagnostic-settings form, {graph} Graph)",
        lines.len()
    );
    assert!(took > 0 && took >= diagnostic.saturating_sub(2), "the typed reader declined real records");
    assert!(graph > 0, "the typed reader took no Graph call");
    let azure_took = azure.iter().filter(|l| check(l)).count();
    eprintln!("typed reader took {azure_took} of {} Azure activity, resource-log and O365 records", azure.len());
    assert!(azure_took > 0, "the typed reader took no Azure or O365 record");
    // It declines only what it is meant to: Storage's records (a status and resource type at the
    // top, which only the general path reads), Logic Apps' (no id of their own: the general path
    // hashes the whole record), O365 records with extended properties.
    for line in azure.iter().filter(|l| !check(l)) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let explained = v.get("statusCode").is_some()
            || v.get("category").and_then(|c| c.as_str()) == Some("WorkflowRuntime")
            || v.get("ExtendedProperties").and_then(|p| p.as_array()).is_some_and(|a| !a.is_empty());
        assert!(explained, "the typed reader declined {line}");
    }
    lines.extend(azure);
    let mut r = rng();
    for _ in 0..cases() * 20 {
        let mut b = lines[below(&mut r, lines.len())].clone().into_bytes();
        for _ in 0..1 + below(&mut r, 3) {
            let i = below(&mut r, b.len());
            if below(&mut r, 2) == 0 && b[i].is_ascii_alphabetic() {
                b[i] ^= 0x20; // the letter's case
            } else {
                b[i] ^= 1 << below(&mut r, 8);
            }
        }
        if let Ok(line) = std::str::from_utf8(&b) {
            check(line);
        }
    }
}
