//! `HttpControlPlane`: the coordinator's HTTP API, as seen from an agent.
//!
//! `GET {base}/v1/nodes/{node}/desired?after={rev}&wait_ms={ms}` long-polls the
//! desired set; `POST {base}/v1/nodes/{node}/report` sends a `NodeReport`. Several
//! base URLs may be given: on a connection failure the next one is tried, and a
//! non-leader's 307/308 (or 421) `location` hint is followed once, so the agent
//! follows the coordinator leader without knowing which one it is.
//!
//! With `HttpControlConfig::tls`, the base URLs are `https://`: the agent checks
//! each coordinator's certificate against the cluster CA and shows its own, so
//! the channel is mutual TLS.

use super::{ControlError, ControlPlane};
use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sluice_common::connector::Connector;
use sluice_common::{DesiredSet, NodeId, NodeReport};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, info};

/// Largest answer accepted from the coordinator; a desired set is far smaller.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// A base URL that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("coordinator URL {url:?} is unusable: {reason}; use http://host:port, e.g. http://127.0.0.1:7070 (https:// with --tls-cert, --tls-key and --tls-ca)")]
pub struct InvalidBaseUrl {
    pub url: String,
    pub reason: String,
}

/// Timeouts and TLS of the HTTP link.
#[derive(Debug, Clone)]
pub struct HttpControlConfig {
    /// How long a TCP connect may take before the next coordinator is tried.
    pub connect_timeout: Duration,
    /// How long a report, or a long poll beyond its own wait, may take.
    pub request_timeout: Duration,
    /// A token with the agent role, sent as `Authorization: Bearer`.
    pub token: Option<String>,
    /// Mutual TLS to `https://` coordinators: the cluster CA and this node's
    /// certificate. `None`: plain `http://` only.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Default for HttpControlConfig {
    fn default() -> Self {
        Self { connect_timeout: Duration::from_secs(2), request_timeout: Duration::from_secs(5), token: None, tls: None }
    }
}

/// The coordinator over HTTP/1.1, with failover between several addresses.
pub struct HttpControlPlane {
    bases: Vec<String>,
    /// Index of the base that answered last; calls start there.
    current: AtomicUsize,
    client: Client<Connector, Full<Bytes>>,
    config: HttpControlConfig,
}

impl std::fmt::Debug for HttpControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpControlPlane").field("bases", &self.bases).field("current", &self.current_base()).finish_non_exhaustive()
    }
}

/// What one exchange with one address came to.
enum Outcome {
    Ok(Bytes),
    /// A non-leader pointing elsewhere.
    Redirect(String),
    /// Try the next address: unreachable, or not the leader and no hint.
    Next(ControlError),
    /// A real answer that is an error: trying elsewhere will not help.
    Fail(ControlError),
}

impl HttpControlPlane {
    /// A link to the coordinator at `bases`, tried in order.
    pub fn new<S: AsRef<str>>(bases: impl IntoIterator<Item = S>, config: HttpControlConfig) -> Result<Self, InvalidBaseUrl> {
        let https = config.tls.is_some();
        let bases = bases.into_iter().map(|b| parse_base(b.as_ref(), https)).collect::<Result<Vec<_>, _>>()?;
        if bases.is_empty() {
            return Err(InvalidBaseUrl { url: String::new(), reason: "no coordinator URL given".into() });
        }
        // Reports carry Ready states the gateway is waiting for: no Nagle delay (the connector sets none).
        let connector = Connector::new(Some(config.connect_timeout), config.tls.clone());
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self { bases, current: AtomicUsize::new(0), client, config })
    }

    /// The base URL calls currently start with.
    pub fn current_base(&self) -> &str {
        &self.bases[self.current.load(Ordering::Relaxed) % self.bases.len()]
    }

    /// Sends `method path` to each base in turn, from the current one, until one answers.
    async fn call(&self, method: Method, path: &str, body: Bytes, timeout: Duration) -> Result<Bytes, ControlError> {
        let first = self.current.load(Ordering::Relaxed);
        let mut last = None;
        for k in 0..self.bases.len() {
            let i = (first + k) % self.bases.len();
            match self.attempt(i, &method, path, &body, timeout).await {
                Outcome::Ok(bytes) => {
                    if i != first {
                        info!(coordinator = %self.bases[i], "switched coordinator");
                        self.current.store(i, Ordering::Relaxed);
                    }
                    return Ok(bytes);
                }
                Outcome::Next(e) => {
                    debug!(coordinator = %self.bases[i], error = %e, "trying next coordinator");
                    last = Some(e);
                }
                Outcome::Fail(e) => return Err(e),
                // `attempt` follows redirects itself; a second one means this base is no help.
                Outcome::Redirect(location) => last = Some(ControlError::Refused(format!("{} redirected to {location} twice", self.bases[i]))),
            }
        }
        Err(last.unwrap_or_else(|| ControlError::Unreachable { addr: String::new(), reason: "no coordinator configured".into() }))
    }

    /// One request to base `i`, following one redirect. A redirect answered by a
    /// configured base makes that base current: it is the leader.
    async fn attempt(&self, i: usize, method: &Method, path: &str, body: &Bytes, timeout: Duration) -> Outcome {
        let url = format!("{}{path}", self.bases[i]);
        let location = match self.exchange(method, &url, body, timeout).await {
            Outcome::Redirect(location) => location,
            other => return other,
        };
        let target = resolve_location(&self.bases[i], &location, path);
        debug!(from = %url, to = %target, "following coordinator redirect");
        let outcome = self.exchange(method, &target, body, timeout).await;
        if let Outcome::Ok(_) = outcome {
            self.follow_leader(&target);
        }
        outcome
    }

    /// Makes the base that `url` belongs to (if it is one of ours) the current one.
    fn follow_leader(&self, url: &str) {
        if let Some(j) = self.bases.iter().position(|b| url.starts_with(b.as_str())) {
            if self.current.swap(j, Ordering::Relaxed) != j {
                info!(coordinator = %self.bases[j], "following coordinator leader");
            }
        }
    }

    async fn exchange(&self, method: &Method, url: &str, body: &Bytes, timeout: Duration) -> Outcome {
        let unreachable = |reason: String| Outcome::Next(ControlError::Unreachable { addr: url.to_string(), reason });
        let mut request = Request::builder().method(method.clone()).uri(url).header(CONTENT_TYPE, "application/json");
        if let Some(token) = &self.config.token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request.body(Full::new(body.clone()));
        let request = match request {
            Ok(r) => r,
            Err(e) => return Outcome::Fail(ControlError::Refused(format!("cannot build a request for {url}: {e}"))),
        };
        let response = match tokio::time::timeout(timeout, self.client.request(request)).await {
            Err(_) => return unreachable(format!("no answer within {timeout:?}")),
            Ok(Err(e)) => return unreachable(sluice_common::connector::error_chain(&e)),
            Ok(Ok(r)) => r,
        };
        let status = response.status();
        let location = response.headers().get(LOCATION).and_then(|v| v.to_str().ok()).map(str::to_string);
        let body = match tokio::time::timeout(timeout, Limited::new(response.into_body(), MAX_BODY).collect()).await {
            Err(_) => return unreachable(format!("answer body not received within {timeout:?}")),
            Ok(Err(e)) => return unreachable(format!("reading answer: {e}")),
            Ok(Ok(collected)) => collected.to_bytes(),
        };
        classify(status, location, body, url)
    }
}

/// Decides what an answer means for failover.
fn classify(status: StatusCode, location: Option<String>, body: Bytes, url: &str) -> Outcome {
    if status.is_success() {
        return Outcome::Ok(body);
    }
    let said = || String::from_utf8_lossy(&body[..body.len().min(200)]).trim().to_string();
    match (status.as_u16(), location) {
        (307 | 308 | 421, Some(location)) => Outcome::Redirect(location),
        // Not the leader and no hint, or no leader yet: another address may do better.
        (421 | 502 | 503 | 504, _) => Outcome::Next(ControlError::Unreachable { addr: url.to_string(), reason: format!("answered {status}: {}", said()) }),
        _ => Outcome::Fail(ControlError::Refused(format!("{url} answered {status}: {}", said()))),
    }
}

/// Validates a base URL and drops any trailing '/'. With `https` (TLS
/// configured) it must be `https://`, without it `http://`: a node given
/// certificates never talks in the clear by mistake.
pub fn parse_base(url: &str, https: bool) -> Result<String, InvalidBaseUrl> {
    let bad = |reason: &str| InvalidBaseUrl { url: url.to_string(), reason: reason.to_string() };
    let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
    match (uri.scheme_str(), https) {
        (Some("http"), false) | (Some("https"), true) => {}
        (Some("https"), false) => return Err(bad("https needs TLS settings: pass --tls-cert, --tls-key and --tls-ca")),
        (Some("http"), true) => return Err(bad("with TLS settings the coordinator is reached over https://")),
        _ => return Err(bad("it must start with http:// or https://")),
    }
    if uri.authority().is_none() {
        return Err(bad("no host"));
    }
    if uri.query().is_some() {
        return Err(bad("a base URL has no query"));
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// Where a `location` hint points for a request to `path`: a full URL as is, a
/// bare `http://host:port` (a leader's address) with `path` appended, or an
/// absolute path on the same base.
pub fn resolve_location(base: &str, location: &str, path: &str) -> String {
    if let Ok(uri) = location.parse::<Uri>() {
        if uri.scheme().is_some() && uri.authority().is_some() {
            let bare = uri.path_and_query().is_none_or(|pq| pq.as_str() == "/");
            return if bare { format!("{}{path}", location.trim_end_matches('/')) } else { location.to_string() };
        }
    }
    let origin = base.parse::<Uri>().ok().and_then(|u| Some(format!("{}://{}", u.scheme_str()?, u.authority()?))).unwrap_or_else(|| base.to_string());
    format!("{origin}{}", if location.starts_with('/') { location.to_string() } else { format!("/{location}") })
}

/// `/v1/nodes/{node}/desired?after={after}&wait_ms={ms}`; node ids are DNS labels, safe in a path.
pub fn desired_path(node: &NodeId, after: u64, wait: Duration) -> String {
    format!("/v1/nodes/{node}/desired?after={after}&wait_ms={}", wait.as_millis())
}

/// `/v1/nodes/{node}/report`.
pub fn report_path(node: &NodeId) -> String {
    format!("/v1/nodes/{node}/report")
}

#[async_trait]
impl ControlPlane for HttpControlPlane {
    async fn desired(&self, node: &NodeId, after: u64, wait: Duration) -> Result<DesiredSet, ControlError> {
        // The coordinator holds the request up to `wait`; allow that on top of the usual timeout.
        let bytes = self.call(Method::GET, &desired_path(node, after, wait), Bytes::new(), wait + self.config.request_timeout).await?;
        serde_json::from_slice(&bytes).map_err(|e| ControlError::Malformed(format!("desired set: {e}")))
    }

    async fn report(&self, report: NodeReport) -> Result<(), ControlError> {
        let body = serde_json::to_vec(&report).map_err(|e| ControlError::Malformed(format!("encoding report: {e}")))?;
        self.call(Method::POST, &report_path(&report.node), Bytes::from(body), self.config.request_timeout).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::combinators::BoxBody;
    use hyper::body::Incoming;
    use hyper::service::service_fn;
    use hyper::Response;
    use hyper_util::rt::TokioIo;
    use sluice_common::{InstanceId, InstanceReport, InstanceState, Resources, Timestamp};
    use std::convert::Infallible;
    use std::sync::{Arc, Mutex};
    use tokio::net::TcpListener;

    type Seen = Arc<Mutex<Vec<(Method, String, Bytes)>>>;
    type Reply = Response<BoxBody<Bytes, Infallible>>;

    fn reply(status: u16, location: Option<String>, body: &str) -> Reply {
        let mut r = Response::builder().status(status);
        if let Some(l) = location {
            r = r.header(LOCATION, l);
        }
        r.body(Full::new(Bytes::from(body.to_string())).boxed()).unwrap()
    }

    /// An HTTP server on 127.0.0.1 answering with `answer`; returns its base URL and what it saw.
    async fn server(answer: impl Fn(&Method, &str) -> Reply + Send + Sync + 'static) -> (String, Seen) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen: Seen = Arc::default();
        let (log, answer) = (seen.clone(), Arc::new(answer));
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (log, answer) = (log.clone(), answer.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (log, answer) = (log.clone(), answer.clone());
                        async move {
                            let method = req.method().clone();
                            let uri = req.uri().to_string();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let out = answer(&method, &uri);
                            log.lock().unwrap().push((method, uri, body));
                            Ok::<_, Infallible>(out)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        (base, seen)
    }

    /// A base URL where nothing listens.
    async fn dead_base() -> String {
        let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
        format!("http://127.0.0.1:{port}")
    }

    fn node() -> NodeId {
        NodeId::new("n1").unwrap()
    }

    fn set_json(revision: u64) -> String {
        serde_json::to_string(&DesiredSet { revision, instances: vec![] }).unwrap()
    }

    fn plane(bases: &[String]) -> HttpControlPlane {
        HttpControlPlane::new(bases, HttpControlConfig::default()).unwrap()
    }

    #[test]
    fn paths() {
        assert_eq!(desired_path(&node(), 7, Duration::from_secs(10)), "/v1/nodes/n1/desired?after=7&wait_ms=10000");
        assert_eq!(report_path(&node()), "/v1/nodes/n1/report");
    }

    #[test]
    fn base_urls() {
        assert_eq!(parse_base("http://127.0.0.1:7070/", false).unwrap(), "http://127.0.0.1:7070");
        assert_eq!(parse_base("http://127.0.0.1:7070/sluice", false).unwrap(), "http://127.0.0.1:7070/sluice");
        assert_eq!(parse_base("https://10.0.0.1:7070", true).unwrap(), "https://10.0.0.1:7070");
        for bad in ["127.0.0.1:7070", "https://a:1", "ftp://a", "http://a:1/?x=1", "not a url"] {
            assert!(parse_base(bad, false).is_err(), "{bad}");
        }
        let e = parse_base("https://a:1", false).unwrap_err().to_string();
        assert!(e.contains("pass --tls-cert, --tls-key and --tls-ca"), "{e}");
        let e = parse_base("http://a:1", true).unwrap_err().to_string();
        assert!(e.contains("over https://"), "{e}");
        let none: [&str; 0] = [];
        let err = HttpControlPlane::new(none, HttpControlConfig::default()).unwrap_err();
        assert!(err.to_string().contains("no coordinator URL"), "{err}");
    }

    #[test]
    fn locations() {
        let base = "http://127.0.0.1:1";
        let path = "/v1/nodes/n1/report";
        assert_eq!(resolve_location(base, "http://127.0.0.1:2/v1/nodes/n1/report", path), "http://127.0.0.1:2/v1/nodes/n1/report");
        assert_eq!(resolve_location(base, "http://127.0.0.1:2", path), "http://127.0.0.1:2/v1/nodes/n1/report");
        assert_eq!(resolve_location(base, "http://127.0.0.1:2/", path), "http://127.0.0.1:2/v1/nodes/n1/report");
        assert_eq!(resolve_location(base, "/elsewhere", path), "http://127.0.0.1:1/elsewhere");
    }

    #[tokio::test]
    async fn long_polls_the_desired_set() {
        let (base, seen) = server(|_, _| reply(200, None, &set_json(4))).await;
        let cp = plane(&[base]);
        let set = cp.desired(&node(), 3, Duration::from_millis(1500)).await.unwrap();
        assert_eq!(set.revision, 4);
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0].0, Method::GET);
        assert_eq!(seen[0].1, "/v1/nodes/n1/desired?after=3&wait_ms=1500");
    }

    #[tokio::test]
    async fn posts_reports_as_json() {
        let (base, seen) = server(|_, _| reply(204, None, "")).await;
        let cp = plane(&[base]);
        let report = NodeReport {
            node: node(),
            capacity: Resources { cpu_millis: 1000, memory_mb: 512 },
            instances: vec![InstanceReport {
                id: InstanceId(3),
                function: sluice_common::FunctionName::new("f").unwrap(),
                state: InstanceState::Ready,
                endpoint: None,
                reason: None,
                addr: Some([172, 17, 0, 5].into()),
            }],
            at: Timestamp(9),
            labels: [("zone".to_string(), "edge".to_string())].into(),
            max_instances: Some(8),
            images: ["img:1".to_string()].into(),
            agent_addr: None,
        };
        cp.report(report.clone()).await.unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!((seen[0].0.clone(), seen[0].1.as_str()), (Method::POST, "/v1/nodes/n1/report"));
        assert_eq!(serde_json::from_slice::<NodeReport>(&seen[0].2).unwrap(), report);
    }

    #[tokio::test]
    async fn fails_over_to_the_next_coordinator_and_stays_there() {
        let dead = dead_base().await;
        let (live, seen) = server(|_, _| reply(200, None, &set_json(1))).await;
        let cp = plane(&[dead.clone(), live.clone()]);
        assert_eq!(cp.current_base(), dead);
        cp.desired(&node(), 0, Duration::ZERO).await.unwrap();
        assert_eq!(cp.current_base(), live);
        cp.desired(&node(), 0, Duration::ZERO).await.unwrap();
        assert_eq!(seen.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn all_down_is_unreachable() {
        let cp = plane(&[dead_base().await, dead_base().await]);
        let err = cp.desired(&node(), 0, Duration::ZERO).await.unwrap_err();
        assert!(matches!(err, ControlError::Unreachable { .. }), "{err}");
        assert!(err.to_string().contains("retries"), "{err}");
    }

    #[tokio::test]
    async fn follows_a_non_leaders_redirect_to_the_leader() {
        let (leader, leader_seen) = server(|_, _| reply(200, None, &set_json(2))).await;
        let hint = leader.clone();
        let (follower, _) = server(move |_, uri| reply(307, Some(format!("{hint}{uri}")), "not the leader")).await;
        let cp = plane(&[follower, leader.clone()]);
        assert_eq!(cp.desired(&node(), 0, Duration::ZERO).await.unwrap().revision, 2);
        assert_eq!(cp.current_base(), leader, "the leader is used from now on");
        assert_eq!(leader_seen.lock().unwrap()[0].1, "/v1/nodes/n1/desired?after=0&wait_ms=0");
    }

    #[tokio::test]
    async fn a_misdirected_request_without_a_hint_moves_on() {
        let (follower, _) = server(|_, _| reply(421, None, "not the leader")).await;
        let (leader, _) = server(|_, _| reply(204, None, "")).await;
        let cp = plane(&[follower, leader.clone()]);
        let report = NodeReport {
            node: node(),
            capacity: Resources::default(),
            instances: vec![],
            at: Timestamp(0),
            labels: Default::default(),
            max_instances: None,
            images: Default::default(),
            agent_addr: None,
        };
        cp.report(report).await.unwrap();
        assert_eq!(cp.current_base(), leader);
    }

    #[tokio::test]
    async fn a_client_error_is_refused_without_failover() {
        let (first, _) = server(|_, _| reply(400, None, "unknown node n1")).await;
        let (second, second_seen) = server(|_, _| reply(200, None, &set_json(1))).await;
        let cp = plane(&[first, second]);
        let err = cp.desired(&node(), 0, Duration::ZERO).await.unwrap_err();
        assert!(matches!(&err, ControlError::Refused(m) if m.contains("unknown node n1")), "{err}");
        assert!(second_seen.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_malformed_desired_set_is_reported_as_such() {
        let (base, _) = server(|_, _| reply(200, None, "{\"revision\": \"nope\"}")).await;
        let err = plane(&[base]).desired(&node(), 0, Duration::ZERO).await.unwrap_err();
        assert!(matches!(err, ControlError::Malformed(_)), "{err}");
    }
}
