//! Signed receipts: every privileged action leaves a receipt whose inclusion and
//! consistency proofs verify with an implementation written here from RFC 6962 / 9162
//! (recursive, from the definitions of PATH and SUBPROOF; it calls none of the server's
//! tree code), checkpoints verify as C2SP signed notes against the published Ed25519
//! keys, concurrent actions never fork the log, companies never see each other's
//! receipts, and bad input gets clear 4xx answers.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::dual;
use crate::helpers::{TestApp, User};
use crate::tasks::owner;

pub type H = [u8; 32];

fn sha(parts: &[&[u8]]) -> H {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn node(l: &H, r: &H) -> H {
    sha(&[&[1], l, r])
}

fn k_of(n: u64) -> u64 {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

fn b64h(s: &Value) -> H {
    B64.decode(s.as_str().unwrap()).unwrap().try_into().unwrap()
}

pub fn hashes(v: &Value) -> Vec<H> {
    v.as_array().unwrap().iter().map(b64h).collect()
}

/// The root an inclusion path leads to, climbing PATH(m, D[n]) from its definition.
pub fn climb(m: u64, n: u64, leaf: H, path: &[H]) -> Option<H> {
    if n == 1 {
        return path.is_empty().then_some(leaf);
    }
    let (last, rest) = path.split_last()?;
    let k = k_of(n);
    if m < k {
        Some(node(&climb(m, k, leaf, rest)?, last))
    } else {
        Some(node(last, &climb(m - k, n - k, leaf, rest)?))
    }
}

/// (old root, new root) a consistency proof yields, from SUBPROOF(m, D[n], b).
pub fn subproof(m: u64, n: u64, b: bool, proof: &[H], old_root: H) -> Option<(H, H)> {
    if m == n {
        return if b {
            proof.is_empty().then_some((old_root, old_root))
        } else {
            (proof.len() == 1).then(|| (proof[0], proof[0]))
        };
    }
    let (last, rest) = proof.split_last()?;
    let k = k_of(n);
    if m <= k {
        let (o, nw) = subproof(m, k, b, rest, old_root)?;
        Some((o, node(&nw, last)))
    } else {
        let (o, nw) = subproof(m - k, n - k, false, rest, old_root)?;
        Some((node(last, &o), node(last, &nw)))
    }
}

/// The leaf hash of a receipt, recomputed from its shown fields (and hidden
/// commitments) by the documented format.
pub fn leaf_of(tenant: &str, id: &str, fields: &Value, hidden: &Value) -> H {
    let mut commitments: std::collections::BTreeMap<String, H> = Default::default();
    for (name, f) in fields.as_object().unwrap() {
        let salt = B64.decode(f["salt"].as_str().unwrap()).unwrap();
        let value = f["value"].as_str().unwrap();
        commitments.insert(
            name.clone(),
            sha(&[
                b"ocsuite-field/v1\0",
                name.as_bytes(),
                &[0],
                &salt,
                value.as_bytes(),
            ]),
        );
    }
    if let Some(h) = hidden.as_object() {
        for (name, c) in h {
            commitments.insert(name.clone(), b64h(c));
        }
    }
    let mut data = format!("ocsuite-receipt/v1\ntenant {tenant}\nid {id}\n");
    for (name, c) in &commitments {
        data.push_str(&format!("field {name} {}\n", B64.encode(c)));
    }
    sha(&[&[0], data.as_bytes()])
}

/// Checks a C2SP signed checkpoint against the published keys; returns (size, root).
pub fn open_checkpoint(note: &str, keys: &Value) -> (u64, H) {
    let (body, sigs) = note.split_once("\n\n").expect("signature block");
    let line = sigs.lines().next().unwrap();
    let rest = line.strip_prefix("\u{2014} ").expect("em dash");
    let (name, sig) = rest.rsplit_once(' ').unwrap();
    let blob = B64.decode(sig).unwrap();
    let key = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|k| {
            let vk = k["verifier_key"].as_str().unwrap();
            let mut p = vk.splitn(3, '+');
            let (n, hash, key) = (p.next()?, p.next()?, p.next()?);
            let raw = B64.decode(key).ok()?;
            let kh = sha(&[n.as_bytes(), b"\n", &raw]);
            (n == name && hex::encode(&kh[..4]) == hash && blob[..4] == kh[..4]).then_some(raw)
        })
        .expect("signed by a published key");
    assert_eq!(key[0], 1, "Ed25519");
    let vk = VerifyingKey::from_bytes(&key[1..].try_into().unwrap()).unwrap();
    let body = format!("{body}\n");
    vk.verify(body.as_bytes(), &Signature::from_slice(&blob[4..]).unwrap())
        .expect("checkpoint signature");
    let lines: Vec<&str> = body.lines().collect();
    (
        lines[1].parse().unwrap(),
        B64.decode(lines[2]).unwrap().try_into().unwrap(),
    )
}

/// A few privileged actions: API keys, an invitation, a role cap.
async fn act(app: &TestApp, u: &User, t: &str, n: usize) {
    for i in 0..n {
        let (s, v) = app
            .as_(u)
            .tenant(t)
            .post(
                "/api/v1/api-keys",
                json!({"name": format!("key {i}"), "role": "member"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
}

dual!(
    receipts_prove_actions,
    concurrent_actions_never_fork,
    a_backlog_is_integrated_in_chunks,
    receipts_are_isolated,
    receipts_bad_input
);

async fn receipts_prove_actions(app: TestApp) {
    let (u, t) = owner(&app, "rc@a.example").await;
    act(&app, &u, &t, 3).await;
    let keys = app.anon().get("/.well-known/ocsuite-log-keys").await;
    assert_eq!(keys.0, StatusCode::OK, "{}", keys.1);

    let (s, list) = app.as_(&u).tenant(&t).get("/api/v1/receipts").await;
    assert_eq!(s, StatusCode::OK, "{list}");
    let actions: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions.iter().filter(|a| **a == "api_key.create").count(),
        3,
        "{list}"
    );
    assert!(actions.contains(&"tenant.create"), "{list}");
    let (s, only) = app
        .as_(&u)
        .tenant(&t)
        .get("/api/v1/receipts?action=api_key.create&limit=2")
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(only.as_array().unwrap().len(), 2);

    // Each receipt: its fields give its leaf, its path leads to the signed root.
    for r in list.as_array().unwrap() {
        let id = r["id"].as_str().unwrap();
        let (s, one) = app
            .as_(&u)
            .tenant(&t)
            .get(&format!("/api/v1/receipts/{id}"))
            .await;
        assert_eq!(s, StatusCode::OK, "{one}");
        let leaf = leaf_of(&t, id, &one["fields"], &Value::Null);
        assert_eq!(B64.encode(leaf), one["leaf_hash"], "leaf of {id}");
        let (size, root) = open_checkpoint(one["checkpoint"]["note"].as_str().unwrap(), &keys.1);
        let index = one["index"].as_u64().unwrap();
        assert_eq!(
            climb(index, size, leaf, &hashes(&one["inclusion"])),
            Some(root),
            "{one}"
        );
        // A changed field no longer leads there.
        let mut forged = one["fields"].clone();
        forged["action"]["value"] = json!("\"api_key.revoke\"");
        let bad = leaf_of(&t, id, &forged, &Value::Null);
        assert_ne!(
            climb(index, size, bad, &hashes(&one["inclusion"])),
            Some(root)
        );
    }
    let api_key_receipt = list
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"] == "api_key.create")
        .unwrap();
    let (_, one) = app
        .as_(&u)
        .tenant(&t)
        .get(&format!(
            "/api/v1/receipts/{}",
            api_key_receipt["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(
        one["fields"]["actor_id"]["value"],
        json!(format!("\"{}\"", u.id))
    );

    // Consistency: the log after more actions extends the one before.
    let (_, before) = app
        .as_(&u)
        .tenant(&t)
        .get("/api/v1/receipts/checkpoint")
        .await;
    let (old_size, old_root) = open_checkpoint(before["note"].as_str().unwrap(), &keys.1);
    act(&app, &u, &t, 5).await;
    let (_, after) = app
        .as_(&u)
        .tenant(&t)
        .get("/api/v1/receipts/checkpoint")
        .await;
    let (new_size, new_root) = open_checkpoint(after["note"].as_str().unwrap(), &keys.1);
    // Each action: the policy's decision, then the action itself.
    assert_eq!(new_size, old_size + 10, "{after}");
    for from in 1..=old_size {
        let (s, c) = app
            .as_(&u)
            .tenant(&t)
            .get(&format!(
                "/api/v1/receipts/consistency?from={from}&to={new_size}"
            ))
            .await;
        assert_eq!(s, StatusCode::OK, "{c}");
        let from_root = b64h(&c["from_root"]);
        let got = subproof(from, new_size, true, &hashes(&c["proof"]), from_root);
        assert_eq!(got, Some((from_root, new_root)), "{from} → {new_size}: {c}");
        if from == old_size {
            assert_eq!(from_root, old_root);
            assert_eq!(c["from_checkpoint"], before["note"]);
        }
    }
}

async fn concurrent_actions_never_fork(app: TestApp) {
    let (u, t) = owner(&app, "fork@a.example").await;
    let mut handles = Vec::new();
    for i in 0..16 {
        let (app_base, token, tt) = (app.base.clone(), u.token.clone(), t.clone());
        let http = app.http.clone();
        handles.push(tokio::spawn(async move {
            // Half API keys (the free plan allows ten), half renames.
            let req = if i % 2 == 0 {
                http.post(format!("{app_base}/api/v1/api-keys"))
                    .json(&json!({"name": format!("k{i}"), "role": "member"}))
            } else {
                http.patch(format!("{app_base}/api/v1/tenant"))
                    .json(&json!({"name": format!("Co {i}")}))
            };
            req.bearer_auth(token)
                .header("x-tenant-id", tt)
                .send()
                .await
                .unwrap()
                .status()
        }));
        // Integrators race with the writers.
        let (app_base, token, tt) = (app.base.clone(), u.token.clone(), t.clone());
        let http = app.http.clone();
        handles.push(tokio::spawn(async move {
            http.get(format!("{app_base}/api/v1/receipts/checkpoint"))
                .bearer_auth(token)
                .header("x-tenant-id", tt)
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    for h in handles {
        let s = h.await.unwrap();
        assert!(s.is_success(), "{s}");
    }
    let keys = app.anon().get("/.well-known/ocsuite-log-keys").await.1;
    let (s, bundle) = app.as_(&u).tenant(&t).get("/api/v1/receipts/export").await;
    assert_eq!(s, StatusCode::OK, "{bundle}");
    let entries = bundle["entries"].as_array().unwrap();
    let cps: Vec<(u64, H)> = bundle["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| open_checkpoint(n.as_str().unwrap(), &keys))
        .collect();
    let (size, root) = *cps.last().unwrap();
    assert_eq!(entries.len() as u64, size);
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e["index"], json!(i), "positions are 0..n without gaps");
        let leaf = leaf_of(&t, e["id"].as_str().unwrap(), &e["fields"], &e["hidden"]);
        assert_eq!(
            climb(i as u64, size, leaf, &hashes(&e["inclusion"])),
            Some(root)
        );
    }
    // Every checkpoint along the way is a prefix of the next: one history, no fork.
    for step in bundle["consistency"].as_array().unwrap() {
        let (from, to) = (step["from"].as_u64().unwrap(), step["to"].as_u64().unwrap());
        let old = cps.iter().find(|c| c.0 == from).unwrap().1;
        let new = cps.iter().find(|c| c.0 == to).unwrap().1;
        assert_eq!(
            subproof(from, to, true, &hashes(&step["proof"]), old),
            Some((old, new))
        );
    }
    let count = |action: &str| {
        entries
            .iter()
            .filter(|e| e["fields"]["action"]["value"] == format!("\"{action}\""))
            .count()
    };
    assert_eq!((count("api_key.create"), count("tenant.update")), (8, 8));
}

async fn receipts_are_isolated(app: TestApp) {
    let (ann, a) = owner(&app, "iso-a@a.example").await;
    let (bob, b) = owner(&app, "iso-b@b.example").await;
    act(&app, &ann, &a, 2).await;
    let (_, list) = app.as_(&ann).tenant(&a).get("/api/v1/receipts").await;
    let id = list[0]["id"].as_str().unwrap().to_owned();
    let (s, _) = app
        .as_(&bob)
        .tenant(&b)
        .get(&format!("/api/v1/receipts/{id}"))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = app
        .as_(&bob)
        .tenant(&a)
        .get(&format!("/api/v1/receipts/{id}"))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "a stranger to the company");
    let (_, theirs) = app.as_(&bob).tenant(&b).get("/api/v1/receipts").await;
    assert!(
        theirs
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["id"] != id.as_str())
    );
    let (_, bundle) = app
        .as_(&bob)
        .tenant(&b)
        .get("/api/v1/receipts/export")
        .await;
    assert!(
        !bundle.to_string().contains(&a),
        "B's bundle names nothing of A"
    );
    let (_, ca) = app
        .as_(&ann)
        .tenant(&a)
        .get("/api/v1/receipts/checkpoint")
        .await;
    let (_, cb) = app
        .as_(&bob)
        .tenant(&b)
        .get("/api/v1/receipts/checkpoint")
        .await;
    assert_ne!(ca["origin"], cb["origin"], "one log per company");

    // PostgreSQL: row-level security hides A's log from raw SQL set to B.
    if app.config.migration_database_url.is_some() {
        use sqlx::{Connection, PgConnection};
        let mut conn = PgConnection::connect(&app.config.database_url)
            .await
            .unwrap();
        let mut tx = conn.begin().await.unwrap();
        sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
            .bind(&b)
            .execute(&mut *tx)
            .await
            .unwrap();
        for table in [
            "receipts",
            "log_nodes",
            "log_heads",
            "log_checkpoints",
            "exports",
        ] {
            let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT count(*) FROM {table} WHERE tenant_id = $1"
            )))
            .bind(&a)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
            assert_eq!(n, 0, "{table} shows A's rows to B");
        }
        let err = sqlx::query("UPDATE receipts SET fields = NULL WHERE tenant_id = $1")
            .bind(&a)
            .execute(&mut *tx)
            .await
            .unwrap();
        assert_eq!(err.rows_affected(), 0);
        tx.rollback().await.unwrap();
    }
}

async fn receipts_bad_input(app: TestApp) {
    let (u, t) = owner(&app, "bad@a.example").await;
    let member = app.signup("member@a.example").await;
    app.add_member(&u, &t, &member, "member").await;
    let me = app.as_(&u).tenant(&t);
    for (path, status) in [
        ("/api/v1/receipts/rct_nope", StatusCode::NOT_FOUND),
        (
            "/api/v1/receipts/rct_00000000000000000000000000000000",
            StatusCode::NOT_FOUND,
        ),
        ("/api/v1/receipts?limit=0", StatusCode::UNPROCESSABLE_ENTITY),
        ("/api/v1/receipts?limit=x", StatusCode::BAD_REQUEST),
        (
            "/api/v1/receipts?before=aud_1",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/api/v1/receipts/consistency?from=0&to=1",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/api/v1/receipts/consistency?from=3&to=2",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/api/v1/receipts/consistency?from=1&to=99999",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/api/v1/receipts/consistency?from=1",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/receipts/export?reveal=action,password",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let (s, v) = me.get(path).await;
        assert_eq!(s, status, "{path}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{path}: {v}"
        );
    }
    let (_, v) = me
        .get("/api/v1/receipts/export?reveal=action,password")
        .await;
    assert!(
        v["error"]["message"].as_str().unwrap().contains("password"),
        "{v}"
    );
    // Members are not auditors.
    let (s, _) = app.as_(&member).tenant(&t).get("/api/v1/receipts").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Selective disclosure: only the asked-for fields are shown, the rest committed.
    let (s, b) = me.get("/api/v1/receipts/export?reveal=action,time").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let e = &b["entries"][0];
    let shown: Vec<&String> = e["fields"].as_object().unwrap().keys().collect();
    assert_eq!(shown, ["action", "time"]);
    assert!(e["hidden"]["details"].is_string());
}

/// A backlog larger than one SQLite integration transaction (256 receipts) goes in
/// several, as one history every entry proves against; and a head that went past the
/// newest checkpoint (a run stopped between two transactions) is signed by the next run.
async fn a_backlog_is_integrated_in_chunks(app: TestApp) {
    let (u, t) = owner(&app, "backlog@a.example").await;
    let tenant = ocsuite::ids::TenantId::parse(&t).unwrap();
    let at = chrono::Utc::now();
    let audit_ids: Vec<String> = (0..700).map(|i| format!("aud_backlog_{i}")).collect();
    let entries: Vec<_> = audit_ids
        .iter()
        .map(|a| ocsuite::receipts::Entry {
            audit_id: a,
            actor: ("user", &u.id),
            action: "test.backlog",
            target: ("test", "backlog"),
            details: "{}",
            request_id: None,
            at,
        })
        .collect();
    let mut tx = app.state.store.tenant(&tenant).await.unwrap();
    ocsuite::receipts::append_many(&mut tx, at, &entries)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let me = app.as_(&u).tenant(&t);
    let keys = app.anon().get("/.well-known/ocsuite-log-keys").await.1;
    let (s, cp) = me.get("/api/v1/receipts/checkpoint").await;
    assert_eq!(s, StatusCode::OK, "{cp}");
    let (s, bundle) = me.get("/api/v1/receipts/export").await;
    assert_eq!(s, StatusCode::OK, "{bundle}");
    let all = bundle["entries"].as_array().unwrap();
    assert!(all.len() >= 700, "{}", all.len());
    let (size, root) = open_checkpoint(cp["note"].as_str().unwrap(), &keys);
    assert_eq!(
        size,
        all.len() as u64,
        "the newest checkpoint covers the backlog"
    );
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e["index"], json!(i), "positions are 0..n without gaps");
        let leaf = leaf_of(&t, e["id"].as_str().unwrap(), &e["fields"], &e["hidden"]);
        assert_eq!(
            climb(i as u64, size, leaf, &hashes(&e["inclusion"])),
            Some(root)
        );
    }

    // The newest checkpoint is lost, as when a run stops after integrating but before
    // signing: the next run signs the head again, with the same root.
    let mut tx = app.state.store.tenant(&tenant).await.unwrap();
    tx.execute(ocsuite::store::scoped(
        "DELETE FROM log_checkpoints WHERE tenant_id = $1 AND size = (SELECT MAX(size) FROM log_checkpoints WHERE tenant_id = $1)",
    ))
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let (s, again) = me.get("/api/v1/receipts/checkpoint").await;
    assert_eq!(s, StatusCode::OK, "{again}");
    assert_eq!(
        open_checkpoint(again["note"].as_str().unwrap(), &keys),
        (size, root)
    );
}
