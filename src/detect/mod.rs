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

/// Runs `f` for every rule, at most `sessions.len()` at a time (each on a Tokio task, in a session
/// of its own taken from `sessions` and given back when done), and yields the outputs in the
/// rules' order as they become available. Sessions should share one runtime
/// ([`crate::session::open_many`]) so that the rules together stay within one memory pool.
pub fn each_rule<T, F, Fut>(
    sessions: Vec<datafusion::prelude::SessionContext>,
    rules: &[crate::rules::Rule],
    f: F,
) -> impl futures::Stream<Item = T>
where
    F: Fn(datafusion::prelude::SessionContext, crate::rules::Rule) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    use futures::StreamExt;
    let n = sessions.len().max(1);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    for s in sessions {
        let _ = tx.send(s);
    }
    let rx = std::sync::Arc::new(tokio::sync::Mutex::new(rx));
    futures::stream::iter(rules.to_vec())
        .map(move |r| {
            let (tx, rx, f) = (tx.clone(), rx.clone(), f.clone());
            async move {
                let task = tokio::spawn(async move {
                    // At most `n` tasks exist at once and each gives its session back: one is free.
                    let ctx = rx.lock().await.recv().await.expect("a session per concurrent rule");
                    let out = f(ctx.clone(), r).await;
                    let _ = tx.send(ctx);
                    out
                });
                match task.await {
                    Ok(out) => out,
                    Err(e) => std::panic::resume_unwind(e.into_panic()),
                }
            }
        })
        .buffered(n)
}
