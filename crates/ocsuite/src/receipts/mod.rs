//! Signed receipts: each company's append-only transparency log.
//!
//! Every audit entry is sealed into a receipt in the same transaction as the change it
//! records (`audit::insert` calls [`append`]), so a change without its receipt cannot
//! commit. A receipt commits to each of its fields separately: the field's value with a
//! random salt is hashed (`commitment`), and the RFC 6962 leaf is the list of field
//! names and commitments. An exported receipt can so reveal some fields (value and
//! salt) and show only the commitment of the others, and still verify; a purge drops
//! values and salts and keeps the commitments, so proofs verify after erasure.
//!
//! Sequencing is separate from submission (as in Certificate Transparency and Trillian):
//! a receipt is written with no position, and the integrator ([`log::integrate`]) gives
//! positions in one locked transaction per company, stores the tree's new nodes and
//! signs a checkpoint. One integrator at a time per company means the log never forks,
//! and a privileged request pays one insert, not a tree update.
//!
//! The format is documented for third-party verifiers in `docs/receipts.md`.

pub mod bundle;
pub mod keys;
pub mod log;
pub mod merkle;
pub mod note;
pub mod routes;
pub mod verify;

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{AppError, Result};
use crate::ids::{ReceiptId, TenantId};
use crate::store::{TenantTx, scoped};

/// The first line of every leaf: the format's name and version.
pub const LEAF_FORMAT: &str = "ocsuite-receipt/v1";

/// Bytes of random salt per field.
pub const SALT_BYTES: usize = 16;

/// One field as the receipt holds it: the value (JSON text, hashed byte for byte) and
/// its salt.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Revealed {
    pub value: String,
    /// Base64 of 16 random bytes.
    pub salt: String,
}

/// `SHA-256("ocsuite-field/v1" ‖ 0 ‖ name ‖ 0 ‖ salt ‖ value)`.
pub fn commitment(name: &str, salt: &[u8], value: &str) -> merkle::Hash {
    let mut h = Sha256::new();
    h.update(b"ocsuite-field/v1\0");
    h.update(name.as_bytes());
    h.update([0u8]);
    h.update(salt);
    h.update(value.as_bytes());
    h.finalize().into()
}

/// The leaf's bytes: the format line, the company, the receipt id, then one line per
/// field in name order: `field <name> <base64 commitment>`.
pub fn leaf_data(tenant: &str, id: &str, commitments: &BTreeMap<String, merkle::Hash>) -> Vec<u8> {
    let mut out = format!("{LEAF_FORMAT}\ntenant {tenant}\nid {id}\n");
    for (name, c) in commitments {
        out.push_str("field ");
        out.push_str(name);
        out.push(' ');
        out.push_str(&B64.encode(c));
        out.push('\n');
    }
    out.into_bytes()
}

/// A receipt ready to store.
pub struct Sealed {
    pub fields: BTreeMap<String, Revealed>,
    pub commitments: BTreeMap<String, merkle::Hash>,
    pub leaf_hash: merkle::Hash,
}

/// Salts and commits to each field, and hashes the leaf.
pub fn seal(tenant: &TenantId, id: &ReceiptId, fields: &[(&str, String)]) -> Sealed {
    let mut rng = rand::rng();
    let mut revealed = BTreeMap::new();
    let mut commitments = BTreeMap::new();
    for (name, value) in fields {
        let mut salt = [0u8; SALT_BYTES];
        rng.fill_bytes(&mut salt);
        commitments.insert((*name).to_owned(), commitment(name, &salt, value));
        revealed.insert(
            (*name).to_owned(),
            Revealed {
                value: value.clone(),
                salt: B64.encode(salt),
            },
        );
    }
    let leaf = merkle::leaf_hash(&leaf_data(tenant.as_str(), id.as_str(), &commitments));
    Sealed {
        fields: revealed,
        commitments,
        leaf_hash: leaf,
    }
}

/// What an audit entry hands to its receipt.
pub struct Entry<'a> {
    pub audit_id: &'a str,
    pub actor: (&'a str, &'a str),
    pub action: &'a str,
    pub target: (&'a str, &'a str),
    /// JSON text.
    pub details: &'a str,
    pub request_id: Option<&'a str>,
    pub at: DateTime<Utc>,
}

/// Seals `entry` into a receipt of the transaction's company, written with the
/// transaction (deferred on SQLite like the audit row it accompanies).
pub async fn append(tx: &mut TenantTx, entry: &Entry<'_>) -> Result<ReceiptId> {
    let (id, row) = prepare(tx.tenant_id(), entry)?;
    tx.defer(
        scoped(
            "INSERT INTO receipts (tenant_id, id, seq, action, actor_type, actor_id, created_at, fields, commitments, leaf_hash) \
             VALUES ($1, $2, NULL, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&id)
        .bind(entry.action)
        .bind(entry.actor.0)
        .bind(entry.actor.1)
        .bind(entry.at)
        .bind(row.fields)
        .bind(row.commitments)
        .bind(row.leaf_hash),
    )
    .await?;
    Ok(id)
}

/// [`append`] for entries that share one time (a queue round's outcomes), in one
/// statement.
pub async fn append_many(
    tx: &mut TenantTx,
    at: DateTime<Utc>,
    entries: &[Entry<'_>],
) -> Result<Vec<ReceiptId>> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let mut ids = Vec::with_capacity(entries.len());
    let mut rows = Vec::with_capacity(entries.len());
    for entry in entries {
        let (id, row) = prepare(tx.tenant_id(), &Entry { at, ..*entry })?;
        rows.push(serde_json::json!({
            "id": id, "action": entry.action, "actor_type": entry.actor.0,
            "actor_id": entry.actor.1, "fields": row.fields,
            "commitments": row.commitments, "leaf_hash": row.leaf_hash,
        }));
        ids.push(id);
    }
    let q = crate::store::cross_tenant::insert_receipts(tx)
        .bind(serde_json::Value::from(rows).to_string())
        .bind(at);
    tx.defer(q).await?;
    Ok(ids)
}

/// A sealed receipt's stored columns, as text.
struct Row {
    fields: String,
    commitments: String,
    leaf_hash: String,
}

/// Seals `entry` under a new receipt id.
fn prepare(tenant: &TenantId, entry: &Entry<'_>) -> Result<(ReceiptId, Row)> {
    let id = ReceiptId::new();
    let text = |s: &str| serde_json::Value::from(s).to_string();
    let fields = [
        ("audit_id", text(entry.audit_id)),
        ("actor_type", text(entry.actor.0)),
        ("actor_id", text(entry.actor.1)),
        ("action", text(entry.action)),
        ("target_type", text(entry.target.0)),
        ("target_id", text(entry.target.1)),
        ("details", entry.details.to_owned()),
        (
            "request_id",
            entry.request_id.map_or_else(|| "null".to_owned(), text),
        ),
        ("time", text(&entry.at.to_rfc3339())),
    ];
    let sealed = seal(tenant, &id, &fields);
    let commitments: BTreeMap<&String, String> = sealed
        .commitments
        .iter()
        .map(|(k, v)| (k, B64.encode(v)))
        .collect();
    let row = Row {
        fields: serde_json::to_string(&sealed.fields).map_err(AppError::internal)?,
        commitments: serde_json::to_string(&commitments).map_err(AppError::internal)?,
        leaf_hash: hex::encode(sealed.leaf_hash),
    };
    Ok((id, row))
}

/// Keeps only `keep` of a receipt's shown fields: the others lose their value and salt
/// and keep their commitment, so the leaf (and every proof over the log) is unchanged and
/// an export shows them as hidden. Retention and erasures call it in the transaction
/// that changes the audit entry the receipt seals.
pub async fn redact(
    tx: &mut TenantTx,
    id: &str,
    keep: &BTreeMap<String, Revealed>,
    at: DateTime<Utc>,
) -> Result<()> {
    tx.execute(
        scoped("UPDATE receipts SET fields = $3, purged_at = $4 WHERE tenant_id = $1 AND id = $2")
            .bind(id)
            .bind(serde_json::to_string(keep).map_err(AppError::internal)?)
            .bind(at),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revealed_field_recomputes_its_commitment() {
        let t = TenantId::new();
        let id = ReceiptId::new();
        let s = seal(&t, &id, &[("action", "\"task.approve\"".into())]);
        let r = &s.fields["action"];
        let salt = B64.decode(&r.salt).expect("salt");
        assert_eq!(
            commitment("action", &salt, &r.value),
            s.commitments["action"]
        );
        assert_eq!(
            merkle::leaf_hash(&leaf_data(t.as_str(), id.as_str(), &s.commitments)),
            s.leaf_hash
        );
        assert_ne!(
            commitment("action", &salt, "\"task.reject\""),
            s.commitments["action"]
        );
    }
}
