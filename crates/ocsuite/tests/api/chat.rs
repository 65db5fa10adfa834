//! Chat with personas through the offline provider: streaming, persistence, ratings,
//! usage, bad input, isolation, and the agent builder. Upstream behaviour is in llm.rs.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::dual;
use crate::helpers::{TestApp, User};
use crate::tasks::owner;

/// Sends a chat message; returns the SSE events as (name, data) once the stream ends.
pub async fn chat(
    app: &TestApp,
    u: &User,
    t: &str,
    persona: &str,
    body: Value,
) -> (StatusCode, Vec<(String, Value)>) {
    let res = app
        .http
        .post(app.url(&format!("/api/v1/c-suite/{persona}/chat")))
        .bearer_auth(&u.token)
        .header("x-tenant-id", t)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status();
    let text = tokio::time::timeout(Duration::from_secs(30), res.text())
        .await
        .expect("stream never ended")
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

pub fn parse_sse(text: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for frame in text.split("\n\n") {
        let mut name = String::from("message");
        let mut data = None;
        for line in frame.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                name = v.trim().to_owned();
            }
            if let Some(v) = line.strip_prefix("data:") {
                data = serde_json::from_str::<Value>(v.trim()).ok();
            }
        }
        if let Some(d) = data {
            out.push((name, d));
        }
    }
    out
}

pub fn names(evs: &[(String, Value)]) -> Vec<&str> {
    evs.iter().map(|(n, _)| n.as_str()).collect()
}

pub fn text_of(evs: &[(String, Value)]) -> String {
    evs.iter()
        .filter(|(n, _)| n == "delta")
        .map(|(_, d)| d["text"].as_str().unwrap_or_default())
        .collect()
}

/// Offline text reads as prose, not as its prompt: no `<tag>` markers, no `###` or
/// `## ` headings, one offline notice, and every quote of `source` (the question or
/// agenda) ends on a whole word of it.
pub fn assert_prose(text: &str, source: &str) {
    let tag = text.char_indices().find(|&(i, c)| {
        c == '<' && text[i + 1..].starts_with(|n: char| n.is_ascii_alphabetic() || n == '/')
    });
    assert!(tag.is_none(), "a <tag> marker in: {text}");
    assert!(!text.contains("###"), "a prompt heading in: {text}");
    assert!(!text.lines().any(|l| l.starts_with("## ")), "{text}");
    assert_eq!(text.matches("Offline mode").count(), 1, "{text}");
    for quote in text.split('"').skip(1).step_by(2) {
        let core = quote.strip_suffix('…').unwrap_or(quote);
        if let Some(rest) = source.strip_prefix(core) {
            assert!(
                rest.is_empty() || rest.starts_with(char::is_whitespace),
                "{quote:?} cuts {source:?} mid-word"
            );
            assert_eq!(
                rest.is_empty(),
                core == quote,
                "a cut quote ends with …: {quote:?}"
            );
        }
    }
}

/// The lines of `text` that are Markdown list items.
pub fn list_lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| l.starts_with("- ")).collect()
}

pub async fn detail(app: &TestApp, u: &User, t: &str, conversation: &str) -> Value {
    let (s, v) = app
        .as_(u)
        .tenant(t)
        .get(&format!("/api/v1/conversations/{conversation}"))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

dual!(
    offline_provider_answers_end_to_end,
    offline_answers_read_as_prose,
    bad_input_and_isolation
);

async fn offline_answers_read_as_prose(app: TestApp) {
    let (u, t) = owner(&app, "prose@x.example").await;
    // Longer than the answer quotes, so the quote has to be cut, at a word boundary.
    let question = "How long is our runway if we hire two engineers in January and a \
                    salesperson in March, keeping the office and the current marketing budget?";
    let (s, evs) = chat(&app, &u, &t, "cfo", json!({"message": question})).await;
    assert_eq!(s, StatusCode::OK);
    let answer = text_of(&evs);
    assert_prose(&answer, question);
    assert!(
        answer.contains("\"How long is our runway if we hire"),
        "{answer}"
    );
    assert!(answer.contains("…\""), "the long question is cut: {answer}");
    // The profile and the playbook come as Markdown lists, one item a line.
    let items = list_lines(&answer);
    assert!(items.len() >= 5, "{answer}");
    assert!(items.contains(&"- Industry: retail"), "{answer}");
    assert!(
        !answer.contains("- Name: "),
        "the name is not listed: {answer}"
    );
    assert!(answer.contains("\n- Runway in months"), "{answer}");
    let conversation = evs[0].1["conversation_id"].as_str().unwrap().to_owned();

    // A follow-up does not repeat the profile.
    let (_, evs) = chat(
        &app,
        &u,
        &t,
        "cfo",
        json!({"message": "And if we raise prices?", "conversation_id": conversation}),
    )
    .await;
    let next = text_of(&evs);
    assert_prose(&next, "And if we raise prices?");
    assert!(!next.contains("Industry: retail"), "{next}");
    assert!(!list_lines(&next).is_empty(), "{next}");
}

async fn offline_provider_answers_end_to_end(app: TestApp) {
    let (u, t) = owner(&app, "chat@x.example").await;
    let (s, personas) = app.as_(&u).tenant(&t).get("/api/v1/c-suite").await;
    assert_eq!(s, StatusCode::OK);
    let slugs: Vec<&str> = personas
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, ["ceo", "cfo", "cmo", "coo", "cto"]);

    let (s, evs) = chat(
        &app,
        &u,
        &t,
        "cfo",
        json!({"message": "How long is our runway if we hire?"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let n = names(&evs);
    assert_eq!(n.first(), Some(&"message_start"), "{n:?}");
    assert_eq!(n.last(), Some(&"message_end"), "{n:?}");
    assert!(n.iter().filter(|x| **x == "delta").count() > 3, "{n:?}");
    assert_eq!(n[n.len() - 2], "usage");
    let start = &evs[0].1;
    assert_eq!(start["persona"], "cfo");
    assert_eq!(start["model"], "offline");
    let answer = text_of(&evs);
    assert!(
        answer.starts_with("(Offline mode: no language model is configured"),
        "{answer}"
    );
    assert!(answer.contains("OCSUITE_LLM_API_KEY"));
    assert!(answer.contains("Chief Financial Officer"));
    assert!(answer.contains("Runway in months"), "{answer}");
    assert!(answer.contains("Industry: retail"), "{answer}");
    let conversation = start["conversation_id"].as_str().unwrap().to_owned();

    // Deterministic: the same question in a new conversation gives the same answer.
    let (_, again) = chat(
        &app,
        &u,
        &t,
        "cfo",
        json!({"message": "How long is our runway if we hire?"}),
    )
    .await;
    assert_eq!(text_of(&again), answer);

    // Continue the conversation: the history reaches the provider.
    let (_, evs2) = chat(
        &app,
        &u,
        &t,
        "cfo",
        json!({"message": "And if we raise prices?", "conversation_id": conversation}),
    )
    .await;
    assert!(
        text_of(&evs2).contains("builds on the 1 earlier question"),
        "{}",
        text_of(&evs2)
    );
    let d = detail(&app, &u, &t, &conversation).await;
    let msgs = d["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 4);
    assert_eq!(msgs[0]["role"], "user");
    assert_eq!(msgs[1]["role"], "assistant");
    assert_eq!(msgs[1]["status"], "complete");
    assert_eq!(msgs[1]["content"].as_str().unwrap(), answer);
    assert!(msgs[1]["completion_tokens"].as_i64().unwrap() > 10);
    assert!(msgs[1]["latency_ms"].is_number());
    assert_eq!(
        d["conversation"]["title"],
        "How long is our runway if we hire?"
    );

    // A conversation belongs to one persona.
    let (s, body) = chat(
        &app,
        &u,
        &t,
        "cmo",
        json!({"message": "hi", "conversation_id": conversation}),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{body:?}");

    // Rate, rename, list, usage, delete.
    let msg = msgs[1]["id"].as_str().unwrap();
    let (s, _) = app
        .as_(&u)
        .tenant(&t)
        .post(
            &format!("/api/v1/messages/{msg}/rating"),
            json!({"rating": "up", "comment": "useful"}),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = app
        .as_(&u)
        .tenant(&t)
        .post(
            &format!("/api/v1/messages/{msg}/rating"),
            json!({"rating": "meh"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let d = detail(&app, &u, &t, &conversation).await;
    assert_eq!(d["messages"][1]["rating"], 1);
    let (s, c) = app
        .as_(&u)
        .tenant(&t)
        .patch(
            &format!("/api/v1/conversations/{conversation}"),
            json!({"title": "Hiring and runway"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(c["title"], "Hiring and runway");
    let (_, list) = app
        .as_(&u)
        .tenant(&t)
        .get("/api/v1/conversations?persona=cfo")
        .await;
    assert_eq!(list["conversations"].as_array().unwrap().len(), 2);
    assert_eq!(list["conversations"][0]["id"], conversation.as_str());
    let (_, usage) = app.as_(&u).tenant(&t).get("/api/v1/usage").await;
    assert_eq!(usage["requests"], 3, "{usage}");
    assert_eq!(usage["rows"][0]["persona"], "cfo");
    assert_eq!(usage["rows"][0]["model"], "offline");
    assert!(usage["completion_tokens"].as_i64().unwrap() > 30);
    let (s, _) = app
        .as_(&u)
        .tenant(&t)
        .delete(&format!("/api/v1/conversations/{conversation}"))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = app
        .as_(&u)
        .tenant(&t)
        .get(&format!("/api/v1/conversations/{conversation}"))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

async fn bad_input_and_isolation(app: TestApp) {
    let (a, ta) = owner(&app, "a@chat.example").await;
    let (b, tb) = owner(&app, "b@chat.example").await;
    let (s, body) = chat(&app, &a, &ta, "cfo", json!({"message": "   "})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body:?}");
    let (s, _) = chat(&app, &a, &ta, "cfo", json!({"message": "x".repeat(16_001)})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = chat(&app, &a, &ta, "cfoo", json!({"message": "hi"})).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = chat(&app, &a, &ta, "cfo", json!({"message": 5})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _) = chat(
        &app,
        &a,
        &ta,
        "cfo",
        json!({"message": "hi", "conversation_id": "cnv_nope"}),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let (_, evs) = chat(
        &app,
        &a,
        &ta,
        "ceo",
        json!({"message": "Our secret plan <script>alert(1)</script>"}),
    )
    .await;
    let conversation = evs[0].1["conversation_id"].as_str().unwrap().to_owned();
    let message = evs.last().unwrap().1["message_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let d = detail(&app, &a, &ta, &conversation).await;
    assert_eq!(
        d["messages"][0]["content"],
        "Our secret plan <script>alert(1)</script>"
    );

    for token in [b.token.clone(), app.api_key(&b, &tb, "admin").await.1] {
        let (s, _) = app
            .as_(&token)
            .tenant(&tb)
            .get(&format!("/api/v1/conversations/{conversation}"))
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, _) = app
            .as_(&token)
            .tenant(&tb)
            .patch(
                &format!("/api/v1/conversations/{conversation}"),
                json!({"title": "pwned"}),
            )
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, _) = app
            .as_(&token)
            .tenant(&tb)
            .delete(&format!("/api/v1/conversations/{conversation}"))
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, _) = app
            .as_(&token)
            .tenant(&tb)
            .post(
                &format!("/api/v1/messages/{message}/rating"),
                json!({"rating": "down"}),
            )
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (_, list) = app
            .as_(&token)
            .tenant(&tb)
            .get("/api/v1/conversations")
            .await;
        assert!(!list.to_string().contains(&conversation));
        let (_, usage) = app.as_(&token).tenant(&tb).get("/api/v1/usage").await;
        assert_eq!(usage["requests"], 0);
    }
    let u = User {
        id: b.id.clone(),
        email: b.email.clone(),
        token: b.token.clone(),
    };
    let (s, _) = chat(
        &app,
        &u,
        &tb,
        "ceo",
        json!({"message": "continue theirs", "conversation_id": conversation}),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Nothing of A's changed.
    let d = detail(&app, &a, &ta, &conversation).await;
    assert_eq!(d["messages"].as_array().unwrap().len(), 2);
    assert!(d["messages"][1]["rating"].is_null());
}

dual!(agent_builder_and_customisation);

async fn agent_builder_and_customisation(app: TestApp) {
    let (a, ta) = owner(&app, "builder@x.example").await;
    let agent = json!({
        "slug": "growth-coach", "name": "Gina", "title": "Head of Growth",
        "instructions": "- Push for weekly experiments\nFocus on activation.",
        "model": "my-model", "temperature": 0.3, "max_tokens": 500,
        "capabilities": ["diagnostics.echo"]
    });
    let (s, v) = app
        .as_(&a)
        .tenant(&ta)
        .post("/api/v1/agents", agent.clone())
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["enabled"], true);
    assert_eq!(v["model"], "my-model");
    let (s, _) = app
        .as_(&a)
        .tenant(&ta)
        .post("/api/v1/agents", agent.clone())
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    for (patch, field) in [
        (
            json!({"slug": "Bad Slug"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (json!({"slug": "cfo"}), StatusCode::CONFLICT),
        (
            json!({"temperature": 3.5}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (json!({"max_tokens": 0}), StatusCode::UNPROCESSABLE_ENTITY),
        (
            json!({"capabilities": ["not a capability"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"instructions": ""}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let mut body = agent.clone();
        body["slug"] = json!("other-agent");
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (s, v) = app.as_(&a).tenant(&ta).post("/api/v1/agents", body).await;
        assert_eq!(s, field, "{patch}: {v}");
    }
    let member = app.signup("member@builder.example").await;
    app.add_member(&a, &ta, &member, "member").await;
    let mut other = agent.clone();
    other["slug"] = json!("by-member");
    let (s, _) = app
        .as_(&member)
        .tenant(&ta)
        .post("/api/v1/agents", other)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // Chat with the agent (offline provider): its brief reaches the answer.
    let (s, evs) = chat(
        &app,
        &a,
        &ta,
        "growth-coach",
        json!({"message": "What should we test this week?"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(evs[0].1["persona"], "growth-coach");
    assert!(
        text_of(&evs).contains("As your Head of Growth"),
        "{}",
        text_of(&evs)
    );

    // Disabled: no more chats; enabled again: back.
    let (s, v) = app
        .as_(&a)
        .tenant(&ta)
        .patch("/api/v1/agents/growth-coach", json!({"enabled": false}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _) = chat(&app, &a, &ta, "growth-coach", json!({"message": "hi"})).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    app.as_(&a)
        .tenant(&ta)
        .patch("/api/v1/agents/growth-coach", json!({"enabled": true}))
        .await;

    // Customise the CFO; the default returns when the customisation is removed.
    let (s, v) = app.as_(&a).tenant(&ta).put("/api/v1/c-suite/cfo/customization", json!({"prompt_additions": "We sell to schools; budgets reset in September.", "temperature": 0.2}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, list) = app.as_(&a).tenant(&ta).get("/api/v1/c-suite").await;
    let cfo = list
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["slug"] == "cfo")
        .unwrap();
    assert_eq!(cfo["customization"]["temperature"], 0.2);
    assert_eq!(cfo["title"], "Chief Financial Officer");
    let (s, _) = app
        .as_(&a)
        .tenant(&ta)
        .put("/api/v1/c-suite/nope/customization", json!({}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Another tenant sees none of it.
    let (b, tb) = owner(&app, "other@builder.example").await;
    let (_, agents) = app.as_(&b).tenant(&tb).get("/api/v1/agents").await;
    assert_eq!(agents["agents"], json!([]));
    let (s, _) = app
        .as_(&b)
        .tenant(&tb)
        .patch("/api/v1/agents/growth-coach", json!({"enabled": false}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = chat(&app, &b, &tb, "growth-coach", json!({"message": "hi"})).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, list) = app.as_(&b).tenant(&tb).get("/api/v1/c-suite").await;
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|p| p["customization"].is_null())
    );
    let (s, _) = app
        .as_(&b)
        .tenant(&tb)
        .delete("/api/v1/c-suite/cfo/customization")
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, agents) = app.as_(&a).tenant(&ta).get("/api/v1/agents").await;
    assert_eq!(agents["agents"][0]["enabled"], true);

    let (s, _) = app
        .as_(&a)
        .tenant(&ta)
        .delete("/api/v1/c-suite/cfo/customization")
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, list) = app.as_(&a).tenant(&ta).get("/api/v1/c-suite").await;
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|p| p["customization"].is_null())
    );
}
