//! The settings, by section (server, auth, admission, storage, cache, embedding and search,
//! jobs, memories, gateway; grouped in files `edge`, `data` and `work`): one type per section
//! serves as its flags (with their `STRATA_*` variables, grouped in `--help` under
//! the section's heading) and as its table in `strata.toml`. Each flag's doc comment is its
//! help; the `[default: ...]` it states is the owning crate's value (a test checks it).

use std::path::PathBuf;

use clap::Args;
use serde::{Deserialize, Deserializer};

use super::parse_size;

/// Every setting, as given on the command line, in the environment or in one layer of
/// `strata.toml` (each file setting has the flag's name with underscores: `data_dir = "..."`,
/// at the top level or in its section's table: `[storage] data_dir = "..."`).
///
/// Deliberately not `Debug`: it holds the database and Redis URLs and the embedding API key
/// as given; [`Config`](super::Config) holds them in types that mask them.
#[derive(Clone, Default, Args, Deserialize)]
#[serde(default)]
pub struct Overrides {
    /// Configuration file [default: ./strata.toml when it exists].
    #[arg(long, env = "STRATA_CONFIG", global = true)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// `[server]`.
    #[command(flatten)]
    #[serde(flatten)]
    pub server: ServerFlags,
    /// `[auth]`.
    #[command(flatten)]
    #[serde(flatten)]
    pub auth: AuthFlags,
    /// `[admission]`.
    #[command(flatten)]
    #[serde(flatten)]
    pub admission: AdmissionFlags,
    /// `[storage]`.
    #[command(flatten)]
    #[serde(flatten)]
    pub storage: StorageFlags,
    /// `[cache]`.
    #[command(flatten)]
    #[serde(flatten)]
    pub cache: CacheFlags,
    /// `[embedding]`.
    #[command(flatten)]
    #[serde(flatten)]
    pub embedding: EmbeddingFlags,
    /// `[jobs]`.
    #[command(flatten)]
    #[serde(flatten)]
    pub jobs: JobFlags,
    /// `[memories]`.
    #[command(flatten)]
    #[serde(flatten)]
    pub memories: MemoryFlags,
    /// `[gateway]`.
    #[command(flatten)]
    #[serde(flatten)]
    pub gateway: GatewayFlags,
}

impl Overrides {
    /// These settings, each one given here or else taken from `lower`.
    pub fn layered_over(self, lower: Self) -> Self {
        Self {
            config: self.config.or(lower.config),
            server: self.server.layered_over(lower.server),
            auth: self.auth.layered_over(lower.auth),
            admission: self.admission.layered_over(lower.admission),
            storage: self.storage.layered_over(lower.storage),
            cache: self.cache.layered_over(lower.cache),
            embedding: self.embedding.layered_over(lower.embedding),
            jobs: self.jobs.layered_over(lower.jobs),
            memories: self.memories.layered_over(lower.memories),
            gateway: self.gateway.layered_over(lower.gateway),
        }
    }
}

/// The file's table for each section, with the flags that belong to it: the names a
/// `[section]` table of `strata.toml` may hold.
pub(super) fn sections() -> [(&'static str, clap::Command); 9] {
    let flags = |cmd: fn(clap::Command) -> clap::Command| cmd(clap::Command::new("section"));
    [
        ("server", flags(ServerFlags::augment_args)),
        ("auth", flags(AuthFlags::augment_args)),
        ("admission", flags(AdmissionFlags::augment_args)),
        ("storage", flags(StorageFlags::augment_args)),
        ("cache", flags(CacheFlags::augment_args)),
        ("embedding", flags(EmbeddingFlags::augment_args)),
        ("jobs", flags(JobFlags::augment_args)),
        ("memories", flags(MemoryFlags::augment_args)),
        ("gateway", flags(GatewayFlags::augment_args)),
    ]
}

/// `layered_over` for a section: each field given in `self`, or else `lower`'s. Listing a
/// field twice or leaving one out does not compile.
macro_rules! layered {
    ($section:ident { $($field:ident),* $(,)? }) => {
        impl $section {
            /// These settings, each one given here or else taken from `lower`.
            pub fn layered_over(self, lower: Self) -> Self {
                Self { $($field: self.$field.or(lower.$field)),* }
            }
        }
    };
}

// After `layered!`, which the sections use.
mod data;
mod edge;
mod work;

pub use data::{CacheFlags, EmbeddingFlags, MemoryFlags, StorageFlags};
pub use edge::{AdmissionFlags, AuthFlags, ServerFlags};
pub use work::{GatewayFlags, JobFlags, PdfReaderChoice};

/// A size in `strata.toml`: a number of bytes, or text with a unit (`"50MiB"`).
fn size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Option::<Size>::deserialize(d)? {
        None => Ok(None),
        Some(Size::Bytes(n)) => Ok(Some(n)),
        Some(Size::Text(s)) => parse_size(&s).map(Some).map_err(serde::de::Error::custom),
    }
}

/// Which implementation runs the local embedding model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// int8 ONNX export through ONNX Runtime.
    Onnx,
    /// f32 weights through candle.
    Candle,
}

/// The embedded store's in-process vector index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum VectorIndexKind {
    /// usearch HNSW over 8-bit vectors, re-ranked with the stored f32 vectors.
    Usearch,
    /// A qdrant-edge shard: f32 HNSW with payload-aware filtering.
    Qdrant,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}
