//! How a file becomes a reply body: the `--io` strategies.
//!
//! Every strategy resolves the request path the same way ([`resolve`]) and differs only in what it
//! does with the opened file, so a benchmark comparing them measures exactly that difference.

mod cache;
mod mime;
mod resolve;

/// Re-exported from `reply`, where they live since the reply and its sender use them too.
pub use crate::reply::{Body, Chunk, Mapping};
pub use resolve::{decode_target, ResolveError};

use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;

use crate::http::{Method, Request};
use crate::reply::{self, Persistence, Reply};

/// How file contents reach the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Io {
    /// open, read into a buffer, close, write.
    Read,
    /// open, mmap, write, munmap, close: the classic small-server pattern.
    Mmap,
    /// open, sendfile, close, with header and body coalesced under TCP_CORK.
    Sendfile,
    /// open, write the header, sendfile the body, close: no TCP_CORK, no MSG_MORE, so with the
    /// server's TCP_NODELAY the header leaves as a segment of its own (the cork comparison).
    SendfileNocork,
    /// Files loaded into memory once and replied with one write.
    #[default]
    Cached,
}

impl std::fmt::Display for Io {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Io::Read => "read",
            Io::Mmap => "mmap",
            Io::Sendfile => "sendfile",
            Io::SendfileNocork => "sendfile-nocork",
            Io::Cached => "cached",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error("cannot open root directory {path}")]
    Open {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The served tree and the strategy used to read it.
pub struct FileStore {
    root: OwnedFd,
    io: Io,
    cache: cache::Cache,
}

impl FileStore {
    pub fn open(root: &Path, io: Io) -> Result<Self, RootError> {
        let root = resolve::open_root(root).map_err(|source| RootError::Open {
            path: root.to_path_buf(),
            source,
        })?;
        Ok(FileStore {
            root,
            io,
            cache: cache::Cache::default(),
        })
    }

    /// The complete reply to a parsed request; errors become 4xx/5xx replies.
    pub fn reply(&self, req: &Request<'_>, persistence: Persistence) -> Reply {
        let mut reply = self.build(req, persistence);
        if req.method == Method::Head {
            reply.body = Body::Empty;
        }
        reply
    }

    fn build(&self, req: &Request<'_>, persistence: Persistence) -> Reply {
        let rel = match decode_target(req.target) {
            Ok(rel) => rel,
            Err(e) => return reply::error(e.status(), persistence),
        };
        let head_only = req.method == Method::Head;
        if self.io == Io::Cached {
            return match self.cache.get(&self.root, &rel) {
                Ok(file) => file.reply(persistence, head_only),
                Err(e) => reply::error(e.status(), persistence),
            };
        }
        let (file, len) = match resolve::open_file(&self.root, &rel) {
            Ok(opened) => opened,
            Err(e) => return reply::error(e.status(), persistence),
        };
        let body = if head_only || len == 0 {
            Body::Empty
        } else {
            match self.load(file, len) {
                Ok(body) => body,
                Err(_) => return reply::error(500, persistence),
            }
        };
        let head = reply::file_head(mime::content_type(&rel), len, persistence);
        Reply::new(head.into(), body, persistence)
    }

    fn load(&self, mut file: File, len: u64) -> std::io::Result<Body> {
        Ok(match self.io {
            Io::Read | Io::Cached => {
                let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
                file.read_to_end(&mut buf)?;
                Body::Bytes(buf.into())
            }
            Io::Mmap => Body::Mapped(Mapping::new(file, len)?),
            Io::Sendfile => Body::File {
                file,
                len,
                cork: true,
            },
            Io::SendfileNocork => Body::File {
                file,
                len,
                cork: false,
            },
        })
    }
}
