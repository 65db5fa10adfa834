//! An external module: a local MCP server (rmcp, streamable HTTP) whose tools run as tasks.

use reqwest::StatusCode;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{ServerCapabilities, ServerConfig};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ServerHandler, schemars, tool, tool_handler, tool_router};
use serde_json::json;

use crate::dual;
use crate::helpers::TestApp;
use crate::tasks::{execute, owner, start, wait_status};

const TOKEN: &str = "s3cret-mcp-token";

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct AddIn {
    a: i64,
    b: i64,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct RefuseIn {
    why: String,
}

#[derive(Clone)]
struct Calc {
    tool_router: ToolRouter<Self>,
}

#[tool_router]
impl Calc {
    #[tool(description = "Adds two integers")]
    fn add(&self, Parameters(AddIn { a, b }): Parameters<AddIn>) -> String {
        (a + b).to_string()
    }

    #[tool(name = "Refuse-Politely", description = "Always reports an error")]
    fn refuse(&self, Parameters(RefuseIn { why }): Parameters<RefuseIn>) -> Result<String, String> {
        Err(format!("refused: {why}"))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Calc {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }
}

/// Serves the calculator at http://127.0.0.1:<port>/mcp, requiring `Bearer TOKEN`.
async fn serve_calc() -> String {
    let service: StreamableHttpService<Calc, LocalSessionManager> = StreamableHttpService::new(
        || {
            Ok(Calc {
                tool_router: Calc::tool_router(),
            })
        },
        Default::default(),
        StreamableHttpServerConfig::default(),
    );
    let router =
        axum::Router::new()
            .nest_service("/mcp", service)
            .layer(axum::middleware::from_fn(
                |req: axum::extract::Request, next: axum::middleware::Next| async move {
                    let ok = req
                        .headers()
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        == Some(&format!("Bearer {TOKEN}"));
                    if ok {
                        next.run(req).await
                    } else {
                        axum::response::IntoResponse::into_response(
                            axum::http::StatusCode::UNAUTHORIZED,
                        )
                    }
                },
            ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{addr}/mcp")
}

dual!(mcp_tools_run_as_tasks);

async fn mcp_tools_run_as_tasks(app: TestApp) {
    let url = serve_calc().await;
    let (u, t) = owner(&app, "mcp@x.example").await;

    // Wrong credentials: the server cannot be reached, nothing is stored.
    let (s, v) = app
        .as_(&u)
        .tenant(&t)
        .post(
            "/api/v1/mcp-servers",
            json!({"name": "calc", "url": url, "bearer_token": "wrong"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["code"], "mcp_unreachable");
    for (body, code) in [
        (
            json!({"name": "Calc!", "url": url}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"name": "calc", "url": "ftp://x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"name": "diagnostics", "url": url}),
            StatusCode::CONFLICT,
        ),
    ] {
        let (s, v) = app
            .as_(&u)
            .tenant(&t)
            .post("/api/v1/mcp-servers", body)
            .await;
        assert_eq!(s, code, "{v}");
    }

    let (s, v) = app
        .as_(&u)
        .tenant(&t)
        .post(
            "/api/v1/mcp-servers",
            json!({"name": "calc", "url": url, "bearer_token": TOKEN}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["has_credentials"], true);
    assert!(
        v.to_string().find(TOKEN).is_none(),
        "the token must never be echoed"
    );
    let server_id = v["id"].as_str().unwrap().to_owned();
    let caps: Vec<&str> = v["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["capability"].as_str().unwrap())
        .collect();
    assert!(
        caps.contains(&"calc.add") && caps.contains(&"calc.refuse_politely"),
        "{caps:?}"
    );
    let (s, _) = app
        .as_(&u)
        .tenant(&t)
        .post(
            "/api/v1/mcp-servers",
            json!({"name": "calc", "url": url, "bearer_token": TOKEN}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);

    let (_, m) = app.as_(&u).tenant(&t).get("/api/v1/modules").await;
    let calc = m["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "calc")
        .unwrap();
    assert_eq!(calc["source"]["kind"], "mcp");
    let add = calc["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "calc.add")
        .unwrap();
    assert_eq!(add["input_schema"]["required"], json!(["a", "b"]));

    // Input is checked against the tool's schema before anything is queued.
    let (s, v) = execute(
        &app,
        &u,
        &t,
        json!({"capability": "calc.add", "input": {"a": "two"}}),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");

    let id = start(&app, &u, &t, "calc.add", json!({"a": 2, "b": 40})).await;
    let d = wait_status(&app, &u, &t, &id, "succeeded").await;
    assert_eq!(d["task"]["result"]["text"], "42", "{d}");

    let id = start(
        &app,
        &u,
        &t,
        "calc.refuse_politely",
        json!({"why": "policy"}),
    )
    .await;
    let d = wait_status(&app, &u, &t, &id, "failed").await;
    assert!(
        d["task"]["error"]
            .as_str()
            .unwrap()
            .contains("refused: policy"),
        "{d}"
    );

    // Another tenant sees none of it.
    let (o, ot) = owner(&app, "other-mcp@x.example").await;
    let (s, _) = execute(
        &app,
        &o,
        &ot,
        json!({"capability": "calc.add", "input": {"a": 1, "b": 1}}),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, l) = app.as_(&o).tenant(&ot).get("/api/v1/mcp-servers").await;
    assert_eq!(l["servers"], json!([]));
    let (s, _) = app
        .as_(&o)
        .tenant(&ot)
        .delete(&format!("/api/v1/mcp-servers/{server_id}"))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let (s, v) = app
        .as_(&u)
        .tenant(&t)
        .post(
            &format!("/api/v1/mcp-servers/{server_id}/refresh"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "ready");
    let (s, _) = app
        .as_(&u)
        .tenant(&t)
        .delete(&format!("/api/v1/mcp-servers/{server_id}"))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = execute(
        &app,
        &u,
        &t,
        json!({"capability": "calc.add", "input": {"a": 1, "b": 1}}),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_addresses_are_refused_when_private_networks_are_off() {
    let url = serve_calc().await;
    let app = TestApp::start_with(crate::helpers::Db::Sqlite, |c| {
        c.mcp_allow_private_networks = Some(false);
    })
    .await
    .unwrap();
    let (u, t) = owner(&app, "ssrf@x.example").await;
    for target in [
        url.as_str(),
        "http://169.254.169.254/latest/meta-data",
        "http://localhost:1/mcp",
    ] {
        let (s, v) = app
            .as_(&u)
            .tenant(&t)
            .post(
                "/api/v1/mcp-servers",
                json!({"name": "calc", "url": target, "bearer_token": TOKEN}),
            )
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{target}: {v}");
        assert_eq!(v["error"]["field"], "url");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("internal address"),
            "{v}"
        );
    }
    let (_, l) = app.as_(&u).tenant(&t).get("/api/v1/mcp-servers").await;
    assert_eq!(l["servers"], json!([]));
}
