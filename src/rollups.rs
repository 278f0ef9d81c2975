//! Rollups: summaries of the lake written once (by compaction) and read by rules where the result
//! is provably the same.
//!
//! A rollup is a source query (`sql/rollups/<name>.sql`: one row per event with `ts`, `day` and
//! key columns) aggregated per key at two grains of each day: `grain` 'hour' (`bucket` = the
//! hour's start) and 'day' (`bucket` = midnight), each row with `n` events, `first_ts` and
//! `last_ts`. A day's rows are stored at `<lake>/_rollups/<name>/day=D/src=<fingerprint>/…parquet`,
//! where the fingerprint hashes the rollup's definition and the exact files (path, size,
//! modification time) its tables held for that day when it was computed. A session registers the
//! view `<name>`: the stored rows of every day whose current files still give that fingerprint,
//! and the source itself for every other day, one row per event (`grain` 'event', `bucket` = its
//! hour, `n` = 1, `first_ts` = `last_ts` = `ts`) — a day ingested, compacted or re-enriched since
//! is read raw, never from a stale summary. So a rule that takes, for whole days of its window,
//! the 'day' rows; for the other whole hours, the 'hour' rows; and 'event' rows of every whole
//! hour, counts each event exactly once; it reads the partial hours at its window's edges from
//! the tables themselves — through the view `<name>_events`, the source, so that both are one
//! definition. A rollup with `times` also keeps, on each 'hour' row, its events' `ts`: a rule whose
//! bounds fall inside hours for each of its rows (a look-back from every change) takes a row whole
//! when `first_ts` and `last_ts` are within them and its events from `times` when it straddles one,
//! with no read of the tables at all. A rollup with `weeks` also keeps one 'week' row per key and
//! ended ISO week (`Rollup::weeks`), read through `<name>_weekly` by ranges of a week or more.

use crate::lake::{Lake, LakeError, Table};
use crate::session::{SessionError, SessionOptions};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use object_store::path::Path as StorePath;
use object_store::ObjectStoreExt;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// A rollup's definition.
#[derive(Debug)]
pub struct Rollup {
    pub name: &'static str,
    /// The tables its source reads (their files make the fingerprint).
    pub tables: &'static [Table],
    /// One row per event: `ts`, `day` and the key columns (and any other columns its rules read
    /// through `<name>_events`; only the keys are summarized).
    pub source: &'static str,
    pub keys: &'static [&'static str],
    /// Whether the rollup also stores, for each 'hour' row, a 'times' row: the same key, bucket
    /// and measures, and `times`, the list of its events' `ts` (sorted), in row groups of
    /// their own after the hours' (so reading 'day' and 'hour' rows does not read them). A rule
    /// whose bounds fall inside hours (a look-back from each event) takes an 'hour' row whole when
    /// its `first_ts` and `last_ts` are inside them and the events of its 'times' row one by one
    /// when it straddles one. `times` is null on 'day' and 'hour' rows, `[ts]` on 'event' rows.
    pub times: bool,
    /// Whether the rollup also summarizes whole ISO weeks (Monday to Sunday, UTC): per key, one
    /// 'week' row (`bucket` = the Monday's midnight) with the week's `n`, `first_ts` and
    /// `last_ts`, stored at `_rollups/<name>_week/day=<Monday>/src=<fingerprint>/` once all seven
    /// days have ended, the fingerprint hashing the seven days' own (a day without files
    /// included). Read through the view `<name>_weekly`: the current weeks' rows and, for every
    /// day no current week covers, the view `<name>`'s. Only for a range of seven days or more
    /// that asks whether a key occurred in it: a week row reaches past at most one end of such a
    /// range, so `first_ts <= end AND last_ts >= start` is exact. Not with `times`.
    pub weeks: bool,
}

/// Every rollup wisp maintains.
pub const ROLLUPS: &[Rollup] = &[
    Rollup {
        name: "sp_activity_rollup",
        tables: &[Table::Signins, Table::Audit, Table::GraphActivity, Table::O365Audit],
        source: include_str!("../sql/rollups/sp_activity_rollup.sql"),
        keys: &["dataset", "action", "service_principal_name", "service_principal_id", "source_ip"],
        times: false,
        weeks: false,
    },
    Rollup {
        name: "sp_failed_signin_rollup",
        tables: &[Table::Signins],
        source: include_str!("../sql/rollups/sp_failed_signin_rollup.sql"),
        keys: &[
            "service_principal_name",
            "source_ip",
            "error_code",
            "resource_display_name",
            "service_principal_id",
            "app_id",
            "failure_reason",
        ],
        times: false,
        weeks: false,
    },
    Rollup {
        name: "sp_signin_rollup",
        tables: &[Table::Signins],
        source: include_str!("../sql/rollups/sp_signin_rollup.sql"),
        keys: &["service_principal_id", "app_id", "service_principal_name", "source_ip"],
        times: true,
        weeks: false,
    },
    Rollup {
        name: "sp_asn_rollup",
        tables: &[Table::Signins],
        source: include_str!("../sql/rollups/sp_asn_rollup.sql"),
        keys: &["service_principal_id", "source_asn"],
        times: false,
        weeks: false,
    },
    Rollup {
        name: "sp_signin_source_rollup",
        tables: &[Table::Signins],
        source: include_str!("../sql/rollups/sp_signin_source_rollup.sql"),
        keys: &["service_principal_id", "source_ip", "source_asn"],
        times: false,
        weeks: false,
    },
    Rollup {
        name: "sp_keyvault_read_rollup",
        tables: &[Table::ResourceLogs],
        source: include_str!("../sql/rollups/sp_keyvault_read_rollup.sql"),
        keys: &["caller_object_id", "vault", "caller_ip", "source_asn"],
        times: false,
        weeks: true,
    },
    Rollup {
        name: "sp_signin_outcome_rollup",
        tables: &[Table::Signins],
        source: include_str!("../sql/rollups/sp_signin_outcome_rollup.sql"),
        keys: &["service_principal_id", "source_ip", "country", "resource_display_name", "succeeded"],
        times: false,
        weeks: false,
    },
    Rollup {
        name: "sp_signin_address_rollup",
        tables: &[Table::Signins],
        source: include_str!("../sql/rollups/sp_signin_address_rollup.sql"),
        keys: &["service_principal_id", "source_ip", "app_id"],
        times: false,
        weeks: false,
    },
];

/// SQL for the start of the UTC `unit` ('hour' or 'day') holding `column`, a UTC microsecond
/// timestamp, typed as it: `date_bin`, integer arithmetic, where `date_trunc` on a timestamp with
/// a time zone converts every value through the zone (0.10 s of CPU per million sign-ins
/// against 0.02; the same values, before 1970 too).
pub(crate) fn floor(column: &str, unit: &str) -> String {
    format!("arrow_cast(date_bin(INTERVAL '1 {unit}', {column}), 'Timestamp(µs, \"UTC\")')")
}

/// The folder of rollups under the lake root.
pub const FOLDER: &str = "_rollups";

/// What refreshing one day of a rollup did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RollupWrite {
    pub rollup: &'static str,
    /// The day, or a week's Monday when `week`.
    pub day: String,
    /// A week's summary (`_rollups/<rollup>_week/`), not a day's.
    pub week: bool,
    pub events: u64,
    pub rows: u64,
    pub seconds: f64,
}

pub(crate) fn store_err(url: &str, e: object_store::Error) -> LakeError {
    LakeError::Store { url: url.to_string(), source: e }
}

fn is_day(d: &str) -> bool {
    chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").is_ok_and(|x| x.format("%Y-%m-%d").to_string() == d)
}

/// `day` (canonical `YYYY-MM-DD`) plus `n` days.
fn plus_days(day: &str, n: i64) -> Option<String> {
    let d = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").ok()?;
    Some((d + chrono::Duration::days(n)).format("%Y-%m-%d").to_string())
}

/// The Monday of the ISO week holding `day` (canonical).
fn monday_of(day: &str) -> Option<String> {
    use chrono::Datelike;
    let d = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").ok()?;
    Some((d - chrono::Duration::days(d.weekday().num_days_from_monday().into())).format("%Y-%m-%d").to_string())
}

/// The first 12 bytes of a hash, in hex: a fingerprint.
pub(crate) fn hex12(h: Sha256) -> String {
    h.finalize().iter().take(12).map(|b| format!("{b:02x}")).collect()
}

/// The stored versions under `_rollups/<folder>/`: day (or week's Monday) → fingerprints with files
/// (normally one).
async fn stored_in(lake: &Lake, folder: &str) -> Result<BTreeMap<String, BTreeSet<String>>, LakeError> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let prefix = StorePath::from(format!("{FOLDER}/{folder}"));
    let mut list = lake.store.list(Some(&prefix));
    while let Some(m) = list.next().await {
        let m = m.map_err(|e| store_err(&format!("{}{FOLDER}/{folder}/", lake.url), e))?;
        let path = m.location.as_ref();
        let mut parts = path.rsplit('/');
        let (Some(name), Some(src), Some(day)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let (Some(src), Some(day)) = (src.strip_prefix("src="), day.strip_prefix("day=")) else { continue };
        if name.ends_with(".parquet") && is_day(day) {
            out.entry(day.to_string()).or_default().insert(src.to_string());
        }
    }
    Ok(out)
}

/// The data files of tables per day (`<table>/day=D/<file>.parquet`, not a compaction's staging
/// folder), each as "path, size, modification time", sorted: what a fingerprint hashes. Listed
/// once per table however many rollups read it.
pub(crate) struct DayFiles(pub(crate) BTreeMap<Table, BTreeMap<String, Vec<String>>>);

impl DayFiles {
    /// Lists each table once, all of them at the same time (an object store's listings are round
    /// trips, a folder's are directory walks on blocking threads).
    pub(crate) async fn list(lake: &Lake, tables: &[Table]) -> Result<DayFiles, LakeError> {
        let unique: BTreeSet<Table> = tables.iter().copied().collect();
        let lists = futures::future::try_join_all(unique.into_iter().map(|t| async move {
            let mut per_day: BTreeMap<String, Vec<String>> = BTreeMap::new();
            let prefix = StorePath::from(t.name());
            let mut list = lake.store.list(Some(&prefix));
            while let Some(m) = list.next().await {
                let m = m.map_err(|e| store_err(&lake.table_url(t), e))?;
                let path = m.location.as_ref();
                let mut parts = path.split('/');
                let (_, Some(dir), Some(name), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
                    continue;
                };
                let Some(day) = dir.strip_prefix("day=").filter(|d| is_day(d)) else { continue };
                if !name.ends_with(".parquet") {
                    continue;
                }
                let modified = m.last_modified.timestamp_nanos_opt().unwrap_or_default();
                per_day.entry(day.to_string()).or_default().push(format!("{path}\t{}\t{modified}", m.size));
            }
            per_day.values_mut().for_each(|l| l.sort());
            Ok::<_, LakeError>((t, per_day))
        }))
        .await?;
        Ok(DayFiles(lists.into_iter().collect()))
    }
}

impl Rollup {
    /// The aggregation of one day of the source, as stored: per (hour, keys) and per (day, keys),
    /// and the 'times' rows when the rollup keeps them, ordered by grain, bucket and keys (so a
    /// window's rows are a few row groups).
    fn aggregate_sql(&self, day: &str) -> String {
        let keys = self.keys.join(", ");
        let (times_agg, no_times, times_rows) = if self.times {
            (
                ", array_agg(ts ORDER BY ts) AS times",
                ", NULL",
                format!("UNION ALL SELECT 'times', bucket, {keys}, n, first_ts, last_ts, times FROM hours "),
            )
        } else {
            ("", "", String::new())
        };
        let (hour, midnight) = (floor("ts", "hour"), floor("bucket", "day"));
        format!(
            "WITH hours AS (SELECT {hour} AS bucket, {keys}, count(*) AS n, min(ts) AS first_ts, \
                                   max(ts) AS last_ts{times_agg} \
                            FROM ({}) AS source WHERE day = '{day}' GROUP BY {hour}, {keys}) \
             SELECT 'hour' AS grain, bucket, {keys}, n, first_ts, last_ts{no_times} FROM hours \
             UNION ALL \
             SELECT 'day', {midnight}, {keys}, sum(n), min(first_ts), max(last_ts){no_times} FROM hours \
             GROUP BY {midnight}, {keys} \
             {times_rows}\
             ORDER BY grain, bucket, {keys}",
            self.source,
        )
    }

    /// The measures after the keys: `n`, `first_ts`, `last_ts` (and `times`).
    fn measures(&self) -> &'static str {
        if self.times {
            "n, first_ts, last_ts, times"
        } else {
            "n, first_ts, last_ts"
        }
    }

    /// Fingerprint of each day that any of the rollup's tables has files for: the definition
    /// and every data file of the day (path, size, modification time).
    pub async fn fingerprints(&self, lake: &Lake) -> Result<BTreeMap<String, String>, LakeError> {
        Ok(self.fingerprints_of(&DayFiles::list(lake, self.tables).await?))
    }

    fn fingerprints_of(&self, files: &DayFiles) -> BTreeMap<String, String> {
        let days: BTreeSet<&String> =
            self.tables.iter().filter_map(|t| files.0.get(t)).flat_map(|per_day| per_day.keys()).collect();
        days.into_iter()
            .map(|day| {
                let mut h = Sha256::new();
                h.update(format!("wisp rollup 1\n{}\n{}\n{}\n", self.name, self.keys.join(","), self.source));
                if self.times {
                    h.update("times rows, sorted\n");
                }
                for t in self.tables {
                    let list = files.0.get(t).and_then(|per_day| per_day.get(day));
                    h.update(format!("{}\n{}\n", t.name(), list.map(|l| l.join("\n")).unwrap_or_default()));
                }
                (day.clone(), hex12(h))
            })
            .collect()
    }

    /// The folder (under `_rollups`) of its weeks' summaries.
    pub fn week_folder(&self) -> String {
        format!("{}_week", self.name)
    }

    /// Fingerprint of each ISO week (by its Monday) holding a day of `days` (the days'
    /// fingerprints, `fingerprints_of`): its seven days' fingerprints, "-" for a day without files.
    /// Empty for a rollup without weeks.
    fn week_fingerprints(&self, days: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        if !self.weeks {
            return BTreeMap::new();
        }
        let mondays: BTreeSet<String> = days.keys().filter_map(|d| monday_of(d)).collect();
        mondays
            .into_iter()
            .map(|monday| {
                let mut h = Sha256::new();
                h.update(format!("wisp rollup week 1\n{}\n", self.name));
                for d in (0..7).filter_map(|i| plus_days(&monday, i)) {
                    h.update(format!("{d}\t{}\n", days.get(&d).map(String::as_str).unwrap_or("-")));
                }
                (monday, hex12(h))
            })
            .collect()
    }

    /// The aggregation of one ISO week, from the view `<name>` (the days' stored 'day' rows, or
    /// the events of a day without a current summary): per key, one 'week' row.
    fn week_sql(&self, monday: &str, sunday: &str) -> String {
        let keys = self.keys.join(", ");
        format!(
            "SELECT 'week' AS grain, arrow_cast(TIMESTAMP '{monday}T00:00:00', 'Timestamp(µs, \"UTC\")') AS bucket, \
                    {keys}, sum(n) AS n, min(first_ts) AS first_ts, max(last_ts) AS last_ts \
             FROM {} WHERE day >= '{monday}' AND day <= '{sunday}' AND grain IN ('day', 'event') \
             GROUP BY {keys} ORDER BY {keys}",
            self.name
        )
    }

    /// The stored days: day → fingerprints with files (normally one).
    pub async fn stored(&self, lake: &Lake) -> Result<BTreeMap<String, BTreeSet<String>>, LakeError> {
        stored_in(lake, self.name).await
    }

    /// The stored files' schema (`aggregate_sql`'s output), from the source's: `grain`, `bucket`
    /// and the times typed as `ts`, the keys as the source types them, counts as BIGINT.
    fn stored_schema(&self, source: &Schema) -> Result<SchemaRef, SessionError> {
        let field = |name: &str| {
            source.field_with_name(name).map(|f| f.data_type().clone()).map_err(|_| LakeError::Write {
                table: "_rollups",
                msg: format!("rollup {}: its source has no column {name}", self.name),
            })
        };
        let ts = field("ts")?;
        let mut fields = vec![Field::new("grain", DataType::Utf8, true), Field::new("bucket", ts.clone(), true)];
        for k in self.keys {
            fields.push(Field::new(*k, field(k)?, true));
        }
        fields.push(Field::new("n", DataType::Int64, true));
        fields.push(Field::new("first_ts", ts.clone(), true));
        fields.push(Field::new("last_ts", ts.clone(), true));
        if self.times {
            fields.push(Field::new("times", DataType::List(Arc::new(Field::new_list_field(ts, true))), true));
        }
        Ok(Arc::new(Schema::new(fields)))
    }
}

/// A day's (or week's) folder of `_rollups/<folder>/`.
fn day_prefix(folder: &str, day: &str) -> StorePath {
    StorePath::from(format!("{FOLDER}/{folder}/day={day}"))
}

/// How long a replaced version of a day stays beside its replacement: a session that checked the
/// fingerprints before the replacement still finds the files its view names.
pub const KEEP_REPLACED: std::time::Duration = std::time::Duration::from_secs(3600);

/// Brings the rollups of the days in `days` (inclusive `YYYY-MM-DD` bounds; all when `None`) up
/// to date. Only days that have ended (UTC) are summarized: today's files change with every
/// ingest, and rules read it from the tables. Each ended day whose stored fingerprint differs
/// from its files' is aggregated again and written (a new `src=` folder, complete before it is
/// visible); the day's other versions are removed once the current one is older than
/// `keep_replaced`; a day whose tables have no files loses its rollup. Readers never mix two
/// versions of a day: the view names the one fingerprint it checked. Then the index of the days
/// each risk detection has versions in (`version_days`), whatever `days` is.
pub async fn refresh(
    lake: &Lake,
    days: Option<&(String, String)>,
    memory_limit: usize,
    keep_replaced: std::time::Duration,
) -> Result<Vec<RollupWrite>, SessionError> {
    let mut out = Vec::new();
    let today = chrono::Utc::now().date_naive().format("%Y-%m-%d").to_string();
    let in_range = |d: &str| d < today.as_str() && days.is_none_or(|(lo, hi)| d >= lo.as_str() && d <= hi.as_str());
    let files = DayFiles::list(lake, &all_tables()).await?;
    let mut ctx = None;
    for r in ROLLUPS {
        let current = r.fingerprints_of(&files);
        let stored = r.stored(lake).await?;
        for step in steps(&current, &stored, in_range) {
            if let Step::Write(day, fp) = &step {
                if ctx.is_none() {
                    let opts = crate::session::SessionOptions { memory_limit, ..Default::default() };
                    ctx = Some(crate::session::open(lake, &opts).await?);
                }
                let ctx = ctx.as_ref().expect("opened above");
                let path = version_path(r.name, day, fp);
                let (events, rows, seconds) = write_rows(lake, ctx, r, &r.aggregate_sql(day), path, "day").await?;
                out.push(RollupWrite { rollup: r.name, day: day.to_string(), week: false, events, rows, seconds });
            }
            let (day, keep) = step.kept();
            remove_others(lake, r.name, day, keep, keep_replaced).await?;
        }
    }
    // Then the weeks whose seven days have all ended and any of them is in range, from the days
    // as now stored: through a session opened after their writes (one opened before reads the
    // days it wrote as events — the same rows, slower).
    let mut ctx = None;
    for r in ROLLUPS.iter().filter(|r| r.weeks) {
        let folder = r.week_folder();
        let current = r.week_fingerprints(&r.fingerprints_of(&files));
        let stored = stored_in(lake, &folder).await?;
        let week_in_range = |monday: &str| {
            plus_days(monday, 6).is_some_and(|sunday| {
                sunday < today && days.is_none_or(|(lo, hi)| sunday.as_str() >= lo.as_str() && monday <= hi.as_str())
            })
        };
        for step in steps(&current, &stored, week_in_range) {
            if let Step::Write(monday, fp) = &step {
                if ctx.is_none() {
                    let opts = crate::session::SessionOptions { memory_limit, ..Default::default() };
                    let opts = opts.for_sql(ROLLUPS.iter().filter(|r| r.weeks).map(|r| r.name));
                    ctx = Some(crate::session::open(lake, &opts).await?);
                }
                let ctx = ctx.as_ref().expect("opened above");
                let sql = r.week_sql(monday, &plus_days(monday, 6).unwrap_or_default());
                let (events, rows, seconds) =
                    write_rows(lake, ctx, r, &sql, version_path(&folder, monday, fp), "week").await?;
                out.push(RollupWrite { rollup: r.name, day: monday.to_string(), week: true, events, rows, seconds });
            }
            let (monday, keep) = step.kept();
            remove_others(lake, &folder, monday, keep, keep_replaced).await?;
        }
    }
    // And the index of the days each risk detection has versions in (the whole lake's).
    out.extend(crate::version_days::refresh(lake, memory_limit, keep_replaced).await?);
    Ok(out)
}

/// What refreshing one day (or week) of a rollup does.
enum Step<'a> {
    /// Write the current version (a new `src=` folder), then remove the others in time.
    Write(&'a String, &'a String),
    /// The current version is stored beside others: remove those in time.
    Keep(&'a String, &'a String),
    /// The day has no files any more: remove every version in time.
    Clear(&'a String),
}

impl<'a> Step<'a> {
    /// The day and the version to keep when removing the others.
    fn kept(&self) -> (&'a str, Option<&'a str>) {
        match self {
            Step::Write(d, fp) | Step::Keep(d, fp) => (d.as_str(), Some(fp.as_str())),
            Step::Clear(d) => (d.as_str(), None),
        }
    }
}

/// The steps of a refresh of the days (or weeks) `in_range`, from their current fingerprints and
/// the stored versions; nothing for one stored as it is and alone.
fn steps<'a>(
    current: &'a BTreeMap<String, String>,
    stored: &'a BTreeMap<String, BTreeSet<String>>,
    in_range: impl Fn(&str) -> bool,
) -> Vec<Step<'a>> {
    let mut out = Vec::new();
    for (day, fp) in current.iter().filter(|(d, _)| in_range(d)) {
        match stored.get(day) {
            Some(s) if s.len() == 1 && s.contains(fp) => {}
            Some(s) if s.contains(fp) => out.push(Step::Keep(day, fp)),
            _ => out.push(Step::Write(day, fp)),
        }
    }
    out.extend(stored.keys().filter(|d| in_range(d) && !current.contains_key(*d)).map(Step::Clear));
    out
}

/// The file of one version of a day (or week): `_rollups/<folder>/day=D/src=<fp>/<fp>.parquet`.
fn version_path(folder: &str, day: &str, fp: &str) -> StorePath {
    day_prefix(folder, day).join(format!("src={fp}").as_str()).join(format!("{fp}.parquet").as_str())
}

/// Writes the rows of `sql` (a day's or a week's aggregation of `r`) to `path`, complete before it
/// is visible; returns the events (the `n` of its `counted` grain's rows), the rows and the
/// seconds it took.
async fn write_rows(
    lake: &Lake,
    ctx: &SessionContext,
    r: &Rollup,
    sql: &str,
    path: StorePath,
    counted: &str,
) -> Result<(u64, u64, f64), SessionError> {
    use parquet::arrow::async_writer::AsyncArrowWriter;
    use parquet::basic::{Compression, ZstdLevel};
    use parquet::file::properties::WriterProperties;
    let started = std::time::Instant::now();
    let df = ctx.sql(sql).await?;
    // The stored schema (as `register` declares it): the aggregation's NULL `times` of 'day' and
    // 'hour' rows is typed by the 'times' rows'.
    let schema = r.stored_schema(ctx.sql(r.source).await?.schema().as_arrow())?;
    let mut stream = df.execute_stream().await?;
    // The 'times' lists are sorted: delta-encoded they take a few bits per sign-in.
    let times = parquet::schema::types::ColumnPath::from(vec!["times".into(), "list".into(), "item".into()]);
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).expect("valid level")))
        .set_max_row_group_row_count(Some(128 * 1024))
        .set_column_dictionary_enabled(times.clone(), false)
        .set_column_encoding(times, parquet::basic::Encoding::DELTA_BINARY_PACKED)
        .build();
    let werr = |e: parquet::errors::ParquetError| LakeError::Write { table: "_rollups", msg: e.to_string() };
    let w = object_store::buffered::BufWriter::new(lake.store.clone(), path.clone());
    let mut w = AsyncArrowWriter::try_new(w, schema.clone(), Some(props)).map_err(werr)?;
    let (mut rows, mut events, mut in_grain) = (0u64, 0u64, None::<String>);
    while let Some(batch) = stream.next().await {
        let batch = cast_to(&batch?, &schema)
            .map_err(|e| LakeError::Write { table: "_rollups", msg: format!("rollup {}: {e}", r.name) })?;
        rows += batch.num_rows() as u64;
        let grain = batch.column_by_name("grain").and_then(|c| c.as_any().downcast_ref::<arrow::array::StringArray>());
        let n = batch.column_by_name("n").and_then(|c| c.as_any().downcast_ref::<arrow::array::Int64Array>());
        let (Some(grain), Some(n)) = (grain, n) else {
            return Err(LakeError::Write {
                table: "_rollups",
                msg: format!("rollup {}: no grain or n column", r.name),
            }
            .into());
        };
        // The events, counted once: in the 'day' rows (a week's in its 'week' rows).
        events +=
            (0..batch.num_rows()).filter(|&i| grain.value(i) == counted).map(|i| n.value(i).max(0) as u64).sum::<u64>();
        // Each grain (in order: 'day', 'hour', 'times') in row groups of its own: a window of
        // whole days reads the 'day' rows without the hours', and the 'times' lists are read only
        // where a rule asks for them.
        let mut start = 0;
        while start < batch.num_rows() {
            let g = grain.value(start);
            let end = (start..batch.num_rows()).find(|&i| grain.value(i) != g).unwrap_or(batch.num_rows());
            if in_grain.as_deref().is_some_and(|cur| cur != g) {
                w.flush().await.map_err(werr)?;
            }
            in_grain = Some(g.to_string());
            w.write(&batch.slice(start, end - start)).await.map_err(werr)?;
            start = end;
        }
    }
    w.close().await.map_err(werr)?;
    Ok((events, rows, started.elapsed().as_secs_f64()))
}

/// `batch`'s columns cast, in order, to the types of `schema`'s fields: a query's rows as a stored
/// file declares them.
pub(crate) fn cast_to(
    batch: &arrow::record_batch::RecordBatch,
    schema: &SchemaRef,
) -> Result<arrow::record_batch::RecordBatch, arrow::error::ArrowError> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| arrow::compute::cast(c, f.data_type()))
        .collect::<Result<Vec<_>, _>>()?;
    arrow::record_batch::RecordBatch::try_new(schema.clone(), columns)
}

/// Removes a day's (or a week's) stored folders of `_rollups/<folder>/` other than `keep`, once
/// `keep` is older than `keep_replaced`.
async fn remove_others(
    lake: &Lake,
    folder: &str,
    day: &str,
    keep: Option<&str>,
    keep_replaced: std::time::Duration,
) -> Result<(), LakeError> {
    let prefix = day_prefix(folder, day);
    let keep = keep.map(|k| format!("{prefix}/src={k}/"));
    let (mut doomed, mut kept_since) = (Vec::new(), None);
    let mut list = lake.store.list(Some(&prefix));
    while let Some(m) = list.next().await {
        let m = m.map_err(|e| store_err(&format!("{}{prefix}", lake.url), e))?;
        if keep.as_ref().is_none_or(|k| !m.location.as_ref().starts_with(k.as_str())) {
            doomed.push(m.location);
        } else {
            kept_since = Some(m.last_modified);
        }
    }
    let replaced_for = kept_since.map(|t| (chrono::Utc::now() - t).to_std().unwrap_or_default());
    if replaced_for.is_some_and(|d| d < keep_replaced) {
        return Ok(());
    }
    for p in doomed {
        lake.store.delete(&p).await.map_err(|e| store_err(&format!("{}{p}", lake.url), e))?;
    }
    if let Some(root) = &lake.local_root {
        // A local store leaves the emptied folders behind.
        for e in std::fs::read_dir(root.join(prefix.as_ref())).into_iter().flatten().flatten() {
            let _ = std::fs::remove_dir(e.path());
        }
        let _ = std::fs::remove_dir(root.join(prefix.as_ref()));
    }
    Ok(())
}

/// The tables any rollup reads.
fn all_tables() -> Vec<Table> {
    tables_of(ROLLUPS.iter())
}

/// The tables the rollups summarize (a table once per rollup over it).
fn tables_of<'a>(rollups: impl IntoIterator<Item = &'a Rollup>) -> Vec<Table> {
    rollups.into_iter().flat_map(|r| r.tables.iter().copied()).collect()
}

fn quoted(items: &[&String]) -> String {
    items.iter().map(|s| format!("'{s}'")).collect::<Vec<_>>().join(", ")
}

/// The days not among `days` (canonical days), as a filter on `day`: before the first, after the
/// last, or one of the calendar days between them that is not among them. The same days as
/// `day NOT IN (…)`, but DataFusion tests a file's partition against a filter by planning the
/// filter anew for every file of every scan, and an `IN` list builds its set each time: a 30-day
/// `NOT IN` over the sign-ins' 210 files was most of a short window's listing time.
fn not_in_days(days: &[&String]) -> String {
    let kept: BTreeSet<&str> = days.iter().map(|d| d.as_str()).collect();
    let (Some(first), Some(last)) = (kept.first(), kept.last()) else { return "TRUE".to_string() };
    let parse = |d: &str| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok();
    let mut gaps = Vec::new();
    let (mut d, end) = (parse(first), parse(last));
    while let (Some(day), Some(end)) = (d, end) {
        if day >= end {
            break;
        }
        let s = day.format("%Y-%m-%d").to_string();
        if !kept.contains(s.as_str()) {
            gaps.push(s);
        }
        d = day.succ_opt();
    }
    let mut out = format!("(day < '{first}' OR day > '{last}'");
    if !gaps.is_empty() {
        out.push_str(&format!(" OR day IN ({})", quoted(&gaps.iter().collect::<Vec<_>>())));
    }
    out.push(')');
    out
}

/// Registers each rollup's view in a session (after the tables and functions): the stored rows of
/// the days still fingerprinted as stored, the source's events for every other day. Only the
/// rollups the session's SQL names (`SessionOptions::wants_view`).
pub async fn register(ctx: &SessionContext, lake: &Lake, opts: &SessionOptions) -> Result<(), SessionError> {
    let rollups: Vec<&'static Rollup> = ROLLUPS.iter().filter(|r| opts.wants_view(r.name)).collect();
    if rollups.is_empty() {
        return Ok(());
    }
    // Every listing at once: the rollups' stored days, then (only when some rollup has stored
    // days) the tables' files, each table once. On a folder they were a third of opening a session
    // one after another; on an object store each is a round trip.
    let stored = futures::future::try_join_all(rollups.iter().map(|r| async move {
        let weeks = async {
            if r.weeks {
                stored_in(lake, &r.week_folder()).await
            } else {
                Ok(BTreeMap::new())
            }
        };
        futures::future::try_join(r.stored(lake), weeks).await
    }))
    .await?;
    let files = if stored.iter().any(|(days, weeks)| !days.is_empty() || !weeks.is_empty()) {
        Some(DayFiles::list(lake, &tables_of(rollups.iter().copied())).await?)
    } else {
        None
    };
    // Then each rollup's views, the rollups side by side (planning a view's SQL is most of it).
    let tasks = rollups.into_iter().zip(stored).map(|(r, (stored, stored_weeks))| {
        let current = files.as_ref().map(|f| r.fingerprints_of(f)).unwrap_or_default();
        let weeks: Vec<(String, String)> = r
            .week_fingerprints(&current)
            .into_iter()
            .filter(|(monday, fp)| stored_weeks.get(monday).is_some_and(|s| s.contains(fp)))
            .collect();
        let valid: Vec<(String, String)> =
            current.into_iter().filter(|(day, fp)| stored.get(day).is_some_and(|s| s.contains(fp))).collect();
        tokio::spawn(register_one(ctx.clone(), lake.url.clone(), r, valid, weeks))
    });
    for done in futures::future::join_all(tasks.collect::<Vec<_>>()).await {
        done.map_err(|e| SessionError::Engine(format!("registering the rollups' views: {e}")))??;
    }
    Ok(())
}

/// A rollup's stored table of `_rollups/<folder>/` (partitioned by `day` and `src`), registered
/// as `__rollup_<folder>`; returns its name.
fn register_stored(
    ctx: &SessionContext,
    lake_url: &str,
    folder: &str,
    schema: SchemaRef,
) -> Result<String, SessionError> {
    let table = format!("__rollup_{folder}");
    let url = ListingTableUrl::parse(format!("{lake_url}{FOLDER}/{folder}/"))?;
    let options = ListingOptions::new(Arc::new(crate::session::parquet_format()))
        .with_file_extension(".parquet")
        .with_table_partition_cols(vec![("day".to_string(), DataType::Utf8), ("src".to_string(), DataType::Utf8)]);
    let config = ListingTableConfig::new(url).with_listing_options(options).with_schema(schema);
    let _ = ctx.deregister_table(table.as_str())?;
    let stored = ListingTable::try_new(config)?.with_cache(ctx.runtime_env().cache_manager.get_file_statistic_cache());
    ctx.register_table(table.as_str(), Arc::new(stored))?;
    Ok(table)
}

/// The days outside the ISO weeks of `mondays`, as a filter on `day` (ranges of days: the runs of
/// consecutive weeks).
fn outside_weeks(mondays: &[&String]) -> String {
    let mut runs: Vec<(String, String)> = Vec::new();
    let sorted: BTreeSet<&str> = mondays.iter().map(|m| m.as_str()).collect();
    for m in sorted {
        let sunday = plus_days(m, 6).unwrap_or_default();
        match runs.last_mut() {
            Some((_, end)) if plus_days(end, 1).as_deref() == Some(m) => *end = sunday,
            _ => runs.push((m.to_string(), sunday)),
        }
    }
    let Some(((first, _), (_, last))) = runs.first().zip(runs.last()) else { return "TRUE".to_string() };
    let mut parts = vec![format!("day < '{first}'")];
    parts.extend(runs.windows(2).map(|w| format!("(day > '{}' AND day < '{}')", w[0].1, w[1].0)));
    parts.push(format!("day > '{last}'"));
    format!("({})", parts.join(" OR "))
}

/// Registers one rollup's views: `<name>_events` (its source) and `<name>`, with the stored rows
/// of the `valid` (day, fingerprint) pairs; for a rollup with weeks, `<name>_weekly` too, with the
/// stored rows of the `weeks` (Monday, fingerprint) pairs.
async fn register_one(
    ctx: SessionContext,
    lake_url: String,
    r: &'static Rollup,
    valid: Vec<(String, String)>,
    weeks: Vec<(String, String)>,
) -> Result<(), SessionError> {
    // The source itself: the partial hours at a window's edges (and backtests) read it, and its
    // schema gives the stored files'.
    let events = format!("{}_events", r.name);
    let _ = ctx.deregister_table(events.as_str())?;
    ctx.sql(&format!("CREATE VIEW {events} AS {}", r.source)).await?;
    let keys = r.keys.join(", ");
    let raw_days = not_in_days(&valid.iter().map(|(d, _)| d).collect::<Vec<_>>());
    let times = if r.times { ", make_array(ts) AS times" } else { "" };
    let raw = format!(
        "SELECT 'event' AS grain, {} AS bucket, {keys}, CAST(1 AS BIGINT) AS n, ts AS first_ts, \
                ts AS last_ts{times}, day \
         FROM {events} WHERE {raw_days}",
        floor("ts", "hour")
    );
    let schema = if valid.is_empty() && weeks.is_empty() {
        None
    } else {
        Some(r.stored_schema(ctx.table(events.as_str()).await?.schema().as_arrow())?)
    };
    let sql = match &schema {
        Some(schema) if !valid.is_empty() => {
            let table = register_stored(&ctx, &lake_url, r.name, schema.clone())?;
            format!(
                "SELECT grain, bucket, {keys}, {}, day FROM {table} WHERE src IN ({}) UNION ALL {raw}",
                r.measures(),
                quoted(&valid.iter().map(|(_, f)| f).collect::<Vec<_>>())
            )
        }
        _ => raw,
    };
    let _ = ctx.deregister_table(r.name)?;
    ctx.sql(&format!("CREATE VIEW {} AS {sql}", r.name)).await?;
    if r.weeks {
        // The current weeks' rows, and the view's rows of every day outside them.
        let measures = r.measures();
        let days = format!("SELECT grain, bucket, {keys}, {measures}, day FROM {}", r.name);
        let sql = match &schema {
            Some(schema) if !weeks.is_empty() => {
                let table = register_stored(&ctx, &lake_url, &r.week_folder(), schema.clone())?;
                format!(
                    "SELECT grain, bucket, {keys}, {measures}, day FROM {table} WHERE src IN ({}) \
                     UNION ALL {days} WHERE {}",
                    quoted(&weeks.iter().map(|(_, f)| f).collect::<Vec<_>>()),
                    outside_weeks(&weeks.iter().map(|(m, _)| m).collect::<Vec<_>>())
                )
            }
            _ => days,
        };
        let weekly = format!("{}_weekly", r.name);
        let _ = ctx.deregister_table(weekly.as_str())?;
        ctx.sql(&format!("CREATE VIEW {weekly} AS {sql}")).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{floor, monday_of, not_in_days, outside_weeks, steps, Step, ROLLUPS};
    use std::collections::{BTreeMap, BTreeSet};

    #[test]
    fn a_refresh_writes_what_changed_and_clears_what_went() {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(d, f)| (d.to_string(), f.to_string())).collect()
        };
        let current = map(&[("d1", "a"), ("d2", "b"), ("d3", "c"), ("d4", "d"), ("d9", "z")]);
        let stored: BTreeMap<String, BTreeSet<String>> = [
            ("d1", &["a"][..]),      // as it is: nothing
            ("d2", &["b", "x"][..]), // current beside a replaced one: keep b, remove x in time
            ("d3", &["x"][..]),      // changed: write c
            ("d5", &["y"][..]),      // no files any more: clear
            ("d8", &["y"][..]),      // out of range: left alone
        ]
        .iter()
        .map(|(d, fps)| (d.to_string(), fps.iter().map(|f| f.to_string()).collect()))
        .collect();
        let text: Vec<String> = steps(&current, &stored, |d| d != "d8" && d != "d9")
            .iter()
            .map(|s| match s {
                Step::Write(d, f) => format!("write {d} {f}"),
                Step::Keep(d, f) => format!("keep {d} {f}"),
                Step::Clear(d) => format!("clear {d}"),
            })
            .collect();
        // d4 was never stored: written.
        assert_eq!(text, ["keep d2 b", "write d3 c", "write d4 d", "clear d5"]);
    }

    #[test]
    fn weeks_are_iso_weeks_and_their_days_are_left_out_as_ranges() {
        // 2026-11-01 is a Sunday; 2027-01-01 a Friday, in the week of Monday 2026-12-28.
        assert_eq!(monday_of("2026-11-01").as_deref(), Some("2026-10-26"));
        assert_eq!(monday_of("2026-11-02").as_deref(), Some("2026-11-02"));
        assert_eq!(monday_of("2027-01-01").as_deref(), Some("2026-12-28"));
        let weeks: Vec<String> = ["2026-11-16", "2026-11-02", "2026-11-09", "2026-11-30"].map(String::from).into();
        let refs: Vec<&String> = weeks.iter().collect();
        // Three weeks in a row, then one after a gap of a week.
        assert_eq!(
            outside_weeks(&refs),
            "(day < '2026-11-02' OR (day > '2026-11-22' AND day < '2026-11-30') OR day > '2026-12-06')"
        );
        assert_eq!(outside_weeks(&refs[..1]), "(day < '2026-11-16' OR day > '2026-11-22')");
        assert_eq!(outside_weeks(&[]), "TRUE");
        // A week's rows hold no times: only rollups without them have weeks.
        assert!(ROLLUPS.iter().all(|r| !(r.weeks && r.times)));
        assert!(ROLLUPS.iter().any(|r| r.weeks));
    }

    #[tokio::test]
    async fn floor_is_date_trunc_of_utc_times_with_their_type() {
        let ctx = datafusion::prelude::SessionContext::new();
        let times = [
            "1969-12-31T23:30:00Z",
            "1970-01-01T00:00:00Z",
            "2026-11-19T15:00:00Z",
            "2026-11-19T15:59:59.999999Z",
            "2026-11-19T23:59:59.999999Z",
            "2026-11-20T00:00:00.000001Z",
            "1900-03-01T12:34:56.789Z",
        ];
        let values: Vec<String> =
            times.iter().map(|t| format!("(arrow_cast(TIMESTAMP '{t}', 'Timestamp(µs, \"UTC\")'))")).collect();
        let sql = format!(
            "SELECT count(*) AS n, \
                    sum(CASE WHEN {} = date_trunc('hour', ts) THEN 1 ELSE 0 END) AS hours, \
                    sum(CASE WHEN {} = date_trunc('day', ts) THEN 1 ELSE 0 END) AS days, \
                    max(arrow_typeof({})) AS t \
             FROM (VALUES {}) AS v(ts)",
            floor("ts", "hour"),
            floor("ts", "day"),
            floor("ts", "hour"),
            values.join(", ")
        );
        let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string();
        assert!(text.contains(r#"| 7 | 7     | 7    | Timestamp(µs, "UTC") |"#), "{text}");
    }

    #[test]
    fn days_not_stored_are_the_outside_and_the_gaps() {
        let days: Vec<String> = ["2026-11-03", "2026-10-30", "2026-11-01", "2026-11-02"].map(String::from).into();
        let refs: Vec<&String> = days.iter().collect();
        // Across a month's end, unsorted, one day missing between the first and the last.
        assert_eq!(not_in_days(&refs), "(day < '2026-10-30' OR day > '2026-11-03' OR day IN ('2026-10-31'))");
        assert_eq!(not_in_days(&refs[..1]), "(day < '2026-11-03' OR day > '2026-11-03')");
        assert_eq!(not_in_days(&[]), "TRUE");
    }
}
