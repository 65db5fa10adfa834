//! Bookkeeping: bank CSV imports (two bank formats, row errors, duplicates), rules,
//! model-assisted categorisation through a fake model, the financial summary against
//! hand-computed figures, money validation, and isolation.

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::dual;
use crate::helpers::{TestApp, User};
use crate::llm::{delta, finish, sse_body};
use crate::tasks::{owner, start, wait_status};

/// On PostgreSQL: the runtime role, with no tenant or with tenant `b` set, sees none of
/// tenant `a`'s rows in `tables` (row-level security, not the application, stops it).
pub async fn rls_hides(app: &TestApp, a: &str, b: &str, tables: &[&str]) {
    if !app.config.database_url.starts_with("postgres") {
        return;
    }
    let mut rt = PgConnection::connect(&app.config.database_url)
        .await
        .unwrap();
    let mut tx = rt.begin().await.unwrap();
    for table in tables {
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(&mut *tx)
                .await
                .unwrap();
        assert_eq!(n, 0, "{table} visible without a tenant");
    }
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(b)
        .execute(&mut *tx)
        .await
        .unwrap();
    for table in tables {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {table} WHERE tenant_id = $1"
        )))
        .bind(a)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        assert_eq!(n, 0, "tenant B sees A's {table}");
        let n = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE tenant_id = $1"
        )))
        .bind(a)
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
        assert_eq!(n, 0, "tenant B deleted A's {table}");
    }
    tx.rollback().await.unwrap();
    // And A does have rows there (so the zeros above mean something).
    let mut tx = rt.begin().await.unwrap();
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(a)
        .execute(&mut *tx)
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {}",
        tables[0]
    )))
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    assert!(n > 0, "{} has no rows for A", tables[0]);
    tx.rollback().await.unwrap();
}

const BANK_DE: &str = "Buchungstag;Empfänger;Verwendungszweck;Betrag;Währung\n\
05.11.2025;Client Old;Invoice 1;1.000,00;USD\n\
03.02.2026;Client A;Invoice 2;1.000,00;USD\n\
10.02.2026;Landlord LLC;Rent Feb;-2.000,00;USD\n\
20.02.2026;Figma;Subscription;-100,00;USD\n\
31.02.2026;Broken;bad date;-1,00;USD\n\
03.03.2026;Client A;Invoice 3;1.000,00;USD\n\
10.03.2026;Landlord LLC;Rent Mar;-2.000,00;USD\n\
15.03.2026;Ads Co;Campaign;-1.500,00;USD\n\
16.03.2026;Cents;too precise;-1,005;USD\n\
17.03.2026;Euro shop;wrong currency;-5,00;EUR\n";

const BANK_UK: &str = "Date,Description,Payee,Money out,Money in,Category\n\
2026-04-03,Invoice 4,Client B,,1000.00,\n\
2026-04-10,Rent Apr,Landlord LLC,2000.00,,\n\
2026-04-12,To savings,Own account,1000.00,,Transfer\n\
2026-04-20,Refund,Figma,,100.00,\n\
2026-05-02,Invoice 5,Client A,,2500.00,\n\
2026-05-20,Rent May,Landlord LLC,2000.00,,\n\
2026-03-10,Rent Mar,Landlord LLC,2000.00,,\n";

async fn import(app: &TestApp, u: &User, t: &str, body: Value) -> (StatusCode, Value) {
    app.as_(u)
        .tenant(t)
        .post("/api/v1/bookkeeping/import", body)
        .await
}

/// The fixture books; returns the account id.
pub async fn fixture(app: &TestApp, u: &User, t: &str) -> String {
    let (s, acc) = app
        .as_(u)
        .tenant(t)
        .post(
            "/api/v1/bookkeeping/accounts",
            json!({"name": "Checking", "opening_balance": "10000.00"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{acc}");
    let account = acc["id"].as_str().unwrap().to_owned();
    for (pattern, category) in [
        ("client", "Sales"),
        ("landlord", "Rent"),
        ("figma", "Software"),
    ] {
        let (s, v) = app
            .as_(u)
            .tenant(t)
            .post(
                "/api/v1/bookkeeping/rules",
                json!({"field": "counterparty", "pattern": pattern, "category": category}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let de = json!({"csv": BANK_DE, "account_id": account, "mapping": {"counterparty": "Empfänger"}, "date_format": "DD.MM.YYYY"});
    let (s, preview) = import(app, u, t, de.clone()).await;
    assert_eq!(s, StatusCode::OK, "{preview}");
    let r = &preview["report"];
    assert_eq!(
        (
            r["total_rows"].as_u64(),
            r["valid_rows"].as_u64(),
            r["imported"].as_u64()
        ),
        (Some(10), Some(7), Some(0)),
        "{r}"
    );
    let errors: Vec<(u64, &str)> = r["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["line"].as_u64().unwrap(), e["field"].as_str().unwrap()))
        .collect();
    assert_eq!(
        errors,
        vec![(6, "date"), (10, "amount"), (11, "currency")],
        "{r}"
    );
    assert_eq!(r["sample"][2]["amount_minor"], -200_000, "{r}");
    let mut confirm = de.clone();
    confirm["confirm"] = json!(true);
    let (_, done) = import(app, u, t, confirm.clone()).await;
    assert_eq!(done["report"]["imported"], 7, "{done}");
    let (_, again) = import(app, u, t, confirm).await;
    assert_eq!(
        (
            again["report"]["imported"].as_u64(),
            again["report"]["duplicates"].as_u64()
        ),
        (Some(0), Some(7)),
        "{again}"
    );

    let uk = json!({"csv": BANK_UK, "account_id": account, "confirm": true});
    let (s, done) = import(app, u, t, uk).await;
    assert_eq!(s, StatusCode::OK, "{done}");
    assert_eq!(
        (
            done["report"]["imported"].as_u64(),
            done["report"]["duplicates"].as_u64()
        ),
        (Some(6), Some(1)),
        "{done}"
    );
    account
}

fn amount(list: &Value, name: &str) -> i64 {
    list.as_array()
        .unwrap()
        .iter()
        .find(|c| c["category"] == name)
        .map_or(0, |c| c["amount_minor"].as_i64().unwrap())
}

fn check_summary(s: &Value) {
    assert_eq!(s["currency"], "USD");
    assert_eq!(s["period_start"], "2025-12-01");
    assert_eq!(s["revenue_minor"], 550_000, "{s}");
    assert_eq!(s["expenses_minor"], 750_000, "{s}");
    assert_eq!(s["net_minor"], -200_000);
    assert_eq!(amount(&s["expenses_by_category"], "Rent"), 600_000);
    assert_eq!(amount(&s["expenses_by_category"], "Uncategorized"), 150_000);
    assert_eq!(
        amount(&s["expenses_by_category"], "Software"),
        0,
        "a refund cancels the subscription"
    );
    assert_eq!(amount(&s["revenue_by_category"], "Sales"), 550_000);
    assert_eq!(s["expenses_by_category"][0]["category"], "Rent");
    let months: Vec<(&str, i64, i64)> = s["months"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["month"].as_str().unwrap(),
                m["revenue_minor"].as_i64().unwrap(),
                m["expenses_minor"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        months,
        vec![
            ("2025-12", 0, 0),
            ("2026-01", 0, 0),
            ("2026-02", 100_000, 210_000),
            ("2026-03", 100_000, 350_000),
            ("2026-04", 100_000, 190_000),
            ("2026-05", 250_000, 0)
        ]
    );
    assert_eq!(s["cash_balance_minor"], 800_000, "{s}");
    assert_eq!(s["monthly_burn_minor"], 150_000, "{s}");
    assert_eq!(s["runway_months"], 5.3);
    assert_eq!(s["revenue_change_pct"], 0.0);
    assert_eq!(s["expenses_change_pct"], -45.7);
    assert_eq!(s["uncategorized_count"], 1);
}

dual!(
    bank_imports_and_summary_match_hand_computed_figures,
    money_and_bad_input_are_checked,
    books_are_isolated_between_tenants,
);

async fn bank_imports_and_summary_match_hand_computed_figures(app: TestApp) {
    let (u, t) = owner(&app, "bk@a.example").await;
    fixture(&app, &u, &t).await;
    let (s, summary) = app
        .as_(&u)
        .tenant(&t)
        .get("/api/v1/bookkeeping/summary?as_of=2026-05-15&months=6")
        .await;
    assert_eq!(s, StatusCode::OK, "{summary}");
    check_summary(&summary);
    let id = start(
        &app,
        &u,
        &t,
        "bookkeeping.financial_summary",
        json!({"as_of": "2026-05-15", "months": 6}),
    )
    .await;
    let d = wait_status(&app, &u, &t, &id, "succeeded").await;
    check_summary(&d["task"]["result"]);
    assert!(
        d["timeline"].to_string().contains("runway 5.3 months"),
        "{d}"
    );

    // Rules categorised on import; the transfer kept its CSV category.
    let (_, v) = app
        .as_(&u)
        .tenant(&t)
        .get("/api/v1/bookkeeping/transactions?uncategorized=true")
        .await;
    let left: Vec<&str> = v["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["counterparty"].as_str().unwrap())
        .collect();
    assert_eq!(left, ["Ads Co"]);
    let (_, v) = app
        .as_(&u)
        .tenant(&t)
        .get("/api/v1/bookkeeping/transactions?category=Transfer")
        .await;
    assert_eq!(v["transactions"][0]["categorized_by"], "manual");

    // A new rule, then categorise (rules only): Ads Co becomes Marketing.
    let (s, _) = app
        .as_(&u)
        .tenant(&t)
        .post(
            "/api/v1/bookkeeping/rules",
            json!({"pattern": "ads co", "category": "marketing"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, out) = app
        .as_(&u)
        .tenant(&t)
        .post(
            "/api/v1/bookkeeping/categorize",
            json!({"use_model": false}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{out}");
    assert_eq!(
        (
            out["by_rule"].as_u64(),
            out["remaining"].as_u64(),
            out["model_used"].as_bool()
        ),
        (Some(1), Some(0), Some(false)),
        "{out}"
    );
    let (_, s2) = app
        .as_(&u)
        .tenant(&t)
        .get("/api/v1/bookkeeping/summary?as_of=2026-05-15")
        .await;
    assert_eq!(amount(&s2["expenses_by_category"], "Marketing"), 150_000);
    assert_eq!(s2["uncategorized_count"], 0);

    // A person's choice stands against the rules.
    let (_, v) = app
        .as_(&u)
        .tenant(&t)
        .get("/api/v1/bookkeeping/transactions?category=Marketing")
        .await;
    let ads = v["transactions"][0]["id"].as_str().unwrap().to_owned();
    let (s, v) = app
        .as_(&u)
        .tenant(&t)
        .patch(
            &format!("/api/v1/bookkeeping/transactions/{ads}"),
            json!({"category": "Professional services"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, out) = app
        .as_(&u)
        .tenant(&t)
        .post(
            "/api/v1/bookkeeping/categorize",
            json!({"transaction_ids": [ads], "use_model": false}),
        )
        .await;
    assert_eq!(out["considered"], 0, "{out}");
    let (_, v) = app
        .as_(&u)
        .tenant(&t)
        .get(&format!("/api/v1/bookkeeping/transactions/{ads}"))
        .await;
    assert_eq!(v["category"], "Professional services");

    // The capability books through the rules too, and its undo removes it.
    let id = start(
        &app,
        &u,
        &t,
        "bookkeeping.add_transaction",
        json!({"date": "2026-05-03", "amount": "-19.99", "counterparty": "Figma"}),
    )
    .await;
    let d = wait_status(&app, &u, &t, &id, "succeeded").await;
    let r = &d["task"]["result"];
    assert_eq!(
        (r["amount_minor"].as_i64(), r["category"].as_str()),
        (Some(-1999), Some("Software")),
        "{r}"
    );
    let txn = r["transaction_id"].as_str().unwrap().to_owned();
    let (_, v) = app
        .as_(&u)
        .tenant(&t)
        .get(&format!("/api/v1/bookkeeping/transactions/{txn}"))
        .await;
    assert_eq!(v["origin"], format!("task:{id}"));
    let (s, v) = app
        .as_(&u)
        .tenant(&t)
        .post(&format!("/api/v1/tasks/{id}/undo"), json!({}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let undo = v["task"]["id"].as_str().unwrap().to_owned();
    app.as_(&u)
        .tenant(&t)
        .post(&format!("/api/v1/tasks/{undo}/approve"), json!({}))
        .await;
    let d = wait_status(&app, &u, &t, &undo, "succeeded").await;
    assert_eq!(d["task"]["result"]["removed"], true);
    let (s, _) = app
        .as_(&u)
        .tenant(&t)
        .get(&format!("/api/v1/bookkeeping/transactions/{txn}"))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Accounts show their balance; the snapshot has cash and burn.
    let (_, v) = app
        .as_(&u)
        .tenant(&t)
        .get("/api/v1/bookkeeping/accounts")
        .await;
    assert_eq!(
        v["accounts"][0]["balance_minor"], 600_000,
        "every transaction, also after as_of: {v}"
    );
    let (_, m) = app.as_(&u).tenant(&t).get("/api/v1/metrics").await;
    let bk = m["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["module"] == "bookkeeping")
        .unwrap()
        .clone();
    assert!(
        bk["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["key"] == "cash_balance"),
        "{bk}"
    );
}

async fn money_and_bad_input_are_checked(app: TestApp) {
    let (u, t) = owner(&app, "bkbad@a.example").await;
    let post = |body: Value| {
        let (app, u, t) = (&app, &u, &t);
        async move {
            app.as_(u)
                .tenant(t)
                .post("/api/v1/bookkeeping/transactions", body)
                .await
        }
    };
    // The first transaction opens a main account in the company's currency.
    let (s, v) =
        post(json!({"date": "2026-01-05", "amount": "-12.50", "counterparty": "Cafe"})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        (v["amount_minor"].as_i64(), v["currency"].as_str()),
        (Some(-1250), Some("USD"))
    );
    // Typing the same line twice is allowed (two coffees), and they stay distinct.
    let (s, _) =
        post(json!({"date": "2026-01-05", "amount": "-12.50", "counterparty": "Cafe"})).await;
    assert_eq!(s, StatusCode::CREATED);
    for (body, field) in [
        (json!({"date": "2026-01-05", "amount": "-12.505"}), "amount"),
        (json!({"date": "2026-01-05", "amount": "12,5,0"}), "amount"),
        (json!({"date": "2026-01-05", "amount": "0"}), "amount"),
        (
            json!({"date": "2026-01-05", "amount": "1", "currency": "EUR"}),
            "currency",
        ),
        (
            json!({"date": "2026-01-05", "amount": "1", "currency": "ABC"}),
            "currency",
        ),
        (
            json!({"date": "2026-01-05", "amount": "1", "category": "Yachts"}),
            "category",
        ),
        (
            json!({"date": "2026-01-05", "amount": "1", "amount_minor": 100}),
            "amount",
        ),
        (
            json!({"date": "2026-01-05", "amount": "1", "memo": "x".repeat(501)}),
            "memo",
        ),
        // Amounts that would overflow every total they join are refused, not summed.
        (
            json!({"date": "2026-01-05", "amount_minor": i64::MAX}),
            "amount",
        ),
        (
            json!({"date": "2026-01-05", "amount_minor": i64::MIN}),
            "amount",
        ),
        (
            json!({"date": "2026-01-05", "amount": "-100000000000.01"}),
            "amount",
        ),
    ] {
        let (s, v) = post(body.clone()).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {v}");
        assert_eq!(v["error"]["field"], field, "{body}: {v}");
    }
    for body in [
        json!({"date": "2026-02-30", "amount": "1"}),
        json!({"date": "yesterday", "amount": "1"}),
        json!({"amount": 12.5, "date": "2026-01-01"}),
    ] {
        let (s, v) = post(body.clone()).await;
        assert!(s.is_client_error(), "{body}: {s} {v}");
    }
    let (s, v) = app
        .as_(&u)
        .tenant(&t)
        .post(
            "/api/v1/bookkeeping/accounts",
            json!({"name": "Vault", "opening_balance": "99999999999999999"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["field"], "opening_balance", "{v}");
    // The largest amount allowed, twice, still sums exactly in the summary.
    for _ in 0..2 {
        let (s, v) = post(json!({"date": "2026-01-06", "amount": "100000000000.00"})).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let (s, v) = app
        .as_(&u)
        .tenant(&t)
        .get("/api/v1/bookkeeping/summary?as_of=2026-01-31&months=1")
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["revenue_minor"], 20_000_000_000_000i64, "{v}");
    assert_eq!(
        v["cash_balance_minor"],
        20_000_000_000_000i64 - 2_500,
        "{v}"
    );
    // A yen account has no cents.
    let (s, acc) = app
        .as_(&u)
        .tenant(&t)
        .post(
            "/api/v1/bookkeeping/accounts",
            json!({"name": "Tokyo", "currency": "jpy"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{acc}");
    let (s, v) =
        post(json!({"date": "2026-01-05", "amount": "1500.5", "account_id": acc["id"]})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, v) = post(json!({"date": "2026-01-05", "amount": "1500"})).await;
    assert_eq!(
        s,
        StatusCode::UNPROCESSABLE_ENTITY,
        "two accounts: say which: {v}"
    );
    assert_eq!(v["error"]["field"], "account_id");
    // Imports: no amount column, unknown date format, bad decimal separator.
    let (s, v) = app
        .as_(&u)
        .tenant(&t)
        .post(
            "/api/v1/bookkeeping/import",
            json!({"csv": "Date,Payee\n2026-01-01,X\n", "account_id": acc["id"]}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("debit"),
        "{v}"
    );
    let (s, _) = app.as_(&u).tenant(&t).post("/api/v1/bookkeeping/import", json!({"csv": "Date,Amount\n2026-01-01,1\n", "account_id": acc["id"], "date_format": "julian"})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _) = app.as_(&u).tenant(&t).post("/api/v1/bookkeeping/import", json!({"csv": "Date,Amount\n2026-01-01,1\n", "account_id": acc["id"], "decimal_separator": ":"})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    // An oversized upload is refused before it is read: the answer comes while the client
    // is still sending (raw HTTP, since a client that insists on sending the whole body
    // first would see the connection closed under it).
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = app.base.trim_start_matches("http://").to_owned();
        let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "POST /api/v1/bookkeeping/import HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nX-Tenant-Id: {t}\r\nContent-Type: application/json\r\nContent-Length: 10400000\r\n\r\n{{\"csv\": \"Date,Amount\\n",
            u.token
        );
        sock.write_all(head.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), sock.read(&mut buf))
            .await
            .expect("answered before the body was sent")
            .unwrap();
        let answer = String::from_utf8_lossy(&buf[..n]);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(answer.contains("payload_too_large"), "{answer}");
    }
    // Categories in use cannot be removed.
    let (s, v) = post(
        json!({"date": "2026-01-06", "amount": "-5", "category": "meals", "account_id": acc["id"]}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["category"], "Meals");
    let cats = json!({"categories": [{"name": "Sales", "kind": "income"}]});
    let (s, v) = app
        .as_(&u)
        .tenant(&t)
        .put("/api/v1/bookkeeping/categories", cats)
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("Meals"),
        "{v}"
    );
    let (s, _) = app
        .as_(&u)
        .tenant(&t)
        .get("/api/v1/bookkeeping/transactions/txn_00000000000000000000000000000000")
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = app
        .as_(&u)
        .tenant(&t)
        .get("/api/v1/bookkeeping/summary?months=99")
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    // A rule position the next rule's could not follow is refused, and the rules after
    // it still get their place (found by the API fuzzer: this was an overflow panic).
    let rules = app.as_(&u).tenant(&t);
    let (s, v) = rules
        .post(
            "/api/v1/bookkeeping/rules",
            json!({"field": "any", "pattern": "x", "category": "Software", "position": i64::MAX}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["field"], "position", "{v}");
    let (s, v) = rules
        .post(
            "/api/v1/bookkeeping/rules",
            json!({"field": "any", "pattern": "top", "category": "Software", "position": 1_000_000_000}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = rules
        .post(
            "/api/v1/bookkeeping/rules",
            json!({"field": "any", "pattern": "next", "category": "Software"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

async fn books_are_isolated_between_tenants(app: TestApp) {
    let (a, ta) = owner(&app, "bka@a.example").await;
    let (b, tb) = owner(&app, "bkb@b.example").await;
    let account = fixture(&app, &a, &ta).await;
    let (_, v) = app
        .as_(&a)
        .tenant(&ta)
        .get("/api/v1/bookkeeping/transactions")
        .await;
    let txn = v["transactions"][0]["id"].as_str().unwrap().to_owned();
    let (s, _) = app
        .as_(&b)
        .tenant(&tb)
        .get(&format!("/api/v1/bookkeeping/transactions/{txn}"))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = app
        .as_(&b)
        .tenant(&tb)
        .patch(
            &format!("/api/v1/bookkeeping/transactions/{txn}"),
            json!({"category": null}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = app
        .as_(&b)
        .tenant(&tb)
        .delete(&format!("/api/v1/bookkeeping/transactions/{txn}"))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = app
        .as_(&b)
        .tenant(&tb)
        .post(
            "/api/v1/bookkeeping/transactions",
            json!({"date": "2026-01-01", "amount": "1", "account_id": account}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "B cannot book into A's account");
    let (s, _) = app
        .as_(&b)
        .tenant(&tb)
        .post(
            "/api/v1/bookkeeping/import",
            json!({"csv": BANK_UK, "account_id": account, "confirm": true}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, v) = app
        .as_(&b)
        .tenant(&tb)
        .get("/api/v1/bookkeeping/transactions")
        .await;
    assert_eq!(v["transactions"], json!([]));
    let (_, v) = app
        .as_(&b)
        .tenant(&tb)
        .get("/api/v1/bookkeeping/rules")
        .await;
    assert_eq!(v["rules"], json!([]));
    let (_, v) = app
        .as_(&b)
        .tenant(&tb)
        .get("/api/v1/bookkeeping/summary?as_of=2026-05-15")
        .await;
    assert_eq!(v["cash_balance_minor"], 0);
    let id = start(
        &app,
        &b,
        &tb,
        "bookkeeping.remove_transaction",
        json!({"transaction_id": txn}),
    )
    .await;
    let d = wait_status(&app, &b, &tb, &id, "succeeded").await;
    assert_eq!(d["task"]["result"]["removed"], false);
    let (s, _) = app
        .as_(&a)
        .tenant(&ta)
        .get(&format!("/api/v1/bookkeeping/transactions/{txn}"))
        .await;
    assert_eq!(s, StatusCode::OK);
    rls_hides(
        &app,
        &ta,
        &tb,
        &["transactions", "accounts", "category_rules"],
    )
    .await;
}

/// With a model configured, what the rules leave is categorised by the model, which can
/// only answer with the company's own categories.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_categorises_what_rules_leave() {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::method("POST"))
        .respond_with(|req: &Request| {
            let body = String::from_utf8_lossy(&req.body).into_owned();
            let ids: Vec<String> = body
                .match_indices("txn_")
                .map(|(i, _)| body[i..i + 36].to_owned())
                .collect();
            let items = json!({"items": [
                {"id": ids[0], "category": "Meals"},
                {"id": ids[1], "category": "Yachts"},
                {"id": "txn_ffffffffffffffffffffffffffffffff", "category": "Rent"}
            ]});
            ResponseTemplate::new(200).insert_header("content-type", "text/event-stream").set_body_string(sse_body(
                &[delta(&items.to_string()), finish(), json!({"choices": [], "usage": {"prompt_tokens": 80, "completion_tokens": 20}})],
                true,
            ))
        })
        .mount(&server)
        .await;
    let app = crate::llm::upstream_app(&server, |_| {}).await;
    let (u, t) = owner(&app, "bkmodel@a.example").await;
    for cp in ["Trattoria Roma", "Harbour Marina"] {
        let (s, v) = app
            .as_(&u)
            .tenant(&t)
            .post(
                "/api/v1/bookkeeping/transactions",
                json!({"date": "2026-03-01", "amount": "-80", "counterparty": cp}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let id = start(&app, &u, &t, "bookkeeping.categorize", json!({})).await;
    let d = wait_status(&app, &u, &t, &id, "succeeded").await;
    let r = &d["task"]["result"];
    assert_eq!(
        (
            r["considered"].as_u64(),
            r["by_model"].as_u64(),
            r["remaining"].as_u64()
        ),
        (Some(2), Some(1), Some(1)),
        "{r}"
    );
    let (_, v) = app
        .as_(&u)
        .tenant(&t)
        .get("/api/v1/bookkeeping/transactions?category=Meals")
        .await;
    assert_eq!(v["transactions"][0]["categorized_by"], "model");
    let (_, usage) = app.as_(&u).tenant(&t).get("/api/v1/usage").await;
    assert!(
        usage.to_string().contains("bookkeeping"),
        "the model call is metered: {usage}"
    );
}
