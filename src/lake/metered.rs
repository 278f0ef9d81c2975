//! Counts what wisp asks of remote object stores: every store a remote location opens is wrapped
//! in [`Metered`], which adds to process-wide counters (requests by kind, bytes fetched and
//! written) and passes the call on unchanged. `WISP_STORE_STATS=1` prints them on stderr when a
//! command ends (BENCHMARKS.md compares the same command on an emulator and on local disk).

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, RenameOptions, Result,
};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// Process-wide counters of remote store calls.
#[derive(Debug, Default)]
pub struct StoreStats {
    pub gets: AtomicU64,
    pub ranged_gets: AtomicU64,
    pub heads: AtomicU64,
    pub lists: AtomicU64,
    pub puts: AtomicU64,
    pub deletes: AtomicU64,
    pub other: AtomicU64,
    pub bytes_fetched: AtomicU64,
    pub bytes_written: AtomicU64,
}

pub static STATS: StoreStats = StoreStats {
    gets: AtomicU64::new(0),
    ranged_gets: AtomicU64::new(0),
    heads: AtomicU64::new(0),
    lists: AtomicU64::new(0),
    puts: AtomicU64::new(0),
    deletes: AtomicU64::new(0),
    other: AtomicU64::new(0),
    bytes_fetched: AtomicU64::new(0),
    bytes_written: AtomicU64::new(0),
};

impl StoreStats {
    /// Calls made so far (each ranged read of a `get_ranges` counts once).
    pub fn requests(&self) -> u64 {
        [&self.gets, &self.ranged_gets, &self.heads, &self.lists, &self.puts, &self.deletes, &self.other]
            .iter()
            .map(|c| c.load(Relaxed))
            .sum()
    }

    /// One line for stderr, or `None` when no remote store was used.
    pub fn summary(&self) -> Option<String> {
        let n = self.requests();
        (n > 0).then(|| {
            format!(
                "object store: {n} requests ({} GET, {} ranged GET, {} HEAD, {} LIST, {} PUT, {} DELETE, {} other); \
                 {:.3} MB fetched, {:.3} MB written",
                self.gets.load(Relaxed),
                self.ranged_gets.load(Relaxed),
                self.heads.load(Relaxed),
                self.lists.load(Relaxed),
                self.puts.load(Relaxed),
                self.deletes.load(Relaxed),
                self.other.load(Relaxed),
                self.bytes_fetched.load(Relaxed) as f64 / 1e6,
                self.bytes_written.load(Relaxed) as f64 / 1e6,
            )
        })
    }
}

/// A store whose calls are counted in [`STATS`].
#[derive(Debug)]
pub struct Metered(pub Arc<dyn ObjectStore>);

impl std::fmt::Display for Metered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Metered({})", self.0)
    }
}

#[async_trait::async_trait]
impl ObjectStore for Metered {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        STATS.puts.fetch_add(1, Relaxed);
        STATS.bytes_written.fetch_add(payload.content_length() as u64, Relaxed);
        self.0.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        STATS.other.fetch_add(1, Relaxed);
        self.0.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let head = options.head;
        let r = self.0.get_opts(location, options).await;
        if head {
            STATS.heads.fetch_add(1, Relaxed);
        } else {
            STATS.gets.fetch_add(1, Relaxed);
            if let Ok(g) = &r {
                STATS.bytes_fetched.fetch_add(g.range.end.saturating_sub(g.range.start), Relaxed);
            }
        }
        r
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        STATS.ranged_gets.fetch_add(ranges.len() as u64, Relaxed);
        let r = self.0.get_ranges(location, ranges).await;
        if let Ok(parts) = &r {
            STATS.bytes_fetched.fetch_add(parts.iter().map(|b| b.len() as u64).sum(), Relaxed);
        }
        r
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        let counted = locations.inspect(|_| {
            STATS.deletes.fetch_add(1, Relaxed);
        });
        self.0.delete_stream(counted.boxed())
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        STATS.lists.fetch_add(1, Relaxed);
        self.0.list(prefix)
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        STATS.lists.fetch_add(1, Relaxed);
        self.0.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        STATS.lists.fetch_add(1, Relaxed);
        self.0.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        STATS.other.fetch_add(1, Relaxed);
        self.0.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        STATS.other.fetch_add(1, Relaxed);
        self.0.rename_opts(from, to, options).await
    }
}
