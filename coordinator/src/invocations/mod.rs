//! Asynchronous invocations: `POST /async-function/{name}[/path]` answers 202
//! with an invocation id once the request is on the bus's `invocation` topic
//! (Kafka in clusters, MQTT on edge hosts, in-process for `sluice up`).
//!
//! - Every coordinator runs a worker in the shared consumer group
//!   [`WORK_GROUP`], so each invocation is taken by one coordinator. The worker
//!   runs it through the gateway's normal path (`Worker::call`: a slot on a
//!   ready instance or a wait in the function's bounded queue), retries failed
//!   tries with jittered backoff, and after the last try publishes the request
//!   on `dead-letter`.
//! - Each step is a state record on `invocation-state`; every coordinator reads
//!   them all (a group of its own) into a bounded [`Table`], which answers
//!   `GET /v1/invocations/{id}` on any coordinator.
//! - A delivery is marked processed only once its ending is recorded on the bus
//!   (and its callback made), and only in delivery order: a coordinator killed
//!   mid-invocation leaves it, and everything delivered after it, to be
//!   delivered again to the group. So every accepted invocation runs at least
//!   once; an ending already in the table is not run again, and a redelivered
//!   invocation continues its count of tries.
//! - An `Idempotency-Key` header makes the id a hash of (function, key): a
//!   retried submission is the same invocation (answered from the table when it
//!   is known, and deduplicated by the worker when both copies are queued).
//! - With `X-Callback-Url`, the ending is also POSTed there (bounded retries).
//!
//! On the in-process bus (`sluice up` without `--bus`) the queue lives in the
//! process: invocations accepted but not finished are lost when it stops. Give
//! `sluice up` a broker (`--bus kafka://...` or `mqtt://...`) to keep them.

pub mod record;
pub mod table;

use crate::gateway::{Gateway, Worker};
use crate::http::{self, ApiError, Body};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST, LOCATION};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use record::{InvocationRequest, Outcome, State, StateRecord, VERSION};
use sluice_bus::{Message, MetricsBus, Received, Subscription, Topic};
use sluice_common::backoff::{seed, Backoff};
use sluice_common::connector::Connector;
use sluice_common::Clock;
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
pub use table::{Table, View};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

/// The consumer group every coordinator's worker joins: one group, so the bus
/// hands each invocation to one of them.
pub const WORK_GROUP: &str = "sluice-invocations";
/// Header naming an idempotency key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Header naming a URL to POST the ending to.
pub const CALLBACK_URL: &str = "x-callback-url";
/// Longest idempotency key.
const MAX_KEY_LEN: usize = 200;

#[derive(Debug, Clone)]
pub struct InvocationConfig {
    /// Tries before the dead letter.
    pub attempts: u32,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// Invocations one coordinator runs at once; more wait on the bus.
    pub max_in_flight: usize,
    /// Largest request body accepted (it travels base64 on the bus).
    pub max_body: usize,
    /// Result bytes kept (on the bus and in every table).
    pub max_result: usize,
    /// Longest one try may take, waiting for an instance included.
    pub try_timeout: Duration,
    pub table_entries: usize,
    pub retention: Duration,
    pub callback_attempts: u32,
    pub callback_timeout: Duration,
}

impl Default for InvocationConfig {
    fn default() -> Self {
        InvocationConfig {
            attempts: 3,
            backoff_base: Duration::from_millis(500),
            backoff_cap: Duration::from_secs(30),
            max_in_flight: 64,
            max_body: 512 << 10,
            max_result: 64 << 10,
            try_timeout: Duration::from_secs(300),
            table_entries: 100_000,
            retention: Duration::from_secs(3600),
            callback_attempts: 3,
            callback_timeout: Duration::from_secs(10),
        }
    }
}

pub struct Invocations {
    bus: Arc<dyn MetricsBus>,
    table: Mutex<Table>,
    config: InvocationConfig,
    /// This coordinator's node id: the bus key of what it publishes, and who ran a try.
    node: String,
    clock: Arc<dyn Clock>,
    callbacks: HttpClient<Connector, Full<Bytes>>,
    /// Set once the worker's group has subscribed: a bus may drop what is
    /// published to a group that never subscribed (the in-process bus does).
    taking: AtomicBool,
    counters: Counters,
}

/// Counts a running invocation for as long as it lives: a task aborted
/// mid-invocation (the coordinator stopping) is no longer running either.
struct RunningGuard<'a>(&'a AtomicU64);

impl<'a> RunningGuard<'a> {
    fn new(running: &'a AtomicU64) -> Self {
        running.fetch_add(1, Ordering::Relaxed);
        Self(running)
    }
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What this coordinator's queue and worker did, for `/metrics`.
#[derive(Debug, Default)]
struct Counters {
    /// Submissions queued on the bus (202, new).
    accepted: AtomicU64,
    /// Submissions answered as one already accepted (same idempotency key).
    repeated: AtomicU64,
    /// Tries this coordinator's worker started.
    tries: AtomicU64,
    /// Tries that failed and were retried after a backoff.
    retried: AtomicU64,
    /// Invocations this worker ended with an answer (any status not retried).
    done: AtomicU64,
    /// Invocations this worker sent to the dead letter topic.
    dead_lettered: AtomicU64,
    /// Invocations this worker is running now.
    running: AtomicU64,
}

impl Invocations {
    pub fn new(bus: Arc<dyn MetricsBus>, node: String, clock: Arc<dyn Clock>, config: InvocationConfig) -> Arc<Self> {
        let table = Mutex::new(Table::new(config.table_entries, config.retention));
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        let tls = rustls::ClientConfig::builder_with_provider(sluice_common::tls::provider())
            .with_safe_default_protocol_versions()
            .map(|b| b.with_root_certificates(roots).with_no_client_auth())
            .ok()
            .map(Arc::new);
        let callbacks = HttpClient::builder(TokioExecutor::new()).pool_max_idle_per_host(2).build(Connector::new(Some(config.callback_timeout), tls));
        Arc::new(Invocations { bus, table, config, node, clock, callbacks, taking: AtomicBool::new(false), counters: Counters::default() })
    }

    /// What this coordinator knows of invocation `id`.
    pub fn view(&self, id: &str) -> Option<View> {
        self.table.lock().expect("invocations table").get(id).cloned()
    }

    fn now_ms(&self) -> u64 {
        self.clock.now().millis()
    }

    /// Accepts `req` for function `function`: 202 once it is on the bus.
    pub async fn submit(&self, function: &str, path: &str, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
        if !self.taking.load(Ordering::Relaxed) {
            return Err(
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "queue_unavailable", "this coordinator has not joined the invocation queue yet: retry in a moment").retry_after(1)
            );
        }
        let (parts, body) = req.into_parts();
        let callback = match parts.headers.get(CALLBACK_URL) {
            Some(v) => Some(check_callback(v.to_str().unwrap_or(""))?),
            None => None,
        };
        let id = match parts.headers.get(IDEMPOTENCY_KEY) {
            Some(v) => record::id_from_key(function, check_key(v)?),
            None => record::random_id(),
        };
        if let Some(known) = self.view(&id) {
            // A retried submission: the first one was accepted.
            self.counters.repeated.fetch_add(1, Ordering::Relaxed);
            return Ok(accepted(&known.id, true));
        }
        let body = http::read_body(body, self.config.max_body).await?;
        let headers = parts
            .headers
            .iter()
            .filter(|(name, _)| ![HOST.as_str(), "content-length", IDEMPOTENCY_KEY, CALLBACK_URL].contains(&name.as_str()))
            .filter_map(|(name, value)| Some((name.as_str().to_string(), value.to_str().ok()?.to_string())))
            .collect();
        let request = InvocationRequest {
            v: VERSION,
            id: id.clone(),
            function: function.to_string(),
            method: parts.method.as_str().to_string(),
            path: path.to_string(),
            headers,
            body: record::encode_body(&body),
            callback,
            submitted_ms: self.now_ms(),
        };
        let payload = serde_json::to_vec(&request).expect("requests serialise");
        self.bus.publish(Message { topic: Topic::Invocation, key: id.clone(), payload: payload.into() }).await.map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "queue_unavailable",
                format!("the invocation could not be queued on the {} bus ({e}): retry; with an Idempotency-Key a retry is safe", self.bus.name()),
            )
            .retry_after(1)
        })?;
        // The invocation is queued whether or not this record makes it: the worker's own records follow.
        if let Err(e) = self.record(&id, function, State::Queued).await {
            debug!(%id, error = %e, "could not record an invocation as queued");
        }
        self.counters.accepted.fetch_add(1, Ordering::Relaxed);
        Ok(accepted(&id, false))
    }

    /// This coordinator's invocation counters in Prometheus text format.
    pub fn render_metrics(&self, out: &mut String) {
        let c = &self.counters;
        for (name, kind, help, value) in [
            ("sluice_invocations_accepted_total", "counter", "Asynchronous invocations queued on the bus by this coordinator.", &c.accepted),
            ("sluice_invocations_repeated_total", "counter", "Submissions answered as an invocation already accepted (the same Idempotency-Key).", &c.repeated),
            ("sluice_invocations_tries_total", "counter", "Tries this coordinator's worker started.", &c.tries),
            ("sluice_invocations_retried_total", "counter", "Tries that failed and were retried after a backoff.", &c.retried),
            ("sluice_invocations_done_total", "counter", "Invocations this coordinator's worker ended with the function's answer.", &c.done),
            ("sluice_invocations_dead_lettered_total", "counter", "Invocations whose last try failed, sent to the dead letter topic.", &c.dead_lettered),
            ("sluice_invocations_running", "gauge", "Invocations this coordinator's worker is running now.", &c.running),
        ] {
            sluice_common::metrics::header(out, name, kind, help);
            sluice_common::metrics::sample(out, name, "", value.load(Ordering::Relaxed));
        }
        sluice_common::metrics::header(out, "sluice_invocations_known", "gauge", "Invocations in this coordinator's table (GET /v1/invocations/{id} answers for them).");
        sluice_common::metrics::sample(out, "sluice_invocations_known", "", self.table.lock().expect("invocations table").len());
    }

    /// Publishes a state record and folds it into this coordinator's table at
    /// once (its own reads need not wait for the round trip through the bus).
    async fn record(&self, id: &str, function: &str, state: State) -> Result<(), sluice_bus::BusError> {
        let record = StateRecord { v: VERSION, id: id.to_string(), function: function.to_string(), ts_ms: self.now_ms(), state };
        self.table.lock().expect("invocations table").apply(&record, record.ts_ms);
        let payload = serde_json::to_vec(&record).expect("records serialise");
        self.bus.publish(Message { topic: Topic::InvocationState, key: id.to_string(), payload: payload.into() }).await
    }

    /// Records an ending, retrying until the bus takes it: the delivery is
    /// acknowledged only after this, so it must not give up (if the process
    /// dies first, the invocation is delivered again).
    async fn record_final(&self, id: &str, function: &str, state: State) {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10), seed(&[id.as_bytes()]));
        while let Err(e) = self.record(id, function, state.clone()).await {
            warn!(%id, error = %e, "could not record an invocation's ending; retrying");
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// Reads every state record into the table, as a group of this coordinator's own, until `shutdown`.
    pub async fn follow_states(self: Arc<Self>, group: String, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let mut sub = tokio::select! {
                s = subscribe(&*self.bus, &group, Topic::InvocationState) => s,
                () = &mut shutdown => return,
            };
            loop {
                let received = tokio::select! { r = sub.next() => r, () = &mut shutdown => return };
                let received = match received {
                    Ok(r) => r,
                    Err(e) => {
                        warn!(error = %e, "invocation state subscription failed; subscribing again");
                        break;
                    }
                };
                match serde_json::from_slice::<StateRecord>(&received.payload) {
                    Ok(r) if r.v == VERSION => self.table.lock().expect("invocations table").apply(&r, self.now_ms()),
                    Ok(r) => debug!(v = r.v, "skipping an invocation state record of another version"),
                    Err(e) => debug!(error = %e, "skipping a malformed invocation state record"),
                }
                let _ = sub.processed(&received);
            }
        }
    }

    /// Takes invocations from the work queue and runs them through `gateway`
    /// until `shutdown`. Dropping this future aborts the invocations it runs,
    /// unacknowledged: they are delivered again (what a killed coordinator does).
    pub async fn work(self: Arc<Self>, gateway: Arc<Gateway>, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let worker = Worker::new(gateway);
        loop {
            let mut sub = tokio::select! {
                s = subscribe(&*self.bus, WORK_GROUP, Topic::Invocation) => s,
                () = &mut shutdown => return,
            };
            info!(bus = self.bus.name(), group = WORK_GROUP, "taking asynchronous invocations");
            self.taking.store(true, Ordering::Relaxed);
            let mut acks = InOrder::default();
            let mut running: JoinSet<u64> = JoinSet::new();
            // Which delivery each task runs, for a task that ends without saying.
            let mut tasks: HashMap<tokio::task::Id, u64> = HashMap::new();
            // Ids running here: a second copy of one (a retried submission) waits for the first to end.
            let mut busy: HashSet<String> = HashSet::new();
            let mut waiting: VecDeque<(u64, InvocationRequest)> = VecDeque::new();
            loop {
                tokio::select! {
                    Some(finished) = running.join_next() => {
                        let seq = match finished {
                            Ok(seq) => seq,
                            Err(e) => {
                                // A bug, not a failed try: say so, and do not let it hold back every later acknowledgement.
                                let seq = tasks.remove(&e.id());
                                tracing::error!(error = %e, "an invocation task ended abnormally; it is left as its records show");
                                match seq {
                                    Some(seq) => seq,
                                    None => continue,
                                }
                            }
                        };
                        tasks.retain(|_, s| *s != seq);
                        if let Some(id) = acks.id_of(seq) {
                            busy.remove(&id);
                        }
                        if let Some(last) = acks.finish(seq) {
                            if let Err(e) = sub.processed(&last) {
                                debug!(error = %e, "could not mark an invocation processed; it may run again");
                            }
                        }
                        // A copy that waited for this one now finds it ended in the table.
                        if let Some(i) = waiting.iter().position(|(_, r)| !busy.contains(&r.id)) {
                            let (seq, request) = waiting.remove(i).expect("found");
                            busy.insert(request.id.clone());
                            tasks.insert(running.spawn(self.clone().run(worker.clone(), request, seq)).id(), seq);
                        }
                    }
                    next = sub.next(), if running.len() < self.config.max_in_flight => {
                        let received = match next {
                            Ok(r) => r,
                            Err(e) => {
                                warn!(error = %e, "invocation queue subscription failed; subscribing again (what ran unacknowledged runs again)");
                                break;
                            }
                        };
                        let decoded = serde_json::from_slice::<InvocationRequest>(&received.payload);
                        let seq = acks.push(received, decoded.as_ref().map(|r| r.id.clone()).ok());
                        match decoded {
                            Ok(request) if request.v == VERSION && busy.contains(&request.id) => waiting.push_back((seq, request)),
                            Ok(request) if request.v == VERSION => {
                                busy.insert(request.id.clone());
                                tasks.insert(running.spawn(self.clone().run(worker.clone(), request, seq)).id(), seq);
                            }
                            other => {
                                warn!(outcome = ?other.map(|r| r.v), "skipping an invocation this coordinator cannot read");
                                if let Some(last) = acks.finish(seq) {
                                    let _ = sub.processed(&last);
                                }
                            }
                        }
                    }
                    () = &mut shutdown => return,
                }
            }
        }
    }

    /// Runs one delivered invocation to its ending; returns `seq` for the acknowledgement.
    async fn run(self: Arc<Self>, worker: Arc<Worker>, request: InvocationRequest, seq: u64) -> u64 {
        let (id, function) = (request.id.as_str(), request.function.as_str());
        let (ended, failed) = {
            let table = self.table.lock().expect("invocations table");
            (table.is_final(id), table.failed_tries(id))
        };
        if ended {
            debug!(%id, "invocation already ended; not running it again");
            return seq;
        }
        let _running = RunningGuard::new(&self.counters.running);
        let mut backoff = Backoff::new(self.config.backoff_base, self.config.backoff_cap, seed(&[id.as_bytes(), self.node.as_bytes()]));
        let mut attempt = failed + 1;
        let ending = loop {
            if attempt > self.config.attempts {
                // Killed after its last failed try was recorded: the dead letter is all that is left.
                break State::DeadLettered { attempt: attempt - 1, error: "every try failed".into() };
            }
            if let Err(e) = self.record(id, function, State::Running { attempt, coordinator: self.node.clone() }).await {
                debug!(%id, error = %e, "could not record a try as running");
            }
            self.counters.tries.fetch_add(1, Ordering::Relaxed);
            let error = match self.try_once(&worker, &request).await {
                Ok(outcome) if !record::retryable(outcome.status) => break State::Done { attempt, result: outcome },
                Ok(outcome) => format!("the function answered {}: {}", outcome.status, outcome.body.as_deref().unwrap_or("").chars().take(200).collect::<String>()),
                Err(e) => e,
            };
            if attempt == self.config.attempts {
                break State::DeadLettered { attempt, error };
            }
            let delay = backoff.next_delay();
            self.counters.retried.fetch_add(1, Ordering::Relaxed);
            info!(%id, %function, attempt, error = %error, retry_in_ms = delay.as_millis() as u64, "invocation try failed; retrying");
            self.record_final(id, function, State::Failed { attempt, error, retry_in_ms: delay.as_millis() as u64 }).await;
            tokio::time::sleep(delay).await;
            attempt += 1;
        };
        if let State::DeadLettered { attempt, error } = &ending {
            warn!(%id, %function, attempt, error = %error, "invocation failed its last try; dead-lettered");
            let payload: Bytes = serde_json::to_vec(&request).expect("requests serialise").into();
            let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10), seed(&[id.as_bytes()]));
            while let Err(e) = self.bus.publish(Message { topic: Topic::DeadLetter, key: id.to_string(), payload: payload.clone() }).await {
                warn!(%id, error = %e, "could not publish to the dead letter topic; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
        self.record_final(id, function, ending.clone()).await;
        let ended = match ending {
            State::DeadLettered { .. } => &self.counters.dead_lettered,
            _ => &self.counters.done,
        };
        ended.fetch_add(1, Ordering::Relaxed);
        if let Some(url) = &request.callback {
            self.call_back(url, id, function, &ending).await;
        }
        seq
    }

    /// One try: the request through the gateway, its answer read (bounded).
    async fn try_once(&self, worker: &Arc<Worker>, request: &InvocationRequest) -> Result<Outcome, String> {
        let body = request.body_bytes().map_err(|e| format!("the queued body is not base64: {e}"))?;
        let method = Method::from_bytes(request.method.as_bytes()).map_err(|e| format!("bad method {:?}: {e}", request.method))?;
        let mut req = Request::builder().method(method).uri(&request.path);
        for (name, value) in &request.headers {
            if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
                req = req.header(name, value);
            }
        }
        let req = req.body(Bytes::from(body)).map_err(|e| format!("cannot rebuild the request: {e}"))?;
        let answer = async {
            let resp = worker.call(&request.function, &request.path, req).await.map_err(|e| format!("{} {}: {}", e.status.as_u16(), e.code, e.message))?;
            let status = resp.status().as_u16();
            let content_type = resp.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
            // Read one byte past the limit to know whether it was cut; the rest is not read.
            let limit = self.config.max_result;
            let body = match Limited::new(resp.into_body(), limit + 1).collect().await {
                Ok(c) => c.to_bytes(),
                Err(e) if e.is::<http_body_util::LengthLimitError>() => return Ok(Outcome { truncated: true, ..Outcome::new(status, content_type, &[], limit) }),
                Err(e) => return Err(format!("reading the function's answer failed: {e}")),
            };
            Ok(Outcome::new(status, content_type, &body, limit))
        };
        tokio::time::timeout(self.config.try_timeout, answer).await.map_err(|_| format!("no answer within {:?}", self.config.try_timeout))?
    }

    /// POSTs the ending to the caller's URL, a few times at most: the caller
    /// can always read it from `GET /v1/invocations/{id}` instead.
    async fn call_back(&self, url: &str, id: &str, function: &str, ending: &State) {
        let record = StateRecord { v: VERSION, id: id.to_string(), function: function.to_string(), ts_ms: self.now_ms(), state: ending.clone() };
        let payload = Bytes::from(serde_json::to_vec(&record).expect("records serialise"));
        let mut backoff = Backoff::new(self.config.backoff_base, self.config.backoff_cap, seed(&[id.as_bytes(), b"callback"]));
        for attempt in 1..=self.config.callback_attempts {
            let req = Request::post(url).header(CONTENT_TYPE, "application/json").body(Full::new(payload.clone()));
            let Ok(req) = req else { return };
            let sent = tokio::time::timeout(self.config.callback_timeout, self.callbacks.request(req)).await;
            match sent {
                Ok(Ok(resp)) if resp.status().is_success() => return,
                Ok(Ok(resp)) => warn!(%id, %url, attempt, status = resp.status().as_u16(), "callback refused"),
                Ok(Err(e)) => warn!(%id, %url, attempt, error = %e, "callback failed"),
                Err(_) => warn!(%id, %url, attempt, "callback timed out"),
            }
            if attempt < self.config.callback_attempts {
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

/// Subscribes `group` to `topic`, retrying every 2 s while the bus refuses.
async fn subscribe(bus: &dyn MetricsBus, group: &str, topic: Topic) -> Box<dyn Subscription> {
    loop {
        match bus.subscribe(group, &[topic]).await {
            Ok(sub) => return sub,
            Err(e) => {
                warn!(bus = bus.name(), %group, error = %e, "cannot subscribe to the invocation topics; retrying in 2 s");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// The 202 answer.
fn accepted(id: &str, duplicate: bool) -> Response<Body> {
    let location = format!("/v1/invocations/{id}");
    let mut resp = http::json(StatusCode::ACCEPTED, &serde_json::json!({"id": id, "status_url": location, "duplicate": duplicate}));
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(LOCATION, v);
    }
    resp
}

fn check_key(value: &HeaderValue) -> Result<&str, ApiError> {
    match value.to_str() {
        Ok(key) if !key.is_empty() && key.len() <= MAX_KEY_LEN => Ok(key),
        _ => Err(ApiError::invalid(IDEMPOTENCY_KEY, format!("an idempotency key is 1 to {MAX_KEY_LEN} visible ASCII characters"))),
    }
}

/// An absolute `http://` or `https://` URL with a host.
pub fn check_callback(url: &str) -> Result<String, ApiError> {
    let bad = |why: &str| ApiError::invalid(CALLBACK_URL, format!("{url:?} is not a callback URL ({why}): give an absolute http:// or https:// URL"));
    let uri: Uri = url.parse().map_err(|_| bad("it does not parse"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(bad("the scheme is not http or https")),
    }
    match uri.host() {
        Some(h) if !h.is_empty() => Ok(url.to_string()),
        _ => Err(bad("it names no host")),
    }
}

/// Deliveries in order, so one is marked processed only when it and every
/// delivery before it have ended: marking one processed marks everything
/// before it on its stream, and an invocation still running must stay unacknowledged.
#[derive(Default)]
struct InOrder {
    next_seq: u64,
    /// (seq, delivery, its invocation id, ended), oldest first.
    pending: VecDeque<(u64, Received, Option<String>, bool)>,
}

impl InOrder {
    fn push(&mut self, received: Received, id: Option<String>) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending.push_back((seq, received, id, false));
        seq
    }

    fn id_of(&self, seq: u64) -> Option<String> {
        self.pending.iter().find(|p| p.0 == seq).and_then(|p| p.2.clone())
    }

    /// Marks `seq` ended; returns the latest delivery that may now be marked
    /// processed (the end of the run of ended deliveries at the front), if any.
    fn finish(&mut self, seq: u64) -> Option<Received> {
        if let Some(p) = self.pending.iter_mut().find(|p| p.0 == seq) {
            p.3 = true;
        }
        let mut last = None;
        while self.pending.front().is_some_and(|p| p.3) {
            last = self.pending.pop_front().map(|p| p.1);
        }
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callbacks_must_be_absolute_http_urls() {
        assert!(check_callback("http://127.0.0.1:9000/done").is_ok());
        assert!(check_callback("https://hooks.example.com/x?y=1").is_ok());
        for bad in ["/relative", "ftp://example.com/", "http:///nohost", "not a url", ""] {
            let e = check_callback(bad).unwrap_err();
            assert_eq!(e.field.as_deref(), Some(CALLBACK_URL), "{bad}");
        }
    }

    #[tokio::test]
    async fn deliveries_are_acknowledged_only_in_order() {
        let bus = sluice_bus::InProcessBus::new();
        let mut sub = bus.subscribe("g", &[Topic::Invocation]).await.unwrap();
        for n in 0..3 {
            bus.publish(Message { topic: Topic::Invocation, key: format!("k{n}"), payload: Bytes::from(n.to_string()) }).await.unwrap();
        }
        let mut acks = InOrder::default();
        let seqs: Vec<u64> = [sub.next().await.unwrap(), sub.next().await.unwrap(), sub.next().await.unwrap()].into_iter().map(|r| acks.push(r, None)).collect();
        assert!(acks.finish(seqs[1]).is_none(), "the first is still running");
        assert!(acks.finish(seqs[2]).is_none());
        let last = acks.finish(seqs[0]).expect("all three ended");
        assert_eq!(last.payload, Bytes::from("2"));
        assert!(acks.pending.is_empty());
    }
}
