//! `ocsuite receipts verify FILE`: checks a receipt bundle or a whole export archive
//! offline, and says exactly what failed.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::bundle::{self, Bundle};
use super::note::{self, VerifierKey};

/// The format line of an export's `manifest.json` and of the note that signs it.
pub const MANIFEST_FORMAT: &str = "ocsuite-export/v1";

/// The body the platform key signs for an export: the format, the company and the
/// manifest's SHA-256.
pub fn manifest_note_body(tenant: &str, manifest_sha256: &str) -> String {
    format!("{MANIFEST_FORMAT}\n{tenant}\n{manifest_sha256}\n")
}

/// What a check found: lines for a person, and whether it passed.
pub struct Outcome {
    pub ok: bool,
    pub lines: Vec<String>,
}

/// Checks `path`: a `.zip` export (manifest signature, every file's hash, the receipts
/// and the audit log against them) or a receipt bundle (`receipts.json`). `keys` are
/// verifier keys the caller trusts; with none, the file's own keys are used and the
/// report says so.
pub fn verify_file(path: &Path, keys: &[String]) -> Outcome {
    let mut lines = Vec::new();
    let trusted: Vec<VerifierKey> = match keys.iter().map(|k| VerifierKey::parse(k)).collect() {
        Ok(k) => k,
        Err(e) => return fail(vec![format!("--key: {e}")]),
    };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => return fail(vec![format!("cannot read {}: {e}", path.display())]),
    };
    let is_zip = bytes.starts_with(b"PK");
    let (bundle_bytes, audit) = if is_zip {
        match check_archive(&bytes, &trusted, &mut lines) {
            Ok(x) => x,
            Err(errors) => return fail(errors),
        }
    } else {
        (bytes, None)
    };
    let b: Bundle = match serde_json::from_slice(&bundle_bytes) {
        Ok(b) => b,
        Err(e) => return fail(vec![format!("the receipts are not a receipt bundle: {e}")]),
    };
    match bundle::verify(&b, &trusted) {
        Ok(r) => {
            lines.extend(r.warnings.iter().map(|w| format!("warning: {w}")));
            lines.push(format!(
                "log {}: {} entries, {} checkpoints, signed by {}",
                r.origin,
                r.size,
                r.checkpoints,
                r.signed_by.join(", ")
            ));
            lines.push(format!(
                "{} receipts verified ({} fields shown, {} hidden)",
                r.entries, r.fields_shown, r.fields_hidden
            ));
        }
        Err(errors) => return fail(errors),
    }
    if let Some(audit) = audit {
        match check_audit(&b, &audit) {
            Ok(n) => lines.push(format!("{n} audit entries match their receipts")),
            Err(errors) => return fail(errors),
        }
        match check_decisions(&b, &audit) {
            Ok(n) => lines.push(format!("{n} policy decisions match their receipts")),
            Err(errors) => return fail(errors),
        }
    }
    lines.push("OK".into());
    Outcome { ok: true, lines }
}

fn fail(errors: Vec<String>) -> Outcome {
    let mut lines: Vec<String> = errors.into_iter().map(|e| format!("FAILED: {e}")).collect();
    lines.push("the file does not verify".into());
    Outcome { ok: false, lines }
}

type Files = HashMap<String, Vec<u8>>;

fn read_zip(bytes: &[u8]) -> Result<Files, String> {
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| format!("the archive cannot be opened: {e}"))?;
    let mut out = HashMap::new();
    for i in 0..z.len() {
        let mut f = z
            .by_index(i)
            .map_err(|e| format!("archive entry {i}: {e}"))?;
        let name = f
            .name()
            .map_err(|e| format!("archive entry {i} has no readable name: {e}"))?
            .into_owned();
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)
            .map_err(|e| format!("archive entry {name}: {e}"))?;
        out.insert(name, buf);
    }
    Ok(out)
}

/// The manifest's signature and every file's hash; returns the receipts and the audit
/// log's text.
fn check_archive(
    bytes: &[u8],
    trusted: &[VerifierKey],
    lines: &mut Vec<String>,
) -> Result<(Vec<u8>, Option<Audit>), Vec<String>> {
    let files = read_zip(bytes).map_err(|e| vec![e])?;
    let get = |name: &str| {
        files
            .get(name)
            .ok_or_else(|| vec![format!("the archive has no {name}")])
    };
    let manifest_bytes = get("manifest.json")?;
    let sig = String::from_utf8_lossy(get("manifest.sig")?).into_owned();
    let receipts = get("receipts.json")?;
    let keys: Vec<VerifierKey> = if trusted.is_empty() {
        let b: Bundle = serde_json::from_slice(receipts)
            .map_err(|e| vec![format!("receipts.json is not a receipt bundle: {e}")])?;
        b.keys
            .iter()
            .filter_map(|k| VerifierKey::parse(k).ok())
            .collect()
    } else {
        trusted.to_vec()
    };
    let (body, by) = note::open(&sig, &keys).map_err(|e| vec![format!("manifest.sig: {e}")])?;
    let manifest: serde_json::Value = serde_json::from_slice(manifest_bytes)
        .map_err(|e| vec![format!("manifest.json is not JSON: {e}")])?;
    let tenant = manifest["tenant"].as_str().unwrap_or_default();
    let want = manifest_note_body(tenant, &hex::encode(Sha256::digest(manifest_bytes)));
    if body != want {
        return Err(vec![
            "manifest.json was changed after it was signed (its hash is not the signed one)".into(),
        ]);
    }
    let mut errors = Vec::new();
    let listed = manifest["files"].as_array().cloned().unwrap_or_default();
    for f in &listed {
        let path = f["path"].as_str().unwrap_or_default();
        match files.get(path) {
            None => errors.push(format!("{path} is listed in the manifest but missing")),
            Some(b)
                if hex::encode(Sha256::digest(b)) != f["sha256"].as_str().unwrap_or_default() =>
            {
                errors.push(format!(
                    "{path} was changed: its SHA-256 is not the manifest's"
                ));
            }
            Some(_) => {}
        }
    }
    for name in files.keys() {
        let known = name == "manifest.json"
            || name == "manifest.sig"
            || listed.iter().any(|f| f["path"].as_str() == Some(name));
        if !known {
            errors.push(format!(
                "{name} is in the archive but not in the signed manifest"
            ));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let bundle_tenant = serde_json::from_slice::<Bundle>(receipts)
        .map(|b| b.tenant)
        .unwrap_or_default();
    if bundle_tenant != tenant {
        return Err(vec![format!(
            "the manifest is for {tenant} but the receipts are of {bundle_tenant}"
        )]);
    }
    lines.push(format!(
        "manifest of {tenant} signed by {by}; {} files match their hashes",
        listed.len()
    ));
    let audit = files.get("data/audit_log.jsonl").map(|b| Audit {
        text: String::from_utf8_lossy(b).into_owned(),
        decisions: files
            .get("data/policy_decisions.jsonl")
            .map(|d| String::from_utf8_lossy(d).into_owned())
            .unwrap_or_default(),
        tenant: tenant.to_owned(),
        unsealed: manifest["unsealed_audit_ids"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
    });
    Ok((receipts.clone(), audit))
}

/// An archive's audit log, with what its signed manifest says about it.
struct Audit {
    text: String,
    /// `data/policy_decisions.jsonl`.
    decisions: String,
    tenant: String,
    /// Entries written while the export read (not yet in the log).
    unsealed: Vec<String>,
}

/// Each audit row against the receipt that sealed it (by `audit_id`): same action,
/// actor, target, details, request and time; no row without its receipt (except those
/// the signed manifest lists as written during the export) and no receipt without its
/// row.
fn check_audit(b: &Bundle, audit: &Audit) -> Result<usize, Vec<String>> {
    let mut errors = Vec::new();
    if audit.tenant != b.tenant {
        errors.push(format!(
            "the manifest is for {} but the receipts are of {}",
            audit.tenant, b.tenant
        ));
    }
    let mut by_audit = HashMap::new();
    for e in &b.entries {
        // Policy decisions (`pdc_…`) are sealed too; they are not audit entries.
        if let Some(r) = e.fields.get("audit_id")
            && let Ok(id) = serde_json::from_str::<String>(&r.value)
            && id.starts_with("aud_")
        {
            by_audit.insert(id, e);
        }
    }
    let value = |e: &bundle::BundleEntry, field: &str| {
        e.fields
            .get(field)
            .and_then(|r| serde_json::from_str::<serde_json::Value>(&r.value).ok())
    };
    let mut seen = std::collections::HashSet::new();
    let mut n = 0;
    for line in audit.text.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(row) = serde_json::from_str::<serde_json::Value>(line) else {
            errors.push("data/audit_log.jsonl has a line that is not JSON".into());
            continue;
        };
        let id = row["id"].as_str().unwrap_or_default().to_owned();
        let Some(e) = by_audit.get(&id) else {
            if !audit.unsealed.contains(&id) {
                errors.push(format!(
                    "audit entry {id} has no receipt: it was added outside the application"
                ));
            }
            continue;
        };
        seen.insert(id.clone());
        for field in [
            "action",
            "actor_type",
            "actor_id",
            "target_type",
            "target_id",
            "request_id",
        ] {
            // Only an erasure drops an actor or a target from a receipt, and the entry
            // then says `erased`; nothing else may be missing.
            if !e.fields.contains_key(field) {
                if !(matches!(field, "actor_id" | "target_id") && row[field] == "erased") {
                    errors.push(format!(
                        "audit entry {id}: receipt {} (entry {}) hides its {field}, which only an erasure may (the entry then says \"erased\")",
                        e.id, e.index
                    ));
                }
                continue;
            }
            if value(e, field).as_ref() != Some(&row[field]) {
                errors.push(format!(
                    "audit entry {id}: its {field} differs from receipt {} (entry {})",
                    e.id, e.index
                ));
            }
        }
        let details: Option<serde_json::Value> = row["details"]
            .as_str()
            .and_then(|d| serde_json::from_str(d).ok());
        if !e.fields.contains_key("details") {
            // Dropped by retention or an erasure: the entry's details say which.
            if details.as_ref().is_none_or(|d| d.get("redacted").is_none()) {
                errors.push(format!(
                    "audit entry {id}: receipt {} (entry {}) hides its details, but the entry's are not marked redacted",
                    e.id, e.index
                ));
            }
        } else if details != value(e, "details") {
            errors.push(format!(
                "audit entry {id}: its details differ from receipt {} (entry {})",
                e.id, e.index
            ));
        }
        let time = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).and_then(parse_time);
        if time(Some(&row["created_at"])).is_none()
            || time(Some(&row["created_at"])) != time(value(e, "time").as_ref())
        {
            errors.push(format!(
                "audit entry {id}: its time differs from receipt {} (entry {})",
                e.id, e.index
            ));
        }
        n += 1;
    }
    for (id, e) in &by_audit {
        if !seen.contains(id) {
            errors.push(format!(
                "receipt {} (entry {}) seals audit entry {id}, which is missing from data/audit_log.jsonl",
                e.id, e.index
            ));
        }
    }
    if errors.is_empty() {
        Ok(n)
    } else {
        Err(errors)
    }
}

/// A time as either database writes it (RFC 3339, or SQLite's `YYYY-MM-DD HH:MM:SS.f+00:00`).
fn parse_time(t: &str) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    chrono::DateTime::parse_from_rfc3339(t)
        .or_else(|_| chrono::DateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f%:z"))
        .ok()
}

/// Each policy decision against its receipt (`audit_id` = the decision's `pdc_…` id):
/// the action, the outcome, the principal and the time; no decision without its
/// receipt (except those written during the export) and no decision receipt without
/// its row.
fn check_decisions(b: &Bundle, audit: &Audit) -> Result<usize, Vec<String>> {
    let mut sealed = HashMap::new();
    for e in &b.entries {
        if let Some(r) = e.fields.get("audit_id")
            && let Ok(id) = serde_json::from_str::<String>(&r.value)
            && id.starts_with("pdc_")
        {
            sealed.insert(id, e);
        }
    }
    let value = |e: &bundle::BundleEntry, field: &str| {
        e.fields
            .get(field)
            .and_then(|r| serde_json::from_str::<serde_json::Value>(&r.value).ok())
    };
    let mut errors = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for line in audit.decisions.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(row) = serde_json::from_str::<serde_json::Value>(line) else {
            errors.push("data/policy_decisions.jsonl has a line that is not JSON".into());
            continue;
        };
        let id = row["id"].as_str().unwrap_or_default().to_owned();
        let Some(e) = sealed.get(&id) else {
            if !audit.unsealed.contains(&id) {
                errors.push(format!(
                    "policy decision {id} has no receipt: it was added outside the application"
                ));
            }
            continue;
        };
        seen.insert(id.clone());
        let allowed = row["allowed"]
            .as_bool()
            .or_else(|| row["allowed"].as_i64().map(|n| n != 0));
        let outcome = allowed.map(|a| if a { "policy.allow" } else { "policy.deny" });
        // An erasure may drop the principal (the decision then says `erased`); every
        // other field must be shown and agree.
        let principal = if e.fields.contains_key("actor_id") {
            value(e, "actor_id").as_ref() == Some(&row["principal_id"])
        } else {
            row["principal_id"] == "erased"
        };
        let same = value(e, "action").as_ref().and_then(|v| v.as_str()) == outcome
            && value(e, "target_id").as_ref() == Some(&row["action"])
            && value(e, "actor_type").as_ref() == Some(&row["principal_type"])
            && principal
            && row["created_at"].as_str().and_then(parse_time)
                == value(e, "time")
                    .as_ref()
                    .and_then(|v| v.as_str())
                    .and_then(parse_time);
        if !same {
            errors.push(format!(
                "policy decision {id} differs from receipt {} (entry {})",
                e.id, e.index
            ));
        }
    }
    for (id, e) in &sealed {
        if !seen.contains(id) {
            errors.push(format!(
                "receipt {} (entry {}) seals policy decision {id}, which is missing from data/policy_decisions.jsonl",
                e.id, e.index
            ));
        }
    }
    if errors.is_empty() {
        Ok(seen.len())
    } else {
        Err(errors)
    }
}
