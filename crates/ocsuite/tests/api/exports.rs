//! Exports and offline verification: an export is built as a job (also while the
//! company is suspended), downloads as a signed zip that `ocsuite receipts verify`
//! accepts, and every kind of tampering is caught and named: an edited entry, a removed
//! or reordered one, a truncated log, a checkpoint signed by another key, a changed file
//! or manifest.

use std::io::{Cursor, Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::dual;
use crate::helpers::{TestApp, User, temp_dir};
use crate::tasks::owner;

/// Runs `ocsuite receipts verify` on `bytes`; returns (passed, output).
pub fn verify(bytes: &[u8], name: &str, keys: &[String]) -> (bool, String) {
    let path: PathBuf = temp_dir().join(name);
    std::fs::write(&path, bytes).unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ocsuite"));
    cmd.arg("receipts").arg("verify").arg(&path);
    for k in keys {
        cmd.arg("--key").arg(k);
    }
    let out = cmd.output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

pub async fn keys(app: &TestApp) -> Vec<String> {
    let (_, k) = app.anon().get("/.well-known/ocsuite-log-keys").await;
    k["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["verifier_key"].as_str().unwrap().to_owned())
        .collect()
}

/// Asks for an export and waits for it to be ready; returns its row.
pub async fn export(app: &TestApp, u: &User, t: &str) -> Value {
    let (s, v) = app
        .as_(u)
        .tenant(t)
        .post("/api/v1/exports", json!({}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["status"], "queued");
    let id = v["id"].as_str().unwrap().to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (s, v) = app
            .as_(u)
            .tenant(t)
            .get(&format!("/api/v1/exports/{id}"))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        if v["status"] == "ready" {
            return v;
        }
        assert_ne!(v["status"], "failed", "{v}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "export never finished: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn download(app: &TestApp, u: &User, t: &str, id: &str) -> (StatusCode, Vec<u8>) {
    let res = app
        .http
        .get(app.url(&format!("/api/v1/exports/{id}/download")))
        .bearer_auth(&u.token)
        .header("x-tenant-id", t)
        .send()
        .await
        .unwrap();
    let s = res.status();
    (s, res.bytes().await.unwrap().to_vec())
}

pub fn unzip(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut z = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
    (0..z.len())
        .map(|i| {
            let mut f = z.by_index(i).unwrap();
            let mut b = Vec::new();
            f.read_to_end(&mut b).unwrap();
            (f.name().unwrap().into_owned(), b)
        })
        .collect()
}

fn rezip(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut z = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, b) in files {
        z.start_file(name, zip::write::SimpleFileOptions::default())
            .unwrap();
        z.write_all(b).unwrap();
    }
    z.finish().unwrap().into_inner()
}

dual!(
    export_round_trip,
    export_while_suspended,
    exports_isolated_and_expiring
);

async fn export_round_trip(app: TestApp) {
    let (u, t) = owner(&app, "exp@a.example").await;
    app.api_key(&u, &t, "member").await;
    let done = export(&app, &u, &t).await;
    let id = done["id"].as_str().unwrap();
    assert!(done["size_bytes"].as_i64().unwrap() > 0 && done["expires_at"].is_string());
    let (s, zip) = download(&app, &u, &t, id).await;
    assert_eq!(s, StatusCode::OK);
    let files = unzip(&zip);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    for want in [
        "manifest.json",
        "manifest.sig",
        "receipts.json",
        "data/tenants.jsonl",
        "data/audit_log.jsonl",
        "data/api_keys.jsonl",
    ] {
        assert!(names.contains(&want), "{want} in {names:?}");
    }
    assert!(
        !names.iter().any(|n| n.contains("tenant_secrets")),
        "{names:?}"
    );
    let file =
        |n: &str| String::from_utf8(files.iter().find(|(x, _)| x == n).unwrap().1.clone()).unwrap();
    let key_row: Value =
        serde_json::from_str(file("data/api_keys.jsonl").lines().next().unwrap()).unwrap();
    assert_eq!(key_row["name"], "test key");
    assert!(key_row.get("key_hash").is_none(), "{key_row}");
    assert!(file("data/audit_log.jsonl").contains("api_key.create"));
    assert!(file("data/tenants.jsonl").contains(&t));

    let trusted = keys(&app).await;
    let (ok, out) = verify(&zip, "export.zip", &trusted);
    assert!(ok, "{out}");
    assert!(
        out.contains("audit entries match their receipts") && out.ends_with("OK\n"),
        "{out}"
    );
    assert!(
        out.contains("policy decisions match their receipts"),
        "{out}"
    );
    assert!(file("data/policy_decisions.jsonl").contains("api_key.create"));
    let (ok, out) = verify(&zip, "export-untrusted.zip", &[]);
    assert!(ok && out.contains("warning: no trusted key"), "{out}");

    // A changed data file, or a changed manifest, is caught.
    let mut edited = files.clone();
    for (n, b) in edited.iter_mut() {
        if n == "data/audit_log.jsonl" {
            *b = String::from_utf8(b.clone())
                .unwrap()
                .replace("api_key.create", "api_key.revoke")
                .into_bytes();
        }
    }
    let (ok, out) = verify(&rezip(&edited), "edited.zip", &trusted);
    assert!(
        !ok && out.contains("data/audit_log.jsonl was changed"),
        "{out}"
    );
    let mut edited = files.clone();
    for (n, b) in edited.iter_mut() {
        if n == "manifest.json" {
            *b = String::from_utf8(b.clone())
                .unwrap()
                .replacen("\"files\"", "\"files\" ", 1)
                .into_bytes();
        }
    }
    let (ok, out) = verify(&rezip(&edited), "manifest.zip", &trusted);
    assert!(!ok && out.contains("manifest.json was changed"), "{out}");
    let mut extra = files.clone();
    extra.push(("data/smuggled.jsonl".into(), b"{}\n".to_vec()));
    let (ok, out) = verify(&rezip(&extra), "extra.zip", &trusted);
    assert!(!ok && out.contains("smuggled"), "{out}");

    // The bundle alone: each tamper case fails and names what.
    for _ in 0..3 {
        app.api_key(&u, &t, "member").await;
    }
    let (_, bundle) = app.as_(&u).tenant(&t).get("/api/v1/receipts/export").await;
    let n = bundle["entries"].as_array().unwrap().len();
    assert!(n >= 5, "{n}");
    let check = |b: &Value, name: &str| verify(b.to_string().as_bytes(), name, &trusted);
    let (ok, out) = check(&bundle, "bundle.json");
    assert!(ok, "{out}");

    let mut b = bundle.clone();
    b["entries"][2]["fields"]["details"]["value"] = json!("{\"name\":\"another\"}");
    let id2 = b["entries"][2]["id"].as_str().unwrap().to_owned();
    let (ok, out) = check(&b, "edited.json");
    assert!(!ok && out.contains(&format!("entry 2 ({id2})")), "{out}");

    let mut b = bundle.clone();
    b["entries"].as_array_mut().unwrap().remove(1);
    let (ok, out) = check(&b, "removed.json");
    assert!(!ok && out.contains("entries 1–1 are missing"), "{out}");

    let mut b = bundle.clone();
    b["entries"].as_array_mut().unwrap().swap(1, 3);
    let (ok, out) = check(&b, "reordered.json");
    assert!(!ok && out.contains("reordered"), "{out}");
    let mut b = bundle.clone();
    let moved = b["entries"][3]["id"].clone();
    b["entries"][3]["id"] = b["entries"][1]["id"].clone();
    b["entries"][1]["id"] = moved;
    let (ok, out) = check(&b, "swapped-ids.json");
    assert!(!ok && out.contains("entry 1 ("), "{out}");

    let mut b = bundle.clone();
    b["entries"].as_array_mut().unwrap().truncate(n - 2);
    let (ok, out) = check(&b, "truncated.json");
    assert!(
        !ok && out.contains(&format!("entries {}–{} are missing", n - 2, n - 1)),
        "{out}"
    );

    let mut b = bundle.clone();
    let last = b["checkpoints"].as_array().unwrap().len() - 1;
    let note = b["checkpoints"][last].as_str().unwrap().to_owned();
    let body = &note[..note.find("\n\n").unwrap() + 1];
    let other = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let name = note
        .lines()
        .last()
        .unwrap()
        .trim_start_matches("\u{2014} ")
        .rsplit_once(' ')
        .unwrap()
        .0
        .to_owned();
    b["checkpoints"][last] = json!(ocsuite::receipts::note::sign(body, &name, &other));
    let (ok, out) = check(&b, "resigned.json");
    assert!(
        !ok && out.contains("no signature by a trusted key"),
        "{out}"
    );
    // …and naming the forger's key inside the file does not help when keys are given.
    b["keys"] = json!([ocsuite::receipts::note::verifier_key(
        &name,
        &other.verifying_key().to_bytes()
    )]);
    let (ok, out) = check(&b, "resigned-with-key.json");
    assert!(
        !ok && out.contains("no signature by a trusted key"),
        "{out}"
    );
}

async fn export_while_suspended(app: TestApp) {
    let (u, t) = owner(&app, "susp-exp@a.example").await;
    let root = app.super_admin("root-exp@ops.example").await;
    let (s, v) = app
        .as_(&root)
        .post(
            &format!("/api/v1/admin/tenants/{t}/suspend"),
            json!({"reason": "Unpaid invoices"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Writes are refused, taking the data out is not.
    let (s, _) = app
        .as_(&u)
        .tenant(&t)
        .post("/api/v1/api-keys", json!({"name": "k", "role": "member"}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let done = export(&app, &u, &t).await;
    let (s, zip) = download(&app, &u, &t, done["id"].as_str().unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    let (ok, out) = verify(&zip, "suspended.zip", &keys(&app).await);
    assert!(ok, "{out}");
    // One export at a time.
    let (s, _) = app
        .as_(&u)
        .tenant(&t)
        .post("/api/v1/exports", json!({}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (s, v) = app
        .as_(&u)
        .tenant(&t)
        .post("/api/v1/exports", json!({}))
        .await;
    assert!(
        s == StatusCode::CONFLICT || s == StatusCode::ACCEPTED,
        "{v}"
    );
}

async fn exports_isolated_and_expiring(app: TestApp) {
    let (ann, a) = owner(&app, "exp-a@a.example").await;
    let (bob, b) = owner(&app, "exp-b@b.example").await;
    let done = export(&app, &ann, &a).await;
    let id = done["id"].as_str().unwrap();
    for path in [
        format!("/api/v1/exports/{id}"),
        format!("/api/v1/exports/{id}/download"),
    ] {
        let (s, _) = app.as_(&bob).tenant(&b).get(&path).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}");
        let (s, _) = app.as_(&bob).tenant(&a).get(&path).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}");
    }
    let (_, list) = app.as_(&bob).tenant(&b).get("/api/v1/exports").await;
    assert_eq!(list, json!([]));
    let (s, _) = app
        .as_(&ann)
        .tenant(&a)
        .get("/api/v1/exports/exp_nope")
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let member = app.signup("exp-member@a.example").await;
    app.add_member(&ann, &a, &member, "member").await;
    let (s, _) = app
        .as_(&member)
        .tenant(&a)
        .post("/api/v1/exports", json!({}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // Past its window the download is gone, and housekeeping drops the bytes.
    let tid = ocsuite::ids::TenantId::parse(&a).unwrap();
    let mut tx = app.state.store.tenant(&tid).await.unwrap();
    tx.execute(
        ocsuite::store::scoped("UPDATE exports SET expires_at = $2 WHERE tenant_id = $1")
            .bind(chrono::Utc::now() - chrono::Duration::minutes(1)),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let (s, body) = download(&app, &ann, &a, id).await;
    assert_eq!(s, StatusCode::GONE, "{}", String::from_utf8_lossy(&body));
    let mut tx = app.state.store.platform().await.unwrap();
    assert_eq!(ocsuite::exports::expire(&mut tx).await.unwrap(), 1);
    tx.commit().await.unwrap();
    let (_, v) = app
        .as_(&ann)
        .tenant(&a)
        .get(&format!("/api/v1/exports/{id}"))
        .await;
    assert_eq!(v["status"], "expired");
}

/// Every company table is either exported or left out with a reason, and nothing else
/// is named.
#[test]
fn every_company_table_is_exported_or_left_out_with_a_reason() {
    let mut tables =
        crate::sql_scope::tenant_tables(std::path::Path::new(env!("CARGO_MANIFEST_DIR")));
    tables.remove("tenants");
    tables.remove("_knowledge_fts");
    let mut named: std::collections::BTreeSet<String> = ocsuite::exports::archive::EXPORTED
        .iter()
        .map(|(t, _)| (*t).to_owned())
        .collect();
    for (t, why) in ocsuite::exports::LEFT_OUT {
        assert!(why.len() > 10, "{t} needs a reason");
        assert!(
            named.insert((*t).to_owned()),
            "{t} is both exported and left out"
        );
    }
    assert_eq!(named, tables);
}
