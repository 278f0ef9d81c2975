//! Chunk buffers of input lines, shared by the reader and the lake writer. A chunk whose typed
//! rows keep their `raw` record is handed over whole as an Arrow buffer, and those rows' `raw`
//! cells become views into it: no record is copied between reading it and encoding its file. When
//! the last batch holding the buffer has been written, the allocation comes back here to be read
//! into again, so no fresh chunk is zeroed by the kernel for every chunk read.
//!
//! A local, uncompressed input is not read at all: each chunk is a memory mapping of its range
//! of the file ([`MappedFile`]), handed over as the Arrow buffer the same way and unmapped when
//! its last batch is written. No copy from the page cache, no buffer to fault in (the read
//! system calls were 9% of a one-thread ingest's CPU).

use arrow::buffer::Buffer;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, PoisonError};

/// A chunk of whole input lines: bytes read into a buffer, or a mapped range of a local file.
pub(super) enum Chunk {
    Read(Vec<u8>),
    Mapped(Mapped),
}

impl From<Vec<u8>> for Chunk {
    fn from(v: Vec<u8>) -> Self {
        Chunk::Read(v)
    }
}

impl Chunk {
    pub(super) fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Read(v) => v,
            Chunk::Mapped(m) => m.bytes(),
        }
    }

    /// The chunk as an Arrow buffer of its bytes, without a copy; a read buffer comes back to be
    /// read into again, a mapping is unmapped, once the buffer's last clone has been dropped.
    pub(super) fn share(self) -> Buffer {
        match self {
            Chunk::Read(v) => SPARES.share(v),
            Chunk::Mapped(m) => {
                let ptr = NonNull::new(m.bytes().as_ptr().cast_mut()).expect("a mapping is never at 0");
                let len = m.len;
                // SAFETY: `ptr` and `len` are the mapped chunk's bytes, readable and unchanged
                // until the mapping (owned by the buffer's allocation) is dropped.
                unsafe { Buffer::from_custom_allocation(ptr, len, Arc::new(m)) }
            }
        }
    }
}

/// A local file whose lines are read as mappings of its ranges ([`MappedFile::chunk`]).
///
/// The file must not shrink while its chunks are mapped: a page past its new end reads as a bus
/// error (the process then stops, with [`on_sigbus`]'s advice, as if killed; the lake keeps
/// what a killed ingest leaves, which a run again cleans). `wisp ingest --no-mmap` reads instead.
pub(super) struct MappedFile {
    file: std::fs::File,
    len: u64,
}

/// A memory-mapped chunk: `len` bytes from `start` of the mapping at `map`.
pub(super) struct Mapped {
    map: NonNull<u8>,
    map_len: usize,
    start: usize,
    len: usize,
}

// SAFETY: the mapping is read-only and owned by this value alone (unmapped on drop).
unsafe impl Send for Mapped {}
unsafe impl Sync for Mapped {}

impl Mapped {
    pub(super) fn bytes(&self) -> &[u8] {
        // SAFETY: `start + len <= map_len` bytes mapped readable for this value's life.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(self.start), self.len) }
    }

    /// Maps `len` bytes of `file` from `offset` (a multiple of the page size), read-only.
    fn map(file: &std::fs::File, offset: u64, len: usize) -> std::io::Result<Self> {
        use std::os::fd::AsRawFd;
        let off = libc::off_t::try_from(offset).map_err(std::io::Error::other)?;
        // SAFETY: a fresh private read-only mapping of an open file; checked for failure below.
        let p =
            unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_PRIVATE, file.as_raw_fd(), off) };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let map = NonNull::new(p.cast::<u8>()).ok_or_else(|| std::io::Error::other("mapped at address 0"))?;
        Ok(Mapped { map, map_len: len, start: 0, len })
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: the mapping this value made, unmapped once.
        unsafe { libc::munmap(self.map.as_ptr().cast(), self.map_len) };
    }
}

/// Bytes mapped past a chunk's nominal end to find the end of its last line (more when a line is
/// longer).
const TAIL: u64 = 64 << 10;

impl MappedFile {
    /// The file, its length as it is now (what is appended later is not read); an error when it
    /// cannot be mapped (a file system without mappings: it is read instead).
    pub(super) fn new(file: std::fs::File) -> std::io::Result<Self> {
        let len = file.metadata()?.len();
        if len > 0 {
            Mapped::map(&file, 0, usize::try_from(len.min(page_size())).map_err(std::io::Error::other)?)?;
        }
        Ok(MappedFile { file, len })
    }

    /// The whole lines from byte `pos` of about `size` bytes: through the end of the line that
    /// holds byte `pos + size - 1`, or to the end of the file (the lines [`read_chunk`] reads
    /// from there). None at the end.
    ///
    /// [`read_chunk`]: super::readers
    pub(super) fn chunk(&self, pos: u64, size: usize) -> std::io::Result<Option<Chunk>> {
        if pos >= self.len {
            return Ok(None);
        }
        let page = page_size();
        let floor = pos / page * page;
        let want = self.len.min(pos.saturating_add(size.max(1) as u64));
        let mut tail = TAIL;
        loop {
            let map_end = self.len.min(want.saturating_add(tail));
            let len = usize::try_from(map_end - floor).map_err(std::io::Error::other)?;
            let mut m = Mapped::map(&self.file, floor, len)?;
            let all = m.bytes();
            let w = (want - floor) as usize;
            let end = if want == self.len || all[w - 1] == b'\n' {
                Some(w)
            } else if let Some(i) = memchr::memchr(b'\n', &all[w..]) {
                Some(w + i + 1)
            } else if map_end == self.len {
                Some(len)
            } else {
                None
            };
            if let Some(end) = end {
                m.start = (pos - floor) as usize;
                m.len = end - m.start;
                return Ok(Some(Chunk::Mapped(m)));
            }
            tail = tail.saturating_mul(4);
        }
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(p).ok().filter(|&p| p > 0).unwrap_or(4096)
}

/// The advice printed when a mapped input faults (it shrank while it was read).
const SIGBUS_MESSAGE: &[u8] = b"wisp: an input file shrank or could not be read while ingest read it memory-mapped \
(SIGBUS). The lake holds what a killed ingest leaves: run the ingest again once the file is stable, or with \
--no-mmap to read it instead.\n";

/// Stops the process with a clear message, not a bare bus error, when a mapped input faults.
/// Installed once, before the first file is mapped.
pub(super) fn on_sigbus() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    extern "C" fn handler(_: libc::c_int) {
        // SAFETY: write(2) and _exit(2) are async-signal-safe.
        unsafe {
            libc::write(2, SIGBUS_MESSAGE.as_ptr().cast(), SIGBUS_MESSAGE.len());
            libc::_exit(crate::cli::EXIT_ERROR);
        }
    }
    ONCE.call_once(|| {
        // SAFETY: a handler that only calls async-signal-safe functions.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = handler as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut());
        }
    });
}

/// Buffers kept for reuse: about as many chunks as the lake writer's buffers hold at once (its
/// 96 MiB budget in chunks of 2 MiB), so a flush gives back what the next ones are read into.
const KEEP: usize = 48;
/// Buffers larger than this (a chunk grown to hold a line of many megabytes) are freed.
const KEEP_BYTES: usize = 16 << 20;

/// Buffers to read chunks into.
struct Spares(Mutex<Vec<Vec<u8>>>);

/// The process's spare buffers.
static SPARES: Spares = Spares(Mutex::new(Vec::new()));

impl Spares {
    fn take(&self) -> Vec<u8> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).pop().unwrap_or_default()
    }

    /// Keeps a buffer to be read into again (drops it when enough are kept).
    fn give(&self, v: Vec<u8>) {
        let mut spare = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if spare.len() < KEEP && v.capacity() > 0 && v.capacity() <= KEEP_BYTES {
            spare.push(v);
        }
    }

    /// The chunk as an Arrow buffer of its bytes, without a copy; its allocation comes back here
    /// when the buffer's last clone is dropped.
    fn share(&'static self, chunk: Vec<u8>) -> Buffer {
        let len = chunk.len();
        let ptr = NonNull::new(chunk.as_ptr().cast_mut()).expect("a Vec's pointer is never null");
        // SAFETY: `ptr` is the start of the Vec's allocation, whose first `len` bytes are
        // initialized; the owner keeps the Vec (its heap allocation neither moved nor written)
        // until the buffer's last reference is dropped.
        unsafe { Buffer::from_custom_allocation(ptr, len, Arc::new(Shared(chunk, self))) }
    }
}

/// A buffer to read a chunk into: a spare one (its bytes as they were), else a new empty one.
pub(super) fn take() -> Vec<u8> {
    SPARES.take()
}

/// Frees the kept buffers (at the end of an ingest).
pub(super) fn release() {
    SPARES.0.lock().unwrap_or_else(PoisonError::into_inner).clear();
}

/// The owner of a chunk shared as an Arrow buffer: gives it back when the buffer's last clone goes.
struct Shared(Vec<u8>, &'static Spares);

impl Drop for Shared {
    fn drop(&mut self) {
        self.1.give(std::mem::take(&mut self.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shared chunk reads as its bytes, and its allocation comes back once every clone of the
    /// buffer is gone, not before.
    #[test]
    fn a_shared_chunk_comes_back_after_its_last_clone() {
        let chunk = b"{\"a\":1}\n{\"b\":2}\n".to_vec();
        let at = chunk.as_ptr();
        static OWN: Spares = Spares(Mutex::new(Vec::new()));
        let buf = OWN.share(chunk);
        assert_eq!(buf.as_slice(), b"{\"a\":1}\n{\"b\":2}\n");
        let clone = buf.slice(8);
        drop(buf);
        let held = |p| OWN.0.lock().unwrap().iter().any(|v| v.as_ptr() == p);
        assert!(!held(at), "given back while a clone still reads it");
        assert_eq!(clone.as_slice(), b"{\"b\":2}\n");
        drop(clone);
        assert!(held(at), "the allocation came back");
        let again = OWN.take();
        assert_eq!(
            (again.as_ptr(), again.as_slice()),
            (at, &b"{\"a\":1}\n{\"b\":2}\n"[..]),
            "read into again as it was"
        );
    }
}
