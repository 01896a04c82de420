//! The coordinator's HTTP API (JSON): functions, instances and nodes for users
//! and the CLI, desired sets and reports for agents.
//!
//! Every input is validated before anything changes; errors are 4xx with a JSON
//! body naming the field and the fix.

use crate::gateway::Gateway;
use crate::http::{self, read_body, ApiError, Body};
use sluice_common::metrics;
use crate::state::{Command, Response as Applied};
use crate::store::Store;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use sluice_common::{FunctionName, FunctionSpec, Instance, InstanceState, NodeId, NodeInfo, NodeReport, Resources};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Largest request body the API accepts.
pub const MAX_BODY: usize = 64 * 1024;
/// Longest an agent's long poll may wait.
pub const MAX_WAIT: Duration = Duration::from_secs(30);
/// Most instances one node report may carry.
pub const MAX_REPORTED_INSTANCES: usize = 10_000;

pub struct Api {
    store: Arc<Store>,
    gateway: Arc<Gateway>,
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

#[derive(Debug, Serialize)]
pub struct NodeView {
    #[serde(flatten)]
    pub info: NodeInfo,
    pub reserved: Resources,
    pub instances: u32,
}

impl Api {
    pub fn new(store: Arc<Store>, gateway: Arc<Gateway>) -> Arc<Self> {
        Arc::new(Self { store, gateway })
    }

    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        self.route(req).await.unwrap_or_else(ApiError::into_response)
    }

    async fn route(&self, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
        let path = req.uri().path().trim_end_matches('/').to_string();
        let segments: Vec<&str> = path.split('/').skip(1).collect();
        let method = req.method().clone();
        match (method.clone(), segments.as_slice()) {
            (Method::GET, ["healthz"]) => Ok(http::json(StatusCode::OK, &serde_json::json!({"status": "ok"}))),
            (Method::GET, ["metrics"]) => Ok(self.metrics()),
            (Method::GET, ["v1", "functions"]) => Ok(http::json(StatusCode::OK, &self.functions(None))),
            (Method::POST, ["v1", "functions"]) => self.put_function(req).await,
            (Method::GET, ["v1", "functions", name]) => {
                let name = FunctionName::new(*name)?;
                let view = self.functions(Some(&name)).pop().ok_or_else(|| no_function(&name))?;
                let instances = self.instances(Some(&name));
                Ok(http::json(StatusCode::OK, &serde_json::json!({"function": view, "instances": instances})))
            }
            (Method::DELETE, ["v1", "functions", name]) => {
                let name = FunctionName::new(*name)?;
                match self.store.execute(Command::RemoveFunction { name: name.clone() }).await {
                    Applied::Ok => Ok(http::json(StatusCode::OK, &serde_json::json!({"removed": name}))),
                    _ => Err(no_function(&name)),
                }
            }
            (Method::GET, ["v1", "instances"]) => {
                let function = query_param(&req, "function").map(FunctionName::new).transpose()?;
                Ok(http::json(StatusCode::OK, &self.instances(function.as_ref())))
            }
            (Method::GET, ["v1", "nodes"]) => Ok(http::json(StatusCode::OK, &self.nodes())),
            (Method::GET, ["v1", "nodes", node, "desired"]) => {
                let node = NodeId::new(*node)?;
                let after = parse_param::<u64>(&req, "after")?.unwrap_or(0);
                let wait = Duration::from_millis(parse_param::<u64>(&req, "wait_ms")?.unwrap_or(0)).min(MAX_WAIT);
                Ok(http::json(StatusCode::OK, &self.store.desired_for(&node, after, wait).await))
            }
            (Method::POST, ["v1", "nodes", node, "report"]) => {
                let node = NodeId::new(*node)?;
                self.report(node, req).await
            }
            (_, ["healthz" | "metrics"]) | (_, ["v1", "functions" | "instances" | "nodes", ..]) => Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{method} is not supported on {path}: see the API reference in README.md"),
            )),
            _ => Err(ApiError::not_found(format!("no API route {path}: routes start with /v1/functions, /v1/instances or /v1/nodes"))),
        }
    }

    async fn put_function(&self, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
        let bytes = read_body(req.into_body(), MAX_BODY).await?;
        let spec: FunctionSpec = http::parse_json(&bytes)?;
        spec.validate()?;
        let status = match self.store.execute(Command::PutFunction { spec: spec.clone() }).await {
            Applied::FunctionCreated => StatusCode::CREATED,
            _ => StatusCode::OK,
        };
        Ok(http::json(status, &serde_json::json!({ "function": spec })))
    }

    async fn report(&self, node: NodeId, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
        let bytes = read_body(req.into_body(), MAX_BODY * 64).await?;
        let report: NodeReport = http::parse_json(&bytes)?;
        if report.node != node {
            return Err(ApiError::invalid("node", format!("report is for node {} but was sent to /v1/nodes/{node}: send it to its own node's path", report.node)));
        }
        if report.instances.len() > MAX_REPORTED_INSTANCES {
            return Err(ApiError::invalid("instances", format!("{} instances in one report: send at most {MAX_REPORTED_INSTANCES}", report.instances.len())));
        }
        apply_report(&self.store, report).await;
        Ok(http::json(StatusCode::OK, &serde_json::json!({"accepted": true})))
    }

    fn functions(&self, only: Option<&FunctionName>) -> Vec<FunctionView> {
        let load = self.gateway.load();
        let counters = self.gateway_counters();
        self.store.read(|s| {
            s.functions
                .values()
                .filter(|f| only.is_none_or(|o| o == &f.name))
                .map(|spec| {
                    let mut instances = BTreeMap::new();
                    for i in s.instances.values().filter(|i| i.function == spec.name) {
                        *instances.entry(i.state).or_insert(0) += 1;
                    }
                    let l = load.function(&spec.name);
                    let (requests, cold_starts) = counters.get(spec.name.as_str()).copied().unwrap_or_default();
                    FunctionView { spec: spec.clone(), instances, requests, in_flight: l.in_flight, queued: l.queued, cold_starts }
                })
                .collect()
        })
    }

    fn gateway_counters(&self) -> BTreeMap<String, (u64, u64)> {
        self.gateway
            .routes()
            .into_iter()
            .map(|r| (r.name.to_string(), (r.counters.requests.load(Ordering::Relaxed), r.counters.cold_starts.load(Ordering::Relaxed))))
            .collect()
    }

    fn instances(&self, only: Option<&FunctionName>) -> Vec<Instance> {
        self.store.read(|s| s.instances.values().filter(|i| only.is_none_or(|o| o == &i.function)).cloned().collect())
    }

    fn nodes(&self) -> Vec<NodeView> {
        self.store.read(|s| {
            s.nodes
                .values()
                .map(|n| NodeView {
                    info: n.clone(),
                    reserved: s.reserved_on(&n.id),
                    instances: s.instances.values().filter(|i| i.node == n.id && i.state.is_live()).count() as u32,
                })
                .collect()
        })
    }

    fn metrics(&self) -> Response<Body> {
        let mut out = String::new();
        self.store.read(|s| {
            metrics::header(&mut out, "sluice_coordinator_functions", "gauge", "Functions deployed.");
            metrics::sample(&mut out, "sluice_coordinator_functions", "", s.functions.len());
            metrics::header(&mut out, "sluice_coordinator_nodes", "gauge", "Nodes known.");
            metrics::sample(&mut out, "sluice_coordinator_nodes", "", s.nodes.len());
            metrics::header(&mut out, "sluice_coordinator_instances", "gauge", "Instances by state.");
            let mut by_state: BTreeMap<InstanceState, usize> = BTreeMap::new();
            for i in s.instances.values() {
                *by_state.entry(i.state).or_default() += 1;
            }
            for (state, n) in by_state {
                metrics::sample(&mut out, "sluice_coordinator_instances", &format!("state=\"{state}\""), n);
            }
            metrics::header(&mut out, "sluice_coordinator_desired_revision", "gauge", "Revision of the nodes' desired sets.");
            metrics::sample(&mut out, "sluice_coordinator_desired_revision", "", s.desired_revision);
        });
        metrics::header(&mut out, "sluice_coordinator_commands_applied_total", "counter", "Commands applied to the state machine.");
        metrics::sample(&mut out, "sluice_coordinator_commands_applied_total", "", *self.store.watch_applied().borrow());
        http::text(out)
    }
}

/// Applies an agent's report: the node is alive, and each instance whose state
/// changed is recorded. Unchanged instances cost nothing.
pub async fn apply_report(store: &Store, report: NodeReport) {
    let at = store.now();
    store.execute(Command::NodeSeen { node: report.node.clone(), capacity: report.capacity, at }).await;
    for r in report.instances {
        let changed = store.read(|s| match s.instances.get(&r.id) {
            Some(known) => known.state != r.state || (r.endpoint.is_some() && known.endpoint != r.endpoint),
            None => r.id.0 >= s.next_instance,
        });
        if changed {
            store.execute(Command::ReportInstance { node: report.node.clone(), report: r, at }).await;
        }
    }
}

fn no_function(name: &FunctionName) -> ApiError {
    ApiError::not_found(format!("function {name} does not exist: `sluice ls` lists functions, `sluice deploy` creates one"))
}

fn query_param<'a>(req: &'a Request<Incoming>, key: &str) -> Option<&'a str> {
    req.uri().query()?.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == key).map(|(_, v)| v)
}

fn parse_param<T: std::str::FromStr>(req: &Request<Incoming>, key: &str) -> Result<Option<T>, ApiError> {
    query_param(req, key)
        .map(|v| v.parse::<T>().map_err(|_| ApiError::invalid(key, format!("{v:?} is not a valid number: use a non-negative integer"))))
        .transpose()
}
