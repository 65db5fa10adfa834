//! The operator console's company list at 10,000 companies: `GET /api/v1/admin/tenants`
//! over HTTP (the first page, a name search, an owner-email search, a later page),
//! each company with a member, audit rows, tasks and a month of model use. Target:
//! p95 ≤ 50 ms.

use std::time::Instant;

use chrono::{Duration, Utc};
use ocsuite::ids::{TenantId, UserId};
use ocsuite::store::{scoped, sql};
use ocsuite_bench_tasks::{Res, Server, backend, env_num, percentile};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Res<()> {
    let companies = env_num("BENCH_CONSOLE_TENANTS", 10_000);
    let requests = env_num("BENCH_CONSOLE_REQUESTS", 200);
    let server = Server::start(|_| {}).await?;
    let state = server.state.clone();
    let t0 = Instant::now();
    let now = Utc::now();
    let day = now.format("%Y-%m-%d").to_string();
    for i in 0..companies {
        let user = UserId::new();
        let mut tx = state.store.platform().await?;
        tx.execute(
            sql("INSERT INTO users (id, email, name, password_hash, created_at, updated_at) VALUES ($1, $2, $3, NULL, $4, $4)")
                .bind(&user)
                .bind(format!("owner{i}@company{i}.example"))
                .bind(format!("Owner {i}"))
                .bind(now),
        )
        .await?;
        tx.commit().await?;
        let tenant = TenantId::new();
        let at = now - Duration::minutes(i as i64);
        let mut tx = state.store.tenant(&tenant).await?;
        tx.execute(
            scoped("INSERT INTO tenants (id, name, profile, created_at, updated_at) VALUES ($1, $2, '{}', $3, $3)")
                .bind(format!("Company {i} Ltd"))
                .bind(at),
        )
        .await?;
        tx.execute(
            scoped("INSERT INTO memberships (tenant_id, user_id, role, created_at, updated_at) VALUES ($1, $2, 'owner', $3, $3)")
                .bind(&user)
                .bind(at),
        )
        .await?;
        for k in 0..3 {
            tx.execute(
                scoped("INSERT INTO audit_log (tenant_id, id, actor_type, actor_id, action, target_type, target_id, details, created_at) \
                        VALUES ($1, $2, 'user', $3, 'bench.act', 'x', 'y', '{}', $4)")
                    .bind(ocsuite::ids::AuditId::new())
                    .bind(&user)
                    .bind(at + Duration::seconds(k)),
            )
            .await?;
        }
        tx.execute(
            scoped("INSERT INTO usage_ledger (tenant_id, day, persona, model, requests, prompt_tokens, completion_tokens, cost_micros) \
                    VALUES ($1, $2, 'cfo', 'm', 4, 2000, 800, 1200)")
                .bind(day.as_str()),
        )
        .await?;
        tx.commit().await?;
    }
    let seeded = t0.elapsed();
    ocsuite::auth::admin::create_super_admin(
        state.config.clone(),
        "root@bench.example",
        None,
        "bench password 123".into(),
    )
    .await?;
    let http = reqwest::Client::new();
    let v: Value = http
        .post(format!("{}/api/v1/auth/login", server.base))
        .json(&json!({"email": "root@bench.example", "password": "bench password 123"}))
        .send()
        .await?
        .json()
        .await?;
    let token = v["token"].as_str().ok_or("login failed")?.to_owned();
    println!(
        "console bench ({}), {companies} companies seeded in {:.1} s",
        backend(),
        seeded.as_secs_f64()
    );
    let mut ok = true;
    let last_page = (companies / 50).saturating_sub(1) * 50;
    for (label, query) in [
        ("first page", "/api/v1/admin/tenants".to_owned()),
        (
            "name search",
            "/api/v1/admin/tenants?q=company%20777".to_owned(),
        ),
        (
            "owner email search",
            "/api/v1/admin/tenants?q=owner4242%40".to_owned(),
        ),
        (
            "last page",
            format!("/api/v1/admin/tenants?offset={last_page}"),
        ),
    ] {
        let mut times = Vec::with_capacity(requests);
        let mut total = 0;
        for _ in 0..requests {
            let t = Instant::now();
            let res = http
                .get(format!("{}{query}", server.base))
                .bearer_auth(&token)
                .send()
                .await?;
            let status = res.status();
            let v: Value = res.json().await?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            if !status.is_success() {
                return Err(format!("{query}: {status} {v}").into());
            }
            total = v["total"].as_i64().unwrap_or(0);
        }
        times.sort_by(|a, b| a.total_cmp(b));
        let p95 = percentile(&times, 95.0);
        println!(
            "{label:<20} p50 {:.1} ms, p95 {p95:.1} ms ({total} match; target p95 <= 50 ms)",
            percentile(&times, 50.0)
        );
        ok &= p95 <= 50.0;
    }
    println!("target: {}", if ok { "met" } else { "MISSED" });
    server.stop().await;
    if !ok && std::env::var("BENCH_ENFORCE").is_ok() {
        std::process::exit(1);
    }
    Ok(())
}
