//! The semantic index: each tenant's chunk vectors, held in memory as one contiguous
//! block of unit-length `f32`s and scanned exactly.
//!
//! Why an exact scan: measured on the 2-core bench machine (bench/README.md), scanning
//! 100,000 vectors of 384 dimensions takes a few milliseconds, inside the search budget,
//! with perfect recall and no index to build, tune or keep in step across nodes. The
//! vectors live in the database (`knowledge_chunks.embedding`); this is a cache, keyed
//! by the tenant's `knowledge_generation`, which every change to its chunks bumps in the
//! same transaction. A search first reads the generation (one primary-key lookup) and
//! reloads when it moved, so every node sees every commit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::error::Result;
use crate::ids::TenantId;
use crate::store::{Store, TenantTx, scoped};

/// Tenants whose vectors stay cached; the least recently searched is dropped first.
const MAX_TENANTS: usize = 64;

/// One tenant's vectors for one model.
pub struct TenantVectors {
    pub generation: i64,
    pub model: String,
    pub dims: usize,
    /// Chunk ids, in the order of `data`.
    pub ids: Vec<String>,
    /// `ids.len() × dims` unit-length components.
    data: Vec<f32>,
}

impl TenantVectors {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The `k` chunks most similar to `query` (unit length), best first, as
    /// (chunk id, cosine similarity).
    pub fn top_k(&self, query: &[f32], k: usize) -> Vec<(&str, f32)> {
        if query.len() != self.dims || self.dims == 0 || k == 0 {
            return Vec::new();
        }
        // A bounded min-heap would save a little; sorting k candidates per block is
        // simpler and the scan dominates anyway.
        let mut best: Vec<(f32, usize)> = Vec::with_capacity(k + 1);
        let mut floor = f32::NEG_INFINITY;
        for (i, v) in self.data.chunks_exact(self.dims).enumerate() {
            let s = dot(v, query);
            if best.len() < k || s > floor {
                best.push((s, i));
                if best.len() > k {
                    best.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
                    best.truncate(k);
                    floor = best[k - 1].0;
                }
            }
        }
        best.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
        best.into_iter()
            .map(|(s, i)| (self.ids[i].as_str(), s))
            .collect()
    }
}

/// Dot product in eight lanes, so the compiler vectorises it.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// `v` scaled to unit length (a zero vector stays zero).
pub fn normalize(mut v: Vec<f32>) -> Vec<f32> {
    let n = dot(&v, &v).sqrt();
    if n > 0.0 && n.is_finite() {
        for x in &mut v {
            *x /= n;
        }
    }
    v
}

/// Little-endian bytes of a vector, as stored.
pub fn to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn from_bytes(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// The per-process cache of tenants' vectors.
#[derive(Default)]
pub struct VectorCache {
    tenants: Mutex<HashMap<TenantId, (Arc<TenantVectors>, Instant)>>,
}

impl VectorCache {
    /// The tenant's vectors for `model`, reloaded when its generation moved.
    pub async fn get(&self, store: &Store, tenant: &TenantId, model: &str) -> Result<Arc<TenantVectors>> {
        let mut tx = store.tenant_read(tenant).await?;
        let (generation,): (i64,) = tx
            .fetch_one(scoped("SELECT knowledge_generation FROM tenants WHERE id = $1"))
            .await?;
        if let Some(v) = self.cached(tenant, generation, model) {
            return Ok(v);
        }
        let loaded = Arc::new(load(&mut tx, generation, model).await?);
        drop(tx);
        let mut map = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_TENANTS && !map.contains_key(tenant) {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(t, _)| t.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(tenant.clone(), (loaded.clone(), Instant::now()));
        Ok(loaded)
    }

    fn cached(&self, tenant: &TenantId, generation: i64, model: &str) -> Option<Arc<TenantVectors>> {
        let mut map = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        let (v, used) = map.get_mut(tenant)?;
        if v.generation != generation || v.model != model {
            return None;
        }
        *used = Instant::now();
        Some(v.clone())
    }
}

async fn load(tx: &mut TenantTx, generation: i64, model: &str) -> Result<TenantVectors> {
    let rows: Vec<(String, Vec<u8>)> = tx
        .fetch_all(
            scoped("SELECT id, embedding FROM knowledge_chunks WHERE tenant_id = $1 AND embedding_model = $2 AND embedding IS NOT NULL")
                .bind(model),
        )
        .await?;
    let dims = rows.first().map_or(0, |(_, b)| b.len() / 4);
    let mut ids = Vec::with_capacity(rows.len());
    let mut data = Vec::with_capacity(rows.len() * dims);
    for (id, bytes) in rows {
        // A vector of another size came from another model under the same name; skip it.
        if bytes.len() != dims * 4 {
            continue;
        }
        data.extend(from_bytes(&bytes));
        ids.push(id);
    }
    Ok(TenantVectors {
        generation,
        model: model.to_owned(),
        dims,
        ids,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_finds_the_nearest() {
        let vs = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.7, 0.7, 0.0], [0.0, 0.0, 1.0]];
        let mut data = Vec::new();
        for v in vs {
            data.extend(normalize(v.to_vec()));
        }
        let t = TenantVectors {
            generation: 0,
            model: "m".into(),
            dims: 3,
            ids: (0..4).map(|i| format!("c{i}")).collect(),
            data,
        };
        let q = normalize(vec![0.9, 0.5, 0.0]);
        let top = t.top_k(&q, 2);
        assert_eq!(top.iter().map(|(id, _)| *id).collect::<Vec<_>>(), ["c2", "c0"]);
        assert!(t.top_k(&[1.0], 2).is_empty(), "wrong dimensions give nothing");
        assert_eq!(from_bytes(&to_bytes(&[1.5, -2.0])), vec![1.5, -2.0]);
    }
}
