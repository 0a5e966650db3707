//! Each tenant's frequent memory queries, for preloading their embeddings: a small
//! space-saving counter per tenant (the [`KEPT`] most frequent texts, a newcomer taking the
//! least counted slot), for at most [`TENANTS`] tenants, forgotten wholesale past that.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::ids::TenantId;

/// Queries kept per tenant.
const KEPT: usize = 16;
/// Tenants tracked.
const TENANTS: usize = 100_000;

/// See the module doc.
#[derive(Default)]
pub struct FrequentQueries {
    by_tenant: Mutex<HashMap<TenantId, Vec<(String, u32)>>>,
}

impl FrequentQueries {
    /// Counts one search of `query` by `owner`.
    pub fn note(&self, owner: &TenantId, query: &str) {
        let mut all = self.by_tenant.lock().unwrap_or_else(|e| e.into_inner());
        if all.len() >= TENANTS && !all.contains_key(owner) {
            all.clear();
        }
        let kept = all.entry(owner.clone()).or_default();
        if let Some(q) = kept.iter_mut().find(|(q, _)| q == query) {
            q.1 += 1;
        } else if kept.len() < KEPT {
            kept.push((query.to_owned(), 1));
        } else if let Some(least) = kept.iter_mut().min_by_key(|(_, n)| *n) {
            *least = (query.to_owned(), least.1 + 1);
        }
    }

    /// The owner's kept queries, most frequent first.
    pub fn top(&self, owner: &TenantId) -> Vec<String> {
        let all = self.by_tenant.lock().unwrap_or_else(|e| e.into_inner());
        let mut kept = all.get(owner).cloned().unwrap_or_default();
        kept.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        kept.into_iter().map(|(q, _)| q).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_frequent_queries_are_kept_per_tenant() {
        let f = FrequentQueries::default();
        let a = TenantId::parse("a").unwrap();
        let b = TenantId::parse("b").unwrap();
        for _ in 0..5 {
            f.note(&a, "where do I live");
        }
        for i in 0..40 {
            f.note(&a, &format!("rare {i}"));
        }
        f.note(&b, "other");
        let top = f.top(&a);
        assert_eq!(top.len(), KEPT);
        assert_eq!(top[0], "where do I live");
        assert_eq!(f.top(&b), ["other"]);
    }
}
