//! Tenants, profiles, invites, roles, audit, super-admin support access.

use reqwest::StatusCode;
use serde_json::json;

use crate::dual;
use crate::helpers::{PASSWORD, TestApp};

dual!(
    tenant_profile,
    invites_flow,
    roles_and_last_owner,
    audit_trail,
    super_admin_support_access,
    api_keys_follow_their_creator
);

async fn tenant_profile(app: TestApp) {
    let ann = app.signup("ann@example.com").await;
    let (s, v) = app.as_(&ann).post("/api/v1/tenants", json!({"name": "Acme <b>Ltd</b>", "profile": {"industry": "SaaS", "stage": "early_revenue", "goals": ["grow MRR"], "team_size": 3, "currency": "eur"}}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["name"], "Acme <b>Ltd</b>");
    assert_eq!(v["profile"]["currency"], "EUR");
    assert_eq!(v["role"], "owner");
    let t = v["id"].as_str().unwrap().to_owned();
    for (profile, field) in [
        (json!({"currency": "euro"}), "profile.currency"),
        (json!({"team_size": 0}), "profile.team_size"),
        (json!({"stage": "unicorn"}), "stage"),
        (json!({"colour": "red"}), "colour"),
    ] {
        let (s, v) = app
            .as_(&ann)
            .post("/api/v1/tenants", json!({"name": "X", "profile": profile}))
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert!(v.to_string().contains(field), "{v}");
    }
    let (s, _) = app
        .as_(&ann)
        .post("/api/v1/tenants", json!({"name": ""}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, list) = app.as_(&ann).get("/api/v1/tenants").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        list.as_array().unwrap().len(),
        1,
        "failed creates stored nothing"
    );
    let (s, v) = app
        .as_(&ann)
        .tenant(&t)
        .patch(
            "/api/v1/tenant",
            json!({"profile": {"industry": "Retail", "currency": "GBP"}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["profile"]["industry"], "Retail");
    assert_eq!(v["name"], "Acme <b>Ltd</b>");
    let (s, v) = app.as_(&ann).tenant(&t).get("/api/v1/tenant").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["profile"]["currency"], "GBP");
    // Tenant-scoped routes need the header (bearer callers have no fallback).
    let (s, v) = app.as_(&ann).get("/api/v1/tenant").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["code"], "tenant_required");
    let (s, _) = app
        .as_(&ann)
        .tenant("ten_' OR 1=1 --")
        .get("/api/v1/tenant")
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = app
        .as_(&ann)
        .tenant("ten_0123456789abcdef0123456789abcdef")
        .get("/api/v1/tenant")
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // A browser session falls back to its active tenant.
    let res = app
        .http
        .get(app.url("/api/v1/tenant"))
        .header("cookie", format!("ocsuite_session={}", ann.token))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

async fn invites_flow(app: TestApp) {
    let ann = app.signup("ann@example.com").await;
    let t = app.create_tenant(&ann, "Acme").await;
    let bob = app.signup("bob@example.com").await;
    let eve = app.signup("eve@example.com").await;
    let (s, inv) = app
        .as_(&ann)
        .tenant(&t)
        .post(
            "/api/v1/members",
            json!({"email": "BOB@example.com", "role": "admin"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{inv}");
    let token = inv["token"].as_str().unwrap().to_owned();
    let accept = format!("/api/v1/invites/{token}/accept");
    // Someone else cannot use Bob's invite.
    let (s, _) = app.as_(&eve).post(&accept, json!({})).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v) = app.as_(&bob).post(&accept, json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["role"], "admin");
    let (s, v) = app.as_(&bob).post(&accept, json!({})).await;
    assert_eq!(s, StatusCode::GONE, "{v}");
    let (_, members) = app.as_(&bob).tenant(&t).get("/api/v1/members").await;
    assert_eq!(members.as_array().unwrap().len(), 2);
    // Already a member → 409; unknown/garbled token → 404.
    let (s, _) = app
        .as_(&ann)
        .tenant(&t)
        .post("/api/v1/invites", json!({"email": "bob@example.com"}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(
        app.as_(&eve)
            .post("/api/v1/invites/ocs_i_nope/accept", json!({}))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    let last = if token.ends_with('x') { 'y' } else { 'x' };
    let forged = format!("{}{last}", &token[..token.len() - 1]);
    assert_eq!(
        app.as_(&eve)
            .post(&format!("/api/v1/invites/{forged}/accept"), json!({}))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    // Expired and revoked invites are refused.
    let (_, inv) = app
        .as_(&ann)
        .tenant(&t)
        .post("/api/v1/invites", json!({"email": "eve@example.com"}))
        .await;
    let eve_token = inv["token"].as_str().unwrap().to_owned();
    let tenant = ocsuite::ids::TenantId::parse(&t).unwrap();
    let mut tx = app.state.store.tenant(&tenant).await.unwrap();
    tx.execute(
        ocsuite::store::sql(
            "UPDATE invites SET expires_at = $1 WHERE tenant_id = $2 AND email = $3",
        )
        .bind(chrono::Utc::now() - chrono::Duration::hours(1))
        .bind(&tenant)
        .bind("eve@example.com"),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let (s, v) = app
        .as_(&eve)
        .post(&format!("/api/v1/invites/{eve_token}/accept"), json!({}))
        .await;
    assert_eq!(s, StatusCode::GONE);
    assert!(v["error"]["message"].as_str().unwrap().contains("expired"));
    let (_, inv) = app
        .as_(&ann)
        .tenant(&t)
        .post(
            "/api/v1/invites",
            json!({"email": "eve@example.com", "role": "viewer"}),
        )
        .await;
    let (id, tok) = (
        inv["id"].as_str().unwrap().to_owned(),
        inv["token"].as_str().unwrap().to_owned(),
    );
    let (s, _) = app
        .as_(&ann)
        .tenant(&t)
        .delete(&format!("/api/v1/invites/{id}"))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(
        app.as_(&eve)
            .post(&format!("/api/v1/invites/{tok}/accept"), json!({}))
            .await
            .0,
        StatusCode::GONE
    );
    let (s, list) = app.as_(&ann).tenant(&t).get("/api/v1/invites").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 3);
    assert!(
        !list.to_string().contains("ocs_i_"),
        "invite tokens are never listed"
    );
    let (s, _) = app
        .as_(&ann)
        .tenant(&t)
        .post("/api/v1/invites", json!({"email": "not-an-email"}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
}

async fn roles_and_last_owner(app: TestApp) {
    let ann = app.signup("ann@example.com").await;
    let t = app.create_tenant(&ann, "Acme").await;
    let bob = app.signup("bob@example.com").await;
    let cat = app.signup("cat@example.com").await;
    app.add_member(&ann, &t, &bob, "admin").await;
    app.add_member(&ann, &t, &cat, "viewer").await;
    // Viewer reads, cannot write.
    assert_eq!(
        app.as_(&cat).tenant(&t).get("/api/v1/members").await.0,
        StatusCode::OK
    );
    let (s, v) = app
        .as_(&cat)
        .tenant(&t)
        .post("/api/v1/invites", json!({"email": "d@example.com"}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(v["error"]["message"].as_str().unwrap().contains("admin"));
    assert_eq!(
        app.as_(&cat).tenant(&t).get("/api/v1/audit").await.0,
        StatusCode::FORBIDDEN
    );
    // Admin cannot touch owners or mint owners.
    let patch = |id: &str| format!("/api/v1/members/{id}");
    let (s, _) = app
        .as_(&bob)
        .tenant(&t)
        .patch(&patch(&cat.id), json!({"role": "owner"}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = app.as_(&bob).tenant(&t).delete(&patch(&ann.id)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v) = app
        .as_(&bob)
        .tenant(&t)
        .patch(&patch(&cat.id), json!({"role": "member"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["role"], "member");
    // The last owner can neither leave nor be demoted.
    let (s, v) = app.as_(&ann).tenant(&t).delete(&patch(&ann.id)).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let (s, _) = app
        .as_(&ann)
        .tenant(&t)
        .patch(&patch(&ann.id), json!({"role": "admin"}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    // With a second owner, the first may step down.
    let (s, _) = app
        .as_(&ann)
        .tenant(&t)
        .patch(&patch(&bob.id), json!({"role": "owner"}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = app
        .as_(&ann)
        .tenant(&t)
        .patch(&patch(&ann.id), json!({"role": "member"}))
        .await;
    assert_eq!(s, StatusCode::OK);
    // Members may leave; unknown or garbage member ids are 404.
    let (s, _) = app.as_(&cat).tenant(&t).delete(&patch(&cat.id)).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(
        app.as_(&cat).tenant(&t).get("/api/v1/members").await.0,
        StatusCode::NOT_FOUND
    );
    let (s, _) = app.as_(&bob).tenant(&t).delete(&patch(&cat.id)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = app
        .as_(&bob)
        .tenant(&t)
        .patch(&patch("usr_garbage"), json!({"role": "member"}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = app
        .as_(&bob)
        .tenant(&t)
        .patch(&patch(&ann.id), json!({"role": 7}))
        .await;
    assert!(
        s.is_client_error() && v["error"]["message"].as_str().unwrap().contains("role"),
        "{v}"
    );
    let (_, me) = app.as_(&ann).get("/api/v1/me").await;
    assert_eq!(me["memberships"][0]["role"], "member");
}

async fn audit_trail(app: TestApp) {
    let ann = app.signup("ann@example.com").await;
    let t = app.create_tenant(&ann, "Acme").await;
    let bob = app.signup("bob@example.com").await;
    app.add_member(&ann, &t, &bob, "member").await;
    let (key_id, key) = app.api_key(&ann, &t, "admin").await;
    app.as_(&key)
        .patch(
            &format!("/api/v1/members/{}", bob.id),
            json!({"role": "viewer"}),
        )
        .await;
    let (s, log) = app.as_(&ann).tenant(&t).get("/api/v1/audit").await;
    assert_eq!(s, StatusCode::OK);
    let actions: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "member.role_change",
            "api_key.create",
            "invite.accept",
            "invite.create",
            "tenant.create"
        ]
    );
    let change = &log[0];
    assert_eq!(change["actor_type"], "api_key");
    assert_eq!(change["actor_id"], key_id.as_str());
    assert_eq!(change["details"], json!({"from": "member", "to": "viewer"}));
    assert!(change["request_id"].as_str().is_some_and(|r| !r.is_empty()));
    let (_, page) = app
        .as_(&ann)
        .tenant(&t)
        .get(&format!(
            "/api/v1/audit?limit=2&before={}",
            log[1]["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(page.as_array().unwrap().len(), 2);
    assert_eq!(page[0]["action"], "invite.accept");
    assert_eq!(
        app.as_(&ann)
            .tenant(&t)
            .get("/api/v1/audit?limit=0")
            .await
            .0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        app.as_(&ann)
            .tenant(&t)
            .get("/api/v1/audit?limit=abc")
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
}

async fn super_admin_support_access(app: TestApp) {
    let ann = app.signup("ann@example.com").await;
    let t = app.create_tenant(&ann, "Acme").await;
    let admin = ocsuite::auth::admin::create_super_admin(
        app.config.clone(),
        "root@example.com",
        Some("Root"),
        PASSWORD.into(),
    )
    .await
    .unwrap();
    assert!(admin.is_super_admin);
    let (_, v) = app.login("root@example.com", PASSWORD).await;
    let root = v["token"].as_str().unwrap().to_owned();
    // Without a support session a super-admin is a stranger in the company.
    let (s, _) = app.as_(&root).tenant(&t).get("/api/v1/members").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = app
        .as_(&root)
        .post(
            "/api/v1/admin/impersonations",
            json!({"tenant_id": t, "reason": "Customer asked for help", "minutes": 15}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, _) = app.as_(&root).tenant(&t).get("/api/v1/members").await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = app
        .as_(&root)
        .tenant(&t)
        .post("/api/v1/api-keys", json!({"name": "support"}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"]["code"], "impersonation_forbidden");
    let (_, log) = app.as_(&ann).tenant(&t).get("/api/v1/audit").await;
    assert_eq!(log[0]["actor_type"], "support_admin", "{log}");
    assert_eq!(log[0]["action"], "support.request", "{log}");
    assert_eq!(log[0]["details"]["path"], "/api/v1/api-keys", "{log}");
    assert_eq!(log[1]["actor_type"], "support_admin", "{log}");
    // Promoting an existing user keeps their password.
    ocsuite::auth::admin::create_super_admin(
        app.config.clone(),
        "ann@example.com",
        None,
        "ignored ignored".into(),
    )
    .await
    .unwrap();
    assert_eq!(
        app.login("ann@example.com", PASSWORD).await.0,
        StatusCode::OK
    );
}

/// A key's role stays at most its creator's: demoting the creator caps their keys (and
/// keys those keys made), removing them revokes them; other members' keys are untouched.
async fn api_keys_follow_their_creator(app: TestApp) {
    let ann = app.signup("ann@example.com").await;
    let t = app.create_tenant(&ann, "Acme").await;
    let bob = app.signup("bob@example.com").await;
    let cat = app.signup("cat@example.com").await;
    app.add_member(&ann, &t, &bob, "admin").await;
    app.add_member(&ann, &t, &cat, "admin").await;
    let (_, bob_admin) = app.api_key(&bob, &t, "admin").await;
    let (_, bob_viewer) = app.api_key(&bob, &t, "viewer").await;
    let (_, cat_admin) = app.api_key(&cat, &t, "admin").await;
    // A key made by bob's admin key.
    let (s, v) = app
        .as_(&bob_admin)
        .tenant(&t)
        .post(
            "/api/v1/api-keys",
            json!({"name": "made by a key", "role": "admin"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let grandchild = v["key"].as_str().unwrap().to_owned();
    let status = |key: String, path: &'static str| {
        let app = &app;
        let t = t.clone();
        async move { app.as_(&key).tenant(&t).get(path).await.0 }
    };
    for k in [&bob_admin, &grandchild, &cat_admin] {
        assert_eq!(status(k.clone(), "/api/v1/api-keys").await, StatusCode::OK);
    }

    // Bob becomes a member: his admin keys become member keys, the viewer key stays.
    let (s, v) = app
        .as_(&ann)
        .tenant(&t)
        .patch(
            &format!("/api/v1/members/{}", bob.id),
            json!({"role": "member"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    for k in [&bob_admin, &grandchild] {
        assert_eq!(
            status(k.clone(), "/api/v1/api-keys").await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(status(k.clone(), "/api/v1/members").await, StatusCode::OK);
    }
    let (_, keys) = app.as_(&ann).tenant(&t).get("/api/v1/api-keys").await;
    let roles: Vec<&str> = keys
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles.iter().filter(|r| **r == "admin").count(), 1, "{keys}");
    assert_eq!(
        roles.iter().filter(|r| **r == "member").count(),
        2,
        "{keys}"
    );
    assert_eq!(
        roles.iter().filter(|r| **r == "viewer").count(),
        1,
        "{keys}"
    );
    assert_eq!(
        status(cat_admin.clone(), "/api/v1/api-keys").await,
        StatusCode::OK
    );

    // Bob is removed: every key his chain made stops working; cat's keeps working.
    let (s, _) = app
        .as_(&ann)
        .tenant(&t)
        .delete(&format!("/api/v1/members/{}", bob.id))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    for k in [&bob_admin, &bob_viewer, &grandchild] {
        assert_eq!(
            status(k.clone(), "/api/v1/members").await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        status(cat_admin.clone(), "/api/v1/api-keys").await,
        StatusCode::OK
    );
    let (_, keys) = app.as_(&ann).tenant(&t).get("/api/v1/api-keys").await;
    assert_eq!(keys.as_array().unwrap().len(), 1, "{keys}");
    let (_, audit) = app.as_(&ann).tenant(&t).get("/api/v1/audit").await;
    let text = audit.to_string();
    assert_eq!(text.matches("api_key.role_cap").count(), 2, "{text}");
    assert!(text.matches("api_key.revoke").count() >= 3, "{text}");
}
