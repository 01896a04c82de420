//! The gateway: `/function/{name}[/{path}]` routed to a ready instance.
//!
//! A request takes a slot on the least busy ready instance. With none free it
//! waits in the function's bounded queue while the controller starts one: the
//! gateway publishes its figures at once (`waiting`) rather than at its next
//! second, and the leader's ingest wakes its controller. A full queue answers
//! 429 and a start that outlasts the start timeout 503, both with `Retry-After`.
//!
//! When the function has a paused instance, the waiting request does not wait
//! for the controller's round: the gateway commits the resume itself (`resume`),
//! a one-decision plan through the store like any other, and the instance is
//! ready, and routable, as soon as it applies. Its agent thaws the container a
//! moment later; a request sent to it meanwhile waits in its sockets, for no
//! longer than the start timeout (see `invoke`).
//!
//! A function with a cache (`FunctionSpec::cache`) is answered from this
//! gateway's response cache when it can (`cache`, `cached`): a hit reaches no
//! instance, and concurrent misses for one answer send one request.

mod cache;
mod cached;
#[cfg(test)]
mod direct_tests;
mod figures;
mod proxy;
mod route;
mod upstream;

pub use cache::{CacheFigures, ResponseCache, CACHE_HEADER};
pub use figures::{coordinator_node_id, FiguresTaker};
use upstream::{Client, Outgoing, SendError, UpstreamError};

pub use route::{Backend, ReadyInstance, Refusal, Route, RouteLimits, StatusClass};

use crate::auth::{self, AuthMode, Permission};
use crate::http::{self, ApiError, Body};
use crate::plan::{Action, Decision, Outcome, Plan, Reason};
use crate::state::ClusterState;
use crate::state_machine::{Command, Response as Applied};
use crate::store::Store;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use sluice_common::metrics;
use sluice_common::{Clock, Instance, InstanceId, InstanceState, NodeId};
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Instant;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

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
    /// Whether private functions check tokens.
    auth: AuthMode,
    /// Woken when a request has to wait: the gateway's figures go out at once.
    pub waiting: Notify,
    /// Route misses confirm through the Raft barrier one at a time.
    miss_gate: tokio::sync::Mutex<()>,
    /// Responses of functions with a cache, shared by the serving threads.
    cache: Arc<ResponseCache>,
    /// Where `/async-function/` hands requests; set once the coordinator has started it.
    pub invocations: std::sync::OnceLock<Arc<crate::invocations::Invocations>>,
    /// The node whose agent runs on this gateway's host (`sluice up`'s own,
    /// `sluice coordinator --local-node`): its instances are reached at their
    /// containers' own addresses, everyone else's at their published ports.
    local_node: Option<NodeId>,
}

/// What one serving thread brings to the requests it serves: the gateway and
/// the thread's own pool of upstream connections. Each request holds a clone of
/// its thread's worker, a count no other thread touches, where a clone of the
/// gateway would pull the gateway's count from core to core on every request.
pub struct Worker {
    gateway: Arc<Gateway>,
    client: Client,
}

impl Worker {
    pub fn new(gateway: Arc<Gateway>) -> Arc<Self> {
        Arc::new(Self { gateway, client: Client::new() })
    }

    /// Serves one gateway request that came from `peer`.
    pub async fn handle(self: Arc<Self>, peer: Option<IpAddr>, req: Request<Incoming>) -> Response<Body> {
        self.gateway.handle(&self, peer, req).await
    }

    /// Runs an asynchronous invocation's request (read whole from the bus) through
    /// the same path as a synchronous one: a slot on a ready instance, or a wait in
    /// the function's bounded queue. Its caller was authorised when it was accepted.
    pub async fn call(self: &Arc<Self>, name: &str, path_and_query: &str, req: Request<bytes::Bytes>) -> Result<Response<Body>, ApiError> {
        let route = self.gateway.existing_route(name).await?;
        let uri = path_and_query.parse::<hyper::Uri>().map_err(|e| ApiError::invalid("path", format!("cannot forward {path_and_query:?}: {e}")))?;
        self.gateway.forward(self, route, uri, req.map(|b| Outgoing::Whole(http_body_util::Full::new(b)))).await
    }
}

/// Bytes a gateway's response cache holds by default (`--gateway-cache-mb`).
pub const DEFAULT_CACHE_BYTES: u64 = 64 << 20;

impl Gateway {
    /// A gateway whose response cache holds at most `cache_bytes`.
    pub fn new(store: Arc<Store>, clock: Arc<dyn Clock>, auth: AuthMode, local_node: Option<NodeId>, cache_bytes: u64) -> Arc<Self> {
        Arc::new(Self {
            routes: RwLock::new(HashMap::new()),
            callers: RwLock::default(),
            store,
            clock,
            auth,
            waiting: Notify::new(),
            miss_gate: tokio::sync::Mutex::new(()),
            cache: ResponseCache::new(cache_bytes),
            invocations: std::sync::OnceLock::new(),
            local_node,
        })
    }

    /// What the response cache holds of `function`.
    pub fn cache_figures(&self, function: &sluice_common::FunctionName) -> CacheFigures {
        self.cache.figures(function)
    }

    /// Brings the routing table in line with the cluster state.
    pub fn sync(&self, state: &ClusterState) {
        let now = self.clock.now();
        let mut ready: HashMap<&str, Vec<ReadyInstance>> = HashMap::new();
        let mut paused: HashMap<&str, Vec<InstanceId>> = HashMap::new();
        for i in state.instances.values() {
            match routing(i, self.local_node.as_ref()) {
                Some(Routing::Ready(r)) => ready.entry(i.function.as_str()).or_default().push(r),
                Some(Routing::Paused(id)) => paused.entry(i.function.as_str()).or_default().push(id),
                None => {}
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
            let name = spec.name.as_str();
            let caught = route.set_instances(spec.into(), ready.get(name).map_or(&[][..], |v| v), paused.get(name).map_or(&[][..], |v| v), now);
            route.set_cache(spec.cache.as_deref());
            self.resume_caught(route, caught);
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
            let (mut ready, mut paused) = (Vec::new(), Vec::new());
            for i in state.live_of(name) {
                match routing(i, self.local_node.as_ref()) {
                    Some(Routing::Ready(r)) => ready.push(r),
                    Some(Routing::Paused(id)) => paused.push(id),
                    None => {}
                }
            }
            let route = routes.entry(name.to_string()).or_insert_with(|| Arc::new(Route::new(spec)));
            let caught = route.set_instances(spec.into(), &ready, &paused, now);
            route.set_cache(spec.cache.as_deref());
            self.resume_caught(route, caught);
        }
        drop(routes);
        let mut callers = self.callers.write().expect("callers lock");
        for name in names {
            callers.set(name, state.live_instances(name).filter_map(|i| i.addr));
        }
    }

    /// The function whose instance has address `ip`, if any.
    fn caller(&self, ip: IpAddr) -> Option<sluice_common::FunctionName> {
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
        let found = self.routes.read().expect("routes lock").get(name).cloned();
        match found {
            Some(route) => Some(route),
            // Boxed: the miss's wait for the leader would otherwise make every
            // request's future, which is moved on each request, that much larger.
            None => Box::pin(self.route_miss(name)).await,
        }
    }

    /// `route` for a name not in the routing table (yet).
    async fn route_miss(&self, name: &str) -> Option<Arc<Route>> {
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

    /// Serves one gateway request for `worker` (its serving thread's: a request
    /// and its upstream connection stay on one thread) from `peer`.
    async fn handle(&self, worker: &Arc<Worker>, peer: Option<IpAddr>, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path();
        let (asynchronous, rest) = match (path.strip_prefix("/function/"), path.strip_prefix("/async-function/")) {
            (Some(rest), _) => (false, Some(rest)),
            (None, rest) => (true, rest),
        };
        if let Some(rest) = rest {
            let (name, below) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/"),
            };
            let forward = match proxy::upstream_uri(below, req.uri().query()) {
                Ok(uri) => uri,
                Err(e) => return ApiError::invalid("path", format!("cannot forward {below:?}: {e}; use a valid URL path")).into_response(),
            };
            // The name is looked up while the request is only borrowed, so it is never copied.
            let route = match self.route(name).await {
                Some(route) => route,
                None => return unknown_function(name).into_response(),
            };
            let answer = match asynchronous {
                false => self.invoke(worker, peer, route, forward, req).await,
                // Boxed, as the rarer paths below: see `route`.
                true if req.method() == Method::POST => Box::pin(self.submit(route, forward, req)).await,
                true => Err(ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "asynchronous invocations are submitted with POST")),
            };
            return answer.unwrap_or_else(ApiError::into_response);
        }
        match (req.method(), path) {
            (&Method::GET, "/metrics") => match self.authorize(&req, Permission::Read) {
                Ok(()) => http::text(self.render_metrics()),
                Err(e) => e.into_response(),
            },
            (&Method::GET, "/healthz") => http::json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
            _ => ApiError::not_found(format!("no route for {path}: invoke functions at /function/<name>[/<path>]")).into_response(),
        }
    }

    /// Checks the request's token against the cluster's (the local applied
    /// state: a revocation takes effect here when this coordinator applies it).
    fn authorize(&self, req: &Request<Incoming>, permission: Permission) -> Result<(), ApiError> {
        let header = req.headers().get(hyper::header::AUTHORIZATION);
        auth::authorize(self.auth, header, permission, self.clock.now(), |id| self.store.read(|s| s.auth.tokens.get(id).cloned())).map(|_| ())
    }

    async fn invoke(&self, worker: &Arc<Worker>, peer: Option<IpAddr>, route: Arc<Route>, forward: hyper::Uri, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
        let mut req = req;
        if route.private.load(Ordering::Relaxed) {
            self.authorize(&req, Permission::Invoke)?;
            // The caller's Sluice token is for the gateway, not for the function.
            req.headers_mut().remove(hyper::header::AUTHORIZATION);
        }
        match route.cache_spec().filter(|c| c.caches(req.method().as_str())) {
            Some(spec) => Box::pin(self.cached(worker, peer, route, &spec, forward, req)).await,
            None => self.invoke_uncached(worker, peer, route, forward, req).await,
        }
    }

    /// A `/function/` request past its checks and the cache: the rate limit
    /// (which guards the function, so cache hits never count against it), the
    /// caller noted for co-location, then an instance.
    async fn invoke_uncached(
        &self,
        worker: &Arc<Worker>,
        peer: Option<IpAddr>,
        route: Arc<Route>,
        forward: hyper::Uri,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, ApiError> {
        route.admit(|| self.clock.now()).map_err(|wait| shed_by_rate_limit(&route, wait))?;
        if let Some(caller) = peer.and_then(|ip| self.caller(ip)) {
            if caller != route.name {
                route.counters.record_call(&caller);
            }
        }
        self.forward(worker, route, forward, req.map(Outgoing::Streamed)).await
    }

    /// The route of `name`, or the API error saying why there is none.
    async fn existing_route(&self, name: &str) -> Result<Arc<Route>, ApiError> {
        self.route(name).await.ok_or_else(|| unknown_function(name))
    }

    /// The `/async-function/{name}` answer: checks the function and its caller as
    /// `/function/` does, then hands the request to the invocations queue.
    async fn submit(&self, route: Arc<Route>, forward: hyper::Uri, mut req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
        if route.private.load(Ordering::Relaxed) {
            self.authorize(&req, Permission::Invoke)?;
        }
        // Never onto the bus: the token is for the gateway, not for the function or the broker.
        req.headers_mut().remove(hyper::header::AUTHORIZATION);
        // Limited when accepted: an invocation refused later would only be retried and dead-lettered.
        route.admit(|| self.clock.now()).map_err(|wait| shed_by_rate_limit(&route, wait))?;
        let Some(invocations) = self.invocations.get() else {
            return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "async_unavailable", "this coordinator is still starting its invocation queue: retry in a moment"));
        };
        let path = forward.path_and_query().map_or("/", |p| p.as_str());
        invocations.submit(route.name.as_str(), path, req).await
    }

    /// Sends `req` to a ready instance of `route`, waiting in its queue for one.
    async fn forward(&self, worker: &Arc<Worker>, route: Arc<Route>, forward: hyper::Uri, req: Request<Outgoing>) -> Result<Response<Body>, ApiError> {
        let started = Instant::now();
        route.counters.received();
        let waited = std::sync::atomic::AtomicBool::new(false);
        let backend = route
            .acquire(
                || self.clock.now(),
                |cold| {
                    debug!(function = %route.name, cold, "request waits for an instance");
                    waited.store(true, Ordering::Relaxed);
                    self.waiting.notify_one();
                    self.resume(&route);
                },
            )
            .await
            .map_err(|refusal| {
                let err = refusal_error(&route, refusal);
                proxy::record(&route, err.status, started);
                err
            })?;
        if waited.load(Ordering::Relaxed) {
            route.counters.wait.observe(started.elapsed().as_secs_f64());
        }
        // The route and the instance are borrowed from `release` from here on:
        // the request clones neither.
        let mut release = proxy::Release { worker: worker.clone(), route, backend, started, status: StatusCode::OK, lease: None };
        let mut upstream = proxy::to_upstream(req, forward);
        let mut retried = false;
        loop {
            let (route, target) = (&release.route, &release.backend);
            let authority = target.authority();
            let sent = match self.send_once(worker, route, target, authority, upstream).await {
                Ok(sent) => sent,
                Err(timed_out) => {
                    release.status = timed_out.status;
                    return Err(timed_out);
                }
            };
            let SendError { error, unsent } = match sent {
                Ok((resp, lease)) => {
                    target.answered(authority);
                    release.lease = Some(lease);
                    return Ok(proxy::from_upstream(resp, release));
                }
                Err(e) => e,
            };
            // The direct way in does not work from here: the same instance,
            // through its published port. Not the instance's failure.
            let unsent = match unsent {
                Some(req) if matches!(error, UpstreamError::Connect { .. }) && target.unreachable(authority) => {
                    warn!(function = %route.name, instance = %target.id, direct = %authority, error = %error, published = %target.authority(), "cannot reach the instance's own address from this gateway; using its published port");
                    upstream = req;
                    continue;
                }
                unsent => unsent,
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
                    let failed = ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        "instance_failed",
                        format!("instance {} of {} did not answer ({error}); it may have crashed: retry, and check `sluice ls`", target.id, route.name),
                    );
                    release.status = failed.status;
                    return Err(failed);
                }
            }
        }
    }

    /// Sends `upstream` to `target` at `authority` once, within the time its
    /// answer may take to begin: the request timeout, or for an instance
    /// resumed a moment ago (its agent may not have thawed it yet, and a frozen
    /// container accepts the connection and then says nothing) the start
    /// timeout. Past it, the 504 to answer.
    async fn send_once(
        &self,
        worker: &Worker,
        route: &Route,
        target: &Backend,
        authority: &Arc<str>,
        upstream: Request<Outgoing>,
    ) -> Result<Result<(Response<Incoming>, upstream::Lease), SendError>, ApiError> {
        let send = worker.client.send(authority, target.alive_check(authority), target.connect_within(authority), upstream);
        if target.thawing.load(Ordering::Relaxed) {
            let (sent_at, limit) = (Instant::now(), route.limits().start_timeout);
            let Ok(sent) = tokio::time::timeout(limit, send).await else {
                route.counters.thaw_timeouts.fetch_add(1, Ordering::Relaxed);
                warn!(function = %route.name, instance = %target.id, limit_ms = limit.as_millis() as u64, "resumed instance did not answer; is its agent unpausing it?");
                return Err(ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "instance_not_thawed",
                    format!(
                        "instance {} of {} was resumed from a pause but did not answer within the start timeout ({limit:?}); its agent may not have unpaused it: retry, and check `sluice ls` and the agent's log",
                        target.id, route.name
                    ),
                ));
            };
            if sent.is_ok() {
                target.thawing.store(false, Ordering::Relaxed);
                route.counters.thaw_first_byte.observe(sent_at.elapsed().as_secs_f64());
            }
            return Ok(sent);
        }
        // A hung or frozen instance would otherwise hold the client and the slot for ever.
        let limit = std::time::Duration::from_millis(route.request_timeout_ms.load(Ordering::Relaxed));
        tokio::time::timeout(limit, send).await.map_err(|_| {
            route.counters.request_timeouts.fetch_add(1, Ordering::Relaxed);
            warn!(function = %route.name, instance = %target.id, limit_ms = limit.as_millis() as u64, "instance did not begin its answer in the request timeout");
            ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "request_timed_out",
                format!(
                    "instance {} of {} did not begin its answer within the request timeout ({limit:?}); it may be hung or frozen: retry if the request is safe to repeat, or raise request_timeout_secs",
                    target.id, route.name
                ),
            )
        })
    }

    /// Asks for a paused instance of `route`'s function to be resumed for the
    /// requests waiting there, if one is paused and not already being resumed
    /// (see `Route::take_resume`). The resume is committed by a task of its
    /// own, so it goes through whatever becomes of the request that asked.
    fn resume(&self, route: &Arc<Route>) {
        let Some(id) = route.take_resume() else { return };
        let reason = Reason::RequestWaiting { gateway: self.id(), queued: route.queued.load(Ordering::Relaxed) };
        tokio::spawn(commit_resume(self.store.clone(), route.clone(), id, self.clock.now(), reason));
    }

    /// Resumes instances paused while requests from this gateway were on them
    /// (see `Route::set_instances`): those requests wait in the frozen
    /// containers until they thaw.
    fn resume_caught(&self, route: &Arc<Route>, caught: Vec<(InstanceId, u32)>) {
        for (id, in_flight) in caught {
            warn!(function = %route.name, instance = %id, in_flight, "instance paused with requests on it; resuming it");
            let reason = Reason::RequestsInFlight { gateway: self.id(), in_flight };
            tokio::spawn(commit_resume(self.store.clone(), route.clone(), id, self.clock.now(), reason));
        }
    }

    /// This gateway's name in decisions and figures: its coordinator's.
    fn id(&self) -> sluice_common::NodeId {
        coordinator_node_id(self.store.raft_status().id)
    }

    /// Per-function counters in Prometheus text format.
    pub fn render_metrics(&self) -> String {
        let routes = self.routes();
        let mut out = String::new();
        type Get = fn(&Route) -> u64;
        let counters: [(&str, &str, Get); 11] = [
            ("sluice_gateway_requests_total", "Invocations received.", |r| r.counters.requests()),
            ("sluice_gateway_cold_starts_total", "Invocations that waited for an instance to start.", |r| r.counters.cold_starts.load(Ordering::Relaxed)),
            ("sluice_gateway_shed_total", "Invocations refused with 429 because the queue was full.", |r| r.counters.shed.load(Ordering::Relaxed)),
            ("sluice_gateway_start_timeouts_total", "Invocations answered 503 after waiting the start timeout.", |r| r.counters.timeouts.load(Ordering::Relaxed)),
            ("sluice_gateway_upstream_errors_total", "Invocations whose instance failed to answer.", |r| r.counters.upstream_errors.load(Ordering::Relaxed)),
            ("sluice_gateway_rate_limited_total", "Invocations refused with 429 by the function's rate limit.", |r| r.counters.rate_limited.load(Ordering::Relaxed)),
            ("sluice_gateway_request_timeouts_total", "Invocations answered 504 because the instance did not begin its answer within the request timeout.", |r| {
                r.counters.request_timeouts.load(Ordering::Relaxed)
            }),
            ("sluice_gateway_in_flight", "Invocations being served now.", |r| r.counters.in_flight().into()),
            ("sluice_gateway_resumes_total", "Paused instances this gateway resumed for waiting invocations.", |r| r.counters.resumes.load(Ordering::Relaxed)),
            ("sluice_gateway_thaw_timeouts_total", "Invocations answered 504 because a resumed instance did not answer within the start timeout.", |r| {
                r.counters.thaw_timeouts.load(Ordering::Relaxed)
            }),
            ("sluice_gateway_paused_instances", "Paused instances, resumable by a waiting invocation.", |r| r.paused().len() as u64),
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
            for (label, class) in [("2xx", StatusClass::Success), ("4xx", StatusClass::ClientError), ("5xx", StatusClass::ServerError)] {
                metrics::sample(&mut out, "sluice_gateway_responses_total", &format!("function=\"{}\",class=\"{label}\"", r.name), r.counters.responses(class));
            }
        }
        let cached: Vec<(&Arc<Route>, CacheFigures)> = routes.iter().filter(|r| r.cache_spec().is_some()).map(|r| (r, self.cache.figures(&r.name))).collect();
        type CacheGet = fn(&Route, &CacheFigures) -> u64;
        let cache_rows: [(&str, &str, &str, CacheGet); 5] = [
            ("sluice_gateway_cache_hits_total", "counter", "Invocations answered from the response cache (they reach no instance).", |r, _| {
                r.counters.cache_hits.load(Ordering::Relaxed)
            }),
            ("sluice_gateway_cache_misses_total", "counter", "Invocations of functions with a cache that the cache did not answer.", |r, _| {
                r.counters.cache_misses.load(Ordering::Relaxed)
            }),
            ("sluice_gateway_cache_evictions_total", "counter", "Cached responses dropped to make room for others (least recently used first).", |_, c| c.evictions),
            ("sluice_gateway_cache_bytes", "gauge", "Bytes the response cache holds for the function.", |_, c| c.bytes),
            ("sluice_gateway_cache_entries", "gauge", "Responses the cache holds for the function.", |_, c| c.entries),
        ];
        for (name, kind, help, get) in cache_rows {
            metrics::header(&mut out, name, kind, help);
            for (r, c) in &cached {
                metrics::sample(&mut out, name, &format!("function=\"{}\"", r.name), get(r, c));
            }
        }
        metrics::header(&mut out, "sluice_gateway_cache_capacity_bytes", "gauge", "Bytes this gateway's response cache may hold, all functions together.");
        metrics::sample(&mut out, "sluice_gateway_cache_capacity_bytes", "", self.cache.capacity());
        metrics::header(&mut out, "sluice_gateway_request_duration_seconds", "histogram", "Time from request to the end of the response.");
        for r in &routes {
            r.counters.latency().write(&mut out, "sluice_gateway_request_duration_seconds", &format!("function=\"{}\"", r.name));
        }
        type Hist = fn(&Route) -> &sluice_common::metrics::Histogram;
        let histograms: [(&str, &str, Hist); 3] = [
            ("sluice_gateway_wait_seconds", "Time invocations that found no free slot waited for one (a start or a resume).", |r| &r.counters.wait),
            ("sluice_gateway_resume_commit_seconds", "Time from asking for a resume to its applying on this coordinator.", |r| &r.counters.resume_commit),
            ("sluice_gateway_thaw_first_byte_seconds", "For invocations sent to a resumed instance not yet seen answering: time from sending to the response head.", |r| {
                &r.counters.thaw_first_byte
            }),
        ];
        for (name, help, get) in histograms {
            metrics::header(&mut out, name, "histogram", help);
            for r in &routes {
                get(r).write(&mut out, name, &format!("function=\"{}\"", r.name));
            }
        }
        out
    }
}

/// What the routing table makes of an instance.
enum Routing {
    Ready(ReadyInstance),
    /// Not routable, but a waiting request may resume it.
    Paused(InstanceId),
}

/// `local_node`: the node this gateway shares a host with, whose instances it
/// reaches at their direct address.
fn routing(i: &Instance, local_node: Option<&NodeId>) -> Option<Routing> {
    match i.state {
        InstanceState::Ready => {
            let local = local_node == Some(&i.node);
            Some(Routing::Ready(ReadyInstance { id: i.id, endpoint: i.endpoint.clone()?, since: i.state_since, local }))
        }
        InstanceState::Paused => Some(Routing::Paused(i.id)),
        _ => None,
    }
}

/// Commits the resume of paused instance `id` for requests at this gateway,
/// as a one-decision plan in this coordinator's current term (the
/// state machine re-checks that the instance is still paused; a follower's
/// store forwards the proposal to the leader). On success the routing table
/// follows the applied state and the waiting requests get the instance; on
/// failure the instance may be asked for again, and meanwhile the controller,
/// which hears of the waiting requests through the metrics bus, resumes it.
async fn commit_resume(store: Arc<Store>, route: Arc<Route>, id: InstanceId, at: sluice_common::Timestamp, reason: Reason) {
    let term = store.raft_status().term;
    let why = reason.to_string();
    let plan = Plan { term, at, decisions: vec![Decision { action: Action::Resume { id }, reason }] };
    let asked = Instant::now();
    let result = store.execute(Command::Plan(plan)).await;
    let took = asked.elapsed();
    match result {
        Ok(Applied::Planned { outcomes }) if outcomes.first() == Some(&Outcome::Done) => {
            route.counters.resumes.fetch_add(1, Ordering::Relaxed);
            route.counters.resume_commit.observe(took.as_secs_f64());
            info!(function = %route.name, instance = %id, why = %why, commit_ms = took.as_secs_f64() * 1e3, "resumed a paused instance");
        }
        Ok(other) => {
            route.resume_failed(id);
            debug!(function = %route.name, instance = %id, response = ?other, "resume not applied (the instance moved on); the routing table follows the state");
        }
        Err(e) => {
            route.resume_failed(id);
            warn!(function = %route.name, instance = %id, error = %e, "resume not committed; the controller resumes it on its next round");
        }
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

/// Counts a request the rate limit turned away, and says so.
fn shed_by_rate_limit(route: &Route, wait: std::time::Duration) -> ApiError {
    route.counters.received();
    route.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
    let err = rate_limited(route, wait);
    proxy::record(route, err.status, Instant::now());
    err
}

/// 429 with `Retry-After`: the function's rate limit is used up for now.
fn rate_limited(route: &Route, wait: std::time::Duration) -> ApiError {
    let limit = route.limits().rate_limit.map_or(0, |l| l.requests_per_second);
    let secs = wait.as_secs_f64().ceil().max(1.0) as u32;
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("function {} takes at most {limit} requests per second here: retry after {secs} s, or raise its rate_limit", route.name),
    )
    .retry_after(secs)
}

/// The answer for a `/function/{name}` that names no function.
fn unknown_function(name: &str) -> ApiError {
    match sluice_common::FunctionName::new(name) {
        Err(e) => ApiError::from(e),
        Ok(_) => ApiError::not_found(format!("function {name:?} does not exist: deploy it with `sluice deploy {name} --image <image>`")),
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
    /// Applies the cache purges the store has applied since the last call.
    /// Called here as the gateway follows the store and before every cached
    /// request, so that a purge holds on this gateway once its writer is answered.
    fn apply_purges(&self) {
        let Some(purges) = self.store.take_purges() else { return };
        if purges.all {
            self.cache.purge_all();
        }
        for purge in &purges.functions {
            let dropped = self.cache.purge(&purge.function, purge.path.as_deref());
            debug!(function = %purge.function, path = ?purge.path, dropped, "cache purged");
        }
    }

    /// Keeps the routing table in step with the store's applied state until `shutdown`.
    pub async fn follow_store(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        let mut applied = self.store.watch_applied();
        tokio::pin!(shutdown);
        loop {
            self.apply_purges();
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
