//! What a `detect` or `hunt` invocation runs: which rules, and when — one scheduled run, every run
//! in a range (a backtest), or one hunt window — resolved from the time flags, then executed.

use super::run::{run, RunResult};
use super::state::{self, StateUse};
use super::{backtest::backtest, DetectError};
use crate::lake::Lake;
use crate::rules::{Rule, RuleError, RuleType, RunWindow};
use crate::time::{before, parse_duration, parse_utc};
use chrono::{DateTime, Utc};
use datafusion::prelude::SessionContext;

/// The time flags every query command shares (`--at`, `--from`/`--to`, `--last`), as given.
#[derive(Debug, Clone, Default)]
pub struct TimeFlags {
    pub at: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub last: Option<String>,
}

/// When detections run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// The scheduled run ending at this time.
    At(DateTime<Utc>),
    /// Every scheduled run ending in `[from, to]`: a backtest.
    Range { from: DateTime<Utc>, to: DateTime<Utc> },
}

fn usage(msg: impl Into<String>) -> DetectError {
    DetectError::Usage(msg.into())
}

fn range(from: DateTime<Utc>, to: DateTime<Utc>) -> Result<(DateTime<Utc>, DateTime<Utc>), DetectError> {
    if from > to {
        return Err(usage(format!(
            "--from {} is after --to {}: give the earlier time first",
            crate::time::rfc3339(from),
            crate::time::rfc3339(to)
        )));
    }
    Ok((from, to))
}

fn last(l: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, DetectError> {
    Ok(before(now, parse_duration(l)?, &format!("--last {l}"))?)
}

impl TimeFlags {
    /// `detect`: `--at T` (or nothing: now) is one scheduled run; `--from/--to` or `--last` a
    /// backtest. Contradictory or incomplete flags are usage errors.
    pub fn when(&self, now: DateTime<Utc>) -> Result<When, DetectError> {
        match (&self.at, &self.from, &self.to, &self.last) {
            (None, None, None, None) => Ok(When::At(now)),
            (Some(at), None, None, None) => Ok(When::At(parse_utc(at)?)),
            (None, Some(f), Some(t), None) => {
                let (from, to) = range(parse_utc(f)?, parse_utc(t)?)?;
                Ok(When::Range { from, to })
            }
            (None, None, None, Some(l)) => Ok(When::Range { from: last(l, now)?, to: now }),
            (None, Some(_), None, None) => Err(usage("--from needs --to")),
            (None, None, Some(_), None) => Err(usage("--to needs --from")),
            _ => Err(usage("--at, --from/--to and --last exclude each other: give one")),
        }
    }

    /// `hunt` and `pivot`: one window — `[from, to]`, the last duration, or `default_last` ending
    /// at `--at` (or now).
    pub fn window(&self, default_last: &str, now: DateTime<Utc>) -> Result<RunWindow, DetectError> {
        match (&self.at, &self.from, &self.to, &self.last) {
            (None, Some(f), Some(t), None) => {
                let (start, end) = range(parse_utc(f)?, parse_utc(t)?)?;
                Ok(RunWindow { start, end })
            }
            (None, None, None, Some(l)) => Ok(RunWindow { start: last(l, now)?, end: now }),
            (at, None, None, None) => {
                let end = at.as_deref().map(parse_utc).transpose()?.unwrap_or(now);
                Ok(RunWindow { start: last(default_last, end)?, end })
            }
            (None, Some(_), None, None) => Err(usage("--from needs --to")),
            (None, None, Some(_), None) => Err(usage("--to needs --from")),
            _ => Err(usage("--at, --from/--to and --last exclude each other: give one")),
        }
    }
}

/// A time range, both ends included.
pub type TimeRange = (DateTime<Utc>, DateTime<Utc>);

/// The part of a backtest range in which a rule's runs can alert, given the lake's data span
/// (first and last `day`): a run whose window holds no event cannot alert, so runs ending before
/// the first day or more than the rule's look-back after the last day are skipped — the alerts
/// are the same. `None` when no run of the range can alert.
pub fn clamp_to_data(
    rule: &Rule,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    span: Option<(chrono::NaiveDate, chrono::NaiveDate)>,
) -> Result<Option<TimeRange>, RuleError> {
    let Some((first, last)) = span else { return Ok(None) };
    let data_from = first.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
    let data_to = (last + chrono::Duration::days(1)).and_hms_opt(0, 0, 0).expect("midnight").and_utc();
    let (from, to) = (from.max(data_from), to.min(data_to + rule.duration("lookback")?));
    Ok((from <= to).then_some((from, to)))
}

/// The rules a run selects: the given ids (in that order), or every detection (hunts only by id),
/// with `max_alerts` overridden when asked.
pub fn select(all: Vec<Rule>, ids: &[String], max_alerts: Option<usize>) -> Result<Vec<Rule>, RuleError> {
    let mut selected: Vec<Rule> = if ids.is_empty() {
        all.into_iter().filter(|r| r.meta.rule_type != RuleType::Hunt).collect()
    } else {
        ids.iter().map(|id| crate::rules::by_id(&all, id).cloned()).collect::<Result<_, _>>()?
    };
    if let Some(m) = max_alerts {
        for r in &mut selected {
            r.meta.max_alerts = m;
        }
    }
    Ok(selected)
}

/// Warnings for a rule whose `requires` enrichment the lake lacks over `[from, to]`: sign-ins
/// with an address but no ASN organization (or no country) mean the rule silently changes meaning
/// (sp_unusual_source_asn cannot exclude Microsoft's networks), so every run says so with the fix.
/// `LIMIT 1` probes, cheap when the enrichment is there: first an enriched sign-in in the range's
/// last day — planning a probe over the whole range reads the footer of every sign-in file in it
/// (0.2–0.3 s for 30 days of the medium profile, in every backtest of such a rule) — and only
/// when there is none, the whole range: any enriched sign-in, then any sign-in with an address.
pub async fn enrichment_warnings(
    ctx: &SessionContext,
    rule: &Rule,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<String>, RuleError> {
    let mut out = Vec::new();
    for need in &rule.meta.requires {
        let (col, fix) = match need.as_str() {
            "asn" => ("source_as_org", "ingest with --asn-db GeoLite2-ASN.mmdb (or an ASN range CSV/TSV)"),
            _ => ("country", "ingest with --geo-db GeoLite2-City.mmdb"),
        };
        let probe = |extra: &str| {
            format!(
                "SELECT 1 FROM signins WHERE source_ip IS NOT NULL {extra} AND ts >= $from AND ts <= $to \
                 AND day >= to_char($from, '%Y-%m-%d') AND day <= to_char($to, '%Y-%m-%d') LIMIT 1"
            )
        };
        let any = |sql: String, from: DateTime<Utc>| async move {
            let params = vec![("from", crate::time::utc_ts(from)), ("to", crate::time::utc_ts(to))];
            let df = crate::query::read_only_sql(ctx, &sql).await.map_err(|e| rule.query_error(e))?;
            let df = df.with_param_values(params).map_err(|e| rule.query_error(e))?;
            let rows = df.collect().await.map_err(|e| rule.query_error(e))?;
            Ok::<bool, RuleError>(rows.iter().any(|b| b.num_rows() > 0))
        };
        let enriched = probe(&format!("AND {col} IS NOT NULL"));
        let last_day_from = to.checked_sub_signed(chrono::Duration::days(1)).map_or(from, |d| d.max(from));
        if any(enriched.clone(), last_day_from).await? {
            continue;
        }
        if (last_day_from == from || !any(enriched, from).await?) && any(probe(""), from).await? {
            out.push(format!(
                "{} needs {need} enrichment, but no sign-in from {} to {} has {col}: its results change meaning \
                 without it; {fix}",
                rule.meta.id,
                crate::time::rfc3339(from),
                crate::time::rfc3339(to)
            ));
        }
    }
    Ok(out)
}

/// What executing one rule gave.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub result: RunResult,
    /// How first-seen state was used (a single run with state, of a rule that keeps it), and the
    /// terms it holds.
    pub state: Option<(StateUse, u64)>,
    /// Enrichment the rule needs and the lake lacks ([`enrichment_warnings`]).
    pub warnings: Vec<String>,
}

/// Runs one rule: its scheduled run at `When::At` (with first-seen state when `with_state`), or a
/// backtest over `When::Range` (state does not apply: a backtest reads the history itself).
pub async fn execute(
    ctx: &SessionContext,
    lake: &Lake,
    rule: &Rule,
    when: When,
    with_state: bool,
    detected_at: DateTime<Utc>,
) -> Result<Outcome, DetectError> {
    let (from, to) = match when {
        When::At(t) => (rule.history_start(&rule.window_ending(t)?)?, t),
        When::Range { from, to } => (from, to),
    };
    let warnings = enrichment_warnings(ctx, rule, from, to).await?;
    let (result, state) = match when {
        When::At(t) if with_state && rule.terms_sql.is_some() => {
            let dir = super::store::StateDir::open(lake, None)?;
            let s = state::run(ctx, &dir, rule, &rule.window_ending(t)?, detected_at).await?;
            (s.result, Some((s.used, s.terms)))
        }
        When::At(t) => (run(ctx, rule, &rule.window_ending(t)?, detected_at).await?, None),
        When::Range { from, to } => match clamp_to_data(rule, from, to, lake.day_span())? {
            Some((from, to)) => (backtest(ctx, rule, from, to, detected_at).await?, None),
            None => (RunResult::default(), None),
        },
    };
    Ok(Outcome { result, state, warnings })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(at: Option<&str>, from: Option<&str>, to: Option<&str>, last: Option<&str>) -> TimeFlags {
        let s = |o: Option<&str>| o.map(str::to_string);
        TimeFlags { at: s(at), from: s(from), to: s(to), last: s(last) }
    }

    #[test]
    fn time_flags_resolve_or_are_refused() {
        let now = parse_utc("2026-11-20T12:00:00Z").unwrap();
        let t = |s| parse_utc(s).unwrap();
        assert_eq!(flags(None, None, None, None).when(now).unwrap(), When::At(now));
        assert_eq!(
            flags(Some("2026-11-19T01:00:00Z"), None, None, None).when(now).unwrap(),
            When::At(t("2026-11-19T01:00:00Z"))
        );
        assert_eq!(
            flags(None, None, None, Some("1d")).when(now).unwrap(),
            When::Range { from: t("2026-11-19T12:00:00Z"), to: now }
        );
        assert_eq!(
            flags(None, Some("2026-11-01T00:00:00Z"), Some("2026-11-02T00:00:00Z"), None).when(now).unwrap(),
            When::Range { from: t("2026-11-01T00:00:00Z"), to: t("2026-11-02T00:00:00Z") }
        );
        for bad in [
            flags(None, Some("2026-11-02T00:00:00Z"), Some("2026-11-01T00:00:00Z"), None),
            flags(None, Some("2026-11-02T00:00:00Z"), None, None),
            flags(None, None, Some("2026-11-02T00:00:00Z"), None),
            flags(Some("2026-11-02T00:00:00Z"), None, None, Some("1d")),
        ] {
            assert!(matches!(bad.when(now), Err(DetectError::Usage(_))), "{bad:?}");
            assert!(matches!(bad.window("7d", now), Err(DetectError::Usage(_))), "{bad:?}");
        }
        assert!(matches!(flags(None, None, None, Some("99999999d")).when(now), Err(DetectError::Time(_))));
        assert!(matches!(flags(Some("9999-12-31T23:59:59Z"), None, None, None).when(now), Err(DetectError::Time(_))));
        assert_eq!(
            flags(Some("2026-11-19T00:00:00Z"), None, None, None).window("7d", now).unwrap(),
            RunWindow { start: t("2026-11-12T00:00:00Z"), end: t("2026-11-19T00:00:00Z") }
        );
        assert_eq!(
            flags(None, None, None, None).window("30d", now).unwrap(),
            RunWindow { start: t("2026-10-21T12:00:00Z"), end: now }
        );
    }

    #[test]
    fn backtests_skip_runs_that_cannot_see_data() {
        let rules = crate::rules::load_all(None).unwrap();
        let r = crate::rules::by_id(&rules, "sp_risk_event_stacking").unwrap();
        let lookback = r.duration("lookback").unwrap();
        let t = |s| parse_utc(s).unwrap();
        let d = |s| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        let span = Some((d("2026-11-10"), d("2026-11-12")));
        let got = clamp_to_data(r, t("1950-01-01T00:00:00Z"), t("2100-01-01T00:00:00Z"), span).unwrap();
        assert_eq!(got, Some((t("2026-11-10T00:00:00Z"), t("2026-11-13T00:00:00Z") + lookback)));
        let inside = (t("2026-11-11T00:00:00Z"), t("2026-11-11T05:00:00Z"));
        assert_eq!(clamp_to_data(r, inside.0, inside.1, span).unwrap(), Some(inside));
        assert_eq!(clamp_to_data(r, t("2026-12-01T00:00:00Z"), t("2026-12-02T00:00:00Z"), span).unwrap(), None);
        assert_eq!(clamp_to_data(r, inside.0, inside.1, None).unwrap(), None);
    }

    #[test]
    fn selection_by_id_or_every_detection() {
        let all = crate::rules::load_all(None).unwrap();
        let detections = select(all.clone(), &[], None).unwrap();
        assert!(!detections.is_empty());
        assert!(detections.iter().all(|r| r.meta.rule_type != RuleType::Hunt));
        assert_eq!(detections.len(), all.iter().filter(|r| r.meta.rule_type != RuleType::Hunt).count());
        let ids = vec!["sp_failed_signins".to_string(), "sp_unusual_source_asn".to_string()];
        let two = select(all.clone(), &ids, Some(7)).unwrap();
        assert_eq!(two.iter().map(|r| r.meta.id.as_str()).collect::<Vec<_>>(), ids);
        assert!(two.iter().all(|r| r.meta.max_alerts == 7));
        let e = select(all, &["nope".to_string()], None).unwrap_err();
        assert!(matches!(e, RuleError::Unknown(ref id) if id == "nope"), "{e}");
    }
}
