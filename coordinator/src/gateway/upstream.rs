//! Keep-alive HTTP/1.1 connections to instances, pooled per serving thread.
//!
//! Each gateway thread owns one `Client`, so a request, its upstream connection
//! and that connection's driver task all live on one thread. A connection goes
//! back to the pool when its response body has been read to the end; one that
//! the instance closed while idle is noticed on reuse and the request is sent on
//! a fresh connection instead (safe: hyper hands back a request it did not send).

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;
use tracing::debug;

/// Most idle connections kept per instance; more are closed when they come back.
const MAX_IDLE_PER_INSTANCE: usize = 512;
/// How long a new connection to an instance may take, unless the caller says otherwise.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

type Sender = SendRequest<Outgoing>;

/// A request body on its way to an instance: a client's, streamed through, or
/// one the gateway holds whole (an asynchronous invocation's, read from the bus).
#[derive(Debug)]
pub enum Outgoing {
    Streamed(Incoming),
    Whole(Full<Bytes>),
}

impl Body for Outgoing {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Outgoing::Streamed(body) => Pin::new(body).poll_frame(cx),
            Outgoing::Whole(body) => Pin::new(body).poll_frame(cx).map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Outgoing::Streamed(body) => body.is_end_stream(),
            Outgoing::Whole(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Outgoing::Streamed(body) => body.size_hint(),
            Outgoing::Whole(body) => body.size_hint(),
        }
    }
}

/// Idle connections by `host:port`, shared (`Arc<str>`) with the backends
/// that name them, so lending and returning a connection allocates nothing.
#[derive(Clone, Default)]
pub struct Client {
    idle: Arc<Mutex<HashMap<Arc<str>, Vec<Sender>>>>,
}

/// A connection lent to one request; it returns to the pool when dropped.
pub struct Lease {
    client: Client,
    authority: Arc<str>,
    sender: Option<Sender>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(sender) = self.sender.take() else { return };
        if sender.is_closed() {
            return;
        }
        let mut idle = self.client.idle.lock().expect("pool lock");
        let list = match idle.get_mut(&*self.authority) {
            Some(list) => list,
            None => idle.entry(self.authority.clone()).or_default(),
        };
        if list.len() < MAX_IDLE_PER_INSTANCE {
            list.push(sender);
        }
    }
}

/// A failed send, with the request back when none of it reached the instance,
/// so the caller may send it to another instance whatever its method.
#[derive(Debug)]
pub struct SendError {
    pub error: UpstreamError,
    pub unsent: Option<Request<Outgoing>>,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to {authority}: {reason}")]
    Connect { authority: String, reason: String },
    #[error("{0}")]
    Http(#[from] hyper::Error),
}

impl Client {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends `req` (origin-form URI) to `authority`, over a pooled connection or
    /// a new one made within `connect_within`, and returns the response with
    /// the connection's lease, to be dropped when the response body is done.
    /// With `alive_at`, a new connection is only made once `alive_at` accepted
    /// one (see [`Backend::alive_check`](super::Backend::alive_check)).
    pub async fn send(&self, authority: &Arc<str>, alive_at: Option<&str>, connect_within: Duration, mut req: Request<Outgoing>) -> Result<(Response<Incoming>, Lease), SendError> {
        loop {
            let (mut sender, reused) = match self.take_idle(authority) {
                Some(s) => (s, true),
                // Boxed: a new connection is rare, and its future would make every send's larger.
                None => match Box::pin(connect(authority, alive_at, connect_within)).await {
                    Ok(s) => (s, false),
                    Err(error) => return Err(SendError { error, unsent: Some(req) }),
                },
            };
            if sender.ready().await.is_err() {
                if reused {
                    continue;
                }
                let error = UpstreamError::Connect { authority: authority.to_string(), reason: "connection closed at once".into() };
                return Err(SendError { error, unsent: Some(req) });
            }
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok((resp, Lease { client: self.clone(), authority: authority.clone(), sender: Some(sender) })),
                Err(mut e) => match e.take_message() {
                    // Not sent: a keep-alive connection the instance had closed. Try another.
                    Some(unsent) if reused => {
                        debug!(%authority, error = %e.error(), "stale pooled connection; retrying on another");
                        req = unsent;
                    }
                    unsent => return Err(SendError { unsent, error: e.into_error().into() }),
                },
            }
        }
    }

    fn take_idle(&self, authority: &str) -> Option<Sender> {
        let mut idle = self.idle.lock().expect("pool lock");
        let list = idle.get_mut(authority)?;
        while let Some(s) = list.pop() {
            if !s.is_closed() {
                return Some(s);
            }
        }
        None
    }
}

async fn connect(authority: &str, alive_at: Option<&str>, within: Duration) -> Result<Sender, UpstreamError> {
    let err = |reason: String| UpstreamError::Connect { authority: authority.into(), reason };
    if let Some(check) = alive_at {
        // Accepted and dropped at once: only whether something still listens there matters.
        tokio::time::timeout(within, TcpStream::connect(check))
            .await
            .map_err(|_| err(format!("its published port {check} did not answer within {within:?}")))?
            .map_err(|e| err(format!("its published port {check} refused ({e}): the container is gone")))?;
    }
    let stream = tokio::time::timeout(within, TcpStream::connect(authority)).await.map_err(|_| err(format!("no answer within {within:?}")))?.map_err(|e| err(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.map_err(|e| err(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}
