//! A receipt bundle: a company's log as a file anyone can check offline, and the
//! checker (`ocsuite receipts verify`). The format is in `docs/receipts.md`.

use std::collections::{BTreeMap, HashMap};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use super::merkle::{self, Hash};
use super::note::{self, VerifierKey};
use super::{Revealed, commitment, leaf_data, log};
use crate::error::{AppError, Result};
use crate::store::{TenantTx, scoped};

pub const FORMAT: &str = "ocsuite-receipts/v1";

/// Checkpoints a bundle carries (the newest, and the ones before it for consistency).
const CHECKPOINTS: i64 = 20;

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Bundle {
    pub format: String,
    pub tenant: String,
    pub origin: String,
    /// Verifier keys of the platform, as published at `/.well-known/ocsuite-log-keys`.
    pub keys: Vec<String>,
    /// Every entry up to the newest checkpoint is in `entries`.
    pub complete: bool,
    /// Signed notes, oldest first; the last one is what `entries` prove against.
    pub checkpoints: Vec<String>,
    pub consistency: Vec<ConsistencyStep>,
    pub entries: Vec<BundleEntry>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConsistencyStep {
    pub from: u64,
    pub to: u64,
    pub proof: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BundleEntry {
    pub index: u64,
    pub id: String,
    /// Fields shown: value and salt.
    pub fields: BTreeMap<String, Revealed>,
    /// Fields withheld (or purged): their commitments, base64.
    pub hidden: BTreeMap<String, String>,
    /// Inclusion proof against the newest checkpoint, base64 hashes.
    pub inclusion: Vec<String>,
}

#[derive(sqlx::FromRow)]
struct EntryRow {
    id: String,
    seq: i64,
    fields: Option<String>,
    commitments: String,
}

/// Which fields an export shows.
pub enum Reveal<'a> {
    All,
    Only(&'a [String]),
}

/// The company's whole log up to its newest checkpoint (the caller integrated first).
pub async fn build(tx: &mut TenantTx, keys: Vec<String>, reveal: Reveal<'_>) -> Result<Bundle> {
    let checkpoints = log::recent_checkpoints(tx, CHECKPOINTS).await?;
    let Some(latest) = checkpoints.last().cloned() else {
        return Ok(Bundle {
            format: FORMAT.into(),
            tenant: tx.tenant_id().to_string(),
            origin: String::new(),
            keys,
            complete: true,
            checkpoints: Vec::new(),
            consistency: Vec::new(),
            entries: Vec::new(),
        });
    };
    let mut consistency = Vec::new();
    for pair in checkpoints.windows(2) {
        consistency.push(ConsistencyStep {
            from: pair[0].size,
            to: pair[1].size,
            proof: log::consistency(tx, pair[0].size, pair[1].size).await?,
        });
    }
    let size = i64::try_from(latest.size).map_err(AppError::internal)?;
    let all: Vec<(i64, i64, String)> = tx
        .fetch_all(scoped(
            "SELECT level, idx, hash FROM log_nodes WHERE tenant_id = $1",
        ))
        .await?;
    let mut nodes: HashMap<merkle::NodeKey, Hash> = HashMap::with_capacity(all.len());
    for (l, i, h) in all {
        let h: Hash = hex::decode(&h)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| AppError::internal("a stored hash is not 32 bytes of hex"))?;
        nodes.insert((l as u32, i as u64), h);
    }
    let rows: Vec<EntryRow> = tx
        .fetch_all(
            scoped("SELECT id, seq, fields, commitments FROM receipts WHERE tenant_id = $1 AND seq < $2 ORDER BY seq")
                .bind(size),
        )
        .await?;
    let mut entries = Vec::with_capacity(rows.len());
    for r in rows {
        let mut fields: BTreeMap<String, Revealed> = match &r.fields {
            Some(f) => serde_json::from_str(f).map_err(AppError::internal)?,
            None => BTreeMap::new(),
        };
        let commitments: BTreeMap<String, String> =
            serde_json::from_str(&r.commitments).map_err(AppError::internal)?;
        if let Reveal::Only(names) = reveal {
            fields.retain(|k, _| names.iter().any(|n| n == k));
        }
        let hidden = commitments
            .into_iter()
            .filter(|(k, _)| !fields.contains_key(k))
            .collect();
        let index = r.seq as u64;
        let proof = merkle::inclusion_proof(&mut nodes, index, latest.size);
        entries.push(BundleEntry {
            index,
            id: r.id,
            fields,
            hidden,
            inclusion: proof.iter().map(|h| B64.encode(h)).collect(),
        });
    }
    Ok(Bundle {
        format: FORMAT.into(),
        tenant: tx.tenant_id().to_string(),
        origin: latest.origin.clone(),
        keys,
        complete: true,
        checkpoints: checkpoints.into_iter().map(|c| c.note).collect(),
        consistency,
        entries,
    })
}

/// What a successful check found.
#[derive(Debug, Serialize)]
pub struct Report {
    pub origin: String,
    pub size: u64,
    pub checkpoints: usize,
    pub entries: usize,
    pub fields_shown: usize,
    pub fields_hidden: usize,
    pub signed_by: Vec<String>,
    pub warnings: Vec<String>,
}

fn b64_hash(s: &str) -> Option<Hash> {
    B64.decode(s).ok().and_then(|b| b.try_into().ok())
}

fn proof(list: &[String]) -> Option<Vec<Hash>> {
    list.iter().map(|s| b64_hash(s)).collect()
}

/// Checks a bundle: every checkpoint's signature by a trusted key (`trusted`, or the
/// keys in the file with a warning when none are given), consistency between the
/// checkpoints, and each entry's fields against its commitments and its inclusion in
/// the newest checkpoint. Errors name the checkpoint or entry that failed.
pub fn verify(b: &Bundle, trusted: &[VerifierKey]) -> std::result::Result<Report, Vec<String>> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    if b.format != FORMAT {
        return Err(vec![format!("format {:?} is not {FORMAT}", b.format)]);
    }
    let plain = |s: &str| !s.is_empty() && !s.chars().any(|c| c.is_whitespace() || c.is_control());
    if !plain(&b.tenant) || (!b.origin.is_empty() && !b.origin.ends_with(&format!("/{}", b.tenant)))
    {
        return Err(vec![format!(
            "the log's origin {:?} does not name its company {:?}",
            b.origin, b.tenant
        )]);
    }
    let keys: Vec<VerifierKey> = if trusted.is_empty() {
        warnings.push(
            "no trusted key given: the keys inside the file were used; pass --key with the keys from /.well-known/ocsuite-log-keys"
                .into(),
        );
        let mut ks = Vec::new();
        for k in &b.keys {
            match VerifierKey::parse(k) {
                Ok(k) => ks.push(k),
                Err(e) => errors.push(e),
            }
        }
        ks
    } else {
        trusted.to_vec()
    };
    let mut cps: Vec<note::Checkpoint> = Vec::new();
    let mut signed_by = Vec::new();
    for (i, n) in b.checkpoints.iter().enumerate() {
        match note::open(n, &keys).and_then(|(body, by)| Ok((note::parse_checkpoint(body)?, by))) {
            Ok((cp, by)) => {
                if cp.origin != b.origin {
                    errors.push(format!(
                        "checkpoint {} (size {}): origin {:?} is not the log's {:?}",
                        i + 1,
                        cp.size,
                        cp.origin,
                        b.origin
                    ));
                }
                if let Some(prev) = cps.last()
                    && cp.size < prev.size
                {
                    errors.push(format!(
                        "checkpoint {} (size {}) is smaller than the one before it (size {}): the log was truncated",
                        i + 1,
                        cp.size,
                        prev.size
                    ));
                }
                if !signed_by.contains(&by) {
                    signed_by.push(by);
                }
                cps.push(cp);
            }
            Err(e) => errors.push(format!("checkpoint {}: {e}", i + 1)),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    for pair in cps.windows(2) {
        let (old, new) = (&pair[0], &pair[1]);
        if old.size == new.size {
            if old.root != new.root {
                errors.push(format!(
                    "two checkpoints of size {} have different roots: the log forked",
                    old.size
                ));
            }
            continue;
        }
        let step = b
            .consistency
            .iter()
            .find(|s| s.from == old.size && s.to == new.size);
        let ok = step.and_then(|s| proof(&s.proof)).is_some_and(|p| {
            merkle::verify_consistency(old.size, new.size, &old.root, &new.root, &p)
        });
        if !ok {
            errors.push(format!(
                "the checkpoint of size {} is not consistent with the one of size {}: the log was rewritten between them",
                new.size, old.size
            ));
        }
    }
    let Some(latest) = cps.last() else {
        if b.entries.is_empty() {
            return Ok(Report {
                origin: b.origin.clone(),
                size: 0,
                checkpoints: 0,
                entries: 0,
                fields_shown: 0,
                fields_hidden: 0,
                signed_by,
                warnings,
            });
        }
        return Err(vec!["the file has entries but no checkpoint".into()]);
    };
    let (mut shown, mut hidden) = (0, 0);
    let mut expected = 0u64;
    for (pos, e) in b.entries.iter().enumerate() {
        let name = format!("entry {} ({})", e.index, e.id);
        if b.complete && e.index != expected {
            if e.index > expected {
                errors.push(format!(
                    "entries {expected}–{} are missing before {name}",
                    e.index - 1
                ));
            } else {
                errors.push(format!(
                    "{name} is at position {pos}: entries were reordered or repeated"
                ));
            }
        }
        expected = e.index + 1;
        let mut commitments: BTreeMap<String, Hash> = BTreeMap::new();
        let mut bad = false;
        let field_name =
            |k: &str| !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_');
        if !plain(&e.id) {
            errors.push(format!("{name}: the receipt id is malformed"));
            continue;
        }
        if let Some(k) = e
            .fields
            .keys()
            .chain(e.hidden.keys())
            .find(|k| !field_name(k))
        {
            errors.push(format!("{name}: field name {k:?} is malformed"));
            continue;
        }
        for (k, r) in &e.fields {
            let salt = match B64.decode(&r.salt) {
                Ok(s) if s.len() == super::SALT_BYTES => s,
                _ => {
                    errors.push(format!(
                        "{name}: field {k} has a salt that is not 16 bytes of base64"
                    ));
                    bad = true;
                    continue;
                }
            };
            commitments.insert(k.clone(), commitment(k, &salt, &r.value));
            shown += 1;
        }
        for (k, c) in &e.hidden {
            let Some(c) = b64_hash(c) else {
                errors.push(format!(
                    "{name}: the commitment of {k} is not a base64 SHA-256 hash"
                ));
                bad = true;
                continue;
            };
            if commitments.insert(k.clone(), c).is_some() {
                errors.push(format!("{name}: field {k} is both shown and hidden"));
                bad = true;
            }
            hidden += 1;
        }
        if bad {
            continue;
        }
        let leaf = merkle::leaf_hash(&leaf_data(&b.tenant, &e.id, &commitments));
        let ok = proof(&e.inclusion).is_some_and(|p| {
            merkle::verify_inclusion(e.index, latest.size, &leaf, &p, &latest.root)
        });
        if !ok {
            errors.push(format!(
                "{name} does not match the signed log of size {}: a field was changed or the entry was moved",
                latest.size
            ));
        }
    }
    if b.complete && expected < latest.size {
        errors.push(format!(
            "entries {expected}–{} are missing: the checkpoint covers {} entries, the file ends at {expected}",
            latest.size - 1,
            latest.size
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Report {
        origin: b.origin.clone(),
        size: latest.size,
        checkpoints: cps.len(),
        entries: b.entries.len(),
        fields_shown: shown,
        fields_hidden: hidden,
        signed_by,
        warnings,
    })
}
