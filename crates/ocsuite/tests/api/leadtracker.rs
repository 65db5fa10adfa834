//! LeadTracker: CSV import with preview and row errors, the pipeline summary against
//! hand-computed figures, capabilities as tasks (with undo), bad input, and isolation.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::dual;
use crate::helpers::{TestApp, User};
use crate::tasks::{owner, start, wait_status};

fn day(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d").to_string()
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Midnight 100 days ago: the fixture's day zero.
fn day_zero() -> DateTime<Utc> {
    let d = (Utc::now() - Duration::days(100)).date_naive();
    d.and_hms_opt(0, 0, 0).unwrap().and_utc()
}

pub async fn import(
    app: &TestApp,
    u: &User,
    t: &str,
    csv: &str,
    confirm: bool,
) -> (StatusCode, Value) {
    app.as_(u)
        .tenant(t)
        .post(
            "/api/v1/leadtracker/import",
            json!({"csv": csv, "confirm": confirm}),
        )
        .await
}

async fn lead_by_email(app: &TestApp, u: &User, t: &str, email: &str) -> String {
    let (s, v) = app
        .as_(u)
        .tenant(t)
        .get(&format!("/api/v1/leadtracker/leads?q={email}"))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["leads"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no lead {email}: {v}"))
        .to_owned()
}

async fn move_to(app: &TestApp, u: &User, t: &str, id: &str, stage: &str, at: DateTime<Utc>) {
    let (s, v) = app
        .as_(u)
        .tenant(t)
        .post(
            &format!("/api/v1/leadtracker/leads/{id}/stage"),
            json!({"stage": stage, "changed_at": ts(at)}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["stage"], stage);
}

/// The fixture pipeline (see the module docs of `leadtracker::summary` for the rules):
/// five good leads imported, then moved on known days.
pub async fn fixture(app: &TestApp, u: &User, t: &str) -> DateTime<Utc> {
    let b = day_zero();
    let csv = format!(
        "Full name,Organisation,E-mail,Amount,Status,Created\n\
         Alice Archer,Acme,alice@a.test,1000,New,{b0}\n\
         Bob Brown,Beta,bob@b.test,2000,new,{b0}\n\
         Carol Chen,Gamma,carol@c.test,3000,New,{b0}\n\
         Dan Diaz,Delta,dan@d.test,\"4,000.00\",New,{b0}\n\
         Eve Evans,Epsilon,eve@e.test,500,Qualified,{b90}\n\
         ,Nameless,nobody@x.test,10,New,{b0}\n\
         Frank Bad,Zeta,not-an-email,10,New,{b0}\n\
         Gina Stage,Eta,gina@g.test,10,Negotiation,{b0}\n\
         Hugo Cents,Theta,hugo@h.test,12.345,New,{b0}\n\
         Ivy Future,Iota,ivy@i.test,10,New,2999-01-01\n\
         Alice Again,Acme,ALICE@a.test,99,New,{b0}\n",
        b0 = day(b),
        b90 = day(b + Duration::days(90)),
    );
    let (s, preview) = import(app, u, t, &csv, false).await;
    assert_eq!(s, StatusCode::OK, "{preview}");
    assert_eq!(preview["confirmed"], false);
    assert_eq!(preview["total_rows"], 11, "{preview}");
    assert_eq!(preview["valid_rows"], 5, "{preview}");
    assert_eq!(preview["duplicates"], 1, "{preview}");
    assert_eq!(preview["imported"], 0);
    assert_eq!(preview["mapping"]["email"], "E-mail");
    assert_eq!(preview["mapping"]["value"], "Amount");
    let errors: Vec<(u64, String)> = preview["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["line"].as_u64().unwrap(),
                e["field"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        errors,
        vec![
            (7, "name".into()),
            (8, "email".into()),
            (9, "stage".into()),
            (10, "value".into()),
            (11, "created_at".into())
        ],
        "{preview}"
    );
    assert!(
        preview["errors"][3]["message"]
            .as_str()
            .unwrap()
            .contains("more decimals"),
        "{preview}"
    );
    // A preview stores nothing.
    let (_, v) = app.as_(u).tenant(t).get("/api/v1/leadtracker/leads").await;
    assert_eq!(v["leads"], json!([]));

    let (s, done) = import(app, u, t, &csv, true).await;
    assert_eq!(s, StatusCode::OK, "{done}");
    assert_eq!(done["imported"], 5, "{done}");
    // The same file again adds nothing.
    let (_, again) = import(app, u, t, &csv, true).await;
    assert_eq!(again["imported"], 0, "{again}");
    assert_eq!(again["duplicates"], 6, "{again}");

    let a = lead_by_email(app, u, t, "alice@a.test").await;
    let bb = lead_by_email(app, u, t, "bob@b.test").await;
    let c = lead_by_email(app, u, t, "carol@c.test").await;
    move_to(app, u, t, &a, "contacted", b + Duration::days(10)).await;
    move_to(app, u, t, &a, "qualified", b + Duration::days(20)).await;
    move_to(app, u, t, &a, "proposal", b + Duration::days(30)).await;
    move_to(app, u, t, &a, "won", b + Duration::days(80)).await;
    move_to(app, u, t, &bb, "contacted", b + Duration::days(5)).await;
    move_to(app, u, t, &bb, "qualified", b + Duration::days(15)).await;
    move_to(app, u, t, &bb, "lost", b + Duration::days(85)).await;
    move_to(app, u, t, &c, "contacted", b + Duration::days(10)).await;
    b
}

fn stage<'a>(s: &'a Value, key: &str) -> &'a Value {
    s["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["key"] == key)
        .unwrap()
}

fn check_summary(s: &Value) {
    assert_eq!(s["currency"], "USD");
    assert_eq!(s["total_leads"], 5);
    assert_eq!(s["open_count"], 3, "{s}");
    assert_eq!(s["open_value_minor"], 750_000, "{s}");
    for (key, count, value) in [
        ("new", 1, 400_000),
        ("contacted", 1, 300_000),
        ("qualified", 1, 50_000),
        ("proposal", 0, 0),
        ("won", 1, 100_000),
        ("lost", 1, 200_000),
    ] {
        assert_eq!(stage(s, key)["count"], count, "{key}: {s}");
        assert_eq!(stage(s, key)["value_minor"], value, "{key}: {s}");
    }
    for (key, reached) in [
        ("new", 5),
        ("contacted", 4),
        ("qualified", 3),
        ("proposal", 1),
        ("won", 1),
    ] {
        assert_eq!(stage(s, key)["reached"], reached, "{key}: {s}");
    }
    assert_eq!(stage(s, "lost")["reached"], Value::Null);
    let rates: Vec<(String, f64)> = s["conversions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                format!(
                    "{}>{}",
                    c["from"].as_str().unwrap(),
                    c["to"].as_str().unwrap()
                ),
                c["rate"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rates,
        vec![
            ("new>contacted".into(), 0.8),
            ("contacted>qualified".into(), 0.75),
            ("qualified>proposal".into(), 0.333),
            ("proposal>won".into(), 1.0)
        ]
    );
    for (key, days) in [
        ("new", json!(8.3)),
        ("contacted", json!(10.0)),
        ("qualified", json!(40.0)),
        ("proposal", json!(50.0)),
        ("won", Value::Null),
    ] {
        assert_eq!(stage(s, key)["avg_days_in_stage"], days, "{key}: {s}");
    }
    assert_eq!(s["won_count"], 1);
    assert_eq!(s["won_value_minor"], 100_000);
    assert_eq!(s["lost_count"], 1);
    assert_eq!(s["win_rate"], 0.5);
    assert_eq!(s["stale_count"], 2);
    assert_eq!(s["stale"][0]["name"], "Dan Diaz");
    assert_eq!(s["stale"][0]["days_in_stage"], 95);
    assert_eq!(s["stale"][1]["name"], "Carol Chen");
    assert_eq!(s["stale"][1]["days_in_stage"], 85);
}

dual!(
    import_and_summary_match_hand_computed_figures,
    capabilities_run_as_tasks_and_undo,
    bad_lead_input_is_refused_with_reasons,
    leads_are_isolated_between_tenants,
);

async fn import_and_summary_match_hand_computed_figures(app: TestApp) {
    let (u, t) = owner(&app, "lt@a.example").await;
    let b = fixture(&app, &u, &t).await;
    let as_of = ts(b + Duration::days(95));
    let (s, summary) = app
        .as_(&u)
        .tenant(&t)
        .get(&format!(
            "/api/v1/leadtracker/summary?as_of={as_of}&period_days=30&stale_days=14"
        ))
        .await;
    assert_eq!(s, StatusCode::OK, "{summary}");
    check_summary(&summary);

    // The same figures through the capability.
    let id = start(
        &app,
        &u,
        &t,
        "leadtracker.pipeline_summary",
        json!({"as_of": as_of, "period_days": 30, "stale_days": 14}),
    )
    .await;
    let d = wait_status(&app, &u, &t, &id, "succeeded").await;
    check_summary(&d["task"]["result"]);

    // History is kept in order, with the actor.
    let a = lead_by_email(&app, &u, &t, "alice@a.test").await;
    let (_, detail) = app
        .as_(&u)
        .tenant(&t)
        .get(&format!("/api/v1/leadtracker/leads/{a}"))
        .await;
    let path: Vec<&str> = detail["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["to_stage"].as_str().unwrap())
        .collect();
    assert_eq!(path, ["new", "contacted", "qualified", "proposal", "won"]);
    assert_eq!(detail["history"][1]["from_stage"], "new");

    // The snapshot the dashboard and board read (computed over the last 30 days now).
    let (_, m) = app.as_(&u).tenant(&t).get("/api/v1/metrics").await;
    let lt = m["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["module"] == "leadtracker")
        .unwrap()
        .clone();
    let open = lt["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["key"] == "open_leads")
        .unwrap()
        .clone();
    assert_eq!(open["value"], json!({"type": "count", "value": 3}), "{lt}");
    let value = lt["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["key"] == "pipeline_value")
        .unwrap()
        .clone();
    assert_eq!(
        value["value"],
        json!({"type": "money", "minor_units": 750_000, "currency": "USD"})
    );
}

async fn capabilities_run_as_tasks_and_undo(app: TestApp) {
    let (u, t) = owner(&app, "ltcap@a.example").await;
    let id = start(
        &app,
        &u,
        &t,
        "leadtracker.add_lead",
        json!({"name": "Zoe Zed", "email": "zoe@z.test", "value": "250.50", "source": "board"}),
    )
    .await;
    let d = wait_status(&app, &u, &t, &id, "succeeded").await;
    let lead = d["task"]["result"]["lead_id"].as_str().unwrap().to_owned();
    assert_eq!(d["task"]["result"]["value_minor"], 25_050);
    assert_eq!(d["task"]["result"]["stage"], "new");

    let mv = start(
        &app,
        &u,
        &t,
        "leadtracker.update_stage",
        json!({"email": "ZOE@z.test", "stage": "qualified", "note": "call went well"}),
    )
    .await;
    let d = wait_status(&app, &u, &t, &mv, "succeeded").await;
    assert_eq!(
        d["task"]["result"],
        json!({"lead_id": lead, "stage": "qualified", "previous_stage": "new", "changed": true})
    );
    let (_, detail) = app
        .as_(&u)
        .tenant(&t)
        .get(&format!("/api/v1/leadtracker/leads/{lead}"))
        .await;
    assert_eq!(detail["history"][1]["note"], "call went well");
    assert_eq!(detail["history"][1]["changed_by"], format!("task:{mv}"));

    // A move to a stage that does not exist fails for good, naming the stages.
    let bad = start(
        &app,
        &u,
        &t,
        "leadtracker.update_stage",
        json!({"lead_id": lead, "stage": "nope"}),
    )
    .await;
    let d = wait_status(&app, &u, &t, &bad, "failed").await;
    assert!(
        d["task"]["error"].as_str().unwrap().contains("qualified"),
        "{d}"
    );

    // Undo of add_lead removes it (after approval of the compensation).
    let (s, v) = app
        .as_(&u)
        .tenant(&t)
        .post(&format!("/api/v1/tasks/{id}/undo"), json!({}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let undo = v["task"]["id"].as_str().unwrap().to_owned();
    let (s, v) = app
        .as_(&u)
        .tenant(&t)
        .post(&format!("/api/v1/tasks/{undo}/approve"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let d = wait_status(&app, &u, &t, &undo, "succeeded").await;
    assert_eq!(d["task"]["result"]["removed"], true);
    let (s, _) = app
        .as_(&u)
        .tenant(&t)
        .get(&format!("/api/v1/leadtracker/leads/{lead}"))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

async fn bad_lead_input_is_refused_with_reasons(app: TestApp) {
    let (u, t) = owner(&app, "ltbad@a.example").await;
    let post = |body: Value| {
        let app = &app;
        let u = &u;
        let t = &t;
        async move {
            app.as_(u)
                .tenant(t)
                .post("/api/v1/leadtracker/leads", body)
                .await
        }
    };
    for (body, field) in [
        (json!({"name": ""}), "name"),
        (json!({"name": "A", "value": "12.345"}), "value"),
        (json!({"name": "A", "value": "-5"}), "value"),
        (json!({"name": "A", "value_minor": i64::MAX}), "value"),
        (json!({"name": "A", "currency": "XYZ"}), "currency"),
        (json!({"name": "A", "email": "a@@b"}), "email"),
        (json!({"name": "A", "stage": "later"}), "stage"),
        (json!({"name": "A", "notes": "x".repeat(5001)}), "notes"),
    ] {
        let (s, v) = post(body.clone()).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {v}");
        assert_eq!(v["error"]["field"], field, "{body}: {v}");
    }
    let (s, v) = post(json!({"name": 5})).await;
    assert!(s.is_client_error(), "{v}");
    let (s, v) = post(json!({"name": "A", "colour": "red"})).await;
    assert!(s.is_client_error(), "{v}");
    let (s, lead) = post(
        json!({"name": "<script>alert(1)</script> Robert'); DROP TABLE leads;--", "value": "10"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{lead}");
    assert_eq!(
        lead["name"],
        "<script>alert(1)</script> Robert'); DROP TABLE leads;--"
    );
    let id = lead["id"].as_str().unwrap();

    let (s, v) = app
        .as_(&u)
        .tenant(&t)
        .post(
            &format!("/api/v1/leadtracker/leads/{id}/stage"),
            json!({"stage": "won", "changed_at": ts(Utc::now() + Duration::days(2))}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, v) = app
        .as_(&u)
        .tenant(&t)
        .post(
            &format!("/api/v1/leadtracker/leads/{id}/stage"),
            json!({"stage": "won", "changed_at": ts(Utc::now() - Duration::days(2))}),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::UNPROCESSABLE_ENTITY,
        "before it entered its stage: {v}"
    );
    for path in [
        "/api/v1/leadtracker/leads/lead_00000000000000000000000000000000",
        "/api/v1/leadtracker/leads/nonsense",
    ] {
        let (s, _) = app.as_(&u).tenant(&t).get(path).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}");
    }

    // Stages: a stage holding a lead cannot be removed; bad lists are 422.
    let (s, v) = app
        .as_(&u)
        .tenant(&t)
        .post(
            &format!("/api/v1/leadtracker/leads/{id}/stage"),
            json!({"stage": "lost"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let stages = json!({"stages": [{"key": "new", "label": "New", "kind": "open"}, {"key": "won", "label": "Won", "kind": "won"}]});
    let (s, v) = app
        .as_(&u)
        .tenant(&t)
        .put("/api/v1/leadtracker/stages", stages)
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("lost"),
        "{v}"
    );
    let dup = json!({"stages": [{"key": "new", "label": "New", "kind": "open"}, {"key": "new", "label": "Again", "kind": "won"}]});
    let (s, _) = app
        .as_(&u)
        .tenant(&t)
        .put("/api/v1/leadtracker/stages", dup)
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let custom = json!({"stages": [{"key": "new", "label": "Inbox", "kind": "open"}, {"key": "demo", "label": "Demo booked", "kind": "open"}, {"key": "lost", "label": "Lost", "kind": "lost"}, {"key": "won", "label": "Won", "kind": "won"}]});
    let (s, v) = app
        .as_(&u)
        .tenant(&t)
        .put("/api/v1/leadtracker/stages", custom)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["stages"][1]["label"], "Demo booked");

    // Imports: an empty file and a file without a name column say what to fix.
    let (s, v) = import(&app, &u, &t, "", false).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, v) = import(&app, &u, &t, "Company,Email\nAcme,a@a.test\n", false).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("`name`"),
        "{v}"
    );
    let (s, v) = app.as_(&u).tenant(&t).post("/api/v1/leadtracker/import", json!({"csv": "Who,Email\nAnn,ann@a.test\n", "mapping": {"name": "Who"}, "confirm": true}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["imported"], 1);
    // A viewer reads but cannot write.
    let viewer = app.signup("ltview@a.example").await;
    app.add_member(&u, &t, &viewer, "viewer").await;
    let (s, _) = app
        .as_(&viewer)
        .tenant(&t)
        .post("/api/v1/leadtracker/leads", json!({"name": "V"}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = app
        .as_(&viewer)
        .tenant(&t)
        .get("/api/v1/leadtracker/leads")
        .await;
    assert_eq!(s, StatusCode::OK);
}

async fn leads_are_isolated_between_tenants(app: TestApp) {
    let (a, ta) = owner(&app, "lta@a.example").await;
    let (b, tb) = owner(&app, "ltb@b.example").await;
    let (_, lead) = app
        .as_(&a)
        .tenant(&ta)
        .post(
            "/api/v1/leadtracker/leads",
            json!({"name": "Secret Deal", "email": "s@a.test", "value": "9999"}),
        )
        .await;
    let id = lead["id"].as_str().unwrap();
    let path = format!("/api/v1/leadtracker/leads/{id}");
    let (s, _) = app.as_(&b).tenant(&tb).get(&path).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = app
        .as_(&b)
        .tenant(&tb)
        .patch(&path, json!({"name": "mine"}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = app
        .as_(&b)
        .tenant(&tb)
        .post(&format!("{path}/stage"), json!({"stage": "won"}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = app.as_(&b).tenant(&tb).delete(&path).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // B's own tenant header with A's lead: nothing; A's tenant header: refused.
    let (s, _) = app.as_(&b).tenant(&ta).get(&path).await;
    assert!(
        s == StatusCode::FORBIDDEN || s == StatusCode::NOT_FOUND,
        "{s}"
    );
    let (_, v) = app
        .as_(&b)
        .tenant(&tb)
        .get("/api/v1/leadtracker/leads")
        .await;
    assert_eq!(v["leads"], json!([]));
    let (_, v) = app
        .as_(&b)
        .tenant(&tb)
        .get("/api/v1/leadtracker/summary")
        .await;
    assert_eq!(v["total_leads"], 0);
    // A task in B cannot move A's lead.
    let task = start(
        &app,
        &b,
        &tb,
        "leadtracker.update_stage",
        json!({"lead_id": id, "stage": "won"}),
    )
    .await;
    wait_status(&app, &b, &tb, &task, "failed").await;
    let (_, v) = app.as_(&a).tenant(&ta).get(&path).await;
    assert_eq!(v["lead"]["stage"], "new");
    crate::bookkeeping::rls_hides(
        &app,
        &ta,
        &tb,
        &["leads", "lead_stage_history", "metric_snapshots"],
    )
    .await;
}
