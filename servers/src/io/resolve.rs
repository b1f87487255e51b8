//! Mapping a request target to a file under the root, and nothing outside it.
//!
//! Two independent fences: the decoded path may not contain `..` segments, and the kernel opens
//! it with `openat2(RESOLVE_BENEATH)` relative to the root's fd, which refuses any resolution
//! (symlinks included) that would leave the root. The second fence also covers races with
//! concurrent renames, which a canonicalize-then-open check would not.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("malformed percent-encoding or NUL in path")]
    BadPath,
    #[error("path leaves the root")]
    Traversal,
    #[error("no such file")]
    NotFound,
    #[error("permission denied")]
    Forbidden,
    #[error("cannot open file (errno {errno})")]
    Io { errno: i32 },
}

impl ResolveError {
    pub fn status(self) -> u16 {
        match self {
            ResolveError::BadPath | ResolveError::Traversal => 400,
            ResolveError::NotFound => 404,
            ResolveError::Forbidden => 403,
            ResolveError::Io { .. } => 500,
        }
    }
}

/// Decodes a request-target (`http::Request::target`) into a root-relative path: no query, no `.`/`..`, no empty segments.
/// A target naming a directory (trailing slash) gets `index.html` appended.
pub fn decode_target(target: &[u8]) -> Result<Vec<u8>, ResolveError> {
    let end = target
        .iter()
        .position(|&b| b == b'?' || b == b'#')
        .unwrap_or(target.len());
    let decoded = percent_decode(&target[..end])?;
    let mut rel = Vec::with_capacity(decoded.len() + 10);
    for segment in decoded.split(|&b| b == b'/') {
        match segment {
            b"" | b"." => {}
            b".." => return Err(ResolveError::Traversal),
            _ => {
                if !rel.is_empty() {
                    rel.push(b'/');
                }
                rel.extend_from_slice(segment);
            }
        }
    }
    if rel.is_empty() || decoded.ends_with(b"/") {
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(b"index.html");
    }
    Ok(rel)
}

fn percent_decode(s: &[u8]) -> Result<Vec<u8>, ResolveError> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let b = if s[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or(ResolveError::BadPath)?;
            let (Some(hi), Some(lo)) = (hex_val(hex[0]), hex_val(hex[1])) else {
                return Err(ResolveError::BadPath);
            };
            i += 3;
            hi << 4 | lo
        } else {
            i += 1;
            s[i - 1]
        };
        if b == 0 {
            return Err(ResolveError::BadPath);
        }
        out.push(b);
    }
    Ok(out)
}

fn hex_val(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

pub fn open_root(root: &Path) -> std::io::Result<OwnedFd> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(root)?;
    Ok(OwnedFd::from(file))
}

use std::os::unix::fs::OpenOptionsExt;

/// `struct open_how` from linux/openat2.h (libc's is non_exhaustive).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Opens a regular file beneath `root`; returns it with its size.
pub fn open_file(root: &OwnedFd, rel: &[u8]) -> Result<(File, u64), ResolveError> {
    let path = CString::new(rel).map_err(|_| ResolveError::BadPath)?;
    let how = OpenHow {
        // O_NONBLOCK so a FIFO under the root cannot stall the server; regular files ignore it.
        flags: (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK) as u64,
        mode: 0,
        resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: path.as_ptr() is NUL-terminated and `path` lives past the call; &how points at
    // a live #[repr(C)] OpenHow laid out as struct open_how (three u64s, 24 bytes, the
    // OPEN_HOW_SIZE_VER0 layout) and the size passed is exactly its size; the kernel only
    // reads both. The dirfd is `root`'s, borrowed for the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        return Err(match errno {
            libc::ENOENT | libc::ENOTDIR | libc::ELOOP | libc::EXDEV | libc::ENAMETOOLONG => {
                ResolveError::NotFound
            }
            libc::EACCES | libc::EPERM => ResolveError::Forbidden,
            errno => ResolveError::Io { errno },
        });
    }
    // SAFETY: fd >= 0 is the fd openat2 just created (an int, so the cast is lossless), held
    // by nothing else: the File is its only owner and closes it once.
    let file = unsafe { File::from_raw_fd(fd as i32) };
    let meta = file.metadata().map_err(|e| ResolveError::Io {
        errno: e.raw_os_error().unwrap_or(0),
    })?;
    if !meta.is_file() {
        return Err(ResolveError::NotFound);
    }
    Ok((file, meta.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_and_normalises() {
        assert_eq!(decode_target(b"/").unwrap(), b"index.html");
        assert_eq!(decode_target(b"/a/./b//c.txt?x=1").unwrap(), b"a/b/c.txt");
        assert_eq!(decode_target(b"/sub/").unwrap(), b"sub/index.html");
        assert_eq!(decode_target(b"/a%20b").unwrap(), b"a b");
    }

    #[test]
    fn rejects_traversal_in_every_spelling() {
        for t in [
            &b"/../etc/passwd"[..],
            b"/a/../../etc/passwd",
            b"/%2e%2e/etc/passwd",
            b"/%2E%2e%2fetc%2fpasswd",
            b"/.%2e/x",
        ] {
            assert_eq!(decode_target(t), Err(ResolveError::Traversal), "{t:?}");
        }
        assert_eq!(decode_target(b"/a%00b"), Err(ResolveError::BadPath));
        assert_eq!(decode_target(b"/a%2"), Err(ResolveError::BadPath));
        assert_eq!(decode_target(b"/a%zz"), Err(ResolveError::BadPath));
    }
}
