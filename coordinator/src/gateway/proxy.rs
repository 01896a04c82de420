//! Forwarding one request to one instance over a pooled keep-alive connection,
//! and releasing the instance's slot when the response body ends.

use super::route::{Backend, Route};
use super::upstream::Lease;
use super::Worker;
use crate::http::Body;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::header::{HeaderMap, HeaderName, CONNECTION};
use hyper::{Request, Response, StatusCode, Uri};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// Headers that describe one hop, not the message (RFC 9110 section 7.6.1), as
/// ready-made names: removing by name then costs a lookup, not a parse (and,
/// for the non-standard ones, an allocation) per message.
static HOP_BY_HOP: [HeaderName; 8] = [
    hyper::header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    hyper::header::PROXY_AUTHENTICATE,
    hyper::header::PROXY_AUTHORIZATION,
    hyper::header::TE,
    hyper::header::TRAILER,
    hyper::header::UPGRADE,
];

/// The response header naming the instance that served the request.
const INSTANCE_HEADER: HeaderName = HeaderName::from_static(super::INSTANCE_HEADER);

/// Removes hop-by-hop headers, including any the `Connection` header names.
/// Most messages carry none, or only `Connection: keep-alive`, so one pass
/// over the names decides whether to do any work at all, and the usual
/// `Connection` values cost no header-name parsing: this runs twice per
/// proxied request.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut found = [false; 8];
    let mut any = false;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            found[i] = true;
            any = true;
        }
    }
    if !any {
        return;
    }
    // Names listed in `Connection` other than the hop-by-hop ones and `close`
    // (which names no header) are this hop's too.
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|n| !n.eq_ignore_ascii_case("close") && !HOP_BY_HOP.iter().any(|h| n.eq_ignore_ascii_case(h.as_str())))
        .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for (name, _) in HOP_BY_HOP.iter().zip(found).filter(|(_, f)| *f) {
        headers.remove(name);
    }
}

/// Rewrites `req` for the instance: origin-form `path_and_query`, hop-by-hop
/// headers out; method, other headers and body kept.
pub fn to_upstream<B>(mut req: Request<B>, path_and_query: Uri) -> Request<B> {
    *req.uri_mut() = path_and_query;
    strip_hop_by_hop(req.headers_mut());
    req
}

/// The origin-form URI for the instance: the path below the function and the
/// query, built in one buffer that the URI then owns (no second copy).
pub fn upstream_uri(below: &str, query: Option<&str>) -> Result<Uri, hyper::http::uri::InvalidUri> {
    let mut buf = String::with_capacity(below.len() + query.map_or(0, |q| q.len() + 1));
    buf.push_str(below);
    if let Some(q) = query {
        buf.push('?');
        buf.push_str(q);
    }
    Uri::from_maybe_shared(Bytes::from(buf))
}

/// Returns the slot and records the outcome when the response is done.
pub struct Release {
    /// The serving thread's worker, for the gateway's clock.
    pub worker: Arc<Worker>,
    pub route: Arc<Route>,
    pub backend: Arc<Backend>,
    pub started: Instant,
    pub status: StatusCode,
    /// The upstream connection, back to the pool once the body is read.
    pub lease: Option<Lease>,
}

impl Release {
    /// Moves the request to another instance: frees this one's slot without
    /// counting a response; `next`'s slot is already taken.
    pub fn move_to(&mut self, next: Arc<Backend>) {
        self.route.release(&self.backend, self.worker.gateway.clock.now());
        self.backend = next;
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        drop(self.lease.take());
        self.route.release(&self.backend, self.worker.gateway.clock.now());
        record(&self.route, self.status, self.started);
    }
}

/// Counts a finished request by status class and latency.
pub fn record(route: &Route, status: StatusCode, started: Instant) {
    route.counters.answered(status, started.elapsed().as_secs_f64());
}

/// The instance's response body, holding its slot until the last byte is sent
/// (or the client goes away and the body is dropped).
pub struct TrackedBody {
    inner: Incoming,
    release: Option<Release>,
}

impl hyper::body::Body for TrackedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.release.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Wraps an instance's response: hop-by-hop headers out, the instance id in.
pub fn from_upstream(resp: Response<Incoming>, mut release: Release) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.insert(INSTANCE_HEADER, release.backend.header.clone());
    release.status = parts.status;
    let body = if body.is_end_stream() {
        drop(release);
        body.boxed()
    } else {
        TrackedBody { inner: body, release: Some(release) }.boxed()
    };
    Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    use hyper::header::HeaderValue;

    #[test]
    fn hop_by_hop_headers_are_stripped() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("keep-alive, x-private"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));

        // The usual case: only `Connection: keep-alive` (or `close`), with other headers kept.
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("Keep-Alive"));
        h.insert("content-length", HeaderValue::from_static("12"));
        h.insert("close", HeaderValue::from_static("a header that happens to be called close"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2);
        assert!(h.contains_key("content-length") && h.contains_key("close"));
    }

    #[test]
    fn the_upstream_uri_is_the_path_below_the_function_and_the_query() {
        assert_eq!(upstream_uri("/a/b", Some("x=1&y")).unwrap().to_string(), "/a/b?x=1&y");
        assert_eq!(upstream_uri("/", None).unwrap().to_string(), "/");
        assert!(upstream_uri("/a b", None).is_err());
    }
}
