//! The readiness probe: `GET <health_path>` over a bare TCP stream until it answers 2xx.
//!
//! Cold starts wait on this loop, so it stays minimal: one connection, one request,
//! one status line, no HTTP client to set up. It polls every few milliseconds at
//! first because a function usually listens within milliseconds of its start.

use super::RuntimeError;
use sluice_common::{Endpoint, InstanceId};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout, Instant};

/// Longest a single probe may take; a hung health handler must not eat the whole
/// start budget in one try.
pub const TRY_TIMEOUT: Duration = Duration::from_secs(1);

/// The status line is all we read; anything longer than this is not HTTP.
const MAX_STATUS_LINE: usize = 1024;

/// Why one probe did not see a 2xx.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("health path {0:?} is not an absolute URL path of printable ASCII; fix the function's health_path")]
    BadPath(String),
    #[error("could not connect: {0}")]
    Connect(std::io::Error),
    #[error("connection failed mid-request: {0}")]
    Io(std::io::Error),
    #[error("connection closed before a status line (the function is probably still starting)")]
    Closed,
    #[error("answer is not HTTP: {0:?}")]
    Malformed(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("health check answered HTTP {0}")]
    Status(u16),
}

/// How long to wait before the next probe, given how long we have been probing:
/// very often while a fast start is likely, then backing off so a slow starter is
/// not hammered.
pub fn poll_interval(elapsed: Duration) -> Duration {
    if elapsed < Duration::from_secs(1) {
        Duration::from_millis(5)
    } else if elapsed < Duration::from_secs(5) {
        Duration::from_millis(25)
    } else {
        Duration::from_millis(100)
    }
}

/// One `GET path` on `endpoint`; returns the HTTP status code.
pub async fn get_status(endpoint: &Endpoint, path: &str, limit: Duration) -> Result<u16, ProbeError> {
    // The path goes into the request line verbatim, so refuse anything that could
    // break out of it (spaces, CR/LF).
    if !path.starts_with('/') || !path.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ProbeError::BadPath(path.chars().take(80).collect()));
    }
    timeout(limit, exchange(endpoint, path)).await.map_err(|_| ProbeError::Timeout(limit))?
}

async fn exchange(endpoint: &Endpoint, path: &str) -> Result<u16, ProbeError> {
    let mut stream = TcpStream::connect((endpoint.host.as_str(), endpoint.port)).await.map_err(ProbeError::Connect)?;
    // Latency matters more than batching for a request this small.
    let _ = stream.set_nodelay(true);
    let request = format!("GET {path} HTTP/1.1\r\nHost: {endpoint}\r\nUser-Agent: sluice-agent\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.map_err(ProbeError::Io)?;
    let line = read_status_line(&mut stream).await?;
    parse_status_line(&line)
}

async fn read_status_line(stream: &mut TcpStream) -> Result<String, ProbeError> {
    let mut buf = Vec::with_capacity(128);
    let mut chunk = [0u8; 256];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(n) => n,
            // docker-proxy resets connections while nothing listens in the container yet.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Err(ProbeError::Closed),
            Err(e) => return Err(ProbeError::Io(e)),
        };
        if n == 0 {
            return if buf.is_empty() { Err(ProbeError::Closed) } else { Err(ProbeError::Malformed(lossy(&buf))) };
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
            return Ok(lossy(&buf[..end]));
        }
        if buf.len() > MAX_STATUS_LINE {
            return Err(ProbeError::Malformed(lossy(&buf[..80])));
        }
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).chars().take(80).collect()
}

/// Reads the code out of `HTTP/1.1 200 OK`.
pub fn parse_status_line(line: &str) -> Result<u16, ProbeError> {
    let mut parts = line.split(' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") || code.len() != 3 {
        return Err(ProbeError::Malformed(line.chars().take(80).collect()));
    }
    code.parse().map_err(|_| ProbeError::Malformed(line.chars().take(80).collect()))
}

/// Probes until a 2xx or until `limit` has passed; the error carries the last
/// probe's failure, which usually says what is wrong.
pub async fn wait_healthy(instance: InstanceId, endpoint: &Endpoint, path: &str, limit: Duration) -> Result<(), RuntimeError> {
    let started = Instant::now();
    let deadline = started + limit;
    let mut earlier: Option<ProbeError> = None;
    loop {
        let this_try = deadline.saturating_duration_since(Instant::now()).min(TRY_TIMEOUT);
        let outcome = match get_status(endpoint, path, this_try).await {
            Ok(code) if (200..300).contains(&code) => return Ok(()),
            Ok(code) => ProbeError::Status(code),
            Err(e @ ProbeError::BadPath(_)) => return Err(not_ready(instance, limit, e)),
            Err(e) => e,
        };
        // A try the deadline cut short (or a pause that overslept it left no
        // time at all) says less than the answer before it: keep that one.
        let cut_short = matches!(outcome, ProbeError::Timeout(_)) && this_try < TRY_TIMEOUT;
        let outcome = match earlier.take() {
            Some(answer) if cut_short => answer,
            _ => outcome,
        };
        // Give up once the next try could not start before the deadline.
        let pause = poll_interval(started.elapsed());
        if Instant::now() + pause >= deadline {
            return Err(not_ready(instance, limit, outcome));
        }
        earlier = Some(outcome);
        sleep(pause).await;
    }
}

fn not_ready(id: InstanceId, timeout: Duration, last: ProbeError) -> RuntimeError {
    RuntimeError::NotReady { id, timeout, last_error: last.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// Serves `answers` in order, one per connection, on 127.0.0.1.
    async fn serve(answers: Vec<&'static [u8]>) -> Endpoint {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            for answer in answers {
                let (mut conn, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf).await;
                let _ = conn.write_all(answer).await;
            }
        });
        Endpoint::published("127.0.0.1", port)
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line("HTTP/1.1 200 OK").unwrap(), 200);
        assert_eq!(parse_status_line("HTTP/1.0 503 Service Unavailable").unwrap(), 503);
        assert_eq!(parse_status_line("HTTP/1.1 204").unwrap(), 204);
        for bad in ["", "SSH-2.0-OpenSSH", "HTTP/1.1 2000 OK", "HTTP/2 200", "HTTP/1.1 abc"] {
            assert!(matches!(parse_status_line(bad), Err(ProbeError::Malformed(_))), "{bad}");
        }
    }

    #[test]
    fn polls_fast_then_slower() {
        assert_eq!(poll_interval(Duration::ZERO), Duration::from_millis(5));
        assert_eq!(poll_interval(Duration::from_millis(999)), Duration::from_millis(5));
        assert_eq!(poll_interval(Duration::from_secs(2)), Duration::from_millis(25));
        assert_eq!(poll_interval(Duration::from_secs(60)), Duration::from_millis(100));
    }

    #[tokio::test]
    async fn refuses_paths_that_could_inject_headers() {
        let ep = Endpoint::published("127.0.0.1", 9);
        for bad in ["health", "/a b", "/a\r\nX: y"] {
            assert!(matches!(get_status(&ep, bad, TRY_TIMEOUT).await, Err(ProbeError::BadPath(_))), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn reads_the_status_of_one_answer() {
        let ep = serve(vec![b"HTTP/1.1 204 No Content\r\n\r\n"]).await;
        assert_eq!(get_status(&ep, "/_/health", TRY_TIMEOUT).await.unwrap(), 204);
    }

    #[tokio::test]
    async fn retries_until_2xx() {
        let ep = serve(vec![b"", b"HTTP/1.1 503 Busy\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"]).await;
        wait_healthy(InstanceId(1), &ep, "/_/health", Duration::from_secs(5)).await.unwrap();
    }

    #[tokio::test]
    async fn gives_up_with_the_last_error() {
        // A port nobody listens on: bind, note the port, close.
        let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
        let ep = Endpoint::published("127.0.0.1", port);
        let started = Instant::now();
        let err = wait_healthy(InstanceId(7), &ep, "/_/health", Duration::from_millis(100)).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2));
        match err {
            RuntimeError::NotReady { id, last_error, .. } => {
                assert_eq!(id, InstanceId(7));
                assert!(last_error.contains("connect"), "{last_error}");
            }
            other => panic!("expected NotReady, got {other}"),
        }
    }

    #[tokio::test]
    async fn non_2xx_is_reported() {
        let ep = serve(vec![b"HTTP/1.1 500 Oops\r\n\r\n"; 400]).await;
        let err = wait_healthy(InstanceId(2), &ep, "/", Duration::from_millis(500)).await.unwrap_err();
        assert!(err.to_string().contains("HTTP 500"), "{err}");
    }

    /// A loaded machine once made the last try start at the deadline, and its
    /// instant timeout hid the function's own answer: the deadline's cut must
    /// not replace what the function said.
    #[tokio::test]
    async fn a_try_cut_short_by_the_deadline_keeps_the_answer_before_it() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ep = Endpoint::published("127.0.0.1", listener.local_addr().unwrap().port());
        tokio::spawn(async move {
            let (mut first, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = first.read(&mut buf).await;
            let _ = first.write_all(b"HTTP/1.1 503 Warming\r\n\r\n").await;
            drop(first);
            // Then it hangs: every later try waits until the deadline ends it.
            let mut held = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                held.push(conn);
            }
        });
        let err = wait_healthy(InstanceId(3), &ep, "/", Duration::from_millis(300)).await.unwrap_err();
        assert!(err.to_string().contains("HTTP 503"), "{err}");
    }
}
