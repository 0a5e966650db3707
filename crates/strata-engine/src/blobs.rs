//! Content-addressed storage of original files: in the embedded default a directory,
//! `{root}/{aa}/{bb}/{sha256}`; with a shared database, a [`SharedBlobs`] backend that every
//! process reads and writes (PostgreSQL implements it).
//!
//! Uploads stream into a temporary file under `{root}/tmp` while being hashed, then are
//! moved into place (renamed, or copied into the shared backend): a reader never sees a
//! partial blob, and a crash leaves at most a temporary file, swept at startup. Blobs are
//! shared by every document (of any tenant) with the same content; [`BlobStore::lock`]
//! serialises the put/remove decisions for one hash, across processes when shared.
//!
//! Must not import: the store, HTTP types.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::fs;
use tokio::io::AsyncWriteExt;

use crate::error::{EngineError, Result};

/// Blob storage every process sharing a database reads and writes.
#[async_trait]
pub trait SharedBlobs: Send + Sync + std::fmt::Debug + 'static {
    /// Stores the file at `path` under `sha256` (a no-op when already stored).
    async fn put(&self, sha256: &str, path: &Path) -> Result<()>;
    /// Part `index` of a stored blob; `None` past its end (or when it is not stored).
    async fn part(&self, sha256: &str, index: u32) -> Result<Option<Bytes>>;
    /// Removes a blob if present.
    async fn remove(&self, sha256: &str) -> Result<()>;
    /// Holds a lock on `sha256` that every process sharing the backend honours, until the
    /// returned guard is dropped.
    async fn lock(&self, sha256: &str) -> Result<BlobLock>;
}

/// A held cross-process blob lock; released when dropped.
pub struct BlobLock {
    _release: Box<dyn Send + Sync>,
}

impl BlobLock {
    /// Wraps whatever releases the lock when dropped.
    pub fn new(release_on_drop: impl Send + Sync + 'static) -> Self {
        Self {
            _release: Box::new(release_on_drop),
        }
    }
}

/// Holds the per-hash lock of one upload or delete.
pub struct BlobGuard {
    _local: tokio::sync::OwnedMutexGuard<()>,
    _shared: Option<BlobLock>,
}

/// Where original files live.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    shared: Option<Arc<dyn SharedBlobs>>,
}

/// A blob's bytes, streamed.
pub type BlobStream = BoxStream<'static, std::io::Result<Bytes>>;

/// A file being written: hashed and size-checked as bytes arrive.
#[derive(Debug)]
pub struct BlobWriter {
    file: fs::File,
    path: PathBuf,
    hasher: Sha256,
    len: u64,
    limit: u64,
    head: Vec<u8>,
}

/// A fully written temporary blob, not yet in place.
#[derive(Debug)]
pub struct StagedBlob {
    path: PathBuf,
    /// Hex sha256 of the content.
    pub sha256: String,
    /// Content length.
    pub len: u64,
    /// The first bytes, for type sniffing.
    pub head: Vec<u8>,
}

impl BlobWriter {
    /// Appends bytes; fails with [`EngineError::TooLarge`] past the limit (the partial file
    /// is removed).
    pub async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.len += bytes.len() as u64;
        if self.len > self.limit {
            let _ = fs::remove_file(&self.path).await;
            return Err(EngineError::TooLarge { limit: self.limit });
        }
        if self.head.len() < crate::extract::SNIFF_LEN {
            let take = (crate::extract::SNIFF_LEN - self.head.len()).min(bytes.len());
            self.head.extend_from_slice(&bytes[..take]);
        }
        self.hasher.update(bytes);
        if let Err(e) = self.file.write_all(bytes).await {
            // A full disk leaves no partial file behind.
            let _ = fs::remove_file(&self.path).await;
            return Err(e.into());
        }
        Ok(())
    }

    /// Flushes and returns the staged blob (removing the partial file when that fails).
    pub async fn finish(mut self) -> Result<StagedBlob> {
        let flushed = match self.file.flush().await {
            Ok(()) => self.file.sync_data().await,
            Err(e) => Err(e),
        };
        if let Err(e) = flushed {
            let _ = fs::remove_file(&self.path).await;
            return Err(e.into());
        }
        Ok(StagedBlob {
            path: self.path,
            sha256: hex::encode(self.hasher.finalize()),
            len: self.len,
            head: self.head,
        })
    }

    /// Removes the partial file (the upload was abandoned).
    pub async fn abort(self) {
        drop(self.file);
        let _ = fs::remove_file(&self.path).await;
    }
}

impl StagedBlob {
    /// Removes the temporary file (a duplicate, or a rejected upload).
    pub async fn discard(self) {
        let _ = fs::remove_file(&self.path).await;
    }
}

impl BlobStore {
    /// Opens (creating) the blob directory and sweeps temporary files left by a crash.
    pub async fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        let tmp = root.join("tmp");
        if fs::try_exists(&tmp).await? {
            fs::remove_dir_all(&tmp).await?;
        }
        fs::create_dir_all(&tmp).await?;
        Ok(Self {
            root,
            locks: Arc::default(),
            shared: None,
        })
    }

    /// Blobs in a shared backend; `root` holds only this process's upload staging.
    pub async fn open_shared(
        root: impl Into<PathBuf>,
        shared: Arc<dyn SharedBlobs>,
    ) -> Result<Self> {
        let mut this = Self::open(root).await?;
        this.shared = Some(shared);
        Ok(this)
    }

    /// Starts a new upload limited to `limit` bytes.
    pub async fn writer(&self, limit: u64) -> Result<BlobWriter> {
        let path = self.root.join("tmp").join(uuid::Uuid::now_v7().to_string());
        let file = fs::File::create(&path).await?;
        Ok(BlobWriter {
            file,
            path,
            hasher: Sha256::new(),
            len: 0,
            limit,
            head: Vec::new(),
        })
    }

    /// The final path of a blob.
    pub fn path_of(&self, sha256: &str) -> PathBuf {
        self.root
            .join(&sha256[..2])
            .join(&sha256[2..4])
            .join(sha256)
    }

    /// A guard serialising put/remove decisions for one content hash: in this process, and
    /// with a shared backend, in every process sharing it.
    pub async fn lock(&self, sha256: &str) -> Result<BlobGuard> {
        let m = {
            let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            map.retain(|_, m| Arc::strong_count(m) > 1);
            map.entry(sha256.to_owned()).or_default().clone()
        };
        // The local lock first: contention inside a process costs no database connection.
        let local = m.lock_owned().await;
        let shared = match &self.shared {
            Some(s) => Some(s.lock(sha256).await?),
            None => None,
        };
        Ok(BlobGuard {
            _local: local,
            _shared: shared,
        })
    }

    /// Moves a staged blob into place (a no-op when identical content is already there).
    pub async fn commit(&self, staged: StagedBlob) -> Result<()> {
        if let Some(shared) = &self.shared {
            let stored = shared.put(&staged.sha256, &staged.path).await;
            staged.discard().await;
            return stored;
        }
        let dest = self.path_of(&staged.sha256);
        if fs::try_exists(&dest).await? {
            staged.discard().await;
            return Ok(());
        }
        let placed = async {
            if let Some(dir) = dest.parent() {
                fs::create_dir_all(dir).await?;
            }
            fs::rename(&staged.path, &dest).await
        }
        .await;
        if let Err(e) = placed {
            staged.discard().await;
            return Err(e.into());
        }
        Ok(())
    }

    /// Removes a blob if present.
    pub async fn remove(&self, sha256: &str) -> Result<()> {
        if let Some(shared) = &self.shared {
            return shared.remove(sha256).await;
        }
        match fs::remove_file(self.path_of(sha256)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Opens a blob for streaming; a missing blob is an `Io(NotFound)` error.
    pub async fn open_blob(&self, sha256: &str) -> Result<BlobStream> {
        let Some(shared) = self.shared.clone() else {
            let file = fs::File::open(self.path_of(sha256)).await?;
            return Ok(tokio_util::io::ReaderStream::new(file).boxed());
        };
        // The first part is read now, so a missing blob fails before any byte is sent.
        let first = shared.part(sha256, 0).await?.ok_or_else(missing)?;
        let sha = sha256.to_owned();
        let rest = futures_util::stream::unfold(Some(1u32), move |next| {
            let (shared, sha) = (shared.clone(), sha.clone());
            async move {
                let index = next?;
                match shared.part(&sha, index).await {
                    Ok(Some(bytes)) => Some((Ok(bytes), Some(index + 1))),
                    Ok(None) => None,
                    // The error ends the stream (and the response, which the client sees cut).
                    Err(e) => Some((Err(std::io::Error::other(e.to_string())), None)),
                }
            }
        });
        Ok(futures_util::stream::once(async move { Ok(first) })
            .chain(rest)
            .boxed())
    }

    /// Reads a whole blob (for extraction); a missing blob is an `Io(NotFound)` error.
    pub async fn read(&self, sha256: &str) -> Result<Vec<u8>> {
        let Some(shared) = &self.shared else {
            return Ok(fs::read(self.path_of(sha256)).await?);
        };
        let mut out = Vec::new();
        let mut index = 0;
        while let Some(part) = shared.part(sha256, index).await? {
            out.extend_from_slice(&part);
            index += 1;
        }
        if index == 0 {
            return Err(missing());
        }
        Ok(out)
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

fn missing() -> EngineError {
    EngineError::Io(std::io::Error::new(
        std::io::ErrorKind::NotFound,
        "the original file is not stored",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn write_commit_read_remove() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path()).await.unwrap();
        let mut w = blobs.writer(100).await.unwrap();
        w.write(b"hello ").await.unwrap();
        w.write(b"world").await.unwrap();
        let staged = w.finish().await.unwrap();
        assert_eq!(
            staged.sha256,
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
        let sha = staged.sha256.clone();
        blobs.commit(staged).await.unwrap();
        assert_eq!(blobs.read(&sha).await.unwrap(), b"hello world");
        blobs.remove(&sha).await.unwrap();
        assert!(blobs.read(&sha).await.is_err());
    }

    #[tokio::test]
    async fn limit_is_enforced_and_partial_removed() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path()).await.unwrap();
        let mut w = blobs.writer(4).await.unwrap();
        let path = w.path.clone();
        assert!(matches!(
            w.write(b"12345").await,
            Err(EngineError::TooLarge { limit: 4 })
        ));
        assert!(!path.exists());
    }
}
