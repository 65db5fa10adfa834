//! Board meetings: the offline meeting end to end, a meeting against a fake upstream
//! (positions, a failing member, synthesis, action items repaired after a malformed
//! first answer), bad input, ratings and isolation.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::chat::{assert_prose, list_lines, parse_sse};
use crate::dual;
use crate::helpers::{Db, TestApp, User};
use crate::llm::{delta, finish, sse_body};
use crate::tasks::owner;

/// Holds a meeting; returns the status and its SSE events once the stream ends.
pub async fn meeting(
    app: &TestApp,
    u: &User,
    t: &str,
    body: Value,
) -> (StatusCode, Vec<(String, Value)>) {
    let res = app
        .http
        .post(app.url("/api/v1/c-suite/board-meeting"))
        .bearer_auth(&u.token)
        .header("x-tenant-id", t)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status();
    let text = tokio::time::timeout(Duration::from_secs(60), res.text())
        .await
        .expect("meeting never ended")
        .unwrap();
    if !status.is_success() {
        return (
            status,
            vec![(
                "body".into(),
                serde_json::from_str(&text).unwrap_or(Value::Null),
            )],
        );
    }
    (status, parse_sse(&text))
}

pub fn find<'a>(evs: &'a [(String, Value)], name: &str) -> Vec<&'a Value> {
    evs.iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v)
        .collect()
}

pub async fn detail(app: &TestApp, u: &User, t: &str, id: &str) -> Value {
    let (s, v) = app
        .as_(u)
        .tenant(t)
        .get(&format!("/api/v1/board-meetings/{id}"))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

dual!(
    interrupted_meetings_are_closed,
    offline_meeting_streams_stores_and_proposes,
    offline_meeting_reads_as_prose,
    meeting_input_is_checked,
    meetings_are_isolated_and_rated
);

async fn offline_meeting_streams_stores_and_proposes(app: TestApp) {
    let (u, t) = owner(&app, "chair@acme.test").await;
    let (s, evs) = meeting(
        &app,
        &u,
        &t,
        json!({"agenda": "Should we raise prices by 10%?", "rounds": 2}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"meeting_start"), "{names:?}");
    assert_eq!(names.last(), Some(&"meeting_end"), "{names:?}");
    let start = find(&evs, "meeting_start")[0];
    assert_eq!(start["offline"], true);
    let slugs: Vec<&str> = start["personas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, ["ceo", "cfo", "cmo"]);
    // Two rounds of three turns, each started and ended, with deltas by persona.
    assert_eq!(find(&evs, "turn_start").len(), 6);
    let ends = find(&evs, "turn_end");
    assert_eq!(ends.len(), 6);
    assert!(ends.iter().all(|e| e["status"] == "complete"), "{ends:?}");
    for p in ["ceo", "cfo", "cmo"] {
        assert!(
            find(&evs, "delta").iter().any(|d| d["persona"] == p),
            "no delta from {p}"
        );
    }
    let chair_text: String = find(&evs, "delta")
        .iter()
        .filter(|d| d["persona"] == "chair")
        .map(|d| d["text"].as_str().unwrap())
        .collect();
    assert!(chair_text.contains("Offline mode"), "{chair_text}");
    assert!(
        names.iter().position(|n| *n == "synthesis_start")
            > names.iter().rposition(|n| *n == "turn_end")
    );
    let items = find(&evs, "action_items")[0]["items"]
        .as_array()
        .unwrap()
        .clone();
    assert!(items.len() >= 2, "{items:?}");
    let runnable = items
        .iter()
        .find(|i| i["capability"] == "diagnostics.echo")
        .unwrap();
    assert_eq!(runnable["task_status"], "proposed");
    assert!(
        items
            .iter()
            .any(|i| i["task_id"].is_null() && i["capability"].is_null()),
        "a follow-up"
    );
    let end = find(&evs, "meeting_end")[0];
    let id = end["meeting_id"].as_str().unwrap().to_owned();
    assert!(
        end["usage"]["by_persona"]["cfo"]["completion_tokens"]
            .as_u64()
            .unwrap()
            > 0,
        "{end}"
    );
    assert!(end["overhead_ms"].as_f64().unwrap() >= 0.0);

    // The same run a second time gives the same positions (deterministic offline).
    let (_, again) = meeting(
        &app,
        &u,
        &t,
        json!({"agenda": "Should we raise prices by 10%?", "rounds": 2}),
    )
    .await;
    let text = |evs: &[(String, Value)], p: &str| -> String {
        find(evs, "delta")
            .iter()
            .filter(|d| d["persona"] == p)
            .map(|d| d["text"].as_str().unwrap())
            .collect()
    };
    assert_eq!(text(&evs, "cfo"), text(&again, "cfo"));

    // Stored: transcript (6 turns + synthesis), items with their task's live state.
    let d = detail(&app, &u, &t, &id).await;
    assert_eq!(d["meeting"]["status"], "complete");
    assert_eq!(d["meeting"]["offline"], true);
    assert_eq!(d["transcript"].as_array().unwrap().len(), 7);
    assert_eq!(d["transcript"][6]["round"], 0);
    assert!(
        d["meeting"]["synthesis"]
            .as_str()
            .unwrap()
            .contains("Offline mode")
    );
    let task_id = d["action_items"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|i| i["task_id"].as_str())
        .unwrap()
        .to_owned();
    let (_, task) = app
        .as_(&u)
        .tenant(&t)
        .get(&format!("/api/v1/tasks/{task_id}"))
        .await;
    assert_eq!(task["task"]["status"], "proposed");
    assert_eq!(task["task"]["meeting_id"], id.as_str());
    // A proposed task does not run by itself.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, task) = app
        .as_(&u)
        .tenant(&t)
        .get(&format!("/api/v1/tasks/{task_id}"))
        .await;
    assert_eq!(task["task"]["status"], "proposed");

    // Approve; the outcome shows in the meeting.
    let (s, v) = app
        .as_(&u)
        .tenant(&t)
        .post(
            &format!("/api/v1/tasks/{task_id}/approve"),
            json!({"rationale": "harmless"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["decision_rationale"], "harmless");
    crate::tasks::wait_status(&app, &u, &t, &task_id, "succeeded").await;
    let d = detail(&app, &u, &t, &id).await;
    let item = d["action_items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["task_id"] == task_id.as_str())
        .unwrap();
    assert_eq!(item["task_status"], "succeeded");

    let (s, v) = app.as_(&u).tenant(&t).get("/api/v1/board-meetings").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["meetings"].as_array().unwrap().len(), 2);
    let (s, v) = app.as_(&u).tenant(&t).get("/api/v1/usage").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        v.to_string().contains("cmo"),
        "meeting usage is in the ledger: {v}"
    );
}

/// Every turn and the synthesis of an offline meeting read as short prose with
/// Markdown lists, never as the prompt they answer.
async fn offline_meeting_reads_as_prose(app: TestApp) {
    let (u, t) = owner(&app, "prose@acme.test").await;
    // Longer than the turns quote, so the quote has to be cut, at a word boundary.
    let agenda = "Should we raise prices by 10% in January, given that our largest customers \
                  renew in the spring and two competitors cut their prices last quarter?";
    let (s, evs) = meeting(
        &app,
        &u,
        &t,
        json!({"agenda": agenda, "context": "We sell to schools.", "rounds": 2}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{evs:?}");
    let id = find(&evs, "meeting_end")[0]["meeting_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let d = detail(&app, &u, &t, &id).await;
    let turns = d["transcript"].as_array().unwrap();
    assert_eq!(turns.len(), 7);
    for turn in turns {
        let text = turn["content"].as_str().unwrap();
        assert_prose(text, agenda);
        assert!(!list_lines(text).is_empty(), "no list in: {text}");
        assert!(!text.contains("We sell to schools"), "{text}");
    }
    let position = turns[0]["content"].as_str().unwrap();
    assert!(
        position.contains("\"Should we raise prices by 10%"),
        "{position}"
    );
    assert!(
        position.contains("…\""),
        "the long agenda is cut: {position}"
    );
    let answer = turns[3]["content"].as_str().unwrap();
    assert!(
        answer.contains("Having heard the CFO and the CMO"),
        "{answer}"
    );

    let synthesis = d["meeting"]["synthesis"].as_str().unwrap();
    assert_eq!(synthesis, turns[6]["content"].as_str().unwrap());
    assert!(synthesis.contains("OCSUITE_LLM_API_KEY"), "{synthesis}");
    assert!(synthesis.contains("**Decision:**"), "{synthesis}");
    let steps = list_lines(synthesis);
    for who in ["CEO", "CFO", "CMO"] {
        assert!(
            steps.iter().any(|l| l.starts_with(&format!("- {who}: "))),
            "{synthesis}"
        );
    }
    // The items quote the agenda whole-word too.
    for item in d["action_items"].as_array().unwrap() {
        let title = item["title"].as_str().unwrap();
        if let Some(quoted) = title.split('"').nth(1) {
            let core = quoted.strip_suffix('…').unwrap_or(quoted);
            let rest = agenda.strip_prefix(core).expect(title);
            assert!(rest.is_empty() || rest.starts_with(' '), "{title}");
        }
    }
}

async fn meeting_input_is_checked(app: TestApp) {
    let (u, t) = owner(&app, "chair@acme.test").await;
    for (body, code) in [
        (json!({"agenda": "   "}), "empty_agenda"),
        (
            json!({"agenda": "x", "personas": ["ceo", "janitor"]}),
            "unknown_persona",
        ),
        (
            json!({"agenda": "x", "personas": ["ceo", "ceo"]}),
            "duplicate_member",
        ),
        (json!({"agenda": "x", "personas": []}), "no_members"),
        (
            json!({"agenda": "x", "personas": ["a", "b", "c", "d", "e", "f", "g", "h", "i"]}),
            "too_many_members",
        ),
        (json!({"agenda": "x", "rounds": 3}), "invalid_rounds"),
        (json!({"agenda": "x".repeat(5000)}), "agenda_too_long"),
        (json!({"agenda": "x", "chair": "nobody"}), "unknown_persona"),
    ] {
        let (s, evs) = meeting(&app, &u, &t, body.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(evs[0].1["error"]["code"], code, "{body}: {:?}", evs[0].1);
    }
    let (s, _) = meeting(&app, &u, &t, json!({"agenda": 5})).await;
    assert!(s.is_client_error());
    let res = app
        .http
        .post(app.url("/api/v1/c-suite/board-meeting"))
        .bearer_auth(&u.token)
        .header("x-tenant-id", &t)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    // Nothing was stored by refused meetings.
    let (_, v) = app.as_(&u).tenant(&t).get("/api/v1/board-meetings").await;
    assert_eq!(v["meetings"].as_array().unwrap().len(), 0);
    // A viewer cannot call a meeting.
    let viewer = app.signup("v@acme.test").await;
    app.add_member(&u, &t, &viewer, "viewer").await;
    let (s, _) = meeting(&app, &viewer, &t, json!({"agenda": "x"})).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // A custom agent can sit.
    let (s, v) = app.as_(&u).tenant(&t).post("/api/v1/agents", json!({"slug": "coach", "name": "Coach", "title": "Sales coach", "instructions": "Push for more calls."}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, evs) = meeting(
        &app,
        &u,
        &t,
        json!({"agenda": "Q3 sales push", "personas": ["cfo", "coach"]}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(find(&evs, "delta").iter().any(|d| d["persona"] == "coach"));
    assert_eq!(find(&evs, "meeting_end").len(), 1);
}

async fn meetings_are_isolated_and_rated(app: TestApp) {
    let (ann, a) = owner(&app, "ann@a.test").await;
    let (bob, b) = owner(&app, "bob@b.test").await;
    let (_, evs) = meeting(&app, &ann, &a, json!({"agenda": "Open a second shop?"})).await;
    let id = find(&evs, "meeting_end")[0]["meeting_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let d = detail(&app, &ann, &a, &id).await;
    let task_id = d["action_items"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|i| i["task_id"].as_str())
        .unwrap()
        .to_owned();

    let (s, _) = app
        .as_(&bob)
        .tenant(&b)
        .get(&format!("/api/v1/board-meetings/{id}"))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = app
        .as_(&bob)
        .tenant(&b)
        .post(
            &format!("/api/v1/board-meetings/{id}/rating"),
            json!({"rating": 1}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = app
        .as_(&bob)
        .tenant(&b)
        .post(&format!("/api/v1/tasks/{task_id}/approve"), json!({}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, v) = app.as_(&bob).tenant(&b).get("/api/v1/approvals").await;
    assert_eq!(v["approvals"].as_array().unwrap().len(), 0);
    let (_, v) = app.as_(&bob).tenant(&b).get("/api/v1/board-meetings").await;
    assert_eq!(v["meetings"].as_array().unwrap().len(), 0);

    let (s, v) = app
        .as_(&ann)
        .tenant(&a)
        .post(
            &format!("/api/v1/board-meetings/{id}/rating"),
            json!({"rating": 6}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, _) = app
        .as_(&ann)
        .tenant(&a)
        .post(
            &format!("/api/v1/board-meetings/{id}/rating"),
            json!({"rating": 4, "comment": "sharp CFO"}),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let d = detail(&app, &ann, &a, &id).await;
    assert_eq!(d["meeting"]["rating"], 4);
    assert_eq!(d["meeting"]["rating_comment"], "sharp CFO");
    let (s, _) = app
        .as_(&ann)
        .tenant(&a)
        .get("/api/v1/board-meetings/mtg_nope")
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    if app.config.is_sqlite() {
        return;
    }
    // Raw SQL under RLS: B's scope sees none of A's meeting rows.
    use sqlx::{Connection, PgConnection};
    let mut rt = PgConnection::connect(&app.config.database_url)
        .await
        .unwrap();
    let mut tx = rt.begin().await.unwrap();
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(&b)
        .execute(&mut *tx)
        .await
        .unwrap();
    for table in ["meetings", "meeting_turns", "action_items"] {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {table} WHERE tenant_id = $1"
        )))
        .bind(&a)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        assert_eq!(n, 0, "{table}");
    }
}

/// A meeting against a fake OpenAI-compatible upstream: the CMO's call fails, the rest
/// speak, the chair notes the absence, and the action items come back malformed once
/// and are repaired by the re-ask.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_meeting_survives_a_failed_member_and_repairs_items() {
    let server = MockServer::start().await;
    let sse = |text: &str| {
        ResponseTemplate::new(200)
            .insert_header("content-type", "text/event-stream")
            .set_body_string(sse_body(
                &[
                    delta(text),
                    finish(),
                    json!({"choices": [], "usage": {"prompt_tokens": 50, "completion_tokens": 10}}),
                ],
                true,
            ))
    };
    let items = json!({"items": [
        {"title": "Check the pipeline", "description": "Run the connector check", "owner": "cfo",
         "capability": "diagnostics.echo", "input_json": "{\"note\": \"from the board\"}", "priority": "high",
         "due_date": "2026-12-15", "expected_impact": "clarity"},
        {"title": "Call the bank", "description": "Ask for a credit line", "owner": "ceo",
         "capability": null, "input_json": null, "priority": "medium", "due_date": null, "expected_impact": "runway"}
    ]});
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_string_contains("response_format"))
        .respond_with(sse("Sure! Here are the items: {\"items\": [{\"title\": "))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_string_contains("response_format"))
        .respond_with(sse(&items.to_string()))
        .with_priority(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_string_contains("You chair this board meeting"))
        .respond_with(sse(
            "Decision: hire one engineer. Dissent: none. Risks: burn.",
        ))
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_string_contains("You speak as the CMO"))
        .respond_with(ResponseTemplate::new(500).set_body_string("boom"))
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(sse("My position: hire carefully."))
        .with_priority(5)
        .mount(&server)
        .await;
    let uri = server.uri();
    let app = TestApp::start_with(Db::Sqlite, |c| {
        c.llm_base_url = format!("{uri}/v1");
        c.llm_api_key = Some(ocsuite::config::Secret::new("sk-test"));
        c.llm_model = "qwen3-test".into();
        c.llm_max_retries = 0;
    })
    .await
    .unwrap();
    let (u, t) = owner(&app, "chair@acme.test").await;
    // The capability must be offered to the model: diagnostics is hidden from the
    // prompt, but items naming it are still accepted when valid.
    let (s, evs) = meeting(&app, &u, &t, json!({"agenda": "Hire an engineer?"})).await;
    assert_eq!(s, StatusCode::OK);
    let errors = find(&evs, "error");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["persona"], "cmo");
    let ends = find(&evs, "turn_end");
    assert_eq!(ends.iter().filter(|e| e["status"] == "failed").count(), 1);
    assert_eq!(
        ends.iter().find(|e| e["persona"] == "cfo").unwrap()["usage"]["prompt_tokens"],
        50
    );
    let items = &find(&evs, "action_items")[0];
    assert!(items["error"].is_null(), "{items}");
    let items = items["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["task_status"], "proposed");
    assert_eq!(items[0]["input"], json!({"note": "from the board"}));
    assert!(items[1]["task_id"].is_null());
    assert_eq!(find(&evs, "meeting_end").len(), 1);

    let requests = server.received_requests().await.unwrap();
    let bodies: Vec<String> = requests
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    let synthesis = bodies
        .iter()
        .find(|b| b.contains("You chair this board meeting"))
        .unwrap();
    assert!(
        synthesis.contains("Could not take part (their turn failed): CMO"),
        "{synthesis}"
    );
    let asks: Vec<&String> = bodies
        .iter()
        .filter(|b| b.contains("response_format"))
        .collect();
    assert_eq!(asks.len(), 2, "one re-ask");
    assert!(asks[0].contains("json_schema") && asks[0].contains("\"strict\":true"));
    assert!(asks[1].contains("That answer is not valid"));

    let id = find(&evs, "meeting_end")[0]["meeting_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let d = detail(&app, &u, &t, &id).await;
    assert_eq!(d["meeting"]["offline"], false);
    let failed: Vec<&Value> = d["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["status"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["persona"], "cmo");
}

/// When the re-ask is malformed too, no item is stored and the meeting says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrepairable_items_are_not_stored() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_string_contains("response_format"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "text/event-stream")
                .set_body_string(sse_body(
                    &[delta("{\"items\": [{\"title\": 1}]}"), finish()],
                    true,
                )),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "text/event-stream")
                .set_body_string(sse_body(&[delta("Fine."), finish()], true)),
        )
        .with_priority(5)
        .mount(&server)
        .await;
    let uri = server.uri();
    let app = TestApp::start_with(Db::Sqlite, |c| {
        c.llm_base_url = format!("{uri}/v1");
        c.llm_api_key = Some(ocsuite::config::Secret::new("sk-test"));
        c.llm_max_retries = 0;
    })
    .await
    .unwrap();
    let (u, t) = owner(&app, "chair@acme.test").await;
    let (_, evs) = meeting(
        &app,
        &u,
        &t,
        json!({"agenda": "Anything?", "personas": ["cfo"]}),
    )
    .await;
    let items = find(&evs, "action_items")[0];
    assert_eq!(items["items"], json!([]));
    assert!(
        items["error"].as_str().unwrap().contains("after a retry"),
        "{items}"
    );
    let id = find(&evs, "meeting_end")[0]["meeting_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let d = detail(&app, &u, &t, &id).await;
    assert_eq!(d["action_items"], json!([]));
    assert!(
        d["meeting"]["error"]
            .as_str()
            .unwrap()
            .contains("valid action items")
    );
}

async fn interrupted_meetings_are_closed(app: TestApp) {
    let (u, t) = owner(&app, "chair@acme.test").await;
    let (_, evs) = meeting(
        &app,
        &u,
        &t,
        json!({"agenda": "Fresh one", "personas": ["cfo"]}),
    )
    .await;
    let done = find(&evs, "meeting_end")[0]["meeting_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // A meeting a crashed server left running an hour ago.
    let tenant = ocsuite::ids::TenantId::parse(&t).unwrap();
    let stale = ocsuite::ids::MeetingId::new();
    let mut tx = app.state.store.tenant(&tenant).await.unwrap();
    tx.execute(
        ocsuite::store::sql("INSERT INTO meetings (tenant_id, id, agenda, personas, rounds, chair, status, offline, prompt_tokens, completion_tokens, created_by, created_at) \
                             VALUES ($1, $2, 'Cut off', '[\"cfo\"]', 1, 'ceo', 'running', FALSE, 0, 0, 'user:x', $3)")
            .bind(&tenant)
            .bind(&stale)
            .bind(chrono::Utc::now() - chrono::Duration::hours(1)),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        ocsuite::board::fail_stale(&app.state.store).await.unwrap(),
        1
    );
    let d = detail(&app, &u, &t, stale.as_str()).await;
    assert_eq!(d["meeting"]["status"], "failed");
    assert!(
        d["meeting"]["error"]
            .as_str()
            .unwrap()
            .contains("interrupted")
    );
    assert_eq!(
        detail(&app, &u, &t, &done).await["meeting"]["status"],
        "complete"
    );
    assert_eq!(
        ocsuite::board::fail_stale(&app.state.store).await.unwrap(),
        0
    );
}
