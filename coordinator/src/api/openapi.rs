//! The API description served at `/v1/openapi.json`: an OpenAPI 3.0 document
//! built from the route table (paths, methods, summaries, who may call each
//! route) and from a hand-written schema of every request and response.
//!
//! Hand-written rather than derived by a crate (utoipa, schemars): the types
//! it describes live in three crates, several serialize through custom code
//! (ids that validate, rules that print as their source, flattened views),
//! and the bounds that matter to a client or a fuzzer are in `validate`
//! methods no derive can see. A derive would also pull a proc-macro crate and
//! annotations into every shared type. The schemas are kept true by tests:
//! every route of the table is described with its method and security, the
//! bounds are read from the same constants the validators use, and real
//! values of the types, serialized, validate against the schemas
//! (`tests` below and `tests/tests/openapi.rs`); `scripts/schemathesis.sh`
//! fuzzes a running coordinator against the served document.

use super::routes::{Route, RouteId, ROUTES};
use crate::auth::{Permission, Role, MAX_NAME_LEN as TOKEN_NAME_LEN};
use crate::http::{self, Body};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::Response;
use serde_json::{json, Map, Value};
use sluice_common::cache::bounds as cache_bounds;
use sluice_common::ids::MAX_NAME_LEN;
use sluice_common::labels::{MAX_LABELS, MAX_LABEL_LEN};
use sluice_common::logs;
use sluice_common::placement::MAX_ANTI_AFFINITY;
use sluice_common::spec::bounds;
use sluice_common::ImageRef;
use std::sync::OnceLock;

/// The document as served, built once.
pub fn response() -> Response<Body> {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    let bytes = BYTES.get_or_init(|| serde_json::to_vec(&document()).expect("a JSON value always serializes"));
    let mut resp = Response::new(http::full(bytes.clone()));
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// A DNS label: function, node and rule names.
const DNS_LABEL: &str = "^[a-z]([-a-z0-9]*[a-z0-9])?$";
const U64_MAX: u64 = u64::MAX;

/// How one route is called and what it answers, beyond what the table says.
struct Operation {
    /// Path parameters, in the order of the path's braces.
    path: Vec<(&'static str, Value)>,
    /// Query parameters: name, schema, description.
    query: Vec<(&'static str, Value, &'static str)>,
    /// The JSON request body's schema, if the route reads one.
    body: Option<Value>,
    /// Success status and its JSON schema (`None`: Prometheus text).
    ok: (u16, Option<Value>),
    /// Other success statuses with the same schema (201 on create).
    also_ok: &'static [u16],
    /// Error statuses besides those every route of its kind gives (400 with
    /// parameters or a body, 401/403 unless public, 413 with a body).
    errors: &'static [u16],
    /// The success body is JSON lines (`application/x-ndjson`), each one
    /// matching the schema, streamed rather than one JSON document.
    lines: bool,
    /// The content types of a success without a JSON schema (`ok.1` None);
    /// empty: Prometheus text.
    media: &'static [&'static str],
}

/// Errors of a route that commits or reads through Raft: 409 when the change
/// is refused, 421 from a coordinator that lost leadership mid-call, 503 when
/// there is no quorum (with `Retry-After`).
const CLUSTER: &[u16] = &[409, 421, 503];
const CLUSTER_404: &[u16] = &[404, 409, 421, 503];

fn r(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn array(items: Value) -> Value {
    json!({ "type": "array", "items": items })
}

/// Integers carry bounds, not `format`: OpenAPI's int32/int64 are signed, and
/// Sluice's u32 and u64 values go past them.
fn u64_schema() -> Value {
    json!({ "type": "integer", "minimum": 0, "maximum": U64_MAX })
}

fn u32_range(lo: u32, hi: u32) -> Value {
    json!({ "type": "integer", "minimum": lo, "maximum": hi })
}

fn u32_any() -> Value {
    u32_range(0, u32::MAX)
}

fn dns_label(what: &str) -> Value {
    json!({ "type": "string", "pattern": DNS_LABEL, "minLength": 1, "maxLength": MAX_NAME_LEN, "description": format!("{what}: 1-{MAX_NAME_LEN} lowercase letters, digits and '-', starting with a letter and not ending with '-'.") })
}

fn object(required: &[&str], properties: Value, closed: bool) -> Value {
    let mut o = json!({ "type": "object", "properties": properties });
    if !required.is_empty() {
        o["required"] = json!(required);
    }
    if closed {
        o["additionalProperties"] = json!(false);
    }
    o
}

fn operation(id: RouteId) -> Operation {
    use RouteId::*;
    let op = |ok: u16, schema: Value| Operation { path: vec![], query: vec![], body: None, ok: (ok, Some(schema)), also_ok: &[], errors: &[], lines: false, media: &[] };
    let function = || ("name", dns_label("A function name"));
    let node = || ("node", dns_label("A node name"));
    // The pattern is the part of the accepted forms that is always in range, so generated values reach the handler.
    let range = || {
        (
            "range",
            json!({ "type": "string", "pattern": "^([1-9][0-9]{0,3}s?|[1-9][0-9]{0,2}m|([1-9]|1[0-9]|2[0-4])h)$" }),
            "Seconds, or a number with s, m or h; 1s to 24h (default 60s).",
        )
    };
    match id {
        Health => Operation { errors: &[503], ..op(200, object(&["status"], json!({ "status": { "type": "string", "enum": ["ok"] } }), true)) },
        OpenApi => op(200, json!({ "type": "object", "required": ["openapi", "paths"] })),
        Metrics => Operation { ok: (200, None), ..op(200, Value::Null) },
        ListFunctions => Operation { errors: CLUSTER, ..op(200, array(r("FunctionView"))) },
        PutFunction => Operation {
            body: Some(r("FunctionSpec")),
            also_ok: &[201],
            errors: &[409, 421, 502, 503],
            ..op(200, object(&["function"], json!({ "function": r("FunctionSpec") }), true))
        },
        GetFunction => Operation {
            path: vec![function()],
            errors: CLUSTER_404,
            ..op(200, object(&["function", "instances"], json!({ "function": r("FunctionView"), "instances": array(r("Instance")) }), true))
        },
        RemoveFunction => Operation { path: vec![function()], errors: CLUSTER_404, ..op(200, object(&["removed"], json!({ "removed": dns_label("The function removed") }), true)) },
        ListInstances => Operation { query: vec![("function", dns_label("A function name"), "Only this function's instances.")], errors: CLUSTER, ..op(200, array(r("Instance"))) },
        ListNodes => Operation { errors: CLUSTER, ..op(200, array(r("NodeView"))) },
        Cluster => op(200, r("RaftStatus")),
        AddMember => Operation {
            body: Some(object(
                &["id", "raft_addr"],
                json!({
                    "id": { "type": "integer", "minimum": 1, "maximum": U64_MAX },
                    "raft_addr": { "type": "string", "maxLength": 260, "description": "host:port of the new coordinator's Raft listener." },
                    "learner": { "type": "boolean", "default": false, "description": "Stay a learner instead of becoming a voter once caught up." }
                }),
                true,
            )),
            // 504: added as a learner, but it did not catch up in time to be promoted.
            errors: &[409, 421, 503, 504],
            ..op(200, r("RaftStatus"))
        },
        RemoveMember => Operation {
            path: vec![("id", json!({ "type": "string", "pattern": "^[1-9][0-9]{0,18}$", "description": "A coordinator id, 1 up." }))],
            errors: CLUSTER,
            ..op(200, r("RaftStatus"))
        },
        Desired => Operation {
            path: vec![node()],
            query: vec![
                ("after", u64_schema(), "Answer as soon as the desired revision passes this (default 0)."),
                ("wait_ms", u64_schema(), "Longest wait for a newer revision, in milliseconds; more than 30000 counts as 30000 (default 0)."),
            ],
            ..op(200, r("DesiredSet"))
        },
        Report => {
            Operation { path: vec![node()], body: Some(r("NodeReport")), errors: CLUSTER, ..op(200, object(&["accepted"], json!({ "accepted": { "type": "boolean" } }), true)) }
        }
        NodeFigures => Operation { path: vec![node()], query: vec![range()], ..op(200, r("ScopeView")) },
        InstanceFigures => Operation {
            path: vec![("id", json!({ "type": "string", "pattern": "^i[0-9]{1,19}$", "description": "An instance id, i<number>." }))],
            query: vec![range()],
            ..op(200, r("ScopeView"))
        },
        FunctionFigures => Operation { path: vec![function()], query: vec![range()], ..op(200, r("FunctionMetricsView")) },
        FunctionTimeline => Operation { path: vec![function()], query: vec![range()], errors: &[404], ..op(200, r("FunctionTimeline")) },
        UiPage => Operation { ok: (200, None), media: &["text/html"], ..op(200, Value::Null) },
        UiAsset => Operation {
            path: vec![("file", json!({ "type": "string", "enum": super::ui::ASSETS.iter().map(|(name, _, _)| *name).collect::<Vec<_>>() }))],
            ok: (200, None),
            media: &["text/javascript", "text/css", "image/svg+xml"],
            errors: &[404],
            ..op(200, Value::Null)
        },
        RecentBusEvents => Operation {
            query: vec![("limit", u32_range(1, crate::windows_api::MAX_EVENTS as u32), "How many of the latest events (default 100).")],
            ..op(200, array(r("BusEvent")))
        },
        Drain | Undrain => Operation {
            path: vec![node()],
            errors: CLUSTER_404,
            ..op(200, object(&["node", "draining"], json!({ "node": dns_label("The node"), "draining": { "type": "boolean" } }), true))
        },
        ListRules => Operation { errors: CLUSTER, ..op(200, array(r("RuleSource"))) },
        PutRules => Operation { body: Some(r("RulesBody")), errors: CLUSTER, ..op(200, object(&["applied"], json!({ "applied": array(dns_label("A rule name")) }), true)) },
        CheckRules => {
            Operation { body: Some(r("RulesBody")), ..op(200, object(&["valid", "rules"], json!({ "valid": { "type": "boolean" }, "rules": array(r("RuleSource")) }), true)) }
        }
        ExplainRules => Operation { query: vec![("name", dns_label("A rule name"), "Only this rule.")], errors: CLUSTER_404, ..op(200, array(r("RuleExplanation"))) },
        RemoveRule => Operation {
            path: vec![("name", dns_label("A rule name"))],
            errors: CLUSTER_404,
            ..op(200, object(&["removed"], json!({ "removed": dns_label("The rule removed") }), true))
        },
        Events => Operation {
            query: vec![
                ("function", dns_label("A function name"), "Only this function's decisions."),
                ("limit", u32_range(1, crate::events::CAPACITY as u32), "How many of the latest decisions (default 100)."),
            ],
            ..op(200, array(r("DecisionEvent")))
        },
        ExplainPlacement => Operation {
            path: vec![function()],
            errors: CLUSTER_404,
            ..op(200, object(&["function", "nodes"], json!({ "function": dns_label("The function"), "nodes": array(r("NodeVerdict")) }), true))
        },
        ListTokens => Operation { errors: CLUSTER, ..op(200, array(r("TokenView"))) },
        CreateToken => Operation {
            body: Some(r("CreateToken")),
            errors: CLUSTER,
            ..op(201, object(&["token", "info"], json!({ "token": { "type": "string", "description": "sluice_<id>_<secret>; shown only here." }, "info": r("TokenView") }), true))
        },
        GetInvocation => Operation {
            path: vec![("id", json!({ "type": "string", "pattern": "^[kr][0-9a-f]{32}$", "description": "The id the 202 of POST /async-function/<name> gave." }))],
            errors: &[404],
            ..op(200, r("Invocation"))
        },
        ListRegistries => Operation { errors: CLUSTER, ..op(200, r("Registries")) },
        SetRegistries => Operation { body: Some(r("Registries")), errors: CLUSTER, ..op(200, r("Registries")) },
        RevokeToken => Operation {
            path: vec![("id", json!({ "type": "string", "pattern": "^[0-9a-fA-F]{1,64}$", "description": "A token id (`sluice tokens ls`)." }))],
            errors: CLUSTER_404,
            ..op(200, object(&["revoked"], json!({ "revoked": { "type": "string" } }), true))
        },
        FunctionLogs => Operation {
            path: vec![function()],
            query: vec![
                ("tail", u32_range(0, logs::MAX_TAIL), "Last lines per instance (default 100)."),
                ("follow", json!({ "type": "boolean" }), "Keep the answer open and send new lines until the instances stop (default false)."),
                (
                    "since",
                    json!({ "type": "string", "pattern": "^([1-9][0-9]{0,4}s?|[1-9][0-9]{0,3}m|([1-9]|[1-9][0-9]|1[0-5][0-9]|16[0-8])h)$" }),
                    "Only lines of the last seconds, or a number with s, m or h; 1s to 168h.",
                ),
                ("instance", json!({ "type": "string", "pattern": "^i[0-9]{1,19}$" }), "Only this instance (i<number>, as `sluice ls` shows)."),
            ],
            // 502: an instance's agent could not be reached or refused; 503 also when an agent has not reported to this coordinator.
            errors: &[404, 421, 502, 503],
            lines: true,
            ..op(200, r("LogLine"))
        },
        PurgeCache => {
            let path = json!({ "type": "string", "nullable": true, "pattern": "^/[!->@-~]*$", "maxLength": 2048, "description": "One path below the function's name (any query); absent: every cached answer." });
            Operation {
                path: vec![function()],
                body: Some(object(&[], json!({ "path": path }), true)),
                errors: CLUSTER_404,
                ..op(200, object(&["purged"], json!({ "purged": dns_label("The function"), "path": path }), true))
            }
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        400 => "Invalid input: `error.field` names it, `error.message` says how to fix it.",
        401 => "No token, or a malformed, unknown, revoked or expired one.",
        403 => "The token lacks a role that grants this route.",
        404 => "The named object does not exist.",
        405 => "The path has no such method: `Allow` lists those it has.",
        409 => "The cluster refused the change (say, a limit or a pending membership change).",
        413 => "The body is too large.",
        421 => "This coordinator stopped leading while serving the call: retry.",
        502 => "The image's registry could not be asked for its digest, or refused the coordinator's credentials: check that it runs and is reachable and the coordinator's --registry-credentials for it, then retry.",
        503 => "The cluster cannot commit or confirm now (no quorum): retry after `Retry-After`.",
        504 => "The new coordinator was added as a learner but did not catch up in time.",
        _ => "Error.",
    }
}

fn route_operation(route: &Route) -> Value {
    let op = operation(route.id);
    let mut o = Map::new();
    o.insert("operationId".into(), json!(format!("{:?}", route.id)));
    o.insert("summary".into(), json!(route.summary));
    let roles: Vec<&str> = route.permission.roles().into_iter().map(Role::as_str).collect();
    if route.permission == Permission::Public {
        o.insert("description".into(), json!("Public: no token needed."));
        o.insert("security".into(), json!([]));
    } else {
        o.insert("description".into(), json!(format!("Needs a bearer token with one of the roles: {}.", roles.join(", "))));
        o.insert("security".into(), json!([{ "bearerAuth": [] }]));
    }
    o.insert("x-sluice-permission".into(), json!(route.permission));
    let mut parameters: Vec<Value> = op.path.iter().map(|(name, schema)| json!({ "name": name, "in": "path", "required": true, "schema": schema })).collect();
    parameters.extend(op.query.iter().map(|(name, schema, about)| json!({ "name": name, "in": "query", "required": false, "schema": schema, "description": about })));
    if !parameters.is_empty() {
        o.insert("parameters".into(), json!(parameters));
    }
    if let Some(body) = &op.body {
        o.insert("requestBody".into(), json!({ "required": true, "content": { "application/json": { "schema": body } } }));
    }
    let mut responses = Map::new();
    let (status, schema) = &op.ok;
    let content = match schema {
        Some(s) if op.lines => json!({ "application/x-ndjson": { "schema": s } }),
        Some(s) => json!({ "application/json": { "schema": s } }),
        None if op.media.is_empty() => json!({ "text/plain": { "schema": { "type": "string" } } }),
        None => Value::Object(op.media.iter().map(|m| (m.to_string(), json!({ "schema": { "type": "string" } }))).collect()),
    };
    for s in std::iter::once(status).chain(op.also_ok) {
        responses.insert(s.to_string(), json!({ "description": "Success.", "content": content }));
    }
    let mut errors: Vec<u16> = op.errors.to_vec();
    if !op.path.is_empty() || !op.query.is_empty() || op.body.is_some() {
        errors.push(400);
    }
    if route.permission != Permission::Public {
        errors.extend([401, 403]);
    }
    if op.body.is_some() {
        errors.push(413);
    }
    errors.sort_unstable();
    errors.dedup();
    for e in errors {
        responses.insert(e.to_string(), json!({ "$ref": format!("#/components/responses/E{e}") }));
    }
    o.insert("responses".into(), Value::Object(responses));
    Value::Object(o)
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let item = paths.entry(route.path).or_insert_with(|| json!({}));
        item[route.method.to_ascii_lowercase()] = route_operation(route);
    }
    let mut responses = Map::new();
    // 405 is listed for clients, though no operation gives it: only a method the document does not list gets it.
    for status in [400, 401, 403, 404, 405, 409, 413, 421, 502, 503, 504] {
        let mut resp = json!({ "description": reason(status), "content": { "application/json": { "schema": r("Error") } } });
        if status == 503 {
            resp["headers"] = json!({ "Retry-After": { "description": "Seconds to wait before retrying.", "schema": { "type": "integer" } } });
        }
        responses.insert(format!("E{status}"), resp);
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Sluice coordinator API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Every route of the coordinator's JSON API. Errors are `{\"error\":{\"code\",\"field\"?,\"message\"}}`. A method a path does not support gets 405; a path that is no route gets 404."
        },
        "paths": paths,
        "components": {
            "securitySchemes": { "bearerAuth": { "type": "http", "scheme": "bearer", "description": "sluice_<id>_<secret>, from `sluice tokens create` or <data-dir>/admin.token." } },
            "responses": responses,
            "schemas": schemas(),
        }
    })
}

fn schemas() -> Value {
    // Apart from the spec's other fields: one json! of them all passes the macro's recursion limit.
    let cache = json!({
        "type": "object",
        "nullable": true,
        "required": ["ttl_secs"],
        "additionalProperties": false,
        "description": "The gateways' response cache for this function; absent: nothing is cached.",
        "properties": {
            "ttl_secs": { "type": "integer", "minimum": cache_bounds::TTL_SECS.0, "maximum": cache_bounds::TTL_SECS.1, "description": "Longest an answer is served from the cache; the function's max-age or s-maxage shortens it." },
            "methods": { "type": "array", "minItems": 1, "maxItems": 3, "uniqueItems": true, "items": { "type": "string", "enum": ["GET", "HEAD", "POST"] }, "default": ["GET", "HEAD"] },
            "vary_headers": { "type": "array", "maxItems": cache_bounds::VARY_HEADERS, "uniqueItems": true, "items": { "type": "string", "pattern": "^[a-z0-9-]+$", "maxLength": cache_bounds::HEADER_NAME_LEN }, "description": "Request headers whose values are part of the key (not authorization or cookie)." },
            "max_entry_bytes": { "type": "integer", "minimum": cache_bounds::MAX_ENTRY_BYTES.0, "maximum": cache_bounds::MAX_ENTRY_BYTES.1, "default": 1048576 }
        }
    });
    let labels = json!({
        "type": "object",
        "maxProperties": MAX_LABELS,
        "additionalProperties": { "type": "string", "pattern": "^[A-Za-z0-9._/-]+$", "minLength": 1, "maxLength": MAX_LABEL_LEN },
        "description": format!("key=value labels; keys and values are 1-{MAX_LABEL_LEN} of letters, digits and . _ / -; at most {MAX_LABELS}.")
    });
    let timestamp = json!({ "type": "integer", "minimum": 0, "maximum": U64_MAX, "description": "Unix milliseconds." });
    let nullable_number = json!({ "type": "number", "nullable": true });
    let resources = object(&["cpu_millis", "memory_mb"], json!({ "cpu_millis": u64_schema(), "memory_mb": u64_schema() }), false);
    let instance_state = json!({ "type": "string", "enum": ["pending", "starting", "ready", "paused", "stopping", "gone"] });
    let endpoint = json!({ "type": "object", "nullable": true, "required": ["host", "port"], "properties": { "host": { "type": "string" }, "port": u32_range(0, 65535) } });
    let ip = json!({ "type": "string", "description": "An IPv4 or IPv6 address." });
    let (cpu, mem, pids) = (bounds::CPU_MILLIS, bounds::MEMORY_MB, bounds::PIDS);
    let s = sluice_common::scaling::bounds::STABLE_WINDOW_SECS;
    let env_key = format!("^[A-Za-z_][A-Za-z0-9_]{{0,{}}}$", bounds::ENV_KEY_LEN - 1);
    let (pr_lo, pr_hi) = sluice_common::rules::bounds::PRIORITY;
    let event_kinds = ["instance_started", "instance_ready", "instance_paused", "instance_stopped", "instance_failed"];
    json!({
        "Error": object(&["error"], json!({
            "error": object(&["code", "message"], json!({
                "code": { "type": "string", "description": "Machine-readable, e.g. invalid_input, not_found, no_leader." },
                "field": { "type": "string", "description": "The offending field or parameter." },
                "message": { "type": "string", "description": "What is wrong and what to do next." }
            }), true)
        }), true),
        "Labels": labels,
        "Resources": resources,
        "Limits": object(&[], json!({
            "cpu_millis": { "type": "integer", "minimum": cpu.0, "maximum": cpu.1, "default": 250, "description": "Thousandths of a core." },
            "memory_mb": { "type": "integer", "minimum": mem.0, "maximum": mem.1, "default": 128 },
            "pids": { "type": "integer", "minimum": pids.0, "maximum": pids.1, "default": 256 }
        }), true),
        "Scaling": object(&[], json!({
            "target_utilization_percent": { "type": "integer", "minimum": 1, "maximum": 100, "default": 70 },
            "stable_window_secs": { "type": "integer", "minimum": s.0, "maximum": s.1, "default": 60 },
            "panic_window_secs": { "type": "integer", "minimum": 1, "maximum": s.1, "default": 6, "description": "At most stable_window_secs." },
            "panic_threshold_percent": { "type": "integer", "minimum": 110, "maximum": 1000, "default": 200 },
            "scale_down_max_percent": { "type": "integer", "minimum": 1, "maximum": 100, "default": 50 },
            "scale_down_step_secs": { "type": "integer", "minimum": 0, "maximum": 3600, "default": 2 },
            "predict": { "type": "boolean", "default": true }
        }), true),
        "Placement": object(&[], json!({
            "strategy": { "type": "string", "enum": ["binpack", "spread"], "default": "spread" },
            "node_selector": r("Labels"),
            "max_per_node": { "type": "integer", "minimum": 1, "maximum": 1000, "nullable": true },
            "anti_affinity": { "type": "array", "maxItems": MAX_ANTI_AFFINITY, "items": dns_label("A function name") }
        }), true),
        "FunctionSpec": object(&["name", "image"], json!({
            "name": dns_label("The function's name"),
            "image": { "type": "string", "minLength": 1, "maxLength": ImageRef::MAX_LEN, "description": "[registry[:port]/]name[:tag][@sha256:digest], lowercase repository names." },
            "port": { "type": "integer", "minimum": 1, "maximum": 65535, "default": 8080 },
            "env": { "type": "object", "maxProperties": bounds::ENV_ENTRIES, "propertyNames": { "pattern": env_key }, "additionalProperties": { "type": "string", "maxLength": bounds::ENV_VALUE_LEN } },
            "limits": r("Limits"),
            "min_instances": { "type": "integer", "minimum": 0, "maximum": bounds::MAX_INSTANCES, "default": 0, "description": "At most max_instances." },
            "max_instances": { "type": "integer", "minimum": 1, "maximum": bounds::MAX_INSTANCES, "default": 10 },
            "concurrency": { "type": "integer", "minimum": 1, "maximum": bounds::MAX_CONCURRENCY, "default": 4 },
            "idle_timeout_secs": { "type": "integer", "minimum": bounds::IDLE_TIMEOUT_SECS.0, "maximum": bounds::IDLE_TIMEOUT_SECS.1, "default": 60 },
            "start_timeout_secs": { "type": "integer", "minimum": bounds::START_TIMEOUT_SECS.0, "maximum": bounds::START_TIMEOUT_SECS.1, "default": 30 },
            "queue_limit": { "type": "integer", "minimum": bounds::QUEUE_LIMIT.0, "maximum": bounds::QUEUE_LIMIT.1, "default": 100 },
            "health_path": { "type": "string", "pattern": "^/[!-~]*$", "maxLength": bounds::HEALTH_PATH_LEN, "default": "/_/health" },
            "labels": r("Labels"),
            "scaling": r("Scaling"),
            "placement": r("Placement"),
            "private": { "type": "boolean", "default": false, "description": "Callers at the gateway need a token with the invoker role." },
            "request_timeout_secs": { "type": "integer", "minimum": bounds::REQUEST_TIMEOUT_SECS.0, "maximum": bounds::REQUEST_TIMEOUT_SECS.1, "default": 300, "description": "An instance that has not begun its answer by then gets its caller 504." },
            "rate_limit": {
                "type": "object",
                "nullable": true,
                "required": ["requests_per_second"],
                "additionalProperties": false,
                "description": "At most this many requests per second at each gateway; beyond it 429 with Retry-After.",
                "properties": {
                    "requests_per_second": { "type": "integer", "minimum": 1, "maximum": sluice_common::rate::MAX_RATE },
                    "burst": { "type": "integer", "minimum": 1, "maximum": sluice_common::rate::MAX_RATE, "nullable": true, "description": "Default: one second's worth." }
                }
            },
            "image_digest": { "type": "string", "nullable": true, "pattern": "^sha256:[0-9a-f]{64}$", "description": "Set by the coordinator at deploy time: the digest `image` named then; instances run exactly that." },
            "cache": cache
        }), true),
        "FunctionView": object(&["spec", "instances", "requests", "in_flight", "queued", "cold_starts"], json!({
            "spec": r("FunctionSpec"),
            "instances": { "type": "object", "description": "Instances by state.", "additionalProperties": u32_any() },
            "requests": u64_schema(),
            "in_flight": u32_any(),
            "queued": u32_any(),
            "cold_starts": u64_schema()
        }), true),
        "Instance": object(&["id", "function", "node", "state", "endpoint", "created_at", "state_since", "reserved"], json!({
            "id": u64_schema(),
            "function": dns_label("Its function"),
            "node": dns_label("Its node"),
            "state": instance_state,
            "endpoint": endpoint,
            "created_at": timestamp,
            "state_since": timestamp,
            "reason": { "type": "string" },
            "replaces": u64_schema(),
            "addr": ip,
            "reserved": r("Resources")
        }), true),
        "NodeView": object(&["id", "capacity", "health", "draining", "state_since", "recorded_at", "state", "reserved", "instances"], json!({
            "id": dns_label("The node"),
            "capacity": r("Resources"),
            "labels": r("Labels"),
            "max_instances": u32_any(),
            "images": array(json!({ "type": "string" })),
            "health": { "type": "string", "enum": ["ready", "suspect", "down"] },
            "draining": { "type": "boolean" },
            "state_since": timestamp,
            "recorded_at": timestamp,
            "state": { "type": "string", "enum": ["ready", "suspect", "down", "draining"] },
            "reserved": r("Resources"),
            "instances": u32_any(),
            "heard_ms_ago": u64_schema()
        }), true),
        "RaftStatus": object(&["id", "leader", "term", "role", "commit", "applied", "members", "stopped"], json!({
            "id": u64_schema(),
            "leader": { "type": "integer", "minimum": 0, "nullable": true },
            "term": u64_schema(),
            "role": { "type": "string" },
            "commit": u64_schema(),
            "applied": u64_schema(),
            "members": array(object(&["id", "raft_addr", "role"], json!({
                "id": u64_schema(),
                "raft_addr": { "type": "string", "nullable": true },
                "role": { "type": "string", "enum": ["voter", "learner"] },
                "matched": u64_schema()
            }), true)),
            "stopped": { "type": "string", "nullable": true }
        }), false),
        "DesiredSet": object(&["revision", "instances"], json!({
            "revision": u64_schema(),
            "instances": array(object(&["id", "spec", "state"], json!({
                "id": u64_schema(),
                "spec": r("FunctionSpec"),
                "state": { "type": "string", "enum": ["running", "paused"] }
            }), true))
        }), true),
        "NodeReport": object(&["node", "capacity", "instances", "at"], json!({
            "node": dns_label("The reporting node; the same as in the path"),
            "capacity": r("Resources"),
            "instances": { "type": "array", "maxItems": super::MAX_REPORTED_INSTANCES, "items": object(&["id", "function", "state"], json!({
                "id": u64_schema(),
                "function": dns_label("Its function"),
                "state": instance_state,
                "endpoint": endpoint,
                "reason": { "type": "string", "nullable": true },
                "addr": { "type": "string", "nullable": true, "description": "An IPv4 or IPv6 address." }
            }), false) },
            "at": timestamp,
            "labels": r("Labels"),
            "max_instances": { "type": "integer", "minimum": 0, "maximum": u32::MAX, "nullable": true },
            "images": { "type": "array", "maxItems": 1024, "uniqueItems": true, "items": { "type": "string" } }
        }), false),
        "SeriesSummary": object(&["metric", "count", "avg", "min", "max", "p95", "last"], json!({
            "metric": { "type": "string" },
            "count": u64_schema(),
            "avg": nullable_number,
            "min": nullable_number,
            "max": nullable_number,
            "p95": nullable_number,
            "last": nullable_number,
            "rate": nullable_number
        }), true),
        "ScopeView": object(&["range_secs", "series"], json!({ "range_secs": u64_schema(), "series": array(r("SeriesSummary")) }), true),
        "FunctionMetricsView": object(&["function", "range_secs", "combined", "instances"], json!({
            "function": dns_label("The function"),
            "range_secs": u64_schema(),
            "combined": { "type": "object", "additionalProperties": nullable_number },
            "instances": { "type": "object", "description": "Each instance's series, by instance id (i<number>).", "additionalProperties": array(r("SeriesSummary")) }
        }), true),
        "FunctionTimeline": object(&["function", "range_secs", "step_ms", "instances", "demand"], json!({
            "function": dns_label("The function"),
            "range_secs": u64_schema(),
            "step_ms": { "type": "integer", "minimum": 1, "maximum": U64_MAX, "description": "Each slot's length: the fine ring's step up to its span (1 s over 15 minutes), the coarse ring's beyond (1 min)." },
            "instances": array(object(&["at", "ready", "desired", "predicted"], json!({
                "at": timestamp,
                "ready": { "type": "number", "minimum": 0, "description": "Ready instances, the mean of the slot's samples." },
                "desired": { "type": "number", "minimum": 0, "description": "Instances not taken out of service: pending, starting, ready and paused." },
                "predicted": { "type": "number", "minimum": 0, "description": "Instances the keep-warm model holds (hot and paused); 0 without prediction." }
            }), true)),
            "demand": array(object(&["at", "requests_per_sec", "concurrency"], json!({
                "at": timestamp,
                "requests_per_sec": { "type": "number", "minimum": 0 },
                "concurrency": { "type": "number", "minimum": 0, "description": "Invocations in the gateways at once (queued or served), on average." }
            }), true))
        }), true),
        "BusEvent": object(&["v", "kind", "node", "boot", "seq", "ts_ms", "body"], json!({
            "v": u32_any(),
            "kind": { "type": "string", "enum": ["event"] },
            "node": dns_label("The publishing node"),
            "boot": u64_schema(),
            "seq": u64_schema(),
            "ts_ms": u64_schema(),
            "body": object(&["type", "instance", "function"], json!({
                "type": { "type": "string", "enum": event_kinds },
                "instance": u64_schema(),
                "function": dns_label("Its function"),
                "detail": { "type": "string" }
            }), true)
        }), true),
        "RuleSource": object(&["name", "rule"], json!({
            "name": dns_label("The rule's name, unique among the rules"),
            // No pattern for scope and rule: they are stored as written, and the parsers take any
            // Unicode white space where a pattern's \s would not (U+0085), so a stored rule could
            // fail its own schema in a later answer.
            "scope": { "type": "string", "default": "all", "description": "all, function:NAME or labels:k=v,... (spaces around the parts are allowed)." },
            "priority": { "type": "integer", "minimum": pr_lo, "maximum": pr_hi, "default": 0 },
            "rule": { "type": "string", "minLength": 1, "maxLength": sluice_common::rules::bounds::TEXT_BYTES, "description": "when ... [for ...] then ... [cooldown ...] (see docs/rules.md)." }
        }), true),
        "RulesBody": object(&["rules"], json!({ "rules": { "type": "array", "maxItems": super::decisions::MAX_RULES, "items": r("RuleSource") } }), true),
        "RuleExplanation": object(&["rule", "function", "priority", "text", "values", "condition", "in_effect", "why"], json!({
            "rule": dns_label("The rule"),
            "function": dns_label("The function"),
            "priority": { "type": "integer" },
            "text": { "type": "string" },
            "values": array(object(&["comparison", "left", "right"], json!({ "comparison": { "type": "string" }, "left": nullable_number, "right": nullable_number }), true)),
            "condition": { "type": "boolean", "nullable": true },
            "holding_since": timestamp,
            "last_fired": timestamp,
            "cooldown_until": timestamp,
            "in_effect": { "type": "boolean" },
            "why": { "type": "string" }
        }), true),
        "DecisionEvent": object(&["index", "term", "at", "action", "why", "reason"], json!({
            "index": u64_schema(),
            "term": u64_schema(),
            "at": timestamp,
            "function": dns_label("The function"),
            "instance": u64_schema(),
            "node": dns_label("The node"),
            "action": { "type": "string" },
            "why": { "type": "string" },
            "reason": { "type": "object", "required": ["kind"], "properties": { "kind": { "type": "string" } } }
        }), false),
        "NodeVerdict": object(&["node", "filters"], json!({
            "node": dns_label("The node"),
            "filters": array(object(&["filter", "passed", "detail"], json!({ "filter": { "type": "string" }, "passed": { "type": "boolean" }, "detail": { "type": "string" } }), true)),
            "scores": object(&["fit", "image", "load", "colocation", "preference", "total"], json!({
                "fit": { "type": "number" }, "image": { "type": "number" }, "load": { "type": "number" },
                "colocation": { "type": "number" }, "preference": { "type": "number" }, "total": { "type": "number" }
            }), true)
        }), true),
        "Role": { "type": "string", "enum": Role::ALL.iter().map(|r| r.as_str()).collect::<Vec<_>>() },
        "TokenView": object(&["id", "name", "roles", "created_at"], json!({
            "id": { "type": "string" },
            "name": { "type": "string" },
            "roles": array(r("Role")),
            "created_at": timestamp,
            "expires_at": timestamp
        }), true),
        "LogLine": object(&["instance", "stream", "line"], json!({
            "instance": u64_schema(),
            "stream": { "type": "string", "enum": ["stdout", "stderr"] },
            "line": { "type": "string", "maxLength": logs::MAX_LINE_BYTES, "description": "The text without its line break; longer lines are cut." }
        }), true),
        "Invocation": object(&["id", "function", "state", "attempts", "errors", "first_seen_ms", "updated_ms"], json!({
            "id": { "type": "string" },
            "function": { "type": "string" },
            "state": { "type": "string", "enum": ["queued", "running", "retrying", "done", "dead_lettered"] },
            "attempts": u32_any(),
            "errors": { "type": "array", "items": object(&["attempt", "error"], json!({ "attempt": u32_any(), "error": { "type": "string" } }), true) },
            "result": object(&["status", "truncated"], json!({
                "status": { "type": "integer", "minimum": 100, "maximum": 999 },
                "content_type": { "type": "string" },
                "body": { "type": "string" },
                "body_base64": { "type": "string" },
                "truncated": { "type": "boolean" }
            }), true),
            "coordinator": { "type": "string" },
            "first_seen_ms": { "type": "integer", "minimum": 0 },
            "updated_ms": { "type": "integer", "minimum": 0 }
        }), true),
        "Registries": object(&["allowed"], json!({
            "allowed": {
                "type": "array",
                "maxItems": crate::registry::MAX_ALLOWED,
                "description": "Registries images may come from, host[:port] (docker.io for Docker Hub); empty allows any.",
                "items": { "type": "string", "minLength": 1, "maxLength": 259, "pattern": "^[a-z0-9.-]+(:[0-9]{1,5})?$" }
            }
        }), true),
        "CreateToken": object(&["name", "roles"], json!({
            "name": { "type": "string", "pattern": "^[a-z0-9._-]+$", "minLength": 1, "maxLength": TOKEN_NAME_LEN },
            "roles": { "type": "array", "minItems": 1, "maxItems": Role::ALL.len(), "items": r("Role") },
            "expires_in_secs": { "type": "integer", "minimum": 1, "maximum": super::tokens::MAX_LIFETIME_SECS, "nullable": true, "description": "Leave out (or null) for a token that does not expire." }
        }), true),
    })
}

/// Checking answers against the document, for tests here and end to end.
pub mod conformance {
    use serde_json::Value;

    /// Checks `value` against `schema` (the subset of JSON Schema the document
    /// uses: `$ref`, type, nullable, enum, properties, required,
    /// additionalProperties, items, min/max, lengths and item counts).
    /// Patterns are not checked: no regex engine is linked in for this.
    pub fn check(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
        if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            let name = reference.trim_start_matches("#/components/schemas/");
            let target = doc["components"]["schemas"].get(name).ok_or_else(|| format!("{at}: no schema {name}"))?;
            return check(doc, target, value, at);
        }
        if value.is_null() {
            let nullable = schema.get("nullable").and_then(Value::as_bool).unwrap_or(false) || schema.get("type").is_none();
            return if nullable { Ok(()) } else { Err(format!("{at}: null where {schema} is wanted")) };
        }
        let fail = |what: String| Err(format!("{at}: {what} ({value})"));
        if let Some(options) = schema.get("enum").and_then(Value::as_array) {
            if !options.contains(value) {
                return fail(format!("not one of {options:?}"));
            }
        }
        match schema.get("type").and_then(Value::as_str) {
            None => {}
            Some("object") => {
                let Some(o) = value.as_object() else { return fail("not an object".into()) };
                for req in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
                    if !o.contains_key(req.as_str().unwrap_or_default()) {
                        return fail(format!("missing {req}"));
                    }
                }
                if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64) {
                    if o.len() as u64 > max {
                        return fail(format!("more than {max} properties"));
                    }
                }
                let props = schema.get("properties").and_then(Value::as_object);
                for (k, v) in o {
                    let at = format!("{at}.{k}");
                    match (props.and_then(|p| p.get(k)), schema.get("additionalProperties")) {
                        (Some(s), _) => check(doc, s, v, &at)?,
                        (None, Some(Value::Bool(false))) => return Err(format!("{at}: not in the schema")),
                        (None, Some(s @ Value::Object(_))) => check(doc, s, v, &at)?,
                        (None, _) => {}
                    }
                }
            }
            Some("array") => {
                let Some(a) = value.as_array() else { return fail("not an array".into()) };
                if schema.get("maxItems").and_then(Value::as_u64).is_some_and(|m| a.len() as u64 > m)
                    || schema.get("minItems").and_then(Value::as_u64).is_some_and(|m| (a.len() as u64) < m)
                {
                    return fail("item count out of bounds".into());
                }
                for (i, v) in a.iter().enumerate() {
                    check(doc, &schema["items"], v, &format!("{at}[{i}]"))?;
                }
            }
            Some("string") => {
                let Some(s) = value.as_str() else { return fail("not a string".into()) };
                let n = s.chars().count() as u64;
                if schema.get("maxLength").and_then(Value::as_u64).is_some_and(|m| n > m) || schema.get("minLength").and_then(Value::as_u64).is_some_and(|m| n < m) {
                    return fail("length out of bounds".into());
                }
            }
            Some("integer") | Some("number") => {
                let integer = schema["type"] == "integer";
                if integer && !(value.is_u64() || value.is_i64()) || !value.is_number() {
                    return fail(format!("not an {}", schema["type"]));
                }
                let v = value.as_f64().unwrap_or(f64::NAN);
                if schema.get("minimum").and_then(Value::as_f64).is_some_and(|m| v < m) || schema.get("maximum").and_then(Value::as_f64).is_some_and(|m| v > m) {
                    return fail("out of bounds".into());
                }
            }
            Some("boolean") if !value.is_boolean() => return fail("not a boolean".into()),
            Some("boolean") => {}
            Some(other) => return Err(format!("{at}: the checker does not know type {other}")),
        }
        Ok(())
    }

    /// Names of the path's parameters, in order.
    pub fn path_params(path: &str) -> Vec<&str> {
        path.split('/').filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}'))).collect()
    }

    /// The schema of `method path`'s answer with `status`.
    pub fn response_schema<'a>(doc: &'a Value, method: &str, path: &str, status: u16) -> Option<&'a Value> {
        let resp = doc["paths"][path][method.to_ascii_lowercase()]["responses"].get(status.to_string())?;
        let resp = match resp.get("$ref").and_then(Value::as_str) {
            Some(r) => &doc["components"]["responses"][r.trim_start_matches("#/components/responses/")],
            None => resp,
        };
        resp["content"]["application/json"].get("schema")
    }

    /// The schema of each line of a JSON-lines answer, if the operation gives one.
    pub fn lines_schema<'a>(doc: &'a Value, method: &str, path: &str, status: u16) -> Option<&'a Value> {
        doc["paths"][path][method.to_ascii_lowercase()]["responses"].get(status.to_string())?["content"]["application/x-ndjson"].get("schema")
    }
}

#[cfg(test)]
mod tests {
    use super::conformance::{check, path_params, response_schema};
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn every_route_is_described_with_its_method_and_security() {
        let doc = document();
        let mut described = 0;
        for route in ROUTES {
            let op = &doc["paths"][route.path][route.method.to_ascii_lowercase()];
            assert!(op.is_object(), "{} {} is missing", route.method, route.path);
            assert_eq!(op["summary"], route.summary);
            let public = route.permission == Permission::Public;
            let security = if public { json!([]) } else { json!([{ "bearerAuth": [] }]) };
            assert_eq!(op["security"], security, "{} {}", route.method, route.path);
            for role in route.permission.roles() {
                assert!(public || op["description"].as_str().unwrap().contains(role.as_str()), "{} {}: role {role} not named", route.method, route.path);
            }
            let codes: BTreeSet<&str> = op["responses"].as_object().unwrap().keys().map(String::as_str).collect();
            assert_eq!(codes.contains("401") && codes.contains("403"), !public, "{} {}: {codes:?}", route.method, route.path);
            // The path's parameters are described, in order, and nothing else is in the path.
            let params: Vec<&str> = op["parameters"].as_array().into_iter().flatten().filter(|p| p["in"] == "path").map(|p| p["name"].as_str().unwrap()).collect();
            assert_eq!(params, path_params(route.path), "{} {}", route.method, route.path);
            described += 1;
        }
        // And nothing is described that is not routed.
        let ops: usize = doc["paths"].as_object().unwrap().values().map(|p| p.as_object().unwrap().len()).sum();
        assert_eq!(ops, described);
        assert!(doc["paths"]["/v1/openapi.json"]["get"]["security"] == json!([]), "the description itself is public");
    }

    #[test]
    fn every_reference_resolves() {
        let doc = document();
        fn walk(doc: &Value, v: &Value) {
            match v {
                Value::Object(o) => {
                    if let Some(Value::String(r)) = o.get("$ref") {
                        let mut target = doc;
                        for part in r.trim_start_matches("#/").split('/') {
                            target = &target[part];
                        }
                        assert!(target.is_object(), "{r} does not resolve");
                    }
                    o.values().for_each(|v| walk(doc, v));
                }
                Value::Array(a) => a.iter().for_each(|v| walk(doc, v)),
                _ => {}
            }
        }
        walk(&doc, &doc);
    }

    #[test]
    fn the_function_spec_schema_lists_every_field_and_accepts_real_specs() {
        use sluice_common::{FunctionName, FunctionSpec};
        let doc = document();
        let schema = &doc["components"]["schemas"]["FunctionSpec"];
        let mut spec = FunctionSpec::new(FunctionName::new("hello").unwrap(), ImageRef::parse("127.0.0.1:5000/sluice/hello:latest").unwrap());
        spec.private = true;
        spec.labels.insert("tier".into(), "web".into());
        spec.placement.max_per_node = Some(2);
        spec.placement.anti_affinity.push(FunctionName::new("other").unwrap());
        spec.env.insert("GREETING".into(), "hi".into());
        spec.rate_limit = Some(sluice_common::rate::RateLimit { requests_per_second: 50, burst: Some(10) });
        spec.image_digest = Some(format!("sha256:{}", "0".repeat(64)));
        spec.cache = Some(Box::new(sluice_common::cache::CacheSpec { vary_headers: vec!["accept-language".into()], ..sluice_common::cache::CacheSpec::new(30) }));
        let value = serde_json::to_value(&spec).unwrap();
        // Every field a spec serializes (all of them, with these settings) is in the schema.
        let fields: BTreeSet<&String> = value.as_object().unwrap().keys().collect();
        let described: BTreeSet<&String> = schema["properties"].as_object().unwrap().keys().collect();
        assert_eq!(fields, described);
        check(&doc, schema, &value, "spec").unwrap();
        // The bounds are the validator's: one past each is refused by both.
        for (field, bad) in [("max_instances", json!(bounds::MAX_INSTANCES + 1)), ("queue_limit", json!(bounds::QUEUE_LIMIT.1 + 1)), ("privileged", json!(true))] {
            let mut v = value.clone();
            v[field] = bad;
            assert!(check(&doc, schema, &v, "spec").is_err(), "{field}");
            let refused = serde_json::from_value::<FunctionSpec>(v).map(|s| s.validate().is_err()).unwrap_or(true);
            assert!(refused, "{field}");
        }
    }

    #[test]
    fn errors_and_status_views_validate() {
        let doc = document();
        let body = |e: crate::http::ApiError| {
            let resp = e.into_response();
            let bytes = futures_body(resp);
            serde_json::from_slice::<Value>(&bytes).unwrap()
        };
        let e = body(crate::http::ApiError::invalid("name", "bad"));
        check(&doc, response_schema(&doc, "POST", "/v1/functions", 400).unwrap(), &e, "error").unwrap();
        let e = body(crate::http::ApiError::not_found("gone"));
        check(&doc, response_schema(&doc, "GET", "/v1/functions/{name}", 404).unwrap(), &e, "error").unwrap();
        let mut bad = e.clone();
        bad["error"]["extra"] = json!(1);
        assert!(check(&doc, &doc["components"]["schemas"]["Error"], &bad, "error").is_err(), "the checker sees extra fields");
    }

    /// The bytes of a response built in memory.
    fn futures_body(resp: Response<Body>) -> Vec<u8> {
        use http_body_util::BodyExt;
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async { resp.into_body().collect().await.unwrap().to_bytes().to_vec() })
    }

    #[test]
    fn the_served_document_is_the_built_one() {
        let served: Value = serde_json::from_slice(&futures_body(response())).unwrap();
        assert_eq!(served, document());
        assert_eq!(served["openapi"], "3.0.3");
    }
}
