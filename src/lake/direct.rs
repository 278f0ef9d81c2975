//! A local lake's new files written with direct I/O (`O_DIRECT`), past the page cache.
//!
//! An ingest writes its Parquet files once and reads them no sooner than the next query or
//! compaction. Written through the page cache, every byte is first copied into pages the kernel
//! allocates for it; on the VMs this runs on, memory the guest has not touched lately (the balloon
//! driver hands free pages back to the host) makes that copy cost 0.5–1.0 CPU-s for the 180 MB of
//! a medium day (`copy_folio_from_iter_atomic`: 11% of an ingest's samples), against 0.05 s
//! written direct. The file is written as `object_store`'s `LocalFileSystem::put` writes it — a
//! staging file `<name>#<n>` beside it (which listings skip), renamed onto the name when complete,
//! so a crash never leaves a partial file under a lake name — its whole 4 KiB blocks from an
//! aligned copy of the bytes, the last one padded with zeros, then truncated to the length.
//!
//! A file system that refuses direct I/O (tmpfs, some network mounts) answers `Ok(false)`: the
//! caller writes through the store instead.

use std::cell::RefCell;
use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The alignment of direct I/O's buffers, offsets and lengths (a page: any block size up to it).
const BLOCK: usize = 4096;

/// Aligned buffers larger than this are not kept between files.
const KEEP_MAX: usize = 64 << 20;

thread_local! {
    /// The aligned copy's buffer, reused by the next file this thread writes.
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Writes `bytes` as the file `dest` (replacing one of that name), with direct I/O; `Ok(false)`
/// when its file system does not take direct I/O (nothing written, nothing left behind).
pub fn put(dest: &Path, bytes: &[u8]) -> std::io::Result<bool> {
    let Some((mut file, staging)) = staged(dest)? else { return Ok(false) };
    let written = BUFFER.with_borrow_mut(|buf| {
        let padded = bytes.len().div_ceil(BLOCK) * BLOCK;
        if buf.len() < padded + BLOCK {
            buf.resize(padded + BLOCK, 0);
        }
        let at = buf.as_ptr().align_offset(BLOCK);
        let aligned = &mut buf[at..at + padded];
        aligned[..bytes.len()].copy_from_slice(bytes);
        aligned[bytes.len()..].fill(0);
        let r = file.write_all(aligned);
        if buf.capacity() > KEEP_MAX {
            *buf = Vec::new();
        }
        r
    });
    let done = match written {
        Ok(()) => file.set_len(bytes.len() as u64).and_then(|()| {
            drop(file);
            std::fs::rename(&staging, dest)
        }),
        Err(e) => Err(e),
    };
    match done {
        Ok(()) => Ok(true),
        Err(e) => {
            let _ = std::fs::remove_file(&staging);
            // Direct I/O refused at the first write (alignment the device wants larger).
            if e.raw_os_error() == Some(libc::EINVAL) {
                Ok(false)
            } else {
                Err(e)
            }
        }
    }
}

/// A new staging file beside `dest`, opened for direct I/O (its folder made when missing); `None`
/// when the file system refuses direct I/O.
fn staged(dest: &Path) -> std::io::Result<Option<(std::fs::File, PathBuf)>> {
    let mut n = 1u32;
    let mut folder_made = false;
    loop {
        let mut name = dest.as_os_str().to_owned();
        name.push(format!("#{n}"));
        let staging = PathBuf::from(name);
        match OpenOptions::new().write(true).create_new(true).custom_flags(libc::O_DIRECT).open(&staging) {
            Ok(f) => return Ok(Some((f, staging))),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => n += 1,
            // The folder made (once): by `create_dir_all`, which takes a folder another thread
            // made meanwhile as made, not as an error (two encoders' first files of one day).
            Err(e) if e.kind() == ErrorKind::NotFound => match dest.parent() {
                Some(dir) if !dir.as_os_str().is_empty() && !folder_made => {
                    std::fs::create_dir_all(dir)?;
                    folder_made = true;
                }
                _ => return Err(e),
            },
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                // Refused, but created on some file systems: leave nothing behind.
                let _ = std::fs::remove_file(&staging);
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_of_every_length_around_a_block_are_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..3 * BLOCK + 10).map(|i| (i * 7 % 251) as u8).collect();
        for len in [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK, 3 * BLOCK + 10] {
            let dest = dir.path().join(format!("t=x/day=2026-11-19/f{len}.parquet"));
            let direct = put(&dest, &data[..len]).unwrap();
            if !direct {
                eprintln!("the temporary folder's file system refuses direct I/O: the fallback is tested below");
                return;
            }
            assert_eq!(std::fs::read(&dest).unwrap(), &data[..len], "length {len}");
            // Replaced whole by a shorter file of the same name.
            assert!(put(&dest, &data[..len / 2]).unwrap());
            assert_eq!(std::fs::read(&dest).unwrap(), &data[..len / 2], "length {len}, rewritten");
        }
        // No staging file left behind (they are made beside the file).
        assert_eq!(staging_files(&dir.path().join("t=x/day=2026-11-19")), Vec::<PathBuf>::new());
    }

    #[test]
    fn a_file_system_without_direct_io_leaves_nothing_behind() {
        // tmpfs refuses O_DIRECT; where /dev/shm is not one, this checks the direct path instead.
        let Ok(dir) = tempfile::tempdir_in("/dev/shm") else {
            eprintln!("no /dev/shm here: the refusal is not tested");
            return;
        };
        let dest = dir.path().join("f.parquet");
        let direct = put(&dest, b"0123456789").unwrap();
        if direct {
            assert_eq!(std::fs::read(&dest).unwrap(), b"0123456789");
        } else {
            assert!(!dest.exists());
        }
        assert_eq!(staging_files(dir.path()), Vec::<PathBuf>::new());
    }

    /// Threads writing the first files of one new folder at once all succeed: one that found the
    /// folder missing and saw it made by another before it could make it (a race of two encoder
    /// threads' first files of a day: `ingest --threads 2` exited 1) retries instead of failing.
    #[test]
    fn first_files_of_a_new_folder_written_at_once_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let threads = 8;
        for round in 0..200 {
            let barrier = std::sync::Barrier::new(threads);
            let folder = dir.path().join(format!("t=x/day=2026-11-{round:03}"));
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads)
                    .map(|t| {
                        let (barrier, folder) = (&barrier, &folder);
                        s.spawn(move || {
                            barrier.wait();
                            put(&folder.join(format!("f{t}.parquet")), b"0123456789")
                        })
                    })
                    .collect();
                for (t, h) in handles.into_iter().enumerate() {
                    let r = h.join().unwrap();
                    assert!(r.is_ok(), "round {round}, thread {t}: {r:?}");
                }
            });
        }
    }

    /// The staging files (`<name>#<n>`) in a folder.
    fn staging_files(dir: &Path) -> Vec<PathBuf> {
        let entries = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path());
        entries.filter(|p| p.to_string_lossy().contains('#')).collect()
    }
}
