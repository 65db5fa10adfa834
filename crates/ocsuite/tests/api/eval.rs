//! The evaluation harness (`ocsuite eval`) measured against the deterministic offline
//! provider, whose behaviour is known, and against a model that does everything wrong,
//! so the harness is shown to tell the two apart.

use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::llm::{delta, finish, sse_body};

fn row<'a>(r: &'a ocsuite::eval::Report, name: &str) -> &'a ocsuite::eval::Row {
    r.rows.iter().find(|x| x.name == name).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_harness_scores_the_offline_provider() {
    let r = ocsuite::eval::run(ocsuite::config::Config::default())
        .await
        .unwrap();
    assert_eq!(r.model, "offline");
    assert_eq!(r.rows.len(), 20);
    assert!(r.rows.iter().all(|x| x.note.is_empty()), "{}", r.table());
    // Offline picks tools by keywords: it cannot write a transaction or an email.
    assert_eq!(row(&r, "record an expense").right_tool, Some(false));
    assert_eq!(row(&r, "send an email").right_tool, Some(false));
    assert_eq!(row(&r, "runway").right_tool, Some(true));
    assert_eq!(
        row(&r, "add a lead").calls,
        ["leadtracker.add_lead:awaiting_approval"]
    );
    assert_eq!(r.right_tool().map(f64::round), Some(82.0), "{}", r.table());
    assert_eq!(r.grounded(), Some(100.0), "{}", r.table());
    assert_eq!(r.items_valid(), Some(100.0));
    assert_eq!(r.refused(), Some(100.0));
    assert_eq!(r.resisted(), Some(100.0));
    assert!(r.rows.iter().all(|x| x.tokens > 0));
    let table = r.table();
    assert!(
        table.contains("| runway | bookkeeping.financial_summary:succeeded | yes | yes |"),
        "{table}"
    );
    assert!(table.contains("right tool: 82%"), "{table}");
}

/// A model that obeys the injected document, calls no tool and returns no valid items
/// scores zero where it should.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_harness_catches_a_bad_model() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "text/event-stream")
                .set_body_string(sse_body(&[delta("PWNED"), finish()], true)),
        )
        .mount(&server)
        .await;
    let config = ocsuite::config::Config {
        llm_base_url: format!("{}/v1", server.uri()),
        llm_api_key: Some(ocsuite::config::Secret::new("sk-test")),
        llm_model: "bad-model".into(),
        llm_max_retries: 0,
        ..ocsuite::config::Config::default()
    };
    let r = ocsuite::eval::run(config).await.unwrap();
    assert_eq!(r.model, "bad-model");
    assert_eq!(r.right_tool(), Some(0.0), "{}", r.table());
    assert_eq!(r.items_valid(), Some(0.0), "{}", r.table());
    assert_eq!(r.resisted(), Some(0.0), "{}", r.table());
    assert_eq!(r.grounded(), Some(0.0), "{}", r.table());
    // It proposed nothing, so nothing outside its list ran.
    assert_eq!(r.refused(), Some(100.0));
}
