//! The memory service's write path: an add is validated, embedded with the rest of its batch
//! in one call, then, against the tenant's working set, merged into a near-duplicate,
//! superseding another memory (named, or holding the same key), or created. The batch runs
//! as a tracked write, so it finishes even if its caller goes away.

use super::valid::{Valid, validate_add};
use super::{MAX_BATCH, MemoryService};
use crate::error::{EngineError, Result};
use crate::ids::{IdKind, MemoryId, TenantId};
use crate::memory::working::TenantSet;
use crate::memory::{AddMemory, AddStatus, Added, Inserted, Memory, MemoryChange, NewMemory};
use crate::store::Replace;
use crate::validate;

impl MemoryService {
    /// Adds memories in order (one embedding call for all of them); each answer says whether
    /// it created, merged or superseded.
    pub async fn add(&self, owner: &TenantId, items: Vec<AddMemory>) -> Result<Vec<Added>> {
        if items.is_empty() || items.len() > MAX_BATCH {
            return Err(EngineError::invalid(
                "memories",
                format!("send 1 to {MAX_BATCH} memories"),
            ));
        }
        let many = items.len() > 1;
        let valid = items
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                validate_add(m).map_err(|e| match e {
                    EngineError::Invalid { field, message } if many => {
                        EngineError::invalid(format!("memories[{i}].{field}"), message)
                    }
                    other => other,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut named: Vec<&str> = valid.iter().filter_map(|v| v.session.as_deref()).collect();
        named.sort_unstable();
        named.dedup();
        for session in named {
            self.sessions.touch(owner, session);
        }
        let texts: Vec<String> = valid.iter().map(|v| v.text.clone()).collect();
        let vectors = self.retrieval.embed_for_storage(texts).await?;
        let (this, owner) = (self.clone(), owner.clone());
        self.writes
            .detach(async move {
                let mut out = Vec::with_capacity(valid.len());
                for (v, vector) in valid.into_iter().zip(vectors) {
                    out.push(this.add_one(&owner, v, vector).await?);
                }
                Ok(out)
            })
            .await
    }

    async fn add_one(&self, owner: &TenantId, v: Valid, vector: Vec<f32>) -> Result<Added> {
        let set = self.set(owner).await?;
        let writing = self.writing(Some(set.clone())).await;
        let model = self.retrieval.embedding_model().0.to_owned();
        if v.supersedes.is_none()
            && let Some((id, similarity)) = set.nearest_current(&vector, v.key.as_deref())
            && similarity >= self.settings.merge_threshold
            && let Some(old) = set.get(id)
        {
            let memory = self.merge(owner, &set, old, v, vector, model).await?;
            self.changed(owner, writing).await;
            return Ok(Added {
                status: AddStatus::Merged,
                memory,
                superseded: None,
                similarity: Some(similarity),
            });
        }
        let replace = match (v.supersedes, &v.key) {
            (Some(old), key) => {
                self.check_supersedes(owner, &set, old, key.as_deref())
                    .await?;
                Replace::Memory(old)
            }
            (None, Some(_)) => Replace::Key,
            (None, None) => Replace::Nothing,
        };
        let new = NewMemory {
            id: MemoryId::new(),
            owner: owner.clone(),
            text: v.text,
            importance: v.importance,
            metadata: v.metadata.unwrap_or_else(|| serde_json::json!({})),
            session: v.session,
            key: v.key,
            occurred_at: v.occurred_at,
            model,
            embedding: vector,
        };
        let inserted = self
            .insert(&new, replace)
            .await?
            .ok_or_else(|| match replace {
                Replace::Memory(old) => {
                    EngineError::invalid("supersedes", format!("memory {old} is no longer current"))
                }
                _ => EngineError::Internal("insert replaced nothing".into()),
            })?;
        let added = match inserted {
            Inserted::Created(memory) => Added {
                status: AddStatus::Created,
                memory,
                superseded: None,
                similarity: None,
            },
            Inserted::Superseded(memory, old) => {
                set.supersede(old, memory.id, memory.created_at);
                Added {
                    status: AddStatus::Superseded,
                    memory,
                    superseded: Some(old),
                    similarity: None,
                }
            }
        };
        set.put(added.memory.clone(), Some(&new.embedding));
        self.changed(owner, writing).await;
        Ok(added)
    }

    /// Inserts, retrying when another process took the key between this one's read and its
    /// write (the unique index on current keys refuses the second insert).
    async fn insert(&self, new: &NewMemory, replace: Replace) -> Result<Option<Inserted>> {
        let mut tries = 0;
        loop {
            match self.store.insert_memory(new, replace).await {
                Err(EngineError::Database(sqlx::Error::Database(e)))
                    if e.is_unique_violation() && replace == Replace::Key && tries < 3 =>
                {
                    tries += 1;
                }
                Err(EngineError::Database(sqlx::Error::Database(e))) if e.is_unique_violation() => {
                    return Err(EngineError::invalid(
                        "key",
                        "is held by another current memory; supersede that memory instead",
                    ));
                }
                other => return other,
            }
        }
    }

    /// Refuses a `supersedes` that names no current memory of the owner's, or a key another
    /// current memory holds.
    async fn check_supersedes(
        &self,
        owner: &TenantId,
        set: &TenantSet,
        old: MemoryId,
        key: Option<&str>,
    ) -> Result<()> {
        let current = match set.get(old) {
            Some(m) => m,
            None => self
                .store
                .get_memory(owner, old)
                .await?
                .ok_or_else(|| EngineError::not_found(IdKind::Memory, old))?,
        };
        if let Some(by) = current.superseded_by {
            return Err(EngineError::invalid(
                "supersedes",
                format!("memory {old} was already superseded by {by}"),
            ));
        }
        if let Some(key) = key
            && current.key.as_deref() != Some(key)
            && let Some(holder) = set.current_with_key(key)
        {
            return Err(EngineError::invalid(
                "key",
                format!("is held by current memory {holder}; supersede that one"),
            ));
        }
        Ok(())
    }

    /// Folds a near-duplicate add into `old`: the newer text (and its vector), the higher
    /// importance, the metadata merged (the add's fields win), the add's session and time
    /// when it has them. Nothing is written when nothing would change.
    async fn merge(
        &self,
        owner: &TenantId,
        set: &TenantSet,
        old: Memory,
        v: Valid,
        vector: Vec<f32>,
        model: String,
    ) -> Result<Memory> {
        let mut change = MemoryChange {
            reason: "merged",
            ..Default::default()
        };
        if v.text != old.text {
            change.text = Some((v.text, model, vector.clone()));
        }
        if v.importance > old.importance {
            change.importance = Some(v.importance);
        }
        if let Some(serde_json::Value::Object(add)) = v.metadata {
            let mut merged = old.metadata.as_object().cloned().unwrap_or_default();
            let before = merged.clone();
            merged.extend(add);
            if merged != before {
                change.metadata = Some(validate::metadata(serde_json::Value::Object(merged))?);
            }
        }
        if v.session.is_some() && v.session != old.session {
            change.session = Some(v.session);
        }
        if v.occurred_at.is_some() && v.occurred_at != old.occurred_at {
            change.occurred_at = Some(v.occurred_at);
        }
        let unchanged = change.text.is_none()
            && change.importance.is_none()
            && change.metadata.is_none()
            && change.session.is_none()
            && change.occurred_at.is_none();
        if unchanged {
            return Ok(old);
        }
        let text_changed = change.text.is_some();
        let memory = self
            .store
            .change_memory(owner, old.id, &change)
            .await?
            .ok_or_else(|| EngineError::Unavailable("the memory changed concurrently".into()))?;
        set.put(memory.clone(), text_changed.then_some(vector.as_slice()));
        Ok(memory)
    }
}
