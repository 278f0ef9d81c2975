//! First-seen state for new_terms rules: each term's first and last sighting, kept in the state
//! folder (`<lake>/_state/` or `wisp run --state S`) under `<rule id>/` so that a scheduled run reads its own window and the state instead of
//! the whole history window.
//!
//! Exactness: a term is new in the run `(window_start, window_end]` when it has no event in
//! `[history_start, window_start]`. The state covers every event with `covered_from < ts <=
//! covered_to`; a run may use it only when `covered_to == window_start` (after folding in the
//! events since the last run) and `covered_from < history_start`. Then "no event in the history"
//! is exactly "no term in the state, or its `last_seen < history_start`", and the stateful query
//! gives the stateless query's alerts. A run for an earlier window than the state covers runs
//! stateless; a state written by another version of the rule's `-- @terms` SQL is rebuilt.
//!
//! Terms not seen since `history_start` are dropped from the state (they would be new again
//! anyway), so it stays as small as the set of terms alive in one history window.
//!
//! Events that arrive after the state has passed their time are not in it: a term seen only in
//! such a late event can alert once more (never an alert missed). The state files are written
//! whole and the `state.json` that names them last, so a crash leaves the previous state.

use super::run::{self as runner, RunResult};
use super::store::StateDir;
use crate::query::ScanStats;
use crate::rules::{Rule, RuleError, RunWindow, TermsTable};
use datafusion::functions_aggregate::expr_fn::{max, min};
use datafusion::prelude::{col, lit, SessionContext};
use object_store::path::Path as StorePath;
use object_store::{ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Errors of the state layer.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Rule(#[from] RuleError),
    #[error("state of rule {rule} at {path}: {msg} (delete the folder to rebuild it)")]
    Store { rule: String, path: String, msg: String },
}

/// What `_state/<rule>/state.json` records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateMeta {
    pub rule_id: String,
    /// SHA-256 of the rule's `-- @terms` SQL and fields: another definition means another state.
    pub fingerprint: String,
    /// Events with `covered_from < ts <= covered_to` are in the state (microseconds, UTC).
    pub covered_from_us: i64,
    pub covered_to_us: i64,
    /// The Parquet file holding the terms, relative to the rule's state folder.
    pub file: String,
    pub terms: u64,
    pub updated_at: String,
}

/// How a run used the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StateUse {
    /// The state already ended at the window's start.
    Current,
    /// Events since the last run were folded in.
    Advanced,
    /// No usable state: built from the history window.
    Built,
    /// The window is older than the state: ran without it.
    Stateless,
}

/// A stateful run's outcome.
#[derive(Debug, Clone)]
pub struct StatefulRun {
    pub result: RunResult,
    pub used: StateUse,
    pub terms: u64,
}

fn folder(rule: &Rule) -> String {
    rule.meta.id.clone()
}

/// What the state's terms depend on: the terms query, the rule's term fields and time field, and
/// the definition of every rollup view the query reads (`<rollup>`, `<rollup>_events` or
/// `<rollup>_weekly`), so that a changed rollup source is not trusted any more than a changed
/// query.
fn fingerprint(rule: &Rule) -> String {
    fingerprint_with(rule, crate::rollups::ROLLUPS)
}

fn fingerprint_with(rule: &Rule, rollups: &[crate::rollups::Rollup]) -> String {
    let mut h = Sha256::new();
    let terms = rule.terms_sql.as_deref().unwrap_or("");
    h.update(terms.as_bytes());
    let words: std::collections::BTreeSet<&str> =
        terms.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).collect();
    for r in rollups {
        if ["", "_events", "_weekly"].iter().any(|v| words.contains(format!("{}{v}", r.name).as_str())) {
            h.update([0x1e]);
            h.update(r.name.as_bytes());
            h.update([0x1f]);
            h.update(r.source.as_bytes());
        }
    }
    for f in &rule.meta.new_terms_fields {
        h.update([0x1f]);
        h.update(f.as_bytes());
    }
    h.update([0x1f]);
    h.update(rule.meta.timestamp_field.as_bytes());
    h.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect()
}

fn serr(rule: &Rule, path: &str, msg: impl ToString) -> StateError {
    StateError::Store { rule: rule.meta.id.clone(), path: path.into(), msg: msg.to_string() }
}

/// Reads the rule's state record, if there is one.
pub async fn load_meta(dir: &StateDir, rule: &Rule) -> Result<Option<StateMeta>, StateError> {
    let p = StorePath::from(format!("{}/state.json", folder(rule)));
    match dir.store.get(&p).await {
        Ok(r) => {
            let bytes = r.bytes().await.map_err(|e| serr(rule, p.as_ref(), e))?;
            serde_json::from_slice(&bytes).map(Some).map_err(|e| serr(rule, p.as_ref(), e))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(serr(rule, p.as_ref(), e)),
    }
}

fn micros(t: chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp_micros()
}

fn at(rule: &Rule, us: i64) -> Result<chrono::DateTime<chrono::Utc>, StateError> {
    crate::time::from_micros(us).map_err(|e| serr(rule, "state.json", e))
}

/// Drops a rule's state (the next stateful run rebuilds it from the history window): the
/// scheduler does this when late events arrive for a time the state already covers.
pub async fn invalidate(dir: &StateDir, rule: &Rule) -> Result<(), StateError> {
    let p = StorePath::from(format!("{}/state.json", folder(rule)));
    match dir.store.delete(&p).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(serr(rule, p.as_ref(), e)),
    }
}

/// Runs a new_terms rule for one window with its first-seen state, bringing the state up to the
/// window's start first. Rules without a `-- @terms` section run stateless.
pub async fn run(
    ctx: &SessionContext,
    dir: &StateDir,
    rule: &Rule,
    w: &RunWindow,
    detected_at: chrono::DateTime<chrono::Utc>,
) -> Result<StatefulRun, StateError> {
    let (Some(_), Some(stateful)) = (&rule.terms_sql, &rule.stateful_sql) else {
        let result = runner::run(ctx, rule, w, detected_at).await?;
        return Ok(StatefulRun { result, used: StateUse::Stateless, terms: 0 });
    };
    let hs = micros(rule.history_start(w)?);
    let (meta, used, mut scan) = match prepare(ctx, dir, rule, micros(w.start), hs).await? {
        Ok(p) => p,
        Err(terms) => {
            let result = runner::run(ctx, rule, w, detected_at).await?;
            return Ok(StatefulRun { result, used: StateUse::Stateless, terms });
        }
    };
    let _table = register(ctx, dir, rule, &meta).await?;
    let df = rule.plan_section(ctx, stateful, w).await?;
    let (rows, s) = runner::collect_rows(rule, df).await?;
    scan.add(s);
    let result = runner::finish(rule, rows, w, detected_at, scan);
    Ok(StatefulRun { result, used, terms: meta.terms })
}

/// Every scheduled run in `[from, to]` in one pass against the state (a catch-up): the state is
/// brought to the first run's window start, and the rule's `-- @stateful_backtest` SQL reads only
/// the range. Exact for the same reason a stateful run is: the state then holds every term up to
/// that start (pruned only of terms older than the first run's history, which are "unseen" to every
/// later run too). `None` when the rule has no such section or the state already covers past that
/// start (the caller backtests without it); alerts as [`super::backtest::runs_in`] gives them.
pub async fn backtest(
    ctx: &SessionContext,
    dir: &StateDir,
    rule: &Rule,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
    detected_at: chrono::DateTime<chrono::Utc>,
) -> Result<Option<StatefulRun>, StateError> {
    let (Some(_), Some(sql)) = (&rule.terms_sql, &rule.stateful_backtest_sql) else {
        return Ok(None);
    };
    let Some(&first) = super::backtest::run_ends(rule, from, to)?.first() else {
        return Ok(Some(StatefulRun { result: RunResult::default(), used: StateUse::Current, terms: 0 }));
    };
    let w = rule.window_ending(first)?;
    let Ok((meta, used, mut scan)) = prepare(ctx, dir, rule, micros(w.start), micros(rule.history_start(&w)?)).await?
    else {
        return Ok(None);
    };
    let _table = register(ctx, dir, rule, &meta).await?;
    // The range starts at the first run's end: the state ends exactly `lookback` before it.
    let df = rule.plan_section(ctx, sql, &RunWindow { start: first, end: to }).await?;
    let (rows, s) = runner::collect_rows(rule, df).await?;
    scan.add(s);
    let (alerts, cut) = super::backtest::by_run(rule, rows, detected_at)?;
    Ok(Some(StatefulRun { result: RunResult { alerts, cut, scan }, used, terms: meta.terms }))
}

/// Brings the rule's state to `ws` for runs whose history starts at `hs` (the state then holds
/// every term sighted in `[hs, ws]`): current already, folded forward, or built from the history.
/// `Err(terms)` when the state covers past `ws` (that run must go without it).
async fn prepare(
    ctx: &SessionContext,
    dir: &StateDir,
    rule: &Rule,
    ws: i64,
    hs: i64,
) -> Result<Result<(StateMeta, StateUse, ScanStats), u64>, StateError> {
    let fp = fingerprint(rule);
    let previous = load_meta(dir, rule).await?;
    let meta = previous.clone().filter(|m| m.fingerprint == fp);
    let mut scan = ScanStats::default();
    let (meta, used) = match meta {
        Some(m) if m.covered_to_us > ws => return Ok(Err(m.terms)),
        Some(m) if m.covered_from_us < hs && m.covered_to_us == ws => (m, StateUse::Current),
        // Folding in the events since the last run is cheaper than rebuilding while they are fewer
        // than a history window.
        Some(m) if m.covered_from_us < hs && m.covered_to_us >= hs => {
            let (m, s) = fold(ctx, dir, rule, Some(&m), previous.as_ref(), m.covered_to_us, ws, hs, &fp).await?;
            scan.add(s);
            (m, StateUse::Advanced)
        }
        _ => {
            let (m, s) = fold(ctx, dir, rule, None, previous.as_ref(), hs - 1, ws, hs, &fp).await?;
            scan.add(s);
            (m, StateUse::Built)
        }
    };
    Ok(Ok((meta, used, scan)))
}

/// The state's terms registered as `terms_state` (until the returned guard drops).
async fn register<'a>(
    ctx: &'a SessionContext,
    dir: &StateDir,
    rule: &Rule,
    meta: &StateMeta,
) -> Result<TermsTable<'a>, StateError> {
    let url = format!("{}{}/{}", dir.url, folder(rule), meta.file);
    let state = ctx.read_parquet(url, Default::default()).await.map_err(|e| rule.query_error(e))?;
    Ok(TermsTable::register(ctx, rule, state.into_view())?)
}

/// Folds the events of `(from, to]` into `old` (or into nothing), drops terms last seen before
/// `keep_from`, writes the new state and then removes the `previous` state's file.
#[allow(clippy::too_many_arguments)]
async fn fold(
    ctx: &SessionContext,
    dir: &StateDir,
    rule: &Rule,
    old: Option<&StateMeta>,
    previous: Option<&StateMeta>,
    from: i64,
    to: i64,
    keep_from: i64,
    fp: &str,
) -> Result<(StateMeta, ScanStats), StateError> {
    let q = |e| rule.query_error(e);
    let fields: Vec<_> = rule.meta.new_terms_fields.iter().map(col).collect();
    let new = rule.plan_terms(ctx, &RunWindow { start: at(rule, from)?, end: at(rule, to)? }).await?;
    let merged = match old {
        Some(m) => {
            let url = format!("{}{}/{}", dir.url, folder(rule), m.file);
            let prev = ctx.read_parquet(url, Default::default()).await.map_err(q)?;
            let mut cols = fields.clone();
            cols.extend([col("first_seen"), col("last_seen")]);
            prev.select(cols)
                .map_err(q)?
                .union(new)
                .map_err(q)?
                .aggregate(
                    fields.clone(),
                    vec![min(col("first_seen")).alias("first_seen"), max(col("last_seen")).alias("last_seen")],
                )
                .map_err(q)?
        }
        None => new,
    };
    let keep = crate::time::utc_ts(at(rule, keep_from)?);
    let merged = merged
        .filter(col("last_seen").gt_eq(lit(keep)))
        .and_then(|df| df.sort(fields.iter().map(|f| f.clone().sort(true, false)).collect()))
        .map_err(q)?;
    // No batch at all still gives a file: an empty one with the terms' schema.
    let planned = std::sync::Arc::new(merged.schema().as_arrow().clone());
    let (batches, scan) = crate::query::collect_with_stats(merged).await.map_err(q)?;
    let n: usize = batches.iter().map(|b| b.num_rows()).sum();
    let schema = batches.first().map(|b| b.schema()).unwrap_or(planned);
    let mut buf = Vec::new();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
        .build();
    let werr = |e: parquet::errors::ParquetError| serr(rule, "terms", e);
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, schema, Some(props)).map_err(werr)?;
    for b in &batches {
        w.write(b).map_err(werr)?;
    }
    w.close().map_err(werr)?;
    let file = format!("terms-{to}.parquet");
    let folder = folder(rule);
    let put = |name: String, bytes: Vec<u8>| {
        let store = dir.store.clone();
        let p = StorePath::from(format!("{folder}/{name}"));
        async move { store.put(&p, PutPayload::from(bytes)).await.map(|_| ()).map_err(|e| serr(rule, p.as_ref(), e)) }
    };
    put(file.clone(), buf).await?;
    let meta = StateMeta {
        rule_id: rule.meta.id.clone(),
        fingerprint: fp.to_string(),
        covered_from_us: old.map(|m| m.covered_from_us).unwrap_or(from),
        covered_to_us: to,
        file: file.clone(),
        terms: n as u64,
        updated_at: chrono::Utc::now().to_rfc3339(),
    };
    put("state.json".into(), serde_json::to_vec_pretty(&meta).expect("serializable")).await?;
    if let Some(m) = previous.filter(|m| m.file != file) {
        let _ = dir.store.delete(&StorePath::from(format!("{folder}/{}", m.file))).await;
    }
    Ok((meta, scan))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollups::Rollup;

    fn rule(id: &str) -> Rule {
        crate::rules::load_all(None).unwrap().into_iter().find(|r| r.meta.id == id).unwrap()
    }

    /// The state's fingerprint sees through the rollup views its terms read: a changed rollup
    /// source rebuilds the state of the rules that read it, and only theirs.
    #[test]
    fn fingerprint_follows_the_rollup_views_the_terms_read() {
        let asn = rule("sp_unusual_source_asn");
        assert!(asn.terms_sql.as_deref().unwrap().contains("sp_asn_rollup_events"));
        let changed =
            [Rollup { name: "sp_asn_rollup", tables: &[], source: "SELECT 1", keys: &[], times: false, weeks: false }];
        assert_ne!(fingerprint(&asn), fingerprint_with(&asn, &changed));
        assert_eq!(fingerprint_with(&asn, &changed), fingerprint_with(&asn, &changed));
        // A rule whose terms read the tables does not depend on any rollup.
        let failures = rule("sp_credential_failures_from_new_source");
        assert!(!failures.terms_sql.as_deref().unwrap().contains("_rollup"));
        assert_eq!(fingerprint(&failures), fingerprint_with(&failures, &changed));
        assert_eq!(fingerprint(&failures), fingerprint_with(&failures, &[]));
    }
}
