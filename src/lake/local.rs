//! The `file://` store of query sessions over a local lake: small reads on the calling thread.
//!
//! `object_store`'s `LocalFileSystem` runs every read in tokio's blocking pool. A short window
//! reads a few footers and column chunks of tens of files, each a `pread` of kilobytes served from
//! the page cache in microseconds, and every read handed to the pool cost more than itself: a
//! thread woken or created (each new thread its own allocator heap, whose first pages the kernel
//! zeroes), the buffer allocated on that thread and freed on another, so never reused. Reads of
//! at most [`INLINE_MAX`] bytes are done where they are asked for; larger ones (the column
//! chunks of long scans, where a cold disk's latency matters) and everything else (listing,
//! writing, reads with preconditions) go to `LocalFileSystem` unchanged. The bytes returned are
//! the same either way (the tests below).

use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};
use std::fs::{File, Metadata};
use std::ops::Range;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::Arc;

/// Reads up to this many bytes in all are served on the calling thread.
pub const INLINE_MAX: u64 = 1 << 20;

/// `LocalFileSystem` with small reads done inline.
#[derive(Debug)]
pub struct LocalStore {
    inner: Arc<LocalFileSystem>,
}

impl Default for LocalStore {
    fn default() -> Self {
        LocalStore { inner: Arc::new(LocalFileSystem::new()) }
    }
}

impl std::fmt::Display for LocalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LocalStore(inline reads ≤ {INLINE_MAX} bytes; {})", self.inner)
    }
}

fn io_err(path: &std::path::Path, location: &Path, e: std::io::Error) -> object_store::Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        object_store::Error::NotFound { path: location.to_string(), source: Box::new(e) }
    } else {
        object_store::Error::Generic {
            store: "LocalFileSystem",
            source: format!("reading {}: {e}", path.display()).into(),
        }
    }
}

/// The same metadata `LocalFileSystem` reports (its e-tag scheme: inode, mtime in µs, size).
fn object_meta(location: &Path, m: &Metadata) -> ObjectMeta {
    let mtime = m.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).unwrap_or_default();
    ObjectMeta {
        location: location.clone(),
        last_modified: chrono::DateTime::from_timestamp(mtime.as_secs() as i64, mtime.subsec_nanos())
            .unwrap_or_default(),
        size: m.len(),
        e_tag: Some(format!("{:x}-{:x}-{:x}", m.ino(), mtime.as_micros(), m.len())),
        version: None,
    }
}

/// Reads exactly `range` of `file`; a file shorter than the range is an error, as in
/// `LocalFileSystem`.
fn read_exact(file: &File, path: &std::path::Path, location: &Path, range: Range<u64>) -> Result<Bytes> {
    let mut buf = vec![0u8; (range.end - range.start) as usize];
    file.read_exact_at(&mut buf, range.start).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            object_store::Error::Generic {
                store: "LocalFileSystem",
                source: format!("{}: range {}..{} is past the end of the file", path.display(), range.start, range.end)
                    .into(),
            }
        } else {
            io_err(path, location, e)
        }
    })?;
    Ok(buf.into())
}

fn has_preconditions(o: &GetOptions) -> bool {
    o.if_match.is_some()
        || o.if_none_match.is_some()
        || o.if_modified_since.is_some()
        || o.if_unmodified_since.is_some()
        || o.version.is_some()
}

#[async_trait::async_trait]
impl ObjectStore for LocalStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        // Only ranged reads of a known small size without preconditions are done here.
        let small = match &options.range {
            Some(r @ object_store::GetRange::Bounded(b)) if b.end.saturating_sub(b.start) <= INLINE_MAX => Some(r),
            Some(r @ object_store::GetRange::Suffix(n)) if *n <= INLINE_MAX => Some(r),
            _ => None,
        };
        let Some(wanted) = small.filter(|_| !options.head && !has_preconditions(&options)).cloned() else {
            return self.inner.get_opts(location, options).await;
        };
        let path = self.inner.path_to_filesystem(location)?;
        let file = File::open(&path).map_err(|e| io_err(&path, location, e))?;
        let m = file.metadata().map_err(|e| io_err(&path, location, e))?;
        if m.is_dir() {
            return self.inner.get_opts(location, options).await;
        }
        let meta = object_meta(location, &m);
        let range = wanted
            .as_range(meta.size)
            .map_err(|e| object_store::Error::Generic { store: "LocalFileSystem", source: Box::new(e) })?;
        let bytes = read_exact(&file, &path, location, range.clone())?;
        Ok(GetResult {
            payload: GetResultPayload::Stream(Box::pin(futures::stream::once(async move { Ok(bytes) }))),
            meta,
            range,
            attributes: Default::default(),
        })
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let total: u64 = ranges.iter().map(|r| r.end.saturating_sub(r.start)).sum();
        if total > INLINE_MAX {
            return self.inner.get_ranges(location, ranges).await;
        }
        let path = self.inner.path_to_filesystem(location)?;
        let file = File::open(&path).map_err(|e| io_err(&path, location, e))?;
        ranges.iter().map(|r| read_exact(&file, &path, location, r.clone())).collect()
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::{GetRange, ObjectStoreExt};

    /// A file of `n` bytes whose every byte differs from its neighbours'.
    fn file(dir: &std::path::Path, n: usize) -> Path {
        let p = dir.join("f.parquet");
        std::fs::write(&p, (0..n).map(|i| (i * 7 + i / 251) as u8).collect::<Vec<u8>>()).unwrap();
        Path::from_filesystem_path(&p).unwrap()
    }

    fn get(range: GetRange) -> GetOptions {
        GetOptions { range: Some(range), ..Default::default() }
    }

    #[tokio::test]
    async fn reads_the_same_bytes_and_metadata_as_local_file_system() {
        let dir = tempfile::tempdir().unwrap();
        let n = 3 * INLINE_MAX as usize;
        let loc = file(dir.path(), n);
        let ours = LocalStore::default();
        let theirs = LocalFileSystem::new();
        let ranges = [
            GetRange::Bounded(0..10),
            GetRange::Bounded(100..100 + INLINE_MAX), // the largest inline read
            GetRange::Bounded(5..5 + INLINE_MAX + 1), // one byte more: the pool's
            GetRange::Suffix(65536),
            GetRange::Suffix(2 * INLINE_MAX),
            GetRange::Offset(n as u64 - 9),
            GetRange::Bounded(n as u64 - 4..n as u64),
        ];
        for r in ranges {
            let a = ours.get_opts(&loc, get(r.clone())).await.unwrap();
            let b = theirs.get_opts(&loc, get(r.clone())).await.unwrap();
            assert_eq!((&a.meta, &a.range), (&b.meta, &b.range), "{r:?}");
            assert_eq!(a.bytes().await.unwrap(), b.bytes().await.unwrap(), "{r:?}");
        }
        let many = [0..3, 17..4096, 65536..65536 + 1000, n as u64 - 8..n as u64];
        assert_eq!(ours.get_ranges(&loc, &many).await.unwrap(), theirs.get_ranges(&loc, &many).await.unwrap());
        let big = [0..INLINE_MAX, INLINE_MAX..INLINE_MAX + 2];
        assert_eq!(ours.get_ranges(&loc, &big).await.unwrap(), theirs.get_ranges(&loc, &big).await.unwrap());
        assert_eq!(ours.head(&loc).await.unwrap(), theirs.head(&loc).await.unwrap());
    }

    #[tokio::test]
    #[allow(clippy::single_range_in_vec_init)] // one range of bytes, not a vector of numbers
    async fn missing_files_and_ranges_past_the_end_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let loc = file(dir.path(), 100);
        let ours = LocalStore::default();
        let gone = Path::from_filesystem_path(dir.path()).unwrap().join("gone.parquet");
        let e = ours.get_opts(&gone, get(GetRange::Bounded(0..4))).await.unwrap_err();
        assert!(matches!(e, object_store::Error::NotFound { .. }), "{e}");
        let e = ours.get_ranges(&gone, &[0..4]).await.unwrap_err();
        assert!(matches!(e, object_store::Error::NotFound { .. }), "{e}");
        // A bounded read past the end: LocalFileSystem's ranged GET clamps, its get_ranges fails.
        let a = ours.get_opts(&loc, get(GetRange::Bounded(90..120))).await;
        let b = LocalFileSystem::new().get_opts(&loc, get(GetRange::Bounded(90..120))).await;
        assert_eq!(a.is_ok(), b.is_ok());
        if let (Ok(a), Ok(b)) = (a, b) {
            assert_eq!(a.range, b.range);
            assert_eq!(a.bytes().await.unwrap(), b.bytes().await.unwrap());
        }
        let e = ours.get_ranges(&loc, &[90..120]).await.unwrap_err();
        assert!(e.to_string().contains("past the end"), "{e}");
        assert!(LocalFileSystem::new().get_ranges(&loc, &[90..120]).await.is_err());
        // Preconditions go to LocalFileSystem, which checks them.
        let stale = GetOptions { if_match: Some("not-the-etag".into()), ..get(GetRange::Bounded(0..4)) };
        assert!(matches!(ours.get_opts(&loc, stale).await, Err(object_store::Error::Precondition { .. })));
    }

    #[tokio::test]
    async fn query_sessions_over_a_local_lake_read_through_it() {
        let dir = tempfile::tempdir().unwrap();
        let lake = crate::lake::Lake::open(dir.path().to_str().unwrap()).unwrap();
        let ctx = crate::session::open(&lake, &Default::default()).await.unwrap();
        let url = datafusion::execution::object_store::ObjectStoreUrl::local_filesystem();
        let store = ctx.runtime_env().object_store(url).unwrap();
        assert!(store.to_string().starts_with("LocalStore("), "{store}");
        // And footers are read with the lake's hint, not DataFusion's 512 KiB.
        assert_eq!(crate::session::parquet_format().metadata_size_hint(), Some(crate::session::FOOTER_HINT));
    }
}
