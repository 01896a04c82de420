//! `GET /v1/functions/{name}/logs`: a function's container output, read from
//! each instance's agent and sent on as JSON lines
//! `{"instance":"i3","stream":"stdout","line":"..."}`.
//!
//! Agents only call out to coordinators, so this is the one call the other
//! way: to `GET http://{agent_addr}/v1/instances/{id}/logs` on the agent's
//! `--agent-metrics` listener. Where each agent listens and the token it sends
//! come from its reports and stay in this coordinator's memory (`AgentLinks`),
//! never in the replicated log: the token is presented back to the agent,
//! which serves only it. So the coordinator an agent reports to (the leader)
//! can read its logs; another answers 503 and says to ask the leader.

use super::{no_function, Api};
use crate::http::{ApiError, Body, PeerAddr};
use bytes::{Bytes, BytesMut};
use futures_util::stream::{self, BoxStream, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sluice_common::channel_body::ChannelBody;
use sluice_common::connector::Connector;
use sluice_common::logs::{InstanceLogLine, LogLine, LogQuery, MAX_LINE_BYTES};
use sluice_common::{FunctionName, InstanceId, InstanceState, NodeId, NodeReport};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;
use tracing::{debug, warn};

/// How long an agent may take to connect and start answering.
const AGENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest agent error body read.
const MAX_AGENT_ERROR: usize = 16 * 1024;
/// Most instances one request reads at once: each is a connection to an agent.
pub const MAX_INSTANCES: usize = 100;

/// How to reach one node's agent, as its last report said.
#[derive(Clone)]
struct AgentLink {
    addr: SocketAddr,
    /// The bearer token the agent sent its report with; `None` with auth off.
    token: Option<String>,
}

/// Each node's agent link, learnt from reports (in memory only).
#[derive(Default)]
pub struct AgentLinks {
    links: Mutex<HashMap<NodeId, AgentLink>>,
}

impl AgentLinks {
    /// Notes where the agent of `report.node` listens: its `agent_addr`, with a
    /// wildcard IP replaced by `peer` (where the report came from).
    pub fn note(&self, report: &NodeReport, peer: Option<&PeerAddr>, authorization: Option<&HeaderValue>) {
        let Some(mut addr) = report.agent_addr else { return };
        if addr.ip().is_unspecified() {
            let Some(peer) = peer else { return };
            addr.set_ip(peer.0);
        }
        let token = authorization.and_then(|h| h.to_str().ok()).and_then(|h| h.strip_prefix("Bearer ")).map(|t| t.trim().to_string());
        self.links.lock().expect("agent links lock poisoned").insert(report.node.clone(), AgentLink { addr, token });
    }

    fn get(&self, node: &NodeId) -> Option<AgentLink> {
        self.links.lock().expect("agent links lock poisoned").get(node).cloned()
    }
}

impl Api {
    pub(super) async fn logs(&self, name: FunctionName, req: &Request<Incoming>) -> Result<Response<Body>, ApiError> {
        let query = parse_query(req.uri().query())?;
        self.barrier().await?;
        let instances = self.store.read(|s| {
            s.functions.contains_key(&name).then(|| {
                s.instances
                    .values()
                    .filter(|i| i.function == name && i.state != InstanceState::Gone && i.state != InstanceState::Pending)
                    .map(|i| (i.id, i.node.clone()))
                    .collect::<Vec<_>>()
            })
        });
        let mut instances = instances.ok_or_else(|| no_function(&name))?;
        if let Some(only) = query.instance {
            instances.retain(|(id, _)| *id == only);
            if instances.is_empty() {
                return Err(ApiError::not_found(format!("{only} is not a running instance of {name}: `sluice ls` lists instances")));
            }
        }
        if instances.len() > MAX_INSTANCES {
            return Err(ApiError::invalid("instance", format!("{name} has {} instances: read at most {MAX_INSTANCES} at once, one with instance=ID", instances.len())));
        }
        let mut streams = Vec::with_capacity(instances.len());
        for (id, node) in instances {
            streams.push(self.agent_logs(id, &node, &query).await?);
        }
        let (tx, body) = ChannelBody::channel();
        tokio::spawn(async move {
            let mut merged = stream::select_all(streams);
            loop {
                let chunk = tokio::select! {
                    chunk = merged.next() => chunk,
                    // The client hung up: drop the agents' answers too.
                    _ = tx.closed() => return,
                };
                let Some(chunk) = chunk else { return };
                if tx.send(chunk).await.is_err() {
                    return;
                }
            }
        });
        let mut resp = Response::new(body.boxed());
        resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
        Ok(resp)
    }

    /// Asks `node`'s agent for `id`'s logs; its JSON lines, each with the instance put in.
    async fn agent_logs(&self, id: InstanceId, node: &NodeId, query: &LogQuery) -> Result<BoxStream<'static, Bytes>, ApiError> {
        let link = self.agents.get(node).ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "agent_unknown",
                format!("{id} runs on node {node}, whose agent has not reported to this coordinator since it started: ask the coordinator it reports to (the leader, see `sluice cluster status`), or wait for its next report"),
            )
            .retry_after(2)
        })?;
        let uri = format!("http://{}/v1/instances/{id}/logs?{}", link.addr, query.to_agent_query());
        let mut request = Request::get(&uri);
        if let Some(token) = &link.token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request.body(Empty::<Bytes>::new()).map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("request to the agent: {e}")))?;
        let client: Client<Connector, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(Connector::new(Some(AGENT_TIMEOUT), None));
        let unreachable = |why: String| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "agent_unreachable",
                format!("node {node}'s agent at {}: {why}; check that it runs and that this coordinator can reach its --agent-metrics address", link.addr),
            )
        };
        let resp = match tokio::time::timeout(AGENT_TIMEOUT, client.request(request)).await {
            Err(_) => return Err(unreachable(format!("no answer within {AGENT_TIMEOUT:?}"))),
            Ok(Err(e)) => return Err(unreachable(e.to_string())),
            Ok(Ok(resp)) => resp,
        };
        let status = resp.status();
        if !status.is_success() {
            let body = http_body_util::Limited::new(resp.into_body(), MAX_AGENT_ERROR).collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let why = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            // The instance stopped between the state read and the agent's answer: nothing to show.
            if status == StatusCode::NOT_FOUND {
                debug!(%id, %node, %why, "no logs: the instance's container is gone");
                return Ok(stream::empty().boxed());
            }
            return Err(ApiError::new(StatusCode::BAD_GATEWAY, "agent_refused", format!("node {node}'s agent refused to read {id}'s logs ({status}): {why}")));
        }
        Ok(tag_lines(id, resp.into_body()))
    }
}

/// The query's percent-decoded pairs, checked as `LogQuery` checks them.
fn parse_query(query: Option<&str>) -> Result<LogQuery, ApiError> {
    let pairs: Vec<(String, String)> =
        query.unwrap_or("").split('&').filter(|kv| !kv.is_empty()).map(|kv| kv.split_once('=').unwrap_or((kv, ""))).map(|(k, v)| (super::decode(k), super::decode(v))).collect();
    Ok(LogQuery::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))?)
}

/// An agent's body of JSON lines, as JSON lines naming `id`. A line that is
/// not a log line, or longer than any log line can be, ends the stream.
fn tag_lines(id: InstanceId, body: Incoming) -> BoxStream<'static, Bytes> {
    // A line's JSON: the text escaped (at most 6 bytes a byte) and the fields.
    const MAX_JSON_LINE: usize = MAX_LINE_BYTES * 6 + 256;
    let state = (body, BytesMut::new(), Vec::<Bytes>::new());
    stream::unfold(state, move |(mut body, mut buf, mut ready)| async move {
        loop {
            if let Some(chunk) = ready.pop() {
                return Some((chunk, (body, buf, ready)));
            }
            while let Some(end) = buf.iter().position(|b| *b == b'\n') {
                let raw = buf.split_to(end + 1);
                match serde_json::from_slice::<LogLine>(&raw) {
                    Ok(l) => {
                        let mut json = serde_json::to_vec(&InstanceLogLine { instance: id, stream: l.stream, line: l.line }).expect("a log line serialises");
                        json.push(b'\n');
                        ready.insert(0, Bytes::from(json));
                    }
                    Err(e) => {
                        warn!(instance = %id, error = %e, "an agent sent a malformed log line; its logs end here");
                        return None;
                    }
                }
            }
            if !ready.is_empty() {
                continue;
            }
            if buf.len() > MAX_JSON_LINE {
                warn!(instance = %id, "an agent sent a log line longer than any; its logs end here");
                return None;
            }
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        buf.extend_from_slice(&data);
                    }
                }
                // The agent ended the answer (the container stopped) or the link broke.
                _ => return None,
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_is_decoded_and_checked() {
        assert_eq!(parse_query(Some("tail=5&follow=true&instance=i%33")).unwrap(), LogQuery { tail: 5, follow: true, since_secs: None, instance: Some(InstanceId(3)) });
        assert_eq!(parse_query(None).unwrap(), LogQuery::default());
        let e = parse_query(Some("tail=x")).unwrap_err();
        assert_eq!((e.status, e.field.as_deref()), (StatusCode::BAD_REQUEST, Some("tail")));
        assert_eq!(parse_query(Some("since=1d")).unwrap_err().field.as_deref(), Some("since"));
    }

    #[test]
    fn a_wildcard_agent_address_takes_the_reports_source() {
        let links = AgentLinks::default();
        let node = NodeId::new("n1").unwrap();
        let report = |addr: &str| NodeReport {
            node: node.clone(),
            capacity: Default::default(),
            instances: vec![],
            at: sluice_common::Timestamp(0),
            labels: Default::default(),
            max_instances: None,
            images: Default::default(),
            agent_addr: Some(addr.parse().unwrap()),
        };
        let peer = PeerAddr("10.0.0.7".parse().unwrap());
        links.note(&report("0.0.0.0:9101"), Some(&peer), Some(&HeaderValue::from_static("Bearer sluice_a_b")));
        let link = links.get(&node).unwrap();
        assert_eq!((link.addr.to_string(), link.token.as_deref()), ("10.0.0.7:9101".into(), Some("sluice_a_b")));
        links.note(&report("10.0.0.8:9101"), Some(&peer), None);
        let link = links.get(&node).unwrap();
        assert_eq!((link.addr.to_string(), link.token), ("10.0.0.8:9101".into(), None));
    }
}
