//! Chunk buffers of input lines, shared by the reader and the lake writer. A chunk whose typed
//! rows keep their `raw` record is handed over whole as an Arrow buffer, and those rows' `raw`
//! cells become views into it: no record is copied between reading it and encoding its file. When
//! the last batch holding the buffer has been written, the allocation comes back here to be read
//! into again, so no fresh chunk is zeroed by the kernel for every chunk read.

use arrow::buffer::Buffer;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, PoisonError};

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

/// The chunk as an Arrow buffer of its bytes, without a copy; the allocation is read into again
/// once the buffer's last clone has been dropped (its file written).
pub(super) fn share(chunk: Vec<u8>) -> Buffer {
    SPARES.share(chunk)
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
