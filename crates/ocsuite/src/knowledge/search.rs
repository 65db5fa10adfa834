//! Hybrid search: keyword (BM25 / `ts_rank`) and semantic (cosine over the tenant's
//! vectors), fused by reciprocal rank (RRF, k = 60): a passage ranked high by either
//! list rises, and neither list's raw scores need calibrating against the other's.
//!
//! HQ knowledge is searched in its own tenant scope and fused into the same ranking, so
//! row-level security needs no exception and a tenant's query never reads another
//! tenant's rows.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use utoipa::ToSchema;

use super::vectors::{self, TenantVectors, VectorCache};
use super::{HQ_TENANT, hq_tenant};
use crate::error::Result;
use crate::ids::{KnowledgeSourceId, TenantId};
use crate::llm::Provider;
use crate::store::{Store, TenantTx, cross_tenant};

/// Candidates each list contributes before fusion.
const CANDIDATES: i64 = 40;
/// The RRF constant from the original paper; it damps the weight of the very top ranks.
const RRF_K: f64 = 60.0;
/// Below this cosine similarity a semantic-only match is noise, not a passage.
pub const MIN_SIMILARITY: f32 = 0.35;
/// Most terms a keyword query keeps.
const MAX_TERMS: usize = 24;
/// Most passages one search returns.
pub const MAX_K: usize = 50;

/// The search service: the store, the model gateway for query embeddings and the
/// in-memory vectors.
pub struct Knowledge {
    pub store: Store,
    pub llm: Arc<dyn Provider>,
    /// None: keyword-only.
    pub embedding_model: Option<String>,
    pub vectors: VectorCache,
    /// How many passages contain a (tenant-tagged) term, at a knowledge generation: the
    /// keyword search drops the commonest terms of a query when they would make it read
    /// more than [`POSTINGS_BUDGET`] postings.
    pub term_docs: std::sync::Mutex<HashMap<String, (i64, i64)>>,
    /// Tenants with at most this many passages rank every term ([`RANK_WHOLE`]).
    pub rank_whole: i64,
}

/// About how many postings one keyword search may rank on SQLite. BM25 costs a lookup
/// per matching passage; the rarest terms are kept until their passages add up to this
/// (two terms always stay), and the commonest, which rank little and cost most, go.
/// The semantic half of the search still sees the whole question.
pub const POSTINGS_BUDGET: i64 = 2_000;

/// A tenant with at most this many passages has every query term ranked: there the
/// whole ranking is cheaper than counting terms first.
pub const RANK_WHOLE: i64 = 25_000;

/// One passage found.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Hit {
    pub chunk_id: String,
    #[schema(value_type = String)]
    pub source_id: KnowledgeSourceId,
    /// The source's title.
    pub title: String,
    /// The document inside the source (a Drive file's name), when it has several.
    pub document: String,
    /// "page 3", "Pricing › Enterprise", "rows 2–21".
    pub location: String,
    /// The passage around the first matching word (≤ 300 characters).
    pub snippet: String,
    /// The whole passage.
    pub text: String,
    /// BM25 (SQLite) or ts_rank (PostgreSQL), higher is better; None: no keyword match.
    pub keyword_score: Option<f64>,
    /// Cosine similarity; None: not among the semantic candidates.
    pub semantic_score: Option<f32>,
    /// The fused score (reciprocal rank).
    pub score: f64,
    /// HQ knowledge (the platform's), not the company's own.
    pub hq: bool,
}

/// A search's answer.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SearchOut {
    pub items: Vec<Hit>,
    /// `hybrid` or `keyword`.
    pub mode: &'static str,
    /// Why the search was keyword-only, when it was.
    pub note: Option<String>,
}

/// Query terms: lower-case runs of letters and digits, common English function words
/// dropped (they match everything and rank nothing), at most [`MAX_TERMS`].
pub fn terms(query: &str) -> Vec<String> {
    const STOP: &[&str] = &[
        "a", "an", "the", "and", "or", "of", "to", "in", "on", "for", "is", "are", "was", "were",
        "be", "it", "this", "that", "what", "which", "who", "how", "do", "does", "did", "we",
        "our", "us", "i", "me", "my", "you", "your", "with", "at", "by", "from", "as", "can",
        "should", "would", "could", "about", "there", "their", "they", "them", "have", "has",
        "had", "will", "if", "so", "not", "no", "any", "some",
    ];
    let mut out: Vec<String> = Vec::new();
    for t in query.split(|c: char| !c.is_alphanumeric()) {
        let t = t.to_lowercase();
        if t.is_empty() || STOP.contains(&t.as_str()) || out.contains(&t) {
            continue;
        }
        out.push(t);
        if out.len() == MAX_TERMS {
            break;
        }
    }
    out
}

impl Knowledge {
    /// Searches the tenant's knowledge and HQ knowledge for `query`; `sources` limits it
    /// to those of the tenant's sources (HQ is then left out).
    ///
    /// The keyword searches of both scopes and the query's embedding run at once; the
    /// vector scans follow the embedding. A scope with no chunks is skipped, and the
    /// model is not asked when there are no vectors to compare with.
    pub async fn search(
        &self,
        tenant: &TenantId,
        query: &str,
        k: usize,
        sources: &[KnowledgeSourceId],
    ) -> Result<SearchOut> {
        let k = k.clamp(1, MAX_K);
        let terms = terms(query);
        let model = self.embedding_model.as_deref();
        let mut scopes = vec![(tenant.clone(), false)];
        if sources.is_empty() && tenant.as_str() != HQ_TENANT {
            scopes.push((hq_tenant(), true));
        }
        let mut held = Vec::new();
        for (scope, hq) in scopes {
            let vs = self.vectors.get(&self.store, &scope, model).await?;
            if vs.chunks > 0 {
                held.push((scope, hq, vs));
            }
        }
        let any_vectors = held.iter().any(|(_, _, v)| !v.is_empty());
        let sources: Vec<String> = sources.iter().map(ToString::to_string).collect();
        let filter = serde_json::to_string(&sources).unwrap_or_else(|_| "[]".into());
        let keyword = futures_util::future::try_join_all(held.iter().map(|(scope, _, vs)| {
            self.keyword(scope, (vs.generation, vs.chunks), &terms, &sources, &filter)
        }));
        let embed = async {
            if any_vectors || model.is_none() {
                self.embed_query(query).await
            } else {
                (None, None)
            }
        };
        let (keyword, (query_vector, note)) = tokio::join!(keyword, embed);
        let keyword = keyword?;

        // (fused score, scope index, chunk id, keyword, semantic)
        let mut fused: Vec<Fused> = Vec::new();
        for (i, ((_, _, vs), keyword)) in held.iter().zip(keyword).enumerate() {
            let semantic = match &query_vector {
                Some(q) => semantic(vs.clone(), q.clone(), sources.clone()).await,
                None => Vec::new(),
            };
            let mut by_id: HashMap<String, (f64, Option<f64>, Option<f32>)> = HashMap::new();
            for (r, (id, s)) in keyword.into_iter().enumerate() {
                let e = by_id.entry(id).or_insert((0.0, None, None));
                e.0 += 1.0 / (RRF_K + r as f64 + 1.0);
                e.1 = Some(s);
            }
            for (r, (id, s)) in semantic.into_iter().enumerate() {
                let e = by_id.entry(id).or_insert((0.0, None, None));
                e.0 += 1.0 / (RRF_K + r as f64 + 1.0);
                e.2 = Some(s);
            }
            fused.extend(
                by_id
                    .into_iter()
                    .map(|(id, (s, kw, sem))| (s, i, id, kw, sem)),
            );
        }
        fused.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.2.cmp(&b.2)));
        fused.truncate(k);
        let rows = futures_util::future::try_join_all(held.iter().enumerate().map(
            |(i, (scope, _, _))| {
                let ids: Vec<&str> = fused
                    .iter()
                    .filter(|f| f.1 == i)
                    .map(|f| f.2.as_str())
                    .collect();
                async move {
                    if ids.is_empty() {
                        return Ok(HashMap::new());
                    }
                    let mut tx = self.store.tenant_read(scope).await?;
                    chunks(&mut tx, &ids).await
                }
            },
        ))
        .await?;
        let items = fused
            .iter()
            .filter_map(|f| {
                let r = rows[f.1].get(f.2.as_str())?;
                Some(Hit {
                    chunk_id: r.0.clone(),
                    source_id: KnowledgeSourceId::parse(&r.1).unwrap_or_default(),
                    title: r.2.clone(),
                    document: r.3.clone(),
                    location: r.4.clone(),
                    snippet: snippet(&r.5, &terms),
                    text: r.5.clone(),
                    keyword_score: f.3,
                    semantic_score: f.4,
                    score: f.0,
                    hq: held[f.1].1,
                })
            })
            .collect();
        Ok(SearchOut {
            items,
            mode: if query_vector.is_some() || (model.is_some() && note.is_none()) {
                "hybrid"
            } else {
                "keyword"
            },
            note,
        })
    }

    /// The query's unit vector, or why there is none.
    async fn embed_query(&self, query: &str) -> (Option<Vec<f32>>, Option<String>) {
        let Some(model) = &self.embedding_model else {
            return (
                None,
                Some("keyword search only: no embedding model is configured (set OCSUITE_EMBEDDING_MODEL)".into()),
            );
        };
        match self.llm.embed(model, &[query.to_owned()]).await {
            Ok(mut v) if !v.is_empty() => (Some(vectors::normalize(v.swap_remove(0))), None),
            Ok(_) => (
                None,
                Some("keyword search only: the embedding model returned nothing".into()),
            ),
            Err(e) => {
                tracing::warn!(error = %e, "query embedding failed; searching by keyword only");
                (
                    None,
                    Some(format!(
                        "keyword search only: the embedding model failed ({e})"
                    )),
                )
            }
        }
    }

    /// The scope's keyword candidates, best first.
    async fn keyword(
        &self,
        scope: &TenantId,
        (generation, chunks): (i64, i64),
        terms: &[String],
        sources: &[String],
        filter: &str,
    ) -> Result<Vec<(String, f64)>> {
        if terms.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.store.tenant_read(scope).await?;
        let terms = if tx.is_postgres() || terms.len() <= 2 || chunks <= self.rank_whole {
            terms.to_vec()
        } else {
            self.prune(&mut tx, generation, terms).await?
        };
        let q = cross_tenant::knowledge_keyword(&tx)
            .bind(cross_tenant::knowledge_match(&tx, &terms, sources))
            .bind(CANDIDATES)
            .bind(filter);
        Ok(tx.fetch_all(q).await?)
    }
}

impl Knowledge {
    /// `terms` without the commonest ones beyond [`POSTINGS_BUDGET`] (see there); the
    /// counts are cached per term until the tenant's knowledge changes.
    async fn prune(
        &self,
        tx: &mut TenantTx,
        generation: i64,
        terms: &[String],
    ) -> Result<Vec<String>> {
        let keys: Vec<String> = terms
            .iter()
            .map(|t| cross_tenant::knowledge_match(tx, std::slice::from_ref(t), &[]))
            .collect();
        let mut known: HashMap<String, i64> = {
            let m = self.term_docs.lock().unwrap_or_else(|e| e.into_inner());
            keys.iter()
                .filter_map(|k| {
                    m.get(k)
                        .filter(|(g, _)| *g == generation)
                        .map(|(_, n)| (k.clone(), *n))
                })
                .collect()
        };
        let missing: Vec<&String> = keys.iter().filter(|k| !known.contains_key(*k)).collect();
        if !missing.is_empty() {
            // Past the budget the exact count does not matter.
            let q = cross_tenant::knowledge_term_docs(tx)
                .bind(serde_json::to_string(&missing).unwrap_or_else(|_| "[]".into()))
                .bind(POSTINGS_BUDGET + 1);
            let rows: Vec<(String, i64)> = tx.fetch_all(q).await?;
            let mut m = self.term_docs.lock().unwrap_or_else(|e| e.into_inner());
            if m.len() > 100_000 {
                m.clear();
            }
            for (k, n) in rows {
                m.insert(k.clone(), (generation, n));
                known.insert(k, n);
            }
        }
        let counted: Vec<(i64, String)> = terms
            .iter()
            .zip(&keys)
            .map(|(t, k)| (known.get(k).copied().unwrap_or(0), t.clone()))
            .collect();
        Ok(keep_rarest(counted, POSTINGS_BUDGET, &terms[0]))
    }
}

/// The rarest terms (by passage count) until their passages add up to `budget`; two
/// always stay, terms in no passage go, and `fallback` when nothing is left.
pub fn keep_rarest(mut counted: Vec<(i64, String)>, budget: i64, fallback: &str) -> Vec<String> {
    counted.sort();
    let mut kept = Vec::new();
    let mut postings = 0;
    for (n, t) in counted {
        if n == 0 {
            continue;
        }
        if kept.len() >= 2 && postings + n > budget {
            break;
        }
        postings += n;
        kept.push(t);
    }
    if kept.is_empty() {
        kept.push(fallback.to_owned());
    }
    kept
}

/// Vectors scanned per search before the scan moves off the async workers.
const INLINE_SCAN: usize = 20_000;

/// The scope's semantic candidates above [`MIN_SIMILARITY`], best first.
async fn semantic(
    vs: Arc<TenantVectors>,
    query: Vec<f32>,
    sources: Vec<String>,
) -> Vec<(String, f32)> {
    let small = vs.len() <= INLINE_SCAN;
    let scan = move || {
        vs.top_k(&query, CANDIDATES as usize, &sources)
            .into_iter()
            .filter(|(_, s)| *s >= MIN_SIMILARITY)
            .map(|(id, s)| (id.to_owned(), s))
            .collect::<Vec<_>>()
    };
    if small {
        return scan();
    }
    tokio::task::spawn_blocking(scan).await.unwrap_or_default()
}

/// (fused score, scope index, chunk id, keyword score, semantic score)
type Fused = (f64, usize, String, Option<f64>, Option<f32>);

type ChunkRow = (String, String, String, String, String, String);

async fn chunks(tx: &mut TenantTx, ids: &[&str]) -> Result<HashMap<String, ChunkRow>> {
    let json = serde_json::to_string(ids).unwrap_or_else(|_| "[]".into());
    let q = cross_tenant::knowledge_chunks_by_id(tx).bind(json);
    let rows: Vec<ChunkRow> = tx.fetch_all(q).await?;
    Ok(rows.into_iter().map(|r| (r.0.clone(), r)).collect())
}

/// About 300 characters of `text` around the first query term it contains.
pub fn snippet(text: &str, terms: &[String]) -> String {
    const WIDTH: usize = 300;
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let chars: Vec<char> = flat.chars().collect();
    if chars.len() <= WIDTH {
        return flat;
    }
    let lower = flat.to_lowercase();
    let at = terms
        .iter()
        .filter_map(|t| lower.find(t.as_str()))
        .min()
        .map(|byte| lower[..byte].chars().count())
        .unwrap_or(0);
    let start = at.saturating_sub(WIDTH / 3).min(chars.len() - WIDTH);
    let mut s: String = chars[start..start + WIDTH].iter().collect();
    if start > 0 {
        s.insert(0, '…');
    }
    if start + WIDTH < chars.len() {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_commonest_terms_go_past_the_budget() {
        let c = |v: &[(i64, &str)]| {
            v.iter()
                .map(|(n, t)| (*n, (*t).to_owned()))
                .collect::<Vec<_>>()
        };
        // Rarest first until the budget; two always stay.
        assert_eq!(
            keep_rarest(
                c(&[(5000, "the"), (10, "zebra"), (300, "plan"), (1800, "price")]),
                2000,
                "x"
            ),
            ["zebra", "plan"]
        );
        assert_eq!(
            keep_rarest(c(&[(10, "a"), (300, "b"), (1500, "c")]), 2000, "x"),
            ["a", "b", "c"]
        );
        assert_eq!(
            keep_rarest(c(&[(9000, "a"), (8000, "b"), (7000, "c")]), 2000, "x"),
            ["c", "b"]
        );
        // Terms in no passage go; with nothing left the first term stays.
        assert_eq!(keep_rarest(c(&[(0, "a"), (40, "b")]), 2000, "x"), ["b"]);
        assert_eq!(keep_rarest(c(&[(0, "a")]), 2000, "a"), ["a"]);
    }

    use super::*;

    #[test]
    fn terms_drop_punctuation_stopwords_and_repeats() {
        assert_eq!(
            terms("What is the price of the Gold plan? gold!! \"x\" OR y*"),
            ["price", "gold", "plan", "x", "y"]
        );
        assert_eq!(
            terms("Preis für Müller-Lüdenscheid"),
            ["preis", "für", "müller", "lüdenscheid"]
        );
        assert!(terms("?? ** ::").is_empty());
    }

    #[test]
    fn snippets_centre_on_the_match() {
        let text = format!("{} zebra {}", "lorem ".repeat(100), "ipsum ".repeat(100));
        let s = snippet(&text, &["zebra".into()]);
        assert!(
            s.contains("zebra") && s.starts_with('…') && s.ends_with('…'),
            "{s}"
        );
        assert_eq!(snippet("short text", &[]), "short text");
    }
}
