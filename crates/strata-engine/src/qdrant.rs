//! The embedded index on Qdrant's engine (`--vector-index qdrant`): chunk vectors in a
//! qdrant-edge shard (segments, HNSW with payload-aware filtering, a write-ahead log) in the
//! data directory, beside the SQLite file.
//!
//! Every point carries its tenant as an indexed keyword payload (`owner`, marked as the
//! tenant field), and every search has it as a `must` condition: Qdrant applies it while it
//! walks the graph (or scans, when its estimate says the tenant is small), never after. A
//! filter on tags or documents is answered by the database, which owns tags and can change
//! them without touching the index, and reaches the shard as an id condition, inside the
//! search too. Vectors are kept as f32 at unit length and ranked by dot product (cosine),
//! so the scores need no re-ranking, unlike usearch's 8-bit vectors.
//!
//! New points land in an appendable segment that is searched exactly; [`QdrantIndex::save`]
//! (periodic, and after a rebuild) flushes the shard and runs Qdrant's optimizers, which
//! build an HNSW segment once one outgrows the indexing threshold.
//!
//! Recovery: qdrant-edge 0.7.0 opens its write-ahead log on load but does not replay it
//! (`EdgeShard::load`), so points written after the last flush are lost by a crash. The
//! database stays the source of truth as with usearch: the sidecar fingerprint (model,
//! count and sum of keys), written after a flush, must match the database and the shard's
//! own point count, or the shard is deleted and rebuilt from the stored vectors.
//!
//! Must not import: HTTP types, the embedder.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

use qdrant_edge::{
    Condition, CreateIndex, DEFAULT_VECTOR_NAME, Distance, EdgeConfig, EdgeShard, EdgeVectorParams,
    FieldCondition, FieldIndexOperations, Filter, HasIdCondition, HnswIndexConfig, JsonPath,
    KeywordIndexParams, Match, NamedQuery, PayloadFieldSchema, PayloadSchemaParams, PointId,
    PointInsertOperations, PointOperations, PointStruct, PointStructPersisted, QueryEnum,
    QueryRequest, ScoredPoint, ScoringQuery, SearchParams, UpdateOperation, ValueVariants,
    WithPayloadInterface, WithVector,
};
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::ids::TenantId;
use crate::vectors::{AnnSettings, InProcessIndex, Owners, save_if_changed, sidecar_matches, unit};

/// The payload field holding a point's tenant.
const OWNER: &str = "owner";

/// What the shard was built with, beside the database fingerprint: a shard made by another
/// engine version or for another model is rebuilt rather than trusted.
const ENGINE: &str = "qdrant-edge-0.7.0/dot/f32";

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Sidecar {
    engine: String,
    model: String,
    dims: usize,
    count: u64,
    key_sum: u64,
}

/// The index.
pub struct QdrantIndex {
    shard: EdgeShard,
    owners: RwLock<Owners>,
    owner_field: JsonPath,
    path: PathBuf,
    model: String,
    dims: usize,
    settings: AnnSettings,
    dirty: AtomicBool,
}

fn qdrant_err(e: impl std::fmt::Display) -> EngineError {
    EngineError::Internal(format!("qdrant index: {e}"))
}

fn sidecar(path: &Path) -> PathBuf {
    path.with_extension("qdrant.json")
}

impl QdrantIndex {
    fn wrap(
        shard: EdgeShard,
        path: &Path,
        model: &str,
        dims: usize,
        settings: AnnSettings,
    ) -> Self {
        Self {
            shard,
            owners: RwLock::new(Owners::default()),
            owner_field: JsonPath::try_from(OWNER).expect("a plain field name is a JSON path"),
            path: path.to_owned(),
            model: model.to_owned(),
            dims,
            settings,
            dirty: AtomicBool::new(false),
        }
    }

    /// Marks the shard changed since its last save; the first change also removes the
    /// sidecar, so a crash before the next save (which may leave segments half written)
    /// always costs a rebuild, never a load of a shard that no longer matches it.
    fn changed(&self) {
        if !self.dirty.swap(true, Ordering::AcqRel) {
            let _ = std::fs::remove_file(sidecar(&self.path));
        }
    }

    fn owners(&self) -> std::sync::RwLockWriteGuard<'_, Owners> {
        self.owners.write().unwrap_or_else(|p| p.into_inner())
    }
}

impl InProcessIndex for QdrantIndex {
    /// Loads the shard at `path` (a directory) if its sidecar matches the database
    /// fingerprint `(count, key_sum)`; returns `None` when it must be rebuilt.
    fn load(
        path: &Path,
        model: &str,
        dims: usize,
        settings: AnnSettings,
        fingerprint: (u64, u64),
    ) -> Result<Option<Self>> {
        let expected = Sidecar {
            engine: ENGINE.to_owned(),
            model: model.to_owned(),
            dims,
            count: fingerprint.0,
            key_sum: fingerprint.1,
        };
        if !sidecar_matches(&sidecar(path), &expected) {
            return Ok(None);
        }
        let shard = match EdgeShard::load(path, Some(config(dims, settings))) {
            Ok(shard) => shard,
            Err(e) => {
                tracing::warn!(error = %e, "the qdrant shard cannot be loaded; rebuilding it");
                return Ok(None);
            }
        };
        if shard.info().points_count as u64 != fingerprint.0 {
            return Ok(None);
        }
        Ok(Some(Self::wrap(shard, path, model, dims, settings)))
    }

    /// A fresh, empty shard at `path` (whatever was there is removed), to fill with
    /// [`InProcessIndex::add`].
    fn new(path: &Path, model: &str, dims: usize, settings: AnnSettings) -> Result<Self> {
        let _ = std::fs::remove_file(sidecar(path));
        if path.exists() {
            std::fs::remove_dir_all(path)?;
        }
        std::fs::create_dir_all(path)?;
        let shard = EdgeShard::new(path, config(dims, settings)).map_err(qdrant_err)?;
        let this = Self::wrap(shard, path, model, dims, settings);
        this.shard
            .update(UpdateOperation::FieldIndexOperation(
                FieldIndexOperations::CreateIndex(CreateIndex {
                    field_name: this.owner_field.clone(),
                    field_schema: Some(PayloadFieldSchema::FieldParams(
                        PayloadSchemaParams::Keyword(KeywordIndexParams {
                            is_tenant: Some(true),
                            ..Default::default()
                        }),
                    )),
                }),
            ))
            .map_err(qdrant_err)?;
        this.dirty.store(true, Ordering::Release);
        Ok(this)
    }

    /// Records owners of keys already in a loaded shard.
    fn register_owners(&self, rows: &[(u64, TenantId)]) {
        let mut owners = self.owners();
        for (key, owner) in rows {
            if !owners.contains(*key) {
                owners.insert(*key, owner);
            }
        }
    }

    /// Adds vectors (replacing any under the same key).
    fn add(&self, rows: &[(u64, TenantId, Vec<f32>)]) -> Result<()> {
        let mut points = Vec::with_capacity(rows.len());
        for (key, owner, v) in rows {
            if v.len() != self.dims {
                return Err(EngineError::Internal(format!(
                    "vector of {} dims, expected {}",
                    v.len(),
                    self.dims
                )));
            }
            let point: PointStructPersisted = PointStruct::new(
                PointId::NumId(*key),
                unit(v).into_owned(),
                serde_json::json!({ OWNER: owner.as_str() }),
            )
            .into();
            points.push(point);
        }
        if points.is_empty() {
            return Ok(());
        }
        self.shard
            .update(UpdateOperation::PointOperation(
                PointOperations::UpsertPoints(PointInsertOperations::PointsList(points)),
            ))
            .map_err(qdrant_err)?;
        let mut owners = self.owners();
        for (key, owner, _) in rows {
            owners.remove(*key);
            owners.insert(*key, owner);
        }
        self.changed();
        Ok(())
    }

    /// Removes vectors; unknown keys are ignored.
    fn remove(&self, keys: &[u64]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        self.shard
            .update(UpdateOperation::PointOperation(
                PointOperations::DeletePoints {
                    ids: keys.iter().map(|k| PointId::NumId(*k)).collect(),
                },
            ))
            .map_err(qdrant_err)?;
        let mut owners = self.owners();
        for key in keys {
            owners.remove(*key);
        }
        self.changed();
        Ok(())
    }

    /// How many vectors the tenant has.
    fn tenant_count(&self, owner: &TenantId) -> u64 {
        self.owners
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .count(owner)
    }

    /// Vectors in the shard.
    fn len(&self) -> usize {
        self.owners
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .fingerprint()
            .0 as usize
    }

    /// Up to `k` nearest of the tenant's vectors (restricted to `allowed` when given), as
    /// (key, cosine similarity), best first.
    fn search(
        &self,
        owner: &TenantId,
        query: &[f32],
        k: usize,
        allowed: Option<&HashSet<u64>>,
    ) -> Result<Vec<(u64, f32)>> {
        let mut filter = Filter::new_must(Condition::Field(FieldCondition::new_match(
            self.owner_field.clone(),
            Match::new_value(ValueVariants::String(owner.as_str().to_owned())),
        )));
        if let Some(allowed) = allowed {
            let ids: HasIdCondition = allowed.iter().map(|k| PointId::NumId(*k)).collect();
            filter = filter.merge_owned(Filter::new_must(Condition::HasId(ids)));
        }
        let request = QueryRequest {
            prefetches: Vec::new(),
            query: Some(ScoringQuery::Vector(QueryEnum::Nearest(
                NamedQuery::default_dense(unit(query).into_owned()),
            ))),
            filter: Some(filter),
            score_threshold: None,
            limit: k,
            offset: 0,
            params: Some(SearchParams {
                hnsw_ef: Some(self.settings.expansion_search),
                ..Default::default()
            }),
            with_vector: WithVector::Bool(false),
            with_payload: WithPayloadInterface::Bool(false),
        };
        let found = self.shard.query(request).map_err(qdrant_err)?;
        Ok(numeric_hits(found))
    }

    /// Flushes the shard, runs its optimizers (building HNSW segments where they are due)
    /// and writes the fingerprint, if anything changed since the last save.
    fn save(&self) -> Result<bool> {
        save_if_changed(&self.dirty, || {
            self.shard.optimize().map_err(qdrant_err)?;
            let fingerprint = self
                .owners
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .fingerprint();
            self.shard.flush();
            let meta = Sidecar {
                engine: ENGINE.to_owned(),
                model: self.model.clone(),
                dims: self.dims,
                count: fingerprint.0,
                key_sum: fingerprint.1,
            };
            let tmp = sidecar(&self.path).with_extension("json.tmp");
            std::fs::write(&tmp, serde_json::to_vec(&meta).map_err(qdrant_err)?)?;
            std::fs::rename(&tmp, sidecar(&self.path))?;
            Ok(())
        })
    }

    fn exact_scores(&self) -> bool {
        true
    }
}

/// A query's points as (key, score), best first: strata's points all have numeric ids.
pub fn numeric_hits(found: Vec<ScoredPoint>) -> Vec<(u64, f32)> {
    found
        .into_iter()
        .filter_map(|p| match p.id {
            PointId::NumId(id) => Some((id, p.score)),
            PointId::Uuid(_) => None,
        })
        .collect()
}

/// One dense vector of `dims` ranked by dot product, HNSW with strata's graph settings.
fn config(dims: usize, settings: AnnSettings) -> EdgeConfig {
    EdgeConfig::builder()
        .vector(
            DEFAULT_VECTOR_NAME,
            EdgeVectorParams::builder(dims, Distance::Dot).build(),
        )
        .hnsw_config(HnswIndexConfig {
            m: settings.connectivity,
            ef_construct: settings.expansion_add,
            ..Default::default()
        })
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vectors::tests::{
        tenants_never_see_each_other_and_removal_works_in, unit as vector,
    };

    #[test]
    fn tenants_never_see_each_other_and_filters_hold_inside_the_search() {
        let dir = tempfile::tempdir().unwrap();
        tenants_never_see_each_other_and_removal_works_in::<QdrantIndex>(&dir.path().join("q"));
    }

    /// Past the indexing threshold (10 MB of vectors by default) the optimizers build an HNSW
    /// segment; answers agree with exact scoring, and a re-added key replaces its vector.
    #[test]
    fn the_graph_built_on_save_agrees_with_exact_scores() {
        let dir = tempfile::tempdir().unwrap();
        let dims = 384;
        let idx =
            QdrantIndex::new(&dir.path().join("q"), "m", dims, AnnSettings::default()).unwrap();
        let a = TenantId::local();
        // Clustered, as embeddings are (uniform random vectors in 384 dimensions are all
        // about equally far apart, and no graph index finds their neighbours well).
        let clustered = |k: u64| -> Vec<f32> {
            let (center, noise) = (vector(k % 200, dims), vector(k + 7_000_000, dims));
            let v: Vec<f32> = center
                .iter()
                .zip(&noise)
                .map(|(c, n)| c + 0.35 * n)
                .collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.into_iter().map(|x| x / norm).collect()
        };
        let rows: Vec<_> = (1..=20_000u64)
            .map(|k| (k, a.clone(), clustered(k)))
            .collect();
        for chunk in rows.chunks(2000) {
            idx.add(chunk).unwrap();
        }
        assert!(idx.save().unwrap());
        assert!(
            idx.shard.info().indexed_vectors_count > 0,
            "an HNSW segment was built: {:?}",
            idx.shard.info()
        );
        let candidates: Vec<(u64, Vec<f32>)> =
            rows.iter().map(|(k, _, v)| (*k, v.clone())).collect();
        let mut found = 0;
        for q in 0..20u64 {
            let query = clustered(1_000_000 + q);
            let exact = crate::vectors::exact_top_k(&query, &candidates, 10);
            let got = idx.search(&a, &query, 10, None).unwrap();
            found += got
                .iter()
                .filter(|(k, _)| exact.iter().any(|(e, _)| e == k))
                .count();
            let (top, score) = got[0];
            let want = exact.iter().find(|(k, _)| *k == top).map(|(_, s)| *s);
            if let Some(want) = want {
                assert!((score - want).abs() < 1e-4, "f32 scores: {score} vs {want}");
            }
        }
        assert!(found >= 180, "recall@10 over 20 queries: {found}/200");
        idx.add(&[(7, a.clone(), vector(424_242, dims))]).unwrap();
        let again = idx.search(&a, &vector(424_242, dims), 1, None).unwrap();
        assert_eq!(again[0].0, 7);
        assert_eq!(idx.len(), 20_000);
    }

    #[test]
    fn a_saved_shard_loads_only_with_a_matching_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q");
        let t = TenantId::local();
        {
            let idx = QdrantIndex::new(&path, "m", 8, AnnSettings::default()).unwrap();
            idx.add(&[(1, t.clone(), vector(1, 8)), (2, t.clone(), vector(2, 8))])
                .unwrap();
            assert!(idx.save().unwrap());
            assert!(!idx.save().unwrap(), "nothing changed since");
        }
        let settings = AnnSettings::default();
        let loaded = QdrantIndex::load(&path, "m", 8, settings, (2, 3))
            .unwrap()
            .unwrap();
        loaded.register_owners(&[(1, t.clone()), (2, t.clone())]);
        assert_eq!(loaded.search(&t, &vector(2, 8), 1, None).unwrap()[0].0, 2);
        // A change not yet saved removes the sidecar: a crash now means a rebuild.
        loaded.remove(&[1]).unwrap();
        drop(loaded);
        assert!(
            QdrantIndex::load(&path, "m", 8, settings, (1, 2))
                .unwrap()
                .is_none()
        );
        assert!(
            QdrantIndex::load(&path, "m", 8, settings, (2, 3))
                .unwrap()
                .is_none()
        );
        let idx = QdrantIndex::new(&path, "m", 8, settings).unwrap();
        idx.add(&[(5, t.clone(), vector(5, 8))]).unwrap();
        idx.save().unwrap();
        drop(idx);
        assert!(
            QdrantIndex::load(&path, "other", 8, settings, (1, 5))
                .unwrap()
                .is_none()
        );
        assert!(
            QdrantIndex::load(&path, "m", 8, settings, (2, 7))
                .unwrap()
                .is_none()
        );
        assert!(
            QdrantIndex::load(&path, "m", 8, settings, (1, 5))
                .unwrap()
                .is_some()
        );
    }
}
