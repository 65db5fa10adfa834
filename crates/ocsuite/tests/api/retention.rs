//! Retention: windows are validated, authorised by the policy and audited; a pass
//! removes old conversations and events and drops old audit details from the audit log
//! and from the receipts at once, after which every receipt still proves against the
//! signed checkpoint and an export still verifies offline.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::Duration;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::chat::chat;
use crate::dual;
use crate::exports::{download, export, keys, verify};
use crate::helpers::{TestApp, User};
use crate::receipts::{climb, hashes, leaf_of, open_checkpoint};
use crate::tasks::owner;

dual!(
    retention_settings_checked_and_audited,
    retention_drops_old_data_and_proofs_hold
);

async fn retention_settings_checked_and_audited(app: TestApp) {
    let (u, t) = owner(&app, "ret@a.example").await;
    let member = app.signup("ret-member@a.example").await;
    app.add_member(&u, &t, &member, "member").await;
    let me = app.as_(&u).tenant(&t);

    let (s, v) = me.get("/api/v1/retention").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["conversations_days"].is_null() && v["audit_details_days"].is_null());

    for (body, field) in [
        (json!({"conversations_days": 0}), "conversations_days"),
        (json!({"events_days": 3651}), "events_days"),
        (json!({"audit_details_days": 7}), "audit_details_days"),
        (json!({"audit_details_days": -1}), "audit_details_days"),
    ] {
        let (s, v) = me.put("/api/v1/retention", body.clone()).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {v}");
        assert_eq!(v["error"]["field"], field, "{v}");
    }
    for body in [
        json!({"conversations_days": "thirty"}),
        json!({"conversations_days": 30, "forever": true}),
    ] {
        let (s, v) = me.put("/api/v1/retention", body.clone()).await;
        assert!(s.is_client_error(), "{body}: {s} {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{v}"
        );
    }
    let (s, v) = app
        .as_(&member)
        .tenant(&t)
        .put("/api/v1/retention", json!({"conversations_days": 1}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "members cannot: {v}");

    let (s, v) = me
        .put(
            "/api/v1/retention",
            json!({"conversations_days": 90, "events_days": 30, "audit_details_days": 365}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["conversations_days"], 90);
    assert_eq!(v["updated_by"], u.id.as_str());
    let (_, v) = me.get("/api/v1/retention").await;
    assert_eq!(v["events_days"], 30);
    assert_eq!(v["audit_details_days"], 365);

    // The change is audited (with before and after) and decided by the policy.
    let (_, audit) = me.get("/api/v1/audit?limit=50").await;
    let row = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"] == "retention.update")
        .unwrap_or_else(|| panic!("{audit}"));
    assert_eq!(row["details"]["after"]["conversations_days"], 90, "{row}");
    let (_, d) = me
        .get("/api/v1/policy/decisions?action=retention.update")
        .await;
    assert!(
        d.as_array()
            .is_some_and(|a| !a.is_empty() && a[0]["allowed"] == true),
        "{d}"
    );

    // A company policy that forbids it takes effect at once.
    let (s, v) = me
        .put(
            "/api/v1/policy",
            json!({"text": r#"@id("keep-all")
permit(principal, action, resource) when { principal.role == "owner" };
@id("no-shortening")
forbid(principal, action == Ocsuite::Action::"retention.update", resource);"#}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = me
        .put("/api/v1/retention", json!({"conversations_days": 1}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"]["code"], "policy_denied", "{v}");
    let (_, v) = me.get("/api/v1/retention").await;
    assert_eq!(v["conversations_days"], 90, "nothing stored was lost");

    // Another company sees only its own windows.
    let (bob, b) = owner(&app, "ret@b.example").await;
    let (_, v) = app.as_(&bob).tenant(&b).get("/api/v1/retention").await;
    assert!(v["conversations_days"].is_null(), "{v}");
    let (s, _) = app.as_(&bob).tenant(&t).get("/api/v1/retention").await;
    assert!(
        s == StatusCode::NOT_FOUND || s == StatusCode::FORBIDDEN,
        "{s}"
    );
}

/// The receipt `id` proves against its signed checkpoint, with its dropped fields
/// taken from their commitments. Returns the receipt.
async fn proves(app: &TestApp, u: &User, t: &str, id: &str) -> Value {
    let (_, keys) = app.anon().get("/.well-known/ocsuite-log-keys").await;
    let (s, one) = app
        .as_(u)
        .tenant(t)
        .get(&format!("/api/v1/receipts/{id}"))
        .await;
    assert_eq!(s, StatusCode::OK, "{one}");
    let mut hidden = one["commitments"].clone();
    for k in one["fields"].as_object().unwrap().keys() {
        hidden.as_object_mut().unwrap().remove(k);
    }
    let leaf = leaf_of(t, id, &one["fields"], &hidden);
    assert_eq!(B64.encode(leaf), one["leaf_hash"], "leaf of {id}");
    let (size, root) = open_checkpoint(one["checkpoint"]["note"].as_str().unwrap(), &keys);
    assert_eq!(
        climb(
            one["index"].as_u64().unwrap(),
            size,
            leaf,
            &hashes(&one["inclusion"])
        ),
        Some(root),
        "{one}"
    );
    one
}

async fn retention_drops_old_data_and_proofs_hold(app: TestApp) {
    let (u, t) = owner(&app, "old@a.example").await;
    let me = app.as_(&u).tenant(&t);
    let (s, evs) = chat(
        &app,
        &u,
        &t,
        "cfo",
        json!({"message": "What is our runway?"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let conversation = evs[0].1["conversation_id"].as_str().unwrap().to_owned();
    app.api_key(&u, &t, "member").await;
    let (_, list) = me.get("/api/v1/receipts?action=api_key.create").await;
    let old_receipt = list[0]["id"].as_str().unwrap().to_owned();
    let before = proves(&app, &u, &t, &old_receipt).await;
    assert!(before["fields"].get("details").is_some());

    let (s, v) = me
        .put(
            "/api/v1/retention",
            json!({"conversations_days": 7, "events_days": 7, "audit_details_days": 30}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Nothing is old yet.
    let (s, v) = me.post("/api/v1/retention/apply", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v,
        json!({"conversations": 0, "events": 0, "audit_details": 0, "receipts": 0})
    );

    // Forty days on.
    app.state.clock.advance(Duration::days(40));
    let (s, v) = me.post("/api/v1/retention/apply", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["conversations"], 1, "{v}");
    assert!(v["audit_details"].as_u64().unwrap() >= 3, "{v}");
    assert!(
        v["receipts"].as_u64().unwrap() >= v["audit_details"].as_u64().unwrap(),
        "{v}"
    );
    let (s, _) = me
        .get(&format!("/api/v1/conversations/{conversation}"))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // The old entry lost its details in the audit log and in its receipt; the receipt
    // still proves, its details now only a commitment.
    let (_, audit) = me.get("/api/v1/audit?limit=200").await;
    let rows = audit.as_array().unwrap();
    let key_row = rows
        .iter()
        .find(|r| r["action"] == "api_key.create")
        .unwrap();
    assert_eq!(
        key_row["details"],
        json!({"redacted": "retention"}),
        "{key_row}"
    );
    let after = proves(&app, &u, &t, &old_receipt).await;
    assert!(after["fields"].get("details").is_none(), "{after}");
    assert_eq!(after["fields"]["action"], before["fields"]["action"]);
    assert_eq!(after["leaf_hash"], before["leaf_hash"]);
    let (_, listed) = me.get("/api/v1/receipts?action=api_key.create").await;
    assert_eq!(listed[0]["purged"], true, "{listed}");

    // The pass left its own receipt, with what went; details written since are kept.
    let applied = rows
        .iter()
        .find(|r| r["action"] == "retention.applied")
        .unwrap_or_else(|| panic!("{audit}"));
    assert_eq!(
        applied["details"]["removed"]["conversations"], 1,
        "{applied}"
    );
    // A second pass finds nothing more.
    let (_, again) = me.post("/api/v1/retention/apply", json!({})).await;
    assert_eq!(
        again,
        json!({"conversations": 0, "events": 0, "audit_details": 0, "receipts": 0})
    );

    // The export still verifies offline: hidden details are commitments only.
    let done = export(&app, &u, &t).await;
    let (s, zip) = download(&app, &u, &t, done["id"].as_str().unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    let (ok, out) = verify(&zip, "retention.zip", &keys(&app).await);
    assert!(ok, "{out}");
    assert!(out.contains("audit entries match their receipts"), "{out}");
}
