//! The coordinator's HTTP API (JSON): functions, instances and the cluster here;
//! nodes, desired sets and agents' reports in `nodes`; rules, decision events
//! and explanations in `decisions`; the dashboard's files in `ui`.
//!
//! Every input is validated before anything changes; errors are 4xx with a JSON
//! body naming the field and the fix, or 503 with `Retry-After` when the cluster
//! cannot commit or confirm right now.
//!
//! Any coordinator serves every route: writes are forwarded to the leader by
//! Raft, and user-facing reads are linearizable (ReadIndex). Agents' long polls
//! read the local state, which is enough for a reconciler.

mod decisions;
mod logs;
mod nodes;
pub mod openapi;
#[cfg(test)]
mod proptests;
mod registries;
pub mod routes;
mod tokens;
mod ui;

use crate::auth::{self, AuthMode};
use crate::decide::DecideConfig;
use crate::gateway::Gateway;
use crate::http::{self, read_body, ApiError, Body};
use crate::ingest::Telemetry;
use crate::raft::MemberChange;
use crate::registry;
use crate::state_machine::{Command, Response as Applied};
use crate::store::Store;
use crate::tls::HandshakeFailures;
use crate::windows::{Agg, Metric, Scope};
use crate::windows_api;
use hyper::body::Incoming;
use hyper::header::AUTHORIZATION;
use hyper::{Request, Response, StatusCode};
use routes::{Found, RouteId};
use serde::Serialize;
use sluice_common::metrics;
use sluice_common::{FunctionName, FunctionSpec, Instance, InstanceId, InstanceState, NodeId};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Largest request body the API accepts.
pub const MAX_BODY: usize = 64 * 1024;
/// The range over which a gateway's last counter values are looked for.
const MAX_RANGE: Duration = Duration::from_secs(3600);
/// Longest an agent's long poll may wait.
pub const MAX_WAIT: Duration = Duration::from_secs(30);
/// Most instances one node report may carry.
pub const MAX_REPORTED_INSTANCES: usize = 10_000;
/// How long adding a voter waits for it to catch up as a learner.
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether a deploy asks the image's registry for its digest.
pub enum ImagePinning {
    /// Pin every deployed image to the digest its registry names now.
    Resolve(registry::Resolver),
    /// Run images as named (`--no-image-pinning`: hosts that load images by
    /// other means, and Raft tests that deploy images nobody runs).
    Off,
}

pub struct Api {
    store: Arc<Store>,
    /// This coordinator's gateway: its counters are read live, the others' from the windows.
    gateway: Arc<Gateway>,
    telemetry: Arc<Telemetry>,
    /// The decision settings, for explaining placements as the leader would.
    decide: DecideConfig,
    auth: AuthMode,
    /// How deployed images are pinned to their digest.
    images: ImagePinning,
    /// Peers this coordinator's listeners refused at the TLS handshake, for `/metrics`.
    tls_failures: Arc<HandshakeFailures>,
    /// Where agents that report here listen, for their instances' logs.
    agents: logs::AgentLinks,
}

/// A function as `GET /v1/functions` shows it.
#[derive(Debug, Serialize)]
pub struct FunctionView {
    pub spec: FunctionSpec,
    /// Instances by state.
    pub instances: BTreeMap<InstanceState, u32>,
    pub requests: u64,
    pub in_flight: u32,
    pub queued: u32,
    pub cold_starts: u64,
}

impl Api {
    pub fn new(
        store: Arc<Store>,
        gateway: Arc<Gateway>,
        telemetry: Arc<Telemetry>,
        decide: DecideConfig,
        auth: AuthMode,
        images: ImagePinning,
        tls_failures: Arc<HandshakeFailures>,
    ) -> Arc<Self> {
        Arc::new(Self { store, gateway, telemetry, decide, auth, images, tls_failures, agents: logs::AgentLinks::default() })
    }

    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        self.route(req).await.unwrap_or_else(ApiError::into_response)
    }

    async fn route(&self, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
        let path = req.uri().path().trim_end_matches('/').to_string();
        let method = req.method().clone();
        let (route, params) = match routes::find(method.as_str(), &path) {
            Found::Route(route, params) => (route, params.into_iter().map(decode).collect::<Vec<_>>()),
            Found::WrongMethod(allowed) => {
                let mut resp = ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    format!("{method} is not supported on {path}: use {} (see /v1/openapi.json or the API reference in README.md)", allowed.join(" or ")),
                )
                .into_response();
                // A 405 must say which methods the path has (RFC 9110, 15.5.6).
                resp.headers_mut().insert(hyper::header::ALLOW, allow_header(&allowed));
                return Ok(resp);
            }
            Found::NotFound => {
                return Err(ApiError::not_found(format!(
                    "no API route {path}: routes start with /v1/functions, /v1/instances, /v1/nodes, /v1/rules, /v1/events, /v1/explain, /v1/cluster, /v1/tokens or /v1/metrics; the dashboard is at /ui"
                )))
            }
        };
        // Who may call it is settled before anything is read or changed.
        let now = self.store.now();
        auth::authorize(self.auth, req.headers().get(AUTHORIZATION), route.permission, now, |id| self.store.read(|s| s.auth.tokens.get(id).cloned()))?;
        let param = |i: usize| params[i].as_str();
        match route.id {
            RouteId::Health => match self.store.raft_status().stopped {
                None => Ok(http::json(StatusCode::OK, &serde_json::json!({"status": "ok"}))),
                Some(why) => Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "raft_stopped",
                    format!("{why}; this coordinator takes no part in the cluster and exits so its service manager restarts it: fix the disk or data directory"),
                )),
            },
            RouteId::OpenApi => Ok(openapi::response()),
            RouteId::Metrics => Ok(self.metrics()),
            RouteId::ListFunctions => {
                self.barrier().await?;
                Ok(http::json(StatusCode::OK, &self.functions(None)))
            }
            RouteId::PutFunction => self.put_function(req).await,
            RouteId::GetFunction => {
                let name = FunctionName::new(param(0))?;
                self.barrier().await?;
                let view = self.functions(Some(&name)).pop().ok_or_else(|| no_function(&name))?;
                let instances = self.instances(Some(&name));
                Ok(http::json(StatusCode::OK, &serde_json::json!({"function": view, "instances": instances})))
            }
            RouteId::RemoveFunction => {
                let name = FunctionName::new(param(0))?;
                match self.execute(Command::RemoveFunction { name: name.clone() }).await? {
                    Applied::Ok => Ok(http::json(StatusCode::OK, &serde_json::json!({"removed": name}))),
                    _ => Err(no_function(&name)),
                }
            }
            RouteId::ListInstances => {
                let function = query_param(&req, "function").map(FunctionName::new).transpose()?;
                self.barrier().await?;
                Ok(http::json(StatusCode::OK, &self.instances(function.as_ref())))
            }
            RouteId::ListNodes => {
                self.barrier().await?;
                Ok(http::json(StatusCode::OK, &self.nodes()))
            }
            RouteId::Cluster => Ok(http::json(StatusCode::OK, &self.store.raft_status())),
            RouteId::AddMember => self.add_member(req).await,
            RouteId::RemoveMember => {
                let id = parse_member_id(param(0))?;
                self.store.change_members(MemberChange::Remove { id }).await.map_err(|e| ApiError::unavailable(&e))?;
                Ok(http::json(StatusCode::OK, &self.store.raft_status()))
            }
            RouteId::Desired => {
                let node = NodeId::new(param(0))?;
                let after = parse_param::<u64>(&req, "after")?.unwrap_or(0);
                let wait = Duration::from_millis(parse_param::<u64>(&req, "wait_ms")?.unwrap_or(0)).min(MAX_WAIT);
                Ok(http::json(StatusCode::OK, &self.store.desired_for(&node, after, wait).await))
            }
            RouteId::Report => {
                let node = NodeId::new(param(0))?;
                self.report(node, req).await
            }
            RouteId::NodeFigures => {
                let node = NodeId::new(param(0))?;
                let range = windows_api::parse_range(query_param(&req, "range").as_deref())?;
                Ok(http::json(StatusCode::OK, &windows_api::node(&self.telemetry, &node, range, now)))
            }
            RouteId::InstanceFigures => {
                let id: InstanceId = param(0).parse()?;
                let range = windows_api::parse_range(query_param(&req, "range").as_deref())?;
                Ok(http::json(StatusCode::OK, &windows_api::instance(&self.telemetry, id, range, now)))
            }
            RouteId::FunctionFigures => {
                let name = FunctionName::new(param(0))?;
                let range = windows_api::parse_range(query_param(&req, "range").as_deref())?;
                Ok(http::json(StatusCode::OK, &windows_api::function(&self.telemetry, &name, range, now)))
            }
            RouteId::FunctionTimeline => {
                let name = FunctionName::new(param(0))?;
                let range = windows_api::parse_range(query_param(&req, "range").as_deref())?;
                if !self.store.read(|s| s.functions.contains_key(&name)) {
                    return Err(no_function(&name));
                }
                Ok(http::json(StatusCode::OK, &windows_api::timeline(&self.telemetry, &name, range, now)))
            }
            RouteId::RecentBusEvents => {
                let limit = parse_param::<usize>(&req, "limit")?.unwrap_or(100);
                if limit == 0 || limit > windows_api::MAX_EVENTS {
                    return Err(ApiError::invalid("limit", format!("use a number from 1 to {}", windows_api::MAX_EVENTS)));
                }
                Ok(http::json(StatusCode::OK, &self.telemetry.recent_events(limit)))
            }
            RouteId::Drain => self.set_draining(NodeId::new(param(0))?, true).await,
            RouteId::Undrain => self.set_draining(NodeId::new(param(0))?, false).await,
            RouteId::ListRules => {
                self.barrier().await?;
                Ok(http::json(StatusCode::OK, &self.rules()))
            }
            RouteId::PutRules => self.put_rules(req).await,
            RouteId::CheckRules => self.check_rules(req).await,
            RouteId::ExplainRules => self.explain_rules(&req).await,
            RouteId::RemoveRule => self.remove_rule(param(0)).await,
            RouteId::Events => self.events(&req).await,
            RouteId::ExplainPlacement => self.explain_placement(FunctionName::new(param(0))?).await,
            RouteId::ListTokens => self.list_tokens().await,
            RouteId::CreateToken => self.create_token(req).await,
            RouteId::RevokeToken => self.revoke_token(param(0)).await,
            RouteId::ListRegistries => {
                self.barrier().await?;
                Ok(http::json(StatusCode::OK, &serde_json::json!({"allowed": self.store.read(|s| s.allowed_registries.clone())})))
            }
            RouteId::SetRegistries => self.set_registries(req).await,
            RouteId::PurgeCache => self.purge_cache(FunctionName::new(param(0))?, req).await,
            RouteId::GetInvocation => self.invocation(param(0)),
            RouteId::FunctionLogs => self.logs(FunctionName::new(param(0))?, &req).await,
            RouteId::UiPage => Ok(ui::page(req.headers())),
            RouteId::UiAsset => ui::asset(param(0), req.headers()),
        }
    }

    /// An asynchronous invocation as this coordinator's table knows it (every
    /// coordinator reads every state record; one just accepted elsewhere may
    /// take a moment to appear).
    fn invocation(&self, id: &str) -> Result<Response<Body>, ApiError> {
        if !crate::invocations::record::is_id(id) {
            return Err(ApiError::invalid("id", format!("{id:?} is not an invocation id: use the id the 202 of POST /async-function/<name> gave")));
        }
        let view = self.gateway.invocations.get().and_then(|i| i.view(id));
        match view {
            Some(view) => Ok(http::json(StatusCode::OK, &view)),
            None => Err(ApiError::not_found(format!("no invocation {id} is known here: it was never accepted, or it is older than the retention (1 h)"))),
        }
    }

    async fn execute(&self, cmd: Command) -> Result<Applied, ApiError> {
        self.store.execute(cmd).await.map_err(|e| ApiError::unavailable(&e))
    }

    /// Waits until this coordinator's state includes every acknowledged write.
    async fn barrier(&self) -> Result<(), ApiError> {
        self.store.read_linearizable(|_| ()).await.map_err(|e| ApiError::unavailable(&e))
    }

    /// Adds a coordinator: as a learner, then, unless it stays one, as a voter
    /// once it has caught up, so the quorum never waits on an empty log.
    async fn add_member(&self, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Join {
            id: u64,
            raft_addr: String,
            #[serde(default)]
            learner: bool,
        }
        let bytes = read_body(req.into_body(), MAX_BODY).await?;
        let join: Join = http::parse_json(&bytes)?;
        parse_member_id(&join.id.to_string())?;
        validate_raft_addr(&join.raft_addr)?;
        if !self.store.raft_status().members.iter().any(|m| m.id == join.id && m.role == "learner") {
            self.store.change_members(MemberChange::AddLearner { id: join.id, raft_addr: join.raft_addr.clone() }).await.map_err(|e| ApiError::unavailable(&e))?;
        }
        if !join.learner {
            self.wait_caught_up(join.id).await?;
            self.store.change_members(MemberChange::Promote { id: join.id }).await.map_err(|e| ApiError::unavailable(&e))?;
        }
        Ok(http::json(StatusCode::OK, &self.store.raft_status()))
    }

    async fn wait_caught_up(&self, id: u64) -> Result<(), ApiError> {
        let deadline = tokio::time::Instant::now() + CATCH_UP_TIMEOUT;
        let target = self.store.raft_status().commit;
        loop {
            let status = self.store.raft_status();
            if status.members.iter().any(|m| m.id == id && m.matched.is_some_and(|m| m >= target)) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "not_caught_up",
                    format!("coordinator {id} was added as a learner but has not caught up in {CATCH_UP_TIMEOUT:?}: check that it runs with --join and that its raft address is reachable, then repeat the join to promote it"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn put_function(&self, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
        let bytes = read_body(req.into_body(), MAX_BODY).await?;
        let mut spec: FunctionSpec = http::parse_json(&bytes)?;
        spec.validate()?;
        // The allow-list as of a read barrier: a registry removed a moment ago is refused here.
        let allowed = self.store.read_linearizable(|s| s.allowed_registries.clone()).await.map_err(|e| ApiError::unavailable(&e))?;
        registry::check_allowed(&allowed, &spec.image)?;
        spec.image_digest = match &self.images {
            ImagePinning::Resolve(resolver) => Some(resolver.digest(&spec.image).await?),
            // Whatever a client sent is not a digest this coordinator checked.
            ImagePinning::Off => spec.image.parts().digest.map(str::to_string),
        };
        let status = match self.execute(Command::PutFunction { spec: spec.clone() }).await? {
            Applied::FunctionCreated => StatusCode::CREATED,
            _ => StatusCode::OK,
        };
        Ok(http::json(status, &serde_json::json!({ "function": spec })))
    }

    /// Drops a function's cached responses on every gateway, as each applies the entry.
    async fn purge_cache(&self, name: FunctionName, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Purge {
            #[serde(default)]
            path: Option<String>,
        }
        let bytes = read_body(req.into_body(), MAX_BODY).await?;
        let purge: Purge = if bytes.iter().all(u8::is_ascii_whitespace) { Purge { path: None } } else { http::parse_json(&bytes)? };
        if let Some(path) = &purge.path {
            sluice_common::cache::validate_purge_path(path)?;
        }
        let command = Command::PurgeCache { function: name.clone(), path: purge.path.clone(), at: self.store.now() };
        match self.execute(command).await? {
            Applied::Ok => Ok(http::json(StatusCode::OK, &serde_json::json!({"purged": name, "path": purge.path}))),
            Applied::Rejected { reason } => Err(ApiError::new(StatusCode::CONFLICT, "cluster_version", reason)),
            _ => Err(no_function(&name)),
        }
    }

    /// Functions with their instances and request figures: this coordinator's
    /// gateway read live, every other gateway as its latest figures in the windows.
    fn functions(&self, only: Option<&FunctionName>) -> Vec<FunctionView> {
        let now = self.store.now();
        let own = crate::gateway::coordinator_node_id(self.store.raft_status().id);
        let routes: BTreeMap<FunctionName, Arc<crate::gateway::Route>> = self.gateway.routes().into_iter().map(|r| (r.name.clone(), r)).collect();
        // The state's lock first, then the windows', as everywhere: a decision
        // holds both in that order.
        self.store.read(|s| {
            let windows = self.telemetry.windows();
            s.functions
                .values()
                .filter(|f| only.is_none_or(|o| o == &f.name))
                .map(|spec| {
                    let mut instances = BTreeMap::new();
                    for i in s.instances.values().filter(|i| i.function == spec.name) {
                        *instances.entry(i.state).or_insert(0) += 1;
                    }
                    let others: Vec<Scope> = windows.gateways_of(&spec.name).into_iter().filter(|n| n != &own).map(|n| Scope::Gateway(n, spec.name.clone())).collect();
                    let last = |m: Metric, range: Duration| windows.query_combined(&others, m, Agg::Last, range, now).unwrap_or(0.0);
                    let fresh = crate::decide::load::FRESH;
                    let route = routes.get(&spec.name);
                    let live = |get: fn(&crate::gateway::Route) -> u64| route.map_or(0, |r| get(r));
                    FunctionView {
                        spec: spec.clone(),
                        instances,
                        requests: live(|r| r.counters.requests()) + last(Metric::GatewayRequestsTotal, MAX_RANGE) as u64,
                        in_flight: live(|r| r.counters.in_flight().into()) as u32 + last(Metric::GatewayInFlight, fresh) as u32,
                        queued: live(|r| r.queued.load(Ordering::Relaxed).into()) as u32 + last(Metric::GatewayQueued, fresh) as u32,
                        cold_starts: live(|r| r.counters.cold_starts.load(Ordering::Relaxed)) + last(Metric::GatewayColdStartsTotal, MAX_RANGE) as u64,
                    }
                })
                .collect()
        })
    }

    fn instances(&self, only: Option<&FunctionName>) -> Vec<Instance> {
        self.store.read(|s| s.instances.values().filter(|i| only.is_none_or(|o| o == &i.function)).cloned().collect())
    }

    fn metrics(&self) -> Response<Body> {
        let mut out = String::new();
        self.store.read(|s| {
            metrics::header(&mut out, "sluice_coordinator_functions", "gauge", "Functions deployed.");
            metrics::sample(&mut out, "sluice_coordinator_functions", "", s.functions.len());
            metrics::header(&mut out, "sluice_coordinator_nodes", "gauge", "Nodes known.");
            metrics::sample(&mut out, "sluice_coordinator_nodes", "", s.nodes.len());
            metrics::header(&mut out, "sluice_coordinator_instances", "gauge", "Instances by state (paused: frozen, holding memory but no CPU).");
            // Every state, zero or not, so a dashboard sees the tiers it is watching empty too.
            let mut by_state: BTreeMap<InstanceState, usize> = InstanceState::ALL.iter().map(|s| (*s, 0)).collect();
            for i in s.instances.values() {
                *by_state.entry(i.state).or_default() += 1;
            }
            for (state, n) in by_state {
                metrics::sample(&mut out, "sluice_coordinator_instances", &format!("state=\"{state}\""), n);
            }
            metrics::header(&mut out, "sluice_coordinator_reserved_cpu_millis", "gauge", "CPU reserved on each node by its live instances (paused ones hold none).");
            for node in s.nodes.keys() {
                metrics::sample(&mut out, "sluice_coordinator_reserved_cpu_millis", &format!("node=\"{node}\""), s.reserved_on(node).cpu_millis);
            }
            metrics::header(&mut out, "sluice_coordinator_reserved_memory_mb", "gauge", "Memory reserved on each node by its live instances (paused ones included).");
            for node in s.nodes.keys() {
                metrics::sample(&mut out, "sluice_coordinator_reserved_memory_mb", &format!("node=\"{node}\""), s.reserved_on(node).memory_mb);
            }
            metrics::header(&mut out, "sluice_coordinator_desired_revision", "gauge", "Revision of the nodes' desired sets.");
            metrics::sample(&mut out, "sluice_coordinator_desired_revision", "", s.desired_revision);
        });
        self.telemetry.render(&mut out);
        self.tls_failures.render(&mut out);
        if let Some(invocations) = self.gateway.invocations.get() {
            invocations.render_metrics(&mut out);
        }
        let raft = self.store.raft_status();
        metrics::header(&mut out, "sluice_raft_term", "gauge", "Current Raft term.");
        metrics::sample(&mut out, "sluice_raft_term", "", raft.term);
        metrics::header(&mut out, "sluice_raft_is_leader", "gauge", "1 if this coordinator is the Raft leader.");
        metrics::sample(&mut out, "sluice_raft_is_leader", "", u8::from(raft.role == "leader"));
        metrics::header(&mut out, "sluice_raft_commit_index", "gauge", "Highest log index known committed.");
        metrics::sample(&mut out, "sluice_raft_commit_index", "", raft.commit);
        metrics::header(&mut out, "sluice_raft_applied_index", "gauge", "Highest log index applied to the state.");
        metrics::sample(&mut out, "sluice_raft_applied_index", "", raft.applied);
        metrics::header(&mut out, "sluice_raft_members", "gauge", "Cluster members by role.");
        for role in ["voter", "learner"] {
            metrics::sample(&mut out, "sluice_raft_members", &format!("role=\"{role}\""), raft.members.iter().filter(|m| m.role == role).count());
        }
        let counters = &self.store.raft().counters;
        for (name, help, value) in [
            ("sluice_raft_messages_sent_total", "Raft messages written to peers.", &counters.sent),
            ("sluice_raft_messages_dropped_total", "Raft messages dropped (peer unreachable or queue full).", &counters.dropped),
            ("sluice_raft_messages_received_total", "Raft messages received from peers.", &counters.received),
            ("sluice_raft_peers_refused_total", "Raft connections refused at their hello: a peer of another cluster, or a voter that lost its data.", &counters.refused),
        ] {
            metrics::header(&mut out, name, "counter", help);
            metrics::sample(&mut out, name, "", value.load(Ordering::Relaxed));
        }
        http::text(out)
    }
}

/// The `Allow` value of a 405: the path's methods.
fn allow_header(methods: &[&str]) -> hyper::header::HeaderValue {
    hyper::header::HeaderValue::from_str(&methods.join(", ")).expect("route methods are header-safe tokens")
}

fn parse_member_id(id: &str) -> Result<u64, ApiError> {
    match id.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(ApiError::invalid("id", format!("{id:?} is not a coordinator id: use a whole number from 1 up"))),
    }
}

fn validate_raft_addr(addr: &str) -> Result<(), ApiError> {
    let bad = |why: &str| ApiError::invalid("raft_addr", format!("{addr:?} {why}: use host:port, e.g. 10.0.0.4:7071"));
    if addr.len() > 260 {
        return Err(bad("is too long"));
    }
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| bad("has no port"))?;
    if host.is_empty() || !host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']')) {
        return Err(bad("has an invalid host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(bad("has an invalid port")),
    }
}

fn no_function(name: &FunctionName) -> ApiError {
    ApiError::not_found(format!("function {name} does not exist: `sluice ls` lists functions, `sluice deploy` creates one"))
}

/// The percent-decoded value of `key` in the request's query.
fn query_param(req: &Request<Incoming>, key: &str) -> Option<String> {
    query_value(req.uri().query(), key).map(decode)
}

/// A percent-decoded query value or path segment; bytes that do not decode
/// to UTF-8 are kept as sent, for the validator to refuse by name.
fn decode(raw: &str) -> String {
    percent_encoding::percent_decode_str(raw).decode_utf8().map_or_else(|_| raw.to_string(), |s| s.into_owned())
}

/// The raw (not percent-decoded) value of the first `key=` in a query string.
fn query_value<'a>(query: Option<&'a str>, key: &str) -> Option<&'a str> {
    query?.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == key).map(|(_, v)| v)
}

fn parse_param<T: std::str::FromStr>(req: &Request<Incoming>, key: &str) -> Result<Option<T>, ApiError> {
    query_param(req, key).map(|v| v.parse::<T>().map_err(|_| ApiError::invalid(key, format!("{v:?} is not a valid number: use a non-negative integer")))).transpose()
}

#[cfg(test)]
mod tests {
    use super::{decode, query_value};

    #[test]
    fn query_values_and_path_segments_are_percent_decoded() {
        assert_eq!(query_value(Some("function=a%2Db&x=1"), "function").map(decode).as_deref(), Some("a-b"));
        assert_eq!(decode("hello"), "hello");
        // Not UTF-8 once decoded: kept as sent, so the validator names it.
        assert_eq!(decode("%ff"), "%ff");
    }
}
