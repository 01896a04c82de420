//! One function's routing entry: its ready instances, its paused ones (not
//! routable, but resumable), the requests waiting for one, and its counters.
//!
//! Picking an instance is a short critical section (least outstanding requests
//! among those under the function's concurrency); waiting is a `Notify` woken
//! when an instance frees a slot or a new one becomes ready.
//!
//! A waiting request may resume a paused instance (`take_resume`): the route
//! keeps which resumes are in flight, so one instance is asked for once, and
//! no more instances than the waiting requests need. An instance that comes
//! back from a pause is `thawing` until its first response: its container may
//! still be frozen, so a request sent to it waits for the answer no longer
//! than the start timeout (see `Gateway::invoke`).

use sluice_common::cache::CacheSpec;
use sluice_common::metrics::Histogram;
use sluice_common::rate::{RateLimit, TokenBucket};
use sluice_common::{Endpoint, FunctionName, FunctionSpec, InstanceId, Timestamp};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// A ready instance the gateway can send requests to.
#[derive(Debug)]
pub struct Backend {
    pub id: InstanceId,
    /// What its agent advertised, as the routing table last saw it.
    endpoint: Endpoint,
    /// Its published `host:port`: how a gateway on another host reaches it.
    published: Arc<str>,
    /// The container's own address, when the instance is on the node this
    /// gateway shares a host with: no port publisher in between.
    direct: Option<Arc<str>>,
    /// Whether `direct` was seen to work (see [`Backend::unreachable`]).
    direct_state: AtomicU8,
    /// The `x-sluice-instance` value, built once.
    pub header: hyper::header::HeaderValue,
    pub outstanding: AtomicU32,
    /// Milliseconds since the epoch of the last request start or end.
    pub last_active: AtomicU64,
    /// When the instance last became ready (its `state_since`), in milliseconds
    /// since the epoch: a change means it was paused and resumed meanwhile.
    since: AtomicU64,
    /// Resumed from a pause and not yet seen answering: its container may
    /// still be frozen.
    pub thawing: AtomicBool,
}

/// `Backend::direct_state`: not tried yet, answered once, or not reachable from here.
const DIRECT_UNPROVEN: u8 = 0;
const DIRECT_WORKS: u8 = 1;
const DIRECT_UNREACHABLE: u8 = 2;
/// See [`Backend::connect_within`].
const UNPROVEN_DIRECT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

impl Backend {
    fn new(r: &ReadyInstance, now: Timestamp, thawing: bool) -> Self {
        Self {
            id: r.id,
            header: hyper::header::HeaderValue::from_str(&r.id.to_string()).expect("instance ids are ASCII"),
            published: r.endpoint.to_string().into(),
            direct: r.endpoint.direct.filter(|_| r.local).map(|a| a.to_string().into()),
            direct_state: AtomicU8::new(DIRECT_UNPROVEN),
            endpoint: r.endpoint.clone(),
            outstanding: AtomicU32::new(0),
            last_active: AtomicU64::new(now.0),
            since: AtomicU64::new(r.since.0),
            thawing: AtomicBool::new(thawing),
        }
    }

    /// `host:port` to send the next request to: the direct address while it
    /// may work, else the published one.
    pub fn authority(&self) -> &Arc<str> {
        match &self.direct {
            Some(direct) if self.direct_state.load(Ordering::Relaxed) != DIRECT_UNREACHABLE => direct,
            _ => &self.published,
        }
    }

    /// How long a new connection to `authority` may take: an instance's own
    /// address not yet seen working gets little time, since where it is not
    /// reachable the connection may hang rather than fail; a reachable one on
    /// this host connects at once.
    pub fn connect_within(&self, authority: &str) -> std::time::Duration {
        if self.direct.as_deref() == Some(authority) && self.direct_state.load(Ordering::Relaxed) == DIRECT_UNPROVEN {
            UNPROVEN_DIRECT_CONNECT_TIMEOUT
        } else {
            super::upstream::CONNECT_TIMEOUT
        }
    }

    /// Where to check, before a new connection to `authority`, that the
    /// container is still there: its published port, when `authority` is its
    /// own address. A container's address is handed to the next container
    /// started on its network as soon as it is gone, which may be another
    /// function's, while the routing table still lists it until its agent
    /// reports it (a second or so). Its published port is withdrawn before its
    /// address is released (Docker unmaps ports, then frees the address), so
    /// while that port accepts, the address is still this container's. A
    /// pooled connection needs no check: it ends with its container.
    pub fn alive_check(&self, authority: &str) -> Option<&str> {
        (self.direct.as_deref() == Some(authority)).then_some(&*self.published)
    }

    /// The instance answered a request sent to `authority`.
    pub fn answered(&self, authority: &str) {
        if self.direct_state.load(Ordering::Relaxed) == DIRECT_UNPROVEN && self.direct.as_deref() == Some(authority) {
            self.direct_state.store(DIRECT_WORKS, Ordering::Relaxed);
        }
    }

    /// No connection could be made to `authority`. True when that was the
    /// direct address and it has never worked: this gateway cannot reach the
    /// container's network although it shares the host (rootless Docker, a
    /// gateway in a container on another network), so this instance is reached
    /// through its published port from now on, and the request may go there.
    /// Once the direct address has worked, a failure is the instance's, not the
    /// network's, and is handled as any other.
    pub fn unreachable(&self, authority: &str) -> bool {
        self.direct.as_deref() == Some(authority) && self.direct_state.compare_exchange(DIRECT_UNPROVEN, DIRECT_UNREACHABLE, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }
}

/// A ready instance as the routing table learns it from the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyInstance {
    pub id: InstanceId,
    pub endpoint: Endpoint,
    /// When it became ready.
    pub since: Timestamp,
    /// On the node this gateway shares a host with: its direct address is
    /// reachable from here.
    pub local: bool,
}

/// The part of a spec the gateway needs, refreshed on every sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteLimits {
    pub concurrency: u32,
    pub queue_limit: u32,
    pub start_timeout: Duration,
    pub private: bool,
    /// How long an instance may take to begin its answer.
    pub request_timeout: Duration,
    pub rate_limit: Option<RateLimit>,
}

impl From<&FunctionSpec> for RouteLimits {
    fn from(s: &FunctionSpec) -> Self {
        Self {
            concurrency: s.concurrency,
            queue_limit: s.queue_limit,
            start_timeout: s.start_timeout(),
            private: s.private,
            request_timeout: s.request_timeout(),
            rate_limit: s.rate_limit,
        }
    }
}

/// How many copies of the per-request counters a route keeps. Each thread
/// writes its own (see [`shard`]), so two cores answering one function's
/// requests do not pull a cache line back and forth for every count; the
/// readers (metrics, figures) add the copies up.
const SHARDS: usize = 8;

/// The counters every request of a function updates, one copy per thread.
/// Aligned so that two copies never share a cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard {
    requests: AtomicU64,
    /// By status class: 2xx (and anything below 400), 4xx, 5xx.
    responses: [AtomicU64; 3],
    /// Slots taken minus slots returned on this thread (wrapping: a slot may
    /// be returned on another thread than the one that took it).
    in_flight: AtomicU64,
    latency: Histogram,
}

/// Which copy of the counters this thread writes: threads take the next one
/// when they first count (a gateway thread keeps its own while there are no
/// more than `SHARDS` counting threads).
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static MINE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    MINE.with(|s| *s)
}

/// A response's status class, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    Success = 0,
    ClientError = 1,
    ServerError = 2,
}

impl From<hyper::StatusCode> for StatusClass {
    fn from(status: hyper::StatusCode) -> Self {
        match status.as_u16() {
            500..=599 => StatusClass::ServerError,
            400..=499 => StatusClass::ClientError,
            _ => StatusClass::Success,
        }
    }
}

/// Per-function counters, exported on `/metrics`.
#[derive(Debug, Default)]
pub struct RouteCounters {
    /// Received, answered by class, in flight and latency: see [`Shard`].
    shards: [Shard; SHARDS],
    /// Requests that found no ready instance, and none paused, and waited for one to start.
    pub cold_starts: AtomicU64,
    /// Requests refused because the queue was full.
    pub shed: AtomicU64,
    /// Requests that waited longer than the start timeout.
    pub timeouts: AtomicU64,
    /// Requests the instance failed to answer.
    pub upstream_errors: AtomicU64,
    /// Requests refused with 429 by the function's rate limit.
    pub rate_limited: AtomicU64,
    /// Requests whose instance did not begin its answer within the request timeout.
    pub request_timeouts: AtomicU64,
    /// Requests that found no free slot: time until they had one.
    pub wait: Histogram,
    /// Resumes this gateway asked for that applied, and the time from asking
    /// to the resume applied on this coordinator.
    pub resumes: AtomicU64,
    pub resume_commit: Histogram,
    /// Requests sent to a thawing instance that got no answer in the start timeout.
    pub thaw_timeouts: AtomicU64,
    /// For requests sent to a thawing instance: time from sending to the
    /// response head, which includes the rest of the thaw.
    pub thaw_first_byte: Histogram,
    /// Requests the response cache answered; they reach no instance and are
    /// counted in nothing above (the scaler sizes by what reaches the function).
    pub cache_hits: AtomicU64,
    /// Requests to a function with a cache that it did not answer.
    pub cache_misses: AtomicU64,
    /// Requests from other functions' instances, by calling function.
    pub calls: Mutex<HashMap<FunctionName, u64>>,
}

impl RouteCounters {
    /// Counts a request received.
    pub fn received(&self) {
        self.shards[shard()].requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request answered with `status`, `seconds` after it was received.
    pub fn answered(&self, status: hyper::StatusCode, seconds: f64) {
        let mine = &self.shards[shard()];
        mine.responses[StatusClass::from(status) as usize].fetch_add(1, Ordering::Relaxed);
        mine.latency.observe(seconds);
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.shards.iter().map(|s| s.requests.load(Ordering::Relaxed)).sum()
    }

    /// Requests answered so far with a status of `class`.
    pub fn responses(&self, class: StatusClass) -> u64 {
        self.shards.iter().map(|s| s.responses[class as usize].load(Ordering::Relaxed)).sum()
    }

    /// Time from request to the end of the response, of every request answered so far.
    pub fn latency(&self) -> Histogram {
        Histogram::merged(self.shards.iter().map(|s| &s.latency))
    }

    fn slot_taken(&self) {
        self.shards[shard()].in_flight.fetch_add(1, Ordering::Relaxed);
    }

    fn slot_returned(&self) {
        self.shards[shard()].in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Requests holding a slot on an instance now.
    pub fn in_flight(&self) -> u32 {
        let taken = self.shards.iter().fold(0u64, |sum, s| sum.wrapping_add(s.in_flight.load(Ordering::Relaxed)));
        // Copies read one after another may be mid-change: never show a negative.
        u32::try_from(taken as i64).unwrap_or(0)
    }

    /// Counts a request that came from an instance of `caller`.
    pub fn record_call(&self, caller: &FunctionName) {
        let mut calls = self.calls.lock().expect("calls lock");
        match calls.get_mut(caller) {
            Some(n) => *n += 1,
            None => {
                calls.insert(caller.clone(), 1);
            }
        }
    }
}

/// Why no instance could be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    QueueFull,
    StartTimedOut,
    Removed,
}

#[derive(Debug)]
pub struct Route {
    pub name: FunctionName,
    limits: Mutex<RouteLimits>,
    backends: Mutex<Vec<Arc<Backend>>>,
    paused: Mutex<Paused>,
    pub queued: AtomicU32,
    /// Callers need an invoker token (`FunctionSpec::private`).
    pub private: AtomicBool,
    /// `RouteLimits::request_timeout` in milliseconds and `RouteLimits::concurrency`,
    /// read on every request without the limits' lock.
    pub request_timeout_ms: AtomicU64,
    concurrency: AtomicU32,
    /// Whether `bucket` holds a limit: functions without one never take its lock.
    has_rate_limit: AtomicBool,
    /// The rate limit's bucket, if the function has one; kept across syncs
    /// while the limit stays the same.
    bucket: Mutex<Option<TokenBucket>>,
    removed: AtomicBool,
    wake: Notify,
    pub counters: RouteCounters,
    /// The function's response cache settings; `cached` says whether there
    /// are any without taking the lock, so uncached functions pay one load.
    cached: AtomicBool,
    cache: Mutex<Option<Arc<CacheSpec>>>,
}

impl Route {
    pub fn new(spec: &FunctionSpec) -> Self {
        Self {
            name: spec.name.clone(),
            limits: Mutex::new(spec.into()),
            backends: Mutex::new(Vec::new()),
            paused: Mutex::new(Paused::default()),
            queued: AtomicU32::new(0),
            private: AtomicBool::new(spec.private),
            request_timeout_ms: AtomicU64::new(spec.request_timeout().as_millis() as u64),
            concurrency: AtomicU32::new(spec.concurrency),
            has_rate_limit: AtomicBool::new(false),
            bucket: Mutex::new(None),
            removed: AtomicBool::new(false),
            wake: Notify::new(),
            counters: RouteCounters::default(),
            cached: AtomicBool::new(spec.cache.is_some()),
            cache: Mutex::new(spec.cache.as_deref().cloned().map(Arc::new)),
        }
    }

    /// The function's cache settings, if it has a cache.
    pub fn cache_spec(&self) -> Option<Arc<CacheSpec>> {
        if !self.cached.load(Ordering::Relaxed) {
            return None;
        }
        self.cache.lock().expect("cache spec lock").clone()
    }

    /// Follows the spec's cache settings.
    pub fn set_cache(&self, spec: Option<&CacheSpec>) {
        let mut cache = self.cache.lock().expect("cache spec lock");
        if cache.as_deref() != spec {
            *cache = spec.cloned().map(Arc::new);
            self.cached.store(spec.is_some(), Ordering::Relaxed);
        }
    }

    /// Admits a request under the rate limit, or says how long until one would be.
    /// `now` is only asked for when the function has a limit.
    pub fn admit(&self, now: impl FnOnce() -> Timestamp) -> Result<(), Duration> {
        if !self.has_rate_limit.load(Ordering::Relaxed) {
            return Ok(());
        }
        match self.bucket.lock().expect("bucket lock").as_mut() {
            None => Ok(()),
            Some(bucket) => bucket.take(now().0),
        }
    }

    pub fn limits(&self) -> RouteLimits {
        *self.limits.lock().expect("limits lock")
    }

    /// Replaces the ready and paused sets, keeping the counters of instances
    /// still ready. An instance that was paused at the last sync and is ready
    /// now, or that is ready again since another moment than before (paused
    /// and resumed between two syncs), is thawing.
    ///
    /// Returns the instances paused while requests from this gateway were on
    /// them (with how many), marked as being resumed: the controller decides
    /// a pause from activity a second old, and those requests would hang in the
    /// frozen container until something resumed it.
    #[must_use = "instances paused under requests in flight must be resumed"]
    pub fn set_instances(&self, limits: RouteLimits, ready: &[ReadyInstance], paused: &[InstanceId], now: Timestamp) -> Vec<(InstanceId, u32)> {
        *self.limits.lock().expect("limits lock") = limits;
        self.private.store(limits.private, Ordering::Relaxed);
        self.request_timeout_ms.store(limits.request_timeout.as_millis() as u64, Ordering::Relaxed);
        self.concurrency.store(limits.concurrency, Ordering::Relaxed);
        {
            let mut bucket = self.bucket.lock().expect("bucket lock");
            if bucket.as_ref().map(TokenBucket::limit) != limits.rate_limit {
                *bucket = limits.rate_limit.map(|l| TokenBucket::new(l, now.0));
            }
            self.has_rate_limit.store(bucket.is_some(), Ordering::Relaxed);
        }
        let (mut added, mut caught) = (false, Vec::new());
        {
            let mut was_paused = self.paused.lock().expect("paused lock");
            let mut backends = self.backends.lock().expect("backends lock");
            let old = std::mem::take(&mut *backends);
            for r in ready {
                match old.iter().find(|b| b.id == r.id && b.endpoint == r.endpoint) {
                    Some(b) => {
                        if b.since.swap(r.since.0, Ordering::Relaxed) != r.since.0 {
                            b.thawing.store(true, Ordering::Relaxed);
                        }
                        backends.push(b.clone());
                    }
                    None => {
                        added = true;
                        backends.push(Arc::new(Backend::new(r, now, was_paused.ids.contains(&r.id))));
                    }
                }
            }
            was_paused.ids = paused.to_vec();
            // A resume in flight for an instance no longer paused has applied
            // (or the instance went): the next pause of it may be resumed again.
            let Paused { ids, resuming } = &mut *was_paused;
            resuming.retain(|id| ids.contains(id));
            for b in &old {
                let busy = b.outstanding.load(Ordering::Relaxed);
                if busy > 0 && ids.contains(&b.id) && !backends.iter().any(|n| n.id == b.id) && resuming.insert(b.id) {
                    caught.push((b.id, busy));
                }
            }
        }
        if added {
            self.wake.notify_waiters();
        }
        caught
    }

    /// A paused instance to resume for the requests waiting now, marked as
    /// being resumed; none if every paused instance is already being resumed,
    /// or if those being resumed will have room enough for the waiting requests.
    pub fn take_resume(&self) -> Option<InstanceId> {
        let concurrency = self.limits().concurrency.max(1);
        let queued = self.queued.load(Ordering::SeqCst);
        let mut paused = self.paused.lock().expect("paused lock");
        let Paused { ids, resuming } = &mut *paused;
        if u64::from(queued) <= resuming.len() as u64 * u64::from(concurrency) {
            return None;
        }
        let id = *ids.iter().find(|id| !resuming.contains(id))?;
        resuming.insert(id);
        Some(id)
    }

    /// The resume of `id` was refused or not committed: it may be asked for again.
    pub fn resume_failed(&self, id: InstanceId) {
        self.paused.lock().expect("paused lock").resuming.remove(&id);
    }

    /// The function's paused instances, in id order.
    pub fn paused(&self) -> Vec<InstanceId> {
        self.paused.lock().expect("paused lock").ids.clone()
    }

    pub fn backends(&self) -> Vec<Arc<Backend>> {
        self.backends.lock().expect("backends lock").clone()
    }

    pub fn has_backends(&self) -> bool {
        !self.backends.lock().expect("backends lock").is_empty()
    }

    /// The function was deleted: waiting requests are told so.
    pub fn remove(&self) {
        self.removed.store(true, Ordering::SeqCst);
        self.wake.notify_waiters();
    }

    /// Takes a slot on the least busy instance with one free, if any.
    pub fn try_acquire(&self, now: Timestamp) -> Option<Arc<Backend>> {
        self.try_acquire_except(now, None)
    }

    /// As `try_acquire`, passing over instance `except` (one that just failed).
    pub fn try_acquire_except(&self, now: Timestamp, except: Option<InstanceId>) -> Option<Arc<Backend>> {
        let concurrency = self.concurrency.load(Ordering::Relaxed);
        let backends = self.backends.lock().expect("backends lock");
        let best =
            backends.iter().filter(|b| Some(b.id) != except).map(|b| (b.outstanding.load(Ordering::Relaxed), b)).filter(|(n, _)| *n < concurrency).min_by_key(|(n, _)| *n)?.1;
        best.outstanding.fetch_add(1, Ordering::Relaxed);
        best.last_active.store(now.0, Ordering::Relaxed);
        self.counters.slot_taken();
        Some(best.clone())
    }

    /// Returns a slot taken by `try_acquire` or `acquire`.
    pub fn release(&self, backend: &Backend, now: Timestamp) {
        backend.outstanding.fetch_sub(1, Ordering::Relaxed);
        backend.last_active.store(now.0, Ordering::Relaxed);
        self.counters.slot_returned();
        if self.queued.load(Ordering::Relaxed) > 0 {
            self.wake.notify_one();
        }
    }

    /// Waits for a slot: queues (up to the queue limit) and calls `on_wait` once
    /// so the caller can ask for capacity, then waits up to the start timeout.
    pub async fn acquire(&self, now: impl Fn() -> Timestamp, on_wait: impl FnOnce(bool)) -> Result<Arc<Backend>, Refusal> {
        if let Some(b) = self.try_acquire(now()) {
            return Ok(b);
        }
        let limits = self.limits();
        if self.queued.fetch_add(1, Ordering::SeqCst) >= limits.queue_limit {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            self.counters.shed.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::QueueFull);
        }
        let _queued = QueuedGuard(&self.queued);
        // Waiting for a paused instance to resume is not a cold start.
        let cold = !self.has_backends() && self.paused.lock().expect("paused lock").ids.is_empty();
        if cold {
            self.counters.cold_starts.fetch_add(1, Ordering::Relaxed);
        }
        on_wait(cold);
        let deadline = tokio::time::Instant::now() + limits.start_timeout;
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            // Register before checking, so a wake between the check and the await is not lost.
            notified.as_mut().enable();
            if self.removed.load(Ordering::SeqCst) {
                return Err(Refusal::Removed);
            }
            if let Some(b) = self.try_acquire(now()) {
                return Ok(b);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.try_acquire(now()).ok_or_else(|| {
                    self.counters.timeouts.fetch_add(1, Ordering::Relaxed);
                    Refusal::StartTimedOut
                });
            }
        }
    }
}

/// The function's paused instances, and those a resume was asked for.
#[derive(Debug, Default)]
struct Paused {
    /// In id order.
    ids: Vec<InstanceId>,
    /// Resumes asked for and not yet seen applied (or refused).
    resuming: BTreeSet<InstanceId>,
}

struct QueuedGuard<'a>(&'a AtomicU32);

impl Drop for QueuedGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_common::ImageRef;

    fn route(concurrency: u32, queue_limit: u32, start_timeout_secs: u32) -> Arc<Route> {
        let mut spec = FunctionSpec::new(FunctionName::new("f").unwrap(), ImageRef::parse("img").unwrap());
        spec.concurrency = concurrency;
        spec.queue_limit = queue_limit;
        spec.start_timeout_secs = start_timeout_secs;
        Arc::new(Route::new(&spec))
    }

    fn ep(port: u16) -> Endpoint {
        Endpoint::published("127.0.0.1", port)
    }

    const T: Timestamp = Timestamp(5);

    /// Syncs `r` with instances `ready` (each at port = id, ready since T) and `paused`.
    fn set(r: &Route, ready: &[u64], paused: &[u64]) {
        set_since(r, ready, paused, T);
    }

    fn set_since(r: &Route, ready: &[u64], paused: &[u64], since: Timestamp) {
        let ready: Vec<ReadyInstance> = ready.iter().map(|&id| ReadyInstance { id: InstanceId(id), endpoint: ep(id as u16), since, local: false }).collect();
        let paused: Vec<InstanceId> = paused.iter().map(|&id| InstanceId(id)).collect();
        let caught = r.set_instances(r.limits(), &ready, &paused, T);
        assert!(caught.is_empty(), "no request was on an instance paused: {caught:?}");
    }

    fn thawing(r: &Route, id: u64) -> bool {
        r.backends().iter().find(|b| b.id == InstanceId(id)).expect("a backend").thawing.load(Ordering::Relaxed)
    }

    #[test]
    fn least_outstanding_within_concurrency() {
        let r = route(2, 10, 30);
        set(&r, &[1, 2], &[]);
        let a = r.try_acquire(T).unwrap();
        let b = r.try_acquire(T).unwrap();
        assert_ne!(a.id, b.id, "second request goes to the idle instance");
        r.try_acquire(T).unwrap();
        r.try_acquire(T).unwrap();
        assert!(r.try_acquire(T).is_none(), "both at concurrency 2");
        r.release(&a, T);
        assert_eq!(r.try_acquire(T).unwrap().id, a.id);
    }

    #[test]
    fn a_failed_instance_can_be_passed_over() {
        let r = route(4, 10, 30);
        set(&r, &[1, 2], &[]);
        assert_eq!(r.try_acquire_except(T, Some(InstanceId(1))).unwrap().id, InstanceId(2));
        set(&r, &[1], &[]);
        assert!(r.try_acquire_except(T, Some(InstanceId(1))).is_none());
    }

    #[test]
    fn resync_keeps_counters() {
        let r = route(4, 10, 30);
        set(&r, &[1], &[]);
        let a = r.try_acquire(T).unwrap();
        set(&r, &[1, 2], &[]);
        let kept = r.backends().into_iter().find(|b| b.id == InstanceId(1)).unwrap();
        assert!(Arc::ptr_eq(&kept, &a));
        assert_eq!(kept.outstanding.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn waiters_get_the_first_ready_instance() {
        let r = route(1, 10, 30);
        let asked = Arc::new(AtomicU32::new(0));
        let waiter = {
            let (r, asked) = (r.clone(), asked.clone());
            tokio::spawn(async move {
                r.acquire(|| T, |cold| assert!(cold) /* first wait is cold */).await.map(|b| {
                    asked.fetch_add(1, Ordering::SeqCst);
                    b.id
                })
            })
        };
        tokio::task::yield_now().await;
        assert_eq!(r.queued.load(Ordering::SeqCst), 1);
        set(&r, &[7], &[]);
        assert_eq!(waiter.await.unwrap(), Ok(InstanceId(7)));
        assert_eq!(r.queued.load(Ordering::SeqCst), 0);
        assert_eq!(r.counters.cold_starts.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_full_queue_sheds_and_a_slow_start_times_out() {
        let r = route(1, 1, 1);
        let first = {
            let r = r.clone();
            tokio::spawn(async move { r.acquire(|| T, |_| {}).await.map(|b| b.id) })
        };
        tokio::task::yield_now().await;
        assert_eq!(r.acquire(|| T, |_| {}).await.map(|b| b.id), Err(Refusal::QueueFull));
        tokio::time::pause();
        assert_eq!(first.await.unwrap(), Err(Refusal::StartTimedOut));
        assert_eq!(r.counters.shed.load(Ordering::Relaxed), 1);
        assert_eq!(r.counters.timeouts.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn removal_wakes_waiters() {
        let r = route(1, 10, 30);
        let w = {
            let r = r.clone();
            tokio::spawn(async move { r.acquire(|| T, |_| {}).await.map(|b| b.id) })
        };
        tokio::task::yield_now().await;
        r.remove();
        assert_eq!(w.await.unwrap(), Err(Refusal::Removed));
    }

    #[tokio::test]
    async fn a_waiting_request_resumes_one_paused_instance_at_a_time() {
        let r = route(2, 10, 30);
        set(&r, &[], &[3, 4]);
        assert_eq!(r.take_resume(), None, "nobody waits");
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let r = r.clone();
                tokio::spawn(async move { r.acquire(|| T, |_| {}).await.map(|b| b.id) })
            })
            .collect();
        tokio::task::yield_now().await;
        assert_eq!(r.queued.load(Ordering::SeqCst), 3);
        assert_eq!(r.take_resume(), Some(InstanceId(3)));
        // One resume brings room for 2 of the 3 waiting: one more is wanted, then no more.
        assert_eq!(r.take_resume(), Some(InstanceId(4)));
        assert_eq!(r.take_resume(), None);
        // Instance 4's resume was refused: it may be asked for again.
        r.resume_failed(InstanceId(4));
        assert_eq!(r.take_resume(), Some(InstanceId(4)));
        // 3 resumed: it is ready, and thawing until it answers; the waiters get it.
        set(&r, &[3], &[4]);
        assert!(thawing(&r, 3));
        assert_eq!(r.paused(), vec![InstanceId(4)]);
        // Its resume is no longer in flight; 4's still is.
        r.resume_failed(InstanceId(4));
        assert_eq!(r.take_resume(), Some(InstanceId(4)));
        set(&r, &[3, 4], &[]);
        let mut served = Vec::new();
        for w in waiters {
            served.push(w.await.unwrap().unwrap());
        }
        assert_eq!(served.len(), 3);
        assert_eq!(r.take_resume(), None, "nothing paused");
    }

    #[test]
    fn an_instance_back_from_a_pause_is_thawing_and_a_new_one_is_not() {
        let r = route(4, 10, 30);
        set(&r, &[1], &[]);
        assert!(!thawing(&r, 1), "a started instance passed its health check");
        // Paused and resumed between two syncs: ready since another moment.
        set_since(&r, &[1], &[], Timestamp(9));
        assert!(thawing(&r, 1));
        r.backends()[0].thawing.store(false, Ordering::Relaxed);
        set_since(&r, &[1], &[], Timestamp(9));
        assert!(!thawing(&r, 1), "the same ready instance stays as it was");
        set(&r, &[], &[1]);
        set_since(&r, &[1], &[], Timestamp(12));
        assert!(thawing(&r, 1));
    }

    #[test]
    fn an_instance_paused_under_a_request_in_flight_is_handed_back_for_a_resume_once() {
        let r = route(4, 10, 30);
        set(&r, &[1, 2], &[]);
        let busy = r.try_acquire(T).unwrap();
        // The controller paused both: its view of activity lags a second.
        let both = [InstanceId(1), InstanceId(2)];
        assert_eq!(r.set_instances(r.limits(), &[], &both, T), vec![(busy.id, 1)], "only the one with a request on it");
        assert!(r.set_instances(r.limits(), &[], &both, T).is_empty(), "once");
        // Its resume is marked in flight, and a request that comes to wait counts
        // on it (it has room), rather than resuming the other one too.
        let asked = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
            let w = tokio::spawn({
                let r = r.clone();
                async move { r.acquire(|| T, |_| {}).await.map(|b| b.id) }
            });
            tokio::task::yield_now().await;
            assert_eq!(r.queued.load(Ordering::SeqCst), 1);
            let asked = r.take_resume();
            r.remove();
            let _ = w.await;
            asked
        });
        assert_eq!(asked, None);
    }
}
