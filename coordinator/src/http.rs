//! HTTP plumbing shared by the API and the gateway: the accept loop with graceful
//! drain and optional TLS, bodies, and JSON errors that name the problem and the fix.

use crate::tls::ServerTls;
pub use crate::tls::TlsPeer;
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use serde::Serialize;
use std::future::Future;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

pub type Body = BoxBody<Bytes, hyper::Error>;

/// How long in-flight requests get to finish after shutdown is asked for.
pub const DRAIN_GRACE: Duration = Duration::from_secs(10);

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let bytes = serde_json::to_vec(value).unwrap_or_else(|e| format!("{{\"error\":{{\"message\":\"serialising failed: {e}\"}}}}").into_bytes());
    let mut resp = Response::new(full(bytes));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// A Prometheus text-format response.
pub fn text(body: String) -> Response<Body> {
    let mut resp = Response::new(full(body));
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
    resp
}

/// An error answered to a client: a status and a JSON body
/// `{"error":{"code":..., "field":..., "message":...}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub field: Option<String>,
    pub message: String,
    /// Seconds to put in `Retry-After`, for load shedding.
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, field: None, message: message.into(), retry_after: None }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: Some(field.into()), ..Self::new(StatusCode::BAD_REQUEST, "invalid_input", message) }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// The answer to a write or read the cluster could not serve.
    pub fn unavailable(e: &crate::raft::RaftError) -> Self {
        use crate::raft::RaftError;
        match e {
            RaftError::NoLeader => Self::new(StatusCode::SERVICE_UNAVAILABLE, "no_leader", e.to_string()).retry_after(1),
            RaftError::Unknown => Self::new(StatusCode::SERVICE_UNAVAILABLE, "not_committed", e.to_string()).retry_after(1),
            RaftError::Stopped => Self::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", e.to_string()).retry_after(1),
            RaftError::NotLeader { .. } => Self::new(StatusCode::MISDIRECTED_REQUEST, "not_leader", e.to_string()),
            RaftError::Rejected(_) => Self::new(StatusCode::CONFLICT, "rejected", e.to_string()),
            RaftError::TooNew(_) => Self::new(StatusCode::CONFLICT, "cluster_version", e.to_string()),
        }
    }

    pub fn retry_after(mut self, secs: u32) -> Self {
        self.retry_after = Some(secs);
        self
    }

    pub fn into_response(self) -> Response<Body> {
        #[derive(Serialize)]
        struct Inner<'a> {
            code: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            field: Option<&'a str>,
            message: &'a str,
        }
        #[derive(Serialize)]
        struct Outer<'a> {
            error: Inner<'a>,
        }
        let body = Outer { error: Inner { code: self.code, field: self.field.as_deref(), message: &self.message } };
        let mut resp = json(self.status, &body);
        if let Some(secs) = self.retry_after {
            resp.headers_mut().insert(hyper::header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

impl From<sluice_common::ValidationError> for ApiError {
    fn from(e: sluice_common::ValidationError) -> Self {
        ApiError::invalid(e.field, e.message)
    }
}

/// Reads a whole body, refusing more than `limit` bytes with 413.
pub async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, ApiError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", format!("request body is over {limit} bytes: send a smaller body")))
        }
        Err(e) => Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_body", format!("could not read the request body: {e}"))),
    }
}

/// Parses a JSON object into `T`, naming the offending field on failure.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| ApiError::invalid("body", format!("not valid JSON ({e}): send a JSON object")))?;
    if !value.is_object() {
        return Err(ApiError::invalid("body", "expected a JSON object: send {\"field\": value, ...}"));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let msg = e.into_inner().to_string();
        let field = if path == "." || path == "?" { "body".to_string() } else { path };
        let fix = if msg.starts_with("unknown field") { "; remove it (see the API reference for accepted fields)" } else { "" };
        ApiError::invalid(field, format!("{msg}{fix}"))
    })
}

/// The address a request's connection came from, in the request's extensions
/// for handlers served by [`serve_tls`] (the API learns agents' addresses by it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub std::net::IpAddr);

/// Who a connection's requests come from, handed to the handler of
/// [`serve_with_peers`] with each request (no per-request allocation, where
/// request extensions would take two).
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// The address the connection came from: the gateway tells calls from a
    /// function's instances by it.
    pub ip: Option<std::net::IpAddr>,
    /// A verified client certificate's identity.
    pub tls: Option<TlsPeer>,
}

/// Where a server gets its connections: a listener, or a channel fed by an
/// acceptor on another thread.
pub trait Acceptor: Send {
    /// The next connection; `None` when no more will come.
    fn next(&mut self) -> impl Future<Output = Option<TcpStream>> + Send;
}

impl Acceptor for TcpListener {
    async fn next(&mut self) -> Option<TcpStream> {
        loop {
            match self.accept().await {
                Ok((stream, _)) => return Some(stream),
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

impl Acceptor for mpsc::UnboundedReceiver<std::net::TcpStream> {
    async fn next(&mut self) -> Option<TcpStream> {
        loop {
            let stream = self.recv().await?;
            match TcpStream::from_std(stream) {
                Ok(s) => return Some(s),
                Err(e) => warn!(error = %e, "cannot adopt a connection"),
            }
        }
    }
}

/// Serves HTTP/1.1 on the connections `acceptor` yields until `shutdown` fires,
/// then drains open connections for up to `DRAIN_GRACE`.
pub async fn serve<A, H, Fut>(name: &'static str, acceptor: A, handler: H, shutdown: impl Future<Output = ()>)
where
    A: Acceptor,
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    serve_tls(name, acceptor, None, handler, shutdown).await
}

/// `serve`, with every connection first through the TLS handshake of `tls` if
/// given: a client that fails it is refused (and counted) before any request is
/// read. The connection's address and a verified client certificate's identity
/// are put in the requests' extensions as `PeerAddr` and `TlsPeer`.
pub async fn serve_tls<A, H, Fut>(name: &'static str, acceptor: A, tls: Option<ServerTls>, handler: H, shutdown: impl Future<Output = ()>)
where
    A: Acceptor,
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let handler = move |mut req: Request<Incoming>, peer: &Peer| {
        if let Some(ip) = peer.ip {
            req.extensions_mut().insert(PeerAddr(ip));
        }
        if let Some(client) = &peer.tls {
            req.extensions_mut().insert(client.clone());
        }
        handler(req)
    };
    serve_with_peers(name, acceptor, tls, handler, shutdown).await
}

/// `serve_tls`, handing the handler each request with who sent it.
pub async fn serve_with_peers<A, H, Fut>(name: &'static str, mut acceptor: A, tls: Option<ServerTls>, handler: H, shutdown: impl Future<Output = ()>)
where
    A: Acceptor,
    H: Fn(Request<Incoming>, &Peer) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            next = acceptor.next() => match next {
                Some(s) => s,
                None => break,
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection { name, builder: builder.clone(), watcher: graceful.watcher(), peer: stream.peer_addr().ok() };
        let handler = handler.clone();
        // The handshake runs in the connection's own task: a slow or silent
        // client must not hold up the accept loop.
        match &tls {
            None => tokio::spawn(connection.serve(stream, None, handler)),
            Some(tls) => {
                let tls = tls.clone();
                tokio::spawn(async move {
                    let Some(addr) = connection.peer else { return };
                    if let Some((stream, client)) = tls.accept(stream, addr).await {
                        connection.serve(stream, client, handler).await;
                    }
                })
            }
        };
    }
    info!(server = name, "draining");
    if tokio::time::timeout(DRAIN_GRACE, graceful.shutdown()).await.is_err() {
        warn!(server = name, "drain grace passed with connections still open");
    }
}

/// One accepted connection, before its stream is known to be plain or TLS.
struct Connection {
    name: &'static str,
    builder: hyper::server::conn::http1::Builder,
    watcher: Watcher,
    peer: Option<std::net::SocketAddr>,
}

impl Connection {
    /// Serves requests on `io` until the client closes it or the drain ends it.
    async fn serve<I, H, Fut>(self, io: I, client: Option<TlsPeer>, handler: H)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        H: Fn(Request<Incoming>, &Peer) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        let peer = Peer { ip: self.peer.map(|a| a.ip()), tls: client };
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            // Boxed: hyper moves a request's future into place, and a handler's
            // (the gateway's is kilobytes) costs less to allocate than to copy.
            let fut = Box::pin(handler(req, &peer));
            async move { Ok::<_, std::convert::Infallible>(fut.await) }
        });
        if let Err(e) = self.watcher.watch(self.builder.serve_connection(TokioIo::new(io), service)).await {
            debug!(server = self.name, error = %e, "connection ended with an error");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_common::FunctionSpec;

    #[test]
    fn json_errors_name_the_field() {
        let e = parse_json::<FunctionSpec>(br#"{"name":"Bad Name","image":"x"}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("name"));
        let e = parse_json::<FunctionSpec>(br#"{"name":"ok","image":"x","privileged":true}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("privileged"));
        let e = parse_json::<FunctionSpec>(br#"{"name":"ok","image":"x","limits":{"memory_mb":"lots"}}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("limits.memory_mb"));
        let e = parse_json::<FunctionSpec>(b"{not json").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("body"));
        let e = parse_json::<FunctionSpec>(br#"["not", "an", "object"]"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("body"));
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }
}
