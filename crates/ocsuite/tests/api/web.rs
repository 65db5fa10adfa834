//! The web app's pages over HTTP (the browser suite in `e2e/` drives them in chromium):
//! sign-in redirects, strict security headers, escaping of tenant data, and isolation.

use reqwest::StatusCode;
use reqwest::header::{CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION};
use serde_json::json;

use crate::dual;
use crate::helpers::{TestApp, User};
use crate::tasks::{owner, start, wait_status};

/// GETs a page as `u` (session cookie), returning status, Location and body.
pub async fn page(app: &TestApp, u: Option<&User>, path: &str) -> (StatusCode, String, String) {
    let mut rb = app.http.get(app.url(path));
    if let Some(u) = u {
        rb = rb.header("cookie", format!("ocsuite_session={}", u.token));
    }
    let res = rb.send().await.unwrap();
    let status = res.status();
    let location = res
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (status, location, res.text().await.unwrap())
}

dual!(
    pages_need_a_session_and_carry_strict_headers,
    pages_escape_tenant_data_and_isolate_tenants,
);

async fn pages_need_a_session_and_carry_strict_headers(app: TestApp) {
    let (s, loc, _) = page(&app, None, "/dashboard").await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(loc, "/login?next=/dashboard");
    let (s, loc, _) = page(&app, None, "/").await;
    assert_eq!((s, loc.as_str()), (StatusCode::SEE_OTHER, "/login"));

    let res = app.http.get(app.url("/login")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let csp = res.headers()[CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_owned();
    for part in [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
    assert_eq!(res.headers()["x-frame-options"], "DENY");
    let html = res.text().await.unwrap();
    assert!(html.contains("<script src=\"/static/app.js\"></script>"));
    assert_eq!(
        html.matches("<script").count(),
        1,
        "no inline script: {html}"
    );
    assert!(!html.contains("style=\""), "no inline style (CSP): {html}");
    for (path, kind) in [
        ("/static/app.js", "text/javascript"),
        ("/static/app.css", "text/css"),
    ] {
        let res = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(
            res.headers()[CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with(kind)
        );
    }

    // Signed in without a company: every page leads to onboarding.
    let u = app.signup("web@a.example").await;
    let (s, loc, _) = page(&app, Some(&u), "/dashboard").await;
    assert_eq!((s, loc.as_str()), (StatusCode::SEE_OTHER, "/onboarding"));
    let (s, _, html) = page(&app, Some(&u), "/onboarding?step=data").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        html.contains("What is your company called?"),
        "no skipping ahead without a company"
    );
    // A forged or ended session is no session.
    let forged = User {
        token: format!("{}x", &u.token[..u.token.len() - 2]),
        ..u.clone()
    };
    let (s, _, _) = page(&app, Some(&forged), "/dashboard").await;
    assert_eq!(s, StatusCode::SEE_OTHER);
}

async fn pages_escape_tenant_data_and_isolate_tenants(app: TestApp) {
    let a = app.signup("weba@a.example").await;
    let ta = app
        .create_tenant(&a, "<script>alert(1)</script> & Co")
        .await;
    let (s, _, html) = page(&app, Some(&a), "/onboarding?step=profile").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        html.contains("&#60;script&#62;alert(1)&#60;/script&#62; &#38; Co")
            || html.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; Co"),
        "{html}"
    );
    assert!(!html.contains("<script>alert(1)"));
    let (s, lead) = app
        .as_(&a)
        .tenant(&ta)
        .post(
            "/api/v1/leadtracker/leads",
            json!({"name": "<img src=x onerror=alert(1)>", "value": "1200"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{lead}");
    let task = start(
        &app,
        &a,
        &ta,
        "diagnostics.echo",
        json!({"note": "<b>bold</b>"}),
    )
    .await;
    wait_status(&app, &a, &ta, &task, "succeeded").await;
    for path in [
        "/dashboard",
        "/leads",
        "/books",
        "/campaigns",
        "/approvals",
        "/tasks",
        "/board",
        "/chat",
        "/connectors",
        "/settings",
        "/alerts",
        "/automations",
        &format!("/tasks/{task}"),
    ] {
        let (s, _, html) = page(&app, Some(&a), path).await;
        assert_eq!(s, StatusCode::OK, "{path}: {html}");
        assert!(
            !html.contains("<script>alert(1)") && !html.contains("<img src=x"),
            "{path} is not escaped"
        );
    }
    let (_, _, html) = page(&app, Some(&a), "/leads").await;
    assert!(html.contains("1,200.00 USD"), "{html}");
    let (_, _, html) = page(&app, Some(&a), &format!("/tasks/{task}")).await;
    assert!(
        html.contains("data-task=\"") && html.contains("succeeded"),
        "{html}"
    );

    // A fresh log-in has no active company: the pages pick A's and remember it, so the
    // person lands in their company, not in onboarding.
    let (s, v) = app.login("weba@a.example", crate::helpers::PASSWORD).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let fresh = User {
        token: v["token"].as_str().unwrap().to_owned(),
        ..a.clone()
    };
    let (s, loc, html) = page(&app, Some(&fresh), "/dashboard").await;
    assert_eq!(s, StatusCode::OK, "{loc}");
    assert!(
        html.contains("1,200.00 USD") || html.contains("Open leads"),
        "{html}"
    );
    let (s, _, body) = page(&app, Some(&fresh), "/api/v1/tenant").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let me: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        me["id"],
        ta.as_str(),
        "the session remembers the company: {me}"
    );

    // Another company: none of A's records, by list or by id.
    let (b, _tb) = owner(&app, "webb@b.example").await;
    for path in ["/dashboard", "/leads", "/tasks"] {
        let (s, _, html) = page(&app, Some(&b), path).await;
        assert_eq!(s, StatusCode::OK);
        assert!(
            !html.contains("onerror") && !html.contains(&task),
            "{path} shows A's data"
        );
    }
    let (s, _, _) = page(&app, Some(&b), &format!("/tasks/{task}")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = page(&app, Some(&b), "/tasks/not-an-id").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = page(
        &app,
        Some(&b),
        "/board/mtg_00000000000000000000000000000000",
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}
