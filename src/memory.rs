//! Memory: the pool that bounds what query operators reserve, and a watch over what the process
//! really holds.
//!
//! The pool ([`pool`]) is DataFusion's fair spill pool, wrapped so that it knows its consumers by
//! name: when a query runs out of it, the error names the operators holding the most, and the
//! watch can say who held what at any moment.
//!
//! What the pool does not see (Parquet readers' column chunks, batches between operators, list
//! accumulators it under-counts, memory the allocator keeps mapped after a free) is what decides
//! whether a command stays within its RSS budget. `WISP_MEMORY_TRACE=FILE` starts a [`Watch`]
//! that samples, every 100 ms, the resident set, the bytes the program has live on the heap
//! (counted by [`Counting`], the binary's allocator), the pool's reservation and its largest
//! consumers, and writes them to FILE as CSV; at the end a summary line on stderr gives the peak
//! RSS and what the heap and the pool held at that moment.

use datafusion::execution::memory_pool::{FairSpillPool, MemoryPool, TrackConsumersPool};
use std::alloc::{GlobalAlloc, Layout};
use std::io::Write;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// The pool every session and compaction uses.
pub type Pool = TrackConsumersPool<FairSpillPool>;

/// Pools alive in this process, for the watch.
static POOLS: Mutex<Vec<Weak<Pool>>> = Mutex::new(Vec::new());

/// A pool of `limit` bytes shared fairly among the operators that can spill; it names its five
/// largest consumers when a reservation fails.
pub fn pool(limit: usize) -> Arc<Pool> {
    let p = Arc::new(TrackConsumersPool::new(FairSpillPool::new(limit), NonZeroUsize::new(5).expect("5 > 0")));
    let mut pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
    pools.retain(|w| w.strong_count() > 0);
    pools.push(Arc::downgrade(&p));
    p
}

/// What the live pools hold: bytes reserved in all, and the largest consumers by name (summed
/// over partitions of the same operator), largest first.
pub fn pool_snapshot(top: usize) -> (usize, Vec<(String, usize)>) {
    let pools: Vec<Arc<Pool>> = {
        let pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
        pools.iter().filter_map(Weak::upgrade).collect()
    };
    let mut total = 0;
    let mut held = Vec::new();
    for p in &pools {
        total += p.reserved();
        held.extend(p.metrics().into_iter().map(|m| (m.name, m.reserved)));
    }
    (total, by_operator(held, top))
}

/// Reservations summed per operator ("HashJoinInput[3]" and "HashJoinInput[1]" are one
/// operator's partitions), the `top` largest first, empty ones left out.
fn by_operator(held: Vec<(String, usize)>, top: usize) -> Vec<(String, usize)> {
    let mut by_name: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (name, bytes) in held.into_iter().filter(|(_, b)| *b > 0) {
        let op = name.split('[').next().unwrap_or(&name).to_string();
        *by_name.entry(op).or_default() += bytes;
    }
    let mut v: Vec<(String, usize)> = by_name.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(top);
    v
}

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicIsize = AtomicIsize::new(0);

/// A global allocator that, once [`count_heap`] is called, counts the bytes live on the heap
/// (allocated and not yet freed). Until then it costs one relaxed load per call.
pub struct Counting<A>(pub A);

/// Starts counting live heap bytes in [`Counting`]. Bytes allocated before are not known, so frees
/// of them make the count lower than the truth by at most what was live at this moment; call it
/// first thing.
pub fn count_heap() {
    COUNTING.store(true, Ordering::Relaxed);
}

/// Bytes live on the heap since counting started, when it has.
pub fn heap_live() -> Option<usize> {
    COUNTING.load(Ordering::Relaxed).then(|| LIVE.load(Ordering::Relaxed).max(0) as usize)
}

/// Adds `delta` bytes to the live count when counting.
#[inline]
fn count(delta: isize) {
    if COUNTING.load(Ordering::Relaxed) {
        LIVE.fetch_add(delta, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded to the wrapped allocator unchanged; the counter is a side effect.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Counting<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { self.0.alloc(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { self.0.alloc_zeroed(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { self.0.dealloc(ptr, layout) };
        count(-(layout.size() as isize));
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { self.0.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count(new_size as isize - layout.size() as isize);
        }
        p
    }
}

/// The process's resident set in bytes (Linux `/proc/self/statm`), when it can be read.
pub fn rss() -> Option<usize> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = s.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// One sample of the watch.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub at: Duration,
    pub rss: usize,
    pub heap: Option<usize>,
    pub pool: usize,
    pub top: Vec<(String, usize)>,
}

impl Sample {
    fn take(start: Instant) -> Sample {
        let (pool, top) = pool_snapshot(3);
        Sample { at: start.elapsed(), rss: rss().unwrap_or(0), heap: heap_live(), pool, top }
    }
}

/// Samples memory on its own thread until dropped (or [`Watch::finish`]ed), writing every sample
/// to a CSV file; keeps the sample of peak RSS.
pub struct Watch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<std::io::Result<Sample>>>,
    path: PathBuf,
}

/// Megabytes, for humans.
fn mib(b: usize) -> String {
    format!("{:.0}", b as f64 / (1024.0 * 1024.0))
}

impl Watch {
    /// Starts a watch writing to `path` every `every`.
    pub fn start(path: &Path, every: Duration) -> std::io::Result<Watch> {
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        writeln!(out, "seconds,rss_mib,heap_mib,pool_mib,top_consumers")?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let start = Instant::now();
        let thread = std::thread::Builder::new().name("wisp-memory-watch".into()).spawn(move || {
            let mut peak = Sample::default();
            loop {
                let done = flag.load(Ordering::Relaxed);
                let s = Sample::take(start);
                let top: Vec<String> = s.top.iter().map(|(n, b)| format!("{n}={}", mib(*b))).collect();
                writeln!(
                    out,
                    "{:.1},{},{},{},{}",
                    s.at.as_secs_f64(),
                    mib(s.rss),
                    s.heap.map(mib).unwrap_or_default(),
                    mib(s.pool),
                    top.join(" ")
                )?;
                if s.rss >= peak.rss {
                    peak = s;
                }
                if done {
                    out.flush()?;
                    return Ok(peak);
                }
                std::thread::park_timeout(every);
            }
        })?;
        Ok(Watch { stop, thread: Some(thread), path: path.to_path_buf() })
    }

    /// Stops the watch; returns the sample of peak RSS.
    pub fn finish(mut self) -> std::io::Result<Sample> {
        self.stop_thread()
    }

    fn stop_thread(&mut self) -> std::io::Result<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take() {
            Some(t) => {
                t.thread().unpark();
                t.join().map_err(|_| std::io::Error::other("the memory watch panicked"))?
            }
            None => Ok(Sample::default()),
        }
    }

    /// The file the samples go to.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.stop_thread();
    }
}

/// The summary line of a watch's peak.
pub fn summary(peak: &Sample, path: &Path) -> String {
    let top: Vec<String> = peak.top.iter().map(|(n, b)| format!("{n} {} MiB", mib(*b))).collect();
    format!(
        "memory: peak RSS {} MiB at {:.1} s; then heap {} MiB, pool {} MiB{}{} (samples in {})",
        mib(peak.rss),
        peak.at.as_secs_f64(),
        peak.heap.map(mib).unwrap_or_else(|| "?".into()),
        mib(peak.pool),
        if top.is_empty() { "" } else { ": " },
        top.join(", "),
        path.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::memory_pool::MemoryConsumer;

    #[test]
    fn reservations_are_summed_per_operator_largest_first() {
        let held = [("HashJoinInput[0]", 3), ("ExternalSorter[0]", 4), ("HashJoinInput[1]", 2), ("Repartition", 0)];
        let held = held.iter().map(|(n, b)| (n.to_string(), *b << 20)).collect();
        assert_eq!(
            by_operator(held, 5),
            vec![("HashJoinInput".to_string(), 5 << 20), ("ExternalSorter".to_string(), 4 << 20)]
        );
    }

    #[test]
    fn the_snapshot_sees_a_live_pool() {
        let p: Arc<dyn MemoryPool> = pool(100 << 20);
        let r = MemoryConsumer::new("SnapshotTestOperator[0]").register(&p);
        r.grow(7 << 20);
        let (total, top) = pool_snapshot(usize::MAX);
        assert!(total >= 7 << 20, "{total}");
        assert!(top.contains(&("SnapshotTestOperator".to_string(), 7 << 20)), "{top:?}");
        drop(r);
        drop(p);
        assert!(!pool_snapshot(usize::MAX).1.iter().any(|(n, _)| n == "SnapshotTestOperator"));
    }

    #[test]
    fn a_failed_reservation_names_the_consumers_holding_the_pool() {
        let p: Arc<dyn MemoryPool> = pool(10 << 20);
        let big = MemoryConsumer::new("HashJoinInput[0]").register(&p);
        big.grow(9 << 20);
        let small = MemoryConsumer::new("ExternalSorter[1]").with_can_spill(true).register(&p);
        let e = small.try_grow(4 << 20).unwrap_err().to_string();
        assert!(e.contains("HashJoinInput[0]"), "{e}");
    }

    #[test]
    fn the_watch_writes_samples_and_keeps_the_peak() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mem.csv");
        let w = Watch::start(&path, Duration::from_millis(5)).unwrap();
        let v = vec![1u8; 64 << 20];
        std::thread::sleep(Duration::from_millis(50));
        let peak = w.finish().unwrap();
        assert!(v.iter().all(|b| *b == 1));
        assert!(peak.rss >= 64 << 20, "{}", peak.rss);
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("seconds,rss_mib,heap_mib,pool_mib,top_consumers"));
        assert!(lines.count() >= 2, "{text}");
        assert!(summary(&peak, &path).starts_with("memory: peak RSS "));
    }
}
