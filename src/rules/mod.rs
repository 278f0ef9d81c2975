//! Rule files: a TOML metadata header in a leading `/* … */` comment, then SQL, then optional
//! `-- @backtest`, `-- @terms` and `-- @stateful` sections. Headers are parsed strictly; window
//! bounds and thresholds reach the SQL as typed parameters ([`plan`]); rule SQL is planned
//! read-only; `lint` plans every section against the lake schema.
//!
//! This module knows what a rule *is*; running rules (windows, alerts, backtests, state) is the
//! detection engine's job (`crate::detect`), which depends on this module and never the reverse.

mod arms;
mod plan;

use crate::lake::Table;
use crate::time::TimeError;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

pub use plan::{check_alert_key, lint, TermsTable, STATE_TABLE};

/// A run's window, both ends included: the time range one scheduled run of a rule covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunWindow {
    pub start: chrono::DateTime<chrono::Utc>,
    pub end: chrono::DateTime<chrono::Utc>,
}

/// A rule could not be loaded, planned or run.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("{file}: the file must open with a /* … */ comment holding the TOML header")]
    NoHeader { file: String },
    #[error("{file}: bad header: {msg}")]
    Header { file: String, msg: String },
    #[error("cannot read rule file {file}: {source}")]
    Read { file: String, source: std::io::Error },
    #[error("cannot list rule folder {dir}: {source}")]
    Dir { dir: String, source: std::io::Error },
    #[error("rule {id}: {msg}")]
    Invalid { id: String, msg: String },
    #[error("rule {id}: {source}")]
    Query { id: String, source: datafusion::error::DataFusionError },
    #[error("no rule with id '{0}' (see `wisp rules list`)")]
    Unknown(String),
    #[error("rule {id} ({file}): {field}: {source}")]
    Duration { id: String, file: String, field: &'static str, source: TimeError },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleType {
    Query,
    NewTerms,
    Threshold,
    Correlation,
    Hunt,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mitre {
    #[serde(default)]
    pub tactics: Vec<String>,
    #[serde(default)]
    pub techniques: Vec<String>,
}

/// The metadata header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleMeta {
    pub id: String,
    pub name: String,
    pub description: String,
    #[serde(rename = "type")]
    pub rule_type: RuleType,
    pub severity: String,
    pub risk_score: i32,
    pub interval: String,
    pub lookback: String,
    #[serde(default)]
    pub history_window: Option<String>,
    #[serde(default)]
    pub new_terms_fields: Vec<String>,
    #[serde(default = "default_max_alerts")]
    pub max_alerts: usize,
    #[serde(default)]
    pub suppress_by: Vec<String>,
    #[serde(default)]
    pub suppress_for: Option<String>,
    pub tables: Vec<String>,
    #[serde(default)]
    pub mitre: Option<Mitre>,
    #[serde(default)]
    pub false_positives: Vec<String>,
    #[serde(default)]
    pub references: Vec<String>,
    #[serde(default)]
    pub note: String,
    #[serde(default = "default_ts")]
    pub timestamp_field: String,
    /// Output columns that identify one finding (with the rule id they make the alert id).
    pub alert_key: Vec<String>,
    /// Enrichment the rule needs to keep its meaning: `asn` (source_asn and source_as_org, from
    /// `ingest --asn-db`), `geo` (country and city). Runs and `rules lint` warn when the lake lacks it.
    #[serde(default)]
    pub requires: Vec<String>,
    /// Typed parameters with defaults, reachable in SQL as `$name`.
    #[serde(default)]
    pub params: BTreeMap<String, toml::Value>,
    /// Query engine settings for this rule's queries only: DataFusion's `datafusion.optimizer.*`
    /// and `datafusion.execution.*` options (a plan choice the statistics cannot make, such as
    /// `"datafusion.optimizer.repartition_joins" = false` where every join's build side is a
    /// handful of rows). Never the memory pool: that is the process's.
    #[serde(default)]
    pub settings: BTreeMap<String, toml::Value>,
}

fn default_max_alerts() -> usize {
    100
}
fn default_ts() -> String {
    "ts".into()
}

/// A loaded rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub meta: RuleMeta,
    pub sql: String,
    /// Optional one-pass form of a backtest (after a `-- @backtest` line): returns every alert of
    /// every scheduled run in `[$range_start, $range_end]`, with the run's end as `run_end_us`.
    pub backtest_sql: Option<String>,
    /// First-seen state (new_terms rules, after a `-- @terms` line): the rule's terms and their
    /// timestamp for events with `$range_start < ts <= $range_end`; wisp folds them into the state.
    pub terms_sql: Option<String>,
    /// The rule for one window read against the state (after a `-- @stateful` line): the table
    /// `terms_state` holds each term's `first_seen` and `last_seen` up to `$window_start`.
    pub stateful_sql: Option<String>,
    /// Every scheduled run in `[$range_start, $range_end]` in one pass read against the state
    /// (after a `-- @stateful_backtest` line): `terms_state` holds every term up to the first
    /// run's window start (`$range_start - $lookback`), so only the range itself is read. A
    /// catch-up of many runs uses it instead of reading the whole history window.
    pub stateful_backtest_sql: Option<String>,
    pub file: String,
}

/// Sections a rule file may add after its main query, each opened by a `-- @name` line.
pub const SECTIONS: [&str; 4] = ["backtest", "terms", "stateful", "stateful_backtest"];

/// Splits the SQL after the header into the main query and its `-- @name` sections.
fn split_sections(file: &str, body: &str) -> Result<(String, HashMap<String, String>), RuleError> {
    let mut starts = Vec::new();
    let mut off = 0;
    for line in body.split_inclusive('\n') {
        if let Some(rest) = line.trim_end().strip_prefix("-- @") {
            let name = rest.split_whitespace().next().unwrap_or("").to_string();
            if !SECTIONS.contains(&name.as_str()) {
                return Err(RuleError::Header {
                    file: file.into(),
                    msg: format!("unknown section '-- @{name}' (known: {})", SECTIONS.join(", ")),
                });
            }
            starts.push((off, name));
        }
        off += line.len();
    }
    let clean = |s: &str| s.trim().trim_end_matches(';').to_string();
    let main_end = starts.first().map(|(o, _)| *o).unwrap_or(body.len());
    let mut sections = HashMap::new();
    for (i, (o, name)) in starts.iter().enumerate() {
        let end = starts.get(i + 1).map(|(e, _)| *e).unwrap_or(body.len());
        if sections.insert(name.clone(), clean(&body[*o..end])).is_some() {
            return Err(RuleError::Header { file: file.into(), msg: format!("section '-- @{name}' appears twice") });
        }
    }
    Ok((clean(&body[..main_end]), sections))
}

include!(concat!(env!("OUT_DIR"), "/builtin_rules.rs"));

impl Rule {
    /// Parses a rule file's text.
    pub fn parse(file: &str, text: &str) -> Result<Rule, RuleError> {
        let t = text.trim_start();
        let Some(rest) = t.strip_prefix("/*") else {
            return Err(RuleError::NoHeader { file: file.into() });
        };
        let end = rest.find("*/").ok_or_else(|| RuleError::NoHeader { file: file.into() })?;
        let header = &rest[..end];
        let body = &rest[end + 2..];
        let (sql, mut sections) = split_sections(file, body)?;
        let meta: RuleMeta =
            toml::from_str(header).map_err(|e| RuleError::Header { file: file.into(), msg: e.to_string() })?;
        let rule = Rule {
            meta,
            sql,
            backtest_sql: sections.remove("backtest"),
            terms_sql: sections.remove("terms"),
            stateful_sql: sections.remove("stateful"),
            stateful_backtest_sql: sections.remove("stateful_backtest"),
            file: file.into(),
        };
        rule.validate()?;
        Ok(rule)
    }

    pub(crate) fn invalid(&self, msg: impl Into<String>) -> RuleError {
        RuleError::Invalid { id: self.meta.id.clone(), msg: msg.into() }
    }

    /// A query error, attributed to this rule.
    pub(crate) fn query_error(&self, source: datafusion::error::DataFusionError) -> RuleError {
        RuleError::Query { id: self.meta.id.clone(), source }
    }

    /// One of the header's durations, with the rule, file and field named if it is bad.
    pub fn duration(&self, field: &'static str) -> Result<chrono::Duration, RuleError> {
        let m = &self.meta;
        let text = match field {
            "interval" => Some(&m.interval),
            "lookback" => Some(&m.lookback),
            "history_window" => m.history_window.as_ref(),
            "suppress_for" => m.suppress_for.as_ref(),
            _ => None,
        };
        match text {
            Some(t) => crate::time::parse_duration(t).map_err(|source| self.time_error(field, source)),
            None => Ok(chrono::Duration::zero()),
        }
    }

    pub(crate) fn time_error(&self, field: &'static str, source: TimeError) -> RuleError {
        RuleError::Duration { id: self.meta.id.clone(), file: self.file.clone(), field, source }
    }

    /// The start of the history a run ending at `w.end` looks back over (`w.start` without one).
    pub fn history_start(&self, w: &RunWindow) -> Result<chrono::DateTime<chrono::Utc>, RuleError> {
        match &self.meta.history_window {
            Some(h) => crate::time::before(w.end, self.duration("history_window")?, h)
                .map_err(|e| self.time_error("history_window", e)),
            None => Ok(w.start),
        }
    }

    /// The window of the scheduled run ending at `end`.
    pub fn window_ending(&self, end: chrono::DateTime<chrono::Utc>) -> Result<RunWindow, RuleError> {
        let start = crate::time::before(end, self.duration("lookback")?, &self.meta.lookback)
            .map_err(|e| self.time_error("lookback", e))?;
        Ok(RunWindow { start, end })
    }

    fn validate(&self) -> Result<(), RuleError> {
        let m = &self.meta;
        if m.id.is_empty() || !m.id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
            return Err(self.invalid("id must be lowercase letters, digits and '_'"));
        }
        if !["low", "medium", "high", "critical"].contains(&m.severity.as_str()) {
            return Err(self.invalid(format!("severity '{}' is not low, medium, high or critical", m.severity)));
        }
        if !(0..=100).contains(&m.risk_score) {
            return Err(self.invalid("risk_score must be 0..=100"));
        }
        for field in ["interval", "lookback", "history_window", "suppress_for"] {
            self.duration(field)?;
        }
        if self.duration("interval")? <= chrono::Duration::zero() {
            return Err(self.invalid("interval must be longer than zero"));
        }
        if m.rule_type == RuleType::NewTerms && (m.history_window.is_none() || m.new_terms_fields.is_empty()) {
            return Err(self.invalid("a new_terms rule needs history_window and new_terms_fields"));
        }
        if self.terms_sql.is_some() != self.stateful_sql.is_some() {
            return Err(self.invalid("the '-- @terms' and '-- @stateful' sections go together"));
        }
        if self.stateful_backtest_sql.is_some() && self.terms_sql.is_none() {
            return Err(self.invalid(
                "'-- @stateful_backtest' reads the first-seen state: it needs '-- @terms' and '-- @stateful'",
            ));
        }
        if self.terms_sql.is_some() && (m.history_window.is_none() || m.new_terms_fields.is_empty()) {
            return Err(self
                .invalid("first-seen state ('-- @terms') needs history_window and new_terms_fields (the terms' key)"));
        }
        if m.suppress_for.is_some() == m.suppress_by.is_empty() {
            return Err(self.invalid("suppress_by and suppress_for go together"));
        }
        for t in &m.tables {
            if Table::from_name(t).is_none() && t != "sp_risk_events_latest" && t != "alerts" {
                return Err(self.invalid(format!("unknown table '{t}'")));
            }
        }
        if let Some(r) = m.requires.iter().find(|r| !["asn", "geo"].contains(&r.as_str())) {
            return Err(self.invalid(format!("requires: unknown enrichment '{r}' (known: asn, geo)")));
        }
        if m.alert_key.is_empty() {
            return Err(self.invalid("alert_key must name at least one output column"));
        }
        self.apply_settings(&mut datafusion::config::ConfigOptions::default())?;
        Ok(())
    }

    /// Sets the rule's `[settings]` in `options`: only optimizer and execution options, each a
    /// string, boolean or number DataFusion accepts for it.
    pub(crate) fn apply_settings(&self, options: &mut datafusion::config::ConfigOptions) -> Result<(), RuleError> {
        for (k, v) in &self.meta.settings {
            if !(k.starts_with("datafusion.optimizer.") || k.starts_with("datafusion.execution.")) {
                return Err(self.invalid(format!(
                    "settings: '{k}' is not a datafusion.optimizer.* or datafusion.execution.* option"
                )));
            }
            let text = match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                other => {
                    return Err(self.invalid(format!(
                        "settings: '{k}' has an unsupported value {other:?} (use a string, boolean or number)"
                    )))
                }
            };
            options.set(k, &text).map_err(|e| self.invalid(format!("settings: '{k}' = {text}: {e}")))?;
        }
        Ok(())
    }
}

/// The built-in rules, plus `*.sql` files from `dir` (which override built-ins of the same id).
pub fn load_all(dir: Option<&std::path::Path>) -> Result<Vec<Rule>, RuleError> {
    let mut rules: Vec<Rule> = BUILTIN.iter().map(|(f, t)| Rule::parse(f, t)).collect::<Result<_, _>>()?;
    if let Some(dir) = dir {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(|source| RuleError::Dir { dir: dir.display().to_string(), source })?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| RuleError::Dir { dir: dir.display().to_string(), source })?
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "sql"))
            .collect();
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f)
                .map_err(|source| RuleError::Read { file: f.display().to_string(), source })?;
            let r = Rule::parse(&f.display().to_string(), &text)?;
            rules.retain(|x| x.meta.id != r.meta.id);
            rules.push(r);
        }
    }
    Ok(rules)
}

impl Rule {
    /// Reads and parses one rule file.
    pub fn load_file(path: &std::path::Path) -> Result<Rule, RuleError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| RuleError::Read { file: path.display().to_string(), source })?;
        Rule::parse(&path.display().to_string(), &text)
    }

    /// The SQL of the rule: its main query and every section it has.
    pub fn texts(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.sql.as_str()).chain(
            [&self.backtest_sql, &self.terms_sql, &self.stateful_sql, &self.stateful_backtest_sql]
                .into_iter()
                .flatten()
                .map(String::as_str),
        )
    }
}

/// The rule with this id.
pub fn by_id<'a>(rules: &'a [Rule], id: &str) -> Result<&'a Rule, RuleError> {
    rules.iter().find(|r| r.meta.id == id).ok_or_else(|| RuleError::Unknown(id.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_file_is_built_in() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sql");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .map(|n| format!("sql/{n}"))
            .collect();
        on_disk.sort();
        let built_in: Vec<String> = BUILTIN.iter().map(|(f, _)| f.to_string()).collect();
        assert_eq!(built_in, on_disk);
        let rules = load_all(None).unwrap();
        assert_eq!(rules.len(), on_disk.len());
        for (f, text) in BUILTIN {
            let r = Rule::parse(f, text).unwrap();
            assert_eq!(format!("sql/{}.sql", r.meta.id), f, "a rule file is named after its id");
        }
    }

    #[test]
    fn bad_durations_name_the_rule_file_and_field() {
        let (_, text) = BUILTIN.iter().find(|(f, _)| f.ends_with("sp_failed_signins.sql")).unwrap();
        let bad = text.replacen("lookback = \"", "lookback = \"x", 1);
        let e = Rule::parse("my/rules/failed.sql", &bad).unwrap_err().to_string();
        assert!(e.contains("sp_failed_signins") && e.contains("my/rules/failed.sql") && e.contains("lookback"), "{e}");
        let e = Rule::load_file(std::path::Path::new("/nonexistent/rule.sql")).unwrap_err().to_string();
        assert!(e.starts_with("cannot read rule file /nonexistent/rule.sql"), "{e}");
    }

    #[tokio::test]
    async fn settings_hold_for_the_rules_queries_only_and_bad_ones_are_refused() {
        let (f, text) = BUILTIN.iter().find(|(f, _)| f.ends_with("sp_failed_signins.sql")).unwrap();
        let with = |settings: &str| text.replacen("*/", &format!("[settings]\n{settings}\n*/"), 1);
        for (bad, says) in [
            ("\"datafusion.optimizer.no_such_option\" = true", "no_such_option"),
            ("\"datafusion.runtime.memory_limit\" = \"8G\"", "not a datafusion.optimizer.* or datafusion.execution.*"),
            ("\"datafusion.optimizer.repartition_joins\" = \"maybe\"", "repartition_joins"),
            ("\"datafusion.execution.batch_size\" = [1]", "unsupported value"),
        ] {
            let e = Rule::parse(f, &with(bad)).unwrap_err().to_string();
            assert!(e.contains("sp_failed_signins") && e.contains(says), "{bad}: {e}");
        }
        let r = Rule::parse(f, &with("\"datafusion.execution.batch_size\" = 123")).unwrap();
        let ctx = datafusion::prelude::SessionContext::new();
        ctx.sql("CREATE TABLE signins (ts TIMESTAMP, x INT)").await.unwrap();
        let w = RunWindow { start: chrono::DateTime::UNIX_EPOCH, end: chrono::DateTime::UNIX_EPOCH };
        let df = r.plan_section(&ctx, "SELECT * FROM signins", &w).await.unwrap();
        assert_eq!(df.task_ctx().session_config().batch_size(), 123);
        assert_eq!(df.task_ctx().session_config().options().optimizer.max_passes, plan::RULE_OPTIMIZER_PASSES);
        assert_eq!(ctx.state().config().batch_size(), 8192, "the session keeps its own settings");
        assert_eq!(ctx.state().config().options().optimizer.max_passes, 3);
        // A rule's settings come over the rules' defaults.
        let r = Rule::parse(f, &with("\"datafusion.optimizer.max_passes\" = 3")).unwrap();
        let df = r.plan_section(&ctx, "SELECT * FROM signins", &w).await.unwrap();
        assert_eq!(df.task_ctx().session_config().options().optimizer.max_passes, 3);
    }
}
