//! The detection engine: running rules. A rule (`crate::rules`) says what to look for; this module
//! runs it for a window and turns its rows into alerts with deterministic ids ([`alert`], [`run`]),
//! runs every scheduled run of a range once (backtests, one pass or replay: [`backtest`]), keeps
//! first-seen state for new_terms rules ([`state`]), and resolves what an invocation runs
//! ([`select`]), and schedules them ([`schedule`]: the ledger in [`ledger`], the alert store and
//! state folder in [`store`], delivery in [`sink`]); [`explain`] finds an alert's evidence.
//!
//! Dependencies go one way: `detect` → `rules` → `lake`/`query`/`time`; `rules` never imports
//! `detect`, and nothing here knows an export format.

pub mod alert;
pub mod backtest;
pub mod explain;
pub mod ledger;
pub mod run;
pub mod schedule;
pub mod select;
pub mod sink;
pub mod state;
pub mod store;

pub use alert::{alert_id, alerts_schema, to_batch, Alert};
pub use backtest::{backtest, backtest_one_pass, backtest_replay, run_ends};
pub use run::{run, RunResult};
pub use select::{enrichment_warnings, execute, select, Outcome, TimeFlags, When};
pub use state::{StateError, StateUse};

/// A detection could not be run.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error(transparent)]
    Rule(#[from] crate::rules::RuleError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Time(#[from] crate::time::TimeError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Lake(#[from] crate::lake::LakeError),
    /// Flags that contradict each other or are incomplete.
    #[error("{0}")]
    Usage(String),
}
