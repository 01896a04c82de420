//! The agent's `GET /v1/instances/{id}/logs` on its `--agent-metrics` listener:
//! one instance's container output as JSON lines (`{"stream":"stdout","line":..}`),
//! for the coordinator's `GET /v1/functions/{name}/logs`.
//!
//! Agents otherwise only call out (long polls and reports); this is the one
//! call in: the coordinator presents this agent's own token, which it learnt
//! from the agent's reports and keeps in memory only. The agent compares it in
//! constant time, and without a token of its own (`--auth off`) serves no logs.

use crate::runtime::{ContainerRuntime, RuntimeError};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use sluice_common::channel_body::ChannelBody;
use sluice_common::logs::LogQuery;
use sluice_common::{InstanceId, NodeId};
use std::sync::Arc;
use tracing::{debug, warn};

/// The body type of the agent's listener (the coordinator's `http::Body`).
pub type Body = BoxBody<Bytes, hyper::Error>;

/// Serves logs of this node's instances to whoever holds `token`.
#[derive(Clone)]
pub struct LogServer {
    node: NodeId,
    runtime: Arc<dyn ContainerRuntime>,
    token: Option<Arc<str>>,
}

impl std::fmt::Debug for LogServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogServer").field("node", &self.node).field("token", &self.token.as_ref().map(|_| "<set>")).finish_non_exhaustive()
    }
}

/// The instance of a `/v1/instances/{id}/logs` path, if it is one.
pub fn logs_path(path: &str) -> Option<&str> {
    path.strip_prefix("/v1/instances/")?.strip_suffix("/logs").filter(|id| !id.is_empty() && !id.contains('/'))
}

impl LogServer {
    pub fn new(node: NodeId, runtime: Arc<dyn ContainerRuntime>, token: Option<String>) -> Self {
        Self { node, runtime, token: token.map(Arc::from) }
    }

    /// Answers a request whose path `logs_path` matched with `instance`.
    pub async fn serve<B>(&self, instance: &str, req: &Request<B>) -> Response<Body> {
        match self.answer(instance, req).await {
            Ok(resp) => resp,
            Err((status, code, field, message)) => error(status, code, field, &message),
        }
    }

    async fn answer<B>(&self, instance: &str, req: &Request<B>) -> Result<Response<Body>, Refusal> {
        let Some(token) = &self.token else {
            return Err((
                StatusCode::FORBIDDEN,
                "no_agent_token",
                None,
                "this agent serves no logs: it has no token (--auth off), or it reaches its coordinators over TLS and its listener is plain HTTP".into(),
            ));
        };
        let presented = req.headers().get(AUTHORIZATION).and_then(|h| h.to_str().ok()).and_then(|h| h.strip_prefix("Bearer ")).unwrap_or("");
        if !constant_time_eq(presented.as_bytes(), token.as_bytes()) {
            return Err((
                StatusCode::UNAUTHORIZED,
                "bad_token",
                None,
                "logs are served to the coordinator only, with this agent's token: ask the coordinator (`sluice logs`)".into(),
            ));
        }
        let instance: InstanceId = instance.parse().map_err(|e: sluice_common::ValidationError| (StatusCode::BAD_REQUEST, "invalid_input", Some(e.field), e.message))?;
        let query = parse_query(req.uri().query().unwrap_or(""))?;
        if query.instance.is_some() {
            return Err((StatusCode::BAD_REQUEST, "invalid_input", Some("instance".into()), "the instance is in the path: drop ?instance=".into()));
        }
        let containers = self.runtime.list(&self.node).await.map_err(unavailable)?;
        let Some(container) = containers.into_iter().find(|c| c.instance == instance) else {
            return Err((StatusCode::NOT_FOUND, "not_found", None, format!("instance {instance} has no container on node {}: it may have stopped", self.node)));
        };
        let lines = self.runtime.logs(&container.id, &query).await.map_err(|e| match e {
            RuntimeError::NotFound(what) => (StatusCode::NOT_FOUND, "not_found", None, format!("container {what} is gone: instance {instance} stopped")),
            e => unavailable(e),
        })?;
        debug!(%instance, tail = query.tail, follow = query.follow, "serving logs");
        let (tx, body) = ChannelBody::channel();
        tokio::spawn(async move {
            let mut lines = lines;
            loop {
                let line = tokio::select! {
                    line = lines.next() => line,
                    // The coordinator hung up: stop reading the container.
                    _ = tx.closed() => return,
                };
                let line = match line {
                    Some(Ok(line)) => line,
                    None => return,
                    // What was sent stays valid lines; the error is the agent's to log.
                    Some(Err(e)) => return warn!(%instance, error = %e, "reading logs stopped"),
                };
                let mut json = serde_json::to_vec(&line).expect("a log line serialises");
                json.push(b'\n');
                if tx.send(Bytes::from(json)).await.is_err() {
                    return;
                }
            }
        });
        let mut resp = Response::new(body.boxed());
        resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
        Ok(resp)
    }
}

/// Status, code, field and message of a refused request.
type Refusal = (StatusCode, &'static str, Option<String>, String);

fn parse_query(query: &str) -> Result<LogQuery, Refusal> {
    let pairs: Vec<(&str, &str)> = query.split('&').filter(|kv| !kv.is_empty()).map(|kv| kv.split_once('=').unwrap_or((kv, ""))).collect();
    LogQuery::from_pairs(pairs).map_err(|e| (StatusCode::BAD_REQUEST, "invalid_input", Some(e.field), e.message))
}

fn unavailable(e: RuntimeError) -> Refusal {
    (StatusCode::SERVICE_UNAVAILABLE, "runtime_unavailable", None, e.to_string())
}

/// The API's error body, `{"error":{"code","field","message"}}`.
fn error(status: StatusCode, code: &str, field: Option<String>, message: &str) -> Response<Body> {
    let mut inner = serde_json::json!({"code": code, "message": message});
    if let Some(field) = field {
        inner["field"] = field.into();
    }
    let body = serde_json::to_vec(&serde_json::json!({ "error": inner })).expect("json serialises");
    let mut resp = Response::new(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// Equality that takes as long whatever the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::FakeRuntime;
    use sluice_common::logs::{LogLine, LogStream};
    use sluice_common::{DesiredInstance, DesiredState, FunctionName, FunctionSpec, ImageRef};

    async fn server_with_lines() -> (LogServer, InstanceId) {
        let fake = Arc::new(FakeRuntime::new());
        let image = ImageRef::parse("img:1").unwrap();
        fake.add_image(image.clone());
        let node = NodeId::new("n1").unwrap();
        let spec = FunctionSpec::new(FunctionName::new("hello").unwrap(), image);
        let desired = DesiredInstance { id: InstanceId(3), spec, state: DesiredState::Running };
        fake.create(&node, &desired).await.unwrap();
        for (stream, text) in [(LogStream::Stdout, "one"), (LogStream::Stderr, "two"), (LogStream::Stdout, "three")] {
            fake.write_log(InstanceId(3), LogLine::new(stream, text.as_bytes()));
        }
        (LogServer::new(node, fake, Some("sluice_a_b".into())), InstanceId(3))
    }

    fn get(path_and_query: &str, token: Option<&str>) -> Request<()> {
        let mut req = Request::builder().uri(path_and_query);
        if let Some(t) = token {
            req = req.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        req.body(()).unwrap()
    }

    async fn text(resp: Response<Body>) -> (StatusCode, String) {
        let status = resp.status();
        (status, String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap())
    }

    #[test]
    fn paths() {
        assert_eq!(logs_path("/v1/instances/i3/logs"), Some("i3"));
        assert_eq!(logs_path("/v1/instances//logs"), None);
        assert_eq!(logs_path("/v1/instances/a/b/logs"), None);
        assert_eq!(logs_path("/metrics"), None);
    }

    #[tokio::test]
    async fn serves_the_last_lines_as_json_lines_to_its_token_only() {
        let (server, id) = server_with_lines().await;
        let (status, body) = text(server.serve(&id.to_string(), &get("/v1/instances/i3/logs?tail=2", Some("sluice_a_b"))).await).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "{\"stream\":\"stderr\",\"line\":\"two\"}\n{\"stream\":\"stdout\",\"line\":\"three\"}\n");

        let (status, body) = text(server.serve("i3", &get("/v1/instances/i3/logs", Some("sluice_a_c"))).await).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(text(server.serve("i3", &get("/v1/instances/i3/logs", None)).await).await.0, StatusCode::UNAUTHORIZED);
        let open = LogServer { token: None, ..server.clone() };
        assert_eq!(text(open.serve("i3", &get("/v1/instances/i3/logs", None)).await).await.0, StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn bad_input_is_refused_by_name_and_unknown_instances_are_404() {
        let (server, _) = server_with_lines().await;
        let token = Some("sluice_a_b");
        let (status, body) = text(server.serve("i3", &get("/v1/instances/i3/logs?tail=20000", token)).await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("\"field\":\"tail\""), "{body}");
        let (status, body) = text(server.serve("x3", &get("/v1/instances/x3/logs", token)).await).await;
        assert!(status == StatusCode::BAD_REQUEST && body.contains("\"field\":\"instance\""), "{body}");
        assert_eq!(text(server.serve("i9", &get("/v1/instances/i9/logs", token)).await).await.0, StatusCode::NOT_FOUND);
    }
}
