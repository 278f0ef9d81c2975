//! Rules: files of a TOML metadata header in a leading `/* … */` comment, then SQL. Headers are
//! parsed strictly; window bounds and thresholds reach the SQL as typed parameters; rule SQL runs
//! read-only. Running a rule for a window yields alerts with deterministic ids.

pub mod alerts;

use crate::lake::Table;
use datafusion::common::ScalarValue;
use datafusion::prelude::SessionContext;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

pub use alerts::{Alert, RunWindow};

/// A rule could not be loaded, planned or run.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("{file}: the file must open with a /* … */ comment holding the TOML header")]
    NoHeader { file: String },
    #[error("{file}: bad header: {msg}")]
    Header { file: String, msg: String },
    #[error("rule {id}: {msg}")]
    Invalid { id: String, msg: String },
    #[error("rule {id}: {source}")]
    Query { id: String, source: datafusion::error::DataFusionError },
    #[error("no rule with id '{0}' (see `wisp rules list`)")]
    Unknown(String),
    #[error("bad duration '{0}': use forms like 65m, 1h, 10d, 30d")]
    Duration(String),
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
    /// Typed parameters with defaults, reachable in SQL as `$name`.
    #[serde(default)]
    pub params: BTreeMap<String, toml::Value>,
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
    pub file: String,
}

/// Sections a rule file may add after its main query, each opened by a `-- @name` line.
pub const SECTIONS: [&str; 3] = ["backtest", "terms", "stateful"];

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

/// The rules shipped in `sql/`, embedded in the binary.
pub const BUILTIN: [(&str, &str); 6] = [
    ("sql/sp_unusual_source_asn.sql", include_str!("../../sql/sp_unusual_source_asn.sql")),
    ("sql/sp_rare_action_multiple_ips.sql", include_str!("../../sql/sp_rare_action_multiple_ips.sql")),
    ("sql/sp_failed_signins.sql", include_str!("../../sql/sp_failed_signins.sql")),
    ("sql/sp_credential_added_after_signin.sql", include_str!("../../sql/sp_credential_added_after_signin.sql")),
    ("sql/sp_risk_event_stacking.sql", include_str!("../../sql/sp_risk_event_stacking.sql")),
    (
        "sql/identity_signin_from_suspicious_source.sql",
        include_str!("../../sql/identity_signin_from_suspicious_source.sql"),
    ),
];

/// Parses a duration like `65m`, `1h`, `10d`, `30s`.
pub fn parse_duration(s: &str) -> Result<chrono::Duration, RuleError> {
    let t = s.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: i64 = num.parse().map_err(|_| RuleError::Duration(s.into()))?;
    Ok(match unit {
        "s" => chrono::Duration::seconds(n),
        "m" => chrono::Duration::minutes(n),
        "h" => chrono::Duration::hours(n),
        "d" => chrono::Duration::days(n),
        "w" => chrono::Duration::weeks(n),
        _ => return Err(RuleError::Duration(s.into())),
    })
}

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
            file: file.into(),
        };
        rule.validate()?;
        Ok(rule)
    }

    fn invalid(&self, msg: impl Into<String>) -> RuleError {
        RuleError::Invalid { id: self.meta.id.clone(), msg: msg.into() }
    }

    /// A query error, attributed to this rule.
    pub(crate) fn query_error(&self, source: datafusion::error::DataFusionError) -> RuleError {
        RuleError::Query { id: self.meta.id.clone(), source }
    }

    /// The start of the history a run ending at `w.end` looks back over (`w.start` without one).
    pub fn history_start(&self, w: &RunWindow) -> Result<chrono::DateTime<chrono::Utc>, RuleError> {
        Ok(match &self.meta.history_window {
            Some(h) => w.end - parse_duration(h)?,
            None => w.start,
        })
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
        parse_duration(&m.interval)?;
        parse_duration(&m.lookback)?;
        if let Some(h) = &m.history_window {
            parse_duration(h)?;
        }
        if m.rule_type == RuleType::NewTerms && (m.history_window.is_none() || m.new_terms_fields.is_empty()) {
            return Err(self.invalid("a new_terms rule needs history_window and new_terms_fields"));
        }
        if self.terms_sql.is_some() != self.stateful_sql.is_some() {
            return Err(self.invalid("the '-- @terms' and '-- @stateful' sections go together"));
        }
        if self.terms_sql.is_some() && m.rule_type != RuleType::NewTerms {
            return Err(self.invalid("first-seen state ('-- @terms') is for new_terms rules"));
        }
        if m.suppress_for.is_some() == m.suppress_by.is_empty() {
            return Err(self.invalid("suppress_by and suppress_for go together"));
        }
        if let Some(s) = &m.suppress_for {
            parse_duration(s)?;
        }
        for t in &m.tables {
            if Table::from_name(t).is_none() && t != "sp_risk_events_latest" && t != "alerts" {
                return Err(self.invalid(format!("unknown table '{t}'")));
            }
        }
        if m.alert_key.is_empty() {
            return Err(self.invalid("alert_key must name at least one output column"));
        }
        Ok(())
    }

    /// The parameters for one window, typed: timestamps as UTC microsecond timestamps.
    pub fn param_values(&self, w: &RunWindow) -> Result<HashMap<String, ScalarValue>, RuleError> {
        let ts = crate::query::utc_ts;
        let mut p = HashMap::new();
        p.insert("window_start".to_string(), ts(w.start));
        p.insert("window_end".to_string(), ts(w.end));
        p.insert("history_start".to_string(), ts(self.history_start(w)?));
        let us = |d: chrono::Duration| ScalarValue::Int64(Some(d.num_microseconds().unwrap_or(i64::MAX)));
        p.insert("interval_us".to_string(), us(parse_duration(&self.meta.interval)?));
        p.insert("lookback_us".to_string(), us(parse_duration(&self.meta.lookback)?));
        p.insert(
            "history_us".to_string(),
            us(self
                .meta
                .history_window
                .as_deref()
                .map(parse_duration)
                .transpose()?
                .unwrap_or_else(chrono::Duration::zero)),
        );
        // For a one-pass backtest the range is the window.
        p.insert("range_start".to_string(), ts(w.start));
        p.insert("range_end".to_string(), ts(w.end));
        for (k, v) in &self.meta.params {
            let s = match v {
                toml::Value::Integer(i) => ScalarValue::Int64(Some(*i)),
                toml::Value::Float(f) => ScalarValue::Float64(Some(*f)),
                toml::Value::String(s) => ScalarValue::Utf8(Some(s.clone())),
                toml::Value::Boolean(b) => ScalarValue::Boolean(Some(*b)),
                other => return Err(self.invalid(format!("parameter {k}: unsupported value {other:?}"))),
            };
            p.insert(k.clone(), s);
        }
        Ok(p)
    }

    /// Plans the one-pass backtest over `[from, to]`, if the rule has one.
    pub async fn plan_backtest(
        &self,
        ctx: &SessionContext,
        range: &RunWindow,
    ) -> Result<Option<datafusion::dataframe::DataFrame>, RuleError> {
        match &self.backtest_sql {
            Some(sql) => Ok(Some(self.plan_section(ctx, sql, range).await?)),
            None => Ok(None),
        }
    }

    /// The window of the scheduled run ending at `end`.
    pub fn window_ending(&self, end: chrono::DateTime<chrono::Utc>) -> Result<RunWindow, RuleError> {
        Ok(RunWindow { start: end - parse_duration(&self.meta.lookback)?, end })
    }

    /// Plans one of the rule's sections read-only with the parameters of `w` bound.
    pub async fn plan_section(
        &self,
        ctx: &SessionContext,
        sql: &str,
        w: &RunWindow,
    ) -> Result<datafusion::dataframe::DataFrame, RuleError> {
        let df = crate::query::read_only_sql(ctx, sql).await.map_err(|e| self.query_error(e))?;
        df.with_param_values(self.param_values(w)?).map_err(|e| self.query_error(e))
    }

    /// Plans the rule read-only with its parameters bound.
    pub async fn plan(
        &self,
        ctx: &SessionContext,
        w: &RunWindow,
    ) -> Result<datafusion::dataframe::DataFrame, RuleError> {
        self.plan_section(ctx, &self.sql, w).await
    }
}

/// The built-in rules, plus `*.sql` files from `dir` (which override built-ins of the same id).
pub fn load_all(dir: Option<&std::path::Path>) -> Result<Vec<Rule>, RuleError> {
    let mut rules: Vec<Rule> = BUILTIN.iter().map(|(f, t)| Rule::parse(f, t)).collect::<Result<_, _>>()?;
    if let Some(dir) = dir {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| RuleError::Header { file: dir.display().to_string(), msg: e.to_string() })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "sql"))
            .collect();
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f)
                .map_err(|e| RuleError::Header { file: f.display().to_string(), msg: e.to_string() })?;
            let r = Rule::parse(&f.display().to_string(), &text)?;
            rules.retain(|x| x.meta.id != r.meta.id);
            rules.push(r);
        }
    }
    Ok(rules)
}

/// Plans every rule against the lake schema with no data: a typo in a column is found here.
pub async fn lint(ctx: &SessionContext, rules: &[Rule]) -> Vec<(String, Result<(), RuleError>)> {
    let w = RunWindow { start: chrono::DateTime::UNIX_EPOCH, end: chrono::DateTime::UNIX_EPOCH };
    let mut out = Vec::new();
    for r in rules {
        let res = async {
            let df = r.plan(ctx, &w).await?;
            let schema = df.schema().clone();
            for k in &r.meta.alert_key {
                if schema.field_with_unqualified_name(k).is_err() {
                    return Err(r.invalid(format!("alert_key column '{k}' is not in the query's output")));
                }
            }
            if schema.field_with_unqualified_name(&r.meta.timestamp_field).is_err() {
                return Err(
                    r.invalid(format!("the query must output the timestamp column '{}'", r.meta.timestamp_field))
                );
            }
            df.create_physical_plan().await.map_err(|e| r.query_error(e))?;
            if let Some(bt) = r.plan_backtest(ctx, &w).await? {
                bt.create_physical_plan().await.map_err(|e| r.query_error(e))?;
            }
            if r.terms_sql.is_some() {
                crate::state::lint(ctx, r).await?;
            }
            Ok(())
        }
        .await;
        out.push((r.meta.id.clone(), res));
    }
    out
}
