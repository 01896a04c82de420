//! `hello`: echoes the request body as `hello, <body>` (or `hello, world`), for tests and benchmarks.
//!
//! Response headers: `x-hello-method` (the method), `x-hello-uri` (path and query as received),
//! `x-hello-answer` echoing the request's `x-hello-ask` when present, and `x-hello-count`, the
//! requests this process has answered so far, this one included: an answer that changes, for
//! telling a cached answer from a fresh one.
//! `?status=NNN` (100-599) picks the response status; bodies over 1 MiB get 413.
//! A request's `x-hello-cache-control` is answered as `cache-control`, and `x-hello-delay-ms`
//! (at most 60000) delays the answer, for exercising caches in front of the function.
//!
//! `?key=K` counts this instance's calls with key K (`x-hello-calls`), and with
//! `&fail=N` the first N of them answer 500: a function that fails N times, then
//! succeeds, for the retry tests of asynchronous invocations.

use hyper::header::{HeaderValue, CACHE_CONTROL};
use hyper::{Request, StatusCode};
use sluice_example_functions::{body_error_response, greeting, parse_status, query_param, read_body, run, text, Resp, MAX_BODY, MAX_SLEEP_MS};
use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

/// Requests answered by this process (health checks are answered by the server loop, not here).
static ANSWERED: AtomicU64 = AtomicU64::new(0);
/// Calls so far per `?key=`, in this instance.
static CALLS: LazyLock<Mutex<HashMap<String, u64>>> = LazyLock::new(Mutex::default);
/// Keys remembered at most; more clear the map (tests use a handful).
const MAX_KEYS: usize = 10_000;

fn main() -> ExitCode {
    run("hello", hello)
}

async fn hello<B>(req: Request<B>) -> Resp
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, body) = req.into_parts();
    let count = ANSWERED.fetch_add(1, Ordering::Relaxed) + 1;
    let delay = parts.headers.get("x-hello-delay-ms").and_then(|v| v.to_str().ok()?.parse::<u64>().ok()).map_or(0, |ms| ms.min(MAX_SLEEP_MS));
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let status = match parse_status(parts.uri.query()) {
        Ok(status) => status,
        Err(msg) => return text(StatusCode::BAD_REQUEST, msg),
    };
    let body = match read_body(body, MAX_BODY).await {
        Ok(body) => body,
        Err(e) => return body_error_response(e),
    };
    let calls = query_param(parts.uri.query(), "key").map(|key| {
        let mut calls = CALLS.lock().unwrap_or_else(|e| e.into_inner());
        if calls.len() >= MAX_KEYS && !calls.contains_key(key) {
            calls.clear();
        }
        let n = calls.entry(key.to_string()).or_default();
        *n += 1;
        *n
    });
    let failures = match query_param(parts.uri.query(), "fail").map(str::parse::<u64>) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => return text(StatusCode::BAD_REQUEST, "fail must be a count of calls to fail"),
    };
    let mut resp = match calls {
        Some(n) if n <= failures => text(StatusCode::INTERNAL_SERVER_ERROR, format!("failing on purpose: call {n} of the first {failures}")),
        _ => text(status, greeting(&body)),
    };
    let headers = resp.headers_mut();
    if let Some(n) = calls {
        headers.insert("x-hello-calls", HeaderValue::from(n));
    }
    let uri = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    // A method or a received URI is always a valid header value.
    if let Ok(method) = HeaderValue::from_str(parts.method.as_str()) {
        headers.insert("x-hello-method", method);
    }
    if let Ok(uri) = HeaderValue::from_str(uri) {
        headers.insert("x-hello-uri", uri);
    }
    if let Some(ask) = parts.headers.get("x-hello-ask") {
        headers.insert("x-hello-answer", ask.clone());
    }
    if let Some(cc) = parts.headers.get("x-hello-cache-control") {
        headers.insert(CACHE_CONTROL, cc.clone());
    }
    headers.insert("x-hello-count", HeaderValue::from(count));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};

    async fn call(req: Request<Full<Bytes>>) -> (StatusCode, hyper::HeaderMap, Bytes) {
        let resp = hello(req).await;
        let (parts, body) = resp.into_parts();
        (parts.status, parts.headers, body.collect().await.unwrap().to_bytes())
    }

    #[tokio::test]
    async fn echoes_body_method_uri_and_answer() {
        let req = Request::post("/greet/x?status=201&a=%20b").header("x-hello-ask", "42").body(Full::new(Bytes::from_static(b"sluice"))).unwrap();
        let (status, headers, body) = call(req).await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(body, "hello, sluice");
        assert_eq!(headers["x-hello-method"], "POST");
        assert_eq!(headers["x-hello-uri"], "/greet/x?status=201&a=%20b");
        assert_eq!(headers["x-hello-answer"], "42");
    }

    #[tokio::test]
    async fn empty_body_is_world_and_no_answer_without_ask() {
        let (status, headers, body) = call(Request::get("/").body(Full::default()).unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "hello, world");
        assert!(headers.get("x-hello-answer").is_none());
    }

    #[tokio::test]
    async fn counts_answers_and_echoes_cache_control() {
        let req = || Request::get("/").header("x-hello-cache-control", "no-store").header("x-hello-delay-ms", "5").body(Full::default()).unwrap();
        let (_, first, _) = call(req()).await;
        let (_, second, _) = call(req()).await;
        assert_eq!(first["cache-control"], "no-store");
        let count = |h: &hyper::HeaderMap| h["x-hello-count"].to_str().unwrap().parse::<u64>().unwrap();
        // Other tests in this process answer too: the count only grows.
        assert!(count(&second) > count(&first));
    }

    #[tokio::test]
    async fn a_key_counts_calls_and_fails_the_first_ones() {
        let get = |q: &str| Request::get(format!("/?{q}")).body(Full::default()).unwrap();
        for n in 1..=2 {
            let (status, headers, body) = call(get("key=twice&fail=2")).await;
            assert_eq!((status, headers["x-hello-calls"].to_str().unwrap()), (StatusCode::INTERNAL_SERVER_ERROR, n.to_string().as_str()));
            assert!(String::from_utf8_lossy(&body).contains("failing on purpose"));
        }
        let (status, headers, body) = call(get("key=twice&fail=2")).await;
        assert_eq!((status, &headers["x-hello-calls"], body), (StatusCode::OK, &HeaderValue::from(3), Bytes::from("hello, world")));
        let (status, headers, _) = call(get("key=other")).await;
        assert_eq!((status, &headers["x-hello-calls"]), (StatusCode::OK, &HeaderValue::from(1)));
        assert_eq!(call(get("key=x&fail=many")).await.0, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn bad_status_is_400_and_big_body_is_413() {
        let (status, _, _) = call(Request::get("/?status=700").body(Full::default()).unwrap()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let big = Full::new(Bytes::from(vec![b'x'; MAX_BODY + 1]));
        let (status, _, _) = call(Request::post("/").body(big).unwrap()).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    }
}
