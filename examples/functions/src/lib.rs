//! Shared plumbing for the example functions: the HTTP/1 server loop, the health path,
//! shutdown on SIGTERM/SIGINT, and the small request helpers both `hello` and `sleep` use.
//!
//! A function binary only supplies a handler; [`run`] does the rest:
//! * listens on `0.0.0.0:$PORT` (default 8080) on a multi-thread tokio runtime,
//! * answers `GET /_/health` with `200 ok` itself,
//! * on SIGTERM or SIGINT stops accepting, lets in-flight requests finish for up to
//!   [`DRAIN_TIMEOUT`], then returns. The handlers are installed explicitly because the
//!   binaries run as PID 1 in a scratch container, where SIGTERM would otherwise be ignored.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Body, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};

/// Every function's response type: a fully buffered body.
pub type Resp = Response<Full<Bytes>>;

/// The path the platform probes; answered by the server loop, never by the handler.
pub const HEALTH_PATH: &str = "/_/health";
/// Largest request body a function reads; larger ones get 413.
pub const MAX_BODY: usize = 1 << 20;
/// How long in-flight requests may run after a shutdown signal.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
/// Port used when `$PORT` is unset.
pub const DEFAULT_PORT: u16 = 8080;
/// `?ms=` default and ceiling for the sleep function.
pub const DEFAULT_SLEEP_MS: u64 = 100;
pub const MAX_SLEEP_MS: u64 = 60_000;

/// Serves `handler` until SIGTERM/SIGINT. Returns the process exit code.
pub fn run<H, F>(name: &'static str, handler: H) -> ExitCode
where
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Resp> + Send + 'static,
{
    let port = match port_from(std::env::var("PORT").ok().as_deref()) {
        Ok(port) => port,
        Err(msg) => {
            eprintln!("{name}: {msg}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = SocketAddr::from(([0, 0, 0, 0], port));
    let result = runtime.block_on(serve(name, addr, Arc::new(handler)));
    // Connections still running after the drain timeout are dropped here.
    runtime.shutdown_timeout(Duration::ZERO);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: cannot listen on {addr}: {e} (is the port in use? set PORT to pick another)");
            ExitCode::FAILURE
        }
    }
}

/// Reads the listening port from the value of `$PORT`.
pub fn port_from(value: Option<&str>) -> Result<u16, String> {
    match value {
        None | Some("") => Ok(DEFAULT_PORT),
        Some(v) => v.parse().map_err(|_| format!("PORT must be a port number 0-65535, got {v:?}")),
    }
}

async fn serve<H, F>(name: &'static str, addr: SocketAddr, handler: Arc<H>) -> std::io::Result<()>
where
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Resp> + Send + 'static,
{
    // Install the handlers before anything else so no signal is lost (or ignored, as PID 1).
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let listener = TcpListener::bind(addr).await?;
    eprintln!("{name}: listening on {addr}");

    // `stop` tells connections to wind down; each connection holds a clone of `done_tx`,
    // so `done_rx.recv()` yields `None` once the last one has finished.
    let (stop_tx, stop_rx) = watch::channel(());
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);

    let signal_name = loop {
        let stream = tokio::select! {
            _ = sigterm.recv() => break "SIGTERM",
            _ = sigint.recv() => break "SIGINT",
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    // Usually EMFILE; back off rather than spin.
                    eprintln!("{name}: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let mut stop = stop_rx.clone();
        let done = done_tx.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let response = if is_health(&req) { None } else { Some(handler(req)) };
                async move {
                    Ok::<_, Infallible>(match response {
                        Some(future) => future.await,
                        None => text(StatusCode::OK, "ok"),
                    })
                }
            });
            let conn = http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(stream), service);
            let mut conn = pin!(conn);
            // Connection errors (client resets, half-sent requests) are the client's business.
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(done);
        });
    };

    eprintln!("{name}: {signal_name} received, draining for up to {DRAIN_TIMEOUT:?}");
    drop(listener);
    let _ = stop_tx.send(());
    drop(done_tx);
    if tokio::time::timeout(DRAIN_TIMEOUT, done_rx.recv()).await.is_err() {
        eprintln!("{name}: some requests were still running after {DRAIN_TIMEOUT:?}; exiting anyway");
    }
    eprintln!("{name}: stopped");
    Ok(())
}

fn is_health<B>(req: &Request<B>) -> bool {
    req.uri().path() == HEALTH_PATH && matches!(*req.method(), Method::GET | Method::HEAD)
}

/// A `text/plain` response.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Resp {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

/// The value of the first `key=value` pair in a raw query string (no percent-decoding).
pub fn query_param<'q>(query: Option<&'q str>, key: &str) -> Option<&'q str> {
    query?.split('&').filter_map(|pair| pair.split_once('=')).find_map(|(k, v)| (k == key).then_some(v))
}

/// The status `hello` answers with: `?status=NNN` (100-599) or 200.
pub fn parse_status(query: Option<&str>) -> Result<StatusCode, String> {
    let Some(raw) = query_param(query, "status") else {
        return Ok(StatusCode::OK);
    };
    raw.parse::<u16>()
        .ok()
        .filter(|code| (100..=599).contains(code))
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or_else(|| format!("status must be an integer from 100 to 599, got {raw:?}"))
}

/// How long `sleep` sleeps: `?ms=N` (0 to [`MAX_SLEEP_MS`]) or [`DEFAULT_SLEEP_MS`].
pub fn parse_ms(query: Option<&str>) -> Result<u64, String> {
    let Some(raw) = query_param(query, "ms") else {
        return Ok(DEFAULT_SLEEP_MS);
    };
    raw.parse::<u64>().ok().filter(|ms| *ms <= MAX_SLEEP_MS).ok_or_else(|| format!("ms must be an integer from 0 to {MAX_SLEEP_MS}, got {raw:?}"))
}

/// `hello, <body>`, or `hello, world` for an empty body.
pub fn greeting(body: &[u8]) -> Bytes {
    if body.is_empty() {
        return Bytes::from_static(b"hello, world");
    }
    let mut out = Vec::with_capacity(7 + body.len());
    out.extend_from_slice(b"hello, ");
    out.extend_from_slice(body);
    out.into()
}

/// Why a request body could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    /// Longer than the limit: answer 413.
    TooLarge,
    /// The client broke off or sent garbage: answer 400.
    Read(String),
}

/// Reads a whole request body, refusing more than `limit` bytes.
pub async fn read_body<B>(body: B, limit: usize) -> Result<Bytes, BodyError>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(BodyError::TooLarge),
        Err(e) => Err(BodyError::Read(e.to_string())),
    }
}

/// The response for a body that could not be read.
pub fn body_error_response(err: BodyError) -> Resp {
    match err {
        BodyError::TooLarge => text(StatusCode::PAYLOAD_TOO_LARGE, format!("request body is larger than {MAX_BODY} bytes")),
        BodyError::Read(e) => text(StatusCode::BAD_REQUEST, format!("could not read the request body: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_param_finds_first_exact_key() {
        assert_eq!(query_param(Some("a=1&status=404&status=500"), "status"), Some("404"));
        assert_eq!(query_param(Some("xstatus=1&status=2"), "status"), Some("2"));
        assert_eq!(query_param(Some("status"), "status"), None);
        assert_eq!(query_param(Some("status="), "status"), Some(""));
        assert_eq!(query_param(None, "status"), None);
    }

    #[test]
    fn status_defaults_to_200_and_accepts_100_to_599() {
        assert_eq!(parse_status(None), Ok(StatusCode::OK));
        assert_eq!(parse_status(Some("x=1")), Ok(StatusCode::OK));
        assert_eq!(parse_status(Some("status=404")), Ok(StatusCode::NOT_FOUND));
        assert_eq!(parse_status(Some("a=b&status=100")).unwrap().as_u16(), 100);
        assert_eq!(parse_status(Some("status=599")).unwrap().as_u16(), 599);
    }

    #[test]
    fn status_rejects_out_of_range_and_garbage() {
        for bad in ["status=99", "status=600", "status=abc", "status=", "status=-200", "status=2000"] {
            let err = parse_status(Some(bad)).unwrap_err();
            assert!(err.contains("100 to 599"), "{bad}: {err}");
        }
    }

    #[test]
    fn ms_defaults_caps_and_rejects() {
        assert_eq!(parse_ms(None), Ok(DEFAULT_SLEEP_MS));
        assert_eq!(parse_ms(Some("ms=0")), Ok(0));
        assert_eq!(parse_ms(Some("x=1&ms=250")), Ok(250));
        assert_eq!(parse_ms(Some("ms=60000")), Ok(60_000));
        for bad in ["ms=60001", "ms=-1", "ms=1.5", "ms=", "ms=ten"] {
            assert!(parse_ms(Some(bad)).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn greeting_echoes_body_or_world() {
        assert_eq!(greeting(b""), Bytes::from_static(b"hello, world"));
        assert_eq!(greeting(b"sluice"), Bytes::from_static(b"hello, sluice"));
        assert_eq!(greeting(&[0xff, 0]), Bytes::from_static(b"hello, \xff\0"));
    }

    #[test]
    fn port_defaults_and_rejects_garbage() {
        assert_eq!(port_from(None), Ok(8080));
        assert_eq!(port_from(Some("")), Ok(8080));
        assert_eq!(port_from(Some("9000")), Ok(9000));
        assert!(port_from(Some("70000")).is_err());
        assert!(port_from(Some("http")).is_err());
    }

    #[tokio::test]
    async fn read_body_enforces_the_limit() {
        let small = Full::new(Bytes::from_static(b"abc"));
        assert_eq!(read_body(small, 3).await, Ok(Bytes::from_static(b"abc")));
        let big = Full::new(Bytes::from(vec![b'x'; 4]));
        assert_eq!(read_body(big, 3).await, Err(BodyError::TooLarge));
        let huge = Full::new(Bytes::from(vec![b'x'; MAX_BODY + 1]));
        assert_eq!(body_error_response(read_body(huge, MAX_BODY).await.unwrap_err()).status(), 413);
    }

    #[test]
    fn health_is_only_get_or_head_on_the_exact_path() {
        let req = |m: Method, uri: &str| Request::builder().method(m).uri(uri).body(()).unwrap();
        assert!(is_health(&req(Method::GET, "/_/health")));
        assert!(is_health(&req(Method::HEAD, "/_/health?x=1")));
        assert!(!is_health(&req(Method::POST, "/_/health")));
        assert!(!is_health(&req(Method::GET, "/_/healthz")));
    }
}
