//! Scheduled detection: one tick of the scheduler runs, for each rule, every run that is due and
//! every run that late data touched, and commits what it found exactly once.
//!
//! Per rule and tick (holding the state folder's run lock):
//! 1. The ledger gives the next run end not done; due runs end on multiples of the interval up
//!    to now. Runs older than `max_catch_up` are skipped and recorded as a gap, never silently.
//! 2. Late data (reconciliation): the data files of the rule's tables are listed; files of ingest
//!    runs the ledger has not seen are new arrivals. Their `ts` range (Parquet footer statistics)
//!    gives the runs already done that they fall in — windows `(end - lookback, end]`, extended by
//!    the rule's context (history window, duration parameters) for correlation rules, where an
//!    earlier event can complete a finding — and those runs are done again. An ingest run counts
//!    as seen only once it is complete (its manifest exists, or it cannot be the writer holding
//!    the lake now): files it writes after a tick are still new to the next. A file rewritten in place (`ingest
//!    --reenrich`) is noticed by its version (e-tag, or modification time and size) against the
//!    ledger's recent files, and its range is re-run as well.
//! 3. Re-runs and catch-up (several due runs) use the backtest machinery (one query for rules with
//!    a `-- @backtest` section; a catch-up of a rule with a `-- @stateful_backtest` section reads
//!    its first-seen state and only the missed range); a single due run of a new_terms rule uses
//!    its first-seen state, which is dropped when late data lands in the time it covers.
//! 4. Alerts are checked against the store: an id sent or suppressed before is "known" (never sent
//!    twice); suppression (`suppress_by`/`suppress_for`) continues from the store's latest alert
//!    per key; the rest are new. Suppressed repeats are stored with the id of the alert that stood.
//! 5. Commit: suppressed and new alert files, then the ledger (the commit point). A crash before
//!    the ledger makes the next tick redo the runs; their alerts are then known.
//!
//! Late events can only add findings here: an event dated in a new_terms rule's history that
//! arrives after a run alerted cannot take that alert back (no engine can), so a scheduled period
//! equals the backtest run afterwards whenever late data completes findings rather than
//! retracting them (tested).

use super::alert::Alert;
use super::backtest::{run_ends, runs_in, Suppressor};
use super::ledger::{self, Gap, LastError, LastRun, Ledger};
use super::run::{run, RunResult};
use super::state;
use super::store::{self, StateDir};
use super::DetectError;
use crate::lake::{compact, Lake, LakeError};
use crate::query::ScanStats;
use crate::rules::{Rule, RuleType, RunWindow};
use crate::time::{from_micros, micros, rfc3339};
use chrono::{DateTime, Utc};
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use object_store::path::Path as StorePath;
use std::collections::{BTreeMap, BTreeSet};

/// How the scheduler starts new ledgers and catches up.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where a new ledger starts: its first run is the first one ending at or after this time.
    pub since: DateTime<Utc>,
    /// Due runs older than this (before now) are skipped and reported as a gap.
    pub max_catch_up: chrono::Duration,
}

/// What one tick did for one rule.
#[derive(Debug, Clone, Default)]
pub struct RuleTick {
    pub rule_id: String,
    /// From the start of the first due run's window to the end of the last (none when nothing
    /// was due).
    pub window: Option<RunWindow>,
    pub runs: u64,
    /// Runs done again because late data arrived for them.
    pub reruns: u64,
    pub rerun_range: Option<(DateTime<Utc>, DateTime<Utc>)>,
    pub new: Vec<Alert>,
    pub suppressed: u64,
    pub known: u64,
    pub cut: usize,
    pub scan: ScanStats,
    pub seconds: f64,
    /// Alert files committed (what durable sinks deliver).
    pub files: Vec<String>,
    pub gap: Option<Gap>,
    pub state_dropped: bool,
}

/// The data files of the rule's tables.
async fn data_files(lake: &Lake, rule: &Rule) -> Result<Vec<object_store::ObjectMeta>, DetectError> {
    let mut out = Vec::new();
    for t in &rule.meta.tables {
        let prefix = StorePath::from(t.as_str());
        let mut s = lake.store.list(Some(&prefix));
        while let Some(m) = s.next().await {
            match m {
                Ok(m) if m.location.as_ref().ends_with(".parquet") => out.push(m),
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(DetectError::Store(store::StoreError { path: t.clone(), msg: e.to_string() })),
            }
        }
    }
    Ok(out)
}

/// The ingest runs that wrote their manifest (`_meta/ingest/<run>.json`): all their files exist.
async fn committed_runs(lake: &Lake) -> Result<BTreeSet<String>, DetectError> {
    let prefix = StorePath::from("_meta/ingest");
    let mut out = BTreeSet::new();
    let mut s = lake.store.list(Some(&prefix));
    while let Some(m) = s.next().await {
        match m {
            Ok(m) => {
                if let Some(run) = m.location.filename().and_then(|n| n.strip_suffix(".json")) {
                    out.insert(run.to_string());
                }
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => {
                return Err(DetectError::Store(store::StoreError { path: prefix.to_string(), msg: e.to_string() }))
            }
        }
    }
    Ok(out)
}

/// How long after a file's modification time its version is still compared (longer than a
/// listing and a write take, and than the clocks of the writers disagree).
const MTIME_GRACE_US: i64 = 3_600_000_000;

/// How much older than the current writer's lock a file must be to be known not to be its own.
const WRITER_MARGIN_US: i64 = 300_000_000;

/// A file's version: its e-tag, or its modification time and size.
fn version(m: &object_store::ObjectMeta) -> String {
    m.e_tag.clone().unwrap_or_else(|| format!("{}:{}", m.last_modified.timestamp_micros(), m.size))
}

/// What the rule's tables hold now, against what the ledger saw.
struct Arrivals {
    /// Every ingest run with rows in the tables (in its own files or in compacted ones) that is
    /// complete: it wrote its manifest, or it is not the writer at work now (a run that died
    /// never will: no writer holds the lake, or its files predate the current writer's lock).
    present: BTreeSet<String>,
    /// The compacted files and the runs each holds.
    compacted: BTreeMap<String, Vec<String>>,
    /// The `ts` ranges of the rows of runs the ledger has not seen, and of files rewritten since.
    unseen: Vec<(i64, i64)>,
    mtime_horizon_us: Option<i64>,
    recent_files: BTreeMap<String, String>,
}

/// Lists the rule's data files and finds the ingest runs the ledger has not seen, with their `ts`
/// ranges: from an ingest file's footer statistics, or from a compacted file's `wisp.sources`
/// (read once per compacted file). A compaction that replaces files while we read makes a
/// footer vanish: the listing is then taken again.
async fn arrivals(lake: &Lake, rule: &Rule, l: &Ledger) -> Result<Arrivals, DetectError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match arrivals_once(lake, rule, l).await {
            Err(DetectError::Lake(LakeError::Read { msg, .. })) if attempt < 4 && msg.contains("not found") => continue,
            r => return r,
        }
    }
}

async fn arrivals_once(lake: &Lake, rule: &Rule, l: &Ledger) -> Result<Arrivals, DetectError> {
    // Manifests first: a run committed by now has all its files in the listing that follows. An
    // ingest still writing has some; they are evaluated now and again once it is complete.
    let committed = committed_runs(lake).await?;
    let writer = crate::lake::lock::writer_since(lake).await?;
    // Files older than the current writer's lock (with a margin for clocks) are not its own: a run
    // without a manifest that wrote them died and never will finish.
    let done = |run: &str, m: &object_store::ObjectMeta| {
        committed.contains(run)
            || writer.is_none_or(|since| m.last_modified.timestamp_micros() < since - WRITER_MARGIN_US)
    };
    let files = data_files(lake, rule).await?;
    // A file the ledger knows, rewritten since (a re-enrichment): its whole range is re-run.
    let rewritten = |m: &object_store::ObjectMeta| {
        l.mtime_horizon_us.is_some_and(|h| m.last_modified.timestamp_micros() > h)
            && l.recent_files.get(m.location.as_ref()) != Some(&version(m))
    };
    let mut a = Arrivals {
        present: BTreeSet::new(),
        compacted: BTreeMap::new(),
        unseen: Vec::new(),
        mtime_horizon_us: None,
        recent_files: BTreeMap::new(),
    };
    for m in &files {
        let (f, name) = (&m.location, m.location.as_ref());
        if compact::is_compacted(name) {
            let runs = match l.compacted.get(name) {
                Some(runs) => {
                    if rewritten(m) {
                        if let Some(r) = compact::ts_range(&compact::footer(lake, f).await?) {
                            a.unseen.push(r);
                        }
                    }
                    runs.clone()
                }
                None => {
                    let md = compact::footer(lake, f).await?;
                    let sources = compact::sources(name, &md)?;
                    for s in sources.iter().filter(|s| !l.seen_ingests.contains(&s.run)) {
                        a.unseen.push((s.lo, s.hi));
                    }
                    sources.into_iter().map(|s| s.run).collect()
                }
            };
            a.present.extend(runs.iter().filter(|r| done(r, m)).cloned());
            a.compacted.insert(name.to_string(), runs);
        } else if let Some(run) = compact::ingest_run(name) {
            if !l.seen_ingests.contains(run) || rewritten(m) {
                if let Some(r) = compact::ts_range(&compact::footer(lake, f).await?) {
                    a.unseen.push(r);
                }
            }
            if done(run, m) {
                a.present.insert(run.to_string());
            }
        }
    }
    let newest = files.iter().map(|m| m.last_modified.timestamp_micros()).max();
    a.mtime_horizon_us = newest.map(|n| n - MTIME_GRACE_US).max(l.mtime_horizon_us);
    let h = a.mtime_horizon_us.unwrap_or(i64::MIN);
    a.recent_files = files
        .iter()
        .filter(|m| m.last_modified.timestamp_micros() > h)
        .map(|m| (m.location.to_string(), version(m)))
        .collect();
    Ok(a)
}

/// How far before a window a rule reads events that can *complete* a finding: its history window
/// and its duration parameters — for correlation rules. For new_terms rules earlier events only
/// take findings away, so late ones there re-run nothing.
pub fn context(rule: &Rule) -> Result<chrono::Duration, DetectError> {
    if rule.meta.rule_type == RuleType::NewTerms {
        return Ok(chrono::Duration::zero());
    }
    let mut c = rule.duration("history_window")?;
    for v in rule.meta.params.values() {
        if let Some(d) = v.as_table().and_then(|t| t.get("duration")).and_then(|d| d.as_str()) {
            c = c.max(crate::time::parse_duration(d)?);
        }
    }
    Ok(c)
}

fn align_up(t: i64, step: i64) -> i64 {
    (t + step - 1).div_euclid(step) * step
}

/// A rule's ledger as it starts: its first run is the first one ending at or after `--since`.
fn new_ledger(rule: &Rule, opts: &Options, step: i64) -> Ledger {
    Ledger {
        rule_id: rule.meta.id.clone(),
        interval: rule.meta.interval.clone(),
        since: rfc3339(opts.since),
        next_end_us: align_up(opts.since.timestamp_micros(), step),
        seen_ingests: BTreeSet::new(),
        compacted: BTreeMap::new(),
        mtime_horizon_us: None,
        recent_files: BTreeMap::new(),
        gaps: Vec::new(),
        last_run: None,
        last_error: None,
        runs_done: 0,
    }
}

/// One tick for one rule at `now`. Errors leave the ledger's cursor where it was (recorded as
/// the rule's last error by [`tick`]).
pub async fn tick_rule(
    ctx: &SessionContext,
    lake: &Lake,
    dir: &StateDir,
    rule: &Rule,
    now: DateTime<Utc>,
    opts: &Options,
) -> Result<RuleTick, DetectError> {
    let started = std::time::Instant::now();
    let detected_at = Utc::now();
    let id = &rule.meta.id;
    let step = micros(rule.duration("interval")?).max(1);
    let lookback = micros(rule.duration("lookback")?);
    let existing = ledger::load(dir, id).await?;
    let fresh = existing.is_none();
    let mut l = existing.unwrap_or_else(|| new_ledger(rule, opts, step));
    if l.interval != rule.meta.interval {
        l.next_end_us = align_up(l.next_end_us, step);
        l.interval = rule.meta.interval.clone();
    }
    let mut out = RuleTick { rule_id: id.clone(), ..Default::default() };

    // Arrivals since the last tick, and the runs already done that they fall in.
    let found = arrivals(lake, rule, &l).await?;
    let first_end = align_up(crate::time::parse_utc(&l.since)?.timestamp_micros(), step);
    let last_done = l.next_end_us - step;
    // Rows that arrived for runs already done: their runs (and those their context reaches) again.
    let late = found
        .unseen
        .iter()
        .filter(|&&(lo, _)| !fresh && last_done >= first_end && lo <= last_done)
        .fold(None, |acc: Option<(i64, i64)>, &(lo, hi)| Some(acc.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi)))));
    let mut results: Vec<RunResult> = Vec::new();
    if let Some((lo, hi)) = late {
        let reach = micros(context(rule)?);
        let from = align_up(lo.max(first_end), step);
        let to = hi.saturating_add(lookback).saturating_add(reach).min(last_done);
        if from <= to {
            let (f, t) = (from_micros(from)?, from_micros(to)?);
            out.reruns = run_ends(rule, f, t)?.len() as u64;
            out.rerun_range = Some((f, t));
            if rule.terms_sql.is_some() {
                if let Some(m) = state::load_meta(dir, rule).await? {
                    if lo <= m.covered_to_us {
                        state::invalidate(dir, rule).await?;
                        out.state_dropped = true;
                    }
                }
            }
            results.push(runs_in(ctx, rule, f, t, detected_at).await?);
        }
    }

    // Due runs, catching up at most `max_catch_up`.
    let mut due: Vec<i64> = Vec::new();
    let mut t = l.next_end_us;
    while t <= now.timestamp_micros() {
        due.push(t);
        t += step;
    }
    let oldest = now.timestamp_micros() - micros(opts.max_catch_up);
    let skipped: Vec<i64> = due.iter().copied().filter(|&e| e < oldest).collect();
    if !skipped.is_empty() {
        due.retain(|&e| e >= oldest);
        let gap = Gap {
            from: rfc3339(from_micros(skipped[0])?),
            to: rfc3339(from_micros(*skipped.last().expect("non-empty"))?),
            runs: skipped.len() as u64,
            noted_at: rfc3339(Utc::now()),
        };
        l.gaps.push(gap.clone());
        out.gap = Some(gap);
    }
    match due.as_slice() {
        [] => {}
        [end] => {
            let w = rule.window_ending(from_micros(*end)?)?;
            out.window = Some(w);
            let r = if rule.terms_sql.is_some() {
                state::run(ctx, dir, rule, &w, detected_at).await?.result
            } else {
                run(ctx, rule, &w, detected_at).await?
            };
            results.push(r);
        }
        [first, .., last] => {
            let (f, t) = (from_micros(*first)?, from_micros(*last)?);
            out.window = Some(RunWindow { start: rule.window_ending(f)?.start, end: t });
            let r = match state::backtest(ctx, dir, rule, f, t, detected_at).await? {
                Some(st) => st.result,
                None => runs_in(ctx, rule, f, t, detected_at).await?,
            };
            results.push(r);
        }
    }
    out.runs = due.len() as u64;

    // Against the store: known, suppressed, new. Only the store days near these alerts can hold
    // a copy of one or an alert that suppresses one; with no alerts there is nothing to read.
    let span = results
        .iter()
        .flat_map(|r| r.alerts.iter().map(|a| a.ts))
        .fold(None, |acc: Option<(i64, i64)>, t| Some(acc.map_or((t, t), |(lo, hi)| (lo.min(t), hi.max(t)))));
    let known = match span {
        None => store::Known::default(),
        Some((lo, hi)) => {
            let h = store::horizon_us(micros(rule.duration("lookback")?), micros(rule.duration("suppress_for")?));
            store::known(dir, id, lo.saturating_sub(h), hi.saturating_add(h)).await?
        }
    };
    let mut ids = known.ids;
    let mut sup = Suppressor::new(rule)?;
    sup.last_by_key = known.last_by_key;
    let mut suppressed = Vec::new();
    for r in results {
        out.cut += r.cut;
        out.scan.add(r.scan);
        for a in r.alerts {
            if !ids.insert(a.alert_id.clone()) {
                out.known += 1;
            } else if let Some(by) = sup.check(&a) {
                suppressed.push((a, by));
            } else {
                out.new.push(a);
            }
        }
    }
    out.suppressed = suppressed.len() as u64;
    if !out.new.is_empty() || !suppressed.is_empty() {
        let stamp = format!("{}-{}", l.next_end_us, detected_at.timestamp_micros());
        out.files = store::commit(dir, id, &stamp, &out.new, &suppressed).await?;
    }

    // The commit point.
    if let Some(last) = due.last() {
        l.next_end_us = last + step;
    }
    l.seen_ingests = found.present;
    l.compacted = found.compacted;
    l.mtime_horizon_us = found.mtime_horizon_us;
    l.recent_files = found.recent_files;
    l.runs_done += out.runs;
    l.last_error = None;
    out.seconds = started.elapsed().as_secs_f64();
    if out.runs > 0 || out.reruns > 0 {
        l.last_run = Some(LastRun {
            window_start: out.window.map(|w| rfc3339(w.start)).unwrap_or_default(),
            window_end: out.window.map(|w| rfc3339(w.end)).unwrap_or_default(),
            runs: out.runs,
            reruns: out.reruns,
            rows_read: out.scan.rows,
            bytes_read: out.scan.bytes,
            alerts_new: out.new.len() as u64,
            alerts_suppressed: out.suppressed,
            alerts_known: out.known,
            alerts_cut: out.cut as u64,
            seconds: out.seconds,
            at: rfc3339(Utc::now()),
        });
    }
    ledger::save(dir, &l).await?;
    Ok(out)
}

/// Records a failed tick as the rule's last error (its cursor stays where it was).
pub async fn record_error(dir: &StateDir, rule: &Rule, opts: &Options, msg: &str) -> Result<(), DetectError> {
    let step = micros(rule.duration("interval")?).max(1);
    let mut l = match ledger::load(dir, &rule.meta.id).await? {
        Some(l) => l,
        None => new_ledger(rule, opts, step),
    };
    l.last_error = Some(LastError {
        window_end: rfc3339(from_micros(l.next_end_us)?),
        message: msg.to_string(),
        at: rfc3339(Utc::now()),
    });
    ledger::save(dir, &l).await?;
    Ok(())
}

/// When the next run of any rule is due, after `now` (for the long-running form).
pub async fn next_due(dir: &StateDir, rules: &[Rule], now: DateTime<Utc>) -> Result<DateTime<Utc>, DetectError> {
    let mut next = i64::MAX;
    for r in rules {
        let step = micros(r.duration("interval")?).max(1);
        let at = match ledger::load(dir, &r.meta.id).await? {
            Some(l) if l.next_end_us > now.timestamp_micros() => l.next_end_us,
            _ => align_up(now.timestamp_micros() + 1, step),
        };
        next = next.min(at);
    }
    Ok(from_micros(next.min(now.timestamp_micros() + 86_400_000_000))?)
}
