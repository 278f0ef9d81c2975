//! One listing of each table per query planning.
//!
//! DataFusion lists a table's files each time it plans a scan of it, and a rule scans one table
//! several times (it inlines a CTE at each use, and a rollup's view is a union over its stored
//! rows and its source's events): the credential rule lists the audit table six times and the
//! sign-in rollup four. Keeping listings across queries is wrong for wisp — a shell, the rules of
//! one `wisp run` tick, a cluster's scheduler would miss files ingested since, and after a
//! compaction name files no longer there (`session::caches` turns DataFusion's cache off).
//!
//! This cache keeps a listing for the planning that made it and serves it to that planning only.
//! A planning is [`create_physical_plan`] (which `output` and `query` plan with): it runs as a task
//! marked with an id of its own, and a listing is kept under the id of the task that made it and
//! served only to a task with the same id, while that planning runs. So a planning never sees a
//! listing older than its own start nor one made by another planning (which may have listed
//! less, see [`super::prune`]), and DataFusion plannings outside one (compaction, rollup refresh,
//! the shell, `wisp detect`'s enrichment probe, a cluster's scheduler) are served nothing.

use datafusion::common::TableReference;
use datafusion::execution::cache::cache_manager::CachedFileList;
use datafusion::execution::cache::{Cache, CacheEntryInfo, TableScopedPath};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

tokio::task_local! {
    /// The planning the current task is running (see the module), if any.
    static PLANNING: u64;
}

/// The ids of plannings: the next one to give, and those running.
static NEXT: AtomicU64 = AtomicU64::new(1);
static RUNNING: Mutex<BTreeSet<u64>> = Mutex::new(BTreeSet::new());

fn running() -> std::sync::MutexGuard<'static, BTreeSet<u64>> {
    RUNNING.lock().unwrap_or_else(|p| p.into_inner())
}

/// The planning the current task runs, if it runs one.
pub fn current() -> Option<u64> {
    PLANNING.try_with(|p| *p).ok()
}

/// Runs `f` as a planning of its own: the listings made while it runs are served to it alone.
pub async fn planning<F: std::future::Future>(f: F) -> F::Output {
    struct Running(u64);
    impl Drop for Running {
        fn drop(&mut self) {
            running().remove(&self.0);
        }
    }
    let id = NEXT.fetch_add(1, Ordering::SeqCst);
    running().insert(id);
    let _running = Running(id);
    PLANNING.scope(id, f).await
}

/// Plans `df` as a planning of its own: each table it scans is listed once.
pub async fn create_physical_plan(
    df: datafusion::dataframe::DataFrame,
) -> datafusion::common::Result<std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
    Ok(create_physical_plan_timed(df).await?.0)
}

/// Where a planning's time went ([`create_physical_plan_timed`]), in µs: what `--analyze` shows
/// beside the executed plan.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanPhases {
    /// The query's text to a logical plan, parameters bound (measured by the caller).
    pub sql_us: u64,
    /// DataFusion's logical optimizer.
    pub optimize_us: u64,
    /// Listing the tables' partitions and files (`super::prune`).
    pub listing_us: u64,
    /// Reading the kept files' footers ahead (`super::prune::prefetch_footers`), and how many.
    pub footers_us: u64,
    pub footers: u64,
    /// Physical planning, its optimizer rules included.
    pub physical_us: u64,
    /// Of it, the physical optimizer's rules ([`TimedRule`]).
    pub rules_us: u64,
    /// The whole planning from the logical plan on: the phases above but `sql_us`, and what
    /// lies between them.
    pub total_us: u64,
}

impl PlanPhases {
    /// Adds another planning's phases to these (a run of several queries: their sum).
    pub fn add(&mut self, o: PlanPhases) {
        let PlanPhases { sql_us, optimize_us, listing_us, footers_us, footers, physical_us, rules_us, total_us } = o;
        self.sql_us += sql_us;
        self.optimize_us += optimize_us;
        self.listing_us += listing_us;
        self.footers_us += footers_us;
        self.footers += footers;
        self.physical_us += physical_us;
        self.rules_us += rules_us;
        self.total_us += total_us;
    }

    /// Adds `f`'s changes to the current planning's phases (nothing outside a planning).
    pub(crate) fn record(f: impl FnOnce(&mut PlanPhases)) {
        let _ = PHASES.try_with(|p| {
            let mut v = p.get();
            f(&mut v);
            p.set(v);
        });
    }
}

impl std::fmt::Display for PlanPhases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |us: u64| us as f64 / 1e3;
        write!(
            f,
            "SQL to a logical plan {:.1} ms, logical optimization {:.1} ms, listing {:.1} ms, footers {:.1} ms ({} file(s)), physical planning {:.1} ms \
             (its optimizer rules {:.1} ms)",
            ms(self.sql_us),
            ms(self.optimize_us),
            ms(self.listing_us),
            ms(self.footers_us),
            self.footers,
            ms(self.physical_us),
            ms(self.rules_us)
        )
    }
}

tokio::task_local! {
    /// The phases of the planning the current task runs.
    static PHASES: std::cell::Cell<PlanPhases>;
}

/// Microseconds since `since`.
pub(crate) fn micros(since: std::time::Instant) -> u64 {
    since.elapsed().as_micros() as u64
}

/// [`create_physical_plan`], with where its time went.
pub async fn create_physical_plan_timed(
    df: datafusion::dataframe::DataFrame,
) -> datafusion::common::Result<(std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>, PlanPhases)> {
    let phases = std::cell::Cell::new(PlanPhases::default());
    let start = std::time::Instant::now();
    planning(PHASES.scope(phases, async move {
        let (state, plan) = df.into_parts();
        let t = std::time::Instant::now();
        let plan = state.optimize(&plan)?;
        PlanPhases::record(|p| p.optimize_us = micros(t));
        let plan = super::prune::prune_empty_scans(&state, plan).await?;
        let t = std::time::Instant::now();
        let plan = state.query_planner().create_physical_plan(&plan, &state).await?;
        PlanPhases::record(|p| {
            p.physical_us = micros(t);
            p.total_us = micros(start);
        });
        Ok((plan, PHASES.with(|p| p.get())))
    }))
    .await
}

/// A physical optimizer rule whose time is added to the current planning's
/// [`PlanPhases::rules_us`]; the same rule otherwise (its name, its schema check).
#[derive(Debug)]
pub struct TimedRule(pub std::sync::Arc<dyn datafusion::physical_optimizer::PhysicalOptimizerRule + Send + Sync>);

impl datafusion::physical_optimizer::PhysicalOptimizerRule for TimedRule {
    fn optimize(
        &self,
        plan: std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>,
        config: &datafusion::config::ConfigOptions,
    ) -> datafusion::common::Result<std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
        let t = std::time::Instant::now();
        let out = self.0.optimize(plan, config);
        PlanPhases::record(|p| p.rules_us += micros(t));
        out
    }

    fn optimize_with_context(
        &self,
        plan: std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>,
        context: &dyn datafusion::physical_optimizer::PhysicalOptimizerContext,
    ) -> datafusion::common::Result<std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
        let t = std::time::Instant::now();
        let out = self.0.optimize_with_context(plan, context);
        PlanPhases::record(|p| p.rules_us += micros(t));
        out
    }

    fn name(&self) -> &str {
        self.0.name()
    }

    fn schema_check(&self) -> bool {
        self.0.schema_check()
    }
}

/// The name of [`PlanningListCache`] (`Cache::name`).
pub const CACHE_NAME: &str = "wisp::PlanningListCache";

/// DataFusion's list-files cache, holding a listing only for the planning that made it.
#[derive(Default)]
pub struct PlanningListCache {
    /// Listings by the planning that made them.
    entries: Mutex<HashMap<(u64, TableScopedPath), CachedFileList>>,
}

impl PlanningListCache {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<(u64, TableScopedPath), CachedFileList>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Cache<TableScopedPath, CachedFileList> for PlanningListCache {
    fn get(&self, key: &TableScopedPath) -> Option<CachedFileList> {
        let p = current()?;
        self.entries().get(&(p, key.clone())).cloned()
    }

    fn put(&self, key: &TableScopedPath, value: CachedFileList) -> Option<CachedFileList> {
        let p = current()?;
        let mut entries = self.entries();
        // Listings of plannings that have ended are never served again.
        let running = running();
        entries.retain(|(q, _), _| running.contains(q));
        if !running.contains(&p) {
            return None;
        }
        entries.insert((p, key.clone()), value)
    }

    fn remove(&self, k: &TableScopedPath) -> Option<CachedFileList> {
        let p = current()?;
        self.entries().remove(&(p, k.clone()))
    }

    fn contains_key(&self, k: &TableScopedPath) -> bool {
        current().is_some_and(|p| self.entries().contains_key(&(p, k.clone())))
    }

    fn len(&self) -> usize {
        self.entries().len()
    }

    fn clear(&self) {
        self.entries().clear();
    }

    fn name(&self) -> String {
        CACHE_NAME.to_string()
    }

    fn cache_limit(&self) -> usize {
        usize::MAX
    }

    fn update_cache_limit(&self, _limit: usize) {}

    fn cache_ttl(&self) -> Option<Duration> {
        None
    }

    fn update_cache_ttl(&self, _ttl: Option<Duration>) {}

    fn drop_table_entries(&self, table_ref: &TableReference) -> datafusion::common::Result<()> {
        self.entries().retain(|(_, k), _| k.table.as_ref() != Some(table_ref));
        Ok(())
    }

    fn list_entries(&self) -> datafusion::common::HashMap<TableScopedPath, CacheEntryInfo<CachedFileList>> {
        use datafusion::execution::cache::CacheValue;
        let p = current();
        self.entries()
            .iter()
            .filter(|((q, _), _)| Some(*q) == p)
            .map(|((_, k), v)| {
                (k.clone(), CacheEntryInfo { value: v.clone(), size_bytes: v.size(), hits: 0, expires: None })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::path::Path;

    fn key(p: &str) -> TableScopedPath {
        TableScopedPath { table: None, path: Path::from(p) }
    }

    fn list(n: usize) -> CachedFileList {
        CachedFileList::new(
            (0..n)
                .map(|i| object_store::ObjectMeta {
                    location: Path::from(format!("t/day=2026-11-0{i}/f.parquet")),
                    last_modified: chrono::DateTime::UNIX_EPOCH,
                    size: 1,
                    e_tag: None,
                    version: None,
                })
                .collect(),
        )
    }

    fn files(l: Option<CachedFileList>) -> Option<usize> {
        l.map(|l| l.files.len())
    }

    /// Timed rules are the rules they wrap: the same names, in order, and the same plan.
    #[tokio::test]
    async fn timed_rules_plan_as_the_rules_they_wrap() {
        use datafusion::execution::SessionStateBuilder;
        use datafusion::prelude::SessionContext;
        let plain = SessionStateBuilder::new().with_default_features().build();
        let timed =
            plain.physical_optimizers().iter().map(|r| std::sync::Arc::new(TimedRule(r.clone())) as _).collect();
        let timed = SessionStateBuilder::new_from_existing(plain.clone()).with_physical_optimizer_rules(timed).build();
        let names = |s: &datafusion::execution::SessionState| {
            s.physical_optimizers().iter().map(|r| r.name().to_string()).collect::<Vec<_>>()
        };
        assert_eq!(names(&plain), names(&timed));
        let sql = "SELECT a, count(*) AS n FROM (VALUES (1), (2), (1)) AS v(a) GROUP BY a ORDER BY n DESC, a";
        let mut shown = Vec::new();
        for state in [plain, timed] {
            let ctx = SessionContext::new_with_state(state);
            let (plan, phases) = create_physical_plan_timed(ctx.sql(sql).await.unwrap()).await.unwrap();
            assert!(phases.rules_us <= phases.physical_us, "{phases:?}");
            shown.push(datafusion::physical_plan::displayable(plan.as_ref()).indent(true).to_string());
        }
        assert_eq!(shown[0], shown[1]);
    }

    #[tokio::test]
    async fn a_listing_is_shared_within_its_planning_only() {
        let cache = PlanningListCache::default();
        // Outside a planning nothing is kept.
        assert!(cache.get(&key("t")).is_none());
        assert!(cache.put(&key("t"), list(1)).is_none());
        assert_eq!(cache.len(), 0);
        // Within one: the first scan lists, the next ones reuse it.
        planning(async {
            assert!(cache.get(&key("t")).is_none());
            cache.put(&key("t"), list(2));
            assert_eq!(files(cache.get(&key("t"))), Some(2));
            assert!(cache.get(&key("u")).is_none(), "another table is listed on its own");
        })
        .await;
        // Ended: not served, not even to the task that ran it.
        assert!(cache.get(&key("t")).is_none());
        // A later planning lists again, and the ended planning's listing is dropped.
        planning(async {
            assert!(cache.get(&key("t")).is_none());
            cache.put(&key("t"), list(3));
            assert_eq!(files(cache.get(&key("t"))), Some(3));
            assert_eq!(cache.len(), 1);
        })
        .await;
    }

    #[tokio::test]
    async fn plannings_running_together_never_see_each_others_listings() {
        let cache = std::sync::Arc::new(PlanningListCache::default());
        let (a_listed, b_listed) = (tokio::sync::Barrier::new(2), tokio::sync::Barrier::new(2));
        let a = planning(async {
            assert!(cache.get(&key("t")).is_none());
            cache.put(&key("t"), list(1)); // A listed less (its scans keep one day)
            a_listed.wait().await;
            b_listed.wait().await;
            assert_eq!(files(cache.get(&key("t"))), Some(1), "A keeps its own listing");
        });
        let b = planning(async {
            a_listed.wait().await;
            assert!(cache.get(&key("t")).is_none(), "A's listing is not B's");
            cache.put(&key("t"), list(3));
            assert_eq!(files(cache.get(&key("t"))), Some(3));
            b_listed.wait().await;
        });
        tokio::join!(a, b);
        assert!(cache.get(&key("t")).is_none());
    }
}
