//! The `file://` store of query sessions over a local lake: small reads on the calling thread.
//!
//! `object_store`'s `LocalFileSystem` runs every read in tokio's blocking pool. A short window
//! reads a few footers and column chunks of tens of files, each a `pread` of kilobytes served from
//! the page cache in microseconds, and every read handed to the pool cost more than itself: a
//! thread woken or created (each new thread its own allocator heap, whose first pages the kernel
//! zeroes), the buffer allocated on that thread and freed on another, so never reused. Reads of
//! at most [`INLINE_MAX`] bytes are done where they are asked for; larger ones (the column
//! chunks of long scans, where a cold disk's latency matters) and everything else (writing,
//! reads with preconditions) go to `LocalFileSystem` unchanged. The bytes returned are the same
//! either way (the tests below).
//!
//! Listings likewise: a short window's planning lists a dozen day folders of a few entries each,
//! all at once, and `LocalFileSystem` walks each on a blocking thread — a medium lake's one-hour
//! Key Vault window started nine threads for it. A listing of at most [`INLINE_LIST_MAX`]
//! entries is walked where it is asked for, as `LocalFileSystem` walks it (the same `walkdir`
//! settings, entries, metadata and errors); a walk that finds more is dropped and the listing
//! handed to `LocalFileSystem`, so no thread of the runtime walks more than that.

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
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

/// Listings whose walk meets at most this many entries (files and folders) are done on the
/// calling thread.
pub const INLINE_LIST_MAX: usize = 1024;

/// An error of this store, named as `LocalFileSystem` names its own.
fn generic(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> object_store::Error {
    object_store::Error::Generic { store: "LocalFileSystem", source: source.into() }
}

/// `LocalFileSystem` with small reads and listings done inline.
#[derive(Debug)]
pub struct LocalStore {
    inner: Arc<LocalFileSystem>,
    /// Where locations start: the filesystem's root, or a lake's folder.
    root: Root,
}

/// The folder a store's locations are relative to, as a URL (as `LocalFileSystem` keeps it) and
/// as a location from the filesystem's root.
#[derive(Debug)]
struct Root {
    url: url::Url,
    from_fs_root: Path,
}

impl Default for LocalStore {
    fn default() -> Self {
        let url = url::Url::parse("file:///").expect("a valid URL");
        LocalStore { inner: Arc::new(LocalFileSystem::new()), root: Root { url, from_fs_root: Path::default() } }
    }
}

impl LocalStore {
    /// The store of the folder `dir` (absolute and canonical, as `LocalFileSystem::new_with_prefix`
    /// takes it): locations are relative to it.
    pub fn new_with_prefix(dir: &std::path::Path) -> Result<Self> {
        let inner = LocalFileSystem::new_with_prefix(dir)?;
        let url = url::Url::from_directory_path(dir)
            .map_err(|_| generic(format!("{} is not an absolute path", dir.display())))?;
        Ok(LocalStore { inner: Arc::new(inner), root: Root { url, from_fs_root: Path::from_absolute_path(dir)? } })
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
        generic(format!("reading {}: {e}", path.display()))
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
            generic(format!("{}: range {}..{} is past the end of the file", path.display(), range.start, range.end))
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

impl Root {
    /// The folder of `prefix` (the root for none), as `LocalFileSystem` resolves it.
    fn to_filesystem(&self, prefix: Option<&Path>) -> Result<std::path::PathBuf> {
        let mut url = self.url.clone();
        if let Some(p) = prefix {
            url.path_segments_mut().expect("a file URL has a path").pop_if_empty().extend(p.parts());
        }
        url.to_file_path().map_err(|_| generic(format!("{url} is not a path of this filesystem")))
    }

    /// The location of a walked entry (under the root).
    fn location(&self, p: &std::path::Path) -> Result<Path> {
        let from_fs_root = Path::from_absolute_path(p)?;
        let under = from_fs_root.prefix_match(&self.from_fs_root).map(Path::from_iter);
        match under {
            Some(location) => Ok(location),
            None => Err(generic(format!("{} is outside {}", p.display(), self.url))),
        }
    }
}

/// Whether `LocalFileSystem` lists a file at `path`: not one of its own unfinished uploads (a
/// name ending in `#` and digits).
fn is_valid_file_path(path: &Path) -> bool {
    match path.filename() {
        Some(p) => match p.split_once('#') {
            Some((_, suffix)) if !suffix.is_empty() => !suffix.bytes().all(|b| b.is_ascii_digit()),
            _ => true,
        },
        None => false,
    }
}

/// A walked entry as `LocalFileSystem` keeps it: a vanished entry or a broken link is skipped,
/// as is a folder that vanished during the walk.
fn kept_entry(res: std::result::Result<walkdir::DirEntry, walkdir::Error>) -> Result<Option<walkdir::DirEntry>> {
    match res {
        Ok(entry) => match std::fs::symlink_metadata(entry.path()) {
            Ok(attr) if attr.is_symlink() => Ok(std::fs::metadata(entry.path()).ok().map(|_| entry)),
            Ok(_) => Ok(Some(entry)),
            Err(_) => Ok(None),
        },
        Err(e) if e.io_error().is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound) => Ok(None),
        Err(e) => Err(generic(e)),
    }
}

/// A file entry's metadata (`None`: it vanished).
fn entry_meta(entry: &walkdir::DirEntry, location: Path) -> Result<Option<ObjectMeta>> {
    match entry.metadata() {
        Ok(m) => Ok(Some(object_meta(&location, &m))),
        Err(e) if e.io_error().is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound) => Ok(None),
        Err(e) => Err(generic(format!("reading the metadata of {location}: {e}"))),
    }
}

/// The files under `prefix` (after `offset`), walked here as `LocalFileSystem::list` walks them,
/// in the same order; `None` when the walk meets more than [`INLINE_LIST_MAX`] entries.
fn walk(root: &Root, prefix: Option<&Path>, offset: Option<&Path>) -> Option<Vec<Result<ObjectMeta>>> {
    let dir = match root.to_filesystem(prefix) {
        Ok(d) => d,
        Err(e) => return Some(vec![Err(e)]),
    };
    let mut out = Vec::new();
    for (seen, res) in walkdir::WalkDir::new(dir).min_depth(1).follow_links(true).into_iter().enumerate() {
        if seen >= INLINE_LIST_MAX {
            return None;
        }
        if let (Some(offset), Ok(entry)) = (offset, res.as_ref()) {
            match root.location(entry.path()) {
                Ok(p) if p <= *offset => continue,
                Err(e) => {
                    out.push(Err(e));
                    continue;
                }
                Ok(_) => {}
            }
        }
        let entry = match kept_entry(res) {
            Ok(Some(e)) => e,
            Ok(None) => continue,
            Err(e) => {
                out.push(Err(e));
                continue;
            }
        };
        if !entry.path().is_file() {
            continue;
        }
        match root.location(entry.path()) {
            Ok(p) if is_valid_file_path(&p) => {
                if let Some(m) = entry_meta(&entry, p).transpose() {
                    out.push(m);
                }
            }
            Ok(_) => {}
            Err(e) => out.push(Err(e)),
        }
    }
    Some(out)
}

/// `prefix`'s folders and files, walked here as `LocalFileSystem::list_with_delimiter` walks
/// them; `None` when the folder holds more than [`INLINE_LIST_MAX`] entries.
fn walk_one_level(root: &Root, prefix: Option<&Path>) -> Option<Result<ListResult>> {
    let prefix = prefix.cloned().unwrap_or_default();
    let dir = match root.to_filesystem(Some(&prefix)) {
        Ok(d) => d,
        Err(e) => return Some(Err(e)),
    };
    let walked: Vec<_> = walkdir::WalkDir::new(dir)
        .min_depth(1)
        .max_depth(1)
        .follow_links(true)
        .into_iter()
        .take(INLINE_LIST_MAX + 1)
        .collect();
    if walked.len() > INLINE_LIST_MAX {
        return None;
    }
    let mut common_prefixes = std::collections::BTreeSet::new();
    let mut objects = Vec::new();
    for res in walked {
        let entry = match kept_entry(res) {
            Ok(Some(e)) => e,
            Ok(None) => continue,
            Err(e) => return Some(Err(e)),
        };
        let is_dir = entry.file_type().is_dir();
        let location = match root.location(entry.path()) {
            Ok(l) => l,
            Err(e) => return Some(Err(e)),
        };
        if !is_dir && !is_valid_file_path(&location) {
            continue;
        }
        let Some(mut parts) = location.prefix_match(&prefix) else { continue };
        let Some(first) = parts.next() else { continue };
        drop(parts);
        if is_dir {
            common_prefixes.insert(prefix.clone().join(first));
        } else {
            match entry_meta(&entry, location) {
                Ok(Some(m)) => objects.push(m),
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
        }
    }
    Some(Ok(ListResult { common_prefixes: common_prefixes.into_iter().collect(), objects }))
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
        let range = wanted.as_range(meta.size).map_err(generic)?;
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
        match walk(&self.root, prefix, None) {
            Some(listed) => futures::stream::iter(listed).boxed(),
            None => self.inner.list(prefix),
        }
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        match walk(&self.root, prefix, Some(offset)) {
            Some(listed) => futures::stream::iter(listed).boxed(),
            None => self.inner.list_with_offset(prefix, offset),
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        match walk_one_level(&self.root, prefix) {
            Some(listed) => listed,
            None => self.inner.list_with_delimiter(prefix).await,
        }
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
    use futures::TryStreamExt;
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

    /// A lake-like tree: day folders with files, an unfinished upload of `LocalFileSystem`'s
    /// (hidden), a name with `#` that is not one (listed), links to a file, to a folder and to
    /// nothing, an empty folder, and a file beside the folders.
    fn tree(dir: &std::path::Path) {
        for (day, n) in [("day=2026-11-18", 2), ("day=2026-11-19", 1)] {
            let d = dir.join("t").join(day).join("src=ab");
            std::fs::create_dir_all(&d).unwrap();
            for i in 0..n {
                std::fs::write(d.join(format!("f{i}.parquet")), vec![i as u8; 10 + i]).unwrap();
            }
        }
        std::fs::create_dir_all(dir.join("t/empty")).unwrap();
        std::fs::write(dir.join("t/day=2026-11-19/x.parquet#12"), b"partial").unwrap();
        std::fs::write(dir.join("t/day=2026-11-19/y#z.parquet"), b"whole").unwrap();
        std::fs::write(dir.join("t/_beside"), b"b").unwrap();
        std::os::unix::fs::symlink(dir.join("t/_beside"), dir.join("t/link")).unwrap();
        std::os::unix::fs::symlink(dir.join("t/day=2026-11-18"), dir.join("t/day=2026-11-17")).unwrap();
        std::os::unix::fs::symlink(dir.join("t/nothing"), dir.join("t/broken")).unwrap();
    }

    async fn listed(s: &dyn ObjectStore, prefix: &Path, offset: Option<&Path>) -> Vec<ObjectMeta> {
        match offset {
            Some(o) => s.list_with_offset(Some(prefix), o).try_collect().await.unwrap(),
            None => s.list(Some(prefix)).try_collect().await.unwrap(),
        }
    }

    /// Listings walked here are `LocalFileSystem`'s: the same entries in the same order, with the
    /// same metadata, with and without offset, recursive and one level, from the filesystem's
    /// root and from a lake's folder; a missing folder lists nothing.
    #[tokio::test]
    async fn lists_what_local_file_system_lists() {
        let dir = tempfile::tempdir().unwrap();
        tree(dir.path());
        let abs = std::fs::canonicalize(dir.path()).unwrap();
        let root = Path::from_filesystem_path(dir.path()).unwrap();
        let pairs = [
            (LocalStore::default(), LocalFileSystem::new(), root.clone()),
            (
                LocalStore::new_with_prefix(&abs).unwrap(),
                LocalFileSystem::new_with_prefix(&abs).unwrap(),
                Path::default(),
            ),
        ];
        for (ours, theirs, base) in &pairs {
            let t = base.clone().join("t");
            let under =
                [t.clone(), t.clone().join("day=2026-11-19"), t.clone().join("empty"), base.clone().join("gone")];
            for prefix in under.iter().chain((base.as_ref().is_empty()).then_some(&Path::default())) {
                // The walk is done here, not handed over.
                assert!(walk(&ours.root, Some(prefix), None).is_some(), "{prefix}");
                assert!(walk_one_level(&ours.root, Some(prefix)).is_some(), "{prefix}");
                assert_eq!(listed(ours, prefix, None).await, listed(theirs, prefix, None).await, "{prefix}");
                let offset = t.clone().join("day=2026-11-18");
                assert_eq!(listed(ours, prefix, Some(&offset)).await, listed(theirs, prefix, Some(&offset)).await);
                match (ours.list_with_delimiter(Some(prefix)).await, theirs.list_with_delimiter(Some(prefix)).await) {
                    (Ok(a), Ok(b)) => {
                        assert_eq!((&a.common_prefixes, &a.objects), (&b.common_prefixes, &b.objects), "{prefix}")
                    }
                    (a, b) => assert_eq!(a.is_ok(), b.is_ok(), "{prefix}"),
                }
            }
            let all = listed(ours, &t, None).await;
            let names: Vec<&str> = all.iter().filter_map(|m| m.location.filename()).collect();
            assert!(names.contains(&"y#z.parquet") && names.contains(&"link"), "{names:?}");
            assert!(!names.contains(&"x.parquet#12") && !names.contains(&"broken"), "{names:?}");
            // The linked day folder is walked too: 2 files in it, 2 in the day it links to, and
            // the other day's 1 and `y#z`.
            assert_eq!(names.iter().filter(|n| n.ends_with(".parquet")).count(), 2 + 2 + 1 + 1, "{names:?}");
            assert!(all.iter().all(|m| m.location.prefix_matches(&t)), "{all:?}");
            let top = ours.list_with_delimiter(Some(&t)).await.unwrap();
            assert_eq!(top.common_prefixes.len(), 4, "{:?}", top.common_prefixes);
        }
    }

    /// A listing larger than [`INLINE_LIST_MAX`] entries is `LocalFileSystem`'s own, whole.
    #[tokio::test]
    async fn a_long_listing_is_left_to_local_file_system() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..INLINE_LIST_MAX + 5 {
            std::fs::write(dir.path().join(format!("{i:05}.parquet")), b"x").unwrap();
        }
        assert!(
            walk(&LocalStore::default().root, Some(&Path::from_filesystem_path(dir.path()).unwrap()), None).is_none()
        );
        let prefix = Path::from_filesystem_path(dir.path()).unwrap();
        let (ours, theirs) = (LocalStore::default(), LocalFileSystem::new());
        let a: Vec<ObjectMeta> = ours.list(Some(&prefix)).try_collect().await.unwrap();
        assert_eq!(a.len(), INLINE_LIST_MAX + 5);
        assert_eq!(a, theirs.list(Some(&prefix)).try_collect::<Vec<_>>().await.unwrap());
        let (a, b) = (
            ours.list_with_delimiter(Some(&prefix)).await.unwrap(),
            theirs.list_with_delimiter(Some(&prefix)).await.unwrap(),
        );
        assert_eq!(a.objects, b.objects);
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
