//! Authentication and roles end to end: every API route and the gateway, with
//! no token, a malformed one, a revoked one and a token of each role, against
//! a real single-node Sluice with `--auth required`. A refused call changes
//! nothing; an allowed one gets past the check (its answer is anything but
//! 401/403: the calls allowed here are built to stop at input validation or
//! at "not found", so the matrix itself changes nothing either).

use anyhow::{bail, Context, Result};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use sluice_cli::client::Http;
use sluice_cli::node::{AuthArg, CoordinatorArgs};
use sluice_coordinator::api::routes::{RouteId, ROUTES};
use sluice_coordinator::auth::{Permission, Role};
use sluice_coordinator::node::{BindError, Coordinator};
use sluice_tests::{eventually, hello_image, Cluster};
use std::time::Duration;

const NODE: &str = "t-auth";

/// A caller: a name for messages and the `Authorization` value it sends.
struct Caller {
    name: String,
    header: Option<String>,
    /// The permission check it should pass, if any.
    role: Option<Role>,
}

/// The path and body of a call to `id`: `refused` is a real change (a valid
/// deploy, a removal of something that exists), `allowed` stops before changing anything.
fn call_for(id: RouteId, fixtures: &Fixtures) -> (String, Value, String, Value) {
    let none = Value::Null;
    let f = fixtures;
    let same = |p: &str, b: Value| (p.to_string(), b.clone(), p.to_string(), b);
    match id {
        RouteId::Health => same("/healthz", none),
        RouteId::OpenApi => same("/v1/openapi.json", none),
        RouteId::Metrics => same("/metrics", none),
        RouteId::ListFunctions => same("/v1/functions", none),
        RouteId::PutFunction => ("/v1/functions".into(), json!({"name": "intruder", "image": hello_image()}), "/v1/functions".into(), json!({"name": "Bad Name"})),
        RouteId::GetFunction => same("/v1/functions/public-fn", none),
        RouteId::RemoveFunction => ("/v1/functions/public-fn".into(), none.clone(), "/v1/functions/no-such-fn".into(), none),
        RouteId::ListInstances => same("/v1/instances", none),
        RouteId::ListNodes => same("/v1/nodes", none),
        RouteId::Cluster => same("/v1/cluster", none),
        RouteId::AddMember => ("/v1/cluster/members".into(), json!({"id": 42, "raft_addr": "127.0.0.1:1", "learner": true}), "/v1/cluster/members".into(), json!({})),
        RouteId::RemoveMember => ("/v1/cluster/members/1".into(), none.clone(), "/v1/cluster/members/0".into(), none),
        RouteId::Desired => same(&format!("/v1/nodes/{NODE}/desired?wait_ms=0"), none),
        RouteId::Report => (
            "/v1/nodes/intruder/report".into(),
            json!({"node": "intruder", "capacity": {"cpu_millis": 1000, "memory_mb": 1000}, "instances": [], "at": 0}),
            "/v1/nodes/intruder/report".into(),
            json!({"node": "intruder"}),
        ),
        RouteId::NodeFigures => same(&format!("/v1/metrics/nodes/{NODE}"), none),
        RouteId::InstanceFigures => same("/v1/metrics/instances/1", none),
        RouteId::FunctionFigures => same("/v1/metrics/functions/public-fn", none),
        RouteId::FunctionTimeline => same("/v1/metrics/functions/public-fn/timeline", none),
        RouteId::RecentBusEvents => same("/v1/metrics/events", none),
        RouteId::Drain => (format!("/v1/nodes/{NODE}/drain"), none.clone(), "/v1/nodes/no-such-node/drain".into(), none),
        RouteId::Undrain => (format!("/v1/nodes/{NODE}/drain"), none.clone(), "/v1/nodes/no-such-node/drain".into(), none),
        RouteId::ListRules => same("/v1/rules", none),
        RouteId::PutRules => ("/v1/rules".into(), json!({"rules": [rule("intruder-rule")]}), "/v1/rules".into(), json!({"rules": "not a list"})),
        RouteId::CheckRules => same("/v1/rules/check", json!({"rules": [rule("checked")]})),
        RouteId::ExplainRules => same("/v1/rules/explain", none),
        RouteId::RemoveRule => ("/v1/rules/kept-rule".into(), none.clone(), "/v1/rules/no-such-rule".into(), none),
        RouteId::Events => same("/v1/events", none),
        RouteId::ExplainPlacement => same("/v1/explain/placement/public-fn", none),
        RouteId::ListTokens => same("/v1/tokens", none),
        RouteId::CreateToken => ("/v1/tokens".into(), json!({"name": "intruder", "roles": ["admin"]}), "/v1/tokens".into(), json!({"name": "x", "roles": ["emperor"]})),
        RouteId::ListRegistries => same("/v1/registries", none),
        RouteId::SetRegistries => ("/v1/registries".into(), json!({"allowed": ["evil.example.com"]}), "/v1/registries".into(), json!({"allowed": ["Not A Host"]})),
        RouteId::RevokeToken => (format!("/v1/tokens/{}", f.reader_id), none.clone(), "/v1/tokens/ffffffffffff".into(), none),
        RouteId::PurgeCache => ("/v1/functions/public-fn/cache/purge".into(), json!({}), "/v1/functions/public-fn/cache/purge".into(), json!({"path": "no-leading-slash"})),
        RouteId::GetInvocation => same(&format!("/v1/invocations/k{}", "0".repeat(32)), none),
        // public-fn has no instances: an allowed call reads nothing from any agent.
        RouteId::FunctionLogs => same("/v1/functions/public-fn/logs?tail=1", none),
        RouteId::UiPage => same("/ui", none),
        RouteId::UiAsset => same("/ui/app.js", none),
    }
}

fn rule(name: &str) -> Value {
    json!({"name": name, "scope": "function:public-fn", "rule": "when avg(container.cpu, 10s) > 90 for 5s then scale_out(1) cooldown 5m"})
}

struct Fixtures {
    reader_id: String,
}

async fn send(http: &Http, base: &str, method: &str, path: &str, body: &Value, header: Option<&str>) -> Result<(StatusCode, String)> {
    let method = Method::from_bytes(method.as_bytes())?;
    let body = if body.is_null() { String::new() } else { body.to_string() };
    let mut headers = vec![("content-type", "application/json")];
    if let Some(h) = header {
        headers.push(("authorization", h));
    }
    let r = http.send(method, &format!("{base}{path}"), body, &headers).await?;
    Ok((r.status, r.text()))
}

/// What the cluster holds, in the parts a call could change.
async fn snapshot(http: &Http, base: &str, admin: &str) -> Result<Value> {
    let get = |path: &'static str| {
        let http = http.clone();
        let url = format!("{base}{path}");
        let auth = format!("Bearer {admin}");
        async move {
            let r = http.send(Method::GET, &url, "", &[("authorization", &auth)]).await?;
            if r.status != StatusCode::OK {
                bail!("{path}: {} {}", r.status, r.text());
            }
            r.json()
        }
    };
    let functions: Vec<Value> = get("/v1/functions").await?.as_array().context("functions")?.iter().map(|f| f["spec"].clone()).collect();
    let nodes: Vec<Value> = get("/v1/nodes").await?.as_array().context("nodes")?.iter().map(|n| json!([n["node"], n["draining"]])).collect();
    let members: Vec<Value> = get("/v1/cluster").await?["members"].as_array().context("members")?.iter().map(|m| json!([m["id"], m["role"]])).collect();
    Ok(json!({
        "functions": functions,
        "nodes": nodes,
        "members": members,
        "rules": get("/v1/rules").await?,
        "tokens": get("/v1/tokens").await?,
        "registries": get("/v1/registries").await?,
    }))
}

async fn make_token(http: &Http, base: &str, admin: &str, name: &str, roles: &[&str], expires_in_secs: Option<u64>) -> Result<(String, String)> {
    let mut body = json!({"name": name, "roles": roles});
    if let Some(secs) = expires_in_secs {
        body["expires_in_secs"] = json!(secs);
    }
    let (status, text) = send(http, base, "POST", "/v1/tokens", &body, Some(&format!("Bearer {admin}"))).await?;
    if status != StatusCode::CREATED {
        bail!("creating token {name}: {status} {text}");
    }
    let made: Value = serde_json::from_str(&text)?;
    assert!(!text.contains("secret_sha256"), "the hash is never shown: {text}");
    Ok((made["token"].as_str().context("token")?.to_string(), made["info"]["id"].as_str().context("id")?.to_string()))
}

#[tokio::test]
async fn every_route_and_the_gateway_check_tokens_and_roles() -> Result<()> {
    let c = Cluster::start_with(NODE, |a| a.coordinator.auth = AuthArg::Required).await?;
    let result = matrix(&c).await;
    c.stop().await?;
    result
}

async fn matrix(c: &Cluster) -> Result<()> {
    let (http, base) = (c.http.clone(), c.node.api_url());
    // The bootstrap admin token: written once, readable by its owner only.
    let file = c.data_dir.path().join("admin.token");
    let admin = std::fs::read_to_string(&file).context("sluice up writes the admin token")?.trim().to_string();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&file)?.permissions().mode() & 0o777, 0o600);
    }
    let bearer = |t: &str| format!("Bearer {t}");
    let mut callers = vec![
        Caller { name: "no token".into(), header: None, role: None },
        Caller { name: "malformed token".into(), header: Some("Bearer not-a-sluice-token".into()), role: None },
        Caller { name: "unknown token".into(), header: Some(bearer(&format!("sluice_0123456789ab_{}", "0".repeat(64)))), role: None },
    ];
    let (revoked, revoked_id) = make_token(&http, &base, &admin, "soon-revoked", &["admin"], None).await?;
    let (status, _) = send(&http, &base, "DELETE", &format!("/v1/tokens/{revoked_id}"), &Value::Null, Some(&bearer(&admin))).await?;
    assert_eq!(status, StatusCode::OK);
    callers.push(Caller { name: "revoked admin token".into(), header: Some(bearer(&revoked)), role: None });
    let mut reader_id = String::new();
    for role in Role::ALL {
        let token = if role == Role::Admin { admin.clone() } else { make_token(&http, &base, &admin, &format!("{role}-token"), &[role.as_str()], None).await?.0 };
        if role == Role::Reader {
            reader_id = sluice_coordinator::auth::split_id(&token).context("reader id")?.to_string();
        }
        callers.push(Caller { name: format!("{role} token"), header: Some(bearer(&token)), role: Some(role) });
    }
    let fixtures = Fixtures { reader_id };

    // Something for refused calls to try to change.
    let admin_header = bearer(&admin);
    for spec in [json!({"name": "public-fn", "image": hello_image()}), json!({"name": "private-fn", "image": hello_image(), "private": true})] {
        let (status, text) = send(&http, &base, "POST", "/v1/functions", &spec, Some(&admin_header)).await?;
        assert!(status.is_success(), "{status} {text}");
    }
    let (status, text) = send(&http, &base, "PUT", "/v1/rules", &json!({"rules": [rule("kept-rule")]}), Some(&admin_header)).await?;
    assert!(status.is_success(), "{status} {text}");
    eventually("the agent reports its node", Duration::from_secs(30), || async {
        let nodes = snapshot(&http, &base, &admin).await?;
        Ok((nodes["nodes"].as_array().is_some_and(|n| !n.is_empty())).then_some(()))
    })
    .await?;
    let before = snapshot(&http, &base, &admin).await?;

    let mut failures = Vec::new();
    for route in ROUTES {
        let (refused_path, refused_body, allowed_path, allowed_body) = call_for(route.id, &fixtures);
        for caller in &callers {
            let allowed = route.permission == Permission::Public || caller.role.is_some_and(|r| r.grants(route.permission));
            let (path, body) = if allowed { (&allowed_path, &allowed_body) } else { (&refused_path, &refused_body) };
            let (status, text) = send(&http, &base, route.method, path, body, caller.header.as_deref()).await?;
            let expected_ok = match (allowed, caller.role) {
                (true, _) => status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN && status != StatusCode::INTERNAL_SERVER_ERROR,
                // A valid token without the role: forbidden.
                (false, Some(_)) => status == StatusCode::FORBIDDEN && text.contains("\"code\":\"forbidden\""),
                // No credentials that work: unauthenticated, with the API's error body.
                (false, None) => status == StatusCode::UNAUTHORIZED && text.contains("\"error\"") && text.contains("\"code\""),
            };
            if !expected_ok {
                failures.push(format!("{} {} as {}: got {status} {}", route.method, path, caller.name, &text[..text.len().min(200)]));
            }
        }
    }
    assert!(failures.is_empty(), "{} unexpected answers:\n{}", failures.len(), failures.join("\n"));
    let after = snapshot(&http, &base, &admin).await?;
    assert_eq!(before, after, "no refused call, and no allowed call of the matrix, changed anything");

    // The gateway: public functions take anyone; private ones need the invoker role.
    let gateway = |name: &str| format!("{}/function/{name}", c.node.gateway_url());
    let (status, text) = send(&http, &gateway("public-fn"), "GET", "", &Value::Null, None).await?;
    assert_eq!(status, StatusCode::OK, "a public function needs no token: {text}");
    for caller in &callers {
        let (status, text) = send(&http, &gateway("private-fn"), "GET", "", &Value::Null, caller.header.as_deref()).await?;
        let expected = match caller.role {
            Some(r) if r.grants(Permission::Invoke) => StatusCode::OK,
            Some(_) => StatusCode::FORBIDDEN,
            None => StatusCode::UNAUTHORIZED,
        };
        assert_eq!(status, expected, "private function as {}: {text}", caller.name);
    }
    // Asynchronous submission follows the same rule; the caller's token is checked, then left off the queued request.
    let submit = |name: &str| format!("{}/async-function/{name}", c.node.gateway_url());
    let (status, text) = send(&http, &submit("public-fn"), "POST", "", &Value::Null, None).await?;
    assert_eq!(status, StatusCode::ACCEPTED, "a public function takes asynchronous invocations from anyone: {text}");
    let mut accepted = Vec::new();
    for caller in &callers {
        let (status, text) = send(&http, &submit("private-fn"), "POST", "", &Value::Null, caller.header.as_deref()).await?;
        let expected = match caller.role {
            Some(r) if r.grants(Permission::Invoke) => StatusCode::ACCEPTED,
            Some(_) => StatusCode::FORBIDDEN,
            None => StatusCode::UNAUTHORIZED,
        };
        assert_eq!(status, expected, "asynchronous private function as {}: {text}", caller.name);
        if status == StatusCode::ACCEPTED {
            accepted.push(serde_json::from_str::<Value>(&text)?["id"].as_str().context("an invocation id")?.to_string());
        }
    }
    assert_eq!(send(&http, &submit("public-fn"), "GET", "", &Value::Null, None).await?.0, StatusCode::METHOD_NOT_ALLOWED);
    for id in accepted {
        let (status, text) = eventually("the private invocation ends", Duration::from_secs(60), || async {
            let (status, text) = send(&http, &base, "GET", &format!("/v1/invocations/{id}"), &Value::Null, Some(&admin_header)).await?;
            Ok(text.contains("\"state\":\"done\"").then_some((status, text)))
        })
        .await?;
        assert_eq!(status, StatusCode::OK);
        assert!(text.contains("hello, world"), "the private function ran without the caller's token: {text}");
    }
    let metrics_url = format!("{}/metrics", c.node.gateway_url());
    assert_eq!(send(&http, &metrics_url, "GET", "", &Value::Null, None).await?.0, StatusCode::UNAUTHORIZED, "the gateway's metrics need a reader");

    // A token that expires stops working when it does.
    let (brief, _) = make_token(&http, &base, &admin, "brief", &["reader"], Some(1)).await?;
    assert_eq!(send(&http, &base, "GET", "/v1/functions", &Value::Null, Some(&bearer(&brief))).await?.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, text) = send(&http, &base, "GET", "/v1/functions", &Value::Null, Some(&bearer(&brief))).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{text}");
    assert!(text.contains("token_expired"), "{text}");
    Ok(())
}

#[tokio::test]
async fn a_coordinator_refuses_a_non_loopback_address_without_auth_unless_told() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut args = CoordinatorArgs::ephemeral(dir.path().to_path_buf());
    args.auth = AuthArg::Off;
    args.api_addr = "0.0.0.0:0".parse()?;
    let clock = std::sync::Arc::new(sluice_common::SystemClock);
    match Coordinator::start(args.config()?, clock.clone()).await {
        Err(BindError::ExposedWithoutAuth { addr }) => assert_eq!(addr, args.api_addr),
        Err(e) => bail!("refused for the wrong reason: {e}"),
        Ok(c) => {
            c.shutdown().await;
            bail!("served 0.0.0.0 without authentication");
        }
    }
    // Told so explicitly, it serves; with tokens required, it serves too.
    args.insecure_expose_without_auth = true;
    Coordinator::start(args.config()?, clock.clone()).await?.shutdown().await;
    let dir = tempfile::tempdir()?;
    let mut args = CoordinatorArgs::ephemeral(dir.path().to_path_buf());
    args.api_addr = "0.0.0.0:0".parse()?;
    args.auth = AuthArg::Required;
    Coordinator::start(args.config()?, clock).await?.shutdown().await;
    Ok(())
}
