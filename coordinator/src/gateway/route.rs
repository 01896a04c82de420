//! One function's routing entry: its ready instances, the requests waiting for
//! one, and its counters.
//!
//! Picking an instance is a short critical section (least outstanding requests
//! among those under the function's concurrency); waiting is a `Notify` woken
//! when an instance frees a slot or a new one becomes ready.

use sluice_common::metrics::Histogram;
use sluice_common::{Endpoint, FunctionName, FunctionSpec, InstanceId, Timestamp};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// A ready instance the gateway can send requests to.
#[derive(Debug)]
pub struct Backend {
    pub id: InstanceId,
    /// `host:port` to connect to.
    pub authority: String,
    /// The `x-sluice-instance` value, built once.
    pub header: hyper::header::HeaderValue,
    pub outstanding: AtomicU32,
    /// Milliseconds since the epoch of the last request start or end.
    pub last_active: AtomicU64,
}

/// The part of a spec the gateway needs, refreshed on every sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteLimits {
    pub concurrency: u32,
    pub queue_limit: u32,
    pub start_timeout: Duration,
}

impl From<&FunctionSpec> for RouteLimits {
    fn from(s: &FunctionSpec) -> Self {
        Self { concurrency: s.concurrency, queue_limit: s.queue_limit, start_timeout: s.start_timeout() }
    }
}

/// Per-function counters, exported on `/metrics`.
#[derive(Debug, Default)]
pub struct RouteCounters {
    pub requests: AtomicU64,
    pub responses_2xx: AtomicU64,
    pub responses_4xx: AtomicU64,
    pub responses_5xx: AtomicU64,
    /// Requests that found no ready instance and waited for one to start.
    pub cold_starts: AtomicU64,
    /// Requests refused because the queue was full.
    pub shed: AtomicU64,
    /// Requests that waited longer than the start timeout.
    pub timeouts: AtomicU64,
    /// Requests the instance failed to answer.
    pub upstream_errors: AtomicU64,
    pub latency: Histogram,
    /// Requests from other functions' instances, by calling function.
    pub calls: Mutex<HashMap<FunctionName, u64>>,
}

impl RouteCounters {
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
    pub in_flight: AtomicU32,
    pub queued: AtomicU32,
    removed: AtomicBool,
    wake: Notify,
    pub counters: RouteCounters,
}

impl Route {
    pub fn new(spec: &FunctionSpec) -> Self {
        Self {
            name: spec.name.clone(),
            limits: Mutex::new(spec.into()),
            backends: Mutex::new(Vec::new()),
            in_flight: AtomicU32::new(0),
            queued: AtomicU32::new(0),
            removed: AtomicBool::new(false),
            wake: Notify::new(),
            counters: RouteCounters::default(),
        }
    }

    pub fn limits(&self) -> RouteLimits {
        *self.limits.lock().expect("limits lock")
    }

    /// Replaces the ready set, keeping the counters of instances still in it.
    pub fn set_backends(&self, limits: RouteLimits, ready: &[(InstanceId, Endpoint)], now: Timestamp) {
        *self.limits.lock().expect("limits lock") = limits;
        let mut added = false;
        {
            let mut backends = self.backends.lock().expect("backends lock");
            let old = std::mem::take(&mut *backends);
            for (id, endpoint) in ready {
                let authority = endpoint.to_string();
                match old.iter().find(|b| b.id == *id && b.authority == authority) {
                    Some(b) => backends.push(b.clone()),
                    None => {
                        added = true;
                        backends.push(Arc::new(Backend {
                            id: *id,
                            header: hyper::header::HeaderValue::from_str(&id.to_string()).expect("instance ids are ASCII"),
                            authority,
                            outstanding: AtomicU32::new(0),
                            last_active: AtomicU64::new(now.0),
                        }));
                    }
                }
            }
        }
        if added {
            self.wake.notify_waiters();
        }
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
        let concurrency = self.limits().concurrency;
        let backends = self.backends.lock().expect("backends lock");
        let best =
            backends.iter().filter(|b| Some(b.id) != except).map(|b| (b.outstanding.load(Ordering::Relaxed), b)).filter(|(n, _)| *n < concurrency).min_by_key(|(n, _)| *n)?.1;
        best.outstanding.fetch_add(1, Ordering::Relaxed);
        best.last_active.store(now.0, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(best.clone())
    }

    /// Returns a slot taken by `try_acquire` or `acquire`.
    pub fn release(&self, backend: &Backend, now: Timestamp) {
        backend.outstanding.fetch_sub(1, Ordering::Relaxed);
        backend.last_active.store(now.0, Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
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
        let cold = !self.has_backends();
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
        Endpoint { host: "127.0.0.1".into(), port }
    }

    const T: Timestamp = Timestamp(5);

    #[test]
    fn least_outstanding_within_concurrency() {
        let r = route(2, 10, 30);
        r.set_backends(r.limits(), &[(InstanceId(1), ep(1)), (InstanceId(2), ep(2))], T);
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
        r.set_backends(r.limits(), &[(InstanceId(1), ep(1)), (InstanceId(2), ep(2))], T);
        assert_eq!(r.try_acquire_except(T, Some(InstanceId(1))).unwrap().id, InstanceId(2));
        r.set_backends(r.limits(), &[(InstanceId(1), ep(1))], T);
        assert!(r.try_acquire_except(T, Some(InstanceId(1))).is_none());
    }

    #[test]
    fn resync_keeps_counters() {
        let r = route(4, 10, 30);
        r.set_backends(r.limits(), &[(InstanceId(1), ep(1))], T);
        let a = r.try_acquire(T).unwrap();
        r.set_backends(r.limits(), &[(InstanceId(1), ep(1)), (InstanceId(2), ep(2))], T);
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
        r.set_backends(r.limits(), &[(InstanceId(7), ep(7))], T);
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
}
