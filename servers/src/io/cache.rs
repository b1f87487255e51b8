//! The `cached` strategy: each file is read once and its replies prebuilt.
//!
//! Entries are never revalidated: this is a benchmark reference for the "everything in memory"
//! end of the design space, not a general-purpose cache.

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::sync::{Arc, RwLock};

use super::mime;
use super::resolve::{self, ResolveError};
use crate::reply::{self, Body, Chunk, Persistence, Reply};

#[derive(Default)]
pub struct Cache {
    files: RwLock<HashMap<Vec<u8>, Arc<CachedFile>>>,
}

pub struct CachedFile {
    /// One prebuilt head per [`Persistence`] variant, indexed by `Persistence::index`.
    heads: [Arc<[u8]>; 3],
    body: Arc<[u8]>,
}

impl Cache {
    pub fn get(&self, root: &OwnedFd, rel: &[u8]) -> Result<Arc<CachedFile>, ResolveError> {
        if let Some(f) = self
            .files
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(rel)
        {
            return Ok(Arc::clone(f));
        }
        let (mut file, len) = resolve::open_file(root, rel)?;
        let mut body = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        file.read_to_end(&mut body).map_err(|e| ResolveError::Io {
            errno: e.raw_os_error().unwrap_or(0),
        })?;
        let ctype = mime::content_type(rel);
        let len = body.len() as u64;
        let heads = Persistence::ALL.map(|p| Arc::from(reply::file_head(ctype, len, p)));
        let entry = Arc::new(CachedFile {
            heads,
            body: body.into(),
        });
        let mut files = self.files.write().unwrap_or_else(|e| e.into_inner());
        Ok(Arc::clone(files.entry(rel.to_vec()).or_insert(entry)))
    }
}

impl CachedFile {
    pub fn reply(&self, persistence: Persistence, head_only: bool) -> Reply {
        let body = if head_only || self.body.is_empty() {
            Body::Empty
        } else {
            Body::Bytes(Chunk::Shared(Arc::clone(&self.body)))
        };
        Reply::new(
            Chunk::Shared(Arc::clone(&self.heads[persistence.index()])),
            body,
            persistence,
        )
    }
}
