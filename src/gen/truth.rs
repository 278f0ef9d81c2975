//! The ground truth: what each detection must (and must not) report, and its checker.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// How an expectation is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The scheduled run ending at `at`.
    Run,
    /// Every scheduled run in `[from, at]`.
    Backtest,
    /// One window `[from, at]`.
    Hunt,
}

/// One expectation about a detection's output (a line of `ground_truth.json`).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Expectation {
    pub scenario: String,
    pub rule_id: String,
    pub mode: Mode,
    #[serde(default)]
    pub from: Option<String>,
    pub at: String,
    /// Field values (in the alert's `fields`) that identify the finding.
    pub fields: BTreeMap<String, Value>,
    /// How many matching alerts or rows: 0 for a near miss.
    pub count: usize,
}

/// When an expectation is checked.
#[derive(Clone, Copy)]
pub(super) enum Check {
    Run(DateTime<Utc>),
    Backtest { from: DateTime<Utc>, to: DateTime<Utc> },
    Hunt { from: DateTime<Utc>, to: DateTime<Utc> },
}

/// An expectation as the scenarios write it.
pub(super) struct Expect<'a> {
    pub scenario: &'a str,
    pub rule: &'a str,
    pub check: Check,
    /// A JSON object of field values.
    pub fields: Value,
    pub count: usize,
}

#[derive(Default)]
pub(super) struct Truth(pub(super) Vec<Expectation>);

impl Truth {
    pub(super) fn add(&mut self, e: Expect) {
        let t = crate::time::rfc3339;
        let (mode, from, at) = match e.check {
            Check::Run(at) => (Mode::Run, None, at),
            Check::Backtest { from, to } => (Mode::Backtest, Some(from), to),
            Check::Hunt { from, to } => (Mode::Hunt, Some(from), to),
        };
        self.0.push(Expectation {
            scenario: e.scenario.into(),
            rule_id: e.rule.into(),
            mode,
            from: from.map(t),
            at: t(at),
            fields: e.fields.as_object().expect("an object of field values").clone().into_iter().collect(),
            count: e.count,
        });
    }
}

/// Checks a lake against a ground-truth file: returns one message per failed expectation.
pub async fn check_ground_truth(
    ctx: &datafusion::prelude::SessionContext,
    truth: &[Expectation],
) -> Result<Vec<String>, crate::rules::RuleError> {
    use crate::detect;
    use crate::rules::{load_all, RunWindow};
    let rules = load_all(None)?;
    let p = |s: &str| {
        crate::time::parse_utc(s)
            .map_err(|e| crate::rules::RuleError::Invalid { id: "ground truth".into(), msg: e.to_string() })
    };
    let mut failures = Vec::new();
    for e in truth {
        let rule = crate::rules::by_id(&rules, &e.rule_id)?;
        let at = p(&e.at)?;
        let from = p(e.from.as_deref().unwrap_or(&e.at))?;
        let res = match e.mode {
            Mode::Run => detect::run(ctx, rule, &rule.window_ending(at)?, at).await?,
            Mode::Hunt => detect::run(ctx, rule, &RunWindow { start: from, end: at }, at).await?,
            Mode::Backtest => detect::backtest(ctx, rule, from, at, at).await?,
        };
        let n = res
            .alerts
            .iter()
            .filter(|a| {
                let f: Value = serde_json::from_str(&a.fields).unwrap_or(Value::Null);
                e.fields.iter().all(|(k, v)| f.get(k) == Some(v))
            })
            .count();
        if n != e.count {
            failures.push(format!("{} ({}): expected {} matching alert(s), found {n}", e.scenario, e.rule_id, e.count));
        }
    }
    Ok(failures)
}
