//! Serving a request of a function with a cache: from the cache when a fresh
//! entry answers it, else from an instance, keeping the answer when it may be
//! kept (see `cache` for the rules and the store itself).
//!
//! A kept answer is read whole before it is sent, which is what lets the
//! requests waiting on the same key be answered from the cache at once; an
//! answer that turns out larger than `max_entry_bytes` is passed on as it
//! comes, after what was read of it.

use super::cache::{self, Join, Lookup, RequestUse, Stored, CACHE_HEADER};
use super::route::Route;
use super::{Gateway, Worker};
use crate::http::{self, ApiError, Body};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::header::{HeaderValue, AGE, CONTENT_LENGTH, TRANSFER_ENCODING};
use hyper::{Request, Response, StatusCode};
use sluice_common::cache::CacheSpec;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

const MISS: HeaderValue = HeaderValue::from_static("miss");

impl Gateway {
    /// Serves `req`, whose method `spec` caches, through the cache.
    pub(super) async fn cached(
        &self,
        worker: &Arc<Worker>,
        peer: Option<IpAddr>,
        route: Arc<Route>,
        spec: &CacheSpec,
        forward: hyper::Uri,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, ApiError> {
        self.apply_purges();
        let usage = cache::request_use(req.headers());
        if usage == RequestUse::Bypass {
            route.counters.cache_misses.fetch_add(1, Ordering::Relaxed);
            return self.invoke_uncached(worker, peer, route, forward, req).await.map(miss);
        }
        let key = cache::key(req.method().as_str(), forward.path_and_query().map_or("/", |p| p.as_str()), req.headers(), spec);
        // What this request reads: none for a refresh, until a flight it waited for stored a fresh answer.
        let mut read = match usage {
            RequestUse::Read(max_age) => Some(max_age),
            _ => None,
        };
        let mut lead = None;
        let mut waited = false;
        loop {
            if let Some(max_age) = read {
                if let Lookup::Hit { stored, age } = self.cache.lookup(&route.name, &key, max_age, Instant::now()) {
                    route.counters.cache_hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(hit(&stored, age));
                }
            }
            // Once: a waiter whose flight stored an answer it cannot read (it
            // was evicted, or purged, at once) goes to the function.
            if waited {
                break;
            }
            match self.cache.join(&route.name, &key) {
                Join::Lead(guard) => {
                    lead = Some(guard);
                    break;
                }
                Join::Wait(rx) => {
                    waited = true;
                    // No longer than the leader's own fetch may take (a slot, then the
                    // answer's start): past it, something is stuck and this request goes itself.
                    let limit = route.limits().start_timeout + std::time::Duration::from_millis(route.request_timeout_ms.load(Ordering::Relaxed));
                    if !cache::wait(rx, limit).await {
                        break;
                    }
                    read = Some(read.flatten());
                }
            }
        }
        route.counters.cache_misses.fetch_add(1, Ordering::Relaxed);
        let credentials = cache::has_credentials(req.headers());
        let epoch = self.cache.epoch();
        // An error drops the flight's guard: its waiters go to the function themselves.
        let resp = self.invoke_uncached(worker, peer, route.clone(), forward, req).await?;
        let settle = |stored: bool| {
            if let Some(guard) = lead {
                guard.settle(stored);
            }
        };
        let Some(ttl) = cache::ttl_of(resp.status(), resp.headers(), credentials, spec) else {
            settle(false);
            return Ok(miss(resp));
        };
        let limit = spec.max_entry_bytes as usize;
        let declared = resp.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            settle(false);
            return Ok(miss(resp));
        }
        let (mut parts, body) = resp.into_parts();
        match read_up_to(body, limit).await {
            Read::Whole(bytes) => {
                // The body is whole now: it is sent with its length, whatever framing the instance used.
                parts.headers.remove(TRANSFER_ENCODING);
                let stored = Stored::new(parts.status, parts.headers.clone(), bytes.clone());
                settle(self.cache.store(&route.name, &key, stored, ttl, epoch, Instant::now()));
                parts.headers.insert(CACHE_HEADER, MISS);
                Ok(Response::from_parts(parts, http::full(bytes)))
            }
            Read::TooLarge { head, rest } => {
                settle(false);
                parts.headers.insert(CACHE_HEADER, MISS);
                Ok(Response::from_parts(parts, Prefixed { head: Some(head), rest }.boxed()))
            }
            Read::Failed(e) => {
                settle(false);
                Err(ApiError::new(StatusCode::BAD_GATEWAY, "instance_failed", format!("an instance of {} failed while sending its answer ({e}): retry", route.name)))
            }
        }
    }
}

/// A response from the cache.
fn hit(stored: &Stored, age: std::time::Duration) -> Response<Body> {
    let mut resp = Response::new(http::full(stored.body.clone()));
    *resp.status_mut() = stored.status;
    let headers = resp.headers_mut();
    headers.clone_from(&stored.headers);
    if age.as_secs() > 0 {
        headers.insert(AGE, cache::age_value(age));
    }
    resp
}

fn miss(mut resp: Response<Body>) -> Response<Body> {
    resp.headers_mut().insert(CACHE_HEADER, MISS);
    resp
}

enum Read {
    Whole(Bytes),
    /// Past the limit: what was read, and the rest of the body.
    TooLarge {
        head: Bytes,
        rest: Body,
    },
    Failed(hyper::Error),
}

/// Reads `body` whole if it is at most `limit` bytes.
async fn read_up_to(mut body: Body, limit: usize) -> Read {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                // Trailers are not kept; few functions send them, and a cached answer goes without.
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                    if buf.len() > limit {
                        return Read::TooLarge { head: buf.freeze(), rest: body };
                    }
                }
            }
            Err(e) => return Read::Failed(e),
        }
    }
    Read::Whole(buf.freeze())
}

/// A body that sends `head` and then the rest of an answer.
struct Prefixed {
    head: Option<Bytes>,
    rest: Body,
}

impl hyper::body::Body for Prefixed {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some(head) = self.head.take() {
            return Poll::Ready(Some(Ok(Frame::data(head))));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let head = self.head.as_ref().map_or(0, |h| h.len() as u64);
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + head);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + head);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A body that comes in the given chunks.
    struct Chunks(VecDeque<Bytes>);

    impl hyper::body::Body for Chunks {
        type Data = Bytes;
        type Error = hyper::Error;

        fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }

    fn chunks(parts: &[&'static str]) -> Body {
        Chunks(parts.iter().map(|p| Bytes::from_static(p.as_bytes())).collect()).boxed()
    }

    #[tokio::test]
    async fn bodies_within_the_limit_are_read_whole_and_larger_ones_pass_on_whole() {
        assert!(matches!(read_up_to(chunks(&["ab", "cd"]), 4).await, Read::Whole(b) if b == "abcd"));
        let Read::TooLarge { head, rest } = read_up_to(chunks(&["ab", "cd", "ef"]), 3).await else { panic!("over the limit") };
        assert_eq!(head, "abcd");
        let all = Prefixed { head: Some(head), rest }.collect().await.unwrap().to_bytes();
        assert_eq!(all, "abcdef", "nothing is lost when the answer is passed on");
    }
}
