//! The served API description against real answers: a single-node Sluice
//! with tokens required is called on every route of the table (successes and
//! the usual errors), and each answer's status must be documented for its
//! operation and its body must validate against the documented schema.

use anyhow::{bail, ensure, Context, Result};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use sluice_cli::node::AuthArg;
use sluice_coordinator::api::openapi::{self, conformance};
use sluice_coordinator::api::routes::{RouteId, ROUTES};
use sluice_tests::{eventually, hello_image, Cluster};
use std::collections::BTreeSet;
use std::time::Duration;

const NODE: &str = "t-openapi";
const FAKE: &str = "t-openapi-fake";

/// One call: the route it exercises, the concrete path, a body, and the status it should get.
struct Call {
    id: RouteId,
    path: String,
    body: Option<Value>,
    want: u16,
}

fn call(id: RouteId, path: impl Into<String>, body: Option<Value>, want: u16) -> Call {
    Call { id, path: path.into(), body, want }
}

#[tokio::test]
async fn real_answers_match_the_served_document() -> Result<()> {
    let c = Cluster::start_with(NODE, |a| a.coordinator.auth = AuthArg::Required).await?;
    let result = check_all(&c).await;
    c.stop().await?;
    result
}

async fn check_all(c: &Cluster) -> Result<()> {
    let admin = c.admin_token()?;
    let http = c.http.clone().with_token(Some(admin));
    // The document is public and is the one the code builds.
    let served = sluice_cli::client::Http::new().get(&c.api("/v1/openapi.json")).await?;
    assert_eq!(served.status, StatusCode::OK);
    let doc: Value = served.json()?;
    assert_eq!(doc, openapi::document());
    // Wait for the agent's first report, so the node views are real ones.
    eventually("the node to report", Duration::from_secs(30), || async {
        let nodes = http.get(&c.api("/v1/nodes")).await?.json()?;
        Ok(nodes.as_array().is_some_and(|n| !n.is_empty()).then_some(()))
    })
    .await?;
    let spec = json!({"name": "oa", "image": hello_image(), "labels": {"tier": "web"}, "placement": {"max_per_node": 2}});
    let report = json!({"node": FAKE, "capacity": {"cpu_millis": 4000, "memory_mb": 4096}, "instances": [], "at": 1, "labels": {"zone": "eu"}});
    let rules = json!({"rules": [{"name": "calm", "scope": "function:oa", "rule": "when avg(function.inflight, 30s) > 100 then pause_idle"}]});
    use RouteId::*;
    let mut calls = vec![
        call(Health, "/healthz", None, 200),
        call(OpenApi, "/v1/openapi.json", None, 200),
        call(Metrics, "/metrics", None, 200),
        call(PutFunction, "/v1/functions", Some(spec.clone()), 201),
        call(PutFunction, "/v1/functions", Some(spec), 200),
        call(PutFunction, "/v1/functions", Some(json!({"name": "oa", "image": "x", "privileged": true})), 400),
        call(ListFunctions, "/v1/functions", None, 200),
        call(GetFunction, "/v1/functions/oa", None, 200),
        call(GetFunction, "/v1/functions/nope", None, 404),
        // Percent-encoded path segments and query values are decoded: %61 is "a".
        call(GetFunction, "/v1/functions/o%61", None, 200),
        call(ListInstances, "/v1/instances?function=o%61", None, 200),
        call(GetFunction, "/v1/functions/Bad_Name", None, 400),
        call(ListInstances, "/v1/instances?function=oa", None, 200),
        call(ListNodes, "/v1/nodes", None, 200),
        call(Cluster, "/v1/cluster", None, 200),
        // Joining is only tried with a body that is refused: a valid one would wait a minute for a coordinator that does not exist.
        call(AddMember, "/v1/cluster/members", Some(json!({"id": 0, "raft_addr": "x"})), 400),
        call(RemoveMember, "/v1/cluster/members/1", None, 409),
        call(RemoveMember, "/v1/cluster/members/abc", None, 400),
        call(Report, format!("/v1/nodes/{FAKE}/report"), Some(report), 200),
        call(Desired, format!("/v1/nodes/{FAKE}/desired?after=0&wait_ms=0"), None, 200),
        call(NodeFigures, format!("/v1/metrics/nodes/{NODE}?range=5m"), None, 200),
        call(NodeFigures, format!("/v1/metrics/nodes/{NODE}?range=5d"), None, 400),
        call(InstanceFigures, "/v1/metrics/instances/i1", None, 200),
        call(FunctionFigures, "/v1/metrics/functions/oa", None, 200),
        call(FunctionTimeline, "/v1/metrics/functions/oa/timeline?range=15m", None, 200),
        call(FunctionTimeline, "/v1/metrics/functions/oa/timeline?range=1d", None, 400),
        call(FunctionTimeline, "/v1/metrics/functions/nope/timeline", None, 404),
        call(UiPage, "/ui", None, 200),
        call(UiAsset, "/ui/app.js", None, 200),
        call(UiAsset, "/ui/style.css", None, 200),
        call(UiAsset, "/ui/nope.js", None, 404),
        call(RecentBusEvents, "/v1/metrics/events?limit=5", None, 200),
        call(RecentBusEvents, "/v1/metrics/events?limit=0", None, 400),
        call(Drain, format!("/v1/nodes/{FAKE}/drain"), None, 200),
        call(Undrain, format!("/v1/nodes/{FAKE}/drain"), None, 200),
        call(Drain, "/v1/nodes/nobody/drain", None, 404),
        call(PutRules, "/v1/rules", Some(rules.clone()), 200),
        call(CheckRules, "/v1/rules/check", Some(rules), 200),
        call(CheckRules, "/v1/rules/check", Some(json!({"rules": [{"name": "bad", "rule": "when then"}]})), 400),
        call(ListRules, "/v1/rules", None, 200),
        call(ExplainRules, "/v1/rules/explain?name=calm", None, 200),
        call(ExplainRules, "/v1/rules/explain?name=nope", None, 404),
        call(RemoveRule, "/v1/rules/calm", None, 200),
        call(RemoveRule, "/v1/rules/calm", None, 404),
        call(Events, "/v1/events?limit=10", None, 200),
        call(ExplainPlacement, "/v1/explain/placement/oa", None, 200),
        call(ListTokens, "/v1/tokens", None, 200),
        call(CreateToken, "/v1/tokens", Some(json!({"name": "oa-reader", "roles": ["reader"], "expires_in_secs": 60})), 201),
        call(CreateToken, "/v1/tokens", Some(json!({"name": "oa", "roles": ["emperor"]})), 400),
        call(RevokeToken, "/v1/tokens/ffffffffffff", None, 404),
        call(SetRegistries, "/v1/registries", Some(json!({"allowed": ["127.0.0.1:5000", "docker.io"]})), 200),
        call(SetRegistries, "/v1/registries", Some(json!({"allowed": ["Not A Host"]})), 400),
        call(ListRegistries, "/v1/registries", None, 200),
        call(SetRegistries, "/v1/registries", Some(json!({"allowed": []})), 200),
        call(PurgeCache, "/v1/functions/oa/cache/purge", Some(json!({"path": "/items/1"})), 200),
        call(PurgeCache, "/v1/functions/oa/cache/purge", Some(json!({})), 200),
        call(PurgeCache, "/v1/functions/oa/cache/purge", Some(json!({"path": "items"})), 400),
        call(PurgeCache, "/v1/functions/nope/cache/purge", Some(json!({})), 404),
        call(GetInvocation, format!("/v1/invocations/k{}", "0".repeat(32)), None, 404),
        call(GetInvocation, "/v1/invocations/nope", None, 400),
        // oa has no instance yet (min 0): an empty answer of JSON lines.
        call(FunctionLogs, "/v1/functions/oa/logs?tail=5&since=10m", None, 200),
        call(FunctionLogs, "/v1/functions/oa/logs?tail=10001", None, 400),
        call(FunctionLogs, "/v1/functions/oa/logs?instance=i99999", None, 404),
        call(FunctionLogs, "/v1/functions/nope/logs", None, 404),
        call(RemoveFunction, "/v1/functions/oa", None, 200),
        call(RemoveFunction, "/v1/functions/oa", None, 404),
    ];
    // A made token is revoked through its id, read from the listing.
    let mut checked = BTreeSet::new();
    let mut revoke = None;
    for i in 0.. {
        if i == calls.len() {
            match revoke.take() {
                Some(id) => calls.push(call(RevokeToken, format!("/v1/tokens/{id}"), None, 200)),
                None => break,
            }
        }
        let Call { id, path, body, want } = &calls[i];
        let route = ROUTES.iter().find(|r| r.id == *id).unwrap();
        let method = Method::from_bytes(route.method.as_bytes())?;
        let r = match body {
            Some(b) => http.json(method.clone(), &c.api(path), b).await?,
            None => http.send(method.clone(), &c.api(path), "", &[]).await?,
        };
        let status = r.status.as_u16();
        if status != *want {
            bail!("{method} {path}: {status} (wanted {want}): {}", r.text());
        }
        let ops = &doc["paths"][route.path][route.method.to_ascii_lowercase()]["responses"];
        if ops.get(status.to_string()).is_none() {
            bail!("{method} {path}: {status} is not documented for {} {}", route.method, route.path);
        }
        if let Some(schema) = conformance::lines_schema(&doc, route.method, route.path, status) {
            assert_eq!(r.header("content-type").as_deref(), Some("application/x-ndjson"), "{path}");
            for line in r.text().lines() {
                conformance::check(&doc, schema, &serde_json::from_str(line)?, &format!("{method} {path}")).map_err(anyhow::Error::msg)?;
            }
        } else if let Some(schema) = conformance::response_schema(&doc, route.method, route.path, status) {
            let body: Value = r.json().with_context(|| format!("{method} {path}: not JSON"))?;
            conformance::check(&doc, schema, &body, &format!("{method} {path}")).map_err(anyhow::Error::msg)?;
            if *id == CreateToken && status == 201 {
                revoke = Some(body["info"]["id"].as_str().context("token id")?.to_string());
            }
        } else {
            // No JSON schema: the answer's type is one the operation lists (Prometheus text, the dashboard's files).
            let documented = ops[status.to_string()]["content"].as_object().map(|c| c.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
            let got = r.header("content-type").unwrap_or_default();
            ensure!(documented.iter().any(|t| got.split(';').next() == Some(t.as_str())), "{path}: content-type {got:?}, documented {documented:?}");
        }
        checked.insert(format!("{id:?}"));
    }
    // Without a token: 401 with the documented error body.
    let r = c.http.get(&c.api("/v1/functions")).await?;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    conformance::check(&doc, conformance::response_schema(&doc, "GET", "/v1/functions", 401).unwrap(), &r.json()?, "401").map_err(anyhow::Error::msg)?;
    // A method the path does not have: 405 naming the path's methods in `Allow` too.
    let r = http.send(Method::PATCH, &c.api("/v1/functions"), "", &[]).await?;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers.get("allow").and_then(|v| v.to_str().ok()), Some("GET, POST"));
    conformance::check(&doc, &doc["components"]["schemas"]["Error"], &r.json()?, "405").map_err(anyhow::Error::msg)?;
    // Every route of the table was called.
    let all: BTreeSet<String> = ROUTES.iter().map(|r| format!("{:?}", r.id)).collect();
    assert_eq!(checked, all, "routes not exercised: {:?}", all.difference(&checked).collect::<Vec<_>>());
    Ok(())
}
