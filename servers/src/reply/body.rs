//! Reply bodies: the one place that knows what each io strategy holds while a reply is in flight.

use std::fs::File;
use std::ops::Deref;
use std::os::fd::AsRawFd;
use std::sync::Arc;

/// Bytes owned by one reply or shared with the cache.
#[derive(Debug, Clone)]
pub enum Chunk {
    Owned(Box<[u8]>),
    Shared(Arc<[u8]>),
}

impl Deref for Chunk {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Chunk::Owned(b) => b,
            Chunk::Shared(b) => b,
        }
    }
}

impl From<Vec<u8>> for Chunk {
    fn from(v: Vec<u8>) -> Self {
        Chunk::Owned(v.into_boxed_slice())
    }
}

#[derive(Debug)]
pub enum Body {
    Empty,
    Bytes(Chunk),
    Mapped(Mapping),
    /// Sent with sendfile(2); the file stays open until the reply is done.
    File {
        file: File,
        len: u64,
        /// Head and body go out under TCP_CORK (`--io sendfile`), or each as written
        /// (`--io sendfile-nocork`).
        cork: bool,
    },
}

impl Body {
    pub fn len(&self) -> u64 {
        match self {
            Body::Empty => 0,
            Body::Bytes(b) => b.len() as u64,
            Body::Mapped(m) => m.len() as u64,
            Body::File { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The body as memory, or `None` when it must go through sendfile.
    pub fn as_slice(&self) -> Option<&[u8]> {
        match self {
            Body::Empty => Some(&[]),
            Body::Bytes(b) => Some(b),
            Body::Mapped(m) => Some(m),
            Body::File { .. } => None,
        }
    }
}

/// A read-only private mapping of a whole file; unmapped and closed on drop, per request.
#[derive(Debug)]
pub struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
    _file: File,
}

// SAFETY: only the raw pointer keeps Mapping from being Send. A Mapping is the sole owner of
// its region (mapped in `new`, unmapped in `drop`, never shared or copied), so moving it to
// another thread moves that ownership, as for a Box<[u8]>; munmap may run on any thread.
unsafe impl Send for Mapping {}
// SAFETY: &Mapping gives only &[u8] access (Deref) to a PROT_READ mapping, which no thread can
// write through, so shared use from several threads is plain concurrent reading.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `file`; `len` must be non-zero (mmap rejects empty mappings).
    pub fn new(file: File, len: u64) -> std::io::Result<Self> {
        let len =
            usize::try_from(len).map_err(|_| std::io::Error::from_raw_os_error(libc::EFBIG))?;
        // SAFETY: a null addr lets the kernel place a new mapping where nothing of ours lives, so
        // it aliases no Rust object; the fd is `file`, open for the call; len > 0 is the
        // caller's promise (0 would fail with EINVAL, not misbehave). MAP_FAILED is checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr,
            len,
            _file: file,
        })
    }
}

impl Deref for Mapping {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr/len are the live PROT_READ mapping made in `new` (page-aligned, len bytes)
        // and unmapped only in drop, which the borrow of self rules out while the slice lives.
        // As for any server that mmaps files, the served tree must not be truncated or
        // rewritten meanwhile: a MAP_PRIVATE mapping may still show another process's writes,
        // and a truncated file raises SIGBUS.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly what `new` mapped, drop runs once, and no slice from
        // deref can outlive &self, so this unmaps only our own region, with no reader left.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}
