//! Erasures: one person removed from a company under dual control. One admin asks, a
//! different one approves, a job removes what was the person's and strips them from the
//! records that stay; the log still proves every receipt, the export still verifies,
//! and nothing names the person afterwards. Isolation and bad input too.

use std::time::Duration;

use chrono::Duration as Days;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::dual;
use crate::exports::{download, export, keys, unzip, verify};
use crate::helpers::{TestApp, User};
use crate::tasks::{owner, start, wait_status};

dual!(
    erasure_needs_two_admins_and_leaves_proofs,
    erasures_isolated_and_bad_input,
    a_receipt_may_hide_only_what_an_erasure_drops
);

/// Someone with database access rewrites an audit entry and drops the changed field
/// from its receipt, as if erased: the export's check names the entry.
async fn a_receipt_may_hide_only_what_an_erasure_drops(app: TestApp) {
    let (u, t) = owner(&app, "tamper@era.example").await;
    app.api_key(&u, &t, "member").await;
    let tenant = ocsuite::ids::TenantId::parse(&t).unwrap();
    let mut tx = app.state.store.tenant(&tenant).await.unwrap();
    let rows: Vec<(String, String)> = tx
        .fetch_all(ocsuite::store::scoped(
            "SELECT id, fields FROM receipts WHERE tenant_id = $1 AND action = 'api_key.create'",
        ))
        .await
        .unwrap();
    let (rid, fields) = rows.into_iter().next().unwrap();
    let mut f: Value = serde_json::from_str(&fields).unwrap();
    let audit_id: String = serde_json::from_str(f["audit_id"]["value"].as_str().unwrap()).unwrap();
    f.as_object_mut().unwrap().remove("action");
    tx.execute(
        ocsuite::store::scoped("UPDATE receipts SET fields = $3 WHERE tenant_id = $1 AND id = $2")
            .bind(rid.as_str())
            .bind(f.to_string()),
    )
    .await
    .unwrap();
    tx.execute(
        ocsuite::store::scoped(
            "UPDATE audit_log SET action = 'api_key.revoke' WHERE tenant_id = $1 AND id = $2",
        )
        .bind(audit_id.as_str()),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let ready = export(&app, &u, &t).await;
    let (_, zip) = download(&app, &u, &t, ready["id"].as_str().unwrap()).await;
    let (ok, out) = verify(&zip, "hidden.zip", &keys(&app).await);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("audit entry {audit_id}")) && out.contains("hides its action"),
        "{out}"
    );
}

async fn wait_done(app: &TestApp, u: &User, t: &str, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (s, v) = app
            .as_(u)
            .tenant(t)
            .get(&format!("/api/v1/erasures/{id}"))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        if v["status"] == "done" {
            return v;
        }
        assert!(
            v["status"] == "approved" && tokio::time::Instant::now() < deadline,
            "erasure never finished: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn erasure_needs_two_admins_and_leaves_proofs(app: TestApp) {
    let (own, t) = owner(&app, "boss@era.example").await;
    let ann = app.signup("ann@era.example").await;
    let ben = app.signup("ben@era.example").await;
    let mia = app.signup("Mia.Leaving@era.example").await;
    app.add_member(&own, &t, &ann, "admin").await;
    app.add_member(&own, &t, &ben, "admin").await;
    app.add_member(&own, &t, &mia, "member").await;
    // Mia acts: a task of hers, a conversation of hers.
    let task = start(&app, &mia, &t, "diagnostics.echo", json!({"say": "hi"})).await;
    wait_status(&app, &mia, &t, &task, "succeeded").await;
    let (s, _) = crate::chat::chat(&app, &mia, &t, "ceo", json!({"message": "Hello"})).await;
    assert_eq!(s, StatusCode::OK);

    // Only admins ask; owners cannot be erased; the address is checked.
    let body = json!({"email": "mia.leaving@ERA.example", "reason": "asked to be forgotten"});
    let (s, v) = app
        .as_(&mia)
        .tenant(&t)
        .post("/api/v1/erasures", body.clone())
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, v) = app
        .as_(&ann)
        .tenant(&t)
        .post(
            "/api/v1/erasures",
            json!({"email": own.email, "reason": "test"}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("owner"),
        "{v}"
    );

    let (s, asked) = app
        .as_(&ann)
        .tenant(&t)
        .post("/api/v1/erasures", body.clone())
        .await;
    assert_eq!(s, StatusCode::CREATED, "{asked}");
    assert_eq!(asked["status"], "requested");
    assert_eq!(asked["email_hint"], "m…@era.example");
    assert_eq!(asked["has_account"], true);
    assert!(!asked.to_string().contains("mia.leaving@"), "{asked}");
    let id = asked["id"].as_str().unwrap().to_owned();
    let (s, v) = app
        .as_(&ben)
        .tenant(&t)
        .post("/api/v1/erasures", body.clone())
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "one open request per person: {v}");

    // The one who asked cannot approve; neither can a member.
    let approve = format!("/api/v1/erasures/{id}/approve");
    let (s, v) = app.as_(&ann).tenant(&t).post(&approve, json!({})).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"]["code"], "same_admin", "{v}");
    let (s, _) = app.as_(&mia).tenant(&t).post(&approve, json!({})).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    let (s, v) = app.as_(&ben).tenant(&t).post(&approve, json!({})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["approved_by"], ben.id.as_str());
    let (s, v) = app.as_(&own).tenant(&t).post(&approve, json!({})).await;
    assert_eq!(s, StatusCode::CONFLICT, "approved once: {v}");
    let done = wait_done(&app, &ann, &t, &id).await;
    let removed = &done["manifest"];
    assert_eq!(removed["memberships"], 1, "{done}");
    assert!(
        removed["conversations"].as_u64().is_some_and(|n| n >= 1),
        "{done}"
    );
    assert!(removed["tasks.created_by"].as_u64().unwrap() >= 1, "{done}");
    assert!(
        removed["audit_log.actor_id"].as_u64().unwrap() >= 1,
        "{done}"
    );
    assert!(removed["receipts"].as_u64().unwrap() >= 1, "{done}");

    // She is no longer in the company.
    let (s, _) = app.as_(&mia).tenant(&t).get("/api/v1/tasks").await;
    assert!(
        s == StatusCode::FORBIDDEN || s == StatusCode::NOT_FOUND,
        "{s}"
    );
    let (_, members) = app.as_(&own).tenant(&t).get("/api/v1/members").await;
    assert!(!members.to_string().contains(&mia.id), "{members}");
    let (_, task_now) = app
        .as_(&own)
        .tenant(&t)
        .get(&format!("/api/v1/tasks/{task}"))
        .await;
    assert_eq!(task_now["task"]["created_by"], "erased", "{task_now}");

    // The closing receipt lists what went, and proves.
    let receipt = done["receipt_id"].as_str().unwrap();
    let (s, r) = app
        .as_(&ann)
        .tenant(&t)
        .get(&format!("/api/v1/receipts/{receipt}"))
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["action"], "erasure.completed");
    let details: Value =
        serde_json::from_str(r["fields"]["details"]["value"].as_str().unwrap()).unwrap();
    assert_eq!(details["removed"], *removed);
    assert_eq!(details["approved_by"], ben.id.as_str());

    // Nothing the company keeps names her, and the export still verifies.
    let (_, audit) = app
        .as_(&own)
        .tenant(&t)
        .get("/api/v1/audit?limit=500")
        .await;
    let (_, bundle) = app
        .as_(&own)
        .tenant(&t)
        .get("/api/v1/receipts/export")
        .await;
    let (_, listed) = app.as_(&own).tenant(&t).get("/api/v1/erasures").await;
    for text in [audit.to_string(), bundle.to_string(), listed.to_string()] {
        assert!(!text.contains(&mia.id), "{text}");
        assert!(!text.to_lowercase().contains("mia.leaving"), "{text}");
    }
    let ready = export(&app, &own, &t).await;
    let (_, zip) = download(&app, &own, &t, ready["id"].as_str().unwrap()).await;
    for (name, bytes) in unzip(&zip) {
        let text = String::from_utf8_lossy(&bytes).to_lowercase();
        assert!(!text.contains(&mia.id), "{name} names her id");
        assert!(!text.contains("mia.leaving"), "{name} names her address");
    }
    let (ok, out) = verify(&zip, "erased.zip", &keys(&app).await);
    assert!(ok, "{out}");
    assert!(out.contains("audit entries match their receipts"), "{out}");

    // Asking again for the same person is a new request; the old one stays done.
    let (s, again) = app
        .as_(&ann)
        .tenant(&t)
        .post("/api/v1/erasures", body)
        .await;
    assert_eq!(s, StatusCode::CREATED, "{again}");
    assert_eq!(again["has_account"], false, "nothing of hers is left");
    // A waiting request expires after 72 hours.
    app.state.clock.advance(Days::hours(73));
    let again_id = again["id"].as_str().unwrap();
    let (s, v) = app
        .as_(&ben)
        .tenant(&t)
        .post(&format!("/api/v1/erasures/{again_id}/approve"), json!({}))
        .await;
    assert_eq!(s, StatusCode::GONE, "{v}");
}

async fn erasures_isolated_and_bad_input(app: TestApp) {
    let (ann, a) = owner(&app, "ann@iso-era.example").await;
    let (bob, b) = owner(&app, "bob@iso-era.example").await;
    let me = app.as_(&ann).tenant(&a);
    for (body, field) in [
        (json!({"email": "not-an-address", "reason": "x"}), "email"),
        (json!({"email": "a b@c.example", "reason": "x"}), "email"),
        (json!({"email": "a@b@c", "reason": "x"}), "email"),
        (json!({"email": "o\"n@x.example", "reason": "x"}), "email"),
        (json!({"email": "x@y.example", "reason": "  "}), "reason"),
        (
            json!({"email": "x@y.example", "reason": "é".repeat(501)}),
            "reason",
        ),
    ] {
        let (s, v) = me.post("/api/v1/erasures", body.clone()).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {v}");
        assert_eq!(v["error"]["field"], field, "{v}");
    }
    for body in [
        json!({"email": 5, "reason": "x"}),
        json!({"email": "x@y.example"}),
        json!({"email": "x@y.example", "reason": "x", "force": true}),
    ] {
        let (s, v) = me.post("/api/v1/erasures", body.clone()).await;
        assert!(s.is_client_error(), "{body}: {s} {v}");
    }
    for path in [
        "/api/v1/erasures/era_nope",
        "/api/v1/erasures/era_00000000000000000000000000000000",
        "/api/v1/erasures/' OR 1=1 --/approve",
    ] {
        let (s, _) = if path.ends_with("approve") {
            me.post(path, json!({})).await
        } else {
            me.get(path).await
        };
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}");
    }

    // A's request, for an outside contact (no account): B sees nothing of it.
    let (s, v) = me
        .post(
            "/api/v1/erasures",
            json!({"email": "lead.person@outside.example", "reason": "GDPR request"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["has_account"], false);
    let id = v["id"].as_str().unwrap().to_owned();
    let theirs = app.as_(&bob).tenant(&b);
    for path in [
        format!("/api/v1/erasures/{id}"),
        format!("/api/v1/erasures/{id}/approve"),
        format!("/api/v1/erasures/{id}/cancel"),
    ] {
        let (s, _) = if path.ends_with("approve") || path.ends_with("cancel") {
            theirs.post(&path, json!({})).await
        } else {
            theirs.get(&path).await
        };
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}");
    }
    let (_, list) = theirs.get("/api/v1/erasures").await;
    assert_eq!(list, json!([]));
    let (s, _) = app.as_(&bob).tenant(&a).get("/api/v1/erasures").await;
    assert!(s == StatusCode::FORBIDDEN || s == StatusCode::NOT_FOUND);

    // An outside contact: a CRM lead of A's.
    let (s, v) = me
        .post(
            "/api/v1/leadtracker/leads",
            json!({"name": "Someone Else", "email": "Someone.Else@outside.example"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // Dual control holds through API keys: a key cannot approve, and the one who made
    // the key that asked cannot either; another admin can.
    let (_, key) = app.api_key(&ann, &a, "admin").await;
    let (s, by_key) = app
        .as_(&key)
        .tenant(&a)
        .post(
            "/api/v1/erasures",
            json!({"email": "someone.else@outside.example", "reason": "asked by email"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{by_key}");
    let approve = format!(
        "/api/v1/erasures/{}/approve",
        by_key["id"].as_str().unwrap()
    );
    let (s, v) = me.post(&approve, json!({})).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"]["code"], "same_admin", "{v}");
    let (s, v) = app.as_(&key).tenant(&a).post(&approve, json!({})).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"]["code"], "person_required", "{v}");
    let other = app.signup("other-admin@iso-era.example").await;
    app.add_member(&ann, &a, &other, "admin").await;
    let (s, v) = app.as_(&other).tenant(&a).post(&approve, json!({})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let done = wait_done(&app, &ann, &a, by_key["id"].as_str().unwrap()).await;
    assert_eq!(done["manifest"]["leads"], 1, "{done}");
    let (_, leads) = me.get("/api/v1/leadtracker/leads").await;
    let (_, audit) = me.get("/api/v1/audit?limit=500").await;
    for text in [leads.to_string(), audit.to_string()] {
        assert!(!text.to_lowercase().contains("someone.else"), "{text}");
    }

    // Cancelled: it cannot be approved, and its address is gone.
    let (s, v) = me
        .post(&format!("/api/v1/erasures/{id}/cancel"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "cancelled");
    let (s, _) = me
        .post(&format!("/api/v1/erasures/{id}/cancel"), json!({}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);

    // PostgreSQL: row-level security hides A's rows from raw SQL set to B.
    if app.config.migration_database_url.is_some() {
        use sqlx::{Connection, PgConnection};
        me.put("/api/v1/retention", json!({"events_days": 5})).await;
        let mut conn = PgConnection::connect(&app.config.database_url)
            .await
            .unwrap();
        let mut tx = conn.begin().await.unwrap();
        sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
            .bind(&b)
            .execute(&mut *tx)
            .await
            .unwrap();
        for table in ["erasures", "retention_settings"] {
            let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT count(*) FROM {table} WHERE tenant_id = $1"
            )))
            .bind(&a)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
            assert_eq!(n, 0, "{table} shows A's rows to B");
        }
        let n = sqlx::query("UPDATE erasures SET status = 'approved' WHERE tenant_id = $1")
            .bind(&a)
            .execute(&mut *tx)
            .await
            .unwrap();
        assert_eq!(n.rows_affected(), 0);
        tx.rollback().await.unwrap();
    }
}
