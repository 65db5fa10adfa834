//! Feature-flag evaluation: what one check costs server code (`Flags::enabled`, the
//! process's local copy, no database). 100 flags in beta with targeting lists and a
//! rollout percentage; checks cycle over 10,000 companies. Target: ≤ 1 µs per check.

use std::time::Instant;

use ocsuite::flags::{FlagIn, Stage, Subject};
use ocsuite_bench_tasks::{Res, Server, backend, env_num};

#[tokio::main]
async fn main() -> Res<()> {
    let checks = env_num("BENCH_FLAG_CHECKS", 5_000_000);
    let server = Server::start(|_| {}).await?;
    let state = server.state.clone();
    let mut tx = state.store.platform().await?;
    for i in 0..100 {
        let flag = FlagIn {
            description: String::new(),
            stage: Stage::Beta,
            killed: false,
            rollout_percent: 30,
            users: (0..20).map(|u| format!("usr_{u:032x}")).collect(),
            tenants: (0..50).map(|t| format!("ten_{t:032x}")).collect(),
            plans: vec!["enterprise".into()],
        };
        ocsuite::flags::put(&mut tx, &format!("flag-{i}"), &flag, "bench").await?;
    }
    tx.commit().await?;
    state.flags.reload(&state.store).await?;
    let tenants: Vec<String> = (0..10_000)
        .map(|_| ocsuite::ids::TenantId::new().to_string())
        .collect();
    let keys: Vec<String> = (0..100).map(|i| format!("flag-{i}")).collect();
    let mut on = 0usize;
    let t0 = Instant::now();
    for i in 0..checks {
        let s = Subject {
            user: Some("usr_ffffffffffffffffffffffffffffffff"),
            tenant: Some(&tenants[i % tenants.len()]),
            plan: Some("pro"),
        };
        on += usize::from(state.flags.enabled(&keys[i % keys.len()], &s));
    }
    let ns = t0.elapsed().as_nanos() as f64 / checks as f64;
    println!(
        "flag bench ({}), {checks} checks over 100 flags and 10,000 companies",
        backend()
    );
    println!(
        "one check: {ns:.0} ns ({:.1}% on; target <= 1000 ns)",
        on as f64 * 100.0 / checks as f64
    );
    let ok = ns <= 1000.0;
    println!("target: {}", if ok { "met" } else { "MISSED" });
    server.stop().await;
    if !ok && std::env::var("BENCH_ENFORCE").is_ok() {
        std::process::exit(1);
    }
    Ok(())
}
