//! One listing of each table per query planning.
//!
//! DataFusion lists a table's files each time it plans a scan of it, and a rule scans one table
//! several times (it inlines a CTE at each use, and a rollup's view is a union over its stored
//! rows and its source's events): the credential rule lists the audit table six times and the
//! sign-in rollup four. Keeping listings across queries is wrong for wisp — a shell, the rules of
//! one `wisp run` tick, a cluster's scheduler would miss files ingested since, and after a
//! compaction name files no longer there (`session::caches` turns DataFusion's cache off).
//!
//! This cache keeps a listing for the planning that made it and no longer. A planning opens a
//! [`Scope`] ([`create_physical_plan`], which `output` and `query` plan with); each scope begins a new
//! generation, and a listing is served only within the generation in which it began, while some
//! scope is open. So a planning in a scope never sees a listing older than its own start. A
//! planning outside any scope (compaction, rollup refresh, the shell, `wisp detect`'s enrichment
//! probe, a cluster's scheduler) is served nothing while no scope is open; while one is (only
//! rules planning concurrently in the same process could be), it shares that generation's
//! listings, which began at most that scope's planning ago.

use datafusion::common::TableReference;
use datafusion::execution::cache::cache_manager::CachedFileList;
use datafusion::execution::cache::{Cache, CacheEntryInfo, TableScopedPath};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// The generations of planning scopes and how many are open. One per process (`GENERATIONS`);
/// tests make their own.
pub struct Generations {
    /// The current generation: bumped when a scope opens.
    current: AtomicU64,
    /// How many scopes are open (plannings running concurrently share the generation).
    open: AtomicUsize,
}

impl Generations {
    pub const fn new() -> Self {
        Generations { current: AtomicU64::new(1), open: AtomicUsize::new(0) }
    }

    /// Opens a planning scope: listings made from now on are shared with the scans planned
    /// before it closes (or another scope opens).
    pub fn scope(&'static self) -> Scope {
        self.open.fetch_add(1, Ordering::SeqCst);
        self.current.fetch_add(1, Ordering::SeqCst);
        Scope(self)
    }

    fn current(&self) -> u64 {
        self.current.load(Ordering::SeqCst)
    }

    fn is_open(&self) -> bool {
        self.open.load(Ordering::SeqCst) > 0
    }
}

impl Default for Generations {
    fn default() -> Self {
        Self::new()
    }
}

static GENERATIONS: Generations = Generations::new();

/// An open planning scope: listings are shared while it (or another) is open and no newer scope
/// has begun.
#[must_use = "listings are shared only while the scope is held"]
pub struct Scope(&'static Generations);

/// Opens a planning scope of the process's sessions (see [`Generations::scope`]).
pub fn scope() -> Scope {
    GENERATIONS.scope()
}

/// Plans `df` in a scope of its own: each table it scans is listed once.
pub async fn create_physical_plan(
    df: datafusion::dataframe::DataFrame,
) -> datafusion::common::Result<std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
    let _scope = scope();
    let (state, plan) = df.into_parts();
    let plan = state.optimize(&plan)?;
    let plan = super::prune::prune_empty_scans(&state, plan).await?;
    state.query_planner().create_physical_plan(&plan, &state).await
}

impl Drop for Scope {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Default)]
struct State {
    /// Listings and the generation each is valid in.
    entries: HashMap<TableScopedPath, (u64, CachedFileList)>,
    /// For each table whose listing missed, the generations in which it missed: a listing that
    /// follows is labelled with the oldest, so it is never served to a planning that began after
    /// the listing started (a concurrent planning's listing started before it may finish after).
    missed: HashMap<TableScopedPath, Vec<u64>>,
}

/// DataFusion's list-files cache, holding a listing only for its planning's generation.
pub struct PlanningListCache {
    generations: &'static Generations,
    state: Mutex<State>,
}

impl Default for PlanningListCache {
    fn default() -> Self {
        Self::on(&GENERATIONS)
    }
}

impl PlanningListCache {
    /// A cache whose scopes are `generations`' (the process's: `default`).
    pub fn on(generations: &'static Generations) -> Self {
        PlanningListCache { generations, state: Mutex::default() }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Cache<TableScopedPath, CachedFileList> for PlanningListCache {
    fn get(&self, key: &TableScopedPath) -> Option<CachedFileList> {
        if !self.generations.is_open() {
            return None;
        }
        let generation = self.generations.current();
        let mut s = self.state();
        match s.entries.get(key) {
            Some((g, list)) if *g == generation => Some(list.clone()),
            _ => {
                s.missed.entry(key.clone()).or_default().push(generation);
                None
            }
        }
    }

    fn put(&self, key: &TableScopedPath, value: CachedFileList) -> Option<CachedFileList> {
        let generation = self.generations.current();
        let mut s = self.state();
        let since = s.missed.remove(key).and_then(|gs| gs.into_iter().min());
        // Only the current generation's listings are kept; older ones are never served again.
        s.entries.retain(|_, (g, _)| *g == generation);
        s.missed.retain(|_, gs| gs.contains(&generation));
        match since {
            Some(g) if g == generation && self.generations.is_open() => {
                s.entries.insert(key.clone(), (g, value)).map(|(_, v)| v)
            }
            _ => None,
        }
    }

    fn remove(&self, k: &TableScopedPath) -> Option<CachedFileList> {
        self.state().entries.remove(k).map(|(_, v)| v)
    }

    fn contains_key(&self, k: &TableScopedPath) -> bool {
        let generation = self.generations.current();
        self.generations.is_open() && self.state().entries.get(k).is_some_and(|(g, _)| *g == generation)
    }

    fn len(&self) -> usize {
        self.state().entries.len()
    }

    fn clear(&self) {
        let mut s = self.state();
        s.entries.clear();
        s.missed.clear();
    }

    fn name(&self) -> String {
        "wisp::PlanningListCache".to_string()
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
        self.state().entries.retain(|k, _| k.table.as_ref() != Some(table_ref));
        Ok(())
    }

    fn list_entries(&self) -> datafusion::common::HashMap<TableScopedPath, CacheEntryInfo<CachedFileList>> {
        use datafusion::execution::cache::CacheValue;
        self.state()
            .entries
            .iter()
            .map(|(k, (_, v))| {
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

    fn generations() -> &'static Generations {
        Box::leak(Box::new(Generations::new()))
    }

    #[test]
    fn a_listing_is_shared_within_its_planning_only() {
        let g = generations();
        let cache = PlanningListCache::on(g);
        // Outside a scope nothing is kept.
        assert!(cache.get(&key("t")).is_none());
        assert!(cache.put(&key("t"), list(1)).is_none());
        assert_eq!(cache.len(), 0);
        // Within one: the first scan lists, the next ones reuse it.
        let first = g.scope();
        assert!(cache.get(&key("t")).is_none());
        cache.put(&key("t"), list(2));
        assert_eq!(cache.get(&key("t")).map(|l| l.files.len()), Some(2));
        assert!(cache.get(&key("u")).is_none(), "another table is listed on its own");
        drop(first);
        // Closed: not served, even though kept.
        assert!(cache.get(&key("t")).is_none());
        // A later planning lists again.
        let _second = g.scope();
        assert!(cache.get(&key("t")).is_none());
        cache.put(&key("t"), list(3));
        assert_eq!(cache.get(&key("t")).map(|l| l.files.len()), Some(3));
    }

    #[test]
    fn a_listing_begun_before_a_planning_is_never_served_to_it() {
        let g = generations();
        let cache = PlanningListCache::on(g);
        let a = g.scope();
        assert!(cache.get(&key("t")).is_none()); // planning A starts listing `t`
        let b = g.scope(); // planning B begins: files may have landed since A's listing began
        assert!(cache.get(&key("t")).is_none()); // B lists `t` too
        cache.put(&key("t"), list(1)); // A's listing ends first
        assert!(!cache.contains_key(&key("t")), "A's listing began before B: not B's");
        cache.put(&key("t"), list(2)); // B's ends: its miss went with A's, so it is not kept either
        assert!(!cache.contains_key(&key("t")));
        // B's next scan lists anew, and that listing is shared.
        assert!(cache.get(&key("t")).is_none());
        cache.put(&key("t"), list(3));
        assert_eq!(cache.get(&key("t")).map(|l| l.files.len()), Some(3));
        drop((a, b));
        assert!(!cache.contains_key(&key("t")));
    }
}
