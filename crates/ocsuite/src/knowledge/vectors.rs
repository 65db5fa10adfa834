//! The semantic index: each tenant's chunk vectors, held in memory as one contiguous
//! block of `i8`-quantised unit vectors (one scale each) and scanned in full.
//!
//! Why a full scan: measured on the 2-core bench machine (bench/README.md), scanning
//! 100,000 vectors of 384 dimensions takes a few milliseconds once quantised (the `f32`
//! scan read four times the memory and took 6–7 ms), inside the search budget, with
//! every vector compared (no recall lost to a graph) and no index to build, tune or keep
//! in step across nodes. Quantisation moves a cosine by well under 0.01. The
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

/// One tenant's vectors for one model (none without a model), and how many chunks it
/// has in all, so a search skips a tenant with nothing to find.
pub struct TenantVectors {
    pub generation: i64,
    pub model: Option<String>,
    /// Every chunk of the tenant, embedded or not.
    pub chunks: i64,
    pub dims: usize,
    /// Chunk ids, in the order of `data`.
    pub ids: Vec<String>,
    /// Each vector's source, as an index into `sources`.
    source_of: Vec<u32>,
    sources: Vec<String>,
    /// `ids.len() × dims` components, each vector quantised to `i8` with its own
    /// scale in `scales` (a quarter of the memory, and of the bytes a scan reads).
    data: Vec<i8>,
    scales: Vec<f32>,
}

impl TenantVectors {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The `k` chunks most similar to `query` (unit length), best first, as
    /// (chunk id, cosine similarity); only chunks of `sources` when some are given.
    pub fn top_k(&self, query: &[f32], k: usize, sources: &[String]) -> Vec<(&str, f32)> {
        if query.len() != self.dims || self.dims == 0 || k == 0 {
            return Vec::new();
        }
        let allowed: Option<Vec<bool>> = (!sources.is_empty())
            .then(|| self.sources.iter().map(|s| sources.contains(s)).collect());
        // A bounded min-heap would save a little; sorting k candidates per block is
        // simpler and the scan dominates anyway.
        let mut best: Vec<(f32, usize)> = Vec::with_capacity(k + 1);
        let mut floor = f32::NEG_INFINITY;
        let (q, q_scale) = quantize(query);
        for (i, v) in self.data.chunks_exact(self.dims).enumerate() {
            if let Some(a) = &allowed
                && !a[self.source_of[i] as usize]
            {
                continue;
            }
            let s = dot_i8(v, &q) as f32 * self.scales[i] * q_scale;
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

/// `v` as `i8` components and the scale that turns them back (max |x| ↦ 127).
pub fn quantize(v: &[f32]) -> (Vec<i8>, f32) {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    if max == 0.0 || !max.is_finite() {
        return (vec![0; v.len()], 0.0);
    }
    let k = 127.0 / max;
    (
        v.iter()
            .map(|x| (x * k).round().clamp(-127.0, 127.0) as i8)
            .collect(),
        max / 127.0,
    )
}

/// Integer dot product in sixteen lanes, so the compiler vectorises it.
pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    let mut acc = [0i32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += i32::from(x[i]) * i32::from(y[i]);
        }
    }
    let mut s: i32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += i32::from(*x) * i32::from(*y);
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
    /// The tenant's vectors for `model` (and its chunk count), reloaded when its
    /// generation moved.
    pub async fn get(
        &self,
        store: &Store,
        tenant: &TenantId,
        model: Option<&str>,
    ) -> Result<Arc<TenantVectors>> {
        let mut tx = store.tenant_read(tenant).await?;
        let (generation,): (i64,) = tx
            .fetch_one(scoped(
                "SELECT knowledge_generation FROM tenants WHERE id = $1",
            ))
            .await?;
        if let Some(v) = self.cached(tenant, generation, model) {
            return Ok(v);
        }
        let loaded = Arc::new(load(&mut tx, generation, model).await?);
        drop(tx);
        let mut map = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_TENANTS
            && !map.contains_key(tenant)
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(t, _)| t.clone())
        {
            map.remove(&oldest);
        }
        map.insert(tenant.clone(), (loaded.clone(), Instant::now()));
        Ok(loaded)
    }

    fn cached(
        &self,
        tenant: &TenantId,
        generation: i64,
        model: Option<&str>,
    ) -> Option<Arc<TenantVectors>> {
        let mut map = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        let (v, used) = map.get_mut(tenant)?;
        if v.generation != generation || v.model.as_deref() != model {
            return None;
        }
        *used = Instant::now();
        Some(v.clone())
    }
}

async fn load(tx: &mut TenantTx, generation: i64, model: Option<&str>) -> Result<TenantVectors> {
    let (chunks,): (i64,) = tx
        .fetch_one(scoped(
            "SELECT count(*) FROM knowledge_chunks WHERE tenant_id = $1",
        ))
        .await?;
    let mut out = TenantVectors {
        generation,
        model: model.map(str::to_owned),
        chunks,
        dims: 0,
        ids: Vec::new(),
        source_of: Vec::new(),
        sources: Vec::new(),
        data: Vec::new(),
        scales: Vec::new(),
    };
    let Some(model) = model.filter(|_| chunks > 0) else {
        return Ok(out);
    };
    let rows: Vec<(String, String, Vec<u8>)> = tx
        .fetch_all(
            scoped("SELECT id, source_id, embedding FROM knowledge_chunks WHERE tenant_id = $1 AND embedding_model = $2 AND embedding IS NOT NULL")
                .bind(model),
        )
        .await?;
    out.dims = rows.first().map_or(0, |(_, _, b)| b.len() / 4);
    out.ids.reserve(rows.len());
    out.data.reserve(rows.len() * out.dims);
    for (id, source, bytes) in rows {
        // A vector of another size came from another model under the same name; skip it.
        if bytes.len() != out.dims * 4 {
            continue;
        }
        let s = match out.sources.iter().position(|x| *x == source) {
            Some(i) => i,
            None => {
                out.sources.push(source);
                out.sources.len() - 1
            }
        };
        out.source_of.push(s as u32);
        let (q, scale) = quantize(&from_bytes(&bytes));
        out.data.extend(q);
        out.scales.push(scale);
        out.ids.push(id);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_finds_the_nearest() {
        let vs = [
            [1.0, 0.0, 0.0],
            [0.0, 1.0, 0.0],
            [0.7, 0.7, 0.0],
            [0.0, 0.0, 1.0],
        ];
        let (mut data, mut scales) = (Vec::new(), Vec::new());
        for v in vs {
            let (q, s) = quantize(&normalize(v.to_vec()));
            data.extend(q);
            scales.push(s);
        }
        let t = TenantVectors {
            generation: 0,
            model: Some("m".into()),
            chunks: 4,
            dims: 3,
            ids: (0..4).map(|i| format!("c{i}")).collect(),
            source_of: vec![0, 0, 1, 0],
            sources: vec!["s0".into(), "s1".into()],
            data,
            scales,
        };
        let q = normalize(vec![0.9, 0.5, 0.0]);
        let top = t.top_k(&q, 2, &[]);
        assert_eq!(
            top.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            ["c2", "c0"]
        );
        let only = t.top_k(&q, 2, &["s0".into()]);
        assert_eq!(
            only.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            ["c0", "c1"]
        );
        assert!(
            t.top_k(&[1.0], 2, &[]).is_empty(),
            "wrong dimensions give nothing"
        );
        // Quantised scores stay within a hair of the exact cosine.
        assert!(
            (top[0].1 - dot(&q, &normalize(vec![0.7, 0.7, 0.0]))).abs() < 0.02,
            "{top:?}"
        );
        assert_eq!(from_bytes(&to_bytes(&[1.5, -2.0])), vec![1.5, -2.0]);
    }
}
