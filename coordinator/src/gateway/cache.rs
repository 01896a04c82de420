//! The gateway's response cache: whole responses of functions that opt in
//! (`FunctionSpec::cache`), in memory, bounded in bytes per gateway, evicted
//! least recently used first.
//!
//! An entry is keyed by the function, the method, the path and query, and the
//! values of the spec's `vary_headers`. It lives for the spec's TTL, or less
//! when the function's `Cache-Control` says so, and is dropped by a purge
//! (`Command::PurgeCache`), a redeploy or the function's removal, each applied
//! here as this coordinator follows the log. A purge also bumps the function's
//! epoch: a fetch that began before it does not store what it brings back, as
//! that answer may be the one the purge was for.
//!
//! Concurrent misses for one key send one request to the function: the first
//! leads a flight, the others wait for it (no longer than the leader's fetch
//! may take: the start timeout and the request timeout) and then read what it stored, or go to the function themselves if
//! it stored nothing (the answer was not cacheable, or the leader went away).
//!
//! Nothing here reads a clock: callers pass `now`, so tests move time by hand.

use bytes::Bytes;
use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION, CACHE_CONTROL, SET_COOKIE, VARY};
use hyper::StatusCode;
use sluice_common::cache::CacheSpec;
use sluice_common::FunctionName;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Response header saying whether the cache answered.
pub const CACHE_HEADER: &str = "x-sluice-cache";
/// Bytes an entry is charged beyond its key, headers and body: the map and LRU
/// nodes, the entry itself and allocator slack, measured roughly so a cache of
/// tiny responses is bounded by what it really holds.
const ENTRY_OVERHEAD: u64 = 256;
/// Bytes charged per header beyond its name and value.
const HEADER_OVERHEAD: u64 = 32;

/// A response as the cache keeps it: hop-by-hop headers already removed.
#[derive(Debug)]
pub struct Stored {
    pub status: StatusCode,
    /// The headers a hit is answered with: the function's, `x-sluice-cache:
    /// hit` and `age: 0`, so a hit clones one map and at most replaces a value
    /// (adding headers to a clone would grow it on every hit).
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Stored {
    /// The stored form of an answer with `headers` and `body`.
    pub fn new(status: StatusCode, mut headers: HeaderMap, body: Bytes) -> Self {
        headers.insert(CACHE_HEADER, HeaderValue::from_static("hit"));
        headers.insert(hyper::header::AGE, HeaderValue::from_static("0"));
        Self { status, headers, body }
    }

    /// Bytes this response is charged with under `key`.
    fn size(&self, key: &str) -> u64 {
        let headers: u64 = self.headers.iter().map(|(n, v)| (n.as_str().len() + v.len()) as u64 + HEADER_OVERHEAD).sum();
        // The key is held twice: in the map and in the LRU order.
        ENTRY_OVERHEAD + 2 * key.len() as u64 + headers + self.body.len() as u64
    }
}

#[derive(Debug)]
struct Entry {
    stored: Arc<Stored>,
    stored_at: Instant,
    expires: Instant,
    /// Its place in the LRU order.
    tick: u64,
    size: u64,
}

/// One function's entries and the figures that outlive them.
#[derive(Debug, Default)]
struct FunctionCache {
    entries: HashMap<Arc<str>, Entry>,
    bytes: u64,
    evictions: u64,
    /// The epoch of the last purge: fetches begun before it do not store.
    purged_at: u64,
}

#[derive(Debug, Default)]
struct Inner {
    functions: HashMap<FunctionName, FunctionCache>,
    /// Least recently used first.
    lru: BTreeMap<u64, (FunctionName, Arc<str>)>,
    tick: u64,
    bytes: u64,
    /// The epoch of the last purge of everything, which also covers functions
    /// this cache has no record of yet.
    purged_all_at: u64,
    /// Flights in progress, by function and key.
    flights: HashMap<(FunctionName, Arc<str>), watch::Receiver<Flight>>,
}

/// What became of a flight, as its waiters see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flight {
    Pending,
    /// The answer is in the cache now.
    Stored,
    /// Nothing was stored: each waiter goes to the function itself.
    NotStored,
}

/// The outcome of a lookup.
#[derive(Debug)]
pub enum Lookup {
    Hit { stored: Arc<Stored>, age: Duration },
    Miss,
}

/// How a miss goes on.
#[derive(Debug)]
pub enum Join {
    /// This request fetches; the guard tells the waiters how it went.
    Lead(FlightGuard),
    /// Another request is fetching: wait for it.
    Wait(watch::Receiver<Flight>),
}

/// A per-function figure, for `/metrics` and the bus.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheFigures {
    pub bytes: u64,
    pub entries: u64,
    pub evictions: u64,
}

/// The cache of one gateway, shared by its serving threads.
#[derive(Debug)]
pub struct ResponseCache {
    inner: Mutex<Inner>,
    capacity: u64,
    /// Bumped by every purge; a fetch notes it when it starts.
    epoch: AtomicU64,
}

impl ResponseCache {
    /// A cache that holds at most `capacity` bytes (see `Stored::size`).
    pub fn new(capacity: u64) -> Arc<Self> {
        Arc::new(Self { inner: Mutex::new(Inner::default()), capacity, epoch: AtomicU64::new(0) })
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The epoch to pass to `store` for a fetch that starts now.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("cache lock")
    }

    /// The fresh entry of `key`, if any, no older than `max_age` when the
    /// caller gives one; an expired one is dropped on the way.
    pub fn lookup(&self, function: &FunctionName, key: &str, max_age: Option<Duration>, now: Instant) -> Lookup {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let Some(f) = inner.functions.get_mut(function) else { return Lookup::Miss };
        let Some(e) = f.entries.get_mut(key) else { return Lookup::Miss };
        if now >= e.expires {
            let (tick, size) = (e.tick, e.size);
            f.entries.remove(key);
            f.bytes -= size;
            inner.bytes -= size;
            inner.lru.remove(&tick);
            return Lookup::Miss;
        }
        let age = now.saturating_duration_since(e.stored_at);
        if max_age.is_some_and(|m| age > m) {
            return Lookup::Miss;
        }
        // The most recently used entry stays where it is: a hot key is read
        // again and again, and moving it within the order would change nothing.
        if e.tick != inner.tick {
            inner.tick += 1;
            if let Some(k) = inner.lru.remove(&e.tick) {
                inner.lru.insert(inner.tick, k);
            }
            e.tick = inner.tick;
        }
        Lookup::Hit { stored: e.stored.clone(), age }
    }

    /// Leads the flight of `key` or joins the one in progress.
    pub fn join(self: &Arc<Self>, function: &FunctionName, key: &str) -> Join {
        let mut inner = self.lock();
        let flight_key = (function.clone(), Arc::<str>::from(key));
        if let Some(rx) = inner.flights.get(&flight_key) {
            return Join::Wait(rx.clone());
        }
        let (tx, rx) = watch::channel(Flight::Pending);
        inner.flights.insert(flight_key.clone(), rx);
        Join::Lead(FlightGuard { cache: self.clone(), key: Some(flight_key), tx })
    }

    /// Keeps `stored` under `key` for `ttl` from `now`, unless the function was
    /// purged since `epoch` (when the fetch began) or it does not fit at all.
    /// Evicts least recently used entries, of any function, to make room.
    /// True if it was stored.
    pub fn store(&self, function: &FunctionName, key: &str, stored: Stored, ttl: Duration, epoch: u64, now: Instant) -> bool {
        let size = stored.size(key);
        if size > self.capacity || ttl.is_zero() {
            return false;
        }
        let mut inner = self.lock();
        let inner = &mut *inner;
        if inner.purged_all_at > epoch || inner.functions.get(function).is_some_and(|f| f.purged_at > epoch) {
            return false;
        }
        let key: Arc<str> = Arc::from(key);
        // The entry it replaces goes first, then others until this one fits.
        if let Some(f) = inner.functions.get_mut(function) {
            if let Some(old) = f.entries.remove(&key) {
                f.bytes -= old.size;
                inner.bytes -= old.size;
                inner.lru.remove(&old.tick);
            }
        }
        while inner.bytes + size > self.capacity {
            let Some((_, (victim_fn, victim_key))) = inner.lru.pop_first() else { break };
            if let Some(f) = inner.functions.get_mut(&victim_fn) {
                if let Some(old) = f.entries.remove(&victim_key) {
                    f.bytes -= old.size;
                    f.evictions += 1;
                    inner.bytes -= old.size;
                }
            }
        }
        inner.tick += 1;
        let tick = inner.tick;
        inner.lru.insert(tick, (function.clone(), key.clone()));
        let f = inner.functions.entry(function.clone()).or_default();
        f.entries.insert(key, Entry { stored: Arc::new(stored), stored_at: now, expires: now + ttl, tick, size });
        f.bytes += size;
        inner.bytes += size;
        true
    }

    /// Drops `function`'s entries of `path` (any method, query and varied
    /// header), or all of them; fetches in progress will not store.
    pub fn purge(&self, function: &FunctionName, path: Option<&str>) -> usize {
        let epoch = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        let mut inner = self.lock();
        let inner = &mut *inner;
        let f = inner.functions.entry(function.clone()).or_default();
        f.purged_at = epoch;
        let doomed: Vec<Arc<str>> = f.entries.keys().filter(|k| path.is_none_or(|p| key_path(k) == p)).cloned().collect();
        for k in &doomed {
            if let Some(old) = f.entries.remove(k) {
                f.bytes -= old.size;
                inner.bytes -= old.size;
                inner.lru.remove(&old.tick);
            }
        }
        doomed.len()
    }

    /// Drops everything (the state was replaced by a snapshot: purges in the
    /// entries it covers were never seen here).
    pub fn purge_all(&self) {
        let epoch = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        let mut inner = self.lock();
        inner.purged_all_at = epoch;
        inner.lru.clear();
        inner.bytes = 0;
        for f in inner.functions.values_mut() {
            f.entries.clear();
            f.bytes = 0;
            f.purged_at = epoch;
        }
    }

    pub fn figures(&self, function: &FunctionName) -> CacheFigures {
        let inner = self.lock();
        inner.functions.get(function).map_or_else(CacheFigures::default, |f| CacheFigures { bytes: f.bytes, entries: f.entries.len() as u64, evictions: f.evictions })
    }

    /// Bytes held in all.
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }
}

/// Held by the request that fetches for a key; its waiters hear how it went
/// when it is settled or dropped (the client went away: they fetch themselves).
#[derive(Debug)]
pub struct FlightGuard {
    cache: Arc<ResponseCache>,
    key: Option<(FunctionName, Arc<str>)>,
    tx: watch::Sender<Flight>,
}

impl FlightGuard {
    pub fn settle(mut self, stored: bool) {
        self.finish(if stored { Flight::Stored } else { Flight::NotStored });
    }

    fn finish(&mut self, outcome: Flight) {
        if let Some(key) = self.key.take() {
            self.cache.lock().flights.remove(&key);
            self.tx.send_replace(outcome);
        }
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        self.finish(Flight::NotStored);
    }
}

/// Waits for a flight to settle, no longer than `limit`: true if its answer
/// was stored (read it from the cache), false if the waiter must fetch.
pub async fn wait(mut rx: watch::Receiver<Flight>, limit: Duration) -> bool {
    let settled = tokio::time::timeout(limit, rx.wait_for(|f| *f != Flight::Pending)).await;
    matches!(settled, Ok(Ok(f)) if *f == Flight::Stored)
}

/// The key of a request: method, path and query as the function receives
/// them, then the values of the varied headers, one per line (absent: empty).
/// Values with a newline cannot be forwarded, so lines cannot be confused.
pub fn key(method: &str, path_and_query: &str, headers: &HeaderMap, spec: &CacheSpec) -> String {
    let mut key = String::with_capacity(method.len() + 1 + path_and_query.len() + 16 * spec.vary_headers.len());
    key.push_str(method);
    key.push(' ');
    key.push_str(path_and_query);
    for name in &spec.vary_headers {
        key.push('\n');
        for (i, v) in headers.get_all(name.as_str()).iter().enumerate() {
            if i > 0 {
                key.push(',');
            }
            key.push_str(&String::from_utf8_lossy(v.as_bytes()));
        }
    }
    key
}

/// The path part of a key, as purges name it.
fn key_path(key: &str) -> &str {
    let rest = key.split_once(' ').map_or(key, |(_, r)| r);
    let line = rest.split('\n').next().unwrap_or(rest);
    line.split('?').next().unwrap_or(line)
}

/// The directives of `Cache-Control` headers that the cache acts on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Directives {
    pub no_store: bool,
    pub no_cache: bool,
    pub private: bool,
    pub public: bool,
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
}

impl Directives {
    pub fn of(headers: &HeaderMap) -> Self {
        let mut d = Self::default();
        for value in headers.get_all(CACHE_CONTROL) {
            let Ok(value) = value.to_str() else { continue };
            for directive in value.split(',') {
                let (name, arg) = match directive.split_once('=') {
                    Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                    None => (directive.trim(), None),
                };
                let seconds = || arg.and_then(|a| a.parse::<u64>().ok());
                match name.to_ascii_lowercase().as_str() {
                    "no-store" => d.no_store = true,
                    // With a field list it still says "not without revalidation", which this cache never does.
                    "no-cache" => d.no_cache = true,
                    "private" => d.private = true,
                    "public" => d.public = true,
                    // A malformed age is read as 0, as RFC 9111 asks (section 4.2.1).
                    "max-age" => d.max_age = Some(seconds().unwrap_or(0)),
                    "s-maxage" => d.s_maxage = Some(seconds().unwrap_or(0)),
                    _ => {}
                }
            }
        }
        d
    }
}

/// How a request may use the cache, from its own `Cache-Control`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestUse {
    /// Neither read nor written (`no-store`).
    Bypass,
    /// Not read, but the fresh answer may be stored (`no-cache`, `max-age=0`).
    Refresh,
    /// Read entries no older than the bound, if any.
    Read(Option<Duration>),
}

pub fn request_use(headers: &HeaderMap) -> RequestUse {
    if !headers.contains_key(CACHE_CONTROL) {
        return RequestUse::Read(None);
    }
    let d = Directives::of(headers);
    if d.no_store {
        RequestUse::Bypass
    } else if d.no_cache || d.max_age == Some(0) {
        RequestUse::Refresh
    } else {
        RequestUse::Read(d.max_age.map(Duration::from_secs))
    }
}

/// How long a response may be kept, if at all: only successful answers, none
/// the function or the request's credentials keep to one client, none that vary
/// on headers the key does not hold; the function's `s-maxage` or `max-age`
/// shortens the spec's TTL (never lengthens it: the operator's TTL is a ceiling).
pub fn ttl_of(status: StatusCode, headers: &HeaderMap, request_had_credentials: bool, spec: &CacheSpec) -> Option<Duration> {
    // 206 is a part of something; the rest of 2xx are whole answers.
    if !status.is_success() || status == StatusCode::PARTIAL_CONTENT {
        return None;
    }
    let d = Directives::of(headers);
    if d.no_store || d.no_cache || d.private || headers.contains_key(SET_COOKIE) {
        return None;
    }
    // A shared cache keeps answers to requests with credentials only when the function says so (RFC 9111 section 3.5).
    if request_had_credentials && !(d.public || d.s_maxage.is_some()) {
        return None;
    }
    for value in headers.get_all(VARY) {
        let Ok(value) = value.to_str() else { return None };
        for name in value.split(',').map(|n| n.trim().to_ascii_lowercase()).filter(|n| !n.is_empty()) {
            if !spec.vary_headers.contains(&name) {
                return None;
            }
        }
    }
    let ttl = u64::from(spec.ttl_secs);
    let secs = d.s_maxage.or(d.max_age).map_or(ttl, |s| s.min(ttl));
    (secs > 0).then(|| Duration::from_secs(secs))
}

/// Whether the request carried credentials the function would see.
pub fn has_credentials(headers: &HeaderMap) -> bool {
    headers.contains_key(AUTHORIZATION)
}

/// The `Age` header value of a hit.
pub fn age_value(age: Duration) -> HeaderValue {
    HeaderValue::from(age.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str) -> FunctionName {
        FunctionName::new(name).unwrap()
    }

    fn body(n: usize) -> Stored {
        Stored::new(StatusCode::OK, HeaderMap::new(), Bytes::from(vec![b'x'; n]))
    }

    fn hit(c: &ResponseCache, func: &FunctionName, key: &str, now: Instant) -> bool {
        matches!(c.lookup(func, key, None, now), Lookup::Hit { .. })
    }

    #[test]
    fn entries_expire_after_their_ttl() {
        let (c, web, t0) = (ResponseCache::new(1 << 20), f("web"), Instant::now());
        assert!(c.store(&web, "GET /a", body(10), Duration::from_secs(5), c.epoch(), t0));
        assert!(hit(&c, &web, "GET /a", t0 + Duration::from_secs(4)));
        assert!(!hit(&c, &web, "GET /b", t0));
        assert!(!hit(&c, &f("other"), "GET /a", t0), "keys are per function");
        assert!(!hit(&c, &web, "GET /a", t0 + Duration::from_secs(5)));
        assert_eq!((c.bytes(), c.figures(&web).entries), (0, 0), "an expired entry is dropped when met");
    }

    #[test]
    fn a_client_max_age_bounds_the_age_it_accepts() {
        let (c, web, t0) = (ResponseCache::new(1 << 20), f("web"), Instant::now());
        c.store(&web, "GET /a", body(10), Duration::from_secs(60), c.epoch(), t0);
        let later = t0 + Duration::from_secs(10);
        assert!(matches!(c.lookup(&web, "GET /a", Some(Duration::from_secs(5)), later), Lookup::Miss));
        assert!(matches!(c.lookup(&web, "GET /a", Some(Duration::from_secs(20)), later), Lookup::Hit { age, .. } if age == Duration::from_secs(10)));
    }

    #[test]
    fn the_least_recently_used_go_first_and_bytes_stay_bounded() {
        let one = body(1000).size("GET /0");
        let c = ResponseCache::new(3 * one);
        let (web, api, t0) = (f("web"), f("api"), Instant::now());
        let ttl = Duration::from_secs(60);
        for k in ["GET /0", "GET /1", "GET /2"] {
            assert!(c.store(&web, k, body(1000), ttl, c.epoch(), t0));
        }
        // /0 was used lately, so /1 is the oldest in use.
        assert!(hit(&c, &web, "GET /0", t0));
        assert!(c.store(&api, "GET /3", body(1000), ttl, c.epoch(), t0));
        assert!(hit(&c, &web, "GET /0", t0) && !hit(&c, &web, "GET /1", t0) && hit(&c, &web, "GET /2", t0) && hit(&c, &api, "GET /3", t0));
        assert_eq!(c.figures(&web), CacheFigures { bytes: 2 * one, entries: 2, evictions: 1 });
        assert!(c.bytes() <= c.capacity());
        assert!(!c.store(&web, "GET /big", body(4000), ttl, c.epoch(), t0), "an entry larger than the cache is not kept");
        // Storing a key again replaces it rather than counting it twice.
        assert!(c.store(&api, "GET /3", body(1000), ttl, c.epoch(), t0));
        assert_eq!(c.bytes(), 3 * one);
    }

    #[test]
    fn purges_drop_a_path_or_everything_and_void_fetches_begun_before() {
        let (c, web, t0) = (ResponseCache::new(1 << 20), f("web"), Instant::now());
        let ttl = Duration::from_secs(60);
        for k in ["GET /a", "GET /a?x=1", "HEAD /a", "GET /b", "GET /a/c"] {
            c.store(&web, k, body(10), ttl, c.epoch(), t0);
        }
        let begun = c.epoch();
        assert_eq!(c.purge(&web, Some("/a")), 3);
        assert!(hit(&c, &web, "GET /b", t0) && hit(&c, &web, "GET /a/c", t0) && !hit(&c, &web, "GET /a?x=1", t0));
        assert!(!c.store(&web, "GET /a", body(10), ttl, begun, t0), "a fetch begun before the purge may bring the purged answer");
        assert!(c.store(&web, "GET /a", body(10), ttl, c.epoch(), t0));
        c.purge(&web, None);
        assert_eq!((c.bytes(), c.figures(&web).entries), (0, 0));
        c.store(&web, "GET /a", body(10), ttl, c.epoch(), t0);
        let begun = c.epoch();
        c.purge_all();
        assert_eq!(c.bytes(), 0);
        assert!(!c.store(&f("new"), "GET /a", body(10), ttl, begun, t0), "a purge of everything covers functions not seen before");
    }

    #[tokio::test]
    async fn one_flight_per_key_and_waiters_hear_how_it_went() {
        let (c, web) = (ResponseCache::new(1 << 20), f("web"));
        let Join::Lead(lead) = c.join(&web, "GET /a") else { panic!("the first leads") };
        let Join::Wait(rx) = c.join(&web, "GET /a") else { panic!("the second waits") };
        assert!(matches!(c.join(&web, "GET /b"), Join::Lead(_)), "another key flies on its own");
        let waiter = tokio::spawn(wait(rx, Duration::from_secs(5)));
        lead.settle(true);
        assert!(waiter.await.unwrap());
        // A leader that goes away lets its waiters fetch; a slow one is waited for no longer than the limit.
        let Join::Lead(lead) = c.join(&web, "GET /a") else { panic!("settled flights are gone") };
        let Join::Wait(rx) = c.join(&web, "GET /a") else { panic!() };
        drop(lead);
        assert!(!wait(rx, Duration::from_secs(5)).await);
        let Join::Lead(_slow) = c.join(&web, "GET /c") else { panic!() };
        let Join::Wait(rx) = c.join(&web, "GET /c") else { panic!() };
        assert!(!wait(rx, Duration::from_millis(20)).await);
    }

    #[test]
    fn keys_hold_the_varied_headers() {
        let mut spec = CacheSpec::new(10);
        spec.vary_headers = vec!["accept-language".into()];
        let mut h = HeaderMap::new();
        assert_eq!(key("GET", "/a?q=1", &h, &spec), "GET /a?q=1\n");
        h.insert("accept-language", HeaderValue::from_static("fr"));
        h.insert("x-other", HeaderValue::from_static("1"));
        assert_eq!(key("GET", "/a?q=1", &h, &spec), "GET /a?q=1\nfr");
        assert_eq!(key_path("GET /a?q=1\nfr"), "/a");
        assert_eq!(key_path("HEAD /"), "/");
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (hyper::header::HeaderName::from_static(k), HeaderValue::from_static(v))).collect()
    }

    #[test]
    fn cache_control_of_requests() {
        assert_eq!(request_use(&HeaderMap::new()), RequestUse::Read(None));
        assert_eq!(request_use(&headers(&[("cache-control", "no-store")])), RequestUse::Bypass);
        assert_eq!(request_use(&headers(&[("cache-control", "no-cache")])), RequestUse::Refresh);
        assert_eq!(request_use(&headers(&[("cache-control", "max-age=0")])), RequestUse::Refresh);
        assert_eq!(request_use(&headers(&[("cache-control", "Max-Age=\"30\", foo")])), RequestUse::Read(Some(Duration::from_secs(30))));
    }

    #[test]
    fn what_is_stored_and_for_how_long() {
        let spec = CacheSpec::new(60);
        let ok = StatusCode::OK;
        let ttl = |status, pairs: &[(&'static str, &'static str)], creds| ttl_of(status, &headers(pairs), creds, &spec).map(|d| d.as_secs());
        assert_eq!(ttl(ok, &[], false), Some(60));
        assert_eq!(ttl(StatusCode::NO_CONTENT, &[], false), Some(60));
        for status in [StatusCode::PARTIAL_CONTENT, StatusCode::NOT_FOUND, StatusCode::INTERNAL_SERVER_ERROR, StatusCode::MOVED_PERMANENTLY] {
            assert_eq!(ttl(status, &[], false), None, "{status}");
        }
        for cc in ["no-store", "private", "no-cache", "max-age=0", "public, max-age=junk"] {
            assert_eq!(ttl(ok, &[("cache-control", cc)], false), None, "{cc}");
        }
        assert_eq!(ttl(ok, &[("cache-control", "max-age=5")], false), Some(5));
        assert_eq!(ttl(ok, &[("cache-control", "max-age=3600")], false), Some(60), "the spec's TTL is a ceiling");
        assert_eq!(ttl(ok, &[("cache-control", "max-age=5, s-maxage=7")], false), Some(7), "s-maxage is for shared caches");
        assert_eq!(ttl(ok, &[("set-cookie", "a=1")], false), None);
        assert_eq!(ttl(ok, &[("vary", "accept-language")], false), None, "varies on a header the key lacks");
        assert_eq!(ttl(ok, &[("vary", "*")], false), None);
        assert_eq!(ttl(ok, &[], true), None, "answers to requests with credentials only when the function says so");
        assert_eq!(ttl(ok, &[("cache-control", "public")], true), Some(60));
        let mut varied = CacheSpec::new(60);
        varied.vary_headers = vec!["accept-language".into()];
        assert_eq!(ttl_of(ok, &headers(&[("vary", "Accept-Language")]), false, &varied), Some(Duration::from_secs(60)));
    }
}
