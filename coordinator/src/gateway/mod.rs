//! The gateway: `/function/{name}[/{path}]` routed to a ready instance.
//!
//! A request takes a slot on the least busy ready instance. With none free it
//! waits in the function's bounded queue while the controller starts one: the
//! gateway publishes its figures at once (`waiting`) rather than at its next
//! second, and the leader's ingest wakes its controller. A full queue answers
//! 429 and a start that outlasts the start timeout 503, both with `Retry-After`.

mod figures;
mod proxy;
mod route;
mod upstream;

pub use figures::{coordinator_node_id, FiguresTaker};
pub use upstream::Client;
use upstream::SendError;

pub use route::{Backend, Refusal, Route, RouteLimits};

use crate::http::{self, ApiError, Body};
use crate::state::ClusterState;
use crate::store::Store;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use sluice_common::metrics;
use sluice_common::{Clock, InstanceState};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Instant;
use tokio::sync::Notify;
use tracing::{debug, warn};

/// Response header naming the instance that served a request.
pub const INSTANCE_HEADER: &str = "x-sluice-instance";

pub struct Gateway {
    routes: RwLock<HashMap<String, Arc<Route>>>,
    /// The instances' own addresses, by function: a request from one is a call
    /// from that function (what co-location learns from).
    callers: RwLock<Callers>,
    /// The applied state the routes follow (see [`Gateway::follow_store`]).
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
    /// Woken when a request has to wait: the gateway's figures go out at once.
    pub waiting: Notify,
    /// Route misses confirm through the Raft barrier one at a time.
    miss_gate: tokio::sync::Mutex<()>,
}

impl Gateway {
    pub fn new(store: Arc<Store>, clock: Arc<dyn Clock>) -> Arc<Self> {
        Arc::new(Self { routes: RwLock::new(HashMap::new()), callers: RwLock::default(), store, clock, waiting: Notify::new(), miss_gate: tokio::sync::Mutex::new(()) })
    }

    /// Brings the routing table in line with the cluster state.
    pub fn sync(&self, state: &ClusterState) {
        let now = self.clock.now();
        let mut ready: HashMap<&str, Vec<_>> = HashMap::new();
        for i in state.instances.values().filter(|i| i.state == InstanceState::Ready) {
            if let Some(ep) = &i.endpoint {
                ready.entry(i.function.as_str()).or_default().push((i.id, ep.clone()));
            }
        }
        let deployed: std::collections::HashSet<&str> = state.functions.keys().map(|f| f.as_str()).collect();
        let mut routes = self.routes.write().expect("routes lock");
        routes.retain(|name, route| {
            let keep = deployed.contains(name.as_str());
            if !keep {
                route.remove();
            }
            keep
        });
        for spec in state.functions.values() {
            let route = routes.entry(spec.name.to_string()).or_insert_with(|| Arc::new(Route::new(spec)));
            route.set_backends(spec.into(), ready.get(spec.name.as_str()).map_or(&[][..], |v| v), now);
        }
        let mut callers = self.callers.write().expect("callers lock");
        *callers = Callers::default();
        for spec in state.functions.values() {
            callers.set(&spec.name, state.live_instances(&spec.name).filter_map(|i| i.addr));
        }
    }

    /// Brings the routes of `names` in line with `state`, leaving the others alone.
    pub fn sync_functions(&self, state: &ClusterState, names: &std::collections::BTreeSet<sluice_common::FunctionName>) {
        let now = self.clock.now();
        let mut routes = self.routes.write().expect("routes lock");
        for name in names {
            let Some(spec) = state.functions.get(name) else {
                if let Some(route) = routes.remove(name.as_str()) {
                    route.remove();
                }
                continue;
            };
            let ready: Vec<_> =
                state.instances.values().filter(|i| &i.function == name && i.state == InstanceState::Ready).filter_map(|i| Some((i.id, i.endpoint.clone()?))).collect();
            let route = routes.entry(name.to_string()).or_insert_with(|| Arc::new(Route::new(spec)));
            route.set_backends(spec.into(), &ready, now);
        }
        drop(routes);
        let mut callers = self.callers.write().expect("callers lock");
        for name in names {
            callers.set(name, state.live_instances(name).filter_map(|i| i.addr));
        }
    }

    /// The function whose instance has address `ip`, if any.
    fn caller(&self, ip: std::net::IpAddr) -> Option<sluice_common::FunctionName> {
        let callers = self.callers.read().expect("callers lock");
        if callers.by_ip.is_empty() {
            return None;
        }
        callers.by_ip.get(&ip).cloned()
    }

    /// The gateway's clock's current time.
    pub fn now(&self) -> sluice_common::Timestamp {
        self.clock.now()
    }

    /// Every function's route, for reporting.
    pub fn routes(&self) -> Vec<Arc<Route>> {
        self.routes.read().expect("routes lock").values().cloned().collect()
    }

    /// The route of `name`. A miss is checked before it counts: a deploy
    /// acknowledged a moment ago must be callable at once on every gateway,
    /// though this coordinator may not have applied it yet. So a miss reads the
    /// state through the Raft barrier (ReadIndex), one miss at a time: a flood
    /// of unknown names costs the leader one confirmation at a time, not one each.
    async fn route(&self, name: &str) -> Option<Arc<Route>> {
        if let Some(route) = self.routes.read().expect("routes lock").get(name).cloned() {
            return Some(route);
        }
        let name = sluice_common::FunctionName::new(name).ok()?;
        let _one_at_a_time = self.miss_gate.lock().await;
        // Another miss may have synced it meanwhile.
        if let Some(route) = self.routes.read().expect("routes lock").get(name.as_str()).cloned() {
            return Some(route);
        }
        let exists = self.store.read_linearizable(|s| s.functions.contains_key(&name)).await.unwrap_or(false);
        if exists {
            self.store.read(|s| self.sync_functions(s, &std::collections::BTreeSet::from([name.clone()])));
        }
        self.routes.read().expect("routes lock").get(name.as_str()).cloned()
    }

    /// Serves one gateway request, forwarding through `client` (one per serving
    /// thread, so a request and its upstream connection stay on one thread).
    pub async fn handle(self: Arc<Self>, client: Client, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path();
        if let Some(rest) = path.strip_prefix("/function/") {
            let (name, below) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/"),
            };
            let forward = match req.uri().query() {
                Some(q) => format!("{below}?{q}"),
                None => below.to_string(),
            };
            let name = name.to_string();
            return self.invoke(&client, &name, &forward, req).await.unwrap_or_else(ApiError::into_response);
        }
        match (req.method(), path) {
            (&Method::GET, "/metrics") => http::text(self.render_metrics()),
            (&Method::GET, "/healthz") => http::json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
            _ => ApiError::not_found(format!("no route for {path}: invoke functions at /function/<name>[/<path>]")).into_response(),
        }
    }

    async fn invoke(&self, client: &Client, name: &str, forward: &str, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
        let route = self.route(name).await.ok_or_else(|| {
            let name_err = sluice_common::FunctionName::new(name).err();
            match name_err {
                Some(e) => ApiError::from(e),
                None => ApiError::not_found(format!("function {name:?} does not exist: deploy it with `sluice deploy {name} --image <image>`")),
            }
        })?;
        let started = Instant::now();
        route.counters.requests.fetch_add(1, Ordering::Relaxed);
        if let Some(caller) = req.extensions().get::<http::PeerAddr>().and_then(|p| self.caller(p.0)) {
            if caller != route.name {
                route.counters.record_call(&caller);
            }
        }
        let clock = self.clock.clone();
        let backend = route
            .acquire(
                || clock.now(),
                |cold| {
                    debug!(function = %route.name, cold, "request waits for an instance");
                    self.waiting.notify_one();
                },
            )
            .await
            .map_err(|refusal| {
                let err = refusal_error(&route, refusal);
                proxy::record(&route, err.status, &route.counters.latency, started);
                err
            })?;
        let mut release = proxy::Release { route: route.clone(), backend, clock: self.clock.clone(), started, status: StatusCode::OK, lease: None };
        let mut upstream = match proxy::to_upstream(req, forward) {
            Ok(r) => r,
            Err(e) => {
                release.status = StatusCode::BAD_REQUEST;
                return Err(ApiError::invalid("path", format!("cannot forward {forward:?}: {e}; use a valid URL path")));
            }
        };
        let mut retried = false;
        loop {
            let target = release.backend.clone();
            let SendError { error, unsent } = match client.send(&target.authority, upstream).await {
                Ok((resp, lease)) => {
                    release.lease = Some(lease);
                    return Ok(proxy::from_upstream(resp, release));
                }
                Err(e) => e,
            };
            route.counters.upstream_errors.fetch_add(1, Ordering::Relaxed);
            warn!(function = %route.name, instance = %target.id, error = %error, "instance did not answer");
            // None of the request reached the instance, so another one may take it,
            // whatever its method. Once: a second failure says more than one retry would.
            let next = if retried { None } else { unsent.and_then(|req| Some((req, route.try_acquire_except(self.clock.now(), Some(target.id))?))) };
            match next {
                Some((req, backend)) => {
                    debug!(function = %route.name, from = %target.id, to = %backend.id, "retrying on another instance");
                    release.move_to(backend);
                    upstream = req;
                    retried = true;
                }
                None => {
                    release.status = StatusCode::BAD_GATEWAY;
                    return Err(ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        "instance_failed",
                        format!("instance {} of {} did not answer ({error}); it may have crashed: retry, and check `sluice ls`", target.id, route.name),
                    ));
                }
            }
        }
    }

    /// Per-function counters in Prometheus text format.
    pub fn render_metrics(&self) -> String {
        let routes = self.routes();
        let mut out = String::new();
        type Get = fn(&Route) -> u64;
        let counters: [(&str, &str, Get); 6] = [
            ("sluice_gateway_requests_total", "Invocations received.", |r| r.counters.requests.load(Ordering::Relaxed)),
            ("sluice_gateway_cold_starts_total", "Invocations that waited for an instance to start.", |r| r.counters.cold_starts.load(Ordering::Relaxed)),
            ("sluice_gateway_shed_total", "Invocations refused with 429 because the queue was full.", |r| r.counters.shed.load(Ordering::Relaxed)),
            ("sluice_gateway_start_timeouts_total", "Invocations answered 503 after waiting the start timeout.", |r| r.counters.timeouts.load(Ordering::Relaxed)),
            ("sluice_gateway_upstream_errors_total", "Invocations whose instance failed to answer.", |r| r.counters.upstream_errors.load(Ordering::Relaxed)),
            ("sluice_gateway_in_flight", "Invocations being served now.", |r| r.in_flight.load(Ordering::Relaxed).into()),
        ];
        for (name, help, get) in counters {
            metrics::header(&mut out, name, if name.ends_with("_total") { "counter" } else { "gauge" }, help);
            for r in &routes {
                metrics::sample(&mut out, name, &format!("function=\"{}\"", r.name), get(r));
            }
        }
        metrics::header(&mut out, "sluice_gateway_queued", "gauge", "Invocations waiting for an instance.");
        for r in &routes {
            metrics::sample(&mut out, "sluice_gateway_queued", &format!("function=\"{}\"", r.name), r.queued.load(Ordering::Relaxed));
        }
        metrics::header(&mut out, "sluice_gateway_responses_total", "counter", "Responses by status class.");
        for r in &routes {
            for (class, c) in [("2xx", &r.counters.responses_2xx), ("4xx", &r.counters.responses_4xx), ("5xx", &r.counters.responses_5xx)] {
                metrics::sample(&mut out, "sluice_gateway_responses_total", &format!("function=\"{}\",class=\"{class}\"", r.name), c.load(Ordering::Relaxed));
            }
        }
        metrics::header(&mut out, "sluice_gateway_request_duration_seconds", "histogram", "Time from request to the end of the response.");
        for r in &routes {
            r.counters.latency.write(&mut out, "sluice_gateway_request_duration_seconds", &format!("function=\"{}\"", r.name));
        }
        out
    }
}

/// Instance addresses by function and the other way round.
#[derive(Debug, Default)]
struct Callers {
    by_ip: HashMap<std::net::IpAddr, sluice_common::FunctionName>,
    by_function: HashMap<sluice_common::FunctionName, Vec<std::net::IpAddr>>,
}

impl Callers {
    /// `function`'s instances are now at `ips`.
    fn set(&mut self, function: &sluice_common::FunctionName, ips: impl Iterator<Item = std::net::IpAddr>) {
        for ip in self.by_function.remove(function).unwrap_or_default() {
            self.by_ip.remove(&ip);
        }
        let ips: Vec<_> = ips.collect();
        for ip in &ips {
            self.by_ip.insert(*ip, function.clone());
        }
        if !ips.is_empty() {
            self.by_function.insert(function.clone(), ips);
        }
    }
}

fn refusal_error(route: &Route, refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::QueueFull => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "queue_full",
            format!(
                "function {} is at capacity and its queue ({} requests) is full: retry after the Retry-After delay, or raise max_instances or queue_limit",
                route.name,
                route.limits().queue_limit
            ),
        )
        .retry_after(1),
        Refusal::StartTimedOut => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "start_timed_out",
            format!("no instance of {} became ready within {:?}: retry later, and check `sluice ls` for failed instances", route.name, route.limits().start_timeout),
        )
        .retry_after(2),
        Refusal::Removed => ApiError::not_found(format!("function {} was removed while the request waited", route.name)),
    }
}

impl Gateway {
    /// Keeps the routing table in step with the store's applied state until `shutdown`.
    pub async fn follow_store(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        let mut applied = self.store.watch_applied();
        tokio::pin!(shutdown);
        loop {
            let dirty = self.store.take_dirty_routes();
            if dirty.all {
                self.store.read(|s| self.sync(s));
            } else if !dirty.functions.is_empty() {
                self.store.read(|s| self.sync_functions(s, &dirty.functions));
            }
            tokio::select! {
                changed = applied.changed() => if changed.is_err() { return },
                _ = &mut shutdown => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Callers;
    use sluice_common::FunctionName;
    use std::net::IpAddr;

    #[test]
    fn instance_addresses_name_their_function_and_follow_changes() {
        let (web, db) = (FunctionName::new("web").unwrap(), FunctionName::new("db").unwrap());
        let ip = |last: u8| IpAddr::from([172, 17, 0, last]);
        let mut c = Callers::default();
        c.set(&web, [ip(2), ip(3)].into_iter());
        c.set(&db, [ip(4)].into_iter());
        assert_eq!(c.by_ip.get(&ip(3)), Some(&web));
        // web's instance at .3 went; .3 is now db's.
        c.set(&web, [ip(2)].into_iter());
        c.set(&db, [ip(4), ip(3)].into_iter());
        assert_eq!(c.by_ip.get(&ip(3)), Some(&db));
        c.set(&db, std::iter::empty());
        assert_eq!((c.by_ip.len(), c.by_function.len()), (1, 1));
    }
}
